"""`faasd-py simulate`: replay a trace through keep-alive policies, offline, and report.

The command only parses and wires: it reads the trace (the bench command's --trace/--synthetic
options, reused from _bench_trace), builds the policies (faasd_py.scheduler.parse_policy with the
hybrid options), runs faasd_py.scheduler's simulator and writes JSON, markdown and two PNGs.
The simulator needs numpy (the `sim` extra); without it the command says what to install.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from faasd_py.cli._app import add_row, cli, err, new_table, print_table
from faasd_py.cli._bench_trace import _OPTIONS as _TRACE_OPTIONS
from faasd_py.cli._bench_trace import TRACE_FUNCTION, TRACE_IMAGE, TraceOptions
from faasd_py.cli._options import parsed_by
from faasd_py.errors import BadRequest
from faasd_py.loadgen._report import default_out_dir
from faasd_py.scheduler import POLICY_FORMS, HybridConfig, Policy, parse_policy
from faasd_py.scheduler import _report as report
from faasd_py.scheduler._arrivals import ARRIVALS, DEFAULT_ARRIVALS, Arrivals
from faasd_py.traces import TraceFunction, load_memory, load_trace, synthetic_memory
from faasd_py.units import parse_duration

if TYPE_CHECKING:
    from faasd_py.scheduler import TraceApps

SIM_INSTALL_HINT = "pip install 'faasd-py[sim]' (or pip install numpy)"
# The options of `faasd-py bench` that choose a trace; the replay ones (speedup, spread...)
# mean nothing offline.
_REUSED = ("trace_path", "durations", "synthetic_trace", "apps", "hours", "limit_functions")


def _trace_params() -> list[click.Parameter]:
    """The bench command's trace options, as click parameters, so both commands share them."""

    def holder() -> None:
        return None

    for option in _TRACE_OPTIONS:
        option(holder)
    params: list[click.Parameter] = list(reversed(getattr(holder, "__click_params__", [])))
    found = [p for p in params if p.name in _REUSED]
    if len(found) != len(_REUSED):
        raise RuntimeError("the bench command's trace options changed: update _simulate._REUSED")
    for param in found:
        # Each application of an option makes a new Parameter, so this changes only ours: the
        # policies are about days (the paper's ranges are hours), not a replay's two hours.
        if param.name == "hours":
            param.default = 24.0
    return found


def _with_trace_params(command: click.Command) -> click.Command:
    command.params[:0] = _trace_params()
    return command


def _seconds(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    seconds = parsed_by(parse_duration)(ctx, param, value)
    if seconds is not None and seconds <= 0:
        raise click.BadParameter("must be above 0", ctx=ctx, param=param)
    return seconds


def _policies(texts: Sequence[str], config: HybridConfig, sweep: bool) -> list[Policy]:
    wanted = list(texts) or ["hybrid", "fixed:10m"]
    if sweep:
        wanted += report.pareto_policies()
    policies: list[Policy] = []
    for text in wanted:
        try:
            policy = parse_policy(text, config)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--policy") from None
        if all(p.name != policy.name for p in policies):
            policies.append(policy)
    return policies


def _progress_reporter(progress: RichProgress) -> Callable[[str, int, int], None]:
    tasks: dict[str, Any] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=done)

    return update


