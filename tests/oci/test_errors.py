"""Bad input: one clear line naming the container and the cause, a non-zero exit, an error line in
the --log JSON, and nothing left behind."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.oci.conftest import Kata, config_with


def assert_one_clear_error(kata: Kata, r, cid: str, *words: str) -> None:
    assert r.rc != 0
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {r.err!r}"
    assert "Traceback" not in r.err
    if cid:
        assert cid in lines[0], lines[0]
    for w in words:
        assert w.lower() in lines[0].lower(), f"{w!r} not in {lines[0]!r}"
    errors = kata.log_errors()
    assert errors, "no error line in --log"
    assert set(errors[-1]) >= {"level", "msg", "time"}
    assert errors[-1]["msg"] and (not cid or cid in errors[-1]["msg"])


def test_missing_bundle(kata: Kata, cid: str, tmp_path: Path) -> None:
    r = kata("create", "--bundle", str(tmp_path / "nope"), cid)
    assert_one_clear_error(kata, r, cid, "bundle")


def test_config_not_json(kata: Kata, bundle, cid: str) -> None:
    b = bundle(["true"])
    (b / "config.json").write_text("{not json")
    assert_one_clear_error(kata, kata("create", "--bundle", str(b), cid), cid, "json")


def test_config_fails_the_schema(kata: Kata, bundle, cid: str) -> None:
    b = bundle(["true"])
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["args"] = "not-a-list"
    (b / "config.json").write_text(json.dumps(spec))
    assert_one_clear_error(kata, kata("create", "--bundle", str(b), cid), cid, "args")


def test_rootfs_missing(kata: Kata, bundle, cid: str) -> None:
    b = bundle(["true"])
    subprocess.run(["rm", "-rf", str(b / "rootfs")], check=True)
    assert_one_clear_error(kata, kata("create", "--bundle", str(b), cid), cid, "rootfs")


def test_unknown_id(kata: Kata, cid: str) -> None:
    for cmd in (["state", cid], ["start", cid], ["kill", cid], ["delete", cid], ["exec", cid, "true"]):
        r = kata(*cmd)
        assert_one_clear_error(kata, r, cid, "does not exist")


@pytest.mark.parametrize("bad", ["a/b", "..", "../x", "a b"])
def test_bad_ids(kata: Kata, bundle, bad: str) -> None:
    b = bundle(["true"])
    r = kata("create", "--bundle", str(b), bad)
    assert_one_clear_error(kata, r, "", "invalid")
    assert not (kata.root / "sbs").exists() or not any((kata.root / "sbs").iterdir())


def test_qemu_binary_missing(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    cfg = config_with(tmp_path, path="/nonexistent/qemu-system-x86_64")
    r = kata("create", "--bundle", str(bundle(["true"])), cid, config=cfg)
    assert_one_clear_error(kata, r, cid, "/nonexistent/qemu-system-x86_64")


def test_guest_image_missing(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    cfg = config_with(tmp_path, image="/nonexistent/kata.img")
    r = kata("create", "--bundle", str(bundle(["true"])), cid, config=cfg)
    assert_one_clear_error(kata, r, cid, "/nonexistent/kata.img")


def test_agent_not_answering(kata: Kata, bundle, cid: str, tmp_path: Path) -> None:
    # the agent looks for a port that does not exist: it never answers
    cfg = config_with(tmp_path, kernel_params="agent.channel=nosuch", agent_dial_timeout=4)
    t0 = time.monotonic()
    r = kata("create", "--bundle", str(bundle(["true"])), cid, config=cfg)
    assert_one_clear_error(kata, r, cid, "did not answer within 4s")
    assert time.monotonic() - t0 < 60
