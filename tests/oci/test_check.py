"""kata-check and kata-env on this very host."""

from __future__ import annotations

import os
import tomllib

from tests.oci.conftest import Kata


def test_kata_check_says_we_can_run_and_with_which_accelerator(kata: Kata) -> None:
    r = kata("kata-check")
    assert r.rc == 0, r.out + r.err
    assert "System is capable of running Kata Containers" in r.out
    assert "accelerator: kvm" in r.out or "accelerator: tcg" in r.out
    if os.path.exists("/dev/kvm") and "accelerator: tcg" in r.out:
        assert "KVM" in r.out  # says why /dev/kvm is not used


def test_kata_env_is_toml_with_the_paths_in_use(kata: Kata) -> None:
    env = tomllib.loads(kata.ok("kata-env").out)
    assert env["Hypervisor"]["Accel"] in ("kvm", "tcg")
    for section in ("Kernel", "Initrd", "Image"):
        assert os.path.exists(env[section]["Path"]), section
