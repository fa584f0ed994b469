"""kata-proxy: owns the host end of a sandbox's agent channel and multiplexes it.

Every connection accepted on the listening socket becomes one mux stream (see
``kata_runtime.protocol.mux``); bytes are copied both ways without interpretation. When the channel
closes (the VM is gone) every client is disconnected and the proxy exits.

Started by kata-runtime as ``kata-proxy --channel SOCK --listen SOCK [--ready-fd N]``; it writes one
byte to the ready fd once it listens and owns the channel. It lives as long as the VM, one per
sandbox, so it imports only C modules (``_socket``, ``select``, ``_signal``) and ``mux``: the
``socket``, ``signal`` and ``selectors`` wrappers (and the ``enum`` they pull in) would cost more than
a megabyte of private memory per process.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import os
import select
import sys
import time

from kata_runtime.protocol import lightargs, mux

READ_SIZE = 256 * 1024
# An agent keeps at most a window of a stream's data unacknowledged: more held for a client is an
# agent that ignores flow control, and its stream is dropped rather than held in our memory.
OVER_WINDOW = 2 * mux.WINDOW_SIZE
_IN = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_OUT = select.EPOLLOUT


class Endpoint:
    """A non-blocking socket with an output buffer."""

    __slots__ = ("sock", "out", "closing", "stream", "delivered", "credit")

    def __init__(self, sock: _socket.socket, stream: int = 0) -> None:
        self.sock = sock
        self.out = bytearray()
        self.closing = False  # close once ``out`` is flushed
        self.stream = stream
        self.delivered = 0  # bytes written to the client and not yet acknowledged to the agent
        self.credit = mux.WINDOW_SIZE  # bytes of this client we may still forward unacknowledged


class Proxy:
    """The epoll loop: one channel endpoint, one listener, many client endpoints."""

    def __init__(self, channel: _socket.socket, listener: _socket.socket) -> None:
        self.ep = select.epoll()
        self.channel = Endpoint(channel)
        self.listener = listener
        self.clients: dict[int, Endpoint] = {}
        self.by_fd: dict[int, Endpoint] = {channel.fileno(): self.channel}
        self.next_stream = 1
        self.decoder = mux.Decoder()
        self.running = True
        self.agent_acks = False  # the agent said (in its RESET) that it acknowledges our data
        for s in (channel, listener):
            s.setblocking(False)
        self.ep.register(channel.fileno(), _IN)
        self.ep.register(listener.fileno(), _IN)
        # A previous proxy may have died mid-frame: tell the agent to start a new session.
        self._send(self.channel, mux.encode(mux.RESET, 0, mux.FEATURE_WINDOW))

    # -- output buffering ---------------------------------------------------------------------
    def _want_write(self, ep: Endpoint) -> None:
        """Poll for writing only with data queued; a client's reads stop while it is closing or
        has a window's worth of unacknowledged data in the VM."""
        events = _OUT if ep.out else 0
        if ep is self.channel:
            events |= _IN
        elif not ep.closing and not (self.agent_acks and ep.credit <= 0):
            events |= _IN
        self.ep.modify(ep.sock.fileno(), events)

    def _send(self, ep: Endpoint, data: bytes) -> None:
        if not ep.out:
            try:
                n = ep.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self._drop(ep)
                return
            self._delivered(ep, n, len(data) - n)
            data = data[n:]
            if not data:
                return
        ep.out += data
        self._want_write(ep)

    def _delivered(self, ep: Endpoint, n: int, left: int) -> None:
        """Acknowledge delivered bytes to the agent: a quarter window at a time, or all at once
        when the client has taken everything (the agent then never waits on us)."""
        if ep is self.channel:
            return
        ep.delivered += n
        if ep.delivered and (ep.delivered >= mux.WINDOW_SIZE // 4 or not left):
            self._send(self.channel, mux.encode_window(ep.stream, ep.delivered))
            ep.delivered = 0

    def _flush(self, ep: Endpoint) -> None:
        try:
            n = ep.sock.send(ep.out)
        except BlockingIOError:
            return
        except OSError:
            self._drop(ep)
            return
        del ep.out[:n]
        self._delivered(ep, n, len(ep.out))
        if not ep.out:
            if ep.closing:
                self._drop(ep, notify=False)
                return
            self._want_write(ep)

    # -- clients ------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
            if not _trusted(conn):
                conn.close()
                continue
            conn.setblocking(False)
            stream = self.next_stream
            self.next_stream += 1
            ep = Endpoint(conn, stream)
            self.clients[stream] = ep
            self.by_fd[fd] = ep
            self.ep.register(fd, _IN)
            self._send(self.channel, mux.encode(mux.OPEN, stream))

    def _drop(self, ep: Endpoint, notify: bool = True) -> None:
        """Forget a client; tell the agent unless the agent closed it."""
        if ep is self.channel:
            self.running = False
            return
        if self.clients.pop(ep.stream, None) is None:
            return
        fd = ep.sock.fileno()
        self.by_fd.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        ep.sock.close()
        if notify:
            self._send(self.channel, mux.encode(mux.CLOSE, ep.stream))

    def _client_readable(self, ep: Endpoint) -> None:
        size = min(READ_SIZE, ep.credit) if self.agent_acks else READ_SIZE  # never beyond the window
        if size <= 0:
            self._want_write(ep)
            return
        try:
            data = ep.sock.recv(size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(ep)
            return
        self._send(self.channel, mux.encode_data(ep.stream, data))
        ep.credit -= len(data)
        if self.agent_acks and ep.credit <= 0:
            self._want_write(ep)

    # -- channel ------------------------------------------------------------------------------
    def _channel_readable(self) -> None:
        try:
            data = self.channel.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.running = False
            return
        for ftype, stream, payload in self.decoder.feed(data):
            if ftype == mux.RESET:  # the agent's answer to ours: what it supports
                self.agent_acks = mux.FEATURE_WINDOW in payload
                continue
            ep = self.clients.get(stream)
            if ep is None:
                continue
            if ftype == mux.WINDOW:
                blocked = ep.credit <= 0
                ep.credit += mux.parse_window(payload)
                if blocked and ep.credit > 0:
                    self._want_write(ep)
            elif ftype == mux.DATA:
                if len(ep.out) + len(payload) > OVER_WINDOW:
                    sys.stderr.write(f"kata-proxy: stream {stream}: the agent sent past the window: dropped\n")
                    self._drop(ep)
                    continue
                self._send(ep, payload)
            elif ftype == mux.CLOSE:
                if ep.out:
                    ep.closing = True
                    self._want_write(ep)
                else:
                    self._drop(ep, notify=False)

    def serve(self) -> None:
        listen_fd = self.listener.fileno()
        while self.running:
            try:
                ready = self.ep.poll()
            except InterruptedError:
                continue
            for fd, events in ready:
                if fd == listen_fd:
                    self._accept()
                    continue
                ep = self.by_fd.get(fd)
                if ep is None:
                    continue
                if events & _OUT:
                    self._flush(ep)
                if events & _IN and (ep is self.channel or ep.stream in self.clients):
                    if ep is self.channel:
                        self._channel_readable()
                    else:
                        self._client_readable(ep)
        for ep in list(self.clients.values()):
            self._drop(ep, notify=False)


def _trusted(conn: _socket.socket) -> bool:
    """Whether the peer is root or our own user (SO_PEERCRED: struct ucred's uid after the pid).
    The socket's directory is root's alone; this holds even if it were not."""
    try:
        cred = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    except OSError:
        return False
    uid = int.from_bytes(cred[4:8], sys.byteorder)
    return uid in (0, os.getuid())


def _connect_channel(path: str, timeout: float) -> _socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            if e.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    try:
        args = lightargs.parse(sys.argv[1:] if argv is None else argv,
                               {"channel": "", "listen": "", "ready-fd": "-1", "sandbox": "-"})
    except ValueError as e:
        print(f"kata-proxy: {e}", file=sys.stderr)
        return 2
    listen = args["listen"]
    ready_fd = int(args["ready-fd"])
    try:
        channel = _connect_channel(args["channel"], 10.0)
        try:
            os.unlink(listen)
        except FileNotFoundError:
            pass
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        listener.bind(listen)
        os.chmod(listen, 0o600)
        listener.listen(128)
    except OSError as e:
        print(f"kata-proxy: sandbox {args['sandbox']}: {e}", file=sys.stderr)
        return 1
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    proxy = Proxy(channel, listener)
    if ready_fd >= 0:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    try:
        proxy.serve()
    finally:
        try:
            os.unlink(listen)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
