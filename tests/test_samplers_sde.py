"""Score-SDE samplers: the PF-ODE drift against the exact Gaussian ODE map, RK4 on a linear
ODE, the Langevin step size by hand, Langevin and the SDE samplers' samples against a
Gaussian mixture, noise counts and bad input."""

import math

import numpy as np
import pytest
from scipy import stats

import refdiff
from refdiff.samplers import sde as S
from tests._support import assert_close, asx

MIX = refdiff.GaussianMixture([0.3, 0.7], [[2.0, 0.5], [-1.0, -1.0]], [[0.3, 0.6], [0.5, 0.2]])
GAUSS = refdiff.GaussianData([0.5, -1.0], [[0.8, 0.3], [0.3, 0.5]])
VP = refdiff.LinearVP()


def _as(t):
    t = np.asarray(t)
    return float(VP.alpha(t)), float(VP.sigma(t))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_pf_ode_drift_is_derivative_of_exact_map(xp, t):
    """MATH.md (11.5): f x + g^2 eps_hat / (2 sigma) equals d/dt of the exact probability-flow
    map of Gaussian data (MATH.md (6.12)) at t, by a central difference (step 1e-5; the
    difference error ~1e-10 relative)."""
    x = asx(xp, np.random.default_rng(0).standard_normal((4, 2)))
    a, s = _as(t)
    d = 1e-5
    fwd = GAUSS.ode_transport(x, a, s, *_as(t + d))
    bwd = GAUSS.ode_transport(x, a, s, *_as(t - d))
    fd = (fwd - bwd) / (2 * d)
    tt = np.asarray(t)
    eps = GAUSS.eps(x, a, s)
    drift = S.pf_ode_drift(x, eps, float(VP.dlog_alpha_dt(tt)), float(VP.beta(tt)), s)
    assert_close(drift, fd, xp=xp, rtol=1e-7, atol=1e-8)


def test_rk4_step_is_fourth_order_taylor_on_linear_ode():
    """MATH.md (11.6): on dx/dt = a x one RK4 step multiplies by the degree-4 Taylor
    polynomial of e^{a dt}: 1 + z + z^2/2 + z^3/6 + z^4/24, z = a dt (hand-derived from the
    stages k1 = a x, k2 = a x (1 + z/2), k3 = a x (1 + z/2 + z^2/4), k4 = a x (1 + z + z^2/2 + z^3/4))."""
    a, dt = -1.7, 0.3
    z = a * dt
    got = S.rk4_step(lambda x, t: a * x, np.array([2.0]), 0.4, dt)
    assert_close(got, 2.0 * (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24), rtol=1e-15)
    # and a time-only cubic drift is integrated exactly (Simpson's rule): int_0.4^0.7 3 t^2 = 0.7^3 - 0.4^3
    got = S.rk4_step(lambda x, t: 3 * t * t + 0 * x, np.array([0.0]), 0.4, 0.3)
    assert_close(got, np.array([0.7**3 - 0.4**3]), rtol=1e-14)


def test_langevin_step_size_hand_worked():
    """MATH.md (11.4): score (3, 4) (norm 5), z = (0, 2) (norm 2), snr = 0.5:
    eps = 2 (0.5 * 2 / 5)^2 = 0.08; batch mode averages norms first: second sample score
    (0, 1), z (1, 0): norms 1, 1 -> per sample 2 (0.5)^2 = 0.5; batch 2 (0.5 * 1.5 / 3)^2 = 0.125."""
    s = np.array([[3.0, 4.0], [0.0, 1.0]])
    z = np.array([[0.0, 2.0], [1.0, 0.0]])
    assert_close(S.langevin_step_size(s, z, 0.5), np.array([0.08, 0.5]), rtol=1e-14)
    assert_close(S.langevin_step_size(s, z, 0.5, norm="batch"), 0.125, rtol=1e-14)
    # (11.3): one move with eps = 0.08 on sample 0
    x = np.array([[1.0, 1.0]])
    got = S.langevin_corrector_step(x, s[:1], 0.08, z[:1])
    assert_close(got, np.array([[1 + 0.08 * 3, 1 + 0.08 * 4 + math.sqrt(0.16) * 2]]), rtol=1e-14)


