"""``nncodec transmit``: send a .nnc file through a simulated digital link.

A click command object; the main CLI registers it with ``main.add_command(transmit)``.
Exit codes as for the other commands: 0 ok (every tensor intact, or damaged ones replaced as
asked), 1 error, 2 usage, 3 integrity failure (the input is not a valid .nnc, or tensors / the
container header were lost and ``--on-damage fail`` was given or nothing could be recovered).
"""
from __future__ import annotations

import json
import os
import sys

import click

from ..atomic import atomic_write
from ..errors import FormatError, NNCodecError
from .channels import CHANNELS
from .ldpc_tables import BLOCK_LENGTHS
from .transmit import MCS_NAMES, ON_DAMAGE, transmit_nnc

EXIT_ERROR = 1
EXIT_INTEGRITY = 3


def _fail(message: str, code: int) -> None:
    click.echo(f"nncodec: {'integrity error' if code == EXIT_INTEGRITY else 'error'}: {message}", err=True)
    sys.exit(code)


@click.command("transmit")
@click.argument("nnc", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the received .nnc.")
@click.option("--channel", type=click.Choice(CHANNELS), default="awgn", show_default=True,
              help="awgn; rayleigh: a new fading coefficient per symbol; rayleigh-block: one per codeword "
                   "(perfect channel knowledge at the receiver).")
@click.option("--snr", "snr_db", type=float, required=True,
              help="Es/N0 in dB (unit average symbol energy; average over the fading for Rayleigh).")
@click.option("--mcs", type=click.Choice(MCS_NAMES, case_sensitive=False), default="qpsk-1/2",
              show_default=True, help="Modulation and 802.11n LDPC code rate.")
@click.option("--block-length", type=click.Choice([str(n) for n in BLOCK_LENGTHS]), default="1944",
              show_default=True, help="LDPC codeword length in bits.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the channel noise and fading.")
@click.option("--on-damage", type=click.Choice(ON_DAMAGE), default="fail", show_default=True,
              help="Damaged tensors: fail (write nothing, exit 3), or replace them by zeros or by the mean "
                   "of their intact neighbours of the same kind.")
@click.option("--max-iter", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="LDPC decoder iterations at most.")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No summary line.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def transmit(nnc, output, channel, snr_db, mcs, block_length, seed, on_damage, max_iter, force, quiet,
             as_json):
    """Send NNC through a simulated digital link (802.11n LDPC, Gray QAM, AWGN or Rayleigh
    fading) and write what the receiver gets to -o.

    The file is cut into frames with a CRC-32 each, one LDPC codeword per frame. Tensors whose
    bytes arrive intact are kept exactly; the summary reports the frame and bit error rates and
    which tensors were hit.

    \b
    Examples:
      nncodec transmit model.nnc --snr 3 --mcs qpsk-1/2 -o rx.nnc
      nncodec transmit model.nnc --channel rayleigh --snr 12 --mcs 16qam-1/2 -o rx.nnc --on-damage mean
      nncodec transmit model.nnc --snr 1.2 --seed 7 -o rx.nnc --on-damage zeros --json
    """
    try:
        if os.path.exists(output) and not force:
            _fail(f"{output} exists; use -f/--force to overwrite it", EXIT_ERROR)
        with open(nnc, "rb") as fh:
            data = fh.read()
        report = transmit_nnc(data, mcs=mcs.lower(), snr_db=snr_db, channel=channel,
                              block_length=int(block_length), seed=seed, on_damage=on_damage,
                              max_iter=max_iter)
    except FormatError as exc:
        _fail(f"{nnc}: {exc}", EXIT_INTEGRITY)
    except (NNCodecError, OSError, ValueError) as exc:
        _fail(str(exc), EXIT_ERROR)
    if report.container is not None:
        try:
            atomic_write(output, lambda fh: fh.write(report.container), overwrite=True)
        except OSError as exc:
            _fail(str(exc), EXIT_ERROR)
    s = report.summary()
    link = s["link"]
    if as_json:
        s["output"] = output if report.container is not None else None
        click.echo(json.dumps(s, indent=2))
    elif not quiet:
        replaced = [t["name"] for t in report.tensors if t["status"] == "replaced"]
        line = (f"{nnc} -> {link['mcs']} {channel} {snr_db:g} dB: {link['frames']} frames, "
                f"{link['frames_lost']} lost (FER {link['fer']:.3g}), BER {link['coded_ber']:.3g} before / "
                f"{link['info_ber']:.3g} after decoding; {s['tensors_hit']} of {s['tensors_total']} "
                f"tensors hit")
        if replaced:
            line += f", {len(replaced)} replaced ({on_damage})"
        if report.container is not None:
            line += f" -> {output}"
        click.echo(line, err=True)
    if report.container is None:
        _fail(report.error or "transmission failed", EXIT_INTEGRITY)
