"""The agent's calls end to end without a VM: kata-runtime's clients → kata-proxy → mux → the
agent's channel loop → AgentService, over the stream transport and over gRPC; and what the host
does with answers it must not trust."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kata_runtime.agent.grpc_client import GrpcAgentClient
from kata_runtime.agent.stream import StreamAgentClient
from kata_runtime.errors import AgentError
from kata_runtime.guest import grpc_service
from kata_runtime.guest.channel import ChannelServer, run_in_thread
from kata_runtime.guest.containers import AgentFailure
from kata_runtime.guest.service import AgentService
from kata_runtime.protocol import shimproto
from kata_runtime.proxy.main import Proxy


class FakeContainers:
    """What AgentService asks of the guest's containers, without runc."""

    reaper = None

    def __init__(self) -> None:
        self.started: list[str] = []

    def ps(self, cid: str) -> list[int]:
        return [1, 7]

    def ps_table(self, cid: str, args: list[str]) -> bytes:
        return b"PID COMMAND\n1 sleep\n" + " ".join(args).encode()

    def start(self, cid: str) -> None:
        if cid != "c1":
            raise AgentFailure(f"container {cid} does not exist in the sandbox")
        self.started.append(cid)

    def remove(self, cid: str) -> list[Any]:
        return []


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.containers = FakeContainers()
        guest, host = socket.socketpair()
        self.grpc_servers: list[Any] = []
        self.server = ChannelServer(guest.fileno(), str(tmp / "grpc.sock"), self.containers,  # type: ignore[arg-type]
                                    start_grpc=lambda: self.grpc_servers.append(
                                        grpc_service.serve(self.service, str(tmp / "grpc.sock"))))
        self.service = AgentService(self.containers, self.server.forget, {"agent_serving": 1.5},  # type: ignore[arg-type]
                                    grpc_service.version)
        self.server.service = self.service
        self.calls: list[str] = []
        real = self.service.method

        def counted(name: str) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
            self.calls.append(name)
            return real(name)
        self.service.method = counted  # type: ignore[method-assign]
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock_path = str(tmp / "proxy.sock")
        self.listener.bind(self.sock_path)
        self.listener.listen(16)
        self.proxy = Proxy(host, self.listener)
        self.keep = (guest, host)
        threading.Thread(target=self.proxy.serve, daemon=True, name="proxy").start()

    def serve(self) -> None:
        run_in_thread(self.server)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    for g in s.grpc_servers:
        g.stop(0)


def test_calls_are_answered_in_order_on_one_stream_and_fail_in_words(stack: Stack) -> None:
    stack.serve()
    agent = StreamAgentClient(stack.sock_path, "c1", request_timeout=10)
    agent.check(10)
    assert agent.list_processes("c1") == [1, 7]
    assert agent.process_table("c1", ["-o", "pid"]) == b"PID COMMAND\n1 sleep\n-o pid"
    agent.start_container("c1")
    with pytest.raises(AgentError, match="container c2 does not exist in the sandbox"):
        agent.start_container("c2")
    assert agent.version()["agent_serving"] == "1.500"
    with pytest.raises(AgentError, match="has no method NoSuchThing"):
        agent.call("NoSuchThing", {}, "test")
    assert agent.list_processes("c1") == [1, 7]  # the stream still serves after failures
    assert stack.containers.started == ["c1"]
    assert len(stack.server.streams) == 1, "every call went over the one stream"
    agent.close()


def test_a_check_sent_before_the_agent_serves_is_answered_as_soon_as_it_does(stack: Stack) -> None:
    agent = StreamAgentClient(stack.sock_path, "c1")
    with pytest.raises(AgentError, match="did not answer within"):
        agent.check(0.3)  # the agent does not read its channel yet
    stack.serve()
    t0 = time.monotonic()
    agent.check(10)
    assert time.monotonic() - t0 < 2
    assert stack.calls.count("Check") == 1, "the first Check waited in the channel; none was sent again"
    agent.close()


def test_grpc_server_starts_on_the_first_grpc_connection(stack: Stack) -> None:
    stack.serve()
    assert stack.server.grpc_state == ""
    StreamAgentClient(stack.sock_path, "c1").check(10)
    assert stack.server.grpc_state == "", "the stream transport needs no gRPC server"
    agent = GrpcAgentClient(stack.sock_path, "c1", request_timeout=30)
    try:
        agent.check(60)
        assert stack.server.grpc_state == "ready"
        assert agent.list_processes("c1") == [1, 7]
        assert agent.process_table("c1", ["x"]).endswith(b"\nx")
        with pytest.raises(AgentError, match="container c2 does not exist"):
            agent.start_container("c2")
        assert agent.version()["grpc"]
    finally:
        agent.close()


class FakeAgent:
    """A malicious or broken agent behind a proxy socket: answers every CALL with ``reply``."""

    def __init__(self, tmp: Path, reply: Callable[[socket.socket], None]) -> None:
        self.path = str(tmp / "evil.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            conn.recv(65536)
            self.reply(conn)


def _result(payload: dict[str, Any]) -> Callable[[socket.socket], None]:
    return lambda c: c.sendall(shimproto.encode(shimproto.RESULT, json.dumps(payload).encode()))


@pytest.mark.parametrize("reply,call,words", [
    (lambda c: c.sendall(struct.pack("!BI", shimproto.RESULT, 0xFFFFFFFF)), "list", "unreachable"),
    (lambda c: c.sendall(shimproto.encode(shimproto.RESULT, b"\xff not json")), "list", "malformed"),
    (_result({"process_list": "bm90IGpzb24="}), "list", "malformed"),
    (_result({"process_list": 42}), "list", "malformed"),
    (_result({"process_list": "WzEsIC0zXQ=="}), "list", "malformed process list"),  # [1, -3]
    (_result({"status": 1000}), "wait", "exit status 1000"),
    (_result({"status": "x"}), "wait", "malformed"),
    (_result({"stats_json": "[]"}), "stats", "malformed"),
    (lambda c: c.close(), "list", "unreachable"),
    (lambda c: c.sendall(shimproto.encode(99, b"?")), "list", "message type 99"),
    (lambda c: None, "list", "did not answer ListProcesses within 0.5s"),
])
def test_answers_of_the_agent_are_not_trusted(tmp_path: Path, reply: Callable[[socket.socket], None], call: str,
                                              words: str) -> None:
    evil = FakeAgent(tmp_path, reply)
    agent = StreamAgentClient(evil.path, "c1", request_timeout=0.5)
    calls: dict[str, Callable[[], Any]] = {"list": lambda: agent.list_processes("c1"),
                                           "wait": lambda: agent.wait_process("c1", "c1"),
                                           "stats": lambda: agent.stats_container("c1")}
    t0 = time.monotonic()
    with pytest.raises(AgentError, match=words):
        calls[call]()
    assert time.monotonic() - t0 < 5
    agent.close()
