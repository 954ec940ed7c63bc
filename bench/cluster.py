"""Several hosts on one machine: the cost of the gateway -> worker hop, throughput with 1, 2
and 3 workers, and the time to recover from a worker's SIGKILL, in one run.

    python bench/cluster.py                      # 3 runs of 5 s phases, 10 kills per lease
    python bench/cluster.py --runs 5 --duration 10 --kills 20
    python bench/cluster.py --parts recovery --leases 2s --kills 3 --out /tmp/r

What it does:

1. starts a private redis-server on a free port (bench/async.py's start_redis); every cluster
   below uses a database of its own there, so that none sees another's workers or placements;
2. hop: `faasd-py up` alone (gateway and worker in one process) and `faasd-py gateway` with one
   `faasd-py worker` over loopback, both with examples/stack.yml's `hello` deployed through the
   API (built once, pushed to the cluster with `faasd-py build --push`); per run, in alternating
   order, a closed loop of 1 connection and one of --connections, with the CPU each process (and
   its children: the instances) spent in the recorded window, per invocation;
3. scaling: per worker count, a gateway and that many workers, three copies of hello in three
   apps (com.faasd-py.app), which placement spreads over the workers; a closed loop of
   --connections spread evenly over the three;
4. recovery: per --leases value, a gateway and two workers with that --lease, hello on one of
   them, a call every --trickle-ms; SIGKILL the worker that hosts hello (its instances too, as
   a host going away takes them), time until the first call sent after the kill succeeds, count
   the calls that failed and how; restart the killed worker; --kills times;
5. writes bench/results/cluster.json, cluster.md and cluster.png.

Instances run with --isolation process everywhere (plain processes: the sandbox's cost is the
same on both sides of the hop and is not what this measures) and --policy none (every function
keeps its instances: no keep-alive decision changes what a phase measures). Every process it
started is stopped at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _args
import _async_load as load
import _cpu
import _platform
import _report
import uvloop
from _async_tally import Tally
from _procs import Server, ServerError, free_port, kill_strays, start_server, wait_until_ok
from rich.console import Console
from rich.markup import escape

from faasd_py.cli._client import Gateway, GatewayOptions
from faasd_py.spec import LABEL_APP, FunctionSpec, load_stack
from faasd_py.units import parse_duration

HERE = Path(__file__).resolve().parent
STACK = _platform.REPO / "examples" / "stack.yml"
FUNCTION = "hello"
APPS = ("a", "b", "c")  # the scaling phase's three apps; hello itself is app "a"
PARTS = ("hop", "scaling", "recovery")
COMMON = ["--isolation", "process", "--policy", "none"]
TITLE = "Cluster: the gateway -> worker hop, 1-3 workers, recovery from a worker's SIGKILL"
# bench/async.py's private redis-server (its module name is a keyword: no `import async`).
_async_bench: Any = importlib.import_module("async")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


# --- the processes under test ------------------------------------------------------------------


def function_name(app: str) -> str:
    return FUNCTION if app == APPS[0] else f"{FUNCTION}-{app}"


def hello_spec(app: str) -> FunctionSpec:
    """examples/stack.yml's hello, named for `app` and labelled with it."""
    spec = load_stack(STACK).select((FUNCTION,))[0].spec
    return replace(spec, service=function_name(app), labels={**spec.labels, LABEL_APP: app})


@dataclass
class Platform:
    """What serves /function/: `up`, or a cluster's gateway and its workers. `nodes` are the
    processes whose CPU is measured, by role."""

    name: str
    base_url: str
    data_dir: Path  # the gateway's (its credentials)
    console: Console
    nodes: dict[str, Server] = field(default_factory=dict)

    def client(self) -> Gateway:
        return GatewayOptions(self.base_url, None, None, self.data_dir, 60.0).client()

    def deploy(self, app: str) -> str:
        """Deploy hello as `app` and wait until it answers; its /function/ path."""
        name = function_name(app)
        self.client().send("POST", "/system/functions", json_body=hello_spec(app).to_json())
        wait_until_ok(self.front, f"{self.base_url}/function/{name}", 180, None)
        return f"/function/{name}"

    @property
    def front(self) -> Server:
        return self.nodes["gateway"] if "gateway" in self.nodes else self.nodes["up"]

    def check_alive(self) -> None:
        for server in self.nodes.values():
            _platform.require_alive(server)


