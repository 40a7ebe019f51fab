"""The built-in tasks' plumbing: IDX parsing, split sizes, the registry. Fashion-MNIST itself is
not needed: the tests write small IDX files of their own."""

import gzip

import numpy as np
import pytest

from nncodec.tasks import fashion, get_task


def _write_idx(path, array):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for part, n in (("train", fashion.VAL_SIZE + 40), ("t10k", 30)):
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    monkeypatch.setenv("NNCODEC_FASHION_MNIST", str(tmp_path))
    fashion._load_raw.cache_clear()
    yield tmp_path
    fashion._load_raw.cache_clear()


def test_fashion_splits_from_idx_files(fake_fashion):
    X, y = fashion.load_data("train")
    Xv, yv = fashion.load_data("val")
    Xt, yt = fashion.load_data("test")
    assert X.shape == (40, 1, 28, 28) and Xv.shape == (fashion.VAL_SIZE, 1, 28, 28) and Xt.shape[0] == 30
    assert X.dtype == np.float32 and 0.0 <= X.min() and X.max() <= 1.0 and y.dtype == np.int64
    with gzip.open(fake_fashion / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    np.testing.assert_array_equal(Xv[0, 0], raw[40] / np.float32(255))


def test_fashion_missing_or_bad_data(tmp_path, monkeypatch, fake_fashion):
    with gzip.open(fake_fashion / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (99).to_bytes(4, "big") + b"\x01\x02")
    fashion._load_raw.cache_clear()
    with pytest.raises(ValueError, match="values, header says"):
        fashion.load_data("test")
    monkeypatch.setenv("NNCODEC_FASHION_MNIST", str(tmp_path / "nowhere"))
    fashion._load_raw.cache_clear()
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion.load_data("train")
    with pytest.raises(ValueError, match="split"):
        fashion.load_data("dev")


def test_fashion_model_evaluates_on_fake_data(fake_fashion):
    pytest.importorskip("torch")
    for arch in fashion.ARCHS:
        sd = {k: v.numpy() for k, v in fashion.build_model(arch).state_dict().items()}
        acc = fashion.evaluate(sd, arch, "test")
        assert 0.0 <= acc <= 1.0
    zero = {k: np.zeros_like(v) for k, v in sd.items()}
    _, yt = fashion.load_data("test")
    # all-zero weights give equal logits: argmax picks class 0 for every image
    assert fashion.evaluate(zero, "lenet300", "test") == pytest.approx(np.mean(yt == 0))


def test_registry():
    with pytest.raises(ValueError, match="built-in tasks: digits, fashion"):
        get_task("imagenet")
    t = get_task("fashion-lenet300")
    assert t.name == "fashion-lenet300" and t.metric == "accuracy" and callable(t.retrain_fn)
