"""Samplers in sigma space (Karras et al. 2022; k-diffusion), MATH.md chapter 9.

Sigma (variance-exploding) coordinates: a VP state x_t = alpha_t x_0 + sigma_t eps is
rescaled to ``x = x_t / alpha_t = x_0 + s eps`` with ``s = sigma_t / alpha_t``
(MATH.md (9.1)); s = 0 is the data end.  The probability-flow ODE becomes
``dx/ds = (x - D(x; s)) / s`` with the denoiser ``D = x0_hat`` (MATH.md (9.2)).

Step functions take host-float noise levels and arrays; multi-evaluation steps take a
``denoiser(x, sigma) -> x0_hat`` callable in sigma coordinates.  Loops convert the VP
start state in, evaluate the VP model at the matching time, and return x_0.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_finite_scalar, check_int
from ..parameterization import to_eps_x0
from .common import (call_model, check_args, check_level, check_noise, check_options, check_start, draw_noise,
                     end_step, _host_1d, point_at_sigma, to_vp, vp_grid)
from .common import sigma_to_time  # noqa: F401  (MATH.md (9.9); kept importable from this module)

__all__ = ["to_d", "euler_step", "ancestral_sigmas", "euler_ancestral_step", "heun_step", "dpm2_step",
           "edm_gamma", "edm_churn", "lms_coefficients", "lms_step",
           "euler_loop", "euler_ancestral_loop", "heun_loop", "edm_loop", "dpm2_loop", "lms_loop"]


# ------------------------------------------------------------------------- step functions
@check_args(arrays=("x", "x0_hat"), coefs=("sigma",), same_shape=("x", "x0_hat"))
def to_d(x, sigma, x0_hat):
    """The probability-flow ODE slope in sigma space, dx/dsigma = (x - x0_hat) / sigma,
    MATH.md (9.2).  It equals the model's eps_hat.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state in sigma coordinates.
    sigma : float
        Its noise level (> 0).
    x0_hat : array (N, ...)
        The denoiser's output D(x; sigma).

    Returns
    -------
    array (N, ...)
        The slope.
    """
    return (x - x0_hat) / sigma


@check_args(arrays=("x", "x0_hat"), coefs=("sigma", "sigma_next"), same_shape=("x", "x0_hat"))
def euler_step(x, sigma, sigma_next, x0_hat):
    """Euler step of (9.2) from sigma to sigma_next, MATH.md (9.3):
    ``x + (sigma_next - sigma) (x - x0_hat) / sigma``; equals the eta = 0 DDIM step.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at ``sigma`` (sigma coordinates).
    sigma, sigma_next : float
        The current and the next noise level.
    x0_hat : array (N, ...)
        D(x; sigma).

    Returns
    -------
    array (N, ...)
        The state at ``sigma_next``.
    """
    return x + (sigma_next - sigma) * to_d(x, sigma, x0_hat)


@check_args(scalars=("sigma", "sigma_next", "eta"))
def ancestral_sigmas(sigma, sigma_next, eta=1.0):
    """(sigma_down, sigma_up) of an ancestral step, MATH.md (9.4):
    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.  eta = 1 gives the Brownian-bridge
    (DDPM posterior) split, sigma_down = sigma_next^2 / sigma.

    Parameters
    ----------
    sigma, sigma_next : float
        The current and the next noise level.
    eta : float, default 1.0
        The stochasticity (>= 0); 0 gives (sigma_next, 0).

    Returns
    -------
    sigma_down, sigma_up : float

    Raises
    ------
    ValueError
        If ``eta`` < 0.
    """
    if not eta >= 0:
        raise ValueError(f"eta = {eta!r} must be >= 0")
    if sigma_next == 0 or eta == 0:
        return float(sigma_next), 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


@check_args(arrays=("x", "x0_hat", "noise"),
            scalars=("sigma", "sigma_next", "eta", "s_noise"),
            same_shape=("x", "x0_hat", "noise"))
def euler_ancestral_step(x, sigma, sigma_next, x0_hat, noise=None, *, eta=1.0, s_noise=1.0):
    """Euler ancestral step, MATH.md (9.4): a deterministic Euler step to sigma_down, then
    fresh noise of standard deviation ``s_noise * sigma_up``.  ``noise`` (x's shape) is
    required iff sigma_up > 0.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at ``sigma``.
    sigma, sigma_next : float
        The current and the next noise level.
    x0_hat : array (N, ...)
        D(x; sigma).
    noise : array (N, ...), optional
        Standard normal noise; required iff sigma_up > 0.
    eta : float, default 1.0
        The stochasticity (>= 0).
    s_noise : float, default 1.0
        Factor on the fresh noise.

    Returns
    -------
    array (N, ...)
        The state at ``sigma_next``.

    Raises
    ------
    ValueError
        If ``eta`` < 0 or the noise is misshaped.
    TypeError
        If noise is needed and missing.
    """
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x = euler_step(x, sigma, down, x0_hat)
    if up > 0:
        x = x + (s_noise * up) * check_noise(noise, x, "euler_ancestral_step")
    return x


@check_args(callables=("denoiser",),
            arrays=("x", "x0_hat"),
            scalars=("sigma", "sigma_next"),
            same_shape=("x", "x0_hat"))
def heun_step(denoiser, x, sigma, sigma_next, x0_hat=None):
    """Heun's (trapezoidal predictor-corrector) step of (9.2), MATH.md (9.5); an Euler step
    when sigma_next = 0 (no evaluation at sigma = 0).  ``x0_hat`` = D(x; sigma) if already
    known.  Returns (x_next, x0_hat).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> x0_hat`` in sigma coordinates (sigma a float).
    x : array (N, ...)
        The state at ``sigma``.
    sigma, sigma_next : float
        The current and the next noise level.
    x0_hat : array (N, ...), optional
        D(x; sigma) if already known (saves a call).

    Returns
    -------
    x_next : array (N, ...)
    x0_hat : array (N, ...)
        D(x; sigma).
    """
    if x0_hat is None:
        x0_hat = denoiser(x, sigma)
    d = to_d(x, sigma, x0_hat)
    x_2 = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_2, x0_hat
    d_2 = to_d(x_2, sigma_next, denoiser(x_2, sigma_next))
    return x + (sigma_next - sigma) * 0.5 * (d + d_2), x0_hat


@check_args(callables=("denoiser",),
            arrays=("x", "x0_hat"),
            scalars=("sigma", "sigma_next"),
            same_shape=("x", "x0_hat"))
def dpm2_step(denoiser, x, sigma, sigma_next, x0_hat=None):
    """DPM-2 (k-diffusion): a midpoint step of (9.2) with the midpoint taken in log sigma,
    sigma_mid = sqrt(sigma sigma_next), MATH.md (9.6); Euler when sigma_next = 0.
    Returns (x_next, x0_hat).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> x0_hat`` in sigma coordinates (sigma a float).
    x : array (N, ...)
        The state at ``sigma``.
    sigma, sigma_next : float
        The current and the next noise level.
    x0_hat : array (N, ...), optional
        D(x; sigma) if already known (saves a call).

    Returns
    -------
    x_next : array (N, ...)
    x0_hat : array (N, ...)
        D(x; sigma).
    """
    if x0_hat is None:
        x0_hat = denoiser(x, sigma)
    d = to_d(x, sigma, x0_hat)
    if sigma_next == 0:
        return x + (sigma_next - sigma) * d, x0_hat
    sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_next)))
    x_2 = x + (sigma_mid - sigma) * d
    d_2 = to_d(x_2, sigma_mid, denoiser(x_2, sigma_mid))
    return x + (sigma_next - sigma) * d_2, x0_hat


@check_args(scalars=("sigma", "s_churn", "s_tmin"))
def edm_gamma(sigma, n, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf")):
    """EDM's churn factor, MATH.md (9.7): ``min(S_churn / n, sqrt 2 - 1)`` when
    S_tmin <= sigma <= S_tmax, else 0 (n = number of steps).

    Parameters
    ----------
    sigma : float
        The current noise level.
    n : int
        The number of steps.
    s_churn : float, default 0.0
        S_churn (>= 0).
    s_tmin, s_tmax : float, default 0.0, inf
        The range of noise levels that are churned.

    Returns
    -------
    float
        gamma.

    Raises
    ------
    ValueError
        If ``s_churn`` < 0.
    """
    check_int("n", n, min=1)
    check_level("s_tmax", s_tmax)
    check_int("n", n, min=1)
    check_level("s_tmax", s_tmax)
    if not s_churn >= 0:
        raise ValueError(f"s_churn = {s_churn!r} must be >= 0")
    return min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0


@check_args(arrays=("x", "noise"), scalars=("sigma", "gamma", "s_noise"), same_shape=("x", "noise"))
def edm_churn(x, sigma, gamma, noise=None, *, s_noise=1.0):
    """Raise the noise level from sigma to sigma_hat = (1 + gamma) sigma by adding fresh
    noise of variance sigma_hat^2 - sigma^2 (times s_noise^2), MATH.md (9.7).
    Returns (x_hat, sigma_hat); with gamma = 0 nothing is drawn.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at ``sigma``.
    sigma : float
        The current noise level.
    gamma : float
        The churn factor (>= 0).
    noise : array (N, ...), optional
        Standard normal noise; required when gamma > 0.
    s_noise : float, default 1.0
        Factor on the fresh noise.

    Returns
    -------
    x_hat : array (N, ...)
    sigma_hat : float

    Raises
    ------
    ValueError
        If ``gamma`` < 0 or the noise is misshaped.
    TypeError
        If noise is needed and missing.
    """
    if not gamma >= 0:
        raise ValueError(f"gamma = {gamma!r} must be >= 0")
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    z = check_noise(noise, x, "edm_churn")
    return x + (s_noise * math.sqrt(sigma_hat**2 - sigma**2)) * z, sigma_hat


def lms_coefficients(sigmas, i, order):
    """Exact linear multistep coefficients, MATH.md (9.8):
    ``c_j = int_{sigma_i}^{sigma_{i+1}} prod_{m != j} (s - sigma_{i-m}) / (sigma_{i-j} - sigma_{i-m}) ds``
    for j = 0..k-1 (k = min(order, i + 1)), the integrals of the Lagrange basis through
    the last k noise levels, integrated analytically as polynomials (host float64).

    Parameters
    ----------
    sigmas : array_like
        The noise grid.
    i : int
        The step, in [0, len(sigmas) - 2].
    order : int
        The order (>= 1).

    Returns
    -------
    list of float
        c_0..c_{k-1}.

    Raises
    ------
    ValueError
        If ``i`` or ``order`` is out of range.
    """
    sig = _host_1d(sigmas, "sigmas").astype(np.float64)
    if sig.size < 2:
        raise ValueError(f"sigmas must hold at least 2 noise levels, got {sig.size}")
    if np.any(sig < 0) or np.any(np.diff(sig) >= 0):
        raise ValueError(f"sigmas must be >= 0 and strictly decreasing, got {sig.tolist()}")
    check_int("i", i, min=0)
    if not 0 <= i < sig.shape[0] - 1:
        raise ValueError(f"i = {i} is out of range [0, {sig.shape[0] - 2}]")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"order = {order!r} must be an integer >= 1")
    k = min(int(order), i + 1)
    nodes = sig[i - np.arange(k)]  # sigma_i, sigma_{i-1}, ...
    out = []
    for j in range(k):
        p = np.polynomial.Polynomial([1.0])
        for m in range(k):
            if m != j:
                p = p * np.polynomial.Polynomial([-nodes[m], 1.0]) / (nodes[j] - nodes[m])
        P = p.integ()
        out.append(float(P(sig[i + 1]) - P(sig[i])))
    return out


@check_args(arrays=("x",))
def lms_step(x, ds, coeffs):
    """``x + sum_j c_j d_{i-j}``, MATH.md (9.8); ``ds`` newest first (d_i, d_{i-1}, ...).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at sigma_i.
    ds : sequence of arrays
        The slopes, newest first.
    coeffs : sequence of float
        The coefficients of :func:`lms_coefficients`.

    Returns
    -------
    array (N, ...)
        The state at sigma_{i+1}.
    """
    for c, d in zip(coeffs, ds):
        x = x + c * d
    return x


# ------------------------------------------------------------------------- loops
def _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale):
    """(x in sigma coordinates, grid, its VE levels s_i = sigma_i / alpha_i), MATH.md (9.1), (9.10)."""
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "sigma-space sampler")
    sig = [0.0 if p.sigma == 0.0 else (p.sigma / p.alpha if p.alpha > 0 else math.inf) for p in grid]
    if not all(math.isfinite(s) for s in sig):
        raise ValueError("the sigma grid contains inf (zero terminal SNR): sigma-space samplers need alpha_bar > 0")
    if init_scale == "vp":
        return x * math.sqrt(1.0 + sig[0] ** 2), grid, sig
    if init_scale == "sigma_max":
        return x * sig[0], grid, sig
    raise ValueError(f"unknown init_scale {init_scale!r}; valid: 'vp', 'sigma_max'")


def _denoiser(model, schedule, grid, prediction_type, interpolation, i):
    """D(x; s) = x0_hat in sigma coordinates for step i, MATH.md (9.2): the VP model at
    x_vp = x / sqrt(1 + s^2), at the grid point's time for a grid level, else at
    :func:`refdiff.sigma_to_time` (churned levels, midpoints)."""
    times = {p.sigma / p.alpha: p.t for p in grid if p.sigma > 0 and p.alpha > 0}

    def D(x, s):
        a = 1.0 / math.sqrt(1.0 + s * s)
        t = times[s] if s in times else point_at_sigma(schedule, s, interpolation).t
        return to_eps_x0(call_model(model, x * a, t, step=i), x * a, a, s * a, prediction_type)[1]

    return D


_GRID_DOC = """

    Notes
    -----
    Grid: :func:`refdiff.make_grid` (``sigmas=`` VE levels override ``timesteps``; model times
    by ``interpolation``, :func:`refdiff.sigma_to_time`).  The start state ``x`` is in VP
    coordinates and is scaled by sqrt(1 + s_0^2) (``init_scale="vp"``, the exact conversion
    and diffusers' ``init_noise_sigma`` for its "leading" grids) or by s_0 (``"sigma_max"``,
    k-diffusion's convention for x ~ N(0, I)); MATH.md (9.10).  Returns the VP state at the
    last grid point (x_0 when it is 0).  Hooks ``callback``/``project`` after each step in VP
    coordinates (:func:`refdiff.samplers.common.end_step`)."""


def euler_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
               project=None, sigmas=None, interpolation="log_alpha", init_scale="vp", final_sigmas_type=None,
               **options):
    """Euler sampling of the sigma-space ODE (9.2)-(9.3); deterministic, no noise.

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
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (below).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    **options
        Not accepted: any other keyword raises TypeError.

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    check_options("euler", options)
    x, grid, sig = _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale)
    for i in range(len(sig) - 1):
        x0_hat = _denoiser(model, schedule, grid, prediction_type, interpolation, i)(x, sig[i])
        x = euler_step(x, sig[i], sig[i + 1], x0_hat)
        x = end_step(i, grid[i].t, x, x0_hat, callback, project, path=(1.0, sig[i + 1]))
    return to_vp(x, 1.0, sig[-1])


def euler_ancestral_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                         project=None, eta=1.0, s_noise=1.0, sigmas=None, interpolation="log_alpha", init_scale="vp",
                         final_sigmas_type=None, **options):
    """Euler ancestral sampling, MATH.md (9.4).  Noise: one draw per step with
    sigma_up > 0 (every step whose target sigma is > 0 when eta > 0), after that step's
    model call.

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
        ``noise(like) -> array``, a standard normal draw of like's shape (refdiff.sample builds it
        from ``rng``); required when a step draws noise.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    eta : float, default 1.0
        The stochasticity (>= 0).
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (below).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    **options
        Not accepted: any other keyword raises TypeError.

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    check_finite_scalar("eta", eta, low=0.0)
    check_finite_scalar("s_noise", s_noise, low=0.0)
    check_options("euler_ancestral", options)
    if not eta >= 0:
        raise ValueError(f"eta = {eta!r} must be >= 0")
    x, grid, sig = _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale)
    for i in range(len(sig) - 1):
        x0_hat = _denoiser(model, schedule, grid, prediction_type, interpolation, i)(x, sig[i])
        z = draw_noise(noise, x, "euler_ancestral") if ancestral_sigmas(sig[i], sig[i + 1], eta)[1] > 0 else None
        x = euler_ancestral_step(x, sig[i], sig[i + 1], x0_hat, z, eta=eta, s_noise=s_noise)
        x = end_step(i, grid[i].t, x, x0_hat, callback, project, path=(1.0, sig[i + 1]))
    return to_vp(x, 1.0, sig[-1])


def heun_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
              project=None, sigmas=None, interpolation="log_alpha", init_scale="vp", final_sigmas_type=None,
              **options):
    """Heun sampling, MATH.md (9.5): 2 model calls per step, 1 on a final step to sigma = 0;
    deterministic.

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
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (below).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    **options
        Not accepted: any other keyword raises TypeError.

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    check_options("heun", options)
    x, grid, sig = _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale)
    for i in range(len(sig) - 1):
        D = _denoiser(model, schedule, grid, prediction_type, interpolation, i)
        x, x0_hat = heun_step(D, x, sig[i], sig[i + 1])
        x = end_step(i, grid[i].t, x, x0_hat, callback, project, path=(1.0, sig[i + 1]))
    return to_vp(x, 1.0, sig[-1])


