"""The VM cache (Kata 1.x's ``[factory] vm_cache_number`` and ``vm_cache_endpoint``): a daemon
that keeps N VMs booted and ready, and hands one to each ``create`` that asks.

``kata-runtime factory init`` starts the daemon, ``kata-vm-cache`` (one per endpoint, a process of
ours like kata-proxy: its pid and start time are in its record); ``factory destroy`` stops it, and
it stops its VMs; ``factory status`` asks it how many are ready. Each VM is booted cold, on its
own, until its agent answered a ``Check`` (through a kata-proxy that then goes: an idle cached VM
has no proxy); nothing is shared between VMs, nor with the sandboxes they go to.

A create asks (:func:`take`) over the daemon's unix socket, one JSON line each way:

1. ``{"op": "take", "fingerprint": ..., "sandbox": ..., "sock_dir", "vm_dir", "shared_dir"}``:
   the configuration's fingerprint (``template.fingerprint``: a VM is only given to a create of
   the same configuration) and where the sandbox keeps its sockets, VM files and 9p directory.
2. The daemon moves a ready VM's sockets, files and 9p directory there (renames: QEMU keeps
   listening on its sockets and holds the 9p directory open by descriptor) and answers
   ``{"vm": {"qemu": {"pid", "start"}, "serial": N}}``, or ``{"vm": null, "why": ...}``.
3. The create writes the QEMU into its sandbox record, then says ``{"op": "ack"}``; the daemon
   forgets the VM, answers ``{"released": true}`` and boots a replacement. If the create goes
   away before its ack, the daemon kills the VM (the sandbox's delete removes what was moved);
   if the release does not come, the create kills it. Either way no VM has two owners or none.

The daemon's record (``<endpoint>.d/daemon.json``) names every VM it owns before the VM exists,
so ``factory destroy`` cleans up even after the daemon was killed. A cached VM's QEMU is born in
the host's network namespace, not the sandbox's: its NICs are plugged from taps opened in the
sandbox's namespace (``sandbox.connect_network``). Nothing of a cached VM is shared with another
sandbox (unlike a template's clones, which share its RAM pages and kernel layout).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kata_runtime import daemons
from kata_runtime.config import Config
from kata_runtime.errors import AgentError, HypervisorError, KataError, ProxyError
from kata_runtime.store import SOCKET_ROOT, ProcRef, write_json_atomically

log = logging.getLogger(__name__)

SHARED_ROOT = Path("/run/kata-containers/shared/vm-cache")  # beside the sandboxes' (a rename away)
MAX_LINE = 1 << 20
ACK_TIMEOUT = 60.0  # how long a create may take to record the VM it was given
# A replacement boots this long after a VM was taken: on a small host its boot (a CPU under TCG)
# would otherwise slow down the very create that took the VM (measured on 2 cores: a run of
# `true` took 2.4 s with the replacement booting beside it, 1.8 s without).
REFILL_DELAY = 3.0
BOOTING, READY, HANDING, DROPPING = "booting", "ready", "handing", "dropping"


def _digest(*parts: str) -> str:
    import hashlib

    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


@dataclass
class CachePaths:
    """Where the daemon of ``endpoint`` keeps its record, log and VMs."""

    endpoint: Path

    @property
    def dir(self) -> Path:
        return Path(f"{self.endpoint}.d")

    @property
    def record(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def log(self) -> Path:
        return self.dir / "daemon.log"

    def vm_dir(self, serial: int) -> Path:
        return self.dir / f"vm-{serial}"

    def sock_dir(self, serial: int) -> Path:
        return SOCKET_ROOT / f"cache-{_digest(str(self.endpoint), str(serial))}"

    def shared_dir(self, serial: int) -> Path:
        return SHARED_ROOT / _digest(str(self.endpoint), str(serial))


@dataclass
class CachedVM:
    """One VM of the cache, recorded before it exists (its QEMU and proxy as soon as they run)."""

    serial: int
    state: str  # BOOTING, READY, HANDING (moved into a sandbox's paths, the create's ack awaited), DROPPING
    vm_dir: str
    sock_dir: str
    shared_dir: str
    qemu: ProcRef | None = None
    proxy: ProcRef | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CachedVM:
        d = dict(d)
        for key in ("qemu", "proxy"):
            d[key] = ProcRef(**d[key]) if d.get(key) else None
        return cls(**d)


@dataclass
class DaemonRecord:
    daemon: ProcRef
    endpoint: str
    number: int
    accel: str
    fingerprint: dict[str, Any]
    next_serial: int = 0
    vms: list[CachedVM] = field(default_factory=list)
    last_error: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DaemonRecord:
        d = dict(d)
        d["daemon"] = ProcRef(**d["daemon"])
        d["vms"] = [CachedVM.from_json(v) for v in d.get("vms", [])]
        return cls(**d)


def read_record(paths: CachePaths) -> DaemonRecord | None:
    try:
        return DaemonRecord.from_json(json.loads(paths.record.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Targets:
    """Where a sandbox wants its VM's sockets, files and 9p directory."""

    sock_dir: Path
    vm_dir: Path
    shared_dir: Path


