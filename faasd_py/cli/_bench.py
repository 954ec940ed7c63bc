"""`faasd-py bench`: the load generator's command, and `faasd-py bench report` comparing runs.

`bench` is a group whose unknown first argument falls through to its default command, `run`, so
both `faasd-py bench hello --rate 100` and `faasd-py bench report a.json b.json` work. The
commands only parse options into a Plan and show progress; faasd_py.loadgen does the rest.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.live import Live
from rich.markup import escape

from faasd_py.cli._app import add_row, bold, cli, err, new_table, out, print_table
from faasd_py.cli._bench_trace import TraceOptions, deploy_trace_functions, trace_options
from faasd_py.cli._client import GatewayOptions, gateway_command
from faasd_py.cli._options import parse_pairs, parsed_by
from faasd_py.loadgen import _selftest
from faasd_py.loadgen._markdown import ms
from faasd_py.loadgen._plan import DEFAULT_INFLIGHT_CAP, Plan, RequestShape
from faasd_py.loadgen._progress import Progress, render
from faasd_py.loadgen._report import Written, default_out_dir, find_checkout, write_comparison
from faasd_py.loadgen._report import write_run as write_run_report
from faasd_py.loadgen._run import check_gateway, run_bench
from faasd_py.loadgen._schedule import parse_rate
from faasd_py.units import parse_duration, parse_size

DEFAULT_RUN = "run"
DEFAULT_DURATION = 30.0
# Without a terminal (CI logs, pipes) progress is a line this often instead of a live display.
PLAIN_PROGRESS_EVERY = 5.0


class _BenchGroup(click.Group):
    """A group that runs `run` when its first argument is not one of its commands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_RUN, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # `faasd-py bench --help` is what people type: show the run options too.
        super().format_help(ctx, formatter)
        command = self.commands[DEFAULT_RUN]
        with command.make_context(DEFAULT_RUN, [], parent=ctx, resilient_parsing=True) as sub:
            options = [p for p in command.get_params(sub) if isinstance(p, click.Option)]
            records = [r for p in options if (r := p.get_help_record(sub))]
            with formatter.section(f"Options of `faasd-py bench [{DEFAULT_RUN}]`"):
                formatter.write_dl(records)


@cli.group(cls=_BenchGroup, no_args_is_help=True)
def bench() -> None:
    """Benchmark a function: open or closed loop, or replay a trace; or compare reports.

    \b
    faasd-py bench FUNCTION [OPTIONS]        run a benchmark (`run` is the default command)
    faasd-py bench --trace FILE [OPTIONS]    replay an Azure Functions 2019 trace
    faasd-py bench --synthetic-trace         replay a synthetic trace
    faasd-py bench --self-test               measure the generator's own ceiling
    faasd-py bench report A.json B.json      compare runs side by side

    \b
    Examples:
      faasd-py bench hello --rate 2000 --duration 30s          # open loop, Poisson arrivals
      faasd-py bench hello --rate 500:5000:500 --step 10s      # rate steps: find the knee
      faasd-py bench hello --concurrency 64 --duration 30s     # closed loop
      faasd-py bench --trace invocations.csv --durations durations.csv --speedup 60
      faasd-py bench --synthetic-trace --apps 200 --hours 2 --seed 7
      faasd-py bench report bench/results/*/run.json

    Open loop sends each request at its scheduled time whether or not earlier ones answered,
    and counts latency from that time (no coordinated omission). Reports (run.json,
    report.md, PNGs) go to --out, by default bench/results/<time>-<label>/ in a checkout of
    faasd-py, else ./faasd-bench-<time>-<label>/.
    """


def _positive_duration(what: str) -> Any:
    parse = parsed_by(parse_duration)

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        seconds = parse(ctx, param, value)
        if seconds is not None and seconds <= 0:
            raise click.BadParameter(f"{what} must be above zero, got {value!r}", ctx, param)
        return seconds

    return callback


