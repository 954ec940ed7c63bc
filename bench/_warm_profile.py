"""bench/profile_warm.py's pure parts: reading py-spy's and perf's output, grouping samples into
the warm path's stages, and the breakdown in µs per request.

py-spy (`--format raw`) writes one line per distinct stack: frames from the root to the leaf
joined by ';', then a space and the sample count; a frame reads `function (file:line)`. A
sample's stage is that of its innermost frame that matches a stage's pattern, so a call into
aiohttp made from the gateway's invoke counts as HTTP work, and the invoke's own lines as the
gateway's. perf (`perf report --sort dso,sym`) gives the on-CPU split by library and symbol,
kernel included, which py-spy cannot see.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Innermost match wins; within one frame the first stage listed wins. Patterns are searched in
# `function (file:line)`.
STAGES: tuple[tuple[str, str], ...] = (
    ("instance: handler", r"\(function/|handler\.py"),
    ("instance: event and response objects", r"faasd_py/runtime/_(event|response|multidict)\.py"),
    ("dataclass objects (Request, Outcome, Reply ...)", r"__create_fn__"),
    ("metrics", r"faasd_py/gateway/_metrics\.py|prometheus_client/"),
    ("protocol messages (msgpack encode/decode, field checks)", r"faasd_py/protocol\.py|msgpack"),
    (
        "doorbells and shm rings (cffi calls: eventfd, futex, ring push/pop)",
        r"faasd_py/(datapath/|native\.py)|_cffi",
    ),
    ("instance: runtime loop (serve, channel)", r"faasd_py/runtime/"),
    ("pool dispatch (worker, pool, instance)", r"faasd_py/worker/"),
    ("gateway invoke (request to reply, Server-Timing)", r"faasd_py/gateway/_(invoke|backend)\.py"),
    (
        "routing and middlewares",
        r"aiohttp/web_(urldispatcher|app|middlewares)\.py|faasd_py/gateway/_(auth|app|errors|"
        r"connections|keys)\.py",
    ),
    (
        "HTTP parsing and response building (the lean /function/ front, aiohttp)",
        r"faasd_py/gateway/_front\.py|httptools|aiohttp/|multidict|yarl/",
    ),
    (
        "event loop (uvloop's C: epoll, socket reads and writes, callbacks)",
        r"asyncio/runners\.py|run_forever|run_until_complete",
    ),
    ("asyncio tasks and futures", r"asyncio/"),
)
OTHER = "other"
# A leaf here is a wait, not work: py-spy may count a thread blocked in a C call as active.
WAITS = (
    r"ShmEndpoint\.wait \(|_wait_for_record|select \(|epoll|\.acquire \(|_worker \(concurrent"
    r"|_receive \(faasd_py/runtime/_zygote"  # a zygote waiting for its next fork order
)
INSTANCE_WAIT = "instance: doorbell waits (shim spin, futex/eventfd sleep and wake; perf)"

# perf's libraries, grouped.
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("kernel (system calls, scheduling, network stack)", r"\[kernel|\[vdso\]"),
    ("Python interpreter", r"libpython|^python"),
    ("native shim (faasd_py._native: rings, spin, doorbells)", r"_native\."),
    ("cffi backend", r"_cffi_backend"),
    ("msgpack (C)", r"_cmsgpack|msgpack"),
    ("uvloop (C)", r"loop\.cpython|uvloop"),
    ("aiohttp C parts (parser, writer, helpers)", r"_http_parser|_http_writer|_helpers"),
    ("multidict, yarl, propcache (C)", r"multidict|yarl|propcache"),
    ("asyncio C accelerator", r"_asyncio\."),
    ("libc", r"libc\.|libm\.|ld-linux"),
)

_FRAME = re.compile(r"^(.*) \((.*?)(?::(\d+))?\)$")
_PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$")


def parse_pyspy(text: str) -> list[tuple[list[str], int]]:
    """(frames root to leaf, samples) of each line of py-spy's raw output."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def stage_of(frames: Sequence[str]) -> str:
    """The stage of a sample: that of its innermost frame that matches one."""
    for frame in reversed(frames):
        for name, pattern in STAGES:
            if re.search(pattern, frame):
                return name
    return OTHER


def is_wait(frames: Sequence[str]) -> bool:
    return bool(frames) and re.search(WAITS, frames[-1]) is not None


def leaf(frames: Sequence[str]) -> str:
    """The leaf frame without its line number: `function (file)`."""
    if not frames:
        return "?"
    match = _FRAME.match(frames[-1])
    return f"{match.group(1)} ({match.group(2)})" if match else frames[-1]


