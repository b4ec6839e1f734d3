"""Sample-quality measures (refdiff.metrics) against independent formulas: brute-force
pair sums, CDF integrals, scipy's 1-D Wasserstein and energy distances, Gaussian closed
forms, scipy.linalg.sqrtm, finite differences."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff
from refdiff import metrics
from refdiff.nn import classifier
from refdiff.train import train_digit_classifier
from tests._support import asx


def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.2 * np.eye(d)


# ---------------------------------------------------------------------------- energy distance
def test_energy_distance_zero_for_identical_sets(xp):
    """MATH.md (15.4): the V-statistic is exactly 0 when both sets are the same (all three
    pair means coincide); float64 round-off only (sums of ~1e4 distances: atol 1e-12)."""
    x = asx(xp, np.random.default_rng(0).standard_normal((100, 3)))
    assert abs(metrics.energy_distance(x, x)) < 1e-12


@given(n=st.integers(1, 12), m=st.integers(2, 12), d=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_energy_distance_matches_brute_force_double_loop(n, m, d, seed):
    """MATH.md (15.4) as written, by explicit Python loops over every pair (an O(n^2)
    definition independent of the vectorised code), V- and U-statistic; float64 sums of
    <= 144 terms: rtol 1e-10."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d)) + 0.5
    dist = lambda a, b: math.sqrt(sum((ai - bi) ** 2 for ai, bi in zip(a, b)))  # noqa: E731
    exy = sum(dist(a, b) for a in x for b in y) / (n * m)
    exx = sum(dist(a, b) for a in x for b in x)
    eyy = sum(dist(a, b) for a in y for b in y)
    v = 2 * exy - exx / n**2 - eyy / m**2
    assert metrics.energy_distance(x, y) == pytest.approx(v, rel=1e-10, abs=1e-12)
    assert metrics.energy_distance(x, y, squared=False) == pytest.approx(math.sqrt(max(v, 0)), rel=1e-9, abs=1e-9)
    if n >= 2:
        u = 2 * exy - exx / (n * (n - 1)) - eyy / (m * (m - 1))
        assert metrics.energy_distance(x, y, unbiased=True) == pytest.approx(u, rel=1e-10, abs=1e-12)


def test_energy_distance_1d_equals_twice_cdf_integral_and_scipy(xp):
    """MATH.md (15.5): in 1-D, D^2 = 2 int (F_n - G_m)^2 dt.  The integral of the two
    empirical step CDFs is computed exactly on the merged breakpoints, and scipy's
    ``energy_distance`` (which returns D) is a second independent method.  Hand-worked:
    x = {0}, y = {1}: D^2 = 2 |0 - 1| - 0 - 0 = 2 (and the CDFs differ by 1 on [0, 1)).
    Tolerance: float64 sums, rtol 1e-10."""
    assert metrics.energy_distance(asx(xp, [[0.0]]), asx(xp, [[1.0]])) == pytest.approx(2.0, rel=1e-14)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(37), 0.3 + 1.5 * rng.standard_normal(23)
    pts = np.sort(np.concatenate([x, y]))
    F = np.searchsorted(np.sort(x), pts[:-1], side="right") / x.size
    G = np.searchsorted(np.sort(y), pts[:-1], side="right") / y.size
    integral = 2.0 * np.sum((F - G) ** 2 * np.diff(pts))
    got = metrics.energy_distance(asx(xp, x[:, None]), asx(xp, y[:, None]))
    assert got == pytest.approx(integral, rel=1e-10)
    assert math.sqrt(got) == pytest.approx(scipy.stats.energy_distance(x, y), rel=1e-10)


def test_energy_distance_of_gaussian_samples_matches_population_closed_form():
    """MATH.md (15.4) at the population level for X ~ N(0, 1), Y ~ N(mu, s^2): X - Y is
    Gaussian, and for Z ~ N(d, v^2), E|Z| = v sqrt(2/pi) exp(-d^2 / 2v^2) + d (1 - 2 Phi(-d/v))
    (integrating |z| against the normal density), so D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|
    in closed form.  The unbiased U-statistic at n = m = 2000 scatters with standard
    deviation ~0.027 (measured over 6 seeds) around it; tolerance 0.1 (~4 sd), while a
    factor error in any term shifts the value by > 0.25."""
    def e_abs(d, v):
        return v * math.sqrt(2 / math.pi) * math.exp(-d * d / (2 * v * v)) + d * (1 - 2 * scipy.stats.norm.cdf(-d / v))

    mu, s = 0.7, 1.6
    pop = 2 * e_abs(mu, math.sqrt(1 + s * s)) - e_abs(0.0, math.sqrt(2)) - e_abs(0.0, math.sqrt(2) * s)
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((2000, 1)), mu + s * rng.standard_normal((2000, 1))
    assert metrics.energy_distance(x, y, unbiased=True) == pytest.approx(pop, abs=0.1)


