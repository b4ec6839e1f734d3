"""ControlNet and T2I-Adapter: the zero-init identity, the exact gradient pattern at init
and after one and two steps, a gradient check of the whole controlled model, scale
tables, keep masks, frozen base, bad controls (refdiff/nn/controlnet.py,
refdiff/nn/t2i_adapter.py, refdiff/controls.py)."""

import numpy as np
import pytest

from refdiff.controls import column_mask_matrix, edge_iou, edge_map, edge_matrix, pool_matrix
from refdiff.nn import UNet, UNetConfig
from refdiff.nn.controlnet import (ControlNet, control_keep, controlled_backward, controlled_forward,
                                   controlled_model, controlnet_scales)
from refdiff.nn.gradcheck import check_gradient
from refdiff.nn.t2i_adapter import T2IAdapter, adapter_keep, t2i_model


def _setup(seed=0, **kw):
    net = UNet(UNetConfig(base_channels=8, groups=2, num_classes=3, **kw))
    rng = np.random.default_rng(seed)
    P = net.init_params(rng, dtype="float64")
    P["out.conv.w"] = 0.1 * rng.standard_normal(P["out.conv.w"].shape)  # a nonzero output
    return net, P, rng


def test_zero_init_output_is_bit_identical_to_base():
    """MATH.md (19.9): at init the controlled output equals the base output bit for bit, for random
    controls, x_t, t, classes, scales (guess mode both tables) and two summed ControlNets."""
    net, P, rng = _setup()
    cn = ControlNet(net)
    C1, C2 = cn.init_params(P, rng), cn.init_params(P, rng)
    for trial in range(3):
        x, t = rng.standard_normal((3, 1, 8, 8)), rng.uniform(0, 50, 3)
        cond = {"class": rng.integers(0, 4, 3)}
        base = net.apply(P, x, t, cond)
        for guess, conv in ((False, "diffusers"), (True, "diffusers"), (True, "original")):
            sc = controlnet_scales(cn.num_residuals, rng.uniform(0, 3), guess_mode=guess, convention=conv)
            br = [(cn, C1, rng.random((3, 1, 8, 8)), sc), (cn, C2, rng.random((3, 1, 8, 8)), sc)]
            assert np.array_equal(controlled_forward(net, P, br, x, t, cond)[0], base)


def _grads(net, P, cn, C, x, t, ctrl, dy, scale=1.0):
    br = [(cn, C, ctrl, np.full(cn.num_residuals, scale))]
    out, cache = controlled_forward(net, P, br, x, t)
    return controlled_backward(net, P, br, cache, dy)[0][0]


def test_exact_gradient_pattern_at_init_and_after_one_and_two_steps():
    """MATH.md (19.10): at init only the output zero convs have nonzero gradients (every copy and
    hint-encoder gradient exactly 0), with dW_zc = s sum delta_skip (x) h_copy; after one SGD step the
    copy and the hint zero conv receive gradient, the hint's inner convs still exactly 0; after a
    second step those too."""
    net, P, rng = _setup(1)
    cn = ControlNet(net)
    C = cn.init_params(P, rng)
    x, t, ctrl, dy = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0]), rng.random((2, 1, 8, 8)), rng.standard_normal((2, 1, 8, 8))
    g = _grads(net, P, cn, C, x, t, ctrl, dy, scale=0.5)
    zc = {k for k in C if k.startswith("zc.")}
    assert all(np.all(g[k] == 0.0) for k in C if k not in zc)
    assert all(np.any(g[k] != 0.0) for k in zc)
    # dW of zc.mid = 0.5 * sum over batch and pixels of delta_mid (x) h_mid (delta from the base U-Net)
    dres = net.backward_full(P, net.forward(P, x, t)[1], dy)[2]
    dW = 0.5 * np.einsum("nohw,nihw->oi", dres["mid"], _copy_mid(net, C, x, t))
    assert np.allclose(g["zc.mid.w"][:, :, 0, 0], dW, rtol=1e-12, atol=1e-14)
    assert np.allclose(g["zc.mid.b"], 0.5 * dres["mid"].sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-14)
    C1 = {k: v - 0.1 * g[k] for k, v in C.items()}
    g1 = _grads(net, P, cn, C1, x, t, ctrl, dy, scale=0.5)
    assert np.any(g1["hint.out.w"] != 0) and np.any(g1["mid.res1.conv2.w"] != 0) and np.any(g1["conv_in.w"] != 0)
    assert all(np.all(g1[k] == 0.0) for k in C if k.startswith(("hint.conv0", "hint.conv1")))
    C2 = {k: v - 0.1 * g1[k] for k, v in C1.items()}
    g2 = _grads(net, P, cn, C2, x, t, ctrl, dy, scale=0.5)
    assert np.any(g2["hint.conv0.w"] != 0) and np.any(g2["hint.conv1.w"] != 0)


