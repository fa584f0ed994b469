"""configuration.toml loading: defaults, overrides, search order, type errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kata_runtime import config
from kata_runtime.config import Config, find_config, load_config
from kata_runtime.errors import ConfigError


@pytest.fixture(autouse=True)
def no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KATA_CONF_FILE", raising=False)
    monkeypatch.setattr(config, "SEARCH_PATHS", (tmp_path / "etc.toml", tmp_path / "share.toml"))


def test_defaults_without_a_file() -> None:
    cfg = load_config()
    assert cfg == Config()
    assert cfg.source == "" and cfg.hypervisor.accel == "auto" and cfg.hypervisor.default_memory == 512


def test_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("""
[hypervisor.qemu]
path = "/opt/qemu"
kernel = "/k"
default_memory = 1024
accel = "tcg"
not_a_key_we_know = "ignored"
[agent.kata]
dial_timeout = 5
[runtime]
enable_debug = true
internetworking_model = "none"
[factory]
enable_template = true
[proxy.kata]
path = "/p"
[shim.kata]
path = "/s"
""")
    cfg = load_config(f)
    assert cfg.source == str(f)
    hv = cfg.hypervisor
    assert (hv.path, hv.kernel, hv.default_memory) == ("/opt/qemu", "/k", 1024)
    assert cfg.hypervisor.accel == "tcg" and cfg.hypervisor.machine_type == "q35"
    assert cfg.agent.dial_timeout == 5.0 and isinstance(cfg.agent.dial_timeout, float)
    assert cfg.runtime.enable_debug is True and cfg.runtime.internetworking_model == "none"
    assert cfg.factory.enable_template is True
    assert (cfg.proxy_path, cfg.shim_path) == ("/p", "/s")


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share = tmp_path / "share.toml"
    share.write_text("[hypervisor.qemu]\ndefault_vcpus = 2\n")
    assert find_config(None) == share
    etc = tmp_path / "etc.toml"
    etc.write_text("[hypervisor.qemu]\ndefault_vcpus = 3\n")
    assert find_config(None) == etc and load_config().hypervisor.default_vcpus == 3
    env = tmp_path / "env.toml"
    env.write_text("")
    monkeypatch.setenv("KATA_CONF_FILE", str(env))
    assert find_config(None) == env
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("")
    assert find_config(explicit) == explicit


@pytest.mark.parametrize(("text", "message"), [
    ('[hypervisor.qemu]\ndefault_memory = "lots"\n', "default_memory must be int, not str"),
    ("[hypervisor.qemu]\nenable_debug = 1\n", "enable_debug must be bool, not int"),
    ('[hypervisor.qemu]\naccel = "hvf"\n', "accel must be auto, kvm or tcg"),
    ("[hypervisor.qemu\n", "cannot load configuration"),
    ("[runtime]\nenable_debug = [1]\n", "enable_debug must be bool, not list"),
])
def test_errors_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert message in str(e.value) and str(f) in str(e.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
