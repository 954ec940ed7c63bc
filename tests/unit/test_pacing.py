"""Pacer: an open loop's waits until due times, with the native timer and with the fallback,
in uvloop's loop (whose millisecond timers made the old waits spin) and in asyncio's."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from faasd_py import native, pacing
from faasd_py.pacing import Pacer

T = TypeVar("T")

KINDS = ["native-timer", "loop-timers"]
LOOPS = ["uvloop", "asyncio"]


def run(loop_kind: str, main: Callable[[], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        return await main()

    if loop_kind == "uvloop":
        return uvloop.run(wrapped())
    return asyncio.run(wrapped())


@pytest.fixture(params=KINDS)
def pacer(request: pytest.FixtureRequest) -> Iterator[Pacer]:
    precise = request.param == "native-timer"
    if precise and native.lib is None:
        pytest.skip(f"native shim {native.REASON}")
    made = Pacer(native_timer=precise)
    assert made.precise is precise
    yield made
    made.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_never_wakes_before_the_due_time(pacer: Pacer, loop_kind: str) -> None:
    async def main() -> list[tuple[float, float]]:
        woke = []
        start = time.monotonic()
        # Due times finer than a millisecond apart, and some a few milliseconds out.
        for n in range(60):
            due = start + 0.0003 * n + (0.004 if n % 20 == 0 else 0.0)
            woke.append((due, await pacer.until(due)))
        return woke

    for due, at in run(loop_kind, main):
        assert at >= due
        assert time.monotonic() >= due


def test_a_due_time_already_past_returns_at_once(pacer: Pacer) -> None:
    async def main() -> float:
        past = time.monotonic() - 1.0
        return await pacer.until(past) - past

    assert run("uvloop", main) >= 1.0


def test_a_second_wait_at_the_same_time_is_refused(pacer: Pacer) -> None:
    async def main() -> None:
        first = asyncio.create_task(pacer.until(time.monotonic() + 0.05))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="another wait is in progress"):
            await pacer.until(time.monotonic() + 0.01)
        await first
        # Once the first ended, the pacer waits again.
        await pacer.until(time.monotonic() + 0.001)

    run("uvloop", main)


def test_a_cancelled_wait_leaves_the_pacer_usable(pacer: Pacer) -> None:
    async def main() -> None:
        task = asyncio.create_task(pacer.until(time.monotonic() + 10.0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        due = time.monotonic() + 0.002
        assert await pacer.until(due) >= due

    run("uvloop", main)


def test_the_same_pacer_serves_one_loop_after_another(pacer: Pacer) -> None:
    for loop_kind in ("uvloop", "asyncio", "uvloop"):

        async def main() -> None:
            due = time.monotonic() + 0.002
            assert await pacer.until(due) >= due

        run(loop_kind, main)


def test_the_native_timer_wakes_the_loop_once_per_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the old waits did wrong: under uvloop, a sleep of less than a millisecond fired at
    the loop's next turn, so a wait for a due time 0.9 ms away went round and round."""
    if native.lib is None:
        pytest.skip(f"native shim {native.REASON}")
    pacer = Pacer()
    wakes: list[None] = []
    fired = pacer._fired

    def counted() -> None:
        wakes.append(None)
        fired()

    monkeypatch.setattr(pacer, "_fired", counted)

    async def main() -> None:
        for _ in range(20):
            await pacer.until(time.monotonic() + 0.0009)

    try:
        run("uvloop", main)
    finally:
        pacer.close()
    # One wake per wait; a stray one is harmless, a spin would be hundreds.
    assert 20 <= len(wakes) <= 22


def test_the_fallback_never_sleeps_less_than_a_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, *args: Any) -> Any:
        sleeps.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    pacer = Pacer(native_timer=False)

    async def main() -> None:
        for _ in range(10):
            await pacer.until(time.monotonic() + 0.0002)

    run("uvloop", main)
    assert sleeps
    assert min(sleeps) >= pacing.COARSE_TICK


def test_close_releases_the_timer() -> None:
    if native.lib is None:
        pytest.skip(f"native shim {native.REASON}")
    pacer = Pacer()
    fd = pacer._fd
    assert fd is not None
    pacer.close()
    assert not pacer.precise
    with pytest.raises(OSError):
        os.fstat(fd)
    pacer.close()  # a second close is harmless


def test_leaving_a_with_block_releases_the_timer() -> None:
    if native.lib is None:
        pytest.skip(f"native shim {native.REASON}")

    async def main() -> int | None:
        with Pacer() as pacer:
            fd = pacer._fd
            await pacer.until(time.monotonic() + 0.001)
        assert not pacer.precise
        return fd

    fd = run("uvloop", main)
    assert fd is not None
    with pytest.raises(OSError):
        os.fstat(fd)
