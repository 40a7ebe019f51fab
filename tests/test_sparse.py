"""Sparse layouts (Dense / CSR / WS), their products, storage and energy accounting, the torch
wrapper on the digits CNN, and the ``analyze`` command."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from nncodec.sparse import CSR, WS, Dense, Dequant, field_bits, matmat, matvec, quantize_matrix
from nncodec.sparse import kernels
from nncodec.sparse.energy import LayerCounts, layer_report, model_report
from nncodec.sparse.cli import analyze

# the seed's example (001, Samek): 5 x 10 levels
SEED = np.array([[0, 4, 0, 0, 0, 4, 0, 4, 0, 0],
                 [0, 2, 4, 0, 0, 4, 2, 0, 2, 0],
                 [2, 2, 0, 0, 0, 0, 0, 2, 0, 0],
                 [0, 0, 4, 4, 0, 0, 0, 4, 0, 4],
                 [4, 0, 0, 0, 2, 0, 0, 4, 2, 2]])
SEED_CSR_COLS = [1, 5, 7, 1, 2, 5, 6, 8, 0, 1, 7, 2, 3, 7, 9, 0, 4, 7, 8, 9]
SEED_WS_COLS = [1, 5, 7, 2, 5, 1, 6, 8, 0, 1, 7, 2, 3, 7, 9, 0, 7, 4, 8, 9]
# The seed's W list reads [4,4,4,2,4,4,2,2,2,2,4,...]: its 11th entry, 4, contradicts its own
# matrix (row 3 is 2 2 0 0 0 0 0 2 0 0, so the 11th non-zero is a 2). We follow the matrix.
SEED_W = [4, 4, 4, 2, 4, 4, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 2, 4, 2, 2]

levels_2d = hnp.arrays(np.int32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
                       elements=st.sampled_from([0, 0, 0, 0, 1, -1, 2, -3, 7, 2**31 - 1, -(2**31)]))


def test_seed_example_layouts():
    dq = Dequant(step=0.25)
    csr = CSR.from_dense(SEED, dq)
    ws = WS.from_dense(SEED, dq)
    assert csr.col_idx.tolist() == SEED_CSR_COLS
    assert csr.values.tolist() == SEED_W
    assert csr.row_ptr.tolist() == [0, 3, 8, 11, 15, 20]
    assert ws.col_idx.tolist() == SEED_WS_COLS          # the seed's WS colI, exactly
    assert ws.group_level.tolist() == [4, 4, 2, 2, 4, 4, 2]
    assert ws.group_ptr.tolist() == [0, 3, 5, 8, 11, 15, 17, 20]
    assert ws.row_ptr.tolist() == [0, 1, 3, 4, 5, 7]


def test_seed_example_storage_by_hand():
    dq = Dequant(step=1.0)
    # R=5, C=10, nnz=20, G=7, longest group 4, levels {0,2,4} (3) / non-zero {2,4} (2)
    # b_v(dense)=2, b_v=1, b_c=ceil(log2 10)=4, b_p=ceil(log2 21)=5, b_n=ceil(log2 5)=3
    d = Dense(SEED, dq).storage()
    assert d.parts == {"values": 50 * 2, "table": 3 * 32} and d.total == 196
    c = CSR.from_dense(SEED, dq).storage()
    assert c.parts == {"values": 20 * 1, "col_idx": 20 * 4, "row_ptr": 6 * 5, "table": 2 * 32}
    assert c.total == 194
    w = WS.from_dense(SEED, dq).storage()
    assert w.parts == {"col_idx": 80, "row_ptr": 30, "group_values": 7 * 1, "group_len": 7 * 3,
                       "table": 64}
    assert w.total == 202  # with 1-bit values, groups of 20/7 = 2.9 < 1 + b_n/b_v = 4 do not pay
    # with 4-bit values (16 distinct levels elsewhere) the same grouping pays:
    counts = LayerCounts("seed", 5, 10, 20, 7, 4, 17, 16)
    st_ = counts.storage(table_bits=0)
    assert st_["csr"].total == 20 * (4 + 4) + 30 and st_["ws"].total == 80 + 30 + 7 * (4 + 3)
    assert st_["ws"].total < st_["csr"].total


def test_field_bits():
    assert [field_bits(n) for n in (0, 1, 2, 3, 4, 5, 8, 9, 1024, 1025)] == [1, 1, 1, 2, 2, 3, 3, 4, 10, 11]


@given(levels_2d)
def test_conversions_exact(lv):
    dq = Dequant(step=1.0)
    dense = Dense(lv, dq)
    csr, ws = dense.to_csr(), dense.to_ws()
    csr.validate()
    ws.validate()
    assert np.array_equal(csr.to_dense().levels, lv)
    assert np.array_equal(ws.to_dense().levels, lv)
    assert ws.to_csr() == csr and csr.to_ws() == ws
    assert csr.nnz == ws.nnz == np.count_nonzero(lv)
    # groups = distinct non-zero levels per row
    assert ws.groups == sum(np.unique(r[r != 0]).size for r in lv)


def test_codebook_and_validation():
    cb = Dequant(codebook=[0.0, -0.5, 0.25, 1.0])
    lv = np.array([[0, 1, 3], [2, 2, 0]])
    ws = WS.from_dense(lv, cb)
    assert np.array_equal(ws.dense_values(), np.array([[0, -0.5, 1], [0.25, 0.25, 0]], np.float32))
    with pytest.raises(ValueError):
        WS.from_dense(np.array([[4]]), cb)          # beyond the codebook
    with pytest.raises(ValueError):
        Dequant(codebook=[1.0, 2.0])                 # codebook[0] must be 0
    with pytest.raises(ValueError):
        Dequant(step=0.0)
    with pytest.raises(ValueError):
        CSR((1, 3), [1, 2], [2, 1], [0, 2], Dequant(step=1.0))  # columns not ascending
    with pytest.raises(ValueError):
        WS((1, 3), [1, 2], [0, 1, 2], [0, 1], [0, 2], Dequant(step=1.0))  # levels ascending


@given(hnp.arrays(np.int32, st.tuples(st.integers(0, 20), st.integers(1, 40)),
                  elements=st.integers(-4, 4)),
       st.integers(1, 9), st.data())
def test_products_equal_dense(lv, m, data):
    lv = np.where(np.abs(lv) > 2, 0, lv)  # sparse-ish, few distinct values
    dq = Dequant(step=0.37)
    W = dq.values(lv)
    C = lv.shape[1]
    x = data.draw(hnp.arrays(np.float32, C, elements=st.floats(-4, 4, width=32)))
    X = data.draw(hnp.arrays(np.float32, (C, m), elements=st.floats(-4, 4, width=32)))
    ref_v, ref_m = W.astype(np.float64) @ x, W.astype(np.float64) @ X
    for lay in (Dense(lv, dq), CSR.from_dense(lv, dq), WS.from_dense(lv, dq)):
        np.testing.assert_allclose(matvec(lay, x), ref_v, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(matmat(lay, X), ref_m, rtol=1e-5, atol=1e-4)


def test_numpy_fallback_equals_compiled(monkeypatch):
    rng = np.random.default_rng(1)
    lv = rng.integers(-3, 4, (30, 50)) * (rng.random((30, 50)) < 0.3)
    dq = Dequant(step=0.1)
    X = rng.standard_normal((50, 5)).astype(np.float32)
    lays = [CSR.from_dense(lv, dq), WS.from_dense(lv, dq)]
    compiled = [matmat(l, X) for l in lays]
    monkeypatch.setattr(kernels, "_ext", None)
    for l, y in zip(lays, compiled):
        np.testing.assert_allclose(matmat(l, X), y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(matvec(l, X[:, 0]), y[:, 0], rtol=1e-5, atol=1e-5)


def test_shape_errors():
    ws = WS.from_dense(SEED, Dequant(step=1.0))
    with pytest.raises(ValueError):
        matvec(ws, np.zeros(9, np.float32))
    with pytest.raises(ValueError):
        matmat(ws, np.zeros((9, 2), np.float32))


def test_ws_smaller_than_csr_with_few_distinct_values_per_row():
    rng = np.random.default_rng(0)
    lv = rng.choice(np.array([-2, -1, 1, 2]), (64, 512)) * (rng.random((64, 512)) < 0.2)
    dq = Dequant(step=0.01)
    csr, ws = CSR.from_dense(lv, dq).storage(), WS.from_dense(lv, dq).storage()
    assert ws.total < csr.total
    nnz, G = int(np.count_nonzero(lv)), 64 * 4
    assert csr.total - ws.total == nnz * 2 - G * (2 + ws.widths["group_len"])  # values saved, groups paid
    # and many distinct values per row: CSR wins
    lv2 = rng.integers(-200, 201, (64, 512)) * (rng.random((64, 512)) < 0.05)
    assert WS.from_dense(lv2, dq).storage().total > CSR.from_dense(lv2, dq).storage().total


def test_operation_counts_and_energy():
    c = LayerCounts.from_layout("seed", WS.from_dense(SEED, Dequant(step=1.0)), positions=3)
    rep = layer_report(c, bits=32)
    assert rep["dense"]["ops"] == {"mult": 150, "add": 150, "total": 300}
    assert rep["csr"]["ops"] == {"mult": 60, "add": 60, "total": 120}
    assert rep["ws"]["ops"] == {"mult": 21, "add": 60, "total": 81}
    assert rep["ws"]["energy_pj"]["arith"] == pytest.approx(21 * 3.7 + 60 * 0.9)
    # CSR SRAM reads per position: 20 values + 20 indices + 20 activations + 6 pointers
    assert rep["csr"]["sram"]["reads"] == 3 * 66
    assert rep["ws"]["sram"]["reads"] == 3 * (40 + 14 + 6)
    assert rep["csr"]["energy_pj"]["dram"] == pytest.approx(194 * 20.0)
    # the seed's dense VGG-16 figure: 15.47 G MACs at 32-bit float -> 71 mJ (arithmetic only)
    vgg_like = LayerCounts("x", 1, 15_470_000_000, 15_470_000_000, 1, 15_470_000_000, 2, 1)
    e = layer_report(vgg_like, bits=32)["dense"]["energy_pj"]["arith"]
    assert e / 1e9 == pytest.approx(71.2, abs=0.1)
    tot = model_report([c, c], bits=8)["total"]
    assert tot["ws"]["ops"]["mult"] == 42 and tot["ws"]["storage_bits"] == 404


@pytest.fixture(scope="module")
def digits():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from nncodec.tasks.digits import build_model, get_state_dict, load_data
    sd = get_state_dict()
    _, _, X, y = load_data()
    return torch, sd, build_model, X, y


@pytest.mark.parametrize("kw", [dict(target_snr=30, prune=0.5), dict(codebook_size=8, prune=0.5)])
def test_torch_wrapper_equals_dense_on_digits(digits, kw):
    from nncodec.sparse.torch_modules import SparseConv2d, SparseLinear, sparsify
    torch, sd, build_model, X, y = digits
    q = {k: quantize_matrix(v.numpy(), **kw) for k, v in sd.items() if v.ndim >= 2}
    dense = build_model()
    dense.load_state_dict({k: (torch.from_numpy(q[k].weights()) if k in q else v) for k, v in sd.items()})
    dense.eval()
    xs = torch.from_numpy(X)
    with torch.no_grad():
        ref = dense(xs)
        for layout in ("ws", "csr"):
            model = sparsify(dense, q, layout=layout)
            kinds = [type(m) for m in model.modules()]
            assert kinds.count(SparseConv2d) == 2 and kinds.count(SparseLinear) == 2
            out = model(xs)
            np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
            assert (out.argmax(1) == ref.argmax(1)).float().mean().item() == 1.0
    acc = (ref.argmax(1).numpy() == y).mean()
    assert acc > 0.9  # the model still works at this setting (50% pruned, no retraining)


def test_analyze_command(digits, tmp_path):
    runner = CliRunner()
    r = runner.invoke(analyze, ["builtin:digits", "--prune", "0.9", "--json", "--bits", "16"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["bits"] == 16 and len(rep["layers"]) == 4 and rep["weights"] == 13584
    assert rep["total"]["ws"]["ops"]["mult"] <= rep["total"]["csr"]["ops"]["mult"]
    # a .nnc file: levels as stored
    import nncodec
    torch, sd, *_ = digits
    path = tmp_path / "d.nnc"
    nncodec.save_file(sd, str(path), target_snr=25)
    r = runner.invoke(analyze, [str(path)])
    assert r.exit_code == 0, r.output
    assert "total" in r.output and "3.weight" in r.output
    nncodec.save_file(sd, str(tmp_path / "p.nnc"), target_snr=25, prune=0.8)
    r = runner.invoke(analyze, [str(tmp_path / "p.nnc"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert len(rep["layers"]) == 4 and rep["nnz"] <= 0.21 * rep["weights"]
    r = runner.invoke(analyze, [str(path), "--prune", "0.5"])
    assert r.exit_code == 1
    r = runner.invoke(analyze, [str(tmp_path / "missing.nnc")])
    assert r.exit_code == 1
    (tmp_path / "bad.nnc").write_bytes(b"\x89NNC\r\n\x1a\nxxxxxxxxxxxxxxx")
    r = runner.invoke(analyze, [str(tmp_path / "bad.nnc")])
    assert r.exit_code == 3
    assert "Examples" in runner.invoke(analyze, ["--help"]).output
