"""Analog path (issue 7): schemes, channel-use accounting, receivers, spiral, fading, storage."""
import math

import numpy as np
import pytest

import nncodec.analog as na
from nncodec.analog import spiral as sk
from nncodec.errors import NNCodecError


def gauss(n, seed=1234, scale=1.0):
    # data seeds differ from the channel seeds used below (same seed = same normal draws)
    return np.random.default_rng(seed + 10_000).standard_normal(n) * scale


def db(x):
    return 10 * math.log10(x)


# ---------------------------------------------------------------------------------- basics


def test_presets_and_interface():
    for name in ("ml", "mmse", "mmse_pb", "rep2-ml", "rep2-mmse", "sk2-ml", "sk2-mmse", "scaled",
                 "sign", "sign+adaptive-map", "sign+adaptive-map+adaptive-red"):
        assert na.get_scheme(name).name == name
    s = na.get_scheme("mmse", side_rate=2.0)
    assert s.side_rate == 2.0 and s.receiver == "mmse"
    sd = {"w": gauss(1000).astype(np.float32)}
    out, info = na.transmit_weights(sd, "ml", 10.0)
    for key in ("channel_uses", "rho", "wnr_db", "weight_mse", "side_channel_uses"):
        assert key in info
    assert out["w"].dtype == np.float32 and out["w"].shape == (1000,)


def test_deterministic_by_seed():
    sd = {"a": gauss(3000).reshape(30, 100), "b": gauss(7, seed=3)}
    for scheme in ("mmse", "rep2-ml", "sk2-mmse", "sign+adaptive-map+adaptive-red"):
        for ch in ("awgn", "rayleigh"):
            o1, i1 = na.transmit_weights(sd, scheme, 8.0, channel=ch, seed=5)
            o2, i2 = na.transmit_weights(sd, scheme, 8.0, channel=ch, seed=5)
            o3, _ = na.transmit_weights(sd, scheme, 8.0, channel=ch, seed=6)
            assert all(np.array_equal(o1[k], o2[k]) for k in sd)
            assert i1["weight_mse"] == i2["weight_mse"]
            assert not np.array_equal(o1["a"], o3["a"])


def test_integer_tensors_unchanged_and_charged():
    sd = {"w": gauss(100).astype(np.float16), "steps": np.array(7, dtype=np.int64),
          "mask": np.array([True, False, True]), "ids": np.arange(10, dtype=np.int32)}
    out, info = na.transmit_weights(sd, "ml", -5.0)
    assert out["steps"].dtype == np.int64 and out["steps"] == 7
    assert np.array_equal(out["mask"], sd["mask"]) and out["mask"].dtype == bool
    assert np.array_equal(out["ids"], sd["ids"]) and out["ids"].dtype == np.int32
    assert out["w"].dtype == np.float16
    assert info["n_side_tensors"] == 3 and info["n_weights"] == 100
    # 8 + 3 + 40 bytes of integer tensors + mean and std of "w" (two float32)
    assert info["side_bits"] == (8 + 3 + 40) * 8 + 64


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    sd = {"w": torch.randn(64, 8, generator=torch.Generator().manual_seed(0)),
          "n": torch.tensor(3)}
    out, info = na.transmit_weights(sd, "mmse", 20.0)
    assert isinstance(out["w"], np.ndarray) and out["w"].shape == (64, 8)
    assert out["w"].dtype == np.float32 and int(out["n"]) == 3


# ------------------------------------------------------------------------ channel uses


