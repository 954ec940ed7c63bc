"""What a function cannot do to the platform through context.storage: hold a caller on a hung
store, fill the worker's memory with storage calls it never waits for, or fill the store.

Real parts throughout: a real gateway and sandboxed instances, real stores (SQLite, Redis on a
free port), and for the hung store a real TCP server that takes connections and never answers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd_py.errors import StorageQuotaExceeded, StorageUnavailable
from faasd_py.spec import FunctionSpec
from faasd_py.storage import ObjectStore, Quota, Usage, open_store
from faasd_py.storage._redis import RedisStore
from faasd_py.storage._sqlite import SqliteStore
from tests.integration._redis import StoreFactory, make_store, redis_server
from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform

__all__ = ["make_store", "redis_server"]

# Deadlines here only catch hangs: a call that waits out its store is what is being tested.
HANG = 60.0


@pytest.fixture
async def hung_redis() -> AsyncIterator[str]:
    """The URL of a "Redis" that accepts connections, reads what it is sent, and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(64 * 1024):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


# --- item 12: a hung store -----------------------------------------------------------------------


async def test_a_call_to_a_redis_that_never_answers_fails_after_the_store_timeout(
    hung_redis: str,
) -> None:
    store = RedisStore(hung_redis, timeout=0.5)
    try:
        async with asyncio.timeout(HANG):
            for call in (store.put("app", "k", b"v"), store.version("app", "k")):
                with pytest.raises(StorageUnavailable) as caught:
                    await call
                assert caught.value.status == 503
                assert caught.value.store == hung_redis
                assert "no answer within 0.5s" in caught.value.message
    finally:
        await store.close()


async def test_a_sqlite_file_locked_by_another_process_fails_after_the_store_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "objects.sqlite3"
    store = open_store(f"sqlite://{path}", tmp_path, timeout=0.5)
    await store.put("app", "k", b"v")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the timeout
    try:
        async with asyncio.timeout(HANG):
            with pytest.raises(StorageUnavailable, match=r"sqlite://.*objects\.sqlite3"):
                await store.put("app", "k", b"w")
        other.execute("ROLLBACK")
        found = await store.get("app", "k")  # the store works again once the lock is gone
        assert found is not None and found.data == b"v"
    finally:
        other.close()
        await store.close()


PUTS_ON_A_HUNG_STORE = """
import os
from faasd_py.errors import StorageUnavailable

def handle(event, context):
    if event.path == "/pid":
        return str(os.getpid())
    if event.path == "/caught":
        try:
            context.storage.put("k", b"v")
        except StorageUnavailable as exc:
            return "caught: " + str(exc)
    context.storage.put("k", b"v")
    return "stored"
"""


async def test_a_hung_store_answers_503_within_exec_timeout_and_the_instance_stays(
    tmp_path: Path, hung_redis: str
) -> None:
    p = await start_platform(tmp_path, storage=hung_redis, storage_timeout=1.0)
    try:
        # exec_timeout far above the store's timeout; before, a call waited 30 s per try.
        await p.deploy("hung", PUTS_ON_A_HUNG_STORE, env={"exec_timeout": "20s"})
        status, pid, _ = await p.invoke("hung", path="/pid")
        assert status == 200, pid
        status, body, _ = await p.invoke("hung")
        assert status == 503, body
        assert b"StorageUnavailable" in body and hung_redis.encode() in body
        assert b"no answer within 1s" in body
        status, body, _ = await p.invoke("hung", path="/caught")
        assert status == 200, body
        assert body.startswith(b"caught: storage unavailable (" + hung_redis.encode()), body
        # The instance answered in time: it was neither timed out nor replaced.
        status, again, _ = await p.invoke("hung", path="/pid")
        assert (status, again) == (200, pid)
    finally:
        await stop_platform(p)


async def test_a_function_whose_exec_timeout_is_short_still_hears_of_a_hung_store_in_time(
    tmp_path: Path, hung_redis: str
) -> None:
    """The store's own timeout (30 s here) is longer than the function's exec_timeout (2 s):
    the function's calls give up at half its exec_timeout, so it can answer, not time out."""
    p = await start_platform(tmp_path, storage=hung_redis, storage_timeout=30.0)
    try:
        await p.deploy("brief", PUTS_ON_A_HUNG_STORE, env={"exec_timeout": "2s"})
        status, pid, _ = await p.invoke("brief", path="/pid")
        assert status == 200, pid
        status, body, _ = await p.invoke("brief", path="/caught")
        assert status == 200, body
        assert b"no answer within 1s (half the function's exec_timeout of 2s)" in body, body
        status, body, _ = await p.invoke("brief")  # not caught: the caller gets 503, not 504
        assert status == 503, body
        assert b"StorageUnavailable" in body and hung_redis.encode() in body
        status, again, _ = await p.invoke("brief", path="/pid")
        assert (status, again) == (200, pid)  # the instance stayed
    finally:
        await stop_platform(p)


# --- item 1: storage calls in flight are bounded per instance ------------------------------------

