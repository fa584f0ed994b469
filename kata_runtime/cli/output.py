"""What the CLI prints, byte for byte as runc prints it: Go's JSON encoding, the ``state`` object
and the ``list`` table (Go's text/tabwriter)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from kata_runtime.oci.state import ContainerState

# runc's containerState struct (list.go), in field order; annotations are omitempty.
STATE_KEYS = ("ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "annotations", "owner")

_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_string(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_json(value: Any, indent: str | None = None, _level: int = 0) -> str:
    """``value`` encoded as Go's encoding/json does: HTML characters escaped, UTF-8 kept, map
    keys sorted (pass ``dict`` subclasses in the order wanted: key order is kept, as for Go
    structs), ``json.MarshalIndent`` layout when ``indent`` is given, no trailing newline."""
    if isinstance(value, str):
        return _go_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, dict):
        items = [f"{_go_string(str(k))}:{' ' if indent is not None else ''}"
                 f"{go_json(v, indent, _level + 1)}" for k, v in value.items()]
        return _wrap("{", "}", items, indent, _level)
    if isinstance(value, list | tuple):
        return _wrap("[", "]", [go_json(v, indent, _level + 1) for v in value], indent, _level)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _wrap(open_: str, close: str, items: list[str], indent: str | None, level: int) -> str:
    if not items:
        return open_ + close
    if indent is None:
        return open_ + ",".join(items) + close
    inner = "\n" + indent * (level + 1)
    return open_ + inner + ("," + inner).join(items) + "\n" + indent * level + close


def state_object(st: ContainerState) -> dict[str, Any]:
    """The state as runc's containerState: its key order, annotations sorted and omitted when empty."""
    raw = st.to_runc_json()
    obj: dict[str, Any] = {}
    for key in STATE_KEYS:
        if key == "annotations":
            if raw.get("annotations"):
                obj["annotations"] = dict(sorted(raw["annotations"].items()))
        else:
            obj[key] = raw[key]
    return obj


def format_state(st: ContainerState) -> str:
    """What ``runc state`` writes: MarshalIndent with two spaces and no trailing newline."""
    return go_json(state_object(st), indent="  ")


def format_list_json(states: Sequence[ContainerState]) -> str:
    """What ``runc list -f json`` writes: one compact line; ``null`` when there is no container."""
    if not states:
        return "null\n"
    return go_json([state_object(s) for s in states]) + "\n"


def tabwrite(rows: Iterable[Sequence[str]], minwidth: int = 12, padding: int = 3) -> str:
    """Go's ``tabwriter.NewWriter(w, minwidth, 1, padding, ' ', 0)`` for rows of equal length:
    every cell but the last of a row is padded to its column's width."""
    table = [list(r) for r in rows]
    if not table:
        return ""
    ncols = max(len(r) for r in table)
    widths = [minwidth] * (ncols - 1)
    for r in table:
        for i, cell in enumerate(r[:-1]):
            widths[i] = max(widths[i], len(cell) + padding)
    lines = []
    for r in table:
        lines.append("".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + (r[-1] if r else ""))
    return "\n".join(lines) + "\n"


def format_list_table(states: Sequence[ContainerState]) -> str:
    """What ``runc list`` writes (the header even when there is no container)."""
    rows: list[Sequence[str]] = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for st in states:
        obj = state_object(st)
        rows.append((st.id, str(obj["pid"]), obj["status"], st.bundle, st.created, st.owner))
    return tabwrite(rows)


def format_list_quiet(states: Sequence[ContainerState]) -> str:
    """``runc list -q``: one id per line."""
    return "".join(f"{st.id}\n" for st in states)
