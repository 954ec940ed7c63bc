"""The dashboard's sampler: once a second, read what the gateway already counts into the
series store, and hand each tick to the browsers streaming it.

It reads, never adds: the series of the gateway's Prometheus metrics (invocations by status,
the latency histograms, cold starts), the worker's pools, its per-app caches and the
keep-alive lifecycle of each function's app. The invocation path does no work for the
dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aiohttp import web

from faasd_py.cache import CacheStatistics
from faasd_py.gateway._backend import FunctionWorker
from faasd_py.gateway._metrics import _BUCKETS, GatewayMetrics
from faasd_py.store import Registry
from faasd_py.ui._series import AppReading, FunctionReading, SeriesStore

logger = logging.getLogger(__name__)

BOUNDS = (*_BUCKETS, math.inf)
_NO_CALLS = tuple(0.0 for _ in BOUNDS)
INTERVAL = 1.0  # seconds between ticks
CAPACITY = 300  # ticks kept: five minutes at one a second
APPS_EVERY = 30  # ticks between reads of the registry for each function's app (~7 ms at 500)
STREAM_BACKLOG = 30  # ticks a slow browser may fall behind before it is let go


@dataclass
class _Counts:
    """One function's figures from the Prometheus registry."""

    invocations: int = 0
    client_errors: int = 0
    server_errors: int = 0
    buckets: list[float] = field(default_factory=list)  # summed over statuses
    parts: list[list[float]] = field(default_factory=list)  # each status's
    cold_starts: int = 0


class Sampler:
    """Reads the gateway's counters into `store` every INTERVAL and publishes each tick."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        worker: FunctionWorker,
        registry: Registry,
        capacity: int = CAPACITY,
        interval: float = INTERVAL,
    ) -> None:
        self.store = SeriesStore(BOUNDS, capacity)
        self.interval = interval
        self._counts = _CountReader(metrics)
        self._worker = worker
        self._registry = registry
        self._apps: dict[str, str] = {}  # function ref -> its app
        self._ticks = 0
        self._streams: set[asyncio.Queue[bytes | None]] = set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.tick()
            except Exception:  # a bad tick must not end the dashboard's series
                logger.exception("the dashboard's sampler failed a tick")
            next_at = max(next_at + self.interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def tick(self) -> None:
        if self._streams:
            await self._worker.refresh()  # a cluster's figures (in process: nothing to do)
        pools = self._worker.all_statistics()
        if self._ticks % APPS_EVERY == 0 or any(ref not in self._apps for ref in pools):
            self._apps = {s.spec.ref: s.spec.app for s in await self._registry.list_functions()}
        self._ticks += 1
        counts, caches = self._counts.read(), _read_caches(self._worker)
        readings: dict[str, FunctionReading] = {}
        for ref, pool in pools.items():
            seen = counts.get(ref) or _Counts()
            lifecycle = self._worker.policy_statistics(ref)
            policy = None if lifecycle is None else lifecycle.policy_statistics
            readings[ref] = FunctionReading(
                invocations=seen.invocations,
                client_errors=seen.client_errors,
                server_errors=seen.server_errors,
                buckets=tuple(seen.buckets) if seen.buckets else _NO_CALLS,
                cold_starts=seen.cold_starts,
                replicas=pool.replicas,
                available=pool.available,
                inflight=pool.inflight,
                queued=pool.queued,
                app=self._apps.get(ref, ref),
                loaded=None if lifecycle is None else lifecycle.loaded,
                prewarm=None if policy is None else policy.prewarm,
                keepalive=None if policy is None else policy.keepalive,
                rule=None if policy is None else policy.reason.value,
            )
        tick = self.store.record(time.time(), readings, caches)
        if self._streams:
            self._publish(event("tick", tick.to_json()))

    # --- streaming -----------------------------------------------------------------------------

    def _publish(self, data: bytes) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:  # too slow to follow: let it go (it reconnects)
                self._end(queue)

    def _end(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._streams.discard(queue)
        try:
            queue.put_nowait(None)
        except asyncio.QueueFull:  # make room for the end mark: what it missed is lost anyway
            queue.get_nowait()
            queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[bytes | None]]:
        """A queue of encoded events from the next tick on (None: the stream ends)."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_BACKLOG)
        self._streams.add(queue)
        try:
            yield queue
        finally:
            self._streams.discard(queue)

    def close_streams(self) -> None:
        for queue in list(self._streams):
            self._end(queue)


def event(kind: str, data: object) -> bytes:
    """One Server-Sent Event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _CountReader:
    """Each function's invocations by status class, latency buckets (cumulative, one per
    BOUNDS) and cold starts, read from the series GatewayMetrics binds once per function and
    status (its invocation_counts, latency_buckets and cold_start_counts): a microsecond a
    series, where rendering the registry (`collect()`) cost ~150 ms a tick at 500 functions. A
    series whose count did not move since the last read keeps its buckets from then (one read
    instead of sixteen)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._last: dict[tuple[str, int], tuple[float, list[float]]] = {}

    def read(self) -> dict[str, _Counts]:
        counts: dict[str, _Counts] = {}
        last, seen_now = self._last, {}
        for ref, status, calls in self._metrics.invocation_counts():
            key = (ref, status)
            found = counts.get(ref)
            if found is None:
                found = counts[ref] = _Counts()
            before = last.get(key)
            if before is not None and before[0] == calls:
                buckets = before[1]
            else:
                buckets = self._metrics.latency_buckets(ref, status)
            seen_now[key] = (calls, buckets)
            found.invocations += int(calls)
            if 400 <= status < 500:
                found.client_errors += int(calls)
            elif status >= 500:
                found.server_errors += int(calls)
            found.parts.append(buckets)
        self._last = seen_now
        for found in counts.values():
            parts = found.parts
            if len(parts) == 1:
                found.buckets = parts[0]
            else:
                found.buckets = [sum(b) for b in zip(*parts, strict=True)]
        for ref, cold_starts in self._metrics.cold_start_counts():
            found = counts.get(ref)
            if found is None:
                found = counts[ref] = _Counts()
            found.cold_starts = int(cold_starts)
        return counts


@runtime_checkable
class _Caches(Protocol):
    """The in-process worker of `up`, which holds the per-app caches (a cluster gateway
    holds none: its workers' /metrics show theirs)."""

    def cache_statistics(self) -> Mapping[str, CacheStatistics]: ...


def _read_caches(worker: FunctionWorker) -> dict[str, AppReading]:
    inner = getattr(worker, "worker", None)
    if not isinstance(inner, _Caches):
        return {}
    return {
        app: AppReading(stats.hits, stats.misses, float(stats.bytes_cached), stats.prewarmed_read)
        for app, stats in inner.cache_statistics().items()
    }


SAMPLER = web.AppKey("ui_sampler", Sampler)
# How long a stopping gateway waits for the sampler to end after cancelling it.
_STOP_WAIT = 2.0


async def sampler_context(app: web.Application) -> AsyncIterator[None]:
    """Run the app's sampler while the app runs (aiohttp cleanup_ctx)."""
    task = asyncio.create_task(app[SAMPLER].run())
    yield
    task.cancel()
    # Bounded: a cancel that lands inside a Redis call of the tick (a cluster's registry) was
    # seen to be swallowed by the client, and the gateway's shutdown then waited for ever.
    done, _ = await asyncio.wait({task}, timeout=_STOP_WAIT)
    if not done:
        logger.warning("the dashboard's sampler did not stop within %gs; left", _STOP_WAIT)
    elif not task.cancelled() and task.exception() is not None:
        logger.error("the dashboard's sampler failed", exc_info=task.exception())
