"""The public tuned layers of :mod:`refdiff.nn.fast` other than the fused GroupNorm + SiLU:
convolution, SiLU, resampling, GroupNorm, concatenation and the channel shift, each
dispatching to the "hwnc" layout (refdiff/nn/fast_hwnc.py, fast_hwnc_norm.py) or computing
in the "chwn" layout (refdiff/nn/fast_chwn.py for the convolution), and the unchecked twins
the U-Net's tuned loop calls.  Import them from refdiff.nn.fast (their API home); tested in
tests/test_nn_fast.py and tests/test_nn_fast_hwnc.py.
"""

from __future__ import annotations

from .._validate import check_array
from ..backend import array_namespace
from ._check import check_cache, check_dout
from .conv import _check_cfirst_conv_backward, _check_conv
from .fast import _hwnc
from .fast_chwn import _conv_backward_chwn, _conv_forward_chwn, groupnorm_backward_chwn, groupnorm_forward_chwn
from .layers import _check_concat_args, _check_concat_backward
from .norm import _check_groupnorm_args
from .resample import _check_image, _resample_backward_checks
from . import fast_hwnc as _hw
from . import fast_hwnc_norm as _hwn

__all__: list = []  # defined here, exported by refdiff.nn.fast


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
    if _hwnc(x, gamma, beta):
        out, c = _hwn.groupnorm_forward(x, gamma, beta, groups, eps)
        return out, ("hwnc", c)  # tagged, as the conv and fused caches are
    return groupnorm_forward_chwn(array_namespace(x), x, gamma, beta, groups, eps)


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
    return groupnorm_backward_chwn(dout, cache)


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
