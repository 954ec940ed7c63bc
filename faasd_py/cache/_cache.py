"""One app's cache in a worker: the async driver of the pure LRU and access statistics.

Consistency follows the Faa$T authors' open code. Every read starts with the store's current
version of the key (one cheap round trip, made after the read began), and only bytes cached at
exactly that version are served; otherwise the object is fetched (bytes and version in one atomic
read) and cached. So a read never returns bytes older than a write that finished before the read
started, whoever wrote them, and when the store cannot be reached the read fails rather than
serving what the cache holds. Writes go to the store first, then into the cache.

Concurrent misses of one key share one fetch when that fetch's version is at least the one the
reader checked (versions only grow, so it is at least as fresh); a pre-warm fetch is shared the
same way, so a read of a key being pre-warmed waits for that fetch alone.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faasd_py.cache._lru import PinnedLRU
from faasd_py.cache._policy import AccessStats
from faasd_py.errors import FaasdError, StorageQuotaExceeded
from faasd_py.storage import ObjectStore, Quota, Versioned

logger = logging.getLogger(__name__)

# A pre-warm fetches in pipelined batches (one store round trip each), best keys first, several
# batches at a time. Batches start small and double (keys and bytes) up to a cap: the hottest
# keys land after one round trip and little transfer, not after the whole pre-warm.
PREWARM_FIRST_BATCH_KEYS = 8
PREWARM_BATCH_KEYS = 64
PREWARM_FIRST_BATCH_BYTES = 512 * 1024
PREWARM_BATCH_BYTES = 8 * 1024 * 1024
PREWARM_CONCURRENCY = 8


class Peers(Protocol):
    """The multi-host seam: an app's keys spread over workers by consistent hashing, and a miss
    asks the key's owner before the store. Nothing implements it yet (one worker per host);
    the multi-host issue will."""

    def owner(self, app: str, key: str) -> str | None:
        """The worker that owns `key` of `app`, or None when it is this one."""
        ...

    async def fetch(self, owner: str, app: str, key: str, version: int) -> bytes | None:
        """The owner's cached bytes of `key` at exactly `version`, or None (then the store)."""
        ...


@dataclass(frozen=True)
class CacheStatistics:
    app: str
    hits: int
    misses: int
    # Reads of objects too large to cache: served from the store each time.
    bypassed_reads: int
    writes: int
    version_checks: int
    version_check_seconds_total: float
    version_check_seconds_max: float
    bytes_cached: int
    entries: int
    capacity: int
    evictions: int
    prewarmed_keys: int
    prewarmed_read: int
    storage_errors: int

    @property
    def hit_rate(self) -> float:
        reads = self.hits + self.misses + self.bypassed_reads
        return self.hits / reads if reads else 0.0

    @property
    def version_check_seconds_mean(self) -> float:
        checks = self.version_checks
        return self.version_check_seconds_total / checks if checks else 0.0


