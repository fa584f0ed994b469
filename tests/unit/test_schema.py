"""Our draft-04 validator (kata_runtime.oci.schema) beside jsonschema's Draft4Validator, on the same
schema documents: the same verdict on every document (the specs of ``runc spec`` and ``kata-runtime
spec``, every config.json the test suites build, several hundred deterministic mutations), and
each violation we report is one that jsonschema reports too (same JSON path, same message).
jsonschema is a test dependency only: the CLI never imports it."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from kata_runtime.cli.spec import example_spec, spec_text
from kata_runtime.errors import BundleError
from kata_runtime.oci import spec as ocispec
from kata_runtime.oci.schema import Schema, SchemaError, Violation
from tests.oci import test_spec_verdicts as verdicts

DATA = Path(__file__).resolve().parent / "data"
RUNC = "/usr/sbin/runc"
Spec = dict[str, Any]


def reference(documents: dict[str, Any], root: str) -> Draft4Validator:
    """jsonschema's validator of ``root``, each document registered under its name (the schemas
    carry no "id"; their refs are relative to the file they are in)."""
    resources = [(name, Resource.from_contents(doc, default_specification=DRAFT4)) for name, doc in documents.items()]
    registry: Registry[Any] = Registry().with_resources(resources)
    return Draft4Validator({"$ref": root}, registry=registry)


@pytest.fixture(scope="module")
def both() -> tuple[Schema, Draft4Validator]:
    documents = ocispec.schema_documents()
    return Schema(documents, ocispec.ROOT_SCHEMA), reference(documents, ocispec.ROOT_SCHEMA)


def leaves(errors: Iterator[ValidationError] | list[ValidationError]) -> Iterator[ValidationError]:
    """Every error jsonschema reports, those inside anyOf/oneOf's context too."""
    for e in errors:
        yield e
        yield from leaves(e.context)


def same_verdict(ours: Schema, theirs: Draft4Validator, doc: Any) -> tuple[Violation | None, list[ValidationError]]:
    found = ours.first_violation(doc)
    errors = list(leaves(theirs.iter_errors(doc)))
    assert (found is None) == (not errors), f"ours: {found}, jsonschema: {[e.message for e in errors]}"
    if found is not None:
        theirs_at = {(e.json_path, e.message) for e in errors}
        assert (found.json_path, found.message) in theirs_at, f"ours: {found}; jsonschema: {sorted(theirs_at)}"
    return found, errors


# -- the documents ---------------------------------------------------------------------------------

def runc_spec() -> Spec:
    return dict(json.loads((DATA / "runc-spec.json").read_text()))


