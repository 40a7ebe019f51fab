"""Gray-mapped BPSK / QPSK / 16-QAM / 64-QAM with unit average symbol energy, and max-log soft
demapping to LLRs.

    mod = get_modulation("16qam")
    x = mod.modulate(bits)                    # bits (..., multiple of 4) -> complex symbols, E|x|^2 = 1
    llr = mod.demap(y, n0, h)                 # LLR log P(b=0|y)/P(b=1|y), max-log, positive means 0

Labels follow IEEE 802.11 (17.3.5.8): the first half of a symbol's bits select the in-phase
level, the second half the quadrature level, each a Gray-labelled PAM whose level index i
(0 = most negative) carries the label gray(i) = i ^ (i >> 1), most significant bit first. BPSK
sends bit b as 2b - 1 on the in-phase axis. Amplitudes are scaled so that the average symbol
energy Es = E|x|^2 is 1; an SNR given as Es/N0 therefore fixes the noise: E|n|^2 = N0 = 10^(-SNR/10).

Demapping assumes complex baseband y = h x + n with n ~ CN(0, N0) and h known at the receiver
(perfect CSI; h = 1 for AWGN): it equalizes z = y conj(h) / |h|^2, whose in-phase and quadrature
parts carry independent real noise of variance N0 / (2 |h|^2), and computes for each bit
LLR = (|h|^2 / N0) * (min over levels with bit 1 of (z - a)^2  -  min over levels with bit 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Modulation", "get_modulation", "MODULATIONS"]

MODULATIONS = ("bpsk", "qpsk", "16qam", "64qam")
_BITS = {"bpsk": 1, "qpsk": 2, "16qam": 4, "64qam": 6}


def _pam(bits_per_axis: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Gray PAM: (levels in index order, labels[index] as a (L, bits) 0/1 array)."""
    L = 1 << bits_per_axis
    idx = np.arange(L)
    levels = (2 * idx - (L - 1)) * scale
    gray = idx ^ (idx >> 1)
    labels = (gray[:, None] >> np.arange(bits_per_axis - 1, -1, -1)[None, :]) & 1
    return levels.astype(np.float64), labels.astype(np.uint8)


@dataclass(frozen=True)
class Modulation:
    name: str
    bits_per_symbol: int

    @property
    def complex_axes(self) -> bool:
        return self.name != "bpsk"

    @property
    def bits_per_axis(self) -> int:
        return self.bits_per_symbol // 2 if self.complex_axes else 1

    @property
    def pam(self) -> tuple[np.ndarray, np.ndarray]:
        """(levels, labels) of one axis."""
        return _axis_pam(self.name)

    def constellation(self) -> tuple[np.ndarray, np.ndarray]:
        """All points (complex, index = the symbol's bits read as a binary number, first bit most
        significant) and their labels (points x bits_per_symbol)."""
        m = self.bits_per_symbol
        labels = ((np.arange(1 << m)[:, None] >> np.arange(m - 1, -1, -1)[None, :]) & 1).astype(np.uint8)
        return self.modulate(labels.reshape(-1)), labels

    def modulate(self, bits: np.ndarray) -> np.ndarray:
        """Bits (0/1, any shape whose size is a multiple of bits_per_symbol) -> complex128 symbols."""
        b = np.asarray(bits, dtype=np.uint8).reshape(-1)
        m = self.bits_per_symbol
        if b.size % m:
            raise ValueError(f"{self.name} takes bits in groups of {m}; got {b.size} bits")
        levels, _ = self.pam
        if not self.complex_axes:
            return levels[b].astype(np.complex128)
        k = self.bits_per_axis
        g = b.reshape(-1, 2, k)
        w = (1 << np.arange(k - 1, -1, -1)).astype(np.int64)
        gray = g.astype(np.int64) @ w  # (symbols, 2) Gray labels
        index = _gray_to_index(gray, k)
        return levels[index[:, 0]] + 1j * levels[index[:, 1]]

    def demap(self, y: np.ndarray, n0: float, h=None) -> np.ndarray:
        """Max-log LLRs (float32, bits_per_symbol per symbol, in transmit order) of received
        symbols ``y`` given noise power ``n0`` = N0 (E|n|^2) and channel coefficients ``h``
        (scalar or per symbol; None means 1)."""
        y = np.asarray(y, dtype=np.complex128).reshape(-1)
        if not n0 > 0:
            raise ValueError("n0 must be positive")
        if h is None:
            g = np.ones(y.shape)
            z = y
        else:
            hh = np.broadcast_to(np.asarray(h, dtype=np.complex128).reshape(-1) if np.ndim(h) else
                                 np.complex128(h), y.shape)
            g = np.abs(hh) ** 2
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(g > 0, y * np.conj(hh) / np.where(g > 0, g, 1.0), 0.0)
        w = g / n0
        if not self.complex_axes:
            return (self._axis_llr(z.real, w)).astype(np.float32).reshape(-1)
        li = self._axis_llr(z.real, w)
        lq = self._axis_llr(z.imag, w)
        return np.concatenate([li, lq], axis=1).astype(np.float32).reshape(-1)

    def _axis_llr(self, z: np.ndarray, w: np.ndarray) -> np.ndarray:
        levels, labels = self.pam
        d = (z[:, None] - levels[None, :]) ** 2  # (n, L)
        out = np.empty((z.size, labels.shape[1]))
        for j in range(labels.shape[1]):
            one = labels[:, j] == 1
            out[:, j] = d[:, one].min(axis=1) - d[:, ~one].min(axis=1)
        return out * w[:, None]


def _gray_to_index(gray: np.ndarray, k: int) -> np.ndarray:
    idx = gray.copy()
    shift = 1
    while shift < k:
        idx ^= idx >> shift
        shift <<= 1
    return idx


@lru_cache(maxsize=None)
def _axis_pam(name: str):
    if name == "bpsk":
        return _pam(1, 1.0)
    k = _BITS[name] // 2
    L = 1 << k
    # E|x|^2 = 2 * mean(level^2) = 2 * scale^2 * (L^2 - 1) / 3 = 1
    scale = np.sqrt(3.0 / (2.0 * (L * L - 1)))
    return _pam(k, scale)


def get_modulation(name: str) -> Modulation:
    key = str(name).lower().replace("-", "")
    if key not in _BITS:
        raise ValueError(f"modulation must be one of {', '.join(MODULATIONS)}, got {name!r}")
    return Modulation(key, _BITS[key])
