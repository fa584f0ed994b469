"""``kata-runtime events``: the container's stats (cpu, memory, pids), once or every interval."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.errors import InvalidArgument
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ("5s", "500ms", "1m30s"), as runc's --interval takes."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidArgument(f'time: invalid duration "{text}"')
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise InvalidArgument("duration interval must be greater than 0")
    return seconds


@runc_command("events", short_help="display container events such as OOM notifications, cpu, memory, and IO "
              "usage statistics")
@click.option("--interval", default="5s", show_default=True, help="set the stats collection interval")
@click.option("--stats", is_flag=True, help="display the container's stats then exit")
@click.argument("container_id", metavar="<container-id>")
@pass_opts
def events(opts: RuntimeOptions, interval: str, stats: bool, container_id: str) -> None:
    """Display information about the container: one stats event with --stats; else one every
    interval, and an ``oom`` event as soon as the guest's OOM killer ends one of its processes
    (within a second: the guest's cgroup is looked at that often), until the container stops."""
    from kata_runtime import container

    validate_id(container_id)
    period = parse_duration(interval)
    seen: int | None = None  # OOM kills when we started: runc reports only the ones that follow
    due = 0.0
    while True:
        sample = container.stats(opts, container_id)
        if seen is not None and sample.oom_kills is not None and sample.oom_kills > seen:
            _emit("oom", container_id)
        seen = sample.oom_kills if sample.oom_kills is not None else seen
        if sample.data is None:
            if stats:
                from kata_runtime.errors import InvalidState

                raise InvalidState("container not running", container=container_id, step="events")
            return
        now = time.monotonic()
        if stats or now >= due:
            _emit("stats", container_id, sample.data)
            due = now + period
        if stats:
            return
        time.sleep(max(0.05, min(OOM_POLL, due - time.monotonic())))


OOM_POLL = 1.0  # seconds between looks at the guest's OOM kill count


def _emit(kind: str, cid: str, data: dict[str, object] | None = None) -> None:
    """One event line in runc's shape (``{"type":"oom","id":...}`` has no data)."""
    event: dict[str, object] = {"type": kind, "id": cid}
    if data is not None:
        event["data"] = data
    click.echo(json.dumps(event, separators=(",", ":")), nl=True)
