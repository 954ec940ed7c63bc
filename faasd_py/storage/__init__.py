"""Backing stores of `context.storage`: Redis, and an embedded SQLite store for `up` alone."""

from __future__ import annotations

from faasd_py.storage._base import (
    MAX_KEY,
    LatencyStore,
    ObjectStore,
    Versioned,
    check_key,
    open_store,
)

__all__ = ["MAX_KEY", "LatencyStore", "ObjectStore", "Versioned", "check_key", "open_store"]
