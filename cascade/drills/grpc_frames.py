"""What the fault proxy does to gRPC (HTTP/2) answers: follow the frames, break or garble one.

``_GrpcCorrupter`` follows the server -> client HTTP/2 frames of one connection and, for the
first gRPC message of a stream, either sets its "compressed" flag (``Errors(action="grpc")``:
the client fails that one call, status INTERNAL) or rewrites a Triton ``ModelInferResponse``'s
raw output bytes in place (``Garbage()``, see ``_garble``). HPACK state is untouched (only DATA
frames), and lengths are kept, so the connection lives on. Counters go to :class:`ProxyStats`.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

_FRAME_HEADER = 9
_DATA, _HEADERS = 0x0, 0x1
_END_STREAM, _PADDED = 0x1, 0x8


@dataclass
class ProxyStats:
    """Counters since the proxy started."""

    connections: int = 0
    open_connections: int = 0
    client_chunks: int = 0  # client -> upstream reads: about one per request on a quiet link
    h2_streams: int = 0  # gRPC responses seen (Errors(action="grpc") only follows frames then)
    injected_errors: int = 0
    garbled: int = 0  # responses rewritten by Garbage()
    upstream_failures: int = 0  # upstream refused / unreachable at connect


class _GrpcCorrupter:
    """Follows server -> client HTTP/2 frames; breaks the first message of some streams."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.started: set[int] = set()

    def feed(
        self,
        data: bytes,
        *,
        rate: float,
        rng: random.Random,
        stats: ProxyStats,
        garbage: bool = False,
    ) -> bytes:
        """Complete frames ready to forward (possibly altered); keeps a partial frame buffered."""
        self.buffer += data
        out = bytearray()
        while len(self.buffer) >= _FRAME_HEADER:
            length = int.from_bytes(self.buffer[0:3], "big")
            if len(self.buffer) < _FRAME_HEADER + length:
                break
            frame = bytearray(self.buffer[: _FRAME_HEADER + length])
            del self.buffer[: _FRAME_HEADER + length]
            ftype, flags = frame[3], frame[4]
            stream = struct.unpack(">I", frame[5:9])[0] & 0x7FFFFFFF
            if ftype == _DATA and stream and stream not in self.started:
                offset = _FRAME_HEADER + (1 if flags & _PADDED else 0)
                pad = frame[_FRAME_HEADER] if flags & _PADDED else 0
                if length - (offset - _FRAME_HEADER) - pad > 0:  # first byte of the message
                    self.started.add(stream)
                    stats.h2_streams += 1
                    if rng.random() < rate:
                        frame[offset] |= 0x01  # "compressed", but no encoding was negotiated
                        stats.injected_errors += 1
                    elif garbage and _garble(frame, offset, _FRAME_HEADER + length - pad):
                        stats.garbled += 1
            if flags & _END_STREAM and ftype in (_DATA, _HEADERS):
                self.started.discard(stream)
            out += frame
        return bytes(out)


_RAW_OUTPUT_CONTENTS = 6  # ModelInferResponse.raw_output_contents (repeated bytes)


def _varint(buf: bytearray, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _garble(frame: bytearray, start: int, end: int) -> bool:
    """Rewrite the raw outputs of the gRPC message at ``frame[start:end]`` in place (see the
    module docstring); False when the message does not fit in this frame or is not parseable."""
    if end - start < 5 or frame[start] & 0x01:
        return False
    length = int.from_bytes(frame[start + 1 : start + 5], "big")
    pos, stop = start + 5, start + 5 + length
    if stop > end:
        return False  # split over frames: left alone (Triton's answers for k <= 100 fit in one)
    raw_seen = 0
    try:
        while pos < stop:
            tag, pos = _varint(frame, pos)
            kind = tag & 0x7
            if kind == 0:
                _, pos = _varint(frame, pos)
            elif kind == 1:
                pos += 8
            elif kind == 5:
                pos += 4
            elif kind == 2:
                size, pos = _varint(frame, pos)
                if tag >> 3 == _RAW_OUTPUT_CONTENTS:
                    if raw_seen == 0 and size >= 8:  # item_ids (INT64): the first id repeated
                        frame[pos + 8 : pos + size] = frame[pos : pos + 8] * (size // 8 - 1)
                    else:  # scores (FP32): quiet NaN
                        frame[pos : pos + size] = b"\x00\x00\xc0\x7f" * (size // 4)
                    raw_seen += 1
                pos += size
            else:
                return False
    except IndexError:
        return False
    return raw_seen > 0