# -- moving a VM into a sandbox's paths -------------------------------------------------------------

def move_dir(src: Path, dst: Path, whole: bool = False) -> None:
    """Move directory ``src`` to ``dst`` (absent or empty: a rename replaces it). A rename keeps
    what QEMU holds: its listening sockets, its open console log, its 9p directory (opened once,
    used by descriptor). Where a rename cannot be done (``dst`` is on another file system or not
    empty) the entries are moved one by one, copied across file systems: the copy of the console
    log then ends where the hand-over happened. ``whole``: only a rename will do (the 9p directory)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if whole or e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EXDEV):
            raise
    dst.mkdir(exist_ok=True)
    for entry in src.iterdir():
        target = dst / entry.name
        try:
            os.replace(entry, target)
        except OSError as e:
            if e.errno != errno.EXDEV or not entry.is_file():
                raise
            shutil.copy2(entry, target)
            entry.unlink()
    src.rmdir()


def _check_targets(req: dict[str, Any]) -> Targets:
    """The sandbox's paths from a take request: absolute, normalized, sockets where ours live."""
    out = []
    for key in ("sock_dir", "vm_dir", "shared_dir"):
        value = req.get(key)
        if not isinstance(value, str) or not os.path.isabs(value) or os.path.normpath(value) != value:
            raise ValueError(f"{key} {value!r} is not an absolute, normalized path")
        out.append(Path(value))
    if out[0].parent != SOCKET_ROOT:
        raise ValueError(f"sock_dir {out[0]} is not in {SOCKET_ROOT}")
    return Targets(*out)


# -- the daemon ------------------------------------------------------------------------------------

Boot = Callable[[CachedVM, threading.Event, Callable[[], None]], None]


