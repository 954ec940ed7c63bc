"""The gateway's aiohttp application: routes, middlewares and shared state."""

from __future__ import annotations

from aiohttp import web

from faasd_py.config import Config
from faasd_py.gateway import _async, _invoke, _logs, _namespaces, _openapi, _queue, _system
from faasd_py.gateway._auth import Credentials, basic_auth_middleware
from faasd_py.gateway._backend import FunctionWorker
from faasd_py.gateway._errors import error_middleware
from faasd_py.gateway._keys import ASYNC_CALLS, CONFIG, METRICS, REGISTRY, WORKER, AsyncCalls
from faasd_py.gateway._metrics import CONTENT_TYPE, GatewayMetrics
from faasd_py.store import Registry


def make_app(
    config: Config,
    registry: Registry,
    worker: FunctionWorker,
    credentials: Credentials,
    async_calls: AsyncCalls | None = None,
    metrics: GatewayMetrics | None = None,
) -> web.Application:
    """The gateway; with `async_calls`, also /async-function/ and /system/queue. `metrics`:
    the recorder to serve on /metrics, when others record in it too (the queue's consumer)."""
    app = web.Application(
        client_max_size=config.max_body,
        middlewares=[error_middleware, basic_auth_middleware(credentials)],
    )
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[WORKER] = worker
    app[METRICS] = metrics or GatewayMetrics(worker.all_statistics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_routes(_system.routes)
    app.router.add_routes(_namespaces.routes)
    app.router.add_routes(_logs.routes)
    app.router.add_routes(_invoke.routes)
    if async_calls is not None:
        app[ASYNC_CALLS] = async_calls
        app.router.add_routes(_async.routes)
        app.router.add_routes(_queue.routes)
    app.router.add_routes(_openapi.routes)
    # Imported here: the dashboard's modules import the gateway's, which import this one.
    from faasd_py.ui import add_dashboard

    add_dashboard(app)  # /ui/: the page; /system/dashboard/*: its series and live ticks
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def metrics_page(request: web.Request) -> web.Response:
    await request.app[WORKER].refresh()
    await request.app[METRICS].refresh()
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
