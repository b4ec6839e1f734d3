"""LoRA: exact identities of the adapter path, its gradients, merge/fuse semantics, the
closed-form best rank-r fine-tune, checkpoints and bad input (refdiff/nn/lora.py,
refdiff/nn/lora_model.py)."""

import warnings

import numpy as np
import pytest

from refdiff.nn import UNet, UNetConfig
from refdiff.nn.attention import mha_forward, mha_init
from refdiff.nn.conv import conv2d_forward
from refdiff.nn.gradcheck import check_gradient
from refdiff.nn.lora import (dropout_mask, lora_conv_backward, lora_conv_forward, lora_delta, lora_init_factors,
                             lora_linear_backward, lora_linear_forward, lora_linear_forward_naive, lora_mha_backward,
                             lora_mha_forward, lora_rrr_optimum, lora_scaling)
from refdiff.nn.lora_model import (LoRAConfig, lora_fuse, lora_grads, lora_init, lora_merge, lora_params,
                                   lora_unfuse, lora_unmerge, load_lora, save_lora, scale_layer, set_scale,
                                   unscale_layer)
from refdiff.nn.optim import adam_init, adam_update


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _factors(rng, w_shape, r):
    A, _ = lora_init_factors(w_shape, r, rng)
    B = rng.standard_normal((w_shape[0], r, 1, 1) if len(w_shape) == 4 else (w_shape[1], r))
    return A, B


def test_scaling_conventions():
    """MATH.md (19.1): PEFT alpha/r, rsLoRA alpha/sqrt(r); PEFT's default r = alpha = 8 gives 1."""
    assert lora_scaling(8, 8) == 1.0
    assert lora_scaling(16, 4) == 4.0
    assert lora_scaling(16, 4, rslora=True) == 8.0
    assert LoRAConfig(r=4).scaling == 1.0  # alpha None: alpha = r


def test_linear_adapter_path_equals_merged_weight_and_naive_spec():
    """MATH.md (19.2), (19.4): x w + b + s (x A^T) B^T equals x (w + dW) + b with dW = s (BA)^T
    (float64, 1e-13 relative), equals the loop definition, and rank(dW) <= r."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 6)), rng.standard_normal(6)
    A, B = _factors(rng, w.shape, 3)
    s = lora_scaling(5.0, 3)
    y, _ = lora_linear_forward(x, w, b, A, B, s)
    assert _rel(y, x @ (w + lora_delta(A, B, s)) + b) < 1e-13
    assert _rel(y, lora_linear_forward_naive(x, w, b, A, B, s)) < 1e-13
    assert np.linalg.matrix_rank(lora_delta(A, B, s)) == 3
    m = dropout_mask(x.shape, 0.3, rng)
    assert _rel(lora_linear_forward(x, w, b, A, B, s, mask=m)[0], lora_linear_forward_naive(x, w, b, A, B, s, m)) < 1e-13


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_adapter_path_equals_merged_weight(stride):
    """MATH.md (19.2), (19.4): the 3x3 A conv (base stride/padding) then 1x1 B conv equals the
    base conv with w + dW, dW[o,i] = s sum_rho B[o,rho] A[rho,i] (float64, 1e-13 relative)."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((5, 3, 3, 3)), rng.standard_normal(5)
    A, B = _factors(rng, w.shape, 2)
    y, _ = lora_conv_forward(x, w, b, A, B, 0.7, stride=stride)
    merged, _ = conv2d_forward(x, w + lora_delta(A, B, 0.7), b, stride=stride)
    assert _rel(y, merged) < 1e-13
    d = lora_delta(A, B, 0.7)
    assert np.linalg.matrix_rank(d.reshape(5, -1)) == 2
    assert np.allclose(d[:, 1, 2, 0], 0.7 * B[:, :, 0, 0] @ A[:, 1, 2, 0], rtol=1e-14, atol=0)


