"""context.storage end to end: functions on a real platform over a real Redis (free port), in
both runtime loops (inline and concurrent), with the cache on and off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd_py.spec import FunctionSpec
from faasd_py.storage import open_store
from tests.integration._redis import RedisServer, redis_server
from tests.integration.conftest import Platform, start_platform, stop_platform

__all__ = ["redis_server"]

# GET ?key=k reads, POST ?key=k writes the body, DELETE ?key=k deletes, ?list=prefix lists.
KV = """
def handle(event, context):
    s = context.storage
    key = event.query.get("key")
    if "list" in event.query:
        return ",".join(s.list(event.query["list"]))
    if event.method == "POST":
        s.put(key, event.body)
        return "stored"
    if event.method == "DELETE":
        return "deleted" if s.delete(key) else "absent"
    data = s.get(key)
    if data is None:
        return {"statusCode": 404, "body": "absent" if not s.exists(key) else "??"}
    return data
"""


@pytest.fixture
async def platform_on_redis(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Platform]:
    running = await start_platform(tmp_path, storage=redis_server.url)
    try:
        yield running
    finally:
        await stop_platform(running)


async def test_functions_read_and_write_through_the_cache_in_both_loops(
    platform_on_redis: Platform, redis_server: RedisServer, tmp_path: Path
) -> None:
    p = platform_on_redis
    await p.deploy("kv", KV, labels={"com.faasd-py.app": "shop"})
    # The concurrent loop (several invocations at once), same app: shares the cache and keys.
    await p.deploy("kv2", KV, labels={"com.faasd-py.app": "shop"}, env={"max_inflight": "4"})
    await p.deploy("other", KV)  # app "other"
    assert (await p.invoke("kv", b"v1", path="?key=k"))[:2] == (200, b"stored")
    for name in ("kv", "kv2", "kv", "kv2"):
        status, body, _ = await p.invoke(name, method="GET", path="?key=k")
        assert (status, body) == (200, b"v1"), name
    # A writer outside the functions: the next read returns its bytes.
    writer = open_store(redis_server.url, tmp_path)
    await writer.put("shop", "k", b"from outside")
    for name in ("kv", "kv2"):
        assert (await p.invoke(name, method="GET", path="?key=k"))[1] == b"from outside"
    await writer.close()
    # Another app does not see the key.
    assert (await p.invoke("other", method="GET", path="?key=k"))[:2] == (404, b"absent")
    assert (await p.invoke("kv2", method="GET", path="?list="))[1] == b"k"
    assert (await p.invoke("kv", method="DELETE", path="?key=k"))[1] == b"deleted"
    assert (await p.invoke("kv2", method="GET", path="?key=k"))[0] == 404
    # One cache for the app's instances, its figures in /metrics.
    stats = p.worker.cache_statistics()
    assert set(stats) == {"shop", "other"}
    assert stats["shop"].hits >= 2 and stats["shop"].writes == 1
    async with p.session.get(p.url + "/metrics") as response:
        assert 'faasd_cache_hits_total{app="shop"}' in await response.text()


async def test_redis_down_answers_503_naming_storage_then_recovers(
    platform_on_redis: Platform, redis_server: RedisServer
) -> None:
    p = platform_on_redis
    await p.deploy("kv", KV)
    assert (await p.invoke("kv", b"v1", path="?key=k"))[0] == 200
    assert (await p.invoke("kv", method="GET", path="?key=k"))[1] == b"v1"
    redis_server.stop()
    for method, body in (("GET", b""), ("POST", b"v2")):
        status, text, _ = await p.invoke("kv", body, method=method, path="?key=k")
        assert status == 503, text
        assert b"StorageUnavailable" in text and f"127.0.0.1:{redis_server.port}".encode() in text
    redis_server.start()  # empty again: the cached b"v1" must not come back
    assert (await p.invoke("kv", method="GET", path="?key=k"))[0] == 404
    assert (await p.invoke("kv", b"v3", path="?key=k"))[0] == 200
    assert (await p.invoke("kv", method="GET", path="?key=k"))[1] == b"v3"


async def test_embedded_store_and_cache_off_by_annotation(tmp_path: Path) -> None:
    p = await start_platform(tmp_path)  # no --storage: SQLite in the data dir
    try:
        await p.deploy("kv", KV, labels={"com.faasd-py.app": "a"})
        spec = FunctionSpec(
            service="nocache", image="kv:latest", annotations={"com.faasd-py.cache": "off"}
        )
        assert (await p.system("POST", "/system/functions", spec.to_json()))[0] == 202
        assert (await p.invoke("kv", b"x", path="?key=k"))[0] == 200
        assert (await p.invoke("nocache", method="GET", path="?key=k"))[0] == 404  # app nocache
        assert (await p.invoke("nocache", b"y", path="?key=k"))[0] == 200
        assert (await p.invoke("nocache", method="GET", path="?key=k"))[1] == b"y"
        assert "nocache" not in p.worker.cache_statistics()
        assert (tmp_path / "data" / "storage.sqlite3").exists()
    finally:
        await stop_platform(p)


async def test_a_reloaded_app_is_prewarmed_from_statistics_kept_in_the_registry(
    platform_on_redis: Platform,
) -> None:
    p = platform_on_redis
    await p.deploy("kv", KV)
    for i in range(5):
        assert (await p.invoke("kv", b"v%d" % i, path=f"?key=k{i}"))[0] == 200
    for _ in range(3):
        for i in range(5):
            assert (await p.invoke("kv", method="GET", path=f"?key=k{i}"))[0] == 200
    assert (await p.system("DELETE", "/system/functions", {"functionName": "kv"}))[0] == 200
    for _ in range(200):  # the last instance exits: the cache goes, its statistics are saved
        if "kv" not in p.worker.cache_statistics():
            break
        await asyncio.sleep(0.02)
    assert "kv" not in p.worker.cache_statistics()
    assert await p.running.registry.get_cache_stats("kv") is not None  # type: ignore[attr-defined]
    await p.deploy("kv")
    for _ in range(200):
        stats = p.worker.cache_statistics().get("kv")
        if stats is not None and stats.prewarmed_keys == 5:
            break
        await asyncio.sleep(0.02)
    assert (await p.invoke("kv", method="GET", path="?key=k3"))[1] == b"v3"
    stats = p.worker.cache_statistics()["kv"]
    assert (stats.prewarmed_keys, stats.prewarmed_read, stats.hits, stats.misses) == (5, 1, 1, 0)


ASYNC_KV = """
async def handle(event, context):
    key = event.query["key"]
    if event.method == "POST":
        context.storage.put(key, event.body)
        return "stored"
    return context.storage.get(key) or b"absent"
"""


async def test_an_async_handler_uses_storage_too(platform_on_redis: Platform) -> None:
    p = platform_on_redis
    await p.deploy("akv", ASYNC_KV)
    assert (await p.invoke("akv", b"async", path="?key=a"))[:2] == (200, b"stored")
    for _ in range(3):
        assert (await p.invoke("akv", method="GET", path="?key=a"))[1] == b"async"
    assert (await p.invoke("akv", method="GET", path="?key=b"))[1] == b"absent"
    assert p.worker.cache_statistics()["akv"].hits == 3
