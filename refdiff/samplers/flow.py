"""Flow matching / rectified-flow ODE sampling (Euler, midpoint, RK4), MATH.md chapter 11.

**Time convention.**  The rectified-flow path is x_t = (1 - t) x_0 + t eps with t = 0 data
and t = 1 noise (the same end as every other continuous time in refdiff), velocity
u = dx_t/dt = eps - x_0, MATH.md (11.7).  Many flow-matching codes use t = 0 noise,
x_t = t x_0 + (1 - t) eps, u = x_0 - eps; pass ``time_convention="t0_noise"`` to use such a
model and grid as they are (internally s = 1 - t and dx/ds = -u).

Two kinds of model:

* ``prediction_type="velocity"``: a flow model ``model(x, t) -> u``; ``schedule`` is None and
  ``timesteps`` are flow times in [0, 1], strictly decreasing towards 0 (t0_data) or
  strictly increasing towards 1 (t0_noise); x is the state at ``timesteps[0]``.
* any VP prediction type ("epsilon", "sample", "v_prediction", "score") with a ``Schedule``
  or continuous VP: the model is turned into a rectified-flow velocity by
  :func:`velocity_from_vp_model` (the VP point of equal SNR, MATH.md (11.10)); the grid and
  the returned state are in VP coordinates, as for every other sampler.
"""

from __future__ import annotations

import math

from ..parameterization import PREDICTION_TYPES, eps_x0_from_velocity, velocity_from_eps_x0
from .common import (call_model, check_args, check_schedule, check_start, end_step, flow_time, make_grid,
                     point_at_lambda, predict, to_vp)

__all__ = [
    "TIME_CONVENTIONS",
    "rectified_flow_alpha_sigma",
    "flow_euler_step",
    "flow_midpoint_step",
    "flow_rk4_step",
    "velocity_from_vp_model",
    "eps_x0_from_flow_velocity",
    "flow_euler",
    "flow_midpoint",
    "flow_rk4",
]

TIME_CONVENTIONS = ("t0_data", "t0_noise")


@check_args(coefs=("t",))
def rectified_flow_alpha_sigma(t, time_convention="t0_data"):
    """(alpha_t, sigma_t, d alpha/dt, d sigma/dt) of the rectified-flow path, MATH.md (11.7):
    (1 - t, t, -1, 1) with t = 0 data; (t, 1 - t, 1, -1) with ``time_convention="t0_noise"``.

    Parameters
    ----------
    t : float or array
        The flow time(s).
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        Which end t = 0 is.

    Returns
    -------
    alpha, sigma, dalpha_dt, dsigma_dt : float or array

    Raises
    ------
    ValueError
        If ``time_convention`` is unknown.
    """
    if time_convention == "t0_data":
        return 1.0 - t, t, -1.0, 1.0
    if time_convention == "t0_noise":
        return t, 1.0 - t, 1.0, -1.0
    raise ValueError(f"unknown time_convention {time_convention!r}; valid: 't0_data' (t = 0 data), 't0_noise'")


# ----------------------------------------------------------------------------- steps
@check_args(arrays=("x", "u"), scalars=("t", "t_next"), same_shape=("x", "u"))
def flow_euler_step(x, u, t, t_next):
    """Euler step of dx/dt = u, MATH.md (11.8): x + (t_next - t) u.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x : array (N, ...)
        The state at ``t``.
    u : array (N, ...)
        The velocity at (x, t).
    t, t_next : float
        The current and the next time.

    Returns
    -------
    array (N, ...)
        The state at ``t_next``.
    """
    return x + (float(t_next) - float(t)) * u


@check_args(callables=("velocity",), arrays=("x",), scalars=("t", "t_next"))
def flow_midpoint_step(velocity, x, t, t_next):
    """Explicit midpoint step, MATH.md (11.9): x + dt u(x + dt/2 u(x, t), t + dt/2);
    ``velocity(x, t)`` takes a float time.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t) -> u`` with a float time.
    x : array (N, ...)
        The state at ``t``.
    t, t_next : float
        The current and the next time.

    Returns
    -------
    array (N, ...)
        The state at ``t_next``.
    """
    dt = float(t_next) - float(t)
    u1 = velocity(x, float(t))
    return x + dt * velocity(x + (0.5 * dt) * u1, float(t) + 0.5 * dt)


