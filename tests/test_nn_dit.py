"""DiT (refdiff.nn.dit) against exact properties: adaLN-Zero at init, the gradient pattern of
the first three SGD steps, patchify permutations, conv = linear patch embedding, permutation
equivariance, the one-token reduction to an MLP with adaLN, central differences (MATH.md
chapter 20).

Tolerances: float64 central differences (h = 1e-5) give normwise relative errors ~1e-9 for a
correct backward; we demand < 1e-6.  Exact zeros are checked with ==; reshapes, permutations
and the one-token reduction in float64 agree to rounding (1e-12)."""

import numpy as np
import pytest

import refdiff
from refdiff.losses import diffusion_loss
from refdiff.nn import dit as Dm
from refdiff.nn.conv import conv2d_forward
from refdiff.nn.gradcheck import check_directional, check_gradient, inner
from refdiff.nn.layers import patchify_forward, unpatchify_forward

GC = 1e-6


def small(**kw):
    base = dict(image_size=8, in_channels=1, patch=2, width=16, depth=2, heads=2, freq_dim=8, num_classes=3)
    base.update(kw)
    return Dm.DiT(Dm.DiTConfig(**base))


def batch(net, n=4, seed=0):
    rng = np.random.default_rng(seed)
    c = net.config
    x = rng.standard_normal((n, c.in_channels, c.image_size, c.image_size))
    t = rng.uniform(0, 999, n)
    y = rng.integers(0, c.num_classes + 1, n) if c.num_classes else None
    return x, t, ({"class": y} if y is not None else None)


def randomize(P, rng, scale=0.3):
    """Every parameter non-zero (so no gradient vanishes by the zero init)."""
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in P.items()}


# ------------------------------------------------------------------ adaLN-Zero
def test_adaln_zero_output_is_exactly_zero_and_eps_loss_is_D():
    """MATH.md (20.7): at init every block is the identity and the final layer is 0, so the output is
    exactly 0 for all inputs, and the eps-loss per sample is ||eps||^2 (mean D; refdiff's loss
    divides by D: 1 on average, Monte Carlo within 4 standard errors)."""
    net = small(learn_sigma=True)
    rng = np.random.default_rng(1)
    P = net.init_params(rng, dtype="float64")
    for seed in range(3):
        x, t, cond = batch(net, 5, seed)
        out = net.forward(P, 100.0 * x, t, cond)[0]
        assert out.shape == (5, 2, 8, 8) and np.all(out == 0.0)
    sched = refdiff.make_schedule("linear", 1000)
    net = small()
    P = net.init_params(rng, dtype="float64")
    N, D = 4000, 64
    x0 = rng.standard_normal((N, 1, 8, 8))
    noise = rng.standard_normal((N, 1, 8, 8))
    t = rng.integers(0, 1000, N)
    loss = float(diffusion_loss(net.forward, P, x0, t, noise, sched, cond={"class": rng.integers(0, 3, N)})[0])
    per = np.sum(noise.reshape(N, -1) ** 2, axis=1)
    assert loss * D == pytest.approx(per.mean(), rel=1e-12)
    assert abs(per.mean() - D) < 4 * per.std() / np.sqrt(N)


def _grad(net, P, x, t, cond, target):
    out, cache = net.forward(P, x, t, cond)
    return net.backward(P, cache, 2.0 * (out - target) / out.size)[0]


def _gate_rows(D):
    g = np.zeros(6 * D, dtype=bool)
    g[2 * D:3 * D] = g[5 * D:6 * D] = True
    return g


