"""Built-in Fashion-MNIST tasks: a small CNN and LeNet-300-100.

The data come from the Debian package ``dataset-fashion-mnist`` (files under
``/usr/share/datasets/fashion-mnist/``, or the folder named by ``$NNCODEC_FASHION_MNIST``);
nothing is downloaded. Splits: ``train`` is the first 55,000 training images, ``val`` the last
5,000 (for tuning anything, e.g. receiver parameters, without touching the test set), ``test``
the 10,000 test images. Training is deterministic (fixed seed, deterministic torch algorithms,
one thread) and the trained weights are cached in :func:`cache_dir`.

Architectures (``arch``):

- ``"cnn"``: conv(1->8, 3x3) -> pool -> conv(8->16, 3x3) -> pool -> 784 -> 64 -> 10, 52,138
  parameters; about 90% test accuracy after 8 epochs. Small on purpose, so that sweeps that
  evaluate it thousands of times stay fast.
- ``"lenet300"``: the fully connected LeNet-300-100 (784 -> 300 -> 100 -> 10, 266,610
  parameters) used by the pruning literature.
"""

from __future__ import annotations

import functools
import gzip
import os
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _common
from ._common import cache_dir

__all__ = ["ARCHS", "DEFAULT_EPOCHS", "data_dir", "load_data", "build_model", "train",
           "get_state_dict", "evaluate", "retrain_fn", "cache_dir"]

ARCHS = ("cnn", "lenet300")
DEFAULT_EPOCHS = {"cnn": 8, "lenet300": 10}
VAL_SIZE = 5000
_BATCH_SIZE = 128
_LR = 2e-3
_CACHE_VERSION = 1
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def data_dir() -> Path:
    return Path(os.environ.get("NNCODEC_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes with {ndim} dimensions")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values, header says {dims}")
    return data.reshape(dims)


@functools.lru_cache(maxsize=2)
def _load_raw(part: str) -> Tuple[np.ndarray, np.ndarray]:
    folder = data_dir()
    img_name, lab_name = _FILES[part]
    if not (folder / img_name).is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder}: install the Debian package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set NNCODEC_FASHION_MNIST to a folder "
            f"holding {img_name} and the other IDX files")
    X = (_read_idx(folder / img_name, 3).astype(np.float32) / 255.0)[:, None, :, :]
    y = _read_idx(folder / lab_name, 1).astype(np.int64)
    return X, y


def load_data(split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` for ``split`` in ``train`` / ``val`` / ``test``: X float32 ``(n, 1, 28, 28)`` in
    [0, 1], y int64 (cached: do not modify them in place)."""
    if split == "test":
        return _load_raw("test")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    X, y = _load_raw("train")
    cut = X.shape[0] - VAL_SIZE
    return (X[:cut], y[:cut]) if split == "train" else (X[cut:], y[cut:])


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")


def build_model(arch: str = "cnn"):
    _check_arch(arch)
    nn = _common.torch_module("nncodec.tasks.fashion").nn
    if arch == "lenet300":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                             nn.ReLU(), nn.Linear(100, 10))
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 8 x 14 x 14
        nn.Conv2d(8, 16, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 7 x 7
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def train(arch: str = "cnn", seed: int = 0, epochs: Optional[int] = None, verbose: bool = False) -> Dict[str, Any]:
    """Train ``arch`` from scratch on the train split; returns its state_dict (CPU tensors)."""
    _check_arch(arch)
    epochs = DEFAULT_EPOCHS[arch] if epochs is None else epochs
    X, y = load_data("train")
    with _common.deterministic_torch() as torch:
        torch.manual_seed(seed)
        model = build_model(arch)
        return _common.fit(model, X, y, epochs=epochs, lr=_LR, batch_size=_BATCH_SIZE, seed=seed,
                           verbose=verbose)


def get_state_dict(arch: str = "cnn", cache: bool = True, seed: int = 0,
                   epochs: Optional[int] = None) -> Dict[str, Any]:
    """The trained state_dict of ``arch``, trained once and cached (see :func:`cache_dir`)."""
    _check_arch(arch)
    epochs = DEFAULT_EPOCHS[arch] if epochs is None else epochs
    if not cache:
        return train(arch, seed=seed, epochs=epochs)
    path = cache_dir() / f"fashion_{arch}_v{_CACHE_VERSION}_seed{seed}_ep{epochs}.pt"
    return _common.cached_state_dict(path, lambda: train(arch, seed=seed, epochs=epochs))


def evaluate(state_dict: Mapping[str, Any], arch: str = "cnn", split: str = "test",
             limit: Optional[int] = None) -> float:
    """Top-1 accuracy (0..1) of a state_dict (numpy arrays or tensors) on ``split``; ``limit``
    keeps the first ``limit`` images."""
    X, y = load_data(split)
    if limit is not None:
        X, y = X[:limit], y[:limit]
    with _common.deterministic_torch():
        model = _common.load_into(build_model(arch), state_dict)
        return _common.accuracy(model, X, y)


def retrain_fn(arch: str = "cnn", epochs: int = 2, lr: float = 1e-3, seed: int = 0):
    """A ``train_fn(state_dict, masks)`` for :func:`nncodec.prune.iterative_prune`: fine-tunes
    ``arch`` on the train split from the given weights, holding masked weights at zero."""
    _check_arch(arch)

    def train_fn(state_dict, masks):
        X, y = load_data("train")
        with _common.deterministic_torch():
            model = _common.load_into(build_model(arch), state_dict)
            return _common.fit(model, X, y, epochs=epochs, lr=lr, batch_size=_BATCH_SIZE, seed=seed,
                               masks=masks)

    return train_fn


if __name__ == "__main__":  # python -m nncodec.tasks.fashion [arch]
    import sys

    arch = sys.argv[1] if len(sys.argv) > 1 else "cnn"
    t0 = time.perf_counter()
    sd = train(arch, verbose=True)
    dt = time.perf_counter() - t0
    n = sum(int(np.prod(tuple(v.shape))) for v in sd.values())
    print(f"{arch}: params {n}  train {dt:.1f}s  val acc {evaluate(sd, arch, 'val'):.4f}  "
          f"test acc {evaluate(sd, arch):.4f}")
