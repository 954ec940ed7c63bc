"""Commands that work on this machine: `up` runs the platform, `new` scaffolds, `build` packages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from pathlib import Path
from typing import Any

import click
import yaml

from faasd_py.cli._app import add_row, cli, err, fail, new_table, out, print_table
from faasd_py.cli._options import (
    STACK_FILE,
    F,
    callback_attempts_option,
    cluster_options,
    data_dir_option,
    host_options,
    log_level_option,
    parsed_by,
    python_option,
    queue_concurrency_option,
    queue_lease_option,
    shared_option,
    stack_file_option,
    with_params,
)
from faasd_py.cli._templates import copy_scaffold, ensure_templates, scaffold_langs
from faasd_py.config import (
    CHANNELS,
    DEFAULT_GATEWAY,
    DEFAULT_NET_BRIDGE,
    DEFAULT_NET_SUBNET,
    DEFAULT_POLICY,
    HYBRID_BINS,
    IO_ENGINES,
    ISOLATIONS,
    Config,
    default_channel,
    live_policy,
)
from faasd_py.errors import SpecError
from faasd_py.packages import Package, PackageStore
from faasd_py.spec import load_stack, parse_yaml, validate_name
from faasd_py.storage import parse_bandwidth
from faasd_py.units import parse_duration, parse_size


def _check_policy(text: str) -> str:
    """--policy as given, once it names a policy (the bin width is checked with it later)."""
    live_policy(text, 60.0)
    return text.strip()


@shared_option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@shared_option("--port", "-p", default=8080, show_default=True, type=click.IntRange(0, 65535))
@data_dir_option
@shared_option(
    "--max-body",
    default="16Mi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="Largest request or response body (413 beyond it): 16Mi, 1G, 65536...",
)
@shared_option(
    "--max-queue",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Invocations that may wait per function when all instances are busy (429 beyond).",
)
@shared_option(
    "--log-bytes",
    default="1Mi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="Output kept per function for `logs` (the oldest lines go first); also what it may "
    "print per second: lines beyond are dropped, and a marker line counts them.",
)
@shared_option(
    "--log-total-bytes",
    default="64Mi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="Output kept for all functions together (the oldest lines of the largest go first).",
)
@shared_option(
    "--max-scale",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Instances one function may ask for (com.openfaas.scale.min and .max; 400 beyond).",
)
@shared_option(
    "--max-instances",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Instances this host runs at once, all functions together.",
)
@shared_option(
    "--memory-budget",
    default=None,
    show_default="80% of MemTotal",
    callback=parsed_by(parse_size),
    help="Memory the instances may reserve together (each its limits.memory, or "
    "--instance-memory); one that does not fit waits, or its caller gets 429.",
)
@shared_option(
    "--instance-memory",
    default="128Mi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="What an instance without limits.memory reserves of --memory-budget.",
)
@shared_option(
    "--zygote-memory",
    default="32Mi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="What each loaded function's zygote reserves of --memory-budget; when it does not "
    "fit, the function's instances start by a fresh exec instead.",
)
@shared_option(
    "--scale-down-after",
    default="60s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="Stop an instance above the function's floor after this long idle: 30s, 5m, 1h...",
)
@shared_option(
    "--start-timeout",
    default="30s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="Time an instance has to import its handler.",
)
@shared_option(
    "--shutdown-timeout",
    default="10s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="On SIGTERM, how long running invocations may take to finish.",
)
@shared_option(
    "--header-timeout",
    default="10s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="Time a client has to send a request's headers once it starts (408 after), so slow "
    "clients cannot hold connections.",
)
@shared_option(
    "--idle-timeout",
    default="75s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="Close a connection after this long without a request (keep-alive).",
)
@shared_option(
    "--max-connections",
    default=1024,
    show_default=True,
    type=click.IntRange(min=1),
    help="Connections open at once; one more is answered 503 and closed.",
)
@python_option
@shared_option(
    "--channel",
    type=click.Choice(CHANNELS),
    default=None,
    help="Channel to instances of functions that do not choose one: shm (shared memory; the "
    "default when the native shim is built), socket, or net (HTTP over a veth, faasd-style).",
)
@shared_option(
    "--net-bridge",
    default=DEFAULT_NET_BRIDGE,
    show_default=True,
    help="The bridge that sandboxed instances of net-channel functions get a veth on (made "
    "when the first one starts, removed at exit).",
)
@shared_option(
    "--net-subnet",
    default=DEFAULT_NET_SUBNET,
    show_default=True,
    help="The bridge's IPv4 subnet: the bridge takes the first address, instances the rest.",
)
@shared_option(
    "--net-allow-port",
    "net_allow_ports",
    type=click.IntRange(1, 65535),
    multiple=True,
    help="A host TCP port that net-channel instances may reach through the bridge's address "
    "(repeat for more); every other host service is closed to them by packet-filter rules.",
)
@shared_option(
    "--isolation",
    type=click.Choice(ISOLATIONS),
    default="auto",
    show_default=True,
    help="How instances run: sandbox (namespaces, cgroups, seccomp; needs root and the native "
    "shim), process (plain processes), or auto: sandbox where possible.",
)
@click.option(
    "--zygote/--no-zygote",
    envvar="FAASD_ZYGOTE",  # named by hand: shared_option derives it from one flag's name
    show_envvar=True,
    default=True,
    show_default=True,
    help="Fork cold starts from a per-function zygote that has imported the handler, rather "
    "than start a fresh interpreter for each instance.",
)
@shared_option(
    "--io-engine",
    type=click.Choice(IO_ENGINES),
    default="auto",
    show_default=True,
    help="How the worker waits on shm instances' doorbells: io_uring, epoll, or auto (the "
    "faster one here where io_uring works, else epoll; the banner says which and why).",
)
@shared_option(
    "--storage",
    default=None,
    metavar="URL",
    help="Backing store of context.storage: redis://host:port[/db], or the embedded one "
    "(SQLite in the data dir) when not given.",
)
@shared_option(
    "--storage-latency",
    default="0",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="Delay added to every store call, to stand in for remote blob storage in "
    "benchmarks: 5ms...",
)
@shared_option(
    "--storage-version-latency",
    default=None,
    show_default="--storage-latency",
    callback=parsed_by(parse_duration),
    help="Delay added to the version check before each cached read instead (a metadata "
    "lookup: an ETag, or versions kept next to the worker), e.g. 0.",
)
@shared_option(
    "--storage-bandwidth",
    default=None,
    show_default="off",
    callback=parsed_by(parse_bandwidth),
    help="Transfer rate of the store's data calls: each waits size / rate more, as a remote "
    "blob store's single stream does, e.g. 50MB/s.",
)
@shared_option(
    "--storage-timeout",
    default="5s",
    show_default=True,
    callback=parsed_by(parse_duration),
    help="How long one store call may take: past it the handler gets StorageUnavailable "
    "(the caller a 503 if not caught), well before the function's exec_timeout.",
)
@shared_option(
    "--storage-calls-in-flight",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Storage calls one instance may have the worker answer at once; past it the worker "
    "stops reading the instance's channel until some are answered.",
)
@shared_option(
    "--storage-bytes-in-flight",
    default="64Mi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="Bytes of storage payloads one instance may have the worker hold at once (plus one "
    "call of up to --max-body); past it, as for --storage-calls-in-flight.",
)
@shared_option(
    "--storage-max-bytes",
    default="1Gi",
    show_default=True,
    callback=parsed_by(parse_size),
    help="Each app's storage quota in bytes (a put over it raises StorageQuotaExceeded); a "
    "function's annotation com.faasd-py.storage.max-bytes sets its own.",
)
@shared_option(
    "--storage-max-keys",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Each app's storage quota in keys; a function's annotation "
    "com.faasd-py.storage.max-keys sets its own.",
)
@shared_option(
    "--cache",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    help="The per-app Faa$T cache over the store (a function's com.faasd-py.cache "
    "annotation overrides it).",
)
@click.option(
    "--cache-prewarm/--no-cache-prewarm",
    envvar="FAASD_CACHE_PREWARM",  # named by hand: shared_option derives it from one flag's name
    show_envvar=True,
    default=True,
    show_default=True,
    help="Fill an app's new cache with the objects its statistics say it reads most.",
)
@shared_option(
    "--policy",
    default=DEFAULT_POLICY,
    show_default=True,
    callback=parsed_by(_check_policy),
    help="Keep-alive / pre-warm policy of each app: hybrid (the idle-time histogram), "
    "hybrid:RANGE, fixed:DURATION (e.g. fixed:10m), no-unload, or none (every function keeps "
    "one instance, as OpenFaaS does). A function's com.faasd-py.policy annotation overrides it.",
)
@shared_option(
    "--bin-width",
    default="1m",
    show_default=True,
    callback=parsed_by(parse_duration),
    help=f"Width of the hybrid policy's histogram bins ({HYBRID_BINS} of them make its range): "
    "smaller compresses time for tests and demos, e.g. 100ms.",
)
@shared_option(
    "--queue",
    default=None,
    metavar="URL",
    help="Where async invocations (/async-function/, `invoke --async`) wait: "
    "redis://host:port[/db] (Redis Streams, which other gateways and `faasd-py queue-worker` "
    "processes can share), or the embedded queue (SQLite in the data dir) when not given.",
)
@shared_option(
    "--queue-max-depth",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Async calls one function's queue may hold (429 beyond); a function's "
    "com.faasd-py.queue.max_depth annotation sets its own.",
)
@queue_concurrency_option
@queue_lease_option
@click.option(
    "--queue-consumer/--no-queue-consumer",
    envvar="FAASD_QUEUE_CONSUMER",  # named by hand: shared_option derives it from one flag's name
    show_envvar=True,
    default=True,
    show_default=True,
    help="Run async calls here; with --no-queue-consumer only `faasd-py queue-worker` "
    "processes run them (a shared Redis --queue).",
)
@callback_attempts_option
@log_level_option
def _platform_params() -> None:
    """Holds the options that `up`, `worker` and `gateway` share (see platform_options)."""


_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(Config))


def platform_options(command: F) -> F:
    """Give `command` every option of the platform (as keyword arguments: see config_of)."""
    return with_params(command, _platform_params.__dict__["__click_params__"])


# What only a gateway uses: a worker alone (`faasd-py worker`) has no such options.
GATEWAY_ONLY = frozenset(
    {
        "host",
        "port",
        "header_timeout",
        "idle_timeout",
        "max_connections",
        "queue",
        "queue_max_depth",
        "queue_concurrency",
        "queue_lease",
        "queue_consumer",
        "callback_attempts",
    }
)


def worker_options(command: F) -> F:
    """The platform's options that a worker uses (config_of gives the rest their defaults)."""
    params: list[click.Parameter] = _platform_params.__dict__["__click_params__"]
    return with_params(command, [p for p in params if p.name not in GATEWAY_ONLY])


