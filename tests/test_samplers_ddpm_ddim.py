"""DDPM and DDIM: step functions against the posterior, each other and exact oracles.

Every expected value is computed independently of the code under test: Gaussian
conditioning (the oracle's exact reverse kernel), the forward marginals, the exact
probability-flow map of Gaussian data, or a hand-worked grid.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff
from refdiff.samplers.ddim import ddim_invert, ddim_loop, library_prev_timesteps
from refdiff.samplers.ddpm import ddpm_loop, respace
from tests._support import assert_close, asx, exact_ode, fitted_order, schedule_and_t, schedules


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


class CountingNoise:
    """A noise callable that records how often it is called (and returns fixed draws)."""

    def __init__(self, seed=0):
        self.rng, self.calls = np.random.default_rng(seed), 0

    def __call__(self, like):
        self.calls += 1
        return refdiff.standard_normal(self.rng, like.shape, like)


GAUSS = refdiff.GaussianData([1.0, -0.5], [[1.0, 0.6], [0.6, 0.8]])


# ------------------------------------------------------------------------- DDPM step
@given(schedule_and_t(min_T=2, max_T=100), st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_ddpm_mean_is_eps_form(xp, st_t, seed):
    """MATH.md (8.1), (8.2): the posterior mean with x0_hat plugged in equals
    (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t).  float64 algebra: 1e-10."""
    s, t = st_t
    x, eps = asx(xp, _rand((3, 4), seed)), asx(xp, _rand((3, 4), seed + 1))
    mean = refdiff.ddpm_step(s, eps, t, x, asx(xp, np.zeros((3, 4))))
    expected = (x - float(s.betas[t]) / math.sqrt(1 - s.alpha_bars[t]) * eps) / math.sqrt(s.alphas[t])
    assert_close(mean, expected, xp=xp, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("t", [0, 1, 7, 19])
def test_ddpm_mean_with_oracle_equals_exact_reverse_kernel_mean(xp, t):
    """MATH.md (8.1): with the exact E[x_0 | x_t] of Gaussian data, the DDPM mean equals the
    mean of the exact reverse kernel q(x_{t-1} | x_t) (Gaussian conditioning, MATH.md (6.16)),
    because the posterior mean is affine in x_0.  float64: 1e-11."""
    s = refdiff.make_schedule("cosine", 20)
    x = asx(xp, _rand((5, 2), t))
    x0 = GAUSS.x0_mean(x, math.sqrt(s.alpha_bars[t]), math.sqrt(1 - s.alpha_bars[t]))
    mean = refdiff.ddpm_step(s, x0, t, x, asx(xp, np.zeros((5, 2))), prediction_type="sample")
    assert_close(mean, GAUSS.reverse_kernel(s, x, t)[0], xp=xp, rtol=1e-11, atol=1e-12)


def test_ddpm_variances(xp):
    """MATH.md (8.3): with unit noise the step adds exactly exp(log Sigma / 2): fixed_small
    sqrt(beta_tilde_t) where beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (the DDPM
    posterior variance, computed here from betas), fixed_large sqrt(beta_t); learned_range
    interpolates logs, so v = +1 -> fixed_large, v = -1 -> fixed_small, v = 0 the geometric
    mean.  float64: 1e-12."""
    s = refdiff.make_schedule("linear", 50)
    t = 17
    ab = np.cumprod(1 - s.betas)
    beta_tilde = s.betas[t] * (1 - ab[t - 1]) / (1 - ab[t])
    x, eps, one = asx(xp, _rand((2, 3), 0)), asx(xp, _rand((2, 3), 1)), asx(xp, np.ones((2, 3)))
    zero = 0.0 * one
    base = refdiff.ddpm_step(s, eps, t, x, zero)
    for vt, var in (("fixed_small", beta_tilde), ("fixed_large", s.betas[t])):
        assert_close(refdiff.ddpm_step(s, eps, t, x, one, variance_type=vt) - base, math.sqrt(var) * one, xp=xp)
    for v, var in ((1.0, s.betas[t]), (-1.0, beta_tilde), (0.0, math.sqrt(beta_tilde * s.betas[t]))):
        out2 = xp.concat([eps, v * one], axis=1)
        got = refdiff.ddpm_step(s, out2, t, x, one, variance_type="learned_range") - base
        assert_close(got, math.sqrt(var) * one, xp=xp, rtol=1e-10)


def test_ddpm_final_step_rule(xp):
    """MATH.md (8.4): at t = 0 no noise is added (noise may be None) and the result is x0_hat
    exactly (coef1_0 = 1, coef2_0 = 0 since alpha_bar_{-1} = 1); with an array t only the
    samples at t > 0 get noise."""
    s = refdiff.make_schedule("linear", 10)
    x, eps = asx(xp, _rand((4, 3), 0)), asx(xp, _rand((4, 3), 1))
    x0 = (x - math.sqrt(1 - s.alpha_bars[0]) * eps) / math.sqrt(s.alpha_bars[0])
    for vt in ("fixed_small", "fixed_large"):
        assert_close(refdiff.ddpm_step(s, eps, 0, x, None, variance_type=vt), x0, xp=xp, rtol=1e-12, atol=1e-12)
    t = asx(xp, np.array([0, 3, 0, 5]))
    z = asx(xp, np.ones((4, 3)))
    got = refdiff.ddpm_step(s, eps, t, x, z)
    nonoise = refdiff.ddpm_step(s, eps, t, x, 0.0 * z)
    diff = refdiff.to_numpy(got - nonoise)
    np.testing.assert_array_equal(diff[[0, 2]], 0.0)
    assert np.all(diff[[1, 3]] > 0)


def test_ddpm_loop_noise_count_and_last_step():
    """MATH.md (8.4): the DDPM loop draws noise exactly steps - 1 times (full and strided
    grids), and its output is the last step's x0_hat exactly (no noise on the final step)."""
    for T, n in ((20, 20), (50, 7)):
        s = refdiff.make_schedule("linear", T)
        noise, last = CountingNoise(), {}
        ts = refdiff.timesteps(T, n, "linspace")
        out = ddpm_loop(GAUSS.as_model(s), _rand((6, 2), 3), s, ts, noise=noise,
                        callback=lambda i, t, x, x0: last.update(x0=x0))
        assert noise.calls == n - 1
        np.testing.assert_array_equal(out, last["x0"])


