"""Pure-Python reference of the CABAC level coder in ``nncodec_ext/_cabac.pyx``.

It exists to pin the bitstream down in readable form and to check the
compiled coder against (the two must produce identical bytes). It is slow:
about a microsecond per bin. Select it for the whole package with
``NNCODEC_PURE_PYTHON=1``.

The functions have the same names, arguments and results as the compiled
module: ``encode``, ``decode_into``, ``cost``, ``n_contexts``; ``dq = 1`` codes the
levels of a dependent quantizer (contexts by its state, formats/cabac-v1.md section 6).
"""
from __future__ import annotations

import math

import numpy as np

MIN_FAST, MAX_FAST = 1, 8  # range of the fast adaptation shift F
MIN_SLOW, MAX_SLOW = 4, 11  # and of the slow one, S
FLUSH_SLACK = 3  # body bytes the decoder reads past the end (as zeros)
WARMUP_MAX = 1023  # bin count at which both shifts have reached their rates
PRIOR_COUNT = 31  # bins a sign context counts as seen at the start
PRIMED_COUNT = 8  # bins a context started from the prior tables counts as seen
PROB_ONE = 65536
STATE_BITS = 30
STATE_ONE = 1 << STATE_BITS
STATE_INIT = 1 << (STATE_BITS - 1)
RANGE_TOP = 1 << 24
N_SIG_CTX = 24
N_SIGN_CTX = 9
N_MAG_CLASSES = 3
N_POS = 16  # prefix positions with their own contexts (the last one is shared)
N_PREFIX_CTX = N_POS * N_MAG_CLASSES
N_SUFFIX_CTX = N_POS * 3
MAX_K = 7
MAX_EG_ORDER = 31
MAX_EG_PREFIX = 40
MAX_CANDIDATES = 16  # cost_multi: candidates in one pass (the compiled coder's limit)
THRESHOLD_CAP = 1 << 40

STATUS_OK = 0
STATUS_TRUNCATED = 1
STATUS_TRAILING = 2
STATUS_BAD_ESCAPE = 3
STATUS_OVERFLOW = 4
STATUS_BAD_STATE = 5

_MASK32 = 0xFFFFFFFF
# w(n) = 1 + floor(log2(n + 1)); a context that has seen n bins adapts with min(w(n), rate)
_WARMUP_W = [1 + (n + 1).bit_length() - 1 for n in range(WARMUP_MAX + 1)]
# Initial P(bin = 0) in 1/256 of the contexts when init = 1 (formats/cabac-v1.md section 5)
SIG_PRIOR = [86, 57, 50, 36, 71, 55, 27, 23, 51, 29, 25, 16,
             61, 44, 39, 39, 40, 58, 27, 17, 28, 30, 24, 14]
GT_PRIOR = [[104, 68, 31], [62, 58, 23]]  # k = 1; k >= 2
PREFIX_PRIOR = [[127, 112, 96], [186, 172, 158], [231, 205, 152], [245, 175, 152]]  # j = 0, 1, 2, >= 3
SUFFIX_PRIOR = [[141, 134, 135], [164, 145, 147], [203, 170, 171], [221, 194, 174],
                [229, 195, 195]]  # j = 0, 1, 2, 3, >= 4
_COST_TABLE = [-math.log2((16.0 * i + 8.0) / 65536.0) for i in range(4096)]


# the dependent quantizer's state machine: TRANS[state][parity of |q|] (formats/cabac-v1.md, 1)
TRANS = ((0, 2), (2, 0), (1, 3), (3, 1))


def n_contexts(K: int, dq: int = 0) -> int:
    sets = 2 if dq else 1
    return N_SIG_CTX * sets + N_SIGN_CTX + K * N_MAG_CLASSES * sets + N_PREFIX_CTX + N_SUFFIX_CTX


def _layout(K: int, dq: int):
    """First context of sig, sign, gt, prefix, suffix: sig[set][24], sign[9], gt[set][K][3],
    prefix[48], suffix[48], with two sets (one per quantizer) when dq = 1, else one."""
    sets = 2 if dq else 1
    sign = N_SIG_CTX * sets
    gt = sign + N_SIGN_CTX
    pre = gt + K * N_MAG_CLASSES * sets
    return 0, sign, gt, pre, pre + N_PREFIX_CTX


