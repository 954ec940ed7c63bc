"""What a run measured, as plain mergeable values: every generator process fills one RunStats,
the parent merges them.

No clock and no I/O: the engine passes latencies (microseconds) and the second of the run each
outcome belongs to. `to_json`/`from_json` carry a RunStats between processes and into run.json.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faasd_py.loadgen._histogram import Histogram
from faasd_py.loadgen._outcome import COLD_START, OVERLOADED, STAGES, status_error


def micros(ms: float) -> int:
    """Milliseconds as the whole microseconds histograms hold (below 1 they record 1)."""
    return round(ms * 1000)


@dataclass
class Group:
    """The outcomes of a slice of the run: one second, one rate step or one trace function."""

    count: int = 0  # answers (any status) and failures
    errors: int = 0
    cold_starts: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def merge(self, other: Group) -> None:
        self.count += other.count
        self.errors += other.errors
        self.cold_starts += other.cold_starts
        self.latency.merge(other.latency)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "errors": self.errors,
            "cold_starts": self.cold_starts,
            "latency": self.latency.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Group:
        return cls(
            count=int(data["count"]),
            errors=int(data["errors"]),
            cold_starts=int(data["cold_starts"]),
            latency=Histogram.from_json(data["latency"]),
        )


def _merge_groups(mine: dict[Any, Group], theirs: Mapping[Any, Group]) -> None:
    for key, group in theirs.items():
        mine.setdefault(key, Group()).merge(group)


@dataclass
class RunStats:
    """Counters, histograms and breakdowns of one run (or one process's share of it).

    Arrivals: `intended` were due in the recorded window; of those `sent` went out, `skipped`
    were dropped because the process had its cap of requests in flight (also counted as
    "overloaded" errors), and `unsent` were never sent because the run stopped first.
    `unfinished` were sent but had no answer when the process stopped waiting.
    """

    intended: int = 0
    sent: int = 0
    skipped: int = 0
    unsent: int = 0
    unfinished: int = 0
    warmup_sent: int = 0
    latency: Histogram = field(default_factory=Histogram)
    # Open loop only: how long after its intended time each request went out.
    lag: Histogram = field(default_factory=Histogram)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, str] = field(default_factory=dict)
    # Filled only from answers that carried Server-Timing; `timed` counts those answers.
    stages: dict[str, Histogram] = field(default_factory=dict)
    timed: int = 0
    cold_starts: int = 0
    timeline: dict[int, Group] = field(default_factory=dict)
    steps: dict[int, Group] = field(default_factory=dict)
    functions: dict[str, Group] = field(default_factory=dict)

    # --- recording ---------------------------------------------------------------------------

    def record_answer(
        self,
        latency_us: int,
        status: int,
        timing: Mapping[str, float] | None,
        second: int,
        step: int | None = None,
        function: str | None = None,
    ) -> None:
        """An HTTP answer (any status), `latency_us` after the request was due."""
        self.latency.record(latency_us)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        kind = status_error(status)
        if kind is not None:
            self.errors[kind] = self.errors.get(kind, 0) + 1
        cold = False
        if timing is not None:
            self.timed += 1
            for stage in STAGES:
                ms = timing.get(stage)
                if ms is None:
                    continue
                # The cold-start stage is kept for the answers that had one: its percentiles
                # then say what a cold start costs, not how rare they are.
                if stage == COLD_START:
                    if ms <= 0:
                        continue
                    cold = True
                    self.cold_starts += 1
                self.stages.setdefault(stage, Histogram()).record(micros(ms))
        for group in self._groups(second, step, function):
            group.count += 1
            group.errors += kind is not None
            group.cold_starts += cold
            group.latency.record(latency_us)

    def record_failure(
        self,
        kind: str,
        sample: str,
        second: int,
        step: int | None = None,
        function: str | None = None,
    ) -> None:
        """A request that got no answer (connect, timeout, other) or was never sent (skipped)."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.error_samples.setdefault(kind, sample)
        if kind == OVERLOADED:
            self.skipped += 1
        for group in self._groups(second, step, function):
            group.count += 1
            group.errors += 1

    def _groups(self, second: int, step: int | None, function: str | None) -> list[Group]:
        groups = [self.timeline.setdefault(second, Group())]
        if step is not None:
            groups.append(self.steps.setdefault(step, Group()))
        if function is not None:
            groups.append(self.functions.setdefault(function, Group()))
        return groups

    # --- combining ---------------------------------------------------------------------------

    @property
    def answered(self) -> int:
        return self.latency.count

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def merge(self, other: RunStats) -> None:
        self.intended += other.intended
        self.sent += other.sent
        self.skipped += other.skipped
        self.unsent += other.unsent
        self.unfinished += other.unfinished
        self.warmup_sent += other.warmup_sent
        self.latency.merge(other.latency)
        self.lag.merge(other.lag)
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        for kind, sample in other.error_samples.items():
            self.error_samples.setdefault(kind, sample)
        for stage, histogram in other.stages.items():
            self.stages.setdefault(stage, Histogram()).merge(histogram)
        self.timed += other.timed
        self.cold_starts += other.cold_starts
        _merge_groups(self.timeline, other.timeline)
        _merge_groups(self.steps, other.steps)
        _merge_groups(self.functions, other.functions)

    def to_json(self) -> dict[str, Any]:
        return {
            "intended": self.intended,
            "sent": self.sent,
            "skipped": self.skipped,
            "unsent": self.unsent,
            "unfinished": self.unfinished,
            "warmup_sent": self.warmup_sent,
            "latency": self.latency.to_json(),
            "lag": self.lag.to_json(),
            # JSON object keys are strings; from_json turns them back into numbers.
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "error_samples": dict(self.error_samples),
            "stages": {k: v.to_json() for k, v in self.stages.items()},
            "timed": self.timed,
            "cold_starts": self.cold_starts,
            "timeline": {str(k): v.to_json() for k, v in sorted(self.timeline.items())},
            "steps": {str(k): v.to_json() for k, v in sorted(self.steps.items())},
            "functions": {k: v.to_json() for k, v in self.functions.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunStats:
        return cls(
            intended=int(data["intended"]),
            sent=int(data["sent"]),
            skipped=int(data["skipped"]),
            unsent=int(data["unsent"]),
            unfinished=int(data["unfinished"]),
            warmup_sent=int(data["warmup_sent"]),
            latency=Histogram.from_json(data["latency"]),
            lag=Histogram.from_json(data["lag"]),
            statuses={int(k): int(v) for k, v in data["statuses"].items()},
            errors={str(k): int(v) for k, v in data["errors"].items()},
            error_samples={str(k): str(v) for k, v in data["error_samples"].items()},
            stages={k: Histogram.from_json(v) for k, v in data["stages"].items()},
            timed=int(data["timed"]),
            cold_starts=int(data["cold_starts"]),
            timeline={int(k): Group.from_json(v) for k, v in data["timeline"].items()},
            steps={int(k): Group.from_json(v) for k, v in data["steps"].items()},
            functions={k: Group.from_json(v) for k, v in data["functions"].items()},
        )
