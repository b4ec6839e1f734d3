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

from ..parameterization import to_eps_x0
from ..schedules import InterpolatedVP, Schedule
from .common import call_model
from .ddpm import _after_step, _check_noise, _check_options, _check_schedule, _draw

__all__ = ["to_d", "euler_step", "ancestral_sigmas", "euler_ancestral_step", "heun_step", "dpm2_step",
           "edm_gamma", "edm_churn", "lms_coefficients", "lms_step", "sigma_to_time", "sigma_grid",
           "euler_loop", "euler_ancestral_loop", "heun_loop", "edm_loop", "dpm2_loop", "lms_loop"]


# ------------------------------------------------------------------------- step functions
def to_d(x, sigma, x0_hat):
    """The probability-flow ODE slope in sigma space, dx/dsigma = (x - x0_hat) / sigma,
    MATH.md (9.2).  It equals the model's eps_hat."""
    return (x - x0_hat) / sigma


def euler_step(x, sigma, sigma_next, x0_hat):
    """Euler step of (9.2) from sigma to sigma_next, MATH.md (9.3):
    ``x + (sigma_next - sigma) (x - x0_hat) / sigma``; equals the eta = 0 DDIM step."""
    return x + (sigma_next - sigma) * to_d(x, sigma, x0_hat)


def ancestral_sigmas(sigma, sigma_next, eta=1.0):
    """(sigma_down, sigma_up) of an ancestral step, MATH.md (9.4):
    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.  eta = 1 gives the Brownian-bridge
    (DDPM posterior) split, sigma_down = sigma_next^2 / sigma."""
    if not eta >= 0:
        raise ValueError(f"eta = {eta!r} must be >= 0")
    if sigma_next == 0 or eta == 0:
        return float(sigma_next), 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


def euler_ancestral_step(x, sigma, sigma_next, x0_hat, noise=None, *, eta=1.0, s_noise=1.0):
    """Euler ancestral step, MATH.md (9.4): a deterministic Euler step to sigma_down, then
    fresh noise of standard deviation ``s_noise * sigma_up``.  ``noise`` (x's shape) is
    required iff sigma_up > 0."""
    down, up = ancestral_sigmas(sigma, sigma_next, eta)
    x = euler_step(x, sigma, down, x0_hat)
    if up > 0:
        x = x + (s_noise * up) * _check_noise(noise, x, "euler_ancestral_step")
    return x


def heun_step(denoiser, x, sigma, sigma_next, x0_hat=None):
    """Heun's (trapezoidal predictor-corrector) step of (9.2), MATH.md (9.5); an Euler step
    when sigma_next = 0 (no evaluation at sigma = 0).  ``x0_hat`` = D(x; sigma) if already
    known.  Returns (x_next, x0_hat)."""
    if x0_hat is None:
        x0_hat = denoiser(x, sigma)
    d = to_d(x, sigma, x0_hat)
    x_2 = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_2, x0_hat
    d_2 = to_d(x_2, sigma_next, denoiser(x_2, sigma_next))
    return x + (sigma_next - sigma) * 0.5 * (d + d_2), x0_hat


def dpm2_step(denoiser, x, sigma, sigma_next, x0_hat=None):
    """DPM-2 (k-diffusion): a midpoint step of (9.2) with the midpoint taken in log sigma,
    sigma_mid = sqrt(sigma sigma_next), MATH.md (9.6); Euler when sigma_next = 0.
    Returns (x_next, x0_hat)."""
    if x0_hat is None:
        x0_hat = denoiser(x, sigma)
    d = to_d(x, sigma, x0_hat)
    if sigma_next == 0:
        return x + (sigma_next - sigma) * d, x0_hat
    sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_next)))
    x_2 = x + (sigma_mid - sigma) * d
    d_2 = to_d(x_2, sigma_mid, denoiser(x_2, sigma_mid))
    return x + (sigma_next - sigma) * d_2, x0_hat


