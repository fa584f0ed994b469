"""What every benchmark in benchmarks/ shares: signals and progress, statistics and formats, our
processes and mounts, memory figures, host facts, the busybox bundle, configurations with
``[factory]`` keys, and the trace wrapper around kata-runtime.

The benchmarks are scripts (``python benchmarks/<name>.py``); each puts the repository on
``sys.path`` and imports this module as ``benchmarks.common``. Nothing here measures anything on
its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # kata_runtime (and tests.cri) from this tree when the venv does not have it

MB = 1_000_000  # memory is reported in MB = 10^6 bytes
GIB = 2**30
INSTALLED_CONFIG = Path("/usr/share/defaults/kata-containers/configuration.toml")
SHARED_ROOT = Path("/run/kata-containers/shared/sandboxes")  # the runtime's 9p exports, one per sandbox
DEV_RUNTIME = Path("/opt/kata-dev/bin/kata-runtime")
KATA_ROLES = ("qemu", "kata-proxy", "kata-shim")


def default_runtime() -> str:
    """The kata-runtime to measure: the dev venv's, else the one on PATH."""
    return str(DEV_RUNTIME) if DEV_RUNTIME.exists() else (shutil.which("kata-runtime") or "kata-runtime")


def default_runc() -> str:
    return shutil.which("runc") or "/usr/sbin/runc"


# ------------------------------------------------------------------------------------ signals, progress

class Interrupted(Exception):
    """SIGTERM or SIGHUP: unwind through the clean-up like Ctrl-C."""


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def unwind_on_signals() -> None:
    """Ctrl-C raises KeyboardInterrupt (also where the shell started us with SIGINT ignored, as a
    background job); SIGTERM and SIGHUP raise Interrupted: every clean-up ``finally`` runs."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A clean-up that a second Ctrl-C or a SIGTERM must not cut short."""
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def compile_checkout() -> None:
    """Byte-compile this checkout's package, as ``tests/setup.sh`` and an install do. A module
    changed since then, where PYTHONDONTWRITEBYTECODE is set, is otherwise compiled again by every
    process that imports it (each CLI call, each kata-proxy and kata-shim start: time, and memory
    the compiler leaves behind), and the figures would count that."""
    import compileall

    compileall.compile_dir(str(REPO / "kata_runtime"), quiet=1, workers=0)


