"""DDPM ancestral sampling (Ho et al. 2020; Nichol & Dhariwal 2021), MATH.md chapter 8.

Time convention: 0-based discrete indices, index t is paper step t + 1; ``t = 0`` is the
last denoising step, the one that returns (an estimate of) the data x_0.  With a
continuous VP schedule, t in (0, 1] with t = 0 data.

One step draws x_{t-1} ~ p(x_{t-1} | x_t) = N(mu_theta(x_t, t), Sigma_t): the posterior
q(x_{t-1} | x_t, x_0) with x_0 replaced by the model's prediction, MATH.md (8.1)-(8.2),
and one of three variances, MATH.md (8.3).  No noise is added at t = 0, MATH.md (8.4).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_finite_scalar
from ..backend import array_namespace, bcast, check_finite
from ..forward import q_posterior_mean
from ..parameterization import clip_x0, dynamic_threshold, to_eps_x0
from ..schedules import Schedule, gather, schedule_from_alpha_bars
from ..variance import (VARIANCE_TYPES, check_model_output, check_variance_type, model_output_shape,
                        reverse_log_variance, split_learned)
from .common import (check_args, check_noise, check_options, check_prediction_type, check_start, check_timestep_arg,
                     check_x0_defined, draw_noise, end_step, is_int_scalar, make_grid, model_t, vp_grid)

__all__ = ["ddpm_step", "ddpm_log_variance", "process_x0", "respace", "ddpm_loop", "VARIANCE_TYPES"]


# ------------------------------------------------------------------------- shared helpers
@check_args(arrays=("x0",))
def process_x0(x0, *, clip_sample=False, clip_sample_range=1.0, thresholding=False,
               dynamic_thresholding_ratio=0.995, sample_max_value=1.0):
    """The x_0 post-processing of the widely used PyTorch library, MATH.md (8.10):
    dynamic thresholding (``thresholding=True``, MATH.md (4.12)) takes precedence over
    static clipping to [-clip_sample_range, clip_sample_range] (``clip_sample=True``,
    MATH.md (4.11)); with both off x_0 is returned unchanged.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x0 : array (N, ...)
        The x_0 prediction.
    clip_sample : bool, default False
        Clip to [-clip_sample_range, clip_sample_range].
    clip_sample_range : float, default 1.0
        The clipping bound.
    thresholding : bool, default False
        Dynamic thresholding (precedes clipping).
    dynamic_thresholding_ratio : float, default 0.995
        The per-sample quantile of abs(x0) used as the threshold.
    sample_max_value : float, default 1.0
        The largest threshold.

    Returns
    -------
    array (N, ...)
        The processed x_0 (``x0`` itself with both off).

    Raises
    ------
    TypeError, ValueError
        If an option is not a bool, or a bound is not a finite number > 0 (the ratio in
        (0, 1]).
    """
    check_bool("clip_sample", clip_sample)
    check_bool("thresholding", thresholding)
    check_finite_scalar("clip_sample_range", clip_sample_range, low=0.0, low_open=True)
    check_finite_scalar("dynamic_thresholding_ratio", dynamic_thresholding_ratio, low=0.0, low_open=True, high=1.0)
    check_finite_scalar("sample_max_value", sample_max_value, low=0.0, low_open=True)
    if thresholding:
        return dynamic_threshold(x0, dynamic_thresholding_ratio, sample_max_value)
    if clip_sample:
        return clip_x0(x0, clip_sample_range)
    return x0


# ------------------------------------------------------------------------- the step
ddpm_log_variance = reverse_log_variance
"""log Sigma_t of the reverse step, MATH.md (8.3): :func:`refdiff.variance.reverse_log_variance`
(one definition for sampling and the ELBO)."""


@check_args(arrays=("model_output", "x_t", "noise"), same_shape=("x_t", "noise"))
def ddpm_step(schedule, model_output, t, x_t, noise=None, *, prediction_type="epsilon",
              variance_type="fixed_small", clip_sample=False, clip_sample_range=1.0,
              thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0):
    """One DDPM ancestral step x_t -> x_{t-1}, MATH.md (8.1)-(8.4).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    ``x_{t-1} = coef1_t x0_hat + coef2_t x_t + [t > 0] exp(log Sigma_t / 2) noise``, where
    x0_hat is the model's prediction of x_0 (optionally clipped or thresholded,
    MATH.md (8.10)) and Sigma_t is given by ``variance_type`` (see
    :func:`ddpm_log_variance`).

    schedule : Schedule; ``t`` an integer in [0, T-1] or an integer array of shape (N,).
    model_output : the model's output at (x_t, t), of ``prediction_type``.  For
        ``variance_type="learned_range"`` or ``"learned"`` it has twice x_t's channels along
        axis 1 (the contract of :mod:`refdiff.variance`): the prediction, then v in [-1, 1]
        or the log variance.
    noise : standard normal array of x_t's shape; required unless every t is 0 (the
        final-step rule: no noise at t = 0, where it may be None and is ignored).

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule.
    model_output : array
        The model's output at (x_t, t), as above.
    t : int or integer array (N,)
        Timestep(s) in [0, T-1].
    x_t : array (N, ...)
        The current state.
    noise : array (N, ...), optional
        Standard normal noise, as above.
    prediction_type : str, default "epsilon"
        What the model predicts.
    variance_type : str, default "fixed_small"
        One of refdiff.variance's VARIANCE_TYPES.
    clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value
        The x0_hat post-processing of :func:`process_x0`.

    Returns
    -------
    array (N, ...)
        x_{t-1}.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule, or noise is needed and missing.
    ValueError
        If ``prediction_type``, ``variance_type``, ``t`` or a shape is invalid.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_prediction_type(prediction_type)
    check_variance_type(variance_type)
    check_timestep_arg("t", t)
    schedule.check_t(t)
    want = model_output_shape(tuple(x_t.shape), variance_type)
    if tuple(model_output.shape) != want:
        raise ValueError(f"model_output has shape {tuple(model_output.shape)}; variance_type={variance_type!r} needs "
                         f"{want} (from x_t's shape {tuple(x_t.shape)})")
    check_x0_defined(schedule, t, prediction_type, "ddpm_step")
    xp = array_namespace(x_t, model_output)
    model_output, v = split_learned(model_output, x_t, variance_type)
    alpha = gather(schedule.sqrt_alpha_bars, t, x_t)
    sigma = gather(schedule.sqrt_one_minus_alpha_bars, t, x_t)
    _, x0_hat = to_eps_x0(model_output, x_t, alpha, sigma, prediction_type)
    x0_hat = process_x0(x0_hat, clip_sample=clip_sample, clip_sample_range=clip_sample_range,
                        thresholding=thresholding, dynamic_thresholding_ratio=dynamic_thresholding_ratio,
                        sample_max_value=sample_max_value)
    mean = q_posterior_mean(schedule, x0_hat, x_t, t)
    if is_int_scalar(t):
        if int(t) == 0:
            return mean  # final-step rule (8.4): no noise
        std = xp.exp(0.5 * ddpm_log_variance(schedule, t, x_t, variance_type, v))
        return mean + std * check_noise(noise, x_t, "ddpm_step")
    tt = xp.asarray(t)
    if not bool(xp.any(tt > 0)):
        return mean
    mask = bcast(xp.astype(tt > 0, x_t.dtype), x_t)  # (N,) -> (N,1,...)
    logvar = ddpm_log_variance(schedule, t, x_t, variance_type, v)
    std = xp.where(mask > 0, xp.exp(0.5 * logvar), xp.zeros_like(logvar))
    return mean + std * check_noise(noise, x_t, "ddpm_step")