def test_adaln_zero_gradient_pattern_over_three_sgd_steps():
    """MATH.md (20.7): with plain SGD from the adaLN-Zero init, step 0: only final.linear has a
    non-zero gradient (exact zeros elsewhere); step 1: also final.ada, the gate rows of every
    block's ada (shift/scale rows exactly 0), the patch embedding; attention, MLP, t and y
    embedders still exactly 0; step 2: every parameter (except the key bias, whose gradient is 0
    by the softmax's shift invariance, MATH.md (13.15)) non-zero."""
    net = small(depth=2)
    D = net.config.width
    rng = np.random.default_rng(2)
    P = net.init_params(rng, dtype="float64")
    x, t, cond = batch(net, 6, 3)
    cond = {"class": np.array([0, 1, 2, 3, 0, 1])}
    target = rng.standard_normal(x.shape)
    nz = lambda g: bool(np.any(g != 0.0))  # noqa: E731
    lr = 0.5
    G = _grad(net, P, x, t, cond, target)
    assert sorted(k for k in G if nz(G[k])) == ["final.linear.b", "final.linear.w"]
    P = {k: P[k] - lr * G[k] for k in P}
    G = _grad(net, P, x, t, cond, target)
    expect = {"final.linear.w", "final.linear.b", "final.ada.w", "final.ada.b", "x_embed.w", "x_embed.b"}
    expect |= {f"blk{l}.ada.{s}" for l in range(2) for s in "wb"}
    assert {k for k in G if nz(G[k])} == expect
    for l in range(2):
        for s in ("w", "b"):
            g = G[f"blk{l}.ada.{s}"]
            rows = _gate_rows(D)
            gate, other = g[..., rows], g[..., ~rows]
            assert np.all(other == 0.0) and np.all(np.abs(gate).sum(axis=-1) > 0)
    P = {k: P[k] - lr * G[k] for k in P}
    G = _grad(net, P, x, t, cond, target)
    for k, g in G.items():
        if k.endswith("attn.qkv.b"):
            kb = g[D:2 * D]
            assert np.abs(kb).max() < 1e-12 * max(1.0, np.abs(g).max()) * 1e3
            assert np.all(np.abs(g[:D]) > 0) and np.all(np.abs(g[2 * D:]) > 0)
        else:
            assert nz(g), k


