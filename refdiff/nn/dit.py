"""DiT: a diffusion transformer with adaLN-Zero blocks, MATH.md chapter 20.

Architecture (the reference release's ``DiT``; T = (S/p)^2 tokens of width D)::

    tok = patchify(x)                              (N, T, p p C)   (13.28), order (u, v, c)
    h   = tok W_x + b_x + pos                       (N, T, D)       (20.1), (20.2)
    c   = MLP(sinusoid(t)) + E[y]                   (N, D)          (20.6)  E has a null row K
    s   = silu(c)                                   (N, D)          shared by every adaLN
    h   = block_l(h, s)   l = 1..depth              (N, T, D)       (20.3), (20.4)
    y   = final(h, s)                               (N, T, p p C')  (20.5)
    out = unpatchify(y)                             (N, C', S, S)   C' = 2C with learned sigma

adaLN-Zero: the last linear map of every adaLN (blocks and final) and the final linear
layer start at exactly zero, so at initialisation every block is the identity and the
output is exactly 0 (MATH.md (20.7)).

Conventions (documented, tested, exported as reference vectors):

* patch embedding: the release's strided convolution (weight (D, C, p, p), (c, u, v)
  flattening) equals a linear map on :func:`~refdiff.nn.layers.patchify_forward` tokens,
  whose features are ordered (u, v, c), with ``W_lin[(u p + v) C + c, d] = W_conv[d, c, u, v]``
  (:func:`patch_embed_weight_from_conv`), MATH.md (20.1);
* positional table: the release's (MAE's) 2-D sin-cos table, whose *first* half of the
  channels encodes the column index j (``meshgrid(w, h)``), MATH.md (20.2);
* six-way chunk order of the adaLN projection: shift_msa, scale_msa, gate_msa, shift_mlp,
  scale_mlp, gate_mlp (release and diffusers' ``AdaLayerNormZero``);
* LayerNorm without affine, eps 1e-6; MLP ratio 4 with tanh-GELU; qkv with bias (fused).
* initialisation: the zeros are the release's; the non-zero weights are xavier-uniform
  (N(0, 0.02) for the timestep MLP and label table), as in the release.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._validate import check_array, check_finite_scalar
from ..backend import array_namespace
from ._check import (check_block, check_cache, check_config, check_dout, check_grads, check_params, check_prefix,
                     check_rng, check_size)
from .conditions import as_cond
from .activations import gelu_backward, gelu_forward, silu_backward, silu_forward
from .attention import mha_backward, mha_forward
from .base import DenoiserBase, config_fields
from .layers import (embedding_backward, embedding_forward, linear_backward, linear_forward,
                     patchify_backward, patchify_forward, unpatchify_backward, unpatchify_forward)
from .norm import layernorm_backward, layernorm_forward

__all__ = ["DiTConfig", "DiT", "sincos_pos_embed_2d", "patch_embed_weight_from_conv", "patch_embed_weight_to_conv",
           "modulate_forward", "modulate_backward", "tok_linear_forward", "tok_linear_backward",
           "dit_block_init", "dit_block_forward", "dit_block_backward", "final_layer_forward", "final_layer_backward",
           "dit_cfg", "xavier_uniform", "LN_EPS"]

LN_EPS = 1e-6


# ------------------------------------------------------------------ conventions
def sincos_pos_embed_2d(dim: int, grid: int):
    """The fixed 2-D sin-cos positional table (T = grid^2, dim), float64 on the host,
    MATH.md (20.2).  Token k = i grid + j (row i, column j).  Channels
    ``[0, dim/4)``: sin(j w), ``[dim/4, dim/2)``: cos(j w), ``[dim/2, 3dim/4)``: sin(i w),
    ``[3dim/4, dim)``: cos(i w), with ``w_m = 10000^(-m / (dim/4))``: the *column* index first,
    as the release's ``get_2d_sincos_pos_embed`` (``meshgrid(grid_w, grid_h)``) does.

    Parameters
    ----------
    dim : int
        Table width, a positive multiple of 4.
    grid : int
        Tokens per side, >= 1.

    Returns
    -------
    numpy.ndarray, shape (grid^2, dim)
        The table in float64.

    Raises
    ------
    ValueError
        If ``dim`` or ``grid`` is out of range.
    """
    dim, grid = check_size("dim", dim, 4, 1 << 16), check_size("grid", grid, 1, 1 << 12)
    if dim % 4:
        raise ValueError(f"sincos_pos_embed_2d: dim must be a positive multiple of 4, got {dim!r}")
    q = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(q, dtype=np.float64) / q)
    i, j = np.divmod(np.arange(grid * grid), grid)  # row, column of token k

    def one(pos):
        a = pos[:, None] * omega[None, :]  # (T, dim/4)
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)

    return np.concatenate([one(j.astype(np.float64)), one(i.astype(np.float64))], axis=1)


def patch_embed_weight_from_conv(w_conv):
    """The release's patch-embedding kernel (D, C, p, p) as the (p p C, D) matrix of the
    linear map on patchified tokens: ``W[(u p + v) C + c, d] = w_conv[d, c, u, v]``,
    MATH.md (20.1).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    w_conv : array, shape (D, C, p, p)
        The convolution kernel.

    Returns
    -------
    array, shape (p p C, D)
        The linear weight.

    Raises
    ------
    ValueError
        If ``w_conv`` is not a (D, C, p, p) kernel.
    """
    check_array("w_conv", w_conv, ndim=4)
    xp = array_namespace(w_conv)
    if w_conv.shape[2] != w_conv.shape[3]:
        raise ValueError(f"patch_embed_weight_from_conv: need a (D, C, p, p) kernel, got {tuple(w_conv.shape)}")
    D, C, p, _ = w_conv.shape
    return xp.reshape(xp.permute_dims(w_conv, (2, 3, 1, 0)), (p * p * C, D))  # (u, v, c) x d


def patch_embed_weight_to_conv(w_lin, channels: int, patch: int):
    """Inverse of :func:`patch_embed_weight_from_conv`: (p p C, D) -> (D, C, p, p).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    w_lin : array, shape (p p C, D)
        The linear weight.
    channels : int
        Image channels C.
    patch : int
        Patch side p.

    Returns
    -------
    array, shape (D, C, p, p)
        The convolution kernel.

    Raises
    ------
    ValueError
        If ``w_lin`` is not a (p p C, D) matrix.
    """
    check_array("w_lin", w_lin, ndim=2)
    p, C = check_size("patch", patch, 1, 1 << 12), check_size("channels", channels, 1, 1 << 16)
    xp = array_namespace(w_lin)
    if w_lin.shape[0] != p * p * C:
        raise ValueError(f"patch_embed_weight_to_conv: need a ({p * p * C}, D) matrix, got {tuple(w_lin.shape)}")
    return xp.permute_dims(xp.reshape(w_lin, (p, p, C, w_lin.shape[1])), (3, 2, 0, 1))


def xavier_uniform(rng, d_in: int, d_out: int):
    """U(-a, a), a = sqrt(6 / (d_in + d_out)): the release's ``xavier_uniform_`` on a
    (d_out, d_in) Linear, returned as refdiff's (d_in, d_out) weight.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    d_in : int
        Input width.
    d_out : int
        Output width.

    Returns
    -------
    numpy.ndarray, shape (d_in, d_out)
        The weight in float64.
    """
    check_rng(rng)
    d_in, d_out = check_size("d_in", d_in, 1, 1 << 16), check_size("d_out", d_out, 1, 1 << 16)
    a = math.sqrt(6.0 / (d_in + d_out))
    return rng.uniform(-a, a, size=(d_in, d_out))


# ------------------------------------------------------------------ layers
def modulate_forward(x, shift, scale):
    """``out = x (1 + scale) + shift`` per sample, x (N, L, D), shift and scale (N, D),
    MATH.md (20.3).  Returns ``(out, cache)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, L, D)
        Tokens.
    shift : array, shape (N, D)
        Per-sample shift.
    scale : array, shape (N, D)
        Per-sample scale (added to 1).

    Returns
    -------
    out : array, shape (N, L, D)
        The modulated tokens.
    cache : tuple
        ``(x, scale)`` for :func:`modulate_backward`.

    Raises
    ------
    ValueError
        If the shapes do not match as above.
    """
    check_array("x", x, ndim=3)
    check_array("shift", shift, ndim=2)
    check_array("scale", scale, ndim=2)
    if tuple(shift.shape) != (x.shape[0], x.shape[2]) or shift.shape != scale.shape:
        raise ValueError(f"modulate_forward: need x (N, L, D) and shift, scale (N, D); got {tuple(x.shape)}, "
                         f"{tuple(shift.shape)}, {tuple(scale.shape)}")
    return x * (1.0 + scale[:, None, :]) + shift[:, None, :], (x, scale)


def modulate_backward(dout, cache):
    """MATH.md (20.3): ``dx = dout (1 + scale)``, ``dshift = sum_L dout``,
    ``dscale = sum_L dout x``.  Returns ``(dx, dshift, dscale)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (N, L, D)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`modulate_forward`.

    Returns
    -------
    dx : array, shape (N, L, D)
    dshift : array, shape (N, D)
    dscale : array, shape (N, D)
        Gradients with respect to x, shift and scale.
    """
    x, scale = check_cache(cache, "modulate_forward", 2)
    check_dout(dout, x.shape)
    xp = array_namespace(dout)
    return dout * (1.0 + scale[:, None, :]), xp.sum(dout, axis=1), xp.sum(dout * x, axis=1)


def tok_linear_forward(P, name, x):
    """Token-wise ``x W + b`` for x (N, L, D_in): MATH.md (13.1) on the (N L, D_in) view.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        Parameters holding ``name + ".w"`` (D_in, D_out) and ``name + ".b"`` (D_out,).
    name : str
        The layer's key prefix.
    x : array, shape (N, L, D_in)
        Tokens.

    Returns
    -------
    y : array, shape (N, L, D_out)
        The output tokens.
    cache : tuple
        For :func:`tok_linear_backward`.
    """
    check_block(P, name, ".w", ".b", what="tok_linear_forward", pre_name="name")
    check_array("x", x, ndim=3)
    if x.shape[2] != P[name + ".w"].shape[0]:
        raise ValueError(f"tok_linear_forward: x has width {x.shape[2]} (shape {tuple(x.shape)}), "
                         f"P[{name + '.w'!r}] expects {P[name + '.w'].shape[0]}")
    xp = array_namespace(x)
    N, L, D = x.shape
    y, cache = linear_forward(xp.reshape(x, (N * L, D)), P[name + ".w"], P[name + ".b"])
    return xp.reshape(y, (N, L, y.shape[1])), (cache, N, L)


def tok_linear_backward(G, name, dout, cache):
    """MATH.md (13.2) for :func:`tok_linear_forward`; adds into ``G``, returns dx.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient accumulator: the gradients of ``name + ".w"`` and ``name + ".b"`` are added
        into it.
    name : str
        The layer's key prefix.
    dout : array, shape (N, L, D_out)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`tok_linear_forward`.

    Returns
    -------
    array, shape (N, L, D_in)
        Gradient with respect to the tokens.
    """
    check_grads(G)
    check_prefix(name, "name")
    c, N, L = check_cache(cache, "tok_linear_forward", 3)
    check_dout(dout, (N, L, c[1].shape[1]))
    xp = array_namespace(dout)
    dx, dw, db = linear_backward(xp.reshape(dout, (N * L, dout.shape[2])), c)
    for k, g in ((name + ".w", dw), (name + ".b", db)):
        G[k] = G[k] + g if k in G else g
    return xp.reshape(dx, (N, L, dx.shape[1]))


def _check_block_io(P, pre, x, s, keys, what):
    """P holds ``keys`` under ``pre``; x (N, T, D) and s (N, D) floats with one N and D."""
    check_block(P, pre, *keys, what=what)
    check_array("x", x, ndim=3)
    check_array("s", s, ndim=2)
    D = P[pre + ".ada.w"].shape[0]
    if s.shape[0] != x.shape[0] or s.shape[1] != D or x.shape[2] != D:
        raise ValueError(f"{what}: need x (N, T, {D}) and s (N, {D}) with one N for the parameters under "
                         f"pre = {pre!r}, got x {tuple(x.shape)} and s {tuple(s.shape)}")


def _chunks(mod, n):
    D = mod.shape[1] // n
    return [mod[:, k * D:(k + 1) * D] for k in range(n)]


# ------------------------------------------------------------------ blocks
def dit_block_init(P: dict, pre: str, D: int, heads: int, mlp_ratio: float, rng):
    """Host parameters of one adaLN-Zero block under ``pre``: fused qkv (with bias) and
    output projection, MLP fc1 (D, F), fc2 (F, D), F = int(D mlp_ratio), all xavier with
    zero biases; the adaLN projection ``ada`` (D, 6D) and its bias start at zero.

    Parameters
    ----------
    P : dict
        The flat parameter dict, filled in place (NumPy float64 arrays).
    pre : str
        The block's key prefix.
    D : int
        Width.
    heads : int
        Number of heads; must divide ``D``.
    mlp_ratio : float
        MLP hidden width over ``D``.
    rng : numpy.random.Generator
        Source of the xavier weights.

    Returns
    -------
    None
        ``P`` is filled in place.

    Raises
    ------
    ValueError
        If ``heads < 1`` or it does not divide ``D``.
    """
    check_params(P)
    check_prefix(pre)
    D, heads = check_size("D", D, 1, 1 << 16), check_size("heads", heads, 1, 1 << 12)
    mlp_ratio = check_finite_scalar("mlp_ratio", mlp_ratio, low=0.0, low_open=True)
    check_rng(rng)
    if D % heads:
        raise ValueError(f"dit_block_init: heads={heads} must divide the width {D}")
    F = int(D * mlp_ratio)
    if not 1 <= F <= 1 << 18:
        raise ValueError(f"dit_block_init: mlp_ratio={mlp_ratio} gives a hidden width {F}, need 1 <= F <= 262144")
    for name, di, do in (("attn.qkv", D, 3 * D), ("attn.out", D, D), ("fc1", D, F), ("fc2", F, D)):
        P[f"{pre}.{name}.w"], P[f"{pre}.{name}.b"] = xavier_uniform(rng, di, do), np.zeros(do)
    P[pre + ".ada.w"], P[pre + ".ada.b"] = np.zeros((D, 6 * D)), np.zeros(6 * D)


def dit_block_forward(P, pre, x, s, *, heads: int):
    """One adaLN-Zero block, MATH.md (20.4), x (N, T, D), s = silu(c) (N, D)::
    NaN and inf propagate: not checked.

        [sh1, sc1, g1, sh2, sc2, g2] = s W_ada + b_ada          six chunks of (N, D)
        x1  = x  + g1 * MHA(modulate(LN(x), sh1, sc1))
        out = x1 + g2 * fc2(gelu_tanh(fc1(modulate(LN(x1), sh2, sc2))))

    Returns ``(out, cache)``.

    Parameters
    ----------
    P : dict
        The parameters (keys under ``pre``, see :func:`dit_block_init`).
    pre : str
        The block's key prefix.
    x : array, shape (N, T, D)
        Tokens.
    s : array, shape (N, D)
        silu of the conditioning vector.
    heads : int
        Number of heads.

    Returns
    -------
    out : array, shape (N, T, D)
        The block's output.
    cache : tuple
        For :func:`dit_block_backward`.
    """
    _check_block_io(P, pre, x, s, (".ada.w", ".ada.b", ".attn.qkv.w", ".attn.out.w", ".fc1.w", ".fc2.w"),
                    "dit_block_forward")
    check_size("heads", heads)
    mod, c_mod = linear_forward(s, P[pre + ".ada.w"], P[pre + ".ada.b"])  # (N, 6D)
    sh1, sc1, g1, sh2, sc2, g2 = _chunks(mod, 6)
    h1, c_ln1 = layernorm_forward(x, eps=LN_EPS)
    m1, c_m1 = modulate_forward(h1, sh1, sc1)
    a, c_att = mha_forward(P, pre + ".attn", m1, heads=heads)  # (N, T, D)
    x1 = x + g1[:, None, :] * a
    h2, c_ln2 = layernorm_forward(x1, eps=LN_EPS)
    m2, c_m2 = modulate_forward(h2, sh2, sc2)
    f1, c_f1 = tok_linear_forward(P, pre + ".fc1", m2)  # (N, T, F)
    gl, c_g = gelu_forward(f1, "tanh")
    f2, c_f2 = tok_linear_forward(P, pre + ".fc2", gl)  # (N, T, D)
    out = x1 + g2[:, None, :] * f2
    return out, (c_mod, g1, g2, a, f2, c_ln1, c_m1, c_att, c_ln2, c_m2, c_f1, c_g, c_f2)


def dit_block_backward(G, P, pre, dout, cache):
    """Backward of :func:`dit_block_forward`, MATH.md (20.4) with (20.3), (13.26), (13.23):
    gradients are added into ``G``; returns ``(dx, ds)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient accumulator (the block's parameter gradients are added into it).
    P : dict
        The parameters used in the forward pass.
    pre : str
        The block's key prefix.
    dout : array, shape (N, T, D)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`dit_block_forward`.

    Returns
    -------
    dx : array, shape (N, T, D)
        Gradient with respect to the tokens.
    ds : array, shape (N, D)
        Gradient with respect to s.
    """
    check_grads(G)
    check_block(P, pre, ".ada.w", what="dit_block_backward")
    c_mod, g1, g2, a, f2, c_ln1, c_m1, c_att, c_ln2, c_m2, c_f1, c_g, c_f2 = check_cache(cache, "dit_block_forward", 13)
    check_dout(dout, f2.shape)
    xp = array_namespace(dout)
    dg2 = xp.sum(dout * f2, axis=1)
    dgl = tok_linear_backward(G, pre + ".fc2", dout * g2[:, None, :], c_f2)
    dm2 = tok_linear_backward(G, pre + ".fc1", gelu_backward(dgl, c_g), c_f1)
    dh2, dsh2, dsc2 = modulate_backward(dm2, c_m2)
    dx1 = dout + layernorm_backward(dh2, c_ln2)[0]
    dg1 = xp.sum(dx1 * a, axis=1)
    dm1 = mha_backward(G, P, pre + ".attn", dx1 * g1[:, None, :], c_att)[0]
    dh1, dsh1, dsc1 = modulate_backward(dm1, c_m1)
    dx = dx1 + layernorm_backward(dh1, c_ln1)[0]
    dmod = xp.concat([dsh1, dsc1, dg1, dsh2, dsc2, dg2], axis=1)  # (N, 6D), the chunk order
    ds, dw, db = linear_backward(dmod, c_mod)
    for k, g in ((pre + ".ada.w", dw), (pre + ".ada.b", db)):
        G[k] = G[k] + g if k in G else g
    return dx, ds


def final_layer_forward(P, pre, x, s):
    """The final adaLN layer, MATH.md (20.5): ``[shift, scale] = s W_ada + b_ada``,
    ``y = modulate(LN(x), shift, scale) W + b`` (both W start at zero).  (N, T, D) ->
    (N, T, p p C').
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        The parameters (``pre + ".ada.w"``, ``".ada.b"``, ``".linear.w"``, ``".linear.b"``).
    pre : str
        The layer's key prefix.
    x : array, shape (N, T, D)
        Tokens.
    s : array, shape (N, D)
        silu of the conditioning vector.

    Returns
    -------
    y : array, shape (N, T, p p C')
        The output tokens.
    cache : tuple
        For :func:`final_layer_backward`.
    """
    _check_block_io(P, pre, x, s, (".ada.w", ".ada.b", ".linear.w", ".linear.b"), "final_layer_forward")
    mod, c_mod = linear_forward(s, P[pre + ".ada.w"], P[pre + ".ada.b"])  # (N, 2D)
    shift, scale = _chunks(mod, 2)
    h, c_ln = layernorm_forward(x, eps=LN_EPS)
    m, c_m = modulate_forward(h, shift, scale)
    y, c_y = tok_linear_forward(P, pre + ".linear", m)
    return y, (c_mod, c_ln, c_m, c_y)


def final_layer_backward(G, P, pre, dout, cache):
    """Backward of :func:`final_layer_forward`, MATH.md (20.5); returns ``(dx, ds)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient accumulator (the layer's parameter gradients are added into it).
    P : dict
        The parameters used in the forward pass.
    pre : str
        The layer's key prefix.
    dout : array, shape (N, T, p p C')
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`final_layer_forward`.

    Returns
    -------
    dx : array, shape (N, T, D)
        Gradient with respect to the tokens.
    ds : array, shape (N, D)
        Gradient with respect to s.
    """
    check_grads(G)
    check_block(P, pre, ".ada.w", what="final_layer_backward")
    c_mod, c_ln, c_m, c_y = check_cache(cache, "final_layer_forward", 4)
    check_array("dout", dout)
    xp = array_namespace(dout)
    dh, dshift, dscale = modulate_backward(tok_linear_backward(G, pre + ".linear", dout, c_y), c_m)
    ds, dw, db = linear_backward(xp.concat([dshift, dscale], axis=1), c_mod)
    for k, g in ((pre + ".ada.w", dw), (pre + ".ada.b", db)):
        G[k] = G[k] + g if k in G else g
    return layernorm_backward(dh, c_ln)[0], ds


# ------------------------------------------------------------------ guidance
def dit_cfg(out_uncond, out_cond, guidance_scale, guided_channels="all"):
    """Classifier-free guidance of a DiT output (N, C', S, S), MATH.md (20.8):
    ``out = out_cond`` except on the guided channels, where ``out_u + s (out_c - out_u)``
    (s = ``guidance_scale``, the release's ``cfg_scale``; s = 1 is the conditional model).
    ``guided_channels``: "all" (every channel given), an int k (channels [0, k)): 3 is the
    release's ``forward_with_cfg`` (its known 3-channel bug, reproduced for verifiers),
    ``in_channels`` that of diffusers' ``DiTPipeline`` (the learned-sigma half is then the
    conditional one).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    out_uncond : array, shape (N, C', ...)
        Output with the null condition.
    out_cond : array, shape (N, C', ...)
        Output with the condition.
    guidance_scale : float
        The guidance scale s.
    guided_channels : "all" or int, default "all"
        The guided channels: all, or the first k (1 <= k <= C').

    Returns
    -------
    array, shape (N, C', ...)
        The guided output.

    Raises
    ------
    ValueError
        If the shapes differ or ``guided_channels`` is invalid.
    """
    check_array("out_uncond", out_uncond, min_ndim=2)
    check_array("out_cond", out_cond, min_ndim=2)
    xp = array_namespace(out_cond)
    guidance_scale = check_finite_scalar("guidance_scale", guidance_scale)
    if tuple(out_uncond.shape) != tuple(out_cond.shape):
        raise ValueError(f"dit_cfg: out_uncond {tuple(out_uncond.shape)} and out_cond {tuple(out_cond.shape)} "
                         "must have the same shape (N, C', ...)")
    Cp = out_cond.shape[1]
    k = Cp if guided_channels == "all" else guided_channels
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= Cp:
        raise ValueError(f"dit_cfg: guided_channels must be 'all' or an int in [1, {Cp}], got {guided_channels!r}")
    g = out_uncond[:, :k, ...] + float(guidance_scale) * (out_cond[:, :k, ...] - out_uncond[:, :k, ...])
    return xp.concat([g, out_cond[:, k:, ...]], axis=1)


# ------------------------------------------------------------------ the model
@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Configuration of :class:`DiT`.

    image_size S, in_channels C, patch p (p must divide S; T = (S/p)^2 tokens), width D,
    depth (blocks), heads (must divide D), mlp_ratio, num_classes (0: unconditional; else K
    classes plus the null class K), freq_dim (the timestep sinusoid, 256 in the release),
    learn_sigma (output 2C channels: the prediction and the release's learned-range
    variance interpolation), pos_embed (add the fixed table; False only for the
    permutation property), time_scale (t is multiplied by it), max_period (sinusoid).

    Parameters
    ----------
    image_size : int, default 8
        Image side S.
    in_channels : int, default 1
        Image channels C.
    patch : int, default 2
        Patch side p; must divide S.
    width : int, default 64
        Token width D, a multiple of 4 and of ``heads``.
    depth : int, default 4
        Number of blocks.
    heads : int, default 4
        Attention heads.
    mlp_ratio : float, default 4.0
        MLP hidden width over D.
    num_classes : int, default 0
        Number of classes K (0: unconditional).
    freq_dim : int, default 256
        Width of the timestep sinusoid, >= 2.
    learn_sigma : bool, default False
        Output 2C channels.
    pos_embed : bool, default True
        Add the fixed positional table.
    time_scale : float, default 1.0
        Factor applied to t.
    max_period : float, default 10000.0
        Maximum period of the timestep sinusoid.

    Raises
    ------
    ValueError
        If a size is out of range or a divisibility condition fails.
    """

    image_size: int = 8
    in_channels: int = 1
    patch: int = 2
    width: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0
    freq_dim: int = 256
    learn_sigma: bool = False
    pos_embed: bool = True
    time_scale: float = 1.0
    max_period: float = 10000.0

    def __post_init__(self):
        check_config("DiTConfig", self, ints={"image_size": 1, "in_channels": 1, "patch": 1, "width": 1, "depth": 1,
                                              "heads": 1, "num_classes": 0, "freq_dim": 2},
                     floats={"mlp_ratio": (0.0, True), "time_scale": (0.0, True), "max_period": (0.0, True)},
                     bools=("learn_sigma", "pos_embed"))
        if self.image_size % self.patch:
            raise ValueError(f"DiTConfig: patch={self.patch} must divide image_size={self.image_size} "
                             f"(valid patches: {[p for p in range(1, self.image_size + 1) if self.image_size % p == 0]})")
        if self.width % self.heads:
            raise ValueError(f"DiTConfig: heads={self.heads} must divide width={self.width}")
        if self.width % 4:
            raise ValueError(f"DiTConfig: width={self.width} must be a multiple of 4 (the 2-D sin-cos table)")
        if not self.mlp_ratio > 0 or int(self.width * self.mlp_ratio) < 1:
            raise ValueError(f"DiTConfig: mlp_ratio must give a hidden width >= 1, got {self.mlp_ratio!r}")
        if self.num_classes < 0 or self.freq_dim < 2:
            raise ValueError(f"DiTConfig: num_classes must be >= 0 and freq_dim >= 2, got {self.num_classes}, "
                             f"{self.freq_dim}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def to_dict(self) -> dict:
        """The configuration as a plain dict, with ``"arch": "dit"``."""
        return {"arch": "dit", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "DiTConfig":
        return config_fields(cls, d, "dit")


class DiT(DenoiserBase):
    """Diffusion transformer ``(x (N, C, S, S), t (N,), cond) -> (N, C', S, S)``, MATH.md
    (20.4)-(20.6); the module docstring has the architecture and the conventions.

    ``forward(params, x, t, cond=None) -> (out, cache)``, ``backward(params, cache, dout)
    -> (grads, dx)``; ``cond`` is ``{"class": y}`` (or a label array) when ``num_classes``
    > 0, None or a missing kind the null class.  ``apply`` (and so ``as_model`` and every
    sampler and guidance wrapper) returns the prediction: with ``learn_sigma`` the first C
    of the 2C output channels.  :meth:`guided` is CFG with the release's channel switch.

    Parameters
    ----------
    config : DiTConfig, optional
        The configuration; None (default): ``DiTConfig()``.
    """

    arch = "dit"

    def __init__(self, config: DiTConfig | None = None):
        super().__init__(DiTConfig() if config is None else self._check_config_type(config, DiTConfig))

    @property
    def grid(self) -> int:
        return self.config.image_size // self.config.patch

    def _init_host(self, rng):
        """The release's init: xavier weights, zero biases, N(0, 0.02) embedders, and the
        adaLN-Zero zeros (every ada projection, the final linear), MATH.md (20.7)."""
        c, P = self.config, {}
        D, pdim = c.width, c.patch * c.patch * c.in_channels
        P["x_embed.w"], P["x_embed.b"] = xavier_uniform(rng, pdim, D), np.zeros(D)
        P["t_embed.fc1.w"], P["t_embed.fc1.b"] = 0.02 * rng.standard_normal((c.freq_dim, D)), np.zeros(D)
        P["t_embed.fc2.w"], P["t_embed.fc2.b"] = 0.02 * rng.standard_normal((D, D)), np.zeros(D)
        if c.num_classes:
            P["class_emb"] = 0.02 * rng.standard_normal((c.num_classes + 1, D))
        for l in range(c.depth):
            dit_block_init(P, f"blk{l}", D, c.heads, c.mlp_ratio, rng)
        P["final.ada.w"], P["final.ada.b"] = np.zeros((D, 2 * D)), np.zeros(2 * D)
        P["final.linear.w"] = np.zeros((D, c.patch * c.patch * c.out_channels))
        P["final.linear.b"] = np.zeros(c.patch * c.patch * c.out_channels)
        return P

    def _check_image(self, x):
        c = self.config
        check_array("x", x)
        if x.ndim == 4 and (x.shape[2] % c.patch or x.shape[3] % c.patch):
            raise ValueError(f"DiT.forward: image size {tuple(x.shape[2:])} is not divisible by patch={c.patch}")

    def _embed_cond(self, params, t, cond):
        """c = MLP(sinusoid(t)) + E[y], MATH.md (20.6); returns (s = silu(c), cache)."""
        f, c_f = self._embed_time(t, self.config.freq_dim)
        e1, c_1 = linear_forward(f, params["t_embed.fc1.w"], params["t_embed.fc1.b"])
        e1s, c_s1 = silu_forward(e1)
        c, c_2 = linear_forward(e1s, params["t_embed.fc2.w"], params["t_embed.fc2.b"])
        ce, c_y = self._class_f(params, cond)
        if ce is not None:
            c = c + ce
        s, c_s = silu_forward(c)
        return s, (c_1, c_s1, c_2, c_y, c_s)

    def _embed_cond_b(self, G, ds, cache):
        c_1, c_s1, c_2, c_y, c_s = cache
        dc = silu_backward(ds, c_s)
        self._class_b(G, dc, c_y)
        de1s, G["t_embed.fc2.w"], G["t_embed.fc2.b"] = linear_backward(dc, c_2)
        _, G["t_embed.fc1.w"], G["t_embed.fc1.b"] = linear_backward(silu_backward(de1s, c_s1), c_1)

    def forward(self, params, x, t, cond=None):
        """Output (N, C', S, S) and cache, MATH.md (20.4)-(20.6).
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        x : array, shape (N, C, S, S)
            Noisy inputs.
        t : array, shape (N,), or float
            Times (multiplied by ``time_scale``).
        cond : dict, array of int, or None, optional
            ``{"class": y}`` or a label array; None: the null class.

        Returns
        -------
        out : array, shape (N, C', S, S)
            The output.
        cache : tuple
            For :meth:`backward`.

        Raises
        ------
        ValueError
            If ``x`` or ``t`` has the wrong shape or ``cond`` is invalid.
        """
        c = self.config
        self._check_image(x)
        xp, t, cond = self._check_inputs(params, x, t, cond, (c.in_channels, c.image_size, c.image_size),
                                         "DiT.forward")
        tok, p_cache = patchify_forward(x, c.patch)  # (N, T, p p C)
        h, c_x = tok_linear_forward(params, "x_embed", tok)  # (N, T, D)
        if c.pos_embed:
            h = h + xp.asarray(sincos_pos_embed_2d(c.width, self.grid), dtype=h.dtype)[None, ...]
        s, c_e = self._embed_cond(params, t, cond)  # (N, D)
        blocks = []
        for l in range(c.depth):
            h, c_b = dit_block_forward(params, f"blk{l}", h, s, heads=c.heads)
            blocks.append(c_b)
        y, c_f = final_layer_forward(params, "final", h, s)  # (N, T, p p C')
        out, u_cache = unpatchify_forward(y, c.patch, (c.image_size, c.image_size))  # (N, C', S, S)
        return out, (p_cache, c_x, c_e, blocks, c_f, u_cache)

    def backward(self, params, cache, dout):
        """Gradients of ``sum(out * dout)``: ``(grads, dx)``.
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict of str to array
            The parameters used in :meth:`forward`.
        cache : tuple
            The cache of :meth:`forward`.
        dout : array, shape (N, C', S, S)
            Gradient with respect to the output.

        Returns
        -------
        grads : dict of str to array
            Parameter gradients, keyed like ``params``.
        dx : array, shape (N, C, S, S)
            Gradient with respect to x.
        """
        self._check_backward(params, cache, 6, dout)
        p_cache, c_x, c_e, blocks, c_f, u_cache = cache
        G: dict = {}
        dh, ds = final_layer_backward(G, params, "final", unpatchify_backward(dout, u_cache), c_f)
        for l in reversed(range(self.config.depth)):
            dh, ds_l = dit_block_backward(G, params, f"blk{l}", dh, blocks[l])
            ds = ds + ds_l
        self._embed_cond_b(G, ds, c_e)
        dx = patchify_backward(tok_linear_backward(G, "x_embed", dh, c_x), p_cache)
        return {k: G[k] for k in params}, dx

    def apply(self, params, x, t, cond=None):
        """The prediction (with ``learn_sigma``: the first C channels).
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        x : array, shape (N, C, S, S)
            Noisy inputs.
        t : array, shape (N,), or float
            Times.
        cond : dict, array of int, or None, optional
            The condition.

        Returns
        -------
        array, shape (N, C, S, S)
            The prediction.
        """
        out = self.forward(params, x, t, cond)[0]
        return out[:, :self.config.in_channels, ...] if self.config.learn_sigma else out

    def guided(self, params, cond, guidance_scale, guided_channels="all"):
        """A plain ``model(x, t)``: the full output guided by :func:`dit_cfg` (conditional
        ``cond`` against the null class), MATH.md (20.8), cut to the prediction channels.

        Parameters
        ----------
        params : dict of str to array
            The parameters.
        cond : dict, array of int, or None
            The condition.
        guidance_scale : float
            The guidance scale s.
        guided_channels : "all" or int, default "all"
            As in :func:`dit_cfg`.

        Returns
        -------
        callable
            ``model(x, t)`` returning the guided prediction (N, C, S, S).
        """
        C = self.config.in_channels
        check_params(params, "params")
        cond = as_cond(cond)
        guidance_scale = check_finite_scalar("guidance_scale", guidance_scale)
        Cp = self.config.out_channels
        if guided_channels != "all" and (isinstance(guided_channels, bool) or not isinstance(guided_channels, int)
                                         or not 1 <= guided_channels <= Cp):
            raise ValueError(f"DiT.guided: guided_channels must be 'all' or an int in [1, {Cp}], got {guided_channels!r}")

        def model(x, t):
            xp, n = array_namespace(x), x.shape[0]
            dt = params[next(iter(params))].dtype
            full = self.cond_spec.validate(cond, n, xp, dt, "DiT.guided")
            u = self.forward(params, x, t, self.null_cond(full, n, xp=xp, dtype=dt))[0]
            o = self.forward(params, x, t, full)[0]
            return dit_cfg(u, o, guidance_scale, guided_channels)[:, :C, ...]

        return model
