"""The per-app cache over a real Redis (started on a free port) and over the embedded store:
fresh reads under an outside writer, one copy per app, isolation, Redis going away, eviction
under a tiny budget, pre-warm on reload, and objects of 0 bytes and 64 MiB."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, cast

import pytest

from faasd_py.cache import AccessStats, AppCache, CacheManager, MemoryStats, SizingPolicy
from faasd_py.cache._manager import CacheSettings
from faasd_py.errors import StorageUnavailable
from faasd_py.storage import ObjectStore, Versioned, open_store
from tests.integration._redis import RedisServer, StoreFactory, make_store, redis_server

__all__ = ["make_store", "redis_server"]

MiB = 1024 * 1024


def manager(store: ObjectStore, stats: MemoryStats | None = None, **policy: int) -> CacheManager:
    settings = CacheSettings(
        policy=SizingPolicy(**{"min_bytes": 4 * MiB, "max_per_app": 64 * MiB, **policy}),
        bypass_bytes=policy.get("max_per_app", 64 * MiB),
        rebalance_every=3600,
    )
    return CacheManager(store, settings, stats)


async def test_every_read_after_an_outside_write_returns_the_new_bytes(
    make_store: StoreFactory,
) -> None:
    cache = AppCache("app", make_store(), capacity=MiB, bypass_bytes=MiB)
    writer = make_store()  # another client: the write does not go through the cache
    committed = 0  # the generation whose write has finished
    await writer.put("app", "obj", b"0")
    done = asyncio.Event()
    read_after_write = asyncio.Event()
    reads = 0

    async def reader() -> None:
        nonlocal reads
        while not done.is_set():
            floor = committed
            data = await cache.get("obj")
            assert data is not None and int(data) >= floor, (data, floor)
            reads += 1
            if floor == committed:
                read_after_write.set()

    async def write() -> None:
        nonlocal committed
        for generation in range(1, 150):
            await writer.put("app", "obj", str(generation).encode())
            committed = generation
            # Paced by the readers, not the clock: at least one read began after each write,
            # however busy the machine.
            read_after_write.clear()
            await read_after_write.wait()
            await asyncio.sleep(random.random() * 0.002)
        done.set()

    await asyncio.gather(write(), *(reader() for _ in range(4)))
    stats = cache.statistics()
    assert reads >= 149 and stats.hits > 0 and stats.misses > 0
    assert await cache.get("obj") == b"149"


async def test_two_instances_of_an_app_share_one_cached_copy(make_store: StoreFactory) -> None:
    caches = manager(make_store())
    first, second = await caches.open("app"), await caches.open("app")
    assert first is second
    await make_store().put("app", "k", b"x" * 1000)
    one = await first.get("k")
    two = await second.get("k")
    assert one is two  # the very same bytes object: one copy
    stats = caches.statistics()["app"]
    assert (stats.hits, stats.misses, stats.entries, stats.bytes_cached) == (1, 1, 1, 1000)
    await caches.release("app")
    assert "app" in caches.statistics()
    await caches.release("app")
    assert caches.statistics() == {}
    await caches.close()


async def test_apps_cannot_see_each_others_keys_through_the_cache(
    make_store: StoreFactory,
) -> None:
    caches = manager(make_store())
    a, b = await caches.open("a"), await caches.open("b")
    await a.put("k", b"a's")
    assert await a.get("k") == b"a's"
    assert await b.get("k") is None
    assert not await b.exists("k")
    assert await b.list() == []
    await b.put("k", b"b's")
    assert await a.get("k") == b"a's"
    await caches.close()


async def test_redis_stopped_mid_run_fails_clearly_serves_nothing_stale_and_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = open_store(redis_server.url, tmp_path)
    cache = AppCache("app", store, capacity=MiB, bypass_bytes=MiB)
    await cache.put("k", b"old")
    assert await cache.get("k") == b"old"  # cached now
    redis_server.stop()
    for call in (cache.get("k"), cache.put("k", b"new"), cache.exists("k"), cache.list()):
        with pytest.raises(StorageUnavailable) as caught:
            await call
        assert caught.value.status == 503 and "storage" in caught.value.message
    assert cache.statistics().storage_errors == 4
    redis_server.start()  # comes back empty
    assert await cache.get("k") is None  # the cached b"old" is not served as fresh
    writer = open_store(redis_server.url, tmp_path)
    await writer.put("app", "k", b"after")
    assert await cache.get("k") == b"after"
    await cache.put("k", b"mine")
    assert await cache.get("k") == b"mine"
    await writer.close()
    await store.close()


async def test_eviction_under_a_tiny_budget_keeps_results_correct(
    make_store: StoreFactory,
) -> None:
    cache = AppCache("app", make_store(), capacity=3000, bypass_bytes=2000)
    writer = make_store()
    rng = random.Random(7)
    truth: dict[str, bytes] = {}
    for step in range(400):
        key = f"k{rng.randrange(12)}"
        action = rng.random()
        if action < 0.25:
            value = bytes([step % 256]) * rng.randrange(0, 2500)
            await (cache.put(key, value) if action < 0.15 else writer.put("app", key, value))
            truth[key] = value
        elif action < 0.3:
            await cache.delete(key)
            truth.pop(key, None)
        else:
            assert await cache.get(key) == truth.get(key)
    stats = cache.statistics()
    assert stats.evictions > 0 and stats.hits > 0 and stats.bytes_cached <= 3000


@pytest.mark.parametrize("size", [0, 64 * MiB])
async def test_objects_of_zero_bytes_and_64_mib(make_store: StoreFactory, size: int) -> None:
    cache = AppCache("app", make_store(), capacity=128 * MiB, bypass_bytes=128 * MiB)
    data = bytes(range(256)) * (size // 256)
    await cache.put("blob", data)
    assert await cache.get("blob") == data
    await make_store().put("app", "blob", data[::-1])
    assert await cache.get("blob") == data[::-1]
    assert cache.statistics().hits == 1  # the first read; the second saw a new version


async def test_objects_above_the_threshold_bypass_the_cache(make_store: StoreFactory) -> None:
    cache = AppCache("app", make_store(), capacity=MiB, bypass_bytes=100)
    await cache.put("big", b"x" * 101)
    assert await cache.get("big") == b"x" * 101
    stats = cache.statistics()
    assert (stats.entries, stats.bypassed_reads, stats.hits) == (0, 1, 0)


async def test_a_lease_pins_the_object_against_eviction(make_store: StoreFactory) -> None:
    cache = AppCache("app", make_store(), capacity=100, bypass_bytes=100)
    await cache.put("a", b"a" * 60)
    async with cache.lease("a") as data:
        assert data == b"a" * 60
        await cache.put("b", b"b" * 60)  # over budget: "a" is pinned, so "b" goes
        assert cache.cached_version("a") is not None
    await cache.put("c", b"c" * 60)
    assert cache.cached_version("a") is None


async def test_an_object_stays_pinned_until_its_last_lease_ends(make_store: StoreFactory) -> None:
    cache = AppCache("app", make_store(), capacity=100, bypass_bytes=100)
    await cache.put("a", b"a" * 60)
    async with cache.lease("a"):
        async with cache.lease("a"):
            pass  # one reader has sent the bytes; the other is still sending them
        await cache.put("b", b"b" * 60)  # over budget: "a" is still pinned, so "b" goes
        assert cache.cached_version("a") is not None
        assert cache.cached_version("b") is None
    await cache.put("c", b"c" * 60)
    assert cache.cached_version("a") is None


class HeldStore:
    """A real store whose object reads are held: `get` reads the store, sets `fetched`, then
    waits for `release` before answering, as a slow fetch would; `version` sets
    `version_answered` once it has the answer. Counts the object reads."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.gets = 0
        self.fetched = asyncio.Event()
        self.release = asyncio.Event()
        self.version_answered = asyncio.Event()

    async def get(self, app: str, key: str) -> Versioned | None:
        self.gets += 1
        found = await self._store.get(app, key)
        self.fetched.set()
        await self.release.wait()
        return found

    async def version(self, app: str, key: str) -> int | None:
        version = await self._store.version(app, key)
        self.version_answered.set()
        return version

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def held_cache(store: HeldStore) -> AppCache:
    return AppCache("app", cast(ObjectStore, store), capacity=MiB, bypass_bytes=MiB)


