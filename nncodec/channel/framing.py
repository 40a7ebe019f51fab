"""Frames: how a byte stream is cut into LDPC codewords, with a CRC-32 per frame.

One frame fills the k information bits of one codeword. Its floor(k / 8) bytes are::

    offset  size  field
    0       4     frame index, u32 little-endian (0, 1, 2, ...)
    4       4     length of the whole stream in bytes, u32 little-endian
    8       P     payload: stream bytes [index * P, index * P + P), zero-filled after the end
    8 + P   4     CRC-32 (zlib.crc32) of bytes 0 .. 8 + P - 1

with P = floor(k / 8) - 12. When k is not a multiple of 8 (k = 324, 486, 972, 1458) the last
k mod 8 information bits are zeros, known to the receiver. Bits go most significant first.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["FrameLayout", "crc32"]

_HDR = struct.Struct("<II")
HEADER_BYTES = _HDR.size
CRC_BYTES = 4


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


class FrameLayout:
    """Framing for codewords with ``k`` information bits."""

    def __init__(self, k: int):
        self.k = int(k)
        self.frame_bytes = self.k // 8
        self.fill_bits = self.k - 8 * self.frame_bytes
        self.payload_bytes = self.frame_bytes - HEADER_BYTES - CRC_BYTES
        if self.payload_bytes <= 0:
            raise ValueError(f"k = {k} bits is too small for a frame")

    def count(self, length: int) -> int:
        return max(1, -(-int(length) // self.payload_bytes))

    def pack(self, data: bytes) -> np.ndarray:
        """Stream bytes -> information bits (frames x k, uint8)."""
        data = bytes(data)
        if len(data) >= 1 << 32:
            raise ValueError("streams of 4 GiB or more cannot be framed")
        P = self.payload_bytes
        nf = self.count(len(data))
        buf = bytearray(nf * self.frame_bytes)
        for i in range(nf):
            chunk = data[i * P:(i + 1) * P]
            start = i * self.frame_bytes
            body = _HDR.pack(i, len(data)) + chunk + bytes(P - len(chunk))
            buf[start:start + self.frame_bytes - CRC_BYTES] = body
            buf[start + self.frame_bytes - CRC_BYTES:start + self.frame_bytes] = crc32(body).to_bytes(4, "little")
        bits = np.unpackbits(np.frombuffer(bytes(buf), dtype=np.uint8)).reshape(nf, 8 * self.frame_bytes)
        if self.fill_bits:
            bits = np.concatenate([bits, np.zeros((nf, self.fill_bits), dtype=np.uint8)], axis=1)
        return bits

    def unpack(self, bits: np.ndarray) -> list[tuple[bool, int, int, bytes]]:
        """Decoded information bits (frames x k) -> per frame (crc_ok, index, stream length,
        payload bytes). Index and length are only meaningful where crc_ok."""
        b = np.asarray(bits, dtype=np.uint8)[:, : 8 * self.frame_bytes]
        raw = np.packbits(b, axis=1)
        out = []
        for row in raw:
            frame = row.tobytes()
            body, crc = frame[:-CRC_BYTES], int.from_bytes(frame[-CRC_BYTES:], "little")
            idx, total = _HDR.unpack_from(body)
            out.append((crc32(body) == crc, idx, total, body[HEADER_BYTES:]))
        return out
