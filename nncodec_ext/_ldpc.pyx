# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Layered normalized min-sum decoding of quasi-cyclic LDPC codes (hot loops only).

The code is described by its prototype: for block row i, the non-zero blocks are
``row_ptr[i] <= e < row_ptr[i+1]`` with block column ``cols[e]`` and cyclic shift ``shifts[e]``
(row r of the block connects to variable ``cols[e] * z + (r + shifts[e]) % z``). The z rows of a
block row are independent, so each layer is one block row and the inner loops run over r with
contiguous buffers. LLR convention: positive means bit 0. Validation and policy live in
``nncodec.channel.ldpc``.
"""
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.math cimport fabsf

cdef float _BIG = 3.0e38


cdef int _syndrome_zero(const float* L, const int* row_ptr, const int* cols, const int* shifts,
                        int mb, int z, unsigned char* par) noexcept nogil:
    cdef int i, e, r, s
    cdef const float* Lp
    cdef unsigned char acc = 0
    for i in range(mb):
        memset(par, 0, z)
        for e in range(row_ptr[i], row_ptr[i + 1]):
            s = shifts[e]
            Lp = L + cols[e] * z
            for r in range(z - s):
                par[r] ^= <unsigned char>(Lp[r + s] < 0)
            for r in range(z - s, z):
                par[r] ^= <unsigned char>(Lp[r + s - z] < 0)
        for r in range(z):
            acc |= par[r]
        if acc:
            return 0
    return 1


cdef extern from *:
    # restrict-qualified pointers: the buffers of one block never overlap, which lets the C
    # compiler vectorize the loops over the z rows without run-time alias checks
    ctypedef float* fptr "float *__restrict__"
    ctypedef const float* cfptr "const float *__restrict__"
    ctypedef int* iptr "int *__restrict__"
    ctypedef const int* ciptr "const int *__restrict__"


cdef inline void _minsum_seg(cfptr Lp, fptr Rp, fptr qp, fptr m1, fptr m2, iptr idx, fptr sg,
                             int k, int n) noexcept nogil:
    """For n rows: q = L - R (stored), running two smallest |q|, index of the smallest, sign product."""
    cdef int r, ni, oi
    cdef float q, a, o1, o2, n2, n1, ns, os
    for r in range(n):
        q = Lp[r] - Rp[r]
        qp[r] = q
        a = fabsf(q)
        o1 = m1[r]
        o2 = m2[r]
        oi = idx[r]
        os = sg[r]
        n2 = a if a < o2 else o2
        n2 = o1 if a < o1 else n2
        ni = k if a < o1 else oi
        n1 = a if a < o1 else o1
        ns = -os if q < 0 else os
        m1[r] = n1
        m2[r] = n2
        idx[r] = ni
        sg[r] = ns


cdef inline void _update_seg(fptr Lp, fptr Rp, cfptr qp, cfptr m1, cfptr m2, ciptr idx,
                             int k, int n) noexcept nogil:
    """For n rows: new message R = sign(q) * (second minimum if this block holds the first,
    else first minimum), already scaled and signed; L = q + R."""
    cdef int r
    cdef float q, mag, a1, a2, rn
    for r in range(n):
        q = qp[r]
        a1 = m1[r]
        a2 = m2[r]
        mag = a2 if idx[r] == k else a1
        rn = -mag if q < 0 else mag
        Rp[r] = rn
        Lp[r] = q + rn


cdef int _decode_one(const float* llr, float* L, float* R, float* Q, float* m1, float* m2,
                     int* idx, float* sg, unsigned char* par,
                     const int* row_ptr, const int* cols, const int* shifts, int mb, int n, int z,
                     int nedges, int max_iter, float alpha, int early_stop) noexcept nogil:
    """Decode one codeword in place in L; returns iterations used, negated when the final
    syndrome is not zero."""
    cdef int it, i, e, k, r, d, e0, s
    cdef float* Lp
    cdef float* Rp
    cdef float* qp
    memcpy(L, llr, n * sizeof(float))
    memset(R, 0, nedges * z * sizeof(float))
    if early_stop and _syndrome_zero(L, row_ptr, cols, shifts, mb, z, par):
        return 0
    for it in range(max_iter):
        for i in range(mb):
            e0 = row_ptr[i]
            d = row_ptr[i + 1] - e0
            for r in range(z):
                m1[r] = _BIG
                m2[r] = _BIG
                idx[r] = -1
                sg[r] = alpha
            for k in range(d):
                e = e0 + k
                s = shifts[e]
                Lp = L + cols[e] * z
                Rp = R + e * z
                qp = Q + k * z
                _minsum_seg(Lp + s, Rp, qp, m1, m2, idx, sg, k, z - s)
                _minsum_seg(Lp, Rp + z - s, qp + z - s, m1 + z - s, m2 + z - s, idx + z - s,
                            sg + z - s, k, s)
            for r in range(z):
                m1[r] = m1[r] * sg[r]
                m2[r] = m2[r] * sg[r]
            for k in range(d):
                e = e0 + k
                s = shifts[e]
                Lp = L + cols[e] * z
                Rp = R + e * z
                qp = Q + k * z
                _update_seg(Lp + s, Rp, qp, m1, m2, idx, k, z - s)
                _update_seg(Lp, Rp + z - s, qp + z - s, m1 + z - s, m2 + z - s, idx + z - s, k, s)
        if early_stop and _syndrome_zero(L, row_ptr, cols, shifts, mb, z, par):
            return it + 1
    if _syndrome_zero(L, row_ptr, cols, shifts, mb, z, par):
        return max_iter
    return -max_iter if max_iter > 0 else -1


def decode_layered(const float[:, ::1] llr, const int[::1] row_ptr, const int[::1] cols,
                   const int[::1] shifts, int z, int max_iter, float alpha, bint early_stop,
                   unsigned char[:, ::1] bits_out, int[::1] iters_out):
    """Decode every row of ``llr`` (frames x n, float32). Writes hard decisions (1 where the
    posterior LLR is negative) to ``bits_out`` and, per frame, the iterations used to
    ``iters_out`` (negative: the syndrome is not zero after ``max_iter``)."""
    cdef int nf = llr.shape[0]
    cdef int n = llr.shape[1]
    cdef int mb = row_ptr.shape[0] - 1
    cdef int nedges = cols.shape[0]
    cdef int maxdeg = 0
    cdef int i, f, j
    for i in range(mb):
        if row_ptr[i + 1] - row_ptr[i] > maxdeg:
            maxdeg = row_ptr[i + 1] - row_ptr[i]
    cdef float* L = <float*>malloc(n * sizeof(float))
    cdef float* R = <float*>malloc(nedges * z * sizeof(float))
    cdef float* Q = <float*>malloc((maxdeg * z + 1) * sizeof(float))
    cdef float* w = <float*>malloc(3 * z * sizeof(float))
    cdef int* widx = <int*>malloc(z * sizeof(int))
    cdef unsigned char* par = <unsigned char*>malloc(z)
    if L == NULL or R == NULL or Q == NULL or w == NULL or widx == NULL or par == NULL:
        free(L); free(R); free(Q); free(w); free(widx); free(par)
        raise MemoryError()
    try:
        with nogil:
            for f in range(nf):
                iters_out[f] = _decode_one(&llr[f, 0], L, R, Q, w, w + z, widx, w + 2 * z,
                                           par,
                                           &row_ptr[0], &cols[0], &shifts[0], mb, n, z, nedges,
                                           max_iter, alpha, early_stop)
                for j in range(n):
                    bits_out[f, j] = <unsigned char>(L[j] < 0)
    finally:
        free(L); free(R); free(Q); free(w); free(widx); free(par)
