"""Sparse layouts of quantized weight matrices and what they cost.

- ``layouts``: ``Dense``, ``CSR`` and ``WS`` (weight sharing), exact conversions,
  storage accounting in bits (formulas in the module doc);
- ``kernels``: ``matvec`` / ``matmat`` from any layout (Cython loops in ``nncodec_ext._sparse``);
- ``quantize``: magnitude pruning and uniform / codebook quantization to a level matrix;
- ``energy``: operations, memory accesses and energy per layer (seed tables);
- ``torch_modules``: Linear / Conv2d layers run from a layout (imports torch);
- ``cli``: the ``analyze`` command (click).
"""
from .energy import LayerCounts, layer_report, model_report
from .kernels import matmat, matvec
from .layouts import CSR, WS, Dense, Dequant, Storage, field_bits, storage_formulas
from .quantize import QuantizedMatrix, as_matrix, magnitude_prune, quantize_matrix

__all__ = ["CSR", "WS", "Dense", "Dequant", "Storage", "field_bits", "storage_formulas",
           "matvec", "matmat", "LayerCounts", "layer_report", "model_report",
           "QuantizedMatrix", "as_matrix", "magnitude_prune", "quantize_matrix"]
