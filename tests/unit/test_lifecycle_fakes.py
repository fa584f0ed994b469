"""The lifecycle behind the Hypervisor and AgentClient seams, with fakes of both (no VM): create,
start, join a pod, delete one container or the whole sandbox, and the undo of failures.

The fakes stand for QEMU and the guest; the rest is real: the store, the sandbox's network
namespace, the bind mounts into the shared directory, hooks. kata-proxy and kata-shim are
stood in for by sleeping processes, so that liveness checks see real pids."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kata_runtime import container, daemons
from kata_runtime.container import RuntimeOptions
from kata_runtime.errors import AgentError, ContainerNotFound, KataError
from kata_runtime.store import ProcRef
from tests.conftest import sandbox_leftovers

CRI_TYPE, CRI_SANDBOX = "io.kubernetes.cri.container-type", "io.kubernetes.cri.sandbox-id"


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=subprocess.DEVNULL)


@dataclass
class Guest:
    """What the fake VM of one sandbox holds."""

    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fail_create: bool = False


class FakeVM:
    """A Hypervisor whose VM is a sleeping process."""

    def __init__(self, world: World, sid: str, proc: ProcRef | None) -> None:
        self.world, self.sid, self.proc = world, sid, proc

    @property
    def channel(self) -> Path:
        return self.world.tmp / f"{self.sid}.chan"

    @property
    def console(self) -> Path:
        return self.world.tmp / f"{self.sid}.console"

    def use_template_ram(self, memory: Path) -> None:
        raise AssertionError("no templates here")

    def launch(self, config_source: str = "") -> int:
        p = _sleeper()
        self.world.procs.append(p)
        self.proc = ProcRef.of(p.pid)
        self.world.guests[self.sid] = Guest()
        self.world.launched.append(self.sid)
        return p.pid

    def restore(self, state: Path) -> None:
        raise AssertionError("no templates here")

    def adopt(self) -> bool:
        return self.alive()

    def console_tail(self, lines: int = 3) -> str:
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        daemons.kill(self.proc, graceful=False)
        self.world.stopped.append(self.sid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def hotplug_nic(self, index: int, tap: str, mac: str) -> None:
        raise AssertionError("the test namespaces are empty")

    def unplug_nic(self, index: int) -> None: ...


class FakeAgent:
    """An AgentClient that keeps the guest's containers in a dict."""

    def __init__(self, world: World, sid: str, cid: str) -> None:
        self.world, self.sid, self.cid = world, sid, cid

    @property
    def guest(self) -> Guest:
        return self.world.guests[self.sid]

    def check(self, timeout: float) -> None: ...
    def wait_warm(self, timeout: float) -> None: ...


    def create_sandbox(self, sandbox_id: str, hostname: str, storages: list[dict[str, Any]]) -> None: ...

    def destroy_sandbox(self) -> None: ...

    def create_container(self, cid: str, spec: dict[str, Any], rootfs_guest_path: str,
                         storages: list[dict[str, Any]], no_pivot: bool = False,
                         sandbox_sysctls: dict[str, str] | None = None) -> None:
        if self.guest.fail_create:
            raise AgentError("crun: no such file", container=cid, step="create")
        self.guest.containers[cid] = spec

    def start_container(self, cid: str) -> None:
        self.guest.started.append(cid)

    def remove_container(self, cid: str) -> None:
        self.guest.containers.pop(cid, None)
        self.guest.removed.append(cid)

    def exec_process(self, cid: str, exec_id: str, process: dict[str, Any]) -> None: ...

    def signal_process(self, cid: str, exec_id: str, signal: int, all_processes: bool = False,
                       timeout: float | None = None) -> None:
        shim = self.world.shims.get(cid)  # the workload dies: so does its shim, as with a real guest
        if shim is not None and signal == 9:
            shim.kill()
            shim.wait()

    def wait_process(self, cid: str, exec_id: str) -> int:
        return 0

    def list_processes(self, cid: str) -> list[int]:
        return []

    def process_table(self, cid: str, ps_args: list[str]) -> bytes:
        return b""

    def update_container(self, cid: str, resources: dict[str, Any]) -> None: ...

    def stats_container(self, cid: str) -> dict[str, Any]:
        return {}

    def pause_container(self, cid: str) -> None: ...

    def resume_container(self, cid: str) -> None: ...

    def update_interface(self, name: str, mac: str, mtu: int, addresses: list[tuple[str, int, int]]) -> None: ...

    def update_routes(self, routes: list[dict[str, Any]]) -> None: ...

    def refresh_clone(self, now: float, entropy: bytes) -> None: ...

    def version(self) -> dict[str, str]:
        return {}

    def close(self) -> None: ...


@dataclass
class World:
    tmp: Path
    guests: dict[str, Guest] = field(default_factory=dict)
    launched: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    shims: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(tmp_path)

    def proxy(*_args: Any, **_kw: Any) -> ProcRef:
        p = _sleeper()
        w.procs.append(p)
        return ProcRef.of(p.pid)

    def shim(cid: str, *_args: Any, **_kw: Any) -> subprocess.Popen[bytes]:
        p = _sleeper()
        w.procs.append(p)
        w.shims[cid] = p
        return p

    monkeypatch.setattr(daemons, "start_proxy", proxy)
    monkeypatch.setattr(daemons, "start_shim", shim)
    yield w
    for p in w.procs:
        p.kill()
        p.wait()


