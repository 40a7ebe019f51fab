"""Built-in tasks: small deterministic networks with their data, used by the demo, the
benchmarks, and commands that need to measure accuracy (sweeps, target modes).

Importing this package does not require PyTorch; the functions that need it import it lazily.

:func:`get_task` names a task and gives a :class:`Task`: its trained ``state_dict()``, an
``evaluate(state_dict, split=...)`` returning top-1 accuracy, and a ``retrain_fn`` for iterative
pruning. A user's own model plugs into the same code paths as a :class:`Task` built from their
own callables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

from . import digits, fashion
from .digits import build_model, evaluate, get_state_dict, load_data, train

__all__ = ["Task", "TASKS", "get_task", "digits", "fashion",
           "load_data", "build_model", "train", "get_state_dict", "evaluate"]


@dataclass
class Task:
    """A model and how to measure it.

    ``state_dict()`` returns the trained weights; ``evaluate(state_dict, split)`` returns the
    metric (higher is better) on ``split``: ``"test"`` for reporting, ``"val"`` for tuning
    anything (never tune on ``"test"``). ``retrain_fn(epochs)``, when given, returns a
    ``train_fn(state_dict, masks)`` for :func:`nncodec.prune.iterative_prune`."""

    name: str
    state_dict: Callable[[], Dict[str, Any]]
    evaluate: Callable[..., float]
    metric: str = "accuracy"
    description: str = ""
    retrain_fn: Optional[Callable[..., Callable]] = None
    # for sensitivity estimates (nncodec.sensitivity): a fresh torch model of the task's
    # architecture, and the training split as numpy (X, y); never the validation or test split
    build_model: Optional[Callable[[], Any]] = None
    train_data: Optional[Callable[[], Any]] = None


def _digits_eval(sd: Mapping[str, Any], split: str = "test") -> float:
    if split == "test":
        return digits.evaluate(sd)
    if split == "val":
        # the digits task has no separate validation split: tune on the training images
        import numpy as np
        from . import _common
        X, y, _, _ = digits.load_data()
        with _common.deterministic_torch():
            model = _common.load_into(digits.build_model(), sd)
            return _common.accuracy(model, np.ascontiguousarray(X), y)
    raise ValueError(f"split must be 'val' or 'test', not {split!r}")


def _digits_retrain(epochs: int = 3):
    from ..prune import digits_retrain
    return digits_retrain(epochs=epochs)


TASKS = {
    "digits": lambda: Task("digits", digits.get_state_dict, _digits_eval,
                           description="CNN on scikit-learn's 8x8 digits (13,706 parameters); "
                                       "'val' is the training split",
                           retrain_fn=_digits_retrain, build_model=digits.build_model,
                           train_data=lambda: digits.load_data()[:2]),
    "fashion": lambda: Task("fashion", lambda: fashion.get_state_dict("cnn"),
                            lambda sd, split="test": fashion.evaluate(sd, "cnn", split),
                            description="CNN on Fashion-MNIST (52,138 parameters)",
                            retrain_fn=lambda epochs=2: fashion.retrain_fn("cnn", epochs=epochs),
                            build_model=lambda: fashion.build_model("cnn"),
                            train_data=lambda: fashion.load_data("train")),
    "fashion-lenet300": lambda: Task("fashion-lenet300", lambda: fashion.get_state_dict("lenet300"),
                                     lambda sd, split="test": fashion.evaluate(sd, "lenet300", split),
                                     description="LeNet-300-100 on Fashion-MNIST (266,610 parameters)",
                                     retrain_fn=lambda epochs=2: fashion.retrain_fn("lenet300",
                                                                                    epochs=epochs),
                                     build_model=lambda: fashion.build_model("lenet300"),
                                     train_data=lambda: fashion.load_data("train")),
}


def get_task(name: str) -> Task:
    """The built-in task called ``name`` (one of :data:`TASKS`)."""
    try:
        return TASKS[name]()
    except KeyError:
        raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}") from None
