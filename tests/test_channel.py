"""Digital channel path: 802.11n LDPC tables and codec, Gray QAM, channels, transmission of .nnc files."""
import json
from pathlib import Path

import numpy as np
import pytest

import nncodec
from nncodec.channel import (CODE_RATES, MCS_NAMES, MODULATIONS, get_code, get_modulation,
                             recover_container, simulate_link, transmit_nnc)
from nncodec.channel.framing import FrameLayout
from nncodec.channel.ldpc_tables import BLOCK_LENGTHS, LIFTING, prototype
from nncodec.container import Reader
from nncodec.errors import FormatError

VECTORS = Path(__file__).resolve().parent.parent / "formats" / "testvectors"
ALL_CODES = [(n, r) for n in BLOCK_LENGTHS for r in CODE_RATES]


def _gf2_rank(M: np.ndarray) -> int:
    """Rank over GF(2), rows packed into 64-bit words."""
    rows = np.packbits(M.astype(np.uint8), axis=1)
    pad = (-rows.shape[1]) % 8
    rows = np.ascontiguousarray(np.pad(rows, ((0, 0), (0, pad)))).view(">u8").astype(np.uint64)
    rank, ncols = 0, M.shape[1]
    for c in range(ncols):
        word, bit = c // 64, np.uint64(1) << np.uint64(63 - c % 64)
        hits = np.flatnonzero(rows[rank:, word] & bit) + rank
        if hits.size == 0:
            continue
        p = hits[0]
        rows[[rank, p]] = rows[[p, rank]]
        others = hits[hits != p]
        others = np.where(others == rank, p, others)
        rows[others] ^= rows[rank]
        rank += 1
        if rank == M.shape[0]:
            break
    return rank


@pytest.fixture(scope="module")
def model_sd() -> dict:
    rng = np.random.default_rng(0)
    return {"conv1.weight": rng.normal(0, 0.2, (8, 1, 3, 3)).astype(np.float32),
          "conv1.bias": rng.normal(0.1, 0.05, 8).astype(np.float32),
          "conv2.weight": rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32),
          "conv2.bias": rng.normal(-0.1, 0.05, 16).astype(np.float32),
          "fc.weight": rng.normal(0.02, 0.05, (10, 256)).astype(np.float32),
          "fc.bias": rng.normal(0.3, 0.01, 10).astype(np.float32),
          "bn.num_batches_tracked": np.array(7, dtype=np.int64)}


@pytest.fixture(scope="module")
def model_nnc(model_sd) -> bytes:
    return nncodec.encode(model_sd, target_snr=30)


# ---- the standard's tables ------------------------------------------------------------------

