"""Pods: containers that join a sandbox's VM (the CRI annotations), with real VMs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import Kata

CRI_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX = "io.kubernetes.cri.sandbox-id"


def _pod_bundle(bundle: Callable[..., Path], args: list[str], annotations: dict[str, str],
                join_pid: int | None = None) -> Path:
    b = bundle(args)
    spec: dict[str, Any] = json.loads((b / "config.json").read_text())
    spec["annotations"] = annotations
    if join_pid is not None:  # as containerd's CRI writes it: the pause container's namespaces by its pid
        for ns in spec["linux"]["namespaces"]:
            if ns["type"] in ("ipc", "uts"):
                ns["path"] = f"/proc/{join_pid}/ns/{ns['type']}"
    (b / "config.json").write_text(json.dumps(spec))
    return b


def test_containers_of_a_pod_share_one_vm(kata: Kata, cid: str, tmp_path: Path, bundle: Callable[..., Path],
                                          request: Any) -> None:
    pod = cid
    c1, c2, c3 = f"{cid}-a", f"{cid}-b", f"{cid}-c"
    request.node.extra_ids = [c1, c2, c3]
    sandbox = _pod_bundle(bundle, ["sleep", "1000"], {CRI_TYPE: "sandbox", CRI_SANDBOX: pod})
    kata.ok("create", "--bundle", str(sandbox), pod)
    kata.ok("start", pod)
    pause_pid = kata.state(pod)["pid"]
    member = {CRI_TYPE: "container", CRI_SANDBOX: pod}
    for c in (c1, c2):
        kata.ok("create", "--bundle", str(_pod_bundle(bundle, ["sleep", "1000"], member, pause_pid)), c)
        kata.ok("start", c)
    boot = {c: kata.ok("exec", c, "cat", "/proc/sys/kernel/random/boot_id").out for c in (pod, c1, c2)}
    assert len(set(boot.values())) == 1, boot  # one VM
    assert boot[pod] != Path("/proc/sys/kernel/random/boot_id").read_text()
    ipc = {c: kata.ok("exec", c, "readlink", "/proc/self/ns/ipc").out for c in (pod, c1, c2)}
    assert len(set(ipc.values())) == 1, ipc  # joined the pause container's IPC namespace
    mnt = {c: kata.ok("exec", c, "readlink", "/proc/self/ns/mnt").out for c in (pod, c1, c2)}
    assert len(set(mnt.values())) == 3  # each its own rootfs
    listed = {s["id"]: s["status"] for s in json.loads(kata.ok("list", "--format", "json").out)}
    assert listed == {pod: "running", c1: "running", c2: "running"}

    # removing one container leaves the others running, in the same VM
    kata.ok("kill", c1, "KILL")
    kata.ok("delete", "--force", c1)
    assert kata("state", c1).rc != 0
    assert kata.ok("exec", c2, "cat", "/proc/sys/kernel/random/boot_id").out == boot[pod]
    assert not Path(f"/run/kata-containers/shared/sandboxes/{pod}/{c1}").exists()
    # a third one joins later
    kata.ok("create", "--bundle", str(_pod_bundle(bundle, ["sleep", "1000"], member, pause_pid)), c3)
    kata.ok("start", c3)
    assert kata.ok("exec", c3, "cat", "/proc/sys/kernel/random/boot_id").out == boot[pod]
    # a container whose sandbox does not exist: one clear line, nothing made
    r = kata("create", "--bundle", str(_pod_bundle(bundle, ["true"], {CRI_TYPE: "container",
                                                                      CRI_SANDBOX: "nosuchpod"})), f"{cid}-x")
    assert r.rc != 0 and r.err.strip().splitlines() == [
        f"kata-runtime: create {cid}-x: sandbox nosuchpod (annotation io.kubernetes.cri.sandbox-id) does not exist"]
    assert kata("state", f"{cid}-x").rc != 0
    # the sandbox container goes last, as kubelet does it; then nothing is left
    for c in (c2, c3, pod):
        kata.ok("delete", "--force", c)
    assert json.loads(kata.ok("list", "--format", "json").out) is None
    assert not sandbox_leftovers(kata.root, pod) and not our_leftovers(pod)
    assert not (kata.root / "ctr").exists() or not any((kata.root / "ctr").iterdir())


def test_pod_vm_stays_until_its_last_container(kata: Kata, cid: str, bundle: Callable[..., Path],
                                               request: Any) -> None:
    """Deleting the sandbox container first (out of kubelet's order) keeps the VM for the others."""
    pod, c1 = cid, f"{cid}-a"
    request.node.extra_ids = [c1]
    kata.ok("create", "--bundle", str(_pod_bundle(bundle, ["sleep", "1000"], {CRI_TYPE: "sandbox"})), pod)
    kata.ok("start", pod)
    kata.ok("create", "--bundle", str(_pod_bundle(bundle, ["sleep", "1000"],
                                                  {CRI_TYPE: "container", CRI_SANDBOX: pod})), c1)
    kata.ok("start", c1)
    kata.ok("delete", "--force", pod)
    assert kata("state", pod).rc != 0
    assert kata.ok("exec", c1, "echo", "still here").out == "still here\n"
    kata.ok("delete", "--force", c1)
    assert not sandbox_leftovers(kata.root, pod) and not our_leftovers(pod)


def test_two_pods_two_vms(kata: Kata, cid: str, bundle: Callable[..., Path], request: Any) -> None:
    """Containers of pod A never land in pod B's VM."""
    pods = [f"{cid}-pa", f"{cid}-pb"]
    members = [f"{cid}-ma", f"{cid}-mb"]
    request.node.extra_ids = pods + members
    for pod, member in zip(pods, members, strict=True):
        kata.ok("create", "--bundle", str(_pod_bundle(bundle, ["sleep", "1000"], {CRI_TYPE: "sandbox"})), pod)
        kata.ok("create", "--bundle", str(_pod_bundle(bundle, ["sleep", "1000"],
                                                      {CRI_TYPE: "container", CRI_SANDBOX: pod})), member)
        kata.ok("start", pod)
        kata.ok("start", member)
    boot = {c: kata.ok("exec", c, "cat", "/proc/sys/kernel/random/boot_id").out for c in pods + members}
    assert boot[pods[0]] == boot[members[0]] and boot[pods[1]] == boot[members[1]]
    assert boot[pods[0]] != boot[pods[1]]  # two VMs (cold boots: each its own boot id)
    for c in members + pods:
        kata.ok("delete", "--force", c)
    for pod in pods:
        assert not sandbox_leftovers(kata.root, pod) and not our_leftovers(pod)


def _host_cpu_limit(cgroup_path: str) -> tuple[int, int]:
    """(quota, period) of a host cgroup (v1 cpu.cfs_*; v2 cpu.max, "max" as -1)."""
    from kata_runtime import cgroups

    hs = cgroups.hierarchies()
    if cgroups.version_of(hs) == 2:
        d = Path(next(h.mount for h in hs if h.version == 2)) / cgroup_path.lstrip("/")
        quota, period = (d / "cpu.max").read_text().split()
        return (-1 if quota == "max" else int(quota)), int(period)
    d = Path(next(h.mount for h in hs if "cpu" in h.controllers)) / cgroup_path.lstrip("/")
    return int((d / "cpu.cfs_quota_us").read_text()), int((d / "cpu.cfs_period_us").read_text())


def test_the_pods_host_cgroup_has_its_members_cpu_quotas_together(kata: Kata, cid: str,
                                                                  bundle: Callable[..., Path], request: Any) -> None:
    """As Kata 1.x's sandbox cgroup: the pod's host cgroup (the pause container's cgroupsPath) takes
    the sum of its workload containers' quotas (scaled to the longest period), again when one is
    updated or leaves; with none left it has no limit."""
    pod, c1, c2 = cid, f"{cid}-a", f"{cid}-b"
    request.node.extra_ids = [c1, c2]
    path = f"/kata-test-{pod}/{pod}"

    def spec(args: list[str], ann: dict[str, str], cpu: dict[str, int] | None, cg: str) -> Path:
        b = _pod_bundle(bundle, args, ann)
        s = json.loads((b / "config.json").read_text())
        s["linux"]["cgroupsPath"] = cg
        if cpu is not None:
            s["linux"]["resources"] = {"cpu": cpu}
        (b / "config.json").write_text(json.dumps(s))
        return b

    kata.ok("create", "--bundle", str(spec(["sleep", "1000"], {CRI_TYPE: "sandbox"}, {"shares": 2}, path)), pod)
    kata.ok("start", pod)
    assert _host_cpu_limit(path)[0] == -1  # the pause container asks for no quota
    member = {CRI_TYPE: "container", CRI_SANDBOX: pod}
    kata.ok("create", "--bundle", str(spec(["sleep", "1000"], member, {"quota": 50000, "period": 100000},
                                           f"/kata-test-{pod}/{c1}")), c1)
    assert _host_cpu_limit(path) == (50000, 100000)
    kata.ok("create", "--bundle", str(spec(["sleep", "1000"], member, {"quota": 25000, "period": 50000},
                                           f"/kata-test-{pod}/{c2}")), c2)
    assert _host_cpu_limit(path) == (100000, 100000)  # 0.5 + 0.5 CPU
    kata.ok("update", "--cpu-quota", "150000", c1)
    assert _host_cpu_limit(path) == (200000, 100000)
    kata.ok("delete", "--force", c2)
    assert _host_cpu_limit(path) == (150000, 100000)
    kata.ok("delete", "--force", c1)
    assert _host_cpu_limit(path)[0] == -1
    kata.ok("delete", "--force", pod)
    assert not sandbox_leftovers(kata.root, pod) and not our_leftovers(pod)
