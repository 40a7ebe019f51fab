"""Sweeps: a model sent through channels x SNRs x schemes x draws, its metric measured each time.

    from nncodec.sweep import run_sweep
    res = run_sweep(task="fashion", schemes=["ml", "mmse", "mmse_pb", "digital:qpsk-1/2"],
                    snrs=range(0, 21, 2), channels=["awgn", "rayleigh"], draws=10,
                    output="sweep.jsonl")          # resumable: a rerun skips finished points
    res.summary()                                   # mean / percentiles over draws per point
    res.plot("sweep.png")

    # your own model: a state_dict and callables returning the metric (higher is better)
    run_sweep(state_dict=sd, evaluate=my_test_accuracy, evaluate_val=my_val_accuracy,
              schemes=["ml", "mmse_pb"], snrs=[0, 5, 10], output="mine.jsonl")

Analog schemes come from ``nncodec.analog`` (``SCHEMES``); digital ones are ``digital:<mcs>``:
the model compressed by nncodec to fit the channel uses of an analog scheme at ``budget_rho``
real dimensions per weight and sent through the LDPC / QAM link of ``nncodec.channel``
(``nncodec.sweep.digital``). The results file format is described in ``nncodec.sweep.store``.
"""
from .digital import budget_bytes, fit_to_budget
from .evaluate import CallbackEvaluator, Evaluator, TaskEvaluator, make_evaluator
from .plot import plot_sweep
from .run import (CHANNELS, DIGITAL_PREFIX, SchemeSpec, SweepResult, analog_schemes, parse_scheme,
                  parse_schemes, point_key, point_seed, run_sweep)
from .store import SweepError, read_records
from .summary import curve, envelope, summarize, x_at_level

__all__ = ["CHANNELS", "DIGITAL_PREFIX", "CallbackEvaluator", "Evaluator", "SchemeSpec", "SweepError",
           "SweepResult", "TaskEvaluator", "analog_schemes", "budget_bytes", "curve", "envelope",
           "fit_to_budget", "make_evaluator", "parse_scheme", "parse_schemes", "plot_sweep", "point_key",
           "point_seed", "read_records", "run_sweep", "summarize", "x_at_level"]
