"""``kata-runtime kill``: send a signal to the container's init process (or all its processes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.oci.spec import parse_signal, validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("kill", nargs=(1, 2),
              short_help="kill sends the specified signal (default: SIGTERM) to the container's init process")
@click.option("--all", "-a", "all_processes", is_flag=True,
              help="send the specified signal to all processes inside the container")
@click.argument("container_id", metavar="<container-id>")
@click.argument("signal", metavar="[signal]", required=False, default="SIGTERM")
@pass_opts
def kill(opts: RuntimeOptions, container_id: str, signal: str, all_processes: bool) -> None:
    """Send SIGNAL (a name with or without SIG, or a number; default SIGTERM) to the init process
    of the container, e.g. "kata-runtime kill ubuntu01 KILL"."""
    from kata_runtime import container

    validate_id(container_id)
    container.kill(opts, container_id, parse_signal(signal), all_processes=all_processes)
