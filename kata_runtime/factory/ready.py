"""Waiting for a VM's guest agent: one loop for every way a VM is made (a sandbox's cold boot or
clone, the VM template, the VM cache's VMs)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kata_runtime.errors import AgentError, HypervisorError

if TYPE_CHECKING:
    import threading

    from kata_runtime.agent import AgentClient
    from kata_runtime.hypervisor import Hypervisor


def wait_agent(agent: AgentClient, vm: Hypervisor, timeout: float, who: str, step: str,
               stop: threading.Event | None = None) -> None:
    """Return once the agent answers a ``Check``. HypervisorError as soon as the VM's process is
    gone, AgentError after ``timeout`` seconds; both name ``who`` and ``step`` and end with the
    last lines of the guest's console. ``stop``, once set, ends the wait early with an AgentError."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            tail = vm.console_tail()
            why = "stopped" if left > 0 else f"did not answer within {timeout:g}s"
            raise AgentError(f"guest agent {why} (console: {vm.console}{': ' + tail if tail else ''})",
                             container=who, step=step)
        try:
            agent.check(min(left, 1.0))
            return
        except AgentError:
            if not vm.alive():
                tail = vm.console_tail()
                raise HypervisorError(f"the VM exited while booting (console {vm.console}"
                                      f"{': ' + tail if tail else ''})", container=who, step=step) from None
