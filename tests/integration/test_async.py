"""Async invocations against a real platform: /async-function/ answers 202 with an X-Call-Id once
the call is stored, the function runs it later, and its result is POSTed to a real callback
receiver (an aiohttp server on a free port); retries, dead letters and replay; the errors a
caller can meet; /system/queue and the metrics. Both queues: the embedded one and Redis."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from rich.console import Console

from faasd_py import server
from faasd_py.config import Config
from faasd_py.errors import FaasdError
from faasd_py.spec import FunctionSpec
from tests.integration._redis import RedisServer, free_port
from tests.integration.conftest import Platform, Receiver, start_platform, stop_platform
from tests.integration.test_openapi import CHECKS, SCHEMA

# Deadlines only catch hangs.
HANG = 30.0

ECHO = """
import json

def handle(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Echo": "yes"},
        "body": json.dumps({
            "method": event.method,
            "path": event.path,
            "query": dict(event.query.items()),
            "headers": dict(event.headers.items()),
            "body": event.body.decode(),
        }),
    }
"""

UNAVAILABLE = """
def handle(event, context):
    return {"statusCode": 503, "body": "not today: " + event.body.decode()}
"""

FIXED = """
def handle(event, context):
    return {"statusCode": 200, "body": "fixed: " + event.body.decode()}
"""

# Retries that a test can wait for: 3 attempts, 50 ms to 100 ms apart.
FAST_RETRIES = {
    "com.openfaas.retry.attempts": "3",
    "com.openfaas.retry.min_wait": "50ms",
    "com.openfaas.retry.max_wait": "100ms",
}


@pytest.fixture(params=["sqlite", "redis"])
async def queued(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    """A platform whose async queue is the embedded one, or Redis (a real redis-server)."""
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        redis = RedisServer(tmp_path, aof=True)
        redis.start()
        request.addfinalizer(redis.stop)
        overrides["queue"] = redis.url
    running = await start_platform(tmp_path, **overrides)
    try:
        yield running
    finally:
        await stop_platform(running)


async def deploy(
    platform: Platform,
    name: str,
    source: str,
    *,
    namespace: str = "openfaas-fn",
    annotations: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Build and deploy (POST, or PUT when it exists); the gateway's answer."""
    image = f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:8]}:latest"
    platform.build(image, source)
    spec = FunctionSpec(
        service=name, image=image, namespace=namespace, annotations=annotations or {}
    )
    status, body = await platform.system("PUT", "/system/functions", spec.to_json())
    if status == 404:
        status, body = await platform.system("POST", "/system/functions", spec.to_json())
    return status, body


async def call_async(
    platform: Platform,
    ref: str,
    body: bytes = b"",
    *,
    path: str = "",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    url = f"{platform.url}/async-function/{ref}{path}"
    async with platform.session.request(method, url, data=body, headers=headers) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), response.headers


async def dead_letters(platform: Platform, count: int, query: str = "") -> list[Any]:
    """The dead letters, once there are `count` of them."""
    async with asyncio.timeout(HANG):
        while True:
            status, letters = await platform.system("GET", "/system/queue/dead-letters" + query)
            assert status == 200, letters
            if len(letters) >= count:
                return list(letters)
            await asyncio.sleep(0.05)


