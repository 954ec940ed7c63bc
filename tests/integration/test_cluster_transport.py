"""The cluster transport over real sockets on 127.0.0.1: calls multiplexed on one connection,
errors, authentication, and what callers see when a worker dies (in process and a real process
killed with SIGKILL). The tests run on asyncio's loop; one runs the main paths on uvloop (the
gateway's)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from faasd_py.cluster._transport import (
    ClientHandshake,
    PeerUnreachable,
    RemoteError,
    RpcClient,
    RpcServer,
    request_frame,
)
from faasd_py.errors import BadRequest, FaasdError, InvocationTimeout, NotFound, PayloadTooLarge
from faasd_py.protocol import HEADER, FrameDecoder, encode
from tests.integration._redis import free_port

LIMIT = 1 << 20
# Only to catch hangs; every wait below ends on an event long before it.
HANG = 30.0
ROOT = Path(__file__).resolve().parents[2]


def mac(secret: bytes) -> Any:
    return lambda data: hmac.new(secret, data, "sha256").digest()


KEY = mac(b"k" * 32)


@dataclass
class Worker:
    """A handler with ops for the tests; counts what runs and what was cancelled."""

    running: int = 0
    most: int = 0
    cancelled: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_for: int = 0

    async def __call__(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "echo":
            return args
        if op == "fail":
            raise NotFound(args["message"])
        if op == "crash":
            raise RuntimeError("boom in the handler")
        if op == "not_a_map":
            return ["a", "list"]  # type: ignore[return-value]
        if op == "big":
            return {"body": b"x" * args["size"]}
        if op == "slow":
            return await self.slow(args["seconds"])
        raise BadRequest(f"no op {op!r}")

    async def slow(self, seconds: float) -> dict[str, Any]:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.waiting_for:
            self.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return {"slept": seconds}

    async def until_running(self, count: int) -> None:
        self.waiting_for = count
        if self.running < count:
            self.started.clear()
            async with asyncio.timeout(HANG):
                await self.started.wait()


@dataclass
class Pair:
    worker: Worker
    server: RpcServer
    client: RpcClient

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    worker = Worker()
    server = RpcServer(worker, KEY, max_frame=LIMIT, name="w1")
    await server.start("127.0.0.1", 0)
    client = RpcClient("w1", f"127.0.0.1:{server.port}", KEY, max_frame=LIMIT)
    pair = Pair(worker, server, client)
    yield pair
    await pair.client.close()
    await pair.server.close()  # a test may have put another in its place


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next frame from a raw connection."""
    header = await reader.readexactly(HEADER.size)
    (length,) = HEADER.unpack(header)
    (message,) = FrameDecoder(LIMIT, require_op=False).feed(
        header + await reader.readexactly(length)
    )
    return message


async def assert_no_tasks_left() -> None:
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_calls_carry_bytes_and_nested_maps(pair: Pair) -> None:
    args = {"body": bytes(range(256)), "nested": {"a": [1, {"b": b"\x00"}], "s": "é"}}
    assert await pair.client.call("echo", args) == args
    assert await pair.client.call("echo", {}) == {}


async def test_a_thousand_concurrent_calls_share_one_connection(pair: Pair) -> None:
    args = [{"n": n, "pad": bytes([n % 256]) * (n % 97)} for n in range(1000)]
    async with asyncio.timeout(HANG):
        replies = await asyncio.gather(*(pair.client.call("echo", a) for a in args))
    assert replies == args
    assert pair.client.statistics().connects == 1
    assert pair.server.statistics().connections == 1
    assert pair.client.in_flight == 0


async def test_a_handler_s_error_keeps_its_status_and_message(pair: Pair) -> None:
    with pytest.raises(RemoteError) as caught:
        await pair.client.call("fail", {"message": "function f not found in namespace x"})
    assert caught.value.status == 404
    assert caught.value.message == "function f not found in namespace x"
    with pytest.raises(RemoteError) as unknown:
        await pair.client.call("nothing", {})
    assert unknown.value.status == 400


