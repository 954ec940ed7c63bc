"""Keep-alive / pre-warm policies: the hybrid histogram policy and its baselines, one interface.

A :class:`Policy` makes one :class:`AppPolicy` per app. The app's driver (the worker, or the trace
simulator) tells it each idle time it saw, ``observe(end, arrival)``, and asks, when an execution
ends at ``now``, ``windows(now)``: how long to wait before loading the app again (pre-warm) and
until when to keep it (keep-alive), both counted from ``now``, and which rule decided.

- pre-warm > 0: unload at once, load again at ``now + prewarm``, keep until ``now + keepalive``;
- pre-warm = 0: keep loaded from ``now`` until ``now + keepalive``.

The hybrid rules (DESIGN.md, after Shahrad et al., ATC'20), checked in this order:

1. fewer than ``min_samples`` idle times seen (:data:`MIN_SAMPLES`, 5, where that comes from is
   told there): *fallback*, pre-warm 0, keep-alive = the range;
2. the share of OOB idle times at or above ``oob_threshold``: *forecast* the next idle time F
   from the OOB series; pre-warm 0.85 F, loaded for 0.30 F after that (the paper's keep-alive
   window is a length that starts at the pre-warm load; here windows count from the end of the
   execution, so keep-alive = 0.85 F + 0.30 F = 1.15 F);
3. the coefficient of variation of the bin counts below ``cv_threshold`` (the histogram is not
   representative): *fallback*;
4. otherwise *histogram*: the head (5th percentile) rounded down to its bin's lower edge, x 0.9,
   is the pre-warm; the tail (99th) rounded up to its bin's upper edge, x 1.1, the keep-alive.

No I/O, no clock: time comes in as arguments, decisions go out as values.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from faasd_py.scheduler._forecast import forecast_next
from faasd_py.scheduler._histogram import HistogramStatistics, IdleHistogram
from faasd_py.units import parse_duration


class Reason(enum.StrEnum):
    """The rule that chose a pair of windows."""

    HISTOGRAM = "histogram"
    FALLBACK = "fallback"
    FORECAST = "forecast"
    FIXED = "fixed"
    NO_UNLOAD = "no-unload"


class Windows(NamedTuple):
    """Pre-warm and keep-alive (seconds, counted from ``since``) and the rule that chose them."""

    prewarm: float
    keepalive: float
    reason: Reason
    since: float
    """The end of the execution the windows count from (the ``now`` they were asked at)."""

    @property
    def unload_now(self) -> bool:
        """Whether the app is unloaded at once, to be loaded again at :attr:`load_at`."""
        return self.prewarm > 0

    @property
    def load_at(self) -> float:
        return self.since + self.prewarm

    @property
    def unload_at(self) -> float:
        return self.since + self.keepalive

    def warm_at(self, arrival: float) -> bool:
        """Whether an arrival at ``arrival`` finds the app loaded (bounds included)."""
        return self.load_at <= arrival <= self.unload_at


@dataclass(frozen=True)
class AppStatistics:
    """One app's policy now: the windows it would give and why (what `describe` shows)."""

    reason: Reason
    prewarm: float
    keepalive: float
    histogram: HistogramStatistics | None = None
    """What the hybrid policy learnt; None for policies that learn nothing."""


@runtime_checkable
class AppPolicy(Protocol):
    """One app's policy state."""

    @property
    def learns(self) -> bool:
        """Whether observations can change the windows (a simulator may skip replaying them)."""
        ...

    def observe(self, end: float, arrival: float) -> None:
        """The app's execution ended at ``end`` and the next request arrived at ``arrival``."""
        ...

    def windows(self, now: float) -> Windows:
        """The windows for an execution that ended at ``now``."""
        ...

    def to_state(self) -> dict[str, Any]:
        """What the registry persists for this app (JSON-ready)."""
        ...

    def statistics(self) -> AppStatistics: ...


@runtime_checkable
class Policy(Protocol):
    """A keep-alive policy: a name for reports and a factory of per-app states."""

    @property
    def name(self) -> str: ...

    def new_app(self) -> AppPolicy: ...

    def restore_app(self, state: Mapping[str, Any]) -> AppPolicy: ...


# --- the baselines ------------------------------------------------------------------------------


def _minutes_label(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


class _ConstantApp:
    """Windows that never change: observations are accepted and ignored."""

    __slots__ = ("_keepalive", "_reason")
    learns = False

    def __init__(self, keepalive: float, reason: Reason) -> None:
        self._keepalive = keepalive
        self._reason = reason

    def observe(self, end: float, arrival: float) -> None:
        return None

    def windows(self, now: float) -> Windows:
        return Windows(0.0, self._keepalive, self._reason, now)

    def to_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> AppStatistics:
        return AppStatistics(self._reason, 0.0, self._keepalive)


@dataclass(frozen=True)
class FixedKeepAlive:
    """Keep an app loaded for ``keepalive`` seconds after each execution; never pre-warm."""

    keepalive: float = 600.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.keepalive) and self.keepalive >= 0):
            raise ValueError(f"keep-alive must be a finite number >= 0, got {self.keepalive!r}")

    @property
    def name(self) -> str:
        return f"fixed:{_minutes_label(self.keepalive)}"

    def new_app(self) -> AppPolicy:
        return _ConstantApp(self.keepalive, Reason.FIXED)

    def restore_app(self, state: Mapping[str, Any]) -> AppPolicy:
        return self.new_app()