def _copy_mid(net, C, x, t):
    """Independent recomputation: the copy's down path and middle through UNet's own blocks."""
    from refdiff.nn.unet_blocks import BLOCKS
    xp_t = np.asarray(t, dtype=np.float64) * net.config.time_scale
    e, ctx, _ = net._embed(C, xp_t, {"class": np.full(len(x), net.config.num_classes)})
    env = {"e": e, "context": None, "key_mask": None, "groups": net.config.groups, "heads": 1}
    down, mid, _ = net._plan()
    h = x
    for kind, name, *_ in down + mid:
        h, _ = BLOCKS[kind].forward(C, name, h, env)
    return h


def test_whole_controlled_model_gradcheck():
    """MATH.md (19.8), (19.10): gradients of every ControlNet parameter group (zero convs made
    nonzero) through the frozen base U-Net, against central differences in float64."""
    net, P, rng = _setup(2)
    cn = ControlNet(net)
    C = {k: (0.3 * rng.standard_normal(v.shape) if k.startswith(("zc.", "hint.out")) else v)
         for k, v in cn.init_params(P, rng).items()}
    x, t, ctrl, dy = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0]), rng.random((2, 1, 8, 8)), rng.standard_normal((2, 1, 8, 8))
    sc = controlnet_scales(cn.num_residuals, 0.7, guess_mode=True)
    br = [(cn, C, ctrl, sc)]
    g = controlled_backward(net, P, br, controlled_forward(net, P, br, x, t)[1], dy)[0][0]
    for key in ("zc.skip1.w", "zc.mid.b", "hint.conv0.w", "hint.out.w", "down1.res0.conv1.w", "mid.attn.qkv.w",
                "temb.lin1.w", "conv_in.b"):
        idx = rng.choice(C[key].size, size=min(6, C[key].size), replace=False)

        def loss(v, key=key):
            return float(np.sum(controlled_forward(net, P, [(cn, {**C, key: v}, ctrl, sc)], x, t)[0] * dy))
        assert check_gradient(loss, C[key], g[key], indices=idx) < 1e-6, key


def test_scale_tables_and_keep_masks():
    """MATH.md (19.11), (19.12): guess-mode tables (diffusers logspace(-1, 0, K), original
    0.825^(K-1-i); within 0.6 % of each other for K = 13, not equal), scale 0 gives the base
    exactly, residuals are linear in the scale, keep masks from the formula."""
    d, o = controlnet_scales(13, 1.0, guess_mode=True), controlnet_scales(13, 1.0, guess_mode=True, convention="original")
    assert d[0] == pytest.approx(0.1, rel=1e-15) and d[-1] == 1.0 and np.allclose(np.diff(np.log10(d)), 1 / 12)
    assert o[-1] == 1.0 and o[0] == pytest.approx(0.825 ** 12, rel=1e-15)
    assert np.max(np.abs(o / d - 1)) < 0.006 and not np.allclose(o, d)
    assert np.array_equal(control_keep(10, 0.0, 1.0), np.ones(10))
    assert np.array_equal(control_keep(10, 0.25, 0.8), [0, 0, 0, 1, 1, 1, 1, 1, 0, 0])  # ceil(0.25*10)=3 off; (i+1)/10 > 0.8 off
    assert np.array_equal(adapter_keep(10, 0.35), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    net, P, rng = _setup(3)
    cn = ControlNet(net)
    C = {k: (0.3 * rng.standard_normal(v.shape) if k.startswith(("zc.", "hint.out")) else v)
         for k, v in cn.init_params(P, rng).items()}
    x, t, ctrl = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0]), rng.random((2, 1, 8, 8))
    r1, _ = cn.forward(C, x, t, ctrl, None, np.full(cn.num_residuals, 1.0))
    r3, _ = cn.forward(C, x, t, ctrl, None, np.full(cn.num_residuals, 3.0))
    assert all(np.allclose(r3[k], 3.0 * r1[k], rtol=1e-13, atol=0) for k in r1)
    assert np.array_equal(controlled_model(net, P, [(cn, C, ctrl)], conditioning_scale=0.0)(x, t), net.apply(P, x, t))
    ts = np.array([8.0, 3.0])
    m = controlled_model(net, P, [(cn, C, ctrl)], timesteps=ts, start=0.5)
    assert np.array_equal(m(x, np.full(2, 8.0)), net.apply(P, x, np.full(2, 8.0)))  # step 0 of 2: no control
    assert not np.array_equal(m(x, np.full(2, 3.0)), net.apply(P, x, np.full(2, 3.0)))