def config_of(options: dict[str, Any]) -> Config:
    """The Config that the platform options give (UsageError for settings that disagree)."""
    # The options are named as Config's fields, but for the two that need a conversion.
    values = {k: v for k, v in options.items() if k in _CONFIG_FIELDS}
    values["channel"] = options.get("channel") or default_channel()
    values["cache"] = options.get("cache", "on") == "on"
    try:
        return Config(**values)
    except ValueError as exc:  # settings checked together: --policy and --bin-width, --net-*
        raise click.UsageError(str(exc)) from None


@cli.command()
@shared_option(
    "--deploy",
    "-d",
    "stacks",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Build and deploy this stack.yml at start (repeatable).",
)
@cluster_options
@host_options
@platform_options
def up(stacks: tuple[Path, ...], log_level: str, **options: Any) -> None:
    """Run the platform: gateway and worker in one process, state in --data-dir.

    Runs until Ctrl-C or SIGTERM, then lets running invocations finish. On first start it
    creates the gateway's credentials under DATA_DIR/credentials/ (mode 0600); the other
    commands read them from there.

    \b
    Example:
      faasd-py up --port 8080 --deploy stack.yml
    """
    if options["cluster"]:
        if stacks:
            raise click.UsageError(
                "--deploy works with `up` alone; in a cluster, build with --push and deploy "
                "through a gateway"
            )
        from faasd_py.cli._cluster import run_cluster

        run_cluster(options, gateway=True, worker=True, log_level=log_level)
        return
    configure_logging(log_level)
    config = config_of(options)
    # Imported here: the client commands should not pay for loading the whole server.
    from faasd_py.server import run

    run(config, deploy=stacks)