async def test_a_read_after_a_write_does_not_join_an_older_fetch(
    make_store: StoreFactory,
) -> None:
    writer = make_store()
    await writer.put("app", "k", b"old")
    store = HeldStore(make_store())
    cache = held_cache(store)
    first = asyncio.create_task(cache.get("k"))
    await store.fetched.wait()  # the first read's fetch has read b"old" and is held
    await writer.put("app", "k", b"new")  # a write that finishes before the second read
    second = asyncio.create_task(cache.get("k"))
    # The second read saw the new version; its next step is to look at the fetch under way.
    await store.version_answered.wait()
    store.release.set()
    assert await first == b"old"  # it began before the write: the old bytes are right for it
    assert await second == b"new"  # the fetch under way is older than the write it saw
    assert store.gets == 2


async def test_concurrent_reads_of_one_version_share_one_fetch(make_store: StoreFactory) -> None:
    await make_store().put("app", "k", b"v")
    store = HeldStore(make_store())
    cache = held_cache(store)
    first = asyncio.create_task(cache.get("k"))
    await store.fetched.wait()
    second = asyncio.create_task(cache.get("k"))
    await store.version_answered.wait()  # the second read waits on the first's fetch
    store.release.set()
    assert await first == await second == b"v"
    assert store.gets == 1  # one store read for both
    stats = cache.statistics()
    assert (stats.misses, stats.entries) == (2, 1)


