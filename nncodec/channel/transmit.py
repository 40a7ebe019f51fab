"""Send bytes, or a ``.nnc`` container, through a simulated digital link, and recover what came through.

    from nncodec.channel import transmit
    report = transmit.transmit_nnc(open("model.nnc", "rb").read(), mcs="qpsk-1/2",
                                   channel="awgn", snr_db=3.0, seed=0, on_damage="zeros")
    report.link.fer, report.link.info_ber          # frame / bit error rates
    report.tensors                                  # per tensor: hit by a lost frame? intact? replaced?
    report.container                                # the received .nnc bytes (None if unrecoverable)

The link: bytes -> frames with a CRC-32 each (``nncodec.channel.framing``) -> 802.11n LDPC
encoding (``ldpc``) -> a fixed random bit interleaver per codeword -> Gray QAM with unit average
symbol energy (``modulation``) -> AWGN or Rayleigh fading at Es/N0 = ``snr_db`` (``channels``;
perfect CSI) -> max-log demapping -> deinterleaving -> layered min-sum decoding -> CRC check.
Frames that fail their CRC are "lost"; their bytes are still filled in with the decoder's best
guess, and the container's own per-tensor CRC-32 has the last word on each tensor.

Recovery (``on_damage``): tensors whose payload CRC-32 checks are kept byte for byte. A
damaged tensor (payload CRC fails) makes ``"fail"`` raise :class:`DamagedModelError`
(a ``FormatError``), or is replaced by a constant tensor of its shape and dtype: ``"zeros"``, or
``"mean"``: the average of the means of the nearest intact float tensors before and after it in
the container of the same kind (weights, ndim >= 2, take their neighbouring weights; 1-D tensors
such as biases and norm scales their neighbouring 1-D tensors) - the damaged tensor's own mean
cannot be known from damaged bytes - or 0 when there is none; integer and bool tensors are always replaced by zeros. If the container
header itself is lost no tensor can be located, so every option raises ``DamagedModelError``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..container import Reader, TensorRecord, pack
from ..entropy import get_backend
from ..errors import FormatError
from ..pipeline import FLOAT_DTYPES, decode_tensor
from .channels import CHANNELS, awgn, rayleigh
from .framing import FrameLayout
from .ldpc import CODE_RATES, DEFAULT_ALPHA, DEFAULT_MAX_ITER, LLR_CLIP, get_code
from .modulation import MODULATIONS, get_modulation

__all__ = ["DamagedModelError", "LinkResult", "TransmitReport", "Reception", "parse_mcs", "simulate_link",
           "transmit_nnc", "send_nnc", "recover_container", "raise_for_damage", "ON_DAMAGE", "MCS_NAMES", "INTERLEAVER_SEED"]

ON_DAMAGE = ("fail", "zeros", "mean")
MCS_NAMES = tuple(f"{m}-{r}" for m in MODULATIONS for r in CODE_RATES)
#: seed of the per-codeword bit interleaver (fixed: transmitter and receiver agree on it)
INTERLEAVER_SEED = 0x80211
_CHUNK_FRAMES = 1024


class DamagedModelError(FormatError):
    """Tensors (or the container header) did not survive the transmission."""


def parse_mcs(mcs: str) -> tuple[str, str]:
    """'qpsk-1/2' -> ('qpsk', '1/2')."""
    try:
        mod, rate = str(mcs).lower().rsplit("-", 1)
        mod = get_modulation(mod).name
    except ValueError:
        raise ValueError(f"MCS must be MODULATION-RATE, one of {', '.join(MCS_NAMES)}; got {mcs!r}") from None
    if rate not in CODE_RATES:
        raise ValueError(f"code rate must be one of {', '.join(CODE_RATES)}; got {mcs!r}")
    return mod, rate


def _interleaver(n: int) -> np.ndarray:
    return np.random.default_rng(INTERLEAVER_SEED).permutation(n)


@dataclass
class LinkResult:
    """What a simulated link did to a byte stream."""

    mcs: str
    channel: str
    snr_db: float
    block_length: int
    seed: Optional[int]
    frames: int
    frames_lost: int                # CRC failed (detected errors)
    frames_undetected: int          # CRC passed but the frame differs from what was sent
    coded_ber: float                # hard decisions on the channel LLRs, before decoding
    info_ber: float                 # information bits after decoding
    mean_iterations: float
    symbols: int
    received: bytes                 # reassembled stream (lost frames: the decoder's best guess)
    lost_ranges: list = field(default_factory=list)   # [start, end) byte ranges of lost frames
    frame_ok: Optional[np.ndarray] = None

    @property
    def fer(self) -> float:
        return self.frames_lost / self.frames if self.frames else 0.0

    def summary(self) -> dict:
        return {
            "mcs": self.mcs, "channel": self.channel, "snr_db": self.snr_db,
            "block_length": self.block_length, "seed": self.seed, "frames": self.frames,
            "frames_lost": self.frames_lost, "frames_undetected": self.frames_undetected,
            "fer": self.fer, "coded_ber": self.coded_ber, "info_ber": self.info_ber,
            "mean_iterations": self.mean_iterations, "symbols": self.symbols,
            "bytes": len(self.received), "lost_ranges": [list(r) for r in self.lost_ranges],
        }


def simulate_link(data: bytes, *, mcs: str = "qpsk-1/2", snr_db: float, channel: str = "awgn",
                  block_length: int = 1944, seed: Optional[int] = 0, max_iter: int = DEFAULT_MAX_ITER,
                  alpha: float = DEFAULT_ALPHA) -> LinkResult:
    """Send ``data`` through the link once. ``snr_db`` is Es/N0 in dB (unit average symbol
    energy); ``channel`` is "awgn", "rayleigh" (a new fading coefficient per symbol) or
    "rayleigh-block" (one per codeword); ``seed`` seeds the channel (None: fresh entropy)."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    mod_name, rate = parse_mcs(mcs)
    mod = get_modulation(mod_name)
    code = get_code(int(block_length), rate)
    layout = FrameLayout(code.k)
    data = bytes(data)
    info = layout.pack(data)
    nf = info.shape[0]
    perm = _interleaver(code.n)
    rng = np.random.default_rng(seed)
    syms_per_cw = code.n // mod.bits_per_symbol
    decoded = np.empty_like(info)
    coded_errors = 0
    iters_total = 0
    for start in range(0, nf, _CHUNK_FRAMES):
        u = info[start:start + _CHUNK_FRAMES]
        cw = code.encode(u)
        tx_bits = cw[:, perm]
        x = mod.modulate(tx_bits)
        if channel == "awgn":
            y, n0 = awgn(x, snr_db, rng)
            h = None
        else:
            y, h, n0 = rayleigh(x, snr_db, rng, block=syms_per_cw if channel == "rayleigh-block" else None)
        llr_tx = mod.demap(y, n0, h).reshape(cw.shape)
        llr = np.empty_like(llr_tx)
        llr[:, perm] = llr_tx
        coded_errors += int(np.count_nonzero((llr < 0) != (cw == 1)))
        if layout.fill_bits:  # known zero fill bits
            llr[:, code.k - layout.fill_bits:code.k] = LLR_CLIP
        bits, iters = code.decode(llr, max_iter=max_iter, alpha=alpha)
        decoded[start:start + len(u)] = bits[:, : code.k]
        iters_total += int(np.abs(iters).sum())
    info_errors = int(np.count_nonzero(decoded != info))
    frames = layout.unpack(decoded)
    ok = np.array([f[0] for f in frames], dtype=bool)
    sent_ok = (decoded == info).all(axis=1)
    undetected = int(np.count_nonzero(ok & ~sent_ok))
    P = layout.payload_bytes
    # the stream length: from the first frame whose CRC checks (all agree by construction)
    total = next((f[2] for f in frames if f[0]), None)
    if total is None:
        total = len(data) if nf == 1 else None
    body = b"".join(f[3] for f in frames)
    if total is None:  # every frame lost: the length is unknown, keep all payload bytes
        total = len(body)
    received = body[:total]
    lost = []
    for i in np.flatnonzero(~ok):
        a, b = int(i) * P, min((int(i) + 1) * P, total)
        if a < b:
            if lost and lost[-1][1] == a:
                lost[-1] = (lost[-1][0], b)
            else:
                lost.append((a, b))
    return LinkResult(
        mcs=f"{mod_name}-{rate}", channel=channel, snr_db=float(snr_db), block_length=code.n,
        seed=seed, frames=nf, frames_lost=int(np.count_nonzero(~ok)), frames_undetected=undetected,
        coded_ber=coded_errors / (nf * code.n), info_ber=info_errors / (nf * code.k),
        mean_iterations=iters_total / nf, symbols=nf * syms_per_cw, received=received,
        lost_ranges=lost, frame_ok=ok)


