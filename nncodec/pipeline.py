"""Per-tensor coding: numpy array <-> container record.

One tensor goes through a short chain of stages recorded in its container
record, so that decoding needs no settings:

- ``{"id": "uniform", "step": s}``: float tensor, levels = rint(w / s), coded
  by the record's entropy backend; decoded as levels * s in the tensor's dtype.
- ``{"id": "integer"}``: integer or bool tensor whose values fit in int32,
  coded losslessly by the entropy backend.
- ``{"id": "raw"}``: the tensor's little-endian bytes as they are (backend 0):
  for lossless storage of floats, non-finite floats, and integers beyond int32.

How the step of a float tensor is chosen (``Settings``): tensors with two or
more dimensions (weights) use ``step``, or ``2 ** (qp / 4)``, or the step that
reaches ``target_snr`` dB of weight SNR; tensors with at most one dimension
(biases, norm scales: few values, large effect) always get their own step,
reaching ``small_snr`` dB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import bf16
from .container import DTYPES, RecordInfo, TensorRecord
from .entropy import DEFAULT_BACKEND, backend_by_id, get_backend
from .errors import FormatError
from .quant_snr import _as_real, quantize_checked, step_for_snr

DEFAULT_TARGET_SNR = 30.0
DEFAULT_SMALL_SNR = 50.0
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
    backend: str = DEFAULT_BACKEND
    lossless: bool = False

    def __post_init__(self):
        given = [n for n in ("step", "qp", "target_snr") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of step, qp and target_snr (got {', '.join(given)})")
        if self.step is not None and not (self.step > 0 and math.isfinite(self.step)):
            raise ValueError(f"step must be a positive finite number, got {self.step!r}")
        for name in ("qp", "target_snr", "small_snr"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v!r}")
        get_backend(self.backend)  # raises ValueError naming the choices

    def describe(self) -> str:
        if self.lossless:
            return "lossless"
        if self.step is not None:
            return f"step {self.step:g}"
        if self.qp is not None:
            return f"qp {self.qp:g} (step {step_from_qp(self.qp):g})"
        return f"target weight SNR {self.target_snr if self.target_snr is not None else DEFAULT_TARGET_SNR:g} dB"

    def step_for(self, w: np.ndarray, ndim: int, dtype: str) -> float:
        """The quantization step of a float tensor with ``ndim`` dimensions, values ``w``
        (1-D, float32 or float64), stored as ``dtype``."""
        if ndim <= 1:
            return _step_reaching(w, self.small_snr, dtype)
        if self.step is not None:
            return float(self.step)
        if self.qp is not None:
            return step_from_qp(self.qp)
        return _step_reaching(w, self.target_snr if self.target_snr is not None else DEFAULT_TARGET_SNR,
                              dtype)


def _stored(values: np.ndarray, dtype: str) -> np.ndarray:
    """What a decoder returns for float64 ``values`` in ``dtype``, back as float64."""
    if dtype == "bfloat16":
        return bf16.to_float32(bf16.from_float32(values.astype(np.float32))).astype(np.float64)
    with np.errstate(over="ignore"):
        return values.astype(_NUMPY_DTYPES[dtype]).astype(np.float64)


_CHUNK = 1 << 16


def _stored_snr(w: np.ndarray, step: float, dtype: str) -> float:
    """Weight SNR of the decoded tensor, rounding to ``dtype`` included (in chunks:
    memory stays bounded whatever the tensor's size)."""
    sig = err = 0.0
    for start in range(0, w.size, _CHUNK):
        x = w[start:start + _CHUNK].astype(np.float64)
        e = x - _stored(np.rint(x / step) * step, dtype)
        sig += float(np.dot(x, x))
        err += float(np.dot(e, e))
    return math.inf if err == 0.0 else 10.0 * math.log10(sig / err)


def _step_reaching(w: np.ndarray, target: float, dtype: str) -> float:
    """The step whose decoded tensor, rounding to ``dtype`` included, reaches ``target`` dB.

    ``step_for_snr`` meets the target in exact arithmetic; storing the values as
    float32 / float16 / bfloat16 adds a little noise, so the step shrinks by 1%
    at a time until the stored result meets it too (or stops improving, when
    the dtype's own precision is the limit)."""
    step = step_for_snr(w, target)
    if w.size == 0 or dtype == "float64" or not np.any(w):
        return step
    best_snr = -math.inf
    for _ in range(50):
        snr = _stored_snr(w, step, dtype)
        if snr >= target or snr <= best_snr:
            break
        best_snr = snr
        step *= 0.99
    return float(step)


def dtype_name(array) -> str:
    """The container dtype name of a numpy array (bfloat16 must be named explicitly)."""
    name = np.dtype(array.dtype).name
    if name not in DTYPES or name == "bfloat16":
        raise TypeError(f"unsupported dtype {array.dtype}; supported: {', '.join(DTYPES)}")
    return name


def _raw_record(name: str, dtype: str, arr: np.ndarray) -> TensorRecord:
    data = np.ascontiguousarray(arr, dtype=np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<"))
    return TensorRecord(name, dtype, tuple(arr.shape), [{"id": "raw"}], 0, data.tobytes())


def encode_tensor(name: str, arr: np.ndarray, dtype: str, settings: Settings) -> TensorRecord:
    """Code one tensor. ``arr`` holds the values (bfloat16: the raw uint16 bits)."""
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
        step = settings.step_for(w, len(shape), dtype)
        levels, top = quantize_checked(w, step)
        if top > 2**31 - 1:
            raise ValueError(f"tensor {name!r}: step {step:g} is too small for its range "
                             f"(levels beyond int32); use a larger step or lower SNR")
        payload = backend.encode(levels, row_length=row)
        return TensorRecord(name, dtype, shape, [{"id": "uniform", "step": float(step)}],
                            backend.id, payload)
    if dtype not in DTYPES:
        raise TypeError(f"tensor {name!r}: unsupported dtype {dtype}")
    flat = np.asarray(arr).reshape(-1)
    if flat.size and (flat.dtype.kind in "iu" and (int(flat.min()) < -(2**31) or int(flat.max()) > 2**31 - 1)):
        return _raw_record(name, dtype, arr)
    levels = flat.astype(np.int32)
    return TensorRecord(name, dtype, shape, [{"id": "integer"}], backend.id,
                        backend.encode(levels, row_length=row))


def decode_tensor(info: RecordInfo, payload: bytes) -> np.ndarray:
    """Decode one record back to a numpy array of its dtype (bfloat16: uint16 bits).

    Raises FormatError for anything inconsistent."""
    chain = info.chain
    count = info.numel
    np_dtype = np.dtype(_NUMPY_DTYPES[info.dtype])
    if not isinstance(chain, list) or len(chain) != 1 or not isinstance(chain[0], dict):
        raise FormatError(f"tensor {info.name!r}: unsupported coding chain {chain!r}")
    stage = chain[0]
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
        values = levels.astype(np.float64) * step
        if info.dtype == "bfloat16":
            return bf16.from_float32(values.astype(np.float32)).reshape(info.shape)
        with np.errstate(over="ignore"):
            return values.astype(np_dtype).reshape(info.shape)
    raise FormatError(f"tensor {info.name!r}: unknown coding stage {kind!r}")
