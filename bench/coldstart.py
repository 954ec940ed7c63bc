"""Cold start to first response: a fresh exec of the runtime against a fork of the function's
zygote, on the same hello function, sandboxed.

    python bench/coldstart.py                 # writes bench/results/coldstart.{json,md,png}
    python bench/coldstart.py --starts 50 --rounds 2 --isolation process

What one cold start is: the function has no instance (scaled to zero, `com.openfaas.scale.min`
0); an invocation arrives at the worker (`Worker.invoke`, in process, on uvloop as in `faasd-py
up`: no HTTP, so only the start is measured); the pool launches an instance, which opens its
channel, reports ready and runs the invocation. The time is from the call to its result: the
launch to first response. Then the function is scaled to zero again and the instance is stopped
before the next start. Exec and zygote alternate in rounds (a worker each, started afresh), so
that drift on the machine hits both alike. In each round the first cold start is not counted:
under zygote it is the one that starts the zygote (reported apart, as "zygote start").

Other benchmarks import `run_coldstart(...)` (bench/datapath.py folds its report into its own);
`main` writes the reports. Targets (issue 4): zygote p50 at most 10 ms, p99 at most 30 ms.
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
VARIANTS = ("exec", "zygote")
FUNCTION = "hello"
HANDLER = """
def handle(event, context):
    return {"statusCode": 200, "body": "hello " + event.body.decode()}
