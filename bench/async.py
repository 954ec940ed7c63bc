"""Async invocations: the enqueue rate the gateway sustains, enqueue -> callback latency at fixed
rates, and async against synchronous throughput of the same function in the same run, for the
embedded queue and for Redis.

    python bench/async.py                    # 3 runs of 10 s phases, both queues
    python bench/async.py --quick            # a smoke run: 1 run of 3 s phases
    python bench/async.py --queues redis --runs 1 --duration 5
    python bench/async.py --topology split   # Redis; the enqueueing up runs no consumer

Topologies (bench/_async_topology.py): `one` (the default) is one `up` per queue that answers
the enqueues and consumes its queue on the same event loop; `split` (Redis only) is an `up
--no-queue-consumer` that answers them, and a consumer in a process of its own (--consumer:
a second `up` on the same Redis queue, or `faasd-py queue-worker` through the first).

What it does, all in one run:

1. starts a private redis-server on a free port in a temporary folder (appendonly yes,
   appendfsync everysec unless --redis-fsync always);
2. builds the warm benchmark's one-function stack (`hello`, python3-http) and starts one
   `faasd-py up --deploy` per queue (embedded SQLite in its data dir, or that Redis), each on a
   free port with a data dir of its own, and waits until hello answers; split: per --consumer,
   an `up --no-queue-consumer` and its consumer process on a Redis database of their own;
3. starts a callback receiver (a lean HTTP/1.1 server, bench/_async_load.py) in this process;
4. per run, per queue (the order alternates between runs, so that drift on the machine hits
   both alike), the phases of bench/_async_report.py: sync closed loop, async closed loop
   (callbacks per second), enqueue closed loop then its backlog's drain, and open loops at
   half the enqueue rate, at half the async throughput, and /function/ at the latter;
5. writes bench/results/async.json (the machine, settings, every phase of every run, medians),
   async.md (the tables, the goals met or not) and async.png; split: async-split.*.

Every process it started is stopped at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import _args
import _async_load as load
import _async_report
import _platform
import _report
import uvloop
import warm
from _async_tally import Tally
from _async_topology import (
    CONSUMER_NICE,
    CONSUMERS,
    TOPOLOGIES,
    CpuRole,
    cpu_seconds,
    label,
    start_queue_worker,
)
from _procs import Server, ServerError, free_port, start_server
from rich.console import Console
from rich.markup import escape

HERE = Path(__file__).resolve().parent
QUEUES = ("embedded", "redis")
FUNCTION = "hello"
# The enqueue closed loop outruns the consumer: the backlog must not meet the queue's limit
# (10,000 by default, 429 beyond), or the gateway's refusals would pass for its rate.
MAX_DEPTH = 1_000_000
# A drain gives up when no callback came for this long (the rest count as lost).
DRAIN_STALL = 20.0
# How long the first async call of a target may take to call back (see probe()).
PROBE_TIMEOUT = 60.0
TITLE = "Async invocations: enqueue rate, enqueue -> callback latency, async vs sync throughput"
TITLES = {
    "one": TITLE,
    "split": f"{TITLE}; split: the enqueueing gateway runs no consumer",
}
# The report's file names (async.json, .md, .png) per topology.
STEMS = {"one": "async", "split": "async-split"}

T = TypeVar("T")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to look at."""


