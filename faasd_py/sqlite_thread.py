"""One SQLite file used from asyncio: what the embedded store (storage/_sqlite.py) and the
embedded queue (queue/_sqlite.py) share.

Calls run on one thread of their own, so the event loop never waits on the disk, and one at a
time, so a transaction of this object never interleaves with another of its calls. Other
connections to the file (another object, another process) are kept apart by SQLite's own
locking (`immediate`). Each call is bounded by a timeout, and every failure of the file
(sqlite3.Error, OSError) or the timeout becomes the caller's own "unavailable" error, naming the
file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from faasd_py.modes import private_sqlite

__all__ = ["SqliteThread", "immediate"]

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

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            private_sqlite(self._path)  # what it holds is readable by the owner only
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                # A commit is in the WAL, in the kernel's page cache, before the call returns:
                # it survives a crash or kill of `up`, and only a crash of the host itself may
                # lose the last moments of writes (fsync at checkpoints). Syncing every commit
                # (FULL) costs ~390 us against ~60 us here, and all calls share one thread: a
                # store of storage calls at a few thousand per second was fsync-bound.
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(f"PRAGMA busy_timeout={int(self._timeout * 900)}")
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
