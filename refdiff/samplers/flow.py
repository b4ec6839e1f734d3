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

import numpy as np

from ..backend import check_finite, to_numpy
from ..parameterization import eps_x0_from_velocity, velocity_from_eps_x0
from .common import call_model, predict_eps_x0
from .dpm_solver import grid_points

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


def rectified_flow_alpha_sigma(t, time_convention="t0_data"):
    """(alpha_t, sigma_t, d alpha/dt, d sigma/dt) of the rectified-flow path, MATH.md (11.7):
    (1 - t, t, -1, 1) with t = 0 data; (t, 1 - t, 1, -1) with ``time_convention="t0_noise"``."""
    if time_convention == "t0_data":
        return 1.0 - t, t, -1.0, 1.0
    if time_convention == "t0_noise":
        return t, 1.0 - t, 1.0, -1.0
    raise ValueError(f"unknown time_convention {time_convention!r}; valid: 't0_data' (t = 0 data), 't0_noise'")


# ----------------------------------------------------------------------------- steps
def flow_euler_step(x, u, t, t_next):
    """Euler step of dx/dt = u, MATH.md (11.8): x + (t_next - t) u."""
    return x + (float(t_next) - float(t)) * u


def flow_midpoint_step(velocity, x, t, t_next):
    """Explicit midpoint step, MATH.md (11.9): x + dt u(x + dt/2 u(x, t), t + dt/2);
    ``velocity(x, t)`` takes a float time."""
    dt = float(t_next) - float(t)
    u1 = velocity(x, float(t))
    return x + dt * velocity(x + (0.5 * dt) * u1, float(t) + 0.5 * dt)


def flow_rk4_step(velocity, x, t, t_next):
    """Classical RK4 step of dx/dt = velocity(x, t), MATH.md (11.6)."""
    from .sde import rk4_step

    return rk4_step(velocity, x, float(t), float(t_next) - float(t))


def eps_x0_from_flow_velocity(x_t, u, t, time_convention="t0_data"):
    """(eps_hat, x0_hat) from a rectified-flow velocity at time t, MATH.md (4.8) with (11.7):
    for t = 0 data, x0 = x_t - t u and eps = x_t + (1 - t) u."""
    a, s, da, ds = rectified_flow_alpha_sigma(float(t), time_convention)
    return eps_x0_from_velocity(x_t, u, a, s, da, ds)


# ----------------------------------------------------------------------------- VP models
def velocity_from_vp_model(model, schedule, prediction_type="epsilon"):
    """A VP model (eps / x_0 / v / score prediction on ``schedule``) as a rectified-flow
    velocity model ``v(y, s)`` (t = 0 data; ``s`` a float flow time in (0, 1)), MATH.md (11.10):
    the VP time of equal SNR, lambda = log((1 - s) / s), state x = y / sqrt((1-s)^2 + s^2),
    and u = eps_hat - x0_hat (MATH.md (4.7) with alpha' = -1, sigma' = 1)."""
    from .dpm_solver import _Axis

    axis = _Axis(schedule)

    def velocity(y, s):
        p = axis.at_lambda(math.log1p(-s) - math.log(s))
        return _vp_velocity(model, y, p, schedule, prediction_type, None)

    return velocity


def _vp_velocity(model, y, p, schedule, prediction_type, step):
    mt, a, s = p
    eps, x0 = predict_eps_x0(model, y * (a + s), mt, schedule, prediction_type, step=step)
    return velocity_from_eps_x0(eps, x0, -1.0, 1.0)


def _flow_time(p):
    return p[2] / (p[1] + p[2])  # s = sigma / (alpha + sigma): equal SNR, (11.10)


