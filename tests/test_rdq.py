"""RDOQ and dependent (trellis-coded) quantization: nncodec/quantize/rdq.py, nncodec_ext/_trellis.pyx."""
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings as hsettings, strategies as st

import nncodec
from nncodec import container
from nncodec.cli import main
from nncodec.entropy import cabac
from nncodec.errors import FormatError
from nncodec.io import write_model
from nncodec.pipeline import Settings
from nncodec.quantize import rdq

try:
    from nncodec_ext import _trellis
except ImportError:  # pragma: no cover
    _trellis = None

needs_compiled = pytest.mark.skipif(_trellis is None, reason="compiled trellis not built")


def _laplace(shape, seed=0, scale=0.05, dtype=np.float32):
    return np.random.default_rng(seed).laplace(0, scale, shape).astype(dtype)


def _compiled(w, step, row, K, E, rates, init, lam, dq):
    out = np.empty(w.size, np.int32)
    err = _trellis.rd_quantize(w, step, row, K, E, rates, init, lam, dq, rdq.COST_TABLE, out)
    return out, err


# --------------------------------------------------------------------------- Cython == Python


@needs_compiled
@hsettings(max_examples=60)
@given(n=st.integers(0, 40), row=st.integers(0, 12), K=st.integers(0, 7), E=st.integers(0, 3),
       rates=st.sampled_from([(4, 9), (5, 10), (8, 11), (4, 11), (1, 4)]), init=st.integers(0, 1),
       lam=st.sampled_from([0.0, 0.03, 0.12, 0.5, 3.0]), dq=st.booleans(), scale=st.sampled_from([0.2, 1.0, 6.0]),
       zeros=st.booleans(), seed=st.integers(0, 2**32 - 1), f64=st.booleans())
def test_compiled_search_takes_the_reference_decisions(n, row, K, E, rates, init, lam, dq, scale, zeros, seed,
                                                       f64):
    rng = np.random.default_rng(seed)
    w = (rng.laplace(0, scale, n)).astype(np.float64 if f64 else np.float32)
    if zeros:
        w[rng.random(n) < 0.4] = 0.0
    step = 0.37
    packed = rates[0] | (rates[1] << 4)
    got, err = _compiled(w, step, row, K, E, packed, init, lam, dq)
    ref, ref_err = rdq.rd_quantize_reference(w, step, row, K, E, packed, init, lam, dq)
    assert got.tolist() == ref
    assert err == ref_err


@needs_compiled
@hsettings(max_examples=10, deadline=None)
@given(row=st.sampled_from([0, 7, 33]), K=st.integers(0, 3), init=st.integers(0, 1),
       lam=st.sampled_from([0.12, 0.5]), dq=st.booleans(), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([3.0, 80.0]))
def test_compiled_search_takes_the_reference_decisions_across_refreshes(row, K, init, lam, dq, seed, scale):
    # long enough for the model to learn and refresh several times (dq: with the state carried),
    # and for the compiled search's cache of magnitude costs (tensors of 1024 levels or more)
    w = np.random.default_rng(seed).laplace(0, scale, 1500)  # 80: magnitudes beyond the cache
    w[::7] = 0.0
    got, err = _compiled(w, 0.37, row, K, 1, 5 | 10 << 4, init, lam, dq)
    ref, ref_err = rdq.rd_quantize_reference(w, 0.37, row, K, 1, 5 | 10 << 4, init, lam, dq)
    assert got.tolist() == ref
    assert err == ref_err


def test_pure_python_switch_gives_the_same_levels(monkeypatch):
    w = _laplace((12, 9), seed=3, scale=1.0)
    a, ea = rdq.rd_quantize(w, 0.3, row_length=9, lam=0.12, dq=True)
    monkeypatch.setenv("NNCODEC_PURE_PYTHON", "1")
    b, eb = rdq.rd_quantize(w, 0.3, row_length=9, lam=0.12, dq=True)
    assert np.array_equal(a, b) and ea == eb


# --------------------------------------------------------------------------- DQ: state replay