@dataclass
class Target:
    """One `up` under test (the one that answers /function/ and /async-function/), how to reach
    it, the processes whose CPU is reported, and the others that must stay up (a consumer)."""

    queue: str  # its name in the report: the queue, and in the split topology its consumer
    platform: _platform.RunningPlatform
    client: load.Client
    cpu: list[CpuRole]
    others: list[Server]

    def require_alive(self) -> None:
        _platform.require_alive(self.platform.server)
        for server in self.others:
            _platform.require_alive(server)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unrecorded seconds before each phase (1)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of every phase (3)")
    parser.add_argument(
        "--connections", type=int, default=16, help="connections of the closed loops (16)"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=64,
        help="calls in the system at once in the async closed loop (64)",
    )
    parser.add_argument(
        "--queue-concurrency",
        type=int,
        help="up's --queue-concurrency (default: --connections; up's own default is 4)",
    )
    parser.add_argument(
        "--queues",
        type=_args.choice_list(QUEUES),
        help="which queues: embedded,redis (both; split: redis)",
    )
    parser.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default="one",
        help="one: each up consumes its own queue (default); split: the up that answers the "
        "enqueues runs no consumer, a process of its own does (Redis only)",
    )
    parser.add_argument(
        "--consumer",
        dest="consumers",
        type=_args.choice_list(CONSUMERS),
        default=["up"],
        help="split: who consumes, up, up-nice and/or queue-worker (up: a second `up` on the "
        "queue, with instances of its own; up-nice: the same at nice 10, background priority; "
        "queue-worker: through the first up's /function/)",
    )
    parser.add_argument(
        "--redis-fsync",
        choices=("everysec", "always"),
        default="everysec",
        help="redis-server's appendfsync (everysec)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 run, 3 s phases, 0.5 s warm-ups"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="report folder (bench/results; with --quick, nothing is written unless given)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, data dirs)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="ASYNC_JSON",
        help="measure nothing: write the markdown and the plot again from this async.json",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 3.0, 0.5
    if args.duration < 1 or args.runs < 1 or args.connections < 1 or args.window < 1:
        parser.error("--duration must be at least 1 s; --runs, --connections, --window >= 1")
    if args.queues is None:
        args.queues = ["redis"] if args.topology == "split" else list(QUEUES)
    if args.topology == "split" and args.queues != ["redis"]:
        parser.error(
            "--topology split needs --queues redis: the embedded queue lives in one up's data "
            "dir, so no other process can consume it"
        )
    if args.out is None and not args.quick:
        args.out = HERE / "results"
    if args.queue_concurrency is None:
        args.queue_concurrency = args.connections
    return args


# --- the servers -------------------------------------------------------------------------------


def start_redis(tmp: Path, fsync: str, console: Console, stack: ExitStack) -> tuple[Server, str]:
    """A private redis-server on a free port, its files in `tmp`; stopped at exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError(
            "redis-server is not installed (apt-get install redis-server), or leave it out: "
            "--queues embedded"
        )
    tmp.mkdir(parents=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", fsync, "--dir", str(tmp)]
    console.print(f"[bold]redis[/]: starting: {escape(' '.join(argv))}")
    server = start_server("redis-server", argv, tmp / "redis.log", cwd=tmp)
    stack.callback(_platform.stop, console, server, 5.0)
    deadline = time.monotonic() + 10
    while not _pong(port):
        if not server.alive or time.monotonic() > deadline:
            raise ServerError(f"redis-server did not answer PING; its log:\n{server.log_tail()}")
        time.sleep(0.05)
    return server, f"redis://127.0.0.1:{port}"


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_up(
    folder: Path,
    args: argparse.Namespace,
    console: Console,
    stack: ExitStack,
    queue_url: str | None,
    *extra: str,
    nice: int = 0,
) -> _platform.RunningPlatform:
    """`up --deploy` of hello with the benchmark's queue settings, its files in `folder`."""
    up_args = ["--queue-max-depth", str(MAX_DEPTH)]
    up_args += ["--queue-concurrency", str(args.queue_concurrency), *extra]
    if queue_url is not None:
        up_args += ["--queue", queue_url]
    stack_file = warm.write_stack(folder / "functions")
    return _platform.start(
        folder,
        stack_file,
        console,
        stack,
        up_args=up_args,
        ready=[(FUNCTION, warm.BODY)],
        nice=nice,
    )


def start_targets(
    tmp: Path, args: argparse.Namespace, console: Console, stack: ExitStack
) -> list[Target]:
    redis: tuple[Server, str] | None = None
    if "redis" in args.queues:
        redis = start_redis(tmp / "redis", args.redis_fsync, console, stack)
    redis_cpu = [CpuRole("redis", redis[0])] if redis is not None else []
    targets = []
    if args.topology == "one":
        for queue in args.queues:
            console.print(f"[bold]{queue} queue[/]")
            url = f"{redis[1]}/0" if queue == "redis" and redis is not None else None
            running = start_up(tmp / queue, args, console, stack, url)
            roles = [CpuRole("up", running.server, "instances")]
            roles += redis_cpu if queue == "redis" else []
            targets.append(_target(queue, running, roles, [], stack))
        return targets
    assert redis is not None  # parse_args allows split with Redis only
    for db, consumer in enumerate(args.consumers, start=1):
        # A database per target: each consumer must take only its own target's calls.
        name, url = label("redis", "split", consumer), f"{redis[1]}/{db}"
        folder = tmp / f"split-{consumer}"
        console.print(f"[bold]{name}[/]: queue {url}")
        running = start_up(folder / "gateway", args, console, stack, url, "--no-queue-consumer")
        roles = [CpuRole("gateway", running.server, "instances")]
        if consumer in ("up", "up-nice"):
            nice = CONSUMER_NICE if consumer == "up-nice" else 0
            other = start_up(folder / "consumer", args, console, stack, url, nice=nice).server
            roles.append(CpuRole("consumer", other, "consumer_instances"))
        else:
            concurrency = args.queue_concurrency
            other = start_queue_worker(folder, url, running, concurrency, console, stack)
            roles.append(CpuRole("consumer", other))
        targets.append(_target(name, running, [*roles, *redis_cpu], [other], stack))
    return targets


def _target(
    name: str,
    running: _platform.RunningPlatform,
    roles: list[CpuRole],
    others: list[Server],
    stack: ExitStack,
) -> Target:
    client = load.Client(running.base_url)
    stack.callback(client.close)
    return Target(name, running, client, roles, others)


async def probe(target: Target, receiver: load.Receiver, console: Console) -> None:
    """One async call through the whole path, so that no phase starts before the consumer
    (in a process of its own, maybe still learning the functions) takes calls."""
    path = f"/async-function/{FUNCTION}"
    prefix = f"{target.queue}-probe".replace(" ", "").replace(",", "-")
    with console.status(f"{target.queue}: one async call until its callback comes"):
        tally = await load.open_loop(
            target.client, receiver, path, prefix, 1.0, 0.0, 1.0, PROBE_TIMEOUT
        )
    if tally.summary()["callbacks"]["received"] != 1:
        target.require_alive()
        raise BenchError(
            f"{target.queue}: an async call of {FUNCTION} got no callback within "
            f"{PROBE_TIMEOUT:.0f} s (answer: {dict(tally.answers)}); see the logs of the "
            "consumer and of up (--keep keeps them)"
        )


# --- the phases --------------------------------------------------------------------------------


async def _with_cpu(target: Target, work: Awaitable[T]) -> tuple[T, dict[str, float], float]:
    """What `work` returned, the CPU seconds of each role over it, and its wall seconds."""
    before, started = cpu_seconds(target.cpu), time.monotonic()
    result = await work
    after, wall = cpu_seconds(target.cpu), time.monotonic() - started
    return result, {k: after[k] - before[k] for k in after}, wall


@dataclass
class Phases:
    """The phases of one run on one queue, and their records."""

    target: Target
    receiver: load.Receiver
    args: argparse.Namespace
    console: Console
    run: int
    records: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.target.queue:>8} run {self.run}/{self.args.runs}"

    def _prefix(self, phase: str) -> str:
        return f"{self.target.queue}-r{self.run}-{phase}"

    async def _measure(
        self, phase: str, what: str, make: Callable[[], Awaitable[T]]
    ) -> tuple[T, dict[str, Any]]:
        """What the phase returned, and its CPU (per role, seconds) and wall seconds, as
        record()'s keyword arguments."""
        self.target.require_alive()
        span = self.args.warmup + self.args.duration
        with self.console.status(f"{self.label}  {phase}: {what} ({span:g} s + drain)"):
            result, cpu, wall = await _with_cpu(self.target, make())
        return result, {"cpu": cpu, "wall_seconds": wall}

    def _keep(self, phase: str, tally: Tally, **extra: Any) -> dict[str, Any]:
        rec = _async_report.record(self.target.queue, self.run, phase, tally.summary(), **extra)
        self.records.append(rec)
        self.console.print(f"{self.label}  {phase:<13} {describe(rec)}")
        return rec

    async def all(self) -> None:
        a, client, receiver = self.args, self.target.client, self.receiver
        sync_path, async_path = f"/function/{FUNCTION}", f"/async-function/{FUNCTION}"
        tally, cpu = await self._measure(
            "sync",
            f"/function/ closed loop, {a.connections} connections",
            lambda: load.sync_closed(client, sync_path, a.connections, a.warmup, a.duration),
        )
        self._keep("sync", tally, **cpu)
        tally, cpu = await self._measure(
            "async",
            f"/async-function/ closed loop, {a.window} calls in the system",
            lambda: load.async_closed(
                client,
                receiver,
                async_path,
                self._prefix("async"),
                a.window,
                a.warmup,
                a.duration,
                DRAIN_STALL,
            ),
        )
        asynchronous = self._keep("async", tally, **cpu)
        (tally, drained), cpu = await self._measure(
            "enqueue",
            f"/async-function/ closed loop, {a.connections} connections",
            lambda: load.enqueue_closed(
                client,
                receiver,
                async_path,
                self._prefix("enqueue"),
                a.connections,
                a.warmup,
                a.duration,
                DRAIN_STALL,
            ),
        )
        enqueue = self._keep(
            "enqueue", tally, drain_seconds=drained, after_window=tally.completed_after(), **cpu
        )
        # Half the rates this run measured; at least 1 call a second when a phase failed.
        half_enqueue = max(1.0, enqueue["per_second"] / 2)
        half_async = max(1.0, asynchronous["per_second"] / 2)
        await self._open_loop("fixed-enqueue", half_enqueue, async_path, receiver)
        await self._open_loop("fixed-async", half_async, async_path, receiver)
        await self._open_loop("fixed-sync", half_async, sync_path, None)

    async def _open_loop(
        self, phase: str, rate: float, path: str, receiver: load.Receiver | None
    ) -> None:
        a = self.args
        tally, cpu = await self._measure(
            phase,
            f"open loop at {rate:,.0f}/s",
            lambda: load.open_loop(
                self.target.client,
                receiver,
                path,
                self._prefix(phase),
                rate,
                a.warmup,
                a.duration,
                DRAIN_STALL,
            ),
        )
        self._keep(phase, tally, offered_rate=rate, **cpu)


