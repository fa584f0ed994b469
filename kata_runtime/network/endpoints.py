"""What the sandbox's network namespace holds, as both networking models see it: the interfaces an
engine put there (each one an :class:`Endpoint` once it is connected to the VM), their
addresses, and the routes through them.

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

TAP_SUFFIX = "_kata"  # our devices in the namespace: tap<index>_kata (a tap or a macvtap)
RT_TABLE_MAIN = 254
_RTPROT_KERNEL = 2
RTNH_F_ONLINK = 4


@dataclass
class Address:
    address: str
    prefix: int
    family: int  # 4 or 6
    broadcast: str = ""


@dataclass
class Route:
    dest: str  # "" for the default route, else "addr/prefix"
    gateway: str
    device: str  # interface name (the guest's is the same)
    source: str
    scope: int
    onlink: bool = False  # the gateway is taken to be on the link whatever the addresses say
    proto: int = 0  # who made it (RTPROT_*) and its metric: kept for giving the route back (macvtap)
    metric: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.dest + self.gateway + self.source else socket.AF_INET

    def for_guest(self) -> dict[str, Any]:
        """The route as the agent takes it (it has no flags: a route ``onlink`` through a gateway
        outside the interface's subnets is refused by the guest's kernel, as with Kata 1.x)."""
        return {"dest": self.dest, "gateway": self.gateway, "device": self.device, "source": self.source,
                "scope": self.scope}


@dataclass
class Endpoint:
    """One interface of the namespace, connected to the VM through a device of ours (``tap``).

    ``model`` says how (``tcfilter`` or ``macvtap``, see those modules). The record of an endpoint
    is written before anything of it is made (write-ahead), so it names what its model may have
    changed in the namespace: ``veth_mac``, ``addresses`` and ``routes`` are what a ``macvtap``
    endpoint takes from the interface and gives back when it is disconnected."""

    name: str  # the engine's interface (veth) in the namespace, and the guest's interface name
    mac: str  # the interface's MAC: the guest NIC's
    mtu: int
    addresses: list[Address] = field(default_factory=list)
    tap: str = ""
    index: int = 0  # our slot: QEMU ids net<index>, and the PCIe root port it is plugged into
    model: str = "tcfilter"
    veth_mac: str = ""  # macvtap: the MAC the interface wears while the macvtap has its own
    routes: list[Route] = field(default_factory=list)  # macvtap: the routes through the interface

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        d = dict(d)
        d["addresses"] = [Address(**a) for a in d.get("addresses", [])]
        d["routes"] = [Route(**r) for r in d.get("routes", [])]
        return cls(**d)


@contextlib.contextmanager
def rtnl(netns_path: str) -> Iterator[Any]:
    """An rtnetlink connection (pyroute2 ``IPRoute``) in the namespace, with this thread in it for
    the whole block (a tap is made with an ioctl on /dev/net/tun, in the caller's namespace).
    pyroute2's own ``netns=`` forks a helper that it ends with SIGTERM: a fork of the runtime,
    which must never run the runtime's signal handlers or its undo path."""
    from pyroute2 import IPRoute

    with netns.entered(netns_path), IPRoute() as ipr:
        yield ipr


def link_index(ipr: Any, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def has_interfaces(netns_path: str) -> bool:
    """Whether the namespace has any interface but ``lo`` (cheap: no pyroute2 import)."""
    with netns.entered(netns_path):
        return any(name != "lo" for _index, name in socket.if_nameindex())


def scan(netns_path: str) -> tuple[list[Endpoint], list[Route]]:
    """The interfaces an engine put in the namespace (all but ``lo`` and our devices), with their
    addresses, and the routes of the main table through them (not the ones the kernel made for
    an address: the guest's kernel makes those itself)."""
    if not has_interfaces(netns_path):
        return [], []  # docker's --net=none, an empty CNI namespace: no pyroute2 (0.3 s) for nothing
    with rtnl(netns_path) as ipr:
        links = {}
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo" or name.endswith(TAP_SUFFIX) or kind(link) in ("tun", "ipip", "sit", "gre"):
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
            # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a point-to-point one
            own = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            ep.addresses.append(Address(own, int(a["prefixlen"]), family, a.get_attr("IFA_BROADCAST") or ""))
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                ep = links.get(r.get_attr("RTA_OIF"))
                if ep is None or r["proto"] == _RTPROT_KERNEL:
                    continue
                dst = r.get_attr("RTA_DST")
                routes.append(Route(dest=f"{dst}/{r['dst_len']}" if dst else "",
                                    gateway=r.get_attr("RTA_GATEWAY") or "", device=ep.name,
                                    source=r.get_attr("RTA_PREFSRC") or "", scope=int(r["scope"]),
                                    onlink=bool(r["flags"] & RTNH_F_ONLINK), proto=int(r["proto"]),
                                    metric=int(r.get_attr("RTA_PRIORITY") or 0)))
    return list(links.values()), routes
