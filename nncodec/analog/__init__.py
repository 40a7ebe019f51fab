"""Analog transmission of neural-network weights (issue 7): mapping, channel, receivers.

    import nncodec.analog as na
    received, info = na.transmit_weights(state_dict, "mmse", snr_db=10.0, channel="awgn", seed=0)
    info["channel_uses"], info["wnr_db"], info["weight_mse"]

Units
-----
``snr_db`` is Es/N0 in dB with unit average energy per complex channel use (the convention of
``nncodec.channel``): the noise is CN(0, N0) with N0 = 10^(-snr_db/10), N0/2 per real
dimension, so every real dimension sees the signal-to-noise ratio SNR. Weights are real, so one
complex channel use carries two of them (rho = 1 real dimension per weight). ``noise_std``
selects instead the noisy-storage model of seed 002: each real value is scaled into [-1, 1] and
Gaussian noise of that std is added (info["snr_db"] then gives the equivalent Es/N0).
Rayleigh fading: y = h x + n, h ~ CN(0, 1), new per channel use (``fading="symbol"``) or per
``block_len`` uses (``"block"``); the receiver knows h and equalizes (y / h), which leaves the
weights unbiased with noise N0 / (2 |h|^2) per real value, and the MMSE receivers use that
per-weight noise power. Channel uses are complex channel uses; ``rho`` in info counts real
analog dimensions per float weight.

Transmitter (per float tensor; integer and bool tensors go losslessly as side bits)
------------------------------------------------------------------------------------
- ``standard`` mapping: x = (w - mean) / std. ``linear`` mapping (seed 002, eqs. 1-2): x =
  alpha w - beta maps the range [min, max] onto [-1, 1] (alpha = 2 / (max - min), beta = alpha
  (max + min) / 2); the receiver unscales, w_out = (phi(x) + beta) / alpha = w + eps / alpha.
- A gain then sets the tensor's average energy per real dimension to p/2 (``snr_db`` axis, p = 1
  unless a power allocation says otherwise, renormalized so the whole stream has unit average
  symbol energy) or its peak to 1 (``noise_std`` axis).
- Sign protection (seed 002): |w| goes analog (a range half as wide, so twice the scale),
  the signs go as side bits.
- Adaptive mapping (seed 002): two magnitude groups |w| < t and |w| >= t with their own scale
  and shift, so small weights get a larger scale; t is a quantile or (default) the t minimizing
  N_small range_small^2 + N_large range_large^2 (the weight MSE under equal noise per cell).
- Adaptive redundancy (seed 002): the N_large largest |w| of the model are sent r_large times,
  the rest r_small times; N_large is the largest count with r_avg = (r_small N_small + r_large
  N_large) / N within the budget (default 1.006 as in the seed). Copies are combined by maximum
  ratio combining (weights |h|^2 / noise), so two copies give 3 dB on AWGN.
- Repetition (rho = 2, ``rep2-*``): every weight twice, MRC at the receiver.
- Shannon-Kotelnikov 2:1 double spiral (rho = 2, ``sk2-*``, seed 000; see
  :mod:`nncodec.analog.spiral`): u = (w - mean) / std -> f(u) = sign(u) |u| e^{i gamma |u|},
  the w < 0 arm being the w >= 0 arm rotated by pi so that w and -w never meet; gamma designed for
  the design SNR; ML decoding = nearest point on the spiral, MMSE decoding = posterior mean over
  a fine grid with the empirical (histogram) prior. Option ``sk_stretch="sqrt"``: radius
  k sqrt|u| (uniform stretch along the curve; not in the seed, better at high SNR).
- Unequal protection: :func:`allocate_by_sensitivity` turns per-tensor sensitivities (e.g. a
  diagonal Fisher estimate, :func:`diag_fisher`) into per-tensor power or repetition
  (``TensorAllocation``), used through the scheme option ``allocation``.

Receivers (seed 000), per group with prior mean mu and variance var, r = the unscaled received
value (after MRC), nv its noise power in the weight domain:
- ML: w_hat = r (for the linear mapping also clipped to the group's range, which the receiver
  knows from the side info: the ML estimate under that known support).
- MMSE: w_hat = (var r + mu nv) / (var + nv), the Gaussian prior from the sample mean and
  variance (free for the standard mapping, whose scale and shift are those two values; charged
  as two more float32 per group for the linear mapping).
- MMSE_pb: w_hat = mu + (var (r - mu) + beta var nv) / (var + (1 - 2 var lambda) nv), the
  minimizer of E[(w_hat - W)^2 e^{lambda (W - mu)^2 + beta (W - mu)} | R]: seed 000's formula
  applied to the weights centred on the prior mean (identical for mu = 0); lambda and beta are
  given in standardized units (see :mod:`nncodec.analog.receivers`); lambda = beta = 0 is MMSE,
  lambda' = 1/2, beta = 0 is ML. :func:`tune_mmse_pb` picks them on a validation callback.
The MMSE receivers assume the noise of ``design_snr_db`` (default: the true SNR), so a
mismatched design can be studied.

Side information and channel uses
---------------------------------
Every side value is charged: scales, shifts, priors, gamma as float32 (32 bits each), the
spiral's histogram prior as 64 bins x 16 bits + range, sign bits (1 per weight), group labels of
adaptive mapping / redundancy at their ideal entropy-coded length n H(labels) + 32 bits, integer
tensors at their size, a tensor's repetition count (8 bits) under an allocation. These bits are
sent digitally, assumed error-free, at ``side_rate`` bits per complex channel use (default 1,
e.g. QPSK with a rate-1/2 code), and info["side_channel_uses"] = ceil(side_bits / side_rate).
Tensor names and shapes are known to both ends (the architecture) and not charged.
info["channel_uses"] = analog uses (ceil(real dims / 2)) + side uses.

Reported quality: info["wnr_db"] (seed 003's WNR) = 10 log10(weight variance / noise power in
the weight domain before estimation), both summed over tensors (for the spiral the noise power
is that of the ML estimate, measured); info["weight_mse"] after the receiver;
:func:`weight_mse_bound` gives D = var (1 + SNR)^(-rho), the optimum for a Gaussian source.
"""
from .allocation import DEFAULT_PB_GRID, allocate_by_sensitivity, diag_fisher, tune_mmse_pb
from .receivers import ml, mmse, mmse_pb
from .schemes import (EXPANSIONS, MAPPINGS, RECEIVERS, SCHEMES, AnalogConfigError, AnalogScheme,
                      TensorAllocation, get_scheme)
from .spiral import decode_ml, decode_mmse, design_gamma, sk_map
from .transmit import CHANNELS, DEFAULT_BLOCK_LEN, FADINGS, transmit_weights, weight_mse_bound

__all__ = ["SCHEMES", "RECEIVERS", "MAPPINGS", "EXPANSIONS", "AnalogConfigError", "AnalogScheme",
           "TensorAllocation", "get_scheme", "transmit_weights", "weight_mse_bound", "ml", "mmse",
           "mmse_pb", "sk_map", "decode_ml", "decode_mmse", "design_gamma", "CHANNELS", "FADINGS",
           "DEFAULT_BLOCK_LEN", "allocate_by_sensitivity", "diag_fisher", "tune_mmse_pb",
           "DEFAULT_PB_GRID"]
