"""kata-shim and kata-proxy run by the thousand: what they import is their memory. These tests
fail when a change makes either of them load a module beyond the small set they need (typing,
collections, enum, re, socket, signal, selectors, argparse... each cost hundreds of kilobytes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {
    "__future__", "_collections_abc", "_socket", "_stat", "_struct", "genericpath", "os", "os.path",
    "posixpath", "select", "stat", "struct", "errno", "_signal", "time",
    "kata_runtime", "kata_runtime.protocol", "kata_runtime.protocol.lightargs",
}


@pytest.mark.parametrize("program, own", [
    ("kata_runtime.shim.main", {"kata_runtime.shim", "kata_runtime.shim.main", "kata_runtime.protocol.shimproto"}),
    ("kata_runtime.proxy.main", {"kata_runtime.proxy", "kata_runtime.proxy.main", "kata_runtime.protocol.mux"}),
    ("kata_runtime.netmon.main", {"kata_runtime.netmon", "kata_runtime.netmon.main"}),
])
def test_programs_import_only_small_modules(program: str, own: set[str]) -> None:
    code = (f"import sys; base = set(sys.modules); sys.path.insert(0, {str(REPO)!r}); import {program}; "
            "print(' '.join(sorted(set(sys.modules) - base)))")
    # -S as kata-runtime starts them: no site packages
    loaded = set(subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    extra = loaded - ALLOWED - own
    assert not extra, f"{program} now imports {sorted(extra)}"


AGENT_ALLOWED = ALLOWED | {"_collections", "_json", "binascii", "fcntl", "itertools"}


def test_agent_serves_on_c_modules_only() -> None:
    """What the guest agent imports before its first answer: the host waits for each module's
    first run under TCG (``json``, ``socket``, ``threading``, ``subprocess``, ``ctypes``... cost
    the start half a second). The rest (gRPC, ctypes, termios) loads later, off that path."""
    mods = ["agent", "channel", "containers", "reaper", "service", "glog", "lite"]
    code = (f"import sys; base = set(sys.modules); sys.path.insert(0, {str(REPO)!r}); "
            + "; ".join(f"import kata_runtime.guest.{m}" for m in mods)
            + "; print(' '.join(sorted(set(sys.modules) - base)))")
    loaded = set(subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    own = {"kata_runtime.guest", "kata_runtime.protocol.mux", "kata_runtime.protocol.shimproto"}
    own |= {f"kata_runtime.guest.{m}" for m in mods}
    extra = loaded - AGENT_ALLOWED - own
    assert not extra, f"the agent now imports {sorted(extra)} before it serves"
