"""Replay a per-minute trace through keep-alive policies: cold starts and wasted memory per app.

The simulator drives the same :class:`~faasd_py.scheduler.AppPolicy` objects the worker drives,
at the trace's own granularity (the Azure 2019 trace counts invocations per minute), as the
paper's simulator does. It needs numpy (the ``sim`` extra); the policies do not.

The model, and the approximations it makes:

- functions with the same (owner, app) form one app; an app has at most one instance, loaded or
  not (no concurrency): the invocations of one minute share it, so only the first of a minute
  can be cold;
- the invocations of minute m arrive at its start, and the app is in use for the whole minute,
  or longer when the average duration of that minute's invocations (from the durations file) is
  longer: its execution ends at ``60 m + max(60 s, average duration)``. So an app active in
  consecutive minutes is never idle, and the idle time before the next active minute t is
  ``60 t - end``, whole minutes of silence unless an execution ran over. Arrival times within a
  minute and the spread of durations around their average are not modelled; an arrival while
  the app still runs is warm and is no idle time;
- after each execution the app's policy gives its windows (p, k), counted from its end: the
  next arrival, an idle time ``i`` later, is warm if ``p <= i <= k``. Loaded but idle (wasted)
  is ``i - p`` for a warm arrival, ``k - p`` when the app was unloaded before it, 0 when it
  arrived before the pre-warm load (which it replaces). After the last execution the app is
  loaded until ``min(k, end of trace)``; before the first it is not loaded (that one is cold);
- wasted memory time is wasted seconds x the app's memory (MB): the average of the memory file,
  or ``default_memory_mb``.

Policies whose windows do not learn (fixed keep-alive, no-unload) are asked once per app and
applied to all of its gaps at once with numpy; learning ones (hybrid) replay every idle time in
order, in a plain loop over the app's active minutes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from faasd_py.scheduler._policy import FixedKeepAlive, Policy
from faasd_py.traces import MemoryPercentiles, TraceFunction

MINUTE = 60.0
DEFAULT_MEMORY_MB = 150.0
REFERENCE = FixedKeepAlive(600.0)
"""Wasted memory is reported relative to this policy (fixed 10-minute keep-alive)."""

Progress = Callable[[str, int, int], None]
"""progress(policy name, apps done, apps in all)."""


@dataclass(frozen=True)
class TraceApps:
    """A trace grouped into apps, as the simulator replays it.

    Flat arrays over every (app, active minute), app by app and in time order within an app;
    ``starts[a]:starts[a + 1]`` are app ``a``'s entries.
    """

    names: tuple[str, ...]
    memory_mb: npt.NDArray[np.float64]
    starts: npt.NDArray[np.int64]
    minute: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    busy: npt.NDArray[np.float64]
    """Seconds the app is in use from the start of that minute (at least 60)."""
    minutes: int
    """The trace's length in minutes."""
    memory_defaulted: int
    """Apps whose memory the memory file did not give."""

    @property
    def apps(self) -> int:
        return len(self.names)

    @property
    def invocations(self) -> npt.NDArray[np.int64]:
        """Invocations per app."""
        return np.add.reduceat(self.count, self.starts[:-1]) if self.apps else self.count[:0]


def group_apps(
    functions: Sequence[TraceFunction],
    memory: Mapping[tuple[str, str], MemoryPercentiles] | None = None,
    default_memory_mb: float = DEFAULT_MEMORY_MB,
) -> TraceApps:
    """The trace's functions grouped into apps; apps never invoked are left out."""
    if not functions:
        raise ValueError("the trace has no functions")
    minutes = max(len(f.counts) for f in functions)
    keys = [(f.owner, f.app) for f in functions]
    order = sorted(range(len(functions)), key=keys.__getitem__)
    app_keys: list[tuple[str, str]] = []
    app_of = np.empty(len(functions), dtype=np.int64)
    for i in order:
        if not app_keys or app_keys[-1] != keys[i]:
            app_keys.append(keys[i])
        app_of[i] = len(app_keys) - 1
    # One app's rows at a time keeps the peak memory at one app's functions, not the trace's.
    counts = np.zeros((len(app_keys), minutes), dtype=np.int64)
    busy_ms = np.zeros((len(app_keys), minutes), dtype=np.float64)
    for i, f in enumerate(functions):
        row = np.fromiter(f.counts, dtype=np.int64, count=len(f.counts))
        counts[app_of[i], : len(row)] += row
        if f.durations is not None and f.durations.average > 0:
            busy_ms[app_of[i], : len(row)] += row * f.durations.average
    app_index, minute = np.nonzero(counts)
    invoked = np.unique(app_index)
    remap = np.full(len(app_keys), -1, dtype=np.int64)
    remap[invoked] = np.arange(len(invoked))
    starts = np.searchsorted(remap[app_index], np.arange(len(invoked) + 1))
    memory = memory or {}
    mb = np.array(
        [memory[app_keys[a]].average_mb if app_keys[a] in memory else np.nan for a in invoked],
        dtype=np.float64,
    )
    defaulted = int(np.isnan(mb).sum())
    mb[np.isnan(mb)] = default_memory_mb
    names = tuple(_app_name(*app_keys[a]) for a in invoked)
    return TraceApps(
        names=names,
        memory_mb=mb,
        starts=starts.astype(np.int64),
        minute=minute.astype(np.int64),
        count=counts[app_index, minute],
        busy=np.maximum(busy_ms[app_index, minute] / 1000.0 / counts[app_index, minute], MINUTE),
        minutes=minutes,
        memory_defaulted=defaulted,
    )


def _app_name(owner: str, app: str) -> str:
    return TraceFunction(owner, app, "", "", ()).app_name


