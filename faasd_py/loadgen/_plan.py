"""A run's description, and what each generator process derives from it on its own.

A Plan is a frozen value that pickles to every process. Each process computes the same seeded
schedule from it and keeps its share (`arrivals`), so the processes need no coordination beyond
a shared start instant: together they send exactly the one schedule.
"""

from __future__ import annotations

import bisect
import functools
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from faasd_py.loadgen._schedule import (
    Arrival,
    RateStep,
    partition,
    poisson_arrivals,
    rate_steps,
)
from faasd_py.traces import TraceFunction, trace_arrivals

Mode = Literal["open", "closed", "trace"]
Spread = Literal["poisson", "uniform"]

# A process's cap on requests in flight: arrivals beyond it are skipped (and counted), so that
# a gateway that stops answering cannot make the generator hold millions of pending requests.
DEFAULT_INFLIGHT_CAP = 10_000


@dataclass(frozen=True)
class RequestShape:
    """What every request of the run carries."""

    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    timeout: float = 30.0


@dataclass(frozen=True)
class TraceReplay:
    """A trace to replay: which functions, how fast, and where their invocations go."""

    functions: tuple[TraceFunction, ...]
    speedup: float = 60.0
    spread: Spread = "poisson"
    start_minute: int = 0
    minutes: int | None = None
    # The one deployed function that stands in for every trace function (the sampled duration
    # goes in its query); None: each trace function has its own deployment, by its name.
    target: str | None = "trace-func"
    work: Literal["sleep", "spin"] = "sleep"
    # Sampled durations above this are cut to it (ms): a replay compressed in time can then
    # end without waiting for the longest invocations of the trace.
    cap_ms: float | None = None

    @property
    def replay_minutes(self) -> int:
        available = max((len(f.counts) for f in self.functions), default=0) - self.start_minute
        wanted = available if self.minutes is None else min(self.minutes, available)
        return max(0, wanted)

    @property
    def seconds(self) -> float:
        return self.replay_minutes * 60.0 / self.speedup


@dataclass(frozen=True)
class Plan:
    """One run. Open loop: `rates` (one rate, or steps of `step` seconds each); closed loop:
    `concurrency` connections; trace replay: `trace`. `duration` is the recorded time, after
    `warmup` seconds that are sent but not recorded (no warm-up for a trace replay)."""

    gateway: str
    function: str
    request: RequestShape = field(default_factory=RequestShape)
    rates: tuple[float, ...] = ()
    step: float = 10.0
    duration: float | None = 30.0
    concurrency: int = 0
    trace: TraceReplay | None = None
    warmup: float = 0.0
    procs: int = 1
    seed: int = 1
    inflight_cap: int = DEFAULT_INFLIGHT_CAP

    @property
    def mode(self) -> Mode:
        if self.trace is not None:
            return "trace"
        return "closed" if self.concurrency > 0 else "open"

    @property
    def lead_in(self) -> float:
        """Seconds before recording starts."""
        return 0.0 if self.trace is not None else self.warmup

    def steps(self) -> list[RateStep]:
        """The recorded rate steps, on the run's time base (after the warm-up)."""
        steps = rate_steps(list(self.rates), self.step, self.duration)
        return [RateStep(s.start + self.lead_in, s.rate, s.duration) for s in steps]

    @property
    def seconds(self) -> float:
        """Recorded seconds."""
        if self.trace is not None:
            return self.trace.seconds
        if self.mode == "closed":
            return self.duration or 0.0
        return sum(s.duration for s in self.steps())

    @property
    def total_seconds(self) -> float:
        return self.lead_in + self.seconds

    def share(self, index: int) -> int:
        """Closed loop: the connections process `index` keeps busy."""
        return self.concurrency // self.procs + (index < self.concurrency % self.procs)

    def arrivals(self, index: int) -> Iterator[Arrival]:
        """Process `index`'s share of the schedule, in time order, on the run's time base."""
        if self.trace is not None:
            every: Iterator[Arrival] = trace_arrivals(
                list(self.trace.functions),
                self.trace.speedup,
                self.seed,
                spread=self.trace.spread,
                start_minute=self.trace.start_minute,
                minutes=self.trace.replay_minutes,
            )
        else:
            steps = self.steps()
            if self.lead_in > 0:
                steps.insert(0, RateStep(0.0, self.rates[0], self.lead_in))
            every = poisson_arrivals(steps, self.function, self.seed)
        return partition(every, self.procs, index)

    @functools.cached_property
    def _step_starts(self) -> list[float]:
        return [s.start for s in self.steps()]

    def step_of(self, at: float) -> int | None:
        """The index of the rate step an arrival falls in, when the run has several."""
        if self.trace is not None or len(self.rates) < 2:
            return None
        return max(0, bisect.bisect_right(self._step_starts, at) - 1)

    def target(self, arrival: Arrival | None = None) -> str:
        """The path (and query) a request goes to, after the gateway's own path: the function,
        or for a trace the arrival's stand-in with the duration it should run."""
        if arrival is None or self.trace is None:
            return "/function/" + urllib.parse.quote(self.function, safe="")
        name = self.trace.target or arrival.function
        query: dict[str, str] = {"mode": self.trace.work}
        if arrival.duration_ms is not None:
            cap = self.trace.cap_ms
            ms = arrival.duration_ms if cap is None else min(cap, arrival.duration_ms)
            query["ms"] = f"{ms:.3f}"
        return f"/function/{urllib.parse.quote(name, safe='')}?{urllib.parse.urlencode(query)}"

    def url(self, arrival: Arrival | None = None) -> str:
        return self.gateway.rstrip("/") + self.target(arrival)