def edm_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
             project=None, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, sigmas=None,
             interpolation="log_alpha", init_scale="vp", final_sigmas_type=None, **options):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), MATH.md (9.7), (9.5):
    churn sigma -> sigma_hat = (1 + gamma) sigma with fresh noise, then a Heun step from
    sigma_hat to the next sigma.  Noise: one draw per step with gamma > 0, before that
    step's model calls.  s_churn = 0 is :func:`heun_loop`.  sigma_hat may exceed the
    schedule's largest sigma; its model time is then extrapolated (MATH.md (2.15)).  The
    hooks' x0_hat is D(x_hat; sigma_hat), at the churned level.

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
        ``noise(like) -> array``, a standard normal draw of like's shape (refdiff.sample builds it
        from ``rng``); required when a step draws noise.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    s_churn : float, default 0.0
        S_churn (>= 0); 0 is heun_loop.
    s_tmin : float, default 0.0
        The smallest churned noise level.
    s_tmax : float, default inf
        The largest churned noise level.
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (below).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    **options
        Not accepted: any other keyword raises TypeError.

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    check_finite_scalar("s_churn", s_churn, low=0.0)
    check_finite_scalar("s_tmin", s_tmin, low=0.0)
    check_level("s_tmax", s_tmax)
    check_finite_scalar("s_noise", s_noise, low=0.0)
    check_options("edm", options)
    x, grid, sig = _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale)
    n = len(sig) - 1
    for i in range(n):
        D = _denoiser(model, schedule, grid, prediction_type, interpolation, i)
        gamma = edm_gamma(sig[i], n, s_churn, s_tmin, s_tmax)
        z = draw_noise(noise, x, "edm") if gamma > 0 else None
        x_hat, sigma_hat = edm_churn(x, sig[i], gamma, z, s_noise=s_noise)
        x, x0_hat = heun_step(D, x_hat, sigma_hat, sig[i + 1])
        x = end_step(i, grid[i].t, x, x0_hat, callback, project, path=(1.0, sig[i + 1]))
    return to_vp(x, 1.0, sig[-1])


