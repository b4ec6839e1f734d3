"""The U-Net as a conditional network: cross-attention to tokens at chosen levels with a
key-padding mask, injection points, any number of levels, the inpainting input; and the
condition kinds' validation and nulls (MATH.md (13.17), (13.23), (12.7))."""

import numpy as np
import pytest

import refdiff.nn as nn
from refdiff.nn.conditions import AdapterCond, CondSpec, ControlCond
from refdiff.nn.gradcheck import check_directional

L_TOK = 5


def _xattn_unet(**kw):
    cfg = dict(base_channels=4, channel_mults=(1, 2), groups=2, time_embed_dim=8, num_classes=3,
               cross_attention=(0, 1), vocab_size=7, context_len=L_TOK, context_dim=6, heads=2)
    cfg.update(kw)
    return nn.UNet(nn.UNetConfig(**cfg))


def _perturbed(model, rng, scale=0.3):
    P = model.init_params(rng, dtype="float64")
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in P.items()}


def _batch(rng, n=2, size=8):
    x = rng.standard_normal((n, 1, size, size))
    t = np.array([3.0, 40.0])[:n]
    ids = rng.integers(0, 7, size=(n, L_TOK))
    mask = np.array([[True, True, True, False, False], [True, False, True, True, False]])[:n]
    return x, t, {"class": np.array([0, 3])[:n], "tokens": ids, "token_mask": mask}


def test_unet_cross_attention_gradcheck_whole_model():
    """MATH.md (13.17), (13.23), (13.23), (13.20): central differences along random directions over
    every parameter and the input at once (float64, h = 1e-5) agree with the hand-written
    backward of a U-Net with cross-attention at two levels (and the middle) and a
    key-padding mask to < 1e-6, both for plain outputs and with residuals at every
    injection point (ControlNet skips and middle, adapter features; their gradients are
    checked too)."""
    rng = np.random.default_rng(0)
    model = _xattn_unet(cross_attention=(0, 1, "mid"))
    P = _perturbed(model, rng)
    x, t, cond = _batch(rng)
    out0, _ = model.forward(P, x, t, cond)
    dout = rng.standard_normal(out0.shape)
    res = {k: 0.3 * rng.standard_normal((2, *s)) for k, s in model.injection_points().items()}
    for residuals in (None, res):
        out, cache = model.forward(P, x, t, cond, residuals)
        G, dx, dres = model.backward_full(P, cache, dout)
        point = {**{"p/" + k: v for k, v in P.items()}, "x": x}
        grads = {**{"p/" + k: v for k, v in G.items()}, "x": dx}
        if residuals:
            point.update({"r/" + k: v for k, v in residuals.items()})
            grads.update({"r/" + k: dres[k] for k in residuals})

        def loss(pt):
            Pp = {k[2:]: v for k, v in pt.items() if k.startswith("p/")}
            rr = {k[2:]: v for k, v in pt.items() if k.startswith("r/")} or None
            return float(np.sum(model.forward(Pp, pt["x"], t, cond, rr)[0] * dout))

        err = check_directional(loss, point, grads, np.random.default_rng(1), n_dirs=4)
        assert err < 1e-6, err


def test_masked_tokens_get_exactly_zero_gradient_and_do_not_change_the_output():
    """MATH.md (13.22): a masked-out key position receives weight 0, so its position
    embedding gets exactly zero gradient and changing its token id leaves the output
    bit-identical; an unmasked position's change does move the output."""
    rng = np.random.default_rng(2)
    model = _xattn_unet()
    P = _perturbed(model, rng)
    x, t, cond = _batch(rng, n=1)  # sample 0 keeps positions 0, 1, 2
    out, cache = model.forward(P, x, t, cond)
    G, _ = model.backward(P, cache, rng.standard_normal(out.shape))
    assert np.all(G["pos_emb"][3:] == 0.0) and np.all(np.abs(G["pos_emb"][:3]) > 0)
    ids = cond["tokens"].copy()
    ids[0, 4] = (ids[0, 4] + 1) % 7
    assert np.array_equal(model.apply(P, x, t, {**cond, "tokens": ids}), out)
    ids[0, 1] = (ids[0, 1] + 1) % 7
    assert not np.allclose(model.apply(P, x, t, {**cond, "tokens": ids}), out)


