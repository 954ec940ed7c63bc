"""A high-dynamic-range latency histogram: whole microseconds, 1 us .. 100 s, 3 significant digits.

The buckets are HdrHistogram's log-linear ones. Values below 2048 have a bucket each; above, a
value ``v`` with ``b = v.bit_length()`` goes to a bucket of width ``2 ** (b - 11)``, so every bucket
is narrower than 1/1024 of the values in it (3 significant digits). The bucket index is

    shift = max(v.bit_length() - 11, 0)
    index = (shift << 10) + (v >> shift)

which is contiguous and increasing in ``v``: indexes 0..2047 for shift 0, then 1024 more per
doubling. 100 s needs index 17909. Counts are kept sparsely, in a dict index -> count, so that a
timeline of one histogram per second of a run stays small, and histograms merge by adding counts
(across seconds, and across the processes of one run after a JSON round trip).

Percentiles follow HdrHistogram: the bucket holding the nearest-rank value reports its highest
equivalent value, clamped into [min, max]; the first rank (p0) is the exact minimum and the last
(p100) the exact maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

# Sub-buckets per doubling are 2 ** _SUB_BITS for the upper half of each range: 1024 gives
# 3 significant digits (a bucket is at most 1/1024 of its values wide).
_SUB_BITS = 10
_LINEAR_BITS = _SUB_BITS + 1  # values below 2 ** 11 have one bucket each
_FORMAT = "hdr-log-linear-us-3"


def _bucket_index(value: int) -> int:
    shift = value.bit_length() - _LINEAR_BITS
    return (shift << _SUB_BITS) + (value >> shift) if shift > 0 else value


def _bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value that fall in bucket ``index``."""
    shift = max((index >> _SUB_BITS) - 1, 0)
    lowest = (index - (shift << _SUB_BITS)) << shift
    return lowest, lowest + (1 << shift) - 1


def _rank(p: float, total: int) -> int:
    """The nearest rank of percentile ``p`` among ``total`` values: ceil(p / 100 * total), >= 1.

    ``p`` is taken as the decimal it reads as (99.9 is 999/10, not the binary float just above),
    so that p99.9 of 1000 values is the 999th and not the 1000th.
    """
    if not 0 <= p <= 100:  # also rejects NaN
        raise ValueError(f"a percentile must be between 0 and 100, got {p!r}")
    return max(1, math.ceil(Fraction(repr(float(p))) * total / 100))


