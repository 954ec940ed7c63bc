"""Open-loop schedules: rates from the command line, Poisson and even arrivals, partitions."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faasd_py.loadgen import (
    Arrival,
    RateStep,
    count_arrivals,
    expected_arrivals,
    parse_rate,
    partition,
    poisson_arrivals,
    rate_steps,
    schedule_end,
    uniform_arrivals,
)

# --- --rate --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2000", [2000.0]),
        (" 0.5 ", [0.5]),
        ("500:5000:500", [500.0 * i for i in range(1, 11)]),
        ("100:250:100", [100.0, 200.0]),  # stop is included only when a step lands on it
        ("7:7:1", [7.0]),
        ("0.1:0.3:0.1", [0.1, 0.2, 0.3]),
        ("1e3", [1000.0]),
    ],
)
def test_parse_rate_reads_one_rate_or_inclusive_steps(text: str, expected: list[float]) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5", "the rate must not be negative, got '-5'"),
        ("0", "the rate must be above zero"),
        ("fast", "expected a rate such as 2000 or start:stop:step such as 500:5000:500"),
        ("", "expected a rate such as 2000"),
        ("1:2", "expected a rate such as 2000"),
        ("1:2:3:4", "expected a rate such as 2000"),
        ("500:5000:0", "the step must be above zero"),
        ("500:5000:-5", "the step must not be negative"),
        ("-500:5000:500", "the start rate must not be negative"),
        ("5000:500:500", "the stop rate 500 is below the start rate 5000"),
        ("inf", "the rate must be a finite number"),
        ("nan", "the rate must be a finite number"),
    ],
)
def test_parse_rate_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate(text)


# --- steps ---------------------------------------------------------------------------------------


def test_one_rate_is_one_step_of_the_whole_duration() -> None:
    assert rate_steps([2000.0], step=10.0, duration=30.0) == [RateStep(0.0, 2000.0, 30.0)]


def test_several_rates_follow_each_other_a_step_apart() -> None:
    steps = rate_steps(parse_rate("500:2000:500"), step=10.0, duration=None)
    assert steps == [
        RateStep(0.0, 500.0, 10.0),
        RateStep(10.0, 1000.0, 10.0),
        RateStep(20.0, 1500.0, 10.0),
        RateStep(30.0, 2000.0, 10.0),
    ]
    for before, after in itertools.pairwise(steps):
        assert before.end == after.start
    assert schedule_end(steps) == 40.0
    assert expected_arrivals(steps) == 50_000


def test_a_duration_with_several_rates_ends_the_run_there() -> None:
    steps = rate_steps([100.0, 200.0, 300.0, 400.0], step=10.0, duration=25.0)
    assert steps == [
        RateStep(0.0, 100.0, 10.0),
        RateStep(10.0, 200.0, 10.0),
        RateStep(20.0, 300.0, 5.0),
    ]


@pytest.mark.parametrize(
    ("rates", "step", "duration", "message"),
    [
        ([100.0], 10.0, 0.0, "the duration must be above zero"),
        ([100.0], 10.0, -1.0, "the duration must be above zero"),
        ([100.0], 10.0, None, "a single rate needs a duration"),
        ([100.0, 200.0], 0.0, None, "the step must be above zero"),
        ([], 10.0, 30.0, "at least one rate"),
        ([-100.0], 10.0, 30.0, "a rate must be a finite number above 0"),
        ([math.inf], 10.0, 30.0, "a rate must be a finite number above 0"),
    ],
)
def test_rate_steps_refuses_runs_that_make_no_sense(
    rates: list[float], step: float, duration: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        rate_steps(rates, step, duration)


def test_overlapping_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="steps must follow each other"):
        poisson_arrivals([RateStep(0.0, 10.0, 10.0), RateStep(5.0, 10.0, 10.0)], "f", seed=1)


# --- Poisson arrivals ----------------------------------------------------------------------------


def test_a_long_poisson_schedule_keeps_the_asked_rate() -> None:
    arrivals = list(poisson_arrivals(rate_steps([2000.0], 1.0, 60.0), "hello", seed=7))
    assert len(arrivals) / 60.0 == pytest.approx(2000.0, rel=0.02)
    assert all(0.0 <= a.at < 60.0 for a in arrivals)
    assert {a.function for a in arrivals} == {"hello"}
    assert {a.duration_ms for a in arrivals} == {None}


def test_poisson_gaps_are_exponential() -> None:
    times = [a.at for a in poisson_arrivals(rate_steps([500.0], 1.0, 100.0), "f", seed=3)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / 500, rel=0.03)
    # An exponential distribution: standard deviation equal to the mean, and e^-1 of the gaps
    # longer than the mean. Even spacing would give 0 and 0; bunching far more than 1.
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.05)
    assert sum(g > mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)
    assert sum(g > 3 * mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-3), abs=0.01)


def test_poisson_arrivals_are_sorted_and_the_same_for_the_same_seed() -> None:
    steps = rate_steps([100.0, 1000.0], step=5.0, duration=None)
    first = list(poisson_arrivals(steps, "f", seed=42))
    assert [a.at for a in first] == sorted(a.at for a in first)
    assert first == list(poisson_arrivals(steps, "f", seed=42))
    assert first != list(poisson_arrivals(steps, "f", seed=43))


def test_each_step_runs_at_its_own_rate() -> None:
    steps = rate_steps([200.0, 2000.0, 800.0], step=20.0, duration=None)
    arrivals = list(poisson_arrivals(steps, "f", seed=11))
    for step in steps:
        inside = sum(step.start <= a.at < step.end for a in arrivals)
        assert inside / step.duration == pytest.approx(step.rate, rel=0.05)
    assert len(arrivals) == pytest.approx(expected_arrivals(steps), rel=0.03)


def test_schedules_are_lazy_so_a_long_run_does_not_need_memory_up_front() -> None:
    endless = poisson_arrivals([RateStep(0.0, 1e6, 1e9)], "f", seed=1)
    assert len(list(itertools.islice(endless, 10))) == 10


# --- even arrivals -------------------------------------------------------------------------------


def test_uniform_arrivals_are_evenly_spaced_at_each_step_rate() -> None:
    steps = rate_steps([10.0, 4.0], step=1.0, duration=None)
    times = [a.at for a in uniform_arrivals(steps, "f")]
    assert times == pytest.approx([i / 10 for i in range(10)] + [1.0, 1.25, 1.5, 1.75])


def test_uniform_arrivals_do_not_drift_over_a_long_run() -> None:
    arrivals = list(uniform_arrivals([RateStep(0.0, 3000.0, 100.0)], "f"))
    assert len(arrivals) == 300_000
    assert arrivals[-1].at == pytest.approx(100.0 - 1 / 3000, abs=1e-9)


def test_count_arrivals_counts_a_schedule() -> None:
    assert count_arrivals(uniform_arrivals([RateStep(0.0, 50.0, 2.0)], "f")) == 100


# --- partitions ----------------------------------------------------------------------------------


@given(
    st.lists(st.floats(0, 1000, allow_nan=False), max_size=200),
    st.integers(1, 16),
)
def test_partitions_are_disjoint_and_together_the_whole_schedule(
    times: list[float], procs: int
) -> None:
    whole = [Arrival(at, f"f{i}") for i, at in enumerate(sorted(times))]
    shares = [list(partition(iter(whole), procs, index)) for index in range(procs)]
    assert sum(len(share) for share in shares) == len(whole)
    assert sorted((a for share in shares for a in share), key=whole.index) == whole
    for share in shares:
        assert share == sorted(share, key=lambda a: a.at)
        # Shares differ by at most one arrival: every process gets its fair part.
        assert len(share) in (len(whole) // procs, len(whole) // procs + 1)


def test_every_process_computing_the_same_seed_gets_its_own_share() -> None:
    steps = rate_steps([1000.0], 1.0, 5.0)
    whole = list(poisson_arrivals(steps, "f", seed=5))
    shares = [list(partition(poisson_arrivals(steps, "f", seed=5), 4, i)) for i in range(4)]
    assert sorted((a for s in shares for a in s), key=lambda a: a.at) == whole
    assert len({a.at for s in shares for a in s}) == len(whole)


@pytest.mark.parametrize(("procs", "index"), [(0, 0), (4, 4), (4, -1)])
def test_partition_refuses_impossible_shares(procs: int, index: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        partition([], procs, index)
