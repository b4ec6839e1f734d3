"""The variance of the reverse process p(x_{t-1} | x_t) and the learned-variance model
contract, defined once for the ELBO (:mod:`refdiff.elbo`) and for DDPM sampling
(:mod:`refdiff.samplers.ddpm`); MATH.md (5.6), (5.7), (8.3).

Learned-variance models (``variance_type`` ``"learned_range"`` or ``"learned"``) are plain
callables ``model(x, t)`` that return **one array with twice x's size along axis 1**: the
prediction first, the variance output second (the layout of improved-diffusion and of the
widely used PyTorch library; for toy data of shape (N, D) that is (N, 2D)).  The variance
output is the interpolation v in [-1, 1] for ``"learned_range"`` (MATH.md (5.7)) and the
log variance itself for ``"learned"``.  The same callable goes through ``refdiff.sample``
and :func:`refdiff.nll_bound` unchanged.
"""

from __future__ import annotations

import numpy as np

from ._validate import check_array
from .backend import array_namespace, to_numpy
from .schedules import Schedule, gather

__all__ = ["VARIANCE_TYPES", "LEARNED_VARIANCE_TYPES", "check_variance_type", "model_output_shape",
           "check_model_output", "split_learned", "reverse_log_variance"]

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range", "learned")
LEARNED_VARIANCE_TYPES = ("learned_range", "learned")


def check_variance_type(variance_type: str) -> str:
    """``variance_type`` if it is one of :data:`VARIANCE_TYPES`, else ValueError.

    Parameters
    ----------
    variance_type : str
        The name to check.

    Returns
    -------
    str
        ``variance_type`` unchanged.

    Raises
    ------
    ValueError
        If it is not one of "fixed_small", "fixed_large", "learned_range", "learned".
    """
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"variance_type = {variance_type!r} is not one of {', '.join(map(repr, VARIANCE_TYPES))}")
    return variance_type


def model_output_shape(x_shape, variance_type: str = "fixed_small") -> tuple:
    """The shape a model's output must have for inputs of ``x_shape``: x's shape, with axis 1
    doubled for a learned variance (prediction and variance output concatenated).

    Parameters
    ----------
    x_shape : sequence of int
        The shape of the model's input x, (N, C, ...) (or (N, D) for toy data).
    variance_type : str, default "fixed_small"
        One of :data:`VARIANCE_TYPES`.

    Returns
    -------
    tuple of int
        ``x_shape`` for a fixed variance; (N, 2 C, ...) for "learned_range" and "learned".

    Raises
    ------
    ValueError
        If ``variance_type`` is unknown, or a learned variance is asked for inputs with
        fewer than 2 axes.
    """
    if not isinstance(x_shape, (tuple, list)) or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 for n in x_shape):
        raise TypeError(f"x_shape must be a tuple of non-negative ints, got {x_shape!r}")
    x_shape = tuple(int(n) for n in x_shape)
    if check_variance_type(variance_type) not in LEARNED_VARIANCE_TYPES:
        return x_shape
    if len(x_shape) < 2:
        raise ValueError(f"variance_type={variance_type!r} needs inputs of shape (N, C, ...), got {x_shape}")
    return (x_shape[0], 2 * x_shape[1]) + x_shape[2:]


def _check_shape(out, x, variance_type, where, name="out"):
    check_array("x", x)
    if not isinstance(where, str):
        raise TypeError(f"where must be a str, got {where!r}")
    if not hasattr(out, "shape"):
        raise TypeError(f"the model output ({name}) must be an array, got {type(out).__name__}")
    check_array(name, out)
    want = model_output_shape(x.shape, variance_type)
    if not hasattr(out, "shape") or tuple(out.shape) != want:
        got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        what = "x's shape" if want == tuple(x.shape) else "prediction and variance output concatenated along axis 1"
        at = f" at {where}" if where else ""
        raise ValueError(f"model returned shape {got}{at}; variance_type={variance_type!r} needs {want} ({what})")


def check_model_output(out, x, variance_type: str = "fixed_small", *, where: str = "", t=None):
    """The one check of a model's output at input ``x``: its shape (:func:`model_output_shape`,
    ValueError) and finiteness (FloatingPointError).  ``where`` (e.g. "step 3 (t = 0.5)")
    is named in the message; with a per-sample time array ``t`` instead, the times of the
    samples whose output is not finite are named.

    Parameters
    ----------
    out : array
        The model's output.
    x : array (N, ...)
        The model's input.
    variance_type : str, default "fixed_small"
        One of :data:`VARIANCE_TYPES`; sets the expected shape.
    where : str, default ""
        A description of the call site, named in the error messages.
    t : array (N,), optional
        Per-sample times; when given (1-d), the error names the times of the non-finite samples.

    Returns
    -------
    array
        ``out`` unchanged.

    Raises
    ------
    ValueError
        If ``out`` has no shape or not the shape :func:`model_output_shape` gives.
    FloatingPointError
        If any entry of ``out`` is NaN or infinite.
    """
    _check_shape(out, x, variance_type, where)
    if t is not None:
        check_array("t", t, dtype="real", shape=(x.shape[0],))
    at = f" at {where}" if where else ""
    xp = array_namespace(out)
    bad = ~xp.all(xp.reshape(xp.isfinite(out), (out.shape[0], -1)), axis=1)  # (N,)
    if bool(xp.any(bad)):
        if t is not None and hasattr(t, "shape") and t.ndim == 1:
            tb = np.asarray(to_numpy(t))[np.asarray(to_numpy(bad))]
            at = f" at t = {sorted(set(tb.tolist()))}"
        raise FloatingPointError(f"model output contains NaN or inf{at}")
    return out


