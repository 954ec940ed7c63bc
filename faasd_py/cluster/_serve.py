"""`faasd-py gateway`, `faasd-py worker` and `faasd-py up --cluster`: a gateway, a worker or
both in one process, joined to a cluster through its Redis.

Everything shared lives in Redis: the registry (secrets sealed with the cluster key), the
placements, the workers' leases, the packages, the async queue (unless --queue names another)
and, unless --storage names another, the functions' storage with the apps' cache and
keep-alive statistics, so an app that moves to another worker keeps its data and its history.

Shutdown: a worker leaves the cluster first (gateways stop sending it calls), then drains as
`up` does; a gateway stops taking calls, lets in-flight ones finish, then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from rich.console import Console

from faasd_py.cluster._backend import ClusterWorker
from faasd_py.cluster._credentials import cluster_credentials
from faasd_py.cluster._host import HostSettings, WorkerHost
from faasd_py.cluster._keys import ClusterKey, join_cluster_key
from faasd_py.config import Config
from faasd_py.gateway._keys import CLUSTER_INFO
from faasd_py.gateway._metrics import GatewayMetrics
from faasd_py.modes import private_dir
from faasd_py.redis_connect import connect, redact
from faasd_py.server import (
    SHUTTING_DOWN,
    Gateway,
    add_worker_metrics,
    open_gateway,
    serve_until_signalled,
    worker_storage,
)
from faasd_py.store import RedisRegistry
from faasd_py.worker import Worker

_REDIS_TIMEOUT = 5.0  # seconds one registry or cluster call may take before it is a 503


@dataclass(frozen=True)
class ClusterSettings:
    url: str  # the cluster's Redis
    key_file: Path  # the cluster key (FAASD_CLUSTER_KEY overrides it)
    gateway: bool  # serve the gateway API here
    host: HostSettings | None  # run a worker here


@dataclass
class ClusterPlatform:
    """What this process runs of the cluster; `stop` it."""

    config: Config
    settings: ClusterSettings
    redis: aioredis.Redis
    registry: RedisRegistry
    worker: Worker | None = None
    host: WorkerHost | None = None
    backend: ClusterWorker | None = None
    gateway: Gateway | None = None
    credentials_created: bool = False


def run(config: Config, settings: ClusterSettings) -> None:
    """Serve until SIGINT or SIGTERM."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, settings))


async def start(config: Config, settings: ClusterSettings) -> ClusterPlatform:
    private_dir(config.data_dir)
    # The cluster's Redis holds the async queue and the functions' storage unless told otherwise.
    config = replace(
        config, queue=config.queue or settings.url, storage=config.storage or settings.url
    )
    redis = connect(settings.url, timeout=_REDIS_TIMEOUT)
    platform = None
    try:
        key = await join_cluster_key(redis, settings.key_file, create=settings.gateway)
        registry = RedisRegistry(redis, key, name=redact(settings.url))
        platform = ClusterPlatform(config, settings, redis, registry)
        if settings.host is not None:
            worker = Worker(config, worker_storage(config, registry), policy_states=registry)
            platform.worker = worker
            await worker.start()
            platform.host = WorkerHost(config, settings.host, worker, redis, key)
            await platform.host.start()
        if settings.gateway:
            await _start_gateway(platform, key)
    except BaseException:
        if platform is not None:
            await stop(platform)
        else:
            await redis.aclose()
        raise
    return platform


async def _start_gateway(platform: ClusterPlatform, key: ClusterKey) -> None:
    config, redis, registry = platform.config, platform.redis, platform.registry
    credentials, platform.credentials_created = await cluster_credentials(
        redis, key, config.credentials_dir
    )
    backend = ClusterWorker(config, redis, registry, key, lease=_lease(platform.settings))
    platform.backend = backend
    await backend.start()
    metrics = GatewayMetrics(backend.all_statistics)
    metrics.add_workers(backend.worker_gauges)
    if platform.worker is not None:
        add_worker_metrics(metrics, platform.worker)
    gateway = open_gateway(
        config,
        registry,
        backend,
        credentials,
        metrics,
        backend.queue_policies,
        backend.queue_policy,
    )
    gateway.app[CLUSTER_INFO] = backend.cluster
    platform.gateway = gateway
    await gateway.listen(config.host, config.port)


def _lease(settings: ClusterSettings) -> float:
    return settings.host.lease if settings.host is not None else DEFAULT_LEASE


DEFAULT_LEASE = 6.0  # seconds a worker's registration lives without a heartbeat


async def stop(platform: ClusterPlatform) -> None:
    timeout = platform.config.shutdown_timeout
    worker = platform.worker
    if platform.host is not None:
        await platform.host.stop()  # out of the cluster first: gateways stop sending calls
    if platform.gateway is not None:
        turn_away = (lambda: worker.reject_new(SHUTTING_DOWN)) if worker is not None else _nothing
        await platform.gateway.stop(timeout, turn_away)
    elif worker is not None:
        worker.reject_new(SHUTTING_DOWN)
    if worker is not None:
        await worker.close(timeout)
    if platform.backend is not None:
        await platform.backend.close()
    if platform.gateway is not None:
        await platform.gateway.close()
    await platform.registry.close()
    with contextlib.suppress(Exception):
        await platform.redis.aclose()


def _nothing() -> None:
    pass


async def serve(config: Config, settings: ClusterSettings, console: Console | None = None) -> None:
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    platform = await start(config, settings)

    async def started() -> None:
        _banner(console, platform)

    await serve_until_signalled(console, started, lambda: stop(platform))


def _banner(console: Console, platform: ClusterPlatform) -> None:
    config, settings = platform.config, platform.settings
    console.print(f"[bold green]faasd-py[/] joined cluster [bold]{redact(settings.url)}[/]")
    if platform.gateway is not None:
        created = "created now" if platform.credentials_created else "the cluster's"
        console.print(f"  gateway:      listening on [bold]{platform.gateway.url}[/]")
        console.print(
            f"  credentials:  {config.credentials_dir}/basic-auth-password ({created}, mode 0600)"
        )
    if platform.host is not None and platform.worker is not None:
        host = platform.host.settings
        console.print(
            f"  worker:       {host.name}, advertised as {host.advertise} "
            f"(listening on {host.listen[0]}:{platform.host.port}), lease {host.lease:g}s"
        )
        console.print(f"  isolation:    {platform.worker.isolation}")
    console.print(f"  data dir:     {config.data_dir}")
    console.print(f"  cluster key:  {settings.key_file} (FAASD_CLUSTER_KEY overrides it)")
    console.print("  stop with Ctrl-C or SIGTERM")
