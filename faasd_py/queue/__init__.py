"""Async invocations (/async-function/): a durable queue of calls per function, with two
backends behind one contract (`CallQueue`): Redis Streams (`up --queue redis://...`, shared by
any number of gateways and consumers) and an embedded SQLite queue in the data dir (`up`'s
default, no service needed). Consumers take calls, invoke the function through the worker's
pools, POST the result to the call's callback URL, and retry or dead-letter failed calls."""

from __future__ import annotations

from faasd_py.queue._base import (
    ANNOTATION_ATTEMPTS,
    ANNOTATION_CODES,
    ANNOTATION_CONCURRENCY,
    ANNOTATION_MAX_DEPTH,
    ANNOTATION_MAX_WAIT,
    ANNOTATION_MIN_WAIT,
    DEFAULT_LEASE,
    DEFAULT_QUEUE_TIMEOUT,
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
from faasd_py.queue._callback import CallbackSender, CallbackStatistics
from faasd_py.queue._consumer import MAX_HELD, Consumer, ConsumerStatistics
from faasd_py.queue._invoker import (
    CallResult,
    GatewayInvoker,
    Invoker,
    WorkerInvoker,
    error_result,
)
from faasd_py.queue._open import open_queue
from faasd_py.queue._standalone import serve_queue_worker

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
    "MAX_HELD",
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
