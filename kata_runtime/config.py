"""configuration.toml: Kata 1.x's paths and keys, loaded with tomllib.

Search order (first that exists wins): ``--kata-config PATH``, ``$KATA_CONF_FILE``,
``/etc/kata-containers/configuration.toml``, ``/usr/share/defaults/kata-containers/configuration.toml``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kata_runtime.errors import ConfigError
from kata_runtime.network import MODELS

SEARCH_PATHS = (
    Path("/etc/kata-containers/configuration.toml"),
    Path("/usr/share/defaults/kata-containers/configuration.toml"),
)


@dataclass
class HypervisorConfig:
    path: str = "/usr/bin/qemu-system-x86_64"
    kernel: str = "/usr/share/kata-containers/vmlinux.container"
    initrd: str = "/usr/share/kata-containers/kata-containers-initrd.img"
    image: str = "/usr/share/kata-containers/kata-containers.img"
    machine_type: str = "q35"
    kernel_params: str = ""
    default_vcpus: int = 1  # Kata 1.x: 0 means 1, less than 0 the host's CPUs (kata_runtime.resources)
    default_memory: int = 512  # MiB
    # Kata 1.x's ceilings for hotplug (kata_runtime.resources): 0 means the host's CPUs (more than
    # the host has means the same), and the host's memory (Kata 1.x's maxmem)
    default_maxvcpus: int = 0
    default_maxmemory: int = 0  # MiB
    memory_slots: int = 10  # memory hotplug slots: how many times memory can be added to a VM
    shared_fs: str = "virtio-9p"
    msize_9p: int = 131072
    accel: str = "auto"  # auto | kvm | tcg  (auto: KVM when it really boots guests, else TCG)
    cpu_model: str = ""  # empty: "host" with KVM, "max,-erms" with TCG (hypervisor/qemu.py TCG_CPU)
    tcg_tb_size: int = 32  # MiB of TCG translation cache
    enable_debug: bool = False


@dataclass
class AgentConfig:
    dial_timeout: float = 60.0  # seconds until the guest agent must answer
    request_timeout: float = 60.0
    transport: str = "stream"  # "stream" (the stream protocol's CALLs) or "grpc"


@dataclass
class RuntimeConfig:
    enable_debug: bool = False
    internetworking_model: str = "tcfilter"  # tcfilter | macvtap | none (kata_runtime.network)


@dataclass
class NetmonConfig:
    enable_netmon: bool = False  # follow interfaces added to or removed from a running sandbox's namespace
    path: str = ""  # empty: the kata-netmon shipped in this package


@dataclass
class FactoryConfig:
    """``[factory]``: how sandboxes get their VM faster than a cold boot (``kata_runtime.factory``)."""

    enable_template: bool = False  # clone a VM template (built by the first create that finds none)
    template_path: str = "/run/vc/vm/template"
    vm_cache_number: int = 0  # VMs a cache daemon keeps booted and ready (0: no cache)
    vm_cache_endpoint: str = "/run/vc/cache.sock"  # the cache daemon's unix socket


@dataclass
class Config:
    hypervisor: HypervisorConfig = field(default_factory=HypervisorConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    factory: FactoryConfig = field(default_factory=FactoryConfig)
    netmon: NetmonConfig = field(default_factory=NetmonConfig)
    proxy_path: str = ""  # empty: the kata-proxy shipped in this package
    shim_path: str = ""  # empty: the kata-shim shipped in this package
    source: str = ""  # the file this was loaded from ("" = built-in defaults)


def _fill(obj: Any, table: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        if not hasattr(obj, key):
            continue  # Kata 1.x keys we do not implement are accepted and ignored
        want = type(getattr(obj, key))
        if want is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, want):
            raise ConfigError(f"{where}: {key} must be {want.__name__}, not {type(value).__name__}")
        setattr(obj, key, value)


def find_config(explicit: Path | None) -> Path | None:
    """The configuration file to use, or None to run on built-in defaults."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"configuration file {explicit} does not exist")
        return explicit
    env = os.environ.get("KATA_CONF_FILE")
    if env:
        return find_config(Path(env))
    for candidate in SEARCH_PATHS:
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: Path | None = None) -> Config:
    """Load and check the configuration (see the module docstring for the search order)."""
    path = find_config(explicit)
    cfg = Config()
    if path is None:
        return cfg
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot load configuration {path}: {e}") from None
    cfg.source = str(path)
    hv = data.get("hypervisor", {}).get("qemu", {})
    _fill(cfg.hypervisor, hv, f"{path} [hypervisor.qemu]")
    _fill(cfg.agent, data.get("agent", {}).get("kata", {}), f"{path} [agent.kata]")
    _fill(cfg.runtime, data.get("runtime", {}), f"{path} [runtime]")
    _fill(cfg.factory, data.get("factory", {}), f"{path} [factory]")
    _fill(cfg.netmon, data.get("netmon", {}), f"{path} [netmon]")
    cfg.proxy_path = str(data.get("proxy", {}).get("kata", {}).get("path", ""))
    cfg.shim_path = str(data.get("shim", {}).get("kata", {}).get("path", ""))
    if cfg.runtime.internetworking_model not in MODELS:
        raise ConfigError(f"{path}: [runtime] internetworking_model must be {', '.join(MODELS)}, not "
                          f"{cfg.runtime.internetworking_model!r}")
    if cfg.agent.transport not in ("stream", "grpc"):
        raise ConfigError(f"{path}: [agent.kata] transport must be stream or grpc, not {cfg.agent.transport!r}")
    if cfg.factory.vm_cache_number < 0:
        raise ConfigError(f"{path}: [factory] vm_cache_number must be 0 (no cache) or more, not "
                          f"{cfg.factory.vm_cache_number}")
    if not os.path.isabs(cfg.factory.vm_cache_endpoint) or len(cfg.factory.vm_cache_endpoint.encode()) > 100:
        raise ConfigError(f"{path}: [factory] vm_cache_endpoint must be an absolute path of at most 100 bytes "
                          f"(a unix socket), not {cfg.factory.vm_cache_endpoint!r}")
    hvc = cfg.hypervisor
    for key, floor in (("default_memory", 1), ("default_maxvcpus", 0), ("default_maxmemory", 0)):
        if getattr(hvc, key) < floor:
            raise ConfigError(f"{path}: [hypervisor.qemu] {key} must be {floor} or more, not {getattr(hvc, key)}")
    if not 0 < hvc.memory_slots <= 256:
        raise ConfigError(f"{path}: [hypervisor.qemu] memory_slots must be 1 to 256 (QEMU's limit), not "
                          f"{hvc.memory_slots}")
    if 0 < hvc.default_maxvcpus < hvc.default_vcpus:
        raise ConfigError(f"{path}: [hypervisor.qemu] default_vcpus {hvc.default_vcpus} is more than default_maxvcpus "
                          f"{hvc.default_maxvcpus}")
    if 0 < hvc.default_maxmemory < hvc.default_memory:
        raise ConfigError(f"{path}: [hypervisor.qemu] default_memory {hvc.default_memory} MiB is more than "
                          f"default_maxmemory {hvc.default_maxmemory} MiB")
    if cfg.hypervisor.accel not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"{path}: [hypervisor.qemu] accel must be auto, kvm or tcg")
    return cfg
