"""One instance of a function: a runtime process, its channel, and the invocations in flight.

This first sandbox is a plain process: its own session and working directory, the function
package and its dependencies alone on its path, an environment made of the spec's variables,
secrets as files, and an address-space rlimit from `limits.memory`. (The native shim replaces
this with namespaces, cgroups and seccomp.) Its channel is the function's (`shm` or `socket`,
see faasd_py.channel): the process inherits the channel's fds and flags that name them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets as token
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from faasd_py.channel import Channel, ChannelClosed, prepare_channel, resolve_kind
from faasd_py.errors import FaasdError, FunctionFailed, InstanceCrashed, InvocationTimeout
from faasd_py.protocol import FRAME_OVERHEAD, Invocation, ProtocolError, Request, Result
from faasd_py.spec import FunctionSpec
from faasd_py.worker._logs import LineSplitter, LogBuffer, LogEntry

logger = logging.getLogger(__name__)

_STOP_GRACE = 2.0


@dataclass(frozen=True)
class LaunchSettings:
    """What every instance on this worker shares."""

    python: str
    run_dir: Path
    runtime_path: Path  # a folder holding only faasd_py and msgpack
    max_body: int
    start_timeout: float
    # The channel of functions that do not choose one (com.faasd-py.channel); how long the
    # instance's end of a shm channel spins before it sleeps, and the worker's end at most.
    channel: str = "socket"
    shm_spin: int = 0
    shm_worker_spin: int = 0


@dataclass(frozen=True)
class FunctionPackage:
    function_dir: Path
    deps_dir: Path | None


class Instance:
    """A started runtime process. Create with `Instance.launch`."""

    def __init__(
        self,
        spec: FunctionSpec,
        instance_id: str,
        process: asyncio.subprocess.Process,
        channel: Channel,
        workdir: Path,
        logs: LogBuffer,
    ) -> None:
        self.spec = spec
        self.id = instance_id
        self.inflight = 0  # slots taken, managed by the pool
        self.served = 0
        self.last_used = time.monotonic()
        self.started_at = time.monotonic()
        self.start_seconds = 0.0
        self._process = process
        self._channel = channel
        self.channel_kind = ""
        self._workdir = workdir
        self._logs = logs
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Result]] = {}
        self._exit_reason: str | None = None
        self._exited = asyncio.Event()
        self._on_exit: Callable[[Instance], None] = lambda _: None
        self._tasks: list[asyncio.Task[None]] = []

    # --- start ---------------------------------------------------------------------------------

    @classmethod
    async def launch(
        cls,
        spec: FunctionSpec,
        package: FunctionPackage,
        secrets: Mapping[str, bytes],
        settings: LaunchSettings,
        logs: LogBuffer,
    ) -> Instance:
        """Start an instance and wait until its handler is imported; FaasdError if it is not."""
        started = time.monotonic()
        instance_id = f"{spec.service}-{token.token_hex(4)}"
        workdir = settings.run_dir / instance_id
        kind = resolve_kind(spec.channel, settings.channel)
        secrets_dir = _prepare_workdir(workdir, secrets)
        try:
            handoff = prepare_channel(
                kind,
                settings.max_body + FRAME_OVERHEAD,
                spin=settings.shm_spin,
                worker_spin=settings.shm_worker_spin,
            )
        except OSError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        try:
            process = await asyncio.create_subprocess_exec(
                *_command(spec, package, settings, handoff.runtime_args, secrets_dir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=handoff.child_fds,
                cwd=workdir,
                env=_environment(spec, workdir, secrets_dir, settings.runtime_path),
                start_new_session=True,  # its own process group: stop kills what it forked too
            )
        except OSError:
            handoff.abort()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            handoff.release_child_side()
        try:
            channel = await handoff.connect(process.pid)
        except BaseException:
            handoff.abort()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        instance = cls(spec, instance_id, process, channel, workdir, logs)
        instance.channel_kind = kind
        instance._capture_output()
        try:
            async with asyncio.timeout(settings.start_timeout):
                await instance._await_ready()
        except BaseException as exc:
            await instance.kill()
            if isinstance(exc, TimeoutError):
                raise FunctionFailed(
                    f"function {spec.service} did not become ready within "
                    f"{settings.start_timeout:g}s; see `faasd-py logs {spec.service}`"
                ) from None
            raise
        instance.start_seconds = time.monotonic() - started
        instance._tasks.append(asyncio.create_task(instance._read_results()))
        return instance

    async def _await_ready(self) -> None:
        try:
            message = await self._channel.receive()
        except (ChannelClosed, ProtocolError):
            code = await self._process.wait()
            raise FunctionFailed(
                f"function {self.spec.service} {_describe_exit(code)} while starting; "
                f"see `faasd-py logs {self.spec.service}`"
            ) from None
        if message.get("op") == "load_failed":
            raise FunctionFailed(
                f"function {self.spec.service} failed to load its handler: {message['error']}"
            )
        if message.get("op") != "ready":
            raise FunctionFailed(f"function {self.spec.service} sent {message.get('op')!r}")

    def _capture_output(self) -> None:
        for stream in (self._process.stdout, self._process.stderr):
            assert stream is not None
            self._tasks.append(asyncio.create_task(self._pump(stream)))

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        def emit(line: str) -> None:
            self._logs.append(LogEntry(time.time(), self.id, line))

        splitter = LineSplitter(emit)
        while chunk := await stream.read(64 * 1024):
            splitter.feed(chunk)
        splitter.flush()

    # --- invoke --------------------------------------------------------------------------------

    def on_exit(self, callback: Callable[[Instance], None]) -> None:
        self._on_exit = callback

    @property
    def alive(self) -> bool:
        return self._exit_reason is None

    async def invoke(
        self,
        request: Request,
    ) -> Result:
        """Run one invocation; InvocationTimeout after the function's exec_timeout."""
        timeout = self.spec.exec_timeout
        invocation = Invocation(
            next(self._ids),
            request.call_id,
            request.method,
            request.path,
            request.query,
            request.headers,
            request.body,
            timeout,
        )
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[invocation.id] = future
        try:
            await self._channel.send(invocation.to_wire())
            async with asyncio.timeout(timeout):
                return await future
        except ChannelClosed:
            await self._exited.wait()
            raise self._crash_error() from None
        except TimeoutError:
            raise InvocationTimeout(
                f"function {self.spec.service} did not answer within {timeout:g}s "
                "(its exec_timeout); the instance was replaced"
            ) from None
        finally:
            self._pending.pop(invocation.id, None)
            self.served += 1
            self.last_used = time.monotonic()

    async def _read_results(self) -> None:
        try:
            while True:
                message = await self._channel.receive()
                if message.get("op") == "result":
                    future = self._pending.get(message["id"])
                    if future is not None and not future.done():
                        future.set_result(Result.from_wire(message))
        except (ChannelClosed, ProtocolError, ConnectionError) as exc:
            logger.debug("channel of %s closed: %s", self.id, exc)
        self._channel.close()
        code = await self._process.wait()
        self._exit_reason = self._exit_reason or _describe_exit(code)
        self._exited.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._crash_error())
        self._on_exit(self)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _crash_error(self) -> FaasdError:
        return InstanceCrashed(
            f"instance {self.id} of function {self.spec.service} {self._exit_reason} "
            f"during the invocation; see `faasd-py logs {self.spec.service}`"
        )

    # --- stop ----------------------------------------------------------------------------------

    async def stop(self, reason: str = "was stopped") -> None:
        """Close the channel (the runtime exits on end of stream), then kill what remains."""
        self._exit_reason = self._exit_reason or reason
        self._channel.close()
        try:
            async with asyncio.timeout(_STOP_GRACE):
                await self._process.wait()
        except TimeoutError:
            pass
        await self.kill(reason)

    async def kill(self, reason: str = "was killed") -> None:
        self._exit_reason = self._exit_reason or reason
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._channel.close()
        await self._process.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, _STOP_GRACE)
        shutil.rmtree(self._workdir, ignore_errors=True)