# ---------------------------------------------------------------------------- sliced Wasserstein
def test_sliced_wasserstein_of_a_translation_is_the_projected_shift(xp):
    """MATH.md (15.1)-(15.2): y = x + s shifts every projection by theta.s and keeps the
    order, so each 1-D W_p is exactly |theta.s|: SW_2^2 = mean (theta.s)^2, SW_1 =
    mean |theta.s|.  Exact up to float64 round-off (rtol 1e-10)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 3))
    s = np.array([0.7, -1.2, 0.4])
    dirs = metrics.random_directions(64, 3, np.random.default_rng(5))
    proj = dirs @ s
    sw2 = metrics.sliced_wasserstein(asx(xp, x), asx(xp, x + s), directions=asx(xp, dirs))
    sw1 = metrics.sliced_wasserstein(asx(xp, x), asx(xp, x + s), directions=asx(xp, dirs), p=1)
    assert sw2 == pytest.approx(math.sqrt(np.mean(proj**2)), rel=1e-10)
    assert sw1 == pytest.approx(np.mean(np.abs(proj)), rel=1e-10)
    # rng path: the same directions are drawn from the same seed
    assert metrics.sliced_wasserstein(asx(xp, x), asx(xp, x + s), 64, np.random.default_rng(5)) == pytest.approx(sw2, rel=1e-12)


@given(n=st.integers(1, 15), m=st.integers(1, 15), seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_sliced_wasserstein_1d_unequal_sizes_matches_scipy(n, m, seed):
    """MATH.md (15.1) for n != m: the merged quantile grid gives the exact 1-D W_1,
    checked against ``scipy.stats.wasserstein_distance`` (CDF-difference integral, an
    independent method).  Hand-worked W_2: x = {0, 1}, y = {0, 1/2, 1}: the quantile
    functions differ by 1/2 on [1/3, 2/3), so W_2^2 = (1/2)^2 (1/3) = 1/12.  rtol 1e-10."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(n), rng.standard_normal(m) * 2 + 1
    one = np.ones((1, 1))
    got = metrics.sliced_wasserstein(x[:, None], y[:, None], directions=one, p=1)
    assert got == pytest.approx(scipy.stats.wasserstein_distance(x, y), rel=1e-10, abs=1e-12)
    w2 = metrics.sliced_wasserstein(np.array([[0.0], [1.0]]), np.array([[0.0], [0.5], [1.0]]), directions=one)
    assert w2 == pytest.approx(math.sqrt(1 / 12), rel=1e-12)