# ---------------------------------------------------------------------------------------------
# the container on the receiving side


@dataclass
class TransmitReport:
    link: LinkResult
    on_damage: str
    header_intact: bool
    tensors: list                  # dicts: name, offset, bytes, hit, status, fill (if replaced)
    container: Optional[bytes]     # received .nnc (None when the header was lost or on "fail")
    error: Optional[str] = None

    @property
    def damaged(self) -> list:
        return [t["name"] for t in self.tensors if t["status"] != "intact"]

    def summary(self) -> dict:
        return {"link": self.link.summary(), "on_damage": self.on_damage,
                "header_intact": self.header_intact,
                "tensors_total": len(self.tensors),
                "tensors_hit": sum(1 for t in self.tensors if t["hit"]),
                "tensors_damaged": len(self.damaged),
                "tensors": self.tensors, "error": self.error,
                "output_bytes": len(self.container) if self.container is not None else None}


def _overlaps(a: int, b: int, ranges) -> bool:
    return any(s < b and a < e for s, e in ranges)


def _constant_record(info, value: float) -> TensorRecord:
    """A record holding a tensor of ``info``'s name, dtype and shape, every element ``value``."""
    shape = tuple(info.shape)
    numel = int(np.prod(shape)) if shape else 1
    backend = get_backend("cabac")
    row = int(np.prod(shape[1:])) if len(shape) >= 2 else 0
    if info.dtype in FLOAT_DTYPES and value != 0 and np.isfinite(value):
        step = abs(float(value))
        levels = np.full(numel, 1 if value > 0 else -1, dtype=np.int32)
        chain = [{"id": "uniform", "step": step}]
    elif info.dtype in FLOAT_DTYPES:
        levels = np.zeros(numel, dtype=np.int32)
        chain = [{"id": "uniform", "step": 1.0}]
    else:
        levels = np.zeros(numel, dtype=np.int32)
        chain = [{"id": "integer"}]
    return TensorRecord(info.name, info.dtype, shape, chain, backend.id,
                        backend.encode(levels, row_length=row))


