"""The trace options of `faasd-py bench`: which trace, how it is replayed, where it goes.

A trace function cannot run its real code here; it maps to a deployed function that sleeps or
spins for a duration drawn from its percentiles (examples/trace-func). By default every trace
function invokes one such deployment; `--deploy-trace-functions` deploys one per trace function,
labelled with its app, so that per-app scaling and cold starts show.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import click
from rich.markup import escape

from faasd_py.cli._app import err
from faasd_py.cli._client import Gateway
from faasd_py.cli._functions import _deploy_one
from faasd_py.cli._options import parsed_by
from faasd_py.errors import BadRequest
from faasd_py.loadgen._plan import TraceReplay
from faasd_py.spec import LABEL_APP, LABEL_SCALE_MIN, parse_deployment
from faasd_py.traces import (
    TraceFunction,
    attach_durations,
    load_durations,
    load_invocations,
    synthetic_trace,
    total_invocations,
)
from faasd_py.units import parse_duration

TRACE_FUNCTION = "trace-func"
TRACE_IMAGE = "trace-func:latest"


@dataclass(frozen=True)
class TraceOptions:
    path: Path | None
    durations: Path | None
    synthetic: bool
    apps: int
    hours: float
    speedup: float
    limit_functions: int | None
    minutes: int | None
    start_minute: int
    spread: Literal["poisson", "uniform"]
    deploy: bool
    function: str
    work: Literal["sleep", "spin"]
    cap_ms: float | None
    image: str

    @property
    def enabled(self) -> bool:
        return self.path is not None or self.synthetic

    @property
    def source(self) -> str | None:
        if self.path is not None:
            return self.path.name
        if self.synthetic:
            return f"synthetic, {self.apps} apps over {self.hours:g} h"
        return None

    def functions(self, seed: int) -> list[TraceFunction]:
        if self.path is not None:
            found = load_invocations(self.path, self.limit_functions)
            if self.durations is not None:
                found = attach_durations(found, load_durations(self.durations))
            return found
        found = synthetic_trace(self.apps, max(1, round(self.hours * 60)), seed)
        return found[: self.limit_functions] if self.limit_functions else found

    def replay(self, seed: int) -> TraceReplay:
        functions = tuple(self.functions(seed))
        replay = TraceReplay(
            functions=functions,
            speedup=self.speedup,
            spread=self.spread,
            start_minute=self.start_minute,
            minutes=self.minutes,
            target=None if self.deploy else self.function,
            work=self.work,
            cap_ms=self.cap_ms,
        )
        if not total_invocations(functions, self.start_minute, replay.replay_minutes):
            raise BadRequest(
                f"the trace ({self.source}) has no invocations in the {replay.replay_minutes} "
                f"minutes from minute {self.start_minute}: choose other --start-minute/--minutes"
            )
        return replay


_OPTIONS: Sequence[Callable[[Any], Any]] = (
    click.option(
        "--trace",
        "trace_path",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Replay this Azure Functions 2019 invocations file (invocations_per_function_md).",
    ),
    click.option(
        "--durations",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Its durations file (function_durations_percentiles): how long functions run.",
    ),
    click.option(
        "--synthetic-trace",
        is_flag=True,
        help="Replay a trace drawn from the 2019 paper's figures.",
    ),
    click.option(
        "--apps",
        type=click.IntRange(min=1),
        default=200,
        show_default=True,
        help="Synthetic: apps.",
    ),
    click.option(
        "--hours",
        type=click.FloatRange(min=0, min_open=True),
        default=2.0,
        show_default=True,
        help="Synthetic: hours of trace.",
    ),
    click.option(
        "--speedup",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        help="Trace minutes replayed per minute (60: a minute in a second).",
    ),
    click.option(
        "--limit-functions", type=click.IntRange(min=1), help="Only the trace's first N functions."
    ),
    click.option("--minutes", type=click.IntRange(min=1), help="Replay N minutes of the trace."),
    click.option(
        "--start-minute",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="The trace minute to start at.",
    ),
    click.option(
        "--spread",
        type=click.Choice(["poisson", "uniform"]),
        default="poisson",
        show_default=True,
        help="How a minute's invocations are placed within it.",
    ),
    click.option(
        "--deploy-trace-functions",
        is_flag=True,
        help=f"Deploy one function per trace function (image {TRACE_IMAGE}) instead of "
        "invoking one.",
    ),
    click.option(
        "--trace-function",
        default=TRACE_FUNCTION,
        show_default=True,
        help="The deployed function every trace function invokes.",
    ),
    click.option(
        "--trace-work",
        type=click.Choice(["sleep", "spin"]),
        default="sleep",
        show_default=True,
        help="Whether trace functions sleep or keep a CPU busy for their duration.",
    ),
    click.option(
        "--cap-duration",
        callback=parsed_by(parse_duration),
        help="Cut sampled durations longer than this (e.g. 1s).",
    ),
)


def trace_options(command: Callable[..., None]) -> Callable[..., None]:
    """Adds the trace options to a command, which receives them as `trace: TraceOptions`."""

    @functools.wraps(command)
    def wrapper(
        trace_path: Path | None,
        durations: Path | None,
        synthetic_trace: bool,
        apps: int,
        hours: float,
        speedup: float,
        limit_functions: int | None,
        minutes: int | None,
        start_minute: int,
        spread: str,
        deploy_trace_functions: bool,
        trace_function: str,
        trace_work: str,
        cap_duration: float | None,
        **kwargs: Any,
    ) -> None:
        if trace_path is not None and synthetic_trace:
            raise click.UsageError("give --trace or --synthetic-trace, not both")
        if durations is not None and trace_path is None:
            raise click.UsageError("--durations goes with --trace")
        options = TraceOptions(
            path=trace_path,
            durations=durations,
            synthetic=synthetic_trace,
            apps=apps,
            hours=hours,
            speedup=speedup,
            limit_functions=limit_functions,
            minutes=minutes,
            start_minute=start_minute,
            spread=cast(Literal["poisson", "uniform"], spread),
            deploy=deploy_trace_functions,
            function=trace_function,
            work=cast(Literal["sleep", "spin"], trace_work),
            cap_ms=None if cap_duration is None else cap_duration * 1000,
            image=TRACE_IMAGE,
        )
        command(trace=options, **kwargs)

    decorated: Callable[..., None] = wrapper
    for option in reversed(_OPTIONS):
        decorated = option(decorated)
    return decorated


def deploy_trace_functions(client: Gateway, functions: Sequence[TraceFunction], image: str) -> None:
    """One deployment per trace function, in its app, scaled to zero when idle (so the
    replay's cold starts are the platform's, not hidden by a warm floor)."""
    names = sorted({f.name: f for f in functions}.items())
    err.print(f"deploying {len(names)} trace functions ({escape(image)}) at {escape(client.url)}")
    for name, function in names:
        spec = parse_deployment(
            {
                "service": name,
                "image": image,
                "labels": {LABEL_APP: function.app_name, LABEL_SCALE_MIN: "0"},
            }
        )
        _deploy_one(client, spec)
