"""The Faa$T cache against its backing store alone: a data-heavy app over Redis 5 ms away.

    python bench/cache.py                     # or: make bench-cache
    python bench/cache.py --runs 1 --invocations 500

What it does, all in one run:

1. starts a redis-server of its own on a free port and writes `--keys` objects into it, sized
   like the 2020 Azure blob trace (median 5.2 KB, p75 9 KB, p90 26 KB, p99 1.5 MB; log-linear
   between those quantiles, 100 B to 4 MiB at the ends);
2. drives the app's storage as the worker does for its instances: `--concurrency` invocations at
   a time, each one storage call (a read with Zipf popularity, or a write 10% of the time, of an
   object of the same key's size), against the store with `--latency` added to every call;
3. per run and variant: no cache (every call to the store); Faa$T in steady state (after a
   warm-up); Faa$T right after a reload (cache dropped, access statistics kept), with and without
   pre-warm. The Faa$T rows come twice: with the version check paying the added latency like
   every other call (the store is remote, versions and all), and with the version check at no
   added latency (versions kept next to the worker, blobs far away);
4. writes bench/results/cache.json (the machine, settings, every run, medians over runs),
   cache.md (the tables and the targets) and cache.png.

This is the cache's API level (faasd_py.cache.AppCache, as StorageService calls it): no HTTP,
no channel to an instance, no handler.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import io
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _report
import aiohttp
from _procs import free_port
from rich.console import Console

from faasd_py import server
from faasd_py.cache import (
    ANNOTATION_CACHE,
    AppStorage,
    CacheManager,
    CacheSettings,
    MemoryStats,
    SizingPolicy,
)
from faasd_py.cache._manager import DirectStorage
from faasd_py.config import Config
from faasd_py.packages import PackageStore
from faasd_py.spec import LABEL_APP, FunctionSpec, StackFunction
from faasd_py.storage import LatencyStore, ObjectStore
from faasd_py.storage._redis import RedisStore

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = "bench-data"
MiB = 1024 * 1024
# (cumulative fraction, bytes): the 2020 Azure blob trace's quantiles, and ends we chose.
BLOB_QUANTILES = [
    (0.0, 100),
    (0.5, 5_200),
    (0.75, 9_000),
    (0.9, 26_000),
    (0.99, 1_500_000),
    (1.0, 4 * MiB),
]
FIRST = 50  # the pre-warm target: hit rate within the first 50 invocations after a reload


def blob_size(u: float) -> int:
    """The object size at quantile u, log-linear between the trace's quantiles."""
    fractions = [q for q, _ in BLOB_QUANTILES]
    i = max(1, bisect.bisect_left(fractions, u))
    (q0, s0), (q1, s1) = BLOB_QUANTILES[i - 1], BLOB_QUANTILES[i]
    t = 0.0 if q1 == q0 else (u - q0) / (q1 - q0)
    return round(math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0))))


@dataclass(frozen=True)
class Workload:
    sizes: list[int]  # per key index
    cumulative: list[float]  # Zipf popularity, cumulative

    @classmethod
    def make(cls, keys: int, zipf: float, seed: int) -> Workload:
        rng = random.Random(seed)
        sizes = [blob_size(rng.random()) for _ in range(keys)]
        weights = [1 / (rank + 1) ** zipf for rank in range(keys)]
        total, acc, cumulative = sum(weights), 0.0, []
        for w in weights:
            acc += w / total
            cumulative.append(acc)
        return cls(sizes, cumulative)

    def payloads(self) -> dict[int, bytes]:
        """Bytes to write, one buffer per distinct size."""
        return {size: os.urandom(size) for size in set(self.sizes)}

    def ops(self, count: int, write_fraction: float, seed: int) -> list[tuple[str, int]]:
        rng = random.Random(seed)
        out = []
        for _ in range(count):
            key = min(bisect.bisect_left(self.cumulative, rng.random()), len(self.sizes) - 1)
            out.append(("put" if rng.random() < write_fraction else "get", key))
        return out


def key_name(index: int) -> str:
    return f"blobs/{index:06d}"


# One invocation: (op, key index) -> None, raising if the answer is wrong.
Call = Callable[[str, int], Awaitable[None]]


