"""``nncodec sweep``: metric against SNR for analog and digital schemes on a built-in task.

A click command object; the main CLI registers it with ``main.add_command(sweep)``.
Exit codes: 0 ok, 1 error (e.g. the results file belongs to another sweep), 2 usage.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import click

from ..errors import NNCodecError
from ..tasks import TASKS

EXIT_ERROR = 1
DEFAULT_SCHEMES = "ml,mmse,mmse_pb,digital:qpsk-1/2,digital:16qam-1/2,digital:64qam-2/3"


def parse_values(text: str, what: str = "--snr") -> list:
    """'0:20:2,25' -> [0, 2, ..., 20, 25]: comma-separated numbers and inclusive START:STOP:STEP
    ranges (STEP defaults to 1)."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if ":" in part:
                bits = [float(b) for b in part.split(":")]
                if len(bits) not in (2, 3):
                    raise ValueError
                start, stop = bits[0], bits[1]
                step = bits[2] if len(bits) == 3 else 1.0
                if not (step > 0) or stop < start:
                    raise ValueError
                n = int(math.floor((stop - start) / step + 1e-9))
                out += [round(start + i * step, 9) for i in range(n + 1)]
            else:
                out.append(float(part))
        except ValueError:
            raise click.BadParameter(f"{part!r}: give numbers or START:STOP[:STEP] ranges with "
                                     "STOP >= START and STEP > 0, separated by commas",
                                     param_hint=what) from None
    if not out or any(not math.isfinite(v) for v in out):
        raise click.BadParameter("give at least one finite value", param_hint=what)
    return out


