"""The batch-last mixture eps (refdiff.oracles.gaussian) against the previous (N, K, D)
implementation, which is still the base class's general path (kept reachable here)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.oracles._base import _LatentMixture
from refdiff.oracles.gaussian import GaussianData, GaussianMixture


def _previous_eps(oracle, x, a, s):
    """The (N, K, D) form that GaussianMixture.eps used before: _LatentMixture.eps."""
    return _LatentMixture.eps(oracle, x, a, s)


@given(K=st.integers(1, 9), D=st.integers(1, 12), n=st.integers(1, 300), diag=st.booleans(),
       per_sample=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_mixture_eps_equals_the_previous_form(K, D, n, diag, per_sample, seed):
    """MATH.md (6.4), MATH.md (6.6), MATH.md (6.7): E[eps | x_t] of an isotropic or diagonal
    Gaussian mixture, computed batch-last, equals the (N, K, D) computation it replaced
    bit for bit for D < 8 (the same terms summed in the same order; D >= 8 takes the
    general path, so equality is trivial there), for scalar or per-sample (alpha, sigma),
    including points far from every component (responsibilities near 0 and 1, where any
    reordered sum would show: a relative change of 1e-16 in log-densities of size 1e3
    moves the responsibilities by 1e-13)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.2, 1.0, K)
    w /= w.sum()
    means = rng.standard_normal((K, D)) * 3.0
    covs = rng.uniform(0.05, 2.0, (K, D)) if diag else rng.uniform(0.05, 2.0, K)
    gm = GaussianMixture(w, means, covs)
    x = rng.standard_normal((n, D)) * 4.0
    if per_sample:
        a = rng.uniform(0.05, 1.0, n)
        s = np.sqrt(1 - a * a)
    else:
        a, s = 0.6, 0.8
    got, ref = gm.eps(x, a, s), _previous_eps(gm, x, a, s)
    assert got.shape == ref.shape
    assert np.array_equal(got, ref)


def test_gaussian_data_eps_and_full_covariances():
    """MATH.md (6.4): one Gaussian N(mu, diag(d)) has E[eps | x_t] = sigma (x_t - alpha mu) /
    (alpha^2 d + sigma^2) in closed form (the batch-last path agrees to 1e-15 relative);
    a full-covariance mixture keeps the general path (identical to it)."""
    rng = np.random.default_rng(4)
    mu, d = rng.standard_normal(3), rng.uniform(0.1, 2.0, 3)
    g = GaussianData(mu, d)
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(g.eps(x, 0.6, 0.8), 0.8 * (x - 0.6 * mu) / (0.36 * d + 0.64), rtol=1e-15)
    A = rng.standard_normal((2, 3, 3))
    gm = GaussianMixture([0.3, 0.7], rng.standard_normal((2, 3)), A @ np.transpose(A, (0, 2, 1)) + np.eye(3))
    assert np.array_equal(gm.eps(x, 0.6, 0.8), _previous_eps(gm, x, 0.6, 0.8))
