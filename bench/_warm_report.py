"""bench/warm.py's figures: per-run records, medians over runs, issue 14's goals, the markdown.

Pure functions over plain values (the runs' records), so that a report can be written again
from warm.json and tested without a server.

A run's server CPU is what the server's processes spent in the run's window (user + system,
read from /proc): for faasd-py the `up` process and all its descendants (zygotes and the
sandboxed instances), for the others their one process. Per request it is that over wrk's
completed requests.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from _report import Cell

SUBJECT = "faasd-py"
NET = "faasd-py net"
BARE = "bare"
FLASK = "flask-waitress"
ONE_CORE = "faasd-py 1 core"
TWO_CORES = "faasd-py 2 cores"
VARIANTS = (SUBJECT, NET, BARE, FLASK)

# Summarized per cell: the median over runs of each, and the spread of the first four.
FIGURES = (
    "rps",
    "p50_ms",
    "p99_ms",
    "cpu_us",
    "server_cores",
    "wrk_cores",
    "machine_us",
    "other_cores",
)
SPREAD = ("rps", "p50_ms", "p99_ms", "cpu_us")

# Issue 14's targets.
CPU_GOAL_US = 60.0
THROUGHPUT_GOAL = 0.5
P50_GOAL = 1.5
NET_THROUGHPUT_GOAL = 2.0
NET_P50_GOAL = 0.5
SCALING_GOAL = 1.7


def record(
    variant: str,
    connections: int,
    run: int,
    wrk: dict[str, Any],
    *,
    server_cpu_s: float,
    wrk_cpu_s: float,
    machine_busy_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """One run's record: wrk's figures and the CPU of the window, per request and as cores."""
    requests, seconds = max(1, int(wrk["requests"])), max(1e-9, float(wrk["seconds"]))
    return {
        "variant": variant,
        "connections": connections,
        "run": run,
        **extra,
        **wrk,
        "server_cpu_s": round(server_cpu_s, 3),
        "wrk_cpu_s": round(wrk_cpu_s, 3),
        "machine_busy_s": round(machine_busy_s, 3),
        "cpu_us": round(server_cpu_s * 1e6 / requests, 2),
        "server_cores": round(server_cpu_s / seconds, 3),
        "wrk_cores": round(wrk_cpu_s / seconds, 3),
        # Everything the machine did minus wrk, per request: includes other work on the host.
        "machine_us": round((machine_busy_s - wrk_cpu_s) * 1e6 / requests, 2),
        # What neither the server nor wrk spent: other work on the machine, as cores busy.
        "other_cores": round(max(0.0, machine_busy_s - wrk_cpu_s - server_cpu_s) / seconds, 3),
    }


def summarize(runs: Iterable[dict[str, Any]]) -> list[Cell]:
    """Group records by (variant, connections), in first-seen order, into Cells (those of
    bench/_report.py, with more figures: FIGURES' medians, SPREAD's min and max)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["connections"]), []).append(run)
    return [
        Cell(
            variant=variant,
            connections=connections,
            runs=len(group),
            medians={f: statistics.median(float(r.get(f, 0.0)) for r in group) for f in FIGURES},
            minimums={f: min(float(r[f]) for r in group) for f in SPREAD},
            maximums={f: max(float(r[f]) for r in group) for f in SPREAD},
            errors=sum(int(r["errors"]) for r in group),
        )
        for (variant, connections), group in groups.items()
    ]


def _find(cells: Sequence[Cell], variant: str, connections: int) -> Cell | None:
    return next((c for c in cells if (c.variant, c.connections) == (variant, connections)), None)


def _ratio(cells: Sequence[Cell], a: str, b: str, connections: int, figure: str) -> float | None:
    mine, theirs = _find(cells, a, connections), _find(cells, b, connections)
    if mine is None or theirs is None or not theirs.medians[figure]:
        return None
    return mine.medians[figure] / theirs.medians[figure]


@dataclass(frozen=True)
class Goal:
    goal: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run

    def to_json(self) -> dict[str, Any]:
        return {
            "goal": self.goal,
            "target": self.target,
            "measured": self.measured,
            "met": self.met,
        }


def _x(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}x"


def _ratio_goal(goal: str, target: str, value: float | None, ok: bool) -> Goal:
    return Goal(goal, target, _x(value), None if value is None else ok)