class Histogram:
    """Latencies in whole microseconds, 1 us .. 100 s, at 3 significant digits.

    Log-linear buckets as HdrHistogram does them, stored sparsely (a dict bucket -> count) so that
    a per-second timeline of thousands of histograms stays small; mergeable across processes
    through :meth:`to_json` / :meth:`from_json`.

    Values below LOWEST are recorded as LOWEST; values above HIGHEST as HIGHEST, and counted in
    :attr:`clamped`. :attr:`min`, :attr:`max` and :attr:`mean` are exact for the recorded (that is,
    clamped) values.
    """

    LOWEST = 1
    HIGHEST = 100_000_000

    __slots__ = ("_clamped", "_count", "_counts", "_max", "_min", "_sum")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._count = 0
        self._sum = 0
        self._min = self.HIGHEST + 1
        self._max = 0
        self._clamped = 0

    # --- recording: the load generator's hot path ------------------------------------------------

    def record(self, micros: int, count: int = 1) -> None:
        """Record ``count`` occurrences of a latency of ``micros`` microseconds."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        if micros < 1:
            micros = 1
        elif micros > 100_000_000:
            micros = 100_000_000
            self._clamped += count
        shift = micros.bit_length() - 11
        index = (shift << 10) + (micros >> shift) if shift > 0 else micros
        counts = self._counts
        counts[index] = counts.get(index, 0) + count
        self._count += count
        self._sum += micros * count
        if micros < self._min:
            self._min = micros
        if micros > self._max:
            self._max = micros

    def merge(self, other: Histogram) -> None:
        """Add every value recorded in ``other`` to this histogram."""
        counts = self._counts
        for index, n in other._counts.items():
            counts[index] = counts.get(index, 0) + n
        self._count += other._count
        self._sum += other._sum
        self._clamped += other._clamped
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> Histogram:
        twin = Histogram()
        twin.merge(self)
        return twin

    # --- reading ---------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    @property
    def min(self) -> int:
        """The smallest recorded value; 0 when empty."""
        return self._min if self._count else 0

    @property
    def max(self) -> int:
        """The largest recorded value; 0 when empty."""
        return self._max

    @property
    def mean(self) -> float:
        """The exact mean of the recorded values; 0.0 when empty."""
        return self._sum / self._count if self._count else 0.0

    @property
    def total(self) -> int:
        """The exact sum of the recorded values, in microseconds."""
        return self._sum

    @property
    def clamped(self) -> int:
        """How many values above HIGHEST were recorded as HIGHEST."""
        return self._clamped

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self._counts == other._counts
            and self._count == other._count
            and self._sum == other._sum
            and self._clamped == other._clamped
            and self.min == other.min
            and self._max == other._max
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        if not self._count:
            return "Histogram(empty)"
        return (
            f"Histogram(count={self._count}, min={self.min}, p50={self.percentile(50)}, "
            f"p99={self.percentile(99)}, max={self._max})"
        )

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0..100) in microseconds; 0 when empty.

        The bucket that holds the nearest-rank value reports its highest equivalent value, but never
        above :attr:`max` nor below :attr:`min`: within 0.1% of the exact value. The first rank
        (p0, and any p below 100/count) is :attr:`min` and the last (p100) :attr:`max`, exactly.
        """
        return self.percentiles([p])[0]

    def percentiles(self, ps: Iterable[float]) -> list[int]:
        """:meth:`percentile` of each of ``ps``, in their order, in one pass over the buckets."""
        wanted = list(ps)
        ranks = [_rank(p, self._count) for p in wanted]
        if not self._count:
            return [0] * len(wanted)
        order = sorted(range(len(wanted)), key=ranks.__getitem__)
        results = [0] * len(wanted)
        buckets = iter(sorted(self._counts.items()))
        seen = 0
        value = 0
        for i in order:
            # The smallest and the largest value are known exactly.
            if ranks[i] == 1:
                results[i] = self._min
                continue
            if ranks[i] >= self._count:
                results[i] = self._max
                continue
            while seen < ranks[i]:
                index, n = next(buckets)
                seen += n
                value = _bucket_bounds(index)[1]
            results[i] = min(max(value, self._min), self._max)
        return results

    def cdf(self) -> list[tuple[int, float]]:
        """(value, fraction of values at or below it), one point per non-empty bucket, for plots.

        The value is the bucket's highest equivalent value, clamped into [min, max] as in
        :meth:`percentile`; the last fraction is 1.0.
        """
        points: list[tuple[int, float]] = []
        seen = 0
        for index, n in sorted(self._counts.items()):
            seen += n
            value = min(max(_bucket_bounds(index)[1], self.min), self._max)
            points.append((value, seen / self._count))
        return points

    # --- serialization ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A compact, JSON-safe form that :meth:`from_json` reads back exactly.

        ``buckets`` is a flat list of pairs: the gap from the previous bucket index (the first
        from 0), then its count. Gaps stay small where a histogram is dense.
        """
        flat: list[int] = []
        previous = 0
        for index, n in sorted(self._counts.items()):
            flat += (index - previous, n)
            previous = index
        return {
            "format": _FORMAT,
            "count": self._count,
            "min": self.min,
            "max": self._max,
            "sum": self._sum,
            "clamped": self._clamped,
            "buckets": flat,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        """The histogram that :meth:`to_json` wrote; ValueError for anything else."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a histogram in the {_FORMAT!r} format (format: {found!r})")
        try:
            flat = data["buckets"]
            fields = {name: data[name] for name in ("count", "min", "max", "sum", "clamped")}
        except KeyError as exc:
            raise ValueError(f"histogram JSON lacks the field {exc.args[0]!r}") from None
        numbers = [*fields.values(), *flat] if isinstance(flat, list) else [None]
        if any(type(x) is not int or x < 0 for x in numbers) or len(flat) % 2:
            raise ValueError("histogram JSON: fields and buckets must be whole numbers >= 0")
        histogram = cls()
        index = 0
        for gap, n in zip(flat[::2], flat[1::2], strict=True):
            index += gap
            if (gap == 0 and histogram._counts) or n == 0 or index > _bucket_index(cls.HIGHEST):
                raise ValueError(f"histogram JSON: bad bucket {index} with count {n}")
            histogram._counts[index] = n
        histogram._count = fields["count"]
        histogram._sum = fields["sum"]
        histogram._clamped = fields["clamped"]
        histogram._max = fields["max"]
        histogram._min = fields["min"] if histogram._count else cls.HIGHEST + 1
        if sum(histogram._counts.values()) != histogram._count:
            raise ValueError("histogram JSON: bucket counts do not add up to count")
        if histogram._counts and (
            min(histogram._counts) != _bucket_index(histogram._min)
            or max(histogram._counts) != _bucket_index(histogram._max)
        ):
            raise ValueError(
                "histogram JSON: min and max do not fall in the first and last buckets"
            )
        return histogram
