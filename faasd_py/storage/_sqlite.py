"""The embedded backing store: one SQLite file in the data dir, for `up` with no services.

Calls run on one thread of their own (faasd_py.sqlite_thread; an object may be 64 MiB: copying
it must not stall the event loop), which also serializes them, so a write's transaction (bump
the app's counter, then write bytes and version) never interleaves with another call of this
process. Other processes sharing the file are kept apart by SQLite's own locking (BEGIN
IMMEDIATE).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from faasd_py.errors import StorageUnavailable
from faasd_py.sqlite_thread import SqliteThread, immediate
from faasd_py.storage._base import (
    DEFAULT_STORE_TIMEOUT,
    Quota,
    Usage,
    Versioned,
    check_key,
)

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
CREATE TABLE IF NOT EXISTS usage (
    app TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL,
    keys INTEGER NOT NULL
);
"""


class SqliteStore:
    def __init__(self, path: Path, *, timeout: float = DEFAULT_STORE_TIMEOUT) -> None:
        self._file = SqliteThread(
            path,
            timeout=timeout,
            schema=_SCHEMA,
            unavailable=StorageUnavailable,
            timeout_note="up --storage-timeout",
            thread_name="faasd-storage",
        )
        self._known: dict[str, Usage] = {}

    @property
    def name(self) -> str:
        return self._file.name

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._file.run(fn)

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

    async def put(self, app: str, key: str, data: bytes, quota: Quota | None = None) -> int:
        check_key(key)

        def write(db: sqlite3.Connection) -> tuple[int, Usage]:
            with immediate(db):
                usage = _usage(db, app)
                row = db.execute(
                    "SELECT length(data) FROM objects WHERE app = ? AND key = ?", (app, key)
                ).fetchone()
                old = None if row is None else int(row[0])
                refused = None if quota is None else quota.refusal(usage, old, len(data))
                if quota is not None and refused is not None:
                    raise quota.exceeded(app, refused, usage, len(data))
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
                usage = Usage(usage.bytes - (old or 0) + len(data), usage.keys + (old is None))
                _set_usage(db, app, usage)
            return int(version), usage

        version, self._known[app] = await self._run(write)
        return version

    async def delete(self, app: str, key: str) -> bool:
        check_key(key)

        def remove(db: sqlite3.Connection) -> tuple[bool, Usage]:
            with immediate(db):
                usage = _usage(db, app)
                row = db.execute(
                    "DELETE FROM objects WHERE app = ? AND key = ? RETURNING length(data)",
                    (app, key),
                ).fetchone()
                if row is not None:
                    usage = Usage(usage.bytes - int(row[0]), usage.keys - 1)
                    _set_usage(db, app, usage)
            return row is not None, usage

        removed, self._known[app] = await self._run(remove)
        return removed

    async def usage(self, app: str) -> Usage:
        def read(db: sqlite3.Connection) -> Usage:
            with immediate(db):  # a first count is written back
                return _usage(db, app)

        self._known[app] = usage = await self._run(read)
        return usage

    def known_usage(self) -> dict[str, Usage]:
        return dict(self._known)

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
        await self._file.close()


def _usage(db: sqlite3.Connection, app: str) -> Usage:
    """The app's use as kept next to its objects; counted from them (once) where it never was
    (a file written before use was kept). In the caller's transaction."""
    row = db.execute("SELECT bytes, keys FROM usage WHERE app = ?", (app,)).fetchone()
    if row is None:
        row = db.execute(
            "SELECT coalesce(sum(length(data)), 0), count(*) FROM objects WHERE app = ?", (app,)
        ).fetchone()
        _set_usage(db, app, Usage(int(row[0]), int(row[1])))
    return Usage(int(row[0]), int(row[1]))


def _set_usage(db: sqlite3.Connection, app: str, usage: Usage) -> None:
    db.execute(
        "INSERT INTO usage (app, bytes, keys) VALUES (?, ?, ?) "
        "ON CONFLICT(app) DO UPDATE SET bytes = excluded.bytes, keys = excluded.keys",
        (app, usage.bytes, usage.keys),
    )
