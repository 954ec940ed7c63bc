"""Every error leaves the gateway as JSON `{"error": message, "status": code}`."""

from __future__ import annotations

import json
import logging
import sys
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
    except Exception:
        return internal_error_response(request)


def internal_error_response(
    request: web.Request, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The answer to an exception that no handler expected. Call it in the `except` block: the
    traceback goes to the log here, once (aiohttp never sees the exception, so it does not log
    it again), and the client gets the JSON error that every other error has, not aiohttp's
    plain text. A client that went away mid-request is no bug: no traceback for it."""
    what = f"{request.method} {request.path}"
    exc = sys.exc_info()[1]
    transport = request.transport
    if isinstance(exc, ConnectionResetError) and (transport is None or transport.is_closing()):
        # Reading the body of a client that closed its connection. No one reads the answer;
        # 499 is what nginx counts such a request as.
        logger.debug("the client of %s closed the connection: %s", what, exc)
        return error_response(499, "the client closed the connection during the request", headers)
    return bug_response(what, headers)


def bug_response(what: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The 500 for an exception no handler expected while answering `what` ("METHOD /path"),
    its traceback logged once (call it in the `except` block)."""
    call = f" (call {headers['X-Call-Id']})" if headers and "X-Call-Id" in headers else ""
    logger.exception("unexpected error answering %s%s", what, call)
    return error_response(
        500,
        f"internal error in the gateway while answering {what}{call}: a bug in faasd-py; its "
        "log has the traceback",
        headers,
    )


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
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    # JSON may escape half a surrogate pair ("\ud800"), which decodes to a str no file, header
    # or process environment can hold: refuse it here rather than fail later as a 500.
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadRequest(
                "the request body has a string with a lone surrogate escape (such as \\ud800), "
                "which is not Unicode text; send whole surrogate pairs or plain UTF-8"
            ) from None
    return body
