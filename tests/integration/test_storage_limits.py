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

from faasd_py.errors import StorageUnavailable
from faasd_py.storage import open_store
from faasd_py.storage._redis import RedisStore
from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform

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
