"""Rate-distortion optimized quantization (RDOQ) and dependent quantization (DQ).

Both choose integer levels for a uniform step ``s`` by minimizing, over the
tensor in coding order (C order),

    J = sum (w - w_hat)^2 / s^2  +  lam * R

where R is the code length in bits that a model of nncodec's CABAC coder
estimates for the levels: the bins of cabac payload version 2 (sig, sign, at
most K greater-than flags, Exp-Golomb classes with context-coded prefix and top
two offset bits) in the coder's contexts (previous level, level one row up,
running mean of the row's magnitudes; each survivor of the search carries its
own previous level and row mean), with the coder's K, E, adaptation rates and
initial table as ``cabac.choose_params`` picks them for plainly rounded levels,
for DQ the coder's dq contexts (sig and gt flags by the quantizer of the state),
and probabilities adapting block by block (a row, or 256 levels) as the coder
adapts them; and ``lam`` is the weight of a bit in
units of s^2 (so the absolute Lagrange multiplier is ``lam * s**2``).

- **RDOQ** (``dq=False``): uniform reconstruction ``level * s``; each level is
  the rounded one, the one next to it toward zero, or 0, chosen greedily. The
  file decodes exactly like plain uniform quantization.
- **DQ** (``dq=True``): two quantizers, Q0 reconstructing ``2k * s`` (even
  multiples) and Q1 ``(2k - sign(k)) * s`` (odd multiples and 0); a 4-state
  machine, driven by the parity of each level, says which one applies to the
  next weight (states 0 and 1: Q0, states 2 and 3: Q1; from state 0 an even
  level goes to state 0 and an odd one to 2; 1: 2 / 0; 2: 1 / 3; 3: 3 / 1).
  A Viterbi search finds the levels; the decoder replays the state machine
  from state 0, so only the levels and ``s`` are stored. With ``lam = 0`` the
  search minimizes the error alone.

The search runs in ``nncodec_ext._trellis`` (Cython); ``rd_quantize_reference``
below is its pure-Python twin, which takes the same decisions (tests compare
them on small inputs). ``NNCODEC_PURE_PYTHON=1`` selects the twin everywhere.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from ..entropy import cabac_ref as _cref
from ..errors import FormatError

try:
    from nncodec_ext import _trellis as _compiled
except ImportError:  # pragma: no cover - only on a broken install
    _compiled = None

# lam in units of step^2 per bit, when RDOQ is asked for without a value: about the slope of
# a uniform quantizer's rate-distortion curve at high rate (2 ln 2 / 12 = 0.1155). The lambda
# sweep of bench/bench_rd.py (size at equal weight SNR, digits CNN and EfficientNet-Lite0,
# 30 dB) finds sizes within 0.05% of each other from 0.03 to 0.2, and larger sizes above 0.3.
DEFAULT_LAMBDA = 0.12
DEFAULT_LAMBDA_DQ = 0.12
TRANS = ((0, 2), (2, 0), (1, 3), (3, 1))
N_SIG, N_SIGN, N_MC, N_POS = 24, 9, 3, 16  # the coder's context layout (formats/cabac-v1.md, 5)
T_CAP = 1 << 40
ONE30 = 1 << 30
REFRESH_MIN = 64
DEFAULT_RATES = 5 | (10 << 4)
# cost in bits of a 16-bit probability p, indexed by p >> 4 (centre of each bucket)
COST_TABLE = np.array([-math.log2((16.0 * i + 8.0) / 65536.0) for i in range(4096)], dtype=np.float64)


def _pure_python() -> bool:
    return os.environ.get("NNCODEC_PURE_PYTHON", "") not in ("", "0") or _compiled is None


def model_params(w: np.ndarray, step: float, dq: bool, row_length: int = 0) -> tuple[int, int, int, int]:
    """(K, E, packed rates, init) the rate model assumes: the coder's own choice
    (``cabac.choose_params``) for the levels of plain rounding at the quantizer's level
    spacing (s, or 2s for DQ); rates packed as fast | slow << 4, as the coder takes them."""
    from ..entropy import cabac
    from ..quant_snr import quantize

    levels = np.asarray(quantize(w, 2.0 * step if dq else step)).reshape(-1)
    row = int(row_length or 0)
    if row >= levels.size:
        row = 0
    K, E, (fast, slow), init = cabac.choose_params(levels, row)
    return int(K), int(E), int(fast) | (int(slow) << 4), int(init)


def default_lambda(dq: bool) -> float:
    return DEFAULT_LAMBDA_DQ if dq else DEFAULT_LAMBDA


def rd_quantize(w, step: float, *, row_length: int = 0, lam: float = 0.0, dq: bool = False,
                K: Optional[int] = None, E: Optional[int] = None, rates=None,
                init: Optional[int] = None, guard: bool = True):
    """Levels (int32, 1-D, coding order) of ``w`` for step ``step``, and the squared error
    of their reconstruction (binary64, before rounding to a storage dtype). With ``dq`` the
    levels are a ``cabac.DQLevels`` array, which ``cabac.encode`` codes with its dq contexts.

    ``lam``: rate weight in step^2 per bit (0: distortion only; uniform with 0 is plain
    rounding). ``K``, ``E``, ``rates`` ((fast, slow) shifts, or packed fast | slow << 4)
    and ``init``: the coder parameters the rate model assumes (default: those
    ``cabac.choose_params`` picks for plainly rounded levels). ``guard`` (uniform RDOQ only): keep plain rounding when it has the smaller
    D + lam * R with R measured by the coder's own estimate ``cabac.cost_bits``."""
    from ..quant_snr import _as_real

    flat = _as_real(w)
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive finite number, got {step!r}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be a finite number >= 0, got {lam!r}")
    row = int(row_length or 0)
    if flat.size:
        hi, lo = float(flat.max()), float(flat.min())
        if not (math.isfinite(hi) and math.isfinite(lo)):
            raise ValueError("weights contain NaN or inf")
        if max(hi, -lo) / step > 2**31 - 1 - 1:
            raise ValueError(f"step {step:g} is too small for the weights' range (levels beyond int32)")
    if K is None or E is None or rates is None or init is None:
        K0, E0, R0, I0 = model_params(flat, step, dq, row) if lam > 0 else (0, 0, DEFAULT_RATES, 0)
        K = K0 if K is None else K
        E = E0 if E is None else E
        rates = R0 if rates is None else rates
        init = I0 if init is None else init
    if isinstance(rates, (tuple, list)):
        rates = int(rates[0]) | (int(rates[1]) << 4)
    out = np.empty(flat.size, dtype=np.int32)
    if _pure_python():
        out[:], err = rd_quantize_reference(flat, float(step), row, int(K), int(E), int(rates), int(init),
                                            float(lam), bool(dq))
    else:
        err = _compiled.rd_quantize(flat, float(step), row, int(K), int(E), int(rates), int(init),
                                    float(lam), bool(dq), COST_TABLE, out)
    if guard and lam > 0 and not dq and flat.size:
        out, err = _keep_better(flat, float(step), row, float(lam), out, float(err))
    if dq:
        from ..entropy import cabac

        out = cabac.mark_dq(out)  # the coder then uses its dq contexts for them
    return out, float(err)