class CacheDaemon:
    """Keeps ``number`` VMs ready and hands them over. ``boot`` boots one VM into its recorded
    paths, calling ``record()`` as soon as its QEMU or proxy exist (unit tests give a fake)."""

    def __init__(self, cfg: Config, paths: CachePaths, number: int, accel: str, boot: Boot | None = None) -> None:
        from kata_runtime.factory.template import fingerprint

        self.cfg = cfg
        self.paths = paths
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.last_take = -REFILL_DELAY  # time.monotonic() of the last hand-over
        self.rec = DaemonRecord(ProcRef.of(os.getpid()), str(paths.endpoint), number, accel, fingerprint(cfg, accel))
        self._boot = boot or self._boot_vm

    # -- the record -------------------------------------------------------------------------------
    def _save(self) -> None:
        """Write the record (with ``self.lock`` held)."""
        data = asdict(self.rec)
        write_json_atomically(self.paths.record, data)

    def _record(self) -> None:
        with self.lock:
            self._save()

    def _forget(self, vm: CachedVM) -> None:
        with self.lock:
            if vm in self.rec.vms:
                self.rec.vms.remove(vm)
            self._save()
            self.changed.notify_all()

    # -- serving ----------------------------------------------------------------------------------
    def serve(self, ready_fd: int = -1) -> int:
        """Listen, keep the cache full, answer until SIGTERM; then stop every VM and remove all
        of ours. Returns the exit status."""
        self.paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        SOCKET_ROOT.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.endpoint)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_mask = os.umask(0o177)  # root's only: a take moves VMs into the paths it names
        try:
            listener.bind(str(self.paths.endpoint))
        finally:
            os.umask(old_mask)
        listener.listen(64)
        listener.settimeout(0.5)
        self._record()
        if ready_fd >= 0:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        filler = threading.Thread(target=self._fill, name="fill", daemon=True)
        filler.start()
        try:
            while not self.stopping.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError as e:
                    if e.errno == errno.EINTR:
                        continue
                    raise
                threading.Thread(target=self._handle, args=(conn,), name="client", daemon=True).start()
        finally:
            self.stopping.set()
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.endpoint)
            with self.lock:
                self.changed.notify_all()
            filler.join(30)
            with self.lock:
                vms = list(self.rec.vms)
            for vm in vms:
                discard(vm)
                self._forget(vm)
            shutil.rmtree(self.paths.dir, ignore_errors=True)
        return 0

    def _fill(self) -> None:
        """Boot VMs, one at a time, while fewer than ``number`` are ready or booting; after a
        failure, wait longer each time (up to a minute). A ready VM that died is dropped, and
        when a guest file changes (a new image), the ready VMs are replaced."""
        from kata_runtime.factory.template import changes, fingerprint

        failures = 0
        while not self.stopping.is_set():
            with self.lock:
                now = fingerprint(self.cfg, self.rec.accel)
                ready = [v for v in self.rec.vms if v.state == READY]
                if now != self.rec.fingerprint:
                    log.warning("the guest's files changed (%s): the ready VMs are replaced",
                                ", ".join(changes(self.rec.fingerprint, now)))
                    self.rec.fingerprint = now
                    stale = ready
                else:
                    stale = [v for v in ready if v.qemu is None or not v.qemu.alive()]
                for v in stale:
                    v.state = DROPPING  # no longer offered; recorded until it is gone
                vm = None
                settling = REFILL_DELAY - (time.monotonic() - self.last_take)
                if settling > 0 and not stale:
                    self.changed.wait(settling)
                    continue
                if not stale and len(self.rec.vms) < self.rec.number:
                    serial = self.rec.next_serial
                    self.rec.next_serial += 1
                    vm = CachedVM(serial, BOOTING, str(self.paths.vm_dir(serial)), str(self.paths.sock_dir(serial)),
                                  str(self.paths.shared_dir(serial)))
                    self.rec.vms.append(vm)
                if stale or vm is not None:
                    self._save()
                else:
                    self.changed.wait(1.0)
            for v in stale:
                log.info("VM %d dropped (stale or dead)", v.serial)
                discard(v)
                self._forget(v)
            if vm is None:
                continue
            t0 = time.monotonic()
            try:
                self._boot(vm, self.stopping, self._record)
            except Exception as e:  # noqa: BLE001 - whatever failed, the VM goes and the cache goes on
                discard(vm)
                failures += 1
                with self.lock:
                    self.rec.last_error = str(e)
                self._forget(vm)
                if not self.stopping.is_set():
                    log.error("VM %d did not boot: %s", vm.serial, e)
                self.stopping.wait(min(60.0, 2.0 ** failures))
                continue
            failures = 0
            with self.lock:
                vm.state = READY
                self.rec.last_error = ""
                self._save()
            log.info("VM %d ready after %.1fs", vm.serial, time.monotonic() - t0)

    def _boot_vm(self, vm: CachedVM, stop: threading.Event, record: Callable[[], None]) -> None:
        """Boot one VM cold until its agent answers (then its kata-proxy goes)."""
        from kata_runtime.agent.stream import StreamAgentClient
        from kata_runtime.factory.ready import wait_agent
        from kata_runtime.hypervisor.qemu import QemuVM

        vm_dir, sock_dir, shared = Path(vm.vm_dir), Path(vm.sock_dir), Path(vm.shared_dir)
        for d in (vm_dir, sock_dir, shared):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"vmcache-{vm.serial}"
        qemu = QemuVM(name, self.cfg.hypervisor, vm_dir, self.rec.accel, shared, sock_dir=sock_dir)
        try:
            qemu.launch(self.cfg.source)
        finally:
            vm.qemu = qemu.proc
            record()
        vm.proxy = daemons.start_proxy(name, qemu.channel, sock_dir / "proxy.sock", vm_dir / "proxy.log",
                                       self.cfg.proxy_path)
        record()
        agent = StreamAgentClient(str(sock_dir / "proxy.sock"), name)
        try:
            wait_agent(agent, qemu, self.cfg.agent.dial_timeout, name, "vm cache", stop)
        finally:
            agent.close()
        daemons.kill(vm.proxy)  # the sandbox starts its own
        vm.proxy = None
        record()
        (sock_dir / "proxy.sock").unlink(missing_ok=True)
        (vm_dir / "proxy.log").unlink(missing_ok=True)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                reader = conn.makefile("rb")
                req = json.loads(reader.readline(MAX_LINE) or b"null")
                if not isinstance(req, dict):
                    raise ValueError("not a request")
                if req.get("op") == "status":
                    _send(conn, self._status())
                elif req.get("op") == "take":
                    self._take(conn, reader, req)
                else:
                    _send(conn, {"error": f"unknown op {req.get('op')!r}"})
            except (OSError, ValueError) as e:
                log.warning("client: %s", e)

    def _status(self) -> dict[str, Any]:
        with self.lock:
            states = [v.state for v in self.rec.vms]
            return {"pid": self.rec.daemon.pid, "number": self.rec.number, "ready": states.count(READY),
                    "booting": states.count(BOOTING), "fingerprint": self.rec.fingerprint,
                    "last_error": self.rec.last_error}

    def _take(self, conn: socket.socket, reader: Any, req: dict[str, Any]) -> None:
        from kata_runtime.factory.template import changes

        where = f"the VM cache at {self.paths.endpoint}"
        try:
            targets = _check_targets(req)
        except ValueError as e:
            _send(conn, {"vm": None, "why": f"{where} refused the request: {e}"})
            return
        with self.lock:
            if req.get("fingerprint") != self.rec.fingerprint:
                why = ", ".join(changes(self.rec.fingerprint, req.get("fingerprint") or {}))
                _send(conn, {"vm": None, "why": f"{where} keeps VMs of another configuration ({why})"})
                return
            vm = next((v for v in self.rec.vms if v.state == READY and v.qemu is not None and v.qemu.alive()), None)
            if vm is None:
                booting = sum(v.state == BOOTING for v in self.rec.vms)
                _send(conn, {"vm": None, "why": f"{where} has no VM ready ({booting} booting)"})
                return
            vm.state = HANDING
            self._save()
        try:
            self._hand_over(conn, reader, req, vm, targets)
        except BaseException:
            with contextlib.suppress(Exception):  # whatever went wrong, the VM is nobody's: it goes
                daemons.kill(vm.qemu)
                self._forget(vm)
            raise

    def _hand_over(self, conn: socket.socket, reader: Any, req: dict[str, Any], vm: CachedVM,
                   targets: Targets) -> None:
        """Move ``vm`` (HANDING) into the sandbox's paths, offer it, and let go of it on the ack."""
        where = f"the VM cache at {self.paths.endpoint}"
        moved: list[tuple[Path, Path]] = []
        try:
            for src, dst, whole in ((vm.sock_dir, targets.sock_dir, False), (vm.shared_dir, targets.shared_dir, True),
                                    (vm.vm_dir, targets.vm_dir, False)):
                move_dir(Path(src), dst, whole)
                moved.append((Path(src), dst))
        except OSError as e:
            for back, there in reversed(moved):
                with contextlib.suppress(OSError):
                    move_dir(there, back)
            with self.lock:
                vm.state = READY
                self._save()
            _send(conn, {"vm": None, "why": f"{where} could not move a VM into the sandbox's paths: {e}"})
            return
        with self.lock:  # its files are the sandbox's now: never removed by the cache
            vm.sock_dir, vm.vm_dir, vm.shared_dir = str(targets.sock_dir), str(targets.vm_dir), str(targets.shared_dir)
            self._save()
        assert vm.qemu is not None
        released = False
        try:
            _send(conn, {"vm": {"qemu": asdict(vm.qemu), "serial": vm.serial}})
            conn.settimeout(ACK_TIMEOUT)
            released = json.loads(reader.readline(MAX_LINE) or b"null") == {"op": "ack"}
        except (OSError, ValueError):
            pass
        if released:
            self.last_take = time.monotonic()  # before the filler hears of it
        else:  # the create went away before it recorded the VM: no one else will stop it
            log.warning("VM %d: sandbox %s did not take it: stopped", vm.serial, req.get("sandbox"))
            daemons.kill(vm.qemu)
        self._forget(vm)
        if released:
            log.info("VM %d handed to sandbox %s", vm.serial, req.get("sandbox"))
            with contextlib.suppress(OSError):
                _send(conn, {"released": True})


