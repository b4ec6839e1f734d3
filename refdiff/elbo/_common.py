"""Helpers shared by the modules of :mod:`refdiff.elbo` (array coercion, sums over data
dimensions, argument checks)."""

from __future__ import annotations

import math

from .._validate import check_choice, check_int
from ..backend import array_namespace, asarray_like

_LN2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)


def _arrays(*args):
    """(xp, args as arrays): Python scalars become 0-d float64 arrays of the namespace."""
    ref = [a for a in args if hasattr(a, "shape")]
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


def _check_x0(x0):
    if not hasattr(x0, "shape") or x0.ndim < 2:
        raise ValueError(f"x0 must be an array of shape (N, ...) with at least one data dimension, got {getattr(x0, 'shape', type(x0).__name__)}")
    xp = array_namespace(x0)
    if x0.dtype != xp.float64:
        raise TypeError(f"x0 must be float64 (the ELBO is computed in float64), got {x0.dtype}")
