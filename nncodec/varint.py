"""Unsigned LEB128 varints: 7 bits a byte, low group first, high bit = more follows."""
from __future__ import annotations

from .errors import FormatError, TruncatedError

MAX_VARINT_BYTES = 10  # enough for any value below 2**64


def encode_uvarint(value: int) -> bytes:
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data, pos: int = 0) -> tuple[int, int]:
    """Read a varint at ``pos``; returns (value, position after it)."""
    value = 0
    shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise TruncatedError("data ends inside a varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise FormatError("varint is not in its shortest form")
            if value >= 1 << 64:
                raise FormatError("varint exceeds 64 bits")
            return value, pos + i + 1
        shift += 7
    raise FormatError("varint longer than 10 bytes")