@check_args(callables=("velocity",), arrays=("x",), scalars=("t", "t_next"))
def flow_rk4_step(velocity, x, t, t_next):
    """Classical RK4 step of dx/dt = velocity(x, t), MATH.md (11.6).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t) -> u`` with a float time.
    x : array (N, ...)
        The state at ``t``.
    t, t_next : float
        The current and the next time.

    Returns
    -------
    array (N, ...)
        The state at ``t_next``.
    """
    from .sde import rk4_step

    return rk4_step(velocity, x, float(t), float(t_next) - float(t))


@check_args(arrays=("x_t", "u"), scalars=("t",), same_shape=("x_t", "u"))
def eps_x0_from_flow_velocity(x_t, u, t, time_convention="t0_data"):
    """(eps_hat, x0_hat) from a rectified-flow velocity at time t, MATH.md (4.8) with (11.7):
    for t = 0 data, x0 = x_t - t u and eps = x_t + (1 - t) u.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_t : array (N, ...)
        The state on the rectified-flow path.
    u : array (N, ...)
        The velocity at (x_t, t).
    t : float
        The flow time.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        Which end t = 0 is.

    Returns
    -------
    eps_hat, x0_hat : arrays (N, ...)

    Raises
    ------
    ValueError
        If ``time_convention`` is unknown.
    """
    a, s, da, ds = rectified_flow_alpha_sigma(float(t), time_convention)
    return eps_x0_from_velocity(x_t, u, a, s, da, ds)


# ----------------------------------------------------------------------------- VP models
def _vp_point(schedule, u, known):
    """The VP grid point of equal SNR at flow time u (t = 0 data), MATH.md (11.10)."""
    return known[u] if u in known else point_at_lambda(schedule, math.log1p(-u) - math.log(u))


def velocity_from_vp_model(model, schedule, prediction_type="epsilon"):
    """A VP model (eps / x_0 / v / score prediction on ``schedule``) as a rectified-flow
    velocity model ``v(y, s)`` (t = 0 data; ``s`` a float flow time in (0, 1)), MATH.md (11.10):
    the VP point of equal SNR, lambda = log((1 - s) / s), state x = y (alpha + sigma), and
    u = eps_hat - x0_hat (MATH.md (4.7) with alpha' = -1, sigma' = 1).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type`` on ``schedule``.
    schedule : Schedule or continuous VP
        The model's schedule.
    prediction_type : str, default "epsilon"
        What the model predicts.

    Returns
    -------
    callable
        ``velocity(y, s) -> u``.
    """
    if not callable(model):
        raise TypeError(f"model must be callable (model(x, t) -> output), got {type(model).__name__}")
    check_schedule(schedule)
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")

    def velocity(y, s):
        p = _vp_point(schedule, float(s), {})
        eps_hat, x0_hat = predict(model, y * (p.alpha + p.sigma), p, prediction_type)
        return velocity_from_eps_x0(eps_hat, x0_hat, -1.0, 1.0)

    return velocity


# ----------------------------------------------------------------------------- loops
def _flow_setup(model, x, schedule, timesteps, prediction_type, time_convention, final_sigmas_type, sigmas,
                interpolation):
    """(y, grid, us, vel): the start state in flow coordinates, the grid, its flow times u
    (t = 0 data) and ``vel(y, u, i)``, the velocity dy/du at flow time u (MATH.md (11.7), (11.10))."""
    rectified_flow_alpha_sigma(0.5, time_convention)  # validates time_convention
    if prediction_type == "velocity":
        if schedule is not None:
            raise TypeError(f"a velocity model takes schedule=None (the rectified-flow path), "
                            f"got {type(schedule).__name__}")
        if sigmas is not None:
            raise TypeError("sigmas applies to a VP model's schedule; a velocity model takes flow times (timesteps)")
        grid = make_grid(None, timesteps, interpolation=interpolation, time_convention=time_convention)
        check_start(model, x, grid, "flow")
        sign = 1.0 if time_convention == "t0_data" else -1.0  # dy/du = sign * the model's velocity

        def vel(y, u, i):
            return sign * call_model(model, y, u if sign > 0 else 1.0 - u, step=i)

        return x, grid, [p.sigma for p in grid], vel
    if time_convention != "t0_data":
        raise ValueError("time_convention applies to velocity models only")
    grid = make_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                     interpolation=interpolation)
    check_start(model, x, grid, "flow", prediction_type=prediction_type, needs="x0")
    us = [flow_time(p.alpha, p.sigma) for p in grid]
    known = dict(zip(us, grid))

    def vel(y, u, i):
        p = _vp_point(schedule, u, known)
        eps_hat, x0_hat = predict(model, y * (p.alpha + p.sigma), p, prediction_type, i)
        return velocity_from_eps_x0(eps_hat, x0_hat, -1.0, 1.0)

    return x / (grid[0].alpha + grid[0].sigma), grid, us, vel


