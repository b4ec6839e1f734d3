"""Conditioning an oracle on a linear measurement (refdiff/conditioning.py, MATH.md ch. 17):
against independent formulas (the partitioned precision matrix, the information form,
SciPy's densities), Monte Carlo, and the singular-covariance oracle."""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

import refdiff
from refdiff.conditioning import condition_gaussian, mask_measurement

MU2 = np.array([0.5, -0.3])
SIG2 = np.array([[1.0, 0.9], [0.9, 1.0]])


def _se_field(n=8, ell=1.5, nugget=0.05):
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    p = np.stack([ii.ravel(), jj.ravel()], 1).astype(float)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / ell ** 2) + nugget * np.eye(n * n)


def _precision_conditional(mu, Sig, keep, x_keep):
    """x_U | x_K from the partitioned precision Lambda = Sigma^-1: cov Lambda_UU^-1, mean
    mu_U - Lambda_UU^-1 Lambda_UK (x_K - mu_K) (an independent route to the Schur complement)."""
    D = mu.size
    U = np.setdiff1d(np.arange(D), keep)
    Lam = np.linalg.inv(Sig)
    C = np.linalg.inv(Lam[np.ix_(U, U)])
    m = mu[U] - C @ Lam[np.ix_(U, keep)] @ (x_keep - mu[keep])
    return U, m, C


def test_correlated_2d_gaussian_matches_precision_form():
    """MATH.md (17.1): the textbook 2-D case, x_1 | x_0 = 1.5 ~ N(0.6, 0.19), and the precision route, to 1e-12."""
    g = refdiff.GaussianData(MU2, SIG2).condition(np.array([[1.0, 0.0]]), [1.5])
    np.testing.assert_allclose(g.mean, [1.5, 0.6], rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.cov, [[0, 0], [0, 0.19]], rtol=0, atol=1e-12)
    U, m, C = _precision_conditional(MU2, SIG2, np.array([0]), np.array([1.5]))
    np.testing.assert_allclose(g.mean[U], m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.cov[np.ix_(U, U)], C, rtol=0, atol=1e-12)


def test_general_measurement_with_noise_matches_information_form():
    """MATH.md (17.1) with noise_var > 0 and a general H: the information form
    Sigma_c = (Sigma^-1 + H^T H / r)^-1, m_c = Sigma_c (Sigma^-1 mu + H^T c / r), to 1e-12."""
    rng = np.random.default_rng(3)
    D, M, r = 5, 3, 0.3
    A = rng.standard_normal((D, D))
    Sig = A @ A.T / D + 0.5 * np.eye(D)
    mu, H, c = rng.standard_normal(D), rng.standard_normal((M, D)), rng.standard_normal(M)
    g = refdiff.GaussianData(mu, Sig).condition(H, c, noise_var=r)
    P = np.linalg.inv(Sig) + H.T @ H / r
    C = np.linalg.inv(P)
    np.testing.assert_allclose(g.cov, C, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.mean, C @ (np.linalg.solve(Sig, mu) + H.T @ c / r), rtol=0, atol=1e-12)


def test_8x8_squared_exponential_field_matches_precision_form():
    """MATH.md (17.1): an 8x8 squared-exponential field, lower half known, against the partitioned precision, 1e-12."""
    Sig = _se_field()
    mu = np.linspace(-0.5, 0.5, 64)
    mask = np.zeros((8, 8))
    mask[:4] = 1.0  # generate the upper half
    x_known = np.random.default_rng(0).standard_normal((8, 8))
    g = refdiff.GaussianData(mu.reshape(8, 8), Sig).condition(*mask_measurement(mask, x_known))
    keep = np.flatnonzero(mask.ravel() == 0)
    U, m, C = _precision_conditional(mu, Sig, keep, x_known.ravel()[keep])
    assert g.event_shape == (8, 8)
    np.testing.assert_allclose(g.mean.ravel()[U], m, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.cov[np.ix_(U, U)], C, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.mean.ravel()[keep], x_known.ravel()[keep], rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.cov[np.ix_(keep, keep)], 0.0, atol=1e-12)


def test_three_component_mixture_weights_means_covariances():
    """MATH.md (17.2): weights w_k N(c; H mu_k, H Sigma_k H^T + R) from SciPy's density, components from the information form."""
    rng = np.random.default_rng(7)
    K, D, r = 3, 4, 0.2
    w = np.array([0.5, 0.3, 0.2])
    mus = rng.standard_normal((K, D)) * 1.5
    covs = []
    for _ in range(K):
        A = rng.standard_normal((D, D))
        covs.append(A @ A.T / D + 0.3 * np.eye(D))
    covs = np.stack(covs)
    H = rng.standard_normal((2, D))
    c = np.array([0.7, -0.4])
    mix = refdiff.GaussianMixture(w, mus, covs, labels=np.array([0, 1, 1])).condition(H, c, noise_var=r)
    dens = np.array([w[k] * multivariate_normal(H @ mus[k], H @ covs[k] @ H.T + r * np.eye(2)).pdf(c) for k in range(K)])
    np.testing.assert_allclose(mix.weights, dens / dens.sum(), rtol=1e-12, atol=0)
    for k in range(K):
        C = np.linalg.inv(np.linalg.inv(covs[k]) + H.T @ H / r)
        np.testing.assert_allclose(mix.covs[k], C, rtol=0, atol=1e-12)
        np.testing.assert_allclose(mix.means[k], C @ (np.linalg.solve(covs[k], mus[k]) + H.T @ c / r), rtol=0, atol=1e-12)
    assert mix.labels.tolist() == [0, 1, 1]


