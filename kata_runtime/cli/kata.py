"""Kata's own commands: ``kata-check`` and ``kata-env`` (the work is in :mod:`kata_runtime.check`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@runc_command("kata-check", nargs=(0, 0), short_help="tests if system can run Kata Containers")
@pass_opts
def kata_check(opts: RuntimeOptions) -> int:
    """Check that this host has what the configuration needs (QEMU, guest kernel and image,
    kata-proxy, kata-shim) and say which accelerator (KVM or TCG) containers will use.
    Exit status 0 if the system can run Kata Containers, 1 if not."""
    from kata_runtime import check

    lines, capable = check.run_check(opts)
    click.echo("\n".join(lines))
    return 0 if capable else 1


@runc_command("kata-env", nargs=(0, 0), short_help="display settings")
@click.option("--json", "as_json", is_flag=True, help="format output as JSON")
@pass_opts
def kata_env(opts: RuntimeOptions, as_json: bool) -> None:
    """Display the settings: versions, configuration file, hypervisor, guest kernel and image,
    proxy, shim and host, as TOML (or JSON)."""
    from kata_runtime import check

    sys.stdout.write(check.env_report(opts, as_json=as_json))
    sys.stdout.flush()
