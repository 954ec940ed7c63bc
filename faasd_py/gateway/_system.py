"""/system/*: functions, scaling, secrets, info (the OpenFaaS provider API)."""

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
from faasd_py import native
from faasd_py.datapath import doorbells
from faasd_py.errors import BadRequest, Conflict, NotFound
from faasd_py.gateway._errors import read_json
from faasd_py.gateway._keys import CLUSTER_INFO, CONFIG, REGISTRY, WORKER
from faasd_py.gateway._namespaces import namespace_of, requested_namespace, require_namespace
from faasd_py.spec import (
    FunctionSpec,
    function_ref,
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
    stats = request.app[WORKER].statistics(stored.spec.ref)
    body["invocationCount"] = stats.invocations if stats else 0
    body["replicas"] = stats.replicas if stats else 0
    body["availableReplicas"] = stats.available if stats else 0
    body["createdAt"] = rfc3339(stored.created_at)
    # Beyond OpenFaaS's fields (its clients ignore them): the app's keep-alive policy now,
    # and what it is judged by, for `faasd-py describe`.
    lifecycle = request.app[WORKER].policy_statistics(stored.spec.ref)
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
    namespace = await namespace_of(request)
    stored = await request.app[REGISTRY].list_functions(namespace)
    await request.app[WORKER].refresh()
    return web.json_response([_status(request, s) for s in stored])


async def stored_function(request: web.Request, name: str, namespace: str) -> StoredFunction:
    """The function NAME of an existing namespace; NotFound that names both otherwise."""
    registry = request.app[REGISTRY]
    stored = await registry.get_function(function_ref(name, namespace))
    if stored is None:
        await require_namespace(registry, namespace)
        raise NotFound(f"function {name!r} not found in namespace {namespace!r}")
    return stored


@routes.get("/system/function/{name}")
async def get_function(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"], "name")
    stored = await stored_function(request, name, requested_namespace(request))
    await request.app[WORKER].refresh()
    return web.json_response(_status(request, stored))


async def _deploy(request: web.Request, *, must_exist: bool) -> FunctionSpec:
    body = await read_json(request)
    if isinstance(body, dict) and not body.get("namespace") and request.query.get("namespace"):
        body["namespace"] = request.query["namespace"]
    spec = parse_deployment(body)
    registry, worker = request.app[REGISTRY], request.app[WORKER]
    await require_namespace(registry, spec.namespace)
    if must_exist:
        await stored_function(request, spec.service, spec.namespace)
    await worker.check_deployable(spec)
    secrets = await fetch_secrets(registry, spec.secrets, spec.namespace)
    await registry.put_function(spec)
    await worker.apply(spec, secrets)
    return spec


@routes.post("/system/functions")
async def deploy_function(request: web.Request) -> web.Response:
    await _deploy(request, must_exist=False)
    return web.Response(status=202)


@routes.put("/system/functions")
async def update_function(request: web.Request) -> web.Response:
    await _deploy(request, must_exist=True)
    return web.Response(status=200)


async def _json_object(request: web.Request, shape: str) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object {shape}")
    return body


@routes.delete("/system/functions")
async def delete_function(request: web.Request) -> web.Response:
    body = await _json_object(request, '{"functionName": "...", "namespace": "..."}')
    name = validate_name(body.get("functionName"), "functionName")
    namespace = requested_namespace(request, body)
    ref = (await stored_function(request, name, namespace)).spec.ref
    await request.app[REGISTRY].delete_function(ref)
    # NotFound: registered but never started here (its package was gone at restore).
    with contextlib.suppress(NotFound):
        await request.app[WORKER].remove(ref)
    return web.Response(status=200)


@routes.post("/system/scale-function/{name}")
async def scale_function(request: web.Request) -> web.Response:
    name = validate_name(request.match_info["name"], "name")
    body = await _json_object(request, '{"serviceName": "...", "replicas": N}')
    replicas = body.get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise BadRequest(f"replicas: expected a whole number of at least 0, got {replicas!r}")
    ref = (await stored_function(request, name, requested_namespace(request, body))).spec.ref
    # Remembered with the function, so that a restart brings the same replicas back.
    await request.app[REGISTRY].set_replicas(ref, replicas)
    await request.app[WORKER].scale(ref, replicas)
    return web.Response(status=202)


# --- secrets -----------------------------------------------------------------------------------


@routes.get("/system/secrets")
async def list_secrets(request: web.Request) -> web.Response:
    namespace = await namespace_of(request)
    names = await request.app[REGISTRY].list_secrets(namespace)
    return web.json_response([{"name": n, "namespace": namespace} for n in names])


async def _secret_body(request: web.Request) -> tuple[str, str, bytes]:
    """(namespace, name, value) of a secret to create or update."""
    body = await _json_object(request, '{"name": "...", "value": "..."}')
    namespace = await namespace_of(request, body)
    name = validate_secret_name(body.get("name"))
    if isinstance(body.get("rawValue"), str):
        try:
            return namespace, name, base64.b64decode(body["rawValue"], validate=True)
        except (binascii.Error, ValueError):  # ValueError: characters that are not ASCII
            raise BadRequest("rawValue: expected base64") from None
    if isinstance(body.get("value"), str):
        return namespace, name, body["value"].encode()
    raise BadRequest("value: expected a string (or rawValue: base64)")


@routes.post("/system/secrets")
async def create_secret(request: web.Request) -> web.Response:
    namespace, name, value = await _secret_body(request)
    if not await request.app[REGISTRY].put_secret(namespace, name, value, create=True):
        raise Conflict(
            f"secret {name!r} already exists in namespace {namespace!r}; update it with PUT"
        )
    return web.Response(status=201)


@routes.put("/system/secrets")
async def update_secret(request: web.Request) -> web.Response:
    namespace, name, value = await _secret_body(request)
    if not await request.app[REGISTRY].put_secret(namespace, name, value, create=False):
        raise NotFound(f"secret {name!r} not found in namespace {namespace!r}")
    await request.app[WORKER].update_secret(name, value, namespace=namespace)
    return web.Response(status=200)


@routes.delete("/system/secrets")
async def delete_secret(request: web.Request) -> web.Response:
    body = await _json_object(request, '{"name": "...", "namespace": "..."}')
    namespace = await namespace_of(request, body)
    name = validate_secret_name(body.get("name"))
    if not await request.app[REGISTRY].delete_secret(namespace, name):
        raise NotFound(f"secret {name!r} not found in namespace {namespace!r}")
    return web.Response(status=200)


# --- info --------------------------------------------------------------------------------------


@routes.get("/system/info")
async def info(request: web.Request) -> web.Response:
    version = {"sha": "", "release": faasd_py.__version__}
    cluster = request.app.get(CLUSTER_INFO)
    extra = {} if cluster is None else {"cluster": _cluster_summary(await cluster())}
    return web.json_response(
        {
            **extra,
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
            # What the worker's loop waits on shm doorbells with (faasd_py.datapath.doorbells): the
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


def _cluster_summary(view: dict[str, Any]) -> dict[str, Any]:
    workers = view["workers"]
    return {"workers": len(workers), "apps": len(view["placements"])}


@routes.get("/system/cluster")
async def cluster(request: web.Request) -> web.Response:
    """The cluster's workers (capacity, use, heartbeat age) and where each app is placed."""
    view = request.app.get(CLUSTER_INFO)
    if view is None:
        raise NotFound(
            "this gateway is not part of a cluster (`faasd-py up` runs one host); "
            "start gateways with `faasd-py gateway --cluster REDIS_URL`"
        )
    return web.json_response(await view())