@pytest.mark.parametrize("method", ["ddpm", "ddim", "euler", "heun", "dpm_2", "lms", "euler_ancestral", "edm"])
def test_point_mass_oracle_returns_the_point(method):
    """MATH.md (8.4), (9.3): for data that is a single point p, E[x_0 | x_t] = p at every
    time, so every sampler's final step (DDPM without noise, DDIM/Euler to sigma = 0)
    returns p exactly (float64 rounding: 1e-12)."""
    p = np.array([[0.7, -1.3]])
    data = refdiff.EmpiricalData(p)
    s = refdiff.make_schedule("linear", 100)
    out = refdiff.sample(data.as_model(s), _rand((5, 2), 0), s, refdiff.timesteps(100, 10), method,
                         rng=np.random.default_rng(1), progress=False, **({"s_churn": 5.0} if method == "edm" else {}))
    np.testing.assert_allclose(out, np.repeat(p, 5, axis=0), rtol=0, atol=1e-12)


def test_respace_composes_original_chain():
    """MATH.md (8.5): the respaced chain's alpha_bar at each kept timestep equals the
    original's, i.e. its alphas are products of the skipped original alphas; on the full
    grid it is the original schedule."""
    s = refdiff.make_schedule("cosine", 40)
    ts = refdiff.timesteps(40, 6, "linspace")  # 39, 31, 23, 16, 8, 0
    r = respace(s, ts)
    asc = ts[::-1]
    for i in range(1, len(asc)):
        np.testing.assert_allclose(r.alphas[i], np.prod(s.alphas[asc[i - 1] + 1: asc[i] + 1]), rtol=1e-12)
    np.testing.assert_allclose(respace(s, np.arange(39, -1, -1)).betas, s.betas, rtol=1e-10)


