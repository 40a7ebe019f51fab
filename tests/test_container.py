"""Tests of the .nnc container (nncodec/container.py) against its spec (formats/nnc-v1.md).

Invalid files are built with a small encoder written here from the spec alone, so the tests also
check that the spec is enough to produce files the reader accepts.
"""
from __future__ import annotations

import io
import math
import os
import pathlib
import random
import re
import stat
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nncodec import container as C
from nncodec.container import (BACKENDS, DTYPES, DecoderLimits, Reader, RecordInfo, TensorRecord,
                               pack, write)
from nncodec.errors import (ChecksumError, FormatError, LimitError, NNCodecError, TruncatedError,
                            VersionError)

SPEC = pathlib.Path(__file__).resolve().parents[1] / "formats" / "nnc-v1.md"
MAGIC = b"\x89NNC\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------
# A spec-level encoder, independent of container.py


def uv(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sb(x) -> bytes:
    raw = x.encode("utf-8") if isinstance(x, str) else x
    return uv(len(raw)) + raw


class RawMap(list):
    """A map whose entries are written in the order given (to build non-canonical maps)."""


def val(v) -> bytes:
    if v is None:
        return b"\x00"
    if v is False:
        return b"\x01"
    if v is True:
        return b"\x02"
    if isinstance(v, int):
        return b"\x03" + uv(2 * v if v >= 0 else -2 * v - 1)
    if isinstance(v, float):
        return b"\x04" + struct.pack("<d", v)
    if isinstance(v, (str, bytes)):
        return b"\x05" + sb(v)
    if isinstance(v, RawMap):
        return b"\x07" + uv(len(v)) + b"".join(sb(k) + val(x) for k, x in v)
    if isinstance(v, list):
        return b"\x06" + uv(len(v)) + b"".join(val(x) for x in v)
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: kv[0].encode("utf-8"))
        return b"\x07" + uv(len(items)) + b"".join(sb(k) + val(x) for k, x in items)
    raise TypeError(v)


def rec(name="t", dtype=1, dims=(3,), backend=0, chain=None, offset=0, payload=b"abc",
        length=None, crc=None, chain_bytes=None, ndim=None) -> bytes:
    chain_bytes = chain_bytes if chain_bytes is not None else val(
        chain if chain is not None else [{"id": "raw"}])
    return (sb(name) + bytes([dtype]) + uv(len(dims) if ndim is None else ndim)
            + b"".join(uv(d) for d in dims) + bytes([backend]) + chain_bytes + uv(offset)
            + uv(len(payload) if length is None else length)
            + struct.pack("<I", zlib.crc32(payload) if crc is None else crc))


# the compact index of format 1.2 (spec sections 5.3 and 6.1)
QUARTERS = [struct.unpack(">d", bytes.fromhex(h))[0] for h in
            ("3ff0000000000000", "3ff306fe0a31b715", "3ff6a09e667f3bcd", "3ffae89f995ad3ad")]


