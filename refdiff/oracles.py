"""Exact oracles: data distributions whose noised marginals are known in closed form,
MATH.md chapter 6.

For data x_0 ~ q_0 and the affine path x_t = alpha x_0 + sigma eps (eps ~ N(0, I); t = 0 is
data, alpha and sigma Python floats or per-sample arrays of shape (N,) or (N, 1, ..., 1)),
every oracle gives the exact noised log-density log p_t, the score, the posterior mean
E[x_0 | x_t] (the ideal denoiser), E[eps | x_t], v, the flow velocity and its divergence.

* :class:`GaussianData` — N(mu, Sigma), Sigma isotropic, diagonal or full;
  also the exact probability-flow ODE map and the exact reverse kernel.
* :class:`GaussianMixture` — sum_k w_k N(mu_k, Sigma_k), with class labels per component.
* :class:`EmpiricalData` — the uniform distribution on a finite set of points (the ideal,
  memorising denoiser).

Data are (N, D), or (N, C, H, W) (any (N, ...) with D entries per sample, flattened inside
and returned in the input's shape).  All arithmetic is float64.  The constants
(eigendecompositions of the covariances) are computed once on the host with NumPy at
construction and moved to the data's namespace on each call; every per-call computation
on user arrays uses the array API of the input.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import array_namespace, asarray_like, check_finite, standard_normal, check_rng
from .parameterization import PREDICTION_TYPES
from .schedules import Schedule, _ContinuousVP, alpha_sigma, gather

__all__ = ["GaussianData", "GaussianMixture", "EmpiricalData"]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------- helpers
def _host(a, name):
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a real array, got {type(a).__name__}: {e}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; it must be finite")
    return arr


def _readonly(a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _eig_psd(cov, name):
    """Eigendecomposition of a symmetric positive-definite matrix (D, D) on the host."""
    scale = float(np.max(np.abs(cov))) if cov.size else 0.0
    if not np.allclose(cov, cov.T, rtol=0.0, atol=1e-12 * max(scale, 1e-300)):
        i, j = np.unravel_index(int(np.argmax(np.abs(cov - cov.T))), cov.shape)
        raise ValueError(
            f"{name} is not symmetric: entry [{i}, {j}] = {cov[i, j]!r} but [{j}, {i}] = {cov[j, i]!r}"
        )
    lam, U = np.linalg.eigh(0.5 * (cov + cov.T))
    if lam[0] <= 0.0:
        raise ValueError(
            f"{name} is not positive definite: smallest eigenvalue {lam[0]!r} <= 0 "
            "(a covariance must be symmetric positive definite)"
        )
    return lam, U


def _logsumexp(l, axis):
    xp = array_namespace(l)
    m = xp.max(l, axis=axis, keepdims=True)
    return xp.squeeze(m, axis=axis) + xp.log(xp.sum(xp.exp(l - m), axis=axis))


class _Prepared:
    """A per-call bundle: the flattened input and its per-sample alpha, sigma (N,)."""

    def __init__(self, oracle, x, alpha, sigma, name="x_t"):
        xp = array_namespace(x)
        if not hasattr(x, "shape") or x.ndim < 2:
            raise ValueError(
                f"{name} must have shape (N, D) or (N, ...) with D = {oracle.D} entries per sample, "
                f"got {getattr(x, 'shape', type(x).__name__)}"
            )
        n = x.shape[0]
        d = math.prod(x.shape[1:])
        if d != oracle.D:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}: {d} entries per sample, but the oracle's "
                f"data dimension is D = {oracle.D} (event shape {oracle.event_shape})"
            )
        self.xp, self.shape, self.n = xp, tuple(x.shape), n
        self.xf = xp.astype(xp.reshape(x, (n, d)), xp.float64)  # (N, ...) -> (N, D)
        self.a = _per_sample(alpha, self.xf, "alpha")
        self.s = _per_sample(sigma, self.xf, "sigma")
        if bool(xp.any(self.s < 0)):
            raise ValueError(f"sigma contains {float(xp.min(self.s))!r}; sigma must be >= 0")

    def out(self, y):
        return self.xp.reshape(y, self.shape)  # (N, D) -> input shape

    def c(self, host):
        return asarray_like(host, self.xf, dtype=self.xp.float64)


def _per_sample(c, xf, name):
    """alpha / sigma (float, 0-d, (N,), (N, 1, ..., 1)) as a float64 array of shape (N,)."""
    xp = array_namespace(xf)
    n = xf.shape[0]
    if isinstance(c, bool):
        raise TypeError(f"{name} must be a number or an array, got a bool")
    if isinstance(c, (int, float, np.integer, np.floating)):
        if not math.isfinite(float(c)):
            raise ValueError(f"{name} = {c!r} must be finite")
        return xp.full((n,), float(c), dtype=xp.float64, device=_dev(xf))
    if array_namespace(c) is not xp:
        c = asarray_like(np.asarray(c, dtype=np.float64), xf, dtype=xp.float64)
    size = math.prod(c.shape)
    if size not in (1, n) or (size == n and c.ndim >= 1 and c.shape[0] != n and n != 1):
        raise ValueError(
            f"{name} has shape {tuple(c.shape)}; expected a scalar, (N,) or (N, 1, ..., 1) with N = {n}"
        )
    c = xp.astype(xp.reshape(c, (size,)), xp.float64)  # (N, 1, ...) -> (N,)
    if size == 1 and n != 1:
        c = xp.broadcast_to(c, (n,))
    check_finite(c, name)
    return c


def _dev(x):
    from array_api_compat import device

    return device(x)


def _col(c):
    xp = array_namespace(c)
    return xp.reshape(c, (c.shape[0], 1))  # (N,) -> (N, 1)


# ---------------------------------------------------------------------------- base
class _LatentMixture:
    """Common methods of distributions p_0 = sum_k w_k p_k whose noised components are
    known: subclasses give the joint log-likelihoods l_k(x_t) = log w_k + log p_{t,k}(x_t)
    and the posterior moments under given component weights r (N, K)."""

    D: int
    event_shape: tuple
    labels: np.ndarray
    n_classes: int

    # -- subclass interface
    def _components(self, P):  # -> bundle with .l (N, K)
        raise NotImplementedError

    def _moments(self, P, comp, r):  # -> (x0_bar (N, D), score_bar (N, D))
        raise NotImplementedError

    # -- public methods
    def log_prob_t(self, x_t, alpha, sigma):
        """The exact log-density of the noised marginal, log p_t(x_t) for x_t = alpha x_0 +
        sigma eps, in nats, shape (N,), MATH.md (6.1), (6.5), (6.13)."""
        P = _Prepared(self, x_t, alpha, sigma)
        return _logsumexp(self._components(P).l, axis=1)

    def log_prob(self, x0):
        """The data log-density log q_0(x0) in nats, shape (N,): :meth:`log_prob_t` at
        alpha = 1, sigma = 0, MATH.md (6.1), (6.5)."""
        return self.log_prob_t(x0, 1.0, 0.0)

    def _posterior(self, P):
        comp = self._components(P)
        xp = P.xp
        lse = _logsumexp(comp.l, axis=1)
        r = xp.exp(comp.l - _col(lse))  # (N, K) responsibilities, MATH.md (6.6)
        return comp, r

    def x0_mean(self, x_t, alpha, sigma):
        """E[x_0 | x_t], the ideal denoiser, MATH.md (6.3), (6.6)-(6.7), (6.14); the
        mixture's responsibilities p(k | x_t) are a stable softmax of (6.6)."""
        P = _Prepared(self, x_t, alpha, sigma)
        comp, r = self._posterior(P)
        return P.out(self._moments(P, comp, r)[0])

    def score(self, x_t, alpha, sigma):
        """grad_x log p_t(x_t), MATH.md (6.2), (6.7), (6.14)."""
        P = _Prepared(self, x_t, alpha, sigma)
        comp, r = self._posterior(P)
        return P.out(self._moments(P, comp, r)[1])

    def eps(self, x_t, alpha, sigma):
        """E[eps | x_t] = -sigma * score, MATH.md (6.4)."""
        P = _Prepared(self, x_t, alpha, sigma)
        comp, r = self._posterior(P)
        return P.out(-_col(P.s) * self._moments(P, comp, r)[1])

    def v(self, x_t, alpha, sigma):
        """E[v | x_t] = alpha E[eps | x_t] - sigma E[x_0 | x_t], MATH.md (6.4)."""
        P = _Prepared(self, x_t, alpha, sigma)
        comp, r = self._posterior(P)
        x0, sc = self._moments(P, comp, r)
        a, s = _col(P.a), _col(P.s)
        return P.out(-a * s * sc - s * x0)

    def velocity(self, x_t, alpha, sigma, d_alpha, d_sigma):
        """The probability-flow ODE velocity of the affine path,
        u(x_t) = alpha' E[x_0 | x_t] + sigma' E[eps | x_t], MATH.md (6.4), (7.3)."""
        P = _Prepared(self, x_t, alpha, sigma)
        da, ds = _per_sample(d_alpha, P.xf, "d_alpha"), _per_sample(d_sigma, P.xf, "d_sigma")
        comp, r = self._posterior(P)
        x0, sc = self._moments(P, comp, r)
        return P.out(_col(da) * x0 - _col(ds * P.s) * sc)

    def div_velocity(self, x_t, alpha, sigma, d_alpha, d_sigma):
        """The exact divergence (trace of the Jacobian) of :meth:`velocity`, shape (N,),
        MATH.md (6.8)-(6.9), (6.15)."""
        P = _Prepared(self, x_t, alpha, sigma)
        da, ds = _per_sample(d_alpha, P.xf, "d_alpha"), _per_sample(d_sigma, P.xf, "d_sigma")
        return self._div_velocity(P, da, ds)

    # -- classes
    def _check_labels(self, labels, K):
        if labels is None:
            labels = np.arange(K)
        lab = np.asarray(labels)
        if lab.shape != (K,) or lab.dtype.kind not in "iu":
            raise ValueError(f"labels must be an integer array of shape ({K},), got {lab.dtype} {lab.shape}")
        if lab.min() < 0:
            raise ValueError(f"labels must be >= 0, got {int(lab.min())}")
        n_classes = int(lab.max()) + 1
        missing = sorted(set(range(n_classes)) - set(lab.tolist()))
        if missing:
            raise ValueError(f"labels must use every class 0..{n_classes - 1}; class(es) {missing} have no component")
        self.labels = lab.astype(np.int64)
        self.labels.setflags(write=False)
        self.n_classes = n_classes

    def _class_mask(self, P, y):
        xp = P.xp
        lab = xp.reshape(asarray_like(self.labels, P.xf, dtype=xp.int64), (1, -1))  # (1, K)
        if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
            yy = xp.full((P.n, 1), int(y), dtype=xp.int64, device=_dev(P.xf))
        else:
            if not hasattr(y, "dtype") or not xp.isdtype(array_namespace(y).asarray(y).dtype, "integral"):
                raise TypeError(f"y must be an int or an integer array of shape (N,), got {y!r}")
            if tuple(y.shape) != (P.n,):
                raise ValueError(f"y has shape {tuple(y.shape)}; expected ({P.n},)")
            yy = xp.reshape(xp.astype(y, xp.int64), (P.n, 1))  # (N,) -> (N, 1)
        lo, hi = int(xp.min(yy)), int(xp.max(yy))
        if lo < 0 or hi >= self.n_classes:
            raise ValueError(f"y contains {lo if lo < 0 else hi}, outside the classes [0, {self.n_classes - 1}]")
        return lab == yy  # (N, K)

    def log_class_posterior(self, x_t, alpha, sigma):
        """log p(y | x_t) for every class y, shape (N, n_classes), MATH.md (6.10)."""
        P = _Prepared(self, x_t, alpha, sigma)
        xp = P.xp
        l = self._components(P).l
        lse = _logsumexp(l, axis=1)
        cols = []
        for c in range(self.n_classes):
            idx = asarray_like(np.flatnonzero(self.labels == c), P.xf, dtype=xp.int64)
            cols.append(_logsumexp(xp.take(l, idx, axis=1), axis=1) - lse)
        return xp.stack(cols, axis=1)

    def grad_log_class_posterior(self, x_t, alpha, sigma, y):
        """grad_x log p(y | x_t) = grad log p_t(x_t | y) - grad log p_t(x_t), the classifier
        guidance direction, MATH.md (6.11).  ``y`` an int or an integer array (N,)."""
        P = _Prepared(self, x_t, alpha, sigma)
        xp = P.xp
        comp, r = self._posterior(P)
        mask = self._class_mask(P, y)
        ly = xp.where(mask, comp.l, xp.full_like(comp.l, -math.inf))
        ry = xp.exp(ly - _col(_logsumexp(ly, axis=1)))  # (N, K) responsibilities within y
        return P.out(self._moments(P, comp, ry)[1] - self._moments(P, comp, r)[1])

    # -- as a model
    def as_model(self, schedule, prediction_type: str = "epsilon"):
        """This oracle as a plain model callable ``model(x, t)``, ``t`` of shape (N,).

        With a :class:`~refdiff.Schedule`: integer ``t`` are 0-based indices (alpha =
        sqrt(alpha_bar_t), sigma = sqrt(1 - alpha_bar_t)), float ``t`` continuous indices;
        with a continuous VP schedule, float times in (0, 1] (t = 0 data); see
        :func:`refdiff.alpha_sigma`.  ``prediction_type``: "epsilon" (6.4), "sample" (the
        posterior mean, (6.3)), "v_prediction" (6.4) or "score" (6.2); MATH.md (6.4).
        The output is float64 in x's namespace and shape."""
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
        method = {"epsilon": self.eps, "sample": self.x0_mean, "v_prediction": self.v, "score": self.score}[
            prediction_type
        ]
        if not isinstance(schedule, (Schedule, _ContinuousVP)):
            raise TypeError(f"schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")

        def model(x, t):
            alpha, sigma = alpha_sigma(schedule, t, x)
            return method(x, alpha, sigma)

        model.prediction_type = prediction_type
        model.oracle = self
        return model


