"""daemons.kill_network_syncs: it kills kata-netmon's syncs of one sandbox of one state root, and
nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kata_runtime import daemons


def _stand_in(*argv: str) -> subprocess.Popen[bytes]:
    """A process whose command line ends like a sync's (python3 -c ... ARGV)."""
    return subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(60)", *argv])


def test_kills_the_syncs_of_one_sandbox_only(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    mine = _stand_in("--root", str(root), "kata-network", "sync", "sb1")
    configured = _stand_in("--root", str(root), "--kata-config", "/c.toml", "kata-network", "sync", "sb1")
    spared = [_stand_in("--root", str(other), "kata-network", "sync", "sb1"),  # another root's sandbox
              _stand_in("--root", str(root), "kata-network", "sync", "sb10"),  # another sandbox
              _stand_in("--root", str(root), "kata-network", "interfaces", "sb1")]  # not a sync
    try:
        daemons.kill_network_syncs(root, "sb1")
        assert mine.wait(5) == -9 and configured.wait(5) == -9
        assert [p.poll() for p in spared] == [None, None, None]
    finally:
        for p in [mine, configured, *spared]:
            p.kill()
            p.wait()
