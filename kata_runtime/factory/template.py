"""The VM template (Kata 1.x's factory): boot once, save, clone; made and remade by itself.

A template is a VM whose RAM lives in a file (``<template_path>/memory``), booted until its agent
answered, then stopped with its device state saved (``state``, QMP ``migrate`` with
``x-ignore-shared``: the RAM is not copied). A sandbox then starts QEMU with the same devices,
that file mapped private (copy on write) and ``-incoming``; it loads the state, continues, and
its agent answers in a fraction of a second instead of a cold boot. The clone's agent is given
the current time and fresh entropy: every clone starts from the template's clock and random state.

With ``[factory] enable_template = true`` the template manages itself (:func:`for_clone`):

- the first ``create`` that finds none makes it, then clones it; concurrent creates make it once:
  the maker holds an exclusive ``flock`` on ``<template_path>.lock``, the others wait for it
  (bounded by ``dial_timeout``) and clone what it made;
- a template made from other inputs than the configuration's (:func:`fingerprint`: QEMU binary,
  kernel, initrd, image (which holds the agent), memory, vCPUs, kernel parameters, machine,
  accelerator, device layout) is remade instead of used;
- a broken one (a file missing, truncated or not QEMU's) is removed and the create boots cold;
  a clone that fails to restore or whose agent does not answer does the same (``sandbox.py``).

Cloning holds the lock shared until the clone's QEMU has mapped the RAM file, so a template is
never removed or remade under a clone that is starting. Remaking never writes into the old RAM
file: it is unlinked, and running clones keep their private mapping of it.

Isolation: clones share the template's RAM pages until they write them, and start from its
kernel's state: the same kernel address layout (KASLR) and, until the agent reseeds it, the same
random state. The VM cache (``cache.py``) shares nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kata_runtime import daemons
from kata_runtime.config import Config
from kata_runtime.errors import AgentError, HypervisorError, KataError, ProxyError
from kata_runtime.hypervisor.qemu import DEVICE_LAYOUT, QemuVM, RamFile
from kata_runtime.phases import phase

log = logging.getLogger(__name__)

STATE_MAGIC = b"QEVM\x00\x00\x00\x03"  # QEMU's migration stream: QEMU_VM_FILE_MAGIC, version 3
TEMPLATE_NAME = "template"  # the template VM's QEMU is ``-name sandbox-template``

# what inspect() finds
USABLE, ABSENT, STALE, BROKEN = "usable", "absent", "stale", "broken"


@dataclass
class TemplatePaths:
    root: Path

    @property
    def memory(self) -> Path:
        return self.root / "memory"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def info(self) -> Path:
        return self.root / "template.json"

    @property
    def vm_dir(self) -> Path:
        return self.root / "vm"

    @property
    def shared(self) -> Path:
        return self.root / "shared"  # the 9p export of the template: never mounted by its guest

    @property
    def lock(self) -> Path:
        """Next to the template, not in it: it outlives the template's removal."""
        return self.root.with_name(self.root.name + ".lock")


def paths(cfg: Config) -> TemplatePaths:
    return TemplatePaths(Path(cfg.factory.template_path))


# -- what a template was made from ----------------------------------------------------------------

def _file_identity(path: str) -> list[Any]:
    """A file as it is now: a rewrite changes its size or times, a replacement its inode, and
    even a copy that keeps the times changes ``ctime`` (which no one can set)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, None, None, None, None]
    return [path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def fingerprint(cfg: Config, accel: str) -> dict[str, Any]:
    """What a clone must share with its template: the hypervisor settings (memory, vCPUs, machine,
    CPU model...), the kernel's command line, the accelerator, the device layout and the exact
    files: QEMU's binary, the kernel, the initrd and the image (the agent lives in the image)."""
    hv = asdict(cfg.hypervisor)
    hv.pop("enable_debug", None)  # what it changes is in the command line below
    vm = QemuVM(TEMPLATE_NAME, cfg.hypervisor, Path("/"), accel, Path("/"))
    files = {key: _file_identity(hv[key]) for key in ("path", "kernel", "initrd", "image")}
    return {"accel": accel, "hypervisor": hv, "cpu": vm.cpu_model(), "kernel_cmdline": vm.kernel_cmdline(),
            "files": files, "devices": DEVICE_LAYOUT, "topology": list(vm.topology())}


