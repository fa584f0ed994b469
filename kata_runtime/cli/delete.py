"""``kata-runtime delete``: remove a container and, with its last container, its VM."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.errors import ContainerNotFound
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("delete",
              short_help="delete any resources held by the container often used with detached container")
@click.option("--force", "-f", is_flag=True,
              help="Forcibly deletes the container if it is still running (uses SIGKILL)")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def delete(opts: RuntimeOptions, container_id: str, force: bool) -> None:
    """Delete the resources held by the container: its processes, and the VM, kata-proxy and
    network plumbing when it is the last container of its sandbox."""
    from kata_runtime import container

    validate_id(container_id)
    try:
        container.delete(opts, container_id, force=force)
    except ContainerNotFound:
        if not force:  # runc: "delete --force" of a container that is not there succeeds
            raise
