"""Commands on deployed functions: deploy, list, describe, remove, invoke, logs."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import click
from prometheus_client.parser import text_string_to_metric_families
from rich.markup import escape

from faasd_py.cli._app import add_row, bold, cli, err, fail, new_table, out, print_table
from faasd_py.cli._client import Gateway, GatewayOptions, gateway_command
from faasd_py.cli._options import STACK_FILE, parse_pairs, since_to_rfc3339, stack_file_option
from faasd_py.errors import FaasdError, NotFound, Unauthorized, Unavailable
from faasd_py.spec import (
    DEFAULT_NAMESPACE,
    LABEL_APP,
    FunctionSpec,
    function_ref,
    load_stack,
    parse_deployment,
)

# --- deploy ------------------------------------------------------------------------------------


def _deploy_one(client: Gateway, spec: FunctionSpec) -> int:
    """PUT the deployment (an update), POST it when the function is new: what faas-cli does."""
    try:
        return client.send("PUT", "/system/functions", json_body=spec.to_json()).status
    except NotFound:
        return client.send("POST", "/system/functions", json_body=spec.to_json()).status


def _spec_from_flags(
    name: str,
    image: str,
    env: tuple[str, ...],
    label: tuple[str, ...],
    annotation: tuple[str, ...],
    secret: tuple[str, ...],
    memory: str | None,
    cpu: str | None,
) -> FunctionSpec:
    limits = {k: v for k, v in (("memory", memory), ("cpu", cpu)) if v is not None}
    return parse_deployment(
        {
            "service": name,
            "image": image,
            "envVars": dict(parse_pairs(env, "--env")),
            "labels": dict(parse_pairs(label, "--label")),
            "annotations": dict(parse_pairs(annotation, "--annotation")),
            "secrets": list(secret),
            "limits": limits or None,
        }
    )


@cli.command()
@stack_file_option
@click.argument("names", nargs=-1)
@click.option("--name", default=None, help="Deploy one function by name (with --image).")
@click.option("--image", default=None, help="The package to run, as built by `faasd-py build`.")
@click.option("--env", "-e", multiple=True, metavar="K=V", help="Environment variable.")
@click.option("--label", "-l", multiple=True, metavar="K=V", help="Label.")
@click.option("--annotation", multiple=True, metavar="K=V", help="Annotation.")
@click.option("--secret", multiple=True, metavar="NAME", help="Secret to mount.")
@click.option("--memory", default=None, help="Memory limit: 128Mi, 1Gi...")
@click.option("--cpu", default=None, help="CPU limit: 500m, 1, 2...")
@gateway_command
def deploy(
    target: GatewayOptions,
    stack_file: Path | None,
    names: tuple[str, ...],
    name: str | None,
    image: str | None,
    env: tuple[str, ...],
    label: tuple[str, ...],
    annotation: tuple[str, ...],
    secret: tuple[str, ...],
    memory: str | None,
    cpu: str | None,
) -> None:
    """Deploy the functions of a stack file (all, or NAMES), or one given by --name and --image.

    Build the functions first: the gateway runs packages from the local package store.

    \b
    Examples:
      faasd-py deploy -f stack.yml
      faasd-py deploy --name hello --image hello:latest --env greeting=hi --memory 128Mi
    """
    flags = (env, label, annotation, secret, memory, cpu)
    if name is not None or image is not None:
        if name is None or image is None:
            raise click.UsageError("--name and --image go together")
        if stack_file is not None or names:
            raise click.UsageError("deploy either a stack file's functions or --name/--image")
        specs: Sequence[FunctionSpec] = [_spec_from_flags(name, image, *flags)]
        client = target.client()
    else:
        if any(flags):
            raise click.UsageError(
                "--env, --label, --annotation, --secret, --memory and --cpu go with --name "
                "and --image; for a stack file, set them in the file"
            )
        stack = load_stack(stack_file or Path(STACK_FILE))
        specs = [fn.spec for fn in stack.select(names)]
        client = target.client(stack.gateway)
    if target.namespace is not None:  # --namespace wins over a stack's, as in faas-cli
        specs = [replace(spec, namespace=target.namespace) for spec in specs]
    failed = 0
    for spec in specs:
        try:
            status = _deploy_one(client, spec)
        except (Unavailable, Unauthorized):
            raise  # the same for every function: stop at the first
        except FaasdError as exc:
            err.print(f"[red]cannot deploy {escape(spec.service)}:[/] {escape(exc.message)}")
            failed += 1
            continue
        out.print(f"Deployed {bold(spec.service)} ({escape(spec.image)}): HTTP {status}")
    if failed:
        raise click.exceptions.Exit(1)


# --- list, describe, remove --------------------------------------------------------------------


# FunctionStatus fields shown by `list`, with their column titles.
_LIST_COLUMNS = {
    "name": "NAME",
    "image": "IMAGE",
    "invocationCount": "INVOCATIONS",
    "replicas": "REPLICAS",
    "availableReplicas": "AVAILABLE",
}


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON.")
@gateway_command
def list_functions(target: GatewayOptions, as_json: bool) -> None:
    """List the deployed functions with their invocation counts and replicas.

    \b
    Example:
      faasd-py list --gateway http://127.0.0.1:8080
    """
    query = target.namespace_query()
    functions = target.client().send("GET", "/system/functions", query=query).json()
    if as_json:
        click.echo(json.dumps(functions, indent=2))
        return
    table = new_table(*_LIST_COLUMNS.values())
    for fn in sorted(functions, key=lambda f: str(f.get("name"))):
        add_row(table, *(fn.get(k, "") for k in _LIST_COLUMNS))
    print_table(table)


_FIELD_LABELS = {
    "name": "Name",
    "image": "Image",
    "namespace": "Namespace",
    "envProcess": "Process",
    "envVars": "Environment",
    "constraints": "Constraints",
    "secrets": "Secrets",
    "labels": "Labels",
    "annotations": "Annotations",
    "limits": "Limits",
    "requests": "Requests",
    "readOnlyRootFilesystem": "Read-only root",
    "invocationCount": "Invocations",
    "replicas": "Replicas",
    "availableReplicas": "Available replicas",
    "createdAt": "Created",
}


def describe_lines(status: dict[str, Any]) -> list[str]:
    """A FunctionStatus as 'Label: value' lines: known fields first, any others after."""
    keys = [k for k in _FIELD_LABELS if k in status] + [k for k in status if k not in _FIELD_LABELS]
    width = max(len(_FIELD_LABELS.get(k, k)) for k in keys) + 1 if keys else 0
    return [f"{(_FIELD_LABELS.get(k, k) + ':').ljust(width)} {_readable(status[k])}" for k in keys]


def _readable(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None or value == "" else str(value)


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON.")
@gateway_command
def describe(target: GatewayOptions, name: str, as_json: bool) -> None:
    """Show everything the gateway knows about one function.

    \b
    Example:
      faasd-py describe hello
    """
    client = target.client()
    query = target.namespace_query()
    status = client.send("GET", f"/system/function/{_quote(name)}", query=query).json()
    labels = status.get("labels") if isinstance(status, dict) else None
    app = function_ref((labels or {}).get(LABEL_APP) or name, target.namespace or DEFAULT_NAMESPACE)
    cache = _cache_figures(client.send("GET", "/metrics").body.decode(errors="replace"), app)
    if as_json:
        click.echo(json.dumps({**status, "cache": cache} if cache else status, indent=2))
        return
    keepalive = status.pop("keepAlive", None) if isinstance(status, dict) else None
    for line in describe_lines(status):
        click.echo(line)
    if isinstance(keepalive, dict):
        for line in keepalive_lines(keepalive):
            click.echo(line)
    if cache:
        for line in cache_lines(app, cache):
            click.echo(line)


def _span(seconds: object) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.3g}s" if isinstance(seconds, int | float) else str(seconds)


def keepalive_lines(keepalive: dict[str, Any]) -> list[str]:
    """The app's keep-alive policy as `describe` prints it: the windows it gives now and the
    rule that chose them, the pending timers, and what it is judged by."""
    reason = keepalive.get("reason", "-")
    why = {
        "histogram": "from the idle-time histogram (5th/99th percentiles with 10% margins)",
        "fallback": "too few idle times, or a histogram that is not representative: "
        "kept loaded for the whole range",
        "forecast": "most idle times are beyond the range: forecast from them",
        "fixed": "a fixed keep-alive",
        "no-unload": "never unloaded",
    }.get(str(reason), str(reason))
    state = "loaded" if keepalive.get("loaded") else "unloaded"
    timers = []
    if keepalive.get("loadInSeconds") is not None:
        timers.append(f"pre-warm load in {_span(keepalive['loadInSeconds'])}")
    if keepalive.get("unloadInSeconds") is not None:
        timers.append(f"unload in {_span(keepalive['unloadInSeconds'])}")
    decisions = keepalive.get("decisions") or {}
    histogram = keepalive.get("histogram")
    lines = [
        f"Keep-alive (app {keepalive.get('app')}, policy {keepalive.get('policy')}): {state}"
        + (f"; {', '.join(timers)}" if timers else ""),
        f"  windows: pre-warm {_span(keepalive.get('prewarmSeconds'))}, keep-alive "
        f"{_span(keepalive.get('keepaliveSeconds'))} after each execution; rule {reason}: {why}",
    ]
    if isinstance(histogram, dict):
        lines.append(
            f"  learnt: {histogram.get('samples', 0)} idle times, "
            f"{histogram.get('outOfBounds', 0)} beyond the range of "
            f"{_span(histogram.get('rangeSeconds'))} (bins of "
            f"{_span(histogram.get('binWidthSeconds'))}), bin-count CV {histogram.get('cv')}"
        )
    lines.append(
        "  decisions: " + (", ".join(f"{k} {v}" for k, v in sorted(decisions.items())) or "none")
    )
    lines.append(
        f"  this function: cold starts {keepalive.get('coldStarts', 0)}, pre-warm loads "
        f"{keepalive.get('prewarmLoads', 0)}, pre-warm hits {keepalive.get('prewarmHits', 0)}, "
        f"instance-seconds {keepalive.get('instanceSeconds', 0):g} "
        f"({keepalive.get('idleInstanceSeconds', 0):g} idle)"
    )
    return lines


def _cache_figures(metrics_text: str, app: str) -> dict[str, float]:
    """The app's faasd_cache_* figures in a /metrics page: {"hits": 12.0, ...}; empty when the
    app has no cache loaded on the worker."""
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if not family.name.startswith("faasd_cache_"):
            continue
        for sample in family.samples:
            if sample.labels.get("app") == app and not sample.name.endswith("_created"):
                figures[sample.name.removeprefix("faasd_cache_").removesuffix("_total")] = (
                    sample.value
                )
    return figures


def cache_lines(app: str, figures: dict[str, float]) -> list[str]:
    """The cache's figures as `describe` prints them, under the function's other fields."""
    reads = figures.get("hits", 0) + figures.get("misses", 0) + figures.get("bypassed_reads", 0)
    checks = figures.get("version_checks", 0)
    mean_check = figures.get("version_check_seconds", 0) / checks if checks else 0.0
    rate = f"{figures.get('hits', 0) / reads:.0%}" if reads else "-"
    return [
        f"Cache (app {app}):",
        f"  hits {figures.get('hits', 0):.0f}, misses {figures.get('misses', 0):.0f}, "
        f"bypassed {figures.get('bypassed_reads', 0):.0f} (hit rate {rate}); "
        f"writes {figures.get('writes', 0):.0f}",
        f"  {figures.get('bytes', 0):,.0f} bytes in {figures.get('entries', 0):.0f} objects, "
        f"budget {figures.get('capacity_bytes', 0):,.0f}; "
        f"evictions {figures.get('evictions', 0):.0f}",
        f"  version checks {checks:.0f}, mean {mean_check * 1e3:.2f} ms, "
        f"max {figures.get('version_check_seconds_max', 0) * 1e3:.2f} ms; "
        f"storage errors {figures.get('storage_errors', 0):.0f}",
        f"  pre-warmed {figures.get('prewarmed_keys', 0):.0f} objects, "
        f"{figures.get('prewarmed_read', 0):.0f} of them read since",
    ]


@cli.command()
@click.argument("names", nargs=-1, required=True)
@gateway_command
def remove(target: GatewayOptions, names: tuple[str, ...]) -> None:
    """Remove deployed functions (their packages stay in the store).

    \b
    Example:
      faasd-py remove hello
    """
    client = target.client()
    for name in names:
        body = target.with_namespace({"functionName": name})
        client.send("DELETE", "/system/functions", json_body=body)
        out.print(f"Removed {bold(name)}")


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# --- invoke and logs ---------------------------------------------------------------------------

_BODYLESS = ("GET", "HEAD", "DELETE", "OPTIONS")


def _read_body(method: str, stdin: IO[bytes]) -> bytes:
    if stdin.isatty():
        if method in _BODYLESS:
            return b""
        err.print("Reading the request body from stdin: end it with Ctrl-D.", style="dim")
    return stdin.read()


@cli.command()
@click.argument("name")
@click.option("--method", "-m", default="POST", show_default=True, help="HTTP method.")
@click.option("--header", "-H", multiple=True, metavar="K=V", help="Request header.")
@click.option("--query", "-q", multiple=True, metavar="K=V", help="Query string parameter.")
@click.option(
    "--content-type", default="text/plain", show_default=True, help="The body's Content-Type."
)
@click.option("--path", "subpath", default="", help="Path after /function/NAME, e.g. /items/1.")
@click.option("--verbose", "-v", is_flag=True, help="Show status, X-Call-Id and timings on stderr.")
@click.option(
    "--async",
    "is_async",
    is_flag=True,
    help="Queue the call (/async-function/) and print its call id at once; the function runs "
    "it later, and its result goes to --callback.",
)
@click.option(
    "--callback",
    default=None,
    metavar="URL",
    help="With --async: where the gateway POSTs the result (X-Callback-Url), an http(s) URL "
    "that the gateway's host can reach.",
)
@gateway_command
def invoke(
    target: GatewayOptions,
    name: str,
    method: str,
    header: tuple[str, ...],
    query: tuple[str, ...],
    content_type: str,
    subpath: str,
    verbose: bool,
    is_async: bool,
    callback: str | None,
) -> None:
    """Call a function with the body read from stdin; print its response body as it is.

    Exits 1 (with the error on stderr) when the function answers with a non-2xx status.

    With --async the call is queued instead: the command prints its call id (X-Call-Id) and
    exits once the gateway has stored it; the function runs it later (at least once, retried as
    its com.openfaas.retry.* annotations say), and the result is POSTed to --callback if given.
    `faasd-py queue` shows the queues.

    \b
    Examples:
      echo Ada | faasd-py invoke hello
      faasd-py invoke hello -m GET -q name=Ada -H X-Trace=1 -v </dev/null
      echo Ada | faasd-py invoke hello --async --callback http://127.0.0.1:9000/done
    """
    if callback is not None and not is_async:
        raise click.UsageError("--callback goes with --async")
    method = method.upper()
    headers = [("Content-Type", content_type), *parse_pairs(header, "--header")]
    if callback is not None:
        headers.append(("X-Callback-Url", callback))
    ref = name if target.namespace is None else f"{name}.{target.namespace}"
    path = f"/{'async-function' if is_async else 'function'}/{_quote(ref)}"
    if subpath:
        path += "/" + subpath.lstrip("/")
    body = _read_body(method, sys.stdin.buffer)
    reply = target.client().send(
        method,
        path,
        body=body if body or method not in _BODYLESS else None,
        query=parse_pairs(query, "--query"),
        headers=headers,
        check=False,
    )
    if verbose:
        err.print(f"HTTP {reply.status}", style="bold")
        for key in ("X-Call-Id", "X-Duration-Seconds", "Server-Timing"):
            if key in reply.headers:
                err.print(f"{key}: {reply.headers[key]}", markup=False)
    if not reply.ok:
        fail(f"invoking {name} failed with HTTP {reply.status}: {reply.error_text()}")
    if is_async:
        err.print(f"Function {escape(name)} submitted asynchronously; its call id:", style="dim")
        click.echo(reply.headers.get("X-Call-Id", ""))
        return
    stdout = sys.stdout.buffer
    stdout.write(reply.body)
    stdout.flush()


def format_log_line(raw: bytes) -> str:
    """One ndjson log record as 'timestamp instance text' (a line that is not JSON as it is)."""
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return raw.decode(errors="replace").rstrip("\n")
    text = str(record.get("text", "")).rstrip("\n")
    return f"{record.get('timestamp', '-')} {record.get('instance', '-')} {text}"


@cli.command()
@click.argument("name")
@click.option("--tail", "-n", type=click.IntRange(min=0), default=None, help="Last N lines only.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--since", default=None, help="Only newer lines: a duration (5m) or RFC3339 time.")
@gateway_command
def logs(
    target: GatewayOptions, name: str, tail: int | None, follow: bool, since: str | None
) -> None:
    """Print a function's log lines (what it wrote to stdout and stderr).

    \b
    Examples:
      faasd-py logs hello --tail 20
      faasd-py logs hello --since 5m --follow
    """
    query = [("name", name), ("follow", "true" if follow else "false")]
    query += target.namespace_query()
    if tail:
        query.append(("tail", str(tail)))
    if since is not None or tail == 0:  # the gateway reads tail=0 as all: ask from now instead
        query.append(("since", since_to_rfc3339(since or "0s", time.time())))
    for raw in target.client().stream("GET", "/system/logs", query=query):
        if raw.strip():
            click.echo(format_log_line(raw))
