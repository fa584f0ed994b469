"""What state and list print, compared with the bytes runc 1.1.5 printed for the same containers."""

from __future__ import annotations

from kata_runtime.cli.output import (
    format_list_json,
    format_list_quiet,
    format_list_table,
    format_state,
    go_json,
    tabwrite,
)
from kata_runtime.oci.state import ContainerState, Status


def _states() -> list[ContainerState]:
    return [
        ContainerState(id="a-rather-long-container-id", pid=12157, status=Status.CREATED,
                       bundle="/tmp/a-much-longer-bundle-directory-name",
                       rootfs="/tmp/a-much-longer-bundle-directory-name/rootfs",
                       created="2026-11-29T03:15:03.811883642Z", owner="root"),
        ContainerState(id="c1", pid=5898, status=Status.STOPPED, bundle="/tmp/rb", rootfs="/tmp/rb/rootfs",
                       created="2026-11-29T03:09:05.573005217Z", owner="root"),
        ContainerState(id="c3", pid=6051, status=Status.CREATED, bundle="/tmp/rb2", rootfs="/tmp/rb2/rootfs",
                       created="2026-11-29T03:09:12.20586395Z", owner="root",
                       annotations={"b": "2", "a": "1"}),
    ]


# runc --root R list (captured from runc 1.1.5)
RUNC_TABLE = (
    "ID                           PID         STATUS      BUNDLE                                     CREATED"
    "                          OWNER\n"
    "a-rather-long-container-id   12157       created     /tmp/a-much-longer-bundle-directory-name   "
    "2026-11-29T03:15:03.811883642Z   root\n"
    "c1                           0           stopped     /tmp/rb                                    "
    "2026-11-29T03:09:05.573005217Z   root\n"
    "c3                           6051        created     /tmp/rb2                                   "
    "2026-11-29T03:09:12.20586395Z    root\n"
)
RUNC_TABLE_SHORT = (
    "ID          PID         STATUS      BUNDLE      CREATED                          OWNER\n"
    "c1          0           stopped     /tmp/rb     2026-11-29T03:09:05.573005217Z   root\n"
    "c3          6051        created     /tmp/rb2    2026-11-29T03:09:12.20586395Z    root\n"
)
RUNC_TABLE_EMPTY = "ID          PID         STATUS      BUNDLE      CREATED     OWNER\n"

# runc --root R list -f json
RUNC_JSON = (
    '[{"ociVersion":"1.0.2-dev","id":"a-rather-long-container-id","pid":12157,"status":"created",'
    '"bundle":"/tmp/a-much-longer-bundle-directory-name",'
    '"rootfs":"/tmp/a-much-longer-bundle-directory-name/rootfs",'
    '"created":"2026-11-29T03:15:03.811883642Z","owner":"root"},'
    '{"ociVersion":"1.0.2-dev","id":"c1","pid":0,"status":"stopped","bundle":"/tmp/rb","rootfs":"/tmp/rb/rootfs",'
    '"created":"2026-11-29T03:09:05.573005217Z","owner":"root"},'
    '{"ociVersion":"1.0.2-dev","id":"c3","pid":6051,"status":"created","bundle":"/tmp/rb2","rootfs":"/tmp/rb2/rootfs",'
    '"created":"2026-11-29T03:09:12.20586395Z","annotations":{"a":"1","b":"2"},"owner":"root"}]\n'
)

# runc state c3 (no trailing newline; annotations before owner, keys sorted)
RUNC_STATE = """{
  "ociVersion": "1.0.2-dev",
  "id": "c3",
  "pid": 6051,
  "status": "created",
  "bundle": "/tmp/rb2",
  "rootfs": "/tmp/rb2/rootfs",
  "created": "2026-11-29T03:09:12.20586395Z",
  "annotations": {
    "a": "1",
    "b": "2"
  },
  "owner": ""
}"""

RUNC_STATE_STOPPED = """{
  "ociVersion": "1.0.2-dev",
  "id": "c1",
  "pid": 0,
  "status": "stopped",
  "bundle": "/tmp/rb",
  "rootfs": "/tmp/rb/rootfs",
  "created": "2026-11-29T03:09:05.573005217Z",
  "owner": ""
}"""


def test_list_table_matches_runc() -> None:
    assert format_list_table(_states()) == RUNC_TABLE
    assert format_list_table(_states()[1:]) == RUNC_TABLE_SHORT


def test_list_table_empty_is_the_header() -> None:
    assert format_list_table([]) == RUNC_TABLE_EMPTY


def test_list_json_matches_runc() -> None:
    assert format_list_json(_states()) == RUNC_JSON


def test_list_json_empty_is_null() -> None:
    assert format_list_json([]) == "null\n"


def test_list_quiet() -> None:
    assert format_list_quiet(_states()) == "a-rather-long-container-id\nc1\nc3\n"
    assert format_list_quiet([]) == ""


def test_state_matches_runc() -> None:
    states = _states()
    states[2].owner = ""
    assert format_state(states[2]) == RUNC_STATE
    states[1].owner = ""
    assert format_state(states[1]) == RUNC_STATE_STOPPED


def test_go_json_escapes_like_go() -> None:
    assert go_json("<a&b>") == '"\\u003ca\\u0026b\\u003e"'
    assert go_json("é\u2028\x01\n\t\"\\") == '"é\\u2028\\u0001\\n\\t\\"\\\\"'
    assert go_json({"x": [1, True, None, {}], "y": []}) == '{"x":[1,true,null,{}],"y":[]}'
    assert go_json({"a": [1]}, indent="\t") == '{\n\t"a": [\n\t\t1\n\t]\n}'


def test_tabwrite_pads_all_but_the_last_column() -> None:
    # widths: max(cell + 3 padding, 12 minimum); the last cell is not padded
    assert tabwrite([("a", "b", "c"), ("longer-than-twelve", "x", "y")]) == (
        "a" + " " * 20 + "b" + " " * 11 + "c\n"
        "longer-than-twelve" + " " * 3 + "x" + " " * 11 + "y\n")
