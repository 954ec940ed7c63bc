"""One app's load/unload lifecycle under a keep-alive policy: a pure core, timers as values.

The worker's driver (faasd_py.worker._apps) feeds it what happens and carries out what it
returns; it reads no clock and starts nothing, so tests drive it with scripted times.

Rules (DESIGN.md, the scheduler section):

- ``arrival(now)``: an invocation of any function of the app arrives. When none was in flight,
  the gap since the last execution ended is an idle time for the policy (arrivals during an
  execution are not). Every pending timer is cancelled. An app that is not loaded is loaded
  now (``LOAD``): the invocation cold-starts, and the instance it starts is kept.
- ``end(now)``: an invocation ends. When it was the last one in flight, the policy gives the
  windows, counted from ``now``: pre-warm > 0 unloads at once (``UNLOAD``) and sets a load
  timer at ``now + prewarm``; the unload timer is set at ``now + keepalive`` (none when it is
  infinite). Pre-warm 0 keeps the app loaded until the unload timer.
- ``deployed(now)``: after a deploy or a restart the app is loaded, as functions always were;
  it is kept for the policy's keep-alive from then (pre-warm is ignored: it is loaded already).
- ``due(now)``: the timers that have come: the load timer pre-warms (``PREWARM``: the same
  launch path as a cold start, but the instances count as pre-warmed); the unload timer
  unloads. An unload timer that has passed wins over a load timer not yet carried out, so
  a late driver never loads an app only to unload it at once.

Whether a function's user pin (com.openfaas.scale.min, scale-function) keeps instances is
not decided here: the pool applies its pin under whatever this core asks.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from dataclasses import dataclass, field

from faasd_py.scheduler import AppPolicy, AppStatistics, Reason, Windows


class Action(enum.Enum):
    LOAD = "load"
    """Load the app for an invocation that arrived while it was unloaded (a cold start)."""
    PREWARM = "prewarm"
    """Load the app ahead of demand, at the end of a pre-warm window."""
    UNLOAD = "unload"


@dataclass(frozen=True)
class LifecycleStatistics:
    """An app's lifecycle now: what `describe` and /metrics show."""

    policy: str
    loaded: bool
    inflight: int
    load_at: float | None
    unload_at: float | None
    last_windows: Windows | None
    """The windows given at the last end of an execution (None before the first)."""
    decisions: dict[str, int] = field(default_factory=dict)
    """How many times each rule (a Reason's value) decided."""
    policy_statistics: AppStatistics | None = None


class AppLifecycle:
    """The pure lifecycle of one app (see the module's docstring)."""

    def __init__(self, policy_name: str, policy: AppPolicy, *, loaded: bool = True) -> None:
        self.policy_name = policy_name
        self.policy = policy
        self.loaded = loaded
        self.inflight = 0
        self.last_end: float | None = None
        self.load_at: float | None = None
        self.unload_at: float | None = None
        self.last_windows: Windows | None = None
        self.decisions: Counter[Reason] = Counter()
        self.observations = 0
        """Idle times given to the policy: the driver persists the state when this grows."""

    # --- events --------------------------------------------------------------------------------

    def arrival(self, now: float) -> list[Action]:
        if self.inflight == 0:
            if self.last_end is not None:
                self.policy.observe(self.last_end, now)
                self.observations += 1
            self.load_at = self.unload_at = None
        self.inflight += 1
        if not self.loaded:
            self.loaded = True
            return [Action.LOAD]
        return []

    def end(self, now: float) -> list[Action]:
        if self.inflight <= 0:
            raise RuntimeError("an execution ended that never arrived")
        self.inflight -= 1
        if self.inflight > 0:
            return []
        self.last_end = now
        windows = self.policy.windows(now)
        self.last_windows = windows
        self.decisions[windows.reason] += 1
        actions: list[Action] = []
        self.unload_at = windows.unload_at if math.isfinite(windows.unload_at) else None
        self.load_at = None
        if windows.unload_now:
            if self.loaded:
                self.loaded = False
                actions.append(Action.UNLOAD)
            if windows.load_at < windows.unload_at:
                self.load_at = windows.load_at
        return actions + self.due(now)

    def due(self, now: float) -> list[Action]:
        """Carry out the timers that have come by `now`."""
        if self.inflight > 0:
            return []  # timers are only set while idle; an arrival cancels them
        if self.unload_at is not None and now >= self.unload_at:
            self.unload_at = self.load_at = None
            if self.loaded:
                self.loaded = False
                return [Action.UNLOAD]
            return []
        if self.load_at is not None and now >= self.load_at:
            self.load_at = None
            if not self.loaded:
                self.loaded = True
                return [Action.PREWARM]
        return []

    def deployed(self, now: float) -> list[Action]:
        """The app was deployed or restored (loaded): keep it as if an execution had just
        ended, so that an app never called is unloaded after its keep-alive rather than kept
        forever. Not an idle time, and not counted as a decision."""
        if self.inflight or not self.loaded or self.last_end is not None:
            return []
        keepalive = self.policy.windows(now).keepalive
        self.unload_at = now + keepalive if math.isfinite(keepalive) else None
        return self.due(now)

    def unloaded_by_user(self) -> None:
        """The user scaled the app to zero: it is unloaded until the next arrival."""
        self.loaded = False
        self.load_at = self.unload_at = None

    # --- reading -------------------------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        """When `due` has something to do next (None: nothing pending)."""
        pending = [t for t in (self.load_at, self.unload_at) if t is not None]
        return min(pending) if pending else None

    def statistics(self) -> LifecycleStatistics:
        return LifecycleStatistics(
            policy=self.policy_name,
            loaded=self.loaded,
            inflight=self.inflight,
            load_at=self.load_at,
            unload_at=self.unload_at,
            last_windows=self.last_windows,
            decisions={reason.value: n for reason, n in self.decisions.items()},
            policy_statistics=self.policy.statistics(),
        )


def _seconds(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no infinity: null is "never"


def describe_json(stats: LifecycleStatistics, app: str, now: float) -> dict[str, object]:
    """An app's lifecycle as /system/function/{name} shows it (key "keepAlive"): the policy,
    the windows it gives now and the rule that chose them, the pending timers (seconds from
    `now`), the decisions so far and what the histogram learnt."""
    out: dict[str, object] = {
        "app": app,
        "policy": stats.policy,
        "loaded": stats.loaded,
        "loadInSeconds": None if stats.load_at is None else max(0.0, stats.load_at - now),
        "unloadInSeconds": None if stats.unload_at is None else max(0.0, stats.unload_at - now),
        "decisions": dict(stats.decisions),
    }
    policy = stats.policy_statistics
    if policy is not None:
        out["reason"] = policy.reason.value
        out["prewarmSeconds"] = _seconds(policy.prewarm)
        out["keepaliveSeconds"] = _seconds(policy.keepalive)
        if policy.histogram is not None:
            histogram = policy.histogram
            out["histogram"] = {
                "samples": histogram.samples,
                "outOfBounds": histogram.oob,
                "binWidthSeconds": histogram.bin_width,
                "rangeSeconds": histogram.bins * histogram.bin_width,
                "cv": round(histogram.cv, 3),
            }
    return out
