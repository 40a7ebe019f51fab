# cython: language_level=3
"""Hot loop of the analog path: decoding the Shannon-Kotelnikov 2:1 double spiral.

The spiral maps a standardized weight u to f(u) = sign(u) |u| exp(i gamma |u|) (the w < 0 arm is
the w >= 0 arm rotated by pi). For a received (equalized, unit-energy) symbol y both decoders
only look at |u| = a in the window [|y| - pi/(2 gamma) - margin, |y| + pi/(2 gamma) + margin]:
|y - f(u)| >= ||y| - a| and the nearest crossing of the ray through y lies within pi/(2 gamma) in
radius, so nothing outside can be nearer (ML) or carry weight (MMSE, margin = 7 noise stds).
Both arms are handled at once: for a given a the better arm is the sign of Re(conj(y) e^{i gamma a}).

Python policy, validation and the numpy twin live in nncodec/analog/spiral.py.
"""
from libc.math cimport sqrt, exp, cos, sin, fabs, ceil, floor, M_PI

cdef inline double _prior(double u, int kind, const double[::1] dens, double lo, double width,
                          int nb) noexcept nogil:
    cdef double b
    if kind == 0:
        return 1.0
    if kind == 1:
        return exp(-0.5 * u * u)
    b = floor((u - lo) / width)
    if b < 0 or b >= nb:
        return dens[nb]          # floor outside the histogram's range
    return dens[<int>b]


cdef inline double _ml_one(double yr, double yi, double gamma, double *a_out) noexcept nogil:
    """Nearest point: coarse grid of 64 over the window, two refinements of 17 points, then up to
    three Gauss-Newton steps.
    Returns the signed u, and the squared distance through a_out."""
    cdef double rad = sqrt(yr * yr + yi * yi)
    cdef double half = M_PI / (2.0 * gamma)
    cdef double lo = rad - half
    cdef double hi = rad + half
    cdef double step, a, proj, d2, best_d2 = 1e300, best_a = 0.0, best_s = 1.0, c, s, cr, sr, tmp
    cdef double er, ei, fr, fi
    cdef int k, level, npts
    if lo < 0.0:
        lo = 0.0
    npts = 64
    step = (hi - lo) / (npts - 1)
    for level in range(3):
        # uniform steps: rotate e^{i gamma a} by e^{i gamma step} instead of calling cos/sin
        c = cos(gamma * lo)
        s = sin(gamma * lo)
        cr = cos(gamma * step)
        sr = sin(gamma * step)
        for k in range(npts):
            a = lo + k * step
            if a >= 0.0:
                proj = yr * c + yi * s          # Re(conj(y) e^{i gamma a})
                d2 = a * a - 2.0 * a * fabs(proj)
                if d2 < best_d2:
                    best_d2 = d2
                    best_a = a
                    best_s = 1.0 if proj >= 0.0 else -1.0
            tmp = c * cr - s * sr
            s = s * cr + c * sr
            c = tmp
        lo = best_a - step
        hi = best_a + step
        npts = 17
        step = (hi - lo) / (npts - 1)
    # polish with Gauss-Newton steps on |y - s a e^{i gamma a}|^2 (kept only if they help)
    for level in range(3):
        c = cos(gamma * best_a)
        s = sin(gamma * best_a)
        # f = s a e, f' = s e (1 + i gamma a); r = y - f
        er = yr - best_s * best_a * c
        ei = yi - best_s * best_a * s
        # Re(conj(f') r) with f' = best_s * ((c - gamma a s) + i (s + gamma a c))
        fr = best_s * (c - gamma * best_a * s)
        fi = best_s * (s + gamma * best_a * c)
        a = best_a + (fr * er + fi * ei) / (fr * fr + fi * fi)
        if a < 0.0:
            a = 0.0
        proj = best_s * (yr * cos(gamma * a) + yi * sin(gamma * a))
        d2 = a * a - 2.0 * a * proj
        if d2 < best_d2:
            best_d2 = d2
            best_a = a
        else:
            break
    a_out[0] = best_d2 + rad * rad
    return best_s * best_a


