"""Conditioning an exact oracle on a linear measurement, MATH.md chapter 17.

Given data x_0 (flattened to D entries) and a measurement c = H x_0 + eta, eta ~ N(0, R)
with R = noise_var * I (noise_var = 0 allowed), the data distribution given c is again a
Gaussian (for Gaussian data) or a Gaussian mixture (for mixture data), with the Schur
complement formulas (17.1) and the component reweighting (17.2).  Because the diffusion
noise is independent of (x_0, c), the ideal *conditional* denoiser is the ordinary oracle
of the conditional distribution; so :meth:`refdiff.GaussianData.condition` and
:meth:`refdiff.GaussianMixture.condition` return ordinary oracles, and every sampler,
``as_model``, ``ode_transport`` and ``irreducible_loss`` works on conditional problems.

With noise_var = 0 the conditional covariance is singular (the measured directions are
fixed): the oracles accept covariances with eigenvalues 0 (built by
:func:`gaussian_from_moments` / :func:`mixture_from_moments`); their noised quantities stay
finite for sigma > 0, and ``log_prob`` at sigma = 0 refuses a singular covariance.

Everything here is host-side float64 NumPy (the oracles' constants).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["condition_gaussian", "condition_mixture", "mask_measurement", "gaussian_from_moments",
           "mixture_from_moments", "psd_eig"]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_measurement(H, c, noise_var, D):
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[1] != D or H.shape[0] < 1:
        raise ValueError(f"H has shape {H.shape}; expected (M, {D}) with M >= 1 rows and D = {D} columns "
                         "(one per entry of the flattened x0)")
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if c.shape != (H.shape[0],):
        raise ValueError(f"c has {c.size} entries; expected M = {H.shape[0]} (one per row of H)")
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(c))):
        raise ValueError("H and c must be finite")
    if isinstance(noise_var, bool) or not isinstance(noise_var, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise_var must be a number >= 0, got {noise_var!r}")
    if not (math.isfinite(float(noise_var)) and noise_var >= 0):
        raise ValueError(f"noise_var = {noise_var!r} must be a finite number >= 0 (the measurement noise variance)")
    return H, c, float(noise_var)


def _solve_psd(S, B):
    """S^+ B for a symmetric PSD S: Cholesky when S is positive definite, else the
    pseudo-inverse on S's range (a consistent measurement with redundant rows)."""
    try:
        L = np.linalg.cholesky(S)
        return np.linalg.solve(L.T, np.linalg.solve(L, B))
    except np.linalg.LinAlgError:
        return np.linalg.pinv(S, hermitian=True) @ B


def condition_gaussian(mean, cov, H, c, noise_var=0.0):
    """(m_c, Sigma_c) of x_0 ~ N(mean, cov) given c = H x_0 + N(0, noise_var I),
    MATH.md (17.1): S = H Sigma H^T + R, m_c = mu + Sigma H^T S^-1 (c - H mu),
    Sigma_c = Sigma - Sigma H^T S^-1 H Sigma (symmetrised).  Host float64 arrays."""
    mu = np.asarray(mean, dtype=np.float64).reshape(-1)
    Sig = np.asarray(cov, dtype=np.float64)
    H, c, r = _check_measurement(H, c, noise_var, mu.size)
    SHt = Sig @ H.T  # (D, M)
    S = H @ SHt + r * np.eye(H.shape[0])
    K = _solve_psd(S, SHt.T).T  # (D, M): Sigma H^T S^-1
    m_c = mu + K @ (c - H @ mu)
    cov_c = Sig - K @ SHt.T
    return m_c, 0.5 * (cov_c + cov_c.T)


def _log_normal(c, m, S):
    """log N(c; m, S) for a positive-definite S (ValueError otherwise)."""
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        raise ValueError("H Sigma_k H^T + noise_var I is singular for a mixture component: the measurement "
                         "has no density under it (use noise_var > 0 or independent rows of H)") from None
    z = np.linalg.solve(L, c - m)
    return -0.5 * float(z @ z) - float(np.sum(np.log(np.diag(L)))) - 0.5 * c.size * _LOG_2PI


