"""The CABAC level coder: exact round trips, compiled == pure-Python bytes,
and robustness against bad input."""
import contextlib
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from nncodec.entropy import cabac, cabac_ref
from nncodec.errors import FormatError, NNCodecError, TruncatedError, VersionError
from nncodec_ext import _cabac

I32_MIN, I32_MAX = -(2**31), 2**31 - 1

# levels: mostly small (as quantized weights are), sometimes anywhere in int32
small = st.integers(-20, 20)
level = st.one_of(small, small, small, st.integers(I32_MIN, I32_MAX),
                  st.sampled_from([0, I32_MIN, I32_MAX, -I32_MAX]))
level_arrays = hnp.arrays(np.int32, st.integers(0, 300), elements=level)


def roundtrip(x, **kw):
    data = cabac.encode(x, **kw)
    y = cabac.decode(data, x.size)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, x.reshape(-1))
    return data


@given(level_arrays, st.integers(0, 40))
def test_roundtrip_any_int32(x, row):
    roundtrip(x, row_length=row)


rates_bytes = st.builds(lambda f, s: f | (s << 4), st.integers(1, 8), st.integers(4, 11))


@given(level_arrays, st.integers(0, 7), st.integers(0, 31), st.integers(0, 40), rates_bytes,
       st.integers(0, 1), st.integers(0, 1))
def test_compiled_and_reference_write_identical_bytes(x, K, E, row, rates, init, dq):
    compiled = _cabac.encode(x, K, E, row, rates, init, dq)
    reference = cabac_ref.encode(x, K, E, row, rates, init, dq)
    assert compiled == reference
    # each decodes the other's bytes
    out = np.empty(x.size, np.int32)
    assert cabac_ref.decode_into(np.frombuffer(compiled, np.uint8), out, K, E, row, rates, init, dq) == 0
    np.testing.assert_array_equal(out, x)
    out2 = np.full(x.size, 7, np.int32)
    assert _cabac.decode_into(np.frombuffer(reference, np.uint8), out2, K, E, row, rates, init, dq) == 0
    np.testing.assert_array_equal(out2, x)
    # the cost model and the parameter statistics agree too
    assert _cabac.cost(x, K, E, row, rates, init, True, dq) == cabac_ref.cost(x, K, E, row, rates, init, True, dq)
    assert _cabac.cost(x, K, E, row, rates, init, False, dq) == cabac_ref.cost(x, K, E, row, rates, init, False, dq)
    assert _cabac.n_contexts(K, dq) == cabac_ref.n_contexts(K, dq)
    np.testing.assert_array_equal(_cabac.magnitude_histogram(x, K), cabac_ref.magnitude_histogram(x, K))
    np.testing.assert_array_equal(_cabac.remainder_histogram(x, K), cabac_ref.remainder_histogram(x, K))


@contextlib.contextmanager
def env(name, value):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


@given(level_arrays, st.integers(0, 40))
def test_pure_python_mode_writes_the_same_payload(x, row):
    fast = cabac.encode(x, row_length=row)
    fast_dq = cabac.encode(x, row_length=row, dq=True)
    with env("NNCODEC_PURE_PYTHON", "1"):
        assert cabac.implementation() is cabac_ref
        slow = cabac.encode(x, row_length=row)
        slow_dq = cabac.encode(x, row_length=row, dq=True)
        np.testing.assert_array_equal(cabac.decode(fast, x.size), x)
        np.testing.assert_array_equal(cabac.decode(fast_dq, x.size), x)
    assert cabac.implementation() is _cabac
    assert fast == slow and fast_dq == slow_dq


