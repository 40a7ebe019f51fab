"""Quantizers beyond the uniform one: each turns a float tensor into int32 levels plus
JSON-compatible stage parameters (``encode``) and back (``STAGES[id].decode``).

| id        | parameters                                   | value of a level                     |
| --------- | -------------------------------------------- | ------------------------------------ |
| fixed     | il, fl, rounding, seed                       | level * 2^-fl                        |
| kmeans    | codebook (floats)                            | codebook[level + zero]               |
| pq        | d, codebooks (one flat list per sub-space)   | sub-vector codebooks[j][level]       |
| rq        | d, codebooks (one flat list per stage)       | sum over stages of codebooks[t][lvl] |
| binary    | scale                                        | level * scale, level in {-1, 0, 1}   |
| ternary   | scale, threshold                             | level * scale, level in {-1, 0, 1}   |
| dq        | step                                         | 2k*step or (2k - sign k)*step by state |

(``zero``: the index of the centre of smallest magnitude.) formats/cabac-v1.md,
section 1, is the normative description.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import FormatError
from . import binary, codebook, fixed, rdq
from .kmeans import INITS

METHODS = ("uniform", "fixed", "kmeans", "pq", "rq", "binary", "ternary")
MAX_RQ_STAGES = 16
MAX_SUBVECTOR = 1 << 16


@dataclass(frozen=True)
class Options:
    """Encoder parameters of the non-uniform methods (see ``nncodec.pipeline.Settings``)."""

    bits: Optional[int] = None
    il: Optional[int] = None
    fl: Optional[int] = None
    rounding: str = "nearest"
    seed: int = 0
    k: int = 16
    init: str = "linear"
    iterations: int = 30
    d: int = 4
    stages: int = 2
    ternary_ratio: float = 0.7


def fixed_format(w: np.ndarray, opts: Options) -> tuple[int, int]:
    """(IL, FL) for a tensor: as given, or from ``bits`` with IL just covering max|w|."""
    if opts.il is not None and opts.fl is not None:
        return int(opts.il), int(opts.fl)
    bits = 8 if opts.bits is None else int(opts.bits)
    if opts.il is not None:
        return int(opts.il), bits - int(opts.il)
    if opts.fl is not None:
        return bits - int(opts.fl), int(opts.fl)
    il = fixed.integer_bits_for(w)
    return il, bits - il


def encode(method: str, w: np.ndarray, opts: Options, *, name: str = "", pruned: bool = False):
    """(stage dict, int32 levels in coding order, row length for the entropy coder).

    ``w`` is float64 with the tensor's shape; ``pruned`` says zeros must stay exactly zero
    (codebooks then get a zero centre)."""
    shape = w.shape
    row = int(math.prod(shape[1:])) if len(shape) >= 2 else 0
    if method == "fixed":
        il, fl = fixed_format(w, opts)
        levels = fixed.quantize(w, il, fl, opts.rounding, seed=opts.seed, name=name).reshape(-1)
        return {"id": "fixed", "il": il, "fl": fl, "rounding": opts.rounding, "seed": int(opts.seed)}, levels, row
    if method == "kmeans":
        levels, book = codebook.encode_kmeans(w.reshape(-1), opts.k, init=opts.init, iterations=opts.iterations,
                                              seed=opts.seed, zero=pruned)
        return {"id": "kmeans", "codebook": book}, levels, row
    if method in ("pq", "rq"):
        d = int(opts.d)
        if not 1 <= d <= MAX_SUBVECTOR:
            raise ValueError(f"sub-vector length must be 1..{MAX_SUBVECTOR}, got {d}")
        init = opts.init
        _, c = codebook.matrix_shape(shape)
        s = -(-c // d) if c else 0
        if method == "pq":
            levels, books = codebook.encode_pq(w, opts.k, d, init=init, iterations=opts.iterations,
                                               seed=opts.seed, zero=pruned)
        else:
            if not 1 <= opts.stages <= MAX_RQ_STAGES:
                raise ValueError(f"rq stages must be 1..{MAX_RQ_STAGES}, got {opts.stages}")
            levels, books = codebook.encode_rq(w, opts.k, d, opts.stages, init=init, iterations=opts.iterations,
                                               seed=opts.seed, zero=pruned)
        return {"id": method, "d": d, "codebooks": books}, levels, s
    if method == "binary":
        levels, scale = binary.binarize(w, keep_zeros=pruned)
        return {"id": "binary", "scale": scale}, levels.reshape(-1), row
    if method == "ternary":
        levels, scale, t = binary.ternarize(w, opts.ternary_ratio)
        return {"id": "ternary", "scale": scale, "threshold": t}, levels.reshape(-1), row
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------------
# Decoding: validate the parameters (FormatError), count the levels, map levels to values


def _bad(stage: dict, why: str) -> FormatError:
    return FormatError(f"{stage.get('id')} stage: {why}")


def _int(stage: dict, key: str, lo: int, hi: int) -> int:
    v = stage.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _bad(stage, f"{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _float(stage: dict, key: str, *, positive_or_zero: bool = True) -> float:
    v = stage.get(key)
    if not isinstance(v, float) or not math.isfinite(v) or (positive_or_zero and v < 0):
        raise _bad(stage, f"{key} must be a finite float{' >= 0' if positive_or_zero else ''}, got {v!r}")
    return v


def _floats(stage: dict, v, what: str) -> np.ndarray:
    if not isinstance(v, list) or not v or not all(isinstance(x, float) and math.isfinite(x) for x in v):
        raise _bad(stage, f"{what} must be a non-empty list of finite floats")
    return np.array(v, dtype=np.float64)


def _lookup(stage: dict, table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        raise _bad(stage, f"level outside the codebook of {table.shape[0]} entries")
    return table[idx]


class _Fixed:
    def level_count(self, stage, shape):
        il = _int(stage, "il", -(1 << 16), 1 << 16)
        fl = _int(stage, "fl", *fixed.FL_RANGE)
        if not 1 <= il + fl <= fixed.MAX_WORD:
            raise _bad(stage, f"word length il + fl = {il + fl} outside 1..{fixed.MAX_WORD}")
        return int(math.prod(shape))

    def decode(self, stage, levels, shape):
        wl = stage["il"] + stage["fl"]
        if levels.size and (int(levels.min()) < -(1 << (wl - 1)) or int(levels.max()) > (1 << (wl - 1)) - 1):
            raise _bad(stage, f"level outside the {wl}-bit range")
        return fixed.dequantize(levels, stage["fl"]).reshape(shape)


class _KMeans:
    def level_count(self, stage, shape):
        _floats(stage, stage.get("codebook"), "codebook")
        return int(math.prod(shape))

    def decode(self, stage, levels, shape):
        book = _floats(stage, stage["codebook"], "codebook")
        idx = levels.astype(np.int64) + codebook.zero_index(book)
        return _lookup(stage, book, idx).reshape(shape)


class _Product:
    """pq and rq share the sub-vector layout."""

    def __init__(self, residual: bool):
        self.residual = residual

    def _books(self, stage, shape):
        d = _int(stage, "d", 1, MAX_SUBVECTOR)
        books = stage.get("codebooks")
        _, c = codebook.matrix_shape(shape)
        s = -(-c // d) if c else 0
        if not isinstance(books, list):
            raise _bad(stage, "codebooks must be a list")
        if self.residual:
            if not 1 <= len(books) <= MAX_RQ_STAGES:
                raise _bad(stage, f"1..{MAX_RQ_STAGES} stage codebooks needed, got {len(books)}")
        elif len(books) != s:
            raise _bad(stage, f"{s} sub-space codebooks needed, got {len(books)}")
        tables = []
        for b in books:
            t = _floats(stage, b, "each codebook")
            if t.size % d:
                raise _bad(stage, f"codebook of {t.size} floats is not a whole number of {d}-vectors")
            tables.append(t.reshape(-1, d))
        return d, s, tables

    def level_count(self, stage, shape):
        d, s, tables = self._books(stage, shape)
        r, _ = codebook.matrix_shape(shape)
        return r * s * (len(tables) if self.residual else 1)

    def decode(self, stage, levels, shape):
        d, s, tables = self._books(stage, shape)
        r, _ = codebook.matrix_shape(shape)
        idx = levels.astype(np.int64)
        if self.residual:
            n = r * s
            v = np.zeros((n, d))
            for t, table in enumerate(tables):
                v += _lookup(stage, table, idx[t * n:(t + 1) * n])
        else:
            idx = idx.reshape(r, s)
            v = np.empty((r, s, d))
            for j, table in enumerate(tables):
                v[:, j, :] = _lookup(stage, table, idx[:, j])
        return codebook.from_subvectors(v, shape, d)


class _Scaled:
    def __init__(self, ternary: bool):
        self.ternary = ternary

    def level_count(self, stage, shape):
        _float(stage, "scale")
        if self.ternary:
            _float(stage, "threshold")
        return int(math.prod(shape))

    def decode(self, stage, levels, shape):
        if levels.size and (int(levels.min()) < -1 or int(levels.max()) > 1):
            raise _bad(stage, "levels must be -1, 0 or 1")
        return (levels.astype(np.float64) * stage["scale"]).reshape(shape)


STAGES: dict[str, object] = {
    "fixed": _Fixed(), "kmeans": _KMeans(), "pq": _Product(False), "rq": _Product(True),
    "binary": _Scaled(False), "ternary": _Scaled(True), "dq": rdq.DQStage(),
}

__all__ = ["METHODS", "INITS", "Options", "encode", "STAGES", "fixed_format"]