def rich_spec() -> Spec:
    """runc's spec with every part the schemas describe filled in (linux resources of all kinds,
    seccomp, devices, hooks, the other platforms' sections), so that mutations reach all of it."""
    spec = runc_spec()
    spec["hooks"] = {kind: [{"path": "/bin/true", "args": ["true"], "env": ["A=1"], "timeout": 5}]
                     for kind in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                                  "poststop")}
    spec["annotations"] = {"io.katacontainers.x": "1", "plain": "v"}
    spec["domainname"] = "example.com"
    spec["root"]["readonly"] = True
    p = spec["process"]
    p.update(commandLine="sh", consoleSize={"height": 24, "width": 80}, apparmorProfile="p", oomScoreAdj=-5,
             selinuxLabel="l")
    p["user"].update(umask=18, additionalGids=[1, 2], username="root")
    p["rlimits"].append({"type": "RLIMIT_CORE", "hard": 0, "soft": 0})
    spec["mounts"].append({"destination": "/m", "type": "bind", "source": "/tmp", "options": ["rbind"],
                           "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                           "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]})
    dev = {"major": 8, "minor": 0}
    linux = spec["linux"]
    linux.update(
        devices=[{"type": "c", "path": "/dev/x", "fileMode": 438, "major": 1, "minor": 3, "uid": 0, "gid": 0}],
        uidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}],
        gidMappings=[{"containerID": 0, "hostID": 1000, "size": 10}],
        cgroupsPath="/k", rootfsPropagation="rslave", sysctl={"net.ipv4.ip_forward": "1"}, mountLabel="m",
        intelRdt={"closID": "c", "l3CacheSchema": "L3:0=f", "memBwSchema": "MB:0=50", "enableCMT": True,
                  "enableMBM": False},
        personality={"domain": "LINUX", "flags": []},
        seccomp={"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                 "listenerPath": "/l", "listenerMetadata": "x", "architectures": ["SCMP_ARCH_X86_64"],
                 "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1,
                               "args": [{"index": 0, "value": 1, "valueTwo": 2, "op": "SCMP_CMP_EQ"}]}]})
    linux["resources"].update(
        unified={"memory.high": "max"},
        pids={"limit": 100},
        blockIO={"weight": 10, "leafWeight": 10, "weightDevice": [dict(dev, weight=10, leafWeight=10)],
                 **{k: [dict(dev, rate=100)] for k in ("throttleReadBpsDevice", "throttleWriteBpsDevice",
                                                       "throttleReadIOPSDevice", "throttleWriteIOPSDevice")}},
        cpu={"cpus": "0", "mems": "0", "period": 100000, "quota": -1, "burst": 0, "realtimePeriod": 1,
             "realtimeRuntime": 1, "shares": 1024, "idle": 0},
        hugepageLimits=[{"pageSize": "2MB", "limit": 0}],
        memory={"kernel": 1, "kernelTCP": 1, "limit": 1 << 30, "reservation": 1, "swap": 1 << 30, "swappiness": 10,
                "disableOOMKiller": False, "useHierarchy": True, "checkBeforeUpdate": False},
        network={"classID": 1, "priorities": [{"name": "eth0", "priority": 1}]},
        rdma={"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}})
    spec["windows"] = {"layerFolders": ["C:\\l"], "devices": [{"id": "d", "idType": "class"}],
                       "resources": {"memory": {"limit": 1}, "cpu": {"count": 1, "shares": 1, "maximum": 1},
                                     "storage": {"iops": 1, "bps": 1, "sandboxSize": 1}},
                       "network": {"endpointList": ["e"], "allowUnqualifiedDNSQuery": True, "DNSSearchList": ["a"],
                                   "networkSharedContainerName": "n", "networkNamespace": "ns"},
                       "credentialSpec": {}, "servicing": False, "ignoreFlushesDuringBoot": True,
                       "hyperv": {"utilityVMPath": "p"}}
    spec["vm"] = {"hypervisor": {"path": "/q", "parameters": ["-x"]},
                  "kernel": {"path": "/k", "parameters": ["quiet"], "initrd": "/i"},
                  "image": {"path": "/img", "format": "raw"}}
    spec["solaris"] = {"milestone": "m", "limitpriv": "l", "maxShmMemory": "1", "cappedCPU": {"ncpus": "1"},
                       "cappedMemory": {"physical": "1", "swap": "1"},
                       "anet": [{"linkname": "l", "lowerLink": "x", "allowedAddress": "a", "configureAllowedAddress":
                                 "true", "defrouter": "d", "macAddress": "m", "linkProtection": "p"}]}
    spec["zos"] = {"devices": [{"path": "/dev/x", "type": "b", "major": 1, "minor": 2, "fileMode": 0, "uid": 0,
                                "gid": 0}]}
    return spec


def specs_of_the_tools(tmp: Path) -> list[tuple[str, Any]]:
    docs: list[tuple[str, Any]] = [
        ("runc-spec.json", runc_spec()),
        ("runc-spec-rootless-uid0.json", json.loads((DATA / "runc-spec-rootless-uid0.json").read_text())),
        ("kata-runtime spec", example_spec()),
        ("kata-runtime spec --rootless", json.loads(spec_text(rootless=True))),
        ("rich", rich_spec()),
        ("minimal", {"ociVersion": "1.0.2"}),
    ]
    for args in ([], ["--rootless"]):
        out = tmp / f"runc-spec{len(args)}"
        out.mkdir()
        subprocess.run([RUNC, "spec", *args, "--bundle", str(out)], check=True)
        docs.append((f"runc spec {' '.join(args)}", json.loads((out / "config.json").read_text())))
    return docs


def specs_of_the_suites(tmp: Path) -> list[tuple[str, Any]]:
    """The config.json of every case of tests/oci/test_spec_verdicts.py and of the rules of
    tests/unit/test_validate.py."""
    from tests.unit.test_validate import RULES

    docs: list[tuple[str, Any]] = []
    for i, case in enumerate(verdicts.CASES + verdicts.ACCEPTED + verdicts.DIFFERENT):
        b = tmp / f"case{i}"
        b.mkdir()
        spec = runc_spec()
        spec["root"]["path"] = str(tmp / "rootfs")
        case.change(spec, b)
        docs.append((f"verdicts:{case.name}", spec))
    for name, change, _ in RULES:
        spec = runc_spec()
        change(spec)
        docs.append((f"validate:{name}", spec))
    return docs


Where = tuple[str | int, ...]


def nodes(value: Any, where: Where = ()) -> Iterator[tuple[Where, Any]]:
    yield where, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from nodes(v, where + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from nodes(v, where + (i,))


def replaced(doc: Any, where: Where, new: Any) -> Any:
    if not where:
        return copy.deepcopy(new)
    out = copy.deepcopy(doc)
    parent = out
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = copy.deepcopy(new)
    return out


def dropped(doc: Any, where: Where) -> Any:
    out = copy.deepcopy(doc)
    parent = out
    for key in where[:-1]:
        parent = parent[key]
    del parent[where[-1]]
    return out


FOREIGN: list[Any] = ["x", 7, -1, 2.5, True, None, [], {}, ["x"], {"k": "v"}]


def variants(value: Any) -> list[Any]:
    """Values that are close to ``value``: the edge of its type and range, a wrong enum value or
    pattern, one member too many."""
    if isinstance(value, bool):
        return [not value, 0, "true"]
    if isinstance(value, int):
        return [-1, 0, 1, -(2**31) - 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 127, 128,
                256, 511, 512, 513, 65535, 65536, float(value), value + 0.5]
    if isinstance(value, str):
        return ["", "bogus", value + "\n", value + "x", "x" + value, value.upper(), value.lower(), value[:-1], "\n"]
    if isinstance(value, list):
        return [[], value + [None], value + [1], value + ["s"], value + [{}], value[:1] * 2]
    if isinstance(value, dict):
        return [dict(value, extraField=1), dict(value, extraField={"x": 1}), dict(value, **{"": "x"}),
                dict(value, **{"\n": 1}), dict(value, k=1), dict(value, k="v"), dict(value, k={})]
    return []


DROP = object()  # a mutation that removes the member


def mutations(doc: Any) -> list[tuple[Where, Any]]:
    """Every mutation of ``doc``: a member dropped, or a node replaced by a foreign value or a
    variant of its own (built only when sampled: deep copies of thousands are slow)."""
    out: list[tuple[Where, Any]] = []
    for where, value in nodes(doc):
        if where:
            out.append((where, DROP))
        out += [(where, new) for new in FOREIGN + variants(value) if new != value or type(new) is not type(value)]
    return out


def mutated(doc: Any, where: Where, new: Any) -> Any:
    return dropped(doc, where) if new is DROP else replaced(doc, where, new)


def sections(spec: Spec) -> Iterator[Spec]:
    """The rich spec cut in documents of one top-level member each (jsonschema takes 40 ms on the
    whole of it, 2-10 ms on one part)."""
    for key, value in spec.items():
        if key != "ociVersion":
            yield {"ociVersion": spec["ociVersion"], key: value}


def targeted(spec: Spec) -> list[tuple[str, Any]]:
    """One refusal by each checking keyword at least, where the samples may miss it."""
    edits: list[tuple[Where, Any]] = [
        (("windows", "layerFolders"), []), (("linux", "seccomp", "syscalls", 0, "names"), []),  # minItems
        (("annotations", "a"), 1), (("linux", "sysctl", "k"), ["v"]),  # patternProperties
        (("linux", "resources", "rdma", "x"), {"hcaHandles": "1"}),  # additionalProperties
        (("linux", "resources", "blockIO", "throttleReadBpsDevice", 0, "minor"), DROP),  # allOf
        (("linux", "resources", "blockIO", "weightDevice", 0, "weight"), 65536),
        (("linux", "namespaces", 0, "type"), "time"), (("linux", "namespaces", 0), "pid"),  # anyOf
        (("linux", "resources", "hugepageLimits", 0, "pageSize"), "0MB"),  # pattern
        (("linux", "devices", 0, "fileMode"), 513), (("process", "user", "uid"), -1),  # maximum, minimum
        (("linux", "seccomp", "defaultAction"), "SCMP_ACT_BOGUS"), (("vm", "image", "format"), "iso"),  # enum
        (("vm", "kernel"), DROP), (("process", "rlimits", 0, "soft"), DROP),  # required
    ]
    return [(f"targeted:{'/'.join(map(str, where))}", mutated(spec, where, new)) for where, new in edits]


SAMPLES = 300  # mutations of runc's spec, and as many of the rich spec's parts: chosen with a fixed seed
AT_LEAST = 20  # of each part of the rich spec, so that the small ones (annotations, windows) get their share


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Any]]:
    tmp = tmp_path_factory.mktemp("schema-docs")
    docs = specs_of_the_tools(tmp) + specs_of_the_suites(tmp) + targeted(rich_spec())
    rng = random.Random(20261202)
    runcs = runc_spec()
    parts = [(runcs, mutations(runcs), SAMPLES)]
    rich = [(part, mutations(part)) for part in sections(rich_spec())]
    total = sum(len(m) for _, m in rich)
    parts += [(part, m, AT_LEAST + SAMPLES * len(m) // total) for part, m in rich]
    for base, every, n in parts:
        for where, new in rng.sample(every, min(n, len(every))):
            label = "dropped" if new is DROP else f"= {json.dumps(new)[:40]}"
            docs.append((f"{'/'.join(map(str, where))} {label}", mutated(base, where, new)))
    return docs


# -- the differential test -------------------------------------------------------------------------

def test_same_verdicts_and_messages_as_jsonschema(both: tuple[Schema, Draft4Validator],
                                                  documents: list[tuple[str, Any]]) -> None:
    ours, theirs = both
    refused = 0
    keywords: set[str] = set()
    only_error = 0
    for name, doc in documents:
        try:
            found, errors = same_verdict(ours, theirs, doc)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
        if found is not None:
            refused += 1
            for err in errors:
                keywords.update(k for k in err.absolute_schema_path if isinstance(k, str))
            if len(errors) == 1:
                only_error += 1
    # a test that cannot fail is a defect: both verdicts occur, and the refusals came from every
    # keyword that checks something (the path of each error names the keywords it went through)
    assert len(documents) >= 800 and 300 <= refused <= len(documents) - 300, (len(documents), refused)
    assert keywords >= {"type", "enum", "properties", "patternProperties", "additionalProperties", "required",
                        "items", "minItems", "pattern", "minimum", "maximum", "allOf", "anyOf"}, keywords
    assert only_error > 300  # where jsonschema finds one error, ours is that one


def test_the_specs_of_the_tools_are_valid(both: tuple[Schema, Draft4Validator], tmp_path: Path) -> None:
    ours, theirs = both
    for name, doc in specs_of_the_tools(tmp_path):
        assert ours.first_violation(doc) is None and theirs.is_valid(doc), name


def test_quirks_are_jsonschemas(both: tuple[Schema, Draft4Validator]) -> None:
    """What draft-04 and Python's re make of edge values, the same in both."""
    ours, theirs = both
    spec = rich_spec()
    cases: list[tuple[Where, Any, bool]] = [
        (("linux", "devices", 0, "type"), "c\n", True),  # "$" matches before a final newline in Python
        (("linux", "devices", 0, "major"), 1.0, False),  # draft-04: 1.0 is not an integer
        (("linux", "devices", 0, "major"), True, False),  # nor is a bool
        (("process", "user", "uid"), 2**32, False),
        (("process", "user", "uid"), 2**32 - 1, True),
        (("annotations",), {"": 1}, True),  # ".{1,}" does not match the empty name: not checked
        (("annotations",), {"\n": 1}, True),  # nor a name that is only a newline
        (("annotations",), {"a\n": 1}, False),
        (("linux", "resources", "rdma"), {"x": {"hcaHandles": -1}}, False),  # additionalProperties: a schema
        (("linux", "namespaces", 0), {"type": "time"}, False),  # through anyOf
        (("linux", "resources", "blockIO", "weightDevice", 0), {"weight": 1}, False),  # allOf's first branch
    ]
    for where, value, valid in cases:
        doc = replaced(spec, where, value)
        found, _ = same_verdict(ours, theirs, doc)
        assert (found is None) == valid, (where, value, found)


def test_messages_name_the_json_path(both: tuple[Schema, Draft4Validator]) -> None:
    ours, _ = both
    spec = rich_spec()
    assert str(ours.first_violation(replaced(spec, ("annotations", "io.k8s.x"), 5))) == \
        "$.annotations['io.k8s.x']: 5 is not of type 'string'"
    assert str(ours.first_violation(replaced(spec, ("linux", "resources", "hugepageLimits", 0, "pageSize"), "2M"))) \
        == "$.linux.resources.hugepageLimits[0].pageSize: '2M' does not match '^[1-9][0-9]*[KMG]B$'"
    assert str(ours.first_violation(replaced(spec, ("linux", "namespaces", 0, "type"), "time"))) == \
        ("$.linux.namespaces[0].type: 'time' is not one of ['mount', 'pid', 'network', 'uts', 'ipc', 'user', "
         "'cgroup']")
    assert str(ours.first_violation(dropped(spec, ("linux", "resources", "blockIO", "weightDevice", 0, "major")))) \
        == "$.linux.resources.blockIO.weightDevice[0]: 'major' is a required property"
    assert str(ours.first_violation(replaced(spec, ("linux", "seccomp", "syscalls", 0, "names"), []))) == \
        "$.linux.seccomp.syscalls[0].names: [] should be non-empty"
    assert Violation(("a'b\\", 0), "m").json_path == "$['a\\'b\\\\'][0]"


# -- what the compiler refuses ---------------------------------------------------------------------

def compile_one(schema: dict[str, Any], **more: Any) -> Schema:
    return Schema({"s.json": schema, **more}, "s.json")


@pytest.mark.parametrize(("schema", "words"), [
    ({"type": "string", "format": "uri"}, "s.json#: unknown keyword 'format'"),
    ({"properties": {"a": {"uniqueItems": True}}}, "s.json#/properties/a: unknown keyword 'uniqueItems'"),
    ({"oneOf": [{"type": "string"}]}, "unknown keyword 'oneOf'"),
    ({"id": "http://example.com/s"}, "unknown keyword 'id'"),
    ({"type": "integer", "minimum": 0, "exclusiveMinimum": True}, "unknown keyword 'exclusiveMinimum'"),
    ({"$ref": "#/definitions/x", "format": "uri", "definitions": {"x": {}}}, "unknown keyword 'format'"),
    ({"definitions": {"x": {"format": "uri"}}, "properties": {"a": {"$ref": "#/definitions/x"}}},
     "s.json#/definitions/x: unknown keyword 'format'"),
    ({"$schema": "http://json-schema.org/draft-07/schema#"}, "is not draft-04's"),
    ({"type": ["string", "null"]}, "type must be one of"),
    ({"type": "any"}, "type must be one of"),
    ({"items": [{"type": "string"}]}, "items must be a schema (a list of schemas is not supported)"),
    ({"additionalProperties": False}, "additionalProperties must be a schema"),
    ({"enum": [1, 2]}, "enum must be a non-empty list of strings"),
    ({"enum": []}, "enum must be a non-empty list of strings"),
    ({"required": "a"}, "required must be a list of strings"),
    ({"minItems": -1}, "minItems must be a non-negative integer"),
    ({"minimum": "0"}, "minimum must be a number"),
    ({"pattern": "("}, "is not a regular expression"),
    ({"patternProperties": {"[": {}}}, "is not a regular expression"),
    ({"anyOf": []}, "anyOf must be a non-empty list of schemas"),
    ({"allOf": [True]}, "s.json#/allOf/0: a schema must be an object"),
    ({"properties": {"a": True}}, "s.json#/properties/a: a schema must be an object"),
    ({"$ref": "other.json#/x"}, "$ref 'other.json#/x' does not name a known document"),
    ({"$ref": "#/definitions/nope"}, "$ref '#/definitions/nope' points at nothing"),
    ({"$ref": "#name"}, "does not name a known document and a JSON pointer"),
    ({"$ref": "http://json-schema.org/draft-04/schema#"}, "does not name a known document"),
    ({"$ref": "#"}, "refers to itself"),
    ({"definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}},
      "$ref": "#/definitions/a"}, "refers to itself"),
])
def test_refuses_what_it_cannot_check_exactly(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(SchemaError) as e:
        compile_one(schema)
    assert words in str(e.value)


def test_refs_across_documents_and_recursion() -> None:
    s = compile_one({"properties": {"child": {"$ref": "#"}, "n": {"$ref": "t.json#/definitions/a~1b"}}},
                    **{"t.json": {"definitions": {"a/b": {"$ref": "#/definitions/x"}, "x": {"type": "integer"}}}})
    assert s.is_valid({"child": {"child": {"n": 1}}})
    assert str(s.first_violation({"child": {"child": {"n": "1"}}})) == "$.child.child.n: '1' is not of type 'integer'"


def test_every_packaged_schema_compiles() -> None:
    documents = ocispec.schema_documents()
    for root in ("config-schema.json", "state-schema.json"):
        Schema(documents, root)


SMALL: list[tuple[dict[str, Any], list[Any]]] = [  # schemas of the forms we know, and instances for both
    ({"$ref": "#/definitions/s", "type": "integer", "definitions": {"s": {"type": "string"}}}, ["x", 1]),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "patternProperties": {"^x": {"type": "string"}},
      "additionalProperties": {"type": "boolean"}},
     [{"a": 1, "xa": "s", "b": True}, {"xa": 1}, {"b": 1}, {"a": "1"}, {"xb": True, "c": False}, []]),
    ({"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2}, [["a"], ["a", "c"], ["b", "a"], [], "ab"]),
    ({"anyOf": [{"type": "string", "pattern": "^a"}, {"type": "integer", "minimum": 3, "maximum": 5}]},
     ["ab", "ba", 3, 6, 2, 4.5, True, None]),
    ({"allOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1, "b": 2}, {"a": 1}, {"b": 1}, 5]),
    ({"type": "number", "minimum": 0.5}, [0.5, 1, 0, -0.1, True]),
    ({"type": "null"}, [None, 0, ""]),
    ({"type": "boolean"}, [True, False, 0, 1]),
]


@pytest.mark.parametrize(("schema", "instances"), SMALL, ids=[str(i) for i in range(len(SMALL))])
def test_small_schemas_same_as_jsonschema(schema: dict[str, Any], instances: list[Any]) -> None:
    ours, theirs = compile_one(schema), reference({"s.json": schema}, "s.json")
    verdicts = {same_verdict(ours, theirs, instance)[0] is None for instance in instances}
    assert verdicts == {True, False}


def test_any_of_reports_the_branch_that_got_deepest() -> None:
    s = compile_one({"anyOf": [{"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "string"}}}}}, {"type": "string"}]})
    assert str(s.first_violation({"a": {"b": 1}})) == "$.a.b: 1 is not of type 'string'"
    assert str(s.first_violation(5)) == "$: 5 is not valid under any of the given schemas"


# -- the CLI ---------------------------------------------------------------------------------------

def test_the_cli_does_not_import_jsonschema(tmp_path: Path) -> None:
    code = ("import json, sys\n"
            "from kata_runtime.oci.spec import validate_spec\n"
            f"assert validate_spec(json.load(open({str(DATA / 'runc-spec.json')!r}))) is None\n"
            "assert validate_spec({}) is not None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('jsonschema', 'referencing', 'rpds', 'attrs', 'jsonschema_specifications')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_broken_packaged_schema_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              make_bundle: Callable[..., Path]) -> None:
    schemas = tmp_path / "oci-spec"
    schemas.mkdir()
    for f in ocispec.SCHEMA_DIR.glob("*.json"):
        (schemas / f.name).write_text(f.read_text())
    defs = json.loads((schemas / "defs.json").read_text())
    defs["definitions"]["FilePath"]["format"] = "uri-reference"  # a keyword we do not check
    (schemas / "defs.json").write_text(json.dumps(defs))
    monkeypatch.setattr(ocispec, "SCHEMA_DIR", schemas)
    monkeypatch.setattr(ocispec, "_schema", None)
    bundle = make_bundle()
    with pytest.raises(BundleError) as e:
        ocispec.load_bundle(bundle, "c1")
    msg = str(e.value)
    assert msg.startswith(f"c1: cannot check {bundle / 'config.json'}: the runtime-spec schema of this "
                          "installation is broken: defs.json#/definitions/FilePath: unknown keyword 'format'"), msg
    assert "\n" not in msg
    (schemas / "defs.json").write_text("{")
    monkeypatch.setattr(ocispec, "_schema", None)
    with pytest.raises(BundleError, match="is broken: .*defs.json: Expecting property name"):
        ocispec.load_bundle(bundle, "c1")
