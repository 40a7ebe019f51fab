"""The test vectors in formats/testvectors, byte for byte."""
import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import nncodec
from nncodec.cli import main

HERE = os.path.join(os.path.dirname(__file__), "..", "formats", "testvectors")
sys.path.insert(0, HERE)
import make_vectors  # noqa: E402

VECTORS = make_vectors.vectors()


def _assert_same_arrays(got: dict, expected_npz: str) -> None:
    """``got`` holds exactly the arrays of ``expected_npz``: names, dtypes, shapes and values."""
    with np.load(expected_npz) as expected:
        assert sorted(got) == sorted(expected.files)
        for k in expected.files:
            assert got[k].dtype == expected[k].dtype and got[k].shape == expected[k].shape
            np.testing.assert_array_equal(got[k], expected[k])


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_encoding_gives_the_stored_bytes(name):
    tensors, dtypes, settings, meta = VECTORS[name]
    data = nncodec.encode(tensors, dtypes=dtypes, metadata=meta, **settings)
    with open(os.path.join(HERE, f"{name}.nnc"), "rb") as f:
        assert data == f.read(), f"{name}: the bitstream changed; if on purpose, bump the format version"


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_decoding_gives_the_stored_arrays(name):
    path = os.path.join(HERE, f"{name}.nnc")
    got = nncodec.load_file(path)
    _assert_same_arrays(got, os.path.join(HERE, f"{name}.expected.npz"))
    # and, for lossless vectors, the inputs themselves
    tensors, _, settings, _ = VECTORS[name]
    if settings.get("lossless"):
        for k, v in tensors.items():
            np.testing.assert_array_equal(got[k], v)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_info_json_is_stable(name):
    r = CliRunner().invoke(main, ["info", "--json", os.path.join(HERE, f"{name}.nnc")])
    assert r.exit_code == 0, r.output
    with open(os.path.join(HERE, f"{name}.info.json")) as f:
        assert json.loads(r.output) == json.load(f)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vectors_verify(name):
    r = CliRunner().invoke(main, ["verify", os.path.join(HERE, f"{name}.nnc")])
    assert r.exit_code == 0, r.output


LEGACY = os.path.join(HERE, "legacy")
LEGACY_NAMES = sorted(f[:-4] for f in os.listdir(LEGACY) if f.endswith(".nnc"))


def test_legacy_vectors_are_there():
    assert len(LEGACY_NAMES) >= 6


@pytest.mark.parametrize("name", LEGACY_NAMES)
def test_legacy_vectors_still_decode(name):
    """Files of formats 1.0 / 1.1 (the legacy index, written before 1.2): read, decoded to the
    arrays they gave then, and re-written byte for byte with compact=False."""
    from nncodec.container import Reader, pack

    path = os.path.join(LEGACY, f"{name}.nnc")
    with open(path, "rb") as f:
        blob = f.read()
    with Reader(blob) as r:
        assert r.version in ((1, 0), (1, 1)) and not r.compact
        assert r.version == ((1, 1) if name == "dq_rdoq" else (1, 0))
        records = [r.read_record(n) for n in r.keys()]
        meta = r.metadata()
    assert pack(records, meta, compact=False) == blob
    got = nncodec.load_file(path)
    _assert_same_arrays(got, os.path.join(LEGACY, f"{name}.expected.npz"))
    # the same records in the compact index: smaller header, same tensors
    compact = pack(records, meta)
    assert len(compact) < len(blob) or not records
    again = nncodec.decode(compact)
    for k in got:
        np.testing.assert_array_equal(again[k], got[k])
    r = CliRunner().invoke(main, ["verify", path])
    assert r.exit_code == 0, r.output


def test_current_vectors_use_the_compact_index():
    from nncodec.container import Reader

    for name in VECTORS:
        with Reader(os.path.join(HERE, f"{name}.nnc")) as r:
            assert r.version == (1, 2) and r.compact
