"""The web dashboard at /ui/: its routes, the sampler that keeps recent series of the gateway's
own counters, and the built page (static/, from the sources in the repository's ui/)."""

from __future__ import annotations

from faasd_py.ui._routes import add_dashboard
from faasd_py.ui._sampler import Sampler
from faasd_py.ui._series import AppReading, FunctionReading, SeriesStore, Tick, quantile

__all__ = [
    "AppReading",
    "FunctionReading",
    "Sampler",
    "SeriesStore",
    "Tick",
    "add_dashboard",
    "quantile",
]
