"""What every queue of async invocations is: the calls it carries, the contract of its backends
(`CallQueue`), and the retry policy that decides what happens after a failed attempt.

Delivery is at least once and unordered. A call is *taken* by a consumer and stays the queue's
until it is *acked* (done: the invocation ended and its callback was delivered or given up),
*retried* (back in the queue, due after a wait, with its attempt count up by one) or
*dead-lettered* (kept aside until replayed). A taken call whose consumer dies goes back to the
queue once its lease runs out (or at once, for the embedded queue, when `up` starts again), and
is delivered again with the same call id.

Nothing here does I/O: the backends (_sqlite.py, _redis.py) and the consumer (_consumer.py) do.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from faasd_py.errors import FaasdError, Overloaded, Unavailable
from faasd_py.protocol import Request
from faasd_py.units import parse_duration

# --- the calls ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedCall:
    """One async invocation as the gateway accepted it: everything /function/ would have sent,
    where to POST the result, and when it was accepted (wall-clock seconds)."""

    function: str  # the function's ref: NAME, or NAME.NAMESPACE outside the default namespace
    request: Request  # request.call_id is the call's id on every delivery
    callback_url: str | None
    enqueued_at: float

    @property
    def call_id(self) -> str:
        return self.request.call_id

    def encode(self) -> bytes:
        r = self.request
        packed: bytes = msgpack.packb(
            [
                1,  # the encoding's version
                self.function,
                r.call_id,
                r.method,
                r.path,
                r.query,
                [list(pair) for pair in r.headers],
                r.body,
                self.callback_url,
                self.enqueued_at,
            ],
            use_bin_type=True,
        )
        return packed

    @classmethod
    def decode(cls, data: bytes) -> QueuedCall:
        """ValueError for bytes that are not a call this version wrote."""
        try:
            fields = msgpack.unpackb(data, raw=False)
            version, function, call_id, method, path, query, headers, body, callback, at = fields
            if version != 1:
                raise ValueError(f"encoding version {version!r}")
            request = Request(
                call_id, method, path, query, [(str(k), str(v)) for k, v in headers], bytes(body)
            )
            return cls(str(function), request, callback, float(at))
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ValueError(f"not a queued call: {exc}") from None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A call handed to a consumer. `id` is the backend's handle for ack/retry/dead_letter;
    `attempt` counts deliveries of this call that reached the function, this one included (1 at
    first; a delivery after a consumer died repeats its attempt number)."""

    id: str
    call: QueuedCall
    attempt: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A call that used up its attempts, with why its last one failed."""

    id: str
    call: QueuedCall
    attempts: int
    reason: str  # e.g. "status 503 after 3 attempts", "function removed"
    failed_at: float  # wall-clock seconds


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """One function's queue."""

    function: str
    depth: int  # waiting to be taken, including retries not yet due
    in_flight: int  # taken, not yet acked, retried or dead-lettered
    oldest_age: float  # seconds the oldest waiting call has waited (0.0 when none waits)
    retries: int  # retries scheduled so far (a counter)
    dead_letters: int  # held now


# --- errors ------------------------------------------------------------------------------------


class QueueFull(Overloaded):
    """The function's queue holds its maximum; the caller should retry later (429)."""

    def __init__(self, function: str, limit: int) -> None:
        super().__init__(
            f"the async queue of function {function} holds its limit of {limit} calls "
            "(up --queue-max-depth, or the function's com.faasd-py.queue.max_depth annotation); "
            "retry later"
        )
        self.limit = limit


class QueueUnavailable(Unavailable):
    """The queue's backend cannot be reached or failed: nothing was stored (503)."""

    def __init__(self, queue: str, cause: str) -> None:
        super().__init__(f"async queue unavailable ({queue}): {cause}; retry when it is back")
        self.queue = queue
        self.cause = cause


# --- the contract of a backend -----------------------------------------------------------------


