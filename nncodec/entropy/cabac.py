"""The CABAC level coder: parameter choice, stream header, validation.

A coded stream ("cabac payload", version 1) is::

    u8      version            = 1
    u8      K                  number of "|q| > k" flags, 0..64
    u8      E                  Exp-Golomb order of the remainder, 0..31
    uvarint row_length         0 = no previous-row context
    ...     arithmetic-coded body (see nncodec_ext/_cabac.pyx)

The element count is not stored: the caller (the container) knows the shape
and declares it when decoding, and nothing larger than that is allocated.

The compiled coder in ``nncodec_ext._cabac`` is used unless the environment
variable ``NNCODEC_PURE_PYTHON=1`` selects the pure-Python twin in
``cabac_ref``; both write identical bytes.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import FormatError, LimitError, TruncatedError
from ..varint import decode_uvarint, encode_uvarint
from . import cabac_ref

STREAM_VERSION = 1
MAX_K = cabac_ref.MAX_K
MAX_EG_ORDER = cabac_ref.MAX_EG_ORDER
DEFAULT_MAX_K = 64
TAIL_FRACTION_INV = 64  # K leaves at most 1/64 of the non-zero levels to the Exp-Golomb tail

_STATUS_MESSAGES = {
    1: (TruncatedError, "coded levels run past the end of the data (truncated stream)"),
    2: (FormatError, "bytes left over after the last level (corrupt stream or wrong count)"),
    3: (FormatError, "Exp-Golomb escape longer than any valid level (corrupt stream)"),
    4: (FormatError, "decoded level does not fit in int32 (corrupt stream)"),
    5: (FormatError, "arithmetic decoder ended in an impossible state (corrupt stream)"),
    6: (MemoryError, "out of memory"),
}

try:  # the compiled coder; the package still works (slowly) without it
    from nncodec_ext import _cabac as _compiled
except ImportError as exc:  # pragma: no cover - only on a broken install
    _compiled = None
    _import_error = exc


def pure_python_selected() -> bool:
    return os.environ.get("NNCODEC_PURE_PYTHON", "") not in ("", "0")


def implementation():
    """The module doing the coding: compiled unless NNCODEC_PURE_PYTHON=1."""
    if pure_python_selected():
        return cabac_ref
    if _compiled is None:
        warnings.warn(
            f"nncodec's compiled coder is unavailable ({_import_error}); using the slow "
            "pure-Python coder. Reinstall with `pip install .` to build it.",
            RuntimeWarning,
            stacklevel=3,
        )
        return cabac_ref
    return _compiled


def _as_levels(levels) -> np.ndarray:
    arr = np.asarray(levels)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"levels must be integers, got dtype {arr.dtype}")
    if arr.size and arr.dtype != np.int32:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -(2**31) or hi > 2**31 - 1:
            raise ValueError("levels must fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32).reshape(-1)


def choose_k(levels, max_k: int = DEFAULT_MAX_K) -> int:
    """K, the number of greater-than flags: the smallest k such that at most
    1/64 of the non-zero levels exceed k, between 1 and ``max_k`` (every flag
    is a bin to code, so the cap bounds the work per level). The adaptive
    flags track the distribution far better than the Exp-Golomb tail, and a
    thin tail adds few bins, so K covers all but the far tail."""
    if not 0 <= max_k <= MAX_K:
        raise ValueError(f"max_k must be in 0..{MAX_K}")
    hist = implementation().magnitude_histogram(_as_levels(levels), max_k)
    nonzero = int(hist[1:].sum())
    if nonzero == 0 or max_k == 0:
        return min(1, max_k)
    above = nonzero - np.cumsum(hist[1:])  # above[k - 1] = number of levels with |q| > k
    ok = np.nonzero(above * TAIL_FRACTION_INV <= nonzero)[0]
    K = int(ok[0]) + 1 if ok.size else max_k
    return max(1, min(K, max_k))


def _eg_cost_matrix() -> np.ndarray:
    """Expected bits of a remainder of bit length b (columns, 0..33) at Exp-Golomb
    order e (rows, 0..MAX_EG_ORDER); see ``choose_eg_order``."""
    b = np.arange(34, dtype=np.float64)[None, :]
    e = np.arange(MAX_EG_ORDER + 1, dtype=np.float64)[:, None]
    p = np.where(b <= e, 0.0, np.where(b == e + 1, 1.0, b - 1.0 - e + np.exp2(e + 1.0 - b)))
    return 2.0 * p + 1.0 + e


_EG_COST = _eg_cost_matrix()


def choose_eg_order(levels, K: int) -> int:
    """The Exp-Golomb order expected to spend the fewest bypass bits on the
    remainders r = |q| - K - 1 of the levels above K (smallest order on ties).

    Works from a histogram of bit lengths b of r: order e spends 2p + 1 + e
    bits, with prefix length p = 0 if b <= e, 1 if b = e + 1, and otherwise
    b - 1 - e, plus 1 for the fraction (taken as 2**(e + 1 - b)) of the
    class where r + 2**e carries into bit b.
    """
    hist = implementation().remainder_histogram(_as_levels(levels), K)
    if not hist.any():
        return 0
    return int(np.argmin(_EG_COST @ hist.astype(np.float64)))


def choose_params(levels, max_k: int = DEFAULT_MAX_K) -> tuple[int, int]:
    """(K, Exp-Golomb order) chosen from the data."""
    K = choose_k(levels, max_k)
    return K, choose_eg_order(levels, K)


def _header(K: int, eg_k: int, row_length: int) -> bytes:
    return bytes((STREAM_VERSION, K, eg_k)) + encode_uvarint(row_length)


def _resolve(lv, row_length, K, eg_order):
    row_length = 0 if row_length is None else int(row_length)
    if row_length < 0:
        raise ValueError("row_length must be >= 0")
    if row_length >= lv.size:
        row_length = 0  # a single row has no previous row
    if K is None:
        K = choose_k(lv)
    if not 0 <= K <= MAX_K:
        raise ValueError(f"K must be in 0..{MAX_K}, got {K}")
    if eg_order is None:
        eg_order = choose_eg_order(lv, K)
    if not 0 <= eg_order <= MAX_EG_ORDER:
        raise ValueError(f"eg_order must be in 0..{MAX_EG_ORDER}, got {eg_order}")
    return row_length, int(K), int(eg_order)


def encode(levels, *, row_length: int | None = 0, K: int | None = None,
           eg_order: int | None = None) -> bytes:
    """Code integer levels (any shape, read in C order) into a cabac payload.

    ``row_length``: length of a row (for a weight of shape (out, ...), the
    product of the other dimensions); the level one row up is used as
    context. ``K`` and ``eg_order`` are chosen from the data unless given.
    """
    lv = _as_levels(levels)
    row_length, K, eg_order = _resolve(lv, row_length, K, eg_order)
    body = implementation().encode(lv, K, eg_order, row_length)
    return _header(K, eg_order, row_length) + body


def parse_header(data) -> tuple[int, int, int, int]:
    """Returns (K, eg_order, row_length, offset of the body)."""
    if len(data) < 3:
        raise TruncatedError("cabac payload shorter than its header")
    version, K, eg_k = data[0], data[1], data[2]
    if version != STREAM_VERSION:
        raise FormatError(f"unknown cabac payload version {version}")
    if K > MAX_K:
        raise FormatError(f"cabac payload declares K={K} > {MAX_K}")
    if eg_k > MAX_EG_ORDER:
        raise FormatError(f"cabac payload declares Exp-Golomb order {eg_k} > {MAX_EG_ORDER}")
    row_length, pos = decode_uvarint(data, 3)
    if row_length > 2**62:
        raise LimitError("cabac payload row length is out of range")
    return K, eg_k, row_length, pos


def decode(data, count: int) -> np.ndarray:
    """Decode exactly ``count`` levels; returns a 1-D int32 array.

    Raises FormatError (or a subclass) for any data that is not a valid
    payload of ``count`` levels that this coder wrote. The payload carries no
    checksum of its own: the container's CRC guards it.
    """
    count = int(count)
    if count < 0:
        raise ValueError("count must be >= 0")
    buf = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    K, eg_k, row_length, pos = parse_header(buf)
    body = np.frombuffer(buf, dtype=np.uint8, offset=pos)
    out = np.empty(count, dtype=np.int32)
    status = implementation().decode_into(body, out, K, eg_k, row_length)
    if status:
        exc_type, message = _STATUS_MESSAGES.get(status, (FormatError, f"decoder status {status}"))
        raise exc_type(message)
    return out


def cost_bits(levels, *, row_length: int | None = 0, K: int | None = None,
              eg_order: int | None = None, exact: bool = False) -> float:
    """Bits the coded body would take under the coder's adaptive model.

    Nothing is written. ``exact=False`` uses a lookup table (within 0.2%).
    """
    lv = _as_levels(levels)
    row_length, K, eg_order = _resolve(lv, row_length, K, eg_order)
    bits, _, _ = implementation().cost(lv, K, eg_order, row_length, exact)
    return float(bits)


def analyze(levels, *, row_length: int | None = 0, K: int | None = None,
            eg_order: int | None = None) -> dict:
    """Parameters and bin statistics of coding ``levels`` (for benchmarks)."""
    lv = _as_levels(levels)
    row_length, K, eg_order = _resolve(lv, row_length, K, eg_order)
    bits, ctx_bins, bypass_bins = implementation().cost(lv, K, eg_order, row_length, True)
    return {
        "K": K,
        "eg_order": eg_order,
        "row_length": row_length,
        "context_bins": int(ctx_bins),
        "bypass_bins": int(bypass_bins),
        "ideal_bits": float(bits),
        "header_bytes": len(_header(K, eg_order, row_length)),
    }
