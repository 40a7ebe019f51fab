# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Context-adaptive binary arithmetic coder for int32 quantization levels.

Hot loops only. Parameter choice, stream headers, validation and error
messages live in ``nncodec.entropy.cabac``; this module reports problems as
integer status codes.  ``nncodec/entropy/cabac_ref.py`` is a line-by-line
pure-Python twin that must produce the same bytes; change both together.
(For speed the loops here track the previous level's context class
incrementally and read _gt_class from a table; _sig_ctx, _sign_ctx and
_gt_class stay the definitions.)

Binarization of a level q (coding order = C order of the tensor):
  sig       q != 0                                   context coded
  sign      q < 0                                    context coded
  gt_k      |q| > k for k = 1..K, stops at first 0   context coded
  rem       |q| - K - 1 as Exp-Golomb of order E     bypass bins

Arithmetic coder: 32-bit range, 33-bit low with byte-wise carry propagation
(pending 0xFF bytes are held back), renormalization when the range drops
below 2**24.  Each context holds two 30-bit estimates of P(bin = 0) adapting
with shifts RATE_FAST and RATE_SLOW (faster while the context is young); the
coder uses their mean, rounded to 16 bits and forced odd (so never 0).
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy
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
    RATE_FAST = 8
    RATE_SLOW = 11
    PRIOR_COUNT = 31               # bins a prior-initialized context counts as seen
    WARMUP_MAX = 1023               # from here on both shifts are at their rates
    PROB_ONE = 65536               # coding probabilities are 16-bit
    STATE_BITS = 30                # estimator state precision
    STATE_ONE = 1073741824         # 2**30
    STATE_INIT = 536870912         # 2**29, P = 1/2
    RANGE_TOP = 16777216          # 2**24
    N_SIG_CTX = 18
    N_SIGN_CTX = 9
    N_GT_CLASSES = 6
    MAX_K = 64
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

cdef enum:
    MODE_WRITE = 0
    MODE_COST_FAST = 1
    MODE_COST_EXACT = 2

# -log2(p / 65536) for p = 16*i + 8, i < 4096: the fast cost estimate.
cdef double COST_TABLE[4096]
cdef int _i
for _i in range(4096):
    COST_TABLE[_i] = -log2((16.0 * _i + 8.0) / 65536.0)


def n_contexts(int K):
    """Number of adaptive contexts used for a given K."""
    return N_SIG_CTX + N_SIGN_CTX + K * N_GT_CLASSES


cdef struct Ctx:
    uint32_t a        # fast estimate of P(bin = 0), 30-bit fixed point
    uint32_t b        # slow estimate, 30-bit
    uint32_t n        # bins seen so far, saturating at WARMUP_MAX


# Adaptation shifts while a context is young: w(n) = 1 + floor(log2(n + 1)),
# so that a fresh context learns about as fast as a frequency count, then
# settles at the estimator's own rate. Packed: fast shift | slow shift << 8.
cdef uint16_t WARMUP_SHIFTS[WARMUP_MAX + 1]
cdef int _w
for _i in range(WARMUP_MAX + 1):
    _w = 1 + int(log2(_i + 1))
    WARMUP_SHIFTS[_i] = min(_w, RATE_FAST) | (min(_w, RATE_SLOW) << 8)


cdef inline uint32_t _p0(const Ctx* c) noexcept nogil:
    # mean of the two estimates as a 16-bit probability; "| 1" keeps it >= 1
    return ((c.a + c.b) >> (STATE_BITS + 1 - 16)) | 1u


cdef inline void _update_ab(Ctx* c, uint32_t a, uint32_t b, uint32_t bit) noexcept nogil:
    # move each estimate (a = c.a, b = c.b, already loaded) towards the observed
    # bin: state += (target - state) >> shift, with an arithmetic (flooring)
    # shift of the signed difference
    cdef int32_t target = <int32_t> ((bit - 1u) & STATE_ONE)
    cdef uint32_t w
    if likely(c.n >= WARMUP_MAX):
        c.a = <uint32_t> (<int32_t> a + ((target - <int32_t> a) >> RATE_FAST))
        c.b = <uint32_t> (<int32_t> b + ((target - <int32_t> b) >> RATE_SLOW))
    else:
        w = WARMUP_SHIFTS[c.n]
        c.a = <uint32_t> (<int32_t> a + ((target - <int32_t> a) >> (w & 0xFF)))
        c.b = <uint32_t> (<int32_t> b + ((target - <int32_t> b) >> (w >> 8)))
        c.n += 1


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
    while e.range < RANGE_TOP:
        e.range <<= 8
        _shift_low(e)


