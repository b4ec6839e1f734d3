"""Composite blocks built from the layer pairs, and the model base class.

The blocks run the tuned layers of ``fast.py`` (same maps as the reference ``layers.py``,
tested equal; (C, H, W, N) memory order, in-place updates), which is what the U-Net
trains with; the reference layers are the specification.

Blocks read their parameters from a flat dict under a key prefix (``"down0.res0.conv1.w"``)
and write their gradients into a dict with the same keys.  Like the layers they are pure:
``*_forward(params, prefix, ...) -> (out, cache)`` and ``*_backward(grads, params, prefix,
dout, cache) -> input gradients``.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array
from ..backend import array_namespace
from ._check import check_block, check_cache, check_dout, check_grads, check_size
from .fast import _from_tokens, _tokens  # pixel-major tokens, free in the tuned memory orders
from .fast import _conv_b, _conv_f, _gnsilu_b, _gnsilu_f, _gnsilu_shift_b, _gnsilu_shift_f  # unchecked twins
from .fast import (  # the tuned layers (tests/test_nn_fast.py: equal to the reference ones)
    conv2d_backward,
    conv2d_forward,
    groupnorm_backward,
    groupnorm_forward,
    groupnorm_silu_backward,
    groupnorm_silu_forward,
    groupnorm_silu_shift_backward,
    groupnorm_silu_shift_forward,
    silu_backward,
    silu_forward,
)
from .layers import attention_backward, attention_forward, linear_backward, linear_forward

__all__ = [
    "resblock_forward",
    "resblock_backward",
    "attnblock_forward",
    "attnblock_backward",
]


# ------------------------------------------------------------------ host-side init
def init_linear(P: dict, name: str, d_in: int, d_out: int, rng, *, zero=False):
    """w (d_in, d_out) ~ N(0, 1/d_in) (LeCun normal), b = 0; all zeros when ``zero``."""
    P[name + ".w"] = np.zeros((d_in, d_out)) if zero else rng.standard_normal((d_in, d_out)) / math.sqrt(d_in)
    P[name + ".b"] = np.zeros(d_out)


def init_conv(P: dict, name: str, c_in: int, c_out: int, k: int, rng, *, zero=False):
    """w (c_out, c_in, k, k) ~ N(0, 1/(c_in k^2)), b = 0; all zeros when ``zero``."""
    shape = (c_out, c_in, k, k)
    P[name + ".w"] = np.zeros(shape) if zero else rng.standard_normal(shape) / math.sqrt(c_in * k * k)
    P[name + ".b"] = np.zeros(c_out)


def init_groupnorm(P: dict, name: str, c: int):
    P[name + ".gamma"] = np.ones(c)
    P[name + ".beta"] = np.zeros(c)


def acc(grads: dict, key: str, g):
    """Add ``g`` into ``grads[key]`` (a parameter used twice gets both contributions)."""
    grads[key] = grads[key] + g if key in grads else g


# ------------------------------------------------------------------ checks
def _check_block_input(P, pre, x, groups, norm, *keys, what):
    """P holds the block's keys under pre; x (N, C, H, W) float with the norm's C channels;
    groups an int dividing C (cheap: no NaN scan, NaN propagates)."""
    check_block(P, pre, norm + ".gamma", *keys, what=what)
    check_array("x", x, ndim=4)
    C = P[pre + norm + ".gamma"].shape[0]
    if x.shape[1] != C:
        raise ValueError(f"{what}: x has {x.shape[1]} channels (shape {tuple(x.shape)}), the block under "
                         f"pre = {pre!r} expects {C}")
    check_size("groups", groups)
    if C % groups:
        raise ValueError(f"{what}: groups={groups} must divide the {C} channels of x")


# ------------------------------------------------------------------ thin wrappers
def lin_f(P, name, x):
    return linear_forward(x, P[name + ".w"], P[name + ".b"])


def lin_b(G, name, dout, cache):
    dx, dw, db = linear_backward(dout, cache)
    acc(G, name + ".w", dw)
    acc(G, name + ".b", db)
    return dx


def conv_f(P, name, x, stride=1):
    return conv2d_forward(x, P[name + ".w"], P[name + ".b"], stride=stride)


def conv_b(G, name, dout, cache):
    dx, dw, db = conv2d_backward(dout, cache)
    acc(G, name + ".w", dw)
    acc(G, name + ".b", db)
    return dx


def gn_f(P, name, x, groups):
    return groupnorm_forward(x, P[name + ".gamma"], P[name + ".beta"], groups)


def gn_b(G, name, dout, cache):
    dx, dg, db = groupnorm_backward(dout, cache)
    acc(G, name + ".gamma", dg)
    acc(G, name + ".beta", db)
    return dx


def gnsilu_f(P, name, x, groups):
    """``silu(groupnorm(x))`` with the parameters under ``name`` (fused in the hwnc layout)."""
    return groupnorm_silu_forward(x, P[name + ".gamma"], P[name + ".beta"], groups)


def gnsilu_b(G, name, dout, cache):
    dx, dg, db = groupnorm_silu_backward(dout, cache)
    acc(G, name + ".gamma", dg)
    acc(G, name + ".beta", db)
    return dx


def gnsilu_shift_f(P, name, x, shift, groups):
    """``silu(groupnorm(x + shift))`` (shift (N, C) per channel; folded into the statistics
    in the hwnc layout, MATH.md (23.12))."""
    return groupnorm_silu_shift_forward(x, shift, P[name + ".gamma"], P[name + ".beta"], groups)


def gnsilu_shift_b(G, name, dout, cache):
    """``(dx, dshift)`` of :func:`gnsilu_shift_f` (dshift = the spatial sum of dx)."""
    dx, dshift, dg, db = groupnorm_silu_shift_backward(dout, cache)
    acc(G, name + ".gamma", dg)
    acc(G, name + ".beta", db)
    return dx, dshift


# ------------------------------------------------------------------ the unchecked twins
# The U-Net's tuned loop checks its parameters once (UNet._checked_before, issue 21: the
# fixed per-step cost) and then calls these: the same layer functions without their
# per-call argument checks, so the same operations and the same bits.
def _lin_fu(P, name, x):
    """:func:`lin_f` unchecked: ``x @ w + b`` (MATH.md (13.1), as ``layers.linear_forward``)."""
    w = P[name + ".w"]
    return x @ w + P[name + ".b"], (x, w)


def _lin_bu(G, name, dout, cache):
    """:func:`lin_b` unchecked (MATH.md (13.2), as ``layers.linear_backward``)."""
    x, w = cache
    acc(G, name + ".w", x.T @ dout)
    acc(G, name + ".b", array_namespace(dout).sum(dout, axis=0))
    return dout @ w.T


def _conv_fu(P, name, x, stride=1):
    w = P[name + ".w"]
    return _conv_f(x, w, P[name + ".b"], stride, w.shape[2] // 2)


def _conv_bu(G, name, dout, cache):
    dx, dw, db = _conv_b(dout, cache)
    acc(G, name + ".w", dw)
    acc(G, name + ".b", db)
    return dx


def _gnsilu_fu(P, name, x, groups):
    return _gnsilu_f(x, P[name + ".gamma"], P[name + ".beta"], groups, 1e-5)


def _gnsilu_bu(G, name, dout, cache):
    dx, dg, db = _gnsilu_b(dout, cache)
    acc(G, name + ".gamma", dg)
    acc(G, name + ".beta", db)
    return dx


def _gnsilu_shift_fu(P, name, x, shift, groups):
    return _gnsilu_shift_f(x, shift, P[name + ".gamma"], P[name + ".beta"], groups, 1e-5)


def _gnsilu_shift_bu(G, name, dout, cache):
    dx, dshift, dg, db = _gnsilu_shift_b(dout, cache)
    acc(G, name + ".gamma", dg)
    acc(G, name + ".beta", db)
    return dx, dshift


class _Layers:
    """The layer functions a block body calls: checked (the public ones) or unchecked."""

    def __init__(self, conv_f, conv_b, gnsilu_f, gnsilu_b, gnsilu_shift_f, gnsilu_shift_b, lin_f, lin_b):
        self.conv_f, self.conv_b, self.gnsilu_f, self.gnsilu_b = conv_f, conv_b, gnsilu_f, gnsilu_b
        self.gnsilu_shift_f, self.gnsilu_shift_b, self.lin_f, self.lin_b = gnsilu_shift_f, gnsilu_shift_b, lin_f, lin_b


# ------------------------------------------------------------------ residual block
def resblock_init(P, pre, c_in, c_out, emb_dim, rng):
    init_groupnorm(P, pre + ".norm1", c_in)
    init_conv(P, pre + ".conv1", c_in, c_out, 3, rng)
    init_linear(P, pre + ".emb", emb_dim, c_out, rng)
    init_groupnorm(P, pre + ".norm2", c_out)
    init_conv(P, pre + ".conv2", c_out, c_out, 3, rng)
    if c_in != c_out:
        init_conv(P, pre + ".skip", c_in, c_out, 1, rng)


def resblock_forward(P, pre, x, e, groups):
    """Residual block with conditioning, MATH.md (13.16):
    ``out = skip(x) + conv2(silu(gn2(conv1(silu(gn1(x))) + W_e e)))`` where ``e`` (N, E) is
    the activated time (+ class) embedding and ``W_e e`` is added to every pixel; skip is
    the identity or a 1x1 conv when the channel count changes.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        Flat parameter dict holding the block's entries under ``pre`` (``norm1``, ``conv1``,
        ``emb``, ``norm2``, ``conv2`` and, when the channel count changes, ``skip``).
    pre : str
        Key prefix of the block, e.g. ``"down0.res0"``.
    x : array, shape (N, C_in, H, W)
        Input.
    e : array, shape (N, E)
        Activated conditioning embedding.
    groups : int
        GroupNorm group count, dividing C_in and C_out.

    Returns
    -------
    out : array, shape (N, C_out, H, W)
        The block's output.
    cache : tuple
        Saved values for :func:`resblock_backward`.
    """
    _check_block_input(P, pre, x, groups, ".norm1", ".conv1.w", ".emb.w", ".norm2.gamma", ".conv2.w",
                       what="resblock_forward")
    check_array("e", e, ndim=2)
    if e.shape[0] != x.shape[0] or e.shape[1] != P[pre + ".emb.w"].shape[0]:
        raise ValueError(f"resblock_forward: e must have shape ({x.shape[0]}, {P[pre + '.emb.w'].shape[0]}) (x's N, "
                         f"the embedding width under pre = {pre!r}), got shape {tuple(e.shape)}")
    return _resblock_f(P, pre, x, e, groups, _CHECKED)


def _resblock_f(P, pre, x, e, groups, L):
    """The body of :func:`resblock_forward` with the layer functions ``L`` (MATH.md (13.16))."""
    h, c_n1 = L.gnsilu_f(P, pre + ".norm1", x, groups)
    h, c_c1 = L.conv_f(P, pre + ".conv1", h)
    eo, c_e = L.lin_f(P, pre + ".emb", e)
    h, c_n2 = L.gnsilu_shift_f(P, pre + ".norm2", h, eo, groups)  # silu(gn2(h + W_e e))
    h, c_c2 = L.conv_f(P, pre + ".conv2", h)
    if pre + ".skip.w" in P:
        s, c_sk = L.conv_f(P, pre + ".skip", x)
    else:
        s, c_sk = x, None
    out = s + h
    return out, (c_n1, c_c1, c_e, c_n2, c_c2, c_sk, tuple(out.shape))


def resblock_backward(G, P, pre, dout, cache):
    """Backward of :func:`resblock_forward`; returns ``(dx, de)``.  MATH.md (13.16).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient dict; the block's parameter gradients are added into it under ``pre``.
    P : dict
        The parameter dict used in the forward pass.
    pre : str
        Key prefix of the block.
    dout : array, shape (N, C_out, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`resblock_forward`.

    Returns
    -------
    dx : array, shape (N, C_in, H, W)
        Gradient with respect to ``x``.
    de : array, shape (N, E)
        Gradient with respect to ``e``.
    """
    check_grads(G)
    check_block(P, pre, ".conv2.w", what="resblock_backward")
    check_dout(dout, check_cache(cache, "resblock_forward", 7)[6])
    return _resblock_b(G, pre, dout, cache, _CHECKED)


def _resblock_b(G, pre, dout, cache, L):
    """The body of :func:`resblock_backward` with the layer functions ``L`` (MATH.md (13.16))."""
    c_n1, c_c1, c_e, c_n2, c_c2, c_sk, _ = cache
    dh = L.conv_b(G, pre + ".conv2", dout, c_c2)
    dh, dshift = L.gnsilu_shift_b(G, pre + ".norm2", dh, c_n2)  # dshift: the spatial sum of dh
    de = L.lin_b(G, pre + ".emb", dshift, c_e)
    dh = L.conv_b(G, pre + ".conv1", dh, c_c1)
    dx = L.gnsilu_b(G, pre + ".norm1", dh, c_n1)
    dx = dx + (L.conv_b(G, pre + ".skip", dout, c_sk) if c_sk is not None else dout)
    return dx, de


_CHECKED = _Layers(conv_f, conv_b, gnsilu_f, gnsilu_b, gnsilu_shift_f, gnsilu_shift_b, lin_f, lin_b)
_UNCHECKED = _Layers(_conv_fu, _conv_bu, _gnsilu_fu, _gnsilu_bu, _gnsilu_shift_fu, _gnsilu_shift_bu, _lin_fu, _lin_bu)


# ------------------------------------------------------------------ attention block
def attnblock_init(P, pre, c, rng):
    init_groupnorm(P, pre + ".norm", c)
    init_linear(P, pre + ".qkv", c, 3 * c, rng)
    init_linear(P, pre + ".proj", c, c, rng)


def attnblock_forward(P, pre, x, groups):
    """Single-head self-attention over the H W pixels with a residual connection,
    MATH.md (13.17): tokens ``h = gn(x)``; ``[q k v] = h W_qkv + b``;
    ``out = x + (attention(q, k, v) W_proj + b)`` back in NCHW.  Tokens are laid out
    pixel-major, (L N, C), so that the (C, H, W, N) memory order of the convolutions
    converts to them without a copy.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        Flat parameter dict holding ``norm``, ``qkv`` and ``proj`` under ``pre``.
    pre : str
        Key prefix of the block.
    x : array, shape (N, C, H, W)
        Input.
    groups : int
        GroupNorm group count, dividing C.

    Returns
    -------
    out : array, shape (N, C, H, W)
        ``x`` plus the attention output.
    cache : tuple
        Saved values for :func:`attnblock_backward`.
    """
    _check_block_input(P, pre, x, groups, ".norm", ".qkv.w", ".proj.w", what="attnblock_forward")
    xp = array_namespace(x)
    N, C, H, W = x.shape
    L = H * W
    h, c_n = gn_f(P, pre + ".norm", x, groups)
    tok = _tokens(xp, h)  # (L N, C)
    qkv, c_qkv = lin_f(P, pre + ".qkv", tok)  # (L N, 3C)
    qkv = xp.permute_dims(xp.reshape(qkv, (L, N, 3 * C)), (1, 0, 2))  # (N, L, 3C)
    o, c_a = attention_forward(qkv[:, :, :C], qkv[:, :, C:2 * C], qkv[:, :, 2 * C:])  # (N, L, C)
    o = xp.reshape(xp.permute_dims(o, (1, 0, 2)), (L * N, C))  # (L N, C)
    o, c_p = lin_f(P, pre + ".proj", o)
    return x + _from_tokens(xp, o, (N, C, H, W)), (c_n, c_qkv, c_a, c_p, (N, C, H, W))


def attnblock_backward(G, P, pre, dout, cache):
    """Backward of :func:`attnblock_forward`; returns dx.  MATH.md (13.17).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient dict; the block's parameter gradients are added into it under ``pre``.
    P : dict
        The parameter dict used in the forward pass.
    pre : str
        Key prefix of the block.
    dout : array, shape (N, C, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`attnblock_forward`.

    Returns
    -------
    dx : array, shape (N, C, H, W)
        Gradient with respect to ``x``.
    """
    check_grads(G)
    check_block(P, pre, ".proj.w", ".qkv.w", ".norm.gamma", what="attnblock_backward")
    c_n, c_qkv, c_a, c_p, (N, C, H, W) = check_cache(cache, "attnblock_forward", 5)
    check_dout(dout, (N, C, H, W))
    xp = array_namespace(dout)
    L = H * W
    do = _tokens(xp, dout)  # (L N, C)
    do = lin_b(G, pre + ".proj", do, c_p)
    do = xp.permute_dims(xp.reshape(do, (L, N, C)), (1, 0, 2))  # (N, L, C)
    dq, dk, dv = attention_backward(do, c_a)
    dqkv = xp.concat([dq, dk, dv], axis=2)  # (N, L, 3C)
    dqkv = xp.reshape(xp.permute_dims(dqkv, (1, 0, 2)), (L * N, 3 * C))  # (L N, 3C)
    dtok = lin_b(G, pre + ".qkv", dqkv, c_qkv)
    dh = _from_tokens(xp, dtok, (N, C, H, W))  # (N, C, H, W)
    return dout + gn_b(G, pre + ".norm", dh, c_n)
