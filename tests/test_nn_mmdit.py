"""The toy MMDiT (refdiff.nn.mmdit): joint text–image attention with a text key-padding mask,
pooled text conditioning, adaLN-Zero start, central differences (MATH.md (20.9), (20.10)).

Tolerances: float64 central differences (h = 1e-5), normwise relative error < 1e-6 (a correct
backward gives ~1e-9); invariances under masked tokens are exact up to float64 rounding
(the masked keys get weight exactly 0, the pool multiplies them by exactly 0)."""

import numpy as np
import pytest

from refdiff.flow_matching import fm_loss_fn
from refdiff.nn import mmdit as M
from refdiff.nn.gradcheck import check_directional, check_gradient, inner

GC = 1e-6


def small(**kw):
    base = dict(image_size=4, in_channels=1, patch=2, width=8, depth=2, heads=2, mlp_ratio=2.0, vocab_size=7,
                max_text_len=5, text_dim=6, freq_dim=8)
    base.update(kw)
    return M.MMDiT(M.MMDiTConfig(**base))


def randomize(P, rng, scale=0.3):
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in P.items()}


def inputs(net, n=3, L=4, seed=0):
    rng = np.random.default_rng(seed)
    c = net.config
    x = rng.standard_normal((n, c.in_channels, c.image_size, c.image_size))
    ids = rng.integers(1, c.vocab_size, (n, L))
    ids[:, 0] = 0
    mask = np.ones((n, L), dtype=bool)
    mask[0, 2:] = False
    mask[1, 3:] = False
    return x, rng.uniform(0, 1, n), {"tokens": ids, "token_mask": mask}


def test_mmdit_zero_at_init():
    """MATH.md (20.9): with every ada projection and the final linear at zero the output is exactly 0
    for every input and prompt (the adaLN-Zero start of MATH.md (20.7))."""
    net = small()
    P = net.init_params(np.random.default_rng(0), dtype="float64")
    x, t, cond = inputs(net)
    assert np.all(net.forward(P, 10 * x, t, cond)[0] == 0.0)


def test_joint_block_gradcheck_with_text_mask():
    """MATH.md (20.9): a joint block (full and pre-only) against central differences over its
    parameters, both token streams and s, with padded text keys."""
    rng = np.random.default_rng(1)
    for pre_only in (False, True):
        P = {}
        M.joint_block_init(P, "b", 8, 2, 2.0, rng, pre_only=pre_only)
        P = randomize(P, rng)
        ctx, x, s = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 8))
        mask = np.array([[True, True, False], [True, False, False]])
        (co, xo), cache = M.joint_block_forward(P, "b", ctx, x, s, mask, heads=2, pre_only=pre_only)
        assert (co is None) == pre_only
        dco = None if pre_only else rng.standard_normal(co.shape)
        dxo = rng.standard_normal(xo.shape)
        G = {}
        dctx, dx, ds = M.joint_block_backward(G, P, "b", dco, dxo, cache)

        def loss(pt):
            (a, b), _ = M.joint_block_forward({k: pt[k] for k in P}, "b", pt["ctx"], pt["x"], pt["s"], mask, heads=2,
                                              pre_only=pre_only)
            return inner(b, dxo) + (0.0 if a is None else inner(a, dco))

        err = check_directional(loss, {**P, "ctx": ctx, "x": x, "s": s}, {**G, "ctx": dctx, "x": dx, "s": ds},
                                np.random.default_rng(2), n_dirs=4)
        assert err < GC, (pre_only, err)