def _keep_better(flat, step, row, lam, levels, err):
    from ..entropy import cabac
    from ..quant_snr import quantize_checked

    plain, _ = quantize_checked(flat, step)
    e_plain = flat.astype(np.float64) - plain.astype(np.float64) * step
    err_plain = float(np.dot(e_plain, e_plain))
    j_rd = err / step**2 + lam * cabac.cost_bits(levels, row_length=row)
    j_plain = err_plain / step**2 + lam * cabac.cost_bits(plain, row_length=row)
    if j_plain < j_rd:
        return plain.reshape(-1), err_plain
    return levels, err


def rd_cost(w, levels, step: float, *, row_length: int = 0, lam: float = 0.0, dq: bool = False) -> float:
    """D / step^2 + lam * R of ``levels`` for ``w``, with R from the coder's ``cabac.cost_bits``."""
    from ..entropy import cabac
    from ..quant_snr import _as_real

    flat = _as_real(w).astype(np.float64)
    lv = np.ascontiguousarray(levels, dtype=np.int32).reshape(-1)
    rec = reconstruct(lv, step, dq)
    e = flat - rec
    return float(np.dot(e, e)) / step**2 + lam * cabac.cost_bits(lv, row_length=row_length, dq=dq)


def reconstruct(levels, step: float, dq: bool) -> np.ndarray:
    """The decoder's binary64 values of ``levels`` (DQ: by replaying the state machine)."""
    lv = np.ascontiguousarray(levels, dtype=np.int32).reshape(-1)
    if not dq:
        return lv.astype(np.float64) * step
    out = np.empty(lv.size, dtype=np.float64)
    if _pure_python():
        out[:] = dq_reconstruct_reference(lv, step)
    else:
        _compiled.dq_reconstruct(lv, float(step), out)
    return out


