"""The cache's pure policies: what an app reads (access statistics), what to fetch when its
cache comes back (the pre-warm plan), and how many bytes each app's cache may hold (sizing).
Pure code: time comes in as `now`, in seconds since the epoch, because the statistics outlive
the worker process in the registry and a monotonic clock would not survive it.

Access statistics. Each key keeps one number that mixes frequency and recency (LRFU's idea): a
count that halves every `half_life` seconds without access and grows by one on each access. A
key read 100 times an hour ago and one read twice a minute ago compare sensibly, and ranking
needs no second pass. The table is bounded: past `max_keys` it forgets the keys of lowest
score, down to 90% of the bound, so that the pruning (a sort) runs once per many accesses.

Sizing, a policy like the scheduler's. Faa$T sizes each app's cache from what the app reads:
the wish of an app is its observed working set (bytes of the keys read within a window) with
some headroom, and at least room for two of its largest recent objects, clamped between
`min_bytes` and `max_per_app`. When the wishes of all loaded apps fit the worker-wide `total`,
each gets its wish; otherwise every app keeps its minimum and the rest of the total is shared
in proportion to what each wished above its minimum. If even the minimums do not fit, the
total is split evenly. `decide` returns one decision per app with its reason, for the logs and
reports.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True)
class Demand:
    """What one app's recent reads say about the cache it needs."""

    app: str
    working_set: int
    largest: int


@dataclass(frozen=True)
class Decision:
    app: str
    budget: int
    wish: int
    reason: str


@dataclass(frozen=True)
class SizingPolicy:
    min_bytes: int = 4 * 1024 * 1024
    max_per_app: int = 256 * 1024 * 1024
    total: int = 1024 * 1024 * 1024
    # Room above the working set, so that the next few new keys do not evict the hot ones.
    headroom: float = 1.25

    def __post_init__(self) -> None:
        if not 0 <= self.min_bytes <= self.max_per_app:
            raise ValueError("need 0 <= min_bytes <= max_per_app")
        if self.total < 0 or self.headroom < 1.0:
            raise ValueError("need total >= 0 and headroom >= 1")

    def wish(self, demand: Demand) -> tuple[int, str]:
        """The budget `demand` asks for on its own, and why."""
        raw = max(int(demand.working_set * self.headroom), 2 * demand.largest)
        if raw <= self.min_bytes:
            return self.min_bytes, "minimum (working set is smaller)"
        if raw >= self.max_per_app:
            return self.max_per_app, "per-app maximum (working set is larger)"
        return raw, "working set"

    def decide(self, demands: Sequence[Demand]) -> list[Decision]:
        wishes = [self.wish(d) for d in demands]
        wanted = sum(w for w, _ in wishes)
        if wanted <= self.total:
            return [Decision(d.app, w, w, why) for d, (w, why) in zip(demands, wishes, strict=True)]
        floors = sum(min(self.min_bytes, w) for w, _ in wishes)
        if floors >= self.total:
            even = self.total // len(demands)
            return [
                Decision(d.app, min(even, w), w, "worker total cannot give every app its minimum")
                for d, (w, _) in zip(demands, wishes, strict=True)
            ]
        spare = self.total - floors
        above = wanted - floors  # > spare, since wanted > total
        decisions = []
        for d, (w, _) in zip(demands, wishes, strict=True):
            floor = min(self.min_bytes, w)
            share = (w - floor) * spare // above
            decisions.append(Decision(d.app, floor + share, w, "scaled down to the worker total"))
        return decisions
