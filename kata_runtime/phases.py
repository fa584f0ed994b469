"""Phase timing for the benchmark: debug log lines ``phase <name> <seconds since this process started>``."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("kata_runtime.phases")


def since_process_start() -> float:
    """Seconds since this process was exec'd (from /proc: includes the interpreter's start)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def phase(name: str) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("phase %s %.3f", name, since_process_start())
