"""The generator's own ceiling: how many requests per second it can drive at all, here.

A run's throughput means little if the generator, not the system under test, was the limit. So
the generator is measured against the most trivial server there is (an asyncio Protocol on
uvloop that answers every request with the same bytes, in its own process) at a high closed-loop
concurrency; every report states that ceiling and flags runs that come near it. The figure is
cached per machine and process count, since it takes a few seconds to measure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
import os
import platform
import signal
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, cast

from faasd_py import __version__
from faasd_py.loadgen._coordinator import GeneratorFailed, run_plan
from faasd_py.loadgen._machine import cpu_model
from faasd_py.loadgen._plan import Plan, RequestShape
from faasd_py.loadgen._summary import Ceiling

# Connections per generator process: enough to keep each one's loop always busy.
CONNECTIONS_PER_PROC = 32
DEFAULT_SECONDS = 3.0
WARMUP = 1.0
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class _Answer(asyncio.Protocol):
    """Answers each complete request (headers, then Content-Length bytes of body) at once."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are transports.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            size = end + 4 + _content_length(self.buffer[:end])
            if len(self.buffer) < size:
                break
            self.buffer = self.buffer[size:]
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(RESPONSE * answers)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


def serve_trivial(port_out: Any) -> None:
    """Process entry: serve on a free port of 127.0.0.1, send the port, serve until killed."""
    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Answer, "127.0.0.1", 0, backlog=1024)
        port_out.send(server.sockets[0].getsockname()[1])
        port_out.close()
        await server.serve_forever()

    uvloop.run(main())


def measure(procs: int, seconds: float = DEFAULT_SECONDS) -> float:
    """The generator's closed-loop throughput (req/s) against the trivial server."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    server = ctx.Process(target=serve_trivial, args=(send,), name="faasd-bench-trivial")
    server.start()
    try:
        if not receive.poll(30):
            raise GeneratorFailed("the self-test's trivial server did not start within 30 s")
        port = receive.recv()
        plan = Plan(
            gateway=f"http://127.0.0.1:{port}",
            function="self-test",
            request=RequestShape(method="GET", timeout=10.0),
            concurrency=CONNECTIONS_PER_PROC * procs,
            duration=seconds,
            warmup=WARMUP,
            procs=procs,
        )
        finished = run_plan(plan)
    finally:
        server.kill()
        server.join(5)
    if finished.stats.error_count or not finished.recorded_seconds:
        raise GeneratorFailed(
            f"the self-test had {finished.stats.error_count} errors: {finished.stats.error_samples}"
        )
    return finished.stats.answered / finished.recorded_seconds


# --- the cache ---------------------------------------------------------------------------------


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "faasd-py" / "selftest.json"


def machine_key(procs: int) -> str:
    """What the ceiling depends on: this machine, this Python, this faasd-py, the processes."""
    return (
        f"{platform.node()} | {cpu_model()} | {os.cpu_count()} cores | "
        f"Python {platform.python_version()} | faasd-py {__version__} | procs {procs}"
    )


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached(procs: int) -> Ceiling | None:
    entry = _read_cache(cache_path()).get(machine_key(procs))
    if not isinstance(entry, dict) or not isinstance(entry.get("rps"), int | float):
        return None
    return Ceiling(float(entry["rps"]), f"self-test cached from {entry.get('measured_at', '?')}")


def store(procs: int, rps: float, seconds: float) -> None:
    path = cache_path()
    data = _read_cache(path)
    data[machine_key(procs)] = {
        "rps": round(rps, 1),
        "seconds": seconds,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # A cache that cannot be written costs a new measurement next time, nothing more.
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")


def ceiling(
    procs: int,
    *,
    enabled: bool,
    fresh: bool = False,
    seconds: float = DEFAULT_SECONDS,
    announce: Callable[[str], None] = lambda _: None,
) -> Ceiling:
    """The ceiling for a run's report: cached, or measured now (and cached), or not measured."""
    if not enabled:
        return Ceiling(None, "not measured (--no-self-test)")
    if not fresh and (found := cached(procs)) is not None:
        return found
    announce(
        f"measuring the generator's ceiling with {procs} process(es) against a trivial server "
        f"({seconds:g} s; cached afterwards in {cache_path()})"
    )
    rps = measure(procs, seconds)
    store(procs, rps, seconds)
    return Ceiling(rps, "self-test measured now")
