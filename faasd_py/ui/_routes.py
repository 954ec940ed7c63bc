"""The dashboard's routes: its static page at /ui/, and the JSON it needs beyond /system/*.

The page and its assets hold no data and are served to anyone (the browser needs them to show
its login form); every call that returns data is under /system/, behind the gateway's Basic
auth, whose credentials the page keeps in memory only and sends in an Authorization header
(never in a URL, a cookie or local storage). The Content-Security-Policy keeps the page from
loading or calling anything but this gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from faasd_py.errors import FaasdError, NotFound
from faasd_py.gateway._keys import CONFIG, METRICS, REGISTRY, WORKER
from faasd_py.gateway._namespaces import requested_namespace
from faasd_py.gateway._system import stored_function
from faasd_py.packages import PackageStore
from faasd_py.spec import validate_name
from faasd_py.ui._sampler import SAMPLER, Sampler, event, sampler_context
from faasd_py.ui._series import FUNCTION_COLUMNS

STATIC = Path(str(resources.files(__package__).joinpath("static")))
HEADERS = {
    # Everything from this gateway, nothing from anywhere else (no CDN, no beacon).
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

routes = web.RouteTableDef()


class Unacceptable(FaasdError):
    status = 406


@runtime_checkable
class _PolicyStates(Protocol):
    """What the SQLite and Redis registries keep of each app's keep-alive policy."""

    async def get_policy_states(self) -> dict[str, str]: ...


def add_dashboard(app: web.Application) -> None:
    """The dashboard's routes and its sampler, on the gateway's app."""
    app[SAMPLER] = Sampler(app[METRICS], app[WORKER], app[REGISTRY])
    app.router.add_routes(routes)
    app.cleanup_ctx.append(sampler_context)
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    app[SAMPLER].close_streams()


# --- the page ------------------------------------------------------------------------------------


@routes.get("/ui")
async def to_index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/")
async def index(request: web.Request) -> web.Response:
    return _file(STATIC / "index.html", "text/html", "no-cache")


@routes.get("/ui/assets/{file}")
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    path = STATIC / "assets" / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no dashboard asset {name!r}")
    # Built names carry a hash of their content: they never change.
    kind = _TYPES.get(path.suffix, "application/octet-stream")
    return _file(path, kind, "public, max-age=31536000, immutable")


def _file(path: Path, kind: str, cache: str) -> web.Response:
    return web.Response(
        body=path.read_bytes(),
        content_type=kind,
        headers={**HEADERS, "Cache-Control": cache},
    )


# --- its data ------------------------------------------------------------------------------------


@routes.get("/system/dashboard/series")
async def series(request: web.Request) -> web.Response:
    """The recent series of one function (with its app's cache and idle-time histogram) or,
    without ?name=, of the whole gateway."""
    sampler = request.app[SAMPLER]
    store = sampler.store
    body: dict[str, Any] = {"interval": sampler.interval, "t": store.times()}
    name = request.query.get("name")
    if name is None:
        body["gateway"] = store.gateway_series()
        body["rows"] = store.rows()
        return _json(body)
    name = validate_name(name, "name")
    stored = await stored_function(request, name, requested_namespace(request))
    spec = stored.spec
    body["function"] = store.function_series(spec.ref) or _empty(store.times())
    body["app"] = {"name": spec.app, **(store.app_series(spec.app) or {})}
    body["idleHistogram"] = await _idle_histogram(request, spec.app)
    return _json(body)


def _empty(times: list[float]) -> dict[str, list[float | None]]:
    """The columns of a function not sampled yet (deployed since the last tick)."""
    return {column: [None] * len(times) for column in FUNCTION_COLUMNS}


async def _idle_histogram(request: web.Request, app: str) -> dict[str, Any] | None:
    """What the app's hybrid policy learnt, as it last saved it: the bins in use as
    [index, count], the bin width, the out-of-bounds count (None: nothing learnt)."""
    registry = request.app[REGISTRY]
    if not isinstance(registry, _PolicyStates):
        return None
    text = (await registry.get_policy_states()).get(app)
    try:
        state = json.loads(text) if text else None
        histogram = state["histogram"] if isinstance(state, dict) else None
        if not isinstance(histogram, dict):
            return None
        return {
            "binWidthSeconds": float(histogram["bin_width"]),
            "bins": int(histogram["bins"]),
            "counts": [[int(i), int(c)] for i, c in histogram["counts"]],
            "outOfBounds": int(histogram["oob"]),
        }
    except (ValueError, KeyError, TypeError):  # a state of another version: nothing to draw
        return None


@routes.get("/system/dashboard/packages")
async def packages(request: web.Request) -> web.Response:
    """The packages in this gateway's store, which a deployment's image may name."""
    store = PackageStore(request.app[CONFIG].packages_dir)
    found = await asyncio.to_thread(store.list)
    return _json([{"image": p.image, "builtAt": p.built_at} for p in found])


@routes.get("/system/dashboard/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: a `rows` event with every function's row, then a `tick` a second."""
    if "text/event-stream" not in request.headers.get("Accept", ""):
        raise Unacceptable(
            "this is a stream of Server-Sent Events: ask for it with Accept: text/event-stream"
        )
    sampler: Sampler = request.app[SAMPLER]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    async with sampler.subscribe() as queue:
        await response.prepare(request)
        await response.write(
            b"retry: 1000\n\n" + event("rows", {"t": time.time(), "rows": sampler.store.rows()})
        )
        while (data := await queue.get()) is not None:
            await response.write(data)
    await response.write_eof()
    return response


def _json(body: object) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})
