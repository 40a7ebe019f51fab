"""The library API: what storage backends and scripts call.

    import nncodec
    data = nncodec.encode({"fc.weight": w, "fc.bias": b}, target_snr=30)   # -> bytes
    tensors = nncodec.decode(data)                                          # -> dict of numpy arrays
    nncodec.save_file(tensors, "model.nnc", qp=-38)
    tensors = nncodec.load_file("model.nnc", framework="torch")
    with nncodec.open("model.nnc") as f:            # reads only what is asked for
        f.keys(); f.metadata(); f.get_tensor("fc.weight"); f.info()

Inputs may be numpy arrays or torch tensors (torch.bfloat16 included); numpy
has no bfloat16, so a numpy caller passes its bits as uint16 and says so in
``dtypes={"name": "bfloat16"}``. Outputs are numpy unless ``framework="torch"``.
"""
from __future__ import annotations

import io as _io
import os
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Optional, Union

import numpy as np

from . import container
from .container import Reader, TensorRecord
from .errors import FormatError
from . import _parallel
from ._parallel import default_threads, numel as _numel, ordered_map as _ordered_map, threads_arg as _threads
from .pipeline import (Settings, decode_tensor, dtype_name, encode_tensor, global_prune_threshold,
                       model_step_for)

Progress = Optional[Callable[[str, int, int], None]]
_FRAMEWORKS = ("numpy", "np", "torch", "pt")


def _to_numpy(name: str, value: Any, dtypes: Mapping[str, str]) -> tuple[np.ndarray, str]:
    if hasattr(value, "detach") and hasattr(value, "dtype"):  # a torch tensor
        import torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
        arr = t.numpy()
    else:
        arr = np.asarray(value)
    if name in dtypes:
        declared = dtypes[name]
        if declared == "bfloat16":
            if arr.dtype != np.uint16:
                raise TypeError(f"tensor {name!r}: bfloat16 must be given as uint16 bits, got {arr.dtype}")
            return arr, "bfloat16"
        if np.dtype(arr.dtype).name != declared:
            raise TypeError(f"tensor {name!r}: declared {declared} but the array is {arr.dtype}")
    return arr, dtype_name(arr)


def _records(tensors: Mapping[str, Any], settings: Settings, dtypes: Mapping[str, str],
             progress: Progress, steps: Optional[Mapping[str, float]] = None,
             threads: int = 1) -> Iterable[TensorRecord]:
    names = list(tensors)
    threshold = None
    if settings.needs_global_pass:  # global pruning: one threshold over all weights, first
        threshold = global_prune_threshold(settings, (_to_numpy(n, tensors[n], dtypes) for n in names
                                                      if isinstance(n, str)))
    model_step = None
    if settings.needs_model_step:  # model-wide target SNR: one step for all weights, first
        model_step = model_step_for(settings, (_to_numpy(n, tensors[n], dtypes) for n in names
                                               if isinstance(n, str)), threshold, threads=threads)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")

    def one(name: str) -> TensorRecord:
        arr, dtype = _to_numpy(name, tensors[name], dtypes)
        return encode_tensor(name, arr, dtype, settings, global_threshold=threshold,
                             model_step=steps.get(name, model_step) if steps else model_step)

    threads = _parallel.threads_for(threads, sum(_numel(tensors[n]) for n in names))
    for i, record in enumerate(_ordered_map(one, names, threads)):
        if progress is not None:
            progress(record.name, i, len(names))
        yield record
    if progress is not None:
        progress("", len(names), len(names))


def _metadata(metadata: Optional[Mapping[str, str]], settings: Settings,
              allocation: Optional[str] = None) -> dict[str, str]:
    # no producer version here: the same tensors and settings give the same bytes
    # whichever release wrote them (the format version is in the preamble)
    meta = {"nncodec.settings": settings.describe()}
    if allocation:
        meta["nncodec.allocation"] = allocation
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("metadata keys and values must be strings")
        meta[k] = v
    return meta


