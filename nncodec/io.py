"""Model files in and out: PyTorch state_dicts, safetensors and npz, as named numpy arrays.

    from nncodec.io import read_model, write_model
    tensors, dtypes, metadata = read_model("model.pt")        # or .safetensors / .npz
    write_model("model.safetensors", tensors, dtypes=dtypes, metadata=metadata)

The data model
--------------
``read_model`` returns a ``ModelData(tensors, dtypes, metadata)`` named tuple:

- ``tensors``: ``dict[str, np.ndarray]``, native byte order, C-contiguous, each array owning its
  memory apart from the others (tied weights and views come out as separate copies).
- ``dtypes``: ``dict[str, str]``, the logical dtype of *every* tensor, one of ``DTYPE_NAMES``.
  numpy has no bfloat16, so a ``"bfloat16"`` tensor is a ``uint16`` array holding the raw bits
  (the upper half of the float32); everywhere else the array's dtype and the name agree. This is
  the convention of ``nncodec.encode(tensors, dtypes=...)``, so the three can be passed on as they
  are. ``bf16_to_float32`` / ``float32_to_bf16`` convert (exact widening; narrowing rounds to
  nearest, ties to even).
- ``metadata``: ``dict[str, str]``: the safetensors ``__metadata__`` map, the map nncodec keeps in
  npz files, or for PyTorch files notes on what was left out (keys ``nncodec.io.*``).

``write_model`` takes the same three (``dtypes`` may be omitted when no tensor is bfloat16, and
may list only the bfloat16 ones). The format follows the suffix unless ``fmt`` is given:

==============  ============================  ==================================================
fmt             suffixes                      notes
==============  ============================  ==================================================
``"torch"``     .pt .pth .bin .ckpt           ``torch.load(weights_only=True)``; needs PyTorch
``"safetensors"`` .safetensors                read and written here, without torch or the
                                              safetensors package
``"npz"``       .npz                          ``np.load(allow_pickle=False)``; metadata and the
                                              bfloat16 names under ``__nncodec_metadata__``
==============  ============================  ==================================================

PyTorch files
-------------
A file may hold a state_dict (a mapping of names to tensors) or a checkpoint holding one. The
state_dict is found by this rule, first match wins:

1. ``key=`` given: that entry (a string, or a sequence of strings for a nested entry).
2. The object itself is a state_dict: a mapping with string keys, at least one tensor value and
   no mapping values (an empty mapping is an empty state_dict).
3. Under one of ``CHECKPOINT_KEYS`` ('state_dict', 'model_state_dict', 'model', 'net',
   'weights', 'params'), tried in that order, at the top level or one level further down
   (``ckpt["model"]["state_dict"]``); entries under those keys that are not state_dicts (a model
   name, a config dict) are passed over.
4. The one top-level entry that is a state_dict, whatever its key; with several, an error asks
   for ``key=``.

Everything else in a checkpoint (epoch, optimizer state, other state_dicts) and any non-tensor
value inside the state_dict is left out: a ``ModelIOWarning`` names it, and the metadata records
``nncodec.io.checkpoint_key`` and ``nncodec.io.dropped`` (a JSON list). A whole pickled
``nn.Module``, a TorchScript archive, or any other pickled object that weights-only loading
refuses raises ``PickledObjectError`` (``PickledModuleError`` when it is known to be a module),
whose message says how to save a state_dict instead. Nothing in a file is ever unpickled beyond
what ``torch.load(weights_only=True)`` allows.

A .pt file has no place for metadata: ``write_model`` to .pt with metadata warns
(``ModelIOWarning``) and writes a plain state_dict, which ``model.load_state_dict`` accepts.

Writing
-------
Bytes go to a temporary file in the target's directory, which is flushed, synced and then renamed
onto the target: a reader sees no file or the whole file, and a failed write leaves neither a part
nor the temporary file. An existing target is replaced only with ``force=True``; otherwise
``OutputExistsError`` (both an ``NNCodecError`` and a ``FileExistsError``) is raised, also when the
file appears while writing (the final step links without clobbering where the filesystem allows).
Safetensors files list tensors by falling element size, then name (as the reference writer does,
so every tensor starts aligned); npz and .pt keep the order given. Same input, same bytes (.pt
aside, whose zip torch writes).

Errors
------
Content problems raise ``ModelFileError`` subclasses: ``ModelFormatError`` (also a
``FormatError``) for bytes that are not a valid file of the format, ``UnsupportedModelError`` for
valid files nncodec does not handle (unknown suffix, no state_dict, unsupported dtype),
``PickledObjectError`` / ``PickledModuleError`` as above, ``MissingDependencyError`` (also an
``ImportError``) when torch is needed but absent. Operating-system errors (no such file,
permissions) pass through as ``OSError``. Wrong arguments (a float32 array declared bfloat16,
non-string metadata) raise ``TypeError`` / ``ValueError``, like the rest of the library API.
"""
from __future__ import annotations

