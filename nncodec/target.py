"""Target modes: search the main setting of a method for a size budget or an accuracy budget.

    data, report = nncodec.encode_to_target(sd, target_size=20_000)             # largest file <= 20,000 B
    data, report = nncodec.encode_to_target(sd, target_bpw=2.0, method="kmeans")
    data, report = nncodec.encode_to_target(sd, max_accuracy_drop=0.5, evaluate=task_val_accuracy,
                                            evaluate_test=task_test_accuracy)

The knob searched, from the coarsest (smallest file) to the finest setting of its grid:

| method          | knob   | grid                                                                |
| --------------- | ------ | ------------------------------------------------------------------- |
| uniform         | qp     | step 2^(qp/4), qp in 0.25 steps, from a step of 4 max|w| down 26 octaves |
| fixed           | bits   | word length 2..16 (IL per tensor)                                    |
| kmeans, pq, rq  | k      | centres per codebook 2..256                                          |

Size mode: the largest file within the budget (bits per weight = 8 x file bytes / all values,
as ``nncodec info`` counts them). Accuracy mode: the smallest file whose accuracy is within
``max_accuracy_drop`` percentage points of the uncompressed model's, ``evaluate(tensors)``
returning a fraction in [0, 1] (tune on a validation split; ``evaluate_test``, when given, is
only measured on the result, for reporting). Both search by bisection over the grid, which
assumes size (or accuracy) grows along it; the result is checked against its finer (size) or
coarser (accuracy) neighbour on the grid, and the report lists every setting tried. Pruning,
sensitivity-weighted steps and the other settings are kept as given.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .api import _settings, _to_numpy, decode, encode
from .errors import TargetError
from .pipeline import FLOAT_DTYPES, Settings

KNOBS = {"uniform": "qp", "fixed": "bits", "kmeans": "k", "pq": "k", "rq": "k"}
QP_OCTAVES = 26
QP_RESOLUTION = 0.25


def knob_grid(tensors: Mapping[str, Any], settings: Settings, dtypes: Optional[Mapping[str, str]] = None):
    """(knob name, list of values from the coarsest to the finest setting) for ``settings.method``."""
    method = settings.method
    if settings.lossless:
        raise ValueError("a target mode needs a lossy method (not lossless)")
    if method not in KNOBS:
        raise ValueError(f"method {method!r} has no setting to search; target modes apply to "
                         f"{', '.join(KNOBS)}")
    if method == "uniform":
        top = 0.0
        for n, v in tensors.items():
            a, d = _to_numpy(n, v, dtypes or {})
            if d in FLOAT_DTYPES and a.ndim >= 2 and a.size:
                w = np.abs(a.astype(np.float64)) if d != "bfloat16" else np.abs(_to_f32(a))
                m = float(np.max(w[np.isfinite(w)])) if np.any(np.isfinite(w)) else 0.0
                top = max(top, m)
        if top <= 0.0:
            raise ValueError("no float weight tensor with a non-zero value to quantize")
        qp_hi = 4.0 * math.ceil(math.log2(top)) + 8.0
        n = int(4 * QP_OCTAVES / QP_RESOLUTION)
        return "qp", [qp_hi - QP_RESOLUTION * i for i in range(n + 1)]
    if method == "fixed":
        return "bits", list(range(2, 17))
    return "k", list(range(2, 257))


def _to_f32(a):
    from . import bf16
    return bf16.to_float32(a).astype(np.float64)


def _with_knob(settings: Settings, knob: str, value) -> Settings:
    if knob == "qp":
        return dataclasses.replace(settings, qp=float(value), step=None, target_snr=None)
    if knob == "bits":
        return dataclasses.replace(settings, bits=int(value), il=None, fl=None)
    return dataclasses.replace(settings, k=int(value))


def _describe(knob: str, value) -> str:
    return f"{knob} {value:g}" if knob == "qp" else f"{knob} {int(value)}"


def encode_to_target(tensors: Mapping[str, Any], *, target_size: Optional[int] = None,
                     target_bpw: Optional[float] = None, max_accuracy_drop: Optional[float] = None,
                     evaluate: Optional[Callable[[dict], float]] = None,
                     evaluate_test: Optional[Callable[[dict], float]] = None,
                     sensitivity: Optional[Mapping[str, Any]] = None, allocation: str = "rd",
                     settings: Optional[Settings] = None, metadata: Optional[Mapping[str, str]] = None,
                     dtypes: Optional[Mapping[str, str]] = None,
                     progress: Optional[Callable[[str], None]] = None, **kwargs):
    """Encode ``tensors`` at the setting the budget asks for; returns ``(bytes, report)``.

    Give exactly one of ``target_size`` (bytes), ``target_bpw`` (bits per value, over all
    values) and ``max_accuracy_drop`` (percentage points; needs ``evaluate``). Other keyword
    settings as for ``nncodec.encode``, except the knob searched (``qp``/``step``/``target_snr``
    for uniform, ``bits``/``il``/``fl`` for fixed; ``k`` is overridden for kmeans/pq/rq).
    ``progress(line)`` is called once per setting tried. Raises ``TargetError`` when no
    setting on the grid meets the budget."""
    given = [x is not None for x in (target_size, target_bpw, max_accuracy_drop)]
    if sum(given) != 1:
        raise ValueError("give exactly one of target_size, target_bpw and max_accuracy_drop")
    s = _settings(settings, kwargs)
    if s.method == "uniform" and any(x is not None for x in (s.qp, s.step, s.target_snr)):
        raise ValueError("the target search chooses qp itself: do not give step, qp or target_snr")
    if s.method == "fixed" and (s.il is not None or s.fl is not None):
        raise ValueError("the target search chooses the word length itself: do not give il or fl")
    names = list(tensors)
    values = int(sum(int(np.prod(np.shape(_to_numpy(n, tensors[n], dtypes or {})[0]))) for n in names))
    if values == 0:
        raise ValueError("no values to encode")
    knob, grid = knob_grid(tensors, s, dtypes)
    trials: dict = {}
    report: dict = {"method": s.method, "knob": knob, "grid": {"first": grid[0], "last": grid[-1],
                                                               "points": len(grid)},
                    "values": values}

    def say(line: str) -> None:
        if progress is not None:
            progress(line)

    def trial(i: int) -> dict:
        if i in trials:
            return trials[i]
        st = _with_knob(s, knob, grid[i])
        try:
            data = encode(tensors, settings=st, dtypes=dtypes, metadata=metadata, sensitivity=sensitivity,
                          allocation=allocation)
        except ValueError as exc:
            if knob == "qp" and "too small" in str(exc):
                t = {"value": grid[i], "bytes": math.inf, "error": str(exc)}
                trials[i] = t
                return t
            raise
        t = {"value": grid[i], "bytes": len(data), "bits_per_value": 8.0 * len(data) / values, "data": data}
        if evaluate is not None and max_accuracy_drop is not None:
            t["accuracy"] = float(evaluate(decode(data)))
        trials[i] = t
        line = f"search {_describe(knob, grid[i])}: {len(data)} B, {t['bits_per_value']:.3f} bits/value"
        if "accuracy" in t:
            line += f", accuracy {100 * t['accuracy']:.2f}%"
        say(line)
        return t

    lo, hi = 0, len(grid) - 1
    if max_accuracy_drop is None:
        budget = int(target_size) if target_size is not None else int(math.floor(target_bpw * values / 8.0))
        if budget <= 0:
            raise ValueError("the size budget must be positive")
        report.update({"mode": "size", "budget_bytes": budget})
        if trial(lo)["bytes"] > budget:
            raise TargetError(f"even the coarsest setting ({_describe(knob, grid[lo])}) gives "
                              f"{trial(lo)['bytes']} bytes, over the budget of {budget}")
        if trial(hi)["bytes"] <= budget:
            best = hi
        else:  # invariant: grid[lo] fits, grid[hi] does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if trial(mid)["bytes"] <= budget:
                    lo = mid
                else:
                    hi = mid
            best = lo
    else:
        if evaluate is None:
            raise ValueError("max_accuracy_drop needs an evaluate callback (or a built-in task)")
        if not (max_accuracy_drop >= 0 and math.isfinite(max_accuracy_drop)):
            raise ValueError(f"max_accuracy_drop must be >= 0 points, got {max_accuracy_drop!r}")
        base = float(evaluate({n: _plain(tensors[n]) for n in names}))
        floor = base - max_accuracy_drop / 100.0
        report.update({"mode": "accuracy", "max_accuracy_drop_points": float(max_accuracy_drop),
                       "base_accuracy": base, "accuracy_floor": floor})
        say(f"uncompressed accuracy {100 * base:.2f}%, floor {100 * floor:.2f}%")

        def ok(i: int) -> bool:
            t = trial(i)
            return t["bytes"] != math.inf and t["accuracy"] >= floor - 1e-12

        if not ok(hi):
            raise TargetError(f"even the finest setting ({_describe(knob, grid[hi])}) loses "
                              f"{100 * (base - trials[hi].get('accuracy', 0.0)):.2f} points, "
                              f"more than {max_accuracy_drop:g}")
        if ok(lo):
            best = lo
        else:  # invariant: grid[lo] misses the floor, grid[hi] meets it
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if ok(mid):
                    hi = mid
                else:
                    lo = mid
            best = hi
    t = trials[best]
    report.update({"value": grid[best], "setting": _describe(knob, grid[best]), "bytes": t["bytes"],
                   "bits_per_value": t["bits_per_value"],
                   "settings": _with_knob(s, knob, grid[best]).describe(),
                   "trials": [{k: v for k, v in trials[i].items() if k != "data"} for i in sorted(trials)]})
    if "accuracy" in t:
        report["accuracy"] = t["accuracy"]
        report["accuracy_drop_points"] = 100.0 * (report["base_accuracy"] - t["accuracy"])
    if evaluate_test is not None:
        report["base_test_accuracy"] = float(evaluate_test({n: _plain(tensors[n]) for n in names}))
        report["test_accuracy"] = float(evaluate_test(decode(t["data"])))
    return t["data"], report


def _plain(v):
    return v.detach().cpu().numpy() if hasattr(v, "detach") else v
