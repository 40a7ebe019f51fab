# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Rate-distortion optimized quantization and dependent (trellis-coded) quantization.

One routine, ``rd_quantize``, does both:

- uniform (``dq=False``): one state; each level is chosen among the rounded
  level, the one next to it toward zero, and 0, minimizing
  (x - level)^2 + lam * bits, where x = w / step and bits is the estimated code
  length of the level in its context (greedy, in coding order);
- dependent quantization (``dq=True``): four states, two quantizers (states 0
  and 1 reconstruct even multiples of the step, states 2 and 3 odd multiples and
  zero), the parity of each level drives the state machine; a Viterbi search
  over the whole tensor in coding order minimizes the same cost.

The rate model follows the CABAC coder's binarization (payload version 2: sig,
sign, K greater-than flags, Exp-Golomb classes of order E with context-coded
prefix and top two offset bits, the other offset bits bypass) and its context
choice (previous level, level one row up, running mean ``ew`` of the row's
magnitudes; each state of the search carries its own previous level and ew),
with the coder's K, E, adaptation shifts and initial states (prior tables when
init = 1); for DQ, the coder's dq contexts (sig and gt flags in a set per
quantizer, which each state of the search knows). Its context probabilities adapt like the coder's, block by block (a block is a row, or 256 levels without rows):
the costs are frozen while a block is searched, then the model learns from the
block's levels on the path that is best at that moment. It is an estimate;
the coder measures the real size.

Speed (same decisions as the general loop): DQ with lam = 0 runs ``fast_dq``
(costs in registers); DQ with lam > 0 takes, per survivor, the best candidate of
each parity (``dq_state_costs``) and then the cheaper of the two sources of each
state; the cost of a magnitude's gt/remainder bins depends only on the context
set, the magnitude and which class each bin's threshold puts the activity in,
so it is cached per (set, activity interval, magnitude) until the next refresh
(``cached_mag_bits``, tensors of 1024 levels or more).

``nncodec/quantize/rdq.py`` holds the pure-Python twin (same decisions) and the
policy (lambda, K and E, the acceptance test).
"""
from libc.math cimport rint, fabs, floor, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from nncodec_ext._dq cimport dq_next
from libc.stdlib cimport malloc, calloc, free

ctypedef fused real:
    float
    double

DEF N_SIG = 24
DEF N_SIGN = 9
DEF N_MC = 3
DEF N_POS = 16
DEF MAXK = 7
DEF ONE30 = 1073741824
DEF REFRESH_MIN = 64
DEF T_CAP = 1099511627776
DEF SMAX = 1024      # activities below this have a cached class (cost cache, see cached_mag_bits)
DEF MMAX = 128       # magnitudes below this have cached costs
DEF NI_MAX = 48      # at most this many activity intervals

# the coder's prior tables (formats/cabac-v1.md, section 5), P(bin = 0) in 1/256
cdef int SIG_PRIOR[24]
SIG_PRIOR[:] = [86, 57, 50, 36, 71, 55, 27, 23, 51, 29, 25, 16,
                61, 44, 39, 39, 40, 58, 27, 17, 28, 30, 24, 14]
cdef int GT_PRIOR[2][3]
GT_PRIOR[0][:] = [104, 68, 31]
GT_PRIOR[1][:] = [62, 58, 23]
cdef int PREFIX_PRIOR[4][3]
PREFIX_PRIOR[0][:] = [127, 112, 96]
PREFIX_PRIOR[1][:] = [186, 172, 158]
PREFIX_PRIOR[2][:] = [231, 205, 152]
PREFIX_PRIOR[3][:] = [245, 175, 152]
cdef int SUFFIX_PRIOR[5][3]
SUFFIX_PRIOR[0][:] = [141, 134, 135]
SUFFIX_PRIOR[1][:] = [164, 145, 147]
SUFFIX_PRIOR[2][:] = [203, 170, 171]
SUFFIX_PRIOR[3][:] = [221, 194, 174]
SUFFIX_PRIOR[4][:] = [229, 195, 195]

# the two (state, parity) pairs leading to each state, in the order the search tries them
cdef int SRC[4][4]
SRC[0][:] = [0, 0, 1, 1]
SRC[1][:] = [2, 0, 3, 1]
SRC[2][:] = [0, 1, 1, 0]
SRC[3][:] = [2, 1, 3, 0]


cdef struct Model:
    int K
    int E
    int fast        # the coder's adaptation shifts
    int slow
    int dq          # the coder's dq contexts: two sets of sig and gt, by the quantizer
    int sign        # first context of each kind (the coder's numbering)
    int gt
    int pre
    int suf
    int nctx
    int64_t ew      # the coder's running row mean (x4), carried between learned blocks
    int st          # and the dependent quantizer's state
    int64_t *a
    int64_t *b
    int32_t *n
    double *c0      # cost of bin 0 per context, bits
    double *c1      # cost of bin 1
    const double *table   # 4096 entries: -log2 of a 16-bit probability, by p >> 4
    # cache of mag_bits between refreshes: tab[(set * ni + sidx[s]) * MMAX + mag], valid when
    # stamp[...] == gen; sidx[s] numbers the intervals of activity s with the same context classes
    int ni
    uint8_t *sidx
    double *tab
    uint32_t *stamp
    uint32_t gen


cdef inline int cls(int64_t v) noexcept nogil:
    if v == 0:
        return 0
    if v < 0:
        return 1
    return 2


cdef inline int64_t iabs(int64_t v) noexcept nogil:
    return -v if v < 0 else v


cdef uint8_t WARM[1024]
cdef int _wi, _wm
for _wi in range(1024):
    # 1 + floor(log2(n + 1)), the adaptation shift of a young context
    _wm = _wi + 1
    WARM[_wi] = 1
    while _wm > 1:
        _wm >>= 1
        WARM[_wi] += 1


cdef inline void ctx_update(Model *m, int i, int bit) noexcept nogil:
    cdef int w = WARM[m.n[i]]
    cdef int64_t t = 0 if bit else ONE30
    cdef int sa = w if w < m.fast else m.fast
    cdef int sb = w if w < m.slow else m.slow
    m.a[i] = m.a[i] + ((t - m.a[i]) >> sa)
    m.b[i] = m.b[i] + ((t - m.b[i]) >> sb)
    if m.n[i] < 1023:
        m.n[i] += 1


cdef inline int mag_class(int64_t s, int64_t t) noexcept nogil:
    """The coder's context class of activity s against the magnitude t a bin tests."""
    if 2 * s < 3 * t:
        return 0
    if s <= 3 * t:
        return 1
    return 2


