"""The `Channel` contract, held by every channel kind (each test runs for shm and socket, and
shm under each doorbell engine: ids shm-epoll, shm-io_uring)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faasd_py.datapath.shm import DEFAULT_GEOMETRY, ShmGeometry
from faasd_py.protocol import ChannelClosed, ProtocolError
from tests.native._engines import use_engine_of_kind, with_engines
from tests.native.conftest import KINDS, MAX_FRAME, SMALL, ChannelPair, echo, open_pair

KINDS = with_engines(KINDS)  # shm once per doorbell engine
pytestmark = pytest.mark.usefixtures(use_engine_of_kind.__name__)

MiB = 1024 * 1024
INLINE = SMALL.slot_size - 64  # what a slot of the small geometry carries inline

# Body sizes: all small ones, those around where a record leaves its slot, goes to the arena,
# needs more than half of it, or more than all of it (fragments), and up to several MiB.
SIZES = st.one_of(
    st.integers(0, 600),
    st.integers(INLINE - 150, INLINE + 50),
    st.sampled_from([8191, 8192, 8193, 32 * 1024, 64 * 1024 - 100, 64 * 1024, 64 * 1024 + 1]),
    st.integers(0, 300 * 1024),
    st.integers(0, 6 * MiB),
)


def body_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def invoke(i: int, body: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {"op": "invoke", "id": i, "headers": [["k", "v"]], "body": body, **extra}


@pytest.mark.parametrize("kind", KINDS)
def test_round_trips_of_any_size(kind: str) -> None:
    """Whatever the size, a body comes back byte for byte, and messages stay in order."""
    with asyncio.Runner() as runner:
        pair = runner.run(open_pair(kind))
        pair.serve(echo)
        ids = iter(range(1, 1_000_000))

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(sizes=st.lists(SIZES, min_size=1, max_size=3), seed=st.integers(0, 2**16))
        def check(sizes: list[int], seed: int) -> None:
            bodies = [body_of(size, seed + n) for n, size in enumerate(sizes)]
            sent = [next(ids) for _ in bodies]

            async def send_all() -> None:
                for i, body in zip(sent, bodies, strict=True):
                    await pair.worker.send(invoke(i, body))

            async def receive_all() -> list[dict[str, Any]]:
                # Read while sending, as the worker does: a socket's buffers would fill up.
                return [await pair.worker.receive() for _ in bodies]

            async def exchange() -> list[dict[str, Any]]:
                sending = asyncio.create_task(send_all())
                replies = await receive_all()
                await sending
                return replies

            replies = runner.run(exchange())
            assert [r["id"] for r in replies] == sent
            for reply, body in zip(replies, bodies, strict=True):
                assert len(reply["body"]) == len(body) and reply["body"] == body

        try:
            check()
        finally:
            runner.run(pair.close())


@pytest.mark.parametrize("kind", KINDS)
async def test_every_field_type_survives(kind: str, channel_pair: Callable[..., Any]) -> None:
    pair: ChannelPair = await channel_pair(kind)
    pair.serve(lambda m: {**m, "op": "result"})
    message = invoke(
        7,
        b"\x00\xff" * 5000,  # above the size where a body travels outside the map
        call_id="c-1",
        query="a=1&b=",
        timeout=2.5,
        error=None,
        nested={"list": [1, "two", 3.0, None, True]},
        text="ünïcode",
    )
    await pair.worker.send(message)
    assert await pair.worker.receive() == {**message, "op": "result"}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_full_channel_holds_senders_until_the_peer_reads(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    """More than the ring, the arena and a socket buffer hold: senders wait, nothing is lost
    or reordered, and all of it arrives once the instance reads."""
    pair: ChannelPair = await channel_pair(kind)
    gate = threading.Event()

    def reply_when_open(message: dict[str, Any]) -> dict[str, Any]:
        gate.wait(10)
        return echo(message)

    pair.serve(reply_when_open)
    bodies = [body_of(40 * 1024, n) for n in range(100)]  # 4 MB
    sends = asyncio.gather(*(pair.worker.send(invoke(n, b)) for n, b in enumerate(bodies)))
    await asyncio.sleep(0.3)
    assert not sends.done(), "4 MB should not fit before the instance reads"
    gate.set()

    async def collect() -> list[dict[str, Any]]:
        return [await pair.worker.receive() for _ in bodies]

    _, replies = await asyncio.wait_for(asyncio.gather(sends, collect()), 30)
    assert [r["id"] for r in replies] == list(range(len(bodies)))
    assert [r["body"] for r in replies] == bodies


@pytest.mark.parametrize("kind", KINDS)
async def test_both_ways_at_once_under_load(kind: str, channel_pair: Callable[..., Any]) -> None:
    """Many senders, one receiving task, replies matched by id (as the worker does)."""
    pair: ChannelPair = await channel_pair(kind)
    pair.serve(echo)
    expected = {n: body_of(random.Random(n).choice([10, 700, 5000, 70_000]), n) for n in range(300)}
    pending: dict[int, asyncio.Future[bytes]] = {}
    loop = asyncio.get_running_loop()

    async def read() -> None:
        while pending or not done.is_set():
            reply = await pair.worker.receive()
            pending.pop(reply["id"]).set_result(reply["body"])

    async def call(n: int) -> bytes:
        future: asyncio.Future[bytes] = loop.create_future()
        pending[n] = future
        await pair.worker.send(invoke(n, expected[n]))
        return await future

    done = asyncio.Event()
    reader = asyncio.create_task(read())
    results = await asyncio.wait_for(asyncio.gather(*(call(n) for n in expected)), 60)
    done.set()
    assert results == list(expected.values())
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


@pytest.mark.parametrize("kind", KINDS)
async def test_worker_close_ends_the_instance_side_after_what_was_sent(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    pair: ChannelPair = await channel_pair(kind)
    for n in range(3):
        await pair.worker.send(invoke(n))
    pair.worker.close()

    def drain() -> list[int]:
        seen = []
        try:
            while True:
                seen.append(pair.instance.receive()["id"])
        except ChannelClosed:
            return seen

    assert await asyncio.wait_for(asyncio.to_thread(drain), 10) == [0, 1, 2]
    with pytest.raises(ChannelClosed):
        await pair.worker.send(invoke(9))


@pytest.mark.parametrize("kind", KINDS)
async def test_instance_shutdown_ends_the_worker_side_after_what_was_sent(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    pair: ChannelPair = await channel_pair(kind)
    for n in range(3):
        pair.instance.send({"op": "result", "id": n})
    pair.instance.shutdown()
    assert [(await pair.worker.receive())["id"] for _ in range(3)] == [0, 1, 2]
    for _ in range(2):  # and keeps saying so
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(pair.worker.receive(), 10)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_waiting_receiver_is_woken_by_the_end(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    pair: ChannelPair = await channel_pair(kind)
    receiving = asyncio.create_task(pair.worker.receive())
    await asyncio.sleep(0.05)
    pair.instance.shutdown()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(receiving, 10)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_message_above_the_frame_limit_never_gets_through(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    """One end or the other refuses it with ProtocolError (the socket's receiver, the shm
    channel's sender, which knows the limit too)."""
    pair: ChannelPair = await channel_pair(kind, max_frame=64 * 1024)
    errors: list[BaseException] = []

    def receive_one() -> None:
        try:
            pair.instance.receive()
        except (ProtocolError, ChannelClosed) as exc:
            errors.append(exc)

    reader = threading.Thread(target=receive_one, daemon=True)
    reader.start()
    try:
        await pair.worker.send(invoke(1, b"x" * (64 * 1024)))
    except ProtocolError as exc:
        errors.append(exc)
        pair.worker.close()
    await asyncio.to_thread(reader.join, 10)
    assert any(isinstance(e, ProtocolError) for e in errors), errors


@pytest.mark.parametrize("kind", KINDS)
async def test_default_geometry_carries_a_body_of_several_mib(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    """With the geometry the worker uses: 1 MiB in the arena, 6 MiB (above the arena) in
    fragments."""
    pair: ChannelPair = await channel_pair(kind, geometry=DEFAULT_GEOMETRY, max_frame=16 * MiB)
    pair.serve(echo)
    for n, size in enumerate([MiB, 6 * MiB, 100]):
        body = body_of(size, n)
        await pair.worker.send(invoke(n, body))
        reply = await asyncio.wait_for(pair.worker.receive(), 30)
        assert reply["body"] == body


@pytest.mark.parametrize("kind", KINDS)
async def test_spinning_ends_answer_as_sleeping_ones_do(
    kind: str, channel_pair: Callable[..., Any]
) -> None:
    pair: ChannelPair = await channel_pair(kind, spin=5000, geometry=ShmGeometry())
    pair.serve(echo)
    for n in range(200):
        await pair.worker.send(invoke(n, b"x" * (n % 3000)))
        assert (await pair.worker.receive())["id"] == n


def test_max_frame_of_the_test_pairs_exceeds_the_small_arena() -> None:
    # The hypothesis test above relies on this to reach the fragment path.
    assert SMALL.arena_size * 4 < MAX_FRAME


@pytest.mark.parametrize("kind", [k for k in KINDS if str(k.id).startswith("shm")])
async def test_a_message_sent_before_the_worker_end_opens_is_received(kind: str) -> None:
    """The instance may answer (say, "ready") before the worker's end has parked: it rings no
    doorbell then, so the worker's end must look at the ring when it opens."""
    from faasd_py.datapath.channel_shm import ShmChannel, ShmRegion
    from faasd_py.runtime import BlockingShmChannel

    region = ShmRegion.create(DEFAULT_GEOMETRY)
    instance = BlockingShmChannel(region.memfd, os.dup(region.eventfd), MAX_FRAME)
    instance.send({"op": "ready", "pid": 1})
    worker = ShmChannel.open(region, MAX_FRAME)
    region.close_memfd()
    try:
        async with asyncio.timeout(5):
            assert (await worker.receive())["op"] == "ready"
    finally:
        worker.close()
        instance.shutdown()
