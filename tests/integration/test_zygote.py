"""Zygote cold starts, through the API, with real processes and (where possible) sandboxes.

Every test runs under both isolations: `sandbox` (skipped where sandboxes cannot run, but a
failure under CI=true) and `process`. A handler that records the pid that imported it tells a
forked instance (imported by its parent, the zygote) from an exec'd one (imported by itself).
Sandboxed, a function with no zygote of its own starts from the base zygote, which imports
nothing of it (the instance imports its handler in its own new sandbox), and its own zygote
starts after that first instance: `_warm_zygote` waits for it where a test needs forks of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from faasd_py.spec import FunctionSpec
from tests._ci import in_ci
from tests.integration._poll import until as _until
from tests.integration.conftest import Platform, start_platform, stop_platform

IMPORTS = """
import os, time
IMPORTED_BY = os.getpid()
IMPORTED_AT = time.time()

def handle(event, context):
    return {"body": {"pid": os.getpid(), "ppid": os.getppid(), "imported_by": IMPORTED_BY,
                     "imported_at": IMPORTED_AT}}
"""

CRASH = """
import os
def handle(event, context):
    if event.body == b"crash":
        os._exit(3)
    return {"body": {"pid": os.getpid(), "ppid": os.getppid()}}
"""

BROKEN = """
import json
raise RuntimeError("no config for this function")
def handle(event, context):
    return "never"
"""

ALLOCATE = """
def handle(event, context):
    hoard = []
    for _ in range(int(event.body or b"0")):
        hoard.append(bytearray(16 * 1024 * 1024))
    return {"body": {"allocated_mb": 16 * len(hoard)}}
"""


@pytest.fixture(params=["sandbox", "process"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    # No keep-alive policy: scaled to zero, a function stays loaded and keeps its zygote (an
    # unload stops it: tests/integration/test_base_zygote.py starts from nothing).
    running = await start_platform(tmp_path, isolation=request.param, policy="none")
    try:
        yield running
    finally:
        await stop_platform(running)


@pytest.fixture(autouse=True)
def _sandboxes_where_asked(request: pytest.FixtureRequest) -> None:
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or callspec.params.get("platform") != "sandbox":
        return
    from faasd_py.isolation.sandbox import unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI must prove zygotes in sandboxes, but: {reason}")
        pytest.skip(f"sandboxes cannot run here: {reason}")


async def _call(platform: Platform, name: str, body: bytes = b"") -> dict[str, Any]:
    status, data, _ = await platform.invoke(name, body)
    assert status == 200, data
    result: dict[str, Any] = json.loads(data)
    return result


def _zygote_pid(platform: Platform, name: str) -> int | None:
    return platform.worker.launcher_statistics(name).zygote_pid


def _from_base(platform: Platform) -> bool:
    return platform.worker.base_zygote_statistics() is not None


async def _scaled_to_zero(platform: Platform, name: str) -> None:
    platform.worker.scale(name, 0)
    await _until(lambda: getattr(platform.worker.statistics(name), "available", 1) == 0)


async def _warm_zygote(platform: Platform, name: str) -> int:
    """Once the function's own zygote runs and it has no instance, so that its next cold
    start forks that zygote; the zygote's pid. (Sandboxed, the first instance comes from the
    base zygote and the function's own zygote starts after it.)"""
    stats = platform.worker.launcher_statistics(name)
    if stats.execs + stats.forks == 0:
        await _call(platform, name)
    await _until(lambda: _zygote_pid(platform, name) is not None)
    await _scaled_to_zero(platform, name)
    zygote = _zygote_pid(platform, name)
    assert zygote is not None
    return zygote


async def test_cold_starts_fork_the_zygote_that_imported_the_handler(platform: Platform) -> None:
    await platform.deploy("imports", IMPORTS, labels={"com.openfaas.scale.min": "0"})
    first = await _call(platform, "imports")
    stats = platform.worker.launcher_statistics("imports")
    if _from_base(platform):
        # From nothing: forked from the base zygote, the instance imported its own handler,
        # as pid 1 of its own sandbox; the function's zygote starts after it.
        assert first["imported_by"] == first["pid"] == 1, first
        assert stats.execs == 1 and stats.forks == 0
        zygote = await _warm_zygote(platform, "imports")
    else:
        # The instance did not import its handler: its parent, the zygote, did, before the fork.
        assert first["imported_by"] != first["pid"] and first["imported_by"] == first["ppid"]
        assert stats.zygote_starts == 1 and stats.forks == 1 and stats.execs == 0
        zygote = await _warm_zygote(platform, "imports")
    assert _alive(zygote)
    forks = platform.worker.launcher_statistics("imports").forks

    # Scaled to zero with the zygote up: each cold start forks the same zygote again.
    second = await _call(platform, "imports")
    assert second["imported_by"] == second["ppid"] != second["pid"]
    await _scaled_to_zero(platform, "imports")
    third = await _call(platform, "imports")
    assert third["pid"] != second["pid"]
    assert third["imported_at"] == second["imported_at"]  # one import, two instances
    stats = platform.worker.launcher_statistics("imports")
    assert stats.zygote_starts == 1 and stats.forks == forks + 2 and stats.fallbacks == 0


