"""``refdiff.sample``: one entry point for every sampler family.

It validates the arguments, builds the noise callable from ``rng``, applies classifier-free
guidance, shows a tqdm progress bar, and dispatches on the method name through the union
of the family modules' ``METHODS`` dicts (imported lazily, so a family that is still a
placeholder contributes nothing).

Grid and hooks: the contract of :mod:`refdiff.samplers.common` (``make_grid`` validates the
grid here and in every loop; ``project`` then ``callback`` after each step, in VP
coordinates).
"""

from __future__ import annotations

import importlib
import math

from .._validate import check_array, check_bool, check_choice, check_finite_scalar
from ..backend import check_rng, standard_normal
from ..guidance import GUIDANCE_CONVENTIONS
from ..parameterization import PREDICTION_TYPES
from .common import check_schedule, make_grid

__all__ = ["sample", "sampler_methods"]

_FAMILIES = ("ddpm", "ddim", "karras", "dpm_solver", "sde", "flow",
             "unipc", "deis", "pndm", "ancestral", "lcm")  # new samplers (issue 10)


def sampler_methods():
    """{method name: loop function} over every family module (imported on call)."""
    methods = {}
    for fam in _FAMILIES:
        mod = importlib.import_module(f"{__package__}.{fam}")
        methods.update(getattr(mod, "METHODS", {}))
    return methods


def sample(model, x_T, schedule, timesteps, method, *, prediction_type="epsilon", rng=None, guidance_scale=None,
           callback=None, project=None, y=None, null_label=None, guidance_convention="w", guidance_rescale=0.0,
           noise=None, progress=True, **method_options):
    """Sample x_0 from ``x_T`` with the sampler ``method`` (see :func:`sampler_methods`).

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type`` (a conditional model takes
        ``model(x, t, y)`` and is called so when ``y`` is given).
    x_T : array (N, ...)
        The start state in VP coordinates at ``timesteps[0]`` (N(0, I) for a full run).
    schedule : Schedule, continuous VP or None
        With ``timesteps``: a Schedule and a strictly decreasing integer grid in [0, T-1]
        (e.g. ``refdiff.timesteps(T, n)``), or a continuous VP and decreasing floats in
        (0, 1] (e.g. ``refdiff.time_grid(vp, n)``; t = 0 is data), or -- for a flow-matching
        velocity model (``prediction_type="velocity"``, flow methods only) -- ``None`` and
        flow times from 1 to 0 (t = 0 data; see ``time_convention`` of the flow loops).
    timesteps : array_like or Grid
        The grid as above, or a ready :class:`refdiff.Grid` (e.g.
        ``refdiff.library_grid(...)``).  ``sigmas=`` (every method; e.g.
        ``refdiff.karras_sigmas(n, lo, hi, append_zero=True)``) replaces ``timesteps`` by a
        grid of VE noise levels; see :func:`refdiff.make_grid`.
    method : str
        A name of :func:`sampler_methods`.
    prediction_type : str, default "epsilon"
        What the model predicts, or "velocity" (flow methods).
    rng : numpy.random.Generator, optional
        Noise is drawn on the host (``standard_normal``) in the order each method documents.
    guidance_scale : float, optional
        Classifier-free guidance, MATH.md (12.2), MATH.md (12.3), MATH.md (12.4) (see
        :func:`refdiff.cfg_model`); needs ``y`` and ``null_label``.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)``, called after each step in VP coordinates
        (:mod:`refdiff.samplers.common`).
    project : callable, optional
        The state hook ``project(i, t, x) -> x``, called after each step before
        ``callback``.
    y : optional
        The condition (class labels or a cond mapping); with ``y`` and no
        ``guidance_scale`` the model is called conditionally.
    null_label : optional
        The unconditional counterpart of ``y`` (guidance).
    guidance_convention : str, default "w"
        The meaning of ``guidance_scale`` (:func:`refdiff.cfg_model`).
    guidance_rescale : float, default 0.0
        The guidance rescale factor (:func:`refdiff.cfg_model`).
    noise : callable, optional
        ``noise(like)``, standard normals of like's shape, instead of ``rng``.
    progress : bool, default True
        Show a tqdm progress bar (to stderr).
    **method_options
        Passed to the method (eta, variance_type, order, s_churn, sigmas, ...).

    Returns
    -------
    array (N, ...)
        The method's result: the VP state at the last grid point (x_0 when it is the data
        end; flow coordinates for a velocity model).

    Raises
    ------
    ValueError
        If ``method``, ``prediction_type``, the grid or ``eta`` is invalid, or ``x_T`` is not
        finite.
    TypeError
        If ``x_T`` is not a float32/float64 array, a velocity model gets a schedule, both
        ``rng`` and ``noise`` are given, ``guidance_scale`` comes without ``y``, or an option
        is unknown to the method.
    FloatingPointError
        If a non-finite state or model output appears during sampling (naming the step).
    """
    methods = sampler_methods()
    if not isinstance(method, str) or method not in methods:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(sorted(methods))}")
    if prediction_type == "velocity":  # a flow-matching model u(x, t) on the rectified-flow path
        if not method.startswith("flow_"):
            raise ValueError(f"prediction_type='velocity' needs a flow method (flow_euler, flow_midpoint, flow_rk4), got {method!r}")
        if schedule is not None:
            raise TypeError("a velocity model samples on the rectified-flow path: pass schedule=None")
    elif prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}, "
                         "or 'velocity' with a flow method")
    else:
        check_schedule(schedule)  # None is the flow path of a velocity model only
    check_bool("progress", progress)
    check_finite_scalar("guidance_rescale", guidance_rescale, low=0.0, high=1.0)
    check_choice("guidance_convention", guidance_convention, GUIDANCE_CONVENTIONS)
    grid_opts = ("sigmas", "final_sigmas_type", "interpolation", "time_convention")
    grid = make_grid(schedule, timesteps, **{k: method_options[k] for k in grid_opts if k in method_options})
    eta = method_options.get("eta")
    if eta is not None and not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta = {eta!r} must be a finite number >= 0")
    check_array("x_T", x_T, min_ndim=1, finite=True)  # float32/float64: never integer noise (issue 19)
    if rng is not None and noise is not None:
        raise TypeError("pass either rng or noise, not both")
    if rng is not None:
        rng = check_rng(rng)
        noise = lambda like: standard_normal(rng, like.shape, like)  # noqa: E731
    model = _wrap_model(model, y, guidance_scale, null_label, guidance_convention, guidance_rescale)
    cb, bar = callback, None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(grid) - 1, desc=method, leave=False)

        def cb(i, t, x, x0_hat):
            bar.update(1)
            if callback is not None:
                callback(i, t, x, x0_hat)

    try:
        return methods[method](model, x_T, schedule, grid, prediction_type=prediction_type, noise=noise, callback=cb,
                               project=project, **method_options)
    finally:
        if bar is not None:
            bar.close()


def _wrap_model(model, y, guidance_scale, null_label, convention, rescale):
    """Bind the condition ``y`` (class labels or a cond mapping) as the model's third argument."""
    if guidance_scale is None:
        if y is None:
            return model
        return lambda x, t: model(x, t, y)
    from ..guidance import cfg_model

    if y is None:
        raise TypeError("guidance_scale needs a condition y (class labels or a cond mapping) and null_label "
                        "(its unconditional counterpart)")
    return cfg_model(model, y, guidance_scale, null_label, convention=convention, guidance_rescale=rescale)
