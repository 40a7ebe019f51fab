"""``nncodec analyze``: storage, operations and energy of a model in Dense, CSR and WS layouts.

The command object is ``analyze``; the main CLI registers it with
``main.add_command(analyze)``.
"""
from __future__ import annotations

import json
import sys
from typing import Dict, List, Tuple

import click
import numpy as np

from ..errors import FormatError, NNCodecError
from .energy import LAYOUTS, LayerCounts, model_report
from .layouts import Dequant, WS
from .quantize import QuantizedMatrix, quantize_matrix

BUILTIN = "builtin:"
# output positions (H*W) of the conv layers of the built-in tasks' models (nncodec.tasks)
_BUILTIN_POSITIONS = {"digits": {"0.weight": 64, "3.weight": 16},
                      "fashion": {"0.weight": 784, "3.weight": 196},
                      "fashion-lenet300": {}}


class _Failure(Exception):
    pass


def _from_nnc(path: str) -> Dict[str, QuantizedMatrix]:
    """The int32 levels and steps of every uniformly quantized tensor with ndim >= 2."""
    from ..api import level_stage
    from ..container import Reader
    from ..entropy import backend_by_id

    out = {}
    with Reader(path) as r:
        for info in r.records():
            stage = level_stage(info.chain)
            if len(info.shape) < 2 or stage.get("id") != "uniform":
                continue
            levels = backend_by_id(info.backend).decode(r.read_payload(info.name), info.numel)
            shape = tuple(int(s) for s in info.shape)
            out[info.name] = QuantizedMatrix(levels.reshape(shape[0], -1).astype(np.int32),
                                             Dequant(step=float(stage["step"])), shape)
    return out


def _weights_of_model(path: str) -> Dict[str, np.ndarray]:
    if path.startswith(BUILTIN):
        from ..tasks import get_task

        sd = {k: np.asarray(v) for k, v in get_task(path[len(BUILTIN):]).state_dict().items()}
    else:
        from .. import bf16
        from ..io import read_model

        tensors, dtypes, _ = read_model(path)
        sd = {k: (bf16.to_float32(v) if dtypes.get(k) == "bfloat16" else v) for k, v in tensors.items()}
    return {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()
            if np.asarray(v).ndim >= 2 and np.asarray(v).dtype.kind == "f"}


def _positions(items: Tuple[str, ...]) -> Dict[str, int]:
    out = {}
    for it in items:
        name, sep, val = it.rpartition("=")
        if not sep or not name or not val.isdigit() or int(val) < 1:
            raise click.BadParameter(f"expected NAME=P with P >= 1, got {it!r}", param_hint="--positions")
        out[name] = int(val)
    return out


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024.0
    return f"{b:.1f} GiB"


