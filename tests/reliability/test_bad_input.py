"""Bad input, generated: ids, global paths, bundles, exec process files and state records that are
wrong in every way we could think of. Each goes through runc where runc has a verdict, and must get
the same verdict from us; every refusal of ours is one line with no traceback, exits non-zero and
leaves nothing behind. Nearly all are refused before a VM boots; the few that need a container use
clones of a VM template.

The paths that the engines give (``--pid-file``, ``--console-socket``) are in
tests/oci/test_cli_compat.py (BAD_PATHS); the spec's fields are in tests/oci/test_spec_verdicts.py,
whose runc helpers are used here."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.oci.conftest import make_bundle
from tests.oci.test_cli_compat import Runc, runc  # noqa: F401 - runc is a fixture
from tests.oci.test_spec_verdicts import RUNC, host_mounts_under, runc_create
from tests.reliability.helpers import Kata, Result, host_cgroups, leftovers, one_clear_line, settled

pytestmark = pytest.mark.skipif(not os.access(RUNC, os.X_OK), reason="runc is the reference")

# -- ids, with every command --------------------------------------------------------------------------

BAD_IDS = {
    "dotdot": "..", "dot": ".", "slash": "a/b", "parent": "../etc", "absolute": "/etc", "space": "a b",
    "unicode": "caf\u00e9", "long": "x" * 300, "empty": "", "newline": "a\nb", "dollar": "$(id)", "colon": "a:b",
    "star": "*", "tab": "a\tb", "dash": "-x", "semicolon": "a;rm",
}
# a well-formed id that is not there: runc's verdict for each command on a missing container
MISSING_IDS = {"dots-inside": "a..b", "plus": "a+b", "long-255": "y" * 255}
COMMANDS = {
    "create": ["create", "--bundle", "{bundle}", "{id}"], "start": ["start", "{id}"], "state": ["state", "{id}"],
    "kill": ["kill", "{id}", "9"], "kill-all": ["kill", "--all", "{id}", "KILL"], "delete": ["delete", "{id}"],
    "delete-force": ["delete", "--force", "{id}"], "ps": ["ps", "{id}"], "pause": ["pause", "{id}"],
    "resume": ["resume", "{id}"], "events": ["events", "--stats", "{id}"], "exec": ["exec", "{id}", "true"],
    "update": ["update", "--memory", "64M", "{id}"],
}
# runc fails to lstat a 300-byte name (ENAMETOOLONG) and so fails delete --force; for us such a
# container does not exist, and "delete --force" of a container that does not exist succeeds
SAME_AS_MISSING = {("long", "delete-force")}

# every command checks the id the same way first: a few commands per id keep CI short
BAD_ID_COMMANDS = ("create", "start", "state", "kill-all", "delete-force", "exec", "ps", "update")
MISSING_ID_COMMANDS = ("state", "kill", "delete-force", "exec")
ID_CASES = [(f"{i}-{c}", ident, c) for i, ident in BAD_IDS.items() for c in BAD_ID_COMMANDS] + \
    [(f"{i}-{c}", ident, c) for i, ident in MISSING_IDS.items() for c in MISSING_ID_COMMANDS]


@pytest.fixture(scope="module")
def empty_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with runc's spec and an empty rootfs: what is refused for its id never gets to it."""
    b = tmp_path_factory.mktemp("bad-input") / "bundle"
    (b / "rootfs").mkdir(parents=True)
    subprocess.run([RUNC, "spec", "--bundle", str(b)], check=True)
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["terminal"] = False
    (b / "config.json").write_text(json.dumps(spec))
    return b


def both(kata: Kata, runc: Runc, argv: list[str]) -> tuple[Result, Result]:  # noqa: F811
    return runc(*argv, timeout=30), kata(*argv, timeout=60)


def assert_same_verdict(theirs: Result, ours: Result, cid: str = "") -> None:
    assert (theirs.rc == 0) == (ours.rc == 0), f"runc rc {theirs.rc}: {theirs.err.strip()}\nours rc {ours.rc}: " \
        f"{ours.err.strip()}"
    if ours.rc != 0:
        one_clear_line(ours, cid)


