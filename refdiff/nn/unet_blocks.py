"""The U-Net's block kinds, one entry each in :data:`BLOCKS`: a new kind touches only this
table (and the place :meth:`refdiff.nn.UNet._plan` puts it).

Every kind has the same three functions, so the U-Net's forward and backward are one loop
over its plan:

* ``init(P, name, c_in, c_out, config, rng)``   host-side parameters under ``name``;
* ``forward(P, name, h, env) -> (h, cache)``     ``env``: the time embedding ``e`` (N, E),
  the cross-attention ``context`` (N, L, D_c) and its ``key_mask`` (N, L), ``groups``,
  ``heads``;
* ``backward(G, P, name, dh, cache, denv) -> dh``  parameter gradients go into ``G``, the
  gradients of ``e`` and ``context`` are added into ``denv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._validate import check_array
from ..backend import array_namespace
from ._check import check_block, check_cache, check_dout, check_grads, check_params, check_prefix, check_rng, check_size
from .attention import mha_backward, mha_forward, mha_init
from .blocks import (
    _check_block_input,
    attnblock_backward,
    attnblock_forward,
    attnblock_init,
    conv_b,
    conv_f,
    gn_b,
    gn_f,
    init_conv,
    init_groupnorm,
    resblock_backward,
    resblock_forward,
    resblock_init,
)
from .fast import upsample2x_backward, upsample2x_forward  # tuned twins (memory order)

__all__ = ["Block", "BLOCKS", "xattn_forward", "xattn_backward", "xattn_init"]


@dataclass(frozen=True)
class Block:
    """One block kind of the U-Net: its three functions (module docstring).

    Parameters
    ----------
    init : callable
        ``init(P, name, c_in, c_out, config, rng)``: writes the host-side parameters under
        ``name`` into ``P``.
    forward : callable
        ``forward(P, name, h, env) -> (h, cache)``.
    backward : callable
        ``backward(G, P, name, dh, cache, denv) -> dh``: parameter gradients go into ``G``,
        those of ``e`` and ``context`` are added into ``denv``.
    """

    init: Callable
    forward: Callable
    backward: Callable

    def __post_init__(self):
        for name in ("init", "forward", "backward"):
            if not callable(getattr(self, name)):
                raise TypeError(f"Block: {name} must be callable, got {type(getattr(self, name)).__name__}")


def _add(denv: dict, key: str, g):
    if g is not None:
        denv[key] = g if key not in denv else denv[key] + g


# ------------------------------------------------------------------ cross-attention block
def xattn_init(P, pre, c, context_dim, heads, rng):
    """Host-side parameters of :func:`xattn_forward` under ``pre``: a GroupNorm (gamma = 1,
    beta = 0) and fused cross-attention projections (:func:`refdiff.nn.attention.mha_init`).

    Parameters
    ----------
    P : dict
        Parameter dict written into.
    pre : str
        Key prefix of the block.
    c : int
        Pixel channels C (query width).
    context_dim : int
        Context token width D_c.
    heads : int
        Number of heads, dividing C.
    rng : numpy.random.Generator
        Source of the initial weights.

    Raises
    ------
    ValueError
        If ``heads`` does not divide ``c``.
    """
    check_params(P)
    check_prefix(pre)
    c = check_size("c", c, 1, 1 << 16)
    check_size("context_dim", context_dim, 1, 1 << 16)
    check_rng(rng)
    init_groupnorm(P, pre + ".norm", c)
    mha_init(P, pre + ".attn", c, heads, rng, context_dim=context_dim, fused=True)


def xattn_forward(P, pre, x, context, key_mask, groups, heads):
    """Cross-attention of the pixels to a context with a residual connection, MATH.md (13.17), (13.23):
    tokens ``h = gn(x)`` as (N, H W, C); ``out = x + mha(h, context; key_mask)`` back in NCHW
    (MATH.md (13.23) for ``mha``).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        Flat parameter dict holding ``norm`` and ``attn`` under ``pre``.
    pre : str
        Key prefix of the block.
    x : array, shape (N, C, H, W)
        Input.
    context : array, shape (N, L, D_c)
        Context tokens (keys and values).
    key_mask : array of bool, shape (N, L), or None
        True where a context token may be attended to; None for all.
    groups : int
        GroupNorm group count, dividing C.
    heads : int
        Number of attention heads, dividing C.

    Returns
    -------
    out : array, shape (N, C, H, W)
        ``x`` plus the attention output.
    cache : tuple
        Saved values for :func:`xattn_backward`.
    """
    _check_block_input(P, pre, x, groups, ".norm", ".attn.q.w", ".attn.out.w", what="xattn_forward")
    check_array("context", context, ndim=3)
    xp = array_namespace(x)
    N, C, H, W = x.shape
    h, c_n = gn_f(P, pre + ".norm", x, groups)
    tok = xp.reshape(xp.permute_dims(h, (0, 2, 3, 1)), (N, H * W, C))  # (N, HW, C)
    o, c_a = mha_forward(P, pre + ".attn", tok, context, heads=heads, key_mask=key_mask)  # (N, HW, C)
    o = xp.permute_dims(xp.reshape(o, (N, H, W, C)), (0, 3, 1, 2))  # (N, C, H, W)
    return x + o, (c_n, c_a, (N, C, H, W))


def xattn_backward(G, P, pre, dout, cache):
    """Backward of :func:`xattn_forward`; returns ``(dx, dcontext)``.  MATH.md (13.17), (13.23).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient dict; the block's parameter gradients are added into it under ``pre``.
    P : dict
        The parameter dict of the forward pass.
    pre : str
        Key prefix of the block.
    dout : array, shape (N, C, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`xattn_forward`.

    Returns
    -------
    dx : array, shape (N, C, H, W)
        Gradient with respect to ``x``.
    dcontext : array, shape (N, L, D_c)
        Gradient with respect to ``context``.
    """
    check_grads(G)
    check_block(P, pre, ".attn.out.w", ".norm.gamma", what="xattn_backward")
    c_n, c_a, (N, C, H, W) = check_cache(cache, "xattn_forward", 3)
    check_dout(dout, (N, C, H, W))
    xp = array_namespace(dout)
    do = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (N, H * W, C))  # (N, HW, C)
    dtok, dctx = mha_backward(G, P, pre + ".attn", do, c_a)
    dh = xp.permute_dims(xp.reshape(dtok, (N, H, W, C)), (0, 3, 1, 2))  # (N, C, H, W)
    return dout + gn_b(G, pre + ".norm", dh, c_n), dctx


# ------------------------------------------------------------------ the table
def _res_b(G, P, name, dh, cache, denv):
    dh, de = resblock_backward(G, P, name, dh, cache)
    _add(denv, "e", de)
    return dh


def _xattn_b(G, P, name, dh, cache, denv):
    dh, dctx = xattn_backward(G, P, name, dh, cache)
    _add(denv, "context", dctx)
    return dh


def _up_f(P, name, h, env):
    h, _ = upsample2x_forward(h)  # (N, C, 2H, 2W)
    return conv_f(P, name, h)


def _up_b(G, P, name, dh, cache, denv):
    return upsample2x_backward(conv_b(G, name, dh, cache), None)


BLOCKS = {
    "conv": Block(lambda P, n, ci, co, c, rng: init_conv(P, n, ci, co, 3, rng),
                  lambda P, n, h, env: conv_f(P, n, h),
                  lambda G, P, n, dh, cache, denv: conv_b(G, n, dh, cache)),
    "down": Block(lambda P, n, ci, co, c, rng: init_conv(P, n, ci, co, 3, rng),
                  lambda P, n, h, env: conv_f(P, n, h, stride=2),
                  lambda G, P, n, dh, cache, denv: conv_b(G, n, dh, cache)),
    "up": Block(lambda P, n, ci, co, c, rng: init_conv(P, n, ci, co, 3, rng), _up_f, _up_b),
    "res": Block(lambda P, n, ci, co, c, rng: resblock_init(P, n, ci, co, c.time_embed_dim, rng),
                 lambda P, n, h, env: resblock_forward(P, n, h, env["e"], env["groups"]), _res_b),
    "attn": Block(lambda P, n, ci, co, c, rng: attnblock_init(P, n, ci, rng),
                  lambda P, n, h, env: attnblock_forward(P, n, h, env["groups"]),
                  lambda G, P, n, dh, cache, denv: attnblock_backward(G, P, n, dh, cache)),
    "xattn": Block(lambda P, n, ci, co, c, rng: xattn_init(P, n, ci, c.context_dim, c.heads, rng),
                   lambda P, n, h, env: xattn_forward(P, n, h, env["context"], env["key_mask"], env["groups"],
                                                      env["heads"]),
                   _xattn_b),
}
