"""Limits on the gateway's connections, so that slow or idle clients cannot hold it forever.

- The head of a request (request line and headers) must arrive within `header_timeout` of its
  first byte, else the client gets 408 and the connection closes (Go's ReadHeaderTimeout;
  slow-loris clients trickle a header byte a second to hold a connection).
- A connection without a request in progress closes after `idle_timeout` (aiohttp's own
  keep-alive timer, which also runs from the moment a connection opens).
- At most `max_connections` are open: one more is answered 503 and closed at once, so the
  gateway's file descriptors and memory stay bounded whatever clients do.

aiohttp has neither a header timeout nor a connection cap (the old slow_request_timeout was
removed; a cap was declined as the application's job, aiohttp issue #675), so both live in a
RequestHandler subclass. It reads one attribute of aiohttp's: `_waiter`, the future its
request loop waits on while no request head is complete (what aiohttp's own keep-alive timer
checks). The cost per request is one check in data_received; a timer is made only for a head
that does not arrive in one piece.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


@dataclass(frozen=True)
class ConnectionStatistics:
    open: int
    # Connections turned away at the cap, and closed for a head that came too slowly.
    refused: int
    header_timeouts: int


class ConnectionLimits:
    """The settings, the count of open connections, and the answers sent when a limit hits."""

    def __init__(self, header_timeout: float, idle_timeout: float, max_connections: int) -> None:
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.open = 0
        self.refused = 0
        self.header_timeouts = 0
        self.too_slow = _closing_response(
            408,
            "Request Timeout",
            f"the request's headers did not arrive within {header_timeout:g}s "
            "(--header-timeout); send them at once",
        )
        self.too_many = _closing_response(
            503,
            "Service Unavailable",
            f"the gateway has {max_connections} connections open (--max-connections); "
            "retry, or reuse a connection",
            retry_after=1,
        )

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(self.open, self.refused, self.header_timeouts)


def _closing_response(
    status: int, reason: str, message: str, retry_after: int | None = None
) -> bytes:
    """A whole response, the JSON error every other error has, that ends the connection.
    Written straight to the transport: no request (or no complete one) to answer in aiohttp."""
    body = json.dumps({"error": message, "status": status}).encode()
    extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections keep to `limits`."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._limits = limits

    @property
    def limits(self) -> ConnectionLimits:
        return self._limits

    @property
    def shutdown_timeout(self) -> float:
        return self._shutdown_timeout

    def handler(self) -> GuardedHandler:
        """A new handler of the runner's server, for a connection another protocol accepted
        (the lean front of gateway/_front): give it the connection with `adopt`."""
        server = self.server
        assert isinstance(server, _GuardedServer), "set the runner up first"
        return server()

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return _GuardedServer(plain, self._limits)


class _GuardedServer(web.Server):
    """aiohttp's Server (the protocol factory), making GuardedHandlers."""

    def __init__(self, plain: web.Server, limits: ConnectionLimits) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self.limits = limits

    def __call__(self) -> GuardedHandler:
        return GuardedHandler(self, self.limits, loop=self._loop, **self._kwargs)


class GuardedHandler(RequestHandler):
    __slots__ = ("_counted", "_header_deadline", "_header_timer", "_limits")

    def __init__(self, manager: web.Server, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._counted = False
        # When the head now arriving must be complete (loop time; 0: none is arriving), and
        # the timer that checks it, rescheduled rather than remade (as aiohttp's keep-alive).
        self._header_deadline = 0.0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        limits = self._limits
        if limits.open >= limits.max_connections:
            limits.refused += 1
            self._close_with(limits.too_many)
            return
        limits.open += 1
        self._counted = True

    def adopt(self, transport: asyncio.Transport, data: bytes, header_deadline: float) -> None:
        """Take over a connection that another protocol began to read: `data` is what it
        read and did not answer (from the start of a request), and `header_deadline` when the
        head that `data` begins must be complete (loop time; 0: none), which still holds."""
        self.connection_made(transport)
        if data:
            self.data_received(data)
        # After data_received, which clears a deadline while aiohttp's request loop has not
        # begun to wait. (A deadline is only given for data that holds no whole head.)
        if header_deadline and self._counted and self.transport is not None:
            self._header_deadline = header_deadline
            if self._header_timer is None:
                self._header_timer = self._loop.call_at(
                    header_deadline, self._check_header_deadline
                )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._limits.open -= 1
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # Bytes came but no complete head: a request has begun and must finish in time.
            if not self._header_deadline:
                self._header_deadline = self._loop.time() + self._limits.header_timeout
                if self._header_timer is None:
                    self._header_timer = self._loop.call_at(
                        self._header_deadline, self._check_header_deadline
                    )
        elif self._header_deadline:
            self._header_deadline = 0.0

    def _check_header_deadline(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if not deadline:
            return
        if self._loop.time() < deadline:  # a later request's head: check again at its deadline
            self._header_timer = self._loop.call_at(deadline, self._check_header_deadline)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._limits.header_timeouts += 1
            self._close_with(self._limits.too_slow)

    def _close_with(self, response: bytes) -> None:
        """Answer and close; the transport sends what is buffered before it closes."""
        if self.transport is not None:
            self.transport.write(response)
        self.force_close()
