"""``kata-runtime``: the runc-compatible command line. Global flags, the command table, and the one
place where errors become what the user and the engines see.

An error is one line on stderr, ``kata-runtime: <message>``, and the exit status of the error
(1; ``exec`` failures 255 and an unknown command 3, as runc). With ``--log FILE`` the same message
is appended to FILE as a logrus line (``--log-format json``: ``{"level":"error","msg":...}``),
which containerd reads back to show the user. A bug is one line too; its traceback goes to the
log only with ``--debug``.

``--debug`` adds debug lines, as runc's: to stderr, or to ``--log`` in its format. They name the
command line, the phases of create and start (with their times), and the exit status.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import click

from kata_runtime.cli.command import CONTEXT_SETTINGS, CliState, LazyGroup
from kata_runtime.cli.logs import LogTarget, setup_logging
from kata_runtime.errors import KataError

PROG = "kata-runtime"
DEFAULT_ROOT = "/run/vc"

# name -> ("module:attribute", one-line help), in the order of runc's help. The help lines are
# here so that "kata-runtime --help" does not import every command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "create": ("kata_runtime.cli.create:create", "create a container"),
    "delete": ("kata_runtime.cli.delete:delete",
               "delete any resources held by the container often used with detached container"),
    "events": ("kata_runtime.cli.events:events", "display container events such as OOM notifications, "
               "cpu, memory, and IO usage statistics"),
    "exec": ("kata_runtime.cli.exec:exec_", "execute new process inside the container"),
    "kill": ("kata_runtime.cli.kill:kill",
             "kill sends the specified signal (default: SIGTERM) to the container's init process"),
    "list": ("kata_runtime.cli.list:list_", "lists containers started by kata-runtime with the given root"),
    "pause": ("kata_runtime.cli.pause:pause", "pause suspends all processes inside the container"),
    "ps": ("kata_runtime.cli.ps:ps", "ps displays the processes running inside a container"),
    "resume": ("kata_runtime.cli.pause:resume", "resumes all processes that have been previously paused"),
    "run": ("kata_runtime.cli.run:run", "create and run a container"),
    "spec": ("kata_runtime.cli.spec:spec", "create a new specification file"),
    "start": ("kata_runtime.cli.start:start", "executes the user defined process in a created container"),
    "state": ("kata_runtime.cli.state:state", "output the state of a container"),
    "update": ("kata_runtime.cli.update:update", "update container resource constraints"),
    "factory": ("kata_runtime.cli.factory:factory", "manage VM templates (factory)"),
    "kata-check": ("kata_runtime.cli.kata:kata_check", "tests if system can run Kata Containers"),
    "kata-env": ("kata_runtime.cli.kata:kata_env", "display settings"),
    "kata-network": ("kata_runtime.cli.network:kata_network", "manage the network of a running sandbox"),
    "version": ("kata_runtime.cli.version:version", "print the version"),
}

# The log target of the current invocation, once the global flags are parsed.
_log_target: LogTarget | None = None
# The arguments of the current invocation (for the debug log).
_argv: list[str] = []
log = logging.getLogger("kata_runtime.cli")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from kata_runtime.cli.version import version_text

        click.echo(version_text(), nl=False)
        ctx.exit(0)


@click.group(PROG, cls=LazyGroup, lazy=COMMANDS, invoke_without_command=True,
             context_settings=CONTEXT_SETTINGS)
@click.option("--debug", is_flag=True, help="enable debug logging")
@click.option("--log", "log_file", metavar="FILE", default="",
              help="set the log file to write kata-runtime logs to (default is '/dev/stderr')")
@click.option("--log-format", default="text", show_default=True,
              help="set the log format ('text' (default), or 'json')")
@click.option("--root", default=DEFAULT_ROOT, show_default=True,
              help="root directory for storage of container state (this should be located in tmpfs)")
@click.option("--criu", default="criu", show_default=True,
              help="path to the criu binary used for checkpoint and restore (accepted, ignored)")
@click.option("--systemd-cgroup", is_flag=True,
              help='enable systemd cgroup support, expects cgroupsPath to be of form "slice:prefix:name"')
@click.option("--rootless", default="auto", show_default=True,
              help="ignore cgroup permission errors ('true', 'false', or 'auto')")
@click.option("--kata-config", metavar="PATH", default=None,
              help="Kata configuration file (default: the standard search path)")
@click.option("--version", "-v", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="print the version")
@click.pass_context
def cli(ctx: click.Context, debug: bool, log_file: str, log_format: str, root: str, criu: str,
        systemd_cgroup: bool, rootless: str, kata_config: str | None) -> int | None:
    """kata-runtime - Open Container Initiative runtime that runs each container in a
    lightweight QEMU virtual machine (Kata Containers 1.x).

    A drop-in replacement for runc: the same commands, flags and output.
    """
    global _log_target
    _log_target = LogTarget(log_file or None)  # text until the format is known to be valid
    target = LogTarget(log_file or None, log_format)  # raises on a bad --log-format
    if target.is_file:
        target.stream()  # created now, as runc does, even if nothing goes wrong
    _log_target = target
    setup_logging(target, debug)
    log.debug("%s %s (pid %d)", PROG, shlex.join(_argv), os.getpid())
    ctx.obj = CliState(root=root, kata_config=kata_config, debug=debug,
                       systemd_cgroup=systemd_cgroup, log=target)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        return 0
    return None


@cli.command("help", context_settings=CONTEXT_SETTINGS,
             short_help="Shows a list of commands or help for one command")
@click.argument("command", required=False)
@click.pass_context
def help_(ctx: click.Context, command: str | None) -> None:
    """Shows a list of commands or help for one command."""
    parent = ctx.parent
    assert parent is not None and isinstance(parent.command, click.Group)
    if command is None:
        click.echo(parent.get_help())
        return
    sub = parent.command.get_command(parent, command)
    if sub is None:
        raise click.UsageError(f"No such command '{command}'.")
    with click.Context(sub, info_name=command, parent=parent) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


def _unknown_command(e: click.UsageError) -> str | None:
    """The name of the unknown command ``e`` is about, if it is about one (click >= 8.4 has
    NoSuchCommand; older ones raise a plain UsageError "No such command 'x'.")."""
    name = getattr(e, "command_name", None)
    if isinstance(name, str):
        return name
    if e.message.startswith("No such command") and "'" in e.message:
        return e.message.split("'")[1]
    return None


def _usage_message(e: click.UsageError) -> str:
    if isinstance(e, click.NoSuchOption):
        return f"flag provided but not defined: -{e.option_name.lstrip('-')}"
    if isinstance(e, click.BadOptionUsage) and "requires an argument" in e.message:
        return f"flag needs an argument: -{e.option_name.lstrip('-')}"
    name = _unknown_command(e)
    if name is not None:
        return f"No help topic for '{name}'"
    return e.format_message()


def _report(msg: str, code: int) -> int:
    """Write the error line to stderr and the log; return the exit status."""
    one_line = "; ".join(line.strip() for line in msg.splitlines() if line.strip())
    sys.stderr.write(f"{PROG}: {one_line}\n")
    sys.stderr.flush()
    target = _log_target
    if target is not None and target.is_file:
        try:
            target.write("error", msg)
        except (KataError, OSError):
            pass
    return code


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status (never raises, never prints a traceback)."""
    global _log_target, _argv
    _log_target = None
    _argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _dispatch(_argv)
        if _log_target is not None:
            log.debug("exit status %d", code)
        return code
    finally:
        logging.shutdown()


