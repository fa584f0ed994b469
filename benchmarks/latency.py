"""Latency and stdio throughput of running containers, kata beside runc (a part of ``suite.py``).

For each repetition, one ``sleep`` container per mode (kata cold, kata from the VM template, runc)
is created and started, one after the other (``create`` + ``start``, each timed); then, round robin
over the modes so that load drifts hit them alike:

- ``exec`` of ``true``, E times (wall time of the CLI: the goal is kata <= runc + 0.3 s);
- stdio through the shim, M MiB each way: ``exec sh -c 'echo READY; cat >/dev/null; echo END'``
  with M MiB written to its stdin (in), ``exec sh -c 'echo READY; dd if=/dev/zero ...'`` read from
  its stdout (out), ``exec sh -c 'echo READY; cat'`` with both at once (echo). The clock runs from
  READY (the process runs; its set-up is the exec latency's business) to END (in) or the last byte
  (out, echo); MB/s = 10^6 bytes a second (goal: >= 50 MB/s each way);

then ``kill`` + ``delete`` (timed). Last, ``run`` of a bundle whose process writes M MiB to stdout
(``dd``), kata from the template and runc: first byte to last byte.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import psutil

from benchmarks.common import MB, first_error, fmt_s, kata_processes, make_bundle, median, read, stats
from benchmarks.run import Tracker

GOAL_EXEC_OVER_RUNC = 0.3  # s: kata exec <= runc exec + this
GOAL_STDIO_MBS = 50.0  # MB/s through the shim, each way
MODES = {"kata": "kata, cold VM", "kata_tpl": "kata, VM from the template", "runc": "runc"}
CHUNK = 1 << 20
TRANSFER_S = 5.0  # seconds a kata transfer is sized to take (from a 1 MiB probe)


def _argv(tr: Tracker, mode: str, *args: str, log: Path | None = None) -> list[str]:
    """A runc or kata-runtime command line of ``mode``; kata's with its debug log to ``log``."""
    if mode == "runc":
        return [tr.runc, "--root", str(tr.runc_root), *args]
    config = ["--kata-config", str(tr.template_config)] if mode == "kata_tpl" and tr.template_config else []
    debug = ["--debug", "--log", str(log), "--log-format", "json"] if log is not None else []
    return [tr.runtime, "--root", str(tr.kata_root), *config, *debug, *args]


