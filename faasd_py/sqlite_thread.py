"""One SQLite file used from asyncio: what the embedded store (storage/_sqlite.py) and the
embedded queue (queue/_sqlite.py) share.

`SqliteThread`: calls run on one thread of their own, so the event loop never waits on the disk,
and one at a time, so a transaction of this object never interleaves with another of its calls.
Other connections to the file (another object, another process) are kept apart by SQLite's own
locking (`immediate`). Each call is bounded by a timeout, and every failure of the file
(sqlite3.Error, OSError) or the timeout becomes the caller's own "unavailable" error, naming the
file.

`SqliteOnLoop`: short statements (an index lookup and a row or two written) run on the event
loop's own thread, everything else (scans, bulk moves, WAL checkpoints) on a `SqliteThread`.
Handing a call to a thread costs more than such a statement: measured on the queue's statements,
~25-35 us run in place against ~200 us through the thread on an idle loop, and 4-9 ms p50 on a
busy one, where the thread waits for the GIL at each hand-off. A commit in place only appends
to the WAL (synchronous=NORMAL writes to the page cache, no fsync); the fsyncs happen at
checkpoints, which run on the thread, so the loop never waits for the disk to sync. It can still
wait for a write() into the page cache when the kernel throttles a writer with too many dirty
pages: the price of not paying a thread hand-off per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from faasd_py.modes import private_sqlite

__all__ = ["SqliteOnLoop", "SqliteThread", "immediate"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteThread:
    """A connection to `path`, opened on first use: WAL, synchronous=NORMAL, `schema` applied,
    then `setup` run on it. `unavailable(name, cause)` makes the error every failure raises;
    `timeout_note`, if any, says in it where the timeout comes from ("up --storage-timeout")."""

    def __init__(
        self,
        path: Path,
        *,
        timeout: float,
        schema: str,
        unavailable: Callable[[str, str], Exception],
        thread_name: str,
        timeout_note: str | None = None,
        setup: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self._path = path
        # A call not done by then (the file locked by another process, a disk that hangs)
        # fails. SQLite gives up waiting for a lock a little sooner, so that a write that
        # waited for one fails for sure rather than landing after its caller gave up.
        self._timeout = timeout
        self._schema = schema
        self._unavailable = unavailable
        self._timeout_note = timeout_note
        self._setup = setup
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._db: sqlite3.Connection | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return f"sqlite://{self._path}"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def unavailable(self) -> Callable[[str, str], Exception]:
        return self._unavailable

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = connect(self._path, busy_timeout=self._timeout * 0.9, check_same_thread=False)
            try:
                db.executescript(self._schema)
                if self._setup is not None:
                    self._setup(db)
            except BaseException:
                db.close()  # opened again, whole, by the next call
                raise
            self._db = db
        return self._db

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the thread; the caller's error naming the file when it fails or
        takes longer than the timeout. (A write cut off so may still land: the caller learns
        only that its outcome is unknown.)"""

        def call() -> T:
            return fn(self._connect())

        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except TimeoutError:
            cause = f"no answer within {self._timeout:g}s"
            if self._timeout_note:
                cause += f" ({self._timeout_note})"
            raise self._unavailable(self.name, cause) from None
        except (sqlite3.Error, OSError) as exc:
            raise self._unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


