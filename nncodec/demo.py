"""The main demo: ``python -m nncodec.demo`` (or ``nncodec-demo``), no arguments.

Trains (once, then cached in ~/.cache/nncodec) the small CNN of the built-in
digits task, compresses its state_dict to .nnc bytes at several settings with
the full pipeline (quantization, entropy coding, container), decodes every
one, evaluates the decoded network and prints a table of size, bits per
weight, weight SNR and test accuracy.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from . import api
from .pipeline import Settings

SETTINGS = (
    ("lossless", Settings(lossless=True)),
    ("SNR 40 dB", Settings(target_snr=40)),
    ("SNR 30 dB", Settings(target_snr=30)),
    ("SNR 25 dB", Settings(target_snr=25)),
    ("SNR 20 dB", Settings(target_snr=20)),
    ("SNR 15 dB", Settings(target_snr=15)),
    ("qp -24", Settings(qp=-24)),
    ("SNR 25 dB per tensor", Settings(target_snr=25, snr_scope="tensor")),
    ("SNR 25 dB, constriction", Settings(target_snr=25, backend="constriction")),
)


def _weight_snr(ref: dict, dec: dict) -> float:
    sig = err = 0.0
    for k, w in ref.items():
        if w.ndim >= 2 and w.dtype.kind == "f":
            w64 = w.astype(np.float64)
            sig += float((w64 ** 2).sum())
            err += float(((w64 - dec[k].astype(np.float64)) ** 2).sum())
    return math.inf if err == 0 else 10 * math.log10(sig / err)


def run(settings=SETTINGS, out=sys.stdout) -> list[dict]:
    from .tasks import digits

    t0 = time.perf_counter()
    state = {k: v.detach().cpu().numpy() for k, v in digits.get_state_dict().items()}
    n_values = sum(v.size for v in state.values())
    n_weights = sum(v.size for v in state.values() if v.ndim >= 2)
    fp32_bytes = sum(v.nbytes for v in state.values())
    base_acc = digits.evaluate(state)
    print(f"digits CNN (scikit-learn digits, 8x8): {len(state)} tensors, {n_values} values "
          f"({n_weights} in weight matrices), fp32 {fp32_bytes} bytes, test accuracy "
          f"{base_acc:.4f}; ready in {time.perf_counter() - t0:.1f} s", file=out)
    rows = []
    for label, s in settings:
        t = time.perf_counter()
        data = api.encode(state, settings=s)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        dec = api.decode(data)
        t_dec = time.perf_counter() - t
        rows.append({
            "setting": label,
            "bytes": len(data),
            "bits_per_value": 8.0 * len(data) / n_values,
            "ratio": fp32_bytes / len(data),
            "weight_snr_db": _weight_snr(state, dec),
            "accuracy": digits.evaluate(dec),
            "encode_ms": 1000 * t_enc,
            "decode_ms": 1000 * t_dec,
        })
    head = f"{'setting':<24} {'bytes':>7} {'bits/value':>10} {'ratio':>6} {'weight SNR':>10} {'accuracy':>8} {'enc ms':>7} {'dec ms':>7}"
    print("\n" + head + "\n" + "-" * len(head), file=out)
    print(f"{'fp32 original':<24} {fp32_bytes:7d} {32.0:10.3f} {1.0:5.1f}x {'':>10} {base_acc:8.4f}", file=out)
    for r in rows:
        snr = "exact" if math.isinf(r["weight_snr_db"]) else f"{r['weight_snr_db']:.1f} dB"
        print(f"{r['setting']:<24} {r['bytes']:7d} {r['bits_per_value']:10.3f} {r['ratio']:5.1f}x "
              f"{snr:>10} {r['accuracy']:8.4f} {r['encode_ms']:7.1f} {r['decode_ms']:7.1f}", file=out)
    print("\nbytes = the whole .nnc file (header, all tensors, checksums); bits/value over all "
          f"{n_values} values; weight SNR over the weight matrices; 1-D tensors (biases) get their own "
          f"step for {Settings().small_snr:g} dB.", file=out)
    return rows


def main() -> int:
    try:
        run()
    except ImportError as exc:
        print(f"nncodec demo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
