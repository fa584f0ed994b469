"""VM templates: factory init/status/destroy, and sandboxes cloned from the template."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci.conftest import Kata, config_with


@pytest.fixture
def template_config(tmp_path: Path) -> Iterator[Path]:
    # guest RAM of the template lives in shared memory, as it would under /run
    root = Path("/dev/shm") / f"kata-test-{uuid.uuid4().hex[:8]}"
    yield config_with(tmp_path, factory_enable_template=True, factory_template_path=str(root / "template"))
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def clone_ids(request: pytest.FixtureRequest, cid: str) -> tuple[str, str]:
    request.node.extra_ids = [cid + "b"]
    return cid, cid + "b"


def test_sandboxes_cloned_from_a_template(kata: Kata, bundle, clone_ids, template_config: Path) -> None:
    cfg = template_config
    assert "no VM template" in kata.ok("factory", "status", config=cfg).out
    kata.ok("factory", "init", config=cfg)
    assert "VM template at" in kata.ok("factory", "status", config=cfg).out
    again = kata("factory", "init", config=cfg)
    assert again.rc != 0 and "already exists" in again.err and len(again.err.strip().splitlines()) == 1
    assert not subprocess.run(["pgrep", "-f", "sandbox-template "], capture_output=True).stdout  # no VM left

    b = bundle(["sh", "-c", "uname -r; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'"])
    outs = []
    kata.debug = True  # phase lines in the log say whether the VM was restored or booted
    for c in clone_ids:
        t0 = time.time()
        r = kata("run", "--bundle", str(b), c, config=cfg)
        assert r.rc == 0, r.err
        release, guest_time, random = r.out.split("\n")[:3]
        assert release.endswith("-amd64")
        assert abs(int(guest_time) - t0) < 30  # the clone's clock was set, not the template's
        outs.append(random)
    assert outs[0] != outs[1]  # and each clone was reseeded
    restored = [m for m in kata.log_messages() if m.startswith("phase vm_restored")]
    assert len(restored) == 2, "the sandboxes were cold-booted, not cloned"

    kata.ok("factory", "destroy", config=cfg)
    assert "no VM template" in kata.ok("factory", "status", config=cfg).out
