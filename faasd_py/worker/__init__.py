"""The worker: sandboxes, instance pools and their lifecycle on one host (and the keep-alive
policy's per-app lifecycle, a pure core in _lifecycle)."""

from __future__ import annotations

from faasd_py.worker._lifecycle import (
    Action,
    AppLifecycle,
    LifecycleStatistics,
    describe_json,
)
from faasd_py.worker._logs import LogBuffer, LogEntry
from faasd_py.worker._pool import Outcome, PoolStatistics
from faasd_py.worker._worker import Worker

__all__ = [
    "Action",
    "AppLifecycle",
    "LifecycleStatistics",
    "LogBuffer",
    "LogEntry",
    "Outcome",
    "PoolStatistics",
    "Worker",
    "describe_json",
]
