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

from ..backend import array_namespace, bcast, check_finite
from ..forward import q_posterior_mean
from ..parameterization import PREDICTION_TYPES, clip_x0, dynamic_threshold, to_eps_x0
from ..schedules import Schedule, _ContinuousVP, gather, schedule_from_alpha_bars
from ..variance import VARIANCE_TYPES, check_model_output, check_variance_type, reverse_log_variance, split_learned
from .common import model_t

__all__ = ["ddpm_step", "ddpm_log_variance", "process_x0", "respace", "ddpm_loop", "VARIANCE_TYPES"]


# ------------------------------------------------------------------------- shared helpers
def process_x0(x0, *, clip_sample=False, clip_sample_range=1.0, thresholding=False,
               dynamic_thresholding_ratio=0.995, sample_max_value=1.0):
    """The x_0 post-processing of the widely used PyTorch library, MATH.md (8.10):
    dynamic thresholding (``thresholding=True``, MATH.md (4.12)) takes precedence over
    static clipping to [-clip_sample_range, clip_sample_range] (``clip_sample=True``,
    MATH.md (4.11)); with both off x_0 is returned unchanged."""
    if thresholding:
        return dynamic_threshold(x0, dynamic_thresholding_ratio, sample_max_value)
    if clip_sample:
        return clip_x0(x0, clip_sample_range)
    return x0


def _check_prediction_type(prediction_type):
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")


def _check_schedule(schedule, allow_continuous=False):
    ok = (Schedule, _ContinuousVP) if allow_continuous else (Schedule,)
    if not isinstance(schedule, ok):
        what = "a Schedule or a continuous VP schedule" if allow_continuous else "a refdiff Schedule"
        raise TypeError(f"schedule must be {what}, got {type(schedule).__name__}")


