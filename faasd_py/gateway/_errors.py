"""Every error leaves the gateway as JSON `{"error": message, "status": code}`."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from faasd_py.errors import BadRequest, FaasdError, Overloaded

logger = logging.getLogger(__name__)

# aiohttp's own HTTP errors carry these for their text bodies; ours is JSON.
_FRAMING = frozenset({"content-type", "content-length"})


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


def faasd_error_response(exc: FaasdError, headers: Mapping[str, str] | None = None) -> web.Response:
    extra = dict(headers or {})
    if isinstance(exc, Overloaded):
        extra["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status == 401:
        extra["WWW-Authenticate"] = 'Basic realm="faasd-py"'
    return error_response(exc.status, exc.message, extra)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FaasdError as exc:
        return faasd_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _FRAMING}
        return error_response(exc.status, exc.reason, kept)


async def read_json(request: web.Request) -> object:
    """The request body as JSON; BadRequest that says what is wrong otherwise.

    JSON is UTF-8 (RFC 8259), whatever charset the Content-Type names: the bytes are decoded
    as that, so an unknown charset or bytes that are not UTF-8 are the client's mistake (400),
    not the gateway's."""

    raw = await request.read()
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise BadRequest(
            f"the request body is not UTF-8 JSON: byte 0x{bad} at offset {exc.start} is not "
            "UTF-8; send the JSON encoded as UTF-8"
        ) from None
    if not text.strip():
        raise BadRequest("the request body is empty; expected a JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
