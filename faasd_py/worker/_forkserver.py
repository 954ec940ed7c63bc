"""The worker's side of a process that forks on request: a function's zygote (_zygote.py) or
the base zygote (_base_zygote.py). Their control protocol is faasd_py/runtime/_zygote.py's.

`ForkServer` reads the control socket: answers to fork requests by id, exits of the children
by pid; when the socket closes, the server is gone and what waits on it fails. `ForkedChild`
is one of its children as the worker sees it (the `InstanceProcess` protocol's wait, kill and
release): its exit status comes from the server, its parent (or adopter), while the worker
watches and kills it through a pidfd; until `resume` it waits on its start socket.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgpack

from faasd_py.isolation.cgroups import Cgroup
from faasd_py.isolation.sandbox import ExitStatus

logger = logging.getLogger(__name__)

FORK_TIMEOUT = 5.0
_MAX_PACKET = 64 * 1024


class ZygoteFailed(Exception):
    """A zygote could not start or fork: the caller falls back to a fresh exec. `broken`:
    the zygote itself is at fault (gone, or not answering) and should be replaced; otherwise
    it still serves (a spare died, a fork or a cgroup was refused for want of resources), and
    replacing it would kill the function's running instances for nothing."""

    def __init__(self, message: str, *, broken: bool = True) -> None:
        super().__init__(message)
        self.broken = broken


class ForkedChild:
    """A child of a fork server. `cgroup`: where it is charged (its exit says whether it ran
    out of memory there); removed by `release` when `owns_cgroup`. `survives_server`: a base
    zygote's child lives on in its own sandbox when the base dies (its status is then
    unknown); a function zygote's dies with it, as pid 1 of their shared sandbox."""

    def __init__(
        self, cgroup: Cgroup | None, *, owns_cgroup: bool = True, survives_server: bool = False
    ) -> None:
        self.pid = 0  # the host pid, once known
        self.stdout: asyncio.StreamReader
        self.stderr: asyncio.StreamReader
        self.cgroup = cgroup
        self._owns_cgroup = owns_cgroup
        self._survives = survives_server
        self._pidfd = -1
        self._status: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        self.start: socket.socket | None = None  # its go-ahead (and flags) go here
        # A base zygote's child answers the go-ahead with its timeline (a cold start's
        # breakdown, faasd_py.runtime._base): given to this, once, if set.
        self.on_timeline: Callable[[dict[str, int]], None] | None = None
        # The start socket after the go-ahead, while the timeline is awaited on it: closed
        # by `close` if the child never sends one (it exited first, or the worker stops).
        self._awaiting_timeline: socket.socket | None = None

    @property
    def alive(self) -> bool:
        return not self._status.done()

    def watch(self, host_pid: int) -> None:
        """The child runs: take a pidfd to kill it and see it go."""
        self.pid = host_pid
        self._pidfd = os.pidfd_open(host_pid)

    def resume(self) -> None:
        """The go-ahead: the worker's end of its channel is open."""
        if self.start is None:
            return
        start, self.start = self.start, None
        try:
            start.send(b"g")
        except OSError:  # gone meanwhile: its exit tells
            start.close()
            return
        if self.on_timeline is None:
            start.close()
            return
        loop, report = self._status.get_loop(), self.on_timeline
        self._awaiting_timeline = start

        def answered() -> None:
            loop.remove_reader(start)
            self._awaiting_timeline = None
            with start:
                try:
                    timeline = msgpack.unpackb(start.recv(_MAX_PACKET))
                except (OSError, ValueError):
                    return
            # Sent after the handler's import code ran: statistics only, checked.
            if isinstance(timeline, dict) and all(
                isinstance(k, str) and isinstance(v, int) for k, v in timeline.items()
            ):
                report(timeline)

        loop.add_reader(start, answered)

    def exited(self, returncode: int, *, known: bool = True) -> None:
        """Its server reaped it (or, not `known`, it is gone with nobody to say how)."""
        if not self._status.done():
            oom = False
            if self.cgroup is not None:
                with contextlib.suppress(OSError):
                    oom = self.cgroup.oom_kills() > 0
            self._status.set_result(ExitStatus(returncode, oom, known))

    def orphaned(self) -> None:
        """Its server died: it dies too, unless it survives it; its pidfd says when it is
        gone, and its status is SIGKILL's (or unknown) then."""
        if not self._survives:
            self.kill()
        if self._pidfd < 0:
            self.exited(-signal.SIGKILL, known=not self._survives)
            return
        loop, pidfd = self._status.get_loop(), self._pidfd

        def gone() -> None:
            loop.remove_reader(pidfd)
            self.exited(-signal.SIGKILL, known=not self._survives)

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
        if self.cgroup is not None and self._owns_cgroup:
            self.cgroup.kill()  # and what left the group

    def close(self) -> None:
        """Give up the start socket (never resumed: the child exits on its end) and pidfd."""
        if self.start is not None:
            self.start.close()
            self.start = None
        if self._awaiting_timeline is not None:
            awaiting, self._awaiting_timeline = self._awaiting_timeline, None
            with contextlib.suppress(ValueError, RuntimeError):  # (its loop may be closed)
                self._status.get_loop().remove_reader(awaiting)
            awaiting.close()
        if self._pidfd >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                self._status.get_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def release(self) -> None:
        self.close()
        if self.cgroup is not None and self._owns_cgroup:
            from faasd_py.worker._process import remove_cgroup  # _process imports this module

            cgroup, self.cgroup = self.cgroup, None
            await remove_cgroup(cgroup)


