"""Activations as forward/backward pairs, reference forms: SiLU (MATH.md (13.11)), GELU
in its exact (erf) and tanh forms (MATH.md (13.24)), and the gated GEGLU projection of
transformer feed-forward blocks (MATH.md (13.25)).  Elementwise maps work on any shape.
"""

from __future__ import annotations

import math

from .._validate import check_array, check_same_shape
from ..backend import array_namespace, ndtr
from ._check import check_cache, check_dout

__all__ = ["silu_forward", "silu_backward", "gelu_forward", "gelu_backward", "geglu_forward", "geglu_backward"]

GELU_FORMS = ("none", "tanh")  # the names PyTorch's F.gelu(approximate=...) uses
_K = math.sqrt(2.0 / math.pi)  # sqrt(2/pi) of the tanh form
_A = 0.044715  # cubic coefficient of the tanh form


def _check_float(x, what):
    check_array("x", x)  # float32/float64; cheap: NaN and inf propagate, not checked


# --------------------------------------------------------------------------------- SiLU
def _sigmoid(xp, x):
    """``sigmoid(x) = 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2``, the tanh form: it
    cannot overflow (exp(-x) does for x < -88 in float32).  Its error is absolute, at most
    a rounding unit of 1/2 (so sigmoid(x) below ~1e-8 in float32 rounds to 0)."""
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def silu_forward(x):
    """SiLU (swish) ``out = x * sigmoid(x)``, elementwise.  MATH.md (13.11).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array
        Input of any shape, real floating dtype.

    Returns
    -------
    out : array
        ``x * sigmoid(x)``, same shape and dtype as ``x``.
    cache : tuple
        ``(x, sigmoid(x))`` for :func:`silu_backward`.

    Raises
    ------
    TypeError
        If ``x`` is not a real floating array.
    """
    _check_float(x, "silu_forward")
    xp = array_namespace(x)
    s = _sigmoid(xp, x)
    return x * s, (x, s)


def silu_backward(dout, cache):
    """``dx = dout * s (1 + x (1 - s))`` with s = sigmoid(x).  MATH.md (13.11).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array
        Gradient of the loss with respect to the output, shape of ``x``.
    cache : tuple
        The cache returned by :func:`silu_forward`.

    Returns
    -------
    dx : array
        Gradient with respect to ``x``, shape of ``x``.
    """
    x, s = check_cache(cache, "silu_forward", 2)
    check_dout(dout, x.shape)
    return dout * s * (1.0 + x * (1.0 - s))


# --------------------------------------------------------------------------------- GELU
def _check_form(approximate, what):
    if approximate not in GELU_FORMS:
        raise ValueError(f"{what}: approximate must be one of {GELU_FORMS}, got {approximate!r}")


def _gelu_and_slope(x, approximate):
    """GELU(x) and its derivative, MATH.md (13.24)."""
    xp = array_namespace(x)
    if approximate == "none":
        Phi = ndtr(x)  # standard normal CDF, (1 + erf(x / sqrt 2)) / 2
        phi = math.sqrt(0.5 / math.pi) * xp.exp(-0.5 * x * x)  # its density
        return x * Phi, Phi + x * phi
    u = _K * (x + _A * x * x * x)
    th = xp.tanh(u)
    return 0.5 * x * (1.0 + th), 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * _K * (1.0 + 3.0 * _A * x * x)


def gelu_forward(x, approximate: str = "none"):
    """GELU, elementwise, MATH.md (13.24): ``x Phi(x)`` with Phi the standard normal CDF
    (``approximate="none"``, the exact erf form), or ``x (1 + tanh(sqrt(2/pi) (x + 0.044715
    x^3))) / 2`` (``"tanh"``).  Returns ``(out, cache)``.  NaN and inf propagate: not
    checked.

    Parameters
    ----------
    x : array
        Input of any shape, real floating dtype.
    approximate : {"none", "tanh"}, optional
        ``"none"`` (default) for the exact erf form, ``"tanh"`` for the tanh approximation.

    Returns
    -------
    out : array
        GELU(x), same shape and dtype as ``x``.
    cache : array
        The derivative GELU'(x), used by :func:`gelu_backward`.

    Raises
    ------
    ValueError
        If ``approximate`` is not one of ``"none"``, ``"tanh"``.
    TypeError
        If ``x`` is not a real floating array.
    """
    _check_form(approximate, "gelu_forward")
    _check_float(x, "gelu_forward")
    out, slope = _gelu_and_slope(x, approximate)
    return out, slope


