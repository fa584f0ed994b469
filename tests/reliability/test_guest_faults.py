"""Faults inside the guest, with real VMs (clones of the module's template): the agent dies (a
container in the VM's pid namespace interrupts PID 1, the agent), the guest never answers (QEMU
stopped with SIGSTOP), a process floods its stdout, a container allocates beyond the VM's memory.
Each gives one clear line naming the container, a truthful ``state``, and the engine's ``kill
--all ID 9`` + ``delete --force ID`` leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.oci.conftest import _toml
from tests.reliability.helpers import Kata, leftovers, one_clear_line, settled

MIB = 1 << 20
REQUEST_TIMEOUT = 5  # [agent.kata] request_timeout of these tests: how long a call waits for a silent guest


def with_agent_timeout(cfg: Path, where: Path) -> Path:
    """``cfg`` (the module's template configuration) with a short agent request timeout (the
    template's inputs do not include it: the clones still come from the same template)."""
    data = tomllib.loads(cfg.read_text())
    data.setdefault("agent", {}).setdefault("kata", {})["request_timeout"] = REQUEST_TIMEOUT
    out = where / "configuration-timeout.toml"
    out.write_text("\n".join(_toml(data)) + "\n")
    return out


def qemu_pid(kata: Kata, cid: str) -> int:
    return int((kata.root / "vm" / cid / "pid").read_text())


def vm_shared_pid_ns(b: Path) -> Path:
    """The bundle's container in the VM's pid namespace (no ``pid`` entry: the agent is its PID 1)."""
    spec = json.loads((b / "config.json").read_text())
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "pid"]
    (b / "config.json").write_text(json.dumps(spec))
    return b


