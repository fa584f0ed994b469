"""Terminals: the pty master goes to the engine's console socket, resizes reach the guest, exit
statuses come back through the shim, for the container's process and for `exec --tty`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.oci.conftest import Kata

ENGINE = Path(__file__).with_name("console_engine.py")


def test_console_socket_resize_and_exit_status(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    b = bundle(["sh"], terminal=True)
    r = subprocess.run([sys.executable, str(ENGINE), json.dumps(kata.argv()), cid, str(b), str(tmp_path)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    assert "40 100" in res["init_output"]  # the engine's window size, seen by the guest's terminal
    assert "tty-42" in res["init_output"] and "/dev/pts/" in res["init_output"]
    assert res["init_output"].count("tty-$((6*7))") == 1  # echoed once: the host side is raw
    assert "exec-got-hello" in res["exec_output"]
    assert res["exec_status"] == 3
    assert res["init_status"] == 5
    kata.ok("delete", cid)


def test_terminal_flags_follow_runc(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    r = kata("create", "--bundle", str(bundle(["sh"], terminal=True)), cid)
    assert r.rc != 0 and "console socket" in r.err
    r = kata("create", "--console-socket", str(tmp_path / "s"), "--bundle", str(bundle(["true"])), cid)
    assert r.rc != 0 and "console socket" in r.err


def test_run_in_the_foreground_on_the_users_terminal(kata: Kata, bundle, cid: str) -> None:
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    before = termios.tcgetattr(slave)
    b = bundle(["sh", "-c", "stty size; read x; echo fg-$x-$((2+3)); exit 4"], terminal=True)
    p = subprocess.Popen(kata.argv("run", "--bundle", str(b), cid), stdin=slave, stdout=slave, stderr=slave)
    out = b""
    typed = False
    while p.poll() is None or select.select([master], [], [], 0.2)[0]:
        if select.select([master], [], [], 0.2)[0]:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        if not typed and b"30 90" in out:
            os.write(master, b"typed\n")
            typed = True
        if p.poll() is not None and not select.select([master], [], [], 0.2)[0]:
            break
    assert p.wait(timeout=120) == 4, out
    assert b"30 90" in out and b"fg-typed-5" in out, out
    assert termios.tcgetattr(slave) == before  # the user's terminal mode is restored
    os.close(master)
    os.close(slave)
