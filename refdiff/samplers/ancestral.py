"""Stochastic samplers in sigma space after k-diffusion (Crowson): DPM-2 ancestral, DPM++ 2S
ancestral, DPM++ SDE, and the multistep DPM++ 2M SDE and 3M SDE for any eta,
MATH.md chapter 16.

Coordinates as in :mod:`refdiff.samplers.karras`: x = x_vp / alpha, s = sigma_t / alpha_t
(MATH.md (9.1)), the denoiser D(x; s) = x0_hat, and lambda = -log s (the half log-SNR).
Step functions take a ``denoiser(x, s)`` (or its values) and explicit standard normal noise
arrays; the loops convert the VP start state in and the result out.
"""

from __future__ import annotations

import math

from .._validate import check_finite_scalar
from ..parameterization import to_eps_x0
from .common import call_model, check_args, check_start, end_step, point_at_sigma, to_vp, vp_grid
from .karras import ancestral_sigmas, to_d

__all__ = ["dpm2_ancestral_step", "dpmpp_2s_ancestral_step", "brownian_pair", "dpmpp_sde_step",
           "dpmpp_2m_sde_eta_step", "dpmpp_3m_sde_step", "dpm2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
           "dpmpp_2m_sde_eta", "dpmpp_3m_sde"]


def _need(noise, x, who):
    if noise is None:
        raise TypeError(f"{who} needs an explicit standard normal noise array of x's shape")
    if tuple(noise.shape) != tuple(x.shape):
        raise ValueError(f"{who}: noise has shape {tuple(noise.shape)}, expected x's shape {tuple(x.shape)}")
    return noise


def _check_eta(eta, who):
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"{who}: eta = {eta!r} must be a finite number >= 0")
    return float(eta)


# ------------------------------------------------------------------------- single steps
@check_args(callables=("denoiser",),
            arrays=("x", "noise", "x0_hat"),
            scalars=("sigma", "sigma_next", "s_noise"),
            same_shape=("x", "noise", "x0_hat"))
def dpm2_ancestral_step(denoiser, x, sigma, sigma_next, noise=None, *, eta=1.0, s_noise=1.0, x0_hat=None):
    """DPM-2 ancestral, MATH.md (16.10): the ancestral split (s_down, s_up) of MATH.md (9.4),
    a DPM-2 midpoint step (MATH.md (9.6)) from sigma to s_down with the midpoint
    sqrt(sigma s_down), then s_noise s_up noise.  To s_down = 0 an Euler step.
    Returns (x_next, x0_hat).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> x0_hat`` in sigma coordinates (sigma a float).
    x : array (N, ...)
        The state at ``sigma`` (sigma coordinates).
    sigma, sigma_next : float
        The current and the next noise level.
    noise : array (N, ...), optional
        Standard normal noise; required iff s_up > 0.
    eta : float, default 1.0
        The stochasticity (>= 0) of the ancestral split.
    s_noise : float, default 1.0
        Factor on the fresh noise.
    x0_hat : array (N, ...), optional
        D(x; sigma) if already known (saves a call).

    Returns
    -------
    x_next : array (N, ...)
    x0_hat : array (N, ...)
        D(x; sigma).

    Raises
    ------
    TypeError
        If noise is needed and missing.
    ValueError
        If ``eta`` < 0 or the noise is misshaped.
    """
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x0_hat = denoiser(x, sigma) if x0_hat is None else x0_hat
    d = to_d(x, sigma, x0_hat)
    if down == 0:
        x = x + (down - sigma) * d
    else:
        mid = math.exp(0.5 * (math.log(sigma) + math.log(down)))
        d_2 = to_d(x + (mid - sigma) * d, mid, denoiser(x + (mid - sigma) * d, mid))
        x = x + (down - sigma) * d_2
    if up > 0:
        x = x + (s_noise * up) * _need(noise, x, "dpm2_ancestral_step")
    return x, x0_hat


@check_args(callables=("denoiser",),
            arrays=("x", "noise", "x0_hat"),
            scalars=("sigma", "sigma_next", "s_noise"),
            same_shape=("x", "noise", "x0_hat"))
