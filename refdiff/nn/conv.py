"""2-D convolution as a forward/backward pair, MATH.md (13.3), (13.4), (13.5), (13.6): the
reference form (NCHW, one column matrix, one product) and the loop definition beside it;
the transposed convolution, its adjoint, MATH.md (13.30).

``conv2d_forward`` transcribes (13.4): the k_h k_w shifted windows of the zero-padded
input are copied into a column matrix X_col (C k_h k_w, N H_o W_o) and multiplied by the
kernel reshaped to (F, C k_h k_w).  ``conv2d_backward`` transcribes (13.5) and (13.6):
two products, then each column entry is added back to the pixel it was read from
(col2im, the adjoint of the gather).  ``conv2d_forward_naive``/``conv2d_backward_naive``
loop over (13.3) and (13.6) literally: the executable specification.  The tuned version
the U-Net trains with (memory order, blocked gather, three backward paths) is
:mod:`refdiff.nn.fast`, tested equal to this one.
"""

from __future__ import annotations

from array_api_compat import device as _device

from .._validate import check_array
from ..backend import array_namespace
from ._check import check_cache, check_dout, check_size

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_forward_naive",
    "conv2d_backward_naive",
    "conv_output_size",
    "conv_transpose2d_forward",
    "conv_transpose2d_backward",
]


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a convolution, ``floor((size + 2 pad - kernel) / stride) + 1``.

    Parameters
    ----------
    size : int
        Input length.
    kernel : int
        Kernel length.
    stride : int
        Stride.
    pad : int
        Zero padding on each side.

    Returns
    -------
    int
        The output length (less than 1 when the kernel does not fit).
    """
    size, kernel = check_size("size", size), check_size("kernel", kernel)
    stride, pad = check_size("stride", stride), check_size("pad", pad, 0)
    return (size + 2 * pad - kernel) // stride + 1


def _check_conv(x, w, stride, pad, b=None):
    """Types, dtypes and shapes of a convolution's arguments (cheap: no NaN scan); the
    output size (Ho, Wo)."""
    check_array("x", x, ndim=4)
    check_array("w", w, ndim=4)
    check_array("b", b)
    kh, kw = w.shape[2], w.shape[3]
    check_size("pad", pad, 0, max(kh, kw) - 1)  # a wider padding only adds outputs that see zeros
    check_size("stride", stride, 1, max(x.shape[2], x.shape[3]) + 2 * pad)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels (shape {tuple(x.shape)}) but w expects "
                         f"{w.shape[1]} (shape {tuple(w.shape)})")
    if tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"conv2d: bias b must have shape (F,) = ({w.shape[0]},) for w of shape "
                         f"{tuple(w.shape)}, got {tuple(b.shape)}")
    kh, kw = w.shape[2], w.shape[3]
    Ho = conv_output_size(x.shape[2], kh, stride, pad)
    Wo = conv_output_size(x.shape[3], kw, stride, pad)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"conv2d: kernel {kh}x{kw} with pad={pad} is larger than the input "
                         f"{x.shape[2]}x{x.shape[3]}")
    return Ho, Wo


def _im2col(xp, x, kh, kw, stride, pad, Ho, Wo):
    """X_col[(c, u, v), (n, i, j)] = x~[n, c, s i + u - p, s j + v - p], MATH.md (13.4)
    (columns in (n, i, j) order here; any fixed column order gives the same product)."""
    N, C, H, W = x.shape
    xpad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=x.dtype, device=_device(x))
    xpad[:, :, pad:pad + H, pad:pad + W] = x  # x~: zeros outside the image
    cols = xp.zeros((C, kh, kw, N, Ho, Wo), dtype=x.dtype, device=_device(x))
    for u in range(kh):
        for v in range(kw):
            win = xpad[:, :, u:u + stride * (Ho - 1) + 1:stride, v:v + stride * (Wo - 1) + 1:stride]
            cols[:, u, v, :, :, :] = xp.permute_dims(win, (1, 0, 2, 3))  # (C, N, Ho, Wo)
    return xp.reshape(cols, (C * kh * kw, N * Ho * Wo))


def _col2im(xp, dcols, x_shape, kh, kw, stride, pad, Ho, Wo):
    """Adjoint of :func:`_im2col`: add every column entry back to the pixel it was read
    from, then drop the padding, MATH.md (13.6)."""
    N, C, H, W = x_shape
    dcols = xp.reshape(dcols, (C, kh, kw, N, Ho, Wo))
    dpad = xp.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype, device=_device(dcols))
    for u in range(kh):
        for v in range(kw):
            rows, cols = slice(u, u + stride * (Ho - 1) + 1, stride), slice(v, v + stride * (Wo - 1) + 1, stride)
            dpad[:, :, rows, cols] = dpad[:, :, rows, cols] + xp.permute_dims(dcols[:, u, v, :, :, :], (1, 0, 2, 3))
    return dpad[:, :, pad:pad + H, pad:pad + W]


def conv2d_forward(x, w, b, *, stride: int = 1, pad: int | None = None):
    """2-D cross-correlation ``out[n,f,i,j] = b[f] + sum_{c,u,v} w[f,c,u,v]
    x[n, c, s i + u - pad, s j + v - pad]`` (zero outside the image), MATH.md (13.3),
    computed as the product (13.4) ``Y = W_mat X_col + b``.
    NaN and inf propagate: not checked.

    x (N, C, H, W), w (F, C, kh, kw), b (F,).  ``pad`` defaults to ``kh // 2`` ("same" for
    odd kernels at stride 1; 3x3 stride 2 pad 1 halves an even size).  Returns
    ``(out (N, F, Ho, Wo), cache)``; the cache keeps X_col for the backward pass.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Input images.
    w : array, shape (F, C, kh, kw)
        Kernels.
    b : array, shape (F,)
        Bias.
    stride : int, optional
        Step between output pixels, at least 1 (default 1).
    pad : int or None, optional
        Zero padding on every side, at least 0; None (default) means ``kh // 2``.

    Returns
    -------
    out : array, shape (N, F, Ho, Wo)
        The convolution, ``Ho = conv_output_size(H, kh, stride, pad)`` (likewise Wo).
    cache : tuple
        Saved values for the matching backward.

    Raises
    ------
    ValueError
        If ``x`` or ``w`` is not 4-D, their channel counts differ, ``b`` is not (F,), ``stride < 1``,
        ``pad < 0``, or the kernel does not fit the padded input.
    """
    check_array("w", w, ndim=4)
    pad = w.shape[2] // 2 if pad is None else pad
    Ho, Wo = _check_conv(x, w, stride, pad, b)
    xp = array_namespace(x, w)
    N = x.shape[0]
    F, C, kh, kw = w.shape
    cols = _im2col(xp, x, kh, kw, stride, pad, Ho, Wo)  # (C kh kw, N Ho Wo)
    y = xp.reshape(w, (F, C * kh * kw)) @ cols + b[:, None]  # (F, N Ho Wo)
    out = xp.permute_dims(xp.reshape(y, (F, N, Ho, Wo)), (1, 0, 2, 3))  # (N, F, Ho, Wo)
    return out, (x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache):
    """Gradients of :func:`conv2d_forward`, MATH.md (13.5) and (13.6):
    ``dW_mat = dY X_col^T``, ``db = sum dY``, ``dX_col = W_mat^T dY`` added back into place
    (col2im).  Returns ``(dx, dw, db)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, F, Ho, Wo)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by the matching forward.

    Returns
    -------
    dx : array, shape (N, C, H, W)
        Gradient with respect to ``x``.
    dw : array, shape (F, C, kh, kw)
        Gradient with respect to ``w``.
    db : array, shape (F,)
        Gradient with respect to ``b``.
    """
    x_shape, cols, w, stride, pad = check_cache(cache, "conv2d_forward", 5)
    N, C, kh, kw = x_shape[0], w.shape[1], w.shape[2], w.shape[3]
    F, Ho, Wo = w.shape[0], conv_output_size(x_shape[2], kh, stride, pad), conv_output_size(x_shape[3], kw, stride, pad)
    check_dout(dout, (N, F, Ho, Wo))
    xp = array_namespace(dout)
    dY = xp.reshape(xp.permute_dims(dout, (1, 0, 2, 3)), (F, N * Ho * Wo))  # (F, N Ho Wo)
    dw = xp.reshape(dY @ cols.T, w.shape)
    db = xp.sum(dY, axis=1)
    dcols = xp.reshape(w, (F, C * kh * kw)).T @ dY  # (C kh kw, N Ho Wo)
    return _col2im(xp, dcols, x_shape, kh, kw, stride, pad, Ho, Wo), dw, db


def conv_transpose2d_forward(x, w, b, *, stride: int = 1, pad: int = 0, output_padding: int = 0):
    """Transposed convolution, the adjoint of :func:`conv2d_forward` in its input plus a
    bias, MATH.md (13.30): ``out = conv^T(x) + b``, i.e. (13.6) applied to x.
    NaN and inf propagate: not checked.

    x (N, F, H, W), w (F, C, kh, kw) (PyTorch's ``ConvTranspose2d`` layout: in, out, kh,
    kw), b (C,).  Output size ``(H - 1) stride - 2 pad + kh + output_padding``
    (0 <= output_padding < stride picks among the sizes that a stride-s convolution maps to
    H).  Every input pixel adds ``x[n, f, i, j] w[f, :, u, v]`` at output pixel
    ``(s i + u - pad, s j + v - pad)``.  Returns ``(out (N, C, Ho, Wo), cache)``.

    Parameters
    ----------
    x : array, shape (N, F, H, W)
        Input.
    w : array, shape (F, C, kh, kw)
        Kernels, in PyTorch's ``ConvTranspose2d`` layout.
    b : array, shape (C,)
        Bias.
    stride : int, optional
        Stride of the convolution this is the adjoint of, at least 1 (default 1).
    pad : int, optional
        Its padding, at least 0 (default 0).
    output_padding : int, optional
        Extra output rows/columns, ``0 <= output_padding < stride`` (default 0).

    Returns
    -------
    out : array, shape (N, C, Ho, Wo)
        ``Ho = (H - 1) stride - 2 pad + kh + output_padding`` (likewise Wo).
    cache : tuple
        Saved values for :func:`conv_transpose2d_backward`.

    Raises
    ------
    ValueError
        If the shapes of ``x``, ``w``, ``b`` do not match, the stride, padding or output
        padding is out of range, or the output would be empty.
    """
    what = "conv_transpose2d_forward"
    check_array("x", x, ndim=4)
    check_array("w", w, ndim=4)
    check_array("b", b)
    stride, pad = check_size("stride", stride, 1, max(w.shape[2], w.shape[3], 2)), check_size("pad", pad, 0)
    output_padding = check_size("output_padding", output_padding, 0)
    xp = array_namespace(x, w)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"{what}: need x (N, F, H, W) and w (F, C, kh, kw) with the same F; got x "
                         f"{tuple(x.shape)}, w {tuple(w.shape)}")
    if tuple(b.shape) != (w.shape[1],):
        raise ValueError(f"{what}: bias b must have shape (C,) = ({w.shape[1]},) for w of shape "
                         f"{tuple(w.shape)}, got {tuple(b.shape)}")
    if stride < 1 or pad < 0 or not 0 <= output_padding < stride:
        raise ValueError(f"{what}: need stride >= 1, pad >= 0 and 0 <= output_padding < stride; got "
                         f"stride={stride}, pad={pad}, output_padding={output_padding}")
    N, F, H, W = x.shape
    C, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    Ho = (H - 1) * stride - 2 * pad + kh + output_padding
    Wo = (W - 1) * stride - 2 * pad + kw + output_padding
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{what}: pad={pad} leaves no output for input {H}x{W} and kernel {kh}x{kw}")
    X = xp.reshape(xp.permute_dims(x, (1, 0, 2, 3)), (F, N * H * W))  # (F, N H W)
    cols = xp.reshape(w, (F, C * kh * kw)).T @ X  # (C kh kw, N H W): (13.5)'s W^T Y
    out = _col2im(xp, cols, (N, C, Ho, Wo), kh, kw, stride, pad, H, W)  # (13.6)
    return out + xp.reshape(b, (1, C, 1, 1)), (X, w, stride, pad, (N, F, H, W))


def conv_transpose2d_backward(dout, cache):
    """Gradients of :func:`conv_transpose2d_forward`, MATH.md (13.30): the adjoint of the
    adjoint is the convolution, ``dx = conv(dout)`` with the same w and no bias (a gather
    of dout, (13.4)); ``dw = X dout_col^T``; ``db = sum dout``.  Returns ``(dx, dw, db)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, C, Ho, Wo)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`conv_transpose2d_forward`.

    Returns
    -------
    dx : array, shape (N, F, H, W)
        Gradient with respect to ``x``.
    dw : array, shape (F, C, kh, kw)
        Gradient with respect to ``w``.
    db : array, shape (C,)
        Gradient with respect to ``b``.
    """
    X, w, stride, pad, x_shape = check_cache(cache, "conv_transpose2d_forward", 5)
    N, F, H, W = x_shape
    C, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    check_array("dout", dout, ndim=4)
    Ho0, Wo0 = (H - 1) * stride - 2 * pad + kh, (W - 1) * stride - 2 * pad + kw  # output_padding 0
    op = dout.shape[2] - Ho0
    if tuple(dout.shape[:2]) != (N, C) or not 0 <= op < stride or dout.shape[3] - Wo0 != op:
        raise ValueError(f"dout must have the forward output's shape ({N}, {C}, {Ho0} + output_padding, "
                         f"{Wo0} + output_padding), got shape {tuple(dout.shape)}")
    xp = array_namespace(dout)
    dcols = _im2col(xp, dout, kh, kw, stride, pad, H, W)  # (C kh kw, N H W)
    dx = xp.reshape(w, (F, C * kh * kw)) @ dcols  # (F, N H W)
    dx = xp.permute_dims(xp.reshape(dx, (F, N, H, W)), (1, 0, 2, 3))
    dw = xp.reshape(X @ dcols.T, w.shape)
    return dx, dw, xp.sum(dout, axis=(0, 2, 3))


def conv2d_forward_naive(x, w, b, *, stride: int = 1, pad: int | None = None):
    """Loop definition of the convolution MATH.md (13.3): for every output pixel (i, j)
    and kernel tap (p, q), add ``x[:, :, s i + p - pad, s j + q - pad] @ w[:, :, p, q]^T``.
    The executable specification of :func:`conv2d_forward`; slow, for tests.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        Input images.
    w : array, shape (F, C, kh, kw)
        Kernels.
    b : array, shape (F,)
        Bias.
    stride : int, optional
        Step between output pixels, at least 1 (default 1).
    pad : int or None, optional
        Zero padding on every side, at least 0; None (default) means ``kh // 2``.

    Returns
    -------
    out : array, shape (N, F, Ho, Wo)
        The convolution, ``Ho = conv_output_size(H, kh, stride, pad)`` (likewise Wo).
    cache : tuple
        Saved values for the matching backward.

    Raises
    ------
    ValueError
        If ``x`` or ``w`` is not 4-D, their channel counts differ, ``stride < 1``,
        ``pad < 0``, or the kernel does not fit the padded input.
    """
    check_array("w", w, ndim=4)
    pad = w.shape[2] // 2 if pad is None else pad
    Ho, Wo = _check_conv(x, w, stride, pad, b)
    xp = array_namespace(x, w)
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
    """Loop definition of the convolution's gradients MATH.md (13.5), (13.6): every
    (output pixel, tap) term of the forward sum sends ``dout @ w`` back to its input pixel
    and ``dout^T x`` to its weight.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, F, Ho, Wo)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by the matching forward.

    Returns
    -------
    dx : array, shape (N, C, H, W)
        Gradient with respect to ``x``.
    dw : array, shape (F, C, kh, kw)
        Gradient with respect to ``w``.
    db : array, shape (F,)
        Gradient with respect to ``b``.
    """
    x, w, stride, pad = check_cache(cache, "conv2d_forward_naive", 4)
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    check_dout(dout, (N, F, conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)))
    xp = array_namespace(dout)
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


def _check_cfirst_conv_backward(dout, cache):
    """The checks of :func:`refdiff.nn.fast.conv2d_backward`: its cache is ``(xT, w, stride,
    pad)`` (x in (C, H, W, N) order) or ``("winograd", (U, Wt, w_shape, (C, H, W, N), m))``;
    dout must be a float array of the forward output's shape."""
    if isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[0], str):
        wc = check_cache(cache[1], "conv2d_forward", 5, name="cache")
        (C, H, W, N), F = wc[3], wc[2][0]
        shape = (N, F, H, W)  # 3x3 stride 1 pad 1
    else:
        xT, w, stride, pad = check_cache(cache, "conv2d_forward", 4)
        (C, H, W, N), (F, _, kh, kw) = xT.shape, w.shape
        shape = (N, F, conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad))
    check_dout(dout, shape)
