"""The space-time denoiser (refdiff/nn/video.py): gradients against central differences
in float64, frame-permutation equivariance without temporal positions, bad input."""

import numpy as np
import pytest

from refdiff.nn.gradcheck import check_directional
from refdiff.nn.video import (VideoConfig, temporal_attention_backward, temporal_attention_forward, video_as_model,
                              video_backward, video_forward, video_init)

CFG = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2)


def _params(cfg, seed=0):
    """Random parameters with nothing at zero (the zero-initialised projections too)."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in video_init(rng, cfg).items()}


def test_temporal_attention_gradcheck():
    """MATH.md (22.9): the temporal attention's hand-written gradients (input and every
    projection) against central differences in float64, < 1e-6, along random directions."""
    rng = np.random.default_rng(1)
    P = _params(CFG)
    P = {k: v for k, v in P.items() if k.startswith("b0.ta.")}
    z = rng.standard_normal((2 * 3, 4, 8))
    w = rng.standard_normal(z.shape)
    y, c = temporal_attention_forward(P, "b0.ta", z, 3, heads=2)
    G = {}
    dz = temporal_attention_backward(G, P, "b0.ta", w, c)
    err = check_directional(lambda Q: float(np.sum(temporal_attention_forward(
        {k: v for k, v in Q.items() if k != "z"}, "b0.ta", Q["z"], 3, heads=2)[0] * w)),
        {**P, "z": z}, {**G, "z": dz}, rng, n_dirs=4)
    assert err < 1e-6
    # mixing happens across frames only: a change in frame 0 at position 0 moves position 0 only
    z2 = z.copy()
    z2[0, 0] += 1.0
    d = temporal_attention_forward(P, "b0.ta", z2, 3, heads=2)[0] - y
    assert np.abs(d[:, 1:]).max() == 0.0 and np.abs(d[[1, 2], 0]).max() > 0


@pytest.mark.parametrize("temporal_pos", [True, False])
def test_space_time_denoiser_gradcheck(temporal_pos):
    """MATH.md (22.10): every parameter's gradient and the input gradient of the whole
    space-time denoiser against central differences in float64, < 1e-6."""
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2, temporal_pos=temporal_pos)
    P = _params(cfg, 2)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((2, 3, 4, 4)), np.array([3.0, 517.0])
    out, c = video_forward(P, x, t, cfg)
    w = rng.standard_normal(out.shape)
    G, dx = video_backward(w, c)
    assert set(G) == set(P)
    err = check_directional(lambda Q: float(np.sum(video_forward({k: v for k, v in Q.items() if k != "x"}, Q["x"], t,
                                                                  cfg)[0] * w)),
                            {**P, "x": x}, {**G, "x": dx}, rng, n_dirs=4)
    assert err < 1e-6


def test_without_temporal_positions_the_model_is_frame_permutation_equivariant():
    """MATH.md (22.10): without E_T, permuting the frames of the input permutes the output
    the same way (to 1e-12); with the sinusoidal positions it does not (> 1e-3), which is
    why they are needed to represent a denoiser whose law is not exchangeable (AR(1))."""
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((2, 3, 4, 4)), np.array([10.0, 400.0])
    perm = np.array([2, 0, 1])
    for pos, equivariant in ((False, True), (True, False)):
        cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2, temporal_pos=pos)
        P = _params(cfg, 5)
        a = video_forward(P, x, t, cfg)[0][:, perm]
        b = video_forward(P, x[:, perm], t, cfg)[0]
        gap = np.abs(a - b).max()
        assert (gap < 1e-12) if equivariant else (gap > 1e-3)


def test_bad_input_clear_errors():
    """A clip whose frame count or frame size does not match the model, a 3-D array, a t of
    the wrong shape, a first frame of the wrong size or a clip length the model does not
    take in image-to-video, an invalid config: ValueError naming the argument and the valid
    shape."""
    P = video_init(np.random.default_rng(0), CFG)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 4, 4\).*frames = 3"):
        video_forward(P, np.zeros((2, 5, 4, 4)), np.zeros(2), CFG)
    with pytest.raises(ValueError, match=r"frame size 4x4"):
        video_forward(P, np.zeros((2, 3, 8, 8)), np.zeros(2), CFG)
    with pytest.raises(ValueError, match="clips"):
        video_as_model(P, CFG)(np.zeros((3, 4, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="t must have shape"):
        video_forward(P, np.zeros((2, 3, 4, 4)), np.zeros(3), CFG)
    import refdiff
    from refdiff.video import image_to_video

    sched, ts = refdiff.make_schedule("linear", 100), refdiff.timesteps(100, 3)
    with pytest.raises(ValueError, match=r"x_first has shape \(2, 8, 8\).*must be \(N, 4, 4\)"):
        image_to_video(video_as_model(P, CFG), np.zeros((2, 8, 8)), sched, ts, "ddim", frames=3,
                       rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"frames = 5, but the model takes clips of 3 frames"):
        image_to_video(video_as_model(P, CFG), np.zeros((2, 4, 4)), sched, ts, "ddim", frames=5,
                       rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="patch = 3 must divide size = 8"):
        VideoConfig(size=8, patch=3)
    with pytest.raises(ValueError, match="heads = 3 must divide width = 32"):
        VideoConfig(width=32, heads=3)