def test_dq_state_machine_example_from_the_spec():
    # formats/cabac-v1.md, section 1: levels 1, 1, 0, -2, 3 with s = 1 decode to 2, 1, 0, -3, 5
    lv = np.array([1, 1, 0, -2, 3], np.int32)
    assert rdq.reconstruct(lv, 1.0, True).tolist() == [2.0, 1.0, 0.0, -3.0, 5.0]
    assert rdq.dq_reconstruct_reference(lv, 1.0).tolist() == [2.0, 1.0, 0.0, -3.0, 5.0]


@pytest.mark.parametrize("lam", [0.0, 0.12])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dq_decoder_replay_reproduces_the_encoder_reconstruction(lam, dtype):
    w = _laplace((40, 27), seed=1, dtype=dtype)
    step = 0.01
    levels, err = rdq.rd_quantize(w, step, row_length=27, lam=lam, dq=True)
    rec = rdq.reconstruct(levels, step, True)
    e = w.reshape(-1).astype(np.float64) - rec
    assert float(np.dot(e, e)) == pytest.approx(err, rel=1e-12)
    # through the container: the decoder's values are the encoder's, rounded to the dtype
    data = nncodec.encode({"w": w}, step=step, dq=True, rd_lambda=lam)
    out = nncodec.decode(data)["w"]
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, rec.astype(dtype).reshape(w.shape))
    with nncodec.open(data) as f:
        assert f.info()["tensors"][0]["chain"] == [{"id": "dq", "step": step}]


def test_dq_levels_visit_both_quantizers_and_beat_uniform_error_at_equal_level_spacing():
    w = _laplace(20000, seed=2, dtype=np.float64)
    step = 0.01
    levels, err = rdq.rd_quantize(w, step, dq=True)
    # plain rounding with the same spacing of levels (2 * step)
    plain = np.rint(w / (2 * step)) * 2 * step
    err_plain = float(np.sum((w - plain) ** 2))
    assert err < 0.85 * err_plain  # trellis-coded quantization's granular gain
    rec = rdq.reconstruct(levels, step, True)
    odd = np.abs(np.rint(rec / step)).astype(np.int64) % 2 == 1
    assert odd.any() and (~odd).any()


def test_dq_keeps_exact_zeros_zero():
    w = _laplace((30, 10), seed=4)
    w[:, ::3] = 0.0
    for lam in (0.0, 0.12, 5.0):
        levels, _ = rdq.rd_quantize(w, 0.01, row_length=10, lam=lam, dq=True)
        assert not levels.reshape(w.shape)[:, ::3].any()


# --------------------------------------------------------------------------- RDOQ


@needs_compiled
@hsettings(max_examples=60)
@given(n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1), row=st.integers(0, 30),
       step=st.sampled_from([0.003, 0.01, 0.05, 0.3]), ties=st.booleans())
def test_rdoq_at_lambda_zero_is_plain_rounding(n, seed, row, step, ties):
    w = np.random.default_rng(seed).laplace(0, 0.05, n).astype(np.float32)
    if ties:  # exact halves: rint rounds them to even
        w = ((np.rint(w / step) + 0.5) * step).astype(np.float32)
    levels, _ = rdq.rd_quantize(w, step, row_length=row, lam=0.0)
    np.testing.assert_array_equal(levels, nncodec.quant_snr.quantize(w, step))


@pytest.mark.parametrize("lam", [0.05, 0.12, 0.4])
@pytest.mark.parametrize("seed", range(4))
def test_rdoq_never_increases_d_plus_lambda_r(lam, seed):
    rng = np.random.default_rng(seed)
    w = rng.laplace(0, 0.05, (int(rng.integers(5, 60)), int(rng.integers(3, 40)))).astype(np.float32)
    row = w.shape[1]
    step = float(rng.choice([0.005, 0.02, 0.08]))
    plain = nncodec.quant_snr.quantize(w, step).reshape(-1)
    j_plain = rdq.rd_cost(w, plain, step, row_length=row, lam=lam)
    levels, _ = rdq.rd_quantize(w, step, row_length=row, lam=lam)
    assert rdq.rd_cost(w, levels, step, row_length=row, lam=lam) <= j_plain


