"""Both channels, end to end, as h11's ConnectionPair wires two endpoints: the worker's end (async,
in the test's loop) and the instance's end (blocking, driven from a thread) of one channel.

Every channel test runs against each kind (ids `shm` and `socket`, as aiohttp runs its parser
tests against `c-parser` and `py-parser`). shm needs the native shim: without it those tests
skip and say why, except under CI=true, where they run and fail, so that CI proves the real path.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from faasd_py import native
from faasd_py.datapath.channel import Channel, SocketChannel
from faasd_py.datapath.shm import ShmGeometry
from faasd_py.protocol import ChannelClosed
from faasd_py.runtime import BlockingChannel, BlockingShmChannel, BlockingSocketChannel
from tests._ci import in_ci

IN_CI = in_ci()

needs_native = pytest.mark.skipif(
    not native.HAS_NATIVE and not IN_CI,
    reason=f"the native shim is {native.REASON}: the shm channel cannot run here",
)

# Small rings, so that tests reach the arena, its wrap, fragments and a full ring with little data.
SMALL = ShmGeometry(slot_count=8, slot_size=512, arena_size=64 * 1024)
MAX_FRAME = 8 * 1024 * 1024

KINDS = [pytest.param("shm", id="shm", marks=needs_native), pytest.param("socket", id="socket")]


@dataclass
class ChannelPair:
    """The two ends of one channel in this process."""

    kind: str
    worker: Channel
    instance: BlockingChannel
    _threads: list[threading.Thread] = field(default_factory=list)

    def serve(self, reply: Callable[[dict[str, Any]], dict[str, Any] | None]) -> threading.Thread:
        """Run the instance's end in a thread: answer each message with reply(message) (None:
        no answer) until the channel closes."""

        def loop() -> None:
            try:
                while True:
                    answer = reply(self.instance.receive())
                    if answer is not None:
                        self.instance.send(answer)
            except ChannelClosed:
                pass

        thread = threading.Thread(target=loop, name=f"{self.kind}-instance", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    async def close(self) -> None:
        """Close the worker's end; the instance's end sees the end of the channel."""
        self.worker.close()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 10)
            assert not thread.is_alive(), "the instance's end did not see the channel close"
        self.instance.close()


async def open_pair(
    kind: str, *, geometry: ShmGeometry = SMALL, max_frame: int = MAX_FRAME, spin: int = 0
) -> ChannelPair:
    """A channel of `kind` with both ends here; call from a running loop."""
    if kind == "socket":
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        worker = await SocketChannel.open(parent, max_frame)
        return ChannelPair(kind, worker, BlockingSocketChannel(child, max_frame))
    from faasd_py.datapath.channel_shm import ShmChannel, ShmRegion

    region = ShmRegion.create(geometry)
    # The instance's end writes to the worker's eventfd through a copy of its own, as a child
    # process would: the worker closes its copy when the channel closes.
    instance = BlockingShmChannel(region.memfd, os.dup(region.eventfd), max_frame, spin=spin)
    shm_worker = ShmChannel.open(region, max_frame, spin=spin)
    region.close_memfd()
    return ChannelPair(kind, shm_worker, instance)


def echo(message: dict[str, Any]) -> dict[str, Any]:
    """The instance's answer in most tests: a result with the message's id and body."""
    return {"op": "result", "id": message["id"], "body": message.get("body", b"")}


@pytest.fixture
async def channel_pair() -> AsyncIterator[Callable[..., Any]]:
    """A factory of channel pairs (`await channel_pair(kind, ...)`), closed at teardown."""
    pairs: list[ChannelPair] = []

    async def make(kind: str, **options: Any) -> ChannelPair:
        pair = await open_pair(kind, **options)
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        await pair.close()