def describe(rec: Mapping[str, Any]) -> str:
    """One progress line of a phase's figures."""

    def ms(key: str) -> str:
        value = rec[key]
        return "-" if value is None else f"{value:.2f}"

    phase = rec["phase"]
    parts = []
    if rec["offered_rate"] is not None:
        parts.append(f"at {rec['offered_rate']:,.0f}/s:")
    else:
        unit = {"sync": "req/s", "async": "calls/s", "enqueue": "202/s"}[phase]
        parts.append(f"{rec['per_second']:>8,.0f} {unit}")
    parts.append(f"answer p50 {ms('answer_p50_ms')} p99 {ms('answer_p99_ms')} ms")
    if rec["callback_p50_ms"] is not None:
        parts.append(f"callback p50 {ms('callback_p50_ms')} p99 {ms('callback_p99_ms')} ms")
    if rec["drain_per_second"] is not None:
        parts.append(
            f"backlog drained in {rec['drain_seconds']:.1f} s ({rec['drain_per_second']:,.0f}/s)"
        )
    if rec["lag_p99_ms"] is not None and rec["lag_p99_ms"] > 1:
        parts.append(f"[yellow]sends late by {rec['lag_p99_ms']:.1f} ms (p99)[/]")
    trouble = [f"{rec[k]} {k}" for k in ("errors", "lost", "duplicates") if rec[k]]
    if trouble:
        parts.append(f"[red]{', '.join(trouble)}[/]")
    return "  ".join(parts)


