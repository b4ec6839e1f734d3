"""What every sampler loop shares (public): the time grid, its one validator, the
VP <-> sigma <-> flow coordinate maps, the model call, and the hook contract.

**The grid.**  A loop runs on a :class:`Grid`: a tuple of :class:`GridPoint`
``(t, alpha, sigma)``, where ``t`` is the time handed to the model and (alpha, sigma) the
coefficients of the path x_t = alpha x_0 + sigma eps at that point.  Step i goes from
``grid[i]`` to ``grid[i + 1]``; a final point with sigma = 0 (:data:`ZERO`, t = None) is the
data end, where no model is evaluated.  Model times: integer indices of a discrete
:class:`~refdiff.Schedule` (float "continuous indices" between them, MATH.md (2.15)),
floats in (0, 1] of a continuous VP (t = 0 data), or flow times of a velocity model.
Usually (alpha, sigma) are the schedule's values at t; library grids (``timestep_rounding``
of :func:`point_at_sigma`, :func:`refdiff.library_grid`) may pair a noise level with a nearby
model time, as the libraries do.  :func:`make_grid` builds and validates every grid: from
integer timesteps, continuous times, an explicit sigma grid (Karras, exponential, given),
flow times, or a ready :class:`Grid`.  It is the only grid validator; every loop calls it.

**Coordinates.**  VP: x = alpha x_0 + sigma eps with alpha^2 + sigma^2 = 1.  Sigma (VE):
x / alpha = x_0 + s eps with s = sigma / alpha, MATH.md (9.1).  Flow: x / (alpha + sigma) =
(1 - u) x_0 + u eps with u = sigma / (alpha + sigma), MATH.md (11.10).  In general a state on
the path (a, b) has the VP state x / sqrt(a^2 + b^2) (:func:`to_vp`).

**Hooks.**  Every loop takes ``callback`` and ``project`` and ends each step with
:func:`end_step`: first ``x = project(i, t, x)`` (a state hook that may replace the state,
e.g. to impose known pixels), then ``callback(i, t, x, x0_hat)``.  In both, ``t`` is the model
time of the step's start point grid[i] (EDM's churned level excepted: see ``edm_loop``),
``x`` the state after the step in VP coordinates at grid[i + 1], and ``x0_hat`` the x_0
prediction of the step's first model evaluation (at grid[i]), after any clipping or
thresholding the step applies (DDPM/DDIM's ``clip_sample``/``thresholding``): the x0_hat
the update used.  Loops whose state lives in sigma or flow coordinates convert at the hook.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import NamedTuple

import numpy as np

from .._validate import check_array, check_choice, check_finite_scalar, check_int, check_same_shape
from ..backend import array_namespace, bcast, check_finite, to_numpy
from ..parameterization import PREDICTION_TYPES, to_eps_x0
from ..schedules import InterpolatedVP, Schedule, _ContinuousVP, alpha_sigma
from ..variance import check_model_output

__all__ = ["GridPoint", "Grid", "make_grid", "point_at", "point_at_lambda", "point_at_sigma", "sigma_to_time",
           "to_vp", "from_vp", "ve_sigma", "flow_time", "vp_from_ve_sigma", "vp_from_flow_time", "end_step",
           "model_t", "call_model", "predict", "predict_eps_x0"]
# also public, not star-exported: ZERO, FINAL_SIGMAS_TYPES, INTERPOLATIONS, check_schedule,
# check_prediction_type, check_options, check_noise, draw_noise, is_int_scalar, check_start, vp_grid,
# check_step_arrays, check_x0_defined, check_level, check_args, check_timestep_arg

FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
# model time of a noise level: refdiff's exact inverse (2.15); k-diffusion / diffusers Euler
# (linear in log sigma between the schedule's levels); diffusers DPMSolverMultistep (the same, rounded)
INTERPOLATIONS = ("log_alpha", "log_sigma", "log_sigma_round")


class GridPoint(NamedTuple):
    """One point of a sampler's grid: model time ``t`` and path coefficients alpha, sigma.

    Parameters
    ----------
    t : int, float or None
        The model time (None for the data end :data:`ZERO`).
    alpha : float
        The path's data coefficient at the point.
    sigma : float
        The path's noise coefficient at the point (0 at the data end).
    """

    t: object
    alpha: float
    sigma: float

    @property
    def lam(self):
        """Half log-SNR lambda = log(alpha / sigma), MATH.md (10.1); +inf at sigma = 0."""
        return math.inf if self.sigma == 0.0 else math.log(self.alpha) - math.log(self.sigma)


class Grid(tuple):
    """A validated tuple of :class:`GridPoint` (build it with :func:`make_grid`).

    Parameters
    ----------
    iterable : iterable of GridPoint, default ()
        The points, from the start (noise) end to the final point.  Constructing a Grid
        directly does not validate it.
    """


ZERO = GridPoint(None, 1.0, 0.0)


def check_args(*, arrays=(), coefs=(), scalars=(), callables=(), same_shape=(), optional=()):
    """Decorator: the cheap entry checks of a step function (issue 19), by parameter name.

    ``arrays``: real floating arrays (float32/float64, any rank); ``coefs``: a finite
    real number (not a bool) or a float array (a per-sample coefficient of shape (N,) is
    reshaped to (N, 1, ..., 1) against the first array, :func:`refdiff.backend.bcast`); ``scalars``: a
    finite real number (not a bool, not an array); ``callables``:
    callables; ``same_shape``: arrays that must have one shape (no broadcasting).  An
    optional parameter left at None (default None, or named in ``optional``) is not
    checked.  No finiteness pass (per-step code):
    NaN and inf in arrays propagate, as the decorated functions' docstrings say.

    Parameters
    ----------
    arrays, coefs, scalars, callables, same_shape, optional : tuple of str
        Parameter names.

    Returns
    -------
    callable
        The decorator.
    """
    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            a = bound.arguments
            for name in callables:
                if not callable(a.get(name)):
                    raise TypeError(f"{name} must be callable, got {type(a.get(name)).__name__}")
            for name in arrays:
                v = a.get(name)
                if name in a and not (v is None and (sig.parameters[name].default is None or name in optional)):
                    check_array(name, np.asarray(v) if isinstance(v, np.generic) else v)  # NumPy 0-d results
            ref_name = next((n for n in arrays if a.get(n) is not None and hasattr(a[n], "ndim")), None)
            ref = a[ref_name] if ref_name is not None else None
            for name in coefs:
                v = a.get(name, sig.parameters[name].default)
                if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.generic):
                    check_array(name, v)
                    if v.ndim == 1 and ref is not None and ref.ndim > 1:  # per sample: (N,) -> (N, 1, ...)
                        if v.shape[0] not in (1, ref.shape[0]):
                            raise ValueError(f"{name} has shape {tuple(v.shape)}; a per-sample coefficient must "
                                             f"have shape (N,) = ({ref.shape[0]},), N from {ref_name} "
                                             f"{tuple(ref.shape)}")
                        a[name] = bcast(v, ref)
                else:
                    check_finite_scalar(name, v)
            for name in scalars:
                v = a.get(name, sig.parameters[name].default)
                if not (v is None and name in optional):
                    check_finite_scalar(name, v)
            shaped = {n: a[n] for n in same_shape if a.get(n) is not None}
            if len(shaped) > 1:
                check_same_shape(**shaped)
            return fn(*bound.args, **bound.kwargs)

        return checked

    return deco


# ----------------------------------------------------------------------------- coordinates
@check_args(coefs=("alpha", "sigma"))
def ve_sigma(alpha, sigma):
    """VP -> sigma (VE) noise level s = sigma / alpha, MATH.md (9.1).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    alpha, sigma : float or array
        VP coefficients.

    Returns
    -------
    float or array
        s = sigma / alpha.
    """
    return sigma / alpha


@check_args(scalars=("s",))
def vp_from_ve_sigma(s):
    """sigma (VE) -> VP: (alpha, sigma) = (1, s) / sqrt(1 + s^2), MATH.md (9.1).

    Parameters
    ----------
    s : float
        The VE noise level (>= 0).

    Returns
    -------
    alpha, sigma : float
    """
    a = 1.0 / math.sqrt(1.0 + s * s)
    return a, s * a


@check_args(coefs=("alpha", "sigma"))
def flow_time(alpha, sigma):
    """VP -> rectified-flow time of equal SNR, u = sigma / (alpha + sigma), MATH.md (11.10).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    alpha, sigma : float or array
        VP coefficients.

    Returns
    -------
    float or array
        u = sigma / (alpha + sigma).
    """
    return sigma / (alpha + sigma)


@check_args(scalars=("u",))
def vp_from_flow_time(u):
    """Flow time -> VP (alpha, sigma) of equal SNR: (1 - u, u) / sqrt((1 - u)^2 + u^2).

    Parameters
    ----------
    u : float
        The flow time in [0, 1], u = 0 data.

    Returns
    -------
    alpha, sigma : float
    """
    r = math.hypot(1.0 - u, u)
    return (1.0 - u) / r, u / r


@check_args(arrays=("x",), scalars=("alpha", "sigma"))
def to_vp(x, alpha, sigma):
    """The VP state of x on the path (alpha, sigma): x / sqrt(alpha^2 + sigma^2) (the same
    x_0, eps and SNR); identity on a VP point.  Sigma space: (alpha, sigma) = (1, s); flow:
    (1 - u, u).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array
        A state on the path (alpha, sigma).
    alpha, sigma : float
        The path's coefficients at the point.

    Returns
    -------
    array
        The VP state (``x`` itself when alpha^2 + sigma^2 = 1).
    """
    r = math.hypot(alpha, sigma)
    return x if r == 1.0 else x / r


@check_args(arrays=("x_vp",), scalars=("alpha", "sigma"))
def from_vp(x_vp, alpha, sigma):
    """Inverse of :func:`to_vp`: x_vp sqrt(alpha^2 + sigma^2).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_vp : array
        A VP state.
    alpha, sigma : float
        The target path's coefficients at the point.

    Returns
    -------
    array
        The state on the path (alpha, sigma) (``x_vp`` itself when alpha^2 + sigma^2 = 1).
    """
    r = math.hypot(alpha, sigma)
    return x_vp if r == 1.0 else x_vp * r


# ----------------------------------------------------------------------------- points
def check_schedule(schedule, name="schedule"):
    """True for a discrete Schedule, False for a continuous VP; TypeError otherwise."""
    if isinstance(schedule, Schedule):
        return True
    if isinstance(schedule, _ContinuousVP):
        return False
    raise TypeError(f"{name} must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")


def point_at(schedule, t):
    """The grid point of model time ``t``: an int index of a Schedule (its table values), a
    float continuous index (MATH.md (2.15)), or a float time of a continuous VP.

    Parameters
    ----------
    schedule : Schedule or continuous VP
        The schedule.
    t : int or float
        The model time.

    Returns
    -------
    GridPoint
        ``(t, alpha, sigma)`` (t an int for an integer index of a Schedule, else a float).

    Raises
    ------
    TypeError
        If ``schedule`` is neither a Schedule nor a continuous VP.
    """
    return _point_at(schedule, t, "t")


def _point_at(schedule, t, name):
    check_time(name, t)
    if isinstance(schedule, Schedule) and not (0 <= t <= schedule.T - 1):
        raise ValueError(f"{name} = {t!r} is out of range [0, {schedule.T - 1}] (T = {schedule.T})")
    if isinstance(schedule, Schedule) and isinstance(t, (int, np.integer)):
        k = int(t)
        return GridPoint(k, float(schedule.sqrt_alpha_bars[k]), float(schedule.sqrt_one_minus_alpha_bars[k]))
    check_schedule(schedule)
    a, s = alpha_sigma(schedule, float(t), np.zeros(1))
    return GridPoint(float(t), float(np.reshape(a, -1)[0]), float(np.reshape(s, -1)[0]))


def point_at_lambda(schedule, lam):
    """The point of half log-SNR ``lam`` (model time by the exact inverse of (2.15)).

    Parameters
    ----------
    schedule : Schedule or continuous VP
        The schedule.
    lam : float
        The half log-SNR.

    Returns
    -------
    GridPoint
        The point; for a Schedule the model time is a float continuous index.

    Raises
    ------
    TypeError
        If ``schedule`` is neither a Schedule nor a continuous VP.
    """
    check_finite_scalar("lam", lam)
    if check_schedule(schedule):
        tc = float(InterpolatedVP(schedule).t_from_lambda(np.asarray(float(lam))))
        t = tc * schedule.T - 1.0
    else:
        t = float(schedule.t_from_lambda(np.asarray(float(lam))))
    return point_at(schedule, t)


def sigma_to_time(schedule, s, interpolation="log_alpha"):
    """The model time of the VE noise level ``s`` > 0, MATH.md (9.9).

    Schedule: ``"log_alpha"`` (default) the continuous index tau with alpha_tau^2 = 1/(1 + s^2)
    under (2.15), so the model sees exactly s; ``"log_sigma"`` k-diffusion's and diffusers'
    (EulerDiscreteScheduler) rule, tau linear in log s between the schedule's levels, clipped
    to [0, T-1]; ``"log_sigma_round"`` the same rounded half to even to an int (diffusers
    0.42.1 DPMSolverMultistepScheduler with Karras/exponential sigmas).  Continuous VP: t with
    lambda_t = -log s.

    Parameters
    ----------
    schedule : Schedule or continuous VP
        The schedule.
    s : float
        The VE noise level (> 0).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The rule (ignored for a continuous VP).

    Returns
    -------
    float or int
        The model time (an int for ``"log_sigma_round"``).

    Raises
    ------
    ValueError
        If ``interpolation`` is unknown.
    TypeError
        If ``schedule`` is neither a Schedule nor a continuous VP.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    check_finite_scalar("s", s, low=0.0, low_open=True)
    if not check_schedule(schedule):
        return float(schedule.t_from_lambda(np.asarray(-math.log(s))))
    if interpolation == "log_alpha":
        return float(InterpolatedVP(schedule).t_from_lambda(np.asarray(-math.log(s)))) * schedule.T - 1.0
    tau = float(np.interp(math.log(s), np.log(schedule.sigmas), np.arange(schedule.T, dtype=np.float64)))
    return int(np.round(tau)) if interpolation == "log_sigma_round" else tau


