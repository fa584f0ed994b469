"""The agent channel end to end without a VM: kata-shim → kata-proxy → mux → agent channel loop.

The guest side is the real ChannelServer over one end of a socketpair (standing in for the
virtio-serial port) and the real Proxy over the other; the "process" is a pair of pipes driven by
the test, so framing, attach, stdio ordering, signals and exit status are checked exactly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.guest.channel import ChannelServer, run_in_thread
from kata_runtime.guest.containers import AgentFailure, Process
from kata_runtime.protocol import mux
from kata_runtime.proxy.main import Proxy

SHIM = Path(__file__).resolve().parents[2] / "kata_runtime" / "bin" / "kata-shim"


class FakeProcess:
    """A process made of pipes: the test plays the workload."""

    def __init__(self) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (in_w, out_r, err_r):
            os.set_blocking(fd, False)
        self.proc = Process("c1", "c1", pid=os.getpid(), stdin_fd=in_w, stdout_fd=out_r, stderr_fd=err_r)
        self.stdin, self.stdout, self.stderr = in_r, out_w, err_w
        self.signals: list[int] = []
        self.keep: Any = None


class FakeContainers:
    def __init__(self, fake: FakeProcess) -> None:
        self.fake = fake

    def process(self, cid: str, exec_id: str) -> Process:
        if (cid, exec_id) != ("c1", "c1"):
            raise AgentFailure(f"container {cid} has no process {exec_id}")
        return self.fake.proc


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    fake = FakeProcess()
    guest, host = socket.socketpair()
    server = ChannelServer(guest.fileno(), str(tmp_path / "grpc.sock"), FakeContainers(fake))  # type: ignore[arg-type]
    # signals to the "workload" are recorded instead of sent
    real_kill = os.kill

    def fake_kill(pid: int, sig: int) -> None:
        if pid == os.getpid():
            fake.signals.append(sig)
        else:
            real_kill(pid, sig)

    monkeypatch.setattr("kata_runtime.guest.channel.os.kill", fake_kill)
    run_in_thread(server)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = str(tmp_path / "proxy.sock")
    listener.bind(sock_path)
    listener.listen(16)
    proxy = Proxy(host, listener)
    threading.Thread(target=proxy.serve, daemon=True, name="proxy").start()
    # as at a real VM's start: the proxy's RESET and the agent's answer are through before any client
    deadline = time.monotonic() + 10
    while not (server.flow_control and proxy.agent_acks) and time.monotonic() < deadline:
        time.sleep(0.01)
    fake.keep = (guest, host, listener, proxy)  # the channel server holds only the fd
    yield fake, server, sock_path
    for shim in STARTED:  # a failed test must not leave its shim behind
        if shim.poll() is None:
            shim.kill()
            shim.wait()
    STARTED.clear()


STARTED: list[subprocess.Popen[bytes]] = []


def start_shim(sock: str, exec_id: str = "c1", **kw: Any) -> subprocess.Popen[bytes]:
    rfd, wfd = os.pipe()
    p = subprocess.Popen([sys.executable, "-S", str(SHIM), "--container", "c1", "--exec", exec_id, "--proxy", sock,
                          "--ready-fd", str(wfd)], pass_fds=(wfd,), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, **kw)
    STARTED.append(p)
    os.close(wfd)
    ready = os.read(rfd, 4096)
    os.close(rfd)
    p.ready = ready  # type: ignore[attr-defined]
    return p


def test_stdio_order_and_exit_status(stack: Any) -> None:
    fake, server, sock = stack
    shim = start_shim(sock, stdin=subprocess.PIPE)
    assert shim.ready == b"1"
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    assert shim.stdin is not None
    shim.stdin.write(b"to the workload")
    shim.stdin.close()
    shim.stdin = None  # closed: communicate() must not flush it
    got = b""
    deadline = time.monotonic() + 5
    while got != b"to the workload" and time.monotonic() < deadline:
        try:
            got += os.read(fake.stdin, 100)
        except BlockingIOError:
            time.sleep(0.01)
    assert got == b"to the workload"
    writer = threading.Thread(target=lambda: (os.write(fake.stdout, payload), os.close(fake.stdout)))
    writer.start()
    os.write(fake.stderr, b"an error\n")
    os.close(fake.stderr)
    fake.proc.status = 3
    fake.proc.exited.set()
    server.process_exited(fake.proc)
    out, err = shim.communicate(timeout=20)
    writer.join()
    assert out == payload
    assert err == b"an error\n"
    assert shim.returncode == 3


def test_signals_are_forwarded(stack: Any) -> None:
    fake, server, sock = stack
    shim = start_shim(sock, stdin=subprocess.DEVNULL)
    assert shim.ready == b"1"
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        shim.send_signal(sig)
    deadline = time.monotonic() + 5
    while len(fake.signals) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    # several pending standard signals are delivered lowest number first: compare as a set
    assert sorted(fake.signals) == sorted([signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
    os.close(fake.stdout)
    os.close(fake.stderr)
    fake.proc.status = 128 + 15
    fake.proc.exited.set()
    server.process_exited(fake.proc)
    shim.communicate(timeout=10)
    assert shim.returncode == 143


def test_attach_to_unknown_process_fails_in_words(stack: Any) -> None:
    _fake, _server, sock = stack
    shim = start_shim(sock, exec_id="nope", stdin=subprocess.DEVNULL)
    shim.communicate(timeout=10)
    assert shim.ready.startswith(b"E") and b"no process nope" in shim.ready
    assert shim.returncode == 255


def test_mux_decoder_resynchronises_after_garbage() -> None:
    d = mux.Decoder()
    frames = d.feed(b"garbage-K" + mux.encode(mux.OPEN, 7) + mux.encode_data(7, b"x" * 100_000)[:50])
    assert frames == [(mux.OPEN, 7, b"")]
    rest = mux.encode_data(7, b"x" * 100_000)[50:]
    frames = d.feed(rest)
    assert b"".join(p for _t, _s, p in frames) == b"x" * 100_000
    assert d.skipped == len(b"garbage-K")


def test_a_slow_reader_slows_the_workload_not_the_proxys_memory(stack: Any) -> None:
    fake, server, sock = stack
    proxy = fake.keep[3]
    assert server.flow_control  # the proxy announced WINDOW frames in its RESET
    shim = start_shim(sock, stdin=subprocess.DEVNULL)
    assert shim.ready == b"1"
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
    written = [0]

    def workload() -> None:
        view = memoryview(payload)
        os.set_blocking(fake.stdout, True)
        while view:
            n = os.write(fake.stdout, view[:65536])
            written[0] += n
            view = view[n:]
        os.close(fake.stdout)

    writer = threading.Thread(target=workload, daemon=True)
    writer.start()
    time.sleep(1.5)  # nobody reads the shim's stdout meanwhile
    buffered = sum(len(ep.out) for ep in proxy.clients.values())
    assert buffered <= mux.WINDOW_SIZE + mux.CHUNK, f"proxy buffers {buffered} bytes for a stalled client"
    assert written[0] < len(payload), "the workload was never slowed down"
    os.close(fake.stderr)
    fake.proc.status = 0
    fake.proc.exited.set()
    server.process_exited(fake.proc)
    out, _err = shim.communicate(timeout=30)
    writer.join(5)
    assert out == payload
    assert shim.returncode == 0


def test_a_process_not_reading_stdin_stops_the_shim_not_the_guests_memory(stack: Any) -> None:
    fake, server, sock = stack
    shim = start_shim(sock, stdin=subprocess.PIPE)
    assert shim.ready == b"1"
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB
    fed = [0]

    def engine() -> None:
        assert shim.stdin is not None
        view = memoryview(payload)
        while view:
            n = shim.stdin.write(view[:65536])
            shim.stdin.flush()
            fed[0] += n
            view = view[n:]
        shim.stdin.close()

    feeder = threading.Thread(target=engine, daemon=True)
    feeder.start()
    time.sleep(1.5)  # the "workload" reads nothing meanwhile
    session = fake.proc.session
    assert session is not None
    assert len(session.stdin_buf) <= mux.WINDOW_SIZE + mux.CHUNK, f"agent buffers {len(session.stdin_buf)}"
    assert fed[0] < len(payload), "the shim kept reading stdin that nobody consumed"
    got = bytearray()
    os.set_blocking(fake.stdin, True)
    while True:
        chunk = os.read(fake.stdin, 1 << 20)
        if not chunk:
            break
        got += chunk
    feeder.join(10)
    assert bytes(got) == payload
    shim.stdin = None  # closed by the feeder
    os.close(fake.stdout)
    os.close(fake.stderr)
    fake.proc.status = 0
    fake.proc.exited.set()
    server.process_exited(fake.proc)
    shim.communicate(timeout=30)
    assert shim.returncode == 0


def test_shim_decoder_hands_stdin_over_in_pieces_without_holding_it() -> None:
    """A STDIN message's bytes come out as they arrive (views of the fed buffer, which is then
    reused), other messages whole; split anywhere, the stream reads the same."""
    from kata_runtime.protocol import shimproto

    msgs = [(shimproto.STDIN, bytes(range(256)) * 300), (shimproto.SIGNAL, b"\0\0\0\x0f"),
            (shimproto.STDIN, b""), (shimproto.RESIZE, b"\0\x18\0\x50"), (shimproto.STDIN, b"tail")]
    wire = b"".join(shimproto.encode(t, p) for t, p in msgs)
    for step in (1, 3, 5, 7, 4096, 70000):
        d = shimproto.Decoder(split=(shimproto.STDIN,))
        got: list[tuple[int, bytes]] = []
        for i in range(0, len(wire), step):
            buf = bytearray(wire[i:i + step])
            got += [(t, bytes(p)) for t, p in d.feed(buf)]
            buf[:] = b"\xff" * len(buf)  # the caller reuses its buffer
            assert d.pending() < shimproto.HEADER_SIZE + 4  # headers and small messages only
        merged: list[tuple[int, bytes]] = []
        for t, p in got:
            if t == shimproto.STDIN and merged and merged[-1][0] == t and p:
                merged[-1] = (t, merged[-1][1] + p)
            else:
                merged.append((t, p))
        assert [(t, p) for t, p in merged if p or t != shimproto.STDIN] == [m for m in msgs if m[1]
                                                                            or m[0] != shimproto.STDIN]


def test_big_stdin_arrives_whole_and_in_order(stack: Any) -> None:
    fake, server, sock = stack
    shim = start_shim(sock, stdin=subprocess.PIPE)
    assert shim.ready == b"1" and shim.stdin is not None
    payload = os.urandom(3 << 20)
    writer = threading.Thread(target=lambda: (shim.stdin.write(payload), shim.stdin.close()))  # type: ignore[union-attr]
    writer.start()
    got = bytearray()
    deadline = time.monotonic() + 30
    while len(got) < len(payload) and time.monotonic() < deadline:
        try:
            got += os.read(fake.stdin, 1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
    writer.join(10)
    shim.stdin = None
    assert bytes(got) == payload
    os.close(fake.stdout)
    os.close(fake.stderr)
    fake.proc.status = 0
    fake.proc.exited.set()
    server.process_exited(fake.proc)
    shim.communicate(timeout=10)
    assert shim.returncode == 0