async def test_a_handler_s_bug_is_a_500_and_the_worker_keeps_serving(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    for op in ("crash", "not_a_map"):
        with pytest.raises(RemoteError) as caught:
            await pair.client.call(op, {})
        assert caught.value.status == 500
        assert caught.value.message == "worker w1: internal error (see its log)"
    assert "boom in the handler" in caplog.text  # with its traceback, on the worker's side
    assert "Traceback" in caplog.text
    assert await pair.client.call("echo", {"still": True}) == {"still": True}
    assert pair.client.statistics().connects == 1


async def test_a_client_with_another_key_is_refused(pair: Pair) -> None:
    stranger = RpcClient("w1", pair.address, mac(b"x" * 32), max_frame=LIMIT)
    try:
        with pytest.raises(PeerUnreachable) as caught:
            await stranger.call("echo", {})
    finally:
        await stranger.close()
    assert caught.value.status == 502
    assert f"worker w1 at {pair.address}" in caught.value.message
    assert "the cluster key does not match" in caught.value.message
    assert await pair.client.call("echo", {"a": 1}) == {"a": 1}


async def test_a_server_without_the_key_is_refused_by_the_client() -> None:
    """An impostor greets and answers like a worker, but cannot prove the key."""

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode({"hello": "faasd-py rpc v1", "nonce": b"n" * 16}))
        await reader.read(1000)
        writer.write(encode({"proof": b"p" * 32}))
        await reader.read(1000)
        writer.close()

    listener = await asyncio.start_server(impostor, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = RpcClient("w9", f"127.0.0.1:{port}", KEY, max_frame=LIMIT)
    try:
        with pytest.raises(PeerUnreachable, match="the cluster key does not match"):
            await client.call("echo", {})
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()


async def test_a_silent_server_is_unreachable_within_the_connect_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, never speaks

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = RpcClient("w2", f"127.0.0.1:{port}", KEY, max_frame=LIMIT, connect_timeout=0.3)
    try:
        async with asyncio.timeout(HANG):
            with pytest.raises(PeerUnreachable) as caught:
                await client.call("echo", {})
    finally:
        await client.close()
        for writer in held:
            writer.close()
        listener.close()
        await listener.wait_closed()
    assert caught.value.message.startswith(f"worker w2 at 127.0.0.1:{port}: no handshake")


async def test_a_silent_client_is_closed_by_the_server() -> None:
    server = RpcServer(Worker(), KEY, max_frame=LIMIT, handshake_timeout=0.2)
    await server.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        async with asyncio.timeout(HANG):
            assert (await read_frame(reader))["hello"] == "faasd-py rpc v1"
            assert await reader.read() == b""  # closed: no handshake within its deadline
    finally:
        writer.close()
        await server.close()


async def test_a_refused_connection_is_unreachable() -> None:
    port = free_port()
    client = RpcClient("w3", f"127.0.0.1:{port}", KEY, max_frame=LIMIT)
    with pytest.raises(PeerUnreachable, match=rf"^worker w3 at 127.0.0.1:{port}: cannot connect"):
        await client.call("echo", {})
    await client.close()


async def test_a_port_that_cannot_be_listened_on_is_named(pair: Pair) -> None:
    other = RpcServer(Worker(), KEY, max_frame=LIMIT, name="w4")
    with pytest.raises(FaasdError, match=rf"cannot listen on 127.0.0.1:{pair.server.port}"):
        await other.start("127.0.0.1", pair.server.port)


async def test_calls_in_flight_fail_at_once_when_the_server_closes_then_it_reconnects(
    pair: Pair,
) -> None:
    calls = [
        asyncio.ensure_future(pair.client.call("slow", {"seconds": 60}, 60)) for _ in range(50)
    ]
    await pair.worker.until_running(50)
    port = pair.server.port
    await pair.server.close()
    assert pair.worker.cancelled == 50  # the handlers of the broken connection were cancelled
    async with asyncio.timeout(HANG):
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, PeerUnreachable)
        assert outcome.message.startswith(f"worker w1 at 127.0.0.1:{port}: ")
    assert pair.client.in_flight == 0

    pair.server = RpcServer(pair.worker, KEY, max_frame=LIMIT, name="w1")
    await pair.server.start("127.0.0.1", port)
    assert await pair.client.call("echo", {"back": 1}) == {"back": 1}
    assert pair.client.statistics().connects == 2


async def test_dropped_connections_fail_their_calls_and_the_next_call_reconnects(
    pair: Pair,
) -> None:
    call = asyncio.ensure_future(pair.client.call("slow", {"seconds": 60}))
    await pair.worker.until_running(1)
    pair.server.drop_connections()
    async with asyncio.timeout(HANG):
        with pytest.raises(PeerUnreachable, match=r"^worker w1 at "):
            await call
    assert await pair.client.call("echo", {}) == {}


