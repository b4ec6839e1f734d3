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

from ..backend import check_finite
from ..parameterization import to_eps_x0
from ..samplers.common import call_model, check_prediction_type, check_schedule, point_at_lambda

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
    data end).  ``method`` "rk4" (order 4) or "ddim" (order 1)."""
    check_prediction_type(prediction_type)
    lams, lo, hi = _grid(schedule, n, lam_range)
    return _integrate(model, point_at_lambda(schedule, hi).alpha * x0, schedule, lams, prediction_type, method)


def ode_generate(model, x_T, schedule, n, *, prediction_type="epsilon", method="rk4", lam_range=None):
    """The VP state ``x_T`` at lam_min -> data by the PF-ODE (17.9) up to lam_max (lambda
    increases), divided by alpha_max (the inverse of :func:`ode_invert`'s start)."""
    check_prediction_type(prediction_type)
    lams, lo, hi = _grid(schedule, n, lam_range)
    x = _integrate(model, x_T, schedule, lams[::-1], prediction_type, method)
    return x / point_at_lambda(schedule, hi).alpha


def translate(model_src, model_tgt, x, schedule, n, *, prediction_type="epsilon", method="rk4", lam_range=None):
    """Dual diffusion implicit bridge (DDIB): :func:`ode_invert` with the source model, then
    :func:`ode_generate` with the target model, n steps each, MATH.md (17.10).  On Gaussian
    domains with exact oracles it converges to :func:`whitening_colouring` as the steps grow
    (order 4 with RK4) and the lambda range widens (error O(e^lam_min + e^-2 lam_max))."""
    z = ode_invert(model_src, x, schedule, n, prediction_type=prediction_type, method=method, lam_range=lam_range)
    return ode_generate(model_tgt, z, schedule, n, prediction_type=prediction_type, method=method, lam_range=lam_range)


def _sqrtm_psd(C):
    lam, U = np.linalg.eigh(C)
    return (U * np.sqrt(np.clip(lam, 0.0, None))) @ U.T, (U / np.sqrt(lam)) @ U.T


def whitening_colouring(x, mean_a, cov_a, mean_b, cov_b):
    """mu_B + Sigma_B^(1/2) Sigma_A^(-1/2) (x - mu_A), symmetric square roots, on (N, D)
    host arrays: the exact DDIB map between Gaussian domains, MATH.md (17.10)."""
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
    :func:`refdiff.sample`."""
    from ..samplers.ddim import ddim_invert
    from ..samplers.loop import sample

    z = ddim_invert(model_src, x0, schedule, timesteps, prediction_type=prediction_type)
    return sample(model_tgt, z, schedule, timesteps, "ddim", prediction_type=prediction_type, progress=progress,
                  **sample_options)