def test_channel_use_accounting():
    n = 1001
    sd = {"w": gauss(n), "b": gauss(10, seed=9)}
    _, i1 = na.transmit_weights(sd, "ml", 10.0)
    assert i1["analog_channel_uses"] == math.ceil((n + 10) / 2)      # two weights per use
    assert i1["side_bits"] == 2 * 64 and i1["side_channel_uses"] == 128   # 1 bit per use
    assert i1["channel_uses"] == i1["analog_channel_uses"] + i1["side_channel_uses"]
    assert i1["rho"] == pytest.approx(1.0)
    _, i2 = na.transmit_weights(sd, na.get_scheme("ml", side_rate=4.0), 10.0)
    assert i2["side_channel_uses"] == 32
    _, i3 = na.transmit_weights(sd, "rep2-ml", 10.0)
    assert i3["analog_channel_uses"] == n + 10 and i3["rho"] == pytest.approx(2.0)
    _, i4 = na.transmit_weights(sd, "sk2-ml", 10.0)
    assert i4["analog_channel_uses"] == n + 10                          # one symbol per weight
    assert i4["side_bits"] == 2 * 96                                    # mean, std, gamma
    _, i5 = na.transmit_weights(sd, "sk2-mmse", 10.0)                   # + histogram prior
    assert i5["side_bits"] == 2 * (96 + 64 * 16 + 64)
    _, i6 = na.transmit_weights(sd, "sign", 10.0)
    # signs: one bit per weight; scale and shift per tensor
    assert i6["side_bits"] == (n + 10) + 2 * 64


def test_adaptive_redundancy_budget():
    w = np.random.default_rng(3).laplace(size=20000)
    sd = {"w": w}
    scheme = na.get_scheme("sign+adaptive-map+adaptive-red")
    _, info = na.transmit_weights(sd, scheme, noise_std=0.1)
    n_large = math.floor(20000 * (1.006 - 1) / 9)
    assert info["r_avg"] <= 1.006
    assert info["r_avg"] == pytest.approx((20000 - n_large + 10 * n_large) / 20000)
    assert info["analog_channel_uses"] == math.ceil((20000 + 9 * n_large) / 2)
    # signs, two groups (scale + shift each), the group labels (entropy-coded) and their length
    assert info["side_bits"] > 20000 + 2 * 64
    _, loose = na.transmit_weights(sd, scheme.replace(r_avg=1.05), noise_std=0.1)
    assert 1.006 < loose["r_avg"] <= 1.05
    # the large weights get r_large copies: their error shrinks
    out, _ = na.transmit_weights(sd, scheme.replace(r_avg=1.05), noise_std=0.3, seed=1)
    out0, _ = na.transmit_weights(sd, scheme.replace(adaptive_redundancy=False), noise_std=0.3,
                                  seed=1)
    big = np.abs(w) >= np.sort(np.abs(w))[-int(20000 * 0.05 / 9)]
    assert np.mean((out["w"] - w)[big] ** 2) < 0.3 * np.mean((out0["w"] - w)[big] ** 2)


# ------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_mmse_rho1_within_half_db_of_bound(snr):
    var = 0.04
    sd = {"w": gauss(200_000, scale=math.sqrt(var))}
    _, info = na.transmit_weights(sd, "mmse", snr, seed=2)
    bound = na.weight_mse_bound(np.var(sd["w"]), snr, 1)
    assert abs(db(info["weight_mse"] / bound)) < 0.5
    # ML: the noise power itself, var / SNR, and the WNR equals the SNR
    _, iml = na.transmit_weights(sd, "ml", snr, seed=2)
    assert iml["weight_mse"] == pytest.approx(np.var(sd["w"]) * 10 ** (-snr / 10), rel=0.02)
    assert iml["wnr_db"] == pytest.approx(snr, abs=1e-6)


def test_weight_mse_bound_formula():
    assert na.weight_mse_bound(2.0, 10.0, 1) == pytest.approx(2.0 / 11)
    assert na.weight_mse_bound(1.0, 0.0, 2) == pytest.approx(0.25)


def test_repetition_mrc_gains_3db():
    sd = {"w": gauss(100_000)}
    _, i1 = na.transmit_weights(sd, "ml", 5.0, seed=1)
    _, i2 = na.transmit_weights(sd, "rep2-ml", 5.0, seed=1)
    assert db(i1["weight_mse"] / i2["weight_mse"]) == pytest.approx(3.01, abs=0.15)
    assert i2["wnr_db"] - i1["wnr_db"] == pytest.approx(3.01, abs=0.01)


