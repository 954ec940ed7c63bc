"""A sandbox that writes what is not a message of the protocol to its channel (a handler gone
wrong, or hostile) breaks only its own instance: every caller waiting on that instance gets 502
at once, naming the protocol error, not at its exec_timeout; the instance is killed and
replaced, and the next call is served. Through the real gateway into real instances, on the shm
and the socket channels.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.integration.conftest import Platform, start_platform, stop_platform

# Far above how long anything here takes: a caller answered before it did not wait it out.
EXEC_TIMEOUT = "600s"
# Only catches a hang (the old reader stalled its callers until their exec_timeout).
HANG = 45.0

# A handler that, asked to, writes a message (msgpack, or raw bytes as a frame or record) to
# the runtime's end of its channel, reached through context.storage's transport, then never
# answers itself: only the worker's reading of what it wrote can answer its caller. Before
# that, GATE calls meet, so that several are waiting on the instance when it breaks.
BREAKER = """
import os, threading, time
import msgpack

GATE = threading.Barrier(int(os.environ.get("GATE", "1")))

def handle(event, context):
    write = event.query.get("write")
    if write is None:
        return context.hostname
    GATE.wait(timeout=60)
    if write == "message":
        channel = context.storage._transport._channel
        channel.send(msgpack.unpackb(event.body))
    elif write == "raw":
        channel = context.storage._transport._channel
        if hasattr(channel, "_sock"):
            channel._sock.sendall(len(event.body).to_bytes(4, "big") + event.body)
        else:
            channel._ep.try_send(event.body, b"", len(event.body))
    time.sleep(600)
"""

GOOD_RESULT = {"status": 200, "headers": [], "body": b"", "error": None, "seconds": 0.0}
BAD = {
    "no-id": ("message", {"op": "result", **GOOD_RESULT}, "'id' must be int, got nothing"),
    "list-id": ("message", {"op": "result", "id": [1], **GOOD_RESULT}, "'id' must be int"),
    "bad-status": (
        "message",
        {"op": "result", "id": 1, **GOOD_RESULT, "status": 1000},
        "'status' must be int from 100 to 599",
    ),
    "unknown-op": ("message", {"op": "resolt", "id": 1}, "got a map with op 'resolt'"),
    "ready-again": ("message", {"op": "ready", "pid": 1, "load_seconds": 0.0}, "after 'ready'"),
    "undecodable": ("raw", b"\xc1", "undecodable"),
}


@pytest.fixture(params=["shm", "socket"])
async def platform(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Platform]:
    if request.param == "shm":
        from faasd_py import native

        if not native.HAS_NATIVE:
            pytest.skip("the shm channel needs the native shim")
    running = await start_platform(tmp_path, channel=request.param)
    try:
        yield running
    finally:
        await stop_platform(running)


async def deploy_breaker(platform: Platform, gate: int = 1) -> None:
    # One instance at most: its replacement can start only once the broken one has exited, and
    # the broken one (asleep in its handler) exits only if the worker kills it.
    await platform.deploy(
        "breaker",
        BREAKER,
        labels={"com.openfaas.scale.max": "1"},
        env={"exec_timeout": EXEC_TIMEOUT, "max_inflight": str(gate), "GATE": str(gate)},
    )


async def serving_instance(platform: Platform) -> str:
    status, body, _ = await platform.invoke("breaker")
    assert status == 200, body
    return body.decode()


async def write(platform: Platform, kind: str, payload: Any) -> tuple[int, str]:
    """Call the breaker so that it writes `payload`; the status and error message answered."""
    data = payload if kind == "raw" else msgpack.packb(payload, use_bin_type=True)
    status, body, _ = await platform.invoke("breaker", data, params={"write": kind})
    return status, json.loads(body)["error"]


@pytest.mark.parametrize("case", list(BAD))
async def test_a_malformed_message_is_502_at_once_and_a_new_instance_serves(
    platform: Platform, case: str
) -> None:
    kind, payload, says = BAD[case]
    await deploy_breaker(platform)
    first = await serving_instance(platform)
    async with asyncio.timeout(HANG):
        status, error = await write(platform, kind, payload)
        assert status == 502
        assert f"instance {first} of function breaker broke the channel protocol" in error
        assert says in error
        # Served by a new instance: the broken one was killed (it would sleep on otherwise, and
        # with scale.max 1 no other could start).
        assert await serving_instance(platform) != first


async def test_every_caller_waiting_on_the_broken_instance_gets_502(platform: Platform) -> None:
    await deploy_breaker(platform, gate=4)
    first = await serving_instance(platform)
    _, payload, says = BAD["list-id"]
    async with asyncio.timeout(HANG):
        # Three calls sit in the instance's handlers when the fourth breaks it.
        waiting = [platform.invoke("breaker", b"", params={"write": "nothing"}) for _ in range(3)]
        broken, answers = await asyncio.gather(
            write(platform, "message", payload), asyncio.gather(*waiting)
        )
        assert broken[0] == 502 and says in broken[1]
        for status, body, _ in answers:
            assert status == 502
            assert says in json.loads(body)["error"]
        assert await serving_instance(platform) != first
