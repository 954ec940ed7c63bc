"""The latency histogram: percentiles within 0.1% of the exact ones, exact extremes, merge, JSON."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.loadgen import Histogram

# Latencies as a load generator sees them: mostly around a typical value, some far out.
latencies = st.one_of(
    st.integers(Histogram.LOWEST, Histogram.HIGHEST),
    st.integers(1, 5_000),
    st.integers(900, 1_100),
)
samples = st.lists(latencies, min_size=1, max_size=400)
percents = st.one_of(
    st.sampled_from([0, 1, 25, 50, 75, 90, 99, 99.9, 99.99, 100]),
    st.floats(0, 100, allow_nan=False),
)


def nearest_rank(values: list[int], p: float) -> int:
    """The exact percentile: the value at rank ceil(p / 100 * n) of the sorted list (at least 1),
    with p read as the decimal it is written as."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(repr(float(p))) * len(ordered) / 100))
    return ordered[rank - 1]


def histogram_of(values: list[int]) -> Histogram:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    return histogram


def close(reported: int, exact: int) -> bool:
    return abs(reported - exact) <= max(1, exact / 1000)


# --- percentiles ---------------------------------------------------------------------------------


@given(samples, percents)
def test_every_percentile_is_within_a_thousandth_of_the_exact_one(
    values: list[int], p: float
) -> None:
    reported = Histogram.percentile(histogram_of(values), p)
    exact = nearest_rank(values, p)
    assert close(reported, exact), (p, reported, exact)


@given(samples)
def test_percentiles_never_leave_the_recorded_range_and_never_decrease(values: list[int]) -> None:
    histogram = histogram_of(values)
    ps = [0, 10, 50, 90, 99, 99.9, 100]
    reported = histogram.percentiles(ps)
    assert reported == [histogram.percentile(p) for p in ps]
    assert reported == sorted(reported)
    assert min(values) <= reported[0] and reported[-1] <= max(values)


@given(samples)
def test_p0_is_the_exact_minimum_and_p100_the_exact_maximum(values: list[int]) -> None:
    histogram = histogram_of(values)
    assert histogram.percentile(0) == min(values)
    assert histogram.percentile(100) == max(values)


def test_a_known_distribution_reads_as_expected() -> None:
    # 1..10000 us once each: p50 is 5000 us, p99 is 9900 us, to 3 significant digits.
    histogram = histogram_of(list(range(1, 10_001)))
    assert histogram.percentile(50) == pytest.approx(5000, rel=1e-3)
    assert histogram.percentile(90) == pytest.approx(9000, rel=1e-3)
    assert histogram.percentile(99) == pytest.approx(9900, rel=1e-3)
    assert histogram.percentile(99.9) == pytest.approx(9990, rel=1e-3)


def test_values_below_2048_us_are_exact() -> None:
    histogram = histogram_of([7, 250, 1999, 2047])
    assert histogram.percentiles([25, 50, 75, 100]) == [7, 250, 1999, 2047]


def test_p999_of_a_thousand_values_is_the_999th_not_the_last() -> None:
    # 99.9 as written, not the binary float just above it: a one-off spike must not become p99.9.
    values = [1000] * 999 + [5_000_000]
    assert histogram_of(values).percentile(99.9) == 1000


def test_a_tail_that_is_1_percent_of_the_requests_shows_at_p99_9_but_not_at_p98() -> None:
    histogram = Histogram()
    histogram.record(2_000, count=990)
    histogram.record(800_000, count=10)
    assert histogram.percentile(98) == 2_000
    assert histogram.percentile(99.9) == pytest.approx(800_000, rel=1e-3)


@pytest.mark.parametrize("p", [-0.1, 100.01, math.nan, math.inf])
def test_percentiles_outside_0_to_100_are_refused(p: float) -> None:
    with pytest.raises(ValueError, match="a percentile must be between 0 and 100"):
        histogram_of([10]).percentile(p)


# --- exact summaries -----------------------------------------------------------------------------


@given(samples)
def test_count_min_max_and_mean_are_exact(values: list[int]) -> None:
    histogram = histogram_of(values)
    assert histogram.count == len(values) == len(histogram)
    assert histogram.min == min(values)
    assert histogram.max == max(values)
    assert histogram.mean == pytest.approx(sum(values) / len(values), rel=1e-12)
    assert histogram.total == sum(values)


def test_recording_with_a_count_is_recording_that_many_times() -> None:
    once = Histogram()
    once.record(1234, count=5)
    assert once == histogram_of([1234] * 5)
    with pytest.raises(ValueError, match="count must be at least 1"):
        once.record(1234, count=0)


