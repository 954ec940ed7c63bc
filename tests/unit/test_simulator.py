"""The trace simulator on traces small enough to count cold starts and wasted memory by hand.

Uniform arrivals (the default): a minute's c arrivals come at (i + 1/2) / c of it; functions
without durations run 1 s. tests/unit/test_simulator_paper.py has the paper's own cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from faasd_py.scheduler import (
    AppPolicy,
    FixedKeepAlive,
    HybridConfig,
    HybridPolicy,
    NoUnload,
    Policy,
    PolicyResult,
    TraceApps,
    group_apps,
    simulate,
    simulate_policy,
    summary,
)
from faasd_py.scheduler._arrivals import ARRIVALS, Arrivals
from faasd_py.traces import (
    DurationPercentiles,
    MemoryPercentiles,
    TraceFunction,
    synthetic_memory,
    synthetic_trace,
)

MINUTES = 30


def function(app: str, name: str, active: dict[int, int], average_ms: float = 0.0) -> TraceFunction:
    counts = [0] * MINUTES
    for minute, count in active.items():
        counts[minute] = count
    durations = None
    if average_ms:
        d = average_ms
        durations = DurationPercentiles(d, d, d, d, d, d, d, d, d, d)
    return TraceFunction("owner", app, name, "http", tuple(counts), durations)


def memory(mb: float) -> MemoryPercentiles:
    return MemoryPercentiles(mb, mb, mb, mb, mb, mb, mb, mb, mb)


def tiny_trace() -> TraceApps:
    """App A (100 MB): one invocation at minutes 0, 5 and 20. App B (200 MB): two functions,
    4 invocations at minute 2 (3 + 1), 2 at minute 3."""
    return group_apps(
        [
            function("a", "a1", {0: 1, 5: 1, 20: 1}),
            function("b", "b1", {2: 3}),
            function("b", "b2", {2: 1, 3: 2}),
        ],
        {("owner", "a"): memory(100), ("owner", "b"): memory(200)},
    )


def by_app(result: PolicyResult) -> list[float]:
    return [round(v, 6) for v in result.cold_percent.tolist()]


def test_the_trace_is_grouped_into_apps() -> None:
    apps = tiny_trace()
    assert apps.apps == 2
    assert apps.invocations.tolist() == [3, 6]
    # A: one arrival at 30 s of minutes 0, 5, 20. B: 4 at 7.5, 22.5, 37.5, 52.5 s of minute 2
    # (three idle times of 15 - 1 = 14 s), 2 at 15 and 45 s of minute 3 (one of 29 s).
    assert apps.arrive.tolist() == [30.0, 330.0, 1230.0, 127.5, 195.0]
    assert apps.gaps.tolist() == [0, 0, 0, 3, 1]
    assert apps.gap.tolist() == [0.0, 0.0, 0.0, 14.0, 29.0]
    assert apps.end.tolist() == [31.0, 331.0, 1231.0, 173.5, 226.0]
    assert apps.memory_mb.tolist() == [100.0, 200.0]
    assert apps.memory_defaulted == 0
    assert (apps.durations_missing, apps.durations_missing_invocations) == (3, 9)


def test_fixed_ten_minutes_by_hand() -> None:
    result = simulate_policy(tiny_trace(), FixedKeepAlive(600.0))
    # A: first cold; ends at 31, next at 330 -> idle 299 (warm, 299 s wasted); ends at 331,
    # next at 1230 -> idle 899 (cold, 600 s wasted); ends at 1231, trace ends at 1800 (569 s).
    # B: first cold; 14 s three times, 21.5 s (173.5 -> 195), 29 s, all warm; ends at 226,
    # then 600 s.
    assert by_app(result) == [round(200 / 3, 6), round(100 / 6, 6)]
    assert (result.cold_starts, result.invocations) == (3, 9)
    assert result.wasted_mb_s == pytest.approx((299 + 600 + 569) * 100 + 692.5 * 200)
    # Windows asked after each execution that an arrival or the trace's end follows.
    assert result.decisions == {"fixed": 3 + 6}
    assert result.cold_by_reason == {"first": 2, "fixed": 1}
    # The 75th-percentile app, linear between the two apps' values.
    assert result.cold_percentile(75) == pytest.approx(100 / 6 + 0.75 * (200 / 3 - 100 / 6))


def test_no_unload_by_hand() -> None:
    result = simulate_policy(tiny_trace(), NoUnload())
    assert result.cold_starts == 2
    assert result.wasted_mb_s == pytest.approx((299 + 899 + 569) * 100 + 1666.5 * 200)


def test_hybrid_by_hand_through_each_rule() -> None:
    # 10 bins of a minute, one sample is enough.
    policy = HybridPolicy(HybridConfig(range=600.0, min_samples=1))
    result = simulate_policy(tiny_trace(), policy)
    # A: nothing seen -> fallback (0, 600): idle 299 warm, 299 s wasted; bin 4 alone (CV 3) ->
    # histogram (216, 330): idle 899 cold, 330 - 216 = 114 s wasted; 899 is out of bounds, half
    # of all -> forecast 899: (764.15, 1033.85); 569 s left < 764.15: nothing wasted.
    # B: fallback: 14 s warm; bin 0 alone -> histogram (0, 66), settled: the other two 14 s at
    # once; 21.5 s and 29 s warm; 66 s after the last execution.
    assert result.cold_starts == 3
    assert by_app(result) == [round(200 / 3, 6), round(100 / 6, 6)]
    b_histogram = 2 * 14 + 21.5 + 29 + 66
    assert result.wasted_mb_s == pytest.approx((299 + 114) * 100 + (14 + b_histogram) * 200)
    assert result.decisions == {"fallback": 2, "histogram": 6, "forecast": 1}
    assert result.cold_by_reason == {"first": 2, "histogram": 1}
    assert result.wasted_by_reason == pytest.approx(
        {
            "fallback": 299 * 100 + 14 * 200,
            "histogram": 114 * 100 + b_histogram * 200,
            "forecast": 0,
        }
    )


def test_long_executions_overlap_the_next_minute() -> None:
    # Two-minute executions arriving at 30 s and 90 s: the second arrives while the first runs
    # (warm, no idle time); it ends at 90 + 120 = 210, and the app stays 600 s after that.
    apps = group_apps([function("c", "c1", {0: 1, 1: 1}, average_ms=120_000)], {}, 50.0)
    assert apps.memory_defaulted == 1
    fixed = simulate_policy(apps, FixedKeepAlive(600.0))
    assert fixed.cold_starts == 1
    assert fixed.wasted_mb_s == pytest.approx(600 * 50)
    hybrid = simulate_policy(apps, HybridPolicy(HybridConfig(min_samples=1)))
    assert hybrid.cold_starts == 1
    # Nothing observed, so still the fallback: loaded to the end of the trace (1800 - 210).
    assert hybrid.wasted_mb_s == pytest.approx(1590 * 50)


def test_results_are_normalized_to_fixed_ten_minutes() -> None:
    results = simulate(tiny_trace(), [NoUnload()])
    assert [r.policy for r in results] == ["fixed:10m", "no-unload"]
    rows = summary(results)
    assert rows[0]["wasted_normalized"] == 1.0
    assert rows[1]["wasted_normalized"] == pytest.approx(510_000 / 285_300)
    assert rows[1]["cdf"][0] == pytest.approx((100 / 6, 0.0))
    assert rows[1]["cdf"][-1] == pytest.approx((100 / 3, 1.0))


def test_the_same_trace_and_policy_give_the_same_result() -> None:
    policy = HybridPolicy(HybridConfig(range=600.0, min_samples=1))
    first, second = (simulate_policy(tiny_trace(), policy) for _ in range(2))
    assert first.wasted_mb_s == second.wasted_mb_s
    assert by_app(first) == by_app(second)


def test_an_empty_trace_is_refused() -> None:
    with pytest.raises(ValueError, match="no functions"):
        group_apps([])


def progress_calls(apps: TraceApps) -> Sequence[tuple[str, int, int]]:
    calls: list[tuple[str, int, int]] = []
    simulate(apps, [HybridPolicy()], lambda *call: calls.append(call))
    return calls


def test_progress_reaches_every_app() -> None:
    calls = progress_calls(tiny_trace())
    assert ("fixed:10m", 2, 2) in calls
    assert calls[-1] == ("hybrid:4h", 2, 2)


class OneByOne:
    """A policy whose per-app states are another policy's, seen through a plain wrapper: the
    simulator cannot take its fast paths (vectorized constant windows, settled runs)."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    def new_app(self) -> AppPolicy:
        return _Plain(self.inner.new_app())

    def restore_app(self, state: Mapping[str, Any]) -> AppPolicy:
        return _Plain(self.inner.restore_app(state))


