"""The VM's size from the spec (kata_runtime.resources), the host cgroup's path, hierarchies, limits
and removal (kata_runtime.cgroups, against directories that stand for /sys/fs/cgroup), and the QEMU
argv that leaves room to hotplug."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kata_runtime import cgroups
from kata_runtime.config import HypervisorConfig
from kata_runtime.errors import InvalidArgument, KataError
from kata_runtime.hypervisor.qemu import QemuVM
from kata_runtime.resources import (
    MIB,
    VMSize,
    format_cpuset,
    growth,
    limits,
    merge,
    parse_cpuset,
    size_for,
    sizing_part,
)

LIM = limits(HypervisorConfig(), host_cpus=2, host_mib=4096)


def cpu(**kw: Any) -> dict[str, Any]:
    return {"cpu": kw}


# -- sizing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,cpus", [("", set()), ("0", {0}), ("0-2,5", {0, 1, 2, 5}), (" 1 , 3-4", {1, 3, 4})])
def test_cpusets_parse_and_format(text: str, cpus: set[int]) -> None:
    assert parse_cpuset(text) == cpus
    assert parse_cpuset(format_cpuset(cpus)) == cpus


@pytest.mark.parametrize("bad", ["a", "1-", "3-1", "-1", "0,,1"])
def test_a_malformed_cpuset_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.cpu\.cpus"):
        parse_cpuset(bad)


def test_the_defaults_are_the_floor() -> None:
    assert size_for(LIM, [{}]) == VMSize(1, 512)
    assert size_for(LIM, [cpu(shares=1024, quota=50000, period=100000)]) == VMSize(1, 512)


@pytest.mark.parametrize("res,vcpus", [
    (cpu(quota=200000, period=100000), 2),
    (cpu(quota=150000, period=100000), 2),  # rounded up
    (cpu(quota=-1, period=100000), 1),  # unlimited
    (cpu(cpus="0-1"), 2),
    (cpu(cpus="1"), 1),
    (cpu(quota=100000, period=100000, cpus="0-1"), 2),  # the larger of the two
])
def test_vcpus_from_quota_period_or_cpus(res: dict[str, Any], vcpus: int) -> None:
    assert size_for(LIM, [res]).vcpus == vcpus


def test_memory_is_the_default_plus_the_limit_rounded_up_to_a_mib() -> None:
    assert size_for(LIM, [{"memory": {"limit": 64 * MIB}}]).memory_mib == 576
    assert size_for(LIM, [{"memory": {"limit": 64 * MIB + 1}}]).memory_mib == 577
    assert size_for(LIM, [{"memory": {"limit": -1}}]).memory_mib == 512


def test_a_pod_needs_the_sum_of_its_containers() -> None:
    pod = [{}, {"memory": {"limit": 100 * MIB}, **cpu(quota=50000, period=100000)},
           {"memory": {"limit": 28 * MIB}, **cpu(quota=100000, period=100000)}]
    assert size_for(LIM, pod) == VMSize(2, 640)


def test_more_than_the_ceilings_is_refused_in_one_line() -> None:
    with pytest.raises(InvalidArgument, match=r"3 CPUs of quota/period need 3 vCPUs, .*default_maxvcpus: 2"):
        size_for(LIM, [cpu(quota=300000, period=100000)])
    with pytest.raises(InvalidArgument, match=r"cpus '0-3' need 4 vCPUs"):
        size_for(LIM, [cpu(cpus="0-3")])
    with pytest.raises(InvalidArgument, match=r"memory\.limit: a VM of 4608 MiB .*default_maxmemory: 4096 MiB"):
        size_for(LIM, [{"memory": {"limit": 4096 * MIB}}])


def test_kata_1x_meaning_of_the_ceilings() -> None:
    assert limits(HypervisorConfig(default_maxvcpus=0), host_cpus=8, host_mib=1000).max_vcpus == 8
    assert limits(HypervisorConfig(default_maxvcpus=64), host_cpus=8, host_mib=1000).max_vcpus == 8
    assert limits(HypervisorConfig(default_maxvcpus=4), host_cpus=8, host_mib=1000).max_vcpus == 4
    assert limits(HypervisorConfig(default_vcpus=-1), host_cpus=8, host_mib=1000).default_vcpus == 8
    assert limits(HypervisorConfig(default_vcpus=0), host_cpus=8, host_mib=1000).default_vcpus == 1
    assert limits(HypervisorConfig(), host_cpus=8, host_mib=24000).max_mib == 24000
    assert limits(HypervisorConfig(default_maxmemory=2048), host_cpus=8, host_mib=24000).max_mib == 2048


def test_growth_never_shrinks_and_adds_whole_memory_blocks() -> None:
    assert growth(VMSize(1, 512), VMSize(2, 576)) == VMSize(1, 128)
    assert growth(VMSize(1, 512), VMSize(1, 800)) == VMSize(0, 384)
    assert growth(VMSize(2, 768), VMSize(1, 512)) == VMSize(0, 0)


def test_an_update_keeps_what_it_leaves_out() -> None:
    now = {"cpu": {"quota": 50000, "period": 100000, "cpus": "0"}, "memory": {"limit": 64 * MIB}}
    assert merge(now, {"cpu": {"quota": 200000, "period": 0}}) == \
        {"cpu": {"quota": 200000, "period": 100000, "cpus": "0"}, "memory": {"limit": 64 * MIB}}
    assert merge(now, {"memory": {"limit": -1}})["memory"] == {"limit": -1}
    assert sizing_part({"cpu": {"shares": 2}, "pids": {"limit": 3}, "devices": []}) == {"cpu": {"shares": 2}}


def test_qemu_leaves_room_to_hotplug() -> None:
    hv = HypervisorConfig(default_maxvcpus=2, default_maxmemory=8192)
    argv = QemuVM("x", hv, Path("/v"), "tcg", Path("/s"), size=VMSize(2, 576)).argv()
    assert argv[argv.index("-smp") + 1] == "2,maxcpus=2"
    assert argv[argv.index("-m") + 1] == "576M,slots=10,maxmem=8192M"
    default = QemuVM("x", hv, Path("/v"), "tcg", Path("/s")).argv()
    assert default[default.index("-smp") + 1] == "1,maxcpus=2"
    assert default[default.index("-m") + 1] == "512M,slots=10,maxmem=8192M"
    # TCG: one thread for all vCPUs where one may be hotplugged (QEMU 7.2's MTTCG aborts then)
    assert default[default.index("-accel") + 1] == "tcg,tb-size=32,thread=single"
    assert argv[argv.index("-accel") + 1] == "tcg,tb-size=32"
    kvm = QemuVM("x", hv, Path("/v"), "kvm", Path("/s")).argv()
    assert kvm[kvm.index("-accel") + 1] == "kvm"


# -- the host cgroup's path ------------------------------------------------------------------------

@pytest.mark.parametrize("path,systemd,want", [
    ("/docker/abc", False, "/docker/abc"),
    ("/a/../b//c/", False, "/b/c"),
    ("rel/x", False, "/vc/rel/x"),
    ("../../escape", False, "/vc/escape"),
    ("", False, "/vc/c1"),
    ("system.slice:docker:abc", False, "/system.slice/docker-abc.scope"),  # Kata 1.x reads it so
    ("system.slice:docker:abc", True, "/system.slice/docker-abc.scope"),
    ("kubepods-burstable-pod1.slice:cri:abc", True,
     "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-abc.scope"),
    ("-.slice:p:n", True, "/p-n.scope"),
    (":p:n", True, "/system.slice/p-n.scope"),
    ("system.slice::n.slice", True, "/system.slice/n.slice"),
    ("", True, "/system.slice/kata-c1.scope"),
])
def test_cgroup_paths(path: str, systemd: bool, want: str) -> None:
    assert cgroups.resolve_path(path, "c1", systemd) == want


@pytest.mark.parametrize("path,systemd,said", [
    ("/docker/abc", True, 'expected cgroupsPath to be of format "slice:prefix:name"'),
    ("a-.slice:p:n", True, "not a valid systemd slice name"),
    ("noslice:p:n", True, "not a systemd slice name"),
    ("/", False, "names the root cgroup"),
])
def test_bad_cgroup_paths_are_refused(path: str, systemd: bool, said: str) -> None:
    with pytest.raises(InvalidArgument, match=said):
        cgroups.resolve_path(path, "c1", systemd)


HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / {root}/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:32 /sub /elsewhere rw,relatime - cgroup cgroup rw,memory
"""


