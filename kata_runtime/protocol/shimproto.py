"""What a kata-shim and the guest agent say to each other on one mux stream.

The shim opens a stream (by connecting to kata-proxy) and sends ``HELLO_MAGIC`` followed by a
HELLO message naming the process. Then both sides send messages::

    type (1) | length (4, big endian) | payload

shim → agent: HELLO (container id, exec id and "1"/"0" for tty, NUL-separated), STDIN (bytes), STDIN_EOF, SIGNAL (u32),
RESIZE (u16 rows, u16 cols).
agent → shim: READY (empty: attached), STDOUT, STDERR (bytes), EXIT (i32 status: exit code, or
128+N when killed by signal N; sent after stdout and stderr are drained), ERROR (utf-8 text; the
agent closes the stream after it).

Requests (what kata-runtime asks of the agent, without gRPC): a stream that starts with
``HELLO_MAGIC`` and a CALL instead of a HELLO carries calls of ``AgentService``
(protocol/proto/agent.proto), one at a time: CALL's payload is JSON ``{"method": NAME, "request":
MESSAGE}``, the message in protobuf's JSON mapping with the .proto's field names; the agent answers
RESULT (the response message, the same way) or FAILED (utf-8 text: why, for the user) and waits for
the next CALL. The stream stays open between calls.

Kept free of grpc and asyncio: this is resident in every kata-shim.
"""

from __future__ import annotations

import struct

HELLO_MAGIC = b"KSHM"
HEADER = struct.Struct("!BI")
HEADER_SIZE = HEADER.size

HELLO = 1
STDIN = 2
STDIN_EOF = 3
SIGNAL = 4
RESIZE = 5
CALL = 7
READY = 10
STDOUT = 11
STDERR = 12
EXIT = 13
ERROR = 14
RESULT = 15
FAILED = 16

Message = tuple[int, bytes]


def encode(mtype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(mtype, len(payload)) + payload


def hello(container: str, exec_id: str, tty: bool = False) -> bytes:
    """The first bytes a shim sends on its stream."""
    body = b"\0".join((container.encode(), exec_id.encode(), b"1" if tty else b"0"))
    return HELLO_MAGIC + encode(HELLO, body)


def parse_hello(payload: bytes) -> tuple[str, str, bool]:
    """(container id, exec id, tty) from a HELLO payload; ValueError when malformed."""
    container, exec_id, tty = payload.split(b"\0")
    return container.decode(), exec_id.decode(), tty == b"1"



def signal_msg(signo: int) -> bytes:
    return encode(SIGNAL, struct.pack("!I", signo))


def resize_msg(rows: int, cols: int) -> bytes:
    return encode(RESIZE, struct.pack("!HH", rows, cols))


def exit_msg(status: int) -> bytes:
    return encode(EXIT, struct.pack("!i", status))


def _four(payload: bytes) -> bytes:
    """The 4 bytes of a SIGNAL, RESIZE or EXIT payload; ValueError when it is shorter."""
    if len(payload) < 4:
        raise ValueError(f"a payload of {len(payload)} bytes where 4 are due")
    return payload[:4]


def parse_u32(payload: bytes) -> int:
    return int(struct.unpack("!I", _four(payload))[0])


def parse_i32(payload: bytes) -> int:
    return int(struct.unpack("!i", _four(payload))[0])


def parse_resize(payload: bytes) -> tuple[int, int]:
    rows, cols = struct.unpack("!HH", _four(payload))
    return int(rows), int(cols)


class Decoder:
    """Incremental message decoder. ``limit``: the longest payload the peer may send (0: any); a
    longer length is refused (ValueError) before its bytes are held, so that a peer that is not
    trusted cannot make us buffer without bound."""

    def __init__(self, limit: int = 0) -> None:
        self._buf = bytearray()
        self.limit = limit

    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            mtype, length = HEADER.unpack_from(buf, pos)
            if self.limit and length > self.limit:
                raise ValueError(f"a message of {length} bytes (type {mtype})")
            end = pos + HEADER_SIZE + length
            if end > len(buf):
                break
            out.append((mtype, bytes(buf[pos + HEADER_SIZE:end])))
            pos = end
        del buf[:pos]
        return out