def _prepare_workdir(workdir: Path, secrets: Mapping[str, bytes]) -> Path:
    (workdir / "tmp").mkdir(parents=True, mode=0o700)
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    for name, value in secrets.items():
        path = secrets_dir / name
        path.write_bytes(value)
        path.chmod(0o400)
    return secrets_dir


def _command(
    spec: FunctionSpec,
    package: FunctionPackage,
    settings: LaunchSettings,
    channel_args: list[str],
    secrets_dir: Path,
) -> list[str]:
    # -S -s: no site-packages, no user site: the handler sees its own package and nothing else.
    command = [
        settings.python,
        "-S",
        "-s",
        "-m",
        "faasd_py.runtime",
        *channel_args,
        f"--function-name={spec.service}",
        f"--function-dir={package.function_dir}",
        f"--secrets-dir={secrets_dir}",
        f"--max-inflight={spec.max_inflight}",
        f"--max-body={settings.max_body}",
        f"--max-frame={settings.max_body + FRAME_OVERHEAD}",
    ]
    if package.deps_dir is not None:
        command.append(f"--deps-dir={package.deps_dir}")
    if spec.limits.memory_bytes is not None:
        command.append(f"--memory-limit={spec.limits.memory_bytes}")
    return command


def _environment(
    spec: FunctionSpec, workdir: Path, secrets_dir: Path, runtime_path: Path
) -> dict[str, str]:
    env = dict(spec.env_vars)
    if spec.env_process:
        env["fprocess"] = spec.env_process
    env.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir / "tmp"),
            "PYTHONPATH": str(runtime_path),
            "PYTHONSAFEPATH": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Per-thread malloc arenas reserve address space that an RLIMIT_AS would count.
            "MALLOC_ARENA_MAX": "2",
            "FAASD_FUNCTION_NAME": spec.service,
            "FAASD_SECRETS_DIR": str(secrets_dir),
        }
    )
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
