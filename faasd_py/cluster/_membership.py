"""Workers' membership (registration, a heartbeat lease, fencing) and apps' placements, in
Redis. Every call takes the caller's `redis.asyncio.Redis` client (replies as bytes or str).

Layout:

    faasd:cluster:epoch               integer             epochs handed out by joins
    faasd:cluster:workers             set of names        workers that may be registered
                                                          (a name whose key expired is
                                                          dropped by the next live_workers)
    faasd:cluster:worker:<name>       hash, PX = ttl      the registration: epoch, address,
                                                          info (JSON: load, isolation,
                                                          channels, apps), started and beat
                                                          (ms, Redis's clock)
    faasd:cluster:placements          hash app -> "<version> <JSON list of workers>"
    faasd:cluster:placement-version   integer             versions handed out by placements

The lease is the registration key's expiry: a worker is live exactly while its key exists, so
every gateway agrees on who is live without comparing clocks. A join takes a new epoch (INCR)
and writes the key; a heartbeat is one EVALSHA that renews the key only if it still holds the
worker's epoch (compare-and-extend): a worker whose registration expired and was made again,
by itself or by another process under the name, can never renew it. A counter that starts over
(a Redis that lost its data) starts at Redis's clock in microseconds, and a join never takes
an epoch below the worker's previous one, so epochs only grow.

Fencing: the worker counts its lease from the moment it *sent* a renewal that succeeded, on its
own monotonic clock; Redis expires the key `ttl` after the renewal *arrived*, which is later. So
the worker stops taking invocations (`holds_lease` false) no later than the gateways stop
seeing it, and after a partition heals no app runs as placed on two workers. A fenced worker
joins again by itself once Redis answers; it comes back with a new epoch and none of its old
apps (`on_rejoined`).

Placements: a version per app, from one cluster-wide counter (never reused, so a placement
deleted and made again cannot pass for the one a gateway read). `put` is a compare-and-set
script on it; `place_app` reads, computes with `place()`, and retries on a conflict starting
from the winner's placement, so racing gateways end on one answer.

(Scripts that name keys from a prefix, like live_workers, assume a single Redis, not a
Redis Cluster.)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from faasd_py.cluster._keys import call_redis, redis_name
from faasd_py.cluster._placement import AppDemand, WorkerLoad, place
from faasd_py.errors import Conflict, Unavailable

T = TypeVar("T")

_log = logging.getLogger(__name__)

_PREFIX = "faasd:cluster:"
_EPOCH = _PREFIX + "epoch"
_WORKERS = _PREFIX + "workers"
_WORKER = _PREFIX + "worker:"
_PLACEMENTS = _PREFIX + "placements"
_PLACEMENT_VERSION = _PREFIX + "placement-version"
_TIMEOUT = 5.0  # seconds a call outside the heartbeat may take
_PLACE_ATTEMPTS = 5

# A counter that starts over starts at Redis's clock in microseconds (see the docstring).
# '%.0f': a Lua number this large would otherwise be written in exponent notation.
_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function next_id(counter)
  local v = redis.call('INCR', counter)
  if v == 1 then
    local t = redis.call('TIME')
    v = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', counter, string.format('%.0f', v))
  end
  return v
end
"""

# KEYS: worker, workers, epoch. ARGV: name, address, ttl ms, info, previous epoch.
# Returns {1, epoch}, or {0, address} when a live worker at another address holds the name.
_JOIN = (
    _LIB
    + """
local address = redis.call('HGET', KEYS[1], 'address')
if address and address ~= ARGV[2] then return {0, address} end
local epoch = next_id(KEYS[3])
if epoch <= tonumber(ARGV[5]) then
  epoch = tonumber(ARGV[5]) + 1
  redis.call('SET', KEYS[3], string.format('%.0f', epoch))
end
local now = now_ms()
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'epoch', string.format('%.0f', epoch), 'address', ARGV[2],
  'info', ARGV[4], 'started', now, 'beat', now)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return {1, epoch}
"""
)

