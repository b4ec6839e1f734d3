"""Layers as pure forward/backward pairs (CS231n style), MATH.md chapter 13.

Every layer is two functions::

    out, cache = layer_forward(x, params...)
    dx, dparams... = layer_backward(dout, cache)

The cache is a plain tuple returned to the caller; no layer keeps anything on ``self``,
so a model may be run forward several times (guidance, Heun) before any backward.
All functions are array-namespace agnostic (NumPy, CuPy, array_api_strict): they ask
:func:`refdiff.backend.array_namespace` for the namespace of their inputs and use the
array API standard only.  Images are NCHW; vectors (N, D).

The convolution (``conv2d_forward``/``conv2d_backward``) is vectorised by gathering
shifted windows into a column matrix and multiplying it by the reshaped kernel
(MATH.md (13.4)), one cache-sized block of output rows at a time;
``conv2d_forward_naive``/``conv2d_backward_naive`` are the loop definitions beside it,
the executable specification that the tests compare against.
"""

from __future__ import annotations

import math

from array_api_compat import device as _device

from ..backend import array_namespace
from .attention import attention_backward, attention_forward  # noqa: F401  (re-exported)
from .conv import (  # noqa: F401  (re-exported: the convolution lives in conv.py)
    _cfirst,
    _nfirst,
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
)