def dpmpp_2s_ancestral_step(denoiser, x, sigma, sigma_next, noise=None, *, eta=1.0, s_noise=1.0, x0_hat=None):
    """DPM++ 2S ancestral, MATH.md (16.11): DPM-Solver++(2S) (MATH.md (10.9), r = 1/2, the
    papers' coefficient) from sigma to s_down in sigma space, e^{-lambda} = s:
    x_2 = (s_mid/s) x - expm1(-h/2) D(x; s), x' = (s_down/s) x - expm1(-h) D(x_2; s_mid),
    then s_noise s_up noise.  To s_down = 0 an Euler step.  Returns (x_next, x0_hat).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> x0_hat`` in sigma coordinates (sigma a float).
    x : array (N, ...)
        The state at ``sigma`` (sigma coordinates).
    sigma, sigma_next : float
        The current and the next noise level.
    noise : array (N, ...), optional
        Standard normal noise; required iff s_up > 0.
    eta : float, default 1.0
        The stochasticity (>= 0) of the ancestral split.
    s_noise : float, default 1.0
        Factor on the fresh noise.
    x0_hat : array (N, ...), optional
        D(x; sigma) if already known (saves a call).

    Returns
    -------
    x_next : array (N, ...)
    x0_hat : array (N, ...)
        D(x; sigma).

    Raises
    ------
    TypeError
        If noise is needed and missing.
    ValueError
        If ``eta`` < 0 or the noise is misshaped.
    """
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x0_hat = denoiser(x, sigma) if x0_hat is None else x0_hat
    if down == 0:
        x = x + (down - sigma) * to_d(x, sigma, x0_hat)
    else:
        h = math.log(sigma) - math.log(down)  # lambda_down - lambda
        mid = sigma * math.exp(-0.5 * h)
        x_2 = (mid / sigma) * x - math.expm1(-0.5 * h) * x0_hat
        x = (down / sigma) * x - math.expm1(-h) * denoiser(x_2, mid)
    if up > 0:
        x = x + (s_noise * up) * _need(noise, x, "dpmpp_2s_ancestral_step")
    return x, x0_hat


@check_args(arrays=("z1", "z2"), scalars=("sigma", "sigma_mid", "sigma_next"), same_shape=("z1", "z2"))
def brownian_pair(z1, z2, sigma, sigma_mid, sigma_next):
    """The two normalised increments of one Brownian path W(s) used by a DPM++ SDE step,
    MATH.md (16.12): from independent standard normals z1 (on [sigma_mid, sigma]) and z2
    (on [sigma_next, sigma_mid]), returns (n1, n2) = ((W(sigma_mid) - W(sigma)) / sqrt(sigma -
    sigma_mid), (W(sigma_next) - W(sigma)) / sqrt(sigma - sigma_next)): each N(0, I), with
    correlation sqrt((sigma - sigma_mid) / (sigma - sigma_next)) (k-diffusion's
    BrownianTreeNoiseSampler in the identity transform draws this pair).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    z1, z2 : array (N, ...)
        Independent standard normals.
    sigma, sigma_mid, sigma_next : float
        The levels, sigma > sigma_mid > sigma_next.

    Returns
    -------
    n1, n2 : arrays (N, ...)
    """
    a, b = math.sqrt(sigma - sigma_mid), math.sqrt(sigma_mid - sigma_next)
    return z1, (a * z1 + b * z2) / math.sqrt(sigma - sigma_next)


@check_args(callables=("denoiser",),
            arrays=("x", "noise1", "noise2", "x0_hat"),
            scalars=("sigma", "sigma_next", "s_noise", "r"),
            same_shape=("x", "noise1", "noise2", "x0_hat"))