def _settings(settings: Optional[Settings], kwargs: dict) -> Settings:
    if settings is not None:
        if kwargs:
            raise TypeError("pass either settings= or keyword settings, not both")
        return settings
    return Settings(**kwargs)


def sensitivity_steps(tensors: Mapping[str, Any], settings: Settings, sensitivity: Mapping[str, Any], *,
                      dtypes: Optional[Mapping[str, str]] = None, allocation: str = "rd",
                      return_report: bool = False):
    """Per-tensor steps of the weight tensors from a sensitivity dict (``nncodec.sensitivity``):
    the settings' one step (``step``, ``qp`` or the model-wide ``target_snr``) is spread over
    the tensors so that sum_i F_i D_i is smallest at no more bytes (see
    ``nncodec.sensitivity.allocate_steps``)."""
    from . import sensitivity as _sens
    from .pipeline import FLOAT_DTYPES, _prune_stage, _weights

    if settings.method != "uniform" or settings.lossless:
        raise ValueError("sensitivity-weighted steps apply to method 'uniform' (not lossless)")
    if settings.step is None and settings.qp is None and settings.snr_scope != "model":
        raise ValueError("sensitivity-weighted steps need one model-wide step: snr_scope 'model', "
                         "or step / qp")
    if not isinstance(sensitivity, Mapping):
        raise TypeError("sensitivity must be a dict {tensor name: value or array}")
    dtypes = dtypes or {}
    names = [n for n in tensors if isinstance(n, str)]
    pairs = {n: _to_numpy(n, tensors[n], dtypes) for n in names}
    threshold = global_prune_threshold(settings, pairs.values()) if settings.needs_global_pass else None
    weights = {}
    for n, (a, d) in pairs.items():
        if d not in FLOAT_DTYPES or a.ndim < 2 or not a.size:
            continue
        w = _weights(a, d)
        if not (np.isfinite(w.max()) and np.isfinite(w.min())):
            continue
        w = w.reshape(a.shape)
        if settings.pruning:
            w = _prune_stage(w.astype(np.float64), settings, threshold)[0]
        weights[n] = w.astype(np.float32)
    if settings.step is not None:
        base = float(settings.step)
    elif settings.qp is not None:
        from .pipeline import step_from_qp
        base = step_from_qp(settings.qp)
    else:
        base = model_step_for(settings, pairs.values(), threshold)
    if base is None or not weights:
        return ({}, {"allocation": allocation}) if return_report else {}
    return _sens.allocate_steps(weights, sensitivity, base, allocation=allocation, backend=settings.backend,
                                return_report=return_report)


def _with_sensitivity(tensors, s: Settings, dtypes, sensitivity, allocation):
    if sensitivity is None:
        return None, None
    steps, rep = sensitivity_steps(tensors, s, sensitivity, dtypes=dtypes, allocation=allocation,
                                   return_report=True)
    note = f"sensitivity {allocation}"
    return steps, note


def encode(tensors: Mapping[str, Any], *, metadata: Optional[Mapping[str, str]] = None,
           dtypes: Optional[Mapping[str, str]] = None, settings: Optional[Settings] = None,
           progress: Progress = None, sensitivity: Optional[Mapping[str, Any]] = None,
           allocation: str = "rd", threads: Optional[int] = None, **kwargs) -> bytes:
    """Compress a dict of tensors into ``.nnc`` bytes.

    ``sensitivity``: ``{tensor name: F}`` (e.g. ``nncodec.sensitivity.fisher_diagonal``) spreads
    the one step of the weight tensors into per-tensor steps that keep the size and lower the
    sensitivity-weighted error (``allocation`` ``"rd"`` or ``"closed-form"``; method uniform).

    Keyword settings (see ``nncodec.pipeline.Settings``): ``step``, ``qp`` or
    ``target_snr`` (weights), ``small_snr`` (1-D tensors), ``backend``
    (``"cabac"`` or ``"constriction"``), ``lossless``; ``method`` (``"uniform"``,
    ``"fixed"``, ``"kmeans"``, ``"pq"``, ``"rq"``, ``"binary"``, ``"ternary"``) with
    ``bits``/``il``/``fl``/``rounding``, ``k``, ``pq_dim``, ``rq_stages``...; ``prune``
    (fraction), ``prune_scope`` (``"tensor"``/``"global"``), ``prune_structured``; ``rdoq``,
    ``dq`` and ``rd_lambda`` (rate-distortion optimized / dependent quantization of the weights,
    ``nncodec.quantize.rdq``).

    ``threads``: tensors coded at once (default ``default_threads()``); the bytes are the same
    for any number.
    """
    s = _settings(settings, kwargs)
    n = _threads(threads)
    steps, note = _with_sensitivity(tensors, s, dtypes or {}, sensitivity, allocation)
    return container.pack(_records(tensors, s, dtypes or {}, progress, steps, n), _metadata(metadata, s, note))


