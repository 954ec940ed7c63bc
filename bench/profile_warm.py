"""Where a warm invocation's server CPU goes: a profile of `faasd-py up` under wrk load.

    python bench/profile_warm.py                  # writes bench/results/warm-profile.{md,json}
    python bench/profile_warm.py --duration 5 --connections 16

Starts `faasd-py up` with the warm benchmark's hello function (shm channel, sandboxed, as
bench/warm.py does), warms it up, then, each phase under its own wrk run:

1. CPU: user + system seconds of `up` and of its instances (/proc), and their context switches
   (/proc/PID/task/*/status), per request, with nothing attached;
2. system calls: `perf stat -e raw_syscalls:sys_enter,context-switches` on `up` and on the
   instances, and `strace -c -f` on each (which slows them; its counts per request are by name);
3. py-spy (`--nonblocking`, Python frames, idle samples left out: CPU samples, not wall clock,
   which would mostly show an event loop waiting) on `up` and on every instance;
4. perf (`perf record -g -e cpu-clock`), for the C side: interpreter, kernel, shim, libraries.

The breakdown spreads each side's measured CPU per request (phase 1) over its py-spy samples,
grouped into the path's stages by module and function (bench/_warm_profile.py); the
instances' doorbell waits take the share perf finds in the kernel and the shim.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _cpu
import _platform
import _report
import _warm_profile as wp
import warm
from _procs import ServerError
from _wrk import WrkError, WrkResult, ensure_wrk, run_wrk, write_script
from rich.console import Console

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY_SPY = Path(sys.executable).parent / "py-spy"


class ProfileError(Exception):
    """The profile cannot go on; the message says why."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase (8)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second (250)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results", help="report folder (bench/results)"
    )
    args = parser.parse_args(argv)
    if args.duration < 2:
        parser.error("--duration must be at least 2 seconds")
    return args


def ensure_py_spy(console: Console) -> str:
    if not PY_SPY.exists():
        console.print("py-spy not found: installing it (it is in the bench extra)")
        argv = [sys.executable, "-m", "pip", "install", "-q", "py-spy"]
        if subprocess.run(argv, check=False).returncode != 0 or not PY_SPY.exists():
            raise ProfileError("could not install py-spy: `pip install py-spy` and run again")
    return str(PY_SPY)


def instances(up: int) -> list[int]:
    """The instances below `up`: its descendants with no children (not the zygotes)."""
    below = _cpu.tree(up)[1:]
    parents = {_parent(pid) for pid in below}
    return [pid for pid in below if pid not in parents]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


class Load:
    """wrk against the function for `seconds`, in a thread (from now on), while something else
    measures."""

    def __init__(self, wrk: str, url: str, script: Path, connections: int, seconds: float):
        self.result: WrkResult | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, args=(wrk, url, script, connections, seconds), daemon=True
        )
        self._thread.start()

    def _run(self, wrk: str, url: str, script: Path, connections: int, seconds: float) -> None:
        try:
            self.result = run_wrk(
                wrk, url, connections=connections, threads=2, seconds=seconds, script=script
            )
        except WrkError as exc:
            self.error = exc

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join()

    def requests(self) -> int:
        self._thread.join()
        if self.result is None:
            raise ProfileError(f"wrk failed: {self.error}")
        return max(1, self.result.requests)


def attached(argvs: Sequence[list[str]], during: Callable[[], int]) -> tuple[int, list[str]]:
    """Run tools that attach to processes until `during()` returns (the requests it made),
    then stop them with SIGINT, as Ctrl-C would; (requests, each tool's stderr)."""
    tools = [
        subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for a in argvs
    ]
    try:
        requests = during()
    finally:
        for tool in tools:
            with contextlib.suppress(ProcessLookupError):
                tool.send_signal(signal.SIGINT)
    return requests, [tool.communicate(timeout=60)[1] for tool in tools]