def dpmpp_sde_step(denoiser, x, sigma, sigma_next, noise1=None, noise2=None, *, eta=1.0, s_noise=1.0, r=0.5,
                   x0_hat=None):
    """DPM++ SDE (k-diffusion's ``sample_dpmpp_sde``), MATH.md (16.13): two stages in lambda,
    each an ancestral DPM-Solver++(1) step; stage 1 to s = sigma e^{-r h} with noise n1,
    stage 2 to sigma_next with D_d = (1 - 1/(2r)) D(x; sigma) + 1/(2r) D(x_2; s) and noise n2,
    where (n1, n2) = :func:`brownian_pair` (noise1, noise2).  To sigma_next = 0 an Euler step
    (no noise).  Returns (x_next, x0_hat).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    denoiser : callable
        ``denoiser(x, sigma) -> x0_hat`` in sigma coordinates (sigma a float).
    x : array (N, ...)
        The state at ``sigma`` (sigma coordinates).
    sigma, sigma_next : float
        The current and the next noise level.
    noise1, noise2 : array (N, ...), optional
        The standard normals z1, z2 of :func:`brownian_pair`; required unless sigma_next = 0.
    eta : float, default 1.0
        The stochasticity of each stage's ancestral split.
    s_noise : float, default 1.0
        Factor on the fresh noise.
    r : float, default 0.5
        The stage fraction in lambda, in (0, 1].
    x0_hat : array (N, ...), optional
        D(x; sigma) if already known.

    Returns
    -------
    x_next : array (N, ...)
    x0_hat : array (N, ...)
        D(x; sigma).

    Raises
    ------
    ValueError
        If ``r`` is out of range or the noise is misshaped.
    TypeError
        If noise is missing.
    """
    x0_hat = denoiser(x, sigma) if x0_hat is None else x0_hat
    if sigma_next == 0:
        return x + (sigma_next - sigma) * to_d(x, sigma, x0_hat), x0_hat
    if not 0 < r <= 1:
        raise ValueError(f"dpmpp_sde_step: r = {r!r} must be in (0, 1]")
    h = math.log(sigma) - math.log(sigma_next)
    s_mid = sigma * math.exp(-r * h)
    n1, n2 = brownian_pair(_need(noise1, x, "dpmpp_sde_step"), _need(noise2, x, "dpmpp_sde_step"), sigma, s_mid,
                           sigma_next)
    down, up = ancestral_sigmas(sigma, s_mid, eta)
    x_2 = (down / sigma) * x - math.expm1(math.log(down) - math.log(sigma)) * x0_hat + (s_noise * up) * n1
    fac = 1.0 / (2.0 * r)
    x0_d = (1.0 - fac) * x0_hat + fac * denoiser(x_2, s_mid)
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x = (down / sigma) * x - math.expm1(math.log(down) - math.log(sigma)) * x0_d + (s_noise * up) * n2
    return x, x0_hat


# ------------------------------------------------------------------------- multistep SDE
@check_args(arrays=("x", "x0_hat", "x0_prev", "noise"),
            scalars=("sigma", "sigma_next", "s_noise", "h_prev"),
            same_shape=("x", "x0_hat", "x0_prev", "noise"), optional=("x0_prev", "h_prev"))
