"""`faasd-py worker --cluster`: one host's `Worker`, serving gateways over the transport,
registered in Redis with a heartbeat lease.

The worker holds no desired state of its own: gateways apply functions to it when they place
an app here (or when an invocation finds the function missing, after a restart). It fetches a
function's package from the cluster by digest the first time it needs it. Two rules keep an app
from running as placed on two workers:

- fencing: once its lease has expired (Redis unreachable for a whole TTL) it answers every
  invocation with 503 until it has joined again; having joined again under a new epoch it drops
  every function (the gateways have placed its apps elsewhere meanwhile, and apply them again
  where they are placed);
- each heartbeat it drops the functions of apps that the cluster's placement no longer gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from faasd_py import native
from faasd_py.cluster import _wire
from faasd_py.cluster._keys import ClusterKey
from faasd_py.cluster._membership import Membership, Placements, WorkerReport, live_workers
from faasd_py.cluster._packages import fetch_package
from faasd_py.cluster._peers import OP as CACHE_GET
from faasd_py.cluster._peers import CachePeers, cache_get_op
from faasd_py.cluster._placement import WorkerLoad
from faasd_py.cluster._transport import RpcServer
from faasd_py.config import Config
from faasd_py.datapath.channel import KINDS
from faasd_py.errors import BadRequest, NotFound, Unavailable
from faasd_py.packages import PackageStore
from faasd_py.protocol import FRAME_OVERHEAD
from faasd_py.spec import parse_deployment
from faasd_py.worker import Worker

logger = logging.getLogger(__name__)

Op = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class HostSettings:
    name: str
    listen: tuple[str, int]  # where the transport listens
    advertise: str  # "host:port" that gateways connect to
    lease: float  # seconds a registration lives without a heartbeat


class WorkerHost:
    """`start`, then `stop`."""

    def __init__(
        self,
        config: Config,
        settings: HostSettings,
        worker: Worker,
        redis: aioredis.Redis,
        key: ClusterKey,
    ) -> None:
        self._config = config
        self.settings = settings
        self.worker = worker
        self._redis = redis
        self._packages = PackageStore(config.packages_dir)
        self._placements = Placements(redis)
        self._cpu = _CpuMeter()
        self._membership: Membership | None = None  # once listening (its port is known then)
        self._ops: dict[str, Op] = {
            "invoke": self._invoke,
            "apply": self._apply,
            "remove": self._remove,
            "scale": self._scale,
            "secret": self._secret,
            "stats": self._stats,
            "logs": self._logs,
        }
        # An app on several workers has one cache across them (faasd_py.cluster._peers): the
        # worker's caches ask the owners of keys, and answer them as owners.
        self.peers = CachePeers(settings.name, key.mac, max_frame=config.max_body + FRAME_OVERHEAD)
        caches = None if worker.storage is None else worker.storage.manager
        self._ops[CACHE_GET] = cache_get_op(caches.cache_of if caches else lambda app: None)
        if caches is not None:
            caches.set_peers(self.peers)
        self._server = RpcServer(
            self._handle, key.mac, max_frame=config.max_body + FRAME_OVERHEAD, name=settings.name
        )
        self._reconciler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._server.start(*self.settings.listen)
        host, _, port = self.settings.advertise.rpartition(":")
        if port == "0":  # "any free port": the one the server got
            self.settings = replace(self.settings, advertise=f"{host}:{self._server.port}")
        self._membership = Membership(
            self._redis,
            self.settings.name,
            self.settings.advertise,
            ttl=self.settings.lease,
            report=self._report,
            on_fenced=self._fenced,
            on_rejoined=self._rejoined,
        )
        await self.membership.join()
        self.membership.start()
        self._reconciler = asyncio.create_task(self._reconcile_forever())

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def membership(self) -> Membership:
        assert self._membership is not None, "start the host first"
        return self._membership

    async def stop(self) -> None:
        """Leave the cluster first (gateways stop sending), then stop serving."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        if self._membership is not None:
            with contextlib.suppress(Unavailable):
                await self._membership.leave()
        await self._server.close()
        await self.peers.close()

    # --- the ops ------------------------------------------------------------------------------

    async def _handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._ops.get(op)
        if handler is None:
            raise BadRequest(f"worker {self.settings.name}: unknown op {op!r}")
        return await handler(args)

    async def _invoke(self, args: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        if not self.membership.holds_lease:
            raise Unavailable(
                f"worker {self.settings.name} cannot reach the cluster's Redis and has lost its "
                "lease; its apps are placed elsewhere: retry"
            )
        ref = str(args["ref"])
        if self.worker.statistics(ref) is None:
            return {"missing": True}
        outcome = await self.worker.invoke(ref, _wire.request_of(args))
        return _wire.outcome_reply(outcome, time.perf_counter() - started)

    async def _apply(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = parse_deployment(args["spec"])
        secrets = {str(k): bytes(v) for k, v in args["secrets"].items()}
        await fetch_package(self._redis, spec.image, self._packages)
        if spec.app not in self._apps():  # it may have run elsewhere: its policy's history
            await self.worker.load_policy_states()
        self.worker.apply(spec, secrets)
        return {}

    async def _remove(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            self.worker.remove(str(args["ref"]))
        except NotFound:
            return {"removed": False}
        return {"removed": True}

    async def _scale(self, args: dict[str, Any]) -> dict[str, Any]:
        ref = str(args["ref"])
        if self.worker.statistics(ref) is None:
            return {"missing": True}  # the gateway applies it here first
        self.worker.scale(ref, int(args["replicas"]))
        return {}

    async def _secret(self, args: dict[str, Any]) -> dict[str, Any]:
        value = bytes(args["value"])
        self.worker.update_secret(str(args["name"]), value, namespace=str(args["namespace"]))
        return {}

    async def _stats(self, args: dict[str, Any]) -> dict[str, Any]:
        return _wire.statistics_reply(self.worker.all_statistics())

    async def _logs(self, args: dict[str, Any]) -> dict[str, Any]:
        logs = self.worker.logs(str(args["ref"]))
        entries = logs.recent(args.get("tail"), args.get("since"), args.get("instance"))
        return _wire.entries_reply(entries)

    # --- membership ---------------------------------------------------------------------------

    def _report(self) -> WorkerReport:
        admission = self.worker.admission_statistics()
        load = WorkerLoad(
            self.settings.name,
            cores=float(os.cpu_count() or 1),
            memory=admission.budget,
            memory_reserved=admission.reserved,
            cpu_load=self._cpu.busy_cores(),
            app_reserved=tuple(sorted(self.worker.reserved_by_app().items())),
        )
        return WorkerReport(
            load=load,
            isolation=self.worker.isolation,
            channels=tuple(k for k in KINDS if k != "shm" or native.HAS_NATIVE),
            apps=tuple(sorted(self._apps())),
        )

    def _apps(self) -> dict[str, list[str]]:
        """The functions here, by app."""
        apps: dict[str, list[str]] = {}
        for ref, app in self.worker.apps_of_functions().items():
            apps.setdefault(app, []).append(ref)
        return apps

    def _fenced(self) -> None:
        logger.warning(
            "worker %s lost its cluster lease (Redis unreachable): no new invocations until it "
            "joins again",
            self.settings.name,
        )

    def _rejoined(self, epoch: int) -> None:
        logger.warning(
            "worker %s joined the cluster again (epoch %d): its functions were placed elsewhere "
            "meanwhile and are dropped here",
            self.settings.name,
            epoch,
        )
        self._drop(list(self.worker.all_statistics()))

    def _drop(self, refs: list[str]) -> None:
        for ref in refs:
            with contextlib.suppress(NotFound):
                self.worker.remove(ref)

    async def _reconcile_forever(self) -> None:
        """Drop the functions of apps that the placement gives to other workers now."""
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            try:
                placements = await self._placements.all()
                workers = await live_workers(self._redis)
            except Unavailable:
                continue  # the membership's heartbeat fences this worker if it lasts
            self.peers.update(
                {app: p.workers for app, p in placements.items()},
                {w.name: w.address for w in workers},
            )
            for app, refs in self._apps().items():
                placement = placements.get(app)
                if placement is None or self.settings.name not in placement.workers:
                    logger.info(
                        "app %s is no longer placed on worker %s: dropping %s",
                        app,
                        self.settings.name,
                        ", ".join(refs),
                    )
                    self._drop(refs)


class _CpuMeter:
    """Cores this process kept busy since the last reading (its own and its children's CPU
    time; instances are children)."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._cpu = _cpu_seconds()

    def busy_cores(self) -> float:
        now, cpu = time.monotonic(), _cpu_seconds()
        busy = (cpu - self._cpu) / max(now - self._at, 1e-3)
        self._at, self._cpu = now, cpu
        return round(busy, 3)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
