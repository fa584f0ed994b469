"""The VM's size from the spec's ``linux.resources``, as Kata 1.x sizes it, and the CPU lists
(``cpuset``) both the host and the sizing read.

- vCPUs: ``max(default_vcpus, ceil(sum of quota/period), number of CPUs in the union of cpus)``
  over the sandbox's containers (for one container: its quota/period, or its ``cpu.cpus``);
- memory: ``default_memory`` + the containers' memory limits (MiB, rounded up); the floor is the
  guest's own (kernel, agent), the limits are what the workloads may use on top;
- the ceilings: ``default_maxvcpus`` (Kata 1.x: 0, or more than the host's CPUs, means the host's
  CPUs) and ``default_maxmemory`` (MiB; 0 means the host's memory, which is Kata 1.x's ``maxmem``).
  A spec that asks for more is refused in one line; ``update`` never shrinks a VM (what is plugged
  stays plugged, as in Kata 1.x), and memory is hot-added in whole guest memory blocks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kata_runtime.config import HypervisorConfig
from kata_runtime.errors import InvalidArgument

MIB = 1 << 20
# x86_64 Linux adds hotplugged memory in blocks (sections) of 128 MiB
# (/sys/devices/system/memory/block_size_bytes in the guest): a DIMM is a multiple of it
MEMORY_BLOCK_MIB = 128
QEMU_MAX_VCPUS = 288  # QEMU 7.2's q35 limit (MachineClass max_cpus)


def parse_cpuset(text: str, what: str = "cpus") -> set[int]:
    """The CPUs (or memory nodes) of a Linux list such as ``"0-2,5"``; InvalidArgument naming
    ``what`` when it is not one."""
    out: set[int] = set()
    if not text.strip():
        return out
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise InvalidArgument(f"linux.resources.cpu.{what} {text!r} is not a list of numbers and ranges "
                                  "(e.g. \"0-2,5\")") from None
        if first < 0 or last < first:
            raise InvalidArgument(f"linux.resources.cpu.{what} {text!r}: {part.strip()!r} is not a valid range")
        out.update(range(first, last + 1))
    return out


def format_cpuset(cpus: Iterable[int]) -> str:
    """The Linux list form of a set of CPUs: ``{0, 1, 2, 5}`` -> ``"0-2,5"``."""
    ranges: list[str] = []
    items = sorted(set(cpus))
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        ranges.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(ranges)


def host_list(path: str) -> set[int]:
    """A CPU or node list of this host (``/sys/devices/system/cpu/online``...); empty if unreadable."""
    try:
        with open(path) as f:
            return parse_cpuset(f.read().strip())
    except (OSError, InvalidArgument):
        return set()


def host_memory_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0  # pragma: no cover - every Linux has MemTotal


@dataclass(frozen=True)
class Limits:
    """What a VM may grow to, and what it starts with at the least."""

    default_vcpus: int
    max_vcpus: int
    default_mib: int
    max_mib: int
    slots: int  # memory hotplug slots (QEMU -m slots=): the times memory can be added


def limits(hv: HypervisorConfig, host_cpus: int | None = None, host_mib: int | None = None) -> Limits:
    """The configuration's floors and ceilings on this host, with Kata 1.x's meaning of 0."""
    cpus = host_cpus if host_cpus is not None else (os.cpu_count() or 1)
    max_vcpus = cpus if hv.default_maxvcpus <= 0 or hv.default_maxvcpus > cpus else hv.default_maxvcpus
    max_vcpus = min(max_vcpus, QEMU_MAX_VCPUS)
    max_mib = hv.default_maxmemory if hv.default_maxmemory > 0 else (host_mib if host_mib is not None
                                                                     else host_memory_mib())
    wanted = cpus if hv.default_vcpus < 0 else max(1, hv.default_vcpus)
    return Limits(default_vcpus=min(wanted, max_vcpus), max_vcpus=max_vcpus,
                  default_mib=hv.default_memory, max_mib=max(max_mib, hv.default_memory), slots=hv.memory_slots)


@dataclass(frozen=True)
class VMSize:
    vcpus: int
    memory_mib: int


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def cpu_need(resources: dict[str, Any]) -> tuple[float, set[int]]:
    """(CPUs of quota/period, the CPU list) that one container's ``linux.resources`` asks for."""
    cpu = resources.get("cpu") or {}
    quota, period = _number(cpu.get("quota")), _number(cpu.get("period"))
    share = quota / period if quota > 0 and period > 0 else 0.0
    return share, parse_cpuset(str(cpu.get("cpus") or ""))


def memory_need_mib(resources: dict[str, Any]) -> int:
    """The memory limit of one container's ``linux.resources`` in MiB, rounded up (0: none)."""
    limit = _number((resources.get("memory") or {}).get("limit"))
    return -(-limit // MIB) if limit > 0 else 0


def size_for(lim: Limits, containers: list[dict[str, Any]], who: str = "") -> VMSize:
    """The VM that the containers' ``linux.resources`` need (see the module docstring);
    InvalidArgument when that is more than the configuration allows."""
    share = 0.0
    cpus: set[int] = set()
    mib = lim.default_mib
    for res in containers:
        s, c = cpu_need(res)
        share += s
        cpus |= c
        mib += memory_need_mib(res)
    vcpus = max(lim.default_vcpus, math.ceil(share - 1e-9), len(cpus))
    what = f" ({who})" if who else ""
    if vcpus > lim.max_vcpus:
        asked = f"{share:g} CPUs of quota/period" if math.ceil(share - 1e-9) >= len(cpus) else \
            f"cpus {format_cpuset(cpus)!r}"
        raise InvalidArgument(f"linux.resources.cpu{what}: {asked} need {vcpus} vCPUs, more than the VM may have "
                              f"(default_maxvcpus: {lim.max_vcpus})")
    if mib > lim.max_mib:
        raise InvalidArgument(f"linux.resources.memory.limit{what}: a VM of {mib} MiB (default_memory "
                              f"{lim.default_mib} + the limits) is more than the VM may have (default_maxmemory: "
                              f"{lim.max_mib} MiB)")
    return VMSize(vcpus, mib)


def growth(now: VMSize, want: VMSize) -> VMSize:
    """What to hot-add to a VM of size ``now`` so that it has at least ``want``: vCPUs, and
    memory in whole guest memory blocks (never negative: a VM is never shrunk)."""
    mib = max(0, want.memory_mib - now.memory_mib)
    return VMSize(max(0, want.vcpus - now.vcpus), -(-mib // MEMORY_BLOCK_MIB) * MEMORY_BLOCK_MIB)


def merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``current`` resources with what an ``update`` sets (runc's rule: a field the update leaves
    out, zero or empty, keeps its value)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in current.items()}
    for key, value in update.items():
        if isinstance(value, dict):
            section = out.setdefault(key, {})
            if not isinstance(section, dict):
                section = out[key] = {}
            section.update({k: v for k, v in value.items() if v not in (None, 0, "")})
        elif value not in (None, 0, ""):
            out[key] = value
    return out


def sizing_part(resources: dict[str, Any]) -> dict[str, Any]:
    """What of ``linux.resources`` the host keeps in the container's record: cpu and memory."""
    return {k: dict(resources[k]) for k in ("cpu", "memory") if isinstance(resources.get(k), dict)}
