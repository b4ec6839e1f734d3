"""Prediction parameterizations: MATH.md chapter 4."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refdiff
from _support import asx, assert_close, shapes

TYPES = ["epsilon", "sample", "v_prediction", "score"]


def _path(rng, n, vp=True):
    """Random per-sample (alpha, sigma): on the VP circle, or a general affine path."""
    if vp:
        ab = rng.uniform(0.01, 0.99, n)
        return np.sqrt(ab), np.sqrt(1 - ab)
    return rng.uniform(0.1, 2.0, n), rng.uniform(0.1, 2.0, n)


@given(shape=shapes(), seed=st.integers(0, 2**31 - 1), vp=st.booleans(),
       a=st.sampled_from(TYPES), b=st.sampled_from(TYPES))
def test_every_conversion_round_trips(xp, shape, seed, vp, a, b):
    """MATH.md (4.1), (4.2), (4.3), (4.4) and (4.5):
    build x_t = alpha x0 + sigma eps from known (x0, eps); the true
    prediction of each type is eps, x0, v = alpha eps - sigma x0, score = -eps/sigma.
    Converting the type-a truth to type b gives the type-b truth, and back again."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    al, sg = _path(rng, n, vp)
    x0, eps = rng.standard_normal(shape), rng.standard_normal(shape)
    ab = lambda c: c.reshape((n,) + (1,) * (len(shape) - 1))  # noqa: E731
    xt = ab(al) * x0 + ab(sg) * eps
    truth = {"epsilon": eps, "sample": x0, "v_prediction": ab(al) * eps - ab(sg) * x0, "score": -eps / ab(sg)}
    A, S, X = asx(xp, al), asx(xp, sg), asx(xp, xt)
    out = refdiff.convert(asx(xp, truth[a]), X, A, S, a, b)
    assert_close(out, truth[b], xp=xp, rtol=1e-9, atol=1e-9)
    back = refdiff.convert(out, X, A, S, b, a)
    assert_close(back, truth[a], xp=xp, rtol=1e-9, atol=1e-9)


@given(seed=st.integers(0, 2**31 - 1), mu=st.floats(-2, 2), var0=st.floats(0.05, 4.0), ab=st.floats(0.01, 0.99))
def test_tweedie_links_score_and_x0(xp, seed, mu, var0, ab):
    """MATH.md (4.5), (4.6): for Gaussian data x0 ~ N(mu, v0), the noised marginal is
    N(alpha mu, alpha^2 v0 + sigma^2): its score is -(x - alpha mu)/(alpha^2 v0 + sigma^2),
    and E[x0 | x_t] by Bayes is mu + alpha v0 (x - alpha mu)/(alpha^2 v0 + sigma^2).
    Tweedie's formula maps the score to E[x0|x_t], and score_from_eps(E[eps|x_t]) is the score."""
    rng = np.random.default_rng(seed)
    al, sg = np.sqrt(ab), np.sqrt(1 - ab)
    x = rng.standard_normal((5, 1)) * 2
    c = al**2 * var0 + sg**2
    score = -(x - al * mu) / c
    x0_bayes = mu + al * var0 * (x - al * mu) / c
    eps_bayes = sg * (x - al * mu) / c  # E[eps|x] = Cov(eps, x)/Var(x) (x - E x)
    X = asx(xp, x)
    assert_close(refdiff.x0_from_score(X, asx(xp, score), al, sg), x0_bayes, xp=xp, rtol=1e-11, atol=1e-12)
    assert_close(refdiff.score_from_eps(asx(xp, eps_bayes), sg), score, xp=xp, rtol=1e-11, atol=1e-12)
    assert_close(refdiff.x0_from_eps(X, asx(xp, eps_bayes), al, sg), x0_bayes, xp=xp, rtol=1e-10, atol=1e-11)


@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.01, 0.99))
def test_flow_velocity_round_trip_and_rectified_flow(xp, seed, t):
    """MATH.md (4.7), (4.8): for rectified flow alpha = 1 - t, sigma = t, the velocity
    d/dt x_t = eps - x0; solving the 2x2 system recovers (eps, x0).  The velocity is also the
    finite-difference time derivative of x_t along the path."""
    rng = np.random.default_rng(seed)
    x0, eps = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    X0, E = asx(xp, x0), asx(xp, eps)
    u = refdiff.velocity_from_eps_x0(E, X0, -1.0, 1.0)
    assert_close(u, eps - x0, xp=xp, rtol=1e-14, atol=1e-14)
    h = 1e-6
    fd = (((1 - t - h) * x0 + (t + h) * eps) - ((1 - t + h) * x0 + (t - h) * eps)) / (2 * h)
    assert_close(u, fd, xp=xp, rtol=1e-7, atol=1e-7)
    xt = asx(xp, (1 - t) * x0 + t * eps)
    e2, x02 = refdiff.eps_x0_from_velocity(xt, u, 1 - t, t, -1.0, 1.0)
    assert_close(e2, eps, xp=xp, rtol=1e-10, atol=1e-10)
    assert_close(x02, x0, xp=xp, rtol=1e-10, atol=1e-10)