def start_up(tmp: Path, console: Console, stack: ExitStack) -> Platform:
    folder = tmp / "up"
    data_dir = folder / "data"
    folder.mkdir(parents=True)
    _platform.build(STACK, data_dir, folder, console)
    port = free_port()
    argv = [*_platform.faasd_command(), "up", "--port", str(port), "--data-dir", str(data_dir)]
    console.print(f"[bold]up[/]: starting: {escape(' '.join(argv + COMMON))}")
    server = start_server("faasd-py up", argv + COMMON, folder / "up.log", cwd=_platform.REPO)
    stack.callback(_platform.stop, console, server, 25.0, str(folder))
    platform = Platform("up", f"http://127.0.0.1:{port}", data_dir, console, {"up": server})
    wait_until_ok(server, f"{platform.base_url}/healthz", 60, None)
    return platform


@dataclass
class Cluster(Platform):
    """A gateway and workers on this host (loopback), on database `db` of the bench's Redis."""

    redis_url: str = ""
    lease: str = "6s"
    folder: Path = Path()
    ports: dict[str, int] = field(default_factory=dict)

    def start_worker(self, name: str) -> Server:
        """Start (or restart: same name, address and data dir) worker `name`."""
        port = self.ports.setdefault(name, free_port())
        argv = [*_platform.faasd_command(), "worker", "--cluster", self.redis_url]
        argv += ["--cluster-key", str(self.data_dir / "cluster.key"), "--name", name]
        argv += ["--advertise", f"127.0.0.1:{port}", "--lease", self.lease]
        argv += ["--data-dir", str(self.folder / name), *COMMON]
        # A log per start: a restart keeps the killed one's.
        starts = sum(1 for _ in self.folder.glob(f"{name}.*.log"))
        log = self.folder / f"{name}.{starts + 1}.log"
        server = start_server(f"worker {name}", argv, log, cwd=_platform.REPO)
        self.nodes[name] = server
        return server

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and whatever runs below it, as a host going away takes them."""
        server = self.nodes[name]
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        kill_strays(f"{self.folder / name}/")

    def view(self) -> dict[str, Any]:
        """/system/cluster: the live workers and the placements."""
        answer: dict[str, Any] = json.loads(self.client().send("GET", "/system/cluster").body)
        return answer

    def wait_workers(self, count: int, timeout: float = 60.0) -> None:
        loop_until(
            lambda: len(self.view()["workers"]) == count,
            timeout,
            f"{count} live workers in {self.base_url}/system/cluster",
            self,
        )

    def stop_all(self) -> None:
        for server in reversed(list(self.nodes.values())):
            _platform.stop(self.console, server, 20.0)
        kill_strays(str(self.folder) + "/")


def loop_until(ready: Any, timeout: float, what: str, platform: Platform) -> None:
    """Poll `ready()` every 0.1 s; BenchError naming `what` after `timeout` seconds."""
    deadline = load.clock() + timeout
    while not ready():
        platform.check_alive()
        if load.clock() > deadline:
            raise BenchError(
                f"no {what} within {timeout:.0f} s; logs in {platform.data_dir.parent}"
            )
        time.sleep(0.1)


def start_cluster(
    tmp: Path,
    name: str,
    redis_url: str,
    workers: int,
    lease: str,
    console: Console,
    stack: ExitStack,
) -> Cluster:
    """A gateway and `workers` workers on `redis_url`, hello built and pushed there."""
    folder = tmp / name
    data_dir = folder / "gateway"
    folder.mkdir(parents=True)
    port = free_port()
    argv = [*_platform.faasd_command(), "gateway", "--cluster", redis_url]
    argv += ["--port", str(port), "--data-dir", str(data_dir)]
    console.print(f"[bold]{name}[/]: starting: {escape(' '.join(argv))}")
    gateway = start_server(f"{name} gateway", argv, folder / "gateway.log", cwd=_platform.REPO)
    cluster = Cluster(name, f"http://127.0.0.1:{port}", data_dir, console, {"gateway": gateway})
    cluster.redis_url, cluster.lease, cluster.folder = redis_url, lease, folder
    stack.callback(cluster.stop_all)
    wait_until_ok(gateway, f"{cluster.base_url}/healthz", 60, None)
    for index in range(workers):
        cluster.start_worker(f"w{index + 1}")
    console.print(f"[bold]{name}[/]: {workers} worker(s), --lease {lease}, {' '.join(COMMON)}")
    cluster.wait_workers(workers)
    push = [*_platform.faasd_command(), "build", "-f", str(STACK), FUNCTION, "--push"]
    push += ["--cluster", redis_url, "--data-dir", str(tmp / "build")]
    done = subprocess.run(push, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BenchError(f"`{' '.join(push)}` exited {done.returncode}:\n{done.stderr[-2000:]}")
    return cluster


# --- CPU and closed loops ----------------------------------------------------------------------


def cpu_now(platform: Platform, redis: Server) -> dict[str, float]:
    """CPU seconds so far: each node's own and its children's (instances), redis-server's and
    this process's (the load generator)."""
    seconds: dict[str, float] = {}
    for role, server in platform.nodes.items():
        sample = _cpu.sample(server.process.pid)
        seconds[role] = sample.platform_s
        seconds[f"{role}.children"] = sample.descendants_s
    seconds["redis"] = _cpu.sample(redis.process.pid).platform_s
    own = resource.getrusage(resource.RUSAGE_SELF)
    seconds["bench"] = own.ru_utime + own.ru_stime
    return seconds