@pytest.mark.parametrize("lam", [0.05, 0.12, 0.4])
@pytest.mark.parametrize("step", [0.02, 0.08])
def test_rdoq_search_alone_lowers_d_plus_lambda_r_on_a_real_sized_tensor(lam, step):
    # without the acceptance test: the rate model's decisions, measured with the coder's cost,
    # at 2 to 5 bits per weight. (On tensors of a few hundred weights, and at high rates such
    # as step 0.005 here, about 8 bits per weight, the greedy choices against a model that
    # adapts row by row can lose by up to 1%; the acceptance test then keeps plain rounding.)
    w = _laplace((128, 288), seed=7)
    plain = nncodec.quant_snr.quantize(w, step).reshape(-1)
    j_plain = rdq.rd_cost(w, plain, step, row_length=288, lam=lam)
    raw, _ = rdq.rd_quantize(w, step, row_length=288, lam=lam, guard=False)
    assert rdq.rd_cost(w, raw, step, row_length=288, lam=lam) < j_plain


def test_rdoq_real_size_decreases_on_the_digits_cnn_at_equal_step():
    from nncodec.tasks import digits

    sd = {k: v.detach().numpy() for k, v in digits.get_state_dict().items()}

    def weight_bytes(data):
        with nncodec.open(data) as f:
            return sum(t["bytes"] for t in f.info()["tensors"] if len(t["shape"]) >= 2)

    for qp in (-20, -28):
        plain = weight_bytes(nncodec.encode(sd, qp=qp))
        rd = weight_bytes(nncodec.encode(sd, qp=qp, rdoq=True))
        assert rd < plain, (qp, rd, plain)
        dq_plain = weight_bytes(nncodec.encode(sd, qp=qp, dq=True))
        dq_rd = weight_bytes(nncodec.encode(sd, qp=qp, dq=True, rdoq=True))
        assert dq_rd < dq_plain, (qp, dq_rd, dq_plain)


# --------------------------------------------------------------------------- pipeline, API, CLI


def _weight_snr(orig, dec):
    sig = err = 0.0
    for k, a in orig.items():
        if a.ndim >= 2:
            x = a.astype(np.float64)
            sig += float(np.sum(x * x))
            err += float(np.sum((x - dec[k].astype(np.float64)) ** 2))
    return 10 * math.log10(sig / err)


@pytest.mark.parametrize("kw", [{"rdoq": True}, {"dq": True}, {"dq": True, "rdoq": True},
                                {"dq": True, "snr_scope": "tensor"}, {"rd_lambda": 0.3}])
def test_target_snr_is_reached_with_the_quantizer_in_the_loop(kw):
    rng = np.random.default_rng(5)
    sd = {"a.weight": rng.laplace(0, 0.05, (48, 30)).astype(np.float32),
          "b.weight": rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32),
          "c.weight": rng.normal(0, 0.1, (10, 20)).astype(np.float16),
          "a.bias": rng.normal(0, 0.01, 48).astype(np.float32)}
    for target in (20.0, 30.0):
        dec = nncodec.decode(nncodec.encode(sd, target_snr=target, **kw))
        if kw.get("snr_scope") == "tensor":
            for k in ("a.weight", "b.weight", "c.weight"):
                snr = _weight_snr({k: sd[k]}, dec)
                assert target <= snr < target + 0.1, (k, snr)
        else:
            snr = _weight_snr(sd, dec)
            # the target is a floor. The 0.1 dB ceiling holds where the SNR is continuous in the
            # step; RDOQ with a large lambda on these small tensors is not: its zeroing decisions
            # cascade (zeros make zeros cheaper), and at 20 dB with lambda 0.3 the SNR falls from
            # 20.46 to 19.67 dB between steps 0.04486 and 0.04556, so the largest step meeting
            # the target overshoots by up to that jump
            assert target <= snr < target + (1.0 if "rd_lambda" in kw else 0.1), snr