class SqliteOnLoop:
    """A file whose short operations run in place, on the event loop (`run`), and whose long
    ones run on `thread` (`run_on_thread`), which it closes. The first call of either kind
    opens the file on the thread first (schema, `setup`: a scan at start is no work for the
    loop). Every `checkpoint_every` commits in place, the thread copies the WAL
    back into the file and empties it (`_checkpoint_wal`). Meant for one event loop.

    Group commit: the operations `run` is given while the loop goes round once (the requests
    and results that came in one poll) run together in one write transaction at the end of
    that round, so that each page they change is written to the WAL once per round rather
    than once per operation. A batch commits or fails whole: an error fails every operation
    of it, none of which took effect."""

    def __init__(self, thread: SqliteThread, *, checkpoint_every: int = 200) -> None:
        self._thread = thread
        self._path, self._timeout = thread.path, thread.timeout
        self._unavailable = thread.unavailable
        self._db: sqlite3.Connection | None = None
        # Operations waiting for this round's batch, and when the batch first found the file
        # locked by another connection (loop time), if it did.
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._locked_since: float | None = None
        self._checkpoint_every = checkpoint_every
        self._since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self._thread.name

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` here, on the loop, inside this round's write transaction: it must
        be short, and must not begin or commit a transaction itself. While another connection
        (the thread's bulk work) holds the write lock, the batch is tried again every
        millisecond or so, for up to the timeout, without blocking the loop."""
        if self._db is None:
            await self._open()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, done))
        if len(self._pending) == 1 and self._locked_since is None:
            loop.call_soon(self._commit_batch)
        return await done

    def _commit_batch(self) -> None:
        batch, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        db = self._db
        try:
            if db is None:
                raise sqlite3.OperationalError("the file was closed")
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                self._locked_since = self._locked_since or loop.time()
                if loop.time() - self._locked_since < self._timeout:
                    self._pending[:0] = batch  # first in the next try
                    loop.call_later(0.001, self._commit_batch)
                    return
                exc = sqlite3.OperationalError(f"the file stayed locked for {self._timeout:g}s")
            self._locked_since = None
            self._fail(batch, exc)
            return
        self._locked_since = None
        results: list[Any] = []
        try:
            for fn, _ in batch:
                results.append(fn(db))
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                # (A rollback that fails too must not leave the batch's callers waiting.)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._fail(batch, exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():  # (a caller cancelled meanwhile learns nothing)
                done.set_result(result)
        self._committed()

    def _fail(self, batch: list[tuple[Any, asyncio.Future[Any]]], exc: Exception) -> None:
        if isinstance(exc, sqlite3.Error | OSError):
            exc = self._unavailable(self.name, f"{type(exc).__name__}: {exc}")
        for _, done in batch:
            if not done.done():
                done.set_exception(exc)

    async def run_on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the thread: scans and bulk writes (see SqliteThread.run)."""
        return await self._thread.run(fn)

    async def _open(self) -> sqlite3.Connection:
        await self._thread.run(lambda db: None)  # the schema and setup, on the thread
        if self._db is None:
            try:
                db = connect(self._path, busy_timeout=0.0, check_same_thread=True)
                db.execute("PRAGMA wal_autocheckpoint=0")  # the thread checkpoints (_committed)
            except (sqlite3.Error, OSError) as exc:
                raise self._unavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
            self._db = db
        return self._db

    def _committed(self) -> None:
        """Count a commit in place; every `checkpoint_every`, one checkpoint on the thread
        (never two at once)."""
        self._since_checkpoint += 1
        if self._since_checkpoint < self._checkpoint_every or self._checkpoint is not None:
            return
        self._since_checkpoint = 0
        self._checkpoint = asyncio.ensure_future(self._thread.run(_checkpoint_wal))
        self._checkpoint.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not done.cancelled() and (exc := done.exception()) is not None:
            # Not the caller's failure: the WAL grows until a later checkpoint succeeds.
            logger.warning("%s: WAL checkpoint failed: %s", self.name, exc)

    async def close(self) -> None:
        if self._pending:  # the last batch commits (or fails) first
            await asyncio.wait({self._pending[-1][1]})
        if self._checkpoint is not None:
            await asyncio.wait({self._checkpoint})
        if self._db is not None:
            self._db.close()
            self._db = None
        await self._thread.close()  # the last connection: it checkpoints the WAL


def _checkpoint_wal(db: sqlite3.Connection) -> None:
    """Copy the WAL into the file, then start it again from empty.

    A PASSIVE checkpoint alone never lets the WAL start again while the loop keeps writing: it
    copies the frames there were when it began, the loop appends more meanwhile, and a WAL is
    only restarted once all of it was copied (measured: 788 MB of WAL after 16 s of the async
    benchmark, and throughput falling with it). A TRUNCATE checkpoint gets there, but keeps
    the loop's writers out while it runs (they are tried again each millisecond): so first a
    PASSIVE one copies and syncs the bulk with the writers going on, and the TRUNCATE one
    after it only has the frames written meanwhile."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def connect(path: Path, *, busy_timeout: float, check_same_thread: bool) -> sqlite3.Connection:
    """A connection to `path` (created readable by its owner only): WAL, synchronous=NORMAL,
    waiting up to `busy_timeout` seconds for another connection's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private_sqlite(path)  # what it holds is readable by the owner only
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # A commit is in the WAL, in the kernel's page cache, before the call returns: it
        # survives a crash or kill of `up`, and only a crash of the host itself may lose the
        # last moments of writes (fsync at checkpoints). Syncing every commit (FULL) costs
        # ~390 us against ~60 us here, and all calls share one thread: a store of storage
        # calls at a few thousand per second was fsync-bound.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction from its first statement (BEGIN IMMEDIATE: no other connection
    writes between this one's reads and writes), committed when the block ends, rolled back
    when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
