"""The host-side translation of a bundle's spec into the guest's (oci/guest_spec.py)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.errors import BundleError
from kata_runtime.oci.guest_spec import GUEST_SHARED_DIR, guest_process, translate


def _spec(runc_spec: dict[str, Any], **linux: Any) -> dict[str, Any]:
    spec = copy.deepcopy(runc_spec)
    spec["linux"].update(linux)
    return spec


def test_root_hooks_and_labels(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = _spec(runc_spec, mountLabel="system_u:object_r:svirt_sandbox_file_t:s0")
    spec["hooks"] = {"prestart": [{"path": "/bin/true"}], "poststop": []}
    spec["process"]["apparmorProfile"] = "docker-default"
    g = translate("c1", spec, tmp_path, tmp_path / "rootfs")
    assert g.spec["root"]["path"] == f"{GUEST_SHARED_DIR}/c1/rootfs"
    assert "hooks" not in g.spec and g.hooks == {"prestart": [{"path": "/bin/true"}]}
    assert "mountLabel" not in g.spec["linux"] and "apparmorProfile" not in g.spec["process"]
    assert spec["hooks"]["prestart"] and spec["root"]["path"] == "rootfs"  # the input is not changed


def test_network_namespace_is_the_hosts_side(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    g = translate("c1", _spec(runc_spec), tmp_path, tmp_path / "rootfs")
    assert g.network.path is None  # a new one, made by the runtime
    assert "network" not in [ns["type"] for ns in g.spec["linux"]["namespaces"]]
    assert {"type": "pid"} in g.spec["linux"]["namespaces"]


def test_host_network_is_refused(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    no_net = [ns for ns in runc_spec["linux"]["namespaces"] if ns["type"] != "network"]
    with pytest.raises(BundleError, match=r"linux.namespaces: .*host's network"):
        translate("c1", _spec(runc_spec, namespaces=no_net), tmp_path, tmp_path / "rootfs")
    own = no_net + [{"type": "network", "path": "/proc/self/ns/net"}]
    with pytest.raises(BundleError, match="is the host's"):
        translate("c1", _spec(runc_spec, namespaces=own), tmp_path, tmp_path / "rootfs")
    missing = no_net + [{"type": "network", "path": "/run/netns/no-such-ns"}]
    with pytest.raises(BundleError, match="no-such-ns does not exist"):
        translate("c1", _spec(runc_spec, namespaces=missing), tmp_path, tmp_path / "rootfs")


def test_other_namespace_paths_are_refused(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    ns = [n if n["type"] != "ipc" else {"type": "ipc", "path": "/proc/1/ns/ipc"}
          for n in runc_spec["linux"]["namespaces"]]
    with pytest.raises(BundleError, match="joining the ipc namespace"):
        translate("c1", _spec(runc_spec, namespaces=ns), tmp_path, tmp_path / "rootfs")


def test_net_sysctls_go_to_the_sandbox(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = _spec(runc_spec, sysctl={"net.ipv4.ip_unprivileged_port_start": "0", "kernel.msgmax": "8192"})
    g = translate("c1", spec, tmp_path, tmp_path / "rootfs")
    assert g.sandbox_sysctls == {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert g.spec["linux"]["sysctl"] == {"kernel.msgmax": "8192"}


def test_cgroups_path(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    g = translate("c1", _spec(runc_spec, cgroupsPath="system.slice:docker:c1"), tmp_path, tmp_path / "rootfs")
    assert g.spec["linux"]["cgroupsPath"] == "/kata/c1"
    g = translate("c1", _spec(runc_spec, cgroupsPath="/docker/c1"), tmp_path, tmp_path / "rootfs")
    assert g.spec["linux"]["cgroupsPath"] == "/docker/c1"


def test_bind_mounts_are_shared(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    os.symlink(tmp_path / "vol", tmp_path / "link")
    spec = _spec(runc_spec)
    spec["mounts"] += [
        {"destination": "/data", "type": "bind", "source": str(tmp_path / "link"), "options": ["rbind", "ro"]},
        {"destination": "/etc/hosts", "source": "hosts", "options": ["bind"]},  # relative: to the bundle
    ]
    g = translate("c1", spec, tmp_path, tmp_path / "rootfs")
    data, hosts = g.spec["mounts"][-2:]
    assert [(s.source, s.readonly, s.is_dir) for s in g.shares] == [
        (str(tmp_path / "vol"), True, True), (str(tmp_path / "hosts"), False, False)]
    n = len(runc_spec["mounts"])
    assert data == {"destination": "/data", "type": "bind", "source": f"{GUEST_SHARED_DIR}/c1/mounts/{n}/vol",
                    "options": ["rbind", "ro"]}
    assert hosts["source"] == f"{GUEST_SHARED_DIR}/c1/mounts/{n + 1}/hosts" and hosts["type"] == "bind"
    assert all(s.target.startswith("c1/mounts/") and ".." not in s.target for s in g.shares)
    assert g.spec["mounts"][0] == runc_spec["mounts"][0]  # proc: as is


def test_bad_mounts_are_refused(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = _spec(runc_spec)
    spec["mounts"].append({"destination": "/data", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]})
    with pytest.raises(BundleError, match=r"mounts\[\d+\] \(/data\): bind mount source /no/such/dir does not exist"):
        translate("c1", spec, tmp_path, tmp_path / "rootfs")
    spec["mounts"][-1] = {"destination": "/disk", "type": "ext4", "source": "/dev/sda1"}
    with pytest.raises(BundleError, match=r"\(/disk\): a ext4 from '/dev/sda1' cannot be mounted in the VM"):
        translate("c1", spec, tmp_path, tmp_path / "rootfs")
    spec["mounts"][-1] = {"destination": "/null", "type": "bind", "source": "/dev/null", "options": ["bind"]}
    with pytest.raises(BundleError, match="neither a file nor a directory"):
        translate("c1", spec, tmp_path, tmp_path / "rootfs")


def test_shm_of_the_host_becomes_a_guest_tmpfs(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = _spec(runc_spec)
    spec["mounts"].append({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                           "options": ["rbind", "nosuid"]})
    g = translate("c1", spec, tmp_path, tmp_path / "rootfs")
    shm = g.spec["mounts"][-1]
    if shm["type"] == "bind":
        pytest.skip("/dev/shm is not a tmpfs mount on this host")
    assert shm["type"] == "tmpfs" and any(o.startswith("size=") for o in shm["options"]) and not g.shares


def test_exec_process() -> None:
    assert guest_process({"args": ["sh"], "apparmorProfile": "x", "selinuxLabel": "y", "cwd": "/"}) == {
        "args": ["sh"], "cwd": "/"}


def test_pod_annotations_and_peer_namespaces(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["annotations"] = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod1"}
    spec["linux"]["namespaces"] = [
        {"type": "ipc", "path": "/proc/4242/ns/ipc"}, {"type": "uts", "path": "/proc/4242/ns/uts"},
        {"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/proc/self/ns/net"}]
    with pytest.raises(BundleError, match="is the host's"):  # the pod's network must be its own
        translate("c2", spec, tmp_path, tmp_path / "rootfs", {4242: "pod1"})
    spec["linux"]["namespaces"][-1] = {"type": "network"}
    g = translate("c2", spec, tmp_path, tmp_path / "rootfs", {4242: "pod1"})
    assert g.sandbox_id == "pod1"
    assert g.spec["linux"]["namespaces"] == [
        {"type": "ipc", "path": "/run/kata-containers/ns/pod1/ipc"},
        {"type": "uts", "path": "/run/kata-containers/ns/pod1/uts"}, {"type": "pid"}, {"type": "mount"}]
    with pytest.raises(BundleError, match="only the namespaces of a container of the same sandbox"):
        translate("c2", spec, tmp_path, tmp_path / "rootfs", {4343: "pod1"})  # pid 4242 is not one of ours
    cri_o = {"io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "pod9"}
    assert translate("c3", {**copy.deepcopy(runc_spec), "annotations": cri_o}, tmp_path, tmp_path).sandbox_id == "pod9"
    sandbox = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod1"}
    own = translate("pod1", {**copy.deepcopy(runc_spec), "annotations": sandbox}, tmp_path, tmp_path)
    assert own.sandbox_id is None
    with pytest.raises(BundleError, match="no io.kubernetes.cri.sandbox-id"):
        translate("c4", {**copy.deepcopy(runc_spec), "annotations": {"io.kubernetes.cri.container-type": "container"}},
                  tmp_path, tmp_path)


def test_kernel_memory_is_dropped_for_cgroup_v2(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    from kata_runtime.oci.guest_spec import guest_resources

    limits = {"memory": {"limit": 268435456, "kernel": 1 << 20, "kernelTCP": 1 << 20}, "pids": {"limit": 10}}
    assert guest_resources(limits) == {"memory": {"limit": 268435456}, "pids": {"limit": 10}}
    assert limits["memory"]["kernel"] == 1 << 20
    g = translate("c1", _spec(runc_spec, resources=limits), tmp_path, tmp_path / "rootfs")
    assert g.spec["linux"]["resources"]["memory"] == {"limit": 268435456}


def test_memory_settings_cgroup_v2_lacks_are_dropped(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    # runc 1.1 ignores them on v2; the guest's crun would refuse the container
    limits = {"memory": {"reservation": 1 << 25, "swappiness": 50, "disableOOMKiller": True}}
    g = translate("c1", _spec(runc_spec, resources=limits), tmp_path, tmp_path / "rootfs")
    assert g.spec["linux"]["resources"]["memory"] == {"reservation": 1 << 25}


def test_the_guest_gets_an_oci_version_its_runtime_knows(runc_spec: dict[str, Any], tmp_path: Path) -> None:
    spec = _spec(runc_spec)
    spec["ociVersion"] = "1.3.0"
    assert translate("c1", spec, tmp_path, tmp_path / "rootfs").spec["ociVersion"] == "1.0.2-dev"
