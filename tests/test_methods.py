"""Compression methods: pruning and the non-uniform quantizers (fixed point, k-means,
product, residual, binary, ternary) as recorded coding stages."""
import math

import numpy as np
import pytest
from click.testing import CliRunner

import nncodec
from nncodec import prune as P
from nncodec.container import TensorRecord, pack
from nncodec.entropy import get_backend
from nncodec.errors import FormatError
from nncodec.pipeline import Settings
from nncodec.quantize import fixed
from nncodec.quantize.kmeans import kmeans_1d


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32),
            "conv.bias": rng.normal(0, 0.01, 16).astype(np.float32),
            "fc.weight": rng.laplace(0, 0.05, (32, 70)).astype(np.float32),
            "fc.half": rng.normal(0, 0.05, (10, 12)).astype(np.float16)}


def _chains(data):
    with nncodec.open(data) as f:
        return {t["name"]: t["chain"] for t in f.info()["tensors"]}


METHODS = [
    dict(method="fixed", bits=8),
    dict(method="fixed", il=1, fl=6, rounding="stochastic", seed=3),
    dict(method="kmeans", k=16),
    dict(method="kmeans", k=8, kmeans_init="kmeans++", seed=1),
    dict(method="pq", k=8, pq_dim=4),
    dict(method="rq", k=8, pq_dim=2, rq_stages=3),
    dict(method="binary"),
    dict(method="ternary"),
    dict(prune=0.5),
    dict(method="kmeans", k=16, prune=0.5, prune_scope="global"),
    dict(method="pq", k=8, prune=0.3),
    dict(method="fixed", bits=6, prune=0.25, prune_structured=True),
]


@pytest.mark.parametrize("kw", METHODS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("backend", ["cabac", "constriction"])
def test_round_trip_records_the_chain(kw, backend):
    model = _model()
    data = nncodec.encode(model, backend=backend, **kw)
    chains = _chains(data)
    method = kw.get("method", "uniform")
    for name, w in model.items():
        chain = chains[name]
        if w.ndim < 2:
            assert [s["id"] for s in chain] == ["uniform"]
            continue
        assert chain[-1]["id"] == method
        assert [s["id"] for s in chain[:-1]] == (["prune"] if "prune" in kw else [])
    out = nncodec.decode(data)  # no settings
    for name, w in model.items():
        assert out[name].dtype == w.dtype and out[name].shape == w.shape
        rel = np.linalg.norm(out[name].astype(np.float64) - w) / np.linalg.norm(w.astype(np.float64))
        assert rel < (0.9 if method in ("binary", "ternary") or "prune" in kw else 0.6), (name, rel)
    assert nncodec.encode(model, backend=backend, **kw) == data  # deterministic
    with nncodec.open(data) as f:
        assert f.verify() == []
        assert f.metadata()["nncodec.settings"] == Settings(backend=backend, **kw).describe()


def test_fixed_point_rounding_and_saturation_by_hand():
    # <IL=2, FL=2>: eps = 0.25, range [-2, 1.75], levels -8..7
    w = np.array([0.1, 0.125, 0.13, -0.125, -0.13, 1.9, -3.0, 1.74, -2.0, 0.375])
    levels = fixed.quantize(w, 2, 2)
    assert levels.tolist() == [0, 1, 1, 0, -1, 7, -8, 7, -8, 2]
    assert fixed.dequantize(levels, 2).tolist() == [0, .25, .25, 0, -.25, 1.75, -2, 1.75, -2, .5]
    # negative FL: eps = 4, <IL=5, FL=-2>, levels -4..3
    assert fixed.quantize(np.array([5.9, 6.0, -100.0, 100.0]), 5, -2).tolist() == [1, 2, -4, 3]
    with pytest.raises(ValueError):
        fixed.quantize(w, 20, 20)  # word length 40 > 32
    # through the container: decoded values are exactly level * 2^-FL
    data = nncodec.encode({"w": w.reshape(2, 5)}, method="fixed", il=2, fl=2)
    assert _chains(data)["w"] == [{"id": "fixed", "il": 2, "fl": 2, "rounding": "nearest", "seed": 0}]
    assert nncodec.decode(data)["w"].reshape(-1).tolist() == [0, .25, .25, 0, -.25, 1.75, -2, 1.75, -2, .5]


def test_fixed_point_bits_choose_integer_bits_per_tensor():
    assert fixed.integer_bits_for(np.array([0.3, -0.7])) == 1       # 0.7 < 2^0
    assert fixed.integer_bits_for(np.array([1.0])) == 2             # 1.0 < 2^1
    assert fixed.integer_bits_for(np.array([-3.9, 0.0])) == 3
    w = np.random.default_rng(0).normal(0, 0.2, (20, 20))
    chain = _chains(nncodec.encode({"w": w}, method="fixed", bits=8))["w"][0]
    assert chain["il"] + chain["fl"] == 8 and np.abs(w).max() < 2.0 ** (chain["il"] - 1)


def test_stochastic_rounding_is_unbiased_and_deterministic():
    w = np.full(200_000, 0.3)
    a = fixed.quantize(w, 4, 0, "stochastic", seed=7, name="t")
    assert set(np.unique(a).tolist()) == {0, 1}
    assert abs(a.mean() - 0.3) < 0.005
    assert np.array_equal(a, fixed.quantize(w, 4, 0, "stochastic", seed=7, name="t"))
    assert not np.array_equal(a, fixed.quantize(w, 4, 0, "stochastic", seed=8, name="t"))
    x = np.random.default_rng(1).uniform(-1, 1, 100_000)
    q = fixed.dequantize(fixed.quantize(x, 2, 3, "stochastic", seed=1), 3)
    assert abs(np.mean(q - x)) < 1e-3 and np.max(np.abs(q - x)) < 2 ** -3


def test_kmeans_is_deterministic_and_sensible():
    x = np.random.default_rng(0).normal(0, 1, 5000)
    for init in ("linear", "kmeans++"):
        c1 = kmeans_1d(x, 8, init=init, seed=5)
        assert np.array_equal(c1, kmeans_1d(x, 8, init=init, seed=5))
        assert c1.size == 8 and np.all(np.diff(c1) > 0)
    # Lloyd's fixed point: every centre is the mean of the values nearest to it
    c = kmeans_1d(x, 4, iterations=200)
    idx = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)
    assert np.allclose([x[idx == i].mean() for i in range(4)], c)
    # fewer distinct values than k: exact
    assert kmeans_1d(np.array([1.0, 2.0, 2.0]), 8).tolist() == [1.0, 2.0]
    assert 0.0 in kmeans_1d(x, 8, zero=True).tolist()


