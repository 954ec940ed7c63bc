"""Prometheus metrics under OpenFaaS's names, plus cold starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from faasd_py.spec import DEFAULT_NAMESPACE
from faasd_py.worker import PoolStatistics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def metric_name(function: str) -> str:
    """OpenFaaS labels series by "<function>.<namespace>"."""
    return f"{function}.{DEFAULT_NAMESPACE}"


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

    def observe(self, function: str, code: int, seconds: float, cold_start: float = 0.0) -> None:
        name = metric_name(function)
        self._invocations.labels(name, str(code)).inc()
        self._seconds.labels(name, str(code)).observe(seconds)
        if cold_start > 0:
            self._cold_starts.labels(name).inc()
            self._cold_start_seconds.labels(name).observe(cold_start)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    """Replica and queue gauges, read from the worker's pools at scrape time."""

    def __init__(self, pools: Callable[[], dict[str, PoolStatistics]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        replicas = GaugeMetricFamily(
            "gateway_service_count", "Ready replicas per function", labels=["function_name"]
        )
        queued = GaugeMetricFamily(
            "gateway_function_queued", "Invocations waiting for a slot", labels=["function_name"]
        )
        inflight = GaugeMetricFamily(
            "gateway_function_inflight", "Invocations running", labels=["function_name"]
        )
        for function, stats in self._pools().items():
            name = metric_name(function)
            replicas.add_metric([name], stats.available)
            queued.add_metric([name], stats.queued)
            inflight.add_metric([name], stats.inflight)
        yield replicas
        yield queued
        yield inflight
