"""The guest end of the agent channel: demultiplexes mux streams (see ``protocol.mux``).

A stream that starts with ``shimproto.HELLO_MAGIC`` is a kata-shim attaching to a process (HELLO)
or a client making calls of the agent's service (CALL: kata-runtime); the calls run in threads of
their own and answer through the loop. A stream whose first bytes are an HTTP/2 preface is bridged
to the agent's gRPC server on a local unix socket, which is started for the first such stream.
Everything else runs in one selector thread; other threads hand it work with :meth:`call_soon`.

Flow control (when the proxy announces it in its RESET): each stream may have ``mux.WINDOW_SIZE``
bytes in flight towards the host; past that, its source (the process's output, the gRPC socket)
is not read until the proxy reports with WINDOW frames that it delivered them. A workload that
writes faster than its engine reads is slowed down, instead of filling the proxy's memory.

Every fd's selector registration is derived from state in one place, :meth:`ChannelServer._watch`.
"""

from __future__ import annotations

import _signal
import _socket
import errno
import os
import time
from _collections import deque

from kata_runtime.guest import glog as log
from kata_runtime.guest import lite
from kata_runtime.guest.containers import AgentFailure, Containers, Process
from kata_runtime.protocol import mux, shimproto

TYPE_CHECKING = False
if TYPE_CHECKING:  # not at run time: importing typing costs the agent's start ~0.1 s under TCG
    from collections.abc import Callable
    from typing import Any

READ_SIZE = mux.CHUNK  # of a process's output or a gRPC socket, at a time
GRPC_PREFACE = b"PRI "
# A virtio-serial read returns at most one of the port's 4 KiB buffers: the channel is read with
# readv into PIECE-sized slices of one buffer, up to READ_PIECES of them a system call.
PIECE = 4096
READ_PIECES = 64
CHANNEL_BUF = mux.HEADER_SIZE + mux.MAX_PAYLOAD + 2 * READ_PIECES * PIECE  # room for the largest frame
READ = lite.EVENT_READ
WRITE = lite.EVENT_WRITE


class Stream:
    """One mux stream; becomes a gRPC bridge or a shim session after its first bytes."""

    def __init__(self, server: ChannelServer, sid: int) -> None:
        self.server = server
        self.sid = sid
        self.pending = bytearray()
        self.kind = ""  # "" until known, "grpc", "shim" (a shim's session or calls)
        self.calling = False  # a CALL of this stream is being served
        self.credit = mux.WINDOW_SIZE  # bytes we may still send before the proxy acknowledges
        self.received = 0  # DATA payload bytes from the host
        self.acked = 0  # of those, acknowledged to the proxy as delivered
        # gRPC bridge
        self.sock: Any = None  # a _socket.socket
        self.sock_out = bytearray()
        # shim session
        self.decoder = shimproto.Decoder(split=(shimproto.STDIN,))  # stdin bytes go to the pipe uncopied
        self.proc: Process | None = None
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.open_outputs: set[int] = set()
        self.exit_sent = False

    @property
    def blocked(self) -> bool:
        """The proxy has not yet acknowledged a window's worth of our data: stop reading sources."""
        return self.server.flow_control and self.credit <= 0

    def send(self, data: bytes) -> None:
        was_blocked = self.blocked
        self.credit -= len(data)
        self.server.send_frame(mux.encode_data(self.sid, data))
        if self.blocked and not was_blocked:
            self.server.refresh(self)

    def send_msg(self, mtype: int, payload: bytes = b"") -> None:
        self.send(shimproto.encode(mtype, payload))

    def ack(self) -> None:
        """Tell the proxy how much of what it sent has left our buffers (a quarter window at a
        time, or all once nothing is pending), so that it forwards more of its client's data."""
        if not self.server.flow_control:
            return
        backlog = len(self.sock_out) + len(self.stdin_buf) + len(self.pending) + self.decoder.pending()
        delta = self.received - backlog - self.acked
        if delta >= mux.WINDOW_SIZE // 4 or (delta > 0 and not backlog):
            self.server.send_frame(mux.encode_window(self.sid, delta))
            self.acked += delta


