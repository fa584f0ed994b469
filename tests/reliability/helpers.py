"""Checks shared by the reliability tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import Kata, Result


def ensure_template(cfg: Path) -> None:
    """Put the module's template back if a fault made it look broken (and so removed it)."""
    import subprocess
    import tomllib

    where = Path(tomllib.loads(cfg.read_text())["factory"]["template_path"])
    if not where.exists():
        subprocess.run(["cp", "-a", str(where.with_name("saved")), str(where)], check=True)


def host_cgroups(path: str) -> list[str]:
    """The directories of cgroup ``path`` (absolute within each hierarchy) that exist on the host."""
    from kata_runtime import cgroups

    return [f"cgroup: {d}" for h in cgroups.hierarchies()
            if (d := Path(h.mount) / path.lstrip("/")).exists()]


def leftovers(kata: Kata, cid: str, cgroup: str = "") -> list[str]:
    """Everything of ``cid`` on the host and in ``kata``'s root: processes, mounts, state, sockets,
    netns, shared directory, a pod membership, its host cgroup (``cgroup``, or where a spec without
    ``linux.cgroupsPath`` puts it)."""
    left = our_leftovers(cid) + sandbox_leftovers(kata.root, cid) + host_cgroups(cgroup or f"/vc/{cid}")
    member = kata.root / "ctr" / cid
    if member.exists():
        left.append(f"file: {member}")
    return left


def one_clear_line(r: Result, cid: str = "") -> str:
    """The single error line of a refusal: non-zero exit, no traceback, ``kata-runtime: `` first."""
    assert r.rc != 0, f"expected a refusal, got rc 0: {r.out!r}"
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {r.err!r}"
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    assert lines[0].startswith("kata-runtime: "), lines[0]
    if cid:
        assert cid in lines[0], lines[0]
    return lines[0]


def settled(check: Callable[[], list[str]], timeout: float = 10.0) -> list[str]:
    """``check()`` once it is empty, or what it still says after ``timeout`` (processes that were
    killed take a moment to be reaped)."""
    deadline = time.monotonic() + timeout
    left = check()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = check()
    return left
