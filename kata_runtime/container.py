"""Lifecycle operations on containers: the library the CLI calls (one function per command).

Every function takes a :class:`RuntimeOptions`, raises only :class:`kata_runtime.errors.KataError`
subclasses for conditions a user can meet, and leaves nothing behind when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kata_runtime.oci.state import ContainerState

DEFAULT_ROOT = Path("/run/vc")


@dataclass
class RuntimeOptions:
    """Global flags of the CLI, resolved."""

    root: Path = DEFAULT_ROOT
    kata_config: Path | None = None  # --kata-config; None = the standard search path
    debug: bool = False
    systemd_cgroup: bool = False


def create(opts: RuntimeOptions, cid: str, bundle: Path, *, pid_file: Path | None = None,
           console_socket: Path | None = None, no_pivot: bool = False) -> ContainerState:
    """Boot the sandbox VM (if the container is its own sandbox), create the container in it,
    start its kata-shim (which keeps this process's stdio) and return once it is ``created``.
    The shim's pid goes to ``pid_file``."""
    raise NotImplementedError


def start(opts: RuntimeOptions, cid: str) -> None:
    """Start the user process of a ``created`` container."""
    raise NotImplementedError


def state(opts: RuntimeOptions, cid: str) -> ContainerState:
    """The container's current state (status refreshed from the liveness of shim and VM)."""
    raise NotImplementedError


def kill(opts: RuntimeOptions, cid: str, signal: int, *, all_processes: bool = False) -> None:
    """Send ``signal`` to the container's init process (or to all its processes)."""
    raise NotImplementedError


def delete(opts: RuntimeOptions, cid: str, *, force: bool = False) -> None:
    """Remove the container and, when it is the last of its sandbox, the VM and everything else."""
    raise NotImplementedError


def run(opts: RuntimeOptions, cid: str, bundle: Path, *, pid_file: Path | None = None,
        console_socket: Path | None = None, detach: bool = False, no_pivot: bool = False) -> int:
    """create + start; in the foreground wait for the workload, delete the container and return
    its exit status (128+N when killed by signal N). Detached, return 0 once it runs."""
    raise NotImplementedError


def exec_process(opts: RuntimeOptions, cid: str, process: dict[str, Any], *, detach: bool = False,
                 pid_file: Path | None = None, console_socket: Path | None = None) -> int:
    """Run an extra process (a full OCI ``process`` object) in a running container. Foreground:
    return its exit status. Detached: return 0 once it runs; its kata-shim's pid goes to
    ``pid_file``."""
    raise NotImplementedError


def container_process(opts: RuntimeOptions, cid: str) -> dict[str, Any]:
    """The container's own OCI ``process`` object, the base that ``exec ARGS...`` modifies."""
    raise NotImplementedError


def list_containers(opts: RuntimeOptions) -> list[ContainerState]:
    """Every container under ``opts.root``, sorted by creation time."""
    raise NotImplementedError
