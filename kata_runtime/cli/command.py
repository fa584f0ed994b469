"""How the command line is parsed: runc's rules (urfave/cli 1.22 as runc uses it), in one place.

- A command's known flags may come before or after its arguments (urfave moves them forward);
  an unknown ``-x`` before the first argument is ``flag provided but not defined: -x``, after it
  it is an argument (so ``kill c1 -9`` passes ``-9`` on, as runc does).
- ``exec`` stops at its first argument: everything after the id is the command line.
- A wrong number of arguments is ``"state" requires exactly 1 argument(s)`` (or ``a minimum``,
  ``a maximum``), exit status 1.
- Commands are imported only when used, so that ``--help`` and ``state`` stay fast.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kata_runtime.cli.logs import LogTarget

if TYPE_CHECKING:
    from kata_runtime.container import RuntimeOptions

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


@dataclass
class CliState:
    """The global flags, as given; the object of the group's click context."""

    root: str
    kata_config: str | None
    debug: bool
    systemd_cgroup: bool
    log: LogTarget

    def runtime_options(self) -> RuntimeOptions:
        """The library's view of the global flags (``--root`` made absolute, like runc)."""
        from kata_runtime.container import RuntimeOptions

        return RuntimeOptions(
            root=Path(os.path.abspath(self.root)),
            kata_config=Path(self.kata_config) if self.kata_config else None,
            debug=self.debug,
            systemd_cgroup=self.systemd_cgroup,
        )


def pass_opts(f: F) -> F:
    """Decorate a command callback so that it receives the :class:`RuntimeOptions` first."""

    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
        state = ctx.find_object(CliState)
        if state is None:  # invoked without the group (tests)
            state = CliState(root="/run/vc", kata_config=None, debug=False, systemd_cgroup=False,
                             log=LogTarget(None))
        return ctx.invoke(f, state.runtime_options(), *args, **kwargs)

    wrapper.__name__ = f.__name__
    wrapper.__doc__ = f.__doc__
    return wrapper  # type: ignore[return-value]


def absolute(path: str) -> Path:
    """A path made absolute against the current directory, symlinks kept (``.`` for empty)."""
    return Path(os.path.abspath(path or "."))


def optional_path(path: str | None) -> Path | None:
    """A path flag made absolute against the current directory (runc does this for --pid-file),
    or None when the flag is empty or absent."""
    return absolute(path) if path else None


class RuncCommand(click.Command):
    """A command with runc's argument rules (see the module docstring).

    ``nargs`` is ``(minimum, maximum)`` positional arguments (``maximum`` None: no limit; equal
    bounds: runc's "exactly N"); ``reorder=False`` (exec, ps) ends flag parsing at the first
    argument.
    """

    def __init__(self, *args: Any, nargs: tuple[int, int | None] = (1, 1), reorder: bool = True,
                 **kwargs: Any) -> None:
        settings = dict(CONTEXT_SETTINGS)
        settings.update(kwargs.pop("context_settings", None) or {})
        settings.setdefault("ignore_unknown_options", reorder)
        settings.setdefault("allow_interspersed_args", reorder)
        kwargs["context_settings"] = settings
        super().__init__(*args, **kwargs)
        self.nargs_range = nargs
        self.reorder = reorder

    def _flags(self) -> dict[str, bool]:
        """Every flag name -> whether it takes a value."""
        names: dict[str, bool] = {"-h": False, "--help": False}
        for p in self.params:
            if isinstance(p, click.Option):
                takes_value = not p.is_flag and not p.count
                for name in (*p.opts, *p.secondary_opts):
                    names[name] = takes_value
        return names

    def split(self, args: list[str]) -> tuple[list[str], list[str]]:
        """(flags with their values, positional arguments) as urfave/cli sees ``args``."""
        flags = self._flags()
        options: list[str] = []
        positional: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                positional.extend(args[i + 1:])
                break
            name = arg.split("=", 1)[0]
            if (self.reorder or not positional) and name in flags:
                options.append(arg)
                if flags[name] and "=" not in arg and i + 1 < len(args):
                    options.append(args[i + 1])
                    i += 1
            elif arg.startswith("-") and len(arg) > 1 and not positional:
                raise click.NoSuchOption(name, ctx=None)
            elif not self.reorder and positional:
                positional.extend(args[i:])
                break
            else:
                positional.append(arg)
            i += 1
        return options, positional

    def arg_count_error(self, count: int) -> str | None:
        """runc's checkArgs message for ``count`` arguments, or None if the count is right."""
        lo, hi = self.nargs_range
        name = self.name
        if lo == hi and count != lo:
            return f'"{name}" requires exactly {lo} argument(s)'
        if count < lo:
            return f'"{name}" requires a minimum of {lo} argument(s)'
        if hi is not None and count > hi:
            return f'"{name}" requires a maximum of {hi} argument(s)'
        return None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not any(a in ("-h", "--help") for a in self.split_help_scope(args)):
            try:
                _, positional = self.split(args)
            except click.NoSuchOption as e:
                e.ctx = ctx
                raise
            problem = self.arg_count_error(len(positional))
            if problem is not None:
                raise click.UsageError(problem, ctx)
        return super().parse_args(ctx, args)

    def split_help_scope(self, args: list[str]) -> list[str]:
        """The part of ``args`` where ``--help`` means help (for exec: before the command)."""
        if self.reorder:
            return args[: args.index("--")] if "--" in args else args
        try:
            _, positional = self.split(args)
        except click.NoSuchOption:
            return args
        return args[: len(args) - len(positional)]


class LazyGroup(click.Group):
    """A group whose commands live in their own modules, imported only when used.

    ``lazy`` maps each command name to ``("module:attribute", one-line help)``, in the order
    ``--help`` lists them; the help line lets ``--help`` list them without importing them.
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(n for n in super().list_commands(ctx) if n not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name][0].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            assert isinstance(cmd, click.Command)
            return cmd
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in self.lazy.items()]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in self.commands.items()
                 if name not in self.lazy and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def runc_command(name: str, *, nargs: tuple[int, int | None] = (1, 1), reorder: bool = True,
                 **kwargs: Any) -> Callable[[Callable[..., Any]], RuncCommand]:
    """``@click.command`` for a :class:`RuncCommand`."""

    def decorate(f: Callable[..., Any]) -> RuncCommand:
        cmd = click.command(name, cls=RuncCommand, nargs=nargs, reorder=reorder, **kwargs)(f)
        assert isinstance(cmd, RuncCommand)
        return cmd

    return decorate
