"""`faasd-py up`: gateway and worker in one process, with embedded state and no other service.

Shutdown runs in a fixed order (uvicorn's): on SIGINT/SIGTERM the async queue's consumer stops
taking calls, the worker stops taking invocations (queued ones get 503; a queued async call is
retried later), the gateway stops accepting connections; in-flight invocations, sync and async,
finish within `shutdown_timeout`; then every instance stops, and the async queue and the
registry close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvloop
from aiohttp import web
from rich.console import Console

from faasd_py.cache import CacheManager, CacheSettings, StorageLimits, WorkerStorage
from faasd_py.cache._manager import StatsStore
from faasd_py.config import Config, live_policy
from faasd_py.datapath import doorbells
from faasd_py.errors import FaasdError, NotFound
from faasd_py.gateway import Credentials, load_or_create_credentials, make_app
from faasd_py.gateway._backend import FunctionWorker, LocalWorker
from faasd_py.gateway._connections import ConnectionLimits, GuardedRunner
from faasd_py.gateway._front import FrontSite
from faasd_py.gateway._keys import METRICS, AsyncCalls
from faasd_py.gateway._metrics import GatewayMetrics, QueueSnapshot
from faasd_py.heap import settle_heap
from faasd_py.modes import private_dir
from faasd_py.packages import PackageStore
from faasd_py.protocol import Request
from faasd_py.queue import (
    CallbackSender,
    CallQueue,
    Consumer,
    QueuePolicy,
    WorkerInvoker,
    open_queue,
)
from faasd_py.spec import load_stack
from faasd_py.storage import Quota, open_store
from faasd_py.store import Registry, SqliteRegistry, fetch_secrets
from faasd_py.worker import Worker

logger = logging.getLogger(__name__)


def run(config: Config, deploy: Sequence[Path] = ()) -> None:
    """Serve until SIGINT or SIGTERM."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, deploy))


@dataclass
class Gateway:
    """The gateway's HTTP side with the async queue it fills and (unless --no-queue-consumer)
    the consumer that empties it: `listen`, then `stop` and `close`."""

    app: web.Application
    runner: GuardedRunner
    queue: CallQueue  # of async invocations
    consumer: Consumer | None  # None: --no-queue-consumer
    callbacks: CallbackSender

    @property
    def url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def listen(self, host: str, port: int) -> None:
        await self.runner.setup()
        try:
            # One socket: the lean front answers plain /function/ requests, aiohttp the rest.
            await FrontSite(self.runner, host, port).start()
        except OSError as exc:
            raise FaasdError(
                f"cannot listen on {host}:{port}: {exc.strerror}; "
                "is another gateway running? choose one with --port"
            ) from None
        if self.consumer is not None:
            self.consumer.start()

    async def stop(self, drain_timeout: float, turn_away: Callable[[], None]) -> None:
        """The consumer stops taking async calls, then `turn_away` makes queued and new
        invocations 503, the gateway stops listening, and in-flight calls, sync and async,
        finish (up to `drain_timeout`)."""
        draining = None
        if self.consumer is not None:
            # Its drain runs beside the gateway's: the two share one timeout.
            draining = asyncio.create_task(self.consumer.stop(drain_timeout))
            await asyncio.sleep(0)  # it stops taking calls before the worker turns calls away
        turn_away()
        await self.runner.cleanup()
        if draining is not None:
            await draining

    async def close(self) -> None:
        """After the workers closed: a call that the drain cut short was retried or left
        leased, both in the queue."""
        await self.callbacks.close()
        await self.queue.close()