def test_langevin_corrector_targets_the_marginal():
    """MATH.md (11.3)-(11.4): 300 Langevin steps (snr 0.16, batch-norm step) at fixed t = 0.5
    with the exact Gaussian score, started from N(0, 4 I), N = 4000: mean within 4 standard
    errors and variance within 5 % (4 SE ~ 4 sqrt(2/N) ~ 9 %, plus the O(eps) bias of
    unadjusted Langevin, about eps / 4 ~ 1 %) of the exact marginal alpha mu, alpha^2 Sigma + sigma^2."""
    rng = np.random.default_rng(1)
    a, s = _as(0.5)
    x = 2.0 * rng.standard_normal((4000, 2))
    for _ in range(300):
        z = rng.standard_normal(x.shape)
        sc = GAUSS.score(x, a, s)
        x = S.langevin_corrector_step(x, sc, S.langevin_step_size(sc, z, 0.16, norm="batch"), z)
    mu = a * np.array([0.5, -1.0])
    var = a * a * np.array([0.8, 0.5]) + s * s
    assert np.all(np.abs(x.mean(0) - mu) < 4 * np.sqrt(var / 4000))
    assert np.all(np.abs(x.var(0) / var - 1) < 0.1)


def _match_mixture(out, tol=4.0, extra=0.0):
    out = np.asarray(out)
    n = out.shape[0]
    ref = np.asarray(MIX.sample(20000, np.random.default_rng(123)))
    mu, sd = ref.mean(0), ref.std(0)
    assert np.all(np.abs(out.mean(0) - mu) < tol * sd / math.sqrt(n) + extra), (out.mean(0), mu)
    assert np.all(np.abs(out.var(0) - sd**2) < tol * 1.5 * sd**2 * math.sqrt(2 / n) + extra), (out.var(0), sd**2)
    w = np.bincount(np.asarray(MIX.log_class_posterior(out, 1.0, 1e-3)).argmax(1), minlength=2) / n
    assert np.all(np.abs(w - np.array([0.3, 0.7])) < tol * math.sqrt(0.21 / n)), w
    for d in (np.array([1.0, 0.0]), np.array([0.6, 0.8])):
        assert stats.ks_2samp(out @ d, ref @ d).pvalue > 1e-3


@pytest.mark.parametrize("method, steps, opts", [("euler_maruyama", 200, {}), ("pc", 100, {"snr": 0.16}),
                                                 ("pf_ode_rk4", 15, {})])
def test_sde_samplers_match_mixture(method, steps, opts):
    """MATH.md (11.1)-(11.6): Euler-Maruyama (200 steps), predictor-corrector (100 steps, one
    corrector step, snr 0.16) and the RK4 PF-ODE (15 steps) from N(0, I) at t = 1 to
    t_min = 1e-3 on LinearVP (time_uniform grid; logSNR for RK4), N = 1500 at a fixed seed:
    moments within 4 standard errors (+0.03 for the SDE discretisation bias, measured well
    below that), component weights within 4 binomial SE, KS p > 1e-3 on two projections."""
    kind = "logSNR" if method == "pf_ode_rk4" else "time_uniform"
    x = np.random.default_rng(11).standard_normal((1500, 2))
    out = refdiff.sample(MIX.as_model(VP, "epsilon"), x, VP, refdiff.time_grid(VP, steps, kind), method,
                         rng=np.random.default_rng(12), progress=False, **opts)
    _match_mixture(out, extra=0.0 if method == "pf_ode_rk4" else 0.03)


