"""The video U-Net (refdiff/nn/video_unet.py): the 3-D convolution against a direct sum,
gradients against central differences in float64, frame-permutation equivariance of the
temporal attention without temporal positions, bad input, and its use by the training
and sampling functions of refdiff.video."""

import numpy as np
import pytest

from refdiff.nn.gradcheck import check_directional
from refdiff.nn.video_unet import VideoUNetConfig, vunet_backward, vunet_forward, vunet_init
from refdiff.nn.video_unet_blocks import (conv3d_backward, conv3d_forward, st_attention_backward,
                                         st_attention_forward, temporal_stack_backward, temporal_stack_forward)

CFG = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(0, 1))


def _params(cfg, seed=0):
    """Random parameters with nothing at zero (the zero-initialised projections too)."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in vunet_init(rng, cfg).items()}


def _conv3d_direct(h, w, b, T):
    """y[n, f, o, i, j] = b[o] + sum_{dt, c, u, v} w[o, c, dt, u, v] h[n, f + dt - 1, c, i + u - 1, j + v - 1],
    zero outside the clip and the frame: the 3-D convolution written out term by term."""
    NT, C, H, W = h.shape
    x = h.reshape(NT // T, T, C, H, W)
    y = np.zeros((NT // T, T, w.shape[0], H, W))
    for n in range(NT // T):
        for f in range(T):
            for o in range(w.shape[0]):
                for i in range(H):
                    for j in range(W):
                        s = b[o]
                        for dt in range(3):
                            for u in range(3):
                                for v in range(3):
                                    g, r, q = f + dt - 1, i + u - 1, j + v - 1
                                    if 0 <= g < T and 0 <= r < H and 0 <= q < W:
                                        s += np.dot(w[o, :, dt, u, v], x[n, g, :, r, q])
                        y[n, f, o, i, j] = s
    return y.reshape(NT, w.shape[0], H, W)


def test_conv3d_is_the_direct_3d_convolution_and_its_backward_the_adjoint():
    """MATH.md (22.16): the 2-D convolution of the stacked neighbour frames with the kernel
    laid out as W[o, (dt) C + c] = w[o, c, dt] equals the 3-D convolution written out as a
    sum over (dt, dy, dx) with zero frames outside the clip (to 1e-12); the stacking's
    backward is its adjoint (<stack(x), S> = <x, stack^T(S)>), and the 3-D convolution's
    gradients (input, kernel, bias) match central differences, < 1e-6."""
    rng = np.random.default_rng(0)
    T, C, F = 4, 3, 2
    h = rng.standard_normal((2 * T, C, 5, 4))
    w5 = rng.standard_normal((F, C, 3, 3, 3))  # (o, c, dt, u, v)
    b = rng.standard_normal(F)
    P = {"k.w": np.transpose(w5, (0, 2, 1, 3, 4)).reshape(F, 3 * C, 3, 3), "k.b": b}
    y, cache = conv3d_forward(P, "k", h, T, "3d")
    np.testing.assert_allclose(y, _conv3d_direct(h, w5, b, T), rtol=0, atol=1e-12)
    # a change in frame f moves frames f - 1, f, f + 1 only, and never another clip
    h2 = h.copy()
    h2[1] += 1.0
    moved = np.abs(conv3d_forward(P, "k", h2, T, "3d")[0] - y).max(axis=(1, 2, 3)) > 0
    assert moved.tolist() == [True, True, True] + [False] * (2 * T - 3)
    S, c_s = temporal_stack_forward(h, T)
    R = rng.standard_normal(S.shape)
    np.testing.assert_allclose(np.sum(S * R), np.sum(h * temporal_stack_backward(R, c_s)), rtol=1e-12)
    for mode in ("3d", "2+1d"):
        Q = {"k.w": P["k.w"], "k.b": b} if mode == "3d" else {
            "k.s.w": rng.standard_normal((F, C, 3, 3)), "k.s.b": rng.standard_normal(F),
            "k.t.w": rng.standard_normal((F, 3 * F, 1, 1)), "k.t.b": rng.standard_normal(F)}
        y, cache = conv3d_forward(Q, "k", h, T, mode)
        dy = rng.standard_normal(y.shape)
        G = {}
        dh = conv3d_backward(G, "k", dy, cache)
        f = lambda Z: float(np.sum(conv3d_forward({k: v for k, v in Z.items() if k != "h"}, "k", Z["h"], T,  # noqa
                                                  mode)[0] * dy))
        assert check_directional(f, {**Q, "h": h}, {**G, "h": dh}, rng, n_dirs=4) < 1e-6


@pytest.mark.parametrize("joint", [False, True])
def test_temporal_attention_block_gradcheck(joint):
    """MATH.md (22.9): the U-Net's attention over time (GroupNorm per frame, sinusoidal
    frame positions, multi-head attention across the T frames at each position, or jointly
    over all T h w tokens of a clip) against central differences in float64, < 1e-6.
    A change in one frame moves the other frames of its clip, never another clip."""
    rng = np.random.default_rng(1)
    P = {k: v for k, v in _params(CFG).items() if k.startswith("down1.tattn0.")}
    x = rng.standard_normal((2 * 3, 8, 2, 2))
    kw = dict(groups=2, heads=2, joint=joint)
    y, c = st_attention_forward(P, "down1.tattn0", x, 3, **kw)
    w = rng.standard_normal(y.shape)
    G = {}
    dx = st_attention_backward(G, P, "down1.tattn0", w, c)
    f = lambda Q: float(np.sum(st_attention_forward({k: v for k, v in Q.items() if k != "x"}, "down1.tattn0",  # noqa
                                                    Q["x"], 3, **kw)[0] * w))
    assert check_directional(f, {**P, "x": x}, {**G, "x": dx}, rng, n_dirs=4) < 1e-6
    x2 = x.copy()
    x2[0, :, 0, 0] += 1.0  # clip 0, frame 0, position (0, 0)
    d = np.abs(st_attention_forward(P, "down1.tattn0", x2, 3, **kw)[0] - y).max(axis=1)  # (N T, 2, 2)
    assert d[1, 0, 0] > 0 and d[3:].max() == 0.0  # frame 1 moves; the other clip does not


def test_temporal_attention_without_positions_is_frame_permutation_equivariant():
    """MATH.md (22.9): without E_T the attention over time commutes with permuting the
    frames of every clip (to 1e-12), temporal or joint; with the sinusoidal positions it
    does not (> 1e-3): they are what lets the U-Net's attention tell frames apart."""
    rng = np.random.default_rng(2)
    P = {k: v for k, v in _params(CFG, 3).items() if k.startswith("down1.tattn0.")}
    x = rng.standard_normal((2, 3, 8, 2, 2))
    perm = np.array([2, 0, 1])
    for joint in (False, True):
        for pos in (False, True):
            run = lambda z: st_attention_forward(P, "down1.tattn0", z.reshape(6, 8, 2, 2), 3, groups=2,  # noqa
                                                 heads=2, joint=joint, temporal_pos=pos)[0].reshape(2, 3, 8, 2, 2)
            gap = np.abs(run(x)[:, perm] - run(x[:, perm])).max()
            assert (gap > 1e-3) if pos else (gap < 1e-12)