_FILE_NAMES = {"path": "QEMU binary", "kernel": "guest kernel", "initrd": "guest initrd", "image": "guest image"}


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """In words, how the inputs of fingerprint ``old`` differ from those of ``new``."""
    if not isinstance(old, dict) or set(old) != set(new):
        return ["it was made by another version of kata-runtime"]
    out = []
    if old["accel"] != new["accel"]:
        out.append(f"accelerator {old['accel']} -> {new['accel']}")
    for key, value in new["hypervisor"].items():
        before = old["hypervisor"].get(key)
        if before != value and key not in _FILE_NAMES:
            out.append(f"{key} {before!r} -> {value!r}")
    for key, ident in new["files"].items():
        before = old["files"].get(key)
        if before == ident:
            continue
        if not before or before[0] != ident[0]:
            out.append(f"{_FILE_NAMES[key]} {before[0] if before else '?'} -> {ident[0]}")
        else:
            out.append(f"{_FILE_NAMES[key]} {ident[0]} {'is gone' if ident[1] is None else 'changed'}")
    if old["cpu"] != new["cpu"] and not any(o.startswith(("cpu_model", "accelerator")) for o in out):
        out.append(f"CPU model {old['cpu']} -> {new['cpu']}")
    if old["kernel_cmdline"] != new["kernel_cmdline"] and not any(o.startswith("kernel_params") for o in out):
        out.append("kernel command line changed")
    if old["devices"] != new["devices"]:
        out.append(f"device layout {old['devices']} -> {new['devices']}")
    if old["topology"] != new["topology"] and not any(o.startswith(("default_", "memory_slots")) for o in out):
        # the host's CPUs or memory changed: the ceilings of hotplug
        out.append(f"vCPUs and memory {' '.join(old['topology'])} -> {' '.join(new['topology'])}")
    return out or ["its inputs changed"]


@dataclass
class Verdict:
    """What :func:`inspect` found at the template path."""

    state: str  # USABLE, ABSENT, STALE or BROKEN
    why: str  # in words, for all but USABLE
    ident: str = ""  # the template's id (template.json), when it has one
    info: dict[str, Any] | None = None


def inspect(cfg: Config, accel: str) -> Verdict:
    """Whether the template at the configured path can be cloned for this configuration, and if
    not, why: there is none, it was made from other inputs (stale), or it is broken."""
    tp = paths(cfg)
    try:
        text = tp.info.read_text()
    except FileNotFoundError:
        if tp.root.exists():
            return Verdict(BROKEN, f"{tp.info} is missing")
        return Verdict(ABSENT, f"no VM template at {tp.root}")
    except OSError as e:
        return Verdict(BROKEN, f"cannot read {tp.info}: {e.strerror}")
    try:
        info = json.loads(text)
        ident = str(info["id"])
        made_from = info["fingerprint"]
    except (ValueError, KeyError, TypeError):
        return Verdict(BROKEN, f"{tp.info} is not a template record")
    now = fingerprint(cfg, accel)
    if made_from != now:
        return Verdict(STALE, "made from other inputs: " + ", ".join(changes(made_from, now)), ident, info)
    want = cfg.hypervisor.default_memory << 20
    try:
        size = tp.memory.stat().st_size
    except OSError:
        return Verdict(BROKEN, f"its RAM file {tp.memory} is missing", ident, info)
    if size != want:
        return Verdict(BROKEN, f"its RAM file {tp.memory} has {size} bytes, not {want}", ident, info)
    try:
        with open(tp.state, "rb") as f:
            head = f.read(len(STATE_MAGIC))
    except OSError:
        return Verdict(BROKEN, f"its device state {tp.state} is missing", ident, info)
    if head != STATE_MAGIC:
        return Verdict(BROKEN, f"its device state {tp.state} is not a QEMU migration stream", ident, info)
    return Verdict(USABLE, "", ident, info)


# -- the lock -------------------------------------------------------------------------------------

