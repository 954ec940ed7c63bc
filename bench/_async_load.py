"""The load of the async benchmark, and the receiver of its callbacks, in the benchmark's process.

The client is the load generator's (faasd_py.http1: a lean HTTP/1.1 Protocol, one
request at a time per keep-alive connection), not aiohttp's, whose ~130 us of CPU per request
would make the client the limit on a small machine; the same client drives /function/ and
/async-function/, so that their figures compare. The receiver is a plain aiohttp server on a
free port of 127.0.0.1, in the same event loop: each callback is stamped when its handler
starts, on the clock the requests were stamped with.

Every request carries an X-Call-Id of the benchmark's making (the gateway keeps a caller's id),
so that a callback is matched to the time its request was sent or due without reading the 202.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

from _async_tally import Tally
from _procs import free_port
from aiohttp import web

from faasd_py.http1 import ConnectFailed, Disconnected, Pool, ProtocolError, build_request
from faasd_py.loadgen._engine import USER_AGENT

BODY = b"hi"
TIMEOUT = 30.0  # seconds one request may take, and one call of the async closed loop
# Open loop: requests in flight beyond this are not sent but counted, as the load generator's
# engine does: a client that cannot keep up must show, not queue without bound.
INFLIGHT_CAP = 4096
# Behind schedule, the open loop yields to the loop every this many sends so that answers and
# callbacks are read while it catches up.
CATCH_UP_BATCH = 16

_ERRORS = (ConnectFailed, Disconnected, ProtocolError, TimeoutError, OSError)


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
    whoever waits for that call."""

    def __init__(self) -> None:
        self.tally: Tally | None = None
        self.url = ""
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/callback"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def waiter(self, call_id: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = future
        return future

    def forget(self, call_id: str) -> None:
        self._waiters.pop(call_id, None)

    async def _handle(self, request: web.Request) -> web.Response:
        at = clock()
        call_id = request.headers.get("X-Call-Id", "")
        status = request.headers.get("X-Function-Status", "?")
        await request.read()
        if self.tally is not None:
            self.tally.receive(call_id, status, at)
        waiter = self._waiters.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._arrived.set()
        return web.Response()

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
    for n in itertools.count():
        due = origin + n / rate
        if due >= end:
            break
        # uvloop's timers may fire early: sleep again for what is left.
        while (left := due - clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
        now = clock()
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
