"""DEIS (Zhang & Chen 2023), the multistep exponential integrator of diffusers'
DEISMultistepScheduler ("logrho" form), MATH.md chapter 16.

In y = x / alpha and rho = sigma / alpha the probability-flow ODE is dy/drho = eps(rho)
(MATH.md (16.5)); DEIS-k interpolates eps by the Lagrange polynomial in log rho through
the last k predictions and integrates it exactly, MATH.md (16.6).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool
from .common import check_args, check_start, end_step, point_at_lambda, predict, vp_grid
from .dpm_solver import dpm_solver_1_step, dpm_solver_2_update

__all__ = ["deis_coefficients", "deis_update", "deis"]


def _int_exp_poly(p, u):
    """F(u) = e^u sum_k (-1)^k p^(k)(u), the antiderivative of p(u) e^u; F(-inf) = 0."""
    if u == -math.inf:
        return 0.0
    acc, q, sign = 0.0, p, 1.0
    while True:
        acc += sign * q(u)
        if q.degree() == 0:
            break
        q, sign = q.deriv(), -sign
    return math.exp(u) * acc


@check_args(scalars=("rho_t",))
def deis_coefficients(rho_s_list, rho_t):
    """C_j = int_{rho_s0}^{rho_t} l_j(log rho) drho, j = 0..k-1, for the Lagrange basis l_j in
    u = log rho through the nodes u_j = log rho_sj (``rho_s_list`` newest first; rho_s0 is
    the step's start), MATH.md (16.6).  Integrated in closed form via u = log rho:
    int l_j(u) e^u du = e^u sum_k (-1)^k l_j^(k)(u).  rho_t = 0 (sigma_t = 0) is the limit
    u = -inf, where the antiderivative vanishes.

    Parameters
    ----------
    rho_s_list : sequence of float
        The nodes rho = sigma/alpha (> 0, distinct), newest first.
    rho_t : float
        The end of the step (>= 0).

    Returns
    -------
    list of float
        C_0..C_{k-1}.

    Raises
    ------
    ValueError
        If the nodes are not distinct.
    """
    us = [math.log(float(r)) for r in rho_s_list]
    if len(set(us)) != len(us):
        raise ValueError(f"deis_coefficients: the nodes rho must be distinct, got {list(rho_s_list)}")
    u_t = -math.inf if rho_t == 0 else math.log(float(rho_t))
    P = np.polynomial.Polynomial
    out = []
    for j, uj in enumerate(us):
        lj = P([1.0])
        for m, um in enumerate(us):
            if m != j:
                lj = lj * P([-um, 1.0]) / (uj - um)
        out.append(float(_int_exp_poly(lj, u_t) - _int_exp_poly(lj, us[0])))
    return out


@check_args(arrays=("x_s",), scalars=("alpha_t", "sigma_t"))
def deis_update(x_s, eps_list, alphas_sigmas, alpha_t, sigma_t):
    """One DEIS-k step (k = len(eps_list), 1..3), MATH.md (16.6):
    x_t = alpha_t (x_s / alpha_s0 + sum_j C_j eps_j), with ``eps_list`` and ``alphas_sigmas``
    = [(alpha_s0, sigma_s0), (alpha_s1, sigma_s1), ...] newest first (s0 the step's start).
    k = 1 is DDIM.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s0.
    eps_list : sequence of arrays
        1..3 eps predictions, newest first.
    alphas_sigmas : sequence of (float, float)
        Their (alpha, sigma), newest first.
    alpha_t, sigma_t : float
        The coefficients at the end of the step.

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If the lists are not of equal length 1..3, or the nodes are not distinct.
    """
    if not 1 <= len(eps_list) <= 3 or len(alphas_sigmas) != len(eps_list):
        raise ValueError(f"deis_update: needs 1..3 predictions with one (alpha, sigma) each, got "
                         f"{len(eps_list)} and {len(alphas_sigmas)}")
    rhos = [float(s) / float(a) for a, s in alphas_sigmas]
    C = deis_coefficients(rhos, float(sigma_t) / float(alpha_t))
    y = x_s / float(alphas_sigmas[0][0])
    for c, e in zip(C, eps_list):
        y = y + c * e
    return float(alpha_t) * y


def deis(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None, project=None,
         order=2, lower_order_final=True, warmup="first_order", final_sigmas_type=None, sigmas=None,
         interpolation="log_alpha"):
    """DEIS-``order`` (1..3) sampling of (16.5), MATH.md (16.6); deterministic (``noise`` is ignored).

    Step i uses order min(order, i + 1); with ``lower_order_final`` and fewer than 15 steps
    (diffusers' rule) the last two steps use at most 1 and 2.  diffusers 0.42.1's
    DEISMultistepScheduler(solver_order=order) ends at sigma_min (``final_sigmas_type=
    "sigma_min"``); refdiff's default on a Schedule is a final step to sigma = 0, exact here
    (MATH.md (16.6)).  ``warmup``: the first step (empty history) is DEIS-1 (``"first_order"``,
    diffusers; its O(h^2) local error caps DEIS-3 at global order 2) or, for order >= 3,
    DPM-Solver-2 (``"singlestep"``, (10.9) in the noise form with one extra evaluation at the
    lambda midpoint; local O(h^3), so DEIS-3 stays third order).  Grid: :func:`refdiff.make_grid`.
    Hooks (``project``, then ``callback(i, t_i, x_{i+1}, x0_hat(t_i))``) after each step in VP
    coordinates.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``, with t of shape (N,) (int64 for a
        Schedule's integer timesteps, float64 otherwise).
    x : array (N, ...)
        The start state in VP coordinates at the first grid point.
    schedule : Schedule or continuous VP
        The model's schedule.
    timesteps : array_like or Grid, optional
        The grid (:func:`refdiff.make_grid`); may be None when ``sigmas`` is given.
    prediction_type : str, default "epsilon"
        What the model predicts (refdiff.parameterization's prediction types).
    noise : callable, optional
        Ignored (the loop is deterministic); accepted for the common loop signature.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    order : int, default 2
        The order, 1..3.
    lower_order_final : bool, default True
        Lower the order of the last steps on grids of fewer than 15 steps.
    warmup : {"first_order", "singlestep"}, default "first_order"
        The first step (above).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError
        If ``order`` or ``warmup`` is invalid (and as :func:`refdiff.make_grid`).
    TypeError
        As :func:`refdiff.make_grid`.
    """
    check_bool("lower_order_final", lower_order_final)
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= 3:
        raise ValueError(f"deis: order = {order!r} is out of range; valid orders: 1, 2, 3")
    if warmup not in ("first_order", "singlestep"):
        raise ValueError(f"deis: unknown warmup {warmup!r}; valid: 'first_order', 'singlestep'")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "deis", needs="lambda")
    n = len(grid) - 1
    eps_hist, points = [], []  # newest first
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        eps_hist, points = ([eps_hat] + eps_hist)[:order], ([(p.alpha, p.sigma)] + points)[:order]
        k = min(order, i + 1, n - i if (lower_order_final and n < 15) else order)
        if i == 0 and warmup == "singlestep" and order >= 3 and q.sigma > 0:  # DPM-Solver-2, (10.9)
            p1 = point_at_lambda(schedule, 0.5 * (p.lam + q.lam))
            u = dpm_solver_1_step(x, eps_hat, p.alpha, p.sigma, p1.alpha, p1.sigma)
            e1 = predict(model, u, p1, prediction_type, i)[0]
            x = dpm_solver_2_update(x, eps_hat, e1, 0.5, p.alpha, p.sigma, q.alpha, q.sigma, form="noise")
        else:
            x = deis_update(x, eps_hist[:k], points[:k], q.alpha, q.sigma)  # (16.6)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


METHODS = {"deis": deis}