# KEYS: worker, workers. ARGV: name, epoch, ttl ms, info. Returns 1, or 0 when the key is gone
# or holds another epoch (then nothing is touched).
_RENEW = (
    _LIB
    + """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'info', ARGV[4], 'beat', now_ms())
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: worker, workers. ARGV: name, epoch. Deletes the registration if it is still this one.
_LEAVE = """
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
"""

# KEYS: workers. ARGV: worker key prefix. Returns {name, epoch, address, info, started, beat}
# per live worker; names whose key expired leave the set.
_LIVE = """
local live = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', ARGV[1] .. name, 'epoch', 'address', 'info', 'started', 'beat')
  if h[1] then
    table.insert(live, {name, h[1], h[2], h[3], h[4], h[5]})
  else
    redis.call('SREM', KEYS[1], name)
  end
end
return live
"""

# KEYS: placements, version counter. ARGV: app, expected version ('' for none), workers JSON.
# Returns the new version, or 0 when the app's placement is not the expected one.
_PUT = (
    _LIB
    + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if current then return 0 end
elseif not current or string.match(current, '^%d+') ~= ARGV[2] then
  return 0
end
local v = next_id(KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', v) .. ' ' .. ARGV[3])
return v
"""
)


class ClusterUnavailable(Unavailable):
    """The cluster store (Redis) cannot be reached or failed (503)."""

    def __init__(self, store: str, cause: str) -> None:
        super().__init__(
            f"cluster store unavailable ({store}): {cause}; check that Redis is reachable "
            "from this host, then retry"
        )
        self.store = store
        self.cause = cause