def point_at_sigma(schedule, s, interpolation="log_alpha"):
    """The point of VE noise level ``s`` (:data:`ZERO` at s = 0): (alpha, sigma) from
    :func:`vp_from_ve_sigma`, the model time from :func:`sigma_to_time`.

    Parameters
    ----------
    schedule : Schedule or continuous VP
        The schedule (gives the model time).
    s : float
        The VE noise level (>= 0).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        As in :func:`sigma_to_time`.

    Returns
    -------
    GridPoint
        The point.

    Raises
    ------
    ValueError
        If ``interpolation`` is unknown.
    """
    check_finite_scalar("s", s, low=0.0)
    if s == 0.0:
        return ZERO
    a, sg = vp_from_ve_sigma(s)
    return GridPoint(sigma_to_time(schedule, s, interpolation), a, sg)


# ----------------------------------------------------------------------------- the validator
def _host_1d(values, name):
    v = to_numpy(values) if hasattr(values, "shape") and not isinstance(values, np.ndarray) else np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {v.shape}")
    if v.dtype.kind == "b" or v.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numbers, got dtype {v.dtype}")
    if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite, got {v.tolist()}")
    return v


def check_int_grid(timesteps, T, name="timesteps"):
    """The host int64 array of a discrete grid: 1-D, non-empty, integer, in [0, T-1], strictly
    decreasing (errors name ``name``)."""
    ts = _host_1d(timesteps, name)
    check_int("T", T, min=1)
    if T > 2**31 - 1:
        raise ValueError(f"T = {T} exceeds 2**31 - 1")
    if ts.size < 1:
        raise ValueError(f"steps = 0: {name} is empty (steps must be >= 1)")
    if ts.dtype.kind not in "iu":
        raise TypeError(f"{name} for a discrete Schedule must be integers, got dtype {ts.dtype}")
    if ts.min() < 0 or ts.max() > T - 1:
        bad = int(ts.min()) if ts.min() < 0 else int(ts.max())
        raise ValueError(f"{name} contain {bad}, out of range [0, {T - 1}] (T = {T})")
    _decreasing(ts, name)
    return ts.astype(np.int64)


