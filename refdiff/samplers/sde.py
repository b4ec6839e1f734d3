"""Score-SDE samplers (Song et al. 2021) on VP schedules, MATH.md chapter 11.

Continuous time t in (0, 1], t = 0 data, t = 1 noise.  The forward VP SDE is
dx = f(t) x dt + g(t) dw with f = d log alpha / dt and g^2 = beta(t) = -2 f (MATH.md (2.14));
the model gives the score through s = -eps_hat / sigma_t, MATH.md (4.5).

* ``euler_maruyama``: Euler-Maruyama on the reverse SDE, MATH.md (11.1)-(11.2);
* ``pc``: predictor-corrector, the Euler-Maruyama predictor and the Langevin corrector
  with its signal-to-noise step size, MATH.md (11.3)-(11.4);
* ``pf_ode_rk4``: the probability-flow ODE, MATH.md (11.5), with classical fixed-step
  Runge-Kutta 4, MATH.md (11.6).

A discrete :class:`~refdiff.Schedule` is handled through :class:`~refdiff.InterpolatedVP`
(index k at t = (k + 1) / T); after its last grid index a final Tweedie step returns the
model's x0_hat (sigma = 0), as DDIM's t_prev = -1.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_finite_scalar, check_int
from ..backend import array_namespace, bcast
from ..schedules import InterpolatedVP, Schedule
from .common import check_args, check_start, draw_noise, end_step, point_at, predict, vp_grid

__all__ = [
    "euler_maruyama_step",
    "langevin_step_size",
    "langevin_corrector_step",
    "pf_ode_drift",
    "rk4_step",
    "euler_maruyama",
    "pc",
    "pf_ode_rk4",
]


# ----------------------------------------------------------------------------- steps
@check_args(arrays=("x", "score", "noise"), scalars=("f", "g2", "dt"), same_shape=("x", "score", "noise"))
def euler_maruyama_step(x, score, f, g2, dt, noise=None):
    """One Euler-Maruyama step of the reverse VP SDE from t to t - dt (dt > 0), MATH.md (11.2):
    x_{t-dt} = x_t - (f x_t - g^2 score) dt + sqrt(g^2 dt) z.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    ``f``, ``g2`` are f(t), g(t)^2 at the start of the step (floats); ``noise`` is z (shape of
    x) or None for the mean of the step only.

    Parameters
    ----------
    x : array (N, ...)
        The state at t.
    score : array (N, ...)
        The score at (x, t).
    f, g2 : float
        f(t) and g(t)^2.
    dt : float
        The step size (> 0).
    noise : array (N, ...), optional
        z; None for the mean of the step.

    Returns
    -------
    array (N, ...)
        The state at t - dt.

    Raises
    ------
    ValueError
        If ``dt`` is not positive.
    """
    f, g2, dt = float(f), float(g2), float(dt)
    if not dt > 0:
        raise ValueError(f"dt = {dt!r} must be > 0 (a reverse-time step)")
    mean = x - (f * x - g2 * score) * dt
    return mean if noise is None else mean + math.sqrt(g2 * dt) * noise


def _norms(a):
    xp = array_namespace(a)
    return xp.sqrt(xp.sum(xp.reshape(a * a, (a.shape[0], -1)), axis=1))  # (N, ...) -> (N,)


@check_args(arrays=("score", "noise"), scalars=("snr", "alpha_i"), same_shape=("score", "noise"))
def langevin_step_size(score, noise, snr, alpha_i=1.0, norm="sample"):
    """The Langevin corrector's step size of Song et al. (2021, Alg. 5), MATH.md (11.4):
    epsilon = 2 alpha_i (snr ||z|| / ||score||)^2.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    ``norm="sample"`` (the paper): norms per sample, a (N,) array; ``norm="batch"`` (the code
    release): the batch means of the per-sample norms, one scalar for the whole batch.
    ``alpha_i`` is the release's 1 - beta_i factor (default 1).

    Parameters
    ----------
    score : array (N, ...)
        The score at the state.
    noise : array (N, ...)
        The step's standard normal z.
    snr : float
        The signal-to-noise ratio (finite, > 0).
    alpha_i : float, default 1.0
        The release's factor.
    norm : {"sample", "batch"}, default "sample"
        Per-sample or batch-mean norms.

    Returns
    -------
    array (N,) or scalar
        The step size epsilon (a 0-d array for ``norm="batch"``).

    Raises
    ------
    ValueError
        If ``snr`` or ``norm`` is invalid.
    """
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr = {snr!r} must be finite and > 0")
    gn, zn = _norms(score), _norms(noise)
    xp = array_namespace(score)
    if not bool(xp.all(xp.isfinite(gn))) or not bool(xp.all(xp.isfinite(zn))):
        raise ValueError("score or noise contains NaN or inf: the Langevin step size would be 0 or NaN")
    if norm == "batch":
        xp = array_namespace(score)
        gn, zn = xp.mean(gn), xp.mean(zn)
    elif norm != "sample":
        raise ValueError(f"unknown norm {norm!r}; valid: 'sample' (the paper), 'batch' (the code release)")
    return 2.0 * float(alpha_i) * (snr * zn / gn) ** 2


@check_args(arrays=("x", "score", "noise"), coefs=("step_size",), same_shape=("x", "score", "noise"))
def langevin_corrector_step(x, score, step_size, noise):
    """One Langevin MCMC step targeting p_t, MATH.md (11.3): x + eps s(x) + sqrt(2 eps) z;
    ``step_size`` a float, 0-d or per-sample (N,) array.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state.
    score : array (N, ...)
        The score at x.
    step_size : float or array (N,) or 0-d
        epsilon.
    noise : array (N, ...)
        Standard normal z.

    Returns
    -------
    array (N, ...)
        The new state.
    """
    if isinstance(step_size, (int, float)):
        return x + float(step_size) * score + math.sqrt(2.0 * step_size) * noise
    eps = bcast(step_size, x)  # (N,) -> (N, 1, ..., 1)
    return x + eps * score + array_namespace(x).sqrt(2.0 * eps) * noise


@check_args(arrays=("x", "eps_hat"), scalars=("f", "g2", "sigma"), same_shape=("x", "eps_hat"))
def pf_ode_drift(x, eps_hat, f, g2, sigma):
    """The probability-flow ODE of a VP SDE, MATH.md (11.5):
    dx/dt = f x - g^2 score / 2 = f x + g^2 eps_hat / (2 sigma).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state.
    eps_hat : array (N, ...)
        The model's eps prediction at x.
    f, g2 : float
        f(t) and g(t)^2.
    sigma : float
        sigma_t (> 0).

    Returns
    -------
    array (N, ...)
        dx/dt.
    """
    return float(f) * x + (0.5 * float(g2) / float(sigma)) * eps_hat


@check_args(callables=("drift",), arrays=("x",), scalars=("t", "dt"))
def rk4_step(drift, x, t, dt):
    """One classical Runge-Kutta-4 step of dx/dt = drift(x, t) from t to t + dt (dt may be
    negative), MATH.md (11.6): k1 = F(x, t), k2 = F(x + dt k1/2, t + dt/2),
    k3 = F(x + dt k2/2, t + dt/2), k4 = F(x + dt k3, t + dt); x + dt (k1 + 2 k2 + 2 k3 + k4)/6.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    drift : callable
        ``drift(x, t) -> dx/dt``.
    x : array (N, ...)
        The state at t.
    t : float
        The current time.
    dt : float
        The step (may be negative).

    Returns
    -------
    array (N, ...)
        The state at t + dt.
    """
    k1 = drift(x, t)
    k2 = drift(x + (0.5 * dt) * k1, t + 0.5 * dt)
    k3 = drift(x + (0.5 * dt) * k2, t + 0.5 * dt)
    k4 = drift(x + dt * k3, t + dt)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


# ----------------------------------------------------------------------------- loops
def _tc(schedule, t):
    """The continuous time of model time t: (t + 1) / T on a Schedule (MATH.md (2.15)), t on a VP."""
    return (float(t) + 1.0) / schedule.T if isinstance(schedule, Schedule) else float(t)


def _coefs(schedule, tc):
    """(f, g^2, sigma) of the VP SDE at continuous time tc, MATH.md (2.14).  On a Schedule
    (InterpolatedVP) log alpha is piecewise linear; f is the slope of the segment just below
    tc (the one a reverse-time step integrates over)."""
    vp = InterpolatedVP(schedule) if isinstance(schedule, Schedule) else schedule
    kinked = isinstance(vp, InterpolatedVP)
    tf = np.asarray(tc - 1e-9 / vp.schedule.T if kinked else tc, dtype=np.float64)
    return float(vp.dlog_alpha_dt(tf)), float(vp.beta(tf)), float(vp.sigma(np.asarray(tc, dtype=np.float64)))


_GRID_DOC = """

    Notes
    -----
    Grid (:func:`refdiff.make_grid`, also ``sigmas=``): a continuous VP's times end at the
    last time; a Schedule's timesteps end with a final Tweedie step to sigma = 0 that
    returns the model's x0_hat (no noise), as DDIM's t_prev = -1.  Hooks ``callback`` and
    ``project`` after each step, in VP coordinates (:func:`refdiff.samplers.common.end_step`)."""


def euler_maruyama(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                   project=None, denoise=True, sigmas=None, final_sigmas_type=None, interpolation="log_alpha"):
    """Euler-Maruyama on the reverse VP SDE, MATH.md (11.1)-(11.2).  Step i draws one noise(x)
    after its model call, except a step to sigma = 0 and, with ``denoise=True`` (Song et al.:
    return the last step's mean), the last step.

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
    denoise : bool, default True
        Return the last step's mean (no noise on the last step).
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
    TypeError
        If ``noise`` is None (and as :func:`refdiff.make_grid`).
    ValueError
        As :func:`refdiff.make_grid`.
    """
    check_bool("denoise", denoise)
    if noise is None:
        raise TypeError("method 'euler_maruyama' is stochastic and needs noise (pass rng= to refdiff.sample)")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "euler_maruyama", needs="log_alpha")
    n = len(grid) - 1
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        if q.sigma == 0.0:
            x = x0_hat  # the final Tweedie step
        else:
            t, t_next = _tc(schedule, p.t), _tc(schedule, q.t)
            f, g2, _ = _coefs(schedule, t)
            z = None if (denoise and i == n - 1) else draw_noise(noise, x, "euler_maruyama")
            x = euler_maruyama_step(x, -eps_hat / p.sigma, f, g2, t - t_next, z)  # score (4.5), step (11.2)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def pc(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None, project=None,
       snr=0.16, n_corrector=1, langevin_norm="batch", denoise=True, sigmas=None, final_sigmas_type=None,
       interpolation="log_alpha"):
    """Predictor-corrector sampling (Song et al. 2021, Alg. 3 with the VP Langevin corrector),
    MATH.md (11.2)-(11.4).  At each grid point but the last: ``n_corrector`` Langevin steps,
    each drawing one noise(x) (used for both the step size (11.4) and the move (11.3)), then
    one Euler-Maruyama predictor step drawing one noise(x) (none on the last step when
    ``denoise=True``).  ``langevin_norm``: 'batch' (default, the code release: batch-mean
    norms) or 'sample' (the paper's per-sample norms; in low dimension ||score|| near a mode
    is often tiny, the step size heavy-tailed and the corrector unstable, MATH.md (11.4)).
    The hooks' x0_hat is the predictor's (after the corrector steps).

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
    snr : float, default 0.16
        The corrector's signal-to-noise ratio (finite, > 0).
    n_corrector : int, default 1
        Langevin steps per grid point (>= 0).
    langevin_norm : {"batch", "sample"}, default "batch"
        The norms of the step size (above).
    denoise : bool, default True
        Return the last step's mean (no noise on the last step).
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
    TypeError
        If ``noise`` is None (and as :func:`refdiff.make_grid`).
    ValueError
        If ``n_corrector``, ``snr`` or ``langevin_norm`` is invalid (and as :func:`refdiff.make_grid`).
    """
    check_bool("denoise", denoise)
    check_finite_scalar("snr", snr, low=0.0, low_open=True)
    check_int("n_corrector", n_corrector, min=0)
    if noise is None:
        raise TypeError("method 'pc' is stochastic and needs noise (pass rng= to refdiff.sample)")
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"pc: n_corrector = {n_corrector!r} must be an integer >= 0")
    if not (isinstance(snr, (int, float)) and math.isfinite(snr) and snr > 0):
        raise ValueError(f"pc: snr = {snr!r} must be finite and > 0")
    if langevin_norm not in ("sample", "batch"):
        raise ValueError(f"pc: unknown langevin_norm {langevin_norm!r}; valid: 'sample', 'batch'")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "pc", needs="log_alpha")
    n = len(grid) - 1
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        for _ in range(n_corrector if q.sigma > 0 else 0):
            score = -predict(model, x, p, prediction_type, i)[0] / p.sigma
            z = draw_noise(noise, x, "pc")
            x = langevin_corrector_step(x, score, langevin_step_size(score, z, snr, norm=langevin_norm), z)
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        if q.sigma == 0.0:
            x = x0_hat  # the final Tweedie step
        else:
            t, t_next = _tc(schedule, p.t), _tc(schedule, q.t)
            f, g2, _ = _coefs(schedule, t)
            z = None if (denoise and i == n - 1) else draw_noise(noise, x, "pc")
            x = euler_maruyama_step(x, -eps_hat / p.sigma, f, g2, t - t_next, z)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def pf_ode_rk4(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
               project=None, sigmas=None, final_sigmas_type=None, interpolation="log_alpha"):
    """The probability-flow ODE (11.5) integrated with classical RK4 (11.6) in t on the given
    grid: four model calls per step (at t_i, twice at the midpoint, at t_{i+1}; on a Schedule
    the midpoints are float continuous indices).  Deterministic: draws no noise.  The hooks'
    x0_hat is the first evaluation's.

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
        For an invalid grid (:func:`refdiff.make_grid`) or option.
    """
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "pf_ode_rk4", needs="log_alpha")
    discrete = isinstance(schedule, Schedule)
    for i in range(len(grid) - 1):
        p, q = grid[i], grid[i + 1]
        seen = []  # the x0_hat of each drift evaluation of this step

        def drift(y, tc):
            r = point_at(schedule, p.t if tc == _tc(schedule, p.t) else (tc * schedule.T - 1.0 if discrete else tc))
            eps_hat, x0 = predict(model, y, r, prediction_type, i)
            seen.append(x0)
            return pf_ode_drift(y, eps_hat, *_coefs(schedule, tc))

        if q.sigma == 0.0:
            x = predict(model, x, p, prediction_type, i)[1]  # the final Tweedie step
            seen.append(x)
        else:
            t = _tc(schedule, p.t)
            x = rk4_step(drift, x, t, _tc(schedule, q.t) - t)
        x = end_step(i, p.t, x, seen[0], callback, project)
    return x


for _f in (euler_maruyama, pc, pf_ode_rk4):
    _f.__doc__ += _GRID_DOC

METHODS = {"euler_maruyama": euler_maruyama, "pc": pc, "pf_ode_rk4": pf_ode_rk4}
