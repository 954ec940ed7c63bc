"""A run in progress, as the processes report it, and how the live display shows it.

`Progress` folds the processes' periodic messages into totals (pure: the coordinator passes the
elapsed time); `render` turns it into one rich line for `rich.live.Live`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from faasd_py.loadgen._histogram import Histogram

# The achieved rate shown is over this many seconds of recent progress messages.
RATE_WINDOW = 2.0


@dataclass
class _Counters:
    sent: int = 0
    answered: int = 0
    errors: int = 0
    inflight: int = 0


@dataclass
class Progress:
    """Totals so far: the processes' latest counters, and every latency they recorded."""

    total_seconds: float
    lead_in: float
    intended_rate: float | None = None
    elapsed: float = 0.0
    stopping: bool = False
    latency: Histogram = field(default_factory=Histogram)
    _counters: dict[int, _Counters] = field(default_factory=dict)
    _history: deque[tuple[float, int]] = field(default_factory=deque)

    def update(self, index: int, payload: Mapping[str, Any]) -> None:
        counters = self._counters.setdefault(index, _Counters())
        for counter in ("sent", "answered", "errors", "inflight"):
            setattr(counters, counter, int(payload[counter]))
        self.latency.merge(Histogram.from_json(payload["latency"]))

    def tick(self, elapsed: float) -> None:
        """The time now, on the run's clock (seconds since the start instant)."""
        self.elapsed = elapsed
        self._history.append((elapsed, self.sent))
        while len(self._history) > 2 and self._history[0][0] < elapsed - RATE_WINDOW:
            self._history.popleft()

    def _total(self, counter: str) -> int:
        return sum(getattr(c, counter) for c in self._counters.values())

    @property
    def sent(self) -> int:
        return self._total("sent")

    @property
    def answered(self) -> int:
        return self._total("answered")

    @property
    def errors(self) -> int:
        return self._total("errors")

    @property
    def inflight(self) -> int:
        return self._total("inflight")

    @property
    def rate(self) -> float:
        """Requests sent per second, recently."""
        if len(self._history) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._history[0], self._history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _ms(micros: int) -> str:
    return f"{micros / 1000:.2f} ms"


def render(progress: Progress) -> Text:
    """One line: phase, time, sent, rate, latency so far, errors, in flight."""
    elapsed, total = max(0.0, progress.elapsed), progress.total_seconds
    if progress.stopping:
        phase = ("stopping ", "bold yellow")
    elif elapsed < progress.lead_in:
        phase = ("warming up ", "dim")
    else:
        phase = ("running ", "bold green")
    text = Text.assemble(phase, f"{min(elapsed, total):5.1f}/{total:.1f} s  ")
    text.append(f"sent {progress.sent:,}  ")
    rate = f"{progress.rate:,.0f}/s"
    if progress.intended_rate:
        rate += f" (of {progress.intended_rate:,.0f}/s)"
    text.append(f"rate {rate}  ")
    latency = progress.latency
    if latency.count:
        text.append(f"p50 {_ms(latency.percentile(50))}  p99 {_ms(latency.percentile(99))}  ")
    text.append(f"errors {progress.errors:,}", style="red" if progress.errors else "")
    text.append(f"  in flight {progress.inflight:,}")
    return text
