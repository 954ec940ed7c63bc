"""The consumer of async calls on real queues (the embedded SQLite one, and Redis Streams on a
real redis-server with AOF), POSTing callbacks to a real aiohttp receiver on a free port. The
function is a scripted invoker (the seam between the queue and the functions); the invokers
themselves are tested at the end: WorkerInvoker over a stand-in worker, GatewayInvoker and
serve_queue_worker against a stand-in gateway served by aiohttp."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from faasd_py.errors import InstanceCrashed, NotFound
from faasd_py.protocol import Request, Result
from faasd_py.queue import (
    ANNOTATION_ATTEMPTS,
    ANNOTATION_CONCURRENCY,
    MAX_HELD,
    CallbackSender,
    CallQueue,
    CallResult,
    Consumer,
    Delivery,
    GatewayInvoker,
    QueuedCall,
    QueueLimits,
    QueuePolicy,
    RetryPolicy,
    WorkerInvoker,
    open_queue,
    serve_queue_worker,
)
from faasd_py.worker import Outcome
from tests._ci import in_ci
from tests.integration._redis import RedisServer, free_port
from tests.integration.test_bench_client import aiohttp_server

# Deadlines only catch hangs.
HANG = 30.0

QueueFactory = Callable[..., CallQueue]


def fast_policy(attempts: int = 3, concurrency: int = 4) -> QueuePolicy:
    return QueuePolicy(
        RetryPolicy(attempts, min_wait=0.05, max_wait=0.1), QueueLimits(100, concurrency)
    )


def fast_callbacks(attempts: int = 3) -> CallbackSender:
    return CallbackSender(attempts, min_wait=0.05, max_wait=0.1, timeout=5.0)


@pytest.fixture(params=["sqlite", "redis"])
async def backing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str | None]:
    """The URL of a real backend for open_queue: None (the embedded queue in tmp_path), or a
    redis-server of its own with an append-only file."""
    if request.param == "sqlite":
        yield None
        return
    if shutil.which("redis-server") is None:
        if in_ci():
            pytest.fail("CI must prove the Redis queue, but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path, aof=True)
    server.start()
    request.addfinalizer(server.stop)
    yield server.url


@pytest.fixture
async def make_queue(backing: str | None, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    opened: list[CallQueue] = []

    def make(lease: float = 60.0) -> CallQueue:
        queue = open_queue(backing, tmp_path, lease=lease)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


def call(function: str = "fn", n: int = 0, callback: str | None = None) -> QueuedCall:
    request = Request(
        f"call-{function}-{n}",
        "POST",
        "/",
        "",
        [("Content-Type", "text/plain"), ("X-Start-Time", "1700000000123456789")],
        f"body {n}".encode(),
    )
    return QueuedCall(function, request, callback, time.time())


def answer(
    status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None
) -> CallResult:
    return CallResult(status, headers or [], body, 0.25, time.time())


@dataclass
class Scripted:
    """The function: answers each attempt with `script(call, attempt number)`, after `delay`
    seconds (or never, while `hold` is unset), and keeps count."""

    script: Callable[[QueuedCall, int], CallResult]
    delay: float = 0.0
    hold: asyncio.Event | None = None
    attempts: dict[str, int] = field(default_factory=dict)  # call id -> invocations
    running: dict[str, int] = field(default_factory=dict)  # function -> running now
    most: dict[str, int] = field(default_factory=dict)  # function -> most running at once
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def invoke(self, call: QueuedCall) -> CallResult:
        n = self.attempts[call.call_id] = self.attempts.get(call.call_id, 0) + 1
        ref = call.function
        self.running[ref] = self.running.get(ref, 0) + 1
        self.most[ref] = max(self.most.get(ref, 0), self.running[ref])
        self.started.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(self.delay)
            return self.script(call, n)
        finally:
            self.running[ref] -= 1


@dataclass
class Posted:
    headers: Mapping[str, str]
    body: bytes


class Receiver:
    """A callback receiver: answers the statuses of `answers` in turn (200 after them)."""

    def __init__(self, answers: list[int] | None = None) -> None:
        self.answers = list(answers or [])
        self.posts: asyncio.Queue[Posted] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        await self.posts.put(Posted(dict(request.headers), await request.read()))
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def next(self) -> Posted:
        return await asyncio.wait_for(self.posts.get(), HANG)


@asynccontextmanager
async def receiving(answers: list[int] | None = None) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(answers)
    async with aiohttp_server(receiver.handle) as url:
        yield receiver, url + "/done"


@asynccontextmanager
async def consuming(
    queue: CallQueue,
    invoker: Scripted,
    policies: Mapping[str, QueuePolicy] | Callable[[], Mapping[str, QueuePolicy]],
    callbacks: CallbackSender | None = None,
    lease: float = 60.0,
    max_held: int = MAX_HELD,
) -> AsyncIterator[Consumer]:
    sender = callbacks or fast_callbacks()
    read = policies if callable(policies) else lambda: policies
    consumer = Consumer(queue, invoker, read, sender, lease=lease, max_held=max_held)
    consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop(drain_timeout=HANG)
        await sender.close()


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def empty(queue: CallQueue, function: str = "fn") -> bool:
    stats = (await queue.statistics()).get(function)
    return stats is None or (stats.depth, stats.in_flight, stats.dead_letters) == (0, 0, 0)


def seen_attempts(queue: CallQueue, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The attempt number of every delivery the queue hands out, in order."""
    attempts: list[int] = []
    take = queue.take

    async def recording(consumer: str, function: str, count: int) -> list[Delivery]:
        deliveries = await take(consumer, function, count)
        attempts.extend(d.attempt for d in deliveries)
        return deliveries

    monkeypatch.setattr(queue, "take", recording)
    return attempts


