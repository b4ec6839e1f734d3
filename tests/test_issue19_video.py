"""Issue 19 (bad input everywhere): the callables added in the same round (the text-state
condition, the video first-frame check, the batch threads, the frozen text encoder's
helpers) and the video modules (refdiff.video, refdiff.video_data,
refdiff.oracles.kronecker) refuse bad input with a TypeError/ValueError naming the
argument.  Each test failed before its fix; tests/test_fuzz_bad_input.py runs every probe."""

from __future__ import annotations

import numpy as np
import pytest


def _rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------- text-state condition
def _text_cond():
    from refdiff.nn.conditions import TextStateCond

    return TextStateCond(4, 3, _rng().standard_normal((3, 4)), np.array([True, True, False]))


def test_text_state_cond_refuses_bad_construction():
    """The sizes are integers, the null states a float array, the null mask a bool array."""
    from refdiff.nn.conditions import TextStateCond

    states, mask = _rng().standard_normal((3, 4)), np.array([True, True, False])
    with pytest.raises(TypeError, match="context_len"):
        TextStateCond(4, "3", states, mask)
    with pytest.raises(TypeError, match="d_text"):
        TextStateCond(None, 3, states, mask)
    with pytest.raises(TypeError, match="null_states"):
        TextStateCond(4, 3, states.tolist(), mask)
    with pytest.raises(TypeError, match="null_states"):
        TextStateCond(4, 3, states.astype(np.int64), mask)
    with pytest.raises(ValueError, match="null_states"):
        TextStateCond(4, 3, np.full((3, 4), np.nan), mask)
    with pytest.raises(TypeError, match="null_mask"):
        TextStateCond(4, 3, states, mask.astype(float))


def test_text_state_cond_methods_check_their_arguments():
    """check(c, n, xp, what) and null(n, xp, dtype) name the bad argument."""
    c = {"text_states": _rng().standard_normal((2, 3, 4))}
    with pytest.raises(TypeError, match=r"\bc\b"):
        _text_cond().check(None, 2, np, "f")
    with pytest.raises(TypeError, match=r"\bn\b"):
        _text_cond().check(c, True, np, "f")
    with pytest.raises(TypeError, match="xp"):
        _text_cond().check(c, 2, "numpy", "f")
    with pytest.raises(TypeError, match="what"):
        _text_cond().check(c, 2, np, None)
    with pytest.raises(ValueError, match="dtype"):
        _text_cond().null(2, np, "float16")
    with pytest.raises(ValueError, match=r"\bn\b"):
        _text_cond().null(-1, np, "float64")


def test_unet_config_text_states_still_validated():
    """The U-Net config passes its stored null states (tuples) on as arrays: a valid config
    builds, an empty one is refused with the config's message."""
    from refdiff.nn import UNetConfig

    base = dict(in_channels=1, image_size=4, base_channels=8, channel_mults=(1, 2), attention=False, groups=4,
                cross_attention=(1,), context_kind="text_states", context_len=3, context_dim=4, heads=2)
    cfg = UNetConfig(**base, null_context=_rng().standard_normal((3, 4)).tolist(), null_context_mask=[True, True, False])
    assert cfg.null_context_mask == (True, True, False)
    with pytest.raises(ValueError, match="UNetConfig.null_context"):
        UNetConfig(**base, null_context=(), null_context_mask=())


# ----------------------------------------------------------- video first frames
def _video_cfg():
    from refdiff.nn.video import VideoConfig

    return VideoConfig(frames=2, size=4, patch=2, width=8, heads=2, depth=1)


def test_check_first_refuses_bad_first_frames():
    """first is a float array (N, H, W); cfg a VideoConfig; n an int named in the message."""
    from refdiff.nn.video import check_first

    first = _rng().standard_normal((2, 4, 4))
    check_first(first, _video_cfg(), 2)
    with pytest.raises(TypeError, match="first"):
        check_first(first.astype(np.int64), _video_cfg())
    with pytest.raises(TypeError, match="first"):
        check_first(first.tolist(), _video_cfg())
    with pytest.raises(TypeError, match="cfg"):
        check_first(first, None)
    with pytest.raises(ValueError, match=r"\bn\b"):
        check_first(first, _video_cfg(), 3)
    with pytest.raises(TypeError, match=r"\bn\b"):
        check_first(first, _video_cfg(), 2.5)
    with pytest.raises(TypeError, match="name"):
        check_first(first, _video_cfg(), 2, None)


