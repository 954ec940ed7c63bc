"""Warm invocations: faasd-py's `/function/hello` against other servers of the same body, under wrk.

    python bench/warm.py                     # or: make bench-warm
    python bench/warm.py --duration 5 --runs 1 --connections 1,16

What it does, all in one run (issue 14's instrument):

1. installs wrk from Debian packages if it is missing;
2. builds a one-function stack (`hello`, python3-http, answers "hello") and starts
   `faasd-py up --deploy` with it twice: the shm channel (sandboxed, the default) and
   `--channel net` (HTTP over a veth, on a bridge of this run's own);
3. starts the baselines: a bare aiohttp server on uvloop (bench/_bare_server.py) and what
   users run today, the OpenFaaS python3-http template's Flask app served by waitress
   (bench/_warm_flask.py, no of-watchdog);
4. drives each with `wrk --latency` at each connection count (threads = min(connections, 2)),
   a short unrecorded warm-up first, then the runs, alternating between the servers so that
   drift on the machine hits all alike; around each run it reads the CPU the server's
   processes spent (/proc: user + system of the process and all its descendants, so faasd-py's
   sandboxed instances count) and wrk's own (rusage of the waited-for child);
5. at 16 connections, faasd-py (shm) pinned to one core (wrk on the other) against both;
6. writes bench/results/warm.json (the machine, every run, medians, issue 14's goals met or
   missed), warm.md (the tables) and warm.png (throughput and p99 against connections).

Every server is stopped at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _args
import _cpu
import _platform
import _report
import _warm_report as wr
from _procs import Server, ServerError, free_port, start_server, wait_until_ok
from _wrk import WrkError, WrkResult, ensure_wrk, run_wrk, write_script, wrk_version
from rich.console import Console
from rich.markup import escape

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUBJECT = wr.SUBJECT
BASELINE = wr.BARE
BODY = b"hello"

STACK_YML = """\
version: 1.0
provider:
  name: openfaas
functions:
  hello:
    lang: python3-http
    handler: ./hello
    image: bench-hello:latest
"""

HANDLER_PY = """\
def handle(event, context):
    return {"statusCode": 200, "body": "hello"}