@pytest.mark.parametrize("conv,first_frame,joint,mults,jattn", [("3d", False, True, (1, 2), ()),
                                                                ("3d", True, True, (1, 2), ()),
                                                                ("2+1d", False, False, (2, 1), ()),
                                                                ("2+1d", True, True, (1, 2), ()),
                                                                ("3d", True, False, (1, 2), (0, 1))])
def test_video_unet_gradcheck(conv, first_frame, joint, mults, jattn):
    """MATH.md (22.16), MATH.md (22.9), MATH.md (22.11): every parameter's gradient and
    the clip's (and with the first-frame condition the given frame's, one clip kept, one
    dropped: exactly 0) against central differences in float64, < 1e-6, for the whole
    video U-Net (3-D or (2+1)-D convolutions, temporal attention at both levels, joint or
    temporal attention at the bottleneck; one case with a first level wider than the
    second, so the time embedding is 4 W_0 wide, not 4 width; one case with the added joint
    space-time attention after the temporal one at both levels, ``jattn_levels``)."""
    cfg = VideoUNetConfig(frames=3, size=4, width=4, mults=mults, groups=2, heads=2, tattn_levels=(0, 1), conv=conv,
                          first_frame=first_frame, joint=joint, jattn_levels=jattn)
    P = _params(cfg, 4)
    rng = np.random.default_rng(5)
    x, t, c, keep = rng.standard_normal((2, 3, 4, 4)), np.array([3.0, 517.0]), rng.standard_normal((2, 4, 4)), \
        np.array([1.0, 0.0])
    kw = {"first": c, "keep": keep} if first_frame else {}
    out, cache = vunet_forward(P, x, t, cfg, **kw)
    w = rng.standard_normal(out.shape)
    r = vunet_backward(w, cache, return_first=first_frame)
    assert set(r[0]) == set(P)
    Z, GZ = {**P, "x": x}, {**r[0], "x": r[1]}
    if first_frame:
        Z["c"], GZ["c"] = c, r[2]
        assert np.abs(r[2][1]).max() == 0.0 and np.abs(r[2][0]).max() > 0

    def f(Q):
        kk = {"first": Q["c"], "keep": keep} if first_frame else {}
        return float(np.sum(vunet_forward({k: v for k, v in Q.items() if k not in ("x", "c")}, Q["x"], t, cfg,
                                          **kk)[0] * w))

    assert check_directional(f, Z, GZ, rng, n_dirs=4) < 1e-6