class TemplateLock:
    """``flock`` on the file next to the template: shared while a clone starts from it, exclusive
    while it is made or removed. The file may be removed (``factory destroy``) while another
    process waits on it; :meth:`acquire` then locks the file that is there now."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, exclusive: bool, deadline: float) -> bool:
        """Take the lock, waiting until ``deadline`` (time.monotonic()); False if it did not come."""
        assert self.fd is None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, mode)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            os.close(fd)
                            return False
                        time.sleep(0.05)
                try:
                    current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if current:
                self.fd = fd
                return True
            os.close(fd)  # removed while we waited: lock the new one

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        """Unlink the lock file (held exclusively: those waiting on it then take a new one)."""
        assert self.fd is not None
        self.path.unlink(missing_ok=True)


# what the creates do, from what inspect() found and the lock they hold
CLONE, LOOK_SHARED, LOOK_EXCLUSIVE, BUILD, REMOVE, GIVE_UP = (
    "clone", "look again, shared", "look again, exclusive", "build", "remove", "give up")


def next_step(state: str, exclusive: bool, built: bool) -> str:
    """A create's next step towards a clone. Only a usable template seen under the shared lock is
    cloned (the exclusive one is for making and removing); a create that finds it unusable under
    the shared lock looks again under the exclusive one (another create may have made it
    meanwhile); there, it makes an absent or stale one and removes a broken one. What it has just
    made must be usable: if not, it gives up rather than make it again."""
    if state == USABLE:
        return CLONE if not exclusive else LOOK_SHARED
    if built:
        return GIVE_UP
    if not exclusive:
        return LOOK_EXCLUSIVE
    return REMOVE if state == BROKEN else BUILD


@dataclass
class Clonable:
    """A usable template, with its lock held shared: release it once the clone's QEMU has mapped
    the RAM file."""

    paths: TemplatePaths
    ident: str
    lock: TemplateLock
    built: bool  # made by this very create


def for_clone(cfg: Config, accel: str, timeout: float) -> tuple[Clonable | None, str]:
    """The template to clone for this configuration, made first if there is none or it is stale
    (see the module docstring); or (None, why) when the create should boot cold instead: a broken
    template (removed), a template that could not be made, or the lock not had within ``timeout``."""
    tp = paths(cfg)
    lock = TemplateLock(tp.lock)
    deadline = time.monotonic() + timeout
    exclusive = built = False
    while True:
        if not lock.acquire(exclusive, deadline):
            return None, (f"the VM template at {tp.root} was being made or removed by another kata-runtime "
                          f"for more than {timeout:g}s")
        try:
            verdict = inspect(cfg, accel)
            step = next_step(verdict.state, exclusive, built)
            if step == CLONE:
                clonable = Clonable(tp, verdict.ident, lock, built)
                lock = TemplateLock(tp.lock)  # the caller's now: not released below
                return clonable, ""
            if step == GIVE_UP:
                return None, f"the VM template just made at {tp.root} is not usable: {verdict.why}"
            if step == REMOVE:
                remove(tp)
                return None, (f"the VM template at {tp.root} is broken ({verdict.why}): removed, the next create "
                              "makes a new one")
            if step == BUILD:
                log.debug("making the VM template at %s (%s)", tp.root, verdict.why)
                try:
                    build(cfg, accel, cfg.agent.dial_timeout)
                except (HypervisorError, AgentError, ProxyError, OSError) as e:
                    return None, f"cannot make the VM template at {tp.root}: {e}"
                built = True
                phase("template_made")
            exclusive = step == LOOK_EXCLUSIVE
        finally:
            lock.release()


def remove_broken(cfg: Config, clonable: Clonable, timeout: float = 10.0) -> bool:
    """Remove the template a clone failed to start from, unless it was replaced meanwhile (another
    create remade it) or its lock does not come within ``timeout``; True if removed."""
    lock = TemplateLock(clonable.paths.lock)
    if not lock.acquire(True, time.monotonic() + timeout):
        return False
    try:
        if _ident(clonable.paths) != clonable.ident:
            return False
        remove(clonable.paths)
        return True
    finally:
        lock.release()


def _ident(tp: TemplatePaths) -> str:
    try:
        return str(json.loads(tp.info.read_text())["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def remove(tp: TemplatePaths) -> None:
    """Remove the template's files (and the VM of a making that was killed). Running clones keep
    their private copy of the RAM file's pages."""
    if tp.vm_dir.exists():
        try:
            pid = int((tp.vm_dir / "pid").read_text())
            daemons.kill_exact(pid, f"sandbox-{TEMPLATE_NAME}".encode())
        except (OSError, ValueError):
            pass
    shutil.rmtree(tp.root, ignore_errors=True)


