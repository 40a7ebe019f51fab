"""Pure-Python reference of the CABAC level coder in ``nncodec_ext/_cabac.pyx``.

It exists to pin the bitstream down in readable form and to check the
compiled coder against (the two must produce identical bytes). It is slow:
about a microsecond per bin. Select it for the whole package with
``NNCODEC_PURE_PYTHON=1``.

The functions have the same names, arguments and results as the compiled
module: ``encode``, ``decode_into``, ``cost``, ``n_contexts``.
"""
from __future__ import annotations

import math

import numpy as np

RATE_FAST = 8
RATE_SLOW = 11
WARMUP_MAX = 1023  # n at which both shifts have reached their rates
PROB_ONE = 65536
STATE_BITS = 30
STATE_ONE = 1 << STATE_BITS
STATE_INIT = 1 << (STATE_BITS - 1)
RANGE_TOP = 1 << 24
N_SIG_CTX = 18
N_SIGN_CTX = 9
N_GT_CLASSES = 6
MAX_K = 64
MAX_EG_ORDER = 31
MAX_EG_PREFIX = 40

STATUS_OK = 0
STATUS_TRUNCATED = 1
STATUS_TRAILING = 2
STATUS_BAD_ESCAPE = 3
STATUS_OVERFLOW = 4
STATUS_BAD_STATE = 5

_MASK32 = 0xFFFFFFFF
# adaptation shift while a context is young: 1 + floor(log2(n + 1))
_WARMUP_SHIFT = [1 + (n + 1).bit_length() - 1 for n in range(WARMUP_MAX + 1)]
# Initial P(bin = 0) of the gt contexts for each K (30-bit), and the bins a
# prior-initialized context counts as seen: see formats/cabac-v1.md section 5.
GT_PRIOR = [0, 1056964608, 939524096, 805306368, 694116761, 606368549, 536870912, 480988279, 435291115, 397326860, 365336408, 338040241, 314491699, 293978240, 275954714, 259997688, 245773691, 233016771, 221512373, 211085588, 201592454, 192913442, 184948507, 177613290, 170836173, 164555967, 158720090, 153283106, 148205554, 143453003, 138995274, 134805804, 130861124, 127140421, 123625172, 120298838, 117146609, 114155179, 111312564, 108607940, 106031508, 103574373, 101228444, 98986346, 96841339, 94787256, 92818439, 90929692, 89116230, 87373642, 85697857, 84085107, 82531904, 81035010, 79591421, 78198340, 76853163, 75553462, 74296970, 73081570, 71905277, 70766237, 69662706, 68593051, 67555737]
PRIOR_COUNT = 31
_COST_TABLE = [-math.log2((16.0 * i + 8.0) / 65536.0) for i in range(4096)]


def n_contexts(K: int) -> int:
    return N_SIG_CTX + N_SIGN_CTX + K * N_GT_CLASSES


def _check_params(K: int, eg_k: int, row: int) -> None:
    if K < 0 or K > MAX_K:
        raise ValueError(f"K must be in 0..{MAX_K}, got {K}")
    if eg_k < 0 or eg_k > MAX_EG_ORDER:
        raise ValueError(f"Exp-Golomb order must be in 0..{MAX_EG_ORDER}, got {eg_k}")
    if row < 0:
        raise ValueError("row length must be >= 0")


def _sig_ctx(prev: int, prev2: int, above_mag: int) -> int:
    cp = 0 if prev == 0 else (1 if prev < 0 else 2)
    ca = 2 if above_mag > 1 else above_mag
    return (cp * 2 + (prev2 != 0)) * 3 + ca


def _sign_ctx(prev: int, above: int) -> int:
    cp = 0 if prev == 0 else (1 if prev < 0 else 2)
    ca = 0 if above == 0 else (1 if above < 0 else 2)
    return cp * 3 + ca


def _gt_class(act: int, k: int) -> int:
    if act < k:
        return 0
    if act <= 2 * k:
        return 1
    return 2


