"""The ``.nnc`` container: a checksummed header indexing independently readable tensor payloads.

The byte layout is specified in ``formats/nnc-v1.md``; this module is one implementation of it.
In short::

    preamble (20 bytes)   magic, version, flags, header length, header CRC-32
    header body           metadata map + one index record per tensor
    payloads              concatenated in index order, no gaps

Two layouts of the index records exist: the compact index of format 1.2 (flag bit 0; shared
name prefixes, short codes for the common chains, short floats, offsets implied), which
``pack``/``write`` produce by default, and the legacy index of 1.0 / 1.1 (``compact=False``).
The reader takes both.

Writing::

    records = [TensorRecord("fc.weight", "float32", (10, 784),
                            [{"id": "uniform", "step": 0.01}], backend=1, payload=data)]
    write("model.nnc", records, {"producer": "nncodec"})     # atomic for paths
    blob = pack(records, metadata)                            # or bytes in memory

Reading (lazily: opening reads the header only, each payload is read when asked for)::

    with Reader("model.nnc") as r:
        r.keys(); r.metadata(); r.record_info("fc.weight")
        data = r.read_payload("fc.weight")                    # CRC checked -> ChecksumError

The container does not interpret the coding chain: it stores it as JSON-compatible values and gives
it back. Writers raise ``ValueError`` / ``TypeError`` on misuse; the reader, fed any bytes at all,
raises only :class:`nncodec.errors.FormatError` and its subclasses.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Optional, Union

from .atomic import atomic_write
from .errors import ChecksumError, FormatError, LimitError, TruncatedError, VersionError
from .varint import decode_uvarint, encode_uvarint

__all__ = [
    "BACKENDS", "DEFAULT_LIMITS", "DTYPES", "FORMAT_VERSION", "MAGIC", "DecoderLimits",
    "Reader", "RecordInfo", "TensorRecord", "pack", "write",
]

# --------------------------------------------------------------------------------------------
# Constants of format version 1 (formats/nnc-v1.md)

MAGIC = b"\x89NNC\r\n\x1a\n"
FORMAT_VERSION = (1, 2)  # (major, newest minor) this module writes; it reads any 1.x
# Chain stage ids added after 1.0, and the minor version that introduced them. A file is
# written as 1.x with x the smallest minor version that gives meaning to everything it uses:
# the compact index (flag bit 0) needs 1.2; the legacy index (compact=False) is written as
# 1.0, or 1.1 when a stage needs it, byte for byte as before. See nnc-v1.md, section 10.
STAGE_MINOR: dict[str, int] = {"dq": 1}
FLAG_COMPACT = 0x0001  # flags bit 0: tensor records use the compact layout (section 5.3)
COMPACT_MINOR = 2
_KNOWN_FLAGS = FLAG_COMPACT
_PREAMBLE = struct.Struct("<8sBBHII")  # magic, major, minor, flags, header_length, header_crc32
PREAMBLE_SIZE = _PREAMBLE.size  # 20
_CRC_FIELD = slice(16, 20)
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_F64BE = struct.Struct(">d")

# dtype name -> (code stored in the file, bytes per element)
DTYPES: dict[str, tuple[int, int]] = {
    "float32": (1, 4),
    "float16": (2, 2),
    "bfloat16": (3, 2),
    "float64": (4, 8),
    "int8": (5, 1),
    "int16": (6, 2),
    "int32": (7, 4),
    "int64": (8, 8),
    "uint8": (9, 1),
    "bool": (10, 1),
    "uint16": (11, 2),
    "uint32": (12, 4),
    "uint64": (13, 8),
}
_DTYPE_BY_CODE = {code: (name, size) for name, (code, size) in DTYPES.items()}

# entropy backend id -> name; must agree with nncodec.entropy (a test checks it)
BACKENDS: dict[int, str] = {0: "raw", 1: "cabac", 2: "constriction", 3: "cabac-layout"}

# tags of the value encoding used for coding chains
_TAG_NULL, _TAG_FALSE, _TAG_TRUE, _TAG_INT, _TAG_FLOAT, _TAG_STR, _TAG_LIST, _TAG_MAP = range(8)
_TAG_CFLOAT = 8  # compact index only: a float in the short form of section 6.1
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1

# Short floats (nnc-v1.md section 6.1). A head byte h >= 16 stands for 2 ** ((h - 176) / 4): the
# quantization steps of QPs -160..79. The four quarter powers below are the correctly rounded
# binary64 values of 2 ** (k / 4); scaling by a power of two keeps them exact, so each entry is
# the correctly rounded 2 ** (e / 4). Heads 0..8 give the number of leading bytes of the
# big-endian binary64 bits that are stored (the rest are zero); heads 9..15 are reserved.
_QUARTER_BITS = (0x3FF0000000000000, 0x3FF306FE0A31B715, 0x3FF6A09E667F3BCD, 0x3FFAE89F995AD3AD)
_CF_FIRST_EXP_HEAD, _CF_EXP_BIAS = 16, 176
_CF_TABLE: tuple = tuple(
    math.ldexp(_F64BE.unpack(_QUARTER_BITS[(h - _CF_EXP_BIAS) % 4].to_bytes(8, "big"))[0],
               (h - _CF_EXP_BIAS) // 4) for h in range(_CF_FIRST_EXP_HEAD, 256))
_CF_HEAD_BY_BITS: dict = {_F64BE.pack(f): h for h, f in enumerate(_CF_TABLE, _CF_FIRST_EXP_HEAD)}

def qp_grid_step(e: int) -> Optional[float]:
    """The step 2 ** (e / 4) (correctly rounded) when the compact index stores it in one byte
    (e in -160..79, section 6.1), else None."""
    h = int(e) + _CF_EXP_BIAS
    return _CF_TABLE[h - _CF_FIRST_EXP_HEAD] if _CF_FIRST_EXP_HEAD <= h <= 255 else None


# Stage codes of the compact index (section 5.3): 0 = any stage, written out; the others stand
# for one stage id with exactly the parameters listed (a float "step", or none).
_STAGE_GENERIC = 0
_SHORT_STAGES: dict[int, tuple[str, bool]] = {1: ("raw", False), 2: ("integer", False),
                                              3: ("uniform", True), 4: ("dq", True)}
_SHORT_CODE_BY_ID = {ident: code for code, (ident, _) in _SHORT_STAGES.items()}


@dataclass(frozen=True)
class DecoderLimits:
    """Limits a reader enforces before it allocates anything. The defaults are the spec's."""

    max_header_size: int = 64 * 1024 * 1024  # bytes of header body
    max_ndim: int = 16
    max_elements: int = 1 << 40  # per tensor, and per dimension
    max_depth: int = 16  # nesting of lists/maps in a coding chain; the chain itself is level 1


