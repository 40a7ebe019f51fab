"""Shannon limits for the modulations of ``nncodec.channel.modulation`` (for benchmarks).

All SNRs are Es/N0 in dB with unit average symbol energy.

- ``bicm_capacity(mod, snr_db)``: the BICM (bit-interleaved, constellation-constrained) capacity
  of the Gray-mapped constellation on AWGN, in bits per symbol: sum over bit positions of
  I(b_j; y), computed by Gauss-Hermite quadrature over each axis (square QAM with Gray labels
  splits into two independent PAMs; BPSK uses only the in-phase axis). With ``fading=True``
  the ergodic value over Rayleigh fading (|h|^2 ~ Exp(1), Gauss-Laguerre quadrature).
- ``gaussian_capacity(snr_db)``: log2(1 + SNR), the Gaussian-input (unconstrained) capacity
  of the complex channel, also with ``fading``.
- ``snr_limit_db(capacity_fn, bits)``: the smallest SNR at which the capacity reaches ``bits``
  (code rate x bits per symbol), by bisection.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .modulation import Modulation

__all__ = ["bicm_capacity", "gaussian_capacity", "snr_limit_db"]

_GH = np.polynomial.hermite.hermgauss(96)
_GL = np.polynomial.laguerre.laggauss(48)


def _axis_bicm(levels: np.ndarray, labels: np.ndarray, sigma2: float) -> float:
    """Sum over bit positions of I(b; y) for PAM ``levels`` in real noise of variance sigma2."""
    t, w = _GH
    noise = np.sqrt(2.0 * sigma2) * t  # y = a + noise, weights w / sqrt(pi)
    y = levels[:, None] + noise[None, :]                       # (L, Q)
    e = -(y[:, :, None] - levels[None, None, :]) ** 2 / (2 * sigma2)  # (L, Q, L)
    emax = e.max(axis=2, keepdims=True)
    p = np.exp(e - emax)
    total = p.sum(axis=2)
    k = labels.shape[1]
    loss = 0.0
    for j in range(k):
        same = labels[:, j][:, None] == labels[:, j][None, :]   # (L, L'): same bit value
        num = np.einsum("aql,al->aq", p, same.astype(float))
        loss += np.mean(np.log2(total / num) @ (w / np.sqrt(np.pi)))
    return k - loss


def bicm_capacity(mod: Modulation, snr_db: float, fading: bool = False) -> float:
    """BICM capacity (bits per symbol) of ``mod`` at Es/N0 ``snr_db`` (ergodic Rayleigh with ``fading``)."""
    snr = 10.0 ** (snr_db / 10.0)
    if fading:
        x, w = _GL
        return float(sum(wi * bicm_capacity(mod, 10 * np.log10(max(xi * snr, 1e-30))) for xi, wi in zip(x, w)))
    return _bicm_awgn(mod.name, round(float(snr), 12))


@lru_cache(maxsize=4096)
def _bicm_awgn(name: str, snr: float) -> float:
    from .modulation import get_modulation
    mod = get_modulation(name)
    levels, labels = mod.pam
    sigma2 = 1.0 / (2.0 * snr)  # N0 / 2 per real dimension
    c = _axis_bicm(levels, labels, sigma2)
    return float(c if not mod.complex_axes else 2 * c)


def gaussian_capacity(snr_db: float, fading: bool = False) -> float:
    snr = 10.0 ** (snr_db / 10.0)
    if fading:
        x, w = _GL
        return float(np.sum(w * np.log2(1 + x * snr)))
    return float(np.log2(1 + snr))


def snr_limit_db(capacity_fn, bits: float, lo: float = -20.0, hi: float = 40.0, tol: float = 1e-3) -> float:
    """Smallest Es/N0 (dB) with capacity_fn(snr_db) >= bits (capacity_fn increasing)."""
    if capacity_fn(hi) < bits:
        return float("inf")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if capacity_fn(mid) >= bits:
            hi = mid
        else:
            lo = mid
    return hi
