"""2-D convolution as a forward/backward pair (MATH.md (13.3)-(13.6)), vectorised, with the
loop definition beside it as the executable specification.

Memory order.  The vectorised convolution reads and writes activations in (C, H, W, N)
memory order (batch fastest) while they stay logically NCHW: its output is a transposed
view, elementwise layers preserve that order, and the next convolution reads it without
a copy (:func:`_cfirst` is free then).  The column matrix of MATH.md (13.4) is built one
cache-sized block of output rows at a time and is not kept for the backward pass.
"""

from __future__ import annotations

import functools

from array_api_compat import device as _device

from ..backend import array_namespace

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "conv_output_size",
]


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
