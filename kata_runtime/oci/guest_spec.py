"""The one translation of a host bundle's spec into the spec the guest runs, as is.

A container's spec is written for a host; in a VM some of it is honoured on the host, some in the
guest, some rewritten, and what cannot be honoured is refused here, before anything is made:

============================  =====================================================================
field                         where and how
============================  =====================================================================
``ociVersion``                guest: ``1.0.2-dev`` (validated on the host; the guest's crun 1.8
                              refuses a version without "1.0" in it)
``root.path``                 host: the rootfs is bound into the sandbox's shared directory; guest:
                              the path of that share (``root.readonly`` applied by the guest's OCI
                              runtime)
``mounts`` bind (dir, file)   host: the source (symlinks resolved as mount(2) does) is bound into the
                              container's own subtree of the shared directory (``<n>/<its name>``),
                              read-only on the host too when ``ro``; guest: a bind mount of that share
``mounts`` bind of a tmpfs    guest: a tmpfs of the host mount's size (docker's ``/dev/shm``: shared
on ``/dev/shm``               memory cannot cross 9p), as Kata 1.x does
``mounts`` kernel fs          guest, as is (proc, sysfs, tmpfs, devpts, mqueue, cgroup...)
``mounts`` other types        refused (a host block device or filesystem cannot be mounted in a VM)
``hooks``                     host, by the runtime (:mod:`kata_runtime.oci.hooks`)
``linux.namespaces`` network  host: the sandbox's network namespace (``path``: the engine's; none
                              given: one the runtime makes); guest: the VM's network stack. No
                              network entry, or the host's own namespace, is refused: a VM cannot
                              share the host's network stack (docker ``--net=host``)
other namespaces              guest: new ones as asked; no entry means the VM's; a ``path`` naming
                              the namespace of another container of the same sandbox (``/proc/<its
                              shim's pid>/ns/<type>``, as containerd's CRI names the pause
                              container's) joins that container's namespace in the guest; any other
                              ``path`` is refused
CRI annotations               ``io.kubernetes.cri.container-type: container`` with
                              ``io.kubernetes.cri.sandbox-id`` (or the ``io.kubernetes.cri-o.``
                              names): the container joins that sandbox's VM
``linux.sysctl`` ``net.*``    guest: applied to the VM's network stack, which is the container's
``linux.resources``           guest: as is, but for kernel memory (``memory.kernel``,
                              ``kernelTCP``), ``disableOOMKiller`` and ``swappiness``, which v2
                              does not have: ignored, as runc 1.1 does on cgroup v2 (docker
                              still sends kernel memory), and ``cpu.cpus`` and
                              ``cpu.mems``, which name the host's CPUs and nodes: host (the
                              sandbox's cgroup pins the VM to them, :mod:`kata_runtime.cgroups`), as
                              Kata 1.x does; the guest's containers have all the VM's vCPUs. Also
                              host: the VM's size (:mod:`kata_runtime.resources`)
``linux.cgroupsPath``         guest: the same path (systemd ``slice:prefix:name`` and empty become
                              ``/kata/<id>``)
labels, AppArmor profile      ignored: the guest has neither (where the host has none, runc 1.1
                              refuses them, and so does :mod:`kata_runtime.oci.validate`)
what runc 1.1 ignores         the same (:func:`.validate.runc_lenience`: unknown capabilities,
                              id mappings without a user namespace, ``intelRdt.closID`` alone,
                              relative mount destinations), with a warning in the log
``linux.seccomp``             guest, as is; ``SCMP_ACT_NOTIFY`` refused (its agent is on the host)
============================  =====================================================================
"""

from __future__ import annotations

import copy
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_runtime import OCI_VERSION
from kata_runtime.errors import BundleError
from kata_runtime.oci.validate import SECCOMP_NOTIFY, check_bind_source, check_namespace_path, runc_lenience

log = logging.getLogger(__name__)

GUEST_SHARED_DIR = "/run/kata-containers/shared/containers"
GUEST_NS_DIR = "/run/kata-containers/ns"  # <container>/<type>: the agent's links to its namespaces
PROC_NS_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
                 "cgroup": "cgroup"}
CONTAINER_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType")
SANDBOX_ID_KEYS = ("io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID")
_PROC_NS = re.compile(r"/proc/([0-9]+)/ns/([a-z_]+)")
KERNEL_FS_TYPES = frozenset({"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs",
                             "devtmpfs", "ramfs", "bpf", "debugfs", "tracefs", "fusectl", "configfs", "hugetlbfs"})
_BIND_OPTIONS = frozenset({"bind", "rbind"})
_IGNORED_PROCESS_KEYS = ("apparmorProfile", "selinuxLabel")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class Share:
    """A host file or directory bound into the sandbox's shared directory."""

    source: str  # host path, symlinks resolved
    target: str  # path relative to the sandbox's shared directory: "<cid>/mounts/<n>/<name>"
    readonly: bool
    is_dir: bool


