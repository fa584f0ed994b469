"""The sandbox's cgroup on the host: the one ``linux.cgroupsPath`` names, holding the whole sandbox.

Kata 1.x puts the sandbox's processes in the cgroup of its sandbox container (``sandbox_cgroup_only``):
here QEMU (with all its threads), kata-proxy, kata-netmon and every kata-shim of the sandbox, a
pod's members' too. Where it is, in every hierarchy of the host (cgroup v1: each mounted hierarchy,
named ones and the hybrid ``unified`` one included, as runc joins them; v2: the one tree):

- ``/a/b``: ``<hierarchy>/a/b`` (the spec: relative to the cgroups mount point);
- ``a/b`` (relative): ``<hierarchy>/vc/a/b``, under Kata 1.x's runtime-determined location;
  an empty path is the relative path ``<id>``;
- ``slice:prefix:name`` (systemd's form; the only form ``--systemd-cgroup`` takes, and the form
  a path such as ``system.slice:docker:abc`` is read in without the flag, as Kata 1.x reads it):
  the path systemd gives that unit, ``/system.slice/docker-abc.scope`` (slices expanded:
  ``a-b.slice`` is ``/a.slice/a-b.slice``). systemd is not asked for the unit (it does not run on
  every host, and not on this one): the directories are made as the cgroupfs driver makes them.

Unlike Kata 1.12, the last component is not renamed ``kata_<name>``: host tools and a kubelet find
the sandbox where the spec says.

Limits: the sandbox container's CPU limits (``cpu.shares``, quota and period, real-time period and
runtime on v1, ``cpuset.cpus`` and ``cpuset.mems``) are the cgroup's, as Kata 1.x constrains the
VM's vCPUs with them; a pod member's cpuset widens the sandbox's (Kata 1.x's union). No memory
limit is set on the host, as Kata 1.x sets none (its ``V1NoConstraints``): the VM's memory is
bounded by its size, and QEMU's own overhead (its TCG cache, device emulation) must not get it
killed; the memory hierarchy still accounts the sandbox. The device cgroup is left as inherited:
the container's device rules apply in the guest, and QEMU needs ``/dev/net/tun`` or ``/dev/kvm``.

The cgroup is recorded in the sandbox record before a directory is made, so that ``delete``
(``--force`` after the runtime was killed) removes it; the directories that were made for it
(parents too) are removed when empty, the leaf always (as runc removes it).
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kata_runtime import faults
from kata_runtime.errors import InvalidArgument, KataError
from kata_runtime.resources import format_cpuset, host_list, parse_cpuset

log = logging.getLogger(__name__)

KATA_RELATIVE_ROOT = "/vc"  # Kata 1.x's DefaultCgroupPath: where relative cgroup paths go
SYSTEMD_RUNNING = "/run/systemd/system"
MOUNTINFO = "/proc/self/mountinfo"
V1_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "net_cls",
                            "net_prio", "perf_event", "hugetlb", "rdma", "misc"})


# -- the path -------------------------------------------------------------------------------------

def is_systemd_form(path: str) -> bool:
    """Kata 1.x's test of a systemd cgroup path: three ``:`` parts, the first a slice."""
    parts = path.split(":")
    return len(parts) == 3 and parts[0].endswith(".slice")


def expand_slice(slice_name: str) -> str:
    """systemd's path of a slice: ``a-b-c.slice`` is ``/a.slice/a-b.slice/a-b-c.slice``, ``-.slice``
    the root."""
    if slice_name == "-.slice":
        return "/"
    if not slice_name.endswith(".slice") or "/" in slice_name:
        raise InvalidArgument(f"linux.cgroupsPath: {slice_name!r} is not a systemd slice name")
    stem = slice_name[:-len(".slice")]
    if not stem or stem.startswith("-") or stem.endswith("-") or "--" in stem:
        raise InvalidArgument(f"linux.cgroupsPath: {slice_name!r} is not a valid systemd slice name")
    out, prefix = "", ""
    for part in stem.split("-"):
        prefix = f"{prefix}-{part}" if prefix else part
        out += f"/{prefix}.slice"
    return out


