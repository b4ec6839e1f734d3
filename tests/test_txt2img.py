"""Text to image end to end (refdiff.txt2img and `refdiff txt2img`) on a tiny model folder:
the one-call pipeline, both CFG scale conventions (MATH.md (12.3): '1+w' at w equals 'w'
at w + 1), decoding with the inverse latent scaling (MATH.md (21.9)) and bad prompts."""

import numpy as np
import pytest

import refdiff
from refdiff.captions import VOCAB, captioned_digits
from refdiff.cli import main
from refdiff.latent import latent_scaling, scale_latents
from refdiff.nn import UNet, UNetConfig
from refdiff.nn.text import Tokenizer
from refdiff.nn.vae import KLAutoencoder, KLAutoencoderConfig
from refdiff.train import train
from refdiff.txt2img import load_autoencoder, save_autoencoder, txt2img

PROMPT = "a thick three in the top left"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("toysd")
    tok = Tokenizer(VOCAB, 10)
    data = captioned_digits(32, np.random.default_rng(0))
    ae = KLAutoencoder(KLAutoencoderConfig(latent_channels=2, width=4))
    P = ae.init_params(np.random.default_rng(1))
    z = ae.encode(P, data["x"].astype(np.float32))
    f, d = latent_scaling(z, "sd3")
    ids, mask = tok(data["captions"])
    net = UNet(UNetConfig(in_channels=2, image_size=4, base_channels=8, channel_mults=(1, 2), attention=False,
                          groups=4, cross_attention=(1,), vocab_size=tok.vocab_size, context_len=10, context_dim=8,
                          heads=2))
    train(net, (scale_latents(z, f, d).astype(np.float64), {"tokens": ids, "token_mask": mask}),
          schedule=refdiff.make_schedule("linear", 100), steps=2, batch_size=8, progress=False,
          out_dir=root / "unet", eval_size=0, cond_dropout=0.2)
    save_autoencoder(root / "autoencoder.npz", ae, P, scaling_factor=f, shift=d, tokenizer=tok)
    return root, ae, P, f, d


def test_txt2img_pipeline_and_both_conventions(folder):
    """MATH.md (12.3) and MATH.md (21.9): one call gives decoded images; '1+w' at scale 2
    equals 'w' at scale 3 from the same seed; the result is decode(z / f + shift) of the
    sampled latents (checked by re-decoding the same latents by hand)."""
    root, ae, P, f, d = folder
    a = txt2img(PROMPT, root, n=3, steps=3, guidance_scale=3.0, rng=np.random.default_rng(5))
    b = txt2img(PROMPT, root, n=3, steps=3, guidance_scale=2.0, convention="1+w", rng=np.random.default_rng(5))
    assert a.shape == (3, 1, 16, 16) and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ae2, P2, meta = load_autoencoder(root / "autoencoder.npz")
    assert meta["scaling_factor"] == f and meta["shift"] == d and meta["tokenizer"].words == tuple(VOCAB)
    model, _ = refdiff.load(root / "unet")
    tok = meta["tokenizer"]
    ids, mask = tok([PROMPT] * 3)
    rng = np.random.default_rng(5)
    zT = np.asarray(rng.standard_normal((3, 2, 4, 4)), dtype=np.float32)
    z = refdiff.sample(model.bind({"tokens": ids, "token_mask": mask}, guidance_scale=3.0), zT, model.schedule,
                       refdiff.timesteps(100, 3, "trailing"), "ddim", prediction_type=model.prediction_type, rng=rng)
    by_hand = ae.decode({k: np.asarray(v, dtype=np.float64) for k, v in P.items()},
                        np.asarray(z, dtype=np.float64) / f + d)
    np.testing.assert_allclose(a, by_hand, rtol=1e-5, atol=1e-5)


def test_txt2img_cli_and_bad_prompts(folder, tmp_path, capsys):
    """`refdiff txt2img` writes the images; an out-of-vocabulary prompt and a prompt longer
    than the context are one-line errors (exit status 2) naming the problem."""
    root = folder[0]
    out = tmp_path / "x.npz"
    assert main(["txt2img", PROMPT, "--checkpoint", str(root), "--n", "2", "--steps", "2", "--out", str(out),
                 "--no-progress"]) == 0
    with np.load(out) as f:
        assert f["images"].shape == (2, 1, 16, 16)
    out = tmp_path / "y.npz"  # x.npz exists now: refused without --overwrite (issue 19 finding 8)
    assert main(["txt2img", "a purple three", "--checkpoint", str(root), "--out", str(out)]) == 2
    assert "out-of-vocabulary words ['purple']" in capsys.readouterr().err
    assert main(["txt2img", PROMPT + " a thick", "--checkpoint", str(root), "--out", str(out)]) == 2
    assert "more than the context length 10" in capsys.readouterr().err
    assert main(["txt2img", PROMPT, "--checkpoint", str(tmp_path), "--out", str(out)]) == 2
