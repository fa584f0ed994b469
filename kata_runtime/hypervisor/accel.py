"""KVM or TCG: does ``/dev/kvm`` really boot a guest?

On some hosts ``/dev/kvm`` exists, opens and answers ioctls, yet a stock kernel hangs early in its
boot under it (a nested "PVM" KVM device). Opening the device proves nothing, so ``auto`` boots a
probe: QEMU with ``-accel kvm``, the guest kernel and initrd, and the kernel parameter
``kata.bare=1``, with which the guest's /init prints ``KATA_BARE_BOOT_DONE`` and powers off (without
a root disk it does so right after loading its modules). On a working KVM host that takes well under
a second; here it never comes, and the probe is killed at the timeout.

The verdict is cached in ``/run/vc/kvm-verdict.json``, keyed by the kernel (path and mtime), the
initrd and QEMU (paths and mtimes) and ``/dev/kvm``'s device number, so the runtime probes once per
boot of the host (``/run`` is a tmpfs), not on every ``create``. Delete the file to probe again.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import selectors
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

from kata_runtime.errors import ConfigError

KVM_DEVICE = "/dev/kvm"
VERDICT_FILE = Path("/run/vc/kvm-verdict.json")
LOCK_FILE = Path("/run/vc/kvm-verdict.lock")
PROBE_MARK = b"KATA_BARE_BOOT_DONE"
KVM_API_VERSION = 12
_KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
_MAX_ENTRIES = 8
PROBE_CPU = "host"  # what the runtime runs with KVM (HypervisorConfig.cpu_model empty)
_PROBE_PARAMS = (
    "console=ttyS0 quiet panic=-1 kata.bare=1 tsc=reliable no_timer_check rcupdate.rcu_expedited=1 "
    "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd i8042.noprobe cryptomgr.notests "
    "8250.nr_uarts=1 random.trust_cpu=on nowatchdog"
)


def kvm_device_problem(device: str = KVM_DEVICE) -> str | None:
    """Why ``device`` cannot be used at all (missing, not a device, no access, wrong API), or None."""
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return f"{device} does not exist (no KVM on this host, or not passed into this container)"
    except OSError as e:
        return f"cannot stat {device}: {e.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{device} is not a character device"
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open {device} read-write: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
    except OSError as e:
        return f"{device} does not answer KVM_GET_API_VERSION: {e.strerror}"
    finally:
        os.close(fd)
    if version != KVM_API_VERSION:
        return f"{device} speaks KVM API version {version}, not {KVM_API_VERSION}"
    return None


def _file_id(path: str) -> list[Any]:
    try:
        return [path, os.stat(path).st_mtime_ns]
    except OSError:
        return [path, None]


def _verdict_key(qemu: str, kernel: str, initrd: str) -> str:
    rdev = os.stat(KVM_DEVICE).st_rdev
    key = {
        "kernel": _file_id(kernel),
        "initrd": _file_id(initrd) if initrd else None,
        "qemu": _file_id(qemu),
        "kvm_rdev": f"{os.major(rdev)}:{os.minor(rdev)}",
    }
    return json.dumps(key, sort_keys=True)


def _read_verdicts() -> dict[str, Any]:
    try:
        data = json.loads(VERDICT_FILE.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def _write_verdict(key: str, usable: bool, reason: str) -> None:
    entries = _read_verdicts()
    entries[key] = {"usable": usable, "reason": reason, "probed_at": time.time()}
    while len(entries) > _MAX_ENTRIES:  # keep the newest
        del entries[min(entries, key=lambda k: entries[k].get("probed_at", 0))]
    tmp = VERDICT_FILE.with_name(f".{VERDICT_FILE.name}.{os.getpid()}")
    try:
        VERDICT_FILE.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"version": 1, "entries": entries}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, VERDICT_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)  # no cache: the next call probes again


def _no_core_dump() -> None:
    """In the probe's child: a QEMU that aborts under a broken KVM must not leave a core file."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _probe(qemu: str, kernel: str, initrd: str, timeout: float) -> tuple[bool, str]:
    """Boot the probe VM under KVM; (reached the marker, what happened)."""
    argv = [
        qemu, "-machine", "q35", "-accel", "kvm", "-cpu", PROBE_CPU, "-m", "256", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-nic", "none",
        "-no-reboot", "-serial", "stdio", "-kernel", kernel, "-append", _PROBE_PARAMS,
    ]
    if initrd:
        argv += ["-initrd", initrd]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True, preexec_fn=_no_core_dump)
    except OSError as e:
        return False, f"cannot run {qemu}: {e.strerror}"
    out = bytearray()
    err = bytearray()
    reached = False
    try:
        assert proc.stdout is not None and proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        open_streams = 2
        deadline = start + timeout
        while open_streams and not reached:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sk, _ in sel.select(left):
                chunk = os.read(sk.fd, 65536)
                if not chunk:
                    sel.unregister(sk.fileobj)
                    open_streams -= 1
                    continue
                sk.data.extend(chunk)
            # without an initrd there is no marker: a kernel that panics at its root mount
            # (panic=-1 + -no-reboot: QEMU exits) booted fine
            reached = PROBE_MARK in out or (not initrd and b"Kernel panic" in out)
        sel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    took = time.monotonic() - start
    if reached:
        what = "reached KATA_BARE_BOOT_DONE" if initrd else "booted to its root mount"
        return True, f"a probe VM under KVM {what} in {took:.1f} s"
    errors = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    if proc.returncode not in (None, 0, -signal.SIGKILL) and errors:
        how = f"exit status {proc.returncode}"
        if proc.returncode < 0:
            try:
                how = f"killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                how = f"killed by signal {-proc.returncode}"
        return False, f"QEMU cannot run a guest with KVM (-cpu {PROBE_CPU}; {how}): {errors[-1].strip()}"
    console = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    last = f" (last console line: {console[-1].strip()[:120]!r})" if console else " (no console output)"
    if took >= timeout:
        return False, (
            f"/dev/kvm opens, but a probe VM under KVM did not finish booting within {timeout:g} s{last}: "
            "this KVM cannot run a stock kernel (nested or PVM KVM?)"
        )
    return False, f"a probe VM under KVM exited after {took:.1f} s without finishing its boot{last}"