class _Contexts:
    """Per context: two 30-bit estimates of P(bin = 0) and a bin count."""

    def __init__(self, K: int):
        n = n_contexts(K)
        gt = N_SIG_CTX + N_SIGN_CTX
        self.a = [STATE_INIT] * gt + [GT_PRIOR[K]] * (n - gt)
        self.b = list(self.a)
        self.n = [0] * N_SIG_CTX + [PRIOR_COUNT] * (n - N_SIG_CTX)

    def p0(self, i: int) -> int:
        # mean of the two estimates as a 16-bit probability, forced odd (never 0)
        return ((self.a[i] + self.b[i]) >> (STATE_BITS + 1 - 16)) | 1

    def update(self, i: int, bit: int) -> None:
        # state += (target - state) >> shift, flooring shift of the signed difference
        n = self.n[i]
        w = _WARMUP_SHIFT[n]
        target = 0 if bit else STATE_ONE
        a, b = self.a[i], self.b[i]
        self.a[i] = a + ((target - a) >> min(w, RATE_FAST))
        self.b[i] = b + ((target - b) >> min(w, RATE_SLOW))
        if n < WARMUP_MAX:
            self.n[i] = n + 1


class _Writer:
    """Range encoder writing bytes."""

    def __init__(self):
        self.low = 0
        self.range = _MASK32
        self.cache = 0
        self.pending = 1
        self.skip_first = True
        self.out = bytearray()

    def _put(self, byte: int) -> None:
        if self.skip_first:
            self.skip_first = False
            return
        self.out.append(byte)

    def _shift_low(self) -> None:
        low = self.low
        if (low & _MASK32) < 0xFF000000 or (low >> 32) != 0:
            carry = low >> 32
            byte = self.cache
            while True:
                self._put((byte + carry) & 0xFF)
                byte = 0xFF
                self.pending -= 1
                if self.pending == 0:
                    break
            self.cache = (low >> 24) & 0xFF
        self.pending += 1
        self.low = (low & 0x00FFFFFF) << 8

    def _renorm(self) -> None:
        while self.range < RANGE_TOP:
            self.range = (self.range << 8) & _MASK32
            self._shift_low()

    def bit(self, ctx: _Contexts, i: int, bit: int) -> None:
        bound = (self.range >> 16) * ctx.p0(i)
        if bit:
            self.low += bound
            self.range -= bound
        else:
            self.range = bound
        self._renorm()
        ctx.update(i, bit)

    def bypass(self, bit: int) -> None:
        self.range >>= 1
        if bit:
            self.low += self.range
        self._renorm()

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        return bytes(self.out)


class _Counter:
    """Same interface as _Writer; adds up code length instead of writing."""

    def __init__(self, exact: bool):
        self.exact = exact
        self.bits = 0.0
        self.ctx_bins = 0
        self.bypass_bins = 0

    def bit(self, ctx: _Contexts, i: int, bit: int) -> None:
        p = ctx.p0(i)
        q = PROB_ONE - p if bit else p
        self.ctx_bins += 1
        if self.exact:
            self.bits -= math.log2(q / 65536.0)
        else:
            self.bits += _COST_TABLE[q >> 4]
        ctx.update(i, bit)

    def bypass(self, bit: int) -> None:
        self.bypass_bins += 1
        self.bits += 1.0


def _put_eg(w, v: int, k: int) -> None:
    while v >= (1 << k):
        w.bypass(1)
        v -= 1 << k
        k += 1
    w.bypass(0)
    while k > 0:
        k -= 1
        w.bypass((v >> k) & 1)


def _code_levels(levels, row: int, K: int, eg_k: int, w) -> None:
    ctx = _Contexts(K)
    sign_base = N_SIG_CTX
    gt_base = N_SIG_CTX + N_SIGN_CTX
    prev = prev2 = above = 0
    for i, q in enumerate(levels):
        if row > 0 and i >= row:
            above = levels[i - row]
        am = abs(above)
        w.bit(ctx, _sig_ctx(prev, prev2, am), int(q != 0))
        if q != 0:
            neg = int(q < 0)
            m = abs(q)
            w.bit(ctx, sign_base + _sign_ctx(prev, above), neg)
            act = abs(prev) + am
            k = 1
            while k <= K:
                gt = int(m > k)
                w.bit(ctx, gt_base + (k - 1) * N_GT_CLASSES + neg * 3 + _gt_class(act, k), gt)
                if not gt:
                    break
                k += 1
            if m > K:
                _put_eg(w, m - K - 1, eg_k)
        prev2 = prev
        prev = q