def condition_mixture(weights, means, covs, H, c, noise_var=0.0):
    """(w', m'_k, Sigma'_k) of the mixture sum_k w_k N(mu_k, Sigma_k) given c, MATH.md
    (17.2): each component conditioned by (17.1), weights w'_k proportional to
    w_k N(c; H mu_k, H Sigma_k H^T + R) (normalised in log space).  ``covs`` (K, D, D)."""
    w = np.asarray(weights, dtype=np.float64)
    mus = np.asarray(means, dtype=np.float64).reshape(w.size, -1)
    covs = np.asarray(covs, dtype=np.float64)
    H, c, r = _check_measurement(H, c, noise_var, mus.shape[1])
    logw, m_out, c_out = [], [], []
    for k in range(w.size):
        S = H @ covs[k] @ H.T + r * np.eye(H.shape[0])
        logw.append(math.log(w[k]) + _log_normal(c, H @ mus[k], S))
        m, C = condition_gaussian(mus[k], covs[k], H, c, r)
        m_out.append(m)
        c_out.append(C)
    logw = np.array(logw)
    w_new = np.exp(logw - np.max(logw))
    return w_new / np.sum(w_new), np.stack(m_out), np.stack(c_out)


def mask_measurement(mask, x_known):
    """(H, c) of an inpainting measurement: ``mask`` (the data's event shape, or with a
    leading 1) holds 1 where x is generated and 0 where ``x_known`` is kept (the diffusers
    meaning); H holds the rows of the identity at the kept entries (flattened order), c the
    kept values.  ValueError for a mask that is not 0/1, or that generates nothing."""
    m = np.asarray(mask, dtype=np.float64)
    xk = np.asarray(x_known, dtype=np.float64)
    if m.shape != xk.shape:
        raise ValueError(f"mask has shape {m.shape}; expected x_known's shape {xk.shape}")
    if not np.all((m == 0) | (m == 1)):
        bad = m[(m != 0) & (m != 1)].ravel()[0]
        raise ValueError(f"mask must hold only 0 (keep) and 1 (generate), found {bad!r}")
    if not np.any(m == 1):
        raise ValueError("mask has nothing to generate (no entry is 1; 1 = generate, the diffusers meaning)")
    keep = np.flatnonzero(m.reshape(-1) == 0)
    H = np.eye(m.size)[keep]
    return H, xk.reshape(-1)[keep]


def psd_eig(cov, name="cov", tol=None):
    """Eigendecomposition of a symmetric positive *semi*-definite matrix: eigenvalues below
    ``tol`` (default D * 1e-13 * the largest) are set to 0; a clearly negative one raises."""
    cov = np.asarray(cov, dtype=np.float64)
    lam, U = np.linalg.eigh(0.5 * (cov + cov.T))
    top = max(float(np.max(np.abs(lam))), 1e-300)
    tol = cov.shape[0] * 1e-13 * top if tol is None else tol
    if lam[0] < -max(tol, 1e-10 * top):
        raise ValueError(f"{name} is not positive semi-definite: eigenvalue {lam[0]!r} < 0")
    lam = np.where(lam < tol, 0.0, lam)
    return lam, U


def gaussian_from_moments(mean, cov, event_shape=None):
    """A :class:`refdiff.GaussianData` with a possibly singular covariance (eigenvalues 0 allowed)."""
    from .oracles import GaussianData

    mu = np.asarray(mean, dtype=np.float64)
    event_shape = mu.shape if event_shape is None else tuple(event_shape)
    D = mu.size
    lam, U = psd_eig(cov)
    out = GaussianData.__new__(GaussianData)
    out._set_parts(np.ones(1), mu.reshape(1, D), lam.reshape(1, D), U.reshape(1, D, D), event_shape, "full", None)
    return out


def mixture_from_moments(weights, means, covs, event_shape, labels=None):
    """A :class:`refdiff.GaussianMixture` with possibly singular component covariances."""
    from .oracles import GaussianMixture

    w = np.asarray(weights, dtype=np.float64)
    mus = np.asarray(means, dtype=np.float64).reshape(w.size, -1)
    parts = [psd_eig(C, f"covs[{k}]") for k, C in enumerate(covs)]
    out = GaussianMixture.__new__(GaussianMixture)
    out._set_parts(w, mus, np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]), tuple(event_shape),
                   "full", labels)
    return out
