"""Container index size and parse speed: the compact index (format 1.2) against the legacy
index (1.0 / 1.1), on the same records.

    python bench/bench_container.py                 # digits CNN sizes (+ EfficientNet-Lite0 if installed)
    python bench/bench_container.py --no-effnet

Sizes: the digits CNN (nncodec.tasks.digits, 13.7k parameters) at qp -16/-20/-24, whole file
and index bytes per tensor; the part of each payload that is the cabac stream header.
Speed: CPU time (time.process_time) of opening a Reader (header parse) and of
nncodec.decode on EfficientNet-Lite0 at qp -28; load average printed beside it.
"""
from __future__ import annotations

import io
import os
import sys
import time

import numpy as np

import nncodec
from nncodec import container
from nncodec.entropy import cabac

NNCODEC_DQ_OFF = {-16: 5766, -20: 7532, -24: 9282}  # NNCodec 2.1.3 whole-file bytes (issue 3)


def _records(data: bytes):
    with container.Reader(data) as r:
        return [r.read_record(n) for n in r.keys()], r.metadata()


def index_bytes(records, meta, compact: bool) -> tuple[int, int]:
    """(whole file, bytes of the tensor records alone)."""
    total = len(container.pack(records, meta, compact=compact))
    empty = len(container.pack([], meta, compact=compact))
    return total, total - empty - sum(len(r.payload) for r in records) + 1  # +1: tensor_count 0 -> N


def digits() -> None:
    from nncodec.tasks import digits as task

    sd = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in task.get_state_dict().items()}
    print(f"digits CNN: {sum(a.size for a in sd.values())} parameters, {len(sd)} tensors")
    print("  qp | legacy B | compact B | NNCodec B | compact/NNCodec | record B/tensor legacy -> compact"
          " | cabac header B/tensor")
    for qp in (-16, -20, -24):
        data = nncodec.encode(sd, qp=qp)
        records, meta = _records(data)
        leg_total, leg_rec = index_bytes(records, meta, False)
        cmp_total, cmp_rec = index_bytes(records, meta, True)
        assert cmp_total == len(data)
        hdr = [cabac.parse_header_full(r.payload)[-1] for r in records if r.backend == 1]
        n = len(records)
        print(f"  {qp} | {leg_total} | {cmp_total} | {NNCODEC_DQ_OFF[qp]} | "
              f"{100 * cmp_total / NNCODEC_DQ_OFF[qp]:.1f}% | {leg_rec / n:.1f} -> {cmp_rec / n:.1f} | "
              f"{np.mean(hdr):.2f} ({sum(hdr)} B in {len(hdr)} payloads)")
    print(f"  metadata: {meta}")


def effnet() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import efficientnet_lite0
        sd = {k: v.numpy() for k, v in efficientnet_lite0.load_pretrained().state_dict().items()}
    except Exception as exc:  # the weights package is optional
        print(f"EfficientNet-Lite0 skipped: {exc}")
        return
    data = nncodec.encode(sd, qp=-28)
    records, meta = _records(data)
    legacy = container.pack(records, meta, compact=False)
    print(f"EfficientNet-Lite0 qp -28: {len(records)} tensors; file {len(legacy)} B legacy, {len(data)} B "
          f"compact; index {index_bytes(records, meta, False)[1]} -> {index_bytes(records, meta, True)[1]} B")
    print(f"  load average {os.getloadavg()[0]:.2f}")
    for label, blob in (("legacy", legacy), ("compact", data)):
        for src in ("bytes", "BytesIO"):
            best = float("inf")
            for _ in range(15):
                t = time.process_time()
                container.Reader(blob if src == "bytes" else io.BytesIO(blob)).close()
                best = min(best, time.process_time() - t)
            print(f"  Reader open ({label}, {src}): {best * 1e3:.2f} ms CPU (best of 15)")
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        nncodec.decode(data)
        best = min(best, time.process_time() - t)
    print(f"  nncodec.decode (compact): {best * 1e3:.0f} ms CPU (best of 3)")


if __name__ == "__main__":
    digits()
    if "--no-effnet" not in sys.argv:
        effnet()
