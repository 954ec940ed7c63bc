"""The data path, side by side: shm, socket and net channels on the same hello function.

    python bench/datapath.py                     # or: make bench-datapath
    python bench/datapath.py --duration 5 --runs 1 --skip-micro --skip-coldstart

What it does, all in one run (issue 4's benchmark):

1. builds one stack with the same hello handler deployed three times, once per channel
   (`hello-shm`, `hello-socket`, `hello-net`: annotation com.faasd-py.channel), and starts
   `faasd-py up` with it;
2. closed loop with `faasd-py bench -c N` at 1, 16 and 64 connections, every mode in turn
   within each run so that drift on the machine hits all alike;
3. open loop with `faasd-py bench --rate R` at 25%, 50% and 75% of the net mode's highest
   closed-loop throughput: the same offered load for every mode, latency counted from the
   intended send time;
4. the channel micro-benchmark (bench/channel.py: round trips of 64 B, 4 KiB and 1 MiB, shm
   against a socketpair) and the cold-start benchmark (bench/coldstart.py: fresh exec against
   a zygote fork), each run as its own script, their reports folded into this one;
5. writes bench/results/datapath.json (machine, every run, medians, targets),
   datapath.md (the tables, each target met or missed and by how much) and datapath.png.

Targets (issue 4, 2 cores): shm vs net at the same load p50 at least 50% lower and p99 at least
70% lower; shm throughput at least 2x net; channel round trip p50 at most 15 us and at least 3x
faster than a socketpair; zygote cold start p50 at most 10 ms and p99 at most 30 ms.
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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _args
import _cpu
import _platform
import _report
from _procs import ServerError
from rich.console import Console
from rich.markup import escape

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODES = ("shm", "socket", "net")
BODY = b"hello"
# The mode whose throughput sets the open-loop rates, and the one it is compared against.
BASELINE = "net"
SUBJECT = "shm"

HANDLER_PY = """\
def handle(event, context):
    return {"statusCode": 200, "body": "hello"}
