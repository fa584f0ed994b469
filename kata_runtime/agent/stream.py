"""Agent requests over the stream protocol of kata-shims (``protocol/shimproto.py``): a stream of
their own through kata-proxy, one request, one answer; no gRPC. Used where a whole CLI call is one
request (``start``)."""

from __future__ import annotations

import socket

from kata_runtime.errors import AgentError
from kata_runtime.protocol import shimproto

MAX_ANSWER = 64 << 10  # an error message at most: the agent is not trusted with our memory


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the agent closed the stream")
        buf += chunk
    return buf


def start_container(proxy_socket: str, cid: str, timeout: float) -> None:
    """Start the user process of a created container; AgentError with the guest's words if not."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(proxy_socket)
            sock.sendall(shimproto.start_msg(cid))
            mtype, size = shimproto.HEADER.unpack(_recv_exact(sock, shimproto.HEADER_SIZE))
            if size > MAX_ANSWER:
                raise AgentError(f"the guest agent answered START with {size} bytes", container=cid, step="start")
            payload = _recv_exact(sock, size)
    except TimeoutError:
        raise AgentError(f"the guest agent did not answer StartContainer within {timeout:g}s", container=cid,
                         step="start") from None
    except OSError as e:
        raise AgentError(f"the guest agent is unreachable ({e})", container=cid, step="start") from None
    if mtype == shimproto.READY:
        return
    if mtype == shimproto.ERROR:
        raise AgentError(payload.decode(errors="replace"), container=cid, step="start")
    raise AgentError(f"the guest agent answered START with message type {mtype}", container=cid, step="start")
