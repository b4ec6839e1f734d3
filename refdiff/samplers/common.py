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

import math
from typing import NamedTuple

import numpy as np

from ..backend import array_namespace, check_finite, to_numpy
from ..parameterization import PREDICTION_TYPES, to_eps_x0
from ..schedules import InterpolatedVP, Schedule, _ContinuousVP, alpha_sigma

__all__ = ["GridPoint", "Grid", "make_grid", "point_at", "point_at_lambda", "point_at_sigma", "sigma_to_time",
           "to_vp", "from_vp", "ve_sigma", "flow_time", "vp_from_ve_sigma", "vp_from_flow_time", "end_step",
           "model_t", "call_model", "predict", "predict_eps_x0"]
# also public, not star-exported: ZERO, FINAL_SIGMAS_TYPES, INTERPOLATIONS, check_schedule,
# check_prediction_type, check_options, check_noise, draw_noise, is_int_scalar

FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
# model time of a noise level: refdiff's exact inverse (2.15); k-diffusion / diffusers Euler
# (linear in log sigma between the schedule's levels); diffusers DPMSolverMultistep (the same, rounded)
INTERPOLATIONS = ("log_alpha", "log_sigma", "log_sigma_round")


class GridPoint(NamedTuple):
    """One point of a sampler's grid: model time ``t`` and path coefficients alpha, sigma."""

    t: object
    alpha: float
    sigma: float

    @property
    def lam(self):
        """Half log-SNR lambda = log(alpha / sigma), MATH.md (10.1); +inf at sigma = 0."""
        return math.inf if self.sigma == 0.0 else math.log(self.alpha) - math.log(self.sigma)


class Grid(tuple):
    """A validated tuple of :class:`GridPoint` (build it with :func:`make_grid`)."""


ZERO = GridPoint(None, 1.0, 0.0)


# ----------------------------------------------------------------------------- coordinates
def ve_sigma(alpha, sigma):
    """VP -> sigma (VE) noise level s = sigma / alpha, MATH.md (9.1)."""
    return sigma / alpha


def vp_from_ve_sigma(s):
    """sigma (VE) -> VP: (alpha, sigma) = (1, s) / sqrt(1 + s^2), MATH.md (9.1)."""
    a = 1.0 / math.sqrt(1.0 + s * s)
    return a, s * a


def flow_time(alpha, sigma):
    """VP -> rectified-flow time of equal SNR, u = sigma / (alpha + sigma), MATH.md (11.10)."""
    return sigma / (alpha + sigma)


def vp_from_flow_time(u):
    """Flow time -> VP (alpha, sigma) of equal SNR: (1 - u, u) / sqrt((1 - u)^2 + u^2)."""
    r = math.hypot(1.0 - u, u)
    return (1.0 - u) / r, u / r


def to_vp(x, alpha, sigma):
    """The VP state of x on the path (alpha, sigma): x / sqrt(alpha^2 + sigma^2) (the same
    x_0, eps and SNR); identity on a VP point.  Sigma space: (alpha, sigma) = (1, s); flow:
    (1 - u, u)."""
    r = math.hypot(alpha, sigma)
    return x if r == 1.0 else x / r


