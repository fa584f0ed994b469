"""QemuVM: one QEMU process, from argv to reaping.

QEMU is started with ``-daemonize``: the launching call returns once QMP and the agent channel
listen (about 0.15 s), and QEMU outlives the short-lived kata-runtime. Its early errors (bad
argv, missing files) are read from the launch's stderr; later ones from the console log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_runtime import faults
from kata_runtime.config import HypervisorConfig
from kata_runtime.errors import HypervisorError
from kata_runtime.resources import MIB, VMSize, limits
from kata_runtime.store import ProcRef

# Measured on TCG (DESIGN.md section 10): these take 0.7-0.8 s off a guest boot.
FAST_BOOT_PARAMS = (
    "tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.noaux i8042.nomux i8042.nopnp "
    "i8042.dumbkbd i8042.noprobe mitigations=off cryptomgr.notests 8250.nr_uarts=1 random.trust_cpu=on "
    "nowatchdog"
)
AGENT_PORT_NAME = "agent.channel.0"
SHARED_FS_TAG = "kataShared"
# PCIe root ports left free for hotplugged NICs (q35 cannot hotplug onto its root bus). A VM
# template records this layout: a clone must have the very devices of its template.
HOTPLUG_PORTS = 4
DEVICE_LAYOUT = 3  # bump when the devices of argv() change
# how long the guest's ACPI may take to accept a hotplugged vCPU or DIMM (its _OST answer)
HOTPLUG_ACK_TIMEOUT = 20.0
# Without ERMS the guest kernel copies with `rep movsq` and glibc with vector loops instead of
# `rep movsb`, which TCG emulates one byte per iteration: a pipe in the guest went from 34 to
# 131 MB/s, /dev/zero from 260 MB/s to 1 GB/s (2026-12-02); every stdio byte crosses 3-4 such copies.
TCG_CPU = "max,-erms"


@dataclass
class VMPaths:
    """The files of one VM: pid file and console log under its ``vm`` directory in the store,
    sockets under ``sockets`` (a short path: unix socket paths are limited to 107 bytes)."""

    dir: Path
    sockets: Path

    @property
    def qmp(self) -> Path:
        return self.sockets / "qmp.sock"

    @property
    def channel(self) -> Path:
        return self.sockets / "kata.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "pid"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"


@dataclass
class RamFile:
    """Guest RAM in a file, for VM templates: the template writes it (shared); a clone maps it
    private (copy on write) and waits, paused, for the template's device state (``-incoming``)."""

    path: Path
    clone: bool


