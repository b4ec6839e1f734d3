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


@pytest.mark.parametrize("temporal_pos,adaln,joint", [(True, False, False), (False, False, False), (True, True, False),
                                                     (True, True, True)])
def test_space_time_denoiser_gradcheck(temporal_pos, adaln, joint):
    """MATH.md (22.10), and with ``adaln`` the adaLN-Zero blocks of MATH.md (20.3),
    MATH.md (20.4), MATH.md (20.5) (nine chunks per block, three sublayers): every
    parameter's gradient (the modulation's too) and the input gradient of the whole
    space-time denoiser against central differences in float64, < 1e-6; ``joint``: the first
    attention over all of a clip's tokens."""
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2, temporal_pos=temporal_pos, adaln=adaln,
                      joint=joint)
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
    for pos, equivariant, adaln, joint in ((False, True, False, False), (True, False, False, False),
                                           (False, True, True, False), (False, True, True, True)):
        cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2, temporal_pos=pos, adaln=adaln,
                          joint=joint)
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
    with pytest.raises(ValueError, match="VideoConfig: pos_init = -0.5"):
        VideoConfig(pos_init=-0.5)
    with pytest.raises(TypeError, match="VideoConfig: adaln"):
        VideoConfig(adaln=1)


def test_adaln_starts_as_the_identity_blocks_and_pos_init_sets_the_position_scale():
    """adaLN-Zero (MATH.md (20.4)): at initialisation every gate is 0, so the tokens reach
    the output LayerNorm unchanged by the blocks: changing every block's weights leaves the
    output of a freshly initialised network unchanged (exactly), while it changes the
    network without adaln.  ``pos_init`` is the standard deviation of the initial spatial
    positions: the sample standard deviation of its 1024 draws lies within 4 standard errors
    (sd / sqrt(2 n))."""
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((2, 3, 4, 4)), np.array([5.0, 700.0])
    for adaln in (True, False):
        cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2, adaln=adaln)
        P = video_init(np.random.default_rng(7), cfg)
        P["out.w"] = rng.standard_normal(P["out.w"].shape)  # a non-zero read-out
        Q = {k: (v + rng.standard_normal(v.shape) if k.startswith("b") and ".ada." not in k else v) for k, v in P.items()}
        gap = np.abs(video_forward(P, x, t, cfg)[0] - video_forward(Q, x, t, cfg)[0]).max()
        assert (gap == 0.0) if adaln else (gap > 1e-3)
    for scale in (0.02, 1.0):
        cfg = VideoConfig(size=8, patch=1, width=16, pos_init=scale)  # 64 positions x 16 = 1024 draws
        sd = video_init(np.random.default_rng(8), cfg)["pos.s"].std()
        assert abs(sd - scale) < 4 * scale / np.sqrt(2 * 1024)


def test_first_frame_condition_gradcheck():
    """MATH.md (22.11): with the first-frame condition (channels m c and m on every frame),
    every parameter's gradient, the clip's and the first frame's against central
    differences in float64, < 1e-6, with one condition kept and one dropped (m = 0: the
    output does not depend on the given frame, its gradient is exactly 0)."""
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1, first_frame=True)
    P = _params(cfg, 6)
    rng = np.random.default_rng(7)
    x, t, c = rng.standard_normal((2, 3, 4, 4)), np.array([30.0, 700.0]), rng.standard_normal((2, 4, 4))
    keep = np.array([1.0, 0.0])
    out, cache = video_forward(P, x, t, cfg, first=c, keep=keep)
    w = rng.standard_normal(out.shape)
    G, dx, dc = video_backward(w, cache, return_first=True)
    assert set(G) == set(P) and np.abs(dc[1]).max() == 0.0 and np.abs(dc[0]).max() > 0

    def f(Q):
        R = {k: v for k, v in Q.items() if k not in ("x", "c")}
        return float(np.sum(video_forward(R, Q["x"], t, cfg, first=Q["c"], keep=keep)[0] * w))

    assert check_directional(f, {**P, "x": x, "c": c}, {**G, "x": dx, "c": dc}, rng, n_dirs=4) < 1e-6
    # dropped condition = no condition: first=None gives the same output as keep = 0
    a = video_forward(P, x, t, cfg, first=c, keep=np.zeros(2))[0]
    np.testing.assert_array_equal(a, video_forward(P, x, t, cfg)[0])
    # the kept condition changes every frame's output
    b = video_forward(P, x, t, cfg, first=c + 1.0, keep=np.ones(2))[0] - video_forward(P, x, t, cfg, first=c)[0]
    assert np.all(np.abs(b).max(axis=(2, 3)) > 1e-6)


