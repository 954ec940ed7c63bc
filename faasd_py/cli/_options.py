"""Option values: parsers that click calls, and the options several commands share."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from faasd_py.config import DATA_DIR_DEFAULT, default_data_dir
from faasd_py.units import parse_duration

STACK_FILE = "stack.yml"


def parsed_by(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that parses with a faasd_py.units parser; its message lists the forms."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return callback


def parse_pairs(values: Sequence[str], what: str) -> list[tuple[str, str]]:
    """KEY=VALUE arguments as pairs, in order (repeated keys kept)."""
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", param_hint=what)
        pairs.append((key.strip(), rest))
    return pairs


def since_to_rfc3339(text: str, now: float) -> str:
    """--since as the gateway wants it: a duration back from `now` ("5m"), or an RFC3339 time."""
    try:
        moment = datetime.fromtimestamp(now - parse_duration(text), UTC)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                f"expected a duration such as 5m or 1h30m, or an RFC3339 time such as "
                f"2026-01-02T15:04:05Z, got {text!r}",
                param_hint="--since",
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _envvar(option: str) -> str:
    return "FAASD_" + option.upper().replace("-", "_")


def shared_option(*decls: str, **attrs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An option shared by commands: it reads FAASD_<OPTION>, whichever command it is given to."""
    name = next(d for d in decls if d.startswith("--"))[2:]
    return click.option(*decls, envvar=_envvar(name), show_envvar=True, **attrs)


data_dir_option = shared_option(  # FAASD_DATA_DIR: config's data-dir rule
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_data_dir,
    show_default=DATA_DIR_DEFAULT,
    help="Where faasd-py keeps its state, packages and credentials: `build` and `up` must "
    "share it, so that `up` finds the packages `build` made.",
)
python_option = shared_option(
    "--python",
    default=sys.executable,
    show_default="this interpreter",
    help="The Python that runs functions (their requirements are installed for it).",
)


stack_file_option = click.option(
    "-f",
    "--file",
    "stack_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The stack file [default: {STACK_FILE}].",
)


# The settings of a queue consumer, which `up` (its own consumer) and `queue-worker` share.
queue_concurrency_option = shared_option(
    "--queue-concurrency",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Calls of one function a consumer runs at once from the async queue, so that a "
    "backlog cannot take every instance from synchronous callers (a function's "
    "com.faasd-py.queue.concurrency annotation sets its own).",
)
queue_lease_option = shared_option(
    "--queue-lease",
    default="60s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="How long a call taken from the queue stays with its consumer without a renewal "
    "(consumers renew it every third of it while the call runs); the calls of a consumer that "
    "died are delivered again after it.",
)
callback_attempts_option = shared_option(
    "--callback-attempts",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="POSTs of an async call's result to its X-Callback-Url before it is given up "
    "(connection errors, time-outs, 429 and 5xx are tried again, with a backoff).",
)
log_level_option = shared_option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="What the process logs to stderr.",
)


# --- cluster -----------------------------------------------------------------------------------

KEY_FILE = "cluster.key"
F = TypeVar("F", bound=Callable[..., Any])


def with_params(command: F, params: list[click.Parameter]) -> F:
    """`command` with `params` added to the options its decorators gave it."""
    # click's decorators collect a function's options in its __click_params__ (the last first).
    own: list[click.Parameter] = command.__dict__.get("__click_params__", [])
    command.__dict__["__click_params__"] = [*own, *params]
    return command


def _check_url(text: str) -> str:
    from faasd_py.redis_connect import parse  # redis-py loads only for cluster commands

    parse(text)  # BadRequest (a usage error) naming the forms it accepts
    return text


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, such as 10.0.0.7:7070, got {text!r}")
    return host.strip("[]"), int(port)


@shared_option(
    "--cluster",
    metavar="URL",
    default=None,
    callback=parsed_by(_check_url),
    help="The cluster's Redis: redis://host:port[/db], rediss://... (TLS), "
    "redis://:PASSWORD@host:port, or redis+sentinel://host1:port1,host2:port2/SERVICE[/db] "
    "(through Sentinel). Registry, placements, leases, packages, the async queue and (unless "
    "--storage/--queue name others) the functions' storage live there.",
)
@click.option(
    "--cluster-key",
    envvar="FAASD_CLUSTER_KEY_FILE",  # named by hand: FAASD_CLUSTER_KEY is the key itself
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    show_default=f"DATA_DIR/{KEY_FILE}",
    help="The cluster's secret key file (mode 0600), which seals secrets in Redis and "
    "authenticates gateways and workers to each other. The first gateway creates it; copy it "
    "to every other host. FAASD_CLUSTER_KEY (hex) overrides it.",
)
def _cluster_params() -> None:
    """Holds the options that every cluster command shares."""


@click.option(
    "--name",
    envvar="FAASD_WORKER_NAME",  # named by hand: FAASD_NAME would be unclear
    show_envvar=True,
    default=socket.gethostname,
    show_default="this host's name",
    help="The worker's name in the cluster (unique; a restart under the same name and address "
    "takes over its registration).",
)
@click.option(
    "--listen",
    envvar="FAASD_WORKER_LISTEN",  # named by hand: FAASD_LISTEN would be unclear
    show_envvar=True,
    metavar="HOST:PORT",
    default=None,
    show_default="--advertise",
    callback=parsed_by(lambda text: _address(text) if text else None),
    help="Where the worker listens, when not where it is advertised (behind NAT: 0.0.0.0:7070).",
)
@shared_option(
    "--advertise",
    metavar="HOST:PORT",
    default="127.0.0.1:7070",
    show_default=True,
    callback=parsed_by(_address),
    help="Where gateways reach this worker (port 0: any free one, for tests).",
)
@shared_option(
    "--lease",
    default="6s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="How long the worker's registration lives without a heartbeat (sent every third of "
    "it): a dead worker's apps are placed elsewhere after it; a worker that cannot renew it "
    "stops taking calls (fencing).",
)
def _worker_params() -> None:
    """Holds the options of a worker host."""


def cluster_options(command: F) -> F:
    """--cluster and --cluster-key."""
    return with_params(command, _cluster_params.__dict__["__click_params__"])


def host_options(command: F) -> F:
    """A worker host's --name, --advertise, --listen and --lease."""
    return with_params(command, _worker_params.__dict__["__click_params__"])
