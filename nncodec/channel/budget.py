"""Fit a model into a fixed number of channel uses.

    from nncodec.channel import fit_to_budget, send_nnc
    fit = fit_to_budget(state_dict, channel_uses=80_000, mcs="qpsk-1/2")
    fit.data, fit.settings, fit.nnc_bytes, fit.max_bytes       # the largest .nnc that fits
    rx = send_nnc(fit.data, mcs="qpsk-1/2", snr_db=2.0, channel="awgn", seed=3, on_damage="zeros")
    rx.tensors, rx.stats                                        # received model, link statistics

A channel use is one complex (QAM) or real (BPSK) symbol. An MCS with M-point modulation and code
rate R carries R log2 M coded-information bits per use, but what a ``.nnc`` file actually needs
is counted here exactly as the link sends it (``nncodec.channel.transmit``): the file is cut
into frames of ``k / 8 - 12`` payload bytes (frame index, length and CRC-32 take 12 bytes), and
every frame costs one whole codeword of ``n / log2 M`` channel uses. So a budget of U channel
uses holds ``floor(U log2 M / n)`` frames and at most that many times the payload size in bytes.

``fit_to_budget`` searches one compression setting (``target_snr`` by default, or ``qp``) for
the finest quantization whose ``.nnc`` fits: a higher-rate MCS gets a larger file and so a more
accurate model, and must pay for it with a higher SNR.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import NNCodecError
from .framing import FrameLayout
from .ldpc import get_code
from .modulation import get_modulation

__all__ = ["BudgetError", "BudgetFit", "channel_uses_for", "max_nnc_bytes", "fit_to_budget"]

#: default search ranges of the two knobs (target_snr in dB, qp as in nncodec.pipeline)
TARGET_SNR_RANGE = (0.0, 60.0)
QP_RANGE = (-80, 0)


class BudgetError(NNCodecError, ValueError):
    """The model cannot be made to fit the budget (even at the coarsest setting searched)."""


def _code_and_bps(mcs: str, block_length: int):
    from .transmit import parse_mcs
    mod_name, rate = parse_mcs(mcs)
    return get_code(int(block_length), rate), get_modulation(mod_name).bits_per_symbol


def channel_uses_for(nbytes: int, mcs: str, block_length: int = 1944) -> int:
    """Channel uses (symbols) that sending ``nbytes`` bytes with ``mcs`` takes, framing and
    CRCs included (a whole codeword per frame)."""
    code, bps = _code_and_bps(mcs, block_length)
    return FrameLayout(code.k).count(int(nbytes)) * (code.n // bps)


def max_nnc_bytes(channel_uses: int, mcs: str, block_length: int = 1944) -> int:
    """The largest stream (in bytes) that ``channel_uses`` symbols carry with ``mcs``
    (0 when not even one codeword fits)."""
    code, bps = _code_and_bps(mcs, block_length)
    if channel_uses < 0:
        raise ValueError("channel_uses must be >= 0")
    frames = int(channel_uses) // (code.n // bps)
    return frames * FrameLayout(code.k).payload_bytes


@dataclass
class BudgetFit:
    """What :func:`fit_to_budget` chose."""

    data: bytes                 # the .nnc
    mcs: str
    block_length: int
    budget: int                 # channel uses allowed
    channel_uses: int           # channel uses the .nnc takes (<= budget)
    frames: int
    nnc_bytes: int
    max_bytes: int              # the largest stream the budget holds
    knob: str                   # "target_snr" or "qp"
    value: float                # the knob's value for ``data``
    settings: dict = field(default_factory=dict)   # every keyword given to nncodec.encode
    encodes: int = 0            # encodes the search took
    at_limit: bool = False      # the finest setting in the search range fits already

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "data"}


def fit_to_budget(tensors: Mapping[str, Any], channel_uses: int, mcs: str, *,
                  block_length: int = 1944, knob: str = "target_snr",
                  search_range: Optional[tuple] = None, tol: float = 0.05,
                  **encode_kwargs) -> BudgetFit:
    """Compress ``tensors`` (a state dict, as for ``nncodec.encode``) as finely as a budget of
    ``channel_uses`` symbols sent with ``mcs`` allows.

    ``knob``: "target_snr" (model weight SNR in dB; default search range 0 .. 60) or "qp"
    (integers, default -80 .. 0; larger is coarser). The search is a bisection for the finest
    setting whose ``.nnc`` fits (size grows with target_snr and falls with qp; should a model
    not be exactly monotone, the finest fitting setting seen is returned). ``tol``: the
    bisection stops when the bracket is narrower (dB; qp always to 1). Other keywords
    (``method``, ``prune``, ``backend``, ...) go to ``nncodec.encode`` unchanged.
    Raises :class:`BudgetError` when even the coarsest setting does not fit.
    """
    import nncodec

    if knob not in ("target_snr", "qp"):
        raise ValueError(f"knob must be 'target_snr' or 'qp', got {knob!r}")
    for other in ("target_snr", "qp", "step"):
        if other in encode_kwargs:
            raise ValueError(f"{other!r} is what fit_to_budget searches; do not pass it")
    limit = max_nnc_bytes(channel_uses, mcs, block_length)
    if limit <= 0:
        raise BudgetError(f"{channel_uses} channel uses do not hold one {mcs} codeword")
    lo, hi = search_range if search_range is not None else (TARGET_SNR_RANGE if knob == "target_snr" else QP_RANGE)
    if knob == "qp":
        lo, hi = int(lo), int(hi)
    # fine(v) grows with the file size
    fine = (lambda v: v) if knob == "target_snr" else (lambda v: -v)
    coarse_v, fine_v = (lo, hi) if knob == "target_snr" else (hi, lo)
    count = 0
    best = None

    def size_at(v):
        nonlocal count, best
        count += 1
        data = nncodec.encode(tensors, **{knob: v}, **encode_kwargs)
        if len(data) <= limit and (best is None or fine(v) > fine(best[0])):
            best = (v, data)
        return len(data)

    at_limit = size_at(fine_v) <= limit
    if not at_limit:
        if size_at(coarse_v) > limit:
            raise BudgetError(f"the model does not fit {channel_uses} channel uses with {mcs} "
                              f"({limit} bytes) even at {knob} = {coarse_v:g}")
        a, b = coarse_v, fine_v          # a fits, b does not
        step_tol = 1 if knob == "qp" else float(tol)
        while abs(b - a) > step_tol:
            m = (a + b) / 2.0 if knob == "target_snr" else (a + b) // 2
            if size_at(m) <= limit:
                a = m
            else:
                b = m
    value, data = best
    code, bps = _code_and_bps(mcs, block_length)
    frames = FrameLayout(code.k).count(len(data))
    from .transmit import parse_mcs
    mod_name, rate = parse_mcs(mcs)
    return BudgetFit(data=data, mcs=f"{mod_name}-{rate}", block_length=code.n, budget=int(channel_uses),
                     channel_uses=frames * (code.n // bps), frames=frames, nnc_bytes=len(data),
                     max_bytes=limit, knob=knob, value=float(value),
                     settings={knob: value, **encode_kwargs}, encodes=count, at_limit=at_limit)
