"""create → start → exec → kill → delete, two containers at once, each in its own VM."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.oci.conftest import Kata


def wait_status(kata: Kata, cid: str, want: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = kata.state(cid)
        if st["status"] == want or time.monotonic() > deadline:
            return st
        time.sleep(0.2)


def proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture
def two_ids(request: pytest.FixtureRequest, cid: str) -> tuple[str, str]:
    other = cid + "b"
    request.node.extra_ids = [other]
    return cid, other


def test_lifecycle_of_two_concurrent_containers(kata: Kata, bundle, two_ids, tmp_path: Path) -> None:
    c1, c2 = two_ids
    b1 = bundle(["sh", "-c", "trap 'echo got-term; exit 42' TERM; echo started; while true; do sleep 0.2; done"])
    b2 = bundle(["sleep", "1000"])
    pid1, pid2 = tmp_path / "c1.pid", tmp_path / "c2.pid"
    out1 = open(tmp_path / "c1.out", "wb")

    # the two creates run at the same time, each boots its own VM
    results: dict[str, subprocess.CompletedProcess] = {}

    def create(c: str, b: Path, pidf: Path, out) -> None:
        with open(tmp_path / f"{c}.err", "wb") as err:
            results[c] = subprocess.run(kata.argv("create", "--bundle", str(b), "--pid-file", str(pidf), c),
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=240)

    threads = [threading.Thread(target=create, args=(c1, b1, pid1, out1)),
               threading.Thread(target=create, args=(c2, b2, pid2, subprocess.DEVNULL))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out1.close()
    for c in (c1, c2):
        assert results[c].returncode == 0, (tmp_path / f"{c}.err").read_text()

    st = kata.state(c1)
    assert st["status"] == "created"
    assert st["pid"] == int(pid1.read_text()) and proc_alive(st["pid"])
    assert st["id"] == c1 and st["bundle"] == str(b1) and st["rootfs"] == str(b1 / "rootfs")
    assert st["ociVersion"] and st["created"].endswith("Z")
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert b"kata-shim" in f.read()

    # a second create with the same id fails and leaves the first alone
    dup = kata("create", "--bundle", str(b1), c1)
    assert dup.rc != 0 and c1 in dup.err and "exists" in dup.err
    assert len(dup.err.strip().splitlines()) == 1
    assert kata.state(c1)["status"] == "created"

    # list shows both, each in its own VM
    listing = json.loads(kata.ok("list", "--format", "json").out)
    assert {c["id"] for c in listing} == {c1, c2}
    table = kata.ok("list").out.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert {line.split()[0] for line in table[1:]} == {c1, c2}
    qemus = subprocess.run(["pgrep", "-f", f"sandbox-({c1}|{c2}) "], capture_output=True, text=True).stdout.split()
    assert len(qemus) == 2

    kata.ok("start", c1)
    kata.ok("start", c2)
    assert kata.state(c1)["status"] == "running"
    assert kata("start", c1).rc != 0  # already running

    # exec in the foreground: output and exit status
    r = kata("exec", c1, "sh", "-c", "echo hi; echo oops >&2; exit 7")
    assert (r.rc, r.out, r.err) == (7, "hi\n", "oops\n")

    # exec --process P.json: a whole OCI process object
    proc = {"args": ["sh", "-c", "echo $GREETING from $(pwd); exit 4"], "env": ["GREETING=hello", "PATH=/bin"],
            "cwd": "/tmp", "user": {"uid": 0, "gid": 0}}
    (tmp_path / "p.json").write_text(json.dumps(proc))
    r = kata("exec", "--process", str(tmp_path / "p.json"), c1)
    assert (r.rc, r.out) == (4, "hello from /tmp\n"), r.err

    # exec --detach leaves a live process named in the pid file
    epid = tmp_path / "exec.pid"
    kata.ok("exec", "--detach", "--pid-file", str(epid), c1, "sleep", "1000")
    shim_pid = int(epid.read_text())
    assert proc_alive(shim_pid)
    ps = kata("exec", c1, "ps", "-o", "args")
    assert "sleep 1000" in ps.out

    # kill TERM reaches a workload that traps it; kill KILL stops any
    kata.ok("kill", c1, "TERM")
    assert wait_status(kata, c1, "stopped")["status"] == "stopped"
    assert b"got-term" in (tmp_path / "c1.out").read_bytes()
    # ps, pause, resume on the other one
    pids = json.loads(kata.ok("ps", "--format", "json", c2).out)
    assert pids == [kata.state(c2)["pid"]]  # the host pid of its kata-shim
    table = kata.ok("ps", c2).out.splitlines()
    assert "PID" in table[0].split() and any("sleep 1000" in row for row in table[1:])
    # update and events: new limits reach the container's cgroup in the guest
    kata.ok("update", "--memory", "64M", "--pids-limit", "20", c2)
    ev = json.loads(kata.ok("events", "--stats", c2).out)
    assert ev["type"] == "stats" and ev["id"] == c2
    assert ev["data"]["memory"]["usage"]["limit"] == 64 << 20
    assert ev["data"]["pids"]["limit"] == 20 and ev["data"]["pids"]["current"] >= 1
    assert ev["data"]["cpu"]["usage"]["total"] > 0
    stream = subprocess.Popen(kata.argv("events", "--interval", "200ms", c2), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    try:
        assert stream.stdout is not None
        lines = [stream.stdout.readline(), stream.stdout.readline()]
        assert all(json.loads(line)["type"] == "stats" for line in lines)
    finally:
        stream.kill()
        stream.wait()

    kata.ok("pause", c2)
    assert kata.state(c2)["status"] == "paused"
    assert kata("exec", c2, "true").rc != 0
    assert kata("pause", c2).rc != 0
    kata.ok("resume", c2)
    assert kata.state(c2)["status"] == "running"
    assert kata("resume", c2).rc != 0
    kata.ok("kill", c2, "KILL")
    st2 = wait_status(kata, c2, "stopped")
    assert st2["status"] == "stopped" and st2["pid"] == 0

    # the engines' cleanup calls succeed on exited containers
    kata.ok("kill", "--all", c1, "9")
    assert kata("kill", c1, "9").rc != 0

    for c in (c1, c2):
        kata.ok("delete", c)
        gone = kata("state", c)
        assert gone.rc != 0 and c in gone.err
    assert not proc_alive(shim_pid)


def test_delete_refuses_running_unless_forced(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    b = bundle(["sleep", "1000"])
    pidf = tmp_path / "pid"
    kata.ok("run", "--detach", "--bundle", str(b), "--pid-file", str(pidf), cid)
    shim = int(pidf.read_text())
    assert kata.state(cid)["status"] == "running"
    r = kata("delete", cid)
    assert r.rc != 0 and "running" in r.err and cid in r.err
    assert kata.state(cid)["status"] == "running"

    # kill -9 of the VM: the container is stopped, delete cleans everything
    qemu = subprocess.run(["pgrep", "-f", f"sandbox-{cid} "], capture_output=True, text=True).stdout.split()
    assert len(qemu) == 1
    os.kill(int(qemu[0]), 9)
    assert wait_status(kata, cid, "stopped")["status"] == "stopped"
    kata.ok("delete", cid)
    assert kata("state", cid).rc != 0
    deadline = time.monotonic() + 5
    while proc_alive(shim) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not proc_alive(shim)


def test_kill_9_of_proxy_and_shim_then_delete_cleans(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    b = bundle(["sleep", "1000"])
    pidf = tmp_path / "pid"
    kata.ok("create", "--bundle", str(b), "--pid-file", str(pidf), cid)
    kata.ok("start", cid)
    proxy = subprocess.run(["pgrep", "-f", f"kata-proxy --sandbox {cid} "], capture_output=True,
                           text=True).stdout.split()
    assert len(proxy) == 1
    os.kill(int(proxy[0]), 9)
    # the shim loses the VM: it exits 255 and the container is stopped
    assert wait_status(kata, cid, "stopped")["status"] == "stopped"
    assert not proc_alive(int(pidf.read_text()))
    r = kata("exec", cid, "true")
    assert r.rc != 0 and cid in r.err
    kata.ok("delete", cid)
    assert kata("state", cid).rc != 0


def test_kill_9_of_the_runtime_during_create_then_delete_cleans(kata: Kata, bundle, cid: str,
                                                                 tmp_path: Path) -> None:
    b = bundle(["sleep", "1000"])
    with open(tmp_path / "create.out", "wb") as out:
        creator = subprocess.Popen(kata.argv("create", "--bundle", str(b), cid), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=out)
    # wait until the VM is being booted, then kill the runtime in the middle of its work
    deadline = time.monotonic() + 60
    while not subprocess.run(["pgrep", "-f", f"sandbox-{cid} "], capture_output=True).stdout:
        assert time.monotonic() < deadline and creator.poll() is None
        time.sleep(0.05)
    creator.kill()
    creator.wait()
    assert kata.state(cid)["status"] == "stopped"  # its creator is gone: nothing will finish it
    kata.ok("delete", cid)
    assert kata("state", cid).rc != 0


def test_delete_of_a_created_container_that_never_started(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    pidf = tmp_path / "pid"
    kata.ok("create", "--bundle", str(bundle(["sh", "-c", "echo never"])), "--pid-file", str(pidf), cid)
    shim = int(pidf.read_text())
    assert kata.state(cid)["status"] == "created"
    kata.ok("delete", cid)  # as runc: a created container is killed and removed without --force
    assert kata("state", cid).rc != 0
    assert not proc_alive(shim)
    assert b"never" not in (kata.log.with_name("out1")).read_bytes()
