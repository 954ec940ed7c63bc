"""/function/{name}[.{namespace}][/path]: the invocation path, the product's hot path."""

from __future__ import annotations

import re
import time
import uuid

from aiohttp import web
from multidict import CIMultiDict

from faasd_py.errors import FaasdError, NotFound, PayloadTooLarge
from faasd_py.gateway._errors import (
    error_response,
    faasd_error_response,
    internal_error_response,
)
from faasd_py.gateway._keys import CONFIG, METRICS, REGISTRY, WORKER
from faasd_py.gateway._namespaces import require_namespace
from faasd_py.protocol import Headers, Request
from faasd_py.spec import function_ref, split_ref

routes = web.RouteTableDef()

# Request headers the gateway sets itself on the way to the function.
_REPLACED = frozenset({"x-call-id", "x-start-time", "x-forwarded-for"})

# Headers a handler may not set: the gateway frames the response itself.
_HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)


# What a response header may hold (RFC 9110 5.1, 5.5): a name is a token; a value is any text
# but control characters (HTAB is allowed) and lone surrogates (not UTF-8 encodable).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


@routes.route("*", "/function/{name}")
@routes.route("*", "/function/{name}/{path:.*}")
async def invoke(request: web.Request) -> web.StreamResponse:
    started_wall, started = time.time(), time.perf_counter()
    # NAME or NAME.NAMESPACE (what OpenFaaS's clients send): one ref for the worker and metrics.
    name, namespace = split_ref(request.match_info["name"])
    ref = function_ref(name, namespace)
    trace = call_trace(request, started_wall)
    metrics = request.app[METRICS]
    try:
        call = await function_request(request, trace)
        outcome = await request.app[WORKER].invoke(ref, call)
        result = outcome.result
        elapsed = time.perf_counter() - started
        headers = _response_headers(ref, result.headers)
        metrics.observe(ref, result.status, elapsed, outcome.cold_start_seconds)
        headers.update(trace)
        headers["X-Duration-Seconds"] = f"{elapsed:.6f}"
        headers["Server-Timing"] = outcome.server_timing(elapsed)
        if result.error is not None:
            return error_response(result.status, f"function {ref} failed: {result.error}", headers)
        return web.Response(status=result.status, body=result.body, headers=headers)
    except FaasdError as exc:
        error = exc
    except Exception:
        response = internal_error_response(request, trace)
        metrics.observe(ref, response.status, time.perf_counter() - started)
        return response
    elapsed = time.perf_counter() - started
    metrics.observe(ref, error.status, elapsed)
    trace["X-Duration-Seconds"] = f"{elapsed:.6f}"
    if isinstance(error, NotFound):
        error = await function_not_found(request, name, namespace)
    return faasd_error_response(error, trace)


class _BadHeader(FaasdError):
    """A function's response that cannot be sent: the function's fault, as a proxy says it."""

    status = 502


def _response_headers(ref: str, pairs: Headers) -> CIMultiDict[str]:
    """The function's headers for the response, without those the gateway frames itself.

    _BadHeader names the first that cannot be sent: aiohttp would refuse a line break (and
    drop the connection), and a name that is not a token or a value with another control
    character would reach the client as a broken response. (The runtime checks too, but a
    function's code shares its process and can send anything.)"""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        if _TOKEN.fullmatch(name) is None or _NOT_IN_VALUE.search(value) is not None:
            raise _BadHeader(
                f"function {ref} returned a header that cannot be sent: {name[:100]!r}: "
                f"{value[:100]!r}; a header name is letters, digits and !#$%&'*+-.^_`|~ only, "
                "and a value may not hold control characters such as CR, LF or NUL"
            )
        if name.lower() not in _HOP_BY_HOP:
            headers.add(name, value)
    return headers


def call_trace(request: web.Request, started_wall: float) -> dict[str, str]:
    """The call's X-Call-Id (the caller's, or a new UUID) and X-Start-Time (Unix nanoseconds)."""
    call_id = request.headers.get("X-Call-Id") or str(uuid.uuid4())
    if not call_id.isascii():
        call_id = _as_sent(call_id)
    return {"X-Call-Id": call_id, "X-Start-Time": str(int(started_wall * 1e9))}


async def function_request(request: web.Request, trace: dict[str, str]) -> Request:
    """What the function is sent for this call (/function/ now, /async-function/ later): the
    method, the path after the function's name, the query, the headers the OpenFaaS gateway
    forwards (with `trace`), and the body (PayloadTooLarge over --max-body)."""
    body = await read_body(request)
    return Request(
        trace["X-Call-Id"],
        request.method,
        "/" + request.match_info.get("path", ""),
        request.query_string,
        forwarded_headers(request, trace),
        body,
    )


def forwarded_headers(request: web.Request, trace: dict[str, str]) -> list[tuple[str, str]]:
    """The caller's headers plus what the OpenFaaS gateway adds for the function: the call's id
    and start time, the host the caller asked for and the address it came from (appended to a
    proxy's X-Forwarded-For, as proxies do)."""
    incoming = request.headers
    headers = [(k, v) for k, v in incoming.items() if k.lower() not in _REPLACED]
    headers.extend(trace.items())
    if "X-Forwarded-Host" not in incoming and request.host:
        headers.append(("X-Forwarded-Host", request.host))
    chain = [*incoming.getall("X-Forwarded-For", ()), request.remote or ""]
    if any(chain):
        headers.append(("X-Forwarded-For", ", ".join(hop for hop in chain if hop)))
    return [(k, v if v.isascii() else _as_sent(v)) for k, v in headers]


def _as_sent(value: str) -> str:
    """A header value that the function can turn back into the bytes sent.

    aiohttp decodes header values as UTF-8 and keeps bytes that are not UTF-8 as lone
    surrogates, which cannot cross the channel to the instance. Such a value is passed on as
    Latin-1 instead, one character per byte (WSGI's rule for every header, so a template's
    handler expects it): `value.encode("latin-1")` gives back exactly what the client sent.
    Values that are UTF-8 stay as they are."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")
    return value


async def function_not_found(request: web.Request, name: str, namespace: str) -> FaasdError:
    """A 404 that says whether the namespace or the function is missing (off the hot path)."""
    try:
        await require_namespace(request.app[REGISTRY], namespace)
    except NotFound as exc:
        return exc
    return NotFound(
        f"function {name!r} not found in namespace {namespace!r}; deploy it with "
        "`faasd-py deploy` (or faas-cli deploy)"
    )


async def read_body(request: web.Request) -> bytes:
    limit = request.app[CONFIG].max_body
    too_large = PayloadTooLarge(
        f"the request body exceeds the gateway's limit of {limit} bytes (--max-body)"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