@pytest.mark.parametrize(("ident", "command"), [c[1:] for c in ID_CASES], ids=[c[0] for c in ID_CASES])
def test_ids_as_runc(kata: Kata, runc: Runc, empty_bundle: Path, ident: str, command: str) -> None:  # noqa: F811
    argv = [a.format(bundle=empty_bundle, id=ident) for a in COMMANDS[command]]
    theirs, ours = both(kata, runc, argv)
    name = next((k for k, v in BAD_IDS.items() if v == ident), "")
    if (name, command) in SAME_AS_MISSING:
        assert theirs.rc != 0 and ours.rc == 0, (theirs.err, ours.err)
    else:
        assert_same_verdict(theirs, ours)
    if ours.rc != 0 and name not in ("", "long", "dash"):
        assert "container id" in ours.err.lower() or "id format" in ours.err.lower() or \
            "does not exist" in ours.err, ours.err
    assert not (kata.root / "sbs").exists() or not any((kata.root / "sbs").iterdir())


# -- global flags that point at odd places ------------------------------------------------------------

GLOBAL_PATHS = {
    "log-is-a-directory": ["--log", "{tmp}"], "log-in-missing-dir": ["--log", "{tmp}/nodir/log"],
    "log-under-a-file": ["--log", "{tmp}/file/log"], "root-is-a-file": ["--root", "{tmp}/file"],
    "root-under-a-file": ["--root", "{tmp}/file/root"], "log-format-unknown": ["--log-format", "yaml"],
    "root-missing": ["--root", "{tmp}/nodir/root"], "root-empty": ["--root", ""], "log-empty": ["--log", ""],
}


@pytest.mark.parametrize("command", ["list", "delete-force"])
@pytest.mark.parametrize("flags", list(GLOBAL_PATHS.values()), ids=list(GLOBAL_PATHS))
def test_global_paths_as_runc(tmp_path: Path, flags: list[str], command: str) -> None:
    (tmp_path / "file").write_text("")
    argv = [f.format(tmp=tmp_path) for f in flags] + {
        "state": ["state", "x1"], "list": ["list"], "delete-force": ["delete", "--force", "x1"],
        "kill": ["kill", "x1"]}[command]
    from tests.oci.conftest import KATA

    theirs = subprocess.run([RUNC, *argv], capture_output=True, text=True, timeout=30)
    ours = subprocess.run([KATA, *argv], capture_output=True, text=True, timeout=60)
    assert (theirs.returncode == 0) == (ours.returncode == 0), (theirs.stderr, ours.stderr)
    if ours.returncode:
        lines = ours.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in ours.stderr and "internal error" not in ours.stderr, lines


# -- bundles ------------------------------------------------------------------------------------------


def _spec(b: Path) -> dict[str, Any]:
    return dict(json.loads((b / "config.json").read_text()))


def _write(b: Path, spec: dict[str, Any]) -> None:
    (b / "config.json").write_text(json.dumps(spec, indent=1))


def _rootfs_replaced(kind: str):
    def change(b: Path) -> None:
        import shutil

        shutil.rmtree(b / "rootfs")
        if kind == "file":
            (b / "rootfs").write_text("not a directory")
        elif kind == "dangling":
            os.symlink("/nonexistent/rootfs", b / "rootfs")
        elif kind == "loop":
            os.symlink("rootfs", b / "rootfs")
        elif kind == "to-a-file":
            (b / "afile").write_text("")
            os.symlink("afile", b / "rootfs")
    return change


def _config(raw: bytes | None = None, *, directory: bool = False):
    def change(b: Path) -> None:
        (b / "config.json").unlink()
        if directory:
            (b / "config.json").mkdir()
        elif raw is not None:
            (b / "config.json").write_bytes(raw)
    return change


def _truncated(fraction: float):
    def change(b: Path) -> None:
        raw = (b / "config.json").read_bytes()
        (b / "config.json").write_bytes(raw[:int(len(raw) * fraction)])
    return change


def _process(**fields: Any):
    def change(b: Path) -> None:
        spec = _spec(b)
        for k, v in fields.items():
            if v is None:
                spec["process"].pop(k, None)
            else:
                spec["process"][k] = v
        _write(b, spec)
    return change


def _no_process(b: Path) -> None:
    spec = _spec(b)
    spec.pop("process")
    _write(b, spec)


def _invalid_utf8(b: Path) -> None:
    raw = (b / "config.json").read_bytes()
    (b / "config.json").write_bytes(raw.replace(b'"PATH=', b'"X=\xff\xfe", "PATH=', 1))