def _float_mean(arr: np.ndarray, dtype: str) -> float:
    if dtype == "bfloat16":
        from ..bf16 import to_float32
        arr = to_float32(arr)
    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        return 0.0
    return float(a.mean())


def recover_container(received: bytes, lost_ranges, on_damage: str = "fail", *,
                      original: Optional[bytes] = None, extra_metadata: Optional[dict] = None):
    """Check a received container tensor by tensor and apply ``on_damage``.

    Returns (header_intact, tensors, container bytes or None, error message or None).
    ``original`` (the sent bytes, when the caller has them) is used only to name the tensors a
    lost header would have held; never for recovery."""
    if on_damage not in ON_DAMAGE:
        raise ValueError(f"on_damage must be one of {', '.join(ON_DAMAGE)}, got {on_damage!r}")
    try:
        reader = Reader(bytes(received))
    except FormatError as exc:
        tensors = []
        if original is not None:
            with Reader(bytes(original)) as r0:
                tensors = [{"name": i.name, "offset": i.offset, "bytes": i.length,
                            "hit": _overlaps(i.offset, i.offset + i.length, lost_ranges),
                            "status": "lost"} for i in r0.records()]
        return False, tensors, None, f"container header lost in transmission ({exc})"
    with reader:
        infos = list(reader.records())
        records, status = {}, {}
        for i in infos:
            try:  # the payload CRC-32 says whether these are the bytes that were sent
                payload = reader.read_payload(i.name)
                records[i.name] = TensorRecord(i.name, i.dtype, i.shape, i.chain, i.backend, payload)
                status[i.name] = "intact"
            except FormatError as exc:
                status[i.name] = f"damaged: {exc}"
        values = {}

        def value(name):  # decoded intact tensor, for the "mean" fill; None if it cannot be decoded
            if name not in values:
                try:
                    values[name] = decode_tensor(reader.record_info(name), records[name].payload)
                except FormatError:
                    values[name] = None
            return values[name]

        tensors = [{"name": i.name, "offset": i.offset, "bytes": i.length,
                    "hit": _overlaps(i.offset, i.offset + i.length, lost_ranges),
                    "status": "intact" if status[i.name] == "intact" else "damaged",
                    "detail": None if status[i.name] == "intact" else status[i.name][9:]}
                   for i in infos]
        damaged = [t["name"] for t in tensors if t["status"] != "intact"]
        if damaged and on_damage == "fail":
            return True, tensors, None, (f"{len(damaged)} of {len(infos)} tensors damaged in "
                                         f"transmission: {', '.join(damaged[:8])}"
                                         f"{' ...' if len(damaged) > 8 else ''}")
        out = []
        for pos, i in enumerate(infos):
            if i.name in records:
                out.append(records[i.name])
                continue
            fill = 0.0
            if on_damage == "mean" and i.dtype in FLOAT_DTYPES:
                means = []
                for step in (-1, 1):  # nearest intact neighbour on each side, same kind
                    j = pos + step
                    while 0 <= j < len(infos):
                        nb = infos[j]
                        if (nb.name in records and nb.dtype in FLOAT_DTYPES
                                and (len(nb.shape) >= 2) == (len(i.shape) >= 2)
                                and value(nb.name) is not None):
                            means.append(_float_mean(value(nb.name), nb.dtype))
                            break
                        j += step
                fill = float(np.mean(means)) if means else 0.0
            out.append(_constant_record(i, fill))
            t = next(t for t in tensors if t["name"] == i.name)
            t["status"] = "replaced"
            t["fill"] = fill
        meta = reader.metadata()
        if extra_metadata:
            meta = {**meta, **extra_metadata}
        return True, tensors, pack(out, meta), None