async def test_a_call_is_stored_then_run_and_its_result_posted_to_the_callback(
    queued: Platform, receiver: Receiver
) -> None:
    assert (await deploy(queued, "echo", ECHO))[0] == 202
    status, body, headers = await call_async(
        queued,
        "echo",
        b"the payload",
        path="/items/7?color=red&size=2",
        headers={"X-Callback-Url": f"{receiver.url}/done/1", "X-Thing": "kept"},
    )
    assert status == 202 and body is None
    call_id = headers["X-Call-Id"]
    assert call_id and headers["X-Start-Time"].isdigit()

    callback = await receiver.next()
    assert callback.path == "/done/1"
    assert callback.headers["X-Call-Id"] == call_id
    assert callback.headers["X-Function-Status"] == "200"
    assert callback.headers["X-Function-Name"] == "echo.openfaas-fn"
    assert callback.headers["X-Echo"] == "yes"  # the function's own headers come along
    stages = callback.headers["Server-Timing"]  # where its time went, as /function/ says it
    assert all(f"{stage};dur=" in stages for stage in ("queue", "cold-start", "execution"))
    seen = json.loads(callback.body)
    # The function saw what /function/ would have passed on.
    assert seen["method"] == "POST"
    assert seen["path"] == "/items/7"
    assert seen["query"] == {"color": "red", "size": "2"}
    assert seen["body"] == "the payload"
    sent = CIMultiDict(seen["headers"])
    assert sent["X-Thing"] == "kept"
    assert sent["X-Call-Id"] == call_id
    assert sent["X-Start-Time"] == headers["X-Start-Time"]
    assert "X-Forwarded-For" in sent

    # Done: nothing waits, nothing is dead; the run counts as an invocation of the function.
    status, queues = await queued.system("GET", "/system/queue")
    assert status == 200
    (echo,) = [q for q in queues if q["function"] == "echo"]
    assert echo["depth"] == 0 and echo["deadLetters"] == 0
    assert echo["namespace"] == "openfaas-fn"
    invocations = 'gateway_function_invocation_total{code="200",function_name="echo.openfaas-fn"}'
    assert await queued.metric(invocations) == 1.0


async def test_a_function_of_another_namespace_and_the_callers_call_id(
    platform: Platform, receiver: Receiver
) -> None:
    assert (await platform.system("POST", "/system/namespace/staging"))[0] == 201
    assert (await deploy(platform, "echo", ECHO, namespace="staging"))[0] == 202
    status, _, headers = await call_async(
        platform,
        "echo.staging",
        b"hi",
        headers={"X-Callback-Url": receiver.url + "/cb", "X-Call-Id": "my-own-id"},
    )
    assert status == 202 and headers["X-Call-Id"] == "my-own-id"
    callback = await receiver.next()
    assert callback.headers["X-Call-Id"] == "my-own-id"
    assert callback.headers["X-Function-Name"] == "echo.staging"
    assert json.loads(callback.body)["headers"]["X-Call-Id"] == "my-own-id"

    # Its queue shows under its namespace, not under the default one.
    _, staging = await platform.system("GET", "/system/queue?namespace=staging")
    assert [q["function"] for q in staging] == ["echo"]
    _, default = await platform.system("GET", "/system/queue")
    assert default == []


async def test_a_call_without_a_callback_runs_too(platform: Platform) -> None:
    assert (await deploy(platform, "echo", ECHO))[0] == 202
    status, _, _ = await call_async(platform, "echo", b"fire and forget")
    assert status == 202
    series = 'gateway_function_invocation_total{code="200",function_name="echo.openfaas-fn"}'
    async with asyncio.timeout(HANG):
        while True:
            if await platform.metric(series) == 1.0:
                break
            await asyncio.sleep(0.05)


async def test_unknown_functions_and_namespaces_are_404_as_on_function(platform: Platform) -> None:
    for ref in ("nobody", "nobody.nowhere"):
        status, body, _ = await call_async(platform, ref, b"x")
        sync_status, sync_body, _ = await platform.invoke(ref, b"x")
        assert status == sync_status == 404
        assert body["error"] == json.loads(sync_body)["error"]
    assert "namespace 'nowhere' not found" in body["error"]


async def test_a_callback_url_must_be_an_absolute_http_url(platform: Platform) -> None:
    assert (await deploy(platform, "echo", ECHO))[0] == 202
    for bad in ("/relative/path", "ftp://example.com/x", "not a url", "http://", ""):
        status, body, _ = await call_async(platform, "echo", headers={"X-Callback-Url": bad})
        assert status == 400, bad
        assert "X-Callback-Url" in body["error"] and "http" in body["error"], body


