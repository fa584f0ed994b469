"""Shared test plumbing: where the runtime is, and the session-wide leak check."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

OUR_PROCESSES = ("qemu-system", "kata-proxy", "kata-shim", "kata-netmon", "kata-vm-cache")


def our_leftovers(marker: str = "") -> list[str]:
    """Our QEMU/proxy/shim processes and /run/kata-containers mounts (optionally only those whose
    command line or path mentions ``marker``)."""
    out = []
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        pid, stat, args = (line.split(None, 2) + ["", ""])[:3]
        if stat.startswith("Z"):
            continue  # dead; waits for init to reap it
        if any(p in args for p in OUR_PROCESSES) and (not marker or marker in args):
            # not the state: lists taken before and after an operation are compared, and a
            # running QEMU is R in one and S in the other
            out.append(f"process: {pid} {args}")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if point.startswith(("/run/kata-containers", "/run/vc", "/run/netns/kata-")) and \
                    (not marker or marker in point):
                out.append("mount: " + point)
    if not marker:
        for d, pattern in ((Path("/run/netns"), "kata-*"), (Path("/run/vc/sock"), "*")):
            out += [f"file: {p}" for p in sorted(d.glob(pattern))]
    return out


def sandbox_leftovers(root: Path, cid: str) -> list[str]:
    """What of sandbox ``cid`` under ``root`` is left on the host: state, sockets, network
    namespace, shared directory."""
    from kata_runtime.store import SandboxStore

    store = SandboxStore(root)
    paths = [store.sandbox_dir(cid), store.vm_dir(cid), store.socket_dir(cid),
             Path("/run/netns") / f"kata-{store.digest(cid)}", Path("/run/kata-containers/shared/sandboxes") / cid]
    return [f"{p} of {cid}" for p in paths if p.exists() or p.is_symlink()]


@pytest.fixture(scope="session", autouse=True)
def no_leftovers_at_end() -> Iterator[None]:
    """Fails the session if anything of ours is still around after all tests."""
    yield
    left = our_leftovers()
    assert not left, "left behind after the tests:\n" + "\n".join(left)