def from_vp(x_vp, alpha, sigma):
    """Inverse of :func:`to_vp`: x_vp sqrt(alpha^2 + sigma^2)."""
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
    float continuous index (MATH.md (2.15)), or a float time of a continuous VP."""
    if isinstance(schedule, Schedule) and isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        k = int(t)
        return GridPoint(k, float(schedule.sqrt_alpha_bars[k]), float(schedule.sqrt_one_minus_alpha_bars[k]))
    check_schedule(schedule)
    a, s = alpha_sigma(schedule, float(t), np.zeros(1))
    return GridPoint(float(t), float(np.reshape(a, -1)[0]), float(np.reshape(s, -1)[0]))


def point_at_lambda(schedule, lam):
    """The point of half log-SNR ``lam`` (model time by the exact inverse of (2.15))."""
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
    lambda_t = -log s."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    if not check_schedule(schedule):
        return float(schedule.t_from_lambda(np.asarray(-math.log(s))))
    if interpolation == "log_alpha":
        return float(InterpolatedVP(schedule).t_from_lambda(np.asarray(-math.log(s)))) * schedule.T - 1.0
    tau = float(np.interp(math.log(s), np.log(schedule.sigmas), np.arange(schedule.T, dtype=np.float64)))
    return int(np.round(tau)) if interpolation == "log_sigma_round" else tau


def point_at_sigma(schedule, s, interpolation="log_alpha"):
    """The point of VE noise level ``s`` (:data:`ZERO` at s = 0): (alpha, sigma) from
    :func:`vp_from_ve_sigma`, the model time from :func:`sigma_to_time`."""
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
    """
    if isinstance(timesteps, Grid):
        return timesteps
    if schedule is None:
        return _flow_grid(timesteps, time_convention)
    discrete = check_schedule(schedule)
    if sigmas is not None:
        return _sigma_grid(schedule, sigmas, interpolation)
    if timesteps is None:
        raise TypeError("timesteps is None: pass a grid (timesteps) or sigmas")
    ts = _host_1d(timesteps, "timesteps")
    if discrete:
        if ts.size < 1:
            raise ValueError("steps = 0: timesteps is empty (steps must be >= 1)")
        if ts.dtype.kind not in "iu":
            raise TypeError(f"timesteps for a discrete Schedule must be integers, got dtype {ts.dtype}")
        if ts.min() < 0 or ts.max() > schedule.T - 1:
            bad = int(ts.min()) if ts.min() < 0 else int(ts.max())
            raise ValueError(f"timesteps contain {bad}, out of range [0, {schedule.T - 1}] (T = {schedule.T})")
    else:
        if ts.size < 2:
            raise ValueError(f"steps must be >= 1: a continuous grid needs >= 2 times, got {ts.size}")
        if ts.dtype.kind != "f":
            raise TypeError(f"timesteps for a continuous VP must be floats in (0, 1], got dtype {ts.dtype}")
        if ts.min() <= 0 or ts.max() > 1:
            raise ValueError(f"timesteps must lie in (0, 1] (t = 0 is data), got min {ts.min()!r}, max {ts.max()!r}")
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
        raise ValueError(f"steps must be >= 1: a flow grid needs >= 2 times, got {ts.size}")
    if ts.min() < 0 or ts.max() > 1:
        raise ValueError(f"flow times must lie in [0, 1], got min {ts.min()!r}, max {ts.max()!r}")
    u = ts if time_convention == "t0_data" else 1.0 - ts
    _decreasing(u, "timesteps", "strictly " + ("decreasing (t = 0 data)" if time_convention == "t0_data"
                                                else "increasing (t0_noise: t = 1 data)"))
    return Grid(GridPoint(float(t), 1.0 - float(v), float(v)) for t, v in zip(ts, u))


# ----------------------------------------------------------------------------- model calls
def model_t(t, x):
    """The time argument passed to a model: ``t`` repeated to shape (N,) in x's namespace;
    int64 for integer t, float64 otherwise."""
    xp = array_namespace(x)
    if isinstance(t, bool):
        raise TypeError("t must be a number, not a bool")
    if isinstance(t, int) or (hasattr(t, "dtype") and "int" in str(t.dtype)):
        return xp.full((x.shape[0],), int(t), dtype=xp.int64)
    return xp.full((x.shape[0],), float(t), dtype=xp.float64)


def call_model(model, x, t, *, step=None):
    """``model(x, model_t(t, x))`` with its output checked: same shape as ``x`` and finite.
    Errors name the step and the time, so a NaN inside a loop is reported where it appeared."""
    out = model(x, model_t(t, x))
    where = f"step {step} (t = {t})" if step is not None else f"t = {t}"
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(x.shape):
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"model returned shape {shape} at {where}; expected the input's shape {tuple(x.shape)}")
    check_finite(out, "model output", where)
    return out


def predict(model, x, p, prediction_type, step=None):
    """(eps_hat, x0_hat) of the model at the VP state x on grid point ``p``, MATH.md (4.2),
    with the point's own (alpha, sigma)."""
    return to_eps_x0(call_model(model, x, p.t, step=step), x, p.alpha, p.sigma, prediction_type)


def predict_eps_x0(model, x, t, schedule, prediction_type="epsilon", *, step=None):
    """(eps_hat, x0_hat) at model time ``t`` of ``schedule`` (alpha, sigma from
    :func:`refdiff.alpha_sigma`), MATH.md (4.2)."""
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


def check_noise(z, x, who):
    """A noise array of x's shape (TypeError if missing, ValueError if misshaped)."""
    if z is None:
        raise TypeError(f"{who} needs an explicit standard normal noise array of x's shape at this step")
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
    point (VP: a^2 + b^2 = 1, no conversion; sigma space (1, s); flow (1 - u, u))."""
    check_finite(x, "sampler state", f"step {i} (t = {t})")
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
