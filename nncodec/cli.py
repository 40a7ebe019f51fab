"""The ``nncodec`` command line.

Exit codes: 0 ok, 1 error, 2 usage, 3 integrity failure (corrupt or truncated
.nnc, checksum mismatch). Expected errors print one line, never a traceback.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

import click

from . import __version__
from .api import NNCFile, save_file
from .entropy import available_backends
from .errors import FormatError, NNCodecError
from .pipeline import DEFAULT_SMALL_SNR, DEFAULT_TARGET_SNR, Settings
from .quantize import METHODS

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
MODEL_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")


class _Failure(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def _fail_on_expected_errors(fn):
    """Turn the errors a user can cause into a one-line message and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # the reader went away (`nncodec info x.nnc | head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        except _Failure as exc:
            click.echo(f"nncodec: error: {exc}", err=True)
            sys.exit(exc.code)
        except FormatError as exc:
            click.echo(f"nncodec: integrity error: {exc}", err=True)
            sys.exit(EXIT_INTEGRITY)
        except (NNCodecError, OSError, ValueError, TypeError) as exc:
            click.echo(f"nncodec: error: {exc}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper


def _check_output(path: str, force: bool) -> None:
    if os.path.exists(path) and not force:
        raise _Failure(f"{path} exists; use -f/--force to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _Failure(f"directory {parent} does not exist")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GiB"


class _Progress:
    """A progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self.bar = None

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr,
                                         show_pos=True, item_show_func=lambda x: x)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos, name or None)
        if done >= total:
            self.bar.__exit__(None, None, None)


def _threads_option(f):
    return click.option("-T", "--threads", type=click.IntRange(min=1), default=None, metavar="N",
                        help="Tensors coded at once (default: the CPUs available, at most 8; env "
                             "NNCODEC_THREADS). The output does not depend on it.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nncodec")
def main():
    """Compress neural-network weights into a checksummed .nnc bitstream, and back.

    \b
    Examples:
      nncodec encode model.pt -o model.nnc              # weights at 30 dB weight SNR
      nncodec encode model.safetensors -o m.nnc --qp -38
      nncodec info model.nnc
      nncodec verify model.nnc
      nncodec decode model.nnc -o restored.safetensors
      nncodec analyze model.nnc                          # dense vs CSR vs WS: size, ops, energy
      nncodec transmit model.nnc --channel awgn --snr 6 --mcs qpsk-1/2 -o received.nnc
      nncodec sweep --task digits -s ml,mmse,digital:qpsk-1/2 --snr 0:20:2 -o sweep.jsonl

    Run `nncodec COMMAND --help` for the options of each command.
    """


_TARGET_KEY = "nncodec.target"


def _target_options(fn):
    """The options of target modes and sensitivity-weighted steps (nncodec.target, .sensitivity)."""
    from .tasks import TASKS

    opts = [
        click.option("--target-size", type=int, default=None, metavar="BYTES",
                     help="Search the method's main setting (qp; bits for fixed; k for kmeans/pq/rq) "
                          "for the largest file of at most BYTES."),
        click.option("--target-bpw", type=float, default=None, metavar="B",
                     help="Same, for at most B bits per value (whole file over all values)."),
        click.option("--max-accuracy-drop", type=float, default=None, metavar="POINTS",
                     help="Search the smallest file whose accuracy on the --task's validation split is "
                          "within POINTS percentage points of the uncompressed model's (needs --task)."),
        click.option("--task", type=click.Choice(sorted(TASKS)), default=None,
                     help="Built-in task MODEL belongs to: accuracy for --max-accuracy-drop (tuned on "
                          "its validation split, test accuracy reported), training data for "
                          "--sensitivity fisher."),
        click.option("--sensitivity", type=click.Choice(["none", "fisher"]), default="none", show_default=True,
                     help="fisher: per-tensor steps weighted by a diagonal Fisher estimate from the "
                          "--task's training split, at the size of the one model-wide step."),
        click.option("--allocation", type=click.Choice(["rd", "closed-form"]), default="rd", show_default=True,
                     help="How --sensitivity spreads the steps: measured sizes and errors (rd) or the "
                          "high-rate formula."),
        click.option("--fisher-samples", type=int, default=256, show_default=True,
                     help="Training examples of the Fisher estimate."),
    ]
    names = ("target_size", "target_bpw", "max_accuracy_drop", "task", "sensitivity", "allocation", "fisher_samples")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # these options reach the command through the click context, not its signature
        target = {k: kwargs.pop(k) for k in names}
        _check_target_usage(target, kwargs["method"], (kwargs["target_snr"], kwargs["qp"], kwargs["step"]),
                            kwargs["il"], kwargs["fl"], kwargs["snr_scope"])
        click.get_current_context().meta[_TARGET_KEY] = target
        return fn(*args, **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output .nnc file.")
@click.option("--target-snr", type=float, default=None,
              help=f"Weight SNR in dB the weights are quantized to (default {DEFAULT_TARGET_SNR:g}): "
                   "over all weight tensors with one step, or per tensor with --snr-scope tensor.")
@click.option("--snr-scope", type=click.Choice(["model", "tensor"]), default="model", show_default=True,
              help="model: one step for all weight tensors reaching --target-snr over the model; "
                   "tensor: each weight tensor reaches --target-snr with its own step.")
@click.option("--qp", type=float, default=None, help="Quantization parameter: step = 2**(qp/4) for every weight tensor.")
@click.option("--step", type=float, default=None, help="Quantization step for every weight tensor.")
@click.option("--small-snr", type=float, default=DEFAULT_SMALL_SNR, show_default=True,
              help="Weight SNR in dB for 1-D tensors (biases, norm scales).")
@click.option("--backend", type=click.Choice(available_backends()), default="cabac", show_default=True,
              help="Entropy coder.")
@click.option("--lossless", is_flag=True, help="Store float tensors exactly (no quantization).")
@click.option("--method", type=click.Choice(METHODS), default="uniform", show_default=True,
              help="Quantizer of weight tensors (two or more dimensions).")
@click.option("--bits", type=int, default=None,
              help="fixed: word length IL+FL (default 8; IL per tensor, just covering max|w|).")
@click.option("--il", type=int, default=None, help="fixed: integer bits IL.")
@click.option("--fl", type=int, default=None, help="fixed: fractional bits FL (resolution 2^-FL).")
@click.option("--rounding", type=click.Choice(["nearest", "stochastic"]), default="nearest", show_default=True,
              help="fixed: rounding mode.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of stochastic rounding and k-means++.")
@click.option("--k", "k", type=int, default=16, show_default=True, help="kmeans/pq/rq: centres per codebook.")
@click.option("--kmeans-init", type=click.Choice(["linear", "kmeans++"]), default="linear", show_default=True,
              help="k-means initialisation.")
@click.option("--pq-dim", type=int, default=4, show_default=True, help="pq/rq: sub-vector length.")
@click.option("--rq-stages", type=int, default=2, show_default=True, help="rq: residual stages.")
@click.option("--ternary-threshold", type=float, default=0.7, show_default=True,
              help="ternary: zero |w| <= this * mean|w|.")
@click.option("--prune", type=float, default=None, metavar="AMOUNT",
              help="Zero this fraction of each weight tensor's smallest weights before quantizing.")
@click.option("--prune-threshold", type=float, default=None, help="Or zero every |w| <= this.")
@click.option("--prune-global", is_flag=True, help="One magnitude threshold for the whole model.")
@click.option("--prune-structured", is_flag=True, help="Zero whole rows (output channels) of smallest RMS.")
@click.option("--rdoq", is_flag=True,
              help="Rate-distortion optimized levels: each weight level minimizes distortion + lambda x "
                   "bits under a model of the CABAC coder (decodes like plain uniform).")
@click.option("--dq", is_flag=True,
              help="Dependent (trellis-coded) quantization: two interleaved quantizers and a 4-state "
                   "machine, levels found by a Viterbi search; with --rdoq the search counts bits too.")
@click.option("--lambda", "rd_lambda", type=float, default=None, metavar="L",
              help="Rate weight of --rdoq / --dq in step^2 per bit (implies --rdoq; default with --rdoq: "
                   "0.12; 0: distortion only).")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No summary line, no progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_threads_option
@_target_options
@_fail_on_expected_errors
def encode(model, output, target_snr, snr_scope, qp, step, small_snr, backend, lossless, method, bits, il, fl, rounding,
           seed, k, kmeans_init, pq_dim, rq_stages, ternary_threshold, prune, prune_threshold, prune_global,
           prune_structured, rdoq, dq, rd_lambda, force, quiet, as_json, threads):
    """Compress MODEL (.pt state_dict, .safetensors or .npz) into a .nnc file.

    \b
    Weight tensors (two or more dimensions) are quantized uniformly with one step
    reaching --target-snr over the model (default 30 dB), or from --qp or --step,
    or by another --method; 1-D
    tensors get their own finer uniform step from --small-snr; integer tensors are
    stored losslessly. --prune zeroes weights before quantization. The file
    records every choice: decoding needs no options. --rdoq and --dq change how the
    levels of weight tensors are chosen (the step search of --target-snr runs them
    in its loop, so the SNR is still reached).

    \b
    Examples:
      nncodec encode model.pt -o model.nnc
      nncodec encode model.pt -o model.nnc --target-snr 35 --backend constriction
      nncodec encode model.pt -o model.nnc --target-snr 30 --snr-scope tensor
      nncodec encode model.npz -o model.nnc --qp -38 --force
      nncodec encode model.pt -o m.nnc --method fixed --bits 8          # <IL,FL>, IL per tensor
      nncodec encode model.pt -o m.nnc --method fixed --il 2 --fl 6 --rounding stochastic
      nncodec encode model.pt -o m.nnc --method kmeans --k 16           # codebook per tensor
      nncodec encode model.pt -o m.nnc --method pq --k 256 --pq-dim 4   # product quantization
      nncodec encode model.pt -o m.nnc --method rq --k 16 --rq-stages 3 # residual codebooks
      nncodec encode model.pt -o m.nnc --method ternary
      nncodec encode model.pt -o m.nnc --target-size 20000              # largest file <= 20,000 B
      nncodec encode model.pt -o m.nnc --target-bpw 2 --method kmeans   # k for <= 2 bits/value
      nncodec encode fashion.pt -o m.nnc --task fashion --max-accuracy-drop 0.5
      nncodec encode fashion.pt -o m.nnc --task fashion --sensitivity fisher --target-snr 14
      nncodec encode model.pt -o m.nnc --prune 0.5 --prune-global --method kmeans --k 16
      nncodec encode model.pt -o m.nnc --prune 0.25 --prune-structured  # whole rows
      nncodec encode model.pt -o m.nnc --rdoq                          # RD-optimized levels
      nncodec encode model.pt -o m.nnc --dq --rdoq --target-snr 30     # trellis-coded quantization
      nncodec encode model.pt -o m.nnc --dq --lambda 0.2 --qp -28
    """
    from .io import read_model

    if sum(x is not None for x in (target_snr, qp, step)) > 1:
        raise click.UsageError("give at most one of --target-snr, --qp and --step")
    if method != "uniform" and any(x is not None for x in (target_snr, qp, step)):
        raise click.UsageError(f"--target-snr, --qp and --step apply to --method uniform, not {method}")
    if prune is not None and prune_threshold is not None:
        raise click.UsageError("give at most one of --prune and --prune-threshold")
    if method != "uniform" and (rdoq or dq or rd_lambda is not None):
        raise click.UsageError(f"--rdoq, --dq and --lambda apply to --method uniform, not {method}")
    if lossless and (rdoq or dq or rd_lambda is not None):
        raise click.UsageError("--lossless excludes --rdoq, --dq and --lambda")
    if not os.path.exists(model):
        raise _Failure(f"{model}: no such file")
    _check_output(output, force)
    settings = Settings(step=step, qp=qp, target_snr=target_snr, snr_scope=snr_scope, small_snr=small_snr,
                        backend=backend, lossless=lossless, method=method, bits=bits, il=il, fl=fl,
                        rounding=rounding, seed=seed, k=k, kmeans_init=kmeans_init, pq_dim=pq_dim,
                        rq_stages=rq_stages, ternary_threshold=ternary_threshold, prune=prune,
                        prune_threshold=prune_threshold, prune_scope="global" if prune_global else "tensor",
                        prune_structured=prune_structured, rdoq=rdoq, dq=dq, rd_lambda=rd_lambda)
    t0 = time.perf_counter()
    tensors, dtypes, metadata = read_model(model)
    extra = _encode_targeted(tensors, dtypes, metadata, settings, output, force, quiet,
                             click.get_current_context().meta[_TARGET_KEY])
    if extra is None:
        save_file(tensors, output, dtypes=dtypes, metadata=metadata, settings=settings,
                  progress=_Progress("encoding", not quiet), overwrite=force, threads=threads)
        extra = {}
    seconds = time.perf_counter() - t0
    with NNCFile(output) as f:
        summary = _summary(f.info())
    summary.update({"input": model, "output": output, "seconds": round(seconds, 3)})
    summary.update(extra)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif not quiet:
        click.echo(f"{model} -> {output}: {_human(summary['decoded_bytes'])} -> "
                   f"{_human(summary['total_bytes'])} ({summary['ratio']:.1f}x), "
                   f"{summary['bits_per_element']:.3f} bits/weight over {summary['elements']} "
                   f"values, {seconds:.2f} s")
        if "target" in summary:
            click.echo(_target_line(summary["target"]))
        if "task" in summary:
            t = summary["task"]
            click.echo(f"  {t['name']}: validation accuracy {100 * t['val_accuracy']:.2f}% (uncompressed "
                       f"{100 * t['base_val_accuracy']:.2f}%), test {100 * t['test_accuracy']:.2f}% "
                       f"(uncompressed {100 * t['base_test_accuracy']:.2f}%)")


def _check_target_usage(target: dict, method: str, knobs, il, fl, snr_scope) -> None:
    modes = [k for k in ("target_size", "target_bpw", "max_accuracy_drop") if target.get(k) is not None]
    flag = {k: "--" + k.replace("_", "-") for k in ("target_size", "target_bpw", "max_accuracy_drop")}
    if len(modes) > 1:
        raise click.UsageError(f"give at most one of --target-size, --target-bpw and --max-accuracy-drop")
    if target.get("max_accuracy_drop") is not None and target.get("task") is None:
        raise click.UsageError("--max-accuracy-drop needs --task (the accuracy to keep)")
    if target.get("sensitivity") == "fisher" and target.get("task") is None:
        raise click.UsageError("--sensitivity fisher needs --task (its training data)")
    if target.get("fisher_samples", 1) < 1:
        raise click.UsageError("--fisher-samples must be at least 1")
    if target.get("target_size") is not None and target["target_size"] <= 0:
        raise click.UsageError("--target-size must be a positive number of bytes")
    if target.get("target_bpw") is not None and not target["target_bpw"] > 0:
        raise click.UsageError("--target-bpw must be positive")
    if target.get("max_accuracy_drop") is not None and not target["max_accuracy_drop"] >= 0:
        raise click.UsageError("--max-accuracy-drop must be >= 0 points")
    if modes:
        from .target import KNOBS

        if method not in KNOBS:
            raise click.UsageError(f"{flag[modes[0]]} searches a setting of --method {', '.join(KNOBS)}, "
                                   f"not {method}")
        if method == "uniform" and any(x is not None for x in knobs):
            raise click.UsageError(f"{flag[modes[0]]} chooses the step itself: drop --target-snr/--qp/--step")
        if method == "fixed" and (il is not None or fl is not None):
            raise click.UsageError(f"{flag[modes[0]]} chooses the word length itself: drop --il/--fl")
    if target.get("sensitivity") == "fisher":
        if method != "uniform":
            raise click.UsageError("--sensitivity fisher applies to --method uniform")
        if snr_scope != "model" and not modes and knobs[1] is None and knobs[2] is None:
            raise click.UsageError("--sensitivity fisher needs one model-wide step (--snr-scope model, "
                                   "--qp or --step)")


def _task_for(name: str, tensors: dict):
    """The built-in task, after checking that the model fits it."""
    from .tasks import get_task

    task = get_task(name)
    try:
        task.evaluate(tensors, split="val")
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _Failure(f"the model does not fit task {name!r}: {first}") from None
    return task


def _encode_targeted(tensors, dtypes, metadata, settings, output, force, quiet, target):
    """Encode with a target mode, sensitivity or a task; None when none of them is asked for."""
    modes = {k: target[k] for k in ("target_size", "target_bpw", "max_accuracy_drop") if target[k] is not None}
    if not modes and target["sensitivity"] == "none" and target["task"] is None:
        return None
    from .api import encode as _encode
    from .atomic import atomic_write

    say = (lambda line: None) if quiet else (lambda line: click.echo(f"nncodec: {line}", err=True))
    task = _task_for(target["task"], tensors) if target["task"] else None
    sensitivity = None
    if target["sensitivity"] == "fisher":
        from .sensitivity import fisher_diagonal

        say(f"estimating Fisher sensitivities from {target['fisher_samples']} training examples of "
            f"{target['task']}")
        sensitivity = fisher_diagonal(task, state_dict=tensors, samples=target["fisher_samples"])
    extra = {}
    if modes:
        from .target import encode_to_target

        kw = dict(settings=settings, dtypes=dtypes, metadata=metadata, sensitivity=sensitivity,
                  allocation=target["allocation"], progress=say, **modes)
        if task is not None:
            kw["evaluate"] = lambda sd: task.evaluate(sd, split="val")
            kw["evaluate_test"] = lambda sd: task.evaluate(sd, split="test")
        data, report = encode_to_target(tensors, **kw)
        extra["target"] = report
    else:
        data = _encode(tensors, settings=settings, dtypes=dtypes, metadata=metadata, sensitivity=sensitivity,
                       allocation=target["allocation"])
        if task is not None:
            from .api import decode as _decode

            dec = _decode(data)
            extra["task"] = {"name": task.name,
                             "base_val_accuracy": task.evaluate(tensors, split="val"),
                             "val_accuracy": task.evaluate(dec, split="val"),
                             "base_test_accuracy": task.evaluate(tensors, split="test"),
                             "test_accuracy": task.evaluate(dec, split="test")}
    atomic_write(output, lambda f: f.write(data), overwrite=force)
    return extra


def _target_line(rep: dict) -> str:
    text = f"  {rep['mode']} target: {rep['setting']} ({len(rep['trials'])} settings tried)"
    if rep["mode"] == "size":
        text += f", {rep['bytes']} of {rep['budget_bytes']} bytes"
    else:
        text += (f", validation accuracy {100 * rep['accuracy']:.2f}% (uncompressed "
                 f"{100 * rep['base_accuracy']:.2f}%, drop {rep['accuracy_drop_points']:.2f} points)")
    if "test_accuracy" in rep:
        text += (f", test accuracy {100 * rep['test_accuracy']:.2f}% (uncompressed "
                 f"{100 * rep['base_test_accuracy']:.2f}%)")
    return text


def _summary(info: dict) -> dict:
    elements = sum(_numel(t["shape"]) for t in info["tensors"])
    total = info["total_bytes"]
    return {
        "tensors": len(info["tensors"]),
        "elements": elements,
        "decoded_bytes": info["decoded_bytes"],
        "total_bytes": total,
        "ratio": info["decoded_bytes"] / total if total else 0.0,
        "bits_per_element": 8.0 * total / elements if elements else 0.0,
    }


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


@main.command()
@click.argument("nnc", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output model file: .pt, .safetensors or .npz (chosen by the suffix).")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No summary line, no progress bar.")
@_threads_option
@_fail_on_expected_errors
def decode(nnc, output, force, quiet, threads):
    """Decode NNC back into a model file, each tensor in its original dtype.

    \b
    Examples:
      nncodec decode model.nnc -o model.safetensors
      nncodec decode model.nnc -o model.pt --force
    """
    from .io import write_model

    if not output.lower().endswith(MODEL_SUFFIXES):
        raise click.UsageError(f"output must end in one of {', '.join(MODEL_SUFFIXES)}")
    _check_output(output, force)
    t0 = time.perf_counter()
    tensors, dtypes = {}, {}
    with NNCFile(nnc) as f:
        for name, value in f.iter_tensors(threads=threads, progress=_Progress("decoding", not quiet)):
            tensors[name] = value
            dtypes[name] = f.dtype(name)
        metadata = {k: v for k, v in f.metadata().items() if not k.startswith("nncodec.")}
    if output.lower().endswith((".pt", ".pth")):
        metadata = None  # a state_dict file has no place for it
    write_model(output, tensors, dtypes=dtypes, metadata=metadata, force=force)
    if not quiet:
        click.echo(f"{nnc} -> {output}: {len(tensors)} tensors, {time.perf_counter() - t0:.2f} s")


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return f"[{len(v)} values]"
    return str(v)


def _chain_text(t: dict) -> str:
    parts = []
    for stage in t["chain"]:
        params = ",".join(f"{k}={_short(v)}" for k, v in stage.items() if k != "id")
        parts.append(stage.get("id", "?") + (f"({params})" if params else ""))
    if t["backend"] != 0:
        parts.append(t["backend_name"])
    return " > ".join(parts)


@main.command()
@click.argument("nnc", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_fail_on_expected_errors
def info(nnc, as_json):
    """List the tensors of NNC: shape, dtype, coding chain, bytes, bits per weight.

    Reads the header only (like `zstd -l`); `verify` checks the payloads.

    \b
    Examples:
      nncodec info model.nnc
      nncodec info model.nnc --json | jq '.tensors[].bits_per_element'
    """
    with NNCFile(nnc) as f:
        data = f.info()
    data["summary"] = _summary(data)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"{nnc}: nnc format {data['version']}, {data['summary']['tensors']} tensors, "
               f"{data['total_bytes']} bytes (header {data['header_bytes']})")
    for k, v in sorted(data["metadata"].items()):
        click.echo(f"  {k}: {v}")
    rows = [(t["name"], "x".join(str(d) for d in t["shape"]) or "scalar", t["dtype"], _chain_text(t),
             str(t["bytes"]), f"{t['bits_per_element']:.3f}") for t in data["tensors"]]
    head = ("tensor", "shape", "dtype", "chain", "bytes", "bits/w")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    for r in [head] + rows:
        click.echo("  " + "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    s = data["summary"]
    click.echo(f"  total: {s['elements']} values, {_human(s['decoded_bytes'])} -> {_human(s['total_bytes'])} "
               f"({s['ratio']:.1f}x), {s['bits_per_element']:.3f} bits/weight")


@main.command()
@click.argument("nnc", type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; use the exit code.")
@_threads_option
@_fail_on_expected_errors
def verify(nnc, quiet, threads):
    """Check every checksum of NNC and decode every tensor (like `zstd -t`).

    Exit code 0 when intact, 3 when anything is corrupt or missing.

    \b
    Examples:
      nncodec verify model.nnc && echo intact
    """
    with NNCFile(nnc) as f:
        problems = f.verify(threads=threads)
        n = len(f)
    if problems:
        for p in problems:
            click.echo(f"nncodec: {nnc}: {p}", err=True)
        sys.exit(EXIT_INTEGRITY)
    if not quiet:
        click.echo(f"{nnc}: OK ({n} tensors)")




def _register_optional_commands() -> None:
    """Commands that live beside their subsystems."""
    from .channel.cli import transmit
    from .sparse.cli import analyze
    from .sweep.cli import sweep

    main.add_command(analyze)
    main.add_command(transmit)
    main.add_command(sweep)


_register_optional_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
