"""The sandbox's network on the host: its network namespace (:mod:`netns`), what an engine put in
it (:mod:`endpoints`), and the two ways of connecting an interface there to the VM, Kata 1.x's
internetworking models :mod:`tcfilter` and :mod:`macvtap` (``none``: the guest has only ``lo``).
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kata_runtime.network.endpoints import Endpoint, Route

MODELS = ("tcfilter", "macvtap", "none")

# Tests only: a shell command run (and waited for) after an interface's device is made and
# before it is hotplugged, with KATA_NETNS and KATA_TAP in its environment. It lets a test make
# QEMU refuse the tap, or kill the runtime at that very point.
TEST_HOOK_BEFORE_HOTPLUG = "KATA_TEST_HOOK_BEFORE_HOTPLUG"


class NetworkModel(Protocol):
    """How an interface of the namespace is connected to the VM (the modules of the models)."""

    def prepare(self, ep: Endpoint, routes: list[Route]) -> None:
        """Fill in ``ep`` what its record must say before :meth:`attach` changes anything."""

    def attach(self, netns_path: str, ep: Endpoint) -> int | None:
        """Make ``ep.tap`` for the VM; return an open file descriptor for QEMU, or None when QEMU
        opens ``ep.tap`` by name."""

    def detach(self, netns_path: str, ep: Endpoint) -> None:
        """Undo :meth:`attach`, whatever part of it was done."""


def model(name: str) -> NetworkModel:
    """The module of internetworking model ``name`` (``tcfilter`` or ``macvtap``)."""
    if name == "macvtap":
        from kata_runtime.network import macvtap

        return macvtap
    from kata_runtime.network import tcfilter

    return tcfilter


def run_test_hook(netns_path: str, tap: str) -> None:
    """Run the command of :data:`TEST_HOOK_BEFORE_HOTPLUG`, if the environment has one."""
    command = os.environ.get(TEST_HOOK_BEFORE_HOTPLUG)
    if command:
        subprocess.run(["/bin/sh", "-c", command], env={**os.environ, "KATA_NETNS": netns_path, "KATA_TAP": tap},
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
