"""The reliability group: faults injected in our own code, bad input, security, races and load.
It reuses the fixtures of tests/oci (a private root per test, bundles, the per-test leak check)
and adds a VM template shared by the group, so that a sandbox costs a clone (~1 s), not a boot."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci.conftest import (  # noqa: F401 - fixtures and the report hook of tests/oci
    Kata,
    bundle,
    cid,
    config_with,
    kata,
    nothing_left,
    pytest_runtest_makereport,
)


@pytest.fixture(scope="session")
def template_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A configuration with ``[factory] enable_template`` (and kata-netmon, so that its start is
    one of the acquisitions), whose template is made once for the group (a boot, ~8-10 s, saved
    five times over) and destroyed after it; a test that may break it puts it back
    (``helpers.ensure_template``)."""
    where = tmp_path_factory.mktemp("template")
    shm = Path("/dev/shm") / f"kata-rel-{uuid.uuid4().hex[:8]}"
    shm.mkdir()
    cfg = config_with(where, factory_enable_template=True, factory_template_path=str(shm / "template"),
                      netmon_enable_netmon=True)
    maker = Kata(where / "root", where / "factory.log", cfg)
    maker.ok("factory", "init")
    # a copy to put back when a fault makes the template look broken (it is removed then, as it
    # must be): a copy costs 0.2 s, a new template a boot
    subprocess.run(["cp", "-a", str(shm / "template"), str(shm / "saved")], check=True)
    yield cfg
    maker("factory", "destroy")
    shutil.rmtree(shm, ignore_errors=True)
