"""Channel micro-benchmark: round trips between the worker's end and an instance's end, shm
against socket, at 64 B, 4 KiB and 1 MiB.

    python bench/channel.py                          # writes bench/results/channel.{json,md,png}
    python bench/channel.py --rounds 2000 --sizes 64,4096
    python bench/channel.py --engine-runs 0          # without the doorbell-engine section

What one round trip is: the worker's end (asyncio on uvloop, as in `faasd-py up`) sends an
invoke message (the protocol's map) whose body has the size under test and awaits the reply;
the other end, a separate process with the instance runtime's blocking loop and channel
(`faasd_py.runtime.open_channel`, no asyncio), receives it and sends back a result map with the
same body. Each round trip is timed from before `send` to after `receive` returns the decoded
reply: the channels' own cost (encoding, transport, wake-ups), not the handler's. Kinds
alternate in blocks so drift on the machine hits both alike. Both ends are the production
classes, set up by `faasd_py.datapath.channel.prepare_channel` exactly as the worker sets up an
instance.

Targets (issue 4): shm p50 at most 15 us, and at least 3x faster than the socketpair.

A second section (bench/_engines.py) compares the worker's doorbell engines, epoll and
io_uring, for shm round trips at 1 and 16 instances at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _engines

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

TARGET_P50_US = 15.0
TARGET_SPEEDUP = 3.0
MAX_FRAME = 16 * 1024 * 1024 + 1024 * 1024


@dataclass(frozen=True)
class Summary:
    kind: str
    size: int
    rounds: int
    p50_us: float
    p99_us: float
    mean_us: float
    min_us: float
    channel_stats: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": self.size,
            "rounds": self.rounds,
            "p50_us": round(self.p50_us, 2),
            "p99_us": round(self.p99_us, 2),
            "mean_us": round(self.mean_us, 2),
            "min_us": round(self.min_us, 2),
            "channel_stats": self.channel_stats,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(kind: str, size: int, samples_ns: Sequence[int], stats: dict[str, int]) -> Summary:
    values = sorted(ns / 1000 for ns in samples_ns)
    return Summary(
        kind=kind,
        size=size,
        rounds=len(values),
        p50_us=percentile(values, 50),
        p99_us=percentile(values, 99),
        mean_us=sum(values) / len(values),
        min_us=values[0],
        channel_stats=stats,
    )


# --- the instance's end (a separate process) -----------------------------------------------------


def serve_peer(args: argparse.Namespace) -> int:
    """Answer each invoke with a result carrying its body, as the runtime's inline loop would
    (without a handler in between)."""
    from faasd_py.protocol import ChannelClosed
    from faasd_py.runtime import open_channel

    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})
    channel = open_channel(
        args.channel, args.fd, args.doorbell_fd, MAX_FRAME, args.spin, args.worker_pidfd
    )
    channel.send({"op": "ready", "pid": os.getpid(), "load_seconds": 0.0})
    while True:
        try:
            message = channel.receive()
        except ChannelClosed:
            return 0
        channel.send(
            {
                "op": "result",
                "id": message["id"],
                "status": 200,
                "headers": [],
                "body": message["body"],
                "error": None,
                "seconds": 0.0,
            }
        )


# --- the worker's end ----------------------------------------------------------------------------


class Peer:
    """An instance-side process and the worker's end of its channel."""

    def __init__(self, kind: str, process: asyncio.subprocess.Process, channel: Any) -> None:
        self.kind = kind
        self.process = process
        self.channel = channel

    @classmethod
    async def start(cls, kind: str, spin: int, worker_spin: int, cpu: int | None) -> Peer:
        from faasd_py.datapath.channel import prepare_channel

        handoff = prepare_channel(kind, MAX_FRAME, spin=spin, worker_spin=worker_spin)
        pin = [] if cpu is None else [f"--pin-cpu={cpu}"]
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--peer",
                *handoff.runtime_args,
                *pin,
                pass_fds=handoff.child_fds,
            )
        except OSError:
            handoff.abort()
            raise
        finally:
            handoff.release_child_side()
        channel = await handoff.connect(process.pid)
        ready = await channel.receive()
        assert ready["op"] == "ready", ready
        return cls(kind, process, channel)

    async def round_trips(self, body: bytes, rounds: int, first_id: int) -> list[int]:
        from faasd_py.protocol import Invocation

        channel = self.channel
        clock = time.perf_counter_ns
        samples = []
        template = Invocation(0, "bench", "POST", "/", "", [], body, 30.0).to_wire()
        for i in range(first_id, first_id + rounds):
            message = dict(template, id=i)
            started = clock()
            await channel.send(message)
            reply = await channel.receive()
            samples.append(clock() - started)
            if reply["id"] != i or len(reply["body"]) != len(body):
                raise RuntimeError(f"{self.kind}: wrong reply to {i}: id {reply['id']}")
        return samples

    def statistics(self) -> dict[str, int]:
        stats = getattr(self.channel, "statistics", None)
        return dict(vars(stats())) if stats is not None else {}

    async def stop(self) -> None:
        self.channel.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def measure(
    kinds: Sequence[str],
    sizes: Sequence[int],
    rounds: int,
    blocks: int,
    spin: int,
    worker_spin: int,
    peer_cpu: int | None,
) -> list[Summary]:
    peers = {kind: await Peer.start(kind, spin, worker_spin, peer_cpu) for kind in kinds}
    summaries = []
    try:
        next_id = 1
        for size in sizes:
            body = os.urandom(size)
            n = rounds if size <= 64 * 1024 else max(200, rounds // 10)
            per_block = max(1, n // blocks)
            samples: dict[str, list[int]] = {kind: [] for kind in kinds}
            before = {kind: peers[kind].statistics() for kind in kinds}
            for kind in kinds:  # warm-up, unrecorded
                await peers[kind].round_trips(body, min(per_block, 500), next_id)
                next_id += per_block
            for _ in range(blocks):
                for kind in kinds:
                    samples[kind] += await peers[kind].round_trips(body, per_block, next_id)
                    next_id += per_block
            for kind in kinds:
                after = peers[kind].statistics()
                delta = {k: after[k] - before[kind].get(k, 0) for k in after}
                summaries.append(summarize(kind, size, samples[kind], delta))
    finally:
        for peer in peers.values():
            await peer.stop()
    return summaries


# --- reports -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        sha = ""
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "commit": sha,
    }


def size_label(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def verdicts(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Per size: shm against socket, and the issue's targets."""
    by = {(s.kind, s.size): s for s in summaries}
    out = []
    for size in sorted({s.size for s in summaries}):
        shm, sock = by.get(("shm", size)), by.get(("socket", size))
        if shm is None or sock is None:
            continue
        speedup = sock.p50_us / shm.p50_us
        out.append(
            {
                "size": size,
                "shm_p50_us": round(shm.p50_us, 2),
                "socket_p50_us": round(sock.p50_us, 2),
                "speedup_p50": round(speedup, 2),
                "speedup_p99": round(sock.p99_us / shm.p99_us, 2),
                "meets_p50_target": shm.p50_us <= TARGET_P50_US,
                "meets_speedup_target": speedup >= TARGET_SPEEDUP,
            }
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Channel micro-benchmark",
        "",
        f"Round trip of an invoke message and its result, each carrying a body of the size "
        f"given, between the worker's end (asyncio, uvloop) and an instance-side process "
        f"(blocking loop). `bench/channel.py`, commit {m['commit']}, {m['cpu']}, "
        f"{m['cores']} cores, Linux {m['kernel']}, Python {m['python']}; load average "
        f"before: {', '.join(map(str, m['load_average']))}. shm spin: instance's end "
        f"{report['spin']} iterations, worker's end at most {report['worker_spin']} (adaptive). "
        + (
            "Each end pinned to a CPU of its own (the worker's to one, the instance's to "
            "another), as a Junction-style runtime dedicates cores; `--no-pin` leaves them to "
            "the scheduler, which on 2 cores tends to wake both onto one CPU."
            if report["pinned"]
            else "Not pinned: both ends go where the scheduler puts them."
        ),
        "",
        "| size | channel | rounds | p50 (us) | p99 (us) | mean (us) | min (us) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in report["results"]:
        lines.append(
            f"| {size_label(s['size'])} | {s['kind']} | {s['rounds']} | {s['p50_us']:.1f} | "
            f"{s['p99_us']:.1f} | {s['mean_us']:.1f} | {s['min_us']:.1f} |"
        )
    lines += [
        "",
        f"Targets: shm p50 at most {TARGET_P50_US:g} us, and at least {TARGET_SPEEDUP:g}x "
        "faster than the socketpair.",
        "",
        "| size | shm p50 (us) | socket p50 (us) | speed-up p50 | speed-up p99 | "
        "p50 target | speed-up target |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for v in report["verdicts"]:
        lines.append(
            f"| {size_label(v['size'])} | {v['shm_p50_us']:.1f} | {v['socket_p50_us']:.1f} | "
            f"{v['speedup_p50']:.2f}x | {v['speedup_p99']:.2f}x | "
            f"{'met' if v['meets_p50_target'] else 'missed'} | "
            f"{'met' if v['meets_speedup_target'] else 'missed'} |"
        )
    shm_stats = [s for s in report["results"] if s["kind"] == "shm" and s["channel_stats"]]
    if shm_stats:
        lines += [
            "",
            "shm, the worker's end, per size (warm-up included): replies received; replies "
            "its spin caught after it began (the rest were there when it looked, or came by "
            "the doorbell); doorbells it rang because the instance's end slept; sends that "
            "found the ring or arena full.",
            "",
            "| size | received | caught by spinning | doorbells rung | ring or arena full |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in shm_stats:
            st = s["channel_stats"]
            lines.append(
                f"| {size_label(s['size'])} | {st['received']} | {st['spin_hits']} | "
                f"{st['doorbells']} | {st['full']} |"
            )
    if report.get("engines"):
        lines += _engines.engines_markdown(report["engines"])
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({s["size"] for s in report["results"]})
    kinds = sorted({s["kind"] for s in report["results"]})
    by = {(s["kind"], s["size"]): s for s in report["results"]}
    engines = report.get("engines")
    fig, axes = plt.subplots(1, 3 if engines else 2, figsize=(15 if engines else 10, 4))
    if engines:
        _engines.plot_engines(axes[2], engines)
    width = 0.8 / len(kinds)
    for ax, figure in zip(axes[:2], ("p50_us", "p99_us"), strict=True):
        for k, kind in enumerate(kinds):
            xs = [i + k * width for i in range(len(sizes))]
            ys = [by[(kind, size)][figure] for size in sizes]
            ax.bar(xs, ys, width, label=kind)
        ax.set_xticks([i + width * (len(kinds) - 1) / 2 for i in range(len(sizes))])
        ax.set_xticklabels([size_label(s) for s in sizes])
        ax.set_yscale("log")
        ax.set_ylabel(f"round trip {figure.split('_')[0]} (us, log)")
        ax.set_title(f"round trip {figure.split('_')[0]}")
        if figure == "p50_us":
            ax.axhline(TARGET_P50_US, color="grey", linestyle="--", linewidth=1)
        ax.legend()
    fig.suptitle(
        "faasd-py channel round trip: shm vs socketpair" + (", doorbell engines" if engines else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "channel.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "channel.md").write_text(markdown(report))
    try:
        plot(report, out / "channel.png")
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plot", file=sys.stderr)


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="shm vs socket channel round trips")
    parser.add_argument("--sizes", default="64,4096,1048576", help="body sizes in bytes")
    parser.add_argument("--rounds", type=int, default=20000, help="round trips per small size")
    parser.add_argument("--blocks", type=int, default=4, help="alternations between kinds")
    parser.add_argument("--spin", type=int, default=None, help="shm spin (default: Config's)")
    parser.add_argument(
        "--worker-spin", type=int, default=None, help="shm worker spin (default: Config's)"
    )
    parser.add_argument("--kinds", default="shm,socket")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="leave both ends to the scheduler (default: the worker's end on CPU 0, the "
        "instance's on CPU 1, as a Junction-style runtime dedicates cores)",
    )
    parser.add_argument(
        "--engine-runs", type=int, default=5, help="runs per doorbell engine (0: no section)"
    )
    parser.add_argument("--engine-rounds", type=int, default=4000, help="round trips per run")
    parser.add_argument("--engines", default=",".join(_engines.VARIANTS))
    parser.add_argument("--out", type=Path, default=HERE / "results")
    # The instance's end, started by the benchmark itself.
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--channel", help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--doorbell-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-pidfd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pin-cpu", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer:
        return serve_peer(args)
    import uvloop

    from faasd_py import native
    from faasd_py.config import DEFAULT_SHM_SPIN, DEFAULT_SHM_WORKER_SPIN

    kinds = [k for k in args.kinds.split(",") if k]
    if "shm" in kinds and not native.HAS_NATIVE:
        print(f"the native shim is {native.REASON}: shm cannot run", file=sys.stderr)
        return 1
    spin = DEFAULT_SHM_SPIN if args.spin is None else args.spin
    worker_spin = DEFAULT_SHM_WORKER_SPIN if args.worker_spin is None else args.worker_spin
    sizes = [int(s) for s in args.sizes.split(",") if s]
    peer_cpu: int | None = None
    if args.pin and len(os.sched_getaffinity(0)) >= 2:
        worker_cpu, peer_cpu = sorted(os.sched_getaffinity(0))[:2]
        os.sched_setaffinity(0, {worker_cpu})
    report_machine = machine()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        summaries = runner.run(
            measure(kinds, sizes, args.rounds, args.blocks, spin, worker_spin, peer_cpu)
        )
    engines = None
    if args.engine_runs > 0:
        results = _engines.measure_engines(
            Peer.start,
            variants=[v for v in args.engines.split(",") if v],
            instance_counts=(1, 16),
            worker_spins=(worker_spin, 0),
            runs=args.engine_runs,
            rounds=args.engine_rounds,
            spin=spin,
            peer_cpu=peer_cpu,
        )
        engines = _engines.engines_report(results, args.engine_runs, args.engine_rounds)
    report = {
        "benchmark": "channel",
        "machine": report_machine,
        "spin": spin,
        "worker_spin": worker_spin,
        "pinned": peer_cpu is not None,
        "native": native.describe(),
        "results": [s.to_json() for s in summaries],
        "verdicts": verdicts(summaries),
        "engines": engines,
    }
    write_reports(report, args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