def test_added_joint_attention_starts_as_the_identity_and_is_wired_in():
    """MATH.md (22.9): a model with ``jattn_levels`` whose parameters are those of the
    same model without them, completed by the new blocks' initial values (zero output
    projections), gives that model's output exactly, so training can continue from
    parameters trained without the blocks; a nonzero output projection of one new block
    changes the output of every frame of every clip (the block is in the network)."""
    base = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,),
                           first_frame=True)
    ext = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,),
                          jattn_levels=(1,), first_frame=True)
    Pb = _params(base, 7)
    fresh = vunet_init(np.random.default_rng(8), ext)
    new = sorted(set(fresh) - set(Pb))
    assert new and all(".jattn" in k for k in new) and set(Pb) <= set(fresh)
    Pe = {**fresh, **Pb}
    rng = np.random.default_rng(9)
    x, t, c = rng.standard_normal((2, 3, 4, 4)), np.array([5.0, 400.0]), rng.standard_normal((2, 4, 4))
    yb = vunet_forward(Pb, x, t, base, first=c)[0]
    assert np.array_equal(vunet_forward(Pe, x, t, ext, first=c)[0], yb)
    k = next(k for k in new if k.startswith("up1.jattn0") and k.endswith("out.w"))
    Pe[k] = rng.standard_normal(Pe[k].shape)
    d = np.abs(vunet_forward(Pe, x, t, ext, first=c)[0] - yb)
    assert (d.max(axis=(2, 3)) > 1e-6).all()


def test_added_attention_blocks_are_joint(monkeypatch):
    """MATH.md (22.9): the blocks ``jattn_levels`` adds attend over all T h w tokens of a
    clip (joint) and the temporal ones over the T frames at one position: every attention
    call's ``joint`` flag, recorded by name, matches its kind (a jattn block wired to the
    temporal form would pass the identity and gradient tests, not this one)."""
    from refdiff.nn import video_unet_blocks as vb

    seen, real = {}, vb.st_attention_forward

    def spy(P, pre, x, frames, **kw):
        seen[pre] = kw["joint"]
        return real(P, pre, x, frames, **kw)

    monkeypatch.setattr(vb, "st_attention_forward", spy)
    cfg = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,),
                          jattn_levels=(0, 1), joint=False)
    vunet_forward(vunet_init(np.random.default_rng(0), cfg), np.zeros((1, 3, 4, 4)), np.zeros(1), cfg)
    assert {k for k in seen if ".jattn" in k} == {"down0.jattn0", "down1.jattn0", "up0.jattn0", "up0.jattn1",
                                                 "up1.jattn0", "up1.jattn1"}
    assert all(seen[k] == (".jattn" in k) for k in seen) and "mid.attn" in seen and "down1.tattn0" in seen