def test_kmeans_levels_are_signed_around_the_zero_centre():
    w = np.random.default_rng(2).laplace(0, 0.1, (40, 50))
    data = nncodec.encode({"w": w}, method="kmeans", k=9)
    book = _chains(data)["w"][0]["codebook"]
    assert book == sorted(book) and len(book) == 9
    out = nncodec.decode(data)["w"]
    # each weight got its nearest centre
    nearest = np.array(book)[np.argmin(np.abs(w.reshape(-1, 1) - np.array(book)), axis=1)]
    assert np.array_equal(out.reshape(-1), nearest)


def test_binary_and_ternary_values():
    w = np.random.default_rng(3).normal(0, 0.1, (30, 30))
    out = nncodec.decode(nncodec.encode({"w": w}, method="binary"))["w"]
    a = np.abs(w).mean()
    assert np.allclose(out, np.where(w >= 0, a, -a))
    data = nncodec.encode({"w": w}, method="ternary", ternary_threshold=0.7)
    st = _chains(data)["w"][0]
    t = 0.7 * np.abs(w).mean()
    assert math.isclose(st["threshold"], t)
    out = nncodec.decode(data)["w"]
    assert np.allclose(out, np.where(np.abs(w) > t, np.sign(w) * np.abs(w[np.abs(w) > t]).mean(), 0))
    assert len(data) < len(nncodec.encode({"w": w}, method="fixed", bits=4))


def test_pq_and_rq_error_falls_with_more_centres_and_stages():
    w = np.random.default_rng(4).normal(0, 1, (256, 16))

    def err(**kw):
        return float(np.mean((nncodec.decode(nncodec.encode({"w": w}, **kw))["w"] - w) ** 2))

    assert err(method="pq", k=16, pq_dim=4) < err(method="pq", k=4, pq_dim=4)
    e1, e3 = err(method="rq", k=8, pq_dim=2, rq_stages=1), err(method="rq", k=8, pq_dim=2, rq_stages=3)
    assert e3 < 0.6 * e1
    # padding: 10 columns in sub-vectors of 4
    v = np.random.default_rng(5).normal(0, 1, (7, 10))
    out = nncodec.decode(nncodec.encode({"v": v}, method="pq", k=64, pq_dim=4))["v"]
    assert np.allclose(out, v)  # as many centres as rows: exact


