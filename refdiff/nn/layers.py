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

import functools
import math

from array_api_compat import device as _device

from ..backend import array_namespace

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
def silu_forward(x):
    """SiLU (swish) ``out = x * sigmoid(x)``, elementwise.  MATH.md (13.11)."""
    xp = array_namespace(x)
    s = 1.0 / (1.0 + xp.exp(-x))
    return x * s, (x, s)


def silu_backward(dout, cache):
    """``dx = dout * s (1 + x (1 - s))`` with s = sigmoid(x).  MATH.md (13.11)."""
    x, s = cache
    return dout * (s * (1.0 + x * (1.0 - s)))


# --------------------------------------------------------------------------------- conv
def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution, ``floor((size + 2 pad - kernel) / stride) + 1``."""
    return (size + 2 * pad - kernel) // stride + 1


def _check_conv(x, w, stride, pad):
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d: x must be (N, C, H, W) and w (F, C, kh, kw); got x {tuple(x.shape)}, "
                         f"w {tuple(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels but w expects {w.shape[1]}")
    if stride < 1 or pad < 0:
        raise ValueError(f"conv2d: need stride >= 1 and pad >= 0, got stride={stride}, pad={pad}")
    kh, kw = w.shape[2], w.shape[3]
    Ho = conv_output_size(x.shape[2], kh, stride, pad)
    Wo = conv_output_size(x.shape[3], kw, stride, pad)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv2d: kernel {kh}x{kw} with pad={pad} is larger than the input "
                         f"{x.shape[2]}x{x.shape[3]}")
    return Ho, Wo


def _window(d: int, size: int, out: int, stride: int, pad: int):
    """For kernel offset ``d``: the output range [o0, o1) whose input row
    ``stride*o + d - pad`` lies inside [0, size), and the input start of that range."""
    o0 = max(0, -((d - pad) // stride))  # ceil((pad - d) / stride)
    o1 = min(out, (size - 1 - d + pad) // stride + 1)
    return o0, o1, stride * o0 + d - pad


def _chwn(xp, x):
    """x (N, C, H, W) as a (C, H, W, N) array with that memory order: free (a view) when
    x already is a transposed view of such an array, one transposing copy otherwise
    (reshape to 1-d copies exactly when the permuted view is not contiguous)."""
    return _cfirst(xp, x)


# Column-matrix chunks are kept near this many numbers (2 MiB of float32) so that the
# gather, the matrix products and the scatter of one chunk stay in cache.
_CHUNK_FLOATS = 1 << 19


@functools.lru_cache(maxsize=1024)
def _row_chunks(Ho: int, row_size: int, budget: int):
    """Split output rows [0, Ho) into blocks of about budget / row_size rows."""
    rows = max(1, budget // max(1, row_size))
    return tuple((r0, min(Ho, r0 + rows)) for r0 in range(0, Ho, rows))


@functools.lru_cache(maxsize=4096)
def _taps(kh, kw, H, W, Ho, Wo, stride, pad, r0, r1):
    """For output rows [r0, r1): every kernel tap (p, q) with the output rectangle
    [a0, a1) x [j0, j1) that reads inside the image, and the input slices it reads."""
    out = []
    for p in range(kh):
        i0, i1, si = _window(p, H, Ho, stride, pad)
        a0, a1 = max(i0, r0), min(i1, r1)
        if a1 <= a0:
            continue
        s0 = si + stride * (a0 - i0)
        rows_in = slice(s0, s0 + stride * (a1 - a0 - 1) + 1, stride)
        for q in range(kw):
            j0, j1, sj = _window(q, W, Wo, stride, pad)
            if j1 <= j0:
                continue
            cols_in = slice(sj, sj + stride * (j1 - j0 - 1) + 1, stride)
            out.append((p * kw + q, slice(a0 - r0, a1 - r0), slice(j0, j1), rows_in, cols_in))
    return tuple(out)


def _gather(xp, xT, w_shape, stride, pad, Ho, Wo, r0, r1):
    """Column matrix (C kh kw, (r1 - r0) Wo N) of output rows [r0, r1), MATH.md (13.4)."""
    C, H, W, N = xT.shape
    kh, kw = w_shape[2], w_shape[3]
    cols = xp.zeros((C, kh * kw, r1 - r0, Wo, N), dtype=xT.dtype, device=_device(xT))
    for k, ro, co, ri, ci in _taps(kh, kw, H, W, Ho, Wo, stride, pad, r0, r1):
        cols[:, k, ro, co, :] = xT[:, ri, ci, :]
    return xp.reshape(cols, (C * kh * kw, (r1 - r0) * Wo * N))  # (C kh kw, rows Wo N)


def _is_pointwise(w, stride, pad):
    return w.shape[2] == 1 and w.shape[3] == 1 and stride == 1 and pad == 0


def conv2d_forward(x, w, b, *, stride: int = 1, pad: int | None = None):
    """2-D cross-correlation ``out[n,f,i,j] = b[f] + sum_{c,p,q} w[f,c,p,q]
    x[n, c, s i + p - pad, s j + q - pad]`` (zero outside the image).  MATH.md (13.3)-(13.4).

    x (N, C, H, W), w (F, C, kh, kw), b (F,).  ``pad`` defaults to ``kh // 2`` ("same" for
    odd kernels at stride 1; 3x3 stride 2 pad 1 halves an even size).  Vectorised: the
    shifted windows are gathered into a column matrix (C kh kw, Ho Wo N) and multiplied by
    w reshaped to (F, C kh kw), a block of output rows at a time so that the column
    matrix stays in cache (it is not kept: the backward pass gathers it again).  The batch
    is the fastest axis, so each window copy moves runs of Wo*N contiguous numbers, and
    the output is an NCHW array that, on NumPy, is a transposed view of the (F, Ho, Wo, N)
    product: the next layers keep that memory order and the next convolution reads it
    without a transpose copy.
    """
    xp = array_namespace(x, w)
    pad = w.shape[2] // 2 if pad is None else pad
    Ho, Wo = _check_conv(x, w, stride, pad)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    xT = _chwn(xp, x)  # (C, H, W, N), batch fastest in memory
    w2 = xp.reshape(w, (F, C * kh * kw))  # (F, C kh kw)
    if _is_pointwise(w, stride, pad):
        out = w2 @ xp.reshape(xT, (C, H * W * N)) + b[:, None]  # (F, H W N)
        out = xp.reshape(out, (F, Ho, Wo, N))
    else:
        out = xp.empty((F, Ho, Wo, N), dtype=x.dtype, device=_device(x))
        for r0, r1 in _row_chunks(Ho, C * kh * kw * Wo * N, _CHUNK_FLOATS):
            cols = _gather(xp, xT, w.shape, stride, pad, Ho, Wo, r0, r1)
            out[:, r0:r1, :, :] = xp.reshape(w2 @ cols + b[:, None], (F, r1 - r0, Wo, N))
    return xp.permute_dims(out, (3, 0, 1, 2)), (xT, w, stride, pad)  # (N, F, Ho, Wo)


def conv2d_backward(dout, cache):
    """Gradients of :func:`conv2d_forward`.  MATH.md (13.5)-(13.6).

    Per block of output rows: ``dw += dout_mat cols^T``, and the column gradient
    ``w_mat^T dout_mat`` is scattered back by adding each shifted window into place
    (col2im, the adjoint of the gather); ``db = sum dout``.  Returns ``(dx, dw, db)``.
    """
    xp = array_namespace(dout)
    xT, w, stride, pad = cache
    C, H, W, N = xT.shape
    F, _, kh, kw = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    dT = _chwn(xp, dout)  # (F, Ho, Wo, N)
    db = xp.sum(xp.reshape(dT, (F, Ho * Wo * N)), axis=1)
    w2 = xp.reshape(w, (F, C * kh * kw))  # (F, C kh kw)
    if _is_pointwise(w, stride, pad):
        d2 = xp.reshape(dT, (F, H * W * N))
        dw = d2 @ xp.reshape(xT, (C, H * W * N)).T
        dxT = xp.reshape(w2.T @ d2, (C, H, W, N))
        return xp.permute_dims(dxT, (3, 0, 1, 2)), xp.reshape(dw, w.shape), db
    dw = xp.zeros((F, C * kh * kw), dtype=dout.dtype, device=_device(dout))
    if stride == 1 and Ho == H and Wo == W and kh == kw and 2 * pad == kh - 1:
        # "same" stride-1 convolution: (13.6) is the correlation of dout with the kernel
        # flipped in space and transposed in channels, so dx is gathered, not scattered.
        wf = xp.permute_dims(xp.flip(w, axis=(2, 3)), (1, 0, 2, 3))  # (C, F, kh, kw)
        wf2 = xp.reshape(wf, (C, F * kh * kw))  # (C, F kh kw)
        dxT = xp.empty((C, H, W, N), dtype=dout.dtype, device=_device(dout))
        for r0, r1 in _row_chunks(Ho, C * kh * kw * Wo * N, _CHUNK_FLOATS):
            d2 = xp.reshape(dT[:, r0:r1, :, :], (F, (r1 - r0) * Wo * N))  # (F, rows Wo N)
            dw = dw + d2 @ _gather(xp, xT, w.shape, 1, pad, Ho, Wo, r0, r1).T
            dcolsT = _gather(xp, dT, wf.shape, 1, pad, H, W, r0, r1)  # (F kh kw, rows W N)
            dxT[:, r0:r1, :, :] = xp.reshape(wf2 @ dcolsT, (C, r1 - r0, W, N))
        return xp.permute_dims(dxT, (3, 0, 1, 2)), xp.reshape(dw, w.shape), db
    dxT = xp.zeros((C, H, W, N), dtype=dout.dtype, device=_device(dout))
    for r0, r1 in _row_chunks(Ho, C * kh * kw * Wo * N, _CHUNK_FLOATS):
        d2 = xp.reshape(dT[:, r0:r1, :, :], (F, (r1 - r0) * Wo * N))  # (F, rows Wo N)
        dw = dw + d2 @ _gather(xp, xT, w.shape, stride, pad, Ho, Wo, r0, r1).T
        dcols = xp.reshape(w2.T @ d2, (C, kh * kw, r1 - r0, Wo, N))
        for k, ro, co, ri, ci in _taps(kh, kw, H, W, Ho, Wo, stride, pad, r0, r1):
            dxT[:, ri, ci, :] += dcols[:, k, ro, co, :]
    return xp.permute_dims(dxT, (3, 0, 1, 2)), xp.reshape(dw, w.shape), db


def conv2d_forward_naive(x, w, b, *, stride: int = 1, pad: int | None = None):
    """Loop definition of the convolution MATH.md (13.3): for every output pixel (i, j)
    and kernel tap (p, q), add ``x[:, :, s i + p - pad, s j + q - pad] @ w[:, :, p, q]^T``.
    The executable specification of :func:`conv2d_forward`; slow, for tests."""
    xp = array_namespace(x, w)
    pad = w.shape[2] // 2 if pad is None else pad
    Ho, Wo = _check_conv(x, w, stride, pad)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    out = xp.zeros((N, F, Ho, Wo), dtype=x.dtype, device=_device(x))
    for i in range(Ho):
        for j in range(Wo):
            acc = xp.zeros((N, F), dtype=x.dtype, device=_device(x)) + b
            for p in range(kh):
                for q in range(kw):
                    r, c = stride * i + p - pad, stride * j + q - pad
                    if 0 <= r < H and 0 <= c < W:
                        acc = acc + x[:, :, r, c] @ w[:, :, p, q].T
            out[:, :, i, j] = acc
    return out, (x, w, stride, pad)


def conv2d_backward_naive(dout, cache):
    """Loop definition of the convolution's gradients MATH.md (13.5)-(13.6): every
    (output pixel, tap) term of the forward sum sends ``dout @ w`` back to its input pixel
    and ``dout^T x`` to its weight."""
    xp = array_namespace(dout)
    x, w, stride, pad = cache
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    dx = xp.zeros(x.shape, dtype=x.dtype, device=_device(x))
    dw = xp.zeros(w.shape, dtype=w.dtype, device=_device(w))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            g = dout[:, :, i, j]  # (N, F)
            for p in range(kh):
                for q in range(kw):
                    r, c = stride * i + p - pad, stride * j + q - pad
                    if 0 <= r < H and 0 <= c < W:
                        dx[:, :, r, c] = dx[:, :, r, c] + g @ w[:, :, p, q]
                        dw[:, :, p, q] = dw[:, :, p, q] + g.T @ x[:, :, r, c]
    return dx, dw, xp.sum(dout, axis=(0, 2, 3))


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
def _cfirst(xp, x):
    """x (N, C, *S) as a (C, *S, N) array in that memory order (a free view when x is a
    transposed view of such an array, e.g. a convolution output; one copy otherwise)."""
    perm = tuple(range(1, x.ndim)) + (0,)
    shape = tuple(x.shape[i] for i in perm)
    size = 1
    for d in shape:
        size *= d
    return xp.reshape(xp.reshape(xp.permute_dims(x, perm), (size,)), shape)


def _nfirst(xp, xT):
    """Inverse of :func:`_cfirst`: (C, *S, N) -> an (N, C, *S) view."""
    return xp.permute_dims(xT, (xT.ndim - 1,) + tuple(range(xT.ndim - 1)))


def groupnorm_forward(x, gamma, beta, groups: int, eps: float = 1e-5):
    """Group normalisation of x (N, C, ...) over (channels of a group) x (spatial),
    then the per-channel affine map ``gamma xhat + beta``.  MATH.md (13.9).

    ``groups`` must divide C.  Variance is the biased (1/M) one, as in the usual
    implementations.  Computed on the (G, M, N) view of the (C, ..., N) memory order that
    the convolutions use, so every reduction runs over contiguous rows.
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
    mu = xp.mean(xg, axis=1, keepdims=True)  # (G, 1, N)
    xc = xg - mu
    rstd = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=1, keepdims=True) + eps)
    xhat = xp.reshape(xc * rstd, xT.shape)  # (C, ..., N)
    cshape = (C,) + (1,) * (x.ndim - 1)
    out = xhat * xp.reshape(gamma, cshape) + xp.reshape(beta, cshape)
    return _nfirst(xp, out), (xhat, rstd, gamma, groups)