def transmit_nnc(data: bytes, *, mcs: str = "qpsk-1/2", snr_db: float, channel: str = "awgn",
                 block_length: int = 1944, seed: Optional[int] = 0, on_damage: str = "fail",
                 max_iter: int = DEFAULT_MAX_ITER, alpha: float = DEFAULT_ALPHA) -> TransmitReport:
    """Send a ``.nnc`` container through the link and rebuild it on the receiving side (see the
    module docstring). Never raises for transmission damage: the report says what happened
    (``report.error``, ``report.container`` None); :func:`raise_for_damage` turns that into a
    :class:`DamagedModelError`. Raises ``FormatError`` if ``data`` is not a valid container."""
    data = bytes(data)
    Reader(data).close()  # the input must be a valid container (FormatError otherwise)
    if on_damage not in ON_DAMAGE:
        raise ValueError(f"on_damage must be one of {', '.join(ON_DAMAGE)}, got {on_damage!r}")
    link = simulate_link(data, mcs=mcs, snr_db=snr_db, channel=channel, block_length=block_length,
                         seed=seed, max_iter=max_iter, alpha=alpha)
    extra = None
    if link.frames_lost:
        extra = {"nncodec.transmit": json.dumps(
            {"mcs": link.mcs, "channel": channel, "snr_db": float(snr_db), "seed": seed,
             "on_damage": on_damage, "frames_lost": link.frames_lost, "frames": link.frames},
            sort_keys=True)}
    header_ok, tensors, container, error = recover_container(
        link.received, link.lost_ranges, on_damage, original=data, extra_metadata=extra)
    if container is not None and all(t["status"] == "intact" for t in tensors):
        container = link.received  # every checksum passed: the bytes as received
    return TransmitReport(link, on_damage, header_ok, tensors, container, error)


