"""Backing stores of `context.storage`: Redis, and an embedded SQLite store for `up` alone."""

from __future__ import annotations

from faasd_py.storage._base import (
    ANNOTATION_MAX_BYTES,
    ANNOTATION_MAX_KEYS,
    DEFAULT_STORE_TIMEOUT,
    MAX_KEY,
    BadQuotaAnnotation,
    ObjectStore,
    Quota,
    Usage,
    Versioned,
    check_key,
    open_store,
    quota_of,
)
from faasd_py.storage._latency import (
    LatencyModel,
    LatencyStore,
    format_bandwidth,
    parse_bandwidth,
)

__all__ = [
    "ANNOTATION_MAX_BYTES",
    "ANNOTATION_MAX_KEYS",
    "DEFAULT_STORE_TIMEOUT",
    "MAX_KEY",
    "BadQuotaAnnotation",
    "LatencyModel",
    "LatencyStore",
    "ObjectStore",
    "Quota",
    "Usage",
    "Versioned",
    "check_key",
    "format_bandwidth",
    "open_store",
    "parse_bandwidth",
    "quota_of",
]
