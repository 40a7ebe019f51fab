"""``transmit_weights``: map float tensors to real channel values, send them through AWGN /
Rayleigh fading (or the noisy-storage model), and estimate them back.

The whole model is one stream of real values, packed two per complex channel use; side values
go digitally and are charged channel uses at the scheme's ``side_rate``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from ..channel.channels import awgn as _awgn
from ..channel.channels import n0_from_snr
from ..channel.channels import rayleigh as _rayleigh
from . import receivers as _rx
from . import spiral as _sk
from .schemes import AnalogConfigError, AnalogScheme, TensorAllocation, get_scheme

__all__ = ["transmit_weights", "weight_mse_bound", "CHANNELS", "FADINGS", "FLOAT_BITS",
           "DEFAULT_BLOCK_LEN"]

CHANNELS = ("awgn", "rayleigh")
FADINGS = ("symbol", "block")
FLOAT_BITS = 32          # every side value (scale, shift, prior, gamma) is sent as a float32
HIST_BINS = 64           # the spiral's empirical prior: 64 bins of 16-bit counts + range
HIST_BITS = 16
DEFAULT_BLOCK_LEN = 972  # complex channel uses per fading block: one 1944-bit LDPC codeword in QPSK


def weight_mse_bound(var: float, snr_db: float, rho: float) -> float:
    """D = var (1 + SNR)^(-rho): the smallest weight MSE any scheme can reach for a Gaussian
    source of variance ``var`` sent over ``rho`` real channel dimensions per weight at Es/N0 =
    ``snr_db`` (each real dimension then has signal-to-noise ratio SNR), by rate-distortion
    (R(D) = 1/2 log2(var/D)) against capacity (rho/2 log2(1 + SNR))."""
    if not (var >= 0 and math.isfinite(var)):
        raise AnalogConfigError(f"var must be a finite number >= 0, got {var!r}")
    if not (rho > 0 and math.isfinite(rho)):
        raise AnalogConfigError(f"rho must be > 0, got {rho!r}")
    if not math.isfinite(snr_db):
        raise AnalogConfigError(f"snr_db must be finite, got {snr_db!r}")
    return float(var) * (1.0 + 10.0 ** (float(snr_db) / 10.0)) ** (-float(rho))


# ---------------------------------------------------------------------------------------------
# inputs


def _to_numpy(name: str, value: Any) -> Tuple[np.ndarray, Any]:
    """(array, dtype to give back). torch tensors are converted; bfloat16 comes back as float32."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        arr = t.numpy()
    else:
        arr = np.asarray(value)
    if arr.dtype == object:
        raise AnalogConfigError(f"tensor {name!r}: cannot transmit an object array")
    return arr, arr.dtype


def _entropy_bits(labels: np.ndarray) -> int:
    """Bits of an ideal entropy code of a label sequence (n H(labels)), how the receiver learns
    each weight's group; an arithmetic coder comes within a few bytes of this."""
    if labels.size == 0:
        return 0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / labels.size
    return int(math.ceil(-float(labels.size) * float(np.sum(p * np.log2(p)))))


# ---------------------------------------------------------------------------------------------
# per-tensor encoder state


@dataclass
class _Group:
    idx: np.ndarray          # positions in the tensor
    c: float                 # v = c + d x
    d: float
    mu: float                # Gaussian prior of v in the group
    var: float
    lo: float                # range of v in the group (for clipping)
    hi: float


@dataclass
class _Tensor:
    name: str
    shape: Tuple[int, ...]
    dtype: Any
    n: int
    w: np.ndarray                         # float64 flat
    v: np.ndarray = None                  # what goes analog (|w| under sign protection)
    neg: Optional[np.ndarray] = None
    groups: List[_Group] = field(default_factory=list)
    x: Optional[np.ndarray] = None        # mapped value per weight (real), or complex for SK
    reps: Optional[np.ndarray] = None     # copies per weight (0 = known exactly from side info)
    power: float = 1.0
    power_rel: float = 0.0                # power after renormalization over the stream
    gain: float = 1.0
    dims: int = 0                         # real channel dimensions used
    offset: int = 0                       # start in the real stream
    side_bits: int = 0
    sk: bool = False
    sk_mu: float = 0.0
    sk_sd: float = 0.0
    sk_gamma: float = 0.0
    sk_k: Optional[float] = None          # radius factor of the uniform-stretch variant
    sk_prior: Optional[Tuple[np.ndarray, float]] = None