async def test_a_body_over_max_body_is_413(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, max_body=1024)
    try:
        assert (await deploy(platform, "echo", ECHO))[0] == 202
        status, body, _ = await call_async(platform, "echo", b"x" * 2048)
        assert status == 413 and "--max-body" in body["error"]
        _, queues = await platform.system("GET", "/system/queue")
        assert [q["depth"] for q in queues] == [0]  # nothing stored
    finally:
        await stop_platform(platform)


async def test_a_full_queue_is_429_and_stores_nothing(tmp_path: Path) -> None:
    # No consumer: what is accepted stays in the queue.
    platform = await start_platform(tmp_path, queue_consumer=False)
    try:
        annotations = {"com.faasd-py.queue.max_depth": "2"}
        assert (await deploy(platform, "echo", ECHO, annotations=annotations))[0] == 202
        for n in range(2):
            assert (await call_async(platform, "echo", b"%d" % n))[0] == 202
        status, body, headers = await call_async(platform, "echo", b"one too many")
        assert status == 429
        assert "limit of 2 calls" in body["error"] and "max_depth" in body["error"]
        assert int(headers["Retry-After"]) >= 1
        _, (echo,) = await platform.system("GET", "/system/queue")
        assert (echo["function"], echo["depth"], echo["running"]) == ("echo", 2, 0)
        depth = 'faasd_queue_depth{function_name="echo.openfaas-fn"}'
        assert await platform.metric(depth) == 2.0
    finally:
        await stop_platform(platform)


async def test_a_call_that_keeps_failing_is_a_dead_letter_then_replayed(
    queued: Platform, receiver: Receiver
) -> None:
    assert (await deploy(queued, "flaky", UNAVAILABLE, annotations=FAST_RETRIES))[0] == 202
    status, _, headers = await call_async(
        queued, "flaky", b"job 1", headers={"X-Callback-Url": receiver.url}
    )
    assert status == 202
    call_id = headers["X-Call-Id"]

    # One callback, with the last attempt's answer, once the attempts are used up.
    callback = await receiver.next()
    assert callback.headers["X-Function-Status"] == "503"
    assert callback.headers["X-Call-Id"] == call_id
    assert callback.body == b"not today: job 1"

    # The callback goes first, then the call is moved to the dead letters.
    (letter,) = await dead_letters(queued, 1, "?name=flaky")
    assert letter["function"] == "flaky" and letter["namespace"] == "openfaas-fn"
    assert letter["callId"] == call_id and letter["attempts"] == 3
    assert "503" in letter["reason"] and letter["callbackUrl"] == receiver.url
    _, (flaky,) = await queued.system("GET", "/system/queue")
    assert (flaky["deadLetters"], flaky["retries"], flaky["depth"]) == (1, 2, 0)
    # Every attempt counted as an invocation; the queue's figures are on /metrics.
    label = 'function_name="flaky.openfaas-fn"'
    assert await queued.metric(f'gateway_function_invocation_total{{code="503",{label}}}') == 3
    assert await queued.metric(f"faasd_queue_dead_letters{{{label}}}") == 1
    assert await queued.metric(f"faasd_queue_retries_total{{{label}}}") == 2
    assert await queued.metric(f"faasd_queue_depth{{{label}}}") == 0
    assert await queued.metric('faasd_callbacks_total{result="delivered"}') == 1
    assert await queued.metric("faasd_queue_up") == 1

    # The function is fixed; its dead letter goes back as the same call.
    assert (await deploy(queued, "flaky", FIXED, annotations=FAST_RETRIES))[0] == 200
    status, replayed = await queued.system(
        "POST", "/system/queue/replay", {"functionName": "flaky"}
    )
    assert (status, replayed) == (200, {"replayed": 1})
    callback = await receiver.next()
    assert callback.headers["X-Function-Status"] == "200"
    assert callback.headers["X-Call-Id"] == call_id
    assert callback.body == b"fixed: job 1"
    assert (await queued.system("GET", "/system/queue/dead-letters"))[1] == []