@dataclass(frozen=True)
class WorkerReport:
    """What a worker tells the cluster with each heartbeat."""

    load: WorkerLoad
    isolation: str
    channels: tuple[str, ...]
    apps: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        load = self.load
        return {
            "load": {
                "cores": load.cores,
                "memory": load.memory,
                "memory_reserved": load.memory_reserved,
                "cpu_load": load.cpu_load,
                "app_reserved": dict(load.app_reserved),
            },
            "isolation": self.isolation,
            "channels": list(self.channels),
            "apps": list(self.apps),
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> WorkerReport:
        load = data["load"]
        return cls(
            WorkerLoad(
                name,
                float(load["cores"]),
                int(load["memory"]),
                int(load["memory_reserved"]),
                float(load["cpu_load"]),
                tuple((str(app), int(b)) for app, b in load.get("app_reserved", {}).items()),
            ),
            str(data["isolation"]),
            tuple(data["channels"]),
            tuple(data["apps"]),
        )


@dataclass(frozen=True)
class WorkerInfo:
    """A live worker as the cluster sees it. Times are wall-clock seconds of Redis's clock."""

    name: str
    address: str  # "host:port" gateways connect to
    epoch: int
    load: WorkerLoad
    isolation: str
    channels: tuple[str, ...]
    apps: tuple[str, ...]
    started_at: float
    heartbeat_at: float

    def to_json(self) -> dict[str, Any]:
        report = WorkerReport(self.load, self.isolation, self.channels, self.apps).to_json()
        return {
            "name": self.name,
            "address": self.address,
            "epoch": self.epoch,
            **report,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
        }


@dataclass(frozen=True)
class Placement:
    app: str
    workers: tuple[str, ...]
    version: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _call(redis: aioredis.Redis, awaitable: Awaitable[T], seconds: float = _TIMEOUT) -> T:
    """`awaitable`'s result, or ClusterUnavailable naming the store."""
    name = redis_name(redis)
    return await call_redis(awaitable, name, seconds, lambda cause: ClusterUnavailable(name, cause))


Callback = Callable[[], object]  # may return an awaitable, which is awaited


class Membership:
    """A worker's registration and its heartbeat lease.

    `report()` is called for each heartbeat. `on_fenced()` is called once when the lease is
    lost (renewals failed until it ran out, or the registration vanished or was taken over):
    the worker must stop taking invocations. `on_rejoined(epoch)` is called when a fenced
    worker has joined again with a new epoch: its apps count as gone (the cluster may have
    placed them elsewhere meanwhile), so it drops them. Either may return an awaitable, which
    the heartbeat awaits before it goes on (keep it short; leave() may be called from it); an
    error in one is logged, it does not stop the heartbeat."""

    def __init__(
        self,
        redis: aioredis.Redis,
        name: str,
        address: str,
        *,
        ttl: float,
        report: Callable[[], WorkerReport],
        on_fenced: Callback | None = None,
        on_rejoined: Callable[[int], object] | None = None,
    ) -> None:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"a worker name must be non-empty without spaces, not {name!r}")
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        self._redis = redis
        self.name = name
        self.address = address
        self.ttl = ttl
        self._report = report
        self.on_fenced = on_fenced
        self.on_rejoined = on_rejoined
        self._key = _WORKER + name
        self._ttl_ms = max(1, round(ttl * 1000))
        self._interval = ttl / 3
        self._epoch = 0
        self._lease_until = 0.0  # monotonic
        self._fenced = False
        self._info = ""  # the last report's JSON, reused when report() fails
        self._task: asyncio.Task[None] | None = None
        self._join = redis.register_script(_JOIN)
        self._renew = redis.register_script(_RENEW)
        self._leave = redis.register_script(_LEAVE)

    @property
    def epoch(self) -> int:
        """The epoch of the current registration; 0 before the first join."""
        return self._epoch

    @property
    def holds_lease(self) -> bool:
        return not self._fenced and self._epoch > 0 and time.monotonic() < self._lease_until

    async def join(self) -> int:
        """Register (again) with a new epoch and return it. Conflict when a live worker at
        another address holds the name; ClusterUnavailable when Redis does not answer."""
        sent = time.monotonic()
        keys = [self._key, _WORKERS, _EPOCH]
        args: list[str | int] = [
            self.name,
            self.address,
            self._ttl_ms,
            self._report_json(),
            self._epoch,
        ]
        ok, value = await _call(self._redis, self._join(keys=keys, args=args))
        if not ok:
            raise Conflict(
                f"worker name {self.name!r} is taken by a live worker at {_text(value)}; "
                f"give this worker another --name, or stop that one (its registration "
                f"expires {self.ttl:g}s after its last heartbeat)"
            )
        self._epoch = int(value)
        self._lease_until = sent + self.ttl
        self._fenced = False
        return self._epoch

    def start(self) -> None:
        """Heartbeat every ttl/3 in a task, from now until leave()."""
        if self._epoch == 0:
            raise RuntimeError("Membership.start() before join()")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._beat())

    async def leave(self) -> None:
        """Stop the heartbeat and deregister (a graceful stop): gateways stop seeing this
        worker at once rather than when its lease runs out."""
        task, self._task = self._task, None
        # Called from a callback the heartbeat runs (on_fenced, say): the heartbeat sees
        # that it is no longer the task and ends by itself.
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        epoch, self._epoch, self._fenced = self._epoch, 0, False
        if epoch:
            script = self._leave(keys=[self._key, _WORKERS], args=[self.name, epoch])
            await _call(self._redis, script)

    # --- the heartbeat -------------------------------------------------------------------------

    async def _beat(self) -> None:
        while self._task is asyncio.current_task():
            delay = self._interval
            if not self._fenced:
                delay = min(delay, max(0.0, self._lease_until - time.monotonic()))
            await asyncio.sleep(delay)
            if self._fenced:
                await self._rejoin()
            elif time.monotonic() >= self._lease_until:
                await self._fence("renewals failed until the lease ran out")
            else:
                await self._renew_once()

    async def _renew_once(self) -> None:
        sent = time.monotonic()
        keys = [self._key, _WORKERS]
        args: list[str | int] = [self.name, self._epoch, self._ttl_ms, self._report_json()]
        try:
            # Bounded by the interval, so that a Redis that stopped answering does not hold
            # the next beat (nor the fencing) back.
            async with asyncio.timeout(self._interval):
                renewed = await self._renew(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            _log.warning("worker %s: heartbeat failed: %s", self.name, exc or type(exc).__name__)
            return
        if renewed:
            self._lease_until = sent + self.ttl
        else:
            await self._fence("its registration expired or was taken over")

    async def _fence(self, why: str) -> None:
        self._fenced = True
        _log.warning(
            "worker %s: lease lost (%s): taking no invocations until it joins again",
            self.name,
            why,
        )
        await _notify(self.on_fenced)

    async def _rejoin(self) -> None:
        try:
            epoch = await self.join()
        except (Conflict, Unavailable) as exc:
            _log.info("worker %s: cannot join again yet: %s", self.name, exc.message)
            return
        _log.warning("worker %s: joined again with epoch %d", self.name, epoch)
        await _notify(self.on_rejoined, epoch)

    def _report_json(self) -> str:
        try:
            report = self._report()
            if report.load.name != self.name:
                report = replace(report, load=replace(report.load, name=self.name))
            self._info = json.dumps({"address": self.address, **report.to_json()})
        except Exception:
            # A bug in the report must not cost the worker its lease: the last one stands.
            _log.exception("worker %s: report() failed; sending the previous report", self.name)
            if not self._info:
                raise
        return self._info


async def _notify(callback: Callable[..., object] | None, *args: Any) -> None:
    if callback is None:
        return
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        _log.exception("a membership callback failed")


async def live_workers(redis: aioredis.Redis) -> list[WorkerInfo]:
    """The workers whose lease has not run out, sorted by name."""
    script = redis.register_script(_LIVE)
    rows: list[Any] = await _call(redis, script(keys=[_WORKERS], args=[_WORKER]))
    workers = []
    for row in rows:
        name, epoch, address, info, started, beat = (_text(v) for v in row)
        try:
            report = WorkerReport.from_json(name, json.loads(info))
        except (ValueError, KeyError, TypeError) as exc:
            _log.error("worker %s: unreadable registration: %s", name, exc)
            continue
        workers.append(
            WorkerInfo(
                name,
                address,
                int(epoch),
                report.load,
                report.isolation,
                report.channels,
                report.apps,
                int(started) / 1000,
                int(beat) / 1000,
            )
        )
    return sorted(workers, key=lambda w: w.name)


class Placements:
    """The apps' placements, one record per app with a version (compare-and-set)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._put = redis.register_script(_PUT)

    async def get(self, app: str) -> Placement | None:
        value = await _call(self._redis, self._redis.hget(_PLACEMENTS, app))
        return None if value is None else _placement(app, value)

    async def all(self) -> dict[str, Placement]:
        rows: dict[Any, Any] = await _call(self._redis, self._redis.hgetall(_PLACEMENTS))
        placements = (_placement(_text(app), value) for app, value in rows.items())
        return {p.app: p for p in sorted(placements, key=lambda p: p.app)}

    async def put(
        self, app: str, workers: tuple[str, ...], expected_version: int | None
    ) -> Placement | None:
        """Place `app` on `workers` if its placement is still `expected_version` (None: it
        has none); the new placement, or None when another gateway changed it first."""
        if not workers:
            raise ValueError(f"a placement of {app} needs at least one worker")
        expected = "" if expected_version is None else str(expected_version)
        args = [app, expected, json.dumps(list(workers))]
        keys = [_PLACEMENTS, _PLACEMENT_VERSION]
        version = int(await _call(self._redis, self._put(keys=keys, args=args)))
        return Placement(app, tuple(workers), version) if version else None

    async def delete(self, app: str) -> None:
        await _call(self._redis, self._redis.hdel(_PLACEMENTS, app))


def _placement(app: str, value: bytes | str) -> Placement:
    version, _, workers = _text(value).partition(" ")
    return Placement(app, tuple(json.loads(workers)), int(version))


async def place_app(
    placements: Placements, demand: AppDemand, workers: list[WorkerInfo]
) -> Placement:
    """Place `demand.app` on the live `workers` by `place()` and record it; on a race with
    another gateway, start again from the winner's placement (which `place()` keeps while it
    holds the demand). Returns the placement in force."""
    if not workers:
        raise Unavailable(
            f"no live worker in the cluster to run app {demand.app}: start one with "
            "`faasd-py worker --cluster ...`"
        )
    loads = [w.load for w in workers]
    for _ in range(_PLACE_ATTEMPTS):
        current = await placements.get(demand.app)
        chosen = place(demand, loads, current.workers if current else ())
        if current is not None and chosen == current.workers:
            return current
        expected = current.version if current else None
        if (placed := await placements.put(demand.app, chosen, expected)) is not None:
            return placed
    if (current := await placements.get(demand.app)) is not None:
        return current  # still changing under us: the last writer's answer stands
    raise Unavailable(f"the placement of app {demand.app} kept changing under this gateway; retry")
