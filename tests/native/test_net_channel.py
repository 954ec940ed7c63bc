"""The net channel's two ends in this process, over real loopback TCP: the worker's NetChannel
and the runtime's HTTP server (BlockingHttpChannel), and that server against raw bad requests.

The contract tests of test_channels.py carry arbitrary msgpack maps, which HTTP does not (only
invocations go out, only results come back); these are their counterparts for the net channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from faasd_py.datapath.channel_net import NetChannel
from faasd_py.protocol import ChannelClosed, Invocation, ProtocolError, Request, Result
from faasd_py.runtime._http import BlockingHttpChannel

MiB = 1024 * 1024
MAX_BODY = 8 * MiB


@dataclass
class NetPair:
    worker: NetChannel
    instance: BlockingHttpChannel
    port: int
    threads: list[threading.Thread]

    def serve(self, reply: Callable[[Invocation], Result], *, ready: bool = True) -> None:
        """Report ready (or a load failure), then answer each invocation with reply(...)."""

        def loop() -> None:
            if not ready:
                self.instance.send({"op": "load_failed", "error": "ImportError: no handler"})
                self.instance.shutdown()
                return
            self.instance.send({"op": "ready", "pid": 42, "load_seconds": 0.5})
            with contextlib.suppress(ChannelClosed):
                while True:
                    invocation = Invocation.from_wire(self.instance.receive())
                    self.instance.send(reply(invocation).to_wire())

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)


def echo(invocation: Invocation) -> Result:
    return Result(
        invocation.id, 200, [("X-Len", str(len(invocation.body)))], invocation.body, None, 0.001
    )


@pytest.fixture
async def net_pair() -> AsyncIterator[NetPair]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    instance = BlockingHttpChannel(listener, MAX_BODY, None)
    worker = NetChannel("127.0.0.1", port, MAX_BODY + MiB)
    pair = NetPair(worker, instance, port, [])
    yield pair
    worker.close()
    for thread in pair.threads:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive(), "the instance's end did not see the worker close"
    instance.close()


def request(ident: int, body: bytes = b"", **fields: Any) -> dict[str, Any]:
    call = Request(
        call_id=fields.get("call_id", f"call-{ident}"),
        method=fields.get("method", "POST"),
        path=fields.get("path", "/"),
        query=fields.get("query", ""),
        headers=fields.get("headers", []),
        body=body,
    )
    return Invocation.of(ident, call, fields.get("timeout", 5.0)).to_wire()


async def test_ready_comes_first_then_results_of_any_size(net_pair: NetPair) -> None:
    net_pair.serve(echo)
    ready = await asyncio.wait_for(net_pair.worker.receive(), 10)
    assert ready == {"op": "ready", "pid": 42, "load_seconds": 0.5}
    sizes = [0, 1, 1000, 64 * 1024, MiB, 6 * MiB]
    for ident, size in enumerate(sizes, 1):
        body = random.Random(ident).randbytes(size)
        await net_pair.worker.send(request(ident, body))
        reply = Result.from_wire(await asyncio.wait_for(net_pair.worker.receive(), 30))
        assert (reply.id, reply.status, reply.body) == (ident, 200, body)
        assert reply.headers == [("X-Len", str(size))]  # the handler's headers, no framing


async def test_the_request_and_the_answer_keep_every_field(net_pair: NetPair) -> None:
    seen: list[Invocation] = []

    def answer(invocation: Invocation) -> Result:
        seen.append(invocation)
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("X-Ünïcode", "ça va")]
        return Result(invocation.id, 418, headers, b"teapot", None, 0.25)

    net_pair.serve(answer)
    await net_pair.worker.receive()
    headers = [("X-Custom", "a b"), ("Accept", "text/plain"), ("Connection", "keep-alive")]
    await net_pair.worker.send(
        request(
            7,
            b"\x00\xff",
            method="PUT",
            path="/a/b%20c",
            query="x=1&y=",
            headers=headers,
            call_id="c-9",
            timeout=2.5,
        )
    )
    reply = Result.from_wire(await net_pair.worker.receive())
    assert reply == Result(
        7,
        418,
        [("Content-Type", "text/plain; charset=utf-8"), ("X-Ünïcode", "ça va")],
        b"teapot",
        None,
        0.25,
    )
    (got,) = seen
    assert (got.method, got.path, got.query, got.call_id, got.timeout) == (
        "PUT",
        "/a/b%20c",
        "x=1&y=",
        "c-9",
        2.5,
    )
    assert got.body == b"\x00\xff"
    # The caller's headers as they were, hop-by-hop ones aside, and the call's id as faasd's
    # gateway adds it; Host names the instance.
    assert [(k, v) for k, v in got.headers if k != "Host"] == [*headers[:2], ("X-Call-Id", "c-9")]


async def test_a_failed_handler_comes_back_as_an_error(net_pair: NetPair) -> None:
    net_pair.serve(lambda inv: Result(inv.id, 500, [], b"", "ValueError: bad\nline two", 0.1))
    await net_pair.worker.receive()
    await net_pair.worker.send(request(1))
    reply = Result.from_wire(await net_pair.worker.receive())
    assert (reply.status, reply.error, reply.body) == (500, "ValueError: bad\nline two", b"")


async def test_a_header_that_would_split_the_response_is_the_handlers_failure(
    net_pair: NetPair,
) -> None:
    net_pair.serve(lambda inv: Result(inv.id, 200, [("X-Bad", "a\r\nSet-Cookie: x")], b"", None, 0))
    await net_pair.worker.receive()
    await net_pair.worker.send(request(1))
    reply = Result.from_wire(await net_pair.worker.receive())
    assert reply.status == 500 and reply.error is not None and "line break" in reply.error


async def test_many_at_once_are_matched_by_id(net_pair: NetPair) -> None:
    net_pair.serve(echo)
    await net_pair.worker.receive()
    bodies = {
        n: random.Random(n).randbytes(random.Random(n).choice([0, 10, 5000, 70_000]))
        for n in range(1, 101)
    }
    for n, body in bodies.items():
        await net_pair.worker.send(request(n, body))
    replies = [await asyncio.wait_for(net_pair.worker.receive(), 30) for _ in bodies]
    assert {r["id"]: r["body"] for r in replies} == bodies


async def test_a_load_failure_reaches_the_worker_then_the_channel_ends(
    net_pair: NetPair,
) -> None:
    net_pair.serve(echo, ready=False)
    message = await asyncio.wait_for(net_pair.worker.receive(), 10)
    assert message == {"op": "load_failed", "error": "ImportError: no handler"}
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(net_pair.worker.receive(), 10)
    with pytest.raises(ChannelClosed):
        await net_pair.worker.send(request(1))


@contextlib.asynccontextmanager
async def readiness_server(body: bytes) -> AsyncIterator[int]:
    """A runtime that answers the readiness request with 200 and `body`, then holds on."""

    handlers: list[asyncio.Task[None]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await reader.read()  # until the worker's end closes
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
    await asyncio.wait_for(asyncio.gather(*handlers), 10)


@pytest.mark.parametrize(
    ("body", "says"),
    [(b"not json", "is not JSON"), (b"[1, 2]", "JSON list, not an object")],
    ids=["garbled", "list"],
)
async def test_a_readiness_answer_that_is_not_a_json_object_is_a_protocol_error(
    body: bytes, says: str
) -> None:
    async with readiness_server(body) as port:
        channel = NetChannel("127.0.0.1", port, MAX_BODY)
        try:
            with pytest.raises(ProtocolError, match=says):
                await asyncio.wait_for(channel.receive(), 10)
        finally:
            channel.close()


async def test_a_readiness_answer_cannot_pass_for_another_message() -> None:
    async with readiness_server(b'{"op": "result", "id": 1, "pid": 7}') as port:
        channel = NetChannel("127.0.0.1", port, MAX_BODY)
        try:
            message = await asyncio.wait_for(channel.receive(), 10)
        finally:
            channel.close()
    assert message["op"] == "ready"


async def test_worker_close_ends_the_instance_side(net_pair: NetPair) -> None:
    net_pair.serve(echo)
    await net_pair.worker.receive()
    net_pair.worker.close()
    await asyncio.to_thread(net_pair.threads[0].join, 10)
    assert not net_pair.threads[0].is_alive()
    with pytest.raises(ChannelClosed):
        await net_pair.worker.send(request(1))


# --- the runtime's server against bad requests -------------------------------------------------


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("head", "status", "says"),
    [
        (
            f"POST / HTTP/1.1\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n",
            413,
            f"exceeds the limit of {MAX_BODY} bytes",
        ),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "send Content-Length"),
        ("POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n", 400, "is not a number"),
        ("NONSENSE\r\n\r\n", 400, "malformed start line"),
        ("GET / HTTP/2.0\r\n\r\n", 505, "not supported"),
        ("GET / HTTP/1.1\r\n" + "X-Pad: " + "p" * 70_000 + "\r\n\r\n", 431, "head exceeds"),
    ],
    ids=["oversized", "chunked", "bad-length", "garbage", "version", "huge-head"],
)
async def test_bad_requests_get_a_clear_answer(
    net_pair: NetPair, head: str, status: int, says: str
) -> None:
    net_pair.serve(echo)
    await net_pair.worker.receive()
    answer = await asyncio.to_thread(exchange, net_pair.port, head.encode())
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert says.encode() in answer and b"Connection: close" in answer
    # The function goes on serving the worker.
    await net_pair.worker.send(request(1, b"still here"))
    assert (await net_pair.worker.receive())["body"] == b"still here"


async def test_health_answers_as_a_watchdog_does(net_pair: NetPair) -> None:
    loading = await asyncio.to_thread(
        exchange, net_pair.port, b"GET /_/health HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert loading.startswith(b"HTTP/1.1 503 ")
    net_pair.serve(echo)
    await net_pair.worker.receive()
    ready = await asyncio.to_thread(
        exchange, net_pair.port, b"GET /_/health HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert ready.startswith(b"HTTP/1.1 200 ") and b'"pid": 42' in ready