class ChannelServer:
    """Selector loop over the channel fd, gRPC bridge sockets and process stdio pipes."""

    def __init__(self, channel_fd: int, grpc_path: str, containers: Containers,
                 start_grpc: Callable[[], None] | None = None) -> None:
        """``start_grpc`` starts the gRPC server on ``grpc_path`` (it blocks until it listens);
        ``service`` (an ``AgentService``) must be set before :meth:`serve_forever`."""
        self.fd = channel_fd
        os.set_blocking(channel_fd, False)
        self.grpc_path = grpc_path
        self.start_grpc = start_grpc
        self.grpc_state = ""  # "", "starting", "ready", "failed"
        self.grpc_waiting: list[Stream] = []  # streams whose bytes wait for the server to listen
        self.containers = containers
        self.service: Any = None
        self.sel = lite.Selector()
        self.streams: dict[int, Stream] = {}
        self.out = bytearray()
        self._rbuf = bytearray(CHANNEL_BUF)
        view = memoryview(self._rbuf)
        self._pieces = [view[i:i + PIECE] for i in range(0, CHANNEL_BUF, PIECE)]
        self._rstart = self._rend = 0  # the bytes of ``_rbuf`` read and not parsed yet
        self.flow_control = False  # on when the proxy's RESET says it sends WINDOW frames
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.sel.register(self.fd, READ, ("channel", None))
        self.sel.register(self._wake_r, READ, ("wake", None))

    # -- thread-safe entry -------------------------------------------------------------------
    def call_soon(self, fn: Callable[[], None]) -> None:
        self._calls.append(fn)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def process_exited(self, proc: Process) -> None:
        """From the reaper thread: a process ended; its shim gets EXIT once output is drained."""
        self.call_soon(lambda: self._maybe_exit(proc))

    def forget(self, procs: list[Process]) -> None:
        """From a gRPC thread: these processes are gone with their container."""
        def drop() -> None:
            for p in procs:
                st: Stream | None = p.session
                if st is not None:
                    self._close_stream(st, notify=True)
                p.close_fds()
        self.call_soon(drop)

    # -- selector registrations ---------------------------------------------------------------
    def _watch(self, fd: int | None, events: int, data: Any) -> None:
        """Register ``fd`` for exactly ``events`` (0: not at all)."""
        if fd is None:
            return
        try:
            key = self.sel.get_key(fd)
        except KeyError:
            if events:
                self.sel.register(fd, events, data)
            return
        if not events:
            self.sel.unregister(fd)
        elif key.events != events or key.data != data:
            self.sel.modify(fd, events, data)

    def refresh(self, st: Stream) -> None:
        """Recompute the registrations of everything a stream reads from or writes to."""
        take = 0 if st.blocked else READ
        if st.sock is not None:
            self._watch(st.sock.fileno(), take | (WRITE if st.sock_out else 0), ("grpc", st))
        proc = st.proc
        if proc is None:
            return
        for fd in st.open_outputs:
            if proc.tty:  # the pty master also takes what we write to the terminal
                self._watch(fd, take | (WRITE if st.stdin_buf else 0), ("tty", st))
            else:
                self._watch(fd, take, ("out", st))
        if not proc.tty:
            self._watch(proc.stdin_fd, WRITE if st.stdin_buf else 0, ("in", st))

    def _unwatch_session(self, st: Stream) -> None:
        proc = st.proc
        for fd in st.open_outputs:
            self._watch(fd, 0, None)
        if proc is not None and not proc.tty:
            self._watch(proc.stdin_fd, 0, None)

    # -- channel output ----------------------------------------------------------------------
    def send_frame(self, data: bytes) -> None:
        if self.out:  # frames go out in order: behind what waits
            self.out += data
            return
        try:
            n = self._write_some(data)
        except OSError as e:
            log.error("agent channel write failed: %s", e)
            return
        if n < len(data):
            self.out += memoryview(data)[n:]
            self.sel.modify(self.fd, READ | WRITE, ("channel", None))

    def _write_some(self, data: bytes | bytearray) -> int:
        """Write what the port takes now; how many bytes. A virtio-serial write takes at most
        32 KiB: writing on until it would block saves a trip through the loop for each of those."""
        done = 0
        with memoryview(data) as view:
            while done < len(view):
                try:
                    n = os.write(self.fd, view[done:])
                except (BlockingIOError, InterruptedError):
                    break
                if not n:
                    break
                done += n
        return done

    def _flush_channel(self) -> None:
        n = self._write_some(self.out)
        del self.out[:n]
        if not self.out:
            self.sel.modify(self.fd, READ, ("channel", None))

    def _read_channel(self) -> list[tuple[int, int, memoryview]]:
        """Read what the channel has into ``_rbuf`` and return its complete frames, whose payloads
        are views of ``_rbuf``: valid until the next read. The unparsed rest of a frame is moved
        so that it ends on a PIECE boundary, where the next readv continues."""
        start, end = self._rstart, self._rend
        if start == end:
            start = end = 0
        elif end % PIECE or CHANNEL_BUF - end < READ_PIECES * PIECE:
            n = end - start
            to = -n % PIECE
            self._rbuf[to:to + n] = self._rbuf[start:end]
            start, end = to, to + n
        first = end // PIECE
        self._rstart, self._rend = start, end
        try:
            got = os.readv(self.fd, self._pieces[first:first + READ_PIECES])
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as e:
            if e.errno == errno.ENXIO:  # host end not connected yet
                return []
            raise
        if not got:
            # virtio-serial reads EOF (and polls HUP) while no host end is connected; the next
            # proxy sends RESET. Do not spin meanwhile.
            time.sleep(0.05)
            return []
        end += got
        frames: list[tuple[int, int, memoryview]] = []
        pos, _skipped = mux.parse(self._rbuf, start, end, frames)
        self._rstart, self._rend = pos, end
        return frames

    def _channel_readable(self) -> None:
        for ftype, sid, payload in self._read_channel():
            if ftype == mux.OPEN:
                self.streams[sid] = Stream(self, sid)
            elif ftype == mux.DATA:
                st = self.streams.get(sid)
                if st is not None:
                    st.received += len(payload)
                    self._stream_data(st, payload)
                    if st.sid in self.streams:
                        st.ack()
            elif ftype == mux.WINDOW:
                st = self.streams.get(sid)
                if st is not None:
                    was_blocked = st.blocked
                    st.credit += mux.parse_window(payload)
                    if was_blocked and not st.blocked:
                        self.refresh(st)
            elif ftype == mux.CLOSE:
                st = self.streams.get(sid)
                if st is not None:
                    self._close_stream(st, notify=False)
            elif ftype == mux.RESET:
                for st in list(self.streams.values()):
                    self._close_stream(st, notify=False)
                self.out.clear()
                self.flow_control = mux.FEATURE_WINDOW in bytes(payload)
                if self.flow_control:  # say that we acknowledge too
                    self.send_frame(mux.encode(mux.RESET, 0, mux.FEATURE_WINDOW))

    # -- streams ------------------------------------------------------------------------------
    def _stream_data(self, st: Stream, data: bytes | memoryview) -> None:
        if not st.kind:
            st.pending += data
            if len(st.pending) < 4:
                return
            head = bytes(st.pending[:4])
            data = bytes(st.pending)
            st.pending.clear()
            if head == GRPC_PREFACE:
                st.kind = "grpc"
                if self.grpc_state != "ready":
                    st.sock_out += data
                    self.grpc_waiting.append(st)
                    self._start_grpc()
                    return
                self._connect_grpc(st)
                if st.sock is None:
                    return
            elif head == shimproto.HELLO_MAGIC:
                st.kind = "shim"
                data = data[4:]
            else:
                log.error("stream %d: unknown protocol %r", st.sid, head)
                self._close_stream(st, notify=True)
                return
        if st.kind == "grpc":
            self._bridge_write(st, data)
        else:
            for mtype, payload in st.decoder.feed(data):
                self._shim_message(st, mtype, payload)

    def _close_stream(self, st: Stream, notify: bool) -> None:
        if self.streams.pop(st.sid, None) is None:
            return
        if st in self.grpc_waiting:
            self.grpc_waiting.remove(st)
        if st.sock is not None:
            self._watch(st.sock.fileno(), 0, None)
            st.sock.close()
            st.sock = None
        if st.proc is not None:
            proc = st.proc
            orphaned = proc.session is st and proc.status is None and proc.exec_id not in ("", proc.container_id)
            self._detach(st)
            if orphaned:
                # an exec's shim went away while its process runs (an engine's SIGKILL to the
                # shim when ExecSync times out): nobody can wait for it or see its output any more
                log.info("exec %s of %s lost its shim: killing it", proc.exec_id, proc.container_id)
                try:
                    os.kill(proc.pid, _signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if notify:
            self.send_frame(mux.encode(mux.CLOSE, st.sid))

    # -- gRPC bridge -------------------------------------------------------------------------
    def _start_grpc(self) -> None:
        """Start the gRPC server once, in a thread; the waiting streams connect when it listens."""
        if self.grpc_state:
            if self.grpc_state == "failed":
                for st in list(self.grpc_waiting):
                    self._close_stream(st, notify=True)
            return
        self.grpc_state = "starting"

        def work() -> None:
            state = "ready"
            try:
                assert self.start_grpc is not None, "no gRPC server in this agent"
                self.start_grpc()
            except BaseException as e:  # noqa: BLE001 - no gRPC: its clients are refused, the rest serves
                log.exception("cannot start the gRPC server: %s", e)
                state = "failed"

            def ready() -> None:
                self.grpc_state = state
                waiting, self.grpc_waiting = self.grpc_waiting, []
                for st in waiting:
                    if state == "ready":
                        self._connect_grpc(st)
                    else:
                        self._close_stream(st, notify=True)
            self.call_soon(ready)

        lite.start_thread(work, "grpc-start")

    def _connect_grpc(self, st: Stream) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(self.grpc_path)
        except OSError as e:
            log.error("cannot reach the gRPC server: %s", e)
            sock.close()
            self._close_stream(st, notify=True)
            return
        sock.setblocking(False)
        st.sock = sock
        self.refresh(st)

    def _bridge_write(self, st: Stream, data: bytes | memoryview) -> None:
        if st.sock is None:  # the server is starting
            st.sock_out += data
            return
        if not st.sock_out:
            try:
                n = st.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self._close_stream(st, notify=True)
                return
            data = data[n:]
            if not data:
                return
        st.sock_out += data
        self.refresh(st)

    def _bridge_event(self, st: Stream, events: int) -> None:
        assert st.sock is not None
        if events & WRITE:
            try:
                n = st.sock.send(st.sock_out)
            except BlockingIOError:
                n = 0
            except OSError:
                self._close_stream(st, notify=True)
                return
            del st.sock_out[:n]
            st.ack()
            if not st.sock_out:
                self.refresh(st)
        if events & READ and st.sock is not None and not st.blocked:
            try:
                data = st.sock.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_stream(st, notify=True)
                return
            st.send(data)

    # -- shim sessions -----------------------------------------------------------------------
    def _shim_message(self, st: Stream, mtype: int, payload: bytes) -> None:
        """One message of a shim's stream; a STDIN payload may be a view of the channel buffer."""
        if mtype == shimproto.HELLO:
            try:
                cid, exec_id, _tty = shimproto.parse_hello(payload)
                proc = self.containers.process(cid, exec_id)
            except (ValueError, AgentFailure) as e:
                st.send_msg(shimproto.ERROR, str(e).encode())
                self._close_stream(st, notify=True)
                return
            old: Stream | None = proc.session
            if old is not None:  # a new shim takes over (the old one died): not an orphaned process
                proc.session = None
                self._close_stream(old, notify=True)
            st.proc = proc
            proc.session = st
            st.send_msg(shimproto.READY)
            st.open_outputs = {fd for fd in (proc.stdout_fd, proc.stderr_fd) if fd is not None}
            self.refresh(st)
            self._maybe_exit(proc)
            return
        if mtype == shimproto.CALL and st.proc is None:
            self._call(st, payload)
            return
        attached = st.proc
        if attached is None:
            return
        if mtype == shimproto.STDIN:
            if not st.stdin_eof:
                self._stdin_write(st, payload)
        elif mtype == shimproto.STDIN_EOF:
            st.stdin_eof = True
            if not st.stdin_buf:
                self._close_stdin(st)
        elif mtype == shimproto.SIGNAL:
            signo = shimproto.parse_u32(payload)
            if not attached.exited.is_set():
                try:
                    os.kill(attached.pid, signo)
                except (ProcessLookupError, PermissionError):
                    pass
        elif mtype == shimproto.RESIZE:
            self.containers.resize(attached, *shimproto.parse_resize(payload))

    def _call(self, st: Stream, payload: bytes) -> None:
        """A CALL: the operation runs in a thread of its own (it may wait for a process or run the
        OCI runtime), its answer comes back through the loop; one call at a time per stream."""
        try:
            if st.calling:
                raise ValueError("a call is already being served on this stream")
            msg = lite.loads(payload)
            name, request = msg["method"], msg.get("request") or {}
            if not isinstance(name, str) or not isinstance(request, dict):
                raise ValueError("method must be a string and request an object")
        except (ValueError, KeyError, TypeError) as e:
            st.send_msg(shimproto.ERROR, f"malformed CALL: {e}".encode())
            self._close_stream(st, notify=True)
            return
        log.debug("CALL %s at uptime %.3f", name, time.clock_gettime(time.CLOCK_BOOTTIME))
        fn = self.service.method(name)
        if fn is None:
            st.send_msg(shimproto.FAILED, f"the agent has no method {name}".encode())
            return
        st.calling = True

        def work() -> None:
            try:
                answer = (shimproto.RESULT, lite.dumps(fn(request)).encode())
            except AgentFailure as e:
                answer = (shimproto.FAILED, str(e).encode())
            except Exception as e:  # noqa: BLE001 - a bug: say what, keep serving
                log.exception("%s: internal error", name)
                answer = (shimproto.FAILED, f"agent internal error: {type(e).__name__}: {e}".encode())

            def reply() -> None:
                st.calling = False
                if self.streams.get(st.sid) is st:
                    st.send_msg(*answer)
            self.call_soon(reply)

        lite.start_thread(work, name)

    def _detach(self, st: Stream) -> None:
        proc = st.proc
        if proc is None:
            return
        self._unwatch_session(st)
        st.open_outputs.clear()
        st.proc = None
        if proc.session is st:
            proc.session = None

    def _stdin_write(self, st: Stream, data: bytes | memoryview) -> None:
        proc = st.proc
        if proc is None or proc.stdin_fd is None:
            return
        if not st.stdin_buf:
            try:
                n = os.write(proc.stdin_fd, data)
            except BlockingIOError:
                n = 0
            except OSError:  # the process closed its stdin
                return
            data = data[n:]
            if not data:
                return
        st.stdin_buf += data
        self.refresh(st)

    def _stdin_writable(self, st: Stream) -> None:
        proc = st.proc
        if proc is None or proc.stdin_fd is None:
            return
        try:
            n = os.write(proc.stdin_fd, st.stdin_buf)
        except BlockingIOError:
            return
        except OSError:
            n = len(st.stdin_buf)
        del st.stdin_buf[:n]
        st.ack()
        if not st.stdin_buf:
            self.refresh(st)
            if st.stdin_eof:
                self._close_stdin(st)

    def _close_stdin(self, st: Stream) -> None:
        proc = st.proc
        if proc is not None and proc.stdin_fd is not None and not proc.tty:
            self._watch(proc.stdin_fd, 0, None)
            os.close(proc.stdin_fd)
            proc.stdin_fd = None

    def _output_readable(self, st: Stream, fd: int) -> None:
        proc = st.proc
        if st.blocked:
            return
        mtype = shimproto.STDERR if proc is not None and fd == proc.stderr_fd else shimproto.STDOUT
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO from a pty whose slave side is gone
        if data:
            st.send_msg(mtype, data)
            return
        self._watch(fd, 0, None)
        st.open_outputs.discard(fd)
        if proc is not None:
            # a terminal's master is stdin and stdout at once: forget it in every role
            for name in ("stdout_fd", "stderr_fd", "stdin_fd"):
                if getattr(proc, name) == fd:
                    setattr(proc, name, None)
            os.close(fd)
            self._maybe_exit(proc)

    def _maybe_exit(self, proc: Process) -> None:
        st: Stream | None = proc.session
        if st is None or st.exit_sent or proc.status is None:
            return
        if proc.stdout_fd is not None or proc.stderr_fd is not None:
            return  # output still to drain; EOF will call back here
        st.exit_sent = True
        st.send(shimproto.exit_msg(proc.status))

    # -- loop ---------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        while True:
            for key, events in self.sel.select():
                kind, st = key.data
                try:
                    if kind == "channel":
                        if events & WRITE:
                            self._flush_channel()
                        if events & READ:
                            self._channel_readable()
                    elif kind == "wake":
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        while self._calls:
                            self._calls.popleft()()
                    elif kind == "grpc":
                        if st.sock is not None:
                            self._bridge_event(st, events)
                    elif kind == "out":
                        self._output_readable(st, key.fd)
                    elif kind == "in":
                        self._stdin_writable(st)
                    elif kind == "tty":
                        if events & WRITE:
                            self._stdin_writable(st)
                        if events & READ and key.fd in st.open_outputs:
                            self._output_readable(st, key.fd)
                except Exception:  # one bad stream must not take the agent down
                    log.exception("channel loop error (%s)", kind)


def run_in_thread(server: ChannelServer) -> None:
    lite.start_thread(server.serve_forever, "channel")