def test_discrete_schedule_through_interpolated_vp():
    """MATH.md (11.5), (11.6): on a discrete Schedule the RK4 PF-ODE is the same computation as
    on InterpolatedVP at times (k + 1) / T followed by the Tweedie step x0_hat at the last
    index (to 1e-12), and it approaches the exact Gaussian ODE map from index 999 to 0 plus
    x0_hat (to 3e-3 with 40 steps: log alpha is only piecewise linear in t, and its kinks
    cost RK4 its order, see MATH.md (11.6))."""
    sched = refdiff.make_schedule("linear", 1000)
    ivp = refdiff.InterpolatedVP(sched)
    x = np.random.default_rng(2).standard_normal((8, 2))
    ts = np.unique(np.round(refdiff.time_grid(ivp, 40, "logSNR") * 1000 - 1).astype(np.int64))[::-1].copy()
    out = S.pf_ode_rk4(GAUSS.as_model(sched), x, sched, ts)
    y = S.pf_ode_rk4(GAUSS.as_model(ivp), x, ivp, (ts + 1.0) / 1000)
    a1, s1 = float(sched.sqrt_alpha_bars[0]), float(sched.sqrt_one_minus_alpha_bars[0])
    assert_close(out, GAUSS.x0_mean(y, a1, s1), rtol=1e-12, atol=1e-12)
    a0, s0 = float(sched.sqrt_alpha_bars[-1]), float(sched.sqrt_one_minus_alpha_bars[-1])
    x1 = GAUSS.ode_transport(x, a0, s0, a1, s1)
    assert_close(out, GAUSS.x0_mean(x1, a1, s1), atol=3e-3)


def test_noise_draw_counts():
    """MATH.md (11.2)-(11.4): EM draws n - 1 times on an n-step continuous grid (denoise: the
    last step returns its mean), n with denoise=False; PC draws n_corrector per step plus one
    predictor draw except the last; on a Schedule EM draws once per grid interval."""
    count = [0]

    def noise(like):
        count[0] += 1
        return np.zeros(like.shape)

    m = MIX.as_model(VP)
    ts = refdiff.time_grid(VP, 6, "time_uniform")
    for fn, kw, want in [(S.euler_maruyama, {}, 5), (S.euler_maruyama, {"denoise": False}, 6),
                         (S.pc, {"n_corrector": 2}, 12 + 5)]:
        count[0] = 0
        fn(m, np.zeros((2, 2)), VP, ts, noise=noise, **kw)
        assert count[0] == want
    count[0] = 0
    sched = refdiff.make_schedule("linear", 100)
    S.euler_maruyama(MIX.as_model(sched), np.zeros((2, 2)), sched, refdiff.timesteps(100, 5), noise=noise)
    assert count[0] == 4


def test_bad_input():
    """Clear errors for the score-SDE samplers."""
    m = MIX.as_model(VP)
    x = np.zeros((2, 2))
    ts = refdiff.time_grid(VP, 4)
    z = lambda like: np.zeros(like.shape)  # noqa: E731
    with pytest.raises(TypeError, match="stochastic and needs noise"):
        S.euler_maruyama(m, x, VP, ts)
    with pytest.raises(TypeError, match="stochastic and needs noise"):
        S.pc(m, x, VP, ts)
    with pytest.raises(ValueError, match="n_corrector"):
        S.pc(m, x, VP, ts, noise=z, n_corrector=-1)
    with pytest.raises(ValueError, match="snr"):
        S.pc(m, x, VP, ts, noise=z, snr=0.0)
    with pytest.raises(ValueError, match="langevin_norm 'all'"):
        S.pc(m, x, VP, ts, noise=z, langevin_norm="all")
    with pytest.raises(ValueError, match="strictly decreasing"):
        S.pf_ode_rk4(m, x, VP, [0.2, 0.5])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        S.pf_ode_rk4(m, x, VP, [1.0, 0.0])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        S.pf_ode_rk4(m, x, VP, [1.0])
    with pytest.raises(ValueError, match="dt"):
        S.euler_maruyama_step(x, x, -1.0, 2.0, -0.1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        S.pf_ode_rk4(m, x, VP, ts, order=2)
