"""report.md of a run, and the side-by-side table of `faasd-py bench report`.

Pure functions from run.json's dict (see _summary) to markdown text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faasd_py.loadgen._outcome import ERROR_KINDS, STAGES

# The per-function table of a trace replay shows this many functions (by count), then the rest
# summed up in one row: a trace may have thousands.
TOP_FUNCTIONS = 20
LATENCY_COLUMNS = ("p50", "p90", "p99", "p99.9", "max", "mean")


def ms(value: float | None) -> str:
    """A latency in ms with the digits that matter at its size."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f}"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    """A markdown table; `align` has one character per column, l or r (default r, first l)."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(marks) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _cell(text: object) -> str:
    """Text from elsewhere (names, error messages) that must not break the table."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _latency_row(summary: Mapping[str, float] | None) -> list[str]:
    return [ms(summary.get(c) if summary else None) for c in LATENCY_COLUMNS]


def machine_line(report: Mapping[str, Any]) -> str:
    m = report.get("machine") or {}
    parts = [
        str(report.get("started_at", m.get("date", ""))),
        str(m.get("cpu_model", "?")),
        f"{m.get('cores', '?')} cores",
        f"Linux {m.get('kernel', '?')}",
        f"Python {m.get('python', '?')}",
    ]
    if m.get("commit"):
        parts.append(f"commit {m['commit']}")
    load = report.get("load_average")
    line = " · ".join(parts)
    if load:
        before = ", ".join(f"{v:.2f}" for v in load["before"])
        after = ", ".join(f"{v:.2f}" for v in load["after"])
        line += f"\n\nLoad average (1, 5, 15 min) before the run: {before}; after: {after}."
    return line


def generator_line(report: Mapping[str, Any]) -> str:
    g = report["generator"]
    ceiling = g.get("ceiling_rps")
    said = (
        f"ceiling {ceiling:,.0f} req/s ({g['ceiling_source']})"
        if ceiling
        else f"ceiling {g['ceiling_source']}"
    )
    return f"Generator: {g['procs']} processes; {said}."


def run_markdown(report: Mapping[str, Any]) -> str:
    totals = report["totals"]
    closed = report["mode"] == "closed"
    lines = [f"# {report.get('title', 'faasd-py bench')}", "", machine_line(report), ""]
    lines += [f"Gateway: {report['config']['gateway']}. {generator_line(report)}", ""]
    if report["flags"]:
        lines += ["**Flags**", "", *(f"- {_cell(f)}" for f in report["flags"]), ""]
    else:
        lines += ["No flags: the schedule was kept and nothing failed.", ""]

    lines += ["## Throughput", ""]
    lines += _table(
        ["intended req/s", "sent req/s", "answered req/s", "ok req/s", "answers", "errors", "s"],
        [
            [
                "-" if closed else count(totals["intended_rps"]),
                count(totals["sent_rps"]),
                count(totals["throughput_rps"]),
                count(totals["ok_rps"]),
                count(totals["answered"]),
                count(totals["errors"]),
                f"{totals['recorded_seconds']:.1f}",
            ]
        ],
        "r" * 7,
    )
    since = "the request's send" if closed else "the request's intended send time"
    lines += ["", f"## Latency (ms, from {since} to the last byte of the answer)", ""]
    lines += _table(list(LATENCY_COLUMNS), [_latency_row(report["latency_ms"])], "r" * 6)
    lines += ["", *_stages(report), "", *_statuses(report)]
    if report.get("steps"):
        lines += ["", *_steps(report["steps"])]
    if report.get("functions"):
        lines += ["", *_functions(report["functions"])]
    lag = report["generator"].get("lag_ms")
    if lag:
        lines += [
            "",
            "## Generator",
            "",
            f"Sends went out late by {ms(lag['p50'])} ms at p50, {ms(lag['p99'])} ms at p99, "
            f"{ms(lag['max'])} ms at most (latencies count from the intended time, so this is "
            "included in them, not hidden).",
        ]
    return "\n".join(lines) + "\n"