def dpmpp_2m_sde_eta_step(x, x0_hat, x0_prev, h_prev, sigma, sigma_next, noise=None, *, eta=1.0, s_noise=1.0,
                          solver_type="midpoint"):
    """DPM++ 2M SDE for any eta >= 0, MATH.md (16.14), in sigma space with h = log(sigma /
    sigma_next):  x' = (sigma_next/sigma) e^{-eta h} x + (1 - e^{-(1+eta) h}) D
    + c (D - D_prev) / r  + s_noise sigma_next sqrt(1 - e^{-2 eta h}) z,
    r = h_prev / h, H = (1 + eta) h; c = (1 - e^{-H}) / 2 ("midpoint") or the exact integral
    phi_2 = expm1(-H)/H + 1 ("heun").  ``x0_prev=None`` gives the first-order step.  eta = 1
    is MATH.md (10.16) in sigma coordinates; a step to sigma_next = 0 returns x0_hat.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at ``sigma`` (sigma coordinates).
    x0_hat : array (N, ...)
        D at the current level.
    x0_prev : array (N, ...) or None
        D at the previous level; None for the first-order step.
    h_prev : float or None
        The previous step size in log sigma.
    sigma, sigma_next : float
        The current and the next noise level.
    noise : array (N, ...), optional
        Standard normal noise; required when eta > 0 and sigma_next > 0.
    eta : float, default 1.0
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the fresh noise.
    solver_type : {"midpoint", "heun"}, default "midpoint"
        The second-order coefficient c.

    Returns
    -------
    array (N, ...)
        The state at ``sigma_next`` (x0_hat when it is 0).

    Raises
    ------
    ValueError
        If ``solver_type`` or ``eta`` is invalid, or the noise is misshaped.
    TypeError
        If noise is needed and missing.
    """
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"dpmpp_2m_sde_eta_step: unknown solver_type {solver_type!r}; valid: 'midpoint', 'heun'")
    eta = _check_eta(eta, "dpmpp_2m_sde_eta_step")
    if x0_prev is not None and h_prev is None:
        raise TypeError("h_prev must be the previous step's h (a number > 0) when x0_prev is given, got None")
    if sigma_next == 0:
        return x0_hat
    h = math.log(sigma) - math.log(sigma_next)
    H = (1.0 + eta) * h
    x = (sigma_next / sigma) * math.exp(-eta * h) * x - math.expm1(-H) * x0_hat
    if x0_prev is not None:
        c = -0.5 * math.expm1(-H) if solver_type == "midpoint" else math.expm1(-H) / H + 1.0
        x = x + (c * h / h_prev) * (x0_hat - x0_prev)
    if eta > 0:
        z = _need(noise, x, "dpmpp_2m_sde_eta_step")
        x = x + (s_noise * sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h))) * z
    return x


@check_args(arrays=("x", "noise"), scalars=("sigma", "sigma_next", "s_noise"), same_shape=("x", "noise"))
def dpmpp_3m_sde_step(x, x0_hats, hs_prev, sigma, sigma_next, noise=None, *, eta=1.0, s_noise=1.0,
                      variant="exact"):
    """DPM++ 3M SDE (k-diffusion's ``sample_dpmpp_3m_sde``), MATH.md (16.15): the first-order
    SDE step of (16.14) plus phi_2 d1 - phi_3 d2 with H = (1+eta) h, phi_2 = expm1(-H)/H + 1,
    phi_3 = phi_2/H - 1/2 and, from D_0 = ``x0_hats[0]``, D_1, D_2 (newest first) and the
    earlier step sizes h_1, h_2 (``hs_prev``), d1_0 = (D_0 - D_1)/r0, d1_1 = (D_1 - D_2)/r1
    (r0 = h_1/h, r1 = h_2/h), d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1), d2 = (d1_0 - d1_1)/(r0 + r1).
    ``variant="published"`` is k-diffusion's coefficient -phi_3 on d2 (= h^2 m''/2): half the
    exact integral, like the published DPM-Solver++(3M) (MATH.md (10.14)); ``"exact"`` uses
    -2 phi_3 and is exact for a quadratic prediction.  With two predictions it is the 'heun'
    2M SDE step, with one the first-order step.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at ``sigma`` (sigma coordinates).
    x0_hats : sequence of arrays
        1 to 3 denoiser outputs, newest first.
    hs_prev : sequence of float
        The earlier step sizes h_1, h_2 in log sigma (newest first; len(x0_hats) - 1 are used).
    sigma, sigma_next : float
        The current and the next noise level.
    noise : array (N, ...), optional
        Standard normal noise; required when eta > 0 and sigma_next > 0.
    eta : float, default 1.0
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the fresh noise.
    variant : {"exact", "published"}, default "exact"
        The coefficient on d2.

    Returns
    -------
    array (N, ...)
        The state at ``sigma_next`` (x0_hats[0] when it is 0).

    Raises
    ------
    ValueError
        If ``variant`` or ``eta`` is invalid, or the noise is misshaped.
    TypeError
        If noise is needed and missing.
    """
    eta = _check_eta(eta, "dpmpp_3m_sde_step")
    if variant not in ("exact", "published"):
        raise ValueError(f"dpmpp_3m_sde_step: unknown variant {variant!r}; valid: 'exact', 'published'")
    if sigma_next == 0:
        return x0_hats[0]
    h = math.log(sigma) - math.log(sigma_next)
    H = (1.0 + eta) * h
    x = math.exp(-H) * x - math.expm1(-H) * x0_hats[0]
    phi_2 = math.expm1(-H) / H + 1.0
    if len(x0_hats) >= 3:
        r0, r1 = hs_prev[0] / h, hs_prev[1] / h
        d1_0, d1_1 = (x0_hats[0] - x0_hats[1]) / r0, (x0_hats[1] - x0_hats[2]) / r1
        d1, d2 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1)), (d1_0 - d1_1) / (r0 + r1)
        x = x + phi_2 * d1 - (2.0 if variant == "exact" else 1.0) * (phi_2 / H - 0.5) * d2
    elif len(x0_hats) == 2:
        x = x + (phi_2 * h / hs_prev[0]) * (x0_hats[0] - x0_hats[1])
    if eta > 0:
        z = _need(noise, x, "dpmpp_3m_sde_step")
        x = x + (s_noise * sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h))) * z
    return x