def _check_noise(noise, x, who):
    if noise is None:
        raise TypeError(f"{who} needs an explicit standard normal noise array of x_t's shape at this step")
    if tuple(noise.shape) != tuple(x.shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected x_t's shape {tuple(x.shape)}")
    return noise


def _is_int_scalar(t):
    return isinstance(t, (int, np.integer)) and not isinstance(t, bool)


def _check_options(who, options):
    if options:
        raise TypeError(f"{who} got unknown option(s) {sorted(options)}")


def _draw(noise, x, who):
    """One draw of the loop's noise callable, checked."""
    if noise is None:
        raise TypeError(f"method {who!r} is stochastic and needs noise (pass rng= to refdiff.sample)")
    z = noise(x)
    return _check_noise(z, x, who)


def _after_step(x, i, t):
    check_finite(x, "sampler state", f"step {i} (t = {t})")


# ------------------------------------------------------------------------- the step
ddpm_log_variance = reverse_log_variance
"""log Sigma_t of the reverse step, MATH.md (8.3): :func:`refdiff.variance.reverse_log_variance`
(one definition for sampling and the ELBO)."""


def ddpm_step(schedule, model_output, t, x_t, noise=None, *, prediction_type="epsilon",
              variance_type="fixed_small", clip_sample=False, clip_sample_range=1.0,
              thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0):
    """One DDPM ancestral step x_t -> x_{t-1}, MATH.md (8.1)-(8.4).

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
    """
    _check_schedule(schedule)
    _check_prediction_type(prediction_type)
    check_variance_type(variance_type)
    schedule.check_t(t)
    xp = array_namespace(x_t, model_output)
    model_output, v = split_learned(model_output, x_t, variance_type)
    alpha = gather(schedule.sqrt_alpha_bars, t, x_t)
    sigma = gather(schedule.sqrt_one_minus_alpha_bars, t, x_t)
    _, x0_hat = to_eps_x0(model_output, x_t, alpha, sigma, prediction_type)
    x0_hat = process_x0(x0_hat, clip_sample=clip_sample, clip_sample_range=clip_sample_range,
                        thresholding=thresholding, dynamic_thresholding_ratio=dynamic_thresholding_ratio,
                        sample_max_value=sample_max_value)
    mean = q_posterior_mean(schedule, x0_hat, x_t, t)
    if _is_int_scalar(t):
        if int(t) == 0:
            return mean  # final-step rule (8.4): no noise
        std = xp.exp(0.5 * ddpm_log_variance(schedule, t, x_t, variance_type, v))
        return mean + std * _check_noise(noise, x_t, "ddpm_step")
    tt = xp.asarray(t)
    if not bool(xp.any(tt > 0)):
        return mean
    mask = bcast(xp.astype(tt > 0, x_t.dtype), x_t)  # (N,) -> (N,1,...)
    logvar = ddpm_log_variance(schedule, t, x_t, variance_type, v)
    std = xp.where(mask > 0, xp.exp(0.5 * logvar), xp.zeros_like(logvar))
    return mean + std * _check_noise(noise, x_t, "ddpm_step")


# ------------------------------------------------------------------------- grids
def respace(schedule, timesteps):
    """The schedule of the Markov chain that visits only ``timesteps`` (decreasing),
    MATH.md (8.5): ``alpha_bar'_i = alpha_bar[timesteps ascending][i]`` and
    ``beta'_i = 1 - alpha_bar'_i / alpha_bar'_{i-1}`` (with alpha_bar'_{-1} = 1).

    Index i of the result corresponds to the original timestep ``sorted(timesteps)[i]``;
    on the full grid the result equals ``schedule``.  (The "respacing" of
    improved-diffusion and the previous-timestep betas of the PyTorch library's DDPM
    scheduler.)"""
    ts = np.asarray(timesteps)[::-1]
    return schedule_from_alpha_bars(schedule.alpha_bars[ts], name=f"{schedule.name}[respaced {ts.shape[0]}]")


def _continuous_chain(vp, times):
    """A discrete schedule over the decreasing float ``times`` of a continuous VP: index i
    <-> ``times[::-1][i]``; the last time (the end of sampling) is index 0."""
    tt = np.asarray(times, dtype=np.float64)[::-1]
    ab = np.asarray(vp.alpha(tt), dtype=np.float64) ** 2
    return schedule_from_alpha_bars(ab, name="continuous-chain")


def ddpm_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None,
              variance_type="fixed_small", clip_sample=False, clip_sample_range=1.0, thresholding=False,
              dynamic_thresholding_ratio=0.995, sample_max_value=1.0, **options):
    """DDPM ancestral sampling over a decreasing grid, MATH.md (8.1)-(8.5).

    With a :class:`Schedule` and integer ``timesteps`` (n steps) the chain is the
    respaced one, :func:`respace` (on the full grid ``timesteps = T-1, ..., 0`` it is the
    original DDPM).  The model is called with the original timestep.  The last step
    (timestep ``timesteps[-1]`` -> data) adds no noise (8.4).

    With a continuous VP and float times ``t_0 > ... > t_n`` (n steps) the chain visits
    the n + 1 times and returns the state at ``t_n`` (every step adds noise, the last one
    with the small variance of the step to ``t_n``).

    Noise: one draw per step, after the model call of that step, on every step except
    the final step to data: n - 1 draws for a Schedule, n for a continuous VP.
    ``variance_type="learned_range"``/``"learned"``: the model returns prediction and
    variance output concatenated along axis 1 (:mod:`refdiff.variance`).
    """
    _check_options("ddpm", options)
    _check_schedule(schedule, allow_continuous=True)
    if isinstance(schedule, Schedule):
        chain, model_times = respace(schedule, timesteps), [int(t) for t in timesteps]
        idx = list(range(len(model_times) - 1, -1, -1))
    else:
        chain, model_times = _continuous_chain(schedule, timesteps), [float(t) for t in timesteps[:-1]]
        idx = list(range(len(model_times), 0, -1))
    for i, (t, k) in enumerate(zip(model_times, idx)):
        out = model(x, model_t(t, x))
        _check_output(out, x, i, t, variance_type)
        z = _draw(noise, x, "ddpm") if k > 0 else None
        x_new = ddpm_step(chain, out, k, x, z, prediction_type=prediction_type, variance_type=variance_type,
                          clip_sample=clip_sample, clip_sample_range=clip_sample_range, thresholding=thresholding,
                          dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value)
        _after_step(x_new, i, t)
        if callback is not None:
            pred = split_learned(out, x, variance_type)[0]
            a, s = math.sqrt(chain.alpha_bars[k]), math.sqrt(1.0 - chain.alpha_bars[k])
            callback(i, t, x_new, to_eps_x0(pred, x, a, s, prediction_type)[1])
        x = x_new
    return x


def _check_output(out, x, i, t, variance_type):
    check_model_output(out, x, variance_type, where=f"step {i} (t = {t})")


METHODS = {"ddpm": ddpm_loop}
