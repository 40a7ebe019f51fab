"""Weight-domain estimators of seed 000: ML, MMSE (Gaussian prior), MMSE_pb (compensators).

All act on ``r = w + z`` elementwise, with a per-weight noise variance ``nv`` (it varies under
fading) and the group's prior mean ``mu`` and variance ``var``.

MMSE_pb (seed 000, "Bayesian denoiser with compensators") minimizes
``E[(w_hat - W)^2 exp(lambda W^2 + beta W) | R]``. For the zero-mean Gaussian prior N(0, var) the
minimizer is the mean of the tilted posterior, seed 000's formula:

    w_hat = (var r + beta var nv) / (var + (1 - 2 var lambda) nv),
    valid while lambda < 1/(2 var) + 1/(2 nv).

We apply it to the weights centred on the prior mean (the compensators weigh the deviation
W - mu), i.e. w_hat = mu + (var (r - mu) + beta var nv) / (var + (1 - 2 var lambda) nv): for
mu = 0 exactly the seed's formula, lambda = beta = 0 gives the plain MMSE estimate and
lambda = 1/(2 var), beta = 0 gives ML (w_hat = r) for any mu. We take lambda and beta in units of
the group's standardized weights (``lambda = lambda' / var``, ``beta = beta' / std``), so that
one pair fits tensors of any scale: the factor on r - mu becomes var / (var + (1 - 2 lambda') nv)
and the bound lambda' < (1 + var/nv) / 2 = (1 + WNR) / 2. ``lambda'`` in [0, 1/2] moves the
estimate from MMSE to ML (less shrinkage), beyond 1/2 it expands; ``beta'`` adds
beta' std nv / (var + (1 - 2 lambda') nv).
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
    return mu + (var * (r - mu) + beta * np.sqrt(var) * nv) / den
