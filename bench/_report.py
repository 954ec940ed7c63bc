"""Reports of a benchmark: the machine it ran on, medians over runs, JSON, markdown and a plot.

Pure functions over plain values, except the writers at the end; matplotlib is imported only
when a plot is asked for, since it is a benchmark dependency, not a runtime one.
"""

from __future__ import annotations

import signal
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

# The machine's description is the load generator's, so every benchmark states it the same
# way; warm.py reads it from here.
from rich.console import Console
from rich.markup import escape

from faasd_py.loadgen._machine import machine_info as machine_info

# The figures summarized per variant and connection count: the median over runs of each.
FIGURES = ("rps", "p50_ms", "p99_ms")


@dataclass(frozen=True)
class Cell:
    """The runs of one variant at one connection count, summarized."""

    variant: str
    connections: int
    runs: int
    medians: dict[str, float]
    minimums: dict[str, float]
    maximums: dict[str, float]
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "connections": self.connections,
            "runs": self.runs,
            "median": self.medians,
            "min": self.minimums,
            "max": self.maximums,
            "errors": self.errors,
        }


def summarize(runs: Iterable[dict[str, Any]]) -> list[Cell]:
    """Group run records by (variant, connections), in first-seen order, into Cells."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["connections"]), []).append(run)
    cells = []
    for (variant, connections), group in groups.items():
        cells.append(
            Cell(
                variant=variant,
                connections=connections,
                runs=len(group),
                medians={f: statistics.median(r[f] for r in group) for f in FIGURES},
                minimums={f: min(r[f] for r in group) for f in FIGURES},
                maximums={f: max(r[f] for r in group) for f in FIGURES},
                errors=sum(int(r["errors"]) for r in group),
            )
        )
    return cells


def ratios(cells: Sequence[Cell], subject: str, baseline: str) -> list[dict[str, Any]]:
    """Per connection count, subject's median over baseline's, for every figure."""
    by_key = {(c.variant, c.connections): c for c in cells}
    out = []
    for connections in sorted({c.connections for c in cells}):
        mine, base = by_key.get((subject, connections)), by_key.get((baseline, connections))
        if mine is None or base is None:
            continue
        out.append(
            {
                "connections": connections,
                **{
                    f: (mine.medians[f] / base.medians[f]) if base.medians[f] else None
                    for f in FIGURES
                },
            }
        )
    return out


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _loads(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def header(title: str, machine: dict[str, Any]) -> list[str]:
    """A report's first lines: its title, the machine, how busy the machine was."""
    lines = [
        f"# {title}",
        "",
        f"{machine['date']} · {machine['cpu_model']} · {machine['cores']} cores · "
        f"Linux {machine['kernel']} · Python {machine['python']}"
        + (f" · commit {machine['commit']}" if machine.get("commit") else ""),
        "",
    ]
    load = machine.get("load_average_1_5_15_min")
    if load:
        lines += [
            f"Load average (1, 5, 15 min) before the runs: {_loads(load['before'])}; "
            f"after: {_loads(load['after'])}.",
            "",
        ]
    return lines


def markdown(
    title: str,
    machine: dict[str, Any],
    settings: dict[str, Any],
    cells: Sequence[Cell],
    ratio_rows: Sequence[dict[str, Any]],
    subject: str,
    baseline: str,
    notes: Sequence[str] = (),
) -> str:
    lines = [
        *header(title, machine),
        ", ".join(f"{k}: {v}" for k, v in settings.items()),
        "",
        "Medians over runs; (min..max) over runs in parentheses.",
        "",
        "| connections | variant | req/s | p50 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for cell in sorted(cells, key=lambda c: (c.connections, c.variant != subject)):
        lo, hi, med = cell.minimums, cell.maximums, cell.medians
        lines.append(
            f"| {cell.connections} | {cell.variant} "
            f"| {med['rps']:,.0f} ({lo['rps']:,.0f}..{hi['rps']:,.0f}) "
            f"| {_ms(med['p50_ms'])} ({_ms(lo['p50_ms'])}..{_ms(hi['p50_ms'])}) "
            f"| {_ms(med['p99_ms'])} ({_ms(lo['p99_ms'])}..{_ms(hi['p99_ms'])}) "
            f"| {cell.errors} |"
        )
    if ratio_rows:
        lines += [
            "",
            f"{subject} / {baseline} (throughput below 1 and latency above 1 mean {subject} is "
            "slower):",
            "",
            "| connections | req/s | p50 | p99 |",
            "|---:|---:|---:|---:|",
        ]
        for row in ratio_rows:
            lines.append(
                f"| {row['connections']} | {_ratio(row['rps'])} | {_ratio(row['p50_ms'])} "
                f"| {_ratio(row['p99_ms'])} |"
            )
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _tick(value: float, _pos: object = None) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def _minor_tick(value: float, _pos: object = None) -> str:
    # Label 2x and 5x of each decade on a log axis, leave the rest bare.
    leading = f"{value:.0e}"[0]
    return _tick(value) if leading in "25" else ""


def plot(cells: Sequence[Cell], title: str, path: Path) -> bool:
    """Throughput and p99 against connections, one line per variant; False without matplotlib."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
        from matplotlib.ticker import (  # type: ignore[import-not-found,unused-ignore]
            FuncFormatter,
        )
    except ImportError:
        return False
    variants = list(dict.fromkeys(c.variant for c in cells))
    counts = sorted({c.connections for c in cells})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for index, variant in enumerate(variants):
        # Labels of the first variant above its points, of the others below, so they don't clash.
        offset = (0, 7) if index == 0 else (0, -13)
        mine = sorted((c for c in cells if c.variant == variant), key=lambda c: c.connections)
        xs = [c.connections for c in mine]
        for axis, figure, fmt in ((left, "rps", "{:,.0f}"), (right, "p99_ms", "{:.2f}")):
            ys = [c.medians[figure] for c in mine]
            (line,) = axis.plot(xs, ys, marker="o", label=variant)
            for x, y in zip(xs, ys, strict=True):
                axis.annotate(
                    fmt.format(y),
                    (x, y),
                    textcoords="offset points",
                    xytext=offset,
                    ha="center",
                    fontsize=8,
                    color=line.get_color(),
                )
    for axis, label in ((left, "requests per second (median)"), (right, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(counts)
        axis.xaxis.set_major_formatter(FuncFormatter(_tick))
        axis.xaxis.set_minor_formatter(FuncFormatter(lambda _v, _p: ""))
        axis.yaxis.set_major_formatter(FuncFormatter(_tick))
        axis.yaxis.set_minor_formatter(FuncFormatter(_minor_tick))
        axis.set_xlabel("connections")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.25)
        axis.legend()
        axis.margins(y=0.15)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def interrupt_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    """A SIGTERM handler: stop a benchmark as Ctrl-C does (it cleans up what it started)."""
    raise KeyboardInterrupt


def run_main(
    work: Callable[[], None],
    console: Console,
    failures: tuple[type[BaseException], ...],
    *,
    stopped: str = "every process stopped",
    what: str = "benchmark",
) -> int:
    """A benchmark's exit code around `work`: SIGTERM stops it as Ctrl-C does (130, after
    `work` has stopped what it started), a failure of the kinds it expects is one line (1)."""
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        work()
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: {stopped}, no report written")
        return 130
    except failures as exc:
        console.print(f"[red]{what} failed[/]: {escape(str(exc))}")
        return 1
    return 0