class CallQueue(Protocol):
    """A durable queue of async calls, one queue per function within it.

    Every method raises QueueUnavailable (and nothing else from its backend) when the backend
    cannot be reached or fails. An `enqueue` that returned has stored the call durably: it
    survives a SIGKILL of every faasd-py process (Redis: as durable as its AOF setting)."""

    @property
    def name(self) -> str:
        """How errors and reports name the queue (no password)."""
        ...

    async def enqueue(self, call: QueuedCall, max_depth: int) -> None:
        """Store `call` in its function's queue; QueueFull if that queue already holds
        `max_depth` calls (waiting, retrying or in flight)."""
        ...

    async def take(self, consumer: str, function: str, count: int) -> list[Delivery]:
        """Up to `count` calls of `function` that are due, now leased to `consumer` (a name
        unique to one consumer process) for `lease` seconds (see `open`); [] when none is due.
        Calls whose lease ran out (their consumer died) are due again. Never blocks waiting for
        calls: the consumer polls, or waits on `wait_for_calls`."""
        ...

    async def wait_for_calls(self, at_most: float) -> None:
        """Return when a call may have been enqueued or become due since the last call, or
        after `at_most` seconds, whichever comes first (a hint: it may return early)."""
        ...

    async def extend(self, delivery: Delivery) -> None:
        """Renew the lease of a call still being worked on (long invocations)."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The call is done: remove it. Acking a call that is no longer leased to this consumer
        (its lease ran out and another took it) is not an error."""
        ...

    async def retry(self, delivery: Delivery, wait: float) -> None:
        """Put the call back, due in `wait` seconds, with its attempt count one higher; counts a
        retry. Atomic: the call is never both in flight and waiting, nor lost between."""
        ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the call to its function's dead letters (atomic, as `retry`)."""
        ...

    async def dead_letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first, of one function or of all."""
        ...

    async def replay(self, function: str | None = None, ids: Sequence[str] = ()) -> int:
        """Put dead letters back in their queues as new calls (attempt 1, same call id): those
        named by `ids`, else all of `function`, else all. Returns how many."""
        ...

    async def statistics(self) -> dict[str, QueueStatistics]:
        """Every function that has calls waiting, in flight or dead, or has had retries."""
        ...

    async def purge(self, function: str) -> int:
        """Drop every call and dead letter of `function` (it was removed); returns how many."""
        ...

    async def close(self) -> None: ...


# --- retries -----------------------------------------------------------------------------------

# OpenFaaS Pro's annotations for retries of async invocations, and faasd-py's for the queue.
ANNOTATION_ATTEMPTS = "com.openfaas.retry.attempts"
ANNOTATION_CODES = "com.openfaas.retry.codes"
ANNOTATION_MIN_WAIT = "com.openfaas.retry.min_wait"
ANNOTATION_MAX_WAIT = "com.openfaas.retry.max_wait"
ANNOTATION_MAX_DEPTH = "com.faasd-py.queue.max_depth"
ANNOTATION_CONCURRENCY = "com.faasd-py.queue.concurrency"

DEFAULT_RETRY_CODES = frozenset({429, 502, 503, 504})

DEFAULT_LEASE = 60.0  # seconds a taken call stays with its consumer without an `extend`
DEFAULT_QUEUE_TIMEOUT = 5.0  # seconds one call to the backend may take


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt is tried again, and after how long: exponential backoff from
    `min_wait`, doubling per attempt, capped at `max_wait`, with jitter in the upper half of
    each step, never below `min_wait` (so that calls failing together do not retry together).
    `attempts` counts every attempt, the first included: 1 means never retried."""

    attempts: int = 10
    codes: frozenset[int] = DEFAULT_RETRY_CODES
    min_wait: float = 10.0
    max_wait: float = 120.0

    def retries(self, status: int, attempt: int) -> bool:
        """Whether attempt number `attempt`, answered `status`, is tried again."""
        return status in self.codes and attempt < self.attempts

    def wait(self, attempt: int, rng: random.Random) -> float:
        """Seconds before the attempt after `attempt` (1-based)."""
        ceiling = min(self.max_wait, self.min_wait * 2 ** min(attempt - 1, 30))
        return rng.uniform(max(ceiling / 2, self.min_wait), ceiling)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A function's limits on its async queue: calls it may hold (429 beyond) and calls of it
    the consumers run at once (so that a backlog cannot take every instance from synchronous
    callers)."""

    max_depth: int = 10_000
    concurrency: int = 4


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: QueueLimits = field(default_factory=QueueLimits)


def queue_policy(annotations: Mapping[str, str], default: QueuePolicy) -> QueuePolicy:
    """The function's annotations over `default`; BadAnnotation (400) naming the first that
    does not parse."""
    retry, limits = default.retry, default.limits
    attempts = _int(annotations, ANNOTATION_ATTEMPTS, retry.attempts, 1)
    codes = retry.codes
    if (text := annotations.get(ANNOTATION_CODES)) is not None:
        try:
            codes = frozenset(int(c) for c in text.replace(",", " ").split())
        except ValueError:
            raise BadAnnotation(
                ANNOTATION_CODES, "HTTP status codes, e.g. 429,502,503", text
            ) from None
        if any(not 100 <= c <= 599 for c in codes):
            raise BadAnnotation(ANNOTATION_CODES, "HTTP status codes (100-599)", text)
    min_wait = _duration(annotations, ANNOTATION_MIN_WAIT, retry.min_wait)
    max_wait = _duration(annotations, ANNOTATION_MAX_WAIT, retry.max_wait)
    if max_wait < min_wait:
        raise BadAnnotation(
            ANNOTATION_MAX_WAIT, f"a duration of at least min_wait ({min_wait:g}s)", str(max_wait)
        )
    return QueuePolicy(
        RetryPolicy(attempts, codes, min_wait, max_wait),
        QueueLimits(
            _int(annotations, ANNOTATION_MAX_DEPTH, limits.max_depth, 1),
            _int(annotations, ANNOTATION_CONCURRENCY, limits.concurrency, 1),
        ),
    )


class BadAnnotation(FaasdError):
    status = 400

    def __init__(self, annotation: str, expected: str, got: str) -> None:
        super().__init__(f"annotations.{annotation}: expected {expected}, got {got!r}")
        self.annotation = annotation


def _int(annotations: Mapping[str, str], name: str, default: int, least: int) -> int:
    text = annotations.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadAnnotation(name, f"a whole number of at least {least}", text) from None
    if value < least:
        raise BadAnnotation(name, f"a whole number of at least {least}", text)
    return value


def _duration(annotations: Mapping[str, str], name: str, default: float) -> float:
    text = annotations.get(name)
    if text is None:
        return default
    try:
        value = parse_duration(text)
    except ValueError:
        raise BadAnnotation(name, "a duration such as 500ms, 10s or 2m", text) from None
    if not 0 <= value < float("inf"):
        raise BadAnnotation(name, "a duration such as 500ms, 10s or 2m", text)
    return value


def statistics_json(stats: QueueStatistics) -> dict[str, Any]:
    """One function's queue as /system/queue answers it."""
    return {
        "function": stats.function,
        "depth": stats.depth,
        "inFlight": stats.in_flight,
        "oldestAgeSeconds": round(stats.oldest_age, 3),
        "retries": stats.retries,
        "deadLetters": stats.dead_letters,
    }
