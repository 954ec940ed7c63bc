"""The load of the async benchmark, and the receiver of its callbacks, in the benchmark's process.

The client is the load generator's (faasd_py.http1: a lean HTTP/1.1 Protocol, one
request at a time per keep-alive connection), not aiohttp's, whose ~130 us of CPU per request
would make the client the limit on a small machine; the same client drives /function/ and
/async-function/, so that their figures compare. The receiver is as lean, for the same reason:
an asyncio Protocol server on a port of 127.0.0.1 the kernel picks, in the same event loop,
that parses heads with the net channel's parser (faasd_py.runtime._http). Each callback is
stamped when its head arrives, on the clock the requests were stamped with.

Every request carries an X-Call-Id of the benchmark's making (the gateway keeps a caller's id),
so that a callback is matched to the time its request was sent or due without reading the 202.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import cast

from _async_tally import Tally

from faasd_py.http1 import ConnectFailed, Disconnected, Pool, ProtocolError, build_request
from faasd_py.loadgen._engine import USER_AGENT
from faasd_py.pacing import Pacer
from faasd_py.runtime._http import (
    MAX_HEAD,
    HttpError,
    RequestHead,
    encode_response,
    parse_request_head,
)

BODY = b"hi"
TIMEOUT = 30.0  # seconds one request may take, and one call of the async closed loop
# Open loop: requests in flight beyond this are not sent but counted, as the load generator's
# engine does: a client that cannot keep up must show, not queue without bound.
INFLIGHT_CAP = 4096
# Behind schedule, the open loop yields to the loop every this many sends so that answers and
# callbacks are read while it catches up.
CATCH_UP_BATCH = 16

_ERRORS = (ConnectFailed, Disconnected, ProtocolError, TimeoutError, OSError)

CALLBACK_PATH = "/callback"
# Callback bodies are skipped as they come, never held: their size needs no limit.
MAX_BODY = sys.maxsize
# The receiver's answers, made once.
_OK = encode_response(200, [], b"")
_OK_CLOSE = encode_response(200, [], b"", keep_alive=False)
_NOT_FOUND = encode_response(404, [], b"")
_NOT_FOUND_CLOSE = encode_response(404, [], b"", keep_alive=False)


def clock() -> float:
    return time.monotonic()


class Client:
    """POSTs to one gateway; each answer is its status, or the name of the error instead."""

    def __init__(self, base_url: str) -> None:
        self.pool = Pool(base_url, TIMEOUT)

    def request(self, path: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
        return build_request(
            "POST", path, self.pool.authority, headers, BODY, user_agent=USER_AGENT
        )

    async def send(self, data: bytes) -> str:
        try:
            return str((await self.pool.request("POST", data)).status)
        except _ERRORS as exc:
            return type(exc).__name__

    def close(self) -> None:
        self.pool.close()


class Receiver:
    """Where the platform POSTs results: hands each to the current phase's Tally, and wakes
    whoever waits for that call.

    A plain asyncio Protocol server (_CallbackConnection), not aiohttp's: the receiver runs in
    the benchmark's process, which shares the machine's 2 cores with the platform under test,
    so every microsecond it spends on a callback is taken from the throughput being measured.
    Measured on this (shared, busy) machine, the receiver alone in a process on uvloop, its
    user and system CPU over 20,000 POSTs from faasd_py.http1 with the callback sender's
    headers: aiohttp's server took 100-140 us per callback when they came one at a time and
    60-90 us 16 at a time; this one 45-78 us and 23-35 us (of which parse_request_head ~8 us).
    """

    def __init__(self) -> None:
        self.tally: Tally | None = None
        self.url = ""
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[_CallbackConnection] = set()

    async def start(self) -> str:
        loop = asyncio.get_running_loop()
        # Port 0: the kernel picks a free port, and nobody can take it between pick and bind.
        self._server = await loop.create_server(lambda: _CallbackConnection(self), "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Server.close stops accepting but leaves accepted connections open.
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()

    def waiter(self, call_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = future
        return future

    def forget(self, call_id: str) -> None:
        self._waiters.pop(call_id, None)

    def _receive(self, call_id: str, status: str, at: float) -> None:
        """One callback, whole (head and body), whose head arrived at `at`."""
        if self.tally is not None:
            self.tally.receive(call_id, status, at)
        waiter = self._waiters.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._arrived.set()

    async def drain(self, stall: float) -> float:
        """Wait until every expected callback of the current phase came, or none came for
        `stall` seconds; the seconds waited."""
        started = clock()
        tally = self.tally
        while tally is not None and tally.outstanding > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), stall)
            except TimeoutError:
                break
        return clock() - started


class _CallbackConnection(asyncio.Protocol):
    """One connection to the Receiver: HTTP/1.1 requests, kept alive and possibly pipelined,
    each answered in order as soon as its body is complete.

    Heads are parsed by the net channel's parse_request_head (faasd_py.runtime._http); bodies
    are framed by Content-Length and skipped, not kept (the benchmark needs only the headers).
    A request the parser refuses (a malformed head, a chunked body: 411, a head over MAX_HEAD:
    431) is answered with its status and the connection closed, as the net channel does; a
    request that says Connection: close is answered, then the connection closed.
    """

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: RequestHead | None = None  # the request whose body is being read
        self.head_at = 0.0  # when that head arrived
        self.body_left = 0  # bytes of that body still to come
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are transports.
        self.transport = cast(asyncio.Transport, transport)
        self.receiver._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver._connections.discard(self)
        self.closing = True

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buffer = self.buffer
        buffer += data
        answers: list[bytes] = []  # one write for all the requests this data completed
        done = 0  # bytes of the buffer consumed
        try:
            while True:
                if self.head is None:
                    end = buffer.find(b"\r\n\r\n", done, done + MAX_HEAD + 4)
                    if end < 0:
                        if len(buffer) - done > MAX_HEAD:
                            raise HttpError(431, f"the request head exceeds {MAX_HEAD} bytes")
                        break
                    self.head = parse_request_head(bytes(buffer[done:end]), MAX_BODY)
                    self.head_at = clock()
                    self.body_left = self.head.content_length
                    done = end + 4
                taken = min(self.body_left, len(buffer) - done)
                done += taken
                self.body_left -= taken
                if self.body_left:
                    break
                head, self.head = self.head, None
                answers.append(self._answer(head))
                if not head.keep_alive:
                    self.closing = True
                    break
        except HttpError as exc:
            answers.append(_refusal(exc))
            self.closing = True
        del buffer[:done]
        assert self.transport is not None
        if answers:
            self.transport.write(b"".join(answers))
        if self.closing:
            self.transport.close()  # after what was written is sent

    def _answer(self, head: RequestHead) -> bytes:
        if head.method != "POST" or head.path != CALLBACK_PATH:
            return _NOT_FOUND if head.keep_alive else _NOT_FOUND_CLOSE
        status = next((v for k, v in head.headers if k.lower() == "x-function-status"), "?")
        self.receiver._receive(head.call_id, status, self.head_at)
        return _OK if head.keep_alive else _OK_CLOSE


def _refusal(exc: HttpError) -> bytes:
    text = [("Content-Type", "text/plain; charset=utf-8")]
    return encode_response(exc.status, text, f"{exc}\n".encode(), keep_alive=False)


def _window(warmup: float, duration: float) -> tuple[float, float]:
    start = clock() + warmup
    return start, start + duration


async def _closed_loop(workers: int, end: float, one: Callable[[], Awaitable[None]]) -> None:
    """`workers` loops, each running `one` again as soon as it returns, until `end`."""

    async def loop() -> None:
        while clock() < end:
            await one()

    await asyncio.gather(*(loop() for _ in range(workers)))


async def sync_closed(
    client: Client, path: str, connections: int, warmup: float, duration: float
) -> Tally:
    """/function/: `connections` connections, each sends its next request on the answer."""
    start, end = _window(warmup, duration)
    tally = Tally(start, end, "200")
    data = client.request(path)

    async def one() -> None:
        sent_at = clock()
        kind = await client.send(data)
        tally.answer(kind, sent_at, clock())

    await _closed_loop(connections, end, one)
    return tally


class _Calls:
    """Async calls of one phase: unique ids, expected before they are sent."""

    def __init__(self, client: Client, receiver: Receiver, path: str, prefix: str) -> None:
        self.client, self.receiver, self.path = client, receiver, path
        self.headers = (("X-Callback-Url", receiver.url),)
        self.prefix = prefix
        self._numbers = itertools.count()

    def next_id(self) -> str:
        return f"{self.prefix}.{next(self._numbers)}"

    async def enqueue(self, tally: Tally, call_id: str, sent_at: float) -> str:
        tally.expect(call_id, sent_at)
        data = self.client.request(self.path, (*self.headers, ("X-Call-Id", call_id)))
        kind = await self.client.send(data)
        tally.answer(kind, sent_at, clock())
        if kind != "202":
            tally.reject(call_id)
        return kind


async def async_closed(
    client: Client,
    receiver: Receiver,
    path: str,
    prefix: str,
    window: int,
    warmup: float,
    duration: float,
    stall: float,
) -> Tally:
    """/async-function/ as a closed loop over the whole path: `window` calls in the system at
    once, each slot enqueueing its next call when the previous one's callback came. The rate
    of callbacks is what the queue and its consumer complete."""
    start, end = _window(warmup, duration)
    tally = receiver.tally = Tally(start, end, "202", callbacks=True)
    calls = _Calls(client, receiver, path, prefix)

    async def one() -> None:
        call_id = calls.next_id()
        done = receiver.waiter(call_id)
        if await calls.enqueue(tally, call_id, clock()) != "202":
            receiver.forget(call_id)
            await asyncio.sleep(0.01)  # a refusal (429, 503) must not become a busy loop
            return
        try:
            await asyncio.wait_for(done, TIMEOUT)
        except TimeoutError:
            receiver.forget(call_id)  # counted as lost unless it comes during the drain

    await _closed_loop(window, end, one)
    await receiver.drain(stall)
    return tally


async def enqueue_closed(
    client: Client,
    receiver: Receiver,
    path: str,
    prefix: str,
    connections: int,
    warmup: float,
    duration: float,
    stall: float,
) -> tuple[Tally, float]:
    """/async-function/ as fast as `connections` connections go (each sends on the 202); then
    the backlog drains. The tally, and the seconds the drain took."""
    start, end = _window(warmup, duration)
    tally = receiver.tally = Tally(start, end, "202", callbacks=True)
    calls = _Calls(client, receiver, path, prefix)

    async def one() -> None:
        if await calls.enqueue(tally, calls.next_id(), clock()) != "202":
            await asyncio.sleep(0.01)

    await _closed_loop(connections, end, one)
    drained = await receiver.drain(stall)
    return tally, drained


async def open_loop(
    client: Client,
    receiver: Receiver | None,
    path: str,
    prefix: str,
    rate: float,
    warmup: float,
    duration: float,
    stall: float,
) -> Tally:
    """Requests at `rate` per second, each at its due time whatever the earlier ones are doing;
    latencies count from the due time (no coordinated omission). With a receiver, async calls
    whose callbacks are awaited; without, /function/ calls."""
    origin = clock()
    start, end = origin + warmup, origin + warmup + duration
    tally = Tally(start, end, "202" if receiver else "200", callbacks=receiver is not None)
    if receiver is not None:
        receiver.tally = tally
        calls = _Calls(client, receiver, path, prefix)
    data = client.request(path)
    inflight: set[asyncio.Task[str]] = set()
    # Not asyncio.sleep: uvloop's millisecond timers would spin a core at these rates.
    with Pacer() as pacer:
        for n in itertools.count():
            due = origin + n / rate
            if due >= end:
                break
            now = await pacer.until(due)
            tally.late_by(now, due)
            if len(inflight) >= INFLIGHT_CAP:
                tally.answer("generator overloaded", due, now)
                continue
            if receiver is not None:
                task = asyncio.create_task(calls.enqueue(tally, calls.next_id(), due))
            else:
                task = asyncio.create_task(_timed(client, data, tally, due))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            if n % CATCH_UP_BATCH == 0:
                await asyncio.sleep(0)
    if inflight:
        await asyncio.wait(inflight)
    if receiver is not None:
        await receiver.drain(stall)
    return tally


async def _timed(client: Client, data: bytes, tally: Tally, due: float) -> str:
    kind = await client.send(data)
    tally.answer(kind, due, clock())
    return kind
