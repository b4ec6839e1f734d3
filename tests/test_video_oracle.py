"""The Kronecker-Gaussian clip oracle (refdiff/oracles/kronecker.py) against direct
computations on the dense covariance, its exact frame conditionals against Schur
complements, every sampler on it, and image-to-video by replacement in time."""

import numpy as np
import pytest

import refdiff
from refdiff.oracles import KroneckerGaussian, ar1_covariance, se_covariance
from refdiff.samplers.loop import sampler_methods
from refdiff.video import frame_replacement_hook, image_to_video

T, FS = 4, (3, 3)
SCHED = refdiff.make_schedule("linear", 1000)


def _oracle(seed=0, mean=True):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((T, T))
    Kt = A @ A.T + 0.5 * np.eye(T)  # a generic SPD temporal covariance
    M = rng.standard_normal((T,) + FS) if mean else None
    return KroneckerGaussian(Kt, se_covariance(FS, 1.2, 1.0, 0.05), M, FS)


def test_ar1_and_se_covariances():
    """MATH.md (22.3) and MATH.md (22.4): entries written from their definitions."""
    K = ar1_covariance(5, 0.7)
    assert K[1, 4] == pytest.approx(0.7**3, rel=1e-15) and K[3, 3] == 1.0
    S = se_covariance((2, 3), 1.5, 2.0, 0.1)
    # pixel 1 = (0, 1), pixel 5 = (1, 2): squared distance 1 + 1
    assert S[1, 5] == pytest.approx(2.0 * np.exp(-2.0 / (2 * 1.5**2)), rel=1e-15)
    assert S[4, 4] == pytest.approx(2.1, rel=1e-15)


def test_denoiser_score_eps_against_the_dense_covariance():
    """MATH.md (22.1) and MATH.md (22.2): with C = K_T (x) S dense, E[x0 | x_t] = M + alpha C
    (alpha^2 C + sigma^2 I)^-1 (x_t - alpha M), the score -(alpha^2 C + sigma^2 I)^-1 (x_t -
    alpha M), E[eps | x_t] = -sigma score, to 1e-10; the factored rotations never form C."""
    o = _oracle()
    C = np.kron(o.time_cov, o.space_cov)
    D = C.shape[0]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, T) + FS)
    M = o.mean.reshape(D)
    for a, s in ((0.95, 0.3122), (0.3, 0.954), (1.0, 0.05)):
        R = np.linalg.solve(a * a * C + s * s * np.eye(D), (x.reshape(6, D) - a * M).T).T
        np.testing.assert_allclose(o.x0_mean(x, a, s).reshape(6, D), M + a * R @ C, atol=1e-10, rtol=0)
        np.testing.assert_allclose(o.score(x, a, s).reshape(6, D), -R, atol=1e-10, rtol=0)
        np.testing.assert_allclose(o.eps(x, a, s).reshape(6, D), s * R, atol=1e-10, rtol=0)
    sign, logdet = np.linalg.slogdet(a * a * C + s * s * np.eye(D))
    r = x.reshape(6, D) - a * M
    lp = -0.5 * (np.sum(r * np.linalg.solve(a * a * C + s * s * np.eye(D), r.T).T, 1) + logdet + D * np.log(2 * np.pi))
    np.testing.assert_allclose(o.log_prob_t(x, a, s), lp, atol=1e-9, rtol=0)
    np.testing.assert_allclose(o.cov, C, atol=1e-12)


def _dense_conditional(o, A, xa):
    C = np.kron(o.time_cov, o.space_cov)
    P = o.P
    ia = np.concatenate([np.arange(f * P, (f + 1) * P) for f in A])
    ib = np.setdiff1d(np.arange(C.shape[0]), ia)
    M = o.mean.reshape(-1)
    G = C[np.ix_(ib, ia)] @ np.linalg.inv(C[np.ix_(ia, ia)])
    return M[ib] + G @ (xa.reshape(-1) - M[ia]), C[np.ix_(ib, ib)] - G @ C[np.ix_(ia, ib)]


