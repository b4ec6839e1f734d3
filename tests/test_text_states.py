"""The U-Net conditioned on a frozen text encoder's states (condition kind ``text_states``,
as Stable Diffusion attends to CLIP's states): gradients against central differences, mask
invariance, the null = the empty prompt's states under the same encoder (in condition
dropout and both CFG conventions), checkpoints, `refdiff txt2img`, and bad input.
MATH.md (13.17), (13.23), (12.7), (12.3)."""

import numpy as np
import pytest

import refdiff
from refdiff.captions import VOCAB, captioned_digits
from refdiff.cli import main
from refdiff.latent import latent_scaling, scale_latents
from refdiff.nn import UNet, UNetConfig
from refdiff.nn.gradcheck import check_directional
from refdiff.nn.text import TextEncoder, TextEncoderConfig, Tokenizer
from refdiff.nn.vae import KLAutoencoder, KLAutoencoderConfig
from refdiff.train import train
from refdiff.txt2img import (encode_prompts, load_text_encoder, null_text_states, save_autoencoder,
                             save_text_encoder, txt2img)

CTX, D_TEXT = 10, 8
PROMPTS = ["a thick three in the top left", "a thin seven at the bottom right"]


@pytest.fixture(scope="module")
def clip():
    tok = Tokenizer(VOCAB, CTX)
    enc = TextEncoder(TextEncoderConfig(tok.vocab_size, CTX, dim=D_TEXT, heads=2, layers=1, embed_dim=4))
    return enc, enc.init_params(np.random.default_rng(3)), tok


def _unet(clip, **kw):
    states, mask = null_text_states(*clip)
    cfg = dict(base_channels=4, channel_mults=(1, 2), groups=2, time_embed_dim=8, cross_attention=(0, 1, "mid"),
               context_kind="text_states", context_len=CTX, context_dim=D_TEXT, heads=2,
               null_context=states.tolist(), null_context_mask=mask.tolist())
    cfg.update(kw)
    return UNet(UNetConfig(**cfg))


def _perturbed(model, rng, scale=0.3):
    P = model.init_params(rng, dtype="float64")
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in P.items()}


def test_text_states_unet_gradcheck_with_mask(clip):
    """MATH.md (13.17), (13.23): central differences (float64, random directions over every
    parameter and the input) agree with the hand-written backward of a U-Net whose
    cross-attention at both levels and the middle reads a frozen encoder's states through
    a key-padding mask, to < 1e-6; and the parameters are the U-Net's own (no token or
    position embedding: the encoder is not part of the denoiser)."""
    rng = np.random.default_rng(0)
    model = _unet(clip)
    P = _perturbed(model, rng)
    assert not any(k in P for k in ("token_emb", "pos_emb"))
    cond = encode_prompts(*clip, PROMPTS)
    assert not cond["text_mask"].all()  # the prompts are padded
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([3.0, 40.0])
    out, cache = model.forward(P, x, t, cond)
    dout = rng.standard_normal(out.shape)
    G, dx = model.backward(P, cache, dout)

    def loss(pt):
        return float(np.sum(model.forward({k[2:]: v for k, v in pt.items() if k != "x"}, pt["x"], t, cond)[0] * dout))

    err = check_directional(loss, {**{"p/" + k: v for k, v in P.items()}, "x": x},
                            {**{"p/" + k: v for k, v in G.items()}, "x": dx}, np.random.default_rng(1), n_dirs=4)
    assert err < 1e-6, err


def test_padded_states_do_not_change_the_output(clip):
    """MATH.md (13.23): states at masked-out positions get attention weight 0, so replacing
    them by anything leaves the output bit-identical, while changing a kept position's state
    moves it."""
    rng = np.random.default_rng(2)
    model = _unet(clip)
    P = _perturbed(model, rng)
    cond = encode_prompts(*clip, PROMPTS)
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([5.0, 70.0])
    out = model.apply(P, x, t, cond)
    s = cond["text_states"].copy()
    s[~cond["text_mask"]] = 100.0 * rng.standard_normal((int((~cond["text_mask"]).sum()), D_TEXT))
    assert np.array_equal(model.apply(P, x, t, {**cond, "text_states": s}), out)
    s = cond["text_states"].copy()
    s[:, 1] += 1.0  # position 1 is a word of both prompts
    assert np.max(np.abs(model.apply(P, x, t, {**cond, "text_states": s}) - out)) > 1e-3


