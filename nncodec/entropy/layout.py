"""The ``cabac-layout`` backend (container backend id 3): levels coded as a
Dense, CSR or WS (weight-sharing) matrix, each array with the CABAC coder.

The levels of a tensor are seen as a matrix of ``rows`` x ``row_length``
(for a weight of shape (out, ...), out rows). Payload, version 1::

    u8       version = 1
    u8       layout: 0 dense, 1 CSR, 2 WS
    uvarint  rows (0 when there are no levels)
    streams, each a uvarint byte length followed by a cabac payload:
      dense: the levels                                      (rows*cols; row context = cols)
      CSR:   non-zeros per row                               (rows)
             column gaps: first column of a row, then (column - previous column - 1)   (nnz)
             the non-zero levels, row by row, columns ascending                        (nnz)
      WS:    (before the streams) u8 level coding: 0 steps, 1 plain levels
             groups per row                                  (rows)
             group levels, strictly decreasing within a row: coding 0, a row's first
               level, then previous - level - 1 (used when all fit in int32);
               coding 1, the levels themselves               (groups)
             group lengths minus 1                           (groups)
             column gaps within each group, as for CSR       (nnz)

The backends named ``cabac-csr``, ``cabac-ws`` and ``cabac-dense`` write that
layout; ``cabac-auto`` codes all three and keeps the smallest. They share one
decoder. ``read_layout`` rebuilds the layout object itself, without a dense
detour, for code that computes straight from CSR or WS.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError, LimitError, TruncatedError
from ..varint import decode_uvarint, encode_uvarint
from . import cabac

VERSION = 1
LAYOUTS = ("dense", "csr", "ws")


def _gaps(rows_of: np.ndarray, cols: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Column gaps: cols[i] where a run starts, else cols[i] - cols[i-1] - 1."""
    gaps = cols.astype(np.int64).copy()
    if cols.size:
        gaps[1:] -= cols[:-1].astype(np.int64) + 1
        gaps[starts] = cols[starts]
    return gaps


def _run_starts(lengths: np.ndarray, total: int) -> np.ndarray:
    """Indices where each non-empty run of the given lengths starts."""
    ptr = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    return ptr[lengths > 0].astype(np.int64) if total else np.zeros(0, np.int64)


def _stream(values) -> bytes:
    data = cabac.encode(np.asarray(values, dtype=np.int64).astype(np.int32))
    return encode_uvarint(len(data)) + data


def _matrix(levels, row_length) -> np.ndarray:
    lv = np.ascontiguousarray(levels, dtype=np.int32).reshape(-1)
    cols = int(row_length or 0)
    if lv.size == 0:
        return lv.reshape(0, max(cols, 1))
    if cols <= 0 or lv.size % cols:
        cols = lv.size  # no usable row structure: one row
    return lv.reshape(-1, cols)


def _encode_as(m: np.ndarray, layout: str) -> bytes:
    rows, cols = m.shape
    head = bytes((VERSION, LAYOUTS.index(layout))) + encode_uvarint(rows if m.size else 0)
    if m.size == 0:
        return head
    if layout == "dense":
        data = cabac.encode(m.reshape(-1), row_length=cols)
        return head + encode_uvarint(len(data)) + data
    r, c = np.nonzero(m)
    if layout == "csr":
        counts = np.bincount(r, minlength=rows)
        gaps = _gaps(r, c, _run_starts(counts, c.size))
        return head + _stream(counts) + _stream(gaps) + _stream(m[r, c])
    # WS: rows ascending, levels descending, columns ascending
    v = m[r, c].astype(np.int64)
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    new = np.ones(v.size, dtype=bool)
    new[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
    starts = np.flatnonzero(new)
    g_level, g_row = v[starts], r[starts]
    g_len = np.diff(np.append(starts, v.size))
    groups_per_row = np.bincount(g_row, minlength=rows)
    # group levels: within a row, the first as it is and then the (non-negative) steps
    # down, previous - level - 1; if a step does not fit in int32, all levels as they are
    first = _run_starts(groups_per_row, g_level.size)
    codes = g_level.copy()
    if g_level.size:
        codes[1:] = g_level[:-1] - g_level[1:] - 1
        codes[first] = g_level[first]
    deltas = bool(codes.size == 0 or codes.max() <= 2**31 - 1)
    gaps = _gaps(None, c, starts)
    return (head + bytes((0 if deltas else 1,)) + _stream(groups_per_row)
            + _stream(codes if deltas else g_level) + _stream(g_len - 1) + _stream(gaps))


def encode(levels, *, row_length: int | None = 0, layout: str = "auto") -> bytes:
    """Code ``levels`` (read as rows of ``row_length``) in ``layout``, or in the
    smallest of the three with ``layout="auto"``."""
    m = _matrix(levels, row_length)
    if layout == "auto":
        return min((_encode_as(m, k) for k in LAYOUTS), key=len)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} or auto")
    return _encode_as(m, layout)


