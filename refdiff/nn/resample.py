"""Resampling and re-layout maps as forward/backward pairs, reference forms (NCHW):
nearest upsampling and average pooling by 2 (MATH.md (13.7), (13.8)), patchify /
unpatchify between images and tokens (MATH.md (13.28)), pixel shuffle / unshuffle
between channels and space (MATH.md (13.29)).

Arguments are checked cheaply (float arrays, ranks, sizes); NaN and inf propagate: not
checked.  All are linear; patchify and pixel shuffle are permutations of the entries, so each one's
backward is its inverse (the adjoint of a permutation is its inverse), and each comes with
a loop definition (``*_naive``) that writes the index map of its equation literally.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_array, check_int
from ..backend import array_namespace
from ._check import check_cache, check_none_cache

__all__ = [
    "upsample2x_forward",
    "upsample2x_backward",
    "avgpool2x_forward",
    "avgpool2x_backward",
    "patchify_forward",
    "patchify_backward",
    "unpatchify_forward",
    "unpatchify_backward",
    "patchify_naive",
    "pixel_shuffle_forward",
    "pixel_shuffle_backward",
    "pixel_unshuffle_forward",
    "pixel_unshuffle_backward",
    "pixel_shuffle_naive",
]


def _check_image(x, what, name="x"):
    """A float NCHW array (cheap: NaN and inf propagate through these linear maps, not checked)."""
    check_array(name, x)
    if x.ndim != 4:
        raise ValueError(f"{what}: {name} must be (N, C, H, W), got shape {tuple(x.shape)}")


def _check_factor(r, what, name):
    check_int(name, r, 1)


def _resample_backward_checks(dout, cache, layer):
    """The cache (None) and dout (NCHW; even sides after an upsampling) of a x2 resampling."""
    check_none_cache(cache, layer + "_forward")
    _check_image(dout, layer + "_backward", "dout")
    if layer == "upsample2x" and (dout.shape[2] % 2 or dout.shape[3] % 2):
        raise ValueError(f"dout must have an even height and width (the upsampled size), got shape {tuple(dout.shape)}")


def _check_divisible(H, W, r, what, name):
    if H % r or W % r:
        raise ValueError(f"{what}: {name}={r} must divide the image size, got {H}x{W}")


# ------------------------------------------------------------------ resampling by 2
def upsample2x_forward(x):
    """Nearest-neighbour upsampling by 2: ``out[n,c,i,j] = x[n,c,i//2,j//2]``.  MATH.md (13.7).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The images.

    Returns
    -------
    out : array, shape (N, C, 2H, 2W)
        The upsampled images.
    cache : None
        Nothing is needed by the backward pass.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D.
    """
    _check_image(x, "upsample2x_forward")
    xp = array_namespace(x)
    N, C, H, W = x.shape
    out = xp.broadcast_to(x[:, :, :, None, :, None], (N, C, H, 2, W, 2))
    return xp.reshape(out, (N, C, 2 * H, 2 * W)), None


def upsample2x_backward(dout, cache):
    """Adjoint of nearest upsampling: each input pixel receives the sum of its 2x2 block.
    MATH.md (13.7).
    NaN and inf propagate: not checked.

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
    _resample_backward_checks(dout, cache, "upsample2x")
    xp = array_namespace(dout)
    N, C, H2, W2 = dout.shape
    return xp.sum(xp.reshape(dout, (N, C, H2 // 2, 2, W2 // 2, 2)), axis=(3, 5))


def avgpool2x_forward(x):
    """2x2 average pooling with stride 2 (H, W even).  MATH.md (13.8).
    NaN and inf propagate: not checked.

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
    return xp.mean(xp.reshape(x, (N, C, H // 2, 2, W // 2, 2)), axis=(3, 5)), None


def avgpool2x_backward(dout, cache):
    """Adjoint of 2x2 average pooling: a quarter of dout to each pixel of the block.
    MATH.md (13.8).
    NaN and inf propagate: not checked.

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
    _resample_backward_checks(dout, cache, "avgpool2x")
    xp = array_namespace(dout)
    N, C, H, W = dout.shape
    dx = xp.broadcast_to(0.25 * dout[:, :, :, None, :, None], (N, C, H, 2, W, 2))
    return xp.reshape(dx, (N, C, 2 * H, 2 * W))


# ------------------------------------------------------------------ patchify
def patchify_forward(x, patch: int):
    """Image (N, C, H, W) -> tokens (N, L, p p C), MATH.md (13.28):
    ``tokens[n, i (W/p) + j, (u p + v) C + c] = x[n, c, i p + u, j p + v]``.
    NaN and inf propagate: not checked.

    Tokens run over the patch grid in raster order (row i, then column j); inside a token
    the channel is fastest, then the column offset v, then the row offset u: the (p, q, c)
    order of DiT's ``unpatchify``.  A patch embedding ``Conv2d(C, D, p, stride=p)`` with
    weight w (D, C, p, p) is this map followed by a linear layer with
    ``W[(u p + v) C + c, f] = w[f, c, u, v]``.  Returns ``(tokens, cache)``.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The images.
    patch : int
        The patch side p, a positive int dividing H and W.

    Returns
    -------
    tokens : array, shape (N, (H/p)(W/p), p p C)
        The tokens.
    cache : tuple
        ``(patch, (H, W))`` for :func:`patchify_backward`.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``patch`` is not a positive int, or it does not divide H and W.
    """
    what = "patchify_forward"
    _check_image(x, what)
    xp = array_namespace(x)
    _check_factor(patch, what, "patch")
    N, C, H, W = x.shape
    _check_divisible(H, W, patch, what, "patch")
    p, h, w = patch, H // patch, W // patch
    t = xp.reshape(x, (N, C, h, p, w, p))  # (n, c, i, u, j, v)
    t = xp.permute_dims(t, (0, 2, 4, 3, 5, 1))  # (n, i, j, u, v, c)
    return xp.reshape(t, (N, h * w, p * p * C)), (patch, (H, W))


def patchify_backward(dout, cache):
    """Adjoint of :func:`patchify_forward` = its inverse, :func:`unpatchify_forward`.
    MATH.md (13.28).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, L, p p C)
        Gradient with respect to the tokens.
    cache : tuple
        The cache of :func:`patchify_forward`.

    Returns
    -------
    array, shape (N, C, H, W)
        Gradient with respect to the image.
    """
    patch, size = check_cache(cache, "patchify_forward", 2)
    check_array("dout", dout, ndim=3)
    H, W = size
    if dout.shape[1] != (H // patch) * (W // patch) or dout.shape[2] % (patch * patch):
        raise ValueError(f"dout must have the forward output's shape (N, {(H // patch) * (W // patch)}, "
                         f"{patch}*{patch}*C), got shape {tuple(dout.shape)}")
    return unpatchify_forward(dout, patch, size)[0]


def unpatchify_forward(tokens, patch: int, size):
    """Tokens (N, L, p p C) -> image (N, C, H, W) with ``size = (H, W)``: the inverse of
    :func:`patchify_forward`, MATH.md (13.28).  Returns ``(image, cache)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    tokens : array, shape (N, (H/p)(W/p), p p C)
        The tokens.
    patch : int
        The patch side p, a positive int dividing H and W.
    size : tuple of int
        The image size ``(H, W)``.

    Returns
    -------
    image : array, shape (N, C, H, W)
        The image.
    cache : int
        ``patch``, for :func:`unpatchify_backward`.

    Raises
    ------
    ValueError
        If ``patch`` is not a positive int or does not divide the size, or ``tokens`` does not
        have the shape above.
    """
    what = "unpatchify_forward"
    check_array("tokens", tokens, ndim=3)
    _check_factor(patch, what, "patch")
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"size must be a pair of ints (H, W), got {size!r}")
    H, W = check_int("size[0]", size[0], 1), check_int("size[1]", size[1], 1)
    xp = array_namespace(tokens)
    _check_divisible(H, W, patch, what, "patch")
    p, h, w = patch, H // patch, W // patch
    if tokens.shape[1] != h * w or tokens.shape[2] % (p * p):
        raise ValueError(f"{what}: tokens must be (N, {h * w}, p*p*C) for a {H}x{W} image with patch {p}, "
                         f"got shape {tuple(tokens.shape)}")
    N, C = tokens.shape[0], tokens.shape[2] // (p * p)
    x = xp.reshape(tokens, (N, h, w, p, p, C))  # (n, i, j, u, v, c)
    x = xp.permute_dims(x, (0, 5, 1, 3, 2, 4))  # (n, c, i, u, j, v)
    return xp.reshape(x, (N, C, H, W)), patch


def unpatchify_backward(dout, cache):
    """Adjoint of :func:`unpatchify_forward` = :func:`patchify_forward`.  MATH.md (13.28).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, C, H, W)
        Gradient with respect to the image.
    cache : int
        The cache of :func:`unpatchify_forward` (the patch side).

    Returns
    -------
    array, shape (N, L, p p C)
        Gradient with respect to the tokens.
    """
    patch = check_int("cache", cache, 1, hint=" (the patch side returned by unpatchify_forward)")
    _check_image(dout, "unpatchify_backward", "dout")
    _check_divisible(dout.shape[2], dout.shape[3], patch, "unpatchify_backward: dout's size", "cache (patch)")
    return patchify_forward(dout, patch)[0]


def patchify_naive(x, patch: int):
    """Loop definition of MATH.md (13.28) on the host: every entry of the image written to
    its token and feature index.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C, H, W)
        The images (converted to a NumPy array).
    patch : int
        The patch side p, dividing H and W.

    Returns
    -------
    numpy.ndarray, shape (N, (H/p)(W/p), p p C)
        The tokens, of the dtype of ``x``.
    """
    _check_image(x, "patchify_naive")
    _check_factor(patch, "patchify_naive", "patch")
    _check_divisible(x.shape[2], x.shape[3], patch, "patchify_naive", "patch")
    x = np.asarray(x)
    N, C, H, W = x.shape
    p, w = patch, W // patch
    out = np.zeros((N, (H // p) * w, p * p * C), dtype=x.dtype)
    for n, c, a, b in np.ndindex(N, C, H, W):
        (i, u), (j, v) = divmod(a, p), divmod(b, p)
        out[n, i * w + j, (u * p + v) * C + c] = x[n, c, a, b]
    return out


# ------------------------------------------------------------------ pixel shuffle
def pixel_shuffle_forward(x, r: int):
    """Channels to space (PyTorch's ``pixel_shuffle``), MATH.md (13.29):
    ``out[n, c, h r + i, w r + j] = x[n, c r^2 + i r + j, h, w]``,
    x (N, C r^2, H, W) -> out (N, C, H r, W r).  Returns ``(out, cache)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C r^2, H, W)
        The input.
    r : int
        The upscale factor, a positive int.

    Returns
    -------
    out : array, shape (N, C, H r, W r)
        The shuffled array.
    cache : int
        ``r``, for :func:`pixel_shuffle_backward`.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``r`` is not a positive int, or the channels are not a multiple
        of r^2.
    """
    what = "pixel_shuffle_forward"
    _check_image(x, what)
    xp = array_namespace(x)
    _check_factor(r, what, "r")
    N, Cr, H, W = x.shape
    if Cr % (r * r):
        raise ValueError(f"{what}: x's channels {Cr} must be a multiple of r^2 = {r * r}")
    C = Cr // (r * r)
    t = xp.permute_dims(xp.reshape(x, (N, C, r, r, H, W)), (0, 1, 4, 2, 5, 3))  # (n, c, h, i, w, j)
    return xp.reshape(t, (N, C, H * r, W * r)), r


def pixel_shuffle_backward(dout, cache):
    """Adjoint of pixel shuffle = pixel unshuffle.  MATH.md (13.29).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, C, H r, W r)
        Gradient with respect to the output.
    cache : int
        The cache of :func:`pixel_shuffle_forward` (the factor r).

    Returns
    -------
    array, shape (N, C r^2, H, W)
        Gradient with respect to the input.
    """
    r = check_int("cache", cache, 1, hint=" (the factor r returned by pixel_shuffle_forward)")
    _check_image(dout, "pixel_shuffle_backward", "dout")
    _check_divisible(dout.shape[2], dout.shape[3], r, "pixel_shuffle_backward: dout's size", "cache (r)")
    return pixel_unshuffle_forward(dout, r)[0]


def pixel_unshuffle_forward(x, r: int):
    """Space to channels, the inverse of :func:`pixel_shuffle_forward` (PyTorch's
    ``pixel_unshuffle``), MATH.md (13.29): (N, C, H r, W r) -> (N, C r^2, H, W).
    Returns ``(out, cache)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C, H r, W r)
        The input.
    r : int
        The downscale factor, a positive int dividing both spatial sizes.

    Returns
    -------
    out : array, shape (N, C r^2, H, W)
        The unshuffled array.
    cache : int
        ``r``, for :func:`pixel_unshuffle_backward`.

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``r`` is not a positive int, or it does not divide the size.
    """
    what = "pixel_unshuffle_forward"
    _check_image(x, what)
    xp = array_namespace(x)
    _check_factor(r, what, "r")
    N, C, Hr, Wr = x.shape
    _check_divisible(Hr, Wr, r, what, "r")
    H, W = Hr // r, Wr // r
    t = xp.permute_dims(xp.reshape(x, (N, C, H, r, W, r)), (0, 1, 3, 5, 2, 4))  # (n, c, i, j, h, w)
    return xp.reshape(t, (N, C * r * r, H, W)), r


def pixel_unshuffle_backward(dout, cache):
    """Adjoint of pixel unshuffle = pixel shuffle.  MATH.md (13.29).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, C r^2, H, W)
        Gradient with respect to the output.
    cache : int
        The cache of :func:`pixel_unshuffle_forward` (the factor r).

    Returns
    -------
    array, shape (N, C, H r, W r)
        Gradient with respect to the input.
    """
    r = check_int("cache", cache, 1, hint=" (the factor r returned by pixel_unshuffle_forward)")
    _check_image(dout, "pixel_unshuffle_backward", "dout")
    if dout.shape[1] % (r * r):
        raise ValueError(f"dout must have a multiple of r^2 channels (r = cache = {r}), got shape {tuple(dout.shape)}")
    return pixel_shuffle_forward(dout, r)[0]


def pixel_shuffle_naive(x, r: int):
    """Loop definition of MATH.md (13.29) on the host.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, C r^2, H, W)
        The input (converted to a NumPy array).
    r : int
        The upscale factor.

    Returns
    -------
    numpy.ndarray, shape (N, C, H r, W r)
        The shuffled array, of the dtype of ``x``.
    """
    _check_image(x, "pixel_shuffle_naive")
    _check_factor(r, "pixel_shuffle_naive", "r")
    if x.shape[1] % (r * r):
        raise ValueError(f"pixel_shuffle_naive: x's channels {x.shape[1]} must be a multiple of r^2 = {r * r}")
    x = np.asarray(x)
    N, Cr, H, W = x.shape
    C = Cr // (r * r)
    out = np.zeros((N, C, H * r, W * r), dtype=x.dtype)
    for n, c, i, j, h, w in np.ndindex(N, C, r, r, H, W):
        out[n, c, h * r + i, w * r + j] = x[n, c * r * r + i * r + j, h, w]
    return out