# ------------------------------------------------------------------------- loops
def _sigma_setup(model, x, schedule, timesteps, prediction_type, sigmas, final_sigmas_type, interpolation,
                 init_scale, who):
    """(x in sigma coordinates, grid, its VE levels, denoiser D(x, s)), MATH.md (9.1), (9.10):
    D evaluates the VP model at x / sqrt(1 + s^2), at the grid's time for a grid level and at
    :func:`refdiff.sigma_to_time` for other levels (midpoints)."""
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, who)
    sig = [0.0 if p.sigma == 0.0 else (p.sigma / p.alpha if p.alpha > 0 else math.inf) for p in grid]
    if not all(math.isfinite(v) for v in sig):
        raise ValueError(f"{who}: the sigma grid contains inf (zero terminal SNR): sigma-space samplers need "
                         "alpha_bar > 0")
    if init_scale not in ("vp", "sigma_max"):
        raise ValueError(f"{who}: unknown init_scale {init_scale!r}; valid: 'vp', 'sigma_max'")
    times = {v: p.t for v, p in zip(sig, grid) if v > 0}
    state = {"i": 0}

    def denoiser(y, s):
        a = 1.0 / math.sqrt(1.0 + s * s)
        t = times[s] if s in times else point_at_sigma(schedule, s, interpolation).t
        return to_eps_x0(call_model(model, y * a, t, step=state["i"]), y * a, a, s * a, prediction_type)[1]

    def step_end(i, y, x0_hat, callback, project):
        state["i"] = i + 1
        return end_step(i, grid[i].t, y, x0_hat, callback, project, path=(1.0, sig[i + 1]))

    scale = math.sqrt(1.0 + sig[0] ** 2) if init_scale == "vp" else sig[0]
    return x * scale, sig, denoiser, step_end


def _draw(noise, x, who):
    if noise is None:
        raise TypeError(f"method {who!r} is stochastic and needs noise (pass rng= to refdiff.sample)")
    return _need(noise(x), x, who)


_DOC = """

    Notes
    -----
    Grid: :func:`refdiff.make_grid` (``sigmas=`` any explicit decreasing sigma grid, ending
    in 0 for a final denoising step); model times of grid sigmas are the grid's, others from
    :func:`refdiff.sigma_to_time` (``interpolation``).
    The VP start state is scaled by sqrt(1 + sigma_0^2) (``init_scale="vp"``, MATH.md (9.10))
    or by sigma_0 (``"sigma_max"``: k-diffusion, and diffusers' KDPM2Ancestral on
    "linspace"/"trailing" grids); returns VP coordinates.  Hooks (``project``, then
    ``callback(i, t_i, x_{i+1}, x0_hat(t_i))``) after each step in VP coordinates."""