def raise_for_damage(report: TransmitReport) -> None:
    """Raise DamagedModelError when the report holds no usable container."""
    if report.container is None:
        raise DamagedModelError(report.error or "transmission failed")


@dataclass
class Reception:
    """What :func:`send_nnc` returns."""

    tensors: Optional[dict]        # the received model (damaged tensors replaced), or None
    container: Optional[bytes]     # the received .nnc bytes, or None
    stats: dict                    # link and tensor statistics (see send_nnc)
    report: TransmitReport         # everything, per tensor

    @property
    def ok(self) -> bool:
        """A model came through (possibly with replaced tensors)."""
        return self.tensors is not None


def send_nnc(data: bytes, *, mcs: str, snr_db: float, channel: str = "awgn", seed: Optional[int] = 0,
             on_damage: str = "zeros", block_length: int = 1944, max_iter: int = DEFAULT_MAX_ITER,
             framework: str = "numpy") -> Reception:
    """Send ``.nnc`` bytes through the digital link once and decode what arrives.

    ``snr_db`` is Es/N0 in dB (unit average symbol energy; for Rayleigh the average over the
    fading); ``channel`` "awgn", "rayleigh" (per symbol) or "rayleigh-block" (per codeword);
    ``seed`` fixes the noise and fading draw (the same seed gives the same result).
    ``on_damage``: "zeros" or "mean" replace tensors whose bytes did not survive (see
    :func:`recover_container`); "fail" returns no model when any tensor is damaged. ``framework``
    as for ``nncodec.decode`` ("numpy" or "torch").

    Never raises for transmission damage: ``tensors`` is None when nothing usable arrived (the
    container header was lost, or "fail" and a tensor was damaged), and ``stats["error"]`` says
    why. ``stats``: mcs, channel, snr_db, seed, frames, frames_lost, fer, coded_ber (hard
    decisions before decoding), info_ber (after), channel_uses, nnc_bytes, header_intact,
    tensors_total, tensors_damaged, damaged (their names), error."""
    rep = transmit_nnc(data, mcs=mcs, snr_db=snr_db, channel=channel, block_length=block_length,
                       seed=seed, on_damage=on_damage, max_iter=max_iter)
    tensors = None
    if rep.container is not None:
        from ..api import decode
        tensors = decode(rep.container, framework=framework)
    link = rep.link
    stats = {"mcs": link.mcs, "channel": link.channel, "snr_db": link.snr_db, "seed": seed,
             "frames": link.frames, "frames_lost": link.frames_lost, "fer": link.fer,
             "coded_ber": link.coded_ber, "info_ber": link.info_ber, "channel_uses": link.symbols,
             "nnc_bytes": len(data), "header_intact": rep.header_intact,
             "tensors_total": len(rep.tensors), "tensors_damaged": len(rep.damaged),
             "damaged": rep.damaged, "error": rep.error}
    return Reception(tensors, rep.container, stats, rep)
