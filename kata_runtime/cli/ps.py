"""``kata-runtime ps``: the processes of a container, as the guest sees them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.errors import InvalidArgument
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("ps", nargs=(1, None), reorder=False,
              short_help="ps displays the processes running inside a container")
@click.option("--format", "-f", "fmt", default="table", show_default=True,
              help="select one of: table or json")
@click.argument("container_id", metavar="<container-id>")
@click.argument("ps_args", metavar="[ps options]", nargs=-1, type=click.UNPROCESSED)
@pass_opts
def ps(opts: RuntimeOptions, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> None:
    """Display the processes running inside a container: ``--format json`` prints their pids (in
    the guest), the table is the guest's busybox ps (options such as ``-o pid,args``)."""
    from kata_runtime import container

    validate_id(container_id)
    if fmt not in ("table", "json"):
        raise InvalidArgument("invalid format option")
    click.echo(container.ps(opts, container_id, fmt, list(ps_args)), nl=False)