cdef inline void _enc_bit(Enc* e, Ctx* c, uint32_t bit, int mode) noexcept nogil:
    cdef uint32_t a = c.a
    cdef uint32_t b = c.b
    cdef uint32_t p = ((a + b) >> (STATE_BITS + 1 - 16)) | 1u      # _p0(c)
    cdef uint32_t bound
    if mode == MODE_WRITE:
        bound = (e.range >> 16) * p
        if bit:
            e.low += bound
            e.range -= bound
        else:
            e.range = bound
        _update_ab(c, a, b, bit)
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
        _update_ab(c, a, b, bit)


cdef inline void _enc_bit_select(Enc* e, Ctx* c, uint32_t bit, int mode) noexcept nogil:
    # _enc_bit() without a branch on the bin: for bins near p = 1/2 (the sign)
    cdef uint32_t a = c.a
    cdef uint32_t b = c.b
    cdef uint32_t bound
    cdef uint32_t mask
    if mode == MODE_WRITE:
        bound = (e.range >> 16) * (((a + b) >> (STATE_BITS + 1 - 16)) | 1u)
        mask = 0u - bit
        e.low += bound & mask
        e.range = bound + ((e.range - bound - bound) & mask)
        _update_ab(c, a, b, bit)
        if unlikely(e.range < RANGE_TOP):
            _enc_renorm(e)
    else:
        _enc_bit(e, c, bit, mode)


cdef inline void _enc_bypass(Enc* e, uint32_t bit, int mode) noexcept nogil:
    if mode == MODE_WRITE:
        e.range >>= 1
        e.low += e.range & (0u - bit)     # a select: bypass bins are coin flips
        while e.range < RANGE_TOP:
            e.range <<= 8
            _shift_low(e)
    else:
        e.bypass_bins += 1
        e.bits += 1.0


cdef inline void _enc_eg(Enc* e, uint64_t v, int k, int mode) noexcept nogil:
    while v >= (<uint64_t> 1 << k):
        _enc_bypass(e, 1, mode)
        v -= (<uint64_t> 1 << k)
        k += 1
    _enc_bypass(e, 0, mode)
    while k > 0:
        k -= 1
        _enc_bypass(e, <uint32_t> ((v >> k) & 1), mode)


cdef inline uint32_t _mag(int32_t q) noexcept nogil:
    # |q| as unsigned, exact also for -2**31
    if q < 0:
        return <uint32_t> (-(<int64_t> q))
    return <uint32_t> q


cdef inline int _sig_ctx(int32_t prev, int32_t prev2, uint32_t above_mag) noexcept nogil:
    cdef int cp = 0 if prev == 0 else (1 if prev < 0 else 2)
    cdef int ca = 2 if above_mag > 1 else <int> above_mag
    return (cp * 2 + (prev2 != 0)) * 3 + ca


cdef inline int _sign_ctx(int32_t prev, int32_t above) noexcept nogil:
    cdef int cp = 0 if prev == 0 else (1 if prev < 0 else 2)
    cdef int ca = 0 if above == 0 else (1 if above < 0 else 2)
    return cp * 3 + ca


cdef inline int _gt_class(uint64_t act, uint32_t k) noexcept nogil:
    # local activity against the threshold being tested
    if act < k:
        return 0
    if act <= 2 * k:
        return 1
    return 2


# _gt_class(act, k) * sizeof(Ctx) for act = 0..GT_ACT_CAP (act >= 2 * MAX_K + 1 all
# give class 2) and k = 0..MAX_K: a byte offset added to the context pointer.
cdef enum:
    GT_ACT_CAP = 2 * MAX_K + 1
cdef uint8_t GT_CLASS_OFFSET[GT_ACT_CAP + 1][MAX_K + 1]
for _i in range(GT_ACT_CAP + 1):
    for _w in range(MAX_K + 1):
        GT_CLASS_OFFSET[_i][_w] = <uint8_t> (_gt_class(_i, _w) * sizeof(Ctx))