def kvm_usable(qemu: str, kernel: str, initrd: str, timeout: float = 8.0) -> tuple[bool, str]:
    """Whether QEMU can boot ``kernel`` (+ ``initrd``) with KVM on this host, and why, in words.

    Checks that /dev/kvm exists, opens read-write and speaks KVM's API, then (unless a cached
    verdict for the same kernel, initrd, QEMU and /dev/kvm exists) boots a probe VM with
    ``kata.bare=1`` and waits up to ``timeout`` seconds for ``KATA_BARE_BOOT_DONE``. The probe
    process is always killed and reaped. Without an initrd, a kernel that gets as far as panicking
    at its root mount counts as booted.
    """
    problem = kvm_device_problem()
    if problem:
        return False, problem
    for what, path in (("guest kernel", kernel), ("guest initrd", initrd)):
        if path and not os.path.isfile(path):
            return False, f"cannot probe KVM: {what} {path} does not exist"
    key = _verdict_key(qemu, kernel, initrd)
    cached = _read_verdicts().get(key)
    if isinstance(cached, dict) and "usable" in cached:
        return bool(cached["usable"]), f"{cached.get('reason', '')} (cached in {VERDICT_FILE})"
    lock_fd = _lock(timeout + 10.0)
    try:
        cached = _read_verdicts().get(key)  # another process may have probed while we waited
        if isinstance(cached, dict) and "usable" in cached:
            return bool(cached["usable"]), f"{cached.get('reason', '')} (cached in {VERDICT_FILE})"
        usable, reason = _probe(qemu, kernel, initrd, timeout)
        if not reason.startswith("cannot run"):
            _write_verdict(key, usable, reason)
        return usable, reason
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _lock(wait: float) -> int | None:
    """Serialize probes across processes; after ``wait`` seconds go on without the lock."""
    try:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


def choose_accel(setting: str, qemu: str, kernel: str, initrd: str) -> tuple[str, str]:
    """("kvm" | "tcg", reason) for the configured ``accel`` setting: ``auto``, ``kvm`` or ``tcg``.

    ``kvm`` and ``tcg`` are obeyed as configured (a forced ``kvm`` notes when /dev/kvm looks
    unusable); ``auto`` chooses KVM only when :func:`kvm_usable` says a guest really boots with it.
    """
    if setting == "tcg":
        return "tcg", "configured: accel = tcg"
    if setting == "kvm":
        problem = kvm_device_problem()
        return "kvm", "configured: accel = kvm" + (f" (but {problem})" if problem else "")
    if setting != "auto":
        raise ConfigError(f"[hypervisor.qemu] accel must be auto, kvm or tcg, not {setting!r}")
    usable, reason = kvm_usable(qemu, kernel, initrd)
    return ("kvm" if usable else "tcg"), reason
