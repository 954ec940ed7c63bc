"""Registry of functions, namespaces and secrets: the `Registry` protocol and its embedded
SQLite store."""

from __future__ import annotations

from faasd_py.store._registry import Namespace, Registry, StoredFunction, fetch_secrets
from faasd_py.store._sqlite import SqliteRegistry

__all__ = ["Namespace", "Registry", "SqliteRegistry", "StoredFunction", "fetch_secrets"]
