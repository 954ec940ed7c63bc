"""The dashboard's sampler: once a second, read what the gateway already counts into the
series store, and hand each tick to the browsers streaming it.

It reads, never adds: the gateway's Prometheus registry (invocations by status, the latency
histograms, cold starts, the per-app caches), the worker's pools and the keep-alive lifecycle
of each function's app. The invocation path does no work for the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.core import Metric

from faasd_py.gateway._backend import FunctionWorker
from faasd_py.gateway._metrics import _BUCKETS, GatewayMetrics
from faasd_py.spec import function_ref, split_ref
from faasd_py.store import Registry
from faasd_py.ui._series import AppReading, FunctionReading, SeriesStore

logger = logging.getLogger(__name__)

BOUNDS = (*_BUCKETS, math.inf)
INTERVAL = 1.0  # seconds between ticks
CAPACITY = 300  # ticks kept: five minutes at one a second
APPS_EVERY = 10  # ticks between reads of the registry for each function's app
STREAM_BACKLOG = 30  # ticks a slow browser may fall behind before it is let go


@dataclass
class _Counts:
    """One function's figures from the Prometheus registry."""

    invocations: int = 0
    client_errors: int = 0
    server_errors: int = 0
    buckets: dict[float, float] = field(default_factory=dict)
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
        self._metrics = metrics
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
        counts, caches = _read_registry(self._metrics.registry.collect())
        readings: dict[str, FunctionReading] = {}
        for ref, pool in pools.items():
            seen = counts.get(ref) or _Counts()
            lifecycle = self._worker.policy_statistics(ref)
            policy = None if lifecycle is None else lifecycle.policy_statistics
            readings[ref] = FunctionReading(
                invocations=seen.invocations,
                client_errors=seen.client_errors,
                server_errors=seen.server_errors,
                buckets=tuple(seen.buckets.get(b, 0.0) for b in BOUNDS),
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


def _read_registry(families: Iterable[Metric]) -> tuple[dict[str, _Counts], dict[str, AppReading]]:
    """Each function's counts and each app's cache figures from the gateway's metrics."""
    counts: dict[str, _Counts] = {}
    caches: dict[str, dict[str, float]] = {}

    def of(labels: dict[str, str]) -> _Counts:
        ref = function_ref(*split_ref(labels["function_name"]))
        found = counts.get(ref)
        if found is None:
            found = counts[ref] = _Counts()
        return found

    for family in families:
        name = family.name
        if name == "gateway_function_invocation":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    seen, code = of(sample.labels), sample.labels["code"]
                    seen.invocations += int(sample.value)
                    if code.startswith("4"):
                        seen.client_errors += int(sample.value)
                    elif code.startswith("5"):
                        seen.server_errors += int(sample.value)
        elif name == "gateway_functions_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets = of(sample.labels).buckets
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        elif name == "gateway_function_cold_start":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    of(sample.labels).cold_starts += int(sample.value)
        elif name in _CACHE_FIELDS:
            for sample in family.samples:
                app = caches.setdefault(sample.labels["app"], {})
                app[_CACHE_FIELDS[name]] = sample.value
    apps = {
        app: AppReading(
            int(values.get("hits", 0)),
            int(values.get("misses", 0)),
            values.get("bytes", 0.0),
            int(values.get("prewarm_hits", 0)),
        )
        for app, values in caches.items()
    }
    return counts, apps


# The cache series of _metrics.CACHE_SERIES that the dashboard draws, by family name.
_CACHE_FIELDS = {
    "faasd_cache_hits": "hits",
    "faasd_cache_misses": "misses",
    "faasd_cache_bytes": "bytes",
    "faasd_cache_prewarmed_read": "prewarm_hits",
}


SAMPLER = web.AppKey("ui_sampler", Sampler)


async def sampler_context(app: web.Application) -> AsyncIterator[None]:
    """Run the app's sampler while the app runs (aiohttp cleanup_ctx)."""
    task = asyncio.create_task(app[SAMPLER].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
