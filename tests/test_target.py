"""Sensitivity-weighted steps (nncodec.sensitivity) and target modes (nncodec.target), library and CLI.
Digits task only (scikit-learn's load_digits)."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import nncodec
from nncodec import sensitivity as S
from nncodec.cli import main
from nncodec.errors import NNCodecError, TargetError
from nncodec.target import knob_grid

pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    from nncodec.tasks import get_task

    task = get_task("digits")
    sd = {k: v.numpy() for k, v in task.state_dict().items()}
    return task, sd


@pytest.fixture(scope="module")
def fisher(digits):
    task, sd = digits
    return S.fisher_diagonal(task, state_dict=sd, samples=64)


def _steps(data):
    with nncodec.open(data) as f:
        return {t["name"]: t["chain"][-1]["step"] for t in f.info()["tensors"]}


def _payload_bytes(data):
    with nncodec.open(data) as f:
        return sum(t["bytes"] for t in f.info()["tensors"])


def test_fisher_diagonal_covers_every_parameter_and_is_deterministic(digits, fisher):
    task, sd = digits
    assert set(fisher) == set(sd)
    assert all(v > 0 and math.isfinite(v) for v in fisher.values())
    again = S.fisher_diagonal("digits", samples=64)
    assert again == pytest.approx(fisher, rel=1e-9)
    per = S.fisher_diagonal(task, state_dict=sd, samples=64, per_element=True)
    assert per["0.weight"].shape == sd["0.weight"].shape
    assert float(per["0.weight"].mean()) == pytest.approx(fisher["0.weight"], rel=1e-6)
    # the model's own predictions as labels (data without labels)
    X, _ = task.train_data()
    own = S.fisher_diagonal(task.build_model(), (X, None), state_dict=sd, samples=32, labels="model")
    assert set(own) == set(sd)
    with pytest.raises(ValueError):
        S.fisher_diagonal(task.build_model(), (X, None), state_dict=sd, samples=8)


def test_sensitivity_steps_are_recorded_and_decode(digits, fisher):
    _, sd = digits
    common = nncodec.encode(sd, target_snr=20)
    data = nncodec.encode(sd, target_snr=20, sensitivity=fisher)
    dec = nncodec.decode(data)
    assert set(dec) == set(sd) and all(dec[k].shape == sd[k].shape for k in sd)
    weights = [k for k, v in sd.items() if v.ndim >= 2]
    steps, common_steps = _steps(data), _steps(common)
    assert len({steps[k] for k in weights}) > 1            # per-tensor steps ...
    assert len({common_steps[k] for k in weights}) == 1    # ... instead of one model-wide step
    for k in weights:  # decoding needs only the record: levels times the recorded step
        levels = np.rint(dec[k].astype(np.float64) / steps[k])
        assert np.allclose(levels * steps[k], dec[k], atol=1e-6 * steps[k] + 1e-12)
    # the same payload budget as the common step, and a lower sensitivity-weighted error
    steps2, rep = nncodec.api.sensitivity_steps(sd, nncodec.Settings(target_snr=20), fisher, return_report=True)
    assert steps2 == {k: steps[k] for k in weights}
    assert rep["bits"] <= rep["budget_bits"]
    assert rep["weighted_distortion"] < rep["weighted_distortion_common_step"]
    w_bytes = lambda d: sum(t["bytes"] for t in nncodec.open(d).info()["tensors"]
                            if t["name"] in weights)
    assert w_bytes(data) <= w_bytes(common)
    with nncodec.open(data) as f:
        assert f.metadata()["nncodec.allocation"] == "sensitivity rd"


def test_closed_form_allocation_follows_the_fisher_ratio(digits, fisher):
    _, sd = digits
    weights = {k: v for k, v in sd.items() if v.ndim >= 2}
    steps = S.allocate_steps(weights, fisher, 0.01, allocation="closed-form")
    a, b = "0.weight", "3.weight"
    expect = math.sqrt(fisher[b] / fisher[a])
    if all(0.01 / 8 < steps[k] < 0.01 * 8 for k in (a, b)):  # inside the clamp
        assert steps[a] / steps[b] == pytest.approx(expect, rel=1e-9)
    # the weighted geometric mean of the steps stays the base step (the high-rate rate)
    n = sum(v.size for v in weights.values())
    logmean = sum(v.size * math.log(steps[k]) for k, v in weights.items()) / n
    assert logmean == pytest.approx(math.log(0.01), abs=0.3)
    data = nncodec.encode(sd, qp=-20, sensitivity=fisher, allocation="closed-form")
    assert set(nncodec.decode(data)) == set(sd)


def test_sensitivity_errors(digits, fisher):
    _, sd = digits
    with pytest.raises(ValueError):
        nncodec.encode(sd, method="kmeans", sensitivity=fisher)
    with pytest.raises(ValueError):
        nncodec.encode(sd, target_snr=30, snr_scope="tensor", sensitivity=fisher)
    with pytest.raises(ValueError):
        nncodec.encode(sd, sensitivity={"0.weight": -1.0})
    with pytest.raises(ValueError):
        nncodec.encode(sd, sensitivity=fisher, allocation="magic")


def test_target_size_is_the_largest_fitting_setting_on_the_grid(digits):
    _, sd = digits
    budget = 5000
    data, rep = nncodec.encode_to_target(sd, target_size=budget)
    assert len(data) <= budget and rep["bytes"] == len(data) and rep["mode"] == "size"
    knob, grid = knob_grid(sd, nncodec.Settings())
    i = grid.index(rep["value"])
    assert knob == "qp" and 0 < i < len(grid) - 1
    assert len(nncodec.encode(sd, qp=grid[i + 1])) > budget   # the next finer setting does not fit
    assert data == nncodec.encode(sd, qp=rep["value"])        # the file is that setting's
    assert set(nncodec.decode(data)) == set(sd)


def test_target_bpw_with_kmeans_and_fixed(digits):
    _, sd = digits
    n = sum(v.size for v in sd.values())
    data, rep = nncodec.encode_to_target(sd, target_bpw=2.0, method="kmeans")
    assert 8 * len(data) / n <= 2.0 and rep["knob"] == "k"
    assert 8 * len(nncodec.encode(sd, method="kmeans", k=rep["value"] + 1)) / n > 2.0
    data, rep = nncodec.encode_to_target(sd, target_bpw=4.0, method="fixed")
    assert 8 * len(data) / n <= 4.0 and rep["knob"] == "bits"
    assert 8 * len(nncodec.encode(sd, method="fixed", bits=rep["value"] + 1)) / n > 4.0


def test_max_accuracy_drop_with_a_callback(digits):
    task, sd = digits
    val = lambda d: task.evaluate(d, split="val")
    test = lambda d: task.evaluate(d, split="test")
    data, rep = nncodec.encode_to_target(sd, max_accuracy_drop=1.0, evaluate=val, evaluate_test=test)
    base = val(sd)
    acc = val(nncodec.decode(data))
    assert acc >= base - 0.01 and rep["accuracy"] == pytest.approx(acc)
    assert rep["accuracy_drop_points"] <= 1.0 + 1e-9
    assert rep["test_accuracy"] == pytest.approx(test(nncodec.decode(data)))
    # the next coarser setting on the grid was tried and misses the floor
    coarser = [t for t in rep["trials"] if t["value"] == rep["value"] + 0.25]
    assert coarser and coarser[0]["accuracy"] < rep["accuracy_floor"]
    # smaller than the lossless-ish end of the grid, and with sensitivity steps too
    lines = []
    data2, rep2 = nncodec.encode_to_target(sd, max_accuracy_drop=1.0, evaluate=val,
                                           sensitivity=S.fisher_diagonal(task, state_dict=sd, samples=64),
                                           progress=lines.append)
    assert rep2["accuracy"] >= rep2["accuracy_floor"] and lines and "accuracy" in lines[-1]


def test_target_errors(digits):
    _, sd = digits
    with pytest.raises(TargetError):
        nncodec.encode_to_target(sd, target_size=50)
    with pytest.raises(ValueError):
        nncodec.encode_to_target(sd, target_size=5000, target_bpw=2.0)
    with pytest.raises(ValueError):
        nncodec.encode_to_target(sd)
    with pytest.raises(ValueError):
        nncodec.encode_to_target(sd, max_accuracy_drop=0.5)  # no evaluate callback
    with pytest.raises(ValueError):
        nncodec.encode_to_target(sd, target_size=5000, method="binary")
    with pytest.raises(ValueError):
        nncodec.encode_to_target(sd, target_size=5000, qp=-20)
    calls = []

    def evaluate(d):  # the uncompressed model (first call) scores 1, every coded one 0.5
        calls.append(1)
        return 1.0 if len(calls) == 1 else 0.5

    with pytest.raises(TargetError) as exc:  # an impossible accuracy: nothing on the grid reaches it
        nncodec.encode_to_target(sd, max_accuracy_drop=0.5, evaluate=evaluate)
    assert isinstance(exc.value, NNCodecError)


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory, digits):
    import torch

    path = tmp_path_factory.mktemp("m") / "digits.pt"
    torch.save({k: torch.from_numpy(v) for k, v in digits[1].items()}, path)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_target_size_and_bpw(tmp_path, digits_file):
    out = tmp_path / "a.nnc"
    r = run("encode", digits_file, "-o", out, "--target-size", 6000, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{"):])
    assert summary["total_bytes"] <= 6000 and out.stat().st_size == summary["total_bytes"]
    assert summary["target"]["mode"] == "size" and summary["target"]["budget_bytes"] == 6000
    r = run("encode", digits_file, "-o", tmp_path / "b.nnc", "--target-bpw", 2.5, "--method", "kmeans")
    assert r.exit_code == 0, r.output
    assert "size target: k " in r.output and "search k" in r.output  # progress on stderr (mixed here)


def test_cli_max_accuracy_drop_and_sensitivity(tmp_path, digits_file):
    r = run("encode", digits_file, "-o", tmp_path / "c.nnc", "--task", "digits", "--max-accuracy-drop", 1,
            "--sensitivity", "fisher", "--fisher-samples", 64)
    assert r.exit_code == 0, r.output
    assert "accuracy target" in r.output and "test accuracy" in r.output
    r = run("encode", digits_file, "-o", tmp_path / "d.nnc", "--task", "digits", "--sensitivity", "fisher",
            "--qp", -20, "--fisher-samples", 32, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output[r.output.index("{"):])
    assert summary["task"]["name"] == "digits" and 0 <= summary["task"]["test_accuracy"] <= 1
    with nncodec.open(str(tmp_path / "d.nnc")) as f:
        assert f.metadata()["nncodec.allocation"] == "sensitivity rd"


@pytest.mark.parametrize("args, message", [
    (["--max-accuracy-drop", 0.5], "needs --task"),
    (["--sensitivity", "fisher"], "needs --task"),
    (["--target-size", 5000, "--target-bpw", 2], "at most one"),
    (["--target-size", 5000, "--qp", -20], "chooses the step itself"),
    (["--target-size", 5000, "--method", "binary"], "not binary"),
    (["--target-bpw", 3, "--method", "fixed", "--il", 2, "--fl", 4], "word length"),
    (["--target-size", 0], "positive"),
    (["--task", "digits", "--sensitivity", "fisher", "--method", "kmeans"], "uniform"),
])
def test_cli_usage_errors(tmp_path, digits_file, args, message):
    r = run("encode", digits_file, "-o", tmp_path / "x.nnc", *args)
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "x.nnc").exists()


def test_cli_target_errors(tmp_path, digits_file):
    r = run("encode", digits_file, "-o", tmp_path / "x.nnc", "--target-size", 50)
    assert r.exit_code == 1 and "over the budget" in r.output
    rng = np.random.default_rng(0)
    other = tmp_path / "other.npz"
    np.savez(other, w=rng.normal(size=(8, 8)).astype(np.float32))
    r = run("encode", other, "-o", tmp_path / "y.nnc", "--task", "digits", "--max-accuracy-drop", 1)
    assert r.exit_code == 1 and "does not fit task 'digits'" in r.output
    assert not (tmp_path / "x.nnc").exists() and not (tmp_path / "y.nnc").exists()


def test_quantized_finetune_ends_on_the_grid_and_recovers_accuracy(digits):
    import torch

    from nncodec import prune as P
    from nncodec.pipeline import step_from_qp
    from nncodec.qat import quantized_finetune
    from nncodec.tasks import _common, digits as D

    task, sd = digits
    qp = -6
    step = step_from_qp(qp)
    plain = task.evaluate(nncodec.decode(nncodec.encode(sd, qp=qp)), split="val")
    net = _common.load_into(D.build_model(), sd)
    masks = {"7.weight": np.abs(sd["7.weight"]) > np.quantile(np.abs(sd["7.weight"]), 0.5)}
    with _common.deterministic_torch():
        train_step = P.digits_train_step(net, lr=5e-4)
        out = quantized_finetune(net, train_step, 4 * train_step.steps_per_epoch, step_sizes=step, masks=masks)
    tuned = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    assert len(out["losses"]) == 4 * train_step.steps_per_epoch
    for k in out["names"]:  # every weight tensor is on the step's grid: coding it adds no error
        assert np.array_equal(tuned[k], np.rint(tuned[k] / step) * step)
    assert not np.any(tuned["7.weight"][~masks["7.weight"]])
    dec = nncodec.decode(nncodec.encode(tuned, qp=qp))
    for k in out["names"]:
        assert np.array_equal(dec[k], tuned[k])
    assert task.evaluate(dec, split="val") > plain + 0.05
    with pytest.raises(ValueError):
        quantized_finetune(net, train_step, 1, step_sizes=0.0)