def _check_params(K: int, eg_k: int, row: int, rates: int, init: int, dq: int = 0) -> None:
    if dq not in (0, 1):
        raise ValueError(f"dq must be 0 or 1, got {dq}")
    if init not in (0, 1):
        raise ValueError(f"context initialization must be 0 or 1, got {init}")
    if K < 0 or K > MAX_K:
        raise ValueError(f"K must be in 0..{MAX_K}, got {K}")
    if eg_k < 0 or eg_k > MAX_EG_ORDER:
        raise ValueError(f"Exp-Golomb order must be in 0..{MAX_EG_ORDER}, got {eg_k}")
    if row < 0:
        raise ValueError("row length must be >= 0")
    if not (MIN_FAST <= (rates & 15) <= MAX_FAST and MIN_SLOW <= (rates >> 4) <= MAX_SLOW):
        raise ValueError(f"rates must be fast | slow << 4 with fast in {MIN_FAST}..{MAX_FAST} and "
                         f"slow in {MIN_SLOW}..{MAX_SLOW}, got {rates:#x}")


def _sign_class(x: int) -> int:
    return 0 if x == 0 else (1 if x < 0 else 2)


def _sig_ctx(prev: int, above: int, ew: int) -> int:
    return ((prev != 0) * 3 + min(abs(above), 2)) * 4 + min(ew >> 2, 3)


def _sign_ctx(prev: int, above: int) -> int:
    return _sign_class(prev) * 3 + _sign_class(above)


def _mag_class(s: int, t: int) -> int:
    """Activity s against the magnitude t a bin tests."""
    if 2 * s < 3 * t:
        return 0
    if s <= 3 * t:
        return 1
    return 2


class _Contexts:
    """Per context: two 30-bit estimates of P(bin = 0) and a bin count."""

    def __init__(self, K: int, rates: int, init: int, dq: int = 0):
        n = n_contexts(K, dq)
        sets = 2 if dq else 1
        _, sign, _, _, _ = _layout(K, dq)
        self.a = [STATE_INIT] * n
        self.b = [STATE_INIT] * n
        self.n = [0] * n
        for i in range(sign, sign + N_SIGN_CTX):
            self.n[i] = PRIOR_COUNT
        if init == 1:
            primed = list(SIG_PRIOR) * sets + [None] * N_SIGN_CTX
            for _ in range(sets):
                for k in range(K):
                    primed += GT_PRIOR[min(k, 1)]
            for j in range(N_POS):
                primed += PREFIX_PRIOR[min(j, 3)]
            for j in range(N_POS):
                primed += SUFFIX_PRIOR[min(j, 4)]
            for i, p in enumerate(primed):
                if p is not None:
                    self.a[i] = self.b[i] = p << (STATE_BITS - 8)
                    self.n[i] = PRIMED_COUNT
        self.fast = rates & 15
        self.slow = rates >> 4

    def p0(self, i: int) -> int:
        # mean of the two estimates as a 16-bit probability, forced odd (never 0)
        return ((self.a[i] + self.b[i]) >> (STATE_BITS + 1 - 16)) | 1

    def update(self, i: int, bit: int) -> None:
        # state += (target - state) >> shift, flooring shift of the signed difference
        n = self.n[i]
        w = _WARMUP_W[n]
        target = 0 if bit else STATE_ONE
        a, b = self.a[i], self.b[i]
        self.a[i] = a + ((target - a) >> min(w, self.fast))
        self.b[i] = b + ((target - b) >> min(w, self.slow))
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
        # low rounded up to a multiple of 2**24 lies in the last interval; its
        # bytes after the top one are zeros, which the decoder supplies itself
        self.low = (self.low + 0xFFFFFF) & ~0xFFFFFF
        for _ in range(2):
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


def _put_remainder(w, ctx: _Contexts, r: int, K: int, E: int, s: int, pre: int, suf: int) -> None:
    """r = |q| - K - 1 as Exp-Golomb classes of order E: context-coded prefix
    bins, the top two offset bits context coded, the other offset bits bypass."""
    e, j = E, 0
    t = K + 1 + (1 << E)  # the magnitude that prefix bin j tests
    while r >= (1 << e):
        w.bit(ctx, pre + j * N_MAG_CLASSES + _mag_class(s, t), 1)
        r -= 1 << e
        e += 1
        j = min(j + 1, N_POS - 1)
        t = min(t + (1 << e), THRESHOLD_CAP)
    w.bit(ctx, pre + j * N_MAG_CLASSES + _mag_class(s, t), 0)
    if e > 0:
        b1 = (r >> (e - 1)) & 1
        w.bit(ctx, suf + j * 3, b1)
        if e > 1:
            w.bit(ctx, suf + j * 3 + 1 + b1, (r >> (e - 2)) & 1)
            for i in range(e - 3, -1, -1):
                w.bypass((r >> i) & 1)


