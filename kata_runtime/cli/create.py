"""``kata-runtime create``: create a container (boot its VM) and leave it ``created``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import absolute, optional_path, pass_opts, runc_command
from kata_runtime.errors import InvalidArgument
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

BUNDLE_HELP = "path to the root of the bundle directory, defaults to the current directory"
CONSOLE_HELP = ("path to an AF_UNIX socket which will receive a file descriptor referencing the "
                "master end of the console's pseudoterminal")
PIDFILE_HELP = "specify the file to write the process id to"
NOPIVOT_HELP = ("do not use pivot root to jail process inside rootfs.  This should be used whenever "
                "the rootfs is on top of a ramdisk")
KEYRING_HELP = "do not create a new session keyring for the container (accepted, no effect in a VM)"
PRESERVE_FDS_HELP = ("Pass N additional file descriptors to the container (stdio + N); only 0: "
                     "descriptors cannot cross into the VM")


def refuse_preserve_fds(n: int, cid: str, step: str) -> None:
    """``--preserve-fds N``: runc hands its fds 3..3+N-1 to the process. The process runs in the
    guest and only stdio is carried there (by its kata-shim), so N > 0 is refused rather than
    dropped: a process that was promised fd 3 would read or write something else."""
    if n < 0:
        raise InvalidArgument(f"invalid value \"{n}\" for flag -preserve-fds", container=cid, step=step)
    if n:
        raise InvalidArgument(f"--preserve-fds {n}: file descriptors cannot be passed into the VM (only "
                              "stdin, stdout and stderr reach the process)", container=cid, step=step)


@runc_command("create", short_help="create a container")
@click.option("--bundle", "-b", default=".", help=BUNDLE_HELP)
@click.option("--console-socket", default="", help=CONSOLE_HELP)
@click.option("--pid-file", default="", help=PIDFILE_HELP)
@click.option("--no-pivot", is_flag=True, help=NOPIVOT_HELP)
@click.option("--no-new-keyring", is_flag=True, help=KEYRING_HELP)
@click.option("--preserve-fds", type=int, default=0, help=PRESERVE_FDS_HELP)
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def create(opts: RuntimeOptions, container_id: str, bundle: str, console_socket: str, pid_file: str,
           no_pivot: bool, no_new_keyring: bool, preserve_fds: int) -> None:
    """Create an instance of a container for a bundle: a directory with a specification file
    named "config.json" and a root filesystem. The pid written to --pid-file is the kata-shim
    that stands for the container's init process; start it with "kata-runtime start"."""
    from kata_runtime import container

    validate_id(container_id)
    refuse_preserve_fds(preserve_fds, container_id, "create")
    container.create(opts, container_id, absolute(bundle), pid_file=optional_path(pid_file),
                     console_socket=optional_path(console_socket), no_pivot=no_pivot)