def _fake_v1(root: Path) -> list[cgroups.Hierarchy]:
    hs = cgroups.hierarchies(HYBRID.format(root=root))
    for h in hs:
        Path(h.mount).mkdir(parents=True)
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    return hs


def test_hierarchies_from_mountinfo(tmp_path: Path) -> None:
    hs = cgroups.hierarchies(HYBRID.format(root=tmp_path))
    assert [(h.mount[len(str(tmp_path)):], h.version, h.controllers) for h in hs] == [
        ("/cpu,cpuacct", 1, ("cpu", "cpuacct")), ("/cpuset", 1, ("cpuset",)), ("/memory", 1, ("memory",)),
        ("/systemd", 1, ("name=systemd",)), ("/unified", 2, ())]  # the second memory mount is the same hierarchy
    assert cgroups.version_of(hs) == 1
    assert cgroups.version_of([h for h in hs if h.version == 2]) == 2


def test_v1_cgroup_in_every_hierarchy_with_its_limits(tmp_path: Path) -> None:
    hs = _fake_v1(tmp_path)
    (tmp_path / "memory" / "docker").mkdir()  # the engine's parent exists already
    cg = cgroups.plan("/docker/c1", "c1", False, hs)
    assert cg.dirs == [f"{h.mount}/docker/c1" for h in hs]
    assert f"{tmp_path}/memory/docker" not in cg.made and f"{tmp_path}/cpuset/docker" in cg.made
    for d in cg.dirs:  # the kernel's files of a new cgroup
        os.makedirs(d)
    for d in (f"{tmp_path}/cpuset/docker", f"{tmp_path}/cpuset/docker/c1"):
        Path(d, "cpuset.cpus").write_text("")
        Path(d, "cpuset.mems").write_text("")
    res = cpu(shares=512, quota=150000, period=100000, cpus="1-2")
    cgroups._inherit_cpuset(cg, hs)
    cgroups.set_limits(cg, res, hs)
    c = tmp_path / "cpu,cpuacct" / "docker" / "c1"
    assert (c / "cpu.shares").read_text() == "512" and (c / "cpu.cfs_quota_us").read_text() == "150000"
    assert (c / "cpu.cfs_period_us").read_text() == "100000"
    s = tmp_path / "cpuset" / "docker"
    assert (s / "cpuset.cpus").read_text() == "0-3" and (s / "cpuset.mems").read_text() == "0"  # the parent's
    assert (s / "c1" / "cpuset.cpus").read_text() == "1-2"
    assert not (tmp_path / "memory" / "docker" / "c1" / "memory.limit_in_bytes").exists()  # no memory limit
    cg.cpus = "1-2"
    cgroups.widen_cpuset(cg, "0", hs)
    assert (s / "c1" / "cpuset.cpus").read_text() == "0-2" and cg.cpus == "0-2"


