"""SIGTERM to `faasd-py up` while invocations run: they finish or get 503, nothing is left."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
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


async def test_sigterm_finishes_in_flight_work_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "data", _free_port()
    source = tmp_path / "sleepy"
    source.mkdir()
    (source / "handler.py").write_text(
        textwrap.dedent(
            """
            import time
            def handle(event, context):
                time.sleep(float(event.body or 0))
                return "slept"
            """
        )
    )
    spec = FunctionSpec(
        service="sleepy", image="sleepy:latest", labels={"com.openfaas.scale.max": "2"}
    )
    PackageStore(data / "packages").build(StackFunction(spec, "python3-http", source))

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
            async with session.post(
                url + "/system/functions", json=spec.to_json(), headers=auth
            ) as response:
                assert response.status == 202

            async def call(seconds: float) -> tuple[int, str]:
                async with session.post(url + "/function/sleepy", data=str(seconds)) as r:
                    return r.status, await r.text()

            assert (await call(0))[0] == 200
            assert _processes_mentioning(str(data / "packages")), (
                "the instance runs from the data dir"
            )
            calls = [asyncio.create_task(call(1.0)) for _ in range(6)]
            await asyncio.sleep(0.5)  # two run, four wait for a slot
            up.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*calls)
    finally:
        code = await asyncio.wait_for(up.wait(), 20)
    stderr = (await up.stderr.read()).decode() if up.stderr else ""

    assert code == 0, stderr
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) >= 2 and set(statuses) <= {200, 503}, results
    assert not _processes_mentioning(str(data / "packages")), "instances outlived up"
    assert not list((data / "run").glob("sleepy-*")), "instance folders left behind"
    assert "stopped" in stderr
