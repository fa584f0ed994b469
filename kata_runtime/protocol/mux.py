"""Stream multiplexing over the VM's single agent channel (virtio-serial or vsock).

kata-proxy (host) and the guest agent exchange frames::

    magic "KM" (2) | type (1) | reserved (1) | stream id (4, big endian) | length (4) | payload

- ``OPEN``  host → guest: a client connected to the proxy; ``stream`` is new (never reused in a session).
- ``DATA``  either way: payload bytes of the stream.
- ``CLOSE`` either way: the sender's side of the stream is gone; the receiver drops it.
- ``RESET`` host → guest: a new proxy owns the channel; the guest drops every stream. Its payload
  lists the proxy's features: ``FEATURE_WINDOW`` means it sends WINDOW frames.
- ``WINDOW`` either way: the sender delivered that many (u32) more bytes of the stream (to the
  proxy's client, or to the guest process / gRPC server); each side keeps at most ``WINDOW_SIZE``
  unacknowledged bytes in flight per stream. The guest answers the proxy's RESET with a RESET of
  its own listing its features, so either side only waits for WINDOWs from a peer that sends them.

A virtio-serial port has no connection boundaries, so a frame may start in the middle of garbage
left by a proxy that died: the decoder resynchronises on the magic. What a stream carries is up to
its first bytes: an HTTP/2 preface (gRPC) or ``shimproto.HELLO_MAGIC`` (a kata-shim).

Both sides read the channel eagerly, and data is flow controlled per stream in both directions: an
engine that does not read a container's output slows that container down instead of filling the
proxy's memory, and a process that does not read its stdin stops its kata-shim from reading more,
instead of filling the guest's memory.
"""

from __future__ import annotations

import struct

MAGIC = b"KM"
HEADER = struct.Struct("!2sBxII")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 20  # a larger length is corruption, not data

OPEN = 1
DATA = 2
CLOSE = 3
RESET = 4
WINDOW = 5
_TYPES = (OPEN, DATA, CLOSE, RESET, WINDOW)

FEATURE_WINDOW = b"W"
# 2 MiB: at 512 KiB, a stream waited for acknowledgements (each crosses the guest's Python and
# virtio-serial under TCG): exec stdin 36 -> 58 MB/s, stdout 52 -> 65 MB/s (medians of 4
# interleaved 64 MiB transfers). What a side buffers for a stalled peer stays bounded by it.
WINDOW_SIZE = 2048 * 1024
_U32 = struct.Struct("!I")

# Largest DATA payload a sender puts in one frame: bounds the latency other streams see (and the
# number of frames the guest's Python parses per MB: each costs it ~0.1 ms under TCG).
CHUNK = 256 * 1024

Frame = tuple[int, int, bytes]


def encode(ftype: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame, header and payload."""
    return HEADER.pack(MAGIC, ftype, stream, len(payload)) + payload


def encode_data(stream: int, data: bytes) -> bytes:
    """DATA frames for ``data``, split into chunks of at most CHUNK bytes."""
    if len(data) <= CHUNK:
        return encode(DATA, stream, data)
    return b"".join(encode(DATA, stream, data[i:i + CHUNK]) for i in range(0, len(data), CHUNK))


def encode_window(stream: int, delivered: int) -> bytes:
    return encode(WINDOW, stream, _U32.pack(delivered))


def parse_window(payload: bytes | memoryview) -> int:
    return int(_U32.unpack_from(payload)[0]) if len(payload) >= 4 else 0


def parse(buf: bytearray, pos: int, end: int, frames: list[tuple[int, int, memoryview]]) -> tuple[int, int]:
    """The complete frames of ``buf[pos:end]``, appended to ``frames`` with their payloads as views
    of ``buf`` (no copy: valid while ``buf`` keeps those bytes); garbage before a valid header is
    skipped. Returns (where the unparsed rest starts, bytes of garbage skipped)."""
    view = memoryview(buf)
    skipped = 0
    unpack = HEADER.unpack_from
    while end - pos >= HEADER_SIZE:
        magic, ftype, stream, length = unpack(buf, pos)
        if magic != MAGIC or ftype not in _TYPES or length > MAX_PAYLOAD:
            nxt = buf.find(MAGIC, pos + 1, end)
            if nxt < 0:
                # keep a trailing "K" that may start the next magic
                keep = 1 if buf[end - 1] == MAGIC[0] else 0
                skipped += end - pos - keep
                pos = end - keep
                break
            skipped += nxt - pos
            pos = nxt
            continue
        stop = pos + HEADER_SIZE + length
        if stop > end:
            break
        frames.append((ftype, stream, view[pos + HEADER_SIZE:stop]))
        pos = stop
    return pos, skipped


class Decoder:
    """Incremental frame decoder that skips garbage up to the next valid header."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped = 0  # bytes of garbage dropped while resynchronising

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes read from the channel; return the complete frames they finish."""
        self._buf += data
        views: list[tuple[int, int, memoryview]] = []
        pos, skipped = parse(self._buf, 0, len(self._buf), views)
        self.skipped += skipped
        frames = [(ftype, stream, bytes(payload)) for ftype, stream, payload in views]
        views.clear()  # the views must be gone before the buffer shrinks
        del self._buf[:pos]
        return frames
