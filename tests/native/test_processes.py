"""Channels between two processes, as the worker and an instance use them: both ends busy at
once (a stress test), and an instance that exits with messages still in the channel."""

from __future__ import annotations

import asyncio
import random
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from faasd_py.datapath.channel import Channel, prepare_channel
from faasd_py.protocol import ChannelClosed
from tests.native.conftest import KINDS

REPO = Path(__file__).resolve().parents[2]
MAX_FRAME = 32 * 1024 * 1024


async def start_child(
    kind: str, *args: str, spin: int = 0
) -> tuple[asyncio.subprocess.Process, Channel]:
    """A tests.native._echo process with the instance's end of a new channel of `kind`."""
    handoff = prepare_channel(kind, MAX_FRAME, spin=spin, worker_spin=spin)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.native._echo",
            *handoff.runtime_args,
            f"--max-frame={MAX_FRAME}",
            *args,
            pass_fds=handoff.child_fds,
            cwd=REPO,
        )
    except OSError:
        handoff.abort()
        raise
    finally:
        handoff.release_child_side()
    return process, await handoff.connect(process.pid)


@pytest.mark.parametrize("spin", [0, 3000], ids=["park-at-once", "spin"])
@pytest.mark.parametrize("kind", KINDS)
async def test_stress_both_directions_between_processes(kind: str, spin: int) -> None:
    """2000 messages of mixed sizes, up to 100 in flight (more than the ring's 64 slots and, at
    the large end, more than its arena): every reply carries the right body, in order."""
    process, channel = await start_child(kind, spin=spin)
    rng = random.Random(4)
    sizes = [rng.choice([0, 1, 100, 1900, 2100, 9000, 70_000, 900_000]) for _ in range(2000)]
    window = asyncio.Semaphore(100)
    sent: list[bytes] = []

    async def produce() -> None:
        for n, size in enumerate(sizes):
            await window.acquire()
            body = rng.randbytes(size)
            sent.append(body)
            await channel.send({"op": "invoke", "id": n, "body": body})

    async def consume() -> None:
        for n in range(len(sizes)):
            reply: dict[str, Any] = await channel.receive()
            window.release()
            assert reply["id"] == n
            assert reply["body"] == sent[n]
            assert reply["crc"] == zlib.crc32(sent[n])

    try:
        await asyncio.wait_for(asyncio.gather(produce(), consume()), 120)
    finally:
        channel.close()
        assert await asyncio.wait_for(process.wait(), 10) == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_what_an_exiting_instance_sent_still_arrives(kind: str) -> None:
    process, channel = await start_child(kind, "--mode=crash")
    try:
        first = await asyncio.wait_for(channel.receive(), 10)
        second = await asyncio.wait_for(channel.receive(), 10)
        assert (first["id"], first["body"]) == (1, b"first")
        assert second["body"] == b"y" * 3_000_000
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(channel.receive(), 10)
        assert await process.wait() == 3
    finally:
        channel.close()


# A worker that starts an instance and dies without closing anything (as `up` under SIGKILL).
DYING_WORKER = """
import asyncio, os, sys
from tests.native.test_processes import start_child

async def main() -> None:
    process, _ = await start_child(sys.argv[1], spin=1000)
    print(process.pid, flush=True)
    os._exit(0)

asyncio.run(main())
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_instance_outlives_its_worker_by_a_second_at_most(kind: str) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DYING_WORKER, kind, cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await worker.communicate()
    instance = int(out)
    for _ in range(50):
        if gone(instance):
            break
        await asyncio.sleep(0.1)
    assert gone(instance), f"instance {instance} still runs after its worker died"
