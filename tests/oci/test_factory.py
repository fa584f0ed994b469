"""The VM factory with real VMs: templates (made by `factory init` or by the first create, remade
when the configuration changes, removed when broken) and the VM cache daemon. Each test groups
its checks around as few VM boots as it can: a template or cached VM costs a cold boot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from kata_runtime.factory.cache import CachePaths
from tests.oci.conftest import Kata, Result, config_with
from tests.oci.test_network import _Hello, ip, netns, use_netns  # noqa: F401 - netns is a fixture

RANDOM = "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo"


@pytest.fixture
def shm_dir() -> Iterator[Path]:
    """Where templates go: guest RAM of a template lives in shared memory, as it would under /run."""
    root = Path("/dev/shm") / f"kata-test-{uuid.uuid4().hex[:8]}"
    root.mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def template_config(where: Path, shm: Path, **changes: object) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    return config_with(where, factory_enable_template=True, factory_template_path=str(shm / "template"), **changes)


def more_ids(request: pytest.FixtureRequest, cid: str, n: int) -> list[str]:
    """``n`` container ids of this test, all checked for leftovers at its end."""
    ids = [cid] + [f"{cid}{chr(ord('b') + i)}" for i in range(n - 1)]
    request.node.extra_ids = ids[1:]
    return ids


def phases(kata: Kata, name: str) -> list[float]:
    """The times of debug line ``phase <name> <s>`` in the log, in order."""
    return [float(m.split()[2]) for m in kata.log_messages() if m.startswith(f"phase {name} ")]


def warnings(kata: Kata) -> list[str]:
    if not kata.log.exists():
        return []
    lines = [json.loads(line) for line in kata.log.read_text().splitlines() if line.strip()]
    return [e["msg"] for e in lines if e.get("level") == "warning"]


def test_factory_init_then_clones(kata: Kata, bundle, request: pytest.FixtureRequest, cid: str,
                                  tmp_path: Path, shm_dir: Path) -> None:
    """`factory init` makes the template; sandboxes are clones of it, each with its own clock and
    randomness; `factory init` again is refused in one line; destroy removes it."""
    cfg = template_config(tmp_path, shm_dir)
    ids = more_ids(request, cid, 2)
    assert "no VM template" in kata.ok("factory", "status", config=cfg).out
    kata.ok("factory", "init", config=cfg)
    assert "usable for this configuration" in kata.ok("factory", "status", config=cfg).out
    again = kata("factory", "init", config=cfg)
    assert again.rc != 0 and "already exists" in again.err and len(again.err.strip().splitlines()) == 1
    assert not subprocess.run(["pgrep", "-f", "sandbox-template "], capture_output=True).stdout  # no VM left

    b = bundle(["sh", "-c", f"uname -r; date +%s; {RANDOM}"])
    outs = []
    kata.debug = True  # phase lines in the log say whether the VM was restored or booted
    for c in ids:
        t0 = time.time()
        r = kata("run", "--bundle", str(b), c, config=cfg)
        assert r.rc == 0, r.err
        release, guest_time, random = r.out.split("\n")[:3]
        assert release.endswith("-amd64")
        assert abs(int(guest_time) - t0) < 30  # the clone's clock was set, not the template's
        outs.append(random)
    assert outs[0] != outs[1]  # and each clone was reseeded
    assert len(phases(kata, "vm_restored")) == 2, "the sandboxes were cold-booted, not cloned"
    assert not phases(kata, "template_made")

    assert kata.ok("factory", "destroy", config=cfg).out.strip() == "VM template destroyed"
    assert "no VM template" in kata.ok("factory", "status", config=cfg).out
    assert not (shm_dir / "template").exists() and not (shm_dir / "template.lock").exists()


def _runs_at_once(kata: Kata, runs: list[tuple[str, Path, Path]]) -> list[Result]:
    procs = []
    for c, b, cfg in runs:
        out, err = kata.log.with_name(f"{c}.out"), kata.log.with_name(f"{c}.err")
        with open(out, "wb") as o, open(err, "wb") as e:
            procs.append((subprocess.Popen(kata.argv("run", "--bundle", str(b), c, config=cfg),
                                           stdin=subprocess.DEVNULL, stdout=o, stderr=e), out, err))
    results = []
    for p, out, err in procs:
        rc = p.wait(timeout=300)
        results.append(Result(rc, out.read_text(errors="replace"), err.read_text(errors="replace")))
    return results


def test_templates_manage_themselves(kata: Kata, bundle, request: pytest.FixtureRequest, cid: str, tmp_path: Path,
                                     shm_dir: Path) -> None:
    """No `factory init`: two creates at once find no template, one makes it, both clone it; a
    change of memory makes the next create make a new one; a template whose device state was cut
    short is removed with a warning and the container boots cold and works."""
    cfg = template_config(tmp_path / "a", shm_dir)
    c1, c2, c3, c4 = more_ids(request, cid, 4)
    kata.debug = True
    status = kata.ok("factory", "status", config=cfg).out
    assert f"no VM template at {shm_dir / 'template'} (the next create makes one)" in status

    b = bundle(["sh", "-c", f"grep MemTotal /proc/meminfo; {RANDOM}"])
    first = _runs_at_once(kata, [(c1, b, cfg), (c2, b, cfg)])
    assert [r.rc for r in first] == [0, 0], [r.err for r in first]
    assert len(phases(kata, "template_made")) == 1  # made once, by one of them
    assert len(phases(kata, "vm_restored")) == 2  # and both are its clones
    assert first[0].out.splitlines()[1] != first[1].out.splitlines()[1]
    assert "usable for this configuration" in kata.ok("factory", "status", config=cfg).out
    made = json.loads((shm_dir / "template" / "template.json").read_text())

    smaller = template_config(tmp_path / "b", shm_dir, default_memory=256)
    status = kata.ok("factory", "status", config=smaller).out
    assert "not usable for this configuration: made from other inputs: default_memory 512 -> 256 (the next " \
           "create makes a new one)" in status
    r = kata("run", "--bundle", str(b), c3, config=smaller)
    assert r.rc == 0, r.err
    mem_kb = int(r.out.split()[1])
    assert mem_kb < 256 * 1024  # the new template's guest
    assert len(phases(kata, "template_made")) == 2 and len(phases(kata, "vm_restored")) == 3
    remade = json.loads((shm_dir / "template" / "template.json").read_text())
    assert remade["id"] != made["id"] and remade["memory_mib"] == 256

    state = shm_dir / "template" / "state"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # cut short: QEMU fails to load it
    r = kata("run", "--bundle", str(b), c4, config=smaller)
    assert r.rc == 0, r.err  # booted cold
    assert r.out.startswith("MemTotal:")
    broken = [w for w in warnings(kata) if c4 in w]
    assert len(broken) == 1 and "VM template" in broken[0] and "is broken" in broken[0] and \
        broken[0].endswith(": removed, the next create makes a new one: cold boot"), broken
    assert len(phases(kata, "vm_restored")) == 3 and len(phases(kata, "qemu_launched")) == 5  # 3 clones, 2 tries
    assert f"no VM template at {shm_dir / 'template'}" in kata.ok("factory", "status", config=smaller).out
    assert not kata.log_errors()
    kata.ok("factory", "destroy", config=smaller)


def _cache_leftovers(endpoint: Path, serials: int = 6) -> list[str]:
    """What of the cache daemon at ``endpoint`` exists: its processes (the daemon, QEMUs named by
    its sockets, kata-proxies), socket, record, VM directories."""
    paths = CachePaths(endpoint)
    marks = [str(endpoint)] + [str(paths.sock_dir(i)) for i in range(serials)]
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    left = [line for line in ps.splitlines() if any(m in line for m in marks) and line.split()[1][:1] != "Z"]
    files = [endpoint, paths.dir] + [paths.sock_dir(i) for i in range(serials)] + \
        [paths.shared_dir(i) for i in range(serials)]
    return left + [str(f) for f in files if f.exists()]


def _poll(ok: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return True
        time.sleep(0.5)
    return False


def test_vm_cache(kata: Kata, bundle, request: pytest.FixtureRequest, cid: str, tmp_path: Path, netns: str) -> None:  # noqa: F811
    """`factory init` with vm_cache_number = 1 starts the daemon with a VM ready; a create takes
    it (fast: booted long before), the daemon boots another; a container with a network
    namespace and a veth gets its network in a cached VM (QEMU was born in the host's namespace);
    `factory destroy` stops the daemon and the VM it was booting, and leaves nothing."""
    endpoint = tmp_path / "cache.sock"
    cfg = config_with(tmp_path, factory_vm_cache_number=1, factory_vm_cache_endpoint=str(endpoint))
    c1, c2 = more_ids(request, cid, 2)
    try:
        assert f"no VM cache daemon at {endpoint} (kata-runtime factory init starts one)" in \
            kata.ok("factory", "status", config=cfg).out
        init = kata.ok("factory", "init", config=cfg)
        assert re.fullmatch(rf"VM cache daemon \(pid \d+\) at {endpoint}: 1 VM\(s\) ready\n", init.out), init.out
        again = kata("factory", "init", config=cfg)
        assert again.rc != 0 and "a VM cache daemon already runs" in again.err
        status = kata.ok("factory", "status", config=cfg).out
        assert "1 of 1 VMs ready; usable for this configuration" in status, status

        kata.debug = True
        b = bundle(["sh", "-c", "cut -d' ' -f1 /proc/uptime"])
        t0 = time.monotonic()
        r = kata("run", "--bundle", str(b), c1, config=cfg)
        wall = time.monotonic() - t0
        assert r.rc == 0, r.err
        assert float(r.out) > wall  # the guest was up before the run began
        assert len(phases(kata, "vm_from_cache")) == 1 and not phases(kata, "qemu_launched")
        assert phases(kata, "agent_ready")[0] < 5.0, "a cached VM should answer at once"
        assert not any("cold boot" in m for m in kata.log_messages())
        assert _poll(lambda: "1 of 1 VMs ready" in kata.ok("factory", "status", config=cfg).out, 120), \
            "the daemon did not boot a replacement"

        n = int(netns[-2:], 16) % 200 + 20
        server = ThreadingHTTPServer((f"10.251.{n}.1", 0), _Hello)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        b = bundle(["sh", "-c", f"ip -o -4 addr show dev eth0; ip route; "
                                f"wget -q -O - http://10.251.{n}.1:{server.server_address[1]}/"])
        use_netns(b, f"/run/netns/{netns}")
        try:
            r = kata("run", "--bundle", str(b), c2, config=cfg)
        finally:
            server.shutdown()
        assert r.rc == 0, r.err
        lines = r.out.splitlines()
        assert lines[0].split()[1:4] == ["eth0", "inet", f"10.251.{n}.2/24"], r.out
        assert f"default via 10.251.{n}.1 dev eth0" in r.out and lines[-1] == "hello from the host", r.out
        assert len(phases(kata, "vm_from_cache")) == 2 and not phases(kata, "qemu_launched")
        assert "_kata" not in ip("-n", netns, "-o", "link", "show")
        assert [e["msg"] for e in kata.log_errors()] == [again.err.strip().removeprefix("kata-runtime: ")]
    finally:
        destroyed = kata("factory", "destroy", config=cfg)
    assert destroyed.rc == 0 and "VM cache stopped" in destroyed.out, destroyed.err
    assert not _cache_leftovers(endpoint)
    assert f"no VM cache daemon at {endpoint}" in kata.ok("factory", "status", config=cfg).out
