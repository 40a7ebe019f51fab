"""Built-in demo task: a small CNN on scikit-learn's 8x8 ``load_digits``.

The task is fully deterministic (fixed split, fixed seed, deterministic
torch algorithms, single-threaded training) and trains in a few seconds on
a CPU.  It is used by demos and benchmarks as a small real network whose
weights can be quantized and compressed.

``torch`` is imported lazily, so ``import nncodec.tasks`` works without it;
functions that need it raise a clear :class:`ImportError` when it is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from . import _common
from ._common import cache_dir

__all__ = [
    "SPLIT_SEED",
    "TEST_SIZE",
    "DEFAULT_EPOCHS",
    "cache_dir",
    "cache_path",
    "load_data",
    "build_model",
    "train",
    "get_state_dict",
    "evaluate",
    "num_parameters",
]

#: random_state of the train/test split
SPLIT_SEED = 0
#: fraction of the 1797 images held out for testing
TEST_SIZE = 0.25
#: default number of training epochs
DEFAULT_EPOCHS = 40
_BATCH_SIZE = 128
_LR = 1e-2
# Bump when the architecture or training recipe changes, so that stale
# cached state_dicts are not reused.
_CACHE_VERSION = 1


def _torch():
    return _common.torch_module("nncodec.tasks.digits")


def load_data() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(X_train, y_train, X_test, y_test)`` as numpy arrays.

    ``X`` has shape ``(n, 1, 8, 8)``, dtype float32, scaled to [0, 1];
    ``y`` is int64.  The split is stratified and fixed (``SPLIT_SEED``).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "nncodec.tasks.digits needs scikit-learn (`pip install scikit-learn`)"
        ) from exc
    digits = load_digits()
    X = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return (
        np.ascontiguousarray(X_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(X_test),
        np.ascontiguousarray(y_test),
    )


def build_model():
    """The CNN: conv(1->16,3x3) -> pool -> conv(16->32,3x3) -> pool -> 128 -> 64 -> 10.

    13,706 parameters.
    """
    torch = _torch()
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),   # 16 x 8 x 8
        nn.ReLU(),
        nn.MaxPool2d(2),                              # 16 x 4 x 4
        nn.Conv2d(16, 32, kernel_size=3, padding=1),  # 32 x 4 x 4
        nn.ReLU(),
        nn.MaxPool2d(2),                              # 32 x 2 x 2
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def num_parameters(state_dict: Mapping[str, Any]) -> int:
    """Total number of values in a state_dict (tensors or arrays)."""
    return int(sum(int(np.prod(tuple(v.shape))) for v in state_dict.values()))


_deterministic_torch = _common.deterministic_torch


def train(seed: int = 0, epochs: int = DEFAULT_EPOCHS, verbose: bool = False) -> Dict[str, Any]:
    """Train the CNN from scratch and return its ``state_dict`` (CPU tensors)."""
    with _deterministic_torch() as torch:
        X_train, y_train, _, _ = load_data()
        torch.manual_seed(seed)
        model = build_model()
        return _common.fit(model, X_train, y_train, epochs=epochs, lr=_LR, batch_size=_BATCH_SIZE,
                           seed=seed, verbose=verbose)


def cache_path(seed: int = 0, epochs: int = DEFAULT_EPOCHS) -> Path:
    return cache_dir() / f"digits_cnn_v{_CACHE_VERSION}_seed{seed}_ep{epochs}.pt"


def get_state_dict(cache: bool = True, seed: int = 0, epochs: int = DEFAULT_EPOCHS) -> Dict[str, Any]:
    """Return the trained state_dict, training once and caching it on disk.

    The cache file (``torch.save``) lives in :func:`cache_dir` and is written
    atomically (temporary file in the same folder + ``os.replace``).  With
    ``cache=False`` the model is trained afresh and nothing is read or written.
    """
    if not cache:
        return train(seed=seed, epochs=epochs)
    return _common.cached_state_dict(cache_path(seed, epochs), lambda: train(seed=seed, epochs=epochs))


def evaluate(state_dict: Mapping[str, Any]) -> float:
    """Test-split accuracy (0..1) of a state_dict; values may be numpy arrays or tensors."""
    with _deterministic_torch() as torch:
        model = build_model()
        ref = model.state_dict()
        sd = {}
        for k, v in state_dict.items():
            t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
            if k in ref:
                t = t.to(ref[k].dtype).reshape(ref[k].shape)
            sd[k] = t
        model.load_state_dict(sd)
        model.eval()
        _, _, X_test, y_test = load_data()
        with torch.no_grad():
            pred = model(torch.from_numpy(X_test)).argmax(dim=1).numpy()
        return float(np.mean(pred == y_test))


if __name__ == "__main__":  # python -m nncodec.tasks.digits
    t0 = time.perf_counter()
    sd = train(verbose=True)
    dt = time.perf_counter() - t0
    print(f"params {num_parameters(sd)}  train {dt:.2f}s  test acc {evaluate(sd):.4f}")
