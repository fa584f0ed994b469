"""The VM's network, as the runtime describes it: each NIC (found by its MAC, since hotplugged
devices appear under a name of the kernel's choosing) gets the name, MTU and addresses of the
host interface it stands for, and the routes follow. Done with busybox ``ip``."""

from __future__ import annotations

import os
import time

from kata_runtime.guest.containers import AgentFailure

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from typing import Any

    from kata_runtime.guest.reaper import Reaper

IP = next((p for p in ("/sbin/ip", "/bin/ip", "/usr/sbin/ip", "/usr/bin/ip") if os.path.exists(p)), "/sbin/ip")
SYS_NET = "/sys/class/net"


def _ip(reaper: Reaper, *args: str) -> None:
    status, _out, err = reaper.run([IP, *args], timeout=30)
    if status != 0:
        raise AgentFailure(f"ip {' '.join(args)}: {err.decode(errors='replace').strip() or f'exit {status}'}")


def find_by_mac(mac: str, timeout: float) -> str:
    """The name of the interface with ``mac``, waiting up to ``timeout`` for a hotplugged one."""
    mac = mac.lower()
    deadline = time.monotonic() + timeout
    while True:
        for dev in os.listdir(SYS_NET):
            try:
                with open(f"{SYS_NET}/{dev}/address") as f:
                    found = f.read().strip().lower()
                if found == mac:
                    return dev
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise AgentFailure(f"no network interface with MAC {mac} appeared within {timeout:g}s")
        time.sleep(0.02)


def update_interface(reaper: Reaper, name: str, mac: str, mtu: int, addresses: list[tuple[str, int]],
                     timeout: float = 20.0) -> None:
    """Make the NIC with ``mac`` the twin of the host's interface: ``name``, ``mtu``, addresses
    (``(address, prefix)``), up."""
    if "/" in name or not name or len(name) > 15:
        raise AgentFailure(f"bad interface name {name!r}")
    dev = find_by_mac(mac, timeout)
    if dev != name:
        _ip(reaper, "link", "set", "dev", dev, "down")
        _ip(reaper, "link", "set", "dev", dev, "name", name)
    if mtu:
        _ip(reaper, "link", "set", "dev", name, "mtu", str(mtu))
    _ip(reaper, "addr", "flush", "dev", name)
    for address, prefix in addresses:
        _ip(reaper, "addr", "add", f"{address}/{prefix}", "dev", name)
    _ip(reaper, "link", "set", "dev", name, "up")


def update_routes(reaper: Reaper, routes: list[dict[str, Any]]) -> None:
    """Add each route (``dest`` "" = default; ``gateway``, ``device``, ``source``, ``scope``);
    routes through a gateway come after those that make the gateway reachable."""
    ordered = sorted(routes, key=lambda r: bool(r.get("gateway")))
    for r in ordered:
        args = ["route", "replace", r.get("dest") or "default"]
        if r.get("gateway"):
            args += ["via", r["gateway"]]
        if r.get("device"):
            args += ["dev", r["device"]]
        if r.get("source"):
            args += ["src", r["source"]]
        if not r.get("gateway") and r.get("scope") == 253:
            args += ["scope", "link"]
        _ip(reaper, *args)
