"""``kata-runtime update``: new resource limits for a container, as runc's flags or a JSON file."""

from __future__ import annotations

import json
import re
import sys
from typing import TYPE_CHECKING, Any

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.errors import InvalidArgument
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

_RAM_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """docker's units.RAMInBytes, which runc uses: "64m", "1.5g", "1048576", "-1" (unlimited)."""
    if text.strip() == "-1":
        return -1
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise InvalidArgument(f"invalid size: '{text}'")
    return int(float(m.group(1)) * _RAM_UNITS[m.group(2)])


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid value {text!r} for flag --{flag}") from None


def resources_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The OCI ``linux.resources`` object that runc's update flags describe."""
    res: dict[str, Any] = {}
    memory = {key: ram_in_bytes(flags[flag]) for flag, key in
              (("memory", "limit"), ("memory_reservation", "reservation"), ("memory_swap", "swap"))
              if flags.get(flag)}
    if memory:
        res["memory"] = memory
    cpu: dict[str, Any] = {key: _int(flag, flags[flag]) for flag, key in
                           (("cpu_period", "period"), ("cpu_quota", "quota"), ("cpu_share", "shares"),
                            ("cpu_rt_period", "realtimePeriod"), ("cpu_rt_runtime", "realtimeRuntime"))
                           if flags.get(flag)}
    cpu.update({key: flags[flag] for flag, key in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems"))
                if flags.get(flag)})
    if cpu:
        res["cpu"] = cpu
    if flags.get("blkio_weight"):
        res["blockIO"] = {"weight": flags["blkio_weight"]}
    if flags.get("pids_limit"):
        res["pids"] = {"limit": flags["pids_limit"]}
    return res


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
@pass_opts
def update(opts: RuntimeOptions, container_id: str, resources: str, **flags: Any) -> None:
    """Update container resource constraints, from --resources (a JSON linux.resources object,
    "-" for stdin) or from the flags."""
    from kata_runtime import container

    validate_id(container_id)
    if resources:
        try:
            text = sys.stdin.read() if resources == "-" else open(resources).read()
            res = json.loads(text)
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot read resources {resources}: {e}", container=container_id,
                                  step="update") from None
    else:
        res = resources_from_flags(flags)
    container.update(opts, container_id, res)
