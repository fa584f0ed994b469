"""Density: N idle sandboxes started one after another, kept running (a part of ``suite.py``).

For one mode (kata cold, kata from the VM template, or runc beside them), sandbox after sandbox:
``create`` + ``start`` of busybox ``sleep`` (each timed), until the largest N of the checkpoints
(1, 5, 10, 25, 50). At each checkpoint, after ``settle`` seconds: the host PSS
(/proc/PID/smaps_rollup) of every sandbox's QEMU, kata-proxy and kata-shim (runc: the container's
process), summed and divided by N; the host's MemAvailable and its drop since the run began, per
sandbox; the CPU the idle sandboxes burn (their processes' CPU time over ``cpu_window`` seconds,
in % of one core); the load average. The run stops early, and says why, when MemAvailable falls
under ``min_available`` before a start, when a start fails, or when the time budget is spent.
Then every sandbox is killed and deleted (timed), and a check that nothing of them is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    GIB,
    MB,
    fmt_s,
    kata_processes,
    loadavg,
    meminfo,
    mounts_naming,
    signals_held,
    smaps_rollup,
    top_mappings,
)
from benchmarks.latency import start_container, stop_container
from benchmarks.run import Tracker, parse_runtime_log

CHECKPOINTS = (1, 5, 10, 25, 50)
SHORT_CHECKPOINTS = (1, 3)
GOAL_TPL_PSS_MB = 64.0  # host PSS (QEMU + proxy + shim) per sandbox at N = 50, from templates
GOAL_N = 50
LABELS = {"kata": "kata, cold boots", "kata_tpl": "kata, VMs from the template", "runc": "runc"}


def _available() -> int:
    return meminfo().get("MemAvailable", 0)


def _runc_pids(tr: Tracker, ids: list[str]) -> dict[str, list[int]]:
    """The container processes of runc containers: ``runc state``'s pid and its descendants."""
    out: dict[str, list[int]] = {}
    for cid in ids:
        try:
            st = subprocess.run([tr.runc, "--root", str(tr.runc_root), "state", cid], capture_output=True,
                                text=True, timeout=30)
            pid = int(json.loads(st.stdout)["pid"])
            out[cid] = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        except (OSError, ValueError, KeyError, psutil.Error, subprocess.TimeoutExpired):
            out[cid] = []
    return out


def _pids_by_role(tr: Tracker, mode: str, ids: list[str]) -> dict[str, dict[str, list[int]]]:
    if mode == "runc":
        return {cid: {"container": pids} for cid, pids in _runc_pids(tr, ids).items()}
    return {cid: {role: [p.pid for p in ps] for role, ps in roles.items()}
            for cid, roles in kata_processes(ids).items()}


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _template_bytes(tr: Tracker) -> int | None:
    """Bytes the template's files hold (its RAM file in /dev/shm is paid once per host)."""
    if tr.template_dir is None or not tr.template_dir.exists():
        return None
    return sum(f.stat().st_blocks * 512 for f in tr.template_dir.rglob("*") if f.is_file())


def checkpoint(tr: Tracker, mode: str, ids: list[str], avail0: int, settle: float, cpu_window: float,
               t_begin: float) -> dict[str, Any]:
    """The figures of ``len(ids)`` running sandboxes (see the module's docstring)."""
    time.sleep(settle)
    by_role = _pids_by_role(tr, mode, ids)
    all_pids = [pid for roles in by_role.values() for pids in roles.values() for pid in pids]
    cpu0, t0 = _cpu_seconds(all_pids), time.monotonic()
    time.sleep(cpu_window)
    cpu = (_cpu_seconds(all_pids) - cpu0) / (time.monotonic() - t0)
    roles: dict[str, int] = {}
    per_sandbox: list[int] = []
    missing = []
    for cid, rs in by_role.items():
        mine = 0
        for role, pids in rs.items():
            pss = sum(smaps_rollup(pid).get("Pss", 0) for pid in pids)
            roles[role] = roles.get(role, 0) + pss
            mine += pss
        per_sandbox.append(mine)
        if mode != "runc" and not all(rs.get(r) for r in ("qemu", "kata-proxy", "kata-shim")):
            missing.append(cid)
        elif mode == "runc" and not rs.get("container"):
            missing.append(cid)
    n = len(ids)
    avail = _available()
    total = sum(roles.values())
    first_qemu = next((pids[0] for rs in by_role.values() for role, pids in rs.items() if role == "qemu" and pids),
                      None)
    return {"n": n, "elapsed": round(time.monotonic() - t_begin, 2), "pss_total": total,
            "pss_per_sandbox": total // n if n else None, "pss_by_role": roles,
            "pss_each": {"min": min(per_sandbox, default=0), "max": max(per_sandbox, default=0)},
            "mem_available": avail, "host_used_per_sandbox": (avail0 - avail) // n if n else None,
            "cpu_percent_of_a_core": round(cpu * 100, 1), "load": loadavg(), "template_bytes":
            _template_bytes(tr) if mode == "kata_tpl" else None, "missing_processes": missing,
            "first_qemu_top": top_mappings(first_qemu) if first_qemu else []}


