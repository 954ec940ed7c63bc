"""Typed keys for the state that the gateway's handlers share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from faasd_py.config import Config
from faasd_py.gateway._backend import FunctionWorker
from faasd_py.gateway._metrics import GatewayMetrics
from faasd_py.queue import CallQueue, QueuePolicy
from faasd_py.store import Registry


def _nothing_running() -> Mapping[str, int]:
    return {}


@dataclass(frozen=True)
class AsyncCalls:
    """What /async-function/ and /system/queue need: the queue, a deployed function's queue
    policy by ref (None: not deployed here), and how many calls of each function this
    process's consumer runs now (none without a consumer)."""

    queue: CallQueue
    policy: Callable[[str], QueuePolicy | None]
    running: Callable[[], Mapping[str, int]] = field(default=_nothing_running)


CONFIG = web.AppKey("config", Config)
REGISTRY = web.AppKey("registry", Registry)
WORKER = web.AppKey("worker", FunctionWorker)
METRICS = web.AppKey("metrics", GatewayMetrics)
ASYNC_CALLS = web.AppKey("async_calls", AsyncCalls)
# A cluster gateway's view of its workers and placements (/system/cluster); absent with `up`.
CLUSTER_INFO: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("cluster_info")
