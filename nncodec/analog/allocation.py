"""Unequal protection across tensors (seed 000: "power / bandwidth allocation", layers chosen by
noise sensitivity, second-order information) and the tuning of MMSE_pb's compensators.

Model: with a diagonal Fisher estimate F_i, the loss grows by about 1/2 sum_i F_i e_i^2 for
weight errors e_i. A tensor t with n_t weights, mean Fisher s_t per weight (its *sensitivity*)
and weight variance var_t, sent with the standard mapping at relative power p_t and r_t copies,
gets the ML noise power var_t N0 / (p_t r_t) per weight, so the expected loss increase is

    1/2 N0 sum_t a_t n_t / (p_t r_t),      a_t = s_t var_t.

- ``mode="power"``: minimize it under the average-energy constraint sum_t n_t r_t p_t =
  sum_t n_t r_t: p_t proportional to sqrt(a_t / r_t) (Lagrange), clipped to a ``max_ratio``
  range around their geometric mean and renormalized (``transmit_weights`` renormalizes over the
  actual stream again).
- ``mode="repeat"``: integer copies r_t in [1, r_max] with sum_t n_t r_t <= r_avg sum_t n_t,
  filled greedily by the largest loss reduction per channel dimension,
  a_t (1/r_t - 1/(r_t + 1)).
"""
from __future__ import annotations

import heapq
import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from .schemes import AnalogConfigError, AnalogScheme, TensorAllocation, get_scheme

__all__ = ["allocate_by_sensitivity", "diag_fisher", "tune_mmse_pb", "DEFAULT_PB_GRID"]


