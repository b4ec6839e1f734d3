"""img2img / SDEdit (refdiff/editing/img2img.py) and exact output moments (refdiff/moments.py):
the strength rule's int() truncation by hand, start noising in three coordinate systems,
exact moments against Monte Carlo, DDPM's exact mean on any grid, the ODE/SDE limits."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refdiff
from refdiff.editing import img2img_grid, img2img_start, img2img_timesteps
from refdiff.samplers.common import to_vp

MU = np.array([0.5, -0.3])
SIG = np.array([[1.0, 0.9], [0.9, 1.0]])
SCH = refdiff.make_schedule("linear", 1000)
DATA = refdiff.GaussianData(MU, SIG)
MODEL = DATA.as_model(SCH)
X_IN = np.array([1.5, 0.0])


@pytest.mark.parametrize("n, strength, k", [
    (100, 0.29, 28),   # 100 * 0.29 = 28.999999999999996 in float64
    (100, 0.57, 56),   # 56.99999999999999
    (1000, 0.57, 570),  # 569.9999999999999
    (100, 0.3, 30),
    (50, 0.75, 37),
    (7, 1.0, 7),
    (10, 0.15, 1),
    (50, 0.0, 0),
    (1, 0.999, 0),
])
def test_strength_rule_int_truncation(n, strength, k):
    """MATH.md (17.3): k = int(n * strength) steps of the n-step grid's tail, hand-derived counts."""
    ts = refdiff.timesteps(1000, n)
    tail, t_start = img2img_timesteps(ts, strength)
    assert t_start == n - k and tail.size == k
    np.testing.assert_array_equal(tail, ts[n - k:])


def test_strength_rule_order_two_grid():
    """MATH.md (17.3): a grid that repeats each timestep (order 2) is cut at 2 * t_start."""
    ts = np.repeat(refdiff.timesteps(1000, 10), 2)
    tail, t_start = img2img_timesteps(ts, 0.35, order=2)
    assert t_start == 7 and tail.tolist() == ts[14:].tolist()


def test_start_noising_vp_ve_flow_are_one_point():
    """MATH.md (17.4): the VE and flow starts, divided by sqrt(a^2 + b^2), equal the VP start."""
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    a = math.sqrt(float(SCH.alpha_bars[600]))
    s = math.sqrt(1 - a * a)
    vp = img2img_start(x0, a, s, eps, "vp")
    np.testing.assert_allclose(vp, a * x0 + s * eps, rtol=1e-15)
    np.testing.assert_allclose(to_vp(img2img_start(x0, a, s, eps, "ve"), 1.0, s / a), vp, rtol=1e-13, atol=1e-15)
    u = s / (a + s)
    np.testing.assert_allclose(img2img_start(x0, a, s, eps, "flow"), (1 - u) * x0 + u * eps, rtol=1e-15)
    np.testing.assert_allclose(to_vp(img2img_start(x0, a, s, eps, "flow"), 1 - u, u), vp, rtol=1e-13, atol=1e-15)


def _pipe(method, strength, ts=None, **kw):
    ts = refdiff.timesteps(1000, 50) if ts is None else ts
    return lambda x, noise: refdiff.img2img(MODEL, x, SCH, ts, strength, method, noise=noise, **kw)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_img2img_moments_against_monte_carlo(method):
    """MATH.md (17.7): 20 000 img2img runs on a correlated Gaussian: empirical mean and covariance within 4 standard errors of the exact moments."""
    mean, cov = refdiff.affine_moments(_pipe(method, 0.6), X_IN)
    n = 20000
    x = refdiff.img2img(MODEL, np.tile(X_IN, (n, 1)), SCH, refdiff.timesteps(1000, 50), 0.6, method,
                        rng=np.random.default_rng(11))
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) <= 4 * se)
    d = x - mean
    se_c = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    assert np.all(np.abs(d.T @ d / n - cov) <= 4 * se_c)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 60), strength=st.floats(0.05, 1.0), spacing=st.sampled_from(["leading", "trailing", "linspace"]))
def test_ddpm_img2img_mean_is_exact_posterior_mean_on_any_grid(n, strength, spacing):
    """MATH.md (17.8): DDPM-img2img's output mean is mu + G (x_in - mu), G = alpha^2 Sigma (alpha^2 Sigma + sigma^2 I)^-1 at the start, on any grid."""
    ts = refdiff.timesteps(1000, n, spacing)
    if int(n * strength) < 1:
        return
    grid, _ = img2img_grid(SCH, ts, strength)
    a, s = grid[0].alpha, grid[0].sigma
    mean, _ = refdiff.affine_moments(_pipe("ddpm", strength, ts), X_IN, check=False)
    G = a * a * SIG @ np.linalg.inv(a * a * SIG + s * s * np.eye(2))
    np.testing.assert_allclose(mean, MU + G @ (X_IN - MU), rtol=0, atol=1e-11)