cdef inline void _code_levels(const int32_t* lv, Py_ssize_t n, Py_ssize_t row,
                              int K, int eg_k, Ctx* ctx, Enc* ep, int mode) noexcept nogil:
    cdef Ctx* sig_ctx = ctx
    cdef Ctx* sign_ctx = ctx + N_SIG_CTX
    cdef Ctx* gt_ctx = ctx + N_SIG_CTX + N_SIGN_CTX
    cdef Ctx* c
    cdef const uint8_t* cls
    cdef const uint8_t* cls_end
    cdef int32_t prev = 0
    cdef int32_t above = 0
    cdef int32_t q
    cdef uint32_t m, am, neg
    cdef uint64_t act
    cdef Py_ssize_t i
    cdef Enc el = ep[0]
    cdef Enc* e = &el
    # prev_cls = 2 * sign class of prev (0 zero, 1 negative, 2 positive) + (prev2 != 0):
    # _sig_ctx(prev, prev2, am) = prev_cls * 3 + min(am, 2) and
    # _sign_ctx(prev, above) = (prev_cls >> 1) * 3 + sign class of above
    cdef uint32_t prev_cls = 0
    cdef Py_ssize_t above_from = row if row > 0 else n
    for i in range(n):
        q = lv[i]
        if i >= above_from:
            above = lv[i - row]
        am = _mag(above)
        c = sig_ctx + (prev_cls * 3 + (am if am < 2 else 2))
        if q == 0:
            _enc_bit(e, c, 0, mode)
            prev_cls = prev_cls >= 2
        else:
            _enc_bit(e, c, 1, mode)
            neg = q < 0
            m = _mag(q)
            _enc_bit_select(e, sign_ctx + ((prev_cls >> 1) * 3 + <uint32_t> (above != 0) + <uint32_t> (above > 0)),
                            neg, mode)
            prev_cls = 4 - 2 * neg + (prev_cls >= 2)
            # gt_k = 1 for k = 1..min(m - 1, K), then gt_m = 0 if m <= K;
            # cls[k] = _gt_class(act, k) * sizeof(Ctx)
            act = <uint64_t> _mag(prev) + am
            cls = GT_CLASS_OFFSET[act if act < GT_ACT_CAP else GT_ACT_CAP] + 1
            cls_end = cls + (m - 1 if m <= <uint32_t> K else <uint32_t> K)
            c = gt_ctx + neg * 3
            while cls != cls_end:
                _enc_bit(e, <Ctx*> (<char*> c + cls[0]), 1, mode)
                cls += 1
                c += N_GT_CLASSES
            if m <= <uint32_t> K:
                _enc_bit(e, <Ctx*> (<char*> c + cls[0]), 0, mode)
            else:
                _enc_eg(e, <uint64_t> m - <uint64_t> K - 1, eg_k, mode)
        prev = q
    ep[0] = el


# Initial P(bin = 0) of the gt contexts for each K, 30-bit: floor((1 - 2**(-6/K)) * 2**30)
# (fixed integers: part of the bitstream definition, formats/cabac-v1.md section 5)
cdef uint32_t GT_PRIOR[MAX_K + 1]
for _i, _v in enumerate([0, 1056964608, 939524096, 805306368, 694116761, 606368549, 536870912, 480988279, 435291115, 397326860, 365336408, 338040241, 314491699, 293978240, 275954714, 259997688, 245773691, 233016771, 221512373, 211085588, 201592454, 192913442, 184948507, 177613290, 170836173, 164555967, 158720090, 153283106, 148205554, 143453003, 138995274, 134805804, 130861124, 127140421, 123625172, 120298838, 117146609, 114155179, 111312564, 108607940, 106031508, 103574373, 101228444, 98986346, 96841339, 94787256, 92818439, 90929692, 89116230, 87373642, 85697857, 84085107, 82531904, 81035010, 79591421, 78198340, 76853163, 75553462, 74296970, 73081570, 71905277, 70766237, 69662706, 68593051, 67555737]):
    GT_PRIOR[_i] = _v


cdef Ctx* _new_contexts(int K) noexcept nogil:
    cdef Py_ssize_t nctx = N_SIG_CTX + N_SIGN_CTX + K * N_GT_CLASSES
    cdef Ctx* ctx = <Ctx*> malloc(nctx * sizeof(Ctx))
    cdef Py_ssize_t j
    if ctx != NULL:
        for j in range(nctx):
            ctx[j].a = STATE_INIT
            ctx[j].b = STATE_INIT
            ctx[j].n = 0
        # signs are close to fair coins: start as if 31 bins had been seen
        for j in range(N_SIG_CTX, N_SIG_CTX + N_SIGN_CTX):
            ctx[j].n = PRIOR_COUNT
        # K leaves about 1/64 of the non-zero levels above it: under a geometric
        # prior each flag |q| > k is 1 with probability 2**(-6/K)
        for j in range(N_SIG_CTX + N_SIGN_CTX, nctx):
            ctx[j].a = GT_PRIOR[K]
            ctx[j].b = GT_PRIOR[K]
            ctx[j].n = PRIOR_COUNT
    return ctx