async def measure(
    targets: Sequence[Target], args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    # A SIGTERM cancels the measurement where it is (a KeyboardInterrupt raised from a signal
    # handler would land in whichever task runs, and could be swallowed by it).
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    records: list[dict[str, Any]] = []
    receiver = load.Receiver()
    url = await receiver.start()
    console.print(f"callbacks go to {url}")
    try:
        for target in targets:
            await probe(target, receiver, console)
        for run in range(1, args.runs + 1):
            order = targets if run % 2 else list(reversed(targets))
            for target in order:
                await Phases(target, receiver, args, console, run, records).all()
    finally:
        await receiver.close()
    return records


# --- the report --------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "runs": args.runs,
        "connections": args.connections,
        "async_window": args.window,
        "queue_concurrency": args.queue_concurrency,
        "queue_max_depth": MAX_DEPTH,
        "queues": ",".join(args.queues),
        "redis": f"appendonly yes, appendfsync {args.redis_fsync}"
        if "redis" in args.queues
        else None,
        "topology": args.topology,
        **({"consumers": ",".join(args.consumers)} if args.topology == "split" else {}),
    }


def topology_of(settings: Mapping[str, Any]) -> str:
    """The topology a report's settings name; reports from before the option are `one`'s."""
    topology = settings.get("topology", "one")
    return topology if topology in TOPOLOGIES else "one"