class _Streams:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def take(self, count: int, limit: int) -> np.ndarray:
        if count > limit:
            raise LimitError("a layout stream declares more entries than the tensor holds")
        length, self.pos = decode_uvarint(self.data, self.pos)
        if self.pos + length > len(self.data):
            raise TruncatedError("layout payload ends inside a stream")
        out = cabac.decode(self.data[self.pos:self.pos + length], count)
        self.pos += length
        return out.astype(np.int64)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise FormatError("bytes left over after the last layout stream")


def _parse(data, count: int):
    data = bytes(data)
    if len(data) < 2:
        raise TruncatedError("layout payload shorter than its header")
    if data[0] != VERSION:
        raise FormatError(f"unknown layout payload version {data[0]}")
    if data[1] >= len(LAYOUTS):
        raise FormatError(f"unknown layout code {data[1]}")
    rows, pos = decode_uvarint(data, 2)
    if count == 0:
        if rows != 0 or pos != len(data):
            raise FormatError("layout payload of an empty tensor holds data")
        return LAYOUTS[data[1]], 0, 0, None
    if rows == 0 or rows > count or count % rows:
        raise FormatError(f"{rows} rows do not divide {count} elements")
    return LAYOUTS[data[1]], rows, count // rows, _Streams(data, pos)


def _check_cols(cols_abs: np.ndarray, ncols: int) -> None:
    if cols_abs.size and (cols_abs.min() < 0 or cols_abs.max() >= ncols):
        raise FormatError("column index outside the matrix")


def _csr_arrays(s: _Streams, rows: int, cols: int):
    counts = s.take(rows, rows)
    if counts.size and (counts.min() < 0 or counts.max() > cols):
        raise FormatError("a row holds more non-zeros than columns")
    nnz = int(counts.sum())
    gaps = s.take(nnz, rows * cols)
    values = s.take(nnz, rows * cols)
    s.done()
    if gaps.size and gaps.min() < 0:
        raise FormatError("negative column gap")
    starts = _run_starts(counts, nnz)
    col = _cols_from_gaps(gaps, starts)
    _check_cols(col, cols)
    if np.any(values == 0):
        raise FormatError("CSR value 0 stored")
    row_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return values, col, row_ptr


