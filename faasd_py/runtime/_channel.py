"""The instance's ends of the channels: blocking, for a loop with no asyncio in it.

`BlockingShmChannel` waits in C with the GIL released (spin, then a futex); the socket one
blocks in recv; the net one (`faasd_py.runtime._http`) is an HTTP server with a thread per
connection. Either may be read by one thread while another sends. `open_channel` opens the
one the runtime's flags name. No asyncio here: a plain loop imports only what it uses.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from faasd_py.protocol import ChannelClosed, FrameDecoder, encode

if TYPE_CHECKING:
    from faasd_py.datapath.shm import ShmStatistics

__all__ = ["BlockingChannel", "BlockingShmChannel", "BlockingSocketChannel", "open_channel"]

_READ_CHUNK = 256 * 1024


class BlockingChannel(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...

    def receive(self) -> dict[str, Any]:
        """The next message; raises ChannelClosed at end of stream."""
        ...

    def shutdown(self) -> None:
        """Tell the peer this end is done; safe while another thread receives."""
        ...

    def close(self) -> None: ...


class BlockingSocketChannel:
    """Length-prefixed msgpack frames over a connected stream socket, in blocking calls."""

    def __init__(self, sock: socket.socket, max_frame: int) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._decoder = FrameDecoder(max_frame)
        self._pending: collections.deque[dict[str, Any]] = collections.deque()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.sendall(encode(message))
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc

    def receive(self) -> dict[str, Any]:
        while not self._pending:
            try:
                data = self._sock.recv(_READ_CHUNK)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not data:
                raise ChannelClosed("end of stream")
            self._pending.extend(self._decoder.feed(data))
        return self._pending.popleft()

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


class BlockingShmChannel:
    """The instance's end of a shm channel (the `BlockingChannel` protocol).

    `receive` blocks in C: spins, then sleeps on the region's futex word. The spin is adaptive
    (AdaptiveSpin, as at the worker's end): up to `spin` iterations while the next message
    comes within them, shrinking after each one that did not; every 32nd spin is full length,
    which notices when messages come quickly again. A fixed spin cost as much CPU as the rest of
    a warm call, and on a busy machine the next invocation mostly comes later than any spin
    (the worker serves HTTP in between), so it bought nothing and took a core from the worker.
    Every `liveness_interval` seconds asleep it asks `peer_alive`; a False ends the channel
    (the worker is gone without closing it). One thread may receive while another sends.
    """

    def __init__(
        self,
        memfd: int,
        peer_eventfd: int,
        max_frame: int,
        *,
        spin: int = 0,
        peer_alive: Callable[[], bool] | None = None,
        liveness_interval: float = 1.0,
    ) -> None:
        # Imported here: an instance on the socket channel never loads the native module.
        from faasd_py.datapath.shm import AdaptiveSpin, ShmEndpoint, require_native

        lib = require_native()
        self._ep = ShmEndpoint(memfd, lib.SHM_SANDBOX, -1, peer_eventfd, max_frame)
        self._peer_eventfd = peer_eventfd
        self._spin = spin
        self._receive_spin = AdaptiveSpin(spin)
        self._peer_alive = peer_alive or (lambda: True)
        self._interval = liveness_interval
        self._rx, self._tx = lib.SHM_WAIT_RX, lib.SHM_WAIT_TX

    def send(self, message: dict[str, Any]) -> None:
        meta, body, user = self._ep.encode(message)
        if len(meta) + len(body) <= self._ep.max_record:
            while not self._ep.try_send(meta, body, user):
                self._wait_for_room()
            return
        for record in self._ep.fragments(meta, body, user):
            while not self._ep.try_send(*record):
                self._wait_for_room()

    def receive(self) -> dict[str, Any]:
        while True:
            message = self._ep.poll()
            if message is not None:
                return message
            self._wait_for_record()

    def _wait_for_record(self) -> None:
        spin = self._receive_spin
        if spin.maximum:
            hit = self._ep.poll_spin(self._rx, spin.budget())
            spin.record(hit)
            if hit:
                return
        if not self._ep.wait(self._rx, 0, self._interval) and not self._peer_alive():
            raise ChannelClosed("the worker is gone")

    def _wait_for_room(self) -> None:
        if not self._ep.wait(self._tx, self._spin, self._interval) and not self._peer_alive():
            raise ChannelClosed("the worker is gone")

    def statistics(self) -> ShmStatistics:
        return self._ep.statistics()

    def shutdown(self) -> None:
        """Tell the worker this end is done; safe while another thread is receiving."""
        self._ep.shutdown()

    def close(self) -> None:
        """Shut down, unmap and close the peer's eventfd (this end's copy, which it took
        over), once no other thread is inside send or receive."""
        self._ep.close()
        if self._peer_eventfd >= 0:
            os.close(self._peer_eventfd)
            self._peer_eventfd = -1


def open_channel(
    kind: str,
    fd: int | None,
    doorbell_fd: int | None,
    max_frame: int,
    spin: int,
    worker_pidfd: int | None = None,
    *,
    listen: str | None = None,
    max_body: int | None = None,
) -> BlockingChannel:
    """The instance's end of the channel the worker set up (runtime flags --channel, --fd,
    --doorbell-fd, --worker-pidfd, --spin, --listen). A shm or net end gives up when the worker
    is gone: its pidfd turns readable (or, without one, this process gets a new parent).
    net: an HTTP server on `listen` (an address in the instance's own network namespace) or on
    the listening socket `fd` (plain processes: bound to loopback by the worker); bodies above
    `max_body` (default: the frame limit) are refused with 413."""
    if kind == "net":
        from faasd_py.runtime._http import BlockingHttpChannel

        limit = max_frame if max_body is None else max_body
        return BlockingHttpChannel.open(listen, fd, limit, worker_pidfd)
    if fd is None:
        raise ValueError(f"the {kind} channel needs --fd")
    if kind == "socket":
        return BlockingSocketChannel(socket.socket(fileno=fd), max_frame)
    if kind == "shm":
        if doorbell_fd is None:
            raise ValueError("the shm channel needs --doorbell-fd")
        channel = BlockingShmChannel(
            fd, doorbell_fd, max_frame, spin=spin, peer_alive=_worker_alive(worker_pidfd)
        )
        os.close(fd)  # mapped: the memfd itself is no longer needed
        return channel
    raise ValueError(f"unknown channel kind {kind!r}")


def _worker_alive(pidfd: int | None) -> Callable[[], bool]:
    if pidfd is None:
        parent = os.getppid()
        return lambda: os.getppid() == parent
    from faasd_py.fdwait import wait_readable

    def alive() -> bool:
        return not wait_readable([pidfd], 0)

    return alive
