import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from nncodec.entropy import available_backends, backend_by_id, get_backend
from nncodec.errors import FormatError

backend = get_backend("constriction")

level = st.one_of(st.integers(-20, 20), st.integers(-(2**31), 2**31 - 1))


@given(hnp.arrays(np.int32, st.integers(0, 400), elements=level))
def test_roundtrip(x):
    data = backend.encode(x)
    np.testing.assert_array_equal(backend.decode(data, x.size), x)


def test_deterministic_and_compact_on_laplacian():
    rng = np.random.default_rng(0)
    x = np.round(rng.laplace(0, 5, 100_000)).astype(np.int32)
    a, b = backend.encode(x), backend.encode(x.copy())
    assert a == b
    _, counts = np.unique(x, return_counts=True)
    h0 = -(counts * np.log2(counts / counts.sum())).sum()
    assert len(a) * 8 < h0 * 1.01 + 2000


@given(st.binary(max_size=300), st.integers(0, 500))
def test_bad_bytes_raise_format_error(data, count):
    try:
        out = backend.decode(data, count)
    except FormatError:
        return
    assert out.shape == (count,)


def test_count_mismatch_is_detected():
    x = np.arange(100, dtype=np.int32) % 7
    data = backend.encode(x)
    with pytest.raises(FormatError):
        backend.decode(data, 99)
    with pytest.raises(FormatError):
        backend.decode(data[:-4], 100)


def test_registry():
    assert available_backends() == ["cabac", "cabac-auto", "cabac-csr", "cabac-dense", "cabac-ws",
                                    "constriction"]
    assert backend_by_id(1).name == "cabac" and backend_by_id(2).name == "constriction"
    assert backend_by_id(3).decode is get_backend("cabac-ws").decode
    with pytest.raises(ValueError, match="choose one of"):
        get_backend("zip")
