"""Containers and processes in the guest, made with the guest image's runc.

The agent keeps one :class:`Process` per container init and per exec. Its stdio are pipes whose
far ends the process holds; the channel loop reads and writes them while a kata-shim is attached.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import itertools
import os

from kata_runtime.guest import glog as log
from kata_runtime.guest import lite
from kata_runtime.guest.reaper import Reaper

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: typing, dataclasses and pathlib cost the agent's start ~0.5 s under TCG
    from collections.abc import Callable
    from typing import Any

RUNC_ROOT = "/run/runc"
PIPE_SIZE = 1 << 20  # bytes of a process's stdio pipes (Linux's default is 64 KiB)


def default_oci_runtime() -> str:
    """crun when the image has it (a C program: it starts several times faster than runc under
    TCG, and every container create, start and exec pays that start), else runc."""
    for candidate in ("/usr/bin/crun", "/usr/bin/runc"):
        if os.path.exists(candidate):
            return candidate
    return "/usr/bin/runc"


RUNC = default_oci_runtime()
CONTAINERS_DIR = "/run/kata-containers"
CONSOLE_DIR = f"{CONTAINERS_DIR}/console"
_console_serial = itertools.count()
NS_DIR = f"{CONTAINERS_DIR}/ns"  # <container>/<OCI type> -> /proc/<its init>/ns/<name>: what a peer joins
USERNS_DIR = f"{CONTAINERS_DIR}/userns"  # <container>: its share, bound where a user namespace can reach it
MS_BIND, MS_REC, MNT_DETACH = 4096, 16384, 2
PROC_NS_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts", "user": "user",
                 "cgroup": "cgroup"}


class AgentFailure(Exception):
    """An operation failed; the message is what the runtime shows the user."""


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _rmtree(path: str) -> None:
    import shutil  # not at start: it pulls in bz2, lzma and fnmatch

    shutil.rmtree(path, ignore_errors=True)


class Process:
    """One process the agent started (a container's init or an exec)."""

    __slots__ = ("container_id", "exec_id", "pid", "tty", "stdin_fd", "stdout_fd", "stderr_fd", "status", "exited",
                 "session")

    def __init__(self, container_id: str, exec_id: str, pid: int, tty: bool = False, stdin_fd: int | None = None,
                 stdout_fd: int | None = None, stderr_fd: int | None = None) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = pid
        self.tty = tty
        self.stdin_fd = stdin_fd  # agent's write end (or the pty master)
        self.stdout_fd = stdout_fd  # agent's read end (or the pty master)
        self.stderr_fd = stderr_fd
        self.status: int | None = None
        self.exited = lite.Event()
        self.session: Any = None  # the attached shim session; owned by the channel loop

    def close_fds(self) -> None:
        for name in ("stdin_fd", "stdout_fd", "stderr_fd"):
            fd = getattr(self, name)
            if fd is not None and (name == "stdin_fd" or fd != self.stdin_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            setattr(self, name, None)


class Container:
    __slots__ = ("id", "bundle", "init", "processes", "status", "cgroup")

    def __init__(self, cid: str, bundle: str, init: Process, cgroup: str = "") -> None:
        self.id = cid
        self.bundle = bundle
        self.init = init
        self.processes: dict[str, Process] = {}
        self.status = "created"
        self.cgroup = cgroup  # linux.cgroupsPath as given to the OCI runtime (under /sys/fs/cgroup)


def apply_sandbox_sysctls(sysctls: dict[str, str]) -> None:
    """Write ``net.*`` sysctls to the VM's network stack (the container's: it has no other)."""
    for key, value in sysctls.items():
        if not key.startswith("net.") or "/" in key or ".." in key:
            raise AgentFailure(f"sysctl {key}: not a network sysctl of the sandbox")
        try:
            _write("/proc/sys/" + key.replace(".", "/"), value)
        except OSError as e:
            raise AgentFailure(f"sysctl {key}={value}: {e.strerror or e}") from None


class Containers:
    """The agent's containers, created and driven with runc."""

    def __init__(self, reaper: Reaper, on_exit: Callable[[Process], None]) -> None:
        self.reaper = reaper
        self._on_exit = on_exit  # called from the reaper thread when a process exits
        self._lock = lite.Lock()
        self.containers: dict[str, Container] = {}

    # -- helpers ------------------------------------------------------------------------------
    def _runc(self, *args: str, what: str, log_file: str | None = None) -> None:
        argv = [RUNC, "--root", RUNC_ROOT]
        if log_file is not None:
            argv += ["--log", log_file, "--log-format", "json"]
        status, out, err = self.reaper.run(argv + list(args))
        if status != 0:
            raise AgentFailure(f"{what}: {_runc_error(err, log_file) or out.decode(errors='replace').strip()}")

    def get(self, cid: str) -> Container:
        with self._lock:
            c = self.containers.get(cid)
        if c is None:
            raise AgentFailure(f"container {cid} does not exist in the sandbox")
        return c

    def process(self, cid: str, exec_id: str) -> Process:
        c = self.get(cid)
        if not exec_id or exec_id == cid:
            return c.init
        p = c.processes.get(exec_id)
        if p is None:
            raise AgentFailure(f"container {cid} has no process {exec_id}")
        return p

    def _watch(self, proc: Process) -> None:
        def exited(_pid: int, status: int) -> None:
            proc.status = status
            proc.exited.set()
            self._on_exit(proc)

        self.reaper.on_exit(proc.pid, exited)

    def _run_oci(self, argv: list[str], stdio: tuple[int, int, int]) -> int:
        """Start the OCI runtime with the given stdio; returns its pid (watched via the reaper)."""
        return self.reaper.spawn(argv, *stdio)

    def _wait_exit(self, pid: int, console: Any = None) -> tuple[int, int | None]:
        """Wait for the OCI runtime to exit; with a console socket, also take the pty master it
        sends there (SCM_RIGHTS). Returns (exit status, master fd or None)."""
        done = lite.Event()
        result: list[int] = []

        def finished(_pid: int, status: int) -> None:
            result.append(status)
            done.set()

        self.reaper.on_exit(pid, finished)
        master: int | None = None
        if console is not None:
            console.settimeout(0.05)
            while master is None and not done.is_set():
                try:
                    conn_fd, _ = console._accept()
                except TimeoutError:
                    continue
                conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, conn_fd)
                try:
                    conn.settimeout(10)
                    _msg, fds = lite.recv_fds(conn, 4096, 1)
                    master = fds[0] if fds else None
                finally:
                    conn.close()
        done.wait()
        return result[0], master

    def _start_process(self, argv: list[str], cid: str, exec_id: str, workdir: str, tty: bool,
                       what: str) -> Process:
        """Run ``create``/``exec --detach`` of the OCI runtime and watch the process it starts.

        Without a terminal the process gets fresh pipes; with one, the runtime allocates a pty in
        the container and hands its master to the agent over a console socket."""
        log_file = f"{workdir}/runc-{exec_id}.log"
        pid_file = f"{workdir}/{exec_id}.pid"
        base = [RUNC, "--root", RUNC_ROOT, "--log", log_file, "--log-format", "json", *argv, "--pid-file", pid_file]
        if tty:
            # not under workdir: AF_UNIX paths are limited to 107 bytes and ids may be 64 characters
            os.makedirs(CONSOLE_DIR, exist_ok=True)
            sock_path = f"{CONSOLE_DIR}/{os.getpid()}-{next(_console_serial)}.sock"
            console = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                console.bind(sock_path)
                console.listen(1)
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    pid = self._run_oci(base + ["--console-socket", sock_path, cid], (null, null, null))
                finally:
                    os.close(null)
                status, master = self._wait_exit(pid, console)
            finally:
                console.close()
                try:
                    os.unlink(sock_path)
                except FileNotFoundError:
                    pass
            if status != 0 or master is None:
                if master is not None:
                    os.close(master)
                msg = _runc_error(b"", log_file) or f"exited {status} without sending a terminal"
                raise AgentFailure(f"{what}: {msg}")
            os.set_blocking(master, False)
            proc = Process(cid, exec_id, int(_read(pid_file).strip()), True, master, master, None)
            self._watch(proc)
            return proc
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            status, _ = self._wait_exit(self._run_oci(base + [cid], (in_r, out_w, err_w)))
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        if status != 0:
            msg = _runc_error(b"", log_file) or _drain(err_r) or f"exited {status}"
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise AgentFailure(f"{what}: {msg}")
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
            try:  # the agent then moves a process's stdio in fewer, larger reads and writes (TCG: each costs)
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass
        proc = Process(cid, exec_id, int(_read(pid_file).strip()), False, in_w, out_r, err_r)
        self._watch(proc)
        return proc

    def resize(self, proc: Process, rows: int, cols: int) -> None:
        """Set the terminal size of a process that has one."""
        if proc.tty and proc.stdin_fd is not None:
            try:
                import struct
                import termios  # not at start: a shared library to load

                fcntl.ioctl(proc.stdin_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            except OSError as e:
                log.info("resize %s/%s: %s", proc.container_id, proc.exec_id, e)

    # -- operations ---------------------------------------------------------------------------
    def create(self, cid: str, guest_spec: dict[str, Any], no_pivot: bool, sysctls: dict[str, str]) -> None:
        """Create the container from a spec made for the guest by the runtime (oci/guest_spec.py)."""
        with self._lock:
            if cid in self.containers:
                raise AgentFailure(f"container {cid} already exists in the sandbox")
        apply_sandbox_sysctls(sysctls)
        bundle = f"{CONTAINERS_DIR}/{cid}"
        os.makedirs(bundle, exist_ok=True)
        try:
            _userns_view(cid, guest_spec)
            _write(f"{bundle}/config.json", lite.dumps(guest_spec))
            tty = bool(guest_spec.get("process", {}).get("terminal"))
            argv = ["create", "--bundle", bundle] + (["--no-pivot"] if no_pivot else [])
            init = self._start_process(argv, cid, cid, bundle, tty, _tool())
        except AgentFailure:
            _drop_userns_view(cid)
            _rmtree(bundle)
            raise
        links = f"{NS_DIR}/{cid}"
        os.makedirs(links, exist_ok=True)
        for kind, name in PROC_NS_NAMES.items():
            link = f"{links}/{kind}"
            try:
                os.unlink(link)
            except FileNotFoundError:
                pass
            os.symlink(f"/proc/{init.pid}/ns/{name}", link)
        with self._lock:
            self.containers[cid] = Container(cid, bundle, init,
                                             cgroup=guest_spec.get("linux", {}).get("cgroupsPath", ""))

    def start(self, cid: str) -> None:
        c = self.get(cid)
        if not _release_crun_init(cid):
            self._runc("start", cid, what=_tool())
        c.status = "running"

    def exec(self, cid: str, exec_id: str, process: dict[str, Any]) -> None:
        c = self.get(cid)
        if exec_id in c.processes or exec_id == cid:
            raise AgentFailure(f"container {cid} already has a process {exec_id}")
        path = f"{c.bundle}/exec-{exec_id}.json"
        _write(path, lite.dumps(process))
        tty = bool(process.get("terminal"))
        proc = self._start_process(["exec", "--detach", "--process", path], cid, exec_id, c.bundle, tty,
                                   _tool())
        c.processes[exec_id] = proc

    def signal(self, cid: str, exec_id: str, signo: int, all_processes: bool) -> None:
        c = self.get(cid)
        if all_processes:
            self._runc("kill", "--all", cid, str(signo), what=_tool())
            return
        proc = self.process(cid, exec_id)
        if proc.exited.is_set():
            return
        if proc is c.init and c.status == "created":
            # still "runc init" waiting for start: runc knows how to kill it
            self._runc("kill", cid, str(signo), what=_tool())
            return
        try:
            os.kill(proc.pid, signo)
        except ProcessLookupError:
            pass

    def wait(self, cid: str, exec_id: str) -> int:
        proc = self.process(cid, exec_id)
        proc.exited.wait()
        assert proc.status is not None
        return proc.status

    def pause(self, cid: str) -> None:
        self.get(cid)
        self._runc("pause", cid, what=_tool())

    def resume(self, cid: str) -> None:
        self.get(cid)
        self._runc("resume", cid, what=_tool())

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        """Apply new OCI ``linux.resources`` to a container (the OCI runtime's ``update``)."""
        c = self.get(cid)
        path = f"{c.bundle}/resources.json"
        _write(path, lite.dumps(resources))
        self._runc("update", "--resources", path, cid, what=_tool())

    def stats(self, cid: str) -> dict[str, Any]:
        """runc's ``events --stats`` data, from the container's cgroup (v2) in the guest."""
        c = self.get(cid)
        return cgroup_stats("/sys/fs/cgroup/" + c.cgroup.lstrip("/"))

    def ps(self, cid: str) -> list[int]:
        """Guest pids of the container's processes."""
        self.get(cid)
        status, out, err = self.reaper.run([RUNC, "--root", RUNC_ROOT, "ps", "--format", "json", cid])
        if status != 0:
            raise AgentFailure(f"{_tool()}: {err.decode(errors='replace').strip()}")
        return list(lite.loads(out or b"[]") or [])

    def ps_table(self, cid: str, args: list[str]) -> bytes:
        """The guest's ``ps`` (busybox: ``-o COLUMNS``), header plus the container's processes."""
        pids = set(self.ps(cid))
        argv = ["/bin/ps"] + (args or ["-o", "pid,user,stat,args"])
        status, out, err = self.reaper.run(argv)
        if status != 0:
            raise AgentFailure(err.decode(errors="replace").strip())
        lines = out.decode(errors="replace").splitlines()
        if not lines:
            return b""
        header = lines[0].split()
        if "PID" not in header:
            raise AgentFailure("ps: the output has no PID column")
        col = header.index("PID")
        rows = [line for line in lines[1:] if line.split()[col:col + 1] and line.split()[col].isdigit()
                and int(line.split()[col]) in pids]
        return ("\n".join([lines[0], *rows]) + "\n").encode()

    def remove(self, cid: str) -> list[Process]:
        """Delete the container (killing what still runs); returns its processes for the loop."""
        c = self.get(cid)
        status, _out, err = self.reaper.run([RUNC, "--root", RUNC_ROOT, "delete", "--force", cid])
        if status != 0 and b"does not exist" not in err:
            raise AgentFailure(f"remove container {cid}: {err.decode(errors='replace').strip()}")
        with self._lock:
            self.containers.pop(cid, None)
        _drop_userns_view(cid)
        _rmtree(c.bundle)
        _rmtree(f"{NS_DIR}/{cid}")
        return [c.init, *c.processes.values()]

    def remove_all(self) -> list[Process]:
        procs: list[Process] = []
        for cid in list(self.containers):
            try:
                procs += self.remove(cid)
            except AgentFailure as e:
                log.warning("%s", e)
        return procs


def _userns_view(cid: str, spec: dict[str, Any]) -> None:
    """For a container with a user namespace: bind its directory of the share (the rootfs's
    parent: its rootfs and volumes) under :data:`USERNS_DIR` and point the spec there. Its mapped
    root cannot search the share's own root, whose mode is the host directory's (0700, root's);
    through the bind, the path is the guest's own directories and then the container's."""
    linux = spec.get("linux") or {}
    if not any(ns.get("type") == "user" for ns in linux.get("namespaces") or []):
        return
    root = spec.get("root") or {}
    share = os.path.dirname(str(root.get("path", "")))
    view = f"{USERNS_DIR}/{cid}"
    os.makedirs(view, exist_ok=True)
    os.chmod(USERNS_DIR, 0o755)
    if lite.libc().mount(share.encode(), view.encode(), None, MS_BIND | MS_REC, None) != 0:
        err = lite.errno_now()
        os.rmdir(view)
        raise AgentFailure(f"bind {share} on {view} for the user namespace: {os.strerror(err)}")
    prefix = share + "/"
    root["path"] = view + root["path"][len(share):]
    for m in spec.get("mounts") or []:
        if str(m.get("source", "")).startswith(prefix):
            m["source"] = view + m["source"][len(share):]


def _drop_userns_view(cid: str) -> None:
    """Undo :func:`_userns_view` (nothing when there is none). Only unmount and rmdir: the view is
    the host's files, never to be removed through."""
    view = f"{USERNS_DIR}/{cid}"
    if not os.path.isdir(view):
        return
    if lite.libc().umount2(view.encode(), MNT_DETACH) != 0 and lite.errno_now() != errno.EINVAL:
        log.warning("unmount %s: %s", view, os.strerror(lite.errno_now()))
        return
    try:
        os.rmdir(view)
    except OSError as e:
        log.warning("remove %s: %s", view, e.strerror)


def _read_kv(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                out[key] = int(value)
    except OSError:
        pass
    return out


def _read_int(path: str, unlimited: int = 0) -> int:
    """A cgroup value; ``max`` (no limit) reads as ``unlimited``."""
    try:
        text = _read(path).strip()
    except OSError:
        return 0
    return unlimited if text == "max" else int(text or 0)


OOM_KILL_KEY = "oom_kill"  # memory.events' count of processes the OOM killer ended in this cgroup


def cgroup_stats(cg: str) -> dict[str, Any]:
    """The fields of runc's stats (``events --stats``) that cgroup v2 has."""
    cpu = _read_kv(f"{cg}/cpu.stat")
    mem = _read_kv(f"{cg}/memory.stat")
    events = _read_kv(f"{cg}/memory.events")
    limit = _read_int(f"{cg}/memory.max", unlimited=2**63 - 1)
    return {
        "cpu": {"usage": {"total": cpu.get("usage_usec", 0) * 1000, "user": cpu.get("user_usec", 0) * 1000,
                          "kernel": cpu.get("system_usec", 0) * 1000},
                "throttling": {"periods": cpu.get("nr_periods", 0), "throttled_periods": cpu.get("nr_throttled", 0),
                               "throttled_time": cpu.get("throttled_usec", 0) * 1000}},
        "memory": {"usage": {"usage": _read_int(f"{cg}/memory.current"), "limit": limit,
                             "max": _read_int(f"{cg}/memory.peak"), "failcnt": events.get("max", 0)},
                   "swap": {"usage": _read_int(f"{cg}/memory.swap.current"),
                            "limit": _read_int(f"{cg}/memory.swap.max", unlimited=2**63 - 1)},
                   "cache": mem.get("file", 0), "raw": mem},
        "pids": {"current": _read_int(f"{cg}/pids.current"), "limit": _read_int(f"{cg}/pids.max")},
        "blkio": {}, "hugetlb": {}, "intel_rdt": {}, "network_interfaces": None,
        # not runc's: the host's ``events`` turns a rise of it into an "oom" event, then drops it
        OOM_KILL_KEY: events.get("oom_kill", 0),
    }


def _release_crun_init(cid: str) -> bool:
    """Start a container made by crun the way ``crun start`` does, without running crun: open the
    fifo its init waits on (crun's state directory, ``exec.fifo``), remove it (which is what makes
    crun's ``state`` say running) and write one byte. ``crun start`` does nothing more for a spec
    without poststart hooks or a notify socket, and the guest's spec has neither (the host runs the
    hooks); crun's own start, its loading and JSON parsing emulated by TCG, cost about 0.4 s here.
    False when there is no such fifo (runc in the guest, or no longer "created"): then the tool's
    own ``start`` runs and says what is wrong."""
    if _tool() != "crun":
        return False
    fifo = f"{RUNC_ROOT}/{cid}/exec.fifo"
    try:
        # non-blocking: with no reader (an init that has died) open fails instead of waiting forever
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise AgentFailure(f"crun: container `{cid}` is not running") from None
        raise AgentFailure(f"crun: cannot open `{fifo}`: {e.strerror}") from None
    try:
        os.unlink(fifo)
        os.write(fd, b"\0")
    except OSError as e:
        raise AgentFailure(f"crun: start {cid}: {e.strerror}") from None
    finally:
        os.close(fd)
    return True


def _tool() -> str:
    """How errors of the OCI runtime are prefixed: its name ("crun: ...")."""
    return os.path.basename(RUNC)


def _drain(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536).decode(errors="replace").strip()
    except OSError:
        return ""


def _runc_error(stderr: bytes, log_file: str | None) -> str:
    """The last error runc logged (JSON log), else its stderr."""
    msg = ""
    if log_file is not None:
        try:
            for line in _read(log_file).splitlines():
                try:
                    entry = lite.loads(line)
                except ValueError:
                    continue
                if entry.get("level") in ("error", "fatal"):
                    msg = str(entry.get("msg", ""))
        except OSError:
            pass
    return msg or stderr.decode(errors="replace").strip()
