"""Per-key access statistics of an app, and the pre-warm ranking they feed.

Pure code: time comes in as `now` (seconds since the epoch, because the statistics outlive the
worker process in the registry and a monotonic clock would not survive it).

Each key keeps one number that mixes frequency and recency (LRFU's idea): a count that halves
every `half_life` seconds without access and grows by one on each access. A key read 100 times
an hour ago and one read twice a minute ago compare sensibly, and ranking needs no second pass.
The table is bounded: past `max_keys` it forgets the keys of lowest score, down to 90% of the
bound so that the pruning (a sort) runs once per many accesses rather than on every one.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

FORMAT = 1


@dataclass(slots=True)
class KeyStats:
    weight: float  # decayed access count as of `last`
    last: float  # time of the last access
    size: int  # bytes of the object at its last access
    reads: int  # accesses ever recorded (not decayed; for reports)


@dataclass(frozen=True)
class Ranked:
    key: str
    score: float
    size: int


@dataclass(frozen=True)
class WorkingSet:
    keys: int
    bytes: int
    largest: int


class AccessStats:
    def __init__(self, max_keys: int = 10_000, half_life: float = 600.0) -> None:
        if max_keys < 1 or half_life <= 0:
            raise ValueError("max_keys must be >= 1 and half_life > 0")
        self.max_keys = max_keys
        self.half_life = half_life
        self._keys: dict[str, KeyStats] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def get(self, key: str) -> KeyStats | None:
        return self._keys.get(key)

    def record(self, key: str, now: float, size: int | None = None) -> None:
        """One access of `key` at `now`; `size` when known (a miss learns it from the store)."""
        stats = self._keys.get(key)
        if stats is None:
            self._keys[key] = KeyStats(1.0, now, size or 0, 1)
            if len(self._keys) > self.max_keys:
                self._prune(now, key)
            return
        stats.weight = self._decayed(stats, now) + 1.0
        stats.last = max(stats.last, now)
        stats.reads += 1
        if size is not None:
            stats.size = size

    def note_size(self, key: str, size: int) -> None:
        """The object's size became known (after a fetch) without a new access."""
        stats = self._keys.get(key)
        if stats is not None:
            stats.size = size

    def forget(self, key: str) -> None:
        """The object was deleted: nothing to pre-warm for it."""
        self._keys.pop(key, None)

    def latest(self) -> float | None:
        """The time of the most recent access, None when there was none."""
        return max((s.last for s in self._keys.values()), default=None)

    def score(self, key: str, now: float) -> float:
        stats = self._keys.get(key)
        return 0.0 if stats is None else self._decayed(stats, now)

    def _decayed(self, stats: KeyStats, now: float) -> float:
        age = max(0.0, now - stats.last)
        return stats.weight * math.exp2(-age / self.half_life)

    def _prune(self, now: float, keep: str) -> None:
        # The key just recorded stays: forgetting it at once would make a new hot key invisible.
        target = max(1, int(self.max_keys * 0.9))
        ranked = heapq.nlargest(
            target - 1,
            (k for k in self._keys if k != keep),
            key=lambda k: self._decayed(self._keys[k], now),
        )
        kept = {k: self._keys[k] for k in ranked}
        kept[keep] = self._keys[keep]
        self._keys = kept

    def ranked(self, now: float) -> list[Ranked]:
        """Every key, most likely to be read next first (ties: the smaller object first)."""
        ranked = [Ranked(k, self._decayed(s, now), s.size) for k, s in self._keys.items()]
        ranked.sort(key=lambda r: (-r.score, r.size, r.key))
        return ranked

    def working_set(self, now: float, window: float) -> WorkingSet:
        """The keys read within the last `window` seconds and their bytes."""
        recent = [s for s in self._keys.values() if now - s.last <= window]
        return WorkingSet(
            keys=len(recent),
            bytes=sum(s.size for s in recent),
            largest=max((s.size for s in recent), default=0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "max_keys": self.max_keys,
            "half_life": self.half_life,
            "keys": [[k, s.weight, s.last, s.size, s.reads] for k, s in self._keys.items()],
        }

    @classmethod
    def from_json(cls, data: object) -> AccessStats:
        """The statistics `to_json` saved; ValueError for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not access statistics of a known format")
        stats = cls(int(data["max_keys"]), float(data["half_life"]))
        rows = data["keys"]
        if not isinstance(rows, list):
            raise ValueError("keys must be a list")
        for key, weight, last, size, reads in rows:
            if not isinstance(key, str):
                raise ValueError("a key must be a string")
            stats._keys[key] = KeyStats(float(weight), float(last), int(size), int(reads))
        if len(stats._keys) > stats.max_keys:
            stats._prune(max(s.last for s in stats._keys.values()), next(iter(stats._keys)))
        return stats


def prewarm_plan(
    ranked: Iterable[Ranked], budget: int, bypass_bytes: int, max_keys: int | None = None
) -> list[Ranked]:
    """The keys to fetch on reload: best score first, each fitting in what is left of `budget`.

    A key that does not fit is skipped, not a stop: smaller ones further down still help. Keys of
    unknown size (0: never fetched) are skipped, as are those the cache would bypass, and those
    whose score has decayed to nothing (read once, long ago).
    """
    plan: list[Ranked] = []
    left = budget
    for entry in ranked:
        if max_keys is not None and len(plan) >= max_keys:
            break
        if entry.size <= 0 or entry.size > bypass_bytes or entry.score < 1e-3:
            continue
        if entry.size <= left:
            plan.append(entry)
            left -= entry.size
    return plan