def discard(vm: CachedVM) -> None:
    """Stop a VM of the cache and remove its files, unless it is being handed over (its files are
    a sandbox's then, which removes them)."""
    daemons.kill(vm.proxy)
    daemons.kill(vm.qemu)
    if vm.state == HANDING:
        return
    for d in (vm.vm_dir, vm.sock_dir, vm.shared_dir):
        shutil.rmtree(d, ignore_errors=True)


def _send(conn: socket.socket, msg: dict[str, Any]) -> None:
    conn.sendall(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


def _ask(endpoint: str, request: dict[str, Any], timeout: float) -> tuple[socket.socket, Any]:
    """Connect, send ``request``, return the connection and a reader of the answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(endpoint)
        _send(sock, request)
    except OSError:
        sock.close()
        raise
    return sock, sock.makefile("rb")


def _answer(reader: Any) -> dict[str, Any]:
    answer = json.loads(reader.readline(MAX_LINE) or b"null")
    if not isinstance(answer, dict):
        raise ValueError("no answer")
    return answer


# -- what a create does --------------------------------------------------------------------------------

def take(cfg: Config, accel: str, sandbox: str, targets: Targets,
         own: Callable[[ProcRef], None]) -> tuple[ProcRef | None, str]:
    """A ready VM of the cache for ``sandbox``, moved into ``targets``; ``own(qemu)`` must record it
    as the sandbox's (it is called before the daemon lets go). Returns (its QEMU, "") or (None,
    why not): no daemon, none ready, VMs of another configuration."""
    from kata_runtime.factory.template import fingerprint

    endpoint = cfg.factory.vm_cache_endpoint
    targets.shared_dir.parent.mkdir(parents=True, exist_ok=True)
    request = {"op": "take", "sandbox": sandbox, "fingerprint": fingerprint(cfg, accel),
               "sock_dir": str(targets.sock_dir), "vm_dir": str(targets.vm_dir), "shared_dir": str(targets.shared_dir)}
    try:
        sock, reader = _ask(endpoint, request, 10.0)
    except OSError as e:
        return None, f"no VM cache daemon at {endpoint} ({e.strerror or e})"
    with sock:
        try:
            offer = _answer(reader)
        except (OSError, ValueError) as e:
            return None, f"the VM cache daemon at {endpoint} did not answer ({e})"
        vm = offer.get("vm")
        if not isinstance(vm, dict):
            return None, str(offer.get("why") or f"the VM cache daemon at {endpoint} gave no VM")
        try:
            qemu = ProcRef(int(vm["qemu"]["pid"]), int(vm["qemu"]["start"]))
        except (KeyError, TypeError, ValueError):
            return None, f"the VM cache daemon at {endpoint} answered a malformed VM"
        own(qemu)
        try:
            _send(sock, {"op": "ack"})
            released = _answer(reader).get("released") is True
        except (OSError, ValueError):
            released = False
        if not released:  # it may still count the VM as its own: then neither keeps it
            daemons.kill(qemu)
            return None, f"the VM cache daemon at {endpoint} did not let go of VM {vm.get('serial')}"
        return qemu, ""


# -- the commands ---------------------------------------------------------------------------------

def query(endpoint: str, timeout: float = 5.0) -> dict[str, Any]:
    """The daemon's status (ready and booting VMs, its fingerprint, its last failure)."""
    sock, reader = _ask(endpoint, {"op": "status"}, timeout)
    with sock:
        return _answer(reader)