def _timed(tr: Tracker, argv: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Run to its end, output appended to ``out``: {wall, rc, error?}."""
    with open(out, "ab") as f:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
    tr.children.append(p)
    r: dict[str, Any] = {}
    try:
        r["rc"] = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        r["rc"] = p.wait()
        r["error"] = f"timeout after {timeout:g} s"
    r["wall"] = round(time.monotonic() - t0, 4)
    tr.children.remove(p)
    if r["rc"] != 0 and "error" not in r:
        r["error"] = f"exit status {r['rc']}: {first_error(read(out, 2000))}"
    return r


def start_container(tr: Tracker, mode: str, bundle: Path, cid: str, timeout: float,
                    log: Path | None = None) -> dict[str, Any]:
    """``create`` + ``start`` of the bundle's ``sleep``: {create, start, wall, ok, error?}; kata's
    with the debug log to ``log`` (its phases say where a slow start went)."""
    (tr.runc_ids if mode == "runc" else tr.kata_ids).append(cid)
    out = tr.work / f"{cid}.out"
    r: dict[str, Any] = {"id": cid, "mode": mode, "ok": False}
    c = _timed(tr, _argv(tr, mode, "create", "--bundle", str(bundle), cid, log=log), out, timeout)
    r["create"] = c["wall"]
    if "error" in c:
        r["error"] = f"create: {c['error']}"
        return r
    s = _timed(tr, _argv(tr, mode, "start", cid, log=log), out, timeout)
    r["start"] = s["wall"]
    if "error" in s:
        r["error"] = f"start: {s['error']}"
        return r
    r["wall"] = round(r["create"] + r["start"], 4)
    r["ok"] = True
    if log is not None:
        from benchmarks.run import parse_runtime_log

        r["phases"] = parse_runtime_log(log)[0]
        r["template_made"] = "template_made" in r["phases"]  # this create (re)made the template first
    return r


def stop_container(tr: Tracker, mode: str, cid: str, timeout: float) -> dict[str, Any]:
    """``kill KILL`` + ``delete`` (``delete --force`` if the exit was not seen yet): {kill, delete, ok}."""
    out = tr.work / f"{cid}.stop"
    k = _timed(tr, _argv(tr, mode, "kill", cid, "KILL"), out, timeout)
    d = _timed(tr, _argv(tr, mode, "delete", cid), out, timeout)
    r: dict[str, Any] = {"kill": k["wall"], "delete": d["wall"]}
    if "error" in d:
        time.sleep(0.5)
        d = _timed(tr, _argv(tr, mode, "delete", "--force", cid), out, timeout)
        r["delete_force"] = d["wall"]
    r["ok"] = "error" not in d
    if not r["ok"]:
        r["error"] = f"delete: {d['error']}"
    return r


class _Watchdog:
    """Kills a process that is still running after ``timeout`` seconds."""

    def __init__(self, p: subprocess.Popen[bytes], timeout: float) -> None:
        self.fired = False
        self._p = p
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        self._p.kill()

    def cancel(self) -> None:
        self._timer.cancel()


def _write_all(stdin: IO[bytes], nbytes: int, errors: list[str]) -> None:
    chunk = b"\0" * CHUNK
    try:
        left = nbytes
        while left > 0:
            stdin.write(chunk[:min(left, CHUNK)])
            left -= CHUNK
        stdin.close()
    except (BrokenPipeError, OSError, ValueError) as e:
        errors.append(f"writing stdin: {e}")


def _cpu_procs(mode: str, cid: str) -> dict[str, list[psutil.Process]]:
    """kata: the sandbox's QEMU, kata-proxy and kata-shims (the exec's among them); runc: none."""
    return {} if mode == "runc" else kata_processes([cid])[cid]


def _cpu(procs: dict[str, list[psutil.Process]]) -> dict[tuple[str, int], float]:
    """CPU seconds (user + system) used so far by each (role, pid); a process that is gone is left out."""
    out: dict[tuple[str, int], float] = {}
    for role, ps in procs.items():
        for p in ps:
            try:
                t = p.cpu_times()
                out[(role, p.pid)] = t.user + t.system
            except psutil.Error:
                pass
    return out


def _cpu_share(before: dict[tuple[str, int], float], after: dict[tuple[str, int], float],
               seconds: float) -> dict[str, float]:
    """Each role's CPU over ``seconds``, as a share of one core, from the processes seen both times
    (the exec's own shim exits with its process: what it used is not seen)."""
    roles: dict[str, float] = {}
    for key, t0 in before.items():
        roles[key[0]] = roles.get(key[0], 0.0) + max(after.get(key, t0) - t0, 0.0)
    return {role: round(v / seconds, 3) for role, v in roles.items()}


def stdio(tr: Tracker, mode: str, cid: str, direction: str, mib: int, timeout: float) -> dict[str, Any]:
    """M MiB through an ``exec``'s stdio: ``direction`` "in", "out" or "echo" (both at once).
    {mbs, seconds, bytes, wall, ok, error?}; MB/s counts the bytes that crossed (each way for echo)."""
    nbytes = mib << 20
    script = {"in": "echo READY; cat >/dev/null; echo END",
              "out": f"echo READY; dd if=/dev/zero bs=65536 count={mib * 16} 2>/dev/null",
              "echo": "echo READY; cat"}[direction]
    err = tr.work / f"{cid}.stdio.err"
    r: dict[str, Any] = {"direction": direction, "mib": mib, "ok": False}
    with open(err, "ab") as errf:
        t_spawn = time.monotonic()
        p = subprocess.Popen(_argv(tr, mode, "exec", cid, "sh", "-c", script), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=errf, start_new_session=True)
    tr.children.append(p)
    dog = _Watchdog(p, timeout)
    errors: list[str] = []
    writer: threading.Thread | None = None
    got, t_last = 0, 0.0
    assert p.stdin is not None and p.stdout is not None
    stdout = cast(io.BufferedReader, p.stdout)
    try:
        ready = stdout.readline()
        procs = _cpu_procs(mode, cid)
        cpu0 = _cpu(procs)
        t0 = time.monotonic()
        r["to_ready"] = round(t0 - t_spawn, 4)
        if ready.strip() != b"READY":
            raise RuntimeError(f"no READY from the exec (got {ready[:60]!r})")
        if direction == "out":
            p.stdin.close()
        else:
            writer = threading.Thread(target=_write_all, args=(p.stdin, nbytes, errors), daemon=True)
            writer.start()
        tail = b""
        while True:
            data = stdout.read1(CHUNK)
            if not data:
                break
            got += len(data)
            t_last = time.monotonic()
            if direction == "in":
                tail = (tail + data)[-8:]
                if b"END" in tail:
                    break
        if writer is not None:
            writer.join(timeout)
        rc = p.wait(timeout=max(1.0, timeout - (time.monotonic() - t_spawn)))
        r["wall"] = round(time.monotonic() - t_spawn, 4)
        r["rc"] = rc
        crossed = nbytes if direction == "in" else got
        if direction == "in" and b"END" not in tail:
            errors.append("no END after the data: the process did not read it all")
        elif direction != "in" and got != nbytes:
            errors.append(f"read {got} bytes of {nbytes}")
        if rc != 0:
            errors.append(f"exit status {rc}: {first_error(read(err, 2000))}")
        if dog.fired:
            errors.append(f"timeout after {timeout:g} s")
        seconds = t_last - t0
        cpu1 = _cpu(procs)
        if seconds > 0:
            r["cpu_share"] = _cpu_share(cpu0, cpu1, seconds)
        r.update(bytes=crossed, seconds=round(seconds, 4),
                 mbs=round(crossed / MB / seconds, 2) if seconds > 0 else None)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        errors.append(str(e) if not dog.fired else f"timeout after {timeout:g} s")
        p.kill()
        p.wait()
    finally:
        dog.cancel()
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        tr.children.remove(p)
    if errors:
        r["error"] = "; ".join(errors)
    r["ok"] = not errors
    return r


def run_writing(tr: Tracker, mode: str, bundle: Path, cid: str, mib: int, timeout: float) -> dict[str, Any]:
    """``run`` of a bundle whose process writes ``mib`` MiB to stdout: first byte to last byte."""
    (tr.runc_ids if mode == "runc" else tr.kata_ids).append(cid)
    err = tr.work / f"{cid}.err"
    r: dict[str, Any] = {"id": cid, "mode": mode, "mib": mib, "ok": False}
    with open(err, "ab") as errf:
        t0 = time.monotonic()
        p = subprocess.Popen(_argv(tr, mode, "run", "--bundle", str(bundle), cid), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=errf, start_new_session=True)
    tr.children.append(p)
    dog = _Watchdog(p, timeout)
    got, t_first, t_last = 0, 0.0, 0.0
    assert p.stdout is not None
    stdout = cast(io.BufferedReader, p.stdout)
    try:
        while True:
            data = stdout.read1(CHUNK)
            if not data:
                break
            if not got:
                t_first = time.monotonic()
            got += len(data)
            t_last = time.monotonic()
        rc = p.wait()
    finally:
        dog.cancel()
        p.stdout.close()
        tr.children.remove(p)
    r.update(wall=round(time.monotonic() - t0, 4), rc=rc, bytes=got,
             to_first_byte=round(t_first - t0, 4) if got else None, seconds=round(t_last - t_first, 4))
    r["mbs"] = round(got / MB / (t_last - t_first), 2) if t_last > t_first else None
    errors = []
    if dog.fired:
        errors.append(f"timeout after {timeout:g} s")
    if rc != 0:
        errors.append(f"exit status {rc}: {first_error(read(err, 2000))}")
    if got != mib << 20:
        errors.append(f"read {got} bytes of {mib << 20}")
    if errors:
        r["error"] = "; ".join(errors)
    r["ok"] = not errors
    return r


def measure(tr: Tracker, modes: list[str], repeat: int, execs: int, mib: int, timeout: float,
            say: Callable[[str], None], transfer_s: float = TRANSFER_S) -> dict[str, Any]:
    """The whole latency section (see the module's docstring); every raw number in the result.
    kata's transfers are sized from a 1 MiB probe of each mode and direction to take about
    ``transfer_s`` seconds (at most ``mib`` MiB); runc's are ``mib`` MiB."""
    bundle = tr.work / "bundle-latency-sleep"
    make_bundle(bundle, ["sleep", "100000"], None, tr.runc)
    res: dict[str, Any] = {"modes": modes, "repeat": repeat, "execs_per_container": execs, "mib": mib,
                           "transfer_s": transfer_s, "start": {m: [] for m in modes}, "exec": {m: [] for m in modes},
                           "stdio": {m: {d: [] for d in ("in", "out", "echo")} for m in modes},
                           "stdio_probes": [], "sizes_mib": {}, "stop": {m: [] for m in modes}, "run_writing": {},
                           "load": []}
    sizes: dict[str, int] = res["sizes_mib"]  # "<mode> <direction>": MiB a transfer

    def size_for(m: str, d: str, cid: str) -> int:
        key = f"{m} {d}"
        if m == "runc":
            sizes[key] = mib
        elif key not in sizes:
            probe = stdio(tr, m, cid, d, 1, timeout)
            res["stdio_probes"].append(probe | {"mode": m})
            rate = probe.get("mbs") or 0.0
            sizes[key] = max(1, min(mib, int(rate * MB * transfer_s) >> 20))
        return sizes[key]

    tag = os.getpid()
    for i in range(repeat):
        res["load"].append(os.getloadavg())
        running = []
        for m in modes:
            cid = f"bench{tag}-l{ {'kata': 'c', 'kata_tpl': 't', 'runc': 'r'}[m]}{i}"
            r = start_container(tr, m, bundle, cid, timeout, log=None if m == "runc" else tr.work / f"{cid}.log")
            res["start"][m].append(r)
            say(f"latency {i + 1}/{repeat} {m}: create {fmt_s(r.get('create'))} + start {fmt_s(r.get('start'))}"
                + ("" if r["ok"] else f" FAILED: {r.get('error')}"))
            if r["ok"]:
                running.append((m, cid))
        for _ in range(execs):
            for m, cid in running:
                e = _timed(tr, _argv(tr, m, "exec", cid, "true"), tr.work / f"{cid}.exec", timeout)
                e["ok"] = "error" not in e
                res["exec"][m].append(e)
        for m, _cid in running:
            walls = [e["wall"] for e in res["exec"][m][-execs:] if e["ok"]]
            say(f"latency {i + 1}/{repeat} {m}: exec of true, median {fmt_s(median(walls))} of {len(walls)}")
        for d in ("in", "out", "echo"):
            for m, cid in running:
                size = size_for(m, d, cid)
                s = stdio(tr, m, cid, d, size, timeout)
                res["stdio"][m][d].append(s)
                shown = f"{s['mbs']} MB/s" if s.get("mbs") is not None else "-"
                say(f"latency {i + 1}/{repeat} {m}: stdio {d} {size} MiB: {shown}"
                    + ("" if s["ok"] else f" FAILED: {s.get('error')}"))
        for m, cid in running:
            res["stop"][m].append(stop_container(tr, m, cid, timeout))
    writers: dict[int, Path] = {}
    for m in [m for m in modes if m != "kata"]:  # a cold boot per run adds nothing to the stdio figure
        res["run_writing"][m] = []
        size = sizes.get(f"{m} out", mib)
        if size not in writers:
            writers[size] = tr.work / f"bundle-latency-dd{size}"
            make_bundle(writers[size], ["sh", "-c", f"dd if=/dev/zero bs=1048576 count={size} 2>/dev/null"],
                        bundle / "rootfs", tr.runc)
        for i in range(repeat):
            cid = f"bench{tag}-w{'t' if m == 'kata_tpl' else 'r'}{i}"
            w = run_writing(tr, m, writers[size], cid, size, timeout)
            res["run_writing"][m].append(w)
            say(f"run writing {size} MiB {i + 1}/{repeat} {m}: {w.get('mbs')} MB/s"
                + ("" if w["ok"] else f" FAILED: {w.get('error')}"))
    res["summary"] = summarize(res)
    return res


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for m in res["modes"]:
        ok = [r for r in res["start"][m] if r["ok"] and not r.get("template_made")]
        s[m] = {"create": stats(r["create"] for r in ok), "start": stats(r["start"] for r in ok),
                "create_start": stats(r["wall"] for r in ok),
                "exec": stats(e["wall"] for e in res["exec"][m] if e["ok"]),
                "delete": stats(r["delete"] for r in res["stop"][m] if r.get("ok")),
                "stdio": {d: stats(x.get("mbs") for x in rows if x["ok"]) for d, rows in res["stdio"][m].items()},
                "run_writing": stats(w.get("mbs") for w in res["run_writing"].get(m, []) if w["ok"]),
                "stdio_cpu": {d: {role: median(x["cpu_share"].get(role) for x in rows if x["ok"] and "cpu_share" in x)
                                  for role in ("qemu", "kata-proxy", "kata-shim")}
                              for d, rows in res["stdio"][m].items()} if m != "runc" else {}}
    runc_exec = (s.get("runc") or {}).get("exec", {}).get("median")
    for m in res["modes"]:
        e = s[m]["exec"]["median"]
        s[m]["exec_over_runc"] = None if e is None or runc_exec is None else round(e - runc_exec, 4)
    s["template_made"] = [f"{m} #{i + 1}" for m in res["modes"] for i, r in enumerate(res["start"][m])
                          if r.get("template_made")]
    s["failures"] = [f"{m} {what} #{i + 1}: {r['error']}" for m in res["modes"]
                     for what, rows in (("start", res["start"][m]), ("stop", res["stop"][m]),
                                        ("exec", res["exec"][m]),
                                        *((f"stdio {d}", v) for d, v in res["stdio"][m].items()),
                                        ("run writing", res["run_writing"].get(m, [])))
                     for i, r in enumerate(rows) if r.get("error")]
    return s


def _mbs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} MB/s"


