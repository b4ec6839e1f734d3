"""Bad input to the layers and models of refdiff.nn is refused with a TypeError/ValueError
that names the argument (issue 19).  Each test was seen to fail before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from refdiff.nn import conv, gradcheck

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape)


def test_conv2d_forward_refuses_integer_input():
    """issue 19 finding 2: conv2d_forward with an integer x (or w, b) used to compute in
    integer arithmetic (the column matrix was built in x's integer dtype, truncating w's
    contribution); now a TypeError naming the argument."""
    x, w, b = _x(1, 2, 4, 4), _x(3, 2, 3, 3), _x(3)
    for name, bad in (("x", np.ones((1, 2, 4, 4), int)), ("w", np.ones((3, 2, 3, 3), int)),
                      ("b", np.ones(3, int)), ("x", np.ones((1, 2, 4, 4), bool)),
                      ("x", x.astype(np.complex128)), ("x", x.astype(np.float16))):
        args = {"x": x, "w": w, "b": b, name: bad}
        for fn in (conv.conv2d_forward, conv.conv2d_forward_naive):
            with pytest.raises(TypeError, match=rf"\b{name}\b must be a real floating array"):
                fn(**args)


def test_numerical_gradient_refuses_integer_point():
    """issue 19 finding 2: numerical_gradient at an integer x used to perturb a float64
    copy and hand f a point cast back to x's integer dtype (x + h rounds to x), returning a
    zero gradient; now a TypeError naming x."""
    def f(z):
        return float(np.sum(z ** 2))

    with pytest.raises(TypeError, match=r"\bx\b must be a real floating array"):
        gradcheck.numerical_gradient(f, np.arange(3))
    with pytest.raises(TypeError, match=r"\bx\b must be a real floating array"):
        gradcheck.check_gradient(f, np.arange(3), np.zeros(3))
    x = np.arange(3.0)
    assert np.allclose(gradcheck.numerical_gradient(f, x), 2 * x, atol=1e-8)  # the float path still works


@pytest.mark.parametrize("kw, name", [({"stride": 0}, "stride"), ({"stride": 1.5}, "stride"),
                                      ({"stride": True}, "stride"), ({"pad": -1}, "pad"),
                                      ({"pad": "same"}, "pad")])
def test_conv2d_forward_refuses_bad_stride_and_pad(kw, name):
    """stride and pad are integers (stride >= 1, pad >= 0); a float or bool used to reach
    a slice and fail inside NumPy."""
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        conv.conv2d_forward(_x(1, 2, 4, 4), _x(3, 2, 3, 3), _x(3), **kw)


def test_conv_backward_checks_dout_and_cache():
    """The backward passes refuse a dout that is not the forward output's shape (it used to
    be reshaped or broadcast into a wrong gradient) and a cache that is not the forward's."""
    x, w, b = _x(2, 2, 4, 4), _x(3, 2, 3, 3), _x(3)
    out, cache = conv.conv2d_forward(x, w, b)
    with pytest.raises(ValueError, match=r"\bdout\b must have the forward output's shape"):
        conv.conv2d_backward(out[:1], cache)
    with pytest.raises(TypeError, match=r"\bdout\b"):
        conv.conv2d_backward(out.astype(int), cache)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        conv.conv2d_backward(out, None)
    out, cache = conv.conv2d_forward_naive(x, w, b)
    with pytest.raises(ValueError, match=r"\bdout\b"):
        conv.conv2d_backward_naive(out[:, :, :2], cache)
    out, cache = conv.conv_transpose2d_forward(x[:, :2], _x(2, 3, 3, 3), _x(3), stride=2, output_padding=1)
    conv.conv_transpose2d_backward(out, cache)
    with pytest.raises(ValueError, match=r"\bdout\b"):
        conv.conv_transpose2d_backward(out[:, :, 1:], cache)  # 9 x 10: output_padding differs by axis


def test_layers_refuse_non_arrays_and_wrong_dtypes():
    """nn.layers (51 of 636 bad calls were clear errors in the issue's audit): None, lists,
    integer arrays and wrong ranks are refused with the argument's name, before NumPy
    fails on them (AttributeError: 'NoneType' object has no attribute 'ndim') or computes
    in integers."""
    from refdiff.nn import layers as L

    x, w, b = _x(2, 3), _x(3, 4), _x(4)
    for name, bad, err in (("x", None, TypeError), ("x", [[1.0, 2.0, 3.0]], TypeError),
                           ("w", np.ones((3, 4), int), TypeError), ("b", "bias", TypeError),
                           ("x", _x(2, 3, 1), ValueError)):
        with pytest.raises(err, match=rf"\b{name}\b"):
            L.linear_forward(**{"x": x, "w": w, "b": b, name: bad})
    out, cache = L.linear_forward(x, w, b)
    with pytest.raises(ValueError, match=r"\bdout\b"):
        L.linear_backward(out.T, cache)
    with pytest.raises(TypeError, match=r"\bt\b"):
        L.timestep_embedding_forward(np.array([True, False]), 8)
    with pytest.raises(TypeError, match=r"\bdim\b"):
        L.timestep_embedding_forward(np.arange(3), 8.0)
    with pytest.raises(ValueError, match=r"\bmax_period\b"):
        L.timestep_embedding_forward(np.arange(3), 8, max_period=float("nan"))
    with pytest.raises(TypeError, match=r"\bdtype\b"):
        L.timestep_embedding_forward(np.arange(3), 8, dtype=np.int64)
    assert L.timestep_embedding_forward(np.arange(3), 8, dtype=np.float64)[0].dtype == np.float64
    with pytest.raises(TypeError, match=r"\by\b must be an integer array"):
        L.embedding_forward(np.array([0.0, 1.0]), _x(3, 2))  # float labels used to index silently
    with pytest.raises(TypeError, match=r"\bb\b"):
        L.concat_forward(_x(1, 2, 2, 2), None)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        L.concat_backward(_x(1, 4, 2, 2), None)


