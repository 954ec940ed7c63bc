"""Recent series for the dashboard: a pure core, fed readings of the gateway's own counters.

A driver (`_sampler`) reads, about once a second, the cumulative figures the gateway already
keeps (its Prometheus counters and histograms, the worker's pools and keep-alive state) and
hands them to `SeriesStore.record(now, ...)`. Nothing here runs per invocation, nothing reads
a clock: time comes in as an argument, and what changed goes out as a value (a `Tick`).

Memory is bounded: one ring of `capacity` ticks, shared by every function and app; each
function and app holds a few float32 columns of that length, dropped when it disappears from
the readings (removed). Latency percentiles come from the deltas of the gateway's histogram
buckets, interpolated within a bucket as Prometheus's histogram_quantile does.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The columns of a function's series, and of the whole gateway's (the sum of the functions').
FUNCTION_COLUMNS = ("rate", "p50", "p99", "coldStarts", "clientErrors", "serverErrors",
                    "instances", "inflight")  # fmt: skip
APP_COLUMNS = ("hitRate", "cacheBytes", "prewarmHits")
NAN = float("nan")
# A function's point in a second without calls (its gauges added).
_IDLE = {"rate": 0.0, "coldStarts": 0.0, "clientErrors": 0.0, "serverErrors": 0.0}


@dataclass(frozen=True, slots=True)
class FunctionReading:
    """One function's cumulative figures at one instant, as the gateway keeps them."""

    invocations: int = 0  # answered, any status
    client_errors: int = 0  # 4xx
    server_errors: int = 0  # 5xx
    buckets: tuple[float, ...] = ()  # cumulative latency histogram counts, one per bound
    cold_starts: int = 0
    replicas: int = 0
    available: int = 0
    inflight: int = 0
    queued: int = 0
    app: str = ""
    loaded: bool | None = None  # None: no keep-alive policy
    prewarm: float | None = None  # the app's windows now, seconds
    keepalive: float | None = None
    rule: str | None = None  # the policy's reason for them


@dataclass(frozen=True, slots=True)
class AppReading:
    """One app's cache figures (cumulative counters, and bytes held now)."""

    hits: int = 0
    misses: int = 0
    cache_bytes: float = 0.0
    prewarm_hits: int = 0


@dataclass(frozen=True, slots=True)
class SeriesStatistics:
    capacity: int
    ticks: int  # ticks held (at most capacity)
    functions: int
    apps: int
    bytes: int  # what the columns hold


@dataclass(frozen=True)
class Tick:
    """What one `record` changed: the gateway's new point, the rows of the functions whose
    row changed (their new point with them), the apps whose point changed, the functions gone."""

    t: float
    gateway: dict[str, float | None]
    rows: list[dict[str, Any]]
    apps: dict[str, dict[str, float | None]]
    removed: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "gateway": self.gateway,
            "rows": self.rows,
            "apps": self.apps,
            "removed": self.removed,
        }


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """The q-quantile (0..1) of a histogram given by cumulative `counts` per upper `bound`
    (the last bound +Inf), interpolated linearly within its bucket; NaN when empty."""
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return NAN
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bound: say the bound, not +Inf
            inside = count - lower_count
            share = (rank - lower_count) / inside if inside > 0 else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


class _Columns:
    """Float32 columns, one slot per tick of the store's ring (NaN: no value)."""

    __slots__ = ("columns",)

    def __init__(self, names: Sequence[str], capacity: int) -> None:
        self.columns = {name: array("f", [NAN]) * capacity for name in names}

    def put(self, slot: int, values: Mapping[str, float]) -> None:
        for name, column in self.columns.items():
            column[slot] = values.get(name, NAN)

    def ordered(self, slots: Sequence[int]) -> dict[str, list[float | None]]:
        return {name: [_json(column[s]) for s in slots] for name, column in self.columns.items()}

    @property
    def nbytes(self) -> int:
        return sum(c.itemsize * len(c) for c in self.columns.values())


@dataclass
class _Function:
    columns: _Columns
    last: FunctionReading
    row: dict[str, Any] = field(default_factory=dict)
    # (t, cumulative buckets, invocations, errors) about every 10 s over the last window: the
    # table's "last minute" figures compare with the oldest.
    marks: deque[tuple[float, tuple[float, ...], int, int]] = field(default_factory=deque)


@dataclass
class _App:
    columns: _Columns
    last: AppReading
    point: dict[str, float | None] = field(default_factory=dict)


