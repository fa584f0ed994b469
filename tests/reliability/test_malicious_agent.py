"""A malicious (or broken) guest agent, without a VM: test doubles that speak our protocols to the
real host programs. kata-proxy gets a fake agent channel (the socket QEMU would serve) that sends
garbage, oversized lengths and floods that ignore flow control; kata-shim gets a fake stream that
sends oversized lengths, endless output, short and out-of-range exit statuses; kata-runtime's agent
client gets answers with fields no parser should meet. Each must end in words (one line, a status
of its own), not a traceback, not a hang, and with its memory bounded."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.agent.stream import StreamAgentClient
from kata_runtime.errors import AgentError
from kata_runtime.protocol import mux, shimproto

BIN = Path(__file__).resolve().parents[2] / "kata_runtime" / "bin"
MIB = 1 << 20
# what a flood pushes at a program: far more than any bound we accept for its memory
FLOOD = 64 * MIB
GROWTH = 16 * MIB  # the most a program's memory may grow under a flood


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def ended(p: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """The exit status of ``p`` within ``timeout`` (a hang fails the test, and is killed)."""
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise AssertionError(f"{p.args[2:4]} hung") from None


def one_line(err: bytes, program: str) -> str:
    text = err.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: "), text
    return lines[0]


# -- kata-proxy against a fake agent channel -------------------------------------------------------

class Channel:
    """The agent's end of the channel (QEMU's chardev socket) with a real kata-proxy on the other."""

    def __init__(self, tmp: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(tmp / "channel.sock"))
        self.listener.listen(1)
        self.listen = str(tmp / "proxy.sock")
        rfd, wfd = os.pipe()
        self.proxy = subprocess.Popen([sys.executable, "-S", str(BIN / "kata-proxy"), "--channel",
                                       str(tmp / "channel.sock"), "--listen", self.listen, "--ready-fd", str(wfd)],
                                      pass_fds=(wfd,), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(wfd)
        self.listener.settimeout(10)
        self.sock, _ = self.listener.accept()
        assert os.read(rfd, 1) == b"1"
        os.close(rfd)
        self.decoder = mux.Decoder()
        self.frames: list[mux.Frame] = []
        self.frame(mux.RESET)  # the proxy's RESET, then ours: we acknowledge what we deliver
        self.sock.sendall(mux.encode(mux.RESET, 0, mux.FEATURE_WINDOW))

    def frame(self, ftype: int, timeout: float = 10.0) -> mux.Frame:
        """The next frame of type ``ftype`` from the proxy (others are kept in ``frames``)."""
        self.sock.settimeout(timeout)
        while True:
            for i, f in enumerate(self.frames):
                if f[0] == ftype:
                    return self.frames.pop(i)
            data = self.sock.recv(1 << 16)
            assert data, "kata-proxy closed the channel"
            self.frames += self.decoder.feed(data)

    def client(self) -> tuple[socket.socket, int]:
        """A client of the proxy, and the stream it became."""
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(self.listen)
        return c, self.frame(mux.OPEN)[1]

    def send(self, data: bytes) -> None:
        self.sock.settimeout(30)
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()
        self.listener.close()
        if self.proxy.poll() is None:
            self.proxy.kill()
        self.proxy.wait()


@pytest.fixture
def channel(tmp_path: Path) -> Iterator[Channel]:
    ch = Channel(tmp_path)
    yield ch
    ch.close()


def test_proxy_skips_garbage_and_oversized_lengths_and_keeps_serving(channel: Channel) -> None:
    c, stream = channel.client()
    base = rss(channel.proxy.pid)
    junk = bytes(range(256)) * 4096  # 1 MiB with a "KM" in it now and then, no valid header
    lying = [mux.HEADER.pack(mux.MAGIC, mux.DATA, stream, 0xFFFFFFFF),  # longer than any frame
             mux.HEADER.pack(mux.MAGIC, 99, stream, 10),  # a type that does not exist
             mux.encode(mux.DATA, stream + 1000, b"to nobody"),  # a stream that was never opened
             mux.encode(mux.CLOSE, stream + 1000), mux.encode(mux.WINDOW, stream, b"\xff" * 4),
             mux.encode(mux.WINDOW, stream, b"")]
    for _ in range(FLOOD // len(junk)):
        channel.send(junk + b"".join(lying))
    channel.send(mux.encode(mux.DATA, stream, b"still here"))
    c.settimeout(10)
    got = b""
    while not got.endswith(b"still here"):
        chunk = c.recv(1 << 16)
        assert chunk, "the proxy dropped the client"
        got += chunk
    assert got == b"still here", got[:200]
    assert channel.proxy.poll() is None
    assert rss(channel.proxy.pid) - base < GROWTH, (base, rss(channel.proxy.pid))
    c.close()


def test_proxy_memory_is_bounded_when_the_agent_ignores_the_window(channel: Channel) -> None:
    """The agent floods a client that does not read, past every window: the proxy drops that
    stream (the agent broke the protocol) instead of holding the flood; other streams go on."""
    slow, stream = channel.client()
    other, other_stream = channel.client()
    base = rss(channel.proxy.pid)
    chunk = mux.encode_data(stream, b"x" * mux.CHUNK)
    sent = 0
    try:
        while sent < FLOOD:
            channel.send(chunk * 16)
            sent += 16 * mux.CHUNK
    except (BrokenPipeError, ConnectionResetError):
        raise AssertionError("kata-proxy went away") from None
    assert channel.frame(mux.CLOSE)[1] == stream, "the proxy did not drop the stream that broke its window"
    peak = rss(channel.proxy.pid) - base
    assert peak < GROWTH, f"kata-proxy grew by {peak / MIB:.0f} MiB under a {FLOOD // MIB} MiB flood"
    slow.settimeout(10)
    while slow.recv(1 << 20):  # what was within the window, then the end
        pass
    channel.send(mux.encode(mux.DATA, other_stream, b"fine"))
    other.settimeout(10)
    assert other.recv(16) == b"fine"
    slow.close()
    other.close()


def test_proxy_ends_when_the_channel_ends_mid_frame(channel: Channel) -> None:
    c, stream = channel.client()
    channel.send(mux.HEADER.pack(mux.MAGIC, mux.DATA, stream, 1000) + b"half")
    channel.sock.close()
    assert ended(channel.proxy) == 0
    assert channel.proxy.stderr is not None and b"Traceback" not in channel.proxy.stderr.read()
    c.settimeout(5)
    assert c.recv(16) == b""  # the client is told: its VM is gone
    c.close()


# -- kata-shim against a fake agent stream ---------------------------------------------------------

class ShimStream:
    """A proxy socket whose one connection is answered by ``agent(conn)`` (after the shim's HELLO)."""

    def __init__(self, tmp: Path, agent: Callable[[socket.socket], None]) -> None:
        self.path = str(tmp / "shim-proxy.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.agent = agent
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            need = len(shimproto.hello("c1", "c1"))
            got = b""
            while len(got) < need:
                data = conn.recv(need - len(got))
                if not data:
                    return
                got += data
            try:
                self.agent(conn)
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(30)
                while conn.recv(65536):  # until the shim goes
                    pass
            except OSError:
                pass  # the shim closed on us: what the test wants to see


def run_shim(tmp: Path, agent: Callable[[socket.socket], None], stdout: int | None = subprocess.DEVNULL,
             ) -> subprocess.Popen[bytes]:
    ShimStream(tmp, agent)
    return subprocess.Popen([sys.executable, "-S", str(BIN / "kata-shim"), "--container", "c1", "--exec", "c1",
                             "--proxy", str(tmp / "shim-proxy.sock")], stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE)


def _ready(*then: bytes) -> Callable[[socket.socket], None]:
    return lambda conn: conn.sendall(shimproto.encode(shimproto.READY) + b"".join(then))


def _endless(header: bytes) -> Callable[[socket.socket], None]:
    def agent(conn: socket.socket) -> None:
        conn.sendall(header)
        for _ in range(FLOOD // MIB):
            conn.sendall(b"y" * MIB)
    return agent


BAD_STREAMS: dict[str, tuple[Callable[[socket.socket], None], str]] = {
    "oversized-length": (_endless(shimproto.encode(shimproto.READY) + struct.pack("!BI", shimproto.STDOUT,
                                                                                    0xFFFFFFFF)),
                         "a message of 4294967295 bytes"),
    "oversized-before-ready": (_endless(struct.pack("!BI", shimproto.READY, 0x7FFFFFFF)), "cannot attach"),
    "exit-status-short": (_ready(shimproto.encode(shimproto.EXIT, b"\x01")), "payload of 1 bytes"),
    "exit-status-empty": (_ready(shimproto.encode(shimproto.EXIT)), "payload of 0 bytes"),
    "exit-status-1000": (_ready(shimproto.exit_msg(1000)), "exit status 1000"),
    "exit-status-negative": (_ready(shimproto.exit_msg(-1)), "exit status -1"),
    "exit-status-huge": (_ready(shimproto.exit_msg(2 ** 31 - 1)), "exit status 2147483647"),
    "closed-mid-message": (_ready(struct.pack("!BI", shimproto.STDOUT, 100) + b"short"),
                           "lost the connection to the VM"),
    "closed-before-ready": (lambda conn: conn.sendall(b"\x0a\x00"), "closed the connection while attaching"),
}


@pytest.mark.parametrize("name", list(BAD_STREAMS))
def test_shim_refuses_a_malformed_agent_in_one_line(tmp_path: Path, name: str) -> None:
    agent, words = BAD_STREAMS[name]
    shim = run_shim(tmp_path, agent)
    peak = 0
    deadline = time.monotonic() + 20
    while shim.poll() is None and time.monotonic() < deadline:
        peak = max(peak, rss(shim.pid))
        time.sleep(0.05)
    assert ended(shim, 1) == 255
    assert shim.stderr is not None
    line = one_line(shim.stderr.read(), "kata-shim")
    assert words in line, line
    assert peak < 40 * MIB, f"kata-shim grew to {peak / MIB:.0f} MiB"


def test_shim_ignores_unknown_messages_and_passes_an_endless_output_through_bounded(tmp_path: Path) -> None:
    """Types it does not know are skipped; 64 MiB of output reach its stdout with its memory flat;
    then the status is its exit status."""
    def agent(conn: socket.socket) -> None:
        conn.sendall(shimproto.encode(shimproto.READY) + shimproto.encode(99, b"?" * 1000) +
                     shimproto.encode(shimproto.RESULT, b"{}"))
        block = shimproto.encode(shimproto.STDOUT, b"z" * 65536) * 16
        for _ in range(FLOOD // MIB):
            conn.sendall(block)
        conn.sendall(shimproto.exit_msg(42))

    shim = run_shim(tmp_path, agent, stdout=subprocess.PIPE)
    assert shim.stdout is not None
    got, peak = 0, 0
    while chunk := shim.stdout.read(1 << 20):
        got += len(chunk)
        peak = max(peak, rss(shim.pid))
    assert ended(shim) == 42
    assert got == FLOOD
    assert peak < 40 * MIB, f"kata-shim grew to {peak / MIB:.0f} MiB"
    assert shim.stderr is not None and shim.stderr.read() == b""


# -- kata-runtime's agent client ---------------------------------------------------------------------

class FakeAgent:
    """A proxy socket whose agent answers every CALL with ``reply(conn)``."""

    def __init__(self, tmp: Path, reply: Callable[[socket.socket], None]) -> None:
        self.path = str(tmp / "evil.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        threading.Thread(target=self._serve, args=(reply,), daemon=True).start()

    def _serve(self, reply: Callable[[socket.socket], None]) -> None:
        while True:
            conn, _ = self.listener.accept()
            conn.recv(65536)
            try:
                reply(conn)
            except OSError:
                pass


def _answer(payload: dict[str, Any]) -> Callable[[socket.socket], None]:
    return lambda c: c.sendall(shimproto.encode(shimproto.RESULT, json.dumps(payload).encode()))


def _trickle(c: socket.socket) -> None:
    """A header, then a byte at a time, never the whole message."""
    c.sendall(struct.pack("!BI", shimproto.RESULT, 1000))
    for _ in range(400):
        c.sendall(b" ")
        time.sleep(0.01)


DEEP = "[" * 100000
# (reply, call, words) of the cases tests/unit/test_agent_calls.py does not have
BAD_ANSWERS = {
    "deep-json-answer": (lambda c: c.sendall(shimproto.encode(shimproto.RESULT, DEEP.encode())), "list",
                         "malformed message"),
    "deep-json-field": (_answer({"stats_json": DEEP}), "stats", "malformed 'stats_json'"),
    "deep-json-b64-field": (_answer({"process_list": base64.b64encode(DEEP.encode()).decode()}), "list",
                            "malformed 'process_list'"),
    "status-5000-digits": (_answer({"status": "9" * 5000}), "wait", "malformed 'status'"),
    "status-unicode-digit": (_answer({"status": "\u00b2"}), "wait", "malformed 'status'"),
    "status-negative": (_answer({"status": -9}), "wait", "exit status -9"),
    "status-a-bool": (_answer({"status": True}), "wait", "malformed 'status'"),
    "pid-zero": (_answer({"process_list": base64.b64encode(b"[0, 1]").decode()}), "list", "malformed process list"),
    "pid-a-float": (_answer({"process_list": base64.b64encode(b"[1.5]").decode()}), "list",
                    "malformed process list"),
    "answer-not-an-object": (lambda c: c.sendall(shimproto.encode(shimproto.RESULT, b"[1]")), "list",
                             "malformed message"),
    "failed-of-1-mib": (lambda c: c.sendall(shimproto.encode(shimproto.FAILED, b"e" * MIB)), "list", "eeee"),
    "trickle": (_trickle, "list", "did not answer ListProcesses within 1s"),
}


@pytest.mark.parametrize("name", list(BAD_ANSWERS))
def test_runtime_refuses_answers_no_parser_should_meet(tmp_path: Path, name: str) -> None:
    reply, call, words = BAD_ANSWERS[name]
    evil = FakeAgent(tmp_path, reply)
    agent = StreamAgentClient(evil.path, "c1", request_timeout=1.0)
    calls: dict[str, Callable[[], Any]] = {"list": lambda: agent.list_processes("c1"),
                                           "wait": lambda: agent.wait_process("c1", "c1"),
                                           "stats": lambda: agent.stats_container("c1")}
    t0 = time.monotonic()
    with pytest.raises(AgentError, match=words) as e:
        calls[call]()
    assert time.monotonic() - t0 < 5
    assert len(str(e.value)) < 5000, "an agent's words are cut to a line's worth"
    agent.close()