# -- the commands ---------------------------------------------------------------------------------

def status(cfg: Config, accel: str) -> list[str]:
    """``factory status``: whether a template is there and usable for this configuration, and if
    not, why (and what the next create does about it)."""
    tp = paths(cfg)
    v = inspect(cfg, accel)
    enabled = cfg.factory.enable_template
    if v.state == ABSENT:
        return [f"no VM template at {tp.root}" + (" (the next create makes one)" if enabled else "")]
    info = v.info or {}
    made = (f"created {info.get('created', '?')}, {info.get('memory_mib', '?')} MiB guest, accelerator "
            f"{(info.get('fingerprint') or {}).get('accel', '?')}")
    if v.state == USABLE:
        return [f"VM template at {tp.root}: {made}; usable for this configuration"]
    then = {STALE: "the next create makes a new one", BROKEN: "the next create removes it and boots cold"}[v.state]
    return [f"VM template at {tp.root}" + (f": {made}" if v.info else "") +
            f"; not usable for this configuration: {v.why}" + (f" ({then})" if enabled else "")]


def destroy(cfg: Config, timeout: float) -> bool:
    """``factory destroy``: remove the template and its lock file; False if there was none."""
    tp = paths(cfg)
    lock = TemplateLock(tp.lock)
    if not tp.root.exists() and not tp.lock.exists():
        return False
    if not lock.acquire(True, time.monotonic() + timeout):
        raise KataError(f"the VM template at {tp.root} is being made by another kata-runtime", step="factory destroy")
    try:
        existed = tp.root.exists()
        remove(tp)
        lock.remove()
        return existed
    finally:
        lock.release()


def init(cfg: Config, accel: str, timeout: float) -> TemplatePaths:
    """``factory init``: make the template now (refused if one is there)."""
    tp = paths(cfg)
    lock = TemplateLock(tp.lock)
    if not lock.acquire(True, time.monotonic() + timeout):
        raise KataError(f"the VM template at {tp.root} is being made by another kata-runtime", step="factory init")
    try:
        if tp.root.exists():
            raise KataError(f"a VM template already exists at {tp.root} (kata-runtime factory destroy first)",
                            step="factory init")
        return build(cfg, accel, timeout)
    finally:
        lock.release()


def build(cfg: Config, accel: str, timeout: float) -> TemplatePaths:
    """Boot the template VM, wait for its agent, save it (call with the lock held exclusively).
    Leaves only the template's files behind (no process), and nothing at all when it fails."""
    from kata_runtime import agent as agents
    from kata_runtime.factory.ready import wait_agent

    tp = paths(cfg)
    remove(tp)  # a stale template: its RAM file is unlinked, never written into (clones map it)
    for d in (tp.root, tp.vm_dir, tp.shared):
        d.mkdir(parents=True, exist_ok=True)
    vm = QemuVM(TEMPLATE_NAME, cfg.hypervisor, tp.vm_dir, accel, tp.shared,
                ram=RamFile(tp.memory, clone=False))
    proxy = None
    agent = None
    try:
        vm.launch(cfg.source)
        proxy = daemons.start_proxy(TEMPLATE_NAME, vm.paths.channel, tp.vm_dir / "proxy.sock",
                                    tp.vm_dir / "proxy.log", cfg.proxy_path)
        agent = agents.connect(cfg.agent.transport, str(tp.vm_dir / "proxy.sock"), TEMPLATE_NAME)
        wait_agent(agent, vm, timeout, TEMPLATE_NAME, "factory init")
        agent.wait_warm(timeout)  # every clone then starts with the OCI runtime in its page cache
        agent.close()
        agent = None
        vm.save(tp.state)
        vm.stop()
        daemons.kill(proxy)
        record = {"id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "memory_mib": cfg.hypervisor.default_memory, "fingerprint": fingerprint(cfg, accel)}
        tmp = tp.info.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, tp.info)  # last: a template without its record is broken, never used
        shutil.rmtree(tp.vm_dir, ignore_errors=True)
        return tp
    except BaseException:
        if agent is not None:
            agent.close()
        with contextlib.suppress(HypervisorError):
            vm.adopt()  # launched, but its pid was not read: found by its pid file
            vm.stop()
        daemons.kill(proxy)
        shutil.rmtree(tp.root, ignore_errors=True)
        raise
