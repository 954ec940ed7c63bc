"""The keep-alive policy live: a compressed synthetic trace through `faasd-py up`, hybrid vs fixed.

bench/prewarm.py compares the policies in the simulator; this runs the same comparison through
the platform, with real instances and zygotes:

1. time is compressed by `--compress` (60: a trace minute is a wall second): `up --bin-width`
   is the hybrid policy's 1-minute bin compressed (1 s; its range is 240 bins, 4 trace hours),
   and the fixed keep-alive is the reference 10 trace minutes compressed (10 s);
2. for each policy, a fresh `faasd-py up --policy P --bin-width B` deploys trace-func's
   package, and `faasd-py bench --synthetic-trace --apps 20 --deploy-trace-functions` replays
   `--wall-minutes` of wall time (so `wall-minutes x compress` trace minutes) at `--speedup`
   equal to the compression, durations capped with `--cap-duration` so that 2 cores keep up;
   every trace function is its own deployment, labelled with its app, scale.min 0 (the
   policy decides);
3. it reads /metrics at the end: cold starts (gateway_function_cold_start), pre-warm loads and
   hits, instance-seconds loaded and idle, and decisions by rule, summed over the trace
   functions;
4. writes bench/results/prewarm_live.{json,md,png}.

Run from the repository root (a few minutes per policy and wall minute):

    .venv/bin/python bench/prewarm_live.py                  # 2 x 10 minutes
    .venv/bin/python bench/prewarm_live.py --wall-minutes 5  # shorter; the report says so
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _platform
import _report
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from faasd_py.config import HYBRID_BINS
from faasd_py.traces import synthetic_trace

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STACK = """version: 1.0
provider:
  name: openfaas
functions:
  trace-func:
    lang: python3-http
    handler: {handler}
    image: trace-func:latest
    environment:
      max_inflight: "16"
    labels:
      com.openfaas.scale.min: "0"
