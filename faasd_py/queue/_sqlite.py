"""The embedded queue of async calls: one SQLite file in the data dir (queue.sqlite3), for `up`
with no services.

Tables:

- calls: one row per call not yet done: `function`, `call` (QueuedCall.encode()), `attempt`,
  `due`, `enqueued_at`, and its lease: `lease` (a token new at every take; NULL when nobody
  holds the call), `consumer` (who took it) and `holder` (which SqliteCallQueue took it). `due`
  is when the call may next be taken: for a waiting call when it becomes due (now, or after a
  retry's wait), for a leased one when its lease runs out. So "due calls of a function" is one
  range of the index (function, due), whether they wait or their consumer died; and a call is
  in flight while it is leased and not yet due.
- dead_letters: calls that used up their attempts: `function`, `call`, `attempts`, `reason`,
  `failed_at`.
- retries: per function, how many retries were scheduled (a counter, for statistics).

Why each operation is atomic: every change is one statement, or a few in one write transaction
(BEGIN IMMEDIATE: no other connection writes between its reads and its writes; the operations
of every call share their round's transaction, see below). enqueue counts
the function's calls and inserts in one; take leases the due calls in one UPDATE; ack, extend,
retry and dead_letter act only on a row whose `lease` is still the delivery's (so a consumer
whose lease ran out, and whose call another took, changes nothing), retry moving the row and
counting the retry in one transaction, dead_letter moving it to dead_letters in one; replay
and purge move or drop rows in one. A commit is in the WAL before the call returns
(faasd_py.sqlite_thread): it survives a kill of `up`.

Where each operation runs: those of every call (enqueue, take, extend, ack, retry, dead_letter,
the next due time) are a lookup in an index and a row or two written, and run in place on the
event loop (faasd_py.sqlite_thread.SqliteOnLoop: a hand-off to a thread cost more than each of
them, in CPU and above all in latency), those of one round of the loop in one transaction;
those that scan or move many rows (statistics, dead_letters, replay, purge, the recount at
opening) run on the file's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from faasd_py.queue._base import (
    DeadLetter,
    Delivery,
    QueuedCall,
    QueueFull,
    QueueStatistics,
    QueueUnavailable,
)
from faasd_py.sqlite_thread import SqliteOnLoop, SqliteThread, immediate

__all__ = ["SqliteCallQueue"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    function TEXT NOT NULL,
    call BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    due REAL NOT NULL,
    enqueued_at REAL NOT NULL,
    lease TEXT,
    consumer TEXT,
    holder TEXT
);
CREATE INDEX IF NOT EXISTS calls_by_function ON calls (function, due);
CREATE INDEX IF NOT EXISTS calls_by_due ON calls (due);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    function TEXT NOT NULL,
    call BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_function ON dead_letters (function, id);
CREATE TABLE IF NOT EXISTS retries (
    function TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
-- Calls per function, kept by triggers in the same transaction as every insert and delete:
-- the depth check of an enqueue reads one row instead of counting a backlog (a count costs
-- ~0.3 ms at 10,000 calls and grows with them, on the queue's one thread).
CREATE TABLE IF NOT EXISTS depths (
    function TEXT PRIMARY KEY,
    calls INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS depth_up AFTER INSERT ON calls BEGIN
    INSERT INTO depths (function, calls) VALUES (NEW.function, 1)
    ON CONFLICT (function) DO UPDATE SET calls = calls + 1;
END;
CREATE TRIGGER IF NOT EXISTS depth_down AFTER DELETE ON calls BEGIN
    UPDATE depths SET calls = calls - 1 WHERE function = OLD.function;
END;
"""

# Set a row back to waiting, due at `?`.
_RELEASE = "lease = NULL, consumer = NULL, holder = NULL, due = ?"

# The open queues of each file in this process, by the file's resolved path: an enqueue through
# one wakes the waiters of all (the gateway enqueues through one, consumers may wait on
# another), and a queue opening the file keeps their leases. Read from the queues' threads too.
_open: dict[Path, weakref.WeakSet[SqliteCallQueue]] = {}
_open_lock = threading.Lock()


def _queues(key: Path) -> list[SqliteCallQueue]:
    with _open_lock:
        return list(_open.get(key, ()))


