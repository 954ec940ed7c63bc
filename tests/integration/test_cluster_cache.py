"""The Faa$T cache of an app spread over two workers, over the real transport and a real Redis:
two WorkerHosts in this process (each with its own Worker, cache manager and store client, and
its own RpcServer on 127.0.0.1), placed through the cluster's Redis as gateways place apps.

A read on worker B of an object its owner A has read is answered by A (a peer hit, the bytes
right); after a write through either worker or straight to the store the next read anywhere has
the new bytes; with the owner dead or hanging reads still succeed from the store; an app on one
worker asks no peer. `test_figures_spread_vs_one_worker` prints the hit rate and mean latency
of reads of a spread app against a one-worker one (bench/results/cluster-cache.md has them and
the command).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faasd_py.cache import (
    AppCache,
    CacheManager,
    CacheSettings,
    CacheStatistics,
    MemoryStats,
    SizingPolicy,
    WorkerStorage,
)
from faasd_py.cluster._host import HostSettings, WorkerHost
from faasd_py.cluster._keys import ClusterKey
from faasd_py.cluster._membership import Placements
from faasd_py.cluster._peers import CachePeers, owner
from faasd_py.cluster._transport import RpcServer
from faasd_py.config import Config
from faasd_py.redis_connect import connect
from faasd_py.storage import ObjectStore, open_store
from faasd_py.worker import Worker
from tests.integration._redis import RedisServer, redis_server

__all__ = ["redis_server"]

HANG = 30.0  # only to catch hangs
LEASE = 1.5  # the hosts reconcile (and learn the placements) every LEASE / 3 seconds
KiB, MiB = 1024, 1024 * 1024


@dataclass
class Host:
    name: str
    host: WorkerHost
    manager: CacheManager

    async def cache(self, app: str) -> AppCache:
        """The app's cache here, as an instance of the app loading would open it."""
        await self.manager.open(app)
        cache = self.manager.cache_of(app)
        assert cache is not None
        return cache

    def stats(self, app: str) -> CacheStatistics:
        return self.manager.statistics()[app]


