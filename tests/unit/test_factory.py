"""The VM factory's logic without VMs: what a template's fingerprint covers, what a create does
with the template it finds and the lock it holds, and the VM cache's hand-over (a fake VM: a
``sleep`` process)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.config import Config, FactoryConfig, HypervisorConfig
from kata_runtime.factory import cache, template
from kata_runtime.factory.template import TemplateLock, changes, fingerprint, inspect, next_step
from kata_runtime.store import ProcRef


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """A configuration whose QEMU binary, kernel, initrd and image are files of the test."""
    files = {}
    for key in ("path", "kernel", "initrd", "image"):
        f = tmp_path / "guest" / key
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(key.encode() * 100)
        files[key] = str(f)
    return Config(hypervisor=HypervisorConfig(default_memory=1, **files),
                  factory=FactoryConfig(enable_template=True, template_path=str(tmp_path / "tpl" / "template"),
                                        vm_cache_number=1, vm_cache_endpoint=str(tmp_path / "cache.sock")))


# -- fingerprint ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["path", "kernel", "initrd", "image"])
def test_fingerprint_covers_every_guest_file(cfg: Config, key: str) -> None:
    before = fingerprint(cfg, "tcg")
    path = Path(getattr(cfg.hypervisor, key))
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"a", b"b", 1) if b"a" in path.read_bytes() else b"x" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: ctime still tells
    after = fingerprint(cfg, "tcg")
    assert after != before
    assert changes(before, after) == [f"{template._FILE_NAMES[key]} {path} changed"]
    tmp = path.with_name("new")  # replaced by another file (a reinstall), even with the same bytes
    tmp.write_bytes(path.read_bytes())
    os.replace(tmp, path)
    assert fingerprint(cfg, "tcg") != after


@pytest.mark.parametrize(("field", "value", "said"), [
    ("default_memory", 2, "default_memory 1 -> 2"),
    ("default_vcpus", 2, "default_vcpus 1 -> 2"),
    ("kernel_params", "agent.log=debug", "kernel_params '' -> 'agent.log=debug'"),
    ("machine_type", "pc", "machine_type 'q35' -> 'pc'"),
    ("cpu_model", "qemu64", "cpu_model '' -> 'qemu64'"),
    ("enable_debug", True, "kernel command line changed"),  # it changes what the kernel gets
])
def test_fingerprint_covers_the_vm_settings(cfg: Config, field: str, value: object, said: str) -> None:
    other = replace(cfg, hypervisor=replace(cfg.hypervisor, **{field: value}))
    assert changes(fingerprint(cfg, "tcg"), fingerprint(other, "tcg")) == [said]


def test_fingerprint_covers_the_accelerator_and_the_files_paths(cfg: Config, tmp_path: Path) -> None:
    assert changes(fingerprint(cfg, "tcg"), fingerprint(cfg, "kvm")) == ["accelerator tcg -> kvm"]
    other = replace(cfg, hypervisor=replace(cfg.hypervisor, image=str(tmp_path / "other.img")))
    assert changes(fingerprint(cfg, "tcg"), fingerprint(other, "tcg")) == [
        f"guest image {cfg.hypervisor.image} -> {tmp_path / 'other.img'}"]
    assert changes({"old": 1}, fingerprint(cfg, "tcg")) == ["it was made by another version of kata-runtime"]


# -- inspect: what is at the template path -------------------------------------------------------------

def fake_build(cfg: Config, accel: str, timeout: float) -> template.TemplatePaths:
    """What template.build leaves, without a VM."""
    tp = template.paths(cfg)
    template.remove(tp)
    tp.root.mkdir(parents=True)
    tp.memory.write_bytes(b"\0" * (cfg.hypervisor.default_memory << 20))
    tp.state.write_bytes(template.STATE_MAGIC + b"device state")
    tp.info.write_text(json.dumps({"id": os.urandom(8).hex(), "created": "now", "memory_mib": 1,
                                   "fingerprint": fingerprint(cfg, accel)}))
    return tp


def test_inspect(cfg: Config) -> None:
    tp = template.paths(cfg)
    assert inspect(cfg, "tcg").state == template.ABSENT
    fake_build(cfg, "tcg", 1)
    v = inspect(cfg, "tcg")
    assert v.state == template.USABLE and v.ident
    assert "usable for this configuration" in template.status(cfg, "tcg")[0]
    other = replace(cfg, hypervisor=replace(cfg.hypervisor, default_memory=2))
    v = inspect(other, "tcg")
    assert v.state == template.STALE and v.why == "made from other inputs: default_memory 1 -> 2"
    assert "not usable for this configuration: made from other inputs: default_memory 1 -> 2 (the next create " \
        "makes a new one)" in template.status(other, "tcg")[0]
    with open(tp.memory, "r+b") as f:
        f.truncate(4096)
    assert inspect(cfg, "tcg").state == template.BROKEN and "has 4096 bytes, not 1048576" in inspect(cfg, "tcg").why
    fake_build(cfg, "tcg", 1)
    tp.state.write_bytes(b"garbage!" * 10)
    assert inspect(cfg, "tcg").why.endswith("is not a QEMU migration stream")
    tp.state.unlink()
    assert inspect(cfg, "tcg").state == template.BROKEN
    fake_build(cfg, "tcg", 1)
    tp.info.unlink()
    assert inspect(cfg, "tcg").state == template.BROKEN  # files without their record: never cloned


# -- what a create does --------------------------------------------------------------------------

@pytest.mark.parametrize(("state", "exclusive", "built", "step"), [
    (template.USABLE, False, False, template.CLONE),
    (template.USABLE, False, True, template.CLONE),
    (template.USABLE, True, False, template.LOOK_SHARED),  # made meanwhile: clone it under the shared lock
    (template.ABSENT, False, False, template.LOOK_EXCLUSIVE),
    (template.STALE, False, False, template.LOOK_EXCLUSIVE),
    (template.BROKEN, False, False, template.LOOK_EXCLUSIVE),
    (template.ABSENT, True, False, template.BUILD),
    (template.STALE, True, False, template.BUILD),
    (template.BROKEN, True, False, template.REMOVE),
    (template.ABSENT, False, True, template.GIVE_UP),  # what it just made is not usable: never again and again
    (template.BROKEN, False, True, template.GIVE_UP),
])
def test_next_step(state: str, exclusive: bool, built: bool, step: str) -> None:
    assert next_step(state, exclusive, built) == step


def test_lock_shared_exclusive_and_removed_while_waiting(tmp_path: Path) -> None:
    path = tmp_path / "t.lock"
    a, b, c = TemplateLock(path), TemplateLock(path), TemplateLock(path)
    assert a.acquire(False, time.monotonic()) and b.acquire(False, time.monotonic())  # clones together
    assert not c.acquire(True, time.monotonic() + 0.2)  # no making under a starting clone
    a.release()
    b.release()
    assert c.acquire(True, time.monotonic())
    assert not a.acquire(False, time.monotonic() + 0.2)  # no clone while it is made
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(a.acquire(True, time.monotonic() + 5)))
    waiter.start()
    time.sleep(0.2)
    c.remove()  # factory destroy: the file goes while a is waiting on it
    c.release()
    waiter.join()
    assert got == [True] and os.fstat(a.fd or -1).st_ino == path.stat().st_ino  # the file that is there now
    assert not b.acquire(False, time.monotonic() + 0.2)  # a holds the file that is there now
    a.release()


def test_for_clone_makes_the_template_once_for_concurrent_creates(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []

    def slow_build(c: Config, accel: str, timeout: float) -> template.TemplatePaths:
        builds.append(1)
        time.sleep(0.5)
        return fake_build(c, accel, timeout)

    monkeypatch.setattr(template, "build", slow_build)
    results: list[Any] = []

    def create() -> None:
        clonable, why = template.for_clone(cfg, "tcg", 10)
        results.append((clonable, why))
        if clonable is not None:
            time.sleep(0.1)
            clonable.lock.release()

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert all(c is not None and not why for c, why in results)
    assert sorted(c.built for c, _ in results) == [False, False, True]
    assert len({c.ident for c, _ in results}) == 1
    clonable, _ = template.for_clone(cfg, "tcg", 10)  # the next create clones what is there
    assert clonable is not None and not clonable.built and len(builds) == 1
    clonable.lock.release()
    other = replace(cfg, hypervisor=replace(cfg.hypervisor, default_memory=2))
    clonable, _ = template.for_clone(other, "tcg", 10)  # a stale one is made again
    assert clonable is not None and clonable.built and len(builds) == 2
    clonable.lock.release()


def test_for_clone_gives_up_on_a_broken_template_and_a_held_lock(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template, "build", fake_build)
    tp = fake_build(cfg, "tcg", 1)
    tp.state.unlink()
    clonable, why = template.for_clone(cfg, "tcg", 10)
    assert clonable is None and "is broken" in why and why.endswith(": removed, the next create makes a new one")
    assert not tp.root.exists()  # the next create makes a new one
    holder = TemplateLock(tp.lock)
    assert holder.acquire(True, time.monotonic())
    t0 = time.monotonic()
    clonable, why = template.for_clone(cfg, "tcg", 0.5)
    assert clonable is None and "for more than 0.5s" in why and time.monotonic() - t0 < 2
    holder.release()


def test_remove_broken_leaves_a_template_made_meanwhile(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template, "build", fake_build)
    clonable, _ = template.for_clone(cfg, "tcg", 10)
    assert clonable is not None
    clonable.lock.release()
    fake_build(cfg, "tcg", 1)  # another create found it broken and made a new one
    assert not template.remove_broken(cfg, clonable) and inspect(cfg, "tcg").state == template.USABLE
    clonable, _ = template.for_clone(cfg, "tcg", 10)
    assert clonable is not None
    clonable.lock.release()
    assert template.remove_broken(cfg, clonable) and inspect(cfg, "tcg").state == template.ABSENT


# -- the VM cache ---------------------------------------------------------------------------------

def test_move_dir(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "a" / "dst"
    src.mkdir()
    (src / "console.log").write_text("booted")
    fd = os.open(src / "console.log", os.O_WRONLY | os.O_APPEND)  # QEMU's open console log
    dst.parent.mkdir()
    dst.mkdir()  # the sandbox's empty directory: replaced
    cache.move_dir(src, dst)
    os.write(fd, b", still written")
    os.close(fd)
    assert (dst / "console.log").read_text() == "booted, still written" and not src.exists()
    (dst / "pid").write_text("1")
    full = tmp_path / "full"
    full.mkdir()
    (full / "proxy.log").write_text("x")
    cache.move_dir(dst, full)  # not empty: entry by entry
    assert sorted(p.name for p in full.iterdir()) == ["console.log", "pid", "proxy.log"] and not dst.exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "f").write_text("")
    with pytest.raises(OSError):  # the 9p directory: a rename, or nothing
        cache.move_dir(full, busy, whole=True)


@pytest.fixture
def cache_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setattr(cache, "SOCKET_ROOT", tmp_path / "sock")
    monkeypatch.setattr(cache, "SHARED_ROOT", tmp_path / "shared-cache")
    monkeypatch.setattr(cache, "REFILL_DELAY", 0.2)
    procs: list[subprocess.Popen[bytes]] = []
    yield {"procs": procs}
    for p in procs:
        p.kill()
        p.wait()


def _fake_boot(procs: list[subprocess.Popen[bytes]], boots: list[int]) -> cache.Boot:
    def boot(vm: cache.CachedVM, stop: threading.Event, record: Any) -> None:
        for d in (vm.vm_dir, vm.sock_dir, vm.shared_dir):
            Path(d).mkdir(parents=True)
        (Path(vm.vm_dir) / "console.log").write_text(f"VM {vm.serial}\n")
        (Path(vm.sock_dir) / "qmp.sock").write_text("")
        p = subprocess.Popen(["sleep", "600"])
        procs.append(p)
        vm.qemu = ProcRef.of(p.pid)
        record()
        boots.append(vm.serial)
    return boot


def _wait(ok: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _ready(paths: cache.CachePaths) -> int:
    try:
        return int(cache.query(str(paths.endpoint))["ready"])
    except OSError:  # not listening yet
        return -1


def _targets(tmp_path: Path, sid: str) -> cache.Targets:
    return cache.Targets(sock_dir=cache.SOCKET_ROOT / sid, vm_dir=tmp_path / "root" / "vm" / sid,
                         shared_dir=tmp_path / "sandboxes" / sid)


def test_cache_hands_over_a_vm_and_refills(cfg: Config, tmp_path: Path, cache_world: dict[str, Any]) -> None:
    procs, boots = cache_world["procs"], []
    paths = cache.CachePaths(Path(cfg.factory.vm_cache_endpoint))
    daemon = cache.CacheDaemon(cfg, paths, 1, "tcg", boot=_fake_boot(procs, boots))
    server = threading.Thread(target=daemon.serve)
    server.start()
    try:
        _wait(lambda: _ready(paths) == 1)
        assert cache.status(cfg, "tcg")[0].endswith("1 of 1 VMs ready; usable for this configuration")
        other = replace(cfg, hypervisor=replace(cfg.hypervisor, default_memory=2))
        got, why = cache.take(other, "tcg", "s0", _targets(tmp_path, "s0"), lambda ref: None)
        assert got is None and why.endswith("keeps VMs of another configuration (default_memory 1 -> 2)")

        owned: list[ProcRef] = []
        targets = _targets(tmp_path, "s1")
        targets.vm_dir.mkdir(parents=True)  # the sandbox's, made empty by its reserve()
        got, why = cache.take(cfg, "tcg", "s1", targets, owned.append)
        assert got is not None and owned == [got] and got.alive() and not why
        assert (targets.vm_dir / "console.log").read_text() == "VM 0\n" and (targets.sock_dir / "qmp.sock").exists()
        assert targets.shared_dir.is_dir() and not paths.vm_dir(0).exists() and not paths.shared_dir(0).exists()
        _wait(lambda: boots == [0, 1] and _ready(paths) == 1)  # a replacement
        rec = cache.read_record(paths)
        assert rec is not None and [v.serial for v in rec.vms] == [1]  # VM 0 is the sandbox's alone

        gone: list[ProcRef] = []

        def dies(ref: ProcRef) -> None:  # the create is killed before it recorded the VM
            gone.append(ref)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            cache.take(cfg, "tcg", "s2", _targets(tmp_path, "s2"), dies)
        _wait(lambda: not gone[0].alive())  # nobody owns it: the daemon stopped it
        _wait(lambda: boots == [0, 1, 2])
    finally:
        daemon.stopping.set()
        server.join(30)
    assert got.alive()  # the daemon's end is not the end of the VM it handed over
    assert not paths.dir.exists() and not paths.endpoint.exists()
    assert [p.poll() is None for p in procs] == [True, False, False]  # VMs 1 and 2 went with it
    got2, why = cache.take(cfg, "tcg", "s3", _targets(tmp_path, "s3"), lambda ref: None)
    assert got2 is None and why.startswith(f"no VM cache daemon at {paths.endpoint}")


def test_cache_stop_cleans_up_after_a_killed_daemon(cfg: Config, tmp_path: Path,
                                                    cache_world: dict[str, Any]) -> None:
    procs: list[subprocess.Popen[bytes]] = cache_world["procs"]
    paths = cache.CachePaths(Path(cfg.factory.vm_cache_endpoint))
    dead = subprocess.Popen(["true"])
    dead.wait()
    daemon = cache.CacheDaemon(cfg, paths, 2, "tcg")
    daemon.rec.daemon = ProcRef.of(os.getpid())
    daemon.rec.daemon.start += 1  # not us: a daemon that is gone
    boots: list[int] = []
    boot = _fake_boot(procs, boots)
    paths.dir.mkdir(parents=True)
    for serial in (0, 1):
        vm = cache.CachedVM(serial, cache.READY if serial == 0 else cache.BOOTING, str(paths.vm_dir(serial)),
                            str(paths.sock_dir(serial)), str(paths.shared_dir(serial)))
        boot(vm, threading.Event(), lambda: None)
        daemon.rec.vms.append(vm)
    daemon._record()
    assert "its daemon (pid" in cache.status(cfg, "tcg")[0]
    assert cache.stop(cfg)
    _wait(lambda: all(p.poll() is not None for p in procs))
    assert not paths.dir.exists() and not (tmp_path / "sock").exists() or not any((tmp_path / "sock").iterdir())
    assert not any((tmp_path / "shared-cache").iterdir())
    assert not cache.stop(cfg)


def test_factory_configuration(tmp_path: Path) -> None:
    from kata_runtime.config import load_config
    from kata_runtime.errors import ConfigError

    f = tmp_path / "c.toml"
    f.write_text('[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "/run/x/cache.sock"\n')
    cfg = load_config(f)
    assert (cfg.factory.vm_cache_number, cfg.factory.vm_cache_endpoint) == (2, "/run/x/cache.sock")
    assert (Config().factory.vm_cache_number, Config().factory.vm_cache_endpoint) == (0, "/run/vc/cache.sock")
    for bad, said in (("vm_cache_number = -1", "vm_cache_number must be 0 (no cache) or more"),
                      ('vm_cache_endpoint = "cache.sock"', "vm_cache_endpoint must be an absolute path"),
                      (f'vm_cache_endpoint = "/{"x" * 120}"', "of at most 100 bytes")):
        f.write_text(f"[factory]\n{bad}\n")
        with pytest.raises(ConfigError, match=re.escape(said)):
            load_config(f)
