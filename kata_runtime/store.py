"""State on the host: one directory per sandbox under the root (default /run/vc).

- ``<root>/sbs/<sandbox>/sandbox.json``: the sandbox record (VM, proxy, containers), written
  atomically (temp file, fsync, rename);
- ``<root>/sbs/<sandbox>/cgroup.json``: the sandbox's host cgroup once more, on its own (written
  before the cgroup is made): a ``delete --force`` of a sandbox whose record is corrupt still
  finds the cgroup, which its id alone does not name (``linux.cgroupsPath`` does);
- ``<root>/vm/<sandbox>/``: QEMU's pid file and console log, kata-proxy's log;
- ``<root>/ctr/<container>``: for a container that joined another's sandbox (a pod's), the id of
  that sandbox (its own record is in the sandbox's);
- ``/run/vc/sock/<digest>/``: the sandbox's unix sockets (kata-proxy's, QEMU's QMP and agent
  channel). ``AF_UNIX`` paths are limited to 107 bytes and the engines give long roots and
  64-character ids, so the sockets live under a fixed short prefix, in a directory named by a
  digest of (root, sandbox id): always 56 bytes or less, whatever the root and id.

Every operation on a sandbox holds an exclusive ``flock`` on its ``sbs`` directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kata_runtime import faults
from kata_runtime.errors import ContainerExists, ContainerNotFound, KataError, StateCorrupt
from kata_runtime.oci.state import Status

_CLK_TCK = os.sysconf("SC_CLK_TCK")
SOCKET_ROOT = Path("/run/vc/sock")


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (None if there is no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields follow the last ')'
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old or the new file, whole:
    a temporary file beside it, fsync'ed, renamed over it."""
    tmp = path.with_suffix(".tmp")
    faults.point("record")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class ProcRef:
    """A process we started, named so that a reused pid is never mistaken for it."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcRef:
        return cls(pid, process_start_time(pid) or 0)

    def alive(self) -> bool:
        if self.pid <= 0 or process_start_time(self.pid) != self.start:
            return False
        try:  # a zombie is dead for us
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                stat = f.read()
            return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")
        except OSError:
            return False


@dataclass
class ExecRecord:
    id: str
    shim: ProcRef | None = None


@dataclass
class ContainerRecord:
    id: str
    bundle: str
    rootfs: str
    created: str
    status: Status
    annotations: dict[str, str] = field(default_factory=dict)
    process: dict[str, Any] = field(default_factory=dict)  # the spec's process: the base of exec
    shim: ProcRef | None = None
    rootfs_mount: str = ""  # host bind mount of the rootfs in the shared directory
    execs: dict[str, ExecRecord] = field(default_factory=dict)
    creator: ProcRef | None = None  # the kata-runtime that is creating it (while "creating")
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # the spec's, run on the host
    resources: dict[str, Any] = field(default_factory=dict)  # its linux.resources cpu and memory, as updated
    paused_created: bool = False  # paused before its start: resume makes it "created" again, as runc


@dataclass
class SandboxRecord:
    id: str
    accel: str = ""
    qemu: ProcRef | None = None
    proxy: ProcRef | None = None
    shared_dir: str = ""
    netns: str = ""  # the sandbox's network namespace on the host ("" before it is known)
    netns_owned: bool = False  # made by us (and so removed by us), not the engine's
    endpoints: list[dict[str, Any]] = field(default_factory=list)  # network.tcfilter.Endpoint, as JSON
    netmon: ProcRef | None = None
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    vcpus: int = 0  # what the VM has now, hotplugged included (0: not known, the configuration's defaults)
    memory_mib: int = 0
    cgroup: dict[str, Any] | None = None  # cgroups.HostCgroup, as JSON: recorded before it is made

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SandboxRecord:
        def ref(x: Any) -> ProcRef | None:
            return ProcRef(**x) if x else None

        containers = {}
        for cid, c in d.get("containers", {}).items():
            c = dict(c)
            c["status"] = Status(c["status"])
            c["shim"] = ref(c.get("shim"))
            c["creator"] = ref(c.get("creator"))
            c["execs"] = {k: ExecRecord(v["id"], ref(v.get("shim"))) for k, v in c.get("execs", {}).items()}
            containers[cid] = ContainerRecord(**c)
        return cls(id=d["id"], accel=d.get("accel", ""), qemu=ref(d.get("qemu")), proxy=ref(d.get("proxy")),
                   netmon=ref(d.get("netmon")),
                   shared_dir=d.get("shared_dir", ""), netns=d.get("netns", ""),
                   netns_owned=bool(d.get("netns_owned", False)), endpoints=list(d.get("endpoints", [])),
                   containers=containers, vcpus=int(d.get("vcpus", 0)), memory_mib=int(d.get("memory_mib", 0)),
                   cgroup=d.get("cgroup"))


class SandboxStore:
    """Loading, saving, locking and listing of sandbox records under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sbs = root / "sbs"
        self.vms = root / "vm"
        self.members = root / "ctr"

    def sandbox_dir(self, sid: str) -> Path:
        return self.sbs / sid

    def vm_dir(self, sid: str) -> Path:
        return self.vms / sid

    def digest(self, sid: str) -> str:
        """A short name unique to (root, sandbox id), for what must not grow with either."""
        return hashlib.sha256(f"{self.root.absolute()}\0{sid}".encode()).hexdigest()[:24]

    def socket_dir(self, sid: str) -> Path:
        """Where the sandbox's unix sockets live: short and unique to (root, id)."""
        return SOCKET_ROOT / self.digest(sid)

    def proxy_socket(self, sid: str) -> Path:
        return self.socket_dir(sid) / "proxy.sock"

    def reserve(self, sid: str) -> None:
        """Create the sandbox's directories; ContainerExists if the id is taken (by a sandbox or by a
        container that joined one)."""
        if (self.members / sid).exists():
            raise ContainerExists("container with id exists", container=sid, step="create")
        try:
            self.sbs.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.vms.mkdir(parents=True, exist_ok=True, mode=0o700)
            faults.point("state-dir")
            self.sandbox_dir(sid).mkdir(mode=0o700)
        except FileExistsError:
            raise ContainerExists("container with id exists", container=sid, step="create") from None
        except OSError as e:
            raise KataError(f"cannot create state directory: {e}", container=sid, step="create") from None
        try:
            self.vm_dir(sid).mkdir(mode=0o700, exist_ok=True)
            SOCKET_ROOT.mkdir(parents=True, exist_ok=True, mode=0o700)
            faults.point("socket-dir")
            self.socket_dir(sid).mkdir(mode=0o700, exist_ok=True)
        except OSError as e:
            self.remove(sid)  # the id is not taken after all
            raise KataError(f"cannot create state directory: {e}", container=sid, step="create") from None

    @contextlib.contextmanager
    def locked(self, sid: str, step: str = "") -> Iterator[None]:
        """Hold the sandbox's lock. ContainerNotFound if it does not exist (or vanished meanwhile)."""
        path = self.sandbox_dir(sid)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise ContainerNotFound("container does not exist", container=sid, step=step) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not path.exists():
                raise ContainerNotFound("container does not exist", container=sid, step=step)
            yield
        finally:
            os.close(fd)

    def save(self, rec: SandboxRecord) -> None:
        path = self.sandbox_dir(rec.id) / "sandbox.json"
        try:
            write_json_atomically(path, rec.to_json())
        except OSError as e:
            raise KataError(f"cannot write state file {path}: {e.strerror or e}") from None  # the path names it

    def save_cgroup(self, sid: str, cgroup: dict[str, Any]) -> None:
        """Record the sandbox's host cgroup (``cgroups.HostCgroup`` as JSON) beside its record."""
        path = self.sandbox_dir(sid) / "cgroup.json"
        try:
            write_json_atomically(path, cgroup)
        except OSError as e:
            raise KataError(f"cannot write state file {path}: {e.strerror or e}") from None

    def load_cgroup(self, sid: str) -> dict[str, Any] | None:
        """The host cgroup recorded by :meth:`save_cgroup`; None when there is none or it cannot
        be read (the cgroup is then not known: nothing is removed by guess)."""
        try:
            data = json.loads((self.sandbox_dir(sid) / "cgroup.json").read_text())
        except (OSError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def load(self, sid: str, step: str = "") -> SandboxRecord:
        path = self.sandbox_dir(sid) / "sandbox.json"
        try:
            return SandboxRecord.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ContainerNotFound("container does not exist", container=sid, step=step) from None
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise StateCorrupt(f"state file {path} is corrupt: {e}", container=sid, step=step) from None

    def check_root(self, cid: str | None = None, step: str = "") -> None:
        """KataError when the root exists but is not a directory (runc cannot make it either)."""
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            return
        except OSError as e:
            raise KataError(f"state root {self.root}: {e.strerror}", container=cid, step=step) from None
        if not stat.S_ISDIR(st.st_mode):
            raise KataError(f"state root {self.root}: not a directory", container=cid, step=step)

    def sandbox_of(self, cid: str, step: str = "") -> str:
        """The sandbox holding container ``cid``: its own, or the one it joined."""
        self.check_root(cid, step)
        if self.sandbox_dir(cid).is_dir():
            return cid
        try:
            sid = (self.members / cid).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotFound("container does not exist", container=cid, step=step) from None
        except OSError as e:
            raise KataError(f"cannot read {self.members / cid}: {e.strerror}", container=cid, step=step) from None
        if not sid or "/" in sid or sid in (".", ".."):
            raise KataError(f"{self.members / cid} is corrupt", container=cid, step=step)
        return sid

    def reserve_member(self, cid: str, sid: str) -> None:
        """Take id ``cid`` for a container joining sandbox ``sid``; ContainerExists if taken."""
        if self.sandbox_dir(cid).exists():
            raise ContainerExists("container with id exists", container=cid, step="create")
        try:
            self.members.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.members / cid, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise ContainerExists("container with id exists", container=cid, step="create") from None
        except OSError as e:
            raise KataError(f"cannot create state file: {e}", container=cid, step="create") from None
        try:
            os.write(fd, sid.encode())
            os.fsync(fd)
        except OSError as e:  # a full disk: the id is not taken after all
            self.release_member(cid)
            raise KataError(f"cannot write state file {self.members / cid}: {e.strerror or e}", container=cid,
                            step="create") from None
        finally:
            os.close(fd)

    def release_member(self, cid: str) -> None:
        (self.members / cid).unlink(missing_ok=True)

    def member_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.members.iterdir())
        except FileNotFoundError:
            return []

    def sandbox_ids(self) -> list[str]:
        self.check_root()
        try:
            return sorted(p.name for p in self.sbs.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def remove(self, sid: str) -> None:
        shutil.rmtree(self.socket_dir(sid), ignore_errors=True)
        shutil.rmtree(self.vm_dir(sid), ignore_errors=True)
        shutil.rmtree(self.sandbox_dir(sid), ignore_errors=True)
