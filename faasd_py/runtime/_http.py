"""The instance's end of the `net` channel: a small HTTP/1.1 server, standard library only.

The worker talks to the instance as faasd's gateway talks to a function's watchdog: each
invocation is one HTTP request (method, path, query, headers and body forwarded), answered
with the function's status, headers and body. The worker adds what it needs in headers of its
own: `X-Call-Id`, and `X-Faasd-Timeout` (seconds the handler may run). The answer carries
`X-Duration-Seconds` (the handler's time, as the of-watchdog reports it) and, when the handler
failed, `X-Faasd-Error: 1` with the error as its body.

`BlockingHttpChannel` turns requests into the invoke messages the runtime's loop already
handles and its result messages into responses, so the loop does not know which channel it
serves. Two paths are the channel's own:

- `GET /_/ready` answers once the handler is loaded (200, JSON `{pid, load_seconds}`) or failed
  to load (500, the error). The worker's first request; the connection it came on is the
  channel's: when the worker closes it (or dies), the instance's end of the channel ends.
- `GET /_/health`: the same answer at once (503 while loading), as the of-watchdog's.

A thread per connection reads requests one at a time and writes no response itself: the
thread that handles the invocation writes it (`send`), which saves a thread switch on the
reply. Bodies over `max_body` get 413 with a message; a chunked request body gets 411 (the
worker always sends Content-Length). The listening socket is the worker's choice: bound in the
instance's own network namespace (`--listen=0.0.0.0:8080`, sandboxes) or handed over bound to
127.0.0.1 (`--fd`, plain processes, which share the host's network).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from faasd_py.fdwait import wait_readable
from faasd_py.protocol import ChannelClosed, Headers

__all__ = [
    "BlockingHttpChannel",
    "HttpError",
    "RequestHead",
    "encode_message",
    "encode_response",
    "parse_head",
    "parse_request_head",
]

READY_PATH = "/_/ready"
HEALTH_PATH = "/_/health"
TIMEOUT_HEADER = "x-faasd-timeout"
ERROR_HEADER = "X-Faasd-Error"
DURATION_HEADER = "X-Duration-Seconds"
# For a direct caller that sends no X-Faasd-Timeout: what the handler's context says.
DEFAULT_TIMEOUT = 60.0
MAX_HEAD = 64 * 1024
MAX_CONNECTIONS = 256
# Headers that frame one hop of HTTP: never forwarded, never taken from a handler.
HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
_OWN = HOP_BY_HOP | {TIMEOUT_HEADER}
_READ = 256 * 1024
# Header text: UTF-8, and any other byte kept as it came (aiohttp, in front, decodes so too).
_TEXT = ("utf-8", "surrogateescape")


class HttpError(Exception):
    """A request this server refuses: answered with `status` and the message, then closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- the pure core: heads in, bytes out --------------------------------------------------------


def parse_head(head: bytes) -> tuple[list[str], Headers]:
    """The start line's three parts and the header fields of a head (without its blank line)."""
    lines = head.decode(*_TEXT).split("\r\n")
    start = lines[0].split(" ", 2)
    if len(start) != 3:
        raise HttpError(400, f"malformed start line {lines[0][:100]!r}")
    headers: Headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise HttpError(400, f"malformed header line {line[:100]!r}")
        headers.append((name, value.strip(" \t")))
    return start, headers


@dataclass(frozen=True)
class RequestHead:
    method: str
    path: str
    query: str
    headers: Headers  # what the function sees: the worker's own and framing headers removed
    content_length: int
    keep_alive: bool
    call_id: str
    timeout: float


def parse_request_head(head: bytes, max_body: int) -> RequestHead:
    (method, target, version), fields = parse_head(head)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"HTTP version {version!r} is not supported")
    if not target.startswith("/"):
        raise HttpError(400, f"request target {target[:100]!r} is not a path")
    path, _, query = target.partition("?")
    lower = {k.lower(): v for k, v in fields}
    if "transfer-encoding" in lower:
        raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
    raw_length = lower.get("content-length", "0")
    if not raw_length.isdigit():
        raise HttpError(400, f"Content-Length {raw_length[:40]!r} is not a number")
    length = int(raw_length)
    if length > max_body:
        raise HttpError(
            413, f"the request body of {length} bytes exceeds the limit of {max_body} bytes"
        )
    connection = lower.get("connection", "").lower()
    keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    try:
        timeout = float(lower.get(TIMEOUT_HEADER, DEFAULT_TIMEOUT))
    except ValueError:
        raise HttpError(400, f"{TIMEOUT_HEADER} is not a number of seconds") from None
    return RequestHead(
        method=method,
        path=path,
        query=query,
        headers=[(k, v) for k, v in fields if k.lower() not in _OWN],
        content_length=length,
        keep_alive=keep_alive,
        call_id=lower.get("x-call-id", ""),
        timeout=timeout,
    )


