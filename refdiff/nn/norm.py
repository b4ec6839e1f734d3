"""Normalisation layers as forward/backward pairs, reference forms: GroupNorm (MATH.md
(13.9), (13.10)), LayerNorm (MATH.md (13.26)) and adaptive LayerNorm, whose scale and
shift come from a conditioning embedding (MATH.md (13.27)).

All three normalise a set of entries S to zero mean and unit (biased) variance,
``xhat = (x - mean_S x) r`` with ``r = (var_S x + eps)^(-1/2)``, and share one backward,
:func:`_normalize_backward`, the formula (13.10): for g = d loss / d xhat,
``dx = r (g - mean_S g - xhat mean_S(g xhat))``.  GroupNorm's S is (channels of a group)
x (spatial) per sample; LayerNorm's S is the last axis per token.
"""

from __future__ import annotations

from .._validate import check_array, check_finite_scalar, check_int
from ..backend import array_namespace
from ._check import check_cache, check_dout

__all__ = [
    "groupnorm_forward",
    "groupnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "adaln_forward",
    "adaln_backward",
]

ADALN_ORDERS = ("shift_scale", "scale_shift")


def _normalize(xp, xs, eps):
    """xhat and r of (13.9) for each row of xs (..., M): the mean and biased variance over
    the last axis."""
    xc = xs - xp.mean(xs, axis=-1, keepdims=True)
    r = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + eps)  # (..., 1)
    return xc * r, r


def _normalize_backward(xp, g, xhat, r):
    """MATH.md (13.10) for each row (..., M): ``r (g - mean(g) - xhat mean(g xhat))``."""
    return r * (g - xp.mean(g, axis=-1, keepdims=True) - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))


def _check_affine(what, C, gamma, beta):
    for name, a in (("gamma", gamma), ("beta", beta)):
        if a is not None:
            check_array(name, a)
        if a is not None and tuple(a.shape) != (C,):
            raise ValueError(f"{what}: {name} must have shape ({C},) to match x, got {tuple(a.shape)}")


def _check_groups(what, x, groups):
    check_array("x", x, min_ndim=2)
    C = x.shape[1]
    check_int("groups", groups, 1)
    if C % groups:
        raise ValueError(f"{what}: groups={groups!r} must divide C={C} (a positive int)")


def _check_groupnorm_args(x, gamma, beta, groups, eps):
    """Every argument of a GroupNorm forward (cheap: NaN propagates); eps as a float."""
    _check_groups("groupnorm_forward", x, groups)
    check_array("gamma", gamma)
    check_array("beta", beta)
    _check_affine("groupnorm_forward", x.shape[1], gamma, beta)
    return check_finite_scalar("eps", eps, low=0.0)


# ---------------------------------------------------------------------------- GroupNorm
def groupnorm_forward(x, gamma, beta, groups: int, eps: float = 1e-5):
    """Group normalisation of x (N, C, ...) over (channels of a group) x (spatial), then
    the per-channel affine map ``gamma xhat + beta``.  MATH.md (13.9).

    ``groups`` must divide C; gamma, beta (C,).  Variance is the biased (1/M) one, as in the
    usual implementations.  Returns ``(out, cache)``.  NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C, ...)
        Input, channels on axis 1.
    gamma : array, shape (C,)
        Per-channel scale.
    beta : array, shape (C,)
        Per-channel shift.
    groups : int
        Number of groups, a positive divisor of C.
    eps : float, optional
        Added to the variance (default 1e-5).

    Returns
    -------
    out : array, shape of ``x``
        ``gamma xhat + beta``.
    cache : tuple
        Saved values for :func:`groupnorm_backward`.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 axes, ``groups`` does not divide C, or ``gamma``/``beta``
        are not of shape (C,).
    """
    eps = _check_groupnorm_args(x, gamma, beta, groups, eps)
    xp = array_namespace(x)
    N, C = x.shape[0], x.shape[1]
    xhat, r = _normalize(xp, xp.reshape(x, (N, groups, -1)), eps)  # (N, G, M), (N, G, 1)
    xhat = xp.reshape(xhat, x.shape)
    cshape = (1, C) + (1,) * (x.ndim - 2)
    out = xp.reshape(gamma, cshape) * xhat + xp.reshape(beta, cshape)
    return out, (xhat, r, gamma, groups)


