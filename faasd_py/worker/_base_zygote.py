"""The base zygote, as the worker runs it: one per sandboxing worker, started with it, never
sandboxed, never running a function's code (faasd_py/runtime/_base.py is its other side).

A sandboxed instance (or a function's own zygote) is forked from it: `BaseZygote.fork(spec,
runtime_args)` sends the same SandboxSpec an exec'd sandbox would get, and the base's child
builds that whole sandbox around itself before it runs the runtime. So an app unloaded by the
keep-alive policy holds nothing (no zygote, no instance) and still starts in a fork's time.

If the base dies or stops answering, what is forked from it lives on (each in its own
sandbox); forks fail at once with ZygoteFailed, so that their callers start a sandbox afresh,
while a new base starts in the background (after a pause that doubles with each failed start,
up to a few seconds). `close` stops it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets as token
import socket
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from faasd_py.isolation.cgroups import DEFAULT_PARENT, Cgroup, CgroupLimits
from faasd_py.isolation.sandbox import SandboxSpec, fd_pairs, python_layout, spec_to_wire
from faasd_py.worker._forkserver import ForkedChild, ForkServer, ZygoteFailed
from faasd_py.worker._process import remove_cgroup

logger = logging.getLogger(__name__)

_RESTART_PAUSE = 0.05
_RESTART_PAUSE_MAX = 5.0
_LOG_LINE = 64 * 1024
_TIMELINES = 1024  # kept for benchmarks (bench/coldstart.py)
# How long after a start the next spare is made: its fork and cgroup move (and the function's
# own zygote, faasd_py.worker._zygote) stay off the CPU while that start runs its first call.
_REFILL_DELAY = 0.05
# How long a closing base waits for the end of its output once it has been reaped.
_OUTPUT_WAIT = 2.0
_ROOM = 2048


@dataclass(frozen=True)
class _Spare:
    """An intermediate forked ahead, waiting on `socket` in `cgroup`."""

    socket: socket.socket
    cgroup: Cgroup

    def drop(self) -> None:
        self.socket.close()  # it exits on the end of its socket
        self.cgroup.kill()


def _join(cgroup: Cgroup, pid: int) -> None:
    for procs in cgroup.procs_files():
        procs.write_text(str(pid))


@dataclass(frozen=True, slots=True)
class BaseZygoteStatistics:
    pid: int | None  # the running base's host pid
    starts: int
    forks: int  # sandboxes forked from it
    fallbacks: int  # forks it could not serve (its callers started a sandbox afresh)


class BaseZygote:
    """The worker's handle on its base zygote, across restarts. `start` before use."""

    def __init__(
        self,
        python: str,
        runtime_path: Path,
        env: dict[str, str],
        timeout: float,
        cgroup_parent: str = DEFAULT_PARENT,
    ):
        self._python = python
        self._cgroup_parent = cgroup_parent  # where its sandboxes' cgroups go: the run's
        self._spare: asyncio.Task[_Spare] | None = None
        self._runtime_path = runtime_path
        self._env = env
        self._timeout = timeout
        self._server: ForkServer | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._restarting: asyncio.Task[None] | None = None
        self._failures = 0
        self._closed = False
        self._starts = self._forks = self._fallbacks = 0
        self._timelines: deque[dict[str, int]] = deque(maxlen=_TIMELINES)

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.alive

    async def start(self) -> None:
        """Start the base and wait until it has imported what it preloads; ZygoteFailed if
        it does not."""
        executable = (await asyncio.to_thread(python_layout, self._python)).executable
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                executable,
                "-S",
                "-s",
                "-m",
                "faasd_py.runtime._base",
                f"--control={child.fileno()}",
                f"--room={'_' * _ROOM}",  # for its forks' command lines (runtime._base)
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(child.fileno(),),
                env=self._env,
                cwd="/",
                start_new_session=True,  # the worker's Ctrl-C is the worker's to handle
                limit=_LOG_LINE,
            )
        except OSError as exc:
            parent.close()
            raise ZygoteFailed(f"the base zygote cannot start: {exc}") from exc
        finally:
            child.close()
        parent.setblocking(False)
        server = ForkServer(f"base-{process.pid}", parent)
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            self._spawn(_log_output(stream, process.pid))
        try:
            async with asyncio.timeout(self._timeout):
                first = await server.started()
        except BaseException:
            await _stop(server, process)
            raise
        if first.get("op") != "ready":
            code = await _stop(server, process)
            raise ZygoteFailed(f"the base zygote exited with {code} while loading")
        self._server, self._process = server, process
        server.on_ended = self._restart_soon
        self._starts += 1
        self._failures = 0
        self._refill(server)
        logger.info("base zygote %d ready: sandboxes start by a fork", process.pid)

    async def fork(
        self, spec: SandboxSpec, runtime_args: Sequence[str], name: str, limits: CgroupLimits
    ) -> tuple[ForkedChild, Cgroup]:
        """Fork a sandbox of `spec` (whose own cgroup is ignored) that runs `python -m
        faasd_py.runtime RUNTIME_ARGS`, in a cgroup `name` with `limits`; it waits for
        `resume`. The cgroup is the caller's to remove once the sandbox is gone. ZygoteFailed
        (logged, nothing left behind) if the base cannot serve it: start it afresh then."""
        server = self._server
        try:
            if server is None or not server.alive:
                raise ZygoteFailed("it is not running (restarting)")
            if spec.netns_fd is not None:
                raise ZygoteFailed("a network namespace of the worker's is not passed on")
            return await self._fork(server, spec, runtime_args, name, limits)
        except ZygoteFailed as exc:
            self._fallbacks += 1
            logger.warning("base zygote: %s; this sandbox starts afresh", exc)
            if exc.broken and server is not None and server.alive:
                self._kill()  # not answering: replaced (its forks live on)
            raise

    async def _fork(
        self,
        server: ForkServer,
        spec: SandboxSpec,
        runtime_args: Sequence[str],
        name: str,
        limits: CgroupLimits,
    ) -> tuple[ForkedChild, Cgroup]:
        requested = time.monotonic_ns()
        # The spare forked ahead, in its cgroup already (so then is the sandbox it forks),
        # or, if none is ready, an intermediate forked now, and the launcher moves the
        # sandbox into a new cgroup before it runs. Either way the request goes to the
        # intermediate alone: the base never holds a function's spec (its environment), which
        # would linger in its memory, and so in every later fork's.
        spare = self._take_spare()
        try:
            if spare is not None:
                cgroup, via = spare.cgroup, spare.socket
                cgroup.set_limits(limits)
                with contextlib.suppress(OSError):  # cgroup v2 keeps the spare's name
                    cgroup = cgroup.renamed(name)
            else:
                cgroup = Cgroup.create(name, limits, parent=self._cgroup_parent)
                spec = replace(spec, cgroup=cgroup)
        except (OSError, RuntimeError, ValueError) as exc:
            if spare is not None:
                spare.drop()
            raise ZygoteFailed(f"no cgroup for the sandbox: {exc}", broken=False) from exc
        finally:
            self._refill(server, _REFILL_DELAY)
        child = ForkedChild(cgroup, owns_cgroup=False, survives_server=True)
        pairs = fd_pairs(spec)
        start, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request = {
            "spec": spec_to_wire(replace(spec, cgroup=None) if spare else spec),
            "fds": [target for _, target in pairs],
            "runtime_args": list(runtime_args),
        }
        try:
            if spare is None:
                via, _ = await self._intermediate(server)
            try:
                forked = server.request_fork(
                    request, [start_child.fileno(), *(fd for fd, _ in pairs)], child, via=via
                )
            finally:
                start_child.close()
                via.close()  # the intermediate has its request: nothing more goes there
            child.watch(await forked)
        except BaseException:
            start.close()  # a child that got this far exits on it, unstarted
            child.close()
            cgroup.kill()
            await remove_cgroup(cgroup)
            raise
        answered = time.monotonic_ns()

        def record(timeline: dict[str, int]) -> None:
            self._timelines.append({"requested": requested, "answered": answered, **timeline})

        child.on_timeline = record
        child.start = start
        self._forks += 1
        return child, cgroup

    # --- the spare: an intermediate forked ahead and moved into a cgroup ------------------------

    def _take_spare(self) -> _Spare | None:
        task, self._spare = self._spare, None
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            if task is not None and not task.done():
                self._spare = task  # still on its way: for the next start
            return None
        return task.result()

    def _refill(self, server: ForkServer, delay: float = 0.0) -> None:
        """Make the next spare, after `delay`: off the CPU of the start that took the last."""
        if self._spare is None and server.alive and not self._closed:
            making = self._make_spare(server, delay)
            self._spare = asyncio.get_running_loop().create_task(making)
            # A spare that could not be made is retrieved by _take_spare: a start without.
            self._spare.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _intermediate(self, server: ForkServer) -> tuple[socket.socket, int]:
        """Fork an intermediate of the base: the socket on which it waits for its one
        request, and its pid."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                forked = server.request_fork({}, [theirs.fileno()], None, op="spare")
            finally:
                theirs.close()
            return ours, await forked
        except BaseException:
            ours.close()  # it exits at its end
            raise

    async def _make_spare(self, server: ForkServer, delay: float) -> _Spare:
        await asyncio.sleep(delay)
        cgroup = Cgroup.create(
            f"spare-{token.token_hex(4)}", CgroupLimits(), parent=self._cgroup_parent
        )
        ours = None
        try:
            ours, pid = await self._intermediate(server)
            # The move into a cgroup takes milliseconds on v1 (the kernel waits for an RCU
            # grace period): in a thread, off the loop and off any start's clock.
            await asyncio.to_thread(_join, cgroup, pid)
        except BaseException:
            if ours is not None:
                ours.close()  # the spare exits at its end
            cgroup.kill()
            await remove_cgroup(cgroup)
            raise
        return _Spare(ours, cgroup)

    async def _drop_spare(self) -> None:
        task, self._spare = self._spare, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                spare = await task
                spare.drop()
                await remove_cgroup(spare.cgroup)

    def _restart_soon(self) -> None:
        """The base is gone: start another after a pause (longer after each failed start)."""
        if self._closed or self._restarting is not None:
            return
        logger.warning("base zygote exited; restarting it (sandboxes start afresh meanwhile)")
        self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        try:
            server, process = self._server, self._process
            self._server = self._process = None
            await self._drop_spare()
            if server is not None and process is not None:
                await _stop(server, process)
            while not self._closed:
                pause = min(_RESTART_PAUSE * 2**self._failures, _RESTART_PAUSE_MAX)
                await asyncio.sleep(pause)
                try:
                    await self.start()
                    return
                except ZygoteFailed as exc:
                    self._failures += 1
                    logger.warning("base zygote: %s", exc)
        finally:
            self._restarting = None

    def _kill(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the base for good (what was forked from it is the worker's to stop)."""
        self._closed = True
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
        server, process = self._server, self._process
        self._server = self._process = None
        await self._drop_spare()
        if server is not None and process is not None:
            await _stop(server, process)
        # Its output ends when the last process holding the pipes does, which a child that
        # outlives it may delay: a stopping worker waits a moment, not for ever.
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=_OUTPUT_WAIT)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def timelines(self) -> list[dict[str, int]]:
        """The latest starts' timelines, oldest first: time.monotonic_ns() at each step, from
        the worker's request ("requested") through the intermediate's fork ("forked"), the
        launcher's steps (sandbox.Forked.stamps), the child's return to Python ("returned"),
        the worker's go-ahead ("resumed") to the handler imported ("imported"); the worker
        heard of the fork at "answered"."""
        return list(self._timelines)

    def statistics(self) -> BaseZygoteStatistics:
        process = self._process if self.running else None
        return BaseZygoteStatistics(
            pid=None if process is None else process.pid,
            starts=self._starts,
            forks=self._forks,
            fallbacks=self._fallbacks,
        )


async def _stop(server: ForkServer, process: asyncio.subprocess.Process) -> int:
    """Close the control socket (the base exits at its end), make sure, and reap it."""
    server.close_control()
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    return await process.wait()


async def _log_output(stream: asyncio.StreamReader, pid: int) -> None:
    """The base runs no function: what it prints is the worker's to log."""
    while line := await stream.readline():
        logger.warning("base zygote %d: %s", pid, line.decode(errors="replace").rstrip())
