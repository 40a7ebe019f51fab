"""Per-tensor sensitivity and bit allocation.

A small change e of the weights raises the loss by about 1/2 * sum_j F_j e_j^2, where F is the
diagonal of the Fisher information (the expected squared gradient of the loss). Quantizing
tensor i with step s_i adds noise of about s_i^2 / 12 per weight, so the loss grows with
sum_i F_i D_i, with F_i the tensor's mean Fisher value and D_i its squared quantization error.
Spending the bits where F_i is large, at the same total size, lowers that sum:

- ``fisher_diagonal(model_or_task, data)``: F_i of every parameter, from per-example gradients
  of the loss over a few hundred training examples (never the validation or test split).
- ``allocate_steps(tensors, sensitivity, step)``: one uniform step per weight tensor that
  minimizes sum_i F_i D_i at no more bytes than the single step ``step`` gives. ``"rd"``
  (default) measures D_i and the coded size R_i of every tensor on a grid of steps (quarter
  octaves around ``step``, the entropy coder's real sizes) and picks, for a Lagrange multiplier
  found by bisection, each tensor's step minimizing F_i D_i + lambda R_i; ``"closed-form"`` is
  the high-rate solution s_i = step * sqrt(G / F_i), G the weighted geometric mean of the F_i
  (keeps the total rate of the high-rate model), without measuring anything.

``nncodec.encode(tensors, target_snr=30, sensitivity=F)`` uses these steps; each tensor's step
is in its container record as usual, so decoding needs nothing more.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

ALLOCATIONS = ("rd", "closed-form")
#: the steps the "rd" allocation tries: step * 2 ** (j / 4) for j in this range
GRID = tuple(range(-12, 13))


def _torch():
    from .tasks import _common

    return _common.torch_module("nncodec.sensitivity")


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def fisher_diagonal(model_or_task, data=None, *, state_dict: Optional[Mapping[str, Any]] = None,
                    loss_fn: Optional[Callable] = None, samples: int = 256, labels: str = "data",
                    seed: int = 0, per_element: bool = False) -> dict:
    """Diagonal Fisher estimate of every parameter: the mean over ``samples`` examples of the
    squared per-example gradient of the loss.

    ``model_or_task``: a torch ``nn.Module`` (its own weights, or ``state_dict`` loaded into it),
    a ``nncodec.tasks.Task`` or a built-in task name (``"digits"``, ``"fashion"``, ...; its
    trained weights unless ``state_dict`` is given, and its training split unless ``data`` is).
    ``data``: ``(X, y)`` arrays or tensors; the first ``samples`` examples of a fixed random
    permutation (``seed``) are used. ``labels="model"`` uses the model's own top-1 predictions
    instead of ``y`` (for data without labels; ``y`` may then be None). ``loss_fn(logits, y)``
    defaults to cross-entropy. Returns ``{parameter name: mean F over its elements}`` (floats),
    or per-element numpy arrays with ``per_element=True``. Buffers (BatchNorm statistics) get
    no entry."""
    torch = _torch()
    from .tasks import Task, get_task

    if isinstance(model_or_task, str):
        model_or_task = get_task(model_or_task)
    if isinstance(model_or_task, Task):
        task = model_or_task
        if task.build_model is None:
            raise ValueError(f"task {task.name!r} has no build_model: pass a torch model and data")
        model = task.build_model()
        if state_dict is None:
            state_dict = task.state_dict()
        if data is None:
            if task.train_data is None:
                raise ValueError(f"task {task.name!r} has no train_data: pass data=(X, y)")
            data = task.train_data()
    else:
        model = model_or_task
    if not isinstance(model, torch.nn.Module):
        raise TypeError("model_or_task must be a torch nn.Module, a Task or a task name")
    if data is None:
        raise ValueError("data=(X, y) is needed with a model")
    if labels not in ("data", "model"):
        raise ValueError(f"labels must be 'data' or 'model', not {labels!r}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    from .tasks import _common

    X, y = data
    X = torch.as_tensor(_numpy(X))
    n = int(X.shape[0])
    if n == 0:
        raise ValueError("data holds no examples")
    if labels == "data":
        if y is None:
            raise ValueError("labels='data' needs y; use labels='model' for unlabelled data")
        y = torch.as_tensor(_numpy(y))
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    with _common.deterministic_torch():
        if state_dict is not None:
            _common.load_into(model, state_dict)
        model.eval()  # BatchNorm with its running statistics: one example at a time is well defined
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        acc = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
        for i in idx.tolist():
            x = X[i:i + 1]
            model.zero_grad(set_to_none=True)
            out = model(x)
            if labels == "model":
                target = out.detach().argmax(dim=1)
            else:
                target = y[i:i + 1]
            loss = loss_fn(out, target)
            loss.backward()
            for k, p in params.items():
                if p.grad is not None:
                    acc[k] += p.grad.detach().double() ** 2
        model.zero_grad(set_to_none=True)
    m = float(idx.numel())
    if per_element:
        return {k: (v / m).numpy() for k, v in acc.items()}
    return {k: float(v.mean()) / m if v.numel() else 0.0 for k, v in acc.items()}


def _tensor_mean(v) -> float:
    a = np.asarray(_numpy(v), dtype=np.float64)
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("sensitivity values must be finite and >= 0")
    return float(a.mean())


def sensitivity_means(sensitivity: Mapping[str, Any]) -> dict:
    """``{name: mean value}`` of a sensitivity dict (floats or per-element arrays)."""
    return {k: _tensor_mean(v) for k, v in sensitivity.items()}


def _closed_form(weights: Mapping[str, np.ndarray], F: Mapping[str, float], step: float,
                 span: float) -> dict:
    live = {k: F[k] for k in weights if F.get(k, 0.0) > 0.0}
    if not live:
        return {k: step for k in weights}
    total = sum(weights[k].size for k in live)
    log_g = sum(weights[k].size * math.log(live[k]) for k in live) / total
    out = {}
    for k in weights:
        if k in live:
            s = step * math.exp(0.5 * (log_g - math.log(live[k])))
        else:
            s = step * span  # no sensitivity at all: the coarsest step allowed
        out[k] = float(min(max(s, step / span), step * span))
    return out


def _rd_tables(weights: Mapping[str, np.ndarray], step: float, backend: str, grid: Sequence[int]):
    """Per tensor: (bits, squared error) at each step of the grid."""
    from .entropy import get_backend
    from .quant_snr import quantize_checked

    coder = get_backend(backend)
    tables = {}
    for k, w in weights.items():
        flat = np.ascontiguousarray(w.reshape(-1), dtype=np.float32)
        w64 = flat.astype(np.float64)
        row = int(math.prod(w.shape[1:])) if w.ndim >= 2 else 0
        rates, dists = [], []
        for j in grid:
            s = step * 2.0 ** (j / 4.0)
            levels, top = quantize_checked(flat, s)
            if top > 2**31 - 1:
                rates.append(math.inf)
                dists.append(0.0)
                continue
            e = w64 - levels.astype(np.float64) * s
            rates.append(8.0 * len(coder.encode(levels, row_length=row)))
            dists.append(float(np.dot(e, e)))
        tables[k] = (np.array(rates), np.array(dists))
    return tables


def allocate_steps(weights: Mapping[str, np.ndarray], sensitivity: Mapping[str, Any], step: float, *,
                   allocation: str = "rd", backend: str = "cabac", grid: Sequence[int] = GRID,
                   return_report: bool = False):
    """Steps ``{name: step}`` for the weight tensors in ``weights`` (float arrays, as they will be
    quantized, pruning applied) that minimize sum_i F_i D_i at no more coded bits than ``step``
    for all (see the module doc). Tensors missing from ``sensitivity`` count with F = 0 (they get
    the coarsest step of the grid). With ``return_report`` returns (steps, report)."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, not {allocation!r}")
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be positive and finite, got {step!r}")
    F = sensitivity_means({k: v for k, v in sensitivity.items() if k in weights})
    span = 2.0 ** (max(abs(min(grid)), abs(max(grid))) / 4.0)
    if allocation == "closed-form":
        steps = _closed_form(weights, F, step, span)
        return (steps, {"allocation": allocation, "base_step": step}) if return_report else steps
    grid = list(grid)
    if 0 not in grid:
        raise ValueError("the grid must hold 0 (the base step)")
    j0 = grid.index(0)
    tables = _rd_tables(weights, step, backend, grid)
    budget = sum(r[j0] for r, _ in tables.values())

    def choose(lam: float):
        pick, bits = {}, 0.0
        for k, (r, d) in tables.items():
            cost = F.get(k, 0.0) * d + lam * r
            j = int(np.argmin(cost))
            pick[k] = j
            bits += r[j]
        return pick, bits

    scale = max((F.get(k, 0.0) * float(d.max()) for k, (_, d) in tables.items()), default=0.0)
    if scale <= 0.0:  # no sensitivity anywhere: the common step
        steps = {k: step for k in weights}
        return (steps, {"allocation": allocation, "base_step": step, "bits": budget,
                        "budget_bits": budget}) if return_report else steps
    lo, hi = scale * 1e-12, scale * 1e3  # lambda: hi always fits (coarsest steps), lo usually not
    pick, bits = choose(hi)
    for _ in range(80):
        mid = math.sqrt(lo * hi)
        p, b = choose(mid)
        if b <= budget:
            hi, pick, bits = mid, p, b
        else:
            lo = mid
        if hi / lo < 1.0 + 1e-9:
            break
    # the Lagrangian solution may leave a few bits unspent: spend them greedily on the tensor
    # that lowers sum F D the most per extra bit, one grid step at a time
    while True:
        best, gain = None, 0.0
        for k, (r, d) in tables.items():
            j = pick[k]
            if j == 0:
                continue
            extra = r[j - 1] - r[j]
            if bits + extra > budget:
                continue
            g = F.get(k, 0.0) * (d[j] - d[j - 1]) / max(extra, 1e-9)
            if g > gain:
                best, gain = k, g
        if best is None:
            break
        bits += tables[best][0][pick[best] - 1] - tables[best][0][pick[best]]
        pick[best] -= 1
    steps = {k: float(step * 2.0 ** (grid[pick[k]] / 4.0)) for k in weights}
    if not return_report:
        return steps
    weighted = sum(F.get(k, 0.0) * tables[k][1][pick[k]] for k in tables)
    common = sum(F.get(k, 0.0) * tables[k][1][j0] for k in tables)
    return steps, {"allocation": allocation, "base_step": step, "bits": float(bits), "budget_bits": float(budget),
                   "weighted_distortion": float(weighted), "weighted_distortion_common_step": float(common)}
