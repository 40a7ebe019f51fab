"""The Shannon-Kotelnikov 2:1 double spiral (seed 000): one weight -> one complex channel use.

Map (u = standardized weight, gamma > 0 the angular frequency):

    f(u) = |u| exp(i gamma |u|)          for u >= 0
    f(u) = -|u| exp(i gamma |u|)         for u < 0   (the u >= 0 arm rotated by pi)

In seed 000's notation x1 + i x2 = (Delta/pi) w exp(i gamma w) for w >= 0; here the radius
factor Delta/pi is fixed by the power constraint (E|f(u)|^2 = E u^2 = 1 for standardized u), so
gamma is the only design parameter. The two arms interleave: along any ray the crossings
alternate between the arms at radial spacing pi/gamma, so w and -w never meet except at 0.
(Read with w < 0 substituted, the seed's slide formula gives the same rotation by pi, since
-w cos(-gamma w + pi) = |w| cos(gamma |w| + pi); we state the map in this odd-symmetric form
because a variant that keeps w instead of |w| in the angle, or mirrors the arm instead of
rotating it, makes the arms cross, so that w and -w, or other pairs, meet.)

Uniform-stretch variant (``k`` given, scheme option ``sk_stretch="sqrt"``; not in the seed):
radius k sqrt|u| instead of |u| (k = 1 / sqrt(E|u|) for unit energy). The arc length of an
Archimedean spiral grows with the square of the radius, so this makes it grow linearly with |u|
and every weight gets the same noise reduction, where the seed's map stretches small weights,
the most common ones, least. On Gaussian weights it is 2-9 dB closer to D at 15-30 dB and worse
below about 10 dB (``python -m nncodec.analog`` prints both).

- :func:`design_gamma`: gamma for the design SNR: the minimizer of a model of the ML weight
  MSE for a standard Gaussian source (:func:`model_mse`: weak noise along the curve plus jumps
  to the other arm) on a fine log grid, checked against smaller gammas by Monte Carlo
  (:func:`design_mse`), which is reliable where jumps are frequent (low SNR).
- :func:`decode_ml`: nearest point on the spiral (grid search over the only window that can hold
  it, two finer searches, then Gauss-Newton steps).
- :func:`decode_mmse`: posterior mean of u over a grid fine enough to resolve the likelihood
  (step 0.7 complex noise std along the curve, i.e. about one std per real dimension; points
  whose likelihood is below exp(-30) of the best are skipped), with the empirical (histogram)
  or Gaussian prior.

The loops run in ``nncodec_ext._analog`` (Cython); ``backend="numpy"`` runs the same algorithm
in numpy (slower; used by the tests as a cross-check).
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Optional, Tuple

import numpy as np

from .schemes import AnalogConfigError

try:  # the compiled hot loop
    from nncodec_ext import _analog as _ext
except ImportError:  # pragma: no cover - source checkout without a build
    _ext = None

__all__ = ["sk_map", "sqrt_k", "decode_ml", "decode_mmse", "design_gamma", "design_mse",
           "model_mse", "histogram_prior", "HAVE_EXT", "STRETCHES"]

HAVE_EXT = _ext is not None
STRETCHES = ("linear", "sqrt")
_HIST_FLOOR = 1e-3   # prior density floor (relative to the peak) for the empirical histogram


def sk_map(u: np.ndarray, gamma: float, k: Optional[float] = None) -> np.ndarray:
    """Complex channel symbol of each standardized weight (odd: f(-u) = -f(u)). ``k`` None: the
    seed's map, radius |u|; ``k`` > 0: the uniform-stretch variant, radius k sqrt(|u|)."""
    u = np.asarray(u, dtype=np.float64)
    a = np.abs(u) if k is None else float(k) * np.sqrt(np.abs(u))
    z = a * np.exp(1j * float(gamma) * a)
    return np.where(u < 0, -z, z)


def sqrt_k(u: np.ndarray) -> float:
    """k of the uniform-stretch variant for unit energy: E (k sqrt|u|)^2 = k^2 E|u| = 1."""
    m = float(np.mean(np.abs(np.asarray(u, dtype=np.float64))))
    return 1.0 / math.sqrt(m) if m > 0 else 1.0


def _kq(k: Optional[float]) -> float:
    if k is None:
        return 0.0
    if not (math.isfinite(k) and k > 0):
        raise AnalogConfigError(f"spiral k must be a positive number, got {k!r}")
    return 1.0 / (float(k) * float(k))


