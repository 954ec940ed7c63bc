"""The net channel through the API: sandboxes on a real bridge with real veths, what a function
can reach from there, the bridge's lifetime, and the same errors as the other channels."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faasd_py.isolation import netfilter
from faasd_py.isolation.netns import owner_alias
from tests._ci import in_ci
from tests.integration.conftest import (
    HELLO,
    Platform,
    private_network,
    start_platform,
    stop_platform,
)

# Tries each {"name": [host, port]} and says what happened; also its own address (the one it
# sends from towards the bridge) and its routes.
PROBE = """
import json, socket
def handle(event, context):
    request = json.loads(event.body)
    targets, seen = request["targets"], {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.connect((request["gateway"], 9))
        seen["address"] = udp.getsockname()[0]
    for name, (host, port) in targets.items():
        try:
            socket.create_connection((host, port), timeout=1.5).close()
            seen[name] = "connected"
        except OSError as exc:
            seen[name] = type(exc).__name__ + ":" + str(exc.errno)
    with open("/proc/net/route") as routes:
        seen["routes"] = [line.split()[1] for line in routes.readlines()[1:]]
    with socket.create_server(("127.0.0.1", 0)) as own:  # its own loopback works
        socket.create_connection(own.getsockname(), timeout=1.5).close()
        seen["own_loopback"] = "connected"
    return seen
"""

SLOW_OR_BAD = """
import time
def handle(event, context):
    if event.body == b"raise":
        raise ValueError("no good")
    if event.body == b"sleep":
        time.sleep(5)
    return {"statusCode": 201, "headers": {"X-From": "fn"}, "body": event.body}
"""


def links() -> dict[str, str]:
    """Host interfaces by name, and the bridge each is a port of ('' for none)."""
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"]: link.get("master", "") for link in json.loads(out)}


def nft_table(bridge: str) -> bool:
    """Whether the packet-filter table of `bridge`'s rules exists."""
    table = ["nft", "list", "table", "inet", netfilter.table_name(bridge)]
    return subprocess.run(table, capture_output=True).returncode == 0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@pytest.fixture(autouse=True)
def _ip_installed() -> None:
    """These tests read the host's links with `ip` (iproute2; `make install` installs it in CI)."""
    if shutil.which("ip") is None:
        if in_ci():
            pytest.fail("CI must prove the net channel, but `ip` (iproute2) is not installed")
        pytest.skip("`ip` (iproute2) is not installed")


def probe(gateway: str, targets: dict[str, list[object]]) -> bytes:
    return json.dumps({"gateway": gateway, "targets": targets}).encode()


def host_address() -> str | None:
    """An IPv4 address of this host that is not loopback, if it has one."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout
    for link in json.loads(out or "[]"):
        for addr in link.get("addr_info", []):
            if not addr["local"].startswith("127.") and not link["ifname"].startswith("fdt"):
                return str(addr["local"])
    return None


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Platform]:
    running = await start_platform(tmp_path, channel="net")
    try:
        if running.worker.isolation != "sandbox":
            note = running.worker.isolation_note
            if in_ci():
                pytest.fail(
                    f"CI must prove the net channel's bridge, but instances are plain: {note}"
                )
            pytest.skip(f"sandboxes cannot run here: {note}")
        yield running
    finally:
        await stop_platform(running)


async def test_a_function_reaches_the_bridge_and_nothing_else(net: Platform) -> None:
    config = net.config
    await net.deploy("probe", PROBE)
    await net.deploy("other", PROBE)
    # Someone listening on every host address: through the bridge's address, and no other.
    listener = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    port = listener.sockets[0].getsockname()[1]
    gateway = config.net_subnet.rsplit(".", 1)[0] + ".1"
    try:
        status, body, _ = await net.invoke("other", probe(gateway, {}))
        assert status == 200, body
        other = json.loads(body)["address"]
        assert other.startswith(gateway.rsplit(".", 1)[0] + ".")
        targets = {
            "bridge": [gateway, port],
            "gateway_loopback": ["127.0.0.1", net.running.gateway.runner.addresses[0][1]],
            "other_instance": [other, 8080],
        }
        host = host_address()
        if host is not None:
            targets["host"] = [host, port]
        status, body, _ = await net.invoke("probe", probe(gateway, targets))
    finally:
        listener.close()
    assert status == 200, body
    seen = json.loads(body)
    # The host listens on every address, the bridge's too, but its packet filter rejects what
    # instances send there (EHOSTUNREACH at once, not a time-out); their own loopback works.
    assert seen["bridge"] == "OSError:113", seen
    assert seen["own_loopback"] == "connected"
    # Its loopback is its own: the gateway's port is not there.
    assert seen["gateway_loopback"].startswith("ConnectionRefusedError")
    # Bridge ports are isolated: another instance's runtime cannot be reached.
    assert seen["other_instance"].startswith(("TimeoutError", "OSError:113")), seen
    # No default route: the host's other addresses are unreachable.
    assert seen["routes"] == [
        f"{int.from_bytes(socket.inet_aton(config.net_subnet.split('/')[0]), 'little'):08X}"
    ]
    if host is not None:
        assert seen["host"] == "OSError:101", seen  # ENETUNREACH


async def test_bad_input_gives_the_same_statuses_as_the_other_channels(net: Platform) -> None:
    await net.deploy("edgy", SLOW_OR_BAD, env={"exec_timeout": "1s"})
    status, body, headers = await net.invoke("edgy", b"fine")
    assert (status, body, headers["X-From"]) == (201, b"fine", "fn")
    status, body, _ = await net.invoke("edgy", b"raise")
    assert status == 500 and "ValueError: no good" in json.loads(body)["error"]
    status, body, _ = await net.invoke("edgy", b"sleep")
    assert status == 504 and "did not answer within 1s" in json.loads(body)["error"]
    limit = net.config.max_body
    too_big = io.BytesIO(b"x" * (limit + 1))
    async with net.session.post(f"{net.url}/function/edgy", data=too_big) as response:
        assert response.status == 413 and "--max-body" in (await response.json())["error"]
    assert (await net.invoke("edgy", b"again"))[:2] == (201, b"again")


async def test_the_bridge_and_its_veths_go_when_the_worker_stops(tmp_path: Path) -> None:
    # A bridge a killed worker left behind (its owner is not running) is taken over.
    network = private_network()
    bridge = network["net_bridge"]
    ip("link", "add", bridge, "type", "bridge")
    ip("link", "set", bridge, "alias", owner_alias(2**22 + 1))
    running = await start_platform(tmp_path, channel="net", **network)
    try:
        if running.worker.isolation != "sandbox":
            ip("link", "del", bridge)
            if in_ci():
                pytest.fail("CI must prove the net channel's bridge, but instances are plain")
            pytest.skip(f"sandboxes cannot run here: {running.worker.isolation_note}")
        await running.deploy("hello", HELLO, labels={"com.openfaas.scale.min": "2"})
        assert (await running.invoke("hello", b"you"))[:2] == (200, b"hello you")
        ports = [name for name, master in links().items() if master == bridge]
        assert len(ports) == 2 and all(p.startswith("fdh") for p in ports)
        assert nft_table(bridge), "the bridge's packet-filter rules are in place"
    finally:
        await stop_platform(running)
    remaining = links()
    assert bridge not in remaining
    assert not set(ports) & set(remaining)
    assert not nft_table(bridge), "the bridge's rules go with it"


async def test_a_host_port_the_operator_allows_is_reachable(tmp_path: Path) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    allowed = listener.sockets[0].getsockname()[1]
    closed = await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 0)
    network = private_network()
    running = await start_platform(tmp_path, channel="net", net_allow_ports=(allowed,), **network)
    try:
        if running.worker.isolation != "sandbox":
            pytest.skip(f"sandboxes cannot run here: {running.worker.isolation_note}")
        await running.deploy("probe", PROBE)
        gateway = network["net_subnet"].rsplit(".", 1)[0] + ".1"
        targets = {
            "allowed": [gateway, allowed],
            "closed": [gateway, closed.sockets[0].getsockname()[1]],
        }
        status, body, _ = await running.invoke("probe", probe(gateway, targets))
    finally:
        listener.close()
        closed.close()
        await stop_platform(running)
    assert status == 200, body
    seen = json.loads(body)
    assert seen["allowed"] == "connected" and seen["closed"] == "OSError:113", seen


async def test_plain_processes_use_the_net_channel_over_loopback(tmp_path: Path) -> None:
    running = await start_platform(tmp_path, channel="net", isolation="process")
    try:
        await running.deploy("hello", HELLO)
        assert (await running.invoke("hello", b"loop"))[:2] == (200, b"hello loop")
        assert running.config.net_bridge not in links()  # no bridge needed
    finally:
        await stop_platform(running)