@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_spiral_beats_repetition_at_design_snr(snr):
    sd = {"w": gauss(20_000)}
    _, rep = na.transmit_weights(sd, "rep2-ml", snr, seed=3)
    _, spi = na.transmit_weights(sd, "sk2-ml", snr, seed=3)
    _, rep_m = na.transmit_weights(sd, "rep2-mmse", snr, seed=3)
    _, spi_m = na.transmit_weights(sd, "sk2-mmse", snr, seed=3)
    assert db(rep["weight_mse"] / spi["weight_mse"]) > (1.0 if snr == 10 else 4.0)
    assert db(rep_m["weight_mse"] / spi_m["weight_mse"]) > (1.0 if snr == 10 else 4.0)
    assert spi_m["weight_mse"] <= spi["weight_mse"] * 1.02


def test_double_spiral_keeps_w_and_minus_w_apart():
    gamma = 3.0
    u = np.linspace(0.02, 5, 400)
    v = np.linspace(0, 6, 60001)
    f_pos = sk.sk_map(u, gamma)
    f_neg = sk.sk_map(-v, gamma)
    assert np.allclose(sk.sk_map(-u, gamma), -f_pos)              # odd: the arm rotated by pi
    d = np.min(np.abs(f_pos[:, None] - f_neg[None, :]), axis=1)
    # the other arm is never closer than a fixed fraction of min(2u, its radial spacing pi/gamma)
    assert np.all(d > 0.3 * np.minimum(2 * u, math.pi / gamma))
    # noiseless decoding gives back every value, sign included
    uu = np.concatenate([-u, u])
    assert np.allclose(sk.decode_ml(sk.sk_map(uu, gamma), gamma), uu, atol=1e-6)


def test_spiral_cython_matches_numpy():
    if not sk.HAVE_EXT:
        pytest.skip("extension not built")
    rng = np.random.default_rng(0)
    u = rng.standard_normal(300)
    for snr, gamma in ((0.0, 0.5), (15.0, 2.5), (30.0, 14.0)):
        n0 = 10 ** (-snr / 10)
        y = sk.sk_map(u, gamma) + math.sqrt(n0 / 2) * (rng.standard_normal(300)
                                                     + 1j * rng.standard_normal(300))
        assert np.allclose(sk.decode_ml(y, gamma, backend="cython"),
                           sk.decode_ml(y, gamma, backend="numpy"), atol=1e-12)
        prior = sk.histogram_prior(u)
        for p in ("gaussian", prior):
            assert np.allclose(sk.decode_mmse(y, gamma, n0, p, backend="cython"),
                               sk.decode_mmse(y, gamma, n0, p, backend="numpy"), atol=1e-9)


def test_design_gamma_grows_with_snr():
    gs = [sk.design_gamma(s) for s in (5.0, 15.0, 25.0)]
    assert gs[0] < gs[1] < gs[2]
    assert sk.design_gamma(-5.0) <= 0.05          # low SNR: the nearly linear map


# ---------------------------------------------------------------------------- receivers


def test_mmse_pb_neutral_equals_mmse():
    sd = {"w": gauss(5000, scale=0.1) + 0.02}
    for snr, ch in ((3.0, "awgn"), (10.0, "rayleigh")):
        a, _ = na.transmit_weights(sd, "mmse", snr, channel=ch, seed=4)
        b, info = na.transmit_weights(sd, "mmse_pb", snr, channel=ch, seed=4,
                                      receiver_params={"lambda": 0.0, "beta": 0.0})
        assert np.allclose(a["w"], b["w"], rtol=0, atol=1e-15)
        assert info["receiver_params"] == {"lambda": 0.0, "beta": 0.0}


def test_mmse_pb_formula_matches_seed_for_zero_mean():
    # seed 000: w = var/(var + (1 - 2 var lam) nv) r + var nv beta/(var + (1 - 2 var lam) nv)
    r = np.array([-1.0, 0.3, 2.0])
    var, nv, lam_raw, beta_raw = 0.5, 0.2, 0.4, 0.3
    seed = (var * r + var * nv * beta_raw) / (var + (1 - 2 * var * lam_raw) * nv)
    ours = na.mmse_pb(r, nv, 0.0, var, lam=lam_raw * var, beta=beta_raw * math.sqrt(var))
    assert np.allclose(ours, seed)
    # lambda' = 1/2, beta = 0: ML, whatever the prior mean
    assert np.allclose(na.mmse_pb(r, nv, 0.0, var, lam=0.5), r)
    assert np.allclose(na.mmse_pb(r, nv, 0.7, var, lam=0.5), r)
    # neutral point: MMSE with the prior mean
    assert np.allclose(na.mmse_pb(r, nv, 0.7, var), na.mmse(r, nv, 0.7, var))