import functools
import json
import math
import os
import pickle
import re
import sys
import warnings
import zipfile
from typing import Any, BinaryIO, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import bf16 as _bf16
from .atomic import atomic_write as _atomic_write, exists_error as _exists
from .errors import (MissingDependencyError, ModelFileError, ModelFormatError, OutputExistsError,
                     PickledModuleError, PickledObjectError, UnsupportedModelError)

__all__ = [
    "CHECKPOINT_KEYS", "DTYPE_NAMES", "FORMATS", "NPZ_METADATA_KEY", "MissingDependencyError",
    "ModelData", "ModelFileError", "ModelFormatError", "ModelIOWarning", "OutputExistsError",
    "PickledModuleError", "PickledObjectError", "UnsupportedModelError", "bf16_to_float32",
    "float32_to_bf16", "guess_format", "read_model", "write_model",
]

PathLike = Union[str, "os.PathLike[str]"]

# --------------------------------------------------------------------------------------------
# Errors and warnings


class ModelIOWarning(UserWarning):
    """Something in a model file was left out (checkpoint entries, metadata a .pt cannot hold)."""


# --------------------------------------------------------------------------------------------
# Constants

FORMATS = ("torch", "safetensors", "npz")
_FORMAT_ALIASES = {"torch": "torch", "pt": "torch", "pytorch": "torch",
                   "safetensors": "safetensors", "npz": "npz"}
_SUFFIXES = {".pt": "torch", ".pth": "torch", ".bin": "torch", ".ckpt": "torch",
             ".safetensors": "safetensors", ".npz": "npz"}

# logical dtype names, in the order of the safetensors spec
DTYPE_NAMES = ("bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
               "float16", "bfloat16", "float32", "float64")
_STORAGE = {name: np.dtype(np.uint16 if name == "bfloat16" else name) for name in DTYPE_NAMES}
_ST_CODES = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
             "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16",
             "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_ST_NAMES = {code: name for name, code in _ST_CODES.items()}
_ST_MAX_HEADER = 100_000_000  # the reference implementation's limit

CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "params")
NPZ_METADATA_KEY = "__nncodec_metadata__"
_NPZ_FORMAT_TAG = "nncodec-npz"
_NPZ_FORMAT_VERSION = 1
_SAVE_HINT = 'torch.save(model.state_dict(), "model.pt")'

# numpy has no bfloat16: uint16 bits <-> float32 values (nncodec.bf16 under names that say so)
bf16_to_float32 = _bf16.to_float32  # exact
float32_to_bf16 = _bf16.from_float32  # round to nearest, ties to even; NaN stays NaN


class ModelData(NamedTuple):
    """What ``read_model`` returns; unpacks as ``tensors, dtypes, metadata``."""

    tensors: dict[str, np.ndarray]
    dtypes: dict[str, str]
    metadata: dict[str, str]


# --------------------------------------------------------------------------------------------
# Format choice


def guess_format(path: PathLike, fmt: Optional[str] = None) -> str:
    """The format ('torch', 'safetensors' or 'npz') of ``path``; ``fmt`` overrides the suffix."""
    if fmt is not None:
        try:
            return _FORMAT_ALIASES[fmt.lower()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown model format {fmt!r}; use one of "
                             f"{', '.join(FORMATS)}") from None
    name = os.fspath(path).lower()
    for suffix, found in _SUFFIXES.items():
        if name.endswith(suffix):
            return found
    raise UnsupportedModelError(
        f"{os.fspath(path)}: cannot tell the model format from the suffix; use one of "
        f"{', '.join(_SUFFIXES)} or pass fmt= ({', '.join(FORMATS)})")