# ----------------------------------------------------------- batch threads
def _threads():
    from refdiff.nn import MLP, MLPConfig
    from refdiff.training import BatchThreads

    net = MLP(MLPConfig(dim=3, hidden=8, layers=1, time_embed_dim=4))
    return BatchThreads(net, parts=2), net.init_params(_rng())


def test_batch_threads_refuses_bad_arguments():
    """model has forward/backward, parts an int >= 1 (not a bool); x an array with a batch
    axis, t's batch x's; cache the forward's; dout an array of the output's batch."""
    from refdiff.training import BatchThreads

    with pytest.raises(TypeError, match="model"):
        BatchThreads(None)
    with pytest.raises(TypeError, match="parts"):
        BatchThreads(_threads()[0].model, parts=True)
    bt, P = _threads()
    x, t = _rng().standard_normal((4, 3)), np.array([0.1, 0.3, 0.5, 0.7])
    with pytest.raises(TypeError, match=r"\bx\b"):
        bt.forward(P, x.tolist(), t)
    with pytest.raises(ValueError, match=r"\bx\b"):
        bt.forward(P, np.ones(()), t)
    with pytest.raises(ValueError, match=r"\bt\b"):
        bt.forward(P, x, np.concatenate([t, t[:1]]))
    out, cache = bt.forward(P, x, t)
    with pytest.raises(TypeError, match="cache"):
        bt.backward(P, None, out)
    with pytest.raises(TypeError, match="dout"):
        bt.backward(P, cache, out.tolist())
    with pytest.raises(ValueError, match="dout"):
        bt.backward(P, cache, out[:3])


# ----------------------------------------------------------- frozen text encoder helpers
def _encoder():
    from refdiff.captions import VOCAB
    from refdiff.nn.text import TextEncoder, TextEncoderConfig, Tokenizer

    tok = Tokenizer(VOCAB, 6)
    enc = TextEncoder(TextEncoderConfig(vocab_size=tok.vocab_size, context_len=6, dim=8, heads=2, layers=1, embed_dim=8))
    return enc, enc.init_params(_rng(2)), tok


def test_text_encoder_helpers_refuse_bad_arguments(tmp_path):
    """encoder, params, tokenizer, prompts and path are type-checked, each named."""
    from refdiff.txt2img import encode_prompts, load_text_encoder, null_text_states, save_text_encoder

    enc, P, tok = _encoder()
    with pytest.raises(TypeError, match="encoder"):
        encode_prompts(None, P, tok, "a three")
    with pytest.raises(TypeError, match="tokenizer"):
        encode_prompts(enc, P, "tok", "a three")
    with pytest.raises(TypeError, match="prompts"):
        encode_prompts(enc, P, tok, None)
    with pytest.raises(TypeError, match="params"):
        null_text_states(enc, None, tok)
    with pytest.raises(TypeError, match="path"):
        save_text_encoder(3, enc, P, tok)
    with pytest.raises(TypeError, match="tokenizer"):
        save_text_encoder(tmp_path / "e.npz", enc, P, None)
    with pytest.raises(TypeError, match="path"):
        load_text_encoder(None)


def test_video_as_model_guidance_and_unet_context_kind_named():
    """guidance is a finite real (not a str, bool or NaN); UNetConfig names context_kind as
    a whole word."""
    from refdiff.nn import UNetConfig
    from refdiff.nn.video import video_as_model, video_init

    cfg = _video_cfg()
    P = video_init(_rng(), cfg)
    for bad, err in (("2", TypeError), (True, TypeError), (float("nan"), ValueError)):
        with pytest.raises(err, match="guidance"):
            video_as_model(P, cfg, guidance=bad)
    with pytest.raises(ValueError, match=r"(?<![\w.])context_kind"):
        UNetConfig(context_kind="clip")