def dpm2_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
              project=None, sigmas=None, interpolation="log_alpha", init_scale="vp", final_sigmas_type=None,
              **options):
    """DPM-2 sampling, MATH.md (9.6); deterministic, 2 model calls per step (1 to sigma = 0).

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
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (below).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    **options
        Not accepted: any other keyword raises TypeError.

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    check_options("dpm_2", options)
    x, grid, sig = _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale)
    for i in range(len(sig) - 1):
        D = _denoiser(model, schedule, grid, prediction_type, interpolation, i)
        x, x0_hat = dpm2_step(D, x, sig[i], sig[i + 1])
        x = end_step(i, grid[i].t, x, x0_hat, callback, project, path=(1.0, sig[i + 1]))
    return to_vp(x, 1.0, sig[-1])


def lms_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
             project=None, order=4, sigmas=None, interpolation="log_alpha", init_scale="vp", final_sigmas_type=None,
             **options):
    """Linear multistep (Adams-Bashforth in sigma) of order ``order``, MATH.md (9.8): one
    model call per step, the first steps at lower order (min(order, i + 1)); deterministic.
    The slopes d_j = (x_j - x0_hat_j) / s_j are kept from earlier steps: a ``project`` that
    changes x does not change them.

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
    order : int, default 4
        The largest order (>= 1).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (below).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    **options
        Not accepted: any other keyword raises TypeError.

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    check_int("order", order, min=1)
    check_options("lms", options)
    x, grid, sig = _sigma_setup(model, x, schedule, timesteps, sigmas, final_sigmas_type, interpolation, init_scale)
    ds = []
    for i in range(len(sig) - 1):
        x0_hat = _denoiser(model, schedule, grid, prediction_type, interpolation, i)(x, sig[i])
        ds = [to_d(x, sig[i], x0_hat)] + ds[: max(int(order) - 1, 0)]
        x = lms_step(x, ds, lms_coefficients(sig, i, order))
        x = end_step(i, grid[i].t, x, x0_hat, callback, project, path=(1.0, sig[i + 1]))
    return to_vp(x, 1.0, sig[-1])


for _f in (euler_loop, euler_ancestral_loop, heun_loop, edm_loop, dpm2_loop, lms_loop):
    _f.__doc__ += _GRID_DOC

METHODS = {"euler": euler_loop, "euler_ancestral": euler_ancestral_loop, "heun": heun_loop, "edm": edm_loop,
           "dpm_2": dpm2_loop, "lms": lms_loop}