def _import_torch(path: str, doing: str):
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"{path}: {doing} a PyTorch file needs PyTorch, which is not installed: "
            f"pip install torch") from exc
    return torch


# --------------------------------------------------------------------------------------------
# Reading


def read_model(path: PathLike, fmt: Optional[str] = None, *,
               key: Union[str, Sequence[str], None] = None) -> ModelData:
    """Read a model file into ``ModelData(tensors, dtypes, metadata)`` (see the module doc).

    ``fmt`` ('torch', 'safetensors' or 'npz') overrides the suffix; ``key`` picks the state_dict
    inside a PyTorch checkpoint (a string, or a sequence of strings for a nested entry).
    """
    path = os.fspath(path)
    kind = guess_format(path, fmt)
    if key is not None and kind != "torch":
        raise ValueError("key= selects an entry of a PyTorch checkpoint; it has no meaning for "
                         f"{kind} files")
    if kind == "torch":
        return _read_torch(path, key)
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_npz(path)


# ---- PyTorch


_GLOBAL_RE = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def _refuse_pickled(path: str, global_name: str, torch) -> PickledObjectError:
    module_name, _, attr = global_name.rpartition(".")
    cls = getattr(sys.modules.get(module_name), attr, None)  # never imports anything new
    is_module = global_name.startswith("torch.nn.modules.") or (
        isinstance(cls, type) and issubclass(cls, torch.nn.Module))
    if is_module:
        return PickledModuleError(
            f"{path} holds a whole pickled model ({global_name}), not a state_dict. nncodec "
            f"reads tensors only and never runs pickled code; save the weights instead: "
            f"{_SAVE_HINT}")
    return PickledObjectError(
        f"{path} holds a pickled Python object ({global_name}) that torch.load(weights_only=True) "
        f"refuses; nncodec reads tensors only and never runs pickled code. If the file is a whole "
        f"model saved with torch.save(model, ...), save its state_dict instead: {_SAVE_HINT}; if "
        f"it is a checkpoint, save it without that object.")


