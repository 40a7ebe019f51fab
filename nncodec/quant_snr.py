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

try:  # one-pass loops without temporaries; numpy below does the same, slower
    from nncodec_ext import _quant
except ImportError:  # pragma: no cover - only on a broken install
    _quant = None

__all__ = ["snr_db", "step_for_snr", "step_for_snr_many", "quantize", "dequantize"]

_I32_MIN = float(np.iinfo(np.int32).min)
_I32_MAX = float(np.iinfo(np.int32).max)
_DB_PER_LN_STEP = 20.0 / math.log(10.0)  # the SNR falls ~8.7 dB per unit of ln(step)


def _as_array(w) -> np.ndarray:
    """float64 array with the original shape; accepts numpy, lists, torch tensors."""
    if hasattr(w, "detach"):  # torch.Tensor without importing torch
        w = w.detach().cpu().numpy()
    return np.asarray(w, dtype=np.float64)


def _as_f64(w) -> np.ndarray:
    return _as_array(w).ravel()


def _as_real(w) -> np.ndarray:
    """A 1-D float32 or float64 view of ``w`` (copied only when it must be)."""
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()
    arr = np.asarray(w)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)  # exact
    elif arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr).reshape(-1)


def _sq_error(w: np.ndarray, step: float) -> tuple[float, float]:
    """(sum w^2, sum of the squared error of quantizing w with ``step``)."""
    if _quant is not None:
        return _quant.sq_error(w, float(step))
    sig = err = 0.0
    for start in range(0, w.size, 1 << 16):  # bounded temporaries
        x = w[start:start + (1 << 16)].astype(np.float64)
        e = x - np.rint(x / step) * step
        sig += float(np.dot(x, x))
        err += float(np.dot(e, e))
    return sig, err


def _sum_sq(w: np.ndarray) -> float:
    """sum w^2, the same float as ``_sq_error(w, step)[0]``, without quantizing."""
    if _quant is not None:
        return _quant.sum_sq(w)
    return _sq_error(w, 1.0)[0]


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
    levels, _ = quantize_checked(w, step)
    return levels


def quantize_checked(w, step: float) -> tuple[np.ndarray, float]:
    """``quantize`` plus the largest |w / step| before clipping (> 2**31 - 1 means clipped)."""
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive finite number, got {step!r}")
    shape = np.shape(w) if not hasattr(w, "shape") else tuple(w.shape)
    flat = _as_real(w)
    out = np.empty(flat.size, dtype=np.int32)
    if _quant is not None:
        top = _quant.quantize_into(flat, float(step), out)
    else:
        q = np.rint(flat.astype(np.float64) / float(step))
        top = float(np.max(np.abs(q))) if q.size else 0.0
        np.clip(q, _I32_MIN, _I32_MAX, out=q)
        out[:] = q
    return out.reshape(shape), top


def dequantize(levels, step: float) -> np.ndarray:
    """``levels * step`` as float32 (same shape as ``levels``)."""
    return (np.asarray(levels, dtype=np.float64) * float(step)).astype(np.float32)


def _snr_at(ws, signal: float, step: float) -> float:
    noise = 0.0
    for w in ws:
        noise += _sq_error(w, step)[1]
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def step_for_snr(w, target_db: float, iters: int = 60, tol_db: float = 1e-3) -> float:
    """Uniform step so that ``rint(w/step)*step`` has weight SNR >= ``target_db``.

    Bisection on ``log(step)`` between a step small enough to meet the target
    and one too large to; returns the largest step found that meets the
    target (a deterministic Python float).  The search stops early once a
    step within ``tol_db`` above the target is found (a step 1e-4 relative
    larger would change the rate by about 1e-4 bits a weight).  For an
    all-zero tensor any step is lossless and ``1.0`` is returned.
    """
    return step_for_snr_many([w], target_db, iters, tol_db)


def step_for_snr_many(tensors, target_db: float, iters: int = 60, tol_db: float = 1e-3) -> float:
    """One step for several tensors together: the SNR is that of all their
    values at once (sum of w^2 over sum of squared errors), as ``step_for_snr``
    for their concatenation, computed without concatenating."""
    ws = [w for w in (_as_real(t) for t in tensors) if w.size]
    if not ws:
        return 1.0
    amax = max(float(np.max(np.abs(w))) for w in ws)
    if not math.isfinite(amax):
        raise ValueError("weights contain NaN or inf")
    signal = 0.0
    for w in ws:
        signal += _sum_sq(w)
    if signal == 0.0:
        return 1.0
    size = sum(w.size for w in ws)
    target = float(target_db)
    hi = 4.0 * amax  # with step > 2*amax everything rounds to 0 -> SNR 0 dB
    # First guesses: the uniform-noise model (noise ~ n*step^2/12) gives a step, and the SNR
    # falls about 20 dB a decade of step from there; a few such Newton steps on log(step)
    # usually bracket the target within a hundredth of a dB.
    rms = math.sqrt(signal / size)
    guess = min(rms * math.sqrt(12.0) * 10.0 ** (-target / 20.0), hi / 2.0)
    llo = flo = lhi = fhi = None
    ls = math.log(guess)
    for _ in range(4):
        f = _snr_at(ws, signal, math.exp(ls)) - target
        if f >= 0:
            if llo is None or ls > llo:
                llo, flo = ls, f
            if f <= tol_db:
                return float(math.exp(llo))
        elif lhi is None or ls < lhi:
            lhi, fhi = ls, f
        if llo is not None and lhi is not None:
            break
        if math.isinf(f):
            ls += 1.0
        else:  # aim a little above the target, so that the step meets it
            ls += max(-2.0, min(2.0, (f - 0.5 * tol_db) / _DB_PER_LN_STEP))
    if lhi is None:
        f = _snr_at(ws, signal, hi) - target
        if f >= 0:
            return hi
        lhi, fhi = math.log(hi), f
    if llo is None:
        lo = math.exp(lhi)
        while True:
            lo /= 4.0
            if lo < amax * 1e-12:
                return lo  # the int32 range, not the target, is the limit here
            f = _snr_at(ws, signal, lo) - target
            if f >= 0:
                break
        llo, flo = math.log(lo), f
    # Between the brackets, the SNR falls almost linearly in log(step): regula falsi with the
    # Illinois rule finds the crossing in a few passes over the weights.
    side = 0
    for _ in range(iters):
        if lhi - llo < 1e-7:  # step known to 1e-7 relative: far finer than any SNR target needs
            break
        if flo <= tol_db:  # close enough above the target
            break
        if math.isinf(flo):
            mid = 0.5 * (llo + lhi)
        else:
            mid = llo + (lhi - llo) * flo / (flo - fhi)
            # stay strictly inside, and fall back to halving when the secant stalls
            span = lhi - llo
            mid = min(max(mid, llo + 0.01 * span), lhi - 0.01 * span)
        fmid = _snr_at(ws, signal, math.exp(mid)) - target
        if fmid >= 0:
            llo, flo = mid, fmid
            if side == 1:
                fhi *= 0.5
            side = 1
        else:
            lhi, fhi = mid, fmid
            if side == -1:
                flo *= 0.5
            side = -1
    return float(math.exp(llo))
