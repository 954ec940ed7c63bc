"""What one phase of the async benchmark recorded: HTTP answers and callbacks, matched by call id.

A pure core: no clock and no I/O. The load (bench/_async_load.py) passes every time in, as
seconds of one monotonic clock, and the receiver of callbacks passes each callback in.

Only the recorded window [start, end) counts: a request counts when it was due (open loop) or
sent (closed loop) inside it, a callback for throughput when it arrived inside it. Before the
window is the warm-up; after it, the drain (calls still queued run and call back).

A call is expected before its request is sent, not when its 202 comes back: a fast consumer
may POST the callback before the client has read the 202.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from faasd_py.loadgen import Histogram

# The percentiles a phase reports.
PERCENTILES = (50.0, 99.0)


def micros(seconds: float) -> int:
    return round(seconds * 1e6)


def latency_ms(histogram: Histogram) -> dict[str, float | None]:
    """p50 and p99 of a histogram of microseconds, in milliseconds; None when it is empty."""
    values = histogram.percentiles(PERCENTILES) if histogram else [None] * len(PERCENTILES)
    return {
        f"p{p:g}_ms": None if v is None else v / 1e3
        for p, v in zip(PERCENTILES, values, strict=True)
    }


@dataclass
class Tally:
    """One phase: `expected_status` is the answer that means success ("200" for /function/,
    "202" for /async-function/); `callbacks`: whether its calls call back."""

    start: float
    end: float
    expected_status: str
    callbacks: bool = False
    answers: Counter[str] = field(default_factory=Counter)
    successes: int = 0  # answers of expected_status in the whole phase, warm-up included
    request_latency: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)  # open loop: how late each send went
    # Callbacks: call id -> when its request was due or sent; first arrivals; what they said.
    sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    callback_statuses: Counter[str] = field(default_factory=Counter)
    callback_latency: Histogram = field(default_factory=Histogram)
    duplicates: int = 0
    unknown: int = 0  # callbacks of call ids this phase never sent

    def recorded(self, at: float) -> bool:
        return self.start <= at < self.end

    def answer(self, kind: str, sent_at: float, answered_at: float) -> None:
        """An HTTP answer (its status, or the name of the error instead) to a request sent or
        due at `sent_at`."""
        if kind == self.expected_status:
            self.successes += 1
        if self.recorded(sent_at):
            self.answers[kind] += 1
            if kind == self.expected_status:
                self.request_latency.record(micros(answered_at - sent_at))

    def late_by(self, sent_at: float, due: float) -> None:
        if self.recorded(due):
            self.lag.record(micros(sent_at - due))

    def expect(self, call_id: str, sent_at: float) -> None:
        """A call whose callback is awaited, about to be sent (or due) at `sent_at`."""
        self.sent[call_id] = sent_at

    def reject(self, call_id: str) -> None:
        """Its enqueue failed: no callback is awaited (one that came anyway still counts)."""
        if call_id not in self.received:
            self.sent.pop(call_id, None)

    def receive(self, call_id: str, status: str, at: float) -> bool:
        """A callback arrived at `at`; whether it was the first for its call."""
        sent_at = self.sent.get(call_id)
        if sent_at is None:
            self.unknown += 1
            return False
        if call_id in self.received:
            self.duplicates += 1
            return False
        self.received[call_id] = at
        self.callback_statuses[status] += 1
        if self.recorded(sent_at):
            self.callback_latency.record(micros(at - sent_at))
        return True

    @property
    def outstanding(self) -> int:
        """Calls expected whose callback has not come (yet)."""
        return len(self.sent) - len(self.received)

    def completed(self) -> int:
        """Callbacks that arrived inside the window."""
        return sum(1 for at in self.received.values() if self.recorded(at))

    def completed_after(self) -> int:
        """Callbacks that arrived after the window: the drain of what was still queued."""
        return sum(1 for at in self.received.values() if at >= self.end)

    def summary(self) -> dict[str, Any]:
        """The phase's figures; callbacks' only when it awaited any."""
        seconds = self.end - self.start
        out: dict[str, Any] = {
            "seconds": seconds,
            "answers": dict(sorted(self.answers.items())),
            "successes": self.successes,
            "answers_per_second": self.answers[self.expected_status] / seconds,
            "errors": sum(n for k, n in self.answers.items() if k != self.expected_status),
            "request": latency_ms(self.request_latency),
        }
        if self.lag:
            out["lag"] = {"p99_ms": self.lag.percentile(99) / 1e3, "max_ms": self.lag.max / 1e3}
        if self.callbacks:
            failed = sum(n for s, n in self.callback_statuses.items() if s != "200")
            out["callbacks"] = {
                "expected": len(self.sent),
                "received": len(self.received),
                "lost": self.outstanding,
                "duplicates": self.duplicates,
                "unknown": self.unknown,
                "not_200": failed,
                "statuses": dict(sorted(self.callback_statuses.items())),
                "per_second": self.completed() / seconds,
                **latency_ms(self.callback_latency),
            }
        return out
