"""Child reaping for the agent, which is PID 1 (or a subreaper) and so inherits every orphan.

All waiting on children goes through one thread doing ``waitpid(-1)``; nothing else may call
``wait*`` (another wait would race with it and report 0 for a failed command).
"""

from __future__ import annotations

import _signal
import os
import time

from kata_runtime.guest import lite

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from collections.abc import Callable

    ExitCallback = Callable[[int, int], None]

PR_SET_CHILD_SUBREAPER = 36


def exit_status(wait_status: int) -> int:
    """Shell-style status: the exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


class Reaper:
    """Reaps every child; runs callbacks registered for the pids we care about."""

    def __init__(self) -> None:
        self._lock = lite.Lock()
        self._waiters: dict[int, list[ExitCallback]] = {}
        self._unclaimed: dict[int, int] = {}  # pid -> status of exits nobody asked for yet
        self._have_children = lite.Event()
        if os.getpid() != 1:
            try:
                lite.libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            except (OSError, AttributeError):
                pass
        lite.start_thread(self._loop, "reaper")

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

    def run(self, argv: list[str], *, timeout: float | None = None) -> tuple[int, bytes, bytes]:
        """Run a command to completion, stdin on /dev/null: (status, stdout, stderr). A command
        still running after ``timeout`` seconds is killed (status 137, what it wrote dropped)."""
        done = lite.Event()
        result: list[int] = []

        def finished(_pid: int, status: int) -> None:
            result.append(status)
            done.set()

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid = self.spawn(argv, null, out_w, err_w)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (null, out_w, err_w):
                os.close(fd)
        self.on_exit(pid, finished)
        deadline = None if timeout is None else time.monotonic() + timeout
        outputs = lite.read_pipes([out_r, err_r], timeout)
        if outputs is None or not done.wait(None if deadline is None else deadline - time.monotonic()):
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            done.wait()
        out, err = outputs or (b"", b"")
        return result[0], out, err

    def spawn(self, argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
        """Start a child with the given stdio fds; its pid. Its exit is reported only through
        :meth:`on_exit`."""
        pid = lite.spawn(argv, stdin, stdout, stderr)
        self._have_children.set()
        return pid
