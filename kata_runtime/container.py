"""Lifecycle operations on containers: the library the CLI calls (one function per command).

Every function takes a :class:`RuntimeOptions`, raises only :class:`kata_runtime.errors.KataError`
subclasses for conditions a user can meet, and leaves nothing behind when it fails.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import secrets
import signal as _signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_runtime import daemons
from kata_runtime.config import Config, load_config
from kata_runtime.errors import (
    AgentUnresponsive,
    ContainerNotFound,
    HypervisorError,
    InvalidArgument,
    InvalidState,
    KataError,
    StateCorrupt,
)
from kata_runtime.hostpaths import check_console_socket, check_pid_file, write_pid_file
from kata_runtime.oci.state import ContainerState, Status
from kata_runtime.phases import phase
from kata_runtime.store import ContainerRecord, ExecRecord, ProcRef, SandboxRecord, SandboxStore

if TYPE_CHECKING:  # sandbox.py is imported only by the commands that boot or talk to a VM
    from kata_runtime.cgroups import HostCgroup
    from kata_runtime.resources import VMSize
    from kata_runtime.sandbox import AgentFactory, HypervisorFactory, Sandbox

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/run/vc")
# delete's SIGKILL to a workload before its VM goes (so that its shim reports 128+9): a guest that
# does not answer within this is hung, and everything in it ends with the VM anyway
PRE_KILL_TIMEOUT = 10.0


@dataclass
class RuntimeOptions:
    """Global flags of the CLI, resolved."""

    root: Path = DEFAULT_ROOT
    kata_config: Path | None = None  # --kata-config; None = the standard search path
    debug: bool = False
    systemd_cgroup: bool = False
    # the seams of the lifecycle (None: QEMU and the gRPC agent); unit tests give fakes
    hypervisor: HypervisorFactory | None = None
    agent: AgentFactory | None = None


# -- helpers ----------------------------------------------------------------------------------------

def rfc3339_nano(ns: int) -> str:
    """UTC in Go's RFC3339Nano, as runc prints ``created``: trailing zeros of the fraction dropped."""
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.UTC)
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def current_status(rec: SandboxRecord, c: ContainerRecord) -> Status:
    """The stored status, corrected by what still runs: a dead VM or shim means stopped, and so
    does a "creating" whose kata-runtime died (killed mid-create: only delete is left to do)."""
    if c.status is Status.CREATING:
        return Status.STOPPED if c.creator is not None and not c.creator.alive() else c.status
    if c.status in (Status.CREATED, Status.RUNNING, Status.PAUSED):
        if rec.qemu is None or not rec.qemu.alive():
            return Status.STOPPED
        if c.shim is None or not c.shim.alive():  # also paused: KILL ends a frozen workload
            return Status.STOPPED
    return c.status


def _to_state(rec: SandboxRecord, c: ContainerRecord) -> ContainerState:
    status = current_status(rec, c)
    pid = c.shim.pid if c.shim is not None and status is not Status.STOPPED else 0
    return ContainerState(id=c.id, pid=pid, status=status, bundle=c.bundle, rootfs=c.rootfs, created=c.created,
                          annotations=dict(c.annotations))


class _Context:
    """What every command needs: options, configuration (loaded lazily) and the store."""

    def __init__(self, opts: RuntimeOptions) -> None:
        self.opts = opts
        self.store = SandboxStore(opts.root)
        self._cfg: Config | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = load_config(self.opts.kata_config)
        return self._cfg

    def sandbox(self, rec: SandboxRecord) -> Sandbox:
        from kata_runtime.sandbox import Sandbox

        return Sandbox(self.store, self.cfg, rec, self.opts.hypervisor, self.opts.agent)


def _load_container(store: SandboxStore, cid: str, step: str) -> tuple[SandboxRecord, ContainerRecord]:
    """The record of ``cid``'s sandbox and of ``cid`` in it (read without the lock: writes are atomic).
    A sandbox whose own container was deleted while others of its pod still run has no record of
    it: that id no longer exists."""
    from kata_runtime.oci.spec import validate_id

    validate_id(cid)
    rec = store.load(store.sandbox_of(cid, step), step)
    c = rec.containers.get(cid)
    if c is None:
        raise ContainerNotFound("container does not exist", container=cid, step=step)
    return rec, c


@contextlib.contextmanager
def _locked_container(ctx: _Context, cid: str, step: str) -> Iterator[tuple[SandboxRecord, ContainerRecord]]:
    """Hold the sandbox's lock and yield the records, loaded under it."""
    from kata_runtime.oci.spec import validate_id

    validate_id(cid)
    sid = ctx.store.sandbox_of(cid, step)
    with ctx.store.locked(sid, step):
        yield _load_container(ctx.store, cid, step)


class _Interrupted(KataError):
    """SIGTERM/SIGINT/SIGHUP arrived while we were creating: undo and exit."""