def _daemon_alive(rec: DaemonRecord | None) -> bool:
    return rec is not None and rec.daemon.alive()


def start(cfg: Config, accel: str, timeout: float) -> tuple[int, int]:
    """``factory init``: start the daemon and wait until its cache is full (``timeout`` seconds a
    VM). Returns (its pid, VMs ready). Refused when one runs at the endpoint; a daemon that
    failed to boot a VM is stopped, with nothing left, and its failure is the error."""
    paths = CachePaths(Path(cfg.factory.vm_cache_endpoint))
    number = cfg.factory.vm_cache_number
    rec = read_record(paths)
    if _daemon_alive(rec):
        assert rec is not None
        raise KataError(f"a VM cache daemon already runs at {paths.endpoint} (pid {rec.daemon.pid}; "
                        "kata-runtime factory destroy first)", step="factory init")
    stop(cfg)  # what a killed daemon left
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        ref = daemons.start_vm_cache(str(paths.endpoint), number, accel, cfg.source, paths.log)
    except ProxyError as e:
        stop(cfg)
        raise KataError(f"cannot start the VM cache daemon: {e.msg}", step="factory init") from None
    deadline = time.monotonic() + timeout * number + 10
    ready = 0
    try:
        while True:
            try:
                st = query(str(paths.endpoint))
            except (OSError, ValueError) as e:
                st = {"last_error": f"it does not answer ({e})"} if not ref.alive() else {}
            ready = int(st.get("ready", 0))
            if ready >= number:
                return ref.pid, ready
            if st.get("last_error") or not ref.alive():
                raise KataError(f"the VM cache daemon could not boot a VM: {st.get('last_error') or 'it exited'} "
                                f"(log: {paths.log})", step="factory init")
            if time.monotonic() > deadline:
                raise KataError(f"the VM cache has {ready} of {number} VMs ready after {timeout * number + 10:g}s",
                                step="factory init")
            time.sleep(0.25)
    except BaseException:
        log_tail = ""
        with contextlib.suppress(OSError):
            log_tail = paths.log.read_text(errors="replace")[-2000:]
        stop(cfg)
        if log_tail:
            log.debug("VM cache daemon log: %s", log_tail)
        raise


