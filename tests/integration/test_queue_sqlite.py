"""What only the embedded queue (SQLite, in the data dir) does, beyond the contract of
test_queue_contract.py: it survives a SIGKILL of its process, hands the calls that process had
taken out again at once, keeps the leases of the queues its process still has open, keeps its
file private, and fails as QueueUnavailable naming the file."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from faasd_py.protocol import Request
from faasd_py.queue import QueuedCall, QueueFull, QueueUnavailable, open_queue
from faasd_py.queue._sqlite import SqliteCallQueue

HANG = 30.0  # deadlines only catch hangs

QueueFactory = Callable[..., SqliteCallQueue]


@pytest.fixture
async def make_queue(tmp_path: Path) -> AsyncIterator[QueueFactory]:
    opened: list[SqliteCallQueue] = []

    def make(lease: float = 60.0, timeout: float = 5.0) -> SqliteCallQueue:
        queue = open_queue(None, tmp_path, lease=lease, timeout=timeout)
        assert isinstance(queue, SqliteCallQueue)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        await queue.close()


def call(n: int, function: str = "fn") -> QueuedCall:
    request = Request(f"call-{n}", "POST", "/", "", [], f"body {n}".encode())
    return QueuedCall(function, request, None, time.time())


KILLED_MID_WORK = """
import asyncio, sys, time
from pathlib import Path
from faasd_py.protocol import Request
from faasd_py.queue import QueuedCall, open_queue

async def main() -> None:
    queue = open_queue(None, Path(sys.argv[1]), lease=3600.0)
    for n in range(20):
        request = Request(f"call-{n}", "POST", "/", "", [], b"x")
        await queue.enqueue(QueuedCall("fn", request, None, time.time()), 100)
    taken = await queue.take("consumer-of-the-dead", "fn", 5)
    assert len(taken) == 5
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_calls_survive_a_sigkill_and_those_it_had_taken_are_due_at_once(
    tmp_path: Path, make_queue: QueueFactory
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_MID_WORK, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(HANG):
            assert await child.stdout.readline() == b"ready\n"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    queue = make_queue(lease=3600.0)  # the dead one's leases would outlive the test
    taken = await queue.take("c1", "fn", 100)
    assert sorted(d.call.call_id for d in taken) == sorted(f"call-{n}" for n in range(20))
    assert all(d.attempt == 1 for d in taken)


async def test_opening_a_queue_keeps_the_leases_of_queues_still_open(
    make_queue: QueueFactory,
) -> None:
    consumer_side = make_queue()
    await consumer_side.enqueue(call(1), 10)
    (taken,) = await consumer_side.take("c1", "fn", 10)
    gateway_side = make_queue()  # opened later in the same process, as `up` may
    await gateway_side.enqueue(call(2), 10)
    assert [d.call.call_id for d in await gateway_side.take("c2", "fn", 10)] == ["call-2"]
    stats = (await gateway_side.statistics())["fn"]
    assert (stats.depth, stats.in_flight) == (0, 2)
    await consumer_side.ack(taken)


async def test_the_calls_a_closed_queue_had_taken_are_due_at_once_when_opened_again(
    make_queue: QueueFactory,
) -> None:
    first = make_queue(lease=3600.0)
    for n in range(3):
        await first.enqueue(call(n), 10)
    assert len(await first.take("c1", "fn", 2)) == 2
    await first.close()
    second = make_queue(lease=3600.0)
    assert len(await second.take("c2", "fn", 10)) == 3


async def test_wait_for_calls_returns_when_a_retry_becomes_due(make_queue: QueueFactory) -> None:
    queue = make_queue()
    await queue.enqueue(call(1), 10)
    (delivery,) = await queue.take("c1", "fn", 1)
    await queue.retry(delivery, wait=0.3)
    await queue.wait_for_calls(0.0)  # what the retry itself woke
    assert await queue.take("c1", "fn", 1) == []
    async with asyncio.timeout(HANG):  # well before its 600 s
        await queue.wait_for_calls(600.0)
    (again,) = await queue.take("c1", "fn", 1)
    assert again.attempt == 2


async def test_a_due_call_left_untaken_does_not_make_wait_for_calls_return_at_once(
    make_queue: QueueFactory,
) -> None:
    """A consumer running all it may waits with calls due: waiting must not turn into a spin."""
    queue = make_queue()
    await queue.enqueue(call(1), 10)
    await queue.wait_for_calls(0.0)  # what the enqueue woke
    started = time.monotonic()
    await queue.wait_for_calls(0.5)
    assert time.monotonic() - started >= 0.4


async def test_the_file_and_its_side_files_are_private(
    tmp_path: Path, make_queue: QueueFactory
) -> None:
    queue = make_queue()
    await queue.enqueue(call(1), 10)
    files = list(tmp_path.glob("queue.sqlite3*"))
    assert tmp_path / "queue.sqlite3" in files
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}


