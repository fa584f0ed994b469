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
    trusted cannot make us buffer without bound. Messages of the types in ``split`` (stdio bytes)
    are not held until complete: each piece is returned as it arrives, as a view of the fed
    buffer (no copy: use it before the buffer is reused), so that their payload is never copied."""

    def __init__(self, limit: int = 0, split: tuple[int, ...] = ()) -> None:
        self._buf = bytearray()
        self.limit = limit
        self._split = split
        self._split_type = 0
        self._split_left = 0  # bytes of a split message's payload still to come

    def pending(self) -> int:
        """Bytes of an incomplete message held back."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        out: list[Message] = []
        view = memoryview(data)
        pos, end = 0, len(view)
        buf = self._buf
        while pos < end:
            if self._split_left:
                take = min(self._split_left, end - pos)
                out.append((self._split_type, view[pos:pos + take]))  # type: ignore[arg-type]
                self._split_left -= take
                pos += take
                continue
            if buf:  # complete what was held back: its header first, then (unsplit) its payload
                if len(buf) < HEADER_SIZE:
                    take = min(HEADER_SIZE - len(buf), end - pos)
                    buf += view[pos:pos + take]
                    pos += take
                    if len(buf) < HEADER_SIZE:
                        break
                mtype, length = self._header(buf, 0)
                if mtype in self._split:
                    buf.clear()
                    self._start_split(mtype, length, out)
                    continue
                take = min(HEADER_SIZE + length - len(buf), end - pos)
                buf += view[pos:pos + take]
                pos += take
                if len(buf) == HEADER_SIZE + length:
                    out.append((mtype, bytes(buf[HEADER_SIZE:])))
                    buf.clear()
                continue
            if end - pos < HEADER_SIZE:
                buf += view[pos:end]
                break
            mtype, length = self._header(view, pos)
            pos += HEADER_SIZE
            if mtype in self._split:
                self._start_split(mtype, length, out)
            elif end - pos >= length:
                out.append((mtype, bytes(view[pos:pos + length])))
                pos += length
            else:
                buf += view[pos - HEADER_SIZE:end]
                break
        return out

    def _header(self, buf: bytearray | memoryview, pos: int) -> tuple[int, int]:
        mtype, length = HEADER.unpack_from(buf, pos)
        if self.limit and length > self.limit:
            raise ValueError(f"a message of {length} bytes (type {mtype})")
        return int(mtype), int(length)

    def _start_split(self, mtype: int, length: int, out: list[Message]) -> None:
        self._split_type, self._split_left = mtype, length
        if not length:
            out.append((mtype, b""))