def groupnorm_backward(dout, cache):
    """Gradients of :func:`groupnorm_forward`.  MATH.md (13.10):
    ``dx = rstd (g - mean(g) - xhat mean(g xhat))`` with g = dout gamma, means over the group.
    Returns ``(dx, dgamma, dbeta)``."""
    xp = array_namespace(dout)
    xhat, rstd, gamma, groups = cache  # xhat (C, ..., N), rstd (G, 1, N)
    C, N = xhat.shape[0], xhat.shape[-1]
    dT = _cfirst(xp, dout)  # (C, ..., N)
    d2 = xp.reshape(dT, (C, -1))  # (C, ... N)
    dgamma = xp.sum(d2 * xp.reshape(xhat, (C, -1)), axis=1)
    dbeta = xp.sum(d2, axis=1)
    g = xp.reshape(dT * xp.reshape(gamma, (C,) + (1,) * (xhat.ndim - 1)), (groups, -1, N))  # (G, M, N)
    xh = xp.reshape(xhat, (groups, -1, N))
    dx = rstd * (g - xp.mean(g, axis=1, keepdims=True) - xh * xp.mean(g * xh, axis=1, keepdims=True))
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


# ------------------------------------------------------------------------ attention
def attention_forward(q, k, v):
    """Scaled dot-product attention ``o = softmax(q k^T / sqrt(d)) v`` for q, k, v of
    shape (B, L, d) (softmax over the last axis, max-subtracted).  MATH.md (13.14)."""
    xp = array_namespace(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ xp.matrix_transpose(k)) * scale  # (B, L, L)
    s = s - xp.max(s, axis=-1, keepdims=True)
    e = xp.exp(s)
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return p @ v, (q, k, v, p, scale)


def attention_backward(dout, cache):
    """Gradients of :func:`attention_forward`.  MATH.md (13.15):
    ``dv = P^T do``, ``dS = P * (dP - rowsum(dP * P))`` with ``dP = do v^T``,
    ``dq = dS k / sqrt(d)``, ``dk = dS^T q / sqrt(d)``.  Returns ``(dq, dk, dv)``."""
    xp = array_namespace(dout)
    q, k, v, p, scale = cache
    dv = xp.matrix_transpose(p) @ dout
    dp = dout @ xp.matrix_transpose(v)
    ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True)) * scale
    return ds @ k, xp.matrix_transpose(ds) @ q, dv


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
