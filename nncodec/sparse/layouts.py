"""Layouts of a quantized 2-D weight matrix: ``Dense``, ``CSR`` and ``WS`` (weight sharing).

A quantized matrix is a 2-D array of int32 *levels* plus a dequantization
(:class:`Dequant`): either a uniform ``step`` (value = level * step) or a
``codebook`` (value = codebook[level], levels are indices, ``codebook[0]`` is
0.0). Level 0 is a zero weight (pruned or rounded to zero) and is never stored
by the sparse layouts. Conv kernels are reshaped to ``(out, in * kh * kw)``.

``CSR`` (compressed sparse row), in the seed's terms::

    W    = [levels of the non-zeros, row by row, columns ascending]   (nnz)
    colI = [their column indices]                                    (nnz)
    row_ptr[i] .. row_ptr[i+1] = the non-zeros of row i              (rows + 1)

``WS`` (weight sharing): within a row, the non-zeros that share a level form a
*group*; each group stores its level once and the column indices of its
members. This is what the rewriting trick needs,
``z_i = sum_k w_k * sum_{j in J_ik} a_j``: one multiplication per group
instead of one per non-zero. In memory (the arrays the kernels run on)::

    group_level[g]                       level of group g                      (groups)
    group_ptr[g] .. group_ptr[g+1]       its members in col_idx                 (groups + 1)
    col_idx                              column indices, grouped               (nnz)
    row_ptr[i] .. row_ptr[i+1]           the groups of row i                   (rows + 1)

Groups are ordered by decreasing level within a row and columns ascend within
a group; with this order the seed's 5 x 10 example gives exactly its
``colI = [1,5,7,2,5,1,6,8,0,1,7,2,3,7,9,0,7,4,8,9]``.

All conversions (``Dense <-> CSR <-> WS``) are exact: they move integers.

Storage accounting (``.storage()``), in bits, with real bit widths. Notation:
R rows, C columns, nnz non-zeros, G groups (WS), ``bits(n) = ceil(log2(n))``
for n >= 2 and 1 below (a field always has at least one bit), ``T`` the bits
of one table entry (``table_bits``, default 32: a float32).

- value alphabet: the distinct levels that the layout stores: Dense, all
  levels of the matrix (0 included when present); CSR and WS, the distinct
  non-zero levels. With A entries, a value is stored as an index into a table
  of the A dequantized values: ``b_v = bits(A)`` bits per value, plus the
  table, ``A * T`` bits.
- ``b_c = bits(C)`` bits per column index.
- ``b_p = bits(nnz + 1)`` bits per row pointer (pointers run 0..nnz).
- ``b_n = bits(L + 1)`` bits per group length, L the longest group.

Totals::

    Dense = R*C*b_v + A*T
    CSR   = nnz*(b_v + b_c) + (R + 1)*b_p + A*T
    WS    = nnz*b_c + (R + 1)*b_p + G*(b_v + b_n) + A*T

WS stores the row pointers into ``col_idx`` (as CSR does) and, per group, its
level and its length; the group boundaries, and which groups belong to which
row, follow from prefix sums (a row's groups are those whose lengths add up to
its count of non-zeros). So WS is smaller than CSR exactly when
``G*(b_v + b_n) < nnz*b_v``, i.e. when groups hold on average more than
``1 + b_n / b_v`` non-zeros. The in-memory arrays above (absolute group
pointers, row pointers into the groups) are an execution form; they are not
what is counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import numpy as np

__all__ = ["Dequant", "Dense", "CSR", "WS", "Storage", "field_bits", "storage_formulas"]


def field_bits(n: int) -> int:
    """Bits of a field that takes ``n`` distinct values: ``ceil(log2(n))``, at least 1."""
    n = int(n)
    if n <= 2:
        return 1
    return int((n - 1).bit_length())  # == ceil(log2(n)) for n >= 2, exact for integers


@dataclass(frozen=True)
class Dequant:
    """How levels become weights: ``level * step`` or ``codebook[level]`` (float32 result)."""

    step: Optional[float] = None
    codebook: Optional[np.ndarray] = None

    def __post_init__(self):
        if (self.step is None) == (self.codebook is None):
            raise ValueError("give exactly one of step and codebook")
        if self.step is not None:
            if not (self.step > 0 and math.isfinite(self.step)):
                raise ValueError(f"step must be a positive finite number, got {self.step!r}")
            object.__setattr__(self, "step", float(self.step))
        else:
            cb = np.asarray(self.codebook, dtype=np.float64).reshape(-1)
            if cb.size == 0 or cb[0] != 0.0:
                raise ValueError("a codebook needs at least one entry and codebook[0] == 0.0 "
                                 "(level 0 is the zero weight)")
            if not np.all(np.isfinite(cb)):
                raise ValueError("codebook entries must be finite")
            cb.setflags(write=False)
            object.__setattr__(self, "codebook", cb)

    def check_levels(self, levels: np.ndarray) -> None:
        if self.codebook is not None and levels.size:
            lo, hi = int(levels.min()), int(levels.max())
            if lo < 0 or hi >= self.codebook.size:
                raise ValueError(f"codebook levels must lie in [0, {self.codebook.size}), "
                                 f"got [{lo}, {hi}]")

    def values(self, levels) -> np.ndarray:
        """The float32 weights of ``levels`` (same shape)."""
        levels = np.asarray(levels)
        if self.step is not None:
            return (levels.astype(np.float64) * self.step).astype(np.float32)
        self.check_levels(levels)
        return self.codebook[levels].astype(np.float32)

    def to_json(self) -> dict:
        if self.step is not None:
            return {"step": self.step}
        return {"codebook": [float(v) for v in self.codebook]}


@dataclass(frozen=True)
class Storage:
    """Bits of one layout, per component; ``total`` and ``bytes`` (bits / 8) summarize."""

    layout: str
    parts: Dict[str, int]
    widths: Dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    @property
    def bytes(self) -> float:
        return self.total / 8.0

    def to_json(self) -> dict:
        return {"layout": self.layout, "bits": self.total, "bytes": self.bytes,
                "parts": dict(self.parts), "widths": dict(self.widths)}


def storage_formulas(rows: int, cols: int, nnz: int, groups: int, max_group: int,
                     distinct_all: int, distinct_nonzero: int,
                     table_bits: int = 32) -> Dict[str, Storage]:
    """The three storage totals from counts alone (see the module doc for the formulas).

    ``distinct_all``: distinct levels of the whole matrix (0 included if present);
    ``distinct_nonzero``: distinct non-zero levels; ``max_group``: longest WS group.
    """
    R, C = int(rows), int(cols)
    b_c = field_bits(C)
    b_p = field_bits(nnz + 1)
    b_vd = field_bits(distinct_all)
    b_v = field_bits(distinct_nonzero)
    b_n = field_bits(max_group + 1)
    dense = Storage("dense", {"values": R * C * b_vd, "table": distinct_all * table_bits},
                    {"value": b_vd, "table": table_bits})
    csr = Storage("csr", {"values": nnz * b_v, "col_idx": nnz * b_c, "row_ptr": (R + 1) * b_p,
                          "table": distinct_nonzero * table_bits},
                  {"value": b_v, "col_idx": b_c, "row_ptr": b_p, "table": table_bits})
    ws = Storage("ws", {"col_idx": nnz * b_c, "row_ptr": (R + 1) * b_p,
                        "group_values": groups * b_v, "group_len": groups * b_n,
                        "table": distinct_nonzero * table_bits},
                 {"value": b_v, "col_idx": b_c, "row_ptr": b_p, "group_len": b_n,
                  "table": table_bits})
    return {"dense": dense, "csr": csr, "ws": ws}


def _as_levels(levels) -> np.ndarray:
    a = np.asarray(levels)
    if a.ndim != 2:
        raise ValueError(f"a layout holds a 2-D matrix; got shape {a.shape} "
                         "(reshape conv kernels to (out, in*kh*kw))")
    if a.dtype.kind not in "iu":
        raise TypeError(f"levels must be integers, got {a.dtype}")
    if a.size and (int(a.min()) < -(2**31) or int(a.max()) > 2**31 - 1):
        raise ValueError("levels must fit in int32")
    return np.ascontiguousarray(a, dtype=np.int32)


class _Layout:
    shape: tuple
    dequant: Dequant

    @property
    def rows(self) -> int:
        return int(self.shape[0])

    @property
    def cols(self) -> int:
        return int(self.shape[1])

    def storage(self, table_bits: int = 32) -> Storage:
        s = self.stats()
        return storage_formulas(table_bits=table_bits, **s)[self.kind]

    def stats(self) -> dict:
        """Counts the storage and operation formulas need."""
        d = self.to_dense().levels
        ws = self if isinstance(self, WS) else WS.from_dense(d, self.dequant)
        nz = d[d != 0]
        lens = np.diff(ws.group_ptr)
        return {"rows": self.rows, "cols": self.cols, "nnz": int(nz.size),
                "groups": int(ws.group_level.size),
                "max_group": int(lens.max()) if lens.size else 0,
                "distinct_all": int(np.unique(d).size),
                "distinct_nonzero": int(np.unique(nz).size)}

    def dense_values(self) -> np.ndarray:
        """The float32 weight matrix."""
        return self.dequant.values(self.to_dense().levels)


class Dense(_Layout):
    """A plain 2-D level matrix."""

    kind = "dense"

    def __init__(self, levels, dequant: Dequant):
        self.levels = _as_levels(levels)
        self.dequant = dequant
        dequant.check_levels(self.levels)
        self.shape = tuple(int(s) for s in self.levels.shape)

    def to_dense(self) -> "Dense":
        return self

    def to_csr(self) -> "CSR":
        return CSR.from_dense(self.levels, self.dequant)

    def to_ws(self) -> "WS":
        return WS.from_dense(self.levels, self.dequant)

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.levels))

    def __eq__(self, other) -> bool:
        return (isinstance(other, Dense) and self.shape == other.shape
                and np.array_equal(self.levels, other.levels))


class CSR(_Layout):
    """Compressed sparse row: ``values`` (levels), ``col_idx``, ``row_ptr``."""

    kind = "csr"

    def __init__(self, shape, values, col_idx, row_ptr, dequant: Dequant, *, check: bool = True):
        self.shape = (int(shape[0]), int(shape[1]))
        self.values = np.ascontiguousarray(values, dtype=np.int32)
        self.col_idx = np.ascontiguousarray(col_idx, dtype=np.int32)
        self.row_ptr = np.ascontiguousarray(row_ptr, dtype=np.int64)
        self.dequant = dequant
        if check:
            self.validate()

    def validate(self) -> None:
        R, C = self.shape
        nnz = self.values.size
        if R < 0 or C < 0:
            raise ValueError(f"bad shape {self.shape}")
        if self.col_idx.shape != (nnz,) or self.values.ndim != 1:
            raise ValueError("values and col_idx must be 1-D of the same length")
        if self.row_ptr.shape != (R + 1,) or self.row_ptr[0] != 0 or self.row_ptr[-1] != nnz:
            raise ValueError("row_ptr must have rows + 1 entries from 0 to nnz")
        if np.any(np.diff(self.row_ptr) < 0):
            raise ValueError("row_ptr must be non-decreasing")
        if nnz:
            if self.col_idx.min() < 0 or self.col_idx.max() >= C:
                raise ValueError("column index out of range")
            if np.any(self.values == 0):
                raise ValueError("CSR stores non-zero levels only")
            rows = np.repeat(np.arange(R), np.diff(self.row_ptr))
            key = rows.astype(np.int64) * C + self.col_idx
            if np.any(np.diff(key) <= 0):
                raise ValueError("columns must ascend within each row (no duplicates)")
        self.dequant.check_levels(self.values)

    @classmethod
    def from_dense(cls, levels, dequant: Dequant) -> "CSR":
        d = _as_levels(levels)
        dequant.check_levels(d)
        r, c = np.nonzero(d)  # row-major order: rows ascending, then columns
        row_ptr = np.zeros(d.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=d.shape[0]), out=row_ptr[1:])
        return cls(d.shape, d[r, c], c, row_ptr, dequant, check=False)

    @property
    def nnz(self) -> int:
        return int(self.values.size)

    def row_of_each(self) -> np.ndarray:
        return np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.row_ptr))

    def to_dense(self) -> Dense:
        d = np.zeros(self.shape, dtype=np.int32)
        d[self.row_of_each(), self.col_idx] = self.values
        return Dense(d, self.dequant)

    def to_csr(self) -> "CSR":
        return self

    def to_ws(self) -> "WS":
        return WS.from_triplets(self.shape, self.row_of_each(), self.col_idx, self.values, self.dequant)

    def float_values(self) -> np.ndarray:
        """The dequantized non-zeros, float32, in ``col_idx`` order (what the kernels use)."""
        return self.dequant.values(self.values)

    def __eq__(self, other) -> bool:
        return (isinstance(other, CSR) and self.shape == other.shape
                and np.array_equal(self.values, other.values)
                and np.array_equal(self.col_idx, other.col_idx)
                and np.array_equal(self.row_ptr, other.row_ptr))


class WS(_Layout):
    """Weight-sharing layout: per row, groups of columns sharing one level."""

    kind = "ws"

    def __init__(self, shape, group_level, group_ptr, col_idx, row_ptr, dequant: Dequant, *,
                 check: bool = True):
        self.shape = (int(shape[0]), int(shape[1]))
        self.group_level = np.ascontiguousarray(group_level, dtype=np.int32)
        self.group_ptr = np.ascontiguousarray(group_ptr, dtype=np.int64)
        self.col_idx = np.ascontiguousarray(col_idx, dtype=np.int32)
        self.row_ptr = np.ascontiguousarray(row_ptr, dtype=np.int64)
        self.dequant = dequant
        if check:
            self.validate()

    def validate(self) -> None:
        R, C = self.shape
        G, nnz = self.group_level.size, self.col_idx.size
        if self.group_level.ndim != 1 or self.col_idx.ndim != 1:
            raise ValueError("group_level and col_idx must be 1-D")
        if self.group_ptr.shape != (G + 1,) or self.group_ptr[0] != 0 or self.group_ptr[-1] != nnz:
            raise ValueError("group_ptr must have groups + 1 entries from 0 to nnz")
        if np.any(np.diff(self.group_ptr) <= 0):
            raise ValueError("every group must hold at least one column")
        if self.row_ptr.shape != (R + 1,) or self.row_ptr[0] != 0 or self.row_ptr[-1] != G:
            raise ValueError("row_ptr must have rows + 1 entries from 0 to groups")
        if np.any(np.diff(self.row_ptr) < 0):
            raise ValueError("row_ptr must be non-decreasing")
        if G:
            if np.any(self.group_level == 0):
                raise ValueError("WS stores non-zero levels only")
            if self.col_idx.min() < 0 or self.col_idx.max() >= C:
                raise ValueError("column index out of range")
            g_row = np.repeat(np.arange(R, dtype=np.int64), np.diff(self.row_ptr))
            # within a row: levels strictly decreasing from group to group
            same_row = g_row[1:] == g_row[:-1]
            if np.any(same_row & (self.group_level[1:].astype(np.int64)
                                  >= self.group_level[:-1].astype(np.int64))):
                raise ValueError("groups must have strictly decreasing levels within a row")
            # within a group: columns strictly ascending
            gid = np.repeat(np.arange(G, dtype=np.int64), np.diff(self.group_ptr))
            key = gid * C + self.col_idx
            if np.any(np.diff(key) <= 0):
                raise ValueError("columns must ascend within each group")
            # a column appears once per row
            rows = g_row[gid]
            rc = np.sort(rows * C + self.col_idx)
            if np.any(np.diff(rc) == 0):
                raise ValueError("a column appears twice in one row")
        self.dequant.check_levels(self.group_level)

    @classmethod
    def from_triplets(cls, shape, rows, cols, levels, dequant: Dequant) -> "WS":
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        lv = np.asarray(levels, dtype=np.int64)
        R = int(shape[0])
        # rows ascending, then levels descending, then columns ascending
        order = np.lexsort((cols, -lv, rows))
        r, c, v = rows[order], cols[order], lv[order]
        n = v.size
        if n:
            new = np.ones(n, dtype=bool)
            new[1:] = (r[1:] != r[:-1]) | (v[1:] != v[:-1])
            starts = np.flatnonzero(new)
        else:
            starts = np.zeros(0, dtype=np.int64)
        group_ptr = np.append(starts, n).astype(np.int64)
        row_ptr = np.zeros(R + 1, dtype=np.int64)
        np.cumsum(np.bincount(r[starts], minlength=R), out=row_ptr[1:])
        return cls(shape, v[starts], group_ptr, c, row_ptr, dequant, check=False)

    @classmethod
    def from_dense(cls, levels, dequant: Dequant) -> "WS":
        d = _as_levels(levels)
        dequant.check_levels(d)
        r, c = np.nonzero(d)
        return cls.from_triplets(d.shape, r, c, d[r, c], dequant)

    @property
    def nnz(self) -> int:
        return int(self.col_idx.size)

    @property
    def groups(self) -> int:
        return int(self.group_level.size)

    def group_lengths(self) -> np.ndarray:
        return np.diff(self.group_ptr)

    def triplets(self):
        g_row = np.repeat(np.arange(self.rows, dtype=np.int64), np.diff(self.row_ptr))
        gid = np.repeat(np.arange(self.groups, dtype=np.int64), self.group_lengths())
        return g_row[gid], self.col_idx.astype(np.int64), self.group_level[gid]

    def to_dense(self) -> Dense:
        r, c, v = self.triplets()
        d = np.zeros(self.shape, dtype=np.int32)
        d[r, c] = v
        return Dense(d, self.dequant)

    def to_csr(self) -> CSR:
        r, c, v = self.triplets()
        order = np.lexsort((c, r))
        row_ptr = np.zeros(self.rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=self.rows), out=row_ptr[1:])
        return CSR(self.shape, v[order], c[order], row_ptr, self.dequant, check=False)

    def to_ws(self) -> "WS":
        return self

    def float_values(self) -> np.ndarray:
        """The dequantized level of each group, float32 (what the kernels use)."""
        return self.dequant.values(self.group_level)

    def __eq__(self, other) -> bool:
        return (isinstance(other, WS) and self.shape == other.shape
                and all(np.array_equal(getattr(self, a), getattr(other, a))
                        for a in ("group_level", "group_ptr", "col_idx", "row_ptr")))


Layout = Union[Dense, CSR, WS]