async def test_a_call_that_does_not_decode_is_skipped_and_left_for_another_version(
    tmp_path: Path, make_queue: QueueFactory
) -> None:
    queue = make_queue()
    await queue.enqueue(call(1), 10)
    db = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
    try:  # as a later faasd-py, its encoding version 2, might have written it
        db.execute(
            "INSERT INTO calls (function, call, attempt, due, enqueued_at) "
            "VALUES ('fn', x'9502', 1, 0, 0)"
        )
    finally:
        db.close()
    assert [d.call.call_id for d in await queue.take("c1", "fn", 10)] == ["call-1"]
    # Still in the queue: leased, so that it does not come back at every take.
    assert (await queue.statistics())["fn"].in_flight == 2


async def test_an_unusable_file_raises_queue_unavailable_naming_it(tmp_path: Path) -> None:
    (tmp_path / "queue.sqlite3").mkdir()
    queue = open_queue(None, tmp_path, timeout=1.0)
    try:
        with pytest.raises(QueueUnavailable, match=r"sqlite://.*queue\.sqlite3") as failed:
            await queue.enqueue(call(1), 10)
        assert failed.value.status == 503
    finally:
        await queue.close()


async def test_a_file_locked_by_another_process_fails_after_the_timeout(
    tmp_path: Path, make_queue: QueueFactory
) -> None:
    queue = make_queue(timeout=0.5)
    await queue.enqueue(call(1), 10)
    other = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the timeout
    try:
        async with asyncio.timeout(HANG):
            with pytest.raises(QueueUnavailable, match=r"sqlite://.*queue\.sqlite3"):
                await queue.enqueue(call(2), 10)
        other.execute("ROLLBACK")
        assert [d.call.call_id for d in await queue.take("c1", "fn", 10)] == ["call-1"]
    finally:
        other.close()


async def test_the_depth_limit_holds_across_a_reopen_and_every_way_out(tmp_path: Path) -> None:
    """The depth an enqueue checks is kept per function (not counted): it must stay exact
    through a reopen of the file, acks, dead letters, replays and purges."""
    first = SqliteCallQueue(tmp_path / "queue.sqlite3", lease=60.0, timeout=5.0)
    for n in range(3):
        await first.enqueue(call(n), max_depth=3)
    await first.close()
    queue = SqliteCallQueue(tmp_path / "queue.sqlite3", lease=60.0, timeout=5.0)
    try:
        with pytest.raises(QueueFull):
            await queue.enqueue(call(3), max_depth=3)
        acked, dead, _ = await queue.take("c", "fn", 10)
        await queue.ack(acked)
        await queue.dead_letter(dead, "gone")
        await queue.enqueue(call(4), max_depth=3)
        await queue.enqueue(call(5), max_depth=3)  # 3 again: the ack and the dead letter left
        with pytest.raises(QueueFull):
            await queue.enqueue(call(6), max_depth=3)
        assert await queue.replay("fn") == 1
        with pytest.raises(QueueFull):  # the replayed one counts again
            await queue.enqueue(call(7), max_depth=10 - 6)
        assert await queue.purge("fn") == 4
        for n in range(8, 11):
            await queue.enqueue(call(n), max_depth=3)
        await queue.enqueue(call(0, function="other"), max_depth=1)
    finally:
        await queue.close()


# --- in place on the loop, one transaction per round -------------------------------------------


