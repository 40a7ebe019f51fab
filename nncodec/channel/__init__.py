"""Digital channel path: 802.11n LDPC codes, Gray QAM, AWGN and Rayleigh fading, and the
transmission of ``.nnc`` containers with per-tensor recovery.

    from nncodec.channel import transmit_nnc
    report = transmit_nnc(nnc_bytes, mcs="16qam-3/4", channel="awgn", snr_db=12.0, seed=0,
                          on_damage="zeros")

SNR is always Es/N0 in dB with unit average symbol energy (see ``channels``).
Modules: ``ldpc_tables`` (the standard's prototype matrices), ``ldpc`` (encoder, decoder),
``modulation``, ``channels``, ``framing``, ``transmit``, ``capacity`` (Shannon limits), ``cli``.
"""
from .channels import CHANNELS, awgn, n0_from_snr, rayleigh
from .ldpc import CODE_RATES, LDPCCode, get_code
from .modulation import MODULATIONS, Modulation, get_modulation
from .transmit import (MCS_NAMES, ON_DAMAGE, DamagedModelError, LinkResult, TransmitReport,
                       parse_mcs, raise_for_damage, recover_container, simulate_link, transmit_nnc)

__all__ = ["CHANNELS", "CODE_RATES", "MCS_NAMES", "MODULATIONS", "ON_DAMAGE", "DamagedModelError",
           "LDPCCode", "LinkResult", "Modulation", "TransmitReport", "awgn", "get_code",
           "get_modulation", "n0_from_snr", "parse_mcs", "raise_for_damage", "rayleigh",
           "recover_container", "simulate_link", "transmit_nnc"]