def resolve_path(cgroups_path: str, cid: str, systemd: bool) -> str:
    """The cgroup path (absolute, within every hierarchy) of a sandbox whose spec says
    ``cgroups_path``; ``systemd`` is the ``--systemd-cgroup`` flag (see the module docstring)."""
    if systemd and cgroups_path and not is_systemd_form(cgroups_path):
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise InvalidArgument(f'linux.cgroupsPath: expected cgroupsPath to be of format "slice:prefix:name" '
                                  f"for systemd cgroups, got {cgroups_path!r} instead")
    if systemd and not cgroups_path:
        cgroups_path = f"system.slice:kata:{cid}"
    if systemd or is_systemd_form(cgroups_path):
        slice_name, prefix, name = cgroups_path.split(":")
        parent = expand_slice(slice_name or "system.slice")
        unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
        if not name or "/" in unit:
            raise InvalidArgument(f"linux.cgroupsPath: {cgroups_path!r} names no systemd unit")
        return posixpath.join(parent, unit)
    path = cgroups_path or cid
    if path.startswith("/"):
        out = posixpath.normpath(path)
    else:
        out = posixpath.normpath(posixpath.join(KATA_RELATIVE_ROOT, posixpath.normpath("/" + path).lstrip("/")))
    if out == "/":
        raise InvalidArgument(f"linux.cgroupsPath {cgroups_path!r} names the root cgroup: the sandbox needs a "
                              "cgroup of its own")
    return out


# -- the hierarchies --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy of the host: where it is mounted and what it controls."""

    mount: str
    version: int  # 1 or 2
    controllers: tuple[str, ...]  # v1: from the mount options (cpu, cpuacct, name=systemd...)


def hierarchies(mountinfo: str | None = None) -> list[Hierarchy]:
    """The host's cgroup hierarchies, from ``/proc/self/mountinfo`` (first mount of each)."""
    if mountinfo is None:
        with open(MOUNTINFO) as f:
            mountinfo = f.read()
    out: list[Hierarchy] = []
    seen: set[tuple[str, ...]] = set()
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, post = left.split(), right.split()
        if len(fields) < 5 or len(post) < 3 or post[0] not in ("cgroup", "cgroup2"):
            continue
        mount = fields[4].replace("\\040", " ")
        if post[0] == "cgroup2":
            key: tuple[str, ...] = ("cgroup2",)
            controllers: tuple[str, ...] = ()
            version = 2
        else:
            controllers = tuple(sorted(o for o in post[2].split(",") if o in V1_CONTROLLERS or o.startswith("name=")))
            key, version = controllers, 1
        if key in seen:
            continue
        seen.add(key)
        out.append(Hierarchy(mount, version, controllers))
    return out


def version_of(hs: list[Hierarchy]) -> int:
    """1 when the host has v1 hierarchies (alone or beside a hybrid ``unified`` one), else 2."""
    return 1 if any(h.version == 1 for h in hs) else 2


# -- the record -------------------------------------------------------------------------------------

@dataclass
class HostCgroup:
    """A sandbox's cgroup: ``path`` in each hierarchy (``dirs``, the leaves), the directories made
    for it (``made``, parents first), and the cpuset it was given (``cpus``, "" for the parent's)."""

    path: str
    version: int
    dirs: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)
    cpus: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HostCgroup:
        return cls(path=str(d["path"]), version=int(d.get("version", 1)), dirs=[str(x) for x in d.get("dirs", [])],
                   made=[str(x) for x in d.get("made", [])], cpus=str(d.get("cpus", "")))

    def dir_of(self, controller: str, hs: list[Hierarchy] | None = None) -> str | None:
        """The leaf directory in the hierarchy that has ``controller`` (v2: the one tree)."""
        if self.version == 2:
            return self.dirs[0] if self.dirs else None
        for h in hs if hs is not None else hierarchies():
            if h.version == 1 and controller in h.controllers:
                leaf = h.mount.rstrip("/") + self.path
                return leaf if leaf in self.dirs else None
        return None


