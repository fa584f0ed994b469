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


@runc_command("events", short_help="display container events such as OOM notifications, cpu, memory, and IO "
              "usage statistics")
@click.option("--interval", default="5s", show_default=True, help="set the stats collection interval")
@click.option("--stats", is_flag=True, help="display the container's stats then exit")
@click.argument("container_id", metavar="<container-id>")
def events(interval: str, stats: bool, container_id: str) -> None:
    """Display information about the container, by default once every 5 seconds."""
    not_implemented("events", container_id)


@runc_command("update", short_help="update container resource constraints")
@click.option("--resources", "-r", default="",
              help="path to the file containing the resources to update or '-' to read from the "
                   "standard input")
@click.option("--blkio-weight", type=int, default=0,
              help="Specifies per cgroup weight, range is from 10 to 1000")
@click.option("--cpu-period", default="", help="CPU CFS period to be used for hardcapping (in usecs)")
@click.option("--cpu-quota", default="",
              help="CPU CFS hardcap limit (in usecs). Allowed cpu time in a given period")
@click.option("--cpu-share", default="", help="CPU shares (relative weight vs. other containers)")
@click.option("--cpu-rt-period", default="", help="CPU realtime period to be used for hardcapping (in usecs)")
@click.option("--cpu-rt-runtime", default="", help="CPU realtime hardcap limit (in usecs)")
@click.option("--cpuset-cpus", default="", help="CPU(s) to use")
@click.option("--cpuset-mems", default="", help="Memory node(s) to use")
@click.option("--memory", default="", help="Memory limit (in bytes)")
@click.option("--memory-reservation", default="", help="Memory reservation or soft_limit (in bytes)")
@click.option("--memory-swap", default="",
              help="Total memory usage (memory + swap); set '-1' to enable unlimited swap")
@click.option("--pids-limit", type=int, default=0, help="Maximum number of pids allowed in the container")
@click.option("--l3-cache-schema", default="", help="The string of Intel RDT/CAT L3 cache schema")
@click.option("--mem-bw-schema", default="", help="The string of Intel RDT/MBA memory bandwidth schema")
@click.argument("container_id", metavar="<container-id>")
def update(container_id: str, **_flags: object) -> None:
    """Update container resource constraints."""
    not_implemented("update", container_id)


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
