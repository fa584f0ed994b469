"""AgentClient over the stream protocol (``protocol/shimproto.py`` CALL requests): one mux stream
through the sandbox's kata-proxy, kept for every call the command makes; no gRPC, no protobuf.

This is kata-runtime's default transport: it costs the CLI neither grpc's import (about 0.25 s and
18 MB) nor the guest the start of a gRPC server (about 3 s under TCG). The first call may be sent
before the agent runs: the bytes wait in the channel until the agent opens its port, so the answer
to ``Check`` arrives as soon as the agent serves, without polling.
"""

from __future__ import annotations

import json
import socket
import time

from kata_runtime.agent.calls import AgentCalls, Message
from kata_runtime.errors import AgentError, AgentUnresponsive
from kata_runtime.protocol import shimproto

MAX_ANSWER = 64 << 20  # the agent is not trusted with our memory


class StreamAgentClient(AgentCalls):
    def __init__(self, proxy_socket: str, container: str, request_timeout: float = 60.0) -> None:
        self.proxy_socket = proxy_socket
        self.container = container
        self.timeout = request_timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.checking = False  # a Check was sent and is not answered yet

    # -- transport ------------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        if self.sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.proxy_socket)
                sock.sendall(shimproto.HELLO_MAGIC)
            except OSError:
                sock.close()
                raise
            self.sock = sock
            self.buf.clear()
        return self.sock

    def _send(self, name: str, request: Message) -> None:
        payload = json.dumps({"method": name, "request": request}, separators=(",", ":")).encode()
        self._connect().sendall(shimproto.encode(shimproto.CALL, payload))

    def _receive(self, deadline: float) -> tuple[int, bytes]:
        """The next message, before ``deadline``; TimeoutError, ConnectionError."""
        sock = self.sock
        assert sock is not None
        need = shimproto.HEADER_SIZE
        while True:
            if len(self.buf) >= shimproto.HEADER_SIZE:
                mtype, size = shimproto.HEADER.unpack_from(self.buf)
                if size > MAX_ANSWER:
                    raise ConnectionError(f"the guest agent sent a message of {size} bytes")
                need = shimproto.HEADER_SIZE + size
                if len(self.buf) >= need:
                    payload = bytes(self.buf[shimproto.HEADER_SIZE:need])
                    del self.buf[:need]
                    return mtype, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            chunk = sock.recv(max(need - len(self.buf), 64 << 10))
            if not chunk:
                raise ConnectionError("the agent's stream closed (is the VM gone?)")
            self.buf += chunk

    def _answer(self, name: str, mtype: int, payload: bytes, step: str) -> Message:
        if mtype == shimproto.RESULT:
            try:
                answer = json.loads(payload)
            except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
                answer = None
            if isinstance(answer, dict):
                return answer
            raise AgentError(f"the guest agent answered {name} with a malformed message", container=self.container,
                             step=step)
        if mtype == shimproto.FAILED:
            raise AgentError(payload.decode(errors="replace")[:4096], container=self.container, step=step)
        text = payload.decode(errors="replace")[:4096] if mtype == shimproto.ERROR else f"message type {mtype}"
        self.close()
        raise AgentError(f"the guest agent refused {name}: {text}", container=self.container, step=step)

    def call(self, name: str, request: Message, step: str, timeout: float | None = None) -> Message:
        if self.checking:  # a Check that timed out is still on its way: its answer comes first
            self.close()
        limit = timeout or self.timeout
        try:
            self._send(name, request)
            mtype, payload = self._receive(time.monotonic() + limit)
        except TimeoutError:
            self.close()  # the answer may still come: this stream cannot be used any more
            raise AgentUnresponsive(f"the guest agent did not answer {name} within {limit:g}s",
                                    container=self.container, step=step) from None
        except OSError as e:
            self.close()
            raise AgentUnresponsive(f"the guest agent is unreachable ({e})", container=self.container,
                                    step=step) from None
        return self._answer(name, mtype, payload, step)

    def check(self, timeout: float) -> None:
        """Ask once, then keep waiting for that answer across calls: the request waits in the
        channel until the agent opens it, and is answered as soon as it serves."""
        deadline = time.monotonic() + timeout
        try:
            if not self.checking:
                self._send("Check", {})
                self.checking = True
            mtype, payload = self._receive(deadline)
        except TimeoutError:
            raise AgentError(f"guest agent did not answer within {timeout:g}s", container=self.container,
                             step="create") from None
        except OSError as e:  # no proxy yet, or the VM went: the caller decides whether to retry
            self.close()
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
            raise AgentError(f"guest agent check failed: {e}", container=self.container, step="create") from None
        self.checking = False
        answer = self._answer("Check", mtype, payload, "create")
        if answer.get("status") != "SERVING":
            raise AgentError(f"guest agent is not serving ({answer.get('status')!r})", container=self.container,
                             step="create")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()
        self.checking = False

    def __del__(self) -> None:
        self.close()

