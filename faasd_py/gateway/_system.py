"""/system/*: functions, scaling, secrets, namespaces, info (the OpenFaaS provider API)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import platform
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

import faasd_py
from faasd_py import doorbells, native
from faasd_py.errors import BadRequest, NotFound
from faasd_py.gateway._errors import error_response, read_json
from faasd_py.gateway._keys import CONFIG, REGISTRY, WORKER
from faasd_py.spec import (
    DEFAULT_NAMESPACE,
    FunctionSpec,
    parse_deployment,
    validate_name,
    validate_secret_name,
)
from faasd_py.store import StoredFunction, fetch_secrets
from faasd_py.worker import describe_json

routes = web.RouteTableDef()


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _status(request: web.Request, stored: StoredFunction) -> dict[str, Any]:
    """An OpenFaaS FunctionStatus."""
    body = stored.spec.to_json()
    body["name"] = body.pop("service")
    stats = request.app[WORKER].statistics(stored.spec.service)
    body["invocationCount"] = stats.invocations if stats else 0
    body["replicas"] = stats.replicas if stats else 0
    body["availableReplicas"] = stats.available if stats else 0
    body["createdAt"] = rfc3339(stored.created_at)
    # Beyond OpenFaaS's fields (its clients ignore them): the app's keep-alive policy now,
    # and what it is judged by, for `faasd-py describe`.
    lifecycle = request.app[WORKER].policy_statistics(stored.spec.service)
    if lifecycle is not None and stats is not None:
        keepalive = describe_json(lifecycle, stored.spec.app, time.monotonic())
        keepalive.update(
            prewarmLoads=stats.prewarm_loads,
            prewarmHits=stats.prewarm_hits,
            coldStarts=stats.cold_starts,
            instanceSeconds=round(stats.instance_seconds, 3),
            idleInstanceSeconds=round(stats.idle_instance_seconds, 3),
        )
        body["keepAlive"] = keepalive
    return body


# --- functions ---------------------------------------------------------------------------------


@routes.get("/system/functions")
async def list_functions(request: web.Request) -> web.Response:
    stored = await request.app[REGISTRY].list_functions()
    return web.json_response([_status(request, s) for s in stored])


@routes.get("/system/function/{name}")
async def get_function(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    stored = await request.app[REGISTRY].get_function(name)
    if stored is None:
        raise NotFound(f"function {name!r} not found")
    return web.json_response(_status(request, stored))


async def _deploy(request: web.Request, *, must_exist: bool) -> FunctionSpec:
    spec = parse_deployment(await read_json(request))
    registry, worker = request.app[REGISTRY], request.app[WORKER]
    if must_exist and await registry.get_function(spec.service) is None:
        raise NotFound(f"function {spec.service!r} not found; deploy it with POST first")
    worker.check_deployable(spec)
    secrets = await fetch_secrets(registry, spec.secrets)
    await registry.put_function(spec)
    worker.apply(spec, secrets)
    return spec


@routes.post("/system/functions")
async def deploy_function(request: web.Request) -> web.Response:
    await _deploy(request, must_exist=False)
    return web.Response(status=202)


@routes.put("/system/functions")
async def update_function(request: web.Request) -> web.Response:
    await _deploy(request, must_exist=True)
    return web.Response(status=200)


@routes.delete("/system/functions")
async def delete_function(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"functionName": "..."}')
    name = validate_name(body.get("functionName"), "functionName")
    if not await request.app[REGISTRY].delete_function(name):
        raise NotFound(f"function {name!r} not found")
    # NotFound: registered but never started here (its package was gone at restore).
    with contextlib.suppress(NotFound):
        request.app[WORKER].remove(name)
    return web.Response(status=200)


@routes.post("/system/scale-function/{name}")
async def scale_function(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"serviceName": "...", "replicas": N}')
    replicas = body.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise BadRequest(f"replicas: expected a whole number of at least 0, got {replicas!r}")
    if await request.app[REGISTRY].get_function(name) is None:
        raise NotFound(f"function {name!r} not found")
    request.app[WORKER].scale(name, replicas)
    return web.Response(status=202)


# --- secrets -----------------------------------------------------------------------------------


@routes.get("/system/secrets")
async def list_secrets(request: web.Request) -> web.Response:
    names = await request.app[REGISTRY].list_secrets()
    return web.json_response([{"name": n, "namespace": DEFAULT_NAMESPACE} for n in names])


async def _secret_body(request: web.Request) -> tuple[str, bytes]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"name": "...", "value": "..."}')
    name = validate_secret_name(body.get("name"))
    if isinstance(body.get("rawValue"), str):
        try:
            return name, base64.b64decode(body["rawValue"], validate=True)
        except binascii.Error:
            raise BadRequest("rawValue: expected base64") from None
    if isinstance(body.get("value"), str):
        return name, body["value"].encode()
    raise BadRequest("value: expected a string (or rawValue: base64)")


@routes.post("/system/secrets")
async def create_secret(request: web.Request) -> web.Response:
    name, value = await _secret_body(request)
    if not await request.app[REGISTRY].put_secret(name, value, create=True):
        return error_response(409, f"secret {name!r} already exists; update it with PUT")
    return web.Response(status=201)


@routes.put("/system/secrets")
async def update_secret(request: web.Request) -> web.Response:
    name, value = await _secret_body(request)
    if not await request.app[REGISTRY].put_secret(name, value, create=False):
        raise NotFound(f"secret {name!r} not found")
    return web.Response(status=200)


@routes.delete("/system/secrets")
async def delete_secret(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"name": "..."}')
    name = validate_secret_name(body.get("name"))
    if not await request.app[REGISTRY].delete_secret(name):
        raise NotFound(f"secret {name!r} not found")
    return web.Response(status=200)


# --- namespaces and info -----------------------------------------------------------------------


@routes.get("/system/namespaces")
async def list_namespaces(request: web.Request) -> web.Response:
    return web.json_response([DEFAULT_NAMESPACE])


@routes.get("/system/info")
async def info(request: web.Request) -> web.Response:
    version = {"sha": "", "release": faasd_py.__version__}
    return web.json_response(
        {
            "provider": {
                "provider": "faasd-py",
                # How instances run: "sandbox" (namespaces, cgroups, seccomp) or "process".
                "orchestration": request.app[WORKER].isolation,
                "version": version,
            },
            "version": version,
            "arch": platform.machine(),
            # The data path: the worker's default channel, whether the native shim is in use,
            # what the kernel offers it, and what waits on the instances' doorbells.
            "channel": request.app[CONFIG].channel,
            "native": native.HAS_NATIVE,
            "io_uring": native.FEATURES.io_uring,
            # What the worker's loop waits on shm doorbells with (faasd_py.doorbells): the
            # engine, what was asked for, and why auto chose it or why io_uring is not in use.
            "event_engine": doorbells.selection().engine,
            "event_engine_requested": doorbells.selection().requested,
            "event_engine_reason": doorbells.selection().reason,
            # Cold starts: forked from a per-function zygote, or a fresh interpreter each.
            "zygote": request.app[CONFIG].zygote,
            # The keep-alive policy of apps that do not choose one, and the hybrid bin width.
            "policy": request.app[CONFIG].policy,
            "bin_width_seconds": request.app[CONFIG].bin_width,
        }
    )
