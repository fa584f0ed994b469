#!/usr/bin/env python3
"""The benchmark suite a user would run before choosing us: kata-runtime beside runc on the same
bundle in the same run, and beside a bare boot of the same guest where that applies.

    python benchmarks/suite.py [--short] [--json FILE] [--plots DIR] [--markdown FILE] [--only|--skip S,...]
    python benchmarks/suite.py --render FILE.json [--plots DIR] [--markdown FILE]

Sections, in this order:

- ``start``: ``run.py``'s interleaved loop (bare boot-and-exit, ``run`` of ``true`` cold, from a
  VM template, from the VM cache, ``runc run``), its phases, and the memory of one idle container
  (PSS of QEMU, kata-proxy, kata-shim; the guest's own MemTotal - MemAvailable; the guest RAM the
  host holds for it; the CLI's peak RSS during ``create``);
- ``latency``: ``create`` + ``start``, ``exec``, stdio through the shim both ways (``latency.py``);
- ``density``: N idle sandboxes one after another, N = 1, 5, 10, 25, 50, from a template, cold,
  and runc beside them (``density.py``);
- ``engines``, ``pods``, ``network``: ``engines.py``, ``pods.py``, ``network.py`` run as they are
  (docker and containerd's CRI on top of kata-runtime; TCP and volumes), their results kept;
- ``soak``: ``soak.py``, 500 lifecycles from a template (50 with ``--short``), the host sampled
  before and after: nothing may grow.

``--short`` (CI): one repetition, small transfers, density N = 1, 3 from the template (and runc),
the other benchmarks (the soak too) in their own short modes. A benchmark, not a test: exit 1 only when a run
failed or something was left behind, never because a number misses its goal. Everything it starts
is removed at the end, also on failure, Ctrl-C or SIGTERM. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository on sys.path for ``benchmarks``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import density, latency  # noqa: E402
from benchmarks import run as start  # noqa: E402
from benchmarks.common import (  # noqa: E402
    GIB,
    MB,
    Interrupted,
    compile_checkout,
    default_runc,
    default_runtime,
    fmt_mb,
    fmt_s,
    guarded,
    host_facts,
    loadavg,
    make_bundle,
    needs_root,
    progress,
    unwind_on_signals,
)

HERE = Path(__file__).resolve().parent
SECTIONS = ("start", "latency", "density", "engines", "pods", "network", "soak")
OTHERS = ("engines", "pods", "network", "soak")  # separate programs (daemons of their own; the soak's template)
GOAL_CLI_RSS_MB = 27.6  # the peer's `create` peak RSS
PEER_RUN_MEDIAN = 8.89  # s, Kata 1.12.1 `run` of `true` on our guest kernel (DESIGN.md section 10; another day)
say = progress("suite")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--short", action="store_true", help="CI: one repetition, density N = 1, 3 (template)")
    ap.add_argument("--json", type=Path, help="write every raw number here")
    ap.add_argument("--markdown", type=Path, help="write the tables here (they also go to stdout)")
    ap.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots here (matplotlib)")
    ap.add_argument("--render", type=Path, metavar="JSON", help="measure nothing: tables (and --plots) of an "
                    "earlier run's --json file")
    ap.add_argument("--only", default="", help=f"comma-separated sections to run, of {','.join(SECTIONS)}")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--repeat", type=int, help="repetitions of the start and latency runs (5; 1 with --short)")
    ap.add_argument("--execs", type=int, help="exec of true per latency container (5; 3 with --short)")
    ap.add_argument("--mib", type=int, help="MiB per stdio transfer (64; 16 with --short)")
    ap.add_argument("--density", default="", metavar="N,N,...", help="density checkpoints (1,5,10,25,50; "
                    "1,3 with --short); the largest is the number of sandboxes started")
    ap.add_argument("--density-modes", default="", help="of kata_tpl,kata,runc (all three; kata_tpl,runc "
                    "with --short)")
    ap.add_argument("--settle", type=float, help="seconds idle before each density checkpoint (5; 2 with --short)")
    ap.add_argument("--min-available", type=float, default=2.0, metavar="GIB",
                    help="stop a density run before a start when the host's MemAvailable is below this (2)")
    ap.add_argument("--density-budget", type=float, metavar="S", help="stop a density run before a start "
                    "after this many seconds (no limit)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds one command may take (180)")
    ap.add_argument("--no-cache", action="store_true", help="no runs with a VM from the VM cache")
    ap.add_argument("--runtime", default="", help="kata-runtime to measure (/opt/kata-dev/bin/kata-runtime, "
                    "else from PATH)")
    ap.add_argument("--runc", default=default_runc(), help="runc binary")
    args = ap.parse_args(argv)
    short = args.short
    args.repeat = args.repeat or (1 if short else 5)
    args.execs = args.execs or (3 if short else 5)
    args.mib = args.mib or (16 if short else 64)
    args.settle = 2.0 if args.settle is None and short else (5.0 if args.settle is None else args.settle)
    args.runtime = args.runtime or default_runtime()
    try:
        args.checkpoints = tuple(sorted({int(n) for n in (args.density or ("1,3" if short else "1,5,10,25,50"))
                                         .split(",") if n.strip()}))
    except ValueError:
        ap.error(f"--density: not a list of numbers: {args.density!r}")
    if not args.checkpoints or args.checkpoints[0] < 1:
        ap.error("--density: checkpoints are numbers of sandboxes, 1 or more")
    args.modes = [m for m in (args.density_modes or ("kata_tpl,runc" if short else "kata_tpl,kata,runc"))
                  .split(",") if m]
    bad = [m for m in args.modes if m not in density.LABELS]
    if bad:
        ap.error(f"--density-modes: unknown {bad}; of {','.join(density.LABELS)}")
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    skip = [s for s in args.skip.split(",") if s]
    bad = [s for s in only + skip if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; sections: {','.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in only and s not in skip]
    return args


# ------------------------------------------------------------------------------------------ measuring

def measure(args: argparse.Namespace, tr: start.Tracker, res: dict[str, Any]) -> None:
    """The suite's own sections (start, latency, density), all in ``tr`` for the clean-up."""
    sections = res["sections"]
    if "start" in sections:
        run_args = start.parse_args(["--repeat", str(args.repeat), "--timeout", str(args.timeout),
                                     "--runtime", args.runtime, "--runc", args.runc]
                                    + (["--short"] if args.short else []) + (["--no-cache"] if args.no_cache else []))
        s: dict[str, Any] = {"started": _now(), "repeat": run_args.repeat, "short": args.short,
                             "load_start": loadavg(), "host": res["host"], "bare": [], "kata": [], "kata_tpl": [],
                             "kata_cache": [], "runc": [], "memory_unit": "bytes (tables: MB = 10^6 bytes)"}
        res["start"] = s
        say(f"start: {run_args.repeat} repetition(s), interleaved, then the memory of an idle container")
        start.measure(run_args, tr, s, say)
        s["load_end"], s["finished"] = loadavg(), _now()
        res["loads"]["start"] = s["load_end"]
    needs_template = "latency" in sections or ("density" in sections and "kata_tpl" in args.modes)
    if needs_template and tr.template_config is None and not res.get("template_error"):
        start.make_template(tr, res, args.timeout, say)  # the start section did not make one
    if "latency" in sections:
        modes = (["kata"] if not args.short else []) + (["kata_tpl"] if tr.template_config else []) + ["runc"]
        say(f"latency: {', '.join(modes)}; {args.repeat} container(s) each, {args.execs} exec(s), {args.mib} MiB")
        res["latency"] = latency.measure(tr, modes, args.repeat, args.execs, args.mib, args.timeout, say)
        res["latency"]["load_end"] = res["loads"]["latency"] = loadavg()
    if "density" in sections:
        bundle = tr.work / "bundle-density-sleep"
        make_bundle(bundle, ["sleep", "100000"], None, tr.runc)
        res["density"] = {}
        for mode in args.modes:
            if mode == "kata_tpl" and tr.template_config is None:
                res["density_skipped"] = "kata_tpl: no template (factory init failed)"
                continue
            say(f"density {mode}: up to {max(args.checkpoints)} sandboxes, checkpoints {list(args.checkpoints)}")
            res["density"][mode] = density.run(tr, mode, bundle, args.checkpoints, args.settle, 2.0, args.timeout,
                                               int(args.min_available * GIB), args.density_budget, say)
            res["loads"][f"density {mode}"] = loadavg()


