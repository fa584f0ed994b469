#!/usr/bin/env python3
"""Start time and memory of kata-runtime, beside a bare boot of the same guest and beside runc.

    python benchmarks/run.py [--short] [--repeat N] [--json FILE] [--markdown FILE]

In one run, interleaved (bare, kata, runc, bare, kata, runc, ...) so that machine noise hits all
three alike, N times:

1. bare boot-and-exit: QEMU with the runtime's own argv (``QemuVM.argv()`` of the installed
   configuration, without ``-daemonize``) plus the kernel parameter ``kata.bare=1``: the guest's
   /init prints ``KATA_BARE_BOOT_DONE`` where it would start the agent, and powers off;
2. ``kata-runtime run`` of ``true`` in a busybox bundle, with the runtime's debug phase lines
   (``phase <name> <seconds since the CLI started>`` and ``guest boot <key> <uptime> ...``);
   the same with a VM cloned from a VM template (``[factory] enable_template``, ``factory init``
   once before the loop), and with a VM from the VM cache (``vm_cache_number = 1``: the daemon's
   VM is ready before each such run, and its replacement boots before the loop goes on, so that
   its boot overlaps no measurement);
3. ``runc run`` of the same bundle.

Then the memory of one idle container (``create`` + ``start`` of ``sleep 1000``): PSS and RSS of
QEMU, kata-proxy and kata-shim, the peak RSS of the kata-runtime CLI during ``create``, and the PSS
of a bare ``python -S`` sleeping, for comparison. Everything it starts is killed and deleted at the
end, also on failure or Ctrl-C. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psutil

if __package__ in (None, ""):  # run as a script: the repository on sys.path for ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    MB,
    REPO,
    SHARED_ROOT,
    cmdline,
    compile_checkout,
    default_runc,
    default_runtime,
    diff,
    factory_config,
    find_ours,
    fmt_mb,
    fmt_s,
    guarded,
    guest_ram_resident,
    host_facts,
    kata_processes,
    kill_procs,
    loadavg,
    make_bundle,
    median,
    mem_of,
    meminfo,
    minimum,
    mounts_naming,
    needs_root,
    progress,
    quiet,
    render_saved,
    signals_held,
    tail,
    unwind_on_signals,
    write_results,
)

say = progress("bench")
BARE_MARK = b"KATA_BARE_BOOT_DONE"
PHASE_RE = re.compile(r"\bphase ([A-Za-z_]\w*) (-?[0-9]+(?:\.[0-9]+)?)\b")
GUEST_RE = re.compile(r"\bguest boot ((?:[A-Za-z_]\w* -?[0-9.]+\s*)+)")
QEMU_UP_RE = re.compile(r"QEMU up in ([0-9.]+)\s*s")
PHASE_NAMES = ("qemu_launched", "agent_ready", "sandbox_created", "container_created", "container_started",
               "workload_exited", "deleted")

# Goals (the issue) and the peer: Kata Containers 1.12.1 (Go) on this machine (DESIGN.md section 10).
GOAL_RATIO = 1.3
GOAL_TPL_RATIO = 0.15  # a run with a VM cloned from a template, against a cold one
GOAL_CACHE_RATIO = 0.2  # a run with a VM from the VM cache, against a cold one
GOAL_SHIM_PSS_MB = 6.0
GOAL_PROXY_PSS_MB = 4.5
PEER = {  # Kata 1.12.1 booting OUR guest kernel, interleaved with us on 2026-12-01 (DESIGN.md section 10)
    "kata_run": "8.89 s median, 7.04 s min (same guest kernel, q35, 512 MiB, 9p)",
    "ratio_bare": "",
    "runc_run": "0.035 s",
    "cli_setup": "",
    "qemu_launch": "",
    "guest_to_root": "",
    "agent_start": "",
    "agent_ready_total": "4.3 s (QEMU start → agent started)",
    "create_sandbox": "",
    "create_container": "3.1 s",
    "start_container": "",
    "qemu_mem": "289 MB PSS",
    "proxy_mem": "3.8 MB PSS",
    "shim_mem": "11.3 MB PSS",
    "cli_mem": "27.6 MB RSS",
}


# -------------------------------------------------------------------------------------------- clean-up

@dataclasses.dataclass
class Tracker:
    """Everything this run created, so that ``cleanup`` can remove it whatever happened."""

    work: Path
    runtime: str
    runc: str
    kata_root: Path
    runc_root: Path
    kata_ids: list[str] = dataclasses.field(default_factory=list)
    runc_ids: list[str] = dataclasses.field(default_factory=list)
    bare_names: list[str] = dataclasses.field(default_factory=list)
    children: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    template_config: Path | None = None  # a configuration with [factory] enable_template, once made
    template_dir: Path | None = None
    cache_config: Path | None = None  # a configuration with [factory] vm_cache_number = 1, once made
    cache_endpoint: Path | None = None

    def _quiet(self, argv: list[str], timeout: float) -> int | None:
        return quiet(argv, timeout)

    def leftovers(self) -> list[str]:
        """Processes and mounts of ours that still exist, in words."""
        out = []
        for cid, roles in kata_processes(self.kata_ids + self.bare_names).items():
            for role, procs in roles.items():
                out += [f"{role} pid {p.pid} of {cid}" for p in procs]
        out += [f"mount {m}" for m in mounts_naming([str(self.work)] + self.kata_ids + self.runc_ids)]
        out += [f"VM cache process pid {p.pid}" for p in self._cache_procs()]
        return out

    def _cache_procs(self) -> list[psutil.Process]:
        """The VM cache daemon, its VMs and their proxies (found by the daemon's paths in their argv)."""
        if self.cache_endpoint is None:
            return []
        from kata_runtime.factory.cache import CachePaths

        paths = CachePaths(self.cache_endpoint)
        marks = [str(self.cache_endpoint)] + [str(paths.sock_dir(i)) for i in range(len(self.kata_ids) + 4)]
        return [p for p in psutil.process_iter() if p.pid != os.getpid() and
                any(m in " ".join(cmdline(p)) for m in marks)]

    def cleanup(self) -> list[str]:
        """Kill and delete everything; returns what had to be removed by force (should be empty)."""
        with signals_held():  # a second Ctrl-C must not stop the clean-up
            return self._cleanup()

    def cleanup_into(self, res: dict[str, Any], say: Callable[[str], None]) -> None:
        """``cleanup``, with what it had to force and what is still left written into ``res``."""
        say("clean-up")
        res["left_behind"] = self.cleanup()
        remaining = self.leftovers()
        if remaining:
            res["still_left"] = remaining
            say(f"STILL LEFT after clean-up: {remaining}")

    def _cleanup(self) -> list[str]:
        """Kill and delete everything, signals held by ``cleanup``."""
        for child in self.children:
            if child.poll() is None:
                child.kill()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        stored = [str(f) for f in self.kata_root.rglob("*")] if self.kata_root.exists() else []
        running = kata_processes(self.kata_ids)
        for cid in self.kata_ids:
            if any(cid in f for f in stored) or any(running[cid].values()):
                self._quiet([self.runtime, "--root", str(self.kata_root), "kill", cid, "KILL"], 30)
                self._quiet([self.runtime, "--root", str(self.kata_root), "delete", "--force", cid], 60)
        if self.template_config is not None:
            self._quiet([self.runtime, "--kata-config", str(self.template_config), "factory", "destroy"], 30)
            for p in psutil.process_iter(["cmdline"]):
                if "sandbox-template" in " ".join(cmdline(p)) and str(self.template_dir) in " ".join(cmdline(p)):
                    kill_procs([p])
        if self.template_dir is not None:
            shutil.rmtree(self.template_dir, ignore_errors=True)
        if self.cache_config is not None:
            self._quiet([self.runtime, "--kata-config", str(self.cache_config), "factory", "destroy"], 60)
        for cid in self.runc_ids:
            if (self.runc_root / cid).exists():
                self._quiet([self.runc, "--root", str(self.runc_root), "delete", "--force", cid], 30)
        forced = self.leftovers()
        kill_procs(p for roles in kata_processes(self.kata_ids + self.bare_names).values()
                   for procs in roles.values() for p in procs)
        kill_procs(self._cache_procs())
        for point in mounts_naming([str(self.work)] + self.kata_ids + self.runc_ids):
            self._quiet(["umount", "-l", point], 10)
        for cid in self.kata_ids:  # the runtime's shared directory, outside our work dir
            shared = SHARED_ROOT / cid
            if shared.is_dir() and not mounts_naming([str(shared)]):
                shutil.rmtree(shared, ignore_errors=True)
        if not mounts_naming([str(self.work)]):
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            forced.append(f"{self.work} kept: mounts remain under it")
        return forced


# ----------------------------------------------------------------------------------------- bare boot

def bare_argv(name: str, vm_dir: Path, shared: Path) -> tuple[list[str], Path, str, str]:
    """The runtime's own QEMU argv for a sandbox, with kata.bare=1 and in the foreground.

    Returns (argv, console log path, accel, why that accel)."""
    from kata_runtime.config import load_config
    from kata_runtime.hypervisor.qemu import QemuVM

    cfg = load_config()
    try:
        from kata_runtime.sandbox import choose_accel

        accel, why = choose_accel(cfg)
    except ImportError:  # the runtime's own choice moved: ask the probe directly
        from kata_runtime.hypervisor.accel import choose_accel as probe

        h = cfg.hypervisor
        accel, why = probe(h.accel, h.path, h.kernel, h.initrd)
    params = f"{cfg.hypervisor.kernel_params} kata.bare=1".strip()
    hv = dataclasses.replace(cfg.hypervisor, kernel_params=params)
    vm = QemuVM(name, hv, vm_dir, accel, shared)
    argv: list[str] = []
    skip = False
    for a in vm.argv():
        if skip:
            skip = False
        elif a == "-daemonize":
            continue
        elif a == "-pidfile":
            skip = True
        else:
            argv.append(a)
    return argv, vm.paths.console, accel, why


def bare_boot(tr: Tracker, idx: int, timeout: float) -> dict[str, Any]:
    name = f"bench{os.getpid()}-bare{idx}"
    tr.bare_names.append(name)
    vm_dir = tr.work / name
    shared = tr.work / f"{name}-shared"
    vm_dir.mkdir()
    shared.mkdir()
    argv, console, _, _ = bare_argv(name, vm_dir, shared)
    out = vm_dir / "qemu.out"
    res: dict[str, Any] = {"ok": False, "to_marker": None, "to_exit": None}
    with open(out, "wb") as outf:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=outf, stderr=outf,
                                start_new_session=True)
    tr.children.append(proc)
    seen = b""
    con: IO[bytes] | None = None
    try:
        while True:
            rc = proc.poll()
            now = time.monotonic() - t0
            if res["to_marker"] is None:
                if con is None and console.exists():
                    con = open(console, "rb")  # closed in finally
                if con is not None:
                    seen = (seen + con.read())[-4096:]
                    if BARE_MARK in seen:
                        res["to_marker"] = round(now, 3)
            if rc is not None:
                res["to_exit"] = round(now, 3)
                break
            if now > timeout:
                proc.kill()
                proc.wait()
                res["error"] = f"timeout after {timeout:g} s"
                break
            time.sleep(0.005)
    finally:
        if con is not None:
            con.close()
    if res["to_marker"] is None and console.exists() and BARE_MARK in console.read_bytes():
        res["to_marker"] = res["to_exit"]
    res["ok"] = res["to_marker"] is not None and "error" not in res
    if not res["ok"]:
        res.setdefault("error", f"no {BARE_MARK.decode()} (console: {tail(console)!r}; qemu: {tail(out)!r})")
    shutil.rmtree(vm_dir, ignore_errors=True)
    shutil.rmtree(shared, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------------- kata and runc

def parse_runtime_log(path: Path) -> tuple[dict[str, float], dict[str, float], float | None, list[str]]:
    """(phases, guest boot stamps, QEMU launch time, the matching messages) from a runtime log."""
    phases: dict[str, float] = {}
    guest: dict[str, float] = {}
    qemu_up: float | None = None
    lines: list[str] = []
    try:
        raw = path.read_text(errors="replace").splitlines()
    except OSError:
        raw = []
    for line in raw:
        msg = line
        try:
            obj = json.loads(line)
            if isinstance(obj, dict):
                msg = str(obj.get("msg", line))
        except ValueError:
            pass
        m = PHASE_RE.search(msg)
        if m:
            phases.setdefault(m.group(1), float(m.group(2)))
            lines.append(msg)
            continue
        m = GUEST_RE.search(msg)
        if m:
            words = m.group(1).split()
            for key, val in zip(words[::2], words[1::2], strict=False):
                try:
                    guest[key] = float(val)
                except ValueError:
                    pass
            lines.append(msg)
            continue
        m = QEMU_UP_RE.search(msg)
        if m and qemu_up is None:
            qemu_up = float(m.group(1))
            lines.append(msg)
    return phases, guest, qemu_up, lines


def split_phases(wall: float, ph: dict[str, float], guest: dict[str, float],
                 qemu_up: float | None) -> dict[str, float | None]:
    """Durations of each step of a ``kata-runtime run``, in seconds (None: not in the log)."""
    launched = ph.get("qemu_launched")
    root = guest.get("root_mounted", guest.get("root_ready"))
    if root is not None and root <= 0:
        root = None  # an older guest /init that does not stamp it
    started = guest.get("agent_started")
    serving = guest.get("agent_serving")
    return {
        "cli_setup": diff(launched, qemu_up),
        "qemu_launch": qemu_up,
        "guest_to_agent": started,
        "guest_to_root": root,
        "agent_start": diff(serving, root),
        "root_to_agent": diff(started, root),
        "agent_serving": diff(serving, started),
        "agent_noticed": diff(diff(ph.get("agent_ready"), launched), serving),
        "agent_ready_total": diff(ph.get("agent_ready"), launched),
        "create_sandbox": diff(ph.get("sandbox_created"), ph.get("agent_ready")),
        "create_container": diff(ph.get("container_created"), ph.get("sandbox_created")),
        "start_container": diff(ph.get("container_started"), ph.get("container_created")),
        "workload": diff(ph.get("workload_exited"), ph.get("container_started")),
        "delete": diff(ph.get("deleted"), ph.get("workload_exited")),
        "exit": diff(wall, ph.get("deleted")),
    }


def timed_run(tr: Tracker, argv: list[str], outf: Path, timeout: float) -> tuple[int, float, str]:
    """Run a command (its own session, output to ``outf``): (exit status, wall seconds, error or "")."""
    error = ""
    with open(outf, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
        tr.children.append(proc)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            error = f"timeout after {timeout:g} s"
        wall = time.monotonic() - t0
    return rc, wall, error


def kata_run(tr: Tracker, bundle: Path, idx: int, timeout: float, mode: str = "cold") -> dict[str, Any]:
    """``kata-runtime run`` of the bundle; ``mode``: "cold" (the installed configuration), "template"
    (VM cloned from the template) or "cache" (VM from the VM cache)."""
    cid = f"bench{os.getpid()}-{ {'cold': 'k', 'template': 't', 'cache': 'v'}[mode]}{idx}"
    tr.kata_ids.append(cid)
    logf = tr.work / f"{cid}.log"
    outf = tr.work / f"{cid}.out"
    chosen = {"template": tr.template_config, "cache": tr.cache_config}.get(mode)
    config = ["--kata-config", str(chosen)] if chosen else []
    argv = [tr.runtime, "--root", str(tr.kata_root), *config, "--debug", "--log", str(logf), "--log-format",
            "json", "run", "--bundle", str(bundle), cid]
    res: dict[str, Any] = {"id": cid, "ok": False}
    rc, wall, error = timed_run(tr, argv, outf, timeout)
    if error:
        res["error"] = error
    phases, guest, qemu_up, lines = parse_runtime_log(logf)
    res.update(wall=round(wall, 3), rc=rc, phases=phases, guest=guest, qemu_up=qemu_up,
               durations=split_phases(wall, phases, guest, qemu_up), log_lines=lines)
    left = [f"{role} pid {p.pid}" for role, procs in find_ours(cid).items() for p in procs]
    if left:
        res["left_behind"] = left
    if rc != 0 and "error" not in res:
        res["error"] = f"exit status {rc}: {tail(outf)}"
    res["ok"] = rc == 0 and not left
    return res


def runc_run(tr: Tracker, bundle: Path, idx: int, timeout: float) -> dict[str, Any]:
    cid = f"bench{os.getpid()}-r{idx}"
    tr.runc_ids.append(cid)
    outf = tr.work / f"{cid}.out"
    argv = [tr.runc, "--root", str(tr.runc_root), "run", "--bundle", str(bundle), cid]
    res: dict[str, Any] = {"id": cid, "ok": False}
    rc, wall, error = timed_run(tr, argv, outf, timeout)
    if error:
        res["error"] = error
    res["wall"] = round(wall, 3)
    res["rc"] = rc
    if rc != 0 and "error" not in res:
        res["error"] = f"exit status {rc}: {tail(outf)}"
    res["ok"] = rc == 0
    return res


def run_tracking_peak(argv: list[str], out: Path, timeout: float) -> tuple[int, int, int]:
    """Run ``argv`` (stdout/stderr to ``out``); (exit status, its own peak RSS (VmHWM, polled), the
    ru_maxrss of wait4, which also covers the children it reaped), in bytes."""
    with open(out, "ab") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
    hwm = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with open(f"/proc/{proc.pid}/status") as st:
                    for line in st:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]) * 1024)
            except OSError:
                pass
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, hwm, usage.ru_maxrss * 1024
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(argv[-3:])} did not finish within {timeout:g} s")
            time.sleep(0.01)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()


