"""Starting and stopping the long-lived helper processes: kata-proxy, kata-shim, kata-netmon and
the VM cache daemon.

All are run as ``python -S <package>/bin/kata-<name>``: no site packages, so their resident
memory stays at a few megabytes. Each reports readiness over a pipe before the runtime goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kata_runtime import faults
from kata_runtime.errors import ProxyError, ShimError
from kata_runtime.store import ProcRef

BIN_DIR = Path(__file__).resolve().parent / "bin"


def _program(name: str, configured: str) -> list[str]:
    if configured:
        return [configured]
    return [sys.executable, "-S", str(BIN_DIR / name)]


def _wait_ready(rfd: int, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Read the child's readiness byte; returns "" when ready, else its message."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(rfd, selectors.EVENT_READ)
        if not sel.select(timeout):
            return f"not ready within {timeout:g}s"
    data = os.read(rfd, 4096)
    if data[:1] == b"1":
        return ""
    if data[:1] == b"E":
        return data[1:].decode(errors="replace")
    try:  # the pipe closes as it exits: give the kernel a moment to say how
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        return "closed its ready pipe"
    rc = proc.returncode
    return f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"


def _start_daemon(name: str, argv: list[str], log: Path, sandbox: str, netns: str | None = None) -> ProcRef:
    """Start a per-sandbox daemon (its own session, output to ``log``, born in ``netns``) with
    ``--ready-fd N`` appended, and return once it says it is ready; ProxyError naming it and the
    last line of its log otherwise."""
    from kata_runtime.network import netns as _netns

    rfd, wfd = os.pipe()
    try:
        faults.point(name)
        with open(log, "ab") as logf, _netns.entered(netns):
            proc = subprocess.Popen(argv + ["--ready-fd", str(wfd)], stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=logf, pass_fds=(wfd,), start_new_session=True, cwd="/")
        os.close(wfd)
        wfd = -1
        problem = _wait_ready(rfd, proc, 10.0)
    except OSError as e:
        raise ProxyError(f"cannot start {name}: {e}", container=sandbox, step="create") from None
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    if problem:
        kill(ProcRef.of(proc.pid))
        detail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise ProxyError(f"{name} {problem}{': ' + detail[0] if detail else ''}", container=sandbox, step="create")
    return ProcRef.of(proc.pid)


def start_proxy(sandbox: str, channel: Path, listen: Path, log: Path, configured: str = "") -> ProcRef:
    """Start kata-proxy for a sandbox; returns once it owns the channel and listens."""
    argv = _program("kata-proxy", configured) + [
        "--sandbox", sandbox, "--channel", str(channel), "--listen", str(listen)]
    return _start_daemon("kata-proxy", argv, log, sandbox)


def start_netmon(sandbox: str, netns: str, runtime: str, root: Path, config: str, watch_pid: int, log: Path,
                 configured: str = "") -> ProcRef:
    """Start kata-netmon in the sandbox's network namespace; returns once it listens."""
    argv = _program("kata-netmon", configured) + [
        "--runtime", runtime, "--root", str(root), "--sandbox", sandbox, "--watch-pid", str(watch_pid),
        "--config", config or "-"]
    return _start_daemon("kata-netmon", argv, log, sandbox, netns)


def start_vm_cache(endpoint: str, number: int, accel: str, config: str, log: Path) -> ProcRef:
    """Start the VM cache daemon (``factory init``, see ``factory/cache.py``); returns once it
    listens on ``endpoint``. ``config``: the configuration file it was started with ("" for the
    built-in defaults)."""
    argv = _program("kata-vm-cache", "") + [
        "--endpoint", endpoint, "--number", str(number), "--accel", accel, "--config", config or "-"]
    return _start_daemon("kata-vm-cache", argv, log, "vm-cache")