@dataclass(frozen=True)
class Shares:
    """py-spy samples of one side, waits apart: stage -> samples, leaf function -> samples."""

    stages: dict[str, int]
    leaves: dict[str, int]
    waits: int
    total: int


def shares(samples: Iterable[tuple[list[str], int]]) -> Shares:
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    waits = total = 0
    for frames, count in samples:
        total += count
        if is_wait(frames):
            waits += count
            continue
        stages[stage_of(frames)] += count
        leaves[f"{stage_of(frames)} · {leaf(frames)}"] += count
    return Shares(dict(stages), dict(leaves), waits, total)


def parse_perf(text: str) -> list[tuple[float, str, str]]:
    """(percent, library, symbol) of each line of `perf report --sort dso,sym --stdio`."""
    out = []
    for line in text.splitlines():
        match = _PERF_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            out.append((float(match.group(1)), match.group(2), match.group(4)))
    return out


def library_of(dso: str) -> str:
    for name, pattern in LIBRARIES:
        if re.search(pattern, dso):
            return name
    return f"other ({dso})"


def by_library(rows: Iterable[tuple[float, str, str]]) -> dict[str, float]:
    """Percent of on-CPU samples per library group, largest first."""
    groups: dict[str, float] = {}
    for percent, dso, _ in rows:
        groups[library_of(dso)] = groups.get(library_of(dso), 0.0) + percent
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]))


def wait_share(rows: Iterable[tuple[float, str, str]]) -> float:
    """Fraction of an instance's on-CPU time in the kernel and the shim: its doorbell waits
    and wakes (an instance makes no other system calls on the warm path)."""
    return sum(p for p, dso, _ in rows if re.search(r"\[kernel|\[vdso\]|_native\.", dso)) / 100


@dataclass(frozen=True)
class Row:
    side: str
    stage: str
    us: float
    percent: float

    def to_json(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "stage": self.stage,
            "us_per_request": round(self.us, 2),
            "percent": round(self.percent, 1),
        }


def breakdown(
    up_us: float, up: Shares, instance_us: float, instance: Shares, instance_wait: float
) -> list[Row]:
    """Server CPU per request split into stages: each side's measured µs per request spread
    over its py-spy samples (waits left out); the instances' doorbell waits take perf's share
    of kernel and shim time first."""
    total = up_us + instance_us
    rows = []

    def spread(side: str, us: float, part: Shares) -> None:
        work = sum(part.stages.values())
        for stage, count in part.stages.items():
            value = us * count / work if work else 0.0
            rows.append(Row(side, stage, value, 100 * value / total if total else 0.0))

    spread("up", up_us, up)
    waited = instance_us * instance_wait
    rows.append(Row("instance", INSTANCE_WAIT, waited, 100 * waited / total if total else 0.0))
    spread("instance", instance_us - waited, instance)
    return sorted(rows, key=lambda r: -r.us)


def top_leaves(part: Shares, us: float, n: int = 10) -> list[tuple[str, float]]:
    """The n leaf functions with the most self time, in µs per request of that side."""
    work = sum(part.stages.values())
    ranked = sorted(part.leaves.items(), key=lambda kv: -kv[1])[:n]
    return [(name, us * count / work if work else 0.0) for name, count in ranked]


