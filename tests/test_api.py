"""The library API: encode / decode / save_file / load_file / open."""
import io
import math

import numpy as np
import pytest
from hypothesis import example, given, strategies as st
from hypothesis.extra import numpy as hnp

import nncodec
from nncodec import bf16
from nncodec.errors import ChecksumError, FormatError, NNCodecError
from nncodec.pipeline import DEFAULT_SMALL_SNR, Settings, step_from_qp


def _snr(w, w_hat):
    w = w.astype(np.float64)
    return 10 * math.log10((w ** 2).sum() / ((w - w_hat.astype(np.float64)) ** 2).sum())


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": (rng.standard_normal((32, 16, 3, 3)) * 0.05).astype(np.float32),
        "conv.bias": (rng.standard_normal(32) * 0.01).astype(np.float32),
        "fc.weight": (rng.laplace(0, 0.02, (10, 512))).astype(np.float16),
        "bn.running_mean": rng.standard_normal(32).astype(np.float64),
        "bn.num_batches_tracked": np.array(1234, dtype=np.int64),
        "mask": rng.random(40) < 0.5,
        "ids": np.array([0, 2**40, -5], dtype=np.int64),
    }


def _model_snr(ref, dec):
    names = [k for k in ("conv.weight", "fc.weight")]
    sig = sum(float((ref[k].astype(np.float64) ** 2).sum()) for k in names)
    err = sum(float(((ref[k].astype(np.float64) - dec[k].astype(np.float64)) ** 2).sum()) for k in names)
    return 10 * math.log10(sig / err)


@pytest.mark.parametrize("backend", ["cabac", "constriction"])
@pytest.mark.parametrize("target", [20.0, 30.0, 45.0])
def test_target_snr_is_reached(backend, target):
    model = _model()
    # default: one step for all weight tensors, the target holds over the model
    out = nncodec.decode(nncodec.encode(model, target_snr=target, backend=backend))
    assert list(out) == list(model)
    assert target <= _model_snr(model, out) < target + 0.5
    with nncodec.open(nncodec.encode(model, target_snr=target, backend=backend)) as f:
        steps = {t["chain"][0]["step"] for t in f.info()["tensors"] if t["name"] in ("conv.weight", "fc.weight")}
    assert len(steps) == 1
    # per tensor: each weight tensor reaches the target with its own step
    out_t = nncodec.decode(nncodec.encode(model, target_snr=target, snr_scope="tensor", backend=backend))
    for name in ("conv.weight", "fc.weight"):
        assert out_t[name].dtype == model[name].dtype and out_t[name].shape == model[name].shape
        assert target <= _snr(model[name], out_t[name]) < target + 1.0
    # 1-D float tensors get their own, finer setting
    assert _snr(model["conv.bias"], out["conv.bias"]) >= 60.0
    # integer and bool tensors are exact, whatever their range
    for name in ("bn.num_batches_tracked", "mask", "ids"):
        assert out[name].dtype == model[name].dtype
        np.testing.assert_array_equal(out[name], model[name])


def test_step_and_qp_set_the_weight_step():
    model = _model()
    for kwargs, step in (({"step": 0.004}, 0.004), ({"qp": -32}, 2 ** -8)):
        with nncodec.open(nncodec.encode(model, **kwargs)) as f:
            for name in ("conv.weight", "fc.weight"):
                chain = [t for t in f.info()["tensors"] if t["name"] == name][0]["chain"]
                assert chain == [{"id": "uniform", "step": step}]
            w = f.get_tensor("conv.weight")
        levels = w.astype(np.float64) / step
        np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)
    assert step_from_qp(-38) == pytest.approx(2 ** -9.5)


def test_lossless_float_storage_is_exact():
    model = _model()
    out = nncodec.decode(nncodec.encode(model, lossless=True))
    for k in model:
        np.testing.assert_array_equal(out[k], model[k])


def test_bfloat16_from_torch_and_from_numpy_bits():
    torch = pytest.importorskip("torch")
    t = torch.randn(64, 32).to(torch.bfloat16)
    data = nncodec.encode({"w": t}, target_snr=35)
    back = nncodec.decode(data, framework="torch")["w"]
    assert back.dtype == torch.bfloat16 and back.shape == t.shape
    assert _snr(t.float().numpy(), back.float().numpy()) > 34
    bits = t.view(torch.int16).numpy().view(np.uint16)
    assert nncodec.encode({"w": bits}, dtypes={"w": "bfloat16"}, target_snr=35) == data
    np_back = nncodec.decode(data)["w"]
    assert np_back.dtype == np.uint16
    np.testing.assert_array_equal(bf16.to_float32(np_back), back.float().numpy())