def _stages(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Server-Timing stages (ms)", ""]
    stages = report.get("stages_ms")
    if stages is None:
        return [*lines, "Absent: the gateway sent no Server-Timing header (not faasd-py?)."]
    rows = [[stage, *_latency_row(stages.get(stage))] for stage in STAGES]
    lines += _table(["stage", *LATENCY_COLUMNS], rows)
    lines += [
        "",
        f"Cold starts: {report['cold_starts']:,} (the cold-start row is over the answers that "
        f"had one); {report['timed_answers']:,} answers carried Server-Timing.",
    ]
    return lines


def _statuses(report: Mapping[str, Any]) -> list[str]:
    lines = ["## Status codes and errors", ""]
    statuses = report["status_codes"]
    if statuses:
        lines += _table(["status", "answers"], [[s, count(n)] for s, n in statuses.items()])
        lines.append("")
    errors = report["errors"]
    samples = report.get("error_samples", {})
    rows = [
        [kind, count(errors[kind]), _cell(samples.get(kind, ""))]
        for kind in ERROR_KINDS
        if errors.get(kind)
    ]
    if rows:
        lines += _table(["error", "count", "example"], rows, "lrl")
    else:
        lines.append("No errors.")
    return lines


def _steps(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        [
            count(s["offered_rps"]),
            count(s["throughput_rps"]),
            count(s["ok_rps"]),
            ms(s["p50_ms"]),
            ms(s["p99_ms"]),
            count(s["errors"]),
        ]
        for s in steps
    ]
    header = ["offered req/s", "answered req/s", "ok req/s", "p50 ms", "p99 ms", "errors"]
    return ["## Rate steps", "", *_table(header, rows, "r" * 6)]


def _functions(functions: Sequence[Mapping[str, Any]]) -> list[str]:
    top, rest = functions[:TOP_FUNCTIONS], functions[TOP_FUNCTIONS:]

    def row(name: str, f: Mapping[str, Any]) -> list[str]:
        return [
            name,
            count(f["count"]),
            count(f["errors"]),
            count(f["cold_starts"]),
            ms(f["p50_ms"]),
            ms(f["p99_ms"]),
        ]

    def summed(group: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        # Percentiles do not add up: the sums' rows leave them out.
        totals = {key: sum(f[key] for f in group) for key in ("count", "errors", "cold_starts")}
        return {**totals, "p50_ms": None, "p99_ms": None}

    rows = [row(_cell(f["function"]), f) for f in top]
    if rest:
        rows.append(row(f"*{len(rest):,} others*", summed(rest)))
    rows.append(row("*all*", summed(functions)))
    header = ["function", "invocations", "errors", "cold starts", "p50 ms", "p99 ms"]
    shown = f"top {TOP_FUNCTIONS} of {len(functions):,}" if rest else f"{len(functions):,}"
    title = f"## Functions ({shown}, by invocations)"
    return [title, "", *_table(header, rows)]


# --- comparison --------------------------------------------------------------------------------


def _figures(report: Mapping[str, Any]) -> dict[str, float | None]:
    totals, latency = report["totals"], report.get("latency_ms") or {}
    stages = report.get("stages_ms") or {}
    figures: dict[str, float | None] = {
        "answered req/s": totals["throughput_rps"],
        "ok req/s": totals["ok_rps"],
        "answers": totals["answered"],
        "errors": totals["errors"],
    }
    for column in LATENCY_COLUMNS:
        figures[f"{column} ms"] = latency.get(column)
    for stage in STAGES:
        figures[f"{stage} p50 ms"] = (stages.get(stage) or {}).get("p50") if stages else None
    figures["cold starts"] = report.get("cold_starts")
    return figures


def compare_markdown(reports: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    """Runs side by side; with a ratio to the first run for each later one."""
    lines = ["# faasd-py bench: comparison", ""]
    for name, report in zip(names, reports, strict=True):
        title = _cell(report.get("title", ""))
        flagged = f"; {len(report['flags'])} flags" if report["flags"] else ""
        lines.append(f"- **{_cell(name)}**: {title} ({report.get('started_at', '?')}{flagged})")
    lines.append("")
    figures = [_figures(r) for r in reports]
    header = ["figure", *map(_cell, names)]
    header += [f"{_cell(n)} / {_cell(names[0])}" for n in names[1:]]
    rows = []
    for key in figures[0]:
        values = [f[key] for f in figures]
        if all(v is None for v in values):
            continue
        fmt = ms if key.endswith(" ms") else count
        row = [key, *(fmt(v) for v in values)]
        base = values[0]
        row += [f"{v / base:.2f}x" if v is not None and base else "-" for v in values[1:]]
        rows.append(row)
    lines += _table(header, rows)
    for name, report in zip(names, reports, strict=True):
        if report["flags"]:
            lines += ["", f"Flags of {_cell(name)}:", *(f"- {_cell(f)}" for f in report["flags"])]
    return "\n".join(lines) + "\n"
