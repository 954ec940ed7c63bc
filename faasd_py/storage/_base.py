"""The interface of a backing store for `context.storage`, and what every store shares.

A store holds objects per app: an app's keys live in a namespace of their own, so one app cannot
read another's objects whatever key it asks for. Every object has a version, an integer that
grows on every write to the app (delete then write again gives a new one, never an old one), and
the store keeps it atomically with the bytes. `version()` is the cheap call the cache makes before
every read; `get()` returns bytes and version from one atomic read.

A store that cannot be reached, or does not answer a call within its timeout, raises
`StorageUnavailable` (503 at the gateway, naming the store); nothing else escapes a store's
methods but ValueError for a bad key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from faasd_py.errors import StorageUnavailable

if TYPE_CHECKING:
    from faasd_py.storage._latency import LatencyModel

T = TypeVar("T")

# How long one store call may take before it fails with StorageUnavailable (up --storage-timeout):
# well under a function's exec_timeout (30 s by default), so that a hung store gives the handler
# an exception it can handle, and the caller a 503, rather than a timed-out, replaced instance.
DEFAULT_STORE_TIMEOUT = 5.0

# A key is what the author names it: printable, not too long (Redis and SQLite take any bytes,
# the limit keeps listing and statistics sane).
MAX_KEY = 1024


@dataclass(frozen=True, slots=True)
class Versioned:
    data: bytes
    version: int


class ObjectStore(Protocol):
    """What the cache needs from a backing store."""

    @property
    def name(self) -> str:
        """How errors and reports name the store (no password)."""
        ...

    async def get(self, app: str, key: str) -> Versioned | None: ...

    async def version(self, app: str, key: str) -> int | None:
        """The current version of the object, None if absent: one cheap round trip."""
        ...

    async def get_many(self, app: str, keys: Sequence[str]) -> list[Versioned | None]:
        """Several objects in one round trip (a pipeline): what a pre-warm fetches."""
        ...

    async def put(self, app: str, key: str, data: bytes) -> int:
        """Store the object; returns its new version."""
        ...

    async def delete(self, app: str, key: str) -> bool: ...

    async def exists(self, app: str, key: str) -> bool: ...

    async def list(self, app: str, prefix: str = "") -> list[str]:
        """The app's keys that start with prefix, sorted."""
        ...

    async def close(self) -> None: ...


async def within(seconds: float, store: str, awaitable: Awaitable[T]) -> T:
    """`awaitable`'s result, or StorageUnavailable naming `store` after `seconds`: a store
    that takes a call and never answers must not hold its caller longer. (A write cut off so may
    still land: the caller learns only that its outcome is unknown.)"""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise StorageUnavailable(
            store, f"no answer within {seconds:g}s (up --storage-timeout)"
        ) from None


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise ValueError(f"a storage key must be a non-empty string of at most {MAX_KEY} chars")


def open_store(
    url: str | None,
    data_dir: Path,
    latency: float | LatencyModel = 0.0,
    *,
    timeout: float = DEFAULT_STORE_TIMEOUT,
) -> ObjectStore:
    """The store `url` names: redis://..., rediss://..., unix://... (Redis), or None / "" /
    "embedded" / sqlite:///path (the embedded SQLite store, in the data dir by default);
    wrapped in a LatencyStore when `latency` (seconds per call, or a LatencyModel) adds any.
    Each call fails with StorageUnavailable after `timeout` seconds without an answer."""
    store: ObjectStore
    if url and url.split("://", 1)[0] in ("redis", "rediss", "unix"):
        from faasd_py.storage._redis import RedisStore

        store = RedisStore(url, timeout=timeout)
    elif not url or url == "embedded":
        from faasd_py.storage._sqlite import SqliteStore

        store = SqliteStore(data_dir / "storage.sqlite3", timeout=timeout)
    elif url.startswith("sqlite://"):
        from faasd_py.storage._sqlite import SqliteStore

        store = SqliteStore(Path(url.removeprefix("sqlite://")), timeout=timeout)
    else:
        raise ValueError(
            f"storage must be redis://host:port[/db], sqlite:///path or 'embedded', got {url!r}"
        )
    from faasd_py.storage._latency import LatencyModel, LatencyStore

    model = latency if isinstance(latency, LatencyModel) else LatencyModel(latency)
    return LatencyStore(store, model) if model.on else store
