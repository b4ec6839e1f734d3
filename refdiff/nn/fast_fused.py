"""The fused GroupNorm + SiLU of :mod:`refdiff.nn.fast`, with and without the residual
block's time-embedding shift (MATH.md (23.7), (23.9)-(23.13)): the public entry points,
which dispatch on the switches :func:`refdiff.nn.fast.set_gnsilu` and
:func:`refdiff.nn.fast.set_shift_fold` to refdiff/nn/fast_hwnc_norm.py or compose the
layers of refdiff/nn/fast_layers.py, and their unchecked twins for the U-Net's tuned loop.
Import them from refdiff.nn.fast (their API home); tested in tests/test_nn_fast_hwnc.py,
tests/test_nn_gnsilu_fast.py and tests/test_nn_gnsilu_shift.py.
"""

from __future__ import annotations

from .._validate import check_array
from ..backend import array_namespace
from ._check import check_cache, check_dout
from .fast import _GNSILU, _SHIFT_FOLD, _hwnc
from .fast_layers import add_channel_shift, groupnorm_backward, groupnorm_forward, silu_backward, silu_forward
from .norm import _check_groupnorm_args
from . import fast_hwnc_norm as _hwn

__all__: list = []  # defined here, exported by refdiff.nn.fast


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
