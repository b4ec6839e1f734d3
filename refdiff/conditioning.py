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

from ._validate import check_array, check_finite_scalar
from .backend import to_numpy

__all__ = ["condition_gaussian", "condition_mixture", "mask_measurement", "gaussian_from_moments",
           "mixture_from_moments", "psd_eig"]

_LOG_2PI = math.log(2.0 * math.pi)


def _host(name, v, **kw):
    """``v`` checked (a finite float array, issue 19) and copied to a host float64 array."""
    check_array(name, v, finite=True, **kw)
    return np.asarray(to_numpy(v), dtype=np.float64)


def _check_measurement(H, c, noise_var, D):
    H = _host("H", H, ndim=2)
    if isinstance(c, (list, tuple)):  # the measurement may be written as a list (documented: array_like)
        c = np.asarray(c, dtype=np.float64)
    c = _host("c", c, min_ndim=1)
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
    Sigma_c = Sigma - Sigma H^T S^-1 H Sigma (symmetrised).  Host float64 arrays.

    Parameters
    ----------
    mean : array_like (D,) or the event shape
        mu (flattened).
    cov : array_like (D, D)
        Sigma (symmetric positive semi-definite).
    H : array_like (M, D)
        The measurement matrix on the flattened x_0 (M >= 1 rows).
    c : array_like (M,)
        The measured values.
    noise_var : float, default 0.0
        The measurement noise variance (finite, >= 0).

    Returns
    -------
    m_c : numpy.ndarray (D,)
        The conditional mean (float64).
    cov_c : numpy.ndarray (D, D)
        The conditional covariance, symmetrised (float64).

    Raises
    ------
    TypeError
        If ``noise_var`` is not a number.
    ValueError
        If ``H`` or ``c`` has the wrong shape or is not finite, or ``noise_var`` is negative or
        not finite.
    """
    mu = _host("mean", mean).reshape(-1)
    Sig = _host("cov", cov, ndim=2)
    if Sig.shape != (mu.size, mu.size):
        raise ValueError(f"cov has shape {Sig.shape} and mean has {mu.size} entries: cov must be (D, D), D = mean.size")
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
    w_k N(c; H mu_k, H Sigma_k H^T + R) (normalised in log space).  ``covs`` (K, D, D).

    Parameters
    ----------
    weights : array_like (K,)
        w_k.
    means : array_like (K, D) or (K, ...)
        mu_k (each flattened).
    covs : array_like (K, D, D)
        Sigma_k.
    H : array_like (M, D)
        The measurement matrix on the flattened x_0 (M >= 1 rows).
    c : array_like (M,)
        The measured values.
    noise_var : float, default 0.0
        The measurement noise variance (finite, >= 0).

    Returns
    -------
    weights : numpy.ndarray (K,)
        w'_k, summing to 1.
    means : numpy.ndarray (K, D)
        m'_k.
    covs : numpy.ndarray (K, D, D)
        Sigma'_k.

    Raises
    ------
    TypeError
        If ``noise_var`` is not a number.
    ValueError
        If ``H`` or ``c`` has the wrong shape or is not finite, or ``noise_var`` is negative or
        not finite.
        Also ValueError if H Sigma_k H^T + noise_var I is singular for a component.
    """
    w = _check_weights(weights)
    mus = _host("means", means, min_ndim=1)
    if mus.shape[0] != w.size:
        raise ValueError(f"means has shape {mus.shape}; expected K = {w.size} rows (weights has shape {w.shape})")
    mus = mus.reshape(w.size, -1)
    covs = _host("covs", covs, shape=(w.size, mus.shape[1], mus.shape[1]))
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
    kept values.  ValueError for a mask that is not 0/1, or that generates nothing.

    Parameters
    ----------
    mask : array_like
        0/1 values, the shape of ``x_known``.
    x_known : array_like
        The known data (the event shape, or with a leading 1).

    Returns
    -------
    H : numpy.ndarray (M, D)
        float64 rows of the identity, M the number of kept entries.
    c : numpy.ndarray (M,)
        The kept values (float64).

    Raises
    ------
    ValueError
        If the shapes differ, the mask is not 0/1, or it has no 1.
    """
    check_array("mask", mask, dtype="any")
    if "complex" in str(mask.dtype):
        raise TypeError(f"mask must be a real or boolean array of 0 and 1, got dtype {mask.dtype}")
    m = np.asarray(to_numpy(mask), dtype=np.float64)
    xk = _host("x_known", x_known)
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


def _check_weights(weights):
    w = _host("weights", weights, ndim=1)
    if np.any(w <= 0) or abs(float(np.sum(w)) - 1.0) > 1e-6:
        raise ValueError(f"weights must be > 0 and sum to 1, got {w.tolist()}")
    return w


def _check_event_shape(event_shape, D):
    if not isinstance(event_shape, (tuple, list)) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                                          or s < 1 for s in event_shape):
        raise TypeError(f"event_shape must be a tuple of ints >= 1, got {event_shape!r}")
    if int(np.prod(event_shape)) != D:
        raise ValueError(f"event_shape {tuple(event_shape)} has {int(np.prod(event_shape))} entries; expected D = {D}")
    return tuple(int(s) for s in event_shape)


def psd_eig(cov, name="cov", tol=None):
    """Eigendecomposition of a symmetric positive *semi*-definite matrix: eigenvalues below
    ``tol`` (default D * 1e-13 * the largest) are set to 0; a clearly negative one raises.

    Parameters
    ----------
    cov : array_like (D, D)
        The matrix (symmetrised before the decomposition).
    name : str, default "cov"
        Its name in the error message.
    tol : float, optional
        Eigenvalues below it become 0 (default D * 1e-13 * the largest absolute eigenvalue).

    Returns
    -------
    eigenvalues : numpy.ndarray (D,)
        Ascending, float64, >= 0.
    U : numpy.ndarray (D, D)
        The eigenvectors (columns).

    Raises
    ------
    ValueError
        If an eigenvalue is below -max(tol, 1e-10 * the largest).
    """
    cov = _host(name, cov, ndim=2)
    if tol is not None:
        check_finite_scalar("tol", tol, low=0.0)
    if cov.shape[0] != cov.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {cov.shape}")
    lam, U = np.linalg.eigh(0.5 * (cov + cov.T))
    top = max(float(np.max(np.abs(lam))), 1e-300)
    tol = cov.shape[0] * 1e-13 * top if tol is None else tol
    if lam[0] < -max(tol, 1e-10 * top):
        raise ValueError(f"{name} is not positive semi-definite: eigenvalue {lam[0]!r} < 0")
    lam = np.where(lam < tol, 0.0, lam)
    return lam, U


def gaussian_from_moments(mean, cov, event_shape=None):
    """A :class:`refdiff.GaussianData` with a possibly singular covariance (eigenvalues 0 allowed).

    Parameters
    ----------
    mean : array_like
        The mean (D entries; its shape is the default event shape).
    cov : array_like (D, D)
        The covariance (positive semi-definite).
    event_shape : tuple of int, optional
        The data's event shape; ``mean``'s shape when None.

    Returns
    -------
    GaussianData
        The oracle.

    Raises
    ------
    ValueError
        If ``cov`` is not positive semi-definite (:func:`psd_eig`).
    """
    from .oracles import GaussianData

    mu = _host("mean", mean)
    D = mu.size
    event_shape = mu.shape if event_shape is None else _check_event_shape(event_shape, D)
    check_array("cov", cov, ndim=2)
    if tuple(cov.shape) != (D, D):
        raise ValueError(f"cov has shape {tuple(cov.shape)} and mean has {D} entries: cov must be (D, D), D = mean.size")
    lam, U = psd_eig(cov)
    out = GaussianData.__new__(GaussianData)
    out._set_parts(np.ones(1), mu.reshape(1, D), lam.reshape(1, D), U.reshape(1, D, D), event_shape, "full", None)
    return out


def mixture_from_moments(weights, means, covs, event_shape, labels=None):
    """A :class:`refdiff.GaussianMixture` with possibly singular component covariances.

    Parameters
    ----------
    weights : array_like (K,)
        The component weights.
    means : array_like (K, D) or (K, ...)
        The component means (each flattened).
    covs : sequence of K arrays (D, D)
        The component covariances (positive semi-definite).
    event_shape : tuple of int
        The data's event shape.
    labels : array_like (K,), optional
        Class labels of the components.

    Returns
    -------
    GaussianMixture
        The oracle.

    Raises
    ------
    ValueError
        If a covariance is not positive semi-definite (:func:`psd_eig`).
    """
    from .oracles import GaussianMixture

    w = _check_weights(weights)
    mus = _host("means", means, min_ndim=1)
    if mus.shape[0] != w.size:
        raise ValueError(f"means has shape {mus.shape}; expected K = {w.size} rows (weights has shape {w.shape})")
    mus = mus.reshape(w.size, -1)
    event_shape = _check_event_shape(event_shape, mus.shape[1])
    if not isinstance(covs, (list, tuple)) and not hasattr(covs, "shape"):
        raise TypeError(f"covs must be a sequence of K (D, D) arrays, got {type(covs).__name__}")
    if len(covs) != w.size:
        raise ValueError(f"covs has {len(covs)} entries; expected K = {w.size}")
    parts = [psd_eig(C, f"covs[{k}]") for k, C in enumerate(covs)]
    if any(p[0].shape[0] != mus.shape[1] for p in parts):
        raise ValueError(f"covs must be (D, D) with D = {mus.shape[1]} (means' event size)")
    out = GaussianMixture.__new__(GaussianMixture)
    out._set_parts(w, mus, np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts]), tuple(event_shape),
                   "full", labels)
    return out