@_with_trace_params
@cli.command()
@click.option(
    "--memory",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The trace's memory file (app_memory_percentiles): each app's average MB.",
)
@click.option(
    "--default-memory",
    type=click.FloatRange(min=0, min_open=True),
    default=150.0,
    show_default=True,
    help="MB of an app the memory file does not list (or all, without one).",
)
@click.option(
    "--policy",
    "policy_texts",
    multiple=True,
    metavar="POLICY",
    help=f"A policy to simulate (repeatable): {POLICY_FORMS}. Default: hybrid and fixed:10m; "
    "fixed:10m is always added, as wasted memory is reported relative to it.",
)
@click.option(
    "--sweep/--no-sweep",
    default=True,
    show_default=True,
    help="Also simulate fixed 10/20/30/45/60/90/120 min and hybrid 1/2/3/4 h (the Pareto plot).",
)
@click.option(
    "--range",
    "range_",
    default="4h",
    show_default=True,
    callback=_seconds,
    help="Hybrid: the histogram's range; longer idle times are out of bounds.",
)
@click.option(
    "--bin-width",
    default="1m",
    show_default=True,
    callback=_seconds,
    help="Hybrid: the width of a histogram bin.",
)
@click.option(
    "--head-percentile",
    type=click.FloatRange(0, 100),
    default=5.0,
    show_default=True,
    help="Hybrid: the percentile that sets the pre-warm window.",
)
@click.option(
    "--tail-percentile",
    type=click.FloatRange(0, 100),
    default=99.0,
    show_default=True,
    help="Hybrid: the percentile that sets the keep-alive window.",
)
@click.option(
    "--margin",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.10,
    show_default=True,
    help="Hybrid: head x (1 - margin), tail x (1 + margin).",
)
@click.option(
    "--cv-threshold",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Hybrid: a histogram is representative when the CV of its bin counts is at least this.",
)
@click.option(
    "--oob-threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Hybrid: an out-of-bounds share at or above this goes to the forecast.",
)
@click.option(
    "--min-samples",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Hybrid: fewer idle times than this fall back to keep-alive = range.",
)
@click.option(
    "--arrivals",
    type=click.Choice(ARRIVALS),
    default=DEFAULT_ARRIVALS,
    show_default=True,
    help="Where a minute's invocations arrive within it: evenly spaced, at seeded random times "
    "(poisson), or all at its start.",
)
@click.option(
    "--sample-durations",
    is_flag=True,
    help="Draw each execution's time from its function's percentiles instead of its average.",
)
@click.option(
    "--default-duration",
    default="1s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="How long the executions of a function the durations file does not list run.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse a trace whose functions lack durations or whose apps lack memory, rather than "
    "warn and use the defaults.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the synthetic trace and memory, and of poisson arrivals and sampled durations.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
def simulate(
    trace_path: Path | None,
    durations: Path | None,
    synthetic_trace: bool,
    apps: int,
    hours: float,
    limit_functions: int | None,
    memory: Path | None,
    default_memory: float,
    policy_texts: tuple[str, ...],
    sweep: bool,
    range_: float,
    bin_width: float,
    head_percentile: float,
    tail_percentile: float,
    margin: float,
    cv_threshold: float,
    oob_threshold: float,
    min_samples: int,
    arrivals: Arrivals,
    sample_durations: bool,
    default_duration: float,
    strict: bool,
    seed: int,
    out: Path | None,
) -> None:
    """Replay a trace through keep-alive / pre-warm policies and compare them.

    \b
    Examples:
      faasd-py simulate --trace invocations_per_function_md.anon.d01.csv \\
          --durations function_durations_percentiles.anon.d01.csv \\
          --memory app_memory_percentiles.anon.d01.csv --policy hybrid --policy fixed:60m
      faasd-py simulate --synthetic-trace --apps 2000 --hours 24 --no-sweep

    Reports cold starts per app (their CDF, the 75th-percentile app), wasted memory (loaded but
    idle, MB x s, relative to fixed 10-minute keep-alive) and which hybrid rule decided, in
    run.json, report.md, cdf.png and pareto.png under --out.
    """
    if trace_path is None and not synthetic_trace:
        raise click.UsageError("give --trace FILE or --synthetic-trace")
    if trace_path is not None and synthetic_trace:
        raise click.UsageError("give --trace or --synthetic-trace, not both")
    if durations is not None and trace_path is None:
        raise click.UsageError("--durations goes with --trace")
    if memory is not None and trace_path is None:
        raise click.UsageError("--memory goes with --trace (a synthetic trace draws its own)")
    try:
        config = HybridConfig(
            range=range_,
            bin_width=bin_width,
            head_percentile=head_percentile,
            tail_percentile=tail_percentile,
            margin=margin,
            cv_threshold=cv_threshold,
            oob_threshold=oob_threshold,
            min_samples=min_samples,
        )
    except ValueError as exc:
        raise click.UsageError(f"hybrid options: {exc}") from None
    policies = _policies(policy_texts, config, sweep)
    # Before reading the trace, which can take a while: the simulator needs numpy.
    if importlib.util.find_spec("numpy") is None:
        raise BadRequest(f"simulate needs numpy: {SIM_INSTALL_HINT}")
    from faasd_py import scheduler

    started = time.monotonic()
    options = TraceOptions(
        path=trace_path,
        durations=durations,
        synthetic=synthetic_trace,
        apps=apps,
        hours=hours,
        speedup=60.0,
        limit_functions=limit_functions,
        minutes=None,
        start_minute=0,
        spread="poisson",
        deploy=False,
        function=TRACE_FUNCTION,
        work="sleep",
        cap_ms=None,
        image=TRACE_IMAGE,
    )
    err.print(f"reading the trace ({escape(options.source or '')})")
    functions = _functions(options, seed)
    if memory is not None:
        memory_table = load_memory(memory)
    elif synthetic_trace:
        memory_table = synthetic_memory(functions, seed)
    else:
        memory_table = {}
    try:
        trace_apps = scheduler.group_apps(
            functions,
            memory_table,
            default_memory,
            arrivals=arrivals,
            seed=seed,
            sample_durations=sample_durations,
            default_duration_ms=default_duration * 1000.0,
        )
    except ValueError as exc:
        raise BadRequest(f"the trace ({options.source}): {exc}") from None
    if not trace_apps.apps:
        raise BadRequest(f"the trace ({options.source}) has no invocations")
    loaded = time.monotonic()
    err.print(
        f"{len(functions):,} functions in {trace_apps.apps:,} apps, {trace_apps.minutes:,} "
        f"minutes, {int(trace_apps.invocations.sum()):,} invocations ({loaded - started:.1f} s)"
    )
    _check_defaults(trace_apps, default_memory, default_duration, strict)
    with RichProgress(
        TextColumn("{task.description:>12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        results = scheduler.simulate(trace_apps, policies, _progress_reporter(progress))
    rows = scheduler.summary(results)
    finished = time.monotonic()
    settings = {
        "trace": options.source,
        "functions": len(functions),
        "apps": trace_apps.apps,
        "minutes": trace_apps.minutes,
        "memory": memory.name if memory else ("synthetic" if synthetic_trace else None),
        "default_memory_mb": default_memory,
        "memory_defaulted_apps": trace_apps.memory_defaulted,
        "arrivals": arrivals,
        "sample_durations": sample_durations,
        "default_duration_s": default_duration,
        "durations_missing_functions": trace_apps.durations_missing,
        "durations_missing_invocations": trace_apps.durations_missing_invocations,
        "seed": seed if synthetic_trace else None,
        "hybrid": {k: v for k, v in vars(config).items()},
        "load_seconds": round(loaded - started, 2),
        "simulate_seconds": round(finished - loaded, 2),
    }
    folder = out or default_out_dir("simulate", dt.datetime.now(dt.UTC), Path.cwd())
    write_reports(folder, settings, rows)
    # Narrow enough for 80 columns; the per-rule breakdown is in report.md.
    table = new_table("policy", "p50 app %", "p75 app %", "cold starts", "wasted")
    for row in rows:
        add_row(
            table,
            row["policy"],
            f"{row['p50_app_cold_percent']:.1f}",
            f"{row['p75_app_cold_percent']:.1f}",
            f"{row['cold_starts']:,}",
            report.share(row["wasted_normalized"]),
        )
    print_table(table)
    err.print(
        "cold starts of the 50th/75th-percentile app (% of its invocations); wasted memory "
        f"relative to fixed:10m. Report in {escape(str(folder))} ({finished - loaded:.1f} s to "
        "simulate)"
    )


def _functions(options: TraceOptions, seed: int) -> list[TraceFunction]:
    """The trace's functions; a trace file's counts as numpy rows (an eighth of the memory)."""
    if options.path is None:
        return options.functions(seed)
    return load_trace(options.path, options.durations, options.limit_functions, arrays=True)


def _check_defaults(apps: TraceApps, memory_mb: float, duration_s: float, strict: bool) -> None:
    """Say how much of the trace ran on default memory and durations; --strict refuses it."""
    problems = []
    if apps.durations_missing:
        problems.append(
            f"{apps.durations_missing:,} invoked functions "
            f"({apps.durations_missing_invocations:,} invocations) have no durations "
            f"(--durations): they ran {duration_s:g} s each"
        )
    if apps.memory_defaulted:
        problems.append(
            f"{apps.memory_defaulted:,} of {apps.apps:,} apps have no memory (--memory): "
            f"{memory_mb:g} MB each"
        )
    if problems and strict:
        raise BadRequest("--strict: " + "; ".join(problems))
    for problem in problems:
        err.print(f"[yellow]warning:[/] {escape(problem)}")


def write_reports(
    folder: Path, settings: dict[str, Any], rows: Sequence[dict[str, Any]], title: str = ""
) -> None:
    """run.json, report.md, and cdf.png and pareto.png when matplotlib is there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(
            json.dumps({"settings": settings, "policies": list(rows)}, indent=1) + "\n"
        )
        (folder / "report.md").write_text(
            report.markdown(title or "Keep-alive policies on a trace", settings, rows)
        )
    except OSError as exc:
        raise BadRequest(f"cannot write the report in {folder}: {exc.strerror or exc}") from None
    from faasd_py.loadgen._plots import PlotsUnavailable

    try:
        report.plot(rows, folder / "cdf.png", report.draw_cdf)
        report.plot(rows, folder / "pareto.png", report.draw_pareto)
    except PlotsUnavailable as exc:
        err.print(str(exc))