"""

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


async def _round(
    variant: str, starts: int, tmp: Path, isolation: str, progress: Progress
) -> tuple[list[float], float, str]:
    """One worker with zygotes on or off: a warm-up cold start, then `starts` measured ones.
    Returns (samples in ms, the warm-up's ms, the isolation that ran)."""
    from faasd_py.config import Config
    from faasd_py.packages import PackageStore
    from faasd_py.protocol import Request
    from faasd_py.spec import FunctionSpec, StackFunction
    from faasd_py.worker import Worker

    data = tmp / f"data-{variant}"
    source = tmp / "src"
    source.mkdir(exist_ok=True)
    (source / "handler.py").write_text(textwrap.dedent(HANDLER))
    # Policy "none": the app stays loaded when its instances are scaled to zero, so the zygote
    # stays too. That is the cold start measured here: a start with the app loaded (a scale-up,
    # a replacement, or a start after the idle reaper); when the scheduler unloads the app it
    # stops the zygote as well, and the next start pays for a new one (the first-start figure).
    config = Config(data_dir=data, isolation=isolation, zygote=variant == "zygote", policy="none")
    spec = FunctionSpec(
        service=FUNCTION, image=f"{FUNCTION}:latest", labels={"com.openfaas.scale.min": "0"}
    )
    PackageStore(config.packages_dir).build(
        StackFunction(spec=replace(spec, service="build"), lang="python3-http", handler=source)
    )
    worker = Worker(config)
    await worker.start()
    try:
        worker.apply(spec, {})
        request = Request("cold", "POST", "/", "", [], b"world")

        async def cold_start() -> float:
            started = time.perf_counter()
            outcome = await worker.invoke(FUNCTION, request)
            elapsed = (time.perf_counter() - started) * 1000
            if outcome.result.status != 200 or outcome.cold_start_seconds == 0:
                raise RuntimeError(f"not a successful cold start: {outcome}")
            worker.scale(FUNCTION, 0)
            # The instance stops in the background (a polled state: no event to wait on);
            # then a moment for its cleanup, so that it does not overlap the next start.
            for _ in range(1000):
                if not getattr(worker.statistics(FUNCTION), "available", 0):
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)
            return elapsed

        warmup = await cold_start()
        samples = []
        for i in range(starts):
            samples.append(await cold_start())
            if (i + 1) % max(1, starts // 4) == 0:
                progress(f"  {variant}: {i + 1}/{starts}, last {samples[-1]:.1f} ms")
        return samples, warmup, worker.isolation
    finally:
        await worker.close(drain_timeout=5)
        shutil.rmtree(data, ignore_errors=True)


async def _measure(starts: int, rounds: int, isolation: str, progress: Progress) -> dict[str, Any]:
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    warmups: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ran = set()
    per_round = [starts // rounds + (1 if r < starts % rounds else 0) for r in range(rounds)]
    with tempfile.TemporaryDirectory(prefix="faasd-coldstart-") as folder:
        for r, count in enumerate(per_round):
            for variant in VARIANTS:
                progress(f"round {r + 1}/{rounds}: {variant}, {count} cold starts")
                got, warmup, used = await _round(variant, count, Path(folder), isolation, progress)
                samples[variant] += got
                warmups[variant].append(round(warmup, 3))
                ran.add(used)
    return {
        "isolation": ",".join(sorted(ran)),
        "results": [summarize(v, samples[v]) for v in VARIANTS],
        "first_cold_start_ms": warmups,
        "samples_ms": {v: [round(s, 3) for s in samples[v]] for v in VARIANTS},
    }


def run_coldstart(
    starts: int = 200,
    rounds: int = 4,
    isolation: str = "sandbox",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure `starts` cold starts of each variant over `rounds` alternating rounds; the
    report (machine, settings, per-variant p50/p99/mean, targets). Needs a free event loop:
    call it from synchronous code."""
    import uvloop

    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    load_before = os.getloadavg()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        measured = runner.run(_measure(starts, rounds, isolation, say))
    machine = _report.machine_info(REPO)
    machine["load_average_1_5_15_min"] = {
        "before": list(load_before),
        "after": list(os.getloadavg()),
    }
    return {
        "benchmark": "coldstart",
        "machine": machine,
        "settings": {"starts": starts, "rounds": rounds, "function": FUNCTION},
        **measured,
        "targets": targets(measured["results"]),
    }


def targets(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["variant"]: r for r in results}
    rows = []
    zygote, fresh = by.get("zygote"), by.get("exec")
    if zygote is not None:
        for figure, bound in (("p50_ms", TARGET_P50_MS), ("p99_ms", TARGET_P99_MS)):
            rows.append(
                {
                    "target": f"zygote cold start {figure[:3]} (ms)",
                    "value": zygote[figure],
                    "bound": f"<= {bound:g}",
                    "met": zygote[figure] <= bound,
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
    lines = _report.header("Cold start: fresh exec vs zygote fork", report["machine"])
    settings = report["settings"]
    lines += [
        f"{settings['starts']} cold starts per variant over {settings['rounds']} alternating "
        f"rounds, isolation `{report['isolation']}`, the `{settings['function']}` function. "
        "A cold start is timed from the invocation reaching the worker of a function scaled "
        "to zero to its result: the instance's launch, its channel, its ready, and the first "
        "invocation.",
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
        "The first cold start of each round, not counted above (under zygote it starts the "
        f"zygote: sandbox, interpreter, imports): exec {_list(first['exec'])} ms; zygote "
        f"{_list(first['zygote'])} ms.",
        "",
        "| target | value | bound | met |",
        "|---|---:|---|---|",
    ]
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
    ax.axvline(TARGET_P50_MS, color="grey", linestyle="--", linewidth=1, label="p50 target")
    ax.axvline(TARGET_P99_MS, color="grey", linestyle=":", linewidth=1, label="p99 target")
    ax.set_xscale("log")
    ax.set_xlabel("launch to first response (ms, log)")
    ax.set_ylabel("fraction of cold starts")
    ax.set_title(f"faasd-py cold start: fresh exec vs zygote fork ({report['isolation']})")
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
    parser = argparse.ArgumentParser(description="cold start: fresh exec vs zygote fork")
    parser.add_argument("--starts", type=int, default=200, help="cold starts per variant")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the variants")
    parser.add_argument(
        "--isolation",
        choices=("sandbox", "process"),
        default="sandbox",
        help="sandbox (fails where sandboxes cannot run) or process",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when the targets are met, 1 when one is missed (the report is written)."""
    args = parse_args(argv)
    report = run_coldstart(args.starts, max(1, min(args.rounds, args.starts)), args.isolation)
    write_reports(report, args.out)
    print(markdown(report))
    return 0 if all(row["met"] for row in report["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
