"""Registry of functions, namespaces and secrets: the `Registry` protocol, its embedded SQLite
store, and the Redis one that the gateways and workers of a cluster share."""

from __future__ import annotations

from faasd_py.store._redis import CHANGES, RedisRegistry
from faasd_py.store._registry import Namespace, Registry, StoredFunction, fetch_secrets
from faasd_py.store._sqlite import SqliteRegistry

__all__ = [
    "CHANGES",
    "Namespace",
    "RedisRegistry",
    "Registry",
    "SqliteRegistry",
    "StoredFunction",
    "fetch_secrets",
]