"""


class BenchError(Exception):
    """The benchmark cannot go on; the message says why and what to look at."""


@dataclass(frozen=True)
class Target:
    variant: str
    url: str
    server: Server


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Warm-invocation benchmark: faasd-py (shm and net) against bare aiohttp and "
        "the python3-http template's Flask/waitress app (wrk), with server CPU per request.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant and count (3)")
    parser.add_argument(
        "--connections",
        type=_args.int_list,
        default=[1, 16, 64],
        help="comma-separated connection counts (1,16,64)",
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="unrecorded seconds before each count (2)"
    )
    parser.add_argument(
        "--variants",
        type=_args.choice_list(wr.VARIANTS),
        default=list(wr.VARIANTS),
        help=f"which servers to drive: {','.join(wr.VARIANTS)} (all)",
    )
    parser.add_argument(
        "--no-scaling",
        dest="scaling",
        action="store_false",
        help="skip faasd-py pinned to one core against two (at 16 connections)",
    )
    parser.add_argument(
        "--stack",
        type=Path,
        help="deploy this stack file instead of the built-in one (the body is not checked)",
    )
    parser.add_argument("--function", default="hello", help="function to invoke (hello)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="report folder (bench/results)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (logs, data dir)"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="WARM_JSON",
        help="measure nothing: write the markdown and the plot again from this warm.json",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.runs < 1:
        parser.error("--duration must be at least 1 second and --runs at least 1")
    return args


def write_stack(folder: Path) -> Path:
    (folder / "hello").mkdir(parents=True)
    (folder / "hello" / "handler.py").write_text(HANDLER_PY)
    stack = folder / "stack.yml"
    stack.write_text(STACK_YML)
    return stack


def net_args() -> list[str]:
    """`up --channel net` on a bridge and subnet of this run's own, so that it meets no other
    faasd-py on the host (a bridge name has at most 15 characters)."""
    tag = os.getpid() % 250
    return [
        "--channel",
        "net",
        "--net-bridge",
        f"fdwarm{os.getpid() % 100000}",
        "--net-subnet",
        f"10.{200 + tag // 50}.{tag % 50 * 4}.0/22",
    ]


def start_faasd(
    tmp: Path,
    args: argparse.Namespace,
    console: Console,
    stack: ExitStack,
    variant: str = SUBJECT,
) -> Target:
    folder = tmp / variant.replace(" ", "-")
    folder.mkdir(parents=True)
    stack_file = args.stack.resolve() if args.stack else write_stack(folder / "functions")
    body = None if args.stack else BODY
    up_args = net_args() if variant == wr.NET else []
    running = _platform.start(
        folder, stack_file, console, stack, up_args=up_args, ready=[(args.function, body)]
    )
    return Target(variant, running.function_url(args.function), running.server)


def start_script(
    tmp: Path, args: argparse.Namespace, console: Console, stack: ExitStack, variant: str
) -> Target:
    """A baseline served by a script of bench/ (the bare aiohttp one, or Flask/waitress)."""
    script = "_bare_server.py" if variant == BASELINE else "_warm_flask.py"
    port = free_port()
    argv = [sys.executable, str(HERE / script), "--port", str(port)]
    console.print(f"[bold]{variant}[/]: starting: {escape(' '.join(argv))}")
    server = start_server(variant, argv, tmp / f"{variant}.log")
    stack.callback(_platform.stop, console, server, 5.0)
    url = f"http://127.0.0.1:{port}/function/{args.function}"
    wait_until_ok(server, url, timeout=30, expect_body=BODY)
    console.print(f"[bold]{variant}[/]: {url} answers 200")
    return Target(variant, url, server)


def drive(
    target: Target,
    connections: int,
    seconds: float,
    wrk: str,
    script: Path,
    wrk_cpus: str | None = None,
) -> WrkResult:
    """wrk against a target, threads = min(connections, 2)."""
    return run_wrk(
        wrk,
        target.url,
        connections=connections,
        threads=min(connections, 2),
        seconds=seconds,
        script=script,
        cpus=wrk_cpus,
    )


def measured_run(
    target: Target,
    variant: str,
    connections: int,
    k: int,
    args: argparse.Namespace,
    wrk: str,
    script: Path,
    wrk_cpus: str | None = None,
) -> dict[str, Any]:
    """One recorded wrk run, with the CPU the server, wrk and the machine spent in its window."""
    _platform.require_alive(target.server)
    pid = target.server.process.pid
    before, busy = _cpu.sample(pid), _cpu.machine_busy_s()
    result = drive(target, connections, args.duration, wrk, script, wrk_cpus)
    cpu, busy = _cpu.sample(pid).minus(before), _cpu.machine_busy_s() - busy
    return wr.record(
        variant,
        connections,
        k,
        result.to_json(),
        server_cpu_s=cpu.platform_s + cpu.descendants_s,
        wrk_cpu_s=cpu.generator_s,
        machine_busy_s=busy,
        threads=min(connections, 2),
    )


def _say(console: Console, label: str, run: dict[str, Any]) -> None:
    warn = f"  [red]{run['errors']} errors[/]" if run["errors"] else ""
    console.print(
        f"{label}: {run['rps']:>9,.0f} req/s  p50 {run['p50_ms']:7.3f} ms  "
        f"p99 {run['p99_ms']:7.3f} ms  server {run['cpu_us']:6.0f} µs/req  "
        f"({run['server_cores']:.2f} cores, wrk {run['wrk_cores']:.2f}){warn}"
    )


def measure(
    targets: Sequence[Target], args: argparse.Namespace, wrk: str, script: Path, console: Console
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for connections in args.connections:
        if args.warmup > 0:
            for target in targets:
                with console.status(f"{target.variant}: warming up at {connections} connections"):
                    drive(target, connections, args.warmup, wrk, script)
        for k in range(1, args.runs + 1):
            for target in targets:
                label = f"{target.variant:>14}  {connections:>3} connections  run {k}/{args.runs}"
                with console.status(f"{label}  ({args.duration:.0f} s)"):
                    run = measured_run(target, target.variant, connections, k, args, wrk, script)
                _say(console, label, run)
                runs.append(run)
    return runs


def measure_scaling(
    target: Target, args: argparse.Namespace, wrk: str, script: Path, console: Console
) -> list[dict[str, Any]]:
    """faasd-py at 16 connections bound to one core (wrk on another) and to every core,
    alternating; [] on a machine with one core."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        console.print("[yellow]one core only[/]: no 1-core against 2-core runs")
        return []
    pid, runs = target.server.process.pid, []
    try:
        for k in range(1, args.runs + 1):
            for variant in (wr.ONE_CORE, wr.TWO_CORES):
                one = variant == wr.ONE_CORE
                # Bound again before each run: instances started since inherit it from their
                # zygote, but not from a process started before it was bound.
                _cpu.pin(pid, {cores[0]} if one else set(cores))
                wrk_cpus = ",".join(map(str, cores[1:])) if one else None
                label = f"{variant:>16}  16 connections  run {k}/{args.runs}"
                with console.status(f"{label}  ({args.duration:.0f} s)"):
                    run = measured_run(target, variant, 16, k, args, wrk, script, wrk_cpus)
                _say(console, label, run)
                runs.append({**run, "server_cpus": 1 if one else len(cores)})
    finally:
        _cpu.pin(pid, set(cores))
    return runs