def test_mmse_pb_lambda_bound_raises():
    sd = {"w": gauss(1000)}
    with pytest.raises(na.AnalogConfigError, match="bound"):
        na.transmit_weights(sd, "mmse_pb", 0.0, receiver_params={"lambda": 1.2})
    with pytest.raises(na.AnalogConfigError):
        na.transmit_weights(sd, "mmse_pb", 0.0, receiver_params={"lambda": -0.1})


def test_rayleigh_perfect_csi_unbiased():
    w = gauss(100_000, scale=0.1)
    ml_mse = {}
    for fading in ("symbol", "block"):
        out, info = na.transmit_weights({"w": w}, "ml", 10.0, channel="rayleigh", fading=fading,
                                        seed=8)
        e = out["w"] - w
        # zero-forcing: the error has median 0 and no component along w (heavy tails: trim)
        assert abs(np.median(e)) < 0.01 * 0.1
        keep = np.abs(e) < np.quantile(np.abs(e), 0.99)
        slope = np.sum(e[keep] * w[keep]) / np.sum(w[keep] ** 2)
        assert abs(slope) < 0.02
        assert info["fading"] == fading
        ml_mse[fading] = info["weight_mse"]
    # MMSE with the per-symbol CSI beats ML under fading (ZF noise explodes in deep fades)
    o2, i2 = na.transmit_weights({"w": w}, "mmse", 10.0, channel="rayleigh", seed=8)
    assert i2["weight_mse"] < 0.5 * ml_mse["symbol"]


def test_storage_model_noise_std():
    w = np.random.default_rng(5).uniform(-0.3, 0.5, 100_000)
    out, info = na.transmit_weights({"w": w}, "scaled", noise_std=0.01, seed=1)
    # linear map onto [-1, 1]: weight noise std = noise_std * (max - min) / 2 (clipping helps a bit)
    expect = (0.01 * (w.max() - w.min()) / 2) ** 2
    assert info["weight_mse"] == pytest.approx(expect, rel=0.05)
    assert info["noise_std"] == 0.01


def test_seed002_protections_help_on_sparse_weights():
    w = np.random.default_rng(6).laplace(size=50_000) * 0.05
    mses = [na.transmit_weights({"w": w}, s, noise_std=0.05, seed=2)[1]["weight_mse"]
            for s in ("scaled", "sign", "sign+adaptive-map")]
    assert mses[0] > mses[1] > mses[2]


# ------------------------------------------------------------------------------- errors


def test_bad_arguments_raise():
    sd = {"w": gauss(100)}
    bad = [
        dict(scheme="nope", snr_db=1.0),
        dict(scheme="ml"),                                          # neither snr nor noise_std
        dict(scheme="ml", snr_db=1.0, noise_std=0.1),               # both
        dict(scheme="ml", snr_db=1.0, channel="rician"),
        dict(scheme="ml", snr_db=1.0, channel="rayleigh", fading="slow"),
        dict(scheme="ml", noise_std=-1.0),
        dict(scheme="ml", noise_std=0.1, channel="rayleigh"),
        dict(scheme="ml", snr_db=float("nan")),
        dict(scheme="ml", snr_db=1.0, receiver_params={"gamma": 1}),
        dict(scheme="ml", snr_db=1.0, seed="x"),
        dict(scheme="ml", snr_db=1.0, block_len=0),
    ]
    for kw in bad:
        scheme = kw.pop("scheme")
        with pytest.raises(na.AnalogConfigError):
            na.transmit_weights(sd, scheme, **kw)
    with pytest.raises(na.AnalogConfigError, match="NaN"):
        na.transmit_weights({"w": np.array([1.0, np.nan])}, "ml", 1.0)
    for kw in (dict(rho=3, expansion="sk"), dict(adaptive_map=True), dict(receiver="map"),
               dict(side_rate=0), dict(map_threshold=1.5), dict(colour="red")):
        with pytest.raises(na.AnalogConfigError):
            na.get_scheme("ml", **kw)
    with pytest.raises(na.AnalogConfigError):
        na.get_scheme("scaled", adaptive_redundancy=True, r_small=3, r_large=2)
    with pytest.raises(na.AnalogConfigError):
        na.transmit_weights(sd, na.get_scheme("ml", allocation={"x": na.TensorAllocation()}), 1.0)
    # the error type is both the project's and a ValueError
    assert issubclass(na.AnalogConfigError, NNCodecError) and issubclass(na.AnalogConfigError,
                                                                          ValueError)


