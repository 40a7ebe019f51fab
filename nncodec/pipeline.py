"""Per-tensor coding: numpy array <-> container record.

One tensor goes through a short chain of stages recorded in its container
record, so that decoding needs no settings:

- ``{"id": "uniform", "step": s}``: float tensor, levels = rint(w / s), coded
  by the record's entropy backend; decoded as levels * s in the tensor's dtype.
- ``{"id": "integer"}``: integer or bool tensor whose values fit in int32,
  coded losslessly by the entropy backend.
- ``{"id": "raw"}``: the tensor's little-endian bytes as they are (backend 0):
  for lossless storage of floats, non-finite floats, and integers beyond int32.
- ``fixed``, ``kmeans``, ``pq``, ``rq``, ``binary``, ``ternary``: the other
  quantizers (``nncodec.quantize``), chosen by ``Settings.method`` for tensors with
  two or more dimensions.
- ``{"id": "dq", "step": s}``: dependent (trellis-coded) quantization
  (``nncodec.quantize.rdq``): two interleaved quantizers picked by a 4-state
  machine driven by the parity of each level; decoded by replaying the machine.
  ``Settings.dq``. With ``Settings.rdoq`` (or ``rd_lambda``) the levels of a
  ``uniform`` or ``dq`` stage are chosen to minimize distortion + lambda x bits;
  that changes nothing for the decoder (the metadata ``nncodec.settings`` says so).
- ``{"id": "prune", ...}``: first in a chain of two, before the quantizer: the
  tensor was pruned (``nncodec.prune``) and its zeros are in the levels; it records
  how, and decoding passes through it unchanged.

How the step of a float tensor is chosen (``Settings``): tensors with two or
more dimensions (weights) use ``step``, or ``2 ** (qp / 4)``, or the step that
reaches ``target_snr`` dB of weight SNR; tensors with at most one dimension
(biases, norm scales: few values, large effect) always get their own step,
reaching ``small_snr`` dB.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from . import _parallel, bf16
from . import prune as _prune
from . import quantize as _quantize
from .container import DTYPES, RecordInfo, TensorRecord, qp_grid_step
from .entropy import DEFAULT_BACKEND, backend_by_id, get_backend
from .entropy.cabac import decode as _cabac_decode
from .errors import FormatError
from .quant_snr import _DB_PER_LN_STEP, _as_real, quantize_checked, step_for_snr, step_for_snr_many
from .quantize import rdq as _rdq

try:  # compiled dequantization loop; numpy does the same (in three passes) without it
    from nncodec_ext import _quant
except ImportError:  # pragma: no cover - only on a broken install
    _quant = None

DEFAULT_TARGET_SNR = 30.0
DEFAULT_SMALL_SNR = 60.0
SNR_SCOPES = ("model", "tensor")
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
_NUMPY_DTYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64, "bfloat16": np.uint16,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
}


def step_from_qp(qp: float) -> float:
    """Quantization parameter to step: 2 ** (qp / 4); qp -38 gives about 0.00138.

    Four QP units halve the step, as with NNCodec's default QP density."""
    return float(2.0 ** (float(qp) / 4.0))


