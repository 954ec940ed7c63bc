"""Zygotes: one per function, which has imported the runtime and the handler and forks the
function's instances, so that a cold start costs a fork rather than an interpreter's start.

A zygote is started as an instance is (`_process.start`: a sandbox, or a plain process under
--isolation process) with `--zygote=FD` instead of a channel; faasd_py/runtime/_zygote.py
describes its control protocol. Per *function*, not per app as DESIGN.md first said: the
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
import itertools
import logging
import os
import secrets as token
import shutil
import signal
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from faasd_py.errors import FaasdError
from faasd_py.isolation.cgroups import DEFAULT_PARENT, Cgroup, CgroupLimits
from faasd_py.isolation.sandbox import ExitStatus
from faasd_py.spec import FunctionSpec
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
    remove_cgroup,
)
from faasd_py.worker._process import start as start_process

logger = logging.getLogger(__name__)

# Channels whose ends can be handed to a forked child by SCM_RIGHTS; `net` needs a network
# namespace per instance, which only a fresh sandbox gets.
ZYGOTE_CHANNELS = ("shm", "socket")
_FORK_TIMEOUT = 5.0
_MAX_PACKET = 64 * 1024
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


class ZygoteFailed(Exception):
    """The zygote could not start or fork: the caller falls back to a fresh exec. `broken`:
    the zygote itself is at fault (gone, or not answering) and should be replaced; otherwise
    it still serves (a spare died, a fork or a cgroup was refused for want of resources), and
    replacing it would kill the function's running instances for nothing."""

    def __init__(self, message: str, *, broken: bool = True) -> None:
        super().__init__(message)
        self.broken = broken


@dataclass(frozen=True, slots=True)
class LauncherStatistics:
    zygote_pid: int | None  # host pid of the running zygote
    zygote_starts: int
    forks: int
    execs: int
    fallbacks: int  # execs because the zygote failed
    unloads: int = 0  # zygotes stopped because the keep-alive policy unloaded the function