# ------------------------------------------------------------ unequal protection, tuning


def _two_layer_model():
    rng = np.random.default_rng(11)
    return {"sensitive": rng.standard_normal(2000) * 0.1, "robust": rng.standard_normal(20000) * 0.1}


def test_power_allocation_by_sensitivity():
    sd = _two_layer_model()
    sens = {"sensitive": 100.0, "robust": 1.0}
    alloc = na.allocate_by_sensitivity(sens, sd, mode="power")
    assert alloc["sensitive"].power > alloc["robust"].power
    n = {k: v.size for k, v in sd.items()}
    assert sum(n[k] * alloc[k].power for k in n) == pytest.approx(sum(n.values()))
    assert alloc["sensitive"].power / alloc["robust"].power <= 10.0 + 1e-9   # max_ratio
    plain_out, plain = na.transmit_weights(sd, "ml", 5.0, seed=1)
    alloc_out, info = na.transmit_weights(sd, na.get_scheme("ml", allocation=alloc), 5.0, seed=1)
    assert info["es"] == pytest.approx(1.0)                     # still unit average energy
    assert info["analog_channel_uses"] == plain["analog_channel_uses"]

    def loss(out):   # the sensitivity-weighted error the allocation minimizes
        return sum(sens[k] * np.sum((out[k] - sd[k]) ** 2) for k in sd)
    assert loss(alloc_out) < 0.5 * loss(plain_out)


def test_repeat_allocation_within_budget():
    sd = _two_layer_model()
    alloc = na.allocate_by_sensitivity({"sensitive": 50.0, "robust": 1.0}, sd, mode="repeat",
                                       r_avg=1.5, r_max=6)
    assert alloc["sensitive"].repeat == 6 and alloc["robust"].repeat == 1
    _, info = na.transmit_weights(sd, na.get_scheme("rep2-ml", allocation=alloc), 5.0)
    assert info["rho"] <= 1.5 and info["rho"] == pytest.approx((6 * 2000 + 20000) / 22000)
    with pytest.raises(na.AnalogConfigError):
        na.allocate_by_sensitivity({"nope": 1.0}, sd)
    with pytest.raises(na.AnalogConfigError):
        na.allocate_by_sensitivity({"robust": -1.0}, sd)


def test_diag_fisher_on_a_small_torch_model():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    X = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    y = np.arange(32) % 3
    F = na.diag_fisher(model, X, y, max_samples=16)
    assert set(F) == set(model.state_dict())
    assert all(v >= 0 for v in F.values()) and sum(F.values()) > 0


def test_tune_mmse_pb_uses_the_validation_callback():
    w = np.random.default_rng(12).laplace(size=20000) * 0.05
    sd = {"w": w}
    big = np.abs(w) > np.quantile(np.abs(w), 0.99)
    calls = []

    def neg_mse(rec):                      # MSE-optimal: the neutral point (plain MMSE)
        calls.append(rec)
        return -float(np.mean((rec["w"] - w) ** 2))

    def big_weights(rec):                  # large weights matter: less shrinkage wins
        return -float(np.mean((rec["w"] - w)[big] ** 2))

    p = na.tune_mmse_pb(sd, neg_mse, 0.0, draws=2)
    assert p == {"lambda": 0.0, "beta": 0.0}
    assert len(calls) == 2 * len(na.DEFAULT_PB_GRID)
    p2, table = na.tune_mmse_pb(sd, big_weights, 0.0, draws=2, return_table=True)
    assert p2["lambda"] > 0.3
    assert [row[:2] for row in table] == list(na.DEFAULT_PB_GRID)
    # grid points beyond seed 000's bound lambda' < (1 + WNR)/2 are skipped, not fatal
    p3, t3 = na.tune_mmse_pb(sd, neg_mse, -10.0, grid=[(0.0, 0.0), (0.9, 0.0)], draws=1,
                             return_table=True)
    assert t3[1][2] is None and p3["lambda"] == 0.0
    with pytest.raises(na.AnalogConfigError):
        na.tune_mmse_pb(sd, neg_mse, 0.0, scheme="mmse")


