"""Parsing and replay on real rows: the vHive sample of the Azure Functions 2019 trace.

bench/data/azure2019-sample (its README gives the attribution): 252 functions of 242 apps over
8 hours of day 1. The replay of single-function apps under a fixed keep-alive is checked
against a plain per-invocation reading of the paper's definitions, written here from scratch.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from faasd_py.scheduler import FixedKeepAlive, TraceApps, group_apps, parse_policy, simulate
from faasd_py.scheduler import summary as summarize
from faasd_py.traces import (
    TraceFunction,
    load_invocations,
    load_memory,
    load_trace,
    trace_arrivals,
)

SAMPLE = Path(__file__).resolve().parents[2] / "bench" / "data" / "azure2019-sample"


@pytest.fixture(scope="module")
def functions() -> list[TraceFunction]:
    return load_trace(SAMPLE / "invocations.csv", SAMPLE / "durations.csv", arrays=True)


@pytest.fixture(scope="module")
def apps(functions: list[TraceFunction]) -> TraceApps:
    return group_apps(functions, load_memory(SAMPLE / "memory.csv"))


def test_the_real_rows_parse_with_their_durations_and_memory(
    functions: list[TraceFunction], apps: TraceApps
) -> None:
    assert len(functions) == 252
    assert {len(f.counts) for f in functions} == {480}
    assert sum(int(sum(f.counts)) for f in functions) == 2_329_863
    assert all(f.durations is not None for f in functions)
    assert Counter(f.trigger for f in functions).most_common(2) == [("timer", 130), ("http", 65)]
    assert (apps.apps, apps.memory_defaulted, apps.durations_missing) == (242, 0, 0)
    # Both readers read the real file alike.
    by_csv = load_invocations(SAMPLE / "invocations.csv", reader="csv")
    assert [tuple(f.counts) for f in functions] == [f.counts for f in by_csv]


def by_hand(function: TraceFunction, keepalive: float, minutes: int) -> tuple[int, float]:
    """Cold starts and wasted seconds of a one-function app under a fixed keep-alive, one
    invocation at a time: uniform arrivals, executions of the function's average."""
    assert function.durations is not None
    run = function.durations.average / 1000
    cold, wasted, busy_until = 0, 0.0, None
    for minute, count in enumerate(function.counts):
        for i in range(int(count)):
            arrival = 60 * (minute + (i + 0.5) / int(count))
            if busy_until is None or arrival - busy_until > keepalive:
                cold += 1
            if busy_until is not None and arrival > busy_until:
                wasted += min(arrival - busy_until, keepalive)
            busy_until = max(busy_until or 0.0, arrival + run)
    assert busy_until is not None
    return cold, wasted + max(0.0, min(60 * minutes - busy_until, keepalive))


def test_one_function_apps_replay_as_the_definitions_say(
    functions: list[TraceFunction], apps: TraceApps
) -> None:
    per_app = Counter((f.owner, f.app) for f in functions)
    single = [f for f in functions if per_app[(f.owner, f.app)] == 1 and 0 < sum(f.counts) < 20_000]
    assert len(single) > 150
    trace = group_apps(single, {}, 1.0)
    result = simulate(trace, [FixedKeepAlive(1200.0)])
    row = {name: i for i, name in enumerate(trace.names)}
    assert len(row) == len(single)
    invocations = trace.invocations.tolist()
    for policy, keepalive in zip(result, (600.0, 1200.0), strict=True):
        wasted = 0.0
        for f in single:
            cold, idle = by_hand(f, keepalive, 480)
            a = row[f.app_name]
            assert round(policy.cold_percent[a] * invocations[a] / 100) == cold, f.app_name
            wasted += idle
        assert policy.wasted_mb_s == pytest.approx(wasted, rel=1e-9)


def test_longer_keep_alives_trade_memory_for_cold_starts(apps: TraceApps) -> None:
    names = ["fixed:10m", "fixed:20m", "fixed:1h", "fixed:2h", "no-unload"]
    rows = summarize(simulate(apps, [parse_policy(n) for n in names]))
    colds = [r["cold_starts"] for r in rows]
    wasted = [r["wasted_mb_s"] for r in rows]
    assert colds == sorted(colds, reverse=True) and len(set(colds)) == len(colds)
    assert wasted == sorted(wasted) and len(set(wasted)) == len(wasted)
    # The floor: each app's first invocation.
    assert colds[-1] == apps.apps


def test_the_hybrid_policy_learns_on_real_rows(apps: TraceApps) -> None:
    rows = {r["policy"]: r for r in summarize(simulate(apps, [parse_policy("hybrid:4h")]))}
    hybrid, fixed = rows["hybrid:4h"], rows["fixed:10m"]
    assert hybrid["decisions"]["histogram"] > hybrid["decisions"]["fallback"]
    assert hybrid["p75_app_cold_percent"] < fixed["p75_app_cold_percent"] / 2


def test_the_real_rows_replay_as_a_load_schedule(functions: list[TraceFunction]) -> None:
    timers = [f for f in functions if f.trigger == "timer"][:20]
    arrivals = list(trace_arrivals(timers, speedup=60.0, seed=1, minutes=60))
    expected = Counter({(f.name, m): int(c) for f in timers for m, c in enumerate(f.counts[:60])})
    got = Counter((a.function, int(a.at)) for a in arrivals)
    assert got == +expected
    assert all(a.duration_ms is not None and a.duration_ms >= 0 for a in arrivals)
