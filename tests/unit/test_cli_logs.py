"""Log lines in logrus's formats, as runc writes them to --log."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator

import pytest

from kata_runtime.cli.logs import LogrusFormatter, LogTarget, go_quote, logrus_line, rfc3339
from kata_runtime.errors import KataError

WHEN = 1795921434.25  # 2026-11-29T03:03:54Z


@pytest.fixture
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_json_line_is_runcs(utc: None) -> None:
    # runc --log F --log-format json state nosuch
    assert logrus_line("error", "container does not exist", WHEN, "json") == (
        '{"level":"error","msg":"container does not exist","time":"2026-11-29T03:03:54Z"}')


def test_text_line_is_runcs(utc: None) -> None:
    # runc --log F state nosuch
    assert logrus_line("error", "container does not exist", WHEN, "text") == (
        'time="2026-11-29T03:03:54Z" level=error msg="container does not exist"')


def test_text_quotes_like_logrus(utc: None) -> None:
    assert logrus_line("error", "simple", WHEN) == 'time="2026-11-29T03:03:54Z" level=error msg=simple'
    assert logrus_line("error", 'runc: "state" requires exactly 1 argument(s)', WHEN).endswith(
        'msg="runc: \\"state\\" requires exactly 1 argument(s)"')
    assert logrus_line("debug", "a\nb", WHEN, fields={"source": "x.y"}).endswith('msg="a\\nb" source=x.y')


def test_local_time_offset() -> None:
    old = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "Europe/Berlin"
        time.tzset()
        # runc with TZ=Europe/Berlin: "time":"2026-11-29T04:09:30+01:00"
        assert rfc3339(WHEN) == "2026-11-29T04:03:54+01:00"
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_json_fields_sorted_and_html_escaped(utc: None) -> None:
    line = logrus_line("debug", "<x>", WHEN, "json", {"source": "kata_runtime.sandbox", "arg": "1"})
    assert line == ('{"arg":"1","level":"debug","msg":"\\u003cx\\u003e","source":"kata_runtime.sandbox",'
                    '"time":"2026-11-29T03:03:54Z"}')


def test_go_quote() -> None:
    assert go_quote('a"b\\c\x00\x7fé\u00a0') == '"a\\"b\\\\c\\x00\\x7fé\\u00a0"'


def test_formatter_puts_a_traceback_in_one_line(utc: None) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("kata_runtime.x", logging.ERROR, __file__, 1, "failed %s", ("now",),
                                   sys.exc_info())
    line = LogrusFormatter("json").format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["msg"].startswith("failed now\nTraceback")
    assert entry["source"] == "kata_runtime.x"


def test_bad_log_format() -> None:
    with pytest.raises(KataError, match="^invalid log-format: xml$"):
        LogTarget("/tmp/x", "xml")


@pytest.mark.parametrize("debug", [False, True])
def test_qmp_transport_errors_are_debug_lines(tmp_path, debug: bool) -> None:  # type: ignore[no-untyped-def]
    """qemu.qmp's own error lines (it raises the same failure to us, and we report it) are debug
    lines: absent without --debug, present as level debug with it; our errors stay errors."""
    from kata_runtime.cli.logs import setup_logging

    path = tmp_path / "log.json"
    root = logging.getLogger()
    before = list(root.handlers), root.level, logging.getLogger("kata_runtime").level
    try:
        setup_logging(LogTarget(str(path), "json"), debug)
        logging.getLogger("qemu.qmp.protocol").error("Task.Reader: ConnectionResetError: reset")
        logging.getLogger("kata_runtime.sandbox").error("ours")
        for h in root.handlers:
            h.flush()
    finally:
        root.handlers[:] = before[0]
        root.setLevel(before[1])
        logging.getLogger("kata_runtime").setLevel(before[2])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    levels = {line["msg"]: line["level"] for line in lines}
    assert levels.pop("ours") == "error"
    assert levels == ({"Task.Reader: ConnectionResetError: reset": "debug"} if debug else {})
