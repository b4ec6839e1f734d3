"""Tests of the probability-flow ODE likelihood (refdiff/likelihood.py), MATH.md chapter 7:
the ODE log-likelihood of exact oracles against their closed-form log-densities, the
integrator's order, the t_eps and prior terms, Hutchinson's unbiasedness, bits/dim."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal as mvn

import refdiff
from refdiff.backend import to_numpy
from tests._support import assert_close, asx

VP = refdiff.LinearVP()


def coeffs(vp, t):
    tt = np.array([t])
    return float(vp.alpha(tt)[0]), float(vp.sigma(tt)[0])


def oracles():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(2, 2))
    C = A @ A.T / 2 + 0.05 * np.eye(2)
    g = refdiff.GaussianData(np.array([0.5, -0.3]), C)
    m = refdiff.GaussianMixture([0.3, 0.7], 1.5 * rng.normal(size=(2, 2)), np.stack([C, 0.5 * C]))
    return g, m, m.sample(4, np.random.default_rng(1))


def exact_prior(o, vp):
    a1, s1 = coeffs(vp, 1.0)
    return lambda y: o.log_prob_t(y, a1, s1)


@pytest.mark.parametrize("which", ["gaussian", "mixture"])
def test_ode_likelihood_of_oracle_equals_closed_form(xp, which):
    """MATH.md (7.1), (7.3), (7.9): with the exact velocity and divergence of an oracle, the
    exact prior p_1 and RK4 with 100 steps on LinearVP, the ODE log-likelihood equals the
    closed-form log p_{t_eps}(x) (t_eps = 1e-3).  Tolerance 1e-5 nats: RK4's global error,
    measured 2e-7 (mixture) and 1e-6 (Gaussian) at 100 steps, shrinking 16x per halving."""
    g, m, x = oracles()
    o = g if which == "gaussian" else m
    X = asx(xp, x)
    t_eps = 1e-3
    ll = refdiff.ode_log_likelihood(o, X, VP, t_eps=t_eps, n_steps=100, prior=exact_prior(o, VP))
    assert_close(ll, to_numpy(o.log_prob_t(X, *coeffs(VP, t_eps))), xp=xp, rtol=0, atol=1e-5)


def test_ode_likelihood_of_model_with_fd_divergence(xp):
    """MATH.md (7.2), (7.3) and (7.4): a plain model (the mixture as a v-prediction network on
    image-shaped (N, 1, 2, 1) data) with the central-difference divergence gives the same
    log-likelihood as the closed form within 1e-5 nats (RK4 error as above; the central
    differences add ~1e-9)."""
    rng = np.random.default_rng(2)
    m = refdiff.GaussianMixture([0.5, 0.5], rng.normal(size=(2, 1, 2, 1)), [0.2, 0.4])
    x = asx(xp, m.sample(3, np.random.default_rng(3)))
    model = m.as_model(VP, "v_prediction")
    ll = refdiff.ode_log_likelihood(
        model, x, VP, prediction_type="v_prediction", t_eps=1e-3, n_steps=100, prior=exact_prior(m, VP)
    )
    assert_close(ll, to_numpy(m.log_prob_t(x, *coeffs(VP, 1e-3))), xp=xp, rtol=0, atol=1e-5)


def test_rk4_order_is_four():
    """MATH.md (7.9): the fitted slope of log(error) against log(n_steps) over n = 20, 40, 80
    is -4 +- 0.5 (classical RK4 on the smooth LinearVP)."""
    g, m, x = oracles()
    ref = to_numpy(m.log_prob_t(x, *coeffs(VP, 1e-3)))
    ns = np.array([20, 40, 80])
    errs = [
        np.max(np.abs(to_numpy(refdiff.ode_log_likelihood(m, x, VP, t_eps=1e-3, n_steps=int(n), prior=exact_prior(m, VP))) - ref))
        for n in ns
    ]
    slope = np.polyfit(np.log(ns), np.log(errs), 1)[0]
    assert -4.5 < slope < -3.5, (errs, slope)


def test_prior_term_and_t_eps_limit():
    """MATH.md (7.6), (7.8): the default N(0, I) prior differs from the exact run by exactly
    log p_1(x_1) - log N(x_1; 0, I) at the returned x_1 (1e-12); and log p_{t_eps}(x) tends
    to the data log-density: at t_eps = 1e-5 (sigma^2 ~ 1e-6) within 1e-4 nats of log q_0(x),
    while at t_eps = 0.05 the gap is > 1e-3 (the limit is not trivially satisfied)."""
    g, m, x = oracles()
    d0 = refdiff.ode_log_likelihood(m, x, VP, t_eps=1e-5, n_steps=100, return_details=True)
    d1 = refdiff.ode_log_likelihood(m, x, VP, t_eps=1e-5, n_steps=100, prior=exact_prior(m, VP), return_details=True)
    correction = exact_prior(m, VP)(d0["x1"]) - refdiff.standard_normal_log_prob(d0["x1"])
    assert_close(d0["log_p"] + correction, d1["log_p"], rtol=0, atol=1e-12)
    assert_close(d1["log_p"], m.log_prob(x), rtol=0, atol=1e-4)
    far = refdiff.ode_log_likelihood(m, x, VP, t_eps=0.05, n_steps=100, prior=exact_prior(m, VP))
    assert np.max(np.abs(far - m.log_prob(x))) > 1e-3


def test_discrete_schedule_likelihood():
    """MATH.md (7.2), (7.9): with a discrete Schedule (T = 1000, its interpolated VP, t_eps =
    1/T i.e. index 0) the oracle's ODE log-likelihood equals log p at alpha = sqrt(alpha_bar_0),
    sigma = sqrt(1 - alpha_bar_0) within 2e-3 nats at 200 steps: the interpolated log alpha has
    kinks at the knots, where RK4 loses its order (measured 3e-4)."""
    g, m, x = oracles()
    sched = refdiff.make_schedule("linear", 1000)
    vp = refdiff.InterpolatedVP(sched)
    ll = refdiff.ode_log_likelihood(m, x, sched, n_steps=200, prior=exact_prior(m, vp))
    ref = m.log_prob_t(x, float(sched.sqrt_alpha_bars[0]), float(sched.sqrt_one_minus_alpha_bars[0]))
    assert_close(ll, ref, rtol=0, atol=2e-3)


def test_fd_divergence_matches_exact(xp):
    """MATH.md (7.4): D central differences of the mixture velocity give its closed-form
    divergence (6.9) within 1e-7 (step 1e-5: truncation ~1e-10, rounding ~1e-11)."""
    g, m, x = oracles()
    X = asx(xp, x)
    a, s = coeffs(VP, 0.3)
    da, ds = -0.4, 0.9
    div = refdiff.fd_divergence(lambda z: m.velocity(z, a, s, da, ds), X)
    assert_close(div, to_numpy(m.div_velocity(X, a, s, da, ds)), xp=xp, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(xp, probe):
    """MATH.md (7.5): the mean of 4000 single-probe Hutchinson estimates of div u at fixed
    (x, t) is within 4 standard errors of the exact divergence; and the ODE log-likelihood
    with one fixed probe per sample (1000 copies of one point, 10 RK4 steps) averages to the
    exact-divergence ODE value on the same grid within 4 SE (the x-trajectory does not depend
    on the probe and the log-det integral is linear in the divergence)."""
    g, m, x = oracles()
    X = asx(xp, x[:2])
    a, s = coeffs(VP, 0.2)
    da, ds = -0.4, 0.9
    probes = refdiff.draw_probes(np.random.default_rng(4), 4000, X.shape, X, probe)
    est = to_numpy(refdiff.hutchinson_divergence(lambda z: m.velocity(z, a, s, da, ds), X, probes, per_probe=True))
    exact = to_numpy(m.div_velocity(X, a, s, da, ds))
    se = est.std(0) / math.sqrt(est.shape[0])
    assert np.all(np.abs(est.mean(0) - exact) < 4 * se), (est.mean(0), exact, se)
    assert np.all(se > 0)
    Xs = asx(xp, np.repeat(x[:1], 1000, axis=0))
    kw = dict(t_eps=1e-3, n_steps=10)
    llh = to_numpy(refdiff.ode_log_likelihood(m, Xs, VP, divergence="hutchinson", probe=probe, rng=np.random.default_rng(5), **kw))
    ll = to_numpy(refdiff.ode_log_likelihood(m, asx(xp, x[:1]), VP, **kw))
    assert abs(llh.mean() - ll[0]) < 4 * llh.std() / math.sqrt(llh.size), (llh.mean(), ll, llh.std())


def test_standard_normal_prior_and_bits_per_dim(xp):
    """MATH.md (7.6), (7.7): the prior log-density equals scipy's N(0, I) on image-shaped
    data; bits/dim by hand: the uniform density on [-1, 1]^D has log p = -D ln 2, i.e. 1 bit
    per dim on the [-1, 1] scale, plus log2(256 / 2) = 7 gives exactly 8 bits (a uniform
    256-level variable); on [0, 1] (data_range 1) log p = 0 and the offset is 8 again."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 2, 2, 2))
    ref = mvn(np.zeros(8), np.eye(8)).logpdf(x.reshape(3, 8))
    assert_close(refdiff.standard_normal_log_prob(asx(xp, x)), ref, xp=xp, rtol=1e-13)
    D = 12
    assert_close(refdiff.dequantized_bits_per_dim(asx(xp, np.full(2, -D * math.log(2.0))), D, convention="interval"), np.full(2, 8.0), xp=xp)
    assert_close(refdiff.dequantized_bits_per_dim(asx(xp, np.zeros(2)), D, data_range=1.0, convention="interval"), np.full(2, 8.0), xp=xp)
    assert_close(refdiff.dequantized_bits_per_dim(asx(xp, np.zeros(2)), D, n_bins=17, data_range=1.0, convention="interval"), np.full(2, math.log2(17)), xp=xp)
    # one default convention: "levels" (bin width 2/255 on [-1, 1]), as continuous_to_discrete_bpd
    assert_close(refdiff.dequantized_bits_per_dim(asx(xp, np.zeros(2)), D), np.full(2, math.log2(127.5)), xp=xp)