def test_pruning_reaches_the_sparsity_and_the_coder_exploits_zeros():
    model = _model()
    plain = nncodec.encode(model, step=0.01)
    pruned = nncodec.encode(model, step=0.01, prune=0.6)
    assert len(pruned) < 0.8 * len(plain)
    out = nncodec.decode(pruned)
    for name, w in model.items():
        if w.ndim >= 2:
            zeros = np.count_nonzero(out[name] == 0)
            assert zeros >= round(0.6 * w.size)
            assert _chains(pruned)[name][0]["zeros"] == round(0.6 * w.size)
    # global: one threshold, 60% of all weights
    g = nncodec.decode(nncodec.encode(model, step=0.01, prune=0.6, prune_scope="global"))
    weights = [name for name in model if model[name].ndim >= 2]
    total = sum(model[n].size for n in weights)
    assert sum(np.count_nonzero(g[n] == 0) for n in weights) >= round(0.6 * total)
    # pruned weights are the zero centre of a codebook
    km = nncodec.decode(nncodec.encode(model, method="kmeans", k=8, prune=0.6))
    assert np.count_nonzero(km["fc.weight"] == 0) >= 0.6 * model["fc.weight"].size


def test_structured_pruning_zeroes_whole_rows():
    model = _model()
    out = nncodec.decode(nncodec.encode(model, step=0.001, prune=0.25, prune_structured=True))
    for name in ("conv.weight", "fc.weight"):
        rows = out[name].reshape(out[name].shape[0], -1)
        dead = np.all(rows == 0, axis=1)
        assert dead.sum() == round(0.25 * rows.shape[0])
        # the rows of smallest RMS went
        rms = np.sqrt(np.mean(model[name].reshape(rows.shape[0], -1).astype(np.float64) ** 2, axis=1))
        assert rms[dead].max() <= rms[~dead].min()
    masks = P.prune_masks(model, 0.5, structured=True, scope="global")
    assert set(masks) == {"conv.weight", "fc.weight", "fc.half"}


def test_prune_threshold_and_masks():
    w = np.array([[0.1, -0.5, 0.05], [0.3, -0.01, 0.2]])
    assert P.magnitude_mask(w, threshold=0.1).tolist() == [[False, True, False], [True, False, True]]
    assert P.magnitude_mask(w, amount=0.5).sum() == 3
    out = nncodec.decode(nncodec.encode({"w": w}, step=0.001, prune_threshold=0.1))["w"]
    assert np.count_nonzero(out) == 3


def test_settings_are_checked():
    for kw in (dict(method="nope"), dict(method="fixed", qp=-30), dict(method="fixed", il=20, fl=20),
               dict(prune=1.5), dict(prune=0.5, prune_threshold=0.1), dict(prune_scope="layer"),
               dict(method="kmeans", k=0), dict(lossless=True, prune=0.5), dict(method="rq", rq_stages=99),
               dict(method="fixed", rounding="up")):
        with pytest.raises(ValueError):
            Settings(**kw)
    assert Settings().describe() == "target weight SNR 30 dB over the model"
    assert Settings(snr_scope="tensor").describe() == "target weight SNR 30 dB per tensor"
    with pytest.raises(ValueError):
        Settings(snr_scope="layer")


@pytest.mark.parametrize("stage,levels", [
    ({"id": "kmeans", "codebook": [-1.0, 0.0, 1.0]}, [0, 2]),           # 2 + 1 > 2
    ({"id": "kmeans", "codebook": []}, [0, 0]),
    ({"id": "fixed", "il": 1, "fl": 2}, [0, 4]),                         # 3-bit range is -4..3
    ({"id": "fixed", "il": 30, "fl": 30}, [0, 0]),
    ({"id": "binary", "scale": 0.5}, [2, 0]),
    ({"id": "binary", "scale": -0.5}, [1, 0]),
    ({"id": "pq", "d": 1, "codebooks": [[0.0]]}, [0, 1]),                # one codebook per column: 2
    ({"id": "rq", "d": 2, "codebooks": [[0.0, 1.0, 2.0]]}, [0]),         # 3 floats: not 2-vectors
])
def test_bad_stage_parameters_are_format_errors(stage, levels):
    cabac = get_backend("cabac")
    rec = TensorRecord("w", "float32", (1, 2), [stage], 1, cabac.encode(np.array(levels, np.int32), row_length=2))
    with pytest.raises(FormatError):
        nncodec.decode(pack([rec], {}))


