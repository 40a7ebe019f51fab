"""Statistics over the draws of a sweep, the best-MCS digital envelope, and WNR interpolation."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Optional

import numpy as np

__all__ = ["summarize", "envelope", "curve", "x_at_level", "AXES"]

AXES = ("snr_db", "noise_std")


def _axis(p: dict) -> str:
    return "snr_db" if "snr_db" in p and p.get("snr_db") is not None else "noise_std"


def _mean(vals) -> Optional[float]:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def summarize(points: Iterable[dict]) -> list:
    """One row per (channel, axis, design SNR, scheme, x) with the metric's mean, std, min,
    10th / 50th / 90th percentiles and max over draws, the mean WNR reported by the analog
    scheme, the median effective WNR of the received weights, and for digital schemes the
    mean frame error rate and the share of draws that arrived intact."""
    groups = defaultdict(list)
    for p in points:
        ax = _axis(p)
        groups[(p["channel"], ax, p.get("design_snr_db"), p["scheme"], float(p[ax]))].append(p)
    rows = []
    for (channel, ax, design, scheme, x), ps in groups.items():
        m = np.array([p["metric"] for p in ps if p.get("metric") is not None], dtype=np.float64)
        row = {"channel": channel, "axis": ax, "x": x, "design_snr_db": design, "scheme": scheme,
               "kind": ps[0]["kind"], "draws": len(ps)}
        if m.size:
            row.update(mean=float(m.mean()), std=float(m.std()), min=float(m.min()),
                       p10=float(np.percentile(m, 10)), p50=float(np.percentile(m, 50)),
                       p90=float(np.percentile(m, 90)), max=float(m.max()))
        else:
            row.update(mean=None, std=None, min=None, p10=None, p50=None, p90=None, max=None,
                       infeasible=True)
        row["wnr_db"] = _mean(p.get("wnr_db") for p in ps)
        ew = [p.get("effective_wnr_db") for p in ps if p.get("effective_wnr_db") is not None]
        row["effective_wnr_db"] = float(np.median(ew)) if ew else None
        if row["kind"] == "digital":
            row["fer"] = _mean(p.get("fer") for p in ps)
            row["intact_share"] = float(np.mean([bool(p.get("intact")) for p in ps]))
        rows.append(row)
    rows.sort(key=lambda r: (r["channel"], r["axis"], -math.inf if r["design_snr_db"] is None
                             else r["design_snr_db"], r["scheme"], r["x"]))
    return rows


def curve(rows, channel: str, scheme: str, stat: str = "mean", axis: str = "snr_db",
          design: Optional[float] = None):
    """(xs, values) of one scheme's statistic along the axis."""
    sel = [r for r in rows if r["channel"] == channel and r["scheme"] == scheme and r["axis"] == axis
           and r["design_snr_db"] == design and r.get(stat) is not None]
    sel.sort(key=lambda r: r["x"])
    return np.array([r["x"] for r in sel]), np.array([r[stat] for r in sel])


def envelope(rows, channel: str, stat: str = "mean", axis: str = "snr_db") -> list:
    """Best digital scheme at each x: [(x, value, scheme)] (the best-MCS envelope: an ideal
    transmitter that knows the SNR picks the MCS with the best metric there). ``scheme`` is None
    where no MCS ever arrived intact."""
    best = {}
    for r in rows:
        if r["kind"] != "digital" or r["channel"] != channel or r["axis"] != axis or r.get(stat) is None:
            continue
        # ties (e.g. every MCS failing) go to the MCS that arrived intact most often
        key = (r[stat], r.get("intact_share") or 0.0)
        if r["x"] not in best or key > best[r["x"]][0]:
            best[r["x"]] = (key, r["scheme"] if (r.get("intact_share") or 0.0) > 0 else None)
    return [(x, k[0], s) for x, (k, s) in sorted(best.items())]


def x_at_level(xs, values, level: float) -> Optional[float]:
    """The smallest x at which the (linearly interpolated) curve first reaches ``level``, or None
    if it never does. Used for "the WNR at which a receiver reaches 99% of the fp32 metric"."""
    xs, values = np.asarray(xs, dtype=np.float64), np.asarray(values, dtype=np.float64)
    order = np.argsort(xs)
    xs, values = xs[order], values[order]
    if xs.size == 0:
        return None
    if values[0] >= level:
        return float(xs[0])
    for i in range(1, xs.size):
        if values[i] >= level > values[i - 1]:
            f = (level - values[i - 1]) / (values[i] - values[i - 1])
            return float(xs[i - 1] + f * (xs[i] - xs[i - 1]))
    return None