def test_non_finite_values_are_kept_exactly():
    w = np.array([[1.0, np.nan], [np.inf, -2.0]], np.float32)
    out = nncodec.decode(nncodec.encode({"w": w}))["w"]
    np.testing.assert_array_equal(out, w)


def test_deterministic_bytes():
    a = nncodec.encode(_model(), target_snr=30, metadata={"b": "2", "a": "1"})
    b = nncodec.encode(_model(), target_snr=30, metadata={"a": "1", "b": "2"})
    assert a == b


def test_save_load_and_lazy_open(tmp_path):
    model = _model()
    path = tmp_path / "m.nnc"
    nncodec.save_file(model, path, target_snr=30, metadata={"source": "test"})
    full = nncodec.load_file(path)
    with nncodec.open(path) as f:
        assert f.keys() == list(model)
        assert f.metadata()["source"] == "test"
        np.testing.assert_array_equal(f.get_tensor("fc.weight"), full["fc.weight"])
        info = f.info()
        assert info["total_bytes"] == path.stat().st_size
        assert f.verify() == []


def test_lazy_open_reads_only_what_is_asked(tmp_path):
    model = {f"layer{i}.weight": np.random.default_rng(i).standard_normal((64, 64)).astype(np.float32)
             for i in range(8)}
    data = nncodec.encode(model)

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    src = Counting(data)
    with nncodec.open(src) as f:
        header = Counting.read_bytes
        f.get_tensor("layer3.weight")
        one = [t["bytes"] for t in f.info()["tensors"] if t["name"] == "layer3.weight"][0]
    assert Counting.read_bytes == header + one
    assert Counting.read_bytes < len(data) / 4


def test_torch_framework_output():
    torch = pytest.importorskip("torch")
    out = nncodec.decode(nncodec.encode(_model()), framework="torch")
    assert all(isinstance(v, torch.Tensor) for v in out.values())
    assert out["fc.weight"].dtype == torch.float16 and out["mask"].dtype == torch.bool


def test_corruption_is_reported_with_project_errors():
    data = bytearray(nncodec.encode(_model()))
    with nncodec.open(bytes(data)) as f:
        fc = [t for t in f.info()["tensors"] if t["name"] == "fc.weight"][0]
    data[fc["offset"] + fc["bytes"] // 2] ^= 0x10
    with pytest.raises(ChecksumError):
        nncodec.decode(bytes(data))
    with pytest.raises(FormatError):
        nncodec.decode(bytes(data[:100]))
    with nncodec.open(bytes(data)) as f:
        problems = f.verify()
        np.testing.assert_array_equal(f.get_tensor("mask"), _model()["mask"])  # others still load
    assert len(problems) == 1 and "fc.weight" in problems[0]


def test_settings_misuse_is_explained():
    with pytest.raises(ValueError, match="at most one"):
        Settings(step=0.1, qp=-30)
    with pytest.raises(ValueError, match="choose one of"):
        nncodec.encode(_model(), backend="zip")
    with pytest.raises(ValueError, match="too small"):
        nncodec.encode({"w": np.ones((2, 2), np.float32) * 1e6}, step=1e-6)
    with pytest.raises(TypeError):
        nncodec.encode({"w": np.ones(3, np.complex64)})


float_dtypes = st.sampled_from([np.float32, np.float16, np.float64, "bfloat16"])
names = st.text(min_size=1, max_size=12)


@st.composite
def tensor_dicts(draw):
    n = draw(st.integers(0, 5))
    out, dtypes = {}, {}
    for name in draw(st.lists(names, min_size=n, max_size=n, unique=True)):
        dtype = draw(float_dtypes)
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=6, min_side=0, max_side=4))
        values = draw(hnp.arrays(np.float32 if dtype == "bfloat16" else dtype, shape,
                                 elements=st.floats(-4, 4, width=16)))
        if dtype == "bfloat16":
            values, dtypes[name] = bf16.from_float32(values), "bfloat16"
        out[name] = values
    return out, dtypes


def _as_f64(arr, dtype):
    return (bf16.to_float32(arr) if dtype == "bfloat16" else arr).astype(np.float64)


def _ulp(decoded, dtype):
    """The spacing of each decoded value's dtype at that value, as float64 (1-D)."""
    if dtype == "bfloat16":
        x = np.abs(bf16.to_float32(decoded)).astype(np.float32)
        return np.spacing(x).astype(np.float64).ravel() * 65536.0
    return np.spacing(np.abs(decoded)).astype(np.float64).ravel()