def _decreasing(v, name, what="strictly decreasing"):
    bad = np.flatnonzero(np.diff(v) >= 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must be {what}: {name}[{i}] = {v[i]!r} <= {name}[{i + 1}] = {v[i + 1]!r}")


def _sigma_range(schedule):
    if isinstance(schedule, Schedule):
        return float(schedule.sigmas[0]), float(schedule.sigmas[-1])
    ends = np.array([schedule.t_min, schedule.t_max])
    s = schedule.sigma(ends) / schedule.alpha(ends)
    return float(s[0]), float(s[1])


def make_grid(schedule, timesteps=None, *, sigmas=None, final_sigmas_type=None, interpolation="log_alpha",
              time_convention="t0_data"):
    """The validated :class:`Grid` of a loop (n steps, n + 1 points), MATH.md (2.9), (9.9), (10.6).

    * ``timesteps`` a :class:`Grid`: returned as it is (it was validated when built).
    * ``sigmas`` given (VE noise levels, strictly decreasing, >= 0, >= 2 of them, within the
      schedule's range; e.g. ``refdiff.karras_sigmas(n, lo, hi, append_zero=True)``): one
      point per level, model times by ``interpolation`` (:func:`sigma_to_time`); ``timesteps``
      is ignored (may be None).  The last level is the end (0: the data end).
    * Schedule + integer ``timesteps`` (strictly decreasing in [0, T-1], >= 1): one point per
      timestep, then ``final_sigmas_type`` ``"zero"`` (default: :data:`ZERO`, the last step
      returns x0_hat) or ``"sigma_min"`` (index 0, appended unless the grid ends there).
    * continuous VP + float times (strictly decreasing in (0, 1], >= 2): one point per time;
      ``"sigma_min"`` (default) ends at the last time, ``"zero"`` appends :data:`ZERO`.
    * ``schedule=None`` (a flow velocity model): flow times in [0, 1], strictly decreasing
      (``time_convention="t0_data"``) or increasing (``"t0_noise"``); the points are
      (t as given, 1 - u, u) with u the time measured from the data end.

    Parameters
    ----------
    schedule : Schedule, continuous VP or None
        The model's schedule; None for a flow velocity model.
    timesteps : array_like (n + 1,) or (n,), Grid or None, default None
        Model times (integer for a Schedule, floats for a continuous VP or flow times), or a
        ready Grid; ignored when ``sigmas`` is given.
    sigmas : array_like, optional
        A strictly decreasing VE noise grid (>= 0, >= 2 levels, within the schedule's range).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends; the default depends on the schedule (above).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`sigma_to_time`).
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        The convention of flow times (``schedule=None``).

    Returns
    -------
    Grid
        The points of the loop.

    Raises
    ------
    TypeError
        If ``timesteps`` is None without ``sigmas``, holds non-numbers, or has the wrong kind
        (integers for a Schedule, floats for a continuous VP), or ``schedule`` is neither.
    ValueError
        If the grid is empty, out of range, not strictly monotone, not finite, not 1-D, or an
        option is unknown.
    """
    if isinstance(timesteps, Grid):
        return timesteps
    check_choice("time_convention", time_convention, ("t0_data", "t0_noise"))
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    if final_sigmas_type is not None and final_sigmas_type not in FINAL_SIGMAS_TYPES:
        raise ValueError(f"unknown final_sigmas_type {final_sigmas_type!r}; valid: {', '.join(FINAL_SIGMAS_TYPES)}")
    if schedule is None:
        return _flow_grid(timesteps, time_convention)
    discrete = check_schedule(schedule)
    if sigmas is not None:
        return _sigma_grid(schedule, sigmas, interpolation)
    if timesteps is None:
        raise TypeError("timesteps is None: pass a grid (timesteps) or sigmas")
    if discrete:
        ts = check_int_grid(timesteps, schedule.T)
    else:
        ts = _host_1d(timesteps, "timesteps")
        if ts.size < 2:
            raise ValueError(f"timesteps must hold >= 2 times on a continuous grid (steps must be >= 1), got {ts.size}")
        if ts.dtype.kind != "f":
            raise TypeError(f"timesteps for a continuous VP must be floats in (0, 1], got dtype {ts.dtype}")
        if ts.min() <= 0 or ts.max() > 1:
            raise ValueError(f"timesteps must lie in (0, 1] (t = 0 is data), got min {ts.min()!r}, max {ts.max()!r}")
    if not discrete:
        _decreasing(ts, "timesteps")
    final = ("zero" if discrete else "sigma_min") if final_sigmas_type is None else final_sigmas_type
    if final not in FINAL_SIGMAS_TYPES:
        raise ValueError(f"unknown final_sigmas_type {final!r}; valid: {', '.join(FINAL_SIGMAS_TYPES)}")
    pts = [point_at(schedule, int(v) if discrete else float(v)) for v in ts]
    if final == "zero":
        pts.append(ZERO)
    elif discrete and int(ts[-1]) != 0:
        pts.append(point_at(schedule, 0))
    return Grid(pts)


def vp_grid(schedule, timesteps=None, *, sigmas=None, final_sigmas_type=None, interpolation="log_alpha"):
    """:func:`make_grid` for a loop of a VP model: ``schedule`` must be a Schedule or a
    continuous VP (None, the flow path of :func:`make_grid`, is refused naming it)."""
    check_schedule(schedule)
    return make_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                     interpolation=interpolation)