@pytest.mark.parametrize("x", [
    np.zeros(0, np.int32),
    np.array([5], np.int32),
    np.array([I32_MIN], np.int32),
    np.array([I32_MAX, I32_MIN, -I32_MAX, 0, 1, -1], np.int32),
    np.zeros(100_000, np.int32),
    np.concatenate([np.zeros(50_000, np.int32), [3], np.zeros(70_000, np.int32), [-9]]).astype(np.int32),
    np.full(1000, I32_MAX, np.int32),
    np.full(1000, I32_MIN, np.int32),
], ids=["empty", "one", "min", "extremes", "zeros", "zero-runs", "all-max", "all-min"])
def test_edge_cases_roundtrip_and_match_reference(x):
    data = roundtrip(x)
    if x.size <= 2000:
        K, E, (fast, slow), init, row, pos = cabac.parse_header_full(data)
        assert cabac_ref.encode(x, K, E, row, fast | slow << 4, init) == data[pos:]


def test_all_zeros_cost_almost_nothing():
    data = roundtrip(np.zeros(1_000_000, np.int32))
    assert len(data) < 200  # far below one bit per level


@pytest.mark.parametrize("K", [0, 1, 3, 7])
@pytest.mark.parametrize("E", [0, 3, 31])
@pytest.mark.parametrize("rates,init", [((1, 4), 0), ((8, 11), 1), ((3, 7), 1)])
def test_explicit_parameters(K, E, rates, init):
    rng = np.random.default_rng(K * 100 + E)
    x = np.round(rng.laplace(0, 5, 5000)).astype(np.int32)
    data = roundtrip(x, K=K, eg_order=E, row_length=50, rates=rates, init=init)
    assert cabac.parse_header(data)[:3] == (K, E, 50)
    assert cabac.parse_header_full(data)[:5] == (K, E, rates, init, 50)


def test_bad_parameters_are_rejected():
    x = np.arange(10, dtype=np.int32)
    with pytest.raises(ValueError):
        cabac.encode(x, K=8)
    with pytest.raises(ValueError):
        cabac.encode(x, eg_order=32)
    with pytest.raises(ValueError):
        cabac.encode(x, row_length=-1)
    with pytest.raises(ValueError):
        cabac.encode(x, rates=(0, 4))
    with pytest.raises(ValueError):
        cabac.encode(x, rates=(4, 12))
    with pytest.raises(ValueError):
        cabac.encode(x, rates=(9, 9))
    with pytest.raises(ValueError):
        cabac.encode(x, rates=(4, 3))
    with pytest.raises(ValueError):
        cabac.encode(x, init=2)
    with pytest.raises(TypeError):
        cabac.encode(np.ones(3, np.float32))
    with pytest.raises(ValueError):
        cabac.encode(np.array([2**40], np.int64))


def test_choose_params_follow_the_distribution():
    rng = np.random.default_rng(0)
    narrow = np.round(rng.laplace(0, 0.5, 20000)).astype(np.int32)
    wide = np.round(rng.laplace(0, 30, 20000)).astype(np.int32)
    k_n, e_narrow, _, _ = cabac.choose_params(narrow)
    k_w, e_wide, rates, init = cabac.choose_params(wide)
    assert k_n in cabac.K_CANDIDATES and k_w in cabac.K_CANDIDATES
    assert e_narrow <= 1 < 3 <= e_wide  # the classes grow with the magnitudes
    assert rates in cabac.RATE_CANDIDATES and init in (0, 1)
    assert cabac.choose_params(np.zeros(10, np.int32)) == (1, 0, cabac.DEFAULT_RATES, 0)
    # the chosen parameters cost no more than the others tried
    best = cabac.cost_bits(wide, K=k_w, eg_order=e_wide, rates=rates, init=init)
    assert best <= cabac.cost_bits(wide, K=k_w, eg_order=e_wide, rates=(5, 10), init=init) + 1e-6
    assert cabac.cost_bits(wide) == best
    # parameters given are kept
    assert cabac.choose_params(wide, K=3, eg_order=2, rates=(6, 9), init=0) == (3, 2, (6, 9), 0)


def test_stationary_and_drifting_data_pick_different_rates():
    rng = np.random.default_rng(5)
    stationary = np.round(rng.laplace(0, 4, 16000)).astype(np.int32)
    # blocks of 200 levels at scales 2 or 40: the fast estimators follow the jumps
    scale = np.repeat(rng.choice([2.0, 40.0], size=80), 200)
    drifting = np.round(rng.laplace(0, 1, scale.size) * scale).astype(np.int32)
    assert cabac.choose_params(stationary, 400)[2] == (8, 11)
    assert cabac.choose_params(drifting, 0)[2][0] == 4  # the fastest fast shift tried