@pytest.mark.parametrize("known", [[0], [0, T - 1], [1, 2]])
def test_frame_conditionals_against_dense_schur_complements(known):
    """MATH.md (22.5): the law of the other frames given frames A (first frame; first and
    last; two middle ones) from the Kronecker formula equals the Schur complement of the
    dense covariance (mean and covariance to 1e-10), and its denoiser equals the dense
    conditional's."""
    o = _oracle(2)
    xa = np.random.default_rng(3).standard_normal((len(known),) + FS)
    c = o.condition_frames(known, xa)
    m, S = _dense_conditional(o, known, xa)
    np.testing.assert_allclose(c.mean.reshape(-1), m, atol=1e-10, rtol=0)
    np.testing.assert_allclose(c.cov, S, atol=1e-10, rtol=0)
    x = np.random.default_rng(4).standard_normal((3, T - len(known)) + FS)
    dense = refdiff.GaussianData(m, S)
    np.testing.assert_allclose(c.x0_mean(x, 0.6, 0.8).reshape(3, -1), dense.x0_mean(x.reshape(3, -1), 0.6, 0.8),
                               atol=1e-10, rtol=0)


def test_ar1_first_frame_and_bridge_closed_forms():
    """MATH.md (22.6): zero-mean AR(1) x S given frame 0 = c: frame f has mean rho^f c and
    temporal covariance rho^|f-g| - rho^(f+g); given frames 0 and T-1 (the bridge) frame f
    has mean (rho^f - rho^(2T-2-f)) / (1 - rho^(2T-2)) c + (rho^(T-1-f) - rho^(T-1+f)) / (1 -
    rho^(2T-2)) c'."""
    rho, n = 0.8, 6
    o = KroneckerGaussian.ar1(n, rho, (2, 2), length_scale=1.0, nugget=0.1)
    c, c2 = np.random.default_rng(5).standard_normal((2, 2, 2))
    g = o.condition_frames([0], c[None])
    f = np.arange(1, n)
    np.testing.assert_allclose(g.mean, rho ** f[:, None, None] * c[None], atol=1e-12)
    np.testing.assert_allclose(g.time_cov, rho ** np.abs(f[:, None] - f[None]) - rho ** (f[:, None] + f[None]),
                               atol=1e-12)
    b = o.condition_frames([0, n - 1], np.stack([c, c2]))
    f = np.arange(1, n - 1)[:, None, None]
    den = 1 - rho ** (2 * n - 2)
    want = (rho**f - rho ** (2 * n - 2 - f)) / den * c + (rho ** (n - 1 - f) - rho ** (n - 1 + f)) / den * c2
    np.testing.assert_allclose(b.mean, want, atol=1e-12)


@pytest.mark.parametrize("method", sorted(sampler_methods()))
def test_every_sampler_runs_on_the_conditional_oracle(method):
    """MATH.md (22.5): every registered sampler, unchanged, samples the exact first-frame
    conditional through its as_model (epsilon): 400 clips of the other frames, their mean
    within 0.3 of the conditional mean (several standard errors plus the bias of a 25-step
    grid) while the given frame is far from 0 (|c| = 3, so the unconditional mean 0 is far)."""
    o = KroneckerGaussian.ar1(T, 0.9, FS, length_scale=1.0, nugget=0.05)
    c = 3.0 * np.ones((1,) + FS)
    g = o.condition_frames([0], c)
    rng = np.random.default_rng(6)
    x_T = rng.standard_normal((400, T - 1) + FS)
    ts = refdiff.timesteps(1000, 25, "trailing")
    if method.startswith("flow_"):
        out = refdiff.sample(g.as_model(SCHED), x_T, SCHED, ts, method, rng=rng, progress=False)
    else:
        out = refdiff.sample(g.as_model(SCHED), x_T, SCHED, ts, method, rng=rng, progress=False)
    assert out.shape == x_T.shape and np.all(np.isfinite(out))
    assert np.max(np.abs(out.mean(0) - g.mean)) < 0.3


