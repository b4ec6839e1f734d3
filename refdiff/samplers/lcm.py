"""The multistep consistency sampler of latent consistency models (Luo et al. 2023; Song et
al. 2023, Algorithm 1), as diffusers' LCMScheduler, MATH.md chapter 16.

A consistency function f(x_t, t) maps any point of a probability-flow ODE trajectory to
its data end.  Sampling alternates f with re-noising to the next (lower) grid level:
x_{i+1} = alpha_{i+1} f(x_i, t_i) + sigma_{i+1} z_i; the last step returns f (MATH.md (16.17)).
A network is made a consistency function by boundary coefficients c_skip(0) = 1, c_out(0) = 0:
f = c_skip(t) x_t + c_out(t) x0_hat(x_t, t), MATH.md (16.16).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_finite_scalar
from .common import check_args, check_start, draw_noise, end_step, predict, vp_grid

__all__ = ["lcm_timesteps", "lcm_boundary", "lcm_step", "lcm"]


def lcm_timesteps(T, n, original_inference_steps=50, strength=1.0):
    """LCMScheduler's grid (diffusers 0.42.1), MATH.md (16.18): the distillation grid
    tau_k = k (T // N) - 1, k = 1..int(N strength) (N = ``original_inference_steps``), reversed,
    and of it the entries at floor(linspace(0, len, n, endpoint=False)).  int64, decreasing.

    Parameters
    ----------
    T : int
        The number of training timesteps (>= 1).
    n : int
        The number of inference steps (>= 1, at most the distillation grid's length).
    original_inference_steps : int, default 50
        N, the distillation grid's size (1 <= N <= T).
    strength : float, default 1.0
        The fraction of the distillation grid used, in (0, 1].

    Returns
    -------
    numpy.ndarray (n,)
        int64 timesteps, decreasing.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    for name, v in (("T", T), ("n", n), ("original_inference_steps", original_inference_steps)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise (TypeError if not isinstance(v, (int, np.integer)) or isinstance(v, bool) else ValueError)(
                f"lcm_timesteps: {name} = {v!r} must be an integer >= 1")
    if T > 2**31 - 1:
        raise ValueError(f"lcm_timesteps: T = {T} exceeds 2**31 - 1")
    if original_inference_steps > T:
        raise ValueError(f"lcm_timesteps: original_inference_steps = {original_inference_steps} exceeds T = {T}")
    check_finite_scalar("strength", strength, low=0.0, low_open=True, high=1.0)
    if not 0 < strength <= 1:
        raise ValueError(f"lcm_timesteps: strength = {strength!r} must be in (0, 1]")
    origin = (np.arange(1, int(original_inference_steps * strength) + 1) * (T // original_inference_steps) - 1)[::-1]
    if n > len(origin):
        raise ValueError(f"lcm_timesteps: n = {n} exceeds the {len(origin)} distillation timesteps "
                         f"(original_inference_steps x strength)")
    return origin[np.floor(np.linspace(0, len(origin), n, endpoint=False)).astype(np.int64)].astype(np.int64)


@check_args(scalars=("t", "sigma_data", "timestep_scaling"))
def lcm_boundary(t, sigma_data=0.5, timestep_scaling=10.0):
    """(c_skip, c_out) of LCM, MATH.md (16.16): with u = timestep_scaling * t,
    c_skip = sigma_data^2 / (u^2 + sigma_data^2), c_out = u / sqrt(u^2 + sigma_data^2);
    c_skip = 1, c_out = 0 at t = 0 (diffusers: sigma_data = 0.5, timestep_scaling = 10).

    Parameters
    ----------
    t : float or int
        The model time.
    sigma_data : float, default 0.5
        sigma_data (> 0).
    timestep_scaling : float, default 10.0
        The scaling of t (> 0).

    Returns
    -------
    c_skip, c_out : float

    Raises
    ------
    ValueError
        If ``sigma_data`` or ``timestep_scaling`` is not positive.
    """
    if not (sigma_data > 0 and timestep_scaling > 0):
        raise ValueError(f"lcm_boundary: sigma_data = {sigma_data!r} and timestep_scaling = {timestep_scaling!r} "
                         "must be > 0")
    u = float(timestep_scaling) * float(t)
    return sigma_data**2 / (u * u + sigma_data**2), u / math.sqrt(u * u + sigma_data**2)


@check_args(arrays=("x_t", "x0_hat", "noise"),
            scalars=("c_skip", "c_out", "alpha_next", "sigma_next"),
            same_shape=("x_t", "x0_hat", "noise"))
def lcm_step(x_t, x0_hat, c_skip, c_out, alpha_next, sigma_next, noise=None):
    """One consistency step, MATH.md (16.16), (16.17): f = c_skip x_t + c_out x0_hat, then
    x_next = alpha_next f + sigma_next noise (``noise=None`` and sigma_next = 0: x_next = f).
    Returns (x_next, f).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_t : array (N, ...)
        The current state.
    x0_hat : array (N, ...)
        The model's x_0 prediction.
    c_skip, c_out : float
        The boundary coefficients.
    alpha_next, sigma_next : float
        The coefficients of the next point.
    noise : array (N, ...), optional
        Standard normal noise; required unless sigma_next = 0.

    Returns
    -------
    x_next, f : arrays (N, ...)

    Raises
    ------
    ValueError
        If noise is needed and missing or misshaped.
    """
    f = float(c_skip) * x_t + float(c_out) * x0_hat
    if sigma_next == 0 and noise is None:
        return f, f
    if noise is None or tuple(noise.shape) != tuple(x_t.shape):
        raise ValueError(f"lcm_step: sigma_next = {sigma_next} > 0 needs a noise array of x_t's shape "
                         f"{tuple(x_t.shape)}")
    return float(alpha_next) * f + float(sigma_next) * noise, f


def lcm(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None, project=None,
        boundary="lcm", sigma_data=0.5, timestep_scaling=10.0, sigmas=None, final_sigmas_type=None,
        interpolation="log_alpha"):
    """Multistep consistency sampling, MATH.md (16.17).  At grid point i: f_i = c_skip x_i +
    c_out x0_hat (``boundary="lcm"``, :func:`lcm_boundary` at the model time) or f_i = x0_hat
    (``boundary=None``: the model already is a consistency function, e.g. ``prediction_type=
    "sample"``); then x_{i+1} = alpha_{i+1} f_i + sigma_{i+1} z_i, and the last point returns f.
    Noise: one draw per step except the last.  With ``timesteps = lcm_timesteps(...)`` and
    the final alpha_bar = 1 this is diffusers 0.42.1's LCMScheduler (set_alpha_to_one=True).
    c_skip, c_out take the model time (an index on a Schedule, as diffusers).  The loop visits
    every grid point with sigma > 0 (:func:`refdiff.make_grid`; its final point sigma = 0, the
    default on a Schedule, is the data end f reaches by itself).  Hooks (``project``, then
    ``callback(i, t_i, x_{i+1}, x0_hat(t_i))``, the model's x0_hat as in every loop, not f) after
    each step in VP coordinates.

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
    boundary : {"lcm", None}, default "lcm"
        The consistency parameterisation (above).
    sigma_data : float, default 0.5
        Of :func:`lcm_boundary`.
    timestep_scaling : float, default 10.0
        Of :func:`lcm_boundary`.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`) or ``boundary``, or missing noise.
    """
    check_finite_scalar("sigma_data", sigma_data, low=0.0, low_open=True)
    check_finite_scalar("timestep_scaling", timestep_scaling, low=0.0, low_open=True)
    if boundary not in ("lcm", None):
        raise ValueError(f"lcm: unknown boundary {boundary!r}; valid: 'lcm', None")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "lcm", prediction_type=prediction_type, needs="x0")
    pts = [p for p in grid if p.sigma > 0]  # the points with a model call
    for i, p in enumerate(pts):
        _, x0_hat = predict(model, x, p, prediction_type, i)
        c_skip, c_out = lcm_boundary(p.t, sigma_data, timestep_scaling) if boundary == "lcm" else (0.0, 1.0)
        last = i == len(pts) - 1
        z = None if last else draw_noise(noise, x, "lcm")
        x, _ = lcm_step(x, x0_hat, c_skip, c_out, *((1.0, 0.0) if last else pts[i + 1][1:]), z)  # (16.17)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


METHODS = {"lcm": lcm}
