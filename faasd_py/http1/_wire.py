"""HTTP/1.1 on the wire, without I/O: request bytes in, responses out (as h11 does).

Why not aiohttp's client: it costs about 130 us of CPU per request (one process on uvloop did
7,000 req/s against a trivial server, where a Protocol with this parser did 60,000). On a small
machine the load generator, sharing the cores with the system under test, slowed that system
down and was itself the limit: 25-35% below wrk at the same concurrency against the bare aiohttp
server of bench/. The queue's callback sender, which POSTs each async call's result from the
event loop that also runs the gateway and the consumer, paid the same price (130-200 us a
callback). Neither needs a general client: one request at a time per connection, keep-alive,
and of each answer its status, its Server-Timing header and where it ends. That fits in this
module.

Responses end by Content-Length, by chunked transfer coding, or, with neither, when the server
closes the connection. 1xx interim responses are skipped; answers to HEAD, 204 and 304 have no
body. Bodies are counted, not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A head larger than this is not an answer a function gives: the connection is given up.
MAX_HEAD = 64 * 1024
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})
# Headers build_request sets itself from the body it sends.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    server_timing: str | None
    body_size: int
    keep_alive: bool


def build_request(
    method: str,
    target: str,
    host: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    user_agent: str,
) -> bytes:
    """The bytes of one request. The caller's headers may replace Host and User-Agent; their
    framing headers are left out (Content-Length is the body's own). `target` and the headers
    must not hold CR, LF or NUL: they are written as given. The head is UTF-8, as aiohttp
    writes it (UnicodeEncodeError for a lone surrogate)."""
    lines = [f"{method} {target} HTTP/1.1"]
    names = {name.lower() for name, _ in headers}
    if "host" not in names:
        lines.append(f"Host: {host}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {user_agent}")
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in _FRAMING]
    if body or method.upper() not in _NO_BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class ResponseParser:
    """Reads the response to one request from the bytes of its connection.

    `start` before each request; `feed` the bytes as they come until it returns the Response;
    `eof` when the server closed the connection (which ends a body without a length).
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._head_request = False
        self._state = "idle"  # head, length, chunk-size, chunk-data, chunk-end, trailer, close
        self._status = 0
        self._timing: str | None = None
        self._keep_alive = True
        self._remaining = 0
        self._size = 0

    def start(self, method: str) -> None:
        self._head_request = method.upper() == "HEAD"
        self._state = "head"
        self._size = 0

    def feed(self, data: bytes) -> Response | None:
        """The response, once `data` completes it; None while more is needed."""
        if self._state == "idle":
            if data:
                raise ProtocolError("the server sent bytes before any request")
            return None
        self._buffer += data
        while True:
            state = self._state
            if state == "head":
                if not self._read_head():
                    return None
            elif state == "length":
                return self._done() if self._take_body() else None
            elif state == "close":
                self._size += len(self._buffer)
                self._buffer = b""
                return None
            elif not self._read_chunked():
                return None
            if self._state == "done":
                return self._done()

    def eof(self) -> Response | None:
        """The connection closed: the response it ended, or None when none was under way."""
        if self._state == "close":
            return self._done()
        if self._state == "idle":
            return None
        raise ProtocolError("the server closed the connection in the middle of a response")

    # --- parts ---------------------------------------------------------------------------------

    def _read_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ProtocolError(f"a response head longer than {MAX_HEAD} bytes")
            return False
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        length: int | None = None
        chunked = False
        keep_alive = version != "HTTP/1.0"
        timings = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"a header line without a colon: {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                if not value.isdigit():
                    raise ProtocolError(f"Content-Length is not a number: {value[:40]!r}")
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif name == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                keep_alive = "keep-alive" in tokens or (keep_alive and "close" not in tokens)
            elif name == "server-timing":
                timings.append(value)
        if 100 <= status < 200:
            return True  # an interim response: the real one follows, still in state "head"
        self._status = status
        self._timing = ", ".join(timings) if timings else None
        self._keep_alive = keep_alive
        if self._head_request or status in (204, 304):
            self._state = "done"
        elif chunked:
            self._state = "chunk-size"
        elif length is not None:
            self._remaining = length
            self._state = "length"
        else:
            self._keep_alive = False  # the body ends when the connection does
            self._state = "close"
        return True

    def _read_chunked(self) -> bool:
        """One step of a chunked body; False when more bytes are needed."""
        if self._state == "chunk-size":
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            text = self._buffer[:end].split(b";", 1)[0].strip()
            try:
                self._remaining = int(text, 16)
            except ValueError:
                raise ProtocolError(
                    f"a chunk size that is not hexadecimal: {text[:20]!r}"
                ) from None
            self._buffer = self._buffer[end + 2 :]
            self._state = "chunk-data" if self._remaining else "trailer"
        elif self._state == "chunk-data":
            if not self._take_body():
                return False
            self._state = "chunk-end"
        elif self._state == "chunk-end":
            if len(self._buffer) < 2:
                return False
            if self._buffer[:2] != b"\r\n":
                raise ProtocolError("a chunk not followed by CRLF")
            self._buffer = self._buffer[2:]
            self._state = "chunk-size"
        else:  # trailer: header lines until an empty one
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return False
            line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            if not line:
                self._state = "done"
        return True

    def _take_body(self) -> bool:
        """Count the buffered body bytes that are due (`_remaining`); True once all came."""
        taken = min(self._remaining, len(self._buffer))
        self._size += taken
        self._remaining -= taken
        self._buffer = self._buffer[taken:]
        return not self._remaining

    def _done(self) -> Response:
        self._state = "idle"
        return Response(self._status, self._timing, self._size, self._keep_alive)