async def test_replay_by_id_and_of_a_whole_namespace(tmp_path: Path, receiver: Receiver) -> None:
    platform = await start_platform(tmp_path)
    try:
        assert (await deploy(platform, "flaky", UNAVAILABLE, annotations=FAST_RETRIES))[0] == 202
        hook = {"X-Callback-Url": receiver.url}
        for n in range(2):
            assert (await call_async(platform, "flaky", b"%d" % n, headers=hook))[0] == 202
        for _ in range(2):
            assert (await receiver.next()).headers["X-Function-Status"] == "503"
        letters = await dead_letters(platform, 2)
        _, limited = await platform.system("GET", "/system/queue/dead-letters?limit=1")
        assert len(limited) == 1

        # By id: only that one comes back (and fails again, with its attempts anew).
        first = letters[0]["id"]
        status, replayed = await platform.system("POST", "/system/queue/replay", {"ids": [first]})
        assert (status, replayed) == (200, {"replayed": 1})
        assert (await receiver.next()).headers["X-Call-Id"] == letters[0]["callId"]
        # The namespace's, with an empty body: both.
        await dead_letters(platform, 2)
        async with platform.session.post(
            platform.url + "/system/queue/replay", headers=platform.auth
        ) as response:
            assert response.status == 200 and await response.json() == {"replayed": 2}
    finally:
        await stop_platform(platform)


async def test_queue_routes_refuse_what_they_cannot_do(platform: Platform) -> None:
    cases: list[tuple[str, str, Any, int, str]] = [
        ("GET", "/system/queue?namespace=nowhere", None, 404, "namespace 'nowhere' not found"),
        ("GET", "/system/queue/dead-letters?name=Bad_Name", None, 400, "name"),
        ("GET", "/system/queue/dead-letters?limit=0", None, 400, "limit"),
        ("POST", "/system/queue/replay", {"functionName": "nobody"}, 404, "nobody"),
        ("POST", "/system/queue/replay", {"ids": "abc"}, 400, "ids"),
        ("POST", "/system/queue/replay", [1, 2], 400, "JSON object"),
    ]
    for method, path, body, expected, words in cases:
        status, answer = await platform.system(method, path, body)
        assert status == expected, (path, answer)
        assert words in answer["error"], (path, answer)
    status, _ = await platform.system("GET", "/system/queue", auth=False)
    assert status == 401


async def test_bad_retry_or_queue_annotations_are_400_at_deploy(platform: Platform) -> None:
    cases = {
        "com.openfaas.retry.attempts": "many",
        "com.openfaas.retry.codes": "429,abc",
        "com.openfaas.retry.min_wait": "soon",
        "com.faasd-py.queue.max_depth": "0",
    }
    for annotation, value in cases.items():
        status, body = await deploy(platform, "echo", ECHO, annotations={annotation: value})
        assert status == 400, (annotation, body)
        assert annotation in body["error"] and repr(value) in body["error"]
    # Nothing was deployed.
    assert (await call_async(platform, "echo"))[0] == 404