@pytest.mark.parametrize("cross", [False, True])
def test_attention_adapter_path_equals_merged_weights(cross):
    """MATH.md (19.2), (19.4): LoRA on every attention projection (qkv or q/kv, and out) equals
    multi-head attention with merged weights (float64, 1e-13 relative)."""
    rng = np.random.default_rng(2)
    P = {}
    mha_init(P, "a", 8, 2, rng, context_dim=5 if cross else None)
    x, ctx = rng.standard_normal((2, 4, 8)), (rng.standard_normal((2, 3, 5)) if cross else None)
    lora, merged = {}, dict(P)
    for k in [k for k in P if k.endswith(".w")]:
        A, B = _factors(rng, P[k].shape, 2)
        lora[k[:-2] + ".lora_A"], lora[k[:-2] + ".lora_B"] = A, B
        merged[k] = P[k] + lora_delta(A, B, 1.5)
    y, _ = lora_mha_forward(P, "a", x, lora, 1.5, heads=2, context=ctx)
    assert _rel(y, mha_forward(merged, "a", x, ctx, heads=2)[0]) < 1e-13
    assert _rel(lora_mha_forward(P, "a", x, {}, 1.5, heads=2, context=ctx)[0], mha_forward(P, "a", x, ctx, heads=2)[0]) < 1e-13


def test_linear_and_conv_gradcheck():
    """MATH.md (19.3): dA, dB, dx and dw (base unfrozen) of the linear and conv adapters
    against central differences in float64, with a dropout mask on A's input."""
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((4, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    A, B = _factors(rng, w.shape, 2)
    m, dy = dropout_mask(x.shape, 0.25, rng), rng.standard_normal((4, 5))
    dx, dw, db, dA, dB = lora_linear_backward(dy, lora_linear_forward(x, w, b, A, B, 0.8, mask=m)[1])
    f = {"x": lambda v: lora_linear_forward(v, w, b, A, B, 0.8, mask=m)[0], "w": lambda v: lora_linear_forward(x, v, b, A, B, 0.8, mask=m)[0],
         "A": lambda v: lora_linear_forward(x, w, b, v, B, 0.8, mask=m)[0], "B": lambda v: lora_linear_forward(x, w, b, A, v, 0.8, mask=m)[0]}
    for name, point, g in (("x", x, dx), ("w", w, dw), ("A", A, dA), ("B", B, dB)):
        assert check_gradient(lambda v: float(np.sum(f[name](v) * dy)), point, g) < 1e-8, name
    xc, wc, bc = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    Ac, Bc = _factors(rng, wc.shape, 2)
    dyc = rng.standard_normal((2, 4, 3, 3))
    fc = lambda x_, w_, A_, B_: lora_conv_forward(x_, w_, bc, A_, B_, 1.3, stride=2)[0]  # noqa: E731
    grads = lora_conv_backward(dyc, lora_conv_forward(xc, wc, bc, Ac, Bc, 1.3, stride=2)[1])
    args = [xc, wc, Ac, Bc]
    for j, g in zip(range(4), (grads[0], grads[1], grads[3], grads[4])):
        def loss(v, j=j):
            a = list(args)
            a[j] = v
            return float(np.sum(fc(*a) * dyc))
        assert check_gradient(loss, args[j], g) < 1e-8, j


def test_attention_lora_gradcheck():
    """MATH.md (19.3): the attention adapter's backward (factors of every projection, x and
    the context) against central differences."""
    rng = np.random.default_rng(4)
    P = {}
    mha_init(P, "a", 4, 2, rng, context_dim=3)
    x, ctx, dy = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 3, 4))
    lora = {}
    for k in [k for k in P if k.endswith(".w")]:
        lora[k[:-2] + ".lora_A"], lora[k[:-2] + ".lora_B"] = _factors(rng, P[k].shape, 1)
    G = {}
    dx, dc = lora_mha_backward(G, P, "a", dy, lora_mha_forward(P, "a", x, lora, 0.9, heads=2, context=ctx)[1])
    for key in lora:
        def loss(v, key=key):
            return float(np.sum(lora_mha_forward(P, "a", x, {**lora, key: v}, 0.9, heads=2, context=ctx)[0] * dy))
        assert check_gradient(loss, lora[key], G[key]) < 1e-7, key
    assert check_gradient(lambda v: float(np.sum(lora_mha_forward(P, "a", v, lora, 0.9, heads=2, context=ctx)[0] * dy)), x, dx) < 1e-7
    assert check_gradient(lambda v: float(np.sum(lora_mha_forward(P, "a", x, lora, 0.9, heads=2, context=v)[0] * dy)), ctx, dc) < 1e-7


