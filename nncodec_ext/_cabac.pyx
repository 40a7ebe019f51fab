# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Context-adaptive binary arithmetic coder for int32 quantization levels
(cabac payload version 2, formats/cabac-v1.md sections 3-6).

Hot loops only. Parameter choice, stream headers, validation and error
messages live in ``nncodec.entropy.cabac``; this module reports problems as
integer status codes.  ``nncodec/entropy/cabac_ref.py`` is a line-by-line
pure-Python twin that must produce the same bytes; change both together.

Binarization of a level q (coding order = C order of the tensor), m = |q|:
  sig       q != 0                                       context coded
  sign      q < 0                                        context coded
  gt_k      m > k for k = 1..K, stops at the first 0     context coded
  prefix    r = m - K - 1 in Exp-Golomb classes of order E: one bin per
            class boundary passed, then a 0                context coded
  suffix    the offset of r in its class (e bits): the top two bits
            context coded, the others bypass bins

Contexts: the significance flag from whether the previous level is zero,
|above| and ew (a running average, x4, of the magnitudes earlier in the
same row); the sign from the signs of the previous and the above level;
every magnitude bin from the local activity s = ew/4 + |above| + |prev|
against the magnitude the bin tests. Contexts start at P = 1/2, or (init
= 1) from fixed prior tables. With dq = 1 (levels of a dependent quantizer)
the coder follows the quantizer's 4-state machine through the parities of
the levels and keeps two sets of sig and gt contexts, one per quantizer.

Arithmetic coder: 32-bit range, 33-bit low with byte-wise carry propagation
(pending 0xFF bytes are held back), renormalization when the range drops
below 2**24.  Each context holds two 30-bit estimates of P(bin = 0) adapting
with per-tensor shifts F and S (faster while the context is young); the coder
uses their mean, rounded to 16 bits and forced odd (so never 0).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from nncodec_ext._dq cimport dq_next
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset
from libc.math cimport log2