def split_learned(model_output, x, variance_type: str):
    """``(prediction, var_output)`` of a learned-variance model's output (module docstring);
    ``(model_output, None)`` for a fixed variance.  Checks the shape; NaN and inf propagate
    (not checked).

    Parameters
    ----------
    model_output : array
        The model's output, of the shape :func:`model_output_shape` gives for ``x``.
    x : array (N, C, ...)
        The model's input (its axis 1 gives the split point C).
    variance_type : str
        One of :data:`VARIANCE_TYPES`.

    Returns
    -------
    prediction, var_output : array, array or None
        ``model_output[:, :C]`` and ``model_output[:, C:]`` for a learned variance;
        ``model_output`` and None for a fixed one.

    Raises
    ------
    ValueError
        If the shape of ``model_output`` does not match, or ``variance_type`` is unknown.
    """
    if variance_type in LEARNED_VARIANCE_TYPES:
        check_array("x", x, min_ndim=2)
    _check_shape(model_output, x, variance_type, "", "model_output")
    if variance_type not in LEARNED_VARIANCE_TYPES:
        return model_output, None
    c = x.shape[1]
    return model_output[:, :c, ...], model_output[:, c:, ...]


def log_betas_large(schedule: Schedule, fixed_large_t0: str) -> np.ndarray:
    """(T,) host log variances of ``"fixed_large"``, MATH.md (5.6): log beta_t, with index 0
    replaced by log beta_tilde[1] for ``fixed_large_t0="beta_tilde_1"``."""
    if fixed_large_t0 not in ("beta_tilde_1", "beta_0"):
        raise ValueError(f"fixed_large_t0 = {fixed_large_t0!r} is not one of 'beta_tilde_1', 'beta_0'")
    values = np.log(schedule.betas)
    if fixed_large_t0 == "beta_tilde_1":
        values[0] = schedule.posterior_log_variance_clipped[0]  # log beta_tilde[1] (log beta[0] if T = 1)
    return values


def reverse_log_variance(schedule: Schedule, t, like, variance_type: str = "fixed_small", var_output=None, *,
                         fixed_large_t0: str = "beta_tilde_1"):
    """log Sigma_t, the log variance of p(x_{t-1} | x_t), MATH.md (5.6), (5.7), (8.3).

    NaN and inf in ``var_output`` propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (float64 arrays of length T).
    t : int or integer array of shape (N,)
        0-based timesteps in [0, T-1].
    like : array (N, ...)
        Gives the namespace, dtype and the shape to broadcast against (usually x_t).
    variance_type : {"fixed_small", "fixed_large", "learned_range", "learned"}
        ``"fixed_small"``: beta_tilde_t, with its log at t = 0 (where beta_tilde = 0) clipped
        to log beta_tilde[1] as in the DDPM and improved-diffusion code.
        ``"fixed_large"``: beta_t.  ``fixed_large_t0="beta_tilde_1"`` (default, the DDPM and
        improved-diffusion code) uses beta_tilde[1] at t = 0; ``"beta_0"`` keeps beta[0]
        (the paper).  Only the decoder term L_0 sees the difference (a sampler adds no
        noise at t = 0).
        ``"learned_range"``: ``var_output`` = v, log Sigma = (v+1)/2 log beta_t +
        (1-v)/2 log beta_tilde_t (clipped), improved-diffusion's interpolation; v outside
        [-1, 1] extrapolates, as in that code.
        ``"learned"``: ``var_output`` is the log variance itself.
    var_output : array like x_t, optional
        The model's variance output (:func:`split_learned`); required for the learned types,
        ignored for the fixed ones.
    fixed_large_t0 : {"beta_tilde_1", "beta_0"}
        The ``"fixed_large"`` value at t = 0, as above.

    Returns
    -------
    array
        An array broadcasting against ``like`` (shape (N,1,..) for fixed types and an array
        ``t``, 0-d for a scalar ``t``; the shape of ``var_output`` for learned ones).

    Raises
    ------
    ValueError
        If ``variance_type`` or ``fixed_large_t0`` is unknown, or a learned type is given no
        ``var_output``.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_array("like", like, min_ndim=1)
    schedule.check_t(t)
    if not isinstance(t, (int, np.integer)) and t.ndim == 1 and like.ndim >= 1 and t.shape[0] != like.shape[0]:
        raise ValueError(f"t has shape {tuple(t.shape)} but like has shape {tuple(like.shape)}: one timestep per sample")
    if var_output is not None:
        check_array("var_output", var_output, shape=tuple(like.shape))
    if not isinstance(fixed_large_t0, str) or fixed_large_t0 not in ("beta_tilde_1", "beta_0"):
        raise ValueError(f"fixed_large_t0 = {fixed_large_t0!r} is not one of 'beta_tilde_1', 'beta_0'")
    check_variance_type(variance_type)
    if variance_type == "fixed_small":
        return gather(schedule.posterior_log_variance_clipped, t, like)
    if variance_type == "fixed_large":
        return gather(log_betas_large(schedule, fixed_large_t0), t, like)
    if var_output is None:
        raise ValueError(f"variance_type={variance_type!r} needs the model's variance output (var_output)")
    if variance_type == "learned":
        return var_output
    frac = 0.5 * (var_output + 1.0)
    return frac * gather(np.log(schedule.betas), t, like) + (1.0 - frac) * gather(schedule.posterior_log_variance_clipped, t, like)