def _affine(v: np.ndarray, mapping: str) -> Tuple[float, float]:
    """(c, d) with x = (v - c) / d: standard (mean, std) or linear (seed 002 eq. 1: the range onto
    [-1, 1], i.e. alpha = 1/d, shift beta = c/d)."""
    if mapping == "standard":
        return float(np.mean(v)), float(np.std(v))
    lo, hi = float(np.min(v)), float(np.max(v))
    return 0.5 * (lo + hi), 0.5 * (hi - lo)


def _map_threshold(m: np.ndarray, spec) -> float:
    """Threshold t between the small (|w| < t) and large magnitude groups."""
    if not isinstance(spec, str):
        return float(np.quantile(m, float(spec)))
    # "mse": equal noise per cell gives the group g a weight-domain noise ~ (range_g / 2)^2, so
    # minimize N_small range_small^2 + N_large range_large^2 over candidate thresholds.
    s = np.sort(m)
    n = s.size
    ks = np.unique(np.clip(np.round(np.linspace(0.5, 0.9995, 200) * n).astype(np.int64), 1, n - 1))
    # small group = s[:k], large = s[k:]
    cost = ks * (s[ks - 1] - s[0]) ** 2 + (n - ks) * (s[-1] - s[ks]) ** 2
    k = int(ks[int(np.argmin(cost))])
    return float(s[k])


def _encode_linear(t: _Tensor, sch: AnalogScheme, red_mask: Optional[np.ndarray],
                   base_reps: int) -> None:
    w = t.w
    side = 0
    if sch.sign_protection:
        t.neg = w < 0
        t.v = np.abs(w)
        side += t.n                                   # one sign bit per weight
    else:
        t.v = w
    labels = np.zeros(t.n, dtype=np.int8)
    if sch.adaptive_map and t.n >= 2:
        thr = _map_threshold(t.v, sch.map_threshold)
        labels[t.v >= thr] = 1
        if labels.all():                              # degenerate split: one group
            labels[:] = 0
    parts = [np.flatnonzero(labels == g) for g in (0, 1)]
    parts = [p for p in parts if p.size]
    t.x = np.zeros(t.n)
    t.reps = np.full(t.n, base_reps, dtype=np.int64)
    if red_mask is not None:
        t.reps[:] = sch.r_small
        t.reps[red_mask] = sch.r_large
    for idx in parts:
        vg = t.v[idx]
        c, d = _affine(vg, sch.mapping)
        mu, var = float(np.mean(vg)), float(np.var(vg))
        g = _Group(idx=idx, c=c, d=d, mu=mu, var=var, lo=float(vg.min()), hi=float(vg.max()))
        t.groups.append(g)
        side += 2 * FLOAT_BITS                         # scale and shift of the group
        if sch.receiver != "ml" and sch.mapping != "standard":
            side += 2 * FLOAT_BITS                     # prior mean and variance
        if d > 0:
            t.x[idx] = (vg - c) / d
        else:                                         # constant group: known from the side info
            t.reps[idx] = 0
    if sch.adaptive_map or red_mask is not None:
        lab = labels.astype(np.int16) * 2 + (red_mask.astype(np.int16) if red_mask is not None else 0)
        side += _entropy_bits(lab) + FLOAT_BITS        # group of every weight (+ its length)
    t.side_bits = side
    t.dims = int(t.reps.sum())


