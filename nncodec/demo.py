"""The main demo: ``python -m nncodec.demo``.

Trains (once, then cached) the small CNN of the built-in digits task, quantizes
its weights uniformly at several target weight SNRs, codes the integer levels
with both entropy backends, checks that decoding gives the same levels back,
and prints size, bits per weight, weight SNR and the accuracy of the
dequantized network. A later stage will run the full container pipeline.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from .entropy import cabac, get_backend
from .quant_snr import dequantize, quantize, snr_db, step_for_snr


def _order0_bits(levels: np.ndarray) -> float:
    _, counts = np.unique(levels, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def run(snrs=(20.0, 25.0, 30.0, 40.0), out=sys.stdout) -> list[dict]:
    from .tasks import digits

    t0 = time.perf_counter()
    state = digits.get_state_dict()
    float_state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                   for k, v in state.items()}
    weights = {k: v for k, v in float_state.items() if v.ndim >= 2}
    n_weights = sum(v.size for v in weights.values())
    base_acc = digits.evaluate(float_state)
    print(f"digits CNN: {len(float_state)} tensors, {n_weights} weights in {len(weights)} "
          f"weight tensors, fp32 test accuracy {base_acc:.4f} "
          f"(ready in {time.perf_counter() - t0:.1f} s)", file=out)
    rows = []
    for target in snrs:
        coded = {"cabac": 0, "constriction": 0}
        h0 = 0.0
        recon = dict(float_state)
        err = sig = 0.0
        for name, w in weights.items():
            step = step_for_snr(w, target)
            levels = quantize(w, step).reshape(-1)
            h0 += _order0_bits(levels)
            row = int(np.prod(w.shape[1:]))
            for backend in coded:
                data = get_backend(backend).encode(levels, row_length=row)
                back = get_backend(backend).decode(data, levels.size)
                if not np.array_equal(back, levels):
                    raise AssertionError(f"{backend} did not decode {name} exactly")
                coded[backend] += len(data)
            w_hat = dequantize(levels, step).reshape(w.shape).astype(np.float32)
            recon[name] = w_hat
            err += float(((w.astype(np.float64) - w_hat) ** 2).sum())
            sig += float((w.astype(np.float64) ** 2).sum())
        acc = digits.evaluate(recon)
        rows.append({
            "target_snr_db": target,
            "weight_snr_db": 10 * np.log10(sig / err),
            "cabac_bytes": coded["cabac"],
            "constriction_bytes": coded["constriction"],
            "cabac_bpw": 8 * coded["cabac"] / n_weights,
            "constriction_bpw": 8 * coded["constriction"] / n_weights,
            "order0_bpw": h0 / n_weights,
            "accuracy": acc,
        })
    print(f"\n{'SNR dB':>7} {'cabac B':>8} {'bits/w':>7} {'constr. B':>9} {'bits/w':>7} "
          f"{'H0 bits/w':>9} {'ratio':>6} {'accuracy':>8}", file=out)
    for r in rows:
        ratio = 32.0 / r["cabac_bpw"]
        print(f"{r['weight_snr_db']:7.1f} {r['cabac_bytes']:8d} {r['cabac_bpw']:7.3f} "
              f"{r['constriction_bytes']:9d} {r['constriction_bpw']:7.3f} {r['order0_bpw']:9.3f} "
              f"{ratio:5.1f}x {r['accuracy']:8.4f}", file=out)
    print(f"{'fp32':>7} {4 * n_weights:8d} {32.0:7.3f} {'':>9} {'':>7} {'':>9} {'1.0x':>6} "
          f"{base_acc:8.4f}", file=out)
    print("\nbits/w counts the coded weight tensors only (biases stay fp32 here); every "
          "decode was checked exact.", file=out)
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