# ---------------------------------------------------------------------------------------------
# the decoder's side, as a coding stage: {"id": "dq", "step": s}


def _check_stage(stage: dict) -> float:
    step = stage.get("step")
    if not isinstance(step, float) or not (step > 0 and math.isfinite(step)):
        raise FormatError(f"dq stage: invalid step {step!r}")
    return step


class DQStage:
    """``STAGES["dq"]``: the level count and the decoded values of a dq stage."""

    def level_count(self, stage, shape):
        _check_stage(stage)
        return int(math.prod(shape))

    def decode(self, stage, levels, shape):
        return reconstruct(levels, _check_stage(stage), True).reshape(shape)


# ---------------------------------------------------------------------------------------------
# pure-Python twin of nncodec_ext/_trellis.pyx (same arithmetic, same order, same decisions)


def _cls(v: int) -> int:
    return 0 if v == 0 else (1 if v < 0 else 2)


def _mag_class(s: int, t: int) -> int:
    """The coder's context class of activity s against the magnitude t a bin tests."""
    if 2 * s < 3 * t:
        return 0
    if s <= 3 * t:
        return 1
    return 2


class _Model:
    """The coder's contexts (cabac_ref section 5 layout and initial states) with costs per bin
    frozen between refreshes."""

    def __init__(self, K: int, E: int, rates: int, init: int, dq: bool = False):
        self.K, self.E = K, E
        self.fast, self.slow = rates & 15, rates >> 4
        self.dq = 1 if dq else 0  # the coder's dq contexts: sig and gt in a set per quantizer
        sets = 1 + self.dq
        self.sign = N_SIG * sets
        self.gt = self.sign + N_SIGN
        self.pre = self.gt + N_MC * K * sets
        self.suf = self.pre + N_POS * N_MC
        self.nctx = self.suf + N_POS * 3
        self.a = [ONE30 // 2] * self.nctx
        self.n = [0] * self.nctx
        for i in range(self.sign, self.gt):
            self.n[i] = 31
        if init:
            primed = list(_cref.SIG_PRIOR) * sets + [None] * N_SIGN
            for _ in range(sets):
                for k in range(K):
                    primed += _cref.GT_PRIOR[min(k, 1)]
            for j in range(N_POS):
                primed += _cref.PREFIX_PRIOR[min(j, 3)]
            for j in range(N_POS):
                primed += _cref.SUFFIX_PRIOR[min(j, 4)]
            for i, p in enumerate(primed):
                if p is not None:
                    self.a[i] = p << 22
                    self.n[i] = 8
        self.b = list(self.a)
        self.ew = 0  # the coder's running row mean, carried between learned blocks
        self.st = 0  # and the dependent quantizer's state
        self.refresh()

    def update(self, i: int, bit: int) -> None:
        w = 1 + (self.n[i] + 1).bit_length() - 1
        t = 0 if bit else ONE30
        self.a[i] = self.a[i] + ((t - self.a[i]) >> min(w, self.fast))
        self.b[i] = self.b[i] + ((t - self.b[i]) >> min(w, self.slow))
        if self.n[i] < 1023:
            self.n[i] += 1

    def refresh(self) -> None:
        self.c0, self.c1 = [0.0] * self.nctx, [0.0] * self.nctx
        for i in range(self.nctx):
            p0 = ((self.a[i] + self.b[i]) >> 15) | 1
            self.c0[i] = float(COST_TABLE[p0 >> 4])
            self.c1[i] = float(COST_TABLE[(65536 - p0) >> 4])

    def mag_bits(self, mag: int, s: int, gt: int) -> float:
        """Greater-than flags (contexts from ``gt`` on) and Exp-Golomb remainder of a magnitude
        >= 1 at activity s."""
        K, c0, c1 = self.K, self.c0, self.c1
        bits = 0.0
        k = 1
        while k <= K:
            i = gt + (k - 1) * N_MC + _mag_class(s, k)
            if mag > k:
                bits = bits + c1[i]
                k += 1
            else:
                return bits + c0[i]
        r, e, j = mag - K - 1, self.E, 0
        t = K + 1 + (1 << e)
        while r >= (1 << e):
            bits = bits + c1[self.pre + j * N_MC + _mag_class(s, t)]
            r -= 1 << e
            e += 1
            j = min(j + 1, N_POS - 1)
            t = min(t + (1 << e), T_CAP)
        bits = bits + c0[self.pre + j * N_MC + _mag_class(s, t)]
        if e > 0:
            b1 = (r >> (e - 1)) & 1
            bits = bits + (c1 if b1 else c0)[self.suf + j * 3]
            if e > 1:
                b2 = (r >> (e - 2)) & 1
                bits = bits + (c1 if b2 else c0)[self.suf + j * 3 + 1 + b1]
                bits = bits + float(e - 2)
        return bits

    def rate(self, k: int, p: int, ab: int, ew: int, state: int = 0) -> float:
        qs = (state >> 1) if self.dq else 0
        sig = qs * N_SIG + ((1 if p != 0 else 0) * 3 + min(abs(ab), 2)) * 4 + min(ew >> 2, 3)
        if k == 0:
            return self.c0[sig]
        sc = self.sign + _cls(p) * 3 + _cls(ab)
        r1 = self.c1[sig] + (self.c1[sc] if k < 0 else self.c0[sc])
        return r1 + self.mag_bits(abs(k), (ew >> 2) + abs(ab) + abs(p), self.gt + qs * self.K * N_MC)

    def learn(self, lv, start: int, stop: int, row: int) -> None:
        """Adapt the contexts to lv[start:stop] as the coder codes them."""
        ew, st = self.ew, self.st
        for j in range(start, stop):
            if row > 0 and j % row == 0:
                ew = 0
            q = lv[j]
            p = lv[j - 1] if j >= 1 else 0
            ab = lv[j - row] if (row > 0 and j >= row) else 0
            s = (ew >> 2) + abs(ab) + abs(p)
            qs = (st >> 1) if self.dq else 0
            self.update(qs * N_SIG + ((1 if p != 0 else 0) * 3 + min(abs(ab), 2)) * 4 + min(ew >> 2, 3),
                        1 if q != 0 else 0)
            mag = abs(q)
            if q != 0:
                self.update(self.sign + _cls(p) * 3 + _cls(ab), 1 if q < 0 else 0)
                k = 1
                while k <= self.K:
                    flag = 1 if mag > k else 0
                    self.update(self.gt + qs * self.K * N_MC + (k - 1) * N_MC + _mag_class(s, k), flag)
                    if not flag:
                        break
                    k += 1
                if mag > self.K:
                    r, e, jj = mag - self.K - 1, self.E, 0
                    t = self.K + 1 + (1 << e)
                    while r >= (1 << e):
                        self.update(self.pre + jj * N_MC + _mag_class(s, t), 1)
                        r -= 1 << e
                        e += 1
                        jj = min(jj + 1, N_POS - 1)
                        t = min(t + (1 << e), T_CAP)
                    self.update(self.pre + jj * N_MC + _mag_class(s, t), 0)
                    if e > 0:
                        b1 = (r >> (e - 1)) & 1
                        self.update(self.suf + jj * 3, b1)
                        if e > 1:
                            self.update(self.suf + jj * 3 + 1 + b1, (r >> (e - 2)) & 1)
            ew = ew + mag - (ew >> 2)
            st = TRANS[st][mag & 1]
        self.ew, self.st = ew, st


def _candidates(a: float, quant: int, dq: bool, zlim: float):
    """[(magnitude, squared error in step units)] in the order the search tries them; zero is
    one when it is among the two nearest levels or when a * a <= zlim."""
    if a == 0.0:
        return [(0, 0.0)]
    if not dq:
        kf = round(a)  # half to even, as rint
        r = float(kf)
        if kf == 0:
            return [(0, a * a)]
        out = [(kf, (a - r) * (a - r))]
        if kf > 1:
            f = r - 1.0
            out.append((kf - 1, (a - f) * (a - f)))
        if kf > 1 and a * a > zlim:
            return out
        out.append((0, a * a))
        return out
    if quant == 0:
        kf = math.floor(a * 0.5)
        f = 2.0 * float(kf)
        out = [(kf, (a - f) * (a - f)), (kf + 1, (a - f - 2.0) * (a - f - 2.0))]
        if kf != 0 and a * a <= zlim:
            out.append((0, a * a))
        return out
    kf = math.floor((a + 1.0) * 0.5)
    if kf == 0:
        return [(0, a * a), (1, (a - 1.0) * (a - 1.0))]
    f = 2.0 * float(kf) - 1.0
    out = [(kf, (a - f) * (a - f)), (kf + 1, (a - f - 2.0) * (a - f - 2.0))]
    if a * a <= zlim:
        out.append((0, a * a))
    return out


def _best_of_parity(mags, costs, dq):
    """[(index, cost)] of the first least-cost candidate of each parity (one class when not dq)."""
    best = [(-1, math.inf), (-1, math.inf)]
    for c, (mag, cost) in enumerate(zip(mags, costs)):
        p = (mag & 1) if dq else 0
        if best[p][0] < 0 or cost < best[p][1]:
            best[p] = (c, cost)
    return best


def rd_quantize_reference(w, step: float, row: int, K: int, E: int, rates: int, init: int,
                          lam: float, dq: bool):
    """The search of ``nncodec_ext._trellis.rd_quantize`` in Python: (levels list, error)."""
    xs = [float(v) for v in np.asarray(w).reshape(-1)]
    n = len(xs)
    if row < 0 or row >= n:
        row = 0
    if n == 0:
        return [], 0.0
    S = 4 if dq else 1
    blk = row if row > 0 else 256
    m = _Model(K, E, rates, init, dq)
    inf = math.inf
    J = [0.0, inf, inf, inf][:S]
    prv, ew = [0] * S, [0] * S  # per survivor: previous level, running row mean (x4)
    bp = [[255] * S for _ in range(n)]
    out = [0] * n
    learned = 0

    zlim = 4.0 + 64.0 * lam
    inv = 1.0 / step

    def level_at(j, s, c):
        x = (xs[j] * inv) if dq else (xs[j] / step)
        q = (s >> 1) if dq else 0
        mag = _candidates(abs(x), q, dq, zlim)[c][0]
        return -mag if x < 0.0 else mag

    def trace(t, hi, lo):
        j = hi
        while j >= lo:
            s, c = bp[j][t] & 3, bp[j][t] >> 2
            out[j] = level_at(j, s, c)
            t = s
            j -= 1

    for i in range(n):
        if lam > 0.0 and i > 0 and i % blk == 0:
            best = min(range(S), key=lambda s: (J[s], s))
            trace(best, i - 1, i - blk)
            m.learn(out, i - blk, i, row)
            learned += blk
            if learned >= REFRESH_MIN:
                m.refresh()
                learned = 0
        x = (xs[i] * inv) if dq else (xs[i] / step)  # DQ: a product, cheaper; uniform: as rint(w / step)
        a = abs(x)
        neg = x < 0.0
        cands = [_candidates(a, 0, dq, zlim), _candidates(a, 1, dq, zlim) if dq else None]
        ab = out[i - row] if (row > 0 and i >= row) else 0
        if row > 0 and i % row == 0:
            ew = [0] * S
        Jn = [inf] * S
        bn, pn, ewn = [255] * S, [0] * S, [0] * S
        for s in range(S):
            if J[s] == inf:
                continue
            cl = cands[1] if (dq and s >= 2) else cands[0]
            if lam > 0.0:
                costs = [d + lam * m.rate(-mag if neg else mag, prv[s], ab, ew[s], s) for mag, d in cl]
            else:
                costs = [d for _, d in cl]
            best = _best_of_parity([mag for mag, _ in cl], costs, dq)
            for par in range(2 if dq else 1):
                c, cost = best[par]
                if c < 0:
                    continue
                jn = J[s] + cost
                t = TRANS[s][par] if dq else 0
                if jn < Jn[t]:
                    mag = cl[c][0]
                    Jn[t], bn[t], pn[t] = jn, s | (c << 2), (-mag if neg else mag)
                    ewn[t] = ew[s] + mag - (ew[s] >> 2)
        for t in range(S):
            J[t] = Jn[t]
            bp[i][t] = bn[t] if Jn[t] != inf else 255
            if Jn[t] != inf:
                prv[t], ew[t] = pn[t], ewn[t]
    best = min(range(S), key=lambda s: (J[s], s))
    t, err = best, 0.0
    for j in range(n - 1, -1, -1):  # the final path, and its squared error summed from the end
        s, c = bp[j][t] & 3, bp[j][t] >> 2
        k = level_at(j, s, c)
        out[j] = k
        if dq and (s >> 1) == 1:
            v = float(2 * k - (1 if k > 0 else (-1 if k < 0 else 0))) * step
        elif dq:
            v = float(2 * k) * step
        else:
            v = float(k) * step
        rr = xs[j] - v
        err = err + rr * rr
        t = s
    return out, err


def dq_reconstruct_reference(levels, step: float) -> np.ndarray:
    out = np.empty(len(levels), dtype=np.float64)
    st = 0
    for i, k in enumerate(int(v) for v in np.asarray(levels).reshape(-1)):
        sgn = 1 if k > 0 else (-1 if k < 0 else 0)
        out[i] = float(2 * k - sgn) * step if st >= 2 else float(2 * k) * step
        st = TRANS[st][abs(k) & 1]
    return out
