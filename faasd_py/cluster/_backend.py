"""The gateway's backend in a cluster: it places each app on workers (faasd_py.cluster's
placement, recorded in Redis so that every gateway agrees) and drives them over the transport.

A gateway keeps no state that another gateway lacks: the specs it holds are the registry's
(reloaded on the registry's change messages, and every few seconds in case one was missed),
the workers are those with a live lease in Redis, and an app's workers are its placement in
Redis. A worker that lacks a function it is sent (it restarted, or the app was just placed on
it) answers so, and the gateway applies the function there and calls again.

A worker that cannot be reached fails the calls sent to it at once (502 naming it) and is left
out of placement by this gateway until its lease expires or it joins again under a new epoch; the
next call of its apps places them on the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from faasd_py.cluster import _wire
from faasd_py.cluster._keys import ClusterKey
from faasd_py.cluster._membership import Placement, Placements, WorkerInfo, live_workers, place_app
from faasd_py.cluster._packages import package_digest
from faasd_py.cluster._placement import AppDemand, pick
from faasd_py.cluster._transport import PeerUnreachable, RpcClient
from faasd_py.config import Config, live_policy
from faasd_py.errors import BadRequest, NotFound, SpecError, Unavailable
from faasd_py.protocol import FRAME_OVERHEAD, Request
from faasd_py.queue import QueuePolicy, queue_policy
from faasd_py.spec import ANNOTATION_POLICY, DEFAULT_NAMESPACE, FunctionSpec
from faasd_py.store import CHANGES, Registry, fetch_secrets
from faasd_py.worker import LifecycleStatistics, LogEntry, Outcome, PoolStatistics

logger = logging.getLogger(__name__)

_RELOAD_EVERY = 5.0  # seconds between full reloads of the specs (a missed change message)
_PLACEMENT_FRESH = 1.0  # seconds a placement read from Redis is used without reading it again
_CONTROL_TIMEOUT = 30.0  # seconds a control call (apply, scale, ...) may take on a worker
_STATS_TIMEOUT = 2.0
_LOG_POLL = 0.5  # seconds between reads of a followed function's logs


@dataclass(frozen=True)
class WorkerGauges:
    heartbeat_age: float
    cores: float
    cpu_load: float
    memory: int
    memory_reserved: int
    apps: int


class ClusterWorker:
    """`start`, then `close`."""

    isolation = "cluster"

    def __init__(
        self,
        config: Config,
        redis: aioredis.Redis,
        registry: Registry,
        key: ClusterKey,
        *,
        lease: float,
    ) -> None:
        self._config = config
        self._redis = redis
        self._registry = registry
        self._key = key
        self._lease = lease
        self._placements = Placements(redis)
        self._specs: dict[str, FunctionSpec] = {}
        self._replicas: dict[str, int | None] = {}
        self._workers: dict[str, WorkerInfo] = {}
        self._clients: dict[str, RpcClient] = {}
        self._placed: dict[str, tuple[Placement, float]] = {}  # by app, with when it was read
        self._suspects: dict[str, tuple[int, float]] = {}  # worker -> (epoch, since)
        self._outstanding: dict[str, int] = {}  # calls in flight, by worker
        self._turns = itertools.count()
        self._stats: dict[str, PoolStatistics] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._reload_specs()
        await self._refresh_workers()
        self._tasks = [
            asyncio.create_task(self._watch_registry()),
            asyncio.create_task(self._refresh_workers_forever()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._clients.values()), return_exceptions=True)

    # --- what the gateway asks -----------------------------------------------------------------

    async def check_deployable(self, spec: FunctionSpec) -> None:
        """What can be checked without a worker: the package is in the cluster, the policy and
        the queue annotations are valid (a worker's own limits are checked when it applies)."""
        if await package_digest(self._redis, spec.image) is None:
            raise BadRequest(
                f"image {spec.image!r} is not in the cluster; build and push it: "
                "`faasd-py build -f stack.yml --push --cluster REDIS_URL`"
            )
        text = spec.policy or self._config.policy
        try:
            live_policy(text, self._config.bin_width)
        except ValueError as exc:
            raise SpecError(f"annotations.{ANNOTATION_POLICY}", str(exc)) from None
        queue_policy(spec.annotations, self._config.queue_policy)

    async def apply(self, spec: FunctionSpec, secrets: Mapping[str, bytes]) -> None:
        self._specs[spec.ref] = spec
        placement = await self._placement(spec, fresh=True)
        await asyncio.gather(*(self._apply_on(w, spec, secrets) for w in placement.workers))

    async def remove(self, name: str) -> None:
        spec = self._specs.pop(name, None)
        placement = None if spec is None else await self._placements.get(spec.app)
        # Not known here yet (deployed through another gateway a moment ago): every worker.
        workers = self._usable() if placement is None else placement.workers
        await asyncio.gather(
            *(self._control(w, "remove", {"ref": name}) for w in workers),
            return_exceptions=True,  # a worker that is gone has nothing to remove
        )
        if spec is not None and not any(s.app == spec.app for s in self._specs.values()):
            await self._placements.delete(spec.app)
            self._placed.pop(spec.app, None)

    async def scale(self, name: str, replicas: int) -> None:
        spec = await self._spec(name)
        self._replicas[name] = replicas
        placement = await self._placement(spec, fresh=True)
        args = {"ref": name, "replicas": math.ceil(replicas / self._spread(spec.app))}
        for worker in placement.workers:
            if (await self._control(worker, "scale", args)).get("missing"):
                # Newly placed there: applying it brings the replicas (self._replicas).
                await self._apply_on(worker, spec, await self._secrets(spec), quiet=False)

    async def update_secret(
        self, name: str, value: bytes, *, namespace: str = DEFAULT_NAMESPACE
    ) -> None:
        """Every live worker hears it (a worker applies it to the functions that use it)."""
        args = {"namespace": namespace, "name": name, "value": value}
        await asyncio.gather(
            *(self._control(w, "secret", args) for w in self._usable()),
            return_exceptions=True,  # an unreachable worker gets the value when re-applied
        )

    async def invoke(self, name: str, request: Request) -> Outcome:
        spec = self._specs.get(name) or await self._spec(name)  # (no await when held here)
        placement = await self._placement(spec)
        # Least calls in flight; ties go round the app's workers (instances on each are used).
        workers = placement.workers
        turn = next(self._turns) % len(workers)
        worker = pick(workers[turn:] + workers[:turn], self._outstanding)
        client = self._client(worker)
        args = _wire.invoke_args(name, request, spec.exec_timeout)
        timeout = spec.exec_timeout + self._config.start_timeout + 5
        self._outstanding[worker] = self._outstanding.get(worker, 0) + 1
        started = time.perf_counter()
        try:
            reply = await client.call("invoke", args, timeout)
            if reply.get("missing"):
                await self._apply_on(worker, spec, await self._secrets(spec), quiet=False)
                reply = await client.call("invoke", args, timeout)
        except PeerUnreachable:
            self._suspect(worker)
            self._placed.pop(spec.app, None)
            raise
        finally:
            self._outstanding[worker] -= 1
        if reply.get("missing"):
            raise Unavailable(f"worker {worker} dropped function {name} as it was applied; retry")
        return _wire.outcome_of(reply, time.perf_counter() - started)

    async def refresh(self) -> None:
        """Every live worker's figures, summed per function."""
        workers = self._usable()
        replies = await asyncio.gather(
            *(self._clients_call(w, "stats", {}, _STATS_TIMEOUT) for w in workers),
            return_exceptions=True,
        )
        parts: dict[str, list[PoolStatistics]] = {}
        for reply in replies:
            if isinstance(reply, dict):
                for ref, stats in _wire.statistics_of(reply).items():
                    parts.setdefault(ref, []).append(stats)
        self._stats = {ref: _wire.sum_statistics(p) for ref, p in parts.items()}

    def statistics(self, name: str) -> PoolStatistics | None:
        return self._stats.get(name)

    def all_statistics(self) -> dict[str, PoolStatistics]:
        return dict(self._stats)

    def policy_statistics(self, name: str) -> LifecycleStatistics | None:
        return None  # the keep-alive figures stay on the workers (their /metrics)

    def logs(self, name: str) -> _ClusterLogs:
        return _ClusterLogs(self, name)

    def worker_gauges(self) -> dict[str, WorkerGauges]:
        """Each live worker's figures for /metrics, as its last heartbeat gave them."""
        now = time.time()
        return {
            w.name: WorkerGauges(
                heartbeat_age=max(0.0, now - w.heartbeat_at),
                cores=w.load.cores,
                cpu_load=w.load.cpu_load,
                memory=w.load.memory,
                memory_reserved=w.load.memory_reserved,
                apps=len(w.apps),
            )
            for w in self._workers.values()
        }

    def queue_policy(self, name: str) -> QueuePolicy | None:
        spec = self._specs.get(name)
        return None if spec is None else queue_policy(spec.annotations, self._config.queue_policy)

    def queue_policies(self) -> dict[str, QueuePolicy]:
        return {
            ref: queue_policy(s.annotations, self._config.queue_policy)
            for ref, s in self._specs.items()
        }

    async def cluster(self) -> dict[str, Any]:
        """The workers with their capacity, use and heartbeat age, and the placements."""
        now = time.time()
        workers = await live_workers(self._redis)
        placements = await self._placements.all()
        return {
            "workers": [
                {**w.to_json(), "heartbeatAgeSeconds": round(now - w.heartbeat_at, 3)}
                for w in workers
            ],
            "placements": {app: list(p.workers) for app, p in sorted(placements.items())},
        }

    # --- placement -----------------------------------------------------------------------------

    async def _spec(self, name: str) -> FunctionSpec:
        """The function's spec: as held here, else as the registry has it now (deployed
        through another gateway a moment ago); NotFound when it has none."""
        spec = self._specs.get(name)
        if spec is None:
            stored = await self._registry.get_function(name)
            if stored is None:
                raise NotFound(f"function {name!r} not found; deploy it with `faasd-py deploy`")
            spec = self._specs[name] = stored.spec
        return spec

    def _usable(self) -> list[str]:
        return [name for name in self._workers if name not in self._suspects]

    def _demand(self, spec: FunctionSpec) -> AppDemand:
        """What `spec`'s app needs: its largest instance, times the most instances one of its
        functions asks for (its scale floor, or what scale-function set)."""
        specs = [s for s in self._specs.values() if s.app == spec.app and s.ref != spec.ref]
        specs.append(spec)  # (a reload of the specs may not have it yet)
        memory = max((s.limits.memory_bytes or self._config.instance_memory) for s in specs)
        wanted = [max(1, s.scale_min, self._replicas.get(s.ref) or 0) for s in specs]
        return AppDemand(spec.app, instance_memory=memory, instances=max(wanted))

    async def _placement(self, spec: FunctionSpec, *, fresh: bool = False) -> Placement:
        """The app's workers, placing it when it has none that this gateway can use."""
        cached = self._placed.get(spec.app)
        now = time.monotonic()
        if cached is not None and not fresh and now - cached[1] < _PLACEMENT_FRESH:
            return cached[0]
        try:
            return await self._place(spec, now)
        except Unavailable:
            # Redis unreachable: the workers it had keep serving the app until their own
            # leases run out (they fence themselves then).
            if cached is None or fresh or cached[0].workers[0] in self._suspects:
                raise
            return cached[0]

    async def _place(self, spec: FunctionSpec, now: float) -> Placement:
        await self._refresh_workers()  # placing is rare: on the freshest view of the workers
        usable = [self._workers[name] for name in self._usable()]
        if not usable:
            raise Unavailable(
                "no worker holds a live lease in the cluster (none is started, or none has "
                "reached Redis within its lease, as in a Redis failover longer than --lease); "
                "start one: `faasd-py worker --cluster REDIS_URL --name NAME --advertise "
                "ADDR:PORT`"
            )
        placed = await self._placements.all()
        usable = [self._with_placed(info, placed, spec.app) for info in usable]
        placement = await place_app(self._placements, self._demand(spec), usable)
        self._placed[spec.app] = (placement, now)
        return placement

    def _with_placed(
        self, info: WorkerInfo, placed: Mapping[str, Placement], app: str
    ) -> WorkerInfo:
        """`info` with what the apps placed on it reserve before its heartbeat reports them
        (a burst of deploys would otherwise all land on the worker that looked emptiest)."""
        one_of = {s.app: s for s in self._specs.values()}  # a function of each app
        pending = sum(
            self._demand(one_of[other]).instance_memory
            for other, placement in placed.items()
            if other != app
            and other in one_of
            and info.name in placement.workers
            and other not in info.apps
        )
        load = replace(info.load, memory_reserved=info.load.memory_reserved + pending)
        return replace(info, load=load)

    def _suspect(self, worker: str) -> None:
        info = self._workers.get(worker)
        self._suspects[worker] = (info.epoch if info else -1, time.monotonic())
        logger.warning("worker %s cannot be reached: its apps go to other workers", worker)

    # --- talking to workers --------------------------------------------------------------------

    def _client(self, worker: str) -> RpcClient:
        info = self._workers.get(worker)
        if info is None:
            raise PeerUnreachable(f"worker {worker} is not in the cluster (no live lease)")
        client = self._clients.get(worker)
        if client is None or client.address != info.address:
            if client is not None:  # the worker came back at another address
                self._closing(client)
            max_frame = self._config.max_body + FRAME_OVERHEAD
            client = RpcClient(worker, info.address, self._key.mac, max_frame=max_frame)
            self._clients[worker] = client
        return client

    def _closing(self, client: RpcClient) -> None:
        task = asyncio.create_task(client.close())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _clients_call(
        self, worker: str, op: str, args: dict[str, Any], seconds: float
    ) -> dict[str, Any]:
        try:
            return await self._client(worker).call(op, args, seconds)
        except PeerUnreachable:
            self._suspect(worker)
            raise

    async def _control(self, worker: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self._clients_call(worker, op, args, _CONTROL_TIMEOUT)

    async def _apply_on(
        self, worker: str, spec: FunctionSpec, secrets: Mapping[str, bytes], *, quiet: bool = True
    ) -> None:
        """Apply `spec` there; with `quiet`, a worker that cannot be reached is left to the
        next call (which places the app elsewhere) rather than failing the deploy."""
        args = {"spec": spec.to_json(), "secrets": dict(secrets)}
        try:
            await self._control(worker, "apply", args)
            replicas = self._replicas.get(spec.ref)
            if replicas is not None:
                share = math.ceil(replicas / self._spread(spec.app))
                await self._control(worker, "scale", {"ref": spec.ref, "replicas": share})
        except PeerUnreachable:
            if not quiet:
                raise
            logger.warning("cannot apply %s on worker %s now", spec.ref, worker)

    def _spread(self, app: str) -> int:
        """Workers the app is placed on (as last read): each runs a share of its replicas."""
        cached = self._placed.get(app)
        return 1 if cached is None else len(cached[0].workers)

    async def _secrets(self, spec: FunctionSpec) -> dict[str, bytes]:
        return await fetch_secrets(self._registry, spec.secrets, spec.namespace)

    # --- keeping up with Redis -----------------------------------------------------------------

    async def _reload_specs(self) -> None:
        stored = await self._registry.list_functions()
        self._specs = {s.spec.ref: s.spec for s in stored}
        self._replicas = {s.spec.ref: s.replicas for s in stored}

    async def _watch_registry(self) -> None:
        """Reload the specs on every change message, and every few seconds anyway."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGES)
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=_RELOAD_EVERY
                        )
                        del message  # any change, or none for a while: read them all again
                        await self._reload_specs()
            except (Unavailable, aioredis.RedisError, OSError) as exc:
                logger.warning("cannot follow the registry's changes: %s", exc)
                await asyncio.sleep(1.0)

    async def _refresh_workers(self) -> None:
        workers = await live_workers(self._redis)
        self._workers = {w.name: w for w in workers}
        now = time.monotonic()
        for name, (epoch, since) in list(self._suspects.items()):
            info = self._workers.get(name)
            # Gone for good, or back as a new registration, or long enough to try again.
            if info is None or info.epoch != epoch or now - since > 2 * self._lease:
                del self._suspects[name]
        for name in list(self._clients):
            if name not in self._workers:
                await self._clients.pop(name).close()

    async def _refresh_workers_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self._refresh_workers()
            except Unavailable as exc:
                logger.warning("cannot read the cluster's workers: %s", exc.message)


class _ClusterLogs:
    """A function's logs gathered from the workers its app is placed on."""

    def __init__(self, backend: ClusterWorker, name: str) -> None:
        self._backend = backend
        self._name = name

    async def _read(
        self, tail: int | None, since: float | None, instance: str | None
    ) -> list[LogEntry]:
        backend = self._backend
        placement = await backend._placement(await backend._spec(self._name))
        args = {"ref": self._name, "tail": tail, "since": since, "instance": instance}
        replies = await asyncio.gather(
            *(backend._clients_call(w, "logs", args, _STATS_TIMEOUT) for w in placement.workers),
            return_exceptions=True,
        )
        entries = [e for r in replies if isinstance(r, dict) for e in _wire.entries_of(r)]
        entries.sort(key=lambda e: e.timestamp)
        return entries if tail is None else entries[-tail:]

    async def recent(
        self, tail: int | None = None, since: float | None = None, instance: str | None = None
    ) -> list[LogEntry]:
        return await self._read(tail, since, instance)

    def follow(self) -> AsyncIterator[LogEntry]:
        return self._follow(time.time())

    async def _follow(self, since: float) -> AsyncIterator[LogEntry]:
        seen = since
        while True:
            await asyncio.sleep(_LOG_POLL)
            fresh: list[LogEntry] = []
            with contextlib.suppress(Unavailable, PeerUnreachable):
                fresh = [e for e in await self._read(None, seen, None) if e.timestamp > seen]
            for entry in fresh:
                yield entry
            if fresh:
                seen = fresh[-1].timestamp
