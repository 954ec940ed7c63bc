"""The hybrid keep-alive policy rule by rule, with scripted idle times, and its baselines."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from faasd_py.scheduler import (
    FixedKeepAlive,
    HybridConfig,
    HybridPolicy,
    IdleHistogram,
    NoUnload,
    Reason,
    Windows,
    forecast_next,
    parse_policy,
)

MINUTE = 60.0
HOUR = 3600.0


def hybrid_after(idle_times: list[float], **config: float) -> Windows:
    """The windows of a fresh hybrid app that has seen ``idle_times`` (seconds), in order."""
    app = HybridPolicy(HybridConfig(**config)).new_app()  # type: ignore[arg-type]
    now = 0.0
    for idle in idle_times:
        app.observe(now, now + idle)
        now += idle + 1.0
    return app.windows(now)


# --- the rules ----------------------------------------------------------------------------------


def test_a_periodic_app_is_prewarmed_just_before_its_period() -> None:
    windows = hybrid_after([10 * MINUTE] * 20)
    assert windows.reason is Reason.HISTOGRAM
    # Bin 10: head = lower edge 10 min x 0.9, tail = upper edge 11 min x 1.1.
    assert windows.prewarm == pytest.approx(10 * MINUTE * 0.9)
    assert windows.keepalive == pytest.approx(11 * MINUTE * 1.1)
    assert windows.prewarm > 0 and windows.unload_now


def test_head_and_tail_are_rounded_to_their_bins_then_given_their_margins() -> None:
    # 100 times: 5 in bin 2, 90 in bin 10, 5 in bin 30. Nearest rank: 5th -> 5th smallest
    # (bin 2), 99th -> 99th smallest (bin 30). Times within the bins are off the edges.
    idle = [2 * MINUTE + 59] * 5 + [10 * MINUTE + 1] * 90 + [30 * MINUTE + 30] * 5
    windows = hybrid_after(idle)
    assert windows.reason is Reason.HISTOGRAM
    assert windows.prewarm == pytest.approx(2 * MINUTE * 0.9, abs=1e-9)
    assert windows.keepalive == pytest.approx(31 * MINUTE * 1.1, abs=1e-9)


def test_the_margin_and_percentiles_are_parameters() -> None:
    idle = [2 * MINUTE] * 5 + [10 * MINUTE] * 90 + [30 * MINUTE] * 5
    windows = hybrid_after(idle, margin=0.2, head_percentile=50, tail_percentile=90)
    assert windows.prewarm == pytest.approx(10 * MINUTE * 0.8)
    assert windows.keepalive == pytest.approx(11 * MINUTE * 1.2)


def test_an_idle_time_in_bin_zero_means_no_prewarm() -> None:
    windows = hybrid_after([20.0] * 10)
    assert (windows.prewarm, windows.reason) == (0.0, Reason.HISTOGRAM)
    assert windows.keepalive == pytest.approx(MINUTE * 1.1)
    assert not windows.unload_now


def test_a_bursty_app_whose_histogram_is_flat_falls_back() -> None:
    # One idle time in every bin: the bin counts do not vary at all (CV 0).
    windows = hybrid_after([(i + 0.5) * MINUTE for i in range(240)])
    assert windows == Windows(0.0, 4 * HOUR, Reason.FALLBACK, windows.since)


def test_the_cv_threshold_decides_what_is_representative() -> None:
    # Two bins with 10 each over 240 bins: mean 1/12, CV = sqrt(200/240 - 1/144) / (1/12).
    idle = [1 * MINUTE] * 10 + [3 * MINUTE] * 10
    cv = math.sqrt(200 / 240 - 1 / 144) * 12
    assert hybrid_after(idle, cv_threshold=cv - 0.01).reason is Reason.HISTOGRAM
    assert hybrid_after(idle, cv_threshold=cv + 0.01).reason is Reason.FALLBACK


def test_too_few_samples_fall_back_until_min_samples() -> None:
    assert hybrid_after([10 * MINUTE] * 4).reason is Reason.FALLBACK
    assert hybrid_after([10 * MINUTE] * 5).reason is Reason.HISTOGRAM
    assert hybrid_after([10 * MINUTE] * 9, min_samples=10).reason is Reason.FALLBACK
    # A new app: nothing learnt, keep it for the whole range.
    assert hybrid_after([]) == Windows(0.0, 4 * HOUR, Reason.FALLBACK, 0.0)


def test_a_daily_app_goes_to_the_forecast() -> None:
    windows = hybrid_after([24 * HOUR] * 6)
    assert windows.reason is Reason.FORECAST
    assert windows.prewarm == pytest.approx(0.85 * 24 * HOUR)
    # Loaded for 0.30 of the forecast after the pre-warm: until 1.15 x the forecast.
    assert windows.keepalive == pytest.approx(1.15 * 24 * HOUR)


def test_the_oob_share_goes_to_the_forecast_at_the_threshold() -> None:
    five_five = [5 * MINUTE] * 5 + [6 * HOUR] * 5
    assert hybrid_after(five_five).reason is Reason.FORECAST
    six_four = [5 * MINUTE] * 6 + [6 * HOUR] * 4
    assert hybrid_after(six_four).reason is Reason.HISTOGRAM
    assert hybrid_after(six_four, oob_threshold=0.4).reason is Reason.FORECAST


def test_the_range_and_bin_width_are_parameters() -> None:
    # 10 bins of 6 s: 20 s is bin 3, 2 min out of bounds.
    windows = hybrid_after([20.0] * 10, range=60.0, bin_width=6.0)
    assert windows.prewarm == pytest.approx(3 * 6 * 0.9)
    assert windows.keepalive == pytest.approx(4 * 6 * 1.1)
    assert hybrid_after([2 * MINUTE] * 10, range=60.0, bin_width=6.0).reason is Reason.FORECAST


def test_an_arrival_while_the_app_runs_is_no_idle_time() -> None:
    app = HybridPolicy().new_app()
    app.observe(100.0, 50.0)
    assert app.histogram.samples == 0
    app.observe(100.0, 100.0)
    assert app.histogram.counts()[0] == 1


def test_windows_count_from_now() -> None:
    windows = hybrid_after([10 * MINUTE] * 20)
    later = windows._replace(since=1000.0)
    assert later.load_at == pytest.approx(1000 + 540)
    assert later.unload_at == pytest.approx(1000 + 726)
    assert later.warm_at(1000 + 600) and not later.warm_at(1000 + 500)


# --- the forecast -------------------------------------------------------------------------------


def test_a_constant_series_forecasts_itself_exactly() -> None:
    assert forecast_next([86400.0] * 7) == 86400.0


def test_a_short_series_forecasts_its_geometric_mean() -> None:
    assert forecast_next([5 * HOUR, 20 * HOUR]) == pytest.approx(10 * HOUR)


def test_a_correlated_series_leans_towards_its_last_value() -> None:
    rising = [5 * HOUR, 6 * HOUR, 7 * HOUR, 8 * HOUR, 9 * HOUR, 10 * HOUR]
    geometric_mean = math.exp(sum(map(math.log, rising)) / len(rising))
    assert geometric_mean < forecast_next(rising) <= 10 * HOUR
    alternating = [5 * HOUR, 10 * HOUR] * 4
    # Negative lag-1 correlation: after a long gap, a short one.
    assert forecast_next(alternating) < math.sqrt(50) * HOUR


def test_a_forecast_needs_positive_times() -> None:
    with pytest.raises(ValueError):
        forecast_next([])
    with pytest.raises(ValueError):
        forecast_next([0.0, 5.0])


# --- state, baselines, names ------------------------------------------------------------------


def test_an_app_state_survives_a_json_round_trip() -> None:
    policy = HybridPolicy()
    app = policy.new_app()
    for idle in [10 * MINUTE] * 8 + [30 * HOUR, 3.0]:
        app.observe(0.0, idle)
    saved = json.loads(json.dumps(app.to_state()))
    restored = policy.restore_app(saved)
    assert restored.windows(5.0) == app.windows(5.0)
    assert restored.histogram.counts() == app.histogram.counts()
    assert restored.histogram.oob_series == (30 * HOUR,)
    # A state is a few bins, not 240 of them.
    assert len(saved["histogram"]["counts"]) == 2


def test_a_state_of_other_bins_starts_afresh_and_a_bad_one_is_refused() -> None:
    app = HybridPolicy().new_app()
    app.observe(0.0, 600.0)
    other = HybridPolicy(HybridConfig(bin_width=30.0))
    assert other.restore_app(app.to_state()).histogram.samples == 0
    with pytest.raises(ValueError):
        HybridPolicy().restore_app({"histogram": {"version": 99}})
    with pytest.raises(ValueError):
        IdleHistogram.from_state({**IdleHistogram().to_state(), "counts": [[240, 1]]})


def test_baselines_do_not_learn() -> None:
    fixed = FixedKeepAlive(15 * MINUTE).new_app()
    fixed.observe(0.0, 10.0)
    assert fixed.windows(7.0) == Windows(0.0, 15 * MINUTE, Reason.FIXED, 7.0)
    assert not fixed.learns
    assert NoUnload().new_app().windows(0.0).keepalive == math.inf


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("hybrid", "hybrid:4h"),
        ("hybrid:2h", "hybrid:2h"),
        ("fixed:10m", "fixed:10m"),
        ("fixed:90m", "fixed:90m"),
        ("fixed:45s", "fixed:45s"),
        ("FIXED:1h", "fixed:1h"),
        ("none", "no-unload"),
        ("no-unload", "no-unload"),
    ],
)
def test_policies_by_name(text: str, name: str) -> None:
    assert parse_policy(text).name == name


def test_hybrid_by_name_keeps_the_other_parameters() -> None:
    policy = parse_policy("hybrid:1h", HybridConfig(bin_width=30.0, margin=0.2))
    assert isinstance(policy, HybridPolicy)
    assert (policy.config.range, policy.config.bins, policy.config.margin) == (3600.0, 120, 0.2)


@pytest.mark.parametrize("text", ["fixed", "fixed:soon", "lru", "hybrid:7s", "none:1m", ""])
def test_bad_policy_names_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="policy"):
        parse_policy(text)


@pytest.mark.parametrize(
    "config",
    [
        {"range": 0.0},
        {"range": 90.0},  # not a whole number of 60 s bins
        {"head_percentile": 99.0, "tail_percentile": 5.0},
        {"margin": 1.0},
        {"oob_threshold": 0.0},
        {"min_samples": 0},
    ],
)
def test_bad_hybrid_parameters_are_refused(config: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HybridConfig(**config)  # type: ignore[arg-type]


def test_the_policies_import_without_numpy() -> None:
    # The worker drives the policies and must not pay for numpy; only the simulator needs it.
    script = (
        "import sys, faasd_py.scheduler as s; "
        "s.parse_policy('hybrid').new_app().windows(0.0); "
        "sys.exit('numpy' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert done.returncode == 0


def test_statistics_say_what_the_windows_are_and_why() -> None:
    app = HybridPolicy().new_app()
    for _ in range(20):
        app.observe(0.0, 10 * MINUTE)
    stats = app.statistics()
    assert stats.reason is Reason.HISTOGRAM
    assert stats.prewarm == pytest.approx(540.0)
    assert stats.histogram is not None and stats.histogram.in_range == 20
    fixed = FixedKeepAlive(600.0).new_app().statistics()
    assert (fixed.reason, fixed.keepalive, fixed.histogram) == (Reason.FIXED, 600.0, None)


def test_an_idle_time_is_observed_at_least_once_and_not_negative() -> None:
    histogram = IdleHistogram()
    with pytest.raises(ValueError, match="count must be at least 1"):
        histogram.observe(60.0, 0)
    with pytest.raises(ValueError, match="an idle time must be >= 0"):
        histogram.observe(-1.0, 3)
    histogram.observe(5 * HOUR, 40)
    # Out of bounds many times over: counted in full, the series keeps only its history.
    assert histogram.oob == 40 and len(histogram.oob_series) == 32