def dpm2_ancestral(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                   project=None, eta=1.0, s_noise=1.0, sigmas=None, final_sigmas_type=None,
                   interpolation="log_alpha", init_scale="vp"):
    """DPM-2 ancestral sampling, MATH.md (16.10).  Noise: one draw per step with s_up > 0 (every
    step to sigma > 0 when eta > 0), as diffusers' KDPM2AncestralDiscreteScheduler draws.

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
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (notes).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`), ``eta``, ``init_scale`` or option, or
        missing noise.
    """
    check_finite_scalar("s_noise", s_noise, low=0.0)
    eta = _check_eta(eta, "dpm2_ancestral")
    x, sig, D, step_end = _sigma_setup(model, x, schedule, timesteps, prediction_type, sigmas,
                                       final_sigmas_type, interpolation, init_scale, "dpm2_ancestral")
    for i in range(len(sig) - 1):
        z = _draw(noise, x, "dpm2_ancestral") if ancestral_sigmas(sig[i], sig[i + 1], eta)[1] > 0 else None
        x, x0_hat = dpm2_ancestral_step(D, x, sig[i], sig[i + 1], z, eta=eta, s_noise=s_noise)
        x = step_end(i, x, x0_hat, callback, project)
    return to_vp(x, 1.0, sig[-1])


def dpmpp_2s_ancestral(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                       project=None, eta=1.0, s_noise=1.0, sigmas=None, final_sigmas_type=None,
                       interpolation="log_alpha", init_scale="vp"):
    """DPM++ 2S ancestral sampling, MATH.md (16.11).  Noise: one draw per step with s_up > 0
    (k-diffusion's ``sample_dpmpp_2s_ancestral`` also draws, with weight 0, when eta = 0).

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
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (notes).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`), ``eta``, ``init_scale`` or option, or
        missing noise.
    """
    check_finite_scalar("s_noise", s_noise, low=0.0)
    eta = _check_eta(eta, "dpmpp_2s_ancestral")
    x, sig, D, step_end = _sigma_setup(model, x, schedule, timesteps, prediction_type, sigmas,
                                       final_sigmas_type, interpolation, init_scale, "dpmpp_2s_ancestral")
    for i in range(len(sig) - 1):
        z = _draw(noise, x, "dpmpp_2s_ancestral") if ancestral_sigmas(sig[i], sig[i + 1], eta)[1] > 0 else None
        x, x0_hat = dpmpp_2s_ancestral_step(D, x, sig[i], sig[i + 1], z, eta=eta, s_noise=s_noise)
        x = step_end(i, x, x0_hat, callback, project)
    return to_vp(x, 1.0, sig[-1])


def dpmpp_sde(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
              project=None, eta=1.0, s_noise=1.0, r=0.5, sigmas=None, final_sigmas_type=None,
              interpolation="log_alpha", init_scale="vp"):
    """DPM++ SDE sampling, MATH.md (16.13).  Noise: two draws (z1, z2) per step to sigma > 0,
    before the step's model calls, combined into one Brownian path by :func:`brownian_pair`
    (a seeded loop is therefore not draw-for-draw k-diffusion's Brownian tree, but has its law).

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
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    r : float, default 0.5
        The stage fraction of :func:`dpmpp_sde_step`, in (0, 1].
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (notes).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`), ``eta``, ``init_scale`` or option, or
        missing noise.
    """
    check_finite_scalar("s_noise", s_noise, low=0.0)
    check_finite_scalar("r", r, low=0.0, low_open=True, high=1.0)
    eta = _check_eta(eta, "dpmpp_sde")
    x, sig, D, step_end = _sigma_setup(model, x, schedule, timesteps, prediction_type, sigmas,
                                       final_sigmas_type, interpolation, init_scale, "dpmpp_sde")
    for i in range(len(sig) - 1):
        z1, z2 = (_draw(noise, x, "dpmpp_sde"), _draw(noise, x, "dpmpp_sde")) if sig[i + 1] > 0 else (None, None)
        x0_hat = D(x, sig[i])
        x, _ = dpmpp_sde_step(D, x, sig[i], sig[i + 1], z1, z2, eta=eta, s_noise=s_noise, r=r, x0_hat=x0_hat)
        x = step_end(i, x, x0_hat, callback, project)
    return to_vp(x, 1.0, sig[-1])