@dataclass(frozen=True)
class NoUnload:
    """Once loaded, an app stays loaded."""

    @property
    def name(self) -> str:
        return "no-unload"

    def new_app(self) -> AppPolicy:
        return _ConstantApp(math.inf, Reason.NO_UNLOAD)

    def restore_app(self, state: Mapping[str, Any]) -> AppPolicy:
        return self.new_app()


# --- the hybrid histogram policy ----------------------------------------------------------------

MIN_SAMPLES = 5
"""The fewest idle times (in range and OOB together) before an app's histogram is trusted.

Not the paper's number: Shahrad et al. fall back to a fixed keep-alive while an app's histogram
"is not representative", judged by the CV of its bin counts, and give no count that we found;
DESIGN.md says "too few samples" without one either. The CV test alone would trust a single
idle time (one bin in use out of 240 has CV sqrt(239) = 15.5, far above 2) and set both windows
around it.
With nearest-rank percentiles the 5th is the smallest time until 20 are seen and the 99th the
largest until 100, so any small count makes the windows span what was seen; 5 is our choice of
where "a pattern" starts: a timer has repeated four times past its first gap, and an app seen
fewer times keeps the whole range (the paper's fallback). ``faasd-py simulate --min-samples``
changes it; the simulator's reports count the decisions that fell back.
"""


