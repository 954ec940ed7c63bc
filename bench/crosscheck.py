"""Cross-check of `faasd-py bench` against wrk: the same server, the same fixed concurrency.

    python bench/crosscheck.py                  # or: make bench-crosscheck
    python bench/crosscheck.py --duration 5 --runs 1

A load generator is only trusted once it agrees with one that is: wrk (C, HdrHistogram). Both
drive the bare aiohttp server of bench/_bare_server.py closed-loop at the same number of
connections (16), alternately, 3 runs of 10 s each after a short warm-up of each; the medians
of throughput and of median latency must agree within 25%. wrk gets as many threads as
`faasd-py bench` gets processes (the core count), so both have the same share of the machine,
which they share with the server.

It also measures the generator's own ceiling first (`faasd-py bench --self-test`: closed loop
against a trivial server) and records it. Writes bench/results/crosscheck.json (the ceiling,
every run, medians, ratios) and crosscheck.md; exits 1 when the two disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _report
from _platform import faasd_command
from _procs import ServerError, free_port, start_server, wait_until_ok
from _wrk import WrkError, ensure_wrk, run_wrk, write_script, wrk_version
from rich.console import Console
from rich.markup import escape

from faasd_py.loadgen import _selftest
from faasd_py.loadgen._coordinator import GeneratorFailed

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OURS = "faasd-py bench"
WRK = "wrk"
FIGURES = ("rps", "p50_ms")
LABELS = {"rps": "throughput, req/s", "p50_ms": "median latency, ms"}


class CrosscheckError(Exception):
    """A run failed; the message says which and why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="faasd-py bench against wrk, same server.")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool (3)")
    parser.add_argument("--connections", type=int, default=16, help="connections (16)")
    parser.add_argument(
        "--procs",
        type=int,
        default=os.cpu_count() or 1,
        help="bench processes and wrk threads (the core count)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (2)")
    parser.add_argument(
        "--tolerance", type=float, default=0.25, help="largest relative difference (0.25)"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="report folder (bench/results)"
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.runs < 1 or args.connections < 1 or args.procs < 1:
        parser.error("--duration, --runs, --connections and --procs must be at least 1")
    return args


def run_ours(url: str, args: argparse.Namespace, out: Path, seconds: float) -> dict[str, Any]:
    """One closed-loop run of `faasd-py bench`; its figures from run.json."""
    argv = [
        *faasd_command(),
        "bench",
        "hello",
        f"--concurrency={args.connections}",
        f"--duration={seconds}s",
        "--warmup=0",
        f"--procs={args.procs}",
        f"--gateway={url}",
        "--no-self-test",
        f"--out={out}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if done.returncode != 0:
        raise CrosscheckError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    report = json.loads((out / "run.json").read_text())
    totals, latency = report["totals"], report["latency_ms"]
    return {
        "rps": totals["throughput_rps"],
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "mean_ms": latency["mean"],
        "errors": totals["errors"],
        "flags": report["flags"],
    }


def run_theirs(
    wrk: str, url: str, args: argparse.Namespace, script: Path, seconds: float
) -> dict[str, Any]:
    result = run_wrk(
        wrk,
        f"{url}/function/hello",
        connections=args.connections,
        threads=args.procs,
        seconds=seconds,
        script=script,
    )
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "mean_ms": result.mean_ms,
        "errors": result.errors,
    }


def compare(runs: Sequence[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Medians per tool, ours over wrk's, and whether each is within the tolerance."""
    medians = {
        tool: {f: statistics.median(r[f] for r in runs if r["tool"] == tool) for f in FIGURES}
        for tool in (OURS, WRK)
    }
    ratios = {f: medians[OURS][f] / medians[WRK][f] for f in FIGURES}
    agree = {f: abs(ratio - 1) <= tolerance for f, ratio in ratios.items()}
    return {"medians": medians, "ratios": ratios, "agree": agree, "tolerance": tolerance}


def markdown(
    machine: dict[str, Any],
    settings: dict[str, Any],
    runs: Sequence[dict[str, Any]],
    verdict: dict[str, Any],
    ceiling: float,
) -> str:
    ok = all(verdict["agree"].values())
    lines = [
        *_report.header("Cross-check: faasd-py bench against wrk", machine),
        ", ".join(f"{k}: {v}" for k, v in settings.items()),
        "",
        f"The generator's own ceiling (`faasd-py bench --self-test`, {settings['procs']} "
        f"processes, closed loop against a trivial server): {ceiling:,.0f} req/s.",
        "",
        f"**{'Agree' if ok else 'Disagree'}** within {verdict['tolerance']:.0%} "
        "(medians over runs; closed loop at the same connections, same server):",
        "",
        f"| figure | {OURS} | {WRK} | ours / wrk | within {verdict['tolerance']:.0%} |",
        "|---|---:|---:|---:|---|",
    ]
    for figure in FIGURES:
        ours, theirs = verdict["medians"][OURS][figure], verdict["medians"][WRK][figure]
        fmt = "{:,.0f}" if figure == "rps" else "{:.3f}"
        lines.append(
            f"| {LABELS[figure]} | {fmt.format(ours)} | {fmt.format(theirs)} "
            f"| {verdict['ratios'][figure]:.2f} | {'yes' if verdict['agree'][figure] else 'NO'} |"
        )
    lines += [
        "",
        "Every run:",
        "",
        "| run | tool | req/s | p50 ms | p99 ms | mean ms | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['run']} | {r['tool']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} "
            f"| {r['p99_ms']:.3f} | {r['mean_ms']:.3f} | {r['errors']} |"
        )
    lines += [
        "",
        "- The server (one aiohttp process on uvloop, bench/_bare_server.py) and the load "
        "generator share the machine's cores, as in bench/warm.py: a generator that spends more "
        "CPU per request leaves less to the server, and both figures show it.",
        "- Latency: wrk from its HdrHistogram (its Lua `done()` hook); faasd-py bench from "
        "run.json, time from send to the last byte of the answer.",
    ]
    return "\n".join(lines) + "\n"


def measure(args: argparse.Namespace, console: Console, tmp: Path) -> list[dict[str, Any]]:
    wrk = ensure_wrk(console)
    script = write_script(tmp)
    port = free_port()
    argv = [sys.executable, str(HERE / "_bare_server.py"), "--port", str(port)]
    server = start_server("bare", argv, tmp / "bare.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ok(server, f"{url}/function/hello", timeout=30, expect_body=b"hello")
        with console.status("warming up both"):
            run_ours(url, args, tmp / "warmup", args.warmup)
            run_theirs(wrk, url, args, script, args.warmup)
        runs = []
        for k in range(1, args.runs + 1):
            for tool in (OURS, WRK):
                with console.status(f"{tool}: run {k}/{args.runs} ({args.duration:g} s)"):
                    if tool == OURS:
                        figures = run_ours(url, args, tmp / f"ours-{k}", args.duration)
                    else:
                        figures = run_theirs(wrk, url, args, script, args.duration)
                runs.append({"tool": tool, "run": k, **figures})
                console.print(
                    f"{tool:>14} run {k}: {figures['rps']:>9,.0f} req/s  "
                    f"p50 {figures['p50_ms']:.3f} ms  p99 {figures['p99_ms']:.3f} ms"
                )
        return runs
    finally:
        server.stop(5)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    tmp = Path(tempfile.mkdtemp(prefix="faasd-crosscheck-"))
    try:
        with console.status(f"measuring the generator's ceiling ({args.procs} processes)"):
            ceiling = _selftest.ceiling(args.procs, enabled=True, fresh=True)
        assert ceiling.rps is not None
        console.print(f"generator ceiling: {ceiling.rps:,.0f} req/s")
        load_before = os.getloadavg()
        runs = measure(args, console, tmp)
        load_after = os.getloadavg()
    except (CrosscheckError, ServerError, WrkError, GeneratorFailed) as exc:
        console.print(f"[red]cross-check failed[/]: {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: no report written")
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verdict = compare(runs, args.tolerance)
    machine = {
        **_report.machine_info(REPO),
        "load_average_1_5_15_min": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_after],
        },
    }
    settings = {
        "connections": args.connections,
        "duration_s": args.duration,
        "runs": args.runs,
        "warmup_s": args.warmup,
        "procs": args.procs,
        "wrk": wrk_version(shutil.which("wrk") or "wrk"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "crosscheck",
        "machine": machine,
        "settings": settings,
        "generator_ceiling_rps": ceiling.rps,
        **verdict,
    }
    report["runs"] = runs
    (args.out / "crosscheck.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(machine, settings, runs, verdict, ceiling.rps)
    (args.out / "crosscheck.md").write_text(text)
    console.print(f"wrote {args.out / 'crosscheck.json'} and {args.out / 'crosscheck.md'}\n")
    console.print(text, markup=False, highlight=False)
    return 0 if all(verdict["agree"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