def _as_int_list(levels) -> list:
    arr = np.ascontiguousarray(levels, dtype=np.int32)
    if arr.ndim != 1:
        raise ValueError("levels must be 1-D")
    return [int(x) for x in arr]


def encode(levels, K: int, eg_k: int, row_length: int) -> bytes:
    _check_params(K, eg_k, row_length)
    w = _Writer()
    _code_levels(_as_int_list(levels), row_length, K, eg_k, w)
    return w.finish()


def cost(levels, K: int, eg_k: int, row_length: int, exact: bool = False):
    _check_params(K, eg_k, row_length)
    c = _Counter(exact)
    _code_levels(_as_int_list(levels), row_length, K, eg_k, c)
    return c.bits, c.ctx_bins, c.bypass_bins


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.range = _MASK32
        self.code = 0
        for _ in range(4):
            self.code = (self.code << 8) | self._next()

    def _next(self) -> int:
        b = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return b

    def _renorm(self) -> None:
        while self.range < RANGE_TOP:
            self.range = (self.range << 8) & _MASK32
            self.code = ((self.code << 8) | self._next()) & _MASK32

    def bit(self, ctx: _Contexts, i: int) -> int:
        bound = (self.range >> 16) * ctx.p0(i)
        if self.code < bound:
            self.range = bound
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        ctx.update(i, bit)
        self._renorm()
        return bit

    def bypass(self) -> int:
        self.range >>= 1
        bit = 0
        if self.code >= self.range:
            self.code -= self.range
            bit = 1
        self._renorm()
        return bit


def decode_into(data, out: np.ndarray, K: int, eg_k: int, row_length: int) -> int:
    _check_params(K, eg_k, row_length)
    r = _Reader(bytes(data))
    n = out.shape[0]
    ctx = _Contexts(K)
    sign_base = N_SIG_CTX
    gt_base = N_SIG_CTX + N_SIGN_CTX
    row = row_length
    vals = [0] * n
    prev = prev2 = above = 0
    for i in range(n):
        if row > 0 and i >= row:
            above = vals[i - row]
        am = abs(above)
        q = 0
        if r.bit(ctx, _sig_ctx(prev, prev2, am)):
            neg = r.bit(ctx, sign_base + _sign_ctx(prev, above))
            act = abs(prev) + am
            k = 1
            while k <= K:
                if not r.bit(ctx, gt_base + (k - 1) * N_GT_CLASSES + neg * 3 + _gt_class(act, k)):
                    break
                k += 1
            m = k
            if k > K:
                ek = eg_k
                v = 0
                while r.bypass():
                    v += 1 << ek
                    ek += 1
                    if ek > MAX_EG_PREFIX:
                        return STATUS_BAD_ESCAPE
                for j in range(ek - 1, -1, -1):
                    v += r.bypass() << j
                m = K + 1 + v
            if neg:
                if m > 2**31:
                    return STATUS_OVERFLOW
                q = -m
            else:
                if m > 2**31 - 1:
                    return STATUS_OVERFLOW
                q = m
            if r.pos > len(r.data) + 8:
                return STATUS_TRUNCATED
        vals[i] = q
        prev2 = prev
        prev = q
    if n:
        out[:] = np.asarray(vals, dtype=np.int64).astype(np.int32)
    if r.pos > len(r.data):
        return STATUS_TRUNCATED
    if r.pos < len(r.data):
        return STATUS_TRAILING
    if r.code >= r.range:
        return STATUS_BAD_STATE
    return STATUS_OK


def magnitude_histogram(levels, cap: int) -> np.ndarray:
    """Counts of min(|q|, cap + 1) over the levels (length cap + 2)."""
    mags = np.abs(np.asarray(levels, dtype=np.int64))
    return np.bincount(np.minimum(mags, cap + 1), minlength=cap + 2).astype(np.int64)


def remainder_histogram(levels, K: int) -> np.ndarray:
    """Counts, for the levels above K, of the bit length (0..32) of |q| - K - 1."""
    mags = np.abs(np.asarray(levels, dtype=np.int64))
    rem = mags[mags > K] - K - 1
    _, bitlen = np.frexp(rem.astype(np.float64))  # exact below 2**53
    return np.bincount(bitlen.astype(np.int64), minlength=34).astype(np.int64)
