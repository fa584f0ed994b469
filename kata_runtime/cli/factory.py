"""``kata-runtime factory init|destroy|status``: the VM template that sandboxes are cloned from
(``[factory] enable_template``) and the VM cache daemon that keeps VMs booted for them
(``[factory] vm_cache_number``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import CONTEXT_SETTINGS, pass_opts, runc_command

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@click.group("factory", context_settings=CONTEXT_SETTINGS, invoke_without_command=True,
             short_help="manage VM templates and the VM cache (factory)")
@click.pass_context
def factory(ctx: click.Context) -> None:
    """Manage the VM factory: the VM template ([factory] enable_template) and the VM cache
    ([factory] vm_cache_number) of configuration.toml."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@runc_command("init", nargs=(0, 0), short_help="create the VM template and/or start the VM cache")
@pass_opts
def factory_init(opts: RuntimeOptions) -> None:
    """Make the VM template (enable_template), start the VM cache daemon (vm_cache_number > 0) and
    wait until its VMs are ready."""
    from kata_runtime.config import load_config
    from kata_runtime.errors import KataError
    from kata_runtime.factory import cache, template
    from kata_runtime.sandbox import choose_accel

    cfg = load_config(opts.kata_config)
    f = cfg.factory
    if not f.enable_template and f.vm_cache_number <= 0:
        raise KataError(f"neither [factory] enable_template nor vm_cache_number is set ({cfg.source or 'defaults'}): "
                        "nothing to make", step="factory init")
    accel, _why = choose_accel(cfg)
    tp = None
    if f.enable_template:
        tp = template.init(cfg, accel, cfg.agent.dial_timeout)
        click.echo(f"VM template created at {tp.root}")
    if f.vm_cache_number > 0:
        try:
            pid, ready = cache.start(cfg, accel, cfg.agent.dial_timeout)
        except BaseException:
            if tp is not None:  # all or nothing
                template.destroy(cfg, cfg.agent.dial_timeout)
            raise
        click.echo(f"VM cache daemon (pid {pid}) at {f.vm_cache_endpoint}: {ready} VM(s) ready")


@runc_command("destroy", nargs=(0, 0), short_help="destroy the VM template and stop the VM cache")
@pass_opts
def factory_destroy(opts: RuntimeOptions) -> None:
    """Remove the template VM's files; stop the VM cache daemon and its VMs."""
    from kata_runtime.config import load_config
    from kata_runtime.factory import cache, template

    cfg = load_config(opts.kata_config)
    if template.destroy(cfg, cfg.agent.dial_timeout):
        click.echo("VM template destroyed")
    if cache.stop(cfg):
        click.echo("VM cache stopped")


@runc_command("status", nargs=(0, 0), short_help="show the VM template and the VM cache")
@pass_opts
def factory_status(opts: RuntimeOptions) -> None:
    """Say whether a template exists and is usable for the configuration (and why not), and how
    many VMs the cache has ready."""
    from kata_runtime.config import load_config
    from kata_runtime.factory import cache, template
    from kata_runtime.sandbox import choose_accel

    cfg = load_config(opts.kata_config)
    accel, _why = choose_accel(cfg)
    where = cfg.source or "defaults"
    for line in template.status(cfg, accel):
        click.echo(line)
    click.echo(f"enable_template = {str(cfg.factory.enable_template).lower()} ({where})")
    for line in cache.status(cfg, accel):
        click.echo(line)
    click.echo(f"vm_cache_number = {cfg.factory.vm_cache_number} ({where})")


factory.add_command(factory_init)
factory.add_command(factory_destroy)
factory.add_command(factory_status)
