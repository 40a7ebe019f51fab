"""Writes the .nnc test vectors of this folder. Run from the repository root:

    python formats/testvectors/make_vectors.py

Each vector NAME has NAME.nnc (the bytes), NAME.expected.npz (the arrays a
decoder must return; bfloat16 as uint16 bits) and NAME.info.json (what
`nncodec info --json` prints). The inputs are generated here from fixed seeds.
tests/test_testvectors.py checks that encoding the inputs gives these bytes
exactly, and that decoding them gives these arrays. Regenerate only on purpose:
when the format changes (bump its version and say so in formats/nnc-v1.md), or
when an encoder decision changes (say why in the commit). Old vectors must keep
decoding either way: legacy/ keeps the vectors as format 1.0 / 1.1 wrote them (legacy
index, before the compact index of 1.2), with the arrays they decode to; tests check that
they still decode and re-encode byte for byte with ``pack(..., compact=False)``. This script
does not touch legacy/.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    from nncodec import bf16

    return bf16.from_float32(x.astype(np.float32))


def vectors():
    """name -> (tensors, dtypes, settings kwargs, metadata)"""
    rng = np.random.default_rng(20261122)
    small = {
        "conv.weight": (rng.standard_normal((8, 4, 3, 3)) * 0.1).astype(np.float32),
        "conv.bias": (rng.standard_normal(8) * 0.01).astype(np.float32),
        "fc.weight": rng.laplace(0, 0.05, (10, 32)).astype(np.float16),
        "emb.weight": _bf16_bits(rng.standard_normal((6, 5))),
        "bn.num_batches_tracked": np.array(321, np.int64),
        "mask": rng.random(12) < 0.3,
    }
    dtypes = {"emb.weight": "bfloat16"}
    edge = {
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(0.5, np.float32),
        "nonfinite": np.array([[1.0, np.nan], [np.inf, -np.inf]], np.float32),
        "int32.extremes": np.array([-(2**31), 2**31 - 1, 0], np.int32),
        "int64.wide": np.array([2**40, -3], np.int64),
        "zeros": np.zeros((3, 3), np.float64),
        "unicode.名前": np.ones((2, 2), np.float32),
    }
    return {
        "uniform_cabac": (small, dtypes, {"target_snr": 30}, {"vector": "uniform_cabac"}),
        "uniform_qp_constriction": (small, dtypes, {"qp": -24, "backend": "constriction"}, {}),
        "lossless": (small, dtypes, {"lossless": True}, {}),
        "edge_cases": (edge, {}, {"step": 0.125}, {"note": "zero-size, scalar, NaN/inf, wide ints"}),
        "empty_model": ({}, {}, {}, {"only": "metadata"}),
        # dependent quantization with the rate term (format 1.1): float32, float16 and bfloat16
        # weights, the step searched for 30 dB with the trellis in the loop
        "dq_rdoq": (small, dtypes, {"target_snr": 30, "dq": True, "rdoq": True}, {"vector": "dq_rdoq"}),
    }


def info_json(data: bytes) -> dict:
    from click.testing import CliRunner

    import nncodec.cli

    path = os.path.join(HERE, ".tmp-info.nnc")
    with open(path, "wb") as f:
        f.write(data)
    try:
        r = CliRunner().invoke(nncodec.cli.main, ["info", "--json", path])
    finally:
        os.remove(path)
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def main() -> int:
    import nncodec

    for name, (tensors, dtypes, settings, meta) in vectors().items():
        data = nncodec.encode(tensors, dtypes=dtypes, metadata=meta, **settings)
        with open(os.path.join(HERE, f"{name}.nnc"), "wb") as f:
            f.write(data)
        np.savez(os.path.join(HERE, f"{name}.expected.npz"), **nncodec.decode(data))
        with open(os.path.join(HERE, f"{name}.info.json"), "w") as f:
            json.dump(info_json(data), f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
