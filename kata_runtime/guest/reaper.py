"""Child reaping for the agent, which is PID 1 (or a subreaper) and so inherits every orphan.

All waiting on children goes through one thread doing ``waitpid(-1)``; nothing else may call
``wait*`` (subprocess's own wait would race with it and report 0 for a failed command).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from collections.abc import Callable
    from typing import Any

    ExitCallback = Callable[[int, int], None]

PR_SET_CHILD_SUBREAPER = 36


def exit_status(wait_status: int) -> int:
    """Shell-style status: the exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    """Reaps every child; runs callbacks registered for the pids we care about."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, list[ExitCallback]] = {}
        self._unclaimed: dict[int, int] = {}  # pid -> status of exits nobody asked for yet
        self._have_children = threading.Event()
        if os.getpid() != 1:
            try:
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            except (OSError, AttributeError):
                pass
        threading.Thread(target=self._loop, name="reaper", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                pid, wstatus = os.waitpid(-1, 0)
            except ChildProcessError:
                self._have_children.wait(1.0)
                self._have_children.clear()
                continue
            except InterruptedError:
                continue
            status = exit_status(wstatus)
            with self._lock:
                callbacks = self._waiters.pop(pid, None)
                if callbacks is None:
                    self._unclaimed[pid] = status
                    if len(self._unclaimed) > 4096:  # orphans nobody asks for: keep it bounded
                        self._unclaimed.pop(next(iter(self._unclaimed)))
            for cb in callbacks or ():
                cb(pid, status)

    def on_exit(self, pid: int, callback: ExitCallback) -> None:
        """Call ``callback(pid, status)`` (from the reaper thread) when ``pid`` exits.

        Works for pids that already exited and were reaped before this call."""
        with self._lock:
            status = self._unclaimed.pop(pid, None)
            if status is None:
                self._waiters.setdefault(pid, []).append(callback)
                return
        callback(pid, status)

    def run(self, argv: list[str], *, timeout: float | None = None, **popen: Any) -> tuple[int, bytes, bytes]:
        """Run a command to completion: (status, stdout, stderr). Output is captured."""
        done = threading.Event()
        result: list[int] = []

        def finished(_pid: int, status: int) -> None:
            result.append(status)
            done.set()

        popen.setdefault("stdin", subprocess.DEVNULL)
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        proc = self.spawn(argv, **popen)
        self.on_exit(proc.pid, finished)
        out, err = proc.communicate(timeout=timeout) if (proc.stdout or proc.stderr) else (b"", b"")
        if not done.wait(timeout):
            proc.kill()
            done.wait()
        return result[0], out or b"", err or b""

    def spawn(self, argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start a child whose exit is reported only through :meth:`on_exit`.

        The returned Popen is only good for its pid and pipes: its returncode is preset so that
        neither it nor subprocess's cleanup of dropped Popens ever waits on the pid."""
        proc = subprocess.Popen(argv, **popen)
        proc.returncode = 0
        self._have_children.set()
        return proc
