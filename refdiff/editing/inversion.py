"""Inversion-based editing and style transfer (DDIB), MATH.md chapter 17.

* :func:`ode_invert` / :func:`ode_generate`: the probability-flow ODE in VP coordinates
  with the half log-SNR lambda as the clock, dx/dlambda = sigma^2 x - sigma eps_hat
  (MATH.md (17.9)), integrated on a uniform lambda grid by classical RK4 (order 4) or by the
  DDIM / first-order exponential step (order 1), upwards (data -> noise) or downwards.
  Every prediction type is read at the time the model is evaluated (its output converted
  to eps_hat with that point's alpha, sigma), so with an exact oracle the result does not
  depend on the prediction type.
* :func:`translate`: dual diffusion implicit bridges (Su et al. 2022): invert x with the
  source model, regenerate with the target model.  For Gaussian domains the exact map is
  the whitening-colouring transform mu_B + Sigma_B^(1/2) Sigma_A^(-1/2) (x - mu_A)
  (:func:`whitening_colouring`, MATH.md (17.10)).
* :func:`edit_by_inversion`: DDIM inversion under one model (e.g. the source class) and
  DDIM sampling under another (the target class, with CFG), on a discrete grid.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_bool
from ..backend import check_finite
from ..parameterization import to_eps_x0
from ..schedules import Schedule
from ..samplers.common import call_model, check_prediction_type, check_schedule, make_grid, point_at_lambda

__all__ = ["ode_invert", "ode_generate", "translate", "whitening_colouring", "edit_by_inversion", "ODE_METHODS"]

ODE_METHODS = ("rk4", "ddim")


def _lam_range(schedule, lam_range):
    if lam_range is not None:
        lo, hi = (float(v) for v in lam_range)
    elif check_schedule(schedule):
        ab = schedule.alpha_bars
        lo, hi = (0.5 * math.log(a / (1.0 - a)) for a in (float(ab[-1]), float(ab[0])))
    else:
        lo, hi = (float(schedule.lambda_(np.asarray(t))) for t in (schedule.t_max, schedule.t_min))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"lam_range must be finite with lam_min < lam_max, got ({lo!r}, {hi!r})")
    return lo, hi


def _eps(model, x, schedule, lam, prediction_type):
    p = point_at_lambda(schedule, lam)
    eps_hat, _ = to_eps_x0(call_model(model, x, p.t), x, p.alpha, p.sigma, prediction_type)
    return eps_hat, p


def _flow(model, x, schedule, lam, prediction_type):
    eps_hat, p = _eps(model, x, schedule, lam, prediction_type)
    return p.sigma ** 2 * x - p.sigma * eps_hat  # (17.9)


def _integrate(model, x, schedule, lams, prediction_type, method):
    if method not in ODE_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(ODE_METHODS)}")
    for l0, l1 in zip(lams[:-1], lams[1:]):
        h = l1 - l0
        if method == "rk4":
            k1 = _flow(model, x, schedule, l0, prediction_type)
            k2 = _flow(model, x + 0.5 * h * k1, schedule, l0 + 0.5 * h, prediction_type)
            k3 = _flow(model, x + 0.5 * h * k2, schedule, l0 + 0.5 * h, prediction_type)
            k4 = _flow(model, x + h * k3, schedule, l1, prediction_type)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        else:  # DDIM: x' = alpha' x0_hat + sigma' eps_hat with the model at the start point
            eps_hat, p = _eps(model, x, schedule, l0, prediction_type)
            q = point_at_lambda(schedule, l1)
            x = q.alpha * (x - p.sigma * eps_hat) / p.alpha + q.sigma * eps_hat
        check_finite(x, "ODE state", f"lambda = {l1}")
    return x


def _grid(schedule, n, lam_range):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (steps) must be an integer >= 1, got {n!r}")
    lo, hi = _lam_range(schedule, lam_range)
    return np.linspace(hi, lo, int(n) + 1), lo, hi


def ode_invert(model, x0, schedule, n, *, prediction_type="epsilon", method="rk4", lam_range=None):
    """Data ``x0`` -> the VP state at lam_min by the PF-ODE (17.9) on n uniform lambda steps
    from lam_max (default: the schedule's range; lambda decreases).  The start is x0 placed
    at lam_max as alpha_max x0 (an O(sigma_max^2) approximation of the exact map from the
    data end).  ``method`` "rk4" (order 4) or "ddim" (order 1).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x0 : array (N, ...)
        The data.
    schedule : Schedule or continuous VP
        The model's schedule.
    n : int
        The number of uniform lambda steps (>= 1).
    prediction_type : str, default "epsilon"
        What the model predicts.
    method : {"rk4", "ddim"}, default "rk4"
        The integrator.
    lam_range : tuple of float, optional
        (lam_min, lam_max), finite with lam_min < lam_max; default the schedule's range.

    Returns
    -------
    array (N, ...)
        The VP state at lam_min.

    Raises
    ------
    ValueError
        If ``n``, ``method``, ``lam_range`` or ``prediction_type`` is invalid.
    FloatingPointError
        If the ODE state becomes non-finite.
    """
    check_array("x0", x0, min_ndim=1, finite=True)
    _check_model("model", model)
    check_prediction_type(prediction_type)
    lams, lo, hi = _grid(schedule, n, lam_range)
    return _integrate(model, point_at_lambda(schedule, hi).alpha * x0, schedule, lams, prediction_type, method)


def ode_generate(model, x_T, schedule, n, *, prediction_type="epsilon", method="rk4", lam_range=None):
    """The VP state ``x_T`` at lam_min -> data by the PF-ODE (17.9) up to lam_max (lambda
    increases), divided by alpha_max (the inverse of :func:`ode_invert`'s start).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x_T : array (N, ...)
        The VP state at lam_min.
    schedule : Schedule or continuous VP
        The model's schedule.
    n : int
        The number of uniform lambda steps (>= 1).
    prediction_type : str, default "epsilon"
        What the model predicts.
    method : {"rk4", "ddim"}, default "rk4"
        The integrator.
    lam_range : tuple of float, optional
        (lam_min, lam_max), finite with lam_min < lam_max; default the schedule's range.

    Returns
    -------
    array (N, ...)
        The data estimate.

    Raises
    ------
    ValueError
        If ``n``, ``method``, ``lam_range`` or ``prediction_type`` is invalid.
    FloatingPointError
        If the ODE state becomes non-finite.
    """
    check_array("x_T", x_T, min_ndim=1, finite=True)
    _check_model("model", model)
    check_prediction_type(prediction_type)
    lams, lo, hi = _grid(schedule, n, lam_range)
    x = _integrate(model, x_T, schedule, lams[::-1], prediction_type, method)
    return x / point_at_lambda(schedule, hi).alpha


def translate(model_src, model_tgt, x, schedule, n, *, prediction_type="epsilon", method="rk4", lam_range=None):
    """Dual diffusion implicit bridge (DDIB): :func:`ode_invert` with the source model, then
    :func:`ode_generate` with the target model, n steps each, MATH.md (17.10).  On Gaussian
    domains with exact oracles it converges to :func:`whitening_colouring` as the steps grow
    (order 4 with RK4) and the lambda range widens (error O(e^lam_min + e^-2 lam_max)).

    Parameters
    ----------
    model_src, model_tgt : callable
        The source and target domains' models, ``model(x, t) -> output``.
    x : array (N, ...)
        Source-domain data.
    schedule : Schedule or continuous VP
        The model's schedule.
    n : int
        The number of uniform lambda steps (>= 1).
    prediction_type : str, default "epsilon"
        What the model predicts.
    method : {"rk4", "ddim"}, default "rk4"
        The integrator.
    lam_range : tuple of float, optional
        (lam_min, lam_max), finite with lam_min < lam_max; default the schedule's range.

    Returns
    -------
    array (N, ...)
        The translated data.

    Raises
    ------
    ValueError
        If ``n``, ``method``, ``lam_range`` or ``prediction_type`` is invalid.
    FloatingPointError
        If the ODE state becomes non-finite.
    """
    check_array("x", x, min_ndim=1, finite=True)
    _check_model("model_src", model_src)
    _check_model("model_tgt", model_tgt)
    z = ode_invert(model_src, x, schedule, n, prediction_type=prediction_type, method=method, lam_range=lam_range)
    return ode_generate(model_tgt, z, schedule, n, prediction_type=prediction_type, method=method, lam_range=lam_range)


def _check_model(name, model):
    if not callable(model):
        raise TypeError(f"{name} must be a callable model(x, t), got {type(model).__name__}")


def _sqrtm_psd(C):
    lam, U = np.linalg.eigh(C)
    return (U * np.sqrt(np.clip(lam, 0.0, None))) @ U.T, (U / np.sqrt(lam)) @ U.T


def whitening_colouring(x, mean_a, cov_a, mean_b, cov_b):
    """mu_B + Sigma_B^(1/2) Sigma_A^(-1/2) (x - mu_A), symmetric square roots, on (N, D)
    host arrays: the exact DDIB map between Gaussian domains, MATH.md (17.10).

    Parameters
    ----------
    x : array_like (N, D)
        Points of domain A.
    mean_a : array_like (D,)
        mu_A.
    cov_a : array_like (D, D)
        Sigma_A (positive definite).
    mean_b : array_like (D,)
        mu_B.
    cov_b : array_like (D, D)
        Sigma_B (positive semi-definite).

    Returns
    -------
    numpy.ndarray (N, D)
        The mapped points (float64).
    """
    check_array("x", x, ndim=2, finite=True)
    D = x.shape[1]
    for name, m in (("mean_a", mean_a), ("mean_b", mean_b)):
        check_array(name, m, shape=(D,), finite=True)
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        check_array(name, c, shape=(D, D), finite=True)
    _, ia = _sqrtm_psd(np.asarray(cov_a, dtype=np.float64))
    sb, _ = _sqrtm_psd(np.asarray(cov_b, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(mean_b) + (x - np.asarray(mean_a)) @ (sb @ ia).T


def edit_by_inversion(model_src, model_tgt, x0, schedule, timesteps, *, prediction_type="epsilon",
                      progress=False, **sample_options):
    """Invert ``x0`` by deterministic DDIM under ``model_src`` (:func:`refdiff.ddim_invert`,
    the model read at the time it is evaluated) and regenerate by DDIM (eta = 0) under
    ``model_tgt`` on the same grid, e.g. a digit's class changed with its stroke kept
    (model_tgt a CFG model of the target class).  Extra keywords go to
    :func:`refdiff.sample`.

    Parameters
    ----------
    model_src, model_tgt : callable
        The inversion and the regeneration model, ``model(x, t) -> output``.
    x0 : array (N, ...)
        The data to edit.
    schedule : Schedule
        The discrete schedule.
    timesteps : array_like
        The decreasing integer grid.
    prediction_type : str, default "epsilon"
        What both models predict.
    progress : bool, default False
        Show a progress bar.
    **sample_options
        Passed to :func:`refdiff.sample`.

    Returns
    -------
    array (N, ...)
        The edited data.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule.
    ValueError
        If ``prediction_type`` or the grid is invalid.
    """
    from ..samplers.ddim import ddim_invert
    from ..samplers.loop import sample

    check_array("x0", x0, min_ndim=1, finite=True)
    _check_model("model_src", model_src)
    _check_model("model_tgt", model_tgt)
    check_bool("progress", progress)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a discrete Schedule, got {type(schedule).__name__}")
    make_grid(schedule, timesteps)  # validates the grid (decreasing integers in [0, T))
    z = ddim_invert(model_src, x0, schedule, timesteps, prediction_type=prediction_type)
    return sample(model_tgt, z, schedule, timesteps, "ddim", prediction_type=prediction_type, progress=progress,
                  **sample_options)