def configure_logging(level: str) -> None:
    """Log records to stderr, through rich (every long-running command)."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=level.upper(), format="%(name)s: %(message)s", handlers=[handler])


# --- new ---------------------------------------------------------------------------------------


_FUNCTIONS_LINE = re.compile(r"^functions:[ \t]*(#.*)?$")
_NEW_STACK = (
    f"version: 1.0\nprovider:\n  name: openfaas\n  gateway: {DEFAULT_GATEWAY}\nfunctions:\n"
)


def add_function_to_stack(text: str, name: str, entry: dict[str, str]) -> str:
    """stack.yml text with `functions.<name>` added, keeping the rest (and its comments)."""
    doc = parse_yaml(text, STACK_FILE) if text.strip() else {}
    if not isinstance(doc, dict):
        raise SpecError(STACK_FILE, "expected a YAML mapping with 'provider' and 'functions'")
    functions = doc.get("functions") or {}
    if not isinstance(functions, dict):
        raise SpecError("functions", "expected a mapping of function names to their settings")
    if name in functions:
        raise SpecError(f"functions.{name}", f"{name!r} is already in the stack file")
    edited = _insert_into_functions_block(text, name, entry)
    if edited is not None:
        after = parse_yaml(edited, STACK_FILE)
        if after.get("functions") == {**functions, name: entry}:
            return edited
    # No block to add to (or a layout we do not follow): write the document out again.
    return yaml.safe_dump({**doc, "functions": {**functions, name: entry}}, sort_keys=False)


def _insert_into_functions_block(text: str, name: str, entry: dict[str, str]) -> str | None:
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _FUNCTIONS_LINE.match(line)), None)
    if start is None:
        return None
    end, indent = start + 1, None
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            break
        indent = indent or line[: len(line) - len(line.lstrip())]
        end = i + 1
    step = indent or "  "
    block = [f"{step}{name}:\n", *(f"{step * 2}{k}: {v}\n" for k, v in entry.items())]
    if end > 0 and not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    return "".join(lines[:end] + block + lines[end:])


@cli.command()
@click.argument("name")
@click.option(
    "--lang",
    type=click.Choice(scaffold_langs()),
    default="python3-http",
    show_default=True,
    help="The template to start from.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to create NAME/ and stack.yml.",
)
def new(name: str, lang: str, directory: Path) -> None:
    """Create a function: NAME/handler.py, NAME/requirements.txt and its entry in stack.yml.

    stack.yml is created when missing; its other functions and comments are kept. The
    template/LANG/template.yml that faas-cli reads on `faas-cli deploy` is written when missing.

    \b
    Example:
      faasd-py new hello && faasd-py build && faasd-py deploy
    """
    validate_name(name, "NAME")
    stack_path, target = directory / STACK_FILE, directory / name
    entry = {"lang": lang, "handler": f"./{name}", "image": f"{name}:latest"}
    try:
        text = stack_path.read_text() if stack_path.exists() else _NEW_STACK
        stack_text = add_function_to_stack(text, name, entry)
        if target.exists():
            fail(f"{target} exists already: choose another name, or remove it first")
        copy_scaffold(lang, target)
        stack_path.write_text(stack_text)
        templates = ensure_templates(directory, {lang})
    except OSError as exc:
        fail(f"cannot write the new function: {exc}")
    out.print(f"Created {target}/ and added {name} to {stack_path}", markup=False)
    _report_templates(templates)
    out.print(
        f"Next: faasd-py build -f {stack_path} && faasd-py deploy -f {stack_path}", markup=False
    )


def _report_templates(written: list[Path]) -> None:
    for path in written:
        out.print(f"Created {path} (faas-cli deploy reads it)", markup=False)


# --- build -------------------------------------------------------------------------------------


@cli.command()
@stack_file_option
@click.argument("names", nargs=-1)
@data_dir_option
@python_option
@click.option(
    "--push",
    is_flag=True,
    help="Also send each package to the cluster named by --cluster, where workers fetch it.",
)
@shared_option(
    "--cluster",
    default=None,
    metavar="URL",
    help="The cluster's Redis, for --push: redis://host:port[/db], rediss://..., "
    "redis+sentinel://...",
)
def build(
    stack_file: Path | None,
    names: tuple[str, ...],
    data_dir: Path,
    python: str,
    push: bool,
    cluster: str | None,
) -> None:
    """Build the functions of a stack file (all, or those NAMES) into local packages.

    Each function's handler folder is copied and its requirements.txt installed with pip into
    the package named by its `image`, in the package store under --data-dir: `faasd-py up`
    must use the same one. Unchanged requirements come from a cache. The
    template/LANG/template.yml that faas-cli reads next to the stack file is written when
    missing.

    With --push, each package is also sent to the cluster's Redis (by the digest of its
    content: an unchanged package is not sent again); workers fetch it from there.

    \b
    Example:
      faasd-py build -f stack.yml hello
      faasd-py build -f stack.yml --push --cluster redis://10.0.0.5:6379/0
    """
    if push and not cluster:
        raise click.UsageError(
            "--push needs the cluster's Redis: give --cluster redis://HOST:PORT[/DB] "
            "(or set FAASD_CLUSTER)"
        )
    if push and cluster:
        from faasd_py.redis_connect import parse  # (redis-py loads only when pushing)

        parse(cluster)  # a bad URL is refused before anything is built
    path = stack_file or Path(STACK_FILE)
    stack = load_stack(path)
    functions = stack.select(names)
    store = PackageStore(Config(data_dir=data_dir).packages_dir)
    summary = new_table("FUNCTION", "IMAGE", "REQUIREMENTS", "SECONDS")
    built = []
    for fn in functions:
        name = fn.spec.service
        started = time.monotonic()
        with err.status(f"building {name}") as status:

            def show(step: str, name: str = name) -> None:
                status.update(f"building {name}: {step}")
                err.print(f"  {name}: {step}", style="dim", markup=False)

            package = store.build(fn, progress=show, python=python)
        built.append(package)
        seconds = time.monotonic() - started
        sha = package.requirements_sha256
        add_row(summary, name, package.image, sha[:12] if sha else "-", f"{seconds:.1f}")
    print_table(summary)
    out.print(f"Built {len(functions)} function(s) into {store.root}", markup=False)
    if push and cluster:
        with err.status("pushing to the cluster"):
            pushed = asyncio.run(_push(cluster, built))
        for image, digest in pushed:
            out.print(f"Pushed {image} {digest}", markup=False)
    try:
        # Every function's: `faas-cli deploy -f stack.yml` reads the template of each.
        written = ensure_templates(path.parent, {fn.lang for fn in stack.functions})
    except OSError as exc:
        fail(f"cannot write the template folder that faas-cli reads: {exc}")
    _report_templates(written)


async def _push(url: str, packages: list[Package]) -> list[tuple[str, str]]:
    """`build --push`: send each package to the cluster's Redis; (image, digest) of each."""
    from faasd_py.cluster._packages import push_package
    from faasd_py.redis_connect import connect

    # Generous per call: a chunk of a package may cross a slow link.
    redis = connect(url, timeout=30.0)
    try:
        return [(package.image, await push_package(redis, package)) for package in packages]
    finally:
        await redis.aclose()