def dpmpp_2m_sde_eta(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                     project=None, eta=1.0, s_noise=1.0, solver_type="midpoint", sigmas=None, final_sigmas_type=None,
                     interpolation="log_alpha", init_scale="vp"):
    """DPM++ 2M SDE for any eta (k-diffusion's ``sample_dpmpp_2m_sde``), MATH.md (16.14); the
    first step is first order, a step to sigma = 0 returns x0_hat.  Noise: one draw per step
    to sigma > 0 when eta > 0, after the step's model call.

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
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    solver_type : {"midpoint", "heun"}, default "midpoint"
        As in :func:`dpmpp_2m_sde_eta_step`.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (notes).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`), ``eta``, ``init_scale`` or option, or
        missing noise.
    """
    check_finite_scalar("s_noise", s_noise, low=0.0)
    eta = _check_eta(eta, "dpmpp_2m_sde_eta")
    x, sig, D, step_end = _sigma_setup(model, x, schedule, timesteps, prediction_type, sigmas,
                                       final_sigmas_type, interpolation, init_scale, "dpmpp_2m_sde_eta")
    x0_prev, h_prev = None, None
    for i in range(len(sig) - 1):
        x0_hat = D(x, sig[i])
        z = _draw(noise, x, "dpmpp_2m_sde_eta") if (eta > 0 and sig[i + 1] > 0) else None
        x = dpmpp_2m_sde_eta_step(x, x0_hat, x0_prev, h_prev, sig[i], sig[i + 1], z, eta=eta, s_noise=s_noise,
                                  solver_type=solver_type)
        x0_prev, h_prev = x0_hat, (math.log(sig[i]) - math.log(sig[i + 1]) if sig[i + 1] > 0 else None)
        x = step_end(i, x, x0_hat, callback, project)
    return to_vp(x, 1.0, sig[-1])


def dpmpp_3m_sde(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                 project=None, eta=1.0, s_noise=1.0, variant="exact", sigmas=None, final_sigmas_type=None,
                 interpolation="log_alpha", init_scale="vp"):
    """DPM++ 3M SDE (k-diffusion's ``sample_dpmpp_3m_sde``), MATH.md (16.15): steps 1 and 2 use
    one and two predictions (first order, then the 'heun' 2M SDE step); eta = 0 is a
    deterministic 3M ODE solver; ``variant="published"`` is k-diffusion's (second-order)
    coefficient, ``"exact"`` (default) the third-order one, see :func:`dpmpp_3m_sde_step`.
    Noise: one draw per step to sigma > 0 when eta > 0.

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
        The stochasticity (finite, >= 0).
    s_noise : float, default 1.0
        Factor on the standard deviation of the fresh noise.
    variant : {"exact", "published"}, default "exact"
        As in :func:`dpmpp_3m_sde_step`.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    init_scale : {"vp", "sigma_max"}, default "vp"
        The scaling of the VP start state into sigma coordinates (notes).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`), ``eta``, ``init_scale`` or option, or
        missing noise.
    """
    check_finite_scalar("s_noise", s_noise, low=0.0)
    eta = _check_eta(eta, "dpmpp_3m_sde")
    x, sig, D, step_end = _sigma_setup(model, x, schedule, timesteps, prediction_type, sigmas,
                                       final_sigmas_type, interpolation, init_scale, "dpmpp_3m_sde")
    x0s, hs = [], []  # newest first
    for i in range(len(sig) - 1):
        x0s = ([D(x, sig[i])] + x0s)[:3]
        z = _draw(noise, x, "dpmpp_3m_sde") if (eta > 0 and sig[i + 1] > 0) else None
        x = dpmpp_3m_sde_step(x, x0s, hs, sig[i], sig[i + 1], z, eta=eta, s_noise=s_noise, variant=variant)
        if sig[i + 1] > 0:
            hs = ([math.log(sig[i]) - math.log(sig[i + 1])] + hs)[:2]
        x = step_end(i, x, x0s[0], callback, project)
    return to_vp(x, 1.0, sig[-1])


for _f in (dpm2_ancestral, dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m_sde_eta, dpmpp_3m_sde):
    _f.__doc__ += _DOC

METHODS = {"dpm_2_ancestral": dpm2_ancestral, "dpmpp_2s_ancestral": dpmpp_2s_ancestral, "dpmpp_sde": dpmpp_sde,
           "dpmpp_2m_sde_eta": dpmpp_2m_sde_eta, "dpmpp_3m_sde": dpmpp_3m_sde}