@given(n=st.integers(1, 9), m=st.integers(1, 9), p=st.sampled_from([1.0, 2.0, 3.0]), seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_wasserstein_1d_unequal_sizes_matches_replicated_matching(n, m, p, seed):
    """MATH.md (15.1) for n != m and p = 1, 2, 3 by a second exact method: repeat every
    x_i m times and every y_j n times (each atom keeps its mass 1/n = m/(nm), 1/m =
    n/(nm)); both become n m equally weighted atoms, for which the monotone coupling
    matches sorted entries one to one, W_p^p = mean |x'_(k) - y'_(k)|^p.  Float64 sums of
    <= 81 terms: rtol 1e-10."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(n), 1.5 * rng.standard_normal(m) + 0.3
    xr, yr = np.sort(np.repeat(x, m)), np.sort(np.repeat(y, n))
    want = np.mean(np.abs(xr - yr) ** p) ** (1.0 / p)
    got = metrics.sliced_wasserstein(x[:, None], y[:, None], directions=np.ones((1, 1)), p=p)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_sliced_wasserstein_of_gaussian_samples_matches_closed_form():
    """MATH.md (15.2)-(15.3): with the same directions, SW_2 between large samples of two
    3-D Gaussians approaches the closed form (15.3).  The empirical 1-D W_2 between n
    draws and the population has fluctuations of order n^{-1/2} ~ 0.007 at n = 20000
    (per projection, here averaged over 32); the distance is ~1.3, so rtol 3e-2 is a
    several-sigma bound, while a wrong formula (e.g. variances instead of standard
    deviations in (15.3)) is off by > 10%."""
    rng = np.random.default_rng(3)
    m1, m2 = np.zeros(3), np.array([1.0, -0.5, 0.8])
    c1, c2 = _spd(rng, 3), 2.5 * _spd(rng, 3)
    n = 20000
    x = rng.multivariate_normal(m1, c1, n)
    y = rng.multivariate_normal(m2, c2, n)
    dirs = metrics.random_directions(32, 3, np.random.default_rng(4))
    exact = metrics.sliced_wasserstein_gaussians(m1, c1, m2, c2, dirs)
    assert metrics.sliced_wasserstein(x, y, directions=dirs) == pytest.approx(exact, rel=3e-2)


# ---------------------------------------------------------------------------- Frechet distance
def test_frechet_closed_form_matches_scipy_sqrtm(xp):
    """MATH.md (15.7): the eigen-decomposition route (C1^{1/2} C2 C1^{1/2}) against the
    usual FID computation tr sqrtm(C1 C2) with ``scipy.linalg.sqrtm`` (a Schur-based
    square root of a non-symmetric matrix: an independent method).  1-D check: the
    squared 2-Wasserstein distance of two Gaussians, (m1 - m2)^2 + (s1 - s2)^2.  Well
    conditioned 5x5 matrices: rtol 1e-9."""
    rng = np.random.default_rng(6)
    c1, c2 = _spd(rng, 5), _spd(rng, 5)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    ref = np.sum((m1 - m2) ** 2) + np.trace(c1 + c2) - 2 * np.real(np.trace(scipy.linalg.sqrtm(c1 @ c2)))
    got = metrics.frechet_distance_gaussians(*(asx(xp, a) for a in (m1, c1, m2, c2)))
    assert got == pytest.approx(ref, rel=1e-9)
    one = metrics.frechet_distance_gaussians(asx(xp, [0.5]), asx(xp, [[4.0]]), asx(xp, [-1.0]), asx(xp, [[0.25]]))
    assert one == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_of_samples_matches_closed_form_and_is_zero_on_itself(xp):
    """MATH.md (15.7): Gaussians fitted to n = 40000 draws of each distribution give the
    closed form up to the estimation error of means and covariances, O(D / n^{1/2}) ~ 2e-2
    absolute for D = 4 and unit-scale covariances; the distance here is ~5, so atol 0.1.
    The distance of a set to itself is 0 up to eigenvalue round-off (atol 1e-8)."""
    rng = np.random.default_rng(7)
    m1, m2 = np.zeros(4), np.array([1.0, 0.0, -1.0, 0.5])
    c1, c2 = _spd(rng, 4), 3.0 * _spd(rng, 4)
    a = rng.multivariate_normal(m1, c1, 40000)
    b = rng.multivariate_normal(m2, c2, 40000)
    exact = metrics.frechet_distance_gaussians(m1, c1, m2, c2)
    assert metrics.frechet_distance(asx(xp, a), asx(xp, b)) == pytest.approx(exact, abs=0.1)
    assert abs(metrics.frechet_distance(asx(xp, a[:500]), asx(xp, a[:500]))) < 1e-8


# ---------------------------------------------------------------------------- oracle NLL
def test_oracle_nll_is_the_gaussian_entropy_on_its_own_samples():
    """MATH.md (15.6): on samples of p itself, the mean NLL estimates the entropy
    H(p) = (1/2) log det(2 pi e C) (closed form); Monte Carlo at a fixed seed: within 4
    standard errors (the function's own SE).  The per-sample values are scipy's logpdf."""
    rng = np.random.default_rng(8)
    mean, cov = np.array([0.5, -1.0]), _spd(rng, 2)
    oracle = refdiff.GaussianData(mean, cov)
    x = oracle.sample(4000, rng)
    nll, se = metrics.oracle_nll(x, oracle, return_se=True)
    assert nll == pytest.approx(-np.mean(scipy.stats.multivariate_normal(mean, cov).logpdf(x)), rel=1e-10)
    entropy = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1]
    assert abs(nll - entropy) < 4 * se


# ---------------------------------------------------------------------------- classifier
def test_softmax_cross_entropy_and_classifier_gradients_match_finite_differences():
    """MATH.md (15.8): the loss is -mean log_softmax(z)[y] (``scipy.special.log_softmax``),
    and the gradient (softmax - onehot) / N pushed through the classifier's backward matches
    central differences of the loss with respect to every parameter entry sampled and the
    input; float64, step 1e-6: errors O(h^2) ~ 1e-12 relative, rtol 1e-6."""
    rng = np.random.default_rng(9)
    params = classifier.classifier_init(rng, n_in=6, hidden=(5, 4), n_classes=3)
    x = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)
    logits, cache = classifier.classifier_forward(params, x)
    loss, dz = classifier.softmax_cross_entropy(logits, y)
    assert loss == pytest.approx(-np.mean(scipy.special.log_softmax(logits, axis=1)[np.arange(7), y]), rel=1e-12)
    grads, dx = classifier.classifier_backward(params, cache, dz)

    def f(p, xx):
        return classifier.softmax_cross_entropy(classifier.classifier_forward(p, xx)[0], y)[0]

    h = 1e-6
    for k in params:
        for idx in [tuple(rng.integers(0, s) for s in params[k].shape) for _ in range(3)]:
            pp, pm = {**params, k: params[k].copy()}, {**params, k: params[k].copy()}
            pp[k][idx] += h
            pm[k][idx] -= h
            assert grads[k][idx] == pytest.approx((f(pp, x) - f(pm, x)) / (2 * h), rel=1e-6, abs=1e-9), k
    e = np.zeros_like(x)
    e[2, 3] = h
    assert dx[2, 3] == pytest.approx((f(params, x + e) - f(params, x - e)) / (2 * h), rel=1e-6, abs=1e-9)


def test_train_classifier_separates_two_blobs_and_features_have_the_last_hidden_width():
    """The training loop drives the cross-entropy (15.8) down: two well-separated 64-D
    Gaussian blobs (means +-1 per pixel, std 0.5: Bayes error ~ 0) are classified
    perfectly on held-out draws; ``features`` has the last hidden width."""
    rng = np.random.default_rng(10)
    y_tr, y_te = rng.integers(0, 2, 200), rng.integers(0, 2, 100)
    mk = lambda y: (2.0 * y[:, None] - 1.0) + 0.5 * rng.standard_normal((y.size, 64))  # noqa: E731
    params, acc = train_digit_classifier(steps=60, hidden=(32, 16), x_train=mk(y_tr), y_train=y_tr,
                                                 x_test=mk(y_te), y_test=y_te)
    assert acc == 1.0
    xt = mk(y_te).reshape(-1, 1, 8, 8)
    assert np.all(classifier.classify(params, xt) == y_te)
    assert classifier.features(params, xt).shape == (100, 16)


# ---------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="same dimension"):
        metrics.energy_distance(x, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="p must be a finite number >= 1"):
        metrics.sliced_wasserstein(x, x, 4, np.random.default_rng(0), p=0.5)
    with pytest.raises(ValueError, match="n_projections must be an integer >= 1"):
        metrics.sliced_wasserstein(x, x, 0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="needs rng"):
        metrics.sliced_wasserstein(x, x)
    with pytest.raises(ValueError, match=r"directions must have shape \(L, 2\)"):
        metrics.sliced_wasserstein(x, x, directions=np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least one sample"):
        metrics.energy_distance(np.zeros((0, 2)), x)
    with pytest.raises(ValueError, match="unbiased=True needs at least 2"):
        metrics.energy_distance(x[:1], x, unbiased=True)
    with pytest.raises(TypeError, match="log_prob"):
        metrics.oracle_nll(x, object())
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.fit_gaussian(x[:1])
    with pytest.raises(ValueError, match="square matrices of one shape"):
        metrics.frechet_distance_gaussians(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"labels y must lie in \[0, 2\]"):
        classifier.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="data must be 'digits8x8' or 'shapes8x8'"):
        train_digit_classifier("mnist")
