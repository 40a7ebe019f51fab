#!/usr/bin/env python3
"""Run the MPEG NNC reference software (Fraunhofer HHI NNCodec 2.1.3) on an .npz of tensors.

This file is executed ONLY by the reference virtualenv's interpreter, in its own
process (the reference package is also called ``nncodec`` and must never share an
interpreter with this project)::

    "$NNCODEC_REF_VENV/bin/python" bench/reference/run_reference.py IN.npz --qp -38 \
        [--use-dq | --no-dq] --out-bitstream OUT.nnc --out-decoded OUT.npz --out-json OUT.json

    "$NNCODEC_REF_VENV/bin/python" bench/reference/run_reference.py --self-check

It only uses numpy + the standard library besides the reference package, so it has no
dependency on this project's code.

What it does: load the dict of float32 arrays from IN.npz, call
``nncodec.nnc.compress(params, bitstream_path, qp=..., use_dq=..., ...)`` (timed), read the
bitstream back, call ``nncodec.nnc.decompress(bytearray(data))`` (timed; it returns a dict
name -> float32 ndarray with the original names and shapes), save the decoded arrays to
OUT.npz and write a JSON record (sizes, bits per weight, times, peak RSS, SNR, ...).

Reference API notes (read from nncodec 2.1.3's nnc/compression.py; see README.md):
  * compress(parameter_dict, bitstream_path="./bitstream.nnc", qp=-38, qp_density=2,
    nonweight_qp=-75, qp_per_tensor=None, use_dq=True, codebook_mode=0, scan_order=0,
    lambda_scale=0, param_opt=True, cabac_unary_length_minus1=10, opt_qp=False, ...,
    verbose=False, return_bitstream=False, ..., int_quant_bw=False, quantize_only=False)
    Values must be np.float32 or np.int32 ndarrays (int32 tensors are coded losslessly,
    "skip" method). Step size = (4 + (qp & 3)) * 2**((qp >> 2) - 2) for qp_density=2,
    i.e. ~2**(qp/4): qp -32 -> 1/256, qp -38 -> 0.00146.
  * Tensors with ndim > 1 are "weight" and use ``qp``; tensors with ndim <= 1 (biases,
    norms, scalars) are "unspecified" and use ``nonweight_qp`` (default -75, step
    ~2.4e-6, i.e. nearly lossless) unless overridden per tensor with ``qp_per_tensor``.
  * decompress(bitstream_or_path, ...) takes a *bytearray* (``bytes`` would be treated as
    a path) or a path, and returns the dict of reconstructed arrays.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
import types

EXPECTED_VERSION = "2.1.3"


# ----------------------------------------------------------------------------------------
# torchvision stand-in
# ----------------------------------------------------------------------------------------
# `import nncodec.nnc` imports nncodec.framework.use_case_init -> applications.datasets
# (cifar, voc2012, imagenet) and applications.utils.transforms, which do at import time:
#     from torchvision import datasets, transforms
#     transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
#                         transforms.ToTensor(), transforms.Normalize(mean=..., std=...)])
#     class ImageNetDataset(datasets.ImageFolder): ...
# (the flwr strategy also references torchvision.models, but it is not imported by nnc).
# None of that is used by compress()/decompress() on a dict of arrays. There is no CPU
# torchvision wheel matching the kept torch 2.13.0+cpu, and pulling one from PyPI would
# bring the CUDA stack, so a stand-in module is registered instead: any attribute of
# torchvision.{datasets,transforms,models,...} is a class that can be constructed and
# subclassed (as the imports need) but raises if it is ever actually used.

class _TorchvisionUnavailable(RuntimeError):
    pass


MAX_CALLS = 1000  # timing calls at most, whatever --min-time asks

def _make_stub_class(qualname: str) -> type:
    def __init__(self, *args, **kwargs):
        self._stub_args = (args, kwargs)

    def _fail(self, *args, **kwargs):
        raise _TorchvisionUnavailable(
            f"{qualname} is a stand-in: torchvision is not installed in the NNCodec "
            "reference venv (only nncodec.nnc compress/decompress of tensors is supported)")

    return type(qualname.rsplit(".", 1)[-1], (object,), {
        "__init__": __init__, "__call__": _fail, "__iter__": _fail, "__len__": _fail,
        "__getitem__": _fail, "__module__": qualname.rsplit(".", 1)[0],
        "__qualname__": qualname.rsplit(".", 1)[-1], "_nncodec_ref_stub": True,
    })


def _make_stub_module(name: str, is_package: bool = False) -> types.ModuleType:
    mod = types.ModuleType(name, f"stand-in for {name} (NNCodec reference venv)")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=is_package)
    mod.__file__ = None
    mod._nncodec_ref_stub = True
    if is_package:
        mod.__path__ = []
    cache: dict[str, object] = {}

    def __getattr__(attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        if attr not in cache:
            if attr[:1].islower() and attr in ("list_models", "get_model", "get_weight"):
                def _fn(*a, _q=f"{name}.{attr}", **k):
                    raise _TorchvisionUnavailable(f"{_q} is a stand-in (no torchvision)")
                cache[attr] = _fn
            else:
                cache[attr] = _make_stub_class(f"{name}.{attr}")
        return cache[attr]

    mod.__getattr__ = __getattr__
    return mod


def install_torchvision_stand_in(force: bool = False) -> bool:
    """Register a fake ``torchvision`` in sys.modules. Returns True if the stand-in is used."""
    if "torchvision" in sys.modules:
        return bool(getattr(sys.modules["torchvision"], "_nncodec_ref_stub", False))
    if not force:
        try:
            if importlib.util.find_spec("torchvision") is not None:
                return False  # a real torchvision is installed: use it
        except (ImportError, ValueError):
            pass
    root = _make_stub_module("torchvision", is_package=True)
    root.__version__ = "0.0.0+nncodec-reference-stand-in"
    for sub in ("datasets", "transforms", "models", "models.segmentation", "ops", "io", "utils"):
        full = f"torchvision.{sub}"
        m = _make_stub_module(full, is_package=(sub == "models"))
        sys.modules[full] = m
        parent = sys.modules["torchvision.models"] if sub == "models.segmentation" else root
        setattr(parent, sub.rsplit(".", 1)[-1], m)
        if sub == "models":
            sys.modules["torchvision.models"] = m
    sys.modules["torchvision"] = root
    return True


def import_reference():
    """Import the reference nncodec (after the stand-in) and make sure it IS the reference."""
    stub = install_torchvision_stand_in()
    # This project's own package is also called `nncodec`: drop any sys.path entry outside
    # this environment that provides one (PYTHONPATH, the current directory, ...).
    prefix = os.path.realpath(sys.prefix) + os.sep
    sys.path[:] = [p for p in sys.path
                   if os.path.realpath(p or os.getcwd()).startswith(prefix)
                   or not (os.path.isdir(os.path.join(p or os.getcwd(), "nncodec"))
                           or os.path.isfile(os.path.join(p or os.getcwd(), "nncodec.py")))]
    try:
        version = importlib.metadata.version("nncodec")
    except importlib.metadata.PackageNotFoundError:
        version = None
    try:
        import nncodec.nnc as nnc  # noqa: WPS433
    except Exception as exc:  # pragma: no cover - environment problem
        raise SystemExit(
            f"run_reference.py: cannot import the reference nncodec.nnc ({exc!r}). Run this with "
            f"the reference venv's python (bench/reference/setup_reference_venv.sh), not {sys.executable}")
    # Guard against this project's own `nncodec` shadowing the reference (e.g. via PYTHONPATH):
    # the imported package must live inside this interpreter's environment.
    mod_file = os.path.realpath(getattr(nnc, "__file__", "") or "")
    if not mod_file.startswith(os.path.realpath(sys.prefix) + os.sep):
        raise SystemExit(
            f"run_reference.py: imported nncodec from {mod_file}, outside {sys.prefix}; "
            "unset PYTHONPATH and use the reference venv's python")
    if not (hasattr(nnc, "compress") and hasattr(nnc, "decompress")) or version != EXPECTED_VERSION:
        raise SystemExit(
            f"run_reference.py: the 'nncodec' importable from {sys.executable} is not Fraunhofer "
            f"NNCodec {EXPECTED_VERSION} (found version {version!r} at {getattr(nnc, '__file__', '?')}); "
            "use the reference venv's python")
    return nnc, version, stub


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def _peak_rss_bytes() -> int:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)  # Linux reports KiB


def _snr_db(signal_energy: float, noise_energy: float) -> float | None:
    """10 log10(sum w^2 / sum (w - w_hat)^2); None where undefined (lossless or all-zero),
    so that the JSON stays strict (no Infinity)."""
    import math
    if noise_energy == 0.0 or signal_energy == 0.0:
        return None
    return 10.0 * math.log10(signal_energy / noise_energy)


def load_npz(path: str):
    import numpy as np
    params, notes = {}, []
    with np.load(path, allow_pickle=False) as z:
        for name in z.files:
            a = z[name]
            if a.dtype == np.float32 or a.dtype == np.int32:
                pass
            elif np.issubdtype(a.dtype, np.floating):
                notes.append(f"{name}: cast {a.dtype} -> float32")
                a = a.astype(np.float32)
            elif np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
                notes.append(f"{name}: cast {a.dtype} -> int32 (coded losslessly)")
                a = a.astype(np.int32)
            else:
                raise SystemExit(f"{path}: tensor {name!r} has unsupported dtype {a.dtype}")
            if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
                a = a.copy(order="C")
            params[name] = a
    if not params:
        raise SystemExit(f"{path}: no arrays")
    return params, notes


def parse_qp_per_tensor(items):
    out = {}
    for it in items or []:
        name, sep, qp = it.rpartition("=")
        if not sep or not name:
            raise SystemExit(f"--qp-tensor expects NAME=QP, got {it!r}")
        out[name] = int(qp)
    return out


# ----------------------------------------------------------------------------------------
# main run
# ----------------------------------------------------------------------------------------

def run(args) -> dict:
    import numpy as np

    t0 = time.perf_counter()
    nnc, version, stub = import_reference()
    import_s = time.perf_counter() - t0
    rss_after_import = _peak_rss_bytes()

    params, notes = load_npz(args.input)
    n_params = int(sum(a.size for a in params.values()))
    qp_per_tensor = parse_qp_per_tensor(args.qp_tensor) or None

    kwargs = dict(
        qp=args.qp,
        use_dq=args.use_dq,
        qp_density=args.qp_density,
        nonweight_qp=args.nonweight_qp,
        qp_per_tensor=qp_per_tensor,
        opt_qp=args.opt_qp,
        lambda_scale=args.lambda_scale,
        param_opt=args.param_opt,
        cabac_unary_length_minus1=args.cabac_unary_length_minus1,
        scan_order=args.scan_order,
        int_quant_bw=args.int_quant_bw if args.int_quant_bw else False,
        verbose=args.verbose,
    )

    os.makedirs(os.path.dirname(os.path.abspath(args.out_bitstream)), exist_ok=True)
    # nncodec 2.1.3 crashes on 0-d arrays inside compress() (coder/baseline.py indexes
    # shape[0]), so scalars are passed as shape (1,) and reshaped back after decoding.
    enc_params = {}
    for name, a in params.items():
        if a.ndim == 0:
            notes.append(f"{name}: 0-d scalar coded as shape (1,)")
            a = a.reshape(1)
        enc_params[name] = a
    # --repeats N / --min-time S: best of at least N calls each, and of as many more as fit
    # in S seconds of calls (at most MAX_CALLS); the bitstream must come out the same every time
    encode_s = decode_s = float("inf")
    data = None
    calls, spent = 0, 0.0
    while calls < max(1, args.repeats) or (spent < args.min_time and calls < MAX_CALLS):
        t0 = time.perf_counter()
        nnc.compress(enc_params, args.out_bitstream, **kwargs)
        dt = time.perf_counter() - t0
        encode_s, calls, spent = min(encode_s, dt), calls + 1, spent + dt
        with open(args.out_bitstream, "rb") as f:
            again = f.read()
        if data is not None and again != data:
            raise SystemExit("compress gave a different bitstream on a repeated call")
        data = again
    encode_calls = calls
    calls, spent = 0, 0.0
    while calls < max(1, args.repeats) or (spent < args.min_time and calls < MAX_CALLS):
        t0 = time.perf_counter()
        decoded = nnc.decompress(bytearray(data), verbose=args.verbose)
        dt = time.perf_counter() - t0
        decode_s, calls, spent = min(decode_s, dt), calls + 1, spent + dt
    decode_calls = calls

    if not isinstance(decoded, dict):
        raise SystemExit(f"decompress returned {type(decoded)}, expected dict")
    missing = sorted(set(params) - set(decoded))
    extra = sorted(set(decoded) - set(params))
    if missing or extra:
        raise SystemExit(f"decoded names differ: missing {missing}, extra {extra}")

    decoded = {k: np.asarray(v) for k, v in decoded.items()}
    per_tensor = {}
    sig_w = err_w = sig_all = err_all = 0.0
    for name, a in params.items():
        d = decoded[name]
        if d.shape != a.shape:
            if d.size == a.size and a.ndim == 0:  # scalar, sent as shape (1,) (see above)
                d = decoded[name] = d.reshape(a.shape)
            else:
                raise SystemExit(f"{name}: decoded shape {d.shape} != input {a.shape}")
        a64, d64 = a.astype(np.float64), d.astype(np.float64)
        s, e = float(np.sum(a64 * a64)), float(np.sum((a64 - d64) ** 2))
        sig_all += s
        err_all += e
        is_weight = a.ndim > 1
        if is_weight:
            sig_w += s
            err_w += e
        per_tensor[name] = {
            "shape": list(a.shape), "dtype_in": str(a.dtype), "dtype_out": str(d.dtype),
            "n": int(a.size), "kind": "weight" if is_weight else "non-weight",
            "qp": None if a.dtype == np.int32  # int32 tensors are coded losslessly ("skip")
                  else int(qp_per_tensor[name]) if qp_per_tensor and name in qp_per_tensor
                  else (args.qp if is_weight else args.nonweight_qp),
            "snr_db": _snr_db(s, e), "lossless": e == 0.0, "max_abs_err": float(np.max(np.abs(a64 - d64))) if a.size else 0.0,
        }

    os.makedirs(os.path.dirname(os.path.abspath(args.out_decoded)), exist_ok=True)
    np.savez(args.out_decoded, **decoded)

    nbytes = len(data)
    n_weight = int(sum(a.size for a in params.values() if a.ndim > 1))
    rec = {
        "tool": "Fraunhofer NNCodec (MPEG NNC reference software)",
        "package_version": version,
        "input": os.path.abspath(args.input),
        "bitstream": os.path.abspath(args.out_bitstream),
        "decoded": os.path.abspath(args.out_decoded),
        "qp": args.qp,
        "use_dq": bool(args.use_dq),
        "timing_repeats": max(1, args.repeats),
        "timing_min_time_s": args.min_time,
        "encode_calls": encode_calls,
        "decode_calls": decode_calls,
        "qp_density": args.qp_density,
        "nonweight_qp": args.nonweight_qp,
        "qp_per_tensor": qp_per_tensor,
        "opt_qp": args.opt_qp,
        "lambda_scale": args.lambda_scale,
        "param_opt": args.param_opt,
        "int_quant_bw": args.int_quant_bw,
        "num_tensors": len(params),
        "num_parameters": n_params,
        "num_weight_parameters": n_weight,
        "bitstream_bytes": nbytes,
        "bits_per_weight": 8.0 * nbytes / n_params,
        "snr_db_all": _snr_db(sig_all, err_all),
        "snr_db_weights": _snr_db(sig_w, err_w),
        "encode_seconds": encode_s,
        "decode_seconds": decode_s,
        "import_seconds": import_s,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_rss_mib": _peak_rss_bytes() / 2**20,
        "peak_rss_after_import_mib": rss_after_import / 2**20,
        "torchvision_stand_in": stub,
        "python": platform.python_version(),
        "executable": sys.executable,
        "notes": notes,
        "per_tensor": per_tensor,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    with open(args.out_json, "w") as f:
        json.dump(rec, f, indent=2, allow_nan=False)
        f.write("\n")
    return rec


def self_check() -> int:
    """Import through the stand-in and code a tiny model; exit 0 iff it round-trips."""
    import numpy as np
    t0 = time.perf_counter()
    nnc, version, stub = import_reference()
    import torch  # noqa: F401  (already imported by nncodec; report its build)
    import_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    params = {"w": rng.laplace(0, 0.05, (16, 8)).astype(np.float32),
              "b": rng.laplace(0, 0.05, (16,)).astype(np.float32)}
    with tempfile.TemporaryDirectory() as td:
        path = os.path.join(td, "selfcheck.nnc")
        nnc.compress(dict(params), path, qp=-32, use_dq=True)
        with open(path, "rb") as f:
            data = f.read()
        dec = nnc.decompress(bytearray(data))
    # qp -32 -> step 2**-8; DQ + rate-distortion decisions can move a weight by more than
    # half a step, so allow a few steps (a broken decode is off by far more than that).
    ok = set(dec) == set(params) and all(
        dec[k].shape == params[k].shape and np.max(np.abs(dec[k] - params[k])) <= 4 * 2.0 ** -8
        for k in params)
    print(json.dumps({
        "self_check": "ok" if ok else "FAILED", "nncodec": version, "torch": torch.__version__,
        "numpy": np.__version__, "torchvision_stand_in": stub, "bitstream_bytes": len(data),
        "import_seconds": round(import_s, 2), "python": sys.executable,
    }))
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Encode/decode an .npz of tensors with Fraunhofer NNCodec 2.1.3 (reference venv only).")
    p.add_argument("input", nargs="?", help="input .npz (dict of float32 arrays; int32 = lossless)")
    p.add_argument("--self-check", action="store_true", help="import + tiny round trip, then exit")
    p.add_argument("--qp", type=int, help="weight QP (step ~ 2**(qp/4) at qp_density 2); e.g. -32, -38")
    dq = p.add_mutually_exclusive_group()
    dq.add_argument("--use-dq", dest="use_dq", action="store_true", default=True,
                    help="dependent (trellis-coded) quantization, the reference default")
    dq.add_argument("--no-dq", dest="use_dq", action="store_false", help="plain uniform scalar quantization")
    p.add_argument("--out-bitstream", help="where to write the NNR bitstream")
    p.add_argument("--out-decoded", help="where to write the decoded arrays (.npz)")
    p.add_argument("--out-json", help="where to write the JSON record")
    p.add_argument("--qp-density", type=int, default=2, help="QP density (reference default 2)")
    p.add_argument("--nonweight-qp", type=int, default=-75,
                   help="QP for tensors with ndim <= 1 (reference default -75, nearly lossless)")
    p.add_argument("--qp-tensor", action="append", metavar="NAME=QP", help="per-tensor QP override (repeatable)")
    p.add_argument("--opt-qp", action="store_true", help="reference opt_qp: per-tensor QP modification")
    p.add_argument("--lambda-scale", type=float, default=0.0, help="RDOQ lambda scale (reference default 0)")
    p.add_argument("--no-param-opt", dest="param_opt", action="store_false", default=True,
                   help="disable CABAC parameter optimisation (param_opt, default on)")
    p.add_argument("--cabac-unary-length-minus1", type=int, default=10)
    p.add_argument("--scan-order", type=int, default=0, help="0 = row-major; 1..4 = block scans")
    p.add_argument("--int-quant-bw", type=int, default=0,
                   help="integer-aligned quantization to this bit width (overrides --qp); 0 = off")
    p.add_argument("--verbose", action="store_true", help="let the reference print its progress")
    p.add_argument("--min-time", type=float, default=0.0,
                   help="keep timing (beyond --repeats) until the calls took this many seconds")
    p.add_argument("--repeats", type=int, default=1,
                   help="time compress and decompress this many times each and keep the best")
    args = p.parse_args(argv)

    if args.self_check:
        return self_check()
    missing = [o for o, v in (("IN.npz", args.input), ("--qp", args.qp), ("--out-bitstream", args.out_bitstream),
                              ("--out-decoded", args.out_decoded), ("--out-json", args.out_json)) if v is None]
    if missing:
        p.error("missing " + ", ".join(missing))
    rec = run(args)
    summary = {k: rec[k] for k in ("package_version", "qp", "use_dq", "num_parameters", "bitstream_bytes",
                                   "bits_per_weight", "snr_db_weights", "encode_seconds", "decode_seconds",
                                   "peak_rss_mib")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
