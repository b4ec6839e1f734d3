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
