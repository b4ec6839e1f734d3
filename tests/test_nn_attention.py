"""Masked and multi-head attention (refdiff.nn.attention) against loop definitions,
central differences and PyTorch (MATH.md section 13.9).

Tolerances as in test_nn_layers: float64 central differences with h = 1e-5 give a
normwise relative error ~1e-9 for a correct backward, we demand < 1e-6; vectorised vs
loop definitions agree to float64 rounding (rtol 1e-12 on O(1) values, atol 1e-13 for
entries that are sums of terms cancelling to ~0).  The masked-key gradients are checked
for EXACT zeros (==), which the -inf construction guarantees.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.backend import to_numpy
from refdiff.nn import attention as A
from refdiff.nn.gradcheck import check_directional, check_gradient, inner
from tests._support import assert_close, asx

GC_TOL = 1e-6


@st.composite
def attn_case(draw, heads_axis=False):
    B = draw(st.integers(1, 3))
    Lq, Lk, d = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    mask = rng.random((B, Lk)) < 0.6
    mask[np.arange(B), rng.integers(0, Lk, B)] = True  # keep at least one key per sample
    lead = (B, draw(st.integers(1, 3))) if heads_axis else (B,)
    return rng, lead, Lq, Lk, d, mask


def _qkv(xp, rng, lead, Lq, Lk, d):
    return (asx(xp, rng.standard_normal(lead + (Lq, d))), asx(xp, rng.standard_normal(lead + (Lk, d))),
            asx(xp, rng.standard_normal(lead + (Lk, d + 1))))


# ------------------------------------------------------------------ masked attention
@settings(max_examples=8)
@given(case=attn_case(heads_axis=True), use_mask=st.booleans())
def test_masked_attention_matches_loop_definition(xp, case, use_mask):
    """MATH.md (13.22): the vectorised -inf mask equals the softmax over the kept keys
    only (the loop definition drops masked keys), for (B, L, d) and (B, H, L, d) inputs.
    MATH.md (13.14) is the unmasked case."""
    rng, lead, Lq, Lk, d, mask = case
    q, k, v = _qkv(xp, rng, lead, Lq, Lk, d)
    m = asx(xp, mask, dtype=xp.bool) if use_mask else None
    out, _ = A.attention_forward(q, k, v, m)
    ref = A.attention_forward_naive(to_numpy(q), to_numpy(k), to_numpy(v), mask if use_mask else None)
    assert_close(out, ref, xp=xp, rtol=1e-12, atol=1e-13)


@settings(max_examples=8)
@given(case=attn_case(heads_axis=True))
def test_masked_attention_gradcheck_and_exact_zero_key_gradients(xp, case):
    """MATH.md (13.22) with the backward (13.15): every entry of dq, dk, dv agrees with
    central differences; the keys at masked positions get weight exactly 0 in every row of
    P and the keys and values there get gradient exactly 0 (compared with ==, not a
    tolerance); moving them does not change the output at all."""
    rng, lead, Lq, Lk, d, mask = case
    q, k, v = _qkv(xp, rng, lead, Lq, Lk, d)
    m = asx(xp, mask, dtype=xp.bool)
    out, cache = A.attention_forward(q, k, v, m)
    dout = asx(xp, rng.standard_normal(out.shape))
    grads = A.attention_backward(dout, cache)
    args = [q, k, v]
    for j in range(3):
        def f(a, j=j):
            b = list(args)
            b[j] = a
            return inner(A.attention_forward(*b, m)[0], dout)

        err = check_gradient(f, args[j], grads[j], floor=1e-3)
        assert err < GC_TOL, f"argument {j}: {err:.2e}"
    masked = ~mask  # (B, Lk)
    weights = np.moveaxis(to_numpy(cache[3]), -1, 1)  # P (B, ..., Lq, Lk) -> (B, Lk, ..., Lq)
    assert np.all(weights[masked] == 0.0), "masked keys must get exactly zero weight"
    assert np.all(weights[mask] > 0.0)
    for g in grads[1:]:
        g = np.moveaxis(to_numpy(g), -2, 1)  # (B, Lk, ...): the mask indexes the first two axes
        assert np.all(g[masked] == 0.0), "masked keys/values must get exactly zero gradient"
    k2 = np.moveaxis(to_numpy(k).copy(), -2, 1)
    v2 = np.moveaxis(to_numpy(v).copy(), -2, 1)
    k2[masked] += 100.0
    v2[masked] -= 100.0
    k2, v2 = (asx(xp, np.moveaxis(a, 1, -2)) for a in (k2, v2))
    out2, _ = A.attention_forward(q, k2, v2, m)
    assert np.array_equal(to_numpy(out2), to_numpy(out))


def test_mask_bias_convention_is_close_but_additive(xp):
    """MATH.md (13.22): the additive (1 - m) * (-10000) convention gives the same output
    as exclusion to float64 rounding when scores are O(1) (e^-10000 underflows to 0)."""
    rng = np.random.default_rng(3)
    q, k, v = _qkv(xp, rng, (2,), 3, 5, 4)
    mask = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], dtype=bool)
    m = asx(xp, mask, dtype=xp.bool)
    exact, _ = A.attention_forward(q, k, v, m)
    additive, _ = A.attention_forward(q, k, v, m, mask_bias=-10000.0)
    assert_close(additive, exact, xp=xp, rtol=1e-12, atol=1e-14)
    small, _ = A.attention_forward(q, k, v, m, mask_bias=-1.0)  # a weak bias leaks: a real difference
    assert np.max(np.abs(to_numpy(small) - to_numpy(exact))) > 1e-3


def test_torch_sdpa_agrees_with_masked_attention():
    """MATH.md (13.22) against PyTorch's scaled_dot_product_attention with a boolean
    attn_mask (True = take part), float64: an independent implementation."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    B, H, Lq, Lk, d = 2, 3, 4, 6, 5
    q, k, v = (rng.standard_normal((B, H, L, d)) for L in (Lq, Lk, Lk))
    mask = rng.random((B, Lk)) < 0.5
    mask[:, 0] = True
    out, _ = A.attention_forward(q, k, v, mask)
    t = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v)), attn_mask=torch.from_numpy(mask[:, None, None, :]))
    np.testing.assert_allclose(out, t.numpy(), rtol=1e-12, atol=1e-14)


