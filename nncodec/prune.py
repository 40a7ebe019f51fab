"""Pruning: magnitude masks (per tensor or global, unstructured or whole rows), iterative
pruning with retraining, and dynamic network surgery.

The mask functions work on numpy arrays and need no torch; the encoder uses them for
``Settings(prune=...)``. ``iterative_prune`` and ``dynamic_network_surgery`` retrain
through callbacks the caller passes; ``digits_retrain`` and ``digits_train_step`` are
ready-made callbacks for the built-in digits task (``nncodec.tasks.digits``).

Which tensors are pruned: those with two or more dimensions (weights); biases and
norm scales are few and matter much, so they are left alone everywhere here.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np

SCOPES = ("tensor", "global")

__all__ = ["SCOPES", "is_prunable", "magnitude_mask", "row_mask", "global_threshold", "prune_masks",
           "prune_state_dict", "sparsity", "iterative_prune", "dynamic_network_surgery",
           "digits_retrain", "digits_train_step", "train_step"]


def is_prunable(shape) -> bool:
    return len(tuple(shape)) >= 2


def _check_amount(amount: Optional[float], threshold: Optional[float]) -> None:
    if (amount is None) == (threshold is None):
        raise ValueError("give exactly one of amount and threshold")
    if amount is not None and not (0.0 <= amount <= 1.0):
        raise ValueError(f"pruning amount must be in [0, 1], got {amount!r}")
    if threshold is not None and not (threshold >= 0 and math.isfinite(threshold)):
        raise ValueError(f"pruning threshold must be a finite number >= 0, got {threshold!r}")


def _row_scores(w: np.ndarray) -> np.ndarray:
    """RMS of each row (output channel) of the matrix view shape[0] x rest."""
    m = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1)
    return np.sqrt(np.mean(m * m, axis=1)) if m.shape[1] else np.zeros(m.shape[0])


def magnitude_mask(w, amount: Optional[float] = None, threshold: Optional[float] = None) -> np.ndarray:
    """Boolean keep-mask of ``w``: drops the ``round(amount * size)`` smallest |w| (exactly that
    many; ties broken by position), or every |w| <= ``threshold``."""
    _check_amount(amount, threshold)
    a = np.abs(np.asarray(w, dtype=np.float64))
    if threshold is not None:
        return a > threshold
    n = int(round(amount * a.size))
    keep = np.ones(a.size, dtype=bool)
    if n > 0:
        keep[np.argsort(a.reshape(-1), kind="stable")[:n]] = False
    return keep.reshape(a.shape)


def row_mask(w, amount: Optional[float] = None, threshold: Optional[float] = None) -> np.ndarray:
    """Keep-mask zeroing whole rows (dim 0: output neurons / channels) of smallest RMS."""
    _check_amount(amount, threshold)
    w = np.asarray(w)
    scores = _row_scores(w)
    if threshold is not None:
        rows = scores > threshold
    else:
        rows = magnitude_mask(scores, amount=amount)
    return np.broadcast_to(rows.reshape((-1,) + (1,) * (w.ndim - 1)), w.shape).copy()


def global_threshold(tensors: Iterable, amount: float, structured: bool = False) -> float:
    """The magnitude (or row RMS) below which ``amount`` of all values (rows) of ``tensors`` lie:
    pruning every |w| <= it (row RMS <= it) reaches the amount over the whole model."""
    _check_amount(amount, None)
    parts = [(_row_scores(np.asarray(t)) if structured else np.abs(np.asarray(t, dtype=np.float64)).reshape(-1))
             for t in tensors]
    if not parts:
        return 0.0
    allv = np.concatenate(parts)
    n = int(round(amount * allv.size))
    if n <= 0:
        return -1.0  # prunes nothing (every |w| > -1)
    return float(np.partition(allv, n - 1)[n - 1])


def prune_masks(state_dict: Mapping[str, Any], amount: Optional[float] = None, *,
                threshold: Optional[float] = None, scope: str = "tensor",
                structured: bool = False) -> Dict[str, np.ndarray]:
    """Keep-masks (numpy bool) for the prunable tensors of a state_dict (numpy or torch values)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    arrays = {k: _numpy(v) for k, v in state_dict.items() if is_prunable(np.shape(_numpy(v)))
              and np.asarray(_numpy(v)).dtype.kind == "f"}
    if scope == "global" and amount is not None:
        threshold, amount = global_threshold(arrays.values(), amount, structured), None
    fn = row_mask if structured else magnitude_mask
    out = {}
    for k, w in arrays.items():
        if threshold is not None and threshold < 0:
            out[k] = np.ones(w.shape, dtype=bool)
        else:
            out[k] = fn(w, amount=amount, threshold=threshold)
    return out


