"""The worker's caches: one per loaded app, their lifecycle, their sizes and their statistics.

An app's cache is created when its first instance loads (`open`) and dropped when its last one
unloads (`release`); its access statistics are saved (to the registry) when it is dropped and
every `persist_every` seconds, and loaded again when the app comes back, to pre-warm the new
cache with the keys most likely to be read, within the budget the sizing policy gives it. The
pre-warm runs in the background: the first invocation does not wait for it.

The sizing policy (pure) runs on every load and unload and every `rebalance_every` seconds;
its decisions resize the caches and are kept for reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from faasd_py.cache._cache import AppCache, CacheStatistics, Peers
from faasd_py.cache._policy import AccessStats, Decision, Demand, SizingPolicy, prewarm_plan
from faasd_py.errors import FaasdError
from faasd_py.storage import ObjectStore, Quota

logger = logging.getLogger(__name__)


class StatsStore(Protocol):
    """Where access statistics outlive their cache: the registry."""

    async def get_cache_stats(self, app: str) -> str | None: ...

    async def put_cache_stats(self, app: str, stats: str) -> None: ...


class MemoryStats:
    """A StatsStore in memory: statistics outlive a dropped cache but not the process (a worker
    with no registry, the benchmarks, the tests)."""

    def __init__(self) -> None:
        self.saved: dict[str, str] = {}

    async def get_cache_stats(self, app: str) -> str | None:
        return self.saved.get(app)

    async def put_cache_stats(self, app: str, stats: str) -> None:
        self.saved[app] = stats


class AppStorage(Protocol):
    """What an instance's `context.storage` calls reach in the worker: a cache or the store."""

    @property
    def app(self) -> str: ...

    async def get(self, key: str) -> bytes | None: ...

    def lease(self, key: str) -> contextlib.AbstractAsyncContextManager[bytes | None]: ...

    async def put(self, key: str, data: bytes, quota: Quota | None = None) -> int: ...

    async def delete(self, key: str) -> bool: ...

    async def exists(self, key: str) -> bool: ...

    async def list(self, prefix: str = "") -> list[str]: ...


class DirectStorage:
    """An app's storage without a cache (`--cache off`, or the function's annotation)."""

    def __init__(self, app: str, store: ObjectStore) -> None:
        self.app = app
        self.store = store

    async def get(self, key: str) -> bytes | None:
        found = await self.store.get(self.app, key)
        return None if found is None else found.data

    @contextlib.asynccontextmanager
    async def lease(self, key: str) -> AsyncIterator[bytes | None]:
        yield await self.get(key)

    async def put(self, key: str, data: bytes, quota: Quota | None = None) -> int:
        return await self.store.put(self.app, key, data, quota)

    async def delete(self, key: str) -> bool:
        return await self.store.delete(self.app, key)

    async def exists(self, key: str) -> bool:
        return await self.store.exists(self.app, key)

    async def list(self, prefix: str = "") -> list[str]:
        return await self.store.list(self.app, prefix)


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    policy: SizingPolicy = field(default_factory=SizingPolicy)
    # Objects above this bypass the cache (the 2020 Azure blob trace's p99 is 1.5 MB).
    bypass_bytes: int = 16 * 1024 * 1024
    # Reads within this window make up an app's working set.
    window: float = 300.0
    prewarm: bool = True
    stats_max_keys: int = 10_000
    half_life: float = 600.0
    # Cheap (one pass over each app's statistics); often enough to follow a warming app.
    rebalance_every: float = 1.0
    persist_every: float = 60.0


@dataclass
class _Loaded:
    cache: AppCache
    users: int