def test_design_snr_mismatch():
    sd = {"w": gauss(20_000)}
    _, matched = na.transmit_weights(sd, "sk2-ml", 10.0, seed=1)
    _, high = na.transmit_weights(sd, "sk2-ml", 10.0, design_snr_db=25.0, seed=1)
    assert high["design_snr_db"] == 25.0 and high["snr_db"] == 10.0
    assert high["sk_gamma"]["w"] > matched["sk_gamma"]["w"]
    # a spiral designed for 25 dB falls off a cliff at 10 dB (jumps between the arms)
    assert high["weight_mse"] > 3 * matched["weight_mse"]
    # the MMSE receiver assuming the wrong noise level loses to the matched one
    _, m_ok = na.transmit_weights(sd, "mmse", 0.0, seed=1)
    _, m_bad = na.transmit_weights(sd, "mmse", 0.0, design_snr_db=20.0, seed=1)
    assert m_bad["weight_mse"] > 1.5 * m_ok["weight_mse"]


def test_storage_model_all_mappings():
    sd = {"w": gauss(5000)}
    for scheme in ("sk2-ml", "ml", "sign+adaptive-map"):
        out, info = na.transmit_weights(sd, scheme, noise_std=0.05, seed=2)
        assert info["snr_db"] is not None and info["weight_mse"] < 0.1
    with pytest.raises(na.AnalogConfigError):
        na.transmit_weights(sd, "ml", noise_std=0.1, design_noise_std=-1.0)


def test_uniform_stretch_spiral_option():
    sd = {"w": gauss(20_000)}
    _, lin = na.transmit_weights(sd, "sk2-ml", 25.0, seed=3)
    sch = na.get_scheme("sk2-ml", sk_stretch="sqrt")
    out, sq = na.transmit_weights(sd, sch, 25.0, seed=3)
    assert sq["side_bits"] == lin["side_bits"] + 32                     # k
    assert db(lin["weight_mse"] / sq["weight_mse"]) > 3.0
    _, sqm = na.transmit_weights(sd, na.get_scheme("sk2-mmse", sk_stretch="sqrt"), 25.0, seed=3)
    assert sqm["weight_mse"] <= sq["weight_mse"] * 1.02
    _, st = na.transmit_weights(sd, sch, noise_std=0.02, seed=3)
    assert st["weight_mse"] < 0.05
    u = gauss(200)
    k = sk.sqrt_k(u)
    assert np.allclose(sk.decode_ml(sk.sk_map(u, 4.0, k), 4.0, k=k), u, atol=1e-6)
    with pytest.raises(na.AnalogConfigError):
        na.get_scheme("sk2-ml", sk_stretch="cubic")


def test_seed_slide_formula_read_literally_is_the_rotated_arm():
    # seed 000: x1 = -(D/pi) w cos(-gamma w + pi), x2 = -(D/pi) w sin(-gamma w + pi) for w < 0
    gamma, c = 2.0, 1.0                   # c = Delta / pi, fixed by the power constraint here
    w = -np.linspace(0.01, 4, 50)
    seed_neg = -c * w * np.cos(-gamma * w + np.pi) - 1j * c * w * np.sin(-gamma * w + np.pi)
    assert np.allclose(seed_neg, sk.sk_map(w, gamma))
    seed_pos = c * -w * np.cos(gamma * -w) + 1j * c * -w * np.sin(gamma * -w)
    assert np.allclose(seed_pos, sk.sk_map(-w, gamma))