def open_gateway(
    config: Config,
    registry: Registry,
    backend: FunctionWorker,
    credentials: Credentials,
    metrics: GatewayMetrics,
    policies: Callable[[], Mapping[str, QueuePolicy]],
    policy: Callable[[str], QueuePolicy | None],
) -> Gateway:
    """The gateway over `backend`, its async queue (--queue) and, unless --no-queue-consumer,
    a consumer that runs queued calls through `backend` (by the functions' `policies`)."""
    queue = _open_queue(config)
    callbacks = CallbackSender(config.callback_attempts)
    consumer = None
    if config.queue_consumer:
        # Async calls run in the same pools, and count in the same gateway_function_* series
        # as /function/ calls.
        invoker = WorkerInvoker(backend, observe=metrics.observe)
        consumer = Consumer(queue, invoker, policies, callbacks, lease=config.queue_lease)
    async_calls = AsyncCalls(queue, policy, _running(consumer))
    app = make_app(config, registry, backend, credentials, async_calls, metrics)
    # Slow and idle clients are let go, and open connections are capped (gateway/_connections).
    limits = ConnectionLimits(config.header_timeout, config.idle_timeout, config.max_connections)
    app[METRICS].add_host("connections", limits.statistics)
    app[METRICS].add_queue(QueueSnapshot(queue.statistics), _counts(callbacks))
    runner = GuardedRunner(
        app, limits, handle_signals=False, access_log=None, shutdown_timeout=config.shutdown_timeout
    )
    return Gateway(app, runner, queue, consumer, callbacks)


def add_worker_metrics(metrics: GatewayMetrics, worker: Worker) -> None:
    """The figures only a worker in this process has: caches, storage, policies, host."""
    metrics.add_caches(worker.cache_statistics)
    metrics.add_storage(worker.storage_statistics)
    metrics.add_apps(worker.app_statistics)
    metrics.add_host("logs", worker.log_statistics)
    metrics.add_host("admission", worker.admission_statistics)


@dataclass
class Platform:
    """A started gateway and worker; `stop` it."""

    config: Config
    credentials: Credentials
    credentials_created: bool
    registry: Registry
    worker: Worker
    gateway: Gateway

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def queue(self) -> CallQueue:
        return self.gateway.queue

    @property
    def consumer(self) -> Consumer | None:
        return self.gateway.consumer


async def start(config: Config, console: Console | None = None) -> Platform:
    """Open the registry, start the worker, restore deployed functions, listen."""
    console = console or _stderr_console()
    private_dir(config.data_dir)
    credentials, created = load_or_create_credentials(config.credentials_dir)
    registry = SqliteRegistry(config.registry_path)
    worker = Worker(config, worker_storage(config, registry), policy_states=registry)
    await worker.start()
    try:
        await _restore(registry, worker, console)
        metrics = GatewayMetrics(worker.all_statistics)
        add_worker_metrics(metrics, worker)
        gateway = open_gateway(
            config,
            registry,
            LocalWorker(worker),
            credentials,
            metrics,
            worker.queue_policies,
            worker.queue_policy,
        )
    except BaseException:
        # A setting refused here (a --queue URL of no known kind, say): what the worker
        # started (its base zygote, a process) must not outlive the failed start.
        await worker.close(0)
        await registry.close()
        raise
    platform = Platform(config, credentials, created, registry, worker, gateway)
    try:
        await gateway.listen(config.host, config.port)
    except FaasdError:
        await stop(platform)
        raise
    return platform


async def stop(platform: Platform) -> None:
    """The consumer stops taking async calls; queued and new invocations get 503; stop
    listening; in-flight ones, sync and async, finish (up to shutdown_timeout); then every
    instance stops, and the queue and the registry close."""
    timeout = platform.config.shutdown_timeout
    worker = platform.worker
    await platform.gateway.stop(timeout, lambda: worker.reject_new(SHUTTING_DOWN))
    await worker.close(timeout)
    await platform.gateway.close()
    await platform.registry.close()


SHUTTING_DOWN = "faasd-py is shutting down; retry later"


async def serve(
    config: Config, deploy: Sequence[Path] = (), console: Console | None = None
) -> None:
    console = console or _stderr_console()
    platform = await start(config, console)

    async def started() -> None:
        _banner(console, platform)
        for stack in deploy:
            await _deploy_stack(stack, platform, console)

    await serve_until_signalled(console, started, lambda: stop(platform))