def _numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def _apply(state_dict: Mapping[str, Any], masks: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    out = {}
    for k, v in state_dict.items():
        if k not in masks:
            out[k] = v
        elif hasattr(v, "detach"):
            import torch

            out[k] = v.detach() * torch.from_numpy(masks[k]).to(v.dtype)
        else:
            out[k] = np.asarray(v) * masks[k].astype(np.asarray(v).dtype)
    return out


def prune_state_dict(state_dict: Mapping[str, Any], amount: Optional[float] = None, **kwargs):
    """(pruned state_dict, masks): ``prune_masks`` applied; values keep their type (numpy / torch)."""
    masks = prune_masks(state_dict, amount, **kwargs)
    return _apply(state_dict, masks), masks


def sparsity(state_dict: Mapping[str, Any], prunable_only: bool = True) -> float:
    """Fraction of zeros (over the prunable tensors, or all)."""
    zeros = total = 0
    for v in state_dict.values():
        a = _numpy(v)
        if prunable_only and not is_prunable(a.shape):
            continue
        zeros += int(np.count_nonzero(a == 0))
        total += a.size
    return zeros / total if total else 0.0


TrainFn = Callable[[Dict[str, Any], Dict[str, np.ndarray]], Mapping[str, Any]]


def iterative_prune(state_dict: Mapping[str, Any], train_fn: Optional[TrainFn],
                    amounts: Sequence[float] = (0.25, 0.5, 0.75), *, scope: str = "tensor",
                    structured: bool = False, callback: Optional[Callable[[int, float, dict], None]] = None):
    """Iterative pruning and retraining (Han et al. 2015): for each amount in turn, prune the
    current weights to that amount by magnitude, then call ``train_fn(state_dict, masks)`` to
    retrain; it returns the new state_dict and should keep masked weights at zero (they are
    zeroed again afterwards anyway). Amounts must not decrease; an already pruned weight stays
    pruned. Returns (state_dict, masks, history) with history a list of
    ``{"amount", "sparsity"}`` after each round; ``callback(round, amount, state_dict)`` is
    called after each round (e.g. to evaluate)."""
    prev = 0.0
    sd: Dict[str, Any] = dict(state_dict)
    masks: Dict[str, np.ndarray] = {}
    history = []
    for i, amount in enumerate(amounts):
        if amount < prev:
            raise ValueError(f"amounts must not decrease ({prev} then {amount})")
        prev = amount
        new = prune_masks(sd, amount, scope=scope, structured=structured)
        masks = {k: new[k] & masks[k] if k in masks else new[k] for k in new}
        sd = _apply(sd, masks)
        if train_fn is not None:
            sd = _apply(dict(train_fn(sd, masks)), masks)
        history.append({"amount": float(amount), "sparsity": sparsity(sd)})
        if callback is not None:
            callback(i, amount, sd)
    return sd, masks, history


def dynamic_network_surgery(model, train_step: Callable[[Any], Any], steps: int, *, amount: float = 0.5,
                            margin: float = 0.1, update_every: int = 1, params: Optional[Sequence[str]] = None):
    """Dynamic network surgery (Guo et al. 2016) on a torch ``model``, in place.

    Each weight W_k (parameters with two or more dimensions, or the names in ``params``) gets a
    mask T_k. The pruning threshold a_k is the ``amount`` quantile of |W_k| at the start and
    b_k = a_k + t with t = ``margin`` * a_k; every ``update_every`` steps

        T_k = 0 where |W_k| <= a_k,  1 where |W_k| >= b_k,  unchanged in between.

    ``train_step(model)`` does one optimisation step (zero_grad, forward, backward,
    optimizer.step) and may return the loss. It sees the masked weights W_k * T_k, but the
    update it makes is applied to the dense W_k, pruned entries included, so a pruned weight
    whose magnitude grows back past b_k is spliced back in. At the end the model holds
    W_k * T_k. Returns ``{"masks": {name: bool array}, "thresholds": {name: (a_k, b_k)},
    "revived": n, "losses": [...]}`` where ``revived`` counts mask entries that went from
    0 back to 1 during training."""
    import torch

    named = dict(model.named_parameters())
    names = list(params) if params is not None else [n for n, p in named.items() if p.dim() >= 2]
    dense, masks, thr = {}, {}, {}
    with torch.no_grad():
        for n in names:
            p = named[n]
            dense[n] = p.detach().clone()
            a = float(torch.quantile(p.detach().abs().reshape(-1).double(), amount)) if p.numel() else 0.0
            thr[n] = (a, a + margin * a)
            masks[n] = (p.detach().abs() > a)
    revived = 0
    losses = []

    def update_masks():
        nonlocal revived
        for n in names:
            a, b = thr[n]
            w = dense[n].abs()
            new = masks[n].clone()
            new[w <= a] = False
            new[w >= b] = True
            revived += int((new & ~masks[n]).sum())
            masks[n] = new

    for step in range(steps):
        if step % max(1, update_every) == 0 and step:
            update_masks()
        with torch.no_grad():
            for n in names:
                named[n].copy_(dense[n] * masks[n])
        loss = train_step(model)
        losses.append(float(loss) if loss is not None else None)
        with torch.no_grad():
            for n in names:
                dense[n] += named[n].detach() - dense[n] * masks[n]  # the step's update, onto W
    update_masks()
    with torch.no_grad():
        for n in names:
            named[n].copy_(dense[n] * masks[n])
    return {"masks": {n: masks[n].numpy().copy() for n in names}, "thresholds": thr, "revived": revived,
            "losses": losses}


# ---------------------------------------------------------------------------------------------
# Ready-made callbacks for nncodec.tasks.digits


def digits_retrain(epochs: int = 3, lr: float = 2e-3, seed: int = 0) -> TrainFn:
    """A ``train_fn`` for ``iterative_prune``: fine-tunes the digits CNN from the given state_dict
    for ``epochs`` epochs with Adam, re-applying the masks after every step; deterministic."""

    def train_fn(state_dict, masks):
        from .tasks import digits

        with digits._deterministic_torch() as torch:
            model = _digits_model(state_dict)
            step = digits_train_step(model, lr=lr, seed=seed)
            tmasks = {k: torch.from_numpy(np.asarray(m)) for k, m in masks.items()}
            params = dict(model.named_parameters())
            for _ in range(epochs * step.steps_per_epoch):
                step(model)
                with torch.no_grad():
                    for k, m in tmasks.items():
                        params[k].mul_(m)
            return {k: v.detach().clone() for k, v in model.state_dict().items()}

    return train_fn


def _digits_model(state_dict):
    import torch

    from .tasks import digits

    model = digits.build_model()
    model.load_state_dict({k: torch.as_tensor(_numpy(v)) for k, v in state_dict.items()})
    return model


def digits_train_step(model, lr: float = 2e-3, batch_size: int = 128, seed: int = 0):
    """A ``train_step(model)`` for ``dynamic_network_surgery`` on the digits CNN (see
    :func:`train_step`) over the training split of ``nncodec.tasks.digits``."""
    from .tasks import digits

    X_train, y_train, _, _ = digits.load_data()
    return train_step(model, X_train, y_train, lr=lr, batch_size=batch_size, seed=seed)


def train_step(model, X, y, lr: float = 2e-3, batch_size: int = 128, seed: int = 0):
    """A ``train_step(model)`` for ``dynamic_network_surgery``: Adam on shuffled mini-batches of
    ``(X, y)`` (numpy arrays); returns the batch loss. The returned callable has
    ``steps_per_epoch``."""
    import torch

    X, y = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(np.ascontiguousarray(y))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    state = {"perm": None, "pos": 0}
    n = X.shape[0]

    def step(m):
        if state["perm"] is None or state["pos"] >= n:
            state["perm"], state["pos"] = torch.randperm(n, generator=gen), 0
        idx = state["perm"][state["pos"]:state["pos"] + batch_size]
        state["pos"] += batch_size
        m.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(m(X[idx]), y[idx])
        loss.backward()
        opt.step()
        m.eval()
        return float(loss.detach())

    step.steps_per_epoch = -(-n // batch_size)
    return step