def _out(y, u, prediction_type):
    """The result: flow coordinates for a velocity model, VP coordinates for a VP model."""
    return y if prediction_type == "velocity" else to_vp(y, 1.0 - u, u)


_DOC = """

    Notes
    -----
    ``prediction_type="velocity"``: ``schedule=None``, flow times ``timesteps`` (module
    docstring, ``time_convention``); returns the state at the last time in flow coordinates.
    VP prediction types: a Schedule / continuous VP and its grid (:func:`refdiff.make_grid`,
    also ``sigmas=``); a last step to sigma = 0 is an Euler step, which returns x0_hat
    exactly; returns VP coordinates.  Deterministic.  Hooks ``callback(i, t_i, x, x0_hat)``
    and ``project`` after each step in VP coordinates (x_vp = y / sqrt((1-u)^2 + u^2)), with
    x0_hat = y - u v of the step's first evaluation."""


def flow_euler(model, x, schedule, timesteps=None, *, prediction_type="velocity", noise=None, callback=None,
               project=None, time_convention="t0_data", final_sigmas_type=None, sigmas=None,
               interpolation="log_alpha"):
    """Rectified-flow ODE sampling with Euler steps, MATH.md (11.8): one evaluation per step.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output``: a velocity model (``prediction_type="velocity"``, t the flow
        time of ``time_convention`` as a (N,) float64 array) or a VP model of ``prediction_type``.
    x : array (N, ...)
        The start state: flow coordinates for a velocity model, VP coordinates otherwise.
    schedule : Schedule, continuous VP or None
        None for a velocity model, else the VP model's schedule.
    timesteps : array_like or Grid, optional
        Flow times (velocity model) or the VP grid (:func:`refdiff.make_grid`).
    prediction_type : str, default "velocity"
        "velocity" or one of refdiff.parameterization's prediction types.
    noise : callable, optional
        Ignored (the loop is deterministic); accepted for the common loop signature.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        The time convention of a velocity model (must be "t0_data" for a VP model).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).

    Returns
    -------
    array (N, ...)
        The state at the last grid point (notes).

    Raises
    ------
    TypeError
        If a velocity model is given a schedule (and as :func:`refdiff.make_grid`).
    ValueError
        If ``time_convention`` is invalid (and as :func:`refdiff.make_grid`).
    """
    y, grid, us, vel = _flow_setup(model, x, schedule, timesteps, prediction_type, time_convention,
                                   final_sigmas_type, sigmas, interpolation)
    for i in range(len(us) - 1):
        v = vel(y, us[i], i)
        x0_hat = y - us[i] * v  # (11.7): x_0 = y - u v
        y = flow_euler_step(y, v, us[i], us[i + 1])
        y = end_step(i, grid[i].t, y, x0_hat, callback, project, path=(1.0 - us[i + 1], us[i + 1]))
    return _out(y, us[-1], prediction_type)


