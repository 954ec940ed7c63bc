"""Opening the queue a URL names (the backends are imported only when chosen)."""

from __future__ import annotations

from pathlib import Path

from faasd_py.queue._base import DEFAULT_LEASE, DEFAULT_QUEUE_TIMEOUT, CallQueue
from faasd_py.redis_connect import REDIS_SCHEMES, redact


def open_queue(
    url: str | None,
    data_dir: Path,
    *,
    lease: float = DEFAULT_LEASE,
    timeout: float = DEFAULT_QUEUE_TIMEOUT,
) -> CallQueue:
    """The queue `url` names: redis://, rediss://, unix:// or redis+sentinel:// (Redis Streams,
    see faasd_py.redis_connect), or None / "" for the embedded one (data_dir/queue.sqlite3).
    ValueError naming what is wrong with `url`."""
    if not url:
        from faasd_py.queue._sqlite import SqliteCallQueue

        return SqliteCallQueue(data_dir / "queue.sqlite3", lease=lease, timeout=timeout)
    if url.split("://", 1)[0] in REDIS_SCHEMES:
        from faasd_py.queue._redis import RedisCallQueue

        return RedisCallQueue(url, lease=lease, timeout=timeout)
    raise ValueError(
        "expected redis://host:port[/db], rediss://..., unix://... or "
        f"redis+sentinel://host:port[,host:port...]/SERVICE[/db], got {redact(url)!r}"
    )
