"""Rate-distortion optimized quantization (RDOQ) and dependent quantization (DQ).

Both choose integer levels for a uniform step ``s`` by minimizing, over the
tensor in coding order (C order),

    J = sum (w - w_hat)^2 / s^2  +  lam * R

where R is the code length in bits that a model of nncodec's CABAC coder
estimates for the levels (sig / sign / greater-than flags / Exp-Golomb
remainder, contexts from the two previous levels and the level one row up,
probabilities adapting block by block) and ``lam`` is the weight of a bit in
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
N_SIG, N_SIGN, N_GTC = 18, 9, 6
ONE30 = 1 << 30
REFRESH_MIN = 64
# cost in bits of a 16-bit probability p, indexed by p >> 4 (centre of each bucket)
COST_TABLE = np.array([-math.log2((16.0 * i + 8.0) / 65536.0) for i in range(4096)], dtype=np.float64)


def _pure_python() -> bool:
    return os.environ.get("NNCODEC_PURE_PYTHON", "") not in ("", "0") or _compiled is None


def model_params(w: np.ndarray, step: float, dq: bool) -> tuple[int, int]:
    """(K, E) the rate model assumes: the coder's own choice for the levels of plain
    rounding at the quantizer's level spacing (s, or 2s for DQ)."""
    from ..entropy import cabac
    from ..quant_snr import quantize

    levels = quantize(w, 2.0 * step if dq else step)
    try:
        K, E = cabac.choose_params(levels)
    except Exception:  # noqa: BLE001 - the model is an estimate; a coder without this call still works
        K, E = 8, 0
    return int(min(max(K, 0), 64)), int(min(max(E, 0), 31))


def default_lambda(dq: bool) -> float:
    return DEFAULT_LAMBDA_DQ if dq else DEFAULT_LAMBDA