def test_prior_tables_help_small_tensors():
    # a small tensor of typical quantized weights codes smaller from the priors
    rng = np.random.default_rng(6)
    x = np.round(rng.laplace(0, 5, 600)).astype(np.int32)
    assert cabac.cost_bits(x, row_length=60, init=1) < cabac.cost_bits(x, row_length=60, init=0)
    assert cabac.choose_params(x, 60)[3] == 1


def test_size_close_to_the_ideal_code_length():
    rng = np.random.default_rng(1)
    x = np.round(rng.laplace(0, 6, 200_000)).astype(np.int32)
    info = cabac.analyze(x, row_length=500)
    data = cabac.encode(x, row_length=500)
    body_bits = (len(data) - info["header_bytes"]) * 8
    assert info["ideal_bits"] <= body_bits <= info["ideal_bits"] * 1.001 + 64
    # the table-based estimate is within 0.2% of the exact one
    fast = cabac.cost_bits(x, row_length=500)
    assert abs(fast - info["ideal_bits"]) <= 0.002 * info["ideal_bits"]
    # and an i.i.d. Laplacian costs little more than its order-0 entropy
    _, counts = np.unique(x, return_counts=True)
    p = counts / counts.sum()
    h0 = -(counts * np.log2(p)).sum()
    assert body_bits < 1.02 * h0


def test_neighbour_contexts_pay_off_on_structured_data():
    # rows of very different scales: contexts from the previous level and row help
    rng = np.random.default_rng(2)
    scales = np.repeat(rng.choice([0.2, 8.0], size=200), 500)
    x = np.round(rng.laplace(0, 1, scales.size) * scales).astype(np.int32)
    _, counts = np.unique(x, return_counts=True)
    h0 = -(counts * np.log2(counts / counts.sum())).sum()
    assert len(cabac.encode(x, row_length=500)) * 8 < 0.9 * h0


# ---- robustness: the decoder is fed bytes it did not write ----------------------

def _decode_or_error(data, count):
    try:
        out = cabac.decode(data, count)
    except FormatError:
        return None
    assert out.shape == (count,) and out.dtype == np.int32
    return out


@given(st.binary(max_size=400), st.integers(0, 2000))
def test_random_bytes_raise_only_format_errors(data, count):
    _decode_or_error(data, count)


@given(st.binary(min_size=3, max_size=400), st.integers(0, 2000))
def test_random_bodies_behind_a_valid_header(body, count):
    header = bytes([2, body[0], body[1], body[2] % 128])  # bit 7 of byte 2: the dq flag, either
    _decode_or_error(header + body[3:], count)


def test_bit_flips_in_dq_payloads_never_crash():
    rng = np.random.default_rng(8)
    x = np.round(rng.laplace(0, 3, 800)).astype(np.int32)
    data = cabac.encode(x, row_length=40, dq=True)
    for pos in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            _decode_or_error(bytes(bad), x.size)


def _sample_payload(n=3000, seed=3):
    rng = np.random.default_rng(seed)
    x = np.round(rng.laplace(0, 4, n)).astype(np.int32)
    x[rng.random(n) < 0.3] = 0
    return x, cabac.encode(x, row_length=60)


def test_every_truncation_is_detected():
    x, data = _sample_payload()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            cabac.decode(data[:cut], x.size)


def test_trailing_bytes_and_wrong_counts_are_detected():
    x, data = _sample_payload()
    with pytest.raises(FormatError):
        cabac.decode(data + b"\x00", x.size)
    with pytest.raises(FormatError):
        cabac.decode(data, x.size + 1000)