class ForkServer:
    """A running fork server's control socket, as the worker reads it."""

    def __init__(self, name: str, control: socket.socket) -> None:
        self.name = name
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._started: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending: dict[int, tuple[ForkedChild | None, asyncio.Future[int]]] = {}
        self._children: dict[int, ForkedChild] = {}  # by the server's pid of each
        self.alive = True
        self.on_ended: Callable[[], None] = lambda: None
        self._loop.add_reader(control, self._on_control)

    async def started(self) -> dict[str, Any]:
        """Its first message ("ready", "load_failed"), or {"op": "exited"}."""
        return await asyncio.shield(self._started)

    def request_fork(
        self,
        request: dict[str, Any],
        fds: Sequence[int],
        child: ForkedChild | None,
        *,
        op: str = "fork",
        via: socket.socket | None = None,
    ) -> Coroutine[Any, Any, int]:
        """Send a request (`op`) with `fds` now, on the control socket or `via` another one
        the server's side reads (a spare's); close your copies of `fds` once this returns.
        Await the result for the answer: the server's pid of the child, whose exit is reported
        to `child` (if any) from then on. ZygoteFailed (not broken) if the server could not
        fork, (broken) if it is gone or did not answer."""
        if not self.alive:
            raise ZygoteFailed("the zygote has exited")
        request_id = next(self._ids)
        forked: asyncio.Future[int] = self._loop.create_future()
        try:
            (via or self._control).sendmsg(
                [msgpack.packb({**request, "op": op, "id": request_id})],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())],
            )
        except OSError as exc:
            # Refused on another socket: that one's reader is gone (a spare), not the server.
            raise ZygoteFailed(f"cannot fork: {exc}", broken=via is None) from exc
        self._pending[request_id] = (child, forked)
        return self._answer(request_id, forked)

    async def _answer(self, request_id: int, forked: asyncio.Future[int]) -> int:
        try:
            async with asyncio.timeout(FORK_TIMEOUT):
                return await forked
        except TimeoutError as exc:
            raise ZygoteFailed("cannot fork: no answer in time") from exc
        finally:
            self._pending.pop(request_id, None)

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
                # A function's zygote runs the handler's import code: a message that does not
                # parse (msgpack's errors are ValueErrors) or lacks its fields means it is
                # broken. Trust none of it: fail what waits on it; its owner kills it.
                logger.warning("zygote %s sent a malformed control message (%r)", self.name, exc)
                self._ended()
                return

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op in ("ready", "load_failed") and not self._started.done():
            self._started.set_result(message)
        elif op in ("forked", "fork_failed") and message.get("id") in self._pending:
            child, forked = self._pending[message["id"]]
            if op == "forked":
                if child is not None:
                    self._children[message["pid"]] = child
                forked.set_result(message["pid"])
            else:
                error = f"cannot fork: {message.get('error')}"
                forked.set_exception(ZygoteFailed(error, broken=False))
        elif op == "exited" and message.get("pid") in self._children:
            self._children.pop(message["pid"]).exited(message["status"])

    def _ended(self) -> None:
        """The control socket closed (or lied): the server is gone, or must be."""
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
        self.on_ended()

    def close_control(self) -> None:
        self._ended()
        self._control.close()
