"""`faasd-py namespace ...`: the namespaces that functions and secrets live in."""

from __future__ import annotations

import json

import click

from faasd_py.cli._app import add_row, bold, cli, new_table, out, print_table
from faasd_py.cli._client import GatewayOptions, gateway_command
from faasd_py.cli._options import parse_pairs


@cli.group()
def namespace() -> None:
    """Create, show, list and remove namespaces (as faasd has them; the default is
    openfaas-fn). Other commands pick one with --namespace.

    \b
    Examples:
      faasd-py namespace create dev --label team=web
      faasd-py deploy -f stack.yml --namespace dev
    """


@namespace.command("list")
@gateway_command
def namespace_list(target: GatewayOptions) -> None:
    """List the namespaces.

    \b
    Example:
      faasd-py namespace list
    """
    table = new_table("NAME")
    for name in sorted(target.client().send("GET", "/system/namespaces").json()):
        add_row(table, name)
    print_table(table)


@namespace.command("get")
@click.argument("name")
@gateway_command
def namespace_get(target: GatewayOptions, name: str) -> None:
    """Show a namespace's labels and annotations (JSON).

    \b
    Example:
      faasd-py namespace get dev
    """
    found = target.client().send("GET", f"/system/namespace/{name}").json()
    click.echo(json.dumps(found, indent=2))


def _namespace_command(verb: str, method: str, done: str) -> None:
    """`namespace create` (POST) and `namespace update` (PUT): the same options."""

    @namespace.command(verb)
    @click.argument("name")
    @click.option("--label", "-l", multiple=True, metavar="K=V", help="Label.")
    @click.option("--annotation", multiple=True, metavar="K=V", help="Annotation.")
    @gateway_command
    def command(
        target: GatewayOptions, name: str, label: tuple[str, ...], annotation: tuple[str, ...]
    ) -> None:
        body = {
            "name": name,
            "labels": dict(parse_pairs(label, "--label")),
            "annotations": dict(parse_pairs(annotation, "--annotation")),
        }
        target.client().send(method, f"/system/namespace/{name}", json_body=body)
        out.print(f"{done} namespace {bold(name)}")

    command.help = (
        f"{verb.capitalize()} a namespace with --label and --annotation K=V pairs"
        f"{' (they replace the old ones)' if verb == 'update' else ''}.\n\n"
        f"\b\nExample:\n  faasd-py namespace {verb} dev --label team=web"
    )


_namespace_command("create", "POST", "Created")
_namespace_command("update", "PUT", "Updated")


@namespace.command("remove")
@click.argument("name")
@gateway_command
def namespace_remove(target: GatewayOptions, name: str) -> None:
    """Remove an empty namespace (and its secrets); remove its functions first.

    \b
    Example:
      faasd-py namespace remove dev
    """
    target.client().send("DELETE", f"/system/namespace/{name}")
    out.print(f"Removed namespace {bold(name)}")
