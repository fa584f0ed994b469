"""Spec fields that the OCI conformance suite (opencontainers/runtime-tools' ``validation/``, README
"OCI spec in a VM") found us failing, with a real VM: a spec of runtime-spec 1.3.0, a user
namespace with id mappings, a bind mount's name in the container's mountinfo, and memory settings
that cgroup v2 does not have.

One VM for the module: one container whose spec has all of them; each test checks one."""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import our_leftovers, sandbox_leftovers
from tests.oci.conftest import Kata, make_bundle

MIB = 1 << 20
RESERVATION = 32 * MIB


@dataclass
class Container:
    kata: Kata
    cid: str

    def sh(self, script: str) -> str:
        return self.kata.ok("exec", self.cid, "sh", "-c", script).out


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    tmp = tmp_path_factory.mktemp("conformance")
    cid = "k" + uuid.uuid4().hex[:10]
    kata = Kata(tmp / "root", tmp / "kata.log")
    b = make_bundle(tmp / "bundle", ["sleep", "100000"])
    (tmp / "vol").mkdir()
    (b / "rootfs" / "mnt" / "vol").mkdir(parents=True)  # root of the rootfs is not mapped: no mkdir in it
    (tmp / "vol" / "data").write_text("from the host\n")
    spec = json.loads((b / "config.json").read_text())
    spec["ociVersion"] = "1.3.0"  # the guest's crun 1.8 knows only 1.0: the runtime must not pass it on
    spec["linux"]["namespaces"].append({"type": "user"})
    spec["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1000}]
    spec["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1000}]
    spec["mounts"].append({"destination": "/mnt/vol", "type": "bind", "source": str(tmp / "vol"),
                           "options": ["rbind", "ro"]})
    # no limit, so that the VM has the default size; swappiness and the OOM switch: cgroup v1 only
    spec["linux"]["resources"] = {"memory": {"reservation": RESERVATION, "swappiness": 50,
                                             "disableOOMKiller": True}}
    (b / "config.json").write_text(json.dumps(spec))
    kata.ok("create", "--bundle", str(b), cid)
    c = Container(kata, cid)
    try:
        kata.ok("start", cid)
        yield c
    finally:
        kata("delete", "--force", cid)
        left = our_leftovers(cid) + sandbox_leftovers(kata.root, cid)
        assert not left, left


def test_a_spec_of_runtime_spec_1_3_runs(ctr: Container) -> None:
    assert ctr.kata.state(ctr.cid)["status"] == "running"
    assert ctr.sh("echo hello") == "hello\n"


def test_root_of_a_user_namespace_is_the_mapped_uid(ctr: Container) -> None:
    assert ctr.sh("cat /proc/self/uid_map").split() == ["0", "1000", "1000"]
    assert ctr.sh("cat /proc/self/gid_map").split() == ["0", "1000", "1000"]
    assert ctr.sh("id -u").strip() == "0"


def test_the_user_namespace_container_reads_its_rootfs_and_bind_mount(ctr: Container) -> None:
    # both reached through the VM's shared directory, which the mapped uid must be able to search
    assert ctr.sh("cat /mnt/vol/data") == "from the host\n"
    assert "sleep" in ctr.sh("ls /bin")


def test_the_shared_directory_stays_root_only_on_the_host(ctr: Container) -> None:
    # the guest reaches the user namespace's rootfs through a bind of its own, not by opening the
    # host's directory to all: other host users must not reach a container's files (setuid ones)
    from kata_runtime.store import SandboxStore

    record = json.loads((SandboxStore(ctr.kata.root).sandbox_dir(ctr.cid) / "sandbox.json").read_text())
    assert stat.S_IMODE(os.stat(record["shared_dir"]).st_mode) == 0o700


def test_a_bind_mount_shows_its_source_name_as_its_root(ctr: Container) -> None:
    # mountinfo: id parent major:minor ROOT MOUNTPOINT ...; on the host ROOT ends in the source's name
    lines = [line.split() for line in ctr.sh("cat /proc/self/mountinfo").splitlines()]
    roots = [fields[3] for fields in lines if fields[4] == "/mnt/vol"]
    assert len(roots) == 1 and roots[0].endswith("/vol"), roots


def test_memory_settings_that_cgroup_v2_lacks_are_ignored_and_the_reservation_applies(ctr: Container) -> None:
    cgroup = ctr.sh("sed -n 's/^0:://p' /proc/self/cgroup").strip()
    assert ctr.sh(f"cat /sys/fs/cgroup{cgroup}/memory.low").strip() == str(RESERVATION)
