"""nncodec.sweep and `nncodec sweep`: grids, resume, determinism, the digital path, plots, CLI errors.

All on the digits task with tiny grids (a digits evaluation takes a few milliseconds)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from click.testing import CliRunner  # noqa: E402

from nncodec.cli import main  # noqa: E402
from nncodec.sweep import (SweepError, SweepResult, TaskEvaluator, budget_bytes, fit_to_budget,  # noqa: E402
                           parse_scheme, point_key, read_records, run_sweep, x_at_level)
from nncodec.tasks import get_task  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    sd = {k: v.numpy() for k, v in task.state_dict().items()}
    return task, sd


class Counter:
    """A user's evaluate callback that counts its calls."""

    def __init__(self, task):
        self.task = task
        self.calls = 0

    def __call__(self, sd):
        self.calls += 1
        return self.task.evaluate(sd)


def _metrics(res):
    return {p["key"]: p["metric"] for p in res.points}


def test_writes_the_expected_points(digits, tmp_path):
    out = tmp_path / "s.jsonl"
    res = run_sweep(task="digits", schemes=["ml", "digital:16qam-3/4"], snrs=[5, 30], draws=2, output=out)
    recs = read_records(out)
    assert recs[0]["type"] == "header" and recs[0]["task"] == "digits"
    assert recs[0]["reference_metric"] == pytest.approx(digits[0].evaluate(digits[1]))
    keys = {r["key"] for r in recs if r["type"] == "point"}
    expected = {point_key("awgn", s, "snr_db", x, None, d)
                for s in ("ml", "digital:16qam-3/4") for x in (5.0, 30.0) for d in (0, 1)}
    assert keys == expected
    assert all(0.0 <= r["metric"] <= 1.0 for r in recs if r["type"] == "point")
    assert [r["mcs"] for r in recs if r["type"] == "digital"] == ["16qam-3/4"]
    assert recs[-1]["type"] == "run" and recs[-1]["points_new"] == 8
    # the summary has one row per (scheme, SNR) with statistics over the two draws
    rows = res.summary()
    assert len(rows) == 4 and all(r["draws"] == 2 for r in rows)
    ml30 = next(r for r in rows if r["scheme"] == "ml" and r["x"] == 30.0)
    assert ml30["min"] <= ml30["p10"] <= ml30["mean"] <= ml30["max"]
    assert ml30["wnr_db"] is not None and ml30["effective_wnr_db"] is not None


def test_resume_skips_finished_points_and_adds_new_ones(digits, tmp_path):
    task, sd = digits
    out = tmp_path / "r.jsonl"
    ev = Counter(task)
    kw = dict(state_dict=sd, evaluate=ev, schemes=["ml", "mmse"], draws=2, output=out)
    first = run_sweep(snrs=[10], **kw)
    assert ev.calls == 1 + 4  # the reference, then 2 schemes x 2 draws
    ev.calls = 0
    again = run_sweep(snrs=[10], **kw)
    assert ev.calls == 0 and again.stats["points_skipped"] == 4 and again.stats["points_new"] == 0
    assert _metrics(again) == _metrics(first)
    more = run_sweep(snrs=[10, 20], **kw)
    assert ev.calls == 4 and more.stats["points_new"] == 4
    # a line cut short by a crash is dropped and its point recomputed
    data = out.read_bytes()
    out.write_bytes(data[:-10])
    ev.calls = 0
    run_sweep(snrs=[10, 20], **kw)
    assert ev.calls == 0  # the torn line was the "run" record: no point lost
    lines = out.read_bytes().split(b"\n")
    last_point = max(i for i, ln in enumerate(lines) if b'"type": "point"' in ln)
    out.write_bytes(b"\n".join(lines[:last_point]) + b"\n" + lines[last_point][:25])
    ev.calls = 0
    run_sweep(snrs=[10, 20], **kw)
    assert ev.calls == 1
    # --force starts over
    ev.calls = 0
    run_sweep(snrs=[10], force=True, **kw)
    assert ev.calls == 5
    assert len([r for r in read_records(out) if r["type"] == "point"]) == 4


