"""/system/logs: a function's captured output as ndjson, optionally followed live."""

from __future__ import annotations

import functools
import json
from datetime import datetime

from aiohttp import web

from faasd_py.errors import BadRequest
from faasd_py.gateway._keys import WORKER
from faasd_py.gateway._namespaces import requested_namespace
from faasd_py.gateway._system import rfc3339, stored_function
from faasd_py.worker import LogEntry

routes = web.RouteTableDef()


@routes.get("/system/logs")
async def logs(request: web.Request) -> web.StreamResponse:
    name = request.query.get("name", "")
    if not name:
        raise BadRequest("name: the function whose logs to read is required (?name=hello)")
    tail = _tail(request.query.get("tail"))
    since = _since(request.query.get("since"))
    follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
    instance = request.query.get("instance") or None  # faas-cli logs --instance
    stored = await stored_function(request, name, requested_namespace(request))
    logs = request.app[WORKER].logs(stored.spec.ref)
    line = functools.partial(_line, stored.spec.service, stored.spec.namespace)

    followed = logs.follow() if follow else None  # subscribe before the snapshot: no gap
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for entry in await logs.recent(tail, since, instance):
        await response.write(line(entry))
    if followed is not None:
        async for entry in followed:
            if instance in (None, entry.instance):
                await response.write(line(entry))
    await response.write_eof()
    return response


def _line(name: str, namespace: str, entry: LogEntry) -> bytes:
    record = {
        "name": name,
        "namespace": namespace,
        "instance": entry.instance,
        "timestamp": rfc3339(entry.timestamp),
        "text": entry.text,
        "stream": entry.stream,
    }
    return json.dumps(record).encode() + b"\n"


def _tail(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        tail = int(raw)
    except ValueError:
        raise BadRequest(f"tail: expected a whole number of lines, got {raw!r}") from None
    # OpenFaaS treats a tail of 0 or less as "all" (its clients send none for 0).
    return None if tail <= 0 else tail


def _since(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(
            f"since: expected an RFC3339 time such as 2026-01-02T15:04:05Z, got {raw!r}"
        ) from None