def _dispatch(args: list[str]) -> int:
    """The command's exit status; every error becomes its one line here."""
    try:
        rv: Any = cli.main(args=args, prog_name=PROG, standalone_mode=False)
    except click.UsageError as e:
        code = 3 if _unknown_command(e) is not None else 1
        return _report(_usage_message(e), code)
    except click.ClickException as e:
        return _report(e.format_message(), e.exit_code or 1)
    except click.Abort:
        return _report("interrupted", 130)
    except KataError as e:
        return _report(str(e), e.exit_code)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: one line for the user, the traceback to the log with --debug
        msg = f"internal error: {type(e).__name__}: {e}"
        if _log_target is not None and log.isEnabledFor(logging.DEBUG):
            import traceback

            log.debug("%s\n%s", msg, traceback.format_exc().rstrip())
        return _report(msg, 1)
    if isinstance(rv, bool) or not isinstance(rv, int):
        return 0
    return rv


def main() -> None:
    """Console-script entry point of ``kata-runtime``.

    Ends with ``os._exit``: the interpreter's teardown (finalizing every module and object) is
    about 10 ms of each command, which engines run several of per container, and nothing is left
    for it to do: the log is shut down, files are closed where they are written, and the kernel
    closes the sockets."""
    code = run_cli()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
            pass
    os._exit(code)

if __name__ == "__main__":
    main()
