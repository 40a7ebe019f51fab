"""Tests of model file I/O (nncodec/io.py): .pt state_dicts and checkpoints, safetensors, npz."""
from __future__ import annotations

import json
import os
import struct
import sys
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncodec import io as mio
from nncodec.errors import FormatError, NNCodecError
from nncodec.io import (DTYPE_NAMES, NPZ_METADATA_KEY, MissingDependencyError, ModelData,
                        ModelFormatError, ModelIOWarning, OutputExistsError, PickledModuleError,
                        PickledObjectError, UnsupportedModelError, bf16_to_float32,
                        float32_to_bf16, read_model, write_model)

torch = pytest.importorskip("torch")

SUFFIX = {"torch": ".pt", "safetensors": ".safetensors", "npz": ".npz"}
FORMATS = list(SUFFIX)


def sample() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One tensor of every dtype, plus zero-size and scalar tensors and unicode names."""
    rng = np.random.default_rng(7)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f32[0, :3] = [np.nan, np.inf, -0.0]
    tensors = {
        "conv.weight": f32,
        "half": rng.standard_normal((4, 2)).astype(np.float16),
        "brain": float32_to_bf16(rng.standard_normal((2, 3, 2)).astype(np.float32)),
        "bits.u16": np.arange(6, dtype=np.uint16).reshape(2, 3) * 1000,  # a real uint16, not bf16
        "double": rng.standard_normal(7),
        "steps": np.array([-(2 ** 62), -1, 0, 2 ** 62], dtype=np.int64),
        "i32": np.arange(-4, 4, dtype=np.int32).reshape(2, 4),
        "i16": np.array([-32768, 32767], dtype=np.int16),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u8": np.arange(256, dtype=np.uint8),
        "mask": np.array([[True, False], [False, True]]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "empty_bf16": np.zeros((4, 0), dtype=np.uint16),
        "scalar": np.array(2.5, dtype=np.float32),
        "scalar_i": np.array(-3, dtype=np.int64),
        "层.权重": np.ones((2, 2), dtype=np.float32),
        "ü/ß 🙂": np.full(3, 7, dtype=np.int32),
    }
    dtypes = {n: ("bfloat16" if n in ("brain", "empty_bf16") else a.dtype.name)
              for n, a in tensors.items()}
    return tensors, dtypes


def assert_same(got: ModelData, tensors: dict, dtypes: dict) -> None:
    assert set(got.tensors) == set(tensors)
    assert got.dtypes == dtypes
    for name, want in tensors.items():
        a = got.tensors[name]
        assert a.dtype == want.dtype, name
        assert a.shape == want.shape, name
        assert a.dtype.isnative and a.flags.c_contiguous and a.flags.owndata | (a.base is not None)
        assert a.tobytes() == want.tobytes(), name  # bit-exact, NaN and -0.0 included


def tbytes(t) -> bytes:
    t = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
    return t.numpy().tobytes()


def no_temp_files(directory) -> bool:
    return not [p for p in os.listdir(directory) if p.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_dtype(tmp_path, fmt):
    tensors, dtypes = sample()
    path = tmp_path / ("model" + SUFFIX[fmt])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no metadata given: nothing to warn about
        write_model(path, tensors, dtypes=dtypes)
        got = read_model(path)
    assert isinstance(got, ModelData)
    assert_same(got, tensors, dtypes)
    assert got.metadata == {}
    assert list(got.tensors) == (sorted(tensors, key=lambda n: (-tensors[n].itemsize, n))
                                 if fmt == "safetensors" else list(tensors))
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dtypes_may_list_only_bf16(tmp_path, fmt):
    tensors, dtypes = sample()
    only_bf16 = {n: d for n, d in dtypes.items() if d == "bfloat16"}
    write_model(tmp_path / ("m" + SUFFIX[fmt]), tensors, dtypes=only_bf16)
    assert read_model(tmp_path / ("m" + SUFFIX[fmt])).dtypes == dtypes


@pytest.mark.parametrize("fmt", FORMATS)
def test_fmt_overrides_suffix(tmp_path, fmt):
    tensors, dtypes = sample()
    path = tmp_path / "weights.data"
    write_model(path, tensors, dtypes=dtypes, fmt=fmt)
    assert_same(read_model(path, fmt=fmt), tensors, dtypes)
    with pytest.raises(UnsupportedModelError, match="fmt="):
        read_model(path)


def test_suffixes(tmp_path):
    assert mio.guess_format("a/b.PT") == "torch"
    assert mio.guess_format("pytorch_model.bin") == "torch"
    assert mio.guess_format("x.pth") == mio.guess_format("x.ckpt") == "torch"
    assert mio.guess_format("m.SafeTensors") == "safetensors"
    assert mio.guess_format("m.npz") == "npz"
    assert mio.guess_format("m.npz", fmt="pt") == "torch"
    with pytest.raises(ValueError, match="unknown model format"):
        mio.guess_format("m.npz", fmt="onnx")
    with pytest.raises(UnsupportedModelError):
        write_model(tmp_path / "m.onnx", {"a": np.zeros(2)})


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_metadata_round_trip(tmp_path, fmt):
    tensors, dtypes = sample()
    meta = {"format": "pt", "note": "ünïcode ✓", "json": json.dumps({"a": [1, 2]}), "": "empty"}
    path = tmp_path / ("m" + SUFFIX[fmt])
    write_model(path, tensors, dtypes=dtypes, metadata=meta)
    got = read_model(path)
    assert got.metadata == meta
    assert_same(got, tensors, dtypes)


def test_metadata_only_npz_and_plain_npz_readers(tmp_path):
    write_model(tmp_path / "m.npz", {"w": np.ones(2, np.float32)}, metadata={"k": "v"})
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:  # plain numpy reads it
        assert sorted(z.files) == sorted(["w", NPZ_METADATA_KEY])
        note = json.loads(str(z[NPZ_METADATA_KEY][()]))
    assert note["metadata"] == {"k": "v"} and note["dtypes"] == {}
    write_model(tmp_path / "plain.npz", {"w": np.ones(2, np.float32)})  # nothing to note
    with np.load(tmp_path / "plain.npz") as z:
        assert z.files == ["w"]


def test_pt_metadata_warns(tmp_path):
    with pytest.warns(ModelIOWarning, match="no place for metadata"):
        write_model(tmp_path / "m.pt", {"w": np.ones(2, np.float32)}, metadata={"k": "v"})
    assert read_model(tmp_path / "m.pt").metadata == {}


def test_same_input_same_bytes(tmp_path):
    tensors, dtypes = sample()
    for fmt in ("safetensors", "npz"):
        a, b = tmp_path / ("a" + SUFFIX[fmt]), tmp_path / ("b" + SUFFIX[fmt])
        write_model(a, tensors, dtypes=dtypes, metadata={"y": "1", "x": "2"})
        write_model(b, tensors, dtypes=dtypes, metadata={"x": "2", "y": "1"})
        assert a.read_bytes() == b.read_bytes()
    shuffled = dict(reversed(list(tensors.items())))
    write_model(tmp_path / "c.safetensors", shuffled, dtypes=dtypes, metadata={"x": "2", "y": "1"})
    assert (tmp_path / "c.safetensors").read_bytes() == (tmp_path / "a.safetensors").read_bytes()


def test_cross_format_chain(tmp_path):
    tensors, dtypes = sample()
    sd = {n: (torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
              if dtypes[n] == "bfloat16" else torch.from_numpy(a.copy()))
          for n, a in tensors.items()}
    torch.save(sd, tmp_path / "a.pt")
    first = read_model(tmp_path / "a.pt")
    assert_same(first, tensors, dtypes)
    write_model(tmp_path / "b.npz", *first)
    second = read_model(tmp_path / "b.npz")
    write_model(tmp_path / "c.safetensors", *second)
    third = read_model(tmp_path / "c.safetensors")
    write_model(tmp_path / "d.pt", third.tensors, third.dtypes)
    for got in (second, third, read_model(tmp_path / "d.pt")):
        assert_same(got, tensors, dtypes)
    back = torch.load(tmp_path / "d.pt", weights_only=True)
    for name, t in sd.items():
        assert back[name].dtype == t.dtype and tbytes(back[name]) == tbytes(t), name


def test_write_accepts_torch_tensors(tmp_path):
    w = torch.randn(3, 4, dtype=torch.bfloat16, requires_grad=True)
    p = torch.nn.Parameter(torch.ones(2))
    write_model(tmp_path / "m.safetensors", {"w": w, "b": torch.arange(3), "p": p})
    got = read_model(tmp_path / "m.safetensors")
    assert got.dtypes == {"w": "bfloat16", "b": "int64", "p": "float32"}
    assert np.array_equal(bf16_to_float32(got.tensors["w"]), w.detach().float().numpy())


# --------------------------------------------------------------------------------------------
# Interoperability with the reference readers and writers


def test_safetensors_interop_with_reference(tmp_path):
    st_torch = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open

    tensors, dtypes = sample()
    write_model(tmp_path / "ours.safetensors", tensors, dtypes=dtypes, metadata={"k": "v"})
    ref = st_torch.load_file(tmp_path / "ours.safetensors")
    with safe_open(tmp_path / "ours.safetensors", framework="pt") as f:
        assert f.metadata() == {"k": "v"}
    for name, a in tensors.items():
        t = ref[name]
        if dtypes[name] == "bfloat16":
            assert t.dtype == torch.bfloat16
            t = t.view(torch.int16)
        assert t.numpy().tobytes() == a.tobytes() and tuple(t.shape) == a.shape, name

    sd = {n: torch.from_numpy(a.copy()) for n, a in tensors.items() if dtypes[n] != "bfloat16"}
    sd["bf"] = torch.tensor([1.5, -2.0, 3.0e38], dtype=torch.bfloat16)
    st_torch.save_file(sd, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    got = read_model(tmp_path / "ref.safetensors")
    assert got.metadata == {"format": "pt"} and got.dtypes["bf"] == "bfloat16"
    assert np.array_equal(bf16_to_float32(got.tensors["bf"]), sd["bf"].float().numpy())
    for name, t in sd.items():
        if name != "bf":
            assert got.tensors[name].tobytes() == t.numpy().tobytes(), name


def test_npz_written_by_numpy(tmp_path):
    np.savez(tmp_path / "m.npz", w=np.ones((2, 2), np.float32), ids=np.arange(3))
    np.savez_compressed(tmp_path / "c.npz", w=np.ones((2, 2), np.float32),
                        big=np.arange(3, dtype=">i4"))
    got = read_model(tmp_path / "m.npz")
    assert got.dtypes == {"w": "float32", "ids": "int64"} and got.metadata == {}
    got = read_model(tmp_path / "c.npz")
    assert got.tensors["big"].dtype == np.dtype("int32") and got.tensors["big"].dtype.isnative
    assert got.tensors["big"].tolist() == [0, 1, 2]


def test_npz_names_that_np_savez_cannot_take(tmp_path):
    tensors = {"file": np.ones(1), "allow_pickle": np.zeros(1), "a.npy": np.arange(2),
               "": np.ones(3)}
    write_model(tmp_path / "m.npz", tensors)
    got = read_model(tmp_path / "m.npz")
    assert list(got.tensors) == list(tensors)


# --------------------------------------------------------------------------------------------
# PyTorch checkpoints


def make_state_dict():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    return net, net.state_dict()


def check_matches(got: ModelData, sd) -> None:
    assert list(got.tensors) == list(sd)
    for name, t in sd.items():
        assert np.array_equal(got.tensors[name], t.numpy()), name


def test_plain_state_dict(tmp_path):
    net, sd = make_state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_model(tmp_path / "sd.pt")
    check_matches(got, sd)
    assert got.metadata == {}
    assert got.dtypes["1.num_batches_tracked"] == "int64"
    # and it loads back into the model
    write_model(tmp_path / "back.pt", got.tensors, got.dtypes)
    net.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True))


def test_checkpoint_unwrapped(tmp_path):
    net, sd = make_state_dict()
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(4, 3)}}, "param_groups": [{"lr": 0.1}]}
    ckpt = {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": optimizer, "loss": 0.5}
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.warns(ModelIOWarning, match="model_state_dict") as rec:
        got = read_model(tmp_path / "ckpt.pt")
    assert "epoch" in str(rec[0].message) and "optimizer_state_dict" in str(rec[0].message)
    check_matches(got, sd)
    assert got.metadata["nncodec.io.checkpoint_key"] == "model_state_dict"
    dropped = json.loads(got.metadata["nncodec.io.dropped"])
    assert dropped == ["epoch", "optimizer_state_dict", "loss"]


@pytest.mark.parametrize("build, where", [
    (lambda sd, other: {"model": {"state_dict": sd, "config": {"depth": 2}}, "step": 7},
     "model/state_dict"),
    (lambda sd, other: {"state_dict": sd, "model": other}, "state_dict"),  # first common key wins
    (lambda sd, other: {"model": "resnet", "weights": sd}, "weights"),  # not a mapping: passed over
    (lambda sd, other: {"net": {"arch": "mlp"}, "params": sd}, "params"),  # no tensors: passed over
    (lambda sd, other: {"ema_model": sd, "step": 1}, "ema_model"),  # the only state_dict
])
def test_checkpoint_rule(tmp_path, build, where):
    _, sd = make_state_dict()
    other = {"x": torch.zeros(2)}
    torch.save(build(sd, other), tmp_path / "c.pt")
    with pytest.warns(ModelIOWarning):
        got = read_model(tmp_path / "c.pt")
    check_matches(got, sd)
    assert got.metadata["nncodec.io.checkpoint_key"] == where


def test_checkpoint_key_argument(tmp_path):
    _, sd = make_state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd, "ema": {"model": ema}}, tmp_path / "c.pt")
    with pytest.warns(ModelIOWarning):
        check_matches(read_model(tmp_path / "c.pt", key=["ema", "model"]), ema)
    with pytest.warns(ModelIOWarning):
        check_matches(read_model(tmp_path / "c.pt", key="state_dict"), sd)
    with pytest.raises(UnsupportedModelError, match="no entry"):
        read_model(tmp_path / "c.pt", key="nope")
    with pytest.raises(ValueError, match="key="):
        read_model(tmp_path / "x.npz", key="nope")


def test_checkpoint_without_or_with_several_state_dicts(tmp_path):
    _, sd = make_state_dict()
    torch.save({"a": sd, "b": sd, "epoch": 1}, tmp_path / "two.pt")
    with pytest.raises(UnsupportedModelError, match="several state_dicts.*key="):
        read_model(tmp_path / "two.pt")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "none.pt")
    with pytest.raises(UnsupportedModelError, match="found no state_dict"):
        read_model(tmp_path / "none.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(UnsupportedModelError, match="not a mapping"):
        read_model(tmp_path / "tensor.pt")
    torch.save({}, tmp_path / "empty.pt")
    assert read_model(tmp_path / "empty.pt") == ({}, {}, {})


def test_non_tensor_entries_of_a_state_dict_are_dropped(tmp_path):
    torch.save({"w": torch.ones(2), "note": "hello", "n": 3}, tmp_path / "m.pt")
    with pytest.warns(ModelIOWarning, match="note, n"):
        got = read_model(tmp_path / "m.pt")
    assert list(got.tensors) == ["w"]


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


@pytest.mark.parametrize("model", [torch.nn.Linear(2, 3), TinyNet()], ids=["Linear", "custom"])
def test_whole_module_refused(tmp_path, model):
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(PickledModuleError) as info:
        read_model(tmp_path / "whole.pt")
    message = str(info.value)
    assert 'torch.save(model.state_dict(), "model.pt")' in message
    assert type(model).__name__ in message
    assert isinstance(info.value, NNCodecError) and not isinstance(info.value, FormatError)


def test_other_pickled_objects_refused(tmp_path):
    torch.save({"w": torch.ones(2), "when": np.float64(3.0)}, tmp_path / "np.pt")
    with pytest.raises(PickledObjectError, match="state_dict"):
        read_model(tmp_path / "np.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_torchscript_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PickledModuleError, match="TorchScript.*state_dict"):
            read_model(tmp_path / "ts.pt")


def test_shared_storage_and_views(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    w = base.view(3, 4)
    sd = {"w": w, "tied": w, "row": w[1], "col": w[:, 2], "t": w.t()}
    torch.save(sd, tmp_path / "shared.pt")
    got = read_model(tmp_path / "shared.pt")
    for name, t in sd.items():
        assert np.array_equal(got.tensors[name], t.numpy()), name
        assert got.tensors[name].flags.c_contiguous
    arrays = list(got.tensors.values())
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert not np.shares_memory(arrays[i], arrays[j])
    # writing a view of a large array saves the view only
    big = np.zeros(1 << 20, dtype=np.float32)
    write_model(tmp_path / "view.pt", {"v": big[:4], "s": big[::1 << 18]})
    assert os.path.getsize(tmp_path / "view.pt") < 64 * 1024
    assert read_model(tmp_path / "view.pt").tensors["s"].shape == (4,)


def test_unsupported_torch_dtype(tmp_path):
    torch.save({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.pt")
    with pytest.raises(UnsupportedModelError, match="complex64"):
        read_model(tmp_path / "c.pt")
    torch.save({"s": torch.eye(3).to_sparse()}, tmp_path / "s.pt")
    with pytest.raises(UnsupportedModelError, match="sparse"):
        read_model(tmp_path / "s.pt")


def test_missing_torch(tmp_path, monkeypatch):
    write_model(tmp_path / "m.safetensors", {"b": np.zeros(2, np.uint16)}, dtypes={"b": "bfloat16"})
    write_model(tmp_path / "m.npz", {"b": np.zeros(2, np.uint16)}, dtypes={"b": "bfloat16"})
    torch.save({"w": torch.ones(2)}, tmp_path / "m.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(MissingDependencyError, match="pip install torch") as info:
        read_model(tmp_path / "m.pt")
    assert isinstance(info.value, ImportError)
    with pytest.raises(MissingDependencyError, match="pip install torch"):
        write_model(tmp_path / "out.pt", {"w": np.ones(2)})
    assert not (tmp_path / "out.pt").exists()
    # the other formats need no torch, bfloat16 included
    assert read_model(tmp_path / "m.safetensors").dtypes == {"b": "bfloat16"}
    assert read_model(tmp_path / "m.npz").dtypes == {"b": "bfloat16"}


# --------------------------------------------------------------------------------------------
# Writing: overwrite, atomicity, argument checks


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_needs_force(tmp_path, fmt):
    path = tmp_path / ("m" + SUFFIX[fmt])
    write_model(path, {"a": np.ones(3, np.float32)})
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="force=True") as info:
        write_model(path, {"a": np.zeros(3, np.float32)})
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, NNCodecError)
    assert path.read_bytes() == before
    os.chmod(path, 0o640)
    write_model(path, {"a": np.zeros(3, np.float32)}, force=True)
    assert read_model(path).tensors["a"].tolist() == [0, 0, 0]
    assert os.stat(path).st_mode & 0o777 == 0o640  # force keeps the file's permissions
    assert no_temp_files(tmp_path)


def test_new_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_model(tmp_path / "m.npz", {"a": np.ones(1)})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o640


def test_file_appearing_during_write_is_not_clobbered(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    real = mio._write_safetensors

    def racing(f, *args):
        path.write_bytes(b"someone else's")
        real(f, *args)

    monkeypatch.setattr(mio, "_write_safetensors", racing)
    with pytest.raises(OutputExistsError):
        write_model(path, {"a": np.ones(2)})
    assert path.read_bytes() == b"someone else's"
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, fmt, existing):
    path = tmp_path / ("m" + SUFFIX[fmt])
    if existing:
        path.write_bytes(b"old")

    class Boom(RuntimeError):
        pass

    def half_then_fail(*args):
        f = args[1] if fmt == "torch" else args[0]  # torch.save(obj, f); _write_x(f, ...)
        f.write(b"x" * 1000)
        raise Boom

    if fmt == "torch":
        monkeypatch.setattr(torch, "save", half_then_fail)
    else:
        monkeypatch.setattr(mio, "_write_" + fmt, half_then_fail)
    with pytest.raises(Boom):
        write_model(path, {"a": np.ones(100)}, force=True)
    assert os.listdir(tmp_path) == (["m" + SUFFIX[fmt]] if existing else [])
    if existing:
        assert path.read_bytes() == b"old"


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np.lib.format, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_model(tmp_path / "m.npz", {"a": np.ones(1)})
    assert os.listdir(tmp_path) == []


def test_write_argument_checks(tmp_path):
    p = tmp_path / "m.safetensors"
    with pytest.raises(TypeError, match="uint16 bits"):
        write_model(p, {"w": np.ones(2, np.float32)}, dtypes={"w": "bfloat16"})
    with pytest.raises(TypeError, match="declared float16"):
        write_model(p, {"w": np.ones(2, np.float32)}, dtypes={"w": "float16"})
    with pytest.raises(TypeError, match="unsupported dtype"):
        write_model(p, {"w": np.ones(2, np.complex64)})
    with pytest.raises(TypeError, match="unsupported dtype"):
        write_model(p, {"w": np.ones(2)}, dtypes={"w": "float8"})
    with pytest.raises(ValueError, match="not given"):
        write_model(p, {"w": np.ones(2)}, dtypes={"v": "float64"})
    with pytest.raises(TypeError, match="metadata"):
        write_model(p, {"w": np.ones(2)}, metadata={"n": 3})
    with pytest.raises(TypeError, match="names must be strings"):
        write_model(p, {1: np.ones(2)})
    with pytest.raises(ValueError, match="reserved"):
        write_model(p, {"__metadata__": np.ones(2)})
    with pytest.raises(ValueError, match="reserved"):
        write_model(tmp_path / "m.npz", {NPZ_METADATA_KEY: np.ones(2)})
    assert os.listdir(tmp_path) == []


def test_big_endian_input_written_native(tmp_path):
    write_model(tmp_path / "m.safetensors", {"w": np.arange(4, dtype=">f8")})
    got = read_model(tmp_path / "m.safetensors")
    assert got.tensors["w"].dtype == np.float64 and got.tensors["w"].tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------
# Bad input files


def st_file(header: dict, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("blob, why", [
    (b"", "shorter"),
    (b"\x10\x00", "shorter"),
    (struct.pack("<Q", 1 << 40) + b"{}", "limit"),
    (struct.pack("<Q", 100) + b"{}", "past the end"),
    (st_file({}, raw_header=b"{nope"), "not JSON"),
    (st_file({}, raw_header=b"\xff\xfe"), "not JSON"),
    (st_file({}, raw_header=b"[1, 2]"), "not a JSON object"),
    (st_file({}, raw_header=b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
                            b' "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
             data=bytes(8)), "duplicate"),
    (st_file({"__metadata__": {"k": 1}}), "__metadata__"),
    (st_file({"a": {"dtype": "F32", "shape": [2]}}), "exactly"),
    (st_file({"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), "dtype"),
    (st_file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)), "shape"),
    (st_file({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, bytes(4)), "shape"),
    (st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, bytes(4)),
     "data_offsets"),
    (st_file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
     "bytes of data"),
    (st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "previous"),
    (st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)), "cover"),
    (st_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(2)), "cover"),
    (st_file({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x00\x07"), "BOOL"),
    (st_file({"a": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 4]}},
             bytes(4)), "bytes of data"),
])
def test_bad_safetensors(tmp_path, blob, why):
    (tmp_path / "bad.safetensors").write_bytes(blob)
    with pytest.raises(ModelFormatError, match=why) as info:
        read_model(tmp_path / "bad.safetensors")
    assert isinstance(info.value, FormatError)


def test_safetensors_unsupported_dtype(tmp_path):
    (tmp_path / "f8.safetensors").write_bytes(
        st_file({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, bytes(2)))
    with pytest.raises(UnsupportedModelError, match="F8_E4M3"):
        read_model(tmp_path / "f8.safetensors")


def test_bad_npz(tmp_path):
    cases = {"garbage.npz": b"not a zip at all", "empty.npz": b"", "cut.npz": None,
             "single.npz": None, "objects.npz": None, "text.npz": None, "note.npz": None,
             "badnote.npz": None, "stray.npz": None, "c64.npz": None}
    write_model(tmp_path / "full.npz", {"w": np.arange(1000.0)})
    cases["cut.npz"] = (tmp_path / "full.npz").read_bytes()[:3000]
    for name, blob in cases.items():
        if blob is not None:
            (tmp_path / name).write_bytes(blob)
    with open(tmp_path / "single.npz", "wb") as f:
        np.save(f, np.ones(3))
    np.savez(tmp_path / "objects.npz", o=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "text.npz", s=np.array(["abc"]))
    np.savez(tmp_path / "c64.npz", c=np.ones(2, np.complex64))
    np.savez(tmp_path / "note.npz", w=np.ones(2, np.float32),
             **{NPZ_METADATA_KEY: np.array(json.dumps(
                 {"format": "nncodec-npz", "version": 1, "dtypes": {"w": "bfloat16"}}))})
    np.savez(tmp_path / "badnote.npz", w=np.ones(2), **{NPZ_METADATA_KEY: np.array("{]")})
    with zipfile.ZipFile(tmp_path / "stray.npz", "w") as z:
        z.writestr("readme.txt", "hello")

    expected = {"garbage.npz": ModelFormatError, "empty.npz": ModelFormatError,
                "cut.npz": ModelFormatError, "single.npz": UnsupportedModelError,
                "objects.npz": UnsupportedModelError, "text.npz": UnsupportedModelError,
                "c64.npz": UnsupportedModelError, "note.npz": ModelFormatError,
                "badnote.npz": ModelFormatError, "stray.npz": ModelFormatError}
    for name, error in expected.items():
        with pytest.raises(error):
            read_model(tmp_path / name)


def test_bad_pt(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02not really a pickle" * 3)
    torch.save({"w": torch.ones(100)}, tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:500])
    for name in ("garbage.pt", "cut.pt"):
        with pytest.raises(ModelFormatError):
            read_model(tmp_path / name)


def test_missing_file_is_an_os_error(tmp_path):
    for fmt in FORMATS:
        with pytest.raises(FileNotFoundError):
            read_model(tmp_path / ("nope" + SUFFIX[fmt]))


@settings(deadline=None)
@given(data=st.data())
def test_mutated_files_raise_only_nncodec_errors(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("fuzz")
    fmt = data.draw(st.sampled_from(FORMATS))
    path = directory / ("m" + SUFFIX[fmt])
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.array([True, False])}
    write_model(path, tensors, metadata={"k": "v"} if fmt != "torch" else None)
    blob = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    path.write_bytes(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))
    try:
        read_model(path)
    except NNCodecError:
        pass


_ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "BF16", "BOOL", "I64", "U8", "F8_E5M2", "f32", 3]),
    "shape": st.lists(st.one_of(st.integers(-2, 4), st.just(1 << 62)), max_size=3),
    "data_offsets": st.lists(st.integers(-1, 40), min_size=1, max_size=3),
})


@settings(deadline=None)
@given(header=st.dictionaries(st.text(max_size=3), _ENTRY, max_size=3),
       data=st.binary(max_size=48),
       meta=st.none() | st.dictionaries(st.text(max_size=2), st.text(max_size=2)))
def test_safetensors_headers_raise_only_nncodec_errors(tmp_path_factory, header, data, meta):
    if meta is not None:
        header = {**header, "__metadata__": meta}
    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    path.write_bytes(st_file(header, data))
    try:
        got = read_model(path)
    except NNCodecError:
        return
    for name, a in got.tensors.items():  # what is accepted matches its header entry
        assert list(a.shape) == header[name]["shape"]
        assert a.nbytes == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]


# --------------------------------------------------------------------------------------------
# bfloat16 helpers


def test_bf16_helpers_match_torch():
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-40, 39, 2000),
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4028235e38, -3.4028235e38, 1e-45, 1.0 + 2 ** -8,
                  1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20], dtype=np.float32),
    ]).astype(np.float32)
    bits = float32_to_bf16(x)
    assert bits.dtype == np.uint16 and bits.shape == x.shape
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bits, want)  # round to nearest, ties to even, like torch
    back = bf16_to_float32(bits)
    assert back.dtype == np.float32
    via_torch = torch.from_numpy(want.view(np.int16)).view(torch.bfloat16).float().numpy()
    assert np.array_equal(back, via_torch)
    nan = float32_to_bf16(np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(bf16_to_float32(nan)).all()
    assert DTYPE_NAMES.index("bfloat16") and "bfloat16" in mio._ST_CODES
