"""The gateway<->worker transport: persistent TCP connections carrying faasd_py.protocol's frames
(a 4-byte length, then a msgpack map), many calls multiplexed on each, both ends authenticated.

The rules of a connection (`ServerHandshake`, `ClientHandshake`, `parse_request` and
`parse_reply` hold them without a socket, so unit tests drive them directly):

    server -> client  {"hello": "faasd-py rpc v1", "nonce": 16 random bytes (sn)}
    client -> server  {"nonce": 16 random bytes (cn), "proof": key(CONTEXT + b" client" + sn + cn)}
    server -> client  {"proof": key(CONTEXT + b" server" + sn + cn)}
                      or {"refused": reason}, and the server closes the connection
    then, any number of times and in any order:
    client -> server  {"id": int, "op": str, "args": map}
    server -> client  {"id": int, "ok": map}
                      or {"id": int, "error": {"status": int, "message": str}}

- Both ends prove they hold the cluster key over both nonces (mutual authentication; fresh
  nonces, so a recorded handshake cannot be replayed). The client proves first; a server answers
  a peer without the key with nothing but a refusal. The proofs differ by role, so one end's
  proof cannot be reflected back as the other's. A handshake has a deadline on both ends.
- The server runs each request as its own task (a slow call does not hold up the others) and
  stops reading a connection that has `max_concurrent` requests running (backpressure).
- A frame above `max_frame`, or one that is not of the protocol, closes the connection.
- A connection that breaks fails every call in flight on it at once with PeerUnreachable (502,
  naming the worker): no caller waits for its timeout on a dead worker. The next call
  reconnects. TCP keepalive and TCP_USER_TIMEOUT turn a silent peer (its host's link down) into
  a broken connection within seconds.
- Frames written in one round of the loop go out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from faasd_py.errors import FaasdError, InvocationTimeout, PayloadTooLarge
from faasd_py.protocol import HEADER, FrameDecoder, ProtocolError, encode

__all__ = [
    "ClientHandshake",
    "ClientStatistics",
    "Handler",
    "HandshakeFailed",
    "PeerUnreachable",
    "RemoteError",
    "RpcClient",
    "RpcServer",
    "ServerHandshake",
    "ServerStatistics",
    "error_frame",
    "parse_reply",
    "parse_request",
    "reply_frame",
    "request_frame",
]

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
Key = Callable[[bytes], bytes]

GREETING = "faasd-py rpc v1"
CONTEXT = GREETING.encode()
NONCE_SIZE = 16
# Requests one connection may have running on a server before the server stops reading it.
MAX_CONCURRENT = 4096
# Seconds a server gives a new connection to complete the handshake.
HANDSHAKE_TIMEOUT = 5.0
# A peer whose host vanished (link down, power off) sends neither FIN nor RST. Keepalive probes
# after 2 s of silence, 1 s apart, 3 unanswered: the kernel breaks the connection in about 5 s;
# TCP_USER_TIMEOUT does the same when sent data stays unacknowledged for 5 s.
_KEEPALIVE_IDLE, _KEEPALIVE_INTERVAL, _KEEPALIVE_COUNT = 2, 1, 3
_USER_TIMEOUT_MS = 5000
_FIX_KEY = "give every gateway and worker the same cluster secret"


class PeerUnreachable(FaasdError):
    """A worker that cannot be reached, or whose connection broke mid-call; the message names it
    ("worker NAME at ADDR: ...")."""

    status = 502

    def __init__(self, message: str, *, worker: str = "", address: str = "") -> None:
        super().__init__(message)
        self.worker = worker
        self.address = address


class RemoteError(FaasdError):
    """The remote handler raised a FaasdError: same status (instance attribute `status`) and
    message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --- the rules, without a socket -----------------------------------------------------------------


class HandshakeFailed(Exception):
    """The peer is not a faasd-py peer of this cluster; the message says why."""