def rd_quantize(w, step: float, *, row_length: int = 0, lam: float = 0.0, dq: bool = False,
                K: Optional[int] = None, E: Optional[int] = None, guard: bool = True):
    """Levels (int32, 1-D, coding order) of ``w`` for step ``step``, and the squared error
    of their reconstruction (binary64, before rounding to a storage dtype).

    ``lam``: rate weight in step^2 per bit (0: distortion only; uniform with 0 is plain
    rounding). ``guard`` (uniform RDOQ only): keep plain rounding when it has the smaller
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
    if K is None or E is None:
        K0, E0 = model_params(flat, step, dq) if lam > 0 else (0, 0)
        K = K0 if K is None else K
        E = E0 if E is None else E
    out = np.empty(flat.size, dtype=np.int32)
    if _pure_python():
        out[:], err = rd_quantize_reference(flat, float(step), row, int(K), int(E), float(lam), bool(dq))
    else:
        err = _compiled.rd_quantize(flat, float(step), row, int(K), int(E), float(lam), bool(dq),
                                    COST_TABLE, out)
    if guard and lam > 0 and not dq and flat.size:
        out, err = _keep_better(flat, float(step), row, float(lam), out, float(err))
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
    return float(np.dot(e, e)) / step**2 + lam * cabac.cost_bits(lv, row_length=row_length)


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


def _gt_class(act: int, k: int) -> int:
    if act < k:
        return 0
    if act <= 2 * k:
        return 1
    return 2


class _Model:
    def __init__(self, K: int, E: int):
        self.K, self.E = K, E
        self.nctx = N_SIG + N_SIGN + N_GTC * K
        gt_init = int(math.floor((1.0 - 2.0 ** (-6.0 / K)) * ONE30)) if K > 0 else 0
        self.a = [ONE30 // 2 if i < N_SIG + N_SIGN else gt_init for i in range(self.nctx)]
        self.b = list(self.a)
        self.n = [0 if i < N_SIG else 31 for i in range(self.nctx)]
        self.refresh()

    def update(self, i: int, bit: int) -> None:
        w = 1 + (self.n[i] + 1).bit_length() - 1
        t = 0 if bit else ONE30
        self.a[i] = self.a[i] + ((t - self.a[i]) >> min(w, 8))
        self.b[i] = self.b[i] + ((t - self.b[i]) >> min(w, 11))
        if self.n[i] < 1023:
            self.n[i] += 1

    def refresh(self) -> None:
        K = self.K
        self.c0, self.c1 = [0.0] * self.nctx, [0.0] * self.nctx
        for i in range(self.nctx):
            p0 = ((self.a[i] + self.b[i]) >> 15) | 1
            self.c0[i] = float(COST_TABLE[p0 >> 4])
            self.c1[i] = float(COST_TABLE[(65536 - p0) >> 4])
        self.p1 = [[[0.0] * (K + 1) for _ in range(3)] for _ in range(2)]
        self.g0 = [[[0.0] * (K + 1) for _ in range(3)] for _ in range(2)]
        for neg in range(2):
            for c in range(3):
                s = 0.0
                for j in range(1, K + 1):
                    i = N_SIG + N_SIGN + (j - 1) * N_GTC + neg * 3 + c
                    s = s + self.c1[i]
                    self.p1[neg][c][j] = s
                    self.g0[neg][c][j] = self.c0[i]

    def gt_bits(self, mag: int, neg: int, act: int) -> float:
        K = self.K
        ones = min(mag - 1, K)
        h2 = (act - 1) // 2 if act >= 1 else 0
        a2, a1 = min(ones, h2), min(ones, act)
        P0, P1, P2 = self.p1[neg][0], self.p1[neg][1], self.p1[neg][2]
        bits = P2[a2] + (P1[a1] - P1[a2]) + (P0[ones] - P0[a1])
        if mag <= K:
            bits = bits + self.g0[neg][_gt_class(act, mag)][mag]
        else:
            v, e = mag - K - 1, self.E
            while v >= (1 << e):
                v -= 1 << e
                e += 1
            bits = bits + float(2 * (e - self.E) + 1 + self.E)
        return bits

    def rate(self, k: int, p: int, p2: int, ab: int) -> float:
        cp = _cls(p)
        sig = (cp * 2 + (1 if p2 != 0 else 0)) * 3 + min(abs(ab), 2)
        if k == 0:
            return self.c0[sig]
        neg = 1 if k < 0 else 0
        sc = N_SIG + cp * 3 + _cls(ab)
        r1 = self.c1[sig] + (self.c1[sc] if neg else self.c0[sc])
        return r1 + self.gt_bits(abs(k), neg, abs(p) + abs(ab))

    def learn(self, lv, start: int, stop: int, row: int) -> None:
        for j in range(start, stop):
            q = lv[j]
            p = lv[j - 1] if j >= 1 else 0
            p2 = lv[j - 2] if j >= 2 else 0
            ab = lv[j - row] if (row > 0 and j >= row) else 0
            self.update((_cls(p) * 2 + (1 if p2 != 0 else 0)) * 3 + min(abs(ab), 2), 1 if q != 0 else 0)
            if q != 0:
                neg = 1 if q < 0 else 0
                self.update(N_SIG + _cls(p) * 3 + _cls(ab), neg)
                mag, act, k = abs(q), abs(p) + abs(ab), 1
                while k <= self.K:
                    flag = 1 if mag > k else 0
                    self.update(N_SIG + N_SIGN + (k - 1) * N_GTC + neg * 3 + _gt_class(act, k), flag)
                    if not flag:
                        break
                    k += 1


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


def rd_quantize_reference(w, step: float, row: int, K: int, E: int, lam: float, dq: bool):
    """The search of ``nncodec_ext._trellis.rd_quantize`` in Python: (levels list, error)."""
    xs = [float(v) for v in np.asarray(w).reshape(-1)]
    n = len(xs)
    if row < 0 or row >= n:
        row = 0
    if n == 0:
        return [], 0.0
    S = 4 if dq else 1
    blk = row if row > 0 else 256
    m = _Model(K, E)
    inf = math.inf
    J = [0.0, inf, inf, inf][:S]
    prv, prv2 = [0] * S, [0] * S
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
        Jn = [inf] * S
        bn, pn, p2n = [255] * S, [0] * S, [0] * S
        for s in range(S):
            if J[s] == inf:
                continue
            cl = cands[1] if (dq and s >= 2) else cands[0]
            if lam > 0.0:
                costs = [d + lam * m.rate(-mag if neg else mag, prv[s], prv2[s], ab) for mag, d in cl]
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
                    Jn[t], bn[t], pn[t], p2n[t] = jn, s | (c << 2), (-mag if neg else mag), prv[s]
        for t in range(S):
            J[t] = Jn[t]
            bp[i][t] = bn[t] if Jn[t] != inf else 255
            if Jn[t] != inf:
                prv[t], prv2[t] = pn[t], p2n[t]
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