# ------------------------------------------------------------------ conventions
def test_patchify_unpatchify_are_inverse_permutations():
    """MATH.md (20.1) with (13.28): patchify maps the entries of an image one to one (a permutation
    of arange), unpatchify(patchify(x)) = x and patchify(unpatchify(tok)) = tok exactly."""
    for C, S, p in ((1, 8, 2), (3, 8, 4), (2, 6, 3), (1, 4, 4)):
        x = np.arange(2 * C * S * S, dtype=np.float64).reshape(2, C, S, S)
        tok = patchify_forward(x, p)[0]
        assert sorted(tok.ravel().tolist()) == list(range(x.size))
        assert np.array_equal(unpatchify_forward(tok, p, (S, S))[0], x)
        t2 = np.random.default_rng(0).standard_normal(tok.shape)
        assert np.array_equal(patchify_forward(unpatchify_forward(t2, p, (S, S))[0], p)[0], t2)
        # the documented order: token (i, j) feature (u p + v) C + c holds x[c, i p + u, j p + v]
        i, j, u, v, c = S // p - 1, 0, p - 1, 0, C - 1
        assert tok[1, i * (S // p) + j, (u * p + v) * C + c] == x[1, c, i * p + u, j * p + v]


def test_conv_patch_embedding_equals_linear_form():
    """MATH.md (20.1): Conv2d(C, D, p, stride p) with kernel w equals the linear map on
    patchify(x) with W[(u p + v) C + c, d] = w[d, c, u, v]; the two weight maps are inverse."""
    rng = np.random.default_rng(4)
    for C, S, p, D in ((1, 8, 2, 5), (3, 8, 4, 7), (2, 6, 3, 4)):
        x = rng.standard_normal((2, C, S, S))
        w, b = rng.standard_normal((D, C, p, p)), rng.standard_normal(D)
        conv = conv2d_forward(x, w, b, stride=p, pad=0)[0]  # (N, D, S/p, S/p)
        W = Dm.patch_embed_weight_from_conv(w)
        lin = patchify_forward(x, p)[0] @ W + b  # (N, T, D)
        np.testing.assert_allclose(lin, conv.reshape(2, D, -1).transpose(0, 2, 1), rtol=1e-12, atol=1e-12)
        assert np.array_equal(Dm.patch_embed_weight_to_conv(W, C, p), w)


def test_sincos_table_is_column_first():
    """MATH.md (20.2): entry (token i g + j, channel m) is sin(j w_m) for m < D/4, cos(j w_{m-D/4}) for
    m < D/2, then sin(i w), cos(i w), w_m = 10000^(-m/(D/4)); the first half is constant down a column."""
    D, g = 16, 4
    T = Dm.sincos_pos_embed_2d(D, g)
    q = D // 4
    for k in range(g * g):
        i, j = divmod(k, g)
        for m in range(D):
            w = 10000.0 ** (-(m % q) / q)
            pos = j if m < D // 2 else i
            f = np.sin if (m % (D // 2)) < q else np.cos
            assert T[k, m] == pytest.approx(f(pos * w), abs=1e-15)
    first = T[:, :D // 2].reshape(g, g, -1)
    assert np.array_equal(first[0], first[3])  # row index does not enter the first half
    with pytest.raises(ValueError, match="multiple of 4"):
        Dm.sincos_pos_embed_2d(10, 2)


def test_without_positions_permuting_tokens_permutes_outputs():
    """MATH.md (20.4): every layer but the positional table acts token-wise or is attention
    (permutation-equivariant), so with pos_embed=False permuting the patches of the input permutes
    the patches of the output the same way; with the table it does not."""
    rng = np.random.default_rng(5)
    for pos in (False, True):
        net = small(pos_embed=pos)
        P = randomize(net.init_params(rng, dtype="float64"), rng)
        x, t, cond = batch(net, 3, 6)
        perm = rng.permutation(16)
        xp_ = unpatchify_forward(patchify_forward(x, 2)[0][:, perm], 2, (8, 8))[0]
        o = patchify_forward(net.apply(P, x, t, cond), 2)[0]
        op = patchify_forward(net.apply(P, xp_, t, cond), 2)[0]
        err = np.abs(op - o[:, perm]).max()
        assert (err < 1e-12) if not pos else (err > 1e-3)


def test_one_token_dit_is_an_mlp_with_adaln():
    """MATH.md (20.4): with patch = image there is one token; softmax over one key is 1, so attention
    is v W_o + b_o and the DiT is the hand-built residual MLP with adaLN written out here."""
    net = small(patch=8, width=8, depth=2, heads=2, num_classes=2)
    rng = np.random.default_rng(7)
    P = randomize(net.init_params(rng, dtype="float64"), rng)
    x, t, cond = batch(net, 3, 8)
    got = net.apply(P, x, t, cond)

    def ln(h):
        return (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)

    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))  # noqa: E731
    D = 8
    v = np.concatenate([x[:, 0, u, :] for u in range(8)], axis=1)  # (N, 64): (u, v) order, C = 1
    h = v @ P["x_embed.w"] + P["x_embed.b"] + Dm.sincos_pos_embed_2d(D, 1)[0]
    k = np.arange(4)
    f = t[:, None] * np.exp(-np.log(10000.0) * k / 4)[None]
    te = silu(np.concatenate([np.cos(f), np.sin(f)], 1) @ P["t_embed.fc1.w"] + P["t_embed.fc1.b"])
    c = te @ P["t_embed.fc2.w"] + P["t_embed.fc2.b"] + P["class_emb"][cond["class"]]
    s = silu(c)
    for l in range(2):
        b = f"blk{l}."
        m = s @ P[b + "ada.w"] + P[b + "ada.b"]
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, i * D:(i + 1) * D] for i in range(6))
        z = ln(h) * (1 + sc1) + sh1
        vv = z @ P[b + "attn.qkv.w"][:, 2 * D:] + P[b + "attn.qkv.b"][2 * D:]
        h = h + g1 * (vv @ P[b + "attn.out.w"] + P[b + "attn.out.b"])
        z = ln(h) * (1 + sc2) + sh2
        h = h + g2 * (gelu(z @ P[b + "fc1.w"] + P[b + "fc1.b"]) @ P[b + "fc2.w"] + P[b + "fc2.b"])
    m = s @ P["final.ada.w"] + P["final.ada.b"]
    y = (ln(h) * (1 + m[:, D:]) + m[:, :D]) @ P["final.linear.w"] + P["final.linear.b"]  # (N, 64) in (u, v)
    np.testing.assert_allclose(got[:, 0], y.reshape(3, 8, 8), rtol=1e-11, atol=1e-12)


# ------------------------------------------------------------------ gradients
def test_modulate_gradcheck():
    """MATH.md (20.3): dx = dout (1 + scale), dshift = sum_L dout, dscale = sum_L dout x."""
    rng = np.random.default_rng(8)
    x, sh, sc = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    d = rng.standard_normal((3, 5, 4))
    out, cache = Dm.modulate_forward(x, sh, sc)
    dx, dsh, dsc = Dm.modulate_backward(d, cache)
    assert check_gradient(lambda a: inner(Dm.modulate_forward(a, sh, sc)[0], d), x, dx) < GC
    assert check_gradient(lambda a: inner(Dm.modulate_forward(x, a, sc)[0], d), sh, dsh) < GC
    assert check_gradient(lambda a: inner(Dm.modulate_forward(x, sh, a)[0], d), sc, dsc) < GC


def _block_point(rng, D=8, heads=2, N=2, T=5):
    P = {}
    Dm.dit_block_init(P, "b", D, heads, 2.0, rng)
    P = randomize(P, rng)
    return P, rng.standard_normal((N, T, D)), rng.standard_normal((N, D))


def test_dit_block_and_final_layer_gradcheck():
    """MATH.md (20.4), MATH.md (20.5): a whole adaLN-Zero block and the final layer against central
    differences over all parameters, the tokens and the conditioning (directional, float64)."""
    rng = np.random.default_rng(9)
    P, x, s = _block_point(rng)
    d = rng.standard_normal(x.shape)

    def loss(pt):
        Q = {k: pt[k] for k in P}
        return inner(Dm.dit_block_forward(Q, "b", pt["x"], pt["s"], heads=2)[0], d)

    out, cache = Dm.dit_block_forward(P, "b", x, s, heads=2)
    G = {}
    dx, ds = Dm.dit_block_backward(G, P, "b", d, cache)
    point, grads = {**P, "x": x, "s": s}, {**G, "x": dx, "s": ds}
    assert check_directional(loss, point, grads, np.random.default_rng(0), n_dirs=4) < GC
    F = {"f.ada.w": rng.standard_normal((8, 16)), "f.ada.b": rng.standard_normal(16),
         "f.linear.w": rng.standard_normal((8, 12)), "f.linear.b": rng.standard_normal(12)}
    d = rng.standard_normal((2, 5, 12))
    out, cache = Dm.final_layer_forward(F, "f", x, s)
    G = {}
    dx, ds = Dm.final_layer_backward(G, F, "f", d, cache)

    def lossf(pt):
        return inner(Dm.final_layer_forward({k: pt[k] for k in F}, "f", pt["x"], pt["s"])[0], d)

    assert check_directional(lossf, {**F, "x": x, "s": s}, {**G, "x": dx, "s": ds},
                             np.random.default_rng(1), n_dirs=4) < GC


@pytest.mark.parametrize("learn_sigma,pos", [(False, True), (True, False)])
def test_whole_dit_gradcheck(learn_sigma, pos):
    """MATH.md (20.6): the whole DiT (embedders, blocks, final layer, patchify) against central
    differences, per parameter array and for the input image."""
    net = small(learn_sigma=learn_sigma, pos_embed=pos)
    rng = np.random.default_rng(10)
    P = randomize(net.init_params(rng, dtype="float64"), rng)
    x, t, cond = batch(net, 3, 11)
    out, cache = net.forward(P, x, t, cond)
    d = rng.standard_normal(out.shape)
    G, dx = net.backward(P, cache, d)
    assert set(G) == set(P)

    def loss(pt):
        return inner(net.forward({k: pt[k] for k in P}, pt["x"], t, cond)[0], d)

    err = check_directional(loss, {**P, "x": x}, {**G, "x": dx}, np.random.default_rng(2), n_dirs=4)
    assert err < GC
    for k in ("x_embed.w", "t_embed.fc1.w", "class_emb", "blk0.ada.w"):
        idx = rng.choice(P[k].size, 6, replace=False)
        f = lambda a, k=k: inner(net.forward({**P, k: a}, x, t, cond)[0], d)  # noqa: E731
        assert check_gradient(f, P[k], G[k], indices=idx) < GC, k


# ------------------------------------------------------------------ bad input, guidance, samplers
def test_bad_sizes_are_clear_errors():
    """Image size not divisible by the patch, heads not dividing the width: ValueErrors naming them."""
    with pytest.raises(ValueError, match="patch=3 must divide image_size=8"):
        Dm.DiTConfig(image_size=8, patch=3)
    with pytest.raises(ValueError, match="heads=3 must divide width=16"):
        Dm.DiTConfig(width=16, heads=3)
    net = small()
    P = net.init_params(np.random.default_rng(0), dtype="float64")
    with pytest.raises(ValueError, match="not divisible by patch=2"):
        net.forward(P, np.zeros((1, 1, 7, 7)), np.zeros(1))
    with pytest.raises(ValueError, match="expects"):
        net.forward(P, np.zeros((1, 1, 6, 6)), np.zeros(1))


def test_cfg_channel_conventions():
    """MATH.md (20.8): all channels: u + s (c - u) everywhere (refdiff.cfg_combine); 3 channels (the
    release): channels >= 3 are the conditional output; s = 1 is the conditional model either way."""
    rng = np.random.default_rng(12)
    u, c = rng.standard_normal((2, 8, 4, 4)), rng.standard_normal((2, 8, 4, 4))
    from refdiff.guidance import cfg_combine

    np.testing.assert_allclose(Dm.dit_cfg(u, c, 4.0), cfg_combine(u, c, 4.0), rtol=1e-15)
    g3 = Dm.dit_cfg(u, c, 4.0, 3)
    np.testing.assert_allclose(g3[:, :3], u[:, :3] + 4.0 * (c[:, :3] - u[:, :3]), rtol=1e-15)
    assert np.array_equal(g3[:, 3:], c[:, 3:])
    np.testing.assert_allclose(Dm.dit_cfg(u, c, 1.0, 3), c, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="guided_channels"):
        Dm.dit_cfg(u, c, 2.0, 9)


def test_dit_works_with_samplers_and_guidance():
    """The DenoiserBase interface: as_model and DiT.guided run through refdiff.sample; guided with
    scale 1 equals the conditional model (MATH.md (20.8)), the generic guided_model equals DiT.guided
    on all channels."""
    from refdiff.guidance import guided_model

    net = small(learn_sigma=True)
    rng = np.random.default_rng(13)
    P = randomize(net.init_params(rng, dtype="float64"), rng, 0.1)
    sched = refdiff.make_schedule("linear", 1000)
    ts = refdiff.timesteps(1000, 5)
    xT = rng.standard_normal((3, 1, 8, 8))
    y = np.array([0, 1, 2])
    a = refdiff.sample(net.as_model(P, {"class": y}), xT, sched, ts, "ddim", progress=False)
    b = refdiff.sample(net.guided(P, {"class": y}, 1.0), xT, sched, ts, "ddim", progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    x, t = rng.standard_normal((3, 1, 8, 8)), np.full(3, 500.0)
    np.testing.assert_allclose(net.guided(P, {"class": y}, 3.0, 1)(x, t),
                               guided_model(net, P, {"class": y}, 3.0)(x, t), rtol=1e-12, atol=1e-12)


def test_dit_checkpoint_round_trip(tmp_path):
    """refdiff.train writes a DiT checkpoint; refdiff.load rebuilds the network (arch "dit") whose EMA
    output equals the trained EMA parameters' output exactly (MATH.md (20.6) model, saved as is)."""
    from refdiff.train import train

    net = small(width=8, depth=1, heads=2)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((32, 1, 8, 8))
    y = rng.integers(0, 3, 32)
    res = train(net, (x, {"class": y}), schedule=refdiff.make_schedule("linear", 100), steps=3, batch_size=8,
                out_dir=tmp_path, progress=False, eval_size=0, dtype="float64")
    loaded, meta = refdiff.load(tmp_path)
    assert type(loaded.net).__name__ == "DiT" and loaded.net.config == net.config
    xt, t = rng.standard_normal((2, 1, 8, 8)), np.array([5.0, 50.0])
    np.testing.assert_array_equal(loaded.net.apply(loaded.params, xt, t, {"class": np.array([0, 3])}),
                                  net.apply(res.ema_params, xt, t, {"class": np.array([0, 3])}))


def test_dit_and_mmdit_run_in_every_namespace(xp):
    """MATH.md (20.4), MATH.md (20.9) in the array namespace ``xp`` (numpy, array_api_strict, cupy):
    forward output, input gradient and parameter gradients equal the NumPy run (float64)."""
    from refdiff.backend import to_numpy
    from refdiff.nn.mmdit import MMDiT, MMDiTConfig

    rng = np.random.default_rng(15)
    t = np.array([3.0, 500.0])
    runs = [(small(learn_sigma=True, depth=1), rng.standard_normal((2, 1, 8, 8)), t, {"class": np.array([0, 3])}),
            (MMDiT(MMDiTConfig(image_size=4, width=8, depth=2, heads=2, vocab_size=5, max_text_len=3, text_dim=4,
                               freq_dim=8)), rng.standard_normal((2, 1, 4, 4)), t / 1000,
             {"tokens": np.array([[0, 1, 2], [0, 3, 0]]), "token_mask": np.array([[True, True, True],
                                                                                [True, True, False]])})]
    for net, x, tt, cond in runs:
        Pn = randomize(net.init_params(np.random.default_rng(0), dtype="float64"), np.random.default_rng(1), 0.1)
        P = {k: xp.asarray(v) for k, v in Pn.items()}
        o, c = net.forward(P, xp.asarray(x), xp.asarray(tt), {k: xp.asarray(v) for k, v in cond.items()})
        G, dx = net.backward(P, c, o + 1.0)
        on, cn = net.forward(Pn, x, tt, cond)
        Gn, dxn = net.backward(Pn, cn, on + 1.0)
        np.testing.assert_allclose(to_numpy(o), on, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(to_numpy(dx), dxn, rtol=1e-12, atol=1e-13)
        for k in Gn:
            np.testing.assert_allclose(to_numpy(G[k]), Gn[k], rtol=1e-12, atol=1e-13, err_msg=k)