def test_first_frame_condition_bad_input():
    """A first frame of the wrong size or batch, a clip whose frame count does not match,
    a first frame given to an unconditioned model, a keep of the wrong shape, a bad
    condition-dropout rate: ValueError naming the argument and the valid shape."""
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1, first_frame=True)
    P = video_init(np.random.default_rng(0), cfg)
    x, t = np.zeros((2, 3, 4, 4)), np.zeros(2)
    with pytest.raises(ValueError, match=r"first has shape \(2, 8, 8\); the model takes first frames .*\(2, 4, 4\)"):
        video_forward(P, x, t, cfg, first=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"first has shape \(3, 4, 4\)"):
        video_forward(P, x, t, cfg, first=np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"first has shape \(2, 8, 8\)"):
        video_as_model(P, cfg, first=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 4, 4\).*frames = 3"):
        video_as_model(P, cfg, first=np.zeros((2, 4, 4)))(np.zeros((2, 5, 4, 4)), 10.0)
    with pytest.raises(ValueError, match="keep must have shape"):
        video_forward(P, x, t, cfg, first=np.zeros((2, 4, 4)), keep=np.ones(3))
    P0 = video_init(np.random.default_rng(0), CFG)
    with pytest.raises(ValueError, match="without first_frame=True"):
        video_forward(P0, np.zeros((2, 3, 4, 4)), t, CFG, first=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="without first_frame=True"):
        video_as_model(P0, CFG, first=np.zeros((2, 4, 4)))
    import refdiff
    from refdiff.video import train_clip_denoiser

    with pytest.raises(ValueError, match=r"first_drop = 1.5 must lie in \[0, 1\]"):
        train_clip_denoiser(lambda r, n: np.zeros((n, 3, 4, 4)), cfg, refdiff.make_schedule("linear", 10), steps=1,
                            first_drop=1.5)


def test_train_clip_denoiser_continues_from_init():
    """train_clip_denoiser(init=P): with a learning rate of 1e-13 (Adam moves each parameter
    by at most ~lr per step; lr = 0 is refused) the returned EMA parameters are P to 1e-11
    (the run starts there, not at a fresh draw); parameters of another config are
    refused with a ValueError."""
    import refdiff
    from refdiff.video import train_clip_denoiser

    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1, first_frame=True)
    P = _params(cfg, 9)
    clips = lambda r, n: r.standard_normal((n, 3, 4, 4))  # noqa: E731
    sched = refdiff.make_schedule("linear", 10)
    Q, _ = train_clip_denoiser(clips, cfg, sched, steps=2, batch_size=4, lr=1e-13, init=P, dtype="float64")
    for k in P:
        np.testing.assert_allclose(Q[k], P[k], rtol=0, atol=1e-11)
    with pytest.raises(ValueError, match="init must hold the parameters"):
        train_clip_denoiser(clips, cfg, sched, steps=1, init=_params(CFG))