def run(tr: Tracker, mode: str, bundle: Path, checkpoints: tuple[int, ...], settle: float, cpu_window: float,
        timeout: float, min_available: int, budget: float | None, say: Callable[[str], None]) -> dict[str, Any]:
    """One density run of ``mode``; every start and every checkpoint in the result."""
    target = max(checkpoints)
    tag = {"kata": "c", "kata_tpl": "t", "runc": "r"}[mode]
    avail0 = _available()
    res: dict[str, Any] = {"mode": mode, "checkpoints_asked": list(checkpoints), "settle": settle,
                           "min_available": min_available, "mem_available_before": avail0, "load_before": loadavg(),
                           "starts": [], "points": [], "stopped_early": None}
    ids: list[str] = []
    t_begin = time.monotonic()
    try:
        for n in range(1, target + 1):
            avail = _available()
            if avail < min_available:
                res["stopped_early"] = (f"before sandbox {n}: host MemAvailable {avail / GIB:.2f} GiB "
                                        f"< {min_available / GIB:g} GiB")
                break
            if budget is not None and time.monotonic() - t_begin > budget:
                res["stopped_early"] = f"before sandbox {n}: the time budget of {budget:g} s is spent"
                break
            cid = f"bench{os.getpid()}-d{tag}{n}"
            r = _start(tr, mode, bundle, cid, timeout)
            r.update(n=n, since_begin=round(time.monotonic() - t_begin, 2), mem_available=_available())
            res["starts"].append(r)
            if not r["ok"]:
                res["stopped_early"] = f"sandbox {n} did not start: {r.get('error')}"
                say(f"density {mode}: sandbox {n} FAILED: {r.get('error')}")
                break
            ids.append(cid)
            if n in checkpoints:
                pt = checkpoint(tr, mode, ids, avail0, settle, cpu_window, t_begin)
                res["points"].append(pt)
                say(f"density {mode}: N={n}: start of the N-th {fmt_s(r['wall'])}, PSS/sandbox "
                    f"{(pt['pss_per_sandbox'] or 0) / MB:.1f} MB, MemAvailable {pt['mem_available'] / GIB:.1f} GiB, "
                    f"idle CPU {pt['cpu_percent_of_a_core']}% of a core, load {pt['load'][0]}")
        if res["stopped_early"] and ids and (not res["points"] or res["points"][-1]["n"] != len(ids)):
            res["points"].append(checkpoint(tr, mode, ids, avail0, settle, cpu_window, t_begin) | {"final": True})
        if res["stopped_early"]:
            say(f"density {mode}: stopped early at N={len(ids)}: {res['stopped_early']}")
    finally:
        with signals_held():  # also after Ctrl-C: every sandbox goes
            res["teardown"] = _teardown(tr, mode, ids, timeout)
    res["reached"] = len(ids)
    return res


def _start(tr: Tracker, mode: str, bundle: Path, cid: str, timeout: float) -> dict[str, Any]:
    """``create`` + ``start``; kata's with the debug log, whose phases tell where a slow start went."""
    if mode == "runc":
        return start_container(tr, mode, bundle, cid, timeout)
    log = tr.work / f"{cid}.log"
    r = start_container(tr, mode, bundle, cid, timeout, log=log)
    r["phases"], r["guest"], r["qemu_up"], _ = parse_runtime_log(log)
    r["template_made"] = "template_made" in r["phases"]  # this create (re)made the template first
    return r