# ------------------------------------------------------------------------- DDIM step
@given(schedules(min_T=3, max_T=100), st.data(), st.floats(0.0, 1.0))
@settings(max_examples=30)
def test_ddim_conditional_preserves_marginals(sched, data, eta):
    """MATH.md (8.6)-(8.8): with the true (x_0, eps) plugged in, the DDIM update is
    x_s = alpha_s x_0 + a eps + b z with a^2 + b^2 = sigma_s^2 (so q(x_s | x_0) is the forward
    marginal (2.4) for every eta); b is eta times the posterior std of the Markov step s -> t
    (8.8), by Gaussian conditioning; and for eta = 1 on consecutive steps b^2 is the DDPM
    posterior variance and the mean the posterior mean of q(x_{t-1} | x_t, x_0) (3.2)."""
    t = data.draw(st.integers(1, sched.T - 1))
    t_prev = data.draw(st.integers(-1, t - 1))
    x0, e1 = _rand((1, 2), t), _rand((1, 2), t + 7)
    x_t = refdiff.q_sample(sched, x0, t, e1)
    zero = np.zeros((1, 2))
    det = refdiff.ddim_step(sched, e1, t, t_prev, x_t, eta=eta, noise=zero)
    b = refdiff.ddim_step(sched, e1, t, t_prev, x_t, eta=eta, noise=np.ones((1, 2))) - det
    ab_s = 1.0 if t_prev < 0 else sched.alpha_bars[t_prev]
    a = (det - math.sqrt(ab_s) * x0) / e1
    np.testing.assert_allclose(a**2 + b**2, 1 - ab_s, rtol=1e-8, atol=1e-12)
    # b = eta x the std of q(x_s | x_t, x_0) for the Markov step s -> t (Gaussian conditioning:
    # Var(x_s|x_0) - Cov(x_s, x_t|x_0)^2 / Var(x_t|x_0), Cov = sqrt(abar_t/abar_s)(1 - abar_s))
    ab_t = sched.alpha_bars[t]
    post_var = (1 - ab_s) - (ab_t / ab_s) * (1 - ab_s) ** 2 / (1 - ab_t)
    np.testing.assert_allclose(b**2, np.full(b.shape, eta**2 * max(post_var, 0.0)), rtol=1e-8, atol=1e-14)
    if eta == 1.0 and t_prev == t - 1:
        mean, var, _ = refdiff.q_posterior_mean_variance(sched, x0, x_t, t)
        np.testing.assert_allclose(det, mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b**2, np.broadcast_to(var, b.shape), rtol=1e-8, atol=1e-14)


