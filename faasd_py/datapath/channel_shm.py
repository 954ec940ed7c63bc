"""The worker's end of the shared-memory channel, in its event loop (`ShmChannel`).

The instance's end is `faasd_py.runtime.BlockingShmChannel`; regions, endpoints and the record
format are in `faasd_py.datapath.shm`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from faasd_py import native
from faasd_py.datapath import doorbells
from faasd_py.datapath.channel import Mailbox
from faasd_py.datapath.shm import (
    DEFAULT_GEOMETRY,
    AdaptiveSpin,
    ShmEndpoint,
    ShmGeometry,
    ShmRegion,
    ShmStatistics,
    require_native,
)
from faasd_py.protocol import ChannelClosed, ProtocolError

__all__ = ["DEFAULT_GEOMETRY", "ShmChannel", "ShmGeometry", "ShmRegion", "ShmStatistics"]

# A probe that runs this long after its send found the loop busy with other callbacks.
_BUSY_LOOP_NS = 20_000


class ShmChannel:
    """The worker's end of a shm channel, in its event loop (the `Channel` protocol).

    The eventfd is watched by the loop's doorbell engine (faasd_py.datapath.doorbells: epoll, or one
    io_uring for every instance of the loop), which consumes each ring of it and calls
    `_on_doorbell`. The peer rings it only while this end is parked, which it is whenever the
    loop has drained the ring. After a send, once the loop has run what was ready, it may spin
    for the reply instead (`spin`, adaptive: see AdaptiveSpin; skipped when the loop is busy), which
    saves the wake-up of both the peer's doorbell and the loop. When the peer process exits (a
    pidfd, also in the loop), the records it sent are still delivered; then `receive` raises
    ChannelClosed.
    """

    def __init__(
        self, endpoint: ShmEndpoint, eventfd: int, peer_pid: int | None, spin: int = 0
    ) -> None:
        self._ep = endpoint
        self._eventfd = eventfd
        self._loop = asyncio.get_running_loop()
        self._mailbox = Mailbox(self._loop)
        self._room: asyncio.Future[None] | None = None
        self._send_lock = asyncio.Lock()
        self._pidfd = -1
        self._spin = AdaptiveSpin(spin)
        self._probing = False
        self._probe_scheduled = 0
        self._wait_rx = native.lib.SHM_WAIT_RX
        self._doorbells = doorbells.for_loop(self._loop)
        self._doorbells.watch(eventfd, self._on_doorbell)
        if peer_pid is not None:
            self._watch_peer(peer_pid)
        if self._ep.park(native.lib.SHM_WAIT_RX):
            # The peer sent before this end was parked, so it rang no doorbell: drain it now.
            self._loop.call_soon(self._drain)

    @classmethod
    def open(
        cls, region: ShmRegion, max_frame: int, peer_pid: int | None = None, spin: int = 0
    ) -> ShmChannel:
        """Attach the worker's end of `region`; the channel takes over its eventfd. `spin`: the
        most iterations the loop spins for a reply after a send (adaptive; 0: never)."""
        lib = require_native()
        endpoint = ShmEndpoint(region.memfd, lib.SHM_WORKER, region.eventfd, -1, max_frame)
        channel = cls(endpoint, region.eventfd, peer_pid, spin)
        region.eventfd = -1
        return channel

    def _watch_peer(self, pid: int) -> None:
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self._on_peer_exit)
            return
        self._loop.add_reader(self._pidfd, self._on_peer_exit)

    @property
    def inline_capacity(self) -> int:
        return self._ep.inline_capacity

    @property
    def max_record(self) -> int:
        return self._ep.max_record

    def statistics(self) -> ShmStatistics:
        return self._ep.statistics()

    # --- Channel -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        meta, body, user = self._ep.encode(message)
        single = len(meta) + len(body) <= self._ep.max_record
        # The common case: one record, room for it, no other sender waiting for room.
        if single and not self._send_lock.locked() and self._ep.try_send(meta, body, user):
            self._expect_reply()
            return
        async with self._send_lock:
            records = [(meta, body, user)] if single else self._ep.fragments(meta, body, user)
            for record in records:
                while not self._ep.try_send(*record):
                    await self._wait_for_room()
        self._expect_reply()

    def _expect_reply(self) -> None:
        """A reply may come within microseconds: once the loop has run what is ready now,
        spin for it (adaptively) rather than sleep in epoll and pay for a wake-up."""
        if self._spin.maximum and not self._probing:
            self._probing = True
            self._probe_scheduled = time.perf_counter_ns()
            self._loop.call_soon(self._probe)

    def _probe(self) -> None:
        self._probing = False
        if not self._mailbox.waiting or self._mailbox.failure is not None or not self._ep.attached:
            return  # nobody is waiting, or a reply already came
        if time.perf_counter_ns() - self._probe_scheduled > _BUSY_LOOP_NS:
            # Other callbacks ran before this one: the loop has work, and will not sleep
            # before it looks at the doorbell again. Spinning would only hold that work up.
            return
        hit = self._ep.poll_spin(self._wait_rx, self._spin.budget())
        self._spin.record(hit)
        if hit:
            self._drain()

    async def _wait_for_room(self) -> None:
        if self._ep.park(native.lib.SHM_WAIT_TX):
            return
        if self._room is None:
            self._room = self._loop.create_future()
        await self._room

    def intercept(self, take: Callable[[dict[str, Any]], bool] | None) -> None:
        """Offer each message to `take` as it arrives (in the doorbell's callback), before
        `receive` sees it; what `take` returns True for is consumed. The instance's results go
        this way, which saves a wake-up of the reading task per invocation."""
        self._mailbox.intercept = take

    async def receive(self) -> dict[str, Any]:
        # Nothing to drain here: whenever the loop leaves this channel, it is parked (the
        # doorbell will fire) or a spin for a reply is scheduled.
        return await self._mailbox.get()

    def close(self) -> None:
        """Tell the peer we are done (it sees the end of the channel) and release everything."""
        if not self._ep.attached:
            return
        self._stop_watching()
        self._doorbells.unwatch(self._eventfd)
        self._ep.close()
        os.close(self._eventfd)
        self._fail(ChannelClosed("the channel is closed"))

    # --- the loop's callbacks ------------------------------------------------------------------

    def _on_doorbell(self) -> None:
        self._ep.unpark()  # the engine consumed the eventfd's count
        self._drain()
        if self._room is not None:
            room, self._room = self._room, None
            if not room.done():
                room.set_result(None)

    def _on_peer_exit(self) -> None:
        self._stop_watching()
        # What the peer sent before it exited is still in the ring.
        self._drain()
        if self._ep.attached:
            self._fail(ChannelClosed("the peer process exited"))

    def _drain(self) -> None:
        if self._mailbox.failure is not None:
            return
        try:
            while True:
                message = self._ep.poll(self._wait_rx)
                if message is None:
                    return  # parked
                self._mailbox.deliver(message)
        except (ChannelClosed, ProtocolError, OSError) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """From now on, once the inbox is empty, receive raises `exc` (the first failure wins);
        senders waiting for room get it at once."""
        self._mailbox.fail(exc)
        room, self._room = self._room, None
        if room is not None and not room.done():
            room.set_exception(self._mailbox.failure or exc)

    def _stop_watching(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