def save_file(tensors: Mapping[str, Any], target: Union[str, os.PathLike, BinaryIO], *,
              metadata: Optional[Mapping[str, str]] = None, dtypes: Optional[Mapping[str, str]] = None,
              settings: Optional[Settings] = None, progress: Progress = None, overwrite: bool = True,
              sensitivity: Optional[Mapping[str, Any]] = None, allocation: str = "rd",
              threads: Optional[int] = None, **kwargs) -> None:
    """Like ``encode``, written to a path (atomically) or a binary file object.

    With ``overwrite=False`` an existing path is left alone (``OutputExistsError``)."""
    s = _settings(settings, kwargs)
    n = _threads(threads)
    steps, note = _with_sensitivity(tensors, s, dtypes or {}, sensitivity, allocation)
    container.write(target, _records(tensors, s, dtypes or {}, progress, steps, n), _metadata(metadata, s, note),
                    overwrite=overwrite)


def _convert(arr: np.ndarray, dtype: str, framework: str):
    if framework in ("numpy", "np"):
        return arr
    import torch

    if dtype == "bfloat16":
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(arr.copy())


def level_stage(chain) -> dict:
    """The stage that turns a record's levels into values: the chain's only stage, or the one
    after a leading ``prune`` stage (which is informative only). ``{}`` for other chains."""
    if isinstance(chain, list) and len(chain) == 2 and isinstance(chain[0], dict) \
            and chain[0].get("id") == "prune":
        chain = chain[1:]
    return chain[0] if isinstance(chain, list) and len(chain) == 1 and isinstance(chain[0], dict) else {}