def test_three_levels_and_inpainting_input_gradcheck():
    """MATH.md (13.20)-(13.21): a three-level U-Net (8x8, 4x4, 2x2) whose input also takes
    the inpainting mask and masked image: directional central differences < 1e-6."""
    rng = np.random.default_rng(3)
    model = nn.UNet(nn.UNetConfig(base_channels=4, channel_mults=(1, 2, 2), groups=2, time_embed_dim=8,
                                  inpaint=True, attention=True))
    P = _perturbed(model, rng)
    x = rng.standard_normal((2, 1, 8, 8))
    t = np.array([5.0, 9.0])
    cond = {"mask": (rng.random((2, 1, 8, 8)) < 0.5).astype(np.float64), "masked_image": rng.standard_normal((2, 1, 8, 8))}
    out, cache = model.forward(P, x, t, cond)
    dout = rng.standard_normal(out.shape)
    G, dx = model.backward(P, cache, dout)
    loss = lambda pt: float(np.sum(model.forward({k: v for k, v in pt.items() if k != "x"}, pt["x"], t, cond)[0] * dout))  # noqa: E731
    assert check_directional(loss, {**P, "x": x}, {**G, "x": dx}, np.random.default_rng(4), n_dirs=4) < 1e-6
    # conv_in, one res block per level (3), two downsamplings: 6 skips, popped by (R + 1) L = 6 decoder blocks;
    # an adapter feature per level, at 8x8, 4x4, 2x2
    pts = model.injection_points()
    assert sorted(pts) == sorted([f"skip{i}" for i in range(6)] + ["mid", "feature0", "feature1", "feature2"])
    assert [pts[f"feature{l}"] for l in range(3)] == [(4, 8, 8), (8, 4, 4), (8, 2, 2)]


def test_bad_conditions_give_clear_errors():
    """A condition kind the model was not built for, tokens out of vocabulary, a mask of
    the wrong shape or dtype, a control image of the wrong size, a bad adapter scale, an
    unknown injection point: one-line errors naming the key and the valid range."""
    rng = np.random.default_rng(5)
    model = _xattn_unet()
    P = model.init_params(rng, dtype="float64")
    x, t, cond = _batch(rng)
    with pytest.raises(ValueError, match="kind 'control' is not one this model was built for"):
        model.forward(P, x, t, {**cond, "control": np.zeros((2, 3, 8, 8))})
    with pytest.raises(ValueError, match=r"vocab_size = 7.*cond\['tokens'\] contains 9, out of range \[0, 6\]"):
        model.forward(P, x, t, {**cond, "tokens": np.full((2, L_TOK), 9)})
    with pytest.raises(ValueError, match=r"cond\['token_mask'\] must have the shape of cond\['tokens'\] \(2, 5\), got \(2, 4\)"):
        model.forward(P, x, t, {**cond, "token_mask": np.ones((2, 4), dtype=bool)})
    with pytest.raises(TypeError, match=r"token_mask'\] must be boolean"):
        model.forward(P, x, t, {**cond, "token_mask": np.ones((2, L_TOK))})
    with pytest.raises(ValueError, match=r"tokens'\] must have shape \(N, L\) = \(2, L\) with 1 <= L <= 5"):
        model.forward(P, x, t, {**cond, "tokens": np.zeros((2, 6), dtype=np.int64), "token_mask": None})
    with pytest.raises(ValueError, match=r"cond\['token_mask'\] was given without cond\['tokens'\]"):
        model.forward(P, x, t, {"class": cond["class"], "token_mask": cond["token_mask"]})
    with pytest.raises(ValueError, match="masks out every token"):
        model.forward(P, x, t, {**cond, "token_mask": np.zeros((2, L_TOK), dtype=bool)})
    with pytest.raises(ValueError, match="unknown injection point 'skip99'"):
        model.forward(P, x, t, cond, {"skip99": np.zeros((2, 4, 8, 8))})
    with pytest.raises(ValueError, match=r"residuals\['mid'\] must have shape \(2, 8, 4, 4\)"):
        model.forward(P, x, t, cond, {"mid": np.zeros((2, 8, 8, 8))})
    spec = CondSpec([ControlCond(3, 8), AdapterCond()])
    with pytest.raises(ValueError, match=r"cond\['control'\] must have shape \(N, C, H, W\) = \(2, 3, 8, 8\), got \(2, 3, 16, 16\)"):
        spec.validate({"control": np.zeros((2, 3, 16, 16))}, 2, np, np.float64)
    with pytest.raises(ValueError, match=r"adapter_scale'\] must be finite and >= 0"):
        spec.validate({"adapter_scale": -1.0}, 2, np, np.float64)
    inp = nn.UNet(nn.UNetConfig(base_channels=4, groups=2, time_embed_dim=8, inpaint=True))
    with pytest.raises(ValueError, match=r"cond\['mask'\] must have shape \(N, C, H, W\) = \(2, 1, 8, 8\)"):
        inp.forward(inp.init_params(rng), x, t, {"mask": np.ones((2, 1, 4, 4)), "masked_image": x})


