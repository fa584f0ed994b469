"""``kata-runtime ps``: the processes of a container, as the guest sees them.

runc runs the host's procps ``ps`` with the options given after the id (``-ef`` when there are
none) and keeps the rows of the container's pids. The guest's ``ps`` is busybox's, which knows
only ``-o COLUMNS`` and ``-T``, so the procps options are translated here into the busybox columns
closest to procps's formats:

| procps | busybox columns |
| --- | --- |
| (none: runc's ``-ef``), ``-f`` | ``user,pid,ppid,tty,args`` |
| ``-F`` | ``user,pid,ppid,vsz,rss,tty,args`` |
| ``-l`` | ``stat,user,pid,ppid,nice,vsz,tty,comm`` |
| ``-j`` | ``pid,pgid,sid,tty,comm`` |
| ``u`` (BSD) | ``user,pid,vsz,rss,tty,stat,args`` |
| ``-x``, ``x`` | ``pid,tty,stat,args`` |
| only selections (``-e``, ``-A``...) | ``pid,tty,comm`` |
| ``-o``/``o``/``--format LIST`` | LIST, procps names mapped (``cmd`` → ``args``, ``tname`` → ``tty``...) |

The selections (``-e -A -a -d -x``, BSD ``a x``) change nothing: the table always holds all the
container's processes. Options busybox cannot follow (selection by pid, user or terminal, sorting,
columns it does not have such as ``time`` or ``%cpu``) are refused with one line, as runc's procps
would refuse an option it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from kata_runtime.cli.command import pass_opts, runc_command
from kata_runtime.errors import InvalidArgument
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

# busybox 1.35 ps: column -> (header, width); width 0: it takes the rest of the line
BUSYBOX_COLUMNS: dict[str, tuple[str, int]] = {
    "user": ("USER", 8), "group": ("GROUP", 8), "comm": ("COMMAND", 16), "args": ("COMMAND", 0),
    "pid": ("PID", 5), "ppid": ("PPID", 5), "pgid": ("PGID", 5), "nice": ("NI", 5),
    "rgroup": ("RGROUP", 8), "ruser": ("RUSER", 8), "tty": ("TT", 6), "vsz": ("VSZ", 4),
    "sid": ("SID", 5), "stat": ("STAT", 4), "rss": ("RSS", 4),
}
# procps's names for them
_ALIASES = {"tgid": "pid", "pgrp": "pgid", "sess": "sid", "session": "sid", "euser": "user",
            "uname": "user", "egroup": "group", "ucmd": "comm", "ucomm": "comm", "cmd": "args",
            "command": "args", "ni": "nice", "tname": "tty", "tt": "tty", "vsize": "vsz",
            "rssize": "rss", "rsz": "rss", "s": "stat", "state": "stat"}

_FORMATS = {
    "f": "user,pid,ppid,tty,args", "F": "user,pid,ppid,vsz,rss,tty,args",
    "l": "stat,user,pid,ppid,nice,vsz,tty,comm", "j": "pid,pgid,sid,tty,comm",
    "u": "user,pid,vsz,rss,tty,stat,args", "x": "pid,tty,stat,args", "": "pid,tty,comm",
}
_FORMAT_PRIORITY = "uFfljx"  # when several are given: the first of these that was
_IGNORED = set("eAadwy")  # selections of "all" (the container's processes are all shown) and width
_SELECT_BY = {"p": "pid", "q": "pid", "u": "user", "U": "user", "g": "group", "G": "group", "t": "terminal",
              "s": "session", "C": "command name"}


@dataclass
class GuestPs:
    """What the guest's busybox ps is given for a procps command line."""

    columns: list[tuple[str, str | None]]  # (busybox column, header given with ``name=HEADER``)
    threads: bool = False
    argv: list[str] = field(init=False)

    def __post_init__(self) -> None:
        spec = ",".join(name if header is None else f"{name}={header}" for name, header in self.columns)
        self.argv = (["-T"] if self.threads else []) + ["-o", spec]

    def header(self) -> str:
        """busybox's header line for these columns (what an empty table shows), newline-terminated."""
        parts: list[str] = []
        for i, (name, given) in enumerate(self.columns):
            default, width = BUSYBOX_COLUMNS[name]
            text = default if given is None else given
            if given is not None:
                width = len(given)
            if i == len(self.columns) - 1 or width == 0:
                parts.append(text)
                break
            parts.append(text.ljust(width))
        return " ".join(parts) + "\n"


