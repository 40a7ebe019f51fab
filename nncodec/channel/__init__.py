"""Digital channel path: 802.11n LDPC codes, Gray QAM, AWGN and Rayleigh fading, and the
transmission of ``.nnc`` containers with per-tensor recovery.

The stable API for sweeps (e.g. digital curves against an analog scheme):

    from nncodec.channel import fit_to_budget, send_nnc
    fit = fit_to_budget(state_dict, channel_uses=80_000, mcs="qpsk-1/2")   # .nnc that fits
    rx = send_nnc(fit.data, mcs="qpsk-1/2", snr_db=2.0, channel="awgn", seed=0,
                  on_damage="zeros")
    rx.tensors            # received model (dict of arrays; None if nothing usable arrived)
    rx.stats              # fer, info_ber, frames_lost, tensors_damaged, channel_uses, ...

Lower level: ``transmit_nnc`` (the full per-tensor report), ``simulate_link`` (any bytes),
``channel_uses_for`` / ``max_nnc_bytes`` (what a stream costs / what a budget holds).

SNR is always Es/N0 in dB with unit average symbol energy (see ``channels``).
Modules: ``ldpc_tables`` (the standard's prototype matrices), ``ldpc`` (encoder, decoder),
``modulation``, ``channels``, ``framing``, ``transmit``, ``budget``, ``capacity`` (Shannon limits),
``cli``.
"""
from .budget import BudgetError, BudgetFit, channel_uses_for, fit_to_budget, max_nnc_bytes
from .channels import CHANNELS, awgn, n0_from_snr, rayleigh
from .ldpc import CODE_RATES, LDPCCode, get_code
from .modulation import MODULATIONS, Modulation, get_modulation
from .transmit import (MCS_NAMES, ON_DAMAGE, DamagedModelError, LinkResult, Reception, TransmitReport,
                       parse_mcs, raise_for_damage, recover_container, send_nnc, simulate_link,
                       transmit_nnc)

__all__ = ["BudgetError", "BudgetFit", "Reception", "channel_uses_for", "fit_to_budget",
           "max_nnc_bytes", "send_nnc", "CHANNELS", "CODE_RATES", "MCS_NAMES", "MODULATIONS", "ON_DAMAGE", "DamagedModelError",
           "LDPCCode", "LinkResult", "Modulation", "TransmitReport", "awgn", "get_code",
           "get_modulation", "n0_from_snr", "parse_mcs", "raise_for_damage", "rayleigh",
           "recover_container", "simulate_link", "transmit_nnc"]
