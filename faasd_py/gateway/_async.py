"""/async-function/{name}[.{namespace}][/path]: OpenFaaS's async invocations.

The call is stored in the function's durable queue and answered 202 with its X-Call-Id at once;
a consumer runs it later (at least once, in no particular order) and POSTs the result to the
caller's X-Callback-Url, if any. A 202 is only ever sent for a call the queue has stored: a
full queue is a 429, a queue that cannot be reached a 503.
"""

from __future__ import annotations

import time

from aiohttp import web
from yarl import URL

from faasd_py.errors import BadRequest
from faasd_py.gateway._invoke import call_trace, function_not_found, function_request
from faasd_py.gateway._keys import ASYNC_CALLS
from faasd_py.queue import QueuedCall
from faasd_py.spec import function_ref, split_ref

routes = web.RouteTableDef()

CALLBACK_HEADER = "X-Callback-Url"


@routes.route("*", "/async-function/{name}")
@routes.route("*", "/async-function/{name}/{path:.*}")
async def invoke_async(request: web.Request) -> web.Response:
    accepted_at = time.time()
    name, namespace = split_ref(request.match_info["name"])
    ref = function_ref(name, namespace)
    calls = request.app[ASYNC_CALLS]
    policy = calls.policy(ref)
    if policy is None:
        raise await function_not_found(request, name, namespace)
    callback = callback_url(request.headers.get(CALLBACK_HEADER))
    trace = call_trace(request, accepted_at)
    call = await function_request(request, trace)  # PayloadTooLarge over --max-body
    # QueueFull (429) and QueueUnavailable (503) leave through the error middleware.
    await calls.queue.enqueue(QueuedCall(ref, call, callback, accepted_at), policy.limits.max_depth)
    return web.Response(status=202, headers=trace)


def callback_url(value: str | None) -> str | None:
    """The X-Callback-Url header, which must be an absolute http(s) URL; BadRequest naming the
    header otherwise. (The result is POSTed there from the gateway's host, so it can reach
    whatever that host reaches.)"""
    if value is None:
        return None
    try:
        url = URL(value)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host or not url.is_absolute():
        raise BadRequest(
            f"{CALLBACK_HEADER}: expected an absolute http:// or https:// URL such as "
            f"http://receiver.example:8000/done, got {value[:200]!r}"
        )
    return value