def test_ddim_img2img_against_closed_form_multipliers_and_strength_one_leak():
    """MATH.md (17.3): on the SD schedule with a leading+1 grid, strength 1 starts at 981 and DDIM's output keeps
    (prod m_i) alpha_981 of the input, m_i = (a a' s + b b') / (a^2 s + b^2) per step (s = 0.25): 3.6 %; exact_start: 0."""
    sd = refdiff.make_schedule("scaled_linear", 1000)
    g = refdiff.GaussianData(np.zeros(1), np.array([[0.25]]))
    ts = refdiff.timesteps(1000, 50, "leading", 1)
    assert ts[0] == 981
    pipe = lambda rule: lambda x, noise: refdiff.img2img(g.as_model(sd), x, sd, ts, 1.0, "ddim", noise=noise,
                                                      strength_rule=rule)
    mean, cov = refdiff.affine_moments(pipe("library"), np.ones(1))
    ab = [float(sd.alpha_bars[t]) for t in ts] + [1.0]
    prod = 1.0
    for t0, t1 in zip(ab[:-1], ab[1:]):
        a, b, a1, b1 = math.sqrt(t0), math.sqrt(1 - t0), math.sqrt(t1), math.sqrt(1 - t1)
        prod *= (a * a1 * 0.25 + b * b1) / (a * a * 0.25 + b * b)
    np.testing.assert_allclose(mean, prod * math.sqrt(ab[0]), rtol=1e-12)
    np.testing.assert_allclose(cov, [[(prod * math.sqrt(1 - ab[0])) ** 2]], rtol=1e-12)
    assert round(float(mean[0]), 3) == 0.036
    mean0, _ = refdiff.affine_moments(pipe("exact_start"), np.ones(1))
    assert mean0[0] == 0.0


def test_ddim_img2img_converges_to_the_ode_limit():
    """MATH.md (17.8): DDIM-img2img's exact moments approach the PF-ODE limit (gain G^1/2, covariance Sigma (I - G)) at first order as the grid refines."""
    errs = []
    for n in (20, 200, 1000):
        ts = refdiff.timesteps(1000, n, "trailing")
        grid, _ = img2img_grid(SCH, ts, 0.5)
        m_lim, c_lim = refdiff.sdedit_limits(MU, SIG, X_IN, grid[0].alpha, grid[0].sigma, "ode")
        mean, cov = refdiff.affine_moments(_pipe("ddim", 0.5, ts), X_IN, check=False)
        errs.append(max(np.abs(mean - m_lim).max(), np.abs(cov - c_lim).max()))
    slope = math.log(errs[1] / errs[2]) / math.log(500 / 100)  # 10, 100, 500 steps of the tail
    assert errs[0] > errs[1] > errs[2] and 0.8 < slope < 1.3 and errs[2] < 5e-3  # DDIM: first order


def test_sdedit_limits_keep_the_data_distribution_on_distribution():
    """MATH.md (17.8): for inputs drawn from the data, both limits return the data law: G^1/2 Sigma G^1/2 + Sigma (I - G) = Sigma."""
    a, s = 0.6, 0.8
    for kind in ("ode", "sde"):
        m0, c0 = refdiff.sdedit_limits(MU, SIG, MU, a, s, kind)
        _, A = np.linalg.eigh(SIG)
        gains = [(refdiff.sdedit_limits(MU, SIG, MU + e, a, s, kind)[0] - m0) for e in np.eye(2)]
        Gm = np.stack(gains, 1)
        np.testing.assert_allclose(Gm @ SIG @ Gm.T + c0, SIG, atol=1e-12)


def test_repeats_and_mask():
    """repeats = K applies the edit K times (same draws as K single calls); with a mask the kept entries equal x0 exactly."""
    ts = refdiff.timesteps(1000, 20)
    x0 = np.tile(X_IN, (3, 1))
    a = refdiff.img2img(MODEL, x0, SCH, ts, 0.5, "ddpm", rng=np.random.default_rng(5), repeats=2)
    rng = np.random.default_rng(5)
    b = refdiff.img2img(MODEL, refdiff.img2img(MODEL, x0, SCH, ts, 0.5, "ddpm", rng=rng), SCH, ts, 0.5, "ddpm", rng=rng)
    np.testing.assert_array_equal(a, b)
    y = refdiff.img2img(MODEL, x0, SCH, ts, 0.7, "ddim", rng=np.random.default_rng(1), mask=np.array([0.0, 1.0]))
    np.testing.assert_array_equal(y[:, 0], x0[:, 0])
    assert not np.allclose(y[:, 1], x0[:, 1])


def test_bad_strength():
    """strength outside [0, 1] or leaving no step, an unknown rule: clear errors."""
    ts = refdiff.timesteps(1000, 10)
    x = np.zeros((1, 2))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
            refdiff.img2img(MODEL, x, SCH, ts, bad, "ddim", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="leaves no step"):
        refdiff.img2img(MODEL, x, SCH, ts, 0.05, "ddim", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="strength_rule"):
        refdiff.img2img(MODEL, x, SCH, ts, 0.5, "ddim", rng=np.random.default_rng(0), strength_rule="nearest")
    with pytest.raises(TypeError, match="rng"):
        refdiff.img2img(MODEL, x, SCH, ts, 0.5, "ddim")


def test_strength_rule_on_sigma_and_continuous_grids():
    """MATH.md (17.3): on an explicit sigma grid and on a continuous VP grid the run is the tail of the n-step grid too."""
    sig = refdiff.karras_sigmas(10, 0.02, 80.0, append_zero=True)
    grid, _ = img2img_grid(SCH, None, 0.57, sigmas=sig)  # int(10 * 0.57) = 5 steps
    np.testing.assert_allclose([p.sigma / p.alpha for p in grid], sig[5:], rtol=1e-12)
    x = refdiff.img2img(MODEL, np.tile(X_IN, (2, 1)), SCH, None, 0.57, "euler", rng=np.random.default_rng(0), sigmas=sig)
    assert x.shape == (2, 2) and np.all(np.isfinite(x))
    vp = refdiff.LinearVP()
    ts = refdiff.time_grid(vp, 10)
    grid, _ = img2img_grid(vp, ts, 0.29)  # int(10 * 0.29) = 2 steps
    assert [p.t for p in grid] == pytest.approx(list(ts[8:]))
    grid, pure = img2img_grid(vp, ts, 1.0, strength_rule="exact_start")
    assert pure and grid[0].t == 1.0
