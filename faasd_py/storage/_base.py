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
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from faasd_py.errors import StorageQuotaExceeded, StorageUnavailable
from faasd_py.redis_connect import REDIS_SCHEMES, redact
from faasd_py.units import parse_size

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


# --- quotas ------------------------------------------------------------------------------------
#
# An app's use of its store is the bytes of its objects' data and the number of its keys. Each
# store keeps it next to the objects, updated in the same atomic step as every write and delete
# (and counted once from the objects where it was never kept), and checks a put against the
# caller's quota in that step too: two instances writing at once cannot both slip under it.
# A put that does not grow the app (an overwrite no larger than the object it replaces) is
# always allowed, so an app over a lowered quota can still shrink.

ANNOTATION_MAX_BYTES = "com.faasd-py.storage.max-bytes"
ANNOTATION_MAX_KEYS = "com.faasd-py.storage.max-keys"
DEFAULT_MAX_BYTES = 1024**3
DEFAULT_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    keys: int


@dataclass(frozen=True, slots=True)
class Quota:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_keys: int = DEFAULT_MAX_KEYS

    def refusal(self, usage: Usage, old_size: int | None, size: int) -> str | None:
        """Which limit a put of `size` bytes over an object of `old_size` (None: a new key)
        would go over: "keys", "bytes", or None when it fits."""
        if old_size is None and usage.keys + 1 > self.max_keys:
            return "keys"
        after = usage.bytes - (old_size or 0) + size
        if after > self.max_bytes and after > usage.bytes:
            return "bytes"
        return None

    def exceeded(self, app: str, which: str, usage: Usage, size: int) -> StorageQuotaExceeded:
        """The error for a put that `refusal` refused, naming the quota and how to raise it."""
        if which == "keys":
            what = (
                f"the app holds {usage.keys} keys of its quota of {self.max_keys}, and this put "
                "would add one"
            )
            limit, annotation, flag = self.max_keys, ANNOTATION_MAX_KEYS, "--storage-max-keys"
        else:
            what = (
                f"the app holds {usage.bytes} bytes of its quota of {self.max_bytes}, and this "
                f"put of {size} bytes would take it over"
            )
            limit, annotation, flag = self.max_bytes, ANNOTATION_MAX_BYTES, "--storage-max-bytes"
        return StorageQuotaExceeded(
            f"storage quota of app {app} exceeded: {what}; nothing was written. Delete objects, "
            f"or raise the quota with the function's annotation {annotation} (or up's {flag})",
            which,
            limit,
        )


class BadQuotaAnnotation(ValueError):
    def __init__(self, annotation: str, expected: str) -> None:
        super().__init__(f"annotation {annotation}: {expected}")
        self.annotation = annotation
        self.expected = expected


def quota_of(annotations: Mapping[str, str], default: Quota) -> Quota:
    """The quota a function's annotations ask for, each limit else `default`'s;
    BadQuotaAnnotation naming the annotation for a malformed one."""
    max_bytes, max_keys = default.max_bytes, default.max_keys
    raw = annotations.get(ANNOTATION_MAX_BYTES, "").strip()
    if raw:
        try:
            max_bytes = parse_size(raw)
        except ValueError:
            max_bytes = 0
        if max_bytes < 1:
            raise BadQuotaAnnotation(
                ANNOTATION_MAX_BYTES,
                f"expected a size of at least 1 byte such as 10Gi, got {raw!r}",
            )
    raw = annotations.get(ANNOTATION_MAX_KEYS, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise BadQuotaAnnotation(
                ANNOTATION_MAX_KEYS, f"expected a whole number of keys, such as 500000; got {raw!r}"
            )
        max_keys = int(raw)
    return Quota(max_bytes, max_keys)


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

    async def put(self, app: str, key: str, data: bytes, quota: Quota | None = None) -> int:
        """Store the object; returns its new version. StorageQuotaExceeded, and nothing
        written, when it would take the app over `quota`."""
        ...

    async def delete(self, app: str, key: str) -> bool: ...

    async def exists(self, app: str, key: str) -> bool: ...

    async def list(self, app: str, prefix: str = "") -> list[str]:
        """The app's keys that start with prefix, sorted."""
        ...

    async def usage(self, app: str) -> Usage:
        """The app's bytes and keys, from the store."""
        ...

    def known_usage(self) -> dict[str, Usage]:
        """Per app, its use as this client last saw it (after its writes and `usage` calls):
        what metrics show, without a round trip."""
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
    """The store `url` names: redis://..., rediss://..., unix://..., redis+sentinel://... (Redis,
    see faasd_py.redis_connect), or None / "" / "embedded" / sqlite:///path (the embedded SQLite
    store, in the data dir by default);
    wrapped in a LatencyStore when `latency` (seconds per call, or a LatencyModel) adds any.
    Each call fails with StorageUnavailable after `timeout` seconds without an answer."""
    store: ObjectStore
    if url and url.split("://", 1)[0] in REDIS_SCHEMES:
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
            f"storage must be redis://host:port[/db] (or another Redis URL: rediss://, unix://, "
            f"redis+sentinel://), sqlite:///path or 'embedded', got {redact(url)!r}"
        )
    from faasd_py.storage._latency import LatencyModel, LatencyStore

    model = latency if isinstance(latency, LatencyModel) else LatencyModel(latency)
    return LatencyStore(store, model) if model.on else store
