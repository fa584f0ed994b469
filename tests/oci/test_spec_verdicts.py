"""runc's verdicts: each bad or borderline spec goes, in the same bundle, through ``runc create``
(a private --root; deleted again when it accepts) and ``kata-runtime create``, and the verdicts
must be the same. Nearly all cases are ones runc refuses, so that ours fail fast in validation
(one line, no traceback, the error in --log, nothing left behind); two both accept (a VM each).

The cases are a deterministic list, built from families of bad values per field; each names the
field our refusal must name. ``DIFFERENT`` holds what we refuse and runc 1.1 accepts, on purpose.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.oci.validate import apparmor_enabled, selinux_enabled
from tests.oci.conftest import Kata, make_bundle

RUNC = "/usr/sbin/runc"
Spec = dict[str, Any]
Change = Callable[[Spec, Path], None]

pytestmark = pytest.mark.skipif(not os.access(RUNC, os.X_OK), reason="runc is the reference")


@dataclass(frozen=True)
class Case:
    name: str
    change: Change
    words: tuple[str, ...] = ()  # what our refusal must say (the field)
    accept: bool = False  # runc's verdict on this host
    args: tuple[str, ...] = ()  # more create flags, for both


def _ns(spec: Spec) -> list[dict[str, Any]]:
    return list(spec["linux"]["namespaces"])


def without_ns(*kinds: str) -> Change:
    def change(spec: Spec, _b: Path) -> None:
        spec["linux"]["namespaces"] = [n for n in _ns(spec) if n["type"] not in kinds]
        if "uts" in kinds:
            spec.pop("hostname", None)
        if "mount" in kinds:
            spec["linux"].pop("maskedPaths", None)
            spec["linux"].pop("readonlyPaths", None)
    return change


def ns_path(kind: str, path: str) -> Change:
    def change(spec: Spec, _b: Path) -> None:
        spec["linux"]["namespaces"] = [n for n in _ns(spec) if n["type"] != kind] + [{"type": kind, "path": path}]
    return change


def setting(*path: str, value: Any) -> Change:
    def change(spec: Spec, _b: Path) -> None:
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = copy.deepcopy(value)
    return change


def both(*changes: Change) -> Change:
    def change(spec: Spec, b: Path) -> None:
        for c in changes:
            c(spec, b)
    return change


def appended(*path: str, item: Any) -> Change:
    def change(spec: Spec, _b: Path) -> None:
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], []).append(copy.deepcopy(item))
    return change


def sysctl(key: str, value: str = "1") -> Change:
    return setting("linux", "sysctl", value={key: value})


def seccomp(**fields: Any) -> Change:
    return setting("linux", "seccomp", value={"defaultAction": "SCMP_ACT_ALLOW", **fields})


def one_call(action: str = "SCMP_ACT_ERRNO", names: tuple[str, ...] = ("mkdir",), **more: Any) -> dict[str, Any]:
    return {"names": list(names), "action": action, **more}


def hook(kind: str, path: str) -> Change:
    return setting("hooks", value={kind: [{"path": path}]})


def _file_in_bundle(name: str, mode: int, then: Change) -> Change:
    def change(spec: Spec, b: Path) -> None:
        (b / name).write_text("#!/bin/sh\nexit 0\n")
        (b / name).chmod(mode)
        then(spec, b)
    return change


def _rootfs_link(spec: Spec, b: Path) -> None:
    (b / "link").symlink_to(spec["root"]["path"])
    spec["root"]["path"] = "link"


def _cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    # process (runc's validateProcessSpec and its init)
    for i, cwd in enumerate(("", "tmp", "./tmp", "a/b", "bin/../tmp", "~/x")):
        add(Case(f"cwd-{i}", setting("process", "cwd", value=cwd), ("process.cwd",)))
    add(Case("cwd-is-a-file", setting("process", "cwd", value="/bin/busybox"), ("process.cwd", "not a directory")))
    add(Case("args-empty", setting("process", "args", value=[]), ("process.args",)))
    add(Case("no-process", lambda s, _b: s.pop("process"), ("process",)))
    for i, env in enumerate((["FOO"], ["=x"], ["="], ["A=1", "BAD"], ["X\u0000Y=1"], ["X=a\u0000b"])):
        add(Case(f"env-{i}", setting("process", "env", value=env), ("process.env",)))
    for i, (key, value) in enumerate((("uid", 2**31), ("uid", 2**32 - 1), ("gid", 2**31),
                                      ("additionalGids", [0, 2**32 - 1]))):
        add(Case(f"user-{key}-{i}", setting("process", "user", key, value=value), (f"process.user.{key}",)))
    for name in ("RLIMIT_FOO", "RLIMIT_NOFILES", "RLIMIT_X"):
        add(Case(f"rlimit-{name}", appended("process", "rlimits", item={"type": name, "hard": 1, "soft": 1}),
                 ("process.rlimits", name)))
    for name in ("RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_NPROC"):
        add(Case(f"rlimit-soft-above-hard-{name}", setting("process", "rlimits",
                                                           value=[{"type": name, "hard": 10, "soft": 11}]),
                 ("process.rlimits", "soft")))
    for adj in (1001, -1001, 5000, -99999):
        add(Case(f"oom-score-adj-{adj}", setting("process", "oomScoreAdj", value=adj), ("process.oomScoreAdj",)))
    if not selinux_enabled():
        add(Case("selinux-label", setting("process", "selinuxLabel", value="system_u:system_r:container_t:s0"),
                 ("process.selinuxLabel",)))
        add(Case("mount-label", setting("linux", "mountLabel", value="system_u:object_r:container_file_t:s0"),
                 ("linux.mountLabel",)))
    if not apparmor_enabled():
        add(Case("apparmor-profile", setting("process", "apparmorProfile", value="docker-default"),
                 ("process.apparmorProfile",)))
    # root
    add(Case("rootfs-missing", setting("root", "path", value="nope"), ("rootfs",)))
    add(Case("rootfs-is-a-file", setting("root", "path", value="config.json"), ("rootfs",)))
    add(Case("rootfs-through-a-symlink", _rootfs_link, ("root.path", "symlink")))
    # mounts
    bind = {"destination": "/mnt", "type": "bind", "options": ["rbind"]}
    for i, source in enumerate(("/nonexistent", "relative-nonexistent", "/tmp/../nonexistent/x")):
        add(Case(f"bind-source-missing-{i}", appended("mounts", item=dict(bind, source=source)),
                 ("mounts[", "does not exist")))
    add(Case("bind-source-missing-ro", appended("mounts", item=dict(bind, source="/nope", options=["rbind", "ro"])),
             ("mounts[", "does not exist")))
    for options in ([], ["ro"], ["rprivate", "nosuid"]):
        add(Case(f"bind-type-without-bind-option-{len(options)}",
                 appended("mounts", item={"destination": "/mnt", "type": "bind", "source": "/tmp",
                                          "options": options}), ("mounts[", "bind")))
    add(Case("mount-nul-byte", appended("mounts", item={"destination": "/mnt", "type": "tmpfs",
                                                        "source": "tmp\u0000fs"}), ("mounts[", "NUL")))
    # namespaces
    for kind in ("pid", "network", "mount", "ipc", "uts"):
        add(Case(f"ns-twice-{kind}", appended("linux", "namespaces", item={"type": kind}),
                 ("linux.namespaces", kind, "twice")))
    add(Case("ns-unknown-time", appended("linux", "namespaces", item={"type": "time"}), ("linux.namespaces",)))
    for kind, path, words in (
            ("network", "/run/netns/nope", ("does not exist",)), ("network", "/etc/hostname", ("not a namespace",)),
            ("network", "/tmp", ("not a namespace",)), ("network", "/proc/self/ns/ipc", ("ipc namespace",)),
            ("network", "/proc/self/ns/mnt", ("mount namespace",)), ("ipc", "/nonexistent/ipc", ("does not exist",)),
            ("uts", "/proc/self/ns/net", ("network namespace",)), ("pid", "relative/pid", ("pid namespace",)),
            ("mount", "/proc/self/ns/pid", ("pid namespace",)), ("ipc", "/etc", ("not a namespace",))):
        add(Case(f"ns-path-{kind}-{path.strip('/').replace('/', '-')}", ns_path(kind, path),
                 ("linux.namespaces",) + words))
    user = appended("linux", "namespaces", item={"type": "user"})
    maps = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    add(Case("userns-without-mappings", user, ("linux.uidMappings",)))
    add(Case("userns-without-gid-mappings", both(user, setting("linux", "uidMappings", value=maps)),
             ("linux.gidMappings",)))
    add(Case("userns-without-root", both(user, setting("linux", "uidMappings", value=[
        {"containerID": 1, "hostID": 100000, "size": 10}]), setting("linux", "gidMappings", value=maps)),
        ("linux.uidMappings", "uid 0")))
    for name in ("runc", "example.com"):
        add(Case(f"hostname-without-uts-{name}", both(without_ns("uts"), setting("hostname", value=name)),
                 ("hostname", "uts")))
    for key in ("maskedPaths", "readonlyPaths"):
        add(Case(f"{key}-without-mount-ns",
                 both(without_ns("mount"), setting("linux", key, value=["/proc/kcore"])), ("mount namespace",)))
    # sysctls, as runc's validator
    for key in ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue.msg_max", "kernel/shmmax"):
        add(Case(f"sysctl-{key.replace('/', '-slash-')}-without-ipc", both(without_ns("ipc"), sysctl(key, "100")),
                 ("linux.sysctl", "ipc")))
    for key in ("net.ipv4.ip_forward", "net/core/somaxconn"):
        add(Case(f"sysctl-{key.replace('/', '-slash-')}-without-net", both(without_ns("network"), sysctl(key)),
                 ("linux.sysctl", "network")))
    add(Case("sysctl-net-in-host-netns", both(ns_path("network", "/proc/self/ns/net"), sysctl("net.ipv4.ip_forward")),
             ("linux.sysctl", "network namespace")))
    for key in ("vm.swappiness", "kernel.pid_max", "fs.file-max", "kernel.sysrq", "dev.raid.speed_limit_max",
                "kernel.shmfoo", "user.max_user_namespaces"):
        add(Case(f"sysctl-{key}-not-namespaced", sysctl(key, "10"), ("linux.sysctl", "not in a separate")))
    add(Case("sysctl-kernel.hostname", sysctl("kernel.hostname", "x"), ("linux.sysctl", "hostname")))
    add(Case("sysctl-kernel.domainname-without-uts", both(without_ns("uts"), sysctl("kernel.domainname", "x")),
             ("linux.sysctl",)))
    add(Case("sysctl-fs.mqueue-nonexistent", sysctl("fs.mqueue.nonexistent"), ("linux.sysctl", "does not exist")))
    # propagation
    for value in ("bogus", "RPRIVATE", "recursive"):
        add(Case(f"rootfs-propagation-{value}", setting("linux", "rootfsPropagation", value=value),
                 ("linux.rootfsPropagation",)))
    for value in ("private", "rprivate"):
        add(Case(f"rootfs-propagation-{value}-no-pivot", setting("linux", "rootfsPropagation", value=value),
                 ("linux.rootfsPropagation", "--no-pivot"), args=("--no-pivot",)))
    # seccomp
    for flag in ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"):
        add(Case(f"seccomp-flag-{flag}", seccomp(flags=[flag]), ("linux.seccomp.flags",)))
    for arch in ("SCMP_ARCH_RISCV64", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64"):
        add(Case(f"seccomp-arch-{arch}", seccomp(architectures=["SCMP_ARCH_X86_64", arch]),
                 ("linux.seccomp.architectures",)))
    add(Case("seccomp-default-action-bogus", setting("linux", "seccomp", value={"defaultAction": "SCMP_ACT_BOGUS"}),
             ("linux.seccomp.defaultAction",)))
    add(Case("seccomp-action-bogus", seccomp(syscalls=[one_call("SCMP_ACT_BOGUS")]), ("linux.seccomp.syscalls",)))
    add(Case("seccomp-empty-name", seccomp(syscalls=[one_call(names=("",))]), ("linux.seccomp.syscalls", "names")))
    for index in (6, 7, 100):
        add(Case(f"seccomp-arg-index-{index}", seccomp(syscalls=[one_call(args=[
            {"index": index, "value": 1, "op": "SCMP_CMP_EQ"}])]), ("linux.seccomp.syscalls", "index")))
    add(Case("seccomp-operator-bogus", seccomp(syscalls=[one_call(args=[
        {"index": 1, "value": 1, "op": "SCMP_CMP_BOGUS"}])]), ("linux.seccomp.syscalls",)))
    add(Case("seccomp-notify-default", setting("linux", "seccomp", value={"defaultAction": "SCMP_ACT_NOTIFY"}),
             ("SCMP_ACT_NOTIFY",)))
    add(Case("seccomp-notify-write", seccomp(syscalls=[one_call("SCMP_ACT_NOTIFY", ("write",))]),
             ("SCMP_ACT_NOTIFY", "write")))
    add(Case("seccomp-notify-without-listener", seccomp(syscalls=[one_call("SCMP_ACT_NOTIFY")]),
             ("SCMP_ACT_NOTIFY", "listenerPath")))
    # resources and devices
    for kind in ("x", "u", "p"):
        add(Case(f"device-rule-type-{kind}", setting("linux", "resources", "devices",
                                                      value=[{"allow": True, "type": kind, "access": "rwm"}]),
                 ("linux.resources.devices",)))
    add(Case("device-rule-access-empty", setting("linux", "resources", "devices",
                                                 value=[{"allow": True, "type": "c", "access": ""}]),
             ("linux.resources.devices", "access")))
    add(Case("device-type-x", setting("linux", "devices", value=[{"path": "/dev/x", "type": "x", "major": 1,
                                                                   "minor": 3}]), ("linux.devices",)))
    add(Case("memory-swap-below-limit", setting("linux", "resources", "memory",
                                                value={"limit": 100 << 20, "swap": 50 << 20}), ("memory.swap",)))
    add(Case("memory-swap-without-limit", setting("linux", "resources", "memory", value={"swap": 50 << 20}),
             ("memory.swap",)))
    # intelRdt: no resctrl here
    for clos in ("a/b", ".", ".."):
        add(Case(f"intel-rdt-closid-{clos}", setting("linux", "intelRdt", value={"closID": clos}),
                 ("linux.intelRdt.closID",)))
    for key, schema in (("l3CacheSchema", "L3:0=ff"), ("memBwSchema", "MB:0=50")):
        add(Case(f"intel-rdt-{key}", setting("linux", "intelRdt", value={key: schema}), (f"linux.intelRdt.{key}",)))
    # hooks that create runs
    for kind in ("prestart", "createRuntime", "createContainer"):
        add(Case(f"hook-{kind}-missing", hook(kind, "/nonexistent/hook"), (f"hooks.{kind}", "does not exist")))
    add(Case("hook-relative-missing", hook("prestart", "relative/hook"), ("hooks.prestart", "does not exist")))
    add(Case("hook-not-executable", _file_in_bundle("hook.sh", 0o644, hook("prestart", "hook.sh")),
             ("hooks.prestart", "not an executable")))
    add(Case("hook-is-a-directory", hook("createRuntime", "/tmp"), ("hooks.createRuntime", "not an executable")))
    return c


def _lenient(spec: Spec, b: Path) -> None:
    """What runc 1.1 accepts, some of it with a warning, and ignores or reads its own way."""
    caps = spec["process"]["capabilities"]
    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        caps[kind] = list(caps.get(kind) or []) + ["CAP_NOT_REAL"]
    caps["ambient"].append("cap_kill")
    linux = spec["linux"]
    linux["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    linux["intelRdt"] = {"closID": "kata"}
    linux["rootfsPropagation"] = "rslave"
    linux["sysctl"] = {"net/ipv4/ip_forward": "1", "kernel.domainname": "example.com", "fs.mqueue.msg_max": "10"}
    linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86",
                                                                            "SCMP_ARCH_X32"],
                        "syscalls": [{"names": ["not_a_syscall", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    linux["cgroupsPath"] = "relative/cgroup"
    spec["mounts"].append({"destination": "tmp", "type": "tmpfs", "source": "tmpfs"})
    (b / "vol").mkdir()
    spec["mounts"].append({"destination": "/mnt", "type": "none", "source": "vol", "options": ["rbind", "ro"]})
    spec["process"]["oomScoreAdj"] = 1000
    spec["process"]["rlimits"].append({"type": "RLIMIT_CORE", "hard": 0, "soft": 0})


ACCEPTED = [Case("baseline", lambda s, b: None, accept=True), Case("runc-lenient", _lenient, accept=True)]
CASES = _cases()
DIFFERENT = [  # runc 1.1 accepts, we refuse on purpose (oci/validate.py says why)
    Case("no-network-namespace", without_ns("network"), ("no network namespace",), accept=True),
    Case("ipc-of-the-host", ns_path("ipc", "/proc/self/ns/ipc"), ("joining the ipc namespace",), accept=True),
    Case("personality-bogus", setting("linux", "personality", value={"domain": "BOGUS"}), ("personality",),
         accept=True),
    Case("seccomp-empty-default", setting("linux", "seccomp", value={"defaultAction": "", "syscalls": []}),
         ("linux.seccomp.defaultAction",), accept=True),
]


def test_there_are_enough_cases() -> None:
    names = [c.name for c in CASES + ACCEPTED + DIFFERENT]
    assert len(names) == len(set(names))
    assert len(CASES) >= 100 and not any(c.accept for c in CASES)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Spec]]:
    """One busybox rootfs for all cases, and runc's spec with an absolute root.path to it."""
    b = make_bundle(tmp_path_factory.mktemp("verdicts") / "base", ["true"])
    spec = json.loads((b / "config.json").read_text())
    spec["root"]["path"] = os.path.realpath(b / "rootfs")
    yield b, spec


