"""The digital path as the sweep uses it: compress the model to fit a channel-use budget, send the
``.nnc`` bytes through the LDPC / QAM link, and decode what arrives.

This module is the only place where the sweep talks to ``nncodec.channel`` and the encoder.
It is a thin adapter over what ``nncodec.channel.transmit`` offers today; when
``nncodec.channel.fit_to_budget`` (and a helper returning received tensors) land on main,
:func:`fit_to_budget` and :func:`send` are the two functions to switch over.

Budget. The analog schemes at rho real channel dimensions per weight use rho * N / 2 complex
channel uses for N float weights. The digital scheme gets the same number of complex symbols
B. With MCS (M-QAM, code rate R) and codewords of n bits, one frame (one codeword) takes
n / log2 M symbols and carries ``FrameLayout(k).payload_bytes`` bytes of the container (k = R n
information bits, less the 12 bytes of frame header and CRC-32). So at most
F = floor(B / (n / log2 M)) frames fit, and the compressed model may take F * payload bytes:
that is B * R * log2 M information bits, less framing and the unused part of the last
codeword. The model is quantized with one model-wide target weight SNR t (1-D tensors at
min(60, max(20, t + 20)) dB) and t is the largest that fits, found by bisection.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from ..errors import FormatError

__all__ = ["DigitalPlan", "budget_bytes", "fit_to_budget", "plan", "send", "ON_DAMAGE"]

ON_DAMAGE = ("zeros", "mean")
_T_LO, _T_HI = -10.0, 60.0


def _small_snr(t: float) -> float:
    return min(60.0, max(20.0, t + 20.0))


def budget_bytes(mcs: str, channel_uses: int, block_length: int = 1944) -> tuple[int, int]:
    """(bytes of container that fit in ``channel_uses`` complex symbols, frames)."""
    from ..channel import get_code, get_modulation, parse_mcs
    from ..channel.framing import FrameLayout
    mod_name, rate = parse_mcs(mcs)
    code = get_code(int(block_length), rate)
    syms_per_cw = code.n // get_modulation(mod_name).bits_per_symbol
    frames = int(channel_uses) // syms_per_cw
    return frames * FrameLayout(code.k).payload_bytes, frames


def _encode(sd: Mapping[str, np.ndarray], t: float) -> bytes:
    from ..api import encode
    return encode(sd, target_snr=float(t), small_snr=_small_snr(t))


def fit_to_budget(sd: Mapping[str, np.ndarray], max_bytes: int, *, iters: int = 14):
    """The container of ``sd`` at the largest model-wide target weight SNR whose size is at most
    ``max_bytes``: (bytes, target_snr), or (None, None) when even -10 dB does not fit."""
    best = (None, None)
    lo_data = _encode(sd, _T_LO)
    if len(lo_data) > max_bytes:
        return best
    best = (lo_data, _T_LO)
    hi_data = _encode(sd, _T_HI)
    if len(hi_data) <= max_bytes:
        return hi_data, _T_HI
    lo, hi = _T_LO, _T_HI
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        data = _encode(sd, mid)
        if len(data) <= max_bytes:
            lo, best = mid, (data, mid)
        else:
            hi = mid
    return best


@dataclass
class DigitalPlan:
    """What one digital scheme sends: the compressed model and its budget."""

    mcs: str
    block_length: int
    channel_uses_budget: int
    max_bytes: int
    frames_budget: int
    data: Optional[bytes]
    target_snr: Optional[float]
    decoded: Optional[dict] = field(default=None, repr=False)   # the error-free received model

    @property
    def feasible(self) -> bool:
        return self.data is not None

    @property
    def sha(self) -> Optional[str]:
        return hashlib.sha256(self.data).hexdigest() if self.data is not None else None

    def summary(self) -> dict:
        return {"mcs": self.mcs, "block_length": self.block_length,
                "channel_uses_budget": self.channel_uses_budget, "max_bytes": self.max_bytes,
                "frames_budget": self.frames_budget, "feasible": self.feasible,
                "bytes": len(self.data) if self.data is not None else None,
                "target_snr_db": self.target_snr,
                "small_snr_db": _small_snr(self.target_snr) if self.target_snr is not None else None}


def plan(sd: Mapping[str, np.ndarray], mcs: str, channel_uses: int, block_length: int = 1944) -> DigitalPlan:
    """Compress ``sd`` to fit ``channel_uses`` complex symbols at ``mcs``."""
    from ..api import decode
    max_bytes, frames = budget_bytes(mcs, channel_uses, block_length)
    data, t = fit_to_budget(sd, max_bytes) if frames > 0 else (None, None)
    p = DigitalPlan(mcs, int(block_length), int(channel_uses), max_bytes, frames, data, t)
    if data is not None:
        p.decoded = decode(data)
    return p


def zeros_like(sd: Mapping[str, np.ndarray]) -> dict:
    return {k: np.zeros_like(np.asarray(v)) for k, v in sd.items()}


def send(p: DigitalPlan, channel: str, snr_db: float, seed: int, on_damage: str = "zeros"):
    """One transmission of ``p`` at ``snr_db``: (container bytes or None, info dict). None means
    the container header was lost: no tensor can be located, the receiver has nothing."""
    from ..channel import transmit_nnc
    if on_damage not in ON_DAMAGE:
        raise ValueError(f"on_damage must be one of {', '.join(ON_DAMAGE)}, got {on_damage!r}")
    rep = transmit_nnc(p.data, mcs=p.mcs, snr_db=float(snr_db), channel=channel,
                       block_length=p.block_length, seed=int(seed), on_damage=on_damage)
    link = rep.link
    info = {"frames": link.frames, "frames_lost": link.frames_lost, "fer": link.fer,
            "coded_ber": link.coded_ber, "info_ber": link.info_ber, "channel_uses": link.symbols,
            "header_lost": not rep.header_intact,
            "tensors_damaged": len(rep.damaged) if rep.header_intact else None,
            "bytes": len(p.data)}
    return rep.container, info


def decode_received(container: bytes) -> dict:
    from ..api import decode
    try:
        return decode(container)
    except FormatError:  # pragma: no cover - recover_container only returns checked containers
        return None


def channel_uses_for(sd: Mapping[str, Any], rho: float) -> int:
    """Complex channel uses of an analog scheme at ``rho`` real dimensions per float weight."""
    n = sum(int(np.asarray(v).size) for v in sd.values() if np.asarray(v).dtype.kind == "f")
    return int(math.ceil(rho * n / 2.0))