def _rows(header: str, rows: Iterable[Sequence[object]]) -> list[str]:
    cols = header.count("|") - 1
    return [header, "|" + "---|" * cols, *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def top_costs(report: dict[str, Any], n: int = 10) -> list[tuple[str, float]]:
    """The n costliest (side · stage · leaf function) of both sides, µs per request."""
    both = [(f"up · {k}", v) for k, v in report["top_up"]]
    both += [(f"instance · {k}", v) for k, v in report["top_instances"]]
    wait = next((r for r in report["breakdown"] if r["stage"] == INSTANCE_WAIT), None)
    if wait:
        both.append((f"instance · {INSTANCE_WAIT}", wait["us_per_request"]))
    return sorted(both, key=lambda kv: -kv[1])[:n]


def markdown(report: dict[str, Any], header: Sequence[str]) -> str:
    """warm-profile.md: the breakdown, the top costs, system calls and context switches, perf."""
    cpu, settings = report["cpu"], report["settings"]
    total = cpu["up_us"] + cpu["instances_us"]
    lines = [
        *header,
        f"`faasd-py up`, hello (python3-http), sandboxed, channel: {settings['channel']}; wrk "
        f"{settings['connections']} connections, 2 threads, {settings['duration_s']:g} s per "
        f"phase. Unprofiled: {cpu['rps']:,} req/s, p50 {cpu['p50_ms']:.2f} ms, "
        f"{cpu['instances']} instances.",
        "",
        "## Server CPU per request",
        "",
        *_rows(
            "| process | µs per request | share |",
            [
                (
                    "`up` (gateway and worker)",
                    f"{cpu['up_us']:.0f}",
                    f"{100 * cpu['up_us'] / total:.0f}%",
                ),
                (
                    "instances (all; each request runs in one)",
                    f"{cpu['instances_us']:.0f}",
                    f"{100 * cpu['instances_us'] / total:.0f}%",
                ),
                ("**total**", f"**{total:.0f}**", "100%"),
            ],
        ),
        "",
        "## Where it goes",
        "",
        "Each side's CPU per request spread over its py-spy samples by stage (innermost "
        "matching frame: bench/_warm_profile.py's STAGES); a stage's time includes the C and "
        "kernel time below its Python frames.",
        "",
        *_rows(
            "| side | stage | µs per request | % of server CPU |",
            [
                (r["side"], r["stage"], f"{r['us_per_request']:.1f}", f"{r['percent']:.1f}%")
                for r in report["breakdown"]
            ],
        ),
        "",
        "## Top 10 costs (self time of a function, with its stage)",
        "",
        *_rows(
            "| # | side · stage · function (file) | µs per request |",
            [(i, name, f"{us:.1f}") for i, (name, us) in enumerate(top_costs(report), 1)],
        ),
        "",
        "## System calls and context switches per request",
        "",
    ]
    ctx = [
        ("`up`", "voluntary (/proc)", cpu["up_voluntary_cs"]),
        ("`up`", "involuntary (/proc)", cpu["up_involuntary_cs"]),
        ("instances", "voluntary (/proc)", cpu["instances_voluntary_cs"]),
        ("instances", "involuntary (/proc)", cpu["instances_involuntary_cs"]),
    ]
    sys_ = report["syscalls"]
    for side in ("up", "instances"):
        for event, value in sys_.get(f"perf_stat_{side}", {}).items():
            ctx.append(("`up`" if side == "up" else "instances", f"{event} (perf stat)", value))
    lines += _rows("| process | count | per request |", ctx)
    for side in ("up", "instances"):
        calls = sys_.get(f"strace_{side}")
        if calls:
            top = list(calls.items())[:10]
            lines += [
                "",
                f"strace -c -f on {'`up`' if side == 'up' else 'the instances'} (slowed by "
                "strace, so more requests share a wake-up than without it): calls per request",
                "",
                *_rows("| system call | per request |", top),
            ]
    perf = report.get("perf", {})
    for side, found in perf.items():
        lines += [
            "",
            f"## perf: on-CPU time of {'`up`' if side == 'up' else 'the instances'} by library",
            "",
            *_rows("| library | % |", [(k, f"{v:.1f}") for k, v in found["libraries"].items()]),
            "",
            *_rows(
                "| % | library | symbol |",
                [
                    (f"{s['percent']:.1f}", s["library"], s["symbol"])
                    for s in found["top_symbols"][:10]
                ],
            ),
        ]
    samples = report["py_spy_samples"]
    lines += [
        "",
        "## Method",
        "",
        "- CPU per request: user + system seconds from /proc/PID/stat of `up` and of its "
        "descendants (zygote, sandboxed instances) over a wrk run with nothing attached, over "
        "the run's requests. Context switches: /proc/PID/task/*/status deltas over the same run.",
        "- py-spy record --nonblocking (Python frames; idle threads left out, so samples are CPU "
        "samples, not wall clock, which for an event loop would mostly be epoll waits), on `up` "
        f"and on each instance: up {samples['up']['total']} samples, instances "
        f"{samples['instances']['total']} of which {samples['instances']['waits']} were in a "
        "doorbell wait (py-spy counts a C call as active, so the waits' CPU comes from perf: "
        "the instances' kernel and shim share). Not --native: py-spy then pauses the process "
        "for every sample, which cut a 3.5k req/s run to under 400 req/s here, and the C side "
        "comes from perf instead; not --gil: the sample would miss the time spent in system "
        "calls with the GIL released.",
        "- perf record -g -e cpu-clock -F 999 on `up` and on the instances (Python 3.11 has no "
        "perf trampoline, so the interpreter shows as libpython symbols).",
        "- perf stat -e raw_syscalls:sys_enter,context-switches,cpu-migrations on each side "
        "and strace -c -f, each over its own wrk run; per request = count / wrk's requests.",
    ]
    return "\n".join(lines) + "\n"
