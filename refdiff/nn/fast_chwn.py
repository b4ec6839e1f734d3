"""The tuned layers' "chwn" layout (:func:`refdiff.nn.fast.set_layout`): the convolution in
(C, H, W, N) memory order, batch fastest, while arrays stay logically NCHW, and its GroupNorm
(MATH.md (13.9), (13.10)).  The column
matrix (MATH.md (13.4)) is gathered one cache-sized block of output rows at a time with
memoised slice tables, 3x3 stride-1 convolutions optionally by Winograd
(:func:`refdiff.nn.fast.set_conv3x3`, refdiff/nn/winograd.py).  Reached through
refdiff.nn.fast (arguments checked there); tested in tests/test_nn_fast.py and
tests/test_winograd.py.
"""

from __future__ import annotations

import functools

from array_api_compat import device as _device

from ..backend import array_namespace
from .conv import _check_conv
from . import winograd as _wg

__all__: list = []  # internal: reached through refdiff.nn.fast


def _winograd_tile(w, stride, pad):
    """The Winograd tile m of :func:`refdiff.nn.fast.set_conv3x3` (None: the direct method)."""
    from .fast import _winograd_tile as tile

    return tile(w, stride, pad)


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


def _window(d: int, size: int, out: int, stride: int, pad: int):
    """For kernel offset ``d``: the output range [o0, o1) whose input row
    ``stride*o + d - pad`` lies inside [0, size), and the input start of that range."""
    o0 = max(0, -((d - pad) // stride))  # ceil((pad - d) / stride)
    o1 = min(out, (size - 1 - d + pad) // stride + 1)
    return o0, o1, stride * o0 + d - pad


# Column-matrix chunks are kept near this many numbers (2 MiB of float32) so that the
# gather, the matrix products and the scatter of one chunk stay in a CPU cache.  On a GPU
# (CuPy) every further block is another dozen kernel launches and no cache is gained, so
# there the whole column matrix is one block (measured: benchmarks/gpu_profile.py).
_CHUNK_FLOATS = 1 << 19
_CHUNK_FLOATS_DEVICE = 1 << 62


def _chunk_budget(xp) -> int:
    """Column-block budget for namespace ``xp``: cache-sized on the host, unbounded on CuPy."""
    return _CHUNK_FLOATS_DEVICE if "cupy" in getattr(xp, "__name__", "") else _CHUNK_FLOATS


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


def _conv_forward_chwn(x, w, b, stride, pad):
    """:func:`conv2d_forward` in the (C, H, W, N) order (after the checks)."""
    xp = array_namespace(x, w)
    Ho, Wo = _check_conv(x, w, stride, pad, b)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    xT = _cfirst(xp, x)  # (C, H, W, N), batch fastest in memory
    m = _winograd_tile(w, stride, pad)
    if m is not None:
        out, wcache = _wg.conv3x3_forward(xp, xT, w, b, m)
        return xp.permute_dims(out, (3, 0, 1, 2)), ("winograd", wcache)
    w2 = xp.reshape(w, (F, C * kh * kw))  # (F, C kh kw)
    if _is_pointwise(w, stride, pad):
        out = w2 @ xp.reshape(xT, (C, H * W * N)) + b[:, None]  # (F, H W N)
        out = xp.reshape(out, (F, Ho, Wo, N))
    else:
        out = xp.empty((F, Ho, Wo, N), dtype=x.dtype, device=_device(x))
        for r0, r1 in _row_chunks(Ho, C * kh * kw * Wo * N, _chunk_budget(xp)):
            cols = _gather(xp, xT, w.shape, stride, pad, Ho, Wo, r0, r1)
            out[:, r0:r1, :, :] = xp.reshape(w2 @ cols + b[:, None], (F, r1 - r0, Wo, N))
    return xp.permute_dims(out, (3, 0, 1, 2)), (xT, w, stride, pad)  # (N, F, Ho, Wo)


def _conv_backward_chwn(dout, cache):
    """:func:`conv2d_backward` in the (C, H, W, N) order (after the checks)."""
    xp = array_namespace(dout)
    if isinstance(cache[0], str):  # ("winograd", its cache)
        dxT, dw, db = _wg.conv3x3_backward(xp, _cfirst(xp, dout), cache[1])
        return xp.permute_dims(dxT, (3, 0, 1, 2)), dw, db
    xT, w, stride, pad = cache
    C, H, W, N = xT.shape
    F, _, kh, kw = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    dT = _cfirst(xp, dout)  # (F, Ho, Wo, N)
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
        for r0, r1 in _row_chunks(Ho, C * kh * kw * Wo * N, _chunk_budget(xp)):
            d2 = xp.reshape(dT[:, r0:r1, :, :], (F, (r1 - r0) * Wo * N))  # (F, rows Wo N)
            dw = dw + d2 @ _gather(xp, xT, w.shape, 1, pad, Ho, Wo, r0, r1).T
            dcolsT = _gather(xp, dT, wf.shape, 1, pad, H, W, r0, r1)  # (F kh kw, rows W N)
            dxT[:, r0:r1, :, :] = xp.reshape(wf2 @ dcolsT, (C, r1 - r0, W, N))
        return xp.permute_dims(dxT, (3, 0, 1, 2)), xp.reshape(dw, w.shape), db
    dxT = xp.zeros((C, H, W, N), dtype=dout.dtype, device=_device(dout))
    for r0, r1 in _row_chunks(Ho, C * kh * kw * Wo * N, _chunk_budget(xp)):
        d2 = xp.reshape(dT[:, r0:r1, :, :], (F, (r1 - r0) * Wo * N))  # (F, rows Wo N)
        dw = dw + d2 @ _gather(xp, xT, w.shape, stride, pad, Ho, Wo, r0, r1).T
        dcols = xp.reshape(w2.T @ d2, (C, kh * kw, r1 - r0, Wo, N))
        for k, ro, co, ri, ci in _taps(kh, kw, H, W, Ho, Wo, stride, pad, r0, r1):
            dxT[:, ri, ci, :] += dcols[:, k, ro, co, :]
    return xp.permute_dims(dxT, (3, 0, 1, 2)), xp.reshape(dw, w.shape), db


# ------------------------------------------------------------------ GroupNorm
def groupnorm_forward_chwn(xp, x, gamma, beta, groups, eps):
    """:func:`refdiff.nn.fast.groupnorm_forward` in this layout (after the checks), MATH.md
    (13.9): on the (G, M, N) view of the (C, ..., N) order, xhat formed in place."""
    N, C = x.shape[0], x.shape[1]
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


def groupnorm_backward_chwn(dout, cache):
    """:func:`refdiff.nn.fast.groupnorm_backward` in this layout (after the checks), MATH.md (13.10)."""
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
