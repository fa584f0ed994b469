"""OCI conformance: opencontainers/runtime-tools' ``validation/`` programs against kata-runtime and
runc, one program at a time, and a table of the checks each passes (README "OCI spec in a VM").

runtime-tools is not part of this repository: build it yourself, outside the tree (it needs Go; its
``go.mod`` asks for 1.21, Debian 12 has 1.19, see README), then

    python benchmarks/runtime_tools.py --tools /tmp/rt            # kata-runtime and runc
    python benchmarks/runtime_tools.py --tools /tmp/rt --only kill state

Each program is run from the checkout (it reads ``runtimetest`` and ``rootfs-amd64.tar.gz`` there)
with ``RUNTIME`` set; kata-runtime gets a configuration with VM templates (``KATA_CONF_FILE``), so
that each container starts from a clone. A check is a TAP ``ok``/``not ok`` line; skips are counted
apart; a program that printed no plan, or exited non-zero with no check, counts as one failure, and
so does one with no check and an error diagnostic (how the hook programs say that they failed).
Prints the Markdown table; ``--json F`` also writes every program's counts and its stderr's tail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_runc, default_runtime, factory_config  # noqa: E402

_OK = re.compile(r"^ok \d+", re.M)
_NOT_OK = re.compile(r"^not ok \d+", re.M)
_SKIP = re.compile(r"^ok \d+.*# skip", re.M | re.I)
_PLAN = re.compile(r"^1\.\.(\d+)", re.M)


def tap_counts(text: str, rc: int) -> dict[str, int]:
    """Passed (not skipped), failed and skipped checks of one program's TAP output."""
    ok, skip = len(_OK.findall(text)), len(_SKIP.findall(text))
    failed = len(_NOT_OK.findall(text))
    plan = _PLAN.search(text)
    if not plan or (rc != 0 and ok + failed == 0):
        failed = max(failed, 1)  # it could not run its checks
    elif plan.group(1) == "0" and '"error":' in text:
        failed = 1  # the hook programs report their one verdict as an error diagnostic, with no check
    return {"passed": ok - skip, "failed": failed, "skipped": skip}


def run_one(tools: Path, program: Path, runtime: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(program)], cwd=tools, env={**env, "RUNTIME": runtime}, capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        out, err, rc = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired:
        out, err, rc = "", f"timed out after {timeout:.0f}s", -1
    res: dict[str, Any] = tap_counts(out, rc)
    res.update(rc=rc, seconds=round(time.monotonic() - t0, 1), stderr=err.strip().splitlines()[-3:])
    return res


def cell(r: dict[str, Any]) -> str:
    total = r["passed"] + r["failed"]
    return f"{r['passed']}/{total}" + (f" ({r['skipped']} skipped)" if r["skipped"] else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", type=Path, required=True, help="a runtime-tools checkout with the programs built")
    ap.add_argument("--runtime", default=default_runtime())
    ap.add_argument("--runc", default=default_runc(), help="the reference ('' to leave it out)")
    ap.add_argument("--only", nargs="*", default=[], help="program names (default: all of validation/)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    programs = sorted(args.tools.glob("validation/*/*.t"))
    if args.only:
        programs = [p for p in programs if p.stem in args.only]
    if not programs or not (args.tools / "runtimetest").exists():
        print(f"runtime_tools: no runtimetest and validation/*/*.t in {args.tools}: build them first "
              "(make runtimetest validation-executables)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kata-rt-") as tmp:
        env = dict(os.environ)
        config = factory_config(enable_template=True, template_path=f"/dev/shm/{Path(tmp).name}-template")
        if config:
            (Path(tmp) / "configuration.toml").write_text(config)
            env["KATA_CONF_FILE"] = str(Path(tmp) / "configuration.toml")
        runtimes = {"kata-runtime": args.runtime, **({"runc": args.runc} if args.runc else {})}
        results: dict[str, dict[str, Any]] = {}
        try:
            for prog in programs:
                results[prog.stem] = {name: run_one(args.tools, prog, rt, env, args.timeout)
                                      for name, rt in runtimes.items()}
                print(f"{prog.stem}: " + ", ".join(f"{n} {cell(r)}" for n, r in results[prog.stem].items()),
                      file=sys.stderr)
        finally:
            subprocess.run([args.runtime, "factory", "destroy"], env=env, capture_output=True)
    names = list(runtimes)
    print("| program | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for prog, rs in results.items():
        print(f"| `{prog}` | " + " | ".join(cell(rs[n]) for n in names) + " |")
    totals = {n: sum(rs[n]["passed"] for rs in results.values()) for n in names}
    checks = {n: sum(rs[n]["passed"] + rs[n]["failed"] for rs in results.values()) for n in names}
    print("| **checks passed** | " + " | ".join(f"**{totals[n]}/{checks[n]}**" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