class AppCache:
    def __init__(
        self,
        app: str,
        store: ObjectStore,
        *,
        capacity: int,
        bypass_bytes: int,
        stats: AccessStats | None = None,
        clock: Callable[[], float] = time.time,
        peers: Peers | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.access = stats if stats is not None else AccessStats()
        self._lru = PinnedLRU(capacity, bypass_bytes)
        self._clock = clock
        self._peers = peers
        # Fetches under way, per key: a reader's (a task) or a pre-warm batch's (a future).
        self._fetches: dict[str, asyncio.Future[Versioned | None]] = {}
        self._prewarm_task: asyncio.Task[None] | None = None
        # Keys the pre-warm set out to fetch, those it did fetch, and the planned ones read since.
        self._prewarm_planned: set[str] = set()
        self._prewarmed: set[str] = set()
        self._prewarm_touched: set[str] = set()
        self._hits = self._misses = self._bypassed_reads = self._writes = 0
        self._checks = 0
        self._check_total = self._check_max = 0.0
        self._errors = 0

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        async with self.lease(key) as data:
            return data

    @contextlib.asynccontextmanager
    async def lease(self, key: str) -> AsyncIterator[bytes | None]:
        """The current bytes of `key` (None if absent), pinned in the cache until the block ends:
        the worker holds a lease while it sends the bytes to the instance."""
        data = await self._read(key)
        pinned = data is not None and self._lru.pin(key)
        try:
            yield data
        finally:
            if pinned:
                self._lru.unpin(key)

    async def _read(self, key: str) -> bytes | None:
        self.access.record(key, self._clock())
        if key in self._prewarm_planned:
            self._prewarm_touched.add(key)
        if self._peers is None and key not in self._lru and key not in self._fetches:
            # Nothing cached, no fetch under way: a version check could only answer "fetch".
            # The fetch itself (bytes and version together, read after this read began) is as
            # fresh, and a miss costs one round trip, as it would without a cache.
            fetched = await asyncio.shield(self._start_fetch(key, None))
        else:
            version = await self._checked_version(key)
            if version is None:
                self._lru.discard(key)
                self._misses += 1
                return None
            data = self._lru.lookup(key, version)
            if data is not None:
                self._hits += 1
                self.access.note_size(key, len(data))
                return data
            fetched = await self._fetch(key, version)
        if fetched is None:  # absent, or deleted between the check and the fetch
            self._misses += 1
            return None
        if self._lru.bypasses(len(fetched.data)):
            self._bypassed_reads += 1
        else:
            self._misses += 1
        self.access.note_size(key, len(fetched.data))
        return fetched.data

    async def _checked_version(self, key: str) -> int | None:
        start = time.perf_counter()
        try:
            version = await self.store.version(self.app, key)
        except FaasdError:
            self._errors += 1
            raise
        elapsed = time.perf_counter() - start
        self._checks += 1
        self._check_total += elapsed
        self._check_max = max(self._check_max, elapsed)
        return version

    async def _fetch(self, key: str, version: int) -> Versioned | None:
        """Bytes of `key` at `version` or newer: a fetch already under way if it will do."""
        shared = self._fetches.get(key)
        if shared is not None:
            result = await asyncio.shield(shared)
            # None or an older version: that fetch read the store before the write this reader
            # saw; only a fetch of its own will do.
            if result is not None and result.version >= version:
                return result
        return await asyncio.shield(self._start_fetch(key, version))

    def _start_fetch(self, key: str, version: int | None) -> asyncio.Task[Versioned | None]:
        """A fetch other readers may join: its readers await it shielded, so one that gives up
        (its caller's deadline) does not cancel it for the rest."""
        task = asyncio.create_task(self._fetch_from_source(key, version))
        self._fetches[key] = task

        def done(t: asyncio.Task[Versioned | None]) -> None:
            if self._fetches.get(key) is t:
                del self._fetches[key]
            if not t.cancelled() and isinstance(t.exception(), FaasdError):
                self._errors += 1

        task.add_done_callback(done)
        return task

    async def _fetch_from_source(self, key: str, version: int | None) -> Versioned | None:
        if self._peers is not None and version is not None:
            owner = self._peers.owner(self.app, key)
            if owner is not None:
                data = await self._peers.fetch(owner, self.app, key, version)
                if data is not None:
                    # Not cached here as well: one copy per app across workers, at its owner.
                    return Versioned(data, version)
        fetched = await self.store.get(self.app, key)
        if fetched is not None:
            self._lru.insert(key, fetched.version, fetched.data)
        return fetched

    # -- writes and the rest -------------------------------------------------------------------

    async def put(self, key: str, data: bytes, quota: Quota | None = None) -> int:
        # Whatever the outcome, what is cached under the key may now be older than the store.
        self._lru.discard(key)
        try:
            version = await self.store.put(self.app, key, data, quota)
        except StorageQuotaExceeded:
            raise  # the store answered: refused, not failed
        except FaasdError:
            self._errors += 1
            raise
        self._writes += 1
        self._lru.insert(key, version, data)
        self.access.note_size(key, len(data))
        return version

    async def delete(self, key: str) -> bool:
        self._lru.discard(key)
        try:
            removed = await self.store.delete(self.app, key)
        except FaasdError:
            self._errors += 1
            raise
        self.access.forget(key)
        return removed

    async def exists(self, key: str) -> bool:
        return await self._checked_version(key) is not None

    async def list(self, prefix: str = "") -> list[str]:
        try:
            return await self.store.list(self.app, prefix)
        except FaasdError:
            self._errors += 1
            raise

    def resize(self, capacity: int) -> tuple[str, ...]:
        return self._lru.resize(capacity)

    @property
    def capacity(self) -> int:
        return self._lru.capacity

    def cached_version(self, key: str) -> int | None:
        return self._lru.version_of(key)

    # -- pre-warm ------------------------------------------------------------------------------

    def prewarm(self, keys: Sequence[str]) -> asyncio.Task[None]:
        """Fetch `keys` (best first) in the background; a read of one of them waits for that
        key's batch, not for the whole pre-warm."""
        loop = asyncio.get_running_loop()
        batches: builtins.list[builtins.list[str]] = [[]]
        batch_bytes = 0
        max_keys, max_bytes = PREWARM_FIRST_BATCH_KEYS, PREWARM_FIRST_BATCH_BYTES
        for key in keys:
            if key in self._fetches or key in self._lru:
                continue
            size = getattr(self.access.get(key), "size", 0)
            if batches[-1] and (len(batches[-1]) >= max_keys or batch_bytes + size > max_bytes):
                batches.append([])
                batch_bytes = 0
                max_keys = min(2 * max_keys, PREWARM_BATCH_KEYS)
                max_bytes = min(2 * max_bytes, PREWARM_BATCH_BYTES)
            batches[-1].append(key)
            batch_bytes += size
            self._prewarm_planned.add(key)
            future: asyncio.Future[Versioned | None] = loop.create_future()
            # Retrieved here, so a failed batch nobody read is not reported as an error left
            # unseen; readers waiting on it still get the exception.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._fetches[key] = future
        self._prewarm_task = asyncio.create_task(self._prewarm([b for b in batches if b]))
        return self._prewarm_task

    async def _prewarm(self, batches: builtins.list[builtins.list[str]]) -> None:
        gate = asyncio.Semaphore(PREWARM_CONCURRENCY)

        async def one(batch: builtins.list[str]) -> None:
            try:
                async with gate:
                    found = await self.store.get_many(self.app, batch)
            except BaseException as exc:
                for key in batch:
                    self._settle(key, None, exc)
                raise
            for key, obj in zip(batch, found, strict=True):
                if obj is not None and self._lru.insert(key, obj.version, obj.data).cached:
                    self._prewarmed.add(key)
                self._settle(key, obj, None)

        results = await asyncio.gather(*(one(b) for b in batches), return_exceptions=True)
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            self._errors += len(failed)
            logger.warning(
                "pre-warm of app %s: %d of %d batches failed: %s",
                self.app,
                len(failed),
                len(batches),
                failed[0],
            )

    def _settle(self, key: str, obj: Versioned | None, exc: BaseException | None) -> None:
        future = self._fetches.get(key)
        if future is None or future.done() or isinstance(future, asyncio.Task):
            return
        del self._fetches[key]
        if exc is None:
            future.set_result(obj)
        elif isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)

    async def close(self) -> None:
        tasks: builtins.list[asyncio.Future[Any]] = list(self._fetches.values())
        if self._prewarm_task is not None:
            tasks.append(self._prewarm_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def statistics(self) -> CacheStatistics:
        lru = self._lru.statistics()
        return CacheStatistics(
            app=self.app,
            hits=self._hits,
            misses=self._misses,
            bypassed_reads=self._bypassed_reads,
            writes=self._writes,
            version_checks=self._checks,
            version_check_seconds_total=self._check_total,
            version_check_seconds_max=self._check_max,
            bytes_cached=lru.bytes,
            entries=lru.entries,
            capacity=lru.capacity,
            evictions=lru.evictions,
            prewarmed_keys=len(self._prewarmed),
            prewarmed_read=len(self._prewarm_touched & self._prewarmed),
            storage_errors=self._errors,
        )