def test_results_file_of_another_sweep_is_refused(digits, tmp_path):
    out = tmp_path / "x.jsonl"
    run_sweep(task="digits", schemes=["ml"], snrs=[10], draws=1, output=out, seed=1)
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(task="digits", schemes=["ml"], snrs=[10], draws=1, output=out, seed=2)
    (tmp_path / "junk.jsonl").write_text("hello\n")
    with pytest.raises(SweepError):
        run_sweep(task="digits", schemes=["ml"], snrs=[10], draws=1, output=tmp_path / "junk.jsonl")


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(task="digits", schemes=["ml", "mmse", "digital:qpsk-3/4"], snrs=[0, 4], draws=2,
              channels=["awgn", "rayleigh"])
    a = run_sweep(output=tmp_path / "a.jsonl", seed=7, **kw)
    b = run_sweep(output=tmp_path / "b.jsonl", seed=7, **kw)
    c = run_sweep(output=tmp_path / "c.jsonl", seed=8, **kw)
    assert _metrics(a) == _metrics(b)
    strip = lambda res: [{k: v for k, v in p.items()} for p in res.points]  # noqa: E731
    assert strip(a) == strip(b)
    assert _metrics(a) != _metrics(c)
    # every scheme sees the same channel seed at a given (channel, SNR, draw)
    seeds = {}
    for p in a.points:
        seeds.setdefault((p["channel"], p["snr_db"], p["draw"]), set()).add(p["seed"])
    assert all(len(s) == 1 for s in seeds.values())


def test_digital_cliff_error_free_and_degraded(digits, tmp_path):
    res = run_sweep(task="digits", schemes=["digital:64qam-5/6"], snrs=[-5, 40], draws=2,
                    output=tmp_path / "d.jsonl")
    rec = res.digital["64qam-5/6"]
    assert rec["feasible"] and rec["bytes"] <= rec["max_bytes"]
    err_free = rec["error_free_metric"]
    assert err_free > 0.9  # 2.3 bits per weight keep the digits CNN close to fp32
    hi = [p for p in res.points if p["snr_db"] == 40]
    lo = [p for p in res.points if p["snr_db"] == -5]
    assert all(p["intact"] and p["metric"] == err_free and p["frames_lost"] == 0 for p in hi)
    assert all(p["cached"] for p in hi)  # intact receptions reuse the error-free metric
    assert all(not p["intact"] and p["metric"] < err_free - 0.3 for p in lo)
    # the channel uses fit the budget of an analog scheme at rho = 1
    assert all(p["channel_uses"] <= res.header["channel_uses_budget"] for p in res.points)
    assert res.header["channel_uses_budget"] == -(-res.header["float_weights"] // 2)


def test_fit_to_budget(digits):
    _, sd = digits
    small, _ = budget_bytes("qpsk-3/4", 7000)
    large, _ = budget_bytes("64qam-5/6", 7000)
    a, ta = fit_to_budget(sd, small)
    b, tb = fit_to_budget(sd, large)
    assert len(a) <= small and len(b) <= large and tb > ta
    assert fit_to_budget(sd, 50) == (None, None)
    # infeasible digital scheme: recorded, no metric
    assert budget_bytes("qpsk-1/2", 100) == (0, 0)


def test_plot_written(tmp_path):
    pytest.importorskip("matplotlib")
    res = run_sweep(task="digits", schemes=["ml", "mmse", "digital:16qam-3/4", "digital:64qam-5/6"],
                    snrs=[5, 15], draws=2, channels=["awgn", "rayleigh"], output=tmp_path / "p.jsonl")
    png = tmp_path / "p.png"
    res.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # from the file, too
    SweepResult.load(tmp_path / "p.jsonl").plot(tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_task_evaluator_matches_the_task(digits):
    task, sd = digits
    ev = TaskEvaluator("digits")
    assert ev.test(sd) == task.evaluate(sd)
    assert ev.val(sd) == task.evaluate(sd, split="val")
    noisy = {k: v + np.float32(0.05) * np.random.default_rng(0).standard_normal(v.shape).astype(v.dtype)
             for k, v in sd.items()}
    assert ev.test(noisy) == task.evaluate(noisy)


def test_bad_arguments():
    with pytest.raises(SweepError, match="unknown scheme"):
        parse_scheme("nope")
    with pytest.raises(SweepError, match="digital:MCS"):
        parse_scheme("digital:8psk-1/2")
    assert parse_scheme("digital:QPSK-1/2").name == "digital:qpsk-1/2"
    with pytest.raises(SweepError, match="noise-std"):
        run_sweep(task="digits", schemes=["digital:qpsk-1/2"], noise_stds=[0.1], draws=1)
    with pytest.raises(SweepError, match="channel"):
        run_sweep(task="digits", schemes=["ml"], snrs=[1], channels=["fiber"], draws=1)
    with pytest.raises(SweepError):
        run_sweep(task="digits", schemes=["ml"], draws=1)  # neither SNRs nor noise stds


def test_x_at_level():
    assert x_at_level([0, 10, 20], [0.2, 0.6, 1.0], 0.8) == pytest.approx(15.0)
    assert x_at_level([0, 10], [0.2, 0.6], 0.8) is None


def test_cli_runs_and_resumes(tmp_path):
    out = tmp_path / "c.jsonl"
    try:
        import matplotlib  # noqa: F401
        plot = []
    except ImportError:
        plot = ["--no-plot"]
    args = ["sweep", "--task", "digits", "-s", "ml,digital:16qam-3/4", "--snr", "5:15:10", "-n", "1",
            "-o", str(out), "--jobs", "1", *plot]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "digital:16qam-3/4" in r.output and (tmp_path / "c.png").exists() == (not plot)
    assert len([x for x in read_records(out) if x["type"] == "point"]) == 4
    r = CliRunner().invoke(main, args + ["--json"])
    assert r.exit_code == 0
    summary = json.loads(r.stdout if hasattr(r, "stdout") else r.output)
    assert summary["stats"]["points_skipped"] == 4 and summary["stats"]["points_new"] == 0


@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], "nope"),
    (["--task", "digits", "-s", "ml,bogus"], "unknown scheme 'bogus'"),
    (["--task", "digits", "-s", "digital:qpsk-9/10"], "digital:MCS"),
    (["--task", "digits", "--snr", "5:1"], "START:STOP"),
    (["--task", "digits", "-c", "fiber"], "unknown channel"),
    (["--task", "digits", "-s", "digital:qpsk-1/2", "--noise-std", "0.1"], "--noise-std"),
])
def test_cli_usage_errors_exit_2(tmp_path, args, message):
    r = CliRunner().invoke(main, ["sweep", *args, "-o", str(tmp_path / "u.jsonl")])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "u.jsonl").exists()


