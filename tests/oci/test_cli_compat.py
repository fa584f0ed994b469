"""kata-runtime beside runc 1.1 on the same input: the same command sequences on both, exit codes
and the gist of the messages compared, and each status's answers to state, kill, delete, exec, ps,
start, pause and resume. Four VM boots in all: one container walked through every status, one
created and deleted, and the config.json of ``spec`` and ``spec --rootless`` run as they are."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shlex
import shutil
import socket
import subprocess
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import KATA, Kata, Result, make_bundle

RUNC = shutil.which("runc") or "/usr/sbin/runc"

pytestmark = pytest.mark.skipif(not os.path.exists(RUNC), reason="runc is not installed")


class Runc(Kata):
    """runc with a private root, called exactly as :class:`Kata` calls kata-runtime."""

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        return [RUNC, "--root", str(self.root), "--log", str(self.log), "--log-format", "json", *args]


@pytest.fixture
def runc(tmp_path: Path) -> Any:
    r = Runc(tmp_path / "runc-root", tmp_path / "runc.log")
    yield r
    if r.root.exists():  # whatever a failed test left
        for cid in os.listdir(r.root):
            subprocess.run(r.argv("delete", "--force", cid), capture_output=True)


def status_of(rt: Kata, cid: str) -> str:
    r = rt("state", cid)
    return str(json.loads(r.out)["status"]) if r.rc == 0 else "gone"


def wait_for(rt: Kata, cid: str, status: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (now := status_of(rt, cid)) != status and time.monotonic() < deadline:
        time.sleep(0.2)
    return now


@dataclass
class Step:
    """One command of a sequence, run on runc and on kata-runtime.

    Both must exit with the same status; when they fail, each one's error line must hold ``gist``
    (with ``{id}`` and ``{tmp}`` filled in); ``out`` (if given) must say the same of both stdouts;
    ``then`` is the status to wait for before the next step."""

    args: str
    gist: str = ""
    out: Callable[[str], Any] | None = None
    then: str = ""


def _status(out: str) -> tuple[str, bool]:
    st = json.loads(out)
    return st["status"], st["pid"] > 0


def _rows(out: str) -> list[bool]:
    """The rows of a ps table, each: is it the workload (columns differ: procps's -x adds the
    environment after the command)."""
    return sorted("sleep 1000" in line for line in out.splitlines()[1:] if line.strip())


def _json_count(out: str) -> int:
    return len(json.loads(out) or [])


SIGNALS = ["kill {id} 0", "kill {id} CONT", "kill {id} SIGCONT", "kill {id} cont", "kill {id} 18"]

# One container walked through every status; the id is the same on both (their roots differ).
LIFECYCLE = [
    # created: state, exec (in its namespaces, before start), signals, what start refuses
    Step("state {id}", out=_status),
    Step("exec {id} hostname", out=str),
    Step("exec {id} sh -c 'echo hi; exit 7'", out=str),
    Step("exec {id} nosuchcmd", gist="not found in $PATH"),
    *(Step(s) for s in SIGNALS),
    Step("kill --all {id} 0"),
    Step("kill {id} FOO", gist='unknown signal "FOO"'),
    Step("kill {id} 99"),
    Step("pause {id}", then="paused"),  # runc 1.1 freezes a created container's init too
    Step("state {id}", out=_status),
    Step("start {id}", gist="cannot start a container in the paused state"),
    Step("resume {id}", then="created"),
    Step("state {id}", out=_status),
    Step("start {id}", then="running"),
    # running
    Step("state {id}", out=_status),
    Step("start {id}", gist="cannot start an already running container"),
    Step("kill {id}"),  # SIGTERM, ignored by a pid-1 sleep
    *(Step(s) for s in SIGNALS),
    Step("kill --all {id} CONT"),
    Step("kill -a {id} 0"),
    Step("exec {id} sh -c 'exit 7'"),
    Step("exec {id} nosuchcmd", gist="not found in $PATH"),
    Step("exec {id} sh -c 'kill -9 $$'"),  # 128+9, like any process
    Step("exec --pid-file {tmp}/nodir/p {id} true", gist="no such file or directory"),
    Step("exec --pid-file {tmp} {id} true"),
    Step("exec --pid-file {tmp}/exec.pid {id} true"),
    Step("exec -t -d --console-socket {tmp}/nosuch {id} true", gist="no such file or directory"),
    Step("exec -t -d --console-socket {tmp} {id} true", gist="connection refused"),
    Step("exec -t --console-socket {tmp}/nosuch {id} true", gist="cannot use console socket"),
    Step("ps {id}", out=_rows),
    Step("ps {id} -e -x", out=_rows),
    Step("ps -- {id} -e -x", out=_rows),
    Step("ps {id} -o pid,args", out=_rows),
    Step("ps -f json {id}", out=_json_count),
    Step("ps --format xml {id}", gist="invalid format option"),
    Step("resume {id}", gist="container not paused"),
    Step("delete {id}", gist="cannot delete container {id} that is not stopped: running"),
    Step("pause {id}", then="paused"),
    # paused
    Step("state {id}", out=_status),
    Step("pause {id}", gist="container not running"),
    Step("start {id}", gist="cannot start a container in the paused state"),
    Step("exec {id} true", gist="cannot exec in a paused container"),
    Step("kill {id} 0"),  # (not --all: runc 1.1 thaws the cgroup after signalling all)
    Step("delete {id}", gist="cannot delete container {id} that is not stopped: paused"),
    Step("resume {id}", then="running"),
    Step("pause {id}", then="paused"),
    Step("kill {id} KILL", then="stopped"),  # a frozen workload dies too
    # stopped
    Step("state {id}", out=_status),
    Step("kill {id} KILL", gist="container not running"),
    Step("kill {id} 0", gist="container not running"),
    Step("kill --all {id} KILL"),  # what the engines' clean-up sends
    Step("exec {id} true", gist="cannot exec in a stopped container"),
    Step("start {id}", gist="cannot start a container that has stopped"),
    Step("pause {id}", gist="container not running"),
    Step("resume {id}", gist="container not paused"),
    Step("ps {id}", out=_rows),
    Step("ps {id} -e -x", out=_rows),
    Step("ps -f json {id}", out=str),  # "null"
    Step("delete {id}", then="gone"),
    # gone
    Step("state {id}", gist="container does not exist"),
    Step("kill {id} KILL", gist="container does not exist"),
    Step("kill --all {id} KILL", gist="container does not exist"),
    Step("exec {id} true", gist="container does not exist"),
    Step("start {id}", gist="container does not exist"),
    Step("ps {id}", gist="container does not exist"),
    Step("delete {id}", gist="container does not exist"),
    Step("delete --force {id}"),
]


def run_both(steps: list[Step], runtimes: dict[str, Kata], cid: str, tmp: Path) -> list[str]:
    """Run ``steps`` on each runtime in turn (step by step, side by side); the differences."""
    problems: list[str] = []
    for step in steps:
        argv = [a.format(id=cid, tmp=tmp) for a in shlex.split(step.args)]
        got: dict[str, Result] = {name: rt(*argv, timeout=120) for name, rt in runtimes.items()}
        if step.then:
            for name, rt in runtimes.items():
                if (now := wait_for(rt, cid, step.then)) != step.then:
                    problems.append(f"{step.args}: {name} is {now}, not {step.then}")
        runc, kata = got["runc"], got["kata"]
        where = f"{step.args}: runc {runc.rc} {runc.err.strip()!r} | kata {kata.rc} {kata.err.strip()!r}"
        if runc.rc != kata.rc:
            problems.append(f"exit codes differ: {where}")
            continue
        gist = step.gist.format(id=cid, tmp=tmp).lower()
        if runc.rc != 0 and gist and not all(gist in r.err.lower() for r in (runc, kata)):
            problems.append(f"messages differ ({gist!r}): {where}")
        if kata.rc != 0 and kata.err.strip() and len(kata.err.strip().splitlines()) != 1:
            problems.append(f"not one line: {where}")
        if step.out is not None and runc.rc == 0:
            ours, theirs = step.out(kata.out), step.out(runc.out)
            if ours != theirs:
                problems.append(f"{step.args}: runc says {theirs!r}, kata {ours!r}")
    return problems


def test_every_status_answers_as_runcs(kata: Kata, runc: Runc, bundle, cid: str, tmp_path: Path) -> None:
    runtimes: dict[str, Kata] = {"runc": runc, "kata": kata}
    for name, rt in runtimes.items():
        rt.debug = name == "kata"  # --debug: the create's phases go to the JSON log
        r = rt("create", "--bundle", str(bundle(["sleep", "1000"])), cid)
        assert r.rc == 0, f"{name} create: {r.err}"
        rt.debug = False
    debug = [e["msg"] for e in map(json.loads, kata.log.read_text().splitlines()) if e["level"] == "debug"]
    assert any(m.startswith("kata-runtime ") and " create " in m for m in debug), debug
    assert any(m.startswith("phase container_created ") for m in debug), debug
    problems = run_both(LIFECYCLE, runtimes, cid, tmp_path)
    assert not problems, "\n".join(problems)
    assert not (tmp_path / "nodir").exists() and not (tmp_path / "exec.pid").is_dir()


def test_a_created_container_is_deleted_without_force(kata: Kata, runc: Runc, bundle, cid: str,
                                                      tmp_path: Path) -> None:
    runtimes: dict[str, Kata] = {"runc": runc, "kata": kata}
    for name, rt in runtimes.items():
        fifo = tmp_path / f"{name}.pid"
        os.mkfifo(fifo)  # a FIFO as the pid file is replaced by the file, as by runc
        r = rt("create", "--pid-file", str(fifo), "--bundle", str(bundle(["sleep", "1000"])), cid)
        assert r.rc == 0, f"{name} create: {r.err}"
        assert fifo.is_file() and int(fifo.read_text()) == rt.state(cid)["pid"]
    steps = [Step("kill {id} 0"), Step("ps -f json {id}", out=_json_count), Step("delete {id}", then="gone"),
             Step("state {id}", gist="container does not exist")]
    problems = run_both(steps, runtimes, cid, tmp_path)
    assert not problems, "\n".join(problems)


# -- paths the engines give, checked before anything is made (no VM boots) -------------------------------

BAD_PATHS = [
    # (what, flags, terminal, gist both say)
    ("pid file in a missing directory", ["--pid-file", "{tmp}/nodir/p"], False, "no such file or directory"),
    ("pid file under a file", ["--pid-file", "{tmp}/file/p"], False, "not a directory"),
    ("pid file that is a directory", ["--pid-file", "{tmp}"], False, ""),
    ("missing console socket", ["--console-socket", "{tmp}/nosuch"], True, "no such file or directory"),
    ("console socket in a missing directory", ["--console-socket", "{tmp}/nodir/s"], True,
     "no such file or directory"),
    ("console socket that is a directory", ["--console-socket", "{tmp}"], True, "connection refused"),
    ("console socket that is a FIFO", ["--console-socket", "{tmp}/fifo"], True, "connection refused"),
    ("console socket that is a file", ["--console-socket", "{tmp}/file"], True, "connection refused"),
    ("console socket without a terminal", ["--console-socket", "{tmp}/sock"], False, "cannot use console socket"),
]


@pytest.mark.parametrize(("what", "flags", "terminal", "gist"), BAD_PATHS, ids=[c[0] for c in BAD_PATHS])
def test_bad_paths_are_refused_before_anything_starts(kata: Kata, runc: Runc, bundle, cid: str, tmp_path: Path,
                                                      what: str, flags: list[str], terminal: bool,
                                                      gist: str) -> None:
    (tmp_path / "file").write_text("")
    os.mkfifo(tmp_path / "fifo")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "sock"))
    listener.listen(1)
    argv = [f.format(tmp=tmp_path) for f in flags]
    b = bundle(["true"], terminal=terminal)
    try:
        results = {name: rt("create", *argv, "--bundle", str(b), cid, timeout=60)
                   for name, rt in (("runc", runc), ("kata", kata))}
    finally:
        listener.close()
    for name, r in results.items():
        assert r.rc == 1, f"{name}: {r.rc} {r.err}"
        assert gist.lower() in r.err.lower(), f"{name}: {r.err}"
        assert "does not exist" in (runc if name == "runc" else kata)("state", cid).err  # nothing kept
    lines = results["kata"].err.strip().splitlines()
    assert len(lines) == 1 and cid in lines[0] and "Traceback" not in lines[0], lines
    assert kata.log_errors() and cid in kata.log_errors()[-1]["msg"]
    assert not our_leftovers(cid) and not sandbox_leftovers(kata.root, cid)
    assert not (tmp_path / "nodir").exists()


# -- the config.json of `spec` and `spec --rootless`, run as it is ----------------------------------------


def run_on_a_terminal(argv: list[str], typed: bytes, timeout: float = 180) -> tuple[int, bytes]:
    """Run ``argv`` in a new session whose controlling terminal is a fresh pty (runc opens /dev/tty),
    type ``typed`` once it prints anything, and return its exit status and what the terminal showed."""
    master, slave = os.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    os.close(slave)
    out = b""
    typed_yet = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready = select.select([master], [], [], 0.2)[0]
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave is closed
                    break
                if not chunk:
                    break
                out += chunk
            if not typed_yet and out:
                os.write(master, typed)
                typed_yet = True
            if p.poll() is not None and not ready:
                break
        return p.wait(timeout=max(1.0, deadline - time.monotonic())), out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)


@pytest.mark.parametrize("rootless", [False, True], ids=["spec", "spec --rootless"])
def test_the_spec_runs_as_it_is_and_run_keep_keeps_it(kata: Kata, runc: Runc, cid: str, tmp_path: Path,
                                                      rootless: bool) -> None:
    # the terminal echoes what is typed: the marker is computed, so that only the output has it
    typed = b"echo m$((6*7)) $(cat /proc/self/uid_map) net-$(tail -n +3 /proc/net/dev | wc -l); exit 3\n"
    seen: dict[str, bytes] = {}
    for name, rt in (("runc", runc), ("kata", kata)):
        b = make_bundle(tmp_path / f"bundle-{name}", ["true"])
        (b / "config.json").unlink()
        spec = [KATA, "spec", "--bundle", str(b)] + (["--rootless"] if rootless else [])
        subprocess.run(spec, check=True)  # the same file for both: ours, as it is
        code, out = run_on_a_terminal(rt.argv("run", "--keep", "--bundle", str(b), cid), typed)
        assert code == 3, f"{name}: {code} {out!r}"
        seen[name] = out
        assert rt.state(cid)["status"] == "stopped"  # --keep: still there
        rt.ok("delete", cid)
        assert "does not exist" in rt("state", cid).err
    for name, out in seen.items():
        text = out.decode(errors="replace")
        words = text[text.index("m42 "):].split()[:5] if "m42 " in text else []
        # root is root (with --rootless: a user namespace mapping us, uid 0, to root), in a network
        # namespace of its own with only lo in it (no veth was put there)
        assert words == ["m42", "0", "0", "1" if rootless else "4294967295", "net-1"], (name, out)
