"""One generator process: a lean HTTP client on uvloop (faasd_py.http1) sending a Plan's share.

Open loop (rates and traces): each request goes out at its intended time whether or not earlier
ones have answered, and its latency counts from that intended time, so a slow gateway cannot
hide its slowness by slowing the generator down (no coordinated omission). How late each send
went is recorded too (`lag`), so a generator that falls behind is seen, not trusted.

Closed loop: each connection sends its next request when the previous one answered; latency
counts from the actual send.

The process talks to its coordinator through a Link: it says "ready", waits for the shared start
instant (time.monotonic() is one clock for every process on Linux), sends progress every
PROGRESS_EVERY seconds and its RunStats at the end; it stops early when `stop` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
import traceback
import urllib.parse
from dataclasses import dataclass
from typing import Any

import uvloop

from faasd_py.http1 import Pool, build_request
from faasd_py.loadgen._histogram import Histogram
from faasd_py.loadgen._outcome import OVERLOADED, describe, exception_kind, parse_server_timing
from faasd_py.loadgen._plan import Plan
from faasd_py.loadgen._schedule import Arrival
from faasd_py.loadgen._stats import RunStats
from faasd_py.pacing import Pacer

PROGRESS_EVERY = 0.5
# What the generator's requests say they come from.
USER_AGENT = "faasd-py-bench"
# How often the process looks at the coordinator's stop flag.
STOP_POLL = 0.1
# Arrivals still unsent this long after the schedule's end are given up (counted as unsent):
# a generator far behind must not run on for minutes.
LATE_GRACE = 1.0
# After a stop (Ctrl-C), how long requests in flight may take to answer before they are dropped.
STOP_GRACE = 1.0
# How long a process waits for the start signal before it gives up on its coordinator.
START_TIMEOUT = 60.0
# Behind schedule, the sender yields to the loop every this many sends, so that answers are
# read while it catches up.
CATCH_UP_BATCH = 16

_clock = time.monotonic


@dataclass(frozen=True)
class Link:
    """What ties a generator process to its coordinator (multiprocessing objects).

    `messages` carries (kind, index, payload) tuples: ("ready", i, None), ("progress", i,
    dict), ("result", i, RunStats JSON), ("failed", i, traceback text).
    """

    messages: Any  # multiprocessing Queue
    stop: Any  # multiprocessing Event: stop sending
    go: Any  # multiprocessing Event: `start_at` is set
    start_at: Any  # multiprocessing Value("d"): the shared start instant, time.monotonic()


def process_main(plan: Plan, index: int, link: Link) -> None:
    """Entry point of generator process `index`."""
    # Ctrl-C is the coordinator's to handle: it sets `stop`, and this process reports.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        uvloop.run(_Engine(plan, index, link).run())
    except BaseException:
        link.messages.put(("failed", index, traceback.format_exc()))
        raise


def _us(seconds: float) -> int:
    return max(1, round(seconds * 1e6))


class _Engine:
    def __init__(self, plan: Plan, index: int, link: Link) -> None:
        self.plan = plan
        self.index = index
        self.link = link
        self.stats = RunStats()
        # Latencies since the last progress message; the coordinator merges them.
        self.window = Histogram()
        self.inflight: dict[asyncio.Task[None], bool] = {}  # task -> recorded
        self.stop_requested: float | None = None
        self.stopped = asyncio.Event()
        self.start = 0.0
        self.record_start = 0.0
        self.last_second = max(0, math.ceil(plan.seconds) - 1)
        self.method = plan.request.method
        self.pool = Pool(plan.gateway, plan.request.timeout)
        self.pacer = Pacer()
        # The gateway's own path, if any, comes before /function/...
        self.prefix = urllib.parse.urlsplit(plan.gateway).path.rstrip("/")
        self.prepared: dict[str, bytes] = {}

    async def run(self) -> None:
        plan = self.plan
        self.link.messages.put(("ready", self.index, None))
        if not await asyncio.to_thread(self.link.go.wait, START_TIMEOUT):
            raise RuntimeError(f"no start signal within {START_TIMEOUT:.0f} s")
        self.start = float(self.link.start_at.value)
        self.record_start = self.start + plan.lead_in
        ticker = asyncio.create_task(self._tick())
        try:
            if plan.mode == "closed":
                await self._closed_loop()
            else:
                await self._open_loop()
                await self._drain()
        finally:
            ticker.cancel()
            self.pool.close()
            self.pacer.close()
        self._progress()
        self.link.messages.put(("result", self.index, self.stats.to_json()))

    # --- open loop -----------------------------------------------------------------------------

    async def _open_loop(self) -> None:
        plan, stats = self.plan, self.stats
        give_up = self.start + plan.total_seconds + LATE_GRACE
        sent_in_a_row = 0
        for arrival in plan.arrivals(self.index):
            due = self.start + arrival.at
            recorded = arrival.at >= plan.lead_in
            now = _clock()
            if due > now:
                sent_in_a_row = 0
                now = await self._sleep_until(due)
            else:
                sent_in_a_row += 1
                if sent_in_a_row % CATCH_UP_BATCH == 0:
                    await asyncio.sleep(0)
                    now = _clock()
            if self.stop_requested is not None and due > self.stop_requested:
                return  # what was due after the stop is not part of the run
            if not recorded:
                stats.warmup_sent += 1
                self._fire(arrival, due, recorded=False)
                continue
            stats.intended += 1
            if self.stop_requested is not None or now > give_up:
                stats.unsent += 1
            elif len(self.inflight) >= plan.inflight_cap:
                stats.record_failure(
                    OVERLOADED,
                    f"generator overloaded: {plan.inflight_cap} requests already in flight",
                    self._second(due),
                    plan.step_of(arrival.at),
                    self._function(arrival),
                )
            else:
                stats.sent += 1
                stats.lag.record(_us(now - due))
                self._fire(arrival, due, recorded=True)

    async def _sleep_until(self, due: float) -> float:
        """Sleep until `due`, or until a stop; the time on waking. Never early: a request sent
        before its time would have its latency understated."""
        if due - _clock() > STOP_POLL:
            # The loop's timers (millisecond resolution, may fire early) for the long part.
            await self._wait_for_stop(due - _clock() - STOP_POLL)
        if self.stop_requested is not None:
            return _clock()
        # The last STOP_POLL at the pacer's precision, without spinning.
        return await self.pacer.until(due)

    async def _wait_for_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), max(0.0, seconds))

    def _fire(self, arrival: Arrival, due: float, recorded: bool) -> None:
        function = self._function(arrival)
        step = self.plan.step_of(arrival.at)
        task = asyncio.create_task(
            self._request(self.plan.target(arrival), due, recorded, step, function)
        )
        self.inflight[task] = recorded
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.inflight.pop(task, None)

    def _function(self, arrival: Arrival) -> str | None:
        return arrival.function if self.plan.trace is not None else None

    async def _drain(self) -> None:
        """Wait for the answers still due; a stopped run waits briefly, then drops them."""
        if not self.inflight:
            return
        stopped = self.stop_requested is not None
        grace = STOP_GRACE if stopped else self.plan.request.timeout + 1.0
        deadline = _clock() + grace
        while self.inflight and _clock() < deadline:
            if not stopped and self.stop_requested is not None:
                stopped, deadline = True, min(deadline, _clock() + STOP_GRACE)
            await asyncio.wait(list(self.inflight), timeout=STOP_POLL)
        await self._cancel_inflight()

    async def _cancel_inflight(self) -> None:
        pending = dict(self.inflight)
        self.stats.unfinished += sum(pending.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- closed loop ---------------------------------------------------------------------------

    async def _closed_loop(self) -> None:
        await self._sleep_until(self.start)
        target = self.plan.target()
        workers = [
            asyncio.create_task(self._connection(target))
            for _ in range(self.plan.share(self.index))
        ]
        end = self.start + self.plan.total_seconds
        # Until the end, or a stop; then requests in flight get a grace time as in open loop.
        await self._wait_for_stop(end - _clock())
        grace = STOP_GRACE if self.stop_requested is not None else self.plan.request.timeout + 1.0
        await asyncio.wait(workers, timeout=grace)
        # A connection still running is waiting for an answer: it is in `inflight`.
        await self._cancel_inflight()

    async def _connection(self, target: str) -> None:
        stats = self.stats
        end = self.start + self.plan.total_seconds
        while self.stop_requested is None:
            sent_at = _clock()
            if sent_at >= end:
                return
            recorded = sent_at >= self.record_start
            if recorded:
                stats.intended += 1
                stats.sent += 1
            else:
                stats.warmup_sent += 1
            task = asyncio.current_task()
            assert task is not None
            self.inflight[task] = recorded
            await self._request(target, sent_at, recorded, None, None)
            self.inflight.pop(task, None)

    # --- one request ---------------------------------------------------------------------------

    def _bytes(self, target: str) -> bytes:
        """The request to `target`, built once per target (a trace's vary by duration, so the
        cache is bounded)."""
        data = self.prepared.get(target)
        if data is None:
            shape = self.plan.request
            data = build_request(
                shape.method,
                self.prefix + target,
                self.pool.authority,
                shape.headers,
                shape.body,
                user_agent=USER_AGENT,
            )
            if len(self.prepared) < 1024:
                self.prepared[target] = data
        return data

    async def _request(
        self, target: str, due: float, recorded: bool, step: int | None, function: str | None
    ) -> None:
        try:
            response = await self.pool.request(self.method, self._bytes(target))
        except Exception as exc:
            if recorded:
                kind = exception_kind(exc)
                self.stats.record_failure(
                    kind, describe(exc), self._second(_clock()), step, function
                )
            return
        done = _clock()
        if not recorded:
            return
        latency = _us(done - due)
        self.window.record(latency)
        timing = response.server_timing
        self.stats.record_answer(
            latency,
            response.status,
            parse_server_timing(timing) if timing is not None else None,
            self._second(done),
            step,
            function,
        )

    def _second(self, instant: float) -> int:
        """The second of the recorded run an instant falls in (the timeline's key). Answers
        that come after the window's end count in its last second, so that the timeline does
        not end with a nearly empty second that looks like a collapse."""
        return min(self.last_second, max(0, int(instant - self.record_start)))

    # --- talking to the coordinator ------------------------------------------------------------

    async def _tick(self) -> None:
        next_progress = _clock() + PROGRESS_EVERY
        while True:
            await asyncio.sleep(STOP_POLL)
            if self.stop_requested is None and self.link.stop.is_set():
                self.stop_requested = _clock()
                self.stopped.set()
            if _clock() >= next_progress:
                next_progress += PROGRESS_EVERY
                self._progress()

    def _progress(self) -> None:
        stats = self.stats
        self.link.messages.put(
            (
                "progress",
                self.index,
                {
                    "sent": stats.sent + stats.warmup_sent,
                    "answered": stats.answered,
                    "errors": stats.error_count,
                    "inflight": len(self.inflight),
                    "latency": self.window.to_json(),
                },
            )
        )
        self.window = Histogram()