class _ForkedProcess:
    """A child of a zygote (the `InstanceProcess` protocol): a spare until `assign` makes it
    an instance. Its exit status comes from the zygote, its parent; the worker watches it
    through a pidfd and kills it directly."""

    def __init__(self, cgroup: Cgroup | None) -> None:
        self.pid = 0  # the host pid, once the child has said hello
        self.stdout: asyncio.StreamReader
        self.stderr: asyncio.StreamReader
        self._cgroup = cgroup
        self._pidfd = -1
        self._status: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self._start: socket.socket | None = None  # its flags, fds and go-ahead go here

    @property
    def alive(self) -> bool:
        return not self._status.done()

    def assign(self, plan: ProcessPlan) -> None:
        """Make the spare the instance of `plan`: its flags and its channel's fds (copies,
        which the child holds once this returns). It opens its channel at `resume`."""
        if self._start is None or not self.alive:
            raise ZygoteFailed("the spare is gone", broken=False)
        message = {"argv": list(plan.runtime_args), "fds": list(plan.pass_fds)}
        fds = array.array("i", plan.pass_fds).tobytes()
        try:
            self._start.sendmsg(
                [msgpack.packb(message)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
            )
        except OSError as exc:
            raise ZygoteFailed(f"the spare is gone: {exc}", broken=False) from exc

    def resume(self) -> None:
        if self._start is not None:
            start, self._start = self._start, None
            with start, contextlib.suppress(OSError):  # gone meanwhile: its exit tells
                start.send(b"g")

    def attach(self, host_pid: int) -> None:
        """The child runs (and waits for the go-ahead): join its cgroup, take a pidfd."""
        self.pid = host_pid
        self._pidfd = os.pidfd_open(host_pid)
        if self._cgroup is not None:
            for procs in self._cgroup.procs_files():
                procs.write_text(str(host_pid))

    def exited(self, returncode: int) -> None:
        """The zygote reaped it."""
        if not self._status.done():
            oom = False
            if self._cgroup is not None:
                with contextlib.suppress(OSError):
                    oom = self._cgroup.oom_kills() > 0
            self._status.set_result(ExitStatus(returncode, oom))

    def orphaned(self) -> None:
        """Its zygote died: it dies too; its status is SIGKILL once it is gone."""
        self.kill()
        if self._pidfd < 0:
            self.exited(-signal.SIGKILL)
            return
        loop, pidfd = self._status.get_loop(), self._pidfd

        def gone() -> None:
            loop.remove_reader(pidfd)
            self.exited(-signal.SIGKILL)

        loop.add_reader(pidfd, gone)

    async def wait(self) -> ExitStatus:
        return await asyncio.shield(self._status)

    def kill(self) -> None:
        if self._status.done() or self._pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # what it forked, in its process group
        if self._cgroup is not None:
            self._cgroup.kill()  # and what left the group

    async def release(self) -> None:
        if self._start is not None:
            self._start.close()  # never resumed: the child exits on end of stream
            self._start = None
        if self._pidfd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                self._status.get_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._cgroup is not None:
            cgroup, self._cgroup = self._cgroup, None
            await remove_cgroup(cgroup)


class Zygote:
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
        self.name = name
        self._workdir = workdir
        self.process = process
        self._control = control
        self._isolation = isolation
        self._cgroup_parent = cgroup_parent  # where its forks' cgroups go: the run's
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._started: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending: dict[int, tuple[_ForkedProcess, asyncio.Future[None]]] = {}
        self._children: dict[int, _ForkedProcess] = {}  # by the zygote's pid of each
        self._tasks: list[asyncio.Task[None]] = []
        self.alive = True
        self._loop.add_reader(control, self._on_control)

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
        where it does: the function's folder, `secrets_dir`."""
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
            process = await start_process(settings.isolation, plan)
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
        for stream in (process.stdout, process.stderr):
            zygote._tasks.append(asyncio.create_task(pump_output(stream, logs, name)))
        try:
            async with asyncio.timeout(settings.start_timeout):
                first = await asyncio.shield(zygote._started)
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

    async def fork(self, spec: FunctionSpec) -> _ForkedProcess:
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
        child = _ForkedProcess(cgroup)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        start, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Every packet the child sends here carries its pid, translated into our namespace.
        start.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        start.setblocking(False)
        request_id = next(self._ids)
        forked: asyncio.Future[None] = self._loop.create_future()
        self._pending[request_id] = (child, forked)
        request = {"op": "fork", "id": request_id}
        try:
            fds = [out_write, err_write, start_child.fileno()]
            try:
                self._control.sendmsg(
                    [msgpack.packb(request)],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())],
                )
            finally:  # the zygote has its copies now
                for end in (out_write, err_write):
                    os.close(end)
                start_child.close()
            child.stdout, child.stderr = await pipe_reader(out_read), await pipe_reader(err_read)
            out_read = err_read = -1
            async with asyncio.timeout(_FORK_TIMEOUT):
                await forked
                child.attach(await _hello(start))
        except BaseException as exc:
            start.close()
            self._pending.pop(request_id, None)
            child.kill()
            await child.release()
            for fd in (out_read, err_read):
                if fd >= 0:
                    os.close(fd)
            if isinstance(exc, (OSError, TimeoutError)):
                raise ZygoteFailed(f"cannot fork: {exc or 'timed out'}") from exc
            raise
        child._start = start
        return child

    def _on_control(self) -> None:
        while True:
            try:
                data = self._control.recv(_MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._ended()
                return
            try:
                self._dispatch(msgpack.unpackb(data))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # The zygote runs the handler's import code: a message that does not parse
                # (msgpack's errors are ValueErrors) or lacks its fields means it is broken.
                # Trust none of it: fail what waits on it, kill it; the next start replaces it.
                logger.warning("zygote %s sent a malformed control message (%r)", self.name, exc)
                self._ended()
                with contextlib.suppress(OSError):
                    self.process.kill()
                return

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op in ("ready", "load_failed") and not self._started.done():
            self._started.set_result(message)
        elif op in ("forked", "fork_failed") and message.get("id") in self._pending:
            child, forked = self._pending.pop(message["id"])
            if op == "forked":
                self._children[message["pid"]] = child
                forked.set_result(None)
            else:
                error = f"cannot fork: {message.get('error')}"
                forked.set_exception(ZygoteFailed(error, broken=False))
        elif op == "exited" and message.get("pid") in self._children:
            self._children.pop(message["pid"]).exited(message["status"])

    def _ended(self) -> None:
        """The control socket closed: the zygote is gone, and its instances with it."""
        if not self.alive:
            return
        self.alive = False
        self._loop.remove_reader(self._control)
        if not self._started.done():
            self._started.set_result({"op": "exited"})
        for _, forked in self._pending.values():
            if not forked.done():
                forked.set_exception(ZygoteFailed("the zygote exited"))
        self._pending.clear()
        for child in self._children.values():
            child.orphaned()
        self._children.clear()

    # --- the end -------------------------------------------------------------------------------

    async def close(self) -> ExitStatus:
        """Kill the zygote (its instances die with it), wait for it and clean up."""
        self._ended()
        self._control.close()
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
    the settings and the function's channel allow one, fresh execs otherwise. Starts the
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
        self._spare: asyncio.Task[_ForkedProcess] | None = None
        self._secrets: SecretsFolder | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._launching = 0  # launches under way: an unload must not kill their zygote
        self._zygote_starts = self._forks = self._execs = self._fallbacks = self._unloads = 0

    async def launch(
        self, spec: FunctionSpec, secrets: Mapping[str, bytes], logs: LogBuffer
    ) -> Instance:
        self._launching += 1
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
        zygote = await self._running_zygote(spec, secrets_dir, logs) if self._use_zygote else None
        if zygote is None:
            self._execs += 1
            return await Instance.launch(spec, self._package, secrets_dir, self._settings, logs)

        async def fork(plan: ProcessPlan) -> InstanceProcess:
            try:
                child = await self._take_spare(zygote, spec)
                child.assign(plan)
            except ZygoteFailed as exc:
                self._fall_back(spec, logs, f"zygote {zygote.name}: {exc}")
                if exc.broken or not zygote.alive:
                    await self._discard(zygote)
                return await start_process(self._settings.isolation, plan)
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

    async def _take_spare(self, zygote: Zygote, spec: FunctionSpec) -> _ForkedProcess:
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

    async def _running_zygote(
        self, spec: FunctionSpec, secrets_dir: Path, logs: LogBuffer
    ) -> Zygote | None:
        async with self._lock:  # concurrent cold starts share one zygote start
            if self._closed:
                return None
            if self._zygote is not None and not self._zygote.alive:
                await self._drop_spare()
                status = await self._close(self._zygote)
                message = f"zygote {self._zygote.name} {status.describe()}; starting a new one"
                logs.append(LogEntry(time.time(), "worker", message))
                logger.warning("function %s: %s", spec.service, message)
                self._zygote = None
            if self._zygote is None:
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
        logs.append(LogEntry(time.time(), "worker", message))
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
            if self._closed or self._launching or self._zygote is None:
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
