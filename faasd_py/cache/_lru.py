"""The cache's memory: versioned objects in LRU order, pinned while being read.

Pure code (no asyncio, no I/O, no clock): `AppCache` drives it and carries out nothing but what
it returns. The rules, which the hypothesis tests check after every operation:

- An entry is (key, version, bytes). A lookup hits only on the exact version the caller read
  from the backing store a moment earlier; a different version drops the entry (it is stale).
- A key's version only moves forward: inserting an older version than the one cached is ignored,
  so a slow fetch cannot replace the result of a newer write.
- Objects larger than `bypass_bytes` (or than the whole budget) are never cached.
- Eviction takes the least recently used entry that is not pinned. Bytes cached stay within
  `capacity` unless every entry left is pinned: a pinned entry is never evicted, so a reader
  that holds one may be the reason the cache runs over for a moment.
- Invalidation (a delete, a stale version) is not eviction: it removes a pinned entry too, since
  the reader already holds its bytes and no one else may be served them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    version: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Insertion:
    """What an insert did: cached or not (and why not), and the keys it evicted to make room."""

    cached: bool
    evicted: tuple[str, ...] = ()
    # "bypass" (too large), "older" (a newer version is cached), "no room" (evicted at once:
    # every other entry is pinned), or "" when cached.
    reason: str = ""


@dataclass(frozen=True)
class LRUStatistics:
    entries: int
    bytes: int
    capacity: int
    pinned_entries: int
    evictions: int
    bypassed: int


class PinnedLRU:
    """LRU of versioned objects within a byte budget; see the module's rules."""

    def __init__(self, capacity: int, bypass_bytes: int) -> None:
        if capacity < 0 or bypass_bytes < 0:
            raise ValueError("capacity and bypass_bytes must be >= 0")
        self._capacity = capacity
        self._bypass_bytes = bypass_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # oldest first
        self._pins: dict[str, int] = {}
        self._bytes = 0
        self._evictions = 0
        self._bypassed = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def size(self) -> int:
        """Bytes cached."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def in_order(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._entries)

    def version_of(self, key: str) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.version

    def is_pinned(self, key: str) -> bool:
        return key in self._pins

    def bypasses(self, size: int) -> bool:
        return size > self._bypass_bytes or size > self._capacity

    def lookup(self, key: str, version: int) -> bytes | None:
        """The cached bytes of `key` at `version` (now most recently used), else None; an entry
        at another version is stale and goes."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.version != version:
            self.discard(key)
            return None
        self._entries.move_to_end(key)
        return entry.data

    def insert(self, key: str, version: int, data: bytes) -> Insertion:
        current = self._entries.get(key)
        if current is not None and current.version > version:
            return Insertion(cached=False, reason="older")
        if self.bypasses(len(data)):
            # Whatever was cached under the key is older than this write: drop it.
            self.discard(key)
            self._bypassed += 1
            return Insertion(cached=False, reason="bypass")
        self.discard(key)
        self._entries[key] = Entry(version, data)
        self._bytes += len(data)
        evicted = self._evict()
        if key in evicted:
            return Insertion(cached=False, evicted=evicted, reason="no room")
        return Insertion(cached=True, evicted=evicted)

    def discard(self, key: str) -> bool:
        """Invalidate `key` (deleted, stale, or written as an object too large to cache)."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        return True

    def pin(self, key: str) -> bool:
        """Keep `key` from eviction until `unpin`; False (nothing pinned) if it is not cached."""
        if key not in self._entries:
            return False
        self._pins[key] = self._pins.get(key, 0) + 1
        return True

    def unpin(self, key: str) -> tuple[str, ...]:
        """Release one pin; returns what the release lets go if the cache ran over budget."""
        count = self._pins.get(key, 0)
        if count <= 1:
            self._pins.pop(key, None)
        else:
            self._pins[key] = count - 1
        return self._evict()

    def resize(self, capacity: int) -> tuple[str, ...]:
        """A new budget; returns the keys evicted to fit it."""
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        return self._evict()

    def _evict(self) -> tuple[str, ...]:
        if self._bytes <= self._capacity:
            return ()
        # Oldest first, popping from the front: the cost is what goes (and the pinned entries
        # stepped over), not the cache's size, which a full cache pays on every insert.
        evicted: list[str] = []
        pinned: list[tuple[str, Entry]] = []
        while self._bytes > self._capacity and self._entries:
            key, entry = self._entries.popitem(last=False)
            if key in self._pins:
                pinned.append((key, entry))
                continue
            self._bytes -= entry.size
            evicted.append(key)
        for key, entry in reversed(pinned):  # back at the front, in their order
            self._entries[key] = entry
            self._entries.move_to_end(key, last=False)
        self._evictions += len(evicted)
        return tuple(evicted)

    def statistics(self) -> LRUStatistics:
        return LRUStatistics(
            entries=len(self._entries),
            bytes=self._bytes,
            capacity=self._capacity,
            pinned_entries=sum(1 for key in self._pins if key in self._entries),
            evictions=self._evictions,
            bypassed=self._bypassed,
        )