def test_mixture_inpainting_noise_free_against_partitioned_form():
    """MATH.md (17.2) with R = 0 and H = rows of I: the weights use the marginal density of the kept entries."""
    w = np.array([0.5, 0.5])
    mus = np.array([[1.0, 1.0], [-1.0, -1.0]])
    mix = refdiff.GaussianMixture(w, mus, 0.09).condition(np.array([[1.0, 0.0]]), [0.4])
    d = np.array([multivariate_normal(m[0], 0.09).pdf(0.4) for m in mus])
    np.testing.assert_allclose(mix.weights, d / d.sum(), rtol=1e-12)
    assert mix.weights[0] > 0.9998  # the capabilities note: 0.99986
    np.testing.assert_allclose(mix.means[:, 0], [0.4, 0.4], atol=1e-12)  # the isotropic components: x_1 keeps mu_k


def test_conditional_samples_monte_carlo():
    """MATH.md (17.1): 20 000 draws of the conditioned oracle have the exact mean and covariance within 4 standard errors."""
    Sig = _se_field(4, 1.0, 0.1)
    mask = np.ones((4, 4))
    mask[:, 0] = 0.0
    g = refdiff.GaussianData(np.zeros((4, 4)), Sig).condition(*mask_measurement(mask, np.full((4, 4), 1.0)))
    n = 20000
    x = g.sample(n, np.random.default_rng(1)).reshape(n, -1)
    m, C = g.mean.ravel(), g.cov
    se = np.sqrt(np.diag(C) / n) + 1e-15
    assert np.all(np.abs(x.mean(0) - m) <= 4 * se)
    d = x - m
    emp = d.T @ d / n
    se_c = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / n) + 1e-15
    assert np.all(np.abs(emp - C) <= 4 * se_c)
    assert np.all(x[:, mask.ravel() == 0] == 1.0) or np.allclose(x[:, mask.ravel() == 0], 1.0, atol=1e-12)


def test_singular_oracle_denoiser_scores_transport():
    """MATH.md (17.1): the conditioned (singular) oracle's denoiser is m_c + alpha Sigma_c (alpha^2 Sigma_c + sigma^2 I)^-1 (x - alpha m_c),
    its known entries are fixed at c for every x_t, ode_transport and as_model stay finite, log_prob at sigma = 0 refuses."""
    g = refdiff.GaussianData(MU2, SIG2).condition(np.array([[1.0, 0.0]]), [1.5])
    m, C = g.mean, g.cov
    x = np.random.default_rng(0).standard_normal((6, 2)) * 2
    a, s = 0.6, 0.8
    want = m + (x - a * m) @ np.linalg.solve(a * a * C + s * s * np.eye(2), a * C).T
    np.testing.assert_allclose(g.x0_mean(x, a, s), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.x0_mean(x, a, s)[:, 0], 1.5, atol=1e-12)
    want_score = -(x - a * m) @ np.linalg.inv(a * a * C + s * s * np.eye(2)).T
    np.testing.assert_allclose(g.score(x, a, s), want_score, rtol=1e-12, atol=1e-12)
    y = g.ode_transport(x, a, s, 1.0, 0.0)
    np.testing.assert_allclose(y[:, 0], 1.5, atol=1e-12)
    sch = refdiff.make_schedule("linear", 100)
    out = g.as_model(sch, "v_prediction")(x, np.full(6, 50))
    assert np.all(np.isfinite(out))
    loss = refdiff.irreducible_loss(g, g.sample(6, np.random.default_rng(1)), 50, x, sch, target="sample")
    assert np.all(np.isfinite(loss))
    with pytest.raises(ValueError, match="singular covariance"):
        g.log_prob(np.zeros((1, 2)))


def test_bad_measurements():
    """H with the wrong number of columns, c of the wrong length, noise_var < 0, masks: clear errors."""
    g = refdiff.GaussianData(MU2, SIG2)
    with pytest.raises(ValueError, match=r"H has shape \(1, 3\).*2 columns"):
        g.condition(np.ones((1, 3)), [1.0])
    with pytest.raises(ValueError, match="c has 2 entries"):
        g.condition(np.ones((1, 2)), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"noise_var = -0.1"):
        g.condition(np.ones((1, 2)), [1.0], noise_var=-0.1)
    with pytest.raises(ValueError, match="only 0"):
        mask_measurement(np.array([0.5, 1.0]), np.zeros(2))
    with pytest.raises(ValueError, match="nothing to generate"):
        mask_measurement(np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="expected x_known's shape"):
        mask_measurement(np.ones(3), np.zeros(2))
    mix = refdiff.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], 1.0)
    with pytest.raises(ValueError, match="singular"):
        mix.condition(np.array([[1.0, 0.0], [2.0, 0.0]]), [0.0, 0.0])


def test_condition_gaussian_redundant_rows_use_the_range():
    """A consistent measurement with a repeated row (S singular, R = 0) gives the same conditional as the single row."""
    m1, C1 = condition_gaussian(MU2, SIG2, np.array([[1.0, 0.0]]), [1.5])
    m2, C2 = condition_gaussian(MU2, SIG2, np.array([[1.0, 0.0], [1.0, 0.0]]), [1.5, 1.5])
    np.testing.assert_allclose(m2, m1, atol=1e-12)
    np.testing.assert_allclose(C2, C1, atol=1e-12)
    assert math.isclose(float(m1[1]), 0.6, abs_tol=1e-12)
