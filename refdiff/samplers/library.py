"""The grids of other libraries, as :class:`~refdiff.Grid` objects every loop accepts
(MATH.md (2.17)): diffusers 0.42.1's ``set_timesteps`` of EulerDiscreteScheduler,
DPMSolverMultistepScheduler and DPMSolverSinglestepScheduler, and the outer grid and
orders of the DPM-Solver release's singlestep solver.  Each reproduces that library's
arithmetic in float64 (the libraries store their grids in float32: compare at float32
precision, or run them in float64 as ``tests/test_compare_diffusers_core.py`` does).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_int
from ..schedules import Schedule, _ContinuousVP, exponential_sigmas, karras_sigmas, time_grid
from ..schedules import timesteps as refdiff_timesteps
from .common import ZERO, Grid, GridPoint, vp_from_ve_sigma

__all__ = ["library_grid", "LIBRARY_SCHEDULERS", "diffusers_init_scale", "singlestep_orders",
           "dpm_solver_release_singlestep_grid"]

LIBRARY_SCHEDULERS = ("euler", "dpmsolver_multistep", "dpmsolver_singlestep")


def _sigma_to_t(s, log_sigmas):
    """diffusers' ``_sigma_to_t``: the fractional timestep linear in log sigma between the
    schedule's levels, clipped to [0, T-1] (MATH.md (9.9), ``interpolation="log_sigma"``)."""
    return float(np.interp(math.log(max(s, 1e-10)), log_sigmas, np.arange(log_sigmas.shape[0], dtype=np.float64)))


def _point(t, s):
    if s == 0.0:
        return ZERO
    a, sg = vp_from_ve_sigma(float(s))
    return GridPoint(t, a, sg)