def _sigma_grid(schedule, sigmas, interpolation):
    sig = _host_1d(sigmas, "sigmas").astype(np.float64)
    if sig.size < 2:
        raise ValueError(f"sigmas must hold at least 2 noise levels (1 step), got {sig.size}")
    if np.any(sig < 0):
        raise ValueError(f"sigmas must be >= 0, got {sig.tolist()}")
    _decreasing(sig, "sigmas")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    lo, hi = _sigma_range(schedule)
    pos = sig[sig > 0]
    if not math.isfinite(hi):
        raise ValueError("the schedule's largest sigma is inf (zero terminal SNR): sigma grids need alpha_bar > 0")
    if pos.size and (pos.max() > hi * (1 + 1e-9) or pos.min() < lo * (1 - 1e-9)):
        raise ValueError(f"sigmas {pos.min():.6g}..{pos.max():.6g} are out of the schedule's range [{lo:.6g}, {hi:.6g}]")
    return Grid(point_at_sigma(schedule, float(s), interpolation) for s in sig)


def _flow_grid(timesteps, time_convention):
    if time_convention not in ("t0_data", "t0_noise"):
        raise ValueError(f"unknown time_convention {time_convention!r}; valid: 't0_data' (t = 0 data), 't0_noise'")
    ts = _host_1d(timesteps, "timesteps").astype(np.float64)
    if ts.size < 2:
        raise ValueError(f"timesteps must hold >= 2 times on a flow grid (steps must be >= 1), got {ts.size}")
    if ts.min() < 0 or ts.max() > 1:
        raise ValueError(f"timesteps (flow times: schedule is None) must lie in [0, 1], got min {ts.min()!r}, "
                         f"max {ts.max()!r}")
    u = ts if time_convention == "t0_data" else 1.0 - ts
    _decreasing(u, "timesteps", "strictly " + ("decreasing (t = 0 data)" if time_convention == "t0_data"
                                                else "increasing (t0_noise: t = 1 data)"))
    return Grid(GridPoint(float(t), 1.0 - float(v), float(v)) for t, v in zip(ts, u))


