"""PNG plots of runs, drawn from run.json's dict: latency CDF, timeline, rate steps, overlays.

matplotlib is a benchmark dependency (the `bench` extra), not a runtime one: it is imported
when a plot is drawn, and PlotsUnavailable says how to install it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faasd_py.loadgen._histogram import Histogram

INSTALL_HINT = "pip install -e '.[bench]' (or pip install matplotlib)"


class PlotsUnavailable(Exception):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise PlotsUnavailable(f"no plots: matplotlib is not installed; {INSTALL_HINT}") from None
    return plt


def _cdf_points(report: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    histogram = Histogram.from_json(report["histograms"]["latency"])
    points = histogram.cdf()
    return [v / 1000 for v, _ in points], [f for _, f in points]


def _draw_cdf(axis: Any, report: Mapping[str, Any], label: str) -> None:
    xs, ys = _cdf_points(report)
    if xs:
        axis.step(xs, ys, where="post", label=label)


def _plain_numbers(axis: Any) -> None:
    """Log axes labelled 0.5, 1, 2, 10 rather than 10^0 and 2x10^0."""
    from matplotlib.ticker import FuncFormatter  # type: ignore[import-not-found,unused-ignore]

    def tick(value: float, _pos: object = None) -> str:
        return f"{value:,.0f}" if value >= 10 else f"{value:g}"

    def minor(value: float, _pos: object = None) -> str:
        return tick(value) if f"{value:.0e}"[0] in "25" else ""

    for part in (axis.xaxis, axis.yaxis):
        if part.get_scale() == "log":
            part.set_major_formatter(FuncFormatter(tick))
            part.set_minor_formatter(FuncFormatter(minor))


def _finish_cdf(axis: Any) -> None:
    axis.set_xscale("log")
    axis.set_xlabel("latency, ms (log scale)")
    axis.set_ylabel("fraction of answers at or below")
    axis.set_ylim(0, 1.01)
    for p in (0.5, 0.99):
        axis.axhline(p, color="grey", lw=0.6, ls=":")
        axis.annotate(
            f"p{p * 100:g}",
            (1.0, p),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            xytext=(3, -3),
            textcoords="offset points",
        )
    axis.grid(True, which="both", alpha=0.25)
    _plain_numbers(axis)


def _seconds(report: Mapping[str, Any], key: str) -> tuple[list[int], list[float | None]]:
    rows = report["timeline"]
    return [r["second"] for r in rows], [r[key] for r in rows]


def _draw_timeline(top: Any, bottom: Any, report: Mapping[str, Any], label: str) -> None:
    def name(what: str) -> str:
        return f"{label}: {what}" if label else what

    seconds, counts = _seconds(report, "count")
    (line,) = top.plot(seconds, counts, marker=".", label=name("answered/s"))
    _, errors = _seconds(report, "errors")
    if any(errors):
        top.plot(seconds, errors, ls="--", color=line.get_color(), label=name("errors/s"))
    for key, style in (("p50_ms", "-"), ("p99_ms", "--")):
        _, values = _seconds(report, key)
        bottom.plot(seconds, values, ls=style, color=line.get_color(), label=name(key[:3]))


def _finish_timeline(top: Any, bottom: Any) -> None:
    top.set_ylabel("per second")
    top.set_ylim(bottom=0)
    bottom.set_ylabel("latency, ms")
    bottom.set_yscale("log")
    bottom.set_xlabel("second of the run (answers by the second they arrived in)")
    for axis in (top, bottom):
        axis.grid(True, which="both", alpha=0.25)
        axis.legend(fontsize=8)
    _plain_numbers(bottom)


def plot_run(report: Mapping[str, Any], out: Path) -> list[Path]:
    """cdf.png, timeline.png, and steps.png for a run with rate steps; the paths written."""
    plt = _pyplot()
    title = str(report.get("title", "faasd-py bench"))
    written = []

    fig, axis = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    _draw_cdf(axis, report, "latency")
    _finish_cdf(axis)
    axis.set_title(f"{title}: latency CDF", fontsize=10)
    written.append(_save(plt, fig, out / "cdf.png"))

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    _draw_timeline(top, bottom, report, "")
    _finish_timeline(top, bottom)
    top.set_title(f"{title}: over time", fontsize=10)
    written.append(_save(plt, fig, out / "timeline.png"))

    steps = report.get("steps")
    if steps:
        written.append(_plot_steps(plt, steps, title, out / "steps.png"))
    return written


def _plot_steps(plt: Any, steps: Sequence[Mapping[str, Any]], title: str, path: Path) -> Path:
    offered = [s["offered_rps"] for s in steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    left.plot(offered, offered, ls=":", color="grey", label="offered")
    left.plot(offered, [s["throughput_rps"] for s in steps], marker="o", label="answered")
    left.plot(offered, [s["ok_rps"] for s in steps], marker=".", label="ok")
    left.set_ylabel("req/s")
    right.plot(offered, [s["p99_ms"] for s in steps], marker="o", label="p99")
    right.plot(offered, [s["p50_ms"] for s in steps], marker=".", label="p50")
    right.set_yscale("log")
    right.set_ylabel("latency, ms")
    for axis in (left, right):
        axis.set_xlabel("offered rate, req/s")
        axis.grid(True, which="both", alpha=0.25)
        axis.legend(fontsize=8)
    _plain_numbers(right)
    fig.suptitle(f"{title}: throughput and latency against the offered rate", fontsize=10)
    return _save(plt, fig, path)


def plot_compare(
    reports: Sequence[Mapping[str, Any]], names: Sequence[str], out: Path
) -> list[Path]:
    """compare-cdf.png and compare-timeline.png: the runs overlaid."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for report, name in zip(reports, names, strict=True):
        _draw_cdf(axis, report, name)
    _finish_cdf(axis)
    axis.legend(fontsize=8)
    axis.set_title("latency CDF", fontsize=10)
    written = [_save(plt, fig, out / "compare-cdf.png")]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    for report, name in zip(reports, names, strict=True):
        _draw_timeline(top, bottom, report, name)
    _finish_timeline(top, bottom)
    top.set_title("over time", fontsize=10)
    written.append(_save(plt, fig, out / "compare-timeline.png"))
    return written


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
