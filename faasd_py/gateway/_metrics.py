"""Prometheus metrics under OpenFaaS's names, plus cold starts, the per-app caches and the
keep-alive policy (pre-warm loads and hits, instance-seconds, decisions by rule)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faasd_py.queue import QueueStatistics, QueueUnavailable
from faasd_py.spec import qualified_name
from faasd_py.worker import LifecycleStatistics, PoolStatistics

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def metric_name(ref: str) -> str:
    """OpenFaaS labels series by "<function>.<namespace>"."""
    return qualified_name(ref)


class GatewayMetrics:
    def __init__(self, pools: Callable[[], dict[str, PoolStatistics]]) -> None:
        # OpenFaaS exposes no *_created series; neither do we.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._invocations = Counter(
            "gateway_function_invocation",
            "Invocations by function and status code",
            ["function_name", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "gateway_functions_seconds",
            "Invocation latency at the gateway",
            ["function_name", "code"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._cold_starts = Counter(
            "gateway_function_cold_start",
            "Invocations that waited for a new instance",
            ["function_name"],
            registry=self.registry,
        )
        self._cold_start_seconds = Histogram(
            "gateway_function_cold_start_seconds",
            "Time invocations waited for a new instance",
            ["function_name"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(pools))
        self._queue: QueueSnapshot | None = None
        # The series of each (function, status) and each function's cold-start series, bound
        # once: `.labels()` is a lock, a tuple of strings and a dict lookup on every call.
        self._bound: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._bound_cold: dict[str, tuple[Counter, Histogram]] = {}

    def observe(
        self, ref: str, status: int, seconds: float, cold_start_seconds: float = 0.0
    ) -> None:
        """One invocation of function `ref` answered `status` after `seconds`, of which it
        waited `cold_start_seconds` for a new instance."""
        bound = self._bound.get((ref, status))
        if bound is None:
            bound = self._bind(ref, status)
        bound[0].inc()
        bound[1].observe(seconds)
        if cold_start_seconds > 0:
            cold = self._bound_cold.get(ref)
            if cold is None:
                name = metric_name(ref)
                cold = self._cold_starts.labels(name), self._cold_start_seconds.labels(name)
                self._bound_cold[ref] = cold
            cold[0].inc()
            cold[1].observe(cold_start_seconds)

    def _bind(self, ref: str, status: int) -> tuple[Counter, Histogram]:
        name, code = metric_name(ref), str(status)
        bound = self._invocations.labels(name, code), self._seconds.labels(name, code)
        self._bound[(ref, status)] = bound
        return bound

    # --- reading the bound series (the dashboard's sampler, faasd_py.ui) ----------------------
    # Straight from each series' value, a microsecond apiece, where rendering the registry
    # (collect()) costs ~150 ms with 500 functions. prometheus_client keeps no public reader of
    # a child's value: its `_value` and `_buckets` are read here, in the module that owns the
    # series, and nowhere else.

    def invocation_counts(self) -> list[tuple[str, int, float]]:
        """(function, status, invocations) of every (function, status) answered so far."""
        return [(ref, status, c._value.get()) for (ref, status), (c, _) in self._bound.items()]

    def latency_buckets(self, ref: str, status: int) -> list[float]:
        """The cumulative counts of the latency histogram's buckets (one per _BUCKETS and +Inf)
        of `ref`'s invocations answered `status`; empty if there were none."""
        bound = self._bound.get((ref, status))
        if bound is None:
            return []
        buckets, running = [], 0.0  # each bucket keeps its own count
        for bucket in bound[1]._buckets:
            running += bucket.get()
            buckets.append(running)
        return buckets

    def cold_start_counts(self) -> list[tuple[str, float]]:
        """(function, cold starts) of every function that had one."""
        return [(ref, counter._value.get()) for ref, (counter, _) in self._bound_cold.items()]

    def add_apps(self, apps: Callable[[], Mapping[str, LifecycleStatistics]]) -> None:
        """Expose the keep-alive policy's per-app state and decisions (faasd_py.worker)."""
        self.registry.register(AppCollector(apps))

    def add_caches(self, caches: Callable[[], Mapping[str, object]]) -> None:
        """Expose the worker's per-app cache statistics (faasd_py.cache) too."""
        self.registry.register(SeriesCollector(caches, CACHE_SERIES))

    def add_storage(self, apps: Callable[[], Mapping[str, object]]) -> None:
        """Expose each app's use of the store and its storage calls in flight (faasd_py.cache)."""
        self.registry.register(SeriesCollector(apps, STORAGE_SERIES))

    def add_host(self, name: str, read: Callable[[], object]) -> None:
        """Expose one process-wide statistics object: `name` is a key of HOST_SERIES ("logs",
        "admission", "connections")."""
        self.registry.register(SeriesCollector(lambda: {"": read()}, HOST_SERIES[name], None))

    def add_workers(self, read: Callable[[], Mapping[str, object]]) -> None:
        """Expose a cluster's workers (faasd_py.cluster's WorkerGauges), labelled worker."""
        self.registry.register(SeriesCollector(read, WORKER_SERIES, "worker"))

    def add_queue(self, queue: QueueSnapshot, callbacks: Callable[[], Mapping[str, int]]) -> None:
        """Expose the async queue of each function (as `queue` last read it) and the callbacks
        sent, by result ("delivered", "failed")."""
        self._queue = queue
        self.registry.register(
            SeriesCollector(
                lambda: {metric_name(ref): stats for ref, stats in queue.statistics.items()},
                QUEUE_SERIES,
                "function_name",
            )
        )
        self.registry.register(_QueueCollector(queue, callbacks))

    async def refresh(self) -> None:
        """Read what the collectors cannot read without awaiting (the queue's figures)."""
        if self._queue is not None:
            await self._queue.refresh()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    """Replica and queue gauges, read from the worker's pools at scrape time."""

    def __init__(self, pools: Callable[[], dict[str, PoolStatistics]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "gateway_service_count", "Ready replicas per function", labels=["function_name"]
        )
        queued = GaugeMetricFamily(
            "gateway_function_queued", "Invocations waiting for a slot", labels=["function_name"]
        )
        inflight = GaugeMetricFamily(
            "gateway_function_inflight", "Invocations running", labels=["function_name"]
        )
        counters = {
            field: CounterMetricFamily(metric, help_text, labels=["function_name"])
            for metric, help_text, field in POOL_COUNTERS
        }
        for function, stats in self._pools().items():
            name = metric_name(function)
            replicas.add_metric([name], stats.available)
            queued.add_metric([name], stats.queued)
            inflight.add_metric([name], stats.inflight)
            for field, family in counters.items():
                family.add_metric([name], float(getattr(stats, field)))
        yield replicas
        yield queued
        yield inflight
        yield from counters.values()


# What the keep-alive policy is judged by, per function (PoolStatistics fields).
POOL_COUNTERS = (
    (
        "faasd_function_prewarm_loads",
        "Instances started ahead of demand by a pre-warm",
        "prewarm_loads",
    ),
    (
        "faasd_function_prewarm_hits",
        "Invocations that found a pre-warmed instance ready",
        "prewarm_hits",
    ),
    ("faasd_function_instance_seconds", "Ready instances x seconds", "instance_seconds"),
    (
        "faasd_function_idle_instance_seconds",
        "Ready instances x seconds without an invocation (wasted)",
        "idle_instance_seconds",
    ),
)


class AppCollector(Collector):
    """Per app under a keep-alive policy: loaded or not, its current windows, and how many
    times each rule decided."""

    def __init__(self, apps: Callable[[], Mapping[str, LifecycleStatistics]]) -> None:
        self._apps = apps

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "faasd_policy_decisions", "Keep-alive decisions by rule", labels=["app", "reason"]
        )
        loaded = GaugeMetricFamily("faasd_app_loaded", "1 while the app is loaded", labels=["app"])
        prewarm = GaugeMetricFamily(
            "faasd_app_prewarm_window_seconds", "The app's pre-warm window now", labels=["app"]
        )
        keepalive = GaugeMetricFamily(
            "faasd_app_keepalive_window_seconds",
            "The app's keep-alive window now (+Inf: never unloaded)",
            labels=["app"],
        )
        for app, stats in self._apps().items():
            for reason, count in sorted(stats.decisions.items()):
                decisions.add_metric([app, reason], float(count))
            loaded.add_metric([app], 1.0 if stats.loaded else 0.0)
            if stats.policy_statistics is not None:
                prewarm.add_metric([app], stats.policy_statistics.prewarm)
                keepalive.add_metric([app], stats.policy_statistics.keepalive)
        yield decisions
        yield loaded
        yield prewarm
        yield keepalive