def test_nulls_and_dropout_per_kind():
    """MATH.md (12.7), (14.10): a missing kind is its null (the null class, the empty
    prompt = start token 0 alone, zero control, all-ones mask, adapter scale 0); null_cond
    replaces only the named kinds; dropout with p = {kind: 1} replaces exactly that kind,
    p = 0 nothing, and it draws one uniform per sample per dropped kind."""
    model = _xattn_unet()
    x, t, cond = _batch(np.random.default_rng(6))
    full = model.cond_spec.validate({}, 2, np, np.float64)
    assert full["class"].tolist() == [3, 3]
    assert full["tokens"].tolist() == [[0] * L_TOK] * 2 and full["token_mask"][:, 0].all()
    assert not full["token_mask"][:, 1:].any()
    u = model.null_cond(cond, 2, ("tokens",), xp=np)
    assert np.array_equal(u["class"], cond["class"]) and not u["token_mask"][:, 1:].any()
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    d = model.cond_spec.drop(cond, {"class": 1.0, "tokens": 0.0}, rng_a, 2, np, np.float64)
    assert d["class"].tolist() == [3, 3] and np.array_equal(d["tokens"], cond["tokens"])
    rng_b.random(2), rng_b.random(2)
    assert rng_a.random() == rng_b.random()
    spec = CondSpec([ControlCond(2, 4), AdapterCond()])
    nul = spec.validate({}, 3, np, np.float32)
    assert np.all(nul["control"] == 0) and nul["control"].shape == (3, 2, 4, 4) and np.all(nul["adapter_scale"] == 0)


def test_guidance_per_kind_guides_the_chosen_kind_and_keeps_the_others():
    """MATH.md (12.8), (12.7): guided_model with G = {class} on a network taking a class and
    an inpainting mask is affine in w through f(c) at w = 1 and f(c with the null class,
    mask kept) at w = 0 (out(3) = 3 out(1) - 2 out(0) to rounding); the kept mask is seen
    by both branches (w = 0 differs from the fully unconditional output), and guiding
    both kinds at w = 0 is the fully unconditional output."""
    from refdiff.guidance import guided_model

    rng = np.random.default_rng(8)
    net = nn.UNet(nn.UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=3, inpaint=True))
    P = _perturbed(net, rng)
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([4.0, 30.0])
    cond = {"class": np.array([1, 2]), "mask": (rng.random((2, 1, 8, 8)) < 0.5).astype(np.float64),
            "masked_image": rng.standard_normal((2, 1, 8, 8))}
    out = {w: guided_model(net, P, cond, w, guided=("class",))(x, t) for w in (0.0, 1.0, 3.0)}
    np.testing.assert_allclose(out[1.0], net.apply(P, x, t, cond), rtol=0, atol=1e-12)
    kept = {**cond, "class": np.array([3, 3])}
    np.testing.assert_allclose(out[0.0], net.apply(P, x, t, kept), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[3.0], 3 * out[1.0] - 2 * out[0.0], rtol=0, atol=1e-10)
    uncond = net.apply(P, x, t, None)
    assert np.max(np.abs(out[0.0] - uncond)) > 1e-3
    both = guided_model(net, P, cond, 0.0, guided=("class", "inpaint"))(x, t)
    np.testing.assert_allclose(both, uncond, rtol=0, atol=1e-12)


