"""Tuned versions of the reference layers (same signatures, same results to rounding).

The reference layers (``layers.py``, ``conv.py``) transcribe their equations in NCHW.
This module computes the same maps faster on a CPU, and the U-Net's training path
(``blocks.py``, ``unet.py``) uses it; ``tests/test_nn_fast.py`` checks every function here
against its reference twin, forward and backward, in float64 and float32.  The tricks:

* **two layouts** (:func:`set_layout`): "hwnc" (the default, NumPy arrays) hands every
  layer to refdiff/nn/fast_hwnc.py, which keeps (H, W, N, C) order and runs 3x3
  convolutions by Winograd F(4x4, 3x3) (MATH.md (23.6)); the items below describe the
  "chwn" layout of this module (CuPy, and NumPy after ``set_layout("chwn")``);
* **the "hwnc" fused GroupNorm + SiLU** in two forms (:func:`set_gnsilu`): "fast" (the
  default, one-pass statistics, MATH.md (23.9)) and "exact" (bit-identical to the two
  layers);
* **memory order** (C, H, W, N), batch fastest, while arrays stay logically NCHW: the
  convolution writes its output as a transposed view of an (F, Ho, Wo, N) product,
  elementwise layers keep that order, GroupNorm reduces over contiguous rows of its
  (G, M, N) view, resampling and concatenation build their output in that order, and the
  next convolution reads it without a copy (:func:`_cfirst` is free then);
* **the convolution** gathers its column matrix (MATH.md (13.4)) one cache-sized block of
  output rows at a time with memoised slice tables (``lru_cache``: pure functions of
  shapes), does not keep it for the backward pass, and computes (13.6) by three paths:
  a product for 1x1 kernels, a flipped-kernel gather for "same" stride-1 kernels, a
  scatter of shifted slices otherwise;
* **in-place updates** in SiLU and GroupNorm (fewer full-size temporaries);
* **the GroupNorm backward** (13.10) assembled from per-(channel, sample) spatial sums.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import functools

from array_api_compat import device as _device

from .._validate import check_array
from ..backend import array_namespace
from ._check import check_cache, check_dout
from .conv import _check_cfirst_conv_backward, _check_conv
from .layers import _check_concat_args, _check_concat_backward
from .norm import _check_groupnorm_args
from .resample import _resample_backward_checks
from .resample import _check_image
from . import fast_hwnc as _hw
from . import fast_hwnc_norm as _hwn
from . import winograd as _wg

import numpy as _np

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "silu_forward",
    "silu_backward",
    "groupnorm_forward",
    "groupnorm_backward",
    "groupnorm_silu_forward",
    "groupnorm_silu_backward",
    "upsample2x_forward",
    "upsample2x_backward",
    "avgpool2x_forward",
    "avgpool2x_backward",
    "concat_forward",
    "concat_backward",
    "add_channel_shift",
    "set_conv3x3",
    "get_conv3x3",
    "set_layout",
    "get_layout",
    "set_gnsilu",
    "get_gnsilu",
    "groupnorm_silu_shift_forward",
    "groupnorm_silu_shift_backward",
    "set_shift_fold",
    "get_shift_fold",
]

# How 3x3 stride-1 pad-1 convolutions with C >= 2 are computed in the "chwn" layout (the
# "hwnc" layout, the default on NumPy, always uses its own F(4,3): see set_layout): "f43"
# (Winograd F(4x4, 3x3), MATH.md (23.2)), "f23" (F(2x2, 3x3)) or "direct" (the
# column-matrix product).  The default is "direct" because F(4,3) did not measure faster for the default U-Net
# (8x8 and 4x4 images, 32-64 channels) on the 2-core test VM: whole training step at batch
# 128, one thread, three runs at load 3-13: F(4,3) 468 / 138 / 256 ms against direct
# 405 / 143 / 250 ms (equal within the noise), and per layer (fwd + bwd, 32 -> 32
# channels, 8x8, batch 128) 12.0 against 6.5 ms (benchmarks/bench_unet_train.py,
# benchmarks/results/cpu-2026-11-30).  The direct method also keeps float32 rounding
# (MATH.md (23.5)) and, on CuPy, avoids the ~200 small transform operations per
# Winograd convolution that a launch-bound GPU step would pay for.
def _swap(store: dict, key: str, value, allowed: list, what: str):
    """Set ``store[key] = value`` after checking it is one of ``allowed`` (ValueError naming
    ``what``); returns the previous value (the tuned path's switches)."""
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    old, store[key] = store[key], value
    return old


_CONV3X3 = {"method": "direct"}
_CONV3X3_METHODS = {"f43": 4, "f23": 2, "direct": None}


def set_conv3x3(method: str) -> str:
    """Choose the 3x3 convolution method of the tuned path's "chwn" layout ("f43", "f23"
    or "direct"); returns the previous one.  All three compute the same map (tests/test_winograd.py);
    they differ in speed and in float32 rounding (MATH.md (23.5)).

    Parameters
    ----------
    method : {"f43", "f23", "direct"}
        The method for 3x3 stride-1 pad-1 convolutions with C >= 2.

    Returns
    -------
    str
        The previous method.

    Raises
    ------
    ValueError
        If ``method`` is not one of the three.
    """
    return _swap(_CONV3X3, "method", method, sorted(_CONV3X3_METHODS), "conv3x3 method")


def get_conv3x3() -> str:
    """The current 3x3 convolution method of the tuned path (see :func:`set_conv3x3`)."""
    return _CONV3X3["method"]


# Memory order of the tuned path: "chwn" ((C, H, W, N), batch fastest; this module, with
# the 3x3 method of set_conv3x3) or "hwnc" ((H, W, N, C), channels fastest, every 3x3
# stride-1 convolution with C >= 2 by Winograd F(4x4, 3x3) with matrix-product transforms:
# refdiff/nn/fast_hwnc.py).  Arrays are logically NCHW in both; "hwnc" applies to NumPy
# arrays (CuPy runs "chwn").  The default is "hwnc": the default U-Net's training step at
# batch 128, one thread, CPU time, 2-core VM: hwnc 72 ms against chwn/direct 100 ms and
# PyTorch 51 ms (benchmarks/README.md, round 4).  set_layout("chwn") with
# set_conv3x3("direct") keeps the direct method's float32 rounding.  The environment
# variable REFDIFF_LAYOUT (chwn or hwnc) sets the layout at import, so command-line runs
# can choose it too (e.g. `REFDIFF_LAYOUT=chwn refdiff train ...`).
_LAYOUTS = ("chwn", "hwnc")


def _layout_from_env() -> str:
    import os

    name = os.environ.get("REFDIFF_LAYOUT", "hwnc")
    if name not in _LAYOUTS:
        raise ValueError(f"the environment variable REFDIFF_LAYOUT must be one of {list(_LAYOUTS)}, got {name!r}")
    return name


_LAYOUT = {"name": _layout_from_env()}


def set_layout(layout: str) -> str:
    """Choose the memory order of the tuned path ("chwn" or "hwnc"); returns the previous
    one.  Both compute the same maps as the reference layers (tests/test_nn_fast.py,
    tests/test_nn_fast_hwnc.py); "hwnc" runs every 3x3 stride-1 convolution with C >= 2
    by Winograd F(4x4, 3x3) in the batched form MATH.md (23.6) (float32 rounding as
    MATH.md (23.5)) and ignores :func:`set_conv3x3`.  Selecting "hwnc" also calls
    :func:`refdiff.nn.fast_hwnc.keep_freed_memory` (glibc keeps freed blocks for reuse:
    no page faults per step; process-wide).

    Parameters
    ----------
    layout : {"chwn", "hwnc"}
        The memory order.

    Returns
    -------
    str
        The previous layout.

    Raises
    ------
    ValueError
        If ``layout`` is not one of the two.
    """
    old = _swap(_LAYOUT, "name", layout, list(_LAYOUTS), "layout")
    if layout == "hwnc":
        _hw.keep_freed_memory()
    return old


def get_layout() -> str:
    """The current memory order of the tuned path (see :func:`set_layout`)."""
    return _LAYOUT["name"]


def _hwnc(*arrays) -> bool:
    """True when the "hwnc" layout is selected and the arrays are NumPy arrays (a plain
    loop: ~200 calls per training step, a generator costs more than the test)."""
    if _LAYOUT["name"] != "hwnc":
        return False
    for a in arrays:
        if not isinstance(a, _np.ndarray):
            return False
    return True


def _tokens(xp, h):
    """(N, C, H, W) -> the pixel-major (H W N, C) token matrix (free in either layout when
    h is in that layout's memory order)."""
    if _hwnc(h):
        return _hw.tokens(h)
    N, C, H, W = h.shape
    return xp.reshape(xp.permute_dims(h, (1, 2, 3, 0)), (C, H * W * N)).T


def _from_tokens(xp, o, shape):
    """Inverse of :func:`_tokens`: (H W N, C) -> an (N, C, H, W) view."""
    if _hwnc(o):
        return _hw.from_tokens(o, shape)
    N, C, H, W = shape
    return xp.permute_dims(xp.reshape(o.T, (C, H, W, N)), (3, 0, 1, 2))


def _winograd_tile(w, stride, pad):
    """The Winograd tile m for this convolution, or None for the direct method."""
    if w.shape[2] == 3 and w.shape[3] == 3 and stride == 1 and pad == 1 and w.shape[1] >= 2:
        return _CONV3X3_METHODS[_CONV3X3["method"]]
    return None


# ------------------------------------------------------------------ convolution
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


def conv2d_forward(x, w, b, *, stride: int = 1, pad: int | None = None):
    """2-D cross-correlation ``out[n,f,i,j] = b[f] + sum_{c,p,q} w[f,c,p,q]
    x[n, c, s i + p - pad, s j + q - pad]`` (zero outside the image).  MATH.md (13.3), (13.4).

    x (N, C, H, W), w (F, C, kh, kw), b (F,).  ``pad`` defaults to ``kh // 2`` ("same" for
    odd kernels at stride 1; 3x3 stride 2 pad 1 halves an even size).  Vectorised: the
    shifted windows are gathered into a column matrix (C kh kw, Ho Wo N) and multiplied by
    w reshaped to (F, C kh kw), a block of output rows at a time so that the column
    matrix stays in cache (it is not kept: the backward pass gathers it again).  The batch
    is the fastest axis, so each window copy moves runs of Wo*N contiguous numbers, and
    the output is an NCHW array that, on NumPy, is a transposed view of the (F, Ho, Wo, N)
    product: the next layers keep that memory order and the next convolution reads it
    without a transpose copy.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Inputs.
    w : array, shape (F, C, kh, kw)
        Kernel.
    b : array, shape (F,)
        Bias.
    stride : int, default 1
        Stride, >= 1.
    pad : int, optional
        Zero padding on each side, >= 0; None (default): ``kh // 2``.

    Returns
    -------
    out : array, shape (N, F, Ho, Wo)
        The output (on NumPy, a transposed view of an (F, Ho, Wo, N) array).
    cache : tuple
        For :func:`conv2d_backward`.

    Raises
    ------
    ValueError
        If the shapes are inconsistent, ``stride < 1``, ``pad < 0``, or the kernel does not
        fit the padded input.
    """
    check_array("x", x)  # issue 19: checked before w.shape is read
    check_array("w", w, ndim=4)
    pad = w.shape[2] // 2 if pad is None else pad
    _check_conv(x, w, stride, pad, b)
    return _conv_f(x, w, b, stride, pad)


def _conv_f(x, w, b, stride, pad):
    """:func:`conv2d_forward` without the argument checks (``pad`` given): the internal
    entry of the U-Net's tuned loop, whose arguments were checked at the model boundary."""
    if _hwnc(x, w, b):
        return _hw.conv_forward(x, w, b, stride, pad)
    return _conv_forward_chwn(x, w, b, stride, pad)


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


def conv2d_backward(dout, cache):
    """Gradients of :func:`conv2d_forward`.  MATH.md (13.5), (13.6).

    Per block of output rows: ``dw += dout_mat cols^T``, and the column gradient
    ``w_mat^T dout_mat`` is scattered back by adding each shifted window into place
    (col2im, the adjoint of the gather); ``db = sum dout``.  Returns ``(dx, dw, db)``.

    Parameters
    ----------
    dout : array, shape (N, F, Ho, Wo)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`conv2d_forward`.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dw : array, shape (F, C, kh, kw)
    db : array, shape (F,)
        Gradients with respect to x, w and b.
    """
    _check_cfirst_conv_backward(dout, cache)  # issue 19
    return _conv_b(dout, cache)


def _conv_b(dout, cache):
    """:func:`conv2d_backward` without the argument checks (the tuned loop's entry)."""
    if isinstance(cache[0], str) and cache[0].startswith("hwnc"):
        return _hw.conv_backward(dout, cache)
    return _conv_backward_chwn(dout, cache)


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


# ------------------------------------------------------------------ SiLU
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
    """SiLU (swish) ``out = x * sigmoid(x)``, elementwise.  MATH.md (13.11).

    Parameters
    ----------
    x : array
        Input, any shape.

    Returns
    -------
    out : array
        ``x * sigmoid(x)``, the shape of ``x``.
    cache : tuple
        ``(x, sigmoid(x))`` for :func:`silu_backward`.
    """
    check_array("x", x)  # issue 19 (cheap: NaN propagates)
    xp = array_namespace(x)
    s = _sigmoid(xp, x)
    return x * s, (x, s)


def silu_backward(dout, cache):
    """``dx = dout * s (1 + x (1 - s))`` with s = sigmoid(x).  MATH.md (13.11).

    Parameters
    ----------
    dout : array
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`silu_forward`.

    Returns
    -------
    array
        Gradient with respect to the input.
    """
    x, s = check_cache(cache, "silu_forward", 2)  # issue 19
    check_dout(dout, x.shape)
    dx = 1.0 - s  # one temporary, updated in place (keeps s's memory order)
    dx *= x
    dx += 1.0
    dx *= s
    dx *= dout
    return dx


# ------------------------------------------------------------------ resampling (x2)
def upsample2x_forward(x):
    """Nearest-neighbour upsampling by 2: ``out[n,c,i,j] = x[n,c,i//2,j//2]``.  MATH.md (13.7).

    Built in (C, H, W, N) memory order (batch fastest), the order the vectorised
    convolution produces and reads; the result is returned as an NCHW view.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The images.

    Returns
    -------
    out : array, shape (N, C, 2H, 2W)
        The upsampled images (an NCHW view of a (C, 2H, 2W, N) array).
    cache : None
        Nothing is needed by the backward pass.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D.
    """
    _check_image(x, "upsample2x_forward")
    if _hwnc(x):
        return _hw.upsample2x_forward(x)
    xp = array_namespace(x)
    N, C, H, W = x.shape
    xT = xp.permute_dims(x, (1, 2, 3, 0))  # (C, H, W, N)
    out = xp.broadcast_to(xT[:, :, None, :, None, :], (C, H, 2, W, 2, N))
    out = xp.reshape(out, (C, 2 * H, 2 * W, N))  # (C, 2H, 2W, N)
    return xp.permute_dims(out, (3, 0, 1, 2)), None  # (N, C, 2H, 2W)


def upsample2x_backward(dout, cache):
    """Adjoint of nearest upsampling: each input pixel receives the sum of its 2x2 block.
    MATH.md (13.7).

    Parameters
    ----------
    dout : array, shape (N, C, 2H, 2W)
        Gradient with respect to the output.
    cache : None
        The cache of :func:`upsample2x_forward` (unused).

    Returns
    -------
    array, shape (N, C, H, W)
        Gradient with respect to the input.
    """
    _resample_backward_checks(dout, cache, "upsample2x")  # issue 19
    if _hwnc(dout):
        return _hw.upsample2x_backward(dout)
    xp = array_namespace(dout)
    N, C, H2, W2 = dout.shape
    dT = xp.reshape(xp.permute_dims(dout, (1, 2, 3, 0)), (C, H2 // 2, 2, W2 // 2, 2, N))
    return xp.permute_dims(xp.sum(dT, axis=(2, 4)), (3, 0, 1, 2))  # (N, C, H, W)


def avgpool2x_forward(x):
    """2x2 average pooling with stride 2 (H, W even).  MATH.md (13.8).

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The images; H and W even.

    Returns
    -------
    out : array, shape (N, C, H/2, W/2)
        The pooled images.
    cache : None
        Nothing is needed by the backward pass.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D or H or W is odd.
    """
    _check_image(x, "avgpool2x_forward")
    xp = array_namespace(x)
    N, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"avgpool2x_forward: H and W must be even, got {H}x{W}")
    if _hwnc(x):
        return _hw.avgpool2x_forward(x)
    xT = xp.reshape(xp.permute_dims(x, (1, 2, 3, 0)), (C, H // 2, 2, W // 2, 2, N))
    return xp.permute_dims(xp.mean(xT, axis=(2, 4)), (3, 0, 1, 2)), None  # (N, C, H/2, W/2)


def avgpool2x_backward(dout, cache):
    """Adjoint of 2x2 average pooling: a quarter of dout to each pixel of the block.
    MATH.md (13.8).

    Parameters
    ----------
    dout : array, shape (N, C, H/2, W/2)
        Gradient with respect to the output.
    cache : None
        The cache of :func:`avgpool2x_forward` (unused).

    Returns
    -------
    array, shape (N, C, H, W)
        Gradient with respect to the input.
    """
    _resample_backward_checks(dout, cache, "avgpool2x")  # issue 19
    if _hwnc(dout):
        return _hw.avgpool2x_backward(dout)
    xp = array_namespace(dout)
    N, C, H, W = dout.shape
    dT = xp.permute_dims(dout, (1, 2, 3, 0))  # (C, H, W, N)
    dx = xp.broadcast_to(0.25 * dT[:, :, None, :, None, :], (C, H, 2, W, 2, N))
    return xp.permute_dims(xp.reshape(dx, (C, 2 * H, 2 * W, N)), (3, 0, 1, 2))


# ------------------------------------------------------------------ GroupNorm
def groupnorm_forward(x, gamma, beta, groups: int, eps: float = 1e-5):
    """Group normalisation of x (N, C, ...) over (channels of a group) x (spatial),
    then the per-channel affine map ``gamma xhat + beta``.  MATH.md (13.9).

    ``groups`` must divide C.  Variance is the biased (1/M) one, as in the usual
    implementations.  Computed on the (G, M, N) view of the (C, ..., N) memory order that
    the convolutions use, so every reduction runs over contiguous rows; xhat is formed in
    place in the centred copy and the affine map adds beta in place (fewer temporaries).
    Returns ``(out, cache)``.

    Parameters
    ----------
    x : array, shape (N, C, ...)
        Input.
    gamma : array, shape (C,)
        Per-channel scale.
    beta : array, shape (C,)
        Per-channel shift.
    groups : int
        Number of groups, a positive int dividing C.
    eps : float, default 1e-5
        Added to the variance.

    Returns
    -------
    out : array, shape (N, C, ...)
        The normalised and affinely mapped input.
    cache : tuple
        For :func:`groupnorm_backward`.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 axes, ``groups`` does not divide C, or ``gamma`` or
        ``beta`` does not have shape (C,).
    """
    _check_groupnorm_args(x, gamma, beta, groups, eps)  # issue 19 (groups divide C, gamma and beta (C,))
    xp = array_namespace(x)
    N, C = x.shape[0], x.shape[1]
    if _hwnc(x, gamma, beta):
        out, c = _hwn.groupnorm_forward(x, gamma, beta, groups, eps)
        return out, ("hwnc", c)  # tagged, as the conv and fused caches are
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
    bracketed factors of shape (C, 1, .., N).  Returns ``(dx, dgamma, dbeta)``.

    Parameters
    ----------
    dout : array, shape (N, C, ...)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`groupnorm_forward`.

    Returns
    -------
    dx : array, shape (N, C, ...)
    dgamma : array, shape (C,)
    dbeta : array, shape (C,)
        Gradients with respect to x, gamma and beta.
    """
    if isinstance(cache, tuple) and len(cache) == 2 and cache[0] == "hwnc":  # the hwnc layout's cache
        inner = check_cache(cache[1], "groupnorm_forward", 5, name="cache[1]")
        shape = inner[4]  # (*S, N, C)
        check_dout(dout, tuple(shape[-2:]) + tuple(shape[:-2]))
        return _hwn.groupnorm_backward(dout, inner)
    xhat, rstd, gamma, groups = check_cache(cache, "groupnorm_forward", 4)  # issue 19
    check_dout(dout, (xhat.shape[-1],) + tuple(xhat.shape[:-1]))
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


# How the "hwnc" layout computes GroupNorm + SiLU: "exact" (bit for bit the two layers,
# MATH.md (23.7)) or "fast" (five full-size passes forward instead of ten, within the float32
# bound of MATH.md (23.11)).  Default chosen by measurement: benchmarks/README.md, round 7.
_GNSILU_MODES = ("exact", "fast")
_GNSILU = {"mode": "fast"}


def set_gnsilu(mode: str) -> str:
    """Choose the "hwnc" layout's fused GroupNorm + SiLU: "exact" (bit-identical to
    GroupNorm then SiLU, MATH.md (23.7)) or "fast" (fewer passes, one-pass statistics,
    MATH.md (23.9), MATH.md (23.10), float32 bound MATH.md (23.11)); returns the previous
    mode.  A cache remembers the form that made it, so switching between a forward and its
    backward is safe.

    Parameters
    ----------
    mode : {"exact", "fast"}
        The form.

    Returns
    -------
    str
        The previous mode.

    Raises
    ------
    ValueError
        If ``mode`` is not one of the two.
    """
    return _swap(_GNSILU, "mode", mode, list(_GNSILU_MODES), "gnsilu mode")


def get_gnsilu() -> str:
    """The current form of the "hwnc" fused GroupNorm + SiLU (see :func:`set_gnsilu`)."""
    return _GNSILU["mode"]


def groupnorm_silu_forward(x, gamma, beta, groups: int, eps: float = 1e-5):
    """``silu(groupnorm(x))`` (GroupNorm followed by SiLU, as in the residual blocks),
    MATH.md (13.9), MATH.md (13.11), MATH.md (23.7).

    In the "hwnc" layout one fused pass sequence (y/2 = x (gamma rstd / 2) + shift per
    (sample, channel), silu(y) = (y/2)(1 + tanh(y/2))) in the form chosen by
    :func:`set_gnsilu`: "fast" (the default, ``fast_hwnc_norm.groupnorm_silu_forward_fast``,
    one-pass statistics, MATH.md (23.9), MATH.md (23.10), within the float32 bound
    MATH.md (23.11)) or "exact" (``fast_hwnc_norm.groupnorm_silu_forward``, bit for bit the
    two layers, MATH.md chapter 23.6); otherwise :func:`groupnorm_forward` then
    :func:`silu_forward`.  The same map and the same argument checks as
    :func:`groupnorm_forward`.  Returns ``(out, cache)``.

    Parameters
    ----------
    x : array, shape (N, C, ...)
        Input.
    gamma : array, shape (C,)
        Per-channel scale.
    beta : array, shape (C,)
        Per-channel shift.
    groups : int
        Number of groups, a positive int dividing C.
    eps : float, default 1e-5
        Added to the variance.

    Returns
    -------
    out : array, shape (N, C, ...)
        ``silu(gamma xhat + beta)``.
    cache : tuple
        For :func:`groupnorm_silu_backward`.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 axes, ``groups`` does not divide C, or ``gamma`` or
        ``beta`` does not have shape (C,).
    """
    if _hwnc(x, gamma, beta):
        return _gnsilu_f(x, gamma, beta, groups, _check_groupnorm_args(x, gamma, beta, groups, eps))  # issue 19
    y, c_n = groupnorm_forward(x, gamma, beta, groups, eps)
    out, c_s = silu_forward(y)
    return out, ((c_n, c_s), "composed")


def _gnsilu_f(x, gamma, beta, groups, eps):
    """:func:`groupnorm_silu_forward` without the argument checks (eps a float): the
    tuned loop's entry (the checked public function in the other layouts)."""
    if not _hwnc(x, gamma, beta):
        return groupnorm_silu_forward(x, gamma, beta, groups, eps)
    if _GNSILU["mode"] == "fast":
        out, c = _hwn.groupnorm_silu_forward_fast(x, gamma, beta, groups, eps)
        return out, (c, "hwnc_fast")
    out, c = _hwn.groupnorm_silu_forward(x, gamma, beta, groups, eps)
    return out, (c, "hwnc")


def groupnorm_silu_backward(dout, cache):
    """Gradients of :func:`groupnorm_silu_forward`: ``(dx, dgamma, dbeta)``.
    MATH.md (13.10), MATH.md (23.7): the SiLU derivative folded into the GroupNorm backward's
    spatial sums in the "hwnc" layout (a composition otherwise).

    Parameters
    ----------
    dout : array, shape (N, C, ...)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`groupnorm_silu_forward`.

    Returns
    -------
    dx : array, shape (N, C, ...)
    dgamma : array, shape (C,)
    dbeta : array, shape (C,)
        Gradients with respect to x, gamma and beta.
    """
    inner, kind = check_cache(cache, "groupnorm_silu_forward", 2)  # issue 19
    if kind in ("hwnc", "hwnc_fast"):
        n = 7 if kind == "hwnc" else 8
        shape = check_cache(inner, "groupnorm_silu_forward", n, name="cache[0]")[n - 1]  # (*S, N, C)
        check_dout(dout, tuple(shape[-2:]) + tuple(shape[:-2]))
        return _gnsilu_b(dout, cache)
    c_n, c_s = check_cache(inner, "groupnorm_silu_forward", 2, name="cache[0]")
    return groupnorm_backward(silu_backward(dout, c_s), c_n)


def _gnsilu_b(dout, cache):
    """:func:`groupnorm_silu_backward` without the argument checks (the tuned loop's entry)."""
    inner, kind = cache
    if kind == "hwnc_fast":
        return _hwn.groupnorm_silu_backward_fast(dout, inner)
    if kind == "hwnc":
        return _hwn.groupnorm_silu_backward(dout, inner)
    return groupnorm_silu_backward(dout, cache)


# ------------------------------------------------------------------ shift + GroupNorm + SiLU
# How the residual block's time-embedding shift reaches its GroupNorm + SiLU in the "hwnc"
# layout with the "fast" form: "fold" (the shift folded into the statistics and the
# per-(n, c) row b, MATH.md (23.12), and its gradient from the backward's sums, MATH.md
# (23.13): no full-size add or sum) or "add" (add_channel_shift, then the fused layer, then
# the spatial sum of dx: bit for bit the composition).  Default chosen by measurement:
# benchmarks/README.md, round 8.
_SHIFT_FOLD_MODES = ("add", "fold")
_SHIFT_FOLD = {"mode": "fold"}


def set_shift_fold(mode: str) -> str:
    """Choose how :func:`groupnorm_silu_shift_forward` applies its shift in the "hwnc"
    layout with ``set_gnsilu("fast")``: "fold" (into the statistics, MATH.md (23.12),
    MATH.md (23.13); a different rounding within the bound of MATH.md (23.11)) or "add"
    (a full-size add first: the composition's rounding); returns the previous mode.  A
    cache remembers the form that made it.

    Parameters
    ----------
    mode : {"add", "fold"}
        The form.

    Returns
    -------
    str
        The previous mode.

    Raises
    ------
    ValueError
        If ``mode`` is not one of the two.
    """
    return _swap(_SHIFT_FOLD, "mode", mode, list(_SHIFT_FOLD_MODES), "shift fold mode")


def get_shift_fold() -> str:
    """The current form of :func:`groupnorm_silu_shift_forward` (see :func:`set_shift_fold`)."""
    return _SHIFT_FOLD["mode"]


def groupnorm_silu_shift_forward(x, shift, gamma, beta, groups: int, eps: float = 1e-5):
    """``silu(groupnorm(x + shift[:, :, None, None]))``: the residual block's time-embedding
    shift ``h + W_e e`` followed by GroupNorm and SiLU, MATH.md (13.16), MATH.md (23.12).

    In the "hwnc" layout with the "fast" GroupNorm + SiLU (:func:`set_gnsilu`) and
    ``set_shift_fold("fold")`` (the default) the shifted array is never formed: the
    statistics of x + shift come from the column sums of x and the shift (MATH.md
    (23.12)), the shift joins the per-(n, c) row of the affine map, and the backward pass
    gives the shift's gradient from its own sums (MATH.md (23.13)); otherwise
    :func:`add_channel_shift` then :func:`groupnorm_silu_forward`.  Returns ``(out, cache)``.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Input (the first convolution's output).
    shift : array, shape (N, C)
        Per-sample, per-channel shift (``W_e e``).
    gamma, beta : array, shape (C,)
        GroupNorm's scale and shift.
    groups : int
        Number of groups, a positive int dividing C.
    eps : float, default 1e-5
        Added to the variance.

    Returns
    -------
    out : array, shape (N, C, H, W)
    cache : tuple
        For :func:`groupnorm_silu_shift_backward`.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``shift`` is not (N, C), ``groups`` does not divide C, or
        ``gamma`` or ``beta`` does not have shape (C,).
    """
    check_array("x", x, ndim=4)  # issue 19
    check_array("shift", shift, ndim=2)
    if tuple(shift.shape) != tuple(x.shape[:2]):
        raise ValueError(f"shift must have x's (N, C) = {tuple(x.shape[:2])}, got shape {tuple(shift.shape)}")
    if _hwnc(x, shift, gamma, beta) and _GNSILU["mode"] == "fast" and _SHIFT_FOLD["mode"] == "fold":
        return _gnsilu_shift_f(x, shift, gamma, beta, groups, _check_groupnorm_args(x, gamma, beta, groups, eps))
    out, c = groupnorm_silu_forward(add_channel_shift(x, shift), gamma, beta, groups, eps)
    return out, (c, "add")


def _gnsilu_shift_f(x, shift, gamma, beta, groups, eps):
    """:func:`groupnorm_silu_shift_forward` without the argument checks (eps a float): the
    tuned loop's entry (the checked public function where the shift is not folded)."""
    if _hwnc(x, shift, gamma, beta) and _GNSILU["mode"] == "fast" and _SHIFT_FOLD["mode"] == "fold":
        out, c = _hwn.groupnorm_silu_forward_fast(x, gamma, beta, groups, eps, shift=shift)
        return out, (c, "hwnc_fold")
    return groupnorm_silu_shift_forward(x, shift, gamma, beta, groups, eps)


def groupnorm_silu_shift_backward(dout, cache):
    """Gradients of :func:`groupnorm_silu_shift_forward`: ``(dx, dshift, dgamma, dbeta)``,
    dshift (N, C) the spatial sum of dx: in closed form from the GroupNorm backward's sums
    (MATH.md (23.13)) for a folded cache, ``sum(dx, axis=(2, 3))`` otherwise.

    Parameters
    ----------
    dout : array, shape (N, C, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`groupnorm_silu_shift_forward`.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    dshift : array, shape (N, C)
    dgamma, dbeta : array, shape (C,)
    """
    inner, kind = check_cache(cache, "groupnorm_silu_shift_forward", 2)  # issue 19
    if kind == "hwnc_fold":
        shape = check_cache(inner, "groupnorm_silu_shift_forward", 8, name="cache[0]")[7]  # (*S, N, C)
        check_dout(dout, tuple(shape[-2:]) + tuple(shape[:-2]))
        return _hwn.groupnorm_silu_backward_fast(dout, inner)
    dx, dgamma, dbeta = groupnorm_silu_backward(dout, inner)
    return dx, array_namespace(dx).sum(dx, axis=(2, 3)), dgamma, dbeta


def _gnsilu_shift_b(dout, cache):
    """:func:`groupnorm_silu_shift_backward` without the argument checks (the tuned loop's
    entry; the checked public function for an unfolded cache)."""
    if cache[1] == "hwnc_fold":
        return _hwn.groupnorm_silu_backward_fast(dout, cache[0])
    return groupnorm_silu_shift_backward(dout, cache)


# ------------------------------------------------------------------ skips and shifts
def concat_forward(a, b):
    """Channel concatenation (U-Net skip) of a (N, Ca, H, W) and b (N, Cb, H, W).
    MATH.md (13.21).  Built in (C, H, W, N) memory order, like the convolution output.

    Parameters
    ----------
    a : array, shape (N, Ca, H, W)
        First part.
    b : array, shape (N, Cb, H, W)
        Second part.

    Returns
    -------
    out : array, shape (N, Ca + Cb, H, W)
        The concatenation.
    cache : int
        Ca, for :func:`concat_backward`.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not 4-D.
    """
    _check_concat_args(a, b)  # issue 19
    xp = array_namespace(a, b)
    if a.ndim != 4 or b.ndim != 4:
        raise ValueError(f"concat_forward: need two NCHW arrays, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _concat_f(a, b)


def _concat_f(a, b):
    """:func:`concat_forward` without the argument checks (the tuned loop's entry)."""
    if _hwnc(a, b):
        return _hw.concat_forward(a, b)
    xp = array_namespace(a, b)
    c = xp.concat([xp.permute_dims(a, (1, 2, 3, 0)), xp.permute_dims(b, (1, 2, 3, 0))], axis=0)
    return xp.permute_dims(c, (3, 0, 1, 2)), a.shape[1]  # (N, Ca + Cb, H, W)


def concat_backward(dout, cache):
    """Split the gradient of a channel concatenation back into its two parts.  MATH.md (13.21).

    Parameters
    ----------
    dout : array, shape (N, Ca + Cb, H, W)
        Gradient with respect to the output.
    cache : int
        The cache of :func:`concat_forward` (Ca).

    Returns
    -------
    da : array, shape (N, Ca, H, W)
    db : array, shape (N, Cb, H, W)
        Gradients with respect to the two parts.
    """
    _check_concat_backward(dout, cache)  # issue 19
    ca = cache
    return dout[:, :ca, :, :], dout[:, ca:, :, :]


def add_channel_shift(h, eo):
    """``h + eo[:, :, None, None]`` for h (N, C, H, W), eo (N, C), computed on (C, H, W, N)
    views so that the result keeps the convolution's memory order (NumPy would otherwise
    return a C-ordered array and the next convolution would pay a transposing copy).

    Parameters
    ----------
    h : array, shape (N, C, H, W)
        Feature maps.
    eo : array, shape (N, C)
        Per-sample, per-channel shifts.

    Returns
    -------
    array, shape (N, C, H, W)
        ``h + eo[:, :, None, None]``.
    """
    check_array("h", h, ndim=4)  # issue 19
    check_array("eo", eo, ndim=2)
    if tuple(eo.shape) != tuple(h.shape[:2]):
        raise ValueError(f"eo must have h's (N, C) = {tuple(h.shape[:2])}, got shape {tuple(eo.shape)}")
    if _hwnc(h, eo):
        return _hw.add_channel_shift(h, eo)
    xp = array_namespace(h, eo)
    hT = xp.permute_dims(h, (1, 2, 3, 0))  # (C, H, W, N)
    return xp.permute_dims(hT + eo.T[:, None, None, :], (3, 0, 1, 2))