def status_within(kata: Kata, cid: str, want: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = kata.state(cid)["status"]
    while status != want and time.monotonic() < deadline:
        time.sleep(0.2)
        status = kata.state(cid)["status"]
    return str(status)


def engine_cleanup(kata: Kata, cid: str, cgroup: str = "") -> dict[str, float]:
    """The engine's clean-up (``kill --all ID 9``, ``delete --force ID``): both succeed, nothing is
    left; how long each took."""
    took = {}
    for step in (("kill", "--all", cid, "9"), ("delete", "--force", cid)):
        t0 = time.monotonic()
        r = kata(*step, timeout=120)
        took[step[0]] = time.monotonic() - t0
        assert r.rc == 0, f"{' '.join(step)}: {r.err}"
    left = settled(lambda: leftovers(kata, cid, cgroup))
    assert not left, "\n".join(left)
    return took


def test_the_agent_dies(kata: Kata, cid: str, bundle, template_config: Path) -> None:
    """A container in the VM's pid namespace sends SIGINT to PID 1 (the agent): the agent's launcher
    powers the VM off, QEMU exits; ``state`` says stopped, ``exec`` refuses in one line."""
    kata.config = template_config
    kata.ok("create", "--bundle", str(vm_shared_pid_ns(bundle(["sleep", "1000"]))), cid)
    kata.ok("start", cid)
    qemu = qemu_pid(kata, cid)
    r = kata("exec", cid, "kill", "-INT", "1", timeout=60)
    print(f"the exec that interrupted the agent: {r.rc} {r.err.strip()!r}")
    assert status_within(kata, cid, "stopped", 30) == "stopped"
    assert not Path(f"/proc/{qemu}").exists() or "Z" in Path(f"/proc/{qemu}/stat").read_text().split()[2]
    line = one_clear_line(kata("exec", cid, "true", timeout=60), cid)
    print(f"exec after the agent died: {line}")
    engine_cleanup(kata, cid)


def test_the_guest_never_answers(kata: Kata, cid: str, bundle, template_config: Path, tmp_path: Path) -> None:
    """QEMU is stopped (SIGSTOP): ``state`` answers at once (QEMU and the shim still exist: the
    container is running, frozen), ``exec`` gives up after the request timeout in one line, and
    ``kill --all 9`` + ``delete --force`` end it in bounded time."""
    kata.config = with_agent_timeout(template_config, tmp_path)
    kata.ok("create", "--bundle", str(bundle(["sleep", "1000"])), cid)
    kata.ok("start", cid)
    qemu = qemu_pid(kata, cid)
    os.kill(qemu, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        assert kata.state(cid)["status"] == "running"
        assert time.monotonic() - t0 < 3
        t0 = time.monotonic()
        r = kata("exec", cid, "true", timeout=120)
        took = time.monotonic() - t0
        line = one_clear_line(r, cid)
        assert "did not answer" in line, line
        assert took < REQUEST_TIMEOUT + 10, took
        print(f"exec into a stopped guest: {took:.1f}s: {line}")
        times = engine_cleanup(kata, cid)
        print(f"clean-up of a stopped guest: {times}")
        assert times["delete"] < 2 * REQUEST_TIMEOUT + 20, times
    finally:
        if Path(f"/proc/{qemu}").exists():
            os.kill(qemu, signal.SIGCONT)


def private_memory(pid: int) -> int:
    """Private (RSS minus shared) bytes of ``pid``, 0 once it is gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    except OSError:
        return 0
    return sum(int(fields[k].split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty") if k in fields)


def our_pids(cid: str, name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"{name}.*{cid}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_process_floods_its_stdout(kata: Kata, cid: str, bundle, template_config: Path, tmp_path: Path) -> None:
    """The container's init writes without end to a stdout that the engine reads at full speed
    (/dev/null), and an exec writes without end to a pipe that nobody reads: ``state``, ``exec``
    and ``ps`` keep answering, and kata-shim's and kata-proxy's memory stays flat."""
    kata.config = template_config
    b = bundle(["sh", "-c", "yes flood-of-the-init-process"])
    with open(os.devnull, "wb") as null, open(tmp_path / "create.err", "w+b") as err:
        p = subprocess.run(kata.argv("create", "--bundle", str(b), cid), stdin=subprocess.DEVNULL, stdout=null,
                           stderr=err, timeout=180)
    assert p.returncode == 0, (tmp_path / "create.err").read_text()
    kata.ok("start", cid)
    rfd, wfd = os.pipe()  # the exec's stdout: never read
    try:
        with open(tmp_path / "exec.err", "w+b") as err:  # its kata-shim keeps stderr open
            p = subprocess.run(kata.argv("exec", "--detach", cid, "sh", "-c", "yes flood-of-an-exec"),
                               stdin=subprocess.DEVNULL, stdout=wfd, stderr=err, timeout=180)
        assert p.returncode == 0, (tmp_path / "exec.err").read_text()
        os.close(wfd)
        wfd = -1
        proxy = our_pids(cid, "kata-proxy")
        shims = our_pids(cid, "kata-shim")
        watched = shims + proxy
        assert len(shims) == 2 and watched, (shims, proxy)
        samples: list[dict[int, int]] = []
        answers: list[float] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            samples.append({pid: private_memory(pid) for pid in watched})
            t0 = time.monotonic()
            assert kata.state(cid)["status"] == "running"
            r = kata.ok("exec", cid, "echo", "hi", timeout=60)
            assert r.out == "hi\n", r.out
            assert kata.ok("ps", cid).out.count("\n") >= 2
            answers.append(time.monotonic() - t0)
        first, last = samples[0], samples[-1]
        growth = {pid: last[pid] - first[pid] for pid in watched}
        print(f"under a flood: state+exec+ps {min(answers):.2f}-{max(answers):.2f}s ({len(answers)} rounds), "
              f"private memory growth {[f'{g / MIB:.1f} MiB' for g in growth.values()]}")
        assert max(answers) < 20, answers
        assert all(g < 4 * MIB for g in growth.values()), growth
    finally:
        if wfd >= 0:
            os.close(wfd)
        os.close(rfd)
    engine_cleanup(kata, cid)


def test_a_container_allocates_beyond_the_vms_memory(kata: Kata, cid: str, bundle, template_config: Path,
                                                     request: pytest.FixtureRequest) -> None:
    """A process wants more memory than the VM has (512 MiB): the guest's OOM killer ends it with
    SIGKILL, its status is runc's 137, the agent survives (the next exec answers), ``state`` and
    ``events --stats`` say the truth; the same for a container's init (``run`` exits 137)."""
    kata.config = template_config
    kata.ok("create", "--bundle", str(bundle(["sleep", "1000"])), cid)
    kata.ok("start", cid)
    meminfo = dict(line.split(":", 1) for line in kata.ok("exec", cid, "cat", "/proc/meminfo").out.splitlines())
    total_kib = int(meminfo["MemTotal"].split()[0])
    # one buffer just under the VM's memory (a larger one is refused by malloc: overcommit's
    # heuristic), filled at once by dd's read: more than is left beside the kernel and the agent
    hog = ["dd", "if=/dev/zero", "of=/dev/null", f"bs={total_kib - 8 * 1024}k", "count=1"]
    r = kata("exec", cid, *hog, timeout=300)
    assert r.rc == 137, (r.rc, r.err)
    assert kata.ok("exec", cid, "echo", "alive").out == "alive\n"
    assert kata.state(cid)["status"] == "running"
    stats: dict[str, Any] = json.loads(kata.ok("events", "--stats", cid).out)["data"]
    usage = stats["memory"]["usage"]
    print(f"after the OOM kill: memory usage {usage['usage'] / MIB:.0f} MiB, peak {usage['max'] / MIB:.0f} MiB "
          f"of {total_kib // 1024} MiB")
    assert usage["max"] > total_kib * 1024 // 2 and usage["usage"] < 64 * MIB, usage  # it grew, and was ended
    engine_cleanup(kata, cid)

    init = f"{cid}-init"
    request.node.extra_ids = [init]
    r = kata("run", "--bundle", str(bundle(hog)), init, timeout=300)
    assert r.rc == 137, (r.rc, r.err)
    assert not settled(lambda: leftovers(kata, init))


def test_delete_force_of_a_guest_that_never_answers(kata: Kata, cid: str, bundle, template_config: Path) -> None:
    """``delete --force`` alone (the configured 60 s request timeout) of a stopped guest: its SIGKILL
    to the workload is given up after 10 s, the VM goes (no flush asked of it), nothing is left."""
    kata.config = template_config
    kata.ok("create", "--bundle", str(bundle(["sleep", "1000"])), cid)
    kata.ok("start", cid)
    qemu = qemu_pid(kata, cid)
    os.kill(qemu, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = kata("delete", "--force", cid, timeout=180)
        took = time.monotonic() - t0
        assert r.rc == 0, r.err
        print(f"delete --force of a stopped guest: {took:.1f}s")
        assert took < 20, took
        assert not settled(lambda: leftovers(kata, cid))
    finally:
        if Path(f"/proc/{qemu}").exists():
            os.kill(qemu, signal.SIGCONT)
