"""Analog transmission schemes: one frozen dataclass, a table of named presets, and validation.

A scheme says how a float tensor becomes real channel values (mapping, sign protection,
adaptive mapping, repetition / adaptive redundancy, or the Shannon-Kotelnikov spiral), what the
receiver does (``ml``, ``mmse``, ``mmse_pb``) and at which rate side information is sent.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Union

from ..errors import NNCodecError

__all__ = ["AnalogConfigError", "TensorAllocation", "AnalogScheme", "SCHEMES", "get_scheme",
           "RECEIVERS", "MAPPINGS", "EXPANSIONS"]

RECEIVERS = ("ml", "mmse", "mmse_pb")
MAPPINGS = ("standard", "linear")
EXPANSIONS = ("repeat", "sk")


class AnalogConfigError(NNCodecError, ValueError):
    """A bad argument to the analog path: unknown scheme or option, a value out of range, or a
    combination of options that does not go together."""


@dataclass(frozen=True)
class TensorAllocation:
    """Per-tensor share of the resources (from :func:`nncodec.analog.allocate_by_sensitivity`).

    ``power``: relative average energy per real channel dimension (the transmitter renormalizes
    all tensors together to unit average symbol energy). ``repeat``: copies of every weight of the
    tensor (repetition with MRC), replacing the scheme's ``rho`` for ``expansion="repeat"``.
    """
    power: float = 1.0
    repeat: int = 1

    def __post_init__(self):
        if not (math.isfinite(self.power) and self.power > 0):
            raise AnalogConfigError(f"allocation power must be a positive finite number, got {self.power!r}")
        if int(self.repeat) != self.repeat or self.repeat < 1:
            raise AnalogConfigError(f"allocation repeat must be an integer >= 1, got {self.repeat!r}")


@dataclass(frozen=True)
class AnalogScheme:
    """How weights are mapped to the channel and estimated at the receiver.

    Fields (see the package docstring for the formulas):

    - ``receiver``: ``"ml"`` (the unscaled received value itself; projected onto the group's known
      range for the ``linear`` mapping), ``"mmse"`` (Gaussian prior from the sample mean and
      variance), ``"mmse_pb"`` (seed 000's denoiser with compensators lambda, beta).
    - ``mapping``: ``"standard"`` (subtract the sample mean, divide by the sample std) or
      ``"linear"`` (seed 002, eqs. 1-2: scale alpha and shift beta map the group's range onto
      [-1, 1]). Either way the transmitter then sets the tensor's average energy per real
      dimension (``snr_db`` axis) or its peak to 1 (``noise_std`` storage axis).
    - ``rho``: real channel dimensions per weight before adaptive redundancy (1 = two weights per
      complex channel use); ``expansion`` says how rho > 1 is used: ``"repeat"`` (copies, MRC) or
      ``"sk"`` (the 2:1 double spiral, rho must be 2).
    - ``sign_protection``: send |w| in analog, the signs as digital side bits (seed 002).
    - ``adaptive_map``: two magnitude groups (|w| < t and |w| >= t), each with its own scale and
      shift, so small weights get a larger scale (needs sign protection). ``map_threshold``: a
      quantile of |w| in (0, 1), or ``"mse"`` (per tensor, the t that minimizes the weight MSE
      of the two-range mapping under equal noise per cell).
    - ``adaptive_redundancy``: the ``N_large`` largest |w| of the whole model are sent
      ``r_large`` times, the others ``r_small`` times, with N_large the largest count that keeps
      r_avg = (r_small N_small + r_large N_large) / N within ``r_avg`` (seed 002).
    - ``side_rate``: information bits per complex channel use at which side values (scales,
      shifts, priors, signs, group masks, integer tensors) are sent digitally, assumed error-free.
    - ``sk_prior``: prior of the spiral's MMSE decoder, ``"empirical"`` (a 64-bin histogram of
      the standardized weights, charged as side info) or ``"gaussian"``.
    - ``sk_gamma``: fixed spiral frequency; None designs it for the design SNR.
    - ``sk_stretch``: ``"linear"`` (seed 000: radius and angle grow linearly with |u|) or
      ``"sqrt"`` (radius k sqrt|u|: the arc length grows linearly with |u|, so every weight gets
      the same stretch; better above about 10 dB, worse below).
    - ``clip``: for the ``linear`` mapping, project estimates onto the group's range (known to
      the receiver from the side info).
    - ``allocation``: tensor name -> :class:`TensorAllocation` (unequal protection); tensors not
      named get power 1 and the scheme's repetition.
    - ``params``: default receiver parameters (``{"lambda": .., "beta": ..}`` for mmse_pb).
    """
    name: str = "custom"
    receiver: str = "ml"
    mapping: str = "standard"
    rho: int = 1
    expansion: str = "repeat"
    sign_protection: bool = False
    adaptive_map: bool = False
    map_threshold: Union[float, str] = "mse"
    adaptive_redundancy: bool = False
    r_small: int = 1
    r_large: int = 10
    r_avg: float = 1.006
    side_rate: float = 1.0
    sk_prior: str = "empirical"
    sk_gamma: Optional[float] = None
    sk_stretch: str = "linear"
    clip: bool = True
    allocation: Optional[Mapping[str, TensorAllocation]] = None
    params: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        _validate(self)

    def replace(self, **overrides: Any) -> "AnalogScheme":
        return _replace(self, overrides)

    def describe(self) -> Dict[str, Any]:
        """JSON-friendly summary (allocation abbreviated to its size)."""
        d = dataclasses.asdict(self)
        if self.allocation is not None:
            d["allocation"] = {k: {"power": v.power, "repeat": v.repeat}
                               for k, v in self.allocation.items()}
        d["params"] = dict(self.params)
        return d


def _validate(s: AnalogScheme) -> None:
    def bad(msg):
        raise AnalogConfigError(f"scheme {s.name!r}: {msg}")

    if s.receiver not in RECEIVERS:
        bad(f"receiver must be one of {RECEIVERS}, got {s.receiver!r}")
    if s.mapping not in MAPPINGS:
        bad(f"mapping must be one of {MAPPINGS}, got {s.mapping!r}")
    if s.expansion not in EXPANSIONS:
        bad(f"expansion must be one of {EXPANSIONS}, got {s.expansion!r}")
    if not isinstance(s.rho, int) or isinstance(s.rho, bool) or s.rho < 1:
        bad(f"rho must be an integer >= 1, got {s.rho!r}")
    if s.expansion == "sk":
        if s.rho != 2:
            bad("the Shannon-Kotelnikov spiral is a 2:1 map: rho must be 2")
        if s.mapping != "standard" or s.sign_protection or s.adaptive_map or s.adaptive_redundancy:
            bad("the spiral works on standardized weights: use mapping='standard' without sign "
                "protection, adaptive mapping or adaptive redundancy")
        if s.receiver == "mmse_pb":
            bad("the spiral has ML and MMSE decoders only (mmse_pb is for the linear paths)")
        if s.allocation is not None and any(a.repeat != 1 for a in s.allocation.values()):
            bad("per-tensor repetition does not combine with the spiral (use power allocation)")
    if s.sk_prior not in ("empirical", "gaussian"):
        bad(f"sk_prior must be 'empirical' or 'gaussian', got {s.sk_prior!r}")
    if s.sk_stretch not in ("linear", "sqrt"):
        bad(f"sk_stretch must be 'linear' or 'sqrt', got {s.sk_stretch!r}")
    if s.sk_gamma is not None and not (math.isfinite(s.sk_gamma) and s.sk_gamma > 0):
        bad(f"sk_gamma must be a positive number, got {s.sk_gamma!r}")
    if s.adaptive_map and not s.sign_protection:
        bad("adaptive mapping works on magnitudes: it needs sign_protection=True")
    if isinstance(s.map_threshold, str):
        if s.map_threshold != "mse":
            bad(f"map_threshold must be 'mse' or a quantile in (0, 1), got {s.map_threshold!r}")
    elif not (0.0 < float(s.map_threshold) < 1.0):
        bad(f"map_threshold quantile must lie in (0, 1), got {s.map_threshold!r}")
    if s.adaptive_redundancy:
        if s.rho != 1:
            bad("adaptive redundancy sets the repetitions itself: use rho=1")
        if not (isinstance(s.r_small, int) and isinstance(s.r_large, int)
                and 1 <= s.r_small <= s.r_large):
            bad(f"need integers 1 <= r_small <= r_large, got {s.r_small!r}, {s.r_large!r}")
        if not (math.isfinite(s.r_avg) and s.r_avg >= s.r_small):
            bad(f"the budget r_avg={s.r_avg!r} must be >= r_small={s.r_small}")
    if not (math.isfinite(s.side_rate) and s.side_rate > 0):
        bad(f"side_rate must be a positive number of bits per channel use, got {s.side_rate!r}")
    if s.allocation is not None:
        for k, v in s.allocation.items():
            if not isinstance(v, TensorAllocation):
                bad(f"allocation[{k!r}] must be a TensorAllocation, got {type(v).__name__}")
    unknown = set(s.params) - {"lambda", "beta"}
    if unknown:
        bad(f"unknown receiver parameters {sorted(unknown)} (known: lambda, beta)")


def _replace(s: AnalogScheme, overrides: Mapping[str, Any]) -> AnalogScheme:
    names = {f.name for f in dataclasses.fields(AnalogScheme)}
    unknown = set(overrides) - names
    if unknown:
        raise AnalogConfigError(f"unknown scheme option(s) {sorted(unknown)}; known: {sorted(names)}")
    return dataclasses.replace(s, **overrides)


_STD = dict(mapping="standard")
_SEED002 = dict(mapping="linear", receiver="ml")

SCHEMES: Dict[str, AnalogScheme] = {
    # rho = 1: two real weights per complex channel use (seed 000's receivers)
    "ml": AnalogScheme(name="ml", receiver="ml", **_STD),
    "mmse": AnalogScheme(name="mmse", receiver="mmse", **_STD),
    "mmse_pb": AnalogScheme(name="mmse_pb", receiver="mmse_pb", **_STD),
    # rho = 2: one weight per complex channel use
    "rep2-ml": AnalogScheme(name="rep2-ml", receiver="ml", rho=2, expansion="repeat", **_STD),
    "rep2-mmse": AnalogScheme(name="rep2-mmse", receiver="mmse", rho=2, expansion="repeat", **_STD),
    "rep2-mmse_pb": AnalogScheme(name="rep2-mmse_pb", receiver="mmse_pb", rho=2, expansion="repeat",
                                 **_STD),
    "sk2-ml": AnalogScheme(name="sk2-ml", receiver="ml", rho=2, expansion="sk", **_STD),
    "sk2-mmse": AnalogScheme(name="sk2-mmse", receiver="mmse", rho=2, expansion="sk", **_STD),
    # seed 002's table, cumulative protections, rho = 1 (plus side bits and r_avg <= 1.006)
    "scaled": AnalogScheme(name="scaled", **_SEED002),
    "sign": AnalogScheme(name="sign", sign_protection=True, **_SEED002),
    "sign+adaptive-map": AnalogScheme(name="sign+adaptive-map", sign_protection=True,
                                      adaptive_map=True, **_SEED002),
    "sign+adaptive-map+adaptive-red": AnalogScheme(
        name="sign+adaptive-map+adaptive-red", sign_protection=True, adaptive_map=True,
        adaptive_redundancy=True, r_small=1, r_large=10, r_avg=1.006, **_SEED002),
}


def get_scheme(name: Union[str, AnalogScheme], **overrides: Any) -> AnalogScheme:
    """The preset ``name`` (or a given scheme) with ``overrides`` applied, e.g.
    ``get_scheme("mmse", side_rate=2.0)``. Unknown names and options raise AnalogConfigError."""
    if isinstance(name, AnalogScheme):
        base = name
    else:
        if name not in SCHEMES:
            raise AnalogConfigError(f"unknown analog scheme {name!r}; known: {', '.join(SCHEMES)}")
        base = SCHEMES[name]
    return _replace(base, overrides) if overrides else base
