"""`faasd-py queue ...` (the async queues, their dead letters, replay) and `faasd-py queue-worker`
(a consumer of a shared Redis queue, in a process of its own)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import click
from yarl import URL

from faasd_py.cli._app import add_row, bold, cli, err, new_table, out, print_table
from faasd_py.cli._client import GatewayOptions, gateway_command
from faasd_py.cli._options import (
    callback_attempts_option,
    data_dir_option,
    log_level_option,
    parsed_by,
    queue_concurrency_option,
    queue_lease_option,
    shared_option,
)
from faasd_py.config import DEFAULT_GATEWAY
from faasd_py.redis_connect import REDIS_SCHEMES, redact
from faasd_py.units import parse_duration

# The queues that several processes can share (faasd_py.queue.open_queue's schemes).
_SHARED_SCHEMES = REDIS_SCHEMES


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON.")
@gateway_command
def queue(target: GatewayOptions, as_json: bool) -> None:
    """Show the async queue of each function of a namespace (calls made with
    `invoke --async` or /async-function/); the subcommands list and replay dead letters.

    \b
    Columns: calls waiting (DEPTH, retries not yet due included), taken by a consumer
    (IN FLIGHT), how long the oldest has waited, retries so far, dead letters held.

    \b
    Examples:
      faasd-py queue
      faasd-py queue dead-letters hello
      faasd-py queue replay hello
    """
    if click.get_current_context().invoked_subcommand is not None:
        return
    queues = target.client().send("GET", "/system/queue", query=target.namespace_query()).json()
    if as_json:
        click.echo(json.dumps(queues, indent=2))
        return
    table = new_table("FUNCTION", "DEPTH", "IN FLIGHT", "OLDEST WAIT", "RETRIES", "DEAD LETTERS")
    for q in queues:
        add_row(
            table,
            q["function"],
            q["depth"],
            q["inFlight"],
            _age(q["oldestAgeSeconds"]),
            q["retries"],
            q["deadLetters"],
        )
    print_table(table)


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


@queue.command("dead-letters")
@click.argument("name", required=False)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most N."
)
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON.")
@gateway_command
def dead_letters(target: GatewayOptions, name: str | None, limit: int, as_json: bool) -> None:
    """List the async calls that used up their attempts (of NAME, or of every function of the
    namespace), oldest first: each one's ID (for `queue replay --id`), function, call id,
    attempts and when it failed, then why its last attempt failed.

    \b
    Example:
      faasd-py queue dead-letters hello
    """
    query = [*target.namespace_query(), ("limit", str(limit))]
    if name:
        query.append(("name", name))
    letters = target.client().send("GET", "/system/queue/dead-letters", query=query).json()
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return
    # Two lines each rather than a table: a reason is long, and an id or call id must show whole.
    for letter in letters:
        click.echo(
            f"{letter['id']}  {letter['function']}  call {letter['callId']}  "
            f"{letter['attempts']} attempts  failed {letter['failedAt']}"
        )
        click.echo(f"    {_one_line(letter['reason'])}")
    if not letters:
        err.print("No dead letters.", style="dim")


def _one_line(text: str, width: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


@queue.command("replay")
@click.argument("name", required=False)
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="ID",
    help="Only this dead letter (an ID from `queue dead-letters`); repeat for more.",
)
@gateway_command
def replay(target: GatewayOptions, name: str | None, ids: tuple[str, ...]) -> None:
    """Put dead letters back in their queues as new calls, with their old call ids and their
    attempts anew: those given by --id, else all of NAME, else all of the namespace.

    \b
    Examples:
      faasd-py queue replay hello
      faasd-py queue replay --id 1700000000000-0
    """
    body: dict[str, Any] = {}
    if name:
        body["functionName"] = name
    if ids:
        body["ids"] = list(ids)
    answer = target.client().send(
        "POST", "/system/queue/replay", json_body=target.with_namespace(body)
    )
    count = answer.json().get("replayed", 0)
    out.print(f"Replayed {bold(count)} dead letter{'' if count == 1 else 's'}")


# --- queue-worker ------------------------------------------------------------------------------


def _shared_queue(url: str) -> str:
    if url.split("://", 1)[0] not in _SHARED_SCHEMES:
        raise ValueError(
            "expected a Redis queue (redis://host:port[/db], rediss://..., unix://... or "
            f"redis+sentinel://host:port[,host:port...]/SERVICE[/db]), got {redact(url)!r}: the "
            "embedded queue lives in the data dir of `faasd-py up`, which consumes it itself; to "
            "share a queue, run `faasd-py up --queue redis://...` and give this command the same "
            "URL"
        )
    return url


@cli.command("queue-worker")
@shared_option(
    "--queue",
    "queue_url",
    required=True,
    metavar="URL",
    callback=parsed_by(_shared_queue),
    help="The Redis queue that `faasd-py up --queue` uses: redis://host:port[/db].",
)
@shared_option(
    "--gateway",
    "-g",
    default=DEFAULT_GATEWAY,
    show_default=True,
    metavar="URL",
    help="The gateway whose functions run the calls (through its /function/ route).",
)
@shared_option(
    "--user", "-u", default=None, help="Basic auth user (default: read from the data dir)."
)
@shared_option(
    "--password", default=None, help="Basic auth password (default: read from the data dir)."
)
@data_dir_option
@click.option(
    "--name",
    default=None,
    help="This consumer's name in the queue, unique among consumers [default: host:pid:random].",
)
@queue_concurrency_option
@queue_lease_option
@callback_attempts_option
@shared_option(
    "--shutdown-timeout",
    default="30s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="On Ctrl-C or SIGTERM, how long calls in flight may take to finish; the rest are "
    "delivered again later, to another consumer.",
)
@log_level_option
def queue_worker(
    queue_url: str,
    gateway: str,
    user: str | None,
    password: str | None,
    data_dir: Path,
    name: str | None,
    queue_concurrency: int,
    queue_lease: float,
    callback_attempts: int,
    shutdown_timeout: float,
    log_level: str,
) -> None:
    """Consume a shared async queue away from the gateway: take the calls of every function the
    gateway has deployed, run each through the gateway's /function/ route, POST results to
    their callbacks, and retry or dead-letter failures as each function's annotations say.

    Run as many as needed, on any host that reaches Redis and the gateway; start the gateway
    with `faasd-py up --queue redis://... --no-queue-consumer` to leave every call to them.
    Runs until Ctrl-C or SIGTERM.

    \b
    Example:
      faasd-py queue-worker --queue redis://10.0.0.5:6379/0 --gateway http://10.0.0.4:8080
    """
    from faasd_py.cli._local import configure_logging
    from faasd_py.queue import QueueLimits, QueuePolicy, RetryPolicy, serve_queue_worker

    configure_logging(log_level)
    client = GatewayOptions(gateway, user, password, data_dir, timeout=10.0).client()
    headers = {"Authorization": client.authorization} if client.authorization else {}
    default = QueuePolicy(RetryPolicy(), QueueLimits(concurrency=queue_concurrency))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_queue_worker(
                queue_url,
                client.url,
                headers,
                name=name,
                stop=stop,
                default=default,
                lease=queue_lease,
                callback_attempts=callback_attempts,
                drain_timeout=shutdown_timeout,
            )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    import uvloop

    shown = str(URL(queue_url).with_password(None))  # not the password, if the URL has one
    err.print(
        f"queue-worker: consuming {shown} through {client.url}; stop with Ctrl-C", markup=False
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
    err.print("queue-worker: stopped")
