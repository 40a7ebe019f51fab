"""Plots of a sweep (matplotlib, PNG): the metric against SNR (or noise std), one panel per channel.

Each analog scheme: the mean over draws as a line and the 10th-90th percentile band; on
Rayleigh channels also the 10th percentile as a dashed line (the outage view). Each digital
MCS: a thin line of its mean, and the best-MCS envelope as a thick black line. A dotted line
marks the error-free fp32 metric. On the SNR axis a second axis on top reads the WNR (weight
variance to noise power, dB) of a reference analog scheme (``ml`` when swept), as reported by
``nncodec.analog``; the results file holds the WNR of every scheme at every point.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .summary import curve, envelope, summarize

__all__ = ["plot_sweep"]


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on environment
        from ..errors import MissingDependencyError
        raise MissingDependencyError("plots need matplotlib (`pip install matplotlib`)") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _label(scheme: str, design) -> str:
    return scheme if design is None else f"{scheme} (designed for {design:g} dB)"


def plot_sweep(result, path, *, axis: Optional[str] = None, channels: Optional[Sequence[str]] = None,
               schemes: Optional[Sequence[str]] = None, title: Optional[str] = None,
               wnr_scheme: Optional[str] = None, envelope_line: bool = True) -> str:
    """Write the plot of ``result`` (a SweepResult, or a results file path) to ``path`` (PNG)."""
    from .run import SweepResult
    if not isinstance(result, SweepResult):
        result = SweepResult.load(result)
    rows = summarize(result.points)
    if schemes is not None:
        rows = [r for r in rows if r["scheme"] in set(schemes)]
    if not rows:
        raise ValueError("nothing to plot: the sweep has no points (for these schemes)")
    axes_present = [a for a in ("snr_db", "noise_std") if any(r["axis"] == a for r in rows)]
    axis = axis or axes_present[0]
    rows = [r for r in rows if r["axis"] == axis]
    chans = list(channels) if channels is not None else sorted({r["channel"] for r in rows},
                                                               key=["awgn", "rayleigh", "rayleigh-block"].index)
    plt = _pyplot()
    fig, axs = plt.subplots(1, len(chans), figsize=(6.4 * len(chans), 4.8), squeeze=False)
    ref = result.header.get("reference_metric")
    analog = sorted({(r["scheme"], r["design_snr_db"]) for r in rows if r["kind"] == "analog"},
                    key=lambda t: (t[1] is not None, t[1] or 0, t[0]))
    digital = sorted({r["scheme"] for r in rows if r["kind"] == "digital"})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, ch in zip(axs[0], chans):
        fading = ch != "awgn"
        for i, (s, design) in enumerate(analog):
            x, m = curve(rows, ch, s, "mean", axis, design)
            if not x.size:
                continue
            c = colors[i % len(colors)]
            ls = "-" if design is None else "-."
            ax.plot(x, m, ls, color=c, marker="o", ms=3, label=_label(s, design))
            _, lo = curve(rows, ch, s, "p10", axis, design)
            _, hi = curve(rows, ch, s, "p90", axis, design)
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
            if fading:
                ax.plot(x, lo, ":", color=c, lw=1.2, label=f"{_label(s, design)} 10th pct")
        for j, s in enumerate(digital):
            x, m = curve(rows, ch, s, "mean", axis)
            if x.size:
                ax.plot(x, m, "--", lw=0.9, color=colors[(len(analog) + j) % len(colors)], alpha=0.8,
                        label=s)
        if digital and envelope_line:
            env = envelope(rows, ch, "mean", axis)
            if env:
                ax.plot([e[0] for e in env], [e[1] for e in env], "-", color="black", lw=2.2, alpha=0.7,
                        label="digital, best MCS (mean)")
            if fading:
                env10 = envelope(rows, ch, "p10", axis)
                if env10:
                    ax.plot([e[0] for e in env10], [e[1] for e in env10], ":", color="black", lw=1.6,
                            label="digital, best MCS (10th pct)")
        if ref is not None:
            ax.axhline(ref, color="gray", ls=":", lw=1, label=f"fp32 ({ref:.4f})")
        if axis == "noise_std":
            ax.set_xscale("log")
            ax.set_xlabel("noise std on the scaled weights")
        else:
            ax.set_xlabel("channel SNR Es/N0 (dB)")
            _wnr_axis(ax, rows, ch, wnr_scheme)
        ax.set_ylabel("accuracy" if result.header.get("task") != "custom" else "metric")
        ax.set_title(f"{ch}" if not title else f"{title}: {ch}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02 if ref is None or ref <= 1 else None)
        ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _wnr_axis(ax, rows, channel, wnr_scheme):
    cands = [wnr_scheme] if wnr_scheme else []
    cands += ["ml", "mmse"] + sorted({r["scheme"] for r in rows if r["kind"] == "analog"})
    for s in cands:
        sel = sorted((r["x"], r["wnr_db"]) for r in rows if r["channel"] == channel and r["scheme"] == s
                     and r["design_snr_db"] is None and r.get("wnr_db") is not None)
        if len(sel) >= 2:
            xs = np.array([a for a, _ in sel])
            ws = np.array([b for _, b in sel])
            if np.all(np.diff(ws) > 0):
                sec = ax.secondary_xaxis("top", functions=(lambda v: _lin(v, xs, ws),
                                                           lambda v: _lin(v, ws, xs)))
                sec.set_xlabel(f"WNR of {s} (dB)", fontsize=8)
                sec.tick_params(labelsize=7)
                return


def _lin(v, xs, ys):
    """Linear map fitted through (xs, ys) (the SNR -> WNR relation of a linear scheme is a shift),
    extrapolated so that matplotlib can place ticks anywhere."""
    a, b = np.polyfit(xs, ys, 1)
    return a * np.asarray(v, dtype=np.float64) + b