ASYNC = """
import asyncio, os
IMPORTED_BY = os.getpid()

async def handle(event, context):
    await asyncio.sleep(0.2)
    return {"body": {"pid": os.getpid(), "imported_by": IMPORTED_BY}}
"""


async def test_a_forked_instance_runs_async_handlers_concurrently(platform: Platform) -> None:
    await platform.deploy("waits", ASYNC, env={"max_inflight": "4"})
    await _warm_zygote(platform, "waits")
    results = await asyncio.gather(*(_call(platform, "waits") for _ in range(4)))
    assert len({r["pid"] for r in results}) == 1  # one instance, four at once
    assert all(r["imported_by"] != r["pid"] for r in results)


THREADED = """
import threading, time
ticker = threading.Thread(target=lambda: time.sleep(3600), name="ticker", daemon=True)
ticker.start()

def handle(event, context):
    return {"body": {"ticker_alive": ticker.is_alive()}}
"""


async def test_threads_started_at_import_are_warned_about(platform: Platform) -> None:
    await platform.deploy("threaded", THREADED)
    await _warm_zygote(platform, "threaded")
    # fork copies only the calling thread: the instance has the Thread object, not the thread.
    assert (await _call(platform, "threaded"))["ticker_alive"] is False
    logs = await platform.logs("threaded")
    assert any("started threads at import (ticker)" in line["text"] for line in logs), logs


# Dies when imported by a zygote (its flags say so), imports fine in an exec'd instance.
ZYGOTE_HATER = """
import os, sys
if any(arg.startswith("--zygote=") for arg in sys.argv):
    os._exit(7)

def handle(event, context):
    return {"body": {"pid": os.getpid()}}
"""


async def test_a_zygote_that_cannot_start_costs_a_fresh_exec_not_the_call(
    platform: Platform,
) -> None:
    await platform.deploy("hater", ZYGOTE_HATER, labels={"com.openfaas.scale.min": "0"})
    assert "pid" in await _call(platform, "hater")
    # Sandboxed, the zygote starts (and fails) after the instance that the base served.
    await _until(lambda: platform.worker.launcher_statistics("hater").fallbacks == 1)
    stats = platform.worker.launcher_statistics("hater")
    assert stats.fallbacks == 1 and stats.forks == 0 and stats.zygote_starts == 0
    logs = await platform.logs("hater")
    warning = "exited with code 7 while importing the handler; this instance starts"
    assert any(warning in line["text"] for line in logs), logs


ZYGOTE_GARBLER = """
import os, socket, sys
# Import code runs in the zygote: here it writes garbage on the zygote's control socket, the way
# a hostile or buggy handler could, and then lets the zygote go on to say "ready".
for arg in sys.argv:
    if arg.startswith("--zygote="):
        control = socket.socket(fileno=os.dup(int(arg.split("=", 1)[1])))
        control.send(b"\\xc1 not msgpack")
        control.detach()

def handle(event, context):
    return {"body": {"pid": os.getpid()}}
"""


async def test_a_zygote_that_garbles_its_control_socket_is_not_trusted(
    platform: Platform,
) -> None:
    await platform.deploy("garbler", ZYGOTE_GARBLER, labels={"com.openfaas.scale.min": "0"})
    assert "pid" in await _call(platform, "garbler")
    # Its "ready" came after the garbage: it was killed all the same, and a fresh start served.
    await _until(lambda: platform.worker.launcher_statistics("garbler").fallbacks == 1)
    stats = platform.worker.launcher_statistics("garbler")
    assert stats.fallbacks == 1 and stats.forks == 0, stats


async def test_a_crashed_instance_is_replaced_by_a_fork(platform: Platform) -> None:
    await platform.deploy("crash", CRASH)
    await _warm_zygote(platform, "crash")
    before = await _call(platform, "crash")
    status, body, _ = await platform.invoke("crash", b"crash")
    assert status == 502 and b"exited with code 3" in body, body
    after = await _call(platform, "crash")
    assert after["pid"] != before["pid"] and after["ppid"] == before["ppid"]
    assert platform.worker.launcher_statistics("crash").forks >= 2


async def test_a_killed_zygote_is_replaced_and_cold_starts_go_on(platform: Platform) -> None:
    await platform.deploy("imports", IMPORTS)
    zygote = await _warm_zygote(platform, "imports")
    first = await _call(platform, "imports")
    os.kill(zygote, signal.SIGKILL)
    # Its instance dies with it; the next invocation cold-starts (sandboxed: from the base,
    # and a new zygote starts after it).
    await _until(lambda: _zygote_pid(platform, "imports") is None)
    second = await _call(platform, "imports")
    assert second["imported_at"] > first["imported_at"]
    await _until(lambda: _zygote_pid(platform, "imports") not in (None, zygote))
    if not _from_base(platform):
        assert second["imported_by"] == second["ppid"] != second["pid"]


