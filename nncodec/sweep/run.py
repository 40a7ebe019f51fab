"""run_sweep: the grid of channels x SNRs x schemes x draws, resumable."""
from __future__ import annotations

import hashlib
import importlib
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from . import digital as _digital
from .evaluate import Evaluator, TaskEvaluator, make_evaluator, torch_threads
from .store import FORMAT, VERSION, ResultsFile, SweepError

__all__ = ["CHANNELS", "DIGITAL_PREFIX", "SchemeSpec", "parse_scheme", "parse_schemes", "point_seed",
           "point_key", "run_sweep", "SweepResult", "analog_schemes"]

#: channels of the sweep: AWGN; Rayleigh with a new coefficient per complex symbol; Rayleigh with
#: one coefficient per block (per LDPC codeword on the digital path, per the analog package's
#: block on the analog path). The receiver knows the fading (perfect CSI).
CHANNELS = ("awgn", "rayleigh", "rayleigh-block")
DIGITAL_PREFIX = "digital:"
#: header fields a rerun must agree on to append to the same results file
_COMPAT = ("task", "model_sha256", "seed", "budget_rho", "block_length", "on_damage")


def _analog():
    return importlib.import_module("nncodec.analog")


def analog_schemes() -> list:
    """Names of the analog schemes (``nncodec.analog.SCHEMES``), or [] if the package is missing."""
    try:
        return list(_analog().SCHEMES)
    except ImportError:
        return []


@dataclass(frozen=True)
class SchemeSpec:
    """A scheme of the sweep: ``digital:<mcs>`` or the name of an analog scheme."""

    name: str
    kind: str            # "analog" | "digital"
    mcs: Optional[str] = None

    @property
    def digital(self) -> bool:
        return self.kind == "digital"


def parse_scheme(name: str) -> SchemeSpec:
    """Validate one scheme name; raises SweepError naming the choices."""
    name = str(name).strip()
    if name.lower().startswith(DIGITAL_PREFIX):
        from ..channel import MCS_NAMES, parse_mcs
        try:
            mod, rate = parse_mcs(name[len(DIGITAL_PREFIX):])
        except ValueError:
            raise SweepError(f"unknown digital scheme {name!r}: use digital:MCS with MCS one of "
                             f"{', '.join(MCS_NAMES)}") from None
        mcs = f"{mod}-{rate}"
        return SchemeSpec(DIGITAL_PREFIX + mcs, "digital", mcs)
    try:
        known = _analog().SCHEMES
    except ImportError as exc:  # pragma: no cover - the analog package ships with nncodec
        raise SweepError(f"analog scheme {name!r}: nncodec.analog is not available ({exc})") from None
    if name not in known:
        raise SweepError(f"unknown scheme {name!r}: analog schemes are {', '.join(known)}; digital "
                         f"ones are digital:MCS (e.g. digital:qpsk-1/2)")
    return SchemeSpec(name, "analog")


def parse_schemes(names: Iterable[str]) -> list:
    out, seen = [], set()
    for n in names:
        s = parse_scheme(n)
        if s.name not in seen:
            out.append(s)
            seen.add(s.name)
    if not out:
        raise SweepError("no scheme given")
    return out


def _fmt(x: Optional[float]) -> str:
    return "none" if x is None else repr(round(float(x), 9))


