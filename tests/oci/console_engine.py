"""A minimal engine for terminal tests, doing what containerd-shim does around a runtime: it is a
child subreaper (so the kata-shims it has the runtime start become its children and it can collect
their exit status), receives the pty master on a console socket, resizes it, and types into it.

Usage: console_engine.py KATA_ARGV_JSON CONTAINER_ID BUNDLE WORKDIR. Prints one JSON object."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def receive_master(path: Path, run: list[str]) -> tuple[int, subprocess.CompletedProcess[bytes]]:
    """Run ``run`` (a runtime command given --console-socket ``path``) and take the master it sends."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    got: list[int] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
            got.extend(fds)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    res = subprocess.run(run, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t.join(10)
    listener.close()
    if res.returncode != 0 or not got:
        raise SystemExit(json.dumps({"error": f"{run[-4:]}: {res.returncode} {res.stderr.decode()}"}))
    return got[0], res


def read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out


def wait_child(pid: int, timeout: float = 30) -> int | None:
    """Exit status of a child (reparented to us), reaping other orphans on the way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        if got == 0:
            time.sleep(0.05)
    return None


def main() -> None:
    kata, cid, bundle, work = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    result: dict[str, object] = {}

    master, _ = receive_master(work / "console.sock", kata + [
        "create", "--console-socket", str(work / "console.sock"), "--pid-file", str(work / "init.pid"),
        "--bundle", bundle, cid])
    subprocess.run(kata + ["start", cid], check=True, stdout=subprocess.DEVNULL)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    time.sleep(0.3)  # the resize travels: engine -> SIGWINCH to kata-shim -> agent -> guest pty
    os.write(master, b"stty size; echo tty-$((6*7)); tty\n")
    result["init_output"] = read_until(master, b"/dev/pts/").decode(errors="replace")

    exec_master, _ = receive_master(work / "exec.sock", kata + [
        "exec", "--tty", "--detach", "--console-socket", str(work / "exec.sock"),
        "--pid-file", str(work / "exec.pid"), cid, "sh", "-c", "read x; echo exec-got-$x; exit 3"])
    os.write(exec_master, b"hello\n")
    result["exec_output"] = read_until(exec_master, b"exec-got-hello").decode(errors="replace")
    result["exec_status"] = wait_child(int((work / "exec.pid").read_text()))

    os.write(master, b"exit 5\n")
    result["init_status"] = wait_child(int((work / "init.pid").read_text()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
