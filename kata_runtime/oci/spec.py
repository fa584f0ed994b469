"""OCI bundles: load and validate ``config.json``; container ids and signal names as runc reads them.

Validation uses the runtime-spec JSON schemas (draft-04) shipped in ``kata_runtime/oci-spec/``
for the structure, then :mod:`kata_runtime.oci.validate` for what runc 1.1 refuses in it.
``jsonschema`` costs about 0.1 s to import, so it is imported only when a bundle is loaded
(``create``/``run``), never by the other commands, and the validator is built once per process.
"""

from __future__ import annotations

import json
import os
import re
import signal as _signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kata_runtime.errors import BundleError, InvalidArgument

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "oci-spec"
ROOT_SCHEMA = "config-schema.json"

# runc's libcontainer: idRegex = `^[\w+-\.]+$`, plus the path check that rejects "." and "..".
_ID_RE = re.compile(r"^[\w+\-.]+$", re.ASCII)

# golang.org/x/sys/unix signalList for linux/amd64: the names runc's parseSignal knows. Python's
# signal module has more aliases (SIGIOT, SIGCLD, SIGPOLL, SIGRTMIN...) that runc rejects.
_SIGNALS: dict[str, int] = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7,
    "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13,
    "SIGALRM": 14, "SIGTERM": 15, "SIGSTKFLT": 16, "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19,
    "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22, "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25,
    "SIGVTALRM": 26, "SIGPROF": 27, "SIGWINCH": 28, "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31,
}
_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_MAX_SIGNAL = int(getattr(_signal, "SIGRTMAX", 64))

_validator: Validator | None = None


@dataclass
class Bundle:
    """A loaded, schema-valid bundle."""

    path: Path  # absolute
    spec: dict[str, Any]  # config.json as parsed
    rootfs: Path  # absolute: root.path resolved against the bundle


def validate_id(cid: str) -> None:
    """Raise :class:`InvalidArgument` with runc's message unless ``cid`` is a legal container id."""
    if cid == "":
        raise InvalidArgument("container id cannot be empty")
    if not _ID_RE.match(cid) or cid in (".", ".."):
        raise InvalidArgument("invalid container ID format")


def parse_signal(s: str) -> int:
    """A signal as runc's ``kill`` reads it: a number, or a name with or without ``SIG``, any case."""
    if _INT_RE.match(s):
        n = int(s)
        if not 0 <= n <= _MAX_SIGNAL:
            raise InvalidArgument(f"invalid signal {json.dumps(s)}: not in 0..{_MAX_SIGNAL}")
        return n
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return _SIGNALS[name]
    except KeyError:
        raise InvalidArgument(f"unknown signal {json.dumps(s, ensure_ascii=False)}") from None


def schema_validator() -> Validator:
    """The Draft-4 validator of ``config-schema.json``, its relative ``$ref``s resolved from the
    other schema files of :data:`SCHEMA_DIR` (built on first use, then cached)."""
    global _validator
    if _validator is None:
        from jsonschema import Draft4Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        # The schemas carry no "id": each is registered under its file name, and the refs
        # ("defs.json#/definitions/...") resolve against the name of the file they appear in.
        resources = []
        for f in sorted(SCHEMA_DIR.glob("*.json")):
            contents = json.loads(f.read_text())
            if f.name == "defs-linux.json":
                # The schema's enum lacks the recursive values that runc 1.1 takes (and docker
                # sends): oci.validate checks rootfsPropagation against runc's list.
                contents["definitions"]["RootfsPropagation"] = {"type": "string"}
            resources.append((f.name, Resource.from_contents(contents, default_specification=DRAFT4)))
        registry: Registry[Any] = Registry().with_resources(resources)
        _validator = Draft4Validator({"$ref": ROOT_SCHEMA}, registry=registry)
    return _validator


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_spec(spec: Any) -> str | None:
    """None if ``spec`` is a valid runtime spec, else ``"<json path>: <message>"`` of the most
    relevant error."""
    validator = schema_validator()
    if validator.is_valid(spec):
        return None
    from jsonschema.exceptions import best_match

    err = best_match(validator.iter_errors(spec))
    if err is None:  # pragma: no cover - is_valid said there is one
        return "invalid"
    return f"{err.json_path}: {_short(err.message)}"


def load_bundle(bundle: Path, cid: str, *, no_pivot: bool = False) -> Bundle:
    """Read and validate ``<bundle>/config.json``; raise :class:`BundleError` naming ``cid`` and
    the cause (missing bundle or file, bad JSON with line and column, schema error with its
    JSON path, missing root.path or rootfs, and what runc 1.1 refuses: :func:`.validate.validate`,
    which ``no_pivot`` (``create --no-pivot``) informs)."""
    path = Path(os.path.abspath(bundle))
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise BundleError(f"bundle {path} {what}", container=cid)
    config = path / "config.json"
    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle {path} has no config.json", container=cid) from None
    except (OSError, UnicodeDecodeError) as e:
        cause = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise BundleError(f"cannot read {config}: {cause}", container=cid) from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"{config} is not valid JSON: line {e.lineno} column {e.colno}: {e.msg}",
                          container=cid) from None
    problem = validate_spec(spec)
    if problem is not None:
        raise BundleError(f"{config} is not a valid runtime spec: {problem}", container=cid)
    root = spec.get("root")
    if not isinstance(root, dict) or not root.get("path"):
        raise BundleError(f"{config} has no root.path", container=cid)
    rootfs = Path(os.path.normpath(path / root["path"]))
    if not rootfs.is_dir():
        what = "is not a directory" if rootfs.exists() else "does not exist"
        raise BundleError(f"rootfs {rootfs} {what}", container=cid)
    from kata_runtime.oci.validate import validate

    validate(cid, spec, path, rootfs, no_pivot=no_pivot)
    return Bundle(path=path, spec=spec, rootfs=rootfs)
