"""The embedded registry: one SQLite file in the data dir, for `faasd-py up` with no services.

Queries are small and local (microseconds), so they run on the event loop's thread; the
invocation path never touches the registry.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from faasd_py.spec import FunctionSpec, parse_deployment
from faasd_py.store._registry import StoredFunction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL
);
-- Per-app access statistics of the Faa$T cache (JSON), kept while the app is unloaded.
CREATE TABLE IF NOT EXISTS cache_stats (
    app TEXT PRIMARY KEY,
    stats TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- Per-app keep-alive policy state (JSON: the hybrid histogram), so a restart keeps what was
-- learnt. CREATE IF NOT EXISTS is the migration: data dirs made before it gain the table.
CREATE TABLE IF NOT EXISTS policy_state (
    app TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""


class SqliteRegistry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Secrets live here: readable by the owner only.
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    async def put_function(self, spec: FunctionSpec) -> None:
        self._db.execute(
            "INSERT INTO functions (name, spec, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
            (spec.service, json.dumps(spec.to_json()), time.time()),
        )

    async def get_function(self, name: str) -> StoredFunction | None:
        row = self._db.execute(
            "SELECT spec, created_at FROM functions WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else _stored(row[0], row[1])

    async def list_functions(self) -> list[StoredFunction]:
        rows = self._db.execute("SELECT spec, created_at FROM functions ORDER BY name")
        return [_stored(spec, created) for spec, created in rows]

    async def delete_function(self, name: str) -> bool:
        return self._db.execute("DELETE FROM functions WHERE name = ?", (name,)).rowcount > 0

    async def put_secret(self, name: str, value: bytes, *, create: bool) -> bool:
        if create:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO secrets (name, value, created_at) VALUES (?, ?, ?)",
                (name, value, time.time()),
            )
        else:
            cursor = self._db.execute("UPDATE secrets SET value = ? WHERE name = ?", (value, name))
        return cursor.rowcount > 0

    async def get_secret(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    async def list_secrets(self) -> list[str]:
        return [name for (name,) in self._db.execute("SELECT name FROM secrets ORDER BY name")]

    async def delete_secret(self, name: str) -> bool:
        return self._db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount > 0

    async def get_cache_stats(self, app: str) -> str | None:
        row = self._db.execute("SELECT stats FROM cache_stats WHERE app = ?", (app,)).fetchone()
        return None if row is None else str(row[0])

    async def put_cache_stats(self, app: str, stats: str) -> None:
        self._db.execute(
            "INSERT INTO cache_stats (app, stats, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(app) DO UPDATE SET stats = excluded.stats, "
            "updated_at = excluded.updated_at",
            (app, stats, time.time()),
        )

    async def get_policy_states(self) -> dict[str, str]:
        rows = self._db.execute("SELECT app, state FROM policy_state")
        return {str(app): str(state) for app, state in rows}

    async def put_policy_state(self, app: str, state: str) -> None:
        self._db.execute(
            "INSERT INTO policy_state (app, state, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(app) DO UPDATE SET state = excluded.state, "
            "updated_at = excluded.updated_at",
            (app, state, time.time()),
        )

    async def close(self) -> None:
        self._db.close()


def _stored(spec_json: str, created_at: float) -> StoredFunction:
    return StoredFunction(spec=parse_deployment(json.loads(spec_json)), created_at=created_at)