def test_adaln_init_every_parameter_trains_within_three_sgd_steps():
    """adaLN-Zero (MATH.md (20.7) for DiT): from ``video_init`` with ``adaln``, after two plain
    SGD steps on a squared loss every parameter has a non-zero gradient (except the key part
    of the fused qkv bias, zero by the softmax's shift invariance, MATH.md (13.15)).  A
    temporal attention with a zero output projection behind a zero gate (the init without
    adaln kept) gets exactly zero gradient in both factors at every step: it never trains."""
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=2, adaln=True)
    rng = np.random.default_rng(9)
    x, t = rng.standard_normal((4, 3, 4, 4)), np.array([3.0, 90.0, 400.0, 900.0])
    target = rng.standard_normal(x.shape)

    def grads_after_two_steps(P):
        for _ in range(3):
            out, c = video_forward(P, x, t, cfg)
            G = video_backward((out - target) / out.size, c)[0]
            P = {k: P[k] - 0.5 * G[k] for k in P}
        return G

    D = cfg.width
    G = grads_after_two_steps(video_init(np.random.default_rng(10), cfg))
    for k, g in G.items():
        live = np.delete(g, np.s_[D:2 * D], axis=-1) if k.endswith("qkv.b") else g
        assert np.all(np.abs(live).reshape(-1, live.shape[-1]).sum(axis=0) > 0), k
    dead = video_init(np.random.default_rng(10), cfg)
    for k in range(cfg.depth):
        dead[f"b{k}.ta.out.w"] = np.zeros_like(dead[f"b{k}.ta.out.w"])
    G = grads_after_two_steps(dead)
    assert all(np.all(G[f"b{k}.ta.{s}"] == 0.0) for k in range(cfg.depth) for s in ("qkv.w", "qkv.b", "out.w"))


def test_train_clip_denoiser_checkpoint_resumes_bit_for_bit(tmp_path):
    """train_clip_denoiser(checkpoint=F, checkpoint_every=k, resume=True): a run stopped
    after 3 of 5 updates (its checkpoint written at 2; the run to 3 is lost, as a killed run
    would lose it) and resumed gives the EMA, raw parameters, Adam moments and loss log of
    the uninterrupted 5-update run exactly (the generator state is restored, so the resumed
    updates draw the same clips, timesteps, noise and dropout).  An existing checkpoint
    without resume, or resumed with other settings, is a ValueError naming the difference;
    checkpoint_every without a path is refused.  Mutation: dropping the restored generator
    state (a fresh default_rng) makes the losses differ and fails this test."""
    import refdiff
    from refdiff.nn.video_unet import VideoUNetConfig
    from refdiff.video import train_clip_denoiser

    cfg = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,),
                          first_frame=True)
    clips = lambda r, n: r.standard_normal((n, 3, 4, 4))  # noqa: E731
    sched = refdiff.make_schedule("cosine", 20)
    kw = dict(steps=5, batch_size=3, lr=1e-2, seed=4, first_drop=0.5, target="v_prediction", dtype="float64")
    P_full, s_full = train_clip_denoiser(clips, cfg, sched, **kw)

    class Stop(Exception):
        pass

    ck = tmp_path / "run.npz"
    calls = {"n": 0}

    def clips_stopping(r, n):  # the 4th batch draw (update 3) kills the first run
        calls["n"] += 1
        if calls["n"] == 4:
            raise Stop
        return clips(r, n)

    with pytest.raises(Stop):
        train_clip_denoiser(clips_stopping, cfg, sched, checkpoint=ck, checkpoint_every=2, **kw)
    assert ck.exists()
    with pytest.raises(ValueError, match="exists: pass resume=True"):
        train_clip_denoiser(clips, cfg, sched, checkpoint=ck, **kw)
    with pytest.raises(ValueError, match=r"cannot resume .*lr: checkpoint 0.01, now 0.02"):
        train_clip_denoiser(clips, cfg, sched, checkpoint=ck, resume=True, **{**kw, "lr": 2e-2})
    with pytest.raises(ValueError, match="cannot resume .*steps: checkpoint 5, now 6"):
        train_clip_denoiser(clips, cfg, sched, checkpoint=ck, resume=True, **{**kw, "steps": 6})
    P_res, s_res = train_clip_denoiser(clips, cfg, sched, checkpoint=ck, checkpoint_every=2, resume=True, **kw)
    np.testing.assert_array_equal(s_res.losses, s_full.losses)
    for k in P_full:
        np.testing.assert_array_equal(P_res[k], P_full[k])
        np.testing.assert_array_equal(s_res.groups["params"][k], s_full.groups["params"][k])
    for k in s_full.opt:
        np.testing.assert_array_equal(s_res.opt[k], s_full.opt[k])
    with pytest.raises(ValueError, match="need a checkpoint path"):
        train_clip_denoiser(clips, cfg, sched, checkpoint_every=2, **kw)
    with pytest.raises(ValueError, match="must end in .npz"):
        train_clip_denoiser(clips, cfg, sched, checkpoint=tmp_path / "x.pt", **kw)


