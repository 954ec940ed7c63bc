"""The platform over each channel: `up` with the worker's default set to shm, socket or net, a
function that picks its own, and what /system/info and the banner say about the data path."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from faasd_py import native, server
from faasd_py.config import Config
from faasd_py.spec import FunctionSpec
from tests.integration.conftest import Platform, start_platform, stop_platform
from tests.native.conftest import KINDS, needs_native

MiB = 1024 * 1024

# Answers with the channel its runtime was started on, and the length and ends of the body.
PROBE = """
import os, sys
def handle(event, context):
    if event.body == b"die":
        os._exit(3)
    # sys.argv, not /proc/self/cmdline: a zygote's fork has its own flags only in sys.argv.
    args = [a.encode() for a in sys.argv]
    channel = next(a.split(b"=", 1)[1] for a in args if a.startswith(b"--channel="))
    body = event.body
    if event.query.get("echo"):
        return body
    return b"%s %d %s" % (channel, len(body), body[:3] + body[-3:])
"""


async def deploy(platform: Platform, name: str, annotations: dict[str, str]) -> tuple[int, str]:
    platform.build(f"{name}:latest", PROBE)
    spec = FunctionSpec(service=name, image=f"{name}:latest", annotations=annotations)
    status, body = await platform.system("POST", "/system/functions", spec.to_json())
    return status, json.dumps(body) if not isinstance(body, str) else body


@pytest.mark.parametrize("kind", [*KINDS, pytest.param("net", id="net")])
async def test_invocations_over_each_channel(kind: str, tmp_path: Path) -> None:
    platform = await start_platform(tmp_path, channel=kind)
    try:
        assert (await deploy(platform, "probe", {}))[0] == 202
        status, body, _ = await platform.invoke("probe", b"abcdef")
        assert (status, body) == (200, f"{kind} 6 abcdef".encode())
        # Large bodies: through the arena (1 MiB) and in fragments (6 MiB, above the arena).
        for size in (MiB, 6 * MiB):
            payload = bytes(range(256)) * (size // 256)
            url, echo = f"{platform.url}/function/probe", {"echo": "1"}
            async with platform.session.post(url, data=io.BytesIO(payload), params=echo) as r:
                assert r.status == 200 and await r.read() == payload
        # Several callers at once, one instance each at most.
        results = await asyncio.gather(*(platform.invoke("probe", b"x" * n) for n in range(20)))
        assert [b.split()[1] for _, b, _ in results] == [str(n).encode() for n in range(20)]
        # A crash mid-invocation is a 502, and the next call gets a new instance.
        status, body, _ = await platform.invoke("probe", b"die")
        assert status == 502 and "exited with code 3" in json.loads(body)["error"]
        assert (await platform.invoke("probe", b"ok"))[0] == 200
        status, info = await platform.system("GET", "/system/info")
        assert status == 200 and info["channel"] == kind
    finally:
        await stop_platform(platform)


@needs_native
async def test_a_function_can_choose_its_channel(tmp_path: Path) -> None:
    """The annotation picks socket or net for one function; the others keep the default."""
    platform = await start_platform(tmp_path)  # the default: shm, the shim being built
    try:
        assert platform.config.channel == "shm"
        assert (await deploy(platform, "plain", {}))[0] == 202
        assert (await deploy(platform, "old", {"com.faasd-py.channel": "socket"}))[0] == 202
        assert (await deploy(platform, "netty", {"com.faasd-py.channel": " NET "}))[0] == 202
        assert (await platform.invoke("plain", b"a"))[1].startswith(b"shm ")
        assert (await platform.invoke("old", b"a"))[1].startswith(b"socket ")
        assert (await platform.invoke("netty", b"a"))[1].startswith(b"net ")
    finally:
        await stop_platform(platform)


async def test_an_unknown_channel_is_refused_at_deploy(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path)
    try:
        status, body = await deploy(platform, "weird", {"com.faasd-py.channel": "pigeon"})
        assert status == 400 and "annotations.com.faasd-py.channel" in body
        assert "expected shm, socket, net" in body
    finally:
        await stop_platform(platform)


async def test_info_reports_the_data_path(tmp_path: Path) -> None:
    platform = await start_platform(tmp_path)
    try:
        status, info = await platform.system("GET", "/system/info")
        assert status == 200
        assert info["channel"] == platform.config.channel
        assert info["native"] is native.HAS_NATIVE
        assert info["io_uring"] is native.FEATURES.io_uring
        assert info["event_engine"] == "epoll"
    finally:
        await stop_platform(platform)


@pytest.mark.parametrize("kind", [*KINDS, "net"])
def test_banner_names_the_channel_and_the_shim(kind: str, tmp_path: Path) -> None:
    line = server._channel_line(Config(data_dir=tmp_path, channel=kind))
    assert line.startswith(f"{kind} (")
    assert f"native shim {native.describe()}" in line
