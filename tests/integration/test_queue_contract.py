"""The contract of a queue of async calls (faasd_py.queue.CallQueue), run against both backends:
the embedded SQLite queue and Redis Streams on a real redis-server (with an append-only file,
as a durable queue runs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from faasd_py.protocol import Request
from faasd_py.queue import (
    CallQueue,
    Delivery,
    QueuedCall,
    QueueFull,
    QueueUnavailable,
    open_queue,
)
from tests.integration._redis import RedisServer, free_port

# Deadlines only catch hangs.
HANG = 30.0

QueueFactory = Callable[..., CallQueue]


@pytest.fixture(params=["sqlite", "redis"])
async def make_queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    """Opens queues over one backing (one SQLite file, or one redis-server with AOF); closes
    them at teardown. make(lease=...) sets the lease of taken calls."""
    opened: list[CallQueue] = []
    url: str | None = None
    if request.param == "redis":
        server = RedisServer(tmp_path, aof=True)
        server.start()
        request.addfinalizer(server.stop)
        url = server.url

    def make(lease: float = 60.0, timeout: float = 5.0) -> CallQueue:
        queue = open_queue(url, tmp_path, lease=lease, timeout=timeout)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


def call(
    function: str = "fn", n: int = 0, body: bytes = b"", callback: str | None = None
) -> QueuedCall:
    request = Request(
        f"call-{function}-{n}",
        "POST",
        "/sub/path",
        "a=1&b=2",
        [("Content-Type", "text/plain"), ("X-Thing", "é")],
        body or f"body {n}".encode(),
    )
    return QueuedCall(function, request, callback, time.time())


async def take_all(queue: CallQueue, function: str, consumer: str = "c1") -> list[Delivery]:
    return await queue.take(consumer, function, 1000)


async def test_a_call_comes_back_whole_with_attempt_one(make_queue: QueueFactory) -> None:
    queue = make_queue()
    sent = call(body=bytes(range(256)) * 100, callback="http://127.0.0.1:9/cb")
    await queue.enqueue(sent, max_depth=10)
    (delivery,) = await take_all(queue, "fn")
    assert delivery.call == sent
    assert delivery.attempt == 1
    assert await take_all(queue, "fn") == []  # leased: nobody else gets it
    await queue.ack(delivery)
    stats = (await queue.statistics()).get("fn")
    assert stats is None or (stats.depth, stats.in_flight) == (0, 0)


async def test_functions_have_queues_of_their_own(make_queue: QueueFactory) -> None:
    queue = make_queue()
    await queue.enqueue(call("a", 1), 10)
    await queue.enqueue(call("b", 2), 10)
    assert [d.call.call_id for d in await take_all(queue, "a")] == ["call-a-1"]
    assert [d.call.call_id for d in await take_all(queue, "b")] == ["call-b-2"]
    assert await take_all(queue, "c") == []


async def test_take_hands_out_at_most_count_and_each_call_once(make_queue: QueueFactory) -> None:
    queue = make_queue()
    for n in range(10):
        await queue.enqueue(call(n=n), 100)
    first = await queue.take("c1", "fn", 4)
    second = await queue.take("c2", "fn", 100)
    assert len(first) == 4 and len(second) == 6
    ids = {d.call.call_id for d in first + second}
    assert ids == {f"call-fn-{n}" for n in range(10)}


async def test_enqueue_beyond_the_depth_is_refused_naming_the_limit(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    for n in range(3):
        await queue.enqueue(call(n=n), max_depth=3)
    with pytest.raises(QueueFull) as refused:
        await queue.enqueue(call(n=3), max_depth=3)
    assert refused.value.status == 429 and "limit of 3" in refused.value.message
    # In-flight calls count too, until acked.
    taken = await take_all(queue, "fn")
    with pytest.raises(QueueFull):
        await queue.enqueue(call(n=4), max_depth=3)
    await queue.ack(taken[0])
    await queue.enqueue(call(n=5), max_depth=3)


async def test_operations_started_together_each_get_their_own_outcome(
    make_queue: QueueFactory,
) -> None:
    """Both backends send the operations of one round of the loop together (one transaction,
    or one pipeline): each must still get its own answer, and the depth limit must hold."""
    queue = make_queue()
    outcomes = await asyncio.gather(
        *(queue.enqueue(call(n=n), max_depth=20) for n in range(30)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 20
    assert all(isinstance(o, QueueFull) for o in outcomes if o is not None)
    taken = await take_all(queue, "fn")
    assert len(taken) == 20
    # Acks, a retry and a dead letter of one round, and a take of another function.
    await queue.enqueue(call("other", 1), 10)
    _, others, _, _ = await asyncio.gather(
        asyncio.gather(*(queue.ack(d) for d in taken[:18])),
        take_all(queue, "other"),
        queue.retry(taken[18], wait=0),
        queue.dead_letter(taken[19], "gone"),
    )
    assert [d.call.call_id for d in others] == ["call-other-1"]
    stats = (await queue.statistics())["fn"]
    assert (stats.depth, stats.in_flight, stats.dead_letters) == (1, 0, 1)


async def test_a_retried_call_comes_back_after_its_wait_with_the_next_attempt(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    await queue.enqueue(call(), 10)
    (delivery,) = await take_all(queue, "fn")
    await queue.retry(delivery, wait=0.5)
    assert await take_all(queue, "fn") == []  # not due yet
    stats = (await queue.statistics())["fn"]
    assert (stats.depth, stats.in_flight, stats.retries) == (1, 0, 1)
    async with asyncio.timeout(HANG):
        while not (again := await take_all(queue, "fn")):
            await queue.wait_for_calls(0.1)
    assert [d.attempt for d in again] == [2]
    assert again[0].call == delivery.call


async def test_a_call_whose_consumer_died_is_delivered_again_after_its_lease(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(lease=0.5)
    await queue.enqueue(call(), 10)
    (first,) = await queue.take("dead-consumer", "fn", 10)
    async with asyncio.timeout(HANG):
        while not (again := await queue.take("c2", "fn", 10)):
            await queue.wait_for_calls(0.1)
    assert again[0].call.call_id == first.call.call_id
    assert again[0].attempt == first.attempt  # the first never reached an end
    await queue.ack(again[0])
    await queue.ack(first)  # the dead consumer's late ack is harmless
    assert (await queue.statistics()).get("fn") is None or (
        (await queue.statistics())["fn"].depth == 0
    )


async def test_extend_keeps_a_long_call_leased(make_queue: QueueFactory) -> None:
    queue = make_queue(lease=0.6)
    await queue.enqueue(call(), 10)
    (delivery,) = await take_all(queue, "fn")
    for _ in range(4):  # 1.2 s in all, twice the lease
        await asyncio.sleep(0.3)
        await queue.extend(delivery)
        assert await queue.take("c2", "fn", 10) == []


async def test_dead_letters_are_listed_and_replayed_as_new_calls(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    for n in range(3):
        await queue.enqueue(call("a", n), 10)
    await queue.enqueue(call("b", 9), 10)
    for function in ("a", "b"):
        for delivery in await take_all(queue, function):
            await queue.dead_letter(delivery, f"status 503 after {delivery.attempt} attempts")
    letters = await queue.dead_letters()
    assert sorted(d.call.call_id for d in letters) == [
        "call-a-0",
        "call-a-1",
        "call-a-2",
        "call-b-9",
    ]
    assert all(d.reason == "status 503 after 1 attempts" and d.attempts == 1 for d in letters)
    only_a = await queue.dead_letters("a")
    assert {d.call.function for d in only_a} == {"a"}
    stats = await queue.statistics()
    assert (stats["a"].dead_letters, stats["a"].depth, stats["a"].in_flight) == (3, 0, 0)

    assert await queue.replay(ids=[only_a[0].id]) == 1
    assert await queue.replay("a") == 2
    assert await queue.dead_letters("a") == []
    replayed = await take_all(queue, "a")
    assert sorted(d.call.call_id for d in replayed) == ["call-a-0", "call-a-1", "call-a-2"]
    assert all(d.attempt == 1 for d in replayed)
    assert await queue.replay() == 1  # b's
    assert [d.call.call_id for d in await take_all(queue, "b")] == ["call-b-9"]


async def test_statistics_show_depth_in_flight_and_the_oldest_wait(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    old = call(n=1)
    old = QueuedCall(old.function, old.request, None, time.time() - 5)
    await queue.enqueue(old, 10)
    await queue.enqueue(call(n=2), 10)
    await queue.enqueue(call(n=3), 10)
    await queue.take("c1", "fn", 1)
    stats = (await queue.statistics())["fn"]
    assert (stats.function, stats.depth, stats.in_flight) == ("fn", 2, 1)
    assert 0 <= stats.oldest_age < 60  # the oldest still waiting (the 5 s one was taken)


async def test_purge_drops_a_removed_functions_calls(make_queue: QueueFactory) -> None:
    queue = make_queue()
    for n in range(3):
        await queue.enqueue(call("gone", n), 10)
    (taken,) = await queue.take("c1", "gone", 1)
    await queue.dead_letter(taken, "x")
    await queue.enqueue(call("kept", 0), 10)
    assert await queue.purge("gone") == 3
    assert await take_all(queue, "gone") == []
    assert await queue.dead_letters("gone") == []
    assert [d.call.function for d in await take_all(queue, "kept")] == ["kept"]


async def test_calls_survive_the_queue_being_closed_and_opened_again(
    make_queue: QueueFactory,
) -> None:
    """What `up` killed and restarted sees: every enqueued call is there; one that was taken
    and never ended is delivered again (at once for the embedded queue, whose one user is
    gone; after its lease for Redis)."""
    first = make_queue(lease=0.5)
    for n in range(5):
        await first.enqueue(call(n=n), 10)
    await first.take("c1", "fn", 2)
    await first.close()
    second = make_queue(lease=0.5)
    seen: set[str] = set()
    async with asyncio.timeout(HANG):
        while len(seen) < 5:
            for delivery in await second.take("c2", "fn", 10):
                seen.add(delivery.call.call_id)
                await second.ack(delivery)
            await second.wait_for_calls(0.1)
    assert seen == {f"call-fn-{n}" for n in range(5)}


async def test_wait_for_calls_wakes_on_an_enqueue(make_queue: QueueFactory) -> None:
    queue = make_queue()
    consumer_side = make_queue()  # another connection, as a consumer in its own task has
    await consumer_side.wait_for_calls(0.01)  # a first wait may only set up the listener
    waiting = asyncio.create_task(consumer_side.wait_for_calls(600.0))
    await asyncio.sleep(0.1)
    await queue.enqueue(call(), 10)
    async with asyncio.timeout(HANG):  # long before its 600 s: only the enqueue can wake it
        await waiting
    assert len(await take_all(consumer_side, "fn")) == 1


async def test_many_concurrent_enqueues_lose_nothing(make_queue: QueueFactory) -> None:
    queue = make_queue()
    await asyncio.gather(*(queue.enqueue(call(n=n), 10_000) for n in range(300)))
    seen: list[str] = []
    while batch := await queue.take("c1", "fn", 64):
        seen.extend(d.call.call_id for d in batch)
        await asyncio.gather(*(queue.ack(d) for d in batch))
    assert sorted(seen) == sorted(f"call-fn-{n}" for n in range(300))


async def test_an_unreachable_queue_raises_queue_unavailable_naming_it(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    queue = open_queue(url, tmp_path, timeout=1.0)
    try:
        with pytest.raises(QueueUnavailable) as failed:
            await queue.enqueue(call(), 10)
        assert failed.value.status == 503 and "127.0.0.1" in failed.value.message
    finally:
        await queue.close()


def test_a_call_encodes_and_decodes_to_itself() -> None:
    sent = call(body=b"\x00\xff" * 10, callback="https://example.test/cb")
    assert QueuedCall.decode(sent.encode()) == sent
    with pytest.raises(ValueError, match="not a queued call"):
        QueuedCall.decode(b"\x93garbage")