async def test_a_reader_that_gives_up_does_not_cancel_the_fetch_others_joined(
    make_store: StoreFactory,
) -> None:
    """The first reader of a key starts the fetch; one that joined it must still get the bytes
    when the first is cancelled (its function's storage deadline passed)."""
    await make_store().put("app", "k", b"v")
    store = HeldStore(make_store())
    cache = held_cache(store)
    first = asyncio.create_task(cache.get("k"))
    await store.fetched.wait()
    second = asyncio.create_task(cache.get("k"))
    await store.version_answered.wait()
    first.cancel()
    store.release.set()
    assert await second == b"v"
    assert first.cancelled() and store.gets == 1
    assert cache.cached_version("k") is not None  # the fetch finished and was cached


async def test_reload_prewarms_the_hot_keys_from_persisted_statistics(
    make_store: StoreFactory,
) -> None:
    saved = MemoryStats()
    store = make_store()
    caches = manager(store, saved)
    app = await caches.open("app")
    for i in range(40):
        await app.put(f"k{i}", bytes([i]) * 1000)
    for _ in range(5):
        for i in range(10):  # the hot ones
            await app.get(f"k{i}")
    await app.get("k30")
    await caches.release("app")
    assert set(k for k, *_ in json.loads(saved.saved["app"])["keys"]) >= {"k0", "k9", "k30"}

    await make_store().put("app", "k3", b"changed while unloaded")
    app = await caches.open("app")
    cache = caches.cache_of("app")
    assert cache is not None
    # The first read does not wait for the whole pre-warm, and is fresh.
    assert await app.get("k3") == b"changed while unloaded"
    for _ in range(100):
        if cache.statistics().prewarmed_keys >= 11:
            break
        await asyncio.sleep(0.01)
    for i in range(10):
        assert await app.get(f"k{i}") == (
            b"changed while unloaded" if i == 3 else bytes([i]) * 1000
        )
    stats = cache.statistics()
    assert stats.prewarmed_keys == 11 and stats.prewarmed_read == 10
    assert stats.hits >= 9 and stats.misses <= 1
    await caches.close()