async def test_a_redis_queue_that_is_down_is_503_naming_it(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    platform = await start_platform(tmp_path, queue=url)
    try:
        assert (await deploy(platform, "echo", ECHO))[0] == 202
        status, body, _ = await call_async(platform, "echo", b"x")
        assert status == 503
        assert url in body["error"] and "async queue unavailable" in body["error"]
        status, body = await platform.system("GET", "/system/queue")
        assert status == 503 and url in body["error"]
        # /metrics still answers, and says the queue did not.
        assert await platform.metric("faasd_queue_up") == 0
        # Synchronous calls do not need the queue.
        assert (await platform.invoke("echo", b"x"))[0] == 200
    finally:
        await stop_platform(platform)


async def test_a_queue_url_that_names_no_queue_stops_the_start(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path / "data", port=0, queue="ftp://somewhere")
    with pytest.raises(FaasdError, match=r"--queue: .*redis://"):
        await server.start(config, Console(file=io.StringIO()))


def test_queue_settings_are_checked() -> None:
    for setting in ("queue_max_depth", "queue_concurrency", "callback_attempts"):
        with pytest.raises(ValueError, match=f"{setting} must be at least 1"):
            Config(**{setting: 0})  # type: ignore[arg-type]


SLOW = """
import time

def handle(event, context):
    print("started", event.body.decode(), flush=True)
    time.sleep(1)
    return "slept " + event.body.decode()
"""


async def test_a_call_running_at_shutdown_finishes_before_the_worker_stops(
    tmp_path: Path, receiver: Receiver
) -> None:
    platform = await start_platform(tmp_path)
    stopped = False
    try:
        assert (await deploy(platform, "slow", SLOW))[0] == 202
        hook = {"X-Callback-Url": receiver.url}
        assert (await call_async(platform, "slow", b"z", headers=hook))[0] == 202
        async with asyncio.timeout(HANG):  # running in its instance, not waiting for one
            while True:
                if any("started z" in line["text"] for line in await platform.logs("slow")):
                    break
                await asyncio.sleep(0.02)
        await stop_platform(platform)
        stopped = True
        # Drained within --shutdown-timeout: its answer, not a 503 of a closing worker.
        callback = receiver.received.get_nowait()
        assert callback.headers["X-Function-Status"] == "200"
        assert callback.body == b"slept z"
    finally:
        if not stopped:
            await stop_platform(platform)


async def test_stored_calls_survive_a_restart_of_up(tmp_path: Path, receiver: Receiver) -> None:
    # Stored by an `up` that runs none (the embedded queue, in the data dir)...
    first = await start_platform(tmp_path, queue_consumer=False)
    try:
        assert (await deploy(first, "echo", ECHO))[0] == 202
        hook = {"X-Callback-Url": receiver.url, "X-Call-Id": "kept-across"}
        assert (await call_async(first, "echo", b"later", headers=hook))[0] == 202
    finally:
        await stop_platform(first)
    assert receiver.received.empty()
    # ...run by the next one.
    second = await start_platform(tmp_path)
    try:
        callback = await receiver.next()
        assert callback.headers["X-Call-Id"] == "kept-across"
        assert json.loads(callback.body)["body"] == "later"
    finally:
        await stop_platform(second)


async def test_the_answers_match_the_openapi_document(
    platform: Platform, receiver: Receiver
) -> None:
    """What the fuzzing rarely reaches (a deployed function, dead letters) checked against the
    document too: the 202, the queue figures, a dead letter, a replay."""

    async def call(label: str, status: int, **case: Any) -> Any:
        operation = SCHEMA.find_operation_by_label(label)
        assert operation is not None, label
        response = await asyncio.to_thread(
            operation.Case(**case).call_and_validate,
            base_url=platform.url,
            headers=platform.auth,
            checks=CHECKS,
            timeout=HANG,
        )
        assert response.status_code == status, (label, response.text)
        return response

    annotations = {**FAST_RETRIES, "com.openfaas.retry.attempts": "1"}
    assert (await deploy(platform, "flaky", UNAVAILABLE, annotations=annotations))[0] == 202
    accepted = await call(
        "POST /async-function/{name}/{path}",
        202,
        path_parameters={"name": "flaky", "path": "deep"},
        headers={"X-Callback-Url": receiver.url},
        body=b"x",
        media_type="application/octet-stream",
    )
    assert accepted.headers["x-call-id"]
    await receiver.next()
    await dead_letters(platform, 1)
    await call("GET /system/queue", 200)
    listed = await call("GET /system/queue/dead-letters", 200, query={"name": "flaky"})
    assert listed.json()[0]["path"] == "/deep"
    await call(
        "POST /system/queue/replay",
        200,
        body={"functionName": "flaky"},
        media_type="application/json",
    )
    await receiver.next()  # the replayed call ends before the receiver goes