def _fmt_num(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _fmt_energy(pj: float) -> str:
    for unit, div in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= div:
            return f"{pj / div:.3g} {unit}"
    return f"{pj:.3g} pJ"


def render_table(rep: dict) -> str:
    """Plain-text per-layer table of a ``model_report``."""
    lines = [f"arithmetic: {rep['arith']} ({rep['energy_pj_per_op']['mult']} pJ/mult, "
             f"{rep['energy_pj_per_op']['add']} pJ/add); SRAM 5 pJ, DRAM 640 pJ per 32 bits"]
    head = (f"{'layer':<28} {'shape':>12} {'P':>5} {'nnz%':>6} {'nnz/grp':>7} "
            f"{'dense':>10} {'csr':>10} {'ws':>10}  {'ops d/c/w':>22}  {'energy d/c/w':>30}")
    lines += [head, "-" * len(head)]

    def row(name, shape, P, nnz_pct, per_group, parts):
        sizes = " ".join(f"{_fmt_bytes(parts[l]['bits'] / 8):>10}" for l in LAYOUTS)
        ops = "/".join(_fmt_num(parts[l]["ops"]) for l in LAYOUTS)
        en = "/".join(_fmt_energy(parts[l]["pj"]) for l in LAYOUTS)
        return (f"{name[:28]:<28} {shape:>12} {P:>5} {nnz_pct:>6} {per_group:>7} {sizes}  "
                f"{ops:>22}  {en:>30}")

    for r in rep["layers"]:
        c = r["counts"]
        parts = {l: {"bits": r[l]["storage"]["bits"], "ops": r[l]["ops"]["total"],
                     "pj": r[l]["energy_pj"]["total"]} for l in LAYOUTS}
        dens = 100.0 * c["nnz"] / max(1, c["rows"] * c["cols"])
        pg = f"{c['nnz'] / c['groups']:.2f}" if c["groups"] else "-"
        lines.append(row(r["name"], f"{c['rows']}x{c['cols']}", str(c["positions"]),
                         f"{dens:.1f}", pg, parts))
    t = rep["total"]
    parts = {l: {"bits": t[l]["storage_bits"], "ops": t[l]["ops"]["total"],
                 "pj": t[l]["energy_pj"]["total"]} for l in LAYOUTS}
    lines.append("-" * len(head))
    lines.append(row("total", f"{rep['weights']}", "", f"{100.0 * rep['nnz'] / max(1, rep['weights']):.1f}",
                     "", parts))
    lines.append(f"float32 dense: {_fmt_bytes(rep['dense_float_bytes'])}; arithmetic-only energy "
                 + ", ".join(f"{l} {_fmt_energy(t[l]['energy_pj']['arith'])}" for l in LAYOUTS))
    return "\n".join(lines)


@click.command("analyze", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", metavar="MODEL|FILE.nnc")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--bits", type=click.Choice(["8", "16", "32"]), default="32", show_default=True,
              help="Arithmetic precision: 8-bit integer, 16-bit float or 32-bit float energies.")
@click.option("--target-snr", type=float, default=None,
              help="Models: quantize each weight tensor to this weight SNR in dB (default 30).")
@click.option("--step", type=float, default=None, help="Models: one quantization step for every weight tensor.")
@click.option("--codebook", "codebook_size", type=int, default=None,
              help="Models: k-means codebook of this many values per tensor instead of a uniform step.")
@click.option("--prune", type=float, default=0.0, show_default=True,
              help="Models: fraction of each weight tensor zeroed by magnitude before quantizing.")
@click.option("--positions", multiple=True, metavar="NAME=P",
              help="Output positions (H*W) of a conv layer, repeatable; default 1 (known for the builtin: models).")
def analyze(source, as_json, bits, target_snr, step, codebook_size, prune, positions):
    """Storage, operations and energy of each weight matrix as Dense, CSR and WS.

    MODEL is a .pt / .safetensors / .npz state_dict (quantized here: magnitude
    pruning with --prune, then --target-snr / --step / --codebook), the name
    builtin:digits / builtin:fashion / builtin:fashion-lenet300 (the built-in
    tasks' trained models, nncodec.tasks), or a .nnc file (its levels as stored).
    Tensors with ndim >= 2 are analyzed as (out, in*kh*kw) matrices.

    \b
    Examples:
      nncodec analyze model.nnc
      nncodec analyze builtin:digits --prune 0.9 --target-snr 30
      nncodec analyze builtin:fashion --prune 0.8 --json
      nncodec analyze model.safetensors --prune 0.8 --codebook 16 --bits 8 --json
      nncodec analyze model.pt --positions features.0.weight=50176
    """
    try:
        pos = _positions(positions)
        if source.lower().endswith(".nnc"):
            if any(v is not None for v in (target_snr, step, codebook_size)) or prune:
                raise _Failure(".nnc files are analyzed as stored; quantization options apply to models")
            mats = _from_nnc(source)
        else:
            if sum(v is not None for v in (target_snr, step, codebook_size)) > 1:
                raise _Failure("give at most one of --target-snr, --step and --codebook")
            if not 0.0 <= prune <= 1.0:
                raise _Failure("--prune must lie in [0, 1]")
            if target_snr is None and step is None and codebook_size is None:
                target_snr = 30.0
            mats = {k: quantize_matrix(w, step=step, target_snr=target_snr,
                                       codebook_size=codebook_size, prune=prune)
                    for k, w in _weights_of_model(source).items()}
            if source.startswith(BUILTIN):
                pos = {**_BUILTIN_POSITIONS.get(source[len(BUILTIN):], {}), **pos}
        if not mats:
            raise _Failure(f"{source}: no quantized weight tensor with 2 or more dimensions")
        unknown = sorted(set(pos) - set(mats))
        if unknown:
            raise _Failure(f"--positions names unknown tensors: {', '.join(unknown)}")
        layers: List[LayerCounts] = [
            LayerCounts.from_layout(name, WS.from_dense(m.levels, m.dequant), pos.get(name, 1))
            for name, m in mats.items()]
        rep = model_report(layers, bits=int(bits))
        rep["source"] = source
    except _Failure as exc:
        click.echo(f"nncodec: error: {exc}", err=True)
        sys.exit(1)
    except (NNCodecError, OSError, ValueError, TypeError) as exc:
        integrity = isinstance(exc, FormatError)
        click.echo(f"nncodec: {'integrity ' if integrity else ''}error: {exc}", err=True)
        sys.exit(3 if integrity else 1)
    if as_json:
        click.echo(json.dumps(rep, indent=1))
    else:
        click.echo(render_table(rep))
