"""`faasd-py up`: gateway and worker in one process, with embedded state and no other service.

Shutdown runs in a fixed order (uvicorn's): on SIGINT/SIGTERM stop taking invocations (queued
ones get 503), stop accepting connections, let in-flight invocations finish within
`shutdown_timeout`, then stop every instance and close the registry.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop
from aiohttp import web
from rich.console import Console

from faasd_py.config import Config
from faasd_py.errors import FaasdError
from faasd_py.gateway import Credentials, load_or_create_credentials, make_app
from faasd_py.packages import PackageStore
from faasd_py.spec import load_stack
from faasd_py.store import Registry, SqliteRegistry, fetch_secrets
from faasd_py.worker import Worker

logger = logging.getLogger(__name__)


def run(config: Config, deploy: Sequence[Path] = ()) -> None:
    """Serve until SIGINT or SIGTERM."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, deploy))


async def serve(
    config: Config, deploy: Sequence[Path] = (), console: Console | None = None
) -> None:
    console = console or Console(stderr=True)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    credentials, created = load_or_create_credentials(config.credentials_dir)
    registry = SqliteRegistry(config.registry_path)
    worker = Worker(config)
    await worker.start()
    await _restore(registry, worker, console)

    app = make_app(config, registry, worker, credentials)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=config.shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await worker.close(0)
        await registry.close()
        raise FaasdError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror}; "
            "is another gateway running? choose one with --port"
        ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        _banner(console, config, credentials, created)
        for stack in deploy:
            await _deploy_stack(stack, config, registry, worker, console)
        await stop.wait()
        console.print("[bold]shutting down[/]: finishing in-flight invocations")
        worker.reject_new("faasd-py is shutting down; retry against another gateway")
        await runner.cleanup()
        await worker.close(config.shutdown_timeout)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await registry.close()
    console.print("stopped")


async def _restore(registry: Registry, worker: Worker, console: Console) -> None:
    """Bring back every function deployed before the last stop."""
    for stored in await registry.list_functions():
        spec = stored.spec
        try:
            worker.apply(spec, await fetch_secrets(registry, spec.secrets))
        except FaasdError as exc:
            console.print(f"[yellow]cannot restore {spec.service}[/]: {exc.message}")


async def _deploy_stack(
    path: Path, config: Config, registry: Registry, worker: Worker, console: Console
) -> None:
    """Build and deploy a stack file's functions, then invoke each once to show it works."""
    stack = load_stack(path)
    store = PackageStore(config.packages_dir)
    for function in stack.functions:
        name = function.spec.service
        try:
            with console.status(f"building {name} ({function.spec.image})") as status:
                await asyncio.to_thread(
                    store.build,
                    function,
                    lambda step, label=name: status.update(f"{label}: {step}"),
                )
            await registry.put_function(function.spec)
            worker.apply(function.spec, await fetch_secrets(registry, function.spec.secrets))
            outcome = await worker.invoke(name, "up", "POST", "/", "", [], b"faasd-py")
        except FaasdError as exc:
            console.print(f"[red]cannot deploy {name}[/]: {exc.message}")
            continue
        reply = outcome.result.body[:200].decode(errors="replace")
        console.print(
            f"deployed [bold]{name}[/]; its first invocation answered {outcome.result.status} "
            f"after a {outcome.cold_start_seconds * 1e3:.0f} ms cold start: {reply!r}"
        )
        url = f"http://{config.host}:{config.port}/function/{name}"
        console.print(f"  try: curl -d 'hi' {url}")


def _banner(console: Console, config: Config, credentials: Credentials, created: bool) -> None:
    url = f"http://{config.host}:{config.port}"
    console.print(f"[bold green]faasd-py[/] gateway listening on [bold]{url}[/]")
    console.print(f"  data dir:     {config.data_dir}")
    where = config.credentials_dir
    console.print(
        f"  credentials:  {where}/basic-auth-password "
        f"({'created now' if created else 'existing'}; user {credentials.user!r}, mode 0600)"
    )
    console.print("  channel:      socket (Unix socketpair, msgpack frames; no native shim yet)")
    console.print("  stop with Ctrl-C or SIGTERM")


if __name__ == "__main__":  # pragma: no cover - `faasd-py up` is the entry point
    run(Config())
    sys.exit(0)