def _unet():
    net = UNet(UNetConfig(base_channels=8, groups=2, num_classes=3))
    P = net.init_params(np.random.default_rng(5), dtype="float64")
    P["out.conv.w"] = np.random.default_rng(6).standard_normal(P["out.conv.w"].shape) * 0.1  # a nonzero output
    return net, P


def test_unet_at_init_is_bit_identical_and_only_B_gets_gradient():
    """MATH.md (19.5), (19.6): with B = 0 the adapted U-Net's output equals the base output bit for
    bit; dL/dA = 0 exactly and dL/dB != 0 (every conv, linear and attention projection targeted)."""
    net, P = _unet()
    rng = np.random.default_rng(7)
    ad = lora_init(P, LoRAConfig(r=1, alpha=4.0, targets=("*",)), rng)  # r = 1: out.conv has one output channel
    x, t, cond = rng.standard_normal((3, 1, 8, 8)), np.array([1.0, 4.0, 9.0]), {"class": np.array([0, 2, 3])}
    Pe = lora_params(P, ad)
    out, cache = net.forward(Pe, x, t, cond)
    assert np.array_equal(out, net.apply(P, x, t, cond))
    grads, _ = net.backward(Pe, cache, 2.0 * out)
    g = lora_grads(grads, ad)
    assert all(np.all(g[k] == 0.0) for k in g if k.endswith("lora_A"))
    nonzero_B = [k for k in g if k.endswith("lora_B") and np.any(g[k] != 0)]
    assert len(nonzero_B) == len(ad.layers)


def test_unet_lora_grads_gradcheck():
    """MATH.md (19.5): gradients of the factors through the whole U-Net (effective weights then
    the chain rule) against central differences, at a nonzero B."""
    net, P = _unet()
    rng = np.random.default_rng(8)
    ad = lora_init(P, LoRAConfig(r=2, alpha=2.0, targets=("down0.res0.conv1", "mid.attn.qkv", "temb.lin2")), rng)
    ad = type(ad)({k: (v if k.endswith("A") else 0.1 * rng.standard_normal(v.shape)) for k, v in ad.weights.items()},
                  ad.config, ad.scaling)
    x, t, dy = rng.standard_normal((2, 1, 8, 8)), np.array([2.0, 7.0]), rng.standard_normal((2, 1, 8, 8))
    grads, _ = net.backward(lora_params(P, ad), net.forward(lora_params(P, ad), x, t)[1], dy)
    g = lora_grads(grads, ad)
    for key in ("down0.res0.conv1.lora_A", "mid.attn.qkv.lora_B", "temb.lin2.lora_A"):
        def loss(v, key=key):
            a = type(ad)({**ad.weights, key: v}, ad.config, ad.scaling)
            return float(np.sum(net.apply(lora_params(P, a), x, t) * dy))
        assert check_gradient(loss, ad.weights[key], g[key]) < 1e-6, key


