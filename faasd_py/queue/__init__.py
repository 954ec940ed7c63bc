"""Async invocations (/async-function/): a durable queue of calls per function, with two
backends behind one contract (`CallQueue`): Redis Streams (`up --queue redis://...`, shared by
any number of gateways and consumers) and an embedded SQLite queue in the data dir (`up`'s
default, no service needed). Consumers take calls, invoke the function through the worker's
pools, POST the result to the call's callback URL, and retry or dead-letter failed calls."""

from __future__ import annotations

from pathlib import Path

from faasd_py.queue._base import (
    ANNOTATION_ATTEMPTS,
    ANNOTATION_CODES,
    ANNOTATION_CONCURRENCY,
    ANNOTATION_MAX_DEPTH,
    ANNOTATION_MAX_WAIT,
    ANNOTATION_MIN_WAIT,
    DEFAULT_RETRY_CODES,
    BadAnnotation,
    CallQueue,
    DeadLetter,
    Delivery,
    QueuedCall,
    QueueFull,
    QueueLimits,
    QueuePolicy,
    QueueStatistics,
    QueueUnavailable,
    RetryPolicy,
    queue_policy,
    statistics_json,
)

DEFAULT_LEASE = 60.0  # seconds a taken call stays with its consumer without an `extend`
DEFAULT_QUEUE_TIMEOUT = 5.0  # seconds one call to the backend may take


def open_queue(
    url: str | None,
    data_dir: Path,
    *,
    lease: float = DEFAULT_LEASE,
    timeout: float = DEFAULT_QUEUE_TIMEOUT,
) -> CallQueue:
    """The queue `url` names: redis://, rediss:// or unix:// (Redis Streams), or None / "" for
    the embedded one (data_dir/queue.sqlite3). ValueError naming what is wrong with `url`."""
    if not url:
        from faasd_py.queue._sqlite import SqliteCallQueue

        return SqliteCallQueue(data_dir / "queue.sqlite3", lease=lease, timeout=timeout)
    if url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        from faasd_py.queue._redis import RedisCallQueue

        return RedisCallQueue(url, lease=lease, timeout=timeout)
    raise ValueError(f"expected redis://host:port[/db], rediss://... or unix://..., got {url!r}")


# The consumer side, imported last: it uses DEFAULT_LEASE and open_queue above.
from faasd_py.queue._callback import CallbackSender, CallbackStatistics  # noqa: E402
from faasd_py.queue._consumer import Consumer, ConsumerStatistics  # noqa: E402
from faasd_py.queue._invoker import (  # noqa: E402
    CallResult,
    GatewayInvoker,
    Invoker,
    WorkerInvoker,
    error_result,
)
from faasd_py.queue._standalone import serve_queue_worker  # noqa: E402

__all__ = [
    "ANNOTATION_ATTEMPTS",
    "ANNOTATION_CODES",
    "ANNOTATION_CONCURRENCY",
    "ANNOTATION_MAX_DEPTH",
    "ANNOTATION_MAX_WAIT",
    "ANNOTATION_MIN_WAIT",
    "DEFAULT_LEASE",
    "DEFAULT_QUEUE_TIMEOUT",
    "DEFAULT_RETRY_CODES",
    "BadAnnotation",
    "CallQueue",
    "CallResult",
    "CallbackSender",
    "CallbackStatistics",
    "Consumer",
    "ConsumerStatistics",
    "DeadLetter",
    "Delivery",
    "GatewayInvoker",
    "Invoker",
    "QueueFull",
    "QueueLimits",
    "QueuePolicy",
    "QueueStatistics",
    "QueueUnavailable",
    "QueuedCall",
    "RetryPolicy",
    "WorkerInvoker",
    "error_result",
    "open_queue",
    "queue_policy",
    "serve_queue_worker",
    "statistics_json",
]