@pytest.fixture
def opts(tmp_path: Path, world: World) -> RuntimeOptions:
    cfg = tmp_path / "configuration.toml"
    cfg.write_text('[hypervisor.qemu]\naccel = "tcg"\n')
    return RuntimeOptions(root=tmp_path / "root", kata_config=cfg,
                          hypervisor=lambda sb: FakeVM(world, sb.id, sb.rec.qemu),
                          agent=lambda sb, cid: FakeAgent(world, sb.id, cid))


@pytest.fixture
def bundle(tmp_path: Path, runc_spec: dict[str, Any]) -> Any:
    def make(name: str, annotations: dict[str, str] | None = None, **spec_changes: Any) -> Path:
        b = tmp_path / f"bundle-{name}"
        (b / "rootfs").mkdir(parents=True)
        spec = copy.deepcopy(runc_spec)
        spec["process"]["terminal"] = False
        spec["annotations"] = annotations or {}
        spec.update(spec_changes)
        (b / "config.json").write_text(json.dumps(spec))
        return b
    return make


def _nothing_left(opts: RuntimeOptions, *ids: str) -> None:
    for i in ids:
        assert not sandbox_leftovers(opts.root, i)
    assert not (opts.root / "ctr").exists() or not any((opts.root / "ctr").iterdir())


def test_create_start_delete(opts: RuntimeOptions, world: World, bundle: Any) -> None:
    st = container.create(opts, "c1", bundle("c1"))
    assert st.status == "created" and st.pid > 0
    assert world.guests["c1"].containers["c1"]["root"]["path"] == "/run/kata-containers/shared/containers/c1/rootfs"
    container.start(opts, "c1")
    assert container.state(opts, "c1").status == "running" and world.guests["c1"].started == ["c1"]
    with pytest.raises(KataError, match="not stopped"):
        container.delete(opts, "c1")
    container.delete(opts, "c1", force=True)
    assert world.stopped == ["c1"]
    _nothing_left(opts, "c1")


def test_pod_containers_join_and_leave_one_by_one(opts: RuntimeOptions, world: World, bundle: Any) -> None:
    container.create(opts, "pod", bundle("pod", {CRI_TYPE: "sandbox", CRI_SANDBOX: "pod"}))
    member = {CRI_TYPE: "container", CRI_SANDBOX: "pod"}
    container.create(opts, "a", bundle("a", member))
    container.create(opts, "b", bundle("b", member))
    assert world.launched == ["pod"]  # one VM
    assert sorted(world.guests["pod"].containers) == ["a", "b", "pod"]
    assert sorted(s.id for s in container.list_containers(opts)) == ["a", "b", "pod"]
    container.delete(opts, "a", force=True)
    assert world.guests["pod"].removed == ["a"] and not world.stopped
    with pytest.raises(ContainerNotFound):
        container.state(opts, "a")
    assert container.state(opts, "b").status == "created"
    container.delete(opts, "pod", force=True)  # its VM stays while b is there
    assert not world.stopped and container.state(opts, "b").status == "created"
    container.delete(opts, "b", force=True)
    assert world.stopped == ["pod"]
    _nothing_left(opts, "pod", "a", "b")


def test_joining_a_missing_sandbox_makes_nothing(opts: RuntimeOptions, world: World, bundle: Any) -> None:
    with pytest.raises(ContainerNotFound, match="sandbox nosuch .* does not exist"):
        container.create(opts, "x", bundle("x", {CRI_TYPE: "container", CRI_SANDBOX: "nosuch"}))
    assert not world.launched
    _nothing_left(opts, "x")


def test_failures_are_undone(opts: RuntimeOptions, world: World, bundle: Any, tmp_path: Path) -> None:
    # the guest refuses the container: the whole sandbox goes
    orig = FakeVM.launch

    def failing_launch(self: FakeVM, config_source: str = "") -> int:
        pid = orig(self, config_source)
        self.world.guests[self.sid].fail_create = True
        return pid

    FakeVM.launch = failing_launch  # type: ignore[method-assign]
    try:
        with pytest.raises(AgentError, match="crun: no such file"):
            container.create(opts, "c1", bundle("c1"))
    finally:
        FakeVM.launch = orig  # type: ignore[method-assign]
    assert world.stopped == ["c1"]
    _nothing_left(opts, "c1")
    # a failing prestart hook of a pod's member: only the member goes
    container.create(opts, "pod", bundle("pod", {CRI_TYPE: "sandbox"}))
    hook = tmp_path / "fail.sh"
    hook.write_text("#!/bin/sh\nexit 7\n")
    hook.chmod(0o755)
    with pytest.raises(KataError, match="prestart hook #0 .* exit status 7"):
        container.create(opts, "m", bundle("m", {CRI_TYPE: "container", CRI_SANDBOX: "pod"},
                                           hooks={"prestart": [{"path": str(hook)}]}))
    assert world.guests["pod"].removed == ["m"] and sorted(world.guests["pod"].containers) == ["pod"]
    assert not world.stopped[1:]
    with pytest.raises(ContainerNotFound):
        container.state(opts, "m")
    container.delete(opts, "pod", force=True)
    _nothing_left(opts, "c1", "pod", "m")
