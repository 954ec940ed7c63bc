"""Invariants of the idle-time histogram and the hybrid policy, for any idle times."""

from __future__ import annotations

from hypothesis import event, given
from hypothesis import strategies as st

from faasd_py.scheduler import HybridConfig, HybridPolicy, IdleHistogram, Reason

RANGE = 4 * 3600.0
# Idle times as apps show them: within the range, around its edge, far beyond it.
idle_times = st.one_of(
    st.floats(0, RANGE, allow_nan=False),
    st.floats(RANGE * 0.9, RANGE * 1.1, allow_nan=False),
    st.floats(0, 30 * 86400, allow_nan=False),
    st.sampled_from([0.0, 60.0, 600.0, 3600.0, 86400.0]),
)
configs = st.builds(
    HybridConfig,
    bin_width=st.sampled_from([60.0, 120.0, 360.0]),
    margin=st.floats(0, 0.5),
    head_percentile=st.floats(0, 50),
    tail_percentile=st.floats(50, 100),
    cv_threshold=st.floats(0, 5),
    oob_threshold=st.floats(0.01, 1),
    min_samples=st.integers(1, 20),
)


def histogram_of(values: list[float]) -> IdleHistogram:
    histogram = IdleHistogram()
    for value in values:
        histogram.observe(value)
    return histogram


@given(st.lists(idle_times, max_size=200), configs)
def test_keepalive_covers_prewarm_and_windows_stay_in_bounds(
    idle: list[float], config: HybridConfig
) -> None:
    app = HybridPolicy(config).new_app()
    for value in idle:
        app.observe(0.0, value)
        windows = app.windows(0.0)
        assert 0 <= windows.prewarm <= windows.keepalive
        if windows.reason is Reason.HISTOGRAM:
            assert windows.prewarm < config.range
            assert windows.keepalive <= config.range * (1 + config.margin) + 1e-6
        elif windows.reason is Reason.FALLBACK:
            assert (windows.prewarm, windows.keepalive) == (0.0, config.range)
        else:
            assert windows.reason is Reason.FORECAST
            series = app.histogram.oob_series
            assert min(series) * config.forecast_prewarm <= windows.prewarm + 1e-6
            assert windows.keepalive <= max(series) * 1.15 + 1e-6


@given(st.lists(idle_times, max_size=100), st.lists(idle_times, max_size=100))
def test_merging_is_observing_both(first: list[float], second: list[float]) -> None:
    merged = histogram_of(first)
    merged.merge(histogram_of(second))
    both = histogram_of(first + second)
    assert merged.counts() == both.counts()
    assert (merged.oob, merged.oob_series) == (both.oob, both.oob_series)
    assert merged.cv() == both.cv() or abs(merged.cv() - both.cv()) < 1e-9


@given(st.lists(st.floats(0, RANGE * 0.999), min_size=1, max_size=200))
def test_percentiles_are_monotone_and_match_the_sorted_times(idle: list[float]) -> None:
    histogram = histogram_of(idle)
    bins = [histogram.percentile_bin(p) for p in (0, 1, 5, 25, 50, 75, 95, 99, 100)]
    assert bins == sorted(bins)
    ordered = sorted(idle)
    assert bins[0] == int(ordered[0] // 60)
    assert bins[-1] == int(ordered[-1] // 60)


@given(st.lists(st.floats(0, RANGE * 0.999), min_size=1, max_size=100), idle_times)
def test_one_more_time_moves_no_percentile_the_other_way(idle: list[float], more: float) -> None:
    # A time above every other one can only raise a percentile's bin.
    histogram = histogram_of(idle)
    before = [histogram.percentile_bin(p) for p in (5, 50, 99)]
    histogram.observe(max(idle) + more)
    if histogram.in_range:
        after = [histogram.percentile_bin(p) for p in (5, 50, 99)]
        assert all(a >= b for a, b in zip(after, before, strict=True))


@given(st.lists(idle_times, max_size=100))
def test_a_state_round_trip_keeps_everything(idle: list[float]) -> None:
    histogram = histogram_of(idle)
    restored = IdleHistogram.from_state(histogram.to_state())
    assert restored.statistics() == histogram.statistics()


@given(st.lists(idle_times, max_size=100), idle_times, st.integers(1, 50))
def test_observing_a_time_many_times_at_once_is_observing_it_one_by_one(
    before: list[float], idle: float, count: int
) -> None:
    at_once, one_by_one = histogram_of(before), histogram_of(before)
    at_once.observe(idle, count)
    for _ in range(count):
        one_by_one.observe(idle)
    assert at_once.to_state() == one_by_one.to_state()
    assert at_once.cv() == one_by_one.cv()


first_bin = st.floats(0, 59.9, allow_nan=False)


@given(
    st.lists(st.one_of(idle_times, first_bin), max_size=120),
    configs,
    first_bin,
    st.integers(1, 200),
)
def test_a_settled_app_finds_every_further_first_bin_idle_time_warm(
    before: list[float], config: HybridConfig, idle: float, count: int
) -> None:
    # What the simulator relies on to count a settled stretch without asking (HybridApp.settled).
    app = HybridPolicy(config).new_app()
    for value in before:
        app.observe(0.0, value)
    settled = app.settled(idle)
    event(f"settled: {settled}")
    if not settled:
        return
    for _ in range(count):
        prewarm, keepalive, _, _ = app.windows(0.0)
        assert prewarm == 0 and idle <= keepalive
        app.observe(0.0, idle)
        assert app.settled(idle)
