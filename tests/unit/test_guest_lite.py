"""guest/lite.py: the agent's C-module stand-ins behave as the standard library they replace."""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.guest import lite

ROOT = Path(__file__).resolve().parents[2]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-2**70, 2**70)
    if kind == 3:
        return rng.uniform(-1e300, 1e300) if rng.random() < 0.5 else rng.random()
    if kind in (4, 5):
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 32), rng.randrange(0x80, 0x2fff),
                                       rng.randrange(0x10000, 0x10ffff), 0x22, 0x5c]))
                       for _ in range(rng.randrange(12)))
    if kind in (6, 7):
        return {str(_value(rng, 9)): _value(rng, depth + 1) for _ in range(rng.randrange(5))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]


@pytest.mark.parametrize("seed", range(300))
def test_json_round_trips_as_the_json_module(seed: int) -> None:
    value = _value(random.Random(seed))
    text = lite.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert lite.loads(text) == json.loads(text)
    pretty = json.dumps(value, indent=2, ensure_ascii=False)
    assert lite.loads(pretty) == json.loads(pretty)
    assert lite.loads(pretty.encode()) == json.loads(pretty)


@pytest.mark.parametrize("text", ["", "   ", "{", "[1,]", '{"a":1} x', "01", "nul", '"\\x"', "{1:2}", "[1] [2]"])
def test_json_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        lite.loads(text)


def test_json_edges() -> None:
    assert lite.loads(" \n{\"a\": [1, 2.5, -0.0, 1e400, NaN]} \r\n")["a"][:3] == [1, 2.5, -0.0]
    assert lite.dumps({"k": float("inf"), 1: None, "é": "\u2028"}) == json.dumps(
        {"k": float("inf"), 1: None, "é": "\u2028"}, separators=(",", ":"))
    assert lite.dumps("x\"y") == '"x\\"y"'
    with pytest.raises(TypeError, match="not JSON serializable"):
        lite.dumps({"a": {1, 2}})
    shared: dict[str, Any] = {}
    assert lite.dumps([shared, shared]) == "[{},{}]"  # the same object twice is not a cycle


def test_json_from_many_threads_at_once() -> None:
    shared = {"a": [1, 2, {"b": "c"}]}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2000):
                assert lite.loads(lite.dumps(shared)) == shared
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_event() -> None:
    ev = lite.Event()
    assert not ev.is_set()
    t0 = time.monotonic()
    assert ev.wait(0.1) is False
    assert time.monotonic() - t0 >= 0.09
    woke: list[bool] = []
    threads = [threading.Thread(target=lambda: woke.append(ev.wait(10))) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    ev.set()
    for t in threads:
        t.join(5)
    assert woke == [True, True, True]
    assert ev.wait() and ev.wait(0)
    ev.clear()
    assert not ev.is_set() and ev.wait(0) is False


def test_start_thread_runs_the_target() -> None:
    done = lite.Event()
    lite.start_thread(done.set, "t")
    assert done.wait(5)


def test_selector_reports_as_selectors_does() -> None:
    sel = lite.Selector()
    a, b = socket.socketpair()
    a.setblocking(False)
    sel.register(a.fileno(), lite.EVENT_READ, "a")
    assert sel.select(0) == []
    b.send(b"x")
    [(key, events)] = sel.select(1)
    assert (key.fd, key.data, events) == (a.fileno(), "a", lite.EVENT_READ)
    sel.modify(a.fileno(), lite.EVENT_READ | lite.EVENT_WRITE, "rw")
    got = dict((k.data, ev) for k, ev in sel.select(1))
    assert got == {"rw": lite.EVENT_READ | lite.EVENT_WRITE}
    sel.modify(a.fileno(), lite.EVENT_WRITE, "w")
    assert sel.get_key(a.fileno()).data == "w"
    assert [ev for _k, ev in sel.select(1)] == [lite.EVENT_WRITE]
    with pytest.raises(KeyError):
        sel.register(a.fileno(), lite.EVENT_READ)
    b.close()  # hang-up: readable and writable, as far as what is registered goes
    sel.modify(a.fileno(), lite.EVENT_READ, "hup")
    assert [ev for _k, ev in sel.select(1)] == [lite.EVENT_READ]
    fd = a.fileno()
    a.close()
    sel.unregister(fd)  # an fd closed first is forgotten quietly
    with pytest.raises(KeyError):
        sel.get_key(fd)
    assert sel.select(0) == []


def test_recv_fds_takes_an_fd_close_on_exec() -> None:
    a, b = socket.socketpair()
    r, w = os.pipe()
    socket.send_fds(a, [b"hi"], [w])
    msg, fds = lite.recv_fds(b, 16, 1)
    assert msg == b"hi" and len(fds) == 1
    assert not os.get_inheritable(fds[0])
    os.write(fds[0], b"z")
    assert os.read(r, 1) == b"z"
    for fd in (r, w, fds[0]):
        os.close(fd)


# The reaper waits for every child of its process: its checks run in a process of their own, so
# that it takes no exit of another test's child.
REAPER_CHECKS = r"""
import os, signal, sys, time
from kata_runtime.guest.reaper import Reaper

reaper = Reaper()

# a command's status and both outputs, larger than a pipe's buffer
status, out, err = reaper.run([sys.executable, "-c", "import sys; sys.stdout.write('o' * 300000); "
                               "sys.stderr.write('e'); sys.exit(3)"])
assert (status, len(out), err) == (3, 300000, b"e"), (status, len(out), err)

# stdin is /dev/null; SIGPIPE, which the agent ignores, is back to its default in the child
signal.signal(signal.SIGPIPE, signal.SIG_IGN)
status, out, _ = reaper.run(["sh", "-c", "cat; yes | head -c 1; echo; grep SigIgn /proc/self/status"])
ignored = int(out.split()[-1], 16)
assert status == 0 and out.startswith(b"y\n") and not ignored & (1 << (signal.SIGPIPE - 1)), out

# killed at its timeout
t0 = time.monotonic()
status, out, _ = reaper.run(["sleep", "30"], timeout=0.3)
assert status == 137 and out == b"" and time.monotonic() - t0 < 5, (status, out)

# a missing program: the error, and no fd left open
before = len(os.listdir("/proc/self/fd"))
try:
    reaper.run(["/nonexistent/program"])
    raise AssertionError("no error")
except FileNotFoundError:
    pass
assert len(os.listdir("/proc/self/fd")) == before

# what the agent opens (close-on-exec) does not reach the child
r, w = os.pipe()
private = os.dup2(r, 200, inheritable=False)
shared = os.dup2(r, 201, inheritable=True)  # the check can tell
status, out, _ = reaper.run(["sh", "-c", "ls /proc/self/fd/200 /proc/self/fd/201 2>/dev/null"])
assert out.split() == [b"/proc/self/fd/201"], out

# an exit reaped before anyone asked is still reported
pid = reaper.spawn(["true"], 0, 1, 2)
time.sleep(0.5)
got = []
reaper.on_exit(pid, lambda p, st: got.append((p, st)))
assert got == [(pid, 0)], got
print("REAPER OK")
"""


def test_reaper() -> None:
    import subprocess

    res = subprocess.run([sys.executable, "-c", REAPER_CHECKS], capture_output=True, text=True, timeout=60,
                         cwd=str(ROOT))
    assert res.returncode == 0 and "REAPER OK" in res.stdout, res.stderr