# --- results and callbacks ---------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "qualified"), [("fn", "fn.openfaas-fn"), ("fn.dev", "fn.dev")])
async def test_a_result_is_posted_to_its_callback_then_acked(
    make_queue: QueueFactory, ref: str, qualified: str
) -> None:
    queue = make_queue()
    headers = [("Content-Type", "text/plain"), ("X-Custom", "yes"), ("Content-Length", "999")]
    invoker = Scripted(lambda c, n: answer(201, b"hello " + c.request.body, headers))
    async with (
        receiving() as (receiver, url),
        consuming(queue, invoker, {ref: fast_policy()}) as consumer,
    ):
        await queue.enqueue(call(ref, 1, callback=url), 100)
        posted = await receiver.next()
        await eventually(lambda: empty(queue, ref))
        await eventually(lambda: consumer.statistics().completed == 1)  # counted after the ack
    assert posted.body == b"hello body 1"
    assert posted.headers["X-Call-Id"] == f"call-{ref}-1"
    assert posted.headers["X-Function-Name"] == qualified
    assert posted.headers["X-Function-Status"] == "201"
    assert posted.headers["X-Duration-Seconds"] == "0.250000"
    assert posted.headers["X-Start-Time"] == "1700000000123456789"
    assert posted.headers["X-Custom"] == "yes"
    assert posted.headers["Content-Type"] == "text/plain"
    assert posted.headers["Content-Length"] == str(len(posted.body))  # not the function's 999
    assert invoker.attempts == {f"call-{ref}-1": 1}


async def test_a_call_without_a_callback_is_acked_after_it_ran(make_queue: QueueFactory) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200))
    async with consuming(queue, invoker, {"fn": fast_policy()}) as consumer:
        await queue.enqueue(call(), 100)
        await eventually(lambda: consumer.statistics().completed == 1)
        assert await empty(queue)
        assert consumer.statistics().callbacks.delivered == 0


async def test_a_retryable_status_is_retried_then_dead_lettered_with_a_final_callback(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue()
    attempts = seen_attempts(queue, monkeypatch)
    invoker = Scripted(lambda c, n: answer(503, f"busy {n}".encode()))
    async with (
        receiving() as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy(3)}) as consumer,
    ):
        await queue.enqueue(call(callback=url), 100)
        posted = await receiver.next()
        await eventually(lambda: consumer.statistics().dead_lettered == 1)
        stats = consumer.statistics()
        await asyncio.sleep(0.2)  # what would be a fourth attempt's wait, or a second callback
        assert receiver.posts.empty()
    assert attempts == [1, 2, 3]
    assert invoker.attempts == {"call-fn-0": 3}  # the same call id on every delivery
    assert (stats.retried, stats.completed) == (2, 0)
    assert posted.headers["X-Function-Status"] == "503" and posted.body == b"busy 3"
    (dead,) = await queue.dead_letters("fn")
    assert dead.call.call_id == "call-fn-0" and dead.attempts == 3
    assert dead.reason == "status 503 after 3 attempts: busy 3"
    assert (await queue.statistics())["fn"].retries == 2


