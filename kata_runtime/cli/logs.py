"""Log lines as runc writes them with logrus, and Python ``logging`` routed to ``--log``.

JSON: ``{"level":"error","msg":"container does not exist","time":"2026-11-29T03:08:54Z"}``
(keys sorted, RFC 3339 local time to the second). Text: ``time="2026-11-29T03:08:54Z"
level=error msg="container does not exist"``. Nothing ever goes to syslog: there is no /dev/log.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
import time
from typing import IO, Any

from kata_runtime.cli.output import go_json
from kata_runtime.errors import KataError

LOG_FORMATS = ("text", "json")

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
           logging.ERROR: "error", logging.CRITICAL: "fatal"}


def logrus_level(levelno: int) -> str:
    """logrus's name for a Python log level."""
    for number in sorted(_LEVELS, reverse=True):
        if levelno >= number:
            return _LEVELS[number]
    return "debug"


def rfc3339(when: float) -> str:
    """Go's ``time.RFC3339`` of a Unix time in local time (``Z`` for UTC)."""
    tm = time.localtime(when)
    off = tm.tm_gmtoff or 0
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", tm) + zone


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote`` (what ``%q`` prints)."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _text_value(value: str) -> str:
    # logrus TextFormatter.needsQuoting
    if all(c.isascii() and (c.isalnum() or c in "-._/@^+") for c in value):
        return value
    return go_quote(value)


def logrus_line(level: str, msg: str, when: float, fmt: str = "text",
                fields: dict[str, Any] | None = None) -> str:
    """One logrus log line (without the newline) in ``fmt`` ``text`` or ``json``."""
    data = {str(k): v for k, v in (fields or {}).items()}
    if fmt == "json":
        entry: dict[str, Any] = dict(data, level=level, msg=msg, time=rfc3339(when))
        return go_json(dict(sorted(entry.items())))
    parts = [f"time={_text_value(rfc3339(when))}", f"level={level}", f"msg={_text_value(msg)}"]
    parts += [f"{k}={_text_value(str(v))}" for k, v in sorted(data.items())]
    return " ".join(parts)


class LogrusFormatter(logging.Formatter):
    """Formats Python log records as logrus lines; a traceback becomes part of the one-line msg."""

    def __init__(self, fmt: str = "text") -> None:
        super().__init__()
        self.log_format = fmt

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg = f"{msg}\n{self.formatException(record.exc_info)}"
        return logrus_line(logrus_level(record.levelno), msg, record.created, self.log_format,
                           {"source": record.name})


def _open_append(path: str) -> IO[str]:
    """``path`` opened for appending, as runc opens ``--log`` (created, not truncated). A FIFO that
    no process reads is an error here, where runc would block on it forever."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ENXIO and stat.S_ISFIFO(os.stat(path).st_mode):
            raise OSError(errno.ENXIO, "a FIFO that no process reads") from None
        raise
    os.set_blocking(fd, True)  # a full pipe to a reader waits for it, as runc's writes do
    return os.fdopen(fd, "a", encoding="utf-8")


class LogTarget:
    """Where ``--log``/``--log-format`` send log lines: a file (appended) or stderr."""

    def __init__(self, path: str | None, fmt: str = "text") -> None:
        if fmt not in LOG_FORMATS:
            raise KataError(f"invalid log-format: {fmt}")
        self.path = path
        self.format = fmt
        self._stream: IO[str] | None = None

    @property
    def is_file(self) -> bool:
        return bool(self.path) and self.path not in ("/dev/stderr", "/proc/self/fd/2")

    def stream(self) -> IO[str]:
        """The open log stream (the file is opened on first use, in append mode)."""
        if self._stream is None:
            if not self.is_file:
                self._stream = sys.stderr
            else:
                assert self.path is not None
                try:
                    self._stream = _open_append(self.path)  # kept open until exit
                except OSError as e:
                    self._stream = sys.stderr
                    raise KataError(f"open {self.path}: {(e.strerror or str(e)).lower()}") from None
        return self._stream

    def write(self, level: str, msg: str) -> None:
        """Append one line now (used for the final error line, outside ``logging``)."""
        stream = self.stream()
        stream.write(logrus_line(level, msg, time.time(), self.format) + "\n")
        stream.flush()


class _LazyStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that opens the log file only when a record is actually emitted."""

    def __init__(self, target: LogTarget) -> None:
        super().__init__(sys.stderr)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.setStream(self.target.stream())
        except KataError:
            return
        super().emit(record)


class _QmpTransportFilter(logging.Filter):
    """qemu.qmp logs its reader's and writer's transport errors (``Task.Reader: ConnectionResetError``
    when QEMU exits, as when a template's device state fails to load) at error level, and then
    raises them to its caller: we report each failure once, in our words. Its lines become debug
    lines, kept only with ``--debug``."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("qemu.qmp"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.debug


def setup_logging(target: LogTarget, debug: bool) -> None:
    """Route Python logging (ours and the libraries') to ``target``: debug lines of kata_runtime
    with ``--debug``, warnings and errors of everything always (qemu.qmp's as debug lines)."""
    handler = _LazyStreamHandler(target)
    handler.setFormatter(LogrusFormatter(target.format))
    handler.addFilter(_QmpTransportFilter(debug))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _LazyStreamHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("kata_runtime").setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.captureWarnings(True)
