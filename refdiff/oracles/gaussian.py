"""Gaussian data and Gaussian mixtures, MATH.md (6.1)-(6.12), (6.16)."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_finite_scalar, check_int
from ..backend import array_namespace, asarray_like, check_rng, standard_normal
from ..schedules import Schedule, gather
from ._base import _LOG_2PI, _check_sample_args, _logsumexp, _host_like, _Bundle, _LatentMixture, _Prepared, _col, _dev, _eig_psd, _host, _per_sample, _readonly

__all__ = ["GaussianData", "GaussianMixture"]


# ---------------------------------------------------------------------------- Gaussians
_SEQUENTIAL_SUM = 8  # NumPy sums fewer numbers than this left to right (pairwise beyond)

class _GaussianComponents(_LatentMixture):
    """Mixtures of Gaussians N(mu_k, U_k diag(lam_k) U_k^T), computed in each component's
    eigenbasis (MATH.md (6.5)).  ``_U`` is None for isotropic and diagonal covariances."""

    def _set_parts(self, w, mu, nu, U, event_shape, kind, labels):
        self._w = _readonly(w)
        with np.errstate(divide="ignore"):
            self._logw = _readonly(np.log(w))
        self._mu = _readonly(mu)  # (K, D)
        self._lam = _readonly(nu)  # (K, D)
        self._U = None if U is None else _readonly(U)  # (K, D, D)
        self.event_shape = tuple(int(s) for s in event_shape)
        self.D = int(mu.shape[1])
        self.K = int(mu.shape[0])
        self.kind = kind
        self._check_labels(labels, self.K)

    @property
    def weights(self):
        return self._w

    @property
    def means(self):
        return self._mu.reshape((self.K,) + self.event_shape)

    @property
    def covs(self):
        """(K, D, D) host array of the component covariances."""
        if self._U is None:
            return np.stack([np.diag(l) for l in self._lam])
        return np.einsum("kij,kj,klj->kil", self._U, self._lam, self._U)

    def _rot(self, P, y, back=False):
        """y (N, K, D) -> U_k^T y_k (forward) or U_k y_k (back); identity without U."""
        if self._U is None:
            return y
        xp = P.xp
        n, K, D = y.shape
        U = xp.reshape(P.c(self._U), (1, K, D, D))
        if back:
            return xp.reshape(xp.matmul(U, xp.reshape(y, (n, K, D, 1))), (n, K, D))  # U_k y_k
        return xp.reshape(xp.matmul(xp.reshape(y, (n, K, 1, D)), U), (n, K, D))  # y_k^T U_k

    def _components(self, P):
        xp = P.xp
        K, D = self.K, self.D
        mu = xp.reshape(P.c(self._mu), (1, K, D))
        nu = xp.reshape(P.c(self._lam), (1, K, D))
        a3 = xp.reshape(P.a, (P.n, 1, 1))
        s3 = xp.reshape(P.s, (P.n, 1, 1))
        diff = xp.reshape(P.xf, (P.n, 1, D)) - a3 * mu  # (N, K, D): x_t - alpha mu_k
        b = _Bundle()
        b.y = self._rot(P, diff)  # eigen-coordinates
        b.s2 = a3 * a3 * nu + s3 * s3  # (N, K, D): eigenvalues of alpha^2 Sigma_k + sigma^2 I
        if bool(xp.any(b.s2 <= 0)):
            raise ValueError("alpha^2 Sigma + sigma^2 I is singular: alpha and sigma must not both be 0, and a "
                             "singular covariance (eigenvalue 0, e.g. from condition()) has no density at sigma = 0")
        b.g = b.y / b.s2
        b.mu, b.nu, b.a3, b.s3 = mu, nu, a3, s3
        logw = xp.reshape(P.c(self._logw), (1, K))
        b.l = logw - 0.5 * xp.sum(b.y * b.g + xp.log(b.s2), axis=2) - 0.5 * D * _LOG_2PI  # (N, K)
        return b

    def _moments(self, P, b, r):
        xp = P.xp
        r3 = xp.reshape(r, (P.n, self.K, 1))
        # per component: E[x0|x_t,k] = mu_k + U_k alpha nu g,  score_k = -U_k g, MATH.md (6.2)-(6.3)
        x0 = xp.sum(r3 * (b.mu + self._rot(P, b.a3 * b.nu * b.g, back=True)), axis=1)
        sc = -xp.sum(r3 * self._rot(P, b.g, back=True), axis=1)
        return x0, sc

    def _div_velocity(self, P, da, ds):
        xp = P.xp
        b, r = self._posterior(P)
        da3, ds3 = xp.reshape(da, (P.n, 1, 1)), xp.reshape(ds, (P.n, 1, 1))
        c = (b.a3 * da3 * b.nu + b.s3 * ds3) / b.s2  # (N, K, D): Jacobian eigenvalues, (6.8)
        tr = xp.sum(c, axis=2)  # (N, K)
        # component velocities and scores in each eigenbasis: U^T u_k = c * y + alpha' U^T mu_k
        # (not needed explicitly: score_k . u_k is rotation invariant), MATH.md (6.9)
        x0_k = b.mu + self._rot(P, b.a3 * b.nu * b.g, back=True)  # (N, K, D)
        sc_k = -self._rot(P, b.g, back=True)  # (N, K, D)
        u_k = da3 * x0_k - ds3 * b.s3 * sc_k
        r3 = xp.reshape(r, (P.n, self.K, 1))
        sc = xp.sum(r3 * sc_k, axis=1)  # (N, D)
        u = xp.sum(r3 * u_k, axis=1)
        return xp.sum(r * (tr + xp.sum(sc_k * u_k, axis=2)), axis=1) - xp.sum(sc * u, axis=1)

    def eps(self, x_t, alpha, sigma):
        """E[eps | x_t] = -sigma * score, MATH.md (6.4), with the responsibilities of
        MATH.md (6.6).

        For isotropic and diagonal covariances with D < 8 it is computed batch-last: every
        (component, coordinate) quantity is a length-N vector in a (K, D, N) array, so the
        sums over coordinates and components run over leading axes of contiguous rows
        instead of the short last axes of (N, K, D).  These are the same terms added in the
        same order (NumPy adds fewer than 8 numbers sequentially; the softmax over
        components is the very same call), so the result is bit-identical to the (N, K, D)
        form (``tests/test_oracle_eps_fast.py`` keeps it as the reference).  Longer vectors
        (which NumPy sums pairwise, where the order would differ and the far tails'
        responsibilities amplify it) and full covariances take the general path."""
        if self._U is not None or self.D >= _SEQUENTIAL_SUM:
            return super().eps(x_t, alpha, sigma)
        P = _Prepared(self, x_t, alpha, sigma)
        xp = P.xp
        K, D, n = self.K, self.D, P.n
        X = xp.reshape(xp.permute_dims(P.xf, (1, 0)), (1, D, n))  # (1, D, N)
        mu = xp.reshape(P.c(self._mu), (K, D, 1))
        nu = xp.reshape(P.c(self._lam), (K, D, 1))
        a, s = xp.reshape(P.a, (1, 1, n)), xp.reshape(P.s, (1, 1, n))
        y = X - a * mu  # (K, D, N): x_t - alpha mu_k, coordinate rows
        s2 = a * a * nu + s * s  # eigenvalues of alpha^2 Sigma_k + sigma^2 I
        if bool(xp.any(s2 <= 0)):
            raise ValueError("alpha^2 Sigma + sigma^2 I is singular: alpha and sigma must not both be 0")
        g = y / s2
        logw = xp.reshape(P.c(self._logw), (K, 1))
        lk = logw - 0.5 * xp.sum(y * g + xp.log(s2), axis=1) - 0.5 * D * _LOG_2PI  # (K, N), MATH.md (6.6)
        lk = xp.permute_dims(lk, (1, 0))  # (N, K): the same softmax as _posterior, (6.6)
        lk = xp.reshape(xp.reshape(lk, (n * K,)), (n, K))  # contiguous, so NumPy sums in the same order
        r = xp.permute_dims(xp.exp(lk - _col(_logsumexp(lk, axis=1))), (1, 0))  # (K, N)
        sc = -xp.sum(xp.reshape(r, (K, 1, n)) * g, axis=0)  # (D, N): the score, MATH.md (6.7)
        return P.out(xp.permute_dims(-xp.reshape(P.s, (1, n)) * sc, (1, 0)))

    def sample(self, n, rng, like=None, *, return_labels=False):
        """``n`` exact draws, shape (n, *event_shape), float64 in ``like``'s namespace
        (NumPy without ``like``).  Draws on the host, in this order: the component indices
        ``rng.choice(K, n, p=weights)`` (mixtures only), then standard normals of shape
        (n, D).  x = mu_k + U_k diag(sqrt(lam_k)) z, MATH.md (6.5).  With
        ``return_labels`` also the class labels (n,) int64."""
        check_int("n", n, min=0)
        rng = check_rng(rng)
        _check_sample_args(like, return_labels)
        k = rng.choice(self.K, size=int(n), p=self._w) if self.K > 1 else np.zeros(int(n), dtype=np.int64)
        like = _host_like(like)
        xp = array_namespace(like)
        z = standard_normal(rng, (int(n), self.D), like, dtype=xp.float64)
        kk = asarray_like(k, z, dtype=xp.int64)
        nu = xp.take(asarray_like(self._lam, z), kk, axis=0)  # (n, D)
        mu = xp.take(asarray_like(self._mu, z), kk, axis=0)
        y = xp.sqrt(nu) * z
        if self._U is not None:
            U = xp.take(asarray_like(self._U, z), kk, axis=0)  # (n, D, D)
            y = xp.reshape(xp.matmul(U, xp.reshape(y, (int(n), self.D, 1))), (int(n), self.D))
        x = xp.reshape(mu + y, (int(n),) + self.event_shape)  # (n, D) -> (n, *event_shape)
        if return_labels:
            return x, asarray_like(self.labels[k], z, dtype=xp.int64)
        return x


def _parse_cov(cov, D, name):
    """One covariance (scalar, (D,), (D, D)) -> (nu (D,), U (D, D) or None, kind)."""
    if cov.ndim == 0:
        if not cov > 0:
            raise ValueError(f"{name} = {float(cov)!r} must be > 0 (an isotropic variance)")
        return np.full(D, float(cov)), None, "isotropic"
    if cov.shape == (D,):
        if np.any(cov <= 0):
            i = int(np.flatnonzero(cov <= 0)[0])
            raise ValueError(f"{name}[{i}] = {cov[i]!r} must be > 0 (diagonal variances)")
        return cov.copy(), None, "diagonal"
    if cov.shape == (D, D):
        nu, U = _eig_psd(cov, name)
        return nu, U, "full"
    raise ValueError(f"{name} has shape {cov.shape}; expected a scalar, ({D},) or ({D}, {D}) for D = {D} (the length of mean)")


class GaussianData(_GaussianComponents):
    """Gaussian data x_0 ~ N(mean, cov), MATH.md (6.1)-(6.4).

    ``mean`` and ``cov`` are specification arrays: lists and integer arrays are converted
    to host float64; None, strings, bools, complex, float16 and NaN/inf are refused.

    Parameters
    ----------
    mean : array
        Shape (D,) or an event shape such as (C, H, W) (flattened to D entries; samples
        come back in this shape).
    cov : float or array
        A scalar (isotropic variance), (D,) diagonal variances, or a (D, D) symmetric
        positive-definite matrix (eigendecomposed once on the host).

    Methods (x_t of shape (N, D) or (N, *event_shape); alpha, sigma floats or (N,)):
    sample, log_prob, log_prob_t, score, x0_mean, eps, v, velocity, div_velocity,
    as_model, ode_transport, reverse_kernel (and the class methods of a one-class mixture).

    Raises
    ------
    ValueError
        If ``mean`` is empty or an entry is not finite, or ``cov`` has the wrong shape or is
        not symmetric positive definite.
    TypeError
        If ``mean`` or ``cov`` is not a real array.
    """

    def __init__(self, mean, cov):
        mu = _host(mean, "mean")
        if mu.ndim < 1 or mu.size < 1:
            raise ValueError(f"mean must be at least 1-D and non-empty, got shape {mu.shape}")
        D = mu.size
        nu, U, kind = _parse_cov(_host(cov, "cov"), D, "cov")
        self._set_parts(
            np.ones(1), mu.reshape(1, D), nu.reshape(1, D), None if U is None else U.reshape(1, D, D),
            mu.shape, kind, None,
        )

    @property
    def mean(self):
        return self._mu[0].reshape(self.event_shape)

    @property
    def cov(self):
        return self.covs[0]

    def __repr__(self):
        return f"GaussianData(D={self.D}, kind={self.kind!r}, event_shape={self.event_shape})"

    def condition(self, H, c, noise_var=0.0):
        """The exact data distribution given the measurement c = H x0 + N(0, noise_var I)
        (H of shape (M, D) on flattened x0; noise_var = 0 allowed): a GaussianData whose
        covariance may be singular, MATH.md (17.1).  See :mod:`refdiff.conditioning`.

        Parameters
        ----------
        H : array_like (M, D)
            The measurement matrix on the flattened x_0 (M >= 1 rows).
        c : array_like (M,)
            The measured values.
        noise_var : float, default 0.0
            The measurement noise variance (finite, >= 0).

        Returns
        -------
        GaussianData
            The conditional distribution, an ordinary oracle.

        Raises
        ------
        TypeError
            If ``noise_var`` is not a number.
        ValueError
            If ``H`` or ``c`` has the wrong shape or is not finite, or ``noise_var`` is negative or
            not finite.
        """
        from ..conditioning import condition_gaussian, gaussian_from_moments

        H, c = _host(H, "H"), _host(c, "c")
        check_finite_scalar("noise_var", noise_var, low=0.0)
        m, C = condition_gaussian(self._mu[0], self.cov, H, c, noise_var)
        return gaussian_from_moments(m, C, self.event_shape)

    def ode_transport(self, x, alpha_from, sigma_from, alpha_to, sigma_to):
        """The exact probability-flow ODE map of any affine path from (alpha_from,
        sigma_from) to (alpha_to, sigma_to), MATH.md (6.12):
        NaN and inf in ``x`` propagate (not checked).
        ``z = diag(1/sqrt(alpha^2 nu + sigma^2)) U^T (x - alpha mu)`` is constant along
        the ODE, so ``x_to = alpha_to mu + U diag(sqrt(alpha_to^2 nu + sigma_to^2)) z``.

        Parameters
        ----------
        x : array (N, D) or (N, *event_shape)
            Points on the path at (alpha_from, sigma_from).
        alpha_from, sigma_from : float or array (N,)
            Where ``x`` is.
        alpha_to, sigma_to : float or array (N,)
            Where to transport it (sigma_to >= 0; 0 gives the data end).

        Returns
        -------
        array like x
            The transported points, float64.

        Raises
        ------
        ValueError
            If ``x`` has the wrong number of entries per sample, or sigma_to < 0.
        """
        P = _Prepared(self, x, alpha_from, sigma_from, name="x", coef_names=("alpha_from", "sigma_from"))
        xp = P.xp
        a1, s1 = _per_sample(alpha_to, P.xf, "alpha_to"), _per_sample(sigma_to, P.xf, "sigma_to")
        if bool(xp.any(s1 < 0)):
            raise ValueError(f"sigma_to contains {float(xp.min(s1))!r}; sigma_to must be >= 0")
        b = self._components(P)
        nu = b.nu
        s2_to = xp.reshape(a1 * a1, (P.n, 1, 1)) * nu + xp.reshape(s1 * s1, (P.n, 1, 1))
        y_to = b.y * xp.sqrt(s2_to / b.s2)  # (N, 1, D)
        x_to = xp.reshape(_col(a1), (P.n, 1, 1)) * b.mu + self._rot(P, y_to, back=True)
        return P.out(xp.reshape(x_to, (P.n, self.D)))

    def reverse_kernel(self, schedule, x_t, t):
        """The exact reverse kernel q(x_{t-1} | x_t) of the discrete chain under this data
        distribution (0-based index t; at t = 0 it is q(x_0 | x_t)), MATH.md (6.16).  NaN and
        inf in ``x_t`` propagate (not checked).

        Returns ``(mean, cov)``: mean of x_t's shape; cov (D, D) for an int ``t`` and
        (N, D, D) for an integer array ``t`` of shape (N,).

        Parameters
        ----------
        schedule : Schedule
            The discrete schedule of the chain.
        x_t : array (N, D) or (N, *event_shape)
            The states at t.
        t : int or integer array (N,)
            0-based timesteps in [0, T-1].

        Returns
        -------
        mean : array like x_t
        cov : array (D, D) or (N, D, D)

        Raises
        ------
        TypeError
            If ``schedule`` is not a refdiff Schedule.
        ValueError
            If ``x_t`` has the wrong number of entries per sample or ``t`` is out of range.
        """
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
        schedule.check_t(t)
        check_array("x_t", x_t, min_ndim=2)
        if hasattr(t, "ndim") and t.ndim == 1 and t.shape[0] != x_t.shape[0]:
            raise ValueError(f"t has shape {tuple(t.shape)} but x_t has shape {tuple(x_t.shape)}: one timestep per sample")
        P = _Prepared(self, x_t, 1.0, 0.0)
        xp = P.xp
        ab = gather(schedule.alpha_bars, t, P.xf)  # () or (N, 1)
        ab_prev = gather(schedule.alpha_bars_prev, t, P.xf)
        alpha = gather(schedule.alphas, t, P.xf)
        beta = gather(schedule.betas, t, P.xf)
        nu, mu = P.c(self._lam[0]), P.c(self._mu[0])  # (D,)
        var_prev = ab_prev * nu + (1.0 - ab_prev)  # eigenvalues of Cov(x_{t-1})
        s2 = ab * nu + (1.0 - ab)  # eigenvalues of Cov(x_t) = alpha var_prev + beta
        gain = xp.sqrt(alpha) * var_prev / s2
        diff = P.xf - xp.sqrt(ab) * mu  # (N, D)
        U = None if self._U is None else P.c(self._U[0])
        y = diff if U is None else xp.matmul(diff, U)
        mean = xp.sqrt(ab_prev) * mu + (gain * y if U is None else xp.matmul(gain * y, xp.matrix_transpose(U)))
        var = var_prev * beta / s2  # () -> (D,), or (N, D)
        if U is None:
            U = xp.eye(self.D, dtype=xp.float64, device=_dev(P.xf))
        if var.ndim == 1:
            cov = xp.matmul(U * xp.reshape(var, (1, self.D)), xp.matrix_transpose(U))
        else:
            cov = xp.matmul(xp.reshape(U, (1, self.D, self.D)) * xp.reshape(var, (P.n, 1, self.D)), xp.matrix_transpose(U))
        return P.out(mean), cov


class GaussianMixture(_GaussianComponents):
    """A Gaussian mixture sum_k w_k N(mu_k, Sigma_k), MATH.md (6.5)-(6.11).

    ``weights``, ``means`` and ``covs`` are specification arrays: lists and integer arrays
    are converted to host float64; None, strings, bools, complex, float16 and NaN/inf are
    refused.

    Parameters
    ----------
    weights : array (K,)
        Positive, summing to 1 (within 1e-10).
    means : array (K, D) or (K, *event_shape)
        E.g. (K, 1, 8, 8) templates of 8x8 images.
    covs : float or array
        A scalar (one isotropic variance for all), (K,) isotropic variances, (K, D)
        diagonal variances, or (K, D, D) symmetric positive-definite matrices.
    labels : integer array (K,), optional
        The class of each component (default: the component index); every class
        0..max(labels) must have a component.

    Raises
    ------
    ValueError
        If a weight is <= 0 or they do not sum to 1, the shapes disagree, an entry is not
        finite, a covariance is not symmetric positive definite, or the labels are invalid.
    """

    def __init__(self, weights, means, covs, labels=None):
        w = _host(weights, "weights")
        if w.ndim != 1 or w.size < 1:
            raise ValueError(f"weights must be a non-empty 1-D array (K,), got shape {w.shape}")
        K = w.size
        if np.any(w <= 0):
            i = int(np.flatnonzero(w <= 0)[0])
            raise ValueError(f"weights[{i}] = {w[i]!r}: weights must be > 0 (drop zero-weight components)")
        if abs(float(np.sum(w)) - 1.0) > 1e-10:
            raise ValueError(f"weights sum to {float(np.sum(w))!r}; they must sum to 1 (within 1e-10)")
        mu = _host(means, "means")
        if mu.ndim < 2 or mu.shape[0] != K:
            raise ValueError(f"means must have shape (K, D) or (K, *event_shape) with K = {K}, got {mu.shape}")
        event_shape = mu.shape[1:]
        D = math.prod(event_shape)
        cv = _host(covs, "covs")
        U = None
        if cv.ndim == 0:
            cv = np.full(K, float(cv))
        if cv.shape == (K,):
            parts = [_parse_cov(cv[k], D, f"covs[{k}]") for k in range(K)]
        elif cv.shape == (K, D) or cv.shape == (K, D, D):
            parts = [_parse_cov(cv[k], D, f"covs[{k}]") for k in range(K)]
        else:
            raise ValueError(f"covs has shape {cv.shape}; expected a scalar, ({K},), ({K}, {D}) or ({K}, {D}, {D}) "
                             f"for the {K} means of dimension {D}")
        nu = np.stack([p[0] for p in parts])
        if cv.ndim == 3:
            U = np.stack([p[1] for p in parts])
        kind = parts[0][2]
        self._set_parts(w, mu.reshape(K, D), nu, U, event_shape, kind, labels)

    def __repr__(self):
        return f"GaussianMixture(K={self.K}, D={self.D}, kind={self.kind!r}, n_classes={self.n_classes})"

    def condition(self, H, c, noise_var=0.0):
        """The exact data distribution given the measurement c = H x0 + N(0, noise_var I): a
        GaussianMixture of the conditioned components, reweighted by N(c; H mu_k,
        H Sigma_k H^T + noise_var I), MATH.md (17.2).  See :mod:`refdiff.conditioning`.

        Parameters
        ----------
        H : array_like (M, D)
            The measurement matrix on the flattened x_0 (M >= 1 rows).
        c : array_like (M,)
            The measured values.
        noise_var : float, default 0.0
            The measurement noise variance (finite, >= 0).

        Returns
        -------
        GaussianMixture
            The conditional distribution, an ordinary oracle.

        Raises
        ------
        TypeError
            If ``noise_var`` is not a number.
        ValueError
            If ``H`` or ``c`` has the wrong shape or is not finite, or ``noise_var`` is negative or
            not finite.
            Also ValueError if a component gives the measurement no density (noise_var = 0 with
            dependent rows of H).
        """
        from ..conditioning import condition_mixture, mixture_from_moments

        H, c = _host(H, "H"), _host(c, "c")
        check_finite_scalar("noise_var", noise_var, low=0.0)
        w, m, C = condition_mixture(self._w, self._mu, self.covs, H, c, noise_var)
        return mixture_from_moments(w, m, C, self.event_shape, self.labels)

    def conditional(self, label):
        """The class-conditional data distribution q_0(x | y = label): the mixture of the
        components with that label, weights renormalised to sum to 1, MATH.md (6.10).

        Parameters
        ----------
        label : int
            A class in [0, n_classes - 1].

        Returns
        -------
        GaussianMixture
            The conditional mixture (its components labelled by their new index).

        Raises
        ------
        TypeError
            If ``label`` is not an integer.
        ValueError
            If it is outside [0, n_classes - 1].
        """
        check_int("label", label, min=0)
        if not label < self.n_classes:
            raise ValueError(f"label = {label} is outside the classes [0, {self.n_classes - 1}]")
        keep = np.flatnonzero(self.labels == label)
        w = self._w[keep] / np.sum(self._w[keep])
        out = GaussianMixture.__new__(GaussianMixture)
        U = None if self._U is None else self._U[keep]
        out._set_parts(w, self._mu[keep], self._lam[keep], U, self.event_shape, self.kind, None)
        return out