MiB = 1024 * 1024
BOUND_BYTES = 8 * MiB

# Many threads, each putting a few MB at once: every put waits for its own reply, but together
# they do not wait for each other. Then each object is read back.
THREADED_PUTS = """
import threading

def handle(event, context):
    count, size = (int(x) for x in event.body.split())
    failed = []

    def put(i):
        try:
            context.storage.put(f"t/{i}", bytes([i]) * size)
        except Exception as exc:
            failed.append(repr(exc))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        return {"statusCode": 500, "body": failed[0]}
    wrong = [i for i in range(count) if context.storage.get(f"t/{i}") != bytes([i]) * size]
    return {"statusCode": 200 if not wrong else 500, "body": f"stored {count}, wrong {wrong}"}
"""

# Frames written to the channel by hand, back to back, never waiting for a reply.
RAW_PUTS = """
from faasd_py.protocol import StorageCall

def handle(event, context):
    count, size = (int(x) for x in event.body.split())
    send = context.storage._transport.send
    for i in range(count):
        send(StorageCall(10_000 + i, "put", f"r/{i}", bytes([i]) * size).to_wire())
    return f"sent {count}"
"""


@pytest.fixture
async def slow_store_platform(tmp_path: Path) -> AsyncIterator[Platform]:
    # Each store call takes 0.5 s (the benchmark's remote-store model): calls a handler sends
    # together pile up in the worker unless it stops reading them.
    p = await start_platform(
        tmp_path,
        storage_latency=0.5,
        storage_calls_in_flight=4,
        storage_bytes_in_flight=BOUND_BYTES,
    )
    try:
        yield p
    finally:
        await stop_platform(p)


def assert_bounded(p: Platform, app: str, size: int) -> None:
    stats = p.worker.storage_statistics()[app]
    # The bound was reached (the reader paused) and held: at most the bound plus one call.
    assert stats.pauses > 0, stats
    assert size <= stats.peak_instance_bytes <= BOUND_BYTES + size + 1024, stats


async def test_threads_putting_at_once_are_held_to_the_bound_and_nothing_is_lost(
    slow_store_platform: Platform,
) -> None:
    p = slow_store_platform
    await p.deploy("threads", THREADED_PUTS, env={"max_inflight": "2"}, memory="512Mi")
    count, size = 12, 4 * MiB  # 48 MiB sent at once, 8 MiB may be held
    status, body, _ = await p.invoke("threads", f"{count} {size}".encode())
    assert (status, body) == (200, f"stored {count}, wrong []".encode())
    assert_bounded(p, "threads", size)
    store = open_store(None, p.config.data_dir)
    try:
        for i in range(count):
            found = await store.get("threads", f"t/{i}")
            assert found is not None and found.data == bytes([i]) * size
    finally:
        await store.close()


async def test_raw_frames_sent_without_waiting_block_the_instance_not_the_worker(
    slow_store_platform: Platform,
) -> None:
    p = slow_store_platform
    await p.deploy("raw", RAW_PUTS, env={"max_inflight": "2"}, memory="512Mi")
    await p.deploy("hello", HELLO)
    count, size = 16, 4 * MiB
    sending = asyncio.create_task(p.invoke("raw", f"{count} {size}".encode()))
    # While the instance is held back, the worker serves others.
    assert (await p.invoke("hello", b"there"))[:2] == (200, b"hello there")
    status, body, _ = await sending
    assert (status, body) == (200, f"sent {count}".encode())
    async with asyncio.timeout(HANG):  # the calls it sent are answered after it returned
        # A statistic to watch, not an event: polled.
        while p.worker.storage_statistics()["raw"].calls_in_flight:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert_bounded(p, "raw", size)
    store = open_store(None, p.config.data_dir)
    try:
        assert await store.list("raw") == sorted(f"r/{i}" for i in range(count))
    finally:
        await store.close()


# --- item 2: per-app quotas on bytes and keys ----------------------------------------------------


