"""The base zygote, through the API, with real sandboxes: an unloaded app holds nothing and
its next call starts from the base; a base that dies is replaced without a failed call; a
redeploy's secrets, environment and limits hold for the next start from the base."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from faasd_py.isolation.sandbox import unavailable_reason
from faasd_py.spec import FunctionSpec, Resources
from tests._ci import in_ci
from tests.integration._poll import until as _until
from tests.integration.conftest import Platform, start_platform, stop_platform

REPORT = """
import os
IMPORTED_BY = os.getpid()

def handle(event, context):
    secret = open("/var/openfaas/secrets/token").read()
    return {"body": {"pid": os.getpid(), "imported_by": IMPORTED_BY, "secret": secret,
                     "colour": os.environ.get("colour")}}
"""

ALLOCATE = """
def handle(event, context):
    hoard = [bytearray(16 * 1024 * 1024) for _ in range(int(event.body or b"0"))]
    return {"body": {"allocated_mb": 16 * len(hoard)}}
"""


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    reason = unavailable_reason()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI must prove the base zygote in sandboxes, but: {reason}")
        pytest.skip(f"sandboxes cannot run here: {reason}")
    # The hybrid policy manages every app: scaled to zero, an app is unloaded.
    running = await start_platform(tmp_path, isolation="sandbox")
    try:
        assert running.worker.base_zygote_statistics() is not None
        yield running
    finally:
        await stop_platform(running)


async def _call(platform: Platform, name: str, body: bytes = b"") -> dict[str, Any]:
    status, data, _ = await platform.invoke(name, body)
    assert status == 200, data
    result: dict[str, Any] = json.loads(data)
    return result


def _base(platform: Platform) -> Any:
    stats = platform.worker.base_zygote_statistics()
    assert stats is not None
    return stats


def _processes_named(name: str) -> list[int]:
    """Host pids whose comm is `name` (what a base zygote's fork is named after)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                pass
    return found


async def _unload(platform: Platform, name: str) -> None:
    """Scale to zero (OpenFaaS's way to say unload now): no instance, no zygote left."""
    platform.worker.scale(name, 0)
    await _until(
        lambda: (
            getattr(platform.worker.statistics(name), "available", 1) == 0
            and platform.worker.launcher_statistics(name).zygote_pid is None
            and not _processes_named(name)
        )
    )


async def _secret(platform: Platform, value: str) -> None:
    body = {"name": "token", "value": value}
    status, _ = await platform.system("PUT", "/system/secrets", body)
    if status == 404:
        status, _ = await platform.system("POST", "/system/secrets", body)
    assert status in (200, 201), status


async def test_an_unloaded_app_holds_nothing_and_starts_from_the_base(platform: Platform) -> None:
    await _secret(platform, "t")
    await platform.deploy("report", REPORT, secrets=("token",))
    first = await _call(platform, "report")
    assert first["imported_by"] == first["pid"] == 1  # its own import, as pid 1 of its sandbox
    # Its zygote starts after that first instance; unloading stops both: the app holds no
    # process (and so no memory) on the host.
    await _until(lambda: platform.worker.launcher_statistics("report").zygote_pid is not None)
    await _unload(platform, "report")
    forks = _base(platform).forks
    again = await _call(platform, "report")
    assert again["imported_by"] == again["pid"] == 1
    assert _base(platform).forks > forks
    # The base never ran the function: nothing of its package is mapped in the base.
    package = str(platform.config.packages_dir)
    with open(f"/proc/{_base(platform).pid}/maps") as maps:
        assert package not in maps.read()


async def test_the_base_never_holds_a_functions_environment(platform: Platform) -> None:
    """What the base once held, every later fork of it (another function's sandbox) would
    hold too: a function's spec goes to the base's intermediate, never to the base."""
    await _secret(platform, "t")
    marker = f"only-for-report-{uuid.uuid4().hex}"
    await platform.deploy("report", REPORT, env={"colour": marker}, secrets=("token",))
    assert (await _call(platform, "report"))["colour"] == marker
    await _until(lambda: platform.worker.launcher_statistics("report").zygote_pid is not None)
    await _unload(platform, "report")
    assert (await _call(platform, "report"))["colour"] == marker
    assert marker.encode() not in _writable_memory(_base(platform).pid)


def _writable_memory(pid: int) -> bytes:
    """The contents of the process's writable mappings (heap, stacks, anonymous memory)."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if "w" not in fields[1]:
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            with contextlib.suppress(OSError, ValueError, OverflowError):
                mem.seek(start)
                chunks.append(mem.read(end - start))
    return b"".join(chunks)


async def test_a_killed_base_zygote_is_replaced_and_no_call_fails(platform: Platform) -> None:
    await _secret(platform, "t")
    await platform.deploy("report", REPORT, secrets=("token",))
    await _call(platform, "report")
    killed = _base(platform).pid
    os.kill(killed, signal.SIGKILL)
    # Calls go on while it is gone and after: each from nothing (unloaded before it), started
    # afresh until a new base runs, then forked from it again.
    for _ in range(3):
        await _unload(platform, "report")
        assert (await _call(platform, "report"))["secret"] == "t"
    await _until(lambda: _base(platform).pid not in (None, killed))
    forks = _base(platform).forks
    await _unload(platform, "report")
    assert (await _call(platform, "report"))["secret"] == "t"
    assert _base(platform).forks > forks and _base(platform).starts == 2


async def test_a_redeploy_holds_for_the_next_start_from_the_base(platform: Platform) -> None:
    await _secret(platform, "old")
    await platform.deploy("report", REPORT, env={"colour": "red"}, secrets=("token",))
    assert (await _call(platform, "report"))["colour"] == "red"
    await _secret(platform, "new")
    spec = FunctionSpec(
        service="report", image="report:latest", env_vars={"colour": "blue"}, secrets=("token",)
    )
    assert (await platform.system("PUT", "/system/functions", spec.to_json()))[0] == 200
    await _unload(platform, "report")
    seen = await _call(platform, "report")
    assert (seen["colour"], seen["secret"]) == ("blue", "new")

    await platform.deploy("allocate", ALLOCATE, memory="256Mi", env={"exec_timeout": "20s"})
    assert (await _call(platform, "allocate", b"10"))["allocated_mb"] == 160
    smaller = FunctionSpec(
        service="allocate",
        image="allocate:latest",
        env_vars={"exec_timeout": "20s"},
        limits=Resources(memory="96Mi"),
    )
    assert (await platform.system("PUT", "/system/functions", smaller.to_json()))[0] == 200
    await _unload(platform, "allocate")
    status, body, _ = await platform.invoke("allocate", b"10")
    assert status in (500, 502) and "ran out of memory" in json.loads(body)["error"], body
