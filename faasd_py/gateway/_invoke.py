"""/function/{name}[/path]: the invocation path, the product's hot path."""

from __future__ import annotations

import time
import uuid

from aiohttp import web
from multidict import CIMultiDict

from faasd_py.errors import FaasdError, PayloadTooLarge
from faasd_py.gateway._errors import error_response, faasd_error_response
from faasd_py.gateway._keys import CONFIG, METRICS, WORKER
from faasd_py.protocol import Request

routes = web.RouteTableDef()

# Headers a handler may not set: the gateway frames the response itself.
_HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)


@routes.route("*", "/function/{name}")
@routes.route("*", "/function/{name}/{path:.*}")
async def invoke(request: web.Request) -> web.StreamResponse:
    started_wall, started = time.time(), time.perf_counter()
    name = request.match_info["name"]
    call_id = request.headers.get("X-Call-Id") or str(uuid.uuid4())
    trace = {"X-Call-Id": call_id, "X-Start-Time": str(int(started_wall * 1e9))}
    metrics = request.app[METRICS]
    try:
        body = await _read_body(request)
        call = Request(
            call_id,
            request.method,
            "/" + request.match_info.get("path", ""),
            request.query_string,
            list(request.headers.items()),
            body,
        )
        outcome = await request.app[WORKER].invoke(name, call)
    except FaasdError as exc:
        elapsed = time.perf_counter() - started
        metrics.observe(name, exc.status, elapsed)
        trace["X-Duration-Seconds"] = f"{elapsed:.6f}"
        return faasd_error_response(exc, trace)

    result = outcome.result
    elapsed = time.perf_counter() - started
    metrics.observe(name, result.status, elapsed, outcome.cold_start_seconds)
    headers = CIMultiDict((k, v) for k, v in result.headers if k.lower() not in _HOP_BY_HOP)
    headers.update(trace)
    headers["X-Duration-Seconds"] = f"{elapsed:.6f}"
    headers["Server-Timing"] = (
        f"queue;dur={outcome.queue_seconds * 1e3:.3f}, "
        f"cold-start;dur={outcome.cold_start_seconds * 1e3:.3f}, "
        f"execution;dur={outcome.exec_seconds * 1e3:.3f}, "
        f"total;dur={elapsed * 1e3:.3f}"
    )
    if result.error is not None:
        return error_response(result.status, f"function {name} failed: {result.error}", headers)
    return web.Response(status=result.status, body=result.body, headers=headers)


async def _read_body(request: web.Request) -> bytes:
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