SERVER = textwrap.dedent(
    """
    import asyncio, hmac
    from faasd_py.cluster._transport import RpcServer

    running = 0

    async def handler(op, args):
        global running
        running += 1
        if running == 100:
            print("100 running", flush=True)
        await asyncio.sleep(3600)
        return {}

    async def main():
        key = lambda data: hmac.new(b"k" * 32, data, "sha256").digest()
        server = RpcServer(handler, key, max_frame=1 << 20, name="w1")
        await server.start("127.0.0.1", 0)
        print(server.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.fixture
async def worker_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(HANG):
        port = int(await process.stdout.readline())
    yield process, port
    if process.returncode is None:
        process.kill()
    await process.wait()


async def test_a_worker_killed_with_sigkill_fails_every_waiting_call_at_once(
    worker_process: tuple[asyncio.subprocess.Process, int],
) -> None:
    process, port = worker_process
    address = f"127.0.0.1:{port}"
    client = RpcClient("w1", address, KEY, max_frame=LIMIT)
    calls = [asyncio.ensure_future(client.call("slow", {}, timeout=300)) for _ in range(100)]
    assert process.stdout is not None
    async with asyncio.timeout(HANG):
        assert await process.stdout.readline() == b"100 running\n"

    process.send_signal(signal.SIGKILL)
    async with asyncio.timeout(HANG):  # far below the calls' timeout of 300 s
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, PeerUnreachable), outcome
        assert outcome.message.startswith(f"worker w1 at {address}: ")
        assert (outcome.worker, outcome.status) == ("w1", 502)

    # A worker back on the same port: the next call reconnects.
    await process.wait()
    server = RpcServer(Worker(), KEY, max_frame=LIMIT, name="w1")
    await server.start("127.0.0.1", port)
    try:
        assert await client.call("echo", {"again": b"1"}) == {"again": b"1"}
    finally:
        await client.close()
        await server.close()


async def test_a_request_above_the_frame_limit_is_refused_before_it_is_sent(pair: Pair) -> None:
    small = RpcClient("w1", pair.address, KEY, max_frame=1000)
    try:
        with pytest.raises(PayloadTooLarge, match="above the frame limit of 1000"):
            await small.call("echo", {"body": b"x" * 2000})
        assert await small.call("echo", {"body": b"x" * 10}) == {"body": b"x" * 10}
    finally:
        await small.close()


async def test_a_reply_above_the_client_s_limit_closes_the_connection(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    small = RpcClient("w1", pair.address, KEY, max_frame=1000)
    try:
        other = asyncio.ensure_future(small.call("slow", {"seconds": 60}))
        await pair.worker.until_running(1)
        with pytest.raises(PeerUnreachable, match="protocol error: frame of"):
            await small.call("big", {"size": 5000})
        async with asyncio.timeout(HANG):
            with pytest.raises(PeerUnreachable, match="protocol error"):
                await other  # the other call on that connection fails with it
        assert "protocol error" in caplog.text
        assert await small.call("big", {"size": 10}) == {"body": b"x" * 10}
    finally:
        await small.close()


async def test_a_reply_above_the_server_s_own_limit_is_an_error_reply(pair: Pair) -> None:
    with pytest.raises(RemoteError, match="above the frame limit") as caught:
        await pair.client.call("big", {"size": LIMIT + 1})
    assert caught.value.status == 500
    assert await pair.client.call("echo", {}) == {}
    assert pair.client.statistics().connects == 1


async def test_an_oversized_frame_from_a_client_closes_its_connection(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.server.port)
    try:
        async with asyncio.timeout(HANG):
            handshake = ClientHandshake(KEY)
            writer.write(encode(handshake.answer(await read_frame(reader))))
            handshake.verify(await read_frame(reader))
            writer.write(request_frame(1, "echo", {}))
            assert await read_frame(reader) == {"id": 1, "ok": {}}
            writer.write(HEADER.pack(LIMIT + 1))  # the header alone is enough to refuse it
            assert await reader.read() == b""
    finally:
        writer.close()
    assert f"exceeds the limit of {LIMIT}" in caplog.text


async def test_a_timeout_names_the_op_and_the_worker_and_later_calls_work(pair: Pair) -> None:
    with pytest.raises(InvocationTimeout) as caught:
        await pair.client.call("slow", {"seconds": 0.3}, timeout=0.05)
    assert caught.value.status == 504
    assert caught.value.message == f"worker w1 at {pair.address}: no reply to 'slow' within 0.05s"
    await pair.worker.until_running(0)  # its late reply is dropped...
    await asyncio.sleep(0.5)
    assert await pair.client.call("echo", {"n": 1}, timeout=HANG) == {"n": 1}  # ...not misrouted
    assert pair.client.statistics().connects == 1
    assert pair.client.in_flight == 0


async def test_a_cancelled_call_leaves_nothing_behind(pair: Pair) -> None:
    call = asyncio.ensure_future(pair.client.call("slow", {"seconds": 0.2}))
    await pair.worker.until_running(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert pair.client.in_flight == 0
    await asyncio.sleep(0.4)
    assert await pair.client.call("echo", {"x": 1}) == {"x": 1}


async def test_a_connection_runs_at_most_max_concurrent_requests_and_serves_them_all() -> None:
    worker = Worker()
    server = RpcServer(worker, KEY, max_frame=LIMIT, max_concurrent=3)
    await server.start("127.0.0.1", 0)
    client = RpcClient("w5", f"127.0.0.1:{server.port}", KEY, max_frame=LIMIT)
    try:
        async with asyncio.timeout(HANG):
            replies = await asyncio.gather(
                *(client.call("slow", {"seconds": 0.02}) for _ in range(30))
            )
        assert replies == [{"slept": 0.02}] * 30
        assert worker.most == 3
    finally:
        await client.close()
        await server.close()


async def test_closing_fails_calls_in_flight_and_leaves_no_tasks_behind() -> None:
    worker = Worker()
    server = RpcServer(worker, KEY, max_frame=LIMIT, name="w6")
    await server.start("127.0.0.1", 0)
    client = RpcClient("w6", f"127.0.0.1:{server.port}", KEY, max_frame=LIMIT)
    calls = [asyncio.ensure_future(client.call("slow", {"seconds": 60})) for _ in range(5)]
    await worker.until_running(5)
    await client.close()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(
        isinstance(o, PeerUnreachable) and "client was closed" in o.message for o in outcomes
    )
    with pytest.raises(PeerUnreachable, match="the client is closed"):
        await client.call("echo", {})
    await server.close()
    assert worker.cancelled == 5
    assert server.statistics().connections == 0
    await assert_no_tasks_left()


async def test_a_client_closed_while_it_connects_leaves_no_tasks_behind() -> None:
    held: list[asyncio.StreamWriter] = []
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = RpcClient("w7", f"127.0.0.1:{port}", KEY, max_frame=LIMIT, connect_timeout=60)
    call = asyncio.ensure_future(client.call("echo", {}))
    async with asyncio.timeout(HANG):
        await accepted.wait()
    await client.close()
    with pytest.raises(PeerUnreachable, match=r"^worker w7 at .*: the client was closed"):
        await call
    for writer in held:
        writer.close()
    listener.close()
    await listener.wait_closed()
    await assert_no_tasks_left()


def test_addresses_must_be_host_and_port() -> None:
    for bad in ("localhost", ":80", "host:", "host:http"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            RpcClient("w", bad, KEY, max_frame=LIMIT)


def test_the_main_paths_on_uvloop() -> None:
    async def scenario() -> None:
        worker = Worker()
        server = RpcServer(worker, KEY, max_frame=LIMIT, name="w8")
        await server.start("127.0.0.1", 0)
        port = server.port
        client = RpcClient("w8", f"127.0.0.1:{port}", KEY, max_frame=LIMIT)
        stranger = RpcClient("w8", f"127.0.0.1:{port}", mac(b"x" * 32), max_frame=LIMIT)
        try:
            args = [{"n": n, "b": bytes([n % 256])} for n in range(300)]
            assert await asyncio.gather(*(client.call("echo", a) for a in args)) == args
            with pytest.raises(RemoteError, match="internal error"):
                await client.call("crash", {})
            with pytest.raises(PeerUnreachable, match="the cluster key does not match"):
                await stranger.call("echo", {})
            with pytest.raises(InvocationTimeout):
                await client.call("slow", {"seconds": 0.2}, timeout=0.01)
            calls = [asyncio.ensure_future(client.call("slow", {"seconds": 60})) for _ in range(20)]
            await worker.until_running(20)
            await server.close()
            async with asyncio.timeout(HANG):
                outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(o, PeerUnreachable) for o in outcomes)
            server = RpcServer(worker, KEY, max_frame=LIMIT, name="w8")
            await server.start("127.0.0.1", port)
            assert await client.call("echo", {"back": True}) == {"back": True}
        finally:
            await stranger.close()
            await client.close()
            await server.close()
        await assert_no_tasks_left()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
