"""OCI hooks on the host (oci/hooks.py): state on stdin, env, timeout, failures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kata_runtime.oci.hooks import HookError, hook_state, run_hooks


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_state_on_stdin_args_and_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook = {"path": _script(tmp_path, "h", f'cat >> {out}; echo >> {out}; echo "$0 $1 $FOO" >> {out}\n'),
            "args": ["myhook", "arg1"], "env": ["FOO=bar"]}
    state = hook_state("c1", "creating", 42, str(tmp_path), {"a": "b"})
    run_hooks("prestart", {"prestart": [hook, hook]}, state, "c1", "create")
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and lines[0] == lines[2]  # both ran, in order
    assert json.loads(lines[0]) == {"ociVersion": state["ociVersion"], "id": "c1", "status": "creating",
                                    "pid": 42, "bundle": str(tmp_path), "annotations": {"a": "b"}}
    assert lines[1].endswith(" arg1 bar")


def test_failing_prestart_is_fatal_and_says_why(tmp_path: Path) -> None:
    ran = tmp_path / "second"
    hooks = {"prestart": [{"path": _script(tmp_path, "bad", "echo oops >&2; exit 3\n")},
                          {"path": _script(tmp_path, "good", f"touch {ran}\n")}]}
    with pytest.raises(HookError, match=r"error running prestart hook #0 \(.*bad\): exit status 3, stderr: oops"):
        run_hooks("prestart", hooks, hook_state("c1", "creating", 1, "/", {}), "c1", "create")
    assert not ran.exists()  # hooks stop at the first failure


def test_timeout(tmp_path: Path) -> None:
    hooks = {"createRuntime": [{"path": _script(tmp_path, "slow", "sleep 5\n"), "timeout": 1}]}
    with pytest.raises(HookError, match="timeout after 1 seconds"):
        run_hooks("createRuntime", hooks, hook_state("c1", "creating", 1, "/", {}), "c1", "create")


def test_missing_hook_binary(tmp_path: Path) -> None:
    with pytest.raises(HookError, match="No such file"):
        run_hooks("prestart", {"prestart": [{"path": str(tmp_path / "nope")}]},
                  hook_state("c1", "creating", 1, "/", {}), "c1", "create")


def test_poststop_failures_are_logged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ran = tmp_path / "second"
    hooks = {"poststop": [{"path": _script(tmp_path, "bad", "exit 1\n")},
                          {"path": _script(tmp_path, "good", f"touch {ran}\n")}]}
    with caplog.at_level(logging.WARNING):
        run_hooks("poststop", hooks, hook_state("c1", "stopped", 0, "/", {}), "c1", "delete")
    assert ran.exists() and "poststop hook #0" in caplog.text