DEFAULT_LIMITS = DecoderLimits()


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class TensorRecord:
    """One tensor as the container stores it: index fields plus the encoded payload bytes.

    ``chain`` is the list of coding stages, each a dict with a string ``"id"`` and JSON-compatible
    parameters; ``backend`` is the entropy backend id (0 = raw bytes, 1 = cabac, 2 = constriction).
    The CRC-32 of the payload is computed by the writer (:attr:`crc32`).
    """

    name: str
    dtype: str
    shape: tuple
    chain: list
    backend: int
    payload: bytes

    def __post_init__(self):
        if not isinstance(self.shape, tuple):
            try:
                self.shape = tuple(self.shape)
            except TypeError:
                pass  # pack() reports it with the tensor's name

    @property
    def crc32(self) -> int:
        """CRC-32 (zlib.crc32) of the payload, as the writer stores it."""
        return zlib.crc32(self.payload)


@dataclass(frozen=True)
class RecordInfo:
    """Everything the index says about one tensor; ``offset`` is absolute in the file."""

    name: str
    dtype: str
    shape: tuple
    chain: list
    backend: int
    offset: int
    length: int
    crc32: int

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][1]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the decoded tensor in bytes (not of the payload, see ``length``)."""
        return self.numel * self.itemsize

    @property
    def backend_name(self) -> str:
        return BACKENDS[self.backend]


# --------------------------------------------------------------------------------------------
# Writing


def _encode_str(out: bytearray, text: str, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {text!r} cannot be encoded as UTF-8 ({exc.reason})") from None
    out += encode_uvarint(len(raw))
    out += raw


def _encode_cfloat(out: bytearray, f: float) -> None:
    """Append the short form of a finite float (formats/nnc-v1.md, section 6.1)."""
    bits = _F64BE.pack(f)
    head = _CF_HEAD_BY_BITS.get(bits)
    if head is not None:
        out.append(head)
        return
    n = len(bits.rstrip(b"\0"))
    out.append(n)
    out += bits[:n]


def _encode_map(out: bytearray, value: Mapping, depth: int, where: str, compact: bool,
                skip_id: bool = False) -> None:
    """Append a map's entry count and its entries, keys sorted by their UTF-8 bytes."""
    items = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: map keys must be str, not {type(key).__name__}")
        if skip_id and key == "id":
            continue
        keyed = bytearray()
        _encode_str(keyed, key, f"{where}: key")
        items.append((key.encode("utf-8"), keyed, key, item))
    items.sort(key=lambda t: t[0])
    out += encode_uvarint(len(items))
    for _, keyed, key, item in items:
        out += keyed
        _encode_value(out, item, depth + 1, f"{where}[{key!r}]", compact)


def _encode_value(out: bytearray, value: Any, depth: int, where: str, compact: bool = False) -> None:
    """Append the tagged encoding of one JSON-compatible value (formats/nnc-v1.md, Values).
    ``compact``: floats take tag 8 and the short form (compact index) instead of tag 4."""
    if value is None:
        out.append(_TAG_NULL)
    elif isinstance(value, bool):
        out.append(_TAG_TRUE if value else _TAG_FALSE)
    elif isinstance(value, numbers.Integral):
        n = int(value)
        if not _INT_MIN <= n <= _INT_MAX:
            raise ValueError(f"{where}: integer {n} does not fit in 64 signed bits")
        out.append(_TAG_INT)
        out += encode_uvarint(n << 1 if n >= 0 else ((-n) << 1) - 1)  # zigzag
    elif isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"{where}: {f} is not JSON-compatible; use a finite number")
        if compact:
            out.append(_TAG_CFLOAT)
            _encode_cfloat(out, f)
        else:
            out.append(_TAG_FLOAT)
            out += _F64.pack(f)
    elif isinstance(value, str):
        out.append(_TAG_STR)
        _encode_str(out, value, f"{where}: string")
    elif isinstance(value, (list, tuple)):
        if depth > DEFAULT_LIMITS.max_depth:
            raise ValueError(f"{where}: lists/maps nested deeper than {DEFAULT_LIMITS.max_depth}")
        out.append(_TAG_LIST)
        out += encode_uvarint(len(value))
        for i, item in enumerate(value):
            _encode_value(out, item, depth + 1, f"{where}[{i}]", compact)
    elif isinstance(value, Mapping):
        if depth > DEFAULT_LIMITS.max_depth:
            raise ValueError(f"{where}: lists/maps nested deeper than {DEFAULT_LIMITS.max_depth}")
        out.append(_TAG_MAP)
        _encode_map(out, value, depth, where, compact)
    else:
        raise TypeError(f"{where}: {type(value).__name__} is not JSON-compatible "
                        "(use None, bool, int, float, str, list or dict)")


