"""Products from the sparse layouts: ``matvec(layout, x)`` and ``matmat(layout, X)``.

``matmat`` computes ``W @ X`` with ``X`` of shape ``(cols, M)`` (C order), so that
the inner loop runs over the M contiguous columns; a Linear layer passes
``input.T`` and a Conv2d passes each sample's unfolded patches ``(C*kh*kw, L)``.

The loops are in ``nncodec_ext._sparse`` (Cython, nogil); this module checks
shapes and dtypes and prepares float32 buffers. Without the compiled module,
or with ``NNCODEC_PURE_PYTHON=1``, numpy versions with the same arithmetic
structure (but not the same summation order) are used.
"""
from __future__ import annotations

import os

import numpy as np

from .layouts import CSR, WS, Dense

try:
    if os.environ.get("NNCODEC_PURE_PYTHON"):
        raise ImportError
    from nncodec_ext import _sparse as _ext
except ImportError:  # pragma: no cover - only without the compiled extension
    _ext = None

__all__ = ["matvec", "matmat", "Prepared", "prepare", "compiled"]


def compiled() -> bool:
    """True when the Cython loops are in use."""
    return _ext is not None


class Prepared:
    """A layout's arrays in the dtypes the loops take (float32 values computed once)."""

    __slots__ = ("kind", "shape", "values", "col_idx", "row_ptr", "group_ptr", "dense")

    def __init__(self, layout):
        self.kind = layout.kind
        self.shape = layout.shape
        self.group_ptr = None
        self.dense = None
        if isinstance(layout, Dense):
            self.dense = layout.dense_values()
            self.values = self.col_idx = self.row_ptr = None
        elif isinstance(layout, CSR):
            self.values = np.ascontiguousarray(layout.float_values(), dtype=np.float32)
            self.col_idx, self.row_ptr = layout.col_idx, layout.row_ptr
        elif isinstance(layout, WS):
            self.values = np.ascontiguousarray(layout.float_values(), dtype=np.float32)
            self.col_idx, self.row_ptr, self.group_ptr = layout.col_idx, layout.row_ptr, layout.group_ptr
        else:
            raise TypeError(f"not a layout: {type(layout).__name__}")


def prepare(layout) -> Prepared:
    return layout if isinstance(layout, Prepared) else Prepared(layout)


def _vector(x, n: int) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != (n,):
        raise ValueError(f"x must have shape ({n},), got {x.shape}")
    return x


def matvec(layout, x, out=None) -> np.ndarray:
    """``W @ x`` for a float32 vector ``x`` of length ``cols``; returns float32 (rows,)."""
    p = prepare(layout)
    R, C = p.shape
    x = _vector(x, C)
    if out is None:
        out = np.empty(R, dtype=np.float32)
    elif out.shape != (R,) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous float32 array of shape ({R},)")
    if p.kind == "dense":
        np.dot(p.dense, x, out=out)
    elif _ext is None:
        out[:] = _matmat_numpy(p, x[:, None])[:, 0]
    elif p.kind == "csr":
        _ext.csr_matvec(p.values, p.col_idx, p.row_ptr, x, out)
    else:
        _ext.ws_matvec(p.values, p.group_ptr, p.col_idx, p.row_ptr, x, out)
    return out


def matmat(layout, X, out=None) -> np.ndarray:
    """``W @ X`` for float32 ``X`` of shape ``(cols, M)``; returns float32 ``(rows, M)``."""
    p = prepare(layout)
    R, C = p.shape
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != C:
        raise ValueError(f"X must have shape ({C}, M), got {X.shape}")
    M = X.shape[1]
    if out is None:
        out = np.empty((R, M), dtype=np.float32)
    elif out.shape != (R, M) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous float32 array of shape ({R}, {M})")
    if p.kind == "dense":
        np.matmul(p.dense, X, out=out)
    elif _ext is None:
        out[:] = _matmat_numpy(p, X)
    elif p.kind == "csr":
        _ext.csr_matmat(p.values, p.col_idx, p.row_ptr, X, out)
    else:
        _ext.ws_matmat(p.values, p.group_ptr, p.col_idx, p.row_ptr, X, out)
    return out


def _matmat_numpy(p: Prepared, X: np.ndarray) -> np.ndarray:
    R = p.shape[0]
    Y = np.zeros((R, X.shape[1]), dtype=np.float32)
    gathered = X[p.col_idx]                                     # (nnz, M)
    if p.kind == "csr":
        rows = np.repeat(np.arange(R), np.diff(p.row_ptr))
        np.add.at(Y, rows, p.values[:, None] * gathered)
        return Y
    G = p.values.size
    gid = np.repeat(np.arange(G), np.diff(p.group_ptr))
    sums = np.zeros((G, X.shape[1]), dtype=np.float32)
    np.add.at(sums, gid, gathered)                              # sum_{j in J_ik} a_j
    g_row = np.repeat(np.arange(R), np.diff(p.row_ptr))
    np.add.at(Y, g_row, p.values[:, None] * sums)               # sum_k w_k * (...)
    return Y