# The Faa$T cache's figures per app (faasd_py.cache.CacheStatistics), read at scrape time:
# (metric, help, statistics field, kind). `faasd-py describe` reads these series back.
CACHE_SERIES = (
    ("faasd_cache_hits", "Reads served from the app's cache", "hits", "counter"),
    ("faasd_cache_misses", "Reads fetched from the store", "misses", "counter"),
    (
        "faasd_cache_bypassed_reads",
        "Reads of objects too large to cache",
        "bypassed_reads",
        "counter",
    ),
    ("faasd_cache_writes", "Writes through the cache", "writes", "counter"),
    ("faasd_cache_version_checks", "Version checks against the store", "version_checks", "counter"),
    (
        "faasd_cache_version_check_seconds",
        "Time spent in version checks",
        "version_check_seconds_total",
        "counter",
    ),
    (
        "faasd_cache_version_check_seconds_max",
        "Slowest version check",
        "version_check_seconds_max",
        "gauge",
    ),
    ("faasd_cache_bytes", "Bytes cached", "bytes_cached", "gauge"),
    ("faasd_cache_entries", "Objects cached", "entries", "gauge"),
    ("faasd_cache_capacity_bytes", "The app's cache budget (sizing policy)", "capacity", "gauge"),
    ("faasd_cache_evictions", "Objects evicted", "evictions", "counter"),
    ("faasd_cache_prewarmed_keys", "Objects pre-warmed at load", "prewarmed_keys", "gauge"),
    ("faasd_cache_prewarmed_read", "Pre-warmed objects read since", "prewarmed_read", "gauge"),
    ("faasd_cache_storage_errors", "Store calls that failed", "storage_errors", "counter"),
    # An app spread over workers: reads the key's owner answered, owners asked in vain, and the
    # answers this worker gave the others as an owner (from its cache, or from the store).
    ("faasd_cache_peer_hits", "Reads served by the key's owner", "peer_hits", "counter"),
    ("faasd_cache_peer_misses", "Owners asked in vain", "peer_misses", "counter"),
    (
        "faasd_cache_peer_served_hits",
        "Reads of other workers served from this cache",
        "peer_served_hits",
        "counter",
    ),
    (
        "faasd_cache_peer_served_misses",
        "Reads of other workers served from the store",
        "peer_served_misses",
        "counter",
    ),
)