def histogram_prior(u: np.ndarray, bins: int = 64) -> Tuple[np.ndarray, float, float]:
    """Empirical prior of the standardized weights: (density per bin + floor entry, lo, width)."""
    u = np.asarray(u, dtype=np.float64)
    lim = float(np.max(np.abs(u))) * (1 + 1e-9) + 1e-12
    counts, edges = np.histogram(u, bins=bins, range=(-lim, lim))
    # 16-bit counts as sent (side info): rescale to the largest count
    q = np.round(counts * (65535.0 / max(counts.max(), 1))).astype(np.float64)
    dens = q / max(q.sum(), 1.0)
    floor = _HIST_FLOOR * float(dens.max())
    dens = np.maximum(dens, floor)
    return np.concatenate([dens, [floor]]), float(edges[0]), float(edges[1] - edges[0])


def _check(y, gamma):
    y = np.ascontiguousarray(np.asarray(y, dtype=np.complex128).reshape(-1))
    if not (math.isfinite(gamma) and gamma > 0):
        raise AnalogConfigError(f"spiral gamma must be a positive number, got {gamma!r}")
    return y


def _backend(backend: str, n: int = 0) -> bool:
    if backend not in ("auto", "cython", "numpy"):
        raise AnalogConfigError(f"backend must be auto, cython or numpy, got {backend!r}")
    if backend == "cython" and not HAVE_EXT:
        raise AnalogConfigError("the Cython extension nncodec_ext._analog is not built")
    if backend == "auto" and not HAVE_EXT and n > 5000:
        warnings.warn("nncodec_ext._analog is not built: decoding the spiral in numpy, which is "
                      "much slower (build it with `pip install -e .` or `python setup.py "
                      "build_ext --inplace`)", RuntimeWarning, stacklevel=3)
    return HAVE_EXT and backend != "numpy"


def _prior_args(prior):
    if prior is None or prior == "gaussian":
        return 1, np.zeros(1), 0.0, 1.0
    if prior == "flat":
        return 0, np.zeros(1), 0.0, 1.0
    dens, lo, width = prior
    return 2, np.ascontiguousarray(dens, dtype=np.float64), float(lo), float(width)


def decode_ml(y: np.ndarray, gamma: float, backend: str = "auto",
              k: Optional[float] = None) -> np.ndarray:
    """Nearest point on the spiral: the ML estimate of u for every received symbol."""
    y = _check(y, gamma)
    kq = _kq(k)
    if _backend(backend, y.size):
        out = np.empty(y.size)
        _ext.decode(np.ascontiguousarray(y.real), np.ascontiguousarray(y.imag), float(gamma),
                    np.ones(1), 0, 1, np.zeros(1), 0.0, 1.0, out, out, 200000, kq)
        return out
    a = _ml_numpy(y, float(gamma))[0]
    return a if kq == 0 else kq * a * np.abs(a)


def decode_mmse(y: np.ndarray, gamma: float, n0c, prior=None, backend: str = "auto",
                k: Optional[float] = None) -> np.ndarray:
    """Posterior mean of u given y (complex noise variance ``n0c`` per symbol, scalar or array);
    ``prior``: None / "gaussian" (standard normal), "flat", or a :func:`histogram_prior`."""
    y = _check(y, gamma)
    n0c = np.ascontiguousarray(np.broadcast_to(np.asarray(n0c, dtype=np.float64), y.shape))
    if not np.all(n0c > 0):
        raise AnalogConfigError("noise variance must be positive")
    kind, dens, lo, width = _prior_args(prior)
    if _backend(backend, y.size):
        ml = np.empty(y.size)
        out = np.empty(y.size)
        _ext.decode(np.ascontiguousarray(y.real), np.ascontiguousarray(y.imag), float(gamma), n0c,
                    1, kind, dens, lo, width, ml, out, 200000, _kq(k))
        return out
    return _mmse_numpy(y, float(gamma), n0c, kind, dens, lo, width, _kq(k))


# --------------------------------------------------------------------------- numpy twin


