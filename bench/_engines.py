"""The doorbell-engine section of bench/channel.py: shm round trips with the worker's loop
waiting on doorbells through epoll, io_uring, or io_uring with SQPOLL
(faasd_py.datapath.doorbells), at 1 and at 16 instances in flight at once.

One run: a fresh uvloop loop with the engine under test, `instances` instance processes on shm
channels, each driven by its own task in a closed loop (send an invoke of 64 B, await the
result, again); a warm-up, then `rounds` timed round trips per instance. Runs alternate between
the variants (epoll, io_uring, io_uring+sqpoll, epoll, ...) so that drift on the machine hits
them alike; a variant's figure is the median over its runs of each run's p50 and p99, and of
its throughput (round trips per second over all instances).

The worker's spin for a reply (Config.shm_worker_spin) catches most replies at 1 instance
before any doorbell rings, which hides the engines; so each point is measured both with the
default spin and with none (every reply then comes by its doorbell).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# name -> (engine, sqpoll)
VARIANTS = {
    "epoll": ("epoll", False),
    "io_uring": ("io_uring", False),
    "io_uring+sqpoll": ("io_uring", True),
}
BODY = 64


@dataclass(frozen=True)
class EngineRun:
    variant: str
    instances: int
    worker_spin: int
    run: int
    rounds: int
    p50_us: float
    p99_us: float
    per_second: float
    wakeups: int  # times the loop woke for the engine
    doorbells: int  # doorbell callbacks
    enters: int  # io_uring_enter calls
    worker_cpu_us: float  # CPU time of the worker's process (all its threads, the SQPOLL
    # kernel thread included) per round trip


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# What channel.py hands in: start a peer (kind, spin, worker_spin, cpu) -> an object with
# round_trips(body, rounds, first_id) -> samples in ns, and stop().
StartPeer = Callable[[str, int, int, "int | None"], Awaitable[Any]]


async def one_run(
    start_peer: StartPeer,
    variant: str,
    instances: int,
    rounds: int,
    spin: int,
    worker_spin: int,
    peer_cpu: int | None,
    run: int,
) -> EngineRun:
    from faasd_py.datapath import doorbells

    engine = doorbells.for_loop()
    peers = [await start_peer("shm", spin, worker_spin, peer_cpu) for _ in range(instances)]
    try:
        body = bytes(BODY)
        await asyncio.gather(*(p.round_trips(body, 200, 1) for p in peers))  # warm-up
        before = engine.statistics()
        started, cpu = time.perf_counter(), time.process_time()
        per_peer = await asyncio.gather(*(p.round_trips(body, rounds, 1_000) for p in peers))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = engine.statistics()
    finally:
        for peer in peers:
            await peer.stop()
    values = sorted(ns / 1000 for samples in per_peer for ns in samples)
    return EngineRun(
        variant=variant,
        instances=instances,
        worker_spin=worker_spin,
        run=run,
        rounds=len(values),
        p50_us=round(_percentile(values, 50), 2),
        p99_us=round(_percentile(values, 99), 2),
        per_second=round(len(values) / elapsed),
        wakeups=after.wakeups - before.wakeups,
        doorbells=after.doorbells - before.doorbells,
        enters=after.enters - before.enters,
        worker_cpu_us=round(cpu * 1e6 / len(values), 2),
    )


def measure_engines(
    start_peer: StartPeer,
    *,
    variants: Sequence[str],
    instance_counts: Sequence[int],
    worker_spins: Sequence[int],
    runs: int,
    rounds: int,
    spin: int,
    peer_cpu: int | None,
) -> list[EngineRun]:
    """Every (instances, worker spin) point, `runs` times per variant, interleaved."""
    import uvloop

    from faasd_py.datapath import doorbells

    previous = doorbells.selection()
    out = []
    try:
        for instances in instance_counts:
            for worker_spin in worker_spins:
                for run in range(runs):
                    for variant in variants:
                        engine, sqpoll = VARIANTS[variant]
                        doorbells.configure(engine, sqpoll=sqpoll)  # for the next loop
                        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                            result = runner.run(
                                one_run(
                                    start_peer,
                                    variant,
                                    instances,
                                    max(200, rounds // instances),
                                    spin,
                                    worker_spin,
                                    peer_cpu,
                                    run,
                                )
                            )
                            doorbells.close_for(runner.get_loop())
                        out.append(result)
    finally:
        doorbells.configure(previous.requested)
    return out


def summarize_engines(results: Sequence[EngineRun]) -> list[dict[str, Any]]:
    """Per (instances, worker spin, variant): medians over runs, and the spread of p50."""
    groups: dict[tuple[int, int, str], list[EngineRun]] = {}
    for r in results:
        groups.setdefault((r.instances, r.worker_spin, r.variant), []).append(r)
    rows = []
    for (instances, worker_spin, variant), runs in groups.items():
        p50s = [r.p50_us for r in runs]
        rows.append(
            {
                "instances": instances,
                "worker_spin": worker_spin,
                "variant": variant,
                "runs": len(runs),
                "p50_us": round(statistics.median(p50s), 2),
                "p50_min_us": min(p50s),
                "p50_max_us": max(p50s),
                "p99_us": round(statistics.median(r.p99_us for r in runs), 2),
                "per_second": round(statistics.median(r.per_second for r in runs)),
                "doorbells_per_1k": round(
                    1000 * sum(r.doorbells for r in runs) / sum(r.rounds for r in runs), 1
                ),
                "wakeups_per_1k": round(
                    1000 * sum(r.wakeups for r in runs) / sum(r.rounds for r in runs), 1
                ),
                "enters_per_1k": round(
                    1000 * sum(r.enters for r in runs) / sum(r.rounds for r in runs), 1
                ),
                "worker_cpu_us": round(statistics.median(r.worker_cpu_us for r in runs), 2),
            }
        )
    return rows


def engines_report(results: Sequence[EngineRun], runs: int, rounds: int) -> dict[str, Any]:
    return {
        "body": BODY,
        "runs": runs,
        "rounds": rounds,
        "summary": summarize_engines(results),
        "results": [asdict(r) for r in results],
    }


def engines_markdown(section: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Doorbell engines: epoll vs io_uring",
        "",
        f"shm round trips of {section['body']} B with the worker's loop waiting on the "
        "instances' doorbells through each engine (`faasd_py.datapath.doorbells`): `epoll` is "
        "`loop.add_reader` per eventfd plus a read() per doorbell; `io_uring` keeps an "
        "IORING_OP_READ on every eventfd and resubmits after each batch of completions in one "
        "io_uring_enter, the loop watching the ring's fd; `io_uring+sqpoll` adds a kernel "
        "thread polling the SQ. Instances run in a closed loop, all at once; "
        f"{section['runs']} runs per variant, interleaved, about {section['rounds']} round "
        "trips each; figures are medians over runs (p50 range over runs in brackets). "
        "Per 1k round trips: doorbell callbacks, loop wake-ups for the engine, io_uring_enter "
        "calls; and the worker process's CPU time per round trip (all its threads, so the "
        "SQPOLL kernel thread's polling counts).",
        "",
        "| instances | worker spin | engine | p50 (us) [range] | p99 (us) | round trips/s | "
        "doorbells | wake-ups | enters | worker CPU (us) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in section["summary"]:
        lines.append(
            f"| {row['instances']} | {row['worker_spin']} | {row['variant']} | "
            f"{row['p50_us']:.1f} [{row['p50_min_us']:.1f}-{row['p50_max_us']:.1f}] | "
            f"{row['p99_us']:.1f} | {row['per_second']} | {row['doorbells_per_1k']} | "
            f"{row['wakeups_per_1k']} | {row['enters_per_1k']} | {row['worker_cpu_us']:.1f} |"
        )
    return lines


def plot_engines(ax: Any, section: dict[str, Any]) -> None:
    """p50 bars (p99 as a marker) per point and engine."""
    rows = section["summary"]
    points = sorted({(r["instances"], r["worker_spin"]) for r in rows})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    by = {(r["instances"], r["worker_spin"], r["variant"]): r for r in rows}
    width = 0.8 / len(variants)
    for k, variant in enumerate(variants):
        xs = [i + k * width for i in range(len(points))]
        p50 = [by[(n, s, variant)]["p50_us"] for n, s in points]
        p99 = [by[(n, s, variant)]["p99_us"] for n, s in points]
        ax.bar(xs, p50, width, label=f"{variant} p50")
        ax.scatter(xs, p99, marker="_", s=200, color="black")
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(points))])
    ax.set_xticklabels([f"{n} inst.\nspin {s}" for n, s in points])
    ax.set_yscale("log")
    ax.set_ylabel("round trip (us, log); bars p50, dashes p99")
    ax.set_title("doorbell engines, 64 B")
    ax.legend(fontsize="small")
