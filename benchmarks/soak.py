"""Soak: N container lifecycles (create, start, exec, kill, delete) one after another, from a VM
template, with the host sampled before and after: MemAvailable, the host's open files
(/proc/sys/fs/file-nr), our processes (QEMU, kata-proxy, kata-shim, kata-netmon), the open fds of
the runtime's processes, network namespaces and mounts of ours. Nothing may grow.

    python benchmarks/soak.py            # 500 lifecycles
    python benchmarks/soak.py --short    # 50 (CI, as a section of suite.py --short)

Prints one JSON object (and writes it to --json, its table to --markdown); exits 1 when a
lifecycle failed or something grew.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_runc, default_runtime, factory_config, make_bundle  # noqa: E402
from kata_runtime.store import SandboxStore  # noqa: E402

OURS = ("qemu-system", "kata-proxy", "kata-shim", "kata-netmon")  # as tests/conftest.py names them
# what a sample may differ by without counting as growth: the page cache and other engineers'
# work move MemAvailable and file-nr on a shared host
SLACK = {"mem_available_mb": 150, "host_open_files": 300, "our_processes": 0, "our_fds": 0, "netns": 0,
         "mounts": 0}


def sample(marker: str, namespaces: list[str]) -> dict[str, int]:
    """The host now. Processes (and their fds) and mounts count only when they name ``marker`` (the
    soak's ids), network namespaces only when they are ``namespaces`` (those of the soak's ids):
    other users of a shared host come and go."""
    with open("/proc/meminfo") as f:
        mem = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    with open("/proc/sys/fs/file-nr") as f:
        open_files = int(f.read().split()[0])
    procs, fds = 0, 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace")
            if marker in argv and any(o in argv for o in OURS):
                procs += 1
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for line in f if marker in line.split()[4])
    netns = sum(1 for n in namespaces if os.path.exists(n))
    return {"mem_available_mb": mem // 1000, "host_open_files": open_files, "our_processes": procs, "our_fds": fds,
            "netns": netns, "mounts": mounts}


def kata(base: list[str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def lifecycle(base: list[str], bundle: Path, cid: str) -> str:
    """One lifecycle; "" when it went well, else what failed (the container is deleted anyway)."""
    problem = ""
    for step in (["create", "--bundle", str(bundle), cid], ["start", cid], ["exec", cid, "true"],
                 ["kill", cid, "KILL"]):
        if step[0] == "create":  # it hands its stdio to the shim: a file, not a pipe that stays open
            with tempfile.TemporaryFile("w+") as err:
                r = subprocess.run(base + step, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                   text=True, timeout=300)
                err.seek(0)
                r.stderr = err.read()
        else:
            r = kata(base, *step)
        if r.returncode != 0:
            problem = f"{step[0]}: {r.stderr.strip()}"
            break
    r = kata(base, "delete", "--force", cid)
    if r.returncode != 0:
        problem = problem or f"delete: {r.stderr.strip()}"
    return problem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=500, help="lifecycles (default 500)")
    ap.add_argument("--short", action="store_true", help="50 lifecycles")
    ap.add_argument("--runtime", default=default_runtime())
    ap.add_argument("--no-template", action="store_true", help="boot every VM cold")
    ap.add_argument("--json", type=Path, help="write the result here too")
    ap.add_argument("--markdown", type=Path, help="write its table here")
    ap.add_argument("--runc", help="(suite.py passes it to every benchmark; the soak runs no runc container)")
    args = ap.parse_args()
    n = 50 if args.short else args.n
    with tempfile.TemporaryDirectory(prefix="kata-soak-") as tmp_dir, \
            tempfile.TemporaryDirectory(prefix="kata-soak-", dir="/dev/shm") as shm:
        tmp = Path(tmp_dir)
        base = [args.runtime, "--root", str(tmp / "root")]
        if not args.no_template:
            conf = tmp / "configuration.toml"
            conf.write_text(factory_config(enable_template=True, template_path=f"{shm}/template"))
            base += ["--kata-config", str(conf)]
            r = kata(base, "factory", "init")
            if r.returncode != 0:
                print(f"soak: factory init: {r.stderr.strip()}", file=sys.stderr)
                return 1
        bundle = tmp / "bundle"
        make_bundle(bundle, ["sleep", "1000"], None, default_runc())
        prefix = "soak" + uuid.uuid4().hex[:6]
        lifecycle(base, bundle, f"{prefix}-warm")  # page cache and first-use costs before the first sample
        ids = [f"{prefix}-{i}" for i in range(n)]
        namespaces = [f"/run/netns/kata-{SandboxStore(tmp / 'root').digest(i)}" for i in ids]
        before = sample(prefix, namespaces)
        failures: list[str] = []
        t0 = time.monotonic()
        for cid in ids:
            problem = lifecycle(base, bundle, cid)
            if problem:
                failures.append(f"{cid} {problem}")
        took = time.monotonic() - t0
        time.sleep(1.0)  # killed processes are reaped
        after = sample(prefix, namespaces)
        if not args.no_template:
            kata(base, "factory", "destroy")
    growth = {k: after[k] - before[k] for k in before}
    grew = {k: v for k, v in growth.items() if (-v if k == "mem_available_mb" else v) > SLACK[k]}
    result: dict[str, Any] = {"lifecycles": n, "seconds": round(took, 1), "per_lifecycle_s": round(took / n, 2),
                              "failures": len(failures), "first_failures": failures[:5], "before": before,
                              "after": after, "growth": growth, "grew": grew}
    result["template"] = not args.no_template
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(render(result))
    return 1 if failures or grew else 0


LABELS = {"mem_available_mb": "host MemAvailable (MB)", "host_open_files": "host open files (file-nr)",
          "our_processes": "our processes (QEMU, proxy, shim, netmon)", "our_fds": "their open fds",
          "netns": "network namespaces of ours", "mounts": "mounts of ours"}


def render(r: dict[str, Any]) -> str:
    """The soak's table: each sample before and after, and whether it grew beyond its slack."""
    mode = "VMs from a template" if r.get("template", True) else "cold boots"
    lines = [f"{r['lifecycles']} lifecycles (create, start, exec `true`, kill, delete; {mode}) in {r['seconds']} s, "
             f"{r['per_lifecycle_s']} s each; {r['failures']} failed"
             + (f" (first: {'; '.join(r['first_failures'])})" if r["failures"] else "") + ".", "",
             "| sampled | before | after | growth | allowed |", "| --- | ---: | ---: | ---: | ---: |"]
    for k, label in LABELS.items():
        allowed = f"-{SLACK[k]}" if k == "mem_available_mb" else f"+{SLACK[k]}"
        lines.append(f"| {label} | {r['before'][k]} | {r['after'][k]} | {r['growth'][k]:+d} | {allowed} |")
    lines += ["", "Nothing grew." if not r["grew"] else f"GREW: {r['grew']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