async def test_a_retried_call_that_then_succeeds_is_acked_with_one_callback(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue()
    attempts = seen_attempts(queue, monkeypatch)
    invoker = Scripted(lambda c, n: answer(429) if n < 3 else answer(200, b"done"))
    async with (
        receiving() as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy(5)}) as consumer,
    ):
        await queue.enqueue(call(callback=url), 100)
        posted = await receiver.next()
        await eventually(lambda: empty(queue))
        await eventually(lambda: consumer.statistics().completed == 1)  # counted after the ack
    assert attempts == [1, 2, 3]
    assert (posted.headers["X-Function-Status"], posted.body) == ("200", b"done")
    assert receiver.posts.empty()


async def test_a_status_not_in_the_retry_codes_is_final(make_queue: QueueFactory) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(500, b"handler failed"))
    async with (
        receiving() as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy(5)}) as consumer,
    ):
        await queue.enqueue(call(callback=url), 100)
        posted = await receiver.next()
        await eventually(lambda: empty(queue))
        await eventually(lambda: consumer.statistics().completed == 1)  # counted after the ack
        stats = consumer.statistics()
    assert (posted.headers["X-Function-Status"], posted.body) == ("500", b"handler failed")
    assert invoker.attempts == {"call-fn-0": 1}
    assert (stats.completed, stats.retried, stats.dead_lettered) == (1, 0, 0)
    assert await queue.dead_letters("fn") == []


# --- callbacks that fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "posts"), [([500, 500, 500], 3), ([503, 429, 502], 3), ([404], 1)]
)
async def test_a_failing_callback_is_given_up_and_never_reruns_the_function(
    make_queue: QueueFactory, answers: list[int], posts: int
) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200, b"result"))
    async with (
        receiving(answers) as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy()}, fast_callbacks(3)) as consumer,
    ):
        await queue.enqueue(call(callback=url), 100)
        await eventually(lambda: consumer.statistics().completed == 1)
        stats = consumer.statistics().callbacks
        assert await empty(queue)
    assert receiver.posts.qsize() == posts  # 5xx and 429 are tried again; other 4xx are final
    assert (stats.delivered, stats.failed, stats.retried) == (0, 1, posts - 1)
    assert invoker.attempts == {"call-fn-0": 1}


async def test_a_callback_receiver_that_is_down_is_given_up(make_queue: QueueFactory) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200))
    nobody = f"http://127.0.0.1:{free_port()}/done"
    async with consuming(queue, invoker, {"fn": fast_policy()}, fast_callbacks(3)) as consumer:
        await queue.enqueue(call(callback=nobody), 100)
        await eventually(lambda: consumer.statistics().completed == 1)
        stats = consumer.statistics().callbacks
        assert await empty(queue)
    assert (stats.delivered, stats.failed, stats.retried) == (0, 1, 2)
    assert invoker.attempts == {"call-fn-0": 1}


async def test_a_callback_that_fails_once_is_delivered_on_its_retry(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200, b"ok"))
    async with (
        receiving([502]) as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy()}) as consumer,
    ):
        await queue.enqueue(call(callback=url), 100)
        first, second = await receiver.next(), await receiver.next()
        await eventually(lambda: consumer.statistics().completed == 1)
        stats = consumer.statistics().callbacks
    assert first.headers["X-Call-Id"] == second.headers["X-Call-Id"] == "call-fn-0"
    assert (stats.delivered, stats.failed, stats.retried) == (1, 0, 1)


# --- which calls run, and how many at once -----------------------------------------------------


async def test_no_more_than_the_concurrency_of_a_function_run_at_once(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200), delay=0.05)
    policies = {"a": fast_policy(concurrency=3), "b": fast_policy(concurrency=1)}
    async with consuming(queue, invoker, policies) as consumer:
        for n in range(12):
            await queue.enqueue(call("a", n), 100)
            await queue.enqueue(call("b", n), 100)
        await eventually(lambda: consumer.statistics().completed == 24)
    assert invoker.most == {"a": 3, "b": 1}
    assert len(invoker.attempts) == 24 and set(invoker.attempts.values()) == {1}


