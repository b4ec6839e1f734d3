"""The uniform distribution on a finite set of points: the ideal, memorising denoiser,
MATH.md (6.13)-(6.15)."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_int
from ..backend import array_namespace, asarray_like, check_rng
from ._base import _LOG_2PI, _check_sample_args, _host_like, _Bundle, _LatentMixture, _col, _host, _matmul, _readonly

__all__ = ["EmpiricalData"]


# ---------------------------------------------------------------------------- empirical data
class EmpiricalData(_LatentMixture):
    """The uniform distribution on M points, q_0 = (1/M) sum_m delta(x - p_m), MATH.md
    (6.13)-(6.15): its posterior mean E[x_0 | x_t] is the ideal denoiser of a finite
    training set (a softmax-weighted average of the points, which memorises them).

    Parameters
    ----------
    points : array (M, D) or (M, *event_shape)
        The points, finite (copied to the host in float64; a list or an integer array is
        converted, None, strings, bools, complex and float16 are refused).
    labels : integer array (M,), optional
        The class of each point (default: every point is class 0); every class
        0..max(labels) must occur.

    Raises
    ------
    ValueError
        If ``points`` has fewer than 2 axes, no point, or a non-finite entry, or the labels
        are not an integer (M,) array using every class 0..max.
    TypeError
        If ``points`` is not a real array.

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
        """Always raises: a sum of point masses has no density (use ``log_prob_t`` with sigma > 0).

        Parameters
        ----------
        x0 : array
            Ignored.

        Raises
        ------
        ValueError
            Always.
        """
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
        # tr Cov[x_0 | x_t] = sum_m r_m |p_m - x0_bar|^2, centred (MATH.md (6.15)): the form
        # sum_m r_m |p_m|^2 - |x0_bar|^2 cancels catastrophically away from the origin
        step = max(1, self._CHUNK // (self.M * self.D))
        blocks = []
        for i in range(0, P.n, step):
            j = min(i + step, P.n)
            diff = xp.reshape(b.pts, (1, self.M, self.D)) - xp.reshape(x0[i:j, :], (j - i, 1, self.D))
            blocks.append(xp.sum(r[i:j, :] * xp.sum(diff * diff, axis=2), axis=1))  # (nb,)
        tr_cov = xp.concat(blocks, axis=0)
        a, s = P.a, P.s
        return self.D * ds / s + (da - a * ds / s) * (a / (s * s)) * tr_cov

    def sample(self, n, rng, like=None, *, return_labels=False):
        """``n`` draws (with replacement) of the points: indices ``rng.integers(0, M, n)``
        on the host, shape (n, *event_shape), MATH.md (6.13).

        Parameters
        ----------
        n : int
            The number of draws (>= 0).
        rng : numpy.random.Generator
            The host generator of the indices.
        like : array, optional
            The result is moved to this array's namespace and device (default NumPy).
        return_labels : bool, default False
            Also return the labels of the drawn points.

        Returns
        -------
        x : array (n, *event_shape)
            float64 draws.
        labels : int64 array (n,)
            Only with ``return_labels``.
        """
        check_int("n", n, min=0)
        rng = check_rng(rng)
        _check_sample_args(like, return_labels)
        k = rng.integers(0, self.M, size=int(n))
        like = _host_like(like)
        x = asarray_like(self._p[k].reshape((int(n),) + self.event_shape), like, dtype=array_namespace(like).float64)
        if return_labels:
            return x, asarray_like(self.labels[k], like, dtype=array_namespace(like).int64)
        return x


