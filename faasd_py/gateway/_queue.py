"""/system/queue: the async queues of a namespace's functions, their dead letters, and replay.

Like every /system/* route these take `?namespace=` (default openfaas-fn; a namespace that does
not exist is a 404) and see only that namespace's functions. A function that was removed keeps
its dead letters until they are replayed or it is deployed and removed again."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from faasd_py.errors import BadRequest
from faasd_py.gateway._errors import read_json
from faasd_py.gateway._keys import ASYNC_CALLS, REGISTRY
from faasd_py.gateway._namespaces import namespace_of
from faasd_py.gateway._system import rfc3339, stored_function
from faasd_py.queue import CallQueue, DeadLetter, QueueStatistics, statistics_json
from faasd_py.spec import function_ref, split_ref, validate_name

routes = web.RouteTableDef()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IDS = 1000
# What a dead letter's id looks like, whatever the backend: visible ASCII (SQLite's are numbers,
# Redis's stream ids such as 1700000000000-0).
_ID = re.compile(r"[!-~]{1,200}")


@routes.get("/system/queue")
async def queue_statistics(request: web.Request) -> web.Response:
    namespace = await namespace_of(request)
    calls = request.app[ASYNC_CALLS]
    stats = await _statistics_in(calls.queue, namespace)
    running = calls.running()
    # Every deployed function of the namespace, with or without calls: an empty queue is news.
    deployed = await request.app[REGISTRY].list_functions(namespace)
    refs = sorted({s.spec.ref for s in deployed} | set(stats))
    return web.json_response(
        [
            {
                **statistics_json(stats.get(ref) or QueueStatistics(ref, 0, 0, 0.0, 0, 0)),
                **_named(ref),
                # Of inFlight, the calls this gateway's own consumer is running now.
                "running": running.get(ref, 0),
            }
            for ref in refs
        ]
    )


@routes.get("/system/queue/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    namespace = await namespace_of(request)
    limit = _limit(request.query.get("limit"))
    queue = request.app[ASYNC_CALLS].queue
    name = request.query.get("name")
    if name:
        refs = [function_ref(validate_name(name, "name"), namespace)]
    else:
        refs = [
            ref for ref, s in (await _statistics_in(queue, namespace)).items() if s.dead_letters
        ]
    letters = [letter for ref in refs for letter in await queue.dead_letters(ref, limit)]
    letters.sort(key=lambda letter: letter.failed_at)
    return web.json_response([_dead_letter_json(letter) for letter in letters[:limit]])


@routes.post("/system/queue/replay")
async def replay(request: web.Request) -> web.Response:
    shape = '{"functionName": "...", "namespace": "...", "ids": ["..."]} (every field optional)'
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object {shape}")
    namespace = await namespace_of(request, body)
    ids = _ids(body.get("ids"))
    queue = request.app[ASYNC_CALLS].queue
    name = body.get("functionName")
    if name is not None and name != "":
        # Into a function that is deployed: otherwise they would only fail again.
        stored = await stored_function(request, validate_name(name, "functionName"), namespace)
        replayed = await queue.replay(stored.spec.ref, ids)
    elif ids:
        replayed = await queue.replay(None, ids)
    else:
        stats = await _statistics_in(queue, namespace)
        replayed = 0
        for ref in sorted(ref for ref, s in stats.items() if s.dead_letters):
            replayed += await queue.replay(ref)
    return web.json_response({"replayed": replayed})


async def _statistics_in(queue: CallQueue, namespace: str) -> dict[str, QueueStatistics]:
    """The queues of the namespace's functions, by ref."""
    return {
        ref: stats
        for ref, stats in (await queue.statistics()).items()
        if split_ref(ref)[1] == namespace
    }


def _named(ref: str) -> dict[str, str]:
    name, namespace = split_ref(ref)
    return {"function": name, "namespace": namespace}


def _dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    call = letter.call
    return {
        "id": letter.id,
        **_named(call.function),
        "callId": call.call_id,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "failedAt": rfc3339(letter.failed_at),
        "enqueuedAt": rfc3339(call.enqueued_at),
        "method": call.request.method,
        "path": call.request.path,
        "callbackUrl": call.callback_url,
    }


def _limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return value


def _ids(value: object) -> list[str]:
    if value is None:
        return []
    if (
        not isinstance(value, list)
        or len(value) > MAX_IDS
        or not all(isinstance(v, str) and _ID.fullmatch(v) for v in value)
    ):
        raise BadRequest(
            f"ids: expected a list of at most {MAX_IDS} dead letters' ids (strings, as "
            f"GET /system/queue/dead-letters lists them), got {str(value)[:200]}"
        )
    return value