async def test_enqueues_of_one_round_share_a_commit_and_the_depth_limit_still_holds(
    make_queue: QueueFactory,
) -> None:
    """Fifty enqueues at once run in one round's transaction: the depth check of each sees
    the calls the others of its round inserted before it."""
    queue = make_queue()
    outcomes = await asyncio.gather(
        *(queue.enqueue(call(n), max_depth=20) for n in range(50)), return_exceptions=True
    )
    assert outcomes[:20] == [None] * 20
    assert all(isinstance(o, QueueFull) for o in outcomes[20:])
    assert (await queue.statistics())["fn"].depth == 20
    taken = await queue.take("c", "fn", 50)
    assert [d.call.call_id for d in taken] == [f"call-{n}" for n in range(20)]


async def test_a_lock_held_by_another_connection_is_waited_for_without_blocking_the_loop(
    tmp_path: Path, make_queue: QueueFactory
) -> None:
    queue = make_queue(timeout=HANG)
    await queue.enqueue(call(1), 10)
    other = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer, for a while
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        enqueue = asyncio.create_task(queue.enqueue(call(2), 10))
        await asyncio.sleep(0.3)
        assert not enqueue.done()  # waiting for the lock...
        assert ticks >= 5  # ...while the loop goes on
        other.execute("COMMIT")
        await asyncio.wait_for(enqueue, HANG)
    finally:
        ticker.cancel()
        other.close()
    assert [d.call.call_id for d in await queue.take("c", "fn", 10)] == ["call-1", "call-2"]


async def test_a_round_that_fails_fails_each_of_its_operations_and_keeps_none(
    tmp_path: Path, make_queue: QueueFactory
) -> None:
    """A batch commits whole or not at all: an error in one operation of a round (here a
    statement the file refuses) fails all of them, and none of their writes stays."""
    queue = make_queue()
    await queue.enqueue(call(0), 10)
    file = queue._file

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO no_such_table VALUES (1)")

    outcomes = await asyncio.gather(
        queue.enqueue(call(1), 10),
        file.run(broken),
        queue.enqueue(call(2), 10),
        return_exceptions=True,
    )
    assert all(isinstance(o, QueueUnavailable) for o in outcomes), outcomes
    assert "no such table" in str(outcomes[1])
    assert (await queue.statistics())["fn"].depth == 1
    await queue.enqueue(call(3), 10)  # the next round works
    assert [d.call.call_id for d in await queue.take("c", "fn", 10)] == ["call-0", "call-3"]


async def test_a_closed_queue_commits_its_last_round_first(tmp_path: Path) -> None:
    queue = SqliteCallQueue(tmp_path / "queue.sqlite3", lease=60.0, timeout=5.0)
    await queue.enqueue(call(0), 100)  # the file is open
    pending = [asyncio.create_task(queue.enqueue(call(n), 100)) for n in range(1, 10)]
    await asyncio.sleep(0)  # each enqueue has joined the round's batch, not yet committed
    assert len(queue._file._pending) == 9
    await queue.close()
    assert await asyncio.gather(*pending) == [None] * 9
    reopened = SqliteCallQueue(tmp_path / "queue.sqlite3", lease=60.0, timeout=5.0)
    try:
        assert (await reopened.statistics())["fn"].depth == 10
    finally:
        await reopened.close()


async def test_the_wal_stays_small_while_calls_keep_coming(tmp_path: Path) -> None:
    """Checkpoints run on the file's thread while the loop keeps writing: they must still let
    the WAL start again (a PASSIVE checkpoint alone never did, and the WAL grew by hundreds
    of MB a minute under load)."""
    queue = SqliteCallQueue(tmp_path / "queue.sqlite3", lease=60.0, timeout=5.0)
    wal = tmp_path / "queue.sqlite3-wal"
    largest = 0
    try:
        for round_ in range(1500):
            await asyncio.gather(*(queue.enqueue(call(n), 100) for n in range(4)))
            taken = await queue.take("c", "fn", 4)
            await asyncio.gather(*(queue.ack(d) for d in taken))
            if round_ % 50 == 0:
                await asyncio.sleep(0.01)  # room for the thread's checkpoint to end
                largest = max(largest, wal.stat().st_size)
        assert (await queue.statistics()).get("fn") is None
    finally:
        await queue.close()
    # Without checkpoints that let it start again it grows past 60 MB here; with them, about
    # 1-7 MB (more on a busy machine, where checkpoints take longer): the bound has room.
    assert largest < 24 * 1024 * 1024, f"the WAL grew to {largest:,} bytes"
