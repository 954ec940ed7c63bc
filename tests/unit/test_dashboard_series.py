"""The dashboard's series store: points from counter deltas, percentiles from histogram
buckets, the table's rows, and memory that stays bounded however long it runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.gateway._metrics import GatewayMetrics
from faasd_py.ui import AppReading, FunctionReading, SeriesStore, quantile
from faasd_py.ui._sampler import _CountReader

BOUNDS = (0.001, 0.01, 0.1, 1.0, math.inf)


def reading(
    calls: int, *, fast: int = 0, errors: int = 0, cold: int = 0, ready: int = 1
) -> FunctionReading:
    """`calls` answered, of which `fast` within 1 ms and the rest within 10 ms."""
    buckets = (float(fast), float(calls), float(calls), float(calls), float(calls))
    return FunctionReading(
        invocations=calls,
        server_errors=errors,
        buckets=buckets,
        cold_starts=cold,
        replicas=1,
        available=ready,
        app="app",
    )


def test_a_point_is_what_the_counters_moved_by_per_second() -> None:
    store = SeriesStore(BOUNDS, capacity=10)
    store.record(100.0, {"f": reading(10)}, {})
    tick = store.record(102.0, {"f": reading(30, fast=20, errors=4, cold=1)}, {})
    series = store.function_series("f")
    assert series is not None
    assert series["rate"][-1] == pytest.approx(10.0)  # 20 calls in 2 s
    assert series["serverErrors"][-1] == 4
    assert series["coldStarts"][-1] == 1
    # All 20 new calls were within 1 ms: p50 is inside the first bucket.
    assert series["p50"][-1] is not None and 0 < series["p50"][-1] <= 1.0
    assert [row["ref"] for row in tick.rows] == ["f"]
    assert tick.gateway["rate"] == pytest.approx(10.0)


def test_calls_before_a_functions_first_sample_count_in_its_first_point() -> None:
    store = SeriesStore(BOUNDS, capacity=10)
    store.record(1.0, {}, {})
    (row,) = store.record(2.0, {"f": reading(4)}, {}).rows  # deployed and called since
    series = store.function_series("f")
    assert series is not None and series["rate"] == [None, 4.0]
    assert row["invocations"] == 4 and row["rate"] == 4.0


def test_counters_that_restart_count_from_zero() -> None:
    store = SeriesStore(BOUNDS, capacity=10)
    store.record(1.0, {"f": reading(500)}, {})
    store.record(2.0, {"f": reading(3)}, {})  # the gateway restarted
    series = store.function_series("f")
    assert series is not None and series["rate"][-1] == pytest.approx(3.0)


def test_memory_stays_bounded_and_removed_functions_are_dropped() -> None:
    store = SeriesStore(BOUNDS, capacity=20)
    functions = {f"f{i}": reading(0) for i in range(50)}
    for second in range(200):
        current = {ref: reading(second) for ref in functions}
        store.record(float(second), current, {"app": AppReading(hits=second)})
    held = store.statistics()
    for second in range(200, 400):
        current = {ref: reading(second) for ref in functions}
        store.record(float(second), current, {"app": AppReading(hits=second)})
    assert store.statistics() == held  # nothing grew after the ring filled
    assert held.ticks == 20 and held.functions == 50
    assert len(store.times()) == 20 and store.times()[-1] == 399.0
    series = store.function_series("f0")
    assert series is not None and all(len(column) == 20 for column in series.values())

    tick = store.record(400.0, {"f0": reading(400)}, {})
    assert sorted(tick.removed) == sorted(f"f{i}" for i in range(1, 50))
    assert store.function_series("f1") is None and store.app_series("app") is None
    assert store.statistics().bytes < held.bytes


def test_a_row_is_sent_only_when_it_changed() -> None:
    store = SeriesStore(BOUNDS, capacity=10, window=60)
    store.record(0.0, {"f": reading(0)}, {})
    store.record(1.0, {"f": reading(0)}, {})
    assert store.record(2.0, {"f": reading(0)}, {}).rows == []
    changed = store.record(3.0, {"f": reading(5)}, {}).rows
    assert [(row["ref"], row["invocations"]) for row in changed] == [("f", 5)]
    assert [row["ref"] for row in store.rows()] == ["f"]


def test_the_row_gives_the_last_windows_error_rate_and_keep_alive_state() -> None:
    store = SeriesStore(BOUNDS, capacity=10, window=60)
    store.record(0.0, {"f": reading(0)}, {})
    state = FunctionReading(
        invocations=10,
        server_errors=2,
        buckets=(0.0, 10.0, 10.0, 10.0, 10.0),
        loaded=False,
        prewarm=30.0,
        keepalive=math.inf,
        rule="histogram",
    )
    (row,) = store.record(10.0, {"f": state}, {}).rows
    assert row["errorRate"] == pytest.approx(0.2)
    assert row["loaded"] is False and row["rule"] == "histogram"
    assert row["prewarmSeconds"] == 30.0 and row["keepaliveSeconds"] is None  # never unloaded


def test_cache_hit_rate_per_app_and_for_the_gateway() -> None:
    store = SeriesStore(BOUNDS, capacity=10)
    store.record(0.0, {}, {"a": AppReading(hits=0, misses=0)})
    tick = store.record(1.0, {}, {"a": AppReading(hits=3, misses=1, cache_bytes=2048)})
    assert tick.apps["a"]["hitRate"] == pytest.approx(0.75)
    assert tick.apps["a"]["cacheBytes"] == 2048
    assert tick.gateway["hitRate"] == pytest.approx(0.75)


@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=5, max_size=5),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_a_quantile_lies_within_the_bounds_of_its_bucket(counts: list[int], q: float) -> None:
    cumulative = [float(sum(counts[: i + 1])) for i in range(len(counts))]
    value = quantile(q, BOUNDS, cumulative)
    if cumulative[-1] == 0:
        assert math.isnan(value)
    else:
        assert 0.0 <= value <= BOUNDS[-2]


def test_a_capacity_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SeriesStore(BOUNDS, capacity=1)


def test_the_sampler_reads_what_the_gateways_metrics_count() -> None:
    metrics = GatewayMetrics(dict)
    reader = _CountReader(metrics)
    metrics.observe("f", 200, 0.003)
    metrics.observe("f", 200, 0.2, cold_start_seconds=0.1)
    metrics.observe("f", 404, 0.0005)
    metrics.observe("g.team", 503, 0.02)
    first = reader.read()
    assert (first["f"].invocations, first["f"].client_errors, first["f"].cold_starts) == (3, 1, 1)
    assert first["g.team"].server_errors == 1
    # Cumulative over BOUNDS, as the registry renders them (le="0.001": 1 call, ... +Inf: 3).
    assert first["f"].buckets[0] == 1 and first["f"].buckets[-1] == 3
    metrics.observe("f", 200, 0.003)
    again = reader.read()  # the moved series read afresh, the others as they were
    assert again["f"].invocations == 4 and again["f"].buckets[-1] == 4
    assert again["g.team"].buckets == first["g.team"].buckets
