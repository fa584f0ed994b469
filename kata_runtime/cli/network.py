"""``kata-runtime kata-network``: the network of a running sandbox (Kata 1.x's command of that
name). ``sync`` is what kata-netmon calls when the sandbox's namespace changes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import CONTEXT_SETTINGS, pass_opts, runc_command

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions


@click.group("kata-network", context_settings=CONTEXT_SETTINGS, invoke_without_command=True,
             short_help="manage the network of a running sandbox")
@click.pass_context
def kata_network(ctx: click.Context) -> None:
    """Manage the network of a running sandbox: its VM follows the interfaces of its network
    namespace on the host."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@runc_command("sync", short_help="follow the namespace's interfaces")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def network_sync(opts: RuntimeOptions, container_id: str) -> None:
    """Connect the interfaces that appeared in the namespace, disconnect those that went, and set
    the routes again."""
    from kata_runtime import container

    for name in container.network_sync(opts, container_id):
        click.echo(f"connected {name}")


@runc_command("list-ifaces", short_help="list the interfaces connected to the VM")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def list_ifaces(opts: RuntimeOptions, container_id: str) -> None:
    """The interfaces connected to the VM, as JSON."""
    from kata_runtime import container

    click.echo(json.dumps(container.network_interfaces(opts, container_id)))


kata_network.add_command(network_sync)
kata_network.add_command(list_ifaces)
