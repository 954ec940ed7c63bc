"""An app's idle-time histogram: fixed-width bins over a range, an out-of-bounds count and series.

An idle time is the gap between the end of an execution and the next arrival. Times below the
range fall in bin ``floor(idle / bin_width)``; longer ones are out of bounds (OOB): they are
counted, and the most recent ``oob_history`` of them are kept in order, since the forecast of the
hybrid policy reads them as a time series.

Everything the policy asks of the histogram is cheap after each observation, because a trace
simulator asks after every one of millions: the sum of squared bin counts is kept up to date, so
the coefficient of variation of the bin counts is O(1), and percentiles scan from the nearer end
(the head from bin 0, the tail from the highest bin in use).

The state is small (the bins in use, two counts, at most ``oob_history`` floats) and round-trips
through JSON (:meth:`IdleHistogram.to_state`, :meth:`IdleHistogram.from_state`), so the registry
can keep what was learned across restarts.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

STATE_VERSION = 1


@dataclass(frozen=True)
class HistogramStatistics:
    """A snapshot of one app's histogram."""

    bins: int
    bin_width: float
    in_range: int
    oob: int
    cv: float
    """Coefficient of variation of the bin counts (0 when the histogram is empty)."""
    oob_series: tuple[float, ...]

    @property
    def samples(self) -> int:
        return self.in_range + self.oob

    @property
    def oob_share(self) -> float:
        return self.oob / self.samples if self.samples else 0.0


class IdleHistogram:
    """Idle times of one app: ``bins`` bins of ``bin_width`` seconds, then out of bounds."""

    __slots__ = ("_counts", "_oob", "_oob_series", "_sumsq", "_top", "_total", "bin_width", "bins")

    def __init__(self, bins: int = 240, bin_width: float = 60.0, oob_history: int = 32) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        if not (math.isfinite(bin_width) and bin_width > 0):
            raise ValueError(f"bin_width must be a finite number above 0, got {bin_width!r}")
        if oob_history < 1:
            raise ValueError(f"oob_history must be at least 1, got {oob_history}")
        self.bins = bins
        self.bin_width = float(bin_width)
        self._counts = [0] * bins
        self._total = 0  # observations within the range
        self._sumsq = 0  # sum of the squared bin counts, for the CV
        self._top = -1  # the highest bin in use
        self._oob = 0
        self._oob_series: deque[float] = deque(maxlen=oob_history)

    # --- recording ----------------------------------------------------------------------------

    @property
    def range(self) -> float:
        """The histogram's range in seconds: idle times from here on are out of bounds."""
        return self.bins * self.bin_width

    def observe(self, idle: float, count: int = 1) -> None:
        """Record an idle time (seconds, >= 0), ``count`` times over (a simulator's run of equal
        idle times at once)."""
        if not idle >= 0:  # also rejects NaN
            raise ValueError(f"an idle time must be >= 0, got {idle!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        index = int(idle // self.bin_width)
        if index >= self.bins:
            self._oob += count
            self._oob_series.extend(itertools.repeat(float(idle), min(count, self._history)))
            return
        self._add(index, count)

    @property
    def _history(self) -> int:
        return self._oob_series.maxlen or 0

    def _add(self, index: int, count: int) -> None:
        before = self._counts[index]
        self._counts[index] = before + count
        # (c + k)^2 - c^2 = k * (2c + k)
        self._sumsq += count * (2 * before + count)
        self._total += count
        if index > self._top:
            self._top = index

    def merge(self, other: IdleHistogram) -> None:
        """Add ``other``'s observations (same bins and width); its OOB series follows ours."""
        if (other.bins, other.bin_width) != (self.bins, self.bin_width):
            raise ValueError(
                f"cannot merge a histogram of {other.bins} x {other.bin_width:g} s bins into one "
                f"of {self.bins} x {self.bin_width:g} s"
            )
        for index, count in enumerate(other._counts):
            if count:
                self._add(index, count)
        self._oob += other._oob
        self._oob_series.extend(other._oob_series)

    # --- reading ------------------------------------------------------------------------------

    @property
    def in_range(self) -> int:
        return self._total

    @property
    def oob(self) -> int:
        return self._oob

    @property
    def samples(self) -> int:
        return self._total + self._oob

    @property
    def oob_series(self) -> tuple[float, ...]:
        """The most recent OOB idle times, oldest first."""
        return tuple(self._oob_series)

    def counts(self) -> tuple[int, ...]:
        return tuple(self._counts)

    def cv(self) -> float:
        """Coefficient of variation (population standard deviation / mean) of the bin counts."""
        if not self._total:
            return 0.0
        n = self.bins
        mean = self._total / n
        variance = max(self._sumsq / n - mean * mean, 0.0)
        return math.sqrt(variance) / mean

    def percentile_bin(self, percent: float) -> int:
        """The bin holding the nearest-rank ``percent``-th percentile of the in-range idle times.

        Nearest rank: the bin of the ``ceil(percent / 100 * n)``-th smallest time (at least the
        first). Raises ValueError when no time is in range.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be within 0..100, got {percent!r}")
        if not self._total:
            raise ValueError("no idle time within the histogram's range")
        return self.bin_of_rank(max(1, math.ceil(percent * self._total / 100 - 1e-9)))

    def bin_of_rank(self, rank: int) -> int:
        """The bin of the ``rank``-th smallest in-range idle time (1 <= rank <= in_range)."""
        counts = self._counts
        if rank * 2 <= self._total:
            seen = 0
            for index in range(self._top + 1):
                seen += counts[index]
                if seen >= rank:
                    return index
        # Upper percentiles: count down from the top, where few times lie.
        above = self._total - rank  # times strictly after the rank-th
        seen = 0
        for index in range(self._top, -1, -1):
            seen += counts[index]
            if seen > above:
                return index
        raise ValueError(f"rank {rank} is not within 1..{self._total}")

    def statistics(self) -> HistogramStatistics:
        return HistogramStatistics(
            bins=self.bins,
            bin_width=self.bin_width,
            in_range=self._total,
            oob=self._oob,
            cv=self.cv(),
            oob_series=self.oob_series,
        )

    # --- persistence --------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready dict: only the bins in use, as [index, count] pairs."""
        return {
            "version": STATE_VERSION,
            "bins": self.bins,
            "bin_width": self.bin_width,
            "counts": [[i, c] for i, c in enumerate(self._counts) if c],
            "oob": self._oob,
            "oob_series": list(self._oob_series),
            "oob_history": self._oob_series.maxlen,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> IdleHistogram:
        """The histogram :meth:`to_state` described; ValueError for a state it did not write."""
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"unknown histogram state version {state['version']!r}")
            histogram = cls(
                int(state["bins"]), float(state["bin_width"]), int(state["oob_history"])
            )
            pairs: Iterable[Any] = state["counts"]
            for index, count in pairs:
                if not (0 <= int(index) < histogram.bins and int(count) > 0):
                    raise ValueError(f"bad bin [{index}, {count}]")
                histogram._add(int(index), int(count))
            series = [float(v) for v in state["oob_series"]]
            oob = int(state["oob"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an idle-histogram state: {exc!r}") from None
        if oob < len(series) or any(not v >= histogram.range for v in series):
            raise ValueError("the OOB series does not match the OOB count and range")
        histogram._oob = oob
        histogram._oob_series.extend(series)
        return histogram
