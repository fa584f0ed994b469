"""Fixtures for the CLI against real bundles and real VMs (real QEMU, real guest image)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import our_leftovers, sandbox_leftovers

KATA = str(Path(sys.executable).with_name("kata-runtime"))
BUSYBOX = "/bin/busybox"
INSTALLED_CONFIG = Path("/usr/share/defaults/kata-containers/configuration.toml")


@dataclass
class Result:
    rc: int
    out: str
    err: str
    raw_out: bytes = b""
    raw_err: bytes = b""


class Kata:
    """Runs ``kata-runtime --root <private root>`` like a user does."""

    def __init__(self, root: Path, log: Path, config: Path | None = None) -> None:
        self.root = root
        self.log = log
        self.config = config
        self.calls = 0
        self.debug = False

    def argv(self, *args: str, config: Path | None = None) -> list[str]:
        base = [KATA, "--root", str(self.root), "--log", str(self.log), "--log-format", "json"]
        if self.debug:
            base.append("--debug")
        cfg = config or self.config
        if cfg is not None:
            base += ["--kata-config", str(cfg)]
        return base + list(args)

    def __call__(self, *args: str, input: bytes | None = None, timeout: float = 180,
                 config: Path | None = None) -> Result:
        """Run the CLI. Commands that leave a process behind (create, run -d, exec -d) hand it
        their stdio, so output is collected in files rather than pipes that would stay open."""
        detaching = args[0] == "create" or "-d" in args or "--detach" in args
        if not detaching:
            p = subprocess.run(self.argv(*args, config=config), input=input, capture_output=True, timeout=timeout,
                               stdin=None if input is not None else subprocess.DEVNULL)
            return Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"),
                          p.stdout, p.stderr)
        self.calls += 1
        out_path, err_path = self.log.with_name(f"out{self.calls}"), self.log.with_name(f"err{self.calls}")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            p = subprocess.run(self.argv(*args, config=config), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               timeout=timeout)
        raw_out, raw_err = out_path.read_bytes(), err_path.read_bytes()
        return Result(p.returncode, raw_out.decode(errors="replace"), raw_err.decode(errors="replace"),
                      raw_out, raw_err)

    def ok(self, *args: str, **kw: Any) -> Result:
        r = self(*args, **kw)
        assert r.rc == 0, f"kata-runtime {' '.join(args)} failed ({r.rc}): {r.err}"
        return r

    def state(self, cid: str) -> dict[str, Any]:
        return dict(json.loads(self.ok("state", cid).out))

    def log_messages(self) -> list[str]:
        if not self.log.exists():
            return []
        return [json.loads(line).get("msg", "") for line in self.log.read_text().splitlines() if line.strip()]

    def log_errors(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [e for e in lines if e.get("level") == "error"]


def make_bundle(path: Path, args: list[str], mountpoints: bool = True, **process: Any) -> Path:
    """A busybox bundle at ``path`` whose process runs ``args`` (runc's default spec: read-only
    root). ``mountpoints=False`` leaves out /proc, /sys, /dev... for the runtime to make."""
    rootfs = path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", rootfs / "bin" / a)
    for d in ("proc", "sys", "dev", "tmp", "etc") if mountpoints else ():
        (rootfs / d).mkdir(exist_ok=True)
    subprocess.run(["runc", "spec", "--bundle", str(path)], check=True)
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["process"].update(process)
    (path / "config.json").write_text(json.dumps(spec, indent=2))
    return path


def _toml(data: dict, prefix: str = "") -> list[str]:
    """Enough TOML for configuration.toml: scalars, lists and nested tables."""
    lines = [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
             for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            lines += ["", f"[{name}]", *_toml(v, name + ".")]
    return lines


def config_with(tmp_path: Path, **changes: object) -> Path:
    """The installed configuration with some [hypervisor.qemu] keys replaced (``agent_*``: [agent.kata],
    ``factory_*``: [factory], ``netmon_*``: [netmon])."""
    import tomllib

    data = tomllib.loads(INSTALLED_CONFIG.read_text())
    for k, v in changes.items():
        if k.startswith("agent_"):
            data.setdefault("agent", {}).setdefault("kata", {})[k[6:]] = v
        elif k.startswith("factory_"):
            data.setdefault("factory", {})[k[8:]] = v
        elif k.startswith("netmon_"):
            data.setdefault("netmon", {})[k[7:]] = v
        else:
            data.setdefault("hypervisor", {}).setdefault("qemu", {})[k] = v
    path = tmp_path / "configuration.toml"
    path.write_text("\n".join(_toml(data)) + "\n")
    return path


@pytest.fixture
def cid() -> str:
    """A container id unique to this test (tests run in parallel)."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def kata(tmp_path: Path) -> Kata:
    root = tmp_path / "root"
    return Kata(root, tmp_path / "kata.log")


@pytest.fixture
def bundle(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(args: list[str], mountpoints: bool = True, **process: Any) -> Path:
        return make_bundle(tmp_path / f"bundle{next(counter)}", args, mountpoints, **process)

    return make


@pytest.fixture(autouse=True)
def nothing_left(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """After every test: no VM, proxy, shim, mount or state directory of its containers."""
    yield
    ids = [v for k, v in request.node.funcargs.items() if k in ("cid",)] + \
        getattr(request.node, "extra_ids", [])
    root = tmp_path / "root"
    if getattr(request.node, "rep_call_failed", False):
        # clean up what a failed test left, so that later tests and the session check stay honest
        for i in ids:
            subprocess.run([KATA, "--root", str(root), "delete", "--force", i], capture_output=True)
    left: list[str] = []
    for i in ids:
        left += our_leftovers(i) + sandbox_leftovers(root, i)
    assert not left, "left behind:\n" + "\n".join(left)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed  # type: ignore[attr-defined]

