"""Where this package comes from: the git commit of the tree it runs from (``version``, ``kata-env``)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def commit() -> str:
    """The git commit of the source tree this package runs from, or ``unknown`` when installed."""
    top = Path(__file__).resolve().parent.parent
    if not (top / ".git").exists():
        return "unknown"
    try:
        out = subprocess.run(["git", "-C", str(top), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