def _short_code(stage: Mapping) -> int:
    """The compact index's code for a stage that has one (section 5.3), else 0."""
    code = _SHORT_CODE_BY_ID.get(stage.get("id"))
    if code is None:
        return _STAGE_GENERIC
    if not _SHORT_STAGES[code][1]:
        return code if len(stage) == 1 else _STAGE_GENERIC
    if len(stage) != 2 or "step" not in stage:
        return _STAGE_GENERIC
    step = stage["step"]
    if isinstance(step, numbers.Integral) or not isinstance(step, numbers.Real):
        return _STAGE_GENERIC  # an integer step is kept as an integer, in the long form
    return code if math.isfinite(float(step)) else _STAGE_GENERIC


def _encode_chain_compact(out: bytearray, chain, where: str) -> None:
    out += encode_uvarint(len(chain))
    for i, stage in enumerate(chain):
        code = _short_code(stage)
        out.append(code)
        if code == _STAGE_GENERIC:
            _encode_str(out, stage["id"], f"{where}[{i}] id")
            _encode_map(out, stage, 2, f"{where}[{i}]", True, skip_id=True)
        elif _SHORT_STAGES[code][1]:
            _encode_cfloat(out, float(stage["step"]))


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _check_chain(chain: Any, where: str) -> None:
    if not isinstance(chain, (list, tuple)):
        raise TypeError(f"{where}: chain must be a list of stage dicts, not {type(chain).__name__}")
    for i, stage in enumerate(chain):
        if not isinstance(stage, Mapping):
            raise TypeError(f"{where}: chain[{i}] must be a dict like {{'id': 'uniform', ...}}")
        if not isinstance(stage.get("id"), str):
            raise ValueError(f"{where}: chain[{i}] needs a string 'id'")


@dataclass(frozen=True)
class _Spooled:
    """Stands in for a payload that write() has already copied to its spool file."""

    length: int
    crc32: int


def _payload_bytes(payload, where: str):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"{where}: payload must be bytes, not {type(payload).__name__}")
    return memoryview(payload).cast("B") if isinstance(payload, memoryview) else payload


def _encode_header(records: Iterable[TensorRecord], metadata: Optional[Mapping[str, str]],
                   compact: bool = True) -> tuple[bytes, list]:
    """Return (preamble + header body, payloads in file order)."""
    body = bytearray()
    meta = dict(metadata or {})
    encoded_meta = []
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str; got {key!r}: {type(value).__name__}")
        k = bytearray()
        _encode_str(k, key, "metadata key")
        v = bytearray()
        _encode_str(v, value, f"metadata[{key!r}]")
        encoded_meta.append((key.encode("utf-8"), k + v))
    encoded_meta.sort(key=lambda t: t[0])
    body += encode_uvarint(len(encoded_meta))
    for _, kv in encoded_meta:
        body += kv

    records = list(records)
    body += encode_uvarint(len(records))
    seen = set()
    payloads = []
    offset = 0
    previous_name = b""
    for rec in records:
        if not isinstance(rec, TensorRecord):
            raise TypeError(f"records must be TensorRecord objects, not {type(rec).__name__}")
        name = rec.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty str; got {name!r}")
        where = f"tensor {name!r}"
        if name in seen:
            raise ValueError(f"{where}: name appears twice; tensor names must be unique")
        seen.add(name)
        if compact:
            try:
                raw_name = name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"tensor name {name!r} cannot be encoded as UTF-8 "
                                 f"({exc.reason})") from None
            shared = _common_prefix(previous_name, raw_name)
            body += encode_uvarint(shared)
            body += encode_uvarint(len(raw_name) - shared)
            body += raw_name[shared:]
            previous_name = raw_name
        else:
            _encode_str(body, name, "tensor name")

        if rec.dtype not in DTYPES:
            raise ValueError(f"{where}: unknown dtype {rec.dtype!r}; "
                             f"choose one of {', '.join(DTYPES)}")
        body.append(DTYPES[rec.dtype][0])

        shape = rec.shape
        if not isinstance(shape, tuple) or not all(
                isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in shape):
            raise TypeError(f"{where}: shape must be a tuple of ints, got {shape!r}")
        if len(shape) > DEFAULT_LIMITS.max_ndim:
            raise ValueError(f"{where}: {len(shape)} dimensions; at most "
                             f"{DEFAULT_LIMITS.max_ndim} are allowed")
        numel = 1
        for d in shape:
            if not 0 <= d <= DEFAULT_LIMITS.max_elements:
                raise ValueError(f"{where}: dimension {d} is outside 0..2**40")
            numel *= int(d)
        if numel > DEFAULT_LIMITS.max_elements:
            raise ValueError(f"{where}: {numel} elements; at most 2**40 are allowed")
        body += encode_uvarint(len(shape))
        for d in shape:
            body += encode_uvarint(int(d))

        backend = rec.backend
        if isinstance(backend, bool) or not isinstance(backend, numbers.Integral) \
                or int(backend) not in BACKENDS:
            raise ValueError(f"{where}: unknown entropy backend id {backend!r}; "
                             f"known ids: {BACKENDS}")
        body.append(int(backend))

        _check_chain(rec.chain, where)
        if compact:
            _encode_chain_compact(body, rec.chain, f"{where} chain")
        else:
            _encode_value(body, rec.chain, 1, f"{where} chain")

        payload = rec.payload
        if isinstance(payload, _Spooled):  # already written out by write()
            length, crc = payload.length, payload.crc32
        else:
            payload = _payload_bytes(payload, where)
            length, crc = len(payload), zlib.crc32(payload)
        if not compact:  # the compact index leaves the (implied) offsets out
            body += encode_uvarint(offset)
        body += encode_uvarint(length)
        body += _U32.pack(crc)
        payloads.append(payload)
        offset += length

    if len(body) > DEFAULT_LIMITS.max_header_size:
        raise ValueError(f"header body is {len(body)} bytes; the format allows at most "
                         f"{DEFAULT_LIMITS.max_header_size} (too many tensors or too much metadata)")
    major = FORMAT_VERSION[0]
    minor = max([COMPACT_MINOR if compact else 0]
                + [STAGE_MINOR.get(st.get("id"), 0) for rec in records for st in rec.chain])
    pre = _PREAMBLE.pack(MAGIC, major, minor, FLAG_COMPACT if compact else 0, len(body), 0)
    crc = zlib.crc32(body, zlib.crc32(pre[:16]))
    return pre[:16] + _U32.pack(crc) + bytes(body), payloads


