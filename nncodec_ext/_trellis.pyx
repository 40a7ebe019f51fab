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

The rate model follows the CABAC coder's binarization (sig, sign, K
greater-than flags, Exp-Golomb remainder of order E) and its context choice
(previous two levels, level one row up). Its context probabilities adapt like
the coder's, block by block (a block is a row, or 256 levels without rows):
the costs are frozen while a block is searched, then the model learns from the
block's levels on the path that is best at that moment. It is an estimate;
the coder measures the real size.

``nncodec/quantize/rdq.py`` holds the pure-Python twin (same decisions) and the
policy (lambda, K and E, the acceptance test).
"""
from libc.math cimport rint, fabs, floor, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, calloc, free

ctypedef fused real:
    float
    double

DEF N_SIG = 18
DEF N_SIGN = 9
DEF N_GTC = 6
DEF MAXK = 64
DEF ONE30 = 1073741824
DEF REFRESH_MIN = 64

cdef int TRANS[4][2]
TRANS[0][0] = 0
TRANS[0][1] = 2
TRANS[1][0] = 2
TRANS[1][1] = 0
TRANS[2][0] = 1
TRANS[2][1] = 3
TRANS[3][0] = 3
TRANS[3][1] = 1


cdef struct Model:
    int K
    int E
    int nctx
    int64_t *a
    int64_t *b
    int32_t *n
    double *c0      # cost of bin 0 per context, bits
    double *c1      # cost of bin 1
    double *p1      # [neg][cls][j], j = 0..K: sum over i = 1..j of c1(gt(i, neg, cls))
    double *g0      # [neg][cls][j]: c0(gt(j, neg, cls))
    const double *table   # 4096 entries: -log2 of a 16-bit probability, by p >> 4


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
    cdef int sa = w if w < 8 else 8
    cdef int sb = w if w < 11 else 11
    m.a[i] = m.a[i] + ((t - m.a[i]) >> sa)
    m.b[i] = m.b[i] + ((t - m.b[i]) >> sb)
    if m.n[i] < 1023:
        m.n[i] += 1


cdef inline int gt_class(int64_t act, int64_t k) noexcept nogil:
    if act < k:
        return 0
    if act <= 2 * k:
        return 1
    return 2


cdef void refresh(Model *m) noexcept nogil:
    cdef int i, neg, c, j, K = m.K
    cdef int64_t p0
    cdef double s
    for i in range(m.nctx):
        p0 = ((m.a[i] + m.b[i]) >> 15) | 1
        m.c0[i] = m.table[p0 >> 4]
        m.c1[i] = m.table[(65536 - p0) >> 4]
    for neg in range(2):
        for c in range(3):
            s = 0.0
            m.p1[(neg * 3 + c) * (K + 1)] = 0.0
            m.g0[(neg * 3 + c) * (K + 1)] = 0.0
            for j in range(1, K + 1):
                i = N_SIG + N_SIGN + (j - 1) * N_GTC + neg * 3 + c
                s = s + m.c1[i]
                m.p1[(neg * 3 + c) * (K + 1) + j] = s
                m.g0[(neg * 3 + c) * (K + 1) + j] = m.c0[i]


cdef inline int64_t imin(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b


cdef inline double gt_bits(Model *m, int64_t mag, int neg, int64_t act) noexcept nogil:
    """Greater-than flags and Exp-Golomb remainder of a level of magnitude mag >= 1."""
    cdef int K = m.K
    cdef int64_t ones = imin(mag - 1, K)
    cdef int64_t h2 = (act - 1) // 2 if act >= 1 else 0
    cdef int64_t h1 = act
    cdef const double *P0 = m.p1 + (neg * 3 + 0) * (K + 1)
    cdef const double *P1 = m.p1 + (neg * 3 + 1) * (K + 1)
    cdef const double *P2 = m.p1 + (neg * 3 + 2) * (K + 1)
    cdef int64_t a2 = imin(ones, h2)
    cdef int64_t a1 = imin(ones, h1)
    cdef double bits = P2[a2] + (P1[a1] - P1[a2]) + (P0[ones] - P0[a1])
    cdef int64_t v, e
    if mag <= K:
        bits = bits + m.g0[(neg * 3 + gt_class(act, mag)) * (K + 1) + mag]
    else:
        v = mag - K - 1
        e = m.E
        while v >= ((<int64_t> 1) << e):
            v -= (<int64_t> 1) << e
            e += 1
        bits = bits + <double> (2 * (e - m.E) + 1 + m.E)
    return bits


cdef void learn(Model *m, const int32_t *lv, Py_ssize_t start, Py_ssize_t stop, Py_ssize_t row) noexcept nogil:
    """Adapt the contexts to the levels lv[start:stop] as the coder would code them."""
    cdef Py_ssize_t j
    cdef int64_t q, p, p2, ab, mag, act, k
    cdef int neg, flag
    for j in range(start, stop):
        q = lv[j]
        p = lv[j - 1] if j >= 1 else 0
        p2 = lv[j - 2] if j >= 2 else 0
        ab = lv[j - row] if (row > 0 and j >= row) else 0
        ctx_update(m, (cls(p) * 2 + (1 if p2 != 0 else 0)) * 3 + <int> imin(iabs(ab), 2), 1 if q != 0 else 0)
        if q != 0:
            neg = 1 if q < 0 else 0
            ctx_update(m, N_SIG + cls(p) * 3 + cls(ab), neg)
            mag = iabs(q)
            act = iabs(p) + iabs(ab)
            k = 1
            while k <= m.K:
                flag = 1 if mag > k else 0
                ctx_update(m, N_SIG + N_SIGN + <int> (k - 1) * N_GTC + neg * 3 + gt_class(act, k), flag)
                if not flag:
                    break
                k += 1


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
        kf = <int64_t> floor(a * 0.5)
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
    kf = <int64_t> floor((a + 1.0) * 0.5)
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
        kf = <int64_t> floor(a * 0.5)
    else:
        kf = <int64_t> floor((a + 1.0) * 0.5)
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


cdef inline double rate_bits(Model *m, int64_t k, int64_t p, int64_t p2, int64_t ab) noexcept nogil:
    cdef int cp = cls(p)
    cdef int sig = (cp * 2 + (1 if p2 != 0 else 0)) * 3 + <int> imin(iabs(ab), 2)
    cdef int neg
    if k == 0:
        return m.c0[sig]
    neg = 1 if k < 0 else 0
    return m.c1[sig] + (m.c1[N_SIG + cp * 3 + cls(ab)] if neg else m.c0[N_SIG + cp * 3 + cls(ab)]) \
        + gt_bits(m, iabs(k), neg, iabs(p) + iabs(ab))


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


def rd_quantize(const real[::1] w, double step, Py_ssize_t row, int K, int E, double lam,
                bint dq, const double[::1] table, int32_t[::1] out):
    """Choose the levels of ``w`` (coding order) into ``out``; see the module docstring.

    ``row``: row length for the level-above context (0: none); ``K``, ``E``: the
    binarization the rate model assumes; ``lam``: weight of the rate in units of
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
    cdef int64_t prv2[4]
    cdef int64_t pn[4]
    cdef int64_t p2n[4]
    cdef uint8_t bn[4]
    cdef int64_t ab, pk, pk2, act, amag
    cdef int neg, cp, cab, sig
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
        raise ValueError("K must be in 0..64 and E in 0..31")
    if not (step > 0.0) or not (lam >= 0.0):
        raise ValueError("step must be > 0 and lam >= 0")
    if row < 0 or row >= n:
        row = 0
    if n == 0:
        return 0.0
    blk = row if row > 0 else 256
    m.K = K
    m.E = E
    m.nctx = N_SIG + N_SIGN + N_GTC * K
    m.table = &table[0]
    m.a = <int64_t *> malloc(m.nctx * sizeof(int64_t))
    m.b = <int64_t *> malloc(m.nctx * sizeof(int64_t))
    m.n = <int32_t *> malloc(m.nctx * sizeof(int32_t))
    m.c0 = <double *> malloc(m.nctx * sizeof(double))
    m.c1 = <double *> malloc(m.nctx * sizeof(double))
    m.p1 = <double *> malloc(6 * (K + 1) * sizeof(double))
    m.g0 = <double *> malloc(6 * (K + 1) * sizeof(double))
    bp = <uint8_t *> malloc(n * S * sizeof(uint8_t))
    if (m.a == NULL or m.b == NULL or m.n == NULL or m.c0 == NULL or m.c1 == NULL
            or m.p1 == NULL or m.g0 == NULL or bp == NULL):
        free(m.a); free(m.b); free(m.n); free(m.c0); free(m.c1); free(m.p1); free(m.g0); free(bp)
        raise MemoryError()
    cdef int64_t gt_init = <int64_t> floor((1.0 - 2.0 ** (-6.0 / K)) * ONE30) if K > 0 else 0
    with nogil:
        for i in range(m.nctx):
            if i < N_SIG + N_SIGN:
                m.a[i] = ONE30 // 2
            else:
                m.a[i] = gt_init
            m.b[i] = m.a[i]
            m.n[i] = 0 if i < N_SIG else 31
        refresh(&m)
        for s in range(4):
            J[s] = INFINITY
            prv[s] = 0
            prv2[s] = 0
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
                    sig = (cp * 2 + (1 if prv2[s] != 0 else 0)) * 3 + <int> imin(iabs(ab), 2)
                    r0 = m.c0[sig]
                    r1 = m.c1[sig] + (m.c1[N_SIG + cp * 3 + cab] if neg else m.c0[N_SIG + cp * 3 + cab])
                    act = iabs(pk) + amag
                    for c in range(nc):
                        lc[c] = dd[c] + lam * (r0 if mg[c] == 0 else r1 + gt_bits(&m, mg[c], neg, act))
                    bcp = bcl
                    bdp = bdl
                    best_of_parity(nc, mg, lc, dq, lc, bcp, bdp)
                for par in range(2 if dq else 1):
                    c = bcp[par]
                    if c < 0:
                        continue
                    jn = J[s] + bdp[par]
                    t = TRANS[s][par] if dq else 0
                    if jn < Jn[t]:
                        Jn[t] = jn
                        bn[t] = <uint8_t> (s | (c << 2))
                        pn[t] = -mg[c] if neg else mg[c]
                        p2n[t] = prv[s]
            for t in range(S):
                J[t] = Jn[t]
                bp[i * S + t] = bn[t] if Jn[t] != INFINITY else 255
                if Jn[t] != INFINITY:
                    prv[t] = pn[t]
                    prv2[t] = p2n[t]
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
    free(m.a); free(m.b); free(m.n); free(m.c0); free(m.c1); free(m.p1); free(m.g0); free(bp)
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
            st = TRANS[st][iabs(k) & 1]