class SqliteCallQueue:
    """A CallQueue in one SQLite file. Its methods are meant for one event loop (the one of the
    process's queues of this file)."""

    def __init__(self, path: Path, *, lease: float, timeout: float) -> None:
        self._lease = lease
        self._token = secrets.token_hex(8)  # `holder` of the calls this queue leases
        self._key = path.resolve()
        self._woken = asyncio.Event()  # set by every enqueue, retry and replay of the file
        self._file = SqliteOnLoop(
            SqliteThread(
                path,
                timeout=timeout,
                schema=_SCHEMA,
                unavailable=QueueUnavailable,
                thread_name="faasd-queue",
                setup=self._release_abandoned,
            )
        )
        with _open_lock:
            _open.setdefault(self._key, weakref.WeakSet()).add(self)

    @property
    def name(self) -> str:
        return self._file.name

    def _release_abandoned(self, db: sqlite3.Connection) -> None:
        """On opening: the calls leased by queues not open now are due at once (their
        consumers are gone with them); the depths are counted afresh (a file from before the
        depths table has none)."""
        with immediate(db):
            db.execute("DELETE FROM depths")
            db.execute(
                "INSERT INTO depths (function, calls) "
                "SELECT function, count(*) FROM calls GROUP BY function"
            )
        held = json.dumps([queue._token for queue in _queues(self._key)])
        released = db.execute(
            f"UPDATE calls SET {_RELEASE} WHERE lease IS NOT NULL "
            "AND holder NOT IN (SELECT value FROM json_each(?))",
            (time.time(), held),
        ).rowcount
        if released:
            logger.info(
                "%s: %d calls taken before and never ended are due again", self.name, released
            )

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A short operation: in place, on the loop."""
        return await self._file.run(fn)

    async def _run_long(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A scan or a bulk move: on the file's thread."""
        return await self._file.run_on_thread(fn)

    def _wake(self) -> None:
        for queue in _queues(self._key):
            queue._woken.set()

    async def enqueue(self, call: QueuedCall, max_depth: int) -> None:
        data = call.encode()

        def insert(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT calls FROM depths WHERE function = ?", (call.function,)
            ).fetchone()
            if row is not None and row[0] >= max_depth:
                return False
            db.execute(
                "INSERT INTO calls (function, call, attempt, due, enqueued_at) "
                "VALUES (?, ?, 1, ?, ?)",
                (call.function, data, time.time(), call.enqueued_at),
            )
            return True

        if not await self._run(insert):
            raise QueueFull(call.function, max_depth)
        self._wake()

    async def take(self, consumer: str, function: str, count: int) -> list[Delivery]:
        if count < 1:
            return []  # (a LIMIT below 0 is no limit)
        lease = secrets.token_hex(8)

        def lease_due(db: sqlite3.Connection) -> list[tuple[int, bytes, int]]:
            now = time.time()
            return db.execute(
                "UPDATE calls SET lease = ?, consumer = ?, holder = ?, due = ? WHERE id IN "
                "(SELECT id FROM calls WHERE function = ? AND due <= ? ORDER BY due LIMIT ?) "
                "RETURNING id, call, attempt",
                (lease, consumer, self._token, now + self._lease, function, now, count),
            ).fetchall()

        deliveries = []
        for row_id, data, attempt in sorted(await self._run(lease_due)):
            call = self._decode(data, f"call {row_id}")
            if call is not None:
                deliveries.append(Delivery(f"{row_id}:{lease}", call, int(attempt)))
        return deliveries

    async def wait_for_calls(self, at_most: float) -> None:
        if not self._woken.is_set():
            # A delayed call (a retry) or a leased one (its consumer may die) becomes due
            # without anyone waking us: by then at the latest. Only times still ahead count: a
            # call due now that the consumer does not take (it runs as many as it may) must
            # not make this return at once, again and again.
            def next_due(db: sqlite3.Connection) -> float | None:
                (due,) = db.execute(
                    "SELECT min(due) FROM calls WHERE due > ?", (time.time(),)
                ).fetchone()
                return None if due is None else float(due)

            due = await self._run(next_due)
            wait = at_most if due is None else min(at_most, max(0.0, due - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._woken.wait()
        self._woken.clear()

    async def extend(self, delivery: Delivery) -> None:
        row_id, lease = _handle(delivery)
        await self._run(
            lambda db: db.execute(
                "UPDATE calls SET due = ? WHERE id = ? AND lease = ?",
                (time.time() + self._lease, row_id, lease),
            )
        )

    async def ack(self, delivery: Delivery) -> None:
        row_id, lease = _handle(delivery)
        await self._run(
            lambda db: db.execute("DELETE FROM calls WHERE id = ? AND lease = ?", (row_id, lease))
        )

    async def retry(self, delivery: Delivery, wait: float) -> None:
        row_id, lease = _handle(delivery)

        def put_back(db: sqlite3.Connection) -> None:
            row = db.execute(
                f"UPDATE calls SET attempt = attempt + 1, {_RELEASE} "
                "WHERE id = ? AND lease = ? RETURNING function",
                (time.time() + wait, row_id, lease),
            ).fetchone()
            if row is not None:
                db.execute(
                    "INSERT INTO retries (function, count) VALUES (?, 1) "
                    "ON CONFLICT(function) DO UPDATE SET count = count + 1",
                    (row[0],),
                )

        await self._run(put_back)
        self._wake()  # waiters learn the new due time

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        row_id, lease = _handle(delivery)

        def move(db: sqlite3.Connection) -> None:
            row = db.execute(
                "DELETE FROM calls WHERE id = ? AND lease = ? RETURNING function, call, attempt",
                (row_id, lease),
            ).fetchone()
            if row is not None:
                db.execute(
                    "INSERT INTO dead_letters (function, call, attempts, reason, failed_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (*row, reason, time.time()),
                )

        await self._run(move)

    async def dead_letters(self, function: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where = "" if function is None else "WHERE function = ?"
        args = () if function is None else (function,)
        rows = await self._run_long(
            lambda db: db.execute(
                f"SELECT id, call, attempts, reason, failed_at FROM dead_letters {where} "
                "ORDER BY id LIMIT ?",
                (*args, max(limit, 0)),
            ).fetchall()
        )
        letters = []
        for row_id, data, attempts, reason, failed_at in rows:
            call = self._decode(data, f"dead letter {row_id}")
            if call is not None:
                letters.append(
                    DeadLetter(str(row_id), call, int(attempts), str(reason), float(failed_at))
                )
        return letters

    async def replay(self, function: str | None = None, ids: Sequence[str] = ()) -> int:
        args: tuple[str, ...]
        if ids:
            numbers = [int(i) for i in ids if i.isascii() and i.isdigit()]  # others name none
            where, args = "id IN (SELECT value FROM json_each(?))", (json.dumps(numbers),)
        elif function is not None:
            where, args = "function = ?", (function,)
        else:
            where, args = "1", ()

        def move(db: sqlite3.Connection) -> int:
            now = time.time()
            with immediate(db):
                db.execute(
                    "INSERT INTO calls (function, call, attempt, due, enqueued_at) "
                    f"SELECT function, call, 1, ?, ? FROM dead_letters WHERE {where} ORDER BY id",
                    (now, now, *args),
                )
                return db.execute(f"DELETE FROM dead_letters WHERE {where}", args).rowcount

        replayed = await self._run_long(move)
        if replayed:
            self._wake()
        return replayed

    async def statistics(self) -> dict[str, QueueStatistics]:
        def read(
            db: sqlite3.Connection,
        ) -> tuple[float, list[tuple[str, int, int, float | None, int, int]]]:
            # One statement: one snapshot of the three tables.
            now = time.time()
            rows = db.execute(
                "SELECT function, sum(waiting), sum(taken), min(waiting_since), sum(retries), "
                "sum(dead) FROM ("
                "  SELECT function, lease IS NULL OR due <= :now AS waiting,"
                "    lease IS NOT NULL AND due > :now AS taken,"
                "    CASE WHEN lease IS NULL OR due <= :now THEN enqueued_at END AS waiting_since,"
                "    0 AS retries, 0 AS dead FROM calls"
                "  UNION ALL SELECT function, 0, 0, NULL, count, 0 FROM retries"
                "  UNION ALL SELECT function, 0, 0, NULL, 0, 1 FROM dead_letters"
                ") GROUP BY function",
                {"now": now},
            ).fetchall()
            return now, rows

        now, rows = await self._run_long(read)
        return {
            function: QueueStatistics(
                function,
                int(depth),
                int(taken),
                0.0 if since is None else max(0.0, now - float(since)),
                int(retries),
                int(dead),
            )
            for function, depth, taken, since, retries, dead in rows
        }

    async def purge(self, function: str) -> int:
        def drop(db: sqlite3.Connection) -> int:
            with immediate(db):
                calls = db.execute("DELETE FROM calls WHERE function = ?", (function,)).rowcount
                dead = db.execute(
                    "DELETE FROM dead_letters WHERE function = ?", (function,)
                ).rowcount
                db.execute("DELETE FROM retries WHERE function = ?", (function,))
            return int(calls + dead)

        return await self._run_long(drop)

    async def close(self) -> None:
        with _open_lock:
            queues = _open.get(self._key)
            if queues is not None:
                queues.discard(self)
                if not queues:
                    del _open[self._key]
        await self._file.close()

    def _decode(self, data: bytes, what: str) -> QueuedCall | None:
        """The call, or None (logged) for bytes no call of this version wrote: left where
        they are, for a version that reads them."""
        try:
            return QueuedCall.decode(bytes(data))
        except ValueError as exc:
            logger.error("%s: %s skipped: %s", self.name, what, exc)
            return None


def _handle(delivery: Delivery) -> tuple[int, str]:
    """The row and lease a Delivery's id names (see take)."""
    row_id, _, lease = delivery.id.partition(":")
    return int(row_id), lease
