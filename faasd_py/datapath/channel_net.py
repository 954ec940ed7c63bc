"""The worker's end of the `net` channel: HTTP to the instance's runtime (`NetChannel`).

The faasd-style path: each invocation is an HTTP/1.1 request to the runtime's server
(faasd_py.runtime._http) over keep-alive connections, one request at a time on each, as faasd's
gateway proxies to a function's watchdog: the method, path, query, headers and body of the
call, plus `X-Call-Id` and `X-Faasd-Timeout`; the answer's status, headers and body come back
as the result message the worker's instance code reads from every channel.

The client is a few lines over asyncio streams and the runtime's own head parser rather than
aiohttp's: its peer is always that server, whose answers always carry Content-Length, and the
`Channel` protocol closes synchronously, which an aiohttp session cannot (its close must be
awaited). It also keeps the baseline honest: aiohttp's client costs about 130 us of CPU per
request on these machines (see faasd_py/http1/_wire.py), more than the rest of this path.

Where the runtime listens is the handoff's business (faasd_py.datapath.channel): its own address on
the worker's bridge when the instance is sandboxed (faasd_py.isolation.netns), a loopback port the
worker bound when it is a plain process. Readiness and the channel's lifetime ride on one connection
of their own: the first message `receive` yields is the answer to `GET /_/ready` (ready or
load_failed); when that connection ends, or the instance process exits, the channel ends after
the requests in flight have settled. Closing this end closes that connection, which is how
the runtime learns the worker is done with it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from faasd_py.datapath.channel import Mailbox
from faasd_py.protocol import ChannelClosed, Headers, ProtocolError, Result
from faasd_py.runtime._http import (
    DURATION_HEADER,
    ERROR_HEADER,
    HOP_BY_HOP,
    MAX_HEAD,
    READY_PATH,
    TIMEOUT_HEADER,
    HttpError,
    encode_message,
    parse_head,
)

__all__ = ["NetChannel"]

_DROP_FROM_RESULT = HOP_BY_HOP | {DURATION_HEADER.lower(), ERROR_HEADER.lower()}
# Between tries to reach a runtime that is still starting (it listens within milliseconds).
_RETRY_FIRST, _RETRY_MOST = 0.001, 0.02
# What a connection the runtime dropped, or garbled, raises.
_BROKEN = (OSError, HttpError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)
# A stream's buffer limit bounds a head (readuntil); bodies are read by length.
_READ_LIMIT = MAX_HEAD


class NetChannel:
    """The worker's end of a net channel to the runtime at `host:port` (the `Channel`
    protocol). `peer_pid`: the instance process, watched through a pidfd; `on_close`: runs
    once when the channel closes (the handoff gives back the instance's address)."""

    def __init__(
        self,
        host: str,
        port: int,
        max_frame: int,
        peer_pid: int | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._host, self._port = host, port
        self._max_frame = max_frame
        self._on_close = on_close
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._busy: set[asyncio.StreamWriter] = set()
        self._mailbox = Mailbox(self._loop)
        self._requests: set[asyncio.Task[None]] = set()
        self._ending: BaseException | None = None  # ends the channel once requests settle
        self._closed = False
        self._control: asyncio.StreamWriter | None = None
        self._pidfd = -1
        if peer_pid is not None:
            self._watch_peer(peer_pid)
        self._control_task = self._loop.create_task(self._control_forever())

    def _watch_peer(self, pid: int) -> None:
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self._end, ChannelClosed("the instance process exited"))
            return
        self._loop.add_reader(self._pidfd, self._end, ChannelClosed("the instance exited"))

    # --- Channel -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed or self._mailbox.failure is not None or self._ending is not None:
            raise ChannelClosed("the channel is closed")
        if message.get("op") != "invoke":
            raise ProtocolError(f"the net channel carries invocations, not {message.get('op')!r}")
        task = self._loop.create_task(self._request(message))
        self._requests.add(task)
        task.add_done_callback(self._request_done)

    async def receive(self) -> dict[str, Any]:
        return await self._mailbox.get()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._control_task.cancel()
        if self._control is not None:
            self._control.close()
        for task in list(self._requests):
            task.cancel()
        self._stop_watching()
        for _, writer in self._idle:
            writer.close()
        for writer in self._busy:
            writer.close()
        self._idle.clear()
        self._mailbox.fail(ChannelClosed("the channel is closed"))
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()

    # --- invocations ---------------------------------------------------------------------------

    async def _request(self, message: dict[str, Any]) -> None:
        headers = [(k, v) for k, v in message["headers"] if k.lower() not in HOP_BY_HOP]
        if not any(k.lower() == "host" for k, _ in headers):
            headers.append(("Host", f"{self._host}:{self._port}"))
        if not any(k.lower() == "x-call-id" for k, _ in headers):
            # As faasd's gateway does: the function sees the call's id among its headers.
            headers.append(("X-Call-Id", message["call_id"]))
        headers.append((TIMEOUT_HEADER, f"{message['timeout']:g}"))
        query = message["query"]
        target = (message["path"] or "/") + ("?" + query if query else "")
        request = encode_message(f"{message['method']} {target} HTTP/1.1", headers, message["body"])
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = self._idle.pop() if self._idle else await self._open()
            self._busy.add(writer)
            writer.write(request)
            status, fields, body = await read_response(reader, self._max_frame)
        except BaseException as exc:
            if writer is not None:
                self._busy.discard(writer)
                writer.close()
            if isinstance(exc, ProtocolError):
                self._end(exc)
            elif isinstance(exc, _BROKEN):
                # The runtime closes a connection only when it ends: so does the channel.
                self._end(ChannelClosed(f"the instance dropped a request: {exc}"))
            else:
                raise
            return
        self._busy.discard(writer)
        if self._closed:
            writer.close()
        else:
            self._idle.append((reader, writer))
        self._mailbox.deliver(_result(message["id"], status, fields, body))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._port, limit=_READ_LIMIT)
        return reader, writer

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._requests.discard(task)
        if not self._requests and self._ending is not None:
            self._mailbox.fail(self._ending)

    # --- readiness and the channel's lifetime --------------------------------------------------

    async def _control_forever(self) -> None:
        try:
            reader, writer = await self._connect()
        except OSError as exc:
            self._end(ChannelClosed(f"cannot reach the instance: {exc}"))
            return
        self._control = writer
        try:
            writer.write(
                f"GET {READY_PATH} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n\r\n".encode()
            )
            status, _, body = await read_response(reader, self._max_frame)
            if status == 200:
                self._mailbox.deliver(_ready(body))
            else:
                self._mailbox.deliver({"op": "load_failed", "error": body.decode(errors="replace")})
            await reader.read()  # until the runtime ends the channel
            self._end(ChannelClosed("the instance closed the channel"))
        except ProtocolError as exc:  # its callers are told what the instance sent
            self._end(exc)
        except _BROKEN as exc:
            self._end(ChannelClosed(f"the instance's channel failed: {exc}"))
        finally:
            writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect as soon as the runtime listens (it starts while the instance does)."""
        delay = _RETRY_FIRST
        while True:
            try:
                return await asyncio.open_connection(self._host, self._port, limit=_READ_LIMIT)
            except (ConnectionRefusedError, ConnectionResetError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MOST)

    # --- delivery ------------------------------------------------------------------------------

    def _end(self, exc: BaseException) -> None:
        """The instance is going: end the channel once the requests in flight have settled
        (what it answered before it went is still delivered)."""
        self._stop_watching()
        if self._ending is None:
            self._ending = exc
        if not self._requests:
            self._mailbox.fail(self._ending)

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def _ready(body: bytes) -> dict[str, Any]:
    """The runtime's readiness answer as a `ready` message; its fields are checked with every
    other message from a sandbox (protocol.from_sandbox), here only that it is a JSON object."""
    try:
        info = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"the readiness answer is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ProtocolError(f"the readiness answer is JSON {type(info).__name__}, not an object")
    return {**info, "op": "ready"}  # whatever else it claims to be


def _result(ident: int, status: int, fields: Headers, body: bytes) -> dict[str, Any]:
    lower = {k.lower(): v for k, v in fields}
    try:
        seconds = float(lower.get(DURATION_HEADER.lower(), "0"))
    except ValueError:
        seconds = 0.0
    if ERROR_HEADER.lower() in lower:  # the handler failed: its error is the body
        error = body.decode(errors="replace")
        return _result_message(ident, 500, [], b"", error, seconds)
    headers = [(k, v) for k, v in fields if k.lower() not in _DROP_FROM_RESULT]
    return _result_message(ident, status, headers, body, None, seconds)


def _result_message(
    ident: int, status: int, headers: Headers, body: bytes, error: str | None, seconds: float
) -> dict[str, Any]:
    return Result(ident, status, headers, body, error, seconds).to_wire()


async def read_response(reader: asyncio.StreamReader, max_body: int) -> tuple[int, Headers, bytes]:
    """Status, header fields and body of one response of the runtime (it always sends
    Content-Length). ProtocolError for a body above `max_body`."""
    head = await reader.readuntil(b"\r\n\r\n")
    (_, status, _), fields = parse_head(head[:-4])
    raw = next((v for k, v in fields if k.lower() == "content-length"), "0")
    if not raw.isdigit():
        raise HttpError(502, f"the runtime sent Content-Length {raw[:40]!r}")
    if int(raw) > max_body:
        raise ProtocolError(f"a response of {raw} bytes exceeds the limit of {max_body}")
    body = await reader.readexactly(int(raw))
    return int(status), fields, body
