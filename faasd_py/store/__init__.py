"""Registry of functions and secrets: the `Registry` protocol and its embedded SQLite store."""

from __future__ import annotations

from faasd_py.store._registry import Registry, StoredFunction, fetch_secrets
from faasd_py.store._sqlite import SqliteRegistry

__all__ = ["Registry", "SqliteRegistry", "StoredFunction", "fetch_secrets"]
