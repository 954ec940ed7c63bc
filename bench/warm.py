"""Warm invocations: faasd-py's `/function/hello` against a bare aiohttp server, under wrk.

    python bench/warm.py                     # or: make bench-warm
    python bench/warm.py --duration 5 --runs 1 --connections 1,16

What it does, all in one run:

1. installs wrk from Debian packages if it is missing;
2. builds a one-function stack (`hello`, python3-http, answers "hello") in a temporary data
   directory, starts `faasd-py up --deploy` on a free port and waits for the function to answer;
3. starts the baseline, a bare aiohttp server on uvloop answering the same body;
4. drives both with `wrk --latency` at each connection count (threads = min(connections, 2)),
   a short unrecorded warm-up first, then the runs, alternating between the two servers so
   that drift on the machine hits both alike;
5. writes bench/results/warm.json (the machine, every run, medians over runs, faasd-py / bare),
   warm.md (the tables) and warm.png (throughput and p99 against connections).

Both servers are stopped at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _args
import _platform
import _report
from _procs import Server, ServerError, free_port, start_server, wait_until_ok
from _wrk import WrkError, ensure_wrk, run_wrk, write_script, wrk_version
from rich.console import Console
from rich.markup import escape

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SUBJECT = "faasd-py"
BASELINE = "bare"
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
        description="Warm-invocation benchmark: faasd-py against a bare aiohttp server (wrk).",
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
        type=_args.choice_list((SUBJECT, BASELINE)),
        default=[SUBJECT, BASELINE],
        help=f"which servers to drive: {SUBJECT},{BASELINE} (both)",
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


def start_faasd(tmp: Path, args: argparse.Namespace, console: Console, stack: ExitStack) -> Target:
    stack_file = args.stack.resolve() if args.stack else write_stack(tmp / "functions")
    body = None if args.stack else BODY
    running = _platform.start(tmp, stack_file, console, stack, ready=[(args.function, body)])
    return Target(SUBJECT, running.function_url(args.function), running.server)


def start_bare(tmp: Path, args: argparse.Namespace, console: Console, stack: ExitStack) -> Target:
    port = free_port()
    argv = [sys.executable, str(HERE / "_bare_server.py"), "--port", str(port)]
    console.print(f"[bold]{BASELINE}[/]: starting: {escape(' '.join(argv))}")
    server = start_server(BASELINE, argv, tmp / "bare.log")
    stack.callback(_platform.stop, console, server, 5.0)
    url = f"http://127.0.0.1:{port}/function/{args.function}"
    wait_until_ok(server, url, timeout=30, expect_body=BODY)
    console.print(f"[bold]{BASELINE}[/]: {url} answers 200")
    return Target(BASELINE, url, server)


def measure(
    targets: Sequence[Target], args: argparse.Namespace, wrk: str, script: Path, console: Console
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for connections in args.connections:
        threads = min(connections, 2)
        if args.warmup > 0:
            for target in targets:
                with console.status(f"{target.variant}: warming up at {connections} connections"):
                    run_wrk(
                        wrk,
                        target.url,
                        connections=connections,
                        threads=threads,
                        seconds=args.warmup,
                        script=script,
                    )
        for k in range(1, args.runs + 1):
            for target in targets:
                _platform.require_alive(target.server)
                label = f"{target.variant:>8}  {connections:>3} connections  run {k}/{args.runs}"
                with console.status(f"{label}  ({args.duration:.0f} s)"):
                    result = run_wrk(
                        wrk,
                        target.url,
                        connections=connections,
                        threads=threads,
                        seconds=args.duration,
                        script=script,
                    )
                warn = f"  [red]{result.errors} errors[/]" if result.errors else ""
                console.print(
                    f"{label}: {result.rps:>9,.0f} req/s  p50 {result.p50_ms:7.3f} ms  "
                    f"p99 {result.p99_ms:7.3f} ms{warn}"
                )
                runs.append(
                    {
                        "variant": target.variant,
                        "connections": connections,
                        "threads": threads,
                        "run": k,
                        **result.to_json(),
                    }
                )
    return runs


def write_reports(
    out: Path,
    machine: dict[str, Any],
    runs: list[dict[str, Any]],
    settings: dict[str, Any],
    tools: dict[str, Any],
    notes: list[str],
    console: Console,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cells = _report.summarize(runs)
    ratio_rows = _report.ratios(cells, SUBJECT, BASELINE)
    report = {
        "benchmark": "warm",
        "machine": machine,
        "settings": settings,
        "tools": tools,
        "summary": [cell.to_json() for cell in cells],
        f"ratio_{SUBJECT}_over_{BASELINE}": ratio_rows,
        "notes": notes,
        "runs": runs,
    }
    (out / "warm.json").write_text(json.dumps(report, indent=2) + "\n")
    title = f"Warm invocations: {SUBJECT} vs a bare aiohttp server"
    text = _report.markdown(title, machine, settings, cells, ratio_rows, SUBJECT, BASELINE, notes)
    (out / "warm.md").write_text(text)
    console.print(f"wrote {out / 'warm.json'} and {out / 'warm.md'}")
    if _report.plot(cells, title, out / "warm.png"):
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
        parts = (report["machine"], report["runs"], report["settings"], report["tools"])
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"cannot read a warm report from {source}: {exc}") from None
    write_reports(out, *parts, report.get("notes", []), console)


def run(args: argparse.Namespace, console: Console) -> None:
    wrk = ensure_wrk(console)
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-warm-"))
    try:
        with ExitStack() as stack:
            targets = []
            if SUBJECT in args.variants:
                targets.append(start_faasd(tmp, args, console, stack))
            if BASELINE in args.variants:
                targets.append(start_bare(tmp, args, console, stack))
            script = write_script(tmp)
            load_before = os.getloadavg()
            runs = measure(targets, args, wrk, script, console)
            load_after = os.getloadavg()
            faasd = next((t for t in targets if t.variant == SUBJECT), None)
            channel = _platform.banner_value(faasd.server, "channel") if faasd else None
        settings = {
            "duration_s": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "threads": "min(connections, 2)",
            "warmup_s": args.warmup,
            "function": args.function,
            "stack": str(args.stack) if args.stack else "built-in: hello, python3-http",
        }
        tools = {"wrk": wrk_version(wrk), "faasd_py_channel": channel}
        # Other work on the machine skews the figures: say how busy it was.
        load = {"before": _rounded(load_before), "after": _rounded(load_after)}
        notes = [
            "wrk and the servers under test share the same machine and cores"
            + (" (and so do faasd-py's sandbox processes)." if faasd else ".")
        ]
        if faasd:
            notes.append(
                f"{SUBJECT}: `faasd-py up` (gateway and worker in one process) with the "
                "function's default settings (scale.min 1, scale.max 5, max_inflight 1)"
                + (f"; channel: {channel}" if channel else "")
                + "."
            )
        if BASELINE in args.variants:
            notes.append(
                f"{BASELINE}: one aiohttp process on uvloop answering the same body "
                "(bench/_bare_server.py)."
            )
        machine = {**_report.machine_info(REPO), "load_average_1_5_15_min": load}
        write_reports(args.out, machine, runs, settings, tools, notes, console)
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
    signal.signal(signal.SIGTERM, _report.interrupt_on_sigterm)
    try:
        if args.from_json:
            rewrite_reports(args.from_json, args.out, console)
        else:
            run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: servers stopped, no report written")
        return 130
    except (BenchError, ServerError, WrkError) as exc:
        console.print(f"[red]benchmark failed[/]: {escape(str(exc))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