# ------------------------------------------------------------------------- grids
def respace(schedule, timesteps):
    """The schedule of the Markov chain that visits only ``timesteps`` (decreasing),
    MATH.md (8.5): ``alpha_bar'_i = alpha_bar[timesteps ascending][i]`` and
    ``beta'_i = 1 - alpha_bar'_i / alpha_bar'_{i-1}`` (with alpha_bar'_{-1} = 1).

    Index i of the result corresponds to the original timestep ``sorted(timesteps)[i]``;
    on the full grid the result equals ``schedule``.  (The "respacing" of
    improved-diffusion and the previous-timestep betas of the PyTorch library's DDPM
    scheduler.)

    Parameters
    ----------
    schedule : Schedule
        The original schedule.
    timesteps : array_like (n,)
        The visited timesteps, decreasing.

    Returns
    -------
    Schedule
        The respaced schedule of n steps.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule or ``timesteps`` are not integers.
    ValueError
        If ``timesteps`` is empty, out of [0, T-1] or not strictly decreasing
        (:func:`refdiff.make_grid`).
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    grid = make_grid(schedule, timesteps)  # strictly decreasing integers in [0, T-1], non-empty
    ts = np.array([p.t for p in grid if p.t is not None], dtype=np.int64)[::-1]
    return schedule_from_alpha_bars(schedule.alpha_bars[ts], name=f"{schedule.name}[respaced {ts.shape[0]}]")


def ddpm_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
              project=None, variance_type="fixed_small", clip_sample=False, clip_sample_range=1.0, thresholding=False,
              dynamic_thresholding_ratio=0.995, sample_max_value=1.0, final_step_noise=False, sigmas=None,
              final_sigmas_type=None, interpolation="log_alpha", **options):
    """DDPM ancestral sampling over a grid, MATH.md (8.1)-(8.5): the Markov chain that visits
    only the grid's points (:func:`respace`; on the full grid T-1, ..., 0 the original DDPM),
    each step the posterior mean of (8.1)-(8.2) with the variance of ``variance_type`` (8.3).

    Grid (:func:`refdiff.make_grid`): a Schedule's integer timesteps end at the data end
    alpha_bar = 1, whose step adds no noise (8.4); continuous times end at the last time (every
    step adds noise); ``sigmas=`` any sigma grid.  The model is called with each point's time.
    ``final_step_noise=True``: diffusers 0.42.1 DDPMScheduler's rule "noise iff t > 0", so on a
    grid whose last timestep is > 0 ("trailing") the final step to data also adds noise, with
    variance max(v, 1e-20) (v = 0 fixed_small, 1 - alpha_bar_t fixed_large), MATH.md (8.12).
    Noise: one draw per noisy step, after its model call.  ``variance_type="learned_range"``:
    the model returns prediction and v concatenated along axis 1 (see :func:`ddpm_step`).
    Hooks in VP coordinates after each step (:func:`refdiff.samplers.common.end_step`).

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
    variance_type : str, default "fixed_small"
        One of refdiff.variance's VARIANCE_TYPES.
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
    final_step_noise : bool, default False
        diffusers' final-step noise rule (above); fixed_small/fixed_large only.
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
    check_bool("final_step_noise", final_step_noise)
    check_options("ddpm", options)
    if final_step_noise and variance_type not in ("fixed_small", "fixed_large"):
        raise ValueError(f"final_step_noise=True is defined for variance_type 'fixed_small' or 'fixed_large', "
                         f"got {variance_type!r}")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "ddpm", prediction_type=prediction_type, needs="x0")
    pts = grid[:-1] if grid[-1].sigma == 0.0 else grid  # the chain's states; the data end is implicit
    chain = schedule_from_alpha_bars([p.alpha**2 for p in reversed(pts)], name="ddpm-chain")  # (8.5)
    proc = dict(clip_sample=clip_sample, clip_sample_range=clip_sample_range, thresholding=thresholding,
                dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value)
    for i in range(len(grid) - 1):
        p, k = grid[i], len(pts) - 1 - i  # k: p's index in the chain
        out = model(x, model_t(p.t, x))
        _check_output(out, x, i, p.t, variance_type)
        z = draw_noise(noise, x, "ddpm") if k > 0 else None
        x_new = ddpm_step(chain, out, k, x, z, prediction_type=prediction_type, variance_type=variance_type, **proc)
        if k == 0 and final_step_noise and p.t is not None and p.t > 0:  # the library's final-step noise (8.12)
            v = 0.0 if variance_type == "fixed_small" else 1.0 - p.alpha**2
            x_new = x_new + math.sqrt(max(v, 1e-20)) * draw_noise(noise, x, "ddpm")
        pred = split_learned(out, x, variance_type)[0]  # the prediction part (learned types: first C channels)
        a, sg = float(chain.sqrt_alpha_bars[k]), float(chain.sqrt_one_minus_alpha_bars[k])  # p's, as the step
        x0_hat = process_x0(to_eps_x0(pred, x, a, sg, prediction_type)[1], **proc)
        x = end_step(i, p.t, x_new, x0_hat, callback, project)
    return x


def _check_output(out, x, i, t, variance_type):
    check_model_output(out, x, variance_type, where=f"step {i} (t = {t})")


METHODS = {"ddpm": ddpm_loop}
