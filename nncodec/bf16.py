"""bfloat16 in numpy, which has no such dtype: arrays of uint16 holding the bits.

A bfloat16 is the upper half of a float32. Widening is exact; narrowing rounds
to nearest, ties to even, and keeps NaN a NaN.
"""
from __future__ import annotations

import numpy as np


def to_float32(bits) -> np.ndarray:
    """uint16 bfloat16 bits -> float32 values (exact)."""
    b = np.asarray(bits, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32)


def from_float32(values) -> np.ndarray:
    """float32 values -> uint16 bfloat16 bits, round to nearest even."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    u = v.view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(v)
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)  # stay a (quiet) NaN
    return out.reshape(v.shape)
