# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Layered normalized min-sum decoding of quasi-cyclic LDPC codes in 16-bit fixed point (hot
loops only).

The code is described by its prototype: for block row i, the non-zero blocks are
``row_ptr[i] <= e < row_ptr[i+1]`` with block column ``cols[e]`` and cyclic shift ``shifts[e]``
(row r of the block connects to variable ``cols[e] * z + (r + shifts[e]) % z``). One layer is one
block row.

Frame interleaving: ``LANES`` codewords are decoded side by side. Every message and posterior is
stored as ``LANES`` consecutive int16 values, one per codeword, so every inner loop runs over the
lanes with a fixed trip count and no wrap-around or remainder: the C compiler turns it into
plain SIMD code (SSE2 on any x86-64, NEON on ARM) without target-specific flags. A codeword
that has converged keeps its lane until the whole group is done, but its hard decisions and
iteration count are taken at the iteration at which its syndrome became zero, so the result of
every codeword is the same as decoding it alone.

Arithmetic (the numpy twin in ``nncodec.channel.ldpc`` follows it exactly): posteriors L are
clamped to +-lmax; q = L - R; the check node keeps the two smallest |q| (first index of the
smallest, strict comparison), and the XOR of the q's (its sign bit is the parity of the
negative q's); the new message to edge k has magnitude (min(m, lmax) * alpha_q + 2**14) >> 15 (rounded), m being
the second smallest |q| if k holds the smallest else the smallest, and the sign of the product of
the other edges' q (zero counts as positive); L = clamp(q + R, +-lmax). With lmax <= 8191 no
intermediate leaves int16: |R| <= lmax, |q| <= 2 lmax, |q + R| <= 3 lmax.
LLR convention: positive means bit 0. Validation, quantization and policy live in
``nncodec.channel.ldpc``.
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memset

cdef enum:
    W = 16          # codewords decoded side by side (SIMD lanes)

LANES = W

cdef extern from *:
    # restrict-qualified pointers: the buffers of one step never overlap, which lets the C
    # compiler vectorize the loops over the lanes without run-time alias checks
    ctypedef short* sptr "short *__restrict__"
    ctypedef const short* csptr "const short *__restrict__"


cdef inline short _min(short a, short b) noexcept nogil:
    return a if a < b else b


cdef inline short _max(short a, short b) noexcept nogil:
    return a if a > b else b


cdef inline void _check_in(csptr Lp, csptr Rp, sptr qp, sptr m1, sptr m2, sptr idx, sptr sg,
                           short k) noexcept nogil:
    """One edge into the check node, all lanes: q = L - R (stored), running two smallest |q|,
    index of the smallest, XOR of the q's."""
    cdef int w
    cdef short q, a, o1
    for w in range(W):
        q = <short>(Lp[w] - Rp[w])
        qp[w] = q
        a = _max(q, <short>(-q))
        o1 = m1[w]
        m2[w] = _min(m2[w], _max(a, o1))
        idx[w] = idx[w] ^ ((idx[w] ^ k) & <short>(-(a < o1)))
        m1[w] = _min(a, o1)
        sg[w] = sg[w] ^ q


cdef inline void _check_out(sptr Lp, sptr Rp, csptr qp, csptr g1, csptr g2, csptr idx, csptr sg,
                            short k, short lmax) noexcept nogil:
    """New message to one edge and its posterior, all lanes."""
    cdef int w
    cdef short q, sel, mag, neg, rn, t
    for w in range(W):
        q = qp[w]
        sel = <short>(-(idx[w] == k))               # all ones where this edge holds the minimum
        mag = g1[w] ^ ((g1[w] ^ g2[w]) & sel)
        neg = (q ^ sg[w]) >> 15                     # all ones where the other signs multiply to -1
        rn = <short>((mag ^ neg) - neg)
        Rp[w] = rn
        t = <short>(q + rn)
        Lp[w] = _min(_max(t, <short>(-lmax)), lmax)


cdef void _syndrome(csptr L, const int* row_ptr, const int* cols, const int* shifts, int mb,
                    int z, const unsigned char* skip, sptr acc, sptr par) noexcept nogil:
    """Per lane: acc < 0 when some parity check fails on the hard decisions (L < 0). Stops early
    once every lane not marked in ``skip`` has a failing check."""
    cdef int i, e, r, v, w, k, stop
    memset(acc, 0, W * sizeof(short))
    for i in range(mb):
        for r in range(z):
            memset(par, 0, W * sizeof(short))
            for e in range(row_ptr[i], row_ptr[i + 1]):
                v = r + shifts[e]
                if v >= z:
                    v -= z
                v = (cols[e] * z + v) * W
                for w in range(W):
                    par[w] = par[w] ^ L[v + w]
            for w in range(W):
                acc[w] = acc[w] | par[w]
        stop = 1
        for w in range(W):
            if not skip[w] and acc[w] >= 0:
                stop = 0
        if stop:
            return


cdef void _emit(csptr L, int n, int w, unsigned char* out) noexcept nogil:
    cdef int j
    for j in range(n):
        out[j] = <unsigned char>(L[j * W + w] < 0)


