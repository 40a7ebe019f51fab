"""The command line, through click's CliRunner."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import nncodec
from nncodec.cli import main
from nncodec.io import read_model, write_model


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "layer.weight": (rng.standard_normal((64, 32)) * 0.05).astype(np.float32),
        "layer.bias": (rng.standard_normal(64) * 0.01).astype(np.float32),
        "steps": np.array(7, np.int64),
    }
    path = tmp_path / "model.npz"
    write_model(path, tensors, metadata={"origin": "test"})
    return path, tensors


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_encode_info_verify_decode(tmp_path, model_file):
    src, tensors = model_file
    out = tmp_path / "m.nnc"
    r = run("encode", src, "-o", out, "--target-snr", 35)
    assert r.exit_code == 0, r.output
    assert "bits/weight" in r.output and "x)" in r.output
    r = run("info", out)
    assert r.exit_code == 0 and "layer.weight" in r.output and "uniform" in r.output
    info = json.loads(run("info", out, "--json").output)
    assert [t["name"] for t in info["tensors"]] == list(tensors)
    assert info["metadata"]["origin"] == "test"
    assert run("verify", out).exit_code == 0
    for suffix in (".npz", ".safetensors", ".pt"):
        dst = tmp_path / f"back{suffix}"
        r = run("decode", out, "-o", dst)
        assert r.exit_code == 0, r.output
        back, dtypes, _ = read_model(dst)
        assert sorted(back) == sorted(tensors)  # safetensors keeps no order
        np.testing.assert_array_equal(back["steps"], tensors["steps"])
        w, w_hat = tensors["layer.weight"], np.asarray(back["layer.weight"])
        assert 10 * np.log10((w ** 2).sum() / ((w - w_hat) ** 2).sum()) >= 35


def test_backend_qp_step_and_json_summary(tmp_path, model_file):
    src, _ = model_file
    for i, opts in enumerate((["--qp", -32], ["--step", 0.01], ["--backend", "constriction"], ["--lossless"])):
        out = tmp_path / f"m{i}.nnc"
        r = run("encode", src, "-o", out, "--json", *opts)
        assert r.exit_code == 0, r.output
        summary = json.loads(r.output)
        assert summary["total_bytes"] == out.stat().st_size
    lossless = nncodec.load_file(tmp_path / "m3.nnc")
    np.testing.assert_array_equal(lossless["layer.weight"], model_file[1]["layer.weight"])


def test_refuses_to_overwrite_without_force(tmp_path, model_file):
    src, _ = model_file
    out = tmp_path / "m.nnc"
    out.write_bytes(b"precious")
    r = run("encode", src, "-o", out)
    assert r.exit_code == 1 and "--force" in r.output
    assert out.read_bytes() == b"precious"
    assert run("encode", src, "-o", out, "--force").exit_code == 0
    dst = tmp_path / "d.npz"
    dst.write_bytes(b"keep")
    assert run("decode", out, "-o", dst).exit_code == 1
    assert dst.read_bytes() == b"keep"


def test_exit_codes(tmp_path, model_file):
    src, _ = model_file
    out = tmp_path / "m.nnc"
    assert run("encode", src, "-o", out).exit_code == 0
    # usage errors: 2
    assert run("encode", src, "-o", tmp_path / "x.nnc", "--qp", -30, "--step", 1).exit_code == 2
    assert run("decode", out, "-o", tmp_path / "x.txt").exit_code == 2
    assert run("bogus").exit_code == 2
    # ordinary errors: 1, one line, no traceback
    r = run("encode", tmp_path / "missing.pt", "-o", tmp_path / "y.nnc")
    assert r.exit_code == 1 and "Traceback" not in r.output
    # integrity failures: 3
    data = bytearray(out.read_bytes())
    data[-3] ^= 0x04
    bad = tmp_path / "bad.nnc"
    bad.write_bytes(bytes(data))
    r = run("verify", bad)
    assert r.exit_code == 3 and "CRC" in r.output
    assert run("decode", bad, "-o", tmp_path / "z.npz").exit_code == 3
    (tmp_path / "cut.nnc").write_bytes(bytes(data[:50]))
    assert run("info", tmp_path / "cut.nnc").exit_code == 3
    (tmp_path / "junk.nnc").write_bytes(b"not an nnc file at all")
    r = run("info", tmp_path / "junk.nnc")
    assert r.exit_code == 3 and "Traceback" not in r.output


def test_help_has_examples_and_version():
    for cmd in ([], ["encode"], ["decode"], ["info"], ["verify"]):
        r = run(*cmd, "--help")
        assert r.exit_code == 0 and "Examples:" in r.output
    r = run("--version")
    assert r.exit_code == 0 and nncodec.__version__ in r.output


def test_verify_catches_every_single_bit_flip_in_a_payload(tmp_path, model_file):
    src, _ = model_file
    out = tmp_path / "m.nnc"
    assert run("encode", src, "-o", out).exit_code == 0
    data = out.read_bytes()
    with nncodec.open(data) as f:
        t = [t for t in f.info()["tensors"] if t["name"] == "layer.bias"][0]
    for pos in range(t["offset"], t["offset"] + t["bytes"]):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            with nncodec.open(bytes(bad)) as f:
                assert f.verify(), (pos, bit)


def test_threads_option_gives_the_same_files(tmp_path, model_file, monkeypatch):
    monkeypatch.setattr(nncodec._parallel, "PARALLEL_MIN_VALUES", 0)
    src, tensors = model_file
    files = []
    for n in (1, 3):
        out = tmp_path / f"m{n}.nnc"
        r = run("encode", src, "-o", out, "--target-snr", 30, "--threads", n)
        assert r.exit_code == 0, r.output
        files.append(out.read_bytes())
        assert run("verify", out, "-T", n).exit_code == 0
        r = run("decode", out, "-o", tmp_path / f"d{n}.npz", "-T", n)
        assert r.exit_code == 0, r.output
    assert files[0] == files[1]
    a, b = read_model(tmp_path / "d1.npz")[0], read_model(tmp_path / "d3.npz")[0]
    assert all(np.array_equal(a[k], b[k]) for k in tensors)
    r = run("encode", src, "-o", tmp_path / "x.nnc", "--threads", 0)
    assert r.exit_code == 2 and "threads" in r.output.lower()