def _mostly_one_value():
    # 242 weights of 3.59375 and one of -4: a step of about 1.5 leaves the 242 exact and the
    # -4 off by 0.3 (7.6% of the largest value) at 44.7 dB, above the 40 dB asked for. The
    # API promises the SNR, not a bound on each element (the assertion was once per element)
    v = np.full(243, 3.59375, np.float32)
    v[0] = -4.0
    return {"x": v.reshape(3, 3, 3, 3, 3)}, {}


@given(tensor_dicts(), st.sampled_from(["cabac", "constriction"]))
@example(_mostly_one_value(), "cabac")
def test_random_tensor_dicts_roundtrip(case, backend):
    tensors, dtypes = case
    out = nncodec.decode(nncodec.encode(tensors, dtypes=dtypes, target_snr=40, snr_scope="tensor",
                                        backend=backend))
    assert list(out) == list(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        a, b = _as_f64(v, dtypes.get(k)), _as_f64(out[k], dtypes.get(k))
        # what the pipeline promises (and measures so): per tensor, the weight SNR
        # 10 log10(sum w^2 / sum (w - w_hat)^2) of the decoded values reaches target_snr for
        # tensors of two or more dimensions and small_snr for the others, up to the rounding of
        # the decoded values to their dtype where that precision is the limit: the error is at
        # most that of the target plus one unit in the last place of each decoded value
        target = 40.0 if v.ndim >= 2 else DEFAULT_SMALL_SNR
        sig, err = float(np.dot(a.ravel(), a.ravel())), float(np.sum((a - b) ** 2))
        if err > 0.0 and 10.0 * math.log10(sig / err) < target:
            ulp = _ulp(out[k], dtypes.get(k))
            allowed = math.sqrt(sig * 10.0 ** (-target / 10.0)) + math.sqrt(float(np.dot(ulp, ulp)))
            assert math.sqrt(err) <= allowed, (k, v.ndim, sig, err, allowed)


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_project_errors(data):
    try:
        nncodec.decode(data)
    except NNCodecError:
        pass


def test_unsigned_integers_are_exact():
    t = {"u16": np.array([1, 2, 65535], np.uint16), "u32": np.array([2**32 - 1, 5], np.uint32),
         "u64": np.array([2**64 - 1, 0], np.uint64), "u8": np.arange(256, dtype=np.uint8)}
    out = nncodec.decode(nncodec.encode(t))
    for k, v in t.items():
        assert out[k].dtype == v.dtype
        np.testing.assert_array_equal(out[k], v)


def test_compiled_dequantization_rounds_as_numpy():
    # decode uses a one-pass loop for float32 uniform tensors; it must round
    # exactly as (levels.astype(float64) * step).astype(float32), overflow and
    # subnormals included
    from nncodec_ext import _quant

    rng = np.random.default_rng(11)
    q = rng.integers(-2**31, 2**31, 20000, dtype=np.int64).astype(np.int32)
    q[:6] = [0, 1, -1, 2**31 - 1, -2**31, 3]
    for step in (2.0**-6, 0.1, 3.7e-5, 1e30, 2.5e38, 1e-40):
        out = np.empty(q.size, np.float32)
        _quant.dequantize_into(q, step, out)
        with np.errstate(over="ignore"):
            ref = (q.astype(np.float64) * step).astype(np.float32)
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))
        # in place, in the levels' own buffer (as decoding does)
        inplace = q.copy()
        _quant.dequantize_into(inplace, step, inplace.view(np.float32))
        assert np.array_equal(inplace.view(np.uint32), ref.view(np.uint32))


def test_compiled_sum_of_squares_is_the_one_of_the_error_pass():
    # the step search takes the signal from sum_sq and the noise from sq_error: the signal
    # must be the same float either way (same order of additions)
    from nncodec_ext import _quant

    rng = np.random.default_rng(12)
    for w in (rng.standard_normal(30001).astype(np.float32), rng.laplace(0, 3, 777), np.zeros(0)):
        assert _quant.sum_sq(w) == _quant.sq_error(w, 0.37)[0]


@pytest.mark.parametrize("settings", [dict(target_snr=30), dict(method="kmeans", k=16),
                                      dict(target_snr=25, dq=True, rdoq=True)])