def edm_gamma(sigma, n, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf")):
    """EDM's churn factor, MATH.md (9.7): ``min(S_churn / n, sqrt 2 - 1)`` when
    S_tmin <= sigma <= S_tmax, else 0 (n = number of steps)."""
    if not s_churn >= 0:
        raise ValueError(f"s_churn = {s_churn!r} must be >= 0")
    return min(s_churn / n, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0


def edm_churn(x, sigma, gamma, noise=None, *, s_noise=1.0):
    """Raise the noise level from sigma to sigma_hat = (1 + gamma) sigma by adding fresh
    noise of variance sigma_hat^2 - sigma^2 (times s_noise^2), MATH.md (9.7).
    Returns (x_hat, sigma_hat); with gamma = 0 nothing is drawn."""
    if not gamma >= 0:
        raise ValueError(f"gamma = {gamma!r} must be >= 0")
    if gamma == 0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    z = _check_noise(noise, x, "edm_churn")
    return x + (s_noise * math.sqrt(sigma_hat**2 - sigma**2)) * z, sigma_hat


def lms_coefficients(sigmas, i, order):
    """Exact linear multistep coefficients, MATH.md (9.8):
    ``c_j = int_{sigma_i}^{sigma_{i+1}} prod_{m != j} (s - sigma_{i-m}) / (sigma_{i-j} - sigma_{i-m}) ds``
    for j = 0..k-1 (k = min(order, i + 1)), the integrals of the Lagrange basis through
    the last k noise levels, integrated analytically as polynomials (host float64)."""
    sig = np.asarray(sigmas, dtype=np.float64)
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


def lms_step(x, ds, coeffs):
    """``x + sum_j c_j d_{i-j}``, MATH.md (9.8); ``ds`` newest first (d_i, d_{i-1}, ...)."""
    for c, d in zip(coeffs, ds):
        x = x + c * d
    return x


# ------------------------------------------------------------------------- grids and time
def sigma_to_time(schedule, sigma, interpolation="log_alpha"):
    """The model time at noise level ``sigma`` (host float > 0), MATH.md (9.9).

    Schedule, ``"log_alpha"`` (default): the continuous index tau of the DPM-Solver
    interpolation (MATH.md (2.15)) with alpha_tau^2 = 1 / (1 + sigma^2), so that
    ``refdiff.alpha_sigma(schedule, tau)`` gives back sigma exactly (to rounding).
    Schedule, ``"log_sigma"``: k-diffusion's rule, tau linear in log sigma between the
    schedule's sigmas (then a model using (2.15) sees a slightly different sigma).
    Continuous VP: t with lambda_t = -log sigma."""
    lam = np.array([-math.log(sigma)])
    if isinstance(schedule, Schedule):
        if interpolation == "log_alpha":
            tc = float(InterpolatedVP(schedule).t_from_lambda(lam)[0])
            return tc * schedule.T - 1.0
        if interpolation == "log_sigma":
            return float(np.interp(math.log(sigma), np.log(schedule.sigmas), np.arange(schedule.T, dtype=np.float64)))
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: 'log_alpha', 'log_sigma'")
    return float(schedule.t_from_lambda(lam)[0])


def _sigma_range(schedule):
    if isinstance(schedule, Schedule):
        return float(schedule.sigmas[0]), float(schedule.sigmas[-1])
    ends = np.array([schedule.t_min, schedule.t_max])
    s = schedule.sigma(ends) / schedule.alpha(ends)
    return float(s[0]), float(s[1])


def sigma_grid(schedule, timesteps, sigmas=None, interpolation="log_alpha"):
    """(sigmas, times) for a sigma-space loop, MATH.md (9.1), (9.9).

    Default: Schedule -> the schedule's sigmas at ``timesteps`` plus a final 0 (times the
    integer timesteps); continuous VP -> sigma_t / alpha_t at the float times (no 0
    appended; the loop returns the state at the last time).  ``sigmas``: any decreasing
    grid (e.g. ``refdiff.karras_sigmas(..., append_zero=True)``) within the schedule's
    range, times from :func:`sigma_to_time`.  Returns host lists; the time of sigma = 0
    is None."""
    _check_schedule(schedule, allow_continuous=True)
    if sigmas is None:
        if isinstance(schedule, Schedule):
            ts = [int(t) for t in timesteps]
            sig = [float(schedule.sigmas[t]) for t in ts] + [0.0]
            times = ts + [None]
        else:
            tt = np.asarray(timesteps, dtype=np.float64)
            sig = [float(v) for v in schedule.sigma(tt) / schedule.alpha(tt)]
            times = [float(t) for t in tt]
    else:
        sig = [float(s) for s in np.asarray(sigmas, dtype=np.float64).reshape(-1)]
        if len(sig) < 2:
            raise ValueError(f"sigmas must hold at least 2 noise levels (1 step), got {len(sig)}")
        if not all(math.isfinite(s) and s >= 0 for s in sig):
            raise ValueError(f"sigmas must be finite and >= 0, got {sig}")
        if any(b >= a for a, b in zip(sig, sig[1:])):
            raise ValueError(f"sigmas must be strictly decreasing, got {sig}")
        lo, hi = _sigma_range(schedule)
        pos = [s for s in sig if s > 0]
        if pos and (max(pos) > hi * (1 + 1e-9) or min(pos) < lo * (1 - 1e-9)):
            raise ValueError(f"sigmas {min(pos):.6g}..{max(pos):.6g} are out of the schedule's range [{lo:.6g}, {hi:.6g}]")
        times = [sigma_to_time(schedule, s, interpolation) if s > 0 else None for s in sig]
    if not all(math.isfinite(s) for s in sig):
        raise ValueError("the sigma grid contains inf (zero terminal SNR): sigma-space samplers need alpha_bar > 0")
    return sig, times


class _Denoiser:
    """D(x; sigma) in sigma coordinates from a VP model: x_vp = x / sqrt(1 + sigma^2).
    Grid sigmas use the grid's times; other sigmas (churn, midpoints) sigma_to_time."""

    def __init__(self, model, schedule, prediction_type, sig, times, interpolation):
        self.model, self.schedule, self.pt, self.interp = model, schedule, prediction_type, interpolation
        self.lookup = {s: t for s, t in zip(sig, times) if t is not None}
        self.step = 0

    def time(self, sigma):
        t = self.lookup.get(sigma)
        return sigma_to_time(self.schedule, sigma, self.interp) if t is None else t

    def __call__(self, x, sigma):
        alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
        x_vp = x * alpha
        out = call_model(self.model, x_vp, self.time(sigma), step=self.step)
        return to_eps_x0(out, x_vp, alpha, sigma * alpha, self.pt)[1]


def _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale):
    sig, times = sigma_grid(schedule, timesteps, sigmas, interpolation)
    if init_scale == "vp":
        x = x * math.sqrt(1.0 + sig[0] ** 2)
    elif init_scale == "sigma_max":
        x = x * sig[0]
    else:
        raise ValueError(f"unknown init_scale {init_scale!r}; valid: 'vp', 'sigma_max'")
    return x, sig, times, _Denoiser(model, schedule, prediction_type, sig, times, interpolation)


def _finish(x, sig):
    return x / math.sqrt(1.0 + sig[-1] ** 2)  # VP coordinates (x itself when sigma = 0)


def _report(callback, i, t, x, sig_next, x0_hat):
    _after_step(x, i, t)
    if callback is not None:
        callback(i, t, x / math.sqrt(1.0 + sig_next**2), x0_hat)


_GRID_DOC = """
    Grid: :func:`sigma_grid` (``sigmas=`` overrides ``timesteps``); model times from
    :func:`sigma_to_time` (``interpolation``).  The start state ``x`` is in VP coordinates
    and is scaled by sqrt(1 + sigma_0^2) (``init_scale="vp"``, the exact conversion and
    the PyTorch library's ``init_noise_sigma``) or by sigma_0 (``"sigma_max"``,
    k-diffusion's convention for x ~ N(0, I)); MATH.md (9.10).  Returns x_0 (VP
    coordinates of the last grid point if it is not 0).  callback(i, t, x, x0_hat) after
    each step with x in VP coordinates."""


def euler_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, sigmas=None,
               interpolation="log_alpha", init_scale="vp", **options):
    """Euler sampling of the sigma-space ODE (9.2)-(9.3); deterministic, no noise."""
    _check_options("euler", options)
    x, sig, times, D = _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale)
    for i in range(len(sig) - 1):
        D.step = i
        x0_hat = D(x, sig[i])
        x = euler_step(x, sig[i], sig[i + 1], x0_hat)
        _report(callback, i, times[i], x, sig[i + 1], x0_hat)
    return _finish(x, sig)