def _verdict_min(v: float | None, goal: float) -> str:
    if v is None:
        return "-"
    return "met" if v >= goal else f"short by {goal - v:.1f}"


def render(res: dict[str, Any]) -> str:
    s = res["summary"]
    modes = res["modes"]
    head = "| " + " | ".join(MODES[m] for m in modes) + " |"
    sizes = ", ".join(f"{k} {v} MiB" for k, v in (res.get("sizes_mib") or {}).items())
    lines = [f"{res['repeat']} container(s) per mode, one after the other, {res['execs_per_container']} exec(s) in "
             f"each, round robin. stdio: at most {res['mib']} MiB a transfer; kata's sized from a 1 MiB probe to "
             f"take about {res.get('transfer_s', TRANSFER_S):g} s ({sizes or '-'}). Medians (min … max).", "",
             "| latency (wall of the CLI) " + head + " goal |",
             "| --- |" + " ---: |" * len(modes) + " --- |"]

    def cell(st: dict[str, Any], fmt: Callable[[float | None], str]) -> str:
        if not st or st.get("median") is None:
            return "-"
        return f"{fmt(st['median'])} ({fmt(st['min'])} … {fmt(st['max'])})"

    rows: list[tuple[str, str, Callable[[float | None], str], str]] = [
        ("`create` (detached `sleep`)", "create", fmt_s, ""),
        ("`start`", "start", fmt_s, ""),
        ("`create` + `start`", "create_start", fmt_s, ""),
        ("`exec` of `true`", "exec", fmt_s, f"≤ runc + {GOAL_EXEC_OVER_RUNC} s"),
        ("`kill` + `delete`: the `delete`", "delete", fmt_s, "")]
    for label, key, fmt, goal in rows:
        lines.append(f"| {label} | " + " | ".join(cell(s[m][key], fmt) for m in modes) + f" | {goal} |")
    over = []
    for m in modes:
        v = s[m].get("exec_over_runc")
        if m == "runc" or v is None:
            over.append("")
        else:
            verdict = "met" if v <= GOAL_EXEC_OVER_RUNC else f"short by {v - GOAL_EXEC_OVER_RUNC:.2f} s"
            over.append(f"+{v:.2f} s ({verdict})")
    lines.append("| `exec`: kata − runc (medians) | " + " | ".join(over) + f" | ≤ {GOAL_EXEC_OVER_RUNC} s |")
    lines += ["", "| stdio through the shim (MB = 10^6 B) " + head + " goal |",
              "| --- |" + " ---: |" * len(modes) + " --- |"]
    labels = {"in": "`exec` `cat >/dev/null`: host → process (stdin)",
              "out": "`exec` `dd if=/dev/zero`: process → host (stdout)",
              "echo": "`exec` `cat`: both at once (each way)"}
    for d, label in labels.items():
        cells = [cell(s[m]["stdio"][d], _mbs) for m in modes]
        goal = f"≥ {GOAL_STDIO_MBS:g} MB/s" if d != "echo" else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal} |")
    cells = [cell(s[m]["run_writing"], _mbs) if m in res["run_writing"] else "(not run)" for m in modes]
    lines.append("| `run` of `dd` writing to stdout (first to last byte) | " + " | ".join(cells)
                 + f" | ≥ {GOAL_STDIO_MBS:g} MB/s |")
    verdicts = []
    for m in [m for m in modes if m != "runc"]:
        for d in ("in", "out"):
            v = s[m]["stdio"][d]["median"]
            verdicts.append(f"{MODES[m]} {d}: {_verdict_min(v, GOAL_STDIO_MBS)}")
    if verdicts:
        lines += ["", "stdio goal (≥ 50 MB/s each way, medians): " + "; ".join(verdicts) + "."]
    cpu = []
    for m in [m for m in modes if s[m].get("stdio_cpu")]:
        for d, shares in s[m]["stdio_cpu"].items():
            if any(v is not None for v in shares.values()):
                cpu.append(f"{MODES[m]} {d}: " + ", ".join(f"{role} {max(v, 0) * 100:.0f}%"
                                                             for role, v in shares.items()
                                                             if v is not None))
    if cpu:
        lines += ["", "CPU during kata's transfers (medians, % of one core; QEMU's includes the guest, which TCG "
                  "emulates): " + "; ".join(cpu) + "."]
    if s.get("template_made"):
        lines += ["", "Left out of `create` and `start`: " + ", ".join(s["template_made"]) + " (the create made the "
                  "template again first: its inputs had changed)."]
    if s["failures"]:
        lines += ["", "Failed: " + "; ".join(s["failures"][:10])]
    return "\n".join(lines) + "\n"