@pytest.mark.parametrize("arch", ["transformer", "unet"])
def test_train_clip_denoiser_parallel_slices_equal_the_whole_batch(arch):
    """train_clip_denoiser(parallel=2): the forward and backward of each update on two batch
    slices, the second in a worker process (BatchProcesses over ClipNet), give the run of
    the whole batch up to the order of the gradient's float sums: float64 losses and EMA
    parameters after 3 updates equal to 1e-10 relative, for the transformer and the video
    U-Net with a first-frame condition (the condition dict sliced with the batch).  Mutation:
    leaving the worker's gradient out of the sum (BatchProcesses.backward) fails it."""
    import refdiff
    from refdiff.nn.video_unet import VideoUNetConfig
    from refdiff.video import ClipNet, train_clip_denoiser

    if arch == "unet":
        cfg = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,),
                              first_frame=True)
    else:
        cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1, first_frame=True)
    clips = lambda r, n: r.standard_normal((n, 3, 4, 4))  # noqa: E731
    sched = refdiff.make_schedule("cosine", 20)
    kw = dict(steps=3, batch_size=5, lr=1e-2, seed=2, first_drop=0.4, dtype="float64")
    P1, s1 = train_clip_denoiser(clips, cfg, sched, **kw)
    P2, s2 = train_clip_denoiser(clips, cfg, sched, parallel=2, **kw)
    np.testing.assert_allclose(s2.losses, s1.losses, rtol=1e-10)
    for k in P1:
        np.testing.assert_allclose(P2[k], P1[k], rtol=1e-10, atol=1e-12)
    assert "ClipNet" in repr(ClipNet(cfg))
    with pytest.raises(ValueError, match="parallel"):
        train_clip_denoiser(clips, cfg, sched, parallel=0, **kw)


def test_clipnet_is_the_wrapped_network_with_its_condition():
    """ClipNet(cfg).forward / backward equal the video U-Net's own forward / backward called
    with the same first-frame condition (float64, exactly): the object BatchProcesses and
    train_clip_denoiser run passes the condition through, and a dropped condition (keep 0)
    changes the output, so a ClipNet that ignored ``cond`` would fail this test."""
    from refdiff.nn.video_unet import VideoUNetConfig, vunet_backward, vunet_forward, vunet_init
    from refdiff.video import ClipNet

    cfg = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,),
                          first_frame=True)
    g = np.random.default_rng(5)
    P = {k: v + 0.05 * g.standard_normal(v.shape) for k, v in vunet_init(g, cfg).items()}
    x, t = g.standard_normal((2, 3, 4, 4)), np.array([3.0, 8.0])
    cond = {"first": g.standard_normal((2, 4, 4)), "keep": np.array([1.0, 1.0])}
    dout = g.standard_normal(x.shape)
    out, cache = ClipNet(cfg).forward(P, x, t, cond)
    ref, rcache = vunet_forward(P, x, t, cfg, **cond)
    np.testing.assert_array_equal(out, ref)
    (G, dx), (RG, rdx) = ClipNet(cfg).backward(P, cache, dout), vunet_backward(dout, rcache)[:2]
    np.testing.assert_array_equal(dx, rdx)
    for k in RG:
        np.testing.assert_array_equal(G[k], RG[k])
    dropped, _ = ClipNet(cfg).forward(P, x, t, {**cond, "keep": np.zeros(2)})
    assert np.abs(dropped - out).max() > 1e-6
    with pytest.raises(ValueError, match="cond must hold 'first'"):
        ClipNet(cfg).forward(P, x, t, {"keep": np.ones(2)})


def test_training_names_are_the_same_objects_under_refdiff_video():
    """train_clip_denoiser and ClipNet live in refdiff.video_train and are re-exported by
    refdiff.video, where they were first published: the same objects, so code written
    against either import keeps working (and pickled ClipNets name their home module)."""
    import refdiff.video
    import refdiff.video_train

    assert refdiff.video.train_clip_denoiser is refdiff.video_train.train_clip_denoiser
    assert refdiff.video.ClipNet is refdiff.video_train.ClipNet
    assert refdiff.video_train.ClipNet.__module__ == "refdiff.video_train"