def euler_ancestral_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None,
                         eta=1.0, s_noise=1.0, sigmas=None, interpolation="log_alpha", init_scale="vp", **options):
    """Euler ancestral sampling, MATH.md (9.4).  Noise: one draw per step with
    sigma_up > 0 (every step whose target sigma is > 0 when eta > 0), after that step's
    model call."""
    _check_options("euler_ancestral", options)
    if not eta >= 0:
        raise ValueError(f"eta = {eta!r} must be >= 0")
    x, sig, times, D = _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale)
    for i in range(len(sig) - 1):
        D.step = i
        x0_hat = D(x, sig[i])
        z = _draw(noise, x, "euler_ancestral") if ancestral_sigmas(sig[i], sig[i + 1], eta)[1] > 0 else None
        x = euler_ancestral_step(x, sig[i], sig[i + 1], x0_hat, z, eta=eta, s_noise=s_noise)
        _report(callback, i, times[i], x, sig[i + 1], x0_hat)
    return _finish(x, sig)


def heun_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, sigmas=None,
              interpolation="log_alpha", init_scale="vp", **options):
    """Heun sampling, MATH.md (9.5): 2 model calls per step, 1 on a final step to sigma = 0;
    deterministic."""
    _check_options("heun", options)
    x, sig, times, D = _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale)
    for i in range(len(sig) - 1):
        D.step = i
        x, x0_hat = heun_step(D, x, sig[i], sig[i + 1])
        _report(callback, i, times[i], x, sig[i + 1], x0_hat)
    return _finish(x, sig)


