"""Central-difference gradient checking, MATH.md (13.19).

For a scalar function f of an array x, the central difference

    (f(x + h e_i) - f(x - h e_i)) / (2 h) = df/dx_i + O(h^2)

approximates each partial derivative.  To check a backward pass ``dx = J^T dout`` one
takes ``f(x) = <forward(x), dout>`` with a fixed random ``dout``.  Run in float64 with
h = 1e-5 (the default): truncation error ~h^2 |f'''| and rounding error ~1e-16 |f| / h are
both ~1e-10 relative to gradients of order one.

:func:`check_directional` checks a whole layer or model at once: for random directions u
over every parameter and the input together, ``(f(p + h u) - f(p - h u)) / (2 h)`` against
``sum_k <grad_k, u_k>`` (the same O(h^2) argument, along a line).

Entries are perturbed on the host (a NumPy copy) and moved back to ``x``'s namespace, so
the functions work for NumPy, CuPy and array_api_strict arrays alike.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_array, check_finite_scalar, check_int, check_same_shape
from ..backend import array_namespace, asarray_like, to_numpy

__all__ = ["numerical_gradient", "relative_error", "check_gradient", "check_directional", "inner"]


def _check_f64(name, a):
    """Central differences at h ~ 1e-5 need float64 (DESIGN.md: gradient checks run in
    float64): in float32 the step rounds away and the difference is noise."""
    check_array(name, a)
    if str(a.dtype).rsplit(".", 1)[-1] != "float64":
        raise TypeError(f"{name} must be a float64 array (gradient checks run in float64: a step h ~ 1e-5 "
                        f"rounds away in float32), got dtype {str(a.dtype).rsplit('.', 1)[-1]}")
    return a


def _check_callable(name, f):
    if not callable(f):
        raise TypeError(f"{name} must be callable, got {type(f).__name__}")


def _check_indices(indices, size):
    """Flat indices as a list of ints in [0, size), or None."""
    if indices is None:
        return None
    if isinstance(indices, (str, bytes, dict, set)) or not hasattr(indices, "__len__"):
        raise TypeError(f"indices must be None or a sequence of integer flat indices, got {type(indices).__name__}")
    idx = np.asarray(to_numpy(indices) if hasattr(indices, "dtype") else list(indices))
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be a non-empty 1-D sequence of integers, got {indices!r}")
    if idx.min() < 0 or idx.max() >= size:
        raise ValueError(f"indices must lie in [0, {size - 1}] (flat indices of x), got values in "
                         f"[{idx.min()}, {idx.max()}]")
    return [int(i) for i in idx]


def inner(a, b) -> float:
    """``<a, b> = sum(a * b)`` as a Python float (any namespace).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    a, b : array
        Arrays of the same shape, in one namespace (no broadcasting).

    Returns
    -------
    float
        ``sum(a * b)``.
    """
    check_array("a", a)
    check_array("b", b)
    check_same_shape(a=a, b=b)
    xp = array_namespace(a, b)
    return float(xp.sum(a * b))


def numerical_gradient(f, x, *, h: float = 1e-5, indices=None):
    """Central-difference gradient of the scalar function ``f`` at ``x``.
    NaN and inf propagate: not checked.

    f: callable taking an array like ``x`` and returning a float.  indices: None (every
    entry; returns an array of x's shape in x's namespace) or a sequence of flat indices
    (returns a host float64 array of those partial derivatives).  MATH.md (13.19).

    Parameters
    ----------
    f : callable
        Scalar function of an array like ``x``, returning a float.
    x : array of float64
        Point at which to differentiate (perturbed as a float64 host copy).
    h : float, optional
        Step of the central difference (default 1e-5).
    indices : sequence of int or None, optional
        Flat indices of the entries to differentiate; None (default) for all.

    Returns
    -------
    array
        With ``indices=None``, the gradient in ``x``'s shape and namespace; otherwise a host
        float64 array of the requested partial derivatives.
    """
    _check_callable("f", f)
    _check_f64("x", x)
    h = check_finite_scalar("h", h, low=0.0, low_open=True)
    x_host = np.array(to_numpy(x), dtype=np.float64, copy=True)
    flat = x_host.reshape(-1)  # view
    idx = _check_indices(indices, flat.size)
    idx = range(flat.size) if idx is None else idx
    out = np.zeros(len(idx))
    for n, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + h
        fp = float(f(asarray_like(x_host, x)))
        flat[i] = old - h
        fm = float(f(asarray_like(x_host, x)))
        flat[i] = old
        out[n] = (fp - fm) / (2.0 * h)
    if indices is None:
        return asarray_like(out.reshape(x_host.shape), x)
    return out


def relative_error(a, b, *, floor: float = 0.0) -> float:
    """Normwise relative error ``||a - b|| / max(||a|| + ||b||, floor)`` (0 when a = b).
    NaN and inf propagate: not checked.

    Normwise, so single entries near zero do not blow it up.  ``floor`` bounds the
    denominator from below: a gradient that is zero by a symmetry (the bias of the keys
    in softmax attention, MATH.md (13.15)) otherwise compares rounding noise with
    rounding noise; pass the scale of the gradients being checked.

    Parameters
    ----------
    a, b : array
        The two arrays compared (any namespace; flattened in float64).
    floor : float, optional
        Lower bound of the denominator (default 0).

    Returns
    -------
    float
        The normwise relative error.

    Raises
    ------
    ValueError
        If ``a`` and ``b`` have different numbers of entries.
    """
    check_array("a", a)
    check_array("b", b)
    floor = check_finite_scalar("floor", floor, low=0.0)
    a = np.asarray(to_numpy(a), dtype=np.float64).ravel()
    b = np.asarray(to_numpy(b), dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"relative_error: shapes differ: a and b have {a.size} and {b.size} entries")
    num = float(np.linalg.norm(a - b))
    den = max(float(np.linalg.norm(a) + np.linalg.norm(b)), floor)
    return 0.0 if num == 0.0 else num / den


def check_gradient(f, x, analytic, *, h: float = 1e-5, indices=None, floor: float = 0.0) -> float:
    """Relative error (:func:`relative_error`, with ``floor``) between ``analytic`` (the
    gradient of f at x from a backward pass) and the central difference of ``f`` at x,
    at all entries or at flat ``indices``.  MATH.md (13.19).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    f : callable
        Scalar function of an array like ``x``.
    x : array of float64
        Point at which to check.
    analytic : array of float64
        Gradient of ``f`` at ``x`` from the backward pass, shape of ``x``.
    h : float, optional
        Step of the central difference (default 1e-5).
    indices : sequence of int or None, optional
        Flat indices to check; None (default) for all.
    floor : float, optional
        Lower bound of the error's denominator (default 0).

    Returns
    -------
    float
        The relative error.
    """
    _check_f64("x", x)
    _check_f64("analytic", analytic)
    if tuple(analytic.shape) != tuple(x.shape):
        raise ValueError(f"analytic must have x's shape {tuple(x.shape)}, got shape {tuple(analytic.shape)}")
    floor = check_finite_scalar("floor", floor, low=0.0)
    num = numerical_gradient(f, x, h=h, indices=indices)
    ana = to_numpy(analytic).reshape(-1)
    if indices is not None:
        ana = ana[np.asarray(indices, dtype=np.int64)]
    return relative_error(ana, num, floor=floor)


def check_directional(loss, point: dict, grads: dict, rng, *, n_dirs: int = 3, h: float = 1e-5,
                      floor: float = 0.0) -> float:
    """Directional central differences against a backward pass, MATH.md (13.19).

    ``point`` maps names to arrays (every parameter and every input one wants checked);
    ``loss(point) -> float``; ``grads`` maps the same names to the gradients of ``loss``
    from the hand-written backward.  For ``n_dirs`` random Gaussian directions u over
    *all* entries at once, compares ``(loss(p + h u) - loss(p - h u)) / (2 h)`` with
    ``sum_k <grads[k], u[k]>`` and returns the normwise relative error of the two vectors
    of directional derivatives (:func:`relative_error` with ``floor``).  A direction mixes
    every parameter, so a gradient wrong in any entry shows up.  Directions are drawn on
    the host from ``rng`` and moved to each array's namespace.

    Parameters
    ----------
    loss : callable
        ``loss(point) -> float``.
    point : dict
        Names mapped to the arrays checked.
    grads : dict
        The same names mapped to the backward pass's gradients.
    rng : numpy.random.Generator
        Source of the directions.
    n_dirs : int, optional
        Number of random directions (default 3).
    h : float, optional
        Step of the central difference (default 1e-5).
    floor : float, optional
        Lower bound of the error's denominator (default 0).

    Returns
    -------
    float
        Relative error between the numerical and analytic directional derivatives.

    Raises
    ------
    ValueError
        If a name of ``point`` has no gradient in ``grads``.
    """
    _check_callable("loss", loss)
    for name, d in (("point", point), ("grads", grads)):
        if not isinstance(d, dict) or not d:
            raise TypeError(f"{name} must be a non-empty dict of arrays, got {d!r:.60}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_dirs = check_int("n_dirs", n_dirs, 1)
    if n_dirs > 10_000:
        raise ValueError(f"n_dirs must be an integer in [1, 10000], got n_dirs = {n_dirs}")
    h = check_finite_scalar("h", h, low=0.0, low_open=True)
    floor = check_finite_scalar("floor", floor, low=0.0)
    missing = sorted(set(point) - set(grads))
    if missing:
        raise ValueError(f"check_directional: no gradient for {missing} (point's entries missing from grads)")
    for k, v in point.items():
        _check_f64(f"point[{k!r}]", v)
        _check_f64(f"grads[{k!r}]", grads[k])
        if tuple(grads[k].shape) != tuple(v.shape):
            raise ValueError(f"grads[{k!r}] must have point[{k!r}]'s shape {tuple(v.shape)}, "
                             f"got shape {tuple(grads[k].shape)}")
    host = {k: np.asarray(to_numpy(v), dtype=np.float64) for k, v in point.items()}
    num, ana = np.zeros(n_dirs), np.zeros(n_dirs)
    for i in range(n_dirs):
        u = {k: rng.standard_normal(v.shape) for k, v in host.items()}
        ana[i] = sum(float(np.sum(np.asarray(to_numpy(grads[k]), dtype=np.float64) * u[k])) for k in host)
        plus = {k: asarray_like(host[k] + h * u[k], point[k]) for k in host}
        minus = {k: asarray_like(host[k] - h * u[k], point[k]) for k in host}
        num[i] = (float(loss(plus)) - float(loss(minus))) / (2.0 * h)
    return relative_error(ana, num, floor=floor)
