"""Weight-domain estimators of seed 000: ML, MMSE (Gaussian prior), MMSE_pb (compensators).

All act on ``r = w + z`` elementwise, with a per-weight noise variance ``nv`` (it varies under
fading) and the group's prior mean ``mu`` and variance ``var``.

MMSE_pb (seed 000, "Bayesian denoiser with compensators") minimizes
``E[(w_hat - W)^2 exp(lambda W^2 + beta W) | R]``. For the Gaussian prior N(mu, var) the
minimizer is the mean of the tilted posterior:

    w_hat = (var r + mu nv + beta var nv) / (var + (1 - 2 var lambda) nv),
    valid while lambda < 1/(2 var) + 1/(2 nv).

With mu = 0 this is exactly the seed's formula; the mu nv term is what the same derivation
gives for a non-zero prior mean (the seed's slide assumes a zero-mean prior). lambda = beta = 0
is the plain MMSE estimate. We take lambda and beta in units of the group's standardized weights
(``lambda = lambda' / var``, ``beta = beta' / std``), so that one pair fits tensors of any
scale: the factor on r becomes var / (var + (1 - 2 lambda') nv) and the bound
lambda' < (1 + var/nv) / 2 = (1 + WNR) / 2. ``lambda'`` in [0, 1/2] moves the estimate from MMSE
towards ML (less shrinkage), beyond 1/2 it expands.
"""
from __future__ import annotations

import numpy as np

from .schemes import AnalogConfigError

__all__ = ["ml", "mmse", "mmse_pb"]


def ml(r: np.ndarray, nv=None, mu=None, var=None) -> np.ndarray:
    """The ML estimate: r itself."""
    return np.asarray(r, dtype=np.float64)


def mmse(r: np.ndarray, nv, mu: float, var: float) -> np.ndarray:
    """Posterior mean under the prior N(mu, var): (var r + mu nv) / (var + nv)."""
    r = np.asarray(r, dtype=np.float64)
    nv = np.asarray(nv, dtype=np.float64)
    return (var * r + mu * nv) / (var + nv)


def mmse_pb(r: np.ndarray, nv, mu: float, var: float, lam: float = 0.0, beta: float = 0.0) -> np.ndarray:
    """Seed 000's MMSE_pb with normalized compensators ``lam`` (lambda') and ``beta`` (beta')."""
    if not (np.isfinite(lam) and lam >= 0):
        raise AnalogConfigError(f"mmse_pb: lambda must be >= 0 (seed 000), got {lam!r}")
    if not np.isfinite(beta):
        raise AnalogConfigError(f"mmse_pb: beta must be finite, got {beta!r}")
    r = np.asarray(r, dtype=np.float64)
    nv = np.asarray(nv, dtype=np.float64)
    den = var + (1.0 - 2.0 * lam) * nv
    if np.any(den <= 0):
        worst = float(np.min((1.0 + var / np.maximum(nv, 1e-300)) / 2.0))
        raise AnalogConfigError(
            f"mmse_pb: lambda'={lam} breaks seed 000's bound lambda' < (1 + WNR)/2 = {worst:.4g} "
            "for some weights (under fading the per-weight WNR can be tiny: keep lambda' < 0.5)")
    return (var * r + mu * nv + beta * np.sqrt(var) * nv) / den
