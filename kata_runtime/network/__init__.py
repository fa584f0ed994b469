"""The sandbox's network on the host: its network namespace (:mod:`netns`), what an engine put in
it (:mod:`endpoints`), and the two ways of connecting an interface there to the VM, Kata 1.x's
internetworking models :mod:`tcfilter` and :mod:`macvtap` (``none``: the guest has only ``lo``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kata_runtime.network.endpoints import Endpoint, Route

MODELS = ("tcfilter", "macvtap", "none")

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

