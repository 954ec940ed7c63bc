"""What a function may take from the platform: its logs' memory, instances, CPU and memory."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from faasd_py.spec import FunctionSpec
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
MIB = 1024 * 1024


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


# --- what a deployment may ask of the host -----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "bound"),
    [
        (
            {"labels": {"com.openfaas.scale.min": "1000", "com.openfaas.scale.max": "1000"}},
            "labels.com.openfaas.scale.min",
            "20",
        ),
        ({"labels": {"com.openfaas.scale.max": "1000"}}, "labels.com.openfaas.scale.max", "20"),
        ({"limits": {"cpu": "1e308"}}, "limits.cpu", "cores"),
        ({"limits": {"memory": "999999999Ti"}}, "limits.memory", "MemTotal"),
        ({"requests": {"memory": "999999999Ti"}}, "requests.memory", "MemTotal"),
    ],
)
async def test_a_deployment_beyond_the_host_is_a_400_naming_the_field_and_bound(
    platform: Platform, change: dict[str, object], field: str, bound: str
) -> None:
    body = {**FunctionSpec(service="greedy", image="greedy:latest").to_json(), **change}
    status, error = await platform.system("POST", "/system/functions", body)
    assert status == 400
    assert error["error"].startswith(f"{field}: at most")
    assert bound in error["error"]
    assert platform.worker.statistics("greedy") is None  # nothing was started


async def test_a_host_out_of_memory_answers_429_until_memory_is_given_back(
    tmp_path: Path,
) -> None:
    # Room for one instance of 128Mi, not two (and no zygote: they are counted below).
    platform = await start_platform(
        tmp_path, memory_budget=200 * MIB, instance_memory=128 * MIB, zygote_memory=0
    )
    try:
        await platform.deploy("first", HELLO)
        assert (await platform.invoke("first", b"a"))[:2] == (200, b"hello a")
        await platform.deploy("second", HELLO)  # accepted: it fits the budget on its own
        status, body, headers = await platform.invoke("second", b"b")
        assert status == 429
        assert headers["Retry-After"] == "1"
        message = json.loads(body)["error"]
        assert "this host cannot start one" in message and "memory budget" in message
        assert platform.worker.admission_statistics().instances == 1

        assert (await platform.system("DELETE", "/system/functions", {"functionName": "first"}))[
            0
        ] == 200
        # The first function's instance gives its memory back as it exits: the second starts.
        await _until(lambda: platform.worker.admission_statistics().reserved == 128 * MIB, "start")
        await _until(lambda: _available(platform, "second") == 1, "an instance of the second")
        assert (await platform.invoke("second", b"b"))[:2] == (200, b"hello b")
    finally:
        await stop_platform(platform)


def _available(platform: Platform, name: str) -> int:
    stats = platform.worker.statistics(name)
    return 0 if stats is None else stats.available


SLOW = """
import time
def handle(event, context):
    time.sleep(0.3)
    return "done"
"""


async def test_callers_of_a_function_with_an_instance_wait_for_it_when_the_host_is_full(
    tmp_path: Path,
) -> None:
    platform = await start_platform(
        tmp_path, memory_budget=300 * MIB, instance_memory=128 * MIB, zygote_memory=0
    )
    try:
        await platform.deploy("slow", SLOW)
        await platform.deploy("other", HELLO)
        assert (await platform.invoke("slow"))[0] == 200
        assert (await platform.invoke("other"))[0] == 200
        # A third instance does not fit: the slow function's callers queue for its one.
        calls = await asyncio.gather(*(platform.invoke("slow") for _ in range(3)))
        assert [status for status, _, _ in calls] == [200, 200, 200]
        stats = platform.worker.admission_statistics()
        assert stats.instances == 2 and stats.refused > 0
        assert await platform.metric("faasd_admission_instances") == 2
        assert await platform.metric("faasd_admission_refused_total") == stats.refused
        assert await platform.metric("faasd_admission_budget_bytes") == 300 * MIB
    finally:
        await stop_platform(platform)


async def test_zygotes_count_against_the_hosts_memory(tmp_path: Path) -> None:
    """Two instances of 128Mi fit 300Mi; with the first function's zygote of 64Mi they do not.
    A zygote that does not fit is not started: its instances start by a fresh exec."""
    platform = await start_platform(
        tmp_path, memory_budget=330 * MIB, instance_memory=128 * MIB, zygote_memory=64 * MIB
    )
    try:
        await platform.deploy("first", HELLO)
        assert (await platform.invoke("first", b"a"))[:2] == (200, b"hello a")
        zygotes = 1 if platform.worker.zygote else 0
        reserved = 128 * MIB + zygotes * 64 * MIB
        # (Sandboxed, the zygote starts just after a first start from the base zygote.)
        await _until(lambda: platform.worker.admission_statistics().reserved == reserved, "zygote")
        # Room for the second's instance (320Mi of 330Mi), not for its zygote as well.
        await platform.deploy("second", HELLO)
        assert (await platform.invoke("second", b"b"))[:2] == (200, b"hello b")
        stats = platform.worker.admission_statistics()
        assert (stats.instances, stats.zygotes) == (2, zygotes)
        assert await platform.metric("faasd_admission_zygotes") == zygotes
        if platform.worker.zygote:
            await _until(lambda: platform.worker.launcher_statistics("second").fallbacks > 0, "no")
            assert platform.worker.launcher_statistics("second").zygote_pid is None
            said = [line["text"] for line in await platform.logs("second")]
            assert any("no room for its zygote" in text for text in said), said
        # The zygote's reservation goes with its function.
        status, _ = await platform.system("DELETE", "/system/functions", {"functionName": "first"})
        assert status == 200
        await _until(lambda: platform.worker.admission_statistics().reserved == 128 * MIB, "exit")
        assert platform.worker.admission_statistics().zygotes == 0
    finally:
        await stop_platform(platform)


async def test_a_zygote_that_leaves_no_room_for_instances_gets_a_429(tmp_path: Path) -> None:
    platform = await start_platform(
        tmp_path, memory_budget=300 * MIB, instance_memory=128 * MIB, zygote_memory=64 * MIB
    )
    if not platform.worker.zygote:
        await stop_platform(platform)
        pytest.skip("instances here are not forked from zygotes")
    try:
        await platform.deploy("first", HELLO)
        assert (await platform.invoke("first", b"a"))[0] == 200
        # (Sandboxed, the zygote starts just after a first start from the base zygote.)
        await _until(lambda: platform.worker.admission_statistics().zygotes == 1, "zygote")
        await platform.deploy("second", HELLO)
        status, body, _ = await platform.invoke("second", b"b")
        assert status == 429, body
        assert "(1 zygote among them)" in json.loads(body)["error"]
    finally:
        await stop_platform(platform)