BUNDLES = {
    "rootfs-is-a-file": _rootfs_replaced("file"), "rootfs-dangling-symlink": _rootfs_replaced("dangling"),
    "rootfs-symlink-loop": _rootfs_replaced("loop"), "rootfs-link-to-a-file": _rootfs_replaced("to-a-file"),
    "rootfs-missing": _rootfs_replaced("missing"), "config-missing": _config(None),
    "config-is-a-directory": _config(directory=True), "config-empty": _config(b""),
    "config-array": _config(b"[]"), "config-null": _config(b"null"), "config-number": _config(b"42"),
    "config-string": _config(b'"spec"'), "config-garbage": _config(os.urandom(64).replace(b"{", b"(")),
    "config-nul-bytes": _config(b"\0" * 32), "config-nested-deep": _config(b"[" * 100000 + b"]" * 100000),
    **{f"config-truncated-{int(f * 100)}": _truncated(f) for f in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)},
    "process-missing": _no_process, "args-missing": _process(args=None), "args-empty": _process(args=[]),
    "args-a-string": _process(args="true"), "args-numbers": _process(args=[1, 2]),
    "env-a-string": _process(env="PATH=/bin"), "env-numbers": _process(env=[1]),
    "cwd-relative": _process(cwd="tmp"), "cwd-a-number": _process(cwd=5),
    "user-uid-string": _process(user={"uid": "0"}),
    "user-uid-negative": _process(user={"uid": -1, "gid": 0}), "rlimit-unknown": _process(
        rlimits=[{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]),
    "terminal-a-string": _process(terminal="yes"), "nnp-a-string": _process(noNewPrivileges="yes"),
}
DIFFERENT_BUNDLES = {
    # runc's JSON decoder puts U+FFFD in place of the bytes; we refuse what is not UTF-8
    "config-invalid-utf8": _invalid_utf8,
}


def _bundle_case(tmp_path: Path, empty_bundle: Path, change) -> Path:
    b = make_bundle(tmp_path / "bundle", ["true"])
    change(b)
    return b


@pytest.mark.parametrize("name", list(BUNDLES))
def test_bundles_as_runc(kata: Kata, cid: str, tmp_path: Path, empty_bundle: Path, name: str) -> None:
    b = _bundle_case(tmp_path, empty_bundle, BUNDLES[name])
    theirs = runc_create(b, tmp_path / "runc-root", cid, ())
    left = host_mounts_under(b)
    for point in sorted(left, key=len, reverse=True):
        subprocess.run(["umount", "-R", point], capture_output=True)
    assert not theirs.accepted, f"runc accepts {name}: a case that boots no VM must be one runc refuses"
    ours = kata("create", "--bundle", str(b), cid, timeout=120)
    if ours.rc == 0:
        kata("delete", "--force", cid)
    assert ours.rc != 0, f"runc refuses {name} ({theirs.err.strip()}), we accept"
    one_clear_line(ours, cid)
    assert "does not exist" in kata("state", cid).err
    assert not leftovers(kata, cid)


@pytest.mark.parametrize("name", list(DIFFERENT_BUNDLES))
def test_bundles_we_refuse_on_purpose(kata: Kata, cid: str, tmp_path: Path, empty_bundle: Path, name: str) -> None:
    b = _bundle_case(tmp_path, empty_bundle, DIFFERENT_BUNDLES[name])
    one_clear_line(kata("create", "--bundle", str(b), cid), cid)
    assert not leftovers(kata, cid)


# -- what needs a container: exec's process file, huge args and env, corrupt state records -----------

EXEC_PROCESSES: dict[str, bytes | Any] = {
    "not-json": b"{nope", "empty-file": b"", "truncated": b'{"args": ["true"], "cwd": "/', "array": [],
    "null": None, "nested-deep": b"[" * 100000 + b"]" * 100000, "invalid-utf8": b'{"args": ["\xff"], "cwd": "/"}',
    "args-missing": {"cwd": "/"}, "args-empty": {"args": [], "cwd": "/"},
    "args-a-string": {"args": "true", "cwd": "/"}, "args-numbers": {"args": [1], "cwd": "/"},
    "cwd-missing": {"args": ["true"]},
    "cwd-relative": {"args": ["true"], "cwd": "tmp"}, "cwd-a-number": {"args": ["true"], "cwd": 1},
}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, template_config: Path) -> Any:
    """A running container of each runtime (ours from the template), deleted after the module."""
    where = tmp_path_factory.mktemp("running")
    ours = Kata(where / "root", where / "kata.log", template_config)
    theirs = Runc(where / "runc-root", where / "runc.log")
    ident = "bad-input-" + where.name[-6:].strip("-_")
    b = make_bundle(where / "bundle", ["sleep", "1000"])
    for rt in (ours, theirs):
        rt.ok("run", "--detach", "--bundle", str(b), ident)
    yield ours, theirs, ident
    for rt in (ours, theirs):
        rt("delete", "--force", ident)
    assert not leftovers(ours, ident)