def _segmented_cumsum(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running sums of ``x`` that restart at each index in ``starts`` (starts[0] == 0)."""
    if x.size == 0:
        return x
    total = np.cumsum(x)
    seg = np.cumsum(np.isin(np.arange(x.size), starts)) - 1
    before = total[starts] - x[starts]
    return total - before[seg]


def _cols_from_gaps(gaps: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Inverse of _gaps: a run's first column, then previous + gap + 1."""
    steps = gaps + 1
    steps[starts] = gaps[starts]
    return _segmented_cumsum(steps, starts)


def _ws_arrays(s: _Streams, rows: int, cols: int):
    if s.pos >= len(s.data):
        raise TruncatedError("layout payload ends before the WS level-coding byte")
    level_coding = s.data[s.pos]
    s.pos += 1
    if level_coding > 1:
        raise FormatError(f"unknown WS level coding {level_coding}")
    per_row = s.take(rows, rows)
    if per_row.size and (per_row.min() < 0 or per_row.max() > cols):
        raise FormatError("a row holds more groups than columns")
    groups = int(per_row.sum())
    levels = s.take(groups, rows * cols)
    lengths = s.take(groups, rows * cols) + 1
    if lengths.size and lengths.min() < 1:
        raise FormatError("negative group length")
    nnz = int(lengths.sum())
    if nnz > rows * cols:
        raise LimitError("groups hold more members than the matrix has entries")
    gaps = s.take(nnz, rows * cols)
    s.done()
    first = _run_starts(per_row, groups)
    later = np.ones(groups, dtype=bool)
    later[first] = False
    if level_coding == 0:  # steps down from the row's first level
        if np.any(levels[later] < 0):
            raise FormatError("negative WS level step")
        dec = -(levels + 1)
        dec[first] = levels[first]
        levels = _segmented_cumsum(dec, first)
        if levels.size and (levels.min() < -(2**31) or levels.max() > 2**31 - 1):
            raise FormatError("WS group level outside int32")
    elif groups and np.any((np.diff(levels, prepend=0) >= 0) & later):
        raise FormatError("group levels do not decrease within a row")
    if np.any(levels == 0):
        raise FormatError("group level 0 stored")
    group_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if gaps.size and gaps.min() < 0:
        raise FormatError("negative column gap")
    col = _cols_from_gaps(gaps, group_ptr[:-1])
    _check_cols(col, cols)
    row_ptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
    return levels, group_ptr, col, row_ptr


def decode(data, count: int) -> np.ndarray:
    """Decode ``count`` levels (1-D int32), whatever layout the payload holds."""
    kind, rows, cols, s = _parse(data, int(count))
    if s is None:
        return np.zeros(0, np.int32)
    if kind == "dense":
        length, s.pos = decode_uvarint(s.data, s.pos)
        if s.pos + length != len(s.data):
            raise FormatError("dense layout stream length does not match the payload")
        return cabac.decode(s.data[s.pos:], count)
    m = np.zeros((rows, cols), dtype=np.int32)
    if kind == "csr":
        values, col, row_ptr = _csr_arrays(s, rows, cols)
        r = np.repeat(np.arange(rows), np.diff(row_ptr))
        _place(m, r, col, values)
    else:
        levels, group_ptr, col, row_ptr = _ws_arrays(s, rows, cols)
        g_row = np.repeat(np.arange(rows), np.diff(row_ptr))
        gid = np.repeat(np.arange(levels.size), np.diff(group_ptr))
        _place(m, g_row[gid], col, levels[gid])
    return m.reshape(-1)


def _place(m: np.ndarray, r: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
    if r.size:
        key = r.astype(np.int64) * m.shape[1] + c
        if np.unique(key).size != key.size:
            raise FormatError("a matrix entry is stored twice")
        m[r, c] = v.astype(np.int32)


def read_layout(data, count: int, dequant):
    """The stored layout as a ``nncodec.sparse`` object (Dense, CSR or WS)."""
    from ..sparse.layouts import CSR, WS, Dense

    kind, rows, cols, s = _parse(data, int(count))
    try:
        if s is None or kind == "dense":
            return Dense(decode(data, count).reshape(rows, cols) if rows else
                         np.zeros((0, 0), np.int32), dequant)
        if kind == "csr":
            values, col, row_ptr = _csr_arrays(s, rows, cols)
            return CSR((rows, cols), values, col, row_ptr, dequant)
        levels, group_ptr, col, row_ptr = _ws_arrays(s, rows, cols)
        return WS((rows, cols), levels, group_ptr, col, row_ptr, dequant)
    except ValueError as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"stored {kind} layout is inconsistent: {exc}") from None
