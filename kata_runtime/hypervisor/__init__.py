"""Hypervisors: the :class:`Hypervisor` protocol the sandbox uses, QEMU its implementation."""

from __future__ import annotations

from typing import Protocol


class Hypervisor(Protocol):
    """One VM: start it, stop it, and say whether it still runs."""

    def launch(self, config_source: str = "") -> int:
        """Start the VM; return its process id once its sockets listen."""

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the VM down (escalating to SIGKILL) and make sure its process is gone."""

    def alive(self) -> bool: ...

    def pause(self) -> None: ...

    def hotplug_nic(self, index: int, tap: str, mac: str) -> None:
        """Plug a NIC with MAC ``mac`` backed by tap device ``tap`` into slot ``index``."""

    def unplug_nic(self, index: int) -> None: ...

    def resume(self) -> None: ...
