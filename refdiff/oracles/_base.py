"""The common machinery of the exact oracles: inputs prepared once per call, and the
latent-mixture base class whose posterior over components gives every quantity;
MATH.md chapter 6."""

from __future__ import annotations

import math

import array_api_compat.numpy as xnp
import numpy as np
from array_api_compat import device

from .._validate import _is_array, check_array, check_bool
from ..backend import array_namespace, asarray_like, check_finite, to_numpy
from ..parameterization import PREDICTION_TYPES
from ..schedules import Schedule, _ContinuousVP, alpha_sigma

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------- helpers
def _host(a, name):
    """A host float64 copy of a specification array (a real array, or a list / number
    converted by np.asarray; None, strings, bools, complex and float16 refused)."""
    if a is None or isinstance(a, (str, bytes, bool, np.bool_, complex)):
        raise TypeError(f"{name} must be a real array, got {a!r}")
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        kind = str(a.dtype).rsplit(".", 1)[-1]
        if kind in ("bool", "float16") or kind.startswith("complex"):
            raise TypeError(f"{name} must be a real array (float32, float64 or integer), got dtype {kind}")
        a = to_numpy(a)
    elif np.asarray(a).dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real array or a list of real numbers, got {type(a).__name__}")
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
    nu, U = np.linalg.eigh(0.5 * (cov + cov.T))
    if nu[0] <= 0.0:
        raise ValueError(
            f"{name} is not positive definite: smallest eigenvalue {nu[0]!r} <= 0 "
            "(a covariance must be symmetric positive definite)"
        )
    return nu, U


def _logsumexp(l, axis):
    xp = array_namespace(l)
    m = xp.max(l, axis=axis, keepdims=True)
    return xp.squeeze(m, axis=axis) + xp.log(xp.sum(xp.exp(l - m), axis=axis))


class _Prepared:
    """A per-call bundle: the flattened input and its per-sample alpha, sigma (N,)."""

    def __init__(self, oracle, x, alpha, sigma, name="x_t", coef_names=("alpha", "sigma")):
        check_array(name, x)
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
        self.a = _per_sample(alpha, self.xf, coef_names[0])
        self.s = _per_sample(sigma, self.xf, coef_names[1])
        if bool(xp.any(self.s < 0)):
            raise ValueError(f"{coef_names[1]} contains {float(xp.min(self.s))!r}; {coef_names[1]} must be >= 0")

    def out(self, y):
        return self.xp.reshape(y, self.shape)  # (N, D) -> input shape

    def c(self, host):
        return asarray_like(host, self.xf, dtype=self.xp.float64)


def _per_sample(c, xf, name):
    """alpha / sigma (float, 0-d, (N,), (N, 1, ..., 1)) as a float64 array of shape (N,)."""
    xp = array_namespace(xf)
    n = xf.shape[0]
    if isinstance(c, (bool, np.bool_)) or not (isinstance(c, (int, float, np.integer, np.floating)) or _is_array(c)):
        raise TypeError(f"{name} must be a number or a real floating array, got {c!r}")
    if _is_array(c):
        check_array(name, c)
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


class _Bundle:
    pass


def _matmul(a, b):
    return array_namespace(a, b).matmul(a, b)


def _check_sample_args(like, return_labels):
    """``like`` None or an array (it gives the namespace; its values are not read);
    ``return_labels`` a bool."""
    if like is not None:
        check_array("like", like, dtype="any", allow_empty=True)
    check_bool("return_labels", return_labels)


def _host_like(like):
    """``like`` or, when None, a float64 NumPy (array-API) array: where host data go."""
    return xnp.zeros((1,), dtype=xnp.float64) if like is None else like
