"""The load generator behind `faasd-py bench`: schedules, histograms, the engine and its reports."""

from __future__ import annotations

from faasd_py.loadgen._histogram import Histogram
from faasd_py.loadgen._schedule import (
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

__all__ = [
    "Arrival",
    "Histogram",
    "RateStep",
    "count_arrivals",
    "expected_arrivals",
    "parse_rate",
    "partition",
    "poisson_arrivals",
    "rate_steps",
    "schedule_end",
    "uniform_arrivals",
]