def goals(cells: Sequence[Cell]) -> list[Goal]:
    """Issue 14's goals against this run's medians (None where a variant was not driven)."""
    cpu = {c.connections: c.medians["cpu_us"] for c in cells if c.variant == SUBJECT}
    at16 = cpu.get(16)
    out = [
        Goal(
            "server CPU per warm invocation (hello, sandboxed, shm), at 16 connections",
            f"<= {CPU_GOAL_US:.0f} µs",
            ", ".join(f"{n} conn: {v:.0f} µs" for n, v in sorted(cpu.items())) or "not measured",
            None if at16 is None else at16 <= CPU_GOAL_US,
        )
    ]
    for n in (16, 64):
        r = _ratio(cells, SUBJECT, BARE, n, "rps")
        out.append(
            _ratio_goal(
                f"throughput at {n} connections / bare aiohttp's",
                f">= {THROUGHPUT_GOAL:.2f}x",
                r,
                r is not None and r >= THROUGHPUT_GOAL,
            )
        )
    r = _ratio(cells, SUBJECT, BARE, 1, "p50_ms")
    out.append(
        _ratio_goal(
            "p50 at 1 connection / bare aiohttp's",
            f"<= {P50_GOAL:.1f}x",
            r,
            r is not None and r <= P50_GOAL,
        )
    )
    rps, p50 = _ratio(cells, SUBJECT, NET, 16, "rps"), _ratio(cells, SUBJECT, NET, 16, "p50_ms")
    out.append(
        _ratio_goal(
            "shm / net throughput at 16 connections",
            f">= {NET_THROUGHPUT_GOAL:.1f}x",
            rps,
            rps is not None and rps >= NET_THROUGHPUT_GOAL,
        )
    )
    out.append(
        _ratio_goal(
            "shm / net p50 at 16 connections",
            f"<= {NET_P50_GOAL:.1f}x (50% lower)",
            p50,
            p50 is not None and p50 <= NET_P50_GOAL,
        )
    )
    scale = _ratio(cells, TWO_CORES, ONE_CORE, 16, "rps")
    out.append(
        _ratio_goal(
            "throughput on 2 cores / pinned to 1, at 16 connections",
            f">= {SCALING_GOAL:.1f}x",
            scale,
            scale is not None and scale >= SCALING_GOAL,
        )
    )
    return out


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _spread(cell: Cell, figure: str) -> str:
    """A cell's median of `figure` and, in parentheses, its min..max over runs."""

    def fmt(value: float) -> str:
        return _ms(value) if figure.endswith("_ms") else f"{value:,.0f}"

    lo, hi = cell.minimums[figure], cell.maximums[figure]
    return f"{fmt(cell.medians[figure])} ({fmt(lo)}..{fmt(hi)})"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**missed**"


def cells_table(cells: Sequence[Cell]) -> list[str]:
    lines = [
        "| connections | server | req/s | p50 ms | p99 ms | server CPU µs/req | server cores "
        "| wrk cores | other cores | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {v: i for i, v in enumerate((*VARIANTS, ONE_CORE, TWO_CORES))}
    for c in sorted(cells, key=lambda c: (c.connections, order.get(c.variant, 99))):
        lines.append(
            f"| {c.connections} | {c.variant} | {_spread(c, 'rps')} "
            f"| {_spread(c, 'p50_ms')} | {_spread(c, 'p99_ms')} "
            f"| {_spread(c, 'cpu_us')} | {c.medians['server_cores']:.2f} "
            f"| {c.medians['wrk_cores']:.2f} | {c.medians.get('other_cores', 0.0):.2f} "
            f"| {c.errors} |"
        )
    return lines


def ratio_table(cells: Sequence[Cell], subject: str, others: Sequence[str]) -> list[str]:
    lines = [
        f"| connections | {subject} over | req/s | p50 | p99 | server CPU per request |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in sorted({c.connections for c in cells if c.variant == subject}):
        for other in others:
            row = [
                _ratio(cells, subject, other, n, f) for f in ("rps", "p50_ms", "p99_ms", "cpu_us")
            ]
            if all(r is None for r in row):
                continue
            lines.append(f"| {n} | {other} | " + " | ".join(_x(r) for r in row) + " |")
    return lines


def goals_table(rows: Sequence[Goal]) -> list[str]:
    lines = ["| goal | target | measured (medians) | |", "|---|---|---|---|"]
    lines += [f"| {g.goal} | {g.target} | {g.measured} | {_verdict(g.met)} |" for g in rows]
    return lines


def markdown(
    header: Sequence[str],
    settings: dict[str, Any],
    cells: Sequence[Cell],
    scaling: Sequence[Cell],
    notes: Sequence[str],
) -> str:
    """The report: goals first, then the table of every server, the ratios, the scaling runs."""
    lines = [*header, ", ".join(f"{k}: {v}" for k, v in settings.items()), ""]
    lines += ["## Issue 14's goals", "", *goals_table(goals([*cells, *scaling])), ""]
    lines += [
        "## Every server, same run",
        "",
        "Medians over runs; (min..max) over runs in parentheses. Server cores: the server's CPU "
        "seconds per second of the run; wrk cores: the load generator's; other cores: what the "
        "rest of the machine was busy with meanwhile (/proc/stat minus both), which skews "
        "throughput and latency but hardly the server's CPU per request.",
        "",
        *cells_table(cells),
        "",
    ]
    ratios = ratio_table(cells, SUBJECT, (BARE, FLASK, NET))
    if len(ratios) > 2:
        lines += [
            f"{SUBJECT} (shm) over each other server (req/s below 1 and the rest above 1 mean "
            f"{SUBJECT} is behind):",
            "",
            *ratios,
            "",
        ]
    if scaling:
        lines += [
            "## One core against two (faasd-py, shm, 16 connections)",
            "",
            "1 core: every thread of `up` and its instances bound to core 0 (taskset, "
            "sched_setaffinity), wrk bound to core 1. 2 cores: the server on both cores, wrk "
            "unbound beside it; wrk's own CPU is in the wrk cores column, so the ratio is "
            "against a server that had 2 minus that many cores.",
            "",
            *cells_table(scaling),
            "",
        ]
    lines += [*(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"