def encode_message(
    start_line: str, headers: Headers, body: bytes, *, keep_alive: bool = True
) -> bytes:
    """A request or response: its head (framing headers replaced by Content-Length) and body.
    A line break or NUL in a name or value would split the head, so it is refused
    (ValueError)."""
    lines = [start_line]
    for name, value in headers:
        if name.lower() in HOP_BY_HOP:
            continue
        if any(c in name or c in value for c in "\r\n\0") or ":" in name:
            raise ValueError(f"header {name[:60]!r} holds a line break, a NUL or a colon")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(*_TEXT) + body


def encode_response(
    status: int, headers: Headers, body: bytes, *, keep_alive: bool = True
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return encode_message(f"HTTP/1.1 {status} {reason}", headers, body, keep_alive=keep_alive)


def result_response(message: dict[str, Any]) -> bytes:
    """The response for a result message of the runtime's loop."""
    duration = (DURATION_HEADER, f"{message['seconds']:.6f}")
    error = message.get("error")
    if error is not None:
        text = [("Content-Type", "text/plain; charset=utf-8"), (ERROR_HEADER, "1"), duration]
        return encode_response(500, text, str(error).encode())
    headers = [*message["headers"], duration]
    try:
        return encode_response(message["status"], headers, message["body"])
    except ValueError as exc:  # the handler's headers: its failure, as the other channels say
        text = [("Content-Type", "text/plain; charset=utf-8"), (ERROR_HEADER, "1"), duration]
        return encode_response(500, text, f"BadReturn: {exc}".encode())


def _plain(status: int, text: str, *, keep_alive: bool = True) -> bytes:
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    return encode_response(status, headers, text.encode(), keep_alive=keep_alive)


# --- the blocking edge -------------------------------------------------------------------------


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.answered = threading.Event()
        self.lock = threading.Lock()

    def read_head(self) -> bytes | None:
        while (end := self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)) < 0:
            if len(self.buffer) > MAX_HEAD:
                raise HttpError(431, f"the request head exceeds {MAX_HEAD} bytes")
            if not self._fill():
                return None
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    def read_body(self, length: int) -> bytes | None:
        while len(self.buffer) < length:
            if not self._fill():
                return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(_READ)
        except OSError:
            return False
        self.buffer += data
        return bool(data)

    def write(self, data: bytes) -> None:
        with self.lock, contextlib.suppress(OSError):
            self.sock.sendall(data)