"""

# The gates of issue 4: (figure, comparison, bound).
TARGET_P50_CUT = 0.50  # shm p50 at least 50% below net's at the same offered load
TARGET_P99_CUT = 0.70
TARGET_THROUGHPUT = 2.0
TARGET_CHANNEL_P50_US = 15.0
TARGET_CHANNEL_SPEEDUP = 3.0
TARGET_COLD_P50_MS = 10.0
TARGET_COLD_P99_MS = 30.0


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Data-path benchmark: shm, socket and net channels through faasd-py bench.",
    )
    parser.add_argument(
        "--modes", type=_args.choice_list(MODES), default=list(MODES), help="shm,socket,net"
    )
    parser.add_argument("--connections", type=_args.int_list, default=[1, 16, 64], help="1,16,64")
    parser.add_argument(
        "--loads",
        type=_args.int_list,
        default=[25, 50, 75],
        help="open-loop rates, percent of net's highest closed-loop throughput (25,50,75)",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run (8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds (1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode and load (3)")
    parser.add_argument("--procs", type=int, default=None, help="generator processes (cores)")
    parser.add_argument("--skip-micro", action="store_true", help="no channel micro-benchmark")
    parser.add_argument("--skip-coldstart", action="store_true", help="no cold-start benchmark")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="bench/results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="DATAPATH_JSON",
        help="measure nothing: write the markdown and the plot again from this datapath.json",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.runs < 1:
        parser.error("--duration must be at least 1 second and --runs at least 1")
    return args


def function_name(mode: str) -> str:
    return f"hello-{mode}"


def write_stack(folder: Path, modes: Sequence[str]) -> Path:
    (folder / "hello").mkdir(parents=True)
    (folder / "hello" / "handler.py").write_text(HANDLER_PY)
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    for mode in modes:
        lines += [
            f"  {function_name(mode)}:",
            "    lang: python3-http",
            "    handler: ./hello",
            "    image: bench-hello:latest",
            "    annotations:",
            f"      com.faasd-py.channel: {mode}",
        ]
    stack = folder / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    return stack


# --- one `faasd-py bench` run ------------------------------------------------------------------


def bench_once(
    platform: _platform.RunningPlatform,
    mode: str,
    load: list[str],
    args: argparse.Namespace,
    out: Path,
) -> dict[str, Any]:
    """Run `faasd-py bench` once against the mode's function; the figures of its run.json."""
    argv = [*_platform.faasd_command(), "bench", function_name(mode), *load]
    argv += ["--duration", f"{args.duration}s", "--warmup", f"{args.warmup}s"]
    argv += ["--gateway", platform.base_url, "--data-dir", str(platform.data_dir)]
    argv += ["--no-self-test", "--out", str(out), "--label", out.name]
    if args.procs:
        argv += ["--procs", str(args.procs)]
    before = _cpu.sample(platform.server.process.pid)
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    cpu = _cpu.sample(platform.server.process.pid).minus(before)
    report_path = out / "run.json"
    if done.returncode != 0 or not report_path.exists():
        raise BenchError(
            f"`{' '.join(argv)}` exited {done.returncode}:\n"
            f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    report = json.loads(report_path.read_text())
    latency = report["latency_ms"] or {}
    totals = report["totals"]
    # Per request answered, warm-up included: the processes did that work too.
    requests = max(1, totals["answered"] + totals["warmup_sent"])
    return {
        "rps": totals["ok_rps"],
        "p50_ms": latency.get("p50", 0.0),
        "p99_ms": latency.get("p99", 0.0),
        "mean_ms": latency.get("mean", 0.0),
        "errors": totals["errors"] + totals["skipped"] + totals["unsent"],
        "sent_rps": totals["sent_rps"],
        "flags": report.get("flags", []),
        # The gateway's own time (Server-Timing total): the client's latency less HTTP, the
        # network and the generator.
        "server_p50_ms": _stage(report, "total", "p50"),
        "server_p99_ms": _stage(report, "total", "p99"),
        "cpu_us_per_request": {
            "gateway_worker": round(cpu.platform_s / requests * 1e6, 1),
            "instances": round(cpu.descendants_s / requests * 1e6, 1),
            "generator": round(cpu.generator_s / requests * 1e6, 1),
        },
    }


def _stage(report: dict[str, Any], stage: str, figure: str) -> float | None:
    stages = report.get("stages_ms") or {}
    summary = stages.get(stage) or {}
    value = summary.get(figure)
    return float(value) if value is not None else None


def measure(
    platform: _platform.RunningPlatform,
    args: argparse.Namespace,
    tmp: Path,
    console: Console,
    kind: str,
    loads: Sequence[tuple[int, list[str], str]],
) -> list[dict[str, Any]]:
    """Every (load, run, mode), modes alternating within a run; one record per bench run."""
    records: list[dict[str, Any]] = []
    for key, load, label in loads:
        for k in range(1, args.runs + 1):
            for mode in args.modes:
                _platform.require_alive(platform.server)
                name = f"{kind}-{key}-{mode}-{k}"
                with console.status(f"{mode:>6}  {label}  run {k}/{args.runs}"):
                    figures = bench_once(platform, mode, load, args, tmp / "runs" / name)
                warn = f"  [red]{figures['errors']} errors[/]" if figures["errors"] else ""
                console.print(
                    f"{mode:>6}  {label:<22} run {k}/{args.runs}: {figures['rps']:>8,.0f} req/s"
                    f"  p50 {figures['p50_ms']:7.3f} ms  p99 {figures['p99_ms']:7.3f} ms{warn}"
                )
                records.append(
                    {"variant": mode, "connections": key, "run": k, "kind": kind, **figures}
                )
    return records


def closed_loads(args: argparse.Namespace) -> list[tuple[int, list[str], str]]:
    return [(c, ["--concurrency", str(c)], f"{c} connections") for c in args.connections]


def open_loads(args: argparse.Namespace, reference_rps: float) -> list[tuple[int, list[str], str]]:
    loads = []
    for percent in args.loads:
        rate = max(1, round(reference_rps * percent / 100))
        loads.append((rate, ["--rate", str(rate)], f"{rate:,} req/s ({percent}%)"))
    return loads


def reference_throughput(cells: Sequence[_report.Cell], modes: Sequence[str]) -> tuple[str, float]:
    """The open-loop reference: net's highest median closed-loop throughput (or, without net,
    the slowest mode's), so every mode is offered what the baseline can carry."""
    best: dict[str, float] = {}
    for cell in cells:
        best[cell.variant] = max(best.get(cell.variant, 0.0), cell.medians["rps"])
    mode = BASELINE if BASELINE in best else min(best, key=lambda m: best[m])
    return mode, best[mode]


# --- the other two benchmarks, run as they are -------------------------------------------------


def run_script(
    script: str, extra: Sequence[str], out: Path, console: Console, notes: list[str]
) -> dict[str, Any] | None:
    """Run bench/<script> with --out into a folder of its own; its JSON report, or None (and a
    note) when it failed: the figures measured so far are still worth a report."""
    argv = [sys.executable, str(HERE / script), *extra, "--out", str(out)]
    console.print(f"running {escape(' '.join(argv))}")
    done = subprocess.run(argv, cwd=REPO, check=False)
    name = script.removesuffix(".py")
    path = out / f"{name}.json"
    if done.returncode not in (0, 1) or not path.exists():
        note = f"bench/{script} exited {done.returncode} without a report: its section is missing."
        console.print(f"[red]{escape(note)}[/]")
        notes.append(note)
        return None
    report: dict[str, Any] = json.loads(path.read_text())
    return report


# --- targets ----------------------------------------------------------------------------------


def _median_of(cells: Sequence[_report.Cell], mode: str, key: int, figure: str) -> float | None:
    for cell in cells:
        if cell.variant == mode and cell.connections == key:
            return cell.medians[figure]
    return None


def latency_targets(
    cells: Sequence[_report.Cell], kind: str, keys: Sequence[int]
) -> list[dict[str, Any]]:
    """shm against net at each load: the cut of p50 and of p99 (1 - shm/net)."""
    rows = []
    for key in keys:
        for figure, bound in (("p50_ms", TARGET_P50_CUT), ("p99_ms", TARGET_P99_CUT)):
            mine = _median_of(cells, SUBJECT, key, figure)
            base = _median_of(cells, BASELINE, key, figure)
            if mine is None or not base:
                continue
            cut = 1 - mine / base
            rows.append(
                {
                    "target": f"{figure[:3]} cut vs net, {kind} {key}",
                    "value": round(cut, 3),
                    "bound": f">= {bound:.0%}",
                    "met": cut >= bound,
                    "shm": mine,
                    "net": base,
                }
            )
    return rows


def server_targets(runs: Sequence[dict[str, Any]], kind: str, label: str) -> list[dict[str, Any]]:
    """The same cuts on the gateway's own time (Server-Timing total): what the channel changes,
    without the client's HTTP stack and the generator, which both modes share."""
    medians = extra_medians(runs, kind)
    rows = []
    for (mode, key), values in sorted(medians.items(), key=lambda item: item[0][1]):
        base = medians.get((BASELINE, key))
        if mode != SUBJECT or base is None:
            continue
        for index, (name, bound) in enumerate((("p50", TARGET_P50_CUT), ("p99", TARGET_P99_CUT))):
            if not base[index]:
                continue
            cut = 1 - values[index] / base[index]
            rows.append(
                {
                    "target": f"{name} cut vs net in the gateway, {label} {key}",
                    "value": round(cut, 3),
                    "bound": f">= {bound:.0%}",
                    "met": cut >= bound,
                    "shm": values[index],
                    "net": base[index],
                }
            )
    return rows


def throughput_target(cells: Sequence[_report.Cell]) -> list[dict[str, Any]]:
    best: dict[str, float] = {}
    for cell in cells:
        best[cell.variant] = max(best.get(cell.variant, 0.0), cell.medians["rps"])
    if SUBJECT not in best or not best.get(BASELINE):
        return []
    ratio = best[SUBJECT] / best[BASELINE]
    return [
        {
            "target": "shm throughput / net (highest closed-loop median)",
            "value": round(ratio, 2),
            "bound": f">= {TARGET_THROUGHPUT:g}x",
            "met": ratio >= TARGET_THROUGHPUT,
            "shm": best[SUBJECT],
            "net": best[BASELINE],
        }
    ]


def micro_targets(micro: dict[str, Any] | None) -> list[dict[str, Any]]:
    if micro is None:
        return []
    rows = []
    by = {(r["kind"], r["size"]): r for r in micro.get("results", []) if "kind" in r}
    shm, sock = by.get(("shm", 64)), by.get(("socket", 64))
    if shm is not None:
        rows.append(
            {
                "target": "channel round trip p50, 64 B, shm (us)",
                "value": shm["p50_us"],
                "bound": f"<= {TARGET_CHANNEL_P50_US:g}",
                "met": shm["p50_us"] <= TARGET_CHANNEL_P50_US,
            }
        )
        if sock is not None:
            speedup = sock["p50_us"] / shm["p50_us"]
            rows.append(
                {
                    "target": "socketpair / shm round trip p50, 64 B",
                    "value": round(speedup, 2),
                    "bound": f">= {TARGET_CHANNEL_SPEEDUP:g}x",
                    "met": speedup >= TARGET_CHANNEL_SPEEDUP,
                }
            )
    return rows


def coldstart_targets(cold: dict[str, Any] | None) -> list[dict[str, Any]]:
    if cold is None:
        return []
    rows = []
    for variant in cold.get("results", []):
        if variant.get("variant") != "zygote":
            continue
        for figure, bound in (("p50_ms", TARGET_COLD_P50_MS), ("p99_ms", TARGET_COLD_P99_MS)):
            value = variant[figure]
            rows.append(
                {
                    "target": f"zygote cold start {figure[:3]} (ms)",
                    "value": round(value, 2),
                    "bound": f"<= {bound:g}",
                    "met": value <= bound,
                }
            )
    return rows


# --- reports ----------------------------------------------------------------------------------


CPU_PARTS = ("gateway_worker", "instances", "generator")


def extra_medians(runs: Sequence[dict[str, Any]], kind: str) -> dict[tuple[str, int], list[float]]:
    """Per (mode, load): medians over runs of the gateway's own p50 and p99 (Server-Timing
    total) and of the CPU microseconds per request of each part (CPU_PARTS)."""
    groups: dict[tuple[str, int], list[list[float]]] = {}
    for run in runs:
        if run["kind"] != kind:
            continue
        cpu = run["cpu_us_per_request"]
        values = [run.get("server_p50_ms") or 0.0, run.get("server_p99_ms") or 0.0]
        values += [cpu[part] for part in CPU_PARTS]
        groups.setdefault((run["variant"], run["connections"]), []).append(values)
    return {
        key: [statistics.median(column) for column in zip(*rows, strict=True)]
        for key, rows in groups.items()
    }


def _table(
    cells: Sequence[_report.Cell], key_title: str, extra: dict[tuple[str, int], list[float]]
) -> list[str]:
    lines = [
        f"| {key_title} | mode | req/s | p50 ms | p99 ms | errors | in the gateway p50 / p99 ms "
        "| CPU us/req: gateway+worker / instance / generator |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for cell in cells:
        m = cell.medians
        more = extra.get((cell.variant, cell.connections), [0.0] * 5)
        cpu = " / ".join(f"{v:.0f}" for v in more[2:])
        lines.append(
            f"| {cell.connections:,} | {cell.variant} | {m['rps']:,.0f} | {m['p50_ms']:.3f} "
            f"| {m['p99_ms']:.3f} | {cell.errors} | {more[0]:.3f} / {more[1]:.3f} | {cpu} |"
        )
    return lines


def markdown(
    report: dict[str, Any], closed: Sequence[_report.Cell], opened: Sequence[_report.Cell]
) -> str:
    lines = _report.header("Data path: shm, socket and net channels", report["machine"])
    settings = report["settings"]
    lines += [
        f"Medians over {settings['runs']} runs of {settings['duration_s']:g} s each, "
        f"`faasd-py bench` with {_generator(settings['procs'])} on the same machine.",
        "",
        "### Closed loop",
        "",
        *_table(closed, "connections", extra_medians(report["runs"], "closed")),
        "",
        f"### Open loop (rates are {', '.join(f'{p}%' for p in settings['loads_percent'])} of "
        f"{report['reference']['mode']}'s {report['reference']['rps']:,.0f} req/s)",
        "",
        *_table(opened, "offered req/s", extra_medians(report["runs"], "open")),
        "",
    ]
    micro = report.get("micro")
    if micro:
        lines += ["### Channel round trip (bench/channel.py)", ""]
        lines += ["| kind | size | p50 us | p99 us |", "|---|---:|---:|---:|"]
        for row in micro.get("results", []):
            if "kind" in row:
                lines.append(
                    f"| {row['kind']} | {row['size']:,} B | {row['p50_us']:.1f} "
                    f"| {row['p99_us']:.1f} |"
                )
        lines.append("")
    cold = report.get("coldstart")
    if cold:
        lines += ["### Cold start to first response (bench/coldstart.py)", ""]
        lines += ["| variant | starts | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|---:|"]
        for row in cold.get("results", []):
            lines.append(
                f"| {row.get('variant')} | {row.get('count', row.get('starts', ''))} "
                f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row.get('mean_ms', 0.0):.2f} |"
            )
        lines.append("")
    lines += ["### Targets (issue 4)", "", "| target | value | bound | met |", "|---|---:|---|---|"]
    for row in report["targets"]:
        met = "yes" if row["met"] else "**no**"
        lines.append(f"| {row['target']} | {row['value']} | {row['bound']} | {met} |")
    lines += ["", *[f"- {note}" for note in report["notes"]], ""]
    return "\n".join(lines)


def _generator(procs: int | None) -> str:
    if procs is None:
        return "one generator process per core"
    return f"{procs} generator process{'es' if procs > 1 else ''}"


def plot(closed: Sequence[_report.Cell], opened: Sequence[_report.Cell], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    modes = list(dict.fromkeys(c.variant for c in closed))
    # One colour per mode in every panel; solid p50, dashed p99.
    colours = {mode: f"C{i}" for i, mode in enumerate(modes)}
    for mode in modes:
        colour = colours[mode]
        mine = [c for c in closed if c.variant == mode]
        xs = [c.connections for c in mine]
        axes[0].plot(xs, [c.medians["rps"] for c in mine], marker="o", color=colour, label=mode)
        for ax, cells in ((axes[1], mine), (axes[2], [c for c in opened if c.variant == mode])):
            keys = [c.connections for c in cells]
            ax.plot(
                keys, [c.medians["p50_ms"] for c in cells], marker="o", color=colour,
                label=f"{mode} p50",
            )  # fmt: skip
            ax.plot(
                keys, [c.medians["p99_ms"] for c in cells], marker="x", ls="--", color=colour,
                label=f"{mode} p99",
            )  # fmt: skip
    axes[0].set(title="closed loop: throughput", xlabel="connections", ylabel="req/s", xscale="log")
    axes[1].set(
        title="closed loop: latency", xlabel="connections", ylabel="ms", xscale="log", yscale="log"
    )
    axes[2].set(
        title="open loop: latency at the same offered rate",
        xlabel="req/s",
        ylabel="ms",
        yscale="log",
    )
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("faasd-py data path: shm vs socket vs net (medians over runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_reports(report: dict[str, Any], out: Path, console: Console) -> None:
    out.mkdir(parents=True, exist_ok=True)
    closed = _report.summarize(r for r in report["runs"] if r["kind"] == "closed")
    opened = _report.summarize(r for r in report["runs"] if r["kind"] == "open")
    report["summary"] = {
        "closed": [c.to_json() for c in closed],
        "open": [c.to_json() for c in opened],
    }
    (out / "datapath.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, closed, opened)
    (out / "datapath.md").write_text(text)
    console.print(f"wrote {out / 'datapath.json'} and {out / 'datapath.md'}")
    if plot(closed, opened, out / "datapath.png"):
        console.print(f"wrote {out / 'datapath.png'}")
    else:
        console.print("[yellow]no plot[/]: matplotlib is missing (`pip install -e .[bench]`)")
    console.print()
    console.print(text, markup=False, highlight=False)


# --- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, console: Console) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-datapath-"))
    load_before = os.getloadavg()
    try:
        with ExitStack() as stack:
            stack_file = write_stack(tmp / "functions", args.modes)
            ready = [(function_name(mode), BODY) for mode in args.modes]
            platform = _platform.start(tmp, stack_file, console, stack, ready=ready)
            channel_banner = platform.banner_value("channel")
            closed = measure(platform, args, tmp, console, "closed", closed_loads(args))
            ref_mode, ref_rps = reference_throughput(_report.summarize(closed), args.modes)
            console.print(f"open-loop reference: {ref_mode} carried {ref_rps:,.0f} req/s")
            opened = measure(platform, args, tmp, console, "open", open_loads(args, ref_rps))
        failures: list[str] = []
        micro = None
        if not args.skip_micro:
            micro = run_script("channel.py", [], tmp / "micro", console, failures)
        cold = None
        if not args.skip_coldstart:
            cold = run_script("coldstart.py", [], tmp / "cold", console, failures)
        runs = closed + opened
        cells_closed = _report.summarize(r for r in runs if r["kind"] == "closed")
        cells_open = _report.summarize(r for r in runs if r["kind"] == "open")
        targets = [
            *latency_targets(
                cells_open, "open loop, req/s", sorted({c.connections for c in cells_open})
            ),
            *latency_targets(cells_closed, "closed loop, connections", args.connections),
            *server_targets(runs, "open", "open loop, req/s"),
            *server_targets(runs, "closed", "closed loop, connections"),
            *throughput_target(cells_closed),
            *micro_targets(micro),
            *coldstart_targets(cold),
        ]
        notes = [
            "The generator, the platform and its sandboxes share the machine's 2 cores.",
            "The same handler is deployed once per channel (annotation com.faasd-py.channel); "
            "modes alternate within each run.",
            f"Banner of `up`: channel: {channel_banner}.",
            *failures,
        ]
        report = {
            "benchmark": "datapath",
            "machine": {
                **_report.machine_info(REPO),
                "load_average_1_5_15_min": {
                    "before": [round(v, 2) for v in load_before],
                    "after": [round(v, 2) for v in os.getloadavg()],
                },
            },
            "settings": {
                "modes": args.modes,
                "connections": args.connections,
                "loads_percent": args.loads,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "runs": args.runs,
                "procs": args.procs,
            },
            "reference": {"mode": ref_mode, "rps": ref_rps},
            "targets": targets,
            "micro": micro,
            "coldstart": cold,
            "notes": notes,
            "runs": runs,
        }
        write_reports(report, args.out, console)
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
            write_reports(json.loads(args.from_json.read_text()), args.out, console)
        else:
            run(args, console)

    return _report.run_main(work, console, (BenchError, ServerError), stopped="platform stopped")


if __name__ == "__main__":
    sys.exit(main())