def pack(records: Iterable[TensorRecord], metadata: Optional[Mapping[str, str]] = None, *,
         compact: bool = True) -> bytes:
    """Return the container bytes for ``records`` (kept in the order given) and ``metadata``.

    The same records and metadata always give the same bytes: metadata keys and the keys of every
    chain dict are sorted, whatever their insertion order. ``compact`` (default) writes the
    compact index of format 1.2; ``compact=False`` the index of formats 1.0 / 1.1, which older
    readers understand.
    """
    header, payloads = _encode_header(records, metadata, compact)
    return b"".join([header, *payloads])


def write(target: Union[str, os.PathLike, BinaryIO], records: Iterable[TensorRecord],
          metadata: Optional[Mapping[str, str]] = None, *, overwrite: bool = True,
          compact: bool = True) -> int:
    """Write a container to a path or a binary file object; returns the number of bytes written.

    For a path the bytes go to a temporary file in the same directory, which is flushed, synced
    and then renamed over ``target`` (``os.replace``): readers see the old file or the new one,
    never a part. With ``overwrite=False`` an existing file (even one that appears meanwhile) is
    left alone and ``nncodec.errors.OutputExistsError`` is raised. A file object is written at
    its current position and left open. ``compact`` as for :func:`pack`.
    """
    if hasattr(target, "write"):
        header, payloads = _encode_header(records, metadata, compact)
        target.write(header)
        for p in payloads:
            target.write(p)
        return len(header) + sum(len(p) for p in payloads)

    # For a path, each payload goes to a spool file as soon as it arrives, so that
    # a generator of records is never held in memory all at once; the header,
    # which needs every length and CRC, is written first at the end.
    path = os.fspath(target)
    with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(path)) or ".") as spool:
        light = []
        for rec in records:
            if not isinstance(rec, TensorRecord):
                raise TypeError(f"records must be TensorRecord objects, not {type(rec).__name__}")
            data = _payload_bytes(rec.payload, f"tensor {rec.name!r}")
            spool.write(data)
            light.append(dataclasses.replace(rec, payload=_Spooled(len(data), zlib.crc32(data))))
            del rec, data
        header, _ = _encode_header(light, metadata, compact)
        total = len(header) + spool.tell()

        def write_all(f: BinaryIO) -> None:
            f.write(header)
            spool.seek(0)
            shutil.copyfileobj(spool, f, 1 << 20)

        atomic_write(path, write_all, overwrite=overwrite)
    return total


# --------------------------------------------------------------------------------------------
# Reading