@dataclass(frozen=True)
class Settings:
    """How tensors are coded. At most one of step, qp and target_snr may be set;
    with none set, weights are quantized to ``DEFAULT_TARGET_SNR`` dB."""

    step: Optional[float] = None
    qp: Optional[float] = None
    target_snr: Optional[float] = None
    small_snr: float = DEFAULT_SMALL_SNR
    # target_snr over all weight tensors together with one step ("model"), or
    # each weight tensor to target_snr with its own step ("tensor")
    snr_scope: str = "model"
    backend: str = DEFAULT_BACKEND
    lossless: bool = False
    # quantizer of tensors with two or more dimensions (1-D tensors always get "uniform"
    # at small_snr): "uniform" | "fixed" | "kmeans" | "pq" | "rq" | "binary" | "ternary"
    method: str = "uniform"
    bits: Optional[int] = None          # fixed: word length IL + FL (default 8; IL per tensor)
    il: Optional[int] = None            # fixed: integer bits
    fl: Optional[int] = None            # fixed: fractional bits
    rounding: str = "nearest"           # fixed: "nearest" or "stochastic"
    seed: int = 0                       # stochastic rounding, k-means++ initialisation
    k: int = 16                         # kmeans / pq / rq: centres per codebook
    kmeans_init: str = "linear"         # "linear" or "kmeans++"
    iterations: int = 30                # k-means iterations
    pq_dim: int = 4                     # pq / rq: sub-vector length d
    rq_stages: int = 2                  # rq: number of residual stages
    ternary_threshold: float = 0.7      # ternary: threshold = this * mean |w|
    prune: Optional[float] = None       # fraction of weights (rows) to zero before quantization
    prune_threshold: Optional[float] = None  # or: zero |w| (row RMS) <= this
    prune_scope: str = "tensor"         # "tensor" or "global" (one threshold for the model)
    prune_structured: bool = False      # zero whole rows (output channels) by RMS
    # rate-distortion choices of the levels of weight tensors (method "uniform" only):
    rdoq: bool = False                  # levels minimize D + lambda * R (R: CABAC rate model)
    rd_lambda: Optional[float] = None   # lambda in step^2 per bit (implies the rate term);
                                        # default with rdoq: nncodec.quantize.rdq.DEFAULT_LAMBDA
    dq: bool = False                    # dependent (trellis-coded) quantization

    def __post_init__(self):
        given = [n for n in ("step", "qp", "target_snr") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of step, qp and target_snr (got {', '.join(given)})")
        self._check_method(given)
        if self.step is not None and not (self.step > 0 and math.isfinite(self.step)):
            raise ValueError(f"step must be a positive finite number, got {self.step!r}")
        for name in ("qp", "target_snr", "small_snr"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v!r}")
        if self.snr_scope not in SNR_SCOPES:
            raise ValueError(f"snr_scope must be one of {', '.join(SNR_SCOPES)}, got {self.snr_scope!r}")
        get_backend(self.backend)  # raises ValueError naming the choices
        if self.rd_lambda is not None and not (isinstance(self.rd_lambda, (int, float))
                                               and not isinstance(self.rd_lambda, bool)
                                               and math.isfinite(self.rd_lambda) and self.rd_lambda >= 0):
            raise ValueError(f"rd_lambda must be a finite number >= 0, got {self.rd_lambda!r}")
        if self.rd_search:
            if self.method != "uniform":
                raise ValueError(f"rdoq / dq / rd_lambda apply to method 'uniform', not {self.method!r}")
            if self.lossless:
                raise ValueError("lossless excludes rdoq / dq / rd_lambda")

    def _check_method(self, given) -> None:
        from .quantize import fixed as _fixed, kmeans as _km

        if self.method not in _quantize.METHODS:
            raise ValueError(f"method must be one of {', '.join(_quantize.METHODS)}, got {self.method!r}")
        if self.method != "uniform" and given:
            raise ValueError(f"{', '.join(given)} applies to method 'uniform' only, not {self.method!r}")
        if self.lossless and (self.method != "uniform" or self.pruning):
            raise ValueError("lossless excludes other methods and pruning")
        for name in ("bits", "il", "fl", "seed", "k", "iterations", "pq_dim", "rq_stages"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.bits is not None and not 1 <= self.bits <= _fixed.MAX_WORD:
            raise ValueError(f"bits must be 1..{_fixed.MAX_WORD}, got {self.bits}")
        if self.il is not None and self.fl is not None:
            if self.bits is not None and self.bits != self.il + self.fl:
                raise ValueError(f"bits {self.bits} != il + fl = {self.il + self.fl}")
            _fixed.check(self.il, self.fl, self.rounding)
        if self.rounding not in _fixed.ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(_fixed.ROUNDINGS)}, got {self.rounding!r}")
        if not 1 <= self.k <= 1 << 16:
            raise ValueError(f"k must be 1..65536, got {self.k}")
        if self.kmeans_init not in _km.INITS:
            raise ValueError(f"kmeans_init must be one of {', '.join(_km.INITS)}, got {self.kmeans_init!r}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not 1 <= self.pq_dim <= _quantize.MAX_SUBVECTOR:
            raise ValueError(f"pq_dim must be 1..{_quantize.MAX_SUBVECTOR}, got {self.pq_dim}")
        if not 1 <= self.rq_stages <= _quantize.MAX_RQ_STAGES:
            raise ValueError(f"rq_stages must be 1..{_quantize.MAX_RQ_STAGES}, got {self.rq_stages}")
        if not (self.ternary_threshold >= 0 and math.isfinite(self.ternary_threshold)):
            raise ValueError(f"ternary_threshold must be >= 0, got {self.ternary_threshold!r}")
        if self.prune is not None and self.prune_threshold is not None:
            raise ValueError("give at most one of prune and prune_threshold")
        if self.prune is not None and not 0.0 <= self.prune <= 1.0:
            raise ValueError(f"prune must be a fraction in [0, 1], got {self.prune!r}")
        if self.prune_threshold is not None and not (self.prune_threshold >= 0
                                                     and math.isfinite(self.prune_threshold)):
            raise ValueError(f"prune_threshold must be >= 0, got {self.prune_threshold!r}")
        if self.prune_scope not in _prune.SCOPES:
            raise ValueError(f"prune_scope must be one of {', '.join(_prune.SCOPES)}, got {self.prune_scope!r}")

    @property
    def rd_search(self) -> bool:
        """Weight levels come from the rate-distortion search (RDOQ and/or DQ)."""
        return bool(self.rdoq or self.dq or self.rd_lambda is not None)

    @property
    def rd_lam(self) -> float:
        """The rate weight the search uses, in step^2 per bit (0: distortion only)."""
        if self.rd_lambda is not None:
            return float(self.rd_lambda)
        return _rdq.default_lambda(self.dq) if self.rdoq else 0.0

    @property
    def pruning(self) -> bool:
        return self.prune is not None or self.prune_threshold is not None

    @property
    def target(self) -> float:
        return self.target_snr if self.target_snr is not None else DEFAULT_TARGET_SNR

    @property
    def needs_model_step(self) -> bool:
        """A model-wide target SNR needs every weight before the first is coded."""
        return (self.method == "uniform" and not self.lossless and self.step is None
                and self.qp is None and self.snr_scope == "model")

    @property
    def needs_global_pass(self) -> bool:
        """Global pruning by amount needs every weight before the first is coded."""
        return self.prune is not None and self.prune_scope == "global"

    def options(self) -> "_quantize.Options":
        return _quantize.Options(bits=self.bits, il=self.il, fl=self.fl, rounding=self.rounding, seed=self.seed,
                                 k=self.k, init=self.kmeans_init, iterations=self.iterations, d=self.pq_dim,
                                 stages=self.rq_stages, ternary_ratio=self.ternary_threshold)

    def _describe_method(self) -> str:
        m = self.method
        if m == "fixed":
            if self.il is not None and self.fl is not None:
                text = f"fixed <{self.il},{self.fl}>"
            else:
                text = f"fixed {self.bits if self.bits is not None else 8} bits"
            return text + (f", stochastic rounding (seed {self.seed})" if self.rounding == "stochastic" else "")
        if m == "kmeans":
            return f"kmeans k={self.k}"
        if m == "pq":
            return f"pq k={self.k} d={self.pq_dim}"
        if m == "rq":
            return f"rq k={self.k} d={self.pq_dim} stages={self.rq_stages}"
        if m == "ternary":
            return f"ternary (threshold {self.ternary_threshold:g} mean|w|)"
        return m

    def describe(self) -> str:
        if self.method == "uniform" and not self.pruning:
            return self._describe_uniform() + self._describe_rd()
        text = (self._describe_uniform() + self._describe_rd() if self.method == "uniform"
                else self._describe_method())
        if self.pruning:
            what = (f"{self.prune:g}" if self.prune is not None else f"threshold {self.prune_threshold:g}")
            text += (f", pruned {what} {'rows ' if self.prune_structured else ''}"
                     f"{'per tensor' if self.prune_scope == 'tensor' else 'globally'}")
        return text

    def _describe_rd(self) -> str:
        if not self.rd_search:
            return ""
        lam = self.rd_lam
        if self.dq:
            return ", dependent quantization" + (f", RDOQ lambda {lam:g}" if lam > 0 else "")
        return f", RDOQ lambda {lam:g}" if lam > 0 else ""

    def _describe_uniform(self) -> str:
        if self.lossless:
            return "lossless"
        if self.step is not None:
            return f"step {self.step:g}"
        if self.qp is not None:
            return f"qp {self.qp:g} (step {step_from_qp(self.qp):g})"
        per = "over the model" if self.snr_scope == "model" else "per tensor"
        return f"target weight SNR {self.target:g} dB {per}"

    def step_for(self, w: np.ndarray, ndim: int, dtype: str,
                 model_step: Optional[float] = None, row: int = 0) -> float:
        """The quantization step of a float tensor with ``ndim`` dimensions, values ``w``
        (1-D, float32 or float64), stored as ``dtype``; ``model_step`` is the one step
        of a model-wide target SNR (``model_step_for``)."""
        if ndim <= 1:
            if w.size <= _SNAP_MAX_VALUES:
                grid = _grid_step_reaching(w, self.small_snr, dtype)
                if grid is not None:
                    return grid
            step = _step_reaching(w, self.small_snr, dtype)
            return _snap_small(w, step, self.small_snr, dtype) if w.size <= _SNAP_MAX_VALUES else step
        if model_step is not None:
            return model_step
        if self.step is not None:
            return float(self.step)
        if self.qp is not None:
            return step_from_qp(self.qp)
        if self.rd_search:
            return rd_step_reaching([(w, row, dtype)], self.target, self)
        return _step_reaching(w, self.target_snr if self.target_snr is not None else DEFAULT_TARGET_SNR,
                              dtype)


# A step 2 ** (e / 4) takes 1 byte in the index, any other float 9 (nnc-v1.md section 6.1). For a
# small 1-D tensor the finer step on that grid costs less than the 8 bytes saved: on average 1/8
# bit a value more, so up to 256 values at most 4 bytes.
_SNAP_MAX_VALUES = 256
_GRID_MIN_E, _GRID_MAX_E = -160, 79  # the exponents e of qp_grid_step


_GRID_WALK = 24  # grid steps (6 octaves) _grid_step_reaching walks at most from its first guess


def _grid_step_reaching(w: np.ndarray, target: float, dtype: str) -> Optional[float]:
    """For a small tensor: the largest step 2 ** (e / 4) whose decoded tensor (rounding to
    ``dtype`` included) reaches ``target`` dB, found by walking the grid from the step the
    uniform-noise model gives (a few passes over the values instead of a full step search):
    up while the next step still reaches the target, or down until one does. None when the
    walk finds none (e.g. the dtype's precision is the limit), or for an all-zero tensor."""
    if w.size == 0 or not np.any(w):
        return None
    x = w.astype(np.float64)
    rms = math.sqrt(float(np.dot(x, x)) / x.size)
    if not (rms > 0 and math.isfinite(rms)):
        return None
    guess = rms * math.sqrt(12.0) * 10.0 ** (-float(target) / 20.0)
    e = max(_GRID_MIN_E, min(_GRID_MAX_E, math.floor(4.0 * math.log2(guess))))

    amax = float(np.max(np.abs(x)))

    def reaches(k: int) -> bool:
        step = qp_grid_step(k)
        if amax / step > 2**31 - 1:  # levels beyond int32: not a step this tensor can use
            return False
        return _stored_snr(w, step, dtype) >= target

    if reaches(e):
        for _ in range(_GRID_WALK):
            if e >= _GRID_MAX_E or not reaches(e + 1):
                break
            e += 1
        return float(qp_grid_step(e))
    for _ in range(_GRID_WALK):
        e -= 1
        if e < _GRID_MIN_E:
            return None
        if reaches(e):
            return float(qp_grid_step(e))
    return None


def _snap_small(w: np.ndarray, step: float, target: float, dtype: str) -> float:
    """The largest step 2 ** (e / 4) <= ``step`` (at most one QP-octave finer) that still reaches
    ``target`` dB, rounding to ``dtype`` included; ``step`` when there is none."""
    if not (step > 0 and math.isfinite(step)) or not np.any(w):
        return step
    e = math.floor(4.0 * math.log2(step))
    for k in range(e + 1, e - 4, -1):
        s = qp_grid_step(k)
        if s is None or s > step:
            continue
        if _stored_snr(w, s, dtype) >= target:
            return float(s)
    return step


def _stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """What a decoder returns for float64 ``values`` in ``dtype``, back as float64."""
    if dtype == "bfloat16":
        return bf16.to_float32(bf16.from_float32(values.astype(np.float32))).astype(np.float64)
    with np.errstate(over="ignore"):
        return values.astype(_NUMPY_DTYPES[dtype]).astype(np.float64)


_CHUNK = 1 << 16


def _stored_sq(w: np.ndarray, step: float, dtype: str) -> tuple[float, float]:
    """(sum w^2, squared error of the decoded tensor, rounding to ``dtype`` included),
    in chunks: memory stays bounded whatever the tensor's size."""
    if _quant is not None and dtype == "float32" and w.dtype in (np.float32, np.float64):
        return _quant.sq_error_f32(np.ascontiguousarray(w).reshape(-1), float(step))  # one pass
    sig = err = 0.0
    for start in range(0, w.size, _CHUNK):
        x = w[start:start + _CHUNK].astype(np.float64)
        e = x - _stored(np.rint(x / step) * step, dtype)
        sig += float(np.dot(x, x))
        err += float(np.dot(e, e))
    return sig, err


def _stored_snr(w: np.ndarray, step: float, dtype: str) -> float:
    sig, err = _stored_sq(w, step, dtype)
    return math.inf if err == 0.0 else 10.0 * math.log10(sig / err)


def _step_reaching(w: np.ndarray, target: float, dtype: str) -> float:
    """The step whose decoded tensor, rounding to ``dtype`` included, reaches ``target`` dB.

    ``step_for_snr`` meets the target in exact arithmetic; storing the values as
    float32 / float16 / bfloat16 adds a little noise, so the step shrinks by 1%
    at a time until the stored result meets it too. Should the SNR stop
    improving first (with few distinct values it is far from monotonic in the
    step: a step found for the target exactly can miss it by 1e-5 dB after
    rounding to float32, and the next shrink miss it by more), the steps that
    meet a slightly higher target in exact arithmetic (+0.0001 to +1 dB) are
    tried; when the dtype's own precision is the limit, the step of the best
    SNR seen is returned."""
    step = step_for_snr(w, target)
    if w.size == 0 or dtype == "float64" or not np.any(w):
        return step
    best_snr, best_step = -math.inf, step
    for _ in range(50):
        snr = _stored_snr(w, step, dtype)
        if snr >= target:
            return float(step)
        if snr <= best_snr:
            break
        best_snr, best_step = snr, step
        step *= 0.99
    for margin in (1e-4, 1e-3, 1e-2, 0.1, 1.0):
        s = step_for_snr(w, target + margin)
        snr = _stored_snr(w, s, dtype)
        if snr >= target:
            return float(s)
        if snr > best_snr:
            best_snr, best_step = snr, s
    return float(best_step)


# Where the search for DQ starts, relative to the plain step reaching the same SNR: the
# dependent quantizer's levels are spaced 2 steps apart, which costs about 4.7 dB at equal step.
_DQ_START = 10.0 ** (-4.7 / 20.0)


# The levels of every weight tensor at the step rd_step_reaching returned last, so that
# encoding does not search them a second time: {(lambda, dq, step): {tensor key: (levels, error)}}
_RD_CACHE: dict = {}


def _tensor_key(w: np.ndarray, row: int) -> tuple:
    return (w.size, row, w.dtype.str, zlib.crc32(memoryview(np.ascontiguousarray(w)).cast("B")))


def _rd_levels(w: np.ndarray, step: float, row: int, settings: Settings, name: str = "",
               guard: bool = True):
    """(levels, squared error in binary64) of a weight tensor ``w`` (1-D, coding order)
    from the rate-distortion search of ``settings`` (RDOQ and/or DQ)."""
    cached = _RD_CACHE.get((settings.rd_lam, settings.dq, float(step)))
    if cached:
        hit = cached.pop(_tensor_key(w, row), None)
        if hit is not None:
            return hit
    if w.size:
        top = max(float(w.max()), -float(w.min())) / step
        if top > 2**31 - 1:
            raise ValueError(f"tensor {name!r}: step {step:g} is too small for its range "
                             f"(levels beyond int32); use a larger step or lower SNR")
    return _rdq.rd_quantize(w, step, row_length=row, lam=settings.rd_lam, dq=settings.dq, guard=guard)


def _rd_stage(step: float, settings: Settings) -> dict:
    # RDOQ changes only which levels are chosen, not how they decode: it is recorded in the
    # file's "nncodec.settings" metadata, not in the chain (14 bytes a tensor saved)
    return {"id": "dq" if settings.dq else "uniform", "step": float(step)}


def rd_step_reaching(tensors, target: float, settings: Settings, tol: float = 0.02, threads: int = 1) -> float:
    """A step with which the rate-distortion search of ``settings`` brings the weight tensors
    ``tensors`` ((1-D values, row length, dtype) triples) together to at least ``target`` dB of
    weight SNR, and at most ``target + tol`` when the search can get there. The quantizer runs
    in the loop: Newton steps on ln(step) from the plain step (scaled for DQ), then regula falsi
    once the target is bracketed; the result is the largest step found that meets the target,
    rounding to the stored dtypes included."""
    tensors = [(w, r, d) for w, r, d in tensors if w.size]
    if not tensors:
        return 1.0
    signal = sum(float(np.dot(w.astype(np.float64), w.astype(np.float64))) for w, _, _ in tensors)
    if signal == 0.0:
        return 1.0
    plain = step_for_snr_many([w for w, _, _ in tensors], target)
    exact = all(d == "float64" for _, _, d in tensors)

    found = {}

    threads = _parallel.threads_for(threads, sum(w.size for w, _, _ in tensors))
    keys = [_tensor_key(w, r) for w, r, _ in tensors]

    def snr(ls: float, stored: tuple = ("float16", "bfloat16")) -> float:
        step = math.exp(ls)

        def one(t):
            w, r, d = t
            levels, e = _rd_levels(w, step, r, settings)
            if d in stored:  # the error after rounding to the stored dtype
                x = w.astype(np.float64)
                dv = x - _stored(_rdq.reconstruct(levels, step, settings.dq), d)
                return levels, e, float(np.dot(dv, dv))
            return levels, e, e

        err = 0.0
        found.clear()
        for key, (levels, e, e_stored) in zip(keys, _parallel.ordered_map(one, tensors, threads)):
            found[key] = (levels, e)
            err += e_stored  # summed in tensor order, whatever the threads
        return math.inf if err == 0.0 else 10.0 * math.log10(signal / err)

    def checked(ls: float) -> float:
        # float32 storage is left out of the search (its rounding changes the SNR by far less
        # than the tolerance); the step returned is checked with it, and made smaller if needed
        if exact or all(d in ("float16", "bfloat16", "float64") for _, _, d in tensors):
            return keep(ls)
        for _ in range(50):
            found_ls[0] = ls
            if snr(ls, ("float32", "float16", "bfloat16")) >= target:
                break
            ls += math.log(0.99)
        return keep(ls)

    aim = target + tol / 2.0
    ls = math.log(plain * (_DQ_START if settings.dq else 1.0))
    ok, bad = [], []
    _RD_CACHE.clear()

    def keep(ls: float) -> float:  # the levels of the step returned, for the encoder
        step = float(math.exp(ls))
        if found and found_ls[0] == ls:
            _RD_CACHE[(settings.rd_lam, settings.dq, step)] = dict(found)
        return step

    found_ls = [None]
    for _ in range(14):
        v = snr(ls)
        found_ls[0] = ls
        (ok if v >= target else bad).append((ls, v))
        if target <= v <= target + tol:
            return checked(ls)
        lo = max(ok) if ok else None
        hi = min(bad) if bad else None
        if lo is not None and hi is not None:
            span = hi[0] - lo[0]
            if span < 1e-6:
                break
            if math.isinf(lo[1]):
                ls = lo[0] + 0.5 * span
            else:
                ls = lo[0] + span * (lo[1] - aim) / (lo[1] - hi[1])
                ls = min(max(ls, lo[0] + 0.05 * span), hi[0] - 0.05 * span)
        else:
            base = lo if lo is not None else hi
            ls = base[0] + (min(base[1], 1e3) - aim) / _DB_PER_LN_STEP
    if ok:
        return checked(max(ok)[0])
    ls = min(bad)[0]
    for _ in range(200):  # not reached yet: shrink until it is
        ls -= 0.05
        found_ls[0] = ls
        if snr(ls) >= target:
            break
    return checked(ls)


_DTYPE_NAMES: dict = {}  # numpy dtype -> container name (numpy's .name is slow to compute)


def dtype_name(array) -> str:
    """The container dtype name of a numpy array (bfloat16 must be named explicitly)."""
    dt = array.dtype
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = np.dtype(dt).name
        if name not in DTYPES or name == "bfloat16":
            raise TypeError(f"unsupported dtype {array.dtype}; supported: {', '.join(DTYPES)}")
        _DTYPE_NAMES[dt] = name
    return name


def _raw_record(name: str, dtype: str, arr: np.ndarray) -> TensorRecord:
    data = np.ascontiguousarray(arr, dtype=np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<"))
    return TensorRecord(name, dtype, tuple(arr.shape), [{"id": "raw"}], 0, data.tobytes())


def _weights(arr: np.ndarray, dtype: str) -> np.ndarray:
    return _as_real(bf16.to_float32(arr) if dtype == "bfloat16" else arr)


def model_step_for(settings: Settings, tensors: Iterable[tuple[np.ndarray, str]],
                   global_threshold: Optional[float] = None, threads: int = 1) -> Optional[float]:
    """The one step that brings all weight tensors (float, two or more dimensions) together
    to ``settings.target`` dB of weight SNR, rounding to their stored dtypes included;
    None when the settings do not ask for it. With pruning, the SNR is that of the weights
    that pruning keeps (pruned copies are made, float32: memory about the model's size)."""
    if not settings.needs_model_step:
        return None
    pairs, rows = [], []
    for a, d in tensors:
        if d not in FLOAT_DTYPES or a.ndim < 2 or not a.size:
            continue
        w = _weights(a, d)
        if not (math.isfinite(float(w.max())) and math.isfinite(float(w.min()))):
            continue
        if settings.pruning:
            w = _prune_stage(w.reshape(a.shape).astype(np.float64), settings,
                             global_threshold)[0].astype(np.float32).reshape(-1)
        pairs.append((w, d))
        rows.append(int(math.prod(a.shape[1:])))
    if not pairs:
        return None
    target = settings.target
    if settings.rd_search:
        return rd_step_reaching([(w, r, d) for (w, d), r in zip(pairs, rows)], target, settings,
                                threads=threads)
    step = step_for_snr_many([w for w, _ in pairs], target)
    if all(d == "float64" for _, d in pairs):
        return step
    best = -math.inf
    for _ in range(50):  # storing as float32 / float16 / bfloat16 adds noise: shrink 1% at a time
        sig = err = 0.0
        for w, d in pairs:
            s_, e_ = _stored_sq(w, step, d)
            sig += s_
            err += e_
        snr = math.inf if err == 0.0 else 10.0 * math.log10(sig / err)
        if snr >= target or snr <= best:
            break
        best = snr
        step *= 0.99
    return float(step)


def global_prune_threshold(settings: Settings, tensors: Iterable[tuple[np.ndarray, str]]) -> Optional[float]:
    """The one threshold of ``Settings(prune=..., prune_scope="global")`` over (array, dtype) pairs
    (the tensors ``encode_tensor`` would prune); None when no global pass is needed."""
    if not settings.needs_global_pass:
        return None
    weights = [_weights(a, d).reshape(a.shape) for a, d in tensors
               if d in FLOAT_DTYPES and a.ndim >= 2 and a.size]
    weights = [w for w in weights if math.isfinite(float(w.max())) and math.isfinite(float(w.min()))]
    return _prune.global_threshold(weights, settings.prune, settings.prune_structured)


def _prune_stage(w: np.ndarray, settings: Settings, global_threshold: Optional[float]):
    """(pruned w, prune stage) of a weight tensor ``w`` (float, its shape)."""
    fn = _prune.row_mask if settings.prune_structured else _prune.magnitude_mask
    stage = {"id": "prune", "scope": settings.prune_scope, "structured": bool(settings.prune_structured)}
    if settings.prune_threshold is not None:
        keep = fn(w, threshold=settings.prune_threshold)
        stage["threshold"] = float(settings.prune_threshold)
    elif settings.prune_scope == "global":
        t = global_threshold if global_threshold is not None else -1.0
        keep = np.ones(w.shape, dtype=bool) if t < 0 else fn(w, threshold=t)
        stage["amount"] = float(settings.prune)
        stage["threshold"] = float(max(t, 0.0))
    else:
        keep = fn(w, amount=settings.prune)
        stage["amount"] = float(settings.prune)
    stage["zeros"] = int(keep.size - np.count_nonzero(keep))
    return np.where(keep, w, 0.0), stage


def encode_tensor(name: str, arr: np.ndarray, dtype: str, settings: Settings, *,
                  global_threshold: Optional[float] = None,
                  model_step: Optional[float] = None) -> TensorRecord:
    """Code one tensor. ``arr`` holds the values (bfloat16: the raw uint16 bits).

    ``global_threshold``: from ``global_prune_threshold`` when pruning globally by amount;
    ``model_step``: from ``model_step_for`` for a model-wide target SNR."""
    shape = tuple(int(d) for d in arr.shape)
    backend = get_backend(settings.backend)
    row = int(math.prod(shape[1:])) if len(shape) >= 2 else 0
    if dtype in FLOAT_DTYPES:
        if settings.lossless:
            return _raw_record(name, dtype, arr)
        w = bf16.to_float32(arr) if dtype == "bfloat16" else arr
        w = _as_real(w)
        if w.size and not (math.isfinite(float(w.max())) and math.isfinite(float(w.min()))):
            return _raw_record(name, dtype, arr)  # NaN / inf cannot be quantized
        if len(shape) >= 2 and (settings.method != "uniform" or settings.pruning):
            return _encode_weight(name, w, dtype, shape, settings, backend, row, global_threshold,
                                  model_step)
        step = settings.step_for(w, len(shape), dtype, model_step, row)
        if len(shape) >= 2 and settings.rd_search:
            levels, _ = _rd_levels(w, step, row, settings, name)
            stage = _rd_stage(step, settings)
        else:
            levels, top = quantize_checked(w, step)
            if top > 2**31 - 1:
                raise ValueError(f"tensor {name!r}: step {step:g} is too small for its range "
                                 f"(levels beyond int32); use a larger step or lower SNR")
            stage = {"id": "uniform", "step": float(step)}
        payload = _code(backend, levels, row, stage["id"] == "dq")
        return TensorRecord(name, dtype, shape, [stage], backend.id, payload)
    if dtype not in DTYPES:
        raise TypeError(f"tensor {name!r}: unsupported dtype {dtype}")
    flat = np.asarray(arr).reshape(-1)
    if flat.size and (flat.dtype.kind in "iu" and (int(flat.min()) < -(2**31) or int(flat.max()) > 2**31 - 1)):
        return _raw_record(name, dtype, arr)
    levels = flat.astype(np.int32)
    return TensorRecord(name, dtype, shape, [{"id": "integer"}], backend.id,
                        backend.encode(levels, row_length=row))


def _code(backend, levels: np.ndarray, row: int, dq: bool) -> bytes:
    """The payload of ``levels``; the cabac coder is told when they come from the dependent
    quantizer (its dq contexts follow the quantizer's state, formats/cabac-v1.md)."""
    if backend.name == "cabac":
        return backend.encode(levels, row_length=row, dq=bool(dq))
    return backend.encode(np.asarray(levels), row_length=row)


def _encode_weight(name, w, dtype, shape, settings, backend, row, global_threshold,
                   model_step=None) -> TensorRecord:
    """A weight tensor through the chain [prune], quantizer."""
    chain = []
    w = w.reshape(shape)
    if settings.pruning:
        w, stage = _prune_stage(w.astype(np.float64), settings, global_threshold)
        chain.append(stage)
    if settings.method == "uniform":
        step = settings.step_for(w.reshape(-1), len(shape), dtype, model_step, row)
        if settings.rd_search:
            levels, _ = _rd_levels(w.reshape(-1), step, row, settings, name)
            chain.append(_rd_stage(step, settings))
        else:
            levels, top = quantize_checked(w.reshape(-1), step)
            if top > 2**31 - 1:
                raise ValueError(f"tensor {name!r}: step {step:g} is too small for its range "
                                 f"(levels beyond int32); use a larger step or lower SNR")
            chain.append({"id": "uniform", "step": float(step)})
    else:
        stage, levels, row = _quantize.encode(settings.method, w, settings.options(), name=name,
                                              pruned=settings.pruning)
        chain.append(stage)
    return TensorRecord(name, dtype, shape, chain, backend.id,
                        _code(backend, levels, row, chain[-1].get("id") == "dq"))


def _to_dtype(values: np.ndarray, info: RecordInfo, np_dtype) -> np.ndarray:
    if info.dtype == "bfloat16":
        return bf16.from_float32(values.astype(np.float32)).reshape(info.shape)
    with np.errstate(over="ignore"):
        return values.astype(np_dtype).reshape(info.shape)


def _check_prune_stage(info: RecordInfo, stage: dict) -> None:
    if stage.get("id") != "prune":
        raise FormatError(f"tensor {info.name!r}: unsupported coding chain {info.chain!r}")
    if info.dtype not in FLOAT_DTYPES:
        raise FormatError(f"tensor {info.name!r}: prune stage on a {info.dtype} tensor")


def decode_tensor(info: RecordInfo, payload: bytes) -> np.ndarray:
    """Decode one record back to a numpy array of its dtype (bfloat16: uint16 bits).

    Raises FormatError for anything inconsistent."""
    chain = info.chain
    if (_quant is not None and info.backend == 1 and info.dtype == "float32"
            and type(chain) is list and len(chain) == 1):
        # the usual record (one uniform stage, cabac, float32), with the checks of the general
        # path below in fewer steps: decoded, then dequantized in the levels' own buffer
        stage = chain[0]
        step = stage.get("step") if type(stage) is dict and stage.get("id") == "uniform" else None
        if type(step) is float and step > 0 and math.isfinite(step):
            levels = _cabac_decode(payload, info.numel)
            _quant.dequantize_into(levels, step, levels.view(np.float32))
            return levels.view(np.float32).reshape(info.shape)
    count = info.numel
    np_dtype = np.dtype(_NUMPY_DTYPES[info.dtype])
    if (not isinstance(chain, list) or len(chain) not in (1, 2)
            or not all(isinstance(st, dict) for st in chain)):
        raise FormatError(f"tensor {info.name!r}: unsupported coding chain {chain!r}")
    if len(chain) == 2:
        _check_prune_stage(info, chain[0])  # informative: its zeros are in the levels already
        if chain[1].get("id") in ("raw", "integer", "prune"):
            raise FormatError(f"tensor {info.name!r}: unsupported coding chain {chain!r}")
    stage = chain[-1]
    kind = stage.get("id")
    if kind == "raw":
        if info.backend != 0:
            raise FormatError(f"tensor {info.name!r}: raw stage with entropy backend {info.backend}")
        if len(payload) != count * np_dtype.itemsize:
            raise FormatError(f"tensor {info.name!r}: raw payload of {len(payload)} bytes, "
                              f"expected {count * np_dtype.itemsize}")
        return np.frombuffer(payload, dtype=np_dtype.newbyteorder("<")).astype(np_dtype).reshape(info.shape)
    try:
        backend = backend_by_id(info.backend)
    except KeyError:
        raise FormatError(f"tensor {info.name!r}: unknown entropy backend {info.backend}") from None
    codec = _quantize.STAGES.get(kind)
    if codec is not None:
        if info.dtype not in FLOAT_DTYPES:
            raise FormatError(f"tensor {info.name!r}: {kind} stage on a {info.dtype} tensor")
        try:
            n = codec.level_count(stage, info.shape)
            values = codec.decode(stage, backend.decode(payload, n), info.shape)
        except FormatError as exc:
            raise FormatError(f"tensor {info.name!r}: {exc}") from None
        return _to_dtype(values, info, np_dtype)
    levels = backend.decode(payload, count)
    if kind == "integer":
        if info.dtype in FLOAT_DTYPES:
            raise FormatError(f"tensor {info.name!r}: integer stage on a {info.dtype} tensor")
        if info.dtype == "bool":
            if levels.size and (levels.min() < 0 or levels.max() > 1):
                raise FormatError(f"tensor {info.name!r}: bool tensor holds values other than 0 and 1")
        elif levels.size:
            lim = np.iinfo(np_dtype)
            if levels.min() < lim.min or levels.max() > lim.max:
                raise FormatError(f"tensor {info.name!r}: values outside {info.dtype}")
        return levels.astype(np_dtype).reshape(info.shape)
    if kind == "uniform":
        step = stage.get("step")
        if info.dtype not in FLOAT_DTYPES:
            raise FormatError(f"tensor {info.name!r}: uniform stage on a {info.dtype} tensor")
        if not isinstance(step, float) or not (step > 0 and math.isfinite(step)):
            raise FormatError(f"tensor {info.name!r}: invalid step {step!r}")
        if _quant is not None and info.dtype == "float32" and levels.dtype == np.int32 and levels.ndim == 1:
            # one pass instead of three; same rounding (float64 product, then float32); in the
            # levels' own buffer when the backend handed over a fresh array (4 bytes each way)
            levels = np.ascontiguousarray(levels)
            own = levels.flags.owndata and levels.flags.writeable
            out = levels.view(np.float32) if own else np.empty(levels.size, np.float32)
            _quant.dequantize_into(levels, step, out)
            return out.reshape(info.shape)
        values = levels.astype(np.float64) * step
        if info.dtype == "bfloat16":
            return bf16.from_float32(values.astype(np.float32)).reshape(info.shape)
        with np.errstate(over="ignore"):
            return values.astype(np_dtype).reshape(info.shape)
    raise FormatError(f"tensor {info.name!r}: unknown coding stage {kind!r}")
