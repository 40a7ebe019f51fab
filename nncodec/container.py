"""The ``.nnc`` container: a checksummed header indexing independently readable tensor payloads.

The byte layout is specified in ``formats/nnc-v1.md``; this module is one implementation of it.
In short::

    preamble (20 bytes)   magic, version, flags, header length, header CRC-32
    header body           metadata map + one index record per tensor
    payloads              concatenated in index order, no gaps

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

import copy
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
FORMAT_VERSION = (1, 1)  # (major, newest minor) this module writes; it reads any 1.x
# Chain stage ids added after 1.0, and the minor version that introduced them: a file is
# written as 1.x with x the largest minor version that one of its stages needs (1.0 when
# none does), so that files without them keep their 1.0 bytes. See nnc-v1.md, section 10.
STAGE_MINOR: dict[str, int] = {"dq": 1}
_PREAMBLE = struct.Struct("<8sBBHII")  # magic, major, minor, flags, header_length, header_crc32
PREAMBLE_SIZE = _PREAMBLE.size  # 20
_CRC_FIELD = slice(16, 20)
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")

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
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1


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


def _encode_value(out: bytearray, value: Any, depth: int, where: str) -> None:
    """Append the tagged encoding of one JSON-compatible value (formats/nnc-v1.md, Values)."""
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
            _encode_value(out, item, depth + 1, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        if depth > DEFAULT_LIMITS.max_depth:
            raise ValueError(f"{where}: lists/maps nested deeper than {DEFAULT_LIMITS.max_depth}")
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: map keys must be str, not {type(key).__name__}")
            keyed = bytearray()
            _encode_str(keyed, key, f"{where}: key")
            items.append((key.encode("utf-8"), keyed, key, item))
        items.sort(key=lambda t: t[0])
        out.append(_TAG_MAP)
        out += encode_uvarint(len(items))
        for _, keyed, key, item in items:
            out += keyed
            _encode_value(out, item, depth + 1, f"{where}[{key!r}]")
    else:
        raise TypeError(f"{where}: {type(value).__name__} is not JSON-compatible "
                        "(use None, bool, int, float, str, list or dict)")


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


def _encode_header(records: Iterable[TensorRecord],
                   metadata: Optional[Mapping[str, str]]) -> tuple[bytes, list]:
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
        _encode_value(body, rec.chain, 1, f"{where} chain")

        payload = rec.payload
        if isinstance(payload, _Spooled):  # already written out by write()
            length, crc = payload.length, payload.crc32
        else:
            payload = _payload_bytes(payload, where)
            length, crc = len(payload), zlib.crc32(payload)
        body += encode_uvarint(offset)
        body += encode_uvarint(length)
        body += _U32.pack(crc)
        payloads.append(payload)
        offset += length

    if len(body) > DEFAULT_LIMITS.max_header_size:
        raise ValueError(f"header body is {len(body)} bytes; the format allows at most "
                         f"{DEFAULT_LIMITS.max_header_size} (too many tensors or too much metadata)")
    major = FORMAT_VERSION[0]
    minor = max([0] + [STAGE_MINOR.get(st.get("id"), 0) for rec in records for st in rec.chain])
    pre = _PREAMBLE.pack(MAGIC, major, minor, 0, len(body), 0)
    crc = zlib.crc32(body, zlib.crc32(pre[:16]))
    return pre[:16] + _U32.pack(crc) + bytes(body), payloads


def pack(records: Iterable[TensorRecord], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """Return the container bytes for ``records`` (kept in the order given) and ``metadata``.

    The same records and metadata always give the same bytes: metadata keys and the keys of every
    chain dict are sorted, whatever their insertion order.
    """
    header, payloads = _encode_header(records, metadata)
    return b"".join([header, *payloads])


def write(target: Union[str, os.PathLike, BinaryIO], records: Iterable[TensorRecord],
          metadata: Optional[Mapping[str, str]] = None, *, overwrite: bool = True) -> int:
    """Write a container to a path or a binary file object; returns the number of bytes written.

    For a path the bytes go to a temporary file in the same directory, which is flushed, synced
    and then renamed over ``target`` (``os.replace``): readers see the old file or the new one,
    never a part. With ``overwrite=False`` an existing file (even one that appears meanwhile) is
    left alone and ``nncodec.errors.OutputExistsError`` is raised. A file object is written at
    its current position and left open.
    """
    if hasattr(target, "write"):
        header, payloads = _encode_header(records, metadata)
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
        header, _ = _encode_header(light, metadata)
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
    """Reads the header body; every overrun or bad value becomes a FormatError subclass."""

    __slots__ = ("data", "pos", "limits")

    def __init__(self, data: bytes, limits: DecoderLimits):
        self.data = data
        self.pos = 0
        self.limits = limits

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def uvarint(self, what: str) -> int:
        try:
            value, self.pos = decode_uvarint(self.data, self.pos)
        except FormatError as exc:
            raise FormatError(f"header: bad varint in {what} at body offset {self.pos}: {exc}") \
                from None
        return value

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise FormatError(f"header: {what} needs {n} bytes at body offset {self.pos}, "
                              f"but only {self.remaining} remain")
        start = self.pos
        self.pos += n
        return self.data[start:self.pos]

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def string(self, what: str) -> tuple[str, bytes]:
        raw = self.take(self.uvarint(f"{what} length"), what)
        try:
            return raw.decode("utf-8"), raw
        except UnicodeDecodeError:
            raise FormatError(f"header: {what} is not valid UTF-8: {raw[:40]!r}") from None

    def count(self, what: str) -> int:
        n = self.uvarint(what)
        if n > self.remaining:  # every item takes at least one byte: cheap guard before looping
            raise FormatError(f"header: {what} says {n} items, but only {self.remaining} "
                              "bytes remain")
        return n

    def value(self, depth: int, where: str) -> Any:
        tag = self.u8(f"{where} tag")
        if tag == _TAG_NULL:
            return None
        if tag == _TAG_FALSE:
            return False
        if tag == _TAG_TRUE:
            return True
        if tag == _TAG_INT:
            z = self.uvarint(where)
            return (z >> 1) if not z & 1 else -((z + 1) >> 1)
        if tag == _TAG_FLOAT:
            f = _F64.unpack(self.take(8, where))[0]
            if not math.isfinite(f):
                raise FormatError(f"header: {where} is {f}, which is not JSON-compatible")
            return f
        if tag == _TAG_STR:
            return self.string(where)[0]
        if tag in (_TAG_LIST, _TAG_MAP):
            if depth > self.limits.max_depth:
                raise LimitError(f"header: {where} nests lists/maps deeper than "
                                 f"{self.limits.max_depth} levels")
            n = self.count(f"{where} item count")
            if tag == _TAG_LIST:
                return [self.value(depth + 1, f"{where}[{i}]") for i in range(n)]
            out = {}
            previous = None
            for _ in range(n):
                key, raw = self.string(f"{where} key")
                if previous is not None and raw <= previous:
                    raise FormatError(f"header: {where} keys are not strictly increasing "
                                      f"({previous!r} then {raw!r})")
                previous = raw
                out[key] = self.value(depth + 1, f"{where}[{key!r}]")
            return out
        raise VersionError(f"header: {where} has reserved value tag {tag} "
                           "(written by a newer nncodec?)")


def _parse_body(body: bytes, data_start: int, limits: DecoderLimits):
    cur = _Cursor(body, limits)
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
    for index in range(cur.count("tensor count")):
        name, _ = cur.string(f"name of tensor #{index}")
        if not name:
            raise FormatError(f"header: tensor #{index} has an empty name")
        if name in infos:
            raise FormatError(f"header: tensor name {name!r} appears twice")
        where = f"tensor {name!r}"
        code = cur.u8(f"{where} dtype")
        if code not in _DTYPE_BY_CODE:
            raise VersionError(f"header: {where} has reserved dtype code {code} "
                               "(written by a newer nncodec?)")
        dtype, itemsize = _DTYPE_BY_CODE[code]
        ndim = cur.uvarint(f"{where} ndim")
        if ndim > limits.max_ndim:
            raise LimitError(f"header: {where} has {ndim} dimensions; the limit is "
                             f"{limits.max_ndim}")
        shape = []
        numel = 1
        for _ in range(ndim):
            d = cur.uvarint(f"{where} shape")
            if d > limits.max_elements:
                raise LimitError(f"header: {where} has dimension {d}; the limit is "
                                 f"{limits.max_elements}")
            numel *= d  # stays below max_elements**2 <= 2**80 before the check: no blow-up
            if numel > limits.max_elements:
                raise LimitError(f"header: {where} has more than {limits.max_elements} elements")
            shape.append(d)
        # numel * itemsize <= 2**40 * 8 fits in 64 bits, so the decoded size is representable
        backend = cur.u8(f"{where} backend")
        if backend not in BACKENDS:
            raise VersionError(f"header: {where} uses reserved entropy backend id {backend} "
                               "(written by a newer nncodec?)")
        chain = cur.value(1, f"{where} chain")
        if not isinstance(chain, list):
            raise FormatError(f"header: {where} chain is not a list")
        for i, stage in enumerate(chain):
            if not isinstance(stage, dict) or not isinstance(stage.get("id"), str):
                raise FormatError(f"header: {where} chain[{i}] is not a map with a string 'id'")
        rel = cur.uvarint(f"{where} payload offset")
        length = cur.uvarint(f"{where} payload length")
        crc = cur.u32(f"{where} payload CRC-32")
        if rel != offset:
            kind = "overlaps the previous one" if rel < offset else "leaves a gap before it"
            raise FormatError(f"header: {where} payload starts at data offset {rel}, expected "
                              f"{offset} (payloads must be contiguous; this one {kind})")
        infos[name] = RecordInfo(name, dtype, tuple(shape), chain, backend,
                                 data_start + rel, length, crc)
        offset += length
    if cur.remaining:
        raise FormatError(f"header: {cur.remaining} unexpected bytes after the last tensor record")
    return metadata, infos, offset


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
        if flags:
            raise VersionError(f"reserved flag bits are set (0x{flags:04x}); the file needs "
                               "a newer nncodec")
        data_start = PREAMBLE_SIZE + header_length
        self._metadata, self._infos, data_length = _parse_body(body, data_start, self._limits)
        end = data_start + data_length
        if end > size:
            raise TruncatedError(f"the data ends {end - size} bytes before the last payload does "
                                 f"(expected {end} bytes, got {size})")
        if end < size:
            raise FormatError(f"{size - end} unexpected bytes after the last payload")
        self._version = (major, minor)
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

    def record_info(self, name: str) -> RecordInfo:
        """Index entry of one tensor (a copy: changing it does not change the Reader)."""
        try:
            info = self._infos[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in this container") from None
        return RecordInfo(info.name, info.dtype, info.shape, copy.deepcopy(info.chain),
                          info.backend, info.offset, info.length, info.crc32)

    def records(self) -> Iterator[RecordInfo]:
        """Index entries in file order."""
        for name in list(self._infos):
            yield self.record_info(name)

    # -- payloads ----------------------------------------------------------------------------

    def read_payload(self, name: str, verify: bool = True) -> bytes:
        """Read one tensor's payload; with ``verify`` its CRC-32 is checked (ChecksumError)."""
        info = self.record_info(name)
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
                "chain": copy.deepcopy(i.chain), "backend": i.backend,
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