def edm_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, s_churn=0.0,
             s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, sigmas=None, interpolation="log_alpha", init_scale="vp",
             **options):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), MATH.md (9.7), (9.5):
    churn sigma -> sigma_hat = (1 + gamma) sigma with fresh noise, then a Heun step from
    sigma_hat to the next sigma.  Noise: one draw per step with gamma > 0, before that
    step's model calls.  s_churn = 0 is :func:`heun_loop`.  sigma_hat may exceed the
    schedule's largest sigma; its model time is then extrapolated (MATH.md (2.15))."""
    _check_options("edm", options)
    x, sig, times, D = _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale)
    n = len(sig) - 1
    for i in range(n):
        D.step = i
        gamma = edm_gamma(sig[i], n, s_churn, s_tmin, s_tmax)
        z = _draw(noise, x, "edm") if gamma > 0 else None
        x_hat, sigma_hat = edm_churn(x, sig[i], gamma, z, s_noise=s_noise)
        x, x0_hat = heun_step(D, x_hat, sigma_hat, sig[i + 1])
        _report(callback, i, times[i], x, sig[i + 1], x0_hat)
    return _finish(x, sig)


def dpm2_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, sigmas=None,
              interpolation="log_alpha", init_scale="vp", **options):
    """DPM-2 sampling, MATH.md (9.6); deterministic, 2 model calls per step (1 to sigma = 0)."""
    _check_options("dpm_2", options)
    x, sig, times, D = _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale)
    for i in range(len(sig) - 1):
        D.step = i
        x, x0_hat = dpm2_step(D, x, sig[i], sig[i + 1])
        _report(callback, i, times[i], x, sig[i + 1], x0_hat)
    return _finish(x, sig)


def lms_loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None, order=4,
             sigmas=None, interpolation="log_alpha", init_scale="vp", **options):
    """Linear multistep (Adams-Bashforth in sigma) of order ``order``, MATH.md (9.8): one
    model call per step, the first steps at lower order (min(order, i + 1)); deterministic."""
    _check_options("lms", options)
    x, sig, times, D = _setup(model, x, schedule, timesteps, prediction_type, sigmas, interpolation, init_scale)
    ds = []
    for i in range(len(sig) - 1):
        D.step = i
        x0_hat = D(x, sig[i])
        ds = [to_d(x, sig[i], x0_hat)] + ds[: max(int(order) - 1, 0)]
        x = lms_step(x, ds, lms_coefficients(sig, i, order))
        _report(callback, i, times[i], x, sig[i + 1], x0_hat)
    return _finish(x, sig)


for _f in (euler_loop, euler_ancestral_loop, heun_loop, edm_loop, dpm2_loop, lms_loop):
    _f.__doc__ += _GRID_DOC

METHODS = {"euler": euler_loop, "euler_ancestral": euler_ancestral_loop, "heun": heun_loop, "edm": edm_loop,
           "dpm_2": dpm2_loop, "lms": lms_loop}