def decode_layered(const short[:, ::1] llr, const int[::1] row_ptr, const int[::1] cols,
                   const int[::1] shifts, int z, int max_iter, int alpha_q, int lmax,
                   bint early_stop, unsigned char[:, ::1] bits_out, int[::1] iters_out):
    """Decode every row of ``llr`` (frames x n, int16 fixed-point LLRs within +-lmax), ``LANES``
    frames at a time. Writes hard decisions (1 where the posterior is negative) to ``bits_out``
    and, per frame, the iterations used to ``iters_out`` (negative: the syndrome is not zero
    after ``max_iter``). ``alpha_q`` is the normalization times 2**15 (1 .. 32768)."""
    cdef int nf = llr.shape[0]
    cdef int n = llr.shape[1]
    cdef int mb = row_ptr.shape[0] - 1
    cdef int nedges = cols.shape[0]
    cdef int maxdeg = 0
    cdef int i, g, f0, nl, j, w, it, r, k, d, e0, e, v, rb, ndone, fail_iter
    cdef short lm = <short>lmax
    if not (0 < lmax <= 8191) or not (1 <= alpha_q <= 32768):
        raise ValueError("lmax must be in 1..8191 and alpha_q in 1..32768")
    if bits_out.shape[0] != nf or bits_out.shape[1] != n or iters_out.shape[0] != nf:
        raise ValueError("output shapes do not match the input")
    for i in range(mb):
        if row_ptr[i + 1] - row_ptr[i] > maxdeg:
            maxdeg = row_ptr[i + 1] - row_ptr[i]
    fail_iter = -max_iter if max_iter > 0 else -1
    cdef short* L = <short*>malloc(n * W * sizeof(short))
    cdef short* R = <short*>malloc(nedges * z * W * sizeof(short))
    cdef short* Q = <short*>malloc((maxdeg + 1) * W * sizeof(short))
    cdef short* tmp = <short*>malloc(8 * W * sizeof(short))
    cdef unsigned char* done = <unsigned char*>malloc(W)
    if L == NULL or R == NULL or Q == NULL or tmp == NULL or done == NULL:
        free(L); free(R); free(Q); free(tmp); free(done)
        raise MemoryError()
    cdef short* m1 = tmp
    cdef short* m2 = tmp + W
    cdef short* idx = tmp + 2 * W
    cdef short* sg = tmp + 3 * W
    cdef short* g1 = tmp + 4 * W
    cdef short* g2 = tmp + 5 * W
    cdef short* acc = tmp + 6 * W
    cdef short* par = tmp + 7 * W
    try:
        with nogil:
            for g in range((nf + W - 1) // W):
                f0 = g * W
                nl = nf - f0 if nf - f0 < W else W
                for j in range(n):          # transpose into lanes; idle lanes hold +lmax
                    for w in range(W):
                        L[j * W + w] = llr[f0 + w, j] if w < nl else lm
                memset(R, 0, nedges * z * W * sizeof(short))
                ndone = 0
                for w in range(W):
                    done[w] = w >= nl
                    ndone += done[w]
                if early_stop:
                    _syndrome(L, &row_ptr[0], &cols[0], &shifts[0], mb, z, done, acc, par)
                    for w in range(nl):
                        if acc[w] >= 0:
                            _emit(L, n, w, &bits_out[f0 + w, 0])
                            iters_out[f0 + w] = 0
                            done[w] = 1
                            ndone += 1
                for it in range(max_iter):
                    if ndone == W:
                        break
                    for i in range(mb):
                        e0 = row_ptr[i]
                        d = row_ptr[i + 1] - e0
                        for r in range(z):
                            for w in range(W):
                                m1[w] = 32767
                                m2[w] = 32767
                                idx[w] = -1
                                sg[w] = 0
                            rb = (e0 * z + r * d) * W
                            for k in range(d):
                                e = e0 + k
                                v = r + shifts[e]
                                if v >= z:
                                    v -= z
                                v = (cols[e] * z + v) * W
                                _check_in(L + v, R + rb + k * W, Q + k * W, m1, m2, idx, sg, <short>k)
                            for w in range(W):
                                g1[w] = <short>((<int>_min(m1[w], lm) * alpha_q + 16384) >> 15)
                                g2[w] = <short>((<int>_min(m2[w], lm) * alpha_q + 16384) >> 15)
                            for k in range(d):
                                e = e0 + k
                                v = r + shifts[e]
                                if v >= z:
                                    v -= z
                                v = (cols[e] * z + v) * W
                                _check_out(L + v, R + rb + k * W, Q + k * W, g1, g2, idx, sg,
                                           <short>k, lm)
                    if early_stop:
                        _syndrome(L, &row_ptr[0], &cols[0], &shifts[0], mb, z, done, acc, par)
                        for w in range(nl):
                            if not done[w] and acc[w] >= 0:
                                _emit(L, n, w, &bits_out[f0 + w, 0])
                                iters_out[f0 + w] = it + 1
                                done[w] = 1
                                ndone += 1
                if ndone < W:
                    _syndrome(L, &row_ptr[0], &cols[0], &shifts[0], mb, z, done, acc, par)
                    for w in range(nl):
                        if not done[w]:
                            _emit(L, n, w, &bits_out[f0 + w, 0])
                            iters_out[f0 + w] = max_iter if acc[w] >= 0 else fail_iter
    finally:
        free(L); free(R); free(Q); free(tmp); free(done)