class _Cursor:
    """Reads the header body; every overrun or bad value becomes a FormatError subclass.

    The hot paths (one-byte varints, u8, short strings) are inlined and error messages are built
    only when something is wrong: ``what`` is a constant, ``where`` the record being read."""

    __slots__ = ("data", "pos", "end", "limits", "compact", "where")

    def __init__(self, data: bytes, limits: DecoderLimits, compact: bool):
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.limits = limits
        self.compact = compact
        self.where = ""

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _label(self, what: str) -> str:
        return f"{self.where} {what}" if self.where else what

    def uvarint(self, what: str) -> int:
        pos = self.pos
        if pos < self.end:
            byte = self.data[pos]
            if byte < 0x80:
                self.pos = pos + 1
                return byte
        try:
            value, self.pos = decode_uvarint(self.data, pos)
        except FormatError as exc:
            raise FormatError(f"header: bad varint in {self._label(what)} at body offset "
                              f"{pos}: {exc}") from None
        return value

    def _short(self, n: int, what: str):
        raise FormatError(f"header: {self._label(what)} needs {n} bytes at body offset "
                          f"{self.pos}, but only {self.remaining} remain")

    def take(self, n: int, what: str) -> bytes:
        start = self.pos
        stop = start + n
        if stop > self.end:
            self._short(n, what)
        self.pos = stop
        return self.data[start:stop]

    def u8(self, what: str) -> int:
        pos = self.pos
        if pos >= self.end:
            self._short(1, what)
        self.pos = pos + 1
        return self.data[pos]

    def u32(self, what: str) -> int:
        pos = self.pos
        if pos + 4 > self.end:
            self._short(4, what)
        self.pos = pos + 4
        return _U32.unpack_from(self.data, pos)[0]

    def utf8(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"header: {self._label(what)} is not valid UTF-8: "
                              f"{raw[:40]!r}") from None

    def raw_string(self, what: str) -> bytes:
        return self.take(self.uvarint(what + " length"), what)

    def string(self, what: str) -> tuple[str, bytes]:
        raw = self.take(self.uvarint(what + " length"), what)
        return self.utf8(raw, what), raw

    def count(self, what: str) -> int:
        n = self.uvarint(what)
        if n > self.end - self.pos:  # every item takes at least one byte: guard before looping
            raise FormatError(f"header: {self._label(what)} says {n} items, but only "
                              f"{self.remaining} bytes remain")
        return n

    def cfloat(self, what: str) -> float:
        """A float in the short form of section 6.1 (compact index)."""
        head = self.u8(what)
        if head >= _CF_FIRST_EXP_HEAD:
            return _CF_TABLE[head - _CF_FIRST_EXP_HEAD]
        if head > 8:
            raise VersionError(f"header: {self._label(what)} has reserved float head {head} "
                               "(written by a newer nncodec?)")
        raw = self.take(head, what)
        if head and raw[-1] == 0:
            raise FormatError(f"header: {self._label(what)} is not in its shortest form "
                              "(a stored low byte is zero)")
        bits = raw + bytes(8 - head)
        if bits in _CF_HEAD_BY_BITS:
            raise FormatError(f"header: {self._label(what)} is a quarter power of two and must "
                              "be written as its one-byte form")
        f = _F64BE.unpack(bits)[0]
        if not math.isfinite(f):
            raise FormatError(f"header: {self._label(what)} is {f}, which is not JSON-compatible")
        return f

    def map_entries(self, depth: int, what: str) -> dict:
        """A map's entry count and entries (keys strictly increasing); values at ``depth + 1``."""
        n = self.count(what + " entry count")
        out = {}
        previous = None
        for _ in range(n):
            key, raw = self.string(what + " key")
            if previous is not None and raw <= previous:
                raise FormatError(f"header: {self._label(what)} keys are not strictly increasing "
                                  f"({previous!r} then {raw!r})")
            previous = raw
            out[key] = self.value(depth + 1, what)
        return out

    def value(self, depth: int, what: str) -> Any:
        tag = self.u8(what + " tag")
        if tag == _TAG_STR:
            return self.string(what)[0]
        if tag == _TAG_INT:
            z = self.uvarint(what)
            return (z >> 1) if not z & 1 else -((z + 1) >> 1)
        if tag == _TAG_FLOAT:
            if self.compact:
                raise FormatError(f"header: {self._label(what)} is a float in its 8-byte form "
                                  "(tag 4), which the compact index does not use (tag 8)")
            f = _F64.unpack(self.take(8, what))[0]
            if not math.isfinite(f):
                raise FormatError(f"header: {self._label(what)} is {f}, which is not "
                                  "JSON-compatible")
            return f
        if tag == _TAG_CFLOAT and self.compact:
            return self.cfloat(what)
        if tag == _TAG_NULL:
            return None
        if tag == _TAG_FALSE:
            return False
        if tag == _TAG_TRUE:
            return True
        if tag == _TAG_LIST or tag == _TAG_MAP:
            if depth > self.limits.max_depth:
                raise LimitError(f"header: {self._label(what)} nests lists/maps deeper than "
                                 f"{self.limits.max_depth} levels")
            if tag == _TAG_MAP:
                return self.map_entries(depth, what)
            n = self.count(what + " item count")
            return [self.value(depth + 1, what) for _ in range(n)]
        raise VersionError(f"header: {self._label(what)} has reserved value tag {tag} "
                           "(written by a newer nncodec?)")

    def chain_compact(self) -> list:
        """The coding chain of a compact record (section 5.3)."""
        n = self.count("chain stage count")
        chain = []
        for i in range(n):
            code = self.u8("chain stage code")
            if code == _STAGE_GENERIC:
                if 2 > self.limits.max_depth:
                    raise LimitError(f"header: {self._label('chain')} nests lists/maps deeper "
                                     f"than {self.limits.max_depth} levels")
                ident = self.string("chain stage id")[0]
                params = self.map_entries(2, "chain stage")
                if "id" in params:
                    raise FormatError(f"header: {self._label('chain')} stage {i} lists 'id' "
                                      "among its parameters")
                stage = {"id": ident}
                stage.update(params)
                if _short_code(stage):
                    raise FormatError(f"header: {self._label('chain')} stage {i} is written out "
                                      "although it has a short code (not canonical)")
            else:
                short = _SHORT_STAGES.get(code)
                if short is None:
                    raise VersionError(f"header: {self._label('chain')} uses reserved stage code "
                                       f"{code} (written by a newer nncodec?)")
                stage = {"id": short[0], "step": self.cfloat("step")} if short[1] \
                    else {"id": short[0]}
            chain.append(stage)
        return chain


def _record_info(name, dtype, shape, chain, backend, offset, length, crc32) -> "RecordInfo":
    # RecordInfo(...) without the frozen dataclass's per-field object.__setattr__ calls (a
    # quarter of the time of reading a small index); the same fields, so the same object
    info = object.__new__(RecordInfo)
    info.__dict__.update(name=name, dtype=dtype, shape=shape, chain=chain, backend=backend,
                         offset=offset, length=length, crc32=crc32)
    return info


class _Irregular(Exception):
    """The quick reading of compact records met something it leaves to the careful one."""


def _quick_uvarint(body: bytes, pos: int) -> tuple[int, int]:
    try:
        return decode_uvarint(body, pos)
    except FormatError:
        raise _Irregular from None


