"""Every figure-writing script in examples/ runs at its ``--tiny`` size and writes the
PNG files it promises (the README's gallery is made by these scripts at full size)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> the files it promises (None: whatever PNGs it reports writing, at least one)
FIGURE_SCRIPTS = {
    "forward_process": ["forward_digits.png", "forward_2d.png"],
    "schedules": ["schedules.png"],
    "score_field": ["score_field.png"],
    "trajectories_2d": ["trajectories_2d.png"],
    "cfg_digits": ["cfg_digits.png", "cfg_tradeoff.png", "cfg_digits.json"],
    "elbo_breakdown": ["elbo_breakdown.png"],
    "sampler_orders": None,
    "frequency_snr": ["frequency_snr.png"],
    "predicted_noise": ["predicted_noise.png"],
    "fast_generation": ["fast_generation.png", "fast_generation.json", "fast_generation.md"],
    "lcm_digits": ["lcm_digits.png", "lcm_digits.json"],
    "adapters_controlnet_gaussian": ["controlnet_gaussian.png", "controlnet_scale_sweep.png", "controlnet_guidance_sweep.png",
                                     "controlnet_gaussian.json"],
    "adapters_lora_mixture": ["lora_mixture.png", "lora_mixture.json"],
    "adapters_controlnet_digits": ["controlnet_digits.png", "controlnet_digits.json"],
    "adapters_lora_digits": ["lora_digits.png", "lora_digits_quality.png", "lora_digits_compose.png",
                             "lora_digits.json", "lora_digits.md"],
    "editing_gaussian": ["editing_img2img.png", "editing_outpaint.png", "editing_inpaint_table.md"],
    "editing_digits": ["editing_digits_inpaint.png", "editing_digits_swap.png", "editing_digits_img2img.png",
                       "editing_digits_outpaint.png",
                       "editing_digits.json"],
    "toy_sd": ["toy_sd_prompts.png", "toy_sd_guidance.png", "toy_sd_clip_adversarial.png", "toy_sd.json"],
    "dit_digits": ["dit_digits.png", "dit_digits.json", "dit_digits.md"],
    "video": ["video_clips.png", "video.gif", "video.json"],
    "video_samplers": ["video_samplers.png", "video_samplers.json"],
}
# scripts that write no figures (they print numbers); run by their own tests below or elsewhere
OTHER_SCRIPTS = {"mixture_floor", "verify_other_framework", "one_denoising_step"}
OTHER_SCRIPTS |= {"dit_mixture_floor", "dit_mmdit_captions"}

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _load(name):
    path = EXAMPLES / f"{name}.py"
    if not path.exists():
        pytest.skip(f"examples/{name}.py is not in this checkout yet")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_script_is_registered():
    """A new script in examples/ must be listed here, so none goes untested."""
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    unknown = scripts - set(FIGURE_SCRIPTS) - OTHER_SCRIPTS
    assert not unknown, f"register these examples in tests/test_examples.py: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(FIGURE_SCRIPTS))
def test_example_runs_tiny_and_writes_its_figures(name, tmp_path, capsys):
    mod = _load(name)
    out = tmp_path / name
    mod.main(["--tiny", "--out", str(out)])
    printed = capsys.readouterr().out
    promised = FIGURE_SCRIPTS[name]
    if promised is None:
        promised = sorted(p.name for p in out.glob("*.png"))
        assert promised, f"{name} wrote no PNG into {out}"
    for fname in promised:
        f = out / fname
        assert f.exists() and f.stat().st_size > 0, f"{name} did not write {fname}"
        if fname.endswith(".png"):
            assert f.read_bytes()[:8] == PNG_MAGIC, f"{fname} is not a PNG file"
            assert fname in printed, f"{name} should print the path of {fname}"


def test_eight_by_eight_falls_back_to_shapes_without_sklearn(monkeypatch, capsys):
    """Without scikit-learn the 8x8 examples say so and use the procedural shapes."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import _common
    finally:
        sys.path.remove(str(EXAMPLES))
    monkeypatch.setattr(_common, "have_sklearn", lambda: False)
    x, y, name = _common.eight_by_eight("train", n_shapes=50)
    assert name == "shapes8x8" and x.shape == (50, 1, 8, 8) and y.shape == (50,)
    assert "scikit-learn is not installed" in capsys.readouterr().err