async def serve_until_signalled(
    console: Console, started: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Run `started`, then serve until SIGINT or SIGTERM, then `stop` (however it ends)."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await started()
        settle_heap()
        await stop_requested.wait()
        console.print("[bold]shutting down[/]: finishing in-flight invocations")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await stop()
    console.print("stopped")


async def _restore(registry: Registry, worker: Worker, console: Console) -> None:
    """Bring back every function deployed before the last stop, with the replicas that
    scale-function gave it."""
    for stored in await registry.list_functions():
        spec = stored.spec
        try:
            worker.apply(spec, await fetch_secrets(registry, spec.secrets, spec.namespace))
            if stored.replicas is not None:
                worker.scale(spec.ref, stored.replicas)
        except FaasdError as exc:
            console.print(f"[yellow]cannot restore {spec.ref}[/]: {exc.message}")


async def _deploy_stack(path: Path, platform: Platform, console: Console) -> None:
    """Build and deploy a stack file's functions, then invoke each once to show it works."""
    stack = load_stack(path)
    store = PackageStore(platform.config.packages_dir)
    registry, worker = platform.registry, platform.worker
    for function in stack.functions:
        name = function.spec.ref
        try:
            with console.status(f"building {name} ({function.spec.image})") as status:

                def progress(step: str, label: str = name) -> None:
                    status.update(f"{label}: {step}")

                await asyncio.to_thread(store.build, function, progress)
            spec = function.spec
            if await registry.get_namespace(spec.namespace) is None:
                raise NotFound(f"namespace {spec.namespace!r} does not exist; create it first")
            secrets = await fetch_secrets(registry, spec.secrets, spec.namespace)
            await registry.put_function(spec)
            worker.apply(spec, secrets)
            outcome = await worker.invoke(name, Request("up", "POST", "/", "", [], b"faasd-py"))
        except FaasdError as exc:
            console.print(f"[red]cannot deploy {name}[/]: {exc.message}")
            continue
        reply = outcome.result.body[:200].decode(errors="replace")
        console.print(
            f"deployed [bold]{name}[/]; its first invocation answered {outcome.result.status} "
            f"after a {outcome.cold_start_seconds * 1e3:.0f} ms cold start: {reply!r}"
        )
        url = f"{platform.url}/function/{name}"
        console.print(f"  try: curl -d 'hi' {url}")


def _open_queue(config: Config) -> CallQueue:
    """The queue of async invocations that --queue names (nothing is connected until the
    first call: a Redis that is down is a 503 on /async-function/, not a failed start)."""
    try:
        return open_queue(config.queue, config.data_dir, lease=config.queue_lease)
    except ValueError as exc:
        raise FaasdError(f"--queue: {exc}") from None


def _running(consumer: Consumer | None) -> Callable[[], Mapping[str, int]]:
    """Calls of each function the consumer is running now (none without one)."""
    if consumer is None:
        return dict
    return lambda: consumer.statistics().in_flight


def _counts(callbacks: CallbackSender) -> Callable[[], Mapping[str, int]]:
    def counts() -> Mapping[str, int]:
        stats = callbacks.statistics()
        return {"delivered": stats.delivered, "failed": stats.failed}

    return counts


def worker_storage(config: Config, registry: StatsStore) -> WorkerStorage:
    """context.storage for the worker's instances: the store --storage names (nothing is
    connected until the first call), with a cache per app whose statistics the registry keeps."""
    try:
        store = open_store(
            config.storage, config.data_dir, config.storage_model, timeout=config.storage_timeout
        )
    except ValueError as exc:
        raise FaasdError(f"--storage: {exc}") from None
    settings = CacheSettings(enabled=config.cache, prewarm=config.cache_prewarm)
    manager = CacheManager(store, settings, registry)
    # A storage reply travels in one frame, as a response body does.
    limits = StorageLimits(
        config.storage_calls_in_flight,
        config.storage_bytes_in_flight,
        Quota(config.storage_max_bytes, config.storage_max_keys),
        config.storage_timeout,
    )
    return WorkerStorage(manager, max_value=config.max_body, limits=limits)


def _storage_line(config: Config, worker: Worker) -> str:
    # The store's name carries its added delays ("+5ms per data call, 50MB/s"), a benchmark's
    # setting.
    store = worker.storage_name or "none"
    latency = " (added latency: a benchmark setting)" if config.storage_model.on else ""
    cache = "Faa$T cache per app" if config.cache else "no cache (--cache off)"
    return f"{store}{latency}; {cache}"


def _stderr_console() -> Console:
    # Soft wrap: a path or URL stays on one line when the output goes to a log file.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _channel_line(config: Config) -> str:
    from faasd_py import native

    what = {
        "shm": "shared-memory rings, futex/eventfd doorbells",
        "socket": "Unix socketpair, msgpack frames",
        "net": f"HTTP to each instance, sandboxes on bridge {config.net_bridge} "
        f"({config.net_subnet}), plain processes over loopback",
    }[config.channel]
    return f"{config.channel} ({what}); native shim {native.describe()}"


def _banner(console: Console, platform: Platform) -> None:
    config, user = platform.config, platform.credentials.user
    created = "created now" if platform.credentials_created else "existing"
    console.print(f"[bold green]faasd-py[/] gateway listening on [bold]{platform.url}[/]")
    console.print(f"  dashboard:    {platform.url}/ui/ (user {user!r}, the password below)")
    console.print(f"  data dir:     {config.data_dir}")
    console.print(
        f"  credentials:  {config.credentials_dir}/basic-auth-password "
        f"({created}; user {user!r}, mode 0600)"
    )
    console.print(f"  channel:      {_channel_line(config)}")
    console.print(f"  doorbells:    {doorbells.selection().describe()}")
    console.print(f"  isolation:    {_isolation_line(platform.worker)}")
    console.print(f"  storage:      {_storage_line(config, platform.worker)}")
    console.print(f"  keep-alive:   {_policy_line(config)}")
    console.print(f"  async calls:  {_queue_line(platform)}")
    console.print("  stop with Ctrl-C or SIGTERM")


def _queue_line(platform: Platform) -> str:
    config = platform.config
    where = f"queue {platform.queue.name} (at most {config.queue_max_depth} calls a function)"
    if platform.consumer is None:
        return f"{where}; no consumer here (--no-queue-consumer): `faasd-py queue-worker` runs them"
    return (
        f"{where}; run here, {config.queue_concurrency} calls of a function at once, "
        f"callbacks tried {config.callback_attempts} times"
    )


def _policy_line(config: Config) -> str:
    bins = f"bins of {config.bin_width:g}s"
    policy = live_policy(config.policy, config.bin_width)
    if policy is None:
        return (
            "no policy (--policy none): each function keeps com.openfaas.scale.min instances, "
            f"1 by default; others stop after {config.scale_down_after:g}s idle"
        )
    return (
        f"{policy.name} per app ({bins}; a function's com.faasd-py.policy annotation "
        "overrides it); an explicit com.openfaas.scale.min pins instances"
    )


def _isolation_line(worker: Worker) -> str:
    if worker.base_zygote is not None:
        starts = (
            "cold starts fork the function's zygote, or from nothing the base zygote "
            "(the child sandboxes itself before it imports the function)"
        )
    elif worker.zygote:
        starts = "cold starts fork a zygote per function"
    else:
        starts = "each instance a fresh interpreter"
    if worker.isolation == "sandbox":
        return (
            "sandbox (namespaces, cgroup limits, seccomp, a root of its own per function, "
            f"a cgroup per instance); {starts}"
        )
    return f"plain processes, NOT sandboxed: {worker.isolation_note}; {starts}"