class QemuVM:
    """A sandbox's QEMU. ``shared_dir`` is exported to the guest over virtio-9p. ``size`` is what
    it boots with (None: the configuration's default vCPUs and memory); it can grow, by hotplug, up
    to the configuration's ceilings (:func:`kata_runtime.resources.limits`)."""

    def __init__(self, name: str, cfg: HypervisorConfig, vm_dir: Path, accel: str, shared_dir: Path,
                 proc: ProcRef | None = None, ram: RamFile | None = None, sock_dir: Path | None = None,
                 size: VMSize | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.paths = VMPaths(vm_dir, sock_dir or vm_dir)
        self.accel = accel
        self.shared_dir = shared_dir
        self.proc = proc
        self.ram = ram
        self.size = size

    def topology(self) -> tuple[str, str]:
        """The ``-smp`` and ``-m`` values: the boot size, and room to hotplug up to the ceilings
        (Kata 1.x's ``maxcpus`` and ``slots``/``maxmem``)."""
        size, max_vcpus, max_mib, slots = self._sizes()
        return (f"{size.vcpus},maxcpus={max_vcpus}", f"{size.memory_mib}M,slots={slots},maxmem={max_mib}M")

    def _sizes(self) -> tuple[VMSize, int, int, int]:
        """(boot size, most vCPUs, most MiB, memory slots)."""
        lim = limits(self.cfg)
        size = self.size or VMSize(lim.default_vcpus, lim.default_mib)
        return size, max(lim.max_vcpus, size.vcpus), max(lim.max_mib, size.memory_mib), lim.slots

    def kernel_cmdline(self) -> str:
        params = ["console=ttyS0", "quiet", "panic=1", FAST_BOOT_PARAMS]
        if self.cfg.enable_debug:
            params.remove("quiet")
            params.append("agent.log=debug kata.debug=1")
        if self.cfg.kernel_params:
            params.append(self.cfg.kernel_params)
        return " ".join(params)

    def cpu_model(self) -> str:
        """``-cpu``: the configured model, else the host's with KVM and TCG_CPU without."""
        return self.cfg.cpu_model or ("host" if self.accel == "kvm" else TCG_CPU)

    def argv(self) -> list[str]:
        c = self.cfg
        cpu = self.cpu_model()
        accel = "kvm" if self.accel == "kvm" else f"tcg,tb-size={c.tcg_tb_size}"
        size, max_vcpus, _mib, _slots = self._sizes()
        if self.accel != "kvm" and max_vcpus > size.vcpus:
            # QEMU 7.2's multi-threaded TCG aborts on a hotplugged vCPU once the running ones hold
            # every region of the translation cache (tcg_region_initial_alloc__locked: assertion
            # failed, seen here a few seconds after boot): one TCG thread for all vCPUs needs none
            accel += ",thread=single"
        p = self.paths
        smp, memory = self.topology()
        argv = [
            c.path, "-name", f"sandbox-{self.name}",
            "-machine", f"{c.machine_type}", "-accel", accel, "-cpu", cpu,
            "-smp", smp, "-m", memory,
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
            "-no-reboot",
            "-serial", f"file:{p.console}",
            "-qmp", f"unix:{p.qmp},server=on,wait=off",
            "-kernel", c.kernel, "-append", self.kernel_cmdline(),
            "-device", "virtio-serial-pci,id=serial0",
            "-chardev", f"socket,id=agentch,path={p.channel},server=on,wait=off",
            "-device", f"virtserialport,bus=serial0.0,chardev=agentch,name={AGENT_PORT_NAME}",
            "-fsdev", f"local,id=shared,path={self.shared_dir},security_model=none,multidevs=remap",
            "-device", f"virtio-9p-pci,fsdev=shared,mount_tag={SHARED_FS_TAG}",
            "-device", "virtio-rng-pci",
            "-daemonize", "-pidfile", str(p.pidfile),
        ]
        if self._pcie:
            for i in range(HOTPLUG_PORTS):
                argv += ["-device", f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},slot={i + 1}"]
        if c.initrd:
            argv += ["-initrd", c.initrd]
        if c.image:
            argv += ["-drive", f"file={c.image},if=none,id=rootdisk,format=raw,readonly=on,cache=unsafe",
                     "-device", "virtio-blk-pci,drive=rootdisk"]
        if self.ram is not None:
            machine = argv.index("-machine") + 1
            argv[machine] += ",memory-backend=ram"
            share = "off" if self.ram.clone else "on"
            argv += ["-object", f"memory-backend-file,id=ram,size={memory.split(',')[0]},mem-path={self.ram.path},"
                                f"share={share}"]
            if self.ram.clone:
                argv += ["-S", "-incoming", "defer"]
        return argv

    @property
    def channel(self) -> Path:
        return self.paths.channel

    @property
    def console(self) -> Path:
        return self.paths.console

    def use_template_ram(self, memory: Path) -> None:
        self.ram = RamFile(memory, clone=True)

    @property
    def _pcie(self) -> bool:
        return "q35" in self.cfg.machine_type

    def check_files(self, config_source: str = "") -> None:
        """Fail early, in words, when a file the VM needs is missing."""
        c = self.cfg
        where = f"configured in {config_source}" if config_source else "built-in default"
        for what, path in (("QEMU binary", c.path), ("guest kernel", c.kernel), ("guest initrd", c.initrd),
                           ("guest image", c.image)):
            if path and not os.path.exists(path):
                raise HypervisorError(f"{what} {path} does not exist ({where})")

    def launch(self, config_source: str = "") -> int:
        self.check_files(config_source)
        faults.point("qemu", HypervisorError)
        res = subprocess.run(self.argv(), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if res.returncode != 0:
            err = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()
            raise HypervisorError(f"QEMU failed to start: {err[-1] if err else f'exit {res.returncode}'}")
        try:
            faults.point("qemu-pidfile")
            pid = int(self.paths.pidfile.read_text().strip())
        except (OSError, ValueError) as e:
            raise HypervisorError(f"QEMU did not write its pid file: {e}") from None
        self.proc = ProcRef.of(pid)
        return pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def adopt(self) -> bool:
        """Find this VM's QEMU from its pid file when no record names it (the runtime was killed
        between launching QEMU and saving its pid). True when a live QEMU of ours was found."""
        if self.alive():
            return True
        try:
            pid = int(self.paths.pidfile.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            return False
        if f"sandbox-{self.name}".encode() not in argv or str(self.paths.qmp).encode() not in b" ".join(argv):
            return False  # the pid was reused by someone else
        self.proc = ProcRef.of(pid)
        return self.alive()

    def console_tail(self, lines: int = 3) -> str:
        try:
            text = self.paths.console.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:] if line.strip())

    def _qmp(self, *commands: tuple[str, dict[str, Any]], wait_status: str = "", send_fd: int | None = None) -> None:
        """Run QMP commands in order on one connection; with ``wait_status``, then poll
        ``query-migrate`` until the migration is no longer active (and fail if it failed).
        ``send_fd`` goes to QEMU (SCM_RIGHTS) right before the ``getfd`` command that names it."""
        from qemu.qmp.legacy import QEMUMonitorProtocol

        mon = QEMUMonitorProtocol(str(self.paths.qmp))
        try:
            mon.connect(negotiate=True)
            for name, args in commands:
                if name == "getfd" and send_fd is not None:
                    mon.send_fd_scm(send_fd)
                reply = mon.cmd(name, **args)
                if isinstance(reply, dict) and "error" in reply:
                    raise HypervisorError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
            deadline = time.monotonic() + 60
            while wait_status and time.monotonic() < deadline:
                state: dict[str, Any] = mon.cmd("query-migrate") or {}  # type: ignore[assignment]
                status = state.get("status", "")
                if status == "failed":
                    raise HypervisorError(f"VM {wait_status} failed: {state.get('error-desc', 'migration failed')}")
                if status in ("completed", "") and (wait_status != "restore" or self._status(mon) != "inmigrate"):
                    return
                time.sleep(0.01)
            if wait_status:
                raise HypervisorError(f"VM {wait_status} did not finish within 60s")
        except EOFError:
            pass  # quit closes the connection before answering
        finally:
            try:
                mon.close()
            except Exception:  # noqa: BLE001 - closing a dead monitor is not an error
                pass

    @staticmethod
    def _status(mon: Any) -> str:
        reply: dict[str, Any] = mon.cmd("query-status") or {}
        return str(reply.get("status", ""))

    def save(self, state: Path) -> None:
        """Stop the VM and write its device state to ``state`` (its RAM stays in the RAM file)."""
        self._qmp(("stop", {}),
                  ("migrate-set-capabilities", {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}),
                  ("migrate", {"uri": f"exec:cat > {state}"}), wait_status="save")

    def restore(self, state: Path) -> None:
        """Load the template's device state into this clone (started with ``-incoming defer``) and
        let it run."""
        try:
            self._qmp(("migrate-set-capabilities",
                       {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}),
                      ("migrate-incoming", {"uri": f"exec:cat {state}"}), wait_status="restore")
            self._qmp(("cont", {}))
        except HypervisorError:
            raise
        except Exception as e:  # noqa: BLE001 - QMP transport errors: QEMU gave up on the state and exited
            gone = "" if self.alive() else "QEMU exited: "
            raise HypervisorError(f"VM restore from {state} failed: {gone}{type(e).__name__}: {e}") from None

    def hotplug_nic(self, index: int, tap: str, mac: str, fd: int | None = None) -> None:
        """Plug a virtio-net NIC with MAC ``mac`` into hotplug slot ``index``, backed by tap ``tap``:
        opened by QEMU by name (it runs in the tap's network namespace), or, with ``fd``, that open
        tap (a macvtap's character device), handed over with QMP ``getfd``. All or nothing: what
        was plugged before a step failed is taken out again."""
        if not 0 <= index < HOTPLUG_PORTS:
            raise HypervisorError(f"no free hotplug slot for a network interface (at most {HOTPLUG_PORTS})")
        device: dict[str, Any] = {"driver": "virtio-net-pci", "id": f"nic{index}", "netdev": f"net{index}", "mac": mac}
        if self._pcie:
            device["bus"] = f"rp{index}"
        netdev: dict[str, Any] = {"type": "tap", "id": f"net{index}"}
        steps: list[tuple[str, dict[str, Any]]] = []
        if fd is None:
            netdev.update(ifname=tap, script="no", downscript="no")
        else:
            steps.append(("getfd", {"fdname": f"fd{index}"}))
            netdev["fd"] = f"fd{index}"
        if os.path.exists("/dev/vhost-net"):  # the kernel moves the frames: no QEMU thread in the path
            netdev["vhost"] = True
        steps += [("netdev_add", netdev), ("device_add", device)]
        try:
            self._qmp(*steps, send_fd=fd)
        except Exception as e:  # noqa: BLE001 - QMP transport errors too
            for undo in (("netdev_del", {"id": f"net{index}"}), ("closefd", {"fdname": f"fd{index}"})):
                with contextlib.suppress(Exception):  # not there: that step had not been done
                    self._qmp(undo)
            if isinstance(e, HypervisorError):
                raise
            raise HypervisorError(f"QMP hotplug of {tap} failed: {e}") from None

    def unplug_nic(self, index: int) -> None:
        """Ask the guest to release hotplug slot ``index`` and drop its tap backend."""
        try:
            self._qmp(("device_del", {"id": f"nic{index}"}))
            self._qmp(("netdev_del", {"id": f"net{index}"}))
        except Exception as e:  # noqa: BLE001
            raise HypervisorError(f"QMP unplug of nic{index} failed: {e}") from None

    @contextlib.contextmanager
    def _monitor(self) -> Iterator[Callable[..., Any]]:
        """One QMP connection for a sequence of commands: yields ``call(command, **args)``, which
        returns the command's ``return`` and raises HypervisorError with QEMU's words. (A new
        connection right after another one closed was seen dropped by a busy QEMU: one is kept.)"""
        from qemu.qmp import ExecuteError
        from qemu.qmp.legacy import QEMUMonitorProtocol

        mon = QEMUMonitorProtocol(str(self.paths.qmp))

        def call(command: str, **args: Any) -> Any:
            try:
                return mon.cmd(command, **args)
            except ExecuteError as e:
                raise HypervisorError(f"QMP {command}: {e}") from None
            except Exception as e:  # noqa: BLE001 - QMP transport errors: QEMU is gone or not answering
                raise HypervisorError(f"QMP {command} failed: {type(e).__name__}: {e}") from None

        try:
            try:
                mon.connect(negotiate=True)
            except Exception as e:  # noqa: BLE001
                raise HypervisorError(f"cannot connect to QMP at {self.paths.qmp}: {type(e).__name__}: {e}") from None
            yield call
        finally:
            with contextlib.suppress(Exception):
                mon.close()

    def current_size(self) -> VMSize:
        """What the running VM has: its vCPUs and its memory (boot RAM and DIMMs), from QMP."""
        with self._monitor() as call:
            cpus = call("query-hotpluggable-cpus") or []
            dimms = call("query-memory-devices") or []
            ram = (call("query-memory-size-summary") or {}).get("base-memory", 0)
        plugged = sum(int((d.get("data") or {}).get("size", 0)) for d in dimms)
        return VMSize(sum(1 for c in cpus if c.get("qom-path")), (int(ram) + plugged) // MIB)

    def hotplug_vcpus(self, count: int) -> None:
        """Plug ``count`` vCPUs (the CPU model's device) into free sockets/cores, in order, and wait
        until the guest's ACPI has taken each (they come up offline: the agent onlines them)."""
        with self._monitor() as call:
            free = [c for c in call("query-hotpluggable-cpus") or [] if not c.get("qom-path")]
            free.sort(key=lambda c: [v for _k, v in sorted((c.get("props") or {}).items())])
            if len(free) < count:
                raise HypervisorError(f"cannot hotplug {count} vCPUs: the VM has room for {len(free)} more "
                                      "(default_maxvcpus)")
            added = []
            for slot in free[:count]:
                props = dict(slot.get("props") or {})
                dev = "vcpu-" + "-".join(f"{v}" for _k, v in sorted(props.items()))
                call("device_add", driver=slot["type"], id=dev, **props)
                added.append(dev)
            self._wait_acpi(call, added, "vCPU")

    def hotplug_memory(self, mib: int) -> None:
        """Plug ``mib`` MiB of RAM as one DIMM (``memory-backend-ram`` + ``pc-dimm``) and wait until
        the guest's ACPI has taken it (its memory blocks: the agent onlines any left offline). All
        or nothing: a backend whose DIMM was refused is deleted again."""
        with self._monitor() as call:
            present = call("query-memory-devices") or []
            index = len(present)
            names = {str((d.get("data") or {}).get("id", "")) for d in present}
            while f"dimm{index}" in names:
                index += 1
            mem, dimm = f"mem{index}", f"dimm{index}"
            call("object-add", **{"qom-type": "memory-backend-ram", "id": mem, "size": mib * MIB})
            try:
                call("device_add", driver="pc-dimm", id=dimm, memdev=mem)
            except HypervisorError:
                with contextlib.suppress(HypervisorError):
                    call("object-del", id=mem)
                raise
            self._wait_acpi(call, [dimm], "memory")

    @staticmethod
    def _wait_acpi(call: Callable[..., Any], devices: list[str], what: str) -> None:
        """Wait for the guest's _OST answer to the insertion of each of ``devices`` (QMP
        ``query-acpi-ospm-status``: source 1 is an insertion, status 0 a success)."""
        deadline = time.monotonic() + HOTPLUG_ACK_TIMEOUT
        waiting = set(devices)
        while waiting:
            for st in call("query-acpi-ospm-status") or []:
                dev = str(st.get("device", ""))
                if dev in waiting and st.get("source") == 1:
                    if st.get("status") != 0:
                        raise HypervisorError(f"the guest refused the hotplugged {what} {dev} (ACPI _OST status "
                                              f"{st.get('status')})")
                    waiting.discard(dev)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise HypervisorError(f"the guest did not take the hotplugged {what} {', '.join(sorted(waiting))} "
                                      f"within {HOTPLUG_ACK_TIMEOUT:g}s")
            time.sleep(0.02)

    def pause(self) -> None:
        try:
            self._qmp(("stop", {}))
        except Exception as e:  # noqa: BLE001
            raise HypervisorError(f"QMP stop failed: {e}") from None

    def resume(self) -> None:
        try:
            self._qmp(("cont", {}))
        except Exception as e:  # noqa: BLE001
            raise HypervisorError(f"QMP cont failed: {e}") from None

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM (QEMU exits at once, as on QMP ``quit``, and the CLI need not import the QMP
        client: 0.16 s), then SIGKILL; returns when the process is gone."""
        if not self.alive():
            return
        assert self.proc is not None
        faults.point("qemu-stop", HypervisorError)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                return
            if self._wait_gone(wait):
                return
        raise HypervisorError(f"QEMU pid {self.proc.pid} does not die")

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
