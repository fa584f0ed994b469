"""``kata-runtime list``: the containers under ``--root``, as runc's table or JSON."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.cli.output import format_list_json, format_list_quiet, format_list_table
from kata_runtime.errors import InvalidArgument

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("list", nargs=(0, 0), short_help="lists containers started by kata-runtime with the given root")
@click.option("--format", "-f", "fmt", default="table", show_default=True,
              help="select one of: table or json")
@click.option("--quiet", "-q", is_flag=True, help="display only container IDs")
@pass_opts
def list_(opts: RuntimeOptions, fmt: str, quiet: bool) -> None:
    """List the containers created with the given root (global option "--root")."""
    from kata_runtime import container

    states = container.list_containers(opts)
    if quiet:
        out = format_list_quiet(states)
    elif fmt == "table":
        out = format_list_table(states)
    elif fmt == "json":
        out = format_list_json(states)
    else:
        raise InvalidArgument("invalid format option")
    sys.stdout.write(out)
    sys.stdout.flush()