@pytest.mark.parametrize("name", list(EXEC_PROCESSES))
def test_exec_process_files_as_runc(running: Any, tmp_path: Path, name: str) -> None:
    ours, theirs, ident = running
    p = tmp_path / "process.json"
    body = EXEC_PROCESSES[name]
    p.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    before = sorted(leftovers(ours, ident))
    t, o = theirs("exec", "--process", str(p), ident, timeout=30), ours("exec", "--process", str(p), ident)
    assert_same_verdict(t, o, ident)
    assert sorted(leftovers(ours, ident)) == before
    assert ours.state(ident)["status"] == "running"


def test_huge_args_and_env_run(kata: Kata, cid: str, bundle, template_config: Path) -> None:
    """1000 arguments and 1000 variables of 100 bytes (runc runs them): the workload sees them all."""
    kata.config = template_config
    env = ["PATH=/bin"] + [f"V{i}={'v' * 100}" for i in range(1000)]
    b = bundle(["sh", "-c", 'echo $# $(env | grep -c ^V)', "sh", *[f"a{i}" for i in range(1000)]], env=env)
    r = kata("run", "--bundle", str(b), cid)
    assert r.rc == 0 and r.out.split() == ["1000", "1000"], (r.rc, r.out[-200:], r.err)


CORRUPTIONS = {
    "truncated": lambda raw: raw[:len(raw) // 2], "empty": lambda raw: b"", "garbage": lambda raw: b"\x00\xff" * 50,
    "array": lambda raw: b"[]", "containers-a-list": lambda raw: json.dumps({"id": "x", "containers": []}).encode(),
    "status-unknown": lambda raw: raw.replace(b'"status": "created"', b'"status": "exploded"'),
    "pid-a-string": lambda raw: raw.replace(b'"pid": ', b'"pid": "x", "was": ', 1),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_state_record(kata: Kata, cid: str, bundle, template_config: Path, name: str) -> None:
    """``state`` says the record is corrupt (one line), ``list`` still works, ``delete --force``
    removes the VM, kata-proxy, shim, netns, shares, sockets and state that the id names, and the
    host cgroup that its spec named (which the id alone does not)."""
    kata.config = template_config
    b = bundle(["sleep", "1000"])
    spec = json.loads((b / "config.json").read_text())
    cgroup = spec["linux"]["cgroupsPath"] = f"/kata-rel-{cid}/box"
    (b / "config.json").write_text(json.dumps(spec))
    kata.ok("create", "--bundle", str(b), cid)
    assert host_cgroups(cgroup), "the sandbox has no host cgroup to lose"
    record = kata.root / "sbs" / cid / "sandbox.json"
    raw = record.read_bytes()
    record.write_bytes(CORRUPTIONS[name](raw))
    assert record.read_bytes() != raw
    line = one_clear_line(kata("state", cid), cid)
    assert "corrupt" in line, line
    assert kata("list").rc == 0
    kata.ok("delete", "--force", cid)
    left = settled(lambda: leftovers(kata, cid, cgroup) + host_cgroups(f"/kata-rel-{cid}"))
    assert not left, "\n".join(left)


def test_a_corrupt_cgroup_record_removes_nothing_outside_the_cgroup_hierarchies(kata: Kata, cid: str,
                                                                               tmp_path: Path) -> None:
    """``delete --force`` of a corrupt record removes the host cgroup its own record names, and only
    directories of the host's cgroup hierarchies: an empty directory elsewhere stays."""
    outside = tmp_path / "not-a-cgroup"
    outside.mkdir()
    state = kata.root / "sbs" / cid
    state.mkdir(parents=True)
    (state / "sandbox.json").write_text("{nope")
    (state / "cgroup.json").write_text(json.dumps({"path": "/x", "version": 1, "dirs": [str(outside)],
                                                   "made": [str(outside)]}))
    kata.ok("delete", "--force", cid)
    assert outside.is_dir()
    assert not settled(lambda: leftovers(kata, cid))
