"""The async benchmark's report: one flat record per phase and run, medians over runs, the
issue's two goals, markdown and a plot.

Pure functions over plain values, except the plot at the end (matplotlib imported only then).

The phases of one run, for each queue:

- sync: /function/ closed loop (N connections), 200s per second;
- async: /async-function/ closed loop over the whole path (W calls in the system, each slot
  enqueues its next call when the previous one's callback came), callbacks per second;
- enqueue: /async-function/ closed loop (N connections, each sends on the 202), 202s per
  second, then the backlog drains;
- fixed-enqueue: open loop at half the enqueue rate: 202 latency and enqueue -> callback;
- fixed-async: open loop at half the async throughput (a rate the consumer keeps up with);
- fixed-sync: /function/ open loop at that same rate, for the latency a caller waits without
  the queue.

CPU is reported by role (bench/_async_topology.py's ROLES: `up`, or in the split topology the
enqueueing `gateway` and the `consumer` process, their instances, redis-server, the benchmark):
per completed call, and as cores busy over the phase.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _report
from _async_topology import ROLES

PHASES = ("sync", "async", "enqueue", "fixed-enqueue", "fixed-async", "fixed-sync")
# The numeric figures of a record that are summarized over runs.
FIGURES = (
    "offered_rate",
    "per_second",
    "answer_p50_ms",
    "answer_p99_ms",
    "callback_p50_ms",
    "callback_p99_ms",
    "lag_p99_ms",
    "drain_per_second",
)
# The phases whose CPU the report shows: the throughputs, and the load of the enqueue goal.
CPU_PHASES = ("sync", "async", "fixed-enqueue")
# The goals.
MIN_ASYNC_SHARE = 0.5  # async throughput over synchronous
MAX_ENQUEUE_P99_MS = 5.0  # at half the sustained enqueue rate


def record(
    queue: str,
    run: int,
    phase: str,
    summary: Mapping[str, Any],
    *,
    offered_rate: float | None = None,
    drain_seconds: float | None = None,
    after_window: int = 0,
    cpu: Mapping[str, float] | None = None,
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """One phase of one run as a flat record, from a Tally's summary. `per_second` is what the
    phase measures: callbacks for `async`, answers (200s or 202s) otherwise. `cpu`: CPU seconds
    by whom over the whole phase, divided here by the calls it completed, and by the phase's
    `wall_seconds` (cores busy)."""
    callbacks = summary.get("callbacks")
    measured = summary["answers_per_second"]
    if phase == "async" and callbacks:
        measured = callbacks["per_second"]
    drain_rate = None
    if drain_seconds is not None and drain_seconds > 0 and after_window:
        drain_rate = after_window / drain_seconds
    completed = callbacks["received"] if callbacks else summary.get("successes", 0)
    return {
        "queue": queue,
        "run": run,
        "phase": phase,
        "offered_rate": offered_rate,
        "per_second": measured,
        "answer_p50_ms": summary["request"]["p50_ms"],
        "answer_p99_ms": summary["request"]["p99_ms"],
        "callback_p50_ms": callbacks["p50_ms"] if callbacks else None,
        "callback_p99_ms": callbacks["p99_ms"] if callbacks else None,
        "lag_p99_ms": summary["lag"]["p99_ms"] if "lag" in summary else None,
        "drain_per_second": drain_rate,
        "drain_seconds": drain_seconds,
        "errors": summary["errors"] + (callbacks["not_200"] if callbacks else 0),
        "lost": callbacks["lost"] if callbacks else 0,
        "duplicates": callbacks["duplicates"] if callbacks else 0,
        "cpu_ms_per_call": {k: v * 1e3 / completed for k, v in cpu.items()}
        if cpu and completed
        else None,
        "cpu_cores": {k: v / wall_seconds for k, v in cpu.items()}
        if cpu and wall_seconds
        else None,
        "detail": dict(summary),
    }


@dataclass(frozen=True)
class Cell:
    """The runs of one phase on one queue: median, min and max of each figure it has."""

    queue: str
    phase: str
    runs: int
    median: dict[str, float]
    minimum: dict[str, float]
    maximum: dict[str, float]
    errors: int
    lost: int
    duplicates: int
    cpu_ms_per_call: dict[str, float] | None
    cpu_cores: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "phase": self.phase,
            "runs": self.runs,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "errors": self.errors,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "cpu_ms_per_call_median": self.cpu_ms_per_call,
            "cpu_cores_median": self.cpu_cores,
        }

    def spread(self, figure: str, fmt: Callable[[float], str] = "{:,.0f}".format) -> str:
        """`median (min..max)`, or "-" when no run has the figure."""
        if figure not in self.median:
            return "-"
        lo, mid, hi = (fmt(d[figure]) for d in (self.minimum, self.median, self.maximum))
        return mid if self.runs == 1 else f"{mid} ({lo}..{hi})"


def summarize(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Cell]:
    """Records grouped by (queue, phase), in first-seen order."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["queue"], rec["phase"]), []).append(rec)
    cells = {}
    for (queue, phase), group in groups.items():
        values = {f: [r[f] for r in group if r.get(f) is not None] for f in FIGURES}
        present = {f: v for f, v in values.items() if v}
        cells[queue, phase] = Cell(
            queue=queue,
            phase=phase,
            runs=len(group),
            median={f: statistics.median(v) for f, v in present.items()},
            minimum={f: min(v) for f, v in present.items()},
            maximum={f: max(v) for f, v in present.items()},
            errors=sum(int(r["errors"]) for r in group),
            lost=sum(int(r["lost"]) for r in group),
            duplicates=sum(int(r["duplicates"]) for r in group),
            cpu_ms_per_call=_median_by_role(group, "cpu_ms_per_call"),
            cpu_cores=_median_by_role(group, "cpu_cores"),
        )
    return cells


