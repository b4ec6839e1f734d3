"""Helpers shared by the modules of :mod:`refdiff.elbo` (array coercion, sums over data
dimensions, argument checks)."""

from __future__ import annotations

import math

import numpy as np

from .._validate import _is_array, check_array, check_choice, check_int
from ..backend import array_namespace, asarray_like

_LN2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)


def _arrays(_broadcast=True, **named):
    """(xp, the values as arrays) of named array-or-number arguments: each a real number
    (not a bool) or a real floating array; the arrays must broadcast together (a per-sample
    log variance (N, 1, ..., 1) against (N, C, H, W)).  Python scalars become 0-d arrays of
    the namespace.  NaN and inf are not checked."""
    for k, v in named.items():
        if isinstance(v, (bool, np.bool_)) or not (isinstance(v, (int, float, np.integer, np.floating)) or _is_array(v)):
            raise TypeError(f"{k} must be a real number or a real floating array, got {type(v).__name__}")
        if _is_array(v):
            check_array(k, v)
    args = list(named.values())
    ref = [a for a in args if hasattr(a, "shape")]
    try:
        if _broadcast:
            np.broadcast_shapes(*(tuple(a.shape) for a in ref))
    except ValueError:
        desc = ", ".join(f"{k} {tuple(v.shape)}" for k, v in named.items() if hasattr(v, "shape"))
        raise ValueError(f"shape mismatch: {desc} do not broadcast together") from None
    xp = array_namespace(*ref)
    like = ref[0] if ref else xp.asarray(0.0, dtype=xp.float64)
    dtype = like.dtype if xp.isdtype(like.dtype, "real floating") else xp.float64
    out = [a if hasattr(a, "shape") else asarray_like(float(a), like, dtype=dtype) for a in args]
    return xp, out


def _flat_sum(a):
    """Sum over every axis but the first: (N, ...) -> (N,)."""
    xp = array_namespace(a)
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)  # (N, ...) -> (N, D) -> (N,)


def _dims(x0) -> int:
    return int(math.prod(x0.shape[1:]))


_check_choice = check_choice


def _check_bins(bins, name="bins"):
    check_int(name, bins, min=2, hint=" (levels; 256 for 8-bit data)")


def _check_model(model):
    if not callable(model):
        raise TypeError(f"model must be a callable model(x, t), got {type(model).__name__}")


def _check_x0(x0):
    check_array("x0", x0, dtype="any")
    if not hasattr(x0, "shape") or x0.ndim < 2:
        raise ValueError(f"x0 must be an array of shape (N, ...) with at least one data dimension, got {getattr(x0, 'shape', type(x0).__name__)}")
    xp = array_namespace(x0)
    if x0.dtype != xp.float64:
        raise TypeError(f"x0 must be float64 (the ELBO is computed in float64), got {x0.dtype}")
    check_array("x0", x0, finite=True)


def _number_or_array(name, v):
    """A real number (not a bool) or a real floating array (NaN and inf not checked)."""
    if isinstance(v, (bool, np.bool_)) or not (isinstance(v, (int, float, np.integer, np.floating)) or _is_array(v)):
        raise TypeError(f"{name} must be a real number or a real floating array, got {type(v).__name__}")
    if _is_array(v):
        check_array(name, v, allow_empty=True)
    return v


def _check_term(schedule, t, clip_denoised=False, optional=("var_output",), **arrays):
    """The inputs of an ELBO term: a Schedule, integer t in [0, T) (one per sample), real
    floating non-empty arrays of one shape (None entries skipped), clip_denoised a bool."""
    from ..schedules import Schedule
    from .._validate import check_bool, check_same_shape

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_bool("clip_denoised", clip_denoised)
    given = {k: v for k, v in arrays.items() if v is not None or k not in optional}
    for k, v in given.items():
        check_array(k, v, min_ndim=1)
    check_same_shape(**given)
    schedule.check_t(t)
    name, x = next(iter(given.items()))
    if hasattr(t, "ndim") and t.ndim == 1 and t.shape[0] != x.shape[0]:
        raise ValueError(f"t has shape {tuple(t.shape)} but {name} has shape {tuple(x.shape)}: one timestep per sample")