def test_cfg_with_control_both_halves_or_guess_mode():
    """MATH.md (19.8): CFG u + w (c - u); with the control on both halves at w = 1 the output is the
    controlled conditional; in guess mode the unconditional half is the plain base (zero residuals)."""
    net, P, rng = _setup(4)
    cn = ControlNet(net)
    C = {k: (0.3 * rng.standard_normal(v.shape) if k.startswith(("zc.", "hint.out")) else v)
         for k, v in cn.init_params(P, rng).items()}
    x, t, ctrl, cond = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0]), rng.random((2, 1, 8, 8)), {"class": np.array([0, 1])}
    out_c = controlled_model(net, P, [(cn, C, ctrl)], cond)(x, t)
    assert np.allclose(controlled_model(net, P, [(cn, C, ctrl)], cond, guidance_scale=1.0)(x, t), out_c, rtol=1e-13, atol=1e-15)
    null = {"class": np.array([3, 3])}
    g = controlled_model(net, P, [(cn, C, ctrl)], cond, guidance_scale=2.5, guess_mode=True)(x, t)
    out_cg = controlled_model(net, P, [(cn, C, ctrl)], cond, guess_mode=True)(x, t)
    u = net.apply(P, x, t, null)
    assert np.allclose(g, u + 2.5 * (out_cg - u), rtol=1e-12, atol=1e-14)


def test_frozen_base_bit_identical_after_training():
    """MATH.md (19.10): a few Adam updates of the ControlNet (trainable = its parameters only) leave
    every base parameter bit-identical and change the zero convs."""
    from refdiff.training import fit, init_state
    net, P, rng = _setup(5)
    cn = ControlNet(net)
    C = cn.init_params(P, rng)
    P0 = {k: v.copy() for k, v in P.items()}

    def loss_fn(groups, batch, rng_):
        x, ctrl, t = batch
        br = [(cn, groups["control"], ctrl, np.ones(cn.num_residuals))]
        out, cache = controlled_forward(net, groups["base"], br, x, t)
        dy = 2 * (out - ctrl) / out.size
        (gc,), gb, _ = controlled_backward(net, groups["base"], br, cache, dy)
        return float(np.mean((out - ctrl) ** 2)), {"control": gc, "base": gb}

    def next_batch(r):
        return r.standard_normal((2, 1, 8, 8)), r.random((2, 1, 8, 8)), r.uniform(0, 10, 2)
    st = fit(loss_fn, init_state({"base": P, "control": C}, {"control": True}, rng, 3), next_batch, steps=3,
             trainable={"control": True}, progress=False)
    assert all(np.array_equal(st.groups["base"][k], P0[k]) for k in P0)
    assert np.any(st.groups["control"]["zc.mid.w"] != 0)