def test_unknown_chains_are_rejected():
    cabac = get_backend("cabac")
    payload = cabac.encode(np.zeros(2, np.int32), row_length=2)
    for chain in ([{"id": "prune"}, {"id": "integer"}], [{"id": "uniform", "step": 1.0}, {"id": "prune"}],
                  [{"id": "prune"}, {"id": "prune"}, {"id": "uniform", "step": 1.0}]):
        with pytest.raises(FormatError):
            nncodec.decode(pack([TensorRecord("w", "float32", (1, 2), chain, 1, payload)], {}))
    ok = [{"id": "prune", "future": True}, {"id": "uniform", "step": 1.0}]
    assert nncodec.decode(pack([TensorRecord("w", "float32", (1, 2), ok, 1, payload)], {}))["w"].tolist() == [[0, 0]]


def test_cli_encode_methods(tmp_path):
    src = tmp_path / "m.npz"
    np.savez(src, **{k: v for k, v in _model().items()})
    runner = CliRunner()
    from nncodec.cli import main

    for args, stage in ((["--method", "fixed", "--il", "1", "--fl", "7"], "fixed"),
                        (["--method", "kmeans", "--k", "8", "--prune", "0.5", "--prune-global"], "kmeans"),
                        (["--method", "rq", "--k", "4", "--rq-stages", "2", "--pq-dim", "2"], "rq"),
                        (["--method", "pq", "--k", "4"], "pq"),
                        (["--prune", "0.25", "--prune-structured"], "uniform"),
                        (["--method", "ternary"], "ternary")):
        out = tmp_path / "m.nnc"
        r = runner.invoke(main, ["encode", str(src), "-o", str(out), "-f", "-q"] + args)
        assert r.exit_code == 0, r.output
        assert _chains(out.read_bytes())["fc.weight"][-1]["id"] == stage
        r = runner.invoke(main, ["decode", str(out), "-o", str(tmp_path / "r.npz"), "-f", "-q"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["encode", str(src), "-o", str(tmp_path / "x.nnc"), "--method", "fixed", "--qp", "3"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["encode", "--help"])
    assert "--prune-structured" in r.output and "--method kmeans --k 16" in r.output


# ---------------------------------------------------------------------------------------------
# The digits network (needs torch and scikit-learn)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from nncodec.tasks import digits as task

    sd = task.get_state_dict()
    return task, sd, task.evaluate(sd)


@pytest.mark.parametrize("kw", [dict(method="kmeans", k=16), dict(method="fixed", bits=8),
                                dict(prune=0.5, prune_scope="global"),
                                dict(method="kmeans", k=16, prune=0.5, prune_scope="global")],
                         ids=["kmeans16", "fixed8", "prune50-global", "kmeans16+prune50"])
def test_digits_accuracy_within_one_point(digits, kw):
    task, sd, base = digits
    if "prune" in kw:
        # pruning half the weights without retraining costs about a point by itself (on 450
        # test images a point is 4.5 images): the quantizer on top must cost at most one more
        pruned_only = dict(prune=kw["prune"], prune_scope=kw["prune_scope"], step=1e-6)
        base = task.evaluate(nncodec.decode(nncodec.encode(sd, **pruned_only)))
    data = nncodec.encode(sd, **kw)
    acc = task.evaluate(nncodec.decode(data))
    assert acc >= base - 0.01, (kw, acc, base)
    assert len(data) < 0.25 * sum(v.numel() * 4 for v in sd.values())


def test_iterative_pruning_with_retraining_keeps_accuracy(digits):
    task, sd, base = digits
    seen = []
    out, masks, history = P.iterative_prune(sd, P.digits_retrain(epochs=2), amounts=[0.3, 0.5],
                                            callback=lambda i, a, s: seen.append(a))
    assert seen == [0.3, 0.5] and [round(h["sparsity"], 2) for h in history] == [0.3, 0.5]
    for k, m in masks.items():
        assert np.count_nonzero(out[k].numpy() == 0) >= round(0.5 * m.size)
    assert task.evaluate(out) >= base - 0.01
    # and the retrained, pruned model codes smaller than the dense one
    assert len(nncodec.encode(out, method="kmeans", k=16)) < len(nncodec.encode(sd, method="kmeans", k=16))


def test_dynamic_network_surgery_prunes_and_splices(digits):
    task, sd, base = digits
    model = task.build_model()
    model.load_state_dict(sd)
    res = P.dynamic_network_surgery(model, P.digits_train_step(model, lr=3e-3), steps=60, amount=0.6, margin=0.2)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    assert P.sparsity(state) >= 0.5
    assert res["revived"] > 0  # some pruned weights came back
    for name, (a, b) in res["thresholds"].items():
        assert b > a > 0
        assert np.all(state[name].numpy()[~res["masks"][name]] == 0)
    assert task.evaluate(state) >= base - 0.03