def _quick_compact_records(body: bytes, pos: int, count: int, data_start: int,
                           limits: DecoderLimits) -> tuple[dict, int]:
    """The ``count`` compact records from ``pos`` to the end of ``body``, read with local
    indices instead of the cursor's checked calls: (records, data length). It accepts only
    records the careful loop of ``_parse_body`` accepts, with the same result, and raises
    _Irregular on anything else (a varint of more than one byte for ndim or a stage count, a
    generic or reserved stage, a step float not in its shortest form, a
    name that is not canonical, invalid or repeated, a reserved code, a limit passed, the
    body ending early or late); the careful loop then reads the records again and reports
    the error. tests/test_container_quick.py holds the two readings to the same results."""
    infos: dict[str, RecordInfo] = {}
    offset = 0
    previous = b""
    end = len(body)
    max_ndim, max_elements = limits.max_ndim, limits.max_elements
    dtypes, backends, shorts = _DTYPE_BY_CODE, BACKENDS, _SHORT_STAGES
    cf_table, cf_first, cf_bits = _CF_TABLE, _CF_FIRST_EXP_HEAD, _CF_HEAD_BY_BITS
    try:
        for _ in range(count):
            shared = body[pos]
            if shared & 0x80:
                shared, pos = _quick_uvarint(body, pos)
            else:
                pos += 1
            n = body[pos]
            if n & 0x80:
                n, pos = _quick_uvarint(body, pos)
            else:
                pos += 1
            stop = pos + n
            if stop > end:
                raise _Irregular
            suffix = body[pos:stop]
            pos = stop
            if shared > len(previous) or (suffix and shared < len(previous)
                                           and suffix[0] == previous[shared]):
                raise _Irregular
            raw = previous[:shared] + suffix if shared else suffix
            previous = raw
            name = raw.decode("utf-8")
            if not name or name in infos:
                raise _Irregular
            code = body[pos]
            ndim = body[pos + 1]
            pos += 2
            if code not in dtypes or ndim & 0x80 or ndim > max_ndim:
                raise _Irregular
            shape = []
            numel = 1
            for _ in range(ndim):
                d = body[pos]
                if d & 0x80:
                    d, pos = _quick_uvarint(body, pos)
                else:
                    pos += 1
                numel *= d
                if d > max_elements or numel > max_elements:
                    raise _Irregular
                shape.append(d)
            backend = body[pos]
            stages = body[pos + 1]
            pos += 2
            if backend not in backends or stages & 0x80:
                raise _Irregular
            chain = []
            for _ in range(stages):
                short = shorts.get(body[pos])
                if short is None:
                    raise _Irregular
                if short[1]:
                    head = body[pos + 1]
                    pos += 2
                    if head >= cf_first:
                        step = cf_table[head - cf_first]
                    else:  # the head's count of leading bytes of a big-endian float64
                        if head > 8 or pos + head > end or (head and body[pos + head - 1] == 0):
                            raise _Irregular
                        bits = body[pos:pos + head] + bytes(8 - head)
                        pos += head
                        step = _F64BE.unpack(bits)[0]
                        if bits in cf_bits or not math.isfinite(step):
                            raise _Irregular
                    chain.append({"id": short[0], "step": step})
                else:
                    chain.append({"id": short[0]})
                    pos += 1
            length = body[pos]
            if length & 0x80:
                length, pos = _quick_uvarint(body, pos)
            else:
                pos += 1
            if pos + 4 > end:
                raise _Irregular
            crc = _U32.unpack_from(body, pos)[0]
            pos += 4
            infos[name] = _record_info(name, dtypes[code][0], tuple(shape), chain, backend,
                                       data_start + offset, length, crc)
            offset += length
    except (IndexError, UnicodeDecodeError):
        raise _Irregular from None
    if pos != end:
        raise _Irregular
    return infos, offset