def run_other(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``benchmarks/<name>.py`` (in its short mode with --short): its JSON, markdown and exit status."""
    js, md = work / f"{name}.json", work / f"{name}.md"
    argv = [sys.executable, str(HERE / f"{name}.py"), "--json", str(js), "--markdown", str(md),
            "--runtime", args.runtime] + (["--runc", args.runc] if name != "pods" else []) + (
                ["--short"] if args.short else [])  # pods.py runs containerd's runc v2 shim, whose runc is on PATH
    say(f"{name}: {' '.join(argv[1:2] + argv[6:])}")
    t0 = time.monotonic()
    with open(work / f"{name}.stdout", "wb") as out:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out).returncode  # progress: our stderr
    r: dict[str, Any] = {}
    try:
        r = json.loads(js.read_text())
    except (OSError, ValueError) as e:
        r["error"] = f"no JSON from {name}.py: {e}"
    r["exit_status"] = rc
    r["suite_seconds"] = round(time.monotonic() - t0, 1)
    r["markdown"] = md.read_text() if md.exists() else ""
    say(f"{name}: exit {rc} in {r['suite_seconds']:.0f} s")
    return r


# ------------------------------------------------------------------------------------------- reporting

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ratio_goal(v: float | None, goal: float) -> str:
    if v is None:
        return "-"
    return "met" if v <= goal else f"short by {v - goal:.2f}x"


def _le(v: float | None, goal: float, unit: str) -> str:
    if v is None:
        return "-"
    return "met" if v <= goal else f"short by {v - goal:.2f} {unit}"


def _ge(v: float | None, goal: float, unit: str) -> str:
    if v is None:
        return "-"
    return "met" if v >= goal else f"short by {goal - v:.1f} {unit}"


def goals(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(goal, our figure, its baseline, verdict) for every goal of issue 11 that this run measured."""
    rows: list[tuple[str, str, str, str]] = []
    st = res.get("start") or {}
    s = st.get("summary") or {}
    if s:
        km, bm = s["kata_run"][1], s["bare_exit"][1]
        rows.append(("cold `run` of `true` ≤ 1.3x the bare boot-and-exit", f"{fmt_s(km)} = {_x(s['ratio_bare_exit'])}",
                     f"bare {fmt_s(bm)}, runc {fmt_s(s['runc_run'][1])}",
                     _ratio_goal(s["ratio_bare_exit"], start.GOAL_RATIO)))
        rows.append(("cold `run` faster than Kata 1.12 (Go) on our guest kernel", fmt_s(km),
                     f"{PEER_RUN_MEDIAN} s median (2026-12-01, not this run)",
                     "-" if km is None else ("met" if km < PEER_RUN_MEDIAN else
                                             f"{km / PEER_RUN_MEDIAN:.2f}x the peer's time")))
        rows.append(("template start ≤ 0.15x our cold start", f"{fmt_s(s['kata_tpl_run'][1])} = "
                     f"{_x(s.get('ratio_tpl_cold'))}", f"cold {fmt_s(km)}",
                     _ratio_goal(s.get("ratio_tpl_cold"), start.GOAL_TPL_RATIO)))
        rows.append(("VM-cache start ≤ 0.2x our cold start", f"{fmt_s(s['kata_cache_run'][1])} = "
                     f"{_x(s.get('ratio_cache_cold'))}", f"cold {fmt_s(km)}",
                     _ratio_goal(s.get("ratio_cache_cold"), start.GOAL_CACHE_RATIO)))
    mem = st.get("memory") or {}
    cli = (mem.get("cli_create") or {}).get("vmhwm")
    if cli:
        rows.append(("CLI peak RSS during `create` ≤ the peer's 27.6 MB", fmt_mb(cli), "Kata 1.12: 27.6 MB",
                     _le(cli / MB, GOAL_CLI_RSS_MB, "MB")))
    for role, goal in (("kata-shim", start.GOAL_SHIM_PSS_MB), ("kata-proxy", start.GOAL_PROXY_PSS_MB)):
        row = start.mem_row(mem, role)
        if row:
            peer = start.PEER["shim_mem" if role == "kata-shim" else "proxy_mem"]
            rows.append((f"{role} PSS ≤ {goal:g} MB", fmt_mb(row["pss"]), f"Kata 1.12: {peer}",
                         _le(row["pss"] / MB, goal, "MB")))
    lat = (res.get("latency") or {}).get("summary") or {}
    runc_exec = (lat.get("runc") or {}).get("exec", {}).get("median")
    for m in ("kata_tpl", "kata"):
        if m not in lat:
            continue
        over = lat[m].get("exec_over_runc")
        rows.append((f"`exec` ≤ runc's + 0.3 s ({latency.MODES[m]})", fmt_s(lat[m]["exec"]["median"]),
                     f"runc {fmt_s(runc_exec)}", _le(over, latency.GOAL_EXEC_OVER_RUNC, "s")))
        for d, what in (("in", "host → process"), ("out", "process → host")):
            v = lat[m]["stdio"][d]["median"]
            r = (lat.get("runc") or {}).get("stdio", {}).get(d, {}).get("median")
            rows.append((f"stdio ≥ 50 MB/s, {what} ({latency.MODES[m]}, `exec`)",
                         "-" if v is None else f"{v:.1f} MB/s", "-" if r is None else f"runc {r:.0f} MB/s",
                         _ge(v, latency.GOAL_STDIO_MBS, "MB/s")))
    for mode, r in (res.get("density") or {}).items():
        if mode == "runc":
            continue
        reached = r.get("reached", 0)
        asked = max(r.get("checkpoints_asked") or [0])
        verdict = ("met" if reached >= density.GOAL_N else
                   f"reached {reached}" + (f": {r['stopped_early']}" if r.get("stopped_early") else
                                           f" (this run asked for {asked})"))
        rows.append((f"{density.GOAL_N} idle sandboxes without running out of memory ({density.LABELS[mode]})",
                     f"{reached} started", "", verdict))
        if mode == "kata_tpl" and r.get("points"):
            last = r["points"][-1]
            v = last["pss_per_sandbox"] / MB
            at = "" if last["n"] >= density.GOAL_N else f" (at N={last['n']}, not 50)"
            runc = ((res.get("density") or {}).get("runc") or {}).get("points") or []
            rows.append((f"template: host PSS ≤ {density.GOAL_TPL_PSS_MB:g} MB per sandbox at N = 50",
                         f"{v:.1f} MB at N={last['n']}", "" if not runc else
                         f"runc {runc[-1]['pss_per_sandbox'] / MB:.1f} MB at N={runc[-1]['n']}",
                         _le(v, density.GOAL_TPL_PSS_MB, "MB") + at))
    return rows


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def render_markdown(res: dict[str, Any]) -> str:
    f = res["host"]
    load = res.get("loads") or {}
    lines = [f"Host: {f.get('cpu', '?')}, {f.get('cores')} cores, {f.get('mem_total_gib')} GiB; QEMU "
             f"{f.get('qemu_version', '?')}, machine {f.get('machine', '?')}, guest {f.get('vcpus')} vCPU / "
             f"{f.get('guest_mem_mib')} MiB; host kernel {f.get('host_kernel')}; runc {f.get('runc_version', '?')}; "
             f"kata_runtime at {str(f.get('commit', '?'))[:10]}"
             + (f" + {f['uncommitted_files']} uncommitted file(s)" if f.get("uncommitted_files") else "") + ". "
             f"{res.get('finished', '')[:16].replace('T', ' ')} UTC; {'short mode; ' if res.get('short') else ''}"
             f"sections {', '.join(res['sections'])}; {res.get('seconds', 0) / 60:.0f} min in all. Load average "
             f"(1/5/15 min) {'/'.join(map(str, res['load_start']))} at the start, "
             f"{'/'.join(map(str, res.get('load_end', [])))} at the end"
             + ("; at each section's end: " + ", ".join(f"{k} {v[0]}" for k, v in load.items()) if load else "")
             + " (2 cores shared with other people's work: compare ratios measured in this run).", ""]
    rows = goals(res)
    if rows:
        lines += ["| goal (issue 11) | this run | beside it | verdict |", "| --- | --- | --- | --- |"]
        lines += [f"| {g} | {v} | {b} | {d} |" for g, v, b, d in rows]
        lines.append("")
    if res.get("start"):
        lines += ["### Start time and the memory of one idle container", "", start.render_markdown(res["start"])]
    if res.get("latency"):
        lines += ["### Latency and stdio through the shim", "", latency.render(res["latency"])]
    if res.get("density"):
        lines += ["### Density: idle sandboxes one after another", "", density.render(res["density"])]
    for name in OTHERS:
        if res.get(name):
            lines += [f"### `{name}.py`", "", _render_other(name, res[name])]
    if res.get("plots"):
        lines += ["Plots: " + ", ".join(res["plots"]), ""]
    left = res.get("left_behind") or []
    lines.append("Clean-up: " + ("nothing of ours was left behind." if not left else
                                 f"had to remove by force: {', '.join(left)}."))
    if res.get("still_left"):
        lines.append(f"STILL LEFT after the clean-up: {', '.join(res['still_left'])}.")
    if res.get("error"):
        lines.append(f"Error: {res['error']}")
    return "\n".join(lines) + "\n"


def _render_other(name: str, r: dict[str, Any]) -> str:
    """The other benchmark's tables, rebuilt from its JSON by its own renderer (else as it printed them)."""
    status = "" if r.get("exit_status") in (0, None) else f"\n\n`{name}.py` exited {r['exit_status']}."
    try:
        if name == "network":
            from benchmarks import network

            return network.render(r) + status
        if name == "soak":
            from benchmarks import soak

            return soak.render(r) + status
        mod: Any
        if name == "engines":
            from benchmarks import engines as mod
        else:
            from benchmarks import pods as mod
        r = dict(r, summary=mod.summarize(r))
        return str(mod.render_markdown(r)) + status
    except Exception:  # noqa: BLE001 - a JSON of another version: show what it printed
        return str(r.get("markdown") or r.get("error") or "(no result)") + status


def failures(res: dict[str, Any]) -> list[str]:
    """Runs that failed and things left behind (numbers that miss a goal are not failures)."""
    out = []
    st = res.get("start")
    if st:
        n = st["summary"]["n"]
        out += [f"start: no successful {k} run" for k in ("bare", "kata", "runc") if not n[k]]
        if not (st.get("memory") or {}).get("ok"):
            out.append(f"start: memory: {(st.get('memory') or {}).get('error')}")
    if res.get("latency"):
        out += [f"latency: {f}" for f in res["latency"]["summary"]["failures"]]
    for mode, r in (res.get("density") or {}).items():
        out += [f"density {mode}: start {s['n']}: {s.get('error')}" for s in r["starts"] if not s["ok"]]
        td = r.get("teardown") or {}
        out += [f"density {mode}: {x}" for x in td.get("failed", []) + td.get("left_behind", [])]
    out += [f"{name}.py exited {res[name]['exit_status']}" for name in OTHERS
            if res.get(name) and res[name].get("exit_status")]
    out += [f"left behind: {x}" for x in res.get("left_behind") or []]
    return out


# ------------------------------------------------------------------------------------------------ main

def finish(res: dict[str, Any], args: argparse.Namespace) -> None:
    """Summaries, plots, tables, JSON."""
    if res.get("start"):
        res["start"]["summary"] = start.summarize(res["start"])
        res["start"]["left_behind"] = res.get("left_behind", [])
        res["start"].setdefault("load_end", res.get("load_end", []))
        res["start"].setdefault("finished", res.get("finished", ""))
    if res.get("latency"):
        res["latency"]["summary"] = latency.summarize(res["latency"])
    if res.get("density"):
        res["density_summary"] = density.summarize(res["density"])
    if args.plots:
        try:
            from benchmarks import plots

            res["plots"] = [str(p) for p in plots.write_all(res, args.plots)]
        except ImportError as e:
            say(f"no plots: {e} (pip install matplotlib)")
            res["plots_error"] = str(e)
    md = render_markdown(res)
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        old: dict[str, Any] = json.loads(args.render.read_text())
        finish(old, argparse.Namespace(**{**vars(args), "json": None}))
        return 0
    refused = needs_root("suite.py", "QEMU's shared mounts, runc, the engines")
    if refused is not None:
        return refused
    compile_checkout()
    unwind_on_signals()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kata-bench-suite."))
    tr = start.Tracker(work=work, runtime=args.runtime, runc=args.runc, kata_root=work / "kata-root",
                       runc_root=work / "runc-root")
    res: dict[str, Any] = {"suite": 1, "started": _now(), "short": args.short, "sections": args.sections,
                           "load_start": loadavg(), "host": host_facts(args.runtime), "loads": {},
                           "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    say(f"work dir {work}; load {res['load_start']}; sections {', '.join(args.sections)}")
    status = guarded(lambda: measure(args, tr, res), res, say, lambda: tr.cleanup_into(res, say))
    if status == 0:
        others = Path(tempfile.mkdtemp(prefix="kata-bench-suite-others."))
        try:
            for name in [n for n in OTHERS if n in args.sections]:
                res[name] = run_other(name, args, others)
                res["loads"][name] = loadavg()
        except (KeyboardInterrupt, Interrupted) as e:  # the child cleans up after itself on the same signal
            res["error"] = f"interrupted ({str(e) or 'Ctrl-C'})"
            status = 130
        finally:
            for f in others.iterdir():
                f.unlink()
            others.rmdir()
    res["load_end"] = loadavg()
    res["finished"] = _now()
    res["seconds"] = round(time.monotonic() - t0, 1)
    finish(res, args)
    failed = failures(res)
    if failed:
        say("failed: " + "; ".join(failed[:10]))
    say(f"done in {res['seconds'] / 60:.1f} min")
    return status or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
