"""The embedded registry: one SQLite file in the data dir, for `faasd-py up` with no services.

Queries are small and local (microseconds), so they run on the event loop's thread; the
invocation path never touches the registry.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from faasd_py.modes import private_sqlite
from faasd_py.spec import DEFAULT_NAMESPACE, FunctionSpec, parse_deployment
from faasd_py.store._registry import Namespace, StoredFunction

_SCHEMA = """
-- Keyed by the function's ref (NAME, or NAME.NAMESPACE outside the default namespace);
-- `replicas` (scale-function's) is added by _migrate to tables made before it.
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
-- Secrets per namespace. Data dirs made before namespaces had `secrets (name, value,
-- created_at)`: _migrate moves its rows into the default namespace.
CREATE TABLE IF NOT EXISTS namespaced_secrets (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    value BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS namespaces (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


class SqliteRegistry:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite(path)  # secrets live here: readable by the owner only
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._migrate()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # The connection autocommits (isolation_level=None), so a transaction is explicit.
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        """Bring a data dir from before namespaces and persisted replicas up to date."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(functions)")}
        if "replicas" not in columns:
            self._db.execute("ALTER TABLE functions ADD COLUMN replicas INTEGER")
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        with self._transaction():  # the old rows move whole or not at all
            if "secrets" in tables:
                self._db.execute(
                    "INSERT OR IGNORE INTO namespaced_secrets "
                    "SELECT ?, name, value, created_at FROM secrets",
                    (DEFAULT_NAMESPACE,),
                )
                self._db.execute("DROP TABLE secrets")
            self._db.execute(
                "INSERT OR IGNORE INTO namespaces VALUES (?, '{}', '{}', ?)",
                (DEFAULT_NAMESPACE, time.time()),
            )

    async def put_function(self, spec: FunctionSpec) -> None:
        self._db.execute(
            "INSERT INTO functions (name, spec, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
            (spec.ref, json.dumps(spec.to_json()), time.time()),
        )

    async def get_function(self, ref: str) -> StoredFunction | None:
        row = self._db.execute(
            "SELECT spec, created_at, replicas FROM functions WHERE name = ?", (ref,)
        ).fetchone()
        return None if row is None else _stored(*row)

    async def list_functions(self, namespace: str | None = None) -> list[StoredFunction]:
        rows = self._db.execute("SELECT spec, created_at, replicas FROM functions ORDER BY name")
        stored = [_stored(*row) for row in rows]
        return [s for s in stored if namespace is None or s.spec.namespace == namespace]

    async def delete_function(self, ref: str) -> bool:
        return self._db.execute("DELETE FROM functions WHERE name = ?", (ref,)).rowcount > 0

    async def set_replicas(self, ref: str, replicas: int) -> bool:
        cursor = self._db.execute(
            "UPDATE functions SET replicas = ? WHERE name = ?", (replicas, ref)
        )
        return cursor.rowcount > 0

    async def put_secret(self, namespace: str, name: str, value: bytes, *, create: bool) -> bool:
        if create:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO namespaced_secrets VALUES (?, ?, ?, ?)",
                (namespace, name, value, time.time()),
            )
        else:
            cursor = self._db.execute(
                "UPDATE namespaced_secrets SET value = ? WHERE namespace = ? AND name = ?",
                (value, namespace, name),
            )
        return cursor.rowcount > 0

    async def get_secret(self, namespace: str, name: str) -> bytes | None:
        row = self._db.execute(
            "SELECT value FROM namespaced_secrets WHERE namespace = ? AND name = ?",
            (namespace, name),
        ).fetchone()
        return None if row is None else bytes(row[0])

    async def list_secrets(self, namespace: str) -> list[str]:
        rows = self._db.execute(
            "SELECT name FROM namespaced_secrets WHERE namespace = ? ORDER BY name", (namespace,)
        )
        return [name for (name,) in rows]

    async def delete_secret(self, namespace: str, name: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM namespaced_secrets WHERE namespace = ? AND name = ?", (namespace, name)
        )
        return cursor.rowcount > 0

    async def get_namespace(self, name: str) -> Namespace | None:
        row = self._db.execute(
            "SELECT name, labels, annotations FROM namespaces WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else _namespace(*row)

    async def list_namespaces(self) -> list[Namespace]:
        rows = self._db.execute("SELECT name, labels, annotations FROM namespaces ORDER BY name")
        return [_namespace(*row) for row in rows]

    async def put_namespace(self, namespace: Namespace, *, create: bool) -> bool:
        labels = json.dumps(dict(namespace.labels))
        annotations = json.dumps(dict(namespace.annotations))
        if create:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO namespaces VALUES (?, ?, ?, ?)",
                (namespace.name, labels, annotations, time.time()),
            )
        else:
            cursor = self._db.execute(
                "UPDATE namespaces SET labels = ?, annotations = ? WHERE name = ?",
                (labels, annotations, namespace.name),
            )
        return cursor.rowcount > 0

    async def delete_namespace(self, name: str) -> bool:
        with self._transaction():
            self._db.execute("DELETE FROM namespaced_secrets WHERE namespace = ?", (name,))
            cursor = self._db.execute("DELETE FROM namespaces WHERE name = ?", (name,))
        return cursor.rowcount > 0

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


def _stored(spec_json: str, created_at: float, replicas: int | None) -> StoredFunction:
    spec = parse_deployment(json.loads(spec_json))
    return StoredFunction(spec=spec, created_at=created_at, replicas=replicas)


def _namespace(name: str, labels: str, annotations: str) -> Namespace:
    return Namespace(name=name, labels=json.loads(labels), annotations=json.loads(annotations))
