"""The cabac-layout backend (id 3): levels as Dense / CSR / WS matrices."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import nncodec
from nncodec.entropy import get_backend, layout
from nncodec.errors import FormatError


@st.composite
def matrices(draw):
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 12))
    m = draw(hnp.arrays(np.int32, (rows, cols), elements=st.one_of(
        st.just(0), st.just(0), st.integers(-5, 5), st.integers(-(2**31), 2**31 - 1))))
    return m


@given(matrices(), st.sampled_from(["dense", "csr", "ws", "auto"]))
def test_every_layout_roundtrips(m, kind):
    data = layout.encode(m.reshape(-1), row_length=m.shape[1], layout=kind)
    np.testing.assert_array_equal(layout.decode(data, m.size), m.reshape(-1))


def test_auto_picks_the_smallest_layout():
    rng = np.random.default_rng(0)
    m = np.round(rng.laplace(0, 3, (256, 512))).astype(np.int32)
    m[rng.random(m.shape) < 0.97] = 0  # 97% pruned
    sizes = {k: len(layout.encode(m, row_length=512, layout=k)) for k in ("dense", "csr", "ws")}
    assert len(layout.encode(m, row_length=512, layout="auto")) == min(sizes.values())
    # Measured, not assumed: CABAC's zero contexts make the dense stream as small as
    # the sparse ones on unstructured sparsity; the sparse layouts stay within 20%.
    assert max(sizes.values()) < 1.2 * min(sizes.values())


@given(st.binary(max_size=200), st.integers(0, 300))
def test_bad_bytes_raise_format_errors(data, count):
    try:
        out = layout.decode(data, count)
    except FormatError:
        return
    assert out.shape == (count,)


def test_reader_hands_back_layout_objects():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((32, 64)) * 0.05).astype(np.float32)
    w[np.abs(w) < 0.06] = 0
    for backend, stored in (("cabac-ws", "ws"), ("cabac-csr", "csr"), ("cabac", "dense")):
        data = nncodec.encode({"w": w}, target_snr=30, backend=backend)
        dense = nncodec.decode(data)["w"]
        with nncodec.open(data) as f:
            obj = f.get_layout("w")
            assert obj.kind == stored
            np.testing.assert_allclose(obj.to_dense().dense_values(), dense, rtol=0, atol=1e-7)
            ws = f.get_layout("w", "ws")
            assert ws.kind == "ws" and ws.nnz == int(np.count_nonzero(dense))


def test_layout_of_a_pruned_tensor():
    # a leading prune stage is informative only: the layout comes from the stage after it
    w = (np.random.default_rng(2).standard_normal((16, 40)) * 0.05).astype(np.float32)
    data = nncodec.encode({"w": w}, target_snr=30, prune=0.7, backend="cabac-auto")
    dense = nncodec.decode(data)["w"]
    with nncodec.open(data) as f:
        obj = f.get_layout("w", "csr")
        assert obj.nnz == int(np.count_nonzero(dense)) <= 0.3 * w.size + 1
        np.testing.assert_allclose(obj.to_dense().dense_values(), dense, rtol=0, atol=1e-7)


def test_backend_names_select_the_layout():
    m = np.arange(12, dtype=np.int32).reshape(3, 4) % 3
    for name, code in (("cabac-dense", 0), ("cabac-csr", 1), ("cabac-ws", 2)):
        assert get_backend(name).encode(m, row_length=4)[1] == code
    with pytest.raises(ValueError):
        layout.encode(m, row_length=4, layout="coo")