def test_image_to_video_by_replacement_keeps_the_frame_and_its_mean_is_the_noise_free_run():
    """MATH.md (22.7): replacement in time keeps the given first frame exactly at the data
    end; with the exact (affine) Gaussian denoiser every DDPM step and the hook are affine in
    the state and the noise, so the mean of 300 clips equals the run with every noise set
    to 0 (within 0.25, ~4 standard errors).  That mean is NOT the exact conditional mean
    rho^f c of MATH.md (22.6): replacement falls short of it by more than 0.3 here (the
    known bias of replacement inpainting, which the exact conditional does not have)."""
    o = KroneckerGaussian.ar1(T, 0.9, FS, length_scale=1.0, nugget=0.05)
    c = 2.0 * np.ones(FS)
    first = np.broadcast_to(c, (300,) + FS).copy()
    ts = refdiff.timesteps(1000, 100)
    out = image_to_video(o.as_model(SCHED), first, SCHED, ts, "ddpm", frames=T, rng=np.random.default_rng(7))
    np.testing.assert_allclose(out[:, 0], first, atol=1e-12)
    zero = lambda like: np.zeros(like.shape)  # noqa: E731
    hook = frame_replacement_hook([0], c[None, None], refdiff.make_grid(SCHED, ts), None, frames=T, noise=zero)
    mean = refdiff.sample(o.as_model(SCHED), np.zeros((1, T) + FS), SCHED, ts, "ddpm", noise=zero, project=hook,
                          progress=False)[0]
    assert np.max(np.abs(out.mean(0) - mean)) < 0.25
    exact = o.condition_frames([0], c[None]).mean
    assert np.min(np.abs(mean[1:] - exact)) > 0.3


def test_bad_input_clear_errors():
    """Wrong frame count / frame size for the oracle and the hooks raise ValueError naming
    the argument and the expected shape."""
    o = KroneckerGaussian.ar1(T, 0.5, FS)
    with pytest.raises(ValueError, match="values has shape"):
        o.condition_frames([0], np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="known"):
        o.condition_frames([T], np.zeros((1,) + FS))
    with pytest.raises(ValueError, match="data dimension"):
        o.x0_mean(np.zeros((2, T + 1) + FS), 0.5, 0.5)
    with pytest.raises(ValueError, match="rho"):
        ar1_covariance(4, 1.0)
    hook = frame_replacement_hook([0], np.zeros((2, 1, 4, 4)), refdiff.make_grid(SCHED, refdiff.timesteps(1000, 5)),
                                  np.random.default_rng(0), frames=T)
    with pytest.raises(ValueError, match="does not fit the clips"):
        hook(0, 10, np.zeros((2, T, 3, 3)))
    with pytest.raises(ValueError, match="x_first must be first frames"):
        image_to_video(o.as_model(SCHED), np.zeros((2, 1, 3, 3)), SCHED, refdiff.timesteps(1000, 5), "ddim", frames=T,
                       rng=np.random.default_rng(0))


def test_irreducible_clip_loss_is_the_eigenvalue_formula():
    """MATH.md (22.1) with MATH.md (14.18): for Gaussian clips the least epsilon MSE at
    (alpha, sigma) is mean_i alpha^2 nu_i / (alpha^2 nu_i + sigma^2) with nu = kappa (x) s;
    the Monte Carlo floor of refdiff.irreducible_loss on 4000 clips matches the formula
    averaged over the same timesteps within 4 standard errors (per-sample SE estimated)."""
    o = KroneckerGaussian.ar1(T, 0.9, FS, length_scale=1.5, nugget=0.05)
    rng = np.random.default_rng(8)
    n = 4000
    x0, t, eps = o.sample(n, rng), rng.integers(0, 1000, n), rng.standard_normal((n, T) + FS)
    floor = float(refdiff.irreducible_loss(o, x0, t, eps, SCHED))
    ab = SCHED.alpha_bars[t][:, None]
    nu = np.kron(o.kappa, o.s)[None]
    per = np.mean(ab * nu / (ab * nu + 1 - ab), axis=1)  # (n,)
    a, s = refdiff.alpha_sigma(SCHED, t, x0)
    r = (o.eps(a * x0 + s * eps, a, s) - eps).reshape(n, -1)
    se = np.std(np.mean(r * r, axis=1)) / np.sqrt(n)
    assert abs(floor - per.mean()) < 4 * se