# ----------------------------------------------------------- refdiff.oracles.kronecker
def test_kronecker_shapes_and_scalars_checked():
    """frame_shape is a sequence of ints >= 1 (not None, not floats); length_scale,
    variance, nugget are real numbers (not bools); the mean is a real array."""
    from refdiff.oracles.kronecker import KroneckerGaussian, ar1_covariance, se_covariance

    with pytest.raises(TypeError, match="frame_shape"):
        se_covariance(None)
    with pytest.raises(TypeError, match="frame_shape"):
        se_covariance((2.5, 3))
    for name in ("length_scale", "variance", "nugget"):
        with pytest.raises(TypeError, match=name):
            se_covariance((2, 2), **{name: True})
    with pytest.raises(TypeError, match="frame_shape"):
        KroneckerGaussian(ar1_covariance(3, 0.5), np.eye(4), frame_shape=(2.0, 2.0))
    with pytest.raises(TypeError, match="mean"):
        KroneckerGaussian(ar1_covariance(3, 0.5), np.eye(2), mean=np.zeros((3, 2), dtype=np.complex128))


def test_insert_frames_checks_its_arguments():
    """known: distinct frame indices in [0, frames); x_known and x_other real arrays of
    matching shapes; frames an int >= 1."""
    from refdiff.oracles.kronecker import insert_frames

    xk, xo = np.array([[0.5, -0.5]]), _rng().standard_normal((2, 2, 2))
    out = insert_frames([1], xk, xo, 3)
    assert np.array_equal(out[:, 1], np.broadcast_to(xk[0], (2, 2))) and np.array_equal(out[:, [0, 2]], xo)
    with pytest.raises(TypeError, match="known"):
        insert_frames(None, xk, xo, 3)
    with pytest.raises(ValueError, match="known"):
        insert_frames([-1], xk, xo, 3)
    with pytest.raises(TypeError, match="x_known"):
        insert_frames([0], None, xo, 3)
    with pytest.raises(ValueError, match="x_known"):
        insert_frames([0], np.zeros((1, 3)), xo, 3)
    with pytest.raises(TypeError, match="x_other"):
        insert_frames([0], xk, xo.tolist(), 3)
    with pytest.raises(TypeError, match="x_other"):
        insert_frames([0], xk, xo.astype(np.int64), 3)
    with pytest.raises(ValueError, match="x_other"):
        insert_frames([0], xk, xo, 4)
    with pytest.raises(TypeError, match="frames"):
        insert_frames([0], xk, xo, 3.0)


# ----------------------------------------------------------- refdiff.video_data
def test_bounce_refuses_non_integer_input():
    """p0, v, t are ints or integer arrays that broadcast; L an int >= 1."""
    from refdiff.video_data import bounce

    t = np.arange(4)
    assert np.array_equal(bounce(0, 1, t, 4), [0, 1, 2, 3])
    with pytest.raises(TypeError, match="p0"):
        bounce([0, 1], 1, t, 4)
    with pytest.raises(TypeError, match=r"\bv\b"):
        bounce(0, np.array([0.5]), t, 4)
    with pytest.raises(ValueError, match=r"\bt\b"):
        bounce(np.array([0, 1]), 1, np.arange(3), 4)
    with pytest.raises(TypeError, match=r"\bL\b"):
        bounce(0, 1, t, 4.0)
    with pytest.raises(ValueError, match=r"\bL\b"):
        bounce(0, 1, t, -1)


def test_clip_metrics_refuse_bad_clips():
    """clip_centroids, speed_consistency and ink_crops take float arrays (N, T, H, W):
    lists, integer arrays and NaN are refused naming clips; return_info is a bool."""
    from refdiff.video_data import clip_centroids, ink_crops, moving_digit_clips, speed_consistency

    clips = -np.ones((2, 3, 8, 8))
    for f in (clip_centroids, speed_consistency, ink_crops):
        with pytest.raises(TypeError, match="clips"):
            f(clips.tolist())
        with pytest.raises(TypeError, match="clips"):
            f(clips.astype(np.int64))
    bad = clips.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="clips"):
        clip_centroids(bad)
    with pytest.raises(ValueError, match="clips"):
        speed_consistency(clips[:, :1])
    with pytest.raises(TypeError, match="threshold"):
        ink_crops(clips, threshold="0")
    with pytest.raises(TypeError, match="return_info"):
        moving_digit_clips(2, _rng(), return_info=1)


# ----------------------------------------------------------- refdiff.video
def _grid():
    import refdiff

    return refdiff.make_grid(refdiff.make_schedule("linear", 10), [9, 5, 1])


