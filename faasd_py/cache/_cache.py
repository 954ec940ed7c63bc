"""One app's cache in a worker: the async driver of the pure LRU and access statistics.

Consistency follows the Faa$T authors' open code. Every read starts with the store's current
version of the key (one cheap round trip, made after the read began), and only bytes cached at
exactly that version are served; otherwise the object is fetched (bytes and version in one atomic
read) and cached. So a read never returns bytes older than a write that finished before the read
started, whoever wrote them, and when the store cannot be reached the read fails rather than
serving what the cache holds. Writes go to the store first, then into the cache.

Across workers (an app placed on several): each key has an owner among the app's workers
(`Peers`, by consistent hashing). A read of a key this worker does not own, after the version
check and a miss here, asks the owner for exactly that version; the owner answers from its cache,
or reads the store, caches it there and answers (`serve_peer`); an owner that has nothing as
fresh, is down or is slow (its wait is bounded by the `Peers`) leaves the read to the store. A
peer never makes a read fail, and never skips the version check. An app on one worker (no owner
elsewhere) reads exactly as without peers.

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
    asks the key's owner before the store (faasd_py.cluster._peers implements it)."""

    def owner(self, app: str, key: str) -> str | None:
        """The worker that owns `key` of `app`, or None when it is this one."""
        ...

    async def fetch(self, owner: str, app: str, key: str, version: int) -> bytes | None:
        """The owner's bytes of `key` at `version` (or newer), or None (then the store); within
        a bounded wait. An exception counts as None."""
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
    # Of an app spread over workers: reads that missed here and that the key's owner answered
    # (not counted in `misses`), owners asked in vain (then the store: counted in `misses`),
    # and this worker's answers as the owner to the others: from its cache, or from the store.
    peer_hits: int = 0
    peer_misses: int = 0
    peer_served_hits: int = 0
    peer_served_misses: int = 0

    @property
    def reads(self) -> int:
        return self.hits + self.peer_hits + self.misses + self.bypassed_reads

    @property
    def hit_rate(self) -> float:
        """Reads served from the app's cache, here or at the key's owner."""
        reads = self.reads
        return (self.hits + self.peer_hits) / reads if reads else 0.0

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
        # Those of them that ask another worker: an owner's answer to a peer never waits on
        # one (two workers that disagree on the owner would wait on each other).
        self._relaying: set[asyncio.Future[Versioned | None]] = set()
        self._prewarm_task: asyncio.Task[None] | None = None
        # Keys the pre-warm set out to fetch, those it did fetch, and the planned ones read since.
        self._prewarm_planned: set[str] = set()
        self._prewarmed: set[str] = set()
        self._prewarm_touched: set[str] = set()
        self._hits = self._misses = self._bypassed_reads = self._writes = 0
        self._checks = 0
        self._check_total = self._check_max = 0.0
        self._errors = 0
        self._peer_hits = self._peer_misses = 0
        self._served_hits = self._served_misses = 0

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
        owner = None if self._peers is None else self._peers.owner(self.app, key)
        if owner is None and key not in self._lru and key not in self._fetches:
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
            fetched = await self._fetch(key, version, owner)
        if fetched is None:  # absent, or deleted between the check and the fetch
            self._misses += 1
            return None
        if isinstance(fetched, _Relayed):
            self._peer_hits += 1
        elif self._lru.bypasses(len(fetched.data)):
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

    async def _fetch(
        self, key: str, version: int, owner: str | None = None, *, relayed: bool = True
    ) -> Versioned | None:
        """Bytes of `key` at `version` or newer: a fetch already under way if it will do (with
        `relayed` False, not one that asks another worker)."""
        shared = self._fetches.get(key)
        if shared is not None and (relayed or shared not in self._relaying):
            result = await asyncio.shield(shared)
            # None or an older version: that fetch read the store before the write this reader
            # saw; only a fetch of its own will do.
            if result is not None and result.version >= version:
                return result
        return await asyncio.shield(self._start_fetch(key, version, owner))

    def _start_fetch(
        self, key: str, version: int | None, owner: str | None = None
    ) -> asyncio.Task[Versioned | None]:
        """A fetch other readers may join: its readers await it shielded, so one that gives up
        (its caller's deadline) does not cancel it for the rest."""
        task = asyncio.create_task(self._fetch_from_source(key, version, owner))
        self._fetches[key] = task
        if owner is not None:
            self._relaying.add(task)

        def done(t: asyncio.Task[Versioned | None]) -> None:
            if self._fetches.get(key) is t:
                del self._fetches[key]
            self._relaying.discard(t)
            if not t.cancelled() and isinstance(t.exception(), FaasdError):
                self._errors += 1

        task.add_done_callback(done)
        return task

    async def _fetch_from_source(
        self, key: str, version: int | None, owner: str | None
    ) -> Versioned | None:
        if owner is not None and version is not None and not self._known_too_large(key):
            data = await self._ask(owner, key, version)
            if data is not None:
                # Not cached here as well: one copy per app across workers, at its owner.
                return _Relayed(data, version)
            self._peer_misses += 1
        fetched = await self.store.get(self.app, key)
        if fetched is not None:
            self._lru.insert(key, fetched.version, fetched.data)
        return fetched

    async def _ask(self, owner: str, key: str, version: int) -> bytes | None:
        """The owner's answer; None for anything else: a read never fails because of a peer."""
        assert self._peers is not None
        try:
            return await self._peers.fetch(owner, self.app, key, version)
        except Exception as exc:
            logger.debug("app %s: owner %s of %r did not answer: %s", self.app, owner, key, exc)
            return None

    def _known_too_large(self, key: str) -> bool:
        """Its owner would not cache it either: no use asking."""
        stats = self.access.get(key)
        return stats is not None and self._lru.bypasses(stats.size)

    async def serve_peer(self, key: str, version: int) -> bytes | None:
        """For another worker of the app that found `key` at `version` in the store and asks
        this one, the key's owner: the bytes at `version` or newer, from this cache, else from
        the store (cached here then). None when the store has nothing that fresh, or the object
        is too large to cache (the asking worker reads it itself). Never asks another worker."""
        self.access.record(key, self._clock())
        data = self._lru.lookup(key, version)
        if data is not None:
            self._served_hits += 1
            self.access.note_size(key, len(data))
            return data
        self._served_misses += 1
        fetched = await self._fetch(key, version, relayed=False)
        if fetched is None or fetched.version < version:
            return None
        self.access.note_size(key, len(fetched.data))
        return None if self._lru.bypasses(len(fetched.data)) else fetched.data

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
            if self._peers is not None and self._peers.owner(self.app, key) is not None:
                continue  # another worker's share: read from it when needed
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

    def set_peers(self, peers: Peers | None) -> None:
        """The app's other workers (None: this one alone); reads after this use them."""
        self._peers = peers

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
            peer_hits=self._peer_hits,
            peer_misses=self._peer_misses,
            peer_served_hits=self._served_hits,
            peer_served_misses=self._served_misses,
        )


class _Relayed(Versioned):
    """Bytes the key's owner answered with (not the store): counted as a peer hit."""

    __slots__ = ()