def _read_torch(path: str, key) -> ModelData:
    torch = _import_torch(path, "reading")
    with open(path, "rb") as f:  # OS errors surface as themselves; everything after is content
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive.*")
            try:
                obj = torch.load(f, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                found = _GLOBAL_RE.search(str(exc))
                if found:
                    raise _refuse_pickled(path, found.group(1), torch) from exc
                raise _unreadable_torch(path, exc) from exc
            except Exception as exc:  # noqa: BLE001 - torch raises many types for bad bytes
                if "TorchScript" in str(exc):
                    raise PickledModuleError(
                        f"{path} is a TorchScript archive (torch.jit.save), not a state_dict; load "
                        f"it with torch.jit.load and save the weights: {_SAVE_HINT}") from exc
                raise _unreadable_torch(path, exc) from exc

    if isinstance(obj, torch.nn.Module):  # only if the caller allowlisted module classes
        raise PickledModuleError(f"{path} holds a whole model ({type(obj).__name__}), not a "
                                 f"state_dict; save the weights instead: {_SAVE_HINT}")
    if not isinstance(obj, Mapping):
        raise UnsupportedModelError(
            f"{path} holds a {type(obj).__name__}, not a mapping of names to tensors; save a "
            f"state_dict ({_SAVE_HINT}) or a dict of named tensors")

    def is_tensor(v):
        return isinstance(v, torch.Tensor)

    state_dict, where, dropped = _find_state_dict(obj, key, is_tensor, path)
    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    seen: set[int] = set()
    for name, value in state_dict.items():
        if not is_tensor(value) or not isinstance(name, str):
            dropped.append(_join(where + (name,)))
            continue
        tensors[name], dtypes[name] = _torch_to_numpy(value, name, path, torch, seen)

    metadata: dict[str, str] = {}
    if where:
        metadata["nncodec.io.checkpoint_key"] = _join(where)
    if dropped:
        metadata["nncodec.io.dropped"] = json.dumps(dropped, ensure_ascii=False)
        shown = ", ".join(dropped[:8]) + (f" and {len(dropped) - 8} more" * (len(dropped) > 8))
        source = f"the state_dict under {_join(where)!r}" if where else "the state_dict"
        warnings.warn(f"{path}: read the tensors of {source}; left out {len(dropped)} other "
                      f"entr{'y' if len(dropped) == 1 else 'ies'}: {shown}",
                      ModelIOWarning, stacklevel=3)
    return ModelData(tensors, dtypes, metadata)


def _unreadable_torch(path: str, exc: BaseException) -> ModelFormatError:
    text = str(exc)
    inner = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
    text = " ".join((inner.group(1) if inner and inner.group(1) else text).split())
    reason = text.split(". ")[0][:200]  # torch's first sentence; the rest is advice
    return ModelFormatError(f"{path}: not a readable PyTorch file ({type(exc).__name__}: {reason})")


def _join(parts: Sequence[Any]) -> str:
    return "/".join(str(p) for p in parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _find_state_dict(obj: Mapping, key, is_tensor: Callable[[Any], bool], path: str):
    """(state_dict, path of keys to it, dropped entry names) by the rule of the module doc."""

    def is_state_dict(v) -> bool:
        return (isinstance(v, Mapping) and all(isinstance(k, str) for k in v)
                and any(is_tensor(x) for x in v.values())
                and not any(isinstance(x, Mapping) for x in v.values()))

    def others(container: Mapping, keep, prefix: tuple) -> list[str]:
        return [_join(prefix + (k,)) for k in container if k != keep]

    if key is not None:
        parts = (key,) if isinstance(key, str) else tuple(key)
        node: Any = obj
        dropped: list[str] = []
        for depth, part in enumerate(parts):
            if not isinstance(node, Mapping) or part not in node:
                raise UnsupportedModelError(f"{path}: no entry {_join(parts[:depth + 1])!r} "
                                            f"(key={key!r})")
            dropped += others(node, part, parts[:depth])
            node = node[part]
        if not isinstance(node, Mapping):
            raise UnsupportedModelError(f"{path}: the entry {_join(parts)!r} is a "
                                        f"{type(node).__name__}, not a state_dict")
        return node, parts, dropped

    if not obj or is_state_dict(obj):
        return obj, (), []

    for k in CHECKPOINT_KEYS:
        if k not in obj:
            continue
        v = obj[k]
        if is_state_dict(v):
            return v, (k,), others(obj, k, ())
        if isinstance(v, Mapping):
            for k2 in CHECKPOINT_KEYS:
                if k2 in v and is_state_dict(v[k2]):
                    return v[k2], (k, k2), others(obj, k, ()) + others(v, k2, (k,))

    found = [k for k, v in obj.items() if is_state_dict(v)]
    if len(found) == 1:
        return obj[found[0]], (found[0],), others(obj, found[0], ())
    if found:
        raise UnsupportedModelError(
            f"{path}: the checkpoint holds several state_dicts ({', '.join(map(repr, found))}); "
            f"choose one with key=")
    entries = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(obj.items())[:10])
    raise UnsupportedModelError(
        f"{path}: found no state_dict (a mapping of names to tensors) in it, nor under any of "
        f"{', '.join(CHECKPOINT_KEYS)}; its entries: {entries}. Choose one with key=, or save "
        f"one: {_SAVE_HINT}")


@functools.lru_cache(maxsize=None)
def _torch_dtype_names(torch) -> dict:
    names = {}
    for name in DTYPE_NAMES:
        dt = getattr(torch, name, None)
        if isinstance(dt, torch.dtype):
            names[dt] = name
    return names


def _torch_to_numpy(t, name: str, path: str, torch, seen: set) -> tuple[np.ndarray, str]:
    """A tensor as a numpy array that owns its memory apart from all others, and its dtype name."""
    dtype = _torch_dtype_names(torch).get(t.dtype)
    if dtype is None or t.layout != torch.strided or t.is_quantized:
        what = t.dtype if dtype is None else ("quantized" if t.is_quantized else t.layout)
        raise UnsupportedModelError(
            f"{path}: tensor {name!r} is {what}, which nncodec does not support (dense tensors of "
            f"{', '.join(DTYPE_NAMES)})")
    t = t.detach()
    if t.device.type != "cpu":
        try:
            t = t.cpu()
        except Exception as exc:  # noqa: BLE001 - e.g. meta tensors have no data
            raise UnsupportedModelError(f"{path}: tensor {name!r} on device {t.device} has no "
                                        f"readable data") from exc
    if t.numel():
        storage = t.untyped_storage()
        whole = (t.is_contiguous() and t.storage_offset() == 0
                 and storage.nbytes() == t.numel() * t.element_size())
        if not whole or storage.data_ptr() in seen:  # a view, or tied to another tensor
            t = t.clone(memory_format=torch.contiguous_format)
        else:
            seen.add(storage.data_ptr())
    else:
        t = t.contiguous()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view(np.uint16), dtype
    return t.numpy(), dtype


# ---- safetensors


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _read_safetensors(path: str) -> ModelData:
    def bad(why: str) -> ModelFormatError:
        return ModelFormatError(f"{path}: not a valid safetensors file: {why}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise bad("shorter than the 8-byte header length")
        n = int.from_bytes(head, "little")
        if n > _ST_MAX_HEADER:
            raise bad(f"header of {n} bytes is over the {_ST_MAX_HEADER}-byte limit")
        if n > size - 8:
            raise bad(f"header of {n} bytes runs past the end of the file ({size} bytes)")
        raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise bad(f"header is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise bad("header is not a JSON object")

        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise bad("__metadata__ is not a map of strings to strings")

        entries = []
        for name, info in header.items():
            if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
                raise bad(f"tensor {name!r}: entry must hold exactly dtype, shape, data_offsets")
            code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if code not in _ST_NAMES:
                if isinstance(code, str):
                    raise UnsupportedModelError(
                        f"{path}: tensor {name!r} has dtype {code}, which nncodec does not support "
                        f"({', '.join(_ST_CODES.values())})")
                raise bad(f"tensor {name!r}: dtype {code!r}")
            if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
                raise bad(f"tensor {name!r}: shape {shape!r}")
            if (not isinstance(offsets, list) or len(offsets) != 2
                    or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
                raise bad(f"tensor {name!r}: data_offsets {offsets!r}")
            dtype = _ST_NAMES[code]
            nbytes = math.prod(shape) * _STORAGE[dtype].itemsize
            if offsets[1] - offsets[0] != nbytes:
                raise bad(f"tensor {name!r}: {offsets[1] - offsets[0]} bytes of data for shape "
                          f"{shape} of {code}")
            entries.append((offsets[0], offsets[1], name, dtype, tuple(shape)))

        end = 0
        for begin, stop, name, _, _ in sorted(entries, key=lambda e: (e[0], e[1])):
            if begin != end:
                raise bad(f"tensor {name!r}: data does not start where the previous tensor's "
                          f"ends (offset {begin}, expected {end})")
            end = stop
        if end != size - 8 - n:
            raise bad(f"the tensors cover {end} bytes of data, the file has {size - 8 - n}")

        tensors: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for begin, stop, name, dtype, shape in entries:
            arr = np.empty(shape, dtype=_STORAGE[dtype].newbyteorder("<"))
            if stop > begin:
                f.seek(8 + n + begin)
                if f.readinto(arr.reshape(-1).view(np.uint8)) != stop - begin:
                    raise bad("the file ends inside the data")  # shrank while we read
            if dtype == "bool" and stop > begin and int(arr.view(np.uint8).max()) > 1:
                raise bad(f"tensor {name!r}: a BOOL byte is neither 0 nor 1")
            tensors[name] = arr.astype(_STORAGE[dtype], copy=False)  # native byte order
            dtypes[name] = dtype
    return ModelData(tensors, dtypes, dict(metadata))


# ---- npz


def _read_npz(path: str) -> ModelData:
    with open(path, "rb") as f:
        try:
            loaded = np.load(f, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise many types for bad bytes
            raise ModelFormatError(f"{path}: not a valid npz file ({_first_line(exc)})") from exc
        if isinstance(loaded, np.ndarray):
            raise UnsupportedModelError(f"{path} holds a single .npy array, not named arrays; "
                                        f"save them with np.savez(path, name=array, ...)")
        with loaded:
            arrays: dict[str, np.ndarray] = {}
            for name in loaded.files:
                try:
                    value = loaded[name]
                except ValueError as exc:
                    if "allow_pickle" in str(exc):
                        raise UnsupportedModelError(f"{path}: array {name!r} holds Python objects, "
                                                    f"which nncodec does not load") from exc
                    raise ModelFormatError(f"{path}: array {name!r} is corrupt "
                                           f"({_first_line(exc)})") from exc
                except Exception as exc:  # noqa: BLE001 - zipfile/zlib/format raise many types
                    raise ModelFormatError(f"{path}: array {name!r} is corrupt "
                                           f"({_first_line(exc)})") from exc
                if not isinstance(value, np.ndarray):
                    raise ModelFormatError(f"{path}: member {name!r} is not a .npy array")
                arrays[name] = value

    declared: dict[str, str] = {}
    metadata: dict[str, str] = {}
    if NPZ_METADATA_KEY in arrays:
        declared, metadata = _parse_npz_note(path, arrays.pop(NPZ_METADATA_KEY))

    tensors: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for name, arr in arrays.items():
        native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in "=|" else arr.dtype
        if native.name not in _STORAGE or native.name == "bfloat16":
            raise UnsupportedModelError(
                f"{path}: array {name!r} has dtype {arr.dtype}, which nncodec does not support "
                f"({', '.join(DTYPE_NAMES)}; bfloat16 as uint16 bits)")
        arr = np.asarray(arr, dtype=native, order="C")  # keeps 0-d arrays 0-d
        dtype = declared.get(name, native.name)
        if dtype == "bfloat16" and native != np.uint16:
            raise ModelFormatError(f"{path}: array {name!r} is declared bfloat16 but is {native}, "
                                   f"not uint16 bits")
        tensors[name], dtypes[name] = arr, dtype
    missing = sorted(set(declared) - set(tensors))
    if missing:
        raise ModelFormatError(f"{path}: {NPZ_METADATA_KEY} names arrays the file lacks: "
                               f"{', '.join(map(repr, missing))}")
    return ModelData(tensors, dtypes, metadata)


def _parse_npz_note(path: str, value: np.ndarray) -> tuple[dict[str, str], dict[str, str]]:
    def bad(why: str) -> ModelFormatError:
        return ModelFormatError(f"{path}: {NPZ_METADATA_KEY} {why}")

    if value.shape != () or value.dtype.kind != "U":
        raise bad("is not a 0-d unicode array")
    try:
        note = json.loads(str(value[()]))
    except (ValueError, RecursionError):
        raise bad("is not JSON") from None
    if not isinstance(note, dict) or note.get("format") != _NPZ_FORMAT_TAG:
        raise bad(f"is not an object with format {_NPZ_FORMAT_TAG!r}")
    if note.get("version") != _NPZ_FORMAT_VERSION:
        raise bad(f"has version {note.get('version')!r}; this nncodec reads version "
                  f"{_NPZ_FORMAT_VERSION}")
    metadata, declared = note.get("metadata", {}), note.get("dtypes", {})
    for what, m in (("metadata", metadata), ("dtypes", declared)):
        if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
            raise bad(f"holds {what} that is not a map of strings to strings")
    if any(v != "bfloat16" for v in declared.values()):
        raise bad("declares a dtype other than bfloat16")
    return declared, metadata


# --------------------------------------------------------------------------------------------
# Writing


def write_model(path: PathLike, tensors: Mapping[str, Any],
                dtypes: Optional[Mapping[str, str]] = None,
                metadata: Optional[Mapping[str, str]] = None, fmt: Optional[str] = None,
                force: bool = False) -> None:
    """Write named tensors to a .pt, .safetensors or .npz file (see the module doc).

    ``tensors`` maps names to numpy arrays (or torch tensors); a bfloat16 tensor is a uint16
    array of bits named ``"bfloat16"`` in ``dtypes``. ``fmt`` overrides the suffix. The file is
    written atomically; an existing one is replaced only with ``force=True``, otherwise
    ``OutputExistsError`` is raised and the file is left as it was.
    """
    path = os.fspath(path)
    kind = guess_format(path, fmt)
    arrays, names = _check_tensors(tensors, dtypes or {})
    meta = _check_metadata(metadata)
    reserved = {"safetensors": "__metadata__", "npz": NPZ_METADATA_KEY}.get(kind)
    if reserved in arrays:
        raise ValueError(f"{reserved!r} is reserved in {kind} files and cannot name a tensor")
    if not force and os.path.lexists(path):
        raise _exists(path)

    if kind == "torch":
        torch = _import_torch(path, "writing")
        if meta:
            warnings.warn(f"{path}: a .pt state_dict has no place for metadata; left out "
                          f"{', '.join(sorted(meta))}", ModelIOWarning, stacklevel=2)
        state = {name: _numpy_to_torch(arr, names[name], torch) for name, arr in arrays.items()}
        _atomic_write(path, lambda f: torch.save(state, f), overwrite=force)
    elif kind == "safetensors":
        _atomic_write(path, lambda f: _write_safetensors(f, arrays, names, meta), overwrite=force)
    else:
        _atomic_write(path, lambda f: _write_npz(f, arrays, names, meta), overwrite=force)


def _check_tensors(tensors: Mapping[str, Any], dtypes: Mapping[str, str]):
    """(arrays in native byte order, C order; logical dtype names), or TypeError/ValueError."""
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to arrays, got "
                        f"{type(tensors).__name__}")
    unknown = [n for n in dtypes if n not in tensors]
    if unknown:
        raise ValueError(f"dtypes names tensors that are not given: "
                         f"{', '.join(map(repr, unknown))}")
    arrays: dict[str, np.ndarray] = {}
    names: dict[str, str] = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be strings, got {name!r}")
        arr, dtype = _as_numpy(name, value)
        declared = dtypes.get(name, dtype)
        if declared not in _STORAGE:
            raise TypeError(f"tensor {name!r}: unsupported dtype {declared!r}; supported: "
                            f"{', '.join(DTYPE_NAMES)}")
        if dtype not in _STORAGE:
            raise TypeError(f"tensor {name!r}: unsupported dtype {arr.dtype}; supported: "
                            f"{', '.join(DTYPE_NAMES)} (bfloat16 as uint16 bits)")
        if declared != dtype and not (declared == "bfloat16" and dtype == "uint16"):
            want = "uint16 bits" if declared == "bfloat16" else declared
            raise TypeError(f"tensor {name!r}: declared {declared}, so the array must be {want}, "
                            f"got {arr.dtype}")
        arrays[name] = np.asarray(arr, dtype=_STORAGE[declared], order="C")
        names[name] = declared
    return arrays, names


def _as_numpy(name: str, value: Any) -> tuple[np.ndarray, str]:
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        import torch  # present: the value is a tensor

        t = value.detach().cpu().contiguous()
        dtype = _torch_dtype_names(torch).get(t.dtype)
        if dtype is None:
            raise TypeError(f"tensor {name!r}: unsupported dtype {t.dtype}; supported: "
                            f"{', '.join(DTYPE_NAMES)}")
        if dtype == "bfloat16":
            return t.view(torch.int16).numpy().view(np.uint16), dtype
        return t.numpy(), dtype
    arr = np.asarray(value)
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in "=|" else arr.dtype
    return arr, native.name


def _check_metadata(metadata: Optional[Mapping[str, str]]) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("metadata must be a mapping of strings to strings")
    return dict(metadata)


def _numpy_to_torch(arr: np.ndarray, dtype: str, torch):
    """A tensor with storage of its own (never a view into a larger buffer)."""
    own = np.array(arr, copy=True, order="C")
    if dtype == "bfloat16":
        return torch.from_numpy(own.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(own)


def _write_safetensors(f: BinaryIO, arrays: dict[str, np.ndarray], names: dict[str, str],
                       metadata: dict[str, str]) -> None:
    order = sorted(arrays, key=lambda n: (-arrays[n].itemsize, n))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = {"dtype": _ST_CODES[names[name]], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # so that the data starts 8-aligned
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for name in order:
        a = arrays[name]
        if a.size:
            f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).reshape(-1).view(np.uint8))


def _write_npz(f: BinaryIO, arrays: dict[str, np.ndarray], names: dict[str, str],
               metadata: dict[str, str]) -> None:
    members = dict(arrays)
    bf = {n: "bfloat16" for n, d in names.items() if d == "bfloat16"}
    if metadata or bf:
        note = {"format": _NPZ_FORMAT_TAG, "version": _NPZ_FORMAT_VERSION,
                "metadata": dict(sorted(metadata.items())), "dtypes": bf}
        members[NPZ_METADATA_KEY] = np.array(json.dumps(note, ensure_ascii=False, sort_keys=True))
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in members.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, a, allow_pickle=False)