# ---------------------------------------------------------------------------- Gaussians
class _Bundle:
    pass


class _GaussianComponents(_LatentMixture):
    """Mixtures of Gaussians N(mu_k, U_k diag(lam_k) U_k^T), computed in each component's
    eigenbasis (MATH.md (6.5)).  ``_U`` is None for isotropic and diagonal covariances."""

    def _set_parts(self, w, mu, lam, U, event_shape, kind, labels):
        self._w = _readonly(w)
        with np.errstate(divide="ignore"):
            self._logw = _readonly(np.log(w))
        self._mu = _readonly(mu)  # (K, D)
        self._lam = _readonly(lam)  # (K, D)
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
        lam = xp.reshape(P.c(self._lam), (1, K, D))
        a3 = xp.reshape(P.a, (P.n, 1, 1))
        s3 = xp.reshape(P.s, (P.n, 1, 1))
        diff = xp.reshape(P.xf, (P.n, 1, D)) - a3 * mu  # (N, K, D): x_t - alpha mu_k
        b = _Bundle()
        b.y = self._rot(P, diff)  # eigen-coordinates
        b.s2 = a3 * a3 * lam + s3 * s3  # (N, K, D): eigenvalues of alpha^2 Sigma_k + sigma^2 I
        if bool(xp.any(b.s2 <= 0)):
            raise ValueError("alpha^2 Sigma + sigma^2 I is singular: alpha and sigma must not both be 0, and a "
                             "singular covariance (eigenvalue 0, e.g. from condition()) has no density at sigma = 0")
        b.g = b.y / b.s2
        b.mu, b.lam, b.a3, b.s3 = mu, lam, a3, s3
        logw = xp.reshape(P.c(self._logw), (1, K))
        b.l = logw - 0.5 * xp.sum(b.y * b.g + xp.log(b.s2), axis=2) - 0.5 * D * _LOG_2PI  # (N, K)
        return b

    def _moments(self, P, b, r):
        xp = P.xp
        r3 = xp.reshape(r, (P.n, self.K, 1))
        # per component: E[x0|x_t,k] = mu_k + U_k alpha lam g,  score_k = -U_k g, MATH.md (6.2)-(6.3)
        x0 = xp.sum(r3 * (b.mu + self._rot(P, b.a3 * b.lam * b.g, back=True)), axis=1)
        sc = -xp.sum(r3 * self._rot(P, b.g, back=True), axis=1)
        return x0, sc

    def _div_velocity(self, P, da, ds):
        xp = P.xp
        b, r = self._posterior(P)
        da3, ds3 = xp.reshape(da, (P.n, 1, 1)), xp.reshape(ds, (P.n, 1, 1))
        c = (b.a3 * da3 * b.lam + b.s3 * ds3) / b.s2  # (N, K, D): Jacobian eigenvalues, (6.8)
        tr = xp.sum(c, axis=2)  # (N, K)
        # component velocities and scores in each eigenbasis: U^T u_k = c * y + alpha' U^T mu_k
        # (not needed explicitly: score_k . u_k is rotation invariant), MATH.md (6.9)
        x0_k = b.mu + self._rot(P, b.a3 * b.lam * b.g, back=True)  # (N, K, D)
        sc_k = -self._rot(P, b.g, back=True)  # (N, K, D)
        u_k = da3 * x0_k - ds3 * b.s3 * sc_k
        r3 = xp.reshape(r, (P.n, self.K, 1))
        sc = xp.sum(r3 * sc_k, axis=1)  # (N, D)
        u = xp.sum(r3 * u_k, axis=1)
        return xp.sum(r * (tr + xp.sum(sc_k * u_k, axis=2)), axis=1) - xp.sum(sc * u, axis=1)

    def sample(self, n, rng, like=None, *, return_labels=False):
        """``n`` exact draws, shape (n, *event_shape), float64 in ``like``'s namespace
        (NumPy without ``like``).  Draws on the host, in this order: the component indices
        ``rng.choice(K, n, p=weights)`` (mixtures only), then standard normals of shape
        (n, D).  x = mu_k + U_k diag(sqrt(lam_k)) z, MATH.md (6.5).  With
        ``return_labels`` also the class labels (n,) int64."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        check_rng(rng)
        k = rng.choice(self.K, size=int(n), p=self._w) if self.K > 1 else np.zeros(int(n), dtype=np.int64)
        if like is None:
            import array_api_compat.numpy as xnp

            like = xnp.zeros((1,), dtype=xnp.float64)
        xp = array_namespace(like)
        z = standard_normal(rng, (int(n), self.D), like, dtype=xp.float64)
        kk = asarray_like(k, z, dtype=xp.int64)
        lam = xp.take(asarray_like(self._lam, z), kk, axis=0)  # (n, D)
        mu = xp.take(asarray_like(self._mu, z), kk, axis=0)
        y = xp.sqrt(lam) * z
        if self._U is not None:
            U = xp.take(asarray_like(self._U, z), kk, axis=0)  # (n, D, D)
            y = xp.reshape(xp.matmul(U, xp.reshape(y, (int(n), self.D, 1))), (int(n), self.D))
        x = xp.reshape(mu + y, (int(n),) + self.event_shape)  # (n, D) -> (n, *event_shape)
        if return_labels:
            return x, asarray_like(self.labels[k], z, dtype=xp.int64)
        return x


def _parse_cov(cov, D, name):
    """One covariance (scalar, (D,), (D, D)) -> (lam (D,), U (D, D) or None, kind)."""
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
        lam, U = _eig_psd(cov, name)
        return lam, U, "full"
    raise ValueError(f"{name} has shape {cov.shape}; expected a scalar, ({D},) or ({D}, {D}) for D = {D}")


class GaussianData(_GaussianComponents):
    """Gaussian data x_0 ~ N(mean, cov), MATH.md (6.1)-(6.4).

    mean
        Shape (D,) or an event shape such as (C, H, W) (flattened to D entries; samples
        come back in this shape).
    cov
        A scalar (isotropic variance), (D,) diagonal variances, or a (D, D) symmetric
        positive-definite matrix (eigendecomposed once on the host).

    Methods (x_t of shape (N, D) or (N, *event_shape); alpha, sigma floats or (N,)):
    sample, log_prob, log_prob_t, score, x0_mean, eps, v, velocity, div_velocity,
    as_model, ode_transport, reverse_kernel (and the class methods of a one-class mixture).
    """

    def __init__(self, mean, cov):
        mu = _host(mean, "mean")
        if mu.ndim < 1 or mu.size < 1:
            raise ValueError(f"mean must be at least 1-D and non-empty, got shape {mu.shape}")
        D = mu.size
        lam, U, kind = _parse_cov(_host(cov, "cov"), D, "cov")
        self._set_parts(
            np.ones(1), mu.reshape(1, D), lam.reshape(1, D), None if U is None else U.reshape(1, D, D),
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
        covariance may be singular, MATH.md (17.1).  See :mod:`refdiff.conditioning`."""
        from .conditioning import condition_gaussian, gaussian_from_moments

        m, C = condition_gaussian(self._mu[0], self.cov, H, c, noise_var)
        return gaussian_from_moments(m, C, self.event_shape)

    def ode_transport(self, x, alpha_from, sigma_from, alpha_to, sigma_to):
        """The exact probability-flow ODE map of any affine path from (alpha_from,
        sigma_from) to (alpha_to, sigma_to), MATH.md (6.12):
        ``z = diag(1/sqrt(alpha^2 lam + sigma^2)) U^T (x - alpha mu)`` is constant along
        the ODE, so ``x_to = alpha_to mu + U diag(sqrt(alpha_to^2 lam + sigma_to^2)) z``."""
        P = _Prepared(self, x, alpha_from, sigma_from, name="x")
        xp = P.xp
        a1, s1 = _per_sample(alpha_to, P.xf, "alpha_to"), _per_sample(sigma_to, P.xf, "sigma_to")
        if bool(xp.any(s1 < 0)):
            raise ValueError(f"sigma_to contains {float(xp.min(s1))!r}; sigma_to must be >= 0")
        b = self._components(P)
        lam = b.lam
        s2_to = xp.reshape(a1 * a1, (P.n, 1, 1)) * lam + xp.reshape(s1 * s1, (P.n, 1, 1))
        y_to = b.y * xp.sqrt(s2_to / b.s2)  # (N, 1, D)
        x_to = xp.reshape(_col(a1), (P.n, 1, 1)) * b.mu + self._rot(P, y_to, back=True)
        return P.out(xp.reshape(x_to, (P.n, self.D)))

    def reverse_kernel(self, schedule, x_t, t):
        """The exact reverse kernel q(x_{t-1} | x_t) of the discrete chain under this data
        distribution (0-based index t; at t = 0 it is q(x_0 | x_t)), MATH.md (6.16).

        Returns ``(mean, cov)``: mean of x_t's shape; cov (D, D) for an int ``t`` and
        (N, D, D) for an integer array ``t`` of shape (N,)."""
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
        P = _Prepared(self, x_t, 1.0, 0.0)
        xp = P.xp
        ab = gather(schedule.alpha_bars, t, P.xf)  # () or (N, 1)
        ab_prev = gather(schedule.alpha_bars_prev, t, P.xf)
        alpha = gather(schedule.alphas, t, P.xf)
        beta = gather(schedule.betas, t, P.xf)
        lam, mu = P.c(self._lam[0]), P.c(self._mu[0])  # (D,)
        var_prev = ab_prev * lam + (1.0 - ab_prev)  # eigenvalues of Cov(x_{t-1})
        s2 = ab * lam + (1.0 - ab)  # eigenvalues of Cov(x_t) = alpha var_prev + beta
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

    weights
        (K,), positive, summing to 1 (within 1e-10).
    means
        (K, D) or (K, *event_shape), e.g. (K, 1, 8, 8) templates of 8x8 images.
    covs
        A scalar (one isotropic variance for all), (K,) isotropic variances, (K, D)
        diagonal variances, or (K, D, D) symmetric positive-definite matrices.
    labels
        (K,) integer class of each component (default: the component index); every
        class 0..max(labels) must have a component.
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
            raise ValueError(f"covs has shape {cv.shape}; expected a scalar, ({K},), ({K}, {D}) or ({K}, {D}, {D})")
        lam = np.stack([p[0] for p in parts])
        if cv.ndim == 3:
            U = np.stack([p[1] for p in parts])
        kind = parts[0][2]
        self._set_parts(w, mu.reshape(K, D), lam, U, event_shape, kind, labels)

    def __repr__(self):
        return f"GaussianMixture(K={self.K}, D={self.D}, kind={self.kind!r}, n_classes={self.n_classes})"

    def condition(self, H, c, noise_var=0.0):
        """The exact data distribution given the measurement c = H x0 + N(0, noise_var I): a
        GaussianMixture of the conditioned components, reweighted by N(c; H mu_k,
        H Sigma_k H^T + noise_var I), MATH.md (17.2).  See :mod:`refdiff.conditioning`."""
        from .conditioning import condition_mixture, mixture_from_moments

        w, m, C = condition_mixture(self._w, self._mu, self.covs, H, c, noise_var)
        return mixture_from_moments(w, m, C, self.event_shape, self.labels)

    def conditional(self, label):
        """The class-conditional data distribution q_0(x | y = label): the mixture of the
        components with that label, weights renormalised to sum to 1, MATH.md (6.10)."""
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise TypeError(f"label must be an int, got {label!r}")
        if not 0 <= label < self.n_classes:
            raise ValueError(f"label = {label} is outside the classes [0, {self.n_classes - 1}]")
        keep = np.flatnonzero(self.labels == label)
        w = self._w[keep] / np.sum(self._w[keep])
        out = GaussianMixture.__new__(GaussianMixture)
        U = None if self._U is None else self._U[keep]
        out._set_parts(w, self._mu[keep], self._lam[keep], U, self.event_shape, self.kind, None)
        return out


