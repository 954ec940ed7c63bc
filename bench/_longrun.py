"""Long runs against a real `faasd-py up`: steady open-loop load with storage and logs in the
mix (soak.py), and the same load while processes are killed at random (chaos.py).

One function, `kv`, does what real functions do besides computing: each POST writes its body
to `context.storage` under the key in its query, reads it back, and logs a line; a GET returns
the stored value. A 200 to a POST is an acknowledgement: after the run every acknowledged key is
read back, and a missing or different value counts as lost.

The load is open loop at a fixed rate (a request goes out at its scheduled time whatever the
earlier ones are doing; latency counts from that time), at a share of the maximum this client
and this platform reach together, measured first in a short closed-loop burst. Each second the
sampler records `up`'s resident memory, open file descriptors and the instances it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _platform
import _report
import aiohttp
from _procs import ServerError, start_server, wait_until_ok
from rich.console import Console
from rich.markup import escape

HERE = Path(__file__).resolve().parent
KEYS = 20_000  # distinct keys the load writes, round robin
RESULTS = HERE / "results"

STACK_YML = """\
version: 1.0
provider:
  name: openfaas
functions:
  kv:
    lang: python3-http
    handler: ./kv
    image: bench-kv:latest
    environment: {max_inflight: "4", exec_timeout: 10s}
    labels: {com.openfaas.scale.min: "1", com.openfaas.scale.max: "4"}
"""

HANDLER = """\
def handle(event, context):
    if "key" not in event.query:
        return "ok"  # a readiness check
    key = "soak/" + event.query["key"]
    if event.method == "GET":
        value = context.storage.get(key)
        return {"statusCode": 200 if value is not None else 404, "body": value or b""}
    context.storage.put(key, event.body)
    if context.storage.get(key) != event.body:
        return {"statusCode": 500, "body": "read back a different value"}
    print("stored", key, len(event.body))
    return "ok"
"""


@dataclass
class Outcome:
    """One request: when it was due, how long from then until its answer, and what came back."""

    due: float  # seconds since the start of the load
    latency: float
    kind: str  # "200", another status code, or an exception's name


@dataclass
class Sample:
    at: float
    rss_mb: float
    fds: int
    instances: int


@dataclass
class Kill:
    at: float
    target: str  # "instance", "zygote", "up"
    pid: int
    recovered_after: float | None = None  # seconds until the next 200 after it


@dataclass
class LongRun:
    rate: float
    max_rate: float
    duration: float
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    # The last value each key was acknowledged with, and the values of writes to it since
    # that failed (a failed write may still have landed, superseding the acknowledged one).
    acknowledged: dict[str, bytes] = field(default_factory=dict)
    unacknowledged: dict[str, list[bytes]] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)


# --- the platform ------------------------------------------------------------------------------


def write_stack(tmp: Path) -> Path:
    (tmp / "kv").mkdir()
    (tmp / "kv" / "handler.py").write_text(HANDLER)
    stack_file = tmp / "stack.yml"
    stack_file.write_text(STACK_YML)
    return stack_file


def process_tree(root: int) -> list[int]:
    """`root` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def runtimes(root: int) -> dict[str, list[int]]:
    """The runtime processes under `up`: zygotes (started with `--zygote=`; their forks keep
    that command line, but their parent is the zygote) and instances (every other runtime)."""
    found: dict[str, list[int]] = {"zygote": [], "instance": []}
    for pid in process_tree(root):
        line = _cmdline(pid)
        if "faasd_py.runtime" not in line:
            continue
        zygote = "--zygote=" in line and "--zygote=" not in _cmdline(_parent(pid))
        found["zygote" if zygote else "instance"].append(pid)
    return found


