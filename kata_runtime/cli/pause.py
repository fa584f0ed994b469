"""``kata-runtime pause`` and ``resume``: freeze and thaw every process of a container."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("pause", short_help="pause suspends all processes inside the container")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def pause(opts: RuntimeOptions, container_id: str) -> None:
    """Suspend all processes in the instance of the container."""
    from kata_runtime import container

    validate_id(container_id)
    container.pause(opts, container_id)


@runc_command("resume", short_help="resumes all processes that have been previously paused")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def resume(opts: RuntimeOptions, container_id: str) -> None:
    """Resume all processes in the instance of the container."""
    from kata_runtime import container

    validate_id(container_id)
    container.resume(opts, container_id)
