"""The next out-of-bounds idle time of an app, forecast from the ones before it.

The paper fits an ARIMA model to an app's series of OOB idle times. We fit the smallest member
of that family that still learns from the series, ARIMA(1,0,0) (an AR(1) process with a mean),
to the *logarithms* of the idle times, by the Yule-Walker estimate of the lag-1 coefficient:

    x_t = ln(idle_t),  mu = mean(x),  phi = sum (x_t - mu)(x_{t-1} - mu) / sum (x_t - mu)^2
    forecast = exp(mu + phi * (x_last - mu)),  clamped to [min, max] of the series

Why this and not a full ARIMA:

- dependency: statsmodels (with scipy and pandas) for one line of arithmetic per decision is
  far too heavy for the worker, which must stay lean;
- the series are short: an app only reaches this rule when most of its idle times exceed the
  histogram's range (4 h), so a day holds at most a handful of them. Order selection and
  differencing need far more points than that, and overfit what little there is;
- what the rule must get right is simple: a constant period (a daily timer) must forecast that
  period exactly, and a series that drifts should follow its last value in proportion to how
  much consecutive values correlate. AR(1) does both; with no correlation it falls back to the
  series' (geometric) mean;
- logarithms: idle times are positive and their errors multiplicative (an hour off matters for
  a 5-hour gap, not for a 3-day one); the forecast can never be negative.

``phi`` is clamped into [-0.95, 0.95] (a stationary process); below three points the forecast is
the geometric mean. Clamping to the series' range keeps a short, noisy series from forecasting
a time it never showed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_POINTS_FOR_AR = 3
_PHI_LIMIT = 0.95


def forecast_next(series: Sequence[float]) -> float:
    """The forecast of the next value of a series of positive idle times (seconds)."""
    if not series:
        raise ValueError("cannot forecast from an empty series")
    if any(not v > 0 for v in series):
        raise ValueError("idle times to forecast from must be > 0")
    logs = [math.log(v) for v in series]
    mu = math.fsum(logs) / len(logs)
    low, high = min(series), max(series)
    if len(logs) < MIN_POINTS_FOR_AR:
        return min(max(math.exp(mu), low), high)
    deviations = [x - mu for x in logs]
    variance = math.fsum(d * d for d in deviations)
    if variance <= 1e-12 * len(logs):
        return min(max(math.exp(mu), low), high)
    lagged = math.fsum(a * b for a, b in zip(deviations[1:], deviations[:-1], strict=True))
    phi = min(max(lagged / variance, -_PHI_LIMIT), _PHI_LIMIT)
    value = math.exp(mu + phi * deviations[-1])
    return min(max(value, low), high)
