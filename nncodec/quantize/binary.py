"""Binary (BinaryConnect's deterministic binarization, scaled) and ternary weights.

binary:  level = +1 if w >= 0 else -1; scale a = mean |w| (the scale that minimises
         the squared error of a * sign(w)); value = level * a.
ternary: level = sign(w) if |w| > t else 0, t = ratio * mean |w| (ratio 0.7, as in
         Ternary Weight Networks); scale a = mean |w| over |w| > t (the least-squares
         scale for those levels); value = level * a.
Weights already zero (pruned) get level 0 in both.
"""
from __future__ import annotations

import numpy as np


def binarize(w, keep_zeros: bool = False) -> tuple[np.ndarray, float]:
    x = np.asarray(w, dtype=np.float64)
    levels = np.where(x >= 0, 1, -1).astype(np.int32)
    if keep_zeros:
        levels[x == 0] = 0
    nz = levels != 0
    scale = float(np.mean(np.abs(x[nz]))) if np.any(nz) else 0.0
    return levels, scale


def ternarize(w, ratio: float = 0.7) -> tuple[np.ndarray, float, float]:
    if not (ratio >= 0 and np.isfinite(ratio)):
        raise ValueError(f"ternary threshold ratio must be >= 0, got {ratio!r}")
    x = np.asarray(w, dtype=np.float64)
    a = np.abs(x)
    nonzero = a[a > 0]
    t = float(ratio * nonzero.mean()) if nonzero.size else 0.0
    keep = a > t
    levels = np.where(keep, np.sign(x), 0).astype(np.int32)
    scale = float(a[keep].mean()) if np.any(keep) else 0.0
    return levels, scale, t