class SeriesStore:
    """The last `capacity` ticks of every function, app and the whole gateway."""

    def __init__(self, bounds: Sequence[float], capacity: int = 300, window: float = 60.0) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.bounds = tuple(bounds)  # the latency histogram's upper bounds (seconds), +Inf last
        self.capacity = capacity
        self.window = window
        self._times = array("d", [NAN]) * capacity
        self._next = 0  # the slot of the next tick
        self._ticks = 0
        self._last_time: float | None = None
        self._functions: dict[str, _Function] = {}
        self._apps: dict[str, _App] = {}
        self._gateway = _Columns(FUNCTION_COLUMNS + APP_COLUMNS, capacity)
        self._gateway_apps = AppReading()  # the apps' readings summed, at the last tick

    # --- recording -----------------------------------------------------------------------------

    def record(
        self,
        now: float,
        functions: Mapping[str, FunctionReading],
        apps: Mapping[str, AppReading],
    ) -> Tick:
        """One tick at time `now` (seconds, wall clock: the browser draws it) of what the
        gateway's counters say now (counted from zero, as its counters are, since it started)."""
        interval = now - self._last_time if self._last_time is not None else 0.0
        slot = self._next
        self._times[slot] = now
        total: dict[str, float] = dict.fromkeys(FUNCTION_COLUMNS, 0.0)
        total_buckets = [0.0] * len(self.bounds)
        rows: list[dict[str, Any]] = []
        for ref, reading in functions.items():
            state = self._functions.get(ref)
            if state is None:
                # The gateway's counters start with its process: what a new function already
                # counts happened since (it was deployed and called within the last tick).
                zero = FunctionReading(buckets=tuple(0.0 for _ in reading.buckets))
                state = _Function(_Columns(FUNCTION_COLUMNS, self.capacity), zero)
                state.marks.append((self._last_time or now, zero.buckets, 0, 0))
                self._functions[ref] = state
            total["instances"] += reading.available
            total["inflight"] += reading.inflight
            if reading == state.last and state.marks[0][2] == reading.invocations and state.row:
                # Nothing moved, nor within the window: the row stands (most functions, most
                # seconds; what keeps a tick cheap with hundreds of functions).
                state.columns.put(slot, {**_IDLE, "instances": reading.available,
                                         "inflight": reading.inflight})  # fmt: skip
                continue
            point, deltas = self._point(state.last, reading, interval)
            state.columns.put(slot, point)
            state.last = reading
            for name in ("rate", "coldStarts", "clientErrors", "serverErrors"):
                total[name] += point[name] if interval > 0 else 0.0
            for i, delta in enumerate(deltas):
                total_buckets[i] += delta
            row = self._row(ref, state, now, reading, point)
            if row != state.row:
                state.row = row
                rows.append(row)
        removed = [ref for ref in self._functions if ref not in functions]
        for ref in removed:
            del self._functions[ref]
        total["p50"], total["p99"] = self._percentiles(total_buckets)
        app_points = self._record_apps(slot, apps, interval)
        total.update(self._gateway_cache(apps))
        if interval <= 0:
            total = {name: NAN for name in total}
        self._gateway.put(slot, total)
        self._next = (slot + 1) % self.capacity
        self._ticks = min(self._ticks + 1, self.capacity)
        self._last_time = now
        gateway = {name: _json(value) for name, value in total.items()}
        return Tick(now, gateway, rows, app_points, removed)

    def _point(
        self, last: FunctionReading, now: FunctionReading, interval: float
    ) -> tuple[dict[str, float], list[float]]:
        """The function's point for this tick, and its latency bucket deltas."""
        if now.invocations < last.invocations or len(last.buckets) != len(now.buckets):
            last = FunctionReading(buckets=tuple(0.0 for _ in now.buckets))  # counters reset
        deltas = [b - a for a, b in zip(last.buckets, now.buckets, strict=True)]
        p50, p99 = self._percentiles(deltas)
        per_second = 1.0 / interval if interval > 0 else NAN
        point = {
            "rate": (now.invocations - last.invocations) * per_second,
            "p50": p50,
            "p99": p99,
            "coldStarts": float(max(0, now.cold_starts - last.cold_starts)),
            "clientErrors": float(max(0, now.client_errors - last.client_errors)),
            "serverErrors": float(max(0, now.server_errors - last.server_errors)),
            "instances": float(now.available),
            "inflight": float(now.inflight),
        }
        if interval <= 0:
            point = {name: NAN for name in point}
        return point, deltas

    def _percentiles(self, deltas: Sequence[float]) -> tuple[float, float]:
        cumulative = deltas if len(deltas) == len(self.bounds) else ()
        if not cumulative:
            return NAN, NAN
        # Milliseconds: what the browser shows.
        return (
            quantile(0.5, self.bounds, cumulative) * 1e3,
            quantile(0.99, self.bounds, cumulative) * 1e3,
        )

    def _row(
        self,
        ref: str,
        state: _Function,
        now: float,
        reading: FunctionReading,
        point: Mapping[str, float],
    ) -> dict[str, Any]:
        """The function's line in the table: totals, and the last window's rate, error rate
        and percentiles (against the oldest mark within the window)."""
        errors = reading.client_errors + reading.server_errors
        marks = state.marks
        if not marks or now - marks[-1][0] >= self.window / 6:
            marks.append((now, reading.buckets, reading.invocations, errors))
        while len(marks) > 1 and now - marks[1][0] >= self.window:
            marks.popleft()
        since, buckets, invocations, old_errors = marks[0]
        calls = reading.invocations - invocations
        if calls < 0 or len(buckets) != len(reading.buckets):  # counters reset
            since, buckets, invocations, old_errors = now, reading.buckets, reading.invocations, 0
            calls = 0
        deltas = [b - a for a, b in zip(buckets, reading.buckets, strict=True)]
        p50, p99 = self._percentiles(deltas)
        span = now - since
        return {
            "ref": ref,
            "invocations": reading.invocations,
            "rate": _json(calls / span if span > 0 else 0.0, 3),
            "errorRate": _json((errors - old_errors) / calls if calls else None, 4),
            "p50": _json(p50, 3),
            "p99": _json(p99, 3),
            "coldStarts": reading.cold_starts,
            "replicas": reading.replicas,
            "available": reading.available,
            "inflight": reading.inflight,
            "queued": reading.queued,
            "app": reading.app,
            "loaded": reading.loaded,
            "prewarmSeconds": _json(reading.prewarm, 3),
            "keepaliveSeconds": _json(reading.keepalive),
            "rule": reading.rule,
            "point": {name: _json(value, 4) for name, value in point.items()},
        }

    def _record_apps(
        self, slot: int, apps: Mapping[str, AppReading], interval: float
    ) -> dict[str, dict[str, float | None]]:
        changed: dict[str, dict[str, float | None]] = {}
        for name, reading in apps.items():
            state = self._apps.get(name)
            if state is None:
                state = _App(_Columns(APP_COLUMNS, self.capacity), reading)
                self._apps[name] = state
            values = _cache_point(state.last, reading) if interval > 0 else {}
            state.columns.put(slot, values)
            state.last = reading
            point = {name: _json(values.get(name, NAN), 4) for name in APP_COLUMNS}
            if point != state.point:
                state.point = point
                changed[name] = point
        for name in [n for n in self._apps if n not in apps]:
            del self._apps[name]
        return changed

    def _gateway_cache(self, apps: Mapping[str, AppReading]) -> dict[str, float]:
        """The whole gateway's cache point: the apps' readings summed, against last tick's."""
        last = self._gateway_apps
        now = AppReading(
            sum(a.hits for a in apps.values()),
            sum(a.misses for a in apps.values()),
            sum(a.cache_bytes for a in apps.values()),
            sum(a.prewarm_hits for a in apps.values()),
        )
        self._gateway_apps = now
        return _cache_point(last, now)

    # --- reading -------------------------------------------------------------------------------

    def _slots(self) -> list[int]:
        """The slots of the ticks held, oldest first."""
        start = (self._next - self._ticks) % self.capacity
        return [(start + i) % self.capacity for i in range(self._ticks)]

    def times(self) -> list[float]:
        return [self._times[s] for s in self._slots()]

    def function_series(self, ref: str) -> dict[str, list[float | None]] | None:
        state = self._functions.get(ref)
        return None if state is None else state.columns.ordered(self._slots())

    def app_series(self, app: str) -> dict[str, list[float | None]] | None:
        state = self._apps.get(app)
        return None if state is None else state.columns.ordered(self._slots())

    def gateway_series(self) -> dict[str, list[float | None]]:
        return self._gateway.ordered(self._slots())

    def rows(self) -> list[dict[str, Any]]:
        return [state.row for state in self._functions.values() if state.row]

    def statistics(self) -> SeriesStatistics:
        held = self._gateway.nbytes + self._times.itemsize * len(self._times)
        held += sum(f.columns.nbytes for f in self._functions.values())
        held += sum(a.columns.nbytes for a in self._apps.values())
        return SeriesStatistics(
            self.capacity, self._ticks, len(self._functions), len(self._apps), held
        )


def _cache_point(last: AppReading, now: AppReading) -> dict[str, float]:
    hits, misses = max(0, now.hits - last.hits), max(0, now.misses - last.misses)
    return {
        "hitRate": hits / (hits + misses) if hits + misses else NAN,
        "cacheBytes": now.cache_bytes,
        "prewarmHits": float(max(0, now.prewarm_hits - last.prewarm_hits)),
    }


def _json(value: float | None, digits: int = 6) -> float | None:
    """A value JSON can carry: NaN and infinities (no value, never unloaded) become null."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
