"""The forward process and its posterior: MATH.md chapters 2 and 3.

The closed forms are checked against independent constructions: the t-fold composition
of one-step kernels, and Gaussian conditioning of the joint of (x_{t-1}, x_t) given x_0.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff
from _support import asx, assert_close, schedule_and_t, schedules, shapes


@settings(max_examples=20)
@given(st_=schedule_and_t(max_T=120), x0v=st.floats(-3, 3))
def test_closed_form_equals_composition(xp, st_, x0v):
    """MATH.md (2.2), (2.4): composing t+1 one-step kernels q(x_s | x_{s-1}) (linear maps
    of Gaussians: mean <- sqrt(alpha) mean, var <- alpha var + beta) gives the closed form
    q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t) to float64 round-off (~1e-12)."""
    s, t = st_
    x0 = asx(xp, [[x0v, -0.5 * x0v, 1.0]])
    mean, var = x0, asx(xp, 0.0)
    for k in range(t + 1):
        m_k, b_k = refdiff.q_step_mean_variance(s, mean, k)
        # mean of the one-step kernel applied to the current Gaussian; variance propagates
        var = (1.0 - b_k) * var + b_k
        mean = m_k
    m, v, logv = refdiff.q_mean_variance(s, x0, t)
    assert_close(m, mean, xp=xp, rtol=1e-12, atol=1e-14)
    assert_close(v, var, xp=xp, rtol=1e-12, atol=1e-15)
    assert_close(xp.exp(logv), v, xp=xp, rtol=1e-14)


@given(st_=schedule_and_t(max_T=200))
def test_closed_form_by_monte_carlo_composition(st_):
    """MATH.md (2.4) against sampling: pushing samples through t+1 noisy one-step updates
    gives the closed-form mean and variance within 5 standard errors (n = 20000)."""
    s, t = st_
    rng = np.random.default_rng(0)
    n = 20000
    x = np.full((n, 1), 0.7)
    for k in range(t + 1):
        x = np.sqrt(s.alphas[k]) * x + np.sqrt(s.betas[k]) * rng.standard_normal((n, 1))
    m, v, _ = refdiff.q_mean_variance(s, np.array([[0.7]]), t)
    se_mean = np.sqrt(v / n)
    assert abs(x.mean() - m[0, 0]) < 5 * se_mean
    se_var = v * np.sqrt(2.0 / (n - 1))
    assert abs(x.var(ddof=1) - v) < 5 * se_var


@given(st_=schedule_and_t(min_T=2, max_T=300), shape=shapes(), seed=st.integers(0, 2**31 - 1))
def test_q_sample_is_the_reparameterisation(xp, st_, shape, seed):
    """MATH.md (2.4): q_sample = mean + sqrt(var) * noise, with per-sample t arrays too."""
    s, t = st_
    rng = np.random.default_rng(seed)
    x0 = asx(xp, rng.standard_normal(shape))
    eps = asx(xp, rng.standard_normal(shape))
    m, v, _ = refdiff.q_mean_variance(s, x0, t)
    assert_close(refdiff.q_sample(s, x0, t, eps), m + xp.sqrt(v) * eps, xp=xp, rtol=1e-13, atol=1e-14)
    tt = rng.integers(0, s.T, size=shape[0])
    xt = refdiff.q_sample(s, x0, asx(xp, tt), eps)
    for i in range(shape[0]):
        want = np.sqrt(s.alpha_bars[tt[i]]) * np.asarray(refdiff.to_numpy(x0))[i] + np.sqrt(1 - s.alpha_bars[tt[i]]) * np.asarray(refdiff.to_numpy(eps))[i]
        np.testing.assert_allclose(refdiff.to_numpy(xt)[i], want, rtol=1e-13, atol=1e-14)


@given(st_=schedule_and_t(min_T=2, max_T=300), seed=st.integers(0, 2**31 - 1))
def test_posterior_equals_gaussian_conditioning(xp, st_, seed):
    """MATH.md (3.1)-(3.4): given x_0, (x_{t-1}, x_t) is jointly Gaussian with
    Var x_{t-1} = 1 - abar_{t-1}, Var x_t = 1 - abar_t, Cov = sqrt(alpha_t)(1 - abar_{t-1}).
    Conditioning by the generic formula mu_a + S_ab S_bb^{-1}(x_b - mu_b),
    S_aa - S_ab^2 / S_bb gives the posterior mean and beta_tilde; beta_tilde <= beta_t."""
    s, t = st_
    if t == 0:
        t = 1
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((3, 4))
    xt = rng.standard_normal((3, 4))
    abp, ab, a = s.alpha_bars[t - 1], s.alpha_bars[t], s.alphas[t]
    mu_a, mu_b = np.sqrt(abp) * x0, np.sqrt(ab) * x0
    # 1 - abar from the betas without subtracting from 1: with betas ~ 1e-5 the subtraction
    # 1 - abar_t loses ~5 digits (eps / (1 - abar_t) ~ 1e-11 relative), enough to fail
    # rtol 1e-10 against any correctly rounded implementation (seen on CUDA).
    S_aa = -np.expm1(np.sum(np.log1p(-s.betas[:t])))
    S_bb = -np.expm1(np.sum(np.log1p(-s.betas[: t + 1])))
    S_ab = np.sqrt(a) * S_aa
    want_mean = mu_a + S_ab / S_bb * (xt - mu_b)
    want_var = S_aa - S_ab**2 / S_bb
    mean, var, logvar = refdiff.q_posterior_mean_variance(s, asx(xp, x0), asx(xp, xt), t)
    assert_close(mean, want_mean, xp=xp, rtol=1e-10, atol=1e-12)
    assert_close(var, want_var, xp=xp, rtol=1e-9, atol=1e-15)
    assert_close(logvar, np.log(want_var), xp=xp, rtol=1e-9, atol=1e-12)
    assert float(var) <= s.betas[t] * (1 + 1e-12)


def test_posterior_by_bayes_on_a_grid():
    """MATH.md (3.1): q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), evaluated
    pointwise on a fine 1-D grid and normalised numerically; its mean and variance match."""
    s = refdiff.make_schedule("cosine", 50)
    t, x0, xt = 20, np.array([[0.4]]), np.array([[-0.3]])
    g = np.linspace(-6, 6, 200001)
    ab_prev = s.alpha_bars[t - 1]
    logp = (-(xt[0, 0] - np.sqrt(s.alphas[t]) * g) ** 2 / (2 * s.betas[t])
            - (g - np.sqrt(ab_prev) * x0[0, 0]) ** 2 / (2 * (1 - ab_prev)))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    m_num = (w * g).sum()
    v_num = (w * (g - m_num) ** 2).sum()
    mean, var, _ = refdiff.q_posterior_mean_variance(s, x0, xt, t)
    assert mean[0, 0] == pytest.approx(m_num, abs=1e-9)
    assert float(var) == pytest.approx(v_num, rel=1e-6)


def test_posterior_at_t0_and_clipped_log_variance():
    """MATH.md (3.5): at t = 0 the posterior is a point mass at x_0 (coef1 = 1, coef2 = 0,
    beta_tilde = 0) and the log variance is clipped to its value at t = 1."""
    s = refdiff.make_schedule("linear", 100)
    x0, xt = np.ones((2, 3)), -np.ones((2, 3))
    mean, var, logvar = refdiff.q_posterior_mean_variance(s, x0, xt, 0)
    np.testing.assert_allclose(mean, x0, rtol=1e-15)
    assert float(var) == 0.0
    assert float(logvar) == pytest.approx(np.log(s.posterior_variance[1]), rel=1e-15)


@given(schedules(min_T=2))
def test_beta_tilde_le_beta(s):
    """beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) <= beta_t since abar_t < abar_{t-1}."""
    assert np.all(s.posterior_variance <= s.betas * (1 + 1e-12))


def test_mismatched_shapes(xp):
    s = refdiff.make_schedule("linear", 10)
    with pytest.raises(ValueError, match=r"shape mismatch: x0 \(2, 3\), noise \(2, 4\)"):
        refdiff.q_sample(s, asx(xp, np.zeros((2, 3))), 1, asx(xp, np.zeros((2, 4))))
    with pytest.raises(ValueError, match="shape mismatch"):
        refdiff.q_posterior_mean_variance(s, asx(xp, np.zeros((2, 3))), asx(xp, np.zeros((3, 3))), 1)
    with pytest.raises(ValueError, match="per-sample coefficient"):
        refdiff.q_sample(s, asx(xp, np.zeros((2, 3))), asx(xp, [1, 2, 3]), asx(xp, np.zeros((2, 3))))
    with pytest.raises(TypeError, match="explicit noise"):
        refdiff.q_sample(s, asx(xp, np.zeros((2, 3))), 1, None)
    with pytest.raises(TypeError, match="must be a refdiff Schedule"):
        refdiff.q_sample("linear", asx(xp, np.zeros((2, 3))), 1, asx(xp, np.zeros((2, 3))))