def gelu_backward(dout, cache):
    """``dx = dout GELU'(x)``, MATH.md (13.24): ``Phi(x) + x phi(x)`` (exact form) or the
    derivative of the tanh form.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array
        Gradient with respect to the output, shape of ``x``.
    cache : array
        The cache returned by :func:`gelu_forward` (GELU'(x)).

    Returns
    -------
    dx : array
        Gradient with respect to ``x``.
    """
    check_array("cache", cache, allow_empty=True)
    check_array("dout", dout, allow_empty=True)
    check_same_shape(dout=dout, cache=cache)
    return dout * cache


# -------------------------------------------------------------------------------- GEGLU
def geglu_forward(x, w, b, approximate: str = "none"):
    """Gated GELU projection, MATH.md (13.25): ``[h, g] = x W + b`` split in two halves
    along the last axis (h the first F columns, g the last F), ``out = h * GELU(g)``.

    x (..., D), w (D, 2F), b (2F,) -> out (..., F).  The first-half/second-half order is
    that of the widely used PyTorch diffusion library's ``GEGLU`` (``hidden, gate =
    proj(x).chunk(2, dim=-1)``).  Returns ``(out, cache)``.  NaN and inf propagate: not
    checked.

    Parameters
    ----------
    x : array, shape (..., D)
        Input features.
    w : array, shape (D, 2F)
        Projection weight; its first F columns give h, its last F columns the gate g.
    b : array, shape (2F,)
        Projection bias.
    approximate : {"none", "tanh"}, optional
        GELU form applied to the gate (default ``"none"``, the exact erf form).

    Returns
    -------
    out : array, shape (..., F)
        ``h * GELU(g)``.
    cache : tuple
        Saved values for :func:`geglu_backward`.

    Raises
    ------
    ValueError
        If ``approximate`` is not a known form, the shapes of ``x`` and ``w`` do not match
        (or ``w`` has an odd number of columns), or ``b`` is not of shape (2F,).
    """
    check_array("x", x, min_ndim=1)
    check_array("w", w, ndim=2)
    check_array("b", b)
    xp = array_namespace(x, w)
    _check_form(approximate, "geglu_forward")
    if x.shape[-1] != w.shape[0] or w.shape[1] % 2:
        raise ValueError(f"geglu_forward: need x (..., D), w (D, 2F); got x {tuple(x.shape)}, w {tuple(w.shape)}")
    if tuple(b.shape) != (w.shape[1],):
        raise ValueError(f"geglu_forward: bias b must have shape ({w.shape[1]},), got {tuple(b.shape)}")
    F = w.shape[1] // 2
    x2 = xp.reshape(x, (-1, w.shape[0]))  # (M, D), M = product of the leading axes
    proj = x2 @ w + b  # (M, 2F)
    h, g = proj[:, :F], proj[:, F:]
    act, slope = _gelu_and_slope(g, approximate)
    out = xp.reshape(h * act, tuple(x.shape[:-1]) + (F,))
    return out, (x2, w, h, act, slope, tuple(x.shape))


def geglu_backward(dout, cache):
    """Gradients of :func:`geglu_forward`, MATH.md (13.25): ``dh = dout GELU(g)``,
    ``dg = dout h GELU'(g)``, then (13.2) for the projection.  Returns ``(dx, dw, db)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (..., F)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`geglu_forward`.

    Returns
    -------
    dx : array, shape (..., D)
        Gradient with respect to ``x``.
    dw : array, shape (D, 2F)
        Gradient with respect to ``w``.
    db : array, shape (2F,)
        Gradient with respect to ``b``.
    """
    x2, w, h, act, slope, x_shape = check_cache(cache, "geglu_forward", 6)
    check_dout(dout, tuple(x_shape[:-1]) + (h.shape[1],))
    xp = array_namespace(dout)
    d2 = xp.reshape(dout, (-1, h.shape[1]))  # (M, F)
    dproj = xp.concat([d2 * act, d2 * h * slope], axis=1)  # (M, 2F)
    dx = xp.reshape(dproj @ w.T, x_shape)
    return dx, x2.T @ dproj, xp.sum(dproj, axis=0)