"""


def metrics(base_url: str, data_dir: Path) -> str:
    password = (data_dir / "credentials" / "basic-auth-password").read_text().strip()
    token = base64.b64encode(f"admin:{password}".encode()).decode()
    request = urllib.request.Request(
        base_url + "/metrics", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def figures(text: str) -> dict[str, Any]:
    """The policy's figures summed over the trace functions (all but trace-func itself)."""
    out: dict[str, Any] = {
        "invocations": 0.0,
        "cold_starts": 0.0,
        "prewarm_loads": 0.0,
        "prewarm_hits": 0.0,
        "instance_seconds": 0.0,
        "idle_instance_seconds": 0.0,
        "decisions": {},
        "functions": set(),
    }
    wanted = {
        "gateway_function_invocation_total": "invocations",
        "gateway_function_cold_start_total": "cold_starts",
        "faasd_function_prewarm_loads_total": "prewarm_loads",
        "faasd_function_prewarm_hits_total": "prewarm_hits",
        "faasd_function_instance_seconds_total": "instance_seconds",
        "faasd_function_idle_instance_seconds_total": "idle_instance_seconds",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            function = sample.labels.get("function_name", "")
            if sample.name in wanted and not function.startswith("trace-func."):
                out[wanted[sample.name]] += sample.value
                out["functions"].add(function)
            elif sample.name == "faasd_policy_decisions_total":
                reason = sample.labels["reason"]
                out["decisions"][reason] = out["decisions"].get(reason, 0) + int(sample.value)
    out["functions"] = len(out["functions"])
    return out


def after_deploy_estimate(args: argparse.Namespace, keepalive: float) -> float:
    """Instance-seconds the deploy itself costs: every app starts loaded (as functions always
    did) and is kept for the policy's keep-alive unless called before. Per trace function,
    min(keep-alive, wall time to its first invocation), from the trace's per-minute counts
    (its first minute's start: a lower bound by up to a minute of trace each)."""
    minutes = round(args.wall_minutes * args.compress)
    wall_minute = 60.0 / args.compress
    run = args.wall_minutes * 60
    total = 0.0
    for function in synthetic_trace(args.apps, minutes, args.seed):
        first = next((m for m, n in enumerate(function.counts) if n), None)
        reach = run if first is None else first * wall_minute
        total += min(keepalive, reach)
    return total


def run_policy(policy: str, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    compress = args.compress
    bin_width = 60.0 / compress
    with tempfile.TemporaryDirectory(prefix="prewarm-live-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        stack_file = tmp / "stack.yml"
        stack_file.write_text(STACK.format(handler=REPO / "examples" / "trace-func"))
        up_args = ["--policy", policy, "--bin-width", f"{bin_width:g}s"]
        platform = _platform.start(tmp, stack_file, console, stack, up_args=up_args)
        env = {**os.environ, "FAASD_DATA_DIR": str(platform.data_dir)}
        hours = args.wall_minutes * compress / 60  # trace minutes -> hours
        argv = [
            *_platform.faasd_command(), "bench", "--synthetic-trace",
            "--apps", str(args.apps), "--hours", f"{hours:g}", "--seed", str(args.seed),
            "--speedup", f"{compress:g}", "--deploy-trace-functions",
            "--cap-duration", args.cap_duration, "--gateway", platform.base_url,
            "--no-self-test", "--out", str(tmp / "report"), "--label", policy.replace(":", "-"),
        ]  # fmt: skip
        console.print(f"[bold]bench[/]: {' '.join(argv)}")
        started = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            console.print(done.stdout[-3000:], done.stderr[-3000:])
            raise SystemExit(f"faasd-py bench exited {done.returncode} under {policy}")
        _platform.require_alive(platform.server)
        found = figures(metrics(platform.base_url, platform.data_dir))
        report = json.loads((tmp / "report" / "run.json").read_text())
    bin_width_wall = 60.0 / args.compress
    deploy_keepalive = HYBRID_BINS * bin_width_wall if policy == "hybrid" else 600 / args.compress
    found.update(
        after_deploy_instance_seconds_estimate=round(
            after_deploy_estimate(args, deploy_keepalive), 1
        ),
        policy=policy,
        wall_seconds=round(elapsed, 1),
        bench_errors=sum(report.get("errors", {}).values()),
        bench_cold_starts=report.get("cold_starts"),
    )
    console.print(f"[bold]{policy}[/]: {found}")
    return found


def markdown(rows: list[dict[str, Any]], settings: dict[str, Any], machine: dict[str, Any]) -> str:
    lines = _report.header("Keep-alive policies live: a compressed trace through faasd-py", machine)
    lines += [
        f"Synthetic trace: {settings['apps']} apps (seed {settings['seed']}), "
        f"{settings['trace_minutes']:g} trace minutes replayed in {settings['wall_minutes']:g} "
        f"wall minutes (x{settings['compress']:g}); durations capped at "
        f"{settings['cap_duration']}; `up --bin-width {settings['bin_width']}` (the hybrid "
        f"range is 240 bins, {240 * settings['compress_bin']:g} s of wall time = 4 trace hours); "
        f"the fixed keep-alive is 10 trace minutes ({600 / settings['compress']:g} s).",
        "",
        "| policy | invocations | cold starts | cold-start % | pre-warm loads | pre-warm hits "
        "| instance-s | of which after deploy (est.) | idle instance-s | decisions |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        share = row["cold_starts"] / row["invocations"] if row["invocations"] else 0.0
        decisions = ", ".join(f"{k} {v}" for k, v in sorted(row["decisions"].items()))
        lines.append(
            f"| {row['policy']} | {row['invocations']:.0f} | {row['cold_starts']:.0f} "
            f"| {share:.1%} | {row['prewarm_loads']:.0f} | {row['prewarm_hits']:.0f} "
            f"| {row['instance_seconds']:.0f} "
            f"| {row['after_deploy_instance_seconds_estimate']:.0f} "
            f"| {row['idle_instance_seconds']:.0f} "
            f"| {decisions} |"
        )
    lines += [
        "",
        "Instance-seconds are ready instances x wall seconds (zygotes not counted); idle ones "
        "had no invocation running. Counts come from /metrics at the end of each run, summed "
        "over the trace functions. After a deploy every app is loaded, as functions always "
        "were, and kept for the policy's keep-alive unless called first: the whole range "
        "(4 trace hours) under hybrid's too-few-samples fallback, 10 trace minutes under "
        "fixed. 'After deploy' estimates that share from the trace (each function's first "
        "invocation minute); a run of 10 trace hours weighs it more than a long-running "
        "platform would.",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["policy"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].bar(names, [row["cold_starts"] for row in rows], color="tab:red")
    axes[0].set_title("cold starts")
    axes[1].bar(names, [row["instance_seconds"] for row in rows], label="loaded")
    axes[1].bar(names, [row["idle_instance_seconds"] for row in rows], label="idle")
    axes[1].set_title("instance-seconds")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wall-minutes", type=float, default=10.0)
    parser.add_argument("--compress", type=float, default=60.0, help="trace seconds per wall s")
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument(
        "--seed", type=int, default=2, help="2: 33 functions, about 6 invocations/s"
    )
    parser.add_argument("--cap-duration", default="1s")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console(stderr=True, highlight=False)
    machine = _report.machine_info(REPO)
    fixed = f"fixed:{600 / args.compress:g}s"
    rows = [run_policy(policy, args, console) for policy in ("hybrid", fixed)]
    settings = {
        "apps": args.apps,
        "seed": args.seed,
        "wall_minutes": args.wall_minutes,
        "trace_minutes": args.wall_minutes * args.compress,
        "compress": args.compress,
        "compress_bin": 60.0 / args.compress,
        "bin_width": f"{60.0 / args.compress:g}s",
        "cap_duration": args.cap_duration,
        "fixed": fixed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "settings": settings, "policies": rows}
    (args.out / "prewarm_live.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "prewarm_live.md").write_text(markdown(rows, settings, machine))
    plot(rows, args.out / "prewarm_live.png")
    console.print((args.out / "prewarm_live.md").read_text())


if __name__ == "__main__":
    main()