def plan(cgroups_path: str, cid: str, systemd: bool, hs: list[Hierarchy] | None = None) -> HostCgroup:
    """Where the sandbox's cgroup goes and what must be made for it (nothing is made here)."""
    path = resolve_path(cgroups_path, cid, systemd)
    if (systemd or is_systemd_form(cgroups_path)) and systemd_runs():
        log.warning("sandbox %s: systemd runs on this host, but is not asked for the unit of %s: its cgroup is "
                    "made as the cgroupfs driver makes it", cid, path)
    hs = hierarchies() if hs is None else hs
    version = version_of(hs)
    chosen = hs if version == 1 else [h for h in hs if h.version == 2][:1]  # v1: the hybrid unified one too
    if not chosen:
        raise KataError("this host has no cgroup hierarchy mounted (/proc/self/mountinfo)")
    cg = HostCgroup(path=path, version=version)
    parts = [p for p in path.split("/") if p]
    for h in chosen:
        base = h.mount.rstrip("/")
        cg.dirs.append(base + path)
        for i in range(1, len(parts) + 1):
            d = base + "/" + "/".join(parts[:i])
            if not os.path.isdir(d):
                cg.made.append(d)
    return cg


# -- the limits -------------------------------------------------------------------------------------

def check_cpuset(resources: dict[str, Any], who: str) -> None:
    """Refuse a ``cpu.cpus`` or ``cpu.mems`` that names CPUs or memory nodes this host has not
    (they pin the VM to the host's: see the module docstring), before anything is made."""
    cpu = resources.get("cpu") or {}
    for key, sysfs, what in (("cpus", "/sys/devices/system/cpu/online", "CPUs"),
                             ("mems", "/sys/devices/system/node/online", "memory nodes")):
        want = parse_cpuset(str(cpu.get(key) or ""), key)
        have = host_list(sysfs) or ({0} if key == "mems" else set())
        if want and have and not want <= have:
            raise InvalidArgument(f"linux.resources.cpu.{key} {cpu.get(key)!r}{who}: this host has {what} "
                                  f"{format_cpuset(have)} ({key} pins the VM to the host's {what})")


def _write(directory: str, name: str, value: str, path: str) -> None:
    try:
        with open(os.path.join(directory, name), "w") as f:
            f.write(value)
    except OSError as e:
        raise KataError(f"host cgroup {path}: cannot set {name} to {value}: {e.strerror or e}") from None


def _read(directory: str, name: str) -> str:
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def shares_to_weight(shares: int) -> int:
    """cgroup v1 ``cpu.shares`` (2..262144) as v2 ``cpu.weight`` (1..10000), runc's conversion."""
    return 1 + ((max(2, min(shares, 262144)) - 2) * 9999) // 262142