@bench.command(DEFAULT_RUN, context_settings={"default_map": {"timeout": "30s"}})
@click.argument("function", required=False)
@click.option(
    "--rate",
    callback=parsed_by(parse_rate),
    metavar="R|A:B:S",
    help="Open loop: requests per second, or rate steps from A to B by S.",
)
@click.option(
    "--step",
    default="10s",
    show_default=True,
    callback=_positive_duration("--step"),
    help="How long each rate step lasts.",
)
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Closed loop: connections.")
@click.option(
    "--duration",
    "-d",
    callback=_positive_duration("--duration"),
    help=f"Recorded time [default: {DEFAULT_DURATION:g}s; rate steps: every step].",
)
@click.option(
    "--warmup",
    default="2s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="Time sent before recording starts (not for traces).",
)
@click.option(
    "--procs",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="the core count",
    help="Generator processes.",
)
@click.option("--method", "-m", default="POST", show_default=True, help="HTTP method.")
@click.option("--header", "-H", multiple=True, metavar="K=V", help="Request header.")
@click.option("--body", default=None, metavar="TEXT|@FILE", help="Request body.")
@click.option("--body-size", default=None, metavar="SIZE", help="A body of SIZE bytes (4k, 1Mi).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the schedule.")
@click.option("--label", default=None, help="Name of the run (report folder and title).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option(
    "--inflight-cap",
    type=click.IntRange(min=1),
    default=DEFAULT_INFLIGHT_CAP,
    show_default=True,
    help="Requests in flight per process; arrivals beyond are skipped and counted.",
)
@trace_options
@click.option("--self-test", is_flag=True, help="Measure the generator's ceiling and cache it.")
@click.option("--no-self-test", is_flag=True, help="Do not measure the ceiling; reports say so.")
@click.option(
    "--self-test-duration",
    default="3s",
    show_default=True,
    callback=_positive_duration("--self-test-duration"),
    help="How long the self-test drives the trivial server.",
)
@gateway_command
def run(
    target: GatewayOptions,
    function: str | None,
    rate: list[float] | None,
    step: float,
    concurrency: int | None,
    duration: float | None,
    warmup: float,
    procs: int,
    method: str,
    header: tuple[str, ...],
    body: str | None,
    body_size: str | None,
    seed: int,
    label: str | None,
    out: Path | None,
    inflight_cap: int,
    trace: TraceOptions,
    self_test: bool,
    no_self_test: bool,
    self_test_duration: float,
) -> None:
    """Run a benchmark against FUNCTION, or replay a trace; write its report.

    \b
    Examples:
      faasd-py bench hello --rate 2000 --duration 30s
      faasd-py bench hello --concurrency 64 --body-size 4k --out /tmp/hello-c64
      faasd-py bench --synthetic-trace --apps 50 --hours 1 --speedup 120
    """
    if self_test:
        if function or trace.enabled or no_self_test:
            raise click.UsageError("--self-test runs alone (with --procs)")
        _measure_ceiling(procs, self_test_duration)
        return
    _check_modes(function, trace, rate, concurrency)
    shape = RequestShape(
        method=method.upper(),
        headers=tuple(parse_pairs(header, "--header")),
        body=_body(body, body_size),
        timeout=target.timeout,
    )
    client = target.client()
    gateway = client.url
    parts = urllib.parse.urlsplit(gateway)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"expected an http:// URL, got {gateway!r}", param_hint="--gateway"
        )
    if concurrency is not None:
        procs = min(procs, concurrency)  # a process without connections would idle
    plan = Plan(
        gateway=gateway,
        function=function or "trace",
        request=shape,
        rates=tuple(rate or ()),
        step=step,
        duration=duration if duration or (rate and len(rate) > 1) else DEFAULT_DURATION,
        concurrency=concurrency or 0,
        trace=trace.replay(seed) if trace.enabled else None,
        warmup=warmup,
        procs=procs,
        seed=seed,
        inflight_cap=inflight_cap,
    )
    check_gateway(gateway)
    if plan.trace is not None and trace.deploy:
        deploy_trace_functions(client, plan.trace.functions, trace.image)
    ceiling = _selftest.ceiling(
        procs, enabled=not no_self_test, seconds=self_test_duration, announce=_say
    )
    name = label or _label(plan)
    checkout = find_checkout(Path.cwd())
    report = _with_progress(
        lambda show: run_bench(
            plan,
            ceiling=ceiling,
            label=name,
            source=trace.source,
            checkout=checkout,
            on_progress=show,
        ),
        plan,
    )
    folder = out or default_out_dir(name, dt.datetime.now(), Path.cwd())
    written = write_run_report(folder, report)
    _print_summary(report)
    _print_written(written)
    if report["partial"]:
        raise click.exceptions.Exit(130)