def _median_by_role(group: Sequence[Mapping[str, Any]], key: str) -> dict[str, float] | None:
    """The median over the records of `group` that have `key` ({role: value}), per role."""
    found = [r[key] for r in group if r.get(key)]
    return {k: statistics.median(c[k] for c in found) for k in found[0]} if found else None


def async_shares(records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per queue, each run's async throughput over its own synchronous throughput."""
    by_run: dict[tuple[str, int], dict[str, float]] = {}
    for rec in records:
        if rec["phase"] in ("sync", "async"):
            by_run.setdefault((rec["queue"], rec["run"]), {})[rec["phase"]] = rec["per_second"]
    shares: dict[str, list[float]] = {}
    for (queue, _), pair in by_run.items():
        if pair.get("sync") and "async" in pair:
            shares.setdefault(queue, []).append(pair["async"] / pair["sync"])
    return shares


def beyond_throughput(records: Iterable[Mapping[str, Any]], phase: str) -> dict[str, list[int]]:
    """Per queue, the runs whose open loop `phase` offered more calls a second than that run's
    async closed loop completed: the backlog grew for the whole phase, and the callback
    latency with it."""
    completed = {(r["queue"], r["run"]): r["per_second"] for r in records if r["phase"] == "async"}
    found: dict[str, list[int]] = {}
    for rec in records:
        limit = completed.get((rec["queue"], rec["run"]))
        if rec["phase"] == phase and limit is not None and rec["offered_rate"] > limit:
            found.setdefault(rec["queue"], []).append(rec["run"])
    return found


@dataclass(frozen=True)
class Goal:
    queue: str
    what: str
    value: float  # the median over runs
    worst: float  # the worst run
    met: bool  # by the median

    def to_json(self) -> dict[str, Any]:
        return vars(self).copy()


def goals(records: Sequence[Mapping[str, Any]]) -> list[Goal]:
    """The issue's goals, per queue: async throughput at least half the synchronous, and the
    enqueue p99 under 5 ms at half the sustained enqueue rate."""
    out = []
    for queue, shares in async_shares(records).items():
        share = statistics.median(shares)
        what = f"async / sync throughput >= {MIN_ASYNC_SHARE:g}"
        out.append(Goal(queue, what, share, min(shares), share >= MIN_ASYNC_SHARE))
    for (queue, phase), cell in summarize(records).items():
        if phase == "fixed-enqueue" and "answer_p99_ms" in cell.median:
            p99, worst = cell.median["answer_p99_ms"], cell.maximum["answer_p99_ms"]
            what = f"enqueue p99 at half the enqueue rate < {MAX_ENQUEUE_P99_MS:g} ms"
            out.append(Goal(queue, what, p99, worst, p99 < MAX_ENQUEUE_P99_MS))
    return out


def _ms(value: float | None) -> str:
    """Milliseconds: two decimals below 100, none above."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _ms_spread(cell: Cell | None, figure: str) -> str:
    return "-" if cell is None else cell.spread(figure, _ms)


def markdown(
    title: str,
    machine: dict[str, Any],
    settings: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    notes: Sequence[str] = (),
) -> str:
    cells = summarize(records)
    queues = list(dict.fromkeys(r["queue"] for r in records))
    shares = async_shares(records)
    lines = [
        *_report.header(title, machine),
        ", ".join(f"{k}: {v}" for k, v in settings.items()),
        "",
        "Medians over runs; (min..max) over runs in parentheses.",
        "",
        "## Goals",
        "",
        "| queue | goal | median | worst run | met |",
        "|---|---|---:|---:|---|",
    ]
    for goal in goals(records):
        lines.append(
            f"| {goal.queue} | {goal.what} | {goal.value:.2f} | {goal.worst:.2f} "
            f"| {'yes' if goal.met else 'no'} |"
        )
    lines += [
        "",
        "## Throughput (closed loops)",
        "",
        "| queue | sync req/s | async calls/s | async / sync | enqueue 202/s | enqueue p99 ms "
        "| backlog drained, calls/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for queue in queues:
        sync, asyn, enq = (cells.get((queue, p)) for p in ("sync", "async", "enqueue"))
        share = shares.get(queue)
        lines.append(
            f"| {queue} | {sync.spread('per_second') if sync else '-'} "
            f"| {asyn.spread('per_second') if asyn else '-'} "
            f"| {f'{statistics.median(share):.2f}' if share else '-'} "
            f"| {enq.spread('per_second') if enq else '-'} "
            f"| {_ms_spread(enq, 'answer_p99_ms')} "
            f"| {enq.spread('drain_per_second') if enq else '-'} |"
        )
    lines += [
        "",
        "## Latency at fixed rates (open loop)",
        "",
        "Answer: the 202 of /async-function/, or the 200 of /function/; callback: from the time "
        "the request was due to the callback's arrival. Latencies count from the due time. "
        "Sent late: how late the client sent (p99), which every latency of the row includes.",
        "",
        "| queue | load | rate/s | answer p50 ms | answer p99 ms | callback p50 ms "
        "| callback p99 ms | sent late p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    loads = {
        "fixed-enqueue": "async, half the enqueue rate",
        "fixed-async": "async, half the async throughput",
        "fixed-sync": "sync, half the async throughput",
    }
    beyond = beyond_throughput(records, "fixed-enqueue")
    for queue in queues:
        for phase, load in loads.items():
            cell = cells.get((queue, phase))
            if cell is None:
                continue
            mark = " *" if phase == "fixed-enqueue" and queue in beyond else ""
            lines.append(
                f"| {queue} | {load}{mark} | {cell.spread('offered_rate')} "
                f"| {_ms_spread(cell, 'answer_p50_ms')} | {_ms_spread(cell, 'answer_p99_ms')} "
                f"| {_ms_spread(cell, 'callback_p50_ms')} "
                f"| {_ms_spread(cell, 'callback_p99_ms')} | {_ms_spread(cell, 'lag_p99_ms')} |"
            )
    for queue, runs in beyond.items():
        which = ", ".join(map(str, runs))
        lines += [
            "",
            f"\\* {queue}: in run(s) {which} half the enqueue rate was above the async "
            "throughput of the same run: the backlog grew for the whole phase, and the callback "
            "latency with it.",
        ]
    lines += _cpu_table(
        "CPU per completed call (ms, medians)",
        [(q, p, c.cpu_ms_per_call) for (q, p), c in _cpu_cells(cells, queues)],
        _ms,
    )
    lines += _cpu_table(
        "Cores busy (CPU seconds per second of the phase, medians)",
        [(q, p, c.cpu_cores) for (q, p), c in _cpu_cells(cells, queues)],
        "{:.2f}".format,
    )
    lines += ["", "## Errors", "", "| queue | phase | errors | callbacks lost | duplicates |"]
    lines += ["|---|---|---:|---:|---:|"]
    for cell in cells.values():
        lines.append(
            f"| {cell.queue} | {cell.phase} | {cell.errors} | {cell.lost} | {cell.duplicates} |"
        )
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def _cpu_cells(
    cells: Mapping[tuple[str, str], Cell], queues: Sequence[str]
) -> list[tuple[tuple[str, str], Cell]]:
    """The cells whose CPU the report shows, by queue then CPU_PHASES."""
    return [((q, p), cells[q, p]) for q in queues for p in CPU_PHASES if (q, p) in cells]


def _cpu_table(
    title: str,
    rows: Sequence[tuple[str, str, Mapping[str, float] | None]],
    fmt: Callable[[float], str],
) -> list[str]:
    """A table of CPU by role (a column per role any row has, in ROLES' order, then their
    sum), a row per (queue, phase); nothing when no row has CPU."""
    present = [(q, p, cpu) for q, p, cpu in rows if cpu]
    roles = [role for role in ROLES if any(role in cpu for _, _, cpu in present)]
    if not present:
        return []
    lines = ["", f"## {title}", "", "| queue | phase | " + " | ".join(ROLES[r] for r in roles)]
    lines[-1] += " | all |"
    lines.append("|---|---|" + "---:|" * (len(roles) + 1))
    for queue, phase, cpu in present:
        cols = ["-" if role not in cpu else fmt(cpu[role]) for role in roles]
        lines.append(f"| {queue} | {phase} | {' | '.join(cols)} | {fmt(sum(cpu.values()))} |")
    return lines


def plot(records: Sequence[Mapping[str, Any]], title: str, path: Path) -> bool:
    """Throughput per queue and phase, and the latencies at the fixed rates; False without
    matplotlib."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    cells = summarize(records)
    queues = list(dict.fromkeys(r["queue"] for r in records))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    width = 0.8 / max(1, len(queues))
    bars = [("sync", "sync req/s"), ("async", "async calls/s"), ("enqueue", "enqueue 202/s")]
    latencies = [
        ("fixed-enqueue", "answer_p50_ms", "202 p50\n@ enqueue/2"),
        ("fixed-enqueue", "answer_p99_ms", "202 p99\n@ enqueue/2"),
        ("fixed-async", "callback_p50_ms", "callback p50\n@ async/2"),
        ("fixed-async", "callback_p99_ms", "callback p99\n@ async/2"),
        ("fixed-sync", "answer_p50_ms", "sync p50\n@ async/2"),
        ("fixed-sync", "answer_p99_ms", "sync p99\n@ async/2"),
    ]
    for index, queue in enumerate(queues):
        offset = (index - (len(queues) - 1) / 2) * width
        for axis, series, fmt in (
            (left, [(p, "per_second") for p, _ in bars], "{:,.0f}"),
            (right, [(p, f) for p, f, _ in latencies], "{:.1f}"),
        ):
            xs, ys, lo, hi = [], [], [], []
            for x, (phase, figure) in enumerate(series):
                cell = cells.get((queue, phase))
                if cell is None or figure not in cell.median:
                    continue
                xs.append(x + offset)
                ys.append(cell.median[figure])
                lo.append(cell.median[figure] - cell.minimum[figure])
                hi.append(cell.maximum[figure] - cell.median[figure])
            drawn = axis.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=f"{queue} queue")
            axis.bar_label(drawn, labels=[fmt.format(y) for y in ys], fontsize=7, padding=2)
    left.set_xticks(range(len(bars)), [label for _, label in bars])
    left.set_ylabel("per second (median; bars: min..max over runs)")
    left.set_title("throughput, closed loops")
    right.set_xticks(range(len(latencies)), [label for _, _, label in latencies], fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("ms (median over runs)")
    right.set_title("latency at fixed open-loop rates")
    right.axhline(
        MAX_ENQUEUE_P99_MS, color="gray", lw=0.8, ls="--", label="goal: enqueue p99 < 5 ms"
    )
    for axis in (left, right):
        axis.grid(True, axis="y", alpha=0.25)
        axis.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