def _parse_body(body: bytes, data_start: int, limits: DecoderLimits, compact: bool = False,
                quick: bool = True):
    cur = _Cursor(body, limits, compact)
    metadata = {}
    previous = None
    for _ in range(cur.count("metadata entry count")):
        key, raw = cur.string("metadata key")
        if previous is not None and raw <= previous:
            raise FormatError(f"header: metadata keys are not strictly increasing "
                              f"({previous!r} then {raw!r})")
        previous = raw
        metadata[key] = cur.string(f"metadata[{key!r}]")[0]

    infos: dict[str, RecordInfo] = {}
    offset = 0
    previous_name = b""
    max_ndim, max_elements = limits.max_ndim, limits.max_elements
    count = cur.count("tensor count")
    if compact and quick and isinstance(body, bytes):
        try:
            infos, offset = _quick_compact_records(body, cur.pos, count, data_start, limits)
            return metadata, infos, offset
        except _Irregular:
            pass
    for index in range(count):
        cur.where = f"tensor #{index}"
        if compact:
            shared = cur.uvarint("name prefix length")
            suffix = cur.raw_string("name")
            if shared > len(previous_name):
                raise FormatError(f"header: tensor #{index} shares {shared} name bytes with the "
                                  f"previous name, which has only {len(previous_name)}")
            if suffix and shared < len(previous_name) and suffix[0] == previous_name[shared]:
                raise FormatError(f"header: tensor #{index} name prefix length {shared} is not "
                                  "the longest common prefix (not canonical)")
            raw = previous_name[:shared] + suffix if shared else suffix
            previous_name = raw
        else:
            raw = cur.raw_string("name")
        name = cur.utf8(raw, "name")
        if not name:
            raise FormatError(f"header: tensor #{index} has an empty name")
        if name in infos:
            raise FormatError(f"header: tensor name {name!r} appears twice")
        where = cur.where = f"tensor {name!r}"
        code = cur.u8("dtype")
        if code not in _DTYPE_BY_CODE:
            raise VersionError(f"header: {where} has reserved dtype code {code} "
                               "(written by a newer nncodec?)")
        dtype = _DTYPE_BY_CODE[code][0]
        ndim = cur.uvarint("ndim")
        if ndim > max_ndim:
            raise LimitError(f"header: {where} has {ndim} dimensions; the limit is {max_ndim}")
        shape = []
        numel = 1
        for _ in range(ndim):
            d = cur.uvarint("shape")
            if d > max_elements:
                raise LimitError(f"header: {where} has dimension {d}; the limit is {max_elements}")
            numel *= d  # stays below max_elements**2 <= 2**80 before the check: no blow-up
            if numel > max_elements:
                raise LimitError(f"header: {where} has more than {max_elements} elements")
            shape.append(d)
        # numel * itemsize <= 2**40 * 8 fits in 64 bits, so the decoded size is representable
        backend = cur.u8("backend")
        if backend not in BACKENDS:
            raise VersionError(f"header: {where} uses reserved entropy backend id {backend} "
                               "(written by a newer nncodec?)")
        if compact:
            chain = cur.chain_compact()
            rel = offset
        else:
            chain = cur.value(1, "chain")
            if not isinstance(chain, list):
                raise FormatError(f"header: {where} chain is not a list")
            for i, stage in enumerate(chain):
                if not isinstance(stage, dict) or not isinstance(stage.get("id"), str):
                    raise FormatError(f"header: {where} chain[{i}] is not a map with a string "
                                      "'id'")
            rel = cur.uvarint("payload offset")
        length = cur.uvarint("payload length")
        crc = cur.u32("payload CRC-32")
        if rel != offset:
            kind = "overlaps the previous one" if rel < offset else "leaves a gap before it"
            raise FormatError(f"header: {where} payload starts at data offset {rel}, expected "
                              f"{offset} (payloads must be contiguous; this one {kind})")
        infos[name] = RecordInfo(name, dtype, tuple(shape), chain, backend,
                                 data_start + rel, length, crc)
        offset += length
    cur.where = ""
    if cur.remaining:
        raise FormatError(f"header: {cur.remaining} unexpected bytes after the last tensor record")
    return metadata, infos, offset


def _copy_json(v):
    """A deep copy of a JSON-compatible value (what the index holds), faster than deepcopy."""
    if isinstance(v, dict):
        return {k: _copy_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy_json(x) for x in v]
    return v


Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


