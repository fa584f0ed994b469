"""``kata-runtime exec``: run an extra process in a running container, or, as runc allows, in a
created one (the process joins the container's namespaces before its init is started).

The process is built as runc builds it: from ``--process FILE`` as is, or from the container's
own process with the command line, ``--cwd``, ``--env`` (appended), ``--user``, ``--tty`` and the
rest applied on top. Every failure exits with status 255, as runc's ``exec`` does, so that an
exec that could not run is told apart from a process that exited 1.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from kata_runtime.cli.command import optional_path, pass_opts, runc_command
from kata_runtime.cli.create import CONSOLE_HELP, PIDFILE_HELP, PRESERVE_FDS_HELP, refuse_preserve_fds
from kata_runtime.errors import InvalidArgument, KataError
from kata_runtime.oci.spec import validate_id

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

log = logging.getLogger(__name__)

EXEC_FAILED = 255
_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_NUMBER = re.compile(r"^[+-]?[0-9]+$")


def _id_number(text: str, what: str) -> int:
    if not _NUMBER.match(text) or not 0 <= int(text) <= 0xFFFFFFFF:
        raise InvalidArgument(f"parsing {text} as int for {what} failed: invalid syntax")
    return int(text)


def load_process_file(path: str) -> dict[str, Any]:
    """The OCI ``process`` object in ``path`` (``--process``)."""
    try:
        with open(path, encoding="utf-8") as f:
            process = json.load(f)
    except OSError as e:
        raise InvalidArgument(f"open {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidArgument(f"{path} is not valid JSON: nested too deeply") from None
    if not isinstance(process, dict):
        raise InvalidArgument(f"{path}: a process must be a JSON object")
    return process


def build_process(base: dict[str, Any], args: Sequence[str], *, cwd: str = "",
                  env: Sequence[str] = (), tty: bool = False, user: str = "",
                  additional_gids: Sequence[int] = (), caps: Sequence[str] = (),
                  no_new_privs: bool = False, apparmor: str = "", process_label: str = "") -> dict[str, Any]:
    """runc's getProcess: ``base`` (the container's process, not modified) with the exec flags
    applied. ``terminal`` is off unless ``tty``; ``env``, ``caps`` and gids are appended."""
    p = copy.deepcopy(base)
    p["args"] = list(args)
    if cwd:
        p["cwd"] = cwd
    if apparmor:
        p["apparmorProfile"] = apparmor
    if process_label:
        p["selinuxLabel"] = process_label
    if caps:
        capabilities = p.setdefault("capabilities", {})
        for name in _CAP_SETS:
            capabilities[name] = [*(capabilities.get(name) or []), *caps]
    p["env"] = [*(p.get("env") or []), *env]
    p["terminal"] = bool(tty)
    if no_new_privs:
        p["noNewPrivileges"] = True
    u = p.setdefault("user", {"uid": 0, "gid": 0})
    if user:
        uid, sep, gid = user.partition(":")
        if sep:
            u["gid"] = _id_number(gid, "gid")
        u["uid"] = _id_number(uid, "uid")
    for gid_ in additional_gids:
        if gid_ < 0:
            raise InvalidArgument(f"additional-gids must be a positive number {gid_}")
        u["additionalGids"] = [*(u.get("additionalGids") or []), gid_]
    return p


def validate_process(p: dict[str, Any]) -> None:
    """runc's validateProcessSpec, with its messages."""
    cwd = p.get("cwd")
    if not cwd:
        raise InvalidArgument("Cwd property must not be empty")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument("Cwd must be an absolute path")
    args = p.get("args")
    if not args or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise InvalidArgument("args must not be empty")


@runc_command("exec", nargs=(1, None), reorder=False, short_help="execute new process inside the container")
@click.option("--console-socket", default="", help=CONSOLE_HELP)
@click.option("--cwd", default="", help="current working directory in the container")
@click.option("--env", "-e", multiple=True, help="set environment variables")
@click.option("--tty", "-t", is_flag=True, help="allocate a pseudo-TTY")
@click.option("--user", "-u", default="", help="UID (format: <uid>[:<gid>])")
@click.option("--additional-gids", "-g", type=int, multiple=True, help="additional gids")
@click.option("--process", "-p", "process_file", default="", help="path to the process.json")
@click.option("--detach", "-d", is_flag=True, help="detach from the container's process")
@click.option("--pid-file", default="", help=PIDFILE_HELP)
@click.option("--process-label", default="",
              help="set the asm process label for the process commonly used with selinux")
@click.option("--apparmor", default="", help="set the apparmor profile for the process")
@click.option("--no-new-privs", is_flag=True, help="set the no new privileges value for the process")
@click.option("--cap", "-c", multiple=True, help="add a capability to the bounding set for the process")
@click.option("--preserve-fds", type=int, default=0, help=PRESERVE_FDS_HELP)
@click.option("--cgroup", multiple=True,
              help="run the process in an (existing) sub-cgroup (accepted, no effect)")
@click.option("--ignore-paused", is_flag=True, help="allow exec in a paused container (accepted)")
@click.argument("container_id", metavar="<container-id>")
@click.argument("command", metavar="<command> [command options]", nargs=-1, type=click.UNPROCESSED)
@pass_opts
def exec_(opts: RuntimeOptions, container_id: str, command: tuple[str, ...], console_socket: str,
          cwd: str, env: tuple[str, ...], tty: bool, user: str, additional_gids: tuple[int, ...],
          process_file: str, detach: bool, pid_file: str, process_label: str, apparmor: str,
          no_new_privs: bool, cap: tuple[str, ...], preserve_fds: int, cgroup: tuple[str, ...],
          ignore_paused: bool) -> int:
    """Execute a new process inside the container: "kata-runtime exec <container-id> ps", or
    "kata-runtime exec -p process.json <container-id>". In the foreground, exit with the
    process's status; detached, its kata-shim's pid goes to --pid-file."""
    from kata_runtime import container

    try:
        validate_id(container_id)
        refuse_preserve_fds(preserve_fds, container_id, "exec")
        if process_file:
            process = load_process_file(process_file)
        else:
            if not command:
                raise InvalidArgument("process args cannot be empty")
            process = build_process(container.container_process(opts, container_id), command,
                                    cwd=cwd, env=env, tty=tty, user=user,
                                    additional_gids=additional_gids, caps=cap,
                                    no_new_privs=no_new_privs, apparmor=apparmor,
                                    process_label=process_label)
        validate_process(process)
        return container.exec_process(opts, container_id, process, detach=detach,
                                      pid_file=optional_path(pid_file),
                                      console_socket=optional_path(console_socket))
    except KataError as e:
        if not e.step:
            e.step = "exec"
            e.container = e.container or container_id
        e.exit_code = EXEC_FAILED
        raise
