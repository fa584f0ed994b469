"""``kata-runtime version`` and ``--version``: runc's layout (``runc version ...``, ``commit:``,
``spec:``, then the language runtime, as runc prints ``go:``)."""

from __future__ import annotations

import platform

import click

from kata_runtime import OCI_VERSION, __version__
from kata_runtime.build import commit
from kata_runtime.cli.command import runc_command


def version_text() -> str:
    """The version report, newline-terminated."""
    return (f"kata-runtime version {__version__}\n"
            f"commit: {commit()}\n"
            f"spec: {OCI_VERSION}\n"
            f"python: {platform.python_version()}\n")


@runc_command("version", nargs=(0, 0), short_help="print the version")
def version() -> None:
    """Print the version of kata-runtime, the OCI runtime-spec it implements, and its Python."""
    click.echo(version_text(), nl=False)
