"""OCI bundles: load and validate ``config.json``; container ids and signal names as runc reads them.

Validation uses the runtime-spec JSON schemas (draft-04) shipped in ``kata_runtime/oci-spec/``
for the structure, checked by our own :mod:`kata_runtime.oci.schema` (``jsonschema`` cost the CLI
3.3 MB and 0.1 s), then :mod:`kata_runtime.oci.validate` for what runc 1.1 refuses in it. The
schema is compiled only when a bundle is loaded (``create``/``run``), once per process.
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
    from kata_runtime.oci.schema import Schema

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

_schema: Schema | None = None


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


def schema_documents() -> dict[str, Any]:
    """The schema files of :data:`SCHEMA_DIR`, parsed, by file name (the names their relative
    ``$ref``s use), with our one change; :class:`.schema.SchemaError` if one cannot be read."""
    from kata_runtime.oci.schema import SchemaError

    documents: dict[str, Any] = {}
    for f in sorted(SCHEMA_DIR.glob("*.json")):
        try:
            documents[f.name] = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SchemaError(f"{f}: {e}") from None
    linux = documents.get("defs-linux.json")
    if isinstance(linux, dict) and isinstance(linux.get("definitions"), dict):
        # The schema's enum lacks the recursive values that runc 1.1 takes (and docker sends):
        # oci.validate checks rootfsPropagation against runc's list.
        linux["definitions"]["RootfsPropagation"] = {"type": "string"}
    return documents


def runtime_spec_schema() -> Schema:
    """``config-schema.json`` compiled with the documents its ``$ref``s name (on first use, then
    cached); :class:`.schema.SchemaError` if the packaged schemas cannot be read or checked."""
    global _schema
    if _schema is None:
        from kata_runtime.oci.schema import Schema

        _schema = Schema(schema_documents(), ROOT_SCHEMA)
    return _schema


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_spec(spec: Any) -> str | None:
    """None if ``spec`` is a valid runtime spec, else ``"<json path>: <message>"`` of its first
    violation; :class:`.schema.SchemaError` if the packaged schemas cannot be read or checked."""
    violation = runtime_spec_schema().first_violation(spec)
    return None if violation is None else f"{violation.json_path}: {_short(violation.message)}"


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
    except RecursionError:
        raise BundleError(f"{config} is not valid JSON: nested too deeply", container=cid) from None
    from kata_runtime.oci.schema import SchemaError

    try:
        problem = validate_spec(spec)
    except SchemaError as e:
        raise BundleError(f"cannot check {config}: the runtime-spec schema of this installation is "
                          f"broken: {e}", container=cid) from None
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
