"""`faasd-py up` as a process: SIGTERM while invocations run (they finish or get 503, nothing is
left), and kill -9 (what scale-function set comes back)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from faasd_py.packages import PackageStore
from faasd_py.spec import FunctionSpec, StackFunction
from tests.integration.conftest import basic_auth


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line names `text` (instances are started with their package's
    path in the data dir, sandboxed or not)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningUp:
    """A `faasd-py up` subprocess, and a client session with the gateway's credentials."""

    process: asyncio.subprocess.Process
    url: str
    session: aiohttp.ClientSession
    auth: dict[str, str]


@contextlib.asynccontextmanager
async def running_up(data: Path) -> AsyncIterator[RunningUp]:
    """Start `faasd-py up` on a free port with `data` as its data dir, wait until it answers;
    on exit, wait (bounded) for it to end, however the test stopped it."""
    port = _free_port()
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "faasd_py",
        "up",
        f"--port={port}",
        f"--data-dir={data}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            password = (data / "credentials" / "basic-auth-password").read_text().strip()
            auth = {"Authorization": basic_auth("admin", password)}
            yield RunningUp(up, url, session, auth)
    except BaseException:
        if up.returncode is None:  # the test failed before it stopped `up`: do not leave it
            up.kill()
        raise
    finally:
        await asyncio.wait_for(up.wait(), 20)


def _build(data: Path, source_dir: Path, spec: FunctionSpec, code: str) -> None:
    source_dir.mkdir()
    (source_dir / "handler.py").write_text(textwrap.dedent(code))
    PackageStore(data / "packages").build(StackFunction(spec, "python3-http", source_dir))


async def function_gauges(up: RunningUp, function: str) -> tuple[float, float]:
    """(in flight, queued) of `function`, from the gateway's /metrics."""
    async with up.session.get(up.url + "/metrics", headers=up.auth) as response:
        text = await response.text()

    def gauge(metric: str) -> float:
        # Labelled with the function's name, and its namespace after a dot.
        pattern = rf'{metric}{{function_name="{re.escape(function)}(\.[^"]*)?"}} (\S+)'
        found = re.search(pattern, text)
        return float(found.group(2)) if found else 0.0

    return gauge("gateway_function_inflight"), gauge("gateway_function_queued")


async def until_gauges(up: RunningUp, function: str, inflight: int, queued: int) -> None:
    """Wait until `function` has exactly that many calls in flight and queued."""
    seen = (-1.0, -1.0)
    for _ in range(600):  # 30 s: a deadline that only catches calls that never get there
        seen = await function_gauges(up, function)
        if seen == (inflight, queued):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {inflight} in flight and {queued} queued, saw {seen}")


QUEUED = 4


async def test_sigterm_finishes_in_flight_work_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    spec = FunctionSpec(
        service="sleepy", image="sleepy:latest", labels={"com.openfaas.scale.max": "1"}
    )
    _build(
        data,
        tmp_path / "sleepy",
        spec,
        """
        import time
        def handle(event, context):
            time.sleep(float(event.body or 0))
            return "slept"
        """,
    )
    async with running_up(data) as up:
        url, session = up.url, up.session
        async with session.post(
            url + "/system/functions", json=spec.to_json(), headers=up.auth
        ) as response:
            assert response.status == 202

        async def call(seconds: float) -> tuple[int, str]:
            async with session.post(url + "/function/sleepy", data=str(seconds)) as r:
                return r.status, await r.text()

        assert (await call(0))[0] == 200
        assert _processes_mentioning(str(data / "packages")), "the instance runs from the data dir"
        # The one instance runs one call (long enough to be under way at the SIGTERM, well
        # within the shutdown timeout of 10 s); the others wait for it.
        running = asyncio.create_task(call(5.0))
        await until_gauges(up, "sleepy", inflight=1, queued=0)
        queued = [asyncio.create_task(call(0)) for _ in range(QUEUED)]
        await until_gauges(up, "sleepy", inflight=1, queued=QUEUED)
        up.process.send_signal(signal.SIGTERM)
        finished = await running
        turned_away = await asyncio.gather(*queued)
    code = up.process.returncode
    stderr = (await up.process.stderr.read()).decode() if up.process.stderr else ""

    assert code == 0, stderr
    assert finished == (200, "slept")  # in flight at the SIGTERM: it finishes
    # Queued at the SIGTERM: each is told at once, and none runs.
    assert [status for status, _ in turned_away] == [503] * QUEUED, turned_away
    assert all("shutting down" in text for _, text in turned_away), turned_away
    assert not _processes_mentioning(str(data / "packages")), "instances outlived up"
    assert not list((data / "run").glob("sleepy-*")), "instance folders left behind"
    assert "stopped" in stderr


async def test_scaled_replicas_come_back_after_kill_9(tmp_path: Path) -> None:
    """scale-function's replicas are kept with the function at once, not at shutdown."""
    data = tmp_path / "data"
    spec = FunctionSpec(service="wide", image="wide:latest")
    _build(data, tmp_path / "wide", spec, "def handle(event, context):\n    return 'ok'\n")
    async with running_up(data) as up:
        async with up.session.post(
            up.url + "/system/functions", json=spec.to_json(), headers=up.auth
        ) as response:
            assert response.status == 202
        body = {"serviceName": "wide", "replicas": 3, "namespace": "openfaas-fn"}
        async with up.session.post(
            up.url + "/system/scale-function/wide", json=body, headers=up.auth
        ) as response:
            assert response.status == 202
        up.process.kill()

    async with running_up(data) as again:
        status_url = again.url + "/system/function/wide?namespace=openfaas-fn"
        replicas = None
        for _ in range(200):  # the restored pool starts its three instances
            async with again.session.get(status_url, headers=again.auth) as response:
                replicas = (await response.json())["replicas"]
            if replicas == 3:
                break
            await asyncio.sleep(0.1)
        again.process.send_signal(signal.SIGTERM)
    assert replicas == 3
