"""Entropy backends for integer levels, chosen by name.

Every backend has the same two calls::

    data = get_backend("cabac").encode(levels, row_length=R)   # -> bytes
    levels = get_backend("cabac").decode(data, count)          # -> int32 array, 1-D

``cabac`` (default) is nncodec's context-adaptive binary arithmetic coder;
``constriction`` is constriction's range coder with an order-0 model carried
in the payload; ``cabac-csr``, ``cabac-ws``, ``cabac-dense`` and ``cabac-auto``
(the smallest of the three) code the levels as a sparse matrix layout
(``nncodec.entropy.layout``). Decoders raise ``nncodec.errors.FormatError`` on bad data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from functools import partial

from . import cabac, constriction_backend, layout

DEFAULT_BACKEND = "cabac"


@dataclass(frozen=True)
class Backend:
    name: str
    id: int  # the number the container stores for this backend
    encode: Callable
    decode: Callable
    description: str


_BACKENDS = {
    "cabac": Backend("cabac", 1, cabac.encode, cabac.decode,
                     "context-adaptive binary arithmetic coder (nncodec_ext)"),
    "constriction": Backend("constriction", 2, constriction_backend.encode,
                            constriction_backend.decode,
                            "constriction range coder, per-tensor categorical model"),
    # backend id 3: the levels as a Dense / CSR / WS matrix, each array CABAC-coded
    "cabac-auto": Backend("cabac-auto", 3, partial(layout.encode, layout="auto"), layout.decode,
                          "cabac on the smallest of the dense, CSR and WS layouts"),
    "cabac-dense": Backend("cabac-dense", 3, partial(layout.encode, layout="dense"), layout.decode,
                           "cabac, dense layout inside a layout payload"),
    "cabac-csr": Backend("cabac-csr", 3, partial(layout.encode, layout="csr"), layout.decode,
                         "cabac on the CSR arrays (row counts, column gaps, values)"),
    "cabac-ws": Backend("cabac-ws", 3, partial(layout.encode, layout="ws"), layout.decode,
                        "cabac on the weight-sharing arrays (groups, levels, lengths, columns)"),
}


def get_backend(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown entropy backend {name!r}; choose one of: {', '.join(sorted(_BACKENDS))}"
        ) from None


# the first backend registered under each id (the one that decodes it)
_BY_ID: dict = {}
for _b in _BACKENDS.values():
    _BY_ID.setdefault(_b.id, _b)
del _b


def backend_by_id(backend_id: int) -> Backend:
    return _BY_ID[backend_id]


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


__all__ = ["Backend", "DEFAULT_BACKEND", "available_backends", "backend_by_id", "get_backend", "cabac"]
