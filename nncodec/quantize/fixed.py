"""Fixed-point quantization <IL, FL> (Gupta et al. 2015, "Deep learning with limited
numerical precision"): word length WL = IL + FL bits, two's complement, resolution
eps = 2^-FL, range [-2^(IL-1), 2^(IL-1) - eps].

    level = clip(round(w * 2^FL), -2^(WL-1), 2^(WL-1) - 1)     (saturation)
    value = level * 2^-FL

round is round-to-nearest (ties upward: floor(x + 1/2)) or stochastic rounding,
floor(x + u) with u uniform in [0, 1): rounds up with probability frac(x), so the
result is unbiased; u comes from a generator seeded with (seed, CRC-32 of the
tensor name), so the levels are deterministic.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

ROUNDINGS = ("nearest", "stochastic")
MAX_WORD = 32  # levels are int32
FL_RANGE = (-1074, 1074)  # 2^-FL stays a finite, non-zero binary64


def check(il: int, fl: int, rounding: str = "nearest") -> None:
    if not isinstance(il, (int, np.integer)) or not isinstance(fl, (int, np.integer)) or isinstance(il, bool) \
            or isinstance(fl, bool):
        raise ValueError(f"il and fl must be integers, got {il!r}, {fl!r}")
    if not 1 <= il + fl <= MAX_WORD:
        raise ValueError(f"word length il + fl must be 1..{MAX_WORD}, got {il + fl}")
    if not FL_RANGE[0] <= fl <= FL_RANGE[1]:
        raise ValueError(f"fl must be in {FL_RANGE[0]}..{FL_RANGE[1]}, got {fl}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")


def integer_bits_for(w: np.ndarray) -> int:
    """The smallest IL whose range holds max|w| without saturation: max|w| < 2^(IL-1)."""
    top = float(np.max(np.abs(w))) if w.size else 0.0
    if top == 0.0:
        return 1
    _, e = math.frexp(top)  # top = m * 2^e, 0.5 <= m < 1, so top < 2^e
    return e + 1


def rng_for(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def quantize(w, il: int, fl: int, rounding: str = "nearest", *, seed: int = 0, name: str = "") -> np.ndarray:
    """Levels (int32, the shape of ``w``) of fixed-point <il, fl> quantization with saturation."""
    check(il, fl, rounding)
    x = np.asarray(w, dtype=np.float64) * math.ldexp(1.0, fl)  # exact: a power of two
    if rounding == "nearest":
        q = np.floor(x + 0.5)
    else:
        q = np.floor(x + rng_for(seed, name).random(x.shape))
    wl = il + fl
    np.clip(q, -(2.0 ** (wl - 1)), 2.0 ** (wl - 1) - 1, out=q)
    return q.astype(np.int32)


def dequantize(levels, fl: int) -> np.ndarray:
    return np.asarray(levels, dtype=np.float64) * math.ldexp(1.0, -fl)