def groupnorm_backward(dout, cache):
    """Gradients of :func:`groupnorm_forward`, MATH.md (13.10):
    ``dx = r (g - mean(g) - xhat mean(g xhat))`` with ``g = gamma dout`` and the means over
    each (sample, group); ``dgamma = sum dout xhat``, ``dbeta = sum dout`` over all axes but
    the channel.  Returns ``(dx, dgamma, dbeta)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape of ``x``
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`groupnorm_forward`.

    Returns
    -------
    dx : array, shape of ``x``
        Gradient with respect to ``x``.
    dgamma : array, shape (C,)
        Gradient with respect to ``gamma``.
    dbeta : array, shape (C,)
        Gradient with respect to ``beta``.
    """
    xhat, r, gamma, groups = check_cache(cache, "groupnorm_forward", 4)
    check_dout(dout, xhat.shape)
    xp = array_namespace(dout)
    N, C = xhat.shape[0], xhat.shape[1]
    axes = (0,) + tuple(range(2, xhat.ndim))
    dgamma, dbeta = xp.sum(dout * xhat, axis=axes), xp.sum(dout, axis=axes)
    g = xp.reshape(gamma, (1, C) + (1,) * (xhat.ndim - 2)) * dout
    dx = _normalize_backward(xp, xp.reshape(g, (N, groups, -1)), xp.reshape(xhat, (N, groups, -1)), r)
    return xp.reshape(dx, xhat.shape), dgamma, dbeta


# ---------------------------------------------------------------------------- LayerNorm
def layernorm_forward(x, gamma=None, beta=None, eps: float = 1e-5):
    """Layer normalisation over the last axis of x (..., D), MATH.md (13.26):
    ``xhat = (x - mean) r``, ``out = gamma xhat + beta``; gamma = beta = None is the form
    without affine parameters (DiT's blocks, whose adaptive scale and shift replace them,
    :func:`adaln_forward`).  Returns ``(out, cache)``.  NaN and inf propagate: not
    checked.

    Parameters
    ----------
    x : array, shape (..., D)
        Input, normalised over its last axis.
    gamma : array of shape (D,) or None, optional
        Scale; None (default, together with ``beta``) for no affine map.
    beta : array of shape (D,) or None, optional
        Shift; None (default) together with ``gamma``.
    eps : float, optional
        Added to the variance (default 1e-5).

    Returns
    -------
    out : array, shape of ``x``
        ``gamma xhat + beta``, or ``xhat`` without affine parameters.
    cache : tuple
        Saved values for :func:`layernorm_backward`.

    Raises
    ------
    ValueError
        If ``x`` is a scalar, only one of ``gamma``, ``beta`` is given, or either is not of
        shape (D,).
    """
    check_array("x", x, min_ndim=1)
    eps = check_finite_scalar("eps", eps, low=0.0)
    xp = array_namespace(x)
    if (gamma is None) != (beta is None):
        raise ValueError("layernorm_forward: give both gamma and beta, or neither")
    _check_affine("layernorm_forward", x.shape[-1], gamma, beta)
    xhat, r = _normalize(xp, x, eps)
    out = xhat if gamma is None else gamma * xhat + beta
    return out, (xhat, r, gamma)


def layernorm_backward(dout, cache):
    """Gradients of :func:`layernorm_forward`, MATH.md (13.26) (the (13.10) form with the
    mean over the last axis): returns ``(dx, dgamma, dbeta)``, the last two None without
    affine parameters.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape of ``x``
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`layernorm_forward`.

    Returns
    -------
    dx : array, shape of ``x``
        Gradient with respect to ``x``.
    dgamma : array of shape (D,) or None
        Gradient with respect to ``gamma`` (None without affine parameters).
    dbeta : array of shape (D,) or None
        Gradient with respect to ``beta`` (None without affine parameters).
    """
    xhat, r, gamma = check_cache(cache, "layernorm_forward", 3)
    check_dout(dout, xhat.shape)
    xp = array_namespace(dout)
    g = dout if gamma is None else gamma * dout
    dx = _normalize_backward(xp, g, xhat, r)
    if gamma is None:
        return dx, None, None
    axes = tuple(range(dout.ndim - 1))
    return dx, xp.sum(dout * xhat, axis=axes), xp.sum(dout, axis=axes)


