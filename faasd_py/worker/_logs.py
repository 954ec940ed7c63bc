"""Captured stdout/stderr of a function's instances: a bounded buffer with live followers."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

# Longest line kept as one entry; longer output is split into entries of this size, so a handler
# that prints megabytes without a newline cannot grow memory beyond the buffer's bound.
MAX_LINE = 16 * 1024
_FOLLOWER_BACKLOG = 10_000


@dataclass(frozen=True, slots=True)
class LogEntry:
    timestamp: float  # seconds since the epoch
    instance: str
    text: str


class LogBuffer:
    """The last `capacity` log entries of one function; `follow` streams new ones as they come."""

    def __init__(self, capacity: int) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._followers: set[asyncio.Queue[LogEntry | None]] = set()

    def append(self, entry: LogEntry) -> None:
        self._entries.append(entry)
        for queue in list(self._followers):
            if queue.qsize() >= _FOLLOWER_BACKLOG:
                # A follower that cannot keep up is cut off rather than buffered without bound.
                self._followers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(entry)

    def recent(
        self, tail: int | None = None, since: float | None = None, instance: str | None = None
    ) -> list[LogEntry]:
        """The last `tail` entries (all with None) from `since` on, of one instance or all."""
        entries = [
            e
            for e in self._entries
            if (since is None or e.timestamp >= since) and instance in (None, e.instance)
        ]
        return entries if tail is None else entries[-tail:] if tail > 0 else []

    def follow(self) -> AsyncIterator[LogEntry]:
        """New entries from this call on, until `close` (or the follower falls too far behind).

        The follower is registered before this returns, so nothing appended between taking
        `recent()` and iterating is lost.
        """
        queue: asyncio.Queue[LogEntry | None] = asyncio.Queue()
        self._followers.add(queue)

        async def entries() -> AsyncIterator[LogEntry]:
            try:
                while (entry := await queue.get()) is not None:
                    yield entry
            finally:
                self._followers.discard(queue)

        return entries()

    def close(self) -> None:
        for queue in self._followers:
            queue.put_nowait(None)
        self._followers.clear()


class LineSplitter:
    """Turns chunks of a byte stream into whole lines (at most MAX_LINE bytes each)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._partial = bytearray()
        self._emit = emit

    def feed(self, chunk: bytes) -> None:
        self._partial += chunk
        while True:
            newline = self._partial.find(b"\n", 0, MAX_LINE + 1)
            if newline >= 0:
                line, cut = self._partial[:newline], newline + 1
            elif len(self._partial) > MAX_LINE:
                line, cut = self._partial[:MAX_LINE], MAX_LINE
            else:
                return
            self._emit(line.decode(errors="replace").rstrip("\r"))
            del self._partial[:cut]

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial.decode(errors="replace"))
            self._partial.clear()