def _code_levels(levels, row: int, K: int, eg_k: int, rates: int, init: int, w, dq: int = 0) -> None:
    ctx = _Contexts(K, rates, init, dq)
    _, sign_base, gt0, pre, suf = _layout(K, dq)
    prev = above = 0
    ew = 0  # running average x4 of the magnitudes earlier in the row
    st = 0  # the dependent quantizer's state (dq = 1)
    for i, q in enumerate(levels):
        if row > 0 and i % row == 0:
            ew = 0
        if row > 0 and i >= row:
            above = levels[i - row]
        m = abs(q)
        s = (ew >> 2) + abs(above) + abs(prev)
        qs = (st >> 1) if dq else 0  # the quantizer of this level: the set of sig and gt contexts
        gt_base = gt0 + qs * K * N_MAG_CLASSES
        w.bit(ctx, qs * N_SIG_CTX + _sig_ctx(prev, above, ew), int(q != 0))
        if q != 0:
            w.bit(ctx, sign_base + _sign_ctx(prev, above), int(q < 0))
            k = 1
            while k <= K:
                gt = int(m > k)
                w.bit(ctx, gt_base + (k - 1) * N_MAG_CLASSES + _mag_class(s, k), gt)
                if not gt:
                    break
                k += 1
            if m > K:
                _put_remainder(w, ctx, m - K - 1, K, eg_k, s, pre, suf)
        ew = ew + m - (ew >> 2)
        prev = q
        st = TRANS[st][m & 1]


def _as_int_list(levels) -> list:
    arr = np.ascontiguousarray(levels, dtype=np.int32)
    if arr.ndim != 1:
        raise ValueError("levels must be 1-D")
    return [int(x) for x in arr]


def encode(levels, K: int, eg_k: int, row_length: int, rates: int, init: int, dq: int = 0) -> bytes:
    _check_params(K, eg_k, row_length, rates, init, dq)
    w = _Writer()
    _code_levels(_as_int_list(levels), row_length, K, eg_k, rates, init, w, dq)
    return w.finish()


def cost(levels, K: int, eg_k: int, row_length: int, rates: int, init: int, exact: bool = False,
         dq: int = 0):
    _check_params(K, eg_k, row_length, rates, init, dq)
    c = _Counter(exact)
    _code_levels(_as_int_list(levels), row_length, K, eg_k, rates, init, c, dq)
    return c.bits, c.ctx_bins, c.bypass_bins


def cost_multi(levels, K: int, eg_k: int, row_length: int, rates, inits, dq: int = 0) -> list:
    """The fast cost of each candidate (rates[j], inits[j]): the compiled coder does them
    all in one pass; here one pass each, with the same sums."""
    if len(rates) != len(inits) or not 1 <= len(rates) <= MAX_CANDIDATES:
        raise ValueError(f"1..{MAX_CANDIDATES} candidates needed, with as many rates as inits")
    return [cost(levels, K, eg_k, row_length, r, i, False, dq)[0] for r, i in zip(rates, inits)]


def _binary_cost(n: int, ones: int, penalty: float) -> float:
    if n == 0:
        return 0.0
    h = 0.0
    if 0 < ones < n:
        dn, d1, d0 = float(n), float(ones), float(n - ones)
        h = -(d1 * math.log2(d1 / dn) + d0 * math.log2(d0 / dn))
    return h + penalty * math.log2(float(n) + 1.0)


def static_costs(levels, Ks, Es, penalty: float, suffix_penalty: float) -> list:
    """Counted-frequency estimates of the magnitude bins' cost, one per (Ks[c], Es[c]) (see
    the compiled twin, which counts from a histogram: the same counts, the same sums)."""
    if len(Ks) != len(Es):
        raise ValueError("as many Ks as Es needed")
    for K, E in zip(Ks, Es):
        if not (0 <= K <= MAX_K and 0 <= E <= MAX_EG_ORDER):
            raise ValueError("K or E out of range")
    lv = _as_int_list(levels)
    return [_static_cost(lv, K, E, penalty, suffix_penalty) for K, E in zip(Ks, Es)]


