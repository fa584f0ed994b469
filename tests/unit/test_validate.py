"""What runc 1.1 refuses, one case per rule, and what it accepts and ignores (kata_runtime.oci.validate).
The same verdicts against the real runc: tests/oci/test_spec_verdicts.py."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.errors import BundleError
from kata_runtime.oci import validate as v
from kata_runtime.oci.guest_spec import translate
from kata_runtime.oci.validate import runc_lenience, validate

Spec = dict[str, Any]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs" / "bin").mkdir(parents=True)
    (tmp_path / "rootfs" / "bin" / "sh").write_text("")
    (tmp_path / "rootfs" / "link").symlink_to("/bin")  # absolute: inside the rootfs, not the host's
    return tmp_path


def check(spec: Spec, bundle: Path, no_pivot: bool = False) -> None:
    validate("c1", spec, bundle, bundle / "rootfs", no_pivot=no_pivot)


def refusal(spec: Spec, bundle: Path, no_pivot: bool = False) -> str:
    with pytest.raises(BundleError) as e:
        check(spec, bundle, no_pivot)
    assert e.value.container == "c1" and e.value.step == "create"
    text = str(e.value)
    assert text.startswith("create c1: ") and "\n" not in text
    return text.removeprefix("create c1: ")


def ns_without(spec: Spec, *kinds: str) -> None:
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] not in kinds]


def test_runc_default_spec_passes(runc_spec: Spec, bundle: Path) -> None:
    check(runc_spec, bundle)


def _hook(path: str) -> Callable[[Spec], None]:
    return lambda s: s.update(hooks={"createRuntime": [{"path": path}]})


RULES: list[tuple[str, Callable[[Spec], Any], str]] = [
    ("no process", lambda s: s.pop("process"), r"^process: missing"),
    ("cwd empty", lambda s: s["process"].update(cwd=""), r"^process.cwd is empty$"),
    ("cwd relative", lambda s: s["process"].update(cwd="tmp"), r'^process.cwd "tmp" is not an absolute path$'),
    ("cwd is a file", lambda s: s["process"].update(cwd="/bin/sh"), r'^process.cwd "/bin/sh" is not a directory'),
    ("cwd through a symlink of the rootfs", lambda s: s["process"].update(cwd="/link/sh"), r"not a directory"),
    ("args empty", lambda s: s["process"].update(args=[]), r"^process.args is empty$"),
    ("env without =", lambda s: s["process"].update(env=["A=1", "FOO"]), r'^process.env\[1\] "FOO" is not NAME='),
    ("env empty name", lambda s: s["process"].update(env=["=x"]), r"has an empty name"),
    ("env NUL", lambda s: s["process"].update(env=["A=x\0y"]), r"^process.env\[0\] contains a NUL byte$"),
    ("uid", lambda s: s["process"]["user"].update(uid=2**31), r"^process.user.uid 2147483648 is out of range"),
    ("gid", lambda s: s["process"]["user"].update(gid=2**32 - 1), r"^process.user.gid 4294967295 is out of"),
    ("additional gid", lambda s: s["process"]["user"].update(additionalGids=[1, 2**31]),
     r"^process.user.additionalGids\[1\]"),
    ("rlimit name", lambda s: s["process"]["rlimits"].append({"type": "RLIMIT_FOO", "hard": 1, "soft": 1}),
     r'^process.rlimits\[1\].type "RLIMIT_FOO" is not a known rlimit$'),
    ("rlimit soft above hard", lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "hard": 1,
                                                                       "soft": 2}]),
     r"^process.rlimits\[0\] \(RLIMIT_NOFILE\): soft limit 2 is above the hard limit 1$"),
    ("oomScoreAdj high", lambda s: s["process"].update(oomScoreAdj=1001), r"^process.oomScoreAdj 1001 is out of"),
    ("oomScoreAdj low", lambda s: s["process"].update(oomScoreAdj=-1001), r"^process.oomScoreAdj -1001 is out of"),
    ("mount NUL", lambda s: s["mounts"].append({"destination": "/x\0", "type": "tmpfs", "source": "t"}),
     r"^mounts\[\d+\] \(/x\x00\): destination contains a NUL byte$"),
    ("bind type without bind option", lambda s: s["mounts"].append({"destination": "/m", "type": "bind",
                                                                     "source": "/tmp", "options": ["ro"]}),
     r"^mounts\[\d+\] \(/m\): type bind without a bind or rbind option"),
    ("bind source missing", lambda s: s["mounts"].append({"destination": "/m", "source": "nope",
                                                           "options": ["rbind"]}),
     r"^mounts\[\d+\] \(/m\): bind mount source nope does not exist$"),
    ("device rule type", lambda s: s["linux"]["resources"].update(devices=[{"allow": True, "type": "u"}]),
     r'^linux.resources.devices\[0\].type "u" is not a, b or c$'),
    ("device rule access", lambda s: s["linux"]["resources"].update(devices=[{"allow": True, "access": ""}]),
     r"^linux.resources.devices\[0\].access is empty$"),
    ("swap below limit", lambda s: s["linux"]["resources"].update(memory={"limit": 20, "swap": 10}),
     r"^linux.resources.memory.swap 10 is below memory.limit 20"),
    ("swap without limit", lambda s: s["linux"]["resources"].update(memory={"swap": 10}),
     r"^linux.resources.memory.swap 10 is set without memory.limit$"),
    ("propagation", lambda s: s["linux"].update(rootfsPropagation="bogus"),
     r'^linux.rootfsPropagation "bogus" is not one of private, rprivate, slave'),
    ("namespace type", lambda s: s["linux"]["namespaces"].append({"type": "time"}),
     r'^linux.namespaces\[\d\].type "time" is not a known namespace type$'),
    ("namespace twice", lambda s: s["linux"]["namespaces"].append({"type": "ipc"}),
     r"^linux.namespaces: the ipc namespace is listed twice$"),
    ("namespace path relative", lambda s: ns_without(s, "network") or s["linux"]["namespaces"].append(
        {"type": "network", "path": "ns/net"}),
     r"^linux.namespaces: network namespace ns/net is not an absolute path$"),
    ("namespace path missing", lambda s: ns_without(s, "ipc") or s["linux"]["namespaces"].append(
        {"type": "ipc", "path": "/run/netns/nope"}),
     r"^linux.namespaces: ipc namespace /run/netns/nope does not exist$"),
    ("namespace path not a namespace", lambda s: ns_without(s, "ipc") or s["linux"]["namespaces"].append(
        {"type": "ipc", "path": "/etc/hostname"}),
     r"^linux.namespaces: ipc namespace /etc/hostname is not a namespace$"),
    ("namespace path of another type", lambda s: ns_without(s, "uts") or s["linux"]["namespaces"].append(
        {"type": "uts", "path": "/proc/self/ns/net"}),
     r"^linux.namespaces: uts namespace /proc/self/ns/net is a network namespace, not a uts one$"),
    ("user namespace without uid mappings", lambda s: s["linux"]["namespaces"].append({"type": "user"}),
     r"^linux.uidMappings: a user namespace needs uid mappings$"),
    ("user namespace without gid mappings", lambda s: s["linux"]["namespaces"].append({"type": "user"}) or
     s["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 1}]),
     r"^linux.gidMappings: a user namespace needs gid mappings$"),
    ("user namespace without root", lambda s: s["linux"]["namespaces"].append({"type": "user"}) or s["linux"].update(
        uidMappings=[{"containerID": 1, "hostID": 1000, "size": 5}], gidMappings=[{"containerID": 0, "hostID": 1000,
                                                                                  "size": 1}]),
     r"^linux.uidMappings: no mapping for uid 0"),
    ("hostname without uts", lambda s: ns_without(s, "uts"), r'^hostname "runc" needs a uts namespace'),
    ("masked paths without mount namespace", lambda s: ns_without(s, "mount"),
     r"^linux.maskedPaths/readonlyPaths need a mount namespace"),
    ("seccomp flags", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "flags": ["X"]}),
     r"^linux.seccomp.flags are not supported"),
    ("seccomp arch", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW",
                                                          "architectures": ["SCMP_ARCH_RISCV64"]}),
     r'^linux.seccomp.architectures\[0\] "SCMP_ARCH_RISCV64" is not a known architecture$'),
    ("seccomp notify default", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOTIFY"}),
     r"^linux.seccomp.defaultAction SCMP_ACT_NOTIFY cannot be the default"),
    ("seccomp empty name", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", ""], "action": "SCMP_ACT_ERRNO"}]}), r"^linux.seccomp.syscalls\[0\].names\[1\] is empty$"),
    ("seccomp notify write", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["write"], "action": "SCMP_ACT_NOTIFY"}], "listenerPath": "/x"}), r"for the write syscall$"),
    ("seccomp notify listener", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}), r"SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath$"),
    ("seccomp arg index", lambda s: s["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
     r"^linux.seccomp.syscalls\[0\].args\[0\].index 6 is out of range 0-5$"),
    ("sysctl ipc", lambda s: ns_without(s, "ipc") or s["linux"].update(sysctl={"kernel/shmmax": "1"}),
     r'^linux.sysctl "kernel.shmmax" is not allowed in the host\'s ipc namespace'),
    ("sysctl mqueue", lambda s: ns_without(s, "ipc") or s["linux"].update(sysctl={"fs.mqueue.msg_max": "1"}),
     r'^linux.sysctl "fs.mqueue.msg_max" is not allowed in the host\'s ipc'),
    ("sysctl net without netns", lambda s: ns_without(s, "network") or s["linux"].update(sysctl={"net.x": "1"}),
     r'^linux.sysctl "net.x" is not allowed in the host\'s network namespace'),
    ("sysctl net in the host's netns", lambda s: ns_without(s, "network") or s["linux"]["namespaces"].append(
        {"type": "network", "path": "/proc/self/ns/net"}) or s["linux"].update(sysctl={"net.x": "1"}),
     r"host's network namespace \(/proc/self/ns/net\)$"),
    ("sysctl hostname", lambda s: s["linux"].update(sysctl={"kernel.hostname": "x"}), r"conflicts with the hostname"),
    ("sysctl domainname without uts", lambda s: ns_without(s, "uts") or s.update(hostname="") or s["linux"].update(
        sysctl={"kernel.domainname": "x"}), r'^linux.sysctl "kernel.domainname" is not in a separate kernel'),
    ("sysctl not namespaced", lambda s: s["linux"].update(sysctl={"vm.swappiness": "1"}),
     r'^linux.sysctl "vm.swappiness" is not in a separate kernel namespace'),
    ("sysctl missing", lambda s: s["linux"].update(sysctl={"fs.mqueue.nope": "1"}),
     r'^linux.sysctl "fs.mqueue.nope" does not exist$'),
    ("intelRdt closID", lambda s: s["linux"].update(intelRdt={"closID": ".."}), r'^linux.intelRdt.closID ".."'),
    ("intelRdt schema", lambda s: s["linux"].update(intelRdt={"memBwSchema": "MB:0=1"}),
     r"^linux.intelRdt.memBwSchema is set, but Intel RDT is not available"),
    ("hook missing", _hook("/no/hook"), r"^hooks.createRuntime\[0\]: /no/hook does not exist$"),
    ("hook relative to the bundle", _hook("rootfs"), r"^hooks.createRuntime\[0\]: rootfs is not an executable file$"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in RULES], ids=[n for n, _, _ in RULES])
def test_rule(runc_spec: Spec, bundle: Path, change: Callable[[Spec], Any], message: str) -> None:
    spec = copy.deepcopy(runc_spec)
    change(spec)
    text = refusal(spec, bundle)
    assert re.search(message, text), text


def test_what_runc_accepts_passes(runc_spec: Spec, bundle: Path) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["process"]["cwd"] = "/does/not/exist/yet"  # made by the runtime
    spec["linux"].update(rootfsPropagation="rslave", sysctl={"net/ipv4/ip_forward": "1", "kernel.shmmax": "1",
                                                             "kernel.domainname": "x", "fs.mqueue.msg_max": "1"},
                         intelRdt={"closID": "k"}, uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}])
    spec["process"]["capabilities"]["bounding"].append("CAP_NOT_REAL")
    spec["mounts"].append({"destination": "relative", "type": "tmpfs", "source": "tmpfs"})
    spec["mounts"].append({"destination": "/m", "type": "none", "source": "rootfs", "options": ["rbind"]})
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}]}
    spec["hooks"] = {"prestart": [{"path": "/bin/true"}], "poststop": [{"path": "/not/checked/at/create"}]}
    check(spec, bundle)
    ns_without(spec, "uts")
    spec.pop("hostname")
    del spec["linux"]["sysctl"]["kernel.domainname"]
    check(spec, bundle)  # no hostname, no uts namespace


def test_cwd_under_a_mount_is_not_looked_at(runc_spec: Spec, bundle: Path) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["process"]["cwd"] = "/bin/sh/work"
    spec["mounts"].append({"destination": "/bin/sh", "type": "tmpfs", "source": "tmpfs"})
    check(spec, bundle)


def test_private_propagation_needs_pivot_root(runc_spec: Spec, bundle: Path) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["linux"]["rootfsPropagation"] = "rprivate"
    check(spec, bundle)
    assert "not safe without pivot_root (--no-pivot)" in refusal(spec, bundle, no_pivot=True)
    spec["linux"]["rootfsPropagation"] = "rslave"
    check(spec, bundle, no_pivot=True)


def test_rootfs_through_a_symlink(runc_spec: Spec, bundle: Path) -> None:
    (bundle / "link").symlink_to("rootfs")
    spec = copy.deepcopy(runc_spec)
    spec["root"]["path"] = "link"
    assert "reached through a symlink" in refusal(spec, bundle)
    spec["root"]["path"] = str(bundle / "rootfs")
    check(spec, bundle)


@pytest.mark.parametrize(("field", "where"), [("selinuxLabel", "process"), ("apparmorProfile", "process"),
                                              ("mountLabel", "linux")])
def test_labels_need_the_lsm_on_the_host(runc_spec: Spec, bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                         field: str, where: str) -> None:
    spec = copy.deepcopy(runc_spec)
    spec[where][field] = "label"
    monkeypatch.setattr(v, "selinux_enabled", lambda: False)
    monkeypatch.setattr(v, "apparmor_enabled", lambda: False)
    assert refusal(spec, bundle).startswith(f'{where}.{field} "label" is set, but ')
    monkeypatch.setattr(v, "selinux_enabled", lambda: True)
    monkeypatch.setattr(v, "apparmor_enabled", lambda: True)
    check(spec, bundle)  # runc would apply it; the guest cannot, and translate drops it


def test_namespace_paths_of_the_right_type_pass(runc_spec: Spec, bundle: Path) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["linux"]["namespaces"] = [{"type": t, "path": f"/proc/self/ns/{n}"} for t, n in
                                   (("pid", "pid"), ("ipc", "ipc"), ("uts", "uts"), ("mount", "mnt"))]
    spec["linux"]["namespaces"].append({"type": "network"})
    check(spec, bundle)


def test_sysctl_names_with_slashes() -> None:
    assert v._dotted("net/ipv4/conf/eth0.100/rp_filter") == "net.ipv4.conf.eth0/100.rp_filter"
    assert v._dotted("net.ipv4.ip_forward") == "net.ipv4.ip_forward"
    assert v._dotted("kernel/shmmax") == "kernel.shmmax"


def test_runc_lenience(runc_spec: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v, "last_capability", lambda: 37)  # a kernel without CAP_PERFMON and later
    spec = copy.deepcopy(runc_spec)
    caps = spec["process"]["capabilities"]
    caps["bounding"] += ["CAP_NOT_REAL", "CAP_BPF", "cap_kill"]
    caps["inheritable"] = ["CAP_NOT_REAL"]
    spec["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1, "size": 1}], gidMappings=[],
                         intelRdt={"closID": "k"}, rootfsPropagation="", sysctl={"net/ipv4/ip_forward": "1"})
    spec["mounts"].append({"destination": "tmp", "type": "tmpfs", "source": "tmpfs"})
    notes = runc_lenience(spec)
    assert caps["bounding"] == runc_spec["process"]["capabilities"]["bounding"] and caps["inheritable"] == []
    assert "uidMappings" not in spec["linux"] and "gidMappings" not in spec["linux"]
    assert "intelRdt" not in spec["linux"] and "rootfsPropagation" not in spec["linux"]
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"} and spec["mounts"][-1]["destination"] == "/tmp"
    assert notes == [
        "process.capabilities.bounding: ignoring unknown or unavailable capabilities CAP_NOT_REAL, CAP_BPF, cap_kill",
        "process.capabilities.inheritable: ignoring unknown or unavailable capabilities CAP_NOT_REAL",
        "linux.uidMappings: ignored without a user namespace",
        "linux.intelRdt: ignored (no resctrl in the VM)",
        f"mounts[{len(spec['mounts']) - 1}]: destination tmp is not absolute: taken relative to the rootfs"]
    assert runc_lenience(spec) == []  # nothing left to change


def test_translate_makes_the_guest_spec_lenient_and_refuses_notify(runc_spec: Spec, bundle: Path) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["process"]["capabilities"]["ambient"] = ["CAP_KILL", "CAP_NOT_REAL"]
    spec["linux"]["sysctl"] = {"net/ipv4/ip_forward": "1"}
    g = translate("c1", spec, bundle, bundle / "rootfs")
    assert g.spec["process"]["capabilities"]["ambient"] == ["CAP_KILL"]
    assert g.sandbox_sysctls == {"net.ipv4.ip_forward": "1"} and "sysctl" not in g.spec["linux"]
    assert spec["process"]["capabilities"]["ambient"] == ["CAP_KILL", "CAP_NOT_REAL"]  # the input is not changed
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    with pytest.raises(BundleError, match="SCMP_ACT_NOTIFY is not supported"):
        translate("c1", spec, bundle, bundle / "rootfs")


def test_namespace_type_probe(tmp_path: Path) -> None:
    assert v.namespace_type("/proc/self/ns/net") == v.NAMESPACE_FLAGS["network"]
    assert v.namespace_type("/proc/self/ns/mnt") == v.NAMESPACE_FLAGS["mount"]
    (tmp_path / "f").write_text("")
    assert v.namespace_type(str(tmp_path / "f")) is None
    with pytest.raises(OSError):
        v.namespace_type(str(tmp_path / "nope"))