def _check(schedule, n, scheduler, spacing):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule (the libraries' discrete schedules), got "
                        f"{type(schedule).__name__}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= schedule.T:
        raise ValueError(f"n = {n!r} steps must be an integer in [1, T] = [1, {schedule.T}]")
    if scheduler not in LIBRARY_SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; valid: {', '.join(LIBRARY_SCHEDULERS)}")
    if spacing not in ("linspace", "leading", "trailing"):
        raise ValueError(f"unknown timestep_spacing {spacing!r}; valid: 'linspace', 'leading', 'trailing'")


def library_grid(schedule, n, scheduler="euler", *, timestep_spacing="linspace", steps_offset=0,
                 use_karras_sigmas=False, use_exponential_sigmas=False, final_sigmas_type="zero"):
    """The grid of diffusers 0.42.1's ``<Scheduler>.set_timesteps(n)`` for a discrete
    ``schedule`` (its ``alphas_cumprod``), MATH.md (2.17): n + 1 points (model time, alpha,
    sigma) with (alpha, sigma) from the scheduler's VE level s, alpha = 1/sqrt(1 + s^2).

    ``scheduler="euler"`` (EulerDiscreteScheduler): "linspace" float timesteps
    linspace(0, T-1, n) with s linear in the fractional t; "leading"/"trailing" as
    :func:`refdiff.timesteps`; ``use_karras_sigmas``: Karras levels (rho = 7) between the
    spaced grid's end levels, model times from :func:`refdiff.sigma_to_time` "log_sigma"
    (fractional).  ``"dpmsolver_multistep"`` (DPMSolverMultistepScheduler; also
    UniPCMultistep's definitions): "linspace" round(linspace(0, T-1, n + 1)) reversed without
    its last (0), "leading" k (T // (n + 1)) + steps_offset for k = n..1, "trailing" as Euler's;
    ``use_karras_sigmas``: Karras levels over the schedule's full range, times "log_sigma"
    rounded to integers.  ``use_exponential_sigmas``: levels uniform in log sigma (MATH.md
    (2.18)) over the same range as Karras, times "log_sigma": fractional for Euler; for the
    DPMSolver schedulers not rounded but truncated to integers (floor) when diffusers casts
    them to int64.  ``"dpmsolver_singlestep"``: its "linspace" (the
    only spacing), Karras and exponential as the multistep scheduler.  ``final_sigmas_type``: the last level 0 ("zero") or
    the schedule's sigma at index 0 ("sigma_min").  Start states: see
    :func:`diffusers_init_scale`.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule.
    n : int
        The number of steps, in [1, T].
    scheduler : {"euler", "dpmsolver_multistep", "dpmsolver_singlestep"}, default "euler"
        The diffusers scheduler.
    timestep_spacing : {"linspace", "leading", "trailing"}, default "linspace"
        The scheduler's spacing.
    steps_offset : int, default 0
        The scheduler's ``steps_offset`` ("leading").
    use_karras_sigmas : bool, default False
        Karras levels.
    use_exponential_sigmas : bool, default False
        Levels uniform in log sigma (excludes ``use_karras_sigmas``).
    final_sigmas_type : {"zero", "sigma_min"}, default "zero"
        The last level.

    Returns
    -------
    Grid
        n + 1 points.

    Raises
    ------
    TypeError
        If ``schedule`` is not a Schedule.
    ValueError
        If ``n``, ``scheduler``, ``timestep_spacing`` or ``final_sigmas_type`` is invalid, or
        both sigma options are set.
    """
    _check(schedule, n, scheduler, timestep_spacing)
    check_bool("use_karras_sigmas", use_karras_sigmas)
    check_bool("use_exponential_sigmas", use_exponential_sigmas)
    check_int("steps_offset", steps_offset, min=0)
    if steps_offset >= schedule.T:
        raise ValueError(f"steps_offset = {steps_offset} is outside [0, T - 1] = [0, {schedule.T - 1}]")
    if use_karras_sigmas and use_exponential_sigmas:
        raise ValueError("use_karras_sigmas and use_exponential_sigmas exclude each other (as in diffusers)")
    T = schedule.T
    sig_table = np.sqrt((1.0 - schedule.alpha_bars) / schedule.alpha_bars)
    log_sigmas = np.log(sig_table)
    if scheduler == "euler":
        if timestep_spacing == "linspace":
            ts = np.linspace(0, T - 1, n)[::-1].copy()
        else:
            ts = refdiff_timesteps(T, n, timestep_spacing, steps_offset).astype(np.float64)
        sig = np.interp(ts, np.arange(T, dtype=np.float64), sig_table)  # linear in fractional t
        if use_karras_sigmas or use_exponential_sigmas:
            sig = (karras_sigmas if use_karras_sigmas else exponential_sigmas)(n, float(sig[-1]), float(sig[0]))
            ts = np.array([_sigma_to_t(s, log_sigmas) for s in sig])
        fractional = timestep_spacing == "linspace" or use_karras_sigmas or use_exponential_sigmas
        times = [float(t) if fractional else int(t) for t in ts]
    else:
        if timestep_spacing == "linspace" or scheduler == "dpmsolver_singlestep":
            ts = np.round(np.linspace(0, T - 1, n + 1))[::-1][:-1].astype(np.int64)
        elif timestep_spacing == "leading":
            ts = (np.arange(n + 1, dtype=np.int64) * (T // (n + 1)))[::-1][:-1] + int(steps_offset)
        else:
            ts = refdiff_timesteps(T, n, "trailing")
        sig = sig_table[ts]
        if use_karras_sigmas:
            sig = karras_sigmas(n, float(sig_table[0]), float(sig_table[-1]))
            ts = np.round([_sigma_to_t(s, log_sigmas) for s in sig]).astype(np.int64)
        elif use_exponential_sigmas:  # times not rounded, but cast to int64: truncated (floor)
            sig = exponential_sigmas(n, float(sig_table[0]), float(sig_table[-1]))
            ts = np.floor([_sigma_to_t(s, log_sigmas) for s in sig]).astype(np.int64)
        times = [int(t) for t in ts]
    if final_sigmas_type not in ("zero", "sigma_min"):
        raise ValueError(f"unknown final_sigmas_type {final_sigmas_type!r}; valid: 'zero', 'sigma_min'")
    last = 0.0 if final_sigmas_type == "zero" else float(sig_table[0])
    return Grid([_point(t, float(s)) for t, s in zip(times, sig)] + [_point(None if last == 0 else 0, last)])


def diffusers_init_scale(timestep_spacing):
    """The ``init_scale`` of the sigma-space loops that reproduces diffusers 0.42.1's
    EulerDiscreteScheduler ``init_noise_sigma`` (MATH.md (9.10)): sqrt(s_max^2 + 1) ("vp") for
    "leading", s_max ("sigma_max") for "linspace" and "trailing".

    Parameters
    ----------
    timestep_spacing : {"linspace", "leading", "trailing"}
        The scheduler's spacing.

    Returns
    -------
    str
        "vp" or "sigma_max".

    Raises
    ------
    ValueError
        If ``timestep_spacing`` is unknown.
    """
    if timestep_spacing not in ("linspace", "leading", "trailing"):
        raise ValueError(f"unknown timestep_spacing {timestep_spacing!r}; valid: 'linspace', 'leading', 'trailing'")
    return "vp" if timestep_spacing == "leading" else "sigma_max"


def singlestep_orders(n, order, lower_order_final=False, final_zero=True):
    """diffusers 0.42.1 DPMSolverSinglestepScheduler's ``get_order_list``: the order of each
    of the n steps, in blocks 1, 2(, 3) that use the grid's own points as the stages
    (MATH.md (10.19)); with ``final_zero`` the last step is first order.

    Parameters
    ----------
    n : int
        The number of steps.
    order : {1, 2, 3}
        The solver order.
    lower_order_final : bool, default False
        diffusers' ``lower_order_final``.
    final_zero : bool, default True
        Make the last step first order (a final step to sigma = 0).

    Returns
    -------
    list of int
        The n orders.

    Raises
    ------
    ValueError
        If ``order`` is invalid or n is not a whole number of blocks (without
        ``lower_order_final``).
    """
    check_int("n", n, min=1)
    if n > 10**6:
        raise ValueError(f"n = {n} exceeds 10**6")
    check_int("order", order, min=1)
    check_bool("lower_order_final", lower_order_final)
    check_bool("final_zero", final_zero)
    if order not in (1, 2, 3):
        raise ValueError(f"order = {order!r} is out of range; valid orders: 1, 2, 3")
    if not lower_order_final:
        orders = list(range(1, order + 1)) * (n // order)
    elif order == 3:
        orders = [1, 2, 3] * (n // 3 - 1) + [1, 2, 1] if n % 3 == 0 else [1, 2, 3] * (n // 3) + [[1], [1, 2]][n % 3 - 1]
    elif order == 2:
        orders = [1, 2] * (n // 2 - 1) + [1, 1] if n % 2 == 0 else [1, 2] * (n // 2) + [1]
    else:
        orders = [1] * n
    if len(orders) != n:
        raise ValueError(f"n = {n} steps is not a whole number of order-{order} blocks (diffusers would fail too); "
                         f"use n divisible by {order} or lower_order_final=True")
    if final_zero:
        orders[-1] = 1
    return orders


def dpm_solver_release_singlestep_grid(vp, steps, order, skip_type="time_uniform", t_end=None):
    """(times, orders): the outer grid and per-step orders of the DPM-Solver release's
    ``singlestep`` sampler (``get_orders_and_timesteps_for_singlestep_solver``), MATH.md (10.19).
    ``steps`` model evaluations in K outer steps of order 3 (or 2) with a lower-order tail;
    for ``skip_type="logSNR"`` the K + 1 outer times are uniform in lambda, otherwise they are
    the points of the ``steps``-step grid at the cumulative orders (so each outer step of order
    k spans k inner steps of the uniform-in-t grid).

    Parameters
    ----------
    vp : continuous VP
        The schedule.
    steps : int
        The number of model evaluations.
    order : {1, 2, 3}
        The solver order.
    skip_type : {"time_uniform", "logSNR", "time_quadratic"}, default "time_uniform"
        The release's grid kind.
    t_end : float, optional
        The last time (:func:`refdiff.time_grid`'s default when None).

    Returns
    -------
    times : numpy.ndarray (K + 1,)
        The outer grid, decreasing.
    orders : list of int
        The K per-step orders.

    Raises
    ------
    ValueError
        If ``order`` or ``skip_type`` is invalid.
    """
    if not isinstance(vp, _ContinuousVP):
        raise TypeError(f"vp must be a continuous VP schedule (e.g. refdiff.LinearVP()), got {type(vp).__name__}")
    check_int("steps", steps, min=1)
    if steps > 10**6:
        raise ValueError(f"steps = {steps} exceeds 10**6")
    check_int("order", order, min=1)
    if order == 3:
        K = steps // 3 + 1
        orders = [3] * (K - 2) + [2, 1] if steps % 3 == 0 else [3] * (K - 1) + ([1] if steps % 3 == 1 else [2])
    elif order == 2:
        K = steps // 2 + (steps % 2)
        orders = [2] * (steps // 2) + ([1] if steps % 2 else [])
    elif order == 1:
        K, orders = steps, [1] * steps
    else:
        raise ValueError(f"order = {order!r} is out of range; valid orders: 1, 2, 3")
    kind = {"logSNR": "logSNR", "time_uniform": "time_uniform", "time_quadratic": "time_quadratic"}.get(skip_type)
    if kind is None:
        raise ValueError(f"unknown skip_type {skip_type!r}; valid: 'logSNR', 'time_uniform', 'time_quadratic'")
    if kind == "logSNR":
        return time_grid(vp, K, kind, t_end=t_end), orders
    inner = time_grid(vp, steps, kind, t_end=t_end)
    return inner[np.cumsum([0] + orders)], orders