async def test_a_handler_that_fails_to_import_says_so(platform: Platform) -> None:
    await platform.deploy("broken", BROKEN, labels={"com.openfaas.scale.min": "0"})
    status, body, _ = await platform.invoke("broken")
    assert status == 500, body
    error = json.loads(body)["error"]
    assert "failed to load its handler" in error
    assert "RuntimeError: no config for this function" in error
    assert platform.worker.launcher_statistics("broken").fallbacks == 0
    logs = await platform.logs("broken")
    assert any("no config for this function" in line["text"] for line in logs)


async def test_each_forked_instance_has_the_memory_limit(platform: Platform) -> None:
    await platform.deploy("allocate", ALLOCATE, memory="128Mi", env={"exec_timeout": "20s"})
    assert (await _call(platform, "allocate", b"2"))["allocated_mb"] == 32
    status, body, _ = await platform.invoke("allocate", b"40")
    assert status in (500, 502), body
    if platform.worker.isolation == "sandbox":
        assert "ran out of memory" in json.loads(body)["error"]
    # The zygote survives its instance's death; the next one is forked again.
    assert (await _call(platform, "allocate", b"1"))["allocated_mb"] == 16
    assert platform.worker.launcher_statistics("allocate").fallbacks == 0


async def test_update_and_delete_stop_the_zygote(platform: Platform) -> None:
    await platform.deploy("imports", IMPORTS)
    old = await _warm_zygote(platform, "imports")
    spec = FunctionSpec(service="imports", image="imports:latest", env_vars={"changed": "1"})
    assert (await platform.system("PUT", "/system/functions", spec.to_json()))[0] == 200
    await _call(platform, "imports")
    await _until(lambda: _zygote_pid(platform, "imports") not in (None, old))
    new = _zygote_pid(platform, "imports")
    await _until(lambda: not _alive(old))
    status, _ = await platform.system("DELETE", "/system/functions", {"functionName": "imports"})
    assert status == 200
    assert new is not None
    await _until(lambda: not _alive(new))


async def test_without_zygotes_every_instance_imports_its_own_handler(tmp_path: Path) -> None:
    running = await start_platform(tmp_path, isolation="process", zygote=False)
    try:
        await running.deploy("imports", IMPORTS)
        result = await _call(running, "imports")
        assert result["imported_by"] == result["pid"]
        stats = running.worker.launcher_statistics("imports")
        assert stats.forks == 0 and stats.zygote_starts == 0 and stats.execs == 1
        status, info = await running.system("GET", "/system/info")
        assert status == 200 and info["zygote"] is False
    finally:
        await stop_platform(running)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


SEES = """
import os, sys
def handle(event, context):
    def name(pid):  # a base zygote's fork is named after its function
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return {"body": {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "visible_pids": pids,
        "function": [a for a in sys.argv if a.startswith("--function-name=")],
        "names": sorted({name(pid) for pid in pids}),
    }}
"""


async def test_a_forked_instance_sees_only_its_own_function(platform: Platform) -> None:
    if platform.worker.isolation != "sandbox":
        pytest.skip("process isolation hides nothing")
    await platform.deploy("one", SEES)
    await platform.deploy("two", SEES)
    for name in ("one", "two"):
        await _warm_zygote(platform, name)
        seen = await _call(platform, name)
        # pid 1 of the function's sandbox is its zygote, which forked it; the others are the
        # zygote's forks (instances, and the spare forked ahead): no other function's, nor
        # the host's.
        assert seen["pid"] != 1 and seen["ppid"] == 1 and 1 in seen["visible_pids"], seen
        assert seen["function"] == [f"--function-name={name}"], seen
        assert seen["names"] == [name], seen


@pytest.mark.parametrize(("setting", "expected"), [("1", True), ("0", False)])
async def test_up_reads_faasd_zygote_and_says_it(
    tmp_path: Path, setting: str, expected: bool
) -> None:
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faasd_py",
        "up",
        "--port=0",
        f"--data-dir={tmp_path / 'data'}",
        "--isolation=process",
        env={**os.environ, "FAASD_ZYGOTE": setting, "COLUMNS": "300", "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,  # where the banner goes
    )
    assert up.stderr is not None
    banner = b""
    try:
        async with asyncio.timeout(30):
            while b"stop with" not in (line := await up.stderr.readline()):
                assert line, f"up exited before the end of its banner: {banner!r}"
                banner += line
    finally:
        up.send_signal(signal.SIGTERM)
        await up.wait()
    banner = b" ".join(banner.split())  # however the console wrapped it
    assert (b"cold starts fork a zygote per function" in banner) is expected, banner
    assert (b"each instance a fresh interpreter" in banner) is not expected, banner
    assert re.search(rb"dashboard: http://[0-9.]+:[0-9]+/ui/", banner), banner