def _float_tensors(state_dict: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
        a = np.asarray(v)
        if a.dtype.kind == "f":
            out[k] = a.astype(np.float64).reshape(-1)
    return out


def allocate_by_sensitivity(sensitivities: Mapping[str, float], state_dict: Mapping[str, Any], *,
                            mode: str = "power", max_ratio: float = 10.0, r_avg: float = 2.0,
                            r_max: int = 8) -> Dict[str, TensorAllocation]:
    """Per-tensor power or repetition from per-tensor sensitivities (mean diagonal Fisher per
    weight, e.g. from :func:`diag_fisher`). Tensors of ``state_dict`` without a sensitivity get
    the smallest one given. Returns tensor name -> :class:`TensorAllocation`, to pass as
    ``get_scheme(name, allocation=...)`` (``mode="repeat"`` needs a repetition scheme)."""
    if mode not in ("power", "repeat"):
        raise AnalogConfigError(f"mode must be 'power' or 'repeat', got {mode!r}")
    tensors = {k: v for k, v in _float_tensors(state_dict).items() if v.size}
    unknown = set(sensitivities) - set(tensors)
    if unknown:
        raise AnalogConfigError(f"sensitivities name tensors that are not float tensors of the "
                                f"model: {sorted(unknown)[:5]}")
    if not tensors:
        return {}
    sens = {}
    for k, s in sensitivities.items():
        s = float(s)
        if not (math.isfinite(s) and s >= 0):
            raise AnalogConfigError(f"sensitivity of {k!r} must be a finite number >= 0, got {s!r}")
        sens[k] = s
    floor = min(sens.values()) if sens else 1.0
    names = list(tensors)
    n = np.array([tensors[k].size for k in names], dtype=np.float64)
    a = np.array([sens.get(k, floor) * float(np.var(tensors[k])) for k in names])
    if mode == "power":
        if not (math.isfinite(max_ratio) and max_ratio >= 1):
            raise AnalogConfigError(f"max_ratio must be >= 1, got {max_ratio!r}")
        pos = a > 0
        if not pos.any():
            return {k: TensorAllocation(power=1.0) for k in names}
        p = np.sqrt(np.where(pos, a, a[pos].min()))
        g = math.exp(float(np.sum(n * np.log(p)) / n.sum()))
        p = np.clip(p / g, 1 / math.sqrt(max_ratio), math.sqrt(max_ratio))
        p = p * n.sum() / float(np.sum(n * p))
        return {k: TensorAllocation(power=float(pk)) for k, pk in zip(names, p)}
    if not (isinstance(r_max, int) and r_max >= 1):
        raise AnalogConfigError(f"r_max must be an integer >= 1, got {r_max!r}")
    if not (math.isfinite(r_avg) and r_avg >= 1):
        raise AnalogConfigError(f"r_avg must be >= 1, got {r_avg!r}")
    r = np.ones(len(names), dtype=np.int64)
    budget = r_avg * n.sum() - n.sum()
    heap = [(-a[i] / 2.0, i) for i in range(len(names)) if a[i] > 0 and r_max > 1]
    heapq.heapify(heap)
    while heap:
        gain, i = heapq.heappop(heap)
        if n[i] > budget + 1e-9:
            continue                                  # too big for what is left; try smaller ones
        budget -= n[i]
        r[i] += 1
        if r[i] < r_max:
            heapq.heappush(heap, (-a[i] / (r[i] * (r[i] + 1)), i))
    return {k: TensorAllocation(repeat=int(rk)) for k, rk in zip(names, r)}


def diag_fisher(model, inputs, targets, *, batch_size: int = 1, max_samples: int = 256,
                loss: Optional[Callable] = None) -> Dict[str, float]:
    """Mean diagonal (empirical) Fisher per weight of each parameter of a torch ``model``:
    the average over mini-batches of the squared gradient of the loss (cross-entropy unless
    ``loss(output, target)`` is given), with ``batch_size`` 1 by default (per-sample gradients).
    Keys are the parameter names (those of the state_dict). Use held-out or training data."""
    import torch
    if batch_size < 1 or max_samples < 1:
        raise AnalogConfigError("batch_size and max_samples must be >= 1")
    X = torch.as_tensor(np.asarray(inputs)[:max_samples])
    y = torch.as_tensor(np.asarray(targets)[:max_samples])
    loss_fn = loss or torch.nn.functional.cross_entropy
    params = dict(model.named_parameters())
    acc = {k: torch.zeros_like(p) for k, p in params.items()}
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for s in range(0, len(X), batch_size):
            model.zero_grad(set_to_none=True)
            out = model(X[s:s + batch_size].float())
            loss_fn(out, y[s:s + batch_size]).backward()
            for k, p in params.items():
                if p.grad is not None:
                    acc[k] += p.grad.detach() ** 2
            batches += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {k: float(v.mean()) / max(batches, 1) for k, v in acc.items()}


DEFAULT_PB_GRID: Tuple[Tuple[float, float], ...] = tuple(
    (lam, beta) for lam in (0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9) for beta in (0.0,))


def tune_mmse_pb(state_dict: Mapping[str, Any], evaluate_val: Callable[[Dict[str, np.ndarray]], float],
                 snr_db: Optional[float] = None, *, scheme="mmse_pb", channel: str = "awgn",
                 grid: Optional[Iterable[Tuple[float, float]]] = None, draws: int = 3, seed: int = 0,
                 return_table: bool = False, **transmit_kwargs):
    """Pick MMSE_pb's (lambda, beta) (normalized units, see :mod:`nncodec.analog.receivers`) that
    maximize the mean of ``evaluate_val(received_state_dict)`` over ``draws`` channel draws.

    ``evaluate_val`` must measure on held-out VALIDATION data, never on the test set. The channel
    draws use seeds 1_000_003 + 1000 seed + d, apart from the small seeds of a sweep's test draws.
    Grid points that break seed 000's bound on lambda for some weight are skipped. Ties go to the
    earlier grid point (the default grid starts at the neutral lambda = beta = 0, i.e. MMSE).
    Returns {"lambda": .., "beta": ..} (and the table of (lambda, beta, mean metric) rows if
    ``return_table``). Extra keyword arguments go to :func:`transmit_weights` (e.g. noise_std,
    fading, design_snr_db)."""
    from .transmit import transmit_weights
    sch = scheme if isinstance(scheme, AnalogScheme) else get_scheme(scheme)
    if sch.receiver != "mmse_pb":
        raise AnalogConfigError(f"tune_mmse_pb needs an mmse_pb scheme, got receiver {sch.receiver!r}")
    if not (isinstance(draws, int) and draws >= 1):
        raise AnalogConfigError(f"draws must be an integer >= 1, got {draws!r}")
    points = [(float(l), float(b)) for l, b in (grid if grid is not None else DEFAULT_PB_GRID)]
    if not points:
        raise AnalogConfigError("the grid is empty")
    table = []
    best = None
    for lam, beta in points:
        vals = []
        try:
            for d in range(draws):
                rec, _ = transmit_weights(state_dict, sch, snr_db, channel=channel,
                                          receiver_params={"lambda": lam, "beta": beta},
                                          seed=1_000_003 + 1000 * int(seed) + d, **transmit_kwargs)
                vals.append(float(evaluate_val(rec)))
        except AnalogConfigError as e:
            if "bound" not in str(e):
                raise
            table.append((lam, beta, None))
            continue
        m = float(np.mean(vals))
        table.append((lam, beta, m))
        if best is None or m > best[2]:
            best = (lam, beta, m)
    if best is None:
        raise AnalogConfigError("no grid point satisfies seed 000's bound on lambda here")
    params = {"lambda": best[0], "beta": best[1]}
    return (params, table) if return_table else params