# ----------------------------------------------------------------------------- model calls
def model_t(t, x):
    """The time argument passed to a model: ``t`` repeated to shape (N,) in x's namespace;
    int64 for integer t, float64 otherwise.

    Parameters
    ----------
    t : int, float or 0-d array
        The model time.
    x : array (N, ...)
        The state (gives N and the namespace).

    Returns
    -------
    array (N,)
        int64 for an integer ``t``, float64 otherwise.

    Raises
    ------
    TypeError
        If ``t`` is a bool.
    """
    check_array("x", x, min_ndim=1)
    xp = array_namespace(x)
    if hasattr(t, "dtype") and getattr(t, "ndim", 1) == 0 and not isinstance(t, np.generic):
        t = t.item() if hasattr(t, "item") else t  # a 0-d array: its value
    check_time("t", t)
    if isinstance(t, (int, np.integer)):
        return xp.full((x.shape[0],), int(t), dtype=xp.int64)
    return xp.full((x.shape[0],), float(t), dtype=xp.float64)


def call_model(model, x, t, *, step=None):
    """``model(x, model_t(t, x))`` with its output checked: same shape as ``x`` and finite.

    Errors name the step (``step``, an int loop index) and the time, so a NaN produced
    inside a loop is reported where it appeared.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` with t of shape (N,) (:func:`model_t`).
    x : array (N, ...)
        The state.
    t : int or float
        The model time.
    step : int, optional
        The loop index, named in errors.

    Returns
    -------
    array (N, ...)
        The model output.

    Raises
    ------
    ValueError
        If the output's shape does not match ``x`` (:func:`refdiff.variance.check_model_output`).
    FloatingPointError
        If the output is not finite.
    """
    if not callable(model):
        raise TypeError(f"model must be callable (model(x, t) -> output), got {type(model).__name__}")
    if step is not None:
        check_int("step", step, min=0)
    where = f"step {step} (t = {t})" if step is not None else f"t = {t}"
    try:
        return check_model_output(model(x, model_t(t, x)), x, where=where)
    except FloatingPointError as e:
        xp = array_namespace(x)
        if not bool(xp.all(xp.isfinite(x))):  # say why, on the failure path only
            raise FloatingPointError(f"{e}: its input x contains NaN or inf") from None
        raise