def stop(cfg: Config, timeout: float = 30.0) -> bool:
    """``factory destroy``: stop the daemon (it stops its VMs), then remove whatever a daemon that
    was killed left (its VMs, their files, its socket). False if there was nothing."""
    paths = CachePaths(Path(cfg.factory.vm_cache_endpoint))
    rec = read_record(paths)
    if rec is None and not paths.dir.exists() and not paths.endpoint.is_socket():
        return False
    if rec is not None and rec.daemon.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.daemon.pid, signal.SIGTERM)
        if not daemons.wait_gone(rec.daemon, timeout):
            daemons.kill(rec.daemon, graceful=False)
    rec = read_record(paths)  # the daemon removes it when it ends well
    for vm in rec.vms if rec is not None else []:
        discard(vm)
    if paths.endpoint.is_socket():
        paths.endpoint.unlink(missing_ok=True)
    shutil.rmtree(paths.dir, ignore_errors=True)
    return True


def status(cfg: Config, accel: str) -> list[str]:
    """``factory status``: the daemon, how many VMs it has ready, and whether they fit this
    configuration."""
    from kata_runtime.factory.template import changes, fingerprint

    endpoint = cfg.factory.vm_cache_endpoint
    rec = read_record(CachePaths(Path(endpoint)))
    if rec is None:
        hint = " (kata-runtime factory init starts one)" if cfg.factory.vm_cache_number > 0 else ""
        return [f"no VM cache daemon at {endpoint}{hint}"]
    if not rec.daemon.alive():
        return [f"VM cache at {endpoint}: its daemon (pid {rec.daemon.pid}) is gone (kata-runtime factory destroy "
                "cleans up after it)"]
    try:
        st = query(endpoint)
    except (OSError, ValueError) as e:
        return [f"VM cache at {endpoint}: daemon pid {rec.daemon.pid} does not answer ({e})"]
    line = f"VM cache at {endpoint}: daemon pid {rec.daemon.pid}, {st.get('ready')} of {st.get('number')} VMs ready"
    if st.get("booting"):
        line += f", {st.get('booting')} booting"
    now = fingerprint(cfg, accel)
    if st.get("fingerprint") == now:
        line += "; usable for this configuration"
    else:
        line += "; not usable for this configuration: " + ", ".join(changes(st.get("fingerprint") or {}, now))
    if st.get("last_error"):
        line += f"; last failure: {st['last_error']}"
    return [line]


# -- kata-vm-cache --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``kata-vm-cache --endpoint SOCK --number N --accel A --config PATH|- [--ready-fd N]``."""
    import argparse
    import sys

    from kata_runtime.config import load_config

    ap = argparse.ArgumentParser(prog="kata-vm-cache")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--number", type=int, required=True)
    ap.add_argument("--accel", required=True)
    ap.add_argument("--config", default="-")
    ap.add_argument("--ready-fd", type=int, default=-1)
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_config(Path(args.config)) if args.config != "-" else Config()
    except KataError as e:
        print(f"kata-vm-cache: {e}", file=sys.stderr)
        return 1
    daemon = CacheDaemon(cfg, CachePaths(Path(args.endpoint)), args.number, args.accel)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: daemon.stopping.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info("pid %d: keeping %d VM(s) ready at %s", os.getpid(), args.number, args.endpoint)
    try:
        return daemon.serve(args.ready_fd)
    except (OSError, HypervisorError, AgentError) as e:
        print(f"kata-vm-cache: {e}", file=sys.stderr)
        return 1
