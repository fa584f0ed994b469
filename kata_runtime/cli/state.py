"""``kata-runtime state``: print the container's state as runc's JSON."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.cli.output import format_state
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("state", short_help="output the state of a container")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def state(opts: RuntimeOptions, container_id: str) -> None:
    """Output current state information for the instance of a container (runc's JSON, byte for
    byte: two-space indent and no trailing newline)."""
    from kata_runtime import container

    validate_id(container_id)
    sys.stdout.write(format_state(container.state(opts, container_id)))
    sys.stdout.flush()
