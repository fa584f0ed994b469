"""``kata-runtime factory init|destroy|status``: the VM template that sandboxes are cloned from
when ``[factory] enable_template = true``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import CONTEXT_SETTINGS, pass_opts, runc_command

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@click.group("factory", context_settings=CONTEXT_SETTINGS, invoke_without_command=True,
             short_help="manage VM templates (factory)")
@click.pass_context
def factory(ctx: click.Context) -> None:
    """Manage the VM template factory ([factory] enable_template in configuration.toml)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@runc_command("init", nargs=(0, 0), short_help="create a VM template")
@pass_opts
def factory_init(opts: RuntimeOptions) -> None:
    """Boot the template VM, wait for its agent and save it."""
    from kata_runtime.config import load_config
    from kata_runtime.factory import template
    from kata_runtime.sandbox import choose_accel

    cfg = load_config(opts.kata_config)
    accel, _why = choose_accel(cfg)
    tp = template.init(cfg, accel, cfg.agent.dial_timeout)
    click.echo(f"VM template created at {tp.root}")


@runc_command("destroy", nargs=(0, 0), short_help="destroy the VM template")
@pass_opts
def factory_destroy(opts: RuntimeOptions) -> None:
    """Remove the template VM's files."""
    from kata_runtime.config import load_config
    from kata_runtime.factory import template

    template.destroy(load_config(opts.kata_config))
    click.echo("VM template destroyed")


@runc_command("status", nargs=(0, 0), short_help="show the status of the VM template")
@pass_opts
def factory_status(opts: RuntimeOptions) -> None:
    """Say whether a template exists, and whether the configuration enables it."""
    from kata_runtime.config import load_config
    from kata_runtime.factory import template

    cfg = load_config(opts.kata_config)
    click.echo(template.status(cfg))
    click.echo(f"enable_template = {str(cfg.factory.enable_template).lower()} ({cfg.source or 'defaults'})")


factory.add_command(factory_init)
factory.add_command(factory_destroy)
factory.add_command(factory_status)