def test_worker_processes_give_the_same_results(tmp_path):
    kw = dict(task="digits", schemes=["ml", "mmse", "digital:qpsk-3/4"], snrs=[2, 6], draws=2,
              channels=["awgn", "rayleigh"])
    a = run_sweep(output=tmp_path / "a.jsonl", jobs=1, **kw)
    b = run_sweep(output=tmp_path / "b.jsonl", jobs=2, **kw)
    assert [p["key"] for p in a.points] == [p["key"] for p in b.points]
    # identical records, except whether a worker had already seen the same received container
    strip = lambda res: [{k: v for k, v in p.items() if k != "cached"} for p in res.points]  # noqa: E731
    assert strip(a) == strip(b)


def test_batched_evaluation_equals_separate_passes(digits):
    _, sd = digits
    ev = TaskEvaluator("digits")
    rng = np.random.default_rng(1)
    sds = [{k: v + np.float32(s) * rng.standard_normal(v.shape).astype(v.dtype) for k, v in sd.items()}
           for s in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)] * 2
    assert ev.test_many(sds) == [ev.test(x) for x in sds]


def test_infeasible_digital_scheme_is_recorded_without_a_metric(tmp_path):
    # a budget of 1% of a channel use per weight holds no codeword at all
    res = run_sweep(task="digits", schemes=["digital:qpsk-1/2"], snrs=[10], draws=2, budget_rho=0.01,
                    output=tmp_path / "i.jsonl")
    assert res.digital["qpsk-1/2"]["feasible"] is False
    assert all(p["metric"] is None and p["infeasible"] for p in res.points)
    row, = res.summary()
    assert row["mean"] is None and row.get("infeasible")