@dataclass
class NetworkRequest:
    """The sandbox's network namespace on the host: the engine's (``path``), or a new one."""

    path: str | None


@dataclass
class GuestSpec:
    """What :func:`translate` makes of a host spec."""

    spec: dict[str, Any]  # the spec the guest's OCI runtime runs, as is
    shares: list[Share] = field(default_factory=list)
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    network: NetworkRequest = field(default_factory=lambda: NetworkRequest(None))
    sandbox_sysctls: dict[str, str] = field(default_factory=dict)
    sandbox_id: str | None = None  # the sandbox this container joins (a pod's); None: its own


def joins_sandbox(cid: str, spec: dict[str, Any]) -> str | None:
    """The sandbox a container joins, from the CRI annotations (None: it is its own sandbox)."""
    ann = spec.get("annotations") or {}
    kind = next((str(ann[k]) for k in CONTAINER_TYPE_KEYS if k in ann), "")
    if kind.lower() != "container":
        return None
    sid = next((str(ann[k]) for k in SANDBOX_ID_KEYS if ann.get(k)), "")
    if not sid:
        raise _refuse(cid, f"annotations: {CONTAINER_TYPE_KEYS[0]} is container but no {SANDBOX_ID_KEYS[0]} names "
                           "its sandbox")
    if sid == cid:
        raise _refuse(cid, f"annotations: {SANDBOX_ID_KEYS[0]} names the container itself")
    return sid


def guest_rootfs(cid: str) -> str:
    return f"{GUEST_SHARED_DIR}/{cid}/rootfs"


def _refuse(cid: str, what: str) -> BundleError:
    return BundleError(what, container=cid, step="create")


def _is_bind(m: dict[str, Any]) -> bool:
    return m.get("type") == "bind" or bool(_BIND_OPTIONS & set(m.get("options") or []))


def _tmpfs_size(path: str) -> int | None:
    """The size in bytes of the tmpfs mounted exactly at ``path`` (None if it is not a tmpfs mount)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[4].replace("\\040", " ") != path:
                    continue
                fstype = right.split()[0]
                if fstype != "tmpfs":
                    return None
                st = os.statvfs(path)
                return st.f_blocks * st.f_frsize
    except OSError:
        return None
    return None


def _network(cid: str, namespaces: list[dict[str, Any]]) -> NetworkRequest:
    from kata_runtime.network import netns

    net = [ns for ns in namespaces if ns.get("type") == "network"]
    if not net:
        raise _refuse(cid, "linux.namespaces: no network namespace: the container would share the host's network "
                           "stack (docker --net=host), which a VM cannot do")
    path = net[0].get("path") or None
    if path is not None:
        check_namespace_path(cid, "network", path)
        if netns.is_host(path):
            raise _refuse(cid, f"linux.namespaces: network namespace {path} is the host's: a VM cannot share "
                               "the host's network stack")
    return NetworkRequest(path)


def translate(cid: str, spec: dict[str, Any], bundle: Path, rootfs: Path,
              peers: dict[int, str] | None = None) -> GuestSpec:
    """The guest spec of container ``cid`` and what the host must do for it; raise
    :class:`BundleError` naming the field that cannot be honoured. ``peers`` maps the host pid
    of each container of the sandbox it joins (its kata-shim, the pid the engine knows) to that
    container's id."""
    out = GuestSpec(spec=copy.deepcopy(spec), sandbox_id=joins_sandbox(cid, spec))
    g = out.spec
    for note in runc_lenience(g):  # what runc 1.1 accepts and ignores, the guest's crun would refuse
        log.warning("create %s: %s", cid, note)
    _refuse_seccomp_notify(cid, g)
    # the guest's crun 1.8 refuses any ociVersion without "1.0" in it ("unknown version specified"); the
    # spec was validated on the host, and what reaches the guest is in the 1.0 schema it knows
    g["ociVersion"] = OCI_VERSION
    g.setdefault("root", {})["path"] = guest_rootfs(cid)
    out.hooks = {k: list(v) for k, v in (g.pop("hooks", None) or {}).items() if v}

    linux = g.setdefault("linux", {})
    namespaces = list(linux.get("namespaces") or [])
    out.network = _network(cid, namespaces)
    guest_ns = []
    for ns in namespaces:
        if ns.get("type") == "network":
            continue  # the VM's network stack is the container's
        if ns.get("path"):
            guest_ns.append({"type": ns["type"], "path": _peer_namespace(cid, ns["type"], ns["path"], peers or {})})
            continue
        guest_ns.append({"type": ns["type"]})
    linux["namespaces"] = guest_ns
    sysctl = dict(linux.get("sysctl") or {})
    out.sandbox_sysctls = {k: str(v) for k, v in sysctl.items() if k.startswith("net.")}
    rest = {k: v for k, v in sysctl.items() if not k.startswith("net.")}
    if rest:
        linux["sysctl"] = rest
    else:
        linux.pop("sysctl", None)
    linux.pop("mountLabel", None)
    if isinstance(linux.get("resources"), dict):
        linux["resources"] = guest_resources(linux["resources"])
    cgroups_path = linux.get("cgroupsPath") or ""
    if not cgroups_path or ":" in cgroups_path:
        linux["cgroupsPath"] = f"/kata/{cid}"

    process = g.get("process")
    if isinstance(process, dict):
        g["process"] = guest_process(process)

    mounts = []
    for i, m in enumerate(g.get("mounts") or []):
        mounts.append(_mount(cid, i, m, bundle, out.shares))
    g["mounts"] = mounts
    return out