class NNCFile:
    """A lazily read ``.nnc``: opening reads the header; each tensor's bytes are
    read, checked and decoded when it is asked for."""

    def __init__(self, source: Union[str, os.PathLike, BinaryIO, bytes, bytearray, memoryview],
                 framework: str = "numpy"):
        if framework not in _FRAMEWORKS:
            raise ValueError(f"framework must be one of {', '.join(_FRAMEWORKS)}")
        self.framework = framework
        self._reader = Reader(source)

    def __enter__(self) -> "NNCFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def keys(self) -> list[str]:
        return self._reader.keys()

    def __contains__(self, name: object) -> bool:
        return name in self._reader

    def __len__(self) -> int:
        return len(self._reader)

    def metadata(self) -> dict[str, str]:
        return self._reader.metadata()

    def dtype(self, name: str) -> str:
        return self._reader.record_info(name).dtype

    def get_tensor(self, name: str):
        info = self._reader.record_info(name)
        return self._decoded(info, self._reader.read_payload(name))

    def _decoded(self, info, payload: bytes):
        return _convert(decode_tensor(info, payload), info.dtype, self.framework)

    def iter_tensors(self, names: Optional[Iterable[str]] = None, *, threads: Optional[int] = None,
                     progress: Progress = None) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` for ``names`` (default: all, in the stored order), decoding up to
        ``threads`` tensors at once (default ``default_threads()``). Payloads are read here, one
        after the other, and decoded in worker threads; the results do not depend on ``threads``."""
        names = self.keys() if names is None else list(names)
        n = _parallel.threads_for(_threads(threads), sum(self._reader._info(k).numel for k in names))

        def read(name: str):
            return name, self._reader._info(name), self._reader.read_payload(name)

        def work(item):
            name, info, payload = item
            return name, self._decoded(info, payload)

        for i, (name, value) in enumerate(_ordered_map(work, map(read, names), n)):
            if progress is not None:
                progress(name, i, len(names))
            yield name, value
        if progress is not None:
            progress("", len(names), len(names))

    def get_layout(self, name: str, kind: Optional[str] = None):
        """The tensor's quantized levels as a ``nncodec.sparse`` layout object (Dense, CSR
        or WS; a weight of shape (out, ...) is an out x rest matrix), without building a
        dense float tensor. ``kind`` converts to "dense", "csr" or "ws"; by default the
        layout is the one stored (backends cabac-csr / -ws / -auto), else Dense."""
        from .entropy import backend_by_id, layout
        from .sparse.layouts import Dense, Dequant

        info = self._reader.record_info(name)
        stage = level_stage(info.chain)
        if stage.get("id") == "uniform":
            dequant = Dequant(step=stage["step"])
        elif stage.get("id") == "integer":
            dequant = Dequant(step=1.0)
        else:
            raise ValueError(f"tensor {name!r}: no layout for coding chain {info.chain}")
        payload = self._reader.read_payload(name)
        if info.backend == 3:
            obj = layout.read_layout(payload, info.numel, dequant)
        else:
            levels = backend_by_id(info.backend).decode(payload, info.numel)
            rows = info.shape[0] if len(info.shape) >= 2 else 1
            obj = Dense(levels.reshape(rows, -1) if levels.size else levels.reshape(rows, 0), dequant)
        if kind is None or kind == obj.kind:
            return obj
        if kind not in ("dense", "csr", "ws"):
            raise ValueError("kind must be dense, csr or ws")
        return getattr(obj, "to_" + kind)()

    def info(self) -> dict:
        """Container summary plus bits per element of each tensor."""
        out = self._reader.info()
        for t in out.get("tensors", []):
            numel = int(np.prod(t["shape"])) if t.get("shape") is not None else 0
            t["bits_per_element"] = (8.0 * t["bytes"] / numel) if numel else 0.0
        return out

    def verify(self, *, threads: Optional[int] = None) -> list[str]:
        """Check every checksum and decode every tensor; returns the problems found."""

        def read(name: str):
            try:
                return name, self._reader.record_info(name), self._reader.read_payload(name)
            except FormatError as exc:
                return name, None, exc

        def check(item) -> Optional[str]:
            name, info, payload = item
            try:
                if info is None:
                    raise payload
                decode_tensor(info, payload)
            except FormatError as exc:
                return f"tensor {name!r}: {exc}"
            return None

        return [p for p in _ordered_map(check, map(read, self.keys()), _threads(threads)) if p]


def open(source, framework: str = "numpy") -> NNCFile:  # noqa: A001 - mirrors safetensors.safe_open
    """Open a ``.nnc`` path, binary file object or bytes for lazy reading."""
    return NNCFile(source, framework)


def decode(data: Union[bytes, bytearray, memoryview], *, framework: str = "numpy",
           threads: Optional[int] = None) -> dict:
    """Decode ``.nnc`` bytes into a dict of tensors (in the stored order); ``threads`` as in
    ``NNCFile.iter_tensors``."""
    # a private bytes copy (the caller may change a bytearray later), read in place
    with NNCFile(data if type(data) is bytes else bytes(data), framework) as f:
        return dict(f.iter_tensors(threads=threads))


def load_file(source, *, framework: str = "numpy", threads: Optional[int] = None) -> dict:
    """Decode a whole ``.nnc`` file (path or binary file object)."""
    with NNCFile(source, framework) as f:
        return dict(f.iter_tensors(threads=threads))
