"""Reports of a simulation: the JSON document, a markdown table and two plots.

Pure functions over the rows of :func:`~faasd_py.scheduler.summary` (plain dicts), except the
plot writers, which import matplotlib (the ``bench`` extra) when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RULES = ("histogram", "fallback", "forecast")
# The Pareto view of the paper: fixed keep-alives against the hybrid policy's ranges.
PARETO_FIXED_MINUTES = (10, 20, 30, 45, 60, 90, 120)
PARETO_HYBRID_HOURS = (1, 2, 3, 4)


def pareto_policies() -> list[str]:
    """The policy names of the Pareto view, in the form :func:`parse_policy` reads."""
    return [f"fixed:{m}m" for m in PARETO_FIXED_MINUTES] + [
        f"hybrid:{h}h" for h in PARETO_HYBRID_HOURS
    ]


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def per_rule(values: Mapping[str, Any], digits: int = 0) -> str:
    parts = []
    for rule, value in values.items():
        if value is None or rule in ("first", "fixed", "no-unload"):
            continue
        parts.append(f"{rule} {value:,.{digits}f}")
    return ", ".join(parts) or "-"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per policy: cold starts, the app percentiles, wasted memory, and per rule where
    the policy has rules (which one decided, caused the cold starts, spent the memory)."""
    lines = [
        "| policy | p50 app cold % | p75 app cold % | cold starts | all cold % "
        "| wasted memory (x fixed 10 min) | decisions by rule | cold starts by rule "
        "| wasted by rule (x fixed 10 min) |",
        "|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['policy']} | {row['p50_app_cold_percent']:.1f} "
            f"| {row['p75_app_cold_percent']:.1f} | {row['cold_starts']:,} "
            f"| {row['cold_start_percent']:.2f} | {share(row['wasted_normalized'])} "
            f"| {per_rule(row['decisions'])} | {per_rule(row['cold_by_reason'])} "
            f"| {per_rule(row['wasted_by_reason_normalized'], 2)} |"
        )
    return lines


def markdown(title: str, settings: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        f"# {title}",
        "",
        ", ".join(f"{k}: {v}" for k, v in settings.items()),
        "",
        *markdown_table(rows),
        "",
        "Cold starts by rule count the cold starts after windows that rule chose (an app's first "
        "invocation is always cold and is not listed); wasted memory is loaded-but-idle MB x s.",
        "",
    ]
    return "\n".join(lines)


def _pyplot() -> Any:
    # The load generator's plots already know how to load matplotlib headless and what to say
    # when it is missing.
    from faasd_py.loadgen._plots import _pyplot as pyplot

    return pyplot()


def draw_cdf(axis: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """The CDF of per-app cold-start % for every policy, on a matplotlib axis."""
    for row in rows:
        points = row["cdf"]
        axis.step([v for v, _ in points], [s for _, s in points], where="post", label=row["policy"])
    axis.set_xlabel("cold starts of an app (% of its invocations)")
    axis.set_ylabel("share of apps")
    axis.set_xlim(0, 100)
    axis.set_ylim(0, 1)
    axis.axhline(0.75, color="grey", linewidth=0.6, linestyle=":")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)


def draw_pareto(axis: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """The paper's view: the 75th-percentile app's cold-start % against wasted memory
    (normalized to fixed 10 min), fixed keep-alives as one line, hybrid ranges as another."""
    series = {
        "fixed keep-alive": [r for r in rows if str(r["policy"]).startswith("fixed:")],
        "hybrid": [r for r in rows if str(r["policy"]).startswith("hybrid")],
    }
    for (label, chosen), marker in zip(series.items(), ("o", "s"), strict=True):
        chosen = sorted(chosen, key=lambda r: r["wasted_normalized"] or 0.0)
        if not chosen:
            continue
        xs = [r["wasted_normalized"] or 0.0 for r in chosen]
        ys = [r["p75_app_cold_percent"] for r in chosen]
        axis.plot(xs, ys, marker=marker, label=label)
        for r, x, y in zip(chosen, xs, ys, strict=True):
            axis.annotate(
                str(r["policy"]).split(":", 1)[-1],
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    axis.set_xlabel("wasted memory time (x fixed 10-minute keep-alive)")
    axis.set_ylabel("cold starts of the 75th-percentile app (%)")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()


Drawing = Callable[[Any, Sequence[Mapping[str, Any]]], None]


def plot(rows: Sequence[Mapping[str, Any]], path: Path, *draw: Drawing) -> None:
    """A PNG of one panel per drawing function, side by side."""
    plot_panels([("", rows, drawing) for drawing in draw], path)


def plot_panels(
    panels: Sequence[tuple[str, Sequence[Mapping[str, Any]], Drawing]], path: Path
) -> None:
    """A PNG of one panel per (title, rows, drawing function), side by side."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    for axis, (title, rows, drawing) in zip(axes[0], panels, strict=True):
        drawing(axis, rows)
        if title:
            axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