@dataclass
class Verdict:
    accepted: bool
    err: str


def runc_create(bundle: Path, root: Path, cid: str, args: tuple[str, ...]) -> Verdict:
    """``runc create`` of the bundle (its output in files: the container keeps them open); when it
    accepts, the container is deleted again."""
    out, err = bundle / "runc.out", bundle / "runc.err"
    base = [RUNC, "--root", str(root)]
    with open(out, "wb") as o, open(err, "wb") as e:
        try:
            p = subprocess.run(base + ["create", *args, "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                               stdout=o, stderr=e, timeout=30)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = -1  # runc 1.1's init can hang (seen once in 200 creates): end it, then fail
    if rc != 0:
        _end_runc_init(root, cid)
    subprocess.run(base + ["delete", "--force", cid], capture_output=True)
    assert rc != -1, f"runc create {cid} hung"
    return Verdict(rc == 0, err.read_text(errors="replace"))


def host_mounts_under(*paths: Path) -> list[str]:
    """Mount points of this (the host's) mount namespace under ``paths``: what runc leaves there
    when it accepts a spec without a mount namespace."""
    prefixes = tuple(str(p) + "/" for p in paths) + tuple(str(p) for p in paths)
    with open("/proc/self/mountinfo") as f:
        return [p for p in (line.split()[4] for line in f) if p.startswith(prefixes)]


def _end_runc_init(root: Path, cid: str) -> None:
    try:
        pid = json.loads((root / cid / "state.json").read_text())["init_process_pid"]
        os.kill(int(pid), signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


def _bundle(tmp_path: Path, base: tuple[Path, Spec], case: Case) -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    spec = copy.deepcopy(base[1])
    case.change(spec, b)
    (b / "config.json").write_text(json.dumps(spec, indent=1))
    return b


def _ours(kata: Kata, b: Path, cid: str, case: Case) -> Verdict:
    r = kata("create", *case.args, "--bundle", str(b), cid)
    if r.rc == 0:
        kata.ok("delete", "--force", cid)
        return Verdict(True, r.err)
    assert r.rc == 1, f"{case.name}: exit status {r.rc}, runc's is 1"
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.err, f"{case.name}: not one line: {r.err!r}"
    assert lines[0].startswith(f"kata-runtime: create {cid}: "), lines[0]
    for w in case.words:
        assert w in lines[0], f"{case.name}: {w!r} not in {lines[0]!r}"
    errors = kata.log_errors()
    assert errors and errors[-1]["msg"] == lines[0].removeprefix("kata-runtime: "), errors
    assert not (kata.root / "sbs").exists() or not any((kata.root / "sbs").iterdir())
    return Verdict(False, r.err)


def _check(case: Case, kata: Kata, cid: str, tmp_path: Path, base: tuple[Path, Spec]) -> tuple[Verdict, Verdict]:
    b = _bundle(tmp_path, base, case)
    theirs = runc_create(b, tmp_path / "runc-root", cid, case.args)
    left = host_mounts_under(b, Path(base[1]["root"]["path"]))
    for point in sorted(left, key=len):
        subprocess.run(["umount", "-R", point], capture_output=True)
    assert not left, f"runc create left mounts on the host: {left}"
    assert theirs.accepted == case.accept, f"runc changed its verdict on {case.name}: {theirs.err}"
    return theirs, _ours(kata, b, cid, case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_runc_refuses_and_so_do_we(case: Case, kata: Kata, cid: str, tmp_path: Path,
                                   base: tuple[Path, Spec]) -> None:
    theirs, ours = _check(case, kata, cid, tmp_path, base)
    assert ours.accepted == theirs.accepted, f"runc: {theirs.err.strip()}\nours: {ours.err.strip()}"


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_runc_accepts_and_so_do_we(case: Case, kata: Kata, cid: str, tmp_path: Path,
                                   base: tuple[Path, Spec]) -> None:
    theirs, ours = _check(case, kata, cid, tmp_path, base)
    assert ours.accepted, f"runc accepts {case.name}, we refuse: {ours.err.strip()}"


@pytest.mark.parametrize("case", DIFFERENT, ids=[c.name for c in DIFFERENT])
def test_what_we_refuse_and_runc_accepts(case: Case, kata: Kata, cid: str, tmp_path: Path,
                                         base: tuple[Path, Spec]) -> None:
    theirs, ours = _check(case, kata, cid, tmp_path, base)
    assert theirs.accepted and not ours.accepted