def notes_of(args: argparse.Namespace, channel: str | None) -> list[str]:
    notes = [
        "The client (faasd_py.http1, the load generator's lean HTTP client, on uvloop) and the "
        "callback receiver (a lean asyncio HTTP/1.1 server, same event loop) run in the "
        "benchmark's process, on the same 2 cores as `up`, its instances and redis-server.",
        "hello: python3-http, the function's default settings (up to 5 instances, "
        "max_inflight 1); `up` with the default channel"
        + (f" ({channel})" if channel else "")
        + ".",
        f"--queue-concurrency {args.queue_concurrency} (up's default is 4): as many async "
        f"calls of hello in flight as the sync closed loop has connections "
        f"({args.connections}), so that both paths may keep every instance busy.",
        f"--queue-max-depth {MAX_DEPTH:,} (default 10,000): the enqueue closed loop outruns "
        "the consumer, and its backlog must not be refused (429).",
        "Embedded queue: SQLite in `up`'s data dir (WAL, synchronous=NORMAL). Redis queue: a "
        f"private redis-server, appendonly yes, appendfsync {args.redis_fsync}"
        + (
            " (a power cut may lose the last second of acknowledged calls; `always` fsyncs "
            "each write)."
            if args.redis_fsync == "everysec"
            else "."
        ),
        f"Async closed loop: {args.window} calls in the system at once; each slot enqueues its "
        "next call when the previous one's callback came. Enqueue closed loop: "
        f"{args.connections} connections, each sends on the 202; the drain rate is the "
        "consumer's with a deep backlog.",
        "Open loops: a request at each due time whatever the earlier ones do; latencies from "
        "the due time. Callback latency: from the enqueue's due time to the callback's arrival.",
        "CPU per call: CPU seconds of each process over the whole phase (warm-up and drain "
        "included) over the calls it completed (200s, or callbacks). Cores busy: those CPU "
        "seconds over the phase's wall seconds (warm-up and drain included).",
    ]
    if args.topology == "split":
        notes += split_notes(args)
    return notes


# Who consumes in the split topology, what that costs the enqueueing `up`, and why.
CONSUMER_NOTES = {
    "up": "Consumer `up`: a second `faasd-py up --queue REDIS --deploy hello` (its consumer on, "
    "a worker and up to 5 hello instances of its own, the same --queue-concurrency, its "
    "consumer's default of at most 1,024 calls held) invokes in its own process: after the 202 "
    "the enqueueing `up` does nothing for an async call, so its event loop answers the "
    "enqueues (and /function/) alone. Chosen over `queue-worker` for that reason: a "
    "queue-worker invokes through the enqueueing up's /function/, so that up's loop would "
    "still parse every async call's invocation and drive its instance, the larger part of "
    "what the in-process consumer cost it. The async calls run on the consumer up's "
    "instances, the sync calls on the enqueueing up's: async / sync compares two pools of "
    "the same size on the same 2 cores.",
    "up-nice": f"Consumer `up-nice`: the consumer `up` started as `nice -n {CONSUMER_NICE} "
    "faasd-py up ...`; its instances inherit the priority. On cores it shares with the "
    "enqueueing `up`, the kernel's scheduler then gives the enqueues and sync calls the CPU "
    "first and the queued work what is left: the deployment README's async section suggests "
    "where consumers and gateways share hosts.",
    "queue-worker": "Consumer `queue-worker`: `faasd-py queue-worker --queue REDIS --gateway "
    "<the enqueueing up> --queue-concurrency N` (it has no --max-held option; its consumer "
    "holds at most 1,024 calls, as up's does, far above N) takes, renews, settles and calls "
    "back in its own process, but invokes through the enqueueing up's /function/: that up's "
    "loop still serves each async call's invocation on its instances (the same pool as sync "
    "calls).",
}


