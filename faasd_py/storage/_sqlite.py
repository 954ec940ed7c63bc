"""The embedded backing store: one SQLite file in the data dir, for `up` with no services.

Calls run on one thread of their own (an object may be 64 MiB: copying it must not stall the
event loop), which also serializes them, so a write's transaction (bump the app's counter, then
write bytes and version) never interleaves with another call of this process. Other processes
sharing the file are kept apart by SQLite's own locking (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from faasd_py.errors import StorageUnavailable
from faasd_py.storage._base import DEFAULT_STORE_TIMEOUT, Versioned, check_key, within

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    app TEXT NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (app, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    app TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
"""


class SqliteStore:
    def __init__(self, path: Path, *, timeout: float = DEFAULT_STORE_TIMEOUT) -> None:
        self._path = path
        # A call not done by then (the file locked by another process, a disk that hangs) fails
        # with StorageUnavailable. SQLite gives up waiting for a lock a little sooner, so that a
        # write that waited for one fails for sure rather than landing after its caller gave up.
        self._timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faasd-storage")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    @property
    def name(self) -> str:
        return f"sqlite://{self._path}"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA busy_timeout={int(self._timeout * 900)}")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            return fn(self._connect())

        try:
            return await within(
                self._timeout,
                self.name,
                asyncio.get_running_loop().run_in_executor(self._executor, call),
            )
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def get(self, app: str, key: str) -> Versioned | None:
        check_key(key)
        row = await self._run(
            lambda db: db.execute(
                "SELECT data, version FROM objects WHERE app = ? AND key = ?", (app, key)
            ).fetchone()
        )
        return None if row is None else Versioned(bytes(row[0]), int(row[1]))

    async def get_many(self, app: str, keys: Sequence[str]) -> list[Versioned | None]:
        for key in keys:
            check_key(key)

        def read(db: sqlite3.Connection) -> list[Versioned | None]:
            # One statement, so one consistent snapshot of all of them.
            marks = ",".join("?" * len(keys))
            rows = db.execute(
                f"SELECT key, data, version FROM objects WHERE app = ? AND key IN ({marks})",
                (app, *keys),
            ).fetchall()
            found = {k: Versioned(bytes(d), int(v)) for k, d, v in rows}
            return [found.get(k) for k in keys]

        return await self._run(read) if keys else []

    async def version(self, app: str, key: str) -> int | None:
        check_key(key)
        row = await self._run(
            lambda db: db.execute(
                "SELECT version FROM objects WHERE app = ? AND key = ?", (app, key)
            ).fetchone()
        )
        return None if row is None else int(row[0])

    async def put(self, app: str, key: str, data: bytes) -> int:
        check_key(key)

        def write(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                # A new counter starts at the clock in microseconds (see _redis.py: a file
                # replaced by an empty one must not issue versions a cache already holds).
                (version,) = db.execute(
                    "INSERT INTO versions (app, last) VALUES (?, ?) "
                    "ON CONFLICT(app) DO UPDATE SET last = last + 1 RETURNING last",
                    (app, time.time_ns() // 1000),
                ).fetchone()
                db.execute(
                    "INSERT INTO objects (app, key, data, version) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(app, key) DO UPDATE SET data = excluded.data, "
                    "version = excluded.version",
                    (app, key, data, version),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return int(version)

        return await self._run(write)

    async def delete(self, app: str, key: str) -> bool:
        check_key(key)
        return await self._run(
            lambda db: (
                db.execute("DELETE FROM objects WHERE app = ? AND key = ?", (app, key)).rowcount > 0
            )
        )

    async def exists(self, app: str, key: str) -> bool:
        return await self.version(app, key) is not None

    async def list(self, app: str, prefix: str = "") -> list[str]:
        # substr rather than LIKE: a prefix may hold % or _.
        rows = await self._run(
            lambda db: db.execute(
                "SELECT key FROM objects WHERE app = ? AND substr(key, 1, ?) = ? ORDER BY key",
                (app, len(prefix), prefix),
            ).fetchall()
        )
        return [key for (key,) in rows]

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
