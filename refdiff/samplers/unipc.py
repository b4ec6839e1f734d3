"""UniPC (Zhao et al. 2023): a unified predictor (UniP) and corrector (UniC) for the
exponential-integrator form of the probability-flow ODE, MATH.md chapter 16.

The predictor UniP-p is a multistep exponential integrator in lambda that uses p - 1
earlier predictions; the corrector UniC-p re-does the last step with the prediction at
its end point (no extra model call: the call that starts the next step is reused) and
raises the order by one.  B(h) is a free function with B(h) = O(h): ``"bh1"`` B = hh,
``"bh2"`` B = e^hh - 1 (hh = -h in the data form, h in the noise form), MATH.md (16.2).

Step functions are pure (host-float alphas and sigmas, arrays for x and predictions);
:func:`unipc` is the loop, step for step as diffusers 0.42.1's UniPCMultistepScheduler.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool
from .common import check_args, check_start, end_step, predict, vp_grid
from .dpm_solver import dpm_solver_1_step, dpmpp_1_step

__all__ = ["UNIPC_SOLVER_TYPES", "unipc_b", "unipc_rhos", "unip_update", "unic_update", "unipc"]

UNIPC_SOLVER_TYPES = ("bh1", "bh2")


def _check(solver_type, form, order, who, max_order=3):
    if solver_type not in UNIPC_SOLVER_TYPES:
        raise ValueError(f"{who}: unknown solver_type {solver_type!r}; valid: 'bh1', 'bh2'")
    if form not in ("data", "noise"):
        raise ValueError(f"{who}: unknown form {form!r}; valid: 'data' (x0 prediction, predict_x0=True), 'noise'")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= int(order) <= max_order:
        raise ValueError(f"{who}: order = {order!r} is out of range; valid orders: 1..{max_order}")
    return int(order)


@check_args(scalars=("h",))
def unipc_b(h, order, solver_type="bh2", form="data"):
    """(B(h), [g_1 .. g_order]) with g_k = k! hh phi_{k+1}(hh) (hh = -h data, +h noise) and
    phi_1(z) = (e^z - 1)/z, phi_{k+1}(z) = (phi_k(z) - 1/k!)/z, MATH.md (16.1), (16.2):
    the right-hand sides of the order conditions sum_m rho_m r_m^{k-1} = g_k / B(h).

    Parameters
    ----------
    h : float
        The step size in lambda (> 0).
    order : int
        The number of g_k returned.
    solver_type : {"bh1", "bh2"}, default "bh2"
        B(h) = hh (bh1) or expm1(hh) (bh2).
    form : {"data", "noise"}, default "data"
        The prediction the solver extrapolates.

    Returns
    -------
    B : float
    g : list of float
        g_1..g_order.
    """
    order = _check(solver_type, form, order, "unipc_b")
    hh = -float(h) if form == "data" else float(h)
    B = hh if solver_type == "bh1" else math.expm1(hh)
    phi, fact, g = math.expm1(hh) / hh, 1.0, []
    for k in range(1, order + 1):
        phi = (phi - 1.0 / fact) / hh  # phi_{k+1}
        g.append(fact * hh * phi)  # k! hh phi_{k+1}(hh)
        fact *= k + 1
    return B, g


@check_args(scalars=("h",))
def unipc_rhos(rks, h, order, solver_type="bh2", form="data", corrector=False):
    """The coefficients rho of UniP-order (``corrector=False``; solves the order - 1 conditions
    at the earlier points ``rks``) or UniC-order (solves all ``order`` conditions with the end
    point r = 1 appended to ``rks``), MATH.md (16.3); returns (B(h), rho * B(h)) so that the
    update is exact also where B(h) is infinite.  UniP-2 and UniC-1 use rho = 1/2 (the
    paper's and diffusers' choice, enough for their order).

    Parameters
    ----------
    rks : sequence of float
        r_m = (lambda_m - lambda_s)/h of the earlier predictions, newest first.
    h : float
        The step size in lambda (> 0).
    order : int
        The order.
    solver_type : {"bh1", "bh2"}, default "bh2"
        As in :func:`unipc_b`.
    form : {"data", "noise"}, default "data"
        As in :func:`unipc_b`.
    corrector : bool, default False
        UniC (True) or UniP (False).

    Returns
    -------
    B : float
    rhoB : numpy.ndarray
        rho * B(h), one per condition (empty for UniP-1).
    """
    order = _check(solver_type, form, order, "unipc_rhos")
    check_bool("corrector", corrector)
    B, g = unipc_b(h, order, solver_type, form)
    n = order if corrector else order - 1
    if n == 0:
        return B, np.zeros(0)
    if (not corrector and order == 2) or (corrector and order == 1):
        return B, np.array([0.5 * B])
    r = np.asarray(list(rks)[: n - 1 if corrector else n] + ([1.0] if corrector else []), dtype=np.float64)
    R = np.vander(r, n, increasing=True).T  # R[k, m] = r_m^k
    return B, np.linalg.solve(R, np.asarray(g[:n]))


def _base(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t, form):
    """The first-order part: DPM-Solver++(1) (data) or DDIM (noise), exact at sigma_t = 0."""
    if form == "data":
        return dpmpp_1_step(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t)
    return dpm_solver_1_step(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t)


def _lam(alpha, sigma):
    return math.inf if sigma == 0.0 else math.log(alpha) - math.log(sigma)


def _h_and_r(alpha_s, sigma_s, alpha_t, sigma_t, lambdas_prev, who):
    lam_s, lam_t = _lam(float(alpha_s), float(sigma_s)), _lam(float(alpha_t), float(sigma_t))
    h = lam_t - lam_s
    if not h > 0:
        raise ValueError(f"{who}: needs lambda_t > lambda_s (h > 0), got h = {h!r}")
    return h, [(float(l) - lam_s) / h for l in lambdas_prev]


@check_args(arrays=("x_s", "m0"), scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"), same_shape=("x_s", "m0"))
def unip_update(x_s, m0, m_prev, lambdas_prev, alpha_s, sigma_s, alpha_t, sigma_t, *, order, solver_type="bh2",
                form="data"):
    """UniP-``order`` from s to t, MATH.md (16.3):
    x_t = [first-order step] - c_t B(h) sum_m rho_m D_m, D_m = (m_m - m0) / r_m,
    r_m = (lambda_m - lambda_s)/h for the ``order - 1`` earlier predictions ``m_prev`` (newest
    first) at ``lambdas_prev``; c_t = alpha_t (data) or sigma_t (noise).  A step to sigma_t = 0
    must be first order (then x_t = m0 in the data form, MATH.md (10.6)).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s (x0_hat for the data form, eps_hat for the noise form).
    m_prev : sequence of arrays
        The earlier predictions, newest first (at least order - 1).
    lambdas_prev : sequence of float
        Their half log-SNRs.
    alpha_s, sigma_s, alpha_t, sigma_t : float
        The coefficients at s and t.
    order : int
        The order, 1..3.
    solver_type : {"bh1", "bh2"}, default "bh2"
        As in :func:`unipc_b`.
    form : {"data", "noise"}, default "data"
        As in :func:`unipc_b`.

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid, there are too few earlier predictions, order > 1 on a step to
        sigma_t = 0, or lambda_t <= lambda_s.
    """
    order = _check(solver_type, form, order, "unip_update")
    if len(m_prev) < order - 1 or len(lambdas_prev) < order - 1:
        raise ValueError(f"unip_update: order {order} needs {order - 1} earlier predictions, got {len(m_prev)}")
    if sigma_t == 0 and order > 1:
        raise ValueError("unip_update: a step to sigma_t = 0 (h = inf) is defined only at order 1")
    x_t = _base(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t, form)
    if order == 1:
        return x_t
    h, rks = _h_and_r(alpha_s, sigma_s, alpha_t, sigma_t, lambdas_prev[: order - 1], "unip_update")
    _, rhoB = unipc_rhos(rks, h, order, solver_type, form)
    c = float(alpha_t) if form == "data" else float(sigma_t)
    for w, m, r in zip(rhoB, m_prev, rks):
        x_t = x_t - (c * float(w) / r) * (m - m0)
    return x_t


@check_args(arrays=("x_s", "m0", "m_t"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"),
            same_shape=("x_s", "m0", "m_t"))
def unic_update(x_s, m0, m_prev, lambdas_prev, m_t, alpha_s, sigma_s, alpha_t, sigma_t, *, order, solver_type="bh2",
                form="data"):
    """UniC-``order``: the step s -> t of :func:`unip_update` redone with the prediction
    ``m_t`` at the predicted x_t (D_t = m_t - m0 at r = 1), order + 1 accurate, MATH.md (16.4).
    ``x_s``, ``m0``, ``m_prev``, ``lambdas_prev`` are those of the predictor step.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s (x0_hat for the data form, eps_hat for the noise form).
    m_prev : sequence of arrays
        The earlier predictions, newest first (at least order - 1).
    lambdas_prev : sequence of float
        Their half log-SNRs.
    m_t : array (N, ...)
        The prediction at the predicted x_t.
    alpha_s, sigma_s, alpha_t, sigma_t : float
        The coefficients at s and t.
    order : int
        The order, 1..3.
    solver_type : {"bh1", "bh2"}, default "bh2"
        As in :func:`unipc_b`.
    form : {"data", "noise"}, default "data"
        As in :func:`unipc_b`.

    Returns
    -------
    array (N, ...)
        The corrected x_t.

    Raises
    ------
    ValueError
        If an option is invalid, there are too few earlier predictions, sigma_t = 0, or
        lambda_t <= lambda_s.
    """
    order = _check(solver_type, form, order, "unic_update")
    if sigma_t == 0:
        raise ValueError("unic_update: no corrector on a step to sigma_t = 0 (there is no model call at sigma = 0)")
    if len(m_prev) < order - 1:
        raise ValueError(f"unic_update: order {order} needs {order - 1} earlier predictions, got {len(m_prev)}")
    h, rks = _h_and_r(alpha_s, sigma_s, alpha_t, sigma_t, lambdas_prev[: order - 1], "unic_update")
    _, rhoB = unipc_rhos(rks, h, order, solver_type, form, corrector=True)
    c = float(alpha_t) if form == "data" else float(sigma_t)
    x_t = _base(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t, form)
    for w, m, r in zip(rhoB[:-1], m_prev, rks):
        x_t = x_t - (c * float(w) / r) * (m - m0)
    return x_t - (c * float(rhoB[-1])) * (m_t - m0)


def unipc(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None, project=None,
          order=2, solver_type="bh2", form="data", corrector=True, disable_corrector=(), lower_order_final=True,
          final_sigmas_type=None, sigmas=None, interpolation="log_alpha"):
    """UniPC sampling, MATH.md (16.3), (16.4); deterministic (``noise`` is ignored).

    Step i: evaluate the model at x_i; unless i = 0, ``corrector=False`` or i - 1 is in
    ``disable_corrector``, replace x_i by UniC(order of step i - 1) using this evaluation
    (which is not repeated); then UniP at order min(order, i + 1) (and <= n - i with
    ``lower_order_final``; 1 on a step to sigma = 0).  diffusers 0.42.1's
    UniPCMultistepScheduler(solver_type=solver_type, solver_order=order, predict_x0=(form ==
    "data"), lower_order_final, disable_corrector) does exactly this.  Grid:
    :func:`refdiff.make_grid` (``sigmas=`` any explicit sigma grid).  Hooks after each step
    (:func:`~refdiff.samplers.common.end_step`): ``project`` then ``callback(i, t_i, x_{i+1},
    x0_hat(t_i))``, VP coordinates; the corrector then corrects the projected state.

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
    solver_type : {"bh1", "bh2"}, default "bh2"
        As in :func:`unipc_b`.
    form : {"data", "noise"}, default "data"
        The prediction the solver extrapolates.
    corrector : bool, default True
        Apply UniC.
    disable_corrector : collection of int, default ()
        Steps whose result is not corrected.
    lower_order_final : bool, default True
        Order at most n - i at step i.
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
        If ``order``, ``solver_type`` or ``form`` is invalid (and as :func:`refdiff.make_grid`).
    TypeError
        As :func:`refdiff.make_grid`.
    """
    check_bool("corrector", corrector)
    check_bool("lower_order_final", lower_order_final)
    order = _check(solver_type, form, order, "unipc")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "unipc", needs="lambda")
    n = len(grid) - 1
    ms, lams, x_prev, k_prev = [], [], None, 0  # predictions and their lambdas, newest last
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        m = x0_hat if form == "data" else eps_hat
        if i > 0 and corrector and (i - 1) not in disable_corrector:  # UniC (16.4) with this evaluation
            x = unic_update(x_prev, ms[-1], ms[-2::-1], lams[-2::-1], m, grid[i - 1].alpha, grid[i - 1].sigma,
                            p.alpha, p.sigma, order=k_prev, solver_type=solver_type, form=form)
        ms, lams = (ms + [m])[-order:], (lams + [p.lam])[-order:]
        k = min(order, i + 1, n - i if lower_order_final else order, 1 if q.sigma == 0 else order)
        x_prev, k_prev = x, k
        x = unip_update(x, m, ms[-2::-1], lams[-2::-1], p.alpha, p.sigma, q.alpha, q.sigma, order=k,
                        solver_type=solver_type, form=form)  # UniP (16.3)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


METHODS = {"unipc": unipc}
