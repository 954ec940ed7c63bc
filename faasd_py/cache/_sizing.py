"""How many bytes each app's cache may hold: a pure policy, like the scheduler's.

Faa$T sizes each app's cache from what the app actually reads. Here the wish of an app is its
observed working set (bytes of the keys read within a window) with some headroom, and at least
room for two of its largest recent objects, clamped between `min_bytes` and `max_per_app`.
When the wishes of all loaded apps fit the worker-wide `total`, each gets its wish; otherwise
every app keeps its minimum and the rest of the total is shared in proportion to what each
wished above its minimum. If even the minimums do not fit, the total is split evenly.

`decide` returns one decision per app with the reason, so the worker can log and report them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