def test_fuse_unfuse_round_trip_and_scale_semantics(capsys):
    """MATH.md (19.7): unfuse(fuse(W, s)) = W to 1e-12 in float64; fuse(lora_scale) equals a merge
    with scaling lora_scale * alpha / r and keeps that scaling; runtime scale/unscale/reset;
    float32 drift over 1000 fuse/unfuse cycles is reported (not asserted)."""
    net, P = _unet()
    rng = np.random.default_rng(9)
    ad = lora_init(P, LoRAConfig(r=2, alpha=3.0, targets=("down*conv*", "mid*conv*")), rng)
    ad = type(ad)({k: v if k.endswith("A") else rng.standard_normal(v.shape) for k, v in ad.weights.items()},
                  ad.config, ad.scaling)
    fused, ad2 = lora_fuse(P, ad, lora_scale=0.6)
    assert ad2.scaling == pytest.approx(0.6 * 1.5, rel=1e-15)
    for name in ad.layers:
        k = name + ".w"
        expect = P[k] + lora_delta(ad.weights[name + ".lora_A"], ad.weights[name + ".lora_B"], 0.6 * 1.5)
        assert _rel(fused[k], expect) < 1e-15
        assert _rel(lora_unfuse(fused, ad2)[k], P[k]) < 1e-12
        assert _rel(lora_unmerge(lora_merge(P, ad), ad)[k], P[k]) < 1e-12
    assert scale_layer(ad, 0.0).scaling == 0.0 and unscale_layer(scale_layer(ad, 0.0), 0.0).scaling == 1.5
    assert unscale_layer(scale_layer(ad, 4.0), 4.0).scaling == 1.5 and set_scale(ad, 2.0).scaling == 3.0
    P32 = {k: v.astype(np.float32) for k, v in P.items()}
    ad32 = type(ad)({k: v.astype(np.float32) for k, v in ad.weights.items()}, ad.config, ad.scaling)
    W = dict(P32)
    for _ in range(1000):
        W, a = lora_fuse(W, ad32, 1.0)
        W = lora_unfuse(W, a)
    drift = max(float(np.max(np.abs(W[n + ".w"] - P32[n + ".w"]))) for n in ad.layers)
    with capsys.disabled():
        print(f"\n[lora] float32 max |W - W0| after 1000 fuse/unfuse cycles: {drift:.3e}")
    assert np.isfinite(drift)


def rrr_optimum(W0, Sigma1, alpha, sigma, r):
    """Best rank-r update of a linear denoiser x0_hat = x_t W (row vectors), MATH.md (19.16)."""
    D = len(W0)
    C = alpha ** 2 * Sigma1 + sigma ** 2 * np.eye(D)
    Wstar = np.linalg.solve(C, alpha * Sigma1)
    e, V = np.linalg.eigh(C)
    Ch, Cmh = (V * np.sqrt(e)) @ V.T, (V / np.sqrt(e)) @ V.T
    U, s, Vt = np.linalg.svd(Ch @ (Wstar - W0))
    return Cmh @ (U[:, :r] * s[:r]) @ Vt[:r], float(np.sum(s[r:] ** 2)), C, Wstar


def test_trained_lora_reaches_reduced_rank_regression_optimum():
    """MATH.md (19.16): Adam on the LoRA factors of a linear denoiser (population loss, exact
    gradients through (19.5)) reaches the closed-form best rank-r fine-tune: excess loss
    to 1e-6 relative, and the same dW (the optimum does not depend on alpha)."""
    rng = np.random.default_rng(10)
    D, r, alpha, sigma = 6, 2, 0.8, 0.6
    Q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    Sigma1 = (Q * np.array([3.0, 2.0, 1.0, 0.5, 0.3, 0.1])) @ Q.T
    W0 = 0.3 * rng.standard_normal((D, D))
    dstar, excess_star, C, Wstar = rrr_optimum(W0, Sigma1, alpha, sigma, r)
    d2, e2, W2 = lora_rrr_optimum(W0, Sigma1, alpha, sigma, r)
    assert np.allclose(d2, dstar, rtol=0, atol=1e-12) and e2 == pytest.approx(excess_star, rel=1e-12)
    # the closed form is optimal: rank-r perturbations X Y^T of its factors only increase the excess
    U, sv, Vt = np.linalg.svd(dstar)
    X0, Y0 = U[:, :r] * sv[:r], Vt[:r].T
    for _ in range(20):
        Wp = W0 + (X0 + 1e-3 * rng.standard_normal((D, r))) @ (Y0 + 1e-3 * rng.standard_normal((D, r))).T
        assert np.trace((Wp - Wstar).T @ C @ (Wp - Wstar)) > excess_star
    W0p = {"lin.w": W0}
    ad = lora_init(W0p, LoRAConfig(r=r, alpha=2.0), rng)
    theta, opt = dict(ad.weights), adam_init(ad.weights)
    for k in range(6000):
        a = type(ad)(theta, ad.config, ad.scaling)
        W = lora_params(W0p, a)["lin.w"]
        g = lora_grads({"lin.w": 2.0 * C @ (W - Wstar)}, a)  # d/dW tr((W - W*)^T C (W - W*))
        theta, opt = adam_update(theta, g, opt, lr=3e-3 if k < 4000 else 3e-4)
    W = lora_params(W0p, type(ad)(theta, ad.config, ad.scaling))["lin.w"]
    excess = float(np.trace((W - Wstar).T @ C @ (W - Wstar)))
    assert abs(excess - excess_star) < 1e-6 * excess_star
    assert np.max(np.abs((W - W0) - dstar)) < 1e-3