def set_limits(cg: HostCgroup, resources: dict[str, Any], hs: list[Hierarchy] | None = None) -> None:
    """Write the CPU limits of ``resources`` (a ``linux.resources``) into the cgroup; the fields
    left out (or zero) are left as they are."""
    cpu = resources.get("cpu") or {}
    if not isinstance(cpu, dict) or not cpu:
        return
    hs = hierarchies() if hs is None else hs
    shares, quota, period = _number(cpu.get("shares")), _number(cpu.get("quota")), _number(cpu.get("period"))
    rt_period, rt_runtime = _number(cpu.get("realtimePeriod")), _number(cpu.get("realtimeRuntime"))
    cpus, mems = str(cpu.get("cpus") or ""), str(cpu.get("mems") or "")
    if cg.version == 2:
        d = cg.dir_of("cpu", hs)
        if d is None:
            return
        if rt_period or rt_runtime:
            raise KataError(f"host cgroup {cg.path}: linux.resources.cpu.realtimePeriod and realtimeRuntime are not "
                            "supported on cgroup v2")
        if shares:
            _write(d, "cpu.weight", str(shares_to_weight(shares)), cg.path)
        if quota or period:
            now = (_read(d, "cpu.max") or "max 100000").split()
            q = ("max" if quota < 0 else str(quota)) if quota else now[0]
            _write(d, "cpu.max", f"{q} {period or now[-1]}", cg.path)
        if cpus:
            _write(d, "cpuset.cpus", cpus, cg.path)
        if mems:
            _write(d, "cpuset.mems", mems, cg.path)
        return
    d = cg.dir_of("cpu", hs)
    if d is not None:
        if shares:
            _write(d, "cpu.shares", str(shares), cg.path)
        if period and quota:
            try:  # the kernel checks each against the other: one order may be refused, the other not
                _write(d, "cpu.cfs_period_us", str(period), cg.path)
                _write(d, "cpu.cfs_quota_us", str(quota), cg.path)
            except KataError:
                _write(d, "cpu.cfs_quota_us", str(quota), cg.path)
                _write(d, "cpu.cfs_period_us", str(period), cg.path)
        elif period:
            _write(d, "cpu.cfs_period_us", str(period), cg.path)
        elif quota:
            _write(d, "cpu.cfs_quota_us", str(quota), cg.path)
        if rt_period:
            _write(d, "cpu.rt_period_us", str(rt_period), cg.path)
        if rt_runtime:
            _write(d, "cpu.rt_runtime_us", str(rt_runtime), cg.path)
    d = cg.dir_of("cpuset", hs)
    if d is not None:
        if cpus:
            _write(d, "cpuset.cpus", cpus, cg.path)
        if mems:
            _write(d, "cpuset.mems", mems, cg.path)


