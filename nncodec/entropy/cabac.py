"""The CABAC level coder: parameter choice, stream header, validation.

A coded stream ("cabac payload", version 2; formats/cabac-v1.md) is::

    u8      version            = 2
    u8      K | E << 3         K: number of "|q| > k" flags, 0..7; E: Exp-Golomb
                               order of the remainder classes, 0..31
    u8      (F - 1) | (S - 4) << 3 | init << 6 | dq << 7
                               F, S: fast (1..8) and slow (4..11) adaptation shifts;
                               init: 0 contexts start at P = 1/2, 1 from the prior
                               tables; dq: 1 for the levels of a dependent quantizer
                               (sig and gt contexts by the quantizer's state)
    uvarint row_length         0 = no previous-row context
    ...     arithmetic-coded body (see nncodec_ext/_cabac.pyx)

The element count is not stored: the caller (the container) knows the shape
and declares it when decoding, and nothing larger than that is allocated.

K and E are chosen per tensor from counted bin frequencies, the rates and init
by trying candidates with the coder's cost mode, all in one pass (on a sample of
rows for large tensors); see ``choose_params``.

Levels of a ``dq`` stage are coded with ``dq=True`` (the flag in the header):
``encode`` sets it by itself for the arrays ``nncodec.quantize.rdq.rd_quantize``
returns for dependent quantization (``DQLevels``, an ndarray subclass), so a
caller that passes those levels on unchanged needs no extra argument.

The compiled coder in ``nncodec_ext._cabac`` is used unless the environment
variable ``NNCODEC_PURE_PYTHON=1`` selects the pure-Python twin in
``cabac_ref``; both write identical bytes.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import FormatError, LimitError, TruncatedError, VersionError
from ..varint import decode_uvarint, encode_uvarint
from . import cabac_ref

STREAM_VERSION = 2
MAX_K = cabac_ref.MAX_K
MAX_EG_ORDER = cabac_ref.MAX_EG_ORDER
FAST_RANGE = (cabac_ref.MIN_FAST, cabac_ref.MAX_FAST)
SLOW_RANGE = (cabac_ref.MIN_SLOW, cabac_ref.MAX_SLOW)
# candidates tried by choose_params
K_CANDIDATES = (0, 1, 2)
RATE_CANDIDATES = ((4, 9), (5, 10), (8, 11), (4, 11))
DEFAULT_RATES = (5, 10)  # for all-zero tensors
SEARCH_SAMPLE = 2048  # tensors with more levels are searched on about this many (whole rows)
INIT_SEARCH_MAX = 2 * SEARCH_SAMPLE  # larger tensors always start from the prior tables
# the learning charge of static_costs per greater-than / prefix context, and per suffix
# context, in bits per log2(bins + 1): fitted so that its choice of K and E codes within
# +-0.03% of a search with the coder itself on the digits CNN and EfficientNet-Lite0
STATIC_PENALTY = 0.5
STATIC_SUFFIX_PENALTY = 0.2

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


class DQLevels(np.ndarray):
    """Levels of a dependent quantizer (``rdq.rd_quantize(..., dq=True)`` returns them as this
    type): ``encode`` codes them with the dq contexts unless told otherwise."""


def mark_dq(levels: np.ndarray) -> "DQLevels":
    """``levels`` viewed as ``DQLevels`` (no copy)."""
    return np.asarray(levels).view(DQLevels)


def _as_levels(levels) -> np.ndarray:
    arr = np.asarray(levels)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"levels must be integers, got dtype {arr.dtype}")
    if arr.size and arr.dtype != np.int32:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -(2**31) or hi > 2**31 - 1:
            raise ValueError("levels must fit in int32")
    return np.ascontiguousarray(arr, dtype=np.int32).reshape(-1)


def _pack_rates(rates) -> int:
    fast, slow = (int(r) for r in rates)
    if not (FAST_RANGE[0] <= fast <= FAST_RANGE[1] and SLOW_RANGE[0] <= slow <= SLOW_RANGE[1]):
        raise ValueError(f"rates must be (fast, slow) shifts with fast in {FAST_RANGE[0]}.."
                         f"{FAST_RANGE[1]} and slow in {SLOW_RANGE[0]}..{SLOW_RANGE[1]}, got {rates!r}")
    return fast | (slow << 4)


def _search_sample(lv: np.ndarray, row_length: int) -> tuple[np.ndarray, int]:
    """The levels the parameter search codes: all of them for small tensors,
    else about SEARCH_SAMPLE levels in whole rows spread over the tensor."""
    n = lv.size
    if n <= 2 * SEARCH_SAMPLE:
        return lv, row_length
    if 0 < row_length <= SEARCH_SAMPLE // 2:
        rows = n // row_length
        take = max(2, SEARCH_SAMPLE // row_length)
        idx = (np.arange(take, dtype=np.int64) * rows) // take
        m = lv[: rows * row_length].reshape(rows, row_length)[idx]
        return np.ascontiguousarray(m.reshape(-1)), row_length
    # very long rows (or none): four chunks, without the previous-row context
    chunk = SEARCH_SAMPLE // 4
    starts = (np.arange(4, dtype=np.int64) * (n - chunk)) // 3
    return np.concatenate([lv[s:s + chunk] for s in starts]), 0


def choose_params(levels, row_length: int = 0, K: int | None = None,
                  eg_order: int | None = None, rates=None,
                  init: int | None = None, dq: bool = False) -> tuple[int, int, tuple[int, int], int]:
    """(K, Exp-Golomb order, (fast, slow) rates, init) for coding ``levels`` (with the dq
    contexts if ``dq``); the parameters not given are chosen from the data, on a sample
    of rows for large tensors:

    - K and E by ``static_costs``: an estimate of the magnitude bins' cost from their
      counted frequencies, with a per-context learning charge (no coding pass);
    - then the rates (and, for tensors of at most ``INIT_SEARCH_MAX`` levels, init 0 or
      1) by the coder's cost mode, all candidates in one pass (``cost_multi``): the
      cheapest wins, the first listed on a tie.
    """
    lv = _as_levels(levels)
    impl = implementation()
    if K is not None and eg_order is not None and rates is not None and init is not None:
        return int(K), int(eg_order), tuple(rates), int(init)
    if not lv.any():
        return (1 if K is None else int(K), 0 if eg_order is None else int(eg_order),
                DEFAULT_RATES if rates is None else tuple(rates), 0 if init is None else int(init))
    sample, srow = _search_sample(lv, row_length)
    if srow >= sample.size:
        srow = 0
    ks = K_CANDIDATES if K is None else (int(K),)
    if eg_order is None:
        # the best order sits near bit_length(floor(mean non-zero magnitude)) - 2
        mags = np.abs(sample.astype(np.int64))
        nz = int(np.count_nonzero(mags))
        ec = max(0, (int(mags.sum()) // nz).bit_length() - 2) if nz else 0
        es = tuple(e for e in (ec, ec + 1) if e <= MAX_EG_ORDER)
    else:
        es = (int(eg_order),)
    if len(ks) * len(es) > 1:
        pairs = [(kk, ee) for kk in ks for ee in es]
        est = impl.static_costs(sample, [kk for kk, _ in pairs], [ee for _, ee in pairs],
                                STATIC_PENALTY, STATIC_SUFFIX_PENALTY)
        k, e = pairs[min(range(len(pairs)), key=est.__getitem__)]
    else:
        k, e = ks[0], es[0]
    rate_list = RATE_CANDIDATES if rates is None else (tuple(rates),)
    if init is not None:
        inits = (int(init),)
    else:
        inits = (1, 0) if lv.size <= INIT_SEARCH_MAX else (1,)
    combos = [(tuple(r), i) for i in inits for r in rate_list]
    if len(combos) == 1:
        r, i = combos[0]
    else:
        costs = impl.cost_multi(sample, k, e, srow, [r[0] | (r[1] << 4) for r, _ in combos],
                                [i for _, i in combos], int(bool(dq)))
        r, i = combos[min(range(len(combos)), key=costs.__getitem__)]
    return int(k), int(e), tuple(r), int(i)


def _header(K: int, eg_k: int, rates: int, init: int, row_length: int, dq: int = 0) -> bytes:
    fast, slow = rates & 15, rates >> 4
    return (bytes((STREAM_VERSION, K | (eg_k << 3),
                   (fast - 1) | ((slow - 4) << 3) | (init << 6) | (int(dq) << 7)))
            + encode_uvarint(row_length))


def _dq_flag(levels, dq) -> int:
    if dq is None:
        return int(isinstance(levels, DQLevels))
    return int(bool(dq))


def _resolve(lv, row_length, K, eg_order, rates, init, dq=0):
    row_length = 0 if row_length is None else int(row_length)
    if row_length < 0:
        raise ValueError("row_length must be >= 0")
    if row_length >= lv.size:
        row_length = 0  # a single row has no previous row
    if K is not None and not 0 <= K <= MAX_K:
        raise ValueError(f"K must be in 0..{MAX_K}, got {K}")
    if eg_order is not None and not 0 <= eg_order <= MAX_EG_ORDER:
        raise ValueError(f"eg_order must be in 0..{MAX_EG_ORDER}, got {eg_order}")
    if rates is not None:
        _pack_rates(rates)
    if init is not None and init not in (0, 1):
        raise ValueError(f"init must be 0 or 1, got {init}")
    K, eg_order, rates, init = choose_params(lv, row_length, K, eg_order, rates, init, dq)
    return row_length, K, eg_order, _pack_rates(rates), init


def encode(levels, *, row_length: int | None = 0, K: int | None = None,
           eg_order: int | None = None, rates=None, init: int | None = None,
           dq: bool | None = None) -> bytes:
    """Code integer levels (any shape, read in C order) into a cabac payload.

    ``row_length``: length of a row (for a weight of shape (out, ...), the
    product of the other dimensions); the level one row up is used as
    context. ``K``, ``eg_order``, ``rates`` ((fast, slow) adaptation shifts)
    and ``init`` (0: contexts start at P = 1/2, 1: from the prior tables)
    are chosen from the data unless given. ``dq``: the levels come from a
    dependent quantizer (a ``dq`` stage), coded with contexts by its state;
    None: True for ``DQLevels`` arrays, else False.
    """
    flag = _dq_flag(levels, dq)
    lv = _as_levels(levels)
    row_length, K, eg_order, packed, init = _resolve(lv, row_length, K, eg_order, rates, init, flag)
    body = implementation().encode(lv, K, eg_order, row_length, packed, init, flag)
    return _header(K, eg_order, packed, init, row_length, flag) + body


def parse_header(data) -> tuple[int, int, int, int]:
    """Returns (K, eg_order, row_length, offset of the body); see
    ``parse_header_rates`` for the adaptation rates."""
    K, eg_k, _, _, row_length, pos = parse_header_full(data)
    return K, eg_k, row_length, pos


def parse_header_full(data) -> tuple[int, int, tuple[int, int], int, int, int]:
    """Returns (K, eg_order, (fast, slow) rates, init, row_length, offset of the body);
    ``parse_header_dq`` also gives the dq flag."""
    K, eg_k, rates, init, _, row_length, pos = parse_header_dq(data)
    return K, eg_k, rates, init, row_length, pos


def parse_header_dq(data) -> tuple[int, int, tuple[int, int], int, int, int, int]:
    """Returns (K, eg_order, (fast, slow) rates, init, dq, row_length, offset of the body)."""
    if len(data) < 1:
        raise TruncatedError("cabac payload shorter than its header")
    version = data[0]
    if version != STREAM_VERSION:
        raise VersionError(f"unknown cabac payload version {version} (this nncodec reads "
                           f"version {STREAM_VERSION})")
    if len(data) < 3:
        raise TruncatedError("cabac payload shorter than its header")
    K, eg_k = data[1] & 7, data[1] >> 3
    fast, slow, init = (data[2] & 7) + 1, ((data[2] >> 3) & 7) + 4, (data[2] >> 6) & 1
    dq = data[2] >> 7
    row_length, pos = decode_uvarint(data, 3)
    if row_length > 2**62:
        raise LimitError("cabac payload row length is out of range")
    return K, eg_k, (fast, slow), init, dq, row_length, pos


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
    if len(buf) > 3 and buf[0] == STREAM_VERSION and buf[3] < 0x80:
        # the usual header: 3 bytes and a one-byte row length (parse_header_dq, inlined)
        b1, b2 = buf[1], buf[2]
        K, eg_k, init, dq, row_length, pos = b1 & 7, b1 >> 3, (b2 >> 6) & 1, b2 >> 7, buf[3], 4
        packed = ((b2 & 7) + 1) | ((((b2 >> 3) & 7) + 4) << 4)
    else:
        K, eg_k, rates, init, dq, row_length, pos = parse_header_dq(buf)
        packed = _pack_rates(rates)
    body = np.frombuffer(buf, dtype=np.uint8, offset=pos)
    out = np.empty(count, dtype=np.int32)
    status = implementation().decode_into(body, out, K, eg_k, row_length, packed, init, dq)
    if status:
        exc_type, message = _STATUS_MESSAGES.get(status, (FormatError, f"decoder status {status}"))
        raise exc_type(message)
    return out


def cost_bits(levels, *, row_length: int | None = 0, K: int | None = None,
              eg_order: int | None = None, exact: bool = False, rates=None,
              init: int | None = None, dq: bool | None = None) -> float:
    """Bits the coded body would take under the coder's adaptive model, with
    the parameters ``encode`` would choose (or those given).

    Nothing is written. ``exact=False`` uses a lookup table (within 0.2%). ``dq`` as
    for ``encode``.
    """
    flag = _dq_flag(levels, dq)
    lv = _as_levels(levels)
    row_length, K, eg_order, packed, init = _resolve(lv, row_length, K, eg_order, rates, init, flag)
    bits, _, _ = implementation().cost(lv, K, eg_order, row_length, packed, init, exact, flag)
    return float(bits)


def analyze(levels, *, row_length: int | None = 0, K: int | None = None,
            eg_order: int | None = None, rates=None, init: int | None = None,
            dq: bool | None = None) -> dict:
    """Parameters and bin statistics of coding ``levels`` (for benchmarks)."""
    flag = _dq_flag(levels, dq)
    lv = _as_levels(levels)
    row_length, K, eg_order, packed, init = _resolve(lv, row_length, K, eg_order, rates, init, flag)
    bits, ctx_bins, bypass_bins = implementation().cost(lv, K, eg_order, row_length, packed, init, True, flag)
    return {
        "K": K,
        "eg_order": eg_order,
        "rates": [packed & 15, packed >> 4],
        "init": init,
        "dq": flag,
        "row_length": row_length,
        "context_bins": int(ctx_bins),
        "bypass_bins": int(bypass_bins),
        "ideal_bits": float(bits),
        "header_bytes": len(_header(K, eg_order, packed, init, row_length, flag)),
    }
