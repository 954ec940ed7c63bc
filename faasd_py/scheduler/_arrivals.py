"""The simulator's models of where a minute's invocations arrive within it (no numpy here, so
the CLI can offer them without loading the simulator).

The Azure 2019 trace counts invocations per minute; the times within the minute are not
published. ``uniform`` spaces a minute's c arrivals evenly, the i-th at (i + 1/2) / c of the
minute; ``poisson`` places them at sorted uniform random times (a Poisson process given its
count; seeded); ``start`` puts them all at the minute's start.
"""

from __future__ import annotations

from typing import Literal

Arrivals = Literal["uniform", "poisson", "start"]
ARRIVALS: tuple[Arrivals, ...] = ("uniform", "poisson", "start")
DEFAULT_ARRIVALS: Arrivals = "uniform"
"""The default, as the closest to the paper's idle times: a timer keeps its exact period (it
fires at the same second of its minute each time, as timers do), so its idle time is its period
less its execution; a minute's c arrivals are 60/c apart, their mean spacing. Deterministic."""
