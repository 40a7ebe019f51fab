"""From float weights to a quantized 2-D matrix: magnitude pruning, then a uniform step or a codebook.

    m = quantize_matrix(w, target_snr=30, prune=0.9)     # -> QuantizedMatrix
    m.levels (int32, (out, in*kh*kw)), m.dequant, m.shape (the original shape)
    m.to_layout("ws")

``prune`` zeroes the given fraction of the weights with the smallest
magnitude (ties broken by position, so exactly ``floor(fraction * n)``
weights go). The kept weights are then quantized: with ``step``, with the step
reaching ``target_snr`` dB of SNR *on the pruned weights* (pruning error is not
counted against the quantizer), or with a ``codebook_size``-entry k-means
codebook (1-D Lloyd iterations from quantile starts; deterministic).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from ..quant_snr import step_for_snr
from .layouts import CSR, WS, Dense, Dequant

__all__ = ["QuantizedMatrix", "as_matrix", "magnitude_prune", "quantize_matrix", "kmeans_codebook"]


def as_matrix(w) -> np.ndarray:
    """``(out, in*kh*kw)`` view of a weight tensor (2-D and up)."""
    w = np.asarray(w)
    if w.ndim < 2:
        raise ValueError(f"need a tensor with at least 2 dimensions, got shape {w.shape}")
    return w.reshape(w.shape[0], -1)


def magnitude_prune(w, fraction: float) -> np.ndarray:
    """A copy of ``w`` with the ``floor(fraction * n)`` smallest-magnitude weights set to 0."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"prune fraction must lie in [0, 1], got {fraction}")
    w = np.array(w, dtype=np.float64, copy=True)
    n_prune = int(np.floor(fraction * w.size))
    if n_prune:
        order = np.argsort(np.abs(w).reshape(-1), kind="stable")
        w.reshape(-1)[order[:n_prune]] = 0.0
    return w


def kmeans_codebook(w: np.ndarray, k: int, iters: int = 30) -> Tuple[np.ndarray, np.ndarray]:
    """1-D k-means of the non-zero weights: ``(levels, codebook)`` with level 0 kept for zeros."""
    if k < 1:
        raise ValueError("codebook_size must be at least 1")
    flat = w.reshape(-1)
    nz = flat != 0
    vals = flat[nz]
    levels = np.zeros(flat.shape, dtype=np.int32)
    if vals.size == 0:
        return levels.reshape(w.shape), np.zeros(1)
    centers = np.unique(np.quantile(vals, (np.arange(k) + 0.5) / k))
    for _ in range(iters):
        edges = (centers[1:] + centers[:-1]) / 2
        assign = np.searchsorted(edges, vals)
        sums = np.bincount(assign, weights=vals, minlength=centers.size)
        counts = np.bincount(assign, minlength=centers.size)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
        if np.array_equal(new, centers):
            break
        centers = new
    edges = (centers[1:] + centers[:-1]) / 2
    assign = np.searchsorted(edges, vals)
    used, assign = np.unique(assign, return_inverse=True)
    codebook = np.concatenate([[0.0], centers[used]])
    if np.any(codebook[1:] == 0.0):  # a centre at exactly zero would read as a pruned weight
        codebook[1:][codebook[1:] == 0.0] = np.finfo(np.float32).tiny
    levels[nz] = assign.astype(np.int32) + 1
    return levels.reshape(w.shape), codebook


@dataclass
class QuantizedMatrix:
    """int32 levels of shape ``(out, in*kh*kw)`` and their dequantization."""

    levels: np.ndarray
    dequant: Dequant
    shape: Tuple[int, ...]  # the tensor's own shape

    def to_layout(self, kind: str = "ws"):
        if kind == "dense":
            return Dense(self.levels, self.dequant)
        if kind == "csr":
            return CSR.from_dense(self.levels, self.dequant)
        if kind == "ws":
            return WS.from_dense(self.levels, self.dequant)
        raise ValueError(f"unknown layout {kind!r}; choose dense, csr or ws")

    def weights(self) -> np.ndarray:
        """The dequantized float32 tensor in its own shape."""
        return self.dequant.values(self.levels).reshape(self.shape)


def quantize_matrix(w, *, step: Optional[float] = None, target_snr: Optional[float] = None,
                    codebook_size: Optional[int] = None, prune: float = 0.0) -> QuantizedMatrix:
    """Prune then quantize a weight tensor (give one of step, target_snr, codebook_size)."""
    given = [n for n, v in (("step", step), ("target_snr", target_snr),
                            ("codebook_size", codebook_size)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of step, target_snr and codebook_size")
    w = np.asarray(w)
    shape = tuple(int(s) for s in w.shape)
    m = magnitude_prune(as_matrix(w), prune)
    if codebook_size is not None:
        levels, codebook = kmeans_codebook(m, int(codebook_size))
        return QuantizedMatrix(levels, Dequant(codebook=codebook), shape)
    if step is None:
        step = step_for_snr(m, float(target_snr))
    q = np.rint(m / float(step))
    if q.size and np.max(np.abs(q)) > 2**31 - 1:
        raise ValueError(f"step {step:g} is too small for the weights' range (levels beyond int32)")
    return QuantizedMatrix(q.astype(np.int32), Dequant(step=float(step)), shape)
