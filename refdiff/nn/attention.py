"""Softmax attention with a key-padding mask, and multi-head self-/cross-attention,
MATH.md (13.14), (13.15), (13.22), (13.23).

Layout and conventions (those of the widely used PyTorch diffusion library's
``Attention`` module, so weights map one to one):

* tokens are (N, L, D): N samples, L tokens, D channels;
* heads are contiguous channel blocks: head h of a (N, L, H d) projection is the
  channel slice ``[h d, (h + 1) d)``, i.e. (N, L, H d) -> (N, L, H, d) -> (N, H, L, d);
* ``key_mask`` is a boolean (N, L_k) *keep* mask: True = attend to this key, False = a
  padding key.  Masked keys are excluded exactly (weight 0, so their keys and values get
  exactly zero gradient); ``mask_bias=-10000.0`` instead adds ``(1 - mask) * mask_bias`` to
  the scores, the additive convention of that library (weights ~e^-10000 = 0 in practice,
  but the gradient is then not exactly zero by construction);
* the scale is ``1 / sqrt(d)`` with d the per-head width.

Multi-head attention takes its parameters from a flat dict under a prefix, like the
blocks (``P["mid.attn.q.w"]``).  Which projections exist decides the variant:

=============================  ======================================================
keys under ``pre``             meaning
=============================  ======================================================
``qkv.w`` (D, 3 D')            fused q/k/v of one input (self-attention only)
``q.w`` (D, D'), ``kv.w``      separate query, fused key/value of the context
(D_c, 2 D')
``q.w``, ``k.w``, ``v.w``      three separate projections (D_c rows for k and v)
``out.w`` (D', D), ``out.b``   output projection (always)
=============================  ======================================================

Every projection's bias ``.b`` is optional (the library's q/k/v have none by default).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_bool, check_finite_scalar
from ..backend import array_namespace
from ._check import check_cache, check_dout, check_params, check_prefix, check_rng, check_size

__all__ = [
    "attention_forward",
    "attention_backward",
    "attention_forward_naive",
    "split_heads",
    "merge_heads",
    "mha_init",
    "mha_forward",
    "mha_backward",
    "mha_forward_naive",
]


# ------------------------------------------------------------------ masked attention
def _check_key_mask(xp, key_mask, B, Lk, what):
    if key_mask is None:
        return
    if not hasattr(key_mask, "dtype") or key_mask.dtype != xp.bool:
        raise TypeError(f"{what}: key_mask must be a boolean array (True = attend), got "
                        f"{getattr(key_mask, 'dtype', type(key_mask).__name__)}; pass mask == 1 for 0/1 masks")
    if tuple(key_mask.shape) != (B, Lk):
        raise ValueError(f"{what}: key_mask must have shape (N, L_k) = {(B, Lk)}, got {tuple(key_mask.shape)}")
    kept = xp.any(key_mask, axis=1)
    if not bool(xp.all(kept)):
        bad = [i for i in range(B) if not bool(kept[i])]
        raise ValueError(f"{what}: key_mask masks every key of sample(s) {bad[:8]}; "
                         "at least one key per sample must be kept (True)")


def _check_qkv(q, k, v, what):
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_array(name, a)
    if q.ndim < 3 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"{what}: q, k, v must be (B, ..., L, d) with the same number of axes (>= 3), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[:-2] != k.shape[:-2] or q.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"{what}: leading (batch, head) axes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{what}: q and k need the same width d, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"{what}: k and v need the same length L_k, got {k.shape[-2]} and {v.shape[-2]}")


def attention_forward(q, k, v, key_mask=None, *, mask_bias: float | None = None):
    """Scaled dot-product attention ``O = softmax(Q K^T / sqrt(d)) V``, MATH.md (13.14),
    with an optional key-padding mask, MATH.md (13.22).
    NaN and inf propagate: not checked.

    q (B, ..., L_q, d), k (B, ..., L_k, d), v (B, ..., L_k, d_v), the same leading axes
    (e.g. (N, L, d), or (N, H, L, d) for heads).  key_mask: None or boolean (B, L_k),
    True = attend; it applies to every query and every middle axis (head).  Masked keys
    get score -inf, hence weight exactly 0 (``mask_bias`` = a float instead adds
    ``(1 - mask) mask_bias``).  The row maximum is subtracted before exponentiating.
    Returns ``(out (B, ..., L_q, d_v), cache)``.

    Parameters
    ----------
    q : array, shape (B, ..., L_q, d)
        Queries.
    k : array, shape (B, ..., L_k, d)
        Keys, with the leading axes of ``q``.
    v : array, shape (B, ..., L_k, d_v)
        Values, with the leading axes of ``q``.
    key_mask : bool array, shape (B, L_k), optional
        True = attend to this key; every sample must keep at least one key.  None: no mask.
    mask_bias : float, optional
        None (default): masked keys get score -inf (exactly excluded); a float (e.g.
        -10000.0): ``(1 - mask) mask_bias`` is added to the scores instead.

    Returns
    -------
    out : array, shape (B, ..., L_q, d_v)
        The attention output.
    cache : tuple
        ``(q, k, v, P, scale)`` for :func:`attention_backward`.

    Raises
    ------
    ValueError
        If the shapes of ``q``, ``k``, ``v`` do not match as above, ``key_mask`` has the wrong
        shape, or it masks every key of a sample.
    TypeError
        If ``key_mask`` is not a boolean array.
    """
    what = "attention_forward"
    _check_qkv(q, k, v, what)
    if mask_bias is not None:
        mask_bias = check_finite_scalar("mask_bias", mask_bias)
    xp = array_namespace(q, k, v)
    B, Lk = q.shape[0], k.shape[-2]
    _check_key_mask(xp, key_mask, B, Lk, what)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ xp.matrix_transpose(k)) * scale  # (B, ..., L_q, L_k)
    if key_mask is not None:
        m = xp.reshape(key_mask, (B,) + (1,) * (q.ndim - 2) + (Lk,))  # (B, 1.., 1, L_k)
        if mask_bias is None:
            s = xp.where(m, s, -math.inf)
        else:
            s = s + (1.0 - xp.astype(m, s.dtype)) * float(mask_bias)
    s = s - xp.max(s, axis=-1, keepdims=True)  # finite: every row keeps a key
    e = xp.exp(s)  # exp(-inf) = 0 exactly at masked keys
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return p @ v, (q, k, v, p, scale)


def attention_backward(dout, cache):
    """Gradients of :func:`attention_forward`.  MATH.md (13.15):
    ``dV = P^T dO``, ``dS = P * (dP - rowsum(dP * P))`` with ``dP = dO V^T``,
    ``dQ = dS K / sqrt(d)``, ``dK = dS^T Q / sqrt(d)``.  A masked key has P = 0 in every
    row, hence dS = 0 in its column and exactly zero dK, dV (MATH.md (13.22)).
    Returns ``(dq, dk, dv)``.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    dout : array, shape (B, ..., L_q, d_v)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`attention_forward`.

    Returns
    -------
    dq : array, shape (B, ..., L_q, d)
    dk : array, shape (B, ..., L_k, d)
    dv : array, shape (B, ..., L_k, d_v)
        Gradients with respect to the queries, keys and values.
    """
    q, k, v, p, scale = check_cache(cache, "attention_forward", 5)
    check_dout(dout, tuple(p.shape[:-1]) + (v.shape[-1],))
    xp = array_namespace(dout)
    dv = xp.matrix_transpose(p) @ dout
    dp = dout @ xp.matrix_transpose(v)
    ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True)) * scale
    return ds @ k, xp.matrix_transpose(ds) @ q, dv


def attention_forward_naive(q, k, v, key_mask=None):
    """Loop definition of masked attention, MATH.md (13.22): for every batch entry and
    query, a softmax over the *kept* keys only (masked keys are dropped, not weighted),
    then the weighted sum of their values.  NumPy float64 on the host; for tests.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    q : array_like, shape (B, ..., L_q, d)
        Queries.
    k : array_like, shape (B, ..., L_k, d)
        Keys.
    v : array_like, shape (B, ..., L_k, d_v)
        Values.
    key_mask : bool array_like, shape (B, L_k), optional
        True = attend to this key; None: no mask.

    Returns
    -------
    numpy.ndarray, shape (B, ..., L_q, d_v)
        The attention output in float64.
    """
    _check_qkv(q, k, v, "attention_forward_naive")
    _check_key_mask(np, None if key_mask is None else np.asarray(key_mask) if hasattr(key_mask, "shape") else key_mask,
                    q.shape[0], k.shape[-2], "attention_forward_naive")
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    lead = q.shape[:-2]
    out = np.zeros(lead + (q.shape[-2], v.shape[-1]))
    d = q.shape[-1]
    for idx in np.ndindex(*lead):
        keep = range(k.shape[-2]) if key_mask is None else np.flatnonzero(np.asarray(key_mask)[idx[0]])
        for i in range(q.shape[-2]):
            s = [float(q[idx][i] @ k[idx][j]) / math.sqrt(d) for j in keep]
            m = max(s)
            w = [math.exp(sj - m) for sj in s]
            z = sum(w)
            out[idx][i] = sum((wj / z) * v[idx][j] for wj, j in zip(w, keep))
    return out


# ------------------------------------------------------------------ heads
def split_heads(x, heads: int):
    """(N, L, H d) -> (N, H, L, d): head h is the channel block [h d, (h + 1) d).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, L, H d)
        Tokens.
    heads : int
        The number of heads H; must divide the width.

    Returns
    -------
    array, shape (N, H, L, d)
        The per-head tokens.

    Raises
    ------
    ValueError
        If ``heads < 1`` or it does not divide the width.
    """
    check_array("x", x, ndim=3)
    check_size("heads", heads)
    xp = array_namespace(x)
    N, L, D = x.shape
    if D % heads:
        raise ValueError(f"split_heads: heads={heads} must divide the width {D}")
    return xp.permute_dims(xp.reshape(x, (N, L, heads, D // heads)), (0, 2, 1, 3))


def merge_heads(x):
    """(N, H, L, d) -> (N, L, H d), the inverse of :func:`split_heads`.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array, shape (N, H, L, d)
        Per-head tokens.

    Returns
    -------
    array, shape (N, L, H d)
        The merged tokens.
    """
    check_array("x", x, ndim=4)
    xp = array_namespace(x)
    N, H, L, d = x.shape
    return xp.reshape(xp.permute_dims(x, (0, 2, 1, 3)), (N, L, H * d))


# ------------------------------------------------------------------ projections
def _proj_f(P, name, x):
    """Token-wise affine map of x (N, L, D_in) by ``P[name.w]`` (D_in, D_out), plus
    ``P[name.b]`` when present: MATH.md (13.1) on the (N L, D_in) view."""
    xp = array_namespace(x)
    N, L, D = x.shape
    w = P[name + ".w"]
    if w.ndim != 2 or w.shape[0] != D:
        raise ValueError(f"mha: {name}.w has shape {tuple(w.shape)}, need ({D}, D_out) for inputs of width {D}")
    y = xp.reshape(x, (N * L, D)) @ w
    b = P.get(name + ".b")
    if b is not None:
        if tuple(b.shape) != (w.shape[1],):
            raise ValueError(f"mha: {name}.b has shape {tuple(b.shape)}, need ({w.shape[1]},)")
        y = y + b
    return xp.reshape(y, (N, L, w.shape[1])), x


def _proj_b(G, P, name, dy, x):
    """MATH.md (13.2) for :func:`_proj_f`; adds into ``G`` and returns dx (N, L, D_in)."""
    xp = array_namespace(dy)
    N, L, Do = dy.shape
    D = x.shape[2]
    dy2, x2 = xp.reshape(dy, (N * L, Do)), xp.reshape(x, (N * L, D))
    for key, g in ((name + ".w", x2.T @ dy2), (name + ".b", xp.sum(dy2, axis=0))):
        if key in P:
            G[key] = G[key] + g if key in G else g
    return xp.reshape(dy2 @ P[name + ".w"].T, (N, L, D))


def _variant(P, pre, cross):
    if pre + ".qkv.w" in P:
        if cross:
            raise ValueError(f"mha: '{pre}' has a fused qkv projection, which is for self-attention; "
                             "a context needs q.w with kv.w (or k.w, v.w)")
        return "qkv"
    if pre + ".q.w" not in P or pre + ".out.w" not in P:
        raise ValueError(f"mha: no projections in P under pre = {pre!r}: need {pre}.qkv.w or {pre}.q.w, "
                         f"and {pre}.out.w")
    if pre + ".kv.w" in P:
        return "kv"
    if pre + ".k.w" in P and pre + ".v.w" in P:
        return "sep"
    raise ValueError(f"mha: '{pre}' has q.w but neither kv.w nor both k.w and v.w")


def mha_init(P: dict, pre: str, dim: int, heads: int, rng, *, context_dim: int | None = None,
             inner_dim: int | None = None, fused: bool = True, qkv_bias: bool = True,
             zero_out: bool = False):
    """Host-side parameters of :func:`mha_forward` under ``pre``: width ``dim`` queries,
    ``context_dim`` keys/values (None: self-attention), ``inner_dim = heads * d``
    (default ``dim``).  ``fused``: qkv (self) or q + kv (cross) instead of q, k, v.
    Weights N(0, 1/fan_in); biases 0; ``zero_out`` zeroes the output projection.

    Parameters
    ----------
    P : dict
        The flat parameter dict, filled in place (NumPy float64 arrays).
    pre : str
        The key prefix.
    dim : int
        The query (and output) width D.
    heads : int
        Number of heads; must divide the inner width.
    rng : numpy.random.Generator
        Source of the initial weights.
    context_dim : int, optional
        Width of the context tokens; None (default): self-attention.
    inner_dim : int, optional
        Inner width D' = heads * d; None (default): ``dim``.
    fused : bool, default True
        Fused qkv (self-attention) or q + kv (cross-attention) instead of separate q, k, v.
    qkv_bias : bool, default True
        Give the q/k/v projections a bias.
    zero_out : bool, default False
        Zero the output projection's weight.

    Returns
    -------
    None
        ``P`` is filled in place.

    Raises
    ------
    ValueError
        If ``heads < 1`` or it does not divide the inner width.
    """
    check_params(P)
    check_prefix(pre)
    dim, heads = check_size("dim", dim), check_size("heads", heads, 1, 4096)
    check_rng(rng)
    if context_dim is not None:
        check_size("context_dim", context_dim)
    if inner_dim is not None:
        check_size("inner_dim", inner_dim)
    for name, flag in (("fused", fused), ("qkv_bias", qkv_bias), ("zero_out", zero_out)):
        check_bool(name, flag)
    if max(dim, context_dim or 0, inner_dim or 0) > 1 << 16:
        raise ValueError(f"mha_init: widths above 65536 are refused (dim={dim}, context_dim={context_dim}, "
                         f"inner_dim={inner_dim})")
    inner = dim if inner_dim is None else inner_dim
    if inner % heads:
        raise ValueError(f"mha_init: heads={heads} must divide the inner width {inner}")
    dc = dim if context_dim is None else context_dim

    def lin(name, d_in, d_out, bias):
        P[f"{pre}.{name}.w"] = rng.standard_normal((d_in, d_out)) / math.sqrt(d_in)
        if bias:
            P[f"{pre}.{name}.b"] = np.zeros(d_out)

    if fused and context_dim is None:
        lin("qkv", dim, 3 * inner, qkv_bias)
    else:
        lin("q", dim, inner, qkv_bias)
        if fused:
            lin("kv", dc, 2 * inner, qkv_bias)
        else:
            lin("k", dc, inner, qkv_bias)
            lin("v", dc, inner, qkv_bias)
    lin("out", inner, dim, True)
    if zero_out:
        P[pre + ".out.w"] = np.zeros((inner, dim))


# ------------------------------------------------------------------ multi-head attention
def _check_tokens(x, context, heads, what):
    check_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"{what}: x must be tokens (N, L, D), got shape {tuple(x.shape)}")
    if context is not None:
        check_array("context", context)
    if context is not None and (context.ndim != 3 or context.shape[0] != x.shape[0]):
        raise ValueError(f"{what}: context must be tokens (N, L_c, D_c) with N = {x.shape[0]} (x's batch), got shape "
                         f"{tuple(context.shape)}")
    check_size("heads", heads)


def mha_forward(P, pre, x, context=None, *, heads: int, key_mask=None, mask_bias: float | None = None):
    """Multi-head attention, MATH.md (13.23): queries from x (N, L, D), keys and values
    from ``context`` (N, L_c, D_c) (cross-attention) or from x itself (None:
    self-attention); ``heads`` must divide the inner width D' of the projections;
    ``key_mask`` (N, L_c) boolean, True = attend (MATH.md (13.22)).
    NaN and inf propagate: not checked.

        Q = x W_q + b_q,  K = c W_k + b_k,  V = c W_v + b_v          (N, L, D')
        O_h = attention(Q_h, K_h, V_h; mask)  per head h               (N, L, D'/H)
        y = [O_1 .. O_H] W_out + b_out                                 (N, L, D)

    Projections and their layout: see the module docstring.  Returns ``(y, cache)``.

    Parameters
    ----------
    P : dict
        The flat parameter dict (keys under ``pre``, see the module docstring).
    pre : str
        The key prefix.
    x : array, shape (N, L, D)
        The query tokens.
    context : array, shape (N, L_c, D_c), optional
        The key/value tokens; None (default): self-attention on ``x``.
    heads : int
        Number of heads, a positive int dividing the inner width D'.
    key_mask : bool array, shape (N, L_c), optional
        True = attend; None: no mask.
    mask_bias : float, optional
        As in :func:`attention_forward`.

    Returns
    -------
    y : array, shape (N, L, D)
        The output tokens.
    cache : tuple
        For :func:`mha_backward`.

    Raises
    ------
    ValueError
        If the shapes are wrong, the projections under ``pre`` are missing or inconsistent
        (a fused qkv with a context, unequal q/k/v widths), or ``heads`` does not divide D'.
    TypeError
        If ``key_mask`` is not boolean.
    """
    what = "mha_forward"
    check_params(P)
    check_prefix(pre)
    _check_tokens(x, context, heads, what)
    kind = _variant(P, pre, context is not None)
    c = x if context is None else context
    if kind == "qkv":
        qkv, c_qkv = _proj_f(P, pre + ".qkv", x)  # (N, L, 3D')
        Di = qkv.shape[2] // 3
        q, k, v, caches = qkv[..., :Di], qkv[..., Di:2 * Di], qkv[..., 2 * Di:], (c_qkv,)
    else:
        q, c_q = _proj_f(P, pre + ".q", x)  # (N, L, D')
        Di = q.shape[2]
        if kind == "kv":
            kv, c_kv = _proj_f(P, pre + ".kv", c)  # (N, L_c, 2D')
            k, v, caches = kv[..., :Di], kv[..., Di:], (c_q, c_kv)
        else:
            k, c_k = _proj_f(P, pre + ".k", c)
            v, c_v = _proj_f(P, pre + ".v", c)
            caches = (c_q, c_k, c_v)
        if k.shape[2] != Di or v.shape[2] != Di:
            raise ValueError(f"{what}: '{pre}' projections give q, k, v widths {Di}, {k.shape[2]}, {v.shape[2]}; "
                             "they must be equal")
    if Di % heads:
        raise ValueError(f"{what}: heads={heads} must divide the inner width {Di} of '{pre}'")
    o, c_a = attention_forward(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads),
                               key_mask, mask_bias=mask_bias)  # (N, H, L, d)
    o = merge_heads(o)  # (N, L, D')
    y, c_o = _proj_f(P, pre + ".out", o)  # (N, L, D)
    return y, (kind, caches, c_a, c_o, heads, context is None)


def mha_backward(G, P, pre, dout, cache):
    """Backward of :func:`mha_forward`, MATH.md (13.23): gradients of every projection
    are added into ``G`` (same keys as ``P``); returns ``(dx, dcontext)``, dcontext None
    for self-attention (its two paths are both in dx).
    NaN and inf propagate: not checked.

    Parameters
    ----------
    G : dict
        Gradient accumulator: gradients of the projections under ``pre`` are added into it.
    P : dict
        The parameters used in the forward pass.
    pre : str
        The key prefix.
    dout : array, shape (N, L, D)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`mha_forward`.

    Returns
    -------
    dx : array, shape (N, L, D)
        Gradient with respect to ``x``.
    dcontext : array, shape (N, L_c, D_c) or None
        Gradient with respect to the context; None for self-attention.
    """
    check_params(G, "G")
    check_params(P)
    check_prefix(pre)
    kind, caches, c_a, c_o, heads, is_self = check_cache(cache, "mha_forward", 6)
    if pre + ".out.w" not in P:
        raise ValueError(f"mha_backward: no output projection under pre = {pre!r} in P (need {pre}.out.w)")
    check_dout(dout, tuple(c_o.shape[:2]) + (P[pre + ".out.w"].shape[1],))
    xp = array_namespace(dout)
    do = _proj_b(G, P, pre + ".out", dout, c_o)  # (N, L, D')
    dq, dk, dv = (merge_heads(g) for g in attention_backward(split_heads(do, heads), c_a))
    if kind == "qkv":
        return _proj_b(G, P, pre + ".qkv", xp.concat([dq, dk, dv], axis=2), caches[0]), None
    dx = _proj_b(G, P, pre + ".q", dq, caches[0])
    if kind == "kv":
        dc = _proj_b(G, P, pre + ".kv", xp.concat([dk, dv], axis=2), caches[1])
    else:
        dc = _proj_b(G, P, pre + ".k", dk, caches[1]) + _proj_b(G, P, pre + ".v", dv, caches[2])
    return (dx + dc, None) if is_self else (dx, dc)


def mha_forward_naive(P, pre, x, context=None, *, heads: int, key_mask=None):
    """Loop definition of MATH.md (13.23) on the host in float64: per sample and head,
    slice the head's columns out of the q/k/v weights, project, attend over the kept keys
    (:func:`attention_forward_naive`), and add each head's output times its rows of
    W_out.  The executable specification of :func:`mha_forward`; slow, for tests.
    NaN and inf propagate: not checked.

    Parameters
    ----------
    P : dict
        The flat parameter dict.
    pre : str
        The key prefix.
    x : array_like, shape (N, L, D)
        The query tokens.
    context : array_like, shape (N, L_c, D_c), optional
        The key/value tokens; None: self-attention.
    heads : int
        Number of heads.
    key_mask : bool array_like, shape (N, L_c), optional
        True = attend; None: no mask.

    Returns
    -------
    numpy.ndarray, shape (N, L, D)
        The output tokens in float64.
    """
    check_params(P)
    check_prefix(pre)
    _check_tokens(x, context, heads, "mha_forward_naive")
    _check_key_mask(np, None if key_mask is None else np.asarray(key_mask) if hasattr(key_mask, "shape") else key_mask,
                    x.shape[0], (x if context is None else context).shape[1], "mha_forward_naive")
    _variant(P, pre, context is not None)
    host = {k: np.asarray(v, dtype=np.float64) for k, v in P.items() if k.startswith(pre + ".")}
    x = np.asarray(x, dtype=np.float64)
    c = x if context is None else np.asarray(context, dtype=np.float64)
    mask = None if key_mask is None else np.asarray(key_mask)

    def wb(name, lo, hi):  # columns [lo, hi) of a projection's weight and bias
        b = host.get(f"{pre}.{name}.b")
        return host[f"{pre}.{name}.w"][:, lo:hi], (0.0 if b is None else b[lo:hi])

    Wo = host[pre + ".out.w"]
    Di = Wo.shape[0]
    if Di % heads:
        raise ValueError(f"mha_forward_naive: heads={heads} must divide the inner width {Di} of '{pre}'")
    d = Di // heads
    y = np.zeros((x.shape[0], x.shape[1], Wo.shape[1])) + host[pre + ".out.b"]
    for n in range(x.shape[0]):
        for h in range(heads):
            lo, hi = h * d, (h + 1) * d
            if pre + ".qkv.w" in host:
                (wq, bq), (wk, bk), (wv, bv) = (wb("qkv", j * Di + lo, j * Di + hi) for j in range(3))
            elif pre + ".kv.w" in host:
                (wq, bq), (wk, bk), (wv, bv) = wb("q", lo, hi), wb("kv", lo, hi), wb("kv", Di + lo, Di + hi)
            else:
                (wq, bq), (wk, bk), (wv, bv) = wb("q", lo, hi), wb("k", lo, hi), wb("v", lo, hi)
            q, k, v = x[n] @ wq + bq, c[n] @ wk + bk, c[n] @ wv + bv
            m = None if mask is None else mask[n:n + 1]
            o = attention_forward_naive(q[None], k[None], v[None], m)[0]  # (L, d)
            y[n] += o @ Wo[lo:hi, :]
    return y
