"""Hypervisors: the :class:`Hypervisor` protocol the sandbox uses, QEMU its implementation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kata_runtime.resources import VMSize
    from kata_runtime.store import ProcRef


class Hypervisor(Protocol):
    """One VM: start it, stop it, say whether it still runs, plug devices, vCPUs and memory into it.

    ``proc`` is the VM's process once launched (or adopted); ``channel`` the host end of the
    agent's channel, ``console`` the guest console's log."""

    proc: ProcRef | None

    @property
    def channel(self) -> Path: ...

    @property
    def console(self) -> Path: ...

    def use_template_ram(self, memory: Path) -> None:
        """Start as a clone of a VM template whose RAM is in ``memory`` (mapped copy-on-write),
        paused until :meth:`restore`."""

    def launch(self, config_source: str = "") -> int:
        """Start the VM; return its process id once its sockets listen."""

    def restore(self, state: Path) -> None:
        """Load a template's device state into a clone and let it run."""

    def adopt(self) -> bool:
        """Find a VM that was launched but not recorded (its launcher was killed); True if found."""

    def console_tail(self, lines: int = 3) -> str: ...

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the VM down (escalating to SIGKILL) and make sure its process is gone."""

    def alive(self) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def hotplug_nic(self, index: int, tap: str, mac: str, fd: int | None = None) -> None:
        """Plug a NIC with MAC ``mac`` into slot ``index``, backed by tap device ``tap`` (or, with
        ``fd``, by that open tap: the VM takes its own copy)."""

    def unplug_nic(self, index: int) -> None: ...

    def current_size(self) -> VMSize:
        """The vCPUs and memory (MiB) the running VM has, hotplugged ones included."""

    def hotplug_vcpus(self, count: int) -> None:
        """Add ``count`` vCPUs; return once the guest has taken them (offline: the agent onlines them)."""

    def hotplug_memory(self, mib: int) -> None:
        """Add ``mib`` MiB of memory (a whole number of guest memory blocks); return once the guest
        has taken it."""