class _Plain:
    learns = True

    def __init__(self, inner: AppPolicy) -> None:
        self.inner = inner
        self.windows = inner.windows
        self.observe = inner.observe
        self.to_state = inner.to_state
        self.statistics = inner.statistics


def synthetic_apps(arrivals: Arrivals, sample: bool = False) -> TraceApps:
    functions = synthetic_trace(60, 360, seed=5)
    return group_apps(
        functions,
        synthetic_memory(functions, 5),
        arrivals=arrivals,
        seed=2,
        sample_durations=sample,
    )


@pytest.mark.parametrize("arrivals", ARRIVALS)
@pytest.mark.parametrize(
    "policy",
    [
        FixedKeepAlive(600.0),
        FixedKeepAlive(0.0),
        NoUnload(),
        HybridPolicy(),
        HybridPolicy(HybridConfig(range=3600.0, min_samples=3)),
    ],
    ids=lambda p: p.name,
)
def test_the_fast_paths_give_what_one_idle_time_at_a_time_gives(
    policy: Policy, arrivals: Arrivals
) -> None:
    apps = synthetic_apps(arrivals)
    fast, slow = simulate_policy(apps, policy), simulate_policy(apps, OneByOne(policy))
    assert fast.cold_starts == slow.cold_starts
    assert fast.cold_percent.tolist() == pytest.approx(slow.cold_percent.tolist())
    assert fast.wasted_mb_s == pytest.approx(slow.wasted_mb_s, rel=1e-9)