def test_bad_input_errors():
    """Invalid arguments raise ValueError/TypeError naming the problem; a model returning NaN
    mid-integration raises FloatingPointError naming the step."""
    g, m, x = oracles()
    model = m.as_model(VP, "epsilon")
    calls = {"n": 0}

    def nan_late(y, t):
        calls["n"] += 1
        out = model(y, t)
        return out * np.nan if float(t[0]) > 0.5 else out

    with pytest.raises(FloatingPointError, match=r"model output contains NaN.*step \d+"):
        refdiff.ode_log_likelihood(nan_late, x, VP, n_steps=10)
    with pytest.raises(ValueError, match="t_eps"):
        refdiff.ode_log_likelihood(m, x, VP, t_eps=0.0)
    with pytest.raises(ValueError, match="t_eps"):
        refdiff.ode_log_likelihood(m, x, VP, t_eps=1.5)
    # a discrete Schedule's interpolation (2.15) starts at its first knot t = 1/T; below it the
    # linear extension has alpha > 1 (here at t_eps = 1e-5, T = 1000) and sigma = NaN
    with pytest.raises(ValueError, match=r"t_eps = 1e-05 is below the first knot 1/T = 0\.001"):
        refdiff.ode_log_likelihood(m, x, refdiff.make_schedule("linear", 1000), t_eps=1e-5)
    with pytest.raises(ValueError, match="n_steps"):
        refdiff.ode_log_likelihood(m, x, VP, n_steps=0)
    with pytest.raises(ValueError, match="unknown divergence"):
        refdiff.ode_log_likelihood(m, x, VP, divergence="trace")
    with pytest.raises(ValueError, match="unknown probe"):
        refdiff.ode_log_likelihood(m, x, VP, divergence="hutchinson", probe="uniform", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_probes"):
        refdiff.ode_log_likelihood(m, x, VP, divergence="hutchinson", n_probes=0, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="needs rng"):
        refdiff.ode_log_likelihood(m, x, VP, divergence="hutchinson")
    with pytest.raises(ValueError, match="prediction_type"):
        refdiff.ode_log_likelihood(model, x, VP, prediction_type="noise")
    with pytest.raises(ValueError, match=r"x0 must have shape"):
        refdiff.ode_log_likelihood(m, x[0], VP)
    with pytest.raises(ValueError, match="data dimension is D = 2"):
        refdiff.ode_log_likelihood(m, np.zeros((2, 3)), VP)
    with pytest.raises(FloatingPointError, match="x0 contains NaN"):
        refdiff.ode_log_likelihood(m, np.full((2, 2), np.nan), VP)
    with pytest.raises(TypeError, match="Schedule or a continuous VP"):
        refdiff.ode_log_likelihood(m, x, "linear")
    with pytest.raises(TypeError, match="callable"):
        refdiff.ode_log_likelihood(3, x, VP)
    with pytest.raises(ValueError, match="prior returned shape"):
        refdiff.ode_log_likelihood(m, x, VP, n_steps=2, prior=lambda y: y)
    with pytest.raises(ValueError, match="n_dims"):
        refdiff.dequantized_bits_per_dim(np.zeros(2), 0)
    with pytest.raises(ValueError, match="n_bins"):
        refdiff.dequantized_bits_per_dim(np.zeros(2), 4, n_bins=1)
    with pytest.raises(ValueError, match="probes has shape"):
        refdiff.hutchinson_divergence(lambda z: z, np.zeros((2, 2)), np.zeros((3, 2, 3)))