@given(schedule_and_t(min_T=2, max_T=200), st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_ddim_eta1_step_equals_ddpm_step(xp, st_t, seed):
    """MATH.md (8.8): DDIM with eta = 1 from t to t - 1 is the DDPM fixed-small step, with the
    same injected noise.  float64: 1e-10."""
    s, t = st_t
    x, eps, z = (asx(xp, _rand((3, 2), seed + k)) for k in range(3))
    for pt in ("epsilon", "v_prediction"):
        a = refdiff.ddim_step(s, eps, t, t - 1, x, eta=1.0, noise=z, prediction_type=pt)
        b = refdiff.ddpm_step(s, eps, t, x, z, prediction_type=pt)
        assert_close(a, b, xp=xp, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n", [30, 7])
def test_ddim_eta1_loop_equals_ddpm_loop(n):
    """MATH.md (8.5), (8.8): the DDIM loop with eta = 1 equals DDPM ancestral (fixed-small;
    respaced on a strided grid) with the same noise stream, draw for draw.  1e-11."""
    s = refdiff.make_schedule("linear", 30)
    ts = refdiff.timesteps(30, n, "linspace")
    m = GAUSS.as_model(s)
    x = _rand((4, 2), 0)
    a = refdiff.sample(m, x, s, ts, "ddim", eta=1.0, rng=np.random.default_rng(5), progress=False)
    b = refdiff.sample(m, x, s, ts, "ddpm", rng=np.random.default_rng(5), progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_ddim_library_prev_rule_hand_worked():
    """MATH.md (8.11): T = 10, n = 3, trailing spacing gives round(10 - 10k/3) - 1 =
    9, 6, 2; the library rule t - T//n gives 9 - 3 = 6, 6 - 3 = 3, 2 - 3 = -1, where the grid
    rule gives 6, 2, -1 (with leading spacing 6, 3, 0 both rules agree).  The loop with the
    library rule is the composition of ddim_step with those t_prev."""
    ts = refdiff.timesteps(10, 3, "trailing")
    np.testing.assert_array_equal(ts, [9, 6, 2])
    np.testing.assert_array_equal(library_prev_timesteps(10, ts), [6, 3, -1])
    np.testing.assert_array_equal(library_prev_timesteps(10, refdiff.timesteps(10, 3, "leading")), [3, 0, -1])
    s = refdiff.make_schedule("linear", 10)
    m = GAUSS.as_model(s)
    x = _rand((3, 2), 1)
    got = ddim_loop(m, x, s, ts, t_prev_rule="library")
    ref = x
    for t, tp in ((9, 6), (6, 3), (2, -1)):
        ref = refdiff.ddim_step(s, m(ref, np.full(3, t)), t, tp, ref)
    np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_ddim_set_alpha_to_one_false():
    """MATH.md (8.11): with set_alpha_to_one=False the last step targets alpha_bar[0]: for a
    "sample" model returning a constant c, the DDIM step is sqrt(abar_s) c + sqrt(1 - abar_s)
    eps_hat with eps_hat = (x - sqrt(abar_t) c) / sqrt(1 - abar_t) (hand algebra, (8.7))."""
    s = refdiff.make_schedule("linear", 10)
    c = np.array([[0.5, -0.25]])
    model = lambda x, t: np.broadcast_to(c, x.shape).copy()  # noqa: E731
    x = _rand((2, 2), 4)
    out = ddim_loop(model, x, s, np.array([0]), prediction_type="sample", set_alpha_to_one=False)
    eps = (x - math.sqrt(s.alpha_bars[0]) * c) / math.sqrt(1 - s.alpha_bars[0])
    np.testing.assert_allclose(out, math.sqrt(s.alpha_bars[0]) * c + math.sqrt(1 - s.alpha_bars[0]) * eps, rtol=1e-12)
    np.testing.assert_allclose(ddim_loop(model, x, s, np.array([0]), prediction_type="sample"),
                               np.broadcast_to(c, x.shape), rtol=1e-12)


def test_clipping_and_thresholding():
    """MATH.md (8.10): the final DDIM/DDPM step to alpha_bar = 1 returns the processed x0_hat:
    clipped to [-r, r] with clip_sample, dynamically thresholded with thresholding (which
    takes precedence); use_clipped_model_output recomputes eps from the clipped x0 so that
    x_t = alpha x0_c + sigma eps_c holds."""
    s = refdiff.make_schedule("linear", 10)
    x0 = np.array([[3.0, -0.5], [0.2, -4.0]])
    model = lambda x, t: x0.copy()  # noqa: E731
    x = _rand((2, 2), 0)
    got = ddim_loop(model, x, s, np.array([3]), prediction_type="sample", clip_sample=True, clip_sample_range=2.0)
    np.testing.assert_array_equal(got, np.clip(x0, -2, 2))
    got = ddpm_loop(model, x, s, np.array([3]), prediction_type="sample", thresholding=True, sample_max_value=3.5,
                    dynamic_thresholding_ratio=1.0)
    # per sample: s = clip(max|x0|, 1, 3.5) = 3.0 and 3.5; x0 <- clip(x0, -s, s) / s
    np.testing.assert_allclose(got, [[1.0, -0.5 / 3.0], [0.2 / 3.5, -1.0]], rtol=1e-12)
    # use_clipped_model_output: from t = 3 to t_prev = 1 the step is alpha_s x0_c + sigma_s eps_c
    a, sg = math.sqrt(s.alpha_bars[3]), math.sqrt(1 - s.alpha_bars[3])
    a1, s1 = math.sqrt(s.alpha_bars[1]), math.sqrt(1 - s.alpha_bars[1])
    x0c = np.clip(x0, -1, 1)
    got = refdiff.ddim_step(s, x0, 3, 1, x, prediction_type="sample", clip_sample=True, use_clipped_model_output=True)
    np.testing.assert_allclose(got, a1 * x0c + s1 * (x - a * x0c) / sg, rtol=1e-12)
    got = refdiff.ddim_step(s, x0, 3, 1, x, prediction_type="sample", clip_sample=True)
    np.testing.assert_allclose(got, a1 * x0c + s1 * (x - a * x0) / sg, rtol=1e-12)


# ------------------------------------------------------------------------- orders (Gaussian oracle)
VP = refdiff.LinearVP()


def _exact(x, t_from, t_to):
    return exact_ode(GAUSS, VP, x, t_from, t_to)


def test_ddim_global_order_one():
    """MATH.md (8.7): DDIM (eta = 0) integrates the probability-flow ODE with global error
    O(1/n): measured against the exact ODE map of Gaussian data (6.12) on a time-uniform
    grid of the linear VP, n = 16..128.  Fitted slope 0.98 here; accepted 0.9..1.1."""
    x = _rand((8, 2), 0)
    ns = [16, 32, 64, 128]
    errs = []
    for n in ns:
        ts = refdiff.time_grid(VP, n, "time_uniform")
        out = refdiff.sample(GAUSS.as_model(VP), x, VP, ts, "ddim", progress=False)
        errs.append(np.abs(out - _exact(x, ts[0], ts[-1])).max())
    assert 0.9 < fitted_order(ns, errs) < 1.1, errs


def test_ddim_local_order_two():
    """MATH.md (8.7): one DDIM step of size h from t = 0.5 has local error O(h^2) against the
    exact ODE map (6.12).  Fitted slope ~2.0; accepted 1.85..2.15."""
    x = _rand((8, 2), 1)
    hs = [0.08, 0.04, 0.02, 0.01]
    errs = []
    for h in hs:
        ts = np.array([0.5, 0.5 - h])
        out = refdiff.sample(GAUSS.as_model(VP), x, VP, ts, "ddim", progress=False)
        errs.append(np.abs(out - _exact(x, 0.5, 0.5 - h)).max())
    assert 1.85 < -fitted_order(hs, errs) < 2.15, errs


def test_ddim_inversion_step_is_exact_inverse(xp):
    """MATH.md (8.9): with the same eps_hat, inversion t -> t_next followed by the eta = 0
    DDIM step t_next -> t returns the start (x / alpha - (sigma / alpha) eps is invariant).
    float64: 1e-11."""
    s = refdiff.make_schedule("scaled_linear", 100)
    x, eps = asx(xp, _rand((3, 2), 0)), asx(xp, _rand((3, 2), 1))
    for t, t_next in ((-1, 0), (10, 40), (50, 99)):
        up = refdiff.ddim_inversion_step(s, eps, t, t_next, x)
        back = refdiff.ddim_step(s, eps, t_next, t, up)
        assert_close(back, x, xp=xp, rtol=1e-11, atol=1e-11)


def test_ddim_inversion_converges_to_exact_ode_map():
    """MATH.md (8.9): inverting data x_0 of Gaussian data to timestep t_max approximates the
    exact probability-flow map (6.12) from (alpha, sigma) = (1, 0) to t_max with first-order
    error; the round trip inversion -> DDIM sampling also returns x_0 with first-order error.
    Fitted slopes ~1 (accepted 0.8..1.2)."""
    s = refdiff.make_schedule("linear", 1000)
    x0 = GAUSS.sample(6, np.random.default_rng(2))
    m = GAUSS.as_model(s)
    ns, e_inv, e_rt = [25, 50, 100, 200], [], []
    for n in ns:
        ts = refdiff.timesteps(1000, n, "leading")
        lat = ddim_invert(m, x0, s, ts)
        t0 = int(ts[0])
        exact = GAUSS.ode_transport(x0, 1.0, 0.0, math.sqrt(s.alpha_bars[t0]), math.sqrt(1 - s.alpha_bars[t0]))
        e_inv.append(np.abs(lat - exact).max())
        e_rt.append(np.abs(ddim_loop(m, lat, s, ts) - x0).max())
    assert 0.8 < fitted_order(ns, e_inv) < 1.2, e_inv
    assert 0.8 < fitted_order(ns, e_rt) < 1.2, e_rt


# ------------------------------------------------------------------------- bad input
def test_step_bad_input():
    """Clear errors from the step functions (argument, value and valid range named)."""
    s = refdiff.make_schedule("linear", 10)
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="variance_type"):
        refdiff.ddpm_step(s, x, 3, x, x, variance_type="learned")
    with pytest.raises(TypeError, match="noise"):
        refdiff.ddpm_step(s, x, 3, x, None)
    with pytest.raises(ValueError, match="out of range"):
        refdiff.ddpm_step(s, x, 10, x, x)
    with pytest.raises(ValueError, match="learned_range"):
        refdiff.ddpm_step(s, x, 3, x, x, variance_type="learned_range")
    with pytest.raises(ValueError, match="prediction_type"):
        refdiff.ddpm_step(s, x, 3, x, x, prediction_type="eps")
    with pytest.raises(ValueError, match="eta"):
        refdiff.ddim_step(s, x, 3, 2, x, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        refdiff.ddim_step(s, x, 3, 2, x, eta=1.5)
    with pytest.raises(ValueError, match="t_prev"):
        refdiff.ddim_step(s, x, 3, 3, x)
    with pytest.raises(ValueError, match="t_prev"):
        refdiff.ddim_step(s, x, 3, -2, x)
    with pytest.raises(TypeError, match="noise"):
        refdiff.ddim_step(s, x, 3, 2, x, eta=0.5)
    with pytest.raises(ValueError, match="shape"):
        refdiff.ddim_step(s, np.zeros((2, 2)), 3, 2, x)
    with pytest.raises(ValueError, match="t_next"):
        refdiff.ddim_inversion_step(s, x, 5, 3, x)
    with pytest.raises(TypeError, match="Schedule"):
        refdiff.ddpm_step(VP, x, 3, x, x)


def test_learned_range_loop_endpoints():
    """MATH.md (8.3): a learned-range model (prediction and v concatenated along axis 1)
    with v = -1 everywhere samples exactly like fixed_small, with v = +1 like fixed_large,
    from the same rng (log-interpolation endpoints; 1e-12)."""
    s = refdiff.make_schedule("cosine", 50)
    base = GAUSS.as_model(s)
    x, ts = _rand((4, 2), 0), refdiff.timesteps(50, 10)
    for v, vt in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        learned = lambda xx, t, v=v: np.concatenate([base(xx, t), np.full_like(xx, v)], axis=1)  # noqa: E731
        a = refdiff.sample(learned, x, s, ts, "ddpm", variance_type="learned_range", rng=np.random.default_rng(2),
                           progress=False)
        b = refdiff.sample(base, x, s, ts, "ddpm", variance_type=vt, rng=np.random.default_rng(2), progress=False)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_continuous_vp_ddpm_equals_ddim_eta1():
    """MATH.md (8.5), (8.8): on a continuous VP grid of n steps the DDPM chain over the grid
    times equals DDIM with eta = 1 (same noise), and draws noise n times (the last time t_n
    > 0 is not the data end).  1e-11."""
    x, ts = _rand((3, 2), 1), refdiff.time_grid(VP, 12, "logSNR")
    noise_a, noise_b = CountingNoise(3), CountingNoise(3)
    a = ddpm_loop(GAUSS.as_model(VP), x, VP, ts, noise=noise_a)
    b = ddim_loop(GAUSS.as_model(VP), x, VP, ts, eta=1.0, noise=noise_b)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    assert noise_a.calls == noise_b.calls == 12


def test_per_sample_timesteps(xp):
    """MATH.md (8.1), (8.7): with integer arrays t, t_prev of shape (N,) (t_prev = -1 allowed)
    each row equals the scalar-t step of that row (float64: 1e-12)."""
    s = refdiff.make_schedule("linear", 30)
    t, tp = np.array([29, 10, 3, 0]), np.array([20, 9, -1, -1])
    x, eps, z = (_rand((4, 3), k) for k in range(3))
    got = refdiff.ddim_step(s, asx(xp, eps), asx(xp, t), asx(xp, tp), asx(xp, x), eta=0.7, noise=asx(xp, z))
    got2 = refdiff.ddpm_step(s, asx(xp, eps), asx(xp, t), asx(xp, x), asx(xp, z), variance_type="fixed_large")
    for i in range(4):
        row = refdiff.ddim_step(s, eps[i:i + 1], int(t[i]), int(tp[i]), x[i:i + 1], eta=0.7, noise=z[i:i + 1])
        assert_close(got[i:i + 1, :], row, xp=xp, rtol=1e-12, atol=1e-12)
        row = refdiff.ddpm_step(s, eps[i:i + 1], int(t[i]), x[i:i + 1], z[i:i + 1], variance_type="fixed_large")
        assert_close(got2[i:i + 1, :], row, xp=xp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_final_step_noise_switch(variance_type):
    """MATH.md (8.12): with final_step_noise=True on a trailing grid (last timestep t_n > 0) the
    last step draws once more and adds sqrt(max(v, 1e-20)) z to the paper's result x0_hat, with
    v = 0 (fixed_small) or 1 - alpha_bar[t_n] (fixed_large); the earlier steps are unchanged."""
    s = refdiff.make_schedule("linear", 100)
    ts = refdiff.timesteps(100, 10, "trailing")
    assert ts[-1] > 0
    x = _rand((4, 2), 0)

    def tape(draws):
        rng = np.random.default_rng(3)
        return lambda like: draws.append(rng.standard_normal(like.shape)) or draws[-1]

    d0, d1 = [], []
    a = ddpm_loop(GAUSS.as_model(s), x, s, ts, noise=tape(d0), variance_type=variance_type)
    b = ddpm_loop(GAUSS.as_model(s), x, s, ts, noise=tape(d1), variance_type=variance_type, final_step_noise=True)
    assert len(d1) == len(d0) + 1 == len(ts)
    v = 0.0 if variance_type == "fixed_small" else 1.0 - float(s.alpha_bars[ts[-1]])
    np.testing.assert_allclose(b - a, math.sqrt(max(v, 1e-20)) * d1[-1], rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="final_step_noise"):
        ddpm_loop(GAUSS.as_model(s), x, s, ts, noise=tape([]), variance_type="learned_range", final_step_noise=True)
