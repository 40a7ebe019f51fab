"""Second entropy backend: constriction's range coder with a per-tensor
categorical model (order-0 histogram) carried in the payload.

Payload (version 1)::

    u8       version = 1
    uvarint  n        number of distinct levels (0 only for an empty tensor)
    n x      zigzag uvarint   first distinct level, then gaps to the next (sorted ascending)
    n x      uvarint          count of each distinct level (sum = element count)
    ...      range-coder words, uint32 little-endian (absent when n <= 1)
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, LimitError, TruncatedError
from ..varint import decode_uvarint, encode_uvarint

VERSION = 1


def _zigzag(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def _unzigzag(z: int) -> int:
    return (z >> 1) if not z & 1 else -((z + 1) >> 1)


def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode(levels, *, row_length: int | None = 0) -> bytes:
    import constriction

    lv = np.ascontiguousarray(levels, dtype=np.int32).reshape(-1)
    values, inverse, counts = np.unique(lv, return_inverse=True, return_counts=True)
    out = bytearray((VERSION,))
    out += encode_uvarint(len(values))
    prev = None
    for v in values.tolist():
        out += encode_uvarint(_zigzag(v) if prev is None else v - prev)
        prev = v
    for c in counts.tolist():
        out += encode_uvarint(c)
    if len(values) > 1:
        enc = constriction.stream.queue.RangeEncoder()
        enc.encode(inverse.astype(np.int32).reshape(-1), _model(counts))
        out += enc.get_compressed().astype("<u4").tobytes()
    return bytes(out)


def decode(data, count: int) -> np.ndarray:
    import constriction

    count = int(count)
    buf = bytes(data)
    if not buf:
        raise TruncatedError("empty constriction payload")
    if buf[0] != VERSION:
        raise FormatError(f"unknown constriction payload version {buf[0]}")
    n, pos = decode_uvarint(buf, 1)
    if n > count or (n == 0) != (count == 0):
        raise FormatError(f"payload lists {n} distinct levels for {count} elements")
    if n > len(buf):
        raise TruncatedError("payload shorter than its distinct-level table")
    values = np.empty(n, dtype=np.int64)
    prev = None
    for i in range(n):
        z, pos = decode_uvarint(buf, pos)
        if prev is None:
            v = _unzigzag(z)
        else:
            if z == 0:
                raise FormatError("distinct levels are not strictly increasing")
            v = prev + z
        if not -(2**31) <= v <= 2**31 - 1:
            raise FormatError("distinct level outside int32")
        values[i] = v
        prev = v
    counts = np.empty(n, dtype=np.int64)
    total = 0
    for i in range(n):
        c, pos = decode_uvarint(buf, pos)
        if c == 0:
            raise FormatError("zero count in the level table")
        counts[i] = c
        total += c
        if total > count:
            raise LimitError("level counts add up to more than the declared element count")
    if total != count:
        raise FormatError(f"level counts add up to {total}, expected {count}")
    if n <= 1:
        if pos != len(buf):
            raise FormatError("bytes left over after a single-level payload")
        return np.full(count, values[0] if n else 0, dtype=np.int32)
    words = buf[pos:]
    if len(words) % 4 or not words:
        raise TruncatedError("range-coder data is not a whole number of 32-bit words")
    compressed = np.frombuffer(words, dtype="<u4").astype(np.uint32)
    try:
        dec = constriction.stream.queue.RangeDecoder(compressed)
        idx = dec.decode(_model(counts), count)
        exhausted = dec.maybe_exhausted()
    except Exception as exc:  # constriction reports bad data with its own types
        raise FormatError(f"range decoder rejected the data: {exc}") from None
    if not exhausted:
        raise FormatError("range-coder words left over after the last level")
    idx = np.asarray(idx, dtype=np.int64)
    out = values[idx].astype(np.int32)
    if not np.array_equal(np.bincount(idx, minlength=n), counts):
        raise FormatError("decoded levels do not match the stored histogram")
    return out
