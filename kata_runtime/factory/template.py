"""The VM template (Kata 1.x's factory): boot once, save, clone.

``kata-runtime factory init`` boots a VM whose RAM lives in a file (``<template_path>/memory``),
waits for its agent, stops it and saves its device state (``state``, QMP ``migrate`` with
``x-ignore-shared``: the RAM is not copied). A sandbox then starts QEMU with the same devices, that
file mapped private (copy on write) and ``-incoming``; it loads the state, continues, and its agent
answers in a fraction of a second instead of a cold boot. The clone's agent is given the current
time and fresh entropy: every clone starts from the template's clock and random state.

A template is only used while it matches the configuration it was made from (``template.json``
records the hypervisor settings and the guest files' sizes and times).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kata_runtime import daemons
from kata_runtime.config import Config
from kata_runtime.errors import AgentError, KataError
from kata_runtime.hypervisor.qemu import DEVICE_LAYOUT, QemuVM, RamFile


@dataclass
class TemplatePaths:
    root: Path

    @property
    def memory(self) -> Path:
        return self.root / "memory"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def info(self) -> Path:
        return self.root / "template.json"

    @property
    def vm_dir(self) -> Path:
        return self.root / "vm"

    @property
    def shared(self) -> Path:
        return self.root / "shared"  # the 9p export of the template: never mounted by its guest


def fingerprint(cfg: Config, accel: str) -> dict[str, Any]:
    """What a clone must share with its template: hypervisor settings and the exact guest files."""
    hv = asdict(cfg.hypervisor)
    files = {}
    for key in ("path", "kernel", "initrd", "image"):
        path = hv[key]
        try:
            st = os.stat(path)
            files[key] = [path, st.st_size, st.st_mtime_ns]
        except OSError:
            files[key] = [path, None, None]
    hv.pop("enable_debug", None)
    return {"accel": accel, "hypervisor": hv, "files": files, "devices": DEVICE_LAYOUT}


def paths(cfg: Config) -> TemplatePaths:
    return TemplatePaths(Path(cfg.factory.template_path))


def usable(cfg: Config, accel: str) -> TemplatePaths | None:
    """The template to clone from, when there is one made from this very configuration."""
    tp = paths(cfg)
    try:
        info = json.loads(tp.info.read_text())
    except (OSError, ValueError):
        return None
    if info.get("fingerprint") != fingerprint(cfg, accel) or not tp.state.exists() or not tp.memory.exists():
        return None
    return tp


def status(cfg: Config) -> str:
    tp = paths(cfg)
    if not tp.info.exists():
        return f"no VM template at {tp.root}"
    info = json.loads(tp.info.read_text())
    return (f"VM template at {tp.root}: created {info.get('created', '?')}, "
            f"{info.get('memory_mib', '?')} MiB guest, accelerator {info.get('fingerprint', {}).get('accel', '?')}")


def destroy(cfg: Config) -> None:
    tp = paths(cfg)
    if tp.vm_dir.exists():
        try:
            pid = int((tp.vm_dir / "pid").read_text())
            daemons.kill_exact(pid, b"sandbox-template")
        except (OSError, ValueError):
            pass
    shutil.rmtree(tp.root, ignore_errors=True)


def init(cfg: Config, accel: str, timeout: float) -> TemplatePaths:
    """Boot, wait for the agent, save. Leaves only the template files behind (no process)."""
    from kata_runtime import agent as agents

    tp = paths(cfg)
    if tp.info.exists():
        raise KataError(f"a VM template already exists at {tp.root} (kata-runtime factory destroy first)",
                        step="factory init")
    for d in (tp.root, tp.vm_dir, tp.shared):
        d.mkdir(parents=True, exist_ok=True)
    vm = QemuVM("template", cfg.hypervisor, tp.vm_dir, accel, tp.shared, ram=RamFile(tp.memory, clone=False))
    proxy = None
    agent = None
    try:
        vm.launch(cfg.source)
        proxy = daemons.start_proxy("template", vm.paths.channel, tp.vm_dir / "proxy.sock",
                                    tp.vm_dir / "proxy.log", cfg.proxy_path)
        agent = agents.connect(cfg.agent.transport, str(tp.vm_dir / "proxy.sock"), "template")
        deadline = time.monotonic() + timeout
        while True:
            try:
                agent.check(min(1.0, max(deadline - time.monotonic(), 0.1)))
                break
            except AgentError:
                if time.monotonic() > deadline or not vm.alive():
                    raise KataError(f"the template VM's agent did not answer within {timeout:g}s "
                                    f"(console {vm.paths.console})", step="factory init") from None
        agent.close()
        agent = None
        vm.save(tp.state)
        vm.stop()
        daemons.kill(proxy)
        tp.info.write_text(json.dumps({
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "memory_mib": cfg.hypervisor.default_memory, "fingerprint": fingerprint(cfg, accel)}, indent=1))
        shutil.rmtree(tp.vm_dir, ignore_errors=True)
        return tp
    except BaseException:
        if agent is not None:
            agent.close()
        vm.stop()
        daemons.kill(proxy)
        shutil.rmtree(tp.root, ignore_errors=True)
        raise