def _ml_numpy(y: np.ndarray, gamma: float):
    rad = np.abs(y)
    half = math.pi / (2 * gamma)
    lo = np.maximum(rad - half, 0.0)
    hi = rad + half
    best_d2 = np.full(y.size, np.inf)
    best_a = np.zeros(y.size)
    best_s = np.ones(y.size)
    npts = 64
    step = (hi - lo) / (npts - 1)
    for _ in range(3):
        a = lo[:, None] + np.arange(npts)[None, :] * step[:, None]
        proj = y.real[:, None] * np.cos(gamma * a) + y.imag[:, None] * np.sin(gamma * a)
        d2 = a * a - 2 * a * np.abs(proj)
        d2 = np.where(a < 0, np.inf, d2)
        k = np.argmin(d2, axis=1)
        r = np.arange(y.size)
        better = d2[r, k] < best_d2
        best_d2 = np.where(better, d2[r, k], best_d2)
        best_a = np.where(better, a[r, k], best_a)
        best_s = np.where(better, np.where(proj[r, k] >= 0, 1.0, -1.0), best_s)
        lo = best_a - step
        hi = best_a + step
        npts = 17
        step = (hi - lo) / (npts - 1)
    for _ in range(3):                       # Gauss-Newton polish, as in the Cython loop
        c, s = np.cos(gamma * best_a), np.sin(gamma * best_a)
        er = y.real - best_s * best_a * c
        ei = y.imag - best_s * best_a * s
        fr = best_s * (c - gamma * best_a * s)
        fi = best_s * (s + gamma * best_a * c)
        a = np.maximum(best_a + (fr * er + fi * ei) / (fr * fr + fi * fi), 0.0)
        d2 = a * a - 2 * a * best_s * (y.real * np.cos(gamma * a) + y.imag * np.sin(gamma * a))
        better = d2 < best_d2
        if not better.any():
            break
        best_a = np.where(better, a, best_a)
        best_d2 = np.where(better, d2, best_d2)
    return best_s * best_a, best_d2 + rad ** 2


def _prior_numpy(u, kind, dens, lo, width):
    if kind == 0:
        return np.ones_like(u)
    if kind == 1:
        return np.exp(-0.5 * u * u)
    nb = dens.size - 1
    b = np.floor((u - lo) / width).astype(np.int64)
    inside = (b >= 0) & (b < nb)
    return np.where(inside, dens[np.clip(b, 0, nb - 1)], dens[nb])


def _mmse_numpy(y, gamma, n0c, kind, dens, lo_h, width, kq=0.0):
    u_ml, d2min = _ml_numpy(y, gamma)
    if kq:
        u_ml = kq * u_ml * np.abs(u_ml)
    out = np.empty(y.size)
    rad = np.abs(y)
    half = math.pi / (2 * gamma)
    for i in range(y.size):          # one symbol at a time: the grid size differs per symbol
        sig = math.sqrt(n0c[i])
        lo = max(rad[i] - half - 7 * sig, 0.0)
        hi = rad[i] + half + 7 * sig
        fa = math.sqrt(1 + gamma * gamma * hi * hi)
        npts = max(int(math.ceil((hi - lo) / (0.7 * sig / fa))) + 1, 33)
        npts = min(npts, 200000)
        a = np.linspace(lo, hi, npts)
        proj = y[i].real * np.cos(gamma * a) + y[i].imag * np.sin(gamma * a)
        base = rad[i] ** 2 + a * a
        ep = (base - 2 * a * proj - d2min[i]) / n0c[i]
        em = (base + 2 * a * proj - d2min[i]) / n0c[i]
        v, jac = (kq * a * a, 2 * kq * a) if kq else (a, np.ones_like(a))
        wp = np.where(ep < 30, _prior_numpy(v, kind, dens, lo_h, width) * jac
                      * np.exp(-np.minimum(ep, 30)), 0)
        wm = np.where((em < 30) & (a > 0), _prior_numpy(-v, kind, dens, lo_h, width) * jac
                      * np.exp(-np.minimum(em, 30)), 0)
        den = wp.sum() + wm.sum()
        out[i] = (np.sum(v * wp) - np.sum(v * wm)) / den if den > 0 else u_ml[i]
    return out


# --------------------------------------------------------------------------- design

_GAMMAS = np.geomspace(0.02, 200.0, 801)
_U = np.linspace(-9.0, 9.0, 3601)
_PHI = np.exp(-0.5 * _U ** 2)
_PHI /= _PHI.sum()


_K_GAUSS = 1.0 / math.sqrt(math.sqrt(2.0 / math.pi))   # sqrt_k of a standard Gaussian


