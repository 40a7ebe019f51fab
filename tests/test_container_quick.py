"""The quick reading of compact index records (container._quick_compact_records) against the
careful one: on valid indexes both give the same records, and on damaged ones the quick
reading either agrees or hands over to the careful one (whose error is then the only one)."""
from __future__ import annotations

import random

import numpy as np
import pytest

import nncodec
from nncodec import container as C


def _files() -> list[bytes]:
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.1, (130, 3, 3)).astype(np.float32)  # a dimension of two varint bytes
    tensors = {
        "conv.weight": w,
        "conv.bias": rng.normal(0, 0.01, 130).astype(np.float32),
        "conv.scale": np.float32(1.5).reshape(()),
        "emb.\u00e9t\u00e9": rng.normal(0, 1, (4, 5)).astype(np.float16),
        "idx": np.arange(300, dtype=np.int64),
        "empty": np.zeros((0, 3), np.float32),
        "z" * 200: np.ones(3, np.float32),  # a name of two varint bytes
    }
    return [nncodec.encode(tensors, target_snr=30),              # steps off the qp grid
            nncodec.encode(tensors, qp=-20),                     # one-byte steps
            nncodec.encode(tensors, qp=-20, dq=True),            # dq stages
            nncodec.encode(tensors, qp=-20, prune=0.5),          # two-stage chains
            nncodec.encode(tensors, method="kmeans", k=4)]       # generic stages


def _body(data: bytes) -> tuple[bytes, int]:
    r = C.Reader(data)
    assert r.compact
    return data[C.PREAMBLE_SIZE:r.header_size], r.header_size


def _parse(body: bytes, start: int, quick: bool):
    try:
        return C._parse_body(body, start, C.DEFAULT_LIMITS, True, quick=quick)
    except nncodec.errors.NNCodecError as exc:
        return type(exc), str(exc)


@pytest.mark.parametrize("i", range(5))
def test_quick_equals_careful_on_valid_indexes(i):
    body, start = _body(_files()[i])
    quick = C._parse_body(body, start, C.DEFAULT_LIMITS, True, quick=True)
    careful = C._parse_body(body, start, C.DEFAULT_LIMITS, True, quick=False)
    assert quick == careful
    assert list(quick[1]) == list(careful[1])
    for a, b in zip(quick[1].values(), careful[1].values()):
        assert type(a) is C.RecordInfo and vars(a) == vars(b)


def test_quick_reading_is_taken_on_plain_files(monkeypatch):
    # the quick reading does not hand over on what the encoder writes for uniform and dq
    # chains (else it saves nothing); chains with generic stages (prune, k-means) it does
    def refuse(*args, **kwargs):
        raise AssertionError("careful reading used")

    for data in _files()[:3]:
        body, start = _body(data)
        monkeypatch.setattr(C._Cursor, "chain_compact", refuse)
        C._parse_body(body, start, C.DEFAULT_LIMITS, True)
        monkeypatch.undo()


def test_quick_and_careful_agree_on_damaged_indexes():
    rnd = random.Random(3)
    checked = 0
    for data in _files():
        body, start = _body(data)
        cases = [body[:n] for n in range(len(body))]                     # every truncation
        cases += [bytes(b ^ (1 << k) if j == p else b for j, b in enumerate(body))
                  for p in range(len(body)) for k in range(8) if rnd.random() < 0.25]
        cases += [body[:p] + bytes([rnd.randrange(256)]) + body[p + 1:]
                  for p in (rnd.randrange(len(body)) for _ in range(300))]
        for case in cases:
            assert _parse(case, start, True) == _parse(case, start, False)
            checked += 1
    assert checked > 3000