def test_adapter_checkpoint_round_trip_and_missing_alpha(tmp_path):
    """MATH.md (19.1): an adapter saved alone reloads with its alpha (same scaling, same
    effective weights); without a stored alpha, alpha = r is assumed with a warning, and an
    explicit alpha overrides that assumption."""
    net, P = _unet()
    rng = np.random.default_rng(11)
    ad = lora_init(P, LoRAConfig(r=2, alpha=8.0, targets=("mid.*",)), rng)
    ad = type(ad)({k: v + 0.1 for k, v in ad.weights.items()}, ad.config, ad.scaling)
    path = save_lora(tmp_path / "a.npz", ad, base_config=net.to_dict())
    back = load_lora(path, P, base_config=net.to_dict())
    assert back.scaling == 4.0
    for k in P:
        assert np.array_equal(lora_params(P, back)[k], lora_params(P, ad)[k])
    np.savez(tmp_path / "bare.npz", **ad.weights)  # a checkpoint without alpha
    with pytest.warns(UserWarning, match="assuming alpha = r = 2"):
        assert load_lora(tmp_path / "bare.npz", P).scaling == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_lora(tmp_path / "bare.npz", P, alpha=8.0).scaling == 4.0


def test_bad_input_is_a_clear_error(tmp_path):
    """Rank 0 or above the layer, alpha <= 0, a pattern matching no layer, an adapter loaded into
    a model of another architecture: ValueErrors that name the problem."""
    net, P = _unet()
    rng = np.random.default_rng(12)
    with pytest.raises(ValueError, match="rank r must be an int >= 1, got 0"):
        LoRAConfig(r=0)
    with pytest.raises(ValueError, match=r"rank r must be an int in \[1, min\(fan_in, fan_out\)\] = \[1, 8\]"):
        lora_init(P, LoRAConfig(r=9, targets=("temb.lin1",)), rng)
    for a in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            LoRAConfig(r=2, alpha=a)
    with pytest.raises(ValueError, match="pattern 'decoder.*' matches no linear or conv layer"):
        lora_init(P, LoRAConfig(r=1, targets=("decoder.*",)), rng)
    ad = lora_init(P, LoRAConfig(r=1, targets=("mid.res0.conv1",)), rng)
    path = save_lora(tmp_path / "a.npz", ad, base_config=net.to_dict())
    other = UNet(UNetConfig(base_channels=16, groups=2))
    P2 = other.init_params(rng, dtype="float64")
    with pytest.raises(ValueError, match="trained on a model with config"):
        load_lora(path, P2, base_config=other.to_dict())
    with pytest.raises(ValueError, match="adapts layer 'mid.res0.conv1' with base weight shape .*another architecture"):
        load_lora(path, P2)
    with pytest.raises(ValueError, match="is not in this model"):
        lora_params(P2, ad)
