"""What the dashboard costs the invocation path: bench/warm.py's load with and without a
dashboard open and streaming.

    python bench/dashboard_cost.py                          # 16 connections, 5 x 10 s each way
    python bench/dashboard_cost.py --duration 3 --runs 1    # a smoke run

One `faasd-py up` with bench/warm.py's `hello` (shm, sandboxed), driven by wrk; runs
alternate between "quiet" (no dashboard) and "watched", and which of the two goes first
alternates too. Watched: a client does what an open function page does for the whole run
(follows /system/dashboard/events, follows the function's logs, and asks for its series every
5 s). Alternating spreads drift on the machine over both.
Around each run it reads the CPU `up` spent (with its sandboxes) and what the rest of the
machine did. The gateway samples its counters once a second whether or not anyone watches:
both columns carry that; the watched one adds the streams.

Writes bench/results/dashboard-cost.json and dashboard-cost.md: median throughput, p50, p99
and server CPU per request of each, and watched against quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _report
import aiohttp
import warm
from _procs import ServerError
from _wrk import WrkError, ensure_wrk, write_script, wrk_version
from rich.console import Console

HERE = Path(__file__).resolve().parent
QUIET, WATCHED = "quiet", "watched"
SERIES_EVERY = 5.0  # seconds: what the function page asks for its histogram


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--runs", type=int, default=5, help="runs each way (5)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first (2)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="report folder (bench/results)"
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.runs < 1:
        parser.error("--duration must be at least 1 second and --runs at least 1")
    args.function, args.stack = "hello", None  # what warm.start_faasd reads
    return args


class Watcher:
    """An open dashboard page, on an event loop of its own in a thread: the live events, the
    function's logs, its series every SERIES_EVERY seconds. Leaving the `with` ends them;
    `events` counts the ticks it received."""

    def __init__(self, base_url: str, authorization: str, function: str) -> None:
        self._base, self._function = base_url, function
        self._headers = {"Authorization": authorization}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._task: asyncio.Task[None] | None = None
        self.events = 0
        self.series_calls = 0

    async def _watch(self) -> None:
        async with aiohttp.ClientSession(headers=self._headers) as session:
            await asyncio.gather(self._events(session), self._logs(session), self._series(session))

    async def _events(self, session: aiohttp.ClientSession) -> None:
        url = self._base + "/system/dashboard/events"
        async with session.get(url, headers={"Accept": "text/event-stream"}) as stream:
            stream.raise_for_status()
            async for line in stream.content:
                self.events += line.startswith(b"event: tick")

    async def _logs(self, session: aiohttp.ClientSession) -> None:
        url = f"{self._base}/system/logs?name={self._function}&tail=100&follow=true"
        async with session.get(url) as stream:
            stream.raise_for_status()
            async for _ in stream.content:
                pass

    async def _series(self, session: aiohttp.ClientSession) -> None:
        url = f"{self._base}/system/dashboard/series?name={self._function}"
        while True:
            async with session.get(url) as response:
                response.raise_for_status()
                await response.json()
            self.series_calls += 1
            await asyncio.sleep(SERIES_EVERY)

    def __enter__(self) -> Watcher:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._watch())

    async def _stop(self) -> None:
        assert self._task is not None
        if self._task.done():  # it failed: say why
            self._task.result()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def __exit__(self, *_: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def authorization(data_dir: Path) -> str:
    credentials = data_dir / "credentials"
    user = (credentials / "basic-auth-user").read_text().strip()
    password = (credentials / "basic-auth-password").read_text().strip()
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def run(args: argparse.Namespace, console: Console) -> None:
    wrk = ensure_wrk(console)
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-dashboard-"))
    with ExitStack() as stack:
        target = warm.start_faasd(tmp, args, console, stack)
        base = target.url.split("/function/")[0]
        auth = authorization(tmp / warm.SUBJECT.replace(" ", "-") / "data")
        script = write_script(tmp)
        if args.warmup > 0:
            warm.drive(target, args.connections, args.warmup, wrk, script)
        runs: list[dict[str, Any]] = []
        for k in range(1, args.runs + 1):
            # Which goes first alternates too: a run right after another differs a little.
            for variant in (QUIET, WATCHED) if k % 2 else (WATCHED, QUIET):
                if variant == QUIET:
                    record = warm.measured_run(
                        target, variant, args.connections, k, args, wrk, script
                    )
                else:
                    with Watcher(base, auth, args.function) as watcher:
                        time.sleep(1.5)  # the streams are open and the first tick went out
                        record = warm.measured_run(
                            target, variant, args.connections, k, args, wrk, script
                        )
                    record["ticks_received"] = watcher.events
                    record["series_calls"] = watcher.series_calls
                runs.append(record)
                console.print(
                    f"{variant:>8} run {k}: {record['rps']:>9,.0f} req/s  "
                    f"p50 {record['p50_ms']:.3f} ms  p99 {record['p99_ms']:.3f} ms  "
                    f"server {record['cpu_us']:.0f} µs/req  other cores {record['other_cores']}"
                )
    report = {
        "benchmark": "dashboard-cost",
        "machine": _report.machine_info(HERE.parent),
        "settings": {
            "duration_s": args.duration,
            "runs": args.runs,
            "connections": args.connections,
            "function": "hello (python3-http, shm, sandboxed)",
            "watched": "SSE /system/dashboard/events + /system/logs?follow + series every 5 s",
        },
        "tools": {"wrk": wrk_version(wrk)},
        "runs": runs,
        "summary": summarize(runs),
    }
    write_reports(report, args.out, console)


FIGURES = (("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("cpu_us", "µs/req"))


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Medians of each figure for each variant, and watched / quiet."""
    out: dict[str, dict[str, float]] = {}
    for variant in (QUIET, WATCHED):
        mine = [r for r in runs if r["variant"] == variant]
        out[variant] = {key: statistics.median(r[key] for r in mine) for key, _ in FIGURES}
    out["watched/quiet"] = {
        key: round(out[WATCHED][key] / out[QUIET][key], 3) if out[QUIET][key] else 0.0
        for key, _ in FIGURES
    }
    return out