def _static_cost(lv: list, K: int, eg_k: int, penalty: float, suffix_penalty: float) -> float:
    gt_n = [0] * (MAX_K + 1)
    gt_1 = [0] * (MAX_K + 1)
    pre_n = [0] * N_POS
    pre_1 = [0] * N_POS
    s1_n = [0] * N_POS
    s1_1 = [0] * N_POS
    s2_n = [[0, 0] for _ in range(N_POS)]
    s2_1 = [[0, 0] for _ in range(N_POS)]
    bypass = 0
    for q in lv:
        m = abs(q)
        if m == 0:
            continue
        for k in range(1, K + 1):
            gt_n[k] += 1
            if m <= k:
                break
            gt_1[k] += 1
        if m <= K:
            continue
        r = m - K - 1
        j = ((r >> eg_k) + 1).bit_length() - 1
        for p in range(j + 1):
            jj = min(p, N_POS - 1)
            pre_n[jj] += 1
            if p < j:
                pre_1[jj] += 1
        ek = eg_k + j
        off = r - (((1 << j) - 1) << eg_k)
        jj = min(j, N_POS - 1)
        if ek >= 1:
            b1 = (off >> (ek - 1)) & 1
            s1_n[jj] += 1
            s1_1[jj] += b1
            if ek >= 2:
                b2 = (off >> (ek - 2)) & 1
                s2_n[jj][b1] += 1
                s2_1[jj][b1] += b2
                bypass += ek - 2
    total = 0.0
    for k in range(1, K + 1):
        total += _binary_cost(gt_n[k], gt_1[k], penalty)
    for p in range(N_POS):
        total += _binary_cost(pre_n[p], pre_1[p], penalty)
    for p in range(N_POS):
        total += _binary_cost(s1_n[p], s1_1[p], suffix_penalty)
        total += _binary_cost(s2_n[p][0], s2_1[p][0], suffix_penalty)
        total += _binary_cost(s2_n[p][1], s2_1[p][1], suffix_penalty)
    return total + float(bypass)


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


def decode_into(data, out: np.ndarray, K: int, eg_k: int, row_length: int, rates: int,
                init: int, dq: int = 0) -> int:
    _check_params(K, eg_k, row_length, rates, init, dq)
    r = _Reader(bytes(data))
    n = out.shape[0]
    ctx = _Contexts(K, rates, init, dq)
    _, sign_base, gt0, pre, suf = _layout(K, dq)
    row = row_length
    vals = [0] * n
    prev = above = 0
    ew = 0
    st = 0
    for i in range(n):
        if row > 0 and i % row == 0:
            ew = 0
        if row > 0 and i >= row:
            above = vals[i - row]
        s = (ew >> 2) + abs(above) + abs(prev)
        q = 0
        m = 0
        qs = (st >> 1) if dq else 0
        gt_base = gt0 + qs * K * N_MAG_CLASSES
        if r.bit(ctx, qs * N_SIG_CTX + _sig_ctx(prev, above, ew)):
            neg = r.bit(ctx, sign_base + _sign_ctx(prev, above))
            k = 1
            while k <= K:
                if not r.bit(ctx, gt_base + (k - 1) * N_MAG_CLASSES + _mag_class(s, k)):
                    break
                k += 1
            m = k
            if k > K:
                e, j, v = eg_k, 0, 0
                t = K + 1 + (1 << eg_k)
                while r.bit(ctx, pre + j * N_MAG_CLASSES + _mag_class(s, t)):
                    v += 1 << e
                    e += 1
                    if e > MAX_EG_PREFIX:
                        return STATUS_BAD_ESCAPE
                    j = min(j + 1, N_POS - 1)
                    t = min(t + (1 << e), THRESHOLD_CAP)
                if e > 0:
                    b1 = r.bit(ctx, suf + j * 3)
                    v += b1 << (e - 1)
                    if e > 1:
                        v += r.bit(ctx, suf + j * 3 + 1 + b1) << (e - 2)
                        for i2 in range(e - 3, -1, -1):
                            v += r.bypass() << i2
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
        ew = ew + m - (ew >> 2)
        prev = q
        st = TRANS[st][m & 1]
    if n:
        out[:] = np.asarray(vals, dtype=np.int64).astype(np.int32)
    if r.pos > len(r.data) + FLUSH_SLACK:
        return STATUS_TRUNCATED
    if r.pos < len(r.data) + FLUSH_SLACK:
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
