"""bench/_async_load.py's Receiver, the async benchmark's callback server, over real sockets:
keep-alive and pipelined callbacks, large bodies, bytes that are not HTTP, and what each
callback does (the tally, the waiters, the drain)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd_py.http1 import Pool, Response, ResponseParser, build_request
from faasd_py.runtime._http import MAX_HEAD

# The benchmark's modules import one another by bare name, as the scripts run from bench/.
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

from _async_load import Receiver
from _async_tally import Tally

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    receiver.tally = Tally(0.0, float("inf"), "202", callbacks=True)
    try:
        yield receiver
    finally:
        await receiver.close()


def tally_of(receiver: Receiver) -> Tally:
    assert receiver.tally is not None
    return receiver.tally


def callback(
    receiver: Receiver,
    call_id: str,
    status: str = "200",
    body: bytes = b"Hello, world\n",
    target: str = "/callback",
) -> bytes:
    """A callback's POST as the queue's callback sender makes it."""
    headers = [
        ("Content-Type", "text/plain"),
        ("X-Call-Id", call_id),
        ("X-Function-Name", "hello.openfaas-fn"),
        ("X-Function-Status", status),
        ("X-Duration-Seconds", "0.000500"),
    ]
    authority = receiver.url.split("/")[2]
    return build_request(
        "POST", target, authority, headers, body, user_agent="faasd-py-queue-worker"
    )


@contextlib.asynccontextmanager
async def connection(receiver: Receiver) -> AsyncIterator[Stream]:
    host, port = receiver.url.split("/")[2].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class Answers:
    """The receiver's answers on one connection, parsed by the benchmark's own client parser."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.parser = ResponseParser()

    async def next(self) -> Response:
        # The parser keeps the bytes read past the answer before: they are fed first.
        self.parser.start("POST")
        data = b""
        while (response := self.parser.feed(data)) is None:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "the receiver closed the connection before answering"
        return response

    async def closed(self) -> bool:
        """Whether the receiver closed the connection (nothing more comes)."""
        return await asyncio.wait_for(self.reader.read(), 5) == b""


async def test_callbacks_one_after_another_share_one_keep_alive_connection(
    receiver: Receiver,
) -> None:
    tally = tally_of(receiver)
    for n in range(5):
        tally.expect(f"c.{n}", 0.0)
    async with connection(receiver) as (reader, writer):
        answers = Answers(reader)
        for n in range(5):
            writer.write(callback(receiver, f"c.{n}"))
            response = await answers.next()
            assert (response.status, response.body_size, response.keep_alive) == (200, 0, True)
    assert tally.received.keys() == {f"c.{n}" for n in range(5)}
    assert tally.callback_statuses == {"200": 5}


async def test_pipelined_callbacks_are_each_handled_and_answered_in_order(
    receiver: Receiver,
) -> None:
    tally = tally_of(receiver)
    ids = [f"p.{n}" for n in range(20)]
    for call_id in ids:
        tally.expect(call_id, 0.0)
    # Twenty requests in one write, then twenty more split at odd places (7 bytes a write),
    # so that heads and bodies straddle reads.
    first = b"".join(callback(receiver, call_id) for call_id in ids[:10])
    second = b"".join(callback(receiver, call_id) for call_id in ids[10:])
    async with connection(receiver) as (reader, writer):
        writer.write(first)
        for at in range(0, len(second), 7):
            writer.write(second[at : at + 7])
            await writer.drain()
        data = b""
        expected = 20 * len(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        while len(data) < expected:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk
            data += chunk
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 20
    assert tally.received.keys() == set(ids)
    # In the order they were sent: the arrival stamps do not go back.
    arrivals = [tally.received[call_id] for call_id in ids]
    assert arrivals == sorted(arrivals)


async def test_a_body_of_several_megabytes_is_read_through_to_the_next_request(
    receiver: Receiver,
) -> None:
    tally = tally_of(receiver)
    tally.expect("big", 0.0)
    tally.expect("after", 0.0)
    big = bytes(range(256)) * (8 * 4096)  # 8 MiB, with CRLFs and blank lines inside
    async with connection(receiver) as (reader, writer):
        answers = Answers(reader)
        writer.write(callback(receiver, "big", body=big) + callback(receiver, "after"))
        await writer.drain()
        assert (await answers.next()).status == 200
        assert (await answers.next()).status == 200
    assert tally.received.keys() == {"big", "after"}
    assert tally.unknown == 0


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x00\x01\x02garbage\r\n\r\n", 400),
        # A chunked body: refused as the net channel refuses it (the sender never chunks).
        (
            b"POST /callback HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\n\r\n",
            411,
        ),
        (b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400),
        (b"POST /callback HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST /callback HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        # A head that never ends: refused on its byte past MAX_HEAD, the last sent (unread bytes
        # at the close would make it a reset, not an answer).
        (b"POST " + b"x" * (MAX_HEAD - 4), 431),
    ],
    ids=["garbage", "chunked", "bad-length", "bad-header", "bad-version", "endless-head"],
)
async def test_a_request_the_parser_refuses_is_answered_with_its_status_then_closed(
    receiver: Receiver, request_bytes: bytes, status: int
) -> None:
    tally = tally_of(receiver)
    tally.expect("ok", 0.0)
    async with connection(receiver) as (reader, writer):
        answers = Answers(reader)
        # A good callback first, then the bad bytes in the same write: the callback is
        # answered, the rest refused and the connection closed.
        writer.write(callback(receiver, "ok") + request_bytes)
        assert (await answers.next()).status == 200
        refused = await answers.next()
        assert (refused.status, refused.keep_alive) == (status, False)
        assert await answers.closed()
    assert tally.received.keys() == {"ok"}
    assert tally.unknown == 0