class Reader:
    """Lazy reader of one ``.nnc`` container.

    ``source`` is a path, a bytes-like object, or a seekable binary file object (read from its
    offset 0; a file object passed in is not closed). Opening reads and validates the preamble and
    header only; :meth:`read_payload` reads one tensor's bytes. Not safe for concurrent use from
    several threads (the file position is shared).
    """

    def __init__(self, source: Source, *, limits: DecoderLimits = DEFAULT_LIMITS):
        self._limits = limits
        self._buffer: Optional[memoryview] = None
        self._file = None
        self._owns_file = False
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buffer = memoryview(source).cast("B")
            self._size = len(self._buffer)
        elif isinstance(source, (str, os.PathLike)):
            self._file = open(source, "rb", buffering=0)
            self._owns_file = True
            self._size = os.fstat(self._file.fileno()).st_size
        elif hasattr(source, "read") and hasattr(source, "seek"):
            if hasattr(source, "seekable") and not source.seekable():
                raise ValueError("Reader needs a seekable file object; read the stream into "
                                 "bytes first and pass those")
            self._file = source
            self._size = source.seek(0, os.SEEK_END)
        else:
            raise TypeError(f"Reader takes a path, bytes or a binary file object, "
                            f"not {type(source).__name__}")
        try:
            self._load_header()
        except BaseException:
            self.close()
            raise

    # -- plumbing ----------------------------------------------------------------------------

    def _read_at(self, offset: int, n: int, what: str) -> bytes:
        if self._buffer is not None:
            chunk = bytes(self._buffer[offset:offset + n])
        else:
            if self._file is None:
                raise ValueError("I/O on a closed Reader")
            self._file.seek(offset)
            parts = []
            got = 0
            while got < n:
                part = self._file.read(n - got)
                if not part:
                    break
                if not isinstance(part, (bytes, bytearray)):
                    raise TypeError("Reader needs a file opened in binary mode ('rb')")
                parts.append(part)
                got += len(part)
            chunk = b"".join(parts)
        if len(chunk) != n:
            raise TruncatedError(f"the data ends inside the {what} ({len(chunk)} of {n} bytes)")
        return chunk

    def _load_header(self) -> None:
        size = self._size
        head = self._read_at(0, min(size, PREAMBLE_SIZE), "preamble")
        if head[:8] != MAGIC[:len(head[:8])]:
            if head[:7] == b"\x89NNC\n\x1a\n" or head[:8] == b"\x89NNC\r\r\n\x1a":
                raise FormatError("not an .nnc container: its line endings were translated "
                                  "(copied in text mode?)")
            raise FormatError(f"not an .nnc container (starts with {head[:8]!r}, "
                              f"expected {MAGIC!r})")
        if len(head) < PREAMBLE_SIZE:
            raise TruncatedError(f"the data ends inside the {PREAMBLE_SIZE}-byte preamble "
                                 f"({len(head)} bytes)")
        _, major, minor, flags, header_length, header_crc = _PREAMBLE.unpack(head)
        if major != FORMAT_VERSION[0]:
            raise VersionError(f".nnc format version {major}.{minor} is not supported; this "
                               f"nncodec reads {FORMAT_VERSION[0]}.x"
                               + (" (upgrade nncodec)" if major > FORMAT_VERSION[0] else ""))
        if header_length > self._limits.max_header_size:
            raise LimitError(f"header is {header_length} bytes; the limit is "
                             f"{self._limits.max_header_size}")
        if header_length > size - PREAMBLE_SIZE:
            raise TruncatedError(f"the data ends inside the header ({size - PREAMBLE_SIZE} of "
                                 f"{header_length} bytes)")
        body = self._read_at(PREAMBLE_SIZE, header_length, "header")
        crc = zlib.crc32(body, zlib.crc32(head[:16]))
        if crc != header_crc:
            raise ChecksumError(f"header CRC-32 mismatch: stored 0x{header_crc:08x}, "
                                f"computed 0x{crc:08x}")
        if flags & ~_KNOWN_FLAGS:
            raise VersionError(f"reserved flag bits are set (0x{flags:04x}); the file needs "
                               "a newer nncodec")
        compact = bool(flags & FLAG_COMPACT)
        if compact and minor < COMPACT_MINOR:
            raise FormatError(f"flag bit 0 (compact index) is set in a version 1.{minor} file; "
                              f"it needs version 1.{COMPACT_MINOR} or later")
        data_start = PREAMBLE_SIZE + header_length
        self._metadata, self._infos, data_length = _parse_body(body, data_start, self._limits,
                                                               compact)
        end = data_start + data_length
        if end > size:
            raise TruncatedError(f"the data ends {end - size} bytes before the last payload does "
                                 f"(expected {end} bytes, got {size})")
        if end < size:
            raise FormatError(f"{size - end} unexpected bytes after the last payload")
        self._version = (major, minor)
        self._compact = compact
        self._header_size = data_start

    # -- context manager ---------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_file and self._file is not None:
            self._file.close()
        self._file = None
        self._buffer = None

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<nncodec.container.Reader {len(self._infos)} tensors, {self._size} bytes>"

    # -- index -------------------------------------------------------------------------------

    @property
    def version(self) -> tuple[int, int]:
        return self._version

    @property
    def compact(self) -> bool:
        """Whether the index uses the compact records of format 1.2 (flag bit 0)."""
        return self._compact

    @property
    def header_size(self) -> int:
        """Bytes before the first payload: preamble plus header body."""
        return self._header_size

    @property
    def size(self) -> int:
        return self._size

    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def _info(self, name: str) -> RecordInfo:
        """The Reader's own index entry (not a copy: for callers in nncodec that only read it)."""
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this container") from None

    def record_info(self, name: str) -> RecordInfo:
        """Index entry of one tensor (a copy: changing it does not change the Reader)."""
        info = self._info(name)
        return RecordInfo(info.name, info.dtype, info.shape, _copy_json(info.chain),
                          info.backend, info.offset, info.length, info.crc32)

    def records(self) -> Iterator[RecordInfo]:
        """Index entries in file order."""
        for name in list(self._infos):
            yield self.record_info(name)

    # -- payloads ----------------------------------------------------------------------------

    def read_payload(self, name: str, verify: bool = True) -> bytes:
        """Read one tensor's payload; with ``verify`` its CRC-32 is checked (ChecksumError)."""
        try:
            info = self._infos[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this container") from None
        data = self._read_at(info.offset, info.length, f"payload of {name!r}")
        if verify:
            crc = zlib.crc32(data)
            if crc != info.crc32:
                raise ChecksumError(f"payload of tensor {name!r} is corrupt: CRC-32 "
                                    f"0x{crc:08x}, index says 0x{info.crc32:08x}")
        return data

    def read_record(self, name: str, verify: bool = True) -> TensorRecord:
        """Index entry and payload as a TensorRecord, e.g. to copy it into another container."""
        info = self.record_info(name)
        return TensorRecord(info.name, info.dtype, info.shape, info.chain, info.backend,
                            self.read_payload(name, verify=verify))

    def verify(self, *, raise_on_error: bool = False, chunk_size: int = 1 << 20) -> list[str]:
        """Check every payload's CRC-32, reading in chunks; returns the problems found.

        With ``raise_on_error`` a non-empty list raises ChecksumError instead.
        """
        problems = []
        for info in self._infos.values():
            crc = 0
            try:
                for start in range(0, info.length, chunk_size):
                    n = min(chunk_size, info.length - start)
                    crc = zlib.crc32(self._read_at(info.offset + start, n,
                                                   f"payload of {info.name!r}"), crc)
            except TruncatedError as exc:
                problems.append(f"tensor {info.name!r}: {exc}")
                continue
            if crc != info.crc32:
                problems.append(f"tensor {info.name!r}: payload CRC-32 0x{crc:08x}, "
                                f"index says 0x{info.crc32:08x}")
        if problems and raise_on_error:
            raise ChecksumError("; ".join(problems))
        return problems

    def info(self) -> dict:
        """A JSON-compatible summary, like ``zstd -l``: version, sizes, metadata, tensors."""
        tensors = []
        for i in self._infos.values():
            tensors.append({
                "name": i.name, "dtype": i.dtype, "shape": list(i.shape),
                "chain": _copy_json(i.chain), "backend": i.backend,
                "backend_name": BACKENDS[i.backend], "offset": i.offset, "bytes": i.length,
                "decoded_bytes": i.nbytes, "crc32": f"{i.crc32:08x}",
            })
        payload_bytes = self._size - self._header_size
        return {
            "format": "nnc",
            "version": f"{self._version[0]}.{self._version[1]}",
            "header_bytes": self._header_size,
            "payload_bytes": payload_bytes,
            "total_bytes": self._size,
            "decoded_bytes": sum(t["decoded_bytes"] for t in tensors),
            "metadata": dict(self._metadata),
            "tensors": tensors,
        }