def test_threads_do_not_change_the_bytes(settings, monkeypatch):
    monkeypatch.setattr(nncodec._parallel, "PARALLEL_MIN_VALUES", 0)  # small tensors: threads all the same
    model = {**_model(1), **{f"layer{i}.weight": (np.random.default_rng(i).standard_normal((24, 40)) * 0.1)
                             .astype(np.float32) for i in range(6)}}
    one = nncodec.encode(model, threads=1, **settings)
    for n in (2, 3, 8):
        assert nncodec.encode(model, threads=n, **settings) == one
    ref = nncodec.decode(one, threads=1)
    for n in (2, 5):
        out = nncodec.decode(one, threads=n)
        assert list(out) == list(ref)
        for k in ref:
            assert out[k].dtype == ref[k].dtype and np.array_equal(out[k], ref[k], equal_nan=True)


def test_threads_setting_and_environment(monkeypatch):
    model = _model(2)
    with pytest.raises(ValueError, match="threads"):
        nncodec.encode(model, threads=0)
    with pytest.raises(ValueError, match="threads"):
        nncodec.decode(nncodec.encode(model), threads=-1)
    monkeypatch.setenv("NNCODEC_THREADS", "3")
    assert nncodec.default_threads() == 3
    monkeypatch.setenv("NNCODEC_THREADS", "many")
    with pytest.raises(ValueError, match="NNCODEC_THREADS"):
        nncodec.default_threads()
    monkeypatch.delenv("NNCODEC_THREADS")
    assert 1 <= nncodec.default_threads() <= 8


def test_threaded_decode_reports_the_damaged_tensor(monkeypatch):
    monkeypatch.setattr(nncodec._parallel, "PARALLEL_MIN_VALUES", 0)
    model = {f"t{i}": np.random.default_rng(i).standard_normal((16, 32)).astype(np.float32) for i in range(8)}
    data = bytearray(nncodec.encode(model, target_snr=30))
    with nncodec.open(bytes(data)) as f:
        info = f._reader.record_info("t5")
    data[info.offset + info.length // 2] ^= 0x10
    with pytest.raises(ChecksumError, match="t5"):
        nncodec.decode(bytes(data), threads=4)
    with nncodec.open(bytes(data)) as f:
        problems = f.verify(threads=4)
    assert len(problems) == 1 and "t5" in problems[0]
    seen = []
    with nncodec.open(nncodec.encode(model, target_snr=30)) as f:
        got = dict(f.iter_tensors(["t3", "t1"], threads=2, progress=lambda n, i, t: seen.append((n, i, t))))
    assert list(got) == ["t3", "t1"] and seen[-1] == ("", 2, 2) and seen[0] == ("t3", 0, 2)


def test_ordered_map_runs_in_workers_keeps_order_and_raises():
    import threading
    import time as _time

    from nncodec._parallel import ordered_map as _ordered_map

    def slow(i):
        _time.sleep(0.002 * (i % 3))
        return i, threading.current_thread().name

    out = list(_ordered_map(slow, range(20), 3))
    assert [i for i, _ in out] == list(range(20))
    assert all(name.startswith("nncodec") for _, name in out)
    assert all(name == threading.current_thread().name for _, name in _ordered_map(slow, range(3), 1))

    def bad(i):
        if i == 7:
            raise FormatError("item 7 is bad")
        return i

    got = []
    with pytest.raises(FormatError, match="item 7"):
        for v in _ordered_map(bad, range(50), 4):
            got.append(v)
    assert got == list(range(7))


def test_small_1d_steps_sit_on_the_qp_grid_and_keep_their_snr():
    from nncodec.container import qp_grid_step

    rng = np.random.default_rng(5)
    model = {"w": rng.standard_normal((32, 64)).astype(np.float32),
             "b_small": (rng.standard_normal(40) * 0.01).astype(np.float32),
             "b_large": (rng.standard_normal(3000) * 0.01).astype(np.float32)}
    data = nncodec.encode(model, target_snr=30)
    out = nncodec.decode(data)
    with nncodec.open(data) as f:
        steps = {t["name"]: t["chain"][-1]["step"] for t in f.info()["tensors"]}
    grid = {qp_grid_step(e) for e in range(-160, 80)}
    assert steps["b_small"] in grid
    assert steps["b_large"] not in grid  # a large tensor keeps the step found for it
    for name in ("b_small", "b_large"):
        assert _snr(model[name], out[name]) >= DEFAULT_SMALL_SNR
    # the small tensor's step is the largest on the grid that reaches the target
    e = next(e for e in range(-160, 80) if qp_grid_step(e) == steps["b_small"])
    coarser = np.rint(model["b_small"] / qp_grid_step(e + 1)) * qp_grid_step(e + 1)
    assert _snr(model["b_small"], coarser.astype(np.float32)) < DEFAULT_SMALL_SNR
