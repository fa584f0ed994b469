"""``kata-runtime spec`` writes what ``runc spec`` writes, byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kata_runtime.cli.output import go_json
from kata_runtime.cli.spec import example_spec, spec_text, to_rootless
from kata_runtime.oci.spec import validate_spec

DATA = Path(__file__).resolve().parent / "data"


def test_default_spec_is_runcs_bytes() -> None:
    assert spec_text() == (DATA / "runc-spec.json").read_text()


def test_rootless_spec_is_runcs_with_the_network_namespace_kept() -> None:
    # captured from "runc spec --rootless" run as root (uid 0, gid 0); runc drops the network
    # namespace (to share the host's), which a VM cannot do
    runcs = json.loads((DATA / "runc-spec-rootless-uid0.json").read_text())
    assert {"type": "network"} not in runcs["linux"]["namespaces"]
    runcs["linux"]["namespaces"].insert(1, {"type": "network"})
    assert go_json(to_rootless(example_spec(), 0, 0), indent="\t") == go_json(runcs, indent="\t")


def test_rootless_maps_the_current_user() -> None:
    linux = json.loads(spec_text(rootless=True))["linux"]
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": os.getegid(), "size": 1}]


def test_specs_are_valid() -> None:
    assert validate_spec(example_spec()) is None
    assert validate_spec(json.loads(spec_text(rootless=True))) is None


def test_spec_command(run_cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run_cli("spec")
    assert (r.code, r.stdout, r.stderr) == (0, "", "")
    assert (tmp_path / "config.json").read_text() == (DATA / "runc-spec.json").read_text()
    r = run_cli("spec")
    assert (r.code, r.stderr) == (1, "kata-runtime: File config.json exists. Remove it first\n")
    (tmp_path / "b").mkdir()
    assert run_cli("spec", "--rootless", "-b", str(tmp_path / "b")).code == 0
    assert "uidMappings" in (tmp_path / "b" / "config.json").read_text()
    r = run_cli("spec", "-b", str(tmp_path / "nope"))
    assert r.stderr == f"kata-runtime: chdir {tmp_path / 'nope'}: no such file or directory\n"
