"""GET /openapi.json: the gateway's OpenAPI document (openapi.yaml, shipped in the package)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

routes = web.RouteTableDef()

SPEC_FILE = "openapi.yaml"


@functools.cache
def spec() -> dict[str, Any]:
    """The OpenAPI document, parsed once."""
    text = resources.files(__package__).joinpath(SPEC_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@functools.cache
def _spec_json() -> bytes:
    return json.dumps(spec(), indent=1).encode()


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_spec_json(), content_type="application/json")