def test_frame_replacement_hook_checks_its_arguments():
    """known: ints in [0, frames); x_known a finite float array; grid a Grid; frames an
    int; noise a callable."""
    from refdiff.video import frame_replacement_hook

    xk = _rng().standard_normal((2, 1, 4, 4))
    kw = dict(known=[0], x_known=xk, grid=_grid(), rng=_rng(), frames=3)
    frame_replacement_hook(**kw)
    for name, bad, err in (("known", None, TypeError), ("known", ["a"], TypeError), ("x_known", xk.astype(int), TypeError),
                           ("x_known", np.full_like(xk, np.nan), ValueError), ("grid", "grid", TypeError),
                           ("frames", 3.0, TypeError), ("frames", True, TypeError), ("noise", 0.5, TypeError)):
        with pytest.raises(err, match=rf"\b{name}\b"):
            frame_replacement_hook(**{**kw, name: bad})


def test_video_training_and_losses_check_their_arguments():
    """train_clip_denoiser checks every setting before drawing; clip_losses, loss_ratio and
    first_frame_coupling check their arrays, schedule, rng and oracle."""
    import refdiff
    from refdiff.nn.video import video_init
    from refdiff.oracles.kronecker import KroneckerGaussian
    from refdiff.video import clip_losses, first_frame_coupling, image_to_video, loss_ratio, train_clip_denoiser

    cfg, sched = _video_cfg(), refdiff.make_schedule("linear", 10)
    clips = -np.ones((2, 2, 4, 4))
    kw = dict(next_clips=lambda r, n: clips[:1].repeat(n, 0), cfg=cfg, schedule=sched, steps=1, batch_size=2)
    for name, bad, err in (("next_clips", None, TypeError), ("schedule", "linear", TypeError),
                           ("steps", True, TypeError), ("batch_size", 0, ValueError), ("seed", None, TypeError),
                           ("ema_decay", "0.9", TypeError), ("dtype", "float16", ValueError),
                           ("first_drop", float("nan"), ValueError), ("progress", 1, TypeError)):
        with pytest.raises(err, match=rf"\b{name}\b"):
            train_clip_denoiser(**{**kw, name: bad})
    P = video_init(_rng(), cfg)
    for name, bad, err in (("P", None, TypeError), ("x0", clips.tolist(), TypeError), ("x0", clips.astype(int), TypeError),
                           ("schedule", None, TypeError), ("rng", "r", TypeError), ("chunk", 0, ValueError)):
        args = {**dict(P=P, cfg=cfg, oracle_or_none=None, x0=clips, schedule=sched, rng=_rng()), name: bad}
        with pytest.raises(err, match=rf"\b{name}\b"):
            clip_losses(**args)
    with pytest.raises(TypeError, match="floor"):
        loss_ratio(np.ones(3), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="floor"):
        loss_ratio(np.ones(3), np.zeros(3))
    o = KroneckerGaussian.ar1(frames=3, rho=0.5, frame_shape=(4, 4))
    c3 = o.sample(3, rng=_rng())
    with pytest.raises(TypeError, match="oracle"):
        first_frame_coupling(c3, c3[:, 0], None)
    with pytest.raises(TypeError, match="clips"):
        first_frame_coupling(c3.tolist(), c3[:, 0], o)
    with pytest.raises(ValueError, match="oracle"):
        first_frame_coupling(c3[:, :2], c3[:, 0], o)
    with pytest.raises(TypeError, match="x_first"):
        image_to_video(lambda x, t: 0 * x, c3[:, 0].astype(int), sched, [9, 5, 1], "ddim", frames=3, rng=_rng())


def test_train_threads_is_an_int_not_a_bool():
    """refdiff.train.train's threads: a bool is refused (TypeError), not taken as 1."""
    import refdiff
    from refdiff.nn import MLP, MLPConfig
    from refdiff.train import train

    net = MLP(MLPConfig(dim=3, hidden=8, layers=1, time_embed_dim=4))
    with pytest.raises(TypeError, match="threads"):
        train(net, _rng().standard_normal((8, 3)), schedule=refdiff.make_schedule("linear", 10), steps=1, batch_size=4,
              progress=False, threads=True)