def test_bit_flips_never_crash():
    x, data = _sample_payload(n=1500)
    unnoticed = set()
    for pos in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            out = _decode_or_error(bytes(bad), x.size)
            if out is not None and np.array_equal(out, x):
                unnoticed.add(pos)
    # A flip changes the decoded levels or is reported, except in the final
    # flush bytes, whose low bits are slack of the arithmetic coder's last
    # interval, and in the rates byte (offset 2): another valid adaptation
    # speed can still decode the same levels, which is then not an error.
    # (The payload carries no checksum: the container's CRC does.)
    assert unnoticed <= {2} | set(range(len(data) - 2, len(data)))


def test_errors_belong_to_the_project_hierarchy():
    with pytest.raises(NNCodecError):
        cabac.decode(b"", 10)
    with pytest.raises(TruncatedError):
        cabac.decode(b"\x02\x05", 10)
    with pytest.raises(VersionError):
        cabac.decode(b"\x01\x05\x00\x00", 10)  # version 1 payloads are not read any more
    with pytest.raises(VersionError):
        cabac.decode(b"\x03\x05\x00\x55\x00", 10)  # unknown payload version
    with pytest.raises(FormatError):
        cabac.decode(b"\x02\x05\x80\x00\x00\x00", 10)  # one byte too many (dq flag set)


def test_garbage_that_escapes_forever_stops():
    # all-ones bodies drive every flag to 1 and the Exp-Golomb prefix to its limit
    data = bytes([2, 1, 0x34, 0]) + b"\xff" * 64
    with pytest.raises(FormatError):
        cabac.decode(data, 10)


def test_decoding_allocates_no_more_than_the_declared_count():
    rng = np.random.default_rng(4)
    junk = bytes([2, 0xFF, 0x3F]) + b"\xff\xff\xff\xff\x7f" + rng.bytes(5000)  # huge row length
    count = 10_000
    tracemalloc.start()
    try:
        _decode_or_error(junk, count)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * count + 200_000


# --------------------------------------------------------------------------- dq contexts


@given(level_arrays, st.integers(0, 40))
def test_dq_payloads_roundtrip_and_set_the_flag(x, row):
    data = roundtrip(x, row_length=row, dq=True)
    assert data[2] >> 7 == 1 and cabac.parse_header_dq(data)[4] == 1
    plain = roundtrip(x, row_length=row)
    assert plain[2] >> 7 == 0 and cabac.parse_header_dq(plain)[4] == 0
    # K and E are chosen from the magnitudes alone, the same with or without the flag (the
    # rates and init are tried with the contexts the payload uses, so they may differ)
    assert plain[:2] == data[:2]


def test_dq_levels_from_the_trellis_are_marked_and_coded_with_dq_contexts():
    from nncodec.quantize import rdq

    w = np.random.default_rng(5).laplace(0, 1.0, (40, 30))
    lv, _ = rdq.rd_quantize(w.reshape(-1), 0.4, row_length=30, dq=True)
    assert isinstance(lv, cabac.DQLevels)
    data = cabac.encode(lv, row_length=30)
    assert cabac.parse_header_dq(data)[4] == 1
    np.testing.assert_array_equal(cabac.decode(data, lv.size), lv)
    assert cabac.parse_header_dq(cabac.encode(np.asarray(lv).copy(), row_length=30))[4] == 0
    assert cabac.parse_header_dq(cabac.encode(lv, row_length=30, dq=False))[4] == 0
    up, _ = rdq.rd_quantize(w.reshape(-1), 0.4, row_length=30)
    assert not isinstance(up, cabac.DQLevels)


def test_dq_contexts_pay_off_when_the_quantizers_differ():
    # low rate: the quantizer of states 2/3 (odd multiples and zero) codes far fewer zeros than
    # that of states 0/1, which the state-dependent sig contexts learn
    from nncodec.quantize import rdq

    w = np.random.default_rng(6).laplace(0, 1.0, 200_000)
    lv, _ = rdq.rd_quantize(w, 0.8, dq=True)
    with_dq = cabac.cost_bits(lv, dq=True)
    without = cabac.cost_bits(lv, dq=False)
    assert with_dq < 0.99 * without


