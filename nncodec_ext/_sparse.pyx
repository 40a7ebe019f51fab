# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Sparse products from the CSR and WS layouts (nncodec.sparse.layouts).

Loops only: the callers (nncodec/sparse/kernels.py) check shapes, dtypes and
index ranges once; nothing here validates. float32 activations and weights,
float32 accumulation, one thread.

    csr_matvec(values, col_idx, row_ptr, x, out)             out[i] = sum_k values[k] x[col_idx[k]]
    ws_matvec(gval, group_ptr, col_idx, row_ptr, x, out)      out[i] = sum_g gval[g] sum_k x[col_idx[k]]
    csr_matmat(values, col_idx, row_ptr, X, Y)                Y (R, M) = W @ X (C, M)
    ws_matmat(gval, group_ptr, col_idx, row_ptr, X, Y)        the same from WS (rewriting trick)
"""
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, free


def csr_matvec(const float[::1] values, const int32_t[::1] col_idx, const int64_t[::1] row_ptr,
               const float[::1] x, float[::1] out):
    cdef Py_ssize_t rows = out.shape[0]
    cdef Py_ssize_t i
    cdef int64_t k, end
    cdef float acc
    with nogil:
        for i in range(rows):
            acc = 0.0
            end = row_ptr[i + 1]
            k = row_ptr[i]
            while k < end:
                acc = acc + values[k] * x[col_idx[k]]
                k += 1
            out[i] = acc


def ws_matvec(const float[::1] group_values, const int64_t[::1] group_ptr,
              const int32_t[::1] col_idx, const int64_t[::1] row_ptr,
              const float[::1] x, float[::1] out):
    cdef Py_ssize_t rows = out.shape[0]
    cdef Py_ssize_t i
    cdef int64_t g, gend, k, kend
    cdef float acc, s
    with nogil:
        for i in range(rows):
            acc = 0.0
            g = row_ptr[i]
            gend = row_ptr[i + 1]
            while g < gend:
                s = 0.0
                k = group_ptr[g]
                kend = group_ptr[g + 1]
                while k < kend:
                    s = s + x[col_idx[k]]
                    k += 1
                acc = acc + group_values[g] * s
                g += 1
            out[i] = acc


def csr_matmat(const float[::1] values, const int32_t[::1] col_idx, const int64_t[::1] row_ptr,
               const float[:, ::1] X, float[:, ::1] Y):
    cdef Py_ssize_t rows = Y.shape[0]
    cdef Py_ssize_t M = Y.shape[1]
    cdef Py_ssize_t i, m
    cdef int64_t k, end
    cdef float w
    cdef float* y
    cdef const float* xr
    if M == 0:
        return
    with nogil:
        for i in range(rows):
            y = &Y[i, 0]
            for m in range(M):
                y[m] = 0.0
            end = row_ptr[i + 1]
            k = row_ptr[i]
            while k < end:
                w = values[k]
                xr = &X[col_idx[k], 0]
                for m in range(M):
                    y[m] = y[m] + w * xr[m]
                k += 1


def ws_matmat(const float[::1] group_values, const int64_t[::1] group_ptr,
              const int32_t[::1] col_idx, const int64_t[::1] row_ptr,
              const float[:, ::1] X, float[:, ::1] Y):
    cdef Py_ssize_t rows = Y.shape[0]
    cdef Py_ssize_t M = Y.shape[1]
    cdef Py_ssize_t i, m
    cdef int64_t g, gend, k, kend
    cdef float w
    cdef float* y
    cdef float* s
    cdef const float* xr
    if M == 0:
        return
    s = <float*> malloc(M * sizeof(float))
    if s == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(rows):
                y = &Y[i, 0]
                for m in range(M):
                    y[m] = 0.0
                g = row_ptr[i]
                gend = row_ptr[i + 1]
                while g < gend:
                    k = group_ptr[g]
                    kend = group_ptr[g + 1]
                    # the group's first member initializes the partial sum
                    xr = &X[col_idx[k], 0]
                    for m in range(M):
                        s[m] = xr[m]
                    k += 1
                    while k < kend:
                        xr = &X[col_idx[k], 0]
                        for m in range(M):
                            s[m] = s[m] + xr[m]
                        k += 1
                    w = group_values[g]
                    for m in range(M):
                        y[m] = y[m] + w * s[m]
                    g += 1
    finally:
        free(s)