def test_mixture_floor_runs_small_and_no_model_beats_the_floor(capsys):
    """examples/mixture_floor.py at a seconds-long size (20 updates, T = 100; it failed
    for --steps <= 100 before, its fixed 100 warm-up steps exceeding the run): the floor
    E||eps - E[eps | x_t]||^2 of the exact oracle, MATH.md (14.18), is the least MSE of any
    eps-predictor, so a barely trained MLP's held-out MSE on the same 4000 draws lies above
    it (a 20-step model is far from the oracle: ratio > 1 with a wide margin)."""
    mod = _load("mixture_floor")
    out = mod.main(["--steps", "20", "--n-heldout", "4000", "--T", "100", "--hidden", "16", "--layers", "1"])
    assert 0.0 < out["floor"] < 1.0
    assert out["ratio_raw"] > 1.0 and out["ratio_ema"] > 1.0
    assert len(out["by_t_quartile"]) == 4
    assert "held-out eps-MSE floor" in capsys.readouterr().out


def test_per_frequency_snr_is_exact_for_gaussian_data_with_a_known_spectrum():
    """examples/frequency_snr.py: for Gaussian data whose DCT coefficients are independent
    with variances s_k, the forward process (MATH.md (2.4)) gives c_t,k = alpha_t c_0,k +
    sigma_t (F eps)_k with F eps ~ N(0, I) (F orthogonal), so Var(c_t,k) = alpha_bar_t s_k +
    1 - alpha_bar_t, i.e. the SNR formula.  Monte Carlo at N = 20000: each sample variance is
    within 5 standard errors (sd of a sample variance: var sqrt(2 / N))."""
    mod = _load("frequency_snr")
    import refdiff

    D = mod.dct_basis(8)
    np.testing.assert_allclose(D @ D.T, np.eye(8), atol=1e-13)  # orthonormal
    rng = np.random.default_rng(0)
    s = np.exp(-0.5 * np.add.outer(np.arange(8), np.arange(8)))  # decaying spectrum
    N = 20000
    c0 = rng.standard_normal((N, 8, 8)) * np.sqrt(s)
    x0 = np.einsum("ik,nkl,lj->nij", D.T, c0, D)[:, None]  # (N, 1, 8, 8): images with spectrum s
    np.testing.assert_allclose(mod.spectrum(x0), s, rtol=5 * np.sqrt(2 / N))
    sched = refdiff.make_schedule("linear", 1000)
    for t in (50, 300, 700):
        xt = refdiff.q_sample(sched, x0, t, rng.standard_normal(x0.shape))
        var_t = mod.spectrum(xt)
        ab = sched.alpha_bars[t]
        snr = mod.per_frequency_snr(s, np.array([ab]))[0]
        np.testing.assert_allclose(var_t, (1 - ab) * (snr + 1), rtol=5 * np.sqrt(2 / N))
    # high frequencies drown first: the SNR = 1 crossing moves to smaller t as the band grows
    snr_all = mod.per_frequency_snr(s, sched.alpha_bars)
    t_star = [int(np.argmax(snr_all[:, b, 0] < 1)) for b in range(8)]
    assert all(a > b for a, b in zip(t_star, t_star[1:]))


def test_one_denoising_step_by_hand_equals_ddpm_step(capsys):
    """examples/one_denoising_step.py: the three printed operations (predict the noise,
    subtract the scaled noise, add fresh noise; MATH.md (8.1)-(8.2)) reproduce
    refdiff.ddpm_step to float64 round-off, at several t, and every number is printed."""
    mod = _load("one_denoising_step")
    for t in (1, 300, 999):
        assert mod.main(["--t", str(t)]) < 1e-12
    printed = capsys.readouterr().out
    assert "eps_hat" in printed and "x_{t-1}" in printed and printed.count("=") > 20


def test_dit_mixture_floor_runs_tiny(tmp_path):
    """examples/dit_mixture_floor.py --tiny: a few updates; no model beats the exact floor
    E||eps - E[eps|x_t]||^2 of the template mixture (MATH.md (14.18)), and the untrained-ish model is
    near the zero model's loss."""
    mod = _load("dit_mixture_floor")
    out = mod.main(["--tiny", "--out", str(tmp_path)])
    assert (tmp_path / "dit_mixture_floor.json").exists()
    assert out["mse_raw"] > out["floor"] and out["mse_ema"] > out["floor"]


def test_dit_mmdit_captions_runs_tiny(tmp_path):
    """examples/dit_mmdit_captions.py --tiny trains both text-conditioned models a few steps and writes
    its table; adherence is a fraction in [0, 1]; the grammar pads plain captions (mask False)."""
    mod = _load("dit_mmdit_captions")
    import numpy as np

    c = mod.captions(np.array([3, 3]), np.array([0, 1]))
    assert c["tokens"].tolist() == [[0, 4, 0], [0, 11, 4]] and c["token_mask"].tolist() == [[True, True, False],
                                                                                              [True, True, True]]
    rows = mod.main(["--tiny", "--out", str(tmp_path)])
    assert (tmp_path / "dit_mmdit_captions.md").exists()
    assert all(0.0 <= r["adherence_seen"] <= 1.0 for r in rows)