def test_attention_bad_input(xp):
    """Shape, dtype and all-masked errors of masked attention, MATH.md (13.22)."""
    rng = np.random.default_rng(0)
    q, k, v = _qkv(xp, rng, (2,), 3, 4, 2)
    with pytest.raises(ValueError, match="same width d"):
        A.attention_forward(q, k[..., :1], v)
    with pytest.raises(ValueError, match="same length L_k"):
        A.attention_forward(q, k, v[:, :3, :])
    with pytest.raises(ValueError, match=r"\(B, \.\.\., L, d\)"):
        A.attention_forward(q[0, ...], k[0, ...], v[0, ...])
    with pytest.raises(ValueError, match="leading"):
        A.attention_forward(q, k[:1, ...], v[:1, ...])
    with pytest.raises(TypeError, match="boolean"):
        A.attention_forward(q, k, v, asx(xp, np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"shape \(N, L_k\)"):
        A.attention_forward(q, k, v, asx(xp, np.ones((2, 3), dtype=bool), dtype=xp.bool))
    mask = np.ones((2, 4), dtype=bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"every key of sample\(s\) \[1\]"):
        A.attention_forward(q, k, v, asx(xp, mask, dtype=xp.bool))


# ------------------------------------------------------------------ multi-head attention
VARIANTS = {  # name: (context width or None for self-attention, fused)
    "self_fused_qkv": (None, True),
    "self_separate": ("self", False),
    "cross_fused_kv": (3, True),
    "cross_separate": (5, False),
}


def _mha_setup(xp, variant, rng, N=2, L=4, Lc=5, D=6, heads=3, bias=True, d_head=None):
    """Parameters (random biases), tokens x (N, L, D), context or None, and a keep-mask
    over the keys with at least one True per sample.  Inner width heads * d_head (default D)."""
    ctx_dim, fused = VARIANTS[variant]
    inner_dim = None if d_head is None else heads * d_head
    P = {}
    if ctx_dim == "self":  # separate q, k, v of the same tokens: a "cross" layout fed x
        A.mha_init(P, "a", D, heads, rng, context_dim=D, fused=False, qkv_bias=bias, inner_dim=inner_dim)
    else:
        A.mha_init(P, "a", D, heads, rng, context_dim=ctx_dim, fused=fused, qkv_bias=bias, inner_dim=inner_dim)
    for key in [k for k in P if k.endswith(".b")]:
        P[key] = rng.standard_normal(P[key].shape)
    P = {k: asx(xp, v) for k, v in P.items()}
    x = asx(xp, rng.standard_normal((N, L, D)))
    if ctx_dim is None or ctx_dim == "self":
        ctx, Lk = None, L
    else:
        ctx, Lk = asx(xp, rng.standard_normal((N, Lc, ctx_dim))), Lc
    mask = rng.random((N, Lk)) < 0.6
    mask[np.arange(N), rng.integers(0, Lk, N)] = True
    return P, x, ctx, mask


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("use_mask", [False, True])
def test_mha_matches_loop_definition(xp, variant, use_mask):
    """MATH.md (13.23): the vectorised multi-head attention (head split by reshapes,
    batched products, fused projections) equals the per-sample, per-head loop that
    slices each head's weight columns, with and without a key mask (13.22)."""
    rng = np.random.default_rng(hash(variant) % 1000 + use_mask)
    P, x, ctx, mask = _mha_setup(xp, variant, rng, bias=variant != "cross_separate")
    m = asx(xp, mask, dtype=xp.bool) if use_mask else None
    y, _ = A.mha_forward(P, "a", x, ctx, heads=3, key_mask=m)
    ref = A.mha_forward_naive({k: to_numpy(v) for k, v in P.items()}, "a", to_numpy(x),
                              None if ctx is None else to_numpy(ctx), heads=3, key_mask=mask if use_mask else None)
    assert_close(y, ref, xp=xp, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@settings(max_examples=4)
@given(N=st.integers(1, 3), L=st.integers(1, 4), Lc=st.integers(1, 5), heads=st.integers(1, 3),
       d_head=st.integers(1, 3), D=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_mha_directional_gradcheck_with_mask(xp, variant, N, L, Lc, heads, d_head, D, seed):
    """MATH.md (13.23) backward, with a key-padding mask (13.22), on hypothesis-drawn sizes
    (batch, query and context lengths, heads, head width, model width): central differences
    along random directions over ALL parameters, the tokens and the context agree with the
    hand-written backward (< 1e-6, float64), every projection gets a gradient, and context
    tokens at masked positions get exactly zero gradient; the output equals the loop
    definition."""
    rng = np.random.default_rng(seed)
    P, x, ctx, mask = _mha_setup(xp, variant, rng, N=N, L=L, Lc=Lc, D=D, heads=heads, d_head=d_head)
    m = asx(xp, mask, dtype=xp.bool)
    y, cache = A.mha_forward(P, "a", x, ctx, heads=heads, key_mask=m)
    ref = A.mha_forward_naive({k: to_numpy(v) for k, v in P.items()}, "a", to_numpy(x),
                              None if ctx is None else to_numpy(ctx), heads=heads, key_mask=mask)
    assert_close(y, ref, xp=xp, rtol=1e-12, atol=1e-13)
    dout = asx(xp, rng.standard_normal(tuple(y.shape)))
    G = {}
    dx, dctx = A.mha_backward(G, P, "a", dout, cache)
    assert sorted(G) == sorted(P)
    point, grads = dict(P), dict(G)
    point["x"], grads["x"] = x, dx
    if ctx is not None:
        point["ctx"], grads["ctx"] = ctx, dctx
        assert np.all(to_numpy(dctx)[~mask] == 0.0), "masked context tokens must get exactly zero gradient"
    else:
        assert dctx is None

    def loss(p):
        return inner(A.mha_forward(p, "a", p["x"], p.get("ctx"), heads=heads, key_mask=m)[0], dout)

    err = check_directional(loss, point, grads, np.random.default_rng(1), n_dirs=4, floor=1e-3)
    assert err < GC_TOL, f"{variant}: {err:.2e}"


def test_mha_one_head_is_plain_attention(xp):
    """MATH.md (13.23) with H = 1, identity projections and zero biases reduces to
    (13.14): Y = attention(X, X, X)."""
    rng = np.random.default_rng(5)
    D = 4
    eye = np.eye(D)
    P = {"s.q.w": eye, "s.k.w": eye, "s.v.w": eye, "s.out.w": eye, "s.out.b": np.zeros(D)}
    P = {k: asx(xp, v) for k, v in P.items()}
    x = asx(xp, rng.standard_normal((2, 5, D)))
    y, _ = A.mha_forward(P, "s", x, heads=1)
    ref, _ = A.attention_forward(x, x, x)
    assert_close(y, to_numpy(ref), xp=xp, rtol=1e-14)


def test_split_merge_heads_are_inverse_and_channel_blocks(xp):
    """The head split of MATH.md (13.23) takes channel block [h d, (h+1) d) as head h;
    merge_heads inverts it exactly."""
    x = asx(xp, np.arange(2 * 3 * 6, dtype=np.float64).reshape(2, 3, 6))
    s = A.split_heads(x, 3)
    assert tuple(s.shape) == (2, 3, 3, 2)
    assert_close(s[:, 1, :, :], to_numpy(x)[:, :, 2:4], xp=xp, rtol=0)
    assert_close(A.merge_heads(s), to_numpy(x), xp=xp, rtol=0)


def test_mha_bad_input(xp):
    """Clear errors of MATH.md (13.23): heads not dividing the width, a fused qkv given a
    context, missing projections, a mask of the wrong shape, tokens of the wrong rank."""
    rng = np.random.default_rng(0)
    P, x, _, _ = _mha_setup(xp, "self_fused_qkv", rng)
    with pytest.raises(ValueError, match="heads=4 must divide the inner width 6"):
        A.mha_forward(P, "a", x, heads=4)
    with pytest.raises(ValueError, match="fused qkv"):
        A.mha_forward(P, "a", x, x, heads=3)
    with pytest.raises(ValueError, match="no projections"):
        A.mha_forward(P, "b", x, heads=3)
    with pytest.raises(ValueError, match=r"tokens \(N, L, D\)"):
        A.mha_forward(P, "a", x[0, ...], heads=3)
    with pytest.raises(ValueError, match="key_mask must have shape"):
        A.mha_forward(P, "a", x, heads=3, key_mask=asx(xp, np.ones((2, 3), dtype=bool), dtype=xp.bool))
    with pytest.raises(ValueError, match="heads=4 must divide the inner width 6"):
        A.mha_init({}, "c", 6, 4, rng)
    P2, x2, ctx, _ = _mha_setup(xp, "cross_fused_kv", rng)
    with pytest.raises(ValueError, match=r"context must be tokens \(N, L_c, D_c\) with N = 2"):
        A.mha_forward(P2, "a", x2, ctx[:1, ...], heads=3)
    with pytest.raises(ValueError, match=r"kv.w has shape \(3, 12\), need \(6, D_out\)"):
        A.mha_forward(P2, "a", x2, x2, heads=3)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mha_token_permutation_symmetries(xp, variant):
    """Symmetries of MATH.md (13.23) with a mask (13.22), independent of how it is computed:
    permuting the query tokens permutes the output rows the same way, and permuting the
    key/value tokens together with their mask leaves the output unchanged (softmax
    attention is a weighted sum over a set).  Self-attention: permuting x and the mask
    permutes the output.  float64 rounding of sums reordered: rtol 1e-12."""
    rng = np.random.default_rng(21 + len(variant))
    P, x, ctx, mask = _mha_setup(xp, variant, rng, N=2, L=5, Lc=6)
    m = asx(xp, mask, dtype=xp.bool)
    y = to_numpy(A.mha_forward(P, "a", x, ctx, heads=3, key_mask=m)[0])
    xh = to_numpy(x)
    pq = rng.permutation(xh.shape[1])
    if ctx is None:
        y2, _ = A.mha_forward(P, "a", asx(xp, xh[:, pq]), heads=3, key_mask=asx(xp, mask[:, pq], dtype=xp.bool))
        assert_close(y2, y[:, pq], xp=xp, rtol=1e-12, atol=1e-13)
        return
    ch = to_numpy(ctx)
    pk = rng.permutation(ch.shape[1])
    y2, _ = A.mha_forward(P, "a", asx(xp, xh[:, pq]), asx(xp, ch[:, pk]), heads=3,
                          key_mask=asx(xp, mask[:, pk], dtype=xp.bool))
    assert_close(y2, y[:, pq], xp=xp, rtol=1e-12, atol=1e-13)