def cfl(f: float) -> bytes:
    bits = struct.pack(">d", f)
    for head in range(16, 256):
        e = head - 176
        if struct.pack(">d", math.ldexp(QUARTERS[e % 4], e // 4)) == bits:
            return bytes([head])
    n = len(bits.rstrip(b"\0"))
    return bytes([n]) + bits[:n]


def cval(v) -> bytes:
    if isinstance(v, float):
        return b"\x08" + cfl(v)
    if isinstance(v, RawMap):
        return b"\x07" + uv(len(v)) + b"".join(sb(k) + cval(x) for k, x in v)
    if isinstance(v, list):
        return b"\x06" + uv(len(v)) + b"".join(cval(x) for x in v)
    if isinstance(v, dict):
        return b"\x07" + centries(v)
    return val(v)


def centries(d: dict) -> bytes:
    items = sorted(d.items(), key=lambda kv: kv[0].encode("utf-8"))
    return uv(len(items)) + b"".join(sb(k) + cval(x) for k, x in items)


SHORT = {"raw": 1, "integer": 2, "uniform": 3, "dq": 4}


def cstage(stage: dict) -> bytes:
    params = {k: v for k, v in stage.items() if k != "id"}
    code = SHORT.get(stage["id"])
    if code in (1, 2) and not params:
        return bytes([code])
    if code in (3, 4) and list(params) == ["step"] and isinstance(params["step"], float):
        return bytes([code]) + cfl(params["step"])
    return b"\x00" + sb(stage["id"]) + centries(params)


def crec(name="t", dtype=1, dims=(3,), backend=0, chain=None, payload=b"abc", prev=b"",
         prefix=None, length=None, crc=None, chain_bytes=None) -> bytes:
    raw = name.encode("utf-8") if isinstance(name, str) else name
    if prefix is None:
        prefix = 0
        while prefix < min(len(raw), len(prev)) and raw[prefix] == prev[prefix]:
            prefix += 1
    chain = chain if chain is not None else [{"id": "raw"}]
    if chain_bytes is None:
        chain_bytes = uv(len(chain)) + b"".join(cstage(x) for x in chain)
    return (uv(prefix) + sb(raw[prefix:]) + bytes([dtype]) + uv(len(dims))
            + b"".join(uv(d) for d in dims) + bytes([backend]) + chain_bytes
            + uv(len(payload) if length is None else length)
            + struct.pack("<I", zlib.crc32(payload) if crc is None else crc))


def cbuild(body_bytes: bytes, data: bytes = b"", **kw) -> bytes:
    kw.setdefault("minor", 2)
    kw.setdefault("flags", 1)
    return build(body_bytes, data, **kw)


def cone(**kw) -> bytes:
    """A valid single-tensor compact file, with any record field overridden."""
    return cbuild(body([crec(**kw)]), kw.get("payload", b"abc"))


def body(records=(), meta=(), tensor_count=None) -> bytes:
    out = uv(len(meta)) + b"".join(sb(k) + sb(v) for k, v in meta)
    out += uv(len(records) if tensor_count is None else tensor_count)
    return out + b"".join(records)


def build(body_bytes: bytes, data: bytes = b"", *, magic=MAGIC, major=1, minor=0, flags=0,
          length=None, crc=None) -> bytes:
    length = len(body_bytes) if length is None else length
    first16 = magic + struct.pack("<BBHI", major, minor, flags, length)
    if crc is None:
        crc = zlib.crc32(first16 + body_bytes)
    return first16 + struct.pack("<I", crc) + body_bytes + data


def one(**kw) -> bytes:
    """A valid single-tensor file, with any record field overridden."""
    payload = kw.get("payload", b"abc")
    return build(body([rec(**kw)]), payload)


def read_all(blob, **kw) -> Reader:
    with Reader(blob, **kw) as r:
        for name in r.keys():
            r.read_payload(name)
    return r


def outcome(blob) -> type | None:
    """The FormatError class reading everything raises, or None when it decodes. Any other
    exception fails the test."""
    try:
        read_all(blob)
    except FormatError as exc:
        return type(exc)
    return None


# ---------------------------------------------------------------------------------------------
# Fixtures: example files


def example_records():
    return [
        TensorRecord("bias", "int8", (3,), [{"id": "raw"}], 0, bytes([1, 0xFF, 0x7F])),
        TensorRecord("w", "float32", (2, 2), [{"id": "uniform", "step": 0.5}], 2,
                     bytes([0xDE, 0xAD, 0xBE, 0xEF])),
    ]


def sample_records():
    rng = random.Random(7)
    return [
        TensorRecord("conv1.weight", "float32", (8, 3, 3, 3),
                     [{"id": "uniform", "step": 0.01, "zero": 0}], 1, rng.randbytes(60)),
        TensorRecord("conv1.bias", "float16", (8,), [{"id": "raw"}], 0, rng.randbytes(16)),
        TensorRecord("scale", "bfloat16", (), [], 2, rng.randbytes(5)),
        TensorRecord("empty", "bool", (0, 4), [{"id": "raw"}], 0, b""),
        TensorRecord("größe ✓", "int64", (1, 1, 1), [{"id": "k", "p": [1, -2, None, True]}], 1,
                     rng.randbytes(9)),
    ]


def sample_blob():
    return pack(sample_records(), {"producer": "tests", "model": "tiny"})


# ---------------------------------------------------------------------------------------------
# The spec and the implementation agree


def _spec_example_bytes(marker="<!-- example-bytes:") -> bytes:
    text = SPEC.read_text(encoding="utf-8")
    block = text.split(marker, 1)[1].split("```text", 1)[1].split("```", 1)[0]
    out = bytearray()
    for line in block.strip().splitlines():
        out += bytes.fromhex("".join(line.split()[1:]))
    return bytes(out)


def test_pack_matches_the_spec_examples():
    blob = pack(example_records(), {"source": "example"}, compact=False)
    assert blob == _spec_example_bytes()
    assert len(blob) == 114
    blob = pack(example_records(), {"source": "example"})
    assert blob == _spec_example_bytes("<!-- example-bytes-compact:")
    assert len(blob) == 77


@pytest.mark.parametrize("table, marker", [("Field by field:", "<!-- example-bytes:"),
                                           ("Field by field (compact):",
                                            "<!-- example-bytes-compact:")])
def test_spec_field_table_matches_the_example(table, marker):
    text = SPEC.read_text(encoding="utf-8").split(table, 1)[1].split("\n\n", 2)[1]
    blob = _spec_example_bytes(marker)
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`([^`]*)`", text, flags=re.M)
    assert len(rows) > 15
    for offset, tokens in rows:
        expected = bytearray()
        for tok in tokens.split():
            if not re.fullmatch(r"[0-9a-f]{2}", tok):
                break
            expected.append(int(tok, 16))
        offset = int(offset)
        assert blob[offset:offset + len(expected)] == bytes(expected), (offset, tokens)


def test_spec_level_encoder_agrees_with_pack():
    records = example_records()
    recs = []
    offset = 0
    for r in records:
        recs.append(rec(r.name, DTYPES[r.dtype][0], r.shape, r.backend, r.chain, offset, r.payload))
        offset += len(r.payload)
    mine = build(body(recs, [("source", "example")]), b"".join(r.payload for r in records))
    assert mine == pack(records, {"source": "example"}, compact=False)


@pytest.mark.parametrize("records", [example_records(), sample_records()])
def test_spec_level_compact_encoder_agrees_with_pack(records):
    recs, prev = [], b""
    for r in records:
        recs.append(crec(r.name, DTYPES[r.dtype][0], r.shape, r.backend, r.chain, r.payload, prev))
        prev = r.name.encode("utf-8")
    mine = cbuild(body(recs, [("source", "example")]), b"".join(r.payload for r in records))
    assert mine == pack(records, {"source": "example"})


def test_short_floats():
    """Spec 6.1: quarter powers of two take one byte; other floats their leading non-zero bytes."""
    for qp in range(-160, 80):
        step = 2.0 ** (qp / 4)  # how nncodec turns a QP into a step
        assert cfl(step) == bytes([qp + 176])
    assert cfl(0.0) == b"\x00" and cfl(-0.0) == b"\x01\x80"
    assert cfl(0.1) == b"\x08" + struct.pack(">d", 0.1)
    assert cfl(2.0 ** 20) == b"\x02\x41\x30"  # beyond the one-byte range
    assert cfl(0.75) == b"\x02\x3f\xe8"
    for f in (0.0, -0.0, 1.0, 0.1, 0.0625, 2.0 ** -17.25, 1e-300, -5e-324, 1.7976931348623157e308,
              0.0005749572911456767, float(np.float32(0.3))):
        rec_ = TensorRecord("w", "float32", (1,), [{"id": "uniform", "step": f}], 1, b"x")
        blob = pack([rec_])
        assert blob == cbuild(body([crec("w", dims=(1,), chain=rec_.chain, backend=1, payload=b"x")]), b"x")
        with Reader(blob) as r:
            got = r.record_info("w").chain[0]["step"]
            assert struct.pack("<d", got) == struct.pack("<d", f)


def test_crc_is_zlib_crc32_check_value():
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_backend_ids_match_the_entropy_registry():
    entropy = pytest.importorskip("nncodec.entropy")
    for name in entropy.available_backends():
        backend = entropy.get_backend(name)
        assert backend.id in BACKENDS and backend.id != 0
        assert entropy.backend_by_id(backend.id).decode is backend.decode
    for backend_id, name in BACKENDS.items():
        if backend_id in (1, 2):
            assert entropy.get_backend(name).id == backend_id


# ---------------------------------------------------------------------------------------------
# Round trips

_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
         | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
_json = st.recursive(_leaf, lambda c: st.lists(c, max_size=3)
                     | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=8)
_stage = st.builds(lambda ident, params: {**params, "id": ident}, st.text(max_size=8),
                   st.dictionaries(st.text(max_size=5).filter(lambda k: k != "id"), _json,
                                   max_size=3))


def _depth(v, level=1):
    if isinstance(v, (list, dict)):
        items = v.values() if isinstance(v, dict) else v
        return max([level] + [_depth(x, level + 1) for x in items])
    return 0


def _record(name):
    return st.builds(TensorRecord, name=st.just(name), dtype=st.sampled_from(sorted(DTYPES)),
                     shape=st.lists(st.integers(0, 4), max_size=16).map(tuple),
                     chain=st.lists(_stage, max_size=3), backend=st.sampled_from(sorted(BACKENDS)),
                     payload=st.binary(max_size=24))


_records = st.lists(st.text(min_size=1, max_size=10), unique=True, max_size=6).flatmap(
    lambda names: st.tuples(*[_record(n) for n in names]))
_metadata = st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=5)


def _check_round_trip(records, metadata, compact=True):
    blob = pack(records, metadata, compact=compact)
    with Reader(blob) as r:
        assert r.keys() == [x.name for x in records]
        assert r.metadata() == metadata
        legacy_minor = max([0] + [1 for x in records for st in x.chain if st["id"] == "dq"])
        assert r.version == ((1, 2) if compact else (1, legacy_minor))
        assert r.compact == compact
        assert r.size == len(blob)
        back = []
        for x in records:
            info = r.record_info(x.name)
            assert (info.dtype, info.shape, info.chain, info.backend) == \
                   (x.dtype, tuple(x.shape), x.chain, x.backend)
            assert info.length == len(x.payload) and info.crc32 == x.crc32
            assert r.read_payload(x.name) == x.payload
            back.append(r.read_record(x.name))
        assert r.verify() == []
        summary = r.info()
        assert summary["total_bytes"] == len(blob)
        assert summary["header_bytes"] + summary["payload_bytes"] == len(blob)
        assert [t["name"] for t in summary["tensors"]] == r.keys()
    assert back == list(records)
    # what was read re-encodes to the very same bytes (floats bit-exact, -0.0 included)
    assert pack(back, metadata, compact=compact) == blob
    return blob


_step = (st.floats(allow_nan=False, allow_infinity=False) | st.integers(-40, 20).map(lambda q: 2.0 ** (q / 4))
         | st.integers(-5, 5))
_short_stage = st.one_of(st.sampled_from([{"id": "raw"}, {"id": "integer"}]),
                         st.builds(lambda i, s: {"id": i, "step": s}, st.sampled_from(["uniform", "dq"]),
                                   _step),
                         st.builds(lambda i, k, v: {"id": i, k: v},
                                   st.sampled_from(["raw", "integer", "uniform", "dq"]),
                                   st.sampled_from(["step", "a", "zz"]), _json))


@settings(suppress_health_check=[HealthCheck.too_slow])  # examples: tests/conftest.py profile
@given(records=_records, metadata=_metadata, compact=st.booleans())
def test_round_trip_random_records(records, metadata, compact):
    assume(all(_depth(x.chain) <= 16 for x in records))
    _check_round_trip(list(records), metadata, compact)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.sampled_from(["a", "ab", "abc", "b", "a.weight", "a.bias", "é", "éa", "\u00e8",
                                       "x\u0100", "x\u0101"]), unique=True, max_size=8),
       chains=st.lists(st.lists(_short_stage, max_size=3), min_size=8, max_size=8))
def test_round_trip_shared_name_prefixes_and_short_stages(names, chains):
    records = [TensorRecord(n, "float32", (2,), c, 1, n.encode()) for n, c in zip(names, chains)]
    assume(all(_depth(x.chain) <= 16 for x in records))
    for compact in (True, False):
        _check_round_trip(records, {"m": "1"}, compact)


def test_compact_index_is_smaller():
    recs = [TensorRecord(f"layer{i}.weight", "float32", (64, 3, 3, 3),
                         [{"id": "uniform", "step": 2.0 ** (-26 / 4)}], 1, b"p" * 100) for i in range(5)]
    recs += [TensorRecord(f"layer{i}.bias", "float32", (64,), [{"id": "uniform", "step": 1e-4}], 1,
                          b"q" * 10) for i in range(5)]
    payloads = sum(len(r.payload) for r in recs)
    legacy = len(pack(recs, compact=False)) - len(pack([], compact=False)) - payloads
    compact = len(pack(recs)) - len(pack([])) - payloads
    assert compact < 0.55 * legacy, (compact, legacy)  # 27 against 55 bytes a record


def test_round_trip_edge_cases():
    records = [TensorRecord(f"t_{dt}", dt, (2,), [{"id": "raw"}], 0, b"\x00" * 2)
               for dt in DTYPES]
    records += [
        TensorRecord("scalar", "float32", (), [{"id": "uniform", "step": 1e-300}], 1, b"x"),
        TensorRecord("zero-size", "float32", (0,), [], 0, b""),
        TensorRecord("zero-huge", "float32", (0, 2 ** 40), [], 0, b""),
        TensorRecord("max-elements", "float64", (2 ** 20, 2 ** 20), [], 2, b"z"),
        TensorRecord("16 dims", "uint8", (1,) * 15 + (7,), [], 0, b"q" * 7),
        TensorRecord("\u0000nul", "int8", (1,), [], 0, b"\x01"),
        TensorRecord("🙂 emoji / 漢字 / עברית", "int8", (1,), [], 0, b"\x02"),
        TensorRecord("params", "int32", (1,), [
            {"id": "x", "neg0": -0.0, "big": 2 ** 63 - 1, "small": -(2 ** 63), "one": 1,
             "onef": 1.0, "s": "", "nested": {"a": [[], {}, [None, False, True]]},
             "deep": [[[[[[[[[[[[[["ok"]]]]]]]]]]]]]]}], 1, b"\x03"),
    ]
    _check_round_trip(records, {"": "", "ключ": "значение", "a\nb": "c\x00d"}, compact=False)
    blob = _check_round_trip(records, {"": "", "ключ": "значение", "a\nb": "c\x00d"})
    with Reader(blob) as r:
        params = r.record_info("params").chain[0]
        assert math.copysign(1.0, params["neg0"]) == -1.0
        assert type(params["one"]) is int and type(params["onef"]) is float
        assert r.record_info("scalar").numel == 1
        assert r.record_info("zero-huge").numel == 0
        assert r.record_info("max-elements").nbytes == 2 ** 43


def test_numpy_scalars_in_chain_parameters_are_accepted():
    records = [TensorRecord("w", "float32", np.array([2, 3]).tolist(),
                            [{"id": "uniform", "step": np.float64(0.25), "n": np.int64(5),
                              "s": np.float32(0.5)}], np.int64(1), b"ab")]
    with Reader(pack(records)) as r:
        assert r.record_info("w").chain == [{"id": "uniform", "step": 0.25, "n": 5, "s": 0.5}]
        assert r.record_info("w").shape == (2, 3)


def test_tuples_and_memoryview_payloads():
    records = [TensorRecord("w", "int8", [4], ({"id": "x", "p": (1, 2)},), 0,
                            memoryview(b"abcd"))]
    with Reader(pack(records)) as r:
        assert r.record_info("w").chain == [{"id": "x", "p": [1, 2]}]
        assert r.read_payload("w") == b"abcd"


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_input_gives_same_bytes_whatever_the_insertion_order():
    meta = {"b": "2", "a": "1", "é": "3", "Z": "4"}
    meta_rev = dict(reversed(list(meta.items())))
    chain = [{"id": "uniform", "step": 0.1, "axis": 0, "opts": {"y": 1, "x": 2}}]
    chain_rev = [{"opts": {"x": 2, "y": 1}, "axis": 0, "step": 0.1, "id": "uniform"}]
    a = pack([TensorRecord("w", "float32", (2,), chain, 1, b"pp")], meta)
    b = pack([TensorRecord("w", "float32", (2,), chain_rev, 1, b"pp")], meta_rev)
    assert a == b
    assert a == pack([TensorRecord("w", "float32", (2,), chain, 1, b"pp")], dict(meta))


def test_tensor_order_is_kept_as_given():
    recs = sample_records()
    for order in (recs, recs[::-1]):
        with Reader(pack(order)) as r:
            assert r.keys() == [x.name for x in order]
    assert pack(recs) != pack(recs[::-1])


def test_metadata_defaults_to_empty():
    assert pack([]) == pack([], {}) == pack([], None)
    with Reader(pack([])) as r:
        assert r.keys() == [] and r.metadata() == {} and len(r) == 0


# ---------------------------------------------------------------------------------------------
# Lazy reading


class CountingFile:
    """A seekable binary file object that records every read (offset, size)."""

    def __init__(self, data: bytes):
        self._f = io.BytesIO(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, n=-1):
        pos = self._f.tell()
        chunk = self._f.read(n)
        self.reads.append((pos, len(chunk)))
        return chunk

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def seekable(self):
        return True

    @property
    def total(self):
        return sum(n for _, n in self.reads)


def test_open_reads_only_the_header_and_read_payload_only_its_payload():
    blob = sample_blob()
    f = CountingFile(blob)
    with Reader(f) as r:
        assert f.total == r.header_size < len(blob)
        assert all(pos + n <= r.header_size for pos, n in f.reads)
        r.keys(), r.metadata(), r.info(), list(r.records())
        assert f.total == r.header_size
        info = r.record_info("conv1.bias")
        f.reads.clear()
        assert r.read_payload("conv1.bias") == sample_records()[1].payload
        assert f.total == info.length
        assert all(info.offset <= pos and pos + n <= info.offset + info.length
                   for pos, n in f.reads if n)
    assert not f._f.closed  # a file object passed in stays open


def test_opening_a_path_does_not_read_the_payloads(tmp_path):
    # an 8 GiB file, sparse: opening it and reading the small tensor must not touch the rest
    big = 8 << 30
    records = [rec("small", payload=b"abc"), rec("huge", dims=(1,), offset=3, length=big, crc=0)]
    header = build(body(records))
    path = tmp_path / "big.nnc"
    with open(path, "wb") as f:
        f.write(header + b"abc")
        f.truncate(len(header) + 3 + big)
    with Reader(path) as r:
        assert r.size == len(header) + 3 + big
        assert r.read_payload("small") == b"abc"
        assert r.record_info("huge").length == big
        assert r.info()["payload_bytes"] == 3 + big


def test_reader_accepts_paths_bytes_and_file_objects(tmp_path):
    blob = sample_blob()
    path = tmp_path / "m.nnc"
    path.write_bytes(blob)
    with open(path, "rb") as fh:
        sources = [path, str(path), blob, bytearray(blob), memoryview(blob), io.BytesIO(blob), fh,
                   open(path, "rb", buffering=0)]
        for source in sources:
            with Reader(source) as r:
                assert r.keys() == [x.name for x in sample_records()]
                assert r.read_payload("scale") == sample_records()[2].payload
        assert not fh.closed
    sources[-1].close()


def test_reader_misuse():
    with pytest.raises(TypeError):
        Reader(12345)
    with pytest.raises(TypeError):
        Reader(io.StringIO("text"))

    class Pipe(io.RawIOBase):
        def readable(self):
            return True

        def seekable(self):
            return False

    with pytest.raises(ValueError):
        Reader(Pipe())
    r = Reader(sample_blob())
    r.close()
    with pytest.raises(ValueError):
        r.read_payload("scale")
    with Reader(sample_blob()) as r:
        with pytest.raises(KeyError):
            r.record_info("nope")
        with pytest.raises(KeyError):
            r.read_payload("nope")


def test_path_reader_closes_its_file(tmp_path):
    path = tmp_path / "m.nnc"
    path.write_bytes(sample_blob())
    with Reader(path) as r:
        fh = r._file
    assert fh.closed
    path.write_bytes(b"garbage!" * 4)
    with pytest.raises(FormatError):
        Reader(path)


def test_record_info_is_a_copy():
    with Reader(sample_blob()) as r:
        info = r.record_info("conv1.weight")
        assert isinstance(info, RecordInfo)
        info.chain[0]["step"] = 99
        assert r.record_info("conv1.weight").chain[0]["step"] == 0.01
        assert [i.name for i in r.records()] == r.keys()
        assert "scale" in r and "nope" not in r and list(r) == r.keys()


# ---------------------------------------------------------------------------------------------
# Writing


def test_write_to_path_and_file_object(tmp_path):
    recs, meta = sample_records(), {"k": "v"}
    path = tmp_path / "m.nnc"
    n = write(path, recs, meta)
    assert path.read_bytes() == pack(recs, meta) and n == path.stat().st_size
    buf = io.BytesIO()
    buf.write(b"prefix")
    assert write(buf, recs, meta) == n
    assert buf.getvalue() == b"prefix" + pack(recs, meta)
    write(str(tmp_path / "s.nnc"), recs, meta)
    assert (tmp_path / "s.nnc").read_bytes() == path.read_bytes()


def test_write_replaces_atomically_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "m.nnc"
    write(path, sample_records()[:1])
    old = path.read_bytes()
    write(path, sample_records())  # replacing an existing file
    new = path.read_bytes()
    assert new == pack(sample_records()) != old

    for target in ("replace", "fsync"):
        with monkeypatch.context() as m:
            def boom(*args, **kwargs):
                raise OSError("disk on fire")
            m.setattr(os, target, boom)
            with pytest.raises(OSError, match="disk on fire"):
                write(path, sample_records()[:2])
        assert path.read_bytes() == new  # the old file is untouched
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnc"]  # no temp file left

    with pytest.raises(ValueError):  # invalid input: fails before any file is created
        write(tmp_path / "bad.nnc", [TensorRecord("", "float32", (), [], 0, b"")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnc"]


def test_write_keeps_the_mode_of_an_existing_file_and_honours_umask(tmp_path):
    path = tmp_path / "m.nnc"
    write(path, [])
    os.chmod(path, 0o640)
    write(path, sample_records())
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    old = os.umask(0o027)
    try:
        write(tmp_path / "n.nnc", [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "n.nnc").stat().st_mode) == 0o640


def _t(**kw):
    fields = dict(name="w", dtype="float32", shape=(2,), chain=[{"id": "raw"}], backend=0,
                  payload=b"ab")
    fields.update(kw)
    return TensorRecord(**fields)


@pytest.mark.parametrize("records, metadata", [
    ([_t(), _t()], None),                                   # duplicate names
    ([_t(name="")], None),
    ([_t(name=3)], None),
    ([_t(name="\ud800")], None),                            # lone surrogate: not UTF-8
    ([_t(dtype="float8")], None),
    ([_t(shape=(-1,))], None),
    ([_t(shape=(2.0,))], None),
    ([_t(shape=(True,))], None),
    ([_t(shape=(1,) * 17)], None),
    ([_t(shape=(2 ** 20, 2 ** 20, 2))], None),
    ([_t(shape=(0, 2 ** 40 + 1))], None),
    ([_t(shape=5)], None),
    ([_t(backend=4)], None),
    ([_t(backend=True)], None),
    ([_t(backend="cabac")], None),
    ([_t(chain={"id": "raw"})], None),
    ([_t(chain=["raw"])], None),
    ([_t(chain=[{"step": 1}])], None),
    ([_t(chain=[{"id": 1}])], None),
    ([_t(chain=[{"id": "u", "step": float("nan")}])], None),
    ([_t(chain=[{"id": "u", "step": float("inf")}])], None),
    ([_t(chain=[{"id": "u", "n": 2 ** 63}])], None),
    ([_t(chain=[{"id": "u", "n": {1, 2}}])], None),
    ([_t(chain=[{"id": "u", "n": b"bytes"}])], None),
    ([_t(chain=[{"id": "u", "n": {1: "a"}}])], None),
    ([_t(chain=[{"id": "u", "n": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}])], None),  # level 17
    ([_t(payload="text")], None),
    (["not a record"], None),
    ([_t()], {"k": 1}),
    ([_t()], {1: "v"}),
    ([_t()], {"k": "\udcff"}),
])
def test_writer_rejects_bad_input(records, metadata):
    with pytest.raises((ValueError, TypeError)) as excinfo:
        pack(records, metadata)
    assert not isinstance(excinfo.value, FormatError)  # misuse, not a bad stream
    assert str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# Corruption: checksums, truncation, fuzzing


def test_every_single_bit_flip_in_a_payload_is_caught_by_its_crc():
    recs = sample_records()
    blob = pack(recs)
    with Reader(blob) as r:
        spans = [(r.record_info(x.name).offset, x) for x in recs]
        start = r.header_size
    flips = 0
    for pos in range(start, len(blob)):
        owner = next(x for off, x in spans if off <= pos < off + len(x.payload))
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            with Reader(bad) as r:  # the header is intact: opening works
                with pytest.raises(ChecksumError, match=re.escape(repr(owner.name))):
                    r.read_payload(owner.name)
                assert r.read_payload(owner.name, verify=False) != owner.payload
                for other in recs:
                    if other.name != owner.name:
                        assert r.read_payload(other.name) == other.payload
                problems = r.verify()
                assert len(problems) == 1 and repr(owner.name) in problems[0]
                with pytest.raises(ChecksumError):
                    r.verify(raise_on_error=True)
            flips += 1
    assert flips == 8 * sum(len(x.payload) for x in recs)


def test_every_single_bit_flip_anywhere_is_detected():
    blob = sample_blob()
    kinds = {}
    for pos in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            kind = outcome(bytes(bad))
            assert kind is not None, f"flip of bit {bit} at byte {pos} went unnoticed"
            kinds[kind] = kinds.get(kind, 0) + 1
    assert sum(kinds.values()) == 8 * len(blob)
    assert kinds[ChecksumError] > 0.9 * 8 * len(blob)


def test_every_truncation_raises_truncated_error():
    blobs = [sample_blob(), pack(example_records(), {"source": "example"}),
             pack(sample_records(), {"k": "v"}, compact=False),
             pack([TensorRecord("big", "uint8", (1500,), [], 0, bytes(range(250)) * 6)]),
             pack([])]
    count = 0
    for blob in blobs:
        for n in range(len(blob)):
            with pytest.raises(TruncatedError):
                read_all(blob[:n])
            count += 1
        read_all(blob)
    assert count >= 2000


def test_trailing_bytes_are_rejected():
    blob = sample_blob()
    for extra in (b"\x00", b"more data", blob):
        with pytest.raises(FormatError, match="unexpected bytes after the last payload"):
            Reader(blob + extra)


def _only_format_errors(data: bytes) -> None:
    try:
        read_all(data)
    except FormatError:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_format_errors(data):
    _only_format_errors(data)
    _only_format_errors(MAGIC + data)
    _only_format_errors(MAGIC + b"\x01\x00\x00\x00" + data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.binary(max_size=20))
def test_random_bodies_with_a_valid_crc_raise_only_format_errors(random_body, data):
    _only_format_errors(build(random_body, data))
    _only_format_errors(build(body() + random_body, data))
    _only_format_errors(cbuild(random_body, data))
    _only_format_errors(cbuild(body() + random_body, data))
    _only_format_errors(cbuild(uv(0) + uv(1) + uv(0) + sb("t") + b"\x01\x01\x03\x00" + random_body, data))


def _mutate(rng: random.Random, buf: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and pos < len(buf):
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and pos < len(buf):
            buf[pos] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op == 2:
            buf[pos:pos] = bytes([rng.randrange(256)])
        elif op == 3 and pos < len(buf):
            del buf[pos:pos + rng.randint(1, 3)]
        else:
            n = rng.randint(1, 8)
            buf[pos:pos] = buf[pos:pos + n]


def test_mutated_headers_with_recomputed_crc_fail_cleanly_or_decode_canonically():
    """Fuzz the body parser past the CRC: mutate the header body, fix length and CRC. The reader
    must raise a FormatError subclass, or decode; and whatever decodes must re-encode to the same
    bytes (every accepted file is in canonical form)."""
    rng = random.Random(1234)
    seeds = [sample_blob(), pack(example_records(), {"source": "example"}),
             pack(sample_records(), {"k": "v"}, compact=False),
             pack(example_records(), {"source": "example"}, compact=False)]
    decoded = failed = 0
    for i in range(10000):
        blob = seeds[i % len(seeds)]
        hl = struct.unpack_from("<I", blob, 12)[0]
        b = bytearray(blob[20:20 + hl])
        data = bytearray(blob[20 + hl:])
        _mutate(rng, b)
        if rng.random() < 0.2:
            _mutate(rng, data)
        bad = bytes(blob[:16]) + struct.pack("<I", zlib.crc32(blob[:12] + struct.pack("<I", len(b)) + b))
        bad = blob[:12] + struct.pack("<I", len(b)) + bad[16:20] + bytes(b) + bytes(data)
        try:
            with Reader(bad) as r:
                back = [r.read_record(n) for n in r.keys()]
                meta = r.metadata()
                compact = r.compact
        except FormatError:
            failed += 1
            continue
        decoded += 1
        assert pack(back, meta, compact=compact) == bad
    assert failed > 5000


def test_legacy_body_under_the_compact_flag_and_back_fail_cleanly():
    """A body of one layout read as the other must fail with a FormatError, not crash."""
    for blob in (sample_blob(), pack(example_records()), pack(sample_records(), compact=False)):
        hl = struct.unpack_from("<I", blob, 12)[0]
        compact = blob[10] & 1
        other = build(blob[20:20 + hl], blob[20 + hl:], minor=0 if compact else 2, flags=0 if compact else 1)
        assert outcome(other) is not None


# ---------------------------------------------------------------------------------------------
# Crafted invalid files: each rule of the spec, with its error class

_DEEP_OK = [{"id": "x", "p": [[[[[[[[[[[[[[1]]]]]]]]]]]]]]}]  # p at level 3, innermost list 16
_DEEP_BAD = [{"id": "x", "p": [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}]
_TWO = [rec("a", payload=b"abc"), rec("b", payload=b"de", offset=3)]

CASES = {
    # name: (file bytes, error class, message fragment)
    "empty": (b"", TruncatedError, "preamble"),
    "magic prefix": (MAGIC[:5], TruncatedError, "preamble"),
    "preamble cut": (MAGIC + b"\x01\x00\x00", TruncatedError, "preamble"),
    "zip file": (b"PK\x03\x04" + bytes(40), FormatError, "not an .nnc container"),
    "crlf to lf": (b"\x89NNC\n\x1a\n" + bytes(40), FormatError, "text mode"),
    "lf to crlf": (b"\x89NNC\r\r\n\x1a\r\n" + bytes(40), FormatError, "text mode"),
    "major 2": (build(body(), major=2), VersionError, "upgrade"),
    "major 0": (build(body(), major=0), VersionError, "0.0"),
    "flags": (build(body(), flags=2), VersionError, "flag"),
    "flags compact": (cbuild(body(), flags=3), VersionError, "flag"),
    "compact flag in 1.1": (build(body(), minor=1, flags=1), FormatError, "needs version 1.2"),
    "header over limit": (build(body(), length=(64 << 20) + 1), LimitError, "limit"),
    "header past end": (build(body(), length=100), TruncatedError, "header"),
    "header crc": (build(body(), crc=1), ChecksumError, "header CRC"),
    "unsorted metadata": (build(body(meta=[("b", "1"), ("a", "2")])), FormatError, "increasing"),
    "duplicate metadata": (build(body(meta=[("a", "1"), ("a", "2")])), FormatError, "increasing"),
    "metadata not utf-8": (build(body(meta=[(b"\xff", "1")])), FormatError, "UTF-8"),
    "metadata count": (build(uv(5) + sb("a") + sb("b") + uv(0)), FormatError, "header"),
    "surrogate name": (one(name=b"\xed\xa0\x80"), FormatError, "UTF-8"),
    "overlong utf-8": (one(name=b"\xc0\xaf"), FormatError, "UTF-8"),
    "empty name": (one(name=""), FormatError, "empty name"),
    "duplicate name": (build(body([rec("a"), rec("a", offset=3)]), b"abcabc"), FormatError,
                       "twice"),
    "dtype 0": (one(dtype=0), VersionError, "dtype code 0"),
    "dtype 14": (one(dtype=14), VersionError, "dtype code 14"),
    "17 dims": (one(dims=(1,) * 17), LimitError, "17 dimensions"),
    "dim too big": (one(dims=(2 ** 40 + 1,)), LimitError, "dimension"),
    "zero then huge dim": (one(dims=(0, 2 ** 41)), LimitError, "dimension"),
    "too many elements": (one(dims=(2 ** 20, 2 ** 20, 2)), LimitError, "elements"),
    "dims cut short": (build(body([sb("t") + b"\x01" + uv(3) + uv(2)])), FormatError,
                       "ends inside"),
    "backend 4": (one(backend=4), VersionError, "backend id 4"),
    "chain not a list": (one(chain_bytes=val({"id": "raw"})), FormatError, "not a list"),
    "stage not a map": (one(chain=[1]), FormatError, "string 'id'"),
    "stage without id": (one(chain=[{"step": 1.0}]), FormatError, "string 'id'"),
    "id not a string": (one(chain=[{"id": 7}]), FormatError, "string 'id'"),
    "nan parameter": (one(chain=[{"id": "u", "s": math.nan}]), FormatError, "nan"),
    "inf parameter": (one(chain=[{"id": "u", "s": -math.inf}]), FormatError, "inf"),
    "unsorted stage keys": (one(chain=[RawMap([("step", 1), ("id", "u")])]), FormatError,
                            "increasing"),
    "duplicate stage keys": (one(chain=[RawMap([("id", "u"), ("id", "v")])]), FormatError,
                             "increasing"),
    "reserved value tag": (one(chain_bytes=b"\x06\x01\x07\x02" + sb("id") + val("u") + sb("p")
                               + b"\x08"), VersionError, "tag 8"),
    "nesting too deep": (one(chain=_DEEP_BAD), LimitError, "deeper than 16"),
    "list count beyond body": (one(chain_bytes=b"\x06" + uv(10 ** 12)), FormatError, "remain"),
    "tensor count beyond body": (build(body(tensor_count=2 ** 60)), FormatError, "remain"),
    "tensor count too high": (build(body([rec()], tensor_count=2), b"abc"), FormatError,
                              "header"),
    "long varint": (build(body()[:-1] + b"\x80\x00"), FormatError, "shortest"),
    "varint over 64 bits": (build(uv(0) + b"\xff" * 9 + b"\x7f"), FormatError, "64 bits"),
    "string past body": (build(uv(1) + uv(50) + b"abc"), FormatError, "remain"),
    "bytes after records": (build(body([rec()]) + b"\x00", b"abc"), FormatError,
                            "unexpected bytes after the last tensor record"),
    "gap": (one(offset=1), FormatError, "gap"),
    "overlap": (build(body([rec("a"), rec("b", offset=1)]), b"abcabc"), FormatError, "overlaps"),
    "payload past end": (one(payload=b"abc", length=10), TruncatedError, "before the last"),
    "trailing bytes": (build(body([rec()]), b"abcd"), FormatError, "after the last payload"),
    # the compact index (format 1.2)
    "c: prefix beyond previous": (cone(prefix=1), FormatError, "shares 1 name bytes"),
    "c: prefix not longest": (cbuild(body([crec("ab"), crec("ac", prev=b"ab", prefix=0, payload=b"de")]),
                                     b"abcde"), FormatError, "longest common prefix"),
    "c: duplicate via prefix": (cbuild(body([crec("ab"), crec("ab", prev=b"ab", payload=b"de")]), b"abcde"),
                                FormatError, "twice"),
    "c: empty name": (cone(name=""), FormatError, "empty name"),
    "c: name not utf-8": (cbuild(body([crec("\u00e9"), crec(b"\xc3", prev=b"\xc3\xa9", payload=b"de")]),
                                 b"abcde"), FormatError, "UTF-8"),
    "c: stage code 5": (cone(chain_bytes=b"\x01\x05"), VersionError, "stage code 5"),
    "c: float head 9": (cone(chain_bytes=b"\x01\x03\x09"), VersionError, "float head 9"),
    "c: float trailing zero": (cone(chain_bytes=b"\x01\x03\x02\x3f\x00"), FormatError, "shortest"),
    "c: float long form of a qp step": (cone(chain_bytes=b"\x01\x03\x02\x3f\xb0"), FormatError,
                                        "one-byte form"),
    "c: float nan": (cone(chain_bytes=b"\x01\x03\x02\x7f\xf8"), FormatError, "nan"),
    "c: float inf": (cone(chain_bytes=b"\x01\x03\x02\xff\xf0"), FormatError, "inf"),
    "c: float cut short": (cone(chain_bytes=b"\x01\x03\x08\x3f"), FormatError, "remain"),
    "c: short stage written out": (cone(chain_bytes=b"\x01\x00" + sb("uniform") + uv(1) + sb("step")
                                        + b"\x08\x02\x3f\xb9"), FormatError, "short code"),
    "c: raw written out": (cone(chain_bytes=b"\x01\x00" + sb("raw") + uv(0)), FormatError, "short code"),
    "c: id among parameters": (cone(chain_bytes=b"\x01\x00" + sb("x") + uv(1) + sb("id") + val("y")),
                               FormatError, "'id'"),
    "c: tag 4 in compact": (cone(chain=[{"id": "x", "p": 0.5}], chain_bytes=b"\x01\x00" + sb("x") + uv(1)
                                 + sb("p") + val(0.5)), FormatError, "tag 4"),
    "c: unsorted parameters": (cone(chain_bytes=b"\x01\x00" + sb("x") + uv(2) + sb("b") + val(1)
                                    + sb("a") + val(2)), FormatError, "increasing"),
    "c: stage count beyond body": (cone(chain_bytes=uv(10 ** 9)), FormatError, "remain"),
    "c: nesting too deep": (cone(chain=_DEEP_BAD), LimitError, "deeper than 16"),
    "c: reserved value tag": (cone(chain_bytes=b"\x01\x00" + sb("x") + uv(1) + sb("p") + b"\x09"),
                              VersionError, "tag 9"),
    "c: payload past end": (cone(payload=b"abc", length=10), TruncatedError, "before the last"),
    "c: trailing bytes": (cbuild(body([crec()]), b"abcd"), FormatError, "after the last payload"),
    "c: dtype 0": (cone(dtype=0), VersionError, "dtype code 0"),
    "c: backend 4": (cone(backend=4), VersionError, "backend id 4"),
    "c: 17 dims": (cone(dims=(1,) * 17), LimitError, "17 dimensions"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_crafted_invalid_files(name):
    blob, error, fragment = CASES[name]
    with pytest.raises(error) as excinfo:
        read_all(blob)
    assert fragment.lower() in str(excinfo.value).lower()
    if error is FormatError:
        assert type(excinfo.value) is FormatError


def test_crafted_valid_files():
    with Reader(build(body(), minor=9)) as r:  # a newer minor version is read
        assert r.version == (1, 9) and not r.compact
    with Reader(cbuild(body(), minor=9)) as r:
        assert r.version == (1, 9) and r.compact
    with Reader(cone(chain=_DEEP_OK)) as r:
        assert r.record_info("t").chain == _DEEP_OK
    two = [crec("a.weight", payload=b"abc"), crec("a.bias", prev=b"a.weight", payload=b"de"),
           crec("a", prev=b"a.bias", payload=b"")]
    with Reader(cbuild(body(two), b"abcde")) as r:
        assert r.keys() == ["a.weight", "a.bias", "a"]
        assert r.record_info("a.bias").offset == r.header_size + 3
    with Reader(one(chain=_DEEP_OK)) as r:  # nesting level 16 is the limit, inclusive
        assert r.record_info("t").chain == _DEEP_OK
    read_all(build(body(_TWO), b"abcde"))
    read_all(one(dims=(2 ** 20, 2 ** 20)))  # exactly 2**40 elements
    read_all(one(dims=(1,) * 16))


def test_limits_can_be_lowered():
    blob = sample_blob()
    with pytest.raises(LimitError):
        Reader(blob, limits=DecoderLimits(max_header_size=10))
    with pytest.raises(LimitError):
        Reader(blob, limits=DecoderLimits(max_ndim=3))
    with pytest.raises(LimitError):
        Reader(blob, limits=DecoderLimits(max_elements=100))
    with pytest.raises(LimitError):
        Reader(blob, limits=DecoderLimits(max_depth=2))
    Reader(blob, limits=DecoderLimits(max_depth=3, max_ndim=4, max_elements=216))


def test_errors_belong_to_the_hierarchy():
    for error in (TruncatedError, ChecksumError, VersionError, LimitError):
        assert issubclass(error, FormatError) and issubclass(error, NNCodecError)
    assert C.PREAMBLE_SIZE == 20 and C.MAGIC == MAGIC and C.FORMAT_VERSION == (1, 2)