def predict(model, x, p, prediction_type, step=None):
    """(eps_hat, x0_hat) of the model at the VP state x on grid point ``p``, MATH.md (4.2),
    with the point's own (alpha, sigma).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output``.
    x : array (N, ...)
        The VP state at ``p``.
    p : GridPoint
        The grid point.
    prediction_type : str
        What the model predicts (refdiff.parameterization's prediction types).
    step : int, optional
        The loop index, named in errors.

    Returns
    -------
    eps_hat, x0_hat : arrays (N, ...)
    """
    return to_eps_x0(call_model(model, x, p.t, step=step), x, p.alpha, p.sigma, prediction_type)


def predict_eps_x0(model, x, t, schedule, prediction_type="epsilon", *, step=None):
    """(eps_hat, x0_hat) at model time ``t`` of ``schedule`` (alpha, sigma from
    :func:`refdiff.alpha_sigma`), MATH.md (4.2).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output``.
    x : array (N, ...)
        The state at time ``t``.
    t : int or float
        The model time.
    schedule : Schedule or continuous VP
        The schedule (gives alpha, sigma).
    prediction_type : str, default "epsilon"
        What the model predicts.
    step : int, optional
        The loop index, named in errors.

    Returns
    -------
    eps_hat, x0_hat : arrays (N, ...)
    """
    check_schedule(schedule)
    out = call_model(model, x, t, step=step)
    alpha, sigma = alpha_sigma(schedule, t, x)
    return to_eps_x0(out, x, alpha, sigma, prediction_type)


# ----------------------------------------------------------------------------- checks and hooks
def is_int_scalar(t):
    """A Python or NumPy integer (not a bool): a single discrete timestep."""
    return isinstance(t, (int, np.integer)) and not isinstance(t, bool)


