"""The command group, its error handling and output helpers shared by the commands."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from faasd_py import __version__
from faasd_py.errors import FaasdError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
# Tables are as wide as their content when piped, instead of being cut at 80 columns.
PIPE_WIDTH = 1000
_piped = Console(highlight=False, soft_wrap=True, width=PIPE_WIDTH)


class _Cli(click.Group):
    """The command group: user errors (FaasdError) become one message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FaasdError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="faasd-py")
def cli() -> None:
    """faasd-py: a self-hosted, OpenFaaS-compatible Function-as-a-Service runtime.

    \b
    Quick start:
      faasd-py up &                      # run the platform on http://127.0.0.1:8080
      faasd-py new hello                 # scaffold ./hello and ./stack.yml
      faasd-py build -f stack.yml        # package the functions
      faasd-py deploy -f stack.yml       # deploy them
      echo Ada | faasd-py invoke hello   # call one

    Every option also reads an environment variable: FAASD_<OPTION> for the settings shared by
    commands (FAASD_GATEWAY, FAASD_DATA_DIR, FAASD_USER, FAASD_PASSWORD, FAASD_PORT, ...),
    FAASD_<COMMAND>_<OPTION> for the others.
    """


def main() -> None:
    """Entry point of the `faasd-py` script and of `python -m faasd_py`."""
    try:
        cli.main(prog_name="faasd-py", auto_envvar_prefix="FAASD")
    except BrokenPipeError:
        # The reader went away (`faasd-py logs hello | head`): that is not an error of ours.
        sys.stderr.close()
        sys.exit(1)


def print_table(table: Table) -> None:
    # A print's width cannot exceed its console's (80 when piped): a wide console of its own.
    (out if out.is_terminal else _piped).print(table)


def add_row(table: Table, *cells: object) -> None:
    """A row of plain text: names and messages from elsewhere are never read as rich markup."""
    table.add_row(*(Text(str(cell)) for cell in cells))


def new_table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def bold(text: object) -> str:
    """`text` in bold, escaped so that rich prints it as it is."""
    return f"[bold]{escape(str(text))}[/]"


def fail(message: str) -> NoReturn:
    raise click.ClickException(message)