class SeriesCollector(Collector):
    """Series (metric, help, statistics field, kind) read from statistics objects at scrape
    time: one per app labelled `app` (CACHE_SERIES, STORAGE_SERIES), or, with `label` None, the
    one object of the whole process (HOST_SERIES)."""

    def __init__(
        self,
        read: Callable[[], Mapping[str, object]],
        series: tuple[tuple[str, str, str, str], ...],
        label: str | None = "app",
    ) -> None:
        self._read = read
        self._series = series
        self._labels = [] if label is None else [label]

    def collect(self) -> Iterator[Metric]:
        objects = self._read()
        for name, help_text, field, kind in self._series:
            family: Metric
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=self._labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=self._labels)
            for key, stats in objects.items():
                family.add_metric([key] if self._labels else [], float(getattr(stats, field)))
            yield family


# Each app's storage (faasd_py.cache.StorageStatistics), read at scrape time.
STORAGE_SERIES = (
    ("faasd_storage_bytes", "Bytes of the app's objects in the store", "stored_bytes", "gauge"),
    ("faasd_storage_keys", "Keys of the app in the store", "stored_keys", "gauge"),
    (
        "faasd_storage_quota_refusals",
        "Puts refused for going over the app's storage quota",
        "quota_refusals",
        "counter",
    ),
    (
        "faasd_storage_calls_in_flight",
        "Storage calls of the app's instances being answered",
        "calls_in_flight",
        "gauge",
    ),
    (
        "faasd_storage_bytes_in_flight",
        "Bytes of storage calls the worker holds for the app's instances",
        "bytes_in_flight",
        "gauge",
    ),
    (
        "faasd_storage_instance_bytes_in_flight_max",
        "The most bytes of storage calls one instance of the app made the worker hold",
        "peak_instance_bytes",
        "gauge",
    ),
    (
        "faasd_storage_reader_pauses",
        "Times the worker stopped reading an instance's channel at its storage bound",
        "pauses",
        "counter",
    ),
)