def check_prediction_type(prediction_type):
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")


def check_options(who, options):
    """TypeError for options a loop does not know."""
    if options:
        raise TypeError(f"{who} got unknown option(s) {sorted(options)}")


X0_UNDEFINED_AT_ALPHA_ZERO = ("epsilon", "score")  # x0_hat = (x - sigma eps_hat) / alpha, (4.2)


def check_start(model, x, grid, who, *, prediction_type=None, needs=None, name="x"):
    """The checks at a loop's entry (issue 19): the start state and the grid's zero-SNR point.

    ``model`` must be callable.  ``x`` must be a real floating array (float32 or float64;
    float16 overflows in the
    sigma-space scaling sqrt(1 + s^2) x) with a batch axis, finite.  A grid point with
    alpha = 0 and sigma > 0 (zero terminal SNR, t = T-1 of a rescaled schedule) is refused
    before any model call, saying why: ``needs="x0"`` (DDPM, DDIM, LCM) when
    ``prediction_type`` is "epsilon" or "score", whose x0_hat = (x - sigma eps_hat) / alpha,
    MATH.md (4.2), divides by alpha = 0; ``needs="lambda"`` (the half-log-SNR solvers) for
    every prediction type, lambda = log(alpha / sigma) being -inf there; ``needs="log_alpha"``
    (PNDM, the SDE loops: they evaluate the schedule between its points through log alpha,
    MATH.md (2.15)) likewise.

    Parameters
    ----------
    model : callable
        The loop's model.
    x : array (N, ...)
        The start state.
    grid : Grid
        The loop's grid (:func:`make_grid`).
    who : str
        The method's name, for the message.
    prediction_type : str, optional
        What the model predicts (with ``needs="x0"``).
    needs : {None, "x0", "lambda", "log_alpha"}
        What the method computes at every point.
    name : str, default "x"
        The start state's argument name.

    Raises
    ------
    TypeError
        If ``model`` is not callable or ``x`` is not a float32/float64 array.
    ValueError
        If ``x`` has no axis or is not finite, or the grid has a point the method cannot use.
    """
    if not callable(model):
        raise TypeError(f"model must be callable (model(x, t) -> output), got {type(model).__name__}")
    check_array(name, x, min_ndim=1, finite=True)
    for p in grid:
        if not (p.alpha == 0.0 and p.sigma > 0.0):
            continue
        if needs in ("lambda", "log_alpha"):
            what = "the half log-SNR lambda = log(alpha / sigma)" if needs == "lambda" else "log alpha"
            raise ValueError(f"{who}: the grid has t = {p.t}, where alpha = 0 (zero terminal SNR): {what} "
                             f"is -inf there, so this method cannot step from it; start the "
                             f"grid below it (e.g. timesteps[1:]) or use ddpm/ddim with prediction_type "
                             f"'v_prediction' or 'sample'")
        if needs == "x0" and prediction_type in X0_UNDEFINED_AT_ALPHA_ZERO:
            raise ValueError(f"{who}: prediction_type {prediction_type!r} gives no x_0 at t = {p.t}, where alpha = 0 "
                             f"(zero terminal SNR): x0_hat = (x - sigma eps_hat) / alpha divides by alpha = 0; use a "
                             f"'v_prediction' or 'sample' model, or start the grid below t = {p.t}")
    return x


def check_step_arrays(**arrays):
    """Each keyword array must be a real floating array (float32/float64) with a batch axis
    (TypeError/ValueError naming it): a step function's cheap entry check (no finiteness
    pass, issue 19's rule for per-step code).  None values are skipped."""
    for name, a in arrays.items():
        if a is not None:
            check_array(name, a, min_ndim=1)


def check_x0_defined(schedule, t, prediction_type, who):
    """ValueError, saying why, when ``prediction_type`` (eps or score) gives no x_0 at a
    timestep ``t`` of the Schedule where alpha = 0 (zero terminal SNR): the step's
    counterpart of :func:`check_start`.  Reads the host table only (cheap)."""
    if prediction_type not in X0_UNDEFINED_AT_ALPHA_ZERO or schedule.sqrt_alpha_bars[-1] > 0.0:
        return
    tt = np.asarray(to_numpy(t) if hasattr(t, "shape") else t).reshape(-1)
    zero = tt[schedule.sqrt_alpha_bars[tt] == 0.0]
    if zero.size:
        raise ValueError(f"{who}: prediction_type {prediction_type!r} gives no x_0 at t = {int(zero[0])}, where "
                         f"alpha = 0 (zero terminal SNR): x0_hat = (x - sigma eps_hat) / alpha divides by alpha = 0; "
                         f"use a 'v_prediction' or 'sample' model there")


