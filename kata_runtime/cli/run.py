"""``kata-runtime run``: create and start a container; in the foreground, wait and exit with its status."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import absolute, optional_path, pass_opts, runc_command
from kata_runtime.cli.create import (
    BUNDLE_HELP,
    CONSOLE_HELP,
    KEYRING_HELP,
    NOPIVOT_HELP,
    PIDFILE_HELP,
    PRESERVE_FDS_HELP,
    refuse_preserve_fds,
)
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("run", short_help="create and run a container")
@click.option("--bundle", "-b", default=".", help=BUNDLE_HELP)
@click.option("--console-socket", default="", help=CONSOLE_HELP)
@click.option("--detach", "-d", is_flag=True, help="detach from the container's process")
@click.option("--keep", is_flag=True, help="do not delete the container after it exits")
@click.option("--pid-file", default="", help=PIDFILE_HELP)
@click.option("--no-subreaper", is_flag=True, help="disable the use of the subreaper (accepted, no effect)")
@click.option("--no-pivot", is_flag=True, help=NOPIVOT_HELP)
@click.option("--no-new-keyring", is_flag=True, help=KEYRING_HELP)
@click.option("--preserve-fds", type=int, default=0, help=PRESERVE_FDS_HELP)
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def run(opts: RuntimeOptions, container_id: str, bundle: str, console_socket: str, detach: bool,
        keep: bool, pid_file: str, no_subreaper: bool, no_pivot: bool, no_new_keyring: bool,
        preserve_fds: int) -> int:
    """Create an instance of a container for a bundle and start it. In the foreground, wait for
    it, delete it (with --keep it stays, stopped, until "kata-runtime delete") and exit with its
    status (128+N when killed by signal N)."""
    from kata_runtime import container

    validate_id(container_id)
    refuse_preserve_fds(preserve_fds, container_id, "run")
    return container.run(opts, container_id, absolute(bundle), pid_file=optional_path(pid_file),
                         console_socket=optional_path(console_socket), detach=detach,
                         no_pivot=no_pivot, keep=keep)
