"""Channels between the worker and a sandbox: one `Channel` protocol, several transports.

DESIGN.md's modes, as the worker's end sees them:

- `shm` (`faasd_py.datapath.channel_shm.ShmChannel`): shared-memory rings of the native shim; the
  default when the shim is built.
- `socket` (`SocketChannel`): a Unix socketpair carrying length-prefixed msgpack frames; works
  without a compiler.
- `net` (`faasd_py.datapath.channel_net.NetChannel`): HTTP to the runtime, the faasd-style path. A
  sandboxed instance serves on its own address on the worker's bridge (faasd_py.isolation.netns); a
  plain process (`--isolation process`, no network namespace of its own) on a loopback port the
  worker bound for it.

The instance's ends are blocking (faasd_py.runtime: `BlockingShmChannel`,
`BlockingSocketChannel`, `BlockingHttpChannel`). `prepare_channel` makes both ends of any kind
for an instance about to be launched: the fds it inherits, the flags that tell its runtime, and
the worker's end once the process runs.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from faasd_py import native
from faasd_py.errors import NativeUnavailable, SpecError
from faasd_py.protocol import ChannelClosed, FrameDecoder, encode

if TYPE_CHECKING:
    from faasd_py.isolation.netns import BridgeNetwork

__all__ = [
    "KINDS",
    "Channel",
    "ChannelClosed",
    "ChannelHandoff",
    "Mailbox",
    "SocketChannel",
    "default_kind",
    "prepare_channel",
    "resolve_kind",
]

KINDS = ("shm", "socket", "net")


class Channel(Protocol):
    async def send(self, message: dict[str, Any]) -> None: ...

    async def receive(self) -> dict[str, Any]:
        """The next message; raises ChannelClosed at end of stream."""
        ...

    def close(self) -> None: ...


_READ_CHUNK = 256 * 1024


class SocketChannel:
    """Length-prefixed msgpack frames over a connected stream socket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_frame: int
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame)
        self._pending: list[dict[str, Any]] = []
        self._send_lock = asyncio.Lock()

    @classmethod
    async def open(cls, sock: socket.socket, max_frame: int) -> SocketChannel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_READ_CHUNK)
        return cls(reader, writer, max_frame)

    async def send(self, message: dict[str, Any]) -> None:
        frame = encode(message)
        try:
            self._writer.write(frame)
            # Concurrent senders share one writer; drain one at a time.
            async with self._send_lock:
                await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ChannelClosed(str(exc)) from exc

    async def receive(self) -> dict[str, Any]:
        while not self._pending:
            try:
                data = await self._reader.read(_READ_CHUNK)
            except ConnectionError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not data:
                raise ChannelClosed("end of stream")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.pop(0)

    def close(self) -> None:
        self._writer.close()


class Mailbox:
    """Messages on their way to one receiving task: those that came before it asked wait in
    order; once the channel fails, `get` raises the failure after them. The worker's ends that
    are fed by callbacks (the shm channel's doorbell, the net channel's requests) deliver
    through one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._inbox: collections.deque[dict[str, Any]] = collections.deque()
        self._receiver: asyncio.Future[dict[str, Any]] | None = None
        self.failure: BaseException | None = None
        # Offered each message first, in the callback that delivers it; what it takes (True)
        # never reaches `get`. The worker takes an invocation's result this way: straight to
        # the call awaiting it, without waking its reading task in between.
        self.intercept: Callable[[dict[str, Any]], bool] | None = None

    @property
    def waiting(self) -> bool:
        """Whether a task is waiting in `get` for the next message."""
        return self._receiver is not None

    def deliver(self, message: dict[str, Any]) -> None:
        if self.failure is not None:
            return
        intercept = self.intercept
        if intercept is not None and not self._inbox and intercept(message):
            return
        receiver, self._receiver = self._receiver, None
        if receiver is not None and not receiver.done():
            receiver.set_result(message)
        else:
            self._inbox.append(message)

    def fail(self, exc: BaseException) -> None:
        """No more messages: `get` raises `exc` once the waiting ones are taken."""
        if self.failure is not None:
            return
        self.failure = exc
        receiver, self._receiver = self._receiver, None
        if receiver is not None and not receiver.done():
            receiver.set_exception(exc)

    async def get(self) -> dict[str, Any]:
        if self._inbox:
            return self._inbox.popleft()
        if self.failure is not None:
            raise self.failure
        if self._receiver is not None:
            raise RuntimeError("receive() is already awaited by another task")
        self._receiver = self._loop.create_future()
        try:
            return await self._receiver
        finally:
            self._receiver = None


# --- choosing a channel ------------------------------------------------------------------------


def default_kind() -> str:
    """shm when the native shim is built, else socket."""
    return "shm" if native.HAS_NATIVE else "socket"


def resolve_kind(requested: str | None, default: str) -> str:
    """The channel a function gets: its own choice, else the worker's; NativeUnavailable if
    that is shm and this install runs on the fallback."""
    kind = requested or default
    if kind not in KINDS:
        raise SpecError("channel", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "shm" and not native.HAS_NATIVE:
        raise NativeUnavailable(
            f"the shm channel needs the native shim, which is {native.REASON}; "
            "use the socket channel (annotation com.faasd-py.channel: socket, or "
            "`faasd-py up --channel socket`)"
        )
    return kind


class ChannelHandoff(Protocol):
    """Both ends of one instance's channel while the instance is launched."""

    kind: str
    # The fds the instance inherits (pass_fds), and the runtime flags that name them.
    child_fds: tuple[int, ...]
    runtime_args: list[str]

    async def connect(self, pid: int) -> Channel:
        """The worker's end, once the instance process `pid` runs."""
        ...

    def release_child_side(self) -> None:
        """After the launch (or its failure): close what only the child needed."""
        ...

    def abort(self) -> None:
        """The launch failed: close everything."""
        ...


