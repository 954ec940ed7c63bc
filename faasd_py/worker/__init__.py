"""The worker: sandboxes, instance pools and their lifecycle on one host."""

from __future__ import annotations

from faasd_py.worker._logs import LogBuffer, LogEntry
from faasd_py.worker._pool import Outcome, PoolStatistics
from faasd_py.worker._worker import Worker

__all__ = ["LogBuffer", "LogEntry", "Outcome", "PoolStatistics", "Worker"]