def _proof(key: Key, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    # Nonces are of fixed size, so the concatenation is unambiguous.
    return key(CONTEXT + role + server_nonce + client_nonce)


def _is_nonce(value: Any) -> bool:
    return value.__class__ is bytes and len(value) == NONCE_SIZE


class ServerHandshake:
    """The server's side: `hello()` opens, `answer(client's message)` returns the reply or raises
    HandshakeFailed (then send `refusal(reason)` and close)."""

    def __init__(self, key: Key, nonce: bytes | None = None) -> None:
        self._key = key
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce

    def hello(self) -> dict[str, Any]:
        return {"hello": GREETING, "nonce": self.nonce}

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        client_nonce: Any = message.get("nonce")
        proof: Any = message.get("proof")
        if not _is_nonce(client_nonce) or proof.__class__ is not bytes:
            raise HandshakeFailed("the peer's answer to the handshake is malformed")
        expected = _proof(self._key, b" client", self.nonce, client_nonce)
        if not hmac.compare_digest(proof, expected):
            raise HandshakeFailed("the cluster key does not match")
        return {"proof": _proof(self._key, b" server", self.nonce, client_nonce)}

    @staticmethod
    def refusal(reason: str) -> dict[str, Any]:
        return {"refused": reason}


class ClientHandshake:
    """The client's side: `answer(server's hello)` returns the client's message, `verify(server's
    reply)` checks the server's proof; both raise HandshakeFailed."""

    def __init__(self, key: Key, nonce: bytes | None = None) -> None:
        self._key = key
        self.nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        self._server_nonce = b""

    def answer(self, hello: dict[str, Any]) -> dict[str, Any]:
        server_nonce: Any = hello.get("nonce")
        if hello.get("hello") != GREETING or not _is_nonce(server_nonce):
            raise HandshakeFailed(
                f"not a faasd-py worker speaking {GREETING!r} (its greeting: {_keys(hello)})"
            )
        self._server_nonce = server_nonce
        proof = _proof(self._key, b" client", server_nonce, self.nonce)
        return {"nonce": self.nonce, "proof": proof}

    def verify(self, reply: dict[str, Any]) -> None:
        refused, proof = reply.get("refused"), reply.get("proof")
        if refused.__class__ is str:
            raise HandshakeFailed(f"{refused} (the worker refused this end's proof); {_FIX_KEY}")
        expected = _proof(self._key, b" server", self._server_nonce, self.nonce)
        if proof.__class__ is not bytes or not hmac.compare_digest(proof, expected):
            raise HandshakeFailed(
                f"the cluster key does not match (the worker's proof); {_FIX_KEY}"
            )


def _keys(message: dict[str, Any]) -> str:
    keys = sorted(str(k)[:20] for k in message)[:5]
    return "a map with keys " + ", ".join(keys) if keys else "an empty map"


def request_frame(id_: int, op: str, args: dict[str, Any]) -> bytes:
    return encode({"id": id_, "op": op, "args": args})


def reply_frame(id_: int, result: dict[str, Any]) -> bytes:
    return encode({"id": id_, "ok": result})


def error_frame(id_: int, status: int, message: str) -> bytes:
    return encode({"id": id_, "error": {"status": status, "message": message}})


def parse_request(message: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """(id, op, args) of a request; ProtocolError if `message` is not one."""
    id_, op, args = message.get("id"), message.get("op"), message.get("args")
    if id_.__class__ is not int or op.__class__ is not str or args.__class__ is not dict:
        raise ProtocolError("a request must be {'id': int, 'op': str, 'args': map}")
    return id_, op, args


def parse_reply(message: dict[str, Any]) -> tuple[int, dict[str, Any] | RemoteError]:
    """(id, the result map or the remote error) of a reply; ProtocolError if it is not one."""
    id_ = message.get("id")
    if id_.__class__ is int:
        ok = message.get("ok")
        if ok.__class__ is dict:
            return id_, ok
        error = message.get("error")
        if error.__class__ is dict:
            status, text = error.get("status"), error.get("message")
            if status.__class__ is int and 400 <= status < 600 and text.__class__ is str:
                return id_, RemoteError(text, status)
    raise ProtocolError(
        "a reply must be {'id': int, 'ok': map} "
        "or {'id': int, 'error': {'status': int from 400 to 599, 'message': str}}"
    )


# --- what both ends of a connection share --------------------------------------------------------


def _tune(transport: asyncio.BaseTransport) -> None:
    """No Nagle delay (a call is a small frame that wants to leave now); keepalive and a user
    timeout so a peer that went silent breaks the connection (see the module's docstring)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, _KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, _KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_COUNT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _USER_TIMEOUT_MS)


class _Connection(asyncio.Protocol):
    """A decoder, writes gathered per loop round, write flow control, and closing with a reason.
    Subclasses handle each decoded map in `_received` (raising ProtocolError for a bad one) and
    say what a lost connection means in `_lost`."""

    def __init__(self, max_frame: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.reason = ""  # why it closed, for the calls on it
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._decoder = FrameDecoder(max_frame, require_op=False)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        _tune(transport)

    def send(self, frame: bytes) -> None:
        """Queue `frame`; what is queued in one round of the loop leaves in one write."""
        if self.closed:
            return
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    @property
    def write_paused(self) -> bool:
        return not self._writable.is_set()

    async def drain(self) -> None:
        """Until the transport's buffer is below its low-water mark (or the connection is gone)."""
        await self._writable.wait()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    @property
    def connected(self) -> bool:
        """The TCP connection was made (`lost` completes once it is gone)."""
        return self._transport is not None

    def abort(self, reason: str, *, flush: bool = False) -> None:
        """Close now, dropping what is unsent unless `flush`; `reason` is what the calls on it
        are told."""
        if self.closed:
            return
        if flush:
            self._flush()
        self.reason = reason
        self.closed = True
        self._writable.set()  # wake writers: what they wait for will not come
        self._lost()
        if self._transport is not None:
            if flush:
                self._transport.close()  # after the buffer is written
            else:
                self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            for message in self._decoder.feed(data):
                if self.closed:
                    return
                self._received(message)
        except ProtocolError as exc:
            self._protocol_error(exc)

    def _protocol_error(self, exc: ProtocolError) -> None:
        log.warning("%s: closing the connection: protocol error: %s", self._describe(), exc)
        self.abort(f"protocol error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()  # wake writers: what they wait for will not come
        if not self.closed:
            self.closed = True
            self.reason = (
                f"the connection broke ({exc})" if exc else "the peer closed the connection"
            )
            self._lost()
        if not self.lost.done():
            self.lost.set_result(None)

    def _received(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _lost(self) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError


# --- the client (the gateway's end) ---------------------------------------------------------------


class _ClientConnection(_Connection):
    def __init__(self, client: RpcClient) -> None:
        super().__init__(client.max_frame)
        self._client = client
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.ready: asyncio.Future[None] = self.loop.create_future()
        # Its failure is read here too: a connect that timed out no longer awaits it.
        self.ready.add_done_callback(_retrieve)
        self._handshake: ClientHandshake | None = ClientHandshake(client.key)
        self._answered = False

    def _describe(self) -> str:
        return self._client.describe

    def _received(self, message: dict[str, Any]) -> None:
        handshake = self._handshake
        if handshake is None:  # the hot path: a reply
            id_, outcome = parse_reply(message)
            future = self.pending.pop(id_, None)
            if future is None or future.done():
                return  # its call timed out or was cancelled
            if isinstance(outcome, RemoteError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
            return
        try:
            if not self._answered:
                self.send(encode(handshake.answer(message)))
                self._answered = True
            else:
                handshake.verify(message)
                self._handshake = None
                if not self.ready.done():
                    self.ready.set_result(None)
        except HandshakeFailed as exc:
            self.abort(str(exc))

    def _lost(self) -> None:
        client = self._client
        client.broken += bool(self.pending)
        if self._handshake is not None:
            if not self.ready.done():
                self.ready.set_exception(client.unreachable(self.reason))
            return
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():  # one exception each: tracebacks must not mix
                future.set_exception(
                    client.unreachable(f"{self.reason}; the call's outcome is unknown")
                )


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    connected: bool
    in_flight: int
    calls: int
    connects: int
    broken: int  # connections that broke with calls in flight


class RpcClient:
    """Calls to one worker over one connection, opened on the first call and again on the first
    call after it broke. Concurrent calls share it; a reply resolves its call by id (no task per
    call)."""

    def __init__(
        self,
        name: str,
        address: str,
        key: Key,
        *,
        max_frame: int,
        connect_timeout: float = 2.0,
    ) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"worker {name}: address {address!r} is not HOST:PORT")
        self.name = name
        self.address = address
        self.key = key
        self.max_frame = max_frame
        self.describe = f"worker {name} at {address}"
        self._host = host.removeprefix("[").removesuffix("]")
        self._port = int(port)
        self._connect_timeout = connect_timeout
        self._ids = itertools.count(1)
        self._conn: _ClientConnection | None = None
        self._connecting: asyncio.Task[_ClientConnection] | None = None
        self._closed = False
        self._in_flight = 0
        self._calls = 0
        self._connects = 0
        self.broken = 0  # connections that broke with calls in flight

    @property
    def in_flight(self) -> int:
        """Calls started and not yet returned (those waiting for a connection included)."""
        return self._in_flight

    def statistics(self) -> ClientStatistics:
        conn = self._conn
        return ClientStatistics(
            connected=conn is not None and not conn.closed,
            in_flight=self._in_flight,
            calls=self._calls,
            connects=self._connects,
            broken=self.broken,
        )

    def unreachable(self, reason: str) -> PeerUnreachable:
        return PeerUnreachable(f"{self.describe}: {reason}", worker=self.name, address=self.address)

    async def call(
        self,
        op: str,
        args: dict[str, Any],
        timeout: float | None = None,  # noqa: ASYNC109 (the API: a deadline per call)
    ) -> dict[str, Any]:
        """The worker's reply to `op`. Raises RemoteError (the handler's FaasdError),
        PeerUnreachable (no connection, or it broke while the call was in flight),
        InvocationTimeout (no reply within `timeout` seconds; a late reply is dropped) and
        PayloadTooLarge (the request is larger than a frame may be; nothing was sent)."""
        self._in_flight += 1
        self._calls += 1
        try:
            id_ = next(self._ids)
            frame = request_frame(id_, op, args)
            if len(frame) - HEADER.size > self.max_frame:
                raise PayloadTooLarge(
                    f"{self.describe}: the call {op!r} is {len(frame) - HEADER.size} bytes, "
                    f"above the frame limit of {self.max_frame}"
                )
            conn = self._conn
            if conn is None or conn.closed:
                conn = await self._connected()
                if conn.closed:  # it broke as soon as it was made
                    raise self.unreachable(conn.reason)
            future: asyncio.Future[dict[str, Any]] = conn.loop.create_future()
            conn.pending[id_] = future
            conn.send(frame)
            try:
                async with asyncio.timeout(timeout):
                    if conn.write_paused:
                        await conn.drain()
                    return await future
            except TimeoutError:
                raise InvocationTimeout(
                    f"{self.describe}: no reply to {op!r} within {timeout:g}s"
                ) from None
            finally:
                conn.pending.pop(id_, None)  # a late reply finds no one
        finally:
            self._in_flight -= 1

    async def _connected(self) -> _ClientConnection:
        """The open connection; concurrent callers share one attempt, and its failure."""
        if self._closed:
            raise self.unreachable("the client is closed")
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._opened)
            self._connecting = task
        try:
            # Shielded: a caller that gives up does not end the attempt the others wait for.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task.cancelled() and caller is not None and not caller.cancelling():
                raise self.unreachable("the client was closed") from None  # close() ended it
            raise

    def _opened(self, task: asyncio.Task[_ClientConnection]) -> None:
        self._connecting = None
        # Retrieved here, so an attempt whose callers all gave up leaves no warning.
        if not task.cancelled() and task.exception() is None:
            self._connects += 1
            if not self._closed:  # else close() has it
                self._conn = task.result()

    async def _open(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        conn = _ClientConnection(self)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(lambda: conn, self._host, self._port)
                await conn.ready
        except TimeoutError:
            conn.abort("connect timeout")
            what = "no handshake" if conn.connected else "no connection"
            hint = (
                "is it a faasd-py worker?" if conn.connected else "is the worker up and reachable?"
            )
            raise self.unreachable(f"{what} within {self._connect_timeout:g}s ({hint})") from None
        except OSError as exc:
            raise self.unreachable(f"cannot connect: {exc.strerror or exc}") from exc
        except BaseException:
            conn.abort("the connection attempt was cancelled")
            raise
        return conn

    def abort(self, reason: str) -> None:
        """Break the connection now: calls in flight fail with PeerUnreachable saying `reason`
        (for whoever learns first that the worker is gone). The next call reconnects."""
        if self._conn is not None:
            self._conn.abort(reason)

    async def close(self) -> None:
        """Calls in flight fail with PeerUnreachable; later calls too."""
        self._closed = True
        connections = [] if self._conn is None else [self._conn]
        self._conn = None
        task = self._connecting
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is None:
                connections.append(task.result())  # made before it saw the cancellation
        for conn in connections:
            conn.abort("the client was closed")
            if conn.connected:
                await conn.lost


# --- the server (the worker's end) ---------------------------------------------------------------


class _ServerConnection(_Connection):
    def __init__(self, server: RpcServer) -> None:
        super().__init__(server.max_frame)
        self._server = server
        self.tasks: set[asyncio.Task[None]] = set()
        self._handshake: ServerHandshake | None = ServerHandshake(server.key)
        self._backlog: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._reading = True
        self._deadline: asyncio.TimerHandle | None = None
        self._peer = "?"

    def _describe(self) -> str:
        return f"worker {self._server.name}, connection from {self._peer}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._peer = f"{peer[0]}:{peer[1]}"
        self._server.connections.add(self)
        assert self._handshake is not None
        self.send(encode(self._handshake.hello()))
        timeout = self._server.handshake_timeout
        self._deadline = self.loop.call_later(timeout, self._handshake_expired, timeout)

    def _handshake_expired(self, timeout: float) -> None:
        log.warning("%s: closing it: no handshake within %gs", self._describe(), timeout)
        self.abort("no handshake")

    def _received(self, message: dict[str, Any]) -> None:
        if self._handshake is None:  # the hot path: a request
            request = parse_request(message)
            if len(self.tasks) < self._server.max_concurrent:
                self._start(*request)
            else:  # backpressure: the client's writes wait in its buffers, then in its calls
                self._backlog.append(request)
                if self._reading and self._transport is not None:
                    self._transport.pause_reading()
                    self._reading = False
            return
        try:
            reply = self._handshake.answer(message)
        except HandshakeFailed as exc:
            log.warning("%s: refused it: %s", self._describe(), exc)
            self.send(encode(ServerHandshake.refusal(str(exc))))
            self.abort(str(exc), flush=True)
            return
        self._handshake = None
        if self._deadline is not None:
            self._deadline.cancel()
        self.send(encode(reply))

    def _start(self, id_: int, op: str, args: dict[str, Any]) -> None:
        task = self.loop.create_task(self._serve(id_, op, args))
        self.tasks.add(task)
        self._server.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._server.tasks.discard(task)
        self._server.served += 1
        if self.closed:
            return
        if self._backlog:
            self._start(*self._backlog.popleft())
        elif not self._reading and self._transport is not None:
            self._transport.resume_reading()
            self._reading = True

    async def _serve(self, id_: int, op: str, args: dict[str, Any]) -> None:
        server = self._server
        try:
            result = await server.handler(op, args)
            if not isinstance(result, dict):
                raise TypeError(f"the handler returned {type(result).__name__}, not a dict")
            frame = reply_frame(id_, result)
        except FaasdError as exc:
            frame = error_frame(id_, exc.status, exc.message)
        except Exception:
            log.exception("worker %s: the call %r failed", server.name, op)
            frame = error_frame(id_, 500, f"worker {server.name}: internal error (see its log)")
        if len(frame) - HEADER.size > server.max_frame:
            message = (
                f"worker {server.name}: the reply to {op!r} is {len(frame) - HEADER.size} bytes, "
                f"above the frame limit of {server.max_frame}"
            )
            log.error("%s", message)
            frame = error_frame(id_, 500, message)
        self.send(frame)
        if self.write_paused:  # keeps this request's slot until the client reads: backpressure
            await self.drain()

    def _lost(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._backlog.clear()
        for task in self.tasks:
            task.cancel()
        self._server.connections.discard(self)


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    connections: int
    running: int  # requests whose handler runs now
    served: int


class RpcServer:
    """Serves calls to `handler(op, args)` on every authenticated connection."""

    def __init__(
        self,
        handler: Handler,
        key: Key,
        *,
        max_frame: int,
        name: str = "worker",
        max_concurrent: int = MAX_CONCURRENT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.key = key
        self.max_frame = max_frame
        self.name = name
        self.max_concurrent = max_concurrent
        self.handshake_timeout = handshake_timeout
        self.connections: set[_ServerConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.served = 0
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0: a free port, see `port`)."""
        # The socket is made here, not by loop.create_server, which leaves a socket open when
        # listen() fails (a port another socket with SO_REUSEADDR already listens on).
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=1024)
        except OSError as exc:
            raise FaasdError(
                f"worker {self.name}: cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "choose a free port or an address of this host"
            ) from exc
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ServerConnection(self), sock=sock)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not listening; call start() first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def statistics(self) -> ServerStatistics:
        return ServerStatistics(len(self.connections), len(self.tasks), self.served)

    def drop_connections(self) -> None:
        """Abort every connection now (fencing, tests): the calls on them fail on the client."""
        for conn in list(self.connections):
            conn.abort("dropped by the worker")

    async def close(self) -> None:
        """Stop listening, close every connection, cancel the handlers still running and wait
        for them to end."""
        if self._server is not None:
            self._server.close()
        connections = list(self.connections)
        self.drop_connections()
        for task in self.tasks:  # their replies have no connection left to go out on
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for conn in connections:
            await conn.lost
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