class _SocketHandoff:
    kind = "socket"

    def __init__(self, max_frame: int) -> None:
        self._max_frame = max_frame
        self._parent, self._child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.child_fds: tuple[int, ...] = (self._child.fileno(),)
        self.runtime_args = ["--channel=socket", f"--fd={self._child.fileno()}"]

    async def connect(self, pid: int) -> Channel:
        return await SocketChannel.open(self._parent, self._max_frame)

    def release_child_side(self) -> None:
        self._child.close()

    def abort(self) -> None:
        self._child.close()
        self._parent.close()


_worker_pidfd: tuple[int, int] | None = None  # (pid, pidfd) of this process


def worker_pidfd() -> int:
    """A pidfd of this process, opened once: an instance that holds it sees the worker exit
    (it becomes readable) even from a PID namespace, where its parent's pid means nothing."""
    global _worker_pidfd
    if _worker_pidfd is None or _worker_pidfd[0] != os.getpid():  # not inherited over fork
        _worker_pidfd = (os.getpid(), os.pidfd_open(os.getpid()))
    return _worker_pidfd[1]


class _ShmHandoff:
    kind = "shm"

    def __init__(self, max_frame: int, spin: int, worker_spin: int) -> None:
        from faasd_py.datapath.shm import ShmRegion

        self._max_frame = max_frame
        self._worker_spin = worker_spin
        self._region = ShmRegion.create()
        memfd, eventfd, pidfd = self._region.memfd, self._region.eventfd, worker_pidfd()
        self.child_fds: tuple[int, ...] = (memfd, eventfd, pidfd)
        self.runtime_args = [
            "--channel=shm",
            f"--fd={memfd}",
            f"--doorbell-fd={eventfd}",
            f"--worker-pidfd={pidfd}",
            f"--spin={spin}",
        ]

    async def connect(self, pid: int) -> Channel:
        from faasd_py.datapath.channel_shm import ShmChannel

        channel = ShmChannel.open(
            self._region, self._max_frame, peer_pid=pid, spin=self._worker_spin
        )
        self._region.close_memfd()
        return channel

    def release_child_side(self) -> None:
        # Both fds stay with the worker until connect: it maps the memfd and keeps the eventfd.
        pass

    def abort(self) -> None:
        self._region.close()


# Where a sandboxed instance's runtime serves HTTP, as an OpenFaaS watchdog does.
RUNTIME_PORT = 8080


class _NetHandoff:
    """A sandboxed instance listens on RUNTIME_PORT in its own network namespace; `connect`
    gives that namespace a veth on the worker's bridge. A plain process shares the host's
    network: it inherits a listening socket the worker bound to a free loopback port."""

    kind = "net"

    def __init__(self, max_frame: int, network: BridgeNetwork | None) -> None:
        self._max_frame = max_frame
        self._network = network
        self._listener: socket.socket | None = None
        pidfd = worker_pidfd()
        if network is None:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.bind(("127.0.0.1", 0))
            self._listener.listen(128)
            fd = self._listener.fileno()
            self.child_fds: tuple[int, ...] = (fd, pidfd)
            self.runtime_args = ["--channel=net", f"--fd={fd}", f"--worker-pidfd={pidfd}"]
        else:
            self.child_fds = (pidfd,)
            self.runtime_args = [
                "--channel=net",
                f"--listen=0.0.0.0:{RUNTIME_PORT}",
                f"--worker-pidfd={pidfd}",
            ]

    async def connect(self, pid: int) -> Channel:
        from faasd_py.datapath.channel_net import NetChannel

        network = self._network
        if network is None:
            assert self._listener is not None
            port = self._listener.getsockname()[1]
            self._listener.close()  # the instance has its copy
            return NetChannel("127.0.0.1", port, self._max_frame, peer_pid=pid)
        attachment = await asyncio.to_thread(network.attach, pid)
        return NetChannel(
            str(attachment.address),
            RUNTIME_PORT,
            self._max_frame,
            peer_pid=pid,
            on_close=lambda: network.detach(attachment),
        )

    def release_child_side(self) -> None:
        pass  # the listener stays open until connect: it tells the worker the port

    def abort(self) -> None:
        if self._listener is not None:
            self._listener.close()


def prepare_channel(
    kind: str,
    max_frame: int,
    *,
    spin: int = 0,
    worker_spin: int = 0,
    network: BridgeNetwork | None = None,
) -> ChannelHandoff:
    """Both ends of a new channel of `kind` (see resolve_kind) for an instance to launch.
    shm only: `spin`, iterations the instance's end spins before it sleeps; `worker_spin`, the
    most the worker's end spins for a reply after a send (adaptive). net only: `network`, the
    worker's bridge when instances are sandboxed (None: plain processes, over loopback)."""
    if kind == "shm":
        return _ShmHandoff(max_frame, spin, worker_spin)
    if kind == "socket":
        return _SocketHandoff(max_frame)
    if kind == "net":
        return _NetHandoff(max_frame, network)
    raise ValueError(f"unknown channel kind {kind!r}")