def test_bad_control_image_is_a_clear_error():
    """A control of the wrong size, dtype or range (not [0, 1]) is refused."""
    net, P, rng = _setup(6)
    cn = ControlNet(net)
    C = cn.init_params(P, rng)
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0])
    with pytest.raises(ValueError, match=r"must have shape \(2, 1, 8, 8\), got \(2, 1, 4, 4\)"):
        cn.forward(C, x, t, rng.random((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        cn.forward(C, x, t, 2 * rng.random((2, 1, 8, 8)) - 1)
    with pytest.raises(TypeError, match="must be a float array"):
        cn.forward(C, x, t, np.ones((2, 1, 8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match="control_guidance_start < control_guidance_end"):
        control_keep(10, 0.6, 0.5)


def test_t2i_adapter_features_scaling_and_once_per_generation():
    """MATH.md (19.13), (19.14): features computed once (the same arrays at every call), scale 0 or
    a step past int(N factor) gives the base exactly, the injected residual is linear in the
    scale (the U-Net output at scale c equals a forward with c * F_l), not the base at init;
    the adapter's backward against central differences."""
    net, P, rng = _setup(7, channel_mults=(1, 2))
    ad = T2IAdapter(net, downscale=2)
    A = ad.init_params(rng, dtype="float64")
    ctrl, x, t = rng.random((2, 1, 16, 16)), rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0])
    feats, cache = ad.forward(A, ctrl)
    assert {k: v.shape for k, v in feats.items()} == {"feature0": (2, 8, 8, 8), "feature1": (2, 16, 4, 4)}
    ts = np.array([8.0, 3.0])
    m = t2i_model(net, P, ad, A, ctrl, adapter_conditioning_scale=0.4, adapter_conditioning_factor=0.5, timesteps=ts)
    assert m.features["feature0"] is not None and m.features is m.features
    expect = net.forward(P, x, np.full(2, 8.0), None, {k: 0.4 * v for k, v in feats.items()})[0]
    assert np.allclose(m(x, np.full(2, 8.0)), expect, rtol=1e-14, atol=0)
    assert not np.allclose(expect, net.apply(P, x, np.full(2, 8.0)))
    assert np.array_equal(m(x, np.full(2, 3.0)), net.apply(P, x, np.full(2, 3.0)))  # step 1 >= int(2 * 0.5)
    assert np.array_equal(t2i_model(net, P, ad, A, ctrl, adapter_conditioning_scale=0.0)(x, t), net.apply(P, x, t))
    df = {k: rng.standard_normal(v.shape) for k, v in feats.items()}
    g = ad.backward(A, cache, df)
    for key in ("t2i.conv_in.w", "t2i.l1.in.w", "t2i.l0.conv1.w", "t2i.l1.conv2.b"):
        def loss(v, key=key):
            f, _ = ad.forward({**A, key: v}, ctrl)
            return float(sum(np.sum(f[k] * df[k]) for k in f))
        assert check_gradient(loss, A[key], g[key]) < 1e-6, key


def test_linear_controls_match_independent_forms():
    """MATH.md (19.15): the control matrices equal reshape-mean pooling, np.diff along rows and
    column slicing; the toy Canny map of a vertical step is its two boundary columns."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((8, 8))
    assert np.allclose(pool_matrix(8) @ x.reshape(-1), x.reshape(4, 2, 4, 2).mean(axis=(1, 3)).reshape(-1), rtol=1e-14)
    assert np.allclose(edge_matrix(8) @ x.reshape(-1), np.diff(x, axis=1).reshape(-1), rtol=1e-14)
    assert np.array_equal(column_mask_matrix(8, (1, 5)) @ x.reshape(-1), x[:, [1, 5]].reshape(-1))
    step = -np.ones((1, 1, 8, 8))
    step[..., 4:] = 1.0
    e = edge_map(step, 0.5)
    assert np.array_equal(np.nonzero(e[0, 0].sum(0))[0], [3, 4]) and edge_iou(e, e)[0] == 1.0


def test_composition_lora_controlnet_class_prompt():
    """MATH.md (19.6), (19.8): a LoRA (on the base), a ControlNet and a class prompt at once: at
    init of both adapters the output is the class-conditional base bit for bit; with a trained-
    like (nonzero) LoRA the controlled model equals the base run on the merged weights plus the
    ControlNet's residuals (the two adapters compose additively in their own places)."""
    from refdiff.nn.lora_model import LoRAConfig, lora_init, lora_params
    net, P, rng = _setup(10)
    cn = ControlNet(net)
    C = cn.init_params(P, rng)
    ad = lora_init(P, LoRAConfig(r=2, alpha=2.0, targets=("up*conv*", "mid.attn.*")), rng)
    x, t, ctrl, cond = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 8.0]), rng.random((2, 1, 8, 8)), {"class": np.array([1, 2])}
    m = controlled_model(net, lora_params(P, ad), [(cn, C, ctrl)], cond)
    assert np.array_equal(m(x, t), net.apply(P, x, t, cond))
    ad = type(ad)({k: v + 0.05 for k, v in ad.weights.items()}, ad.config, ad.scaling)
    C = {k: (0.3 * rng.standard_normal(v.shape) if k.startswith("zc.") else v) for k, v in C.items()}
    Pm = lora_params(P, ad)
    res, _ = cn.forward(C, x, t, ctrl, cond)
    expect = net.forward(Pm, x, t, cond, res)[0]
    assert np.array_equal(controlled_model(net, Pm, [(cn, C, ctrl)], cond)(x, t), expect)
    assert not np.allclose(expect, net.apply(P, x, t, cond))