__all__ = [
    "linear_forward",
    "linear_backward",
    "silu_forward",
    "silu_backward",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "conv_output_size",
    "upsample2x_forward",
    "upsample2x_backward",
    "avgpool2x_forward",
    "avgpool2x_backward",
    "groupnorm_forward",
    "groupnorm_backward",
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

    MATH.md (13.1).  Returns ``(out, cache)``.
    """
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"linear_forward: x {tuple(x.shape)} and w {tuple(w.shape)} do not match "
                         "(need x (N, D_in), w (D_in, D_out))")
    return x @ w + b, (x, w)


def linear_backward(dout, cache):
    """Gradients of :func:`linear_forward`: ``dx = dout w^T, dw = x^T dout, db = sum_n dout``.

    MATH.md (13.2).  Returns ``(dx, dw, db)``.
    """
    xp = array_namespace(dout)
    x, w = cache
    return dout @ w.T, x.T @ dout, xp.sum(dout, axis=0)


# --------------------------------------------------------------------------------- SiLU
def _sigmoid(xp, x):
    """``sigmoid(x) = 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2``, the tanh form: it
    cannot overflow (exp(-x) does for x < -88 in float32) and takes four elementwise
    passes, two of them in place, each keeping x's memory order.  Its error is absolute,
    at most a rounding unit of 1/2 (so sigmoid(x) below ~1e-8 in float32 rounds to 0)."""
    s = xp.tanh(0.5 * x)
    s *= 0.5
    s += 0.5
    return s


def silu_forward(x):
    """SiLU (swish) ``out = x * sigmoid(x)``, elementwise.  MATH.md (13.11)."""
    xp = array_namespace(x)
    s = _sigmoid(xp, x)
    return x * s, (x, s)


def silu_backward(dout, cache):
    """``dx = dout * s (1 + x (1 - s))`` with s = sigmoid(x).  MATH.md (13.11)."""
    x, s = cache
    dx = 1.0 - s  # one temporary, updated in place (keeps s's memory order)
    dx *= x
    dx += 1.0
    dx *= s
    dx *= dout
    return dx


# ------------------------------------------------------------------ resampling (x2)
def _check_image(x, what):
    if x.ndim != 4:
        raise ValueError(f"{what}: x must be (N, C, H, W), got shape {tuple(x.shape)}")


def upsample2x_forward(x):
    """Nearest-neighbour upsampling by 2: ``out[n,c,i,j] = x[n,c,i//2,j//2]``.  MATH.md (13.7).

    Built in (C, H, W, N) memory order (batch fastest), the order the vectorised
    convolution produces and reads; the result is returned as an NCHW view."""
    xp = array_namespace(x)
    _check_image(x, "upsample2x_forward")
    N, C, H, W = x.shape
    xT = xp.permute_dims(x, (1, 2, 3, 0))  # (C, H, W, N)
    out = xp.broadcast_to(xT[:, :, None, :, None, :], (C, H, 2, W, 2, N))
    out = xp.reshape(out, (C, 2 * H, 2 * W, N))  # (C, 2H, 2W, N)
    return xp.permute_dims(out, (3, 0, 1, 2)), None  # (N, C, 2H, 2W)


def upsample2x_backward(dout, cache):
    """Adjoint of nearest upsampling: each input pixel receives the sum of its 2x2 block.
    MATH.md (13.7)."""
    xp = array_namespace(dout)
    N, C, H2, W2 = dout.shape
    dT = xp.reshape(xp.permute_dims(dout, (1, 2, 3, 0)), (C, H2 // 2, 2, W2 // 2, 2, N))
    return xp.permute_dims(xp.sum(dT, axis=(2, 4)), (3, 0, 1, 2))  # (N, C, H, W)


def avgpool2x_forward(x):
    """2x2 average pooling with stride 2 (H, W even).  MATH.md (13.8)."""
    xp = array_namespace(x)
    _check_image(x, "avgpool2x_forward")
    N, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"avgpool2x_forward: H and W must be even, got {H}x{W}")
    xT = xp.reshape(xp.permute_dims(x, (1, 2, 3, 0)), (C, H // 2, 2, W // 2, 2, N))
    return xp.permute_dims(xp.mean(xT, axis=(2, 4)), (3, 0, 1, 2)), None  # (N, C, H/2, W/2)


def avgpool2x_backward(dout, cache):
    """Adjoint of 2x2 average pooling: a quarter of dout to each pixel of the block.
    MATH.md (13.8)."""
    xp = array_namespace(dout)
    N, C, H, W = dout.shape
    dT = xp.permute_dims(dout, (1, 2, 3, 0))  # (C, H, W, N)
    dx = xp.broadcast_to(0.25 * dT[:, :, None, :, None, :], (C, H, 2, W, 2, N))
    return xp.permute_dims(xp.reshape(dx, (C, 2 * H, 2 * W, N)), (3, 0, 1, 2))


# ---------------------------------------------------------------------------- GroupNorm
def groupnorm_forward(x, gamma, beta, groups: int, eps: float = 1e-5):
    """Group normalisation of x (N, C, ...) over (channels of a group) x (spatial),
    then the per-channel affine map ``gamma xhat + beta``.  MATH.md (13.9).

    ``groups`` must divide C.  Variance is the biased (1/M) one, as in the usual
    implementations.  Computed on the (G, M, N) view of the (C, ..., N) memory order that
    the convolutions use, so every reduction runs over contiguous rows; xhat is formed in
    place in the centred copy and the affine map adds beta in place (fewer temporaries).
    Returns ``(out, cache)``.
    """
    xp = array_namespace(x)
    if x.ndim < 2:
        raise ValueError(f"groupnorm_forward: x must be (N, C, ...), got shape {tuple(x.shape)}")
    N, C = x.shape[0], x.shape[1]
    if groups < 1 or C % groups:
        raise ValueError(f"groupnorm_forward: groups={groups} must divide C={C}")
    xT = _cfirst(xp, x)  # (C, ..., N)
    xg = xp.reshape(xT, (groups, -1, N))  # (G, M, N)
    xc = xg - xp.mean(xg, axis=1, keepdims=True)  # (G, M, N), a new array
    rstd = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=1, keepdims=True) + eps)  # (G, 1, N)
    xc *= rstd  # xhat, in place
    xhat = xp.reshape(xc, xT.shape)  # (C, ..., N)
    cshape = (C,) + (1,) * (x.ndim - 1)
    out = xhat * xp.reshape(gamma, cshape)
    out += xp.reshape(beta, cshape)
    return _nfirst(xp, out), (xhat, rstd, gamma, groups)


def groupnorm_backward(dout, cache):
    """Gradients of :func:`groupnorm_forward`.  MATH.md (13.10):
    ``dx = rstd (g - mean(g) - xhat mean(g xhat))`` with g = dout gamma, means over the group.

    The two group means are assembled from per-(channel, sample) sums over space, so
    the full-size passes are: the spatial sums of dout and of dout xhat, and
    ``dx = dout (gamma rstd) - rstd mean(g) - xhat (rstd mean(g xhat))`` with the
    bracketed factors of shape (C, 1, .., N).  Returns ``(dx, dgamma, dbeta)``."""
    xp = array_namespace(dout)
    xhat, rstd, gamma, groups = cache  # xhat (C, ..., N), rstd (G, 1, N)
    C, N = xhat.shape[0], xhat.shape[-1]
    G = groups
    dT = xp.reshape(_cfirst(xp, dout), (C, -1, N))  # (C, S, N)
    xh = xp.reshape(xhat, (C, -1, N))  # (C, S, N)
    S = xh.shape[1]
    sd = xp.sum(dT, axis=1)  # (C, N): sum over space of dout
    sdx = xp.sum(dT * xh, axis=1)  # (C, N): sum over space of dout xhat
    dbeta, dgamma = xp.sum(sd, axis=1), xp.sum(sdx, axis=1)
    gam = gamma[:, None]  # (C, 1)
    M = (C // G) * S
    mg = xp.sum(xp.reshape(gam * sd, (G, C // G, N)), axis=1) / M  # (G, N): mean(g)
    mgx = xp.sum(xp.reshape(gam * sdx, (G, C // G, N)), axis=1) / M  # (G, N): mean(g xhat)

    def per_channel(v):  # (G, N) -> (C, 1, N), each group's value for its channels
        return xp.reshape(xp.broadcast_to(v[:, None, :], (G, C // G, N)), (C, 1, N))

    r = rstd[:, 0, :]  # (G, N)
    t = xh * per_channel(r * mgx)  # (C, S, N)
    t += per_channel(r * mg)
    dx = dT * (gamma[:, None, None] * per_channel(r))  # (C, S, N)
    dx -= t
    return _nfirst(xp, xp.reshape(dx, xhat.shape)), dgamma, dbeta


# ----------------------------------------------------------------------- embeddings
def timestep_embedding_forward(t, dim: int, *, max_period: float = 10000.0, dtype=None):
    """Sinusoidal embedding of (integer or fractional) times t (N,) into (N, dim).
    MATH.md (13.12): ``[cos(t w_k), sin(t w_k)]`` with ``w_k = max_period^(-k/half)``,
    k = 0..half-1, half = dim // 2 (a zero column is appended when dim is odd).

    ``t`` is cast to ``dtype`` (default float32 unless t is float64) before the product,
    so integer and fractional timesteps go through the same formula.
    """
    xp = array_namespace(t)
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding_forward: t must have shape (N,), got {tuple(t.shape)}")
    if dim < 2:
        raise ValueError(f"timestep_embedding_forward: dim must be >= 2, got {dim}")
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
    ``dt = sum_k omega_k (cos(t w_k) d_sin,k - sin(t w_k) d_cos,k)``.  MATH.md (13.12)."""
    xp = array_namespace(dout)
    arg, omega, dim = cache
    half = omega.shape[0]
    dcos, dsin = dout[:, :half], dout[:, half:2 * half]
    return xp.sum((xp.cos(arg) * dsin - xp.sin(arg) * dcos) * omega[None, :], axis=1)


def embedding_forward(y, table):
    """Learned embedding lookup ``out = table[y]`` for integer labels y (N,) and a
    table (K, D).  MATH.md (13.13)."""
    xp = array_namespace(table)
    K = table.shape[0]
    if y.ndim != 1:
        raise ValueError(f"embedding_forward: labels must have shape (N,), got {tuple(y.shape)}")
    if y.shape[0] and (int(xp.min(y)) < 0 or int(xp.max(y)) >= K):
        raise ValueError(f"embedding_forward: labels must lie in [0, {K - 1}], got values in "
                         f"[{int(xp.min(y))}, {int(xp.max(y))}]")
    return xp.take(table, y, axis=0), (y, K)


def embedding_backward(dout, cache):
    """Gradient of the lookup: ``dtable = onehot(y)^T dout`` (rows of repeated labels add).
    MATH.md (13.13)."""
    xp = array_namespace(dout)
    y, K = cache
    ks = xp.arange(K, device=_device(dout))
    onehot = xp.astype(y[:, None] == ks[None, :], dout.dtype)  # (N, K)
    return onehot.T @ dout


# ------------------------------------------------------------------------ skips
def concat_forward(a, b):
    """Channel concatenation (U-Net skip) of a (N, Ca, H, W) and b (N, Cb, H, W).
    MATH.md (13.21).  Built in (C, H, W, N) memory order, like the convolution output."""
    xp = array_namespace(a, b)
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"concat_forward: need two NCHW arrays, got {tuple(a.shape)} and {tuple(b.shape)}")
    c = xp.concat([xp.permute_dims(a, (1, 2, 3, 0)), xp.permute_dims(b, (1, 2, 3, 0))], axis=0)
    return xp.permute_dims(c, (3, 0, 1, 2)), a.shape[1]  # (N, Ca + Cb, H, W)


def concat_backward(dout, cache):
    """Split the gradient of a channel concatenation back into its two parts.  MATH.md (13.21)."""
    ca = cache
    return dout[:, :ca, :, :], dout[:, ca:, :, :]
