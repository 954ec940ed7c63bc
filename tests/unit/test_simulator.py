"""The trace simulator on traces small enough to count cold starts and wasted memory by hand.

Each active minute m is in use from 60 m to 60 m + 60 s (or the minute's average duration if
longer); the idle time to the next active minute t is 60 t minus that end.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from faasd_py.scheduler import (
    FixedKeepAlive,
    HybridConfig,
    HybridPolicy,
    NoUnload,
    PolicyResult,
    TraceApps,
    group_apps,
    simulate,
    simulate_policy,
    summary,
)
from faasd_py.traces import DurationPercentiles, MemoryPercentiles, TraceFunction

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
    assert apps.minute.tolist() == [0, 5, 20, 2, 3]
    assert apps.memory_mb.tolist() == [100.0, 200.0]
    assert apps.memory_defaulted == 0


def test_fixed_ten_minutes_by_hand() -> None:
    result = simulate_policy(tiny_trace(), FixedKeepAlive(600.0))
    # A: first cold; ends at 60, next at 300 -> idle 240 (warm, 240 s wasted); ends at 360,
    # next at 1200 -> idle 840 (cold, 600 s wasted); ends at 1260, trace ends at 1800 (540 s).
    # B: first cold; ends at 180, next at 180 (warm, nothing idle); ends at 240 -> 600 s.
    assert by_app(result) == [round(200 / 3, 6), round(100 / 6, 6)]
    assert (result.cold_starts, result.invocations) == (3, 9)
    assert result.wasted_mb_s == pytest.approx((240 + 600 + 540) * 100 + 600 * 200)
    assert result.decisions == {"fixed": 5}
    assert result.cold_by_reason == {"first": 2, "fixed": 1}
    # The 75th-percentile app, linear between the two apps' values.
    assert result.cold_percentile(75) == pytest.approx(100 / 6 + 0.75 * (200 / 3 - 100 / 6))


def test_no_unload_by_hand() -> None:
    result = simulate_policy(tiny_trace(), NoUnload())
    assert result.cold_starts == 2
    assert result.wasted_mb_s == pytest.approx((240 + 840 + 540) * 100 + 1560 * 200)


def test_hybrid_by_hand_through_each_rule() -> None:
    # 10 bins of a minute, one sample is enough.
    policy = HybridPolicy(HybridConfig(range=600.0, min_samples=1))
    result = simulate_policy(tiny_trace(), policy)
    # A: nothing seen -> fallback (0, 600): idle 240 warm, 240 s wasted; bin 4 alone (CV 3) ->
    # histogram (216, 330): idle 840 cold, 330 - 216 = 114 s wasted; 840 is out of bounds and
    # all there is -> forecast 840: (714, 966); 540 s left < 714: nothing wasted.
    # B: fallback: idle 0 warm; bin 0 -> histogram (0, 66): 66 s wasted of the 1560 left.
    assert result.cold_starts == 3
    assert by_app(result) == [round(200 / 3, 6), round(100 / 6, 6)]
    assert result.wasted_mb_s == pytest.approx((240 + 114) * 100 + 66 * 200)
    assert result.decisions == {"fallback": 2, "histogram": 2, "forecast": 1}
    assert result.cold_by_reason == {"first": 2, "histogram": 1}
    assert result.wasted_by_reason == pytest.approx(
        {"fallback": 240 * 100, "histogram": 114 * 100 + 66 * 200, "forecast": 0.0}
    )


def test_long_executions_overlap_the_next_minute() -> None:
    # Two-minute executions at minutes 0 and 1: the second arrives while the first runs (warm,
    # no idle time); it ends at 60 + 120 = 180, and the app stays 600 s after that.
    apps = group_apps([function("c", "c1", {0: 1, 1: 1}, average_ms=120_000)], {}, 50.0)
    assert apps.memory_defaulted == 1
    fixed = simulate_policy(apps, FixedKeepAlive(600.0))
    assert fixed.cold_starts == 1
    assert fixed.wasted_mb_s == pytest.approx(600 * 50)
    hybrid = simulate_policy(apps, HybridPolicy(HybridConfig(min_samples=1)))
    assert hybrid.cold_starts == 1
    # Nothing observed, so still the fallback: loaded to the end of the trace (1800 - 180).
    assert hybrid.wasted_mb_s == pytest.approx(1620 * 50)


def test_results_are_normalized_to_fixed_ten_minutes() -> None:
    results = simulate(tiny_trace(), [NoUnload()])
    assert [r.policy for r in results] == ["fixed:10m", "no-unload"]
    rows = summary(results)
    assert rows[0]["wasted_normalized"] == 1.0
    assert rows[1]["wasted_normalized"] == pytest.approx(474_000 / 258_000)
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