class BlockingHttpChannel:
    """The instance's end of a net channel (the `BlockingChannel` protocol)."""

    def __init__(self, listener: socket.socket, max_body: int, worker_pidfd: int | None) -> None:
        listener.setblocking(True)
        self._listener = listener
        self._max_body = max_body
        self._pidfd = worker_pidfd
        self._cond = threading.Condition()
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._pending: dict[int, _Connection] = {}
        self._next_id = 0
        self._state: dict[str, Any] | None = None  # the ready or load_failed message
        self._control: _Connection | None = None
        self._told = False  # the worker has its answer to /_/ready
        self._connections: set[_Connection] = set()
        self._ended = False
        # A pipe wakes the acceptor when this end shuts down.
        self._wake_r, self._wake_w = os.pipe()
        threading.Thread(target=self._accept_forever, name="http-accept", daemon=True).start()

    @classmethod
    def open(
        cls, listen: str | None, fd: int | None, max_body: int, worker_pidfd: int | None
    ) -> BlockingHttpChannel:
        if fd is not None:
            listener = socket.socket(fileno=fd)
        elif listen is not None:
            host, _, port = listen.rpartition(":")
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, int(port)))
            listener.listen(128)
        else:
            raise ValueError("the net channel needs --listen or --fd")
        return cls(listener, max_body, worker_pidfd)

    # --- BlockingChannel -----------------------------------------------------------------------

    def receive(self) -> dict[str, Any]:
        with self._cond:
            while not self._inbox:
                if self._ended:
                    raise ChannelClosed("the worker closed the channel")
                self._cond.wait()
            return self._inbox.popleft()

    def send(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op in ("ready", "load_failed"):
            with self._cond:
                self._state = message
                self._cond.notify_all()
            return
        with self._cond:
            connection = self._pending.pop(message["id"], None)
        if connection is None:
            return  # its connection is gone
        connection.write(result_response(message))
        connection.answered.set()

    def shutdown(self) -> None:
        """Stop serving: the worker sees the channel's connection close. A load failure is
        told first to a worker that already asked (or asks within a moment)."""
        with self._cond:
            self._cond.wait_for(lambda: self._told or self._ended, timeout=5)
        self._end()

    def close(self) -> None:
        self._end()
        self._listener.close()

    # --- serving -------------------------------------------------------------------------------

    def _end(self) -> None:
        with self._cond:
            if self._ended:
                return
            self._ended = True
            connections = list(self._connections)
            self._cond.notify_all()
        os.write(self._wake_w, b"x")
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def _accept_forever(self) -> None:
        watched = [self._listener.fileno(), self._wake_r]
        if self._pidfd is not None:
            watched.append(self._pidfd)
        while True:
            readable = wait_readable(watched)
            if self._wake_r in readable or self._ended:
                return
            if self._pidfd is not None and self._pidfd in readable:
                self._end()  # the worker is gone
                return
            try:
                sock, _ = self._listener.accept()
            except OSError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock)
            with self._cond:
                if self._ended or len(self._connections) >= MAX_CONNECTIONS:
                    sock.close()
                    continue
                self._connections.add(connection)
            threading.Thread(
                target=self._serve_connection, args=(connection,), name="http", daemon=True
            ).start()

    def _serve_connection(self, connection: _Connection) -> None:
        try:
            while self._serve_one(connection):
                pass
        finally:
            with self._cond:
                self._connections.discard(connection)
                if connection is self._control:
                    self._ended = True  # the worker closed its end
                    self._cond.notify_all()
            connection.sock.close()
            if connection is self._control:
                os.write(self._wake_w, b"x")

    def _serve_one(self, connection: _Connection) -> bool:
        """One request and its answer; False when the connection is done."""
        try:
            raw = connection.read_head()
            if raw is None:
                return False
            head = parse_request_head(raw, self._max_body)
        except HttpError as exc:
            connection.write(_plain(exc.status, f"{exc}\n", keep_alive=False))
            return False
        body = connection.read_body(head.content_length)
        if body is None:
            return False
        if head.path in (READY_PATH, HEALTH_PATH) and head.method == "GET":
            connection.write(self._state_response(connection, wait=head.path == READY_PATH))
            if connection is self._control:
                with self._cond:
                    self._told = True
                    self._cond.notify_all()
            return head.keep_alive
        with self._cond:
            if self._ended:
                return False
            self._next_id += 1
            ident = self._next_id
            self._pending[ident] = connection
            connection.answered.clear()
            self._inbox.append(
                {
                    "op": "invoke",
                    "id": ident,
                    "call_id": head.call_id,
                    "method": head.method,
                    "path": head.path,
                    "query": head.query,
                    "headers": head.headers,
                    "body": body,
                    "timeout": head.timeout,
                }
            )
            self._cond.notify()
        # One request at a time per connection: the answer goes out before the next is read.
        while not connection.answered.wait(1.0):
            if self._ended:
                return False
        return head.keep_alive

    def _state_response(self, connection: _Connection, *, wait: bool) -> bytes:
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self._state is not None or self._ended)
                if self._control is None:
                    self._control = connection
                    self._cond.notify_all()
            state = self._state
        if state is None:
            return _plain(503, "loading the handler\n")
        if state["op"] == "load_failed":
            return _plain(500, str(state["error"]))
        info = {"pid": state["pid"], "load_seconds": state["load_seconds"]}
        return encode_response(
            200, [("Content-Type", "application/json")], json.dumps(info).encode()
        )
