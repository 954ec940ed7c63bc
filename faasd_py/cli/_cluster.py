"""Several hosts: `faasd-py gateway` and `faasd-py worker` join a cluster through its Redis
(`faasd-py up --cluster` runs both); `faasd-py cluster` shows its workers and placements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from faasd_py.cli._app import add_row, cli, new_table, print_table
from faasd_py.cli._client import GatewayOptions, gateway_command
from faasd_py.cli._local import (
    config_of,
    configure_logging,
    platform_options,
    worker_options,
)
from faasd_py.cli._options import KEY_FILE, cluster_options, host_options
from faasd_py.config import Config


def run_cluster(options: dict[str, Any], *, gateway: bool, worker: bool, log_level: str) -> None:
    """Join the cluster that options[\"cluster\"] names as a gateway, a worker or both."""
    configure_logging(log_level)
    url = options.pop("cluster")
    if not url:
        raise click.UsageError(
            "give the cluster's Redis: --cluster redis://HOST:PORT[/DB] (or FAASD_CLUSTER)"
        )
    key_file: Path | None = options.pop("cluster_key")
    name = options.pop("name", None)
    advertise = options.pop("advertise", None)
    listen = options.pop("listen", None)
    lease = options.pop("lease", None)
    config: Config = config_of(options)
    from faasd_py.cluster._host import HostSettings
    from faasd_py.cluster._serve import ClusterSettings, run

    host = None
    if worker:
        assert advertise is not None and lease is not None
        where = f"{advertise[0]}:{advertise[1]}"
        host = HostSettings(str(name), listen or advertise, where, float(lease))
    settings = ClusterSettings(url, key_file or config.data_dir / KEY_FILE, gateway, host)
    run(config, settings)


@cli.command()
@cluster_options
@platform_options
def gateway(log_level: str, **options: Any) -> None:
    """Run a stateless gateway of a cluster: the whole OpenFaaS API, with functions placed on
    the cluster's workers (`faasd-py worker`). Run as many as you like behind any load
    balancer; they give the same answers.

    The first gateway creates the cluster key (DATA_DIR/cluster.key) and the credentials;
    the others need a copy of the key, and write the cluster's credentials under their own
    --data-dir as `up` does.

    \b
    Example:
      faasd-py gateway --cluster redis://10.0.0.5:6379/0 --host 0.0.0.0 --port 8080
    """
    run_cluster(options, gateway=True, worker=False, log_level=log_level)


@cli.command()
@cluster_options
@host_options
@worker_options
def worker(log_level: str, **options: Any) -> None:
    """Run a worker host of a cluster: it registers in the cluster's Redis with its capacity
    and a heartbeat, and runs the functions that gateways place on it. Packages come from the
    cluster (`faasd-py build --push`); no shared filesystem is needed.

    \b
    Example:
      faasd-py worker --cluster redis://10.0.0.5:6379/0 --name w1 --advertise 10.0.0.7:7070
    """
    run_cluster(options, gateway=False, worker=True, log_level=log_level)


@cli.command("cluster")
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON.")
@gateway_command
def cluster_command(target: GatewayOptions, as_json: bool) -> None:
    """Show the cluster's workers (capacity, use, heartbeat age) and where each app runs.

    \b
    Example:
      faasd-py cluster --gateway http://10.0.0.4:8080
    """
    view = target.client().send("GET", "/system/cluster").json()
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    table = new_table("WORKER", "ADDRESS", "CORES", "CPU BUSY", "MEMORY", "APPS", "HEARTBEAT")
    for w in view["workers"]:
        load = w["load"]
        memory = f"{load['memory_reserved'] / 2**20:.0f} / {load['memory'] / 2**20:.0f} MiB"
        add_row(
            table,
            w["name"],
            w["address"],
            f"{load['cores']:g}",
            f"{load['cpu_load']:.2f}",
            memory,
            ", ".join(w["apps"]) or "-",
            f"{w['heartbeatAgeSeconds']:.1f}s ago",
        )
    print_table(table)
    placed = new_table("APP", "WORKERS")
    for app, workers in view["placements"].items():
        add_row(placed, app, ", ".join(workers))
    print_table(placed)