def _refuse_seccomp_notify(cid: str, spec: dict[str, Any]) -> None:
    seccomp = (spec.get("linux") or {}).get("seccomp") or {}
    if any(call.get("action") == SECCOMP_NOTIFY for call in seccomp.get("syscalls") or []):
        raise _refuse(cid, "linux.seccomp: SCMP_ACT_NOTIFY is not supported: its seccomp agent (listenerPath) is "
                           "on the host and the container in a VM")


def _peer_namespace(cid: str, kind: str, path: str, peers: dict[int, str]) -> str:
    """The guest path of the namespace that host ``path`` names: one of a container of the same
    sandbox (by its shim's pid), else refused."""
    m = _PROC_NS.fullmatch(path)
    if m is not None and int(m.group(1)) in peers and m.group(2) == PROC_NS_NAMES.get(kind):
        return f"{GUEST_NS_DIR}/{peers[int(m.group(1))]}/{kind}"
    raise _refuse(cid, f"linux.namespaces: joining the {kind} namespace {path} is not supported: only the "
                       "namespaces of a container of the same sandbox can be joined (a host namespace cannot be "
                       "entered from a VM)")


def guest_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """An OCI ``linux.resources`` object (the spec's, or ``update``'s) as the guest's cgroup v2
    takes it: without kernel memory limits, the OOM-killer switch and swappiness, which v2 does
    not have (runc 1.1 ignores them there), and without the cpuset, which names host CPUs
    (applied on the host, as Kata 1.x does)."""
    out = copy.deepcopy(resources)
    memory = out.get("memory")
    if isinstance(memory, dict):
        # nor an OOM-killer switch or a swappiness: runc 1.1 ignores both on v2, the guest's crun
        # refuses the container ("cannot disable OOM killer with cgroupv2", "cannot set memory
        # swappiness with cgroupv2")
        for key in ("kernel", "kernelTCP", "disableOOMKiller", "swappiness"):
            memory.pop(key, None)
    cpu = out.get("cpu")
    if isinstance(cpu, dict):
        for key in ("cpus", "mems"):
            cpu.pop(key, None)
    return out


def guest_process(process: dict[str, Any]) -> dict[str, Any]:
    """An OCI ``process`` object (the spec's, or exec's) as the guest runs it."""
    return {k: v for k, v in process.items() if k not in _IGNORED_PROCESS_KEYS}


def _mount(cid: str, i: int, m: dict[str, Any], bundle: Path, shares: list[Share]) -> dict[str, Any]:
    dest = m.get("destination", "")
    where = f"mounts[{i}] ({dest})"
    if not _is_bind(m):
        fstype = m.get("type") or ""
        if fstype in KERNEL_FS_TYPES:
            return m
        raise _refuse(cid, f"{where}: a {fstype or 'mount without a type'} from {m.get('source', '')!r} cannot be "
                           "mounted in the VM (only bind mounts and kernel filesystems can)")
    source = m.get("source") or ""
    host_path = check_bind_source(cid, where, source, bundle)
    options = list(m.get("options") or [])
    if dest == "/dev/shm" and os.path.isdir(host_path):
        size = _tmpfs_size(host_path)
        if size is not None:  # docker's shm: a tmpfs of its own in the guest, as Kata 1.x does
            return {"destination": dest, "type": "tmpfs", "source": "shm",
                    "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={size}"]}
    # the source's own name last: the container's mountinfo shows it as the mount's root, as
    # with a bind mount on the host (runtime-tools' runtimetest checks that name)
    name = _SAFE_NAME.sub("_", os.path.basename(host_path) or "root")[:40]
    target = f"{cid}/mounts/{i}/{name}"
    is_dir = os.path.isdir(host_path)
    if not is_dir and not os.path.isfile(host_path):
        raise _refuse(cid, f"{where}: bind mount source {source} is neither a file nor a directory (devices and "
                           "sockets of the host cannot cross into the VM)")
    shares.append(Share(source=host_path, target=target, readonly="ro" in options, is_dir=is_dir))
    guest = dict(m)
    guest["source"] = f"{GUEST_SHARED_DIR}/{target}"
    guest["type"] = "bind"
    if not _BIND_OPTIONS & set(options):
        options.append("rbind")
    guest["options"] = options
    return guest
