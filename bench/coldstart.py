"""Cold start to first response, sandboxed: a fresh exec of the runtime, a fork of the
function's warm zygote, and a start from nothing (the app unloaded by its keep-alive policy:
no zygote or instance of its own; the base zygote forks, the child sandboxes itself and
imports the handler), for a stdlib-only function and one that imports numpy.

    python bench/coldstart.py                 # writes bench/results/coldstart.{json,md,png}
    python bench/coldstart.py --starts 8 --rounds 1 --out /tmp/cold   # a smoke run

What one cold start is: the function has no instance; an invocation arrives at the worker
(`Worker.invoke`, in process, on uvloop as in `faasd-py up`: no HTTP, so only the start is
measured); the pool launches an instance, which opens its channel, reports ready and runs the
invocation. The time is from the call to its result. Then the function is scaled to zero and
the instance stopped before the next start: under `exec` and `zygote` with no keep-alive policy
(the app stays loaded, with its zygote), under `from-nothing` with the hybrid policy, where
scaling to zero unloads the app (its zygote, started after each start from the base, goes
too: the bench waits for that). The variants alternate in rounds (a worker each, started
afresh), so that drift on the machine hits all alike; each round's first start is not counted
(under `zygote` it starts the zygote; it is reported apart).

A start from nothing is broken down from timestamps (CLOCK_MONOTONIC) taken by the worker,
the base zygote's fork, the native launcher's steps and the child (BaseZygote.timelines()).

Other benchmarks import `run_coldstart(...)` (bench/datapath.py folds its report into its own);
`main` writes the reports. Targets: issue 4, the zygote fork p50 at most 10 ms, p99 at most
30 ms; issue 15, from nothing (stdlib-only) p50 at most 15 ms, p99 at most 40 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # bench helpers, when imported from another bench script

import _report  # noqa: E402
from channel import percentile  # noqa: E402  (nearest rank, as the channel benchmark's)

TARGET_P50_MS = 10.0
TARGET_P99_MS = 30.0
TARGET_NOTHING_P50_MS = 15.0
TARGET_NOTHING_P99_MS = 40.0
VARIANTS = ("exec", "zygote", "from-nothing", "from-nothing-numpy")
FUNCTION = "hello"
HANDLER = """
def handle(event, context):
    return {"statusCode": 200, "body": "hello " + event.body.decode()}
"""
# A heavy dependency from the function's own requirements (installed by the build).
NUMPY_HANDLER = """
import numpy

def handle(event, context):
    return {"statusCode": 200, "body": "hello " + str(int(numpy.arange(4).sum()))}