# ----------------------------------------------------------------------------- loops
def _flow_grid(timesteps, time_convention, who):
    ts = to_numpy(timesteps) if hasattr(timesteps, "shape") else np.asarray(timesteps, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"{who}: a flow grid needs >= 2 times (steps >= 1), got shape {ts.shape}")
    if not np.all(np.isfinite(ts)) or ts.min() < 0 or ts.max() > 1:
        raise ValueError(f"{who}: flow times must lie in [0, 1], got min {ts.min()!r}, max {ts.max()!r}")
    s = ts if time_convention == "t0_data" else 1.0 - ts
    if np.any(np.diff(s) >= 0):
        want = "decreasing (t = 0 data)" if time_convention == "t0_data" else "increasing (t0_noise: t = 1 data)"
        raise ValueError(f"{who}: flow times must be strictly {want}, got {ts.tolist()}")
    return [float(v) for v in ts]


def _flow_loop(who, order):
    def loop(model, x, schedule, timesteps, *, prediction_type="velocity", noise=None, callback=None,
             time_convention="t0_data", final_sigmas_type=None):
        rectified_flow_alpha_sigma(0.5, time_convention)  # validates time_convention
        if prediction_type == "velocity":
            if schedule is not None:
                raise TypeError(f"{who}: a velocity model takes schedule=None (the rectified-flow path), "
                                f"got {type(schedule).__name__}")
            ts = _flow_grid(timesteps, time_convention, who)
            sign = 1.0 if time_convention == "t0_data" else -1.0
            # internal time s (t = 0 data); the model sees its own time convention
            s_grid = [t if sign > 0 else 1.0 - t for t in ts]

            def vel(y, s, i=None):
                tm = s if sign > 0 else 1.0 - s
                return sign * call_model(model, y, tm, step=i)

            y = x
            pts = s_grid
        else:
            if time_convention != "t0_data":
                raise ValueError(f"{who}: time_convention applies to velocity models only")
            axis, vp_pts = grid_points(schedule, timesteps, final_sigmas_type, who)
            pts = [_flow_time(p) for p in vp_pts]
            y = x / (vp_pts[0][1] + vp_pts[0][2])  # x_VP = (alpha + sigma) y
            lookup = dict(zip(pts, vp_pts))

            def vel(y, s, i=None):
                p = lookup.get(s) or axis.at_lambda(math.log1p(-s) - math.log(s))
                return _vp_velocity(model, y, p, schedule, prediction_type, i)

        n = len(pts) - 1
        for i in range(n):
            s, s_next = pts[i], pts[i + 1]
            v_i = lambda yy, ss: vel(yy, ss, i)  # noqa: E731
            if order == 1 or s_next == 0.0 and prediction_type != "velocity":
                u = v_i(y, s)
                y = flow_euler_step(y, u, s, s_next)  # to s = 0 this returns x0_hat exactly
            elif order == 2:
                y = flow_midpoint_step(v_i, y, s, s_next)
            else:
                y = flow_rk4_step(v_i, y, s, s_next)
            check_finite(y, "sampler state", f"step {i} (t = {timesteps[i]})")
            if callback is not None:
                callback(i, timesteps[i], y, None)
        if prediction_type == "velocity":
            return y
        last = vp_pts[-1]
        return y * (last[1] + last[2])

    loop.__name__ = loop.__qualname__ = who
    loop.__doc__ = f"""Rectified-flow ODE sampling with the {['Euler', 'midpoint', 'RK4'][[1, 2, 4].index(order)]}
    method, MATH.md (11.7)-(11.10); {order} model evaluation(s) per step, deterministic (draws no
    noise).  ``prediction_type="velocity"``: ``schedule=None``, flow times ``timesteps`` (see the
    module docstring, ``time_convention``), returns the state at the last time.  VP prediction
    types: a ``Schedule`` / continuous VP and its grid (``final_sigmas_type`` as in
    :func:`refdiff.samplers.dpm_solver.grid_points`); the last step to sigma = 0 is an Euler step,
    which returns x0_hat exactly; returns VP coordinates.  ``callback(i, t_i, y_{{i+1}}, None)``
    with y in flow coordinates."""
    return loop


flow_euler = _flow_loop("flow_euler", 1)
flow_midpoint = _flow_loop("flow_midpoint", 2)
flow_rk4 = _flow_loop("flow_rk4", 4)

METHODS = {"flow_euler": flow_euler, "flow_midpoint": flow_midpoint, "flow_rk4": flow_rk4}
