"""kata-shim: stands on the host for one process in the guest.

It is the pid that docker/containerd watch. It connects to the sandbox's kata-proxy, attaches to
the process with the ``shimproto`` stream protocol, and then:

- copies its stdin to the process and the process's stdout/stderr to its own stdout/stderr;
- forwards every catchable signal it receives to the process (SIGWINCH becomes a terminal resize);
- exits with the process's status (128+N when it was killed by signal N).

If the VM goes away before the process's status is known, it exits 255.

Invoked by kata-runtime as ``kata-shim --container ID --exec ID --proxy SOCK [--ready-fd N]
[--tty 0|1]``. Its memory is paid once per container process on the node, so it imports only C
modules (``_socket``, ``select``, ``_signal``) and ``shimproto``: the ``socket``, ``signal`` and
``selectors`` wrappers (and the ``enum`` they pull in) would cost more than a megabyte each.
"""

from __future__ import annotations

import _signal
import _socket
import os
import select
import sys

from kata_runtime.protocol import lightargs, shimproto

TYPE_CHECKING = False  # not typing's: importing typing or collections.abc costs memory at run time
if TYPE_CHECKING:
    from collections.abc import Callable

# Signals that are not forwarded: uncatchable, or the shim's own business.
_NOT_FORWARDED = {_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD, _signal.SIGWINCH}
EXIT_LOST_VM = 255
STDIN_BACKLOG = 256 * 1024  # stop reading stdin while this much is queued for the VM
# the longest message the agent may send (its output comes in reads of 64 KiB): a longer length
# is a broken or hostile agent, refused before its bytes are held in our memory
MAX_MESSAGE = 1 << 20
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR


def _write_all(fd: int, data: bytes) -> bool:
    """Blocking write of everything; False when the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            # the engine handed us a non-blocking pipe: wait until it drains
            p = select.poll()
            p.register(fd, select.POLLOUT)
            p.poll()
            continue
        except OSError:
            return False
        view = view[n:]
    return True


def _winsize(fd: int) -> tuple[int, int] | None:
    import fcntl
    import struct
    import termios

    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def _ignore(_signo: int, _frame: object) -> None:
    """A handler that does nothing: the wakeup fd carries the signal to the loop."""


class Shim:
    def __init__(self, sock: _socket.socket, tty: bool) -> None:
        self.sock = sock
        self.tty = tty
        self.decoder = shimproto.Decoder(MAX_MESSAGE)
        self.poll = select.poll()
        self.stdin_open = True
        self.stdin_file = False  # stdin is a regular file: always readable, poll cannot wait on it
        self.stdin_polled = False
        self.status: int | None = None
        self.out_ok = {1: True, 2: True}
        self.out = bytearray()  # to the VM, not yet taken by the socket
        self.sock_fd = -1
        self.signal_fd = self._catch_signals()

    @staticmethod
    def _catch_signals() -> int:
        """From here on every forwardable signal is queued (as its number) on the returned fd.

        Done before attaching: an engine may signal the pid as soon as it is in the pid file."""
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        _signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        for signo in _signal.valid_signals():
            if signo in _NOT_FORWARDED and signo != _signal.SIGWINCH:
                continue
            try:
                _signal.signal(signo, _ignore)
            except (OSError, ValueError):
                pass
        return rfd

    def _send(self, data: bytes) -> None:
        """Queue data for the VM. Never blocks: while the VM is not taking our data (flow control
        when the workload does not read its stdin), we must still read its output."""
        self.out += data
        self._flush()

    def _flush(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.out.clear()  # the read side notices the lost connection
                break
            del self.out[:n]
        self._interest()

    def _want_stdin(self) -> bool:
        return self.stdin_open and len(self.out) < STDIN_BACKLOG

    def _interest(self) -> None:
        """Poll the socket for writing only with data queued, and stdin only while the queue is short."""
        if self.sock_fd >= 0:
            self.poll.modify(self.sock_fd, _READABLE | (select.POLLOUT if self.out else 0))
        want = self._want_stdin() and not self.stdin_file
        if want != self.stdin_polled:
            if want:
                self.poll.register(0, _READABLE)
            else:
                self.poll.unregister(0)
            self.stdin_polled = want

    def attach(self, hello: bytes) -> list[shimproto.Message]:
        """Send HELLO and wait for READY; return the messages that came with it.

        Raises RuntimeError with the agent's reason on failure."""
        self.sock.sendall(hello)
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the VM closed the connection while attaching")
            msgs = self.decoder.feed(data)
            for i, (mtype, payload) in enumerate(msgs):
                if mtype == shimproto.READY:
                    return msgs[i + 1:]
                if mtype == shimproto.ERROR:
                    raise RuntimeError(payload.decode(errors="replace"))

    def _handle(self, mtype: int, payload: bytes) -> None:
        if mtype in (shimproto.STDOUT, shimproto.STDERR):
            fd = 1 if mtype == shimproto.STDOUT else 2
            if self.out_ok[fd]:
                self.out_ok[fd] = _write_all(fd, payload)
        elif mtype == shimproto.EXIT:
            status = shimproto.parse_i32(payload)
            if not 0 <= status <= 255:
                raise ValueError(f"exit status {status}")
            self.status = status
        elif mtype == shimproto.ERROR:
            sys.stderr.write(f"kata-shim: {payload.decode(errors='replace')}\n")

    def _stdin_readable(self) -> None:
        try:
            data = os.read(0, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # EIO from a hung-up terminal: treat as end of input
        if data:
            self._send(shimproto.encode(shimproto.STDIN, data))
            return
        self.stdin_open = False
        self._send(shimproto.encode(shimproto.STDIN_EOF))

    def _signals(self, rfd: int) -> None:
        try:
            data = os.read(rfd, 512)
        except BlockingIOError:
            return
        for signo in data:
            if signo == _signal.SIGWINCH:
                size = _winsize(0) if self.tty else None
                if size:
                    self._send(shimproto.resize_msg(*size))
            else:
                self._send(shimproto.signal_msg(signo))

    def serve(self, pre_buffered: list[shimproto.Message]) -> int:
        for mtype, payload in pre_buffered:
            self._handle(mtype, payload)
        rfd = self.signal_fd
        self.sock.setblocking(False)
        self.sock_fd = self.sock.fileno()
        self.poll.register(self.sock_fd, _READABLE)
        self.poll.register(rfd, _READABLE)
        try:
            mode = os.fstat(0).st_mode
            self.stdin_file = mode & 0o170000 == 0o100000
        except OSError:  # no stdin at all
            self.stdin_open = False
            self._send(shimproto.encode(shimproto.STDIN_EOF))
        if self.tty:
            size = _winsize(0)
            if size:
                self._send(shimproto.resize_msg(*size))
        self._interest()
        while self.status is None:
            file_turn = self.stdin_file and self._want_stdin()
            try:
                ready = self.poll.poll(0 if file_turn else None)
            except InterruptedError:
                continue
            if file_turn:
                self._stdin_readable()
            for fd, events in ready:
                if fd == self.sock_fd:
                    if events & select.POLLOUT:
                        self._flush()
                    if not events & _READABLE:
                        continue
                    try:
                        data = self.sock.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        sys.stderr.write("kata-shim: lost the connection to the VM\n")
                        return EXIT_LOST_VM
                    for mtype, payload in self.decoder.feed(data):
                        self._handle(mtype, payload)
                elif fd == 0:
                    self._stdin_readable()
                else:
                    self._signals(rfd)
        return self.status


def main(argv: list[str] | None = None) -> int:
    try:
        args = lightargs.parse(sys.argv[1:] if argv is None else argv,
                               {"container": "", "exec": "", "proxy": "", "ready-fd": "-1", "tty": "0",
                                "detached": "0"})
    except ValueError as e:
        sys.stderr.write(f"kata-shim: {e}\n")
        return 2
    ready_fd = int(args["ready-fd"])
    tty = args["tty"] == "1"
    what = f"container {args['container']} process {args['exec']}"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    shim = Shim(sock, tty)
    try:
        sock.connect(args["proxy"])
        early = shim.attach(shimproto.hello(args["container"], args["exec"], tty))
    except (OSError, RuntimeError, ValueError) as e:  # ValueError: a malformed message from the agent
        msg = f"kata-shim: {what}: cannot attach: {e}"
        if ready_fd >= 0:
            os.write(ready_fd, b"E" + msg.encode())
            os.close(ready_fd)
        else:
            sys.stderr.write(msg + "\n")
        return EXIT_LOST_VM
    if ready_fd >= 0:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    launcher = os.getppid()
    restore = _setup_terminal(0) if tty else None
    try:
        status = shim.serve(early)
    except ValueError as e:  # the agent is not trusted with our memory or our exit status
        sys.stderr.write(f"kata-shim: {what}: the agent sent a malformed message: {e}\n")
        status = EXIT_LOST_VM
    finally:
        if restore is not None:
            restore()
    if args["detached"] == "1":
        _outlive_launcher(launcher)
    return status


def _outlive_launcher(launcher: int, settle: float = 0.1, limit: float = 10.0) -> None:
    """Do not exit before the kata-runtime that started us has exited, and a moment more.

    An engine learns our pid from the pid file once kata-runtime exits, and takes our exit from its
    subreaper; containerd 1.6's shims drop an exit whose pid they do not know yet (a quick
    ``docker exec ID true`` would hang for ever). So a process that ends that early waits until we
    are reparented, then ``settle`` seconds for the engine to register the pid."""
    waited = 0.0
    while os.getppid() == launcher and waited < limit:
        select.select([], [], [], 0.01)
        waited += 0.01
    if waited:
        select.select([], [], [], settle)


def _setup_terminal(fd: int) -> Callable[[], None] | None:
    """Make our terminal raw (the guest's terminal does the line discipline) and, when we lead our
    own session (engines' console sockets), our controlling terminal, so that SIGWINCH comes to us
    when the engine resizes it. Returns how to restore the terminal's mode."""
    import termios

    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return None  # not a terminal: nothing to do
    if os.getsid(0) == os.getpid():
        try:
            import fcntl

            fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
        except OSError:
            pass
    mode = termios.tcgetattr(fd)
    mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    mode[1] &= ~termios.OPOST
    mode[2] = (mode[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
    return lambda: termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


if __name__ == "__main__":
    sys.exit(main())