class CacheManager:
    def __init__(
        self,
        store: ObjectStore,
        settings: CacheSettings | None = None,
        stats_store: StatsStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        peers: Peers | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or CacheSettings()
        self._stats_store = stats_store
        self._clock = clock
        self._peers = peers
        self._apps: dict[str, _Loaded] = {}
        self._decisions: dict[str, Decision] = {}
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._last_persist = 0.0

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self, app: str, *, cached: bool | None = None) -> AppStorage:
        """Storage for an instance of `app` that is loading; `release(app)` when it unloads.
        `cached`: the function's own choice (its annotation), else the worker's (--cache)."""
        if not (self.settings.enabled if cached is None else cached):
            return DirectStorage(app, self.store)
        async with self._lock:
            loaded = self._apps.get(app)
            if loaded is not None:
                loaded.users += 1
                return loaded.cache
            stats = await self._load_stats(app)
            cache = AppCache(
                app,
                self.store,
                capacity=self.settings.policy.min_bytes,
                bypass_bytes=self.settings.bypass_bytes,
                stats=stats,
                clock=self._clock,
                peers=self._peers,
            )
            self._apps[app] = _Loaded(cache, 1)
            self.rebalance()
            if self.settings.prewarm and len(stats):
                plan = prewarm_plan(
                    stats.ranked(self._clock()), cache.capacity, self.settings.bypass_bytes
                )
                if plan:
                    cache.prewarm([entry.key for entry in plan])
            if self._ticker is None:
                self._ticker = asyncio.create_task(self._tick())
            return cache

    async def release(self, app: str) -> None:
        async with self._lock:
            loaded = self._apps.get(app)
            if loaded is None:
                return
            loaded.users -= 1
            if loaded.users > 0:
                return
            del self._apps[app]
            self._decisions.pop(app, None)
            await loaded.cache.close()
            await self._save_stats(loaded.cache)
            self.rebalance()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        async with self._lock:
            for loaded in self._apps.values():
                await loaded.cache.close()
                await self._save_stats(loaded.cache)
            self._apps.clear()
        await self.store.close()

    # -- sizing and statistics -----------------------------------------------------------------

    def rebalance(self) -> list[Decision]:
        """Run the sizing policy over the loaded apps and resize their caches."""
        if not self._apps:
            return []
        demands = []
        for app, loaded in self._apps.items():
            # Measured from the app's last read, so that a reloaded app's working set is the
            # one it had when it was last busy rather than nothing.
            ws = loaded.cache.access.working_set(
                loaded.cache.access.latest() or self._clock(), self.settings.window
            )
            demands.append(Demand(app, ws.bytes, ws.largest))
        decisions = self.settings.policy.decide(demands)
        for decision in decisions:
            cache = self._apps[decision.app].cache
            previous = self._decisions.get(decision.app)
            if previous is None or previous.budget != decision.budget:
                logger.info(
                    "cache of app %s: %d bytes (%s)", decision.app, decision.budget, decision.reason
                )
            cache.resize(decision.budget)
            self._decisions[decision.app] = decision
        return decisions

    def set_peers(self, peers: Peers | None) -> None:
        """The other workers of apps spread over several (a cluster's worker host sets it once
        it serves them); the caches loaded now and later ask them."""
        self._peers = peers
        for loaded in self._apps.values():
            loaded.cache.set_peers(peers)

    def decisions(self) -> dict[str, Decision]:
        return dict(self._decisions)

    def statistics(self) -> dict[str, CacheStatistics]:
        return {app: loaded.cache.statistics() for app, loaded in self._apps.items()}

    def cache_of(self, app: str) -> AppCache | None:
        loaded = self._apps.get(app)
        return None if loaded is None else loaded.cache

    async def persist(self) -> None:
        for loaded in list(self._apps.values()):
            await self._save_stats(loaded.cache)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rebalance_every)
            self.rebalance()
            now = self._clock()
            if now - self._last_persist >= self.settings.persist_every:
                self._last_persist = now
                await self.persist()

    async def _load_stats(self, app: str) -> AccessStats:
        fresh = AccessStats(self.settings.stats_max_keys, self.settings.half_life)
        if self._stats_store is None:
            return fresh
        try:
            saved = await self._stats_store.get_cache_stats(app)
            return fresh if saved is None else AccessStats.from_json(json.loads(saved))
        except (ValueError, FaasdError) as exc:
            logger.warning("access statistics of app %s unreadable, starting afresh: %s", app, exc)
            return fresh

    async def _save_stats(self, cache: AppCache) -> None:
        if self._stats_store is None:
            return
        try:
            await self._stats_store.put_cache_stats(cache.app, json.dumps(cache.access.to_json()))
        except FaasdError as exc:
            logger.warning("cannot save access statistics of app %s: %s", cache.app, exc)