def phase_cpu(up: int, load: Callable[[], Load]) -> dict[str, Any]:
    pods = instances(up)
    before, ctx_up, ctx_inst = (
        _cpu.sample(up),
        _cpu.context_switches([up]),
        _cpu.context_switches(pods),
    )
    with load() as running:
        requests = running.requests()
    cpu = _cpu.sample(up).minus(before)
    after_up, after_inst = _cpu.context_switches([up]), _cpu.context_switches(pods)
    assert running.result is not None
    return {
        "requests": requests,
        "rps": round(running.result.rps),
        "p50_ms": running.result.p50_ms,
        "instances": len(pods),
        "up_us": round(cpu.platform_s * 1e6 / requests, 2),
        "instances_us": round(cpu.descendants_s * 1e6 / requests, 2),
        "up_voluntary_cs": round((after_up[0] - ctx_up[0]) / requests, 3),
        "up_involuntary_cs": round((after_up[1] - ctx_up[1]) / requests, 3),
        "instances_voluntary_cs": round((after_inst[0] - ctx_inst[0]) / requests, 3),
        "instances_involuntary_cs": round((after_inst[1] - ctx_inst[1]) / requests, 3),
    }


def _perf_stat(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].replace(".", "").isdigit():
            out[parts[2]] = float(parts[0])
    return out


