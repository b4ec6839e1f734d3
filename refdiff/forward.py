"""The forward (noising) process and its posterior, MATH.md chapters 2 and 3.

All functions take integer timesteps ``t`` (0-based array index = paper step t+1), as a
Python int or an integer array of shape (N,) broadcast against the batch dimension, and
return arrays in the namespace of the data.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_array, check_same_shape
from .backend import array_namespace
from .schedules import Schedule, gather

__all__ = ["q_step_mean_variance", "q_mean_variance", "q_sample", "q_posterior_mean", "q_posterior_mean_variance"]


def _check(schedule, t, **arrays):
    """schedule a Schedule; the arrays real floating, non-empty, of one shape; t integer
    timestep(s) in [0, T) with one per sample (or one shared)."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    for k, v in arrays.items():
        check_array(k, v)
    if len(arrays) > 1:
        check_same_shape(**arrays)
    schedule.check_t(t)
    name, x = next(iter(arrays.items()))
    if not isinstance(t, (int, np.integer)) and t.ndim == 1 and x.ndim >= 1 and t.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample coefficient: t has shape {tuple(t.shape)} but {name} has shape "
                         f"{tuple(x.shape)}: one timestep per sample (or an int for all)")


def q_step_mean_variance(schedule: Schedule, x_prev, t):
    """One forward step q(x_t | x_{t-1}) = N(sqrt(a_t) x_{t-1}, beta_t I), a_t = 1 - beta_t
    (``schedule.alphas``), MATH.md (2.2).

    Returns ``(mean, variance)``; variance is shaped to broadcast against ``x_prev``.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (``refdiff.make_schedule``), float64 arrays of length T.
    x_prev : array (N, ...)
        The state x_{t-1} (x_0 when t = 0).
    t : int or integer array of shape (N,)
        0-based timesteps in [0, T-1] (array index t is paper step t+1), one per sample or shared.

    Returns
    -------
    mean, variance : arrays
        sqrt(1 - beta_t) x_prev and beta_t, the variance shaped to broadcast against x_prev.
    """
    _check(schedule, t, x_prev=x_prev)
    return gather(schedule.alphas, t, x_prev) ** 0.5 * x_prev, gather(schedule.betas, t, x_prev)


def q_mean_variance(schedule: Schedule, x0, t):
    """The closed form q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), MATH.md (2.4).

    Returns ``(mean, variance, log_variance)``; the variances broadcast against ``x0``.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (``refdiff.make_schedule``), float64 arrays of length T.
    x0 : array (N, ...)
        Data.
    t : int or integer array of shape (N,)
        0-based timesteps in [0, T-1] (array index t is paper step t+1), one per sample or shared.

    Returns
    -------
    mean, variance, log_variance : arrays
        sqrt(alpha_bar_t) x0, 1 - alpha_bar_t and its log, the last two broadcasting against x0.
    """
    _check(schedule, t, x0=x0)
    xp = array_namespace(x0)
    var = gather(schedule.sqrt_one_minus_alpha_bars, t, x0) ** 2
    return gather(schedule.sqrt_alpha_bars, t, x0) * x0, var, xp.log(var)


def q_sample(schedule: Schedule, x0, t, noise):
    """Draw x_t ~ q(x_t | x_0) by reparameterisation, MATH.md (2.4):
    ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise``.

    ``noise`` is required (randomness is never drawn inside refdiff functions): pass
    standard normal draws of ``x0``'s shape, e.g. ``refdiff.backend.standard_normal(rng, x0.shape, x0)``.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (``refdiff.make_schedule``), float64 arrays of length T.
    x0 : array (N, ...)
        Data, in any array-API namespace (NumPy, CuPy, PyTorch tensors through array-api-compat).
    t : int or integer array of shape (N,)
        0-based timesteps in [0, T-1] (array index t is paper step t+1), one per sample or shared.
    noise : array like x0
        Standard normal draws.

    Returns
    -------
    array like x0
        x_t in the namespace and dtype of ``x0`` (the diffusers name is ``add_noise``).

    Raises
    ------
    ValueError
        For timesteps out of range or ``noise`` of another shape than ``x0``.
    """
    if noise is None:
        raise TypeError("q_sample needs an explicit noise array of x0's shape")
    _check(schedule, t, x0=x0, noise=noise)
    return gather(schedule.sqrt_alpha_bars, t, x0) * x0 + gather(schedule.sqrt_one_minus_alpha_bars, t, x0) * noise


def q_posterior_mean(schedule: Schedule, x0, x_t, t):
    """The posterior mean mu_tilde_t(x_t, x_0) = coef1_t x_0 + coef2_t x_t, MATH.md (3.2); the
    one place it is written (the reverse-process mean of the ELBO and of DDPM sampling is
    this function at the model's x0_hat).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (``refdiff.make_schedule``), float64 arrays of length T.
    x0 : array (N, ...)
        The data, or a prediction x0_hat of it.
    x_t : array like x0
        The noisy state at t.
    t : int or integer array of shape (N,)
        0-based timesteps in [0, T-1], one per sample or shared.

    Returns
    -------
    array like x_t
        mu_tilde_t(x_t, x_0); at t = 0 it is x_0 (coef1 = 1, coef2 = 0).
    """
    _check(schedule, t, x_t=x_t, x0=x0)
    return gather(schedule.posterior_mean_coef1, t, x_t) * x0 + gather(schedule.posterior_mean_coef2, t, x_t) * x_t


def q_posterior_mean_variance(schedule: Schedule, x0, x_t, t):
    """The posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) of Bayes' rule,
    MATH.md (3.1)-(3.4):

    ``mu_tilde = coef1_t x_0 + coef2_t x_t`` with
    ``coef1 = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)``,
    ``coef2 = (1 - alpha_bar_{t-1}) sqrt(a_t) / (1 - alpha_bar_t)`` (a_t = 1 - beta_t), and
    ``beta_tilde = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)``.

    Returns ``(mean, variance, log_variance_clipped)``.  At t = 0 the variance is 0 and
    the returned log variance is clipped to the value at t = 1 (the DDPM release's
    convention, MATH.md (3.5)); variances broadcast against ``x_t``.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (``refdiff.make_schedule``), float64 arrays of length T.
    x0 : array (N, ...)
        The data (or a prediction x0_hat of it).
    x_t : array like x0
        The noisy state at t.
    t : int or integer array of shape (N,)
        0-based timesteps in [0, T-1] (array index t is paper step t+1), one per sample or shared.

    Returns
    -------
    mean, variance, log_variance_clipped : arrays
        mu_tilde, beta_tilde and log beta_tilde clipped at t = 0, broadcasting against x_t.
    """
    mean = q_posterior_mean(schedule, x0, x_t, t)
    var = gather(schedule.posterior_variance, t, x_t)
    logvar = gather(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, var, logvar