@dataclass(frozen=True)
class HybridConfig:
    """Every parameter of the hybrid policy; the defaults are DESIGN.md's."""

    range: float = 4 * 3600.0
    """Seconds; longer idle times are out of bounds."""
    bin_width: float = 60.0
    head_percentile: float = 5.0
    tail_percentile: float = 99.0
    margin: float = 0.10
    cv_threshold: float = 2.0
    oob_threshold: float = 0.5
    """An OOB share at or above this goes to the forecast."""
    min_samples: int = MIN_SAMPLES
    """Fewer idle times than this (in range and OOB together) fall back: see :data:`MIN_SAMPLES`."""
    forecast_prewarm: float = 0.85
    forecast_window: float = 0.30
    """The share of the forecast the app stays loaded after its pre-warm load."""
    oob_history: int = 32
    """How many recent OOB idle times the forecast reads (and the registry keeps)."""

    def __post_init__(self) -> None:
        for name in ("range", "bin_width"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number above 0, got {value!r}")
        if self.range / self.bin_width < 1 or not _whole(self.range / self.bin_width):
            raise ValueError(
                f"the range ({self.range:g} s) must be a whole number of bins "
                f"({self.bin_width:g} s each)"
            )
        if not 0 <= self.head_percentile <= self.tail_percentile <= 100:
            raise ValueError(
                "percentiles must satisfy 0 <= head <= tail <= 100, got "
                f"{self.head_percentile!r} and {self.tail_percentile!r}"
            )
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be within [0, 1), got {self.margin!r}")
        if not self.cv_threshold >= 0:
            raise ValueError(f"cv_threshold must be >= 0, got {self.cv_threshold!r}")
        if not 0 < self.oob_threshold <= 1:
            raise ValueError(f"oob_threshold must be within (0, 1], got {self.oob_threshold!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {self.min_samples}")
        if not (self.forecast_prewarm >= 0 and self.forecast_window >= 0):
            raise ValueError("the forecast's shares must be >= 0")
        if self.oob_history < 1:
            raise ValueError(f"oob_history must be at least 1, got {self.oob_history}")

    @property
    def bins(self) -> int:
        return round(self.range / self.bin_width)


def _whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-9


class HybridApp:
    """One app's histogram and the hybrid rules over it."""

    __slots__ = ("_cached", "config", "histogram")
    learns = True

    def __init__(self, config: HybridConfig, histogram: IdleHistogram | None = None) -> None:
        self.config = config
        if histogram is None:
            histogram = IdleHistogram(config.bins, config.bin_width, config.oob_history)
        elif (histogram.bins, histogram.bin_width) != (config.bins, config.bin_width):
            raise ValueError("the histogram's bins do not match the policy's range and bin width")
        self.histogram = histogram
        # (prewarm, keepalive, reason) until the next observation: the rules read only the
        # histogram, so a driver asking twice in a row pays once.
        self._cached: tuple[float, float, Reason] | None = None

    def observe(self, end: float, arrival: float) -> None:
        # An arrival before the end came while the app was busy: that is not an idle time.
        if arrival >= end:
            self.histogram.observe(arrival - end)
            self._cached = None

    def windows(self, now: float) -> Windows:
        if self._cached is None:
            self._cached = self._decide()
        prewarm, keepalive, reason = self._cached
        return Windows(prewarm, keepalive, reason, now)

    def observe_many(self, idle: float, count: int) -> None:
        """``count`` idle times of ``idle`` seconds each, as ``count`` calls of :meth:`observe`."""
        self.histogram.observe(idle, count)
        self._cached = None

    def settled(self, idle: float) -> bool:
        """Whether every further idle time of ``idle`` seconds, observed one by one, would find
        the app loaded with the pre-warm window at 0, so a driver may observe a run of them at
        once (:meth:`observe_many`) and count each as warm with ``idle`` seconds of waste.

        True when ``idle`` falls in bin 0, enough samples are in, the OOB share is below the
        threshold and the head percentile is in bin 0. Adding bin-0 times keeps all four (the
        OOB share only falls; the head's rank grows by at most one per time added, as does the
        bin's count), so only two rules can follow: the histogram, with pre-warm 0 and
        keep-alive at least 1.1 bins, or the fallback, with keep-alive the range: both above
        ``idle``.
        """
        config, histogram = self.config, self.histogram
        if not 0 <= idle < config.bin_width or not histogram.in_range:
            return False
        samples = histogram.samples
        if samples < config.min_samples or histogram.oob >= config.oob_threshold * samples:
            return False
        return histogram.percentile_bin(config.head_percentile) == 0

    def _decide(self) -> tuple[float, float, Reason]:
        config, histogram = self.config, self.histogram
        samples = histogram.samples
        if samples < config.min_samples:
            return 0.0, config.range, Reason.FALLBACK
        if histogram.oob >= config.oob_threshold * samples:
            forecast = forecast_next(histogram.oob_series)
            prewarm = config.forecast_prewarm * forecast
            return prewarm, prewarm + config.forecast_window * forecast, Reason.FORECAST
        if histogram.cv() < config.cv_threshold:
            return 0.0, config.range, Reason.FALLBACK
        width = config.bin_width
        head = histogram.percentile_bin(config.head_percentile) * width * (1 - config.margin)
        tail = (histogram.percentile_bin(config.tail_percentile) + 1) * width
        return head, tail * (1 + config.margin), Reason.HISTOGRAM

    def statistics(self) -> AppStatistics:
        prewarm, keepalive, reason = self._cached or self._decide()
        return AppStatistics(reason, prewarm, keepalive, self.histogram.statistics())

    def to_state(self) -> dict[str, Any]:
        return {"histogram": self.histogram.to_state()}


@dataclass(frozen=True)
class HybridPolicy:
    """The hybrid histogram policy with its parameters."""

    config: HybridConfig = field(default_factory=HybridConfig)
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or f"hybrid:{_minutes_label(self.config.range)}"

    def new_app(self) -> HybridApp:
        return HybridApp(self.config)

    def restore_app(self, state: Mapping[str, Any]) -> HybridApp:
        """The app :meth:`HybridApp.to_state` saved; a fresh one if the parameters changed since."""
        try:
            histogram = IdleHistogram.from_state(state["histogram"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a hybrid app state: {exc!r}") from None
        if (histogram.bins, histogram.bin_width) != (self.config.bins, self.config.bin_width):
            # Bins of another width cannot be re-binned exactly: learn again.
            return self.new_app()
        return HybridApp(self.config, histogram)


# --- policies by name ---------------------------------------------------------------------------

POLICY_FORMS = "hybrid, hybrid:RANGE (e.g. hybrid:2h), fixed:DURATION (e.g. fixed:10m), no-unload"


def parse_policy(text: str, hybrid: HybridConfig | None = None) -> Policy:
    """A policy from its name, as the CLI and the worker's --policy take it.

    ``hybrid`` uses the given parameters; ``hybrid:2h`` the same with another range (the bins keep
    their width); ``fixed:10m`` a fixed keep-alive of any duration; ``no-unload`` (or ``none``)
    never unloads. ValueError names the accepted forms.
    """
    config = hybrid or HybridConfig()
    kind, sep, argument = text.strip().partition(":")
    kind = kind.lower()
    try:
        if kind == "hybrid":
            if not sep:
                return HybridPolicy(config)
            return HybridPolicy(_with_range(config, parse_duration(argument)))
        if kind == "fixed" and sep:
            return FixedKeepAlive(parse_duration(argument))
        if kind in ("no-unload", "none") and not sep:
            return NoUnload()
    except ValueError as exc:
        raise ValueError(f"bad policy {text!r}: {exc}") from None
    raise ValueError(f"unknown policy {text!r}; expected {POLICY_FORMS}")


def _with_range(config: HybridConfig, seconds: float) -> HybridConfig:
    return replace(config, range=seconds)