def test_activations_norms_and_resampling_refuse_bad_input():
    """float16 and integer x, a float groups count, NaN eps, a dout that is not the
    output's shape (it used to broadcast into a gradient of the wrong shape) and a cache
    from another layer are refused by name."""
    from refdiff.nn import activations as A, norm as N, resample as R

    with pytest.raises(TypeError, match=r"\bx\b"):
        A.silu_forward(_x(2, 3).astype(np.float16))  # used to be accepted (float16 is refused)
    out, cache = A.silu_forward(_x(2, 3))
    with pytest.raises(ValueError, match=r"\bdout\b"):
        A.silu_backward(_x(1, 3), cache)  # broadcast before
    out, cache = A.gelu_forward(_x(2, 3))
    with pytest.raises(ValueError, match=r"\bdout\b"):
        A.gelu_backward(_x(3), cache)
    with pytest.raises(TypeError, match=r"\bb\b"):
        A.geglu_forward(_x(2, 3), _x(3, 4), None)
    x, g, b = _x(2, 4, 3, 3), np.ones(4), np.zeros(4)
    with pytest.raises(TypeError, match=r"\bgroups\b"):
        N.groupnorm_forward(x, g, b, 2.0)
    with pytest.raises(ValueError, match=r"\beps\b"):
        N.groupnorm_forward(x, g, b, 2, eps=float("nan"))
    with pytest.raises(TypeError, match=r"\bgamma\b"):
        N.groupnorm_forward(x, None, b, 2)
    out, cache = N.layernorm_forward(_x(2, 3))
    with pytest.raises(ValueError, match=r"\bdout\b"):
        N.layernorm_backward(_x(1, 3), cache)
    with pytest.raises(TypeError, match=r"\bemb\b"):
        N.adaln_forward(_x(2, 3, 4), np.ones((2, 5), int), _x(5, 8), _x(8))
    with pytest.raises(TypeError, match=r"\bpatch\b"):
        R.patchify_forward(_x(1, 1, 4, 4), 2.0)
    out, cache = R.upsample2x_forward(_x(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"\bdout\b"):
        R.upsample2x_backward(_x(1, 1, 3, 4), cache)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        R.pixel_shuffle_backward(_x(1, 1, 4, 4), None)
    with pytest.raises(TypeError, match=r"\bsize\b"):
        R.unpatchify_forward(_x(1, 4, 4), 2, 4)


def test_networks_refuse_bad_x_t_config_and_params():
    """Model-level entry points check x, t, params and their config once at the top:
    before, x = None died in NumPy (AttributeError), a bool t was used as a time, a config
    field given as a string or a bool was accepted, and DiT.guided accepted a NaN scale."""
    from refdiff.nn import DiT, DiTConfig, MLP, MLPConfig, UNetConfig

    net = MLP(MLPConfig(dim=3, hidden=8, layers=1, time_embed_dim=4))
    P = net.init_params(np.random.default_rng(0), dtype="float64")
    t = np.array([0.2, 0.5])
    with pytest.raises(TypeError, match=r"\bx\b must be a real floating array"):
        net.forward(P, None, t)
    with pytest.raises(TypeError, match=r"\bt\b"):
        net.forward(P, _x(2, 3), np.array([True, False]))
    with pytest.raises(ValueError, match=r"\bt\b must have shape \(2,\)"):
        net.forward(P, _x(2, 3), np.array([0.2, 0.5, 0.7]))
    with pytest.raises(TypeError, match=r"\bparams\b"):
        net.forward("params", _x(2, 3), t)
    out, cache = net.forward(P, _x(2, 3), t)
    with pytest.raises(TypeError, match=r"\bcache\b"):
        net.backward(P, cache[:3], out)
    with pytest.raises(TypeError, match=r"\bhidden\b"):
        MLPConfig(hidden="8")
    with pytest.raises(TypeError, match=r"\battention\b"):
        UNetConfig(attention="yes")
    with pytest.raises(TypeError, match=r"\bconfig\b"):
        MLP("config")
    dit = DiT(DiTConfig(image_size=4, width=8, heads=2, depth=1, num_classes=2, freq_dim=4))
    Pd = dit.init_params(np.random.default_rng(0), dtype="float64")
    with pytest.raises(ValueError, match=r"\bguidance_scale\b"):
        dit.guided(Pd, {"class": np.array([0, 1])}, float("nan"))


def test_blocks_and_classifier_refuse_bad_input():
    """Blocks name a missing parameter prefix (KeyError before) and a dout of the wrong shape
    (broadcast before); classify refuses NaN pixels, which argmax would turn into a label."""
    from refdiff.nn import blocks as B, classifier as C

    P = {}
    B.attnblock_init(P, "ab", 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\bpre\b = 'nope'"):
        B.attnblock_forward(P, "nope", _x(2, 4, 3, 3), 2)
    out, cache = B.attnblock_forward(P, "ab", _x(2, 4, 3, 3), 2)
    with pytest.raises(ValueError, match=r"\bdout\b"):
        B.attnblock_backward({}, P, "ab", out[:, :, :1], cache)
    params = C.classifier_init(np.random.default_rng(0), n_in=6, hidden=(5,), n_classes=3)
    x = _x(2, 6)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"\bx\b contains NaN"):
        C.classify(params, x)
    with pytest.raises(TypeError, match=r"\bn_in\b"):
        C.classifier_init(np.random.default_rng(0), n_in="6")


def test_optim_conditions_lora_refuse_what_they_used_to_accept():
    """Each of these was computed before (an infinite learning rate, a fractional step, a
    string class count, a negative one, a truthy string for a flag, a mask of the wrong
    shape broadcast into the LoRA input) and is now a TypeError/ValueError naming it."""
    from refdiff.nn import conditions as Cd, lora as Lr, optim as O

    P = {"w": _x(3, 2)}
    with pytest.raises(ValueError, match=r"\blr\b"):
        O.adam_update(P, {"w": _x(3, 2)}, O.adam_init(P), lr=float("inf"))
    with pytest.raises(TypeError, match=r"\bstep\b"):
        O.ema_decay_warmup(2.5, 0.99)
    with pytest.raises(TypeError, match=r"\binplace\b"):
        O.FlatAdam(inplace="no")
    with pytest.raises(TypeError, match=r"\bgrads\b\['w'\]"):
        O.global_norm({"w": np.ones(3, int)})
    with pytest.raises(TypeError, match=r"\bnum_classes\b"):
        Cd.ClassCond("3")
    with pytest.raises(ValueError, match=r"\bnum_classes\b"):
        Cd.ClassCond(-1)
    x, w, b, A, B = _x(2, 3), _x(3, 5), _x(5), _x(4, 3), _x(5, 4)
    with pytest.raises(ValueError, match=r"\bmask\b"):
        Lr.lora_linear_forward(x, w, b, A, B, 0.5, mask=np.ones((1, 3)))
    with pytest.raises(TypeError, match=r"\brslora\b"):
        Lr.lora_scaling(8.0, 4, rslora="yes")


def test_text_vae_video_adapters_refuse_what_they_used_to_accept():
    """Before: a string channel count built an encoder, embeddings of different widths died
    in a NumPy matmul, x_hat broadcast against x in the VAE loss, a string rng was ignored,
    a truthy string flag configured a video model, K = 2.5 reached np.arange, an integer
    array went through the tuned SiLU and the Winograd convolution."""
    from refdiff.nn import controlnet as Cn, fast as F, text as Tx, vae as Va, video as V, winograd as W

    with pytest.raises(TypeError, match=r"\bin_channels\b"):
        Tx.ImageEncoder(in_channels="1")
    with pytest.raises(ValueError, match=r"\bimg_emb\b.*\btxt_emb\b"):
        Tx.contrastive_loss(_x(3, 4), _x(3, 5), 0.0)
    with pytest.raises(ValueError, match=r"\bx\b.*\bx_hat\b"):
        Va.vae_loss_forward(_x(2, 3), _x(1, 3), np.ones(2), beta=1.0)
    ae = Va.KLAutoencoder(Va.KLAutoencoderConfig(image_size=8, width=4, latent_channels=2))
    P = ae.init_params(np.random.default_rng(0), dtype="float64")
    with pytest.raises((TypeError, ValueError), match=r"\brng\b|seed"):
        ae.encode(P, _x(2, 1, 8, 8), rng="seed")
    with pytest.raises(TypeError, match=r"\btemporal_pos\b"):
        V.VideoConfig(temporal_pos="yes")
    with pytest.raises(TypeError, match=r"\bK\b"):
        Cn.controlnet_scales(2.5)
    with pytest.raises(ValueError, match=r"\bconditioning_scale\b"):
        Cn.controlnet_scales(3, float("nan"))
    with pytest.raises(TypeError, match=r"\bx\b"):
        F.silu_forward(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match=r"\bxT\b"):
        W.conv3x3_forward(np, np.ones((3, 5, 5, 2), int), _x(4, 3, 3, 3), _x(4), 2)
