"""Where an app runs: the placement policy, pure (no asyncio, no I/O, nothing read from a
clock). The gateways carry its answers out (`_membership.place_app` records them in Redis).

Terms. A worker's *room* for an app is the memory its instances may still reserve there:
its budget (`memory`) minus what is reserved (`memory_reserved`), with what the app itself
reserves there counted back in (`app_reserved`; the app's own instances do not crowd it out).
Its *slots* for the app are room // `instance_memory` (an app that names no memory needs no
room: one worker holds it). A set of workers *holds* the demand when their slots add up to
`instances`.

The rules of `place(demand, workers, current)`, in order:

1. Stable: the current workers still alive (those of `current` found in `workers`, in
   `current`'s order) stay, while they hold the demand: the app's Faa$T cache and keep-alive
   state stay where they are. A dead worker simply drops out of the list.
2. Shrink: when the alive current workers hold the demand with fewer of them, the extra ones at
   the end are dropped: the result is the shortest prefix that holds it ("keeping the first
   ones"). Nothing shrinks while the demand needs every one.
3. Spread: when they do not hold it (or none is alive), the other workers are added in rank
   order, each only if it has a slot, until the demand is held or none is left. Rank: most room
   first; ties by least CPU load per core; then by name. So a new app goes to the worker with
   the most free memory that fits one instance.
4. Never empty: if nothing fits at all and the app has no live worker, the best ranked worker
   is returned alone (its own admission then answers 429/503). The result is empty only when
   `workers` is.

The result depends on the set of workers, not their order (ties end at the name, and names
are unique: a later duplicate is ignored).

`pick(workers, outstanding)`: the worker of an app that takes the next invocation: the one
with the fewest outstanding calls, ties in the placement's order; so a one-worker app always
gets its worker, and the first worker fills first among equals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLoad:
    """What a worker reports with each heartbeat."""

    name: str
    cores: float
    memory: int  # bytes its instances may reserve in total (its budget)
    memory_reserved: int  # bytes its instances reserve now
    cpu_load: float  # cores busy, recent average
    # Bytes reserved now per app placed here, (app, bytes): a current worker's room for an
    # app counts the app's own reservation back in. Without it (empty), a worker full of the
    # app's own instances would look full to that app and spread it needlessly.
    app_reserved: tuple[tuple[str, int], ...] = ()

    def room(self, app: str) -> int:
        """Bytes `app`'s instances may still reserve here."""
        own = sum(reserved for name, reserved in self.app_reserved if name == app)
        # What the app reserves is part of memory_reserved: never count back more than that.
        return max(0, self.memory - self.memory_reserved + min(own, self.memory_reserved))


@dataclass(frozen=True)
class AppDemand:
    app: str
    instance_memory: int  # bytes one instance reserves (the largest of the app's functions)
    instances: int  # instances it needs now: max of min-scale, scaled replicas, observed


def slots(demand: AppDemand, worker: WorkerLoad) -> int:
    """Instances of the app that fit in `worker`'s room."""
    if demand.instance_memory <= 0:
        return _needed(demand)
    return worker.room(demand.app) // demand.instance_memory


def _needed(demand: AppDemand) -> int:
    return max(1, demand.instances)


def _rank(demand: AppDemand, worker: WorkerLoad) -> tuple[int, float, str]:
    per_core = worker.cpu_load / worker.cores if worker.cores > 0 else float("inf")
    return (-worker.room(demand.app), per_core, worker.name)


def _unique(workers: Iterable[WorkerLoad]) -> dict[str, WorkerLoad]:
    by_name: dict[str, WorkerLoad] = {}
    for worker in workers:
        by_name.setdefault(worker.name, worker)
    return by_name


def place(
    demand: AppDemand, workers: Sequence[WorkerLoad], current: Sequence[str]
) -> tuple[str, ...]:
    """The workers `demand.app` should run on, by the rules in the module docstring."""
    by_name = _unique(workers)
    if not by_name:
        return ()
    needed = _needed(demand)
    kept = [by_name[name] for name in dict.fromkeys(current) if name in by_name]

    held = 0
    for count, worker in enumerate(kept, start=1):
        held += slots(demand, worker)
        if held >= needed:
            return tuple(w.name for w in kept[:count])  # rules 1 and 2

    chosen = [w.name for w in kept]
    others = sorted(
        (w for w in by_name.values() if w.name not in chosen), key=lambda w: _rank(demand, w)
    )
    for worker in others:  # rule 3
        if held >= needed:
            break
        free = slots(demand, worker)
        if free > 0:
            chosen.append(worker.name)
            held += free
    if not chosen:  # rule 4
        chosen.append(others[0].name)
    return tuple(chosen)


def pick(workers: Sequence[str], outstanding: Mapping[str, int]) -> str:
    """The one of `workers` (an app's placement) that takes the next invocation."""
    if not workers:
        raise ValueError("pick() needs at least one worker")
    best = min(range(len(workers)), key=lambda i: (outstanding.get(workers[i], 0), i))
    return workers[best]
