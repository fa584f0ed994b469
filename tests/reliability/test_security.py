"""What protects the host: state and sockets that only root can reach, a kata-proxy that serves
only root (or its own user), and symlinks in a bundle that never lead us outside it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_runtime.daemons import BIN_DIR
from kata_runtime.protocol import mux
from kata_runtime.store import SandboxStore
from tests.reliability.helpers import Kata, leftovers, settled

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"]
# What one idle kata-proxy may add to a bare `python3 -S` in private (anonymous) memory. Its PSS
# goal (DESIGN.md: 4.5 MB) is the benchmark's to measure: PSS shares the interpreter's pages among
# every process that maps them, so alone on a quiet machine one proxy counts nearly all of them.
PROXY_EXTRA_PRIVATE_KB = 1536


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def as_nobody(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, code, *args], capture_output=True, text=True, timeout=30)


def test_state_and_sockets_are_root_only(kata: Kata, cid: str, bundle, template_config: Path) -> None:
    kata.config = template_config
    kata.ok("create", "--bundle", str(bundle(["sleep", "1000"])), cid)
    try:
        store = SandboxStore(kata.root)
        sock_dir = store.socket_dir(cid)
        shared = Path(json.loads((store.sandbox_dir(cid) / "sandbox.json").read_text())["shared_dir"])
        for d in (store.sbs, store.sandbox_dir(cid), store.vms, store.vm_dir(cid), sock_dir, shared):
            assert mode(d) == 0o700, f"{d}: {oct(mode(d))}"
        for f in store.sandbox_dir(cid).iterdir():
            assert mode(f) & 0o077 == 0, f"{f}: {oct(mode(f))}"
        assert mode(store.proxy_socket(cid)) == 0o600
        sockets = [p for p in sock_dir.iterdir() if p.is_socket()]
        assert {p.name for p in sockets} >= {"proxy.sock", "qmp.sock"}, sockets
        for p in sockets:  # nobody cannot connect (nor list the directories)
            r = as_nobody("import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])", str(p))
            assert r.returncode != 0 and "PermissionError" in r.stderr, (p, r.stderr)
        r = as_nobody("import sys; open(sys.argv[1]).read()", str(store.sandbox_dir(cid) / "sandbox.json"))
        assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr
    finally:
        kata("delete", "--force", cid)


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory that nobody can reach (tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="kata-sec-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _frames(chan: socket.socket, wait: float) -> bytes:
    chan.settimeout(wait)
    data = b""
    try:
        while True:
            got = chan.recv(65536)
            if not got:
                break
            data += got
    except TimeoutError:
        pass
    return data


def private_dirty_kb(pid: int) -> int:
    """The process's private dirty memory (its heap and the interpreter's objects), which unlike
    PSS does not depend on what else runs on the machine."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))


def bare_interpreter_private_kb() -> int:
    """Private dirty memory of ``python3 -S`` that has imported what every daemon of ours imports."""
    bare = subprocess.Popen([sys.executable, "-S", "-c", "import os, select, socket, struct, sys\n"
                             "sys.stdout.write('1'); sys.stdout.flush(); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert bare.stdout is not None and bare.stdout.read(1) == b"1"
        time.sleep(0.1)
        return private_dirty_kb(bare.pid)
    finally:
        bare.kill()
        bare.wait()


def test_proxy_serves_only_root_and_stays_small(public_dir: Path) -> None:
    """A kata-proxy whose socket is (made) world-writable still drops a client of another user at
    once (SO_PEERCRED): no stream is opened to the agent. Root's client gets its stream. One idle
    proxy's private memory is little more than a bare interpreter's."""
    chan_path, listen = public_dir / "chan.sock", public_dir / "proxy.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(chan_path))
    server.listen(1)
    rfd, wfd = os.pipe()
    proxy = subprocess.Popen([sys.executable, "-S", str(BIN_DIR / "kata-proxy"), "--sandbox", "sec", "--channel",
                              str(chan_path), "--listen", str(listen), "--ready-fd", str(wfd)], pass_fds=(wfd,))
    os.close(wfd)
    try:
        chan, _ = server.accept()
        assert os.read(rfd, 1) == b"1"
        assert mode(listen) == 0o600
        _frames(chan, 0.3)  # what the proxy says to a new session (RESET)
        listen.chmod(0o777)  # as if a mistake made it reachable: the peer check must still hold
        r = as_nobody("import socket, sys\ns = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                      "s.settimeout(5)\ntry:\n    s.sendall(b'x' * 64); print(len(s.recv(100)))\n"
                      "except (BrokenPipeError, ConnectionResetError):\n    print(0)", str(listen))
        assert r.returncode == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)  # closed at once
        assert _frames(chan, 0.5) == b"", "the proxy opened a stream for nobody"
        with socket.socket(socket.AF_UNIX) as mine:
            mine.connect(str(listen))
            assert _frames(chan, 1.0).startswith(mux.encode(mux.OPEN, 1))
        time.sleep(0.2)
        mine_kb, bare_kb = private_dirty_kb(proxy.pid), bare_interpreter_private_kb()
        print(f"kata-proxy private {mine_kb} kB, bare python3 -S {bare_kb} kB")
        assert mine_kb <= bare_kb + PROXY_EXTRA_PRIVATE_KB, (
            f"kata-proxy's private memory {mine_kb} kB > bare interpreter {bare_kb} + {PROXY_EXTRA_PRIVATE_KB} kB")
    finally:
        os.close(rfd)
        proxy.kill()
        proxy.wait()
        server.close()


def test_symlinks_never_lead_outside(kata: Kata, cid: str, bundle, template_config: Path,
                                     public_dir: Path) -> None:
    """A rootfs with links out of the bundle (``../../..``, absolute), a mount source that is a
    link to a file outside it and mount destinations through those links: nothing outside the
    bundle is written, mounted or deleted, whatever create does with them; delete leaves nothing."""
    kata.config = template_config
    victim = public_dir / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious\n")
    (victim / "empty").write_text("")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in victim.iterdir()}
    b = bundle(["sh", "-c", "echo pwned > /escape/pwned; echo pwned > /abs/pwned; echo pwned > /mnt/src; true"])
    rootfs = b / "rootfs"
    os.symlink("../" * 12 + str(victim).lstrip("/"), rootfs / "escape")
    os.symlink(str(victim), rootfs / "abs")
    os.symlink(str(victim / "empty"), b / "link-src")
    (b / "vol").mkdir()
    spec = json.loads((b / "config.json").read_text())
    spec["root"]["readonly"] = False
    spec["mounts"] += [
        {"destination": "/mnt/src", "type": "bind", "source": str(b / "link-src"), "options": ["rbind", "ro"]},
        {"destination": "/escape/dest", "type": "bind", "source": str(b / "vol"), "options": ["rbind"]},
        {"destination": "/abs/dest", "type": "bind", "source": str(b / "vol"), "options": ["rbind"]},
    ]
    (b / "config.json").write_text(json.dumps(spec))
    r = kata("run", "--bundle", str(b), cid, timeout=120)
    kata("delete", "--force", cid)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in victim.iterdir()}
    assert after == before, f"run (rc {r.rc}: {r.err.strip()}) changed {victim}: {after}"
    assert not [line for line in open("/proc/self/mountinfo") if str(victim) in line]
    assert not list(Path("/etc").glob("pwned*"))
    assert not settled(lambda: leftovers(kata, cid))