def _columns(spec: str, cid: str) -> list[tuple[str, str | None]]:
    """A procps ``-o`` list (commas or blanks; ``name=HEADER`` ends the list, as in procps)."""
    out: list[tuple[str, str | None]] = []
    rest = spec
    while rest.strip(" ,"):
        rest = rest.lstrip(" ,")
        name, eq, tail = rest.partition("=")
        word = name.split(",")[0].split(" ")[0]
        if eq and word == name:
            header: str | None = tail  # procps: the header runs to the end of the argument
            rest = ""
        else:
            header = None
            rest = rest[len(word):]
        column = _ALIASES.get(word, word)
        if column not in BUSYBOX_COLUMNS:
            raise InvalidArgument(f"ps column {word!r} is not known to the guest's ps (busybox: "
                                  f"{','.join(BUSYBOX_COLUMNS)})", container=cid, step="ps")
        out.append((column, header))
    return out


def guest_ps(args: list[str], cid: str) -> GuestPs:
    """The busybox ps of the procps options ``args`` (see the module docstring)."""
    formats: set[str] = set()
    columns: list[tuple[str, str | None]] = []
    threads = False
    args = [a for a in args if a != "--"]
    if not args:
        args = ["-ef"]  # runc's default
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name == "format":
                if not eq:
                    if i >= len(args):
                        raise InvalidArgument("ps option --format needs a list of columns", container=cid,
                                              step="ps")
                    value, i = args[i], i + 1
                columns += _columns(value, cid)
                continue
            raise InvalidArgument(f"ps option {arg} is not supported by the guest's ps", container=cid, step="ps")
        bsd = not arg.startswith("-")
        letters = arg if bsd else arg[1:]
        for j, ch in enumerate(letters):
            if ch in "oO":
                value = letters[j + 1:]
                if not value:
                    if i >= len(args):
                        raise InvalidArgument(f"ps option {arg} needs a list of columns", container=cid, step="ps")
                    value, i = args[i], i + 1
                if ch == "O":  # procps: the default columns around the given ones
                    value = f"pid,{value},stat,tty,args"
                columns += _columns(value, cid)
                break
            if ch in _IGNORED:
                continue
            if ch in "fFljx" or (bsd and ch == "u"):
                formats.add(ch)
                continue
            if ch in "TL" and not bsd:
                threads = True
                continue
            if ch in _SELECT_BY and not bsd:
                raise InvalidArgument(f"ps option -{ch}: selecting processes by {_SELECT_BY[ch]} is not supported "
                                      "(the table holds all the container's processes)", container=cid, step="ps")
            raise InvalidArgument(f"ps option {'' if bsd else '-'}{ch} (in {arg}) is not supported by the guest's "
                                  "ps", container=cid, step="ps")
    if not columns:
        chosen = next((f for f in _FORMAT_PRIORITY if f in formats), "")
        columns = [(c, None) for c in _FORMATS[chosen].split(",")]
    if not any(name == "pid" and header in (None, "PID") for name, header in columns):
        raise InvalidArgument("couldn't find PID field in ps output (the columns need pid)", container=cid,
                              step="ps")
    return GuestPs(columns, threads)


@runc_command("ps", nargs=(1, None), reorder=False,
              short_help="ps displays the processes running inside a container")
@click.option("--format", "-f", "fmt", default="table", show_default=True,
              help="select one of: table or json")
@click.argument("container_id", metavar="<container-id>")
@click.argument("ps_args", metavar="[ps options]", nargs=-1, type=click.UNPROCESSED)
@pass_opts
def ps(opts: RuntimeOptions, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> None:
    """Display the processes running inside a container. ``--format json`` prints the host pids
    that stand for them (their kata-shims); the table is the guest's ps for the procps options
    given after the id (``-e -x``, ``-f``, ``-o pid,args``...; ``-ef`` when none)."""
    from kata_runtime import container

    validate_id(container_id)
    if fmt not in ("table", "json"):
        raise InvalidArgument("invalid format option")
    guest = guest_ps(list(ps_args), container_id) if fmt == "table" else None
    out = container.ps(opts, container_id, fmt, guest.argv if guest is not None else [])
    if out is None:  # stopped: no process (runc prints its empty table, or null)
        out = guest.header() if guest is not None else "null\n"
    click.echo(out, nl=False)