# Process-wide bounds (issue 11's limits), each read from its own statistics object:
# the worker's log buffers (LogBudgetStatistics), memory admission (AdmissionStatistics) and
# the gateway's connections (ConnectionStatistics).
# Each worker of a cluster, as the gateway last read the cluster's leases.
WORKER_SERIES = (
    (
        "faasd_cluster_worker_heartbeat_age_seconds",
        "Seconds since the worker's last heartbeat",
        "heartbeat_age",
        "gauge",
    ),
    ("faasd_cluster_worker_cores", "Cores of the worker's host", "cores", "gauge"),
    ("faasd_cluster_worker_cpu_busy_cores", "Cores the worker kept busy", "cpu_load", "gauge"),
    (
        "faasd_cluster_worker_memory_bytes",
        "Memory the worker's instances may reserve",
        "memory",
        "gauge",
    ),
    (
        "faasd_cluster_worker_memory_reserved_bytes",
        "Memory the worker's instances reserve now",
        "memory_reserved",
        "gauge",
    ),
    ("faasd_cluster_worker_apps", "Apps with functions on the worker", "apps", "gauge"),
)
HOST_SERIES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "logs": (
        ("faasd_log_buffers", "Functions' log buffers held", "buffers", "gauge"),
        ("faasd_log_bytes", "Bytes of log lines held, all functions", "bytes", "gauge"),
        (
            "faasd_log_bytes_limit",
            "The bound on log bytes held (--log-total-bytes)",
            "limit",
            "gauge",
        ),
    ),
    "admission": (
        (
            "faasd_admission_instances",
            "Instances holding a memory reservation",
            "instances",
            "gauge",
        ),
        ("faasd_admission_zygotes", "Zygotes holding a memory reservation", "zygotes", "gauge"),
        (
            "faasd_admission_reserved_bytes",
            "Memory reserved by instances and zygotes",
            "reserved",
            "gauge",
        ),
        (
            "faasd_admission_budget_bytes",
            "Memory instances may reserve on this host",
            "budget",
            "gauge",
        ),
        ("faasd_admission_max_instances", "Instances this host may run", "max_instances", "gauge"),
        (
            "faasd_admission_refused",
            "Instance starts refused for memory or count",
            "refused",
            "counter",
        ),
    ),
    "connections": (
        ("faasd_connections_open", "Client connections open", "open", "gauge"),
        (
            "faasd_connections_refused",
            "Connections turned away at --max-connections",
            "refused",
            "counter",
        ),
        (
            "faasd_connections_header_timeouts",
            "Connections closed for a slow request head",
            "header_timeouts",
            "counter",
        ),
    ),
}


# --- async invocations ---------------------------------------------------------------------------


class QueueSnapshot:
    """The async queue's figures as /metrics last read them. Reading them is a call to the
    queue's backend (it awaits), and a collector cannot await: the /metrics handler refreshes
    this first. A queue that cannot be read shows no figures, and faasd_queue_up 0."""

    def __init__(self, read: Callable[[], Awaitable[Mapping[str, QueueStatistics]]]) -> None:
        self._read = read
        self.statistics: Mapping[str, QueueStatistics] = {}
        self.up = True

    async def refresh(self) -> None:
        try:
            self.statistics = await self._read()
            self.up = True
        except QueueUnavailable as exc:
            if self.up:
                logger.warning("/metrics cannot read the async queue: %s", exc.message)
            self.statistics, self.up = {}, False


# Each function's async queue (faasd_py.queue.QueueStatistics), labelled function_name.
QUEUE_SERIES = (
    (
        "faasd_queue_depth",
        "Async calls waiting, retries not yet due included",
        "depth",
        "gauge",
    ),
    (
        "faasd_queue_in_flight",
        "Async calls taken by a consumer, not yet done",
        "in_flight",
        "gauge",
    ),
    (
        "faasd_queue_oldest_age_seconds",
        "How long the oldest waiting async call has waited",
        "oldest_age",
        "gauge",
    ),
    ("faasd_queue_retries", "Retries of async calls scheduled", "retries", "counter"),
    ("faasd_queue_dead_letters", "Async calls held as dead letters", "dead_letters", "gauge"),
)


class _QueueCollector(Collector):
    """Whether the queue answered the last read, and the callbacks sent by result."""

    def __init__(self, queue: QueueSnapshot, callbacks: Callable[[], Mapping[str, int]]) -> None:
        self._queue = queue
        self._callbacks = callbacks

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("faasd_queue_up", "1 when the async queue answered /metrics")
        up.add_metric([], 1.0 if self._queue.up else 0.0)
        yield up
        sent = CounterMetricFamily(
            "faasd_callbacks", "Results POSTed to X-Callback-Url, by result", labels=["result"]
        )
        counts = self._callbacks()
        for result in ("delivered", "failed"):
            sent.add_metric([result], float(counts.get(result, 0)))
        yield sent
