"""What the guest agent needs of the standard library, on C modules only.

The agent's first answer waits for everything it imports, and under TCG every module's first
run costs: ``json`` (with ``re``), ``socket`` and ``signal`` (with ``enum``), ``selectors``,
``threading``, ``subprocess`` and ``ctypes`` cost the agent's start about half a second. This
module gives the agent the small part of them it uses, on the C modules behind them (``_json``,
``_socket``, ``_signal``, ``_thread``, ``select.epoll``, ``os.posix_spawn``); ``ctypes`` is loaded
only when a mount needs it (the agent's warm-up loads it while the host works).

Same behaviour as the standard library for what the agent uses:

- :func:`loads`/:func:`dumps`: JSON as ``json.loads``/``json.dumps(obj, separators=(",", ":"))``
  (``ensure_ascii``, no circular-reference check: the agent never builds a cycle).
- :class:`Event`, :func:`Lock`, :func:`start_thread`: ``threading.Event``/``Lock``/a daemon thread.
- :class:`Selector`: ``selectors.EpollSelector``'s register/modify/unregister/get_key/select.
- :func:`spawn`: ``subprocess.Popen`` of a command with its stdio on given fds, without fork (the
  child gets the default disposition of SIGPIPE and SIGXFSZ, which the agent ignores, and only
  fds 0-2: the agent opens everything else close-on-exec).
"""

from __future__ import annotations

import _json
import _signal
import _thread
import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from collections.abc import Callable
    from typing import Any

# -- JSON ------------------------------------------------------------------------------------------


class _DecoderContext:
    """The attributes ``_json.make_scanner`` reads: ``json.JSONDecoder()``'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_context: Any = _DecoderContext()  # typeshed wants a json.JSONDecoder: what it reads is here
_scan = _json.make_scanner(_context)
_WHITESPACE = " \t\n\r"


def loads(s: str | bytes | bytearray | memoryview) -> Any:
    """``json.loads``: a ``ValueError`` (a ``json.JSONDecodeError`` where the scanner says where)
    for what is not one JSON value."""
    if not isinstance(s, str):
        s = bytes(s).decode("utf-8")
    start = len(s) - len(s.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(s, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    if end < len(s.rstrip(_WHITESPACE)):
        raise ValueError(f"Extra data: char {end}")
    return obj


def _not_serializable(o: object) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


# markers None: no circular-reference bookkeeping, so one encoder serves every thread at once
_encode = _json.make_encoder(None, _not_serializable, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, True)


def dumps(obj: Any) -> str:
    """``json.dumps(obj, separators=(",", ":"))``."""
    if isinstance(obj, str):
        return _json.encode_basestring_ascii(obj)
    return "".join(_encode(obj, 0))


# -- threads ------------------------------------------------------------------------------------

Lock = _thread.allocate_lock


def start_thread(target: Callable[[], object], name: str = "") -> None:
    """Run ``target()`` in a new thread that does not keep the agent alive (``name`` documents
    it). An exception it lets out is reported on stderr, as ``threading`` would."""
    _thread.start_new_thread(target, ())


class Event:
    """``threading.Event`` on ``_thread`` locks."""

    __slots__ = ("_flag", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._mutex = _thread.allocate_lock()
        self._waiters: list[Any] = []

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.release()

    def clear(self) -> None:
        with self._mutex:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` seconds passed; the flag."""
        with self._mutex:
            if self._flag:
                return True
            waiter = _thread.allocate_lock()
            waiter.acquire()
            self._waiters.append(waiter)
        got = waiter.acquire(True, -1 if timeout is None else max(timeout, 0.0))
        if not got:
            with self._mutex:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        return got or self._flag


# -- selector ------------------------------------------------------------------------------------

EVENT_READ = 1
EVENT_WRITE = 2


class SelectorKey:
    __slots__ = ("fd", "events", "data")

    def __init__(self, fd: int, events: int, data: Any) -> None:
        self.fd = fd
        self.events = events
        self.data = data


def _epoll_mask(events: int) -> int:
    return (select.EPOLLIN if events & EVENT_READ else 0) | (select.EPOLLOUT if events & EVENT_WRITE else 0)


class Selector:
    """``selectors.EpollSelector`` for integer fds: what the agent's channel loop calls."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._keys: dict[int, SelectorKey] = {}

    def register(self, fd: int, events: int, data: Any = None) -> SelectorKey:
        if fd in self._keys:
            raise KeyError(f"{fd} is already registered")
        self._epoll.register(fd, _epoll_mask(events))
        key = self._keys[fd] = SelectorKey(fd, events, data)
        return key

    def modify(self, fd: int, events: int, data: Any = None) -> SelectorKey:
        key = self._keys[fd]
        if events != key.events:
            self._epoll.modify(fd, _epoll_mask(events))
        key.events, key.data = events, data
        return key

    def unregister(self, fd: int) -> SelectorKey:
        key = self._keys.pop(fd)
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed
            pass
        return key

    def get_key(self, fd: int) -> SelectorKey:
        return self._keys[fd]

    def select(self, timeout: float | None = None) -> list[tuple[SelectorKey, int]]:
        ready = []
        for fd, mask in self._epoll.poll(-1 if timeout is None else timeout, max(len(self._keys), 1)):
            key = self._keys.get(fd)
            if key is None:
                continue
            events = (EVENT_WRITE if mask & ~select.EPOLLIN else 0) | (EVENT_READ if mask & ~select.EPOLLOUT else 0)
            if events & key.events:
                ready.append((key, events & key.events))
        return ready


# -- processes -----------------------------------------------------------------------------------

def spawn(argv: list[str], stdin: int, stdout: int, stderr: int) -> int:
    """Start ``argv`` (searched on PATH) with the given fds as its stdio; its pid. Raises
    ``OSError`` when it cannot be started (``FileNotFoundError`` for a missing program)."""
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate((stdin, stdout, stderr))]
    return os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions,
                           setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))


def read_pipes(fds: list[int], timeout: float | None = None) -> list[bytes] | None:
    """Read each fd to its end, all at once (as ``Popen.communicate``); closes them. None when
    ``timeout`` seconds passed first (what was read is dropped)."""
    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    open_fds = set(fds)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while open_fds:
            wait = -1 if deadline is None else max(deadline - time.monotonic(), 0.0) * 1000
            ready = poller.poll(wait)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                return None
            for fd, _mask in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
        return [b"".join(chunks[fd]) for fd in fds]
    finally:
        for fd in fds:
            os.close(fd)


# -- sockets, libc -------------------------------------------------------------------------------


def recv_fds(sock: Any, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """``socket.recv_fds`` on a ``_socket.socket``; the fds come close-on-exec."""
    import _socket
    import array

    msg, ancdata, _flags, _addr = sock.recvmsg(bufsize, _socket.CMSG_LEN(maxfds * 4), MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


MSG_CMSG_CLOEXEC = 0x40000000

_libc: list[Any] = []


def libc() -> Any:
    """The C library through ``ctypes`` (loaded on first use), with errno kept."""
    if not _libc:
        import ctypes

        _libc.append(ctypes.CDLL(None, use_errno=True))
    return _libc[0]


def errno_now() -> int:
    """errno of the last :func:`libc` call in this thread."""
    import ctypes

    return ctypes.get_errno()
