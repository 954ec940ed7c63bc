"""Replay a per-minute trace through keep-alive policies: cold starts and wasted memory per app.

The simulator drives the same :class:`~faasd_py.scheduler.AppPolicy` objects the worker drives.
It follows the definitions of Shahrad et al. (ATC'20) inside each minute of the trace (the
Azure 2019 trace counts invocations per minute). It needs numpy (the ``sim`` extra); the
policies do not.

The model:

- functions with the same (owner, app) form one app; an app has one instance, loaded or not,
  that serves all of its executions (overlapping ones too);
- arrivals inside a minute follow an explicit model (:mod:`faasd_py.scheduler._arrivals`):
  ``uniform`` (the default) spaces the app's c arrivals of the minute evenly, ``poisson`` places
  them at seeded random times, ``start`` puts them all at the minute's start (where the old
  per-minute model put them, though it also kept the app busy for the whole minute);
- every execution lasts the app's duration in that minute: the average of its functions'
  averages from the durations file, weighted by their counts in the minute (functions the
  file does not list take ``default_duration_ms``); with ``sample_durations`` each execution
  draws its own from the app's percentiles (its functions' points, weighted by invocations);
- the app is busy while any execution runs; an idle time runs from the end of the app's
  executions to the next arrival (an arrival while it runs is warm and is no idle time);
- after each idle period's start the app's policy gives its windows (p, k), counted from the
  end of the execution: the next arrival, an idle time ``i`` later, is warm if ``p <= i <= k``,
  and cold otherwise: every arrival that finds its app unloaded is a cold start. Loaded but
  not executing (wasted) is ``i - p`` for a warm arrival, ``k - p`` when the app was unloaded
  before it, 0 when it came before the pre-warm load (which it replaces). After the last
  execution the app is loaded until ``min(k, end of trace)``; before its first arrival it is
  not loaded (that one is cold);
- wasted memory time is wasted seconds x the app's memory (MB): the average of the memory
  file, or ``default_memory_mb``.

The fast paths, and where they are exact:

- a minute's arrivals become an *episode*: a first arrival, then ``n`` more after equal idle
  times ``g``, busy until ``end``. Under ``uniform`` with average durations that is exact:
  spacing 60/c, ``g = 60/c - d`` when positive (else the executions overlap: one busy stretch,
  n = 0), ``end`` = last arrival + d. Under ``start`` it is exact with n = 0;
- under ``poisson``, or with sampled durations, minutes of at most :data:`EXACT_LIMIT` arrivals
  are expanded into one episode per arrival (exact). Busier minutes keep one episode whose first
  and last arrivals are drawn from their exact distributions (the minimum and maximum of c
  uniform times) and whose inner gaps are replaced by their mean; more than 10 arrivals in a
  minute are gaps under 6 s on average, all in the first bin of a histogram of one-minute bins
  (narrower bins, as tests use, can see the difference), so this changes only the waste inside
  such minutes (by the spread of the gaps around their mean), and with sampled
  durations those minutes use the average;
- windows that do not learn (fixed keep-alive, no-unload) are asked once per app and applied to
  every idle time at once with numpy; learning ones (hybrid) replay every idle time in order,
  one at a time, except in a settled stretch: once
  :meth:`~faasd_py.scheduler.HybridApp.settled` proves that idle times in the histogram's first
  bin are all warm with pre-warm 0, they are counted without asking until a longer one comes
  (the decisions and waste of the stretch go to the rule that held when it began: the
  fallback and the histogram rule can take turns inside it, with the same outcome for these
  idle times).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from faasd_py.scheduler._arrivals import ARRIVALS, DEFAULT_ARRIVALS, Arrivals
from faasd_py.scheduler._policy import FixedKeepAlive, HybridApp, Policy
from faasd_py.traces import DurationPercentiles, MemoryPercentiles, TraceFunction

MINUTE = 60.0
DEFAULT_MEMORY_MB = 150.0
DEFAULT_DURATION_MS = 1000.0
"""The execution time of a function the durations file does not list: half of the functions
of the Azure 2019 trace average under about a second (Shahrad et al., Fig. 7)."""
EXACT_LIMIT = 10
"""Minutes with at most this many arrivals are expanded per arrival (poisson, sampled
durations)."""
REFERENCE = FixedKeepAlive(600.0)
"""Wasted memory is reported relative to this policy (fixed 10-minute keep-alive)."""

Progress = Callable[[str, int, int], None]
"""progress(policy name, apps done, apps in all)."""

_QUANTILES = np.array([0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0])
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TraceApps:
    """A trace grouped into apps and turned into episodes, as the simulator replays it.

    Flat arrays over every episode, app by app and in time order within an app;
    ``starts[a]:starts[a + 1]`` are app ``a``'s. An episode is an arrival at ``arrive``
    (seconds from the trace's start), then ``gaps`` more arrivals each an idle time ``gap``
    after the previous execution ended; the app is busy until ``end`` (never earlier than an
    earlier episode's end).
    """

    names: tuple[str, ...]
    memory_mb: Floats
    starts: Ints
    arrive: Floats
    gaps: Ints
    gap: Floats
    end: Floats
    invocations: Ints
    """Invocations per app."""
    minutes: int
    """The trace's length in minutes."""
    memory_defaulted: int
    """Apps whose memory the memory file did not give."""
    durations_missing: int = 0
    """Invoked functions without durations (they ran ``default_duration_ms``)."""
    durations_missing_invocations: int = 0
    arrivals: Arrivals = DEFAULT_ARRIVALS

    @property
    def apps(self) -> int:
        return len(self.names)

    @property
    def episodes(self) -> int:
        return len(self.arrive)


def group_apps(
    functions: Sequence[TraceFunction],
    memory: Mapping[tuple[str, str], MemoryPercentiles] | None = None,
    default_memory_mb: float = DEFAULT_MEMORY_MB,
    *,
    arrivals: Arrivals = DEFAULT_ARRIVALS,
    seed: int = 1,
    sample_durations: bool = False,
    default_duration_ms: float = DEFAULT_DURATION_MS,
) -> TraceApps:
    """The trace's functions grouped into apps and episodes; apps never invoked are left out."""
    if not functions:
        raise ValueError("the trace has no functions")
    if arrivals not in ARRIVALS:
        raise ValueError(f"arrivals must be one of {', '.join(ARRIVALS)}, got {arrivals!r}")
    if not default_duration_ms >= 0:
        raise ValueError(f"the default duration must be >= 0 ms, got {default_duration_ms!r}")
    minutes = max(len(f.counts) for f in functions)
    keys = [(f.owner, f.app) for f in functions]
    order = sorted(range(len(functions)), key=keys.__getitem__)
    app_keys: list[tuple[str, str]] = []
    app_of = np.empty(len(functions), dtype=np.int64)
    for i in order:
        if not app_keys or app_keys[-1] != keys[i]:
            app_keys.append(keys[i])
        app_of[i] = len(app_keys) - 1
    # One function's row at a time keeps the peak memory at the apps' matrices, not the trace's.
    counts = np.zeros((len(app_keys), minutes), dtype=np.int64)
    busy_ms = np.zeros((len(app_keys), minutes), dtype=np.float64)
    points = np.zeros((len(app_keys), 9), dtype=np.float64)  # p0..p100, minimum, maximum
    weights = np.zeros(len(app_keys), dtype=np.float64)
    missing = missing_invocations = 0
    for i, f in enumerate(functions):
        row = np.asarray(f.counts, dtype=np.int64)
        total = int(row.sum())
        a = app_of[i]
        counts[a, : len(row)] += row
        durations = f.durations
        if durations is None:
            missing += total > 0
            missing_invocations += total
            average = default_duration_ms
            durations = DurationPercentiles(*([default_duration_ms] * 10))
        else:
            average = durations.average
        busy_ms[a, : len(row)] += row * average
        if sample_durations and total:
            points[a] += total * np.array(_points(durations))
            weights[a] += total
    app_index, minute = np.nonzero(counts)
    invoked = np.unique(app_index)
    remap = np.full(len(app_keys), -1, dtype=np.int64)
    remap[invoked] = np.arange(len(invoked))
    entry_app = remap[app_index]
    count = counts[app_index, minute]
    duration = busy_ms[app_index, minute] / 1000.0 / count
    del counts, busy_ms
    sampler = None
    if sample_durations:
        table = points[invoked] / np.maximum(weights[invoked], 1.0)[:, None]
        sampler = _Sampler(table / 1000.0)
    episodes = _episodes(
        entry_app, minute, count, duration, arrivals, np.random.default_rng(seed), sampler
    )
    app_rows, arrive, gaps, gap, end = episodes
    starts = np.searchsorted(app_rows, np.arange(len(invoked) + 1))
    memory = memory or {}
    mb = np.array(
        [memory[app_keys[a]].average_mb if app_keys[a] in memory else np.nan for a in invoked],
        dtype=np.float64,
    )
    defaulted = int(np.isnan(mb).sum())
    mb[np.isnan(mb)] = default_memory_mb
    return TraceApps(
        names=tuple(_app_name(*app_keys[a]) for a in invoked),
        memory_mb=mb,
        starts=starts.astype(np.int64),
        arrive=arrive,
        gaps=gaps,
        gap=gap,
        end=end,
        invocations=np.bincount(entry_app, weights=count, minlength=len(invoked)).astype(np.int64),
        minutes=minutes,
        memory_defaulted=defaulted,
        durations_missing=int(missing),
        durations_missing_invocations=int(missing_invocations),
        arrivals=arrivals,
    )


def _points(d: DurationPercentiles) -> tuple[float, ...]:
    return (d.p0, d.p1, d.p25, d.p50, d.p75, d.p99, d.p100, d.minimum, d.maximum)


class _Sampler:
    """Execution times (s) drawn by inverse CDF from each app's percentile points, piecewise
    linear between them, within [minimum, maximum], as DurationPercentiles.sample does."""

    def __init__(self, table: Floats) -> None:
        self.knots = np.maximum.accumulate(table[:, :7], axis=1)
        self.low = table[:, 7]
        self.high = table[:, 8]

    def __call__(self, app: Ints, u: Floats) -> Floats:
        i = np.clip(np.searchsorted(_QUANTILES, u, side="right"), 1, len(_QUANTILES) - 1)
        lo_q, hi_q = _QUANTILES[i - 1], _QUANTILES[i]
        lo, hi = self.knots[app, i - 1], self.knots[app, i]
        value = lo + (hi - lo) * (u - lo_q) / (hi_q - lo_q)
        ordered = self.low[app] <= self.high[app]
        clamped = np.minimum(np.maximum(value, self.low[app]), self.high[app])
        result: Floats = np.where(ordered, clamped, value)
        return result


def _episodes(
    entry_app: Ints,
    minute: Ints,
    count: Ints,
    duration: Floats,
    arrivals: Arrivals,
    rng: np.random.Generator,
    sampler: _Sampler | None,
) -> tuple[Ints, Floats, Ints, Floats, Floats]:
    """(app, arrive, gaps, gap, end) of every episode, from the (app, active minute) entries."""
    expand = (count <= EXACT_LIMIT) & ((arrivals == "poisson") | (sampler is not None))
    reps = np.where(expand, count, 1)
    row_entry = np.repeat(np.arange(len(count)), reps)
    first_row = np.cumsum(reps) - reps
    sub = np.arange(len(row_entry)) - np.repeat(first_row, reps)
    app = entry_app[row_entry]
    c = count[row_entry].astype(np.float64)
    base = minute[row_entry] * MINUTE
    d = duration[row_entry]
    expanded = expand[row_entry]
    # Offsets (s) of the first and last arrival of an episode, and the spacing between them.
    if arrivals == "start":
        first = np.zeros(len(c))
        last = first
    elif arrivals == "uniform":
        first = np.where(expanded, (sub + 0.5) / c, 0.5 / c) * MINUTE
        last = np.where(expanded, first, MINUTE - first)
    else:
        u = rng.random(len(c))
        # Expanded rows: sorted uniform times within their minute (entry index + u sorts each
        # entry's rows among themselves and keeps the entries in order).
        keyed = np.sort(np.where(expanded, row_entry + u, row_entry.astype(np.float64)))
        inner = (keyed - row_entry) * MINUTE
        # Busy minutes: the minimum of c uniform times, then the maximum of the other c - 1.
        low = MINUTE * (1.0 - u ** (1.0 / c))
        v = rng.random(len(c))
        high = low + (MINUTE - low) * v ** (1.0 / np.maximum(c - 1.0, 1.0))
        first = np.where(expanded, inner, low)
        last = np.where(expanded, inner, high)
    if sampler is not None:
        sampled = sampler(app, rng.random(len(c)))
        d = np.where(expanded, sampled, d)
    inner_arrivals = np.where(expanded, 0.0, c - 1.0)
    spacing = np.divide(
        last - first, inner_arrivals, out=np.zeros(len(c)), where=inner_arrivals > 0
    )
    gap = spacing - d
    idle_inside = gap > 0
    gaps = np.where(idle_inside, inner_arrivals, 0.0).astype(np.int64)
    gap = np.where(idle_inside, gap, 0.0)
    arrive = base + first
    end = _running_max(app, base + last + d)
    return app, arrive, gaps, gap, end


def _running_max(app: Ints, values: Floats) -> Floats:
    """The running maximum of ``values`` within each app (rows grouped by app, in order)."""
    if not len(values):
        return values
    # Each app's values lifted above every earlier app's: one accumulate over the whole array.
    lift = float(values.max() - values.min()) + 1.0
    lifted = values + app * lift
    result: Floats = np.maximum.accumulate(lifted) - app * lift
    return result


def _app_name(owner: str, app: str) -> str:
    return TraceFunction(owner, app, "", "", ()).app_name


@dataclass(frozen=True)
class PolicyResult:
    """One policy over one trace."""

    policy: str
    cold_percent: Floats
    """Per app: cold starts / invocations x 100."""
    cold_starts: int
    invocations: int
    wasted_mb_s: float
    decisions: dict[str, int] = field(default_factory=dict)
    cold_by_reason: dict[str, int] = field(default_factory=dict)
    """Cold starts after windows of each rule (the first invocation of an app is "first")."""
    wasted_by_reason: dict[str, float] = field(default_factory=dict)
    """Wasted MB x s under windows of each rule."""

    def cold_percentile(self, percent: float) -> float:
        """The cold-start % of the app at ``percent`` (75: the 75th-percentile app)."""
        return float(np.percentile(self.cold_percent, percent)) if len(self.cold_percent) else 0.0

    def cdf(self, points: int = 101) -> list[tuple[float, float]]:
        """(cold-start %, share of apps at or below it) at ``points`` evenly spaced shares."""
        if not len(self.cold_percent):
            return []
        shares = np.linspace(0, 100, points)
        values = np.percentile(self.cold_percent, shares, method="inverted_cdf")
        return [(float(v), float(s / 100)) for v, s in zip(values, shares, strict=True)]


def _outcome(idle: Floats, p: Floats, k: Floats) -> tuple[npt.NDArray[np.bool_], Floats]:
    """Whether an arrival ``idle`` seconds after an execution's end is cold under windows
    (p, k), and the seconds the app was loaded but idle before it."""
    cold = ~((p <= idle) & (idle <= k))
    wasted = np.where(idle < p, 0.0, np.minimum(idle, k) - p)
    return cold, wasted


def _tail_wasted(prewarm: Floats, keepalive: Floats, remaining: Floats) -> Floats:
    """Loaded-but-idle seconds from the windows to the end of the trace."""
    return np.where(remaining > prewarm, np.minimum(keepalive, remaining) - prewarm, 0.0)


def _replay_constant(
    apps: TraceApps,
    policy: Policy,
    cold_by_reason: Counter[str],
    wasted_by_reason: dict[str, float],
) -> tuple[Ints, Floats, Counter[str]]:
    """Windows that do not learn: each app's windows once, applied to all its idle times."""
    memory = apps.memory_mb.tolist()
    lengths = np.diff(apps.starts)
    windows = [policy.new_app().windows(0.0) for _ in range(apps.apps)]
    p = np.repeat(np.array([w.prewarm for w in windows], dtype=np.float64), lengths)
    k = np.repeat(np.array([w.keepalive for w in windows], dtype=np.float64), lengths)
    first = np.zeros(apps.episodes, dtype=bool)
    first[apps.starts[:-1]] = True
    last = np.zeros(apps.episodes, dtype=bool)
    last[apps.starts[1:] - 1] = True
    # Between episodes: from the app's busy end to the next episode's first arrival.
    before = np.full(apps.episodes, -1.0)
    before[1:] = apps.arrive[1:] - apps.end[:-1]
    asked = ~first & (before >= 0)  # an arrival while the app runs is warm: nothing to ask
    cold_before, wasted_before = _outcome(before, p, k)
    cold_inside, wasted_inside = _outcome(apps.gap, p, k)
    tail = _tail_wasted(p, k, apps.minutes * MINUTE - apps.end)
    cold = np.where(asked, cold_before, False) + apps.gaps * cold_inside
    wasted = (
        np.where(asked, wasted_before, 0.0) + apps.gaps * wasted_inside + np.where(last, tail, 0.0)
    )
    app_of = np.repeat(np.arange(apps.apps), lengths)
    cold_per_app = np.bincount(app_of, weights=cold, minlength=apps.apps).astype(np.int64)
    wasted_per_app = np.bincount(app_of, weights=wasted, minlength=apps.apps).astype(np.float64)
    asks = np.bincount(app_of, weights=asked + apps.gaps + last, minlength=apps.apps)
    decisions: Counter[str] = Counter()
    for a, (w, n) in enumerate(zip(windows, asks.astype(np.int64).tolist(), strict=True)):
        decisions[w.reason.value] += n
        cold_by_reason[w.reason.value] += int(cold_per_app[a])
        wasted_by_reason[w.reason.value] = (
            wasted_by_reason.get(w.reason.value, 0.0) + float(wasted_per_app[a]) * memory[a]
        )
    return cold_per_app, wasted_per_app, decisions


def simulate_policy(
    apps: TraceApps, policy: Policy, progress: Progress | None = None
) -> PolicyResult:
    """Replay ``apps`` through ``policy``: every app starts with a fresh per-app state."""
    first = np.ones(apps.apps, dtype=np.int64)  # each app's first invocation finds it unloaded
    probe = policy.new_app()
    cold_by_reason: Counter[str] = Counter({"first": apps.apps})
    wasted_by_reason: dict[str, float] = {}
    if not probe.learns:
        cold, wasted, decisions = _replay_constant(apps, policy, cold_by_reason, wasted_by_reason)
        if progress is not None:
            progress(policy.name, apps.apps, apps.apps)
    else:
        cold, wasted, decisions = _replay_learning(
            apps, policy, cold_by_reason, wasted_by_reason, progress
        )
    cold = cold + first
    return PolicyResult(
        policy=policy.name,
        cold_percent=cold / np.maximum(apps.invocations, 1) * 100.0,
        cold_starts=int(cold.sum()),
        invocations=int(apps.invocations.sum()),
        wasted_mb_s=float((wasted * apps.memory_mb).sum()),
        decisions=dict(decisions),
        cold_by_reason=dict(cold_by_reason),
        wasted_by_reason=dict(wasted_by_reason),
    )


def _replay_learning(
    apps: TraceApps,
    policy: Policy,
    cold_by_reason: Counter[str],
    wasted_by_reason: dict[str, float],
    progress: Progress | None,
) -> tuple[Ints, Floats, Counter[str]]:
    """Every app's idle times in order: ask for windows, count, then observe the idle time.

    This is the simulator's hot loop (millions of iterations on a full trace): plain floats and
    local names only.
    """
    arrive_list = apps.arrive.tolist()
    end_list = apps.end.tolist()
    gaps_list = apps.gaps.tolist()
    gap_list = apps.gap.tolist()
    bounds = apps.starts.tolist()
    memory = apps.memory_mb.tolist()
    trace_end = apps.minutes * MINUTE
    cold_out = np.zeros(apps.apps, dtype=np.int64)
    wasted_out = np.zeros(apps.apps, dtype=np.float64)
    decisions: dict[str, int] = {}
    cold_reason: dict[str, int] = {}
    wasted_reason: dict[str, float] = {}
    step = max(1, apps.apps // 200)
    for a in range(apps.apps):
        state = policy.new_app()
        windows, observe = state.windows, state.observe
        hybrid = state if isinstance(state, HybridApp) else None
        width = hybrid.config.bin_width if hybrid else 0.0
        # A settled stretch (see HybridApp.settled): while idle times stay in the first bin,
        # each is warm with pre-warm 0, so they are counted without asking, credited to the
        # rule that held when the stretch began, and given to the histogram at its end.
        stretch: str | None = None
        pending = 0
        lo, hi = bounds[a], bounds[a + 1]
        cold = 0
        wasted = 0.0
        mb = memory[a]
        busy_end = 0.0
        for j in range(lo, hi):
            arrival = arrive_list[j]
            inside = (arrival, gap_list[j], gaps_list[j])
            idle = arrival - busy_end
            # The idle time before the episode (none before an app's first arrival, or when
            # the arrival came while the app ran), then its equal idle times inside the minute.
            runs = ((busy_end, idle, 1), inside) if j > lo and idle >= 0 else (inside,)
            for since, idle, left in runs:
                while left:
                    if stretch is None:
                        p, k, reason, _ = windows(since)
                        if hybrid and idle < width and hybrid.settled(idle):
                            stretch = reason
                    if stretch is not None:
                        if idle < width:
                            decisions[stretch] = decisions.get(stretch, 0) + left
                            spent = left * idle
                            wasted += spent
                            wasted_reason[stretch] = wasted_reason.get(stretch, 0.0) + spent * mb
                            pending += left
                            break
                        if hybrid:
                            hybrid.observe_many(0.0, pending)
                        stretch, pending = None, 0
                        continue
                    decisions[reason] = decisions.get(reason, 0) + 1
                    if p <= idle <= k:
                        spent = idle - p
                    else:
                        cold += 1
                        cold_reason[reason] = cold_reason.get(reason, 0) + 1
                        spent = 0.0 if idle < p else k - p
                    wasted += spent
                    wasted_reason[reason] = wasted_reason.get(reason, 0.0) + spent * mb
                    observe(since, since + idle)
                    left -= 1
            busy_end = end_list[j]
        if pending and hybrid:
            hybrid.observe_many(0.0, pending)
        p, k, reason, _ = windows(busy_end)
        decisions[reason] = decisions.get(reason, 0) + 1
        remaining = trace_end - busy_end
        spent = (min(k, remaining) - p) if remaining > p else 0.0
        wasted += spent
        wasted_reason[reason] = wasted_reason.get(reason, 0.0) + spent * mb
        cold_out[a] = cold
        wasted_out[a] = wasted
        if progress is not None and (a % step == 0 or a == apps.apps - 1):
            progress(policy.name, a + 1, apps.apps)
    cold_by_reason.update({str(r): n for r, n in cold_reason.items()})
    wasted_by_reason.update({str(r): w for r, w in wasted_reason.items()})
    return cold_out, wasted_out, Counter({str(r): n for r, n in decisions.items()})


def simulate(
    apps: TraceApps, policies: Iterable[Policy], progress: Progress | None = None
) -> list[PolicyResult]:
    """Every policy over ``apps``, in order; fixed 10-minute first if it was not asked for,
    since wasted memory is reported relative to it."""
    chosen = list(policies)
    if not any(p.name == REFERENCE.name for p in chosen):
        chosen.insert(0, REFERENCE)
    return [simulate_policy(apps, p, progress) for p in chosen]


def summary(results: Sequence[PolicyResult]) -> list[dict[str, Any]]:
    """Per policy, the figures of the report, wasted memory normalized to fixed 10-minute."""
    reference = next(r for r in results if r.policy == REFERENCE.name)
    rows = []
    for r in results:
        rows.append(
            {
                "policy": r.policy,
                "apps": len(r.cold_percent),
                "invocations": r.invocations,
                "cold_starts": r.cold_starts,
                "cold_start_percent": 100.0 * r.cold_starts / r.invocations if r.invocations else 0,
                "p50_app_cold_percent": r.cold_percentile(50),
                "p75_app_cold_percent": r.cold_percentile(75),
                "p90_app_cold_percent": r.cold_percentile(90),
                "wasted_mb_s": r.wasted_mb_s,
                "wasted_normalized": (
                    r.wasted_mb_s / reference.wasted_mb_s if reference.wasted_mb_s else None
                ),
                "decisions": dict(sorted(r.decisions.items())),
                "cold_by_reason": dict(sorted(r.cold_by_reason.items())),
                "wasted_by_reason_normalized": {
                    k: (v / reference.wasted_mb_s if reference.wasted_mb_s else None)
                    for k, v in sorted(r.wasted_by_reason.items())
                },
                "cdf": r.cdf(),
            }
        )
    return rows
