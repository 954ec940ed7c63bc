"""Namespaces, as faasd CE has them: functions and secrets live in one (default `openfaas-fn`),
every /system/* route takes `?namespace=` (or a `namespace` field in its JSON body), and
/system/namespace/{name} creates, reads, updates and removes them."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from faasd_py.errors import BadRequest, Conflict, NotFound
from faasd_py.gateway._errors import read_json
from faasd_py.gateway._keys import REGISTRY
from faasd_py.spec import DEFAULT_NAMESPACE, validate_namespace
from faasd_py.store import Namespace, Registry

routes = web.RouteTableDef()


def requested_namespace(request: web.Request, body: Mapping[str, object] | None = None) -> str:
    """The namespace a /system/* call names: the body's `namespace` field, else `?namespace=`,
    else the default. BadRequest for a malformed one, or when the two disagree."""
    query = request.query.get("namespace") or None
    field = body.get("namespace") if body is not None else None
    if field is not None and field != "" and not isinstance(field, str):
        raise BadRequest(f"namespace: expected a string, got {field!r}")
    if field and query and field != query:
        raise BadRequest(
            f"namespace: the body says {field!r} and ?namespace= says {query!r}; give one"
        )
    return validate_namespace(field or query or DEFAULT_NAMESPACE)


async def require_namespace(registry: Registry, namespace: str) -> str:
    """`namespace` if it exists; NotFound that names it and says how to create it otherwise."""
    if await registry.get_namespace(namespace) is None:
        raise NotFound(
            f"namespace {namespace!r} not found; create it with "
            f"POST /system/namespace/{namespace} (faas-cli namespace create {namespace})"
        )
    return namespace


async def namespace_of(request: web.Request, body: Mapping[str, object] | None = None) -> str:
    """The namespace a call names, which must exist."""
    return await require_namespace(request.app[REGISTRY], requested_namespace(request, body))


@routes.get("/system/namespaces")
async def list_namespaces(request: web.Request) -> web.Response:
    names = [n.name for n in await request.app[REGISTRY].list_namespaces()]
    return web.json_response(names)


@routes.get("/system/namespace/{name}")
async def get_namespace(request: web.Request) -> web.Response:
    name = validate_namespace(request.match_info["name"], "name")
    found = await request.app[REGISTRY].get_namespace(name)
    if found is None:
        await require_namespace(request.app[REGISTRY], name)  # raises with the usual message
    assert found is not None
    return web.json_response(found.to_json())


async def _namespace_body(request: web.Request) -> Namespace:
    """The namespace to create or update: named by the path, or by the body's `name` (the
    OpenFaaS go-sdk creates with POST /system/namespace/ and the name in the body)."""
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        raise BadRequest('expected a JSON object {"name": "...", "labels": {}, "annotations": {}}')
    in_path = request.match_info.get("name")
    if in_path and body.get("name") not in (None, "", in_path):
        raise BadRequest(f"name: the body names {body['name']!r} but the path {in_path!r}")
    return Namespace(
        name=validate_namespace(in_path or body.get("name"), "name"),
        labels=_str_map(body.get("labels"), "labels"),
        annotations=_str_map(body.get("annotations"), "annotations"),
    )


def _str_map(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest(f"{field}: expected an object of strings, got {value!r}")
    return dict(value)


@routes.post("/system/namespace/{name}")
@routes.post("/system/namespace/")
async def create_namespace(request: web.Request) -> web.Response:
    namespace = await _namespace_body(request)
    if not await request.app[REGISTRY].put_namespace(namespace, create=True):
        raise Conflict(f"namespace {namespace.name!r} already exists; update it with PUT")
    return web.json_response(namespace.to_json(), status=201)


@routes.put("/system/namespace/{name}")
async def update_namespace(request: web.Request) -> web.Response:
    namespace = await _namespace_body(request)
    if not await request.app[REGISTRY].put_namespace(namespace, create=False):
        await require_namespace(request.app[REGISTRY], namespace.name)
    return web.json_response(namespace.to_json(), status=202)


@routes.delete("/system/namespace/{name}")
async def delete_namespace(request: web.Request) -> web.Response:
    name = validate_namespace(request.match_info["name"], "name")
    registry = request.app[REGISTRY]
    if name == DEFAULT_NAMESPACE:
        raise BadRequest(f"the default namespace {DEFAULT_NAMESPACE!r} cannot be removed")
    await require_namespace(registry, name)
    functions = [f.spec.service for f in await registry.list_functions(name)]
    if functions:
        shown = ", ".join(functions[:5]) + (", ..." if len(functions) > 5 else "")
        raise Conflict(
            f"namespace {name!r} still holds {len(functions)} function(s) ({shown}); "
            "remove them first"
        )
    await registry.delete_namespace(name)
    return web.Response(status=202)