async def cpu_window(
    platform: Platform, redis: Server, warmup: float, duration: float
) -> dict[str, float]:
    """CPU seconds each spent in the recorded window (the warm-up left out)."""
    await asyncio.sleep(warmup)
    before = cpu_now(platform, redis)
    await asyncio.sleep(duration)
    after = cpu_now(platform, redis)
    return {k: after[k] - before.get(k, 0.0) for k in after}


def merged(tallies: Sequence[Tally]) -> Tally:
    """One tally of closed loops run side by side over the same window."""
    total = Tally(tallies[0].start, tallies[0].end, tallies[0].expected_status)
    for tally in tallies:
        total.answers.update(tally.answers)
        total.successes += tally.successes
        total.request_latency.merge(tally.request_latency)
    return total


@dataclass
class Load:
    client: load.Client
    redis: Server
    args: argparse.Namespace
    console: Console
    records: list[dict[str, Any]]

    async def closed(
        self, part: str, platform: Platform, variant: str, paths: Sequence[str], connections: int
    ) -> None:
        """`connections` closed loops spread over `paths`; a record with CPU per call."""
        platform.check_alive()
        a = self.args
        shares = [
            connections // len(paths) + (i < connections % len(paths)) for i in range(len(paths))
        ]
        cpu = asyncio.create_task(cpu_window(platform, self.redis, a.warmup, a.duration))
        tallies = await asyncio.gather(
            *(
                load.sync_closed(self.client, path, n, a.warmup, a.duration)
                for path, n in zip(paths, shares, strict=True)
                if n
            )
        )
        seconds = await cpu
        summary = merged(tallies).summary()
        calls = summary["answers"].get("200", 0)
        rec = {
            "part": part,
            "variant": variant,
            "connections": connections,
            "rps": summary["answers_per_second"],
            "p50_ms": summary["request"]["p50_ms"] or 0.0,
            "p99_ms": summary["request"]["p99_ms"] or 0.0,
            "errors": summary["errors"],
            "answers": summary["answers"],
            "calls": calls,
            "cpu_s": seconds,
            "cpu_us_per_call": {k: v / calls * 1e6 if calls else None for k, v in seconds.items()},
        }
        self.records.append(rec)
        self.console.print(f"{part:>8} {variant:<16} c={connections:<3} {describe(rec)}")


