"""k-means clustering for codebook quantization: scalar (sorted, exact Lloyd
iterations in O(n log k)) and vector (chunked distances), both deterministic.

Initialisations: ``"linear"`` (centres evenly spaced between the smallest and
the largest value; for vectors, data points evenly spaced in the order of their
sum: no randomness at all) and ``"kmeans++"`` (seeded with ``seed``).
"""
from __future__ import annotations

import numpy as np

INITS = ("linear", "kmeans++")
_PP_SAMPLE = 1 << 16  # k-means++ seeds on at most this many points (a seeded subsample)
_CHUNK = 1 << 15


def _check(k: int, init: str, iters: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if iters < 0:
        raise ValueError(f"iterations must be >= 0, got {iters!r}")


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on rows of ``x`` (n, d); returns (k', d), k' <= k distinct rows."""
    if x.shape[0] > _PP_SAMPLE:
        x = x[np.sort(rng.choice(x.shape[0], _PP_SAMPLE, replace=False))]
    centres = [x[int(rng.integers(x.shape[0]))]]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:
            break
        i = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
        i = min(i, x.shape[0] - 1)
        centres.append(x[i])
        d2 = np.minimum(d2, np.sum((x - x[i]) ** 2, axis=1))
    return np.array(centres, dtype=np.float64)


def kmeans_1d(values, k: int, *, init: str = "linear", iterations: int = 30, seed: int = 0,
              zero: bool = False) -> np.ndarray:
    """Centres (sorted ascending, float64, at most k, distinct) of scalar k-means on ``values``.

    With ``zero=True`` one centre is pinned at exactly 0.0 (for pruned weights) and
    the others are fitted to the non-zero values."""
    _check(k, init, iterations)
    x = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if zero:
        x = x[x != 0.0]
        k -= 1
    uniq = np.unique(x)
    if uniq.size <= k:  # as many centres as distinct values: exact
        c = uniq
    else:
        if init == "linear":
            c = np.linspace(x[0], x[-1], k)
        else:
            c = np.sort(_plus_plus(x[:, None], k, np.random.default_rng(seed))[:, 0])
        csum = np.concatenate(([0.0], np.cumsum(x)))
        for _ in range(iterations):
            bounds = np.searchsorted(x, (c[1:] + c[:-1]) / 2.0)  # first index of each next cluster
            starts = np.concatenate(([0], bounds))
            ends = np.concatenate((bounds, [x.size]))
            counts = ends - starts
            sums = csum[ends] - csum[starts]
            new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
            new = np.sort(new)
            if np.array_equal(new, c):
                break
            c = new
        c = np.unique(c)
    if zero:
        c = np.unique(np.concatenate((c, [0.0])))
    if c.size == 0:
        c = np.zeros(1)
    return c


def nearest_1d(values, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``centres`` for each value (ties: the lower centre)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if centres.size == 1:
        return np.zeros(v.size, dtype=np.int64)
    mids = (centres[1:] + centres[:-1]) / 2.0
    return np.searchsorted(mids, v, side="left").astype(np.int64)


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean; ties: the lowest index) for each row of x."""
    out = np.empty(x.shape[0], dtype=np.int64)
    cn = np.sum(centres * centres, axis=1)
    for s in range(0, x.shape[0], _CHUNK):
        xs = x[s:s + _CHUNK]
        d = cn[None, :] - 2.0 * (xs @ centres.T)
        out[s:s + _CHUNK] = np.argmin(d, axis=1)
    return out


def kmeans(x, k: int, *, init: str = "kmeans++", iterations: int = 20, seed: int = 0,
           zero: bool = False) -> np.ndarray:
    """Centres (k', d), k' <= k, of k-means on the rows of ``x`` (n, d).

    With ``zero=True`` the all-zero vector is one of the centres (never moved)."""
    _check(k, init, iterations)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    n, d = x.shape
    uniq = np.unique(x, axis=0) if n else np.zeros((0, d))
    if zero:
        uniq = uniq[np.any(uniq != 0.0, axis=1)]
        k -= 1
    if uniq.shape[0] <= k:
        c = uniq
    else:
        if init == "linear":
            order = np.argsort(uniq.sum(axis=1), kind="stable")
            c = uniq[order[np.linspace(0, uniq.shape[0] - 1, k).round().astype(np.int64)]]
        else:
            c = _plus_plus(uniq, k, np.random.default_rng(seed))
        if zero:
            c = np.vstack((np.zeros((1, d)), c))
        for _ in range(iterations):
            idx = assign(x, c)
            counts = np.bincount(idx, minlength=c.shape[0]).astype(np.float64)
            sums = np.stack([np.bincount(idx, weights=x[:, j], minlength=c.shape[0]) for j in range(d)],
                            axis=1)
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], c)
            if zero:
                new[0] = 0.0
            if np.array_equal(new, c):
                break
            c = new
        if zero:
            c = c[1:]
    if zero:
        c = np.vstack((np.zeros((1, d)), c))
    if c.shape[0] == 0:
        c = np.zeros((1, d))
    return np.unique(c, axis=0)
