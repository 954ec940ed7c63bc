"""The processes under test of the async benchmark, in its two topologies, and their CPU.

- one: a single `faasd-py up` per queue answers /function/ and /async-function/ and runs the
  queue's consumer in the same process, on the same event loop: issue 12's setting.
- split (Redis only: the embedded queue lives in one `up`'s data dir): the `up` that answers
  the enqueues runs no consumer (`--no-queue-consumer`); a process of its own consumes the
  same Redis queue, one of
    - `up`: a second `faasd-py up --queue REDIS` with its consumer on and a worker (and
      instances) of its own, which invokes in process: the enqueueing `up` does nothing for
      an async call after its 202;
    - `up-nice`: the same, started under `nice -n 10` (its instances inherit the priority),
      so that on shared cores the queued work yields the CPU to the enqueues and sync calls;
    - `queue-worker`: `faasd-py queue-worker --queue REDIS --gateway <the enqueueing up>`,
      which invokes through that up's /function/: the enqueueing `up` still parses each async
      call's invocation and runs it on its instances, only the queue's side (take, renew,
      settle, callbacks) is elsewhere.

CPU is sampled per role (bench/_cpu.py reads /proc): each process's own seconds, and, for the
processes that own instances, those of everything below them under a role of its own.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import _cpu
import _platform
from _procs import Server, ServerError, start_server
from rich.console import Console
from rich.markup import escape

TOPOLOGIES = ("one", "split")
CONSUMERS = ("up", "up-nice", "queue-worker")
# The nice value of the `up-nice` consumer (and so of its instances): background priority.
CONSUMER_NICE = 10
# What a queue-worker may take to finish its calls in flight when stopped: the benchmark's
# calls are done by then (each phase drains), so a short grace suffices.
QUEUE_WORKER_GRACE = "5s"
# How long a queue-worker may take to say it consumes before the benchmark gives up.
QUEUE_WORKER_START = 60.0

# CPU roles in the order the report shows them, with the report's column headers.
ROLES = {
    "up": "up (gateway, worker, consumer)",
    "gateway": "enqueueing up (gateway, worker; no consumer)",
    "instances": "its instances",
    "consumer": "consumer process",
    "consumer_instances": "consumer's instances",
    "redis": "redis-server",
    "bench": "benchmark (client, receiver)",
}


@dataclass(frozen=True)
class CpuRole:
    """A process whose CPU is reported as `role`; with `below`, what runs under it (instances,
    zygotes) is reported as that role."""

    role: str
    server: Server
    below: str | None = None


def cpu_seconds(roles: Sequence[CpuRole]) -> dict[str, float]:
    """CPU seconds so far of each role, and of this process (`bench`)."""
    seconds: dict[str, float] = {}
    for each in roles:
        sample = _cpu.sample(each.server.process.pid)
        seconds[each.role] = sample.platform_s
        if each.below is not None:
            seconds[each.below] = sample.descendants_s
    own = resource.getrusage(resource.RUSAGE_SELF)
    seconds["bench"] = own.ru_utime + own.ru_stime
    return seconds


def label(queue: str, topology: str, consumer: str | None) -> str:
    """A target's name in the report: the queue, and in the split topology who consumes it."""
    return queue if topology == "one" or consumer is None else f"{queue} split, {consumer}"


def start_queue_worker(
    folder: Path,
    queue_url: str,
    gateway: _platform.RunningPlatform,
    concurrency: int,
    console: Console,
    stack: ExitStack,
) -> Server:
    """`faasd-py queue-worker` on `queue_url` through `gateway` (its credentials read from the
    gateway's data dir); returns once it says it consumes. `stack` stops it at exit."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = [*_platform.faasd_command(), "queue-worker", "--queue", queue_url]
    argv += ["--gateway", gateway.base_url, "--data-dir", str(gateway.data_dir)]
    argv += ["--queue-concurrency", str(concurrency)]
    argv += ["--shutdown-timeout", QUEUE_WORKER_GRACE]
    console.print(f"[bold]queue-worker[/]: starting: {escape(' '.join(argv))}")
    server = start_server("queue-worker", argv, folder / "queue-worker.log", cwd=_platform.REPO)
    stack.callback(_platform.stop, console, server, 10.0)
    _wait_for_line(server, "consuming", QUEUE_WORKER_START)
    return server


def _wait_for_line(server: Server, text: str, timeout: float) -> None:
    """Until `text` shows in the server's log; ServerError if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _platform.require_alive(server)
        try:
            if text in server.log_path.read_text(errors="replace"):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise ServerError(
        f"{server.name} did not log {text!r} within {timeout:.0f} s; the end of its log "
        f"({server.log_path}):\n{server.log_tail()}"
    )