@dataclass(frozen=True)
class PolicyResult:
    """One policy over one trace."""

    policy: str
    cold_percent: npt.NDArray[np.float64]
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


def _tail_wasted(
    prewarm: npt.NDArray[np.float64],
    keepalive: npt.NDArray[np.float64],
    remaining: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Loaded-but-idle seconds from the windows to the end of the trace."""
    return np.where(remaining > prewarm, np.minimum(keepalive, remaining) - prewarm, 0.0)


def _gaps(apps: TraceApps) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Seconds from each execution's end to the app's next arrival (to the end of the trace after
    its last; negative when the next came while it ran), and which entries are an app's last."""
    end = apps.minute * MINUTE + apps.busy
    nxt = np.empty_like(end)
    nxt[:-1] = apps.minute[1:] * MINUTE
    last = np.zeros(len(end), dtype=bool)
    last[apps.starts[1:] - 1] = True
    nxt[last] = apps.minutes * MINUTE
    return nxt - end, last


def _replay_constant(
    apps: TraceApps,
    policy: Policy,
    idle: npt.NDArray[np.float64],
    last: npt.NDArray[np.bool_],
    cold_by_reason: Counter[str],
    wasted_by_reason: dict[str, float],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], Counter[str]]:
    """Windows that do not learn: each app's windows once, applied to all its gaps."""
    memory = apps.memory_mb.tolist()
    lengths = np.diff(apps.starts)
    windows = [policy.new_app().windows(0.0) for _ in range(apps.apps)]
    p = np.repeat(np.array([w.prewarm for w in windows], dtype=np.float64), lengths)
    k = np.repeat(np.array([w.keepalive for w in windows], dtype=np.float64), lengths)
    overlap = idle < 0  # the next arrival came while the app ran: warm, nothing idle
    cold = ~last & ~overlap & ~((p <= idle) & (idle <= k))
    wasted = np.where(
        last,
        _tail_wasted(p, k, idle),
        np.where(overlap | (idle < p), 0.0, np.minimum(idle, k) - p),
    )
    app_of = np.repeat(np.arange(apps.apps), lengths)
    cold_per_app = np.bincount(app_of, weights=cold, minlength=apps.apps).astype(np.int64)
    wasted_per_app = np.bincount(app_of, weights=wasted, minlength=apps.apps).astype(np.float64)
    decisions: Counter[str] = Counter()
    for a, (w, n) in enumerate(zip(windows, lengths.tolist(), strict=True)):
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
    idle, last = _gaps(apps)
    invocations = apps.invocations
    first = np.ones(apps.apps, dtype=np.int64)  # each app's first invocation finds it unloaded
    probe = policy.new_app()
    cold_by_reason: Counter[str] = Counter({"first": apps.apps})
    wasted_by_reason: dict[str, float] = {}
    if not probe.learns:
        cold, wasted, decisions = _replay_constant(
            apps, policy, idle, last, cold_by_reason, wasted_by_reason
        )
        if progress is not None:
            progress(policy.name, apps.apps, apps.apps)
    else:
        cold, wasted, decisions = _replay_learning(
            apps, policy, idle, last, cold_by_reason, wasted_by_reason, progress
        )
    cold = cold + first
    return PolicyResult(
        policy=policy.name,
        cold_percent=cold / np.maximum(invocations, 1) * 100.0,
        cold_starts=int(cold.sum()),
        invocations=int(invocations.sum()),
        wasted_mb_s=float((wasted * apps.memory_mb).sum()),
        decisions=dict(decisions),
        cold_by_reason=dict(cold_by_reason),
        wasted_by_reason=dict(wasted_by_reason),
    )


def _replay_learning(
    apps: TraceApps,
    policy: Policy,
    idle_array: npt.NDArray[np.float64],
    last_array: npt.NDArray[np.bool_],
    cold_by_reason: Counter[str],
    wasted_by_reason: dict[str, float],
    progress: Progress | None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], Counter[str]]:
    """Every app in order of its idle times: ask for windows, count, then observe the idle time.

    This is the simulator's hot loop (millions of iterations on a full trace): plain floats and
    local names only.
    """
    end_list = (apps.minute * MINUTE + apps.busy).tolist()
    idle_list = idle_array.tolist()
    bounds = apps.starts.tolist()
    memory = apps.memory_mb.tolist()
    cold_out = np.zeros(apps.apps, dtype=np.int64)
    wasted_out = np.zeros(apps.apps, dtype=np.float64)
    decisions: dict[str, int] = {}
    cold_reason: dict[str, int] = {}
    wasted_reason: dict[str, float] = {}
    step = max(1, apps.apps // 200)
    for a in range(apps.apps):
        state = policy.new_app()
        windows, observe = state.windows, state.observe
        lo, hi = bounds[a], bounds[a + 1]
        cold = 0
        wasted = 0.0
        mb = memory[a]
        for j in range(lo, hi):
            end = end_list[j]
            idle = idle_list[j]
            p, k, reason, _ = windows(end)
            if j == hi - 1:
                gap_wasted = (min(k, idle) - p) if idle > p else 0.0
            elif idle < 0:
                # The next arrival came while the app ran: warm, and no idle time to learn.
                gap_wasted = 0.0
            elif p <= idle <= k:
                gap_wasted = idle - p
                observe(end, end + idle)
            else:
                cold += 1
                cold_reason[reason] = cold_reason.get(reason, 0) + 1
                gap_wasted = 0.0 if idle < p else k - p
                observe(end, end + idle)
            wasted += gap_wasted
            wasted_reason[reason] = wasted_reason.get(reason, 0.0) + gap_wasted * mb
            decisions[reason] = decisions.get(reason, 0) + 1
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