def pod_cpu(cpus: list[dict[str, Any]]) -> dict[str, Any]:
    """The CPU limits of a pod's sandbox cgroup from the ``linux.resources.cpu`` of its workload
    containers, as Kata 1.x's sandbox cgroup adds them up: the largest shares, the longest period,
    the quotas summed (each scaled to that period, rounded up); a quota of -1 (no limit) when no
    container has one. Shares are left out when none is given."""
    shares = max((_number(c.get("shares")) for c in cpus), default=0)
    limited = [(_number(c.get("quota")), _number(c.get("period")) or DEFAULT_PERIOD) for c in cpus
               if _number(c.get("quota")) > 0]
    out: dict[str, Any] = {"quota": -1}
    if limited:
        period = max(p for _, p in limited)
        out = {"quota": sum(-(-q * period // p) for q, p in limited), "period": period}
    if shares:
        out["shares"] = shares
    return out


DEFAULT_PERIOD = 100000  # µs: the kernel's cfs period when a spec gives none


def widen_cpuset(cg: HostCgroup, cpus: str, hs: list[Hierarchy] | None = None) -> None:
    """A pod member's ``cpu.cpus``: the sandbox's cpuset becomes the union of its and ``cpus``
    (nothing to do when the sandbox was given none: it has every CPU of its parent)."""
    if not cg.cpus or not cpus:
        return
    union = format_cpuset(parse_cpuset(cg.cpus) | parse_cpuset(cpus))
    if union != cg.cpus:
        set_limits(cg, {"cpu": {"cpus": union}}, hs)
        cg.cpus = union


# -- making, joining, removing ----------------------------------------------------------------------

def make(cg: HostCgroup, resources: dict[str, Any]) -> None:
    """Make the cgroup's directories (the caller has recorded ``cg``) and set its limits."""
    faults.point("cgroup")
    hs = hierarchies()
    for d in cg.dirs:
        for attempt in range(3):  # a concurrent removal of an empty parent (another sandbox's delete)
            try:
                os.makedirs(d, exist_ok=True)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except OSError as e:
                raise KataError(f"cannot make the host cgroup {d}: {e.strerror or e}") from None
    if cg.version == 1:
        _inherit_cpuset(cg, hs)
    else:
        _enable_controllers(cg)
    set_limits(cg, resources, hs)
    cg.cpus = str((resources.get("cpu") or {}).get("cpus") or "")


def _inherit_cpuset(cg: HostCgroup, hs: list[Hierarchy]) -> None:
    """A new v1 cpuset cgroup starts with no CPU and no node: it takes its parent's, top down."""
    leaf = cg.dir_of("cpuset", hs)
    if leaf is None:
        return
    chain = [d for d in cg.made if leaf == d or leaf.startswith(d + "/")]
    for d in sorted(chain, key=len):
        parent = os.path.dirname(d)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not _read(d, name):
                _write(d, name, _read(parent, name), cg.path)


def _enable_controllers(cg: HostCgroup) -> None:
    """v2: the controllers of the limits are enabled from the root down to the leaf's parent (a
    controller the parent cannot delegate is left off: a limit that needs it then fails)."""
    if not cg.dirs:
        return
    leaf = cg.dirs[0]
    root = leaf[:len(leaf) - len(cg.path)]
    current = root
    for part in [p for p in cg.path.split("/") if p][:-1] + [None]:
        available = _read(current, "cgroup.controllers").split()
        for ctl in ("cpu", "cpuset", "memory", "pids"):
            if ctl in available and ctl not in _read(current, "cgroup.subtree_control").split():
                try:
                    with open(os.path.join(current, "cgroup.subtree_control"), "w") as f:
                        f.write(f"+{ctl}")
                except OSError as e:
                    log.debug("host cgroup %s: cannot enable %s in %s: %s", cg.path, ctl, current, e)
        if part is None:
            break
        current = os.path.join(current, part)


def join(cg: HostCgroup, pid: int) -> None:
    """Move process ``pid`` (all its threads) into the cgroup, in every hierarchy."""
    for d in cg.dirs:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except ProcessLookupError:
            return  # it is gone: whoever waits for it will say so
        except OSError as e:
            raise KataError(f"cannot move pid {pid} into the host cgroup {d}: {e.strerror or e}") from None


def procs(directory: str) -> list[int]:
    """The processes in one cgroup directory (none when it does not exist)."""
    text = _read(directory, "cgroup.procs")
    return [int(p) for p in text.split() if p.isdigit()]


def remove(cg: HostCgroup, errors: list[str], wait: float = 2.0) -> None:
    """Remove the leaves (waiting up to ``wait`` seconds for processes that are exiting) and the
    directories made for the cgroup that are empty. A leaf that other processes still use (a
    cgroup the spec shares with someone else's) stays, with a warning; a directory that cannot be
    removed for another reason is added to ``errors``."""
    made = set(cg.made)
    deadline = time.monotonic() + wait
    for d in sorted(set(cg.dirs) | made, key=lambda p: (-p.count("/"), p)):
        first = True
        while True:
            try:
                if first:  # once a directory, not once a retry: a test counts the points a delete passes
                    first = False
                    faults.point("cgroup-remove")  # as a real failure: in errors, the record kept for the next delete
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    errors.append(f"cannot remove the host cgroup {d}: {e.strerror or e}")
                elif d in cg.dirs and time.monotonic() < deadline:
                    time.sleep(0.02)  # its last tasks are on their way out
                    continue
                elif d in cg.dirs:
                    log.warning("host cgroup %s: %s is still in use (processes: %s, or child cgroups): left in "
                                "place", cg.path, d, " ".join(map(str, procs(d))) or "none")
                break  # a busy parent: other cgroups live under it


def systemd_runs() -> bool:
    """Whether systemd manages this host's cgroups (it is not asked for units: the module docstring)."""
    return os.path.isdir(SYSTEMD_RUNNING)