def point_seed(seed: int, channel: str, xkind: str, x: float, draw: int) -> int:
    """The channel seed of one point. It does not depend on the scheme: at a given (channel, SNR,
    draw) every scheme sees the same random numbers (common random numbers make the comparison
    between schemes less noisy than independent draws)."""
    h = hashlib.sha256(f"{int(seed)}|{channel}|{xkind}|{_fmt(x)}|{int(draw)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def point_key(channel: str, scheme: str, xkind: str, x: float, design: Optional[float], draw: int) -> str:
    return f"{channel}|{scheme}|{xkind}={_fmt(x)}|design={_fmt(design)}|draw={int(draw)}"


def _finite(v):
    """JSON-safe value: non-finite floats become None, numpy scalars Python numbers."""
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return _finite(v.tolist())
    return v


def _to_numpy(sd: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
        out[k] = np.asarray(v)
    return out


def model_sha256(sd: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        a = np.ascontiguousarray(sd[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def effective_wnr_db(sd: Mapping[str, np.ndarray], received: Mapping[str, np.ndarray]) -> Optional[float]:
    """WNR of the received float weights: sum of per-tensor weight variances x sizes over the
    squared error, in dB (None when there is no error)."""
    var = err = 0.0
    for k, w in sd.items():
        if w.dtype.kind != "f" or k not in received:
            continue
        w64 = w.astype(np.float64)
        var += float(w64.var()) * w64.size
        err += float(np.sum((np.asarray(received[k], dtype=np.float64).reshape(w.shape) - w64) ** 2))
    if err <= 0 or var <= 0:
        return None
    return 10.0 * math.log10(var / err)


def _channel_args(channel: str) -> dict:
    if channel == "awgn":
        return {"channel": "awgn"}
    return {"channel": "rayleigh", "fading": "block" if channel == "rayleigh-block" else "symbol"}


class SweepResult:
    """The records of a sweep (all of the results file, including earlier runs)."""

    def __init__(self, records: list, stats: Optional[dict] = None, path: Optional[str] = None):
        self.records = records
        self.stats = stats or {}
        self.path = path

    @classmethod
    def load(cls, path) -> "SweepResult":
        from .store import read_records
        return cls(read_records(path), path=str(path))

    @property
    def header(self) -> dict:
        return self.records[0] if self.records else {}

    @property
    def points(self) -> list:
        return [r for r in self.records if r["type"] == "point"]

    @property
    def digital(self) -> dict:
        return {r["mcs"]: r for r in self.records if r["type"] == "digital"}

    @property
    def tunes(self) -> list:
        return [r for r in self.records if r["type"] == "tune"]

    def summary(self) -> list:
        """One row per (channel, axis, design SNR, scheme, x): statistics of the metric over draws."""
        from .summary import summarize
        return summarize(self.points)

    def plot(self, path, **kw) -> list:
        from .plot import plot_sweep
        return plot_sweep(self, path, **kw)


def _resolve_x(snrs, noise_stds):
    if (snrs is None) == (noise_stds is None):
        raise SweepError("give either SNRs (snr_db) or noise standard deviations (noise_std), not both")
    if snrs is not None:
        xs = [float(s) for s in snrs]
        kind = "snr_db"
    else:
        xs = [float(s) for s in noise_stds]
        kind = "noise_std"
        if any(not (x >= 0) for x in xs):
            raise SweepError("noise standard deviations must be >= 0")
    if not xs or any(not math.isfinite(x) for x in xs):
        raise SweepError(f"{kind}: give at least one finite value")
    return kind, sorted(set(xs))


def run_sweep(*, task: Optional[str] = None, state_dict: Optional[Mapping[str, Any]] = None,
              evaluate: Optional[Callable] = None, evaluate_val: Optional[Callable] = None,
              schemes: Sequence[str], snrs: Optional[Sequence[float]] = None,
              noise_stds: Optional[Sequence[float]] = None, channels: Sequence[str] = ("awgn",),
              draws: int = 10, seed: int = 0, output=None, force: bool = False,
              design_snr_db: Optional[float] = None, budget_rho: float = 1.0, block_length: int = 1944,
              on_damage: str = "zeros", tune: bool = True, tune_draws: int = 2,
              tune_grid: Optional[Sequence] = None, threads: Optional[int] = None, jobs: int = 1,
              progress: Optional[Callable[[int, int, str], None]] = None) -> SweepResult:
    """Run (or resume) a sweep and return all its records.

    The model and metric: a built-in ``task`` ("digits", "fashion", "fashion-lenet300"; its
    trained weights, test split reported, validation split for tuning), or ``state_dict`` with
    ``evaluate(state_dict) -> float`` (and ``evaluate_val`` for tuning receivers such as
    mmse_pb; without it give ``tune=False`` to use the receivers' default parameters). A
    ``state_dict`` given together with a ``task`` replaces the task's trained weights.

    The grid: ``channels`` (:data:`CHANNELS`) x ``snrs`` (Es/N0 in dB) or ``noise_stds`` (the
    analog storage axis: noise standard deviation on the scaled weights, analog schemes only) x
    ``schemes`` (analog names from ``nncodec.analog.SCHEMES``, or ``digital:<mcs>``) x
    ``draws``. Receivers that need tuning (mmse_pb) are tuned with
    ``nncodec.analog.tune_mmse_pb`` on the validation metric at each SNR (or at the design SNR),
    ``tune_draws`` channel draws per candidate of ``tune_grid`` (a sequence of (lambda, beta);
    None: the analog package's default grid). ``design_snr_db`` fixes the SNR the analog schemes are designed for (mismatch
    studies; default: each point's own SNR). Digital schemes get the channel uses of an analog
    scheme at ``budget_rho`` real dimensions per weight (see ``nncodec.sweep.digital``);
    damaged tensors become zeros or the mean (``on_damage``).

    Results go to ``output`` (JSON Lines, see ``nncodec.sweep.store``) as they are computed; a
    rerun with the same ``output`` skips the points already there (``force=True`` starts over).
    ``progress(done, total, label)`` is called as points finish. ``jobs`` > 1 spreads the work
    over that many forked worker processes (one torch thread each; results are the same as with
    one process; the callbacks then run in the workers); with ``jobs=1``, ``threads`` sets torch's thread count while the sweep runs
    (None: as it is).
    """
    xkind, xs = _resolve_x(snrs, noise_stds)
    specs = parse_schemes(schemes)
    channels = list(dict.fromkeys(channels))
    for ch in channels:
        if ch not in CHANNELS:
            raise SweepError(f"unknown channel {ch!r}; channels: {', '.join(CHANNELS)}")
    if int(draws) < 1:
        raise SweepError("draws must be at least 1")
    if int(jobs) < 1:
        raise SweepError("jobs must be at least 1")
    jobs = int(jobs)
    if on_damage not in _digital.ON_DAMAGE:
        raise SweepError(f"on_damage must be one of {', '.join(_digital.ON_DAMAGE)}, got {on_damage!r}")
    if not (budget_rho > 0 and math.isfinite(budget_rho)):
        raise SweepError("budget_rho must be a positive number")
    if xkind == "noise_std":
        if any(s.digital for s in specs):
            raise SweepError("digital schemes need an SNR axis; the noise-std axis is for analog schemes")
        if channels != ["awgn"]:
            raise SweepError("the noise-std axis (analog storage model) takes channel awgn only")
    if design_snr_db is not None and xkind != "snr_db":
        raise SweepError("design_snr_db applies to the SNR axis")

    if task is not None and evaluate is None:
        evaluator: Evaluator = make_evaluator(task=task)
        sd = _to_numpy(state_dict if state_dict is not None else evaluator.state_dict())
    elif evaluate is not None:
        if state_dict is None:
            raise SweepError("give the state_dict that evaluate() measures")
        evaluator = make_evaluator(evaluate=evaluate, evaluate_val=evaluate_val)
        sd = _to_numpy(state_dict)
    else:
        raise SweepError("give a built-in task or a state_dict with an evaluate callback")
    task_name = task if task is not None else "custom"

    na = _analog() if any(not s.digital for s in specs) else None
    needs_tune = {}
    for s in specs:
        if not s.digital:
            needs_tune[s.name] = getattr(na.get_scheme(s.name), "receiver", None) == "mmse_pb"
    if tune and any(needs_tune.values()):
        if not evaluator.has_val:
            raise SweepError("scheme(s) " + ", ".join(n for n, v in needs_tune.items() if v)
                             + " tune their receiver on validation data: give evaluate_val, or tune=False")

    t_start = time.perf_counter()
    store = ResultsFile(output, force=force)
    stats = {"evaluations": 0, "cached_evaluations": 0, "points_new": 0, "points_skipped": 0,
             "tunings": 0, "tune_evaluations": 0, "seconds_eval": 0.0, "seconds_channel": 0.0,
             "seconds_tune": 0.0, "seconds_digital_setup": 0.0}
    try:
        with torch_threads(1 if jobs > 1 else threads):
            return _run(store, stats, t_start, evaluator, sd, task_name, specs, channels, xkind, xs,
                        int(draws), int(seed), design_snr_db, float(budget_rho), int(block_length),
                        on_damage, tune, int(tune_draws), tune_grid, needs_tune, na, progress,
                        1 if jobs > 1 else threads, int(jobs))
    finally:
        store.close()


class _Ctx:
    """What a unit of work needs; worker processes inherit it at fork."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


_CTX: Optional[_Ctx] = None


def _new_stats() -> dict:
    return {"evaluations": 0, "cached_evaluations": 0, "seconds_eval": 0.0, "seconds_channel": 0.0}


def _eval(ctx, sds, st, split: str = "test"):
    t = time.perf_counter()
    out = ctx.evaluator.test_many(sds) if split == "test" else [ctx.evaluator.val(s) for s in sds]
    st["seconds_eval"] += time.perf_counter() - t
    st["evaluations"] += len(sds)
    return out


def _init_worker():
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _pool_map(fn, units, jobs: int):
    """fn over units in order: inline, or in ``jobs`` forked worker processes (results in order)."""
    import multiprocessing as mp
    if jobs <= 1 or len(units) <= 1 or "fork" not in mp.get_all_start_methods():
        for u in units:
            yield fn(u)
        return
    with mp.get_context("fork").Pool(min(jobs, len(units)), initializer=_init_worker) as pool:
        yield from pool.imap(fn, units)


def _tune_unit(unit):
    ctx = _CTX
    key, scheme, channel, tsnr = unit
    st = _new_stats()
    c0 = time.process_time()
    t = time.perf_counter()
    kw = dict(_channel_args(channel), scheme=scheme, draws=ctx.tune_draws, seed=ctx.seed)
    if ctx.tune_grid is not None:
        kw["grid"] = ctx.tune_grid
    if ctx.xkind == "noise_std":
        kw["noise_std"], tsnr_arg = tsnr, None
    else:
        tsnr_arg = tsnr
    calls = [0]

    def val(sd):
        calls[0] += 1
        return ctx.evaluator.val(sd)

    params = _finite(dict(ctx.na.tune_mmse_pb(ctx.sd, val, tsnr_arg, **kw)))
    st["seconds_tune"] = time.perf_counter() - t
    st["tune_evaluations"] = calls[0]
    if os.getpid() != ctx.parent_pid:
        st["cpu_seconds"] = time.process_time() - c0
    rec = {"type": "tune", "key": key, "scheme": scheme, "channel": channel, ctx.xkind: tsnr,
           "params": params, "draws": ctx.tune_draws, "val_evaluations": calls[0],
           "seconds": round(st["seconds_tune"], 3)}
    return rec, st


def _point_unit(unit):
    ctx = _CTX
    channel, x, spec, pend = unit
    st = _new_stats()
    c0 = time.process_time()
    if spec.digital:
        recs = _digital_points(ctx, spec, channel, x, pend, st)
    else:
        params = None
        if ctx.tune and ctx.needs_tune.get(spec.name):
            params = ctx.tunes[_tune_key(channel, spec.name, ctx.design if ctx.design is not None else x,
                                         ctx.xkind)]
        recs = _analog_points(ctx, spec, channel, x, pend, params, st)
    if os.getpid() != ctx.parent_pid:  # a worker process: its CPU time is not the parent's
        st["cpu_seconds"] = time.process_time() - c0
    return [_finite(r) for r in recs], st


def _tune_key(channel, scheme, x, xkind="snr_db") -> str:
    return f"{channel}|{scheme}|{xkind}={_fmt(x)}"


def _merge(stats, st):
    for k, v in st.items():
        stats[k] = stats.get(k, 0) + v


def _run(store, stats, t_start, evaluator, sd, task_name, specs, channels, xkind, xs, draws, seed,
         design, budget_rho, block_length, on_damage, tune, tune_draws, tune_grid, needs_tune, na,
         progress, threads, jobs):
    global _CTX
    c_start = time.process_time()
    budget_uses = _digital.channel_uses_for(sd, budget_rho)
    header = {"type": "header", "format": FORMAT, "version": VERSION, "task": task_name,
              "model_sha256": model_sha256(sd), "seed": seed, "budget_rho": budget_rho,
              "block_length": block_length, "on_damage": on_damage,
              "float_weights": int(sum(v.size for v in sd.values() if v.dtype.kind == "f")),
              "channel_uses_budget": budget_uses}
    ctx = _Ctx(evaluator=evaluator, sd=sd, na=na, seed=seed, xkind=xkind, design=design,
               on_damage=on_damage, plans={}, eval_cache={}, tunes={}, tune=tune, tune_draws=tune_draws,
               tune_grid=tune_grid, needs_tune=needs_tune, parent_pid=os.getpid())
    old = store.header
    if old is None:
        st = _new_stats()
        header["reference_metric"] = _eval(ctx, [sd], st)[0]
        _merge(stats, st)
        store.append(header)
    else:
        diff = [k for k in _COMPAT if old.get(k) != header.get(k)]
        if diff:
            raise SweepError(f"{store.path} holds a different sweep ("
                             + ", ".join(f"{k}: {old.get(k)!r} there, {header.get(k)!r} here" for k in diff)
                             + "); use another output file or force=True (--force) to start over")
        header = old
    done = {r["key"] for r in store.records if r["type"] == "point"}
    ctx.tunes = {r["key"]: r["params"] for r in store.records if r["type"] == "tune"}
    dig_recs = {r["mcs"]: r for r in store.records if r["type"] == "digital"}

    # the units of work: one per (channel, x, scheme) with the draws not yet done
    units, total, count = [], len(channels) * len(xs) * len(specs) * draws, 0
    for channel in channels:
        for x in xs:
            for spec in specs:
                pend = []
                for d in range(draws):
                    k = point_key(channel, spec.name, xkind, x, None if spec.digital else design, d)
                    if k in done:
                        stats["points_skipped"] += 1
                        count += 1
                    else:
                        pend.append((d, k))
                if pend:
                    units.append((channel, x, spec, pend))
    if progress is not None and count:
        progress(count, total, "already done")

    # digital schemes: compress to the budget once per MCS (in this process)
    for mcs in dict.fromkeys(u[2].mcs for u in units if u[2].digital):
        t = time.perf_counter()
        p = _digital.plan(sd, mcs, budget_uses, block_length)
        stats["seconds_digital_setup"] += time.perf_counter() - t
        rec = dig_recs.get(mcs)
        if rec is None or rec.get("sha256") != p.sha:
            st = _new_stats()
            rec = {"type": "digital", **p.summary(), "sha256": p.sha,
                   "bits_per_weight": (8.0 * len(p.data) / header["float_weights"]) if p.feasible else None,
                   "error_free_metric": _eval(ctx, [p.decoded], st)[0] if p.feasible else None}
            _merge(stats, st)
            store.append(_finite(rec))
        if p.feasible:
            ctx.eval_cache[p.sha] = (rec["error_free_metric"], effective_wnr_db(sd, p.decoded))
        ctx.plans[mcs] = p

    # receivers tuned on the validation split, once per (channel, scheme, SNR)
    tune_units = []
    if tune:
        for channel, x, spec, _ in units:
            if needs_tune.get(spec.name):
                tsnr = design if design is not None else x
                key = _tune_key(channel, spec.name, tsnr, xkind)
                if key not in ctx.tunes and key not in {u[0] for u in tune_units}:
                    tune_units.append((key, spec.name, channel, tsnr))
    _CTX = ctx
    try:
        for rec, st in _pool_map(_tune_unit, tune_units, jobs):
            store.append(rec)
            ctx.tunes[rec["key"]] = rec["params"]
            stats["tunings"] += 1
            _merge(stats, st)
            if progress is not None:
                progress(count, total, f"tuned {rec['scheme']} {rec['channel']} {_fmt(rec[xkind])}")
        for recs, st in _pool_map(_point_unit, units, jobs):
            _merge(stats, st)
            for r in recs:
                store.append(r)
                done.add(r["key"])
                stats["points_new"] += 1
                count += 1
            if progress is not None and recs:
                r = recs[-1]
                progress(count, total, f"{r['channel']} {r['scheme']} {_fmt(r.get(xkind))}")
    finally:
        _CTX = None
    stats["seconds"] = time.perf_counter() - t_start
    stats["cpu_seconds"] = stats.get("cpu_seconds", 0.0) + time.process_time() - c_start
    stats["threads"] = threads
    stats["jobs"] = jobs
    store.append(_finite({"type": "run", **{k: (round(v, 3) if isinstance(v, float) else v)
                                            for k, v in stats.items()}}))
    return SweepResult(list(store.records), stats=stats, path=store.path)


def _analog_points(ctx, spec, channel, x, pend, params, st):
    received, infos = [], []
    for d, k in pend:
        ps = point_seed(ctx.seed, channel, ctx.xkind, x, d)
        kw = dict(_channel_args(channel), seed=ps, receiver_params=params)
        if ctx.xkind == "noise_std":
            kw["noise_std"] = x
            snr = None
        else:
            snr = x
            if ctx.design is not None:
                kw["design_snr_db"] = ctx.design
        t = time.perf_counter()
        rx, info = ctx.na.transmit_weights(ctx.sd, spec.name, snr, **kw)
        rx = _to_numpy(rx)
        st["seconds_channel"] += time.perf_counter() - t
        received.append(rx)
        infos.append((d, k, ps, info, effective_wnr_db(ctx.sd, rx)))
    metrics = _eval(ctx, received, st)
    out = []
    for (d, k, ps, info, ewnr), m in zip(infos, metrics):
        rec = {"type": "point", "key": k, "kind": "analog", "channel": channel, "scheme": spec.name,
               ctx.xkind: x, "design_snr_db": ctx.design, "draw": d, "seed": ps, "metric": m,
               "effective_wnr_db": ewnr}
        for f in ("wnr_db", "weight_mse", "channel_uses", "side_channel_uses", "rho"):
            if f in info:
                rec[f] = info[f]
        if params is not None:
            rec["receiver_params"] = params
        out.append(rec)
    return out


def _digital_points(ctx, spec, channel, x, pend, st):
    p = ctx.plans[spec.mcs]
    sd = ctx.sd
    out, todo = [], {}
    for d, k in pend:
        ps = point_seed(ctx.seed, channel, "snr_db", x, d)
        rec = {"type": "point", "key": k, "kind": "digital", "channel": channel, "scheme": spec.name,
               "snr_db": x, "design_snr_db": None, "draw": d, "seed": ps}
        if not p.feasible:
            rec.update(metric=None, infeasible=True)
            out.append(rec)
            continue
        t = time.perf_counter()
        container, info = _digital.send(p, channel, x, ps, ctx.on_damage)
        st["seconds_channel"] += time.perf_counter() - t
        rec.update(info)
        h = "header-lost" if container is None else hashlib.sha256(container).hexdigest()
        rec["intact"] = h == p.sha
        if h in ctx.eval_cache:
            rec["metric"], rec["effective_wnr_db"] = ctx.eval_cache[h]
            rec["cached"] = True
            st["cached_evaluations"] += 1
        elif h in todo:
            todo[h][0].append(rec)
            st["cached_evaluations"] += 1
        else:
            rx = _digital.zeros_like(sd) if container is None else _digital.decode_received(container)
            todo[h] = ([rec], rx)
        out.append(rec)
    if todo:
        metrics = _eval(ctx, [rx for _, rx in todo.values()], st)
        for (h, (recs, rx)), m in zip(todo.items(), metrics):
            ewnr = effective_wnr_db(sd, rx)
            for i, rec in enumerate(recs):
                rec.update(metric=m, cached=i > 0, effective_wnr_db=ewnr)
            ctx.eval_cache[h] = (m, ewnr)
    return out
