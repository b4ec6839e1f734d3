"""The terms of the bound: the reverse-process mean and variance, the prior, the per-step
KL and decoder terms, and units; MATH.md (5.3)-(5.7), (5.11), (5.12)."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_finite_scalar, check_int
from ..backend import array_namespace, asarray_like, to_numpy
from ..forward import q_posterior_mean, q_posterior_mean_variance
from ..parameterization import to_eps_x0
from ..schedules import Schedule, alpha_sigma, gather
from ..variance import log_betas_large, reverse_log_variance
from ._common import _LN2, _check_bins, _check_choice, _check_term, _flat_sum, _number_or_array
from .gaussian import discretized_gaussian_log_likelihood, gaussian_log_density, normal_kl

__all__ = [
    "reverse_mean_log_variance",
    "eps_mse_weight",
    "prior_term",
    "vlb_term",
    "bits_per_dim",
    "dequantization_offset",
    "continuous_to_discrete_bpd",
]


# ---------------------------------------------------------------------------- reverse process
def reverse_mean_log_variance(schedule: Schedule, model_output, x_t, t, var_output=None, *, prediction_type: str = "epsilon",
                              variance_type: str = "fixed_small", clip_denoised: bool = False, fixed_large_t0: str = "beta_tilde_1"):
    """Mean and log variance of p(x_{t-1} | x_t), MATH.md (5.5)-(5.7):
    ``mu = mu_tilde(x_t, x0_hat)`` (the posterior mean (3.2) at the model's x0_hat), which
    for an epsilon model equals ``(x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(a_t)``
    (a_t = 1 - beta_t, ``schedule.alphas``).

    ``clip_denoised`` clips x0_hat to [-1, 1] first (as the DDPM code's sampler and bpd
    evaluation do).  Returns ``(mean, log_variance, x0_hat)``.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (float64 arrays of length T).
    model_output : array (N, ...)
        The model's prediction at (x_t, t), of ``prediction_type``.
    x_t : array like model_output
        The state at t.
    t : int or integer array (N,)
        0-based timesteps in [0, T-1].
    var_output : array like x_t, optional
        The model's variance output (required for the learned variance types).
    prediction_type : str, default "epsilon"
        One of refdiff.PREDICTION_TYPES.
    variance_type : str, default "fixed_small"
        One of refdiff.VARIANCE_TYPES.
    clip_denoised : bool, default False
        Clip x0_hat to [-1, 1].
    fixed_large_t0 : {"beta_tilde_1", "beta_0"}
        The "fixed_large" variance at t = 0 (:func:`refdiff.variance.reverse_log_variance`).

    Returns
    -------
    mean : array like x_t
    log_variance : array
        Broadcasting against x_t.
    x0_hat : array like x_t
    """
    _check_term(schedule, t, clip_denoised, x_t=x_t, model_output=model_output, var_output=var_output)
    alpha, sigma = alpha_sigma(schedule, t, x_t)
    _, x0_hat = to_eps_x0(model_output, x_t, alpha, sigma, prediction_type)
    if clip_denoised:
        x0_hat = array_namespace(x0_hat).clip(x0_hat, -1.0, 1.0)
    mean = q_posterior_mean(schedule, x0_hat, x_t, t)
    log_var = reverse_log_variance(schedule, t, x_t, variance_type, var_output, fixed_large_t0=fixed_large_t0)
    return mean, log_var, x0_hat


def eps_mse_weight(schedule: Schedule, variance_type: str = "fixed_small", *, fixed_large_t0: str = "beta_tilde_1") -> np.ndarray:
    """The (T,) weights w_t = beta_t^2 / (2 Sigma_t a_t (1 - alpha_bar_t)) of MATH.md (5.5):
    with a fixed reverse variance Sigma_t, ``L_t = C_t + w_t ||eps - eps_hat||^2`` for
    t >= 1 (C_t = 0 for fixed_small), and at t = 0 w_0 is the weight of the squared error
    in the Gaussian decoder (5.10).  Host float64 array.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (float64 arrays of length T).
    variance_type : {"fixed_small", "fixed_large"}
        The fixed reverse variance Sigma_t.
    fixed_large_t0 : {"beta_tilde_1", "beta_0"}
        The "fixed_large" variance at t = 0.

    Returns
    -------
    numpy.ndarray
        (T,) float64 weights w_t.

    Raises
    ------
    ValueError
        If ``variance_type`` or ``fixed_large_t0`` is unknown.
    """
    _check_choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
    _check_choice("fixed_large_t0", fixed_large_t0, ("beta_tilde_1", "beta_0"))
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    log_var = schedule.posterior_log_variance_clipped if variance_type == "fixed_small" else log_betas_large(schedule, fixed_large_t0)
    return schedule.betas**2 / (2.0 * np.exp(log_var) * schedule.alphas * (1.0 - schedule.alpha_bars))


def prior_term(schedule: Schedule, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)) per sample, nats summed over dimensions, MATH.md (5.3)
    (x_T is array index T-1).  NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (float64 arrays of length T).
    x0 : array (N, ...)
        The data.

    Returns
    -------
    array (N,)
        L_T in nats.
    """
    _check_term(schedule, 0, x0=x0)
    t = schedule.T - 1
    a, s = gather(schedule.sqrt_alpha_bars, t, x0), gather(schedule.sqrt_one_minus_alpha_bars, t, x0)
    xp = array_namespace(x0)
    return _flat_sum(normal_kl(a * x0, 2.0 * xp.log(s) + 0.0 * x0, 0.0, 0.0))


def vlb_term(schedule: Schedule, x0, x_t, t, model_output, var_output=None, *, prediction_type: str = "epsilon",
             variance_type: str = "fixed_small", decoder: str = "discretized", bins: int = 256, cdf: str = "exact",
             clip_denoised: bool = False, fixed_large_t0: str = "beta_tilde_1"):
    """The bound's term at 0-based index ``t`` per sample, nats summed over dimensions:

    * t >= 1: ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))``, MATH.md (5.4);
    * t = 0: the decoder ``-log p(x_0 | x_1)``, discretized (``decoder="discretized"``,
      MATH.md (5.9), data on ``bins`` levels in [-1, 1]) or a Gaussian density
      (``decoder="gaussian"``, MATH.md (5.10), for continuous data).

    ``t`` is an int or an int array of shape (N,); ``model_output``/``var_output`` are the
    model's outputs at (x_t, t) (see :func:`reverse_mean_log_variance`).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (float64 arrays of length T).
    x0 : array (N, ...)
        The data (on the ``bins`` grid for the discretized decoder).
    x_t : array like x0
        The noised data at t.
    t : int or integer array (N,)
        0-based timesteps in [0, T-1].
    model_output, var_output : array like x0, and array or None
        The model's prediction and variance output at (x_t, t).
    prediction_type, variance_type, clip_denoised, fixed_large_t0
        As in :func:`reverse_mean_log_variance`.
    decoder : {"discretized", "gaussian"}
        The term at t = 0, as above.
    bins : int, default 256
        The number of data levels (discretized decoder).
    cdf : {"exact", "tanh"}
        The normal CDF of the discretized decoder.

    Returns
    -------
    array (N,)
        The term in nats, per sample.

    Raises
    ------
    ValueError
        If a choice is unknown, or (at t = 0, discretized) x0 is off the grid.
    """
    _check_choice("decoder", decoder, ("discretized", "gaussian"))
    _check_bins(bins)
    _check_choice("cdf", cdf, ("exact", "tanh"))
    _check_term(schedule, t, clip_denoised, x0=x0, x_t=x_t, model_output=model_output, var_output=var_output)
    xp = array_namespace(x0, x_t)
    mean, log_var, _ = reverse_mean_log_variance(
        schedule, model_output, x_t, t, var_output, prediction_type=prediction_type,
        variance_type=variance_type, clip_denoised=clip_denoised, fixed_large_t0=fixed_large_t0)
    true_mean, _, true_log_var = q_posterior_mean_variance(schedule, x0, x_t, t)
    kl = _flat_sum(normal_kl(true_mean, true_log_var, mean, log_var))
    t_host = np.asarray(to_numpy(t) if hasattr(t, "shape") else t)
    if not np.any(t_host == 0):
        return kl
    if decoder == "discretized":
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var + 0.0 * x0, bins, cdf)
    else:
        nll = -gaussian_log_density(x0, mean, log_var + 0.0 * x0)
    nll = _flat_sum(nll)
    if t_host.ndim == 0:
        return nll
    return xp.where(asarray_like(t_host == 0, x0, dtype=xp.bool), nll, kl)


# ---------------------------------------------------------------------------- units
def bits_per_dim(nats, dims: int):
    """nats (summed over ``dims`` dimensions) -> bits per dimension, MATH.md (5.11).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    nats : array or float
        Values in nats, each summed over ``dims`` dimensions.
    dims : int
        The number of data dimensions D.

    Returns
    -------
    array or float
        ``nats / (dims ln 2)``.
    """
    _number_or_array("nats", nats)
    check_int("dims", dims, min=1)
    return nats / (dims * _LN2)


def dequantization_offset(bins: int = 256, *, convention: str = "levels", units: str = "nats",
                          data_range: float = 2.0) -> float:
    """-log(bin width) per dimension, the offset between a continuous density on scaled
    data and a discrete likelihood, MATH.md (5.12), (7.7); the one dequantization convention
    of refdiff (used by :func:`refdiff.dequantized_bits_per_dim` as well).

    ``convention="levels"`` (default): bin width data_range/(bins-1), the grid of
    :func:`discretized_gaussian_log_likelihood` (levels -1 + 2k/(bins-1) for data_range 2);
    offset log((bins-1)/2) = log 127.5 for 8-bit data on [-1, 1] (6.994 bits).
    ``convention="interval"``: bin width data_range/bins, data (k + u)/bins * 2 - 1 with
    u ~ U[0,1) (the flow literature's uniform dequantization); offset log(bins/2) (7 bits
    for 8-bit data on [-1, 1], 8 on [0, 1]).

    Parameters
    ----------
    bins : int, default 256
        The number of levels (>= 2).
    convention : {"levels", "interval"}
        The bin width, as above.
    units : {"nats", "bits"}
        The unit of the result.
    data_range : float, default 2.0
        The width of the data interval (> 0).

    Returns
    -------
    float
        The offset per dimension.

    Raises
    ------
    ValueError
        If ``bins`` < 2, a choice is unknown, or ``data_range`` is not finite and positive.
    TypeError
        If ``bins`` is not an integer.
    """
    _check_bins(bins)
    _check_choice("convention", convention, ("levels", "interval"))
    _check_choice("units", units, ("nats", "bits"))
    check_finite_scalar("data_range", data_range, low=0.0, low_open=True)
    off = math.log((bins - 1) / data_range) if convention == "levels" else math.log(bins / data_range)
    return off if units == "nats" else off / _LN2


def continuous_to_discrete_bpd(nats_per_dim, bins: int = 256, *, convention: str = "levels", data_range: float = 2.0):
    """An upper bound on the discrete bits/dim from a continuous density's negative
    log-likelihood in nats per dimension on dequantized data, MATH.md (5.12):
    ``(nats_per_dim + offset) / ln 2`` with :func:`dequantization_offset`.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    nats_per_dim : array or float
        The continuous negative log-likelihood, nats per dimension.
    bins, convention, data_range
        As in :func:`dequantization_offset`.

    Returns
    -------
    array or float
        Bits per dimension.
    """
    _number_or_array("nats_per_dim", nats_per_dim)
    return (nats_per_dim + dequantization_offset(bins, convention=convention, data_range=data_range)) / _LN2
