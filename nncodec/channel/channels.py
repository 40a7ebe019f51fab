"""Channels in complex baseband, parametrized by Es/N0 with unit average symbol energy.

``snr_db`` is always Es/N0 in dB, where Es = E|x|^2 = 1 for the constellations of
``nncodec.channel.modulation``; the noise is circularly symmetric complex Gaussian with
E|n|^2 = N0 = 10^(-snr_db/10) (N0/2 per real dimension). Eb/N0 = Es/N0 - 10 log10(R * bits per
symbol).

- ``awgn``: y = x + n.
- ``rayleigh``: y = h x + n with h ~ CN(0, 1) (E|h|^2 = 1, so the average received Es/N0 is
  still ``snr_db``); ``block=None`` draws a new h for every symbol (fast fading), ``block=B``
  keeps h constant over runs of B symbols (block fading; the transmit path uses one block per
  LDPC codeword). The receiver is given h (perfect CSI).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["n0_from_snr", "awgn", "rayleigh", "CHANNELS"]

CHANNELS = ("awgn", "rayleigh", "rayleigh-block")


def n0_from_snr(snr_db: float) -> float:
    """Noise power N0 = E|n|^2 for an Es/N0 of ``snr_db`` dB with Es = 1."""
    return float(10.0 ** (-float(snr_db) / 10.0))


def _noise(rng: np.random.Generator, n: int, n0: float) -> np.ndarray:
    return np.sqrt(n0 / 2.0) * (rng.standard_normal(n) + 1j * rng.standard_normal(n))


def awgn(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """AWGN at Es/N0 = ``snr_db``: returns (y, N0)."""
    x = np.asarray(x, dtype=np.complex128).reshape(-1)
    n0 = n0_from_snr(snr_db)
    return x + _noise(rng, x.size, n0), n0


def rayleigh(x: np.ndarray, snr_db: float, rng: np.random.Generator,
             block: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Rayleigh fading at average Es/N0 = ``snr_db``: returns (y, h per symbol, N0)."""
    x = np.asarray(x, dtype=np.complex128).reshape(-1)
    n0 = n0_from_snr(snr_db)
    if block is None or block <= 1:
        h = np.sqrt(0.5) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    else:
        nb = -(-x.size // block)
        hb = np.sqrt(0.5) * (rng.standard_normal(nb) + 1j * rng.standard_normal(nb))
        h = np.repeat(hb, block)[: x.size]
    return h * x + _noise(rng, x.size, n0), h, n0
