"""DDIM (Song, Meng & Ermon 2021) and deterministic DDIM inversion, MATH.md chapter 8.

Time convention: 0-based discrete indices (index t is paper step t + 1), ``t_prev = -1``
stands for the data end, alpha_bar = 1 (or ``final_alpha_bar``).  With a continuous VP
schedule, times are floats in (0, 1] with t = 0 data.

The update is written once for a general affine path x_t = alpha_t x_0 + sigma_t eps
(:func:`ddim_update`, MATH.md (8.7)); :func:`ddim_step` reads alpha, sigma from a
discrete schedule.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_finite_scalar, check_int
from ..backend import array_namespace, asarray_like
from ..parameterization import to_eps_x0
from ..schedules import Schedule, gather
from .common import (ZERO, call_model, check_args, check_int_grid, check_noise, check_options, check_prediction_type,
                     check_start, check_timestep_arg, check_x0_defined, draw_noise, end_step, is_int_scalar,
                     make_grid, point_at, predict, vp_grid)
from .ddpm import process_x0

__all__ = ["ddim_update", "ddim_sigma", "ddim_step", "ddim_inversion_step", "ddim_loop", "ddim_invert",
           "library_prev_timesteps"]


def _check_eta(eta):
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating, np.integer)) or not math.isfinite(eta):
        raise ValueError(f"eta = {eta!r} must be a finite number in [0, 1]")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta = {eta!r} is outside [0, 1]")
    return float(eta)


@check_args(coefs=("alpha", "sigma", "alpha_prev", "sigma_prev"), scalars=("eta",))
def ddim_sigma(alpha, sigma, alpha_prev, sigma_prev, eta):
    """The DDIM noise level of the step t -> s (s = prev), MATH.md (8.8):
    ``sigma_eta = eta * (sigma_s / sigma_t) * sqrt(sigma_t^2 - alpha_t^2 sigma_s^2 / alpha_s^2)``.
    On a VP path ``sigma_t^2 - alpha_t^2 sigma_s^2 / alpha_s^2 = 1 - alpha_bar_t / alpha_bar_s``
    and eta = 1 gives the DDPM posterior standard deviation sqrt(beta_tilde).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    alpha, sigma : float or array
        The path's coefficients at the current time t.
    alpha_prev, sigma_prev : float or array
        The coefficients at the target s < t.
    eta : float
        The stochasticity, in [0, 1].

    Returns
    -------
    float or array
        sigma_eta (a float when ``alpha`` and ``alpha_prev`` are floats).
    """
    if all(isinstance(v, (int, float)) for v in (alpha, sigma, alpha_prev, sigma_prev)):
        inner = max(sigma * sigma - (alpha * sigma_prev / alpha_prev) ** 2, 0.0)
        return eta * sigma_prev / sigma * math.sqrt(inner)
    xp = array_namespace(alpha, sigma, alpha_prev, sigma_prev)
    inner = xp.clip(sigma * sigma - (alpha * sigma_prev / alpha_prev) ** 2, 0.0, None)
    return eta * sigma_prev / sigma * xp.sqrt(inner)


@check_args(arrays=("x_t", "eps_hat", "x0_hat", "noise"),
            coefs=("alpha", "sigma", "alpha_prev", "sigma_prev"),
            same_shape=("x_t", "eps_hat", "x0_hat", "noise"))
def ddim_update(x_t, eps_hat, x0_hat, alpha, sigma, alpha_prev, sigma_prev, *, eta=0.0, noise=None):
    """The generalized DDIM update on any affine path, MATH.md (8.6)-(8.8):

    NaN and inf in the arrays propagate: not checked (a per-step function).

    ``x_s = alpha_s x0_hat + sqrt(sigma_s^2 - sigma_eta^2) eps_hat + sigma_eta noise``.

    alpha, sigma (at the current time t) and alpha_prev, sigma_prev (at the target s < t)
    are floats or arrays broadcasting against x_t.  ``noise`` is needed iff sigma_eta > 0
    (eta > 0 and a stochastic step); it is ignored when sigma_eta = 0.

    Parameters
    ----------
    x_t : array (N, ...)
        The current state (unused: the update depends on it through eps_hat and x0_hat).
    eps_hat, x0_hat : array (N, ...)
        The predictions at x_t.
    alpha, sigma : float or array
        The coefficients at t.
    alpha_prev, sigma_prev : float or array
        The coefficients at the target s.
    eta : float, default 0.0
        The stochasticity, in [0, 1].
    noise : array (N, ...), optional
        Standard normal noise; required when sigma_eta > 0.

    Returns
    -------
    array (N, ...)
        x_s.

    Raises
    ------
    ValueError
        If ``eta`` is not a finite number in [0, 1].
    TypeError
        If noise is needed and missing (ValueError if misshaped).
    """
    eta = _check_eta(eta)
    del x_t  # the update depends on x_t only through (eps_hat, x0_hat)
    if eta == 0.0:
        return alpha_prev * x0_hat + sigma_prev * eps_hat
    c = ddim_sigma(alpha, sigma, alpha_prev, sigma_prev, eta)
    if isinstance(c, float):
        if c == 0.0:
            return alpha_prev * x0_hat + sigma_prev * eps_hat
        d = math.sqrt(max(sigma_prev * sigma_prev - c * c, 0.0))
    else:
        xp = array_namespace(c)
        d = xp.sqrt(xp.clip(sigma_prev * sigma_prev - c * c, 0.0, None))
    return alpha_prev * x0_hat + d * eps_hat + c * check_noise(noise, x0_hat, "ddim_update")


def _alpha_sigma_prev(schedule, t_prev, x, final_alpha_bar):
    """alpha, sigma at t_prev, where -1 means alpha_bar = final_alpha_bar."""
    table = np.concatenate([[float(final_alpha_bar)], schedule.alpha_bars])  # index t_prev + 1
    if is_int_scalar(t_prev):
        if not -1 <= int(t_prev) < schedule.T:
            raise ValueError(f"t_prev = {int(t_prev)} is out of range [-1, {schedule.T - 1}]")
        ab = table[int(t_prev) + 1]
        return asarray_like(math.sqrt(ab), x), asarray_like(math.sqrt(1.0 - ab), x)
    xp = array_namespace(t_prev)
    if not xp.isdtype(t_prev.dtype, "integral"):
        raise TypeError(f"t_prev must have an integer dtype, got {t_prev.dtype}")
    idx = t_prev + 1
    if t_prev.size and (int(xp.min(idx)) < 0 or int(xp.max(idx)) > schedule.T):
        raise ValueError(f"t_prev contains values out of range [-1, {schedule.T - 1}]")
    return gather(np.sqrt(table), idx, x), gather(np.sqrt(1.0 - table), idx, x)


def _check_final_alpha_bar(final_alpha_bar):
    check_finite_scalar("final_alpha_bar", final_alpha_bar, low=0.0, low_open=True, high=1.0)


@check_args(arrays=("model_output", "x_t", "noise"), same_shape=("model_output", "x_t", "noise"))
def ddim_step(schedule, model_output, t, t_prev, x_t, *, eta=0.0, noise=None, prediction_type="epsilon",
              clip_sample=False, clip_sample_range=1.0, thresholding=False, dynamic_thresholding_ratio=0.995,
              sample_max_value=1.0, use_clipped_model_output=False, final_alpha_bar=1.0):
    """One DDIM step x_t -> x_{t_prev} on a discrete schedule, MATH.md (8.7)-(8.8).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    ``t`` in [0, T-1] and ``t_prev`` in [-1, t-1] (ints or integer (N,) arrays);
    ``t_prev = -1`` means alpha_bar_prev = ``final_alpha_bar`` (1: the data end; the
    PyTorch library's ``set_alpha_to_one=False`` uses alpha_bar[0]).  eta in [0, 1]:
    0 is deterministic DDIM, 1 on consecutive steps is DDPM with fixed-small variance.
    ``noise`` (x_t's shape) is required when the step's sigma_eta > 0.

    Clipping/thresholding of x0_hat follow MATH.md (8.10); like the PyTorch library, the
    eps_hat used for the direction term stays the model's unless
    ``use_clipped_model_output=True``, which recomputes it from the clipped x0_hat.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule.
    model_output : array (N, ...)
        The model's output at (x_t, t), of ``prediction_type``.
    t : int or integer array (N,)
        The current timestep(s), in [0, T-1].
    t_prev : int or integer array (N,)
        The target timestep(s), in [-1, t-1].
    x_t : array (N, ...)
        The current state.
    eta : float, default 0.0
        The stochasticity, in [0, 1].
    noise : array (N, ...), optional
        Standard normal noise; required when sigma_eta > 0.
    prediction_type : str, default "epsilon"
        What the model predicts.
    clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value
        The x0_hat post-processing of :func:`refdiff.samplers.ddpm.process_x0`.
    use_clipped_model_output : bool, default False
        Recompute eps_hat from the processed x0_hat.
    final_alpha_bar : float, default 1.0
        alpha_bar at t_prev = -1, in (0, 1].

    Returns
    -------
    array (N, ...)
        x_{t_prev}.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule, ``t_prev`` is not integer, or needed noise is missing.
    ValueError
        If a time, ``eta``, ``final_alpha_bar``, ``prediction_type`` or a shape is invalid, or
        t_prev >= t.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_prediction_type(prediction_type)
    eta = _check_eta(eta)
    _check_final_alpha_bar(final_alpha_bar)
    check_timestep_arg("t", t)
    check_timestep_arg("t_prev", t_prev)
    schedule.check_t(t)
    check_bool("use_clipped_model_output", use_clipped_model_output)
    check_x0_defined(schedule, t, prediction_type, "ddim_step")
    xp = array_namespace(x_t)
    if is_int_scalar(t) and is_int_scalar(t_prev):
        if not int(t_prev) < int(t):
            raise ValueError(f"t_prev = {int(t_prev)} must be < t = {int(t)} (DDIM steps towards the data)")
    elif not bool(xp.all(xp.asarray(t_prev) < xp.asarray(t))):
        raise ValueError("t_prev must be < t elementwise (DDIM steps towards the data)")
    alpha = gather(schedule.sqrt_alpha_bars, t, x_t)
    sigma = gather(schedule.sqrt_one_minus_alpha_bars, t, x_t)
    alpha_prev, sigma_prev = _alpha_sigma_prev(schedule, t_prev, x_t, final_alpha_bar)
    eps_hat, x0_hat = to_eps_x0(model_output, x_t, alpha, sigma, prediction_type)
    x0_c = process_x0(x0_hat, clip_sample=clip_sample, clip_sample_range=clip_sample_range, thresholding=thresholding,
                      dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value)
    if use_clipped_model_output:
        eps_hat = (x_t - alpha * x0_c) / sigma
    return ddim_update(x_t, eps_hat, x0_c, alpha, sigma, alpha_prev, sigma_prev, eta=eta, noise=noise)


@check_args(arrays=("model_output", "x_t"), same_shape=("model_output", "x_t"))
def ddim_inversion_step(schedule, model_output, t, t_next, x_t, *, prediction_type="epsilon", final_alpha_bar=1.0):
    """One deterministic DDIM inversion step x_t -> x_{t_next}, t_next > t, MATH.md (8.9):
    ``x_{t_next} = alpha_{t_next} x0_hat + sigma_{t_next} eps_hat``, where (eps_hat, x0_hat)
    come from ``model_output`` with the alpha, sigma of ``t_next`` (the model is evaluated at
    (x_t, t_next): the usual inversion approximation, exact when eps_hat does not depend on
    the time).  ``t = -1`` means x_t is data (alpha_bar = ``final_alpha_bar``).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    With the same eps_hat it is the exact inverse of the eta = 0 :func:`ddim_step` from
    t_next to t.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule.
    model_output : array (N, ...)
        The model's output at (x_t, t_next).
    t : int
        The current timestep, in [-1, t_next - 1].
    t_next : int
        The target timestep, in [0, T-1].
    x_t : array (N, ...)
        The current state.
    prediction_type : str, default "epsilon"
        What the model predicts.
    final_alpha_bar : float, default 1.0
        alpha_bar at t = -1, in (0, 1].

    Returns
    -------
    array (N, ...)
        x_{t_next}.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule.
    ValueError
        If the times, ``final_alpha_bar``, ``prediction_type`` or the shapes are invalid.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_prediction_type(prediction_type)
    _check_final_alpha_bar(final_alpha_bar)
    check_timestep_arg("t", t)
    check_timestep_arg("t_next", t_next)
    schedule.check_t(t_next, "t_next")
    if not (is_int_scalar(t) and -1 <= int(t) < int(t_next)):
        raise ValueError(f"need integers -1 <= t < t_next, got t = {t!r}, t_next = {t_next!r}")
    if tuple(model_output.shape) != tuple(x_t.shape):
        raise ValueError(f"model_output has shape {tuple(model_output.shape)}, expected x_t's shape {tuple(x_t.shape)}")
    a_next = gather(schedule.sqrt_alpha_bars, t_next, x_t)
    s_next = gather(schedule.sqrt_one_minus_alpha_bars, t_next, x_t)
    a, s = _alpha_sigma_prev(schedule, t, x_t, final_alpha_bar)
    # the model output is interpreted at the model's time t_next, then x0 recomputed at x_t
    eps_hat, _ = to_eps_x0(model_output, x_t, a_next, s_next, prediction_type)
    x0_hat = (x_t - s * eps_hat) / a
    return a_next * x0_hat + s_next * eps_hat


# ------------------------------------------------------------------------- loops
def library_prev_timesteps(T, timesteps):
    """The previous-timestep rule of the PyTorch library's DDIM scheduler, MATH.md (8.11):
    ``t_prev = t - T // n`` (n = len(timesteps)), negatives mapped to -1.  It equals the
    next grid point for "leading" spacing, not in general ("trailing", "linspace").

    Parameters
    ----------
    T : int
        The number of training timesteps.
    timesteps : array_like (n,)
        The decreasing integer grid.

    Returns
    -------
    numpy.ndarray (n,)
        int64 previous timesteps (-1: the data end).
    """
    check_int("T", T, min=1)
    ts = check_int_grid(timesteps, T)
    return np.maximum(ts - T // ts.shape[0], -1)


def ddim_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
              project=None, eta=0.0, t_prev_rule="grid", set_alpha_to_one=True, clip_sample=False,
              clip_sample_range=1.0, thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0,
              use_clipped_model_output=False, sigmas=None, final_sigmas_type=None, interpolation="log_alpha",
              **options):
    """DDIM sampling over a grid, MATH.md (8.7)-(8.8), (8.11): step i goes from grid point i
    to grid point i + 1 (:func:`refdiff.make_grid`: a Schedule's timesteps end at the data
    end alpha_bar = 1; continuous times at the last time; ``sigmas=`` any sigma grid).

    ``t_prev_rule="library"`` (Schedule timesteps only): the target of step i is t - T // n
    (diffusers' DDIMScheduler, MATH.md (8.11)), below 0 the data end.  ``set_alpha_to_one=False``
    (the library's option): the data end is replaced by alpha_bar[0], so the result is the
    state at timestep 0.  x0_hat is clipped/thresholded per MATH.md (8.10); eps_hat stays the
    model's unless ``use_clipped_model_output``.  Noise (eta > 0 only): one draw per step
    whose sigma_eta (8.8) is > 0, after that step's model call.  Hooks in VP coordinates
    after each step (:func:`refdiff.samplers.common.end_step`).

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
    eta : float, default 0.0
        The stochasticity, in [0, 1].
    t_prev_rule : {"grid", "library"}, default "grid"
        The target of each step.
    set_alpha_to_one : bool, default True
        False: end at alpha_bar[0] instead of the data end (Schedule only).
    clip_sample : bool, default False
        Clip x0_hat to [-clip_sample_range, clip_sample_range], MATH.md (4.11).
    clip_sample_range : float, default 1.0
        The clipping bound.
    thresholding : bool, default False
        Dynamic thresholding, MATH.md (4.12); takes precedence over clipping.
    dynamic_thresholding_ratio : float, default 0.995
        The per-sample quantile of abs(x0_hat) used as the threshold.
    sample_max_value : float, default 1.0
        The largest threshold.
    use_clipped_model_output : bool, default False
        Recompute eps_hat from the processed x0_hat.
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
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
    check_bool("set_alpha_to_one", set_alpha_to_one)
    check_bool("use_clipped_model_output", use_clipped_model_output)
    check_options("ddim", options)
    eta = _check_eta(eta)
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "ddim", prediction_type=prediction_type, needs="x0")
    targets = list(grid[1:])
    if t_prev_rule == "library":
        if not isinstance(schedule, Schedule) or sigmas is not None:
            raise ValueError("t_prev_rule='library' applies only to a discrete Schedule's integer timesteps")
        prevs = library_prev_timesteps(schedule.T, [p.t for p in grid[:-1]])
        targets = [ZERO if k < 0 else point_at(schedule, int(k)) for k in prevs]
    elif t_prev_rule != "grid":
        raise ValueError(f"unknown t_prev_rule {t_prev_rule!r}; valid: 'grid', 'library'")
    if not set_alpha_to_one and isinstance(schedule, Schedule):
        targets = [point_at(schedule, 0) if q.sigma == 0.0 else q for q in targets]
    proc = dict(clip_sample=clip_sample, clip_sample_range=clip_sample_range, thresholding=thresholding,
                dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value)
    for i, (p, q) in enumerate(zip(grid, targets)):
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        x0_hat = process_x0(x0_hat, **proc)  # (8.10)
        if use_clipped_model_output:
            eps_hat = (x - p.alpha * x0_hat) / p.sigma
        noisy = eta > 0 and ddim_sigma(p.alpha, p.sigma, q.alpha, q.sigma, eta) > 0
        z = draw_noise(noise, x, "ddim") if noisy else None
        x = ddim_update(x, eps_hat, x0_hat, p.alpha, p.sigma, q.alpha, q.sigma, eta=eta if noisy else 0.0, noise=z)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def ddim_invert(model, x0, schedule, timesteps, *, prediction_type="epsilon", set_alpha_to_one=True, callback=None):
    """Deterministic DDIM inversion, MATH.md (8.9): data ``x0`` -> the latent at
    ``timesteps[0]`` by running the sampling grid backwards, -1 -> timesteps[-1] -> ... ->
    timesteps[0], with the model evaluated at (x, t_next) on each step.

    ``timesteps`` is the same decreasing integer grid that :func:`ddim_loop` samples on;
    ``ddim_loop(model, ddim_invert(model, x0, ...), ...)`` returns approximately x0, with
    an error of first order in the step size.  ``callback(i, t_next, x, None)`` after
    each step.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x0 : array (N, ...)
        The data.
    schedule : Schedule
        The discrete schedule.
    timesteps : array_like
        The decreasing integer sampling grid.
    prediction_type : str, default "epsilon"
        What the model predicts.
    set_alpha_to_one : bool, default True
        False: the start alpha_bar is alpha_bar[0] instead of 1.
    callback : callable, optional
        ``callback(i, t_next, x, None)`` after each step.

    Returns
    -------
    array (N, ...)
        The latent at ``timesteps[0]``.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule.
    ValueError
        If ``prediction_type`` or a time is invalid, ``timesteps`` is not a strictly decreasing
        non-empty integer grid (:func:`refdiff.make_grid`), or ``x0`` is not finite (TypeError
        if it is not a float32/float64 array).
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_prediction_type(prediction_type)
    check_bool("set_alpha_to_one", set_alpha_to_one)
    grid = make_grid(schedule, timesteps)  # strictly decreasing integers in [0, T-1], non-empty
    check_start(model, x0, grid, "ddim_invert", name="x0")
    ts = [p.t for p in grid if p.t is not None][::-1]  # increasing
    final = 1.0 if set_alpha_to_one else float(schedule.alpha_bars[0])
    x, t = x0, -1
    for i, t_next in enumerate(ts):
        out = call_model(model, x, t_next, step=i)
        x = ddim_inversion_step(schedule, out, t, t_next, x, prediction_type=prediction_type, final_alpha_bar=final)
        x = end_step(i, t_next, x, None, callback)
        t = t_next
    return x


METHODS = {"ddim": ddim_loop}