def _check_modes(
    function: str | None, trace: TraceOptions, rate: list[float] | None, concurrency: int | None
) -> None:
    if function and trace.enabled:
        raise click.UsageError("give a FUNCTION or a trace (--trace, --synthetic-trace), not both")
    if trace.enabled:
        if rate or concurrency:
            raise click.UsageError("--rate and --concurrency are for a FUNCTION, not a trace")
        return
    if not function:
        raise click.UsageError(
            "give a FUNCTION to benchmark, or --trace FILE, --synthetic-trace or --self-test"
        )
    if (rate is None) == (concurrency is None):
        raise click.UsageError(
            "give either --rate (open loop) or --concurrency (closed loop), one of them"
        )


def _body(body: str | None, body_size: str | None) -> bytes:
    if body is not None and body_size is not None:
        raise click.UsageError("give --body or --body-size, not both")
    if body_size is not None:
        try:
            return b"x" * parse_size(body_size)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--body-size") from None
    if body is None:
        return b""
    if body.startswith("@"):
        try:
            return Path(body[1:]).read_bytes()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {body[1:]}: {exc.strerror}", param_hint="--body"
            ) from None
    return body.encode()


def _label(plan: Plan) -> str:
    if plan.trace is not None:
        return "trace"
    if plan.mode == "closed":
        return f"{plan.function}-c{plan.concurrency}"
    rates = plan.rates
    spread = f"{rates[0]:g}" if len(rates) == 1 else f"{rates[0]:g}-{rates[-1]:g}"
    return f"{plan.function}-r{spread}"


def _say(text: str) -> None:
    err.print(escape(text), style="dim")


def _measure_ceiling(procs: int, seconds: float) -> None:
    ceiling = _selftest.ceiling(procs, enabled=True, fresh=True, seconds=seconds, announce=_say)
    out.print(
        f"generator ceiling: {bold(f'{ceiling.rps:,.0f} req/s')} with {procs} process(es) "
        f"(closed loop against a trivial server; cached in {escape(str(_selftest.cache_path()))})"
    )


def _with_progress(work: Any, plan: Plan) -> dict[str, Any]:
    """Run `work(on_progress)` with a live display on a terminal, or a line now and then."""
    if err.is_terminal:
        with Live(console=err, refresh_per_second=4, transient=False) as live:
            return dict(work(lambda progress: live.update(render(progress))))
    last = [0.0]

    def plain(progress: Progress) -> None:
        if time.monotonic() - last[0] >= PLAIN_PROGRESS_EVERY:
            last[0] = time.monotonic()
            err.print(render(progress))

    err.print(f"running for {plan.total_seconds:g} s; Ctrl-C ends early and still writes a report")
    return dict(work(plain))


def _print_summary(report: dict[str, Any]) -> None:
    totals, latency = report["totals"], report.get("latency_ms") or {}
    table = new_table("answered req/s", "answers", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms")
    add_row(
        table,
        f"{totals['throughput_rps']:,.0f}",
        f"{totals['answered']:,}",
        f"{totals['errors']:,}",
        *(ms(latency.get(k)) for k in ("p50", "p90", "p99", "max")),
    )
    out.print(bold(report["title"]))
    print_table(table)
    if report.get("cold_starts") is not None:
        out.print(f"cold starts: {report['cold_starts']:,}")
    for flag in report["flags"]:
        out.print(f"[yellow]flag:[/] {escape(flag)}")


def _print_written(written: Written) -> None:
    folder = written.paths[0].parent
    names = ", ".join(p.name for p in written.paths)
    out.print(f"report in {bold(folder)}: {escape(names)}")
    if written.note:
        err.print(f"[yellow]{escape(written.note)}[/]")


@bench.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
def report_command(runs: Sequence[Path], out: Path | None) -> None:
    """Compare runs (their run.json files) side by side: compare.md and overlaid plots.

    \b
    Example:
      faasd-py bench report bench/results/a/run.json bench/results/b/run.json --out /tmp/ab
    """
    if len(runs) < 2:
        raise click.UsageError("give at least two run.json files to compare")
    folder = out or default_out_dir("compare", dt.datetime.now(), Path.cwd())
    written = write_comparison(folder, runs)
    _print_written(written)