def split_notes(args: argparse.Namespace) -> list[str]:
    return [
        "Split topology: the `up` that answers /async-function/ and /function/ runs "
        "`--no-queue-consumer`; a consumer in a process of its own takes the calls from the "
        "same Redis queue (a database of its own per consumer kind measured). CPU columns: "
        "the enqueueing up's process (gateway, worker) and what runs below it (instances), "
        "the consumer's process and what runs below it, redis-server, the benchmark.",
        *(CONSUMER_NOTES[consumer] for consumer in args.consumers),
    ]


def write_reports(out: Path, report: dict[str, Any], console: Console) -> None:
    """<stem>.json, .md and .png in `out`: async.* for the topology `one`, async-split.*."""
    out.mkdir(parents=True, exist_ok=True)
    records = report["runs"]
    topology = topology_of(report["settings"])
    title, stem = TITLES[topology], STEMS[topology]
    cells = _async_report.summarize(records)
    report["summary"] = [cell.to_json() for cell in cells.values()]
    report["goals"] = [goal.to_json() for goal in _async_report.goals(records)]
    json_path, md_path, png_path = (out / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = _async_report.markdown(
        title, report["machine"], report["settings"], records, report["notes"]
    )
    md_path.write_text(text)
    console.print(f"wrote {json_path} and {md_path}")
    if _async_report.plot(records, title, png_path):
        console.print(f"wrote {png_path}")
    else:
        console.print("[yellow]no plot[/]: matplotlib is not installed (`pip install -e .[bench]`)")
    console.print()
    console.print(text, markup=False, highlight=False)


def rewrite_reports(source: Path, out: Path, console: Console) -> None:
    """Write the markdown and the plot again from a report's JSON, without measuring
    anything."""
    try:
        report = json.loads(source.read_text())
        _ = (report["machine"], report["settings"], report["runs"], report["notes"])
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"cannot read an async report from {source}: {exc}") from None
    write_reports(out, report, console)


def run(args: argparse.Namespace, console: Console) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-async-"))
    try:
        with ExitStack() as stack:
            targets = start_targets(tmp, args, console, stack)
            load_before = os.getloadavg()
            try:
                records = uvloop.run(measure(targets, args, console))
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
            finally:
                # The loop's handler is gone with the loop: SIGTERM must still stop the servers.
                signal.signal(signal.SIGTERM, _report.interrupt_on_sigterm)
            load_after = os.getloadavg()
            channel = targets[0].platform.banner_value("channel")
        machine = {
            **_report.machine_info(_platform.REPO),
            "load_average_1_5_15_min": {
                "before": [round(v, 2) for v in load_before],
                "after": [round(v, 2) for v in load_after],
            },
        }
        report: dict[str, Any] = {
            "benchmark": "async",
            "machine": machine,
            "settings": settings_of(args),
            "notes": notes_of(args, channel),
            "runs": records,
        }
        if args.out is None:
            console.print("[yellow]--quick[/]: a smoke run, no report written (unless --out)")
            console.print(
                _async_report.markdown(
                    TITLES[args.topology], machine, report["settings"], records, report["notes"]
                ),
                markup=False,
                highlight=False,
            )
        else:
            write_reports(args.out, report, console)
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)

    def work() -> None:
        if args.from_json:
            rewrite_reports(args.from_json, args.out or HERE / "results", console)
        else:
            run(args, console)

    return _report.run_main(work, console, (BenchError, ServerError))


if __name__ == "__main__":
    sys.exit(main())