def test_video_kronecker_check_runs_small_and_no_model_beats_the_floor(capsys):
    """examples/video.py --kronecker at a seconds-long size: a 5-update model's held-out
    epsilon loss on Kronecker-Gaussian clips lies above the exact floor of the oracle on the
    same draws (the floor is the least MSE of any predictor)."""
    mod = _load("video")
    out = mod.main(["--kronecker", "--tiny", "--steps", "5"])
    assert 0.0 < out["irreducible_loss"] < 1.0 and out["ratio"] > 1.0
    cond = mod.main(["--kronecker", "--kron-cond", "--tiny"])  # the first-frame model and the coupling table
    assert cond["ratio"] > 1.0 and len(cond["coupling_conditioned"]) == len(cond["coupling_exact"]) == 2


@pytest.mark.parametrize("arch,conv", [("transformer", "3d"), ("unet", "3d"), ("unet", "2+1d")])
def test_video_each_arch_runs_tiny_and_writes_its_figures(arch, conv, tmp_path):
    """examples/video.py --arch transformer / unet (the video U-Net, refdiff.nn.video_unet,
    the default) at its --tiny size: trains, samples, measures and writes the clip strip,
    the GIF and the JSON; the printed fractions lie in [0, 1] and true clips agree on all
    frames."""
    mod = _load("video")
    res = mod.main(["--tiny", "--arch", arch, "--conv", conv, "--out", str(tmp_path)])
    for f in ("video_clips.png", "video.gif", "video.json"):
        assert (tmp_path / f).stat().st_size > 0
    assert res["config"]["arch"] == arch and res["true_clips_all_frames_agree"] == 1.0
    assert all(0.0 <= res[k] <= 1.0 for k in ("generated_all_frames_agree", "i2v_conditioned_keeps_given_digit"))


def test_video_checkpoint_resume_gives_the_uninterrupted_runs_parameters(tmp_path, capsys):
    """examples/video.py --checkpoint F --resume: a --tiny run whose checkpoint is resumed
    (already complete, so no update is redone) writes the same --params as the run that
    wrote it, and the command-line errors: --resume without --checkpoint, an existing
    checkpoint without --resume, --checkpoint-every 0, --checkpoint with --kronecker,
    --parallel 0."""
    vid = _load("video")
    ck = tmp_path / "ck.npz"
    vid.main(["--tiny", "--checkpoint", str(ck), "--checkpoint-every", "2", "--params", str(tmp_path / "a.npz"),
              "--out", str(tmp_path / "oa")])
    vid.main(["--tiny", "--checkpoint", str(ck), "--resume", "--params", str(tmp_path / "b.npz"),
              "--out", str(tmp_path / "ob")])
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert set(a.files) == set(b.files)
    for k in a.files:
        if k != "__seconds":
            np.testing.assert_array_equal(a[k], b[k])
    for argv, msg in ((["--resume"], "--resume needs --checkpoint"),
                      (["--checkpoint", str(ck)], "exists: add --resume"),
                      (["--checkpoint", str(ck), "--resume", "--checkpoint-every", "0"], "must be >= 1"),
                      (["--kronecker", "--checkpoint", str(tmp_path / "k.npz")], "not --kronecker"),
                      (["--parallel", "0"], "--parallel must be >= 1")):
        with pytest.raises(SystemExit):
            vid.main(["--tiny", *argv])
        assert msg in capsys.readouterr().err


def test_video_samplers_reproduces_the_video_scripts_unconditional_clips(tmp_path):
    """examples/video_samplers.py draws each sampler's clips from the generator of
    examples/video.py's unconditional clips: with the parameters video.py wrote, the row
    of video.py's sampler and steps gives its figures again (the median speed deviation,
    a continuous function of the clips, to the last bit), another sampler other clips;
    bad --samplers items are errors naming the item."""
    vid, vs = _load("video"), _load("video_samplers")
    params = tmp_path / "p.npz"
    res = vid.main(["--tiny", "--params", str(params), "--sampler", "ddpm", "--out", str(tmp_path / "a")])
    out = vs.main(["--tiny", "--params", str(params), "--samplers", "ddpm:3,ddim:3", "--out", str(tmp_path / "b")])
    ddpm, ddim = out["rows"]
    assert ddpm["speed_deviation_median"] == res["generated_speed_deviation_median"]
    assert ddpm["all_frames_agree"] == res["generated_all_frames_agree"]
    assert ddim["speed_deviation_median"] != ddpm["speed_deviation_median"]
    assert ddpm["stochastic"] and not ddim["stochastic"]
    for bad, msg in (("foo:3", "unknown sampler 'foo'"), ("ddim:0", "'ddim:0'"), ("ddim", "'ddim'"),
                     ("flow_euler:3", "flow-matching"), (" , ", "at least one")):
        with pytest.raises(ValueError, match=msg):
            vs.parse_specs(bad)