# ------------------------------------------------------------------- adaptive LayerNorm
def adaln_forward(x, emb, w, b, *, eps: float = 1e-6, order: str = "shift_scale"):
    """Adaptive LayerNorm (DiT's ``modulate(norm(x), shift, scale)``), MATH.md (13.27):
    ``[shift, scale] = emb W + b``, ``out = LN(x) (1 + scale) + shift`` per sample.

    x tokens (N, L, D); emb (N, E) the conditioning embedding (DiT passes silu(c));
    w (E, 2D), b (2D,).  ``order`` names which half of the projection is the shift:
    ``"shift_scale"`` (DiT's release and the library's ``AdaLayerNormZero``) or
    ``"scale_shift"`` (the library's ``AdaLayerNorm``/``AdaLayerNormContinuous``).  The
    LayerNorm has no affine parameters of its own; eps 1e-6 as in DiT.  Returns
    ``(out, cache)``.  NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, L, D)
        Tokens.
    emb : array, shape (N, E)
        Conditioning embedding.
    w : array, shape (E, 2D)
        Projection weight to ``[shift, scale]`` (in the order ``order`` names).
    b : array, shape (2D,)
        Projection bias.
    eps : float, optional
        Added to the variance of the LayerNorm (default 1e-6).
    order : {"shift_scale", "scale_shift"}, optional
        Which half of the projection is the shift (default ``"shift_scale"``: the first).

    Returns
    -------
    out : array, shape (N, L, D)
        ``LN(x) (1 + scale) + shift``.
    cache : tuple
        Saved values for :func:`adaln_backward`.

    Raises
    ------
    ValueError
        If ``order`` is unknown, ``x``/``emb`` are not (N, L, D)/(N, E) with the same N, or
        ``w``/``b`` are not of shapes (E, 2D)/(2D,).
    """
    check_array("x", x, ndim=3)
    check_array("emb", emb, ndim=2)
    check_array("w", w)
    check_array("b", b)
    eps = check_finite_scalar("eps", eps, low=0.0)
    xp = array_namespace(x, emb, w)
    if order not in ADALN_ORDERS:
        raise ValueError(f"adaln_forward: order must be one of {ADALN_ORDERS}, got {order!r}")
    if emb.shape[0] != x.shape[0]:
        raise ValueError(f"adaln_forward: need tokens x (N, L, D) and emb (N, E) with the same N; got x "
                         f"{tuple(x.shape)}, emb {tuple(emb.shape)}")
    D = x.shape[2]
    if tuple(w.shape) != (emb.shape[1], 2 * D) or tuple(b.shape) != (2 * D,):
        raise ValueError(f"adaln_forward: need w ({emb.shape[1]}, {2 * D}) and b ({2 * D},); got w "
                         f"{tuple(w.shape)}, b {tuple(b.shape)}")
    ss = emb @ w + b  # (N, 2D)
    first, second = ss[:, :D], ss[:, D:]
    shift, scale = (first, second) if order == "shift_scale" else (second, first)
    xhat, r = _normalize(xp, x, eps)  # (N, L, D), (N, L, 1)
    out = xhat * (1.0 + scale[:, None, :]) + shift[:, None, :]
    return out, (xhat, r, scale, emb, w, order)


def adaln_backward(dout, cache):
    """Gradients of :func:`adaln_forward`, MATH.md (13.27): ``dshift = sum_L dout``,
    ``dscale = sum_L dout xhat``, (13.2) for the projection, and (13.10) with
    ``g = dout (1 + scale)`` for x.  Returns ``(dx, demb, dw, db)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, L, D)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`adaln_forward`.

    Returns
    -------
    dx : array, shape (N, L, D)
        Gradient with respect to ``x``.
    demb : array, shape (N, E)
        Gradient with respect to ``emb``.
    dw : array, shape (E, 2D)
        Gradient with respect to ``w``.
    db : array, shape (2D,)
        Gradient with respect to ``b``.
    """
    xhat, r, scale, emb, w, order = check_cache(cache, "adaln_forward", 6)
    check_dout(dout, xhat.shape)
    xp = array_namespace(dout)
    dshift, dscale = xp.sum(dout, axis=1), xp.sum(dout * xhat, axis=1)  # (N, D) each
    dss = xp.concat([dshift, dscale] if order == "shift_scale" else [dscale, dshift], axis=1)  # (N, 2D)
    dx = _normalize_backward(xp, dout * (1.0 + scale[:, None, :]), xhat, r)
    return dx, dss @ w.T, emb.T @ dss, xp.sum(dss, axis=0)
