"""The Azure Functions 2019 trace format, a synthetic trace drawn from its characterization, replay.

The public trace of Shahrad et al., "Serverless in the Wild" (ATC'20), comes as CSV files per day:

- ``invocations_per_function_md.anon.dNN.csv``: HashOwner, HashApp, HashFunction, Trigger, then
  the invocation count of each minute of the day (columns 1..1440);
- ``function_durations_percentiles.anon.dNN.csv``: per function, Average, Count, Minimum, Maximum
  and percentiles 0, 1, 25, 50, 75, 99, 100 of the execution time (ms);
- ``app_memory_percentiles.anon.dNN.csv``: per app, the allocated memory's average and
  percentiles 1..100 (MB).

The loaders read them strictly: every problem is a :class:`TraceError` that names the file, the
line and what is wrong. :func:`synthetic_trace` draws a trace that follows the paper's published
characterization when no trace is at hand, and :func:`trace_arrivals` turns either into the load
generator's schedule. Everything here is pure and seeded; the only I/O is reading trace files.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import importlib
import itertools
import math
import random
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from operator import attrgetter
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from faasd_py.errors import BadRequest

if TYPE_CHECKING:
    from faasd_py.loadgen._schedule import Arrival

__all__ = [
    "DurationPercentiles",
    "MemoryPercentiles",
    "Reader",
    "TraceError",
    "TraceFunction",
    "attach_durations",
    "load_durations",
    "load_invocations",
    "load_memory",
    "load_trace",
    "numpy_module",
    "synthetic_memory",
    "synthetic_trace",
    "total_invocations",
    "trace_arrivals",
    "with_unique_names",
]


class TraceError(BadRequest):
    """A trace file that cannot be read: the message names the file, the line and the problem."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}" if line is None else f"{path} line {line}"
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.problem = problem

    def __reduce__(self) -> tuple[type[TraceError], tuple[Path, int | None, str]]:
        # Exceptions travel between the load generator's processes by pickle.
        return (type(self), (self.path, self.line, self.problem))


# --- the records --------------------------------------------------------------------------------

_DURATION_QUANTILES = (0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0)


