"""`faasd-py secret ...`: the gateway's secrets."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from faasd_py.cli._app import add_row, bold, cli, new_table, out, print_table
from faasd_py.cli._client import GatewayOptions, gateway_command
from faasd_py.spec import validate_secret_name


@cli.group()
def secret() -> None:
    """Create, update, list and remove secrets that functions mount.

    \b
    Example:
      faasd-py secret create api-key --from-literal s3cr3t
    """


def _secret_body(name: str, literal: str | None, file: Path | None) -> dict[str, str]:
    validate_secret_name(name, "NAME")
    if literal is not None and file is not None:
        raise click.UsageError("give either --from-literal or --from-file")
    if literal is not None:
        return {"name": name, "value": literal}
    data = file.read_bytes() if file is not None else _piped_stdin()
    if data is None:
        raise click.UsageError("give the value with --from-literal, --from-file or on stdin")
    # rawValue carries any bytes, as the OpenFaaS API defines it.
    return {"name": name, "rawValue": base64.b64encode(data).decode()}


def _piped_stdin() -> bytes | None:
    """What was piped in; None when nothing was (a terminal, or an empty pipe)."""
    if sys.stdin.isatty():
        return None
    return sys.stdin.buffer.read() or None


def _secret_command(verb: str, method: str, done: str) -> None:
    """`secret create` (POST) and `secret update` (PUT): the same options, another method."""

    @secret.command(verb)
    @click.argument("name")
    @click.option("--from-literal", "literal", default=None, metavar="VALUE")
    @click.option(
        "--from-file",
        "file",
        default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
    )
    @gateway_command
    def command(target: GatewayOptions, name: str, literal: str | None, file: Path | None) -> None:
        body = target.with_namespace(_secret_body(name, literal, file))
        target.client().send(method, "/system/secrets", json_body=body)
        out.print(f"{done} secret {bold(name)}")

    command.help = (
        f"{verb.capitalize()} a secret from --from-literal, --from-file, or stdin.\n\n"
        f"\b\nExample:\n  faasd-py secret {verb} api-key --from-file ./key.txt"
    )


_secret_command("create", "POST", "Created")
_secret_command("update", "PUT", "Updated")


@secret.command("list")
@gateway_command
def secret_list(target: GatewayOptions) -> None:
    """List the names of the secrets (values are never shown).

    \b
    Example:
      faasd-py secret list
    """
    query = target.namespace_query()
    secrets = target.client().send("GET", "/system/secrets", query=query).json()
    table = new_table("NAME")
    for item in sorted(secrets, key=lambda s: str(s.get("name"))):
        add_row(table, item.get("name", ""))
    print_table(table)


@secret.command("remove")
@click.argument("name")
@gateway_command
def secret_remove(target: GatewayOptions, name: str) -> None:
    """Remove a secret.

    \b
    Example:
      faasd-py secret remove api-key
    """
    body = target.with_namespace({"name": name})
    target.client().send("DELETE", "/system/secrets", json_body=body)
    out.print(f"Removed secret {bold(name)}")
