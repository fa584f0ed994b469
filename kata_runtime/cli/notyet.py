"""Commands that runc has and that come in later issues: their flags are runc's already, so that
engines and scripts get a clear "not implemented yet" instead of a usage error."""

from __future__ import annotations

from typing import NoReturn

import click

from kata_runtime.cli.command import CONTEXT_SETTINGS, runc_command
from kata_runtime.errors import KataError
from kata_runtime.oci.spec import validate_id


def not_implemented(command: str, container_id: str | None = None) -> NoReturn:
    """Raise the error of a command that is not there yet."""
    if container_id is not None:
        validate_id(container_id)
    raise KataError("not implemented yet", container=container_id, step=command)


@click.group("factory", context_settings=CONTEXT_SETTINGS, invoke_without_command=True,
             short_help="manage VM templates (factory)")
@click.pass_context
def factory(ctx: click.Context) -> None:
    """Manage the VM template factory ([factory] enable_template in configuration.toml)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@runc_command("init", nargs=(0, 0), short_help="create a VM template")
def factory_init() -> None:
    """Boot the template VM and save it."""
    not_implemented("factory init")


@runc_command("destroy", nargs=(0, 0), short_help="destroy the VM template")
def factory_destroy() -> None:
    """Stop and remove the template VM."""
    not_implemented("factory destroy")


@runc_command("status", nargs=(0, 0), short_help="show the status of the VM template")
def factory_status() -> None:
    """Say whether a template VM exists."""
    not_implemented("factory status")


factory.add_command(factory_init)
factory.add_command(factory_destroy)
factory.add_command(factory_status)
