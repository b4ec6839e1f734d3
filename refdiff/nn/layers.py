"""Layers as pure forward/backward pairs (CS231n style), MATH.md chapter 13.

Every layer is two functions::

    out, cache = layer_forward(x, params...)
    dx, dparams... = layer_backward(dout, cache)

The cache is a plain tuple returned to the caller; no layer keeps anything on ``self``,
so a model may be run forward several times (guidance, Heun) before any backward.
All functions are array-namespace agnostic (NumPy, CuPy, array_api_strict): they ask
:func:`refdiff.backend.array_namespace` for the namespace of their inputs and use the
array API standard only.  Images are NCHW, tokens (N, L, D), vectors (N, D).

These are the *reference* forms: each transcribes its equation in NCHW, without in-place
updates or memory-order tricks, and the tests check it against central differences,
adjoint identities and loop definitions.  This module is the one place to import them
from; they live in topic modules:

* here: linear (13.1), (13.2), embeddings (13.12), (13.13), channel concatenation (13.21);
* :mod:`.conv`: convolution (13.3), (13.4), (13.5), (13.6) and its loop definition, transposed convolution
  (13.30);
* :mod:`.activations`: SiLU (13.11), GELU (13.24), GEGLU (13.25);
* :mod:`.norm`: GroupNorm (13.9), (13.10), LayerNorm (13.26), adaptive LayerNorm (13.27);
* :mod:`.resample`: nearest x2 / average pooling (13.7), (13.8), patchify (13.28),
  pixel shuffle (13.29);
* :mod:`.attention`: masked and multi-head attention (13.14), (13.15), (13.22), (13.23).

The tuned versions the U-Net trains with are in :mod:`.fast`, tested equal to these.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import device as _device

from .._validate import check_array, check_finite_scalar
from ..backend import array_namespace
from ._check import check_cache, check_dout, check_size
from .activations import (  # noqa: F401  (re-exported)
    geglu_backward, geglu_forward, gelu_backward, gelu_forward, silu_backward, silu_forward,
)
from .attention import attention_backward, attention_forward  # noqa: F401  (re-exported)
from .conv import (  # noqa: F401  (re-exported)
    conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive, conv_output_size,
    conv_transpose2d_backward, conv_transpose2d_forward,
)
from .norm import (  # noqa: F401  (re-exported)
    adaln_backward, adaln_forward, groupnorm_backward, groupnorm_forward, layernorm_backward,
    layernorm_forward,
)
from .resample import (  # noqa: F401  (re-exported)
    avgpool2x_backward, avgpool2x_forward, patchify_backward, patchify_forward, pixel_shuffle_backward,
    pixel_shuffle_forward, pixel_unshuffle_backward, pixel_unshuffle_forward, unpatchify_backward,
    unpatchify_forward, upsample2x_backward, upsample2x_forward,
)

__all__ = [
    "linear_forward",
    "linear_backward",
    "silu_forward",
    "silu_backward",
    "gelu_forward",
    "gelu_backward",
    "geglu_forward",
    "geglu_backward",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "conv_output_size",
    "conv_transpose2d_forward",
    "conv_transpose2d_backward",
    "upsample2x_forward",
    "upsample2x_backward",
    "avgpool2x_forward",
    "avgpool2x_backward",
    "patchify_forward",
    "patchify_backward",
    "unpatchify_forward",
    "unpatchify_backward",
    "pixel_shuffle_forward",
    "pixel_shuffle_backward",
    "pixel_unshuffle_forward",
    "pixel_unshuffle_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "adaln_forward",
    "adaln_backward",
    "timestep_embedding_forward",
    "timestep_embedding_backward",
    "embedding_forward",
    "embedding_backward",
    "attention_forward",
    "attention_backward",
    "concat_forward",
    "concat_backward",
]


# ------------------------------------------------------------------------------- linear
def linear_forward(x, w, b):
    """Affine map ``out = x @ w + b`` for x (N, D_in), w (D_in, D_out), b (D_out,).
    NaN and inf propagate: not checked.

    MATH.md (13.1).  Returns ``(out, cache)``.

    Parameters
    ----------
    x : array, shape (N, D_in)
        Input rows.
    w : array, shape (D_in, D_out)
        Weight.
    b : array, shape (D_out,)
        Bias.

    Returns
    -------
    out : array, shape (N, D_out)
        ``x @ w + b``.
    cache : tuple
        ``(x, w)`` for :func:`linear_backward`.

    Raises
    ------
    ValueError
        If ``x`` and ``w`` are not 2-D with matching inner sizes, or ``b`` is not (D_out,).
    """
    check_array("x", x, ndim=2)
    check_array("w", w, ndim=2)
    check_array("b", b)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"linear_forward: x {tuple(x.shape)} and w {tuple(w.shape)} do not match "
                         "(need x (N, D_in), w (D_in, D_out))")
    if b.ndim != 1 or b.shape[0] != w.shape[1]:
        raise ValueError(f"linear_forward: bias b must have shape (D_out,) = ({w.shape[1]},), "
                         f"got {tuple(b.shape)}")
    return x @ w + b, (x, w)


def linear_backward(dout, cache):
    """Gradients of :func:`linear_forward`: ``dx = dout w^T, dw = x^T dout, db = sum_n dout``.
    NaN and inf propagate: not checked.

    MATH.md (13.2).  Returns ``(dx, dw, db)``.

    Parameters
    ----------
    dout : array, shape (N, D_out)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`linear_forward`.

    Returns
    -------
    dx : array, shape (N, D_in)
        Gradient with respect to ``x``.
    dw : array, shape (D_in, D_out)
        Gradient with respect to ``w``.
    db : array, shape (D_out,)
        Gradient with respect to ``b``.
    """
    x, w = check_cache(cache, "linear_forward", 2)
    check_dout(dout, (x.shape[0], w.shape[1]))
    xp = array_namespace(dout)
    return dout @ w.T, x.T @ dout, xp.sum(dout, axis=0)


# ----------------------------------------------------------------------- embeddings
def _dtype_name(dtype) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:  # an array-API namespace's dtype object
        return str(dtype).rsplit(".", 1)[-1]


def timestep_embedding_forward(t, dim: int, *, max_period: float = 10000.0, dtype=None):
    """Sinusoidal embedding of (integer or fractional) times t (N,) into (N, dim).
    MATH.md (13.12): ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k/half)``,
    k = 0..half-1, half = dim // 2 (a zero column is appended when dim is odd).
    NaN and inf propagate: not checked.

    ``t`` is cast to ``dtype`` (default float32 unless t is float64) before the product,
    so integer and fractional timesteps go through the same formula.

    Parameters
    ----------
    t : array, shape (N,)
        Times, integer or floating.
    dim : int
        Embedding width, at least 2.
    max_period : float, optional
        Base of the frequency ladder ``w_k = max_period^(-k/half)`` (default 10000).
    dtype : dtype, optional
        Dtype of the embedding; default float64 if ``t`` is float64, else float32.

    Returns
    -------
    out : array, shape (N, dim)
        ``[cos(t w_k), sin(t w_k)]`` (plus a zero column when ``dim`` is odd).
    cache : tuple
        ``(arg, omega, dim)`` for :func:`timestep_embedding_backward`.

    Raises
    ------
    ValueError
        If ``t`` is not 1-D or ``dim < 2``.
    """
    check_array("t", t, dtype="real")
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding_forward: t must have shape (N,), got {tuple(t.shape)}")
    dim = check_size("dim", dim, 2)
    max_period = check_finite_scalar("max_period", max_period, low=0.0, low_open=True)
    xp = array_namespace(t)
    if dtype is not None and _dtype_name(dtype) not in ("float32", "float64"):
        raise TypeError(f"dtype must be float32 or float64 (or None), got {dtype!r}")
    if dtype is None:
        dtype = t.dtype if t.dtype == xp.float64 else xp.float32
    half = dim // 2
    k = xp.arange(half, dtype=xp.float64, device=_device(t))
    omega = xp.astype(xp.exp(k * (-math.log(max_period) / half)), dtype)
    arg = xp.astype(t, dtype)[:, None] * omega[None, :]  # (N, half)
    parts = [xp.cos(arg), xp.sin(arg)]
    if dim % 2:
        parts.append(xp.zeros((t.shape[0], 1), dtype=dtype, device=_device(t)))
    return xp.concat(parts, axis=1), (arg, omega, dim)


def timestep_embedding_backward(dout, cache):
    """Derivative of the sinusoidal embedding with respect to t:
    ``dt = sum_k omega_k (cos(t w_k) d_sin,k - sin(t w_k) d_cos,k)``.  MATH.md (13.12).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, dim)
        Gradient with respect to the embedding.
    cache : tuple
        The cache returned by :func:`timestep_embedding_forward`.

    Returns
    -------
    dt : array, shape (N,)
        Gradient with respect to ``t``.
    """
    arg, omega, dim = check_cache(cache, "timestep_embedding_forward", 3)
    check_dout(dout, (arg.shape[0], dim))
    xp = array_namespace(dout)
    half = omega.shape[0]
    dcos, dsin = dout[:, :half], dout[:, half:2 * half]
    return xp.sum((xp.cos(arg) * dsin - xp.sin(arg) * dcos) * omega[None, :], axis=1)


def embedding_forward(y, table):
    """Learned embedding lookup ``out = table[y]`` for integer labels y (N,) and a
    table (K, D).  MATH.md (13.13).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    y : array of int, shape (N,)
        Labels in ``[0, K - 1]``.
    table : array, shape (K, D)
        Embedding table.

    Returns
    -------
    out : array, shape (N, D)
        Rows ``table[y]``.
    cache : tuple
        ``(y, K)`` for :func:`embedding_backward`.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D or a label lies outside ``[0, K - 1]``.
    """
    check_array("y", y, dtype="int", ndim=1)
    check_array("table", table, ndim=2)
    xp = array_namespace(table)
    K = table.shape[0]
    if y.shape[0] and (int(xp.min(y)) < 0 or int(xp.max(y)) >= K):
        raise ValueError(f"embedding_forward: labels must lie in [0, {K - 1}], got values in "
                         f"[{int(xp.min(y))}, {int(xp.max(y))}]")
    return xp.take(table, y, axis=0), (y, K)


def embedding_backward(dout, cache):
    """Gradient of the lookup: ``dtable = onehot(y)^T dout`` (rows of repeated labels add).
    MATH.md (13.13).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, D)
        Gradient with respect to the looked-up rows.
    cache : tuple
        The cache returned by :func:`embedding_forward`.

    Returns
    -------
    dtable : array, shape (K, D)
        Gradient with respect to ``table``.
    """
    y, K = check_cache(cache, "embedding_forward", 2)
    check_array("dout", dout, ndim=2)
    if dout.shape[0] != y.shape[0]:
        raise ValueError(f"dout must have the forward output's {y.shape[0]} rows, got shape {tuple(dout.shape)}")
    xp = array_namespace(dout)
    ks = xp.arange(K, device=_device(dout))
    onehot = xp.astype(y[:, None] == ks[None, :], dout.dtype)  # (N, K)
    return onehot.T @ dout


# ------------------------------------------------------------------------ skips
def _check_concat_args(a, b):
    check_array("a", a, ndim=4)
    check_array("b", b, ndim=4)
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"concat_forward: a and b must be NCHW arrays with the same N, H, W, got a "
                         f"{tuple(a.shape)} and b {tuple(b.shape)}")


def _check_concat_backward(dout, cache):
    if isinstance(cache, bool) or not isinstance(cache, int):
        raise TypeError(f"cache must be the int (Ca) returned by concat_forward, got {type(cache).__name__}")
    check_array("dout", dout, ndim=4)
    if not 0 < cache < dout.shape[1]:
        raise ValueError(f"cache (Ca = {cache}) must lie in [1, C - 1] for dout of shape {tuple(dout.shape)}")


def concat_forward(a, b):
    """Channel concatenation (U-Net skip) of a (N, Ca, H, W) and b (N, Cb, H, W).
    MATH.md (13.21).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    a : array, shape (N, Ca, H, W)
        First part.
    b : array, shape (N, Cb, H, W)
        Second part.

    Returns
    -------
    out : array, shape (N, Ca + Cb, H, W)
        ``a`` and ``b`` concatenated along the channel axis.
    cache : int
        ``Ca``, for :func:`concat_backward`.

    Raises
    ------
    ValueError
        If ``a`` and ``b`` are not 4-D with the same N, H, W.
    """
    _check_concat_args(a, b)
    xp = array_namespace(a, b)
    return xp.concat([a, b], axis=1), a.shape[1]  # (N, Ca + Cb, H, W)


def concat_backward(dout, cache):
    """Split the gradient of a channel concatenation back into its two parts.  MATH.md (13.21).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, Ca + Cb, H, W)
        Gradient with respect to the concatenation.
    cache : int
        The cache returned by :func:`concat_forward` (``Ca``).

    Returns
    -------
    da : array, shape (N, Ca, H, W)
        Gradient with respect to ``a``.
    db : array, shape (N, Cb, H, W)
        Gradient with respect to ``b``.
    """
    _check_concat_backward(dout, cache)
    ca = cache
    return dout[:, :ca, :, :], dout[:, ca:, :, :]
