# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Uniform quantization loops: one pass over a contiguous tensor, no temporaries.

Rounding is rint (round half to even), as numpy's np.rint, on w / step
computed in double precision. Policy (which step, clipping errors) lives in
nncodec.quant_snr.
"""
from libc.math cimport rint, fabs
from libc.stdint cimport int32_t

ctypedef fused real:
    float
    double


def sq_error(const real[::1] w, double step):
    """(sum of w**2, sum of (w - rint(w / step) * step)**2), accumulated in double."""
    cdef Py_ssize_t i, n = w.shape[0]
    cdef double x, e, sig = 0.0, err = 0.0
    with nogil:
        for i in range(n):
            x = <double> w[i]
            e = x - rint(x / step) * step
            sig += x * x
            err += e * e
    return sig, err


def sum_sq(const real[::1] w):
    """sum of w**2 accumulated in double, in the order sq_error adds it (the same float)."""
    cdef Py_ssize_t i, n = w.shape[0]
    cdef double x, sig = 0.0
    with nogil:
        for i in range(n):
            x = <double> w[i]
            sig += x * x
    return sig


def quantize_into(const real[::1] w, double step, int32_t[::1] out):
    """out = rint(w / step), clipped to int32; returns max |w / step| (before clipping)."""
    cdef Py_ssize_t i, n = w.shape[0]
    cdef double q, m = 0.0
    if out.shape[0] != n:
        raise ValueError("output length differs from input length")
    with nogil:
        for i in range(n):
            q = rint(<double> w[i] / step)
            if fabs(q) > m:
                m = fabs(q)
            if q > 2147483647.0:
                q = 2147483647.0
            elif q < -2147483648.0:
                q = -2147483648.0
            out[i] = <int32_t> q
    return m


def dequantize_into(const int32_t[::1] levels, double step, float[::1] out):
    """out = float32(double(level) * step): the level times the step in double
    precision, rounded to float32 by a C cast, as numpy's
    ``(levels.astype(float64) * step).astype(float32)`` in one pass. ``out`` may be the
    levels' own buffer viewed as float32: each level is read before its slot is written."""
    cdef Py_ssize_t i, n = levels.shape[0]
    if out.shape[0] != n:
        raise ValueError("output length differs from input length")
    with nogil:
        for i in range(n):
            out[i] = <float> (<double> levels[i] * step)


def sq_error_f32(const real[::1] w, double step):
    """Like sq_error, but the reconstruction is rounded to binary32 as a float32 tensor is
    stored: (sum of w**2, sum of (w - float32(rint(w / step) * step))**2)."""
    cdef Py_ssize_t i, n = w.shape[0]
    cdef double x, e, sig = 0.0, err = 0.0
    with nogil:
        for i in range(n):
            x = <double> w[i]
            e = x - <double> (<float> (rint(x / step) * step))
            sig += x * x
            err += e * e
    return sig, err