def test_video_sprite_frames_counts_frames_whose_ink_fits_one_sprite_box():
    """examples/video.py's per-frame measure: every frame of true moving-digit clips has its
    ink in one 4x4 box (1.0); a frame with two ink pixels 5 apart, or with no ink, does not."""
    from refdiff.video_data import moving_digit_clips

    mod = _load("video")
    assert mod.sprite_frames(moving_digit_clips(30, np.random.default_rng(0))[0]) == 1.0
    x = -np.ones((1, 4, 8, 8))
    x[0, 0, 2, 2] = x[0, 0, 5, 5] = 1.0  # 4x4 box: fits
    x[0, 1, 2, 2] = x[0, 1, 2, 7] = 1.0  # 6 columns apart: does not
    x[0, 2, 1, 1] = 1.0  # one pixel: fits; frame 3 has no ink: does not
    assert mod.sprite_frames(x) == 0.5


def test_toy_sd_tiny_conditions_on_the_frozen_clip_and_scores_a_pixel_model(tmp_path):
    """examples/toy_sd.py --tiny (seconds): the U-Net attends to the frozen toy CLIP's states
    (its folder holds text_encoder.npz, which `refdiff txt2img` uses), the pixel-space model is
    trained and scored beside the latent one, and ``--context tokens`` still trains the
    learned-token variant."""
    from refdiff.cli import main as cli

    mod = _load("toy_sd")
    s = mod.main(["--tiny", "--out", str(tmp_path / "clip")])
    assert s["context"] == "clip" and (tmp_path / "clip" / "model" / "text_encoder.npz").exists()
    assert s["pixel"]["steps"] == 2 and all(0.0 <= r["seen"] <= 1.0 for r in s["pixel"]["guidance"])
    assert cli(["txt2img", "a thick three in the top left", "--checkpoint", str(tmp_path / "clip" / "model"),
                "--n", "1", "--steps", "2", "--out", str(tmp_path / "x.npz"), "--no-progress"]) == 0
    s = mod.main(["--tiny", "--context", "tokens", "--out", str(tmp_path / "tok")])
    assert s["context"] == "tokens" and not (tmp_path / "tok" / "model" / "text_encoder.npz").exists()


def test_lora_digits_thicken_is_the_grey_dilation_by_its_footprint():
    """examples/adapters_lora_digits.py's thick-stroke style: each pixel is the max of itself
    and its right and lower neighbours (background -1 beyond the border), checked against a
    loop over the footprint; it never thins (out >= x) and is idempotent on constant images."""
    mod = _load("adapters_lora_digits")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 1, 8, 8))
    want = np.empty_like(x)
    for i in range(8):
        for j in range(8):
            nb = [x[:, 0, i, j]] + ([x[:, 0, i, j + 1]] if j < 7 else [-np.ones(3)]) + (
                [x[:, 0, i + 1, j]] if i < 7 else [-np.ones(3)])
            want[:, 0, i, j] = np.max(nb, axis=0)
    assert np.array_equal(mod.thicken(x), want)
    assert np.all(mod.thicken(x) >= x)
    assert np.array_equal(mod.thicken(-np.ones((1, 1, 8, 8))), -np.ones((1, 1, 8, 8)))


def test_controlnet_digits_metric_ceilings_are_exact_on_their_edge_cases(tmp_path):
    """examples/adapters_controlnet_digits.py: the edge-IoU ceilings: a control scored
    against the training set that contains its own image has best-training-image IoU 1; the
    saved weights load back bit for bit."""
    mod = _load("adapters_controlnet_digits")
    rng = np.random.default_rng(1)
    x = np.clip(rng.standard_normal((20, 1, 8, 8)), -1, 1)
    c = mod.ceilings(x, x[:5], mod.THRESHOLD, rng)
    assert c["best_training_image"] == 1.0 and 0.0 < c["noised_real_0.2"] <= 1.0
    P, C = {"a": rng.standard_normal((2, 3)).astype(np.float32)}, {"b": np.arange(4.0)}
    mod.save_params(tmp_path / "p.npz", P, C, {"hint_widths": [8, 16]})
    P2, C2, meta = mod.load_params(tmp_path / "p.npz")
    assert np.array_equal(P2["a"], P["a"]) and np.array_equal(C2["b"], C["b"]) and meta == {"hint_widths": [8, 16]}