@contextlib.contextmanager
def _interruptible(cid: str, step: str) -> Iterator[None]:
    """Turn termination signals into an exception, so that the undo path runs."""
    owner = os.getpid()

    def handler(signo: int, _frame: Any) -> None:
        if os.getpid() != owner:  # a forked child (a library's helper) is not the one creating
            _signal.signal(signo, _signal.SIG_DFL)
            os.kill(os.getpid(), signo)
            return
        raise _Interrupted(f"interrupted by signal {_signal.Signals(signo).name}", container=cid, step=step)

    old = {s: _signal.signal(s, handler) for s in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            _signal.signal(s, h)


# -- create ---------------------------------------------------------------------------------------

def _create(ctx: _Context, cid: str, bundle_path: Path, *, pid_file: Path | None, console_socket: Path | None,
            no_pivot: bool, detach_shim: bool) -> tuple[ContainerState, subprocess.Popen[bytes]]:
    from kata_runtime.oci.guest_spec import joins_sandbox, translate
    from kata_runtime.oci.spec import load_bundle, validate_id

    validate_id(cid)
    try:
        bundle = load_bundle(bundle_path, cid, no_pivot=no_pivot)  # runc's refusals among them
    except KataError as e:
        e.step = e.step or "create"
        raise
    process = bundle.spec.get("process") or {}
    tty = bool(process.get("terminal"))
    _check_terminal_flags(cid, "create", tty, console_socket, detach_shim)
    _check_paths(cid, "create", pid_file, console_socket)
    joins = joins_sandbox(cid, bundle.spec)
    pod: SandboxRecord | None = None
    if joins is not None:
        pod = _pod_to_join(ctx, cid, joins)
    peers = {r.shim.pid: k for k, r in pod.containers.items() if r.shim is not None} if pod is not None else {}
    guest = translate(cid, bundle.spec, bundle.path, bundle.rootfs, peers)  # refusals before anything is made
    ctx.cfg  # noqa: B018 - configuration errors too, before anything is made
    plan = _plan_resources(ctx, cid, bundle.spec, joins)
    c = ContainerRecord(id=cid, bundle=str(bundle.path), rootfs=str(bundle.rootfs),
                        created=rfc3339_nano(time.time_ns()), status=Status.CREATING,
                        annotations=dict(bundle.spec.get("annotations") or {}), process=process,
                        creator=ProcRef.of(os.getpid()), hooks=guest.hooks, resources=plan.kept)
    made = _ContainerInVM(ctx, c, bundle, guest, no_pivot=no_pivot, detach_shim=detach_shim,
                          console_socket=console_socket, plan=plan)
    rec, shim = _join(ctx, made, joins) if joins is not None else _create_sandbox(ctx, made)
    if pid_file is not None:
        try:
            write_pid_file(pid_file, shim.pid, cid, "create")
        except KataError:
            with contextlib.suppress(KataError):
                delete(ctx.opts, cid, force=True)
            raise
    return _to_state(rec, c), shim


def _pod_to_join(ctx: _Context, cid: str, sid: str) -> SandboxRecord:
    """The record of the sandbox ``cid`` joins, which must exist and run."""
    from kata_runtime.oci.spec import validate_id

    try:
        validate_id(sid)
        rec = ctx.store.load(ctx.store.sandbox_of(sid, "create"), "create")
    except KataError:
        raise ContainerNotFound(f"sandbox {sid} (annotation io.kubernetes.cri.sandbox-id) does not exist",
                                container=cid, step="create") from None
    if rec.id != sid:
        raise InvalidArgument(f"{sid} (annotation io.kubernetes.cri.sandbox-id) is a container of sandbox {rec.id}, "
                              "not a sandbox", container=cid, step="create")
    if rec.qemu is None or not rec.qemu.alive():
        raise InvalidState(f"sandbox {sid} is not running (its VM is gone)", container=cid, step="create")
    return rec


@dataclass
class _ResourcePlan:
    """What a container's ``linux.resources`` mean on the host, worked out before anything is made."""

    resources: dict[str, Any]  # the spec's linux.resources
    kept: dict[str, Any]  # what of it the record keeps (resources.sizing_part)
    size: VMSize | None  # the VM its sandbox boots with (None for a pod's member: the pod's VM grows)
    cgroup: HostCgroup | None  # its sandbox's cgroup on the host (None for a member: it joins the pod's)


def _plan_resources(ctx: _Context, cid: str, spec: dict[str, Any], joins: str | None) -> _ResourcePlan:
    """The VM size and host cgroup of a container's spec; the refusals (more than the VM may have,
    a cpuset of CPUs the host has not, a malformed cgroups path) before anything is made."""
    from kata_runtime import cgroups
    from kata_runtime import resources as sizing

    linux = spec.get("linux") or {}
    res = linux.get("resources")
    res = res if isinstance(res, dict) else {}
    try:
        cgroups.check_cpuset(res, "")
        kept = sizing.sizing_part(res)
        if joins is not None:
            return _ResourcePlan(res, kept, None, None)
        size = sizing.size_for(sizing.limits(ctx.cfg.hypervisor), [kept])
        cg = cgroups.plan(str(linux.get("cgroupsPath") or ""), cid, ctx.opts.systemd_cgroup)
    except KataError as e:
        e.container, e.step = e.container or cid, e.step or "create"
        raise
    return _ResourcePlan(res, kept, size, cg)


def _fit_vm(sandbox: Sandbox, cid: str, step: str) -> None:
    """Grow the sandbox's VM to what its containers' resources need now (:mod:`kata_runtime.resources`):
    hotplug vCPUs and memory, then the agent onlines them. A VM is never shrunk: what is plugged
    stays, as in Kata 1.x (a lower limit binds in the guest's cgroup)."""
    from kata_runtime import resources as sizing

    rec = sandbox.rec
    want = sizing.size_for(sizing.limits(sandbox.cfg.hypervisor), [k.resources for k in rec.containers.values()])
    vm = sandbox.vm()
    now = sizing.VMSize(rec.vcpus, rec.memory_mib) if rec.vcpus and rec.memory_mib else vm.current_size()
    add = sizing.growth(now, want)
    if not add.vcpus and not add.memory_mib:
        return
    t0 = time.monotonic()
    if add.vcpus:
        vm.hotplug_vcpus(add.vcpus)
        rec.vcpus = now.vcpus + add.vcpus
        sandbox.save()
    if add.memory_mib:
        vm.hotplug_memory(add.memory_mib)
        rec.memory_mib = now.memory_mib + add.memory_mib
        sandbox.save()
    sandbox.agent(cid).online_cpu_mem(add.vcpus, step)
    phase("vm_resized")
    log.debug("sandbox %s: +%d vCPUs, +%d MiB in %.3fs: %d vCPUs, %d MiB", rec.id, add.vcpus, add.memory_mib,
              time.monotonic() - t0, rec.vcpus, rec.memory_mib)


@dataclass
class _ContainerInVM:
    """What it takes to make one container in a sandbox's VM (its own sandbox, or a pod's)."""

    ctx: _Context
    c: ContainerRecord
    bundle: Any  # oci.spec.Bundle
    guest: Any  # oci.guest_spec.GuestSpec
    no_pivot: bool
    detach_shim: bool
    console_socket: Path | None
    plan: _ResourcePlan

    def make(self, sandbox: Sandbox) -> subprocess.Popen[bytes]:
        """Share its rootfs and mounts, create it in the guest, start its shim, run the create
        hooks. Each resource is recorded as it is made (the caller undoes them on failure)."""
        from kata_runtime.oci.hooks import CREATE_KINDS, hook_state, run_hooks

        c, guest = self.c, self.guest
        # shared writable: root.readonly is applied in the guest, after the OCI runtime has made
        # the mount points it needs (as runc does on a host)
        c.rootfs_mount, guest_rootfs = sandbox.share_rootfs(c.id, self.bundle.rootfs, readonly=False)
        sandbox.share(c.id, guest.shares)
        sandbox.save()
        sandbox.agent(c.id).create_container(c.id, guest.spec, guest_rootfs, [], self.no_pivot,
                                             guest.sandbox_sysctls)
        phase("container_in_guest")
        tty = bool(c.process.get("terminal"))
        shim = _start_shim(c.id, c.id, sandbox, self.detach_shim, tty, self.console_socket,
                           c.process.get("args") or [], "create")
        c.shim = ProcRef.of(shim.pid)
        sandbox.save()
        phase("shim_started")
        sandbox.join_cgroup(sandbox.rec.qemu, sandbox.rec.proxy, c.shim)  # the whole sandbox, as Kata 1.x
        state = hook_state(c.id, "creating", shim.pid, c.bundle, c.annotations)
        for kind in CREATE_KINDS:
            run_hooks(kind, c.hooks, state, c.id, "create")
        return shim


def _create_sandbox(ctx: _Context, made: _ContainerInVM) -> tuple[SandboxRecord, subprocess.Popen[bytes]]:
    """A container that is its own sandbox: boot the VM, then make the container in it."""
    c = made.c
    cid = c.id
    ctx.store.reserve(cid)
    rec = SandboxRecord(id=cid)
    rec.containers[cid] = c
    sandbox = ctx.sandbox(rec)
    try:
        with ctx.store.locked(cid, "create"), _interruptible(cid, "create"):
            assert made.plan.size is not None and made.plan.cgroup is not None
            rec.vcpus, rec.memory_mib = made.plan.size.vcpus, made.plan.size.memory_mib
            sandbox.save()
            sandbox.setup_cgroup(made.plan.cgroup, made.plan.resources)
            sandbox.setup_network(made.guest.network)
            sandbox.boot()
            shim = made.make(sandbox)
            sandbox.connect_network()
            sandbox.start_netmon(_runtime_path(), str(ctx.opts.kata_config or ""))
            c.status = Status.CREATED
            sandbox.save()
            phase("container_created")
            return rec, shim
    except BaseException as e:
        try:
            sandbox.destroy()
        except KataError as cleanup:
            log.error("create %s: cleanup after failure: %s", cid, cleanup)
        if isinstance(e, KataError) and e.container is None:
            e.container, e.step = cid, "create"
        raise


def _join(ctx: _Context, made: _ContainerInVM, sid: str) -> tuple[SandboxRecord, subprocess.Popen[bytes]]:
    """A container of a pod: make it in the pod's running VM."""
    from kata_runtime.network import netns

    c = made.c
    cid = c.id
    ctx.store.reserve_member(cid, sid)
    sandbox: Sandbox | None = None
    try:
        with ctx.store.locked(sid, "create"), _interruptible(cid, "create"):
            rec = _pod_to_join(ctx, cid, sid)  # again, under the lock
            want = made.guest.network.path
            if want and rec.netns and os.path.exists(rec.netns) and not netns.same(want, rec.netns):
                raise InvalidArgument(f"linux.namespaces: network namespace {want} is not the one of sandbox {sid} "
                                      f"({rec.netns}): the containers of a pod share its network", container=cid,
                                      step="create")
            rec.containers[cid] = c
            sandbox = ctx.sandbox(rec)
            sandbox.save()
            _fit_vm(sandbox, cid, "create")  # the pod's VM grows by what the member asks for
            _widen_cpuset(sandbox, str((c.resources.get("cpu") or {}).get("cpus") or ""))
            _pod_cpu_limits(sandbox)
            shim = made.make(sandbox)
            c.status = Status.CREATED
            sandbox.save()
            phase("container_created")
            return rec, shim
    except BaseException as e:
        if sandbox is not None:
            try:
                sandbox.remove_container(cid)
            except KataError as cleanup:
                log.error("create %s: cleanup after failure: %s", cid, cleanup)
        ctx.store.release_member(cid)
        if isinstance(e, KataError) and e.container is None:
            e.container, e.step = cid, "create"
        raise


def _runtime_path() -> str:
    """This kata-runtime, for the helpers that call it back (kata-netmon)."""
    import shutil
    import sys

    me = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return me if me and os.access(me, os.X_OK) else (shutil.which("kata-runtime") or "kata-runtime")


def network_sync(opts: RuntimeOptions, cid: str) -> list[str]:
    """Make the VM's network follow the sandbox's namespace again (what kata-netmon asks for):
    returns the interfaces connected now."""
    ctx = _Context(opts)
    with _locked_container(ctx, cid, "kata-network") as (rec, c):
        if current_status(rec, c) in (Status.STOPPED, Status.CREATING):
            raise InvalidState("container not running", container=cid, step="kata-network")
        return ctx.sandbox(rec).connect_network()


def network_interfaces(opts: RuntimeOptions, cid: str) -> list[dict[str, Any]]:
    """The interfaces of the sandbox's namespace that are connected to the VM (name, MAC, MTU,
    addresses, tap)."""
    rec, _c = _load_container(SandboxStore(opts.root), cid, "kata-network")
    return [dict(e) for e in rec.endpoints]


def _check_paths(cid: str, step: str, pid_file: Path | None, console_socket: Path | None) -> None:
    """The engine's paths, checked before anything is made (see :mod:`kata_runtime.hostpaths`)."""
    if pid_file is not None:
        check_pid_file(pid_file, cid, step)
    if console_socket is not None:
        check_console_socket(console_socket, cid, step)


def _check_terminal_flags(cid: str, step: str, tty: bool, console_socket: Path | None, detach: bool) -> None:
    """runc's rules: a detached terminal needs a console socket, a console socket needs a terminal."""
    if tty and detach and console_socket is None:
        raise InvalidArgument("cannot allocate tty if runc will detach without setting console socket",
                              container=cid, step=step)
    if console_socket is not None and (not tty or not detach):
        raise InvalidArgument("cannot use console socket if runc will not detach or allocate tty",
                              container=cid, step=step)


def _start_shim(cid: str, exec_id: str, sandbox: Sandbox, detach: bool, tty: bool, console_socket: Path | None,
                command: list[str], step: str) -> subprocess.Popen[bytes]:
    """The process's shim, in the sandbox's network namespace; with a console socket, on a fresh
    pty whose master goes to the engine."""
    slave = daemons.send_console(console_socket, cid, step) if console_socket is not None else None
    try:
        return daemons.start_shim(cid, exec_id, sandbox.proxy_socket, detach=detach, tty=tty, terminal_fd=slave,
                                  configured=sandbox.cfg.shim_path, step=step, netns=sandbox.rec.netns,
                                  command=[str(a) for a in command])
    finally:
        if slave is not None:
            os.close(slave)


def create(opts: RuntimeOptions, cid: str, bundle: Path, *, pid_file: Path | None = None,
           console_socket: Path | None = None, no_pivot: bool = False) -> ContainerState:
    """Boot the sandbox VM (if the container is its own sandbox), create the container in it,
    start its kata-shim (which keeps this process's stdio) and return once it is ``created``.
    The shim's pid goes to ``pid_file``."""
    state, _shim = _create(_Context(opts), cid, bundle, pid_file=pid_file, console_socket=console_socket,
                           no_pivot=no_pivot, detach_shim=True)
    return state


def start(opts: RuntimeOptions, cid: str) -> None:
    """Start the user process of a ``created`` container."""
    ctx = _Context(opts)
    with _locked_container(ctx, cid, "start") as (rec, c):
        _start_locked(ctx, rec, c)


def _start_locked(ctx: _Context, rec: SandboxRecord, c: ContainerRecord) -> None:
    status = current_status(rec, c)
    if not status.can_start():
        msg = {Status.RUNNING: "cannot start an already running container",
               Status.STOPPED: "cannot start a container that has stopped",
               Status.PAUSED: "cannot start a container in the paused state"}.get(status, f"container is {status}")
        raise InvalidState(msg, container=c.id, step="start")
    from kata_runtime.oci.hooks import hook_state, run_hooks

    pid = c.shim.pid if c.shim is not None else 0
    run_hooks("startContainer", c.hooks, hook_state(c.id, "created", pid, c.bundle, c.annotations), c.id, "start")
    sandbox = ctx.sandbox(rec)
    sandbox.agent(c.id).start_container(c.id)
    c.status = Status.RUNNING
    sandbox.save()
    phase("container_started")
    run_hooks("poststart", c.hooks, hook_state(c.id, "running", pid, c.bundle, c.annotations), c.id, "start")


def state(opts: RuntimeOptions, cid: str) -> ContainerState:
    """The container's current state (status refreshed from the liveness of shim and VM)."""
    return _to_state(*_load_container(SandboxStore(opts.root), cid, "state"))


def kill(opts: RuntimeOptions, cid: str, signal: int, *, all_processes: bool = False) -> None:
    """Send ``signal`` to the container's init process (or to all its processes)."""
    ctx = _Context(opts)
    with _locked_container(ctx, cid, "kill") as (rec, c):
        status = current_status(rec, c)
        if not status.can_kill():
            if all_processes and status is Status.STOPPED:
                return  # engines clean up with `kill --all ID 9` after the workload exited
            raise InvalidState("container not running", container=cid, step="kill")
        sandbox = ctx.sandbox(rec)
        try:
            sandbox.agent(cid).signal_process(cid, "", signal, all_processes)
        except AgentUnresponsive as e:
            # a guest that does not answer (hung, stopped) cannot be asked; SIGKILL of the only
            # container of its VM still ends every process of it: with the VM (engines clean up
            # with `kill --all ID 9` and must not fail there)
            if signal != _signal.SIGKILL or any(k != cid for k in rec.containers) or not sandbox.vm_alive():
                raise
            log.warning("%s: SIGKILL ends its VM instead", e)
            try:
                sandbox.vm().stop()
            except HypervisorError as stop_error:
                raise KataError(f"{e.msg}; {stop_error.msg}", container=cid, step="kill") from None


def delete(opts: RuntimeOptions, cid: str, *, force: bool = False) -> None:
    """Remove the container and, when it is the last of its sandbox, the VM and everything else.
    With ``force``, a sandbox whose record is corrupt goes too (see :func:`_delete_unreadable`)."""
    ctx = _Context(opts)
    try:
        _delete(ctx, cid, force)
    except StateCorrupt as e:
        if not force:
            raise
        log.warning("%s: removing what the sandbox's id names", e)
        _delete_unreadable(ctx, cid)


def _delete_unreadable(ctx: _Context, cid: str) -> None:
    """``delete --force`` of a sandbox whose record cannot be read: what it recorded is unknown,
    so what its id names goes: its QEMU (found by its pid file; kata-proxy, kata-shims and
    kata-netmon end with it), the network namespace we made for it, its host cgroup (from the
    cgroup's own record, see store.py), its shared directory and mounts, its sockets and state."""
    from kata_runtime.network import netns

    sid = ctx.store.sandbox_of(cid, "delete")
    with ctx.store.locked(sid, "delete"):
        rec = SandboxRecord(id=sid)
        ours = netns.NETNS_DIR / f"kata-{ctx.store.digest(sid)}"  # as Sandbox.setup_network names it
        if ours.exists():
            rec.netns, rec.netns_owned = str(ours), True
        rec.cgroup = _recorded_cgroup(ctx.store.load_cgroup(sid))
        ctx.sandbox(rec).destroy()
    if cid != sid:
        ctx.store.release_member(cid)


def _recorded_cgroup(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cgroup record of a sandbox whose own record is corrupt, if it is whole and names only
    directories in the host's cgroup hierarchies (what it names is removed)."""
    from kata_runtime import cgroups

    if data is None:
        return None
    try:
        cg = cgroups.HostCgroup.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    mounts = tuple(h.mount.rstrip("/") + "/" for h in cgroups.hierarchies())
    if not all(d.startswith(mounts) and "/../" not in d + "/" for d in [*cg.dirs, *cg.made]):
        return None
    return cg.to_json()


def _delete(ctx: _Context, cid: str, force: bool) -> None:
    with _locked_container(ctx, cid, "delete") as (rec, c):
        status = current_status(rec, c)
        if not status.can_delete() and not force:
            raise InvalidState(f"cannot delete container {cid} that is not stopped: {status}", container=cid,
                               step="delete")
        sandbox = ctx.sandbox(rec)
        hung = False
        if status is not Status.STOPPED and sandbox.vm_alive():
            # kill the workload first so that its shim reports 128+9 rather than a lost VM
            try:  # best effort, and not long: a hung guest goes with its VM
                sandbox.agent(cid).signal_process(cid, "", _signal.SIGKILL, True, timeout=PRE_KILL_TIMEOUT)
                daemons.wait_gone(c.shim, 5.0)
            except AgentUnresponsive:
                hung = True  # nor will it flush anything
            except KataError:
                pass
        others = [k for k in rec.containers if k != cid]
        if others and sandbox.vm_alive():
            sandbox.remove_container(cid)  # the pod's VM stays for the others
            if cid != rec.id:
                with contextlib.suppress(KataError):  # its limit is the pod's no more; best effort
                    _pod_cpu_limits(sandbox)
        else:  # the last container of the sandbox (or its VM is gone anyway)
            sandbox.destroy(flush_guest=status is not Status.STOPPED and not hung)
        if cid != rec.id:
            ctx.store.release_member(cid)
    if c.hooks.get("poststop"):
        from kata_runtime.oci.hooks import hook_state, run_hooks

        run_hooks("poststop", c.hooks, hook_state(cid, "stopped", 0, c.bundle, c.annotations), cid, "delete")


def run(opts: RuntimeOptions, cid: str, bundle: Path, *, pid_file: Path | None = None,
        console_socket: Path | None = None, detach: bool = False, no_pivot: bool = False,
        keep: bool = False) -> int:
    """create + start; in the foreground wait for the workload, delete the container (unless
    ``keep``: it stays, stopped, for ``delete``) and return its exit status (128+N when killed by
    signal N). Detached, return 0 once it runs."""
    ctx = _Context(opts)
    _state, shim = _create(ctx, cid, bundle, pid_file=pid_file, console_socket=console_socket,
                           no_pivot=no_pivot, detach_shim=detach)
    try:
        start(opts, cid)
    except BaseException:
        with contextlib.suppress(KataError):
            delete(opts, cid, force=True)
        raise
    if detach:
        return 0
    status = _wait_forwarding_signals(shim)
    phase("workload_exited")
    if keep:
        return status
    try:
        delete(opts, cid, force=True)
    except KataError as e:
        log.error("%s", e)
    phase("deleted")
    return status


def _wait_forwarding_signals(shim: subprocess.Popen[bytes]) -> int:
    """Wait for a foreground shim; signals sent to us go to it (and so to the workload)."""
    forwarded = [s for s in _signal.valid_signals()
                 if s not in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD)]

    def forward(signo: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(shim.pid, signo)

    old = {}
    for s in forwarded:
        with contextlib.suppress(OSError, ValueError):
            old[s] = _signal.signal(s, forward)
    try:
        code = shim.wait()
    finally:
        for s, h in old.items():
            _signal.signal(s, h)
    return code if code >= 0 else 128 - code


def exec_process(opts: RuntimeOptions, cid: str, process: dict[str, Any], *, detach: bool = False,
                 pid_file: Path | None = None, console_socket: Path | None = None) -> int:
    """Run an extra process (a full OCI ``process`` object) in a created or running container.
    Foreground: return its exit status. Detached: return 0 once it runs; its kata-shim's pid goes to
    ``pid_file``."""
    ctx = _Context(opts)
    tty = bool(process.get("terminal"))
    _check_terminal_flags(cid, "exec", tty, console_socket, detach)
    _check_paths(cid, "exec", pid_file, console_socket)
    if not process.get("args"):
        raise InvalidArgument("process args cannot be empty", container=cid, step="exec")
    exec_id = secrets.token_hex(8)
    with _locked_container(ctx, cid, "exec") as (rec, c):
        status = current_status(rec, c)
        if not status.can_exec():
            raise InvalidState(f"cannot exec in a {status} container", container=cid, step="exec")
        from kata_runtime.oci.guest_spec import guest_process

        sandbox = ctx.sandbox(rec)
        phase("exec_locked")
        sandbox.agent(cid).exec_process(cid, exec_id, guest_process(process))
        phase("exec_in_guest")
        shim = _start_shim(cid, exec_id, sandbox, detach, tty, console_socket, process.get("args") or [], "exec")
        phase("exec_shim_started")
        sandbox.join_cgroup(ProcRef.of(shim.pid))
        if pid_file is not None:
            try:
                write_pid_file(pid_file, shim.pid, cid, "exec")
            except KataError:
                daemons.kill(ProcRef.of(shim.pid), graceful=False)  # its process goes with it
                shim.wait()
                raise
        if detach:
            c.execs[exec_id] = ExecRecord(exec_id, ProcRef.of(shim.pid))
            sandbox.save()
    if detach:
        return 0
    code = _wait_forwarding_signals(shim)
    phase("exec_exited")
    return code


def _transition(opts: RuntimeOptions, cid: str, step: str, legal: Callable[[Status], bool], refusal: str,
                call: Callable[[Any], None], to: Callable[[ContainerRecord, Status], Status]) -> None:
    """A status change that the agent carries out: checked, done, recorded, under the lock.
    ``to`` gives the new status from the record and its status before the change."""
    ctx = _Context(opts)
    with _locked_container(ctx, cid, step) as (rec, c):
        now = current_status(rec, c)
        if not legal(now):
            raise InvalidState(refusal, container=cid, step=step)
        sandbox = ctx.sandbox(rec)
        call(sandbox.agent(cid))
        c.status = to(c, now)
        sandbox.save()


def pause(opts: RuntimeOptions, cid: str) -> None:
    """Freeze every process of a running or created container (cgroup freezer in the guest)."""
    def paused(c: ContainerRecord, was: Status) -> Status:
        c.paused_created = was is Status.CREATED
        return Status.PAUSED

    _transition(opts, cid, "pause", Status.can_pause, "container not running",
                lambda agent: agent.pause_container(cid), paused)


def resume(opts: RuntimeOptions, cid: str) -> None:
    """Thaw a paused container: running again, or created if it was paused before its start."""
    def resumed(c: ContainerRecord, _was: Status) -> Status:
        was_created, c.paused_created = c.paused_created, False
        return Status.CREATED if was_created else Status.RUNNING

    _transition(opts, cid, "resume", Status.can_resume, "container not paused",
                lambda agent: agent.resume_container(cid), resumed)


def update(opts: RuntimeOptions, cid: str, resources: dict[str, Any]) -> None:
    """Apply an OCI ``linux.resources`` object to a container that is not stopped: the VM grows to
    what the sandbox's containers need now (hotplugged vCPUs and memory), the host cgroup takes the
    new CPU limits (those of the sandbox's own container; a member's cpuset widens it), the
    container's cgroup in the guest takes them all. Refused, with nothing changed, when the VM
    would need more than the configuration allows."""
    from kata_runtime import cgroups
    from kata_runtime import resources as sizing
    from kata_runtime.oci.guest_spec import guest_resources

    ctx = _Context(opts)
    with _locked_container(ctx, cid, "update") as (rec, c):
        if current_status(rec, c) in (Status.STOPPED, Status.CREATING):
            raise InvalidState("container not running", container=cid, step="update")
        before = c.resources
        sandbox = ctx.sandbox(rec)
        try:
            cgroups.check_cpuset(resources, "")
            c.resources = sizing.merge(before, sizing.sizing_part(resources))
            _fit_vm(sandbox, cid, "update")
            if rec.cgroup is not None and cid == rec.id:
                cg = cgroups.HostCgroup.from_json(rec.cgroup)
                cgroups.set_limits(cg, resources)
                cg.cpus = str((c.resources.get("cpu") or {}).get("cpus") or "")
                rec.cgroup = cg.to_json()
            elif rec.cgroup is not None:
                _widen_cpuset(sandbox, str((c.resources.get("cpu") or {}).get("cpus") or ""))
                _pod_cpu_limits(sandbox)
            sandbox.agent(cid).update_container(cid, guest_resources(resources))
        except KataError as e:
            c.resources = before  # the VM may have grown meanwhile: it keeps what was plugged
            with contextlib.suppress(KataError):
                sandbox.save()
            e.container, e.step = e.container or cid, e.step or "update"
            raise
        sandbox.save()


def _pod_cpu_limits(sandbox: Sandbox) -> None:
    """A pod's host cgroup takes the CPU limits of its workload containers together (Kata 1.x's
    sandbox cgroup: see :func:`cgroups.pod_cpu`), not those of its sandbox (pause) container alone;
    again each time a member joins, is updated or leaves (the callers: only a pod has members)."""
    rec = sandbox.rec
    if rec.cgroup is None:
        return
    from kata_runtime import cgroups

    workloads = [dict(c.resources.get("cpu") or {}) for k, c in rec.containers.items() if k != rec.id]
    cgroups.set_limits(cgroups.HostCgroup.from_json(rec.cgroup), {"cpu": cgroups.pod_cpu(workloads)})


def _widen_cpuset(sandbox: Sandbox, cpus: str) -> None:
    """A pod member's cpuset: the sandbox's host cgroup gets the union (Kata 1.x's)."""
    if sandbox.rec.cgroup is None or not cpus:
        return
    from kata_runtime import cgroups

    cg = cgroups.HostCgroup.from_json(sandbox.rec.cgroup)
    cgroups.widen_cpuset(cg, cpus)
    sandbox.rec.cgroup = cg.to_json()
    sandbox.save()


OOM_KILL_KEY = "oom_kill"  # the guest's stats carry its cgroup's memory.events oom_kill beside runc's fields


@dataclass
class StatsSample:
    """One look at a container for ``events``: runc's stats data (None once it is stopped) and how
    many of its processes the guest's OOM killer has ended so far (None when the guest cannot say)."""

    data: dict[str, Any] | None
    oom_kills: int | None


def stats(opts: RuntimeOptions, cid: str) -> StatsSample:
    """runc's stats data for ``events`` (cpu, memory, pids) and the OOM kill count. A stopped
    container has no stats, but while its VM still runs (a pod member, or a container not yet
    deleted) the guest's cgroup still tells whether its end was the OOM killer's."""
    ctx = _Context(opts)
    rec, c = _load_container(ctx.store, cid, "events")
    status = current_status(rec, c)
    if status is Status.CREATING:
        return StatsSample(None, None)
    if status is Status.STOPPED:
        if rec.qemu is None or not rec.qemu.alive():
            return StatsSample(None, None)
        try:
            data = ctx.sandbox(rec).agent(cid).stats_container(cid)
        except KataError:
            return StatsSample(None, None)
        return StatsSample(None, _oom_kills(data))
    data = ctx.sandbox(rec).agent(cid).stats_container(cid)
    return StatsSample(data, _oom_kills(data))


def _oom_kills(data: dict[str, Any]) -> int | None:
    """Take the guest's OOM kill count out of its stats (so they are runc's shape); None if absent
    or not a count (the guest's answer is not trusted)."""
    n = data.pop(OOM_KILL_KEY, None)
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**63 else None


def ps(opts: RuntimeOptions, cid: str, fmt: str, ps_args: list[str]) -> str | None:
    """``runc ps``. JSON: the HOST pids that stand for the container's processes, i.e. the
    kata-shims of its init and of its running execs (engines read these pids as host processes:
    dockerd's ``top`` filters the host's ``ps`` by them, and each shim's command line ends with
    the command it runs in the guest). Table: the guest's ps output for the container's
    processes (``ps_args`` are busybox ps's, e.g. ``-o pid,args``). None for a stopped container:
    it has no process (runc prints an empty table then)."""
    ctx = _Context(opts)
    rec, c = _load_container(ctx.store, cid, "ps")
    status = current_status(rec, c)
    if status is Status.STOPPED:
        return None
    if status is Status.CREATING:
        raise InvalidState("container not running", container=cid, step="ps")
    if fmt == "json":
        import json

        shims = [ref for ref in [c.shim, *(e.shim for e in c.execs.values())] if ref is not None and ref.alive()]
        return json.dumps([ref.pid for ref in shims]) + "\n"
    agent = ctx.sandbox(rec).agent(cid)
    return str(agent.process_table(cid, ps_args).decode(errors="replace"))


def container_process(opts: RuntimeOptions, cid: str) -> dict[str, Any]:
    """The container's own OCI ``process`` object, the base that ``exec ARGS...`` modifies."""
    _rec, c = _load_container(SandboxStore(opts.root), cid, "exec")
    return dict(c.process)


def list_containers(opts: RuntimeOptions) -> list[ContainerState]:
    """Every container under ``opts.root``, sorted by id (as runc lists its state directories)."""
    store = SandboxStore(opts.root)
    out: list[ContainerState] = []
    for sid in store.sandbox_ids():
        try:
            rec = store.load(sid)
        except KataError:
            continue  # being created or deleted right now
        out.extend(_to_state(rec, c) for c in rec.containers.values())
    return sorted(out, key=lambda s: s.id)