def test_conditions_and_cross_attention_in_every_namespace(xp):
    """The condition path is namespace-agnostic: a cross-attention U-Net with class, token
    and mask conditions gives the NumPy output and gradients (float64, 1e-10) under
    array_api_strict and CuPy; condition dropout draws the same masks (host uniforms) and
    gives the same conditions in every namespace; the guided model agrees too (MATH.md
    (12.8))."""
    from refdiff.backend import to_numpy
    from refdiff.guidance import guided_model
    from tests._support import asx

    rng = np.random.default_rng(9)
    model = _xattn_unet()
    P = _perturbed(model, rng)
    x, t, cond = _batch(rng)
    ref_out, ref_cache = model.forward(P, x, t, cond)
    dout = rng.standard_normal(ref_out.shape)
    ref_G, ref_dx = model.backward(P, ref_cache, dout)
    Px = {k: asx(xp, v) for k, v in P.items()}
    cx = {"class": asx(xp, cond["class"]), "tokens": asx(xp, cond["tokens"]), "token_mask": xp.asarray(cond["token_mask"])}
    out, cache = model.forward(Px, asx(xp, x), asx(xp, t), cx)
    G, dx = model.backward(Px, cache, asx(xp, dout))
    np.testing.assert_allclose(to_numpy(out), ref_out, rtol=0, atol=1e-10)
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=0, atol=1e-10)
    for k in ref_G:
        np.testing.assert_allclose(to_numpy(G[k]), ref_G[k], rtol=0, atol=1e-10, err_msg=k)
    p = {"class": 0.5, "tokens": 0.5}
    d_ref = model.cond_spec.drop(cond, p, np.random.default_rng(3), 2, np, np.float64)
    d_x = model.cond_spec.drop(cx, p, np.random.default_rng(3), 2, xp, xp.float64)
    for k in d_ref:
        assert np.array_equal(to_numpy(d_x[k]), d_ref[k]), k
    g_ref = guided_model(model, P, cond, 2.5, guided=("tokens",))(x, t)
    g_x = guided_model(model, Px, cx, 2.5, guided=("tokens",))(asx(xp, x), asx(xp, t))
    np.testing.assert_allclose(to_numpy(g_x), g_ref, rtol=0, atol=1e-10)


def test_sample_takes_a_condition_mapping():
    """MATH.md (12.8): refdiff.sample with y = a cond mapping and null_label = its
    unconditional counterpart (tokens guided, class kept) equals sampling guided_model,
    and with y alone samples net.as_model(params, cond)."""
    import refdiff
    from refdiff.guidance import guided_model

    rng = np.random.default_rng(10)
    net = _xattn_unet()
    P = _perturbed(net, rng, scale=0.05)
    _, _, cond = _batch(rng)
    x_T = rng.standard_normal((2, 1, 8, 8))
    sched = refdiff.make_schedule("cosine", 50)
    ts = refdiff.timesteps(50, 4, "trailing")
    f = lambda x, t, c: net.apply(P, x, t, c)  # noqa: E731
    null = net.null_cond(cond, 2, ("tokens",), xp=np, dtype=np.float64)
    a = refdiff.sample(f, x_T, sched, ts, "ddim", y=cond, null_label=null, guidance_scale=2.0, progress=False)
    b = refdiff.sample(guided_model(net, P, cond, 2.0, guided=("tokens",)), x_T, sched, ts, "ddim", progress=False)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    c = refdiff.sample(f, x_T, sched, ts, "ddim", y=cond, progress=False)
    np.testing.assert_array_equal(c, refdiff.sample(net.as_model(P, cond), x_T, sched, ts, "ddim", progress=False))
