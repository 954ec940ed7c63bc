"""Backing stores of `context.storage`: Redis, and an embedded SQLite store for `up` alone."""

from __future__ import annotations

from faasd_py.storage._base import (
    MAX_KEY,
    ObjectStore,
    Versioned,
    check_key,
    open_store,
)
from faasd_py.storage._latency import (
    LatencyModel,
    LatencyStore,
    format_bandwidth,
    parse_bandwidth,
)

__all__ = [
    "MAX_KEY",
    "LatencyModel",
    "LatencyStore",
    "ObjectStore",
    "Versioned",
    "check_key",
    "format_bandwidth",
    "open_store",
    "parse_bandwidth",
]