def flow_midpoint(model, x, schedule, timesteps=None, *, prediction_type="velocity", noise=None, callback=None,
                  project=None, time_convention="t0_data", final_sigmas_type=None, sigmas=None,
                  interpolation="log_alpha"):
    """Rectified-flow ODE sampling with explicit midpoint steps, MATH.md (11.9): two
    evaluations per step (one on a VP model's last step to sigma = 0).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output``: a velocity model (``prediction_type="velocity"``, t the flow
        time of ``time_convention`` as a (N,) float64 array) or a VP model of ``prediction_type``.
    x : array (N, ...)
        The start state: flow coordinates for a velocity model, VP coordinates otherwise.
    schedule : Schedule, continuous VP or None
        None for a velocity model, else the VP model's schedule.
    timesteps : array_like or Grid, optional
        Flow times (velocity model) or the VP grid (:func:`refdiff.make_grid`).
    prediction_type : str, default "velocity"
        "velocity" or one of refdiff.parameterization's prediction types.
    noise : callable, optional
        Ignored (the loop is deterministic); accepted for the common loop signature.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        The time convention of a velocity model (must be "t0_data" for a VP model).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).

    Returns
    -------
    array (N, ...)
        The state at the last grid point (notes).

    Raises
    ------
    TypeError
        If a velocity model is given a schedule (and as :func:`refdiff.make_grid`).
    ValueError
        If ``time_convention`` is invalid (and as :func:`refdiff.make_grid`).
    """
    y, grid, us, vel = _flow_setup(model, x, schedule, timesteps, prediction_type, time_convention,
                                   final_sigmas_type, sigmas, interpolation)
    for i in range(len(us) - 1):
        v = vel(y, us[i], i)
        x0_hat = y - us[i] * v
        if grid[i + 1].sigma == 0.0 and prediction_type != "velocity":
            y = flow_euler_step(y, v, us[i], us[i + 1])  # to u = 0: exactly x0_hat
        else:
            first = [v]  # the first evaluation is v: reuse it
            y = flow_midpoint_step(lambda yy, uu: first.pop() if first else vel(yy, uu, i), y, us[i], us[i + 1])
        y = end_step(i, grid[i].t, y, x0_hat, callback, project, path=(1.0 - us[i + 1], us[i + 1]))
    return _out(y, us[-1], prediction_type)


def flow_rk4(model, x, schedule, timesteps=None, *, prediction_type="velocity", noise=None, callback=None,
             project=None, time_convention="t0_data", final_sigmas_type=None, sigmas=None,
             interpolation="log_alpha"):
    """Rectified-flow ODE sampling with classical RK4, MATH.md (11.6): four evaluations per
    step (one on a VP model's last step to sigma = 0).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output``: a velocity model (``prediction_type="velocity"``, t the flow
        time of ``time_convention`` as a (N,) float64 array) or a VP model of ``prediction_type``.
    x : array (N, ...)
        The start state: flow coordinates for a velocity model, VP coordinates otherwise.
    schedule : Schedule, continuous VP or None
        None for a velocity model, else the VP model's schedule.
    timesteps : array_like or Grid, optional
        Flow times (velocity model) or the VP grid (:func:`refdiff.make_grid`).
    prediction_type : str, default "velocity"
        "velocity" or one of refdiff.parameterization's prediction types.
    noise : callable, optional
        Ignored (the loop is deterministic); accepted for the common loop signature.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        The time convention of a velocity model (must be "t0_data" for a VP model).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).

    Returns
    -------
    array (N, ...)
        The state at the last grid point (notes).

    Raises
    ------
    TypeError
        If a velocity model is given a schedule (and as :func:`refdiff.make_grid`).
    ValueError
        If ``time_convention`` is invalid (and as :func:`refdiff.make_grid`).
    """
    from .sde import rk4_step

    y, grid, us, vel = _flow_setup(model, x, schedule, timesteps, prediction_type, time_convention,
                                   final_sigmas_type, sigmas, interpolation)
    for i in range(len(us) - 1):
        v = vel(y, us[i], i)
        x0_hat = y - us[i] * v
        if grid[i + 1].sigma == 0.0 and prediction_type != "velocity":
            y = flow_euler_step(y, v, us[i], us[i + 1])  # to u = 0: exactly x0_hat
        else:
            first = [v]  # k1 is v: reuse it instead of a second evaluation at (y, u_i)
            y = rk4_step(lambda yy, uu: first.pop() if first else vel(yy, uu, i), y, us[i], us[i + 1] - us[i])
        y = end_step(i, grid[i].t, y, x0_hat, callback, project, path=(1.0 - us[i + 1], us[i + 1]))
    return _out(y, us[-1], prediction_type)


for _f in (flow_euler, flow_midpoint, flow_rk4):
    _f.__doc__ += _DOC

METHODS = {"flow_euler": flow_euler, "flow_midpoint": flow_midpoint, "flow_rk4": flow_rk4}
