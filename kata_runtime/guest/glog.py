"""The agent's log: lines ``kata-agent: LEVEL message`` on stderr (the VM's console).

Not the ``logging`` package: importing it (with the ``re``, ``traceback``, ``string`` and
``weakref`` it pulls in) costs about half a second of the agent's start under TCG, before the
agent can answer its first request. Same calls as a ``logging.Logger`` for what the agent uses.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
level = WARNING


def set_debug(on: bool) -> None:
    global level
    level = DEBUG if on else WARNING


def _emit(lvl: int, msg: str, args: tuple[Any, ...]) -> None:
    if lvl < level:
        return
    try:
        text = msg % args if args else msg
    except (TypeError, ValueError):
        text = f"{msg} {args!r}"
    try:
        sys.stderr.write(f"kata-agent: {_NAMES[lvl]} {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def debug(msg: str, *args: Any) -> None:
    _emit(DEBUG, msg, args)


def info(msg: str, *args: Any) -> None:
    _emit(INFO, msg, args)


def warning(msg: str, *args: Any) -> None:
    _emit(WARNING, msg, args)


def error(msg: str, *args: Any) -> None:
    _emit(ERROR, msg, args)


def exception(msg: str, *args: Any) -> None:
    """``error`` with the traceback of the exception being handled."""
    _emit(ERROR, msg, args)
    if level <= ERROR:
        import traceback

        traceback.print_exc(file=sys.stderr)