cdef void refresh(Model *m) noexcept nogil:
    cdef int i
    cdef int64_t p0
    if m.stamp != NULL:
        m.gen += 1
        if m.gen == 0:    # wrapped: forget every entry
            for i in range(2 * NI_MAX * MMAX):
                m.stamp[i] = 0
            m.gen = 1
    for i in range(m.nctx):
        p0 = ((m.a[i] + m.b[i]) >> 15) | 1
        m.c0[i] = m.table[p0 >> 4]
        m.c1[i] = m.table[(65536 - p0) >> 4]


cdef inline int64_t imin(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b


cdef double mag_bits(Model *m, int64_t mag, int64_t s, int gt) noexcept nogil:
    """Greater-than flags (contexts from ``gt`` on) and Exp-Golomb remainder of a magnitude >= 1
    at activity s."""
    cdef int K = m.K
    cdef double bits = 0.0
    cdef int64_t k = 1, r, e, j, t, b1, b2
    cdef int i
    while k <= K:
        i = gt + <int> (k - 1) * N_MC + mag_class(s, k)
        if mag > k:
            bits = bits + m.c1[i]
            k += 1
        else:
            return bits + m.c0[i]
    r = mag - K - 1
    e = m.E
    j = 0
    t = K + 1 + ((<int64_t> 1) << e)
    while r >= ((<int64_t> 1) << e):
        bits = bits + m.c1[m.pre + <int> j * N_MC + mag_class(s, t)]
        r -= (<int64_t> 1) << e
        e += 1
        j = imin(j + 1, N_POS - 1)
        t = imin(t + ((<int64_t> 1) << e), T_CAP)
    bits = bits + m.c0[m.pre + <int> j * N_MC + mag_class(s, t)]
    if e > 0:
        b1 = (r >> (e - 1)) & 1
        bits = bits + (m.c1[m.suf + <int> j * 3] if b1 else m.c0[m.suf + <int> j * 3])
        if e > 1:
            b2 = (r >> (e - 2)) & 1
            i = m.suf + <int> (j * 3 + 1 + b1)
            bits = bits + (m.c1[i] if b2 else m.c0[i])
            bits = bits + <double> (e - 2)
    return bits


cdef int activity_intervals(Model *m) noexcept nogil:
    """sidx[s] for s < SMAX: how many class boundaries (magnitude bins' thresholds t at 2s >= 3t
    and at s > 3t) s has passed. Every class is non-decreasing in s, so equal counts mean equal
    classes for all the bins mag_bits codes. Returns the number of intervals."""
    cdef int64_t sv, t, e
    cdef int k, cnt, top = 0, it
    for sv in range(SMAX):
        cnt = 0
        for k in range(1, m.K + 1):
            cnt += (1 if 2 * sv >= 3 * k else 0) + (1 if sv > 3 * k else 0)
        e = m.E
        t = m.K + 1 + ((<int64_t> 1) << e)
        it = 0
        while t <= SMAX and it < 64:
            cnt += (1 if 2 * sv >= 3 * t else 0) + (1 if sv > 3 * t else 0)
            e += 1
            t = imin(t + ((<int64_t> 1) << e), T_CAP)
            it += 1
        if cnt > 255:
            return NI_MAX + 1
        m.sidx[sv] = <uint8_t> cnt
        if cnt > top:
            top = cnt
    return top + 1


cdef inline double cached_mag_bits(Model *m, int64_t mag, int64_t s, int qs, int gt) noexcept nogil:
    """mag_bits(m, mag, s, gt) (gt: the first gt context of set qs), the same double, from the
    cache when it holds it."""
    cdef Py_ssize_t key
    cdef double v
    if m.stamp == NULL or mag >= MMAX or s >= SMAX:
        return mag_bits(m, mag, s, gt)
    key = (<Py_ssize_t> (qs * m.ni + m.sidx[s])) * MMAX + mag
    if m.stamp[key] == m.gen:
        return m.tab[key]
    v = mag_bits(m, mag, s, gt)
    m.tab[key] = v
    m.stamp[key] = m.gen
    return v


cdef void learn(Model *m, const int32_t *lv, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t row) noexcept nogil:
    """Adapt the contexts to the levels lv[start:stop] as the coder codes them."""
    cdef Py_ssize_t j
    cdef int64_t q, p, ab, mag, k, s, r, e, jj, t, b1
    cdef int64_t ew = m.ew
    cdef int flag, st = m.st, qs = 0
    for j in range(start, stop):
        if row > 0 and j % row == 0:
            ew = 0
        q = lv[j]
        p = lv[j - 1] if j >= 1 else 0
        ab = lv[j - row] if (row > 0 and j >= row) else 0
        s = (ew >> 2) + iabs(ab) + iabs(p)
        if m.dq:
            qs = st >> 1
        ctx_update(m, qs * N_SIG + ((1 if p != 0 else 0) * 3 + <int> imin(iabs(ab), 2)) * 4
                   + <int> imin(ew >> 2, 3), 1 if q != 0 else 0)
        mag = iabs(q)
        if q != 0:
            ctx_update(m, m.sign + cls(p) * 3 + cls(ab), 1 if q < 0 else 0)
            k = 1
            while k <= m.K:
                flag = 1 if mag > k else 0
                ctx_update(m, m.gt + qs * m.K * N_MC + <int> (k - 1) * N_MC + mag_class(s, k), flag)
                if not flag:
                    break
                k += 1
            if mag > m.K:
                r = mag - m.K - 1
                e = m.E
                jj = 0
                t = m.K + 1 + ((<int64_t> 1) << e)
                while r >= ((<int64_t> 1) << e):
                    ctx_update(m, m.pre + <int> jj * N_MC + mag_class(s, t), 1)
                    r -= (<int64_t> 1) << e
                    e += 1
                    jj = imin(jj + 1, N_POS - 1)
                    t = imin(t + ((<int64_t> 1) << e), T_CAP)
                ctx_update(m, m.pre + <int> jj * N_MC + mag_class(s, t), 0)
                if e > 0:
                    b1 = (r >> (e - 1)) & 1
                    ctx_update(m, m.suf + <int> jj * 3, <int> b1)
                    if e > 1:
                        ctx_update(m, m.suf + <int> (jj * 3 + 1 + b1), <int> ((r >> (e - 2)) & 1))
        ew = ew + mag - (ew >> 2)
        st = dq_next(st, mag & 1)
    m.ew = ew
    m.st = st


cdef inline int candidates(double a, int quant, bint dq, double zlim, int64_t *mag, double *dist) noexcept nogil:
    """Candidate magnitudes and their squared errors (in step units) for |x| = a. Zero is a
    candidate when it is one of the two nearest levels, or when a * a <= zlim."""
    cdef double r, f
    cdef int64_t kf
    cdef int nc = 0
    if a == 0.0:
        mag[0] = 0
        dist[0] = 0.0
        return 1
    if not dq:
        r = rint(a)
        kf = <int64_t> r
        if kf == 0:
            mag[0] = 0
            dist[0] = a * a
            return 1
        mag[0] = kf
        dist[0] = (a - r) * (a - r)
        nc = 1
        if kf > 1:
            f = r - 1.0
            mag[1] = kf - 1
            dist[1] = (a - f) * (a - f)
            nc = 2
        if kf > 1 and a * a > zlim:
            return nc
        mag[nc] = 0
        dist[nc] = a * a
        return nc + 1
    if quant == 0:   # even multiples: 2k
        kf = <int64_t> (a * 0.5)   # a >= 0: truncation is floor
        f = 2.0 * <double> kf
        mag[0] = kf
        dist[0] = (a - f) * (a - f)
        mag[1] = kf + 1
        dist[1] = (a - f - 2.0) * (a - f - 2.0)
        if kf == 0 or a * a > zlim:
            return 2
        mag[2] = 0
        dist[2] = a * a
        return 3
    # odd multiples and zero: 2k - 1 for k >= 1
    kf = <int64_t> ((a + 1.0) * 0.5)
    if kf == 0:
        mag[0] = 0
        dist[0] = a * a
        mag[1] = 1
        dist[1] = (a - 1.0) * (a - 1.0)
        return 2
    f = 2.0 * <double> kf - 1.0
    mag[0] = kf
    dist[0] = (a - f) * (a - f)
    mag[1] = kf + 1
    dist[1] = (a - f - 2.0) * (a - f - 2.0)
    if a * a > zlim:
        return 2
    mag[2] = 0
    dist[2] = a * a
    return 3


cdef inline int64_t cand_mag(double a, int quant, bint dq, int c) noexcept nogil:
    """The magnitude of candidate number c of ``candidates`` (without the errors)."""
    cdef int64_t kf
    if c == 2:
        return 0
    if not dq:
        kf = <int64_t> rint(a)
        if c == 0:
            return kf
        return kf - 1 if kf > 1 else 0
    if quant == 0:
        kf = <int64_t> (a * 0.5)
    else:
        kf = <int64_t> ((a + 1.0) * 0.5)
    return kf + c


cdef inline void best_of_parity(int nc, const int64_t *mag, const double *cost, bint dq,
                                double *unused, int *bc, double *bd) noexcept nogil:
    """For each parity of the magnitude (one class when not dq): the first candidate of least
    cost (bc: its index, -1 if none; bd: its cost)."""
    cdef int c, p
    bc[0] = -1
    bc[1] = -1
    bd[0] = INFINITY
    bd[1] = INFINITY
    for c in range(nc):
        p = <int> (mag[c] & 1) if dq else 0
        if bc[p] < 0 or cost[c] < bd[p]:
            bc[p] = c
            bd[p] = cost[c]


cdef inline void dq_best(double a, int quant, double zlim, int *bc, double *bd) noexcept nogil:
    """``candidates`` followed by ``best_of_parity`` for one quantizer of DQ, in fewer steps
    (the same choices: candidates kf, kf + 1, then 0; the first of least error per parity)."""
    cdef int64_t kf
    cdef double f, dA, dB
    if a == 0.0:
        bc[0] = 0
        bd[0] = 0.0
        bc[1] = -1
        bd[1] = INFINITY
        return
    if quant == 0:
        kf = <int64_t> (a * 0.5)
        f = 2.0 * <double> kf
    else:
        kf = <int64_t> ((a + 1.0) * 0.5)
        f = 2.0 * <double> kf - 1.0
    if quant == 1 and kf == 0:
        dA = a * a
        dB = (a - 1.0) * (a - 1.0)
    else:
        dA = (a - f) * (a - f)
        dB = (a - f - 2.0) * (a - f - 2.0)
    if (kf & 1) == 0:
        bc[0] = 0
        bd[0] = dA
        bc[1] = 1
        bd[1] = dB
    else:
        bc[1] = 0
        bd[1] = dA
        bc[0] = 1
        bd[0] = dB
    if kf != 0 and a * a <= zlim and a * a < bd[0]:
        bc[0] = 2
        bd[0] = a * a


cdef void fast_dq(const real[::1] w, double step, Py_ssize_t n, double zlim, uint8_t *bp,
                  double *Jout) noexcept nogil:
    cdef Py_ssize_t i
    cdef double J0 = 0.0, J1 = INFINITY, J2 = INFINITY, J3 = INFINITY
    cdef double A, B, n0, n1, n2, n3, x, a
    cdef int64_t mag0[3]
    cdef int64_t mag1[3]
    cdef double d0[3]
    cdef double d1[3]
    cdef int bc0[2]
    cdef int bc1[2]
    cdef double bd0[2]
    cdef double bd1[2]
    cdef int nc0, nc1
    cdef uint8_t b0, b1, b2, b3
    cdef double inv = 1.0 / step
    for i in range(n):
        a = fabs(<double> w[i] * inv)
        dq_best(a, 0, zlim, bc0, bd0)
        dq_best(a, 1, zlim, bc1, bd1)
        # target 0: (state 0, even), (state 1, odd); target 2: (0, odd), (1, even)
        # target 1: (state 2, even), (state 3, odd); target 3: (2, odd), (3, even)
        A = J0 + bd0[0]
        B = J1 + bd0[1]
        n0 = B if B < A else A
        b0 = <uint8_t> ((1 | (bc0[1] << 2)) if B < A else (bc0[0] << 2))
        A = J0 + bd0[1]
        B = J1 + bd0[0]
        n2 = B if B < A else A
        b2 = <uint8_t> ((1 | (bc0[0] << 2)) if B < A else (bc0[1] << 2))
        A = J2 + bd1[0]
        B = J3 + bd1[1]
        n1 = B if B < A else A
        b1 = <uint8_t> ((3 | (bc1[1] << 2)) if B < A else (2 | (bc1[0] << 2)))
        A = J2 + bd1[1]
        B = J3 + bd1[0]
        n3 = B if B < A else A
        b3 = <uint8_t> ((3 | (bc1[0] << 2)) if B < A else (2 | (bc1[1] << 2)))
        J0 = n0
        J1 = n1
        J2 = n2
        J3 = n3
        bp[4 * i] = b0 if n0 != INFINITY else 255
        bp[4 * i + 1] = b1 if n1 != INFINITY else 255
        bp[4 * i + 2] = b2 if n2 != INFINITY else 255
        bp[4 * i + 3] = b3 if n3 != INFINITY else 255
    Jout[0] = J0
    Jout[1] = J1
    Jout[2] = J2
    Jout[3] = J3


cdef inline void dq_state_costs(Model *m, int s, int64_t pk, int64_t ews, int64_t amag, int cab, int neg,
                                int nc, const int64_t *mg, const double *dd, double lam,
                                double *bd, int *bc) noexcept nogil:
    """For DQ with lam > 0: the best candidate of each parity (bc: index, bd: D + lam R) for
    the survivor in state s; the same as the general loop's rates and ``best_of_parity``
    (candidates kf and kf + 1, of different parities, then 0, which is even and wins only with
    a smaller cost)."""
    cdef int qs = s >> 1
    cdef int cp = cls(pk)
    cdef int sig = qs * N_SIG + ((1 if pk != 0 else 0) * 3 + <int> imin(amag, 2)) * 4 \
        + <int> imin(ews >> 2, 3)
    cdef double r0 = m.c0[sig]
    cdef double r1 = m.c1[sig] + (m.c1[m.sign + cp * 3 + cab] if neg else m.c0[m.sign + cp * 3 + cab])
    cdef int64_t act = (ews >> 2) + amag + iabs(pk)
    cdef int gtb = m.gt + qs * m.K * N_MC
    cdef double l0, l1, lz
    cdef int p
    if nc == 1:   # a == 0: zero only
        bc[0] = 0
        bd[0] = dd[0] + lam * r0
        bc[1] = -1
        bd[1] = INFINITY
        return
    l0 = dd[0] + lam * (r0 if mg[0] == 0 else r1 + cached_mag_bits(m, mg[0], act, qs, gtb))
    l1 = dd[1] + lam * (r1 + cached_mag_bits(m, mg[1], act, qs, gtb))
    p = <int> (mg[0] & 1)
    bc[p] = 0
    bd[p] = l0
    bc[p ^ 1] = 1
    bd[p ^ 1] = l1
    if nc == 3:
        lz = dd[2] + lam * r0
        if lz < bd[0]:
            bc[0] = 2
            bd[0] = lz


def rd_quantize(const real[::1] w, double step, Py_ssize_t row, int K, int E, int rates, int init,
                double lam, bint dq, const double[::1] table, int32_t[::1] out):
    """Choose the levels of ``w`` (coding order) into ``out``; see the module docstring.

    ``row``: row length for the level-above context (0: none); ``K``, ``E``,
    ``rates`` (fast | slow << 4) and ``init``: the coder parameters the rate model assumes; ``lam``: weight of the rate in units of
    step**2 per bit (0: distortion only); ``table``: cost in bits of a 16-bit
    probability p, indexed by p >> 4 (4096 doubles). Returns the squared error
    sum((w - reconstruction)**2) in the units of w."""
    cdef Py_ssize_t n = w.shape[0]
    cdef Py_ssize_t i, j, blk, last_blk
    cdef int S = 4 if dq else 1
    cdef int s, t, c, nc0, nc1, nc, q, best
    cdef double x, a, jn, rr, err, v
    cdef int64_t k, st
    cdef int64_t mag0[3]
    cdef int64_t mag1[3]
    cdef double d0[3]
    cdef double d1[3]
    cdef int64_t *mg
    cdef double *dd
    cdef double J[4]
    cdef double Jn[4]
    cdef int64_t prv[4]
    cdef int64_t ew[4]
    cdef int64_t pn[4]
    cdef int64_t ewn[4]
    cdef uint8_t bn[4]
    cdef int64_t ab, pk, pk2, act, amag
    cdef int neg, cp, cab, sig, qs, gtb, sa, sb, pa, pb
    cdef double A, B
    cdef double sbd[8]
    cdef int sbc[8]
    cdef int64_t *mgp
    cdef double r0, r1
    cdef double lc[3]
    cdef int bc0[2]
    cdef int bc1[2]
    cdef int bcl[2]
    cdef double bd0[2]
    cdef double bd1[2]
    cdef double bdl[2]
    cdef int *bcp
    cdef double *bdp
    cdef int par
    cdef Py_ssize_t n_done
    cdef double zlim = 4.0 + 64.0 * lam
    cdef double inv = 1.0 / step
    cdef Model m
    cdef uint8_t *bp
    cdef Py_ssize_t learned = 0
    cdef Py_ssize_t until = 0
    if out.shape[0] != n:
        raise ValueError("output length differs from input length")
    if table.shape[0] != 4096:
        raise ValueError("cost table must have 4096 entries")
    if K < 0 or K > MAXK or E < 0 or E > 31:
        raise ValueError("K must be in 0..7 and E in 0..31")
    if not (1 <= (rates & 15) <= 8 and 4 <= (rates >> 4) <= 11) or init < 0 or init > 1:
        raise ValueError("rates must be fast | slow << 4 (fast 1..8, slow 4..11), init 0 or 1")
    if not (step > 0.0) or not (lam >= 0.0):
        raise ValueError("step must be > 0 and lam >= 0")
    if row < 0 or row >= n:
        row = 0
    if n == 0:
        return 0.0
    blk = row if row > 0 else 256
    m.K = K
    m.E = E
    m.fast = rates & 15
    m.slow = rates >> 4
    m.dq = 1 if dq else 0
    m.sign = N_SIG * (1 + m.dq)
    m.gt = m.sign + N_SIGN
    m.pre = m.gt + N_MC * K * (1 + m.dq)
    m.suf = m.pre + N_MC * N_POS
    m.nctx = m.suf + 3 * N_POS
    m.ew = 0
    m.st = 0
    m.table = &table[0]
    m.a = <int64_t *> malloc(m.nctx * sizeof(int64_t))
    m.b = <int64_t *> malloc(m.nctx * sizeof(int64_t))
    m.n = <int32_t *> malloc(m.nctx * sizeof(int32_t))
    m.c0 = <double *> malloc(m.nctx * sizeof(double))
    m.c1 = <double *> malloc(m.nctx * sizeof(double))
    bp = <uint8_t *> malloc(n * S * sizeof(uint8_t))
    m.sidx = NULL
    m.tab = NULL
    m.stamp = NULL
    m.gen = 1
    m.ni = 0
    if lam > 0.0 and n >= 1024:
        m.sidx = <uint8_t *> malloc(SMAX * sizeof(uint8_t))
        m.tab = <double *> malloc(2 * NI_MAX * MMAX * sizeof(double))
        m.stamp = <uint32_t *> calloc(2 * NI_MAX * MMAX, sizeof(uint32_t))
        if m.sidx == NULL or m.tab == NULL or m.stamp == NULL:
            free(m.sidx); free(m.tab); free(m.stamp)
            m.sidx = NULL
            m.tab = NULL
            m.stamp = NULL
        else:
            m.ni = activity_intervals(&m)
            if m.ni > NI_MAX:
                free(m.sidx); free(m.tab); free(m.stamp)
                m.sidx = NULL
                m.tab = NULL
                m.stamp = NULL
    if (m.a == NULL or m.b == NULL or m.n == NULL or m.c0 == NULL or m.c1 == NULL
            or bp == NULL):
        free(m.a); free(m.b); free(m.n); free(m.c0); free(m.c1); free(bp)
        free(m.sidx); free(m.tab); free(m.stamp)
        raise MemoryError()
    with nogil:
        for i in range(m.nctx):
            m.a[i] = ONE30 // 2
            m.n[i] = 31 if (i >= m.sign and i < m.gt) else 0
        if init:
            # the coder's prior tables: a = b = v * 2^22, n = 8 (sign contexts keep theirs)
            for i in range(m.sign):
                m.a[i] = (<int64_t> SIG_PRIOR[i % N_SIG]) << 22
                m.n[i] = 8
            for i in range(m.pre - m.gt):
                m.a[m.gt + i] = (<int64_t> GT_PRIOR[1 if i % (N_MC * K) >= N_MC else 0][i % N_MC]) << 22
                m.n[m.gt + i] = 8
            for i in range(N_MC * N_POS):
                m.a[m.pre + i] = (<int64_t> PREFIX_PRIOR[imin(i // N_MC, 3)][i % N_MC]) << 22
                m.n[m.pre + i] = 8
                m.a[m.suf + i] = (<int64_t> SUFFIX_PRIOR[imin(i // 3, 4)][i % 3]) << 22
                m.n[m.suf + i] = 8
        for i in range(m.nctx):
            m.b[i] = m.a[i]
        refresh(&m)
        for s in range(4):
            J[s] = INFINITY
            prv[s] = 0
            ew[s] = 0
        J[0] = 0.0
        until = blk
        if dq and lam == 0.0:
            # distortion only, four states: the same search as the general loop below (same
            # order of comparison, same ties), with the survivors' costs in registers
            fast_dq(w, step, n, zlim, bp, J)
            n_done = n
        else:
            n_done = 0
        for i in range(n_done, n):
            if i == until:
                until += blk
            if lam > 0.0 and i > 0 and i == until - blk:
                # tentative levels of the block just searched: the path of the best state now
                best = 0
                for s in range(1, S):
                    if J[s] < J[best]:
                        best = s
                t = best
                j = i - 1
                while j >= i - blk:
                    s = bp[j * S + t] & 3
                    c = bp[j * S + t] >> 2
                    x = (<double> w[j] * inv) if dq else (<double> w[j] / step)
                    q = (s >> 1) if dq else 0
                    k = cand_mag(fabs(x), q, dq, c)
                    out[j] = <int32_t> (-k if x < 0.0 else k)
                    t = s
                    j -= 1
                learn(&m, &out[0], i - blk, i, row)
                learned += blk
                if learned >= REFRESH_MIN:
                    refresh(&m)
                    learned = 0
            x = (<double> w[i] * inv) if dq else (<double> w[i] / step)
            a = fabs(x)
            neg = 1 if x < 0.0 else 0
            nc0 = candidates(a, 0, dq, zlim, mag0, d0)
            nc1 = candidates(a, 1, dq, zlim, mag1, d1) if dq else 0
            ab = out[i - row] if (row > 0 and i >= row) else 0
            cab = cls(ab)
            amag = iabs(ab)
            if row > 0 and i % row == 0:
                for s in range(4):
                    ew[s] = 0
            if dq and lam > 0.0:
                # four states, rates from each survivor's context; target t takes the cheaper
                # of its two sources (the first on ties), as the general loop below does
                for s in range(4):
                    if s < 2:
                        dq_state_costs(&m, s, prv[s], ew[s], amag, cab, neg, nc0, mag0, d0, lam,
                                       &sbd[2 * s], &sbc[2 * s])
                    else:
                        dq_state_costs(&m, s, prv[s], ew[s], amag, cab, neg, nc1, mag1, d1, lam,
                                       &sbd[2 * s], &sbc[2 * s])
                for t in range(4):
                    # sources of target t: (s_a, parity p_a) first, then (s_b, p_b)
                    sa = SRC[t][0]
                    pa = SRC[t][1]
                    sb = SRC[t][2]
                    pb = SRC[t][3]
                    A = J[sa] + sbd[2 * sa + pa]
                    B = J[sb] + sbd[2 * sb + pb]
                    if B < A:
                        sa = sb
                        pa = pb
                        A = B
                    Jn[t] = A
                    if A != INFINITY:
                        c = sbc[2 * sa + pa]
                        mgp = &mag1[0] if sa >= 2 else &mag0[0]
                        bn[t] = <uint8_t> (sa | (c << 2))
                        pn[t] = -mgp[c] if neg else mgp[c]
                        ewn[t] = ew[sa] + mgp[c] - (ew[sa] >> 2)
                for t in range(4):
                    J[t] = Jn[t]
                    bp[i * 4 + t] = bn[t] if Jn[t] != INFINITY else 255
                    if Jn[t] != INFINITY:
                        prv[t] = pn[t]
                        ew[t] = ewn[t]
                continue
            for t in range(S):
                Jn[t] = INFINITY
            if lam == 0.0:
                # distortion only: the best candidate of each parity is the same for both
                # states that share a quantizer
                best_of_parity(nc0, mag0, d0, dq, lc, bc0, bd0)
                if dq:
                    best_of_parity(nc1, mag1, d1, dq, lc, bc1, bd1)
            for s in range(S):
                if J[s] == INFINITY:
                    continue
                if dq and s >= 2:
                    mg = mag1
                    dd = d1
                    nc = nc1
                    bcp = bc1
                    bdp = bd1
                else:
                    mg = mag0
                    dd = d0
                    nc = nc0
                    bcp = bc0
                    bdp = bd0
                if lam > 0.0:
                    # the parts of the rate that depend on this path's context, not on the level
                    pk = prv[s]
                    cp = cls(pk)
                    qs = (s >> 1) if m.dq else 0
                    sig = qs * N_SIG + ((1 if pk != 0 else 0) * 3 + <int> imin(amag, 2)) * 4 \
                        + <int> imin(ew[s] >> 2, 3)
                    r0 = m.c0[sig]
                    r1 = m.c1[sig] + (m.c1[m.sign + cp * 3 + cab] if neg else m.c0[m.sign + cp * 3 + cab])
                    act = (ew[s] >> 2) + amag + iabs(pk)
                    gtb = m.gt + qs * K * N_MC
                    for c in range(nc):
                        lc[c] = dd[c] + lam * (r0 if mg[c] == 0 else r1 + cached_mag_bits(&m, mg[c], act, qs, gtb))
                    bcp = bcl
                    bdp = bdl
                    best_of_parity(nc, mg, lc, dq, lc, bcp, bdp)
                for par in range(2 if dq else 1):
                    c = bcp[par]
                    if c < 0:
                        continue
                    jn = J[s] + bdp[par]
                    t = dq_next(s, par) if dq else 0
                    if jn < Jn[t]:
                        Jn[t] = jn
                        bn[t] = <uint8_t> (s | (c << 2))
                        pn[t] = -mg[c] if neg else mg[c]
                        ewn[t] = ew[s] + mg[c] - (ew[s] >> 2)
            for t in range(S):
                J[t] = Jn[t]
                bp[i * S + t] = bn[t] if Jn[t] != INFINITY else 255
                if Jn[t] != INFINITY:
                    prv[t] = pn[t]
                    ew[t] = ewn[t]
        # final path
        best = 0
        for s in range(1, S):
            if J[s] < J[best]:
                best = s
        t = best
        j = n - 1
        err = 0.0   # squared error of the reconstruction the decoder will make, summed from the end
        while dq and j >= 0:
            # DQ: the same as the general loop below, without branches on the data
            s = bp[j * S + t] & 3
            c = bp[j * S + t] >> 2
            x = <double> w[j] * inv
            q = s >> 1
            k = (<int64_t> ((fabs(x) + <double> q) * 0.5) + c) if c != 2 else 0
            k = -k if x < 0.0 else k
            out[j] = <int32_t> k
            v = <double> (2 * k - q * ((k > 0) - (k < 0))) * step
            rr = <double> w[j] - v
            err = err + rr * rr
            t = s
            j -= 1
        while j >= 0:
            s = bp[j * S + t] & 3
            c = bp[j * S + t] >> 2
            x = (<double> w[j] * inv) if dq else (<double> w[j] / step)
            q = (s >> 1) if dq else 0
            k = cand_mag(fabs(x), q, dq, c)
            if x < 0.0:
                k = -k
            out[j] = <int32_t> k
            if dq and q == 1:
                v = <double> (2 * k - (1 if k > 0 else (-1 if k < 0 else 0))) * step
            elif dq:
                v = <double> (2 * k) * step
            else:
                v = <double> k * step
            rr = <double> w[j] - v
            err = err + rr * rr
            t = s
            j -= 1
    free(m.a); free(m.b); free(m.n); free(m.c0); free(m.c1); free(bp)
    free(m.sidx); free(m.tab); free(m.stamp)
    return err


def dq_reconstruct(const int32_t[::1] levels, double step, double[::1] out):
    """Decoder side of dependent quantization: replay the 4-state machine from state 0;
    a level k in states 0/1 means 2k * step, in states 2/3 (2k - sign(k)) * step."""
    cdef Py_ssize_t i, n = levels.shape[0]
    cdef int st = 0
    cdef int64_t k
    if out.shape[0] != n:
        raise ValueError("output length differs from input length")
    with nogil:
        for i in range(n):
            k = levels[i]
            if st >= 2:
                out[i] = <double> (2 * k - (1 if k > 0 else (-1 if k < 0 else 0))) * step
            else:
                out[i] = <double> (2 * k) * step
            st = dq_next(st, iabs(k) & 1)