"""
# The stages of a start from nothing: (name, from, to) over the timeline's stamps; "invoked"
# and "result" are the bench's own, the rest BaseZygote.timelines()'.
STAGES = (
    ("worker before the fork (pool, channel, cgroup, spec)", "invoked", "requested"),
    ("to the base zygote's spare (or a fork of the base)", "requested", "forked"),
    ("the spec, as C structs", "forked", "clone"),
    ("clone into new namespaces", "clone", "child"),
    ("uid/gid maps, cgroup joined", "child", "go"),
    ("root: mounts, /proc, pivot_root", "go", "root"),
    ("fds, rlimits, capabilities, seccomp", "root", "sealed"),
    ("back in Python: environment, name, flags", "sealed", "waiting"),
    ("waiting for the worker's go-ahead", "waiting", "resumed"),
    ("handler import", "resumed", "imported"),
    ("ready and first invocation", "imported", "result"),
)

Progress = Callable[[str], None]


def summarize(variant: str, samples_ms: Sequence[float]) -> dict[str, Any]:
    values = sorted(samples_ms)
    return {
        "variant": variant,
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "mean_ms": round(statistics.fmean(values), 3),
        "min_ms": round(values[0], 3),
        "max_ms": round(values[-1], 3),
    }


# --- measuring -------------------------------------------------------------------------------


def _function(variant: str) -> tuple[str, str, str]:
    """(name, handler source, requirements) of the function a variant starts."""
    if variant.endswith("-numpy"):
        return "heavy", NUMPY_HANDLER, "numpy\n"
    return FUNCTION, HANDLER, ""


async def _round(
    variant: str, starts: int, tmp: Path, isolation: str, progress: Progress
) -> tuple[list[float], float, str, list[dict[str, float]]]:
    """One worker for `variant`: a warm-up cold start, then `starts` measured ones. Returns
    (samples in ms, the warm-up's ms, the isolation that ran, the starts' breakdowns in ms)."""
    from faasd_py.config import Config
    from faasd_py.packages import PackageStore
    from faasd_py.protocol import Request
    from faasd_py.spec import FunctionSpec, StackFunction
    from faasd_py.worker import Worker

    name, handler, requirements = _function(variant)
    data = tmp / f"data-{variant}"
    source = tmp / f"src-{name}"
    source.mkdir(exist_ok=True)
    (source / "handler.py").write_text(textwrap.dedent(handler))
    if requirements:
        (source / "requirements.txt").write_text(requirements)
    # exec and zygote: no policy, so the app stays loaded when scaled to zero, and its zygote
    # with it (a start with the app loaded: a scale-up, a replacement). from-nothing: the
    # hybrid policy, under which scaling to zero unloads the app, zygote and all.
    unloads = variant.startswith("from-nothing")
    config = Config(
        data_dir=data,
        isolation=isolation,
        zygote=variant != "exec",
        policy="hybrid" if unloads else "none",
    )
    spec = FunctionSpec(
        service=name, image=f"{name}:latest", labels={"com.openfaas.scale.min": "0"}
    )
    PackageStore(config.packages_dir).build(
        StackFunction(spec=replace(spec, service="build"), lang="python3-http", handler=source)
    )
    worker = Worker(config)
    await worker.start()
    try:
        worker.apply(spec, {})
        request = Request("cold", "POST", "/", "", [], b"world")
        base = worker.base_zygote
        breakdowns: list[dict[str, float]] = []

        async def until(condition: Callable[[], bool]) -> None:
            # Polled states of processes outside this loop: no event to wait on.
            for _ in range(2000):
                if condition():
                    return
                await asyncio.sleep(0.005)
            said = "\n".join(
                f"  {e.instance} ({e.stream}): {e.text}" for e in worker.logs(name).recent(20)
            )
            raise RuntimeError(
                f"{variant}: the function did not settle after a start; "
                f"{worker.launcher_statistics(name)}; its last log lines:\n{said}"
            )

        def settled() -> bool:
            stats = worker.launcher_statistics(name)
            idle = not getattr(worker.statistics(name), "available", 0)
            return idle and (
                not unloads or (stats.zygote_pid is None and not stats.zygote_starting)
            )

        async def cold_start() -> float:
            known = len(base.timelines()) if base is not None else 0
            invoked = time.monotonic_ns()
            outcome = await worker.invoke(name, request)
            result = time.monotonic_ns()
            if outcome.result.status != 200 or outcome.cold_start_seconds == 0:
                raise RuntimeError(f"not a successful cold start: {outcome}")
            worker.scale(name, 0)
            await until(settled)
            # A moment for the stopped instance's cleanup, so that it does not overlap the
            # next start.
            await asyncio.sleep(0.02)
            if base is not None and unloads:
                stamps = {"invoked": invoked, "result": result}
                for timeline in base.timelines()[known:]:
                    if "imported" in timeline and timeline["requested"] >= invoked:
                        breakdowns.append(breakdown({**timeline, **stamps}))
                        break
            return (result - invoked) / 1e6

        warmup = await cold_start()
        breakdowns.clear()
        if variant == "zygote":  # started after the warm-up's start from the base
            await until(lambda: worker.launcher_statistics(name).zygote_pid is not None)
        samples = []
        for i in range(starts):
            samples.append(await cold_start())
            if (i + 1) % max(1, starts // 4) == 0:
                progress(f"  {variant}: {i + 1}/{starts}, last {samples[-1]:.1f} ms")
        return samples, warmup, worker.isolation, breakdowns
    finally:
        await worker.close(drain_timeout=5)
        shutil.rmtree(data, ignore_errors=True)


def breakdown(timeline: dict[str, int]) -> dict[str, float]:
    """A start's STAGES in ms, from its timeline's stamps (ns)."""
    return {
        stage: round((timeline[end] - timeline[start]) / 1e6, 3) for stage, start, end in STAGES
    }


def summarize_breakdowns(breakdowns: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """Per stage: p50 and mean ms, and its share of the mean total."""
    if not breakdowns:
        return []
    total = sum(statistics.fmean(b[stage] for b in breakdowns) for stage, _, _ in STAGES)
    rows = []
    for stage, _, _ in STAGES:
        values = sorted(b[stage] for b in breakdowns)
        mean = statistics.fmean(values)
        rows.append(
            {
                "stage": stage,
                "p50_ms": round(percentile(values, 50), 3),
                "mean_ms": round(mean, 3),
                "share": round(mean / total, 3) if total else 0.0,
            }
        )
    return rows


async def _measure(
    starts: int, rounds: int, isolation: str, variants: Sequence[str], progress: Progress
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {v: [] for v in variants}
    warmups: dict[str, list[float]] = {v: [] for v in variants}
    breakdowns: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    ran = set()
    per_round = [starts // rounds + (1 if r < starts % rounds else 0) for r in range(rounds)]
    with tempfile.TemporaryDirectory(prefix="faasd-coldstart-") as folder:
        for r, count in enumerate(per_round):
            for variant in variants:
                progress(f"round {r + 1}/{rounds}: {variant}, {count} cold starts")
                got, warmup, used, parts = await _round(
                    variant, count, Path(folder), isolation, progress
                )
                samples[variant] += got
                warmups[variant].append(round(warmup, 3))
                breakdowns[variant] += parts
                ran.add(used)
    return {
        "isolation": ",".join(sorted(ran)),
        "results": [summarize(v, samples[v]) for v in variants],
        "first_cold_start_ms": warmups,
        "breakdown": {v: summarize_breakdowns(breakdowns[v]) for v in variants if breakdowns[v]},
        "samples_ms": {v: [round(s, 3) for s in samples[v]] for v in variants},
    }


def run_coldstart(
    starts: int = 200,
    rounds: int = 4,
    isolation: str = "sandbox",
    progress: Progress | None = None,
    variants: Sequence[str] = VARIANTS,
) -> dict[str, Any]:
    """Measure `starts` cold starts of each variant over `rounds` alternating rounds; the
    report (machine, settings, per-variant p50/p99/mean, breakdowns, targets). Needs a free
    event loop: call it from synchronous code."""
    import uvloop

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    load_before = os.getloadavg()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        measured = runner.run(_measure(starts, rounds, isolation, variants, say))
    machine = _report.machine_info(REPO)
    machine["load_average_1_5_15_min"] = {
        "before": list(load_before),
        "after": list(os.getloadavg()),
    }
    return {
        "benchmark": "coldstart",
        "machine": machine,
        "settings": {"starts": starts, "rounds": rounds, "function": FUNCTION, "heavy": "numpy"},
        **measured,
        "targets": targets(measured["results"]),
    }


def targets(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["variant"]: r for r in results}
    rows = []
    zygote, fresh = by.get("zygote"), by.get("exec")
    bounds = (
        ("zygote", "zygote cold start", TARGET_P50_MS, TARGET_P99_MS),
        ("from-nothing", "cold start from nothing", TARGET_NOTHING_P50_MS, TARGET_NOTHING_P99_MS),
    )
    for variant, words, p50, p99 in bounds:
        row = by.get(variant)
        if row is None:
            continue
        for figure, bound in (("p50_ms", p50), ("p99_ms", p99)):
            rows.append(
                {
                    "target": f"{words} {figure[:3]} (ms)",
                    "value": row[figure],
                    "bound": f"<= {bound:g}",
                    "met": row[figure] <= bound,
                }
            )
    if zygote is not None and fresh is not None:
        rows.append(
            {
                "target": "exec / zygote cold start p50",
                "value": round(fresh["p50_ms"] / zygote["p50_ms"], 1),
                "bound": "(no target)",
                "met": True,
            }
        )
    return rows


# --- reports ---------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = _report.header(
        "Cold start: fresh exec, zygote fork, and from nothing", report["machine"]
    )
    settings = report["settings"]
    lines += [
        f"{settings['starts']} cold starts per variant over {settings['rounds']} alternating "
        f"rounds, isolation `{report['isolation']}`, the `{settings['function']}` function "
        "(standard library only; `-numpy`: a function that imports numpy from its own "
        "requirements). A cold start is timed from the invocation reaching the worker of a "
        "function with no instance to its result: the instance's launch, its channel, its "
        "ready, and the first invocation. `exec`: a fresh interpreter in a new sandbox. "
        "`zygote`: a fork of the function's own zygote, its app loaded. `from-nothing`: the "
        "app unloaded by its keep-alive policy (no zygote or instance of its own): the base "
        "zygote forks, the child builds the sandbox around itself and imports the handler.",
        "",
        "| variant | starts | p50 ms | p99 ms | mean ms | min ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['variant']} | {row['count']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['mean_ms']:.2f} | {row['min_ms']:.2f} | {row['max_ms']:.2f} |"
        )
    first = report["first_cold_start_ms"]
    lines += [
        "",
        "The first cold start of each round, not counted above: "
        + "; ".join(f"{v} {_list(first[v])} ms" for v in first)
        + ".",
        "",
    ]
    for variant, rows in report.get("breakdown", {}).items():
        lines += [
            f"Breakdown of a cold start, `{variant}` ({len(report['samples_ms'][variant])} "
            "starts; timestamps from the worker, the base zygote's fork, the native "
            "launcher's steps and the child):",
            "",
            "| stage | p50 ms | mean ms | share of the mean |",
            "|---|---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row['stage']} | {row['p50_ms']:.2f} | {row['mean_ms']:.2f} "
                f"| {100 * row['share']:.0f}% |"
            )
        lines.append("")
    lines += ["| target | value | bound | met |", "|---|---:|---|---|"]
    for row in report["targets"]:
        met = "yes" if row["met"] else "**no**"
        lines.append(f"| {row['target']} | {row['value']} | {row['bound']} | {met} |")
    return "\n".join(lines) + "\n"


def _list(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for variant, values in report["samples_ms"].items():
        ordered = sorted(values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=variant)
    ax.axvline(TARGET_NOTHING_P50_MS, color="grey", linestyle="--", linewidth=1, label="p50 target")
    ax.axvline(TARGET_NOTHING_P99_MS, color="grey", linestyle=":", linewidth=1, label="p99 target")
    ax.set_xscale("log")
    ax.set_xlabel("launch to first response (ms, log)")
    ax.set_ylabel("fraction of cold starts")
    ax.set_title(f"faasd-py cold start ({report['isolation']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "coldstart.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "coldstart.md").write_text(markdown(report))
    try:
        plot(report, out / "coldstart.png")
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plot", file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="cold start: exec, zygote fork, from nothing")
    parser.add_argument("--starts", type=int, default=200, help="cold starts per variant")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the variants")
    parser.add_argument(
        "--isolation",
        choices=("sandbox", "process"),
        default="sandbox",
        help="sandbox (fails where sandboxes cannot run) or process",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or not args.variants:
        parser.error(f"unknown variants {sorted(unknown)}; choose among {', '.join(VARIANTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the targets are met, 1 when one is missed (the report is written)."""
    args = parse_args(argv)
    rounds = max(1, min(args.rounds, args.starts))
    report = run_coldstart(args.starts, rounds, args.isolation, variants=args.variants)
    write_reports(report, args.out)
    print(markdown(report))
    return 0 if all(row["met"] for row in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
