"""kata-check and kata-env (kata_runtime.check), with the accelerator probe faked."""

from __future__ import annotations

import sys
import tomllib
import types
from pathlib import Path

import pytest

from kata_runtime import check
from kata_runtime.container import RuntimeOptions


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration whose qemu, kernel and initrd exist; choose_accel answers tcg."""
    qemu = tmp_path / "qemu"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.0 (fake)'\necho second line\n")
    qemu.chmod(0o755)
    (tmp_path / "vmlinux").write_text("")
    (tmp_path / "initrd").write_text("")
    conf = tmp_path / "configuration.toml"
    conf.write_text(f'[hypervisor.qemu]\npath = "{qemu}"\nkernel = "{tmp_path}/vmlinux"\n'
                    f'initrd = "{tmp_path}/initrd"\nimage = "{tmp_path}/none.img"\n'
                    f'[proxy.kata]\npath = "{qemu}"\n[shim.kata]\npath = "{qemu}"\n')
    accel = types.ModuleType("kata_runtime.hypervisor.accel")
    accel.choose_accel = lambda setting, q, k, i: ("tcg", "/dev/kvm cannot boot a guest: probe timed out")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kata_runtime.hypervisor.accel", accel)
    return conf


def test_capable(host: Path) -> None:
    out, capable = check.run_check(RuntimeOptions(kata_config=host))
    assert capable is True
    assert out[-1] == ("System is capable of running Kata Containers "
                       "(accelerator: tcg: /dev/kvm cannot boot a guest: probe timed out)")
    assert any(line.startswith("kernel ") and line.endswith(": found") for line in out)


def test_not_capable(host: Path, tmp_path: Path) -> None:
    (tmp_path / "vmlinux").unlink()
    lines, capable = check.run_check(RuntimeOptions(kata_config=host))
    assert capable is False
    last = lines[-1]
    assert last.startswith("System is not capable of running Kata Containers: kernel ")


def test_env_report_is_toml(host: Path) -> None:
    report = check.env_report(RuntimeOptions(kata_config=host))
    data = tomllib.loads(report)
    assert data["Runtime"]["Version"]["Semver"] == "0.1.0"
    assert data["Runtime"]["Version"]["OCI"] == "1.0.2-dev"
    assert data["Runtime"]["Config"]["Path"] == str(host)
    assert data["Hypervisor"]["Version"] == "QEMU emulator version 7.2.0 (fake)"
    assert data["Hypervisor"]["Accel"] == "tcg"
    assert data["Host"]["VMContainerCapable"] is True
    assert data["Kernel"]["Path"].endswith("vmlinux")
    assert "Distro" in data["Host"] and "Kernel" in data["Host"]


def test_to_toml_escapes_and_nests() -> None:
    text = check.to_toml({"A": {"s": 'q"\\\n', "n": 1, "b": False, "l": ["x"], "B": {"c": "d"}}})
    assert tomllib.loads(text) == {"A": {"s": 'q"\\\n', "n": 1, "b": False, "l": ["x"], "B": {"c": "d"}}}


def test_cli_commands(host: Path, run_cli) -> None:
    r = run_cli("--kata-config", str(host), "kata-check")
    assert r.code == 0 and "System is capable" in r.stdout
    r = run_cli("--kata-config", str(host), "kata-env")
    assert r.code == 0 and tomllib.loads(r.stdout)["Meta"]["Version"]
    r = run_cli("--kata-config", str(host) + ".missing", "kata-env")
    assert r.code == 1 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