def sample(root: int, at: float) -> Sample:
    rss = 0.0
    with contextlib.suppress(OSError):
        for line in (Path("/proc") / str(root) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    try:
        fds = len(os.listdir(f"/proc/{root}/fd"))
    except OSError:
        fds = 0
    return Sample(at, rss, fds, len(runtimes(root)["instance"]))


# --- the load ----------------------------------------------------------------------------------


async def _post(
    session: aiohttp.ClientSession, url: str, key: str, value: bytes
) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        async with session.post(url, params={"key": key}, data=value) as response:
            await response.read()
            return str(response.status), started
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__, started


def _value(rng: random.Random) -> bytes:
    """A value as the load writes them: 64 B, 1 KiB or 16 KiB, random bytes."""
    return rng.randbytes(rng.choice((64, 1024, 16384)))


async def measure_max(url: str, seconds: float, connections: int) -> float:
    """Requests per second this client and the platform reach together, closed loop, with the
    load's own requests (the same sizes and key space)."""
    done = 0
    rng = random.Random(11)
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def loop(worker: int) -> None:
            nonlocal done
            n = worker
            while time.perf_counter() < deadline:
                kind, _ = await _post(session, url, f"k{n % KEYS}", _value(rng))
                n += connections
                done += kind == "200"

        await asyncio.gather(*(loop(w) for w in range(connections)))
    return done / seconds


async def open_loop(
    url: str,
    rate: float,
    duration: float,
    run: LongRun,
    on_tick: Callable[[float], None],
) -> None:
    """POST at `rate` for `duration` seconds, each request at its due time; record each."""
    rng = random.Random(7)
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one(n: int, due: float) -> None:
            # A bounded key space (each key written again after KEYS requests, long after its
            # last write ended): the app stays within its storage quota however long the run.
            key = f"k{n % KEYS}"
            value = _value(rng)
            kind, _ = await _post(session, url, key, value)
            if kind == "200":
                run.acknowledged[key] = value
                run.unacknowledged.pop(key, None)
            else:
                run.unacknowledged.setdefault(key, []).append(value)
            run.outcomes.append(Outcome(due, time.perf_counter() - start - due, kind))

        n, next_tick = 0, 1.0
        while (due := n / rate) < duration:
            now = time.perf_counter() - start
            if due > now:
                await asyncio.sleep(due - now)
            task = asyncio.create_task(one(n, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            if due >= next_tick:
                # The time now, not the due time: a kill is stamped when it happens, so the
                # recovery after it counts from then.
                on_tick(time.perf_counter() - start)
                next_tick += 1.0
        await asyncio.gather(*pending)


async def read_back(url: str, run: LongRun) -> None:
    """Every acknowledged key must read back as written."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        semaphore = asyncio.Semaphore(16)

        async def check(key: str, value: bytes) -> None:
            async with semaphore:
                for _ in range(3):
                    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                        async with session.get(url, params={"key": key}) as response:
                            body = await response.read()
                            if response.status in (200, 404):
                                later = run.unacknowledged.get(key, [])
                                if response.status != 200 or body not in (value, *later):
                                    run.lost.append(key)
                                return
                    await asyncio.sleep(0.5)
                run.lost.append(key)

        await asyncio.gather(*(check(k, v) for k, v in run.acknowledged.items()))


# --- the report --------------------------------------------------------------------------------


def per_minute(outcomes: Sequence[Outcome], width: float = 60.0) -> list[dict[str, Any]]:
    rows: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        rows.setdefault(int(outcome.due // width), []).append(outcome)
    out = []
    for minute, group in sorted(rows.items()):
        ok = sorted(o.latency for o in group if o.kind == "200")
        out.append(
            {
                "from_s": minute * width,
                "requests": len(group),
                "errors": sum(o.kind != "200" for o in group),
                "p50_ms": _percentile(ok, 50) * 1e3 if ok else None,
                "p99_ms": _percentile(ok, 99) * 1e3 if ok else None,
            }
        )
    return out


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def summary(run: LongRun) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for outcome in run.outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    ok = sorted(o.latency for o in run.outcomes if o.kind == "200")
    rss = [s.rss_mb for s in run.samples]
    fds = [s.fds for s in run.samples]
    recovered = [k.recovered_after for k in run.kills if k.recovered_after is not None]
    return {
        "rate": run.rate,
        "max_rate": run.max_rate,
        "duration_s": run.duration,
        "requests": len(run.outcomes),
        "answers_by_kind": dict(sorted(kinds.items())),
        "p50_ms": _percentile(ok, 50) * 1e3 if ok else None,
        "p99_ms": _percentile(ok, 99) * 1e3 if ok else None,
        "rss_mb": {"first": rss[0], "last": rss[-1], "max": max(rss)} if rss else None,
        "fds": {"first": fds[0], "last": fds[-1], "max": max(fds)} if fds else None,
        "acknowledged": len(run.acknowledged),
        "lost": len(run.lost),
        "lost_examples": run.lost[:10],
        "kills": [vars(k) for k in run.kills],
        "recovery_s": {
            "median": statistics.median(recovered),
            "max": max(recovered),
        }
        if recovered
        else None,
        "per_minute": per_minute(run.outcomes),
    }


def write_report(name: str, title: str, run: LongRun, notes: Sequence[str]) -> Path:
    """bench/results/NAME.json, .md and .png."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = _report.machine_info(_platform.REPO)
    data: dict[str, Any] = {
        "title": title,
        "machine": machine,
        "summary": summary(run),
        "notes": list(notes),
    }
    data["samples"] = [vars(s) for s in run.samples]
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    s: dict[str, Any] = data["summary"]
    kinds = ", ".join(f"{k}: {v:,}" for k, v in s["answers_by_kind"].items())
    lines = [*_report.header(title, machine), *notes, ""]
    lines += [
        "| figure | value |",
        "|---|---:|",
        f"| offered rate | {run.rate:,.0f} req/s ({run.rate / run.max_rate:.0%} of the "
        f"{run.max_rate:,.0f} req/s measured) |",
        f"| requests | {s['requests']:,} |",
        f"| answers by kind | {kinds} |",
        f"| p50 / p99 of 200s | {_fmt(s['p50_ms'])} / {_fmt(s['p99_ms'])} ms |",
    ]
    if s["rss_mb"]:
        r, f = s["rss_mb"], s["fds"]
        lines.append(
            f"| up's RSS first / last / max | {r['first']:.0f} / {r['last']:.0f} / "
            f"{r['max']:.0f} MB |"
        )
        lines.append(
            f"| up's open fds first / last / max | {f['first']} / {f['last']} / {f['max']} |"
        )
    lines.append(f"| acknowledged writes / lost | {s['acknowledged']:,} / {s['lost']} |")
    if run.kills:
        by_target: dict[str, int] = {}
        for kill in run.kills:
            by_target[kill.target] = by_target.get(kill.target, 0) + 1
        lines.append(
            "| SIGKILLs | " + ", ".join(f"{t}: {n}" for t, n in sorted(by_target.items())) + " |"
        )
        if s["recovery_s"]:
            lines.append(
                f"| recovery (kill to next 200) median / max | "
                f"{s['recovery_s']['median']:.2f} / {s['recovery_s']['max']:.2f} s |"
            )
    lines += [
        "",
        "Per minute:",
        "",
        "| from | requests | errors | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in s["per_minute"]:
        lines.append(
            f"| {row['from_s']:.0f} s | {row['requests']:,} | {row['errors']:,} | "
            f"{_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} |"
        )
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    _plot(run, title, RESULTS / f"{name}.png")
    return RESULTS / f"{name}.md"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _plot(run: LongRun, title: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    seconds: dict[int, list[Outcome]] = {}
    for outcome in run.outcomes:
        seconds.setdefault(int(outcome.due), []).append(outcome)
    xs = sorted(seconds)
    p99 = []
    for x in xs:
        ok = sorted(o.latency for o in seconds[x] if o.kind == "200")
        p99.append(_percentile(ok, 99) * 1e3 if ok else float("nan"))
    errors = [sum(o.kind != "200" for o in seconds[x]) for x in xs]
    axes[0].plot(xs, p99, lw=0.8, color="tab:blue")
    axes[0].set_ylabel("p99 of 200s (ms)")
    axes[0].set_yscale("log")
    axes[1].bar(xs, errors, width=1.0, color="tab:red")
    axes[1].set_ylabel("errors per second")
    axes[2].plot([s.at for s in run.samples], [s.rss_mb for s in run.samples], color="tab:green")
    axes[2].set_ylabel("up's RSS (MB)")
    twin = axes[2].twinx()
    twin.plot([s.at for s in run.samples], [s.fds for s in run.samples], color="tab:gray", lw=0.8)
    twin.set_ylabel("open fds")
    for kill in run.kills:
        for ax in axes:
            ax.axvline(kill.at, color="black", alpha=0.25, lw=0.8)
    axes[2].set_xlabel("seconds into the run (vertical lines: SIGKILLs)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the driver --------------------------------------------------------------------------------

Chaos = Callable[[float, "Harness"], None]


@dataclass
class Harness:
    """What a run has: the console, the temporary folder, the running platform (which chaos may
    kill and restart), and the record."""

    console: Console
    tmp: Path
    stack_file: Path
    exits: ExitStack
    platform: _platform.RunningPlatform
    run: LongRun
    port: int = 0

    @property
    def url(self) -> str:
        return self.platform.function_url("kv")

    def restart(self) -> None:
        """Start `up` again on the same data dir and port (after it was killed)."""
        data_dir = self.platform.data_dir
        argv = [
            *_platform.faasd_command(),
            "up",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
        ]
        log = self.tmp / f"up-{len(self.run.kills)}.log"
        server = start_server(_platform.NAME, argv, log, cwd=_platform.REPO)
        self.exits.callback(_platform.stop, self.console, server, 25.0, str(self.tmp))
        self.platform = _platform.RunningPlatform(server, self.platform.base_url, data_dir)


def run_long(
    name: str,
    title: str,
    *,
    duration: float,
    share: float,
    chaos: Chaos | None = None,
    notes: Sequence[str] = (),
) -> int:
    """Run it and write its report; the exit status (1: the platform failed, and why). On
    SIGTERM as on Ctrl-C, `up` is stopped before the exit."""
    console = Console(stderr=True)
    signal.signal(signal.SIGTERM, _report.interrupt_on_sigterm)
    try:
        path = _run(name, title, duration, share, chaos, notes, console)
    except ServerError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    console.print(f"report: {path}")
    return 0


def _run(
    name: str,
    title: str,
    duration: float,
    share: float,
    chaos: Chaos | None,
    notes: Sequence[str],
    console: Console,
) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"faasd-{name}-") as tmp_name, ExitStack() as exits:
        tmp = Path(tmp_name)
        stack_file = write_stack(tmp)
        platform = _platform.start(tmp, stack_file, console, exits, ready=[("kv", b"ok")])
        port = int(platform.base_url.rsplit(":", 1)[1])
        console.print(f"measuring the maximum rate for 15 s ({name})")
        max_rate = asyncio.run(measure_max(platform.function_url("kv"), 15.0, 16))
        rate = max(1.0, max_rate * share)
        console.print(
            f"maximum {max_rate:,.0f} req/s; offering {rate:,.0f} req/s for {duration:g} s"
        )
        run = LongRun(rate=rate, max_rate=max_rate, duration=duration)
        harness = Harness(console, tmp, stack_file, exits, platform, run, port)

        def tick(at: float) -> None:
            run.samples.append(sample(harness.platform.server.process.pid, at))
            if chaos is not None:
                chaos(at, harness)
            if int(at) % 30 == 0:
                last = run.outcomes[-500:]
                errors = sum(o.kind != "200" for o in last)
                console.print(
                    f"  {at:5.0f} s: {len(run.outcomes):,} answered, {errors} errors "
                    f"in the last {len(last)}, RSS {run.samples[-1].rss_mb:.0f} MB"
                )

        asyncio.run(open_loop(harness.url, rate, duration, run, tick))
        _mark_recoveries(run)
        if not harness.platform.server.alive:
            harness.restart()
            wait_until_ok(
                harness.platform.server,
                harness.platform.base_url + "/healthz",
                timeout=60,
                expect_body=None,
            )
        console.print(f"reading back {len(run.acknowledged):,} acknowledged writes")
        asyncio.run(read_back(harness.url, run))
        return write_report(name, title, run, notes)


def _mark_recoveries(run: LongRun) -> None:
    """Seconds from each kill to the first 200 of a request due after it."""
    ok_times = sorted(o.due + o.latency for o in run.outcomes if o.kind == "200")
    for kill in run.kills:
        after = next((t for t in ok_times if t > kill.at), None)
        kill.recovered_after = None if after is None else after - kill.at


def kill(harness: Harness, target: str, at: float, rng: random.Random) -> None:
    """SIGKILL one random process of `target` ("instance", "zygote" or "up")."""
    root = harness.platform.server.process.pid
    if target == "up":
        if not harness.platform.server.alive:
            return
        os.kill(root, signal.SIGKILL)
        harness.platform.server.process.wait()
        harness.run.kills.append(Kill(at, target, root))
        harness.restart()
        return
    candidates = runtimes(root)[target]
    if candidates:
        pid = rng.choice(candidates)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            harness.run.kills.append(Kill(at, target, pid))