class HeldReceiver(Receiver):
    """A callback receiver that answers nothing until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0  # callbacks POSTed and not yet answered

    async def handle(self, request: web.Request) -> web.Response:
        self.waiting += 1
        try:
            await self.release.wait()
            return await super().handle(request)
        finally:
            self.waiting -= 1


@asynccontextmanager
async def receiving_held() -> AsyncIterator[tuple[HeldReceiver, str]]:
    receiver = HeldReceiver()
    try:
        async with aiohttp_server(receiver.handle) as url:
            yield receiver, url + "/done"
    finally:
        receiver.release.set()


async def test_a_slot_is_free_again_while_its_calls_callback_is_posted(
    make_queue: QueueFactory,
) -> None:
    """The concurrency bounds invocations (instances), not callbacks: with a concurrency of 1
    and the first call's callback not yet answered, the second call runs."""
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200))
    async with (
        receiving_held() as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy(concurrency=1)}) as consumer,
    ):
        for n in range(3):
            await queue.enqueue(call("fn", n, callback=url), 100)
        await eventually(lambda: len(invoker.attempts) == 3 and receiver.waiting == 3)
        assert consumer.statistics().completed == 0  # none settled: their callbacks wait
        assert invoker.most == {"fn": 1}
        receiver.release.set()
        await eventually(lambda: consumer.statistics().completed == 3)
    assert consumer.statistics().callbacks.delivered == 3
    assert await empty(queue)


async def test_the_calls_a_consumer_holds_are_bounded_while_callbacks_wait(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200))
    policies = {"fn": fast_policy(concurrency=10)}
    async with (
        receiving_held() as (receiver, url),
        consuming(queue, invoker, policies, max_held=3) as consumer,
    ):
        for n in range(10):
            await queue.enqueue(call("fn", n, callback=url), 100)
        await eventually(lambda: receiver.waiting == 3)
        await asyncio.sleep(0.3)  # a few rounds of the loop: no more is taken
        assert len(invoker.attempts) == 3
        assert (await queue.statistics())["fn"].in_flight == 3
        receiver.release.set()
        await eventually(lambda: consumer.statistics().completed == 10)
    assert set(invoker.attempts.values()) == {1}
    assert await empty(queue)