def _teardown(tr: Tracker, mode: str, ids: list[str], timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    failed = []
    for cid in reversed(ids):
        r = stop_container(tr, mode, cid, timeout)
        if not r["ok"]:
            failed.append(f"{cid}: {r.get('error')}")
    seconds = round(time.monotonic() - t0, 2)
    left: list[str] = []
    deadline = time.monotonic() + 15  # QEMU and the shims go asynchronously
    while True:
        left = []
        if mode != "runc":
            left = [f"{role} pid {p.pid} of {cid}" for cid, roles in kata_processes(ids).items()
                    for role, ps in roles.items() for p in ps]
        else:
            left = [cid for cid in ids if (tr.runc_root / cid).exists()]
        left += [f"mount {m}" for m in mounts_naming(ids)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    return {"n": len(ids), "seconds": seconds, "per_sandbox": round(seconds / len(ids), 3) if ids else None,
            "failed": failed, "left_behind": left}


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    for mode, r in runs.items():
        last = r["points"][-1] if r["points"] else {}
        s[mode] = {"reached": r.get("reached", 0), "stopped_early": r.get("stopped_early"),
                   "pss_per_sandbox_last": last.get("pss_per_sandbox"), "n_last": last.get("n"),
                   "failures": (r.get("teardown") or {}).get("failed", []) + (r.get("teardown") or {}).get(
                       "left_behind", [])}
    return s


def render(runs: dict[str, dict[str, Any]]) -> str:
    lines = ["| mode | N | start of the N-th (create + start) | since the run began | host PSS per sandbox "
             "(QEMU / proxy / shim) | host MemAvailable (drop per sandbox) | idle CPU of all N (% of a core) | load |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    notes = []
    for mode, r in runs.items():
        starts = {s["n"]: s for s in r["starts"]}
        for pt in r["points"]:
            n = pt["n"]
            roles = pt["pss_by_role"]
            split = ("" if mode == "runc" else " (" + " / ".join(
                f"{roles.get(k, 0) / n / MB:.1f}" for k in ("qemu", "kata-proxy", "kata-shim")) + ")")
            st = starts.get(n, {})
            mark = " (where it stopped)" if pt.get("final") else ""
            lines.append(f"| {LABELS[mode]} | {n}{mark} | {fmt_s(st.get('wall'))} | {fmt_s(pt['elapsed'])} | "
                         f"{pt['pss_per_sandbox'] / MB:.1f} MB{split} | {pt['mem_available'] / GIB:.1f} GiB "
                         f"({(pt['host_used_per_sandbox'] or 0) / MB:.0f} MB) | {pt['cpu_percent_of_a_core']}% | "
                         f"{pt['load'][0]} |")
            if pt.get("first_qemu_top") and pt is r["points"][-1]:
                notes.append(f"{LABELS[mode]}, N={n}: the first sandbox's QEMU PSS by mapping: " + ", ".join(
                    f"{name if name.startswith('[') else os.path.basename(name)} {v / MB:.1f} MB"
                    for name, v in pt["first_qemu_top"][:5]))
            if pt.get("template_bytes") and pt is r["points"][-1]:
                notes.append(f"the template's files ({pt['template_bytes'] / MB:.0f} MB in /dev/shm) are paid once "
                             f"per host: {pt['template_bytes'] / n / MB:.1f} MB per sandbox at N={n}, not in the PSS")
        remade = [str(x["n"]) for x in r["starts"] if x.get("template_made")]
        if remade and mode == "kata_tpl":
            notes.append(f"{LABELS[mode]}: the create of sandbox(es) {', '.join(remade)} made the template first "
                         "(the first create, or its inputs had changed): their start times include that")
        td = r.get("teardown") or {}
        ended = (f"stopped early at N={r.get('reached', 0)}: {r['stopped_early']}" if r.get("stopped_early")
                 else f"reached N={r.get('reached', 0)}")
        notes.append(f"{LABELS[mode]}: {ended}; MemAvailable {r['mem_available_before'] / GIB:.1f} GiB before; "
                     f"teardown of {td.get('n', 0)} in {fmt_s(td.get('seconds'))}"
                     + (f"; FAILED: {td['failed'][:3]}" if td.get("failed") else "")
                     + (f"; LEFT: {td['left_behind'][:3]}" if td.get("left_behind") else ""))
    return "\n".join(lines + [""] + [f"- {n}." for n in notes]) + "\n"
