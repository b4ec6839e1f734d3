"""Inpainting (refdiff/editing/inpaint.py): replacement (fresh / re-used noise), RePaint and
the exact conditional, against Monte Carlo, independent methods and closed forms."""

import numpy as np
import pytest

import refdiff
from refdiff.editing import repaint_schedule, repaint_undo_step
from refdiff.samplers.ddpm import respace

MU = np.array([0.5, -0.3])
SIG = np.array([[1.0, 0.9], [0.9, 1.0]])
SCH = refdiff.make_schedule("linear", 1000)
DATA = refdiff.GaussianData(MU, SIG)
MODEL = DATA.as_model(SCH)
MASK = np.array([0.0, 1.0])  # generate x_1, keep x_0 (diffusers meaning)
XK = np.array([1.5, 0.0])


def _pipe(ts, method="ddpm", **kw):
    return lambda x, noise: refdiff.inpaint(MODEL, x, MASK, SCH, ts, method, noise=noise, **kw)


CASES = {
    "replace_fresh": dict(ts=refdiff.timesteps(1000, 100), scheme="replace", noise_mode="fresh"),
    "replace_reuse": dict(ts=refdiff.timesteps(1000, 100), scheme="replace", noise_mode="reuse"),
    "replace_ddim": dict(ts=refdiff.timesteps(1000, 20), method="ddim", scheme="replace", noise_mode="fresh"),
    "repaint": dict(ts=refdiff.timesteps(1000, 30), scheme="repaint", jump_length=5, jump_n_sample=3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_inpainting_moments_against_monte_carlo(case):
    """MATH.md (17.5), (17.6), (17.7): 20 000 inpainting runs on a correlated Gaussian: mean and covariance of the generated
    entry within 4 standard errors of the exact moments; the kept entry is x_known exactly."""
    kw = CASES[case]
    mean, cov = refdiff.affine_moments(_pipe(**kw), XK)
    n = 20000
    opts = {k: v for k, v in kw.items() if k not in ("ts", "method")}
    x = refdiff.inpaint(MODEL, np.tile(XK, (n, 1)), MASK, SCH, kw["ts"], kw.get("method", "ddpm"),
                        rng=np.random.default_rng(3), **opts)
    assert np.all(x[:, 0] == 1.5) and mean[0] == 1.5 and cov[0, 0] == 0.0
    se = np.sqrt(cov[1, 1] / n)
    assert abs(x[:, 1].mean() - mean[1]) <= 4 * se
    se_v = cov[1, 1] * np.sqrt(2.0 / n)
    assert abs(x[:, 1].var() - cov[1, 1]) <= 4 * se_v


def test_repaint_without_resampling_equals_replacement_ddpm():
    """MATH.md (17.5), (17.6): RePaint with jump_n_sample = 1 (no undo) has the exact moments of replacement with fresh noise under
    refdiff's strided DDPM loop: two independently written chains (respaced schedule vs the loop's grid) agree to 1e-12."""
    ts = refdiff.timesteps(1000, 40, "trailing")
    m1, c1 = refdiff.affine_moments(_pipe(ts=ts, scheme="repaint", jump_n_sample=1), XK)
    m2, c2 = refdiff.affine_moments(_pipe(ts=ts, scheme="replace"), XK)
    np.testing.assert_allclose(m1, m2, atol=1e-12)
    np.testing.assert_allclose(c1, c2, atol=1e-12)


def test_reused_noise_inflates_variance_and_more_resampling_reduces_bias():
    """MATH.md (17.7): re-using the initial noise (diffusers 4-channel) keeps the mean and inflates the variance; RePaint's
    resampling moves the mean towards the exact conditional mean 0.6 (known x_0 = 1.5)."""
    ts = refdiff.timesteps(1000, 100)
    mf, cf = refdiff.affine_moments(_pipe(ts=ts, noise_mode="fresh"), XK)
    mr, cr = refdiff.affine_moments(_pipe(ts=ts, noise_mode="reuse"), XK)
    np.testing.assert_allclose(mf, mr, atol=1e-12)
    assert cr[1, 1] > 1.2 * cf[1, 1]
    ts = refdiff.timesteps(1000, 50)
    means = [refdiff.affine_moments(_pipe(ts=ts, scheme="repaint", jump_length=5, jump_n_sample=r), XK)[0][1]
             for r in (1, 3, 6)]
    assert means[0] < means[1] < means[2] < 0.6


def test_diagonal_covariance_makes_replacement_exact():
    """With a diagonal covariance the known entry says nothing about the other: replacement with re-used noise generates
    exactly what the unconditional sampler generates from the same draws."""
    g = refdiff.GaussianData(MU, np.array([1.0, 0.5]))
    model = g.as_model(SCH)
    ts = refdiff.timesteps(1000, 50)
    x = refdiff.inpaint(model, np.tile(XK, (5, 1)), MASK, SCH, ts, "ddpm", rng=np.random.default_rng(2),
                        noise_mode="reuse")
    rng = np.random.default_rng(2)
    y = refdiff.sample(model, rng.standard_normal((5, 2)), SCH, ts, "ddpm", rng=rng, progress=False)
    np.testing.assert_allclose(x[:, 1], y[:, 1], rtol=1e-13, atol=1e-15)


def test_repaint_schedule_counts():
    """MATH.md (17.6): (250, 10, 10) has 4571 indices, 2410 reverse and 2160 undo steps (250 + 9 * 10 * 24 jumps); (20, 1, 2)
    has 20 + 19 reverse and 19 undo steps."""
    for (n, j, r), (rev, undo) in {(250, 10, 10): (2410, 2160), (20, 1, 2): (39, 19)}.items():
        s = repaint_schedule(n, j, r)
        d = np.diff(s)
        assert s[0] == n - 1 and s[-1] == -1 and set(np.abs(d)) == {1}
        assert (d < 0).sum() == rev and (d > 0).sum() == undo
    assert len(repaint_schedule(250, 10, 10)) == 4571
    assert repaint_schedule(5, 10, 10) == [4, 3, 2, 1, 0, -1]


def test_undo_step_maps_marginal_to_marginal():
    """MATH.md (17.6): the undo step takes the noised marginal at index j - 1 to the one at j (exact Gaussian algebra)."""
    chain = respace(SCH, refdiff.timesteps(1000, 25))
    for j in (0, 7, 24):
        ab_prev = 1.0 if j == 0 else float(chain.alpha_bars[j - 1])
        ab = float(chain.alpha_bars[j])
        a = float(repaint_undo_step(chain, np.ones(1), j, np.zeros(1))[0])  # coefficient of x
        b = float(repaint_undo_step(chain, np.zeros(1), j, np.ones(1))[0])  # coefficient of z
        np.testing.assert_allclose(a * np.sqrt(ab_prev), np.sqrt(ab), rtol=1e-13)
        cov_prev = ab_prev * SIG + (1 - ab_prev) * np.eye(2)
        np.testing.assert_allclose(a * a * cov_prev + b * b * np.eye(2), ab * SIG + (1 - ab) * np.eye(2), atol=1e-13)


def test_oracle_inpainting_and_wrong_mode_fraction():
    """MATH.md (17.1), (17.2): oracle inpainting draws the exact conditional (mean 0.6, variance 0.19 within 4 standard errors);
    on the two-mode mixture it lands in the wrong mode at the exact rate (~1e-4), replacement far more often."""
    n = 20000
    x = refdiff.oracle_inpaint(DATA, XK, MASK, n, np.random.default_rng(0))
    assert np.all(x[:, 0] == 1.5)
    assert abs(x[:, 1].mean() - 0.6) <= 4 * np.sqrt(0.19 / n)
    assert abs(x[:, 1].var() - 0.19) <= 4 * 0.19 * np.sqrt(2 / n)
    mix = refdiff.GaussianMixture([0.5, 0.5], [[1.0, 1.0], [-1.0, -1.0]], 0.09)
    xk = np.array([0.4, 0.0])
    o = refdiff.oracle_inpaint(mix, xk, MASK, n, np.random.default_rng(1))
    assert (o[:, 1] < 0).mean() < 1e-3
    r = refdiff.inpaint(mix.as_model(SCH), np.tile(xk, (2000, 1)), MASK, SCH, refdiff.timesteps(1000, 100), "ddpm",
                        rng=np.random.default_rng(2))
    assert (r[:, 1] < 0).mean() > 0.05


def test_bad_masks_and_schemes():
    """A mask that is not 0/1, of the wrong shape or with nothing to generate; an unknown scheme or noise mode: clear errors."""
    x = np.zeros((3, 2))
    ts = refdiff.timesteps(1000, 10)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="only 0"):
        refdiff.inpaint(MODEL, x, np.array([0.5, 1.0]), SCH, ts, rng=rng)
    with pytest.raises(ValueError, match="mask has shape"):
        refdiff.inpaint(MODEL, x, np.ones(3), SCH, ts, rng=rng)
    with pytest.raises(ValueError, match="nothing to generate"):
        refdiff.inpaint(MODEL, x, np.zeros(2), SCH, ts, rng=rng)
    with pytest.raises(ValueError, match="scheme = 'blend' is not one of 'replace', 'repaint'"):
        refdiff.inpaint(MODEL, x, MASK, SCH, ts, rng=rng, scheme="blend")
    with pytest.raises(ValueError, match="noise_mode"):
        refdiff.inpaint(MODEL, x, MASK, SCH, ts, rng=rng, noise_mode="same")
    with pytest.raises(TypeError, match="discrete Schedule"):
        refdiff.inpaint(MODEL, x, MASK, refdiff.LinearVP(), np.linspace(1, 0.01, 5), rng=rng, scheme="repaint")
    with pytest.raises(ValueError, match="jump_length"):
        repaint_schedule(10, 0, 2)


def test_matches_an_independent_implementation():
    """MATH.md (17.5), (17.6), (17.7): the exact moments of x_1 agree with an independent affine tracing written for the
    research notes (capabilities.md section 4.4, three decimals): replacement DDPM 1000 steps fresh noise 0.326 / 0.308,
    re-used noise variance 0.400; RePaint 250 steps, jump_length 10, jump_n_sample 2: 0.461 / 0.229."""
    ts = refdiff.timesteps(1000, 1000)
    m, c = refdiff.affine_moments(_pipe(ts, noise_mode="fresh"), XK, check=False)
    assert (round(m[1], 3), round(c[1, 1], 3)) == (0.326, 0.308)
    _, c = refdiff.affine_moments(_pipe(ts, noise_mode="reuse"), XK, check=False)
    assert round(c[1, 1], 3) == 0.400
    m, c = refdiff.affine_moments(_pipe(refdiff.timesteps(1000, 250, "leading"), scheme="repaint", jump_n_sample=2), XK,
                                  check=False)  # the research notes used the "leading" grid 996, 992, ..., 0
    assert (round(m[1], 3), round(c[1, 1], 3)) == (0.461, 0.229)


def test_oracle_inpainting_model_ddpm_mean_is_exact_on_any_grid():
    """MATH.md (17.1): the ideal 9-channel model is the conditioned oracle; a DDPM run with it from x_T = 0 + noise has mean E[x0 | x_T = 0, kept]
    (about (1.5, 0.6)) to 1e-12, on a coarse grid too (each step's posterior mean is exact: the tower rule)."""
    model = refdiff.oracle_inpaint_model(DATA, XK, MASK, SCH)
    ts = refdiff.timesteps(1000, 7, "trailing")
    run = lambda x, noise: refdiff.sample(model, noise(x), SCH, ts, "ddpm", noise=noise, progress=False)  # noqa: E731
    mean, _ = refdiff.affine_moments(run, np.zeros(2))
    cond = DATA.condition(np.array([[1.0, 0.0]]), [1.5])
    m, C = cond.mean, cond.cov
    a, s = float(SCH.sqrt_alpha_bars[999]), float(SCH.sqrt_one_minus_alpha_bars[999])
    # x_T ~ N(0, I) rather than the true marginal: the mean is E[x0 | x_T] averaged over x_T, i.e. at x_T = 0
    want = m + a * C @ np.linalg.solve(a * a * C + s * s * np.eye(2), -a * m)
    np.testing.assert_allclose(mean, want, atol=1e-12)
    assert abs(want[1] - 0.6) < 1e-5 and want[0] == 1.5


def test_inpaint_condition_entries():
    """The inpaint condition kind's entries: mask (N, 1, H, W), masked image zero where generated."""
    x = np.arange(2 * 3 * 4 * 4, dtype=float).reshape(2, 3, 4, 4)
    m = np.zeros((1, 3, 4, 4))
    m[..., 2:, :] = 1.0
    c = refdiff.inpaint_condition(x, m)
    assert c["mask"].shape == (2, 1, 4, 4) and np.all(c["masked_image"][..., 2:, :] == 0)
    np.testing.assert_array_equal(c["masked_image"][..., :2, :], x[..., :2, :])
