"""What a function may take from the platform: its logs' memory, instances, CPU and memory."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable
from pathlib import Path

from faasd_py.worker import LogBuffer
from faasd_py.worker._logs import DEFAULT_FUNCTION_BYTES
from tests.integration.conftest import HELLO, Platform, start_platform, stop_platform

FLOOD = """
import sys
def handle(event, context):
    chunk = ("x" * 99 + "\\n") * 10_000  # 1 MB of 100-byte lines
    for _ in range(50):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    return "flooded"
"""

MARKER = "[faasd-py] "


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll for something with no event to wait on; the 30 s only catch a hang (under load)."""
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within 30 s")


async def test_a_flood_of_output_stays_bounded_is_marked_and_others_keep_answering(
    platform: Platform,
) -> None:
    await platform.deploy("flood", FLOOD)
    await platform.deploy("steady", HELLO)
    flooding = asyncio.create_task(platform.invoke("flood"))
    answers: list[tuple[int, bytes]] = []
    while not flooding.done() or len(answers) < 5:
        status, body, _ = await platform.invoke("steady", b"you")
        answers.append((status, body))
    assert set(answers) == {(200, b"hello you")}
    status, body, _ = await flooding
    assert (status, body) == (200, b"flooded")

    buffer = platform.worker.logs("flood")
    # The marker comes once the rate allows output again, even with the function quiet.
    await _until(lambda: any(e.text.startswith(MARKER) for e in buffer.recent()), "marker")
    stats = buffer.statistics()
    assert stats.bytes <= DEFAULT_FUNCTION_BYTES
    assert stats.dropped_lines > 0
    # Markers come as the rate lets output in again (older ones may have given way to newer
    # lines); together they count no more than were dropped.
    texts = [line["text"] for line in await platform.logs("flood")]
    counts = [int(t.split()[1]) for t in texts if t.startswith(MARKER)]
    assert counts and 0 < sum(counts) <= stats.dropped_lines
    assert all(" lines of output dropped" in t for t in texts if t.startswith(MARKER))
    assert platform.worker.log_statistics().bytes <= 64 * 1024 * 1024


async def test_removing_a_function_frees_its_logs(platform: Platform) -> None:
    await platform.deploy("talker", 'def handle(event, context):\n    print("x" * 1000)\n')
    for _ in range(20):
        assert (await platform.invoke("talker"))[0] == 200
    gone: weakref.ref[LogBuffer] = weakref.ref(platform.worker.logs("talker"))

    def buffer() -> LogBuffer:
        found = gone()
        assert found is not None
        return found

    await _until(lambda: buffer().statistics().entries >= 20, "lines")
    follower = asyncio.create_task(platform.logs("talker", "&follow=true"))
    await _until(lambda: bool(buffer()._followers), "follower")

    assert (await platform.system("DELETE", "/system/functions", {"functionName": "talker"}))[
        0
    ] == 200
    assert platform.worker.log_statistics().bytes == 0  # freed at once, not when instances end
    assert len(await asyncio.wait_for(follower, 30)) >= 20  # the follower was ended
    # Nothing keeps the buffer once the function's instances are gone.
    await _until(lambda: gc.collect() >= 0 and gone() is None, "collection of the buffer")


async def test_a_small_log_budget_holds_across_functions(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, log_bytes=256 * 1024, log_total_bytes=384 * 1024)
    try:
        source = "def handle(event, context):\n    print(event.body.decode() * 2000)\n"
        for name in ("one", "two"):
            await platform.deploy(name, source)
            for _ in range(200):
                assert (await platform.invoke(name, b"y"))[0] == 200
        logs = [platform.worker.logs(name) for name in ("one", "two")]
        second = logs[1].statistics
        await _until(lambda: second().entries + second().evicted_lines >= 200, "every line")
        budget = platform.worker.log_statistics()
        assert budget.bytes == sum(b.bytes for b in logs) <= 384 * 1024
        assert all(b.bytes <= 256 * 1024 for b in logs)
        assert logs[0].statistics().evicted_lines > 0  # the older function gave way
    finally:
        await stop_platform(platform)