def test_whole_mmdit_gradcheck_with_text_mask():
    """MATH.md (20.10), MATH.md (20.9): the whole model (token and position tables, pool, both
    embedders, blocks, final layer) against central differences, with padded prompts."""
    net = small()
    rng = np.random.default_rng(3)
    P = randomize(net.init_params(rng, dtype="float64"), rng)
    x, t, cond = inputs(net, seed=4)
    out, cache = net.forward(P, x, t, cond)
    d = rng.standard_normal(out.shape)
    G, dx = net.backward(P, cache, d)
    assert set(G) == set(P)

    def loss(pt):
        return inner(net.forward({k: pt[k] for k in P}, pt["x"], t, cond)[0], d)

    assert check_directional(loss, {**P, "x": x}, {**G, "x": dx}, np.random.default_rng(5), n_dirs=4) < GC
    for k in ("tok_emb", "tok_pos", "pool_embed.fc1.w", "blk0.c.fc1.w", "blk1.c.qkv.w"):
        f = lambda a, k=k: inner(net.forward({**P, k: a}, x, t, cond)[0], d)  # noqa: E731
        assert check_gradient(f, P[k], G[k], floor=1e-8) < GC, k


def test_masked_tokens_do_not_matter():
    """MATH.md (20.9), MATH.md (20.10): changing the ids at padded positions (mask False) leaves the
    output unchanged (weight-0 keys, weight-0 pool entries); changing a kept id changes it."""
    net = small()
    rng = np.random.default_rng(6)
    P = randomize(net.init_params(rng, dtype="float64"), rng)
    x, t, cond = inputs(net, seed=7)
    out = net.apply(P, x, t, cond)
    ids = cond["tokens"].copy()
    ids[~cond["token_mask"]] = (ids[~cond["token_mask"]] % 6) + 1
    out2 = net.apply(P, x, t, {"tokens": ids, "token_mask": cond["token_mask"]})
    np.testing.assert_allclose(out2, out, rtol=1e-12, atol=1e-13)
    ids[0, 1] = ids[0, 1] % 6 + 1
    assert np.abs(net.apply(P, x, t, {"tokens": ids, "token_mask": cond["token_mask"]})[0] - out[0]).max() > 1e-4


def test_mmdit_bad_input_errors():
    """A prompt longer than the position table, heads not dividing the width, an image size not
    divisible by the patch: ValueErrors naming the values."""
    net = small()
    P = net.init_params(np.random.default_rng(0), dtype="float64")
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="1 <= L <= 5"):
        net.forward(P, x, np.zeros(1), {"tokens": np.zeros((1, 6), dtype=np.int64)})
    with pytest.raises(ValueError, match="heads=3 must divide width=8"):
        M.MMDiTConfig(width=8, heads=3)
    with pytest.raises(ValueError, match="patch=3 must divide image_size=8"):
        M.MMDiTConfig(image_size=8, patch=3)
    with pytest.raises(ValueError, match="not divisible by patch=2"):
        net.forward(P, np.zeros((1, 1, 5, 5)), np.zeros(1))


def test_flow_matching_training_lowers_the_loss():
    """MATH.md (20.9) trained by MATH.md (18.16) with logit-normal times: fm_loss_fn's gradient is
    the model's backward; 200 Adam steps on 4 fixed captioned +-1 images of D = 16 pixels lower the
    held-out loss below half the zero model's E||eps - x0||^2 = 2 D = 32 (a coarse but failing-able
    check that the pieces fit)."""
    from refdiff.nn.optim import adam_init, adam_update

    net = small(width=16, depth=2, heads=2)
    rng = np.random.default_rng(8)
    P = net.init_params(rng, dtype="float64")
    x0 = np.sign(rng.standard_normal((4, 1, 4, 4)))
    cond = {"tokens": np.array([[0, 1], [0, 2], [0, 3], [0, 4]]), "token_mask": np.ones((4, 2), dtype=bool)}
    lf = fm_loss_fn(net, times="logit_normal", cond_key="cond")
    opt = adam_init(P)
    for k in range(200):
        loss, g = lf({"params": P}, (x0, None, cond), np.random.default_rng(k))
        P, opt = adam_update(P, g["params"], opt, lr=1e-2)
    ev = np.mean([float(lf({"params": P}, (x0, None, cond), np.random.default_rng(1000 + k))[0]) for k in range(20)])
    assert ev < 16.0
