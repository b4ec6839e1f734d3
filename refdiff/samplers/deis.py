"""DEIS (Zhang & Chen 2023), the multistep exponential integrator of diffusers'
DEISMultistepScheduler ("logrho" form), MATH.md chapter 16.

In y = x / alpha and rho = sigma / alpha the probability-flow ODE is dy/drho = eps(rho)
(MATH.md (16.5)); DEIS-k interpolates eps by the Lagrange polynomial in log rho through
the last k predictions and integrates it exactly, MATH.md (16.6).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import check_finite
from .common import predict_eps_x0
from ._vpgrid import vp_points

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


def deis_coefficients(rho_s_list, rho_t):
    """C_j = int_{rho_s0}^{rho_t} l_j(log rho) drho, j = 0..k-1, for the Lagrange basis l_j in
    u = log rho through the nodes u_j = log rho_sj (``rho_s_list`` newest first; rho_s0 is
    the step's start), MATH.md (16.6).  Integrated in closed form via u = log rho:
    int l_j(u) e^u du = e^u sum_k (-1)^k l_j^(k)(u).  rho_t = 0 (sigma_t = 0) is the limit
    u = -inf, where the antiderivative vanishes."""
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
        out.append(_int_exp_poly(lj, u_t) - _int_exp_poly(lj, us[0]))
    return out


def deis_update(x_s, eps_list, alphas_sigmas, alpha_t, sigma_t):
    """One DEIS-k step (k = len(eps_list), 1..3), MATH.md (16.6):
    x_t = alpha_t (x_s / alpha_s0 + sum_j C_j eps_j), with ``eps_list`` and ``alphas_sigmas``
    = [(alpha_s0, sigma_s0), (alpha_s1, sigma_s1), ...] newest first (s0 the step's start).
    k = 1 is DDIM."""
    if not 1 <= len(eps_list) <= 3 or len(alphas_sigmas) != len(eps_list):
        raise ValueError(f"deis_update: needs 1..3 predictions with one (alpha, sigma) each, got "
                         f"{len(eps_list)} and {len(alphas_sigmas)}")
    rhos = [float(s) / float(a) for a, s in alphas_sigmas]
    C = deis_coefficients(rhos, float(sigma_t) / float(alpha_t))
    y = x_s / float(alphas_sigmas[0][0])
    for c, e in zip(C, eps_list):
        y = y + c * e
    return float(alpha_t) * y


def deis(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, order=2,
         lower_order_final=True, final_sigmas_type=None, sigmas=None):
    """DEIS-``order`` (1..3) sampling, MATH.md (16.6); deterministic (``noise`` is ignored).

    Step i uses order min(order, i + 1); with ``lower_order_final`` and fewer than 15 steps
    (diffusers' rule) the last two steps use at most 1 and 2.  diffusers 0.42.1's
    DEISMultistepScheduler(solver_order=order) ends at sigma_min (``final_sigmas_type=
    "sigma_min"``); refdiff's default on a Schedule is a final step to sigma = 0, exact here
    (MATH.md (16.6)).  ``callback(i, t_i, x_{i+1}, x0_hat(t_i))``, VP coordinates."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= 3:
        raise ValueError(f"deis: order = {order!r} is out of range; valid orders: 1, 2, 3")
    pts = vp_points(schedule, timesteps, sigmas, final_sigmas_type, "deis")
    n = len(pts) - 1
    eps_hist, as_hist = [], []  # newest first
    for i in range(n):
        (t, a_s, s_s), (_, a_t, s_t) = pts[i], pts[i + 1]
        eps, x0 = predict_eps_x0(model, x, t, schedule, prediction_type, step=i)
        eps_hist, as_hist = ([eps] + eps_hist)[:order], ([(a_s, s_s)] + as_hist)[:order]
        k = min(order, i + 1, n - i if (lower_order_final and n < 15) else order)
        x = deis_update(x, eps_hist[:k], as_hist[:k], a_t, s_t)
        check_finite(x, "sampler state", f"step {i} (t = {t})")
        if callback is not None:
            callback(i, t, x, x0)
    return x


METHODS = {"deis": deis}
