"""Keep-alive and pre-warm policies (pure), and the trace simulator that compares them.

The policies (:class:`HybridPolicy`, :class:`FixedKeepAlive`, :class:`NoUnload`, or
:func:`parse_policy` from a name) make per-app states that a driver feeds and asks:

    app = policy.new_app()                # or policy.restore_app(saved_state)
    app.observe(end, arrival)             # an idle time: end of an execution -> next arrival
    prewarm, keepalive, reason, since = app.windows(now)   # when an execution ends at `now`
    saved_state = app.to_state()          # JSON-ready, for the registry

They use no clock, no I/O and no asyncio. The simulator (:func:`simulate`, :func:`group_apps`)
needs numpy, which is an optional extra (``pip install 'faasd-py[sim]'``): it is imported only
when one of its names is first used, so the worker can import this package without numpy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from faasd_py.scheduler._forecast import forecast_next
from faasd_py.scheduler._histogram import HistogramStatistics, IdleHistogram
from faasd_py.scheduler._policy import (
    POLICY_FORMS,
    AppPolicy,
    AppStatistics,
    FixedKeepAlive,
    HybridApp,
    HybridConfig,
    HybridPolicy,
    NoUnload,
    Policy,
    Reason,
    Windows,
    parse_policy,
)

if TYPE_CHECKING:
    from faasd_py.scheduler._simulate import (
        REFERENCE,
        PolicyResult,
        TraceApps,
        group_apps,
        simulate,
        simulate_policy,
        summary,
    )

__all__ = [
    "POLICY_FORMS",
    "REFERENCE",
    "AppPolicy",
    "AppStatistics",
    "FixedKeepAlive",
    "HistogramStatistics",
    "HybridApp",
    "HybridConfig",
    "HybridPolicy",
    "IdleHistogram",
    "NoUnload",
    "Policy",
    "PolicyResult",
    "Reason",
    "TraceApps",
    "Windows",
    "forecast_next",
    "group_apps",
    "parse_policy",
    "simulate",
    "simulate_policy",
    "summary",
]

_SIMULATOR = {"REFERENCE", "PolicyResult", "TraceApps", "group_apps", "simulate"}
_SIMULATOR |= {"simulate_policy", "summary"}


def __getattr__(name: str) -> Any:
    # The simulator's names load numpy: only when asked for (PEP 562).
    if name in _SIMULATOR:
        return getattr(importlib.import_module("faasd_py.scheduler._simulate"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
