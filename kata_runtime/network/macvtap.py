"""Kata 1.x's ``macvtap`` model: in the sandbox's network namespace, a macvtap (bridge mode) on
top of each veth, whose character device the runtime opens and hands to QEMU (QMP ``getfd``
over SCM_RIGHTS); no tc filters, and no frame crosses the namespace's own stack.

The macvtap takes the veth's MAC (the guest NIC's: the engine's bridge expects traffic from it),
so the veth wears another one meanwhile (a macvlan cannot share its lower device's MAC), and the
veth's addresses go to the guest alone (the namespace's stack would answer ARP for them with
the veth's new MAC). Taking an IPv4 interface's last address makes its kernel drop the routes
through it, so the endpoint's record keeps them too: :func:`detach` gives back the MAC, the
addresses and the routes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from kata_runtime import faults
from kata_runtime.network import netns
from kata_runtime.network.endpoints import RT_TABLE_MAIN, RTNH_F_ONLINK, Endpoint, Route, link_index, rtnl


def missing(proc_devices: Path = Path("/proc/devices"), modules: Path | None = None) -> str:
    """Why this host cannot make macvtap devices, or "" when it can: the driver is in the
    running kernel (its character major is registered) or is a module the kernel can load."""
    try:
        char = proc_devices.read_text().split("Block devices:")[0]
    except OSError:
        char = ""
    if any(line.split()[1:] == ["macvtap"] for line in char.splitlines()):
        return ""
    release = os.uname().release
    modules = modules or Path("/lib/modules") / release
    for listing in ("modules.builtin", "modules.dep"):
        try:
            if "/macvtap.ko" in (modules / listing).read_text():
                return ""
        except OSError:
            continue
    return (f"this host's kernel ({release}) has no macvtap driver (no macvtap in {proc_devices}, "
            f"no macvtap module in {modules})")


def _local_mac() -> str:
    """A random locally administered unicast MAC."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def prepare(ep: Endpoint, routes: list[Route]) -> None:
    """Fill in what the record must say before :func:`attach` changes the veth: the MAC it will
    wear and the routes through it (its addresses are in ``ep`` already)."""
    ep.model = "macvtap"
    ep.veth_mac = _local_mac()
    ep.routes = [r for r in routes if r.device == ep.name]


def attach(netns_path: str, ep: Endpoint) -> int:
    """Make the macvtap ``ep.tap`` on ``ep.name`` with the veth's MAC, take the veth's addresses,
    and return the macvtap's open character device (the caller closes it once QEMU has it)."""
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl(netns_path) as ipr:
        veth = link_index(ipr, ep.name)
        if veth is None:
            raise OSError(errno.ENODEV, f"{ep.name} is gone from the namespace")
        ipr.link("set", index=veth, address=ep.veth_mac)
        ipr.link("add", ifname=ep.tap, kind="macvtap", link=veth, macvtap_mode="bridge", address=ep.mac)
        faults.point("macvtap")
        tap = ipr.link_lookup(ifname=ep.tap)[0]
        ipr.link("set", index=tap, mtu=ep.mtu, state="up")
        for a in ep.addresses:
            try:
                ipr.addr("del", index=veth, address=a.address, prefixlen=a.prefix)
            except NetlinkError as e:
                if e.code != errno.EADDRNOTAVAIL:  # a secondary that went with its primary
                    raise
    return netns.open_device(netns_path, f"class/net/{ep.tap}/macvtap/tap*/dev")


def _route_args(r: Route, oif: int) -> dict[str, Any]:
    args: dict[str, Any] = {"oif": oif, "table": RT_TABLE_MAIN, "scope": r.scope, "family": r.family}
    if r.dest:
        args["dst"] = r.dest
    if r.gateway:
        args["gateway"] = r.gateway
    if r.source:
        args["prefsrc"] = r.source
    if r.onlink:
        args["flags"] = RTNH_F_ONLINK
    if r.proto:
        args["proto"] = r.proto
    if r.metric:
        args["priority"] = r.metric
    return args


def detach(netns_path: str, ep: Endpoint) -> None:
    """Undo :func:`attach`, whatever part of it was done (what is already gone is fine): remove
    the macvtap, give the veth back its MAC, its addresses and the routes through it."""
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl(netns_path) as ipr:
        tap = link_index(ipr, ep.tap)
        if tap is not None:
            ipr.link("del", index=tap)
        veth = link_index(ipr, ep.name)
        if veth is None:
            return  # the engine took the veth away: nothing to give back
        if ep.veth_mac and ipr.get_links(veth)[0].get_attr("IFLA_ADDRESS") == ep.veth_mac:
            ipr.link("set", index=veth, address=ep.mac)
        for a in ep.addresses:
            extra = {"broadcast": a.broadcast} if a.broadcast else {}
            try:
                ipr.addr("add", index=veth, address=a.address, prefixlen=a.prefix, **extra)
            except NetlinkError as e:
                if e.code != errno.EEXIST:  # attach had not taken it yet
                    raise
        for r in sorted(ep.routes, key=lambda r: bool(r.gateway)):  # gateways reachable first
            ipr.route("replace", **_route_args(r, veth))
