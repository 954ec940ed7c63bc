"""A lean HTTP/1.1 client of our own: `build_request` makes a request's bytes, a `Pool` of
keep-alive connections to one server sends them and reads the answer with `ResponseParser`.

The load generator and the queue's callback sender use it instead of aiohttp's client, which
costs several times more CPU per request (the figures are in `_wire`)."""

from __future__ import annotations

from faasd_py.http1._client import ConnectFailed, Disconnected, Pool
from faasd_py.http1._wire import MAX_HEAD, ProtocolError, Response, ResponseParser, build_request

__all__ = [
    "MAX_HEAD",
    "ConnectFailed",
    "Disconnected",
    "Pool",
    "ProtocolError",
    "Response",
    "ResponseParser",
    "build_request",
]
