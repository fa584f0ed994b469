"""Kata 1.x's ``tcfilter`` model: in the sandbox's network namespace, a tap beside each veth
(or any other interface the engine put there), and tc ingress + mirred redirecting every frame
both ways between the two. QEMU opens the tap (it runs in the namespace); the guest's NIC gets
the veth's MAC, addresses, MTU and routes, so that the guest's ``eth0`` is the veth's twin.

pyroute2 costs about 0.3 s to import: it is imported only when a namespace is connected or
disconnected, never by the other commands.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from kata_runtime.network import netns

TAP_SUFFIX = "_kata"
_ETH_P_ALL = 0x0003
_INGRESS = 0xFFFF0000
_RT_TABLE_MAIN = 254
_RTPROT_KERNEL = 2


@dataclass
class Address:
    address: str
    prefix: int
    family: int  # 4 or 6


@dataclass
class Endpoint:
    """One interface of the namespace, connected to the VM through a tap of ours."""

    name: str  # the engine's interface (veth) in the namespace, and the guest's interface name
    mac: str
    mtu: int
    addresses: list[Address] = field(default_factory=list)
    tap: str = ""
    index: int = 0  # our slot: QEMU ids net<index>, and the PCIe root port it is plugged into

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        d = dict(d)
        d["addresses"] = [Address(**a) for a in d.get("addresses", [])]
        return cls(**d)


@dataclass
class Route:
    dest: str  # "" for the default route, else "addr/prefix"
    gateway: str
    device: str  # interface name (the guest's is the same)
    source: str
    scope: int


@contextlib.contextmanager
def _ipr(netns_path: str) -> Iterator[Any]:
    """An rtnetlink connection in the namespace, with this thread in it for the whole block (a tap
    is made with an ioctl on /dev/net/tun, in the caller's namespace). pyroute2's own ``netns=``
    forks a helper that it ends with SIGTERM: a fork of the runtime, which must never run the
    runtime's signal handlers or its undo path."""
    from pyroute2 import IPRoute

    with netns.entered(netns_path), IPRoute() as ipr:
        yield ipr


def _kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def has_interfaces(netns_path: str) -> bool:
    """Whether the namespace has any interface but ``lo`` (cheap: no pyroute2 import)."""
    with netns.entered(netns_path):
        return any(name != "lo" for _index, name in socket.if_nameindex())


def scan(netns_path: str) -> tuple[list[Endpoint], list[Route]]:
    """The interfaces an engine put in the namespace (all but ``lo`` and our taps), with their
    addresses, and the routes of the main table through them (not the ones the kernel made for
    an address: the guest's kernel makes those itself)."""
    if not has_interfaces(netns_path):
        return [], []  # docker's --net=none, an empty CNI namespace: no pyroute2 (0.3 s) for nothing
    with _ipr(netns_path) as ipr:
        links = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo" or name.endswith(TAP_SUFFIX) or _kind(link) in ("tun", "ipip", "sit", "gre"):
                continue
            if link.get_attr("IFLA_ADDRESS") in (None, "00:00:00:00:00:00"):
                continue
            links[link["index"]] = Endpoint(name=name, mac=link.get_attr("IFLA_ADDRESS"),
                                            mtu=int(link.get_attr("IFLA_MTU") or 1500))
        for a in ipr.get_addr():
            ep = links.get(a["index"])
            if ep is None or a["scope"] != 0:  # global only: link-local addresses the guest makes itself
                continue
            family = 4 if a["family"] == socket.AF_INET else 6
            ep.addresses.append(Address(a.get_attr("IFA_ADDRESS"), int(a["prefixlen"]), family))
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=family, table=_RT_TABLE_MAIN):
                ep = links.get(r.get_attr("RTA_OIF"))
                if ep is None or r["proto"] == _RTPROT_KERNEL:
                    continue
                dst = r.get_attr("RTA_DST")
                routes.append(Route(dest=f"{dst}/{r['dst_len']}" if dst else "",
                                    gateway=r.get_attr("RTA_GATEWAY") or "", device=ep.name,
                                    source=r.get_attr("RTA_PREFSRC") or "", scope=int(r["scope"])))
    return list(links.values()), routes


def attach(netns_path: str, ep: Endpoint) -> None:
    """Make ``ep.tap`` and redirect all traffic both ways between it and ``ep.name``."""
    with _ipr(netns_path) as ipr:
        ipr.link("add", ifname=ep.tap, kind="tuntap", mode="tap")
        tap = ipr.link_lookup(ifname=ep.tap)[0]
        veth = ipr.link_lookup(ifname=ep.name)[0]
        ipr.link("set", index=tap, mtu=ep.mtu, state="up")
        for dev, to in ((veth, tap), (tap, veth)):
            ipr.tc("add", "ingress", dev, _INGRESS)
            ipr.tc("add-filter", "u32", dev, parent=_INGRESS, protocol=_ETH_P_ALL, target=0x10000,
                   keys=["0x0/0x0+0"],
                   action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": to})


def detach(netns_path: str, ep: Endpoint) -> None:
    """Undo :func:`attach` (what is already gone is fine): the veth's ingress qdisc (and with it
    the filter) and the tap."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr(netns_path) as ipr:
        for name in (ep.name, ep.tap):
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            try:
                ipr.tc("del", "ingress", found[0], _INGRESS)
            except NetlinkError:
                pass  # no ingress qdisc (attach failed before it)
        found = ipr.link_lookup(ifname=ep.tap)
        if found:
            ipr.link("del", index=found[0])
