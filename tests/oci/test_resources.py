"""linux.resources with real VMs: the VM sized by the spec, update hot-plugging vCPUs and memory,
and the sandbox's cgroup on the host (cgroupfs and systemd forms), gone after delete and after a
kill -9 of the runtime in the middle of create.

Two VMs are booted for the whole module (one sized by its spec, one of the default size that
``update`` grows); each test function checks one behaviour of one of them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kata_runtime import cgroups
from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import Kata, make_bundle

MIB = 1 << 20


class SystemdKata(Kata):
    """kata-runtime with ``--systemd-cgroup``."""

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        base = super().argv(*args, config=config)
        return base[:-len(args)] + ["--systemd-cgroup", *args]


@dataclass
class Sandbox:
    kata: Kata
    cid: str
    cgroup_path: str  # within each hierarchy
    booted: dict[str, int] = field(default_factory=dict)  # what the guest had right after boot

    def sh(self, script: str) -> str:
        return self.kata.ok("exec", self.cid, "sh", "-c", script).out

    def nproc(self) -> int:
        return int(self.sh("nproc"))

    def memtotal_kib(self) -> int:
        return int(re.search(r"MemTotal:\s+(\d+)", self.sh("cat /proc/meminfo")).group(1))  # type: ignore[union-attr]

    def guest_cgroup(self, name: str) -> str:
        """A file of the container's own cgroup in the guest (cgroup v2)."""
        return self.sh(f'g=$(sed -n "s/^0:://p" /proc/self/cgroup); cat "/sys/fs/cgroup$g/{name}"').strip()

    def record(self) -> dict[str, Any]:
        return dict(json.loads((self.kata.root / "sbs" / self.cid / "sandbox.json").read_text()))

    def host_dirs(self) -> list[Path]:
        return [Path(h.mount) / self.cgroup_path.lstrip("/") for h in cgroups.hierarchies()]

    def host_file(self, controller: str, name: str) -> str:
        """A file of the sandbox's host cgroup, in the hierarchy of ``controller`` (v2: the one tree)."""
        hs = cgroups.hierarchies()
        v2 = cgroups.version_of(hs) == 2
        h = next(h for h in hs if (h.version == 2 if v2 else controller in h.controllers))
        return (Path(h.mount) / self.cgroup_path.lstrip("/") / name).read_text().strip()

    def qemu_pid(self) -> int:
        pids = subprocess.run(["pgrep", "-f", f"sandbox-{self.cid} "], capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, pids
        return int(pids[0])

    def delete(self) -> None:
        self.kata("delete", "--force", self.cid)
        left = our_leftovers(self.cid) + sandbox_leftovers(self.kata.root, self.cid)
        assert not left, left


def _boot(tmp: Path, kata: Kata, cid: str, cgroup_path: str, cgroups_field: str,
          resources: dict[str, Any] | None) -> Sandbox:
    b = make_bundle(tmp / "bundle", ["sleep", "100000"])
    spec = json.loads((b / "config.json").read_text())
    spec["linux"]["cgroupsPath"] = cgroups_field
    if resources is not None:
        spec["linux"]["resources"] = resources
    (b / "config.json").write_text(json.dumps(spec))
    kata.ok("create", "--bundle", str(b), cid)
    kata.ok("start", cid)
    sb = Sandbox(kata, cid, cgroup_path)
    sb.booted = {"nproc": sb.nproc(), "memtotal": sb.memtotal_kib()}
    return sb


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A VM sized by its spec: quota/period of 2 CPUs and a 64 MiB memory limit, cgroupfs path."""
    tmp = tmp_path_factory.mktemp("sized")
    cid = "s" + uuid.uuid4().hex[:10]
    kata = Kata(tmp / "root", tmp / "kata.log")
    sb = _boot(tmp, kata, cid, f"/kata-test-{cid}/{cid}", f"/kata-test-{cid}/{cid}",
               {"cpu": {"quota": 200000, "period": 100000, "shares": 512}, "memory": {"limit": 64 * MIB}})
    yield sb
    sb.delete()


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A VM of the default size (1 vCPU, 512 MiB) that the tests grow, its cgroup in systemd's form."""
    tmp = tmp_path_factory.mktemp("grown")
    cid = "g" + uuid.uuid4().hex[:10]
    kata = SystemdKata(tmp / "root", tmp / "kata.log")
    sb = _boot(tmp, kata, cid, f"/system.slice/kata-{cid}.scope", f"system.slice:kata:{cid}", None)
    yield sb
    sb.delete()


# -- the VM sized by its spec ----------------------------------------------------------------------

def test_quota_and_period_of_two_cpus_give_two_vcpus_with_the_limit_in_the_guest(sized: Sandbox) -> None:
    assert sized.booted["nproc"] == 2
    assert sized.guest_cgroup("cpu.max") == "200000 100000"


def test_a_memory_limit_adds_to_the_vm_and_binds_in_the_guest(sized: Sandbox, grown: Sandbox) -> None:
    # the default VM (512 MiB) is the baseline: this one has 64 MiB more
    extra = sized.booted["memtotal"] - grown.booted["memtotal"]
    assert 56 * 1024 < extra <= 64 * 1024, (sized.booted, grown.booted)
    assert sized.guest_cgroup("memory.max") == str(64 * MIB)
    argv = Path(f"/proc/{sized.qemu_pid()}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"-m") + 1].startswith(b"576M,slots=10,maxmem=")
    assert argv[argv.index(b"-smp") + 1] == b"2,maxcpus=2"


def test_the_host_cgroup_holds_qemu_with_all_its_threads_the_proxy_and_the_shim(sized: Sandbox) -> None:
    rec = sized.record()
    qemu, proxy, shim = sized.qemu_pid(), rec["proxy"]["pid"], sized.kata.state(sized.cid)["pid"]
    dirs = sized.host_dirs()
    assert len(dirs) >= 2 and all(d.is_dir() for d in dirs), dirs
    for d in dirs:
        procs = {int(p) for p in (d / "cgroup.procs").read_text().split()}
        assert {qemu, proxy, shim} <= procs, (d, procs)
    threads = {int(t) for t in os.listdir(f"/proc/{qemu}/task")}
    cpu_dir = next(d for d in dirs if (d / "tasks").exists() and (d / "cpu.shares").exists())
    assert threads <= {int(t) for t in (cpu_dir / "tasks").read_text().split()}
    assert f":{sized.cgroup_path}\n" in Path(f"/proc/{shim}/cgroup").read_text()


def test_the_host_cgroup_has_the_cpu_limits_and_no_memory_limit(sized: Sandbox) -> None:
    if cgroups.version_of(cgroups.hierarchies()) == 2:
        assert sized.host_file("cpu", "cpu.max") == "200000 100000"
        return
    assert sized.host_file("cpu", "cpu.cfs_quota_us") == "200000"
    assert sized.host_file("cpu", "cpu.cfs_period_us") == "100000"
    assert sized.host_file("cpu", "cpu.shares") == "512"
    assert int(sized.host_file("memory", "memory.limit_in_bytes")) > 1 << 40  # unlimited, as Kata 1.x


def test_events_reports_the_guests_oom_kill_as_runc_does(sized: Sandbox) -> None:
    """``events`` (no --stats) prints a stats event at once and ``{"type":"oom","id":...}`` as soon
    as the guest's OOM killer ends a process of the container (an exec asking for more than its
    64 MiB limit); ``--stats`` keeps runc's shape (no count of ours in it)."""
    p = subprocess.Popen(sized.kata.argv("events", "--interval", "60s", sized.cid), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        first = json.loads(p.stdout.readline())
        assert first["type"] == "stats" and first["id"] == sized.cid, first
        r = sized.kata("exec", sized.cid, "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
        assert r.rc == 137, (r.rc, r.err)  # SIGKILL by the guest's OOM killer
        line = p.stdout.readline()  # within a second or so; the next stats event is a minute away
        assert json.loads(line) == {"type": "oom", "id": sized.cid}, line
    finally:
        p.kill()
        p.wait()
    data = json.loads(sized.kata.ok("events", "--stats", sized.cid).out)["data"]
    assert set(data) == {"cpu", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"}, data
    assert data["memory"]["usage"]["failcnt"] >= 1


def test_the_host_cgroup_is_gone_after_delete(sized: Sandbox) -> None:
    dirs = sized.host_dirs()
    sized.delete()
    assert not [d for d in dirs if d.exists()]
    assert not [d.parent for d in dirs if d.parent.exists()]  # /kata-test-<id> was made for it


# -- update grows a default VM ----------------------------------------------------------------------

def test_the_systemd_form_is_the_units_path(grown: Sandbox) -> None:
    shim = grown.kata.state(grown.cid)["pid"]
    assert f":/system.slice/kata-{grown.cid}.scope\n" in Path(f"/proc/{shim}/cgroup").read_text()
    assert all(d.is_dir() for d in grown.host_dirs())


def test_update_of_quota_hotplugs_vcpus_and_shows_in_the_host_cgroup(grown: Sandbox) -> None:
    assert grown.booted["nproc"] == 1
    grown.kata.ok("update", "--cpu-period", "100000", "--cpu-quota", "200000", grown.cid)
    assert grown.nproc() == 2
    assert grown.guest_cgroup("cpu.max") == "200000 100000"
    if cgroups.version_of(cgroups.hierarchies()) == 1:
        assert grown.host_file("cpu", "cpu.cfs_quota_us") == "200000"
    assert grown.record()["vcpus"] == 2


def test_update_of_memory_hotplugs_a_dimm(grown: Sandbox) -> None:
    grown.kata.ok("update", "--memory", "200M", grown.cid)
    extra = grown.memtotal_kib() - grown.booted["memtotal"]
    assert extra == 256 * 1024, extra  # 200 MiB in whole 128 MiB memory blocks
    assert grown.guest_cgroup("memory.max") == str(200 * MIB)
    assert grown.record()["memory_mib"] == 768


def test_update_never_shrinks_the_vm(grown: Sandbox) -> None:
    before = grown.memtotal_kib(), grown.nproc()
    grown.kata.ok("update", "--memory", "64M", "--cpu-quota", "50000", grown.cid)
    assert (grown.memtotal_kib(), grown.nproc()) == before
    assert grown.guest_cgroup("memory.max") == str(64 * MIB)  # the lower limit binds in the guest
    assert grown.guest_cgroup("cpu.max") == "50000 100000"


def test_update_beyond_the_ceiling_is_refused_and_changes_nothing(grown: Sandbox) -> None:
    before = grown.guest_cgroup("cpu.max")
    r = grown.kata("update", "--cpu-quota", "500000", grown.cid)
    assert r.rc == 1 and r.err.count("\n") == 1, r.err
    assert f"update {grown.cid}: " in r.err and "default_maxvcpus" in r.err
    assert grown.guest_cgroup("cpu.max") == before


def test_the_systemd_cgroup_is_gone_after_delete(grown: Sandbox) -> None:
    dirs = grown.host_dirs()
    grown.delete()
    assert not [d for d in dirs if d.exists()]


# -- refusals and the killed runtime ----------------------------------------------------------------

@pytest.mark.parametrize("linux,said", [
    ({"resources": {"cpu": {"cpus": f"{os.cpu_count()}"}}}, "this host has CPUs"),
    ({"resources": {"cpu": {"quota": 800000, "period": 100000}}}, "default_maxvcpus"),
    ({"resources": {"memory": {"limit": 1 << 50}}}, "default_maxmemory"),
    ({"cgroupsPath": "/"}, "names the root cgroup"),
])
def test_a_spec_asking_for_too_much_is_refused_before_anything_is_made(
        kata: Kata, bundle: Any, cid: str, linux: dict[str, Any], said: str) -> None:
    b = bundle(["true"])
    spec = json.loads((b / "config.json").read_text())
    spec["linux"].update(linux)
    (b / "config.json").write_text(json.dumps(spec))
    r = kata("create", "--bundle", str(b), cid)
    assert r.rc == 1 and said in r.err and r.err.count("\n") == 1, r.err
    assert not subprocess.run(["pgrep", "-f", f"sandbox-{cid} "], capture_output=True).stdout
    assert not list(Path("/sys/fs/cgroup").glob(f"*/vc/{cid}"))


def test_systemd_cgroup_refuses_a_path_of_another_form(tmp_path: Path, bundle: Any, cid: str) -> None:
    kata = SystemdKata(tmp_path / "root", tmp_path / "kata.log")
    b = bundle(["true"])
    spec = json.loads((b / "config.json").read_text())
    spec["linux"]["cgroupsPath"] = f"/kata-test/{cid}"
    (b / "config.json").write_text(json.dumps(spec))
    r = kata("create", "--bundle", str(b), cid)
    assert r.rc == 1 and 'expected cgroupsPath to be of format "slice:prefix:name"' in r.err, r.err


def test_kill_9_of_the_runtime_during_create_then_delete_force_removes_the_cgroup(
        kata: Kata, bundle: Any, cid: str, tmp_path: Path) -> None:
    b = bundle(["sleep", "1000"])
    spec = json.loads((b / "config.json").read_text())
    spec["linux"]["cgroupsPath"] = f"/kata-test-{cid}/{cid}"
    (b / "config.json").write_text(json.dumps(spec))
    dirs = [Path(h.mount) / f"kata-test-{cid}" / cid for h in cgroups.hierarchies()]
    with open(tmp_path / "create.out", "wb") as out:
        creator = subprocess.Popen(kata.argv("create", "--bundle", str(b), cid), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=out)
    deadline = time.monotonic() + 60  # the cgroup is made, and the VM is booting
    while not subprocess.run(["pgrep", "-f", f"sandbox-{cid} "], capture_output=True).stdout:
        assert time.monotonic() < deadline and creator.poll() is None
        time.sleep(0.05)
    creator.kill()
    creator.wait()
    assert all(d.is_dir() for d in dirs)
    kata.ok("delete", "--force", cid)
    assert not [d for d in dirs if d.exists() or d.parent.exists()]