def test_v2_limits(tmp_path: Path) -> None:
    hs = [cgroups.Hierarchy(str(tmp_path), 2, ())]
    cg = cgroups.plan("/k/c1", "c1", False, hs)
    assert cg.version == 2 and cg.dirs == [f"{tmp_path}/k/c1"]
    os.makedirs(cg.dirs[0])
    (tmp_path / "k" / "c1" / "cpu.max").write_text("max 100000\n")
    cgroups.set_limits(cg, cpu(shares=1024, quota=50000), hs)
    assert (tmp_path / "k" / "c1" / "cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "k" / "c1" / "cpu.weight").read_text() == "39"  # runc's conversion of 1024
    with pytest.raises(KataError, match="not supported on cgroup v2"):
        cgroups.set_limits(cg, cpu(realtimeRuntime=1000), hs)
    assert cgroups.shares_to_weight(2) == 1 and cgroups.shares_to_weight(262144) == 10000


def test_a_limit_the_kernel_refuses_is_one_line(tmp_path: Path) -> None:
    hs = [cgroups.Hierarchy(str(tmp_path), 2, ())]
    cg = cgroups.plan("/k/c1", "c1", False, hs)  # the directory is missing: the write fails
    with pytest.raises(KataError, match=r"host cgroup /k/c1: cannot set cpuset.cpus to 0: No such file"):
        cgroups.set_limits(cg, cpu(cpus="0"), hs)


def test_removal_leaves_parents_that_others_use(tmp_path: Path) -> None:
    hs = _fake_v1(tmp_path)
    cg = cgroups.plan("/pod/c1", "c1", False, hs)
    for d in cg.dirs:
        os.makedirs(d)
    other = tmp_path / "cpuset" / "pod" / "c2"
    other.mkdir()
    errors: list[str] = []
    cgroups.remove(cg, errors)
    assert errors == [] and not any(os.path.exists(d) for d in cg.dirs)
    assert other.exists() and not (tmp_path / "memory" / "pod").exists()
    cgroups.remove(cg, errors)  # again: nothing is there, nothing fails
    assert errors == []


def test_check_cpuset_names_what_the_host_has() -> None:
    cgroups.check_cpuset(cpu(cpus="0"), "")
    with pytest.raises(InvalidArgument, match=r"cpu\.cpus '0-999': this host has CPUs 0"):
        cgroups.check_cpuset(cpu(cpus="0-999"), "")
    with pytest.raises(InvalidArgument, match=r"cpu\.mems '7': this host has memory nodes 0"):
        cgroups.check_cpuset(cpu(mems="7"), "")


def test_records_round_trip() -> None:
    cg = cgroups.HostCgroup("/a", 1, ["/x/a"], ["/x/a"], "0")
    assert cgroups.HostCgroup.from_json(cg.to_json()) == cg


def test_pod_cpu_adds_the_members_quotas_as_kata_1x() -> None:
    from kata_runtime.cgroups import pod_cpu

    assert pod_cpu([]) == {"quota": -1}
    assert pod_cpu([{"shares": 512}, {}]) == {"quota": -1, "shares": 512}
    assert pod_cpu([{"quota": 50000, "period": 100000}, {"quota": 25000, "period": 50000}, {"shares": 2}]) == {
        "quota": 100000, "period": 100000, "shares": 2}
    assert pod_cpu([{"quota": 30000}, {"quota": 1, "period": 3}]) == {"quota": 63334, "period": 100000}