def model_mse(gamma, snr_db: float, stretch: str = "linear") -> np.ndarray:
    """Approximate ML weight MSE (standardized units) of the spiral for a standard Gaussian source
    at Es/N0 = ``snr_db`` (unit energy per complex symbol, noise n0/2 per real dimension). With
    the radius a(u) (|u|, or k sqrt|u| for ``stretch="sqrt"``):

        D = E[ (n0/2) (du/da)^2 / (1 + gamma^2 a^2) ] + 2 Q(pi / (2 gamma sqrt(n0/2))) E[e_jump^2]

    The first term is the weak noise along the curve (|f'(a)|^2 = 1 + gamma^2 a^2 stretches it);
    the second the jumps to the neighbouring arm, pi/gamma away in radius and of the opposite
    sign, so that the error e_jump is about 2|u| plus the change of u over pi/gamma of radius.
    These rare jumps decide the optimum at high SNR and a Monte-Carlo objective with a few
    thousand draws misses them (it picks a gamma that is too large), so the design minimizes this
    model instead; :func:`design_mse` checks it."""
    g = np.atleast_1d(np.asarray(gamma, dtype=np.float64))[:, None]
    sd2 = 0.5 * 10.0 ** (-snr_db / 10.0)
    au = np.abs(_U)[None, :]
    if stretch == "sqrt":
        k = _K_GAUSS
        a = k * np.sqrt(au)
        duda = 2 * a / k ** 2
    else:
        a = au
        duda = np.ones_like(a)
    weak = sd2 * (_PHI[None, :] * duda ** 2 / (1.0 + (g * a) ** 2)).sum(axis=1)
    from math import erfc
    q = np.array([0.5 * erfc(math.pi / (2 * gi * math.sqrt(sd2)) / math.sqrt(2)) for gi in g[:, 0]])
    jump = (_PHI[None, :] * (2 * au + duda * math.pi / g) ** 2).sum(axis=1)
    return weak + 2 * q * jump


def design_mse(gamma: float, snr_db: float, receiver: str = "ml", n: int = 20000,
               seed: int = 1234, stretch: str = "linear") -> float:
    """Monte-Carlo weight MSE (standardized units) of the spiral with ``gamma`` for a standard
    Gaussian source at Es/N0 = ``snr_db`` (a check of :func:`model_mse` and of the design)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(n)
    noise = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    n0 = 10.0 ** (-snr_db / 10.0)
    k = sqrt_k(u) if stretch == "sqrt" else None
    z = sk_map(u, gamma, k)
    es = float(np.mean(np.abs(z) ** 2))
    y = z + math.sqrt(es * n0 / 2) * noise      # unit-energy symbols, in the u domain
    if receiver == "ml":
        uh = decode_ml(y, gamma, k=k)
    else:
        uh = decode_mmse(y, gamma, es * n0, prior="gaussian", k=k)
    return float(np.mean((uh - u) ** 2))


@functools.lru_cache(maxsize=1024)
def _design(snr_key: float, stretch: str = "linear") -> float:
    g_model = float(_GAMMAS[int(np.argmin(model_mse(_GAMMAS, snr_key, stretch)))])
    # the model is optimistic at low SNR (jumps there are not only to the nearest arm): check
    # gamma_model * (0.3 .. 1) and the nearly linear map by Monte Carlo; never go above
    # gamma_model, where the Monte Carlo misses the rare jumps that the model counts
    cands = [0.02] + [float(g) for g in g_model * np.geomspace(0.3, 1.0, 8)]
    vals = [design_mse(g, snr_key, "ml", n=20000, stretch=stretch) for g in cands]
    return cands[int(np.argmin(vals))]


def design_gamma(snr_db: float, receiver: str = "ml", stretch: str = "linear") -> float:
    """The spiral's gamma for ``snr_db``: the minimizer gamma_model of :func:`model_mse` on a log
    grid of 801 values from 0.02 to 200, then the best of gamma_model * geomspace(0.3, 1, 8) and
    0.02 (nearly linear) by Monte-Carlo ML MSE (20,000 draws). Cached on the SNR rounded to
    0.01 dB. The MMSE decoder uses the same gamma (``receiver`` is accepted for symmetry)."""
    if not math.isfinite(snr_db):
        raise AnalogConfigError(f"design SNR must be finite, got {snr_db!r}")
    if stretch not in STRETCHES:
        raise AnalogConfigError(f"stretch must be one of {STRETCHES}, got {stretch!r}")
    return _design(round(float(snr_db), 2), stretch)