def write_reports(report: dict[str, Any], out: Path, console: Console) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cells = wr.summarize(report["runs"])
    scaling = wr.summarize(report.get("scaling_runs", []))
    report = {
        **report,
        "summary": [c.to_json() for c in cells],
        "scaling_summary": [c.to_json() for c in scaling],
        "goals": [g.to_json() for g in wr.goals([*cells, *scaling])],
    }
    (out / "warm.json").write_text(json.dumps(report, indent=2) + "\n")
    title = "Warm invocations: faasd-py against bare aiohttp and the python3-http template"
    header = _report.header(title, report["machine"])
    text = wr.markdown(header, report["settings"], cells, scaling, report["notes"])
    (out / "warm.md").write_text(text)
    console.print(f"wrote {out / 'warm.json'} and {out / 'warm.md'}")
    if _report.plot(_report.summarize(report["runs"]), title, out / "warm.png"):
        console.print(f"wrote {out / 'warm.png'}")
    else:
        console.print(
            "[yellow]no plot[/]: matplotlib is not installed; "
            "`make bench-warm` installs it (the bench extra), or `pip install -e .[bench]`"
        )
    console.print()
    console.print(text, markup=False, highlight=False)


def rewrite_reports(source: Path, out: Path, console: Console) -> None:
    """Write warm.md and warm.png again from a warm.json, without measuring anything."""
    try:
        report = json.loads(source.read_text())
        missing = [k for k in ("machine", "runs", "settings", "notes") if k not in report]
        if missing:
            raise KeyError(", ".join(missing))
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"cannot read a warm report from {source}: {exc}") from None
    write_reports(report, out, console)


def notes_for(variants: Sequence[str], channels: dict[str, str | None]) -> list[str]:
    notes = [
        "Server CPU per request: user + system seconds, read from /proc/PID/stat before and "
        "after each run, of the server's process and all its live descendants (for faasd-py: "
        "`up`, its zygotes and sandboxed instances, which /proc of the host lists under their "
        "parents although they run in namespaces of their own; what exited instances spent "
        "counts through their parents' waited-for children), over wrk's completed requests. "
        "The instances' v1 cpu cgroups here (cpu only, cpuacct not joined) keep no usage "
        "figure, so /proc is the source. The JSON also holds machine_us: the whole machine's "
        "busy time (/proc/stat) minus wrk's, per request, which includes other work on the host.",
        "wrk and the servers under test share the machine's 2 cores (outside the 1-core runs).",
    ]
    for variant in variants:
        if variant in (SUBJECT, wr.NET):
            channel = channels.get(variant)
            notes.append(
                f"{variant}: `faasd-py up` (gateway and worker in one process), the function's "
                "default settings (scale.min 1, scale.max 5, max_inflight 1), sandboxed"
                + (" with `--channel net`" if variant == wr.NET else "")
                + (f"; channel: {channel}" if channel else "")
                + "."
            )
    if BASELINE in variants:
        notes.append(
            f"{BASELINE}: one aiohttp process on uvloop answering the same body "
            "(bench/_bare_server.py)."
        )
    if wr.FLASK in variants:
        notes.append(
            f"{wr.FLASK}: what users run today, the OpenFaaS python3-http template's index.py "
            "(Flask, waitress with its default 4 threads) serving the same handler, without "
            "of-watchdog or a gateway in front (bench/_warm_flask.py)."
        )
    return notes


def run(args: argparse.Namespace, console: Console) -> None:
    wrk = ensure_wrk(console)
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-warm-"))
    try:
        with ExitStack() as stack:
            targets = []
            for variant in args.variants:
                if variant in (SUBJECT, wr.NET):
                    targets.append(start_faasd(tmp, args, console, stack, variant))
                else:
                    targets.append(start_script(tmp, args, console, stack, variant))
            script = write_script(tmp)
            load_before = os.getloadavg()
            runs = measure(targets, args, wrk, script, console)
            faasd = next((t for t in targets if t.variant == SUBJECT), None)
            scaling = (
                measure_scaling(faasd, args, wrk, script, console)
                if (faasd and args.scaling)
                else []
            )
            load_after = os.getloadavg()
            channels = {
                t.variant: _platform.banner_value(t.server, "channel")
                for t in targets
                if t.variant in (SUBJECT, wr.NET)
            }
        settings = {
            "duration_s": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "threads": "min(connections, 2)",
            "warmup_s": args.warmup,
            "function": args.function,
            "stack": str(args.stack) if args.stack else "built-in: hello, python3-http",
        }
        # Other work on the machine skews the figures: say how busy it was.
        load = {"before": _rounded(load_before), "after": _rounded(load_after)}
        report = {
            "benchmark": "warm",
            "machine": {**_report.machine_info(REPO), "load_average_1_5_15_min": load},
            "settings": settings,
            "tools": {"wrk": wrk_version(wrk), "faasd_py_channels": channels},
            "notes": notes_for(args.variants, channels),
            "runs": runs,
            "scaling_runs": scaling,
        }
        write_reports(report, args.out, console)
    finally:
        if args.keep:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 2) for v in values]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # soft_wrap: a narrow or piped terminal must not break the markdown table's lines.
    console = Console(soft_wrap=True)

    def work() -> None:
        if args.from_json:
            rewrite_reports(args.from_json, args.out, console)
        else:
            run(args, console)

    return _report.run_main(
        work, console, (BenchError, ServerError, WrkError), stopped="servers stopped"
    )


if __name__ == "__main__":
    sys.exit(main())
