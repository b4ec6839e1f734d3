"""Reference-vector cases of the video chapter (MATH.md chapter 22), added to the suite by
:func:`refdiff.vectors.build_cases`: the space-time transformer's first-frame condition
(22.11) and overlapping patch embedding (22.14), the Kronecker-Gaussian clip oracle and its
frame conditionals (22.1), (22.5), (22.6), and the video U-Net's 3-D convolution (22.16)."""

from __future__ import annotations

import numpy as np

from .vectors import Case, _f64, _np

def video_cases(rng):
    """The first-frame video condition, MATH.md (22.11); the overlapping embedding; the Kronecker oracle."""
    from .nn.video import VideoConfig, video_forward, video_init

    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1, first_frame=True)
    P = {k: _f64(v + 0.1 * rng.standard_normal(v.shape)) for k, v in video_init(np.random.default_rng(0), cfg).items()}
    x, first = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 4, 4))
    t, keep = np.array([3, 7]), np.array([1.0, 0.0])
    return [Case("video_first_frame", "refdiff.nn.video.video_forward",
                 "the factorised space-time denoiser (3 frames of 4x4, patch 2, width 8, 2 heads, depth 1) with the "
                 "first-frame condition of MATH.md (22.11): every frame's input is the three channels (x_f, m c, m), "
                 "c the given first frame, m = keep per clip; 'y' with keep = (1, 0); 'y_dropped' with no first frame "
                 "(m = 0 for both clips), so its second clip equals y's second clip exactly",
                 {"frames": 3, "size": 4, "patch": 2, "width": 8, "heads": 2, "depth": 1},
                 {"x": _f64(x), "t": t, "first": _f64(first), "keep": _f64(keep), **P},
                 {"y": _np(video_forward(P, x, t, cfg, first, keep)[0]), "y_dropped": _np(video_forward(P, x, t, cfg)[0])}),
            _overlap_case(rng), _kronecker_case(rng), _conv3d_case(rng)]


def _kronecker_case(rng):
    """The Kronecker-Gaussian clip oracle and its exact frame conditionals, MATH.md (22.1),
    (22.5), (22.6)."""
    from .oracles import KroneckerGaussian
    from .schedules import make_schedule

    T, fs, rho, ell, nug = 4, (2, 3), 0.8, 1.5, 1e-2
    o = KroneckerGaussian.ar1(T, rho, fs, length_scale=ell, nugget=nug)
    sched, t = make_schedule("linear", 1000), np.array([50, 400, 900])
    x_t = rng.standard_normal((3, T) + fs)
    a, s = sched.sqrt_alpha_bars[t], sched.sqrt_one_minus_alpha_bars[t]
    out = {"eps": _np(o.eps(x_t, a, s)), "x0_mean": _np(o.x0_mean(x_t, a, s))}
    x_first, x_ends = rng.standard_normal((1,) + fs), rng.standard_normal((2,) + fs)
    for key, known, vals in (("first", [0], x_first), ("first_last", [0, T - 1], x_ends)):
        c = o.condition_frames(known, vals)
        out[f"{key}_mean"], out[f"{key}_time_cov"] = _np(c.mean), _np(c.time_cov)
    return Case("video_kronecker_oracle", "refdiff.oracles.KroneckerGaussian (ar1, eps, x0_mean, condition_frames)",
                "clips (T, H, W) = (4, 2, 3) ~ N(0, K_T (x) S), K_T[f, g] = rho^|f-g| (rho 0.8), S[p, q] = "
                "exp(-|r_p - r_q|^2 / (2 * 1.5^2)) + 0.01 [p = q] on raster pixels; Cov[(f, p), (g, q)] = K_T[f, g] "
                "S[p, q] (frame-major flattening); 'eps', 'x0_mean' at x_t (3 clips) with alpha_t, sigma_t of the linear "
                "schedule at t; the law of the other frames given frame 0 = x_first ('first_*') and given frames 0 "
                "and 3 = x_ends ('first_last_*'): mean (T - |A|, H, W) and temporal covariance (the spatial factor "
                "stays S)",
                {"frames": T, "frame_shape": list(fs), "rho": rho, "length_scale": ell, "variance": 1.0,
                 "nugget": nug, "schedule": {"kind": "linear", "T": 1000}},
                {"x_t": _f64(x_t), "t": t, "x_first": _f64(x_first), "x_ends": _f64(x_ends)}, out)


def _conv3d_case(rng):
    """The video U-Net's 3-D convolution, MATH.md (22.16)."""
    from .nn.video_unet_blocks import conv3d_forward

    N, T, C, F, H, W = 2, 3, 2, 3, 4, 5
    x = rng.standard_normal((N * T, C, H, W))
    w, b = rng.standard_normal((F, 3 * C, 3, 3)), rng.standard_normal(F)
    y = conv3d_forward({"c.w": _f64(w), "c.b": _f64(b)}, "c", _f64(x), T)[0]
    return Case("video_conv3d", "refdiff.nn.video_unet_blocks.conv3d_forward",
                "the 3x3x3 'same' convolution of frames x (N T, C, H, W) (frames of a clip consecutive, N = 2 clips "
                "of T = 3): y[n T + f, o, i, j] = b[o] + sum over d in {-1, 0, 1}, c, u, v of "
                "w[o, (d + 1) C + c, u, v] x[n T + f + d, c, i + u - 1, j + v - 1], x = 0 outside the clip's frames "
                "and outside the frame (cross-correlation, like conv2d); w (F, 3 C, 3, 3) holds the kernels of the "
                "previous, same and next frame as three blocks of input channels",
                {"frames": T}, {"x": _f64(x), "w": _f64(w), "b": _f64(b)}, {"y": _np(y)})


def _overlap_case(rng):
    """The overlapping patch embedding of the space-time denoiser, MATH.md (22.14)."""
    from .nn.video import VideoConfig, _embed

    p, m, D, C, H = 2, 1, 3, 2, 6
    cfg = VideoConfig(frames=1, size=H, patch=p, width=D, heads=1, depth=1, overlap=m)
    frames = rng.standard_normal((2, C, H, H))
    w, b = rng.standard_normal((C * (p + 2 * m) ** 2, D)), rng.standard_normal(D)
    z = _embed(np, {"in.w": w, "in.b": b}, frames, cfg)[0]
    return Case("video_overlap_embedding", "refdiff.nn.video.video_forward (VideoConfig.overlap)",
                "tokens (N, L, D) of frames (N, C, H, W) with patch p = 2 and margin m = 1: token (i, j) (raster "
                "order, L = (H/p)^2) is b + sum over c, u, v of w[(c k + u) k + v] x[c, p i - m + u, p j - m + v], "
                "k = p + 2m = 4, x = 0 outside the frame (the convolution with kernel k, stride p, padding m; "
                "in.w is (C k k, D) in the (c, u, v) order)",
                {"patch": p, "overlap": m}, {"frames": _f64(frames), "in_w": _f64(w), "in_b": _f64(b)},
                {"tokens": _np(z)})