def test_an_empty_histogram_reads_as_zeros() -> None:
    histogram = Histogram()
    assert not histogram
    assert (histogram.count, histogram.min, histogram.max, histogram.mean) == (0, 0, 0, 0.0)
    assert histogram.percentile(99) == 0
    assert histogram.cdf() == []
    assert repr(histogram) == "Histogram(empty)"


def test_values_below_1_us_count_as_1_us() -> None:
    histogram = histogram_of([0, -5, 3])
    assert (histogram.count, histogram.min, histogram.max, histogram.clamped) == (3, 1, 3, 0)


def test_values_above_100_s_count_as_100_s_and_are_reported_as_clamped() -> None:
    histogram = histogram_of([1_000, 250_000_000, 100_000_001])
    assert histogram.count == 3
    assert histogram.clamped == 2
    assert histogram.max == Histogram.HIGHEST
    assert histogram.percentile(100) == Histogram.HIGHEST
    assert histogram_of([Histogram.HIGHEST]).clamped == 0


# --- merging and JSON ----------------------------------------------------------------------------


@given(samples, st.lists(st.integers(0, 400), max_size=5))
def test_merging_the_parts_of_a_run_gives_the_histogram_of_the_whole(
    values: list[int], cuts: list[int]
) -> None:
    bounds = [0, *sorted(cut % (len(values) + 1) for cut in cuts), len(values)]
    merged = Histogram()
    for start, end in itertools.pairwise(bounds):
        merged.merge(histogram_of(values[start:end]))
    whole = histogram_of(values)
    assert merged == whole
    assert merged.percentiles([50, 99, 100]) == whole.percentiles([50, 99, 100])
    assert (merged.min, merged.max, merged.mean) == (whole.min, whole.max, whole.mean)


def test_merging_an_empty_histogram_changes_nothing() -> None:
    histogram = histogram_of([5, 500, 5_000])
    before = histogram.copy()
    histogram.merge(Histogram())
    assert histogram == before
    empty = Histogram()
    empty.merge(before)
    assert empty == before


def test_copy_is_independent() -> None:
    histogram = histogram_of([10])
    twin = histogram.copy()
    twin.record(20)
    assert histogram.count == 1 and twin.count == 2


@given(st.lists(latencies, max_size=400))
def test_json_round_trip_is_lossless_through_json_text(values: list[int]) -> None:
    histogram = histogram_of(values)
    histogram.record(300_000_000)  # clamped values survive too
    text = json.dumps(histogram.to_json())
    again = Histogram.from_json(json.loads(text))
    assert again == histogram
    assert again.clamped == histogram.clamped == 1
    assert again.percentiles([0, 50, 99.9, 100]) == histogram.percentiles([0, 50, 99.9, 100])
    # Recording goes on after a round trip.
    again.record(7)
    assert again.count == histogram.count + 1


def test_an_empty_histogram_round_trips() -> None:
    assert Histogram.from_json(json.loads(json.dumps(Histogram().to_json()))) == Histogram()


def test_json_size_follows_the_distinct_latencies_not_the_number_of_requests() -> None:
    # A per-second timeline keeps one histogram per second: a busy second must stay small.
    histogram = Histogram()
    for i in range(1_000_000):
        histogram.record(1_000 + (i % 20) * 100)
    data = histogram.to_json()
    assert len(data["buckets"]) == 2 * 20
    assert len(json.dumps(data)) < 400


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "not a histogram"),
        ({"format": "other"}, "not a histogram"),
        ({"format": "hdr-log-linear-us-3", "count": 1}, "lacks the field"),
        (
            {
                "format": "hdr-log-linear-us-3",
                **{"count": 1, "min": 5, "max": 5, "sum": 5, "clamped": 0},
                "buckets": [5, "1"],
            },
            "whole numbers",
        ),
        (
            {
                "format": "hdr-log-linear-us-3",
                **{"count": 2, "min": 5, "max": 5, "sum": 10, "clamped": 0},
                "buckets": [5, 1],
            },
            "do not add up",
        ),
        (
            {
                "format": "hdr-log-linear-us-3",
                **{"count": 1, "min": 6, "max": 6, "sum": 6, "clamped": 0},
                "buckets": [5, 1],
            },
            "min and max",
        ),
    ],
)
def test_from_json_refuses_what_to_json_did_not_write(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Histogram.from_json(data)


# --- CDF -----------------------------------------------------------------------------------------


@given(samples)
def test_the_cdf_rises_to_one_over_the_recorded_range(values: list[int]) -> None:
    points = histogram_of(values).cdf()
    xs = [x for x, _ in points]
    fractions = [f for _, f in points]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert xs[0] >= min(values) and xs[-1] == max(values)
    # Each point says what share of the values are at most (about) its value.
    for x, fraction in points:
        share = sum(v <= x for v in values) / len(values)
        assert share == pytest.approx(fraction)
