"""``python -m nncodec.analog``: weight MSE of the analog schemes against the optimum
D = var (1 + SNR)^(-rho) on Gaussian weights (AWGN), the numbers behind issue 7's targets.

Examples:
    python -m nncodec.analog                       # 200,000 weights, SNR -5 ... 30 dB
    python -m nncodec.analog --n 50000 --snr 10,20 --json gaps.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from . import get_scheme, transmit_weights, weight_mse_bound

# (label, scheme): the presets, and the spiral with uniform stretch (sk_stretch="sqrt")
SCHEMES = [(n, get_scheme(n)) for n in ("ml", "mmse", "rep2-ml", "rep2-mmse", "sk2-ml", "sk2-mmse")]
SCHEMES += [(n + "/sqrt", get_scheme(n, sk_stretch="sqrt")) for n in ("sk2-ml", "sk2-mmse")]


def measure(n: int, snrs, seed: int = 0):
    w = np.random.default_rng(10_000 + seed).standard_normal(n)
    var = float(np.var(w))
    rows = []
    for snr in snrs:
        for scheme, sch in SCHEMES:
            _, info = transmit_weights({"w": w}, sch, float(snr), seed=seed)
            rho = sch.rho
            bound = weight_mse_bound(var, float(snr), rho)
            rows.append({"snr_db": float(snr), "scheme": scheme, "rho": rho,
                         "weight_mse": info["weight_mse"], "bound": bound,
                         "gap_db": 10 * math.log10(info["weight_mse"] / bound),
                         "wnr_db": info["wnr_db"],
                         "sk_gamma": (info["sk_gamma"] or {}).get("w")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nncodec.analog", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="number of Gaussian weights")
    ap.add_argument("--snr", default="-5,0,5,10,15,20,25,30", help="comma-separated Es/N0 in dB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    try:
        snrs = [float(s) for s in a.snr.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--snr: not a list of numbers: {a.snr!r}")
    if a.n < 2:
        ap.error("--n must be at least 2")
    rows = measure(a.n, snrs, a.seed)
    print(f"{'SNR dB':>7} {'scheme':>13} {'rho':>3} {'weight MSE':>11} {'bound D':>10} "
          f"{'gap dB':>7} {'gamma':>7}")
    for r in rows:
        g = f"{r['sk_gamma']:.3f}" if r["sk_gamma"] else ""
        print(f"{r['snr_db']:7.1f} {r['scheme']:>13} {r['rho']:3d} {r['weight_mse']:11.4g} "
              f"{r['bound']:10.4g} {r['gap_db']:7.2f} {g:>7}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"n": a.n, "seed": a.seed, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