def process_cpu(rec: Mapping[str, Any]) -> dict[str, float]:
    """µs of CPU per call of each node with its children; the redis-server and bench apart."""
    per = rec["cpu_us_per_call"]
    if not rec["calls"]:
        return {}
    nodes = [k for k in per if "." not in k and k not in ("redis", "bench")]
    return {k: per[k] + per[f"{k}.children"] for k in nodes}


def describe(rec: Mapping[str, Any]) -> str:
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in process_cpu(rec).items())
    errors = f"  [red]{rec['errors']} errors: {rec['answers']}[/]" if rec["errors"] else ""
    return (
        f"{rec['rps']:>8,.0f} req/s  p50 {rec['p50_ms']:.2f} p99 {rec['p99_ms']:.2f} ms  "
        f"CPU µs/call: {cpu}{errors}"
    )


# --- recovery ----------------------------------------------------------------------------------


@dataclass
class Trickle:
    """A call every `interval` seconds, one at a time; (sent, answered, status) of each."""

    client: load.Client
    path: str
    interval: float
    calls: list[tuple[float, float, str]] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        data = self.client.request(self.path)
        while self.running:
            sent = load.clock()
            kind = await self.client.send(data)
            self.calls.append((sent, load.clock(), kind))
            await asyncio.sleep(max(0.0, sent + self.interval - load.clock()))

    def steady(self, seconds: float) -> bool:
        """Every call answered in the last `seconds` succeeded (and there were some)."""
        since = load.clock() - seconds
        recent = [kind for sent, _, kind in self.calls if sent >= since]
        return len(recent) >= 3 and all(kind == "200" for kind in recent)

    def recovered(self, killed: float) -> float | None:
        """Seconds from the kill to the answer of the first call sent after it that succeeded."""
        return next((at - killed for s, at, k in self.calls if s >= killed and k == "200"), None)

    def has_recovered(self, killed: float) -> bool:
        return self.recovered(killed) is not None

    def failures(self, killed: float, until: float) -> Counter[str]:
        return Counter(k for _, at, k in self.calls if killed <= at <= until and k != "200")