def test_video_unet_bad_input_clear_errors():
    """A clip whose frame count or frame size does not match the model, a t of the wrong
    shape, a first frame of the wrong size or batch, a first frame given to an unconditioned
    model, a clip length image-to-video cannot give the model, an invalid config:
    ValueError naming the argument and the valid shape (the transformer's messages)."""
    import refdiff
    from refdiff.nn.video import video_as_model
    from refdiff.video import image_to_video

    P = vunet_init(np.random.default_rng(0), CFG)
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 4, 4\).*frames = 3"):
        vunet_forward(P, np.zeros((2, 5, 4, 4)), np.zeros(2), CFG)
    with pytest.raises(ValueError, match=r"frame size 4x4"):
        vunet_forward(P, np.zeros((2, 3, 8, 8)), np.zeros(2), CFG)
    with pytest.raises(ValueError, match="t must have shape"):
        vunet_forward(P, np.zeros((2, 3, 4, 4)), np.zeros(3), CFG)
    with pytest.raises(ValueError, match="without first_frame=True"):
        vunet_forward(P, np.zeros((2, 3, 4, 4)), np.zeros(2), CFG, first=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="without first_frame=True"):
        video_as_model(P, CFG, first=np.zeros((2, 4, 4)))
    cf = VideoUNetConfig(frames=3, size=4, width=4, mults=(1, 2), groups=2, heads=2, tattn_levels=(1,), first_frame=True)
    Pf = vunet_init(np.random.default_rng(0), cf)
    with pytest.raises(ValueError, match=r"first has shape \(2, 8, 8\); the model takes first frames .*\(2, 4, 4\)"):
        vunet_forward(Pf, np.zeros((2, 3, 4, 4)), np.zeros(2), cf, first=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"first has shape \(2, 8, 8\)"):
        video_as_model(Pf, cf, first=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"x has shape \(2, 5, 4, 4\).*frames = 3"):
        video_as_model(Pf, cf, first=np.zeros((2, 4, 4)))(np.zeros((2, 5, 4, 4)), 10.0)
    sched, ts = refdiff.make_schedule("linear", 100), refdiff.timesteps(100, 3)
    with pytest.raises(ValueError, match=r"frames = 5, but the model takes clips of 3 frames"):
        image_to_video(video_as_model(P, CFG), np.zeros((2, 4, 4)), sched, ts, "ddim", frames=5,
                       rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"size = 6 must be divisible by 2\^\(len\(mults\) - 1\) = 4"):
        VideoUNetConfig(size=6, mults=(1, 2, 2))
    with pytest.raises(ValueError, match="groups = 3 must divide every width"):
        VideoUNetConfig(width=32, groups=3)
    with pytest.raises(ValueError, match="conv must be '3d' or '2\\+1d'"):
        VideoUNetConfig(conv="4d")
    with pytest.raises(ValueError, match=r"tattn_levels = \(3,\) must be levels in \[0, 2\]"):
        VideoUNetConfig(tattn_levels=(3,))
    with pytest.raises(ValueError, match=r"jattn_levels = \(-1,\) must be levels in \[0, 2\]"):
        VideoUNetConfig(jattn_levels=(-1,))
    with pytest.raises(TypeError, match="jattn_levels must be a tuple of ints"):
        VideoUNetConfig(jattn_levels=1)
    with pytest.raises(TypeError, match="cfg must be a VideoUNetConfig"):
        vunet_forward(P, np.zeros((2, 3, 4, 4)), np.zeros(2), object())


def test_training_and_sampling_functions_take_the_video_unet():
    """refdiff.video dispatches on the config type: train_clip_denoiser continues from
    ``init`` (lr 1e-13: the EMA is the given parameters to 1e-11) and its loss falls when
    it trains (mean of the last 10 of 60 steps below the first 10 on Kronecker clips),
    clip_losses measures it against the oracle's floor (model loss >= floor on average), and
    image_to_video keeps the given first frame exactly."""
    import refdiff
    from refdiff.nn.video import video_as_model
    from refdiff.oracles import KroneckerGaussian
    from refdiff.video import clip_losses, image_to_video, train_clip_denoiser

    o = KroneckerGaussian.ar1(3, 0.9, (4, 4), length_scale=1.5, nugget=0.05)
    sched = refdiff.make_schedule("linear", 100)
    clips = lambda r, n: o.sample(n, r)  # noqa: E731
    P = _params(CFG, 6)
    Q, _ = train_clip_denoiser(clips, CFG, sched, steps=2, batch_size=4, lr=1e-13, init=P, dtype="float64")
    for k in P:
        np.testing.assert_allclose(Q[k], P[k], rtol=0, atol=1e-11)
    Q, state = train_clip_denoiser(clips, CFG, sched, steps=60, batch_size=16, lr=3e-3, dtype="float64")
    losses = np.asarray(state.losses)
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    m, f = clip_losses(Q, CFG, o, o.sample(200, np.random.default_rng(1)), sched, np.random.default_rng(2))
    assert m.shape == f.shape == (200,) and m.mean() > f.mean()
    first = o.sample(3, np.random.default_rng(3))[:, 0]
    x = image_to_video(video_as_model(Q, CFG), first, sched, refdiff.timesteps(100, 5), "ddim", frames=3,
                       rng=np.random.default_rng(4))
    np.testing.assert_allclose(np.asarray(x)[:, 0], first, rtol=0, atol=1e-12)
