"""Tiny traces whose answers follow by hand from the definitions of "Serverless in the Wild".

Shahrad et al. (ATC'20): an idle time runs from the end of one execution to the start of the
next; every invocation that finds its app unloaded is a cold start; wasted memory is memory held
while the app is loaded and not executing. The trace counts invocations per minute; under the
default arrival model (uniform) a minute's c arrivals come at (i + 1/2) / c of the minute, so
one arrival comes at its 30th second.

Each case gives a different answer under the old per-minute model (arrivals at the minute's
start, the app busy for the whole minute, at most one cold start per minute), except where said.
"""

from __future__ import annotations

import pytest

from faasd_py.scheduler import (
    FixedKeepAlive,
    HybridConfig,
    HybridPolicy,
    NoUnload,
    TraceApps,
    Windows,
    group_apps,
    simulate_policy,
)
from faasd_py.scheduler._policy import MIN_SAMPLES
from faasd_py.traces import DurationPercentiles, MemoryPercentiles, TraceFunction

MB = 100.0


def app(active: dict[int, int], minutes: int, duration_ms: float) -> TraceApps:
    """One app of one function, ``active[minute]`` invocations, each running ``duration_ms``."""
    counts = [0] * minutes
    for minute, count in active.items():
        counts[minute] = count
    d = duration_ms
    durations = DurationPercentiles(d, d, d, d, d, d, d, d, d, d)
    function = TraceFunction("owner", "app", "f", "timer", tuple(counts), durations)
    memory = MemoryPercentiles(MB, MB, MB, MB, MB, MB, MB, MB, MB)
    return group_apps([function], {("owner", "app"): memory})


def test_a_timer_every_11_minutes_is_cold_every_time_under_a_10_minute_keep_alive() -> None:
    # Arrivals at 30 s of minutes 0, 11, ..., 55; each runs 1 s, so each idle time is
    # 660 - 1 = 659 s, past the 600 s keep-alive: every one of the 6 is cold. (The old model
    # measured 660 - 60 = 600 s between minute boundaries: warm.)
    trace = app({m: 1 for m in range(0, 60, 11)}, minutes=60, duration_ms=1000)
    result = simulate_policy(trace, FixedKeepAlive(600.0))
    assert (result.cold_starts, result.invocations) == (6, 6)
    assert result.cold_percent.tolist() == [100.0]
    # Loaded the whole 600 s after each of the first five; after the last (it ends at
    # 55 min 31 s) until the trace ends at 60 min: 269 s.
    assert result.wasted_mb_s == pytest.approx((5 * 600 + 269) * MB)


def test_three_arrivals_in_a_minute_at_an_unloaded_app() -> None:
    # Arrivals at 10, 30 and 50 s, each running 1 s: idle 19 s, then 19 s.
    trace = app({0: 3}, minutes=10, duration_ms=1000)
    kept = simulate_policy(trace, FixedKeepAlive(600.0))
    # The first finds it unloaded; the app is then kept: the other two are warm. Waste: the
    # two 19 s idle times, then 600 - 51 = 549 s to the end of the trace (the old model: the
    # whole minute busy, 540 s after it).
    assert kept.cold_starts == 1
    assert kept.wasted_mb_s == pytest.approx((19 + 19 + 549) * MB)
    # Unloaded as soon as an execution ends: each of the three finds it unloaded (the old
    # model counted at most one cold start per minute).
    unloaded = simulate_policy(trace, FixedKeepAlive(0.0))
    assert unloaded.cold_starts == 3
    assert unloaded.cold_percent.tolist() == [100.0]
    assert unloaded.wasted_mb_s == 0.0


def test_idle_times_of_30_minutes_give_the_windows_of_the_documented_parameters() -> None:
    # A timer every 31 minutes (minutes 0, 31, ..., 217 of 240), 1 s executions: 7 idle times
    # of 31 x 60 - 1 = 1859 s, all in bin 30 (30 to 31 minutes) of 240 one-minute bins.
    config = HybridConfig()
    assert (config.bin_width, config.bins, MIN_SAMPLES, config.min_samples) == (60, 240, 5, 5)
    trace = app({m: 1 for m in range(0, 240, 31)}, minutes=240, duration_ms=1000)
    result = simulate_policy(trace, HybridPolicy(config))
    # The first five idle times come before MIN_SAMPLES are in: fallback, pre-warm 0,
    # keep-alive the 4 h range: warm, all 1859 s wasted.
    # From then on: one bin in use of 240, CV = sqrt(239) = 15.5 >= 2: the histogram rule.
    # Head (5th percentile) in bin 30: its lower edge 1800 s x (1 - 0.1) = 1620 s pre-warm;
    # tail (99th) in bin 30: its upper edge 1860 s x 1.1 = 2046 s keep-alive.
    windows = _windows_after(1859.0, times=5, config=config)
    assert windows.prewarm == pytest.approx(1620.0)
    assert windows.keepalive == pytest.approx(2046.0)
    assert windows.reason == "histogram"
    # The sixth and seventh idle times (1859 s) fall between them: warm, loaded from the
    # pre-warm at 1620 s: 239 s wasted each. After the last execution (it ends at 217 min 31 s)
    # the trace has 1349 s left, less than the pre-warm: nothing loaded, nothing wasted.
    assert result.cold_starts == 1
    assert result.decisions == {"fallback": 5, "histogram": 3}
    assert result.wasted_mb_s == pytest.approx((5 * 1859 + 2 * 239) * MB)


def _windows_after(idle: float, times: int, config: HybridConfig) -> Windows:
    state = HybridPolicy(config).new_app()
    for _ in range(times):
        state.observe(0.0, idle)
    return state.windows(0.0)


def test_an_app_busy_10_seconds_a_minute_wastes_the_other_50() -> None:
    # Once a minute for 10 minutes, 10 s each (at 30 s, ending at 40 s): 9 idle times of 50 s,
    # all warm under a 10-minute keep-alive and all waste (the old model: the minute busy).
    trace = app({m: 1 for m in range(10)}, minutes=20, duration_ms=10_000)
    fixed = simulate_policy(trace, FixedKeepAlive(600.0))
    assert fixed.cold_starts == 1
    # Then from 9 min 40 s: 620 s to the end of the trace, kept 600 of them.
    assert fixed.wasted_mb_s == pytest.approx((9 * 50 + 600) * MB)
    # Never unloaded: loaded from 30 s to 20 min (1170 s), busy 100 s of them.
    never = simulate_policy(trace, NoUnload())
    assert never.wasted_mb_s == pytest.approx((1170 - 100) * MB)


def test_the_start_model_keeps_arrivals_at_the_minute_start_but_not_the_busy_minute() -> None:
    # All three at 0 s: the two after the first come while it runs (warm, no idle time); the
    # app is busy 1 s, then kept 600 s: 600 s wasted, 0 cold after the first.
    counts = (3,) + (0,) * 19
    d = DurationPercentiles(*([1000.0] * 10))
    trace = group_apps([TraceFunction("o", "a", "f", "http", counts, d)], {}, MB, arrivals="start")
    result = simulate_policy(trace, FixedKeepAlive(600.0))
    assert result.cold_starts == 1
    assert result.wasted_mb_s == pytest.approx(600 * MB)