def _encode_sk(t: _Tensor, sch: AnalogScheme) -> None:
    t.sk = True
    t.v = t.w
    mu, sd = float(np.mean(t.w)), float(np.std(t.w))
    t.sk_mu, t.sk_sd = mu, sd
    t.side_bits = 3 * FLOAT_BITS                       # mean, std, gamma
    if sd == 0:
        t.reps = np.zeros(t.n, dtype=np.int64)
        t.dims = 0
        return
    u = (t.w - mu) / sd
    t.x = u
    if sch.sk_stretch == "sqrt":
        t.sk_k = _sk.sqrt_k(u)
        t.side_bits += FLOAT_BITS                      # k
    t.reps = np.ones(t.n, dtype=np.int64)
    t.dims = 2 * t.n
    if sch.receiver == "mmse" and sch.sk_prior == "empirical":
        t.sk_prior = _sk.histogram_prior(u, HIST_BINS)
        t.side_bits += HIST_BINS * HIST_BITS + 2 * FLOAT_BITS


# ---------------------------------------------------------------------------------------------
# the transmission


def _check_args(snr_db, noise_std, design_snr_db, channel, fading, block_len):
    if (snr_db is None) == (noise_std is None):
        raise AnalogConfigError("give exactly one of snr_db (channel, Es/N0 in dB) and noise_std "
                                "(storage model: noise std per cell in [-1, 1])")
    if snr_db is not None and not (isinstance(snr_db, (int, float, np.floating, np.integer))
                                   and math.isfinite(float(snr_db))):
        raise AnalogConfigError(f"snr_db must be a finite number, got {snr_db!r}")
    if noise_std is not None:
        if not (isinstance(noise_std, (int, float, np.floating, np.integer))
                and math.isfinite(float(noise_std)) and float(noise_std) > 0):
            raise AnalogConfigError(f"noise_std must be a positive number, got {noise_std!r}")
        if channel != "awgn":
            raise AnalogConfigError("noise_std is the storage model (additive Gaussian noise per "
                                    "cell); use snr_db for fading channels")
        if design_snr_db is not None:
            raise AnalogConfigError("design_snr_db goes with snr_db; with noise_std use "
                                    "design_noise_std")
    if design_snr_db is not None and not math.isfinite(float(design_snr_db)):
        raise AnalogConfigError(f"design_snr_db must be finite, got {design_snr_db!r}")
    if channel not in CHANNELS:
        raise AnalogConfigError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if fading not in FADINGS:
        raise AnalogConfigError(f"fading must be one of {FADINGS}, got {fading!r}")
    if not (isinstance(block_len, (int, np.integer)) and block_len >= 1):
        raise AnalogConfigError(f"block_len must be an integer >= 1, got {block_len!r}")


def _receiver_params(sch: AnalogScheme, receiver_params) -> Dict[str, float]:
    p = {"lambda": 0.0, "beta": 0.0}
    p.update({k: float(v) for k, v in sch.params.items()})
    if receiver_params:
        if not isinstance(receiver_params, Mapping):
            raise AnalogConfigError("receiver_params must be a dict like {'lambda': .., 'beta': ..}")
        unknown = set(receiver_params) - {"lambda", "beta"}
        if unknown:
            raise AnalogConfigError(f"unknown receiver parameters {sorted(unknown)} (known: lambda, beta)")
        p.update({k: float(v) for k, v in receiver_params.items()})
    return p