@pytest.mark.parametrize("n,rate", ALL_CODES)
def test_tables_shape_and_parity_structure(n, rate):
    P = prototype(n, rate)
    num, den = map(int, rate.split("/"))
    assert P.shape == (24 * (den - num) // den, 24)
    z = LIFTING[n]
    assert P.min() >= -1 and P.max() < z
    mb = P.shape[0]
    par = P[:, 24 - mb:]
    # first parity column: weight 3, shifts 1, 0, 1 (top, middle, bottom); then a dual diagonal
    col = par[:, 0]
    assert col[0] == 1 and col[-1] == 1 and np.count_nonzero(col >= 0) == 3 and 0 in col[1:-1]
    for i in range(mb):
        for j in range(1, mb):
            assert par[i, j] == (0 if j in (i, i + 1) else -1)


@pytest.mark.parametrize("n,rate", ALL_CODES)
def test_encoder_systematic_and_H_times_codeword_is_zero(n, rate):
    code = get_code(n, rate)
    H = code.parity_check_matrix()
    assert H.shape == (n - code.k, n)
    assert _gf2_rank(H[:, code.k:]) == n - code.k  # the parity part is invertible
    rng = np.random.default_rng(n + len(rate))
    u = rng.integers(0, 2, (8, code.k), dtype=np.uint8)
    u[0] = 0
    u[1] = 1
    cw = code.encode(u)
    assert cw.shape == (8, n) and (cw[:, : code.k] == u).all()
    assert not ((H.astype(np.int64) @ cw.T.astype(np.int64)) % 2).any()
    assert not code.syndrome(cw).any()
    assert not cw[0].any()


def test_table_values_spot_checks():
    # first rows as printed in the standard (n = 1944 R 1/2, n = 648 R 5/6)
    assert prototype(1944, "1/2")[0, :14].tolist() == [57, -1, -1, -1, 50, -1, 11, -1, 50, -1, 79, -1, 1, 0]
    assert prototype(648, "5/6")[3, :6].tolist() == [7, 7, 14, 14, 4, 16]
    with pytest.raises(ValueError):
        prototype(1000, "1/2")


# ---- decoder ----------------------------------------------------------------------------------

def _bpsk_llr(cw, ebn0_db, rate, rng):
    sigma = np.sqrt(1 / (2 * rate * 10 ** (ebn0_db / 10)))
    y = (1 - 2.0 * cw) + sigma * rng.standard_normal(cw.shape)
    return (2 * y / sigma ** 2).astype(np.float32)


def test_decoder_corrects_noise_and_flags_failures():
    code = get_code(1944, "1/2")
    rng = np.random.default_rng(1)
    u = rng.integers(0, 2, (40, code.k), dtype=np.uint8)
    cw = code.encode(u)
    bits, iters = code.decode(_bpsk_llr(cw, 2.5, 0.5, rng), max_iter=30)
    assert (bits == cw).all() and (iters > 0).all()
    bits, iters = code.decode(_bpsk_llr(cw, -2.0, 0.5, rng), max_iter=10)
    assert (iters < 0).all()  # failures are detected (non-zero syndrome)
    assert code.syndrome(bits[iters < 0]).any(axis=1).all()
    bits, iters = code.decode(np.where(cw == 1, -5.0, 5.0).astype(np.float32))
    assert (bits == cw).all() and (iters == 0).all()


@pytest.mark.parametrize("n,rate,frames,early,snr", [(648, "2/3", 6, True, 2.0), (1944, "1/2", 37, True, 1.6),
                                                     (1296, "5/6", 20, False, 3.5), (648, "1/2", 17, True, 1.5)])
def test_compiled_decoder_matches_numpy_twin(n, rate, frames, early, snr):
    """The Cython decoder (16 frames per SIMD group) and the numpy twin do the same fixed-point
    arithmetic: identical decisions and iteration counts, including frames that fail, frames
    that converge early inside a group, and a partly filled last group."""
    from nncodec.channel.ldpc import _ext, quantize_llr
    if _ext is None:
        pytest.skip("compiled extension not built")
    code = get_code(n, rate)
    num, den = map(int, rate.split("/"))
    rng = np.random.default_rng(n + frames)
    cw = code.encode(rng.integers(0, 2, (frames, code.k), dtype=np.uint8))
    llr = _bpsk_llr(cw, snr, num / den, rng)
    llr[0] *= 100.0  # saturates at the clip
    bits, iters = code.decode(llr, max_iter=8, early_stop=early)
    b2, i2 = np.empty_like(bits), np.empty_like(iters)
    code._decode_numpy(quantize_llr(llr), 8, 24576, early, b2, i2)
    assert (b2 == bits).all() and (i2 == iters).all()
    assert (iters > 0).any() and (iters < 0).any()  # both outcomes are exercised
    # plain min-sum (alpha 1): messages reach the clamp without overflowing int16
    bits, iters = code.decode(llr * 4, max_iter=8, alpha=1.0, early_stop=early)
    code._decode_numpy(quantize_llr(llr * 4), 8, 32768, early, b2, i2)
    assert (b2 == bits).all() and (i2 == iters).all()


# ---- modulation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODULATIONS)
def test_constellation_unit_energy_gray_and_llr_signs(name):
    mod = get_modulation(name)
    pts, labels = mod.constellation()
    assert abs(np.mean(np.abs(pts) ** 2) - 1) < 1e-12
    d = np.abs(pts[:, None] - pts[None, :])
    np.fill_diagonal(d, np.inf)
    dmin = d.min()
    for i, j in zip(*np.nonzero(np.isclose(d, dmin))):
        assert np.count_nonzero(labels[i] != labels[j]) == 1  # Gray: neighbours differ in one bit
    llr = mod.demap(pts, 0.01).reshape(labels.shape)
    assert ((llr < 0) == (labels == 1)).all() and (np.abs(llr) > 0).all()
    h = np.exp(1j * np.linspace(0, 3, len(pts))) * 0.5  # rotated and attenuated, known to the receiver
    llr_h = mod.demap(h * pts, 0.01, h).reshape(labels.shape)
    assert ((llr_h < 0) == (labels == 1)).all()


def test_bpsk_llr_is_exact_and_802_11_labels():
    mod = get_modulation("bpsk")
    y = np.array([0.3 + 0.2j, -1.1 - 0.5j])
    assert np.allclose(mod.demap(y, 0.5), -4 * y.real / 0.5)  # bit 1 is +1: LLR(0) = -4 Re(y) / N0
    assert np.allclose(mod.modulate([0, 1]), [-1, 1])
    q16 = get_modulation("16qam").modulate([0, 0, 1, 0, 1, 0, 0, 1]) * np.sqrt(10)
    assert np.allclose(q16, [-3 + 3j, 3 - 1j])  # IEEE 802.11 Table 17-13 labels


# ---- framing and links --------------------------------------------------------------------------

def test_framing_roundtrip_and_crc():
    lay = FrameLayout(972)
    data = bytes(range(256)) * 3
    bits = lay.pack(data)
    assert bits.shape == (lay.count(len(data)), 972) and not bits[:, -4:].any()
    frames = lay.unpack(bits)
    assert all(ok for ok, *_ in frames)
    assert b"".join(p for *_, p in frames)[: len(data)] == data
    bits[1, 100] ^= 1
    assert [ok for ok, *_ in lay.unpack(bits)][:3] == [True, False, True]


@pytest.mark.parametrize("mcs", MCS_NAMES)
def test_noiseless_roundtrip_of_a_real_nnc_through_every_mcs(mcs):
    data = (VECTORS / "uniform_cabac.nnc").read_bytes()
    rep = transmit_nnc(data, mcs=mcs, snr_db=80.0, seed=0)
    assert rep.link.frames_lost == 0 and rep.link.coded_ber == 0 and rep.link.info_ber == 0
    assert rep.container == data and rep.error is None


@pytest.mark.parametrize("channel,mcs,snr", [("awgn", "qpsk-1/2", 4.0), ("awgn", "64qam-5/6", 22.0),
                                              ("rayleigh", "qpsk-1/2", 10.0)])
def test_high_snr_is_error_free(model_nnc, channel, mcs, snr):
    rep = transmit_nnc(model_nnc, mcs=mcs, snr_db=snr, channel=channel, seed=3)
    assert rep.link.frames_lost == 0 and rep.link.info_ber == 0 and rep.link.coded_ber > 0
    assert rep.container == model_nnc


@pytest.mark.parametrize("block_length", BLOCK_LENGTHS)
def test_block_lengths(model_nnc, block_length):
    rep = transmit_nnc(model_nnc, mcs="16qam-3/4", snr_db=30, block_length=block_length, seed=0)
    assert rep.container == model_nnc and rep.link.block_length == block_length


def test_very_low_snr_is_detected_and_never_crashes(model_nnc):
    for on_damage in ("fail", "zeros", "mean"):
        rep = transmit_nnc(model_nnc, mcs="16qam-3/4", snr_db=-3.0, seed=0, on_damage=on_damage)
        assert rep.link.frames_lost == rep.link.frames and rep.link.frames_undetected == 0
        assert rep.container is None and not rep.header_intact and "header" in rep.error
        assert all(t["status"] == "lost" and t["hit"] for t in rep.tensors)


def _damage(data: bytes, name: str):
    with Reader(data) as r:
        info = r.record_info(name)
    bad = bytearray(data)
    bad[info.offset + info.length // 2] ^= 0x5A
    return bytes(bad), [(info.offset, info.offset + info.length)]


def test_recovery_options(model_nnc):
    original = nncodec.decode(model_nnc)
    bad, lost = _damage(model_nnc, "conv2.weight")
    ok, tensors, out, err = recover_container(bad, lost, "fail")
    assert ok and out is None and "conv2.weight" in err
    ok, tensors, out, err = recover_container(bad, lost, "zeros")
    got = nncodec.decode(out)
    assert (got["conv2.weight"] == 0).all() and got["conv2.weight"].dtype == np.float32
    for k in original:
        if k != "conv2.weight":
            assert np.array_equal(got[k], original[k])
    status = {t["name"]: t for t in tensors}
    assert status["conv2.weight"]["status"] == "replaced" and status["conv2.weight"]["hit"]
    assert status["fc.weight"]["status"] == "intact" and not status["fc.weight"]["hit"]
    ok, tensors, out, err = recover_container(bad, lost, "mean")
    got = nncodec.decode(out)
    # nearest intact weights (ndim >= 2) on each side: conv1.weight and fc.weight
    want = (original["conv1.weight"].astype(np.float64).mean() + original["fc.weight"].astype(np.float64).mean()) / 2
    assert np.allclose(got["conv2.weight"], want, rtol=1e-6)
    bad, lost = _damage(model_nnc, "conv1.bias")
    got = nncodec.decode(recover_container(bad, lost, "mean")[2])
    # no 1-D tensor before it; the nearest after it is conv2.bias
    assert np.allclose(got["conv1.bias"], original["conv2.bias"].astype(np.float64).mean(), rtol=1e-6)


def test_partial_loss_end_to_end(model_nnc):
    """Near the cliff some frames are lost: whatever happens, nothing crashes and what comes
    back is a valid container whose intact tensors are exact."""
    original = nncodec.decode(model_nnc)
    seen_partial = False
    for seed in range(12):
        rep = transmit_nnc(model_nnc, mcs="qpsk-1/2", snr_db=2.0, block_length=648, seed=seed,
                           on_damage="zeros")
        assert rep.link.frames_undetected == 0
        if rep.container is None:
            assert not rep.header_intact
            continue
        got = nncodec.decode(rep.container)
        for t in rep.tensors:
            if t["status"] == "intact":
                assert np.array_equal(got[t["name"]], original[t["name"]])
            else:
                seen_partial = True
                assert t["hit"] and not np.asarray(got[t["name"]]).any()
    assert seen_partial


def test_determinism(model_nnc):
    a = simulate_link(model_nnc, mcs="16qam-1/2", snr_db=5.5, channel="rayleigh", seed=11)
    b = simulate_link(model_nnc, mcs="16qam-1/2", snr_db=5.5, channel="rayleigh", seed=11)
    c = simulate_link(model_nnc, mcs="16qam-1/2", snr_db=5.5, channel="rayleigh", seed=12)
    assert a.summary() == b.summary() and a.received == b.received
    assert (a.coded_ber, a.received) != (c.coded_ber, c.received)


def test_invalid_input():
    with pytest.raises(FormatError):
        transmit_nnc(b"not a container", snr_db=10)
    with pytest.raises(ValueError):
        simulate_link(b"x", mcs="8psk-1/2", snr_db=10)
    with pytest.raises(ValueError):
        simulate_link(b"x", mcs="qpsk-7/8", snr_db=10)
    with pytest.raises(ValueError):
        simulate_link(b"x", channel="rician", snr_db=10)


# ---- command line -------------------------------------------------------------------------------

def test_cli(tmp_path, model_nnc):
    from click.testing import CliRunner

    from nncodec.channel.cli import transmit

    src = tmp_path / "m.nnc"
    src.write_bytes(model_nnc)
    out = tmp_path / "rx.nnc"
    runner = CliRunner()
    res = runner.invoke(transmit, [str(src), "--snr", "6", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["link"]["frames_lost"] == 0 and out.read_bytes() == model_nnc
    res = runner.invoke(transmit, [str(src), "--snr", "6", "-o", str(out)])
    assert res.exit_code == 1 and "exists" in res.output
    res = runner.invoke(transmit, [str(src), "--snr", "-5", "-o", str(tmp_path / "x.nnc")])
    assert res.exit_code == 3 and not (tmp_path / "x.nnc").exists()
    bad = tmp_path / "bad.nnc"
    bad.write_bytes(b"garbage")
    assert runner.invoke(transmit, [str(bad), "--snr", "6", "-o", str(tmp_path / "y.nnc")]).exit_code == 3
    res = runner.invoke(transmit, ["--help"])
    assert res.exit_code == 0 and "Examples" in res.output


# ---- the budget API (fit_to_budget, send_nnc) -----------------------------------------------

@pytest.mark.parametrize("mcs", ["bpsk-1/2", "qpsk-3/4", "16qam-1/2", "64qam-5/6"])
def test_channel_use_accounting_matches_the_link(mcs):
    from nncodec.channel import channel_uses_for, max_nnc_bytes
    for nbytes in (1, 500, 4321):
        uses = channel_uses_for(nbytes, mcs)
        assert simulate_link(bytes(nbytes), mcs=mcs, snr_db=40.0).symbols == uses
        assert max_nnc_bytes(uses, mcs) >= nbytes
        assert channel_uses_for(max_nnc_bytes(uses, mcs) + 1, mcs) > uses  # tight
    assert max_nnc_bytes(100, mcs) == 0


def test_fit_to_budget(model_sd):
    from nncodec.channel import BudgetError, fit_to_budget, max_nnc_bytes
    budget = 16000
    fits = {}
    for mcs in ("bpsk-1/2", "qpsk-1/2", "16qam-1/2"):
        fit = fit_to_budget(model_sd, budget, mcs, tol=0.1)
        fits[mcs] = fit
        assert fit.nnc_bytes == len(fit.data) <= fit.max_bytes == max_nnc_bytes(budget, mcs)
        assert fit.channel_uses <= budget and fit.settings == {"target_snr": fit.value}
        assert not fit.at_limit
        # the search is tight: a setting finer by more than the tolerance does not fit
        assert len(nncodec.encode(model_sd, target_snr=fit.value + 0.2)) > fit.max_bytes
        assert nncodec.encode(model_sd, target_snr=fit.value) == fit.data
    # a higher-rate MCS buys a finer quantization within the same channel uses
    assert fits["bpsk-1/2"].value < fits["qpsk-1/2"].value < fits["16qam-1/2"].value
    q = fit_to_budget(model_sd, budget, "qpsk-1/2", knob="qp")
    assert q.nnc_bytes <= q.max_bytes and q.value == int(q.value)
    assert len(nncodec.encode(model_sd, qp=q.value - 1)) > q.max_bytes
    big = fit_to_budget(model_sd, 10 ** 6, "64qam-5/6")
    assert big.at_limit and big.value == 60.0 and big.encodes == 1
    with pytest.raises(BudgetError):
        fit_to_budget(model_sd, 2000, "bpsk-1/2")      # one codeword: 109 bytes
    with pytest.raises(ValueError):
        fit_to_budget(model_sd, budget, "qpsk-1/2", target_snr=20)


def test_send_nnc(model_nnc):
    from nncodec.channel import send_nnc
    rx = send_nnc(model_nnc, mcs="qpsk-1/2", snr_db=6.0, seed=0)
    original = nncodec.decode(model_nnc)
    assert rx.ok and rx.container == model_nnc and set(rx.tensors) == set(original)
    assert all(np.array_equal(rx.tensors[k], original[k]) for k in original)
    assert rx.stats["fer"] == 0 and rx.stats["tensors_damaged"] == 0 and rx.stats["error"] is None
    assert rx.stats["channel_uses"] == rx.report.link.symbols
    lost = send_nnc(model_nnc, mcs="qpsk-1/2", snr_db=-4.0, seed=0)
    assert not lost.ok and lost.tensors is None and "header" in lost.stats["error"]
    # near the cliff: some draws lose tensors; "zeros" replaces them, "fail" returns no model
    seen = False
    for seed in range(12):
        z = send_nnc(model_nnc, mcs="qpsk-1/2", snr_db=2.0, block_length=648, seed=seed)
        f = send_nnc(model_nnc, mcs="qpsk-1/2", snr_db=2.0, block_length=648, seed=seed, on_damage="fail")
        assert z.stats == {**f.stats, "damaged": z.stats["damaged"], "error": z.stats["error"]} or not z.ok
        if z.ok and z.stats["damaged"]:
            seen = True
            assert f.tensors is None and f.stats["error"]
            assert all((z.tensors[k] == 0).all() for k in z.stats["damaged"])
    assert seen
    again = send_nnc(model_nnc, mcs="qpsk-1/2", snr_db=2.0, block_length=648, seed=3)
    assert again.stats == send_nnc(model_nnc, mcs="qpsk-1/2", snr_db=2.0, block_length=648, seed=3).stats
