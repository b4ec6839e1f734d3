"""What the clip model's fit to the Kronecker-Gaussian floor rests on: the overlapping patch
embedding of the space-time denoiser (MATH.md (22.14)), the epsilon loss and floor of a
v-parameterised network (MATH.md (22.13)), and the factored exact sampler of the
Kronecker oracle (MATH.md (22.2))."""

import numpy as np
import pytest

import refdiff
from refdiff.losses import objective_loss
from refdiff.nn.gradcheck import check_directional
from refdiff.nn.video import VideoConfig, video_backward, video_forward, video_init
from refdiff.oracles import GaussianData, KroneckerGaussian
from refdiff.video import clip_loss, clip_losses, train_clip_denoiser


def _params(cfg, seed=0):
    """Random parameters with nothing at zero (the zero-initialised projections too)."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in video_init(rng, cfg).items()}


@pytest.mark.parametrize("first_frame,adaln,joint", [(False, False, False), (True, False, False), (True, True, True)])
def test_overlapping_embedding_gradcheck(first_frame, adaln, joint):
    """MATH.md (22.14): with the overlapping patch embedding (margin 1, kernel 4, stride 2)
    every parameter's gradient and the input gradient of the whole denoiser against central
    differences in float64, < 1e-6 (with the first-frame channels too, and combined with
    the adaLN-Zero blocks and joint attention)."""
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1, overlap=1, first_frame=first_frame,
                      adaln=adaln, joint=joint)
    P = _params(cfg, 2)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((2, 3, 4, 4)), np.array([3.0, 517.0])
    cond = {"first": rng.standard_normal((2, 4, 4))} if first_frame else {}
    out, c = video_forward(P, x, t, cfg, **cond)
    w = rng.standard_normal(out.shape)
    G, dx = video_backward(w, c)
    assert set(G) == set(P) and P["in.w"].shape == ((3 if first_frame else 1) * 16, 8)
    err = check_directional(lambda Q: float(np.sum(video_forward({k: v for k, v in Q.items() if k != "x"}, Q["x"], t,
                                                                  cfg, **cond)[0] * w)),
                            {**P, "x": x}, {**G, "x": dx}, rng, n_dirs=4)
    assert err < 1e-6


def test_overlapping_embedding_is_the_window_sum():
    """MATH.md (22.14): the first layer's tokens equal the sum over each patch's window of
    side p + 2m (zero outside the frame) written out pixel by pixel, to 1e-12; a pixel
    more than m away from a patch does not move that patch's token, and with m = 0 (the
    default) the embedding is the plain patch embedding.  Read through a depth-0-like
    probe: the gradient of sum(z * w) with respect to in.w is the window matrix."""
    from refdiff.nn.video import _embed

    p, m, D, H = 2, 1, 5, 6
    cfg = VideoConfig(frames=1, size=H, patch=p, width=D, heads=1, depth=1, overlap=m)
    rng = np.random.default_rng(5)
    P = {"in.w": rng.standard_normal(((p + 2 * m) ** 2, D)), "in.b": rng.standard_normal(D)}
    x = rng.standard_normal((2, 1, H, H))
    z = _embed(np, P, x, cfg)[0]  # (2, L, D)
    k, Hp = p + 2 * m, H // p
    want = np.zeros_like(z)
    for n in range(2):
        for i in range(Hp):
            for j in range(Hp):
                for u in range(k):
                    for v in range(k):
                        r, c = i * p + u - m, j * p + v - m
                        if 0 <= r < H and 0 <= c < H:
                            want[n, i * Hp + j] += x[n, 0, r, c] * P["in.w"][u * k + v]
                want[n, i * Hp + j] += P["in.b"]
    assert np.abs(z - want).max() < 1e-12
    x2 = x.copy()
    x2[:, 0, 5, 5] += 1.0  # distance 2 > m from patch (0, 0), rows/cols 0..1
    z2 = _embed(np, P, x2, cfg)[0]
    assert np.abs(z2[:, 0] - z[:, 0]).max() == 0.0 and np.abs(z2[:, -1] - z[:, -1]).max() > 0.1
    cfg0 = VideoConfig(frames=1, size=H, patch=p, width=D, heads=1, depth=1)
    P0 = {"in.w": rng.standard_normal((p * p, D)), "in.b": rng.standard_normal(D)}
    z0 = _embed(np, P0, x, cfg0)[0]
    assert np.abs(z0[:, 0] - (x[:, 0, :2, :2].reshape(2, 4) @ P0["in.w"] + P0["in.b"])).max() < 1e-12


def test_v_network_epsilon_loss_is_alpha2_weighted_v_loss():
    """MATH.md (22.13): for any v prediction, eps_hat = sigma x_t + alpha v_hat has
    |eps_hat - eps|^2 = alpha^2 |v_hat - v|^2, which is objective_loss(target v, weighting
    "snr") (to 1e-12, value and gradient); clip_losses with prediction_type v reports it."""
    rng = np.random.default_rng(0)
    x0, eps, v_hat = (rng.standard_normal((5, 3, 4, 4)) for _ in range(3))
    sched = refdiff.make_schedule("linear", 1000)
    t = np.array([0, 10, 300, 700, 999])
    a, s = refdiff.alpha_sigma(sched, t, x0)
    xt, v = a * x0 + s * eps, a * eps - s * x0
    eps_hat = s * xt + a * v_hat
    per = np.mean((eps_hat - eps) ** 2, axis=(1, 2, 3))
    assert np.abs(per - np.mean(a ** 2 * (v_hat - v) ** 2, axis=(1, 2, 3))).max() < 1e-12
    loss, dl = objective_loss(v_hat, x0, eps, a, s, target="v_prediction", weighting="snr")
    assert abs(float(loss) - per.mean()) < 1e-12
    assert np.abs(dl - 2 * a * (eps_hat - eps) / eps.size).max() < 1e-12
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1)
    P = _params(cfg, 1)
    o = KroneckerGaussian.ar1(3, 0.9, (4, 4))
    xs = o.sample(6, np.random.default_rng(2))
    mv, fv = clip_losses(P, cfg, o, xs, sched, np.random.default_rng(3), prediction_type="v_prediction")
    r = np.random.default_rng(3)
    tt = r.integers(0, 1000, size=6)
    e = r.standard_normal(xs.shape)
    aa, ss = refdiff.alpha_sigma(sched, tt, xs)
    out = video_forward(P, aa * xs + ss * e, tt.astype(float), cfg)[0]
    assert np.abs(mv - np.mean(aa ** 2 * (out - (aa * e - ss * xs)) ** 2, axis=(1, 2, 3))).max() < 1e-12
    me, fe = clip_losses(P, cfg, o, xs, sched, np.random.default_rng(3))
    assert np.abs(fv - fe).max() == 0.0 and np.abs(me - mv).max() > 1e-3
    # clip_loss (the means) passes the prediction type on: the same conversion
    lv, lf = clip_loss(P, cfg, o, xs, sched, np.random.default_rng(3), prediction_type="v_prediction")
    assert abs(lv - float(mv.mean())) < 1e-12 and abs(lf - float(fv.mean())) < 1e-12


def test_v_floor_is_eps_floor_over_alpha2_monte_carlo():
    """MATH.md (22.13): at fixed t the exact v-prediction's loss per number (Monte Carlo
    over 20000 clips of the 4x3x3 AR(1) law) equals the epsilon floor from the eigenvalues,
    (1/D) sum_i alpha^2 nu_i / (alpha^2 nu_i + sigma^2), divided by alpha^2 (and the x0
    floor is sigma^2 / alpha^2 times it), within 4 standard errors."""
    o = KroneckerGaussian.ar1(4, 0.8, (3, 3), length_scale=1.0, nugget=0.05)
    nu = np.kron(o.kappa, o.s)
    rng = np.random.default_rng(11)
    for a2 in (0.9, 0.3):
        a, s = np.sqrt(a2), np.sqrt(1 - a2)
        floor_eps = np.mean(a2 * nu / (a2 * nu + s * s))
        x0 = o.sample(20000, rng)
        e = rng.standard_normal(x0.shape)
        xt = a * x0 + s * e
        x0_hat = np.asarray(o.x0_mean(xt, a, s))
        eps_hat = (xt - a * x0_hat) / s
        lv = np.mean(((a * eps_hat - s * x0_hat) - (a * e - s * x0)) ** 2, axis=(1, 2, 3))
        lx = np.mean((x0_hat - x0) ** 2, axis=(1, 2, 3))
        for l, want in ((lv, floor_eps / a2), (lx, floor_eps * s * s / a2)):
            assert abs(l.mean() - want) < 4 * l.std() / np.sqrt(l.size)
        assert abs(floor_eps / a2 - floor_eps) > 10 * lv.std() / np.sqrt(lv.size) or a2 > 0.5


def test_factored_sampler_matches_the_dense_one():
    """MATH.md (22.2): KroneckerGaussian.sample (V (sqrt(kappa s^T) * Z) U^T + M per clip)
    gives the same draws as GaussianData.sample with the dense (T P, T P) eigenvectors from
    the same generator, to 1e-12, with a mean, and labels all 0."""
    rng = np.random.default_rng(0)
    o = KroneckerGaussian.ar1(5, 0.7, (3, 4), length_scale=1.2, mean=rng.standard_normal((5, 3, 4)))
    a = o.sample(7, np.random.default_rng(4))
    b = GaussianData.sample(o, 7, np.random.default_rng(4))
    assert a.shape == (7, 5, 3, 4) and np.abs(a - b).max() < 1e-12
    x, lab = o.sample(3, np.random.default_rng(4), return_labels=True)
    assert np.abs(x - a[:3]).max() == 0.0 and lab.tolist() == [0, 0, 0]


def test_bad_weighting_and_prediction_type_are_refused():
    """Bad input: an unknown weighting or prediction type names the argument."""
    o = KroneckerGaussian.ar1(3, 0.9, (4, 4))
    cfg = VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, depth=1)
    sched = refdiff.make_schedule("linear", 100)
    with pytest.raises(ValueError, match="weighting"):
        train_clip_denoiser(lambda r, n: o.sample(n, r), cfg, sched, steps=1, weighting="nope")
    with pytest.raises(ValueError, match="prediction_type"):
        clip_losses(_params(cfg), cfg, o, o.sample(2, np.random.default_rng(0)), sched, np.random.default_rng(0),
                    prediction_type="nope")
    for bad in (-1, 4, 1.5):
        with pytest.raises((ValueError, TypeError), match="overlap"):
            VideoConfig(frames=3, size=4, patch=2, width=8, heads=2, overlap=bad)


def test_excess_decomposition_affine_and_nonlinear_parts():
    """MATH.md (22.15): for f = E[eps|x_t] + E x_t (E random) the non-affine part is 0 (to
    1e-20) and the affine error equals tr(E Sigma_x E^T)/D within 5 % (Monte Carlo, 3000
    held-out draws); for f = E[eps|x_t] + 0.3 tanh(x_t) the parts add up to the excess within
    3 % and the non-affine one is > 0; the affine error of a perturbation of frame 0, pixel
    (1, 2) only lies there (share > 0.99)."""
    from refdiff.video import excess_decomposition

    o = KroneckerGaussian.ar1(3, 0.8, (3, 3), length_scale=1.0, nugget=0.05)
    a, s = 0.8, 0.6
    D = 27
    rng = np.random.default_rng(0)
    E = 0.2 * rng.standard_normal((D, D))
    C = np.kron(o.time_cov, o.space_cov)
    Sx = a * a * C + s * s * np.eye(D)
    want = np.trace(E @ Sx @ E.T) / D
    lin_fn = lambda x: np.asarray(o.eps(x, a, s)) + (x.reshape(len(x), D) @ E.T).reshape(x.shape)  # noqa: E731
    r = excess_decomposition(lin_fn, o, a, s, 6000, np.random.default_rng(1))
    assert r["nonlinear"] < 1e-20 and abs(r["linear"] / want - 1) < 0.05 and abs(r["excess"] / want - 1) < 0.05
    nl_fn = lambda x: np.asarray(o.eps(x, a, s)) + 0.3 * np.tanh(x)  # noqa: E731
    r = excess_decomposition(nl_fn, o, a, s, 6000, np.random.default_rng(2))
    assert r["nonlinear"] > 0.01 * r["excess"] and abs((r["nonlinear"] + r["linear"]) / r["excess"] - 1) < 0.03
    E1 = np.zeros((D, D))
    E1[5] = 0.5 * rng.standard_normal(D)  # output index 5 = frame 0, pixel (1, 2)
    r = excess_decomposition(lambda x: np.asarray(o.eps(x, a, s)) + (x.reshape(len(x), D) @ E1.T).reshape(x.shape),
                             o, a, s, 6000, np.random.default_rng(3))
    share = r["linear_share_per_position"]
    assert share.shape == (3, 3) and share[1, 2] > 0.99 and abs(share.sum() - 1) < 1e-12
    with pytest.raises(ValueError, match="n"):
        excess_decomposition(lin_fn, o, a, s, 10, np.random.default_rng(1))