def transmit_weights(state_dict: Mapping[str, Any], scheme: Union[str, AnalogScheme],
                     snr_db: Optional[float] = None, *, channel: str = "awgn", fading: str = "symbol",
                     design_snr_db: Optional[float] = None, noise_std: Optional[float] = None,
                     design_noise_std: Optional[float] = None,
                     receiver_params: Optional[Mapping[str, float]] = None, seed: int = 0,
                     block_len: int = DEFAULT_BLOCK_LEN) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Send the float tensors of ``state_dict`` through an analog channel; return the received
    state dict (numpy arrays of the original shapes and dtypes) and an info dict.

    ``snr_db`` is Es/N0 in dB with unit average energy per complex symbol (every real dimension
    then has signal-to-noise ratio SNR). ``noise_std`` instead selects the noisy-storage model of
    seed 002: every real value is scaled into [-1, 1] and gets Gaussian noise of that std.
    ``channel`` "awgn" or "rayleigh" (``fading`` "symbol": a new CN(0,1) gain per complex channel
    use; "block": constant over ``block_len`` uses; the receiver knows the gains and equalizes).
    ``design_snr_db`` (default: ``snr_db``) is the SNR the spiral's gamma is designed for and the
    noise level the MMSE / MMSE_pb receivers assume. Integer and bool tensors travel losslessly as
    side bits. Deterministic given ``seed``.

    info keys: channel_uses (complex, analog + side), analog_channel_uses, side_channel_uses,
    side_bits, rho (analog real dimensions per float weight), rho_total (with side info),
    r_avg (analog copies per weight), es (measured mean energy per complex symbol), snr_db,
    wnr_db (weight variance over the noise power in the weight domain before estimation),
    weight_mse, weight_snr_db (variance over weight_mse of the output), n_weights, tensors
    (per-tensor figures), and the settings used.
    """
    sch = get_scheme(scheme) if not isinstance(scheme, AnalogScheme) else scheme
    _check_args(snr_db, noise_std, design_snr_db, channel, fading, block_len)
    if design_noise_std is not None:
        if noise_std is None:
            raise AnalogConfigError("design_noise_std goes with noise_std")
        if not (math.isfinite(float(design_noise_std)) and design_noise_std > 0):
            raise AnalogConfigError(f"design_noise_std must be a positive number, got {design_noise_std!r}")
    if not isinstance(state_dict, Mapping):
        raise AnalogConfigError("state_dict must be a mapping of tensor names to arrays")
    rp = _receiver_params(sch, receiver_params)
    if sch.receiver == "mmse_pb" and rp["lambda"] < 0:
        raise AnalogConfigError(f"mmse_pb: lambda must be >= 0, got {rp['lambda']}")
    storage = noise_std is not None
    seed_ok = isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)
    if not seed_ok:
        raise AnalogConfigError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))

    out: Dict[str, np.ndarray] = {}
    tensors: List[_Tensor] = []
    side_bits = 0
    side_tensors = 0
    for name, value in state_dict.items():
        arr, dtype = _to_numpy(str(name), value)
        if arr.dtype.kind in "fc":
            if arr.dtype.kind == "c":
                raise AnalogConfigError(f"tensor {name!r}: complex weights are not supported")
            w = arr.astype(np.float64).reshape(-1)
            if not np.all(np.isfinite(w)):
                raise AnalogConfigError(f"tensor {name!r} holds NaN or infinite values")
            tensors.append(_Tensor(name=name, shape=arr.shape, dtype=dtype, n=w.size, w=w))
        else:
            out[name] = arr.copy()
            side_bits += int(arr.nbytes) * 8
            side_tensors += 1

    # adaptive redundancy: the N_large largest |w| of the model get r_large copies
    red_masks: Dict[str, np.ndarray] = {}
    if sch.adaptive_redundancy:
        allw = np.concatenate([np.abs(t.w) for t in tensors]) if tensors else np.zeros(0)
        n_all = allw.size
        n_large = 0
        if sch.r_large > sch.r_small and n_all:
            n_large = int(math.floor(n_all * (sch.r_avg - sch.r_small) / (sch.r_large - sch.r_small)
                                     + 1e-9))
            n_large = min(n_large, n_all)
        big = np.zeros(n_all, dtype=bool)
        if n_large:
            big[np.argpartition(-allw, n_large - 1)[:n_large]] = True
        pos = 0
        for t in tensors:
            red_masks[t.name] = big[pos:pos + t.n]
            pos += t.n

    alloc = sch.allocation or {}
    unknown = set(alloc) - {t.name for t in tensors}
    if unknown:
        raise AnalogConfigError(f"allocation names tensors that are not float tensors of the model: "
                                f"{sorted(unknown)[:5]}")
    for t in tensors:
        a = alloc.get(t.name, TensorAllocation())
        t.power = a.power
        if t.n == 0:
            t.reps = np.zeros(0, dtype=np.int64)
            continue
        if sch.expansion == "sk":
            _encode_sk(t, sch)
        else:
            base = a.repeat if t.name in alloc else (sch.rho if sch.expansion == "repeat" else 1)
            _encode_linear(t, sch, red_masks.get(t.name), base)
            if t.name in alloc:
                t.side_bits += 8                        # the tensor's repetition count
        side_bits += t.side_bits

    # power: renormalize the allocation so the stream has unit average energy per complex use
    total_dims = sum(t.dims for t in tensors)
    if total_dims:
        mean_p = sum(t.dims * t.power for t in tensors) / total_dims
        pmax = max(t.power for t in tensors if t.dims)
        for t in tensors:
            if not t.dims:
                continue
            if storage:
                t.power_rel = t.power / pmax
            else:
                t.power_rel = t.power / mean_p

    # SNR the receiver and the spiral are designed for
    if storage:
        n0 = 2.0 * float(noise_std) ** 2
        n0_design = 2.0 * float(design_noise_std if design_noise_std is not None else noise_std) ** 2
    else:
        n0 = n0_from_snr(float(snr_db))
        n0_design = n0_from_snr(float(design_snr_db if design_snr_db is not None else snr_db))

    # build the real stream
    segs: List[np.ndarray] = []
    pos = 0
    for t in tensors:
        if not t.dims:
            continue
        t.offset = pos
        if t.sk:
            u = t.x
            eff_snr = t.power_rel / n0_design if not storage else None
            if sch.sk_gamma is not None:
                t.sk_gamma = float(sch.sk_gamma)
            else:
                # design: gamma for the SNR this tensor sees (its power share); in storage mode
                # the peak normalization sets the SNR, found by a fixed point below
                t.sk_gamma = _sk.design_gamma(10 * math.log10(eff_snr) if eff_snr else
                                              _storage_design_snr(
                                                  np.abs(u) if t.sk_k is None
                                                  else t.sk_k * np.sqrt(np.abs(u)), n0_design),
                                              sch.receiver, sch.sk_stretch)
            z = _sk.sk_map(u, t.sk_gamma, t.sk_k)
            if storage:
                peak = float(max(np.max(np.abs(z.real)), np.max(np.abs(z.imag))))
                t.gain = math.sqrt(t.power_rel) / peak
            else:
                t.gain = math.sqrt(t.power_rel / float(np.mean(np.abs(z) ** 2)))
            s = np.empty(2 * t.n)
            s[0::2] = t.gain * z.real
            s[1::2] = t.gain * z.imag
            segs.append(s)
        else:
            if storage:
                peak = float(np.max(np.abs(t.x[t.reps > 0]))) if np.any(t.reps > 0) else 1.0
                t.gain = math.sqrt(t.power_rel) / max(peak, 1e-300)
            else:
                e = float(np.sum(t.reps * t.x ** 2) / t.dims)
                t.gain = math.sqrt(0.5 * t.power_rel / max(e, 1e-300))
            for k in range(int(t.reps.max())):
                segs.append(t.gain * t.x[t.reps > k])
        pos += t.dims
    stream = np.concatenate(segs) if segs else np.zeros(0)
    D = stream.size
    n_cu = (D + 1) // 2

    # channel
    if D:
        sp = np.zeros(2 * n_cu)
        sp[:D] = stream
        xc = sp[0::2] + 1j * sp[1::2]
        es = float(np.sum(np.abs(xc) ** 2) / n_cu)
        if storage:
            yc = xc + float(noise_std) * (rng.standard_normal(n_cu) + 1j * rng.standard_normal(n_cu))
            g2 = np.ones(n_cu)
        elif channel == "awgn":
            yc, _ = _awgn(xc, float(snr_db), rng)
            g2 = np.ones(n_cu)
        else:
            yc, h, _ = _rayleigh(xc, float(snr_db), rng, block=block_len if fading == "block" else None)
            g2 = np.abs(h) ** 2
            yc = yc / h                                 # perfect CSI: zero-forcing equalization
        yr = np.empty(2 * n_cu)
        yr[0::2] = yc.real
        yr[1::2] = yc.imag
        yr = yr[:D]
        g2r = np.repeat(g2, 2)[:D]
        nv_real = (n0 / 2.0) / g2r                      # noise variance per real value, after ZF
        nvd_real = (n0_design / 2.0) / g2r              # what the receiver assumes
    else:
        es = 0.0
        yr = nv_real = nvd_real = np.zeros(0)

    # receivers
    tot_err = 0.0
    tot_noise = 0.0
    tot_var = 0.0
    n_float = 0
    per: Dict[str, Dict[str, Any]] = {}
    sk_gammas: Dict[str, float] = {}
    for t in tensors:
        n_float += t.n
        if t.n == 0:
            out[t.name] = np.zeros(t.shape, dtype=t.dtype)
            continue
        if t.sk:
            what, noise_pow = _receive_sk(t, sch, yr, nv_real, nvd_real)
            sk_gammas[t.name] = t.sk_gamma
        else:
            what, noise_pow = _receive_linear(t, sch, yr, nv_real, nvd_real, rp)
        err = float(np.sum((what - t.w) ** 2))
        var = float(np.var(t.w))
        tot_err += err
        tot_noise += noise_pow * t.n
        tot_var += var * t.n
        out[t.name] = what.reshape(t.shape).astype(t.dtype)
        per[t.name] = {
            "n": t.n, "real_dims": t.dims, "side_bits": t.side_bits, "power": t.power_rel
            if t.dims else 0.0, "weight_mse": err / t.n, "var": var,
            "wnr_db": _db(var, noise_pow), "repeats": int(t.reps.max()) if t.reps.size else 0,
        }
    side_cu = int(math.ceil(side_bits / sch.side_rate)) if side_bits else 0
    total_cu = n_cu + side_cu
    info: Dict[str, Any] = {
        "scheme": sch.name, "receiver": sch.receiver, "channel": channel,
        "fading": fading if channel == "rayleigh" else None,
        "snr_db": float(snr_db) if not storage else float(10 * math.log10(es / n0)) if es else None,
        "design_snr_db": (float(design_snr_db if design_snr_db is not None else snr_db)
                          if not storage else None),
        "noise_std": float(noise_std) if storage else None,
        "design_noise_std": (float(design_noise_std if design_noise_std is not None else noise_std)
                             if storage else None),
        "seed": int(seed), "block_len": int(block_len) if channel == "rayleigh" and fading == "block" else None,
        "n_weights": n_float, "n_side_tensors": side_tensors,
        "channel_uses": total_cu, "analog_channel_uses": n_cu, "side_channel_uses": side_cu,
        "side_bits": side_bits, "side_rate": sch.side_rate,
        "rho": D / n_float if n_float else 0.0,
        "rho_total": 2.0 * total_cu / n_float if n_float else 0.0,
        "r_avg": (sum(int(t.reps.sum()) for t in tensors if not t.sk) / n_float
                  if n_float and sch.expansion != "sk" else None),
        "es": es,
        "wnr_db": _db(tot_var, tot_noise),
        "weight_mse": tot_err / n_float if n_float else 0.0,
        "weight_snr_db": _db(tot_var, tot_err),
        "receiver_params": ({"lambda": rp["lambda"], "beta": rp["beta"]}
                            if sch.receiver == "mmse_pb" else None),
        "sk_gamma": sk_gammas or None,
        "tensors": per,
    }
    return out, info


def _db(num: float, den: float) -> float:
    if den <= 0:
        return float("inf")
    if num <= 0:
        return float("-inf")
    return float(10.0 * math.log10(num / den))


def _storage_design_snr(radius: np.ndarray, n0: float) -> float:
    """Storage mode: the spiral's peak scaling sets the SNR; estimate it from the radius |f(u)|
    (the peak per real dimension is a little lower) to get the average-energy SNR the design
    needs."""
    peak = float(np.max(radius))
    es = float(np.mean(radius ** 2)) / peak ** 2
    return 10.0 * math.log10(es / n0)


def _combine(t: _Tensor, yr: np.ndarray, nv: np.ndarray, nvd: np.ndarray):
    """MRC over the copies: per weight the combined value (in x units), its actual and its
    assumed noise variance (inf where nothing was sent)."""
    num = np.zeros(t.n)
    den = np.zeros(t.n)
    dend = np.zeros(t.n)
    pos = t.offset
    for k in range(int(t.reps.max()) if t.reps.size else 0):
        idx = np.flatnonzero(t.reps > k)
        seg = slice(pos, pos + idx.size)
        inv = 1.0 / nv[seg]
        num[idx] += yr[seg] * inv
        den[idx] += inv
        dend[idx] += 1.0 / nvd[seg]
        pos += idx.size
    sent = den > 0
    xh = np.zeros(t.n)
    xh[sent] = num[sent] / den[sent] / t.gain
    var_x = np.full(t.n, np.inf)
    var_x[sent] = 1.0 / den[sent] / t.gain ** 2
    vard_x = np.full(t.n, np.inf)
    vard_x[sent] = 1.0 / dend[sent] / t.gain ** 2
    return xh, var_x, vard_x, sent


def _receive_linear(t: _Tensor, sch: AnalogScheme, yr, nv, nvd, rp) -> Tuple[np.ndarray, float]:
    xh, var_x, vard_x, sent = _combine(t, yr, nv, nvd)
    v_hat = np.empty(t.n)
    noise_sum = 0.0
    for g in t.groups:
        idx = g.idx
        if g.d == 0:
            v_hat[idx] = g.c
            continue
        r = g.c + g.d * xh[idx]                       # ML: unscaled received value
        nvar = var_x[idx] * g.d ** 2                  # actual noise power in the v domain
        nvar_d = vard_x[idx] * g.d ** 2               # assumed by the receiver
        noise_sum += float(np.sum(nvar))
        if sch.receiver == "ml":
            est = r
        elif sch.receiver == "mmse":
            est = _rx.mmse(r, nvar_d, g.mu, g.var)
        else:
            est = _rx.mmse_pb(r, nvar_d, g.mu, g.var, rp["lambda"], rp["beta"])
        if sch.mapping == "linear" and sch.clip:
            est = np.clip(est, g.lo, g.hi)
        v_hat[idx] = est
    w_hat = np.where(t.neg, -v_hat, v_hat) if t.neg is not None else v_hat
    return w_hat, noise_sum / t.n


def _receive_sk(t: _Tensor, sch: AnalogScheme, yr, nv, nvd) -> Tuple[np.ndarray, float]:
    if t.dims == 0:
        return np.full(t.n, t.sk_mu), 0.0
    seg = slice(t.offset, t.offset + 2 * t.n)
    y = (yr[seg][0::2] + 1j * yr[seg][1::2]) / t.gain
    # complex noise variance per symbol in the unit-energy domain (both real parts equal)
    n0c = 2.0 * nv[seg][0::2] / t.gain ** 2
    n0c_d = 2.0 * nvd[seg][0::2] / t.gain ** 2
    u_ml = _sk.decode_ml(y, t.sk_gamma, k=t.sk_k)
    noise_pow = float(np.mean((u_ml * t.sk_sd + t.sk_mu - t.w) ** 2))  # ML error power
    if sch.receiver == "ml":
        u = u_ml
    else:
        u = _sk.decode_mmse(y, t.sk_gamma, n0c_d, prior=t.sk_prior, k=t.sk_k)
    return t.sk_mu + t.sk_sd * u, noise_pow