# ---------------------------------------------------------------------------- empirical data
class EmpiricalData(_LatentMixture):
    """The uniform distribution on M points, q_0 = (1/M) sum_m delta(x - p_m), MATH.md
    (6.13)-(6.15): its posterior mean E[x_0 | x_t] is the ideal denoiser of a finite
    training set (a softmax-weighted average of the points, which memorises them).

    points
        (M, D) or (M, *event_shape).
    labels
        Optional (M,) integer class of each point (default: every point is class 0).

    All methods need sigma > 0 (the data distribution has no density; :meth:`log_prob`
    raises).
    """

    _CHUNK = 1 << 22  # max N * M * D elements per block of squared distances

    def __init__(self, points, labels=None):
        p = _host(points, "points")
        if p.ndim < 2 or p.shape[0] < 1:
            raise ValueError(f"points must have shape (M, D) or (M, *event_shape) with M >= 1, got {p.shape}")
        self.M = int(p.shape[0])
        self.event_shape = tuple(int(s) for s in p.shape[1:])
        self.D = math.prod(self.event_shape)
        self._p = _readonly(p.reshape(self.M, self.D))
        self._check_labels(np.zeros(self.M, dtype=np.int64) if labels is None else labels, self.M)

    @property
    def points(self):
        return self._p.reshape((self.M,) + self.event_shape)

    def __repr__(self):
        return f"EmpiricalData(M={self.M}, D={self.D})"

    def log_prob(self, x0):
        raise ValueError(
            "EmpiricalData is a sum of point masses and has no density; use log_prob_t with sigma > 0"
        )

    def _components(self, P):
        xp = P.xp
        if bool(xp.any(P.s <= 0)):
            raise ValueError("EmpiricalData needs sigma > 0 (the data distribution has no density)")
        pts = P.c(self._p)  # (M, D)
        step = max(1, self._CHUNK // (self.M * self.D))
        blocks = []
        for i in range(0, P.n, step):
            j = min(i + step, P.n)
            xb, ab = P.xf[i:j, :], P.a[i:j]
            nb = xb.shape[0]
            diff = xp.reshape(xb, (nb, 1, self.D)) - xp.reshape(ab, (nb, 1, 1)) * xp.reshape(pts, (1, self.M, self.D))
            blocks.append(xp.sum(diff * diff, axis=2))  # (nb, M) ||x - alpha p_m||^2
        d2 = xp.concat(blocks, axis=0)
        s2 = _col(P.s * P.s)
        b = _Bundle()
        b.l = -0.5 * d2 / s2 - 0.5 * self.D * (_LOG_2PI + xp.log(s2)) - math.log(self.M)  # (N, M), (6.13)
        b.pts = pts
        return b

    def _moments(self, P, b, r):
        x0 = _matmul(r, b.pts)  # (N, M) @ (M, D), (6.14)
        sc = (_col(P.a) * x0 - P.xf) / _col(P.s * P.s)
        return x0, sc

    def _div_velocity(self, P, da, ds):
        xp = P.xp
        b, r = self._posterior(P)
        x0, _ = self._moments(P, b, r)
        # tr Cov[x_0 | x_t] = sum_m r_m |p_m - x0_bar|^2  (MATH.md (6.15))
        sq = xp.reshape(xp.sum(b.pts * b.pts, axis=1), (1, self.M))
        tr_cov = xp.sum(r * sq, axis=1) - xp.sum(x0 * x0, axis=1)
        a, s = P.a, P.s
        return self.D * ds / s + (da - a * ds / s) * (a / (s * s)) * tr_cov

    def sample(self, n, rng, like=None, *, return_labels=False):
        """``n`` draws (with replacement) of the points: indices ``rng.integers(0, M, n)``
        on the host, shape (n, *event_shape), MATH.md (6.13)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        check_rng(rng)
        k = rng.integers(0, self.M, size=int(n))
        if like is None:
            import array_api_compat.numpy as xnp

            like = xnp.zeros((1,), dtype=xnp.float64)
        x = asarray_like(self._p[k].reshape((int(n),) + self.event_shape), like, dtype=array_namespace(like).float64)
        if return_labels:
            return x, asarray_like(self.labels[k], like, dtype=array_namespace(like).int64)
        return x


def _matmul(a, b):
    return array_namespace(a, b).matmul(a, b)
