"""Zygotes: one per function, which has imported the runtime and the handler and forks the
function's instances, so that a cold start costs a fork rather than an interpreter's start.

A zygote is started as an instance is (`_process.start`: a sandbox, forked from the worker's
base zygote where one runs, or a plain process under --isolation process) with `--zygote=FD`
instead of a channel; faasd_py/runtime/_zygote.py describes its control protocol. With a base
zygote, a function with no zygote of its own starts its instance from the base (a start from
nothing: the app was unloaded, or never started) and its zygote a moment after, off that
start's clock and CPU; without one, the first cold start starts the zygote and forks from it.
Per *function*, not per app as DESIGN.md first said: the
functions of an app have packages, secrets and limits of their own, and a zygote can only
fork what it imported, inside the sandbox and limits it was started in.

A forked instance shares its zygote's sandbox (namespaces, root, /tmp, seccomp filter), since
a process without capabilities cannot make namespaces of its own; it gets its own cgroup with
the function's memory, CPU and PID limits, joined before any of its code runs. It sees the
zygote (pid 1) and its sibling forks, nothing of other functions or the host. One spare is
forked ahead (and moved into its cgroup) while the function has a zygote, so that a cold
start only hands it its channel: the fork and the cgroup move stay off its clock. The zygote
lives as long as the function's pool; if it dies, so do its instances (the kernel kills a PID
namespace with its pid 1; without a sandbox the worker kills them, so both behave alike) and
the next cold start starts a new zygote. A zygote that cannot start or fork costs a fresh exec
and a warning, never the invocation; a handler that fails to import fails as it would in an
exec'd instance.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import secrets as token
import shutil
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import msgpack

from faasd_py.errors import FaasdError
from faasd_py.isolation.cgroups import DEFAULT_PARENT, Cgroup, CgroupLimits
from faasd_py.isolation.sandbox import ExitStatus
from faasd_py.spec import FunctionSpec
from faasd_py.worker._forkserver import FORK_TIMEOUT, ForkedChild, ForkServer, ZygoteFailed
from faasd_py.worker._instance import (
    FunctionPackage,
    Instance,
    LaunchSettings,
    function_env,
    load_failed,
    runtime_args,
)
from faasd_py.worker._limits import MemoryAdmission
from faasd_py.worker._logs import LogBuffer, LogEntry, pump_output
from faasd_py.worker._process import (
    PIDS_LIMIT,
    InstanceProcess,
    ProcessPlan,
    SecretsFolder,
    pipe_reader,
)
from faasd_py.worker._process import start as start_process

logger = logging.getLogger(__name__)

# Channels whose ends can be handed to a forked child by SCM_RIGHTS; `net` needs a network
# namespace per instance, which only a fresh sandbox gets.
ZYGOTE_CHANNELS = ("shm", "socket")
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
# How long after a start from the base zygote the function's own zygote starts.
_ZYGOTE_AFTER = 0.05


@dataclass(frozen=True, slots=True)
class LauncherStatistics:
    zygote_pid: int | None  # host pid of the running zygote
    zygote_starts: int
    forks: int
    execs: int
    fallbacks: int  # execs because the zygote failed
    unloads: int = 0  # zygotes stopped because the keep-alive policy unloaded the function
    zygote_starting: bool = False  # one starts in the background, after a start from the base


def assign(child: ForkedChild, plan: ProcessPlan) -> None:
    """Make the spare `child` the instance of `plan`: its flags and its channel's fds
    (copies, which the child holds once this returns). It opens its channel at `resume`."""
    if child.start is None or not child.alive:
        raise ZygoteFailed("the spare is gone", broken=False)
    message = {"argv": list(plan.runtime_args), "fds": list(plan.pass_fds)}
    fds = array.array("i", plan.pass_fds).tobytes()
    try:
        child.start.sendmsg([msgpack.packb(message)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError as exc:
        raise ZygoteFailed(f"the spare is gone: {exc}", broken=False) from exc


class Zygote(ForkServer):
    """A running zygote of one function. Create with `Zygote.start`."""

    def __init__(
        self,
        name: str,
        process: InstanceProcess,
        control: socket.socket,
        isolation: str,
        workdir: Path,
        cgroup_parent: str = DEFAULT_PARENT,
    ) -> None:
        super().__init__(name, control)
        self._workdir = workdir
        self.process = process
        self._isolation = isolation
        self._cgroup_parent = cgroup_parent  # where its forks' cgroups go: the run's
        self._tasks: list[asyncio.Task[None]] = []
        # Gone, or not to be trusted (a malformed message): killed, and replaced next time.
        self.on_ended = self._kill

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()

    @classmethod
    async def start(
        cls,
        spec: FunctionSpec,
        package: FunctionPackage,
        secrets_dir: Path,
        settings: LaunchSettings,
        logs: LogBuffer,
    ) -> Zygote:
        """Start a zygote and wait until it has imported the handler. FunctionFailed if the
        handler does not import; ZygoteFailed for anything else. Its forks read the secrets
        where it does: the function's folder, `secrets_dir`. Sandboxed, it is forked from the
        base zygote where one runs (faasd_py.worker._base_zygote), else started afresh."""
        name = f"{spec.service}-zygote-{token.token_hex(4)}"
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        plan = ProcessPlan(
            name=name,
            python=settings.python,
            runtime_args=[f"--zygote={child.fileno()}", *runtime_args(spec, package, settings)],
            env=function_env(spec),
            workdir=settings.run_dir / name,
            function_dir=package.function_dir,
            deps_dir=package.deps_dir,
            runtime_path=settings.runtime_path,
            secrets_dir=secrets_dir,
            pass_fds=(child.fileno(),),
            memory_bytes=spec.limits.memory_bytes,
            cpu=spec.limits.cpu_cores,
            cgroup_parent=settings.cgroup_parent,
        )
        try:
            process = await start_process(settings.isolation, plan, settings.base_zygote)
        except BaseException as exc:  # a cancelled start too: nothing of it may stay
            parent.close()
            shutil.rmtree(plan.workdir, ignore_errors=True)
            if isinstance(exc, (OSError, FaasdError)):
                raise ZygoteFailed(f"cannot start: {exc}") from exc
            raise
        finally:
            child.close()
        parent.setblocking(False)
        zygote = cls(
            name, process, parent, settings.isolation, plan.workdir, settings.cgroup_parent
        )
        for stream, stream_name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            pump = pump_output(stream, logs, name, stream_name)
            zygote._tasks.append(asyncio.create_task(pump))
        process.resume()  # forked from the base zygote: it waits for this to run
        try:
            async with asyncio.timeout(settings.start_timeout):
                first = await zygote.started()
        except BaseException as exc:
            await zygote.close()
            if isinstance(exc, TimeoutError):
                raise ZygoteFailed(
                    f"did not import the handler within {settings.start_timeout:g}s"
                ) from None
            raise
        if first.get("op") == "load_failed":
            await zygote.close()
            raise load_failed(spec, first.get("error", "?"))
        if first.get("op") != "ready":
            status = await zygote.close()
            raise ZygoteFailed(f"{status.describe()} while importing the handler")
        return zygote

    # --- forking -------------------------------------------------------------------------------

    async def fork(self, spec: FunctionSpec) -> ForkedChild:
        """A spare: a child in a cgroup of its own with the function's limits, waiting for
        `assign`. ZygoteFailed if that cannot be done."""
        if not self.alive:
            raise ZygoteFailed("the zygote has exited")
        cgroup = None
        if self._isolation == "sandbox":
            limits = CgroupLimits(
                memory_bytes=spec.limits.memory_bytes, cpu=spec.limits.cpu_cores, pids=PIDS_LIMIT
            )
            try:
                name = f"{spec.service}-{token.token_hex(4)}"
                cgroup = Cgroup.create(name, limits, parent=self._cgroup_parent)
            except (OSError, RuntimeError) as exc:
                raise ZygoteFailed(f"cannot make a cgroup for a fork: {exc}", broken=False) from exc
        child = ForkedChild(cgroup)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        start, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Every packet the child sends here carries its pid, translated into our namespace.
        start.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        start.setblocking(False)
        try:
            try:
                forked = self.request_fork({}, [out_write, err_write, start_child.fileno()], child)
            finally:  # sent (the zygote has its copies now), or not sent at all
                for end in (out_write, err_write):
                    os.close(end)
                start_child.close()
            await forked
            child.stdout, child.stderr = await pipe_reader(out_read), await pipe_reader(err_read)
            out_read = err_read = -1
            async with asyncio.timeout(FORK_TIMEOUT):
                child.watch(await _hello(start))
            if cgroup is not None:
                for procs in cgroup.procs_files():
                    procs.write_text(str(child.pid))
        except BaseException as exc:
            start.close()
            child.kill()
            await child.release()
            for fd in (out_read, err_read):
                if fd >= 0:
                    os.close(fd)
            if isinstance(exc, (OSError, TimeoutError)):
                raise ZygoteFailed(f"cannot fork: {exc or 'timed out'}") from exc
            raise
        child.start = start
        return child

    # --- the end -------------------------------------------------------------------------------

    async def close(self) -> ExitStatus:
        """Kill the zygote (its instances die with it), wait for it and clean up."""
        self.close_control()
        self.process.kill()
        status = await self.process.wait()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        await self.process.release()
        shutil.rmtree(self._workdir, ignore_errors=True)
        return status


async def _hello(start: socket.socket) -> int:
    """The host pid of the child that sends its first packet on `start`."""
    while True:
        try:
            data, ancillary, _, _ = start.recvmsg(16, socket.CMSG_SPACE(_UCRED.size))
            break
        except BlockingIOError:
            await _readable(start)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and data:
            pid, _, _ = _UCRED.unpack(payload[: _UCRED.size])
            return int(pid)
    raise ConnectionError("the forked child closed its start socket without a word")


class FunctionLauncher:
    """Starts the instances of one function (the pool's `Launcher`): forks of its zygote when
    the settings and the function's channel allow one, otherwise starts from the base zygote
    (sandboxes) or fresh execs ("execs" counts both). Starts the
    zygote at the first launch and again after it dies, keeps one spare forked ahead of the
    next cold start, and stops both at `close`. Owns the function's SecretsFolder, which its
    instances and zygote share: made at the first launch, updated by `update_secrets`,
    removed at `close`. A zygote (with its spare) reserves `zygote_memory` of the host's
    `admission` while it runs; when that does not fit, instances start by a fresh exec."""

    def __init__(
        self,
        package: FunctionPackage,
        settings: LaunchSettings,
        channel: str,
        admission: MemoryAdmission | None = None,
        zygote_memory: int = 0,
    ) -> None:
        self._package = package
        self._settings = settings
        self._admission = admission
        self._zygote_memory = zygote_memory
        self._reserved: set[Zygote] = set()  # zygotes holding their reservation
        self._use_zygote = settings.zygote and channel in ZYGOTE_CHANNELS
        self._zygote: Zygote | None = None
        self._spare: asyncio.Task[ForkedChild] | None = None
        self._starting: asyncio.Task[Zygote | None] | None = None  # a zygote started after
        self._secrets: SecretsFolder | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._launching = 0  # launches under way: an unload must not kill their zygote
        self._unloaded = False  # since the last launch: no zygote starts in the background
        self._zygote_starts = self._forks = self._execs = self._fallbacks = self._unloads = 0

    async def launch(
        self, spec: FunctionSpec, secrets: Mapping[str, bytes], logs: LogBuffer
    ) -> Instance:
        self._launching += 1
        self._unloaded = False
        try:
            return await self._launch(spec, secrets, logs)
        finally:
            self._launching -= 1

    async def _launch(
        self, spec: FunctionSpec, secrets: Mapping[str, bytes], logs: LogBuffer
    ) -> Instance:
        if self._secrets is None:
            self._secrets = SecretsFolder.create(
                self._settings.run_dir / "secrets", spec.service, self._settings.isolation, secrets
            )
        secrets_dir = self._secrets.path
        # With a base zygote to fork from, a cold start with no zygote of the function's own
        # is forked from the base (the app was unloaded, or this is its first start), and the
        # function's zygote starts after it, off its clock; without one, the zygote starts now.
        base = self._settings.base_zygote
        from_base = base is not None and base.running
        zygote = None
        if self._use_zygote:
            zygote = await self._running_zygote(spec, secrets_dir, logs, start=not from_base)
        if zygote is None:
            self._execs += 1
            instance = await Instance.launch(spec, self._package, secrets_dir, self._settings, logs)
            if self._use_zygote and from_base:
                self._start_zygote_soon(spec, secrets_dir, logs)
            return instance

        async def fork(plan: ProcessPlan) -> InstanceProcess:
            try:
                child = await self._take_spare(zygote, spec)
                assign(child, plan)
            except ZygoteFailed as exc:
                self._fall_back(spec, logs, f"zygote {zygote.name}: {exc}")
                if exc.broken or not zygote.alive:
                    await self._discard(zygote)
                return await start_process(
                    self._settings.isolation, plan, self._settings.base_zygote
                )
            self._forks += 1
            self._refill(zygote, spec)
            return child

        return await Instance.launch(
            spec, self._package, secrets_dir, self._settings, logs, start=fork
        )

    def update_secrets(self, secrets: Mapping[str, bytes]) -> None:
        """New values for some of the function's secrets: its running instances, zygote and
        spare read them from their next open of the file (none is restarted)."""
        if self._secrets is not None:  # else the first launch writes the pool's current values
            self._secrets.update(secrets)

    async def _take_spare(self, zygote: Zygote, spec: FunctionSpec) -> ForkedChild:
        """The spare forked ahead (or, if it died meanwhile, a new fork)."""
        task, self._spare = self._spare, None
        if task is not None:
            with contextlib.suppress(ZygoteFailed):
                child = await task
                if child.alive:
                    return child
                await child.release()
        return await zygote.fork(spec)

    def _refill(self, zygote: Zygote, spec: FunctionSpec) -> None:
        """Fork the next spare now, off the clock of the cold start that will take it."""
        if self._spare is None and zygote.alive and not self._closed:
            self._spare = asyncio.create_task(zygote.fork(spec))
            # Retrieved by _take_spare or _drop_spare; a failure there means a fresh fork.
            self._spare.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _drop_spare(self) -> None:
        task, self._spare = self._spare, None
        if task is None:
            return
        with contextlib.suppress(ZygoteFailed, asyncio.CancelledError):
            child = await task
            child.kill()
            await child.release()

    def _start_zygote_soon(self, spec: FunctionSpec, secrets_dir: Path, logs: LogBuffer) -> None:
        """Start the function's zygote in the background, unless one runs or is starting."""
        if self._closed or (self._zygote is not None and self._zygote.alive):
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start_later(spec, secrets_dir, logs))
            # A failure is logged as a fallback; the next cold start tries again.
            self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _start_later(
        self, spec: FunctionSpec, secrets_dir: Path, logs: LogBuffer
    ) -> Zygote | None:
        # After the start that asked for it has run its first invocation: off its CPU.
        await asyncio.sleep(_ZYGOTE_AFTER)
        return await self._running_zygote(spec, secrets_dir, logs)

    async def _running_zygote(
        self, spec: FunctionSpec, secrets_dir: Path, logs: LogBuffer, *, start: bool = True
    ) -> Zygote | None:
        """The function's zygote; one started now if none runs, unless not `start`."""
        async with self._lock:  # concurrent cold starts share one zygote start
            if self._closed or (self._unloaded and not self._launching):
                return None
            if self._zygote is not None and not self._zygote.alive:
                await self._drop_spare()
                status = await self._close(self._zygote)
                message = f"zygote {self._zygote.name} {status.describe()}; starting a new one"
                logs.append(LogEntry(time.time(), "worker", message, "worker"))
                logger.warning("function %s: %s", spec.service, message)
                self._zygote = None
            if self._zygote is None and start:
                admission = self._admission
                if admission is not None and not admission.try_reserve_zygote(self._zygote_memory):
                    why = f"no room for its zygote: this host's {admission.describe()}"
                    self._fall_back(spec, logs, why)
                    return None
                try:
                    self._zygote = await Zygote.start(
                        spec, self._package, secrets_dir, self._settings, logs
                    )
                except BaseException as exc:
                    self._give_back()
                    if not isinstance(exc, ZygoteFailed):
                        raise
                    self._fall_back(spec, logs, f"its zygote {exc}")
                    return None
                self._reserved.add(self._zygote)
                self._zygote_starts += 1
                self._refill(self._zygote, spec)
            return self._zygote

    def _fall_back(self, spec: FunctionSpec, logs: LogBuffer, why: str) -> None:
        self._fallbacks += 1
        message = f"{why}; this instance starts by a fresh exec"
        logs.append(LogEntry(time.time(), "worker", message, "worker"))
        logger.warning("function %s: %s", spec.service, message)

    async def _discard(self, zygote: Zygote) -> None:
        async with self._lock:
            if self._zygote is zygote:
                self._zygote = None
                await self._drop_spare()
        await self._close(zygote)

    async def _close(self, zygote: Zygote) -> ExitStatus:
        """Stop `zygote` and give back its reservation (once, whoever closes it first)."""
        status = await zygote.close()
        if zygote in self._reserved:
            self._reserved.discard(zygote)
            self._give_back()
        return status

    def _give_back(self) -> None:
        if self._admission is not None:
            self._admission.release_zygote(self._zygote_memory)

    async def close(self) -> None:
        """Stop the spare and the zygote and remove the secrets' folder (the pool has stopped
        its instances); launches from now on exec (the pool stops what they start)."""
        async with self._lock:
            self._closed = True
            zygote, self._zygote = self._zygote, None
            await self._drop_spare()
        if zygote is not None:
            await self._close(zygote)
        if self._secrets is not None:
            folder, self._secrets = self._secrets, None
            folder.remove()

    async def unload(self) -> None:
        """The pool has no instance left and the policy unloaded it: stop the spare and the
        zygote, unless a launch is under way (its fork would die with the zygote). Unlike
        `close`, the next launch starts a new zygote."""
        async with self._lock:
            if self._closed or self._launching:
                return
            # A zygote still to start (after the last instance) must not outlive the unload.
            self._unloaded = True
            if self._zygote is None:
                return
            zygote, self._zygote = self._zygote, None
            await self._drop_spare()
        self._unloads += 1
        await self._close(zygote)

    def statistics(self) -> LauncherStatistics:
        zygote = self._zygote
        return LauncherStatistics(
            zygote_pid=zygote.process.pid if zygote is not None and zygote.alive else None,
            zygote_starts=self._zygote_starts,
            forks=self._forks,
            execs=self._execs,
            fallbacks=self._fallbacks,
            unloads=self._unloads,
            zygote_starting=self._starting is not None and not self._starting.done(),
        )


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock, wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock)
