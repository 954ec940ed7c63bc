"""What the Redis Streams queue adds to the contract (test_queue_contract.py): a consumer asleep
in wait_for_calls hears calls and due retries from other processes, leases belong to the
consumer that holds them, a Redis restart loses no acknowledged call (AOF), and a Redis that is
down or silent is a QueueUnavailable that names it without its password."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis

from faasd_py.protocol import Request
from faasd_py.queue import CallQueue, QueuedCall, QueueUnavailable, open_queue
from tests.integration._redis import RedisServer, free_port

HANG = 30.0  # deadlines only catch hangs
ASLEEP = 600.0  # a wait that only a ring, or a due retry, ends within HANG


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, aof=True)
    server.start()
    yield server
    server.stop()


QueueFactory = Callable[..., CallQueue]


@pytest.fixture
async def make_queue(server: RedisServer, tmp_path: Path) -> AsyncIterator[QueueFactory]:
    """Queues on `server`, each with connections of its own, as separate processes have."""
    opened: list[CallQueue] = []

    def make(lease: float = 60.0, timeout: float = 5.0, url: str | None = None) -> CallQueue:
        queue = open_queue(url or server.url, tmp_path, lease=lease, timeout=timeout)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


def call(function: str = "fn", n: int = 0) -> QueuedCall:
    request = Request(f"call-{function}-{n}", "POST", "/", "", [], f"body {n}".encode())
    return QueuedCall(function, request, None, time.time())


async def test_a_sleeping_consumer_wakes_for_a_call_another_process_enqueued(
    make_queue: QueueFactory,
) -> None:
    gateway, consumer = make_queue(), make_queue()
    await consumer.wait_for_calls(0)  # the first wait subscribes, and returns at once
    assert await consumer.take("c1", "fn", 10) == []
    sleeping = asyncio.create_task(consumer.wait_for_calls(ASLEEP))
    await asyncio.sleep(0.2)
    assert not sleeping.done()  # nothing rang
    await gateway.enqueue(call(), 10)
    async with asyncio.timeout(HANG):
        await sleeping
    assert [d.call.call_id for d in await consumer.take("c1", "fn", 10)] == ["call-fn-0"]


async def test_a_sleeping_consumer_wakes_when_a_retry_falls_due(make_queue: QueueFactory) -> None:
    queue = make_queue()
    await queue.enqueue(call(), 10)
    (delivery,) = await queue.take("c1", "fn", 10)
    await queue.retry(delivery, wait=0.5)
    await queue.wait_for_calls(0)  # subscribes (and may return early for the retry's ring)
    async with asyncio.timeout(HANG):
        while not (again := await queue.take("c1", "fn", 10)):
            await queue.wait_for_calls(ASLEEP)
    assert [(d.call.call_id, d.attempt) for d in again] == [("call-fn-0", 2)]


async def test_tasks_waiting_together_all_wake(make_queue: QueueFactory) -> None:
    gateway, consumer = make_queue(), make_queue()
    await consumer.wait_for_calls(0)
    waiting = [asyncio.create_task(consumer.wait_for_calls(ASLEEP)) for _ in range(3)]
    await asyncio.sleep(0.2)
    await gateway.enqueue(call(), 10)
    async with asyncio.timeout(HANG):
        await asyncio.gather(*waiting)


async def test_a_consumer_whose_lease_was_taken_over_cannot_end_the_call(
    make_queue: QueueFactory,
) -> None:
    slow, other = make_queue(lease=0.3), make_queue(lease=0.3)
    await slow.enqueue(call(), 10)
    (late,) = await slow.take("slow", "fn", 10)
    async with asyncio.timeout(HANG):
        while not (taken := await other.take("other", "fn", 10)):
            await other.wait_for_calls(0.1)
    # The slow consumer wakes up: its extend, retry, dead letter and ack change nothing.
    await slow.extend(late)
    await slow.retry(late, wait=0)
    await slow.dead_letter(late, "status 503 after 1 attempts")
    await slow.ack(late)
    stats = (await other.statistics())["fn"]
    assert (stats.depth, stats.in_flight, stats.retries, stats.dead_letters) == (0, 1, 0, 0)
    await other.ack(taken[0])
    assert "fn" not in await other.statistics()


async def test_calls_survive_a_restart_of_redis(
    make_queue: QueueFactory, server: RedisServer
) -> None:
    queue = make_queue()
    for n in range(3):
        await queue.enqueue(call(n=n), 10)
    (taken,) = await queue.take("c1", "fn", 1)
    await queue.retry(taken, wait=0)
    server.stop()  # SIGKILL: only what the append-only file holds comes back
    with pytest.raises(QueueUnavailable):
        await queue.take("c1", "fn", 10)
    server.start()
    async with asyncio.timeout(HANG):
        delivered = await queue.take("c1", "fn", 10)
    assert sorted((d.call.call_id, d.attempt) for d in delivered) == [
        ("call-fn-0", 2),
        ("call-fn-1", 1),
        ("call-fn-2", 1),
    ]


async def test_a_wait_while_redis_is_down_raises_and_the_next_one_works(
    make_queue: QueueFactory, server: RedisServer
) -> None:
    gateway, consumer = make_queue(), make_queue(timeout=1.0)
    await consumer.wait_for_calls(0)
    server.stop()
    with pytest.raises(QueueUnavailable):
        async with asyncio.timeout(HANG):
            await consumer.wait_for_calls(ASLEEP)
    server.start()
    await consumer.wait_for_calls(0)  # subscribes again
    sleeping = asyncio.create_task(consumer.wait_for_calls(ASLEEP))
    await asyncio.sleep(0.2)
    await gateway.enqueue(call(), 10)
    async with asyncio.timeout(HANG):
        await sleeping


async def test_a_redis_that_never_answers_is_unavailable_after_the_timeout(
    make_queue: QueueFactory,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def accept_and_ignore(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # and never answers

    silent = await asyncio.start_server(accept_and_ignore, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        queue = make_queue(timeout=0.5, url=f"redis://127.0.0.1:{port}/0")
        async with asyncio.timeout(HANG):
            with pytest.raises(QueueUnavailable) as failed:
                await queue.enqueue(call(), 10)
        assert f"127.0.0.1:{port}" in failed.value.message
    finally:
        silent.close()
        for writer in accepted:
            writer.close()


async def test_the_queue_is_named_without_its_password(make_queue: QueueFactory) -> None:
    queue = make_queue(url=f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout=1.0)
    assert "hunter2" not in queue.name and "127.0.0.1" in queue.name
    with pytest.raises(QueueUnavailable) as failed:
        await queue.enqueue(call(), 10)
    assert "hunter2" not in failed.value.message


async def test_a_purged_function_stays_gone_when_its_consumer_ends_a_call_late(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    for n in range(2):
        await queue.enqueue(call("gone", n), 10)
    first, second = await queue.take("c1", "gone", 10)
    assert await queue.purge("gone") == 2
    await queue.retry(first, wait=0)
    await queue.dead_letter(second, "function removed")
    assert await queue.take("c1", "gone", 10) == []
    assert await queue.dead_letters("gone") == []
    assert "gone" not in await queue.statistics()


async def test_dead_letters_list_oldest_first_across_functions_with_when_they_failed(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue()
    before = time.time()
    for function in ("b", "a", "b"):
        await queue.enqueue(call(function, len(await queue.dead_letters())), 10)
        (delivery,) = await queue.take("c1", function, 1)
        await queue.dead_letter(delivery, "status 500")
    letters = await queue.dead_letters()
    assert [d.call.call_id for d in letters] == ["call-b-0", "call-a-1", "call-b-2"]
    assert all(before - 60 < d.failed_at < time.time() + 60 for d in letters)
    assert [d.call.call_id for d in await queue.dead_letters(limit=2)] == ["call-b-0", "call-a-1"]
    assert await queue.replay(ids=["nonsense", "b:1-0", letters[1].id + "x"]) == 0
    assert await queue.replay("b", ids=[letters[1].id]) == 0  # a's letter, not b's
    assert await queue.replay(ids=[letters[1].id]) == 1


async def test_scripts_redis_forgot_are_loaded_again(
    make_queue: QueueFactory, server: RedisServer
) -> None:
    """Calls of one round go as one pipeline of EVALSHA: after SCRIPT FLUSH (or a restart),
    each script is loaded again and its calls sent again, each once."""
    queue = make_queue()
    await queue.enqueue(call(n=0), 10)
    admin = redis.Redis.from_url(server.url)
    try:
        admin.script_flush()
        await asyncio.gather(*(queue.enqueue(call(n=n), 10) for n in range(1, 4)))
        admin.script_flush()
        taken = await queue.take("c1", "fn", 10)
    finally:
        admin.close()
    assert sorted(d.call.call_id for d in taken) == [f"call-fn-{n}" for n in range(4)]


async def test_an_enqueue_rings_the_doorbell_only_when_no_call_was_waiting(
    make_queue: QueueFactory, server: RedisServer
) -> None:
    """Consumers sleep until a ring only after a take found fewer calls than it asked for:
    once a call waits, the next enqueues need not ring (each ring is a message every waiting
    consumer reads)."""
    queue = make_queue()
    listener = redis.Redis.from_url(server.url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe("faasd:queue:doorbell")

    def rings() -> int:
        """The rings that came within half a second (None also for a subscription's reply)."""
        deadline, count = time.monotonic() + 0.5, 0
        while (left := deadline - time.monotonic()) > 0:
            count += listener.get_message(timeout=left) is not None
        return count

    try:
        for n in range(3):
            await queue.enqueue(call(n=n), 10)
        assert rings() == 1
        taken = await queue.take("c1", "fn", 10)
        assert len(taken) == 3
        await queue.enqueue(call(n=3), 10)  # all leased, none waiting: it rings
        await queue.enqueue(call(n=4), 10)
        assert rings() == 1
    finally:
        listener.close()
