"""A lean HTTP/1.1 client: keep-alive connections to one server, one request at a time each.

It is what the load generator (faasd_py.loadgen, bench/) drives gateways with and what the
queue's callback sender (faasd_py.queue) POSTs results with: an asyncio Protocol over _wire's
parser, several times cheaper in CPU per request than aiohttp's client (see _wire for the
figures and the why). A Pool hands a request to an idle connection, or opens one (there is no
limit: the open loop needs as many as it has requests in flight, the closed loop holds one per
worker, the callback sender one per callback in flight). Errors come out as three kinds the
reports count and the callback sender retries: ConnectFailed (no connection, a failed TLS
handshake included), TimeoutError (no complete answer by the deadline), and Disconnected or
ProtocolError (the connection broke, or the server's bytes were not HTTP).
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from typing import cast

from faasd_py.http1._wire import ProtocolError, Response, ResponseParser


class ConnectFailed(Exception):
    """No connection to the server (refused, unreachable, name unknown)."""


class Disconnected(Exception):
    """The server closed the connection before its answer was complete."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.received = False  # any byte of the current answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are transports.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, method: str, request: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.parser.start(method)
        self.received = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            response = self.parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if response is not None:
            self._answer(response)

    def eof_received(self) -> bool:
        try:
            response = self.parser.eof()
        except ProtocolError as exc:
            self._fail(Disconnected(str(exc)))
            return False
        if response is not None:
            self._answer(response)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = Disconnected(f"the connection was lost: {exc}" if exc else "the server closed it")
        self._settle(error)

    def expire(self) -> None:
        """The deadline passed: no answer, and no reuse of a connection in an unknown state."""
        self._fail(TimeoutError("no complete answer within the timeout"))

    def close(self) -> None:
        self.closed = True
        self._settle(Disconnected("the connection was closed by this client"))
        if self.transport is not None:
            self.transport.close()

    def _pending(self) -> asyncio.Future[Response] | None:
        """The request's future, if it still waits; it is settled once only."""
        waiter, self.waiter = self.waiter, None
        return waiter if waiter is not None and not waiter.done() else None

    def _answer(self, response: Response) -> None:
        if (waiter := self._pending()) is not None:
            waiter.set_result(response)

    def _settle(self, exc: BaseException) -> None:
        if (waiter := self._pending()) is not None:
            waiter.set_exception(exc)

    def _fail(self, exc: BaseException) -> None:
        self._settle(exc)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Connections to the server of `base_url` (http or https), each request within `timeout`.

    An https server's certificate is checked against `ssl_context` (by default the system's
    trusted authorities, as `ssl.create_default_context()` reads them): loading those takes
    milliseconds, so a client of many pools passes one context to all. A closed Pool keeps no
    connection: one that comes up or answers after `close` is closed at once.
    """

    def __init__(
        self, base_url: str, timeout: float, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        # What the Host header says: the URL's own spelling of host and port.
        self.authority = parts.netloc.rpartition("@")[2]
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._closed = False

    async def request(self, method: str, request: bytes) -> Response:
        """Send `request` (from build_request) and wait for its answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:
                self._drop(connection)
            else:
                try:
                    return await self._exchange(connection, method, request, deadline)
                except Disconnected:
                    # A kept-alive connection the server had closed meanwhile: nothing of the
                    # answer came, so the request was not handled; try on a new connection.
                    if connection.received:
                        raise
        connection = await self._connect(deadline)
        return await self._exchange(connection, method, request, deadline)

    async def _exchange(
        self, connection: _Connection, method: str, request: bytes, deadline: float
    ) -> Response:
        loop = asyncio.get_running_loop()
        expiry = loop.call_at(deadline, connection.expire)
        try:
            response = await connection.send(method, request)
        except BaseException:
            # Failed or cancelled with the answer pending: the connection cannot be reused.
            self._drop(connection)
            raise
        finally:
            expiry.cancel()
        if response.keep_alive and not connection.closed and not self._closed:
            self._idle.append(connection)
        else:
            self._drop(connection)
        return response

    async def _connect(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise TimeoutError(f"no connection to {self.authority} within the timeout") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.authority}: {exc}") from None
        if self._closed:  # while it connected: nobody would close it
            connection.close()
            raise ConnectFailed(f"the pool of {self.authority} was closed")
        self._all.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._all.discard(connection)

    def close(self) -> None:
        """Close every connection, idle or busy (a request on one fails with Disconnected)."""
        self._closed = True
        for connection in list(self._all):
            self._drop(connection)
        self._idle.clear()