def test_non_dq_payloads_keep_their_bytes():
    # written by the coder before the dq flag existed (main at d1c1052): the flag off is unchanged
    x = np.array([0, 3, -1, 0, 0, 7, 2, -2, 0, 1] * 20, np.int32)
    data = cabac.encode(x, row_length=10, K=2, eg_order=1, rates=(5, 10), init=1)
    assert data.hex() == ("020a740a313c5e6895f6eeb957b83db60247a264b6469f949b43da6e591cb9ca31e3dfe7529c60"
                          "ca8c5ef3964f0d25573b4606437b1bdda48412b2bff6d8")
    dq = cabac.encode(x, row_length=10, K=2, eg_order=1, rates=(5, 10), init=1, dq=True)
    assert dq[:2] == data[:2] and dq[2] == data[2] | 0x80 and dq[4:] != data[4:]
    np.testing.assert_array_equal(cabac.decode(dq, x.size), x)


# --------------------------------------------------------------------------- parameter search


@settings(max_examples=60, deadline=None)
@given(level_arrays, st.integers(0, 7), st.integers(0, 6), st.integers(0, 40), st.booleans())
def test_search_helpers_agree_with_the_reference(x, K, E, row, dq):
    # static_costs and cost_multi decide the parameters: both coders must give the same floats
    Ks, Es = [K, 0, 2], [E, 3, 0]
    assert _cabac.static_costs(x, Ks, Es, 0.5, 0.2) == cabac_ref.static_costs(x, Ks, Es, 0.5, 0.2)
    rates = [4 | 9 << 4, 8 | 11 << 4, 5 | 10 << 4]
    inits = [1, 0, 1]
    multi = _cabac.cost_multi(x, K, E, row, rates, inits, int(dq))
    assert multi == cabac_ref.cost_multi(x, K, E, row, rates, inits, int(dq))
    # one pass over all candidates gives what a pass for each gives
    assert multi == [_cabac.cost(x, K, E, row, r, i, False, int(dq))[0] for r, i in zip(rates, inits)]


def test_static_cost_counts_the_bins():
    # levels 0, 1, 3 with K = 1, E = 0: gt1 bins: |1| -> 0, |3| -> 1 (2 bins, H = 1 bit each);
    # remainder of 3: r = 1, class 1 (prefix 1, 0), suffix of 1 bit (off 0)
    x = np.array([0, 1, -3], np.int32)
    got, = _cabac.static_costs(x, [1], [0], 0.0, 0.0)
    assert got == pytest.approx(2.0)  # gt1: one 0 and one 1; prefix and suffix contexts pure
    with_penalty, = _cabac.static_costs(x, [1], [0], 1.0, 0.0)
    # gt1 (2 bins) and prefix positions 0 (1 bin) and 1 (1 bin) are charged log2(n + 1)
    assert with_penalty == pytest.approx(2.0 + np.log2(3) + 1.0 + 1.0)
    # magnitudes beyond the compiled coder's histogram count the same as small ones
    big = np.array([5000, -5000, 3, 70000, 2**31 - 1, -(2**31)], np.int32)
    assert _cabac.static_costs(big, [0, 2], [4, 9], 0.5, 0.2) == cabac_ref.static_costs(big, [0, 2], [4, 9], 0.5, 0.2)
    with pytest.raises(ValueError):
        _cabac.static_costs(x, [8], [0], 0.0, 0.0)
    with pytest.raises(ValueError):
        _cabac.static_costs(x, [1, 2], [0], 0.0, 0.0)


def test_cost_multi_rejects_bad_candidate_lists():
    x = np.arange(-5, 5, dtype=np.int32)
    with pytest.raises(ValueError):
        _cabac.cost_multi(x, 1, 0, 0, [5 | 10 << 4], [1, 0])
    with pytest.raises(ValueError):
        _cabac.cost_multi(x, 1, 0, 0, [5 | 10 << 4] * 17, [1] * 17)
    with pytest.raises(ValueError):
        _cabac.cost_multi(x, 1, 0, 0, [0], [1])  # rates out of range
