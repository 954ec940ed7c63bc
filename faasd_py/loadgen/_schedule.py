"""When requests are meant to be sent: open-loop schedules of arrivals.

A schedule is a lazy, time-ordered stream of :class:`Arrival` values, each with the time after the
run's start at which its request is due. The engine sends every request at its time whether or not
earlier ones have answered, and measures latency from that intended time, so a slow server cannot
hide its slowness by slowing the generator (no coordinated omission).

Schedules are pure and seeded: every process of a run computes the same schedule from the same
seed, and keeps its share with :func:`partition`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request of a schedule."""

    at: float
    """Seconds after the run's start when the request is meant to be sent."""
    function: str
    duration_ms: float | None = None
    """For trace functions: how long the invoked function should sleep or spin."""


@dataclass(frozen=True, slots=True)
class RateStep:
    """A stretch of a run: ``rate`` requests per second from ``start`` for ``duration`` seconds."""

    start: float
    rate: float
    duration: float

    @property
    def end(self) -> float:
        return self.start + self.duration


def _positive_number(text: str, what: str, original: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"expected a rate such as 2000 or start:stop:step such as 500:5000:500, "
            f"got {original!r}"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {text!r} in {original!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {text!r} in {original!r}")
    if value == 0:
        raise ValueError(f"{what} must be above zero, got {text!r} in {original!r}")
    return value


def parse_rate(text: str) -> list[float]:
    """Requests per second from ``--rate``: "2000" -> [2000.0]; "500:5000:500" -> 500 .. 5000.

    ``start:stop:step`` includes ``stop`` when the steps land on it. ValueError names the problem:
    a negative or zero rate or step, ``stop`` below ``start``, or text that is no rate at all.
    """
    original = text
    parts = text.strip().split(":")
    if len(parts) == 1:
        return [_positive_number(parts[0].strip(), "the rate", original)]
    if len(parts) != 3:
        raise ValueError(
            f"expected a rate such as 2000 or start:stop:step such as 500:5000:500, "
            f"got {original!r}"
        )
    start, stop, step = (
        _positive_number(part.strip(), what, original)
        for part, what in zip(parts, ("the start rate", "the stop rate", "the step"), strict=True)
    )
    if stop < start:
        raise ValueError(
            f"the stop rate {stop:g} is below the start rate {start:g} in {original!r}"
        )
    # A little slack so that 0.1:0.3:0.1 includes 0.3 despite binary fractions.
    steps = math.floor((stop - start) / step + 1e-9)
    return [round(start + i * step, 9) for i in range(steps + 1)]


def rate_steps(rates: Sequence[float], step: float, duration: float | None) -> list[RateStep]:
    """The stretches of a run, back to back from time 0.

    One rate: one stretch of ``duration`` seconds. Several rates: each lasts ``step`` seconds; a
    ``duration`` as well ends the run there (the stretch it falls in is cut short, later ones are
    dropped), and None runs every step.
    """
    if not rates:
        raise ValueError("at least one rate is needed")
    for rate in rates:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"a rate must be a finite number above 0, got {rate!r}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"the duration must be above zero, got {duration!r}")
    if len(rates) == 1:
        if duration is None:
            raise ValueError("a single rate needs a duration, such as --duration 30s")
        return [RateStep(0.0, float(rates[0]), float(duration))]
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"the step must be above zero when stepping through rates, got {step!r}")
    end = math.inf if duration is None else duration
    steps: list[RateStep] = []
    for i, rate in enumerate(rates):
        start = i * step
        if start >= end:
            break
        steps.append(RateStep(start, float(rate), min(step, end - start)))
    return steps


def _checked(steps: Sequence[RateStep]) -> list[RateStep]:
    previous_end = 0.0
    for step in steps:
        if not (step.rate > 0 and math.isfinite(step.rate)):
            raise ValueError(f"a rate must be a finite number above 0, got {step.rate!r}")
        if step.duration < 0 or not math.isfinite(step.end):
            raise ValueError(f"a step must last a finite time >= 0, got {step.duration!r}")
        if step.start < previous_end:
            raise ValueError(
                f"steps must follow each other in time: one starts at {step.start:g} s, "
                f"before the previous one ends at {previous_end:g} s"
            )
        previous_end = step.end
    return list(steps)


def poisson_arrivals(steps: Sequence[RateStep], function: str, seed: int) -> Iterator[Arrival]:
    """A Poisson process at each step's rate: exponential gaps, time-ordered, the same per seed."""
    checked = _checked(steps)

    def generate() -> Iterator[Arrival]:
        rng = random.Random(seed)
        gap = rng.expovariate
        for step in checked:
            # Memoryless: starting afresh at each step's start is exact for a Poisson process.
            at, end, rate = step.start, step.end, step.rate
            while True:
                at += gap(rate)
                if at >= end:
                    break
                yield Arrival(at, function)

    return generate()


def uniform_arrivals(steps: Sequence[RateStep], function: str) -> Iterator[Arrival]:
    """Evenly spaced arrivals at each step's rate, the first at the step's start (cross-checks)."""
    checked = _checked(steps)

    def generate() -> Iterator[Arrival]:
        for step in checked:
            for i in itertools.count():
                # Multiply rather than add up gaps, so that long runs do not drift.
                at = step.start + i / step.rate
                if at >= step.end:
                    break
                yield Arrival(at, function)

    return generate()


def partition(arrivals: Iterable[Arrival], procs: int, index: int) -> Iterator[Arrival]:
    """Process ``index``'s share of a schedule split across ``procs`` processes.

    Every ``procs``-th arrival from the ``index``-th: the shares are disjoint, their union is the
    whole schedule, and each is itself time-ordered, with its rate 1/procs of the whole.
    """
    if procs < 1:
        raise ValueError(f"procs must be at least 1, got {procs}")
    if not 0 <= index < procs:
        raise ValueError(f"index must be in 0..{procs - 1}, got {index}")
    return itertools.islice(arrivals, index, None, procs)


def count_arrivals(arrivals: Iterable[Arrival]) -> int:
    """How many arrivals a schedule holds (consumes it: pass a fresh one, same seed)."""
    return sum(1 for _ in arrivals)


def expected_arrivals(steps: Sequence[RateStep]) -> float:
    """How many arrivals the steps ask for on average: the sum of rate x duration."""
    return sum(step.rate * step.duration for step in steps)


def schedule_end(steps: Sequence[RateStep]) -> float:
    """When the last step ends, in seconds after the run's start (0.0 without steps)."""
    return max((step.end for step in steps), default=0.0)