def test_null_is_the_empty_prompts_states_in_dropout_and_cfg(clip):
    """MATH.md (12.7), (12.3): the null condition is the empty prompt "" run through the same
    frozen encoder (BOS, EOS kept, the rest masked): cond=None, condition dropout with p = 1
    and the unconditional branch of CFG all give the output of the encoded empty prompt; the
    guided output is u + w (c - u) ('w') and c + w (c - u) ('1+w') with u, c computed by hand."""
    enc, EP, tok = clip
    rng = np.random.default_rng(4)
    model = _unet(clip)
    P = _perturbed(model, rng)
    x, t = rng.standard_normal((2, 1, 8, 8)), np.array([10.0, 60.0])
    empty = encode_prompts(enc, EP, tok, ["", ""])
    assert empty["text_mask"].sum(axis=1).tolist() == [2, 2]
    u = model.apply(P, x, t, empty)
    np.testing.assert_array_equal(model.apply(P, x, t, None), u)
    cond = encode_prompts(enc, EP, tok, PROMPTS)
    dropped = model.cond_spec.drop(cond, 1.0, np.random.default_rng(0), 2, np, np.float64)
    np.testing.assert_array_equal(dropped["text_states"], empty["text_states"])
    np.testing.assert_array_equal(dropped["text_mask"], empty["text_mask"])
    kept = model.cond_spec.drop(cond, 0.0, np.random.default_rng(0), 2, np, np.float64)
    np.testing.assert_array_equal(kept["text_states"], cond["text_states"])
    c = model.apply(P, x, t, cond)
    assert np.max(np.abs(c - u)) > 1e-3
    from refdiff.guidance import guided_model

    for conv, want in (("w", u + 3.0 * (c - u)), ("1+w", c + 3.0 * (c - u))):
        g = guided_model(model, P, cond, 3.0, convention=conv)
        np.testing.assert_allclose(g(x, t), want, rtol=1e-12, atol=1e-12)


def test_config_round_trip_and_checkpoint(clip, tmp_path):
    """The config (with the null states) survives to_dict/from_dict and a training checkpoint:
    the loaded model gives the same output, and its null is still the empty prompt's."""
    model = _unet(clip)
    assert UNetConfig.from_dict(model.config.to_dict()) == model.config
    cond = encode_prompts(*clip, PROMPTS * 2)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8))
    res = train(model, (x, cond), schedule=refdiff.make_schedule("linear", 50), steps=2, batch_size=4,
                progress=False, out_dir=tmp_path / "m", eval_size=0, cond_dropout=0.5, dtype="float64")
    loaded, _ = refdiff.load(tmp_path / "m")
    assert loaded.net.config == model.config
    t = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(loaded.net.apply(loaded.params, x, t, cond), model.apply(res.ema_params, x, t, cond),
                               rtol=1e-12)


@pytest.mark.parametrize("change, match, exc", [
    (lambda c: {**c, "text_states": c["text_states"][:, :, :-1]}, r"width 7, the model's d_text is 8", ValueError),
    (lambda c: {**c, "text_states": c["text_states"][:, :-1], "text_mask": c["text_mask"][:, :-1]},
     r"L = 9 positions, the model's context length is 10", ValueError),
    (lambda c: {**c, "text_mask": c["text_mask"][:, :-1]}, r"cond\['text_mask'\] must have shape \(N, L\) = "
     r"\(2, 10\)", ValueError),
    (lambda c: {**c, "text_states": np.zeros((2, CTX, D_TEXT), dtype=np.int64)}, r"cond\['text_states'\] must "
     r"be a float array", TypeError),
    (lambda c: {**c, "text_mask": c["text_mask"].astype(np.int64)}, r"cond\['text_mask'\] must be boolean",
     TypeError),
    (lambda c: {**c, "text_mask": np.zeros((2, CTX), dtype=bool)}, r"masks out every position", ValueError),
    (lambda c: {"text_states": c["text_states"][0]}, r"cond\['text_states'\] must have shape \(N, L, d_text\)",
     ValueError),
    (lambda c: {"tokens": np.zeros((2, CTX), dtype=np.int64)}, r"condition kind 'tokens' is not one", ValueError),
])
def test_bad_text_states_are_clear_errors(clip, change, match, exc):
    """Wrong d_text, wrong L, a mask of the wrong shape or dtype, int states, an empty mask
    and token ids given to a text-states model: errors naming the argument and the expected value."""
    model = _unet(clip)
    P = model.init_params(np.random.default_rng(0), dtype="float64")
    cond = encode_prompts(*clip, PROMPTS)
    with pytest.raises(exc, match=match):
        model.apply(P, np.zeros((2, 1, 8, 8)), np.array([1.0, 2.0]), change(cond))


