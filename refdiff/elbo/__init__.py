"""The variational bound (negative ELBO) of diffusion models, term by term; MATH.md chapter 5.

Conventions
-----------
* Discrete time is 0-based (MATH.md chapter 1): array index ``t`` is paper step ``t + 1``.
  The per-step term stored at index ``t >= 1`` is KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
  in 0-based variables (the paper's L_t); index 0 holds the decoder term -log p(x_0 | x_1)
  in paper variables (the paper's L_0).  The prior term L_T is kept apart.
* Every term is in **nats, summed over the data dimensions**, one value per sample
  (shape (N,)).  Bits per dimension = nats / (D ln 2), D = number of data dimensions.
* Discrete data live in [-1, 1] on ``bins`` equally spaced levels ``-1 + 2k/(bins-1)``
  (bin width 2/(bins-1)); the two edge bins extend to -inf and +inf, MATH.md (5.9).
* Everything is float64 and namespace-agnostic; randomness comes from an explicit
  ``numpy.random.Generator`` (noise drawn on the host by :func:`refdiff.backend.standard_normal`).

Models are plain callables ``model(x_t, t)`` with ``t`` an int64 array of shape (N,).
For ``variance_type="learned_range"`` and ``"learned"`` the model returns its prediction
and its variance output concatenated along axis 1, the one contract of
:mod:`refdiff.variance` that ``refdiff.sample`` uses as well.

Modules: ``gaussian`` (KL, densities, CDFs, the discretized decoder), ``terms`` (the
reverse-process mean, the prior, the per-step terms, units), ``importance`` (sampling t),
``bound`` (:func:`nll_bound`), ``objectives`` (L_simple, the hybrid), ``vdm`` (the
continuous-time bound).  Every public name is importable from here and from ``refdiff``.
"""

from ..variance import VARIANCE_TYPES, reverse_log_variance
from .bound import NLLBound, nll_bound
from .gaussian import (
    TANH_CDF_MAX_ABS_ERROR,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    gaussian_log_density,
    normal_kl,
    standard_normal_cdf,
)
from .importance import ImportanceState, importance_probs, importance_sample, importance_update
from .objectives import hybrid_loss, l_simple
from .terms import (
    bits_per_dim,
    continuous_to_discrete_bpd,
    dequantization_offset,
    eps_mse_weight,
    prior_term,
    reverse_mean_log_variance,
    vlb_term,
)
from .vdm import VDMBound, snr_derivative, vdm_diffusion_integrand, vdm_vlb

__all__ = [
    "normal_kl",
    "gaussian_log_density",
    "standard_normal_cdf",
    "approx_standard_normal_cdf",
    "TANH_CDF_MAX_ABS_ERROR",
    "discretized_gaussian_log_likelihood",
    "VARIANCE_TYPES",
    "reverse_log_variance",
    "reverse_mean_log_variance",
    "eps_mse_weight",
    "prior_term",
    "vlb_term",
    "bits_per_dim",
    "dequantization_offset",
    "continuous_to_discrete_bpd",
    "ImportanceState",
    "importance_probs",
    "importance_sample",
    "importance_update",
    "NLLBound",
    "nll_bound",
    "l_simple",
    "hybrid_loss",
    "snr_derivative",
    "vdm_diffusion_integrand",
    "VDMBound",
    "vdm_vlb",
]