def python_baseline(python: str, settle: float) -> dict[str, Any]:
    """PSS of an idle ``python -S`` that only sleeps (same interpreter as the shim)."""
    proc = subprocess.Popen([python, "-S", "-c", "import time; time.sleep(30)"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        return mem_of(psutil.Process(proc.pid)) | {"python": python}
    finally:
        proc.kill()
        proc.wait()


def import_baseline(python: str, repo: str, module: str, settle: float) -> dict[str, Any]:
    """PSS of an idle ``python -S`` that imported ``module`` (what a shim or proxy loads), and how
    many modules it then has."""
    code = (f"import sys; sys.path.insert(0, {repo!r}); import {module}; "
            "print(len(sys.modules), flush=True); import time; time.sleep(30)")
    proc = subprocess.Popen([python, "-S", "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if not first.isdigit():
            return {"module": module, "error": "import failed"}
        time.sleep(settle)
        return mem_of(psutil.Process(proc.pid)) | {"module": module, "modules_loaded": int(first)}
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _module_count(python: str) -> int | None:
    try:
        out = subprocess.run([python, "-S", "-c", "import sys; print(len(sys.modules))"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
        return int(out)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def qemu_guest_mib(argv: list[str]) -> int:
    """The guest's RAM in MiB from a QEMU argv's ``-m 512M`` (0 if it has none)."""
    value = next((b for a, b in zip(argv, argv[1:], strict=False) if a == "-m"), "")
    m = re.match(r"(?:size=)?([0-9]+)([MG]?)", value)
    return 0 if not m else int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def guest_memory(rt: list[str], cid: str, timeout: float) -> dict[str, Any]:
    """The guest's own view of its memory: ``exec cat /proc/meminfo`` in the container (the guest
    kernel's, containers have no meminfo of their own); ``used`` = MemTotal - MemAvailable."""
    try:
        r = subprocess.run(rt + ["exec", cid, "cat", "/proc/meminfo"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"exec cat /proc/meminfo: timeout after {timeout:g} s"}
    info = meminfo(r.stdout)
    if r.returncode != 0 or "MemTotal" not in info:
        return {"error": f"exec cat /proc/meminfo: exit {r.returncode}: {r.stderr.strip()[:300]}"}
    keys = ("MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "Shmem", "AnonPages", "Slab")
    out: dict[str, Any] = {k: info[k] for k in keys if k in info}
    out["used"] = info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))
    return out


def memory_idle(tr: Tracker, bundle: Path, idle: float, timeout: float, template: bool = False) -> dict[str, Any]:
    cid = f"bench{os.getpid()}-mem{'-tpl' if template else ''}"
    tr.kata_ids.append(cid)
    out = tr.work / f"{cid}.out"
    rt = [tr.runtime, "--root", str(tr.kata_root)]
    if template and tr.template_config is not None:
        rt += ["--kata-config", str(tr.template_config)]
    res: dict[str, Any] = {"id": cid, "ok": False, "idle_seconds": idle}
    rc, hwm, maxrss = run_tracking_peak(rt + ["create", "--bundle", str(bundle), cid], out, timeout)
    res["cli_create"] = {"rc": rc, "vmhwm": hwm, "wait4_maxrss": maxrss}
    if rc != 0:
        res["error"] = f"create: exit status {rc}: {tail(out)}"
        return res
    rc, hwm, maxrss = run_tracking_peak(rt + ["start", cid], out, timeout)
    res["cli_start"] = {"rc": rc, "vmhwm": hwm, "wait4_maxrss": maxrss}
    if rc != 0:
        res["error"] = f"start: exit status {rc}: {tail(out)}"
        return res
    time.sleep(idle)
    res["guest"] = guest_memory(rt, cid, timeout)
    time.sleep(1.0)  # the exec's shim is gone
    procs = find_ours(cid)
    res["processes"] = {role: [mem_of(p) for p in ps] for role, ps in procs.items()}
    for q in procs["qemu"]:
        res["guest"]["ram_on_host"] = guest_ram_resident(q.pid, qemu_guest_mib(cmdline(q)))
    if template:
        return _stop_memory_container(tr, rt, cid, procs, res, timeout)
    shim_argv = next((cmdline(p) for p in procs["kata-shim"] if cmdline(p)), [sys.executable])
    python = shim_argv[0]
    res["python_baseline"] = python_baseline(python, min(idle, 2.0))
    res["python_baseline"]["modules_loaded"] = _module_count(python)
    launcher = next((a for a in shim_argv[1:] if a.endswith("kata-shim")), "")
    repo = str(Path(launcher).resolve().parent.parent.parent) if launcher else str(REPO)
    res["import_baselines"] = {
        role: import_baseline(python, repo, module, min(idle, 2.0))
        for role, module in (("kata-shim", "kata_runtime.shim.main"), ("kata-proxy", "kata_runtime.proxy.main"))}
    res["load_during"] = loadavg()
    return _stop_memory_container(tr, rt, cid, procs, res, timeout)


def _stop_memory_container(tr: Tracker, rt: list[str], cid: str, procs: dict[str, list[psutil.Process]],
                           res: dict[str, Any], timeout: float) -> dict[str, Any]:
    rc_kill = subprocess.run(rt + ["kill", cid, "KILL"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, timeout=timeout)
    t_del = time.monotonic()
    rc_del = subprocess.run(rt + ["delete", cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, timeout=timeout)
    if rc_del.returncode != 0:  # the shim may not have seen the exit yet
        time.sleep(1)
        rc_del = subprocess.run(rt + ["delete", "--force", cid], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        res["delete_needed_force"] = True
    res["kill_rc"], res["delete_rc"] = rc_kill.returncode, rc_del.returncode
    res["delete_seconds"] = round(time.monotonic() - t_del, 3)
    deadline = time.monotonic() + 10  # the shim and QEMU may take a moment to go
    while any(find_ours(cid).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [f"{role} pid {p.pid}" for role, ps in find_ours(cid).items() for p in ps]
    left += [f"mount {m}" for m in mounts_naming([cid])]
    res["left_behind"] = left
    res["ok"] = (rc_kill.returncode == 0 and rc_del.returncode == 0 and not left
                 and all(procs[r] for r in ("qemu", "kata-proxy", "kata-shim")))
    if not res["ok"]:
        res["error"] = (f"kill {rc_kill.returncode} {rc_kill.stderr.decode(errors='replace').strip()}; "
                        f"delete {rc_del.returncode} {rc_del.stderr.decode(errors='replace').strip()}; "
                        f"left: {left}; found: { {r: len(ps) for r, ps in procs.items()} }")
    return res


# ----------------------------------------------------------------------------------------------- report

def stat_row(values: list[float | None]) -> tuple[float | None, float | None]:
    return minimum(values), median(values)


def verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "-"
    return "met" if value <= goal else f"short by {value - goal:.2f}"


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    bare = [r for r in res["bare"] if r["ok"]]
    kata = [r for r in res["kata"] if r["ok"]]
    kata_tpl = [r for r in res.get("kata_tpl", []) if r["ok"]]
    kata_cache = [r for r in res.get("kata_cache", []) if r["ok"]]
    runc = [r for r in res["runc"] if r["ok"]]
    s: dict[str, Any] = {
        "n": {"bare": len(bare), "kata": len(kata), "runc": len(runc), "repeat": res["repeat"]},
        "bare_marker": stat_row([r["to_marker"] for r in bare]),
        "bare_exit": stat_row([r["to_exit"] for r in bare]),
        "kata_run": stat_row([r["wall"] for r in kata]),
        "kata_tpl_run": stat_row([r["wall"] for r in kata_tpl]),
        "template_init": res.get("template_init"),
        "kata_cache_run": stat_row([r["wall"] for r in kata_cache]),
        "cache_init": res.get("cache_init"),
        "runc_run": stat_row([r["wall"] for r in runc]),
        "phases": {},
    }
    for key in split_phases(0.0, {}, {}, None):
        s["phases"][key] = stat_row([r["durations"].get(key) for r in kata])
    km, bm, bk, rm = s["kata_run"][1], s["bare_exit"][1], s["bare_marker"][1], s["runc_run"][1]
    s["ratio_bare_exit"] = round(km / bm, 2) if km and bm else None
    s["ratio_bare_marker"] = round(km / bk, 2) if km and bk else None
    s["ratio_runc"] = round(km / rm, 1) if km and rm else None
    tm = s["kata_tpl_run"][1]
    s["ratio_tpl_bare_exit"] = round(tm / bm, 2) if tm and bm else None
    s["ratio_tpl_cold"] = round(tm / km, 2) if tm and km else None
    s["n"]["kata_tpl"] = len(kata_tpl)
    cm = s["kata_cache_run"][1]
    s["ratio_cache_cold"] = round(cm / km, 2) if cm and km else None
    s["ratio_cache_bare_exit"] = round(cm / bm, 2) if cm and bm else None
    s["n"]["kata_cache"] = len(kata_cache)
    return s


EXCESS_KEYS = {  # steps of a kata run that a bare boot-and-exit does not have
    "cli_setup": "CLI start", "qemu_launch": "QEMU launch", "root_to_agent": "agent's Python start",
    "agent_serving": "agent's imports + channel start",
    "agent_noticed": "QEMU start to the guest clock's start, and the first answer",
    "create_sandbox": "CreateSandbox", "create_container": "container create", "start_container": "container start",
    "workload": "workload", "delete": "delete", "exit": "CLI exit"}


def excess_line(s: dict[str, Any]) -> str:
    """Where a kata run's time beyond the bare boot goes (medians of the steps a bare boot lacks)."""
    km, bm = s["kata_run"][1], s["bare_exit"][1]
    if km is None or bm is None:
        return "Not enough successful runs to compare kata with the bare boot."
    goal = bm * GOAL_RATIO
    parts = sorted(((s["phases"].get(k, (None, None))[1], label) for k, label in EXCESS_KEYS.items()),
                   key=lambda t: -(t[0] or 0))
    shown = ", ".join(f"{label} {v:.2f} s" for v, label in parts if v is not None and v >= 0.05)
    return (f"Beyond the bare boot-and-exit ({bm:.2f} s), the median kata run spends {km - bm:.2f} s "
            f"(the goal of {GOAL_RATIO}x allows {goal - bm:.2f} s; {max(km - goal, 0):.2f} s too many). "
            f"Steps that a bare boot does not have (medians): {shown or '-'}.")


def mem_row(mem: dict[str, Any], role: str) -> dict[str, Any] | None:
    ps = (mem.get("processes") or {}).get(role) or []
    return ps[0] if ps else None


def render_markdown(res: dict[str, Any]) -> str:
    s = res["summary"]
    f = res["host"]
    n = s["n"]
    lines = [
        f"Host: {f.get('cpu', '?')}, {f.get('cores')} cores, {f.get('mem_total_gib')} GiB; accel "
        f"{_arg(res, '-accel')} (-cpu {_arg(res, '-cpu')}), QEMU {f.get('qemu_version', '?')}, "
        f"machine {f.get('machine', '?')}, guest {f.get('vcpus')} vCPU / {f.get('guest_mem_mib')} MiB; host kernel "
        f"{f.get('host_kernel')}; runc {f.get('runc_version', '?')}. Load average (1/5/15 min) "
        f"{'/'.join(map(str, res['load_start']))} at start, {'/'.join(map(str, res['load_end']))} at end. "
        f"{res['finished'][:16].replace('T', ' ')} UTC, {n['repeat']} repetition(s), interleaved "
        f"(runs that succeeded: bare {n['bare']}, kata {n['kata']}, runc {n['runc']}).",
        "",
        "| start time (wall) | min | median | goal | Kata 1.12 (peer) |",
        "| --- | ---: | ---: | --- | --- |",
        f"| bare boot: QEMU start → KATA_BARE_BOOT_DONE | {fmt_s(s['bare_marker'][0])} | "
        f"{fmt_s(s['bare_marker'][1])} | | |",
        f"| bare boot: QEMU start → QEMU exit | {fmt_s(s['bare_exit'][0])} | "
        f"{fmt_s(s['bare_exit'][1])} | | |",
        f"| `kata-runtime run` of `true` | {fmt_s(s['kata_run'][0])} | {fmt_s(s['kata_run'][1])} | "
        f"≤ {GOAL_RATIO} × bare{_goal_s(s['bare_exit'][1])} | {PEER['kata_run']} |",
        f"| `kata-runtime run` of `true`, VM cloned from a template (`[factory] enable_template`; "
        f"`factory init` took {fmt_s(s.get('template_init'))}) | {fmt_s(s.get('kata_tpl_run', (None, None))[0])} | "
        f"{fmt_s(s.get('kata_tpl_run', (None, None))[1])} | ≤ {GOAL_TPL_RATIO} × cold | |",
        f"| `kata-runtime run` of `true`, VM from the VM cache (`[factory] vm_cache_number = 1`; `factory init` "
        f"took {fmt_s(s.get('cache_init'))}) | {fmt_s(s.get('kata_cache_run', (None, None))[0])} | "
        f"{fmt_s(s.get('kata_cache_run', (None, None))[1])} | ≤ {GOAL_CACHE_RATIO} × cold | |",
        f"| `runc run` of `true` | {fmt_s(s['runc_run'][0])} | {fmt_s(s['runc_run'][1])} | | "
        f"{PEER['runc_run']} |",
        f"| kata / bare boot-and-exit (medians) | | {_x(s['ratio_bare_exit'])} | ≤ {GOAL_RATIO}x: "
        f"{verdict(s['ratio_bare_exit'], GOAL_RATIO)} | {PEER['ratio_bare']} |",
        f"| kata from a template / cold kata (medians) | | {_x(s.get('ratio_tpl_cold'))} | "
        f"≤ {GOAL_TPL_RATIO}x: {verdict(s.get('ratio_tpl_cold'), GOAL_TPL_RATIO)} | |",
        f"| kata from a template / bare boot-and-exit (medians) | | {_x(s.get('ratio_tpl_bare_exit'))} | | |",
        f"| kata from the VM cache / cold kata (medians) | | {_x(s.get('ratio_cache_cold'))} | "
        f"≤ {GOAL_CACHE_RATIO}x: {verdict(s.get('ratio_cache_cold'), GOAL_CACHE_RATIO)} | |",
        f"| kata from the VM cache / bare boot-and-exit (medians) | | {_x(s.get('ratio_cache_bare_exit'))} | | |",
        f"| kata / bare to marker (medians) | | {_x(s['ratio_bare_marker'])} | | |",
        f"| kata / runc (medians) | | {_x(s['ratio_runc'])} | | |",
        "",
        "| phase of `kata-runtime run` (from its debug log) | min | median | Kata 1.12 (peer) |",
        "| --- | ---: | ---: | --- |",
    ]
    labels = [
        ("cli_setup", "CLI: Python start, config, store, until it launches QEMU"),
        ("qemu_launch", "QEMU launch (until `-daemonize` returns)"),
        ("guest_to_root", "guest: kernel + /init (modules, root mount) until the agent's exec "
         "(guest uptime; the bare boot's marker point)"),
        ("agent_start", "guest: agent exec → serving its channel"),
        ("root_to_agent", "&nbsp;&nbsp;of which Python start (exec → agent `main()`)"),
        ("agent_serving", "&nbsp;&nbsp;of which the agent's imports and channel start (no gRPC)"),
        ("agent_noticed", "host's view minus the guest's uptime at serving: firmware and early kernel before "
                          "the guest clock starts, plus the first answer (the agent's debug log shows the "
                          "first Check answered ~0.1 s after it serves)"),
        ("agent_ready_total", "= QEMU launched → agent ready (host's view)"),
        ("create_sandbox", "CreateSandbox (9p mount in the guest)"),
        ("create_container", "container created (bind rootfs, CreateContainer: runc in the guest, shim)"),
        ("start_container", "container started"),
        ("workload", "workload `true` ran and exited (as the runtime sees it)"),
        ("delete", "delete (container, sandbox, QEMU, proxy)"),
        ("exit", "CLI exit (wall − last phase)"),
    ]
    for key, label in labels:
        lo, med = s["phases"].get(key, (None, None))
        lines.append(f"| {label} | {fmt_s(lo)} | {fmt_s(med)} | {PEER.get(key, '')} |")
    lines += ["", excess_line(s)]
    mem = res.get("memory") or {}
    idle = mem.get("idle_seconds", "?")
    lines += ["", f"| memory, idle `sleep` container (MB = 10^6 B; after {idle} s idle) | "
              "PSS | USS | RSS | goal (PSS) | Kata 1.12 (peer) |", "| --- | ---: | ---: | ---: | --- | --- |"]
    roles: list[tuple[str, float | None, str]] = [
        ("qemu", None, PEER["qemu_mem"]), ("kata-proxy", GOAL_PROXY_PSS_MB, PEER["proxy_mem"]),
        ("kata-shim", GOAL_SHIM_PSS_MB, PEER["shim_mem"])]
    for role, goal, peer in roles:
        row = mem_row(mem, role)
        pss = row["pss"] if row else None
        g = "" if goal is None else f"≤ {goal} MB: {verdict(None if pss is None else pss / MB, goal)}"
        lines.append(f"| {role} | {_mb(row, 'pss')} | {_mb(row, 'uss')} | {_mb(row, 'rss')} | {g} | {peer} |")
    clone = mem_row(res.get("memory_template") or {}, "qemu")
    if clone:
        lines.append(f"| qemu, VM cloned from the template | {_mb(clone, 'pss')} | {_mb(clone, 'uss')} | "
                     f"{_mb(clone, 'rss')} | | |")
    for what, m in (("", mem), (", VM cloned from the template", res.get("memory_template") or {})):
        gm = m.get("guest") or {}
        if gm.get("used") is not None:
            lines.append(f"| guest{what}: MemTotal − MemAvailable, its own view (`exec cat /proc/meminfo`; "
                         f"MemTotal {fmt_mb(gm.get('MemTotal'))}) | | | {fmt_mb(gm['used'])} | | |")
        ram = gm.get("ram_on_host") or {}
        if ram:
            lines.append(f"| guest{what}: its RAM as held by the host (QEMU's {ram['size'] >> 20} MiB RAM mapping) | "
                         f"{fmt_mb(ram.get('pss'))} | | {fmt_mb(ram.get('rss'))} | | |")
    base = mem.get("python_baseline")
    if base:
        lines.append(f"| baseline: idle `python -S` (sleep only; {base.get('modules_loaded', '?')} modules) | "
                     f"{_mb(base, 'pss')} | {_mb(base, 'uss')} | {_mb(base, 'rss')} | | |")
    for imp in (mem.get("import_baselines") or {}).values():
        if "pss" in imp:
            lines.append(f"| baseline: idle `python -S` after `import {imp['module']}` "
                         f"({imp['modules_loaded']} modules) | {_mb(imp, 'pss')} | {_mb(imp, 'uss')} | "
                         f"{_mb(imp, 'rss')} | | |")
    cli = mem.get("cli_create")
    if cli:
        lines.append(f"| kata-runtime CLI during `create`: peak RSS (its VmHWM; wait4's maxrss "
                     f"{fmt_mb(cli['wait4_maxrss'])}) | | | {fmt_mb(cli['vmhwm'])} | | {PEER['cli_mem']} |")
    notes = []
    for role, row in ((r, mem_row(mem, r)) for r in ("kata-shim", "kata-proxy")):
        if row and row.get("pss_anon") is not None:
            notes.append(f"{role} PSS = {fmt_mb(row['pss_anon'])} anonymous (heap, Python objects, "
                         f"libpython's written pages) + {fmt_mb(row['pss_file'])} file-backed (python, "
                         "libraries: shared with every Python process of the same interpreter)")
    if base and base.get("pss_anon") is not None:
        notes.append(f"bare python -S = {fmt_mb(base['pss_anon'])} anonymous + "
                     f"{fmt_mb(base['pss_file'])} file-backed")
    qemu = mem_row(mem, "qemu")
    if qemu and qemu.get("top"):
        notes.append("QEMU PSS by mapping: " + ", ".join(f"{_short(name)} {fmt_mb(v)}" for name, v in qemu["top"][:4])
                     + " (the largest anonymous mapping is the guest's RAM; the one of tcg tb-size MiB is the "
                     "TCG translation cache)")
    if notes:
        lines += [""] + [f"- {n}." for n in notes]
    if mem.get("error"):
        lines += ["", f"Memory measurement problem: {mem['error']}"]
    left = res.get("left_behind") or []
    lines += ["", "Clean-up: " + ("nothing of ours was left behind." if not left else
                                   f"had to remove by force: {', '.join(left)}.")]
    errs = [f"{k} #{i + 1}: {r['error']}" for k in ("bare", "kata", "kata_tpl", "kata_cache", "runc")
            for i, r in enumerate(res.get(k, []))
            if r.get("error")]
    if errs:
        lines += ["", "Failed runs: " + "; ".join(errs)]
    return "\n".join(lines) + "\n"


def _arg(res: dict[str, Any], flag: str) -> str:
    """The value of ``flag`` in the bare boot's QEMU argv (the runtime's own)."""
    argv = res.get("bare_argv") or []
    return next((b for a, b in zip(argv, argv[1:], strict=False) if a == flag), "?")


def _goal_s(bare: float | None) -> str:
    return "" if bare is None else f" = {bare * GOAL_RATIO:.2f} s"


def _mb(row: dict[str, Any] | None, key: str) -> str:
    return fmt_mb(row.get(key) if row else None)


def _short(name: str) -> str:
    return name if name.startswith("[") else os.path.basename(name)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


# ------------------------------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--short", action="store_true", help="one repetition (CI; under 2 minutes)")
    ap.add_argument("--repeat", type=int, default=None, help="repetitions of each start-time run (default 5)")
    ap.add_argument("--json", type=Path, help="write all raw numbers here")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--runtime", default="", help="kata-runtime to measure (default "
                    "/opt/kata-dev/bin/kata-runtime, else from PATH)")
    ap.add_argument("--runc", default=default_runc(), help="runc binary")
    ap.add_argument("--idle", type=float, default=None, help="seconds to let the idle container settle "
                    "before measuring memory (default 5; 3 with --short)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one run may take")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--no-template", action="store_true", help="skip the runs cloned from a VM template")
    ap.add_argument("--no-cache", action="store_true", help="skip the runs with a VM from the VM cache")
    ap.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: print the tables of an "
                    "earlier run's --json file (with --markdown FILE: write them there too)")
    args = ap.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.short else 5
    if args.idle is None:
        args.idle = 3.0 if args.short else 5.0
    args.runtime = args.runtime or default_runtime()
    return args


def make_template(tr: Tracker, res: dict[str, Any], timeout: float, progress: Callable[[str], None]) -> None:
    """``factory init`` with a configuration that enables templates (template in /dev/shm)."""
    tr.template_dir = Path("/dev/shm") / f"kata-bench-{os.getpid()}"
    text = factory_config(enable_template=True, template_path=f"{tr.template_dir}/template")
    if not text:
        progress("cannot make a template configuration: skipping the template runs")
        return
    tr.template_config = tr.work / "configuration-template.toml"
    tr.template_config.write_text(text)
    rc, wall, error = timed_run(tr, [tr.runtime, "--kata-config", str(tr.template_config), "factory", "init"],
                                tr.work / "factory-init.out", timeout)
    if rc != 0:
        progress(f"factory init failed ({error or tail(tr.work / 'factory-init.out')}): skipping template runs")
        res["template_error"] = error or tail(tr.work / "factory-init.out")
        return
    res["template_init"] = round(wall, 3)
    progress(f"factory init: {wall:.2f} s")


def make_cache(tr: Tracker, res: dict[str, Any], timeout: float, progress: Callable[[str], None]) -> None:
    """``factory init`` with a configuration that keeps one VM in the VM cache (socket in the work dir)."""
    tr.cache_endpoint = tr.work / "cache.sock"
    text = factory_config(vm_cache_number=1, vm_cache_endpoint=str(tr.cache_endpoint))
    if not text:
        progress("cannot make a VM cache configuration: skipping the VM cache runs")
        return
    tr.cache_config = tr.work / "configuration-cache.toml"
    tr.cache_config.write_text(text)
    rc, wall, error = timed_run(tr, [tr.runtime, "--kata-config", str(tr.cache_config), "factory", "init"],
                                tr.work / "factory-init-cache.out", timeout)
    if rc != 0:
        progress(f"factory init (VM cache) failed ({error or tail(tr.work / 'factory-init-cache.out')}): "
                 "skipping the VM cache runs")
        res["cache_error"] = error or tail(tr.work / "factory-init-cache.out")
        tr.cache_config = None
        return
    res["cache_init"] = round(wall, 3)
    progress(f"factory init (VM cache, 1 VM): {wall:.2f} s")


def cache_ready(tr: Tracker, timeout: float) -> float | None:
    """Wait until the VM cache has its VM ready; the seconds it took (None: not within ``timeout``)."""
    from kata_runtime.factory.cache import query

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if query(str(tr.cache_endpoint)).get("ready", 0) >= 1:
                return time.monotonic() - t0
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return None


def measure(args: argparse.Namespace, tr: Tracker, res: dict[str, Any],
            progress: Callable[[str], None] = say) -> None:
    bundle_true = tr.work / "bundle-true"
    bundle_sleep = tr.work / "bundle-sleep"
    make_bundle(bundle_true, ["true"], None, tr.runc)
    make_bundle(bundle_sleep, ["sleep", "1000"], bundle_true / "rootfs", tr.runc)
    res["bare_argv"], _, res["accel"], res["accel_why"] = bare_argv("probe", tr.work / "probe",
                                                                   tr.work / "probe-shared")
    kinds: tuple[str, ...] = ("bare", "kata", "runc")
    if not args.no_template:
        make_template(tr, res, args.timeout, progress)
        if tr.template_config is not None:
            kinds = ("bare", "kata", "kata_tpl", "runc")
    if not args.no_cache:
        make_cache(tr, res, args.timeout, progress)
        if tr.cache_config is not None:
            kinds = (*kinds[:-1], "kata_cache", kinds[-1])
    for i in range(args.repeat):
        for kind in kinds:
            if kind == "kata_cache" and cache_ready(tr, args.timeout) is None:
                progress(f"{i + 1}/{args.repeat} kata_cache: the VM cache has no VM ready")
            load = loadavg()
            if kind == "bare":
                r = bare_boot(tr, i, args.timeout)
            elif kind == "kata":
                r = kata_run(tr, bundle_true, i, args.timeout)
            elif kind == "kata_tpl":
                r = kata_run(tr, bundle_true, i, args.timeout, mode="template")
                if r["ok"] and "template_made" in r["phases"]:  # not a clone's start: leave it out
                    r["ok"], r["error"] = False, ("made the template again (its inputs changed, e.g. the guest "
                                                  "image was rebuilt meanwhile): not a start from a template")
            elif kind == "kata_cache":
                r = kata_run(tr, bundle_true, i, args.timeout, mode="cache")
                r["from_cache"] = "vm_from_cache" in r["phases"]
                if not r["from_cache"] and r["ok"]:
                    r["ok"], r["error"] = False, "booted cold: the VM cache gave no VM"
                if i + 1 < args.repeat:  # its replacement boots now, not during the next measurements
                    r["refill"] = cache_ready(tr, args.timeout)
            else:
                r = runc_run(tr, bundle_true, i, args.timeout)
            r["load"] = load
            res[kind].append(r)
            shown = (f"marker {fmt_s(r['to_marker'])}, exit {fmt_s(r['to_exit'])}" if kind == "bare"
                     else fmt_s(r.get("wall")))
            failed = "" if r["ok"] else f" FAILED: {r.get('error')}"
            progress(f"{i + 1}/{args.repeat} {kind}: {shown}{failed}")
            if kind == "kata" and i == 0 and not r["phases"]:
                progress("no 'phase' lines in the runtime's debug log: phases will show as '-'")
    if not args.no_memory:
        progress(f"memory: create + start of sleep 1000, {args.idle:g} s idle")
        res["memory"] = memory_idle(tr, bundle_sleep, args.idle, args.timeout)
        if not res["memory"]["ok"]:
            progress(f"memory measurement problem: {res['memory'].get('error')}")
        if tr.template_config is not None:
            progress("memory: the same, in a VM cloned from the template")
            res["memory_template"] = memory_idle(tr, bundle_sleep, args.idle, args.timeout, template=True)
    if tr.cache_config is not None:  # its daemon's replacement VM is of no more use
        tr._quiet([tr.runtime, "--kata-config", str(tr.cache_config), "factory", "destroy"], 60)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render_saved(args.render, args.markdown, summarize, render_markdown)
    refused = needs_root("run.py", "QEMU's shared mounts, runc")
    if refused is not None:
        return refused
    compile_checkout()
    # Ctrl-C raises KeyboardInterrupt even where the shell started us with SIGINT ignored (a
    # background job); SIGTERM and SIGHUP unwind the same way: the clean-up runs in every case.
    unwind_on_signals()
    work = Path(tempfile.mkdtemp(prefix="kata-bench."))
    tr = Tracker(work=work, runtime=args.runtime, runc=args.runc, kata_root=work / "kata-root",
                 runc_root=work / "runc-root")
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeat": args.repeat,
        "short": args.short, "load_start": loadavg(), "host": host_facts(args.runtime),
        "bare": [], "kata": [], "kata_tpl": [], "kata_cache": [], "runc": [],
        "memory_unit": "bytes (tables: MB = 10^6 bytes)"}
    say(f"work dir {work}; load {res['load_start']}; {args.repeat} repetition(s)")
    status = guarded(lambda: measure(args, tr, res), res, say, lambda: tr.cleanup_into(res, say))
    res["load_end"] = loadavg()
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["summary"] = summarize(res)
    write_results(res, render_markdown(res), args.markdown, args.json)
    if status == 0:
        s = res["summary"]["n"]
        mem_ok = args.no_memory or (res.get("memory") or {}).get("ok", False)
        if not (s["bare"] and s["kata"] and s["runc"] and mem_ok) or res["left_behind"]:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