class Lab:
    """Hosts in this process sharing one Redis (cluster and store) and one cluster key."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.key = ClusterKey(secrets.token_bytes(32), "test key")
        self.redis = connect(url, timeout=5.0)
        self.placements = Placements(self.redis)
        self.hosts: list[Host] = []
        self.stores: list[ObjectStore] = []

    async def start(self, name: str, settings: CacheSettings | None = None, **config: Any) -> Host:
        cfg = Config(data_dir=self.tmp / name, port=0, storage=self.url, **config)
        store = open_store(cfg.storage, cfg.data_dir, cfg.storage_model)
        manager = CacheManager(store, settings or CacheSettings(), MemoryStats())
        storage = WorkerStorage(manager, max_value=cfg.max_body)
        worker = Worker(cfg, storage)
        host = WorkerHost(
            cfg,
            HostSettings(name, ("127.0.0.1", 0), "127.0.0.1:0", LEASE),
            worker,
            self.redis,
            self.key,
        )
        await host.start()
        self.hosts.append(Host(name, host, manager))
        return self.hosts[-1]

    def store(self) -> ObjectStore:
        """Another client of the store: a writer on some other worker."""
        self.stores.append(open_store(self.url, self.tmp))
        return self.stores[-1]

    async def place(self, app: str, *names: str) -> None:
        current = await self.placements.get(app)
        await self.placements.put(app, names, None if current is None else current.version)
        await self.until(
            lambda: all(h.host.peers.workers_of(app) == names for h in self.placed(names))
        )

    def placed(self, names: tuple[str, ...]) -> list[Host]:
        return [h for h in self.hosts if h.name in names]

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(HANG):
            while True:  # the hosts learn placements on their own ticks
                if condition():
                    return
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for h in self.hosts:
            await h.host.stop()
            await h.manager.close()
        for store in self.stores:
            await store.close()
        await self.redis.aclose()


@pytest.fixture
async def lab(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(redis_server.url, tmp_path)
    yield lab
    await lab.close()


def key_owned_by(worker: str, app: str, workers: tuple[str, ...], prefix: str = "k") -> str:
    return next(
        k for i in range(1000) if owner(f"{app}\0{(k := f'{prefix}{i}')}", workers) == worker
    )


AB = ("a", "b")


@dataclass
class Spread:
    """App "shop" placed on workers a and b, its cache open on both, and a writer of the store
    that is neither."""

    a: Host
    b: Host
    cache_a: AppCache
    cache_b: AppCache
    outside: ObjectStore


@pytest.fixture
async def shop(lab: Lab) -> Spread:
    a, b = await lab.start("a"), await lab.start("b")
    await lab.place("shop", *AB)
    return Spread(a, b, await a.cache("shop"), await b.cache("shop"), lab.store())


async def test_a_miss_on_b_is_answered_by_the_owner_a(shop: Spread) -> None:
    a, b, cache_a, cache_b, outside = shop.a, shop.b, shop.cache_a, shop.cache_b, shop.outside
    k = key_owned_by("a", "shop", AB)
    await outside.put("shop", k, b"first")

    assert await cache_a.get(k) == b"first"  # the owner reads the store and caches it
    assert await cache_b.get(k) == b"first"  # B misses and asks A: A's cache answers
    sa, sb = a.stats("shop"), b.stats("shop")
    assert (sb.peer_hits, sb.peer_misses, sb.hits) == (1, 0, 0)
    assert (sa.peer_served_hits, sa.peer_served_misses) == (1, 0)
    assert cache_b.cached_version(k) is None  # one copy per app: at its owner
    assert sb.version_checks == 1  # the check came first, as without peers

    # A key B owns: B reads it from the store and keeps it; A asks B.
    kb = key_owned_by("b", "shop", AB)
    await outside.put("shop", kb, b"b's")
    assert await cache_a.get(kb) == b"b's"  # B's cache is empty: B reads the store for A
    assert (b.stats("shop").peer_served_misses, a.stats("shop").peer_hits) == (1, 1)
    assert cache_b.cached_version(kb) is not None
    assert await cache_a.get(kb) == b"b's"
    assert (b.stats("shop").peer_served_hits, a.stats("shop").peer_hits) == (1, 2)


async def test_every_read_after_a_write_has_the_new_bytes(shop: Spread) -> None:
    a, b, cache_a, cache_b, outside = shop.a, shop.b, shop.cache_a, shop.cache_b, shop.outside
    k = key_owned_by("a", "shop", AB)
    await outside.put("shop", k, b"v1")
    assert await cache_a.get(k) == b"v1"
    assert await cache_b.get(k) == b"v1"

    await cache_b.put(k, b"v2")  # a write through the worker that does not own the key
    assert await cache_a.get(k) == b"v2"  # A's copy is older than the store: not served
    assert await cache_b.get(k) == b"v2"

    await cache_a.put(k, b"v3")  # through the owner: B's copy of v2 is stale now
    assert await cache_b.get(k) == b"v3"

    await outside.put("shop", k, b"v4")  # straight to the store: neither cache has it
    assert await cache_b.get(k) == b"v4"  # A is asked for v4, reads the store, answers
    assert await cache_a.get(k) == b"v4"  # ...and has it cached now
    assert a.stats("shop").hits >= 1

    await outside.delete("shop", k)
    assert await cache_b.get(k) is None
    assert await cache_a.get(k) is None
    # Never a stale read, and B asked A each time it had no current copy.
    assert b.stats("shop").peer_hits >= 2


async def test_reads_succeed_from_the_store_when_the_owner_is_dead(shop: Spread) -> None:
    a, b, cache_a, cache_b, outside = shop.a, shop.b, shop.cache_a, shop.cache_b, shop.outside
    keys = [key_owned_by("a", "shop", AB, f"k{i}-") for i in range(5)]
    for k in keys:
        await outside.put("shop", k, k.encode())
        assert await cache_a.get(k) == k.encode()

    # A's process is gone but its lease has not run out: B still takes A for the owner.
    await a.host._server.close()
    for k in keys:
        await outside.put("shop", k, b"new " + k.encode())
        assert await cache_b.get(k) == b"new " + k.encode()
    stats = b.stats("shop")
    assert stats.peer_hits == 0 and stats.misses == len(keys)
    assert 1 <= stats.peer_misses <= len(keys)  # after one failure A is left alone a while
    assert b.host.peers.workers_of("shop") == AB


async def test_a_hanging_owner_costs_a_bounded_wait(lab: Lab) -> None:
    hung = asyncio.Event()

    async def hang(op: str, args: dict[str, Any]) -> dict[str, Any]:
        hung.set()
        await asyncio.Event().wait()
        return {}

    server = RpcServer(hang, lab.key.mac, max_frame=MiB, name="stuck")
    await server.start("127.0.0.1", 0)
    peers = CachePeers("b", lab.key.mac, max_frame=MiB, timeout=0.2, backoff=60.0)
    peers.update({"shop": AB}, {"a": f"127.0.0.1:{server.port}", "b": "127.0.0.1:1"})
    try:
        async with asyncio.timeout(HANG):
            assert await peers.fetch("a", "shop", "k", 1) is None
            assert hung.is_set()
            calls = server.statistics().running
            assert await peers.fetch("a", "shop", "k", 1) is None  # left alone: not asked
            assert server.statistics().running == calls
    finally:
        await peers.close()
        await server.close()


async def test_an_app_on_one_worker_asks_no_peer(lab: Lab) -> None:
    a, b = await lab.start("a"), await lab.start("b")
    await lab.place("solo", "a")
    await lab.place("shop", *AB)
    cache = await a.cache("solo")
    outside = lab.store()
    for i in range(20):
        await outside.put("solo", f"k{i}", b"x")
    served = b.host._server.statistics().served
    for _ in range(2):
        for i in range(20):
            assert await cache.get(f"k{i}") == b"x"
    stats = a.stats("solo")
    assert (stats.peer_hits, stats.peer_misses) == (0, 0)
    assert (stats.misses, stats.hits) == (20, 20)
    assert stats.version_checks == 20  # a first read fetches at once, as without peers
    assert b.host._server.statistics().served == served


async def test_a_worker_leaving_moves_only_its_share(lab: Lab) -> None:
    a = await lab.start("a")
    await lab.start("b")
    await lab.start("c")
    await lab.place("shop", "a", "b", "c")
    peers_a = a.host.peers
    before = {f"k{i}": peers_a.owner("shop", f"k{i}") for i in range(300)}
    await lab.place("shop", "a", "b")
    after = {k: peers_a.owner("shop", k) for k in before}
    moved = {k for k in before if before[k] != after[k]}
    assert moved and all(before[k] == "c" for k in moved)


# --- figures -------------------------------------------------------------------------------------

OBJECTS, SIZE = 400, 16 * KiB  # a working set of 6.25 MiB
# Reads measured per app (after as many to warm up): the report uses 4000; fewer in the suite.
READS = int(os.environ.get("FAASD_CLUSTER_CACHE_READS", "1000"))
BUDGET = 4 * MiB  # each worker's cache of the app: two of them hold it, one does not
# A remote blob store; its versions kept near the workers (the Redis round trip alone).
STORE_LATENCY, VERSION_LATENCY = 0.005, 0.0


def zipf_keys(rnd: random.Random, n: int) -> list[str]:
    weights = [1 / (i + 1) ** 0.6 for i in range(OBJECTS)]
    return [f"o{i}" for i in rnd.choices(range(OBJECTS), weights, k=n)]


async def measure(caches: list[AppCache], keys: list[str]) -> list[float]:
    """Seconds of each read, the reads taking turns over `caches`."""
    seconds = []
    for i, k in enumerate(keys):
        started = time.perf_counter()
        assert await caches[i % len(caches)].get(k) == k.encode().ljust(SIZE, b".")
        seconds.append(time.perf_counter() - started)
    return seconds


async def test_figures_spread_vs_one_worker(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    policy = SizingPolicy(min_bytes=BUDGET, max_per_app=BUDGET, total=4 * BUDGET)
    settings = CacheSettings(policy=policy, prewarm=False, rebalance_every=3600.0)
    latency = {"storage_latency": STORE_LATENCY, "storage_version_latency": VERSION_LATENCY}
    a, b = await lab.start("a", settings, **latency), await lab.start("b", settings, **latency)
    outside = lab.store()
    for app in ("one", "spread", "apart"):
        for i in range(OBJECTS):
            await outside.put(app, f"o{i}", f"o{i}".encode().ljust(SIZE, b"."))
    await lab.place("one", "a")
    await lab.place("spread", *AB)
    await lab.place("apart", *AB)
    rnd = random.Random(7)
    warm, keys = zipf_keys(rnd, READS), zipf_keys(rnd, READS)
    rows = []
    setups = {"one": [a], "spread": [a, b], "apart": [a, b]}
    opened = {app: [await h.cache(app) for h in hosts] for app, hosts in setups.items()}
    for cache in opened["apart"]:  # the same two workers, each with a cache of its own
        cache.set_peers(None)
    for caches in opened.values():  # all warmed first: the measured runs see the same Redis
        await measure(caches, warm)
    for app, hosts in setups.items():
        before = [h.stats(app) for h in hosts]
        seconds = await measure(opened[app], keys)
        after = [h.stats(app) for h in hosts]
        hits = sum(x.hits - y.hits for x, y in zip(after, before, strict=True))
        peer = sum(x.peer_hits - y.peer_hits for x, y in zip(after, before, strict=True))
        served = sum(
            x.peer_served_hits - y.peer_served_hits for x, y in zip(after, before, strict=True)
        )
        cached = sum(x.bytes_cached for x in after)
        rows.append((app, len(hosts), hits, peer, served, cached, seconds))
    spread = rows[1]
    assert spread[3] > 0 and spread[4] > 0  # the owners answered
    with capsys.disabled():
        print(
            f"\n{READS} reads of {OBJECTS} objects of {SIZE // KiB} KiB (Zipf 0.6), cache budget "
            f"{BUDGET // MiB} MiB per worker, store latency {STORE_LATENCY * 1000:g} ms "
            f"(version check {VERSION_LATENCY * 1000:g} ms), Redis on 127.0.0.1"
        )
        print(
            "| app | workers | local hits | peer hits (from owner's cache) | hit rate "
            "| cached MiB | mean ms | p50 ms | p99 ms |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for app, n, hits, peer, served, cached, seconds in rows:
            ordered = sorted(seconds)
            mean, p50 = statistics.fmean(seconds), ordered[len(ordered) // 2]
            print(
                f"| {app} | {n} | {hits / READS:.1%} | {peer / READS:.1%} ({served / READS:.1%}) "
                f"| {(hits + served) / READS:.1%} | {cached / MiB:.2f} "
                f"| {mean * 1000:.2f} | {p50 * 1000:.2f} "
                f"| {ordered[int(len(ordered) * 0.99)] * 1000:.2f} |"
            )