class _Progress:
    """Progress on stderr: a bar on a terminal, otherwise a line every 30 seconds."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.first_done = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        now = time.perf_counter() - self.t0
        if self.first_done is None:
            self.first_done = done
        rate_done = done - self.first_done
        eta = (now / rate_done * (total - done)) if rate_done > 0 else None
        eta_s = f", ~{eta:.0f} s left" if eta is not None else ""
        if self.tty:
            width = 30
            fill = int(width * done / max(1, total))
            sys.stderr.write(f"\rsweep [{'#' * fill}{'-' * (width - fill)}] {done}/{total} "
                             f"{label[:40]:<40}{eta_s}   ")
            if done >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif now - self.last >= 30 or done >= total:
            self.last = now
            sys.stderr.write(f"sweep: {done}/{total} points ({label}), {now:.0f} s{eta_s}\n")
            sys.stderr.flush()


def _table(rows, axis: str) -> str:
    """Mean metric per scheme (rows) and x (columns), one block per channel and design SNR."""
    lines = []
    groups = {}
    for r in rows:
        if r["axis"] == axis:
            groups.setdefault((r["channel"], r["design_snr_db"]), []).append(r)
    for (ch, design), rs in groups.items():
        xs = sorted({r["x"] for r in rs})
        schemes = list(dict.fromkeys(r["scheme"] for r in rs))
        head = f"{ch}" + (f", designed for {design:g} dB" if design is not None else "")
        lines.append(f"{head}: mean metric over draws ({'SNR dB' if axis == 'snr_db' else 'noise std'} across)")
        w = max(len(s) for s in schemes)
        lines.append(" " * (w + 2) + " ".join(f"{x:>7g}" for x in xs))
        for s in schemes:
            by_x = {r["x"]: r["mean"] for r in rs if r["scheme"] == s}
            cells = [("   -   " if by_x.get(x) is None else f"{by_x[x]:7.4f}") for x in xs]
            lines.append(f"  {s:<{w}} " + " ".join(cells))
        wnr = [s for s in schemes if any(r["scheme"] == s and r.get("wnr_db") is not None for r in rs)]
        if wnr:
            lines.append("  WNR in dB (weight variance / noise power in the weight domain):")
            for s in wnr:
                by_x = {r["x"]: r.get("wnr_db") for r in rs if r["scheme"] == s}
                cells = [("   -   " if by_x.get(x) is None else f"{by_x[x]:7.2f}") for x in xs]
                lines.append(f"  {s:<{w}} " + " ".join(cells))
    return "\n".join(lines)


@click.command("sweep")
@click.option("--task", type=click.Choice(list(TASKS)), required=True,
              help="Built-in model and data: its trained weights are swept, accuracy on the test "
                   "split is reported, receivers are tuned on the validation split.")
@click.option("-s", "--schemes", default=DEFAULT_SCHEMES, show_default=True,
              help="Comma-separated: analog schemes of nncodec.analog (ml, mmse, mmse_pb, rep2-ml, "
                   "sk2-mmse, scaled, sign, ...) and digital:MCS (digital:qpsk-1/2, digital:64qam-5/6, ...).")
@click.option("--snr", "snr_text", default=None,
              help="Es/N0 values in dB: numbers and inclusive START:STOP[:STEP] ranges, comma-separated "
                   "(default 0:20:2).")
@click.option("--noise-std", "noise_text", default=None,
              help="Instead of --snr: noise standard deviations on the scaled weights (analog storage "
                   "model, analog schemes, channel awgn), e.g. 0.001,0.01,0.1,1.")
@click.option("-c", "--channels", default="awgn", show_default=True,
              help="Comma-separated: awgn, rayleigh (fading per symbol), rayleigh-block.")
@click.option("-n", "--draws", type=click.IntRange(1, None), default=10, show_default=True,
              help="Channel draws per point.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Base seed; each point's channel seed derives from it, the channel, the SNR and the draw.")
@click.option("--design-snr", type=float, default=None,
              help="SNR (dB) the analog schemes are designed for, used at every --snr (mismatch); "
                   "default: each point's own SNR.")
@click.option("--budget-rho", type=float, default=1.0, show_default=True,
              help="Channel-use budget of the digital schemes: that of an analog scheme at this many "
                   "real channel dimensions per weight (1: two weights per complex channel use).")
@click.option("--block-length", type=click.Choice(["648", "1296", "1944"]), default="1944",
              show_default=True, help="LDPC codeword length of the digital schemes.")
@click.option("--on-damage", type=click.Choice(["zeros", "mean"]), default="zeros", show_default=True,
              help="Digital schemes: replace tensors damaged in transmission by zeros or the mean of "
                   "their intact neighbours.")
@click.option("--no-tune", is_flag=True, help="Use the receivers' default parameters (no tuning of mmse_pb).")
@click.option("--tune-draws", type=click.IntRange(1, None), default=2, show_default=True,
              help="Channel draws per candidate when tuning mmse_pb on the validation split.")
@click.option("-j", "--jobs", type=click.IntRange(1, None), default=None,
              help="Worker processes, one torch thread each (default: the number of CPUs). Results do "
                   "not depend on it.")
@click.option("--threads", type=click.IntRange(1, None), default=1, show_default=True,
              help="Torch threads with --jobs 1.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Results file (JSON Lines). If it exists, finished points are skipped (resume).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="PNG plot of the results (default: the output path with .png).")
@click.option("--no-plot", is_flag=True, help="Write no plot.")
@click.option("-f", "--force", is_flag=True, help="Start over: discard the results already in --output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, no table.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary rows as JSON on stdout.")
def sweep(task, schemes, snr_text, noise_text, channels, draws, seed, design_snr, budget_rho, block_length,
          on_damage, no_tune, tune_draws, jobs, threads, output, plot_path, no_plot, force, quiet, as_json):
    """Send a model through CHANNELS x SNRs x SCHEMES x DRAWS and measure its accuracy each time.

    \b
    Analog schemes send the weights themselves (nncodec.analog); digital:MCS compresses the
    model with nncodec to fit the same number of channel uses (--budget-rho) and sends the
    .nnc through 802.11n LDPC + QAM (nncodec.channel). Results are appended to --output as
    they come (JSON Lines): an interrupted sweep resumes where it stopped, and a rerun with
    more SNRs, schemes or draws computes only the new points. The plot shows the mean and the
    10th-90th percentile band over draws (and the 10th percentile on Rayleigh channels), the
    best-MCS digital envelope, and the WNR of the ml scheme on a second axis.

    \b
    Examples:
      nncodec sweep --task digits --snr 0:20:2 -o digits.jsonl
      nncodec sweep --task fashion -s ml,mmse,mmse_pb,digital:qpsk-1/2,digital:16qam-3/4 \\
          -c awgn,rayleigh --snr=-4:24:2 -n 10 -o fashion.jsonl --plot fashion.png
      nncodec sweep --task fashion -s rep2-mmse,sk2-mmse --design-snr 10 --snr 0:20:2 -o mismatch.jsonl
      nncodec sweep --task digits -s scaled,sign,sign+adaptive-map,sign+adaptive-map+adaptive-red \\
          --noise-std 0.001,0.005,0.01,0.05,0.1,0.5,1 -o storage.jsonl
    """
    from . import SweepError, parse_schemes, run_sweep

    if snr_text is not None and noise_text is not None:
        raise click.UsageError("give --snr or --noise-std, not both")
    snrs = noises = None
    if noise_text is not None:
        noises = parse_values(noise_text, "--noise-std")
    else:
        snrs = parse_values(snr_text if snr_text is not None else "0:20:2", "--snr")
    chans = [c.strip() for c in channels.split(",") if c.strip()]
    from .run import CHANNELS
    for c in chans:
        if c not in CHANNELS:
            raise click.BadParameter(f"unknown channel {c!r}; channels: {', '.join(CHANNELS)}",
                                     param_hint="--channels")
    try:
        specs = parse_schemes([s for s in schemes.split(",") if s.strip()])
    except SweepError as exc:
        raise click.BadParameter(str(exc), param_hint="--schemes") from None
    if noises is not None and any(s.digital for s in specs):
        raise click.UsageError("--noise-std is for analog schemes; digital ones need --snr")
    if noises is not None and chans != ["awgn"]:
        raise click.UsageError("--noise-std (analog storage model) takes --channels awgn only")
    if design_snr is not None and noises is not None:
        raise click.UsageError("--design-snr applies to --snr sweeps")
    if not (budget_rho > 0 and math.isfinite(budget_rho)):
        raise click.BadParameter("must be a positive number", param_hint="--budget-rho")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        raise click.BadParameter(f"directory {os.path.dirname(os.path.abspath(output))} does not exist",
                                 param_hint="--output")
    if plot_path is None and not no_plot:
        plot_path = os.path.splitext(output)[0] + ".png"

    try:
        res = run_sweep(task=task, schemes=[s.name for s in specs], snrs=snrs, noise_stds=noises,
                        channels=chans, draws=draws, seed=seed, output=output, force=force,
                        design_snr_db=design_snr, budget_rho=budget_rho, block_length=int(block_length),
                        on_damage=on_damage, tune=not no_tune, tune_draws=tune_draws,
                        threads=threads, jobs=jobs if jobs is not None else (os.cpu_count() or 1),
                        progress=_Progress(not quiet))
        if plot_path:
            res.plot(plot_path, title=task)
    except (NNCodecError, OSError, ValueError, ImportError) as exc:
        click.echo(f"nncodec: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    rows = res.summary()
    st = res.stats
    if as_json:
        click.echo(json.dumps({"stats": st, "rows": rows}, indent=2))
    elif not quiet:
        axis = "noise_std" if noises is not None else "snr_db"
        click.echo(_table(rows, axis))
    if not quiet:
        click.echo(f"{output}: {st['points_new']} points computed, {st['points_skipped']} already there; "
                   f"{st['evaluations']} evaluations ({st['cached_evaluations']} reused), "
                   f"{st['seconds']:.1f} s" + (f"; plot {plot_path}" if plot_path else ""), err=True)
