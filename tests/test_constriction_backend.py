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


def _one_call_encode(x):
    """The payload as version 1 defines it, coded in a single call on the whole tensor."""
    import constriction

    from nncodec.varint import encode_uvarint

    values, inverse, counts = np.unique(x.reshape(-1), return_inverse=True, return_counts=True)
    out = bytearray((1,)) + encode_uvarint(len(values))
    prev = None
    for v in values.tolist():
        out += encode_uvarint(((v << 1) if v >= 0 else ((-v) << 1) - 1) if prev is None else v - prev)
        prev = v
    for c in counts.tolist():
        out += encode_uvarint(c)
    if len(values) > 1:
        enc = constriction.stream.queue.RangeEncoder()
        model = constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)
        enc.encode(inverse.reshape(-1).astype(np.int32), model)
        out += enc.get_compressed().astype("<u4").tobytes()
    return bytes(out)


@pytest.mark.parametrize("case", ["narrow", "wide", "extremes", "chunk-edge"])
def test_blockwise_coding_gives_the_one_call_bytes(case):
    from nncodec.entropy import constriction_backend as cb

    rng = np.random.default_rng(7)
    n = 2 * cb.CHUNK + 3
    x = {"narrow": lambda: np.round(rng.laplace(0, 4, n)),
         "wide": lambda: np.round(rng.laplace(0, 1e6, n)),  # wider than the counting table
         "extremes": lambda: np.resize([-(2**31), 2**31 - 1, 0, 9], n),
         "chunk-edge": lambda: rng.integers(-2, 3, cb.CHUNK)}[case]().astype(np.int32)
    data = backend.encode(x)
    assert data == _one_call_encode(x)
    np.testing.assert_array_equal(backend.decode(data, x.size), x)
    np.testing.assert_array_equal(backend.decode(memoryview(bytearray(data)), x.size), x)


def test_encode_and_decode_memory_stays_near_the_tensor_size():
    import tracemalloc

    rng = np.random.default_rng(3)
    x = np.round(rng.laplace(0, 5, 1_000_000)).astype(np.int32)  # 4 MB of levels
    backend.decode(backend.encode(x[:1000]), 1000)  # imports outside the measurement
    tracemalloc.start()
    try:
        data = backend.encode(x)
        enc_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        y = backend.decode(data, x.size)
        dec_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(y, x)
    # before blockwise coding: about 8x and 5x the levels' 4 MB (int64 inverse, sort buffers)
    assert enc_peak < 0.5 * x.nbytes + 2 * len(data), enc_peak
    assert dec_peak < 1.5 * x.nbytes + 2 * len(data), dec_peak