def check_timestep_arg(name, t):
    """``t`` must be an integer timestep: a Python/NumPy int (not a bool) or an integer array
    (TypeError naming ``name`` otherwise); the range is the schedule's check."""
    if is_int_scalar(t):
        return t
    if hasattr(t, "shape") and hasattr(t, "dtype") and not isinstance(t, np.generic):
        check_array(name, t, dtype="int", allow_empty=True)
        return t
    raise TypeError(f"{name} must be an integer timestep or an integer array, got {type(t).__name__} {t!r}")


def check_time(name, t):
    """A model time: an int index (not a bool) or a finite float; TypeError/ValueError
    naming ``name`` otherwise."""
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number (an int index or a float time), got {type(t).__name__} {t!r}")
    if not math.isfinite(t):
        raise ValueError(f"{name} = {t!r} is not finite")
    return t


def check_level(name, value, *, low=0.0):
    """A real number >= ``low`` that may be +inf (e.g. EDM's s_tmax); NaN, -inf, bools and
    non-numbers are refused naming ``name`` (:func:`refdiff._validate.check_finite_scalar`)."""
    if isinstance(value, (float, np.floating)) and value == math.inf:
        return math.inf
    return check_finite_scalar(name, value, low=low)


def check_noise(z, x, who):
    """A noise array of x's shape and a float dtype (TypeError if missing or not a float32/
    float64 array, ValueError if misshaped)."""
    if z is None:
        raise TypeError(f"{who} needs an explicit standard normal noise array of x's shape at this step")
    check_array("noise", z, allow_empty=True)
    if tuple(z.shape) != tuple(x.shape):
        raise ValueError(f"noise has shape {tuple(z.shape)}, expected x's shape {tuple(x.shape)}")
    return z


def draw_noise(noise, x, who):
    """One draw ``noise(x)`` of a loop's noise callable, checked."""
    if noise is None:
        raise TypeError(f"method {who!r} is stochastic and needs noise (pass rng= to refdiff.sample)")
    return check_noise(noise(x), x, who)


def end_step(i, t, x, x0_hat, callback=None, project=None, path=(1.0, 0.0)):
    """The end of step i of every loop: check x is finite, apply ``project(i, t, x_vp)`` and
    then ``callback(i, t, x_vp, x0_hat)`` (module docstring); returns the state in the loop's
    coordinates.  ``path`` = (a, b): the loop's state x is on the path a x_0 + b eps at the new
    point (VP: a^2 + b^2 = 1, no conversion; sigma space (1, s); flow (1 - u, u)).

    Parameters
    ----------
    i : int
        The step index.
    t : int, float or None
        The model time of the step's start point.
    x : array
        The state after the step, in the loop's coordinates.
    x0_hat : array
        The x_0 prediction the step used.
    callback : callable, optional
        ``callback(i, t, x_vp, x0_hat)``; its result is ignored.
    project : callable, optional
        ``project(i, t, x_vp) -> x_vp``, of the state's shape, finite.
    path : tuple of float, default (1.0, 0.0)
        (a, b), the loop's path coefficients at the new point.

    Returns
    -------
    array
        The (possibly projected) state in the loop's coordinates.

    Raises
    ------
    TypeError
        If a hook is neither callable nor None.
    ValueError
        If ``project`` returns an array of the wrong shape (or no array).
    FloatingPointError
        If ``x`` or the output of ``project`` is not finite.
    """
    check_int("i", i, min=0)
    check_array("x", x)
    if x0_hat is not None:
        check_array("x0_hat", x0_hat)
        check_finite(x0_hat, "x0_hat (the step's x_0 prediction)", f"step {i} (t = {t})")
    check_finite(x, "sampler state x", f"step {i} (t = {t})")
    if x0_hat is not None:
        check_same_shape(x=x, x0_hat=x0_hat)
    for name, hook in (("project", project), ("callback", callback)):
        if hook is not None and not callable(hook):
            raise TypeError(f"{name} must be callable ({name}(i, t, x{', x0_hat' if name == 'callback' else ''})) "
                            f"or None, got {type(hook).__name__}")
    a, b = path
    if project is not None:
        y = project(i, t, to_vp(x, a, b))
        if not hasattr(y, "shape") or tuple(y.shape) != tuple(x.shape):
            shape = tuple(y.shape) if hasattr(y, "shape") else type(y).__name__
            raise ValueError(f"project returned shape {shape} at step {i} (t = {t}); expected the state's "
                             f"shape {tuple(x.shape)}")
        check_finite(y, "project output", f"step {i} (t = {t})")
        x = from_vp(y, a, b)
    if callback is not None:
        callback(i, t, to_vp(x, a, b), x0_hat)
    return x

