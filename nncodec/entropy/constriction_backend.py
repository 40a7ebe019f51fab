"""Second entropy backend: constriction's range coder with a per-tensor
categorical model (order-0 histogram) carried in the payload.

Payload (version 1)::

    u8       version = 1
    uvarint  n        number of distinct levels (0 only for an empty tensor)
    n x      zigzag uvarint   first distinct level, then gaps to the next (sorted ascending)
    n x      uvarint          count of each distinct level (sum = element count)
    ...      range-coder words, uint32 little-endian (absent when n <= 1)

The levels are coded as the indices of their values in the sorted table, all with
the one model. Both directions work on blocks of ``CHUNK`` levels, so that no
temporary holds a whole tensor in a wide type: the extra memory is about the size
of the int32 levels (encode) or of the int32 output (decode), plus a few blocks.
A range coder's stream does not depend on how its symbols are split into calls,
so the bytes are those of coding the tensor in one call.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, LimitError, TruncatedError
from ..varint import decode_uvarint, encode_uvarint

VERSION = 1
CHUNK = 1 << 16  # levels per block handed to the range coder
_DENSE_SPAN = 1 << 16  # level ranges up to this wide are counted with a table, wider ones sorted


def _zigzag(v: int) -> int:
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def _unzigzag(z: int) -> int:
    return (z >> 1) if not z & 1 else -((z + 1) >> 1)


def _model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def _table(lv: np.ndarray):
    """(sorted distinct values, their counts, block -> int32 indices), without whole-tensor
    temporaries wider than the levels themselves."""
    lo, hi = int(lv.min()), int(lv.max())
    span = hi - lo + 1
    if span <= _DENSE_SPAN:
        full = np.zeros(span, np.int64)
        for s in range(0, lv.size, CHUNK):
            full += np.bincount(lv[s:s + CHUNK].astype(np.int64) - lo, minlength=span)
        present = np.flatnonzero(full)
        values = present + lo
        counts = full[present]
        lut = np.full(span, -1, np.int32)
        lut[present] = np.arange(present.size, dtype=np.int32)

        def index(block: np.ndarray) -> np.ndarray:
            return lut[block.astype(np.int64) - lo]
    else:
        values, counts = np.unique(lv, return_counts=True)  # sorts one int32 copy

        def index(block: np.ndarray) -> np.ndarray:
            return np.searchsorted(values, block).astype(np.int32)
    return values, counts, index


def encode(levels, *, row_length: int | None = 0) -> bytes:
    import constriction

    lv = np.ascontiguousarray(levels, dtype=np.int32).reshape(-1)
    out = bytearray((VERSION,))
    if lv.size == 0:
        out += encode_uvarint(0)
        return bytes(out)
    values, counts, index = _table(lv)
    out += encode_uvarint(len(values))
    prev = None
    for v in values.tolist():
        out += encode_uvarint(_zigzag(v) if prev is None else v - prev)
        prev = v
    for c in counts.tolist():
        out += encode_uvarint(c)
    if len(values) <= 1:
        return bytes(out)
    enc = constriction.stream.queue.RangeEncoder()
    model = _model(counts)
    for s in range(0, lv.size, CHUNK):
        enc.encode(index(lv[s:s + CHUNK]), model)
    words = enc.get_compressed().astype("<u4", copy=False)
    return b"".join((out, words.tobytes()))


def decode(data, count: int) -> np.ndarray:
    import constriction

    count = int(count)
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if not len(buf):
        raise TruncatedError("empty constriction payload")
    if buf[0] != VERSION:
        raise FormatError(f"unknown constriction payload version {buf[0]}")
    n, pos = decode_uvarint(buf, 1)
    if n > count or (n == 0) != (count == 0):
        raise FormatError(f"payload lists {n} distinct levels for {count} elements")
    if n > len(buf):
        raise TruncatedError("payload shorter than its distinct-level table")
    values = np.empty(n, dtype=np.int32)
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
    if len(words) % 4 or not len(words):
        raise TruncatedError("range-coder data is not a whole number of 32-bit words")
    compressed = np.frombuffer(words, dtype="<u4").astype(np.uint32)  # an aligned copy
    out = np.empty(count, dtype=np.int32)
    seen = np.zeros(n, dtype=np.int64)
    try:
        dec = constriction.stream.queue.RangeDecoder(compressed)
        model = _model(counts)
        for s in range(0, count, CHUNK):
            m = min(CHUNK, count - s)
            idx = np.asarray(dec.decode(model, m))
            if idx.size != m or (m and (int(idx.min()) < 0 or int(idx.max()) >= n)):
                raise FormatError("range decoder returned symbols outside the level table")
            seen += np.bincount(idx, minlength=n)
            out[s:s + m] = values[idx]
        exhausted = dec.maybe_exhausted()
    except FormatError:
        raise
    except Exception as exc:  # constriction reports bad data with its own types
        raise FormatError(f"range decoder rejected the data: {exc}") from None
    if not exhausted:
        raise FormatError("range-coder words left over after the last level")
    if not np.array_equal(seen, counts):
        raise FormatError("decoded levels do not match the stored histogram")
    return out
