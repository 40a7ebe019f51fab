"""Uniform scalar quantization driven by a target weight SNR.

``snr_db(w, w_hat) = 10 log10( sum(w^2) / sum((w - w_hat)^2) )``

:func:`step_for_snr` finds the uniform step ``delta`` such that
``rint(w / delta) * delta`` reaches a target SNR (in dB), by bisection on
``log(delta)``.  The quantization error grows (almost) monotonically with the
step, so the bisection returns the largest step found that still meets the
target.  Everything is deterministic (float64 arithmetic, fixed iteration
count).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["snr_db", "step_for_snr", "quantize", "dequantize"]

_I32_MIN = float(np.iinfo(np.int32).min)
_I32_MAX = float(np.iinfo(np.int32).max)


def _as_array(w) -> np.ndarray:
    """float64 array with the original shape; accepts numpy, lists, torch tensors."""
    if hasattr(w, "detach"):  # torch.Tensor without importing torch
        w = w.detach().cpu().numpy()
    return np.asarray(w, dtype=np.float64)


def _as_f64(w) -> np.ndarray:
    return _as_array(w).ravel()


def snr_db(w, w_hat) -> float:
    """Weight SNR in dB; ``inf`` when ``w_hat == w`` exactly (or both are zero)."""
    w = _as_f64(w)
    w_hat = _as_f64(w_hat)
    if w.shape != w_hat.shape:
        raise ValueError(f"shape mismatch: {w.shape} vs {w_hat.shape}")
    noise = float(np.sum((w - w_hat) ** 2))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(w * w))
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def quantize(w, step: float) -> np.ndarray:
    """``rint(w / step)`` as int32, same shape as ``w`` (clipped to the int32 range)."""
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive finite number, got {step!r}")
    q = np.rint(_as_array(w) / float(step))
    np.clip(q, _I32_MIN, _I32_MAX, out=q)
    return q.astype(np.int32)


def dequantize(levels, step: float) -> np.ndarray:
    """``levels * step`` as float32 (same shape as ``levels``)."""
    return (np.asarray(levels, dtype=np.float64) * float(step)).astype(np.float32)


def _snr_at(w: np.ndarray, signal: float, step: float) -> float:
    err = w - np.rint(w / step) * step
    noise = float(np.dot(err, err))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def step_for_snr(w, target_db: float, iters: int = 60) -> float:
    """Uniform step so that ``rint(w/step)*step`` has weight SNR >= ``target_db``.

    Bisection on ``log(step)`` between a step small enough to meet the target
    and one too large to; returns the largest step found that meets the
    target (a deterministic Python float).  For an all-zero tensor any step
    is lossless and ``1.0`` is returned.
    """
    w = _as_f64(w)
    if w.size == 0:
        return 1.0
    if not np.all(np.isfinite(w)):
        raise ValueError("weights contain NaN or inf")
    signal = float(np.dot(w, w))
    amax = float(np.max(np.abs(w)))
    if signal == 0.0:
        return 1.0
    target = float(target_db)
    # Upper bracket: with step > 2*amax everything rounds to 0 -> SNR 0 dB.
    hi = 4.0 * amax
    if _snr_at(w, signal, hi) >= target:
        return hi
    # Lower bracket: uniform-noise model (noise ~ n*step^2/12) suggests a step;
    # shrink until the target is met.
    rms = math.sqrt(signal / w.size)
    lo = rms * math.sqrt(12.0) * 10.0 ** (-target / 20.0) / 4.0
    lo = min(lo, hi / 2.0)
    while _snr_at(w, signal, lo) < target:
        lo /= 4.0
        if lo < amax * 1e-12:
            # the int32 range, not the target, is the limit here
            return lo
    llo, lhi = math.log(lo), math.log(hi)
    for _ in range(iters):
        mid = 0.5 * (llo + lhi)
        if _snr_at(w, signal, math.exp(mid)) >= target:
            llo = mid
        else:
            lhi = mid
        if lhi - llo < 1e-9:
            break
    return float(math.exp(llo))
