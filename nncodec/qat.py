"""Quantization-aware fine-tuning: train with the quantized weights in the forward pass.

As in BinaryConnect (and the retraining step of trained quantization), each weight tensor keeps
a float copy W; every training step sees the quantized weights Q(W) = rint(W / s) * s (times a
pruning mask, if given), and the update the step computes from them is added to W (a
straight-through estimate of the gradient of the rounding). At the end the model holds Q(W):
coding it with the same steps (``nncodec.encode(sd, step=s)`` or ``qp``) adds no further error,
and the network has had the chance to adapt to that error.

    from nncodec.qat import quantized_finetune
    quantized_finetune(model, train_step, steps=500, step_sizes=0.02)        # one step for all
    nncodec.encode(model.state_dict(), step=0.02)
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union


def quantized_finetune(model, train_step: Callable[[Any], Any], steps: int, *,
                       step_sizes: Union[float, Mapping[str, float]],
                       masks: Optional[Mapping[str, Any]] = None,
                       params: Optional[Sequence[str]] = None) -> dict:
    """Fine-tune a torch ``model`` in place for ``steps`` calls of ``train_step(model)`` (one
    optimisation step each, as for ``nncodec.prune.dynamic_network_surgery``), its weight
    tensors (parameters with two or more dimensions, or the names in ``params``) quantized with
    ``step_sizes`` (one float, or ``{name: step}``) in every forward pass. ``masks``
    (``{name: bool array}``) keeps pruned weights at zero. Returns ``{"losses": [...],
    "names": [...]}``; the model ends with the quantized (and masked) weights."""
    import numpy as np
    import torch

    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    named = dict(model.named_parameters())
    names = list(params) if params is not None else [n for n, p in named.items() if p.dim() >= 2]
    for n in names:
        if n not in named:
            raise KeyError(f"no parameter {n!r} in the model")
    if isinstance(step_sizes, Mapping):
        sizes = {n: float(step_sizes[n]) for n in names if n in step_sizes}
    else:
        sizes = {n: float(step_sizes) for n in names}
    for n, s in sizes.items():
        if not (s > 0 and np.isfinite(s)):
            raise ValueError(f"step of {n!r} must be positive and finite, got {s!r}")
    names = [n for n in names if n in sizes]
    tmasks = {n: torch.as_tensor(np.asarray(masks[n], dtype=bool)) for n in names if masks and n in masks}
    with torch.no_grad():
        dense = {n: named[n].detach().clone() for n in names}

    def quantized(n):
        q = torch.round(dense[n] / sizes[n]) * sizes[n]
        return q * tmasks[n] if n in tmasks else q

    losses = []
    for _ in range(steps):
        with torch.no_grad():
            before = {}
            for n in names:
                q = quantized(n)
                named[n].copy_(q)
                before[n] = q
        loss = train_step(model)
        losses.append(float(loss) if loss is not None else None)
        with torch.no_grad():
            for n in names:
                dense[n] += named[n].detach() - before[n]  # the step's update, onto the float copy
    with torch.no_grad():
        for n in names:
            named[n].copy_(quantized(n))
    return {"losses": losses, "names": names}