def write_reports(report: dict[str, Any], out: Path, console: Console) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard-cost.json").write_text(json.dumps(report, indent=1) + "\n")
    summary, settings = report["summary"], report["settings"]
    lines = [
        *_report.header("The dashboard's cost on warm invocations", report["machine"]),
        f"`hello` under wrk at {settings['connections']} connections, {settings['runs']} runs "
        f"of {settings['duration_s']:g} s each way, alternating; medians. Watched: "
        f"{settings['watched']}.",
        "",
        "| | " + " | ".join(label for _, label in FIGURES) + " |",
        "|---|" + "---:|" * len(FIGURES),
    ]
    for variant in (QUIET, WATCHED, "watched/quiet"):
        values = " | ".join(f"{summary[variant][key]:,.3f}" for key, _ in FIGURES)
        lines.append(f"| {variant} | {values} |")
    busy = [r["other_cores"] for r in report["runs"]]
    lines += [
        "",
        f"Other work on the machine during the runs: {min(busy)}..{max(busy)} cores busy "
        "(neither `up` nor wrk). Runs on a busy machine differ by more than the dashboard does.",
    ]
    (out / "dashboard-cost.md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))
    console.print(f"reports: {out / 'dashboard-cost.md'}, {out / 'dashboard-cost.json'}")
    if plot(report["runs"], out / "dashboard-cost.png"):
        console.print(f"plot: {out / 'dashboard-cost.png'}")


def plot(runs: list[dict[str, Any]], path: Path) -> bool:
    """Each run's throughput and server CPU per request, quiet beside watched; False without
    matplotlib."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, (key, label) in zip(axes, (FIGURES[0], FIGURES[3]), strict=True):
        for variant, marker in ((QUIET, "o"), (WATCHED, "s")):
            mine = [r for r in runs if r["variant"] == variant]
            axis.plot(
                [r["run"] for r in mine], [r[key] for r in mine], marker=marker, label=variant
            )
        axis.set_xticks(sorted({r["run"] for r in runs}))
        axis.set_xlabel("run")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.25)
        axis.legend()
    fig.suptitle("hello under wrk, without and with an open dashboard")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    return _report.run_main(
        lambda: run(args, console),
        console,
        (warm.BenchError, ServerError, WrkError),
        stopped="servers stopped",
    )


if __name__ == "__main__":
    sys.exit(main())
