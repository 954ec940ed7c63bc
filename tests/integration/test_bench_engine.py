"""One generator process's engine, run in the test's own loop beside a real aiohttp server.

Sharing the loop is the point: when the server stalls the loop (a handler that blocks for a
known time), the generator stalls with it, so the requests scheduled during the stall go out
late, as they would from any generator that fell behind. Their latency must still count from
their intended time (no coordinated omission)."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from faasd_py.loadgen._engine import Link, _Engine
from faasd_py.loadgen._histogram import Histogram
from faasd_py.loadgen._plan import Plan
from tests.integration.test_bench_client import aiohttp_server

STALL = 0.3  # seconds the server blocks, once
STALLED_REQUEST = 20  # which request stalls it: after the run is under way


@dataclass
class StartAt:
    value: float = 0.0


@pytest.fixture
async def stalling_server() -> AsyncIterator[str]:
    """Answers at once, except request number STALLED_REQUEST, whose handler blocks the whole
    loop for STALL seconds (a server that hangs, in the generator's own process)."""
    seen = 0

    async def answer(request: web.Request) -> web.Response:
        nonlocal seen
        await request.read()
        seen += 1
        if seen == STALLED_REQUEST:
            time.sleep(STALL)  # noqa: ASYNC251 -- blocking the loop is the stall being tested
        return web.Response(text="ok")

    async with aiohttp_server(answer) as url:
        yield url


def at_least(histogram: Histogram, micros: int) -> int:
    """How many recorded values are at least `micros` (to the histogram's precision)."""
    below = 0.0
    for value, fraction in histogram.cdf():
        if value >= micros:
            break
        below = fraction
    return histogram.count - round(below * histogram.count)


async def test_requests_sent_late_count_their_latency_from_their_intended_time(
    stalling_server: str,
) -> None:
    plan = Plan(gateway=stalling_server, function="f", rates=(100.0,), duration=1.5, seed=5)
    link = Link(queue.Queue(), threading.Event(), threading.Event(), StartAt())
    link.start_at.value = time.monotonic() + 0.1
    link.go.set()
    engine = _Engine(plan, 0, link)
    await asyncio.wait_for(engine.run(), 30)  # a deadline that only catches a hang
    stats = engine.stats
    assert stats.errors == {} and stats.statuses == {200: stats.intended}
    # The stall held back the sends due during it: the lag says so (about 100 req/s x 0.2 s
    # were due more than 0.1 s before they could go).
    late = at_least(stats.lag, 100_000)
    assert late >= 5, stats.lag
    # Each of those waited at least 0.1 s past its intended time before it was even sent, so
    # its latency is at least that too; measured from the send, they would look fast.
    assert at_least(stats.latency, 100_000) >= late, (stats.latency, stats.lag)
