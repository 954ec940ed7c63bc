"""The gateway's listening socket: a lean HTTP/1.1 front for the invocations (/function/ and
/async-function/), aiohttp for the rest.

aiohttp's request machinery (its parser's objects, the router, the middlewares, a task per
connection, StreamResponse) costs several times what a warm invocation costs everywhere else,
so plain requests to /function/NAME[.NS][/path] and, where the gateway takes async calls, to
/async-function/NAME[.NS][/path] are read and answered here (uvicorn's httptools Protocol is
the model): the head parsed by the project's one request-head parser
(faasd_py.runtime._http.parse_head), the body by Content-Length or chunked, the call run by
gateway/_invoke's `Invocations` or enqueued by gateway/_async's `Enqueues` (the same code as
the aiohttp routes), the answer written as bytes with the headers aiohttp would send (Date,
Server, Content-Type, Content-Length).

Everything else goes to aiohttp unchanged: another path, an `Expect`, `Upgrade`, a framing or
a target this front does not take as it is (percent-escapes, dot segments), or anything the
parser refuses. The connection (transport and the bytes buffered, from the start of the request
not yet answered) is handed to a RequestHandler of the runner's server, which keeps it from
then on; aiohttp then answers as it always did, errors included.

The rules of gateway/_connections hold here too, with the same counters and answers: a head
must arrive within header_timeout of its first byte (408), a connection without a request in
progress closes after idle_timeout, and one beyond max_connections gets 503. Requests on a
connection are answered in order, one at a time (pipelined ones wait in the buffer); reading
pauses while a call runs and the buffer holds more than a head, and while the transport's
write buffer is full.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from faasd_py.gateway._async import CALLBACK_HEADER, Enqueues
from faasd_py.gateway._connections import ConnectionLimits, GuardedRunner
from faasd_py.gateway._errors import bug_response
from faasd_py.gateway._invoke import Invocations, Reply, forward, new_trace
from faasd_py.gateway._keys import ASYNC_CALLS
from faasd_py.protocol import Headers, Request
from faasd_py.runtime._http import HttpError, parse_head
from faasd_py.spec import split_ref

MAX_HEAD = 64 * 1024  # longer heads go to aiohttp, which refuses them
_PREFIX = b"/function/"
_ASYNC_PREFIX = b"/async-function/"
_PREFIXES = (_PREFIX, _ASYNC_PREFIX)
_CALLBACK = CALLBACK_HEADER.lower()
_METHOD = re.compile(r"[A-Z]+")
# A head's text with a control character other than HTAB, CR and LF: aiohttp's to judge.
_ODD_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers that take a request off the lean path.
_FOR_AIOHTTP = frozenset({"expect", "upgrade", "te"})
_NO_BODY = frozenset({204, 304})
_PAUSE_AT = 256 * 1024  # buffered bytes beyond the request under way: stop reading


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""  # as aiohttp writes an unknown status: "599 "


_REASONS = {status: _reason(status) for status in range(100, 600)}


class _Date:
    """The Date header's value, made once a second (as aiohttp caches it)."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = 0
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = email.utils.formatdate(second, usegmt=True)
        return self._value


class _Lean:
    """A request this front answers itself: what the head said."""

    __slots__ = (
        "asynchronous",
        "body_at",
        "callback",
        "chunked",
        "close",
        "head",
        "host",
        "http10",
        "length",
        "method",
        "name",
        "path",
        "query",
        "started",
        "started_wall",
    )

    def __init__(self) -> None:
        self.head: Headers = []
        self.asynchronous = False  # /async-function/
        self.callback: str | None = None  # its X-Callback-Url
        self.method = ""
        self.name = ""
        self.path = ""
        self.query = ""
        self.host: str | None = None
        self.http10 = False
        self.close = False
        self.chunked = False
        self.length = 0
        self.body_at = 0  # where the body starts in the buffer
        # When the head was read: wall clock (X-Start-Time) and perf_counter (the duration).
        self.started_wall = 0.0
        self.started = 0.0

    @property
    def prefix(self) -> str:
        return (_ASYNC_PREFIX if self.asynchronous else _PREFIX).decode()

    def trace(self) -> dict[str, str]:
        """The call's X-Call-Id and X-Start-Time (gateway/_invoke's)."""
        call_id = None
        for key, value in self.head:
            if key.lower() == "x-call-id":
                call_id = value
                break
        return new_trace(call_id, self.started_wall)