def test_first_frame_coupling_exact_conditional_vs_replacement():
    """MATH.md (22.12) with MATH.md (22.6): clips drawn from the exact first-frame
    conditional (mean rho^f c, covariance (rho^|f-g| - rho^(f+g)) S) have coupling
    beta_f within 4 standard errors of rho^f and residual variance ratio within 4 SE of
    1; clips that ignore the given frame have beta_f within 4 SE of 0; replacement in time
    (MATH.md (22.7)) with the EXACT Gaussian denoiser has beta_1 below rho more than 5 SE
    (the method's bias, not a model's)."""
    from refdiff.video import first_frame_coupling

    rho, n = 0.9, 400
    o = KroneckerGaussian.ar1(T, rho, FS, length_scale=1.0, nugget=0.05)
    rng = np.random.default_rng(11)
    c = o.sample(n, rng)[:, 0]  # first frames from their marginal
    f = np.arange(1, T)
    cond = KroneckerGaussian(rho ** np.abs(f[:, None] - f[None]) - rho ** (f[:, None] + f[None]), o.space_cov,
                             frame_shape=FS)
    exact = np.concatenate([c[:, None], rho ** f[None, :, None, None] * c[:, None] + cond.sample(n, rng)], axis=1)
    r = first_frame_coupling(exact, c, o)
    np.testing.assert_allclose(r["coupling_exact"], rho ** f, rtol=1e-12)
    assert np.all(np.abs(r["coupling"] - rho ** f) < 4 * r["coupling_se"])
    assert abs(r["residual_ratio"] - 1.0) < 4 * r["residual_ratio_se"]
    free = o.sample(n, rng)
    free[:, 0] = c
    r0 = first_frame_coupling(free, c, o)
    assert np.all(np.abs(r0["coupling"]) < 4 * r0["coupling_se"])
    rep = image_to_video(o.as_model(SCHED), c, SCHED, refdiff.timesteps(1000, 50), "ddpm", frames=T, rng=rng)
    rr = first_frame_coupling(rep, c, o)
    assert rho - rr["coupling"][0] > 5 * rr["coupling_se"][0]


def test_clip_losses_and_ratio():
    """MATH.md (14.18): clip_losses' per-clip floor averages to refdiff.irreducible_loss on
    the same draws (same rng order: timesteps, then noise), its model loss to the direct
    squared error of the network's output; loss_ratio's delta-method standard error
    matches the spread of the ratio over 300 independent synthetic samples within 15 %."""
    from refdiff.nn.video import VideoConfig, video_forward, video_init
    from refdiff.video import clip_losses, loss_ratio

    o = KroneckerGaussian.ar1(T, 0.9, FS, length_scale=1.5, nugget=0.05)
    cfg = VideoConfig(frames=T, size=3, patch=1, width=8, heads=2, depth=1)
    P = video_init(np.random.default_rng(0), cfg)
    P["out.w"] = 0.1 * np.random.default_rng(1).standard_normal(P["out.w"].shape)
    x0 = o.sample(50, np.random.default_rng(2))
    m, f = clip_losses(P, cfg, o, x0, SCHED, np.random.default_rng(3), chunk=7)
    rng = np.random.default_rng(3)
    t, eps = rng.integers(0, 1000, 50), rng.standard_normal(x0.shape)
    np.testing.assert_allclose(f.mean(), float(refdiff.irreducible_loss(o, x0, t, eps, SCHED)), rtol=1e-12)
    a, s = refdiff.alpha_sigma(SCHED, t, x0)
    out = video_forward(P, a * x0 + s * eps, t.astype(float), cfg)[0]
    np.testing.assert_allclose(m.mean(), np.mean((out - eps) ** 2), rtol=1e-12)
    g = np.random.default_rng(4)
    draws = []
    for _ in range(300):
        fl = g.gamma(2.0, 0.5, 400)
        draws.append((2.0 * fl + 0.3 * g.standard_normal(400) * fl, fl))
    ratios = [loss_ratio(mm, ff)[0] for mm, ff in draws]
    se = np.mean([loss_ratio(mm, ff)[1] for mm, ff in draws])
    assert abs(np.std(ratios) / se - 1.0) < 0.15
    with pytest.raises(ValueError, match="paired losses"):
        loss_ratio(np.ones(3), np.ones(4))