async def poll(ready: Callable[[], bool], seconds: float, what: str) -> None:
    """Wait until `ready()`, checking every 50 ms; BenchError naming `what` after `seconds`."""
    deadline = load.clock() + seconds
    while not ready():
        if load.clock() > deadline:
            raise BenchError(f"no {what} within {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def recovery(
    cluster: Cluster, args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    """--kills kills of the worker hosting hello, under a trickle of calls."""
    client = load.Client(cluster.base_url)
    trickle = Trickle(client, f"/function/{FUNCTION}", args.trickle_ms / 1e3)
    task = asyncio.create_task(trickle.run())
    lease_s = parse_duration(cluster.lease)
    kills: list[dict[str, Any]] = []

    try:
        for number in range(1, args.kills + 1):
            await poll(lambda: trickle.steady(1.0), 120, "steady successful calls")
            view = await asyncio.to_thread(cluster.view)
            host = view["placements"][APPS[0]][0]
            killed = load.clock()
            await asyncio.to_thread(cluster.kill_worker, host)
            back = functools.partial(trickle.has_recovered, killed)
            await poll(back, lease_s * 3 + 60, f"successful call after killing {host}")
            took = trickle.recovered(killed)
            assert took is not None
            failed = trickle.failures(killed, killed + took)
            moved_to = (await asyncio.to_thread(cluster.view))["placements"][APPS[0]]
            kills.append(
                {
                    "lease": cluster.lease,
                    "kill": number,
                    "killed": host,
                    "moved_to": moved_to,
                    "recovery_s": took,
                    "failed_calls": sum(failed.values()),
                    "failed_statuses": dict(failed),
                }
            )
            console.print(
                f"recovery lease {cluster.lease} kill {number}/{args.kills}: killed {host}, "
                f"first success after {took:.2f} s (on {', '.join(moved_to)}), "
                f"{sum(failed.values())} failed calls {dict(failed)}"
            )
            await asyncio.to_thread(cluster.start_worker, host)
            await asyncio.to_thread(cluster.wait_workers, 2)
    finally:
        trickle.running = False
        await task
        client.close()
    return kills


# --- the run -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first (1)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every phase (3)")
    parser.add_argument("--connections", type=int, default=16, help="of the loaded phases (16)")
    parser.add_argument(
        "--workers", type=_args.int_list, default=[1, 2, 3], help="worker counts (1,2,3)"
    )
    parser.add_argument("--kills", type=int, default=10, help="worker kills per lease (10)")
    parser.add_argument(
        "--leases",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=["6s", "2s"],
        help="the workers' --lease in the recovery part, one cluster each (6s,2s)",
    )
    parser.add_argument(
        "--trickle-ms", type=float, default=50.0, help="ms between recovery calls (50)"
    )
    parser.add_argument(
        "--parts", type=_args.choice_list(PARTS), default=list(PARTS), help="hop,scaling,recovery"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="report folder (bench/results)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.runs < 1 or args.connections < 1 or args.kills < 1:
        parser.error("--duration must be at least 1 s; --runs, --connections, --kills >= 1")
    for lease in args.leases:
        try:
            parse_duration(lease)
        except ValueError as exc:
            parser.error(f"--leases: {exc}")
    return args


@dataclass
class Bench:
    tmp: Path
    args: argparse.Namespace
    console: Console
    redis: Server
    redis_base: str  # redis://127.0.0.1:PORT
    records: list[dict[str, Any]] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    placements: dict[str, Any] = field(default_factory=dict)
    _db: int = 0

    def cluster(self, name: str, workers: int, lease: str, stack: ExitStack) -> Cluster:
        self._db += 1
        url = f"{self.redis_base}/{self._db}"
        return start_cluster(self.tmp, name, url, workers, lease, self.console, stack)

    def loader(self, client: load.Client) -> Load:
        return Load(client, self.redis, self.args, self.console, self.records)

    async def hop(self) -> None:
        """up alone against gateway + 1 worker: 1 and --connections on hello; on the cluster
        also --connections over three apps (the scaling part's 1 worker)."""
        a = self.args
        with ExitStack() as stack:
            up = start_up(self.tmp, self.console, stack)
            one = self.cluster("cluster-1", 1, "6s", stack)
            paths = [one.deploy(app) for app in APPS]
            targets = [(up, [up.deploy(APPS[0])]), (one, paths[:1])]
            self.placements["1"] = one.view()["placements"]
            clients = {p.name: load.Client(p.base_url) for p, _ in targets}
            try:
                for run in range(1, a.runs + 1):
                    self.console.print(f"[bold]hop, run {run}/{a.runs}[/]")
                    for platform, hello in targets if run % 2 else reversed(targets):
                        variant = "up" if platform is up else "gateway+worker"
                        loader = self.loader(clients[platform.name])
                        for connections in (1, a.connections):
                            await loader.closed("hop", platform, variant, hello, connections)
                    if 1 in a.workers and "scaling" in a.parts:
                        await self.loader(clients[one.name]).closed(
                            "scaling", one, "1 worker(s)", paths, a.connections
                        )
            finally:
                for client in clients.values():
                    client.close()

    async def scaling(self) -> None:
        for count in self.args.workers:
            if count == 1 and "hop" in self.args.parts:
                continue  # measured beside the hop, on the same cluster
            with ExitStack() as stack:
                cluster = self.cluster(f"cluster-{count}", count, "6s", stack)
                paths = [cluster.deploy(app) for app in APPS]
                self.placements[str(count)] = cluster.view()["placements"]
                self.console.print(f"placements: {self.placements[str(count)]}")
                client = load.Client(cluster.base_url)
                try:
                    for run in range(1, self.args.runs + 1):
                        self.console.print(f"[bold]scaling {count} workers, run {run}[/]")
                        await self.loader(client).closed(
                            "scaling", cluster, f"{count} worker(s)", paths, self.args.connections
                        )
                finally:
                    client.close()

    async def recovery(self) -> None:
        for lease in self.args.leases:
            with ExitStack() as stack:
                cluster = self.cluster(f"recovery-{lease}", 2, lease, stack)
                cluster.deploy(APPS[0])
                self.kills += await recovery(cluster, self.args, self.console)

    async def all(self) -> None:
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        if "hop" in self.args.parts:
            await self.hop()
        if "scaling" in self.args.parts:
            await self.scaling()
        if "recovery" in self.args.parts:
            await self.recovery()


def run(args: argparse.Namespace, console: Console) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-cluster-"))
    try:
        with ExitStack() as stack:
            redis, url = _async_bench.start_redis(tmp / "redis", "everysec", console, stack)
            bench = Bench(tmp, args, console, redis, url.rsplit("/", 1)[0])
            load_before = os.getloadavg()
            try:
                uvloop.run(bench.all())
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
            finally:
                signal.signal(signal.SIGTERM, _report.interrupt_on_sigterm)
            load_after = os.getloadavg()
        machine = {
            **_report.machine_info(_platform.REPO),
            "load_average_1_5_15_min": {
                "before": [round(v, 2) for v in load_before],
                "after": [round(v, 2) for v in load_after],
            },
        }
        report = {
            "benchmark": "cluster",
            "machine": machine,
            "settings": settings_of(args),
            "runs": bench.records,
            "placements": bench.placements,
            "kills": bench.kills,
        }
        write_reports(args.out, report, console)
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "runs": args.runs,
        "connections": args.connections,
        "workers": ",".join(map(str, args.workers)),
        "kills_per_lease": args.kills,
        "leases": ",".join(args.leases),
        "trickle_ms": args.trickle_ms,
        "parts": ",".join(args.parts),
        "instances": " ".join(COMMON),
    }


# --- the report --------------------------------------------------------------------------------


def medians(records: Sequence[Mapping[str, Any]], duration: float) -> list[dict[str, Any]]:
    """Per (part, variant, connections): medians over runs of throughput, latency and CPU."""
    groups: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["part"], rec["variant"], rec["connections"]), []).append(rec)
    rows = []
    for (part, variant, connections), group in groups.items():
        cpu = [process_cpu(r) for r in group]
        seconds = [r["cpu_s"] for r in group]
        rows.append(
            {
                "part": part,
                "variant": variant,
                "connections": connections,
                "runs": len(group),
                **{f: statistics.median(r[f] for r in group) for f in _report.FIGURES},
                "errors": sum(r["errors"] for r in group),
                "cpu_us_per_call": {
                    k: statistics.median(c.get(k, 0.0) for c in cpu) for k in cpu[0]
                },
                # CPU seconds per second of the window: how many cores each kept busy.
                "cores": {
                    k: statistics.median(s[k] for s in seconds) / duration for k in seconds[0]
                },
            }
        )
    return rows