def _check_numbers(record: object) -> None:
    for field in fields(record):  # type: ignore[arg-type]
        value = getattr(record, field.name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{field.name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class DurationPercentiles:
    """A function's execution time in milliseconds, as the durations file gives it."""

    average: float
    minimum: float
    maximum: float
    p0: float
    p1: float
    p25: float
    p50: float
    p75: float
    p99: float
    p100: float

    def __post_init__(self) -> None:
        _check_numbers(self)

    def sample(self, rng: random.Random) -> float:
        """A duration (ms) drawn by inverse CDF, piecewise linear between the percentile points.

        The result stays within [minimum, maximum]. Percentiles that are out of order, as rounding
        in published data can leave them, are first made non-decreasing.
        """
        points = (self.p0, self.p1, self.p25, self.p50, self.p75, self.p99, self.p100)
        u = rng.random()
        i = min(bisect.bisect_right(_DURATION_QUANTILES, u), len(points) - 1)
        lo_q, hi_q = _DURATION_QUANTILES[i - 1], _DURATION_QUANTILES[i]
        lo = max(points[:i])
        hi = max(lo, points[i])
        value = lo + (hi - lo) * (u - lo_q) / (hi_q - lo_q)
        if self.minimum <= self.maximum:
            value = min(max(value, self.minimum), self.maximum)
        return value


@dataclass(frozen=True)
class MemoryPercentiles:
    """An app's allocated memory in MB, as the memory file gives it."""

    average_mb: float
    p1: float
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float
    p99: float
    p100: float

    def __post_init__(self) -> None:
        _check_numbers(self)


_NOT_DNS = re.compile(r"[^a-z0-9]+")


def _dns_part(text: str, length: int) -> str:
    return _NOT_DNS.sub("", text.lower())[:length] or "0"


@dataclass(frozen=True)
class TraceFunction:
    """One function of a trace: who owns it, its app, its trigger, its invocations per minute."""

    owner: str
    app: str
    function: str
    trigger: str
    counts: Sequence[int]
    """Invocations per minute: a tuple, or a read-only numpy row (``load_invocations(...,
    arrays=True)``), which takes an eighth of the memory of Python ints."""
    durations: DurationPercentiles | None = None
    suffix: str = ""
    """Set by the loaders when two functions of a trace would otherwise share a :attr:`name`."""

    @property
    def name(self) -> str:
        """A DNS-1123 function name: "tf-" and the function hash's first 12 characters.

        Lower-cased, letters and digits only; the loaders add :attr:`suffix` (from the app hash)
        where that is not unique within what they return.
        """
        base = "tf-" + _dns_part(self.function, 12)
        return f"{base}-{self.suffix}" if self.suffix else base

    @property
    def app_name(self) -> str:
        """The app's name, for the com.faasd-py.app label: "ta-" and the app hash's first 12."""
        return "ta-" + _dns_part(self.app, 12)

    @property
    def key(self) -> tuple[str, str, str]:
        """(owner, app, function): how the durations file refers to this function."""
        return (self.owner, self.app, self.function)

    @property
    def total(self) -> int:
        """Invocations over the whole trace."""
        return sum(self.counts)


def with_unique_names(functions: Iterable[TraceFunction]) -> list[TraceFunction]:
    """The functions, with a :attr:`~TraceFunction.suffix` where names would collide.

    Colliding names get the app hash's first 8 characters; if that still collides (one function
    hash listed twice in one app), later ones also get "-2", "-3", ...
    """
    result = [replace(f, suffix="") if f.suffix else f for f in functions]
    clashes = Counter(f.name for f in result)
    result = [replace(f, suffix=_dns_part(f.app, 8)) if clashes[f.name] > 1 else f for f in result]
    seen: Counter[str] = Counter()
    for i, f in enumerate(result):
        seen[f.name] += 1
        if seen[f.name] > 1:
            result[i] = replace(f, suffix=f"{f.suffix}-{seen[f.name]}")
    return result


# --- reading the CSV files ----------------------------------------------------------------------

_INVOCATION_KEYS = ("HashOwner", "HashApp", "HashFunction", "Trigger")
_DURATION_HEADER = (
    "HashOwner",
    "HashApp",
    "HashFunction",
    "Average",
    "Count",
    "Minimum",
    "Maximum",
    "percentile_Average_0",
    "percentile_Average_1",
    "percentile_Average_25",
    "percentile_Average_50",
    "percentile_Average_75",
    "percentile_Average_99",
    "percentile_Average_100",
)
_MEMORY_HEADER = (
    "HashOwner",
    "HashApp",
    "SampleCount",
    "AverageAllocatedMb",
    "AverageAllocatedMb_pct1",
    "AverageAllocatedMb_pct5",
    "AverageAllocatedMb_pct25",
    "AverageAllocatedMb_pct50",
    "AverageAllocatedMb_pct75",
    "AverageAllocatedMb_pct95",
    "AverageAllocatedMb_pct99",
    "AverageAllocatedMb_pct100",
)
_CUT_SHORT = " (the file ends in the middle of this line: was it cut short?)"


@dataclass(frozen=True, slots=True)
class _Row:
    path: Path
    line: int
    fields: list[str]
    cut_short: bool
    """This is the file's last line and it has no newline: it may have been cut short."""

    def error(self, problem: str) -> TraceError:
        return TraceError(self.path, self.line, problem + (_CUT_SHORT if self.cut_short else ""))


def _read_rows(path: Path) -> Iterator[_Row]:
    """The non-blank CSV rows of ``path``, with line numbers; I/O and CSV errors as TraceError."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TraceError(path, None, f"cannot read the file: {exc.strerror or exc}") from exc
    last_line_unterminated = False

    def lines() -> Iterator[str]:
        nonlocal last_line_unterminated
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise TraceError(path, number, "not UTF-8 text") from None
            last_line_unterminated = not text.endswith("\n")
            yield text

    with handle:
        reader = csv.reader(lines(), strict=True)
        try:
            for fields_ in reader:
                if fields_:
                    yield _Row(path, reader.line_num, fields_, last_line_unterminated)
        except csv.Error as exc:
            raise TraceError(path, reader.line_num, f"malformed CSV: {exc}") from None
        except OSError as exc:
            raise TraceError(path, None, f"cannot read the file: {exc.strerror or exc}") from exc


def _preview(fields_: Sequence[str]) -> str:
    text = ",".join(fields_)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _header(rows: Iterator[_Row], path: Path, expected: str) -> _Row:
    row = next(rows, None)
    if row is None:
        raise TraceError(path, None, f"the file is empty; expected a header {expected}")
    return row


def _key_fields(row: _Row, names: Sequence[str]) -> tuple[str, ...]:
    values = tuple(text.strip() for text in row.fields[: len(names)])
    for name, value in zip(names, values, strict=True):
        if not value:
            raise row.error(f"{name} is empty")
    return values


def _number(row: _Row, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise row.error(f"column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise row.error(f"column {column!r} must be a finite number >= 0, got {text!r}")
    return value


def _check_width(row: _Row, width: int) -> None:
    if len(row.fields) != width:
        raise row.error(f"expected {width} columns, got {len(row.fields)}")


Reader = Literal["auto", "numpy", "csv"]


def numpy_module() -> ModuleType | None:
    """numpy where it is installed (the ``sim`` and ``bench`` extras), else None."""
    try:
        return importlib.import_module("numpy")
    except ImportError:
        return None


def load_invocations(
    path: Path,
    limit_functions: int | None = None,
    *,
    reader: Reader = "auto",
    arrays: bool = False,
) -> list[TraceFunction]:
    """The functions of an invocations file, in file order; the first ``limit_functions`` only.

    The minute columns are the header's (1..1440 in the published files; any 1..N is accepted).
    Names are made unique within the result (:func:`with_unique_names`).

    ``reader``: "auto" parses with numpy where it is installed (a full day's file of 46,000
    rows in seconds rather than minutes) and with the csv module otherwise; a file numpy does
    not read plainly (a bad row, quotes) is read again by the csv module, whose errors name the
    line. ``arrays``: each function's counts are a read-only row of one numpy matrix (with the
    numpy reader) instead of a tuple of Python ints.
    """
    if limit_functions is not None and limit_functions < 1:
        raise ValueError(f"limit_functions must be at least 1, got {limit_functions}")
    path = Path(path)
    if reader != "csv":
        np = numpy_module()
        if np is None and reader == "numpy":
            raise ValueError("the numpy reader needs numpy: pip install 'faasd-py[sim]'")
        found = None if np is None else _invocations_numpy(np, path, limit_functions, arrays)
        if found is not None:
            return with_unique_names(found)
    expected = "HashOwner,HashApp,HashFunction,Trigger,1,2,...,1440"
    rows = _read_rows(path)
    header = _header(rows, path, expected)
    minutes = header.fields[len(_INVOCATION_KEYS) :]
    if (
        tuple(header.fields[: len(_INVOCATION_KEYS)]) != _INVOCATION_KEYS
        or not minutes
        or minutes != [str(m) for m in range(1, len(minutes) + 1)]
    ):
        raise header.error(f"missing header: expected {expected}, got {_preview(header.fields)}")
    width = len(header.fields)
    functions: list[TraceFunction] = []
    for row in rows:
        if limit_functions is not None and len(functions) >= limit_functions:
            break
        _check_width(row, width)
        owner, app, function, trigger = _key_fields(row, _INVOCATION_KEYS)
        texts = row.fields[len(_INVOCATION_KEYS) :]
        try:
            counts = tuple(map(int, texts))
        except ValueError:
            counts = ()
        if len(counts) != len(texts) or min(counts) < 0:
            for minute, text in zip(minutes, texts, strict=True):
                try:
                    count = int(text)
                except ValueError:
                    raise row.error(f"column {minute!r} is not a whole number: {text!r}") from None
                if count < 0:
                    raise row.error(f"column {minute!r} is a negative count: {text!r}")
        functions.append(TraceFunction(owner, app, function, trigger.lower(), counts))
    return with_unique_names(functions)


def _invocations_numpy(
    np: ModuleType, path: Path, limit: int | None, arrays: bool
) -> list[TraceFunction] | None:
    """The functions of a plainly well-formed invocations file, parsed by numpy's loadtxt;
    None for anything else (the csv reader then names the line and the problem)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    if '"' in text:
        return None
    lines = text.splitlines()
    if not lines:
        return None
    header = lines[0].split(",")
    minutes = header[len(_INVOCATION_KEYS) :]
    if tuple(header[: len(_INVOCATION_KEYS)]) != _INVOCATION_KEYS or minutes != [
        str(m) for m in range(1, len(minutes) + 1)
    ]:
        return None
    rows = [line for line in lines[1:] if line]
    del lines, text
    if limit is not None:
        rows = rows[:limit]
    keys: list[list[str]] = []
    for i, line in enumerate(rows):
        parts = line.split(",", len(_INVOCATION_KEYS))
        if len(parts) <= len(_INVOCATION_KEYS):
            return None
        key = [part.strip() for part in parts[: len(_INVOCATION_KEYS)]]
        if not all(key):
            return None
        keys.append(key)
        rows[i] = parts[-1]
    try:
        with warnings.catch_warnings():
            # numpy warns where it would round a float into an integer: not a count.
            warnings.simplefilter("error")
            matrix = np.loadtxt(rows, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, Warning):
        return None
    if rows and (matrix.shape != (len(rows), len(minutes)) or matrix.min() < 0):
        return None
    matrix.flags.writeable = False
    return [
        TraceFunction(owner, app, function, trigger.lower(), row if arrays else tuple(row.tolist()))
        for (owner, app, function, trigger), row in zip(keys, matrix, strict=False)
    ]


def load_durations(path: Path) -> dict[tuple[str, str, str], DurationPercentiles]:
    """Execution-time percentiles (ms) by (owner, app, function), from a durations file."""
    path = Path(path)
    rows = _read_rows(path)
    header = _header(rows, path, ",".join(_DURATION_HEADER))
    if tuple(header.fields) != _DURATION_HEADER:
        raise header.error(
            f"missing header: expected {','.join(_DURATION_HEADER)}, got {_preview(header.fields)}"
        )
    result: dict[tuple[str, str, str], DurationPercentiles] = {}
    for row in rows:
        _check_width(row, len(_DURATION_HEADER))
        owner, app, function = _key_fields(row, _DURATION_HEADER[:3])
        values = [
            _number(row, column, text)
            for column, text in zip(_DURATION_HEADER[3:], row.fields[3:], strict=True)
        ]
        average, _count, *rest = values
        result[(owner, app, function)] = DurationPercentiles(average, *rest)
    return result


def load_memory(path: Path) -> dict[tuple[str, str], MemoryPercentiles]:
    """Allocated-memory percentiles (MB) by (owner, app), from a memory file."""
    path = Path(path)
    rows = _read_rows(path)
    header = _header(rows, path, ",".join(_MEMORY_HEADER))
    if tuple(header.fields) != _MEMORY_HEADER:
        raise header.error(
            f"missing header: expected {','.join(_MEMORY_HEADER)}, got {_preview(header.fields)}"
        )
    result: dict[tuple[str, str], MemoryPercentiles] = {}
    for row in rows:
        _check_width(row, len(_MEMORY_HEADER))
        owner, app = _key_fields(row, _MEMORY_HEADER[:2])
        values = [
            _number(row, column, text)
            for column, text in zip(_MEMORY_HEADER[2:], row.fields[2:], strict=True)
        ]
        result[(owner, app)] = MemoryPercentiles(*values[1:])
    return result


def attach_durations(
    functions: Iterable[TraceFunction],
    durations: dict[tuple[str, str, str], DurationPercentiles],
) -> list[TraceFunction]:
    """The functions, each with its durations where the durations file lists it."""
    return [replace(f, durations=durations[f.key]) if f.key in durations else f for f in functions]


def load_trace(
    invocations: Path,
    durations: Path | None = None,
    limit_functions: int | None = None,
    *,
    arrays: bool = False,
) -> list[TraceFunction]:
    """An invocations file's functions (:func:`load_invocations`) with the durations file's
    percentiles attached where it lists them (:func:`attach_durations`)."""
    found = load_invocations(invocations, limit_functions, arrays=arrays)
    return found if durations is None else attach_durations(found, load_durations(durations))


def total_invocations(
    functions: Iterable[TraceFunction], start_minute: int = 0, minutes: int | None = None
) -> int:
    """How many arrivals :func:`trace_arrivals` yields for the same window."""
    stop = None if minutes is None else start_minute + minutes
    return sum(sum(f.counts[start_minute:stop]) for f in functions)


# --- replay -------------------------------------------------------------------------------------


def trace_arrivals(
    functions: Sequence[TraceFunction],
    speedup: float,
    seed: int,
    spread: Literal["uniform", "poisson"] = "poisson",
    start_minute: int = 0,
    minutes: int | None = None,
) -> Iterator[Arrival]:
    """The trace as a schedule: each function's count of each minute spread within that minute.

    ``uniform`` spaces a minute's arrivals evenly (the i-th of c at (i + 1/2) / c of the minute);
    ``poisson`` places them at sorted uniform random times, as a Poisson process conditioned on
    the count. A minute lasts 60 / ``speedup`` seconds; time 0 is the start of ``start_minute``.
    Each arrival carries a duration drawn from its function's percentiles (None without them).
    Arrivals of all functions come merged in time order. Seeded per function, so a function's
    arrivals do not change when other functions are added or left out.
    """
    # Imported here: faasd_py.loadgen's package imports this module, so a module-level import
    # would be circular when this module is imported first.
    from faasd_py.loadgen._schedule import Arrival

    if not (math.isfinite(speedup) and speedup > 0):
        raise ValueError(f"speedup must be a finite number above 0, got {speedup!r}")
    if spread not in ("uniform", "poisson"):
        raise ValueError(f"spread must be 'uniform' or 'poisson', got {spread!r}")
    if start_minute < 0:
        raise ValueError(f"start_minute must not be negative, got {start_minute}")
    if minutes is not None and minutes < 0:
        raise ValueError(f"minutes must not be negative, got {minutes}")
    seconds_per_minute = 60.0 / speedup

    def one(f: TraceFunction) -> Iterator[Arrival]:
        name = f.name
        tag = f"{seed}:{f.owner}:{f.app}:{f.function}"
        times = random.Random("times:" + tag)
        durations = random.Random("durations:" + tag)
        sample = f.durations.sample if f.durations is not None else None
        end = len(f.counts) if minutes is None else min(len(f.counts), start_minute + minutes)
        for minute in range(start_minute, end):
            count = f.counts[minute]
            if not count:
                continue
            base = minute - start_minute
            if spread == "uniform":
                fractions: Iterable[float] = ((i + 0.5) / count for i in range(count))
            else:
                fractions = sorted([times.random() for _ in range(count)])
            # Rounding must not carry the last arrival of a minute into the next one.
            latest = math.nextafter((base + 1) * seconds_per_minute, 0.0)
            for fraction in fractions:
                at = min((base + fraction) * seconds_per_minute, latest)
                yield Arrival(at, name, sample(durations) if sample is not None else None)

    return heapq.merge(*(one(f) for f in functions), key=attrgetter("at"))


# --- the synthetic trace ------------------------------------------------------------------------
#
# Shahrad et al. characterize the Azure Functions workload of July 2019 (section 3 of the paper);
# DESIGN.md lists the figures this generator follows:
#
# - per-app average invocation rate: 45% of apps at most once an hour, 81% at most once a minute,
#   rates across about 8 orders of magnitude (Fig. 5). We draw log10(invocations per minute) from
#   the piecewise-linear CDF through _RATE_KNOTS: through those two points, from about once a day
#   (1e-3.2 per minute) to about a thousand a second (1e4.8), with a thinning upper tail;
# - functions per app: 54% of apps have one, 95% at most 10, a few very many (Fig. 1): one with
#   probability 0.54, else a Pareto(1.5) from 2, at most _MAX_FUNCTIONS;
# - triggers of functions (Fig. 3): _TRIGGERS;
# - patterns: timer functions fire with a fixed period (snapped to a period people configure);
#   other functions of rare apps (at most once an hour) come sporadically, in small clusters;
#   of busier apps, either steadily (Poisson, with a daily swing) or in bursts (on/off periods);
# - execution times (Fig. 7): the average is lognormal with median 800 ms, so half of the
#   functions average under about 1 s; each function's percentiles come from a lognormal spread
#   of its own, so p0 <= p1 <= ... <= p100, minimum <= p0 and p100 <= maximum;
# - memory (Fig. 8, synthetic_memory): 90% of apps allocate at most 400 MB.

_RATE_KNOTS = (
    (-3.2, 0.0),
    (-2.5, 0.2),
    (math.log10(1 / 60), 0.45),
    (-1.0, 0.65),
    (0.0, 0.81),
    (1.0, 0.92),
    (2.0, 0.975),
    (3.0, 0.995),
    (4.8, 1.0),
)
_TRIGGERS = (
    ("http", 0.55),
    ("queue", 0.15),
    ("timer", 0.16),
    ("orchestration", 0.07),
    ("storage", 0.03),
    ("event", 0.02),
    ("others", 0.02),
)
_MAX_FUNCTIONS = 100
# Timer periods in minutes, as people configure them (1 s .. 1 day).
_TIMER_PERIODS = (
    *(s / 60 for s in (1, 5, 10, 15, 30)),
    *(1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 240.0, 360.0, 720.0, 1440.0),
)
_DURATION_MEDIAN_MS = 800.0
_DURATION_SIGMA = 1.9  # of ln(average ms)
_Z = (-3.09, -2.326, -0.674, 0.0, 0.674, 2.326, 3.09)  # standard normal at 0.1%, 1%, ... 99.9%


def _from_knots(u: float) -> float:
    """The log10 rate at cumulative share ``u`` of apps (linear between knots)."""
    for (x0, q0), (x1, q1) in itertools.pairwise(_RATE_KNOTS):
        if u <= q1:
            return x0 + (x1 - x0) * (u - q0) / (q1 - q0)
    return _RATE_KNOTS[-1][0]


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson variate: inversion for small means, PTRS (Hörmann 1993) for large ones."""
    if lam <= 0:
        return 0
    if lam < 30:
        k, p = 0, math.exp(-lam)
        cumulative, u = p, rng.random()
        while u > cumulative and p > 0:
            k += 1
            p *= lam / k
            cumulative += p
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= (
            -lam + k * loglam - math.lgamma(k + 1)
        ):
            return k


def _hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _function_count(rng: random.Random) -> int:
    if rng.random() < 0.54:
        return 1
    return min(_MAX_FUNCTIONS, int(2 * rng.paretovariate(1.5)))


def _periodic(rng: random.Random, rate: float, minutes: int) -> list[int]:
    """A timer: a fixed period near 1 / rate (snapped to a usual one), a random phase."""
    target = 1 / rate
    if target > 1.5 * _TIMER_PERIODS[-1]:
        period = float(round(target))
    else:
        period = min(_TIMER_PERIODS, key=lambda p: abs(math.log(p / target)))
    phase = rng.uniform(0, period)
    counts = [0] * minutes
    if period >= 1:
        at = phase
        while at < minutes:
            counts[int(at)] += 1
            at += period
    else:
        # How many of phase + k * period (k >= 0) fall before t: ceil((t - phase) / period).
        fired = 0
        for minute in range(minutes):
            upto = max(0, math.ceil((minute + 1 - phase) / period))
            counts[minute] = upto - fired
            fired = upto
    return counts


def _scatter(rng: random.Random, counts: list[int], start: float, end: float, rate: float) -> None:
    """Add a Poisson process of ``rate`` per minute over [start, end) to per-minute ``counts``."""
    end = min(end, len(counts))
    if end <= start:
        return
    span = end - start
    expected = rate * span
    if expected < 4 * span:
        # Sparse: draw how many, then place each uniformly.
        for _ in range(_poisson(rng, expected)):
            counts[min(int(start + rng.random() * span), len(counts) - 1)] += 1
        return
    minute = int(start)
    while minute < end:
        overlap = min(minute + 1, end) - max(minute, start)
        counts[minute] += _poisson(rng, rate * overlap)
        minute += 1


def _steady(rng: random.Random, rate: float, minutes: int) -> list[int]:
    """Poisson arrivals whose rate swings through the day by up to +-60% around ``rate``."""
    swing = rng.uniform(0.0, 0.6)
    phase = rng.uniform(0, 2 * math.pi)

    def at(minute: float) -> float:
        return rate * (1 + swing * math.sin(2 * math.pi * minute / 1440 + phase))

    counts = [0] * minutes
    if rate < 1:
        # Sparse: a homogeneous process at the peak rate, thinned to the swing.
        peak = rate * (1 + swing)
        for _ in range(_poisson(rng, peak * minutes)):
            t = rng.random() * minutes
            if rng.random() * peak <= at(t):
                counts[int(t)] += 1
        return counts
    for minute in range(minutes):
        counts[minute] = _poisson(rng, at(minute + 0.5))
    return counts


def _bursty(rng: random.Random, rate: float, minutes: int) -> list[int]:
    """On/off: bursts at rate / duty, separated by silences; exponential lengths of both."""
    duty = rng.uniform(0.05, 0.4)
    mean_on = rng.uniform(2.0, 30.0)
    mean_off = mean_on * (1 - duty) / duty
    counts = [0] * minutes
    t = 0.0
    on = rng.random() < duty
    while t < minutes:
        length = rng.expovariate(1 / (mean_on if on else mean_off))
        if on:
            _scatter(rng, counts, t, t + length, rate / duty)
        t += length
        on = not on
    return counts


def _sporadic(rng: random.Random, rate: float, minutes: int) -> list[int]:
    """Rare invocations in small clusters (1 + geometric size, mean 2) at random times."""
    counts = [0] * minutes
    for _ in range(_poisson(rng, rate * minutes / 2)):
        t = rng.random() * minutes
        size = 1
        while rng.random() < 0.5:
            size += 1
        for _ in range(size):
            at = t + rng.expovariate(0.5)
            if at < minutes:
                counts[int(at)] += 1
    return counts


def _durations(rng: random.Random) -> DurationPercentiles:
    average = min(max(rng.lognormvariate(math.log(_DURATION_MEDIAN_MS), _DURATION_SIGMA), 1.0), 3e5)
    sigma = rng.uniform(0.1, 1.0)
    median = average / math.exp(sigma * sigma / 2)
    points = [round(median * math.exp(sigma * z), 3) for z in _Z]
    return DurationPercentiles(
        average=round(average, 3),
        minimum=round(points[0] * rng.uniform(0.3, 1.0), 3),
        maximum=round(points[-1] * rng.uniform(1.0, 3.0), 3),
        p0=points[0],
        p1=points[1],
        p25=points[2],
        p50=points[3],
        p75=points[4],
        p99=points[5],
        p100=points[6],
    )


def synthetic_trace(apps: int, minutes: int, seed: int) -> list[TraceFunction]:
    """A trace of ``apps`` apps over ``minutes`` minutes, drawn from the published characterization.

    Every function has durations. The same arguments give the same trace in any process.
    """
    if apps < 1:
        raise ValueError(f"apps must be at least 1, got {apps}")
    if minutes < 1:
        raise ValueError(f"minutes must be at least 1, got {minutes}")
    rng = random.Random(f"faasd-py synthetic trace {seed}")
    triggers = [name for name, _ in _TRIGGERS]
    trigger_weights = [share for _, share in _TRIGGERS]
    owners: list[str] = []
    functions: list[TraceFunction] = []
    for _ in range(apps):
        if owners and rng.random() < 0.25:
            owner = rng.choice(owners)
        else:
            owner = _hash(rng)
            owners.append(owner)
        app = _hash(rng)
        app_rate = 10 ** _from_knots(rng.random())  # invocations per minute
        rare = app_rate <= 1 / 60
        count = _function_count(rng)
        weights = [rng.lognormvariate(0, 1.5) for _ in range(count)]
        total_weight = sum(weights)
        for weight in weights:
            trigger = rng.choices(triggers, trigger_weights)[0]
            rate = app_rate * weight / total_weight
            if trigger == "timer":
                counts = _periodic(rng, min(rate, 60.0), minutes)
            elif rare and rng.random() < 0.75:
                counts = _sporadic(rng, rate, minutes)
            elif rng.random() < 0.6:
                counts = _steady(rng, rate, minutes)
            else:
                counts = _bursty(rng, rate, minutes)
            functions.append(
                TraceFunction(owner, app, _hash(rng), trigger, tuple(counts), _durations(rng))
            )
    return with_unique_names(functions)


def synthetic_memory(
    functions: Iterable[TraceFunction], seed: int
) -> dict[tuple[str, str], MemoryPercentiles]:
    """Memory percentiles (MB) for each app of ``functions``: 90% of apps at most 400 MB.

    The average is lognormal with median 150 MB; p100 is 1.05 .. 1.6 times the average.
    """
    result: dict[tuple[str, str], MemoryPercentiles] = {}
    for f in functions:
        key = (f.owner, f.app)
        if key in result:
            continue
        rng = random.Random(f"faasd-py synthetic memory {seed}:{f.owner}:{f.app}")
        average = max(16.0, rng.lognormvariate(math.log(150.0), 0.5))
        top = average * rng.uniform(1.05, 1.6)
        low = average * rng.uniform(0.6, 0.95)
        # Percentiles 1, 5, 25, 50, 75, 95, 99, 100 between low and top, in order.
        shares = (0.0, 0.05, 0.3, 0.5, 0.65, 0.85, 0.95, 1.0)
        points = [round(low + (top - low) * s, 1) for s in shares]
        result[key] = MemoryPercentiles(round(average, 1), *points)
    return result
