"""Run Linear and Conv2d layers straight from a sparse layout (inference only).

    from nncodec.sparse import quantize_matrix
    from nncodec.sparse.torch_modules import sparsify
    q = {name: quantize_matrix(w, target_snr=30, prune=0.9) for name, w in weights.items()}
    ws_model = sparsify(model, q, layout="ws")      # a copy; Linear / Conv2d layers replaced
    logits = ws_model(x)

``SparseLinear`` computes ``y = W x + b`` as ``(W @ x.T).T`` with the layout's
matrix-matrix kernel; ``SparseConv2d`` unfolds the input into patches
``(N, C*kh*kw, L)`` (``torch.nn.functional.unfold``) and multiplies each
sample's patch matrix by the layout, which equals ``conv2d`` for ``groups=1``.
The products run in numpy/Cython on CPU float32 and are not differentiable.
"""
from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .kernels import matmat, prepare

__all__ = ["SparseLinear", "SparseConv2d", "sparsify"]


class _SparseBase(nn.Module):
    def __init__(self, layout, bias):
        super().__init__()
        self.layout = layout
        self._prepared = prepare(layout)
        if bias is not None:
            self.register_buffer("bias", bias.detach().to(torch.float32).clone())
        else:
            self.bias = None

    def _product(self, X: np.ndarray) -> np.ndarray:
        return matmat(self._prepared, X)

    def extra_repr(self) -> str:
        lay = self.layout
        return f"layout={lay.kind}, shape={lay.shape}, nnz={lay.nnz if hasattr(lay, 'nnz') else '?'}"


class SparseLinear(_SparseBase):
    """A Linear layer whose weight is a Dense / CSR / WS layout of shape (out, in)."""

    def __init__(self, layout, bias=None):
        super().__init__(layout, bias)
        self.in_features, self.out_features = layout.cols, layout.rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        X = x.detach().to(torch.float32).reshape(-1, self.in_features).numpy()
        Y = self._product(np.ascontiguousarray(X.T))              # (out, N)
        y = torch.from_numpy(np.ascontiguousarray(Y.T))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


class SparseConv2d(_SparseBase):
    """A Conv2d layer (groups=1) whose kernel is a layout of shape (out, in*kh*kw)."""

    def __init__(self, layout, conv: nn.Conv2d):
        if conv.groups != 1:
            raise ValueError("SparseConv2d supports groups=1 only")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SparseConv2d supports numeric zero padding only")
        super().__init__(layout, conv.bias)
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        if layout.shape != (conv.out_channels, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]):
            raise ValueError(f"layout shape {layout.shape} does not match {conv}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to(torch.float32)
        N, _, H, W = x.shape
        patches = F.unfold(x, self.kernel_size, dilation=self.dilation, padding=self.padding,
                           stride=self.stride).numpy()             # (N, C*kh*kw, L)
        oh = (H + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        ow = (W + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        out = np.empty((N, self.out_channels, patches.shape[2]), dtype=np.float32)
        for n in range(N):
            matmat(self._prepared, np.ascontiguousarray(patches[n]), out=out[n])
        y = torch.from_numpy(out).reshape(N, self.out_channels, oh, ow)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return y


def sparsify(model: nn.Module, quantized: Mapping[str, object], layout: str = "ws") -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d layers named in ``quantized`` run from ``layout``.

    ``quantized`` maps a parameter name (``"0.weight"``) or a module name (``"0"``) to a
    ``QuantizedMatrix`` (or to a layout object directly). Other layers are left as they are.
    """
    out = copy.deepcopy(model).eval()
    lookup = {}
    for key, q in quantized.items():
        lookup[key[:-len(".weight")] if key.endswith(".weight") else key] = q
    for name, module in list(out.named_modules()):
        if name not in lookup or not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        q = lookup.pop(name)
        lay = q.to_layout(layout) if hasattr(q, "to_layout") else q
        new = (SparseLinear(lay, module.bias) if isinstance(module, nn.Linear)
               else SparseConv2d(lay, module))
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        setattr(parent, child, new)
    return out