def test_bad_config_is_a_clear_error(clip):
    """A text-states U-Net without the empty prompt's states, or with states of the wrong
    shape, and an unknown context kind are errors naming the field."""
    with pytest.raises(ValueError, match="UNetConfig.null_context"):
        _unet(clip, null_context=())
    with pytest.raises(ValueError, match=r"null_states must have shape \(context_len, d_text\) = \(10, 6\)"):
        _unet(clip, context_dim=6)
    with pytest.raises(ValueError, match="context_kind must be 'tokens' or 'text_states'"):
        _unet(clip, context_kind="clip")


def test_txt2img_with_a_frozen_text_encoder(clip, tmp_path, capsys):
    """MATH.md (12.3): `refdiff txt2img` on a folder whose U-Net attends to the frozen
    encoder's states encodes the prompt with the stored encoder: the one-call result equals
    sampling by hand with encode_prompts' states, '1+w' at 2 equals 'w' at 3, and the CLI
    writes the images; without text_encoder.npz it is a clear error."""
    enc, EP, tok = clip
    root = tmp_path / "sd"
    data = captioned_digits(16, np.random.default_rng(0))
    ae = KLAutoencoder(KLAutoencoderConfig(latent_channels=2, width=4))
    AP = ae.init_params(np.random.default_rng(1))
    z = ae.encode(AP, data["x"].astype(np.float32))
    f, d = latent_scaling(z, "ldm")
    net = _unet(clip, in_channels=2, image_size=4, base_channels=8, groups=4, cross_attention=(1,))
    train(net, (scale_latents(z, f, d).astype(np.float64), encode_prompts(enc, EP, tok, data["captions"])),
          schedule=refdiff.make_schedule("linear", 100), steps=2, batch_size=8, progress=False,
          out_dir=root / "unet", eval_size=0, cond_dropout=0.2)
    save_autoencoder(root / "autoencoder.npz", ae, AP, scaling_factor=f, shift=d, tokenizer=tok)
    save_text_encoder(root / "text_encoder.npz", enc, EP, tok)
    enc2, EP2, tok2 = load_text_encoder(root / "text_encoder.npz")
    assert enc2.config == enc.config and tok2.words == tok.words and all(np.array_equal(EP[k], EP2[k]) for k in EP)
    a = txt2img(PROMPTS[0], root, n=2, steps=3, guidance_scale=3.0, rng=np.random.default_rng(5))
    b = txt2img(PROMPTS[0], root, n=2, steps=3, guidance_scale=2.0, convention="1+w", rng=np.random.default_rng(5))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    model, _ = refdiff.load(root / "unet")
    rng = np.random.default_rng(5)
    zT = np.asarray(rng.standard_normal((2, 2, 4, 4)), dtype=np.float32)
    cond = encode_prompts(enc, {k: v.astype(np.float32) for k, v in EP.items()}, tok, [PROMPTS[0]] * 2)
    zz = refdiff.sample(model.bind(cond, guidance_scale=3.0), zT, model.schedule, refdiff.timesteps(100, 3, "trailing"),
                        "ddim", prediction_type=model.prediction_type, rng=rng)
    by_hand = ae.decode({k: np.asarray(v, dtype=np.float64) for k, v in AP.items()}, np.asarray(zz, np.float64) / f + d)
    np.testing.assert_allclose(a, by_hand, rtol=1e-5, atol=1e-5)
    out = tmp_path / "x.npz"
    assert main(["txt2img", PROMPTS[1], "--checkpoint", str(root), "--n", "2", "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    with np.load(out) as fz:
        assert fz["images"].shape == (2, 1, 16, 16) and np.all(np.isfinite(fz["images"]))
    (root / "text_encoder.npz").unlink()
    assert main(["txt2img", PROMPTS[1], "--checkpoint", str(root), "--out", str(tmp_path / "y.npz")]) == 2
    assert "text_encoder.npz" in capsys.readouterr().err