def needs_root(script: str, why: str, binaries: Iterable[str] = ()) -> int | None:
    """Exit status 2 with one line on stderr when not root or a needed program is missing; else None."""
    if os.geteuid() != 0:
        print(f"benchmarks/{script}: needs root ({why})", file=sys.stderr)
        return 2
    missing = [b for b in binaries if not shutil.which(b) and not os.path.exists(b)]
    if missing:
        print(f"benchmarks/{script}: missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    return None


def guarded(measure: Callable[[], object], res: dict[str, Any], say: Callable[[str], None],
            cleanup: Callable[[], None]) -> int:
    """Run ``measure``, then ``cleanup`` whatever happened; 0, 130 when interrupted (Ctrl-C, SIGTERM,
    SIGHUP) or 1 when it failed, with ``res["error"]`` saying why. Never raises what ``measure`` did:
    the partial results are still written and the figures never decide the status."""
    try:
        measure()
        return 0
    except (KeyboardInterrupt, Interrupted) as e:
        res["interrupted"] = True
        res["error"] = f"interrupted ({str(e) or 'Ctrl-C'})"
        say(f"{res['error']}: cleaning up")
        return 130
    except Exception as e:  # noqa: BLE001 - report, clean up, exit non-zero
        res["error"] = f"{type(e).__name__}: {one_line(e)}"
        say(f"error: {res['error']}")
        return 1
    finally:
        cleanup()


def report_cleanup(res: dict[str, Any], done: dict[str, Any], say: Callable[[str], None]) -> None:
    """Keep a harness's clean-up result (``forced``, ``still_left``) in ``res`` and say what it had to do."""
    say("clean-up done")
    res["cleanup"] = done
    for what in ("forced", "still_left"):
        if done.get(what):
            say(f"clean-up {what.replace('_', ' ')}: {done[what]}")


def write_results(res: dict[str, Any], markdown: str, md_path: Path | None, json_path: Path | None) -> None:
    """The tables to stdout (and ``md_path``), every raw number to ``json_path``."""
    print(markdown)
    if md_path:
        md_path.write_text(markdown)
    if json_path:
        json_path.write_text(json.dumps(res, indent=1, default=str))


def render_saved(path: Path, md_path: Path | None, summarize: Callable[[dict[str, Any]], Any],
                 render_markdown: Callable[[dict[str, Any]], str]) -> int:
    """``--render``: the tables of an earlier run's JSON, measuring nothing."""
    old: dict[str, Any] = json.loads(path.read_text())
    old["summary"] = summarize(old)
    write_results(old, render_markdown(old), md_path, None)
    return 0


def progress(prefix: str) -> Callable[[str], None]:
    """A ``say(msg)`` that prints ``[prefix HH:MM:SS] msg`` to stderr."""
    def say(msg: str) -> None:
        print(f"[{prefix} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    return say


# ---------------------------------------------------------------------------------- numbers and words

def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def median(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def minimum(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return min(v) if v else None


def stats(values: Iterable[float | None]) -> dict[str, Any]:
    """{n, min, median, max} of the known values."""
    v = [x for x in values if x is not None]
    return {"n": len(v), "min": min(v) if v else None, "median": statistics.median(v) if v else None,
            "max": max(v) if v else None}


def diff(a: float | None, b: float | None) -> float | None:
    """a - b, or None when either is unknown."""
    return None if a is None or b is None else round(a - b, 3)


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v / MB:.1f} MB"


def read(path: Path, limit: int = 20000) -> str:
    """The last ``limit`` characters of a file ("" if it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a file, joined with `` | ``."""
    text = read(path).strip().splitlines()
    return " | ".join(t.strip() for t in text[-lines:] if t.strip())


def first_error(text: str, limit: int = 600) -> str:
    """The line that says what went wrong (an ``error``/``failed``/``fatal`` line), else the tail."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"error|failed|fatal", ln, re.I):
            return ln[:limit]
    return " | ".join(lines[-3:])[:limit]


def one_line(e: BaseException | str, limit: int = 500) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


# ---------------------------------------------------------------------------------- processes, mounts

def cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.Error, OSError):
        return []


def has_pair(argv: list[str], flag: str, value: str) -> bool:
    """``flag value`` or ``flag=value`` in ``argv``."""
    return any(a == flag and b == value for a, b in zip(argv, argv[1:], strict=False)) or f"{flag}={value}" in argv


def environ_has(p: psutil.Process, key: str, value: str) -> bool:
    try:
        return p.environ().get(key) == value
    except (psutil.Error, OSError):
        return False


def kata_processes(ids: Iterable[str]) -> dict[str, dict[str, list[psutil.Process]]]:
    """For each id: its QEMU (``-name sandbox-<id>``), kata-proxy (``--sandbox <id>``) and
    kata-shims (``--container <id>``), found in one pass over the process table."""
    ids = list(dict.fromkeys(ids))
    found: dict[str, dict[str, list[psutil.Process]]] = {cid: {role: [] for role in KATA_ROLES} for cid in ids}
    if not ids:
        return found
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        argv = cmdline(p)
        if not argv:
            continue
        head = argv[:3]
        if "qemu" in argv[0]:
            name = next((b for a, b in zip(argv, argv[1:], strict=False) if a == "-name"), "")
            cid = name.split(",", 1)[0].removeprefix("sandbox-")
            if cid in found:
                found[cid]["qemu"].append(p)
        elif any("kata-proxy" in a for a in head):
            for cid in ids:
                if has_pair(argv, "--sandbox", cid):
                    found[cid]["kata-proxy"].append(p)
        elif any("kata-shim" in a for a in head):
            for cid in ids:
                if has_pair(argv, "--container", cid):
                    found[cid]["kata-shim"].append(p)
    return found


def find_ours(cid: str) -> dict[str, list[psutil.Process]]:
    """QEMU, kata-proxy and kata-shims of one sandbox or container (see ``kata_processes``)."""
    return kata_processes([cid])[cid]


def kill_procs(procs: Iterable[psutil.Process]) -> None:
    procs = list(procs)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def quiet(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> int | None:
    """Run a clean-up command with no output; its exit status (None: it could not run or timed out)."""
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, cwd="/", env=env).returncode
    except (OSError, subprocess.TimeoutExpired):
        return None


def mounts_where(match: Callable[[str], bool]) -> list[str]:
    """Mount points (from /proc/self/mountinfo) for which ``match(point)`` holds, deepest first."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].replace("\\040", " ")
                if match(point):
                    out.append(point)
    except OSError:
        pass
    return sorted(set(out), key=lambda m: (-m.count("/"), m))


def mounts_naming(needles: Iterable[str], min_len: int = 1) -> list[str]:
    """Mount points whose path contains any of ``needles`` (of at least ``min_len`` characters)."""
    needles = [n for n in needles if n and len(n) >= min_len]
    return mounts_where(lambda m: any(n in m for n in needles)) if needles else []


def mounts_under(root: str) -> list[str]:
    """Mount points at or under ``root``, deepest first."""
    top = root.rstrip("/")
    return mounts_where(lambda m: m == top or m.startswith(top + "/"))


def remove_cgroup_dirs(top: Path) -> bool:
    """rmdir ``top`` and its sub-directories, deepest first; False if ``top`` is still there."""
    if not top.is_dir():
        return True
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
        try:
            d.rmdir()
        except OSError:
            pass
    return not top.exists()


def remove_cgroup_parent(name: str) -> list[str]:
    """``remove_cgroup_dirs`` of /sys/fs/cgroup/<controller>/<name> (and of a cgroup2 <name>);
    returns those that would not go."""
    cg = Path("/sys/fs/cgroup")
    tops = [c / name for c in cg.iterdir() if c.is_dir()] + [cg / name] if cg.is_dir() else []
    return [str(t) for t in tops if not remove_cgroup_dirs(t)]


# ------------------------------------------------------------------------------------------- memory

def smaps_rollup(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/smaps_rollup in bytes (Rss, Pss, Pss_Anon, Pss_File, ...); {} if gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def _mappings(pid: int) -> Iterator[tuple[str, int, dict[str, int]]]:
    """(name, size in bytes, {Rss, Pss, ...} in bytes) of each mapping in /proc/PID/smaps."""
    name, size = "", 0
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(maxsplit=5)
                if first and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", first[0]):
                    if fields:
                        yield name, size, fields
                    lo, hi = (int(x, 16) for x in first[0].split("-"))
                    name, size, fields = (first[5].strip() if len(first) > 5 else ""), hi - lo, {}
                elif len(first) == 3 and first[2] == "kB":
                    fields[first[0].rstrip(":")] = int(first[1]) * 1024
    except OSError:
        return
    if fields:
        yield name, size, fields


def top_mappings(pid: int, n: int = 6) -> list[tuple[str, int]]:
    """The ``n`` mappings with the most PSS, in bytes: by file, [heap], [stack], and anonymous ones
    by size (``[anon 512 MiB]`` is a QEMU guest's RAM, ``[anon 32 MiB]`` its TCG code cache)."""
    per: dict[str, int] = {}
    for name, size, fields in _mappings(pid):
        if not name:
            mib = size >> 20
            name = f"[anon {mib} MiB]" if mib >= 16 else "[anon, small]"
        per[name] = per.get(name, 0) + fields.get("Pss", 0)
    return sorted(per.items(), key=lambda kv: -kv[1])[:n]


def guest_ram_resident(pid: int, guest_mib: int) -> dict[str, Any] | None:
    """Rss/Pss of a QEMU's guest-RAM mapping (the one mapping of exactly ``guest_mib`` MiB: anonymous
    for a cold VM, the template's RAM file mapped private for a clone): the guest pages this host
    holds for it. None if there is no such mapping."""
    for name, size, fields in _mappings(pid):
        if size == guest_mib << 20:
            return {"mapping": name or "[anon]", "size": size, "rss": fields.get("Rss", 0),
                    "pss": fields.get("Pss", 0), "anonymous": fields.get("Anonymous", 0)}
    return None


def mem_of(p: psutil.Process) -> dict[str, Any]:
    """PSS, USS, RSS, the anonymous/file split of the PSS and the largest mappings of a process."""
    roll = smaps_rollup(p.pid)
    try:
        full = p.memory_full_info()
        pss, rss, uss = int(full.pss), int(full.rss), int(full.uss)
    except (psutil.Error, AttributeError):
        pss, rss, uss = roll.get("Pss", 0), roll.get("Rss", 0), 0
    return {"pid": p.pid, "pss": pss, "rss": rss, "uss": uss,
            "pss_anon": roll.get("Pss_Anon"), "pss_file": roll.get("Pss_File"),
            "top": top_mappings(p.pid), "cmdline": " ".join(cmdline(p))[:300]}


def meminfo(text: str | None = None) -> dict[str, int]:
    """/proc/meminfo (or ``text`` in its format) in bytes: MemTotal, MemAvailable, Shmem, ..."""
    if text is None:
        try:
            text = Path("/proc/meminfo").read_text()
        except OSError:
            return {}
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1]) * (1024 if len(parts) > 2 and parts[2] == "kB" else 1)
    return out


# ---------------------------------------------------------------------------------------- the host

def host_facts(runtime: str) -> dict[str, Any]:
    """CPU, cores, memory, host kernel; the installed configuration's QEMU, machine and guest size;
    QEMU's and runc's versions."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "host_kernel": platform.release(),
                             "mem_total_gib": round(psutil.virtual_memory().total / GIB, 1),
                             "runtime": runtime}
    try:
        from kata_runtime.config import load_config

        cfg = load_config()
        hv = cfg.hypervisor
        facts.update(config=cfg.source, qemu=hv.path, guest_kernel=hv.kernel, machine=hv.machine_type,
                     vcpus=hv.default_vcpus, guest_mem_mib=hv.default_memory,
                     cpu_model=hv.cpu_model or "default")
        ver = subprocess.run([hv.path, "--version"], capture_output=True, text=True).stdout.splitlines()
        facts["qemu_version"] = ver[0].replace("QEMU emulator version ", "") if ver else "?"
    except Exception as e:  # noqa: BLE001 - facts are best effort
        facts["facts_error"] = str(e)
    try:
        facts["runc_version"] = subprocess.run([default_runc(), "--version"], capture_output=True,
                                               text=True).stdout.split()[2]
    except (OSError, IndexError):
        pass
    facts.update(code_measured())
    return facts


def code_measured() -> dict[str, Any]:
    """Which kata_runtime this Python imports (the runtime, its shims and proxies run the same one):
    its directory, and the commit it is (``git rev-parse HEAD`` with the count of changed files
    under kata_runtime/, or a ``COMMIT`` file beside it in an exported tree)."""
    try:
        import kata_runtime
    except ImportError:
        return {}
    root = Path(kata_runtime.__file__).resolve().parent.parent
    out: dict[str, Any] = {"kata_runtime_from": str(root)}
    if (root / "COMMIT").is_file():
        out["commit"] = (root / "COMMIT").read_text().strip()
        out["uncommitted_files"] = 0
        return out
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30)
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "kata_runtime"],
                                 capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return out
    if head.returncode == 0:
        out["commit"] = head.stdout.strip()
        out["uncommitted_files"] = len(changed.stdout.splitlines())
    return out


# -------------------------------------------------------------------------------- bundle, configuration

def make_bundle(path: Path, args: list[str], rootfs: Path | None, runc: str) -> None:
    """A busybox bundle: rootfs/bin/busybox + applet links (or a copy of ``rootfs``), runc's spec
    with ``terminal: false`` and ``args``."""
    path.mkdir(parents=True)
    root = path / "rootfs"
    if rootfs is not None:
        shutil.copytree(rootfs, root, symlinks=True)  # runc refuses a symlinked rootfs
    else:
        busybox = shutil.which("busybox") or "/bin/busybox"
        (root / "bin").mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
        for applet in applets or ["sh", "true", "sleep", "cat", "dd", "nc"]:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        # mount points must exist: the spec's root is read-only (runc spec's default)
        for d in ("proc", "sys", "dev", "tmp", "etc", "run", "root"):
            (root / d).mkdir()
    subprocess.run([runc, "spec", "--bundle", str(path)], check=True)
    spec_path = path / "config.json"
    spec = json.loads(spec_path.read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec_path.write_text(json.dumps(spec, indent=1))


def with_factory_keys(text: str, **keys: object) -> str:
    """Configuration ``text`` with these ``[factory]`` keys set (values as TOML: bool, int, str),
    replacing the section's own lines of those keys; the section is added if missing."""
    new = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    names = "|".join(re.escape(k) for k in keys)
    out: list[str] = []
    section, done = "", False
    for line in text.splitlines():
        m = re.match(r"\s*\[([^\]]+)\]", line)
        if m:
            section = m.group(1).strip()
            out.append(line)
            if section == "factory" and not done:
                out += new
                done = True
            continue
        if section == "factory" and names and re.match(rf"\s*({names})\s*=", line):
            continue
        out.append(line)
    if not done:
        out += ["", "[factory]", *new]
    return "\n".join(out) + "\n"


def factory_config(**keys: object) -> str:
    """The installed configuration with these ``[factory]`` keys set ("" if there is none)."""
    text = INSTALLED_CONFIG.read_text() if INSTALLED_CONFIG.exists() else ""
    return with_factory_keys(text, **keys) if text else ""


# ------------------------------------------------------------------------------------ trace wrapper

# bash's $EPOCHREALTIME: no fork; one line appended per call when it ends (start, end, status, args)
TRACE_WRAPPER = """#!/bin/bash
t0=$EPOCHREALTIME
"{runtime}" "$@"
rc=$?
printf '%s %s %s %s\\n' "$t0" "$EPOCHREALTIME" "$rc" "$*" >>"{log}"
exit $rc
"""
GLOBAL_VALUE_FLAGS = {"--root", "--log", "--log-format", "--kata-config", "--criu", "--rootless"}


def write_trace_wrapper(path: Path, runtime: str, log: Path) -> str:
    """A kata-runtime at ``path`` that runs ``runtime`` and logs each call to ``log``; its path."""
    path.write_text(TRACE_WRAPPER.format(runtime=runtime, log=log))
    path.chmod(0o755)
    return str(path)


def subcommand(args: list[str]) -> str:
    """The kata-runtime command in a call's arguments (global flags and their values skipped)."""
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in GLOBAL_VALUE_FLAGS:
            skip = True
        elif not a.startswith("-"):
            return a
    return "?"


def parse_calls(path: Path) -> list[dict[str, Any]]:
    """The trace wrapper's lines: {t0, t1 (epoch), wall, rc, sub (the subcommand), args}."""
    out = []
    for line in read(path, 10**7).splitlines():
        parts = line.split(" ", 3)
        try:
            t0, t1, rc = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            continue
        args = parts[3] if len(parts) > 3 else ""
        out.append({"t0": t0, "t1": t1, "wall": round(t1 - t0, 3), "rc": rc, "sub": subcommand(args.split()),
                    "args": args[:400]})
    return out


def union_within(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to [lo, hi]."""
    total, end = 0.0, lo
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total
