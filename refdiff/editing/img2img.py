"""Image-to-image (SDEdit), MATH.md chapter 17: noise the input to the start of the tail of
a sampling grid and run any refdiff sampler from there.

The ``strength`` rule of the widely used PyTorch library (diffusers' img2img pipelines,
``get_timesteps``): with an n-step grid, k = min(int(n * strength), n) steps are run,
starting at ``timesteps[n - k]`` (MATH.md (17.3)).  ``int()`` truncates the float64
product, so 100 x 0.29 runs 28 steps, not 29.  The run is the *tail* of the n-step grid
(not a new k-step grid).  At strength = 1 the run starts at ``timesteps[0]``, which for a
"leading" grid is not pure noise (981 for T = 1000, n = 50, steps_offset = 1: the image is
still mixed in with alpha = 0.076); ``strength_rule="exact_start"`` instead starts at model
time strength * (T - 1) (a continuous index between grid points; for a continuous VP the
time strength) followed by the grid points below it, and at strength = 1 from pure noise.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int, check_same_shape
from ..backend import array_namespace, check_rng, standard_normal
from ..samplers.common import Grid, ZERO, make_grid, point_at, flow_time, ve_sigma
from ..schedules import Schedule

__all__ = ["img2img_timesteps", "img2img_start", "img2img_grid", "img2img", "STRENGTH_RULES", "NOISE_SPACES"]

STRENGTH_RULES = ("library", "exact_start")
NOISE_SPACES = ("vp", "ve", "flow")


def check_strength(strength):
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.integer, np.floating)):
        raise TypeError(f"strength must be a number in [0, 1], got {strength!r}")
    if not (math.isfinite(float(strength)) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength = {strength!r} is outside [0, 1]")
    return float(strength)


def img2img_timesteps(timesteps, strength, *, order=1):
    """The library's strength rule, MATH.md (17.3): ``(tail, t_start)`` with
    k = min(int(n * strength), n) (``int`` of the float64 product), t_start = max(n - k, 0)
    and tail = timesteps[t_start * order:] (``order`` > 1 for grids that repeat each
    timestep, as the library's second-order schedulers do).  The tail may be empty
    (strength 0 or n * strength < 1); :func:`img2img` refuses that.

    Parameters
    ----------
    timesteps : array_like (n * order,)
        The sampling grid (1-D).
    strength : float
        In [0, 1].
    order : int, default 1
        How many times the grid repeats each timestep (>= 1).

    Returns
    -------
    tail : numpy.ndarray
        The timesteps that are run (may be empty).
    t_start : int
        The index of the first step run.

    Raises
    ------
    TypeError
        If ``strength`` is not a number.
    ValueError
        If ``strength`` is outside [0, 1], ``timesteps`` is not 1-D, or ``order`` is invalid.
    """
    strength = check_strength(strength)
    order = check_int("order", order, min=1)
    ts = _check_grid("timesteps", timesteps, order)
    n = ts.shape[0] // order
    k = min(int(n * strength), n)
    t_start = max(n - k, 0)
    return ts[t_start * order:], t_start


def img2img_start(x0, alpha, sigma, noise, space="vp"):
    """The noised start of an img2img run at the grid point (alpha, sigma), MATH.md (17.4),
    in the coordinates of ``space``: ``"vp"`` alpha x0 + sigma eps (DDPM/DDIM-type
    schedulers' ``add_noise``); ``"ve"`` x0 + s eps with s = sigma / alpha (Euler/Heun-type);
    ``"flow"`` (1 - u) x0 + u eps with u = sigma / (alpha + sigma) (flow matching's
    ``scale_noise``).  All three are the same point of the path (each divided by
    sqrt(a^2 + b^2) gives the VP state).  NaN and inf in ``x0`` and ``noise`` propagate:
    not checked.

    Parameters
    ----------
    x0 : array (N, ...)
        The input.
    alpha, sigma : float
        The start point's VP coefficients.
    noise : array (N, ...)
        Standard normal eps.
    space : {"vp", "ve", "flow"}, default "vp"
        The coordinates of the result.

    Returns
    -------
    array (N, ...)
        The noised start.

    Raises
    ------
    ValueError
        If ``space`` is unknown.
    """
    check_array("x0", x0)
    check_array("noise", noise)
    check_same_shape(x0=x0, noise=noise)
    alpha = check_finite_scalar("alpha", alpha, low=0.0)
    sigma = check_finite_scalar("sigma", sigma, low=0.0)
    check_choice("space", space, NOISE_SPACES)
    if space == "vp":
        return alpha * x0 + sigma * noise
    if space == "ve":
        return x0 + ve_sigma(alpha, sigma) * noise
    if space == "flow":
        u = flow_time(alpha, sigma)
        return (1.0 - u) * x0 + u * noise
    raise ValueError(f"unknown space {space!r}; valid: {', '.join(NOISE_SPACES)}")


def img2img_grid(schedule, timesteps, strength, *, strength_rule="library", sigmas=None):
    """The grid an img2img run samples on (a :class:`refdiff.Grid`) and whether its start
    is pure noise: the library tail (17.3), or the exact start (module docstring).

    Parameters
    ----------
    schedule : Schedule or continuous VP
        The model's schedule.
    timesteps : array_like
        The full sampling grid.
    strength : float
        In [0, 1].
    strength_rule : {"library", "exact_start"}, default "library"
        The start of the run.
    sigmas : array_like, optional
        A VE noise grid instead of ``timesteps`` (``"library"`` only).

    Returns
    -------
    grid : Grid
        The points the run visits.
    pure : bool
        Whether the start is pure noise (``"exact_start"`` at strength 1).

    Raises
    ------
    TypeError
        If ``strength`` is not a number.
    ValueError
        If ``strength`` or ``strength_rule`` is invalid, or the strength leaves no step.
    """
    strength = check_strength(strength)
    check_choice("strength_rule", strength_rule, STRENGTH_RULES)
    full = make_grid(schedule, None if sigmas is not None else timesteps, sigmas=sigmas)  # validates the grid
    if strength_rule == "library":
        if sigmas is not None:
            tail = img2img_timesteps(np.asarray(sigmas)[:-1], strength)[0]
            if tail.size == 0:
                raise ValueError(_no_step(strength, len(sigmas) - 1))
            return make_grid(schedule, None, sigmas=np.append(tail, np.asarray(sigmas)[-1])), False
        ts = np.asarray(timesteps)
        n = ts.shape[0] - (0 if isinstance(schedule, Schedule) else 1)
        tail, _ = img2img_timesteps(ts[:n], strength)
        if tail.size == 0:
            raise ValueError(_no_step(strength, n))
        return Grid(full[n - tail.size:]), False
    if strength == 0.0:
        raise ValueError(_no_step(strength, len(timesteps)))
    if isinstance(schedule, Schedule):
        t0 = strength * (schedule.T - 1)
        t0 = int(t0) if float(t0).is_integer() else t0
        below = [p for p in full if p.t is None or p.t < t0]
    else:
        t0 = strength
        below = [p for p in full if p.t < t0]
    start = point_at(schedule, t0)
    return Grid([start] + (below if below else [ZERO])), strength == 1.0


def _check_grid(name, timesteps, order=1):
    """A 1-D, non-empty, finite, non-negative grid (a list or array of integer timesteps or
    continuous times), strictly decreasing (each time repeated ``order`` times), as a NumPy
    array."""
    if isinstance(timesteps, (str, bytes)) or timesteps is None:
        raise TypeError(f"{name} must be a 1-D sequence of timesteps, got {type(timesteps).__name__}")
    ts = np.asarray(timesteps)
    if ts.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {ts.dtype}")
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)) or np.any(ts < 0) or np.any(np.diff(ts) > 0) or np.any(np.diff(ts[::order]) >= 0):
        rep = "" if order == 1 else f" (each time repeated {order} times)"
        raise ValueError(f"{name} must be finite, >= 0 and strictly decreasing{rep}, got {ts.tolist()}")
    return ts


def _no_step(strength, n):
    return (f"strength = {strength!r} leaves no step of the {n}-step grid (int({n} * {strength!r}) = "
            f"{int(n * strength)}); use a larger strength or more steps")


def img2img(model, x0, schedule, timesteps, strength, method, *, rng=None, noise=None, prediction_type="epsilon",
            strength_rule="library", repeats=1, mask=None, progress=False, **sample_options):
    """SDEdit, MATH.md (17.3), (17.4): noise ``x0`` to the start of :func:`img2img_grid`
    and sample with ``method`` (any of :func:`refdiff.sampler_methods`) on the rest.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x0 : array (N, ...)
        The input images (finite).
    schedule : Schedule or continuous VP
        The model's schedule.
    timesteps : array_like
        The full n-step sampling grid (:func:`refdiff.make_grid`).
    strength : float
        In [0, 1]; the fraction of the grid that is run.
    method : str
        A sampler of :func:`refdiff.sampler_methods`.
    rng : numpy.random.Generator, optional
        The source of every draw (the start noise, then the sampler's draws in its
        documented order); give either ``rng`` or ``noise``.
    noise : callable, optional
        ``noise(like)``, standard normals of ``like``'s shape, instead of ``rng``.
    prediction_type : str, default "epsilon"
        What the model predicts.
    strength_rule : {"library", "exact_start"}, default "library"
        The start of the run (module docstring).
    repeats : int, default 1
        SDEdit's K, the edit applied K times, each starting from the last output.
    mask : array, optional
        Of x0's shape or broadcastable to it, 1 where x is edited (the diffusers meaning):
        after each step the kept region is reset to alpha' x0 + sigma' eps at the step's new
        point with the start's eps (as SDEdit's release does), and the output keeps x0
        exactly there.
    progress : bool, default False
        Show a progress bar.
    **sample_options
        Passed to :func:`refdiff.sample` (eta, variance_type, sigmas, ...).

    Returns
    -------
    array (N, ...)
        The edited images.

    Raises
    ------
    TypeError
        If both or neither of ``rng`` and ``noise`` are given, or ``strength`` is not a
        number.
    ValueError
        If ``strength``, ``strength_rule``, ``repeats`` or ``mask`` is invalid, or the
        strength leaves no step (and as :func:`refdiff.sample`).
    """
    check_array("x0", x0, min_ndim=1, finite=True)
    xp = array_namespace(x0)
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")
    noise = _noise_fn(rng, noise)
    repeats = check_int("repeats", repeats, min=1)
    check_bool("progress", progress)
    grid, pure = img2img_grid(schedule, timesteps, strength, strength_rule=strength_rule,
                              sigmas=sample_options.pop("sigmas", None))
    m = None if mask is None else _edit_mask(mask, x0)
    from ..samplers.loop import sample

    x = x0
    for _ in range(int(repeats)):
        z = noise(x)
        p = grid[0]
        x_t = z if pure else img2img_start(x, p.alpha, p.sigma, z)
        project = None
        if m is not None:
            def project(i, t, x, z=z):
                q = grid[i + 1]
                return m * x + (1.0 - m) * (q.alpha * x0 + q.sigma * z)
        x = sample(model, x_t, schedule, grid, method, prediction_type=prediction_type, noise=noise,
                   project=project, progress=progress, **sample_options)
        if m is not None:
            x = m * x + (1.0 - m) * x0
    return xp.asarray(x)


def _edit_mask(mask, x):
    xp = array_namespace(x)
    from .inpaint import check_mask

    return check_mask(mask, x, xp)


def _noise_fn(rng, noise):
    if rng is not None and noise is not None:
        raise TypeError("pass either rng or noise, not both")
    if rng is not None:
        rng = check_rng(rng)
        return lambda like: standard_normal(rng, like.shape, like)
    if noise is None:
        raise TypeError("editing draws noise: pass rng (a numpy Generator) or noise (a callable noise(like))")
    return noise