def _check_params(int K, int eg_k, Py_ssize_t row):
    if K < 0 or K > MAX_K:
        raise ValueError(f"K must be in 0..{MAX_K}, got {K}")
    if eg_k < 0 or eg_k > MAX_EG_ORDER:
        raise ValueError(f"Exp-Golomb order must be in 0..{MAX_EG_ORDER}, got {eg_k}")
    if row < 0:
        raise ValueError("row length must be >= 0")


def encode(const int32_t[::1] levels, int K, int eg_k, Py_ssize_t row_length):
    """Arithmetic-code ``levels``; returns the coded body as bytes."""
    _check_params(K, eg_k, row_length)
    cdef Py_ssize_t n = levels.shape[0]
    cdef Enc e
    cdef int j
    cdef Ctx* ctx = _new_contexts(K)
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
        if n > 0:
            _code_levels(&levels[0], n, row_length, K, eg_k, ctx, &e, MODE_WRITE)
        for j in range(5):
            _shift_low(&e)
    free(ctx)
    try:
        if e.failed:
            raise MemoryError()
        return (<char*> e.buf)[:e.pos]
    finally:
        free(e.buf)


def cost(const int32_t[::1] levels, int K, int eg_k, Py_ssize_t row_length, bint exact=False):
    """Cost of coding ``levels`` under the adaptive model, without coding.

    Returns (bits, context_bins, bypass_bins). ``bits`` is the ideal code
    length, sum of -log2 p over context-coded bins plus one bit per bypass
    bin; ``exact=False`` uses a 4096-entry table (|error| < 0.2%), ``exact=True``
    calls log2 for every bin.
    """
    _check_params(K, eg_k, row_length)
    cdef Py_ssize_t n = levels.shape[0]
    cdef Enc e
    cdef Ctx* ctx = _new_contexts(K)
    if ctx == NULL:
        raise MemoryError()
    e.bits = 0.0
    e.ctx_bins = 0
    e.bypass_bins = 0
    with nogil:
        if n > 0:
            if exact:
                _code_levels(&levels[0], n, row_length, K, eg_k, ctx, &e, MODE_COST_EXACT)
            else:
                _code_levels(&levels[0], n, row_length, K, eg_k, ctx, &e, MODE_COST_FAST)
    free(ctx)
    return e.bits, e.ctx_bins, e.bypass_bins


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
    # rare (about one bin in twelve): callers test the range first
    while d.range < RANGE_TOP:
        d.range <<= 8
        d.code = (d.code << 8) | _next_byte(d)


cdef inline uint32_t _dec_bit_select(Dec* d, Ctx* c) noexcept nogil:
    # one context-coded bin, decoded without a branch on its value (the sign
    # is a coin flip); the other bins are spelled out in _decode_levels
    cdef uint32_t a = c.a
    cdef uint32_t b = c.b
    cdef uint32_t bound = (d.range >> 16) * (((a + b) >> (STATE_BITS + 1 - 16)) | 1u)
    cdef uint32_t mask = 0u - <uint32_t> (d.code >= bound)
    d.code -= bound & mask
    d.range = bound + ((d.range - bound - bound) & mask)
    _update_ab(c, a, b, mask & 1u)
    if unlikely(d.range < RANGE_TOP):
        _dec_renorm(d)
    return mask & 1u


cdef inline uint32_t _dec_bypass(Dec* d) noexcept nogil:
    cdef uint32_t rng = d.range >> 1
    cdef uint32_t code = d.code
    cdef uint32_t bit = code >= rng
    # a select, not a branch: bypass bins are coin flips
    d.code = code - (rng & (0u - bit))
    d.range = rng
    if unlikely(rng < RANGE_TOP):
        _dec_renorm(d)
    return bit


