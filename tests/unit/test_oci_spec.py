"""Bundle loading, runtime-spec schema validation, container ids and signals (kata_runtime.oci.spec)."""

from __future__ import annotations

import copy
import filecmp
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.errors import BundleError, InvalidArgument
from kata_runtime.oci import spec as ocispec
from kata_runtime.oci.spec import load_bundle, parse_signal, validate_id, validate_spec

REPO = Path(__file__).resolve().parents[2]


# -- container ids: runc's idRegex and messages ---------------------------------------------------

@pytest.mark.parametrize("cid", ["c1", "a-b_c.d+e", "0123456789abcdef" * 4, "UPPER", "x" * 1024, "a..b",
                                 ".hidden", "..."])
def test_valid_ids(cid: str) -> None:
    validate_id(cid)


@pytest.mark.parametrize("cid", ["a/b", "a b", "..", ".", "a:b", "a$b", "é", "a\nb", "/abs", "a\\b"])
def test_invalid_ids_have_runc_message(cid: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_id(cid)
    assert str(e.value) == "invalid container ID format"  # runc 1.1.5, verbatim


def test_empty_id_has_runc_message() -> None:
    with pytest.raises(InvalidArgument, match="^container id cannot be empty$"):
        validate_id("")


# -- signals: runc's parseSignal ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "number"), [
    ("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("sigkill", 9), ("SigTerm", 15), ("9", 9), ("15", 15),
    ("0", 0), ("+9", 9), ("USR1", 10), ("SIGUSR2", 12), ("WINCH", 28), ("SIGCHLD", 17), ("PWR", 30),
    ("SIGSYS", 31), ("STKFLT", 16), ("34", 34), ("64", 64),
])
def test_parse_signal(text: str, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("text", ["FOO", "sigfoo", "IOT", "CLD", "POLL", "RTMIN", "SIGRTMIN+1", "UNUSED", "",
                                  "9x", "SIG"])
def test_unknown_signal_has_runc_message(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_signal(text)
    assert str(e.value) == f'unknown signal "{text}"'  # runc: unknown signal "FOO"


@pytest.mark.parametrize("text", ["-9", "999", "65"])
def test_signal_number_out_of_range(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid signal"):
        parse_signal(text)


# -- the schemas ---------------------------------------------------------------------------------

def test_packaged_schemas_are_the_repository_copy() -> None:
    top, packaged = REPO / "oci-spec", REPO / "kata_runtime" / "oci-spec"
    names = sorted(p.name for p in top.glob("*.json"))
    assert names == sorted(p.name for p in packaged.glob("*.json"))
    assert "config-schema.json" in names and "defs.json" in names and "state-schema.json" in names
    match, mismatch, errors = filecmp.cmpfiles(top, packaged, names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert ocispec.SCHEMA_DIR == packaged


def test_runc_default_spec_is_valid(runc_spec: dict[str, Any]) -> None:
    assert validate_spec(runc_spec) is None


def test_rootless_runc_spec_is_valid() -> None:
    spec = json.loads((Path(__file__).parent / "data" / "runc-spec-rootless-uid0.json").read_text())
    assert validate_spec(spec) is None


def test_minimal_spec_is_valid() -> None:
    assert validate_spec({"ociVersion": "1.0.2"}) is None


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda s: s["process"].__setitem__("args", "sh"), "$.process.args: 'sh' is not of type 'array'"),
    (lambda s: s.pop("ociVersion"), "$: 'ociVersion' is a required property"),
    (lambda s: s["linux"]["namespaces"][1].__setitem__("type", "net"),
     "$.linux.namespaces[1].type: 'net' is not one"),
    (lambda s: s["mounts"][2].__setitem__("destination", 5),
     "$.mounts[2].destination: 5 is not of type 'string'"),
    (lambda s: s["process"]["user"].__setitem__("uid", -1),
     "$.process.user.uid: -1 is less than the minimum of 0"),
    (lambda s: s["root"].pop("path"), "$.root: 'path' is a required property"),
    (lambda s: s.__setitem__("hostname", ["x"]), "$.hostname: ['x'] is not of type 'string'"),
    (lambda s: s["process"]["rlimits"][0].pop("hard"), "$.process.rlimits[0]: 'hard' is a required property"),
])
def test_broken_specs_name_the_json_path(runc_spec: dict[str, Any], mutate: Callable[[dict[str, Any]], Any],
                                         expected: str) -> None:
    spec = copy.deepcopy(runc_spec)
    mutate(spec)
    problem = validate_spec(spec)
    assert problem is not None and problem.startswith(expected), problem


def test_schema_error_message_is_short(runc_spec: dict[str, Any]) -> None:
    spec = copy.deepcopy(runc_spec)
    spec["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_BOGUS", "syscalls": [{"x": "y" * 1000}]}
    problem = validate_spec(spec)
    assert problem is not None and "\n" not in problem and len(problem) < 250


def test_not_an_object_is_invalid() -> None:
    assert validate_spec([]) == "$: [] is not of type 'object'"


# -- load_bundle: every bad input names the container and the cause -------------------------------

def test_load_bundle_ok(make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = make_bundle()
    monkeypatch.chdir(bundle.parent)
    b = load_bundle(Path("bundle"), "c1")
    assert b.path == bundle and b.path.is_absolute()
    assert b.rootfs == bundle / "rootfs"
    assert b.spec["process"]["args"] == ["sh"]


def test_load_bundle_absolute_root_path(make_bundle: Callable[..., Path], runc_spec: dict[str, Any],
                                        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runc_spec["root"]["path"] = str(elsewhere)
    assert load_bundle(make_bundle(runc_spec), "c1").rootfs == elsewhere


def _load_error(bundle: Path, cid: str = "c1") -> str:
    with pytest.raises(BundleError) as e:
        load_bundle(bundle, cid)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{cid}: "), msg
    return msg


def test_bundle_missing(tmp_path: Path) -> None:
    assert _load_error(tmp_path / "nope", "web") == f"web: bundle {tmp_path / 'nope'} does not exist"


def test_bundle_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    assert _load_error(tmp_path / "f") == f"c1: bundle {tmp_path / 'f'} is not a directory"


def test_config_missing(tmp_path: Path) -> None:
    assert _load_error(tmp_path) == f"c1: bundle {tmp_path} has no config.json"


def test_config_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    msg = _load_error(tmp_path)
    assert msg.startswith(f"c1: cannot read {tmp_path / 'config.json'}: ")


def test_config_not_json(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle('{\n  "ociVersion": "1.0.2"\n  "root": {}\n}')
    assert _load_error(bundle) == (f"c1: {bundle / 'config.json'} is not valid JSON: line 3 column 3: "
                                   "Expecting ',' delimiter")


def test_config_not_utf8(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle()
    (bundle / "config.json").write_bytes(b'{"ociVersion": "\xff"}')
    assert "cannot read" in _load_error(bundle)


def test_config_fails_schema(make_bundle: Callable[..., Path], runc_spec: dict[str, Any]) -> None:
    runc_spec["process"]["args"] = "sh"
    bundle = make_bundle(runc_spec)
    assert _load_error(bundle) == (f"c1: {bundle / 'config.json'} is not a valid runtime spec: "
                                   "$.process.args: 'sh' is not of type 'array'")


def test_root_path_missing(make_bundle: Callable[..., Path], runc_spec: dict[str, Any]) -> None:
    del runc_spec["root"]
    bundle = make_bundle(runc_spec)
    assert _load_error(bundle) == f"c1: {bundle / 'config.json'} has no root.path"


def test_rootfs_missing(make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(rootfs=False)
    assert _load_error(bundle) == f"c1: rootfs {bundle / 'rootfs'} does not exist"


def test_load_bundle_is_fast(make_bundle: Callable[..., Path]) -> None:
    """Validation of a typical spec, once the validator exists, costs a few milliseconds."""
    bundle = make_bundle()
    load_bundle(bundle, "c1")
    t = time.perf_counter()
    for _ in range(10):
        load_bundle(bundle, "c1")
    assert (time.perf_counter() - t) / 10 < 0.05