def test_settings_are_recorded_and_files_decode_without_them():
    w = {"fc.weight": _laplace((32, 16)), "fc.bias": _laplace(32, seed=1)}
    plain = nncodec.encode(w, qp=-24)
    rd = nncodec.encode(w, qp=-24, rdoq=True)
    dq = nncodec.encode(w, qp=-24, dq=True, rd_lambda=0.2)
    for data, version, stage, words in ((plain, (1, 2), "uniform", None),
                                        (rd, (1, 2), "uniform", "RDOQ lambda 0.12"),
                                        (dq, (1, 2), "dq", "dependent quantization, RDOQ lambda 0.2")):
        with container.Reader(data) as r:
            assert r.version == version
        with nncodec.open(data) as f:
            assert f.info()["tensors"][0]["chain"][0]["id"] == stage
            assert f.info()["tensors"][1]["chain"][0]["id"] == "uniform"  # 1-D tensors: plain
            if words:
                assert words in f.metadata()["nncodec.settings"]
        assert set(nncodec.decode(data)) == set(w)


def test_pruning_then_dq():
    w = {"fc.weight": _laplace((40, 20), seed=6)}
    data = nncodec.encode(w, prune=0.5, dq=True, rdoq=True, target_snr=25)
    dec = nncodec.decode(data)["fc.weight"]
    with nncodec.open(data) as f:
        assert [s["id"] for s in f.info()["tensors"][0]["chain"]] == ["prune", "dq"]
    assert np.count_nonzero(dec) <= w["fc.weight"].size // 2


@pytest.mark.parametrize("kw, match", [
    ({"method": "kmeans", "dq": True}, "apply to method 'uniform'"),
    ({"lossless": True, "rdoq": True}, "lossless"),
    ({"rd_lambda": -1.0}, "rd_lambda"),
    ({"rd_lambda": float("nan")}, "rd_lambda"),
])
def test_bad_settings_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        Settings(**kw)


def test_bad_dq_stage_is_a_format_error():
    w = {"w": _laplace((8, 8))}
    data = nncodec.encode(w, step=0.01, dq=True)
    with container.Reader(data) as r:
        rec = r.read_record("w")
    for bad in ({"id": "dq"}, {"id": "dq", "step": -1.0}, {"id": "dq", "step": 1}):
        broken = container.pack([container.TensorRecord(rec.name, rec.dtype, rec.shape, [bad],
                                                        rec.backend, rec.payload)])
        with pytest.raises(FormatError):
            nncodec.decode(broken)


def test_cli_flags(tmp_path):
    path = tmp_path / "m.npz"
    write_model(path, {"layer.weight": _laplace((64, 32)), "layer.bias": _laplace(64, seed=2)})
    runner = CliRunner()
    out = tmp_path / "m.nnc"
    r = runner.invoke(main, ["encode", str(path), "-o", str(out), "--dq", "--rdoq", "--target-snr", "28"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["info", str(out)])
    assert r.exit_code == 0 and "dq(step=" in r.output and "nnc format 1.2" in r.output
    assert "dependent quantization, RDOQ lambda 0.12" in r.output
    r = runner.invoke(main, ["verify", str(out)])
    assert r.exit_code == 0
    r = runner.invoke(main, ["decode", str(out), "-o", str(tmp_path / "back.npz")])
    assert r.exit_code == 0
    r = runner.invoke(main, ["encode", str(path), "-o", str(tmp_path / "l.nnc"), "--lambda", "0.2", "--qp", "-24"])
    assert r.exit_code == 0, r.output
    with nncodec.open(str(tmp_path / "l.nnc")) as f:
        assert "RDOQ lambda 0.2" in f.metadata()["nncodec.settings"]
    r = runner.invoke(main, ["encode", str(path), "-o", str(tmp_path / "k.nnc"), "--method", "kmeans", "--dq"])
    assert r.exit_code == 2 and "--method uniform" in r.output
    r = runner.invoke(main, ["encode", "--help"])
    assert "--dq" in r.output and "--rdoq" in r.output and "--lambda" in r.output


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="NaN or inf"):
        rdq.rd_quantize(np.array([1.0, np.nan]), 0.1, dq=True)
    with pytest.raises(ValueError, match="too small"):
        rdq.rd_quantize(np.array([1e10, 0.0]), 1e-3)
    with pytest.raises(ValueError, match="step"):
        rdq.rd_quantize(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="lambda"):
        rdq.rd_quantize(np.ones(3), 0.1, lam=-1.0)
