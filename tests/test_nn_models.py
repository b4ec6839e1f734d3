"""The MLP and U-Net denoisers: whole-model gradients against finite differences
(parameters, class conditioning, input gradient dx), caches that do not interfere, the
model contract, configs and bad input (MATH.md (13.18), (13.19), (13.20) and (13.21)).

Tolerance of the gradient checks: float64, central differences with h = 1e-5, normwise
relative error < 1e-6 (a correct backward gives ~1e-9; see tests/test_nn_layers.py).
For the U-Net a random subset of entries of every parameter tensor is checked, so the
test stays fast while still touching every tensor (a wrong block gives O(1) errors).
The denominator of the relative error is floored at 1e-3 (gradients here are O(0.1-10)):
some gradients are zero by symmetry -- the key part of the attention qkv bias, MATH.md
(13.15), or the group-mean part of an embedding shift cancelled by GroupNorm -- and a
sampled entry there would otherwise compare rounding noise with rounding noise.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff.nn as nn
from refdiff.nn.gradcheck import check_gradient, inner
from refdiff.backend import to_numpy
from tests._support import assert_close, asx

GC_TOL = 1e-6
FLOOR = 1e-3  # see module docstring


def _perturbed(model, xp, rng, scale=0.3):
    """float64 params with every tensor perturbed (so zero-initialised layers, unit
    GroupNorm scales and zero biases do not hide wrong gradients)."""
    P = model.init_params(rng, xp=xp, dtype="float64")
    return {k: v + asx(xp, scale * rng.standard_normal(tuple(v.shape))) for k, v in P.items()}


def _per_tensor(xp, n_numpy):
    """Entries checked per tensor: fewer under array_api_strict, whose per-operation
    validation makes a U-Net forward ~10x slower (each checked entry costs 2 forwards)."""
    return n_numpy if xp is np else 1


def _check_model(xp, model, P, x, t, y, rng, per_tensor=None):
    out, cache = model.forward(P, x, t, y)
    assert out.shape == x.shape
    dout = asx(xp, rng.standard_normal(tuple(out.shape)))
    G, dx = model.backward(P, cache, dout)
    assert set(G) == set(P)
    size = int(np.prod(x.shape))
    idx = None if per_tensor is None else rng.choice(size, min(8 * per_tensor, size), replace=False)
    err = check_gradient(lambda a: inner(model.apply(P, a, t, y), dout), x, dx, indices=idx, floor=FLOOR)
    assert err < GC_TOL, f"dx: {err:.2e}"
    for k in P:
        size = int(np.prod(P[k].shape))
        idx = None if per_tensor is None else rng.choice(size, min(per_tensor, size), replace=False)
        f = lambda a, k=k: inner(model.apply({**P, k: a}, x, t, y), dout)  # noqa: E731
        err = check_gradient(f, P[k], G[k], indices=idx, floor=FLOOR)
        assert err < GC_TOL, f"{k}: {err:.2e}"


# ------------------------------------------------------------------ gradient checks
@settings(max_examples=4)
@given(n=st.integers(1, 4), dim=st.integers(1, 3), classes=st.integers(0, 3), seed=st.integers(0, 99))
def test_mlp_gradcheck(xp, n, dim, classes, seed):
    """Whole MLP MATH.md (13.18): every parameter gradient, the class table gradient and
    the input gradient dx against central differences; integer or fractional t."""
    rng = np.random.default_rng(seed)
    model = nn.MLP(nn.MLPConfig(dim=dim, hidden=6, layers=2, time_embed_dim=4, num_classes=classes))
    P = _perturbed(model, xp, rng)
    x = asx(xp, rng.standard_normal((n, dim)))
    t = asx(xp, rng.integers(0, 1000, n)) if seed % 2 else asx(xp, rng.uniform(0, 1000, n))
    y = asx(xp, rng.integers(0, classes + 1, n)) if classes else None
    _check_model(xp, model, P, x, t, y, rng)


@settings(max_examples=2)
@given(n=st.integers(1, 2), classes=st.sampled_from([0, 3]), attention=st.booleans(), seed=st.integers(0, 99))
def test_unet_gradcheck(xp, n, classes, attention, seed):
    """Whole U-Net MATH.md (13.20) and (13.21) at tiny width (4 and 8 channels, 2 groups):
    random entries of dx and of every parameter tensor (3 per tensor on NumPy, 1 under
    array_api_strict), class conditioning included, against central differences."""
    rng = np.random.default_rng(seed)
    cfg = nn.UNetConfig(base_channels=4, channel_mults=(1, 2), groups=2, time_embed_dim=8,
                        num_classes=classes, attention=attention)
    model = nn.UNet(cfg)
    P = _perturbed(model, xp, rng)
    x = asx(xp, rng.standard_normal((n, 1, 8, 8)))
    t = asx(xp, rng.integers(0, 1000, n))
    y = asx(xp, rng.integers(0, classes + 1, n)) if classes else None
    _check_model(xp, model, P, x, t, y, rng, per_tensor=_per_tensor(xp, 3))


def test_unet_gradcheck_two_blocks_rgb(xp):
    """U-Net MATH.md (13.20) with num_res_blocks = 2, 3 input channels and a 4x4 image
    (skip bookkeeping with more than one skip per level): entries of dx and of every
    parameter tensor (2 per tensor on NumPy, 1 under array_api_strict)."""
    rng = np.random.default_rng(7)
    cfg = nn.UNetConfig(in_channels=3, image_size=4, base_channels=4, groups=2, num_res_blocks=2,
                        time_embed_dim=6)
    model = nn.UNet(cfg)
    P = _perturbed(model, xp, rng)
    x = asx(xp, rng.standard_normal((2, 3, 4, 4)))
    _check_model(xp, model, P, x, asx(xp, [3.5, 100.0]), None, rng, per_tensor=_per_tensor(xp, 2))


# ------------------------------------------------------------------ caches, contract
@pytest.mark.parametrize("arch", ["mlp", "unet"])
def test_two_forwards_then_two_backwards(xp, arch):
    """Caches do not interfere: forward(a), forward(b), backward(b), backward(a) give the
    same gradients as the interleaved forward(a), backward(a), forward(b), backward(b)
    (exact equality: the same arithmetic in the same order)."""
    rng = np.random.default_rng(11)
    if arch == "mlp":
        model = nn.MLP(nn.MLPConfig(hidden=8, layers=2, time_embed_dim=4, num_classes=2))
        xs = [asx(xp, rng.standard_normal((3, 2))) for _ in range(2)]
    else:
        model = nn.UNet(nn.UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=2))
        xs = [asx(xp, rng.standard_normal((3, 1, 8, 8))) for _ in range(2)]
    P = _perturbed(model, xp, rng)
    ts = [asx(xp, [1, 5, 9]), asx(xp, [500, 2, 0])]
    ys = [asx(xp, [0, 1, 2]), asx(xp, [2, 2, 1])]
    ds = [asx(xp, rng.standard_normal(tuple(x.shape))) for x in xs]
    ref = []
    for i in range(2):
        _, c = model.forward(P, xs[i], ts[i], ys[i])
        ref.append(model.backward(P, c, ds[i]))
    caches = [model.forward(P, xs[i], ts[i], ys[i])[1] for i in range(2)]
    got = [model.backward(P, caches[i], ds[i]) for i in (1, 0)][::-1]
    for (g_ref, dx_ref), (g, dx) in zip(ref, got):
        assert_close(dx, dx_ref, xp=xp, rtol=0)
        for k in P:
            assert_close(g[k], g_ref[k], xp=xp, rtol=0)


def test_model_contract_and_conditioning(xp):
    """apply == forward's output; as_model is a plain model(x, t); y=None on a
    conditional model is the null class; different labels change the output; the
    zero-initialised output layer gives a zero output at init (MATH.md (13.20))."""
    rng = np.random.default_rng(3)
    model = nn.UNet(nn.UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=3))
    P0 = model.init_params(rng, xp=xp)
    assert P0["out.conv.w"].dtype == xp.float32
    x = asx(xp, rng.standard_normal((2, 1, 8, 8)), dtype=xp.float32)
    t = asx(xp, [10, 20])
    assert float(xp.max(xp.abs(model.apply(P0, x, t)))) == 0.0
    P = _perturbed(model, xp, rng)
    x64 = asx(xp, rng.standard_normal((2, 1, 8, 8)))
    assert_close(model.apply(P, x64, t), model.forward(P, x64, t)[0], xp=xp, rtol=0)
    assert_close(model.as_model(P)(x64, t), model.apply(P, x64, t, asx(xp, [3, 3])), xp=xp, rtol=0)
    assert_close(model.as_model(P, y=asx(xp, [0, 1]))(x64, t), model.apply(P, x64, t, asx(xp, [0, 1])),
                 xp=xp, rtol=0)
    d = model.apply(P, x64, t, asx(xp, [0, 0])) - model.apply(P, x64, t, asx(xp, [1, 1]))
    assert float(xp.max(xp.abs(d))) > 1e-3


def test_mlp_scalar_and_fractional_t(xp):
    """A Python scalar t is broadcast to (N,); integer and float timesteps of equal
    value give the same output (MATH.md (13.12) embeds t as a float)."""
    rng = np.random.default_rng(4)
    model = nn.MLP(nn.MLPConfig(hidden=8, layers=1, time_embed_dim=4))
    P = _perturbed(model, xp, rng)
    x = asx(xp, rng.standard_normal((3, 2)))
    a = model.apply(P, x, asx(xp, [7, 7, 7]))
    assert_close(model.apply(P, x, 7), a, xp=xp, rtol=1e-15)
    assert_close(model.apply(P, x, asx(xp, [7.0, 7.0, 7.0])), a, xp=xp, rtol=1e-15)
    assert not np.allclose(to_numpy(model.apply(P, x, 7.5)), to_numpy(a))


def test_init_is_namespace_independent(xp):
    """init_params draws on the host: the same seed gives the same numbers in every
    namespace and dtype (float32 = rounded float64)."""
    model = nn.MLP()
    ref = model.init_params(np.random.default_rng(0), dtype="float64")
    got = model.init_params(np.random.default_rng(0), xp=xp, dtype="float32")
    assert set(got) == set(ref)
    for k in ref:
        assert_close(got[k], ref[k].astype(np.float32), xp=xp, rtol=0)


def test_default_sizes():
    """The defaults are small: U-Net about 0.3M parameters (271,649 counted by hand in
    unet.py's docstring arithmetic), MLP about 0.1M; num_params counts every entry."""
    unet, mlp = nn.UNet(), nn.MLP()
    assert unet.num_params() == 271649
    P = mlp.init_params(np.random.default_rng(0))
    assert mlp.num_params(P) == sum(v.size for v in P.values()) == mlp.num_params()
    # MLP by hand: temb 64*128+128, in 2*128+128, 3 layers of 2*(128*128+128), out 128*2+2
    assert mlp.num_params() == 64 * 128 + 128 + 2 * 128 + 128 + 3 * 2 * (128 * 128 + 128) + 128 * 2 + 2


# ------------------------------------------------------------------ configs
def test_config_round_trip_and_build_model():
    """to_dict / from_dict / build_model round-trip both architectures (through JSON)."""
    import json

    for model in (nn.MLP(nn.MLPConfig(hidden=16, num_classes=4)),
                  nn.UNet(nn.UNetConfig(base_channels=16, channel_mults=(1, 2), num_classes=10))):
        d = json.loads(json.dumps(model.to_dict()))
        rebuilt = nn.build_model(d)
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert type(model.config).from_dict(d) == model.config
    with pytest.raises(ValueError, match="unknown arch"):
        nn.build_model({"arch": "transformer"})
    with pytest.raises(ValueError, match="'arch' key"):
        nn.build_model({"hidden": 3})
    with pytest.raises(ValueError, match="unknown MLPConfig keys"):
        nn.build_model({"arch": "mlp", "widht": 3})
    with pytest.raises(ValueError, match="expected 'unet'"):
        nn.UNetConfig.from_dict({"arch": "mlp"})


def test_config_validation():
    with pytest.raises(ValueError, match="groups=8 must divide"):
        nn.UNetConfig(base_channels=12)
    with pytest.raises(ValueError, match="at least 2 channels per group"):
        nn.UNetConfig(base_channels=8, groups=8)
    with pytest.raises(ValueError, match="image_size must be even"):
        nn.UNetConfig(image_size=7)
    with pytest.raises(ValueError, match="channel_mults"):
        nn.UNetConfig(channel_mults=(1, 0))
    with pytest.raises(ValueError, match=r"divisible by 2\^\(L-1\) = 8"):
        nn.UNetConfig(channel_mults=(1, 1, 1, 1), image_size=4, groups=2, base_channels=4)
    with pytest.raises(ValueError, match="cross_attention entries must be levels 0..1 or 'mid'"):
        nn.UNetConfig(cross_attention=(2,), vocab_size=5, context_len=3)
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        nn.MLPConfig(hidden=0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 0"):
        nn.MLPConfig(num_classes=-1)


# ------------------------------------------------------------------ bad input
def test_bad_input(xp):
    """Wrong image size, channels or rank, labels out of range, labels to an
    unconditional model, wrong t shape: ValueError naming the problem."""
    rng = np.random.default_rng(0)
    unet = nn.UNet(nn.UNetConfig(base_channels=4, groups=2, time_embed_dim=8, num_classes=3))
    P = unet.init_params(rng, xp=xp)
    t = asx(xp, [1, 2])
    good = asx(xp, np.zeros((2, 1, 8, 8)), dtype=xp.float32)
    with pytest.raises(ValueError, match=r"per-sample shape \(1, 16, 16\).*expects \(1, 8, 8\)"):
        unet.forward(P, asx(xp, np.zeros((2, 1, 16, 16))), t)
    with pytest.raises(ValueError, match=r"per-sample shape \(3, 8, 8\)"):
        unet.forward(P, asx(xp, np.zeros((2, 3, 8, 8))), t)
    with pytest.raises(ValueError, match="got rank 3"):
        unet.forward(P, asx(xp, np.zeros((2, 8, 8))), t)
    with pytest.raises(ValueError, match=r"num_classes = 3.*cond\['class'\] contains 4, out of range \[0, 3\]"):
        unet.forward(P, good, t, asx(xp, [0, 4]))
    with pytest.raises(ValueError, match=r"contains -1, out of range \[0, 3\]"):
        unet.forward(P, good, t, asx(xp, [-1, 1]))
    with pytest.raises(TypeError, match=r"cond\['class'\] must be an integer array"):
        unet.forward(P, good, t, asx(xp, [0.0, 1.0]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        unet.forward(P, good, asx(xp, [1, 2, 3]))
    mlp = nn.MLP(nn.MLPConfig(hidden=4, layers=1, time_embed_dim=4))
    Pm = mlp.init_params(rng, xp=xp)
    with pytest.raises(ValueError, match="kind 'class' is not one this model was built for.*unconditional"):
        mlp.forward(Pm, asx(xp, np.zeros((2, 2))), t, asx(xp, [0, 0]))
    with pytest.raises(ValueError, match=r"per-sample shape \(3,\)"):
        mlp.forward(Pm, asx(xp, np.zeros((2, 3))), t)
    with pytest.raises(TypeError, match="Generator"):
        mlp.init_params(0.5)
    with pytest.raises(ValueError, match="dtype"):
        mlp.init_params(rng, dtype="float16")