def test_vp_velocity_round_trip(xp):
    """MATH.md (4.8) on the VP path alpha = cos(pi t / 2), sigma = sin(pi t / 2)."""
    rng = np.random.default_rng(3)
    t = rng.uniform(0.05, 0.95, 6)
    al, sg = np.cos(np.pi * t / 2), np.sin(np.pi * t / 2)
    dal, dsg = -np.pi / 2 * sg, np.pi / 2 * al
    x0, eps = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    xt = al[:, None] * x0 + sg[:, None] * eps
    A, S, DA, DS = (asx(xp, v) for v in (al, sg, dal, dsg))
    u = refdiff.velocity_from_eps_x0(asx(xp, eps), asx(xp, x0), DA, DS)
    e2, x02 = refdiff.eps_x0_from_velocity(asx(xp, xt), u, A, S, DA, DS)
    assert_close(e2, eps, xp=xp, rtol=1e-10, atol=1e-12)
    assert_close(x02, x0, xp=xp, rtol=1e-10, atol=1e-12)


def test_edm_preconditioning(xp):
    """MATH.md (4.9), (4.10): for sigma_data-scaled unit data the skip/out split is the
    Wiener-filter optimum: c_skip = sd^2/(s^2+sd^2), c_out^2 + c_skip^2 s^2 ... checked through
    its defining properties: (i) c_in^2 (sd^2 + s^2) = 1 (unit-variance network input);
    (ii) the target F = (x0 - c_skip x)/c_out has unit variance when x0 ~ N(0, sd^2), n ~ N(0, 1)
    (Var F = (c_skip^2 s^2 + (1 - c_skip)^2 sd^2)/c_out^2 = 1); (iii) D = c_skip x + c_out F
    inverts the target exactly."""
    sd = 0.5
    s = asx(xp, [0.002, 0.1, 0.5, 1.0, 10.0, 80.0])
    c_skip, c_out, c_in, c_noise = refdiff.edm_preconditioning(s, sd)
    assert_close(c_in**2 * (sd**2 + s**2), xp.ones_like(s), xp=xp, rtol=1e-13)
    var_f = (c_skip**2 * s**2 + (1 - c_skip) ** 2 * sd**2) / c_out**2
    assert_close(var_f, xp.ones_like(s), xp=xp, rtol=1e-12)
    assert_close(c_noise, xp.log(s) / 4, xp=xp, rtol=1e-14)
    # (iv) (ii) alone does not pin c_skip (any c with c_out^2 = c^2 s^2 + (1-c)^2 sd^2 passes);
    # EDM chooses c_skip to minimise that c_out^2: d/dc = 2 c s^2 - 2 (1 - c) sd^2 = 0, and the
    # minimum is c_out^2 = s^2 sd^2 / (s^2 + sd^2)
    assert_close(c_skip * s**2 - (1 - c_skip) * sd**2, xp.zeros_like(s), xp=xp, atol=1e-12)
    assert_close(c_out**2, s**2 * sd**2 / (s**2 + sd**2), xp=xp, rtol=1e-13)
    rng = np.random.default_rng(0)
    x0 = asx(xp, rng.standard_normal((6, 3)) * sd)
    x = x0 + xp.reshape(s, (6, 1)) * asx(xp, rng.standard_normal((6, 3)))
    F = refdiff.edm_target(x0, x, s, sd)
    assert_close(refdiff.edm_denoiser(F, x, s, sd), x0, xp=xp, rtol=1e-10, atol=1e-12)


def test_clip_and_dynamic_threshold(xp):
    """MATH.md (4.11), (4.12): dynamic thresholding uses the per-sample quantile of |x0|
    (compared with numpy.quantile, linear interpolation), never below 1; with max_value = 1
    it equals static clipping."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5)) * np.array([0.3, 1.0, 2.0, 5.0])[:, None, None]
    out = refdiff.dynamic_threshold(asx(xp, x), ratio=0.9, max_value=3.0)
    s = np.clip(np.quantile(np.abs(x).reshape(4, -1), 0.9, axis=1), 1.0, 3.0)[:, None, None]
    assert_close(out, np.clip(x, -s, s) / s, xp=xp, rtol=1e-13)
    assert_close(refdiff.dynamic_threshold(asx(xp, x), 0.9, 1.0), np.clip(x, -1, 1), xp=xp, rtol=1e-14)
    assert_close(refdiff.clip_x0(asx(xp, x), 1.5), np.clip(x, -1.5, 1.5), xp=xp)


def test_bad_input(xp):
    x = asx(xp, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown prediction_type 'eps'; valid: epsilon, sample"):
        refdiff.to_eps_x0(x, x, 0.5, 0.5, "eps")
    with pytest.raises(ValueError, match="unknown to_type"):
        refdiff.convert(x, x, 0.5, 0.5, "epsilon", "noise")
    with pytest.raises(ValueError, match="sigma_data"):
        refdiff.edm_preconditioning(asx(xp, [1.0]), 0.0)
    with pytest.raises(ValueError, match=r"sigma contains -1.0; sigma must be >= 0"):
        refdiff.edm_preconditioning(asx(xp, [-1.0]))
    with pytest.raises(ValueError, match=r"ratio = 1.5 is outside \[0, 1\]"):
        refdiff.dynamic_threshold(x, 1.5)
    with pytest.raises(ValueError, match="max_value"):
        refdiff.dynamic_threshold(x, 0.9, 0.5)
    with pytest.raises(ValueError, match="clip_range"):
        refdiff.clip_x0(x, 0.0)