async def test_a_call_whose_callback_outlasts_its_lease_is_not_delivered_again(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leases are renewed while a callback is POSTed, not only while the function runs."""
    lease = 1.2
    queue = make_queue(lease=lease)
    attempts = seen_attempts(queue, monkeypatch)
    invoker = Scripted(lambda c, n: answer(200))
    async with (
        receiving_held() as (receiver, url),
        consuming(queue, invoker, {"fn": fast_policy()}, lease=lease) as consumer,
    ):
        await queue.enqueue(call("fn", 1, callback=url), 100)
        await eventually(lambda: receiver.waiting == 1)
        await asyncio.sleep(lease * 2.5)
        receiver.release.set()
        await eventually(lambda: consumer.statistics().completed == 1)
    assert attempts == [1]
    assert invoker.attempts == {"call-fn-1": 1}
    assert await empty(queue)


async def test_a_lease_that_fails_to_renew_does_not_stop_the_others(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One timer renews every lease the consumer holds: a renewal that raises (a bug) must
    not end the renewals of the other calls."""
    lease = 1.2
    queue = make_queue(lease=lease)
    extend = queue.extend

    async def broken_for_one(delivery: Delivery) -> None:
        if delivery.call.call_id == "call-fn-1":
            raise RuntimeError("a bug in renewing")
        await extend(delivery)

    monkeypatch.setattr(queue, "extend", broken_for_one)
    held = Scripted(lambda c, n: answer(200), hold=asyncio.Event())
    # A concurrency of 2: the consumer cannot take the expired call again itself.
    async with consuming(queue, held, {"fn": fast_policy(concurrency=2)}, lease=lease):
        for n in (1, 2):
            await queue.enqueue(call("fn", n), 100)
        await eventually(lambda: len(held.attempts) == 2)
        await asyncio.sleep(lease * 2.5)
        # Only the call whose renewal failed has run out its lease.
        expired = await queue.take("another", "fn", 10)
        assert [d.call.call_id for d in expired] == ["call-fn-1"]
        assert held.hold is not None
        held.hold.set()


async def test_a_freed_slot_does_not_ask_the_queue_about_functions_without_calls(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many functions deployed, the call that ends must not cost a take per function:
    only functions whose last take left calls behind are asked again, until the queue says a
    call may have come (here it never does: its wait_for_calls never returns)."""
    queue = make_queue()
    takes: Counter[str] = Counter()
    take = queue.take

    async def counted(consumer: str, function: str, count: int) -> list[Delivery]:
        takes[function] += 1
        return await take(consumer, function, count)

    async def silent(at_most: float) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(queue, "take", counted)
    monkeypatch.setattr(queue, "wait_for_calls", silent)
    for n in range(20):
        await queue.enqueue(call("busy", n), 100)
    policies = {"busy": fast_policy(concurrency=1)}
    policies.update({f"idle-{n}": fast_policy() for n in range(50)})
    invoker = Scripted(lambda c, n: answer(200))
    async with consuming(queue, invoker, policies) as consumer:
        await eventually(lambda: consumer.statistics().completed == 20)
    assert takes["busy"] >= 20  # one per freed slot
    assert {takes[f"idle-{n}"] for n in range(50)} == {1}  # the first round only


async def test_calls_of_a_function_not_deployed_wait_until_it_is(make_queue: QueueFactory) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200))
    deployed: dict[str, QueuePolicy] = {"fn": fast_policy()}
    async with consuming(queue, invoker, lambda: deployed) as consumer:
        await queue.enqueue(call("later", 1), 100)
        await queue.enqueue(call("fn", 2), 100)
        await eventually(lambda: consumer.statistics().completed == 1)
        await asyncio.sleep(0.3)  # a few rounds of the loop
        assert invoker.attempts == {"call-fn-2": 1}
        assert (await queue.statistics())["later"].depth == 1
        deployed["later"] = fast_policy()
        await eventually(lambda: consumer.statistics().completed == 2)
    assert invoker.attempts == {"call-fn-2": 1, "call-later-1": 1}


# --- stopping ----------------------------------------------------------------------------------


async def test_stop_lets_calls_in_flight_end(make_queue: QueueFactory) -> None:
    queue = make_queue()
    invoker = Scripted(lambda c, n: answer(200), delay=0.3)
    consumer = Consumer(queue, invoker, lambda: {"fn": fast_policy()}, fast_callbacks())
    consumer.start()
    await queue.enqueue(call(), 100)
    await asyncio.wait_for(invoker.started.wait(), HANG)
    await consumer.stop(drain_timeout=HANG)
    assert consumer.statistics().completed == 1
    assert await empty(queue)


async def test_stop_leaves_a_slow_call_to_be_delivered_again(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = 1.2
    queue = make_queue(lease=lease)
    attempts = seen_attempts(queue, monkeypatch)
    stuck = Scripted(lambda c, n: answer(200), hold=asyncio.Event())
    first = Consumer(queue, stuck, lambda: {"fn": fast_policy()}, fast_callbacks(), lease=lease)
    first.start()
    await queue.enqueue(call(), 100)
    await asyncio.wait_for(stuck.started.wait(), HANG)
    await asyncio.sleep(lease)  # the lease is renewed while the call runs
    await first.stop(drain_timeout=0.1)
    assert first.statistics().completed == 0 and first.statistics().in_flight == {}
    assert (await queue.statistics())["fn"].in_flight == 1  # still taken: not acked, not lost

    invoker = Scripted(lambda c, n: answer(200))
    async with consuming(queue, invoker, {"fn": fast_policy()}, lease=lease) as second:
        await eventually(lambda: second.statistics().completed == 1)
    assert invoker.attempts == {"call-fn-0": 1}  # the same call id
    assert attempts == [1, 1]  # the stopped attempt never ended: it is no retry
    assert await empty(queue)


# --- the backend going away --------------------------------------------------------------------


async def test_the_consumer_outlives_an_outage_of_redis(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path, aof=True)
    server.start()
    queue = open_queue(server.url, tmp_path, timeout=0.5)
    invoker = Scripted(lambda c, n: answer(200))
    try:
        async with consuming(queue, invoker, {"fn": fast_policy()}) as consumer:
            await queue.enqueue(call(n=1), 100)
            await eventually(lambda: consumer.statistics().completed == 1)
            server.stop()
            await asyncio.sleep(1.0)  # the loop meets errors for a while
            server.start()
            await eventually(lambda: _enqueued(queue, call(n=2)))
            await eventually(lambda: consumer.statistics().completed == 2)
    finally:
        await queue.close()
        server.stop()
    assert invoker.attempts == {"call-fn-1": 1, "call-fn-2": 1}


async def _enqueued(queue: CallQueue, queued: QueuedCall) -> bool:
    """Enqueue, or False while the backend is still coming back."""
    from faasd_py.queue import QueueUnavailable

    try:
        await queue.enqueue(queued, 100)
    except QueueUnavailable:
        return False
    return True


# --- the invokers ------------------------------------------------------------------------------


@dataclass
class StandInWorker:
    """What WorkerInvoker needs of a worker: `invoke(name, request) -> Outcome`."""

    outcome: Callable[[str, Request], Outcome]
    seen: list[tuple[str, Request]] = field(default_factory=list)

    async def invoke(self, name: str, request: Request) -> Outcome:
        self.seen.append((name, request))
        return self.outcome(name, request)


def outcome(status: int, body: bytes, error: str | None = None) -> Outcome:
    result = Result(1, status, [("X-From", "handler")], body, error, 0.01)
    return Outcome(result, "fn-1", 0.0, 0.5, 0.01)


async def test_worker_invoker_runs_calls_in_the_worker_and_observes_them() -> None:
    observed: list[tuple[str, int, float, float]] = []
    worker = StandInWorker(lambda name, request: outcome(200, b"out"))
    invoker = WorkerInvoker(worker, lambda *args: observed.append(args))
    queued = call("fn.dev", 3)
    result = await invoker.invoke(queued)
    assert worker.seen == [("fn.dev", queued.request)]
    assert (result.status, result.body) == (200, b"out")
    # The function's headers, and where the call's time went (for the callback).
    assert result.headers[0] == ("X-From", "handler")
    assert (
        result.headers[1][0] == "Server-Timing" and "cold-start;dur=500.000" in result.headers[1][1]
    )
    assert result.duration >= 0 and abs(result.started_at - time.time()) < HANG
    ((ref, status, seconds, cold),) = observed
    assert (ref, status, cold) == ("fn.dev", 200, 0.5) and seconds == result.duration


def _raise(exc: Exception) -> Outcome:
    raise exc


@pytest.mark.parametrize(
    ("error", "status"),
    [(NotFound("function 'fn' not found"), 404), (InstanceCrashed("instance died"), 502)],
)
async def test_worker_invoker_answers_errors_as_the_gateway_does(
    error: Exception, status: int
) -> None:
    observed: list[int] = []
    invoker = WorkerInvoker(
        StandInWorker(lambda name, request: _raise(error)), lambda r, s, t, c: observed.append(s)
    )
    result = await invoker.invoke(call())
    assert result.status == status and observed == [status]
    assert json.loads(result.body) == {"error": str(error), "status": status}
    assert ("Content-Type", "application/json; charset=utf-8") in result.headers


async def test_worker_invoker_answers_a_handler_that_raised_with_its_error() -> None:
    worker = StandInWorker(lambda name, request: outcome(500, b"", "ValueError: bad input"))
    result = await WorkerInvoker(worker).invoke(call())
    assert result.status == 500
    assert json.loads(result.body) == {
        "error": "function fn failed: ValueError: bad input",
        "status": 500,
    }


@asynccontextmanager
async def stand_in_gateway(
    functions: Mapping[str, Sequence[Mapping[str, object]]],
    seen: list[web.Request] | None = None,
) -> AsyncIterator[str]:
    """A gateway that lists `functions` (namespace -> its functions, as /system/functions
    lists them) and answers /function/ by echoing what it got."""

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/system/namespaces":
            return web.json_response(list(functions))
        if request.path == "/system/functions":
            return web.json_response(functions[request.query["namespace"]])
        body = await request.read()
        if seen is not None:
            seen.append(request)
        echoed = {
            "method": request.method,
            "path_qs": request.path_qs,
            "headers": dict(request.headers),
            "body": body.decode(),
        }
        return web.json_response(echoed, status=202, headers={"X-Answered": "gateway"})

    async with aiohttp_server(handle) as url:
        yield url


async def test_gateway_invoker_sends_the_call_to_the_gateways_function_path() -> None:
    async with stand_in_gateway({}) as url:
        invoker = GatewayInvoker(url, {"Authorization": "Basic xyz", "X-Call-Id": "not this"})
        request = Request(
            "call-7",
            "PUT",
            "/sub/path",
            "a=1&b=x%20y",
            [("X-Call-Id", "call-7"), ("X-In", "1")],
            b"payload",
        )
        try:
            result = await invoker.invoke(QueuedCall("fn.dev", request, None, time.time()))
        finally:
            await invoker.close()
    echoed = json.loads(result.body)
    assert result.status == 202 and ("X-Answered", "gateway") in result.headers
    assert echoed["method"] == "PUT" and echoed["body"] == "payload"
    assert echoed["path_qs"] == "/function/fn.dev/sub/path?a=1&b=x%20y"
    assert echoed["headers"]["Authorization"] == "Basic xyz"
    assert echoed["headers"]["X-Call-Id"] == "call-7"  # the call's own header wins
    assert echoed["headers"]["X-In"] == "1"
    assert not any(k.lower() == "content-length" for k, _ in result.headers)


async def test_gateway_invoker_answers_502_naming_a_gateway_it_cannot_reach() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    invoker = GatewayInvoker(url, {})
    try:
        result = await invoker.invoke(call())
    finally:
        await invoker.close()
    assert result.status == 502
    assert f"the gateway at {url} cannot be reached" in json.loads(result.body)["error"]


# --- a queue-worker process of its own ---------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        if in_ci():
            pytest.fail("CI must prove the Redis queue, but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path, aof=True)
    server.start()
    yield server.url
    server.stop()


def queue_worker(
    redis_url: str, gateway: str, stop: asyncio.Event
) -> AbstractAsyncContextManager[asyncio.Task[None]]:
    @asynccontextmanager
    async def running() -> AsyncIterator[asyncio.Task[None]]:
        task = asyncio.create_task(
            serve_queue_worker(
                redis_url,
                gateway,
                {"Authorization": "Basic xyz"},
                name="qw-test",
                stop=stop,
                default=fast_policy(),
                refresh=0.1,
            )
        )
        try:
            yield task
        finally:
            stop.set()
            await asyncio.wait_for(task, HANG)

    return running()


async def test_a_queue_worker_consumes_the_gateways_functions_through_it(
    redis_url: str, tmp_path: Path
) -> None:
    functions = {
        "openfaas-fn": [{"name": "fn", "namespace": "openfaas-fn", "annotations": {}}],
        "dev": [{"name": "tool", "namespace": "dev", "annotations": {ANNOTATION_ATTEMPTS: "2"}}],
    }
    seen: list[web.Request] = []
    queue = open_queue(redis_url, tmp_path)
    try:
        async with (
            receiving() as (receiver, callback),
            stand_in_gateway(functions, seen) as gateway,
            queue_worker(redis_url, gateway, asyncio.Event()),
        ):
            await queue.enqueue(call("fn", 1, callback), 100)
            await queue.enqueue(call("tool.dev", 2, callback), 100)
            await queue.enqueue(call("ghost", 3, callback), 100)  # not deployed: waits
            posts = [await receiver.next(), await receiver.next()]
            await eventually(lambda: empty(queue, "fn"))
            await eventually(lambda: empty(queue, "tool.dev"))
        assert (await queue.statistics())["ghost"].depth == 1
    finally:
        await queue.close()
    by_call = {p.headers["X-Call-Id"]: p for p in posts}
    assert by_call.keys() == {"call-fn-1", "call-tool.dev-2"}
    assert by_call["call-tool.dev-2"].headers["X-Function-Name"] == "tool.dev"
    assert by_call["call-fn-1"].headers["X-Function-Status"] == "202"
    assert json.loads(by_call["call-fn-1"].body)["path_qs"] == "/function/fn/"
    assert sorted(r.path for r in seen) == ["/function/fn/", "/function/tool.dev/"]


async def test_a_queue_worker_uses_the_defaults_for_a_function_with_bad_annotations(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    functions = {
        "openfaas-fn": [
            {"name": "fn", "namespace": "openfaas-fn", "annotations": {ANNOTATION_CONCURRENCY: "x"}}
        ]
    }
    queue = open_queue(redis_url, tmp_path)
    try:
        async with (
            stand_in_gateway(functions) as gateway,
            queue_worker(redis_url, gateway, asyncio.Event()),
        ):
            await queue.enqueue(call("fn", 1), 100)
            await eventually(lambda: empty(queue, "fn"))
            await asyncio.sleep(0.3)  # a few refreshes: logged once
    finally:
        await queue.close()
    warnings = [r.getMessage() for r in caplog.records if ANNOTATION_CONCURRENCY in r.getMessage()]
    assert len(warnings) == 1 and "function fn:" in warnings[0]
