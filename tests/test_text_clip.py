"""The toy CLIP (refdiff.nn.text), the captioned data (refdiff.captions) and the
cross-attention properties text conditioning relies on (MATH.md (13.23), (21.10)).

Gradients: float64 central differences, normwise relative error < 1e-6 (a correct
backward gives ~1e-9).  Mask and permutation properties hold to float64 rounding."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from refdiff.captions import HELD_OUT, VOCAB, all_combinations, caption, captioned_digits
from refdiff.nn.gradcheck import check_directional, check_gradient, inner
from refdiff.nn.text import BOS, EOS, PAD, ImageEncoder, TextEncoder, TextEncoderConfig, Tokenizer, contrastive_loss
from refdiff.nn.unet_blocks import xattn_forward, xattn_init, xattn_backward

GC_TOL = 1e-6


def test_captions_grammar_split_and_determinism():
    """Held-out combinations never appear in the training split; every digit, position and
    weight still does; captions use only VOCAB; the same seed gives the same set."""
    a = captioned_digits(300, np.random.default_rng(0))
    b = captioned_digits(300, np.random.default_rng(0))
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["captions"] == b["captions"]
    trip = set(zip(a["digit"], a["position"], a["weight"]))
    assert not trip & set(HELD_OUT)
    assert set(a["digit"]) == set(range(10)) and set(a["position"]) == set(range(4)) and set(a["weight"]) == {0, 1}
    assert len(all_combinations("train")) + len(all_combinations("heldout")) == 80
    words = {w for c in a["captions"] for w in c.split()}
    assert words <= set(VOCAB)
    assert len({caption(3, 0, 1, p, s) for p in range(3) for s in range(2)}) == 6
    h = captioned_digits(50, np.random.default_rng(1), split="heldout")
    assert set(zip(h["digit"], h["position"], h["weight"])) <= set(HELD_OUT)


def test_tokenizer_ids_and_bad_prompts():
    """BOS/EOS/PAD layout; the empty prompt is BOS EOS; out-of-vocabulary words are listed
    in the error (no UNK by choice); a prompt longer than the context is an error."""
    tok = Tokenizer(VOCAB, 10)
    ids, mask = tok(["a thick three in the top left", ""])
    assert ids[0, 0] == BOS and ids[0, 8] == EOS and ids[0, 9] == PAD and mask[0].sum() == 9
    assert list(ids[1, :2]) == [BOS, EOS] and mask[1].sum() == 2
    assert tok.decode(ids)[0] == "a thick three in the top left"
    with pytest.raises(ValueError, match=r"out-of-vocabulary words \['purple', 'zebra'\]"):
        tok("a purple zebra in the top left")
    with pytest.raises(ValueError, match="more than the context length 10"):
        tok("a thick three in the top left a thick")


def _text_case(position=True, seed=0):
    rng = np.random.default_rng(seed)
    tok = Tokenizer(VOCAB, 10)
    enc = TextEncoder(TextEncoderConfig(tok.vocab_size, 10, dim=8, heads=2, layers=2, embed_dim=6, position=position))
    P = enc.init_params(rng)
    ids, mask = tok(["a thick three in the top left", "three written bold at the top left", "zero"])
    return rng, enc, P, ids, mask


def test_text_encoder_gradcheck_with_mask():
    """MATH.md (13.23): the whole text encoder (embeddings, masked self-attention, MLP,
    LayerNorms, EOS pooling, projection) against directional central differences."""
    rng, enc, P, ids, mask = _text_case()
    (s, e), cache = enc.forward(P, ids, mask)
    ds, de = rng.standard_normal(s.shape) * mask[:, :, None], rng.standard_normal(e.shape)
    G = enc.backward(P, cache, ds, de)

    def f(p):
        (s2, e2), _ = enc.forward(p, ids, mask)
        return inner(s2, ds) + inner(e2, de)

    assert check_directional(f, P, G, rng, n_dirs=4) < GC_TOL


def test_text_encoder_padding_content_is_ignored():
    """MATH.md (13.23) with the key mask (13.22): changing the ids at padded positions
    changes neither the states at real tokens nor the pooled embedding."""
    _, enc, P, ids, mask = _text_case()
    (s, e), _ = enc.forward(P, ids, mask)
    ids2 = np.where(mask, ids, 7)
    (s2, e2), _ = enc.forward(P, ids2, mask)
    np.testing.assert_allclose(s2[mask], s[mask], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(e2, e, rtol=1e-13, atol=1e-14)


def test_contrastive_loss_gradients_chance_value_and_loop_definition():
    """MATH.md (21.10): the loss equals the definition with scipy's logsumexp; equal
    embeddings give exactly log B; the gradients (embeddings and log-temperature) pass
    central differences."""
    rng = np.random.default_rng(1)
    B, E = 6, 5
    u, v, lt = rng.standard_normal((B, E)), rng.standard_normal((B, E)), 0.7
    loss, (du, dv, dlt) = contrastive_loss(u, v, lt)
    un = u / np.linalg.norm(u, axis=1, keepdims=True)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    L = math.exp(lt) * un @ vn.T
    ref = np.mean([0.5 * (logsumexp(L[i]) - L[i, i]) + 0.5 * (logsumexp(L[:, i]) - L[i, i]) for i in range(B)])
    assert loss == pytest.approx(ref, rel=1e-12)
    same = np.ones((B, E))
    assert contrastive_loss(same, same, 2.0)[0] == pytest.approx(math.log(B), rel=1e-12)
    err = check_directional(lambda p: contrastive_loss(p["u"], p["v"], float(p["t"][0]))[0],
                            {"u": u, "v": v, "t": np.array([lt])},
                            {"u": du, "v": dv, "t": np.array([dlt])}, rng, n_dirs=4)
    assert err < GC_TOL


def test_image_encoder_gradcheck():
    """The conv image encoder's backward (convolutions,
    SiLU, mean pooling, projection) against directional central differences."""
    rng = np.random.default_rng(2)
    enc = ImageEncoder(1, 4, 3)
    P = enc.init_params(rng)
    x = rng.standard_normal((2, 1, 8, 8))
    out, cache = enc.forward(P, x)
    d = rng.standard_normal(out.shape)
    G = enc.backward(P, cache, d)
    assert check_directional(lambda p: inner(enc.forward(p, x)[0], d), P, G, rng) < GC_TOL
    _, dx = enc.backward(P, cache, d, return_dx=True)
    assert check_gradient(lambda a: inner(enc.forward(P, a)[0], d), x, dx) < GC_TOL


# ------------------------------------------------------------------ cross-attention properties
def _xattn(seed=0, heads=2, Lc=5):
    rng = np.random.default_rng(seed)
    P = {}
    xattn_init(P, "x", 4, 3, heads, rng)
    P["x.attn.q.b"] = rng.standard_normal(P["x.attn.q.b"].shape)
    P["x.attn.kv.b"] = rng.standard_normal(P["x.attn.kv.b"].shape)
    P["x.norm.gamma"] = 1 + 0.1 * rng.standard_normal(4)
    x = rng.standard_normal((2, 4, 3, 3))
    ctx = rng.standard_normal((2, Lc, 3))
    mask = np.ones((2, Lc), dtype=bool)
    if Lc > 3:
        mask[0, 3:] = False
        mask[1, 1] = False
    return rng, P, x, ctx, mask


def _xf(P, x, ctx, mask, heads=2):
    return xattn_forward(P, "x", x, ctx, mask, 2, heads)[0]


def test_cross_attention_block_gradcheck_with_mask():
    """MATH.md (13.23): the U-Net's cross-attention block (GroupNorm, multi-head attention
    to a masked context, residual) against directional central differences over its
    parameters, the image features and the context."""
    rng, P, x, ctx, mask = _xattn()
    out, cache = xattn_forward(P, "x", x, ctx, mask, 2, 2)
    d = rng.standard_normal(out.shape)
    G = {}
    dx, dctx = xattn_backward(G, P, "x", d, cache)
    point = {**P, "__x": x, "__c": ctx}
    grads = {**G, "__x": dx, "__c": dctx}

    def f(p):
        q = {k: v for k, v in p.items() if not k.startswith("__")}
        return inner(_xf(q, p["__x"], p["__c"], mask), d)

    assert check_directional(f, point, grads, rng, n_dirs=4) < GC_TOL


def test_cross_attention_token_permutation_and_padding_invariance():
    """MATH.md (13.23): without position embeddings the output does not depend on the order
    of the text tokens (permuting the context and its mask together), and the content of
    masked (padded) positions does not change it."""
    rng, P, x, ctx, mask = _xattn()
    out = _xf(P, x, ctx, mask)
    perm = rng.permutation(ctx.shape[1])
    np.testing.assert_allclose(_xf(P, x, ctx[:, perm], mask[:, perm]), out, rtol=1e-12, atol=1e-13)
    junk = np.where(mask[:, :, None], ctx, 1e3 * rng.standard_normal(ctx.shape))
    np.testing.assert_allclose(_xf(P, x, junk, mask), out, rtol=1e-13, atol=1e-14)


def test_cross_attention_with_one_token_is_a_per_token_bias():
    """MATH.md (13.23): with one (kept) text token every softmax weight is 1, so the block
    adds the same vector (c W_v + b_v) W_out + b_out at every pixel, whatever the image."""
    rng, P, x, ctx, _ = _xattn(Lc=1)
    mask = np.ones((2, 1), dtype=bool)
    out = _xf(P, x, ctx, mask)
    Di = P["x.attn.q.w"].shape[1]
    v = ctx[:, 0] @ P["x.attn.kv.w"][:, Di:] + P["x.attn.kv.b"][Di:]  # (N, D')
    bias = v @ P["x.attn.out.w"] + P["x.attn.out.b"]  # (N, C)
    np.testing.assert_allclose(out, x + bias[:, :, None, None], rtol=1e-13, atol=1e-13)