cdef int _decode_levels(Dec* dp, int32_t* out, Py_ssize_t n, Py_ssize_t row,
                        int K, int eg_k, Ctx* ctx) noexcept nogil:
    cdef Ctx* sig_ctx = ctx
    cdef Ctx* sign_ctx = ctx + N_SIG_CTX
    cdef Ctx* gt_ctx = ctx + N_SIG_CTX + N_SIGN_CTX
    cdef Ctx* c
    cdef Ctx* cc
    cdef const uint8_t* cls_row
    cdef const uint8_t* cls
    cdef const uint8_t* cls_end
    cdef int32_t prev = 0
    cdef int32_t above = 0
    cdef int32_t q
    cdef uint32_t am, neg, a, b, bound
    cdef uint64_t act
    cdef uint64_t m, v
    cdef int ek, j
    cdef Py_ssize_t i
    # work on a local copy so the compiler can keep the coder state in registers
    cdef Dec dl = dp[0]
    cdef Dec* d = &dl
    # prev_cls = 2 * sign class of prev (0 zero, 1 negative, 2 positive) + (prev2 != 0):
    # _sig_ctx(prev, prev2, am) = prev_cls * 3 + min(am, 2) and
    # _sign_ctx(prev, above) = (prev_cls >> 1) * 3 + sign class of above
    cdef uint32_t prev_cls = 0
    cdef Py_ssize_t above_from = row if row > 0 else n
    for i in range(n):
        if i >= above_from:
            above = out[i - row]
        am = _mag(above)
        q = 0
        cc = sig_ctx + (prev_cls * 3 + (am if am < 2 else 2))
        a = cc.a
        b = cc.b
        bound = (d.range >> 16) * (((a + b) >> (STATE_BITS + 1 - 16)) | 1u)
        if d.code < bound:
            # q == 0
            d.range = bound
            _update_ab(cc, a, b, 0)
            if unlikely(d.range < RANGE_TOP):
                _dec_renorm(d)
            prev_cls = prev_cls >= 2
        else:
            d.code -= bound
            d.range -= bound
            _update_ab(cc, a, b, 1)
            if unlikely(d.range < RANGE_TOP):
                _dec_renorm(d)
            neg = _dec_bit_select(d, sign_ctx + ((prev_cls >> 1) * 3 + <uint32_t> (above != 0) + <uint32_t> (above > 0)))
            prev_cls = 4 - 2 * neg + (prev_cls >= 2)
            # gt_k for k = 1..K; cls[k] = _gt_class(act, k) * sizeof(Ctx)
            act = <uint64_t> _mag(prev) + am
            cls_row = GT_CLASS_OFFSET[act if act < GT_ACT_CAP else GT_ACT_CAP]
            cls = cls_row + 1
            cls_end = cls + K
            c = gt_ctx + neg * 3
            while cls != cls_end:
                # the bin's branch is also the loop's exit
                cc = <Ctx*> (<char*> c + cls[0])
                a = cc.a
                b = cc.b
                bound = (d.range >> 16) * (((a + b) >> (STATE_BITS + 1 - 16)) | 1u)
                if d.code >= bound:
                    d.code -= bound
                    d.range -= bound
                    _update_ab(cc, a, b, 1)
                    if unlikely(d.range < RANGE_TOP):
                        _dec_renorm(d)
                    cls += 1
                    c += N_GT_CLASSES
                else:
                    d.range = bound
                    _update_ab(cc, a, b, 0)
                    if unlikely(d.range < RANGE_TOP):
                        _dec_renorm(d)
                    break
            m = <uint64_t> (cls - cls_row)        # k: the first gt_k that was 0, or K + 1
            if unlikely(cls == cls_end):
                ek = eg_k
                v = 0
                while _dec_bypass(d):
                    v += (<uint64_t> 1 << ek)
                    ek += 1
                    if ek > MAX_EG_PREFIX:
                        dp[0] = dl
                        return STATUS_BAD_ESCAPE
                for j in range(ek - 1, -1, -1):
                    v += (<uint64_t> _dec_bypass(d)) << j
                m = <uint64_t> K + 1 + v
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
        prev = q
    dp[0] = dl
    return STATUS_OK


def decode_into(const uint8_t[::1] data, int32_t[::1] out, int K, int eg_k, Py_ssize_t row_length):
    """Decode ``out.shape[0]`` levels from the coded body ``data`` into ``out``.

    Returns a status code (0 = ok). The whole body must be consumed exactly.
    """
    _check_params(K, eg_k, row_length)
    cdef Dec d
    cdef int status
    cdef int j
    cdef Py_ssize_t n = out.shape[0]
    cdef Ctx* ctx = _new_contexts(K)
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
            status = _decode_levels(&d, &out[0], n, row_length, K, eg_k, ctx)
    free(ctx)
    if status != STATUS_OK:
        return status
    if d.pos > d.n:
        return STATUS_TRUNCATED
    if d.pos < d.n:
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