def read_head(buffer: bytearray, end: int, *, with_async: bool) -> _Lean | None:
    """The request whose head is buffer[:end], when this front takes it as it is; None: it is
    aiohttp's to answer. `with_async`: the gateway takes async calls (else aiohttp's 404)."""
    raw = bytes(buffer[:end])
    first = raw.find(b"\r\n")
    line = raw if first < 0 else raw[:first]
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    target = parts[1]
    asynchronous = with_async and target.startswith(_ASYNC_PREFIX)
    if not asynchronous and not target.startswith(_PREFIX):
        return None
    if b"%" in target or b"#" in target or b"/." in target or b"//" in target:
        return None  # aiohttp decodes and normalizes such a path
    try:
        (method, target_text, version), fields = parse_head(raw)
    except HttpError:
        return None
    if _METHOD.fullmatch(method) is None or version not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    if _ODD_TEXT.search(raw.decode("latin-1")) is not None or "\r" in target_text:
        return None
    lean = _Lean()
    lean.asynchronous = asynchronous
    path, _, query = target_text[len(lean.prefix) :].partition("?")
    if "+" in query:
        return None  # aiohttp's query_string turns it into a space
    name, _, rest = path.partition("/")
    if not name:
        return None
    lean.method, lean.name, lean.path, lean.query = method, name, "/" + rest, query
    lean.http10 = version == "HTTP/1.0"
    keep_alive_asked = False
    length: int | None = None
    for key, value in fields:
        if _TOKEN.fullmatch(key) is None:
            return None
        lower = key.lower()
        if lower == "host":
            if lean.host is not None:
                return None
            lean.host = value
        elif lower == "content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif lower == "transfer-encoding":
            if lean.chunked or value.lower() != "chunked":
                return None
            lean.chunked = True
        elif lower == "connection":
            tokens = {token.strip().lower() for token in value.split(",")}
            if "upgrade" in tokens:
                return None
            lean.close = lean.close or "close" in tokens
            keep_alive_asked = keep_alive_asked or "keep-alive" in tokens
        elif lower in _FOR_AIOHTTP:
            return None
        elif asynchronous and lower == _CALLBACK and lean.callback is None:
            lean.callback = value  # the first, as the aiohttp route reads it
    if lean.host is None or (lean.chunked and length is not None):
        return None
    if lean.http10 and not keep_alive_asked:
        lean.close = True
    lean.head = fields
    lean.length = length or 0
    lean.body_at = end + 4
    lean.started_wall, lean.started = time.time(), time.perf_counter()
    return lean


class _Chunks:
    """A chunked body being read from the buffer, step by step as bytes come."""

    __slots__ = ("at", "done", "parts", "size")

    def __init__(self, at: int) -> None:
        self.at = at  # where the next chunk's size line starts
        self.parts: list[bytes] = []
        self.size = 0
        self.done = False

    def read(self, buffer: bytearray) -> bool:
        """Read what is buffered; False when the coding is broken (aiohttp's to answer)."""
        while not self.done:
            eol = buffer.find(b"\r\n", self.at)
            if eol < 0:
                return len(buffer) - self.at < 1024
            size_text = bytes(buffer[self.at : eol]).split(b";", 1)[0]
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                return False
            size = int(size_text, 16)
            if size == 0:
                # Trailers: header lines up to an empty one.
                end = buffer.find(b"\r\n\r\n", eol)
                if buffer[eol : eol + 4] == b"\r\n\r\n":
                    end = eol
                if end < 0:
                    return len(buffer) - eol < MAX_HEAD
                self.at = end + 4
                self.done = True
                return True
            if len(buffer) < eol + 2 + size + 2:
                return True
            if buffer[eol + 2 + size : eol + 4 + size] != b"\r\n":
                return False
            self.parts.append(bytes(buffer[eol + 2 : eol + 2 + size]))
            self.size += size
            self.at = eol + 4 + size
        return True


