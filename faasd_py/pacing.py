"""Waiting until a due time to within tens of microseconds, without spinning: the pacing of
open loops (the load generator's engine, the benchmarks' generators).

uvloop (libuv) keeps timers in whole milliseconds and truncates: `asyncio.sleep(0.0004)` fires
on the loop's next turn. A generator that sleeps "until the next request is due" at a few
thousand requests a second therefore spins: measured here, one whole core at 2,000 requests a
second, on a 2-core machine it shares with the platform it measures. asyncio's own loop rounds
the other way and wakes up to a millisecond late instead.

The native shim's timerfd (native/timer.c) is armed at the due time on CLOCK_MONOTONIC, the
clock of `time.monotonic()`, and registered with the event loop as a reader: the loop's epoll
wakes when the kernel's high-resolution timer fires, never before the due time. Without the
shim (not built, `FAASD_NO_NATIVE=1`) waits fall back to the loop's timers, rounded up to at
least COARSE_TICK so that they cannot spin: up to about a millisecond late.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

from faasd_py import native

# The shortest sleep of the fallback: uvloop's timer resolution.
COARSE_TICK = 0.001


class Pacer:
    """Sleeps until due times on `time.monotonic()`'s clock, one at a time, in one event loop.
    Never returns before the due time. `close()` (or leaving a `with` block) releases the
    timer."""

    def __init__(self, *, native_timer: bool = True) -> None:
        self._fd: int | None = None
        if native_timer and native.lib is not None:
            self._fd = native.check(native.lib.pace_timer_open())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._busy = False

    @property
    def precise(self) -> bool:
        """Whether waits use the native timer (else the loop's millisecond timers)."""
        return self._fd is not None

    async def until(self, due: float) -> float:
        """Sleep until `due` (seconds on `time.monotonic()`'s clock); the time on waking."""
        if self._busy:
            raise RuntimeError("Pacer.until: another wait is in progress on this pacer")
        self._busy = True
        try:
            while (now := time.monotonic()) < due:
                if self._fd is None:
                    await asyncio.sleep(max(due - now, COARSE_TICK))
                else:
                    await self._timer(due)
        finally:
            self._busy = False
        return now

    async def _timer(self, due: float) -> None:
        assert self._fd is not None
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._unregister()
            loop.add_reader(self._fd, self._fired)
            self._loop = loop
        self._waiter = loop.create_future()
        try:
            native.check(native.lib.pace_timer_arm(self._fd, math.ceil(due * 1e9)))
            await self._waiter
        finally:
            self._waiter = None

    def _fired(self) -> None:
        assert self._fd is not None
        try:
            os.read(self._fd, 8)  # clears the expiry; a stale wake-up finds nothing to read
        except BlockingIOError:
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _unregister(self) -> None:
        if self._loop is not None and self._fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None

    def __enter__(self) -> Pacer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._unregister()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
