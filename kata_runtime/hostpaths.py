"""The host paths that the engines hand us (``--pid-file``, ``--console-socket``), checked before
anything is started, and the pid file written as runc writes it.

runc finds a bad pid file or console socket only after it has started the process (it writes the
pid file last, and dials the console socket just before the start); it then kills what it made and
fails. Booting a VM first to fail the same way would cost seconds and leave more to undo, so the
checks here refuse, with runc's verdict, what would make the later step fail:

- ``--pid-file``: runc writes ``.<name>`` in the same directory and renames it over the path, so
  the directory must exist and be writable, and the path must not be a directory (a FIFO or a
  symlink is replaced, as by runc).
- ``--console-socket``: runc connects to it, so it must be a unix socket (a directory, FIFO or
  file is "connection refused" there). It is not connected to here: an engine's console socket
  accepts one connection, the one that carries the terminal.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from kata_runtime import faults
from kata_runtime.errors import InvalidArgument

_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFREG: "a regular file",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symlink"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a socket")


def _cause(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def check_pid_file(path: Path, cid: str, step: str) -> None:
    """Refuse a ``--pid-file`` that could not be written (see the module docstring)."""
    what = f"--pid-file {path}"
    parent = path.parent
    try:
        if not stat.S_ISDIR(os.stat(parent).st_mode):
            raise InvalidArgument(f"{what}: {parent} is not a directory", container=cid, step=step)
        flags = os.statvfs(parent).f_flag
    except OSError as e:
        raise InvalidArgument(f"{what}: directory {parent}: {_cause(e)}", container=cid, step=step) from None
    if flags & os.ST_RDONLY:
        raise InvalidArgument(f"{what}: directory {parent} is on a read-only file system", container=cid,
                              step=step)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgument(f"{what}: directory {parent} is not writable", container=cid, step=step)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise InvalidArgument(f"{what}: {_cause(e)}", container=cid, step=step) from None
    if stat.S_ISDIR(mode):
        raise InvalidArgument(f"{what}: is a directory", container=cid, step=step)


def check_console_socket(path: Path, cid: str, step: str) -> None:
    """Refuse a ``--console-socket`` that is not a unix socket (see the module docstring)."""
    what = f"--console-socket {path}"
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise InvalidArgument(f"{what}: connect: {_cause(e)}", container=cid, step=step) from None
    if not stat.S_ISSOCK(mode):
        raise InvalidArgument(f"{what}: connect: connection refused ({_kind(mode)}, not a unix socket)",
                              container=cid, step=step)


def write_pid_file(path: Path, pid: int, cid: str, step: str) -> None:
    """Write ``pid`` to ``path`` as runc does: a temporary ``.<name>`` beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}")
    try:
        faults.point("pid-file")
        tmp.write_text(str(pid))
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InvalidArgument(f"--pid-file {path}: {_cause(e)}", container=cid, step=step) from None
