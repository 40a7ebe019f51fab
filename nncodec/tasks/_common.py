"""Pieces shared by the built-in tasks: lazy torch import, deterministic execution, the weight
cache, and a plain training / evaluation loop over numpy arrays."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np


def torch_module(task: str = "nncodec.tasks"):
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(f"{task} needs PyTorch (`pip install torch`); it is not installed "
                          "in this environment") from exc
    return torch


@contextlib.contextmanager
def deterministic_torch(threads: int = 1):
    """Temporarily force deterministic torch execution on ``threads`` threads."""
    torch = torch_module()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield torch
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def cache_dir() -> Path:
    """``$NNCODEC_CACHE`` if set, else ``~/.cache/nncodec``."""
    env = os.environ.get("NNCODEC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "nncodec"


def cached_state_dict(path: Path, make: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Load the state_dict cached at ``path``, or build it with ``make()`` and cache it
    atomically (temporary file in the same folder, then ``os.replace``). A cache file that
    cannot be read is rebuilt."""
    torch = torch_module()
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            pass  # corrupt or incompatible cache: rebuild and overwrite
    sd = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(sd, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return sd


def load_into(model, state_dict: Mapping[str, Any]):
    """Load numpy arrays or tensors into ``model`` (cast and reshaped to its own parameters)."""
    torch = torch_module()
    ref = model.state_dict()
    sd = {}
    for k, v in state_dict.items():
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if k in ref:
            t = t.to(ref[k].dtype).reshape(ref[k].shape)
        sd[k] = t
    model.load_state_dict(sd)
    return model


def fit(model, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int,
        masks: Optional[Mapping[str, np.ndarray]] = None, verbose: bool = False) -> Dict[str, Any]:
    """Adam with cosine annealing over shuffled mini-batches; entries where ``masks`` is False are
    held at zero after every step. Returns the trained state_dict (CPU tensors)."""
    torch = torch_module()
    torch.manual_seed(seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    loss_fn = torch.nn.CrossEntropyLoss()
    params = dict(model.named_parameters())
    tmasks = {k: torch.from_numpy(np.asarray(m, dtype=bool)) for k, m in (masks or {}).items()}
    with torch.no_grad():
        for k, m in tmasks.items():
            params[k].mul_(m)
    n = Xt.shape[0]
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            if tmasks:
                with torch.no_grad():
                    for k, m in tmasks.items():
                        params[k].mul_(m)
            total += float(loss.detach()) * idx.numel()
        sched.step()
        if verbose:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {total / n:.4f}")
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def accuracy(model, X: np.ndarray, y: np.ndarray, batch_size: int = 2048) -> float:
    """Top-1 accuracy of ``model`` on ``(X, y)``."""
    torch = torch_module()
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, X.shape[0], batch_size):
            pred = model(torch.from_numpy(X[i:i + batch_size])).argmax(dim=1).numpy()
            correct += int(np.sum(pred == y[i:i + batch_size]))
    return correct / max(1, X.shape[0])
