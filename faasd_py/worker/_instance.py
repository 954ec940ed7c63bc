"""One instance of a function: a runtime process, its channel, and the invocations in flight.

The process is a sandbox or a plain child process, as the worker's isolation says (see
_process.py), started by a fresh exec or forked from the function's zygote (_zygote.py). Its
channel is the function's (`shm` or `socket`, see faasd_py.datapath.channel): the process inherits
the channel's fds and flags that name them (a forked one receives them by SCM_RIGHTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets as token
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faasd_py.cache import StorageService, WorkerStorage, answer_storage
from faasd_py.datapath.channel import Channel, ChannelClosed, prepare_channel, resolve_kind
from faasd_py.errors import FaasdError, FunctionFailed, InstanceCrashed, InvocationTimeout
from faasd_py.isolation.cgroups import DEFAULT_PARENT
from faasd_py.isolation.netns import BridgeNetwork
from faasd_py.protocol import (
    FRAME_OVERHEAD,
    Invocation,
    LoadFailed,
    ProtocolError,
    Ready,
    Request,
    Result,
    StorageCall,
    from_sandbox,
)
from faasd_py.spec import FunctionSpec
from faasd_py.worker._logs import LogBuffer, pump_output
from faasd_py.worker._process import InstanceProcess, ProcessPlan
from faasd_py.worker._process import start as start_process

if TYPE_CHECKING:
    from faasd_py.worker._base_zygote import BaseZygote

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
    # "sandbox" or "process" (faasd_py.worker._process), decided once per worker.
    isolation: str = "process"
    shm_spin: int = 0
    shm_worker_spin: int = 0
    # Fork instances from a per-function zygote (faasd_py.worker._zygote) where the channel
    # allows it, rather than exec a fresh interpreter for each.
    zygote: bool = False
    # The bridge of sandboxed instances of net functions (faasd_py.isolation.netns.BridgeNetwork);
    # None where instances are plain processes, which the net channel reaches over loopback.
    network: BridgeNetwork | None = None
    # Answers the instances' context.storage calls from their app's cache (faasd_py.cache);
    # None: a worker without storage (calls get an error reply).
    storage: WorkerStorage | None = None
    # Where sandboxed instances' cgroups go: faasd-py/<run id> of this worker's run
    # (faasd_py.runs), so that another run's start leaves them alone.
    cgroup_parent: str = DEFAULT_PARENT
    # Sandboxes are forked from it where it runs (faasd_py.worker._base_zygote); None: exec'd.
    base_zygote: BaseZygote | None = None


# Starts the process of an instance from its plan: a fresh exec (_process.start) by default,
# or a fork of the function's zygote.
ProcessStarter = Callable[[ProcessPlan], Awaitable[InstanceProcess]]


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
        process: InstanceProcess,
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
        # Deadlines of the invocations in flight, by id, and one timer for all of them (see
        # _arm); the loop, kept: asking asyncio for it costs a getpid system call on 3.11.
        self._loop = asyncio.get_running_loop()
        self._deadlines: dict[int, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._exit_reason: str | None = None
        self._exited = asyncio.Event()
        self._on_exit: Callable[[Instance], None] = lambda _: None
        self._tasks: list[asyncio.Task[None]] = []
        self._storage: StorageService | None = None
        self._storage_owner: WorkerStorage | None = None

    # --- start ---------------------------------------------------------------------------------

    @classmethod
    async def launch(
        cls,
        spec: FunctionSpec,
        package: FunctionPackage,
        secrets_dir: Path,
        settings: LaunchSettings,
        logs: LogBuffer,
        start: ProcessStarter | None = None,
    ) -> Instance:
        """Start an instance (`start`, else a fresh exec) that reads the function's secrets
        in `secrets_dir` (its SecretsFolder), and wait until its handler is imported;
        FaasdError if it is not."""
        started = time.monotonic()
        instance_id = f"{spec.service}-{token.token_hex(4)}"
        workdir = settings.run_dir / instance_id
        kind = resolve_kind(spec.channel, settings.channel)
        handoff = prepare_channel(
            kind,
            settings.max_body + FRAME_OVERHEAD,
            spin=settings.shm_spin,
            worker_spin=settings.shm_worker_spin,
            network=settings.network,
        )
        plan = ProcessPlan(
            name=instance_id,
            python=settings.python,
            runtime_args=[
                *handoff.runtime_args,
                *runtime_args(spec, package, settings),
                f"--instance-id={instance_id}",  # its $HOSTNAME, forked or not
            ],
            env=function_env(spec),
            workdir=workdir,
            function_dir=package.function_dir,
            deps_dir=package.deps_dir,
            runtime_path=settings.runtime_path,
            secrets_dir=secrets_dir,
            pass_fds=handoff.child_fds,
            memory_bytes=spec.limits.memory_bytes,
            cpu=spec.limits.cpu_cores,
            cgroup_parent=settings.cgroup_parent,
        )
        try:
            if start is None:
                process = await start_process(settings.isolation, plan, settings.base_zygote)
            else:
                process = await start(plan)
        except BaseException:
            handoff.abort()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            handoff.release_child_side()
        try:
            channel = await handoff.connect(process.pid)
            # Only now: a forked child is quick enough to send "ready" before the worker's end
            # of a shm channel is open, and a record sent then rings no doorbell.
            process.resume()
        except BaseException:
            handoff.abort()
            process.kill()
            await process.wait()
            await process.release()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        instance = cls(spec, instance_id, process, channel, workdir, logs)
        instance.channel_kind = kind
        instance._capture_output()
        if settings.storage is not None:
            # Before the handler is ready: the app's cache pre-warms while the instance loads.
            instance._storage_owner = settings.storage
            instance._storage = await settings.storage.attach(
                spec.app, dict(spec.annotations), spec.limits.memory_bytes, spec.exec_timeout
            )
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
        # A channel that can hand results over as they arrive (shm) does: the reader task
        # then wakes only for the rest (storage calls, the end).
        intercept = getattr(channel, "intercept", None)
        if intercept is not None:
            intercept(instance._take_result)
        instance._tasks.append(asyncio.create_task(instance._read_results()))
        return instance

    async def _await_ready(self) -> None:
        try:
            message = from_sandbox(await self._channel.receive())
        except ChannelClosed:
            status = await self._process.wait()
            raise FunctionFailed(
                f"function {self.spec.service} {status.describe()} while starting; "
                f"see `faasd-py logs {self.spec.service}`"
            ) from None
        except ProtocolError as exc:  # the launch kills it: a broken runtime may not exit
            raise FunctionFailed(
                f"function {self.spec.service} sent a malformed message while starting: {exc}"
            ) from None
        if isinstance(message, LoadFailed):
            raise load_failed(self.spec, message.error)
        if not isinstance(message, Ready):
            raise FunctionFailed(
                f"function {self.spec.service} sent a {message.op!r} message before 'ready'"
            )

    def _capture_output(self) -> None:
        for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            pump = pump_output(stream, self._logs, self.id, name)
            self._tasks.append(asyncio.create_task(pump))

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
        invocation = Invocation.of(next(self._ids), request, timeout)
        future: asyncio.Future[Result] = self._loop.create_future()
        id_ = invocation.id
        self._pending[id_] = future
        self._deadlines[id_] = deadline = self._loop.time() + timeout
        if self._timer is None or deadline < self._timer.when():
            self._arm()
        try:
            await self._channel.send(invocation.to_wire())
            return await future
        except ChannelClosed:
            await self._exited.wait()
            raise self._crash_error() from None
        except _Expired:
            raise InvocationTimeout(
                f"function {self.spec.service} did not answer within {timeout:g}s "
                "(its exec_timeout); the instance was replaced"
            ) from None
        finally:
            del self._pending[id_]
            del self._deadlines[id_]
            self.served += 1
            self.last_used = time.monotonic()

    # One timer for the deadlines of every invocation in flight, rather than an asyncio.timeout
    # per call (a timer scheduled and cancelled, a task looked up: several microseconds each
    # time). It is armed for the earliest deadline and, when it fires, expires what is overdue
    # and re-arms for the earliest left; calls that ended meanwhile just left their deadline
    # out. A steady stream of short calls thus wakes it about once per exec_timeout.

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deadlines:
            self._timer = self._loop.call_at(min(self._deadlines.values()), self._expire)

    def _expire(self) -> None:
        now = self._loop.time()
        for id_, deadline in self._deadlines.items():
            future = self._pending[id_]
            if deadline <= now and not future.done():
                future.set_exception(_Expired())
        self._arm()

    def _take_result(self, message: dict[str, Any]) -> bool:
        """A result, straight to the invocation awaiting it; False for anything else, and for
        a malformed result (the reader decodes it again and says what is wrong)."""
        if message.get("op") != "result":
            return False
        try:
            result = Result.from_wire(message)
        except ProtocolError:
            return False
        future = self._pending.get(result.id)
        if future is not None and not future.done():
            future.set_result(result)
        return True

    async def _read_results(self) -> None:
        try:
            while True:
                message = await self._channel.receive()
                received = from_sandbox(message)
                if isinstance(received, Result):
                    future = self._pending.get(received.id)
                    if future is not None and not future.done():
                        future.set_result(received)
                elif isinstance(received, StorageCall):
                    await self._answer_storage(message)
                else:
                    raise ProtocolError(f"a {received.op!r} message after 'ready'")
        except ProtocolError as exc:
            self._broke_protocol(exc)
        except (ChannelClosed, ConnectionError) as exc:
            logger.debug("channel of %s closed: %s", self.id, exc)
        self._channel.close()
        status = await self._process.wait()
        # Out of memory says more than "was killed", even when the worker asked for the kill.
        reason = status.describe() if status.oom_killed else None
        self._exit_reason = reason or self._exit_reason or status.describe()
        self._exited.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._crash_error())
        self._on_exit(self)
        await self._release_storage()
        await self._process.release()
        shutil.rmtree(self._workdir, ignore_errors=True)

    async def _answer_storage(self, message: dict[str, Any]) -> None:
        """A task per call (a slow store must not hold up the results of other invocations),
        within the bound on the instance's calls in flight: at the bound this returns only once
        some are answered, and the reader meanwhile leaves the instance's channel unread, so
        the instance blocks on its next send, not the worker (faasd_py.cache._bound)."""
        await answer_storage(self._storage, message, self._channel.send)

    async def _release_storage(self) -> None:
        # Detaching gives up the calls still in flight.
        owner, service, self._storage_owner = self._storage_owner, self._storage, None
        if owner is not None and service is not None:
            await owner.detach(service)

    def _broke_protocol(self, error: ProtocolError) -> None:
        """The instance sent what is not a message of the protocol: it is broken, whatever it
        does next. Its callers hear so now (502, naming the error), not at their exec_timeout;
        it is killed, since a runtime gone wrong may not exit when its channel closes, and the
        pool replaces it once it has exited."""
        logger.warning("instance %s of %s: %s", self.id, self.spec.service, error)
        self._exit_reason = self._exit_reason or f"broke the channel protocol ({error})"
        crashed = self._crash_error()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(crashed)
        self._process.kill()

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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_GRACE):
                await self._process.wait()
        await self.kill(reason)

    async def kill(self, reason: str = "was killed") -> None:
        self._exit_reason = self._exit_reason or reason
        self._process.kill()
        self._channel.close()
        await self._process.wait()
        # First: a reader held at the bound on storage calls in flight (a store slow to answer
        # them) goes on, to its end of stream, once they are given up.
        await self._release_storage()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, _STOP_GRACE)
        await self._process.release()
        shutil.rmtree(self._workdir, ignore_errors=True)


class _Expired(Exception):
    """An invocation's exec_timeout passed (set on its future by Instance._expire)."""


def load_failed(spec: FunctionSpec, error: str) -> FunctionFailed:
    return FunctionFailed(f"function {spec.service} failed to load its handler: {error}")


def runtime_args(
    spec: FunctionSpec, package: FunctionPackage, settings: LaunchSettings
) -> list[str]:
    """The runtime's flags that are the same for every instance of the function."""
    args = [
        f"--function-name={spec.service}",
        f"--function-dir={package.function_dir}",
        f"--max-inflight={spec.max_inflight}",
        f"--max-body={settings.max_body}",
        f"--max-frame={settings.max_body + FRAME_OVERHEAD}",
    ]
    if package.deps_dir is not None:
        args.append(f"--deps-dir={package.deps_dir}")
    return args


def function_env(spec: FunctionSpec) -> dict[str, str]:
    env = dict(spec.env_vars)
    if spec.env_process:
        env["fprocess"] = spec.env_process
    env["FAASD_FUNCTION_NAME"] = spec.service
    return env