import numpy as np

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define NNC_LIKELY(x) __builtin_expect(!!(x), 1)
    #define NNC_UNLIKELY(x) __builtin_expect(!!(x), 0)
    #else
    #define NNC_LIKELY(x) (x)
    #define NNC_UNLIKELY(x) (x)
    #endif
    """
    bint likely "NNC_LIKELY"(bint) noexcept nogil
    bint unlikely "NNC_UNLIKELY"(bint) noexcept nogil


cdef enum:
    MIN_FAST = 1                   # the fast adaptation shift F is in MIN_FAST..MAX_FAST
    MAX_FAST = 8
    MIN_SLOW = 4                   # the slow one, S, in MIN_SLOW..MAX_SLOW
    MAX_SLOW = 11
    FLUSH_SLACK = 3                # body bytes the decoder reads past the end (as zeros)
    PRIOR_COUNT = 31               # bins a sign context counts as seen at the start
    PRIMED_COUNT = 8               # bins a context started from the prior table counts as seen
    WARM_BRANCH_MIN = 65536        # levels from which the coder branches on the warm-up (Rates.wb)
    WARMUP_MAX = 1023              # bin count at which both shifts have reached their rates
    PROB_ONE = 65536               # coding probabilities are 16-bit
    STATE_BITS = 30                # estimator state precision
    STATE_ONE = 1073741824         # 2**30
    STATE_INIT = 536870912         # 2**29, P = 1/2
    RANGE_TOP = 16777216           # 2**24
    N_SIG_CTX = 24
    N_SIGN_CTX = 9
    N_MAG_CLASSES = 3              # activity classes of each magnitude bin
    N_POS = 16                     # prefix positions with their own contexts (the last is shared)
    N_PREFIX_CTX = 48              # N_POS * N_MAG_CLASSES
    N_SUFFIX_CTX = 48              # N_POS * 3 (first suffix bit; second after a 0; after a 1)
    MAX_K = 7
    MAX_EG_ORDER = 31
    MAX_EG_PREFIX = 40

# status codes reported to Python
cdef enum:
    STATUS_OK = 0
    STATUS_TRUNCATED = 1
    STATUS_TRAILING = 2
    STATUS_BAD_ESCAPE = 3
    STATUS_OVERFLOW = 4
    STATUS_BAD_STATE = 5
    STATUS_NO_MEMORY = 6

cdef uint64_t LOW32_MASK = 0xFFFFFFFFULL
cdef uint64_t LOW24_MASK = 0x00FFFFFFULL
cdef uint64_t SHIFT_LIMIT = 0xFF000000ULL
cdef uint64_t THRESHOLD_CAP = 1ULL << 40   # magnitude thresholds saturate here

cdef enum:
    MODE_WRITE = 0
    MODE_COST_FAST = 1
    MODE_COST_EXACT = 2
    MODE_COST_MULTI = 3            # fast cost of several rate/init candidates in one pass
    MAX_CANDIDATES = 16

# -log2(p / 65536) for p = 16*i + 8, i < 4096: the fast cost estimate.
cdef double COST_TABLE[4096]
cdef int _i
for _i in range(4096):
    COST_TABLE[_i] = -log2((16.0 * _i + 8.0) / 65536.0)

# Initial P(bin = 0) in 1/256 of the contexts with init = 1 (formats/cabac-v1.md
# section 5): averages over the weights of a trained network, part of the format.
cdef uint8_t SIG_PRIOR[24]
for _i, _v in enumerate([86, 57, 50, 36, 71, 55, 27, 23, 51, 29, 25, 16,
                         61, 44, 39, 39, 40, 58, 27, 17, 28, 30, 24, 14]):
    SIG_PRIOR[_i] = _v
cdef uint8_t GT_PRIOR[2][3]
for _i, _v in enumerate([104, 68, 31, 62, 58, 23]):
    GT_PRIOR[_i // 3][_i % 3] = _v
cdef uint8_t PREFIX_PRIOR[4][3]
for _i, _v in enumerate([127, 112, 96, 186, 172, 158, 231, 205, 152, 245, 175, 152]):
    PREFIX_PRIOR[_i // 3][_i % 3] = _v
cdef uint8_t SUFFIX_PRIOR[5][3]
for _i, _v in enumerate([141, 134, 135, 164, 145, 147, 203, 170, 171, 221, 194, 174, 229, 195, 195]):
    SUFFIX_PRIOR[_i // 3][_i % 3] = _v

# w(n) = 1 + floor(log2(n + 1)): the adaptation shift of a context that has
# seen n bins is min(w(n), rate), so that a fresh context learns about as fast
# as a frequency count and then settles at the estimator's rate.
cdef uint8_t WARMUP_W[WARMUP_MAX + 1]
for _i in range(WARMUP_MAX + 1):
    WARMUP_W[_i] = 1 + int(log2(_i + 1))


# Dependent quantization (dq = 1): the coder replays the 4-state machine of the
# dq stage (formats/cabac-v1.md section 1) from the parities of the levels and
# codes the significance and greater-than flags of a level with a separate set of
# contexts for each quantizer (states 0, 1: even multiples; 2, 3: odd multiples);
# the transitions are dq_next in _dq.pxd.


cdef struct Layout:
    int sets                # context sets of sig and gt: 2 with dq, else 1
    int sign_off, gt_off, pre_off, suf_off, nctx


cdef Layout _layout(int K, int dq) noexcept nogil:
    # sig[set][24], sign[9], gt[set][K][3], prefix[48], suffix[48]
    cdef Layout L
    L.sets = 2 if dq else 1
    L.sign_off = N_SIG_CTX * L.sets
    L.gt_off = L.sign_off + N_SIGN_CTX
    L.pre_off = L.gt_off + K * N_MAG_CLASSES * L.sets
    L.suf_off = L.pre_off + N_PREFIX_CTX
    L.nctx = L.suf_off + N_SUFFIX_CTX
    return L


def n_contexts(int K, int dq=0):
    """Number of adaptive contexts used for a given K (and dq flag)."""
    return _layout(K, dq).nctx


cdef struct Ctx:
    uint32_t a        # fast estimate of P(bin = 0), 30-bit fixed point
    uint32_t b        # slow estimate, 30-bit
    uint32_t n        # bins seen so far, saturating at WARMUP_MAX


cdef struct Rates:
    uint32_t fast
    uint32_t slow
    uint32_t wb           # 1: branch on the warm-up (large tensors, where nearly every bin
                          # hits a settled context); 0: no branch (small tensors); same result


cdef inline void _update_ab(Ctx* c, uint32_t a, uint32_t b, uint32_t bit, Rates r) noexcept nogil:
    # move each estimate (a = c.a, b = c.b, already loaded) towards the observed
    # bin: state += (target - state) >> shift, with an arithmetic (flooring)
    # shift of the signed difference; while the context is young the shifts are
    # min(w(n), rate). Two ways to the same states: with a branch on the warm-up
    # (predictable once most contexts have settled) or with the table and a
    # saturating count (no branch, for small tensors where young contexts are common)
    cdef int32_t target = <int32_t> ((bit - 1u) & STATE_ONE)
    cdef uint32_t n = c.n
    cdef uint32_t w, fs, ss
    if r.wb:
        if likely(n >= WARMUP_MAX):
            c.a = <uint32_t> (<int32_t> a + ((target - <int32_t> a) >> r.fast))
            c.b = <uint32_t> (<int32_t> b + ((target - <int32_t> b) >> r.slow))
            return
    w = WARMUP_W[n]
    fs = w if w < r.fast else r.fast
    ss = w if w < r.slow else r.slow
    c.a = <uint32_t> (<int32_t> a + ((target - <int32_t> a) >> fs))
    c.b = <uint32_t> (<int32_t> b + ((target - <int32_t> b) >> ss))
    c.n = n + <uint32_t> (n < WARMUP_MAX)


cdef struct Multi:
    # candidate j codes the same bins with its own contexts (ctx + j * stride) and rates;
    # each sum grows in the same order as a single cost pass would add to it
    int n
    size_t stride
    double bits[MAX_CANDIDATES]
    Rates rates[MAX_CANDIDATES]


cdef struct Enc:
    uint64_t low
    uint32_t range
    uint32_t cache
    uint64_t pending      # bytes held back: the cache byte plus 0xFF bytes
    int skip_first        # the very first byte is always 0 and is not stored
    uint8_t* buf
    size_t pos
    size_t cap
    int failed
    # cost modes
    double bits
    uint64_t ctx_bins
    uint64_t bypass_bins
    Multi* multi          # MODE_COST_MULTI only



cdef inline void _put_byte(Enc* e, uint32_t byte) noexcept nogil:
    cdef uint8_t* nb
    cdef size_t ncap
    if e.skip_first:
        e.skip_first = 0
        return
    if e.pos >= e.cap:
        ncap = e.cap * 2 + 64
        nb = <uint8_t*> realloc(e.buf, ncap)
        if nb == NULL:
            e.failed = 1
            return
        e.buf = nb
        e.cap = ncap
    e.buf[e.pos] = <uint8_t> byte
    e.pos += 1


cdef inline void _shift_low(Enc* e) noexcept nogil:
    cdef uint32_t carry
    cdef uint32_t byte
    if (e.low & LOW32_MASK) < SHIFT_LIMIT or (e.low >> 32) != 0:
        carry = <uint32_t> (e.low >> 32)
        byte = e.cache
        while True:
            _put_byte(e, (byte + carry) & 0xFF)
            byte = 0xFF
            e.pending -= 1
            if e.pending == 0:
                break
        e.cache = <uint32_t> ((e.low >> 24) & 0xFF)
    e.pending += 1
    e.low = (e.low & LOW24_MASK) << 8


cdef inline void _enc_renorm(Enc* e) noexcept nogil:
    # rare: callers test the range first
    while e.range < RANGE_TOP:
        e.range <<= 8
        _shift_low(e)


cdef inline void _enc_bit(Enc* e, Ctx* c, uint32_t bit, int mode, Rates r) noexcept nogil:
    # one context-coded bin, written without a branch on its value
    cdef uint32_t a = c.a
    cdef uint32_t b = c.b
    cdef uint32_t p = ((a + b) >> (STATE_BITS + 1 - 16)) | 1u      # P(bin = 0), 16-bit
    cdef uint32_t bound
    cdef uint32_t mask
    cdef Multi* mc
    cdef Ctx* cj
    cdef int j
    if mode == MODE_COST_MULTI:
        mc = e.multi
        for j in range(mc.n):
            cj = c + <size_t> j * mc.stride
            a = cj.a
            b = cj.b
            p = ((a + b) >> (STATE_BITS + 1 - 16)) | 1u
            if bit:
                mc.bits[j] += COST_TABLE[(PROB_ONE - p) >> 4]
            else:
                mc.bits[j] += COST_TABLE[p >> 4]
            _update_ab(cj, a, b, bit, mc.rates[j])
        return
    if mode == MODE_WRITE:
        bound = (e.range >> 16) * p
        mask = 0u - bit
        e.low += bound & mask
        e.range = bound + ((e.range - bound - bound) & mask)
        _update_ab(c, a, b, bit, r)
        if unlikely(e.range < RANGE_TOP):
            _enc_renorm(e)
    else:
        e.ctx_bins += 1
        if mode == MODE_COST_EXACT:
            if bit:
                e.bits -= log2((PROB_ONE - p) / 65536.0)
            else:
                e.bits -= log2(p / 65536.0)
        else:
            if bit:
                e.bits += COST_TABLE[(PROB_ONE - p) >> 4]
            else:
                e.bits += COST_TABLE[p >> 4]
        _update_ab(c, a, b, bit, r)


cdef inline void _enc_bypass_bits(Enc* e, uint64_t v, int nbits, int mode) noexcept nogil:
    # the low nbits of v as bypass bins, most significant first
    cdef int j
    if mode == MODE_WRITE:
        while nbits > 0:
            nbits -= 1
            e.range >>= 1
            e.low += e.range & (0u - <uint32_t> ((v >> nbits) & 1u))
            if unlikely(e.range < RANGE_TOP):
                _enc_renorm(e)
    elif mode == MODE_COST_MULTI:
        while nbits > 0:
            nbits -= 1
            for j in range(e.multi.n):
                e.multi.bits[j] += 1.0
    else:
        # one bit at a time, as the reference adds them (same rounding)
        while nbits > 0:
            nbits -= 1
            e.bypass_bins += 1
            e.bits += 1.0


cdef inline uint32_t _mag(int32_t q) noexcept nogil:
    # |q| as unsigned, exact also for -2**31
    if q < 0:
        return <uint32_t> (-(<int64_t> q))
    return <uint32_t> q


cdef inline uint32_t _sign_class(int32_t x) noexcept nogil:
    # 0 zero, 1 negative, 2 positive
    return <uint32_t> (x != 0) + <uint32_t> (x > 0)


cdef inline uint32_t _sig_ctx(int32_t prev, uint32_t above_mag, uint64_t ew) noexcept nogil:
    # previous level zero or not, |above| (0, 1, >= 2), ew / 4 (0, 1, 2, >= 3)
    return ((<uint32_t> (prev != 0)) * 3 + (above_mag if above_mag < 2 else 2)) * 4 + \
        <uint32_t> (ew >> 2 if ew < 12 else 3)


cdef inline uint32_t _mag_class(uint64_t s, uint64_t t) noexcept nogil:
    # activity s against the magnitude t a bin tests: 0 if s < 1.5 t,
    # 1 if 1.5 t <= s <= 3 t, 2 if s > 3 t
    return <uint32_t> (2 * s >= 3 * t) + <uint32_t> (s > 3 * t)


cdef inline void _code_remainder(Enc* e, uint64_t r, int E, int K, uint64_t s,
                                 Ctx* pre_ctx, Ctx* suf_ctx, int mode, Rates rt) noexcept nogil:
    # r = |q| - K - 1 >= 0: Exp-Golomb classes of order E with context-coded
    # prefix bins, the top two offset bits context coded, the rest bypass
    cdef int ek = E
    cdef uint32_t j = 0
    cdef uint64_t t = <uint64_t> K + 1 + (<uint64_t> 1 << E)   # the magnitude prefix bin j tests
    cdef uint32_t b1, b2
    cdef Ctx* sc
    while r >= (<uint64_t> 1 << ek):
        _enc_bit(e, pre_ctx + (j * N_MAG_CLASSES + _mag_class(s, t)), 1, mode, rt)
        r -= (<uint64_t> 1 << ek)
        ek += 1
        if j < N_POS - 1:
            j += 1
        t += (<uint64_t> 1 << ek)
        if t > THRESHOLD_CAP:
            t = THRESHOLD_CAP
    _enc_bit(e, pre_ctx + (j * N_MAG_CLASSES + _mag_class(s, t)), 0, mode, rt)
    if ek > 0:
        sc = suf_ctx + j * 3
        b1 = <uint32_t> ((r >> (ek - 1)) & 1)
        _enc_bit(e, sc, b1, mode, rt)
        if ek > 1:
            b2 = <uint32_t> ((r >> (ek - 2)) & 1)
            _enc_bit(e, sc + 1 + b1, b2, mode, rt)
            _enc_bypass_bits(e, r, ek - 2, mode)


cdef inline void _code_levels(const int32_t* lv, Py_ssize_t n, Py_ssize_t row,
                              int K, int E, Rates rt, Ctx* ctx, Enc* ep, int mode, int dq) noexcept nogil:
    cdef Layout L = _layout(K, dq)
    cdef Ctx* sig_ctx = ctx
    cdef Ctx* sign_ctx = ctx + L.sign_off
    cdef Ctx* gt_ctx = ctx + L.gt_off
    cdef Ctx* pre_ctx = ctx + L.pre_off
    cdef Ctx* suf_ctx = ctx + L.suf_off
    cdef Ctx* c
    cdef int32_t prev = 0
    cdef int32_t above = 0
    cdef int32_t q
    cdef uint32_t m, am, pm = 0, neg, k, gt
    cdef uint64_t ew = 0, s
    cdef Py_ssize_t i
    cdef Py_ssize_t row_left = row
    cdef Enc el = ep[0]
    cdef Enc* e = &el
    cdef Py_ssize_t above_from = row if row > 0 else n
    cdef int st = 0          # the dependent quantizer's state (dq only)
    cdef Ctx* sgc = sig_ctx  # this level's sets of sig and gt contexts
    cdef Ctx* gtc = gt_ctx
    for i in range(n):
        if row > 0:
            if row_left == 0:
                ew = 0
                row_left = row
            row_left -= 1
        q = lv[i]
        if i >= above_from:
            above = lv[i - row]
        am = _mag(above)
        s = (ew >> 2) + am + pm
        m = _mag(q)
        if dq:
            sgc = sig_ctx + N_SIG_CTX * (st >> 1)
            gtc = gt_ctx + K * N_MAG_CLASSES * (st >> 1)
            st = dq_next(st, m & 1)
        _enc_bit(e, sgc + _sig_ctx(prev, am, ew), q != 0, mode, rt)
        if q != 0:
            neg = q < 0
            _enc_bit(e, sign_ctx + (_sign_class(prev) * 3 + _sign_class(above)), neg, mode, rt)
            k = 1
            c = gtc
            while k <= <uint32_t> K:
                gt = m > k
                _enc_bit(e, c + _mag_class(s, k), gt, mode, rt)
                if not gt:
                    break
                k += 1
                c += N_MAG_CLASSES
            if m > <uint32_t> K:
                _code_remainder(e, <uint64_t> m - <uint64_t> K - 1, E, K, s, pre_ctx, suf_ctx, mode, rt)
        ew = ew + m - (ew >> 2)
        pm = m
        prev = q
    ep[0] = el


cdef inline void _prime(Ctx* c, uint32_t p256) noexcept nogil:
    c.a = p256 << (STATE_BITS - 8)
    c.b = p256 << (STATE_BITS - 8)
    c.n = PRIMED_COUNT


cdef Ctx* _new_contexts(int K, int init, int dq) noexcept nogil:
    cdef Layout L = _layout(K, dq)
    cdef Ctx* ctx = <Ctx*> malloc(L.nctx * sizeof(Ctx))
    cdef Ctx* c
    cdef Py_ssize_t j, k, pos, g
    if ctx != NULL:
        for j in range(L.nctx):
            ctx[j].a = STATE_INIT
            ctx[j].b = STATE_INIT
            ctx[j].n = 0
        # signs are close to fair coins: start as if 31 bins had been seen
        for j in range(L.sign_off, L.gt_off):
            ctx[j].n = PRIOR_COUNT
        if init == 1:
            # both sets of a kind start from the same table
            for g in range(L.sets):
                for j in range(N_SIG_CTX):
                    _prime(ctx + g * N_SIG_CTX + j, SIG_PRIOR[j])
            for g in range(L.sets):
                c = ctx + L.gt_off + g * K * N_MAG_CLASSES
                for k in range(K):
                    for j in range(N_MAG_CLASSES):
                        _prime(c + k * N_MAG_CLASSES + j, GT_PRIOR[k if k < 1 else 1][j])
            c = ctx + L.pre_off
            for pos in range(N_POS):
                for j in range(N_MAG_CLASSES):
                    _prime(c + pos * N_MAG_CLASSES + j, PREFIX_PRIOR[pos if pos < 3 else 3][j])
            c = ctx + L.suf_off
            for pos in range(N_POS):
                for j in range(3):
                    _prime(c + pos * 3 + j, SUFFIX_PRIOR[pos if pos < 4 else 4][j])
    return ctx


cdef Rates _rates(int rates):
    cdef Rates r
    r.fast = <uint32_t> (rates & 15)
    r.slow = <uint32_t> (rates >> 4)
    r.wb = 0
    return r


def _check_params(int K, int eg_k, Py_ssize_t row, int rates, int init, int dq=0):
    if dq < 0 or dq > 1:
        raise ValueError(f"dq must be 0 or 1, got {dq}")
    if init < 0 or init > 1:
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


def encode(const int32_t[::1] levels, int K, int eg_k, Py_ssize_t row_length, int rates, int init,
           int dq=0):
    """Arithmetic-code ``levels``; returns the coded body as bytes. ``dq``: 1 for levels of
    a dq stage (contexts by the state of the dependent quantizer)."""
    _check_params(K, eg_k, row_length, rates, init, dq)
    cdef Py_ssize_t n = levels.shape[0]
    cdef Enc e
    cdef int j
    cdef Rates rt = _rates(rates)
    cdef Ctx* ctx = _new_contexts(K, init, dq)
    if ctx == NULL:
        raise MemoryError()
    e.low = 0
    e.range = 0xFFFFFFFFU
    e.cache = 0
    e.pending = 1
    e.skip_first = 1
    e.cap = <size_t> (n // 2 + 64)
    e.buf = <uint8_t*> malloc(e.cap)
    e.pos = 0
    e.failed = 0
    if e.buf == NULL:
        free(ctx)
        raise MemoryError()
    with nogil:
        if n >= WARM_BRANCH_MIN:
            rt.wb = 1
            _code_levels(&levels[0], n, row_length, K, eg_k, rt, ctx, &e, MODE_WRITE, dq)
        elif n > 0:
            _code_levels(&levels[0], n, row_length, K, eg_k, rt, ctx, &e, MODE_WRITE, dq)
        # flush: any value in [low, low + range) identifies the last interval;
        # low rounded up to a multiple of 2**24 is one (range >= 2**24), and its
        # bytes after the top one are zeros, which the decoder reads past the end
        e.low = (e.low + LOW24_MASK) & ~LOW24_MASK
        for j in range(2):
            _shift_low(&e)
    free(ctx)
    try:
        if e.failed:
            raise MemoryError()
        return (<char*> e.buf)[:e.pos]
    finally:
        free(e.buf)


def cost(const int32_t[::1] levels, int K, int eg_k, Py_ssize_t row_length, int rates, int init,
         bint exact=False, int dq=0):
    """Cost of coding ``levels`` under the adaptive model, without coding.

    Returns (bits, context_bins, bypass_bins). ``bits`` is the ideal code
    length, sum of -log2 p over context-coded bins plus one bit per bypass
    bin; ``exact=False`` uses a 4096-entry table (|error| < 0.2%), ``exact=True``
    calls log2 for every bin.
    """
    _check_params(K, eg_k, row_length, rates, init, dq)
    cdef Py_ssize_t n = levels.shape[0]
    cdef Enc e
    cdef Rates rt = _rates(rates)
    cdef Ctx* ctx = _new_contexts(K, init, dq)
    if ctx == NULL:
        raise MemoryError()
    e.bits = 0.0
    e.ctx_bins = 0
    e.bypass_bins = 0
    with nogil:
        if n > 0:
            if exact:
                _code_levels(&levels[0], n, row_length, K, eg_k, rt, ctx, &e, MODE_COST_EXACT, dq)
            else:
                _code_levels(&levels[0], n, row_length, K, eg_k, rt, ctx, &e, MODE_COST_FAST, dq)
    free(ctx)
    return e.bits, e.ctx_bins, e.bypass_bins


def cost_multi(const int32_t[::1] levels, int K, int eg_k, Py_ssize_t row_length, rates, inits,
               int dq=0):
    """Fast-mode cost (as ``cost(..., exact=False)[0]``) of coding ``levels`` once for each
    candidate ``(rates[j], inits[j])``, in a single pass over the levels: the same K, E and
    binarization for all, each candidate with its own contexts. Returns a list of floats,
    each equal to what ``cost`` gives for that candidate alone."""
    cdef Py_ssize_t nc = len(rates)
    if nc != len(inits) or nc < 1 or nc > MAX_CANDIDATES:
        raise ValueError(f"1..{MAX_CANDIDATES} candidates needed, with as many rates as inits")
    cdef Py_ssize_t j, t
    for j in range(nc):
        _check_params(K, eg_k, row_length, rates[j], inits[j], dq)
    cdef Py_ssize_t n = levels.shape[0]
    cdef Layout L = _layout(K, dq)
    cdef Multi mc
    cdef Enc e
    cdef Ctx* block = <Ctx*> malloc(nc * L.nctx * sizeof(Ctx))
    cdef Ctx* one
    if block == NULL:
        raise MemoryError()
    mc.n = <int> nc
    mc.stride = <size_t> L.nctx
    for j in range(nc):
        mc.bits[j] = 0.0
        mc.rates[j] = _rates(rates[j])
        one = _new_contexts(K, inits[j], dq)
        if one == NULL:
            free(block)
            raise MemoryError()
        for t in range(L.nctx):
            block[j * L.nctx + t] = one[t]
        free(one)
    e.multi = &mc
    with nogil:
        if n > 0:
            _code_levels(&levels[0], n, row_length, K, eg_k, mc.rates[0], block, &e, MODE_COST_MULTI, dq)
    free(block)
    return [mc.bits[j] for j in range(nc)]


cdef inline double _binary_cost(uint64_t n, uint64_t ones, double penalty) noexcept nogil:
    # n * H(ones / n) bits, plus penalty * log2(n + 1) for a context that is used
    cdef double dn, d1, d0, h = 0.0
    if n == 0:
        return 0.0
    if ones > 0 and ones < n:
        dn = <double> n
        d1 = <double> ones
        d0 = <double> (n - ones)
        h = -(d1 * log2(d1 / dn) + d0 * log2(d0 / dn))
    return h + penalty * log2(<double> n + 1.0)


cdef enum:
    HIST_CAP = 4096                # static_costs: magnitudes up to this are counted in a histogram


cdef void _static_count(uint64_t m, uint64_t w, int K, int eg_k, uint64_t* gt_n, uint64_t* gt_1,
                        uint64_t* pre_n, uint64_t* pre_1, uint64_t* s1_n, uint64_t* s1_1,
                        uint64_t* s2_n, uint64_t* s2_1, uint64_t* bypass) noexcept nogil:
    # the magnitude bins of w levels of magnitude m >= 1, added to the counts
    cdef uint32_t k = 1, p, jj
    cdef uint64_t r, off, b1, b2
    cdef int j, ek
    while k <= <uint32_t> K:
        gt_n[k] += w
        if m <= k:
            return
        gt_1[k] += w
        k += 1
    r = m - <uint64_t> K - 1
    j = _bit_length((r >> eg_k) + 1) - 1      # the Exp-Golomb class of r
    for p in range(<uint32_t> j + 1):
        jj = p if p < N_POS - 1 else N_POS - 1
        pre_n[jj] += w
        if p < <uint32_t> j:
            pre_1[jj] += w
    ek = eg_k + j
    off = r - (((<uint64_t> 1 << j) - 1) << eg_k)
    jj = <uint32_t> j if j < N_POS - 1 else N_POS - 1
    if ek >= 1:
        b1 = (off >> (ek - 1)) & 1
        s1_n[jj] += w
        s1_1[jj] += b1 * w
        if ek >= 2:
            b2 = (off >> (ek - 2)) & 1
            s2_n[2 * jj + b1] += w
            s2_1[2 * jj + b1] += b2 * w
            bypass[0] += <uint64_t> (ek - 2) * w


def static_costs(const int32_t[::1] levels, Ks, Es, double penalty, double suffix_penalty):
    """For each candidate (Ks[c], Es[c]), an estimate in bits of what the magnitude bins
    (greater-than flags, remainder prefix and suffix) of the non-zero ``levels`` cost with
    that K and E: every bin position as one context with a fixed probability (the counted
    frequency, n * H(p) bits), plus ``penalty`` x log2(n + 1) for each greater-than or prefix
    position used (``suffix_penalty`` for the suffix contexts), a stand-in for what an
    adaptive context pays to learn. The bins common to all K and E (significance, sign)
    are left out. One pass over the levels (a histogram of the magnitudes), no coding."""
    cdef Py_ssize_t nc = len(Ks)
    if nc != len(Es):
        raise ValueError("as many Ks as Es needed")
    cdef Py_ssize_t c
    for c in range(nc):
        if Ks[c] < 0 or Ks[c] > MAX_K or Es[c] < 0 or Es[c] > MAX_EG_ORDER:
            raise ValueError("K or E out of range")
    cdef Py_ssize_t i, n = levels.shape[0], nd = 0
    # a histogram of the magnitudes up to cap (no larger than the data calls for), then the
    # distinct magnitudes with their counts; larger magnitudes are listed one by one
    cdef uint32_t cap = <uint32_t> (HIST_CAP if n > HIST_CAP // 2 else 2 * n + 16)
    cdef uint64_t* hist = <uint64_t*> calloc(cap + 1, sizeof(uint64_t))
    cdef uint32_t* dval = <uint32_t*> malloc((n + cap + 1) * sizeof(uint32_t))
    cdef uint64_t* dcnt = <uint64_t*> malloc((n + cap + 1) * sizeof(uint64_t))
    if hist == NULL or dval == NULL or dcnt == NULL:
        free(hist)
        free(dval)
        free(dcnt)
        raise MemoryError()
    cdef uint32_t m, v
    with nogil:
        for i in range(n):
            m = _mag(levels[i])
            if m <= cap:
                hist[m] += 1
            else:
                dval[nd] = m
                dcnt[nd] = 1
                nd += 1
        for v in range(1, cap + 1):
            if hist[v]:
                dval[nd] = v
                dcnt[nd] = hist[v]
                nd += 1
    free(hist)
    cdef uint64_t gt_n[MAX_K + 1]
    cdef uint64_t gt_1[MAX_K + 1]
    cdef uint64_t pre_n[N_POS]
    cdef uint64_t pre_1[N_POS]
    cdef uint64_t s1_n[N_POS]
    cdef uint64_t s1_1[N_POS]
    cdef uint64_t s2_n[2 * N_POS]
    cdef uint64_t s2_1[2 * N_POS]
    cdef uint64_t bypass
    cdef int K, E, t
    cdef double total
    out = []
    for c in range(nc):
        K = Ks[c]
        E = Es[c]
        with nogil:
            memset(gt_n, 0, sizeof(gt_n))
            memset(gt_1, 0, sizeof(gt_1))
            memset(pre_n, 0, sizeof(pre_n))
            memset(pre_1, 0, sizeof(pre_1))
            memset(s1_n, 0, sizeof(s1_n))
            memset(s1_1, 0, sizeof(s1_1))
            memset(s2_n, 0, sizeof(s2_n))
            memset(s2_1, 0, sizeof(s2_1))
            bypass = 0
            for i in range(nd):
                _static_count(dval[i], dcnt[i], K, E, gt_n, gt_1, pre_n, pre_1, s1_n, s1_1, s2_n, s2_1,
                              &bypass)
            total = 0.0
            for t in range(1, K + 1):
                total += _binary_cost(gt_n[t], gt_1[t], penalty)
            for t in range(N_POS):
                total += _binary_cost(pre_n[t], pre_1[t], penalty)
            for t in range(N_POS):
                total += _binary_cost(s1_n[t], s1_1[t], suffix_penalty)
                total += _binary_cost(s2_n[2 * t], s2_1[2 * t], suffix_penalty)
                total += _binary_cost(s2_n[2 * t + 1], s2_1[2 * t + 1], suffix_penalty)
            total += <double> bypass
        out.append(total)
    free(dval)
    free(dcnt)
    return out


cdef struct Dec:
    uint32_t range
    uint32_t code
    const uint8_t* buf
    size_t pos
    size_t n


cdef inline uint32_t _next_byte(Dec* d) noexcept nogil:
    cdef uint32_t b = 0
    if d.pos < d.n:
        b = d.buf[d.pos]
    d.pos += 1
    return b


cdef inline void _dec_renorm(Dec* d) noexcept nogil:
    # rare: callers test the range first
    while d.range < RANGE_TOP:
        d.range <<= 8
        d.code = (d.code << 8) | _next_byte(d)


cdef inline uint32_t _dec_bit(Dec* d, Ctx* c, Rates rt) noexcept nogil:
    # one context-coded bin, decoded without a branch on its value
    cdef uint32_t a = c.a
    cdef uint32_t b = c.b
    cdef uint32_t bound = (d.range >> 16) * (((a + b) >> (STATE_BITS + 1 - 16)) | 1u)
    cdef uint32_t bit = d.code >= bound
    cdef uint32_t mask = 0u - bit
    d.code -= bound & mask
    d.range = bound + ((d.range - bound - bound) & mask)
    _update_ab(c, a, b, bit, rt)
    if unlikely(d.range < RANGE_TOP):
        _dec_renorm(d)
    return bit


cdef inline uint32_t _dec_bit_br(Dec* d, Ctx* c, Rates rt) noexcept nogil:
    # one context-coded bin, decoded with a branch on its value: for skewed
    # bins (significance, greater-than, prefix), whose branches predict well
    cdef uint32_t a = c.a
    cdef uint32_t b = c.b
    cdef uint32_t bound = (d.range >> 16) * (((a + b) >> (STATE_BITS + 1 - 16)) | 1u)
    if d.code < bound:
        d.range = bound
        _update_ab(c, a, b, 0, rt)
        if unlikely(d.range < RANGE_TOP):
            _dec_renorm(d)
        return 0
    d.code -= bound
    d.range -= bound
    _update_ab(c, a, b, 1, rt)
    if unlikely(d.range < RANGE_TOP):
        _dec_renorm(d)
    return 1


cdef inline uint64_t _dec_bypass_bits(Dec* d, int nbits) noexcept nogil:
    cdef uint64_t v = 0
    cdef uint32_t rng, bit
    while nbits > 0:
        nbits -= 1
        rng = d.range >> 1
        bit = d.code >= rng
        d.code -= rng & (0u - bit)
        d.range = rng
        v = (v << 1) | bit
        if unlikely(rng < RANGE_TOP):
            _dec_renorm(d)
    return v


cdef int _decode_levels(Dec* dp, int32_t* out, Py_ssize_t n, Py_ssize_t row,
                        int K, int E, Rates rt, Ctx* ctx, int dq) noexcept nogil:
    # the copies of _decode_levels_k: with a branch on the warm-up for large tensors, without
    # for small ones (Rates.wb, known to the compiler in each copy)
    if n >= WARM_BRANCH_MIN:
        rt.wb = 1
        return _decode_levels_k(dp, out, n, row, K, E, rt, ctx, dq)
    rt.wb = 0
    return _decode_levels_k(dp, out, n, row, K, E, rt, ctx, dq)


cdef inline int _decode_levels_k(Dec* dp, int32_t* out, Py_ssize_t n, Py_ssize_t row,
                        int K, int E, Rates rt, Ctx* ctx, int dq) noexcept nogil:
    # one copy of the loop per (K, dq) with both known to the compiler, so that the
    # greater-than loop unrolls and the dq branches drop out where dq is 0
    if dq:
        if K == 0:
            return _decode_levels_t(dp, out, n, row, 0, E, rt, ctx, 1)
        if K == 1:
            return _decode_levels_t(dp, out, n, row, 1, E, rt, ctx, 1)
        if K == 2:
            return _decode_levels_t(dp, out, n, row, 2, E, rt, ctx, 1)
        return _decode_levels_t(dp, out, n, row, K, E, rt, ctx, 1)
    if K == 0:
        return _decode_levels_t(dp, out, n, row, 0, E, rt, ctx, 0)
    if K == 1:
        return _decode_levels_t(dp, out, n, row, 1, E, rt, ctx, 0)
    if K == 2:
        return _decode_levels_t(dp, out, n, row, 2, E, rt, ctx, 0)
    return _decode_levels_t(dp, out, n, row, K, E, rt, ctx, 0)


cdef inline int _decode_levels_t(Dec* dp, int32_t* out, Py_ssize_t n, Py_ssize_t row,
                                 int K, int E, Rates rt, Ctx* ctx, int dq) noexcept nogil:
    cdef Layout L = _layout(K, dq)
    cdef Ctx* sig_ctx = ctx
    cdef Ctx* sign_ctx = ctx + L.sign_off
    cdef Ctx* gt_ctx = ctx + L.gt_off
    cdef Ctx* pre_ctx = ctx + L.pre_off
    cdef Ctx* suf_ctx = ctx + L.suf_off
    cdef int st = 0          # the dependent quantizer's state (dq only)
    cdef Ctx* sgc = sig_ctx  # this level's sets of sig and gt contexts
    cdef Ctx* gtc = gt_ctx
    cdef Ctx* c
    cdef Ctx* sc
    cdef int32_t prev = 0
    cdef int32_t above = 0
    cdef int32_t q
    cdef uint32_t am, pm = 0, neg, k, j, b1, b2
    cdef uint64_t ew = 0, s, m, r, t
    cdef int ek
    cdef Py_ssize_t i
    cdef Py_ssize_t row_left = row
    # work on a local copy so the compiler can keep the coder state in registers
    cdef Dec dl = dp[0]
    cdef Dec* d = &dl
    cdef Py_ssize_t above_from = row if row > 0 else n
    for i in range(n):
        if row > 0:
            if row_left == 0:
                ew = 0
                row_left = row
            row_left -= 1
        if i >= above_from:
            above = out[i - row]
        am = _mag(above)
        s = (ew >> 2) + am + pm
        q = 0
        m = 0
        if dq:
            sgc = sig_ctx + N_SIG_CTX * (st >> 1)
            gtc = gt_ctx + K * N_MAG_CLASSES * (st >> 1)
        if _dec_bit_br(d, sgc + _sig_ctx(prev, am, ew), rt):
            neg = _dec_bit(d, sign_ctx + (_sign_class(prev) * 3 + _sign_class(above)), rt)
            k = 1
            c = gtc
            while k <= <uint32_t> K:
                if not _dec_bit_br(d, c + _mag_class(s, k), rt):
                    break
                k += 1
                c += N_MAG_CLASSES
            m = k            # the first k whose flag was 0, or K + 1
            if k > <uint32_t> K:
                ek = E
                j = 0
                r = 0
                t = <uint64_t> K + 1 + (<uint64_t> 1 << E)
                while _dec_bit_br(d, pre_ctx + (j * N_MAG_CLASSES + _mag_class(s, t)), rt):
                    r += (<uint64_t> 1 << ek)
                    ek += 1
                    if unlikely(ek > MAX_EG_PREFIX):
                        dp[0] = dl
                        return STATUS_BAD_ESCAPE
                    if j < N_POS - 1:
                        j += 1
                    t += (<uint64_t> 1 << ek)
                    if t > THRESHOLD_CAP:
                        t = THRESHOLD_CAP
                if ek > 0:
                    sc = suf_ctx + j * 3
                    b1 = _dec_bit(d, sc, rt)
                    r += (<uint64_t> b1) << (ek - 1)
                    if ek > 1:
                        b2 = _dec_bit(d, sc + 1 + b1, rt)
                        r += (<uint64_t> b2) << (ek - 2)
                        r += _dec_bypass_bits(d, ek - 2)
                m = <uint64_t> K + 1 + r
            if neg:
                if m > 2147483648ULL:
                    dp[0] = dl
                    return STATUS_OVERFLOW
                q = <int32_t> (-(<int64_t> m))
            else:
                if m > 2147483647ULL:
                    dp[0] = dl
                    return STATUS_OVERFLOW
                q = <int32_t> m
            if unlikely(d.pos > d.n + 8):
                # far past the end of the data: stop early on garbage
                dp[0] = dl
                return STATUS_TRUNCATED
        out[i] = q
        st = dq_next(st, m & 1)
        ew = ew + m - (ew >> 2)
        pm = <uint32_t> m
        prev = q
    dp[0] = dl
    return STATUS_OK


def decode_into(const uint8_t[::1] data, int32_t[::1] out, int K, int eg_k, Py_ssize_t row_length,
                int rates, int init, int dq=0):
    """Decode ``out.shape[0]`` levels from the coded body ``data`` into ``out``.

    Returns a status code (0 = ok). The whole body must be consumed exactly.
    """
    _check_params(K, eg_k, row_length, rates, init, dq)
    cdef Dec d
    cdef int status
    cdef int j
    cdef Py_ssize_t n = out.shape[0]
    cdef Rates rt = _rates(rates)
    cdef Ctx* ctx = _new_contexts(K, init, dq)
    if ctx == NULL:
        return STATUS_NO_MEMORY
    d.n = data.shape[0]
    d.buf = &data[0] if d.n > 0 else NULL
    d.pos = 0
    d.range = 0xFFFFFFFFU
    d.code = 0
    with nogil:
        for j in range(4):
            d.code = (d.code << 8) | _next_byte(&d)
        status = STATUS_OK
        if n > 0:
            status = _decode_levels(&d, &out[0], n, row_length, K, eg_k, rt, ctx, dq)
    free(ctx)
    if status != STATUS_OK:
        return status
    if d.pos > d.n + FLUSH_SLACK:
        return STATUS_TRUNCATED
    if d.pos < d.n + FLUSH_SLACK:
        return STATUS_TRAILING
    if d.code >= d.range:
        return STATUS_BAD_STATE
    return STATUS_OK


def magnitude_histogram(const int32_t[::1] levels, int cap):
    """Counts of min(|q|, cap + 1) over the levels (length cap + 2)."""
    if cap < 0 or cap > 1 << 20:
        raise ValueError("cap out of range")
    hist = np.zeros(cap + 2, dtype=np.int64)
    cdef int64_t[::1] h = hist
    cdef Py_ssize_t i, n = levels.shape[0]
    cdef uint32_t m, top = <uint32_t> cap + 1
    with nogil:
        for i in range(n):
            m = _mag(levels[i])
            if m > top:
                m = top
            h[m] += 1
    return hist


cdef extern from *:
    int __builtin_clzll(unsigned long long) nogil


cdef inline int _bit_length(uint64_t x) noexcept nogil:
    # x > 0 here
    return 64 - __builtin_clzll(x)


def remainder_histogram(const int32_t[::1] levels, int K):
    """Counts, for the levels above K, of the bit length (0..32) of the
    remainder r = |q| - K - 1."""
    hist = np.zeros(34, dtype=np.int64)
    cdef int64_t[::1] h = hist
    cdef Py_ssize_t i, n = levels.shape[0]
    cdef uint64_t m
    with nogil:
        for i in range(n):
            m = _mag(levels[i])
            if m > <uint64_t> K:
                m -= <uint64_t> K + 1
                h[_bit_length(m) if m else 0] += 1
    return hist