def _us(cpu: Mapping[str, float], role: str) -> str:
    return f"{cpu[role]:.0f}" if role in cpu else "-"


def hop_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| variant | connections | req/s | p50 ms | p99 ms | CPU µs/call: up | gateway | worker "
        "| total | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=lambda r: (r["connections"], r["variant"] != "up")):
        cpu = row["cpu_us_per_call"]
        lines.append(
            f"| {row['variant']} | {row['connections']} | {row['rps']:,.0f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {_us(cpu, 'up')} "
            f"| {_us(cpu, 'gateway')} | {_us(cpu, 'w1')} | {sum(cpu.values()):.0f} "
            f"| {row['errors']} |"
        )
    return lines


def scaling_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| workers | req/s | p50 ms | p99 ms | CPU µs/call: gateway | each worker (with its "
        "instances) | cores busy: gateway | workers | errors |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        cpu = row["cpu_us_per_call"]
        workers = {k: v for k, v in cpu.items() if k != "gateway"}
        busy = row["cores"]
        worker_cores = sum(v for k, v in busy.items() if k.startswith("w"))
        gateway_cores = busy["gateway"] + busy["gateway.children"]
        lines.append(
            f"| {row['variant']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {_us(cpu, 'gateway')} | {', '.join(f'{k} {v:.0f}' for k, v in workers.items())} "
            f"| {gateway_cores:.2f} | {worker_cores:.2f} | {row['errors']} |"
        )
    return lines


def recovery_table(kills: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| lease | kills | recovery p50 s | max s | min s | failed calls (median, max) "
        "| failed answers |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for lease in dict.fromkeys(k["lease"] for k in kills):
        mine = [k for k in kills if k["lease"] == lease]
        times = [k["recovery_s"] for k in mine]
        failed = [k["failed_calls"] for k in mine]
        statuses: Counter[str] = Counter()
        for k in mine:
            statuses.update(k["failed_statuses"])
        lines.append(
            f"| {lease} | {len(mine)} | {statistics.median(times):.2f} | {max(times):.2f} "
            f"| {min(times):.2f} | {statistics.median(failed):g}, {max(failed)} "
            f"| {', '.join(f'{s}: {n}' for s, n in statuses.most_common())} |"
        )
    return lines


def markdown(report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    settings = report["settings"]
    lines = [
        *_report.header(TITLE, report["machine"]),
        ", ".join(f"{k}: {v}" for k, v in settings.items()),
        "",
        "Medians over runs. CPU µs per call: CPU seconds each process and its children "
        "(the instances) spent in the recorded window (utime + stime from /proc/PID/stat), over "
        "the calls answered 200 in it. Everything runs on this one machine: the load generator "
        "(faasd_py.http1 on uvloop, in the benchmark's process), redis-server, the gateway, the "
        "workers and their instances share its cores.",
    ]
    hop = [r for r in rows if r["part"] == "hop"]
    if hop:
        lines += [
            "",
            "## The hop: `faasd-py up` alone vs `faasd-py gateway` + `faasd-py worker` (loopback)",
            "",
            *hop_table(hop),
        ]
        lines += hop_notes(hop)
    scaling = [r for r in rows if r["part"] == "scaling"]
    if scaling:
        lines += [
            "",
            f"## Throughput with 1, 2, 3 workers ({settings['connections']} connections over "
            "three apps)",
            "",
            *scaling_table(scaling),
            "",
            "Placements (app: workers): "
            + "; ".join(f"{n} worker(s): {p}" for n, p in report["placements"].items()),
            "",
            f"The machine has {report['machine']['cores']} cores: the sum cannot grow much "
            "when the workers share them with the gateway and the load generator. The CPU "
            "per call of each worker shows what one host would need: on hosts of their own, "
            "each worker's share of the calls runs on its own cores and the gateway is the part "
            "all calls cross.",
        ]
    if report["kills"]:
        lines += [
            "",
            "## Recovery after a worker's SIGKILL (two workers, hello on one of them)",
            "",
            *recovery_table(report["kills"]),
            "",
            f"A call every {settings['trickle_ms']:g} ms, one at a time; the worker hosting hello "
            "and its instances are SIGKILLed; recovery is the time from the kill to the answer "
            "of the first call sent after it that succeeded, failed calls those answered "
            "otherwise in between (a status, or the client's error). The killed worker is "
            "restarted (same name and address) before the next kill, so the app alternates "
            "between the two. The bound: the worker's lease (its apps are placed elsewhere once "
            "it expires) plus a cold start of the function on the other worker; until then calls "
            "fail fast (502 naming the worker) instead of waiting. Times well below the lease "
            "mean the gateway re-placed the app before the lease ran out.",
        ]
    return "\n".join(lines) + "\n"


def hop_notes(hop: Sequence[Mapping[str, Any]]) -> list[str]:
    """The added latency and CPU of the hop, per connection count."""
    by = {(r["variant"], r["connections"]): r for r in hop}
    notes = [""]
    for connections in sorted({r["connections"] for r in hop}):
        up, remote = by.get(("up", connections)), by.get(("gateway+worker", connections))
        if up is None or remote is None:
            continue
        added = sum(remote["cpu_us_per_call"].values()) - sum(up["cpu_us_per_call"].values())
        notes.append(
            f"- {connections} connection(s): the hop adds "
            f"{remote['p50_ms'] - up['p50_ms']:+.2f} ms at p50, "
            f"{remote['p99_ms'] - up['p99_ms']:+.2f} ms at p99, {added:+.0f} µs of CPU per "
            f"call, and throughput is {remote['rps'] / up['rps']:.2f}x up's."
        )
    return notes


def plot(rows: Sequence[Mapping[str, Any]], kills: Sequence[Mapping[str, Any]], path: Path) -> bool:
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    hop = sorted(
        (r for r in rows if r["part"] == "hop"), key=lambda r: (r["connections"], r["variant"])
    )
    labels = [f"{r['variant']}\n{r['connections']} conn" for r in hop]
    bottom = [0.0] * len(hop)
    for role in ("up", "gateway", "w1"):
        values = [r["cpu_us_per_call"].get(role, 0.0) for r in hop]
        axes[0].bar(labels, values, bottom=bottom, label=role)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes[0].set_ylabel("CPU µs per call (with children)")
    axes[0].set_title("the hop: CPU per call")
    axes[0].legend()
    scaling = [r for r in rows if r["part"] == "scaling"]
    counts = [int(r["variant"].split()[0]) for r in scaling]
    axes[1].plot(counts, [r["rps"] for r in scaling], marker="o", label="req/s")
    axes[1].set_xticks(counts)
    axes[1].set_xlabel("workers")
    axes[1].set_ylabel("requests per second (median)")
    axes[1].set_title("throughput, three apps")
    for lease in dict.fromkeys(k["lease"] for k in kills):
        times = [k["recovery_s"] for k in kills if k["lease"] == lease]
        axes[2].plot(range(1, len(times) + 1), times, marker="o", label=f"--lease {lease}")
    axes[2].set_xlabel("kill")
    axes[2].set_ylabel("seconds to the first success")
    axes[2].set_title("recovery after SIGKILL")
    axes[2].legend()
    for axis in axes:
        axis.grid(True, alpha=0.25)
    fig.suptitle(TITLE)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_reports(out: Path, report: dict[str, Any], console: Console) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = medians(report["runs"], report["settings"]["duration_s"])
    report["summary"] = rows
    (out / "cluster.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, rows)
    (out / "cluster.md").write_text(text)
    console.print(f"wrote {out / 'cluster.json'} and {out / 'cluster.md'}")
    if plot(rows, report["kills"], out / "cluster.png"):
        console.print(f"wrote {out / 'cluster.png'}")
    console.print()
    console.print(text, markup=False, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    return _report.run_main(lambda: run(args, console), console, (BenchError, ServerError))


if __name__ == "__main__":
    sys.exit(main())