async def drive(call: Call, ops: Sequence[tuple[str, int]], concurrency: int) -> list[float]:
    """Run `ops` `concurrency` at a time (closed loop); each one's latency in seconds."""
    latencies = [0.0] * len(ops)
    cursor = iter(range(len(ops)))

    async def worker() -> None:
        for i in cursor:
            op, key = ops[i]
            start = time.perf_counter()
            await call(op, key)
            latencies[i] = time.perf_counter() - start

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def storage_calls(storage: AppStorage, sizes: list[int], payloads: dict[int, bytes]) -> Call:
    """Invocations at the cache's API: one storage call each."""

    async def call(op: str, key: int) -> None:
        if op == "get":
            data = await storage.get(key_name(key))
            assert data is not None and len(data) == sizes[key]
        else:
            await storage.put(key_name(key), payloads[sizes[key]])

    return call


def summary(latencies: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] * 1e3,
    }


def hit_rate(before: Any, after: Any) -> float:
    hits = after.hits - before.hits
    reads = hits + after.misses - before.misses + after.bypassed_reads - before.bypassed_reads
    return hits / reads if reads else 0.0


async def one_run(
    url: str, args: argparse.Namespace, work: Workload, seed: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    payloads = work.payloads()
    measured = work.ops(args.invocations, args.writes, seed)
    warmup = work.ops(args.warmup, args.writes, seed + 1)

    def store(version_latency: float) -> ObjectStore:
        return LatencyStore(RedisStore(url), args.latency, version_latency)

    direct_store = store(args.latency)
    direct = storage_calls(DirectStorage(APP, direct_store), work.sizes, payloads)
    latencies = await drive(direct, measured, args.concurrency)
    rows.append({"variant": "no cache", **summary(latencies)})
    await direct_store.close()

    for model, version_latency in (("", args.latency), (", versions near", 0.0)):
        saved = MemoryStats()
        settings = CacheSettings(policy=SizingPolicy(max_per_app=args.budget, total=args.budget))
        manager = CacheManager(store(version_latency), settings, saved)
        calls = storage_calls(await manager.open(APP), work.sizes, payloads)
        await drive(calls, warmup, args.concurrency)
        manager.rebalance()
        cache = manager.cache_of(APP)
        assert cache is not None
        before = cache.statistics()
        latencies = await drive(calls, measured, args.concurrency)
        after = cache.statistics()
        steady = hit_rate(before, after)
        rows.append(
            {
                "variant": f"Faa$T{model}",
                **summary(latencies),
                "hit_rate": steady,
                "budget_bytes": after.capacity,
                "bytes_cached": after.bytes_cached,
                "version_check_mean_ms": after.version_check_seconds_mean * 1e3,
            }
        )
        await manager.release(APP)
        if model:
            await manager.close()
            continue
        # Reloads: the app's cache is dropped (its statistics kept) and made again when its
        # first instance starts loading; the first invocation comes after that instance's cold
        # start (`--cold-start`), or at once (0 ms: the worst case for pre-warm).
        reloads = [(True, args.cold_start), (False, args.cold_start), (True, 0.0)]
        for prewarm, gap in reloads:
            reloaded = CacheManager(
                store(version_latency),
                CacheSettings(policy=settings.policy, prewarm=prewarm),
                saved,
            )
            calls = storage_calls(await reloaded.open(APP), work.sizes, payloads)
            cache = reloaded.cache_of(APP)
            assert cache is not None
            start = cache.statistics()
            await asyncio.sleep(gap)
            first = await drive(calls, measured[:FIRST], args.concurrency)
            early = hit_rate(start, cache.statistics())
            rest = await drive(calls, measured[FIRST:], args.concurrency)
            stats = cache.statistics()
            name = "pre-warm" if prewarm else "no pre-warm"
            rows.append(
                {
                    "variant": f"reload, {name}, first call after {gap * 1e3:g} ms",
                    **summary(first + rest),
                    "hit_rate": hit_rate(start, stats),
                    f"hit_rate_first_{FIRST}": early,
                    f"share_of_steady_first_{FIRST}": early / steady if steady else 0.0,
                    "first_invocation_ms": first[0] * 1e3,
                    "prewarmed_keys": stats.prewarmed_keys,
                    "prewarmed_read": stats.prewarmed_read,
                }
            )
            await reloaded.close()
        await manager.close()
    return rows


# The data-heavy function of the platform runs: reads (GET) or writes (POST) one object of its
# app, and answers with the size it read, as a function that computes on the data would.
HANDLER = """
def handle(event, context):
    key = event.query["key"]
    if event.method == "POST":
        context.storage.put(key, event.body)
        return "stored"
    data = context.storage.get(key)
    return {"statusCode": 200 if data is not None else 404, "body": str(len(data or b""))}
"""


def http_calls(
    session: aiohttp.ClientSession, url: str, sizes: list[int], payloads: dict[int, bytes]
) -> Call:
    """Invocations through the platform: HTTP to the gateway, the function's storage calls over
    its instance's channel to the worker's cache."""

    async def call(op: str, key: int) -> None:
        target = f"{url}?key={key_name(key)}"
        if op == "get":
            async with session.get(target) as response:
                body = await response.read()
                assert response.status == 200 and int(body) == sizes[key], (response.status, body)
        else:
            async with session.post(target, data=payloads[sizes[key]]) as response:
                assert response.status == 200, (response.status, await response.read())

    return call


async def start_platform(
    tmp: Path, url: str, args: argparse.Namespace, prewarm: bool, first: bool
) -> server.Platform:
    """`faasd-py up` in this process over the bench's Redis; the first time, build and deploy
    the two functions of the app (the same handler, cache off and on); later starts restore
    them from the registry, as a restarted platform does."""
    config = Config(
        data_dir=tmp / "data",
        port=0,
        storage=url,
        storage_latency=args.latency,
        cache_prewarm=prewarm,
    )
    platform = await server.start(config, Console(file=io.StringIO()))
    if first:
        source = tmp / "src"
        source.mkdir(exist_ok=True)
        (source / "handler.py").write_text(HANDLER)
        (source / "requirements.txt").write_text("")
        store = PackageStore(config.packages_dir)
        store.build(
            StackFunction(
                FunctionSpec(service="x", image="cachebench:latest"), "python3-http", source
            )
        )
        for name, annotations in (("nocache", {ANNOTATION_CACHE: "off"}), ("faast", {})):
            spec = FunctionSpec(
                service=name,
                image="cachebench:latest",
                labels={LABEL_APP: APP},
                annotations=annotations,
                env_vars={"max_inflight": str(args.concurrency)},
            )
            await platform.registry.put_function(spec)
            platform.worker.apply(spec, {})
    return platform


async def platform_run(
    url: str, tmp: Path, args: argparse.Namespace, work: Workload, seed: int
) -> list[dict[str, Any]]:
    """The same comparison through the platform: no cache and Faa$T on a running platform,
    then Faa$T right after the platform restarts (its caches gone, their statistics kept in the
    registry), with and without pre-warm."""
    payloads = work.payloads()
    measured = work.ops(args.invocations, args.writes, seed)
    warmup = work.ops(args.warmup, args.writes, seed + 1)
    rows: list[dict[str, Any]] = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        platform = await start_platform(tmp, url, args, prewarm=True, first=True)
        try:
            nocache = http_calls(session, f"{platform.url}/function/nocache", work.sizes, payloads)
            faast = http_calls(session, f"{platform.url}/function/faast", work.sizes, payloads)
            await drive(nocache, measured[: args.concurrency], args.concurrency)  # cold starts
            rows.append(
                {
                    "variant": "platform: no cache",
                    **summary(await drive(nocache, measured, args.concurrency)),
                }
            )
            await drive(faast, warmup, args.concurrency)
            before = platform.worker.cache_statistics()[APP]
            latencies = await drive(faast, measured, args.concurrency)
            after = platform.worker.cache_statistics()[APP]
            steady = hit_rate(before, after)
            rows.append({"variant": "platform: Faa$T", **summary(latencies), "hit_rate": steady})
        finally:
            await server.stop(platform)
        for prewarm in (True, False):
            platform = await start_platform(tmp, url, args, prewarm=prewarm, first=False)
            try:
                faast = http_calls(session, f"{platform.url}/function/faast", work.sizes, payloads)
                started = time.perf_counter()
                first = await drive(faast, measured[:FIRST], args.concurrency)
                stats = platform.worker.cache_statistics()[APP]
                early = stats.hits / max(1, stats.hits + stats.misses + stats.bypassed_reads)
                rest = await drive(faast, measured[FIRST:], args.concurrency)
                whole = platform.worker.cache_statistics()[APP]
                name = "pre-warm" if prewarm else "no pre-warm"
                rows.append(
                    {
                        "variant": f"platform: restart, {name}",
                        **summary(first + rest),
                        "hit_rate": hit_rate(_ZERO, whole),
                        f"hit_rate_first_{FIRST}": early,
                        f"share_of_steady_first_{FIRST}": early / steady if steady else 0.0,
                        "first_50_seconds": time.perf_counter() - started,
                        "prewarmed_keys": whole.prewarmed_keys,
                        "prewarmed_read": whole.prewarmed_read,
                    }
                )
            finally:
                await server.stop(platform)
    finally:
        await session.close()
    return rows


@dataclass(frozen=True)
class _Zero:
    hits: int = 0
    misses: int = 0
    bypassed_reads: int = 0


_ZERO = _Zero()


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"redis://127.0.0.1:{port}/0"


async def seed(url: str, work: Workload) -> None:
    store = RedisStore(url)
    for attempt in range(100):
        try:
            await store.ping()
            break
        except Exception:
            if attempt == 99:
                raise
            await asyncio.sleep(0.05)
    for index, size in enumerate(work.sizes):
        await store.put(APP, key_name(index), os.urandom(size))
    await store.close()


def combine(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per variant, the median over runs of every figure, and its min and max."""
    out = []
    for index, row in enumerate(runs[0]):
        figures = {k for k, v in row.items() if isinstance(v, int | float)}
        cell: dict[str, Any] = {"variant": row["variant"], "runs": len(runs)}
        for figure in sorted(figures):
            values = [run[index][figure] for run in runs]
            cell[figure] = statistics.median(values)
            cell[f"{figure}_range"] = [min(values), max(values)]
        out.append(cell)
    return out


def targets(cells: list[dict[str, Any]]) -> list[str]:
    by = {c["variant"]: c for c in cells}
    lines = []
    pairs = [
        ("no cache", "Faa$T"),
        ("no cache", "Faa$T, versions near"),
        ("platform: no cache", "platform: Faa$T"),
    ]
    for baseline, subject in pairs:
        if baseline not in by or subject not in by:
            continue
        base, steady = by[baseline], by[subject]
        mean_cut = 1 - steady["mean_ms"] / base["mean_ms"]
        p99_cut = 1 - steady["p99_ms"] / base["p99_ms"]
        lines.append(
            f"{subject}: mean latency {mean_cut:.0%} lower than no cache (target >= 60%: "
            f"{'met' if mean_cut >= 0.6 else 'NOT met'}); p99 {p99_cut:.0%} lower (target >= 50%: "
            f"{'met' if p99_cut >= 0.5 else 'NOT met'})"
        )
    for cell in cells:
        share = cell.get(f"share_of_steady_first_{FIRST}")
        if share is not None:
            lines.append(
                f"{cell['variant']}: the first {FIRST} invocations reach {share:.0%} of the steady "
                f"hit rate (pre-warm target >= 80%: {'met' if share >= 0.8 else 'NOT met'})"
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    cells, settings = report["summary"], report["settings"]
    lines = [
        *_report.header(
            "Faa$T cache vs no cache, at the cache API and through the platform", report["machine"]
        ),
        ", ".join(f"{k}: {v}" for k, v in settings.items()),
        "",
        f"Medians over {settings['runs']} runs. An invocation is one storage call (90% reads, "
        "10% writes): at the cache's API, the call; in the 'platform' rows, an HTTP invocation "
        "of a function that makes the call. Hit rates are of reads; 'first "
        f"{FIRST}': the first {FIRST} invocations after a reload or restart.",
        "",
        f"| variant | mean ms | p50 ms | p99 ms | hit rate | first {FIRST} | of steady |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        first = c.get(f"hit_rate_first_{FIRST}")
        share = c.get(f"share_of_steady_first_{FIRST}")
        rate = c.get("hit_rate")
        lines.append(
            f"| {c['variant']} | {c['mean_ms']:.2f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} "
            f"| {'' if rate is None else f'{rate:.0%}'} "
            f"| {'' if first is None else f'{first:.0%}'} "
            f"| {'' if share is None else f'{share:.0%}'} |"
        )
    lines += ["", "Targets:", "", *(f"- {t}" for t in report["targets"])]
    lines += ["", "Notes:", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(lines) + "\n"


def plot(cells: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    names = [c["variant"] for c in cells]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    xs = range(len(names))
    for offset, figure in ((-0.2, "mean_ms"), (0.2, "p99_ms")):
        left.bar([x + offset for x in xs], [c[figure] for c in cells], 0.4, label=figure[:-3])
    left.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    left.set_ylabel("ms per invocation")
    left.legend()
    left.set_title("latency")
    rates = [(c["variant"], c.get("hit_rate"), c.get(f"hit_rate_first_{FIRST}")) for c in cells]
    shown = [(n, r, f) for n, r, f in rates if r is not None]
    for offset, label, index in ((-0.2, "whole run", 1), (0.2, f"first {FIRST}", 2)):
        right.bar(
            [i + offset for i in range(len(shown))],
            [row[index] or 0.0 for row in shown],
            0.4,
            label=label,
        )
    right.set_xticks(range(len(shown)), [n for n, *_ in shown], rotation=30, ha="right", fontsize=8)
    right.set_ylim(0, 1)
    right.set_title("hit rate of reads")
    right.legend()
    fig.suptitle("Faa$T cache over Redis with added latency")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--invocations", type=int, default=3000, help="measured, per variant")
    parser.add_argument("--warmup", type=int, default=3000, help="before steady-state Faa$T")
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--writes", type=float, default=0.1)
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per store call")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--cold-start",
        type=float,
        default=0.05,
        help="seconds from an app's load to its first invocation after a reload",
    )
    parser.add_argument("--budget", type=int, default=256 * MiB, help="the app's maximum")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--level",
        choices=("both", "api", "platform"),
        default="both",
        help="at the cache's API, through the platform (HTTP, instances, channels), or both",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="faasd-bench-cache-"))
    process, url = start_redis(tmp)
    try:
        work = Workload.make(args.keys, args.zipf, args.seed)
        await seed(url, work)
        console.print(
            f"{args.keys} objects in {url}: {sum(work.sizes) / MiB:.1f} MiB, "
            f"median {statistics.median(work.sizes):,} B"
        )
        load_before = os.getloadavg()
        runs = []
        for index in range(args.runs):
            run_seed = args.seed + 100 * (index + 1)
            rows = await one_run(url, args, work, run_seed) if args.level != "platform" else []
            if args.level != "api":
                run_tmp = tmp / f"platform-{index}"
                run_tmp.mkdir()
                rows += await platform_run(url, run_tmp, args, work, run_seed)
            runs.append(rows)
            console.print(f"run {index + 1}/{args.runs} done")
        load_after = os.getloadavg()
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    cells = combine(runs)
    machine = {
        **_report.machine_info(REPO),
        "load_average_1_5_15_min": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_after],
        },
    }
    sizes = sorted(work.sizes)
    return {
        "benchmark": "cache",
        "machine": machine,
        "settings": {
            "runs": args.runs,
            "invocations": args.invocations,
            "warmup": args.warmup,
            "keys": args.keys,
            "zipf_s": args.zipf,
            "writes": args.writes,
            "store": "redis-server (local) + added latency per call",
            "added_latency_ms": args.latency * 1e3,
            "concurrency": args.concurrency,
            "cold_start_ms": args.cold_start * 1e3,
            "budget_max_bytes": args.budget,
        },
        "object_sizes": {
            "total_bytes": sum(sizes),
            **{
                f"p{q}": sizes[min(len(sizes) - 1, len(sizes) * q // 100)] for q in (50, 75, 90, 99)
            },
        },
        "summary": cells,
        "targets": targets(cells),
        "notes": [
            f"Added latency ON: every store call waits {args.latency * 1e3:g} ms before it goes to "
            "a local redis-server, to stand in for remote blob storage; in the 'versions near' "
            "rows the version check (HGET of one field) gets no added latency, as if versions "
            "were kept next to the worker and only the blobs far away.",
            "Rows without 'platform' are measured at the cache's API (AppCache, DirectStorage for "
            "no cache) as the worker's StorageService calls it. 'platform' rows go through "
            "`faasd-py up` in the bench's process (default channel and isolation, zygote cold "
            "starts): HTTP to the gateway, a python3-http function (max_inflight = concurrency) "
            "whose context.storage call travels over its channel to the worker's cache; the "
            "no-cache function is the same code with com.faasd-py.cache: off, in the same app.",
            "'platform: restart' stops the platform (the app's cache is dropped, its access "
            "statistics saved in the registry) and starts it again over the same data dir and "
            "Redis; invocations begin as soon as it listens.",
            "Every read asks the store for the object's version first (consistency as in the "
            "Faa$T authors' code), so with the version check paying the full added latency a hit "
            "still costs one round trip: the cache saves the data transfer, not the latency.",
            "A reload drops the cache and keeps the access statistics (as the registry does); "
            "pre-warm fetches the ranked keys in pipelined batches in the background.",
            "Load generator, cache and redis-server share the machine's cores.",
        ],
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    if shutil.which("redis-server") is None:
        console.print("redis-server is not installed (apt-get install redis-server)")
        return 2
    report = asyncio.run(run(args, console))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "cache.md").write_text(text)
    if plot(report["summary"], args.out / "cache.png"):
        console.print(f"wrote {args.out / 'cache.png'}")
    console.print(text, markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