async def test_a_read_of_a_key_being_prewarmed_waits_for_that_fetch_only(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    for i in range(3):
        await store.put("app", f"k{i}", b"v%d" % i)
    stats = AccessStats()
    cache = AppCache("app", store, capacity=MiB, bypass_bytes=MiB, stats=stats)
    cache.prewarm(["k0", "k1", "k2"])
    assert await cache.get("k1") == b"v1"
    await asyncio.sleep(0)
    fetched = cache.statistics()
    # Served from the pre-warm's fetch (a hit after the shared fetch), not a second fetch.
    assert fetched.misses <= 1 and fetched.storage_errors == 0
    await cache.close()


async def test_the_sizing_policy_resizes_loaded_caches(make_store: StoreFactory) -> None:
    caches = manager(make_store(), min_bytes=1000, max_per_app=10_000, total=12_000)
    a, b = await caches.open("a"), await caches.open("b")
    for i in range(8):
        await a.put(f"k{i}", b"x" * 1000)
        await a.get(f"k{i}")
    await b.put("k", b"x" * 10)
    await b.get("k")
    decisions = caches.rebalance()
    by_app = {d.app: d for d in decisions}
    assert by_app["a"].budget == 10_000 and by_app["a"].reason.startswith("per-app maximum")
    assert by_app["b"].budget == 1000 and by_app["b"].reason.startswith("minimum")
    assert caches.statistics()["a"].capacity == 10_000
    await caches.close()


async def test_cache_off_goes_straight_to_the_store(make_store: StoreFactory) -> None:
    caches = manager(make_store())
    direct = await caches.open("app", cached=False)
    await direct.put("k", b"v")
    assert await direct.get("k") == b"v"
    assert caches.statistics() == {}
    await caches.close()


async def test_access_statistics_outlive_the_cache_in_the_registry(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    from faasd_py.store import SqliteRegistry

    registry = SqliteRegistry(tmp_path / "registry.sqlite3")
    caches = manager(make_store())
    caches = CacheManager(caches.store, caches.settings, registry)
    app = await caches.open("app")
    await app.put("k", b"v" * 100)
    await app.get("k")
    await caches.release("app")
    await registry.close()
    reopened = SqliteRegistry(tmp_path / "registry.sqlite3")
    saved = await reopened.get_cache_stats("app")
    assert saved is not None
    stats = AccessStats.from_json(json.loads(saved))
    assert "k" in stats and stats.get("k") is not None and stats.get("k").size == 100  # type: ignore[union-attr]
    await reopened.close()
    await caches.close()


async def test_a_failed_prewarm_batch_fails_the_reads_waiting_on_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    store = open_store(redis_server.url, tmp_path)
    await store.put("app", "k", b"v")
    cache = AppCache("app", store, capacity=MiB, bypass_bytes=MiB)
    redis_server.stop()
    cache.prewarm(["k"])
    with pytest.raises(StorageUnavailable):
        await cache.get("k")
    await cache.close()
    assert cache.statistics().prewarmed_keys == 0
    await store.close()


class OnePeer:
    """The multi-host seam: every key is owned by worker "w2", which holds some of them."""

    def __init__(self, held: dict[str, tuple[int, bytes]]) -> None:
        self.held = held
        self.asked: list[tuple[str, str, int]] = []

    def owner(self, app: str, key: str) -> str | None:
        return "w2"

    async def fetch(self, owner: str, app: str, key: str, version: int) -> bytes | None:
        self.asked.append((owner, key, version))
        found = self.held.get(key)
        return found[1] if found is not None and found[0] == version else None


async def test_a_miss_asks_the_keys_owner_before_the_store(make_store: StoreFactory) -> None:
    store = make_store()
    v_a = await store.put("app", "a", b"from the store")
    v_b = await store.put("app", "b", b"from the store")
    peer = OnePeer({"a": (v_a, b"owner's copy"), "b": (v_b - 1, b"stale copy")})
    cache = AppCache("app", store, capacity=MiB, bypass_bytes=MiB, peers=peer)
    assert await cache.get("a") == b"owner's copy"  # same version: the owner's bytes will do
    assert await cache.get("b") == b"from the store"  # the owner's copy is older: the store
    assert [(k, v) for _, k, v in peer.asked] == [("a", v_a), ("b", v_b)]
