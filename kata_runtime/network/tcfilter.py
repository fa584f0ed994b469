"""Kata 1.x's ``tcfilter`` model: in the sandbox's network namespace, a tap beside each veth
(or any other interface the engine put there), and tc ingress + mirred redirecting every frame
both ways between the two. QEMU opens the tap by name (it runs in the namespace); the guest's
NIC gets the veth's MAC, addresses, MTU and routes, so that the guest's ``eth0`` is the veth's
twin. The veth itself is left as the engine made it.
"""

from __future__ import annotations

import fcntl
import os
import struct

from kata_runtime import faults
from kata_runtime.network import netns
from kata_runtime.network.endpoints import Endpoint, Route, link_index, rtnl

_ETH_P_ALL = 0x0003
_INGRESS = 0xFFFF0000
_TUNSETIFF = 0x400454CA
_IFF_TAP, _IFF_NO_PI, _IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


def prepare(ep: Endpoint, routes: list[Route]) -> None:
    """Fill in what the record must say before :func:`attach` (nothing of the veth changes)."""
    ep.model = "tcfilter"


def attach(netns_path: str, ep: Endpoint) -> int | None:
    """Make ``ep.tap`` and redirect all traffic both ways between it and ``ep.name``. QEMU opens
    the tap by name: no file descriptor to hand over (None)."""
    with rtnl(netns_path) as ipr:
        ipr.link("add", ifname=ep.tap, kind="tuntap", mode="tap")
        faults.point("tap")
        tap = ipr.link_lookup(ifname=ep.tap)[0]
        veth = ipr.link_lookup(ifname=ep.name)[0]
        ipr.link("set", index=tap, mtu=ep.mtu, state="up")
        for dev, to in ((veth, tap), (tap, veth)):
            ipr.tc("add", "ingress", dev, _INGRESS)
            ipr.tc("add-filter", "u32", dev, parent=_INGRESS, protocol=_ETH_P_ALL, target=0x10000,
                   keys=["0x0/0x0+0"],
                   action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": to})
    return None


def open_tap(netns_path: str, tap: str) -> int:
    """The tap ``tap`` of the namespace, opened for a QEMU that lives in another one (a VM from
    the VM cache was born in the host's) and is handed the descriptor (QMP ``getfd``): opened as
    QEMU opens a tap itself (no packet information, virtio-net headers). /dev/net/tun finds the
    device in the namespace of the thread that opens it. The caller closes it once QEMU has it."""
    with netns.entered(netns_path):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", tap.encode(), _IFF_TAP | _IFF_NO_PI | _IFF_VNET_HDR))
    except OSError:
        os.close(fd)
        raise
    return fd


def detach(netns_path: str, ep: Endpoint) -> None:
    """Undo :func:`attach`, whatever part of it was done (what is already gone is fine): the
    ingress qdiscs (and with them the filters) and the tap."""
    from pyroute2.netlink.exceptions import NetlinkError

    with rtnl(netns_path) as ipr:
        for name in (ep.name, ep.tap):
            index = link_index(ipr, name)
            if index is None:
                continue
            try:
                ipr.tc("del", "ingress", index, _INGRESS)
            except NetlinkError:
                pass  # no ingress qdisc (attach failed before it)
        tap = link_index(ipr, ep.tap)
        if tap is not None:
            ipr.link("del", index=tap)
