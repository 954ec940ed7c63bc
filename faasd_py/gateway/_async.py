"""/async-function/{name}[.{namespace}][/path]: OpenFaaS's async invocations.

The call is stored in the function's durable queue and answered 202 with its X-Call-Id at once;
a consumer runs it later (at least once, in no particular order) and POSTs the result to the
caller's X-Callback-Url, if any. A 202 is only ever sent for a call the queue has stored: a
full queue is a 429, a queue that cannot be reached a 503.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from yarl import URL

from faasd_py.errors import BadRequest, FaasdError
from faasd_py.gateway._errors import faasd_error_response
from faasd_py.gateway._invoke import (
    Reply,
    call_trace,
    function_not_found,
    function_request,
)
from faasd_py.gateway._keys import ASYNC_CALLS
from faasd_py.protocol import Request
from faasd_py.queue import QueuedCall
from faasd_py.spec import function_ref, split_ref

routes = web.RouteTableDef()

CALLBACK_HEADER = "X-Callback-Url"


class Enqueues:
    """What both fronts (the aiohttp route below and the lean front of gateway/_front.py) run
    for an async call: the checks, in order (a function deployed here: 404; X-Callback-Url:
    400; the body: 413), the enqueue (a full queue: 429; one that cannot be reached: 503), and
    the answer, 202 with the call's trace headers or the error as every route gives it."""

    __slots__ = ("_app",)

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def accept(
        self,
        name: str,
        namespace: str,
        accepted_at: float,
        trace: dict[str, str],
        callback: str | None,
        call: Callable[[], Awaitable[Request]],
    ) -> Reply | web.Response:
        """Store the call that `call` reads (it may raise PayloadTooLarge) in NAME.NAMESPACE's
        queue. `accepted_at`: time.time() when the request's head was read. `callback`: the
        X-Callback-Url header, if any."""
        ref = function_ref(name, namespace)
        calls = self._app[ASYNC_CALLS]
        try:
            policy = calls.policy(ref)
            if policy is None:
                raise await function_not_found(self._app, name, namespace)
            url = callback_url(callback)
            queued = QueuedCall(ref, await call(), url, accepted_at)
            await calls.queue.enqueue(queued, policy.limits.max_depth)
        except FaasdError as exc:
            return faasd_error_response(exc)
        return Reply(202, list(trace.items()), b"")


@routes.route("*", "/async-function/{name}")
@routes.route("*", "/async-function/{name}/{path:.*}")
async def invoke_async(request: web.Request) -> web.Response:
    accepted_at = time.time()
    name, namespace = split_ref(request.match_info["name"])
    trace = call_trace(request, accepted_at)
    reply = await Enqueues(request.app).accept(
        name,
        namespace,
        accepted_at,
        trace,
        request.headers.get(CALLBACK_HEADER),
        lambda: function_request(request, trace),
    )
    if isinstance(reply, web.Response):
        return reply
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


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