def decode(const double[::1] yr, const double[::1] yi, double gamma, const double[::1] n0c,
           int want_mmse, int prior_kind, const double[::1] dens, double hist_lo, double hist_width,
           double[::1] out_ml, double[::1] out_mmse, int max_points=200000, double kq=0.0):
    """ML (always) and, if want_mmse, MMSE decoding of the double spiral.

    n0c: complex noise variance per symbol (assumed by the receiver). prior_kind: 0 flat,
    1 standard Gaussian, 2 histogram ``dens`` (len nb + 1, last entry = floor outside the range).
    kq: 0 for the seed's map (radius a = |u|); > 0 for the uniform-stretch variant with radius
    a = k sqrt(|u|), kq = 1/k^2, so that u = sign * kq a^2 (the prior then carries the Jacobian
    du/da = 2 kq a).
    Returns the number of symbols whose MMSE grid hit ``max_points`` (coarser grid used).
    """
    cdef Py_ssize_t n = yr.shape[0], i
    cdef int nb = dens.shape[0] - 1
    cdef double y_r, y_i, rad, d2min, u_ml, sig, half, lo, hi, h, fa, a, c, s, cr, sr, tmp
    cdef double proj, d2p, d2m, inv, wp, wm, num, den, e, dstar, dmin2, v, jac
    cdef long k, npts, jump
    cdef int capped = 0
    with nogil:
        for i in range(n):
            y_r = yr[i]
            y_i = yi[i]
            u_ml = _ml_one(y_r, y_i, gamma, &d2min)
            if kq > 0.0:
                u_ml = kq * u_ml * fabs(u_ml)
            out_ml[i] = u_ml
            if not want_mmse:
                continue
            rad = sqrt(y_r * y_r + y_i * y_i)
            sig = sqrt(n0c[i])
            half = M_PI / (2.0 * gamma)
            lo = rad - half - 7.0 * sig
            hi = rad + half + 7.0 * sig
            if lo < 0.0:
                lo = 0.0
            # the likelihood varies along a on the scale (sig / sqrt 2) / |f'(a)|
            fa = sqrt(1.0 + gamma * gamma * hi * hi)
            h = 0.7 * sig / fa
            npts = <long>ceil((hi - lo) / h) + 1
            if npts > max_points:
                npts = max_points
                capped += 1
            if npts < 33:
                npts = 33
            h = (hi - lo) / (npts - 1)
            cr = cos(gamma * h)
            sr = sin(gamma * h)
            inv = 1.0 / n0c[i]
            num = 0.0
            den = 0.0
            # only points within dstar of y carry weight (exp(-30) cut); the distance moves by at
            # most fa * h per step (|f'(a)| <= fa on the window), so far points are skipped in
            # whole steps, keeping the grid uniform
            dstar = sqrt(d2min + 30.0 * n0c[i])
            k = 0
            c = cos(gamma * lo)
            s = sin(gamma * lo)
            while k < npts:
                a = lo + k * h
                proj = y_r * c + y_i * s
                d2p = rad * rad + a * a - 2.0 * a * proj       # arm u = +a
                d2m = rad * rad + a * a + 2.0 * a * proj       # arm u = -a
                dmin2 = d2p if d2p < d2m else d2m
                if dmin2 > dstar * dstar:
                    jump = <long>((sqrt(dmin2) - dstar) / (fa * h))
                    if jump > 1:
                        k += jump
                        a = lo + k * h
                        c = cos(gamma * a)
                        s = sin(gamma * a)
                        continue
                if kq > 0.0:
                    v = kq * a * a
                    jac = 2.0 * kq * a
                else:
                    v = a
                    jac = 1.0
                e = (d2p - d2min) * inv
                if e < 30.0:
                    wp = _prior(v, prior_kind, dens, hist_lo, hist_width, nb) * jac * exp(-e)
                    num += v * wp
                    den += wp
                e = (d2m - d2min) * inv
                if e < 30.0 and a > 0.0:
                    wm = _prior(-v, prior_kind, dens, hist_lo, hist_width, nb) * jac * exp(-e)
                    num -= v * wm
                    den += wm
                k += 1
                if (k & 255) == 0:           # resynchronize the rotation now and then
                    c = cos(gamma * (lo + k * h))
                    s = sin(gamma * (lo + k * h))
                else:
                    tmp = c * cr - s * sr
                    s = s * cr + c * sr
                    c = tmp
            out_mmse[i] = num / den if den > 0.0 else u_ml
    return capped