def _strace(text: str) -> dict[str, int]:
    """calls per syscall name from `strace -c`'s table."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
            out[parts[-1]] = int(parts[3])
    return out


def phase_syscalls(up: int, load: Callable[[], Load], console: Console) -> dict[str, Any]:
    pods = ",".join(map(str, instances(up)))
    found: dict[str, Any] = {}
    if shutil.which("perf"):
        events = "raw_syscalls:sys_enter,context-switches,cpu-migrations"
        argvs = [["perf", "stat", "-x,", "-e", events, "-p", str(p)] for p in (up, pods)]
        requests, errs = attached(argvs, lambda: load().requests())
        for side, err in zip(("up", "instances"), errs, strict=True):
            found[f"perf_stat_{side}"] = {
                k: round(v / requests, 3) for k, v in _perf_stat(err).items()
            }
    else:
        console.print("[yellow]no perf[/]: no system call counts from perf stat")
    if shutil.which("strace"):
        argvs = [["strace", "-c", "-f", "-p", str(up)], ["strace", "-c", "-f", "-p", pods]]
        # strace takes one pid per -p, or a comma/space list in recent versions.
        requests, errs = attached(argvs, lambda: load().requests())
        for side, err in zip(("up", "instances"), errs, strict=True):
            calls = _strace(err)
            found[f"strace_{side}"] = {
                k: round(v / requests, 3) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
            }
    return found


def phase_pyspy(
    up: int, load: Callable[[], Load], args: argparse.Namespace, tmp: Path, py_spy: str
) -> tuple[wp.Shares, wp.Shares]:
    pods = instances(up)
    seconds = max(1, round(args.duration - 1))
    outs = [tmp / f"pyspy-{pid}.raw" for pid in (up, *pods)]
    argvs = [
        [
            *(py_spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--nonblocking"),
            *("--duration", str(seconds), "--format", "raw", "--output", str(out)),
        ]
        for pid, out in zip((up, *pods), outs, strict=True)
    ]
    tools = [
        subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for a in argvs
    ]
    with load():
        for tool in tools:
            tool.wait(seconds + 60)
    texts = [out.read_text() if out.exists() else "" for out in outs]
    instance_samples = [s for text in texts[1:] for s in wp.parse_pyspy(text)]
    return wp.shares(wp.parse_pyspy(texts[0])), wp.shares(instance_samples)


def phase_perf(up: int, load: Callable[[], Load], tmp: Path) -> dict[str, Any]:
    if not shutil.which("perf"):
        return {}
    pods = ",".join(map(str, instances(up)))
    files = {"up": tmp / "up.perf", "instances": tmp / "instances.perf"}
    argvs = [
        ["perf", "record", "-g", "-e", "cpu-clock", "-F", "999", "-o", str(path), "-p", pids]
        for path, pids in zip(files.values(), (str(up), pods), strict=True)
    ]
    attached(argvs, lambda: load().requests())
    found: dict[str, Any] = {}
    for side, path in files.items():
        report = ["perf", "report", "-i", str(path), "--no-children", "-g", "none"]
        report += ["--sort", "dso,sym", "--stdio"]
        text = subprocess.run(report, capture_output=True, text=True, check=False).stdout
        rows = wp.parse_perf(text)
        found[side] = {
            "libraries": {k: round(v, 2) for k, v in wp.by_library(rows).items()},
            "top_symbols": [{"percent": p, "library": d, "symbol": s} for p, d, s in rows[:15]],
            "wait_share": round(wp.wait_share(rows), 4),
        }
    return found


def run(args: argparse.Namespace, console: Console) -> None:
    wrk = ensure_wrk(console)
    py_spy = ensure_py_spy(console)
    tmp = Path(tempfile.mkdtemp(prefix="faasd-profile-warm-"))
    try:
        with ExitStack() as stack:
            stack_file = warm.write_stack(tmp / "functions")
            platform = _platform.start(
                tmp, stack_file, console, stack, ready=[("hello", warm.BODY)]
            )
            url, up = platform.function_url("hello"), platform.server.process.pid
            script = write_script(tmp)

            def load(seconds: float = args.duration) -> Load:
                return Load(wrk, url, script, args.connections, seconds)

            load_before = os.getloadavg()
            with console.status("warming up"):
                load(3).requests()
            with console.status("phase 1: CPU and context switches per request"):
                cpu = phase_cpu(up, load)
            console.print(f"CPU: {cpu}")
            with console.status("phase 2: system calls (perf stat, strace)"):
                syscalls = phase_syscalls(up, load, console)
            with console.status("phase 3: py-spy"):
                up_shares, instance_shares = phase_pyspy(up, load, args, tmp, py_spy)
            with console.status("phase 4: perf record"):
                perf = phase_perf(up, load, tmp)
            load_after = os.getloadavg()
        wait = perf.get("instances", {}).get("wait_share", 0.0)
        rows = wp.breakdown(cpu["up_us"], up_shares, cpu["instances_us"], instance_shares, wait)
        machine: dict[str, Any] = {
            **_report.machine_info(REPO),
            "load_average_1_5_15_min": {
                "before": [round(v, 2) for v in load_before],
                "after": [round(v, 2) for v in load_after],
            },
        }
        report: dict[str, Any] = {
            "benchmark": "warm-profile",
            "machine": machine,
            "settings": {
                "connections": args.connections,
                "duration_s": args.duration,
                "py_spy_rate": args.rate,
                "channel": platform.banner_value("channel"),
            },
            "cpu": cpu,
            "syscalls": syscalls,
            "breakdown": [r.to_json() for r in rows],
            "top_up": wp.top_leaves(up_shares, cpu["up_us"]),
            "top_instances": wp.top_leaves(instance_shares, cpu["instances_us"] * (1 - wait)),
            "py_spy_samples": {
                "up": {"total": up_shares.total, "waits": up_shares.waits},
                "instances": {"total": instance_shares.total, "waits": instance_shares.waits},
            },
            "perf": perf,
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "warm-profile.json").write_text(json.dumps(report, indent=2) + "\n")
        text = wp.markdown(report, _report.header("Where a warm invocation's CPU goes", machine))
        (args.out / "warm-profile.md").write_text(text)
        console.print(text, markup=False, highlight=False)
        console.print(f"wrote {args.out / 'warm-profile.json'} and {args.out / 'warm-profile.md'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    failures = (ProfileError, ServerError, WrkError, subprocess.TimeoutExpired)
    return _report.run_main(
        lambda: run(args, console), console, failures, stopped="server stopped", what="profile"
    )


if __name__ == "__main__":
    sys.exit(main())