class Front:
    """The shared state of the front's connections: the app's invocations, the limits, and
    the aiohttp server that takes the requests this front does not."""

    def __init__(self, runner: GuardedRunner) -> None:
        self.runner = runner
        self.limits: ConnectionLimits = runner.limits
        self.invocations = Invocations(runner.app)
        # Async calls: where the app takes them (`up`'s queue; else aiohttp answers 404).
        self.enqueues = Enqueues(runner.app) if ASYNC_CALLS in runner.app else None
        self.connections: set[FrontProtocol] = set()
        self.date = _Date()
        self.closing = False
        self._empty: asyncio.Event | None = None  # set once none is open, while draining

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    async def drain(self) -> None:
        """Close idle connections now, the others once their call is answered; return when
        all are closed (the caller bounds the wait, then calls `abort`)."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_when_idle()
        if self.connections:
            self._empty = asyncio.Event()
            await self._empty.wait()

    def abort(self) -> None:
        for connection in list(self.connections):
            connection.abort()

    def forget(self, connection: FrontProtocol) -> None:
        self.connections.discard(connection)
        if self._empty is not None and not self.connections:
            self._empty.set()


class FrontProtocol(asyncio.Protocol):
    """One connection, until it closes or goes to aiohttp."""

    __slots__ = (
        "_buffer",
        "_busy",
        "_chunks",
        "_counted",
        "_discard",
        "_eof",
        "_front",
        "_head_deadline",
        "_idle_deadline",
        "_lean",
        "_loop",
        "_read_paused",
        "_remote",
        "_timer",
        "_timer_at",
        "_transport",
        "_write_paused",
    )

    def __init__(self, front: Front) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lean: _Lean | None = None  # the request whose body is being read
        self._chunks: _Chunks | None = None
        self._busy = False  # a call is running
        # Bytes of a refused body still to drop (-1: all, until the client closes).
        self._discard = 0
        self._eof = False
        self._counted = False
        self._read_paused = False
        self._write_paused = False
        self._remote: str | None = None
        # Deadlines in loop time (0: none) and the one timer that checks them.
        self._head_deadline = 0.0
        self._idle_deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        limits = self._front.limits
        if limits.open >= limits.max_connections:
            limits.refused += 1
            transport.write(limits.too_many)
            transport.close()
            return
        limits.open += 1
        self._counted = True
        self._front.connections.add(self)
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) and peer else None
        self._set_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        lean = self._lean
        if lean is not None:
            # Closed in the middle of a body: counted as the aiohttp route counts it (499; an
            # async call, which is no invocation yet, is not).
            self._lean = None
            if not lean.asynchronous:
                name, namespace = split_ref(lean.name)
                self._front.invocations.observe_bug(name, namespace, 499, lean.started)
        self._forget()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._busy or self._write_paused:
            if len(self._buffer) > _PAUSE_AT and not self._read_paused and self._transport:
                self._read_paused = True
                self._transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets the answer; a request cut
        # short by the end of its bytes never will.
        self._eof = True
        if not self._busy and self._buffer:
            self._process()
        return self._busy

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy:
            self._process()

    # --- reading requests ----------------------------------------------------------------------

    def _process(self) -> None:
        """Answer what the buffer holds, one request at a time."""
        transport = self._transport
        while transport is not None and not self._busy and not self._write_paused:
            buffer = self._buffer
            if self._discard:
                if self._discard < 0:
                    buffer.clear()
                    return
                dropped = min(self._discard, len(buffer))
                del buffer[:dropped]
                self._discard -= dropped
                if self._discard:
                    return
            lean = self._lean
            if lean is None:
                if not buffer:
                    if self._eof or self._front.closing:
                        transport.close()
                    return
                end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
                if end < 0:
                    if len(buffer) > MAX_HEAD or not _may_be_lean(buffer):
                        self._hand_over()
                    else:
                        self._head_started()
                    return
                self._head_deadline = 0.0
                lean = read_head(buffer, end, with_async=self._front.enqueues is not None)
                if lean is None:
                    self._hand_over()
                    return
                self._lean = lean
                if lean.chunked:
                    self._chunks = _Chunks(lean.body_at)
                elif lean.length > self._front.invocations.max_body:
                    self._answer_too_large(lean)
                    return
            body = self._read_body(lean)
            if body is None:
                return
            self._lean = self._chunks = None
            self._start_call(lean, body)

    def _read_body(self, lean: _Lean) -> bytes | None:
        """The request's whole body, taken out of the buffer with its head; None while more
        must come (or when the request went elsewhere)."""
        buffer = self._buffer
        chunks = self._chunks
        if chunks is None:
            end = lean.body_at + lean.length
            if len(buffer) < end:
                self._idle_deadline = 0.0
                return None
            body = bytes(buffer[lean.body_at : end])
            del buffer[:end]
            return body
        if not chunks.read(buffer):
            self._lean = self._chunks = None
            self._hand_over()
            return None
        if chunks.size > self._front.invocations.max_body:
            self._answer_too_large(lean)
            return None
        if not chunks.done:
            self._idle_deadline = 0.0
            return None
        del buffer[: chunks.at]
        return b"".join(chunks.parts)

    def _head_started(self) -> None:
        """Part of a head is here: it must be whole by the header timeout."""
        self._idle_deadline = 0.0
        if not self._head_deadline:
            self._head_deadline = self._loop.time() + self._front.limits.header_timeout
            self._arm(self._head_deadline)

    def _hand_over(self) -> None:
        """Give the connection, with every byte not yet answered, to aiohttp for good."""
        transport = self._transport
        assert transport is not None
        data = bytes(self._buffer)
        head_deadline = self._head_deadline
        self._forget()
        self._transport = None
        if self._read_paused:
            transport.resume_reading()
        handler = self._front.runner.handler()
        transport.set_protocol(handler)
        handler.adopt(transport, data, head_deadline)

    def _forget(self) -> None:
        """This protocol is done with its connection: uncount it, stop its timer."""
        if self._counted:
            self._counted = False
            self._front.limits.open -= 1
            self._front.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer = bytearray()

    # --- running the call and answering --------------------------------------------------------

    def _start_call(self, lean: _Lean, body: bytes) -> None:
        self._busy = True
        self._idle_deadline = 0.0
        self._loop.create_task(self._call(lean, body))

    async def _call(self, lean: _Lean, body: bytes) -> None:
        trace = lean.trace()

        async def request() -> Request:
            headers = forward(lean.head, lean.host, self._remote, trace)
            return Request(trace["X-Call-Id"], lean.method, lean.path, lean.query, headers, body)

        self._respond(lean, await self._answer(lean, trace, request))

    async def _answer(
        self, lean: _Lean, trace: dict[str, str], request: Callable[[], Awaitable[Request]]
    ) -> Reply | web.Response:
        """Run (or enqueue) the call that `request` reads, as the aiohttp routes would."""
        front = self._front
        name, namespace = split_ref(lean.name)
        try:
            if lean.asynchronous:
                assert front.enqueues is not None
                return await front.enqueues.accept(
                    name, namespace, lean.started_wall, trace, lean.callback, request
                )
            return await front.invocations.answer(name, namespace, lean.started, trace, request)
        except Exception:
            reply = _bug(lean, trace)
            if not lean.asynchronous:
                front.invocations.observe_bug(name, namespace, reply.status, lean.started)
            return reply

    def _answer_too_large(self, lean: _Lean) -> None:
        """413 over --max-body, counted as the aiohttp route counts it. The rest of a body of
        known length is read and dropped, and the connection goes on; after a chunked one,
        whose end is unknown, the gateway stops writing and drops what comes until the client
        closes (closing at once could reset the connection before the client read the 413)."""
        self._busy = True
        self._lean = self._chunks = None
        if lean.chunked:
            lean.close = True
            self._discard = -1
        else:
            self._discard = lean.body_at + lean.length

        async def too_large() -> Request:
            raise self._front.invocations.too_large()

        async def answer() -> None:
            self._respond(lean, await self._answer(lean, lean.trace(), too_large))

        self._loop.create_task(answer())

    def _respond(self, lean: _Lean, reply: Reply | web.Response) -> None:
        transport = self._transport
        self._busy = False
        if transport is None or transport.is_closing():
            return
        close = lean.close or self._front.closing
        transport.write(self._encode(lean, reply, close))
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        if close:
            if self._discard < 0 and transport.can_write_eof():
                transport.write_eof()
                self._set_idle()
            else:
                transport.close()
            return
        self._set_idle()
        self._process()

    def _encode(self, lean: _Lean, reply: Reply | web.Response, close: bool) -> bytes:
        """The response's bytes, with the headers aiohttp would send."""
        if isinstance(reply, Reply):
            status, headers, body = reply.status, reply.headers, reply.body
            has_type = any(k.lower() == "content-type" for k, _ in headers)
        else:
            status, body = reply.status, bytes(reply.body or b"")  # type: ignore[arg-type]
            headers = list(reply.headers.items())
            has_type = True
        version = "HTTP/1.0" if lean.http10 else "HTTP/1.1"
        lines = [f"{version} {status} {_REASONS.get(status, '')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if status < 200 or status in _NO_BODY:
            body = b""
        else:
            if not has_type and body:  # (aiohttp names no type for an empty body)
                lines.append("Content-Type: application/octet-stream")
            lines.append(f"Content-Length: {len(body)}")
        if lean.method == "HEAD":
            body = b""
        lines.append(f"Date: {self._front.date.now()}")
        lines.append(f"Server: {SERVER_SOFTWARE}")
        if close and not lean.http10:
            lines.append("Connection: close")
        elif not close and lean.http10:
            lines.append("Connection: keep-alive")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    # --- timers --------------------------------------------------------------------------------

    def _set_idle(self) -> None:
        self._idle_deadline = self._loop.time() + self._front.limits.idle_timeout
        self._arm(self._idle_deadline)

    def _arm(self, deadline: float) -> None:
        """Make sure the timer fires by `deadline` (one timer, rescheduled only when later)."""
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        now = self._loop.time()
        limits = self._front.limits
        if self._head_deadline and now >= self._head_deadline:
            limits.header_timeouts += 1
            transport.write(limits.too_slow)
            transport.close()
            return
        if self._idle_deadline and now >= self._idle_deadline and not self._busy:
            transport.close()
            return
        later = [d for d in (self._head_deadline, self._idle_deadline) if d]
        if later:
            self._arm(min(later))

    # --- shutdown ------------------------------------------------------------------------------

    def close_when_idle(self) -> None:
        if self._transport is not None and not self._busy:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _may_be_lean(buffer: bytearray) -> bool:
    """Whether the start of a head could still be a request to /function/ or /async-function/
    (else it is aiohttp's at once, so that its own rules time the rest)."""
    space = buffer.find(b" ", 0, 32)
    if space < 0:
        return len(buffer) < 32
    return any(
        prefix.startswith(buffer[space + 1 : space + 1 + len(prefix)]) for prefix in _PREFIXES
    )


def _bug(lean: _Lean, trace: dict[str, str]) -> web.Response:
    """What gateway/_errors.internal_error_response answers, for a request of this front."""
    path = lean.path if lean.path != "/" else ""
    return bug_response(f"{lean.method} {lean.prefix}{lean.name}{path}", trace)


class FrontSite(web.BaseSite):
    """A TCP site whose connections start in the lean front (aiohttp's TCPSite otherwise)."""

    __slots__ = ("_front", "_host", "_port", "_runner_ref")

    def __init__(self, runner: GuardedRunner, host: str, port: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._front = Front(runner)
        self._runner_ref = runner

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def front(self) -> Front:
        return self._front

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._front, self._host, self._port, reuse_address=True, backlog=self._backlog
        )

    async def stop(self) -> None:
        """Stop accepting, then let the front's calls in flight finish (up to the runner's
        shutdown timeout) before aiohttp drains its own connections."""
        await super().stop()
        try:
            async with asyncio.timeout(self._runner_ref.shutdown_timeout):
                await self._front.drain()
        except TimeoutError:
            self._front.abort()
