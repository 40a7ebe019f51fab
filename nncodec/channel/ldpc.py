"""The IEEE 802.11n quasi-cyclic LDPC codes: systematic encoding and layered min-sum decoding.

    code = LDPCCode(1944, "1/2")                       # n = 1944, k = 972, Z = 81
    cw = code.encode(info_bits)                        # (frames, k) uint8 -> (frames, n) uint8
    bits, iters = code.decode(llr, max_iter=20)        # llr (frames, n): positive means bit 0
    ok = iters >= 0                                    # syndrome zero

Codewords are systematic: the k information bits first, then the n - k parity bits. The encoder
uses the structure of the 802.11n parity part (a weight-3 first block column whose shifts sum
to a single cyclic shift, then a dual diagonal of identities): the first parity block is the
(unshifted) sum of all block rows' information syndromes, the others follow row by row by
back-substitution. Decoding is layered normalized min-sum (one layer per block row,
normalization ``alpha`` = 0.75 by default) with an early stop when the syndrome is zero, in
``nncodec_ext._ldpc``: 16-bit fixed point (LLRs in steps of 1/64, messages clamped to +-128),
16 codewords side by side in SIMD lanes. ``NNCODEC_PURE_PYTHON=1`` selects a numpy twin that
does the same integer arithmetic (same results, slower; the tests cross-check the two).
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from .ldpc_tables import LIFTING, prototype

__all__ = ["LDPCCode", "get_code", "CODE_RATES", "quantize_llr"]

CODE_RATES = ("1/2", "2/3", "3/4", "5/6")
DEFAULT_ALPHA = 0.75
DEFAULT_MAX_ITER = 20
LLR_CLIP = 64.0
#: fixed point of the decoder: LLR units per integer step is 1 / LLR_SCALE; posteriors and
#: messages are clamped to +-MSG_MAX (= 128 LLR units)
LLR_SCALE = 64
MSG_MAX = 8191

try:
    if os.environ.get("NNCODEC_PURE_PYTHON"):
        raise ImportError
    from nncodec_ext import _ldpc as _ext
except ImportError:  # pragma: no cover - depends on the build
    _ext = None


class LDPCCode:
    """One 802.11n LDPC code (``n`` in 648 / 1296 / 1944, ``rate`` in 1/2, 2/3, 3/4, 5/6)."""

    def __init__(self, n: int, rate: str):
        if int(n) not in LIFTING:
            raise ValueError(f"block length must be one of {', '.join(map(str, LIFTING))}, got {n}")
        if rate not in CODE_RATES:
            raise ValueError(f"rate must be one of {', '.join(CODE_RATES)}, got {rate!r}")
        self.n = int(n)
        self.rate = rate
        self.z = LIFTING[self.n]
        self.proto = prototype(self.n, rate)
        self.mb, self.nb = self.proto.shape
        self.kb = self.nb - self.mb
        self.k = self.kb * self.z
        self.m = self.mb * self.z
        P = self.proto
        if P.min() < -1 or P.max() >= self.z:
            raise ValueError("prototype shift out of range")
        rows, cols = np.nonzero(P >= 0)
        order = np.lexsort((cols, rows))
        self._rows = rows[order].astype(np.int32)
        self.cols = cols[order].astype(np.int32)
        self.shifts = P[rows[order], cols[order]].astype(np.int32)
        self.row_ptr = np.searchsorted(self._rows, np.arange(self.mb + 1)).astype(np.int32)
        self._check_parity_structure()

    # -- structure ------------------------------------------------------------------------------

    def _check_parity_structure(self) -> None:
        P, kb, mb = self.proto, self.kb, self.mb
        first = P[:, kb]
        vals, counts = np.unique(first[first >= 0], return_counts=True)
        odd = vals[counts % 2 == 1]
        if odd.size != 1:
            raise ValueError(f"{self}: first parity column does not sum to one cyclic shift")
        self._p0_shift = int(odd[0])
        for i in range(mb):
            for j in range(1, mb):
                want = 0 if j in (i, i + 1) else -1
                if P[i, kb + j] != want:
                    raise ValueError(f"{self}: parity part is not dual-diagonal at block ({i}, {j})")

    def __repr__(self) -> str:
        return f"LDPCCode(n={self.n}, rate={self.rate!r})"

    @property
    def rate_value(self) -> float:
        return self.k / self.n

    def parity_check_matrix(self) -> np.ndarray:
        """The full binary H (m x n, uint8), for tests and inspection."""
        z = self.z
        H = np.zeros((self.m, self.n), dtype=np.uint8)
        r = np.arange(z)
        for i, j, s in zip(self._rows, self.cols, self.shifts):
            H[i * z + r, j * z + (r + s) % z] = 1
        return H

    def syndrome(self, bits: np.ndarray) -> np.ndarray:
        """Syndrome (frames x m, uint8) of codewords (frames x n)."""
        b = np.atleast_2d(np.asarray(bits, dtype=np.uint8)).reshape(-1, self.nb, self.z)
        out = np.zeros((b.shape[0], self.mb, self.z), dtype=np.uint8)
        r = np.arange(self.z)
        for i, j, s in zip(self._rows, self.cols, self.shifts):
            out[:, i] ^= b[:, j, (r + s) % self.z]
        return out.reshape(b.shape[0], self.m)

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, info: np.ndarray) -> np.ndarray:
        """Systematic encoding of ``info`` ((frames, k) or (k,), values 0/1) -> (frames, n) uint8."""
        u = np.asarray(info)
        if u.ndim == 1:
            u = u[None, :]
        if u.ndim != 2 or u.shape[1] != self.k:
            raise ValueError(f"{self} encodes {self.k} bits per frame; got shape {np.shape(info)}")
        u = u.astype(np.uint8, copy=False)
        if u.size and u.max() > 1:
            raise ValueError("information bits must be 0 or 1")
        z, kb, mb = self.z, self.kb, self.mb
        F = u.shape[0]
        blocks = u.reshape(F, kb, z)
        r = np.arange(z)
        lam = np.zeros((F, mb, z), dtype=np.uint8)
        par = np.zeros((F, mb, z), dtype=np.uint8)
        info_edges = self.cols < kb
        for i, j, s in zip(self._rows[info_edges], self.cols[info_edges], self.shifts[info_edges]):
            lam[:, i] ^= blocks[:, j, (r + s) % z]
        # sum of all block rows: the dual diagonal cancels, the first column sums to P_t
        total = np.bitwise_xor.reduce(lam, axis=1)
        par[:, 0] = total[:, (r - self._p0_shift) % z]
        for i in range(mb - 1):
            acc = lam[:, i].copy()
            s = self.proto[i, kb]
            if s >= 0:
                acc ^= par[:, 0, (r + s) % z]
            if i >= 1:
                acc ^= par[:, i]
            par[:, i + 1] = acc
        return np.concatenate([u, par.reshape(F, self.m)], axis=1)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, llr: np.ndarray, max_iter: int = DEFAULT_MAX_ITER, alpha: float = DEFAULT_ALPHA,
               early_stop: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Layered normalized min-sum decoding in 16-bit fixed point.

        ``llr``: (frames, n) or (n,) log-likelihood ratios log P(b=0)/P(b=1) (positive means 0),
        clipped to +-64 and rounded to multiples of 1/64 (:func:`quantize_llr`). Returns (hard
        decisions (frames, n) uint8, iterations (frames,) int32); an iteration count is negative
        when the syndrome is still not zero after ``max_iter`` (a detected decoding failure).
        Pass many frames per call: the compiled decoder works on ``LANES`` frames at a time."""
        x = np.asarray(llr, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.n:
            raise ValueError(f"{self} decodes {self.n} LLRs per frame; got shape {np.shape(llr)}")
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if max_iter < 0:
            raise ValueError("max_iter must be >= 0")
        xq = quantize_llr(x)
        alpha_q = max(1, int(round(float(alpha) * 32768)))
        bits = np.empty(x.shape, dtype=np.uint8)
        iters = np.empty(x.shape[0], dtype=np.int32)
        if _ext is not None:
            _ext.decode_layered(xq, self.row_ptr, self.cols, self.shifts, self.z, int(max_iter),
                                alpha_q, MSG_MAX, bool(early_stop), bits, iters)
        else:
            self._decode_numpy(xq, int(max_iter), alpha_q, bool(early_stop), bits, iters)
        return bits, iters

    def _decode_numpy(self, xq, max_iter, alpha_q, early_stop, bits, iters) -> None:
        """The fixed-point algorithm of nncodec_ext._ldpc (same integers, same results),
        vectorized over frames and the z rows of a layer."""
        z, F = self.z, xq.shape[0]
        L = xq.reshape(F, self.nb, z).astype(np.int64)
        R = np.zeros((F, len(self.cols), z), dtype=np.int64)
        gather = [(self.cols[e], (np.arange(z) + self.shifts[e]) % z) for e in range(len(self.cols))]
        done = np.zeros(F, dtype=bool)
        used = np.full(F, -max(max_iter, 1), dtype=np.int32)
        out = np.zeros((F, self.n), dtype=np.uint8)

        def zero_syndrome():
            return ~self.syndrome((L < 0).reshape(F, self.n)).any(axis=1)

        def finish(mask, value):
            out[mask] = (L[mask] < 0).reshape(-1, self.n)
            used[mask] = value

        if early_stop:
            ok = zero_syndrome()
            finish(ok, 0)
            done |= ok
        for it in range(max_iter):
            act = np.flatnonzero(~done)
            if not act.size:
                break
            La, Ra = L[act], R[act]
            for i in range(self.mb):
                es = list(range(self.row_ptr[i], self.row_ptr[i + 1]))
                q = np.stack([La[:, gather[e][0], gather[e][1]] - Ra[:, e] for e in es], axis=1)
                a = np.abs(q)
                k1 = np.argmin(a, axis=1)             # first index of the smallest
                srt = np.sort(a, axis=1)
                g1 = (np.minimum(srt[:, 0], MSG_MAX) * alpha_q + 16384) >> 15
                g2 = (np.minimum(srt[:, 1], MSG_MAX) * alpha_q + 16384) >> 15
                odd = (np.sum(q < 0, axis=1) % 2) == 1
                for kk, e in enumerate(es):
                    mag = np.where(k1 == kk, g2, g1)
                    rn = np.where((q[:, kk] < 0) ^ odd, -mag, mag)
                    Ra[:, e] = rn
                    La[:, gather[e][0], gather[e][1]] = np.clip(q[:, kk] + rn, -MSG_MAX, MSG_MAX)
            L[act], R[act] = La, Ra
            if early_stop:
                ok = zero_syndrome() & ~done
                finish(ok, it + 1)
                done |= ok
        rest = ~done
        if rest.any():
            ok = zero_syndrome()
            finish(rest & ok, max_iter)
            finish(rest & ~ok, -max(max_iter, 1))
        bits[:] = out
        iters[:] = used


def quantize_llr(llr: np.ndarray) -> np.ndarray:
    """Float LLRs -> the decoder's int16 fixed point: clipped to +-LLR_CLIP, times LLR_SCALE,
    rounded half to even (NaN counts as 0)."""
    x = np.clip(np.nan_to_num(np.asarray(llr, dtype=np.float32), nan=0.0), -LLR_CLIP, LLR_CLIP)
    return np.ascontiguousarray(np.rint(x * np.float32(LLR_SCALE)).astype(np.int16))


@lru_cache(maxsize=None)
def get_code(n: int, rate: str) -> LDPCCode:
    """A shared, cached LDPCCode."""
    return LDPCCode(n, rate)
