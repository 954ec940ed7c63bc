"""The Faa$T tier: one cache per app in the worker, over a backing store (faasd_py.storage).

Pure cores: `PinnedLRU` (eviction that spares pinned objects, bypass of large ones),
`AccessStats` and `prewarm_plan` (what to fetch on reload), `SizingPolicy` (each app's budget).
Async drivers: `AppCache` (one app) and `CacheManager` (the worker's caches, their lifecycle,
sizing and the persisted statistics).
"""

from __future__ import annotations

from faasd_py.cache._bound import InflightBound, InflightStatistics
from faasd_py.cache._cache import AppCache, CacheStatistics, Peers
from faasd_py.cache._lru import Insertion, LRUStatistics, PinnedLRU
from faasd_py.cache._manager import (
    AppStorage,
    CacheManager,
    CacheSettings,
    DirectStorage,
    MemoryStats,
    StatsStore,
)
from faasd_py.cache._policy import (
    AccessStats,
    Decision,
    Demand,
    Ranked,
    SizingPolicy,
    WorkingSet,
    prewarm_plan,
)
from faasd_py.cache._service import (
    ANNOTATION_CACHE,
    StorageLimits,
    StorageService,
    StorageStatistics,
    WorkerStorage,
    answer_storage,
)

__all__ = [
    "ANNOTATION_CACHE",
    "AccessStats",
    "AppCache",
    "AppStorage",
    "CacheManager",
    "CacheSettings",
    "CacheStatistics",
    "Decision",
    "Demand",
    "DirectStorage",
    "InflightBound",
    "InflightStatistics",
    "Insertion",
    "LRUStatistics",
    "MemoryStats",
    "Peers",
    "PinnedLRU",
    "Ranked",
    "SizingPolicy",
    "StatsStore",
    "StorageLimits",
    "StorageService",
    "StorageStatistics",
    "WorkerStorage",
    "WorkingSet",
    "answer_storage",
    "prewarm_plan",
]
