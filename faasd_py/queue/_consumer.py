"""The consumer of a queue of async calls: takes calls of the deployed functions, runs each
(`Invoker`), POSTs its result to its callback URL, and settles it in the queue: retried after a
backoff, dead-lettered, or acked.

What it guarantees:

- At least once, unordered: a call is settled only after its invocation ended and its callback
  was delivered or given up. A call whose consumer stops (or dies) mid-way stays leased and is
  delivered again, with the same call id, once its lease runs out: the function may run twice
  and the callback may be POSTed twice. Calls of one function run in no particular order.
- At most `policy.limits.concurrency` invocations of a function at once in this consumer, so
  that a backlog cannot take every instance from synchronous callers. A call's slot is free again
  when its invocation ends: its callback and its settling in the queue hold no instance. The
  calls a consumer holds in all (invoking or settling) are bounded too (`max_held`): callbacks to
  a receiver that is down, retried for seconds, do not make it take the whole backlog.
- A call is retried only for a status of its policy's codes, and at most `policy.retry.attempts`
  times in all; then it is dead-lettered, with a callback of its last failure. A failed callback
  never runs the function again.
- Only functions that `policies()` names are consumed: the calls of a function not deployed
  (yet) wait in the queue.
- The queue's backend going away never ends the loop: it is logged once per outage and tried
  again with a backoff. A settle that fails leaves the call leased (delivered again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from faasd_py.queue._base import (
    DEFAULT_LEASE,
    CallQueue,
    Delivery,
    QueuePolicy,
    QueueUnavailable,
    RetryPolicy,
)
from faasd_py.queue._callback import CallbackSender, CallbackStatistics
from faasd_py.queue._invoker import CallResult, Invoker

logger = logging.getLogger(__name__)

# How long the loop waits for a hint of new calls before polling again (retries falling due).
_POLL = 0.5
# The backoff while the queue's backend is unavailable: 0.1 s doubling up to 5 s.
_OUTAGE_BACKOFF = RetryPolicy(attempts=1, min_wait=0.1, max_wait=5.0)
# How much of a failed call's body its dead letter's reason keeps.
_REASON_BODY = 200
# The calls one consumer holds at most (invoking, or POSTing their callbacks): each keeps its
# request and result in memory.
MAX_HELD = 1024


@dataclass(frozen=True, slots=True)
class ConsumerStatistics:
    in_flight: Mapping[str, int]  # function ref -> invocations running now (only those with any)
    completed: int  # calls acked: ended for good without a retryable status
    retried: int  # attempts put back in the queue to be tried again
    dead_lettered: int  # calls that used up their attempts
    callbacks: CallbackStatistics


def default_consumer_name() -> str:
    """Unique to one consumer: the host, the process, and a random part (two consumers of one
    process, such as a test's, must not share leases)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Consumer:
    """Consumes `queue` with `invoker` until `stop`. `policies()` is read on every round: the
    deployed functions (ref -> its QueuePolicy, annotations already applied). `lease` must be
    the queue's lease: a call being worked on has its lease renewed every third of it.
    `callbacks` is the caller's to close."""

    def __init__(
        self,
        queue: CallQueue,
        invoker: Invoker,
        policies: Callable[[], Mapping[str, QueuePolicy]],
        callbacks: CallbackSender,
        *,
        name: str | None = None,
        rng: random.Random | None = None,
        lease: float = DEFAULT_LEASE,
        max_held: int = MAX_HELD,
    ) -> None:
        self.name = name or default_consumer_name()
        self._queue = queue
        self._invoker = invoker
        self._policies = policies
        self._callbacks = callbacks
        self._rng = rng or random.Random()
        self._lease = lease
        self._max_held = max_held
        self._in_flight: dict[str, int] = {}  # function ref -> invocations running
        self._deliveries: set[asyncio.Task[None]] = set()
        # The calls taken and not yet settled, by delivery id: the delivery, and when its lease
        # was last renewed (loop time).
        self._held: dict[str, tuple[Delivery, float]] = {}
        self._completed = self._retried = self._dead_lettered = 0
        # Set when a slot frees or stop() is called: the loop looks again at once.
        self._wakeup = asyncio.Event()
        # Functions whose last take found fewer calls than it asked for: nothing of theirs is
        # due, so a freed slot elsewhere does not ask the queue about them again. Cleared when
        # the queue says a call may have come or become due (its wait_for_calls returned).
        self._drained: set[str] = set()
        self._stopping = False
        self._loop: asyncio.Task[None] | None = None
        self._renewals: asyncio.Task[None] | None = None
        self._outage: str | None = None  # why the backend failed, while it does

    def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError(f"consumer {self.name} was started already")
        self._loop = asyncio.create_task(self._run(), name=f"queue consumer {self.name}")
        self._renewals = asyncio.create_task(self._renew(), name=f"leases of {self.name}")

    async def stop(self, drain_timeout: float) -> None:
        """Take no more calls; let those in flight end for up to `drain_timeout` seconds, then
        cancel the rest (they stay leased, and are delivered again after their lease)."""
        self._stopping = True
        self._wakeup.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        if self._loop is not None:
            # The loop ends at its next look, unless a take is under way: bounded by the
            # backend's timeout, and by the drain's.
            await asyncio.wait({self._loop}, timeout=drain_timeout)
            await cancel_and_wait(self._loop)
        if self._deliveries:
            remaining = max(0.0, deadline - loop.time())
            await asyncio.wait(set(self._deliveries), timeout=remaining)
        unfinished = list(self._deliveries)
        if unfinished:
            logger.warning(
                "consumer %s: %d calls still running after %gs are left to be delivered "
                "again after their lease: %s",
                self.name,
                len(unfinished),
                drain_timeout,
                ", ".join(sorted(t.get_name() for t in unfinished)),
            )
        for task in unfinished:
            await cancel_and_wait(task)
        if self._renewals is not None:
            await cancel_and_wait(self._renewals)

    def statistics(self) -> ConsumerStatistics:
        return ConsumerStatistics(
            dict(self._in_flight),
            self._completed,
            self._retried,
            self._dead_lettered,
            self._callbacks.statistics(),
        )

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        hint: asyncio.Task[None] | None = None  # the queue's wait_for_calls, kept across looks
        failures = 0
        try:
            while not self._stopping:
                self._wakeup.clear()
                try:
                    if hint is not None and hint.done():
                        done, hint = hint, None
                        self._drained.clear()  # any function may have calls due now
                        done.result()  # its QueueUnavailable, if any
                    if await self._take_round():
                        self._backend_back()
                        failures = 0
                        continue
                    if hint is None:
                        hint = asyncio.create_task(self._queue.wait_for_calls(_POLL))
                        hint.add_done_callback(lambda _: self._wakeup.set())
                    # Woken by the hint, a freed slot or stop(): one Event, no task per look.
                    await self._wakeup.wait()
                    self._backend_back()
                    failures = 0
                except QueueUnavailable as exc:
                    failures += 1
                    self._backend_down(exc)
                    await self._pause(_OUTAGE_BACKOFF.wait(failures, self._rng))
                except Exception:
                    # A bug (in a policies() callable, say): logged, and the consumer goes on.
                    failures += 1
                    logger.exception("consumer %s: unexpected error in its loop", self.name)
                    await self._pause(_OUTAGE_BACKOFF.wait(failures, self._rng))
        finally:
            if hint is not None:
                await cancel_and_wait(hint)

    async def _take_round(self) -> bool:
        """Take what each deployed function with calls has room for; whether anything was
        taken. (Asking only those not drained keeps the cost of a freed slot independent of
        how many functions are deployed.)"""
        took = False
        for ref, policy in list(self._policies().items()):
            if self._stopping or len(self._held) >= self._max_held:
                break
            free = min(
                policy.limits.concurrency - self._in_flight.get(ref, 0),
                self._max_held - len(self._held),
            )
            if free <= 0 or ref in self._drained:
                continue
            deliveries = await self._queue.take(self.name, ref, free)
            if len(deliveries) < free:
                self._drained.add(ref)
            for delivery in deliveries:
                took = True
                self._launch(delivery, policy)
        return took

    def _launch(self, delivery: Delivery, policy: QueuePolicy) -> None:
        ref = delivery.call.function
        self._in_flight[ref] = self._in_flight.get(ref, 0) + 1
        self._held[delivery.id] = (delivery, asyncio.get_running_loop().time())
        task = asyncio.create_task(
            self._deliver(delivery, policy),
            name=f"call {delivery.call.call_id} of {ref} (attempt {delivery.attempt})",
        )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def _invoked(self, ref: str) -> None:
        """The function's slot is free: its invocation ended (or never started)."""
        self._in_flight[ref] -= 1
        if not self._in_flight[ref]:
            del self._in_flight[ref]
        self._wakeup.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but not past a stop()."""
        if not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    while not self._stopping:
                        self._wakeup.clear()
                        await self._wakeup.wait()

    def _backend_down(self, exc: QueueUnavailable) -> None:
        if self._outage is None:
            logger.warning(
                "consumer %s: the queue %s is unavailable (%s); no calls are taken until it is "
                "back",
                self.name,
                exc.queue,
                exc.cause,
            )
        self._outage = exc.message

    def _backend_back(self) -> None:
        if self._outage is not None:
            logger.info("consumer %s: the queue %s is back", self.name, self._queue.name)
            self._outage = None

    # --- one delivery ----------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery, policy: QueuePolicy) -> None:
        invoking = True
        try:
            result = await self._invoker.invoke(delivery.call)
            invoking = False
            self._invoked(delivery.call.function)
            await self._settle(delivery, policy, result)
        except QueueUnavailable as exc:
            logger.warning(
                "call %s of %s: %s; it stays taken, and is delivered again after its lease",
                delivery.call.call_id,
                delivery.call.function,
                exc.message,
            )
        except Exception:
            logger.exception(
                "call %s of %s: unexpected error; it is delivered again after its lease",
                delivery.call.call_id,
                delivery.call.function,
            )
        finally:
            if invoking:
                self._invoked(delivery.call.function)
            # (pop: a call this consumer took again, its own lease having run out, has one id.)
            if self._held.pop(delivery.id, None) is not None and (
                len(self._held) == self._max_held - 1
            ):
                self._wakeup.set()  # it was holding all it may: it may take again

    async def _settle(self, delivery: Delivery, policy: QueuePolicy, result: CallResult) -> None:
        retry, attempt, status = policy.retry, delivery.attempt, result.status
        if retry.retries(status, attempt):
            await self._queue.retry(delivery, retry.wait(attempt, self._rng))
            self._retried += 1
            return
        # The call has ended for good: its callback, then out of the queue.
        if delivery.call.callback_url:
            await self._callbacks.send(delivery.call, result)
        if status in retry.codes:
            text = result.body[: _REASON_BODY * 4].decode(errors="replace")[:_REASON_BODY]
            reason = f"status {status} after {attempt} attempts: {text}"
            await self._queue.dead_letter(delivery, reason)
            self._dead_lettered += 1
        else:
            await self._queue.ack(delivery)
            self._completed += 1

    async def _renew(self) -> None:
        """Keep the leases of the calls held (a long invocation, a slow callback): every third
        of the lease, each call renewed more than a sixth of it ago is renewed. So a lease is
        at most half spent when it is renewed, and a call that ends within a few seconds, as
        most do, is never renewed at all."""
        loop = asyncio.get_running_loop()
        period = self._lease / 3
        while True:
            await asyncio.sleep(period)
            due = loop.time() - period / 2
            for delivery in [d for d, renewed in self._held.values() if renewed <= due]:
                try:
                    await self._queue.extend(delivery)
                except QueueUnavailable as exc:
                    # Down: every call waits for the next tick rather than each for its own
                    # timeout. If it stays down past the lease, the call is delivered again:
                    # at least once.
                    logger.debug("consumer %s: leases not renewed: %s", self.name, exc.message)
                    break
                except Exception:
                    # A bug must not end the renewals of every call this consumer holds.
                    logger.exception(
                        "consumer %s: renewing the lease of call %s failed",
                        self.name,
                        delivery.call.call_id,
                    )
                    continue
                if delivery.id in self._held:  # (not settled meanwhile)
                    self._held[delivery.id] = (delivery, loop.time())


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended. (asyncio.wait, not `await task`: a
    cancellation of the caller itself must not be taken for the task's and swallowed.)"""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: the task logged what it had to say
