"""The gateway's aiohttp application: routes, middlewares and shared state."""

from __future__ import annotations

from aiohttp import web

from faasd_py.config import Config
from faasd_py.gateway import _invoke, _logs, _namespaces, _openapi, _system
from faasd_py.gateway._auth import Credentials, basic_auth_middleware
from faasd_py.gateway._backend import FunctionWorker
from faasd_py.gateway._errors import error_middleware
from faasd_py.gateway._keys import CONFIG, METRICS, REGISTRY, WORKER
from faasd_py.gateway._metrics import CONTENT_TYPE, GatewayMetrics
from faasd_py.store import Registry


def make_app(
    config: Config,
    registry: Registry,
    worker: FunctionWorker,
    credentials: Credentials,
) -> web.Application:
    app = web.Application(
        client_max_size=config.max_body,
        middlewares=[error_middleware, basic_auth_middleware(credentials)],
    )
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[WORKER] = worker
    app[METRICS] = GatewayMetrics(worker.all_statistics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(_system.routes)
    app.router.add_routes(_namespaces.routes)
    app.router.add_routes(_logs.routes)
    app.router.add_routes(_invoke.routes)
    app.router.add_routes(_openapi.routes)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