def test_poisson_arrivals_and_sampled_durations_are_seeded() -> None:
    first, second = (synthetic_apps("poisson", sample=True) for _ in range(2))
    assert first.arrive.tolist() == second.arrive.tolist()
    assert first.end.tolist() == second.end.tolist()
    other = group_apps(synthetic_trace(60, 360, seed=5), arrivals="poisson", seed=3)
    assert other.arrive.tolist() != first.arrive.tolist()
    # The same invocations whatever the placement.
    assert other.invocations.tolist() == synthetic_apps("uniform").invocations.tolist()


def test_poisson_minutes_keep_their_arrivals_inside_the_minute() -> None:
    apps = group_apps([function("a", "a1", {3: 4, 7: 40})], arrivals="poisson", seed=9)
    # 4 arrivals are expanded one by one, 40 are one episode (first, then 39 equal gaps).
    assert len(apps.arrive) == 5
    assert all(180 <= t < 240 for t in apps.arrive[:4]) and 420 <= apps.arrive[4] < 480
    assert apps.arrive[:4].tolist() == sorted(apps.arrive[:4].tolist())
    assert apps.gaps.tolist()[4] in (0, 39)


def test_sampled_durations_stay_within_the_functions_range() -> None:
    d = DurationPercentiles(2000, 500, 9000, 600, 700, 1500, 2000, 2500, 8000, 8500)
    trace = [TraceFunction("o", "a", "f", "http", (5,) * 30, d)]
    apps = group_apps(trace, arrivals="poisson", sample_durations=True)
    runs = apps.end - apps.arrive  # one arrival per episode, none overlapping by much
    assert runs.min() >= 0.5 - 1e-9 and runs.max() <= 60 + 9.0


def test_unknown_arrival_models_are_refused() -> None:
    with pytest.raises(ValueError, match="uniform, poisson, start"):
        group_apps([function("a", "a1", {0: 1})], arrivals="later")  # type: ignore[arg-type]