def start_shim(container: str, exec_id: str, proxy_socket: Path, *, detach: bool, tty: bool = False,
               terminal_fd: int | None = None, configured: str = "", step: str = "create",
               netns: str = "", command: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start the kata-shim of one process; it keeps this process's stdio (the container's), or
    has ``terminal_fd`` (the slave of the pty whose master went to the engine) as all three.

    It is born in the sandbox's network namespace ``netns`` (engines look for the container's
    network through ``/proc/<pid>/ns/net`` of the pid we report, which is the shim's), and carries
    ``command`` (the process's argv in the guest) after ``--`` so that the host's ``ps`` (and so
    ``docker top``) shows what it stands for.

    Detached, it gets its own session and outlives us; otherwise it is our child in our process
    group (so a terminal's ^C reaches it). Returns once it is attached to the process."""
    from kata_runtime.network import netns as _netns

    rfd, wfd = os.pipe()
    argv = _program("kata-shim", configured) + [
        "--container", container, "--exec", exec_id, "--proxy", str(proxy_socket), "--ready-fd", str(wfd),
        "--tty", "1" if tty else "0", "--detached", "1" if detach else "0"]
    if command:
        argv += ["--", *(a.replace("\0", " ") for a in command)]
    try:
        faults.point("kata-shim")
        with _netns.entered(netns or None):
            proc = subprocess.Popen(argv, pass_fds=(wfd,), start_new_session=detach, cwd="/", stdin=terminal_fd,
                                    stdout=terminal_fd, stderr=terminal_fd)
        os.close(wfd)
        wfd = -1
        problem = _wait_ready(rfd, proc, 30.0)
    except OSError as e:
        raise ShimError(f"cannot start kata-shim: {e}", container=container, step=step) from None
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    if problem:
        kill(ProcRef.of(proc.pid), graceful=False)
        proc.wait()
        # its own words name it already ("kata-shim: container C process P: cannot attach: ...")
        said = problem.removeprefix("kata-shim: ") if problem.startswith("kata-shim: ") else f"kata-shim {problem}"
        raise ShimError(said, container=container, step=step)
    return proc


def kill(ref: ProcRef | None, timeout: float = 2.0, graceful: bool = True) -> None:
    """SIGTERM, then SIGKILL, a process of ours that may still run; returns when it is gone.

    ``graceful=False`` goes straight to SIGKILL: a kata-shim forwards SIGTERM to its workload."""
    if ref is None or not ref.alive():
        return
    steps = ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)) if graceful else ((signal.SIGKILL, 5.0),)
    for sig, wait in steps:
        try:
            os.kill(ref.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while ref.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not ref.alive():
            return


def wait_gone(ref: ProcRef | None, timeout: float) -> bool:
    """Wait up to ``timeout`` for a process to end by itself."""
    deadline = time.monotonic() + timeout
    while ref is not None and ref.alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def send_console(console_socket: Path, cid: str, step: str) -> int:
    """Allocate a pty, send its master to the engine's console socket (SCM_RIGHTS, as runc does)
    and return the slave, which becomes the shim's stdio."""
    import socket

    master, slave = os.openpty()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            faults.point("console-socket")
            sock.connect(str(console_socket))
            socket.send_fds(sock, [os.ttyname(slave).encode()], [master])
    except OSError as e:
        os.close(slave)
        raise ShimError(f"cannot send the terminal to console socket {console_socket}: {e.strerror or e}",
                        container=cid, step=step) from None
    finally:
        os.close(master)
    return slave


def cmdline(pid: int | str) -> list[bytes] | None:
    """The arguments of process ``pid`` (None when it is gone or not ours to read)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1]
    except OSError:
        return None


def kill_network_syncs(root: Path, sandbox: str) -> None:
    """SIGKILL every ``kata-runtime kata-network sync`` that kata-netmon started for ``sandbox``
    (of state root ``root``), its own or orphaned (kata-netmon killed mid-sync).

    Called with the sandbox's lock held, while it is destroyed: a sync then waits for that lock and
    has changed nothing yet, but it sits in the sandbox's host cgroup, which could not be removed
    while it lived (and it would wait for the lock until the destroy gave up on the cgroup)."""
    from kata_runtime.netmon.main import SYNC

    tail = [w.encode() for w in (*SYNC, sandbox)]
    for entry in filter(str.isdigit, os.listdir("/proc")):
        argv = cmdline(entry) or []
        if argv[-3:] == tail and b"--root" in argv and argv[argv.index(b"--root") + 1:][:1] == [str(root).encode()]:
            kill(ProcRef.of(int(entry)), graceful=False)


def kill_exact(pid: int, marker: bytes) -> None:
    """SIGKILL ``pid`` if its command line contains ``marker`` (a pid from a file may be reused)."""
    if marker in b"\0".join(cmdline(pid) or []):
        kill(ProcRef.of(pid), graceful=False)
