"""A toy MMDiT (SD3-style joint text–image transformer), MATH.md (20.9), (20.10).

Two streams of tokens, each with its own weights (adaLN modulation, qkv, output projection,
MLP), attend *jointly*: their queries, keys and values are concatenated along the sequence
(text first, as in SD3) and one softmax runs over all keys, with a key-padding mask on the
text part.  Architecture (L text tokens, T image tokens, width D)::

    e    = E_tok[ids] + E_pos[0:L]                    (N, L, D_t)   learned, positions up to max_text_len
    ctx  = e W_ctx + b_ctx                            (N, L, D)     the text stream
    h    = patchify(x) W_x + b_x + pos                (N, T, D)     (20.1), (20.2): the image stream
    pool = sum_l mask_l e_l / sum_l mask_l            (N, D_t)      masked mean
    c    = MLP_t(sinusoid(t)) + MLP_p(pool)           (N, D)        (20.10)
    ctx, h = joint_block_l(ctx, h, silu(c), mask)     l = 1..depth  (20.9); the last block's text
                                                                    stream only gives keys/values
    out  = unpatchify(final(h, silu(c)))              (N, C, S, S)  (20.5)

There is no pretrained text encoder here (refdiff has none yet): the text stream starts
from this learned token table, trained with the rest.  Token ids follow
:class:`~refdiff.nn.conditions.TokenCond` (id 0 is the start token; the null prompt is the
start token alone).  Trained as a velocity model with flow matching, MATH.md (18.16), and
SD3's logit-normal times (:func:`refdiff.flow_matching.sample_flow_times`), on pixels.
Zero initialisation as DiT's adaLN-Zero (every ada projection and the final linear), so
the model starts at output 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import check_array, check_bool, check_finite_scalar
from ..backend import array_namespace
from ._check import (check_block, check_cache, check_config, check_dout, check_grads, check_params, check_prefix,
                     check_rng, check_size)
from .activations import gelu_backward, gelu_forward, silu_backward, silu_forward
from .attention import attention_backward, attention_forward, merge_heads, split_heads
from .base import DenoiserBase, config_fields
from .conditions import CondSpec, TokenCond
from .dit import (LN_EPS, _chunks, final_layer_backward, final_layer_forward, modulate_backward, modulate_forward,
                  sincos_pos_embed_2d, tok_linear_backward, tok_linear_forward, xavier_uniform)
from .layers import (embedding_backward, embedding_forward, linear_backward, linear_forward, patchify_backward,
                     patchify_forward, unpatchify_backward, unpatchify_forward)
from .norm import layernorm_backward, layernorm_forward

__all__ = ["MMDiTConfig", "MMDiT", "joint_block_init", "joint_block_forward", "joint_block_backward"]


def _acc(G, k, g):
    G[k] = G[k] + g if k in G else g


# ------------------------------------------------------------------ one stream's halves
def _stream_init(P, pre, D, mlp_ratio, rng, pre_only):
    P[pre + ".ada.w"], P[pre + ".ada.b"] = np.zeros((D, (2 if pre_only else 6) * D)), np.zeros((2 if pre_only else 6) * D)
    P[pre + ".qkv.w"], P[pre + ".qkv.b"] = xavier_uniform(rng, D, 3 * D), np.zeros(3 * D)
    if not pre_only:
        F = int(D * mlp_ratio)
        for name, di, do in (("out", D, D), ("fc1", D, F), ("fc2", F, D)):
            P[f"{pre}.{name}.w"], P[f"{pre}.{name}.b"] = xavier_uniform(rng, di, do), np.zeros(do)


def _pre_attn(P, pre, x, s):
    """adaLN chunks from s, then qkv of modulate(LN(x), shift1, scale1)."""
    mod, c_mod = linear_forward(s, P[pre + ".ada.w"], P[pre + ".ada.b"])
    ch = _chunks(mod, mod.shape[1] // x.shape[2])
    h, c_ln = layernorm_forward(x, eps=LN_EPS)
    m, c_m = modulate_forward(h, ch[0], ch[1])
    qkv, c_q = tok_linear_forward(P, pre + ".qkv", m)  # (N, L, 3D)
    return qkv, ch, (c_mod, c_ln, c_m, c_q)


def _pre_attn_b(G, P, pre, dqkv, d_rest, cache):
    """Backward of :func:`_pre_attn`; ``d_rest`` the gradients of chunks 2..5 (or []).
    Returns (dx, ds)."""
    xp = array_namespace(dqkv)
    c_mod, c_ln, c_m, c_q = cache
    dh, dsh, dsc = modulate_backward(tok_linear_backward(G, pre + ".qkv", dqkv, c_q), c_m)
    ds, dw, db = linear_backward(xp.concat([dsh, dsc] + list(d_rest), axis=1), c_mod)
    _acc(G, pre + ".ada.w", dw)
    _acc(G, pre + ".ada.b", db)
    return layernorm_backward(dh, c_ln)[0], ds


def _post_attn(P, pre, x, o, ch):
    """x1 = x + g1 (o W_out + b); out = x1 + g2 MLP(modulate(LN(x1), sh2, sc2)), as (20.4)."""
    _, _, g1, sh2, sc2, g2 = ch
    a, c_o = tok_linear_forward(P, pre + ".out", o)
    x1 = x + g1[:, None, :] * a
    h2, c_ln = layernorm_forward(x1, eps=LN_EPS)
    m2, c_m = modulate_forward(h2, sh2, sc2)
    f1, c_f1 = tok_linear_forward(P, pre + ".fc1", m2)
    gl, c_g = gelu_forward(f1, "tanh")
    f2, c_f2 = tok_linear_forward(P, pre + ".fc2", gl)
    return x1 + g2[:, None, :] * f2, (g1, g2, a, f2, c_o, c_ln, c_m, c_f1, c_g, c_f2)


def _post_attn_b(G, P, pre, dout, cache):
    """Backward of :func:`_post_attn`: (dx, do, [dg1, dsh2, dsc2, dg2])."""
    xp = array_namespace(dout)
    g1, g2, a, f2, c_o, c_ln, c_m, c_f1, c_g, c_f2 = cache
    dg2 = xp.sum(dout * f2, axis=1)
    dgl = tok_linear_backward(G, pre + ".fc2", dout * g2[:, None, :], c_f2)
    dm2 = tok_linear_backward(G, pre + ".fc1", gelu_backward(dgl, c_g), c_f1)
    dh2, dsh2, dsc2 = modulate_backward(dm2, c_m)
    dx1 = dout + layernorm_backward(dh2, c_ln)[0]
    dg1 = xp.sum(dx1 * a, axis=1)
    do = tok_linear_backward(G, pre + ".out", dx1 * g1[:, None, :], c_o)
    return dx1, do, [dg1, dsh2, dsc2, dg2]


# ------------------------------------------------------------------ the joint block
def joint_block_init(P: dict, pre: str, D: int, heads: int, mlp_ratio: float, rng, *, pre_only: bool = False):
    """Parameters of one joint block: streams ``pre.c`` (text) and ``pre.x`` (image); with
    ``pre_only`` the text stream has only its (shift, scale) adaLN and qkv (SD3's last block).

    Parameters
    ----------
    P : dict
        Parameter dict written into (host NumPy arrays).
    pre : str
        Key prefix of the block.
    D : int
        Token width.
    heads : int
        Number of heads, dividing D.
    mlp_ratio : float
        MLP hidden width over D.
    rng : numpy.random.Generator
        Source of the initial weights.
    pre_only : bool, optional
        Build the text stream without output projection, gate and MLP (default False).

    Raises
    ------
    ValueError
        If ``heads`` is below 1 or does not divide ``D``.
    """
    check_params(P)
    check_prefix(pre)
    D, heads = check_size("D", D, 1, 1 << 16), check_size("heads", heads, 1, 1 << 12)
    mlp_ratio = check_finite_scalar("mlp_ratio", mlp_ratio, low=0.0, low_open=True)
    check_rng(rng)
    check_bool("pre_only", pre_only)
    if not 1 <= int(D * mlp_ratio) <= 1 << 18:
        raise ValueError(f"joint_block_init: mlp_ratio={mlp_ratio} gives a hidden width {int(D * mlp_ratio)}, "
                         "need 1 <= F <= 262144")
    if heads < 1 or D % heads:
        raise ValueError(f"joint_block_init: heads={heads} must divide the width {D}")
    _stream_init(P, pre + ".c", D, mlp_ratio, rng, pre_only)
    _stream_init(P, pre + ".x", D, mlp_ratio, rng, False)


def joint_block_forward(P, pre, ctx, x, s, text_mask, *, heads: int, pre_only: bool = False):
    """Joint attention block, MATH.md (20.9): ctx (N, L, D) text, x (N, T, D) image, s = silu(c)
    (N, D), text_mask (N, L) bool (True = a real token).  Each stream modulates, projects to
    q, k, v with its own weights; one attention over the concatenated sequence [text; image]
    with the key mask [text_mask; all True]; each stream takes its rows back through its own
    output projection, gate and MLP.  Returns ``((ctx_out or None, x_out), cache)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        Parameter dict holding the block under ``pre``.
    pre : str
        Key prefix of the block.
    ctx : array, shape (N, L, D)
        Text stream.
    x : array, shape (N, T, D)
        Image stream.
    s : array, shape (N, D)
        Activated conditioning ``silu(c)``.
    text_mask : array of bool, shape (N, L)
        True for a real text token.
    heads : int
        Number of heads, dividing D.
    pre_only : bool, optional
        The text stream only gives keys and values; its output is None (default False).

    Returns
    -------
    outs : tuple
        ``(ctx_out, x_out)``: ctx_out (N, L, D) or None with ``pre_only``, x_out (N, T, D).
    cache : tuple
        Saved values for :func:`joint_block_backward`.
    """
    check_bool("pre_only", pre_only)
    check_size("heads", heads)
    check_block(P, pre, ".x.ada.w", ".x.qkv.w", ".x.out.w", ".c.ada.w", ".c.qkv.w", what="joint_block_forward")
    check_array("ctx", ctx, ndim=3)
    check_array("x", x, ndim=3)
    check_array("s", s, ndim=2)
    check_array("text_mask", text_mask, dtype="bool", ndim=2)
    D = P[pre + ".x.ada.w"].shape[0]
    if (ctx.shape[0], ctx.shape[2]) != (x.shape[0], D) or x.shape[2] != D or tuple(s.shape) != (x.shape[0], D):
        raise ValueError(f"joint_block_forward: need ctx (N, L, {D}), x (N, T, {D}), s (N, {D}) with one N, got ctx "
                         f"{tuple(ctx.shape)}, x {tuple(x.shape)}, s {tuple(s.shape)}")
    if tuple(text_mask.shape) != tuple(ctx.shape[:2]):
        raise ValueError(f"joint_block_forward: text_mask must have ctx's (N, L) = {tuple(ctx.shape[:2])}, got "
                         f"shape {tuple(text_mask.shape)}")
    if pre_only != (pre + ".c.out.w" not in P):
        raise ValueError(f"joint_block_forward: pre_only={pre_only} but P {'has' if pre_only else 'lacks'} "
                         f"the text stream's output layers under pre = {pre!r}")
    xp = array_namespace(x)
    N, L, D = ctx.shape
    qkv_c, ch_c, c_pc = _pre_attn(P, pre + ".c", ctx, s)
    qkv_x, ch_x, c_px = _pre_attn(P, pre + ".x", x, s)
    qkv = xp.concat([qkv_c, qkv_x], axis=1)  # (N, L + T, 3D)
    mask = xp.concat([text_mask, xp.ones((N, x.shape[1]), dtype=xp.bool)], axis=1)  # (N, L + T)
    q, k, v = (split_heads(qkv[..., i * D:(i + 1) * D], heads) for i in range(3))  # (N, H, L + T, d)
    o, c_a = attention_forward(q, k, v, mask)
    o = merge_heads(o)  # (N, L + T, D)
    x_out, c_x = _post_attn(P, pre + ".x", x, o[:, L:, :], ch_x)
    c_out, c_c = (None, None) if pre_only else _post_attn(P, pre + ".c", ctx, o[:, :L, :], ch_c)
    return (c_out, x_out), (c_pc, c_px, c_a, c_x, c_c, L, heads)


def joint_block_backward(G, P, pre, dctx_out, dx_out, cache):
    """Backward of :func:`joint_block_forward`, MATH.md (20.9) with (13.15); ``dctx_out`` None
    for a pre-only block.  Returns ``(dctx, dx, ds)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient dict; the block's parameter gradients are added into it under ``pre``.
    P : dict
        The parameter dict of the forward pass.
    pre : str
        Key prefix of the block.
    dctx_out : array of shape (N, L, D), or None
        Gradient with respect to ``ctx_out`` (None for a pre-only block).
    dx_out : array, shape (N, T, D)
        Gradient with respect to ``x_out``.
    cache : tuple
        The cache returned by :func:`joint_block_forward`.

    Returns
    -------
    dctx : array, shape (N, L, D)
        Gradient with respect to ``ctx``.
    dx : array, shape (N, T, D)
        Gradient with respect to ``x``.
    ds : array, shape (N, D)
        Gradient with respect to ``s``.
    """
    check_grads(G)
    check_block(P, pre, ".x.ada.w", what="joint_block_backward")
    c_pc, c_px, c_a, c_x, c_c, L, heads = check_cache(cache, "joint_block_forward", 7)
    check_dout(dx_out, c_x[3].shape, name="dx_out")
    if c_c is None and dctx_out is not None:
        raise ValueError("joint_block_backward: dctx_out must be None for a pre-only block (no ctx_out)")
    if c_c is not None:
        check_dout(dctx_out, c_c[3].shape, name="dctx_out")
    xp = array_namespace(dx_out)
    dx, dox, rest_x = _post_attn_b(G, P, pre + ".x", dx_out, c_x)
    if c_c is None:
        dctx, doc, rest_c = 0.0, xp.zeros((dox.shape[0], L, dox.shape[2]), dtype=dox.dtype), []
    else:
        dctx, doc, rest_c = _post_attn_b(G, P, pre + ".c", dctx_out, c_c)
    do = xp.concat([doc, dox], axis=1)
    dq, dk, dv = (merge_heads(g) for g in attention_backward(split_heads(do, heads), c_a))
    dqkv = xp.concat([dq, dk, dv], axis=2)  # (N, L + T, 3D)
    dxa, ds_x = _pre_attn_b(G, P, pre + ".x", dqkv[:, L:, :], rest_x, c_px)
    dca, ds_c = _pre_attn_b(G, P, pre + ".c", dqkv[:, :L, :], rest_c, c_pc)
    return dctx + dca, dx + dxa, ds_x + ds_c


# ------------------------------------------------------------------ the model
@dataclasses.dataclass(frozen=True)
class MMDiTConfig:
    """Configuration of :class:`MMDiT`: the image side as :class:`~refdiff.nn.dit.DiTConfig`
    (image_size, in_channels, patch, width, depth, heads, mlp_ratio, freq_dim); the text side:
    vocab_size V (id 0 the start token), max_text_len (rows of the learned position table;
    longer prompts are refused), text_dim D_t (token embedding width).  time_scale: t in
    [0, 1] is multiplied by it before the sinusoid (SD3: 1000).

    Parameters
    ----------
    image_size : int, optional
        Image side S, divisible by ``patch`` (default 8).
    in_channels : int, optional
        Image channels C (default 1).
    patch : int, optional
        Patch side p (default 2).
    width : int, optional
        Token width D, a multiple of 4 and of ``heads`` (default 64).
    depth : int, optional
        Number of joint blocks (default 3).
    heads : int, optional
        Attention heads (default 4).
    mlp_ratio : float, optional
        MLP hidden width over D (default 4).
    vocab_size : int, optional
        Token vocabulary V (default 16).
    max_text_len : int, optional
        Longest prompt, rows of the position table (default 8).
    text_dim : int, optional
        Token embedding width D_t (default 32).
    freq_dim : int, optional
        Size of the time sinusoid (default 64).
    time_scale : float, optional
        Factor applied to t before the sinusoid (default 1000).
    max_period : float, optional
        Longest period of the sinusoid (default 10000).

    Raises
    ------
    ValueError
        If an int size is not an int >= 1, or a divisibility condition above fails.
    """

    image_size: int = 8
    in_channels: int = 1
    patch: int = 2
    width: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    vocab_size: int = 16
    max_text_len: int = 8
    text_dim: int = 32
    freq_dim: int = 64
    time_scale: float = 1000.0
    max_period: float = 10000.0

    def __post_init__(self):
        check_config("MMDiTConfig", self, ints={"image_size": 1, "in_channels": 1, "patch": 1, "width": 1, "depth": 1,
                                                "heads": 1, "vocab_size": 1, "max_text_len": 1, "text_dim": 1,
                                                "freq_dim": 2},
                     floats={"mlp_ratio": (0.0, True), "time_scale": (0.0, True), "max_period": (0.0, True)})
        if self.image_size % self.patch:
            raise ValueError(f"MMDiTConfig: patch={self.patch} must divide image_size={self.image_size}")
        if self.width % self.heads:
            raise ValueError(f"MMDiTConfig: heads={self.heads} must divide width={self.width}")
        if self.width % 4:
            raise ValueError(f"MMDiTConfig: width={self.width} must be a multiple of 4 (the 2-D sin-cos table)")

    def to_dict(self) -> dict:
        """The fields as a plain dict, with ``"arch": "mmdit"``."""
        return {"arch": "mmdit", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "MMDiTConfig":
        return config_fields(cls, d, "mmdit")


class MMDiT(DenoiserBase):
    """Joint text–image transformer ``(x (N, C, S, S), t (N,), cond) -> (N, C, S, S)``, MATH.md
    (20.9), (20.10); ``cond = {"tokens": ids (N, L), "token_mask": (N, L) bool}``, L <=
    max_text_len (missing: the null prompt).  The module docstring has the architecture.

    Parameters
    ----------
    config : MMDiTConfig or None, optional
        The configuration; None (default) for ``MMDiTConfig()``.
    """

    arch = "mmdit"

    def __init__(self, config: MMDiTConfig | None = None):
        super().__init__(MMDiTConfig() if config is None else self._check_config_type(config, MMDiTConfig))

    @property
    def cond_spec(self) -> CondSpec:
        return CondSpec([TokenCond(self.config.vocab_size, self.config.max_text_len)])

    def _init_host(self, rng):
        c, P = self.config, {}
        D, Dt = c.width, c.text_dim
        P["x_embed.w"], P["x_embed.b"] = xavier_uniform(rng, c.patch * c.patch * c.in_channels, D), np.zeros(D)
        P["tok_emb"], P["tok_pos"] = 0.02 * rng.standard_normal((c.vocab_size, Dt)), 0.02 * rng.standard_normal(
            (c.max_text_len, Dt))
        P["ctx_embed.w"], P["ctx_embed.b"] = xavier_uniform(rng, Dt, D), np.zeros(D)
        for name, di in (("t_embed", c.freq_dim), ("pool_embed", Dt)):
            P[name + ".fc1.w"], P[name + ".fc1.b"] = 0.02 * rng.standard_normal((di, D)), np.zeros(D)
            P[name + ".fc2.w"], P[name + ".fc2.b"] = 0.02 * rng.standard_normal((D, D)), np.zeros(D)
        for l in range(c.depth):
            joint_block_init(P, f"blk{l}", D, c.heads, c.mlp_ratio, rng, pre_only=l == c.depth - 1)
        P["final.ada.w"], P["final.ada.b"] = np.zeros((D, 2 * D)), np.zeros(2 * D)
        P["final.linear.w"] = np.zeros((D, c.patch * c.patch * c.in_channels))
        P["final.linear.b"] = np.zeros(c.patch * c.patch * c.in_channels)
        return P

    @staticmethod
    def _mlp2(P, name, z):
        a, c1 = linear_forward(z, P[name + ".fc1.w"], P[name + ".fc1.b"])
        b, cs = silu_forward(a)
        out, c2 = linear_forward(b, P[name + ".fc2.w"], P[name + ".fc2.b"])
        return out, (c1, cs, c2)

    @staticmethod
    def _mlp2_b(G, name, dout, cache):
        c1, cs, c2 = cache
        db, G[name + ".fc2.w"], G[name + ".fc2.b"] = linear_backward(dout, c2)
        dz, G[name + ".fc1.w"], G[name + ".fc1.b"] = linear_backward(silu_backward(db, cs), c1)
        return dz

    def _text(self, params, cond):
        """Token + position embeddings, the text stream and the masked-mean pool, MATH.md (20.10)."""
        ids, mask = cond["tokens"], cond["token_mask"]
        xp = array_namespace(params["tok_emb"])
        N, L = ids.shape
        if L > self.config.max_text_len:
            raise ValueError(f"MMDiT: the prompt has L = {L} tokens, the position table has "
                             f"max_text_len = {self.config.max_text_len} rows")
        e_flat, c_e = embedding_forward(xp.reshape(ids, (N * L,)), params["tok_emb"])
        e = xp.reshape(e_flat, (N, L, -1)) + params["tok_pos"][None, :L, :]  # (N, L, D_t)
        m = xp.astype(mask, e.dtype)[:, :, None]  # (N, L, 1)
        cnt = xp.sum(m, axis=1)  # (N, 1)
        pool = xp.sum(e * m, axis=1) / cnt  # (N, D_t)
        ctx, c_ctx = tok_linear_forward(params, "ctx_embed", e)  # (N, L, D)
        return ctx, pool, (c_e, m, cnt, c_ctx, N, L)

    def _text_b(self, G, dctx, dpool, cache):
        xp = array_namespace(dpool)
        c_e, m, cnt, c_ctx, N, L = cache
        de = tok_linear_backward(G, "ctx_embed", dctx, c_ctx) + m * (dpool / cnt)[:, None, :]
        G["tok_pos"] = xp.concat([xp.sum(de, axis=0), xp.zeros((self.config.max_text_len - L, de.shape[2]),
                                                                dtype=de.dtype)], axis=0)
        G["tok_emb"] = embedding_backward(xp.reshape(de, (N * L, -1)), c_e)

    def forward(self, params, x, t, cond=None):
        """Output (the velocity, for flow matching) and cache, MATH.md (20.9), (20.10).
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict
            Parameter dict (:meth:`~refdiff.nn.base.DenoiserBase.init_params`).
        x : array, shape (N, C, S, S)
            Noisy images.
        t : array of shape (N,) or float
            Times in [0, 1] (multiplied by ``time_scale``).
        cond : mapping or None, optional
            ``{"tokens": ids (N, L), "token_mask": (N, L) bool}`` with L <= max_text_len; None
            (default) for the null prompt.

        Returns
        -------
        out : array, shape (N, C, S, S)
            The predicted velocity.
        cache : tuple
            Saved values for :meth:`backward`.

        Raises
        ------
        ValueError
            If ``x``, ``t`` or ``cond`` do not match the config, or the prompt is longer than
            ``max_text_len``.
        """
        c = self.config
        check_array("x", x)
        if x.ndim == 4 and (x.shape[2] % c.patch or x.shape[3] % c.patch):
            raise ValueError(f"MMDiT.forward: image size {tuple(x.shape[2:])} is not divisible by patch={c.patch}")
        xp, t, cond = self._check_inputs(params, x, t, cond, (c.in_channels, c.image_size, c.image_size),
                                         "MMDiT.forward")
        tok, p_cache = patchify_forward(x, c.patch)
        h, c_x = tok_linear_forward(params, "x_embed", tok)  # (N, T, D)
        h = h + xp.asarray(sincos_pos_embed_2d(c.width, c.image_size // c.patch), dtype=h.dtype)[None, ...]
        ctx, pool, c_txt = self._text(params, cond)
        f, _ = self._embed_time(t, c.freq_dim)
        te, c_te = self._mlp2(params, "t_embed", f)
        pe, c_pe = self._mlp2(params, "pool_embed", pool)
        s, c_s = silu_forward(te + pe)  # (N, D)
        blocks = []
        for l in range(c.depth):
            (ctx, h), c_b = joint_block_forward(params, f"blk{l}", ctx, h, s, cond["token_mask"], heads=c.heads,
                                                pre_only=l == c.depth - 1)
            blocks.append(c_b)
        y, c_f = final_layer_forward(params, "final", h, s)
        out, u_cache = unpatchify_forward(y, c.patch, (c.image_size, c.image_size))
        return out, (p_cache, c_x, c_txt, c_te, c_pe, c_s, blocks, c_f, u_cache)

    def backward(self, params, cache, dout):
        """Gradients of ``sum(out * dout)``: ``(grads, dx)``.
        NaN and inf propagate: not checked.

        Parameters
        ----------
        params : dict
            The parameter dict of the forward pass.
        cache : tuple
            The cache returned by :meth:`forward`.
        dout : array, shape (N, C, S, S)
            Gradient with respect to the output.

        Returns
        -------
        grads : dict
            Gradient of every parameter, keyed as ``params``.
        dx : array, shape (N, C, S, S)
            Gradient with respect to ``x``.
        """
        self._check_backward(params, cache, 9, dout)
        p_cache, c_x, c_txt, c_te, c_pe, c_s, blocks, c_f, u_cache = cache
        G: dict = {}
        dh, ds = final_layer_backward(G, params, "final", unpatchify_backward(dout, u_cache), c_f)
        dctx = None
        for l in reversed(range(self.config.depth)):
            dctx, dh, ds_l = joint_block_backward(G, params, f"blk{l}", dctx, dh, blocks[l])
            ds = ds + ds_l
        dc = silu_backward(ds, c_s)
        self._mlp2_b(G, "t_embed", dc, c_te)
        dpool = self._mlp2_b(G, "pool_embed", dc, c_pe)
        self._text_b(G, dctx, dpool, c_txt)
        dx = patchify_backward(tok_linear_backward(G, "x_embed", dh, c_x), p_cache)
        return {k: G[k] for k in params}, dx