async def test_connection_close_is_honoured_and_other_paths_are_not_callbacks(
    receiver: Receiver,
) -> None:
    tally = tally_of(receiver)
    tally.expect("last", 0.0)
    async with connection(receiver) as (reader, writer):
        answers = Answers(reader)
        writer.write(callback(receiver, "stray", target="/elsewhere"))
        assert (await answers.next()).status == 404
        # build_request writes no Connection header of the caller's: add it to the head.
        last_one = callback(receiver, "last").replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
        writer.write(last_one)
        last = await answers.next()
        assert (last.status, last.keep_alive) == (200, False)
        assert await answers.closed()
    assert tally.received.keys() == {"last"}
    assert tally.unknown == 0  # the 404 was not counted as a callback


async def test_callbacks_resolve_their_waiters_and_fill_the_tally(receiver: Receiver) -> None:
    tally = tally_of(receiver)
    for call_id in ("a", "b", "c", "never"):
        tally.expect(call_id, 0.0)
    a, b, forgotten = receiver.waiter("a"), receiver.waiter("b"), receiver.waiter("c")
    receiver.forget("c")
    before = time.monotonic()
    pool = Pool(receiver.url, 5.0)
    try:
        for call_id, status in (("a", "200"), ("b", "500"), ("a", "200"), ("zzz", "200")):
            response = await pool.request("POST", callback(receiver, call_id, status))
            assert response.status == 200
        await asyncio.wait_for(asyncio.gather(a, b), 5)
        response = await pool.request("POST", callback(receiver, "c"))
        assert response.status == 200
    finally:
        pool.close()
    after = time.monotonic()
    assert not forgotten.done()  # forgotten: its callback resolves nothing
    assert tally.callback_statuses == {"200": 2, "500": 1}
    assert (tally.duplicates, tally.unknown, tally.outstanding) == (1, 1, 1)
    # Stamped on the clock the benchmark stamps its requests with.
    assert all(before <= tally.received[k] <= after for k in ("a", "b", "c"))


async def test_drain_ends_when_the_last_expected_callback_comes(receiver: Receiver) -> None:
    tally = tally_of(receiver)
    tally.expect("late", 0.0)

    async def send_later() -> None:
        await asyncio.sleep(0.2)
        pool = Pool(receiver.url, 5.0)
        try:
            await pool.request("POST", callback(receiver, "late"))
        finally:
            pool.close()

    sender = asyncio.create_task(send_later())
    waited = await receiver.drain(stall=10.0)
    await sender
    assert tally.outstanding == 0
    assert waited < 10.0  # it ended on the callback, not on the stall


async def test_close_closes_kept_alive_connections(receiver: Receiver) -> None:
    async with connection(receiver) as (reader, writer):
        answers = Answers(reader)
        writer.write(callback(receiver, "x"))
        assert (await answers.next()).status == 200
        await receiver.close()
        assert await answers.closed()
