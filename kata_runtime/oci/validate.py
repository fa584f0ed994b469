"""What runc 1.1 refuses in a runtime spec, refused here with one line naming the field, before
anything is made; and what runc 1.1 accepts but ignores, made explicit for the guest.

:func:`validate` runs on every bundle that ``create``/``run`` load (after the JSON schema, which
checks the structure). Its rules are runc 1.1.5's verdicts on this kind of host, as read in runc's
``utils_linux.go`` (``validateProcessSpec``), ``libcontainer/specconv`` (conversion of the spec),
``libcontainer/configs/validate`` (the config validator) and what ``runc create`` then fails on
(namespace paths, ``oom_score_adj``, environment, ids, bind sources, hooks, seccomp), and measured
with ``/usr/sbin/runc`` beside ours (tests/oci/test_spec_verdicts.py):

- ``process``: present; ``cwd`` absolute and, where it already exists in the rootfs, a directory;
  ``args`` not empty; ``env`` entries ``NAME=value``; uid/gids in 0..2^31-1; rlimits known and soft
  at most hard; ``oomScoreAdj`` in -1000..1000; a SELinux label or AppArmor profile only where the
  host has that LSM (runc fails without it; with it, the guest cannot apply them and they are
  dropped, :mod:`kata_runtime.oci.guest_spec`).
- ``root.path``: a directory and no symlink (runc refuses a rootfs reached through one).
- ``mounts``: no NUL bytes; a ``bind`` type needs a ``bind``/``rbind`` option (runc would mount a
  filesystem named "bind"); bind sources exist.
- ``linux.namespaces``: known types, each once; a ``path`` is absolute, exists and is a namespace
  of that type; a user namespace has uid and gid mappings of the container's root.
- ``linux.sysctl``: only the namespaced ones, each with its namespace (runc's table: IPC keys and
  ``fs.mqueue.*`` with ipc, ``net.*`` with a network namespace that is not the host's,
  ``kernel.domainname`` with uts; ``kernel.hostname`` never); non-network keys must exist.
- ``hostname`` needs a uts namespace; masked and read-only paths need a mount namespace.
- ``linux.rootfsPropagation``: runc's values (the recursive ones too); ``[r]private`` not with
  ``--no-pivot``.
- ``linux.seccomp``: no ``flags``; known architectures; non-empty syscall names; argument index
  below 6; no ``SCMP_ACT_NOTIFY`` as default, on ``write`` or without a ``listenerPath``.
- ``linux.resources``: device rules of type a/b/c with an access; a swap limit needs a memory limit
  at or below it.
- ``linux.intelRdt``: a ``closID`` that is a plain name; no L3 or memory bandwidth schema (there is
  no resctrl here, nor in the VM).
- ``hooks``: the ones ``create`` runs (prestart, createRuntime, createContainer) are executables.

runc 1.1 accepts some things that it then ignores: unknown capabilities (a warning), uid/gid
mappings without a user namespace, a ``closID`` alone when there is no resctrl, relative mount
destinations (taken relative to the rootfs; a warning). :func:`runc_lenience` makes the same of a
spec for the guest, whose crun would refuse some of them, and says what it changed.

Where we knowingly differ from runc 1.1 (the VM honours or cannot honour what the host does not):
``linux.resources.unified`` and cpu-shares bounds (runc checks them against this host's cgroup v1;
the guest has cgroup v2), a negative ``oomScoreAdj`` (this host denies it to runc; the guest
allows it), ``poststart`` hooks (runc 1.1 runs them during ``create``; we after ``start``, as the
spec says), and, refused here but accepted by runc: no network namespace or a host namespace
``path`` (a VM cannot share them), an unknown ``linux.personality`` domain and an empty seccomp
``defaultAction`` (the schema; runc 1.1 ignores personality and treats the latter as no seccomp).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_runtime.errors import BundleError

# libcontainer/specconv namespaceMapping: OCI type -> CLONE_NEW* flag (what NS_GET_NSTYPE returns)
NAMESPACE_FLAGS: dict[str, int] = {
    "pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000, "user": 0x10000000,
    "ipc": 0x08000000, "uts": 0x04000000, "cgroup": 0x02000000,
}
_NS_GET_NSTYPE = 0xB703  # ioctl(2) on a namespace file (linux/nsfs.h)

# specconv mountPropagationMapping
ROOTFS_PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                       "runbindable")

# runc's rlimit_linux.go rlimitMap
RLIMITS = frozenset({"RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
                     "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
                     "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"})

# gocapability's list, in number order (CAP_CHOWN is 0); runc knows those up to the kernel's
# cap_last_cap and ignores the others with a warning
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

# libcontainer/seccomp archs (no RISCV64, PARISC: runc 1.1 refuses them)
SECCOMP_ARCHES = frozenset({"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
                            "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
                            "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
                            "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X"})
SECCOMP_NOTIFY = "SCMP_ACT_NOTIFY"
_SYSCALL_MAX_ARGS = 6

# configs/validate sysctl: the IPC sysctls that an ipc namespace makes the container's own
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})
HOOKS_RUN_BY_CREATE = ("prestart", "createRuntime", "createContainer")
_MAX_ID = 2**31 - 1  # libcontainer/user: uids and gids must be in range 0-2147483647
_BIND_OPTIONS = frozenset({"bind", "rbind"})


def _q(value: object) -> str:
    """A value as the messages quote it (Go's %q for strings)."""
    import json

    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


# -- probes of the host: the same questions runc asks -------------------------------------------

def apparmor_enabled() -> bool:
    """Whether the host's kernel runs AppArmor (runc fails to apply a profile without it)."""
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().startswith("Y")
    except OSError:
        return False


def selinux_enabled() -> bool:
    """Whether SELinux is enabled on the host (selinuxfs mounted, as go-selinux asks)."""
    return os.path.exists("/sys/fs/selinux/enforce")


def last_capability() -> int:
    """The kernel's highest capability number (``/proc/sys/kernel/cap_last_cap``)."""
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def namespace_type(path: str) -> int | None:
    """The CLONE_NEW* type of the namespace file at ``path``; None when it is not one. Raises
    OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(fcntl.ioctl(fd, _NS_GET_NSTYPE))
    except OSError:
        return None
    finally:
        os.close(fd)


# -- the rules -----------------------------------------------------------------------------------

@dataclass
class _Spec:
    """The spec under validation and what the rules keep asking of it."""

    cid: str
    spec: dict[str, Any]
    bundle: Path
    rootfs: Path
    no_pivot: bool

    def refuse(self, msg: str) -> BundleError:
        return refusal(self.cid, msg)

    @property
    def process(self) -> dict[str, Any]:
        p = self.spec.get("process")
        return p if isinstance(p, dict) else {}

    @property
    def linux(self) -> dict[str, Any]:
        p = self.spec.get("linux")
        return p if isinstance(p, dict) else {}

    def namespaces(self) -> list[dict[str, Any]]:
        return [ns for ns in self.linux.get("namespaces") or [] if isinstance(ns, dict)]

    def has_ns(self, kind: str) -> bool:
        return any(ns.get("type") == kind for ns in self.namespaces())

    def ns_path(self, kind: str) -> str:
        return next((str(ns.get("path") or "") for ns in self.namespaces() if ns.get("type") == kind), "")


def _check_process(s: _Spec) -> None:
    """utils_linux.go validateProcessSpec, and what runc's init then fails on."""
    if not isinstance(s.spec.get("process"), dict):
        raise s.refuse("process: missing (runc needs the process to create a container)")
    p = s.process
    cwd = p.get("cwd") or ""
    if not cwd:
        raise s.refuse("process.cwd is empty")
    if not os.path.isabs(cwd):
        raise s.refuse(f"process.cwd {_q(cwd)} is not an absolute path")
    if not p.get("args"):
        raise s.refuse("process.args is empty")
    for i, pair in enumerate(p.get("env") or []):
        name, sep, value = str(pair).partition("=")
        if not sep:
            raise s.refuse(f"process.env[{i}] {_q(pair)} is not NAME=value")
        if not name:
            raise s.refuse(f"process.env[{i}] {_q(pair)} has an empty name")
        if "\0" in name or "\0" in value:
            raise s.refuse(f"process.env[{i}] contains a NUL byte")
    user = p.get("user") or {}
    for key in ("uid", "gid"):
        if int(user.get(key) or 0) > _MAX_ID:
            raise s.refuse(f"process.user.{key} {user[key]} is out of range 0-{_MAX_ID}")
    for i, gid in enumerate(user.get("additionalGids") or []):
        if int(gid) > _MAX_ID:
            raise s.refuse(f"process.user.additionalGids[{i}] {gid} is out of range 0-{_MAX_ID}")
    for i, rl in enumerate(p.get("rlimits") or []):
        kind = rl.get("type")
        if kind not in RLIMITS:
            raise s.refuse(f"process.rlimits[{i}].type {_q(kind)} is not a known rlimit")
        if int(rl.get("soft", 0)) > int(rl.get("hard", 0)):
            raise s.refuse(f"process.rlimits[{i}] ({kind}): soft limit {rl['soft']} is above the hard limit "
                           f"{rl['hard']}")
    if "oomScoreAdj" in p and p["oomScoreAdj"] is not None and not -1000 <= int(p["oomScoreAdj"]) <= 1000:
        raise s.refuse(f"process.oomScoreAdj {p['oomScoreAdj']} is out of range -1000..1000")
    if p.get("selinuxLabel") and not selinux_enabled():
        raise s.refuse(f"process.selinuxLabel {_q(p['selinuxLabel'])} is set, but SELinux is not enabled on "
                       "this host")
    if p.get("apparmorProfile") and not apparmor_enabled():
        raise s.refuse(f"process.apparmorProfile {_q(p['apparmorProfile'])} is set, but AppArmor is not enabled "
                       "on this host")
    if s.linux.get("mountLabel") and not selinux_enabled():
        raise s.refuse(f"linux.mountLabel {_q(s.linux['mountLabel'])} is set, but SELinux is not enabled on this "
                       "host")
    target = _in_rootfs(s.rootfs, cwd)
    if target.exists() and not target.is_dir() and not _under_a_mount(s, cwd):
        raise s.refuse(f"process.cwd {_q(cwd)} is not a directory in the rootfs")


def _in_rootfs(rootfs: Path, path: str) -> Path:
    """``path`` of the container resolved in ``rootfs`` as the container sees it: symlinks
    followed, but never out of the rootfs (as runc's securejoin)."""
    resolved: list[str] = []
    todo = [p for p in path.split("/") if p not in ("", ".")]
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink() and hops < 40:
            hops += 1
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            todo = [p for p in link.split("/") if p not in ("", ".")] + todo
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def _under_a_mount(s: _Spec, path: str) -> bool:
    """Whether a mount of the spec covers container ``path`` (it may make what is there)."""
    norm = os.path.normpath("/" + path)
    for m in s.spec.get("mounts") or []:
        dest = os.path.normpath("/" + str(m.get("destination") or ""))
        if norm == dest or norm.startswith(dest.rstrip("/") + "/"):
            return True
    return False


def _check_root(s: _Spec) -> None:
    """configs/validate rootfs: a real directory, reached without a symlink."""
    root = str((s.spec.get("root") or {}).get("path") or "")
    path = root if os.path.isabs(root) else os.path.join(os.path.realpath(s.bundle), root)
    path = os.path.normpath(path)
    if os.path.isdir(path) and os.path.realpath(path) != path:
        raise s.refuse(f"root.path {_q(root)}: the rootfs {path} is reached through a symlink (runc takes only "
                       f"the real path, {os.path.realpath(path)})")


def _check_mounts(s: _Spec) -> None:
    for i, m in enumerate(s.spec.get("mounts") or []):
        dest = str(m.get("destination") or "")
        where = f"mounts[{i}] ({dest})"
        for key in ("source", "destination", "type"):
            if "\0" in str(m.get(key) or ""):
                raise s.refuse(f"{where}: {key} contains a NUL byte")
        options = set(m.get("options") or [])
        if not options & _BIND_OPTIONS:
            if m.get("type") == "bind":
                raise s.refuse(f"{where}: type bind without a bind or rbind option (runc would mount a "
                               "filesystem named bind, which does not exist)")
            continue
        check_bind_source(s.cid, where, str(m.get("source") or ""), s.bundle)


def check_bind_source(cid: str, where: str, source: str, bundle: Path) -> str:
    """The host path of a bind mount's ``source`` (relative to the bundle, symlinks resolved as
    mount(2) does); raise when there is nothing there."""
    if not source:
        raise refusal(cid, f"{where}: bind mount without a source")
    host_path = os.path.realpath(source if os.path.isabs(source) else bundle / source)
    if not os.path.exists(host_path):
        raise refusal(cid, f"{where}: bind mount source {source} does not exist")
    return host_path


def _check_namespaces(s: _Spec) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(s.namespaces()):
        kind = str(ns.get("type") or "")
        if kind not in NAMESPACE_FLAGS:
            raise s.refuse(f"linux.namespaces[{i}].type {_q(kind)} is not a known namespace type")
        if kind in seen:
            raise s.refuse(f"linux.namespaces: the {kind} namespace is listed twice")
        seen.add(kind)
        if ns.get("path"):
            check_namespace_path(s.cid, kind, str(ns["path"]))
    linux = s.linux
    if s.has_ns("user"):
        for key, what in (("uidMappings", "uid"), ("gidMappings", "gid")):
            maps = linux.get(key) or []
            if not maps:
                raise s.refuse(f"linux.{key}: a user namespace needs {what} mappings")
            if not any(int(m.get("containerID", 0)) <= 0 < int(m.get("containerID", 0)) + int(m.get("size", 0))
                       for m in maps):
                raise s.refuse(f"linux.{key}: no mapping for {what} 0, the container's root")
    if s.spec.get("hostname") and not s.has_ns("uts"):
        raise s.refuse(f"hostname {_q(s.spec['hostname'])} needs a uts namespace of the container's own "
                       "(linux.namespaces has none)")
    if (linux.get("maskedPaths") or linux.get("readonlyPaths")) and not s.has_ns("mount"):
        raise s.refuse("linux.maskedPaths/readonlyPaths need a mount namespace of the container's own "
                       "(linux.namespaces has none)")


def check_namespace_path(cid: str, kind: str, path: str) -> None:
    """A namespace ``path`` that runc could join: absolute, present, a namespace of type ``kind``."""
    name = f"{kind} namespace"
    if not os.path.isabs(path):
        raise refusal(cid, f"linux.namespaces: {name} {path} is not an absolute path")
    if not os.path.lexists(path):
        raise refusal(cid, f"linux.namespaces: {name} {path} does not exist")
    try:
        actual = namespace_type(path)
    except OSError as e:
        raise refusal(cid, f"linux.namespaces: {name} {path}: {(e.strerror or str(e)).lower()}") from None
    if actual is None:
        raise refusal(cid, f"linux.namespaces: {name} {path} is not a namespace")
    if actual != NAMESPACE_FLAGS[kind]:
        other = next((k for k, v in NAMESPACE_FLAGS.items() if v == actual), hex(actual))
        raise refusal(cid, f"linux.namespaces: {name} {path} is a {other} namespace, not a {kind} one")


def _dotted(key: str) -> str:
    """A sysctl name with ``/`` separators in the dotted form (``net/ipv4/conf/eth0.100/x`` ->
    ``net.ipv4.conf.eth0/100.x``), as runc's validator reads it."""
    first = next((c for c in key if c in "./"), ".")
    return key if first == "." else key.translate(str.maketrans("./", "/."))


def _check_sysctl(s: _Spec) -> None:
    """configs/validate sysctl: /proc/sys is namespaced only in part; and runc's init fails on a
    sysctl that does not exist."""
    for key in (s.linux.get("sysctl") or {}):
        name = _dotted(str(key))
        where = f"linux.sysctl {_q(name)}"
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if not s.has_ns("ipc"):
                raise s.refuse(f"{where} is not allowed in the host's ipc namespace (linux.namespaces has no ipc)")
        elif name.startswith("net."):
            if not s.has_ns("network"):
                raise s.refuse(f"{where} is not allowed in the host's network namespace (linux.namespaces has "
                               "no network)")
            from kata_runtime.network import netns

            path = s.ns_path("network")
            if path and netns.is_host(path):
                raise s.refuse(f"{where} is not allowed in the host's network namespace ({path})")
            continue  # applied in the VM's network stack, whose keys the host cannot tell
        elif name == "kernel.domainname" and s.has_ns("uts"):
            pass
        elif name == "kernel.hostname" and s.has_ns("uts"):
            raise s.refuse(f"{where} is not allowed: it conflicts with the hostname field")
        else:
            raise s.refuse(f"{where} is not in a separate kernel namespace: it would change the host")
        if not os.path.exists("/proc/sys/" + name.replace(".", "/")):
            raise s.refuse(f"{where} does not exist")


def _check_propagation(s: _Spec) -> None:
    prop = s.linux.get("rootfsPropagation")
    if prop is None:
        return
    if prop not in ROOTFS_PROPAGATIONS:
        raise s.refuse(f"linux.rootfsPropagation {_q(prop)} is not one of "
                       f"{', '.join(p for p in ROOTFS_PROPAGATIONS if p)}")
    if s.no_pivot and prop in ("private", "rprivate"):
        raise s.refuse(f"linux.rootfsPropagation {_q(prop)} is not safe without pivot_root (--no-pivot)")


def _check_seccomp(s: _Spec) -> None:
    sc = s.linux.get("seccomp")
    if not isinstance(sc, dict) or (not sc.get("defaultAction") and not sc.get("syscalls")):
        return  # runc: no default action and no syscalls is no seccomp
    if sc.get("flags"):
        raise s.refuse("linux.seccomp.flags are not supported (runc 1.1 refuses them too)")
    for i, arch in enumerate(sc.get("architectures") or []):
        if arch not in SECCOMP_ARCHES:
            raise s.refuse(f"linux.seccomp.architectures[{i}] {_q(arch)} is not a known architecture")
    if sc.get("defaultAction") == SECCOMP_NOTIFY:
        raise s.refuse("linux.seccomp.defaultAction SCMP_ACT_NOTIFY cannot be the default action")
    for i, call in enumerate(sc.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        for j, name in enumerate(call.get("names") or []):
            if not name:
                raise s.refuse(f"{where}.names[{j}] is empty")
            if name == "write" and call.get("action") == SECCOMP_NOTIFY:
                raise s.refuse(f"{where}: SCMP_ACT_NOTIFY cannot be used for the write syscall")
        if call.get("action") == SECCOMP_NOTIFY and not sc.get("listenerPath"):
            raise s.refuse(f"{where}: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath")
        for j, arg in enumerate(call.get("args") or []):
            if int(arg.get("index", 0)) >= _SYSCALL_MAX_ARGS:
                raise s.refuse(f"{where}.args[{j}].index {arg['index']} is out of range 0-{_SYSCALL_MAX_ARGS - 1}")


def _check_resources(s: _Spec) -> None:
    res = s.linux.get("resources")
    if not isinstance(res, dict):
        return
    for i, rule in enumerate(res.get("devices") or []):
        kind = rule.get("type", "a")
        if kind not in ("a", "b", "c"):
            raise s.refuse(f"linux.resources.devices[{i}].type {_q(kind)} is not a, b or c")
        if "access" in rule and not rule["access"]:
            raise s.refuse(f"linux.resources.devices[{i}].access is empty")
    mem = res.get("memory") or {}
    swap, limit = int(mem.get("swap") or 0), int(mem.get("limit") or 0)
    if swap > 0:
        if limit <= 0:
            raise s.refuse(f"linux.resources.memory.swap {swap} is set without memory.limit")
        if swap < limit:
            raise s.refuse(f"linux.resources.memory.swap {swap} is below memory.limit {limit} (it is memory "
                           "plus swap)")


def _check_intel_rdt(s: _Spec) -> None:
    rdt = s.linux.get("intelRdt")
    if not isinstance(rdt, dict):
        return
    clos = str(rdt.get("closID") or "")
    if clos in (".", "..") or "/" in clos:
        raise s.refuse(f"linux.intelRdt.closID {_q(clos)} is not a plain name")
    for key in ("l3CacheSchema", "memBwSchema"):
        if rdt.get(key):
            raise s.refuse(f"linux.intelRdt.{key} is set, but Intel RDT is not available (no resctrl on this host "
                           "nor in the VM)")


def _check_hooks(s: _Spec) -> None:
    hooks = s.spec.get("hooks") or {}
    for kind in HOOKS_RUN_BY_CREATE:
        for i, hook in enumerate(hooks.get(kind) or []):
            path = str(hook.get("path") or "")
            host = path if os.path.isabs(path) else str(s.bundle / path)  # runc runs them from the bundle
            where = f"hooks.{kind}[{i}]"
            if not os.path.exists(host):
                raise s.refuse(f"{where}: {path} does not exist")
            if not os.path.isfile(host) or not os.access(host, os.X_OK):
                raise s.refuse(f"{where}: {path} is not an executable file")


_RULES = (_check_process, _check_mounts, _check_resources, _check_propagation, _check_namespaces, _check_seccomp,
          _check_root, _check_sysctl, _check_intel_rdt, _check_hooks)


def refusal(cid: str, msg: str) -> BundleError:
    """The error of a refused spec: one line, the field first."""
    return BundleError(msg, container=cid, step="create")


def validate(cid: str, spec: dict[str, Any], bundle: Path, rootfs: Path, *, no_pivot: bool = False) -> None:
    """Raise :class:`BundleError` (step ``create``, one line naming the field) for the first thing
    of ``spec`` that runc 1.1 would refuse. It only reads: nothing is made."""
    s = _Spec(cid, spec, bundle, rootfs, no_pivot)
    for rule in _RULES:
        rule(s)


# -- what runc 1.1 accepts and ignores ----------------------------------------------------------

def runc_lenience(spec: dict[str, Any]) -> list[str]:
    """Make of ``spec`` (changed in place) what runc 1.1 makes of it where it accepts and ignores:
    unknown capabilities dropped, uid/gid mappings without a user namespace dropped, a
    ``closID``-only ``intelRdt`` dropped (no resctrl), relative mount destinations made absolute
    (runc takes them relative to the rootfs), an empty ``rootfsPropagation`` dropped, sysctl names
    with ``/`` separators in the dotted form. Returns one line per change that the user should
    know of, for the log."""
    notes: list[str] = []
    caps = (spec.get("process") or {}).get("capabilities")
    if isinstance(caps, dict):
        known = set(CAPABILITIES[: last_capability() + 1])
        for kind in CAPABILITY_SETS:
            names = caps.get(kind)
            if not names:
                continue
            unknown = [n for n in names if n not in known]
            if unknown:
                caps[kind] = [n for n in names if n in known]
                notes.append(f"process.capabilities.{kind}: ignoring unknown or unavailable capabilities "
                             f"{', '.join(map(str, unknown))}")
    linux = spec.get("linux")
    if isinstance(linux, dict):
        if not any(isinstance(ns, dict) and ns.get("type") == "user" for ns in linux.get("namespaces") or []):
            for key in ("uidMappings", "gidMappings"):
                if linux.pop(key, None):
                    notes.append(f"linux.{key}: ignored without a user namespace")
        rdt = linux.get("intelRdt")
        if isinstance(rdt, dict) and not rdt.get("l3CacheSchema") and not rdt.get("memBwSchema"):
            linux.pop("intelRdt")
            notes.append("linux.intelRdt: ignored (no resctrl in the VM)")
        if linux.get("rootfsPropagation") == "":
            linux.pop("rootfsPropagation")
        sysctl = linux.get("sysctl")
        if isinstance(sysctl, dict) and any(_dotted(k) != k for k in sysctl):
            linux["sysctl"] = {_dotted(k): v for k, v in sysctl.items()}  # so net.* go to the VM's stack
    for i, m in enumerate(spec.get("mounts") or []):
        dest = m.get("destination")
        if isinstance(dest, str) and dest and not dest.startswith("/"):
            m["destination"] = "/" + dest
            notes.append(f"mounts[{i}]: destination {dest} is not absolute: taken relative to the rootfs")
    return notes
