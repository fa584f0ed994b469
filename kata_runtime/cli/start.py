"""``kata-runtime start``: run the user process of a created container."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("start", short_help="executes the user defined process in a created container")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def start(opts: RuntimeOptions, container_id: str) -> None:
    """Execute the user defined process in a created container."""
    from kata_runtime import container

    validate_id(container_id)
    container.start(opts, container_id)