async def test_each_store_keeps_an_apps_use_through_writes_and_deletes(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    assert await store.usage("app") == Usage(0, 0)
    await store.put("app", "a", b"x" * 10)
    await store.put("app", "b", b"y" * 5)
    await store.put("app", "a", b"z" * 3)  # an overwrite: no new key, 7 bytes fewer
    await store.put("other", "a", b"not mine")
    assert await store.usage("app") == Usage(8, 2)
    assert await store.delete("app", "b") and not await store.delete("app", "b")
    assert await store.usage("app") == Usage(3, 1)
    assert store.known_usage()["app"] == Usage(3, 1)  # seen after its own writes
    assert await make_store().usage("app") == Usage(3, 1)  # kept in the store itself


async def test_a_put_over_the_quota_is_refused_and_writes_nothing(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    quota = Quota(max_bytes=10, max_keys=2)
    await store.put("app", "a", b"x" * 6, quota)
    with pytest.raises(StorageQuotaExceeded) as caught:
        await store.put("app", "b", b"y" * 5, quota)
    assert (caught.value.quota, caught.value.status) == ("bytes", 507)
    assert not await store.exists("app", "b")
    await store.put("app", "b", b"y" * 4, quota)  # exactly full
    with pytest.raises(StorageQuotaExceeded) as caught:
        await store.put("app", "c", b"", quota)
    assert caught.value.quota == "keys"
    await store.put("app", "a", b"x", quota)  # shrinking is always allowed
    assert await store.usage("app") == Usage(5, 2)
    assert await store.list("app") == ["a", "b"]


async def test_puts_at_once_cannot_slip_past_the_quota_together(
    make_store: StoreFactory,
) -> None:
    stores = [make_store() for _ in range(2)]  # two workers, one backing store
    quota = Quota(max_bytes=1000, max_keys=5)
    puts = [stores[i % 2].put("app", f"k{i}", b"v", quota) for i in range(12)]
    outcomes = await asyncio.gather(*puts, return_exceptions=True)
    assert sum(isinstance(o, int) for o in outcomes) == 5
    assert all(isinstance(o, int | StorageQuotaExceeded) for o in outcomes), outcomes
    assert await stores[0].usage("app") == Usage(5, 5)


async def test_the_use_of_objects_written_before_it_was_kept_is_counted(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store()
    await store.put("app", "a", b"x" * 7)
    await store.put("app", "b", b"y" * 2)
    await forget_usage(store, "app")  # as a store written by an earlier faasd-py has it
    await store.put("app", "c", b"z", Quota(max_bytes=10, max_keys=5))
    assert await store.usage("app") == Usage(10, 3)


async def forget_usage(store: ObjectStore, app: str) -> None:
    if isinstance(store, RedisStore):
        await store._redis.delete(store._keys(app)[3])
    else:
        assert isinstance(store, SqliteStore)
        await store._run(lambda db: db.execute("DELETE FROM usage WHERE app = ?", (app,)))


PUTS_UNTIL_FULL = """
from faasd_py.errors import StorageQuotaExceeded

def handle(event, context):
    s = context.storage
    if event.path == "/one":
        s.put(event.query["key"], event.body)
        return "stored"
    stored = 0
    try:
        while True:
            s.put(f"k{stored}", event.body)
            stored += 1
    except StorageQuotaExceeded as exc:
        return f"{stored} stored; {exc.quota} {exc.limit}: {exc}"
"""


async def test_a_function_meets_its_apps_quota_with_a_clear_exception_and_metrics(
    tmp_path: Path,
) -> None:
    p = await start_platform(tmp_path, storage_max_keys=4, storage_max_bytes=MiB)
    try:
        # The worker's quota (4 keys) for one function, its annotation's for another.
        await p.deploy("full", PUTS_UNTIL_FULL)
        p.build("roomy:latest", PUTS_UNTIL_FULL)
        roomy = FunctionSpec(
            service="roomy",
            image="roomy:latest",
            annotations={"com.faasd-py.storage.max-bytes": "1000"},
        )
        assert (await p.system("POST", "/system/functions", roomy.to_json()))[0] == 202
        status, body, _ = await p.invoke("full", b"v")
        assert status == 200, body
        assert body.startswith(b"4 stored; keys 4: storage quota of app full exceeded"), body
        assert b"com.faasd-py.storage.max-keys" in body
        status, body, _ = await p.invoke("roomy", b"x" * 300)
        assert body.startswith(b"3 stored; bytes 1000:"), body
        assert b"com.faasd-py.storage.max-bytes" in body
        # Uncaught: 507, naming the quota; what was there stays.
        status, body, _ = await p.invoke("full", b"w", path="/one?key=new")
        assert status == 507, body
        assert b"StorageQuotaExceeded" in body and b"storage.max-keys" in body
        status, body, _ = await p.invoke("full", b"w", path="/one?key=k0")  # an overwrite fits
        assert (status, body) == (200, b"stored")
        async with p.session.get(f"{p.url}/metrics", headers=p.auth) as response:
            metrics = await response.text()
        assert 'faasd_storage_keys{app="full"} 4.0' in metrics
        assert 'faasd_storage_bytes{app="full"} 4.0' in metrics
        assert 'faasd_storage_bytes{app="roomy"} 900.0' in metrics
        assert 'faasd_storage_quota_refusals_total{app="full"} 2.0' in metrics
    finally:
        await stop_platform(p)


async def test_a_malformed_quota_annotation_is_a_400_naming_it(tmp_path: Path) -> None:
    p = await start_platform(tmp_path)
    try:
        p.build("f:latest", HELLO)
        spec = FunctionSpec(
            service="f", image="f:latest", annotations={"com.faasd-py.storage.max-keys": "lots"}
        )
        status, body = await p.system("POST", "/system/functions", spec.to_json())
        assert status == 400, body
        assert "annotations.com.faasd-py.storage.max-keys" in str(body) and "'lots'" in str(body)
    finally:
        await stop_platform(p)
