"""Gaussian clips with a Kronecker (separable space-time) covariance, MATH.md chapter 22.

A clip x is (T, *frame_shape) with P = prod(frame_shape) pixels per frame, flattened
frame-major (index f P + p, the layout of a (N, T, H, W) array).  Its law is

    x ~ N(M, K_T (x) S),   Cov[(f, p), (g, q)] = K_T[f, g] S[p, q],

with K_T the temporal (T, T) and S the spatial (P, P) covariance, MATH.md (22.1).  The
eigenpairs are (kappa_i s_j, v_i (x) u_j), so every exact quantity of
:class:`~refdiff.oracles.GaussianData` holds with these eigenvalues; the rotations into the
eigenbasis are done factor by factor, ``V^T Y U`` on the (T, P) matrix of a clip
(O(T^2 P + T P^2) per clip instead of O(T^2 P^2)), MATH.md (22.2).  Conditioning on known
frames keeps the Kronecker form: the Schur complement acts on K_T alone, MATH.md (22.5).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_finite_scalar, check_int
from ..backend import array_namespace, asarray_like, check_rng, standard_normal
from ._base import _check_sample_args, _eig_psd, _host, _host_like
from .gaussian import GaussianData

__all__ = ["KroneckerGaussian", "ar1_covariance", "se_covariance", "insert_frames"]


def _frame_shape(frame_shape, name="frame_shape"):
    """``frame_shape`` as a tuple of ints >= 1 (issue 19: TypeError for a non-sequence or a
    non-integer entry, ValueError for an entry < 1)."""
    if not isinstance(frame_shape, (tuple, list)) or not frame_shape:
        raise TypeError(f"{name} must be a non-empty tuple of ints, got {frame_shape!r}")
    return tuple(check_int(name, s, 1) for s in frame_shape)


def ar1_covariance(frames: int, rho: float):
    """The AR(1) temporal correlation K_T[f, g] = rho^|f - g| (frames, frames), MATH.md (22.3).

    Parameters
    ----------
    frames : int
        T (>= 1).
    rho : float
        The lag-one correlation, in (-1, 1).

    Returns
    -------
    numpy.ndarray (frames, frames)
        float64 K_T.

    Raises
    ------
    TypeError
        If ``frames`` is not an integer.
    ValueError
        If ``frames`` < 1 or ``rho`` is outside (-1, 1).
    """
    check_int("frames", frames, min=1)
    if not (isinstance(rho, (int, float)) and -1.0 < rho < 1.0):
        raise ValueError(f"rho = {rho!r} must lie in (-1, 1) (a stationary AR(1))")
    f = np.arange(frames)
    return float(rho) ** np.abs(f[:, None] - f[None, :]).astype(np.float64)


def se_covariance(frame_shape, length_scale: float = 1.5, variance: float = 1.0, nugget: float = 1e-2):
    """The squared-exponential spatial covariance on the pixel grid ``frame_shape`` (H, W):
    S[p, q] = variance exp(-|r_p - r_q|^2 / (2 length_scale^2)) + nugget [p = q], with r_p
    the (row, col) of pixel p in raster order, MATH.md (22.4).

    Parameters
    ----------
    frame_shape : tuple of int
        (H, W), both >= 1.
    length_scale : float, default 1.5
        The length scale in pixels (finite, > 0).
    variance : float, default 1.0
        The marginal variance before the nugget (finite, > 0).
    nugget : float, default 0.01
        Added to the diagonal (finite, >= 0).

    Returns
    -------
    numpy.ndarray (H W, H W)
        float64 S.

    Raises
    ------
    TypeError
        If ``frame_shape`` is not a tuple of ints or a scalar is not a real number.
    ValueError
        If an argument is out of range.
    """
    shape = _frame_shape(frame_shape)
    if len(shape) != 2:
        raise ValueError(f"frame_shape must be (H, W) with H, W >= 1, got {frame_shape!r}")
    for name, v in (("length_scale", length_scale), ("variance", variance)):
        check_finite_scalar(name, v, low=0.0, low_open=True)
    check_finite_scalar("nugget", nugget, low=0.0)
    r = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1).reshape(-1, 2)
    d2 = np.sum((r[:, None, :] - r[None, :, :]) ** 2, axis=-1).astype(np.float64)
    return variance * np.exp(-d2 / (2.0 * length_scale**2)) + nugget * np.eye(r.shape[0])


class KroneckerGaussian(GaussianData):
    """Clips x ~ N(mean, K_T (x) S), MATH.md (22.1), (22.2).

    time_cov (T, T) and space_cov (P, P): symmetric positive definite; ``frame_shape``
    (default (P,)) with prod = P; ``mean`` None (zero) or (T, *frame_shape).  Every method
    of :class:`~refdiff.GaussianData` (score, x0_mean, eps, v, as_model, ode_transport,
    sample, log_prob_t, ...) on clips (N, T, *frame_shape) or (N, T P); the rotations into
    the eigenbasis use the factors.  :meth:`ar1` builds the AR(1) x squared-exponential
    model; :meth:`condition_frames` the exact law of the other frames given some frames.

    Parameters
    ----------
    time_cov : array_like (T, T)
        K_T, symmetric positive definite.
    space_cov : array_like (P, P)
        S, symmetric positive definite.
    mean : array_like (T, *frame_shape), optional
        M; zero when None.
    frame_shape : tuple of int, optional
        The frame's shape, with prod = P; (P,) when None.

    Raises
    ------
    ValueError
        If a covariance is not square, symmetric and positive definite, or the shapes disagree.
    """

    def __init__(self, time_cov, space_cov, mean=None, frame_shape=None):
        Kt, S = _host(time_cov, "time_cov"), _host(space_cov, "space_cov")
        if Kt.ndim != 2 or Kt.shape[0] != Kt.shape[1] or Kt.shape[0] < 1:
            raise ValueError(f"time_cov must be a square (T, T) matrix, got shape {Kt.shape}")
        if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 1:
            raise ValueError(f"space_cov must be a square (P, P) matrix, got shape {S.shape}")
        T, P = Kt.shape[0], S.shape[0]
        fs = (P,) if frame_shape is None else _frame_shape(frame_shape)
        if math.prod(fs) != P:
            raise ValueError(f"frame_shape {fs} has {math.prod(fs)} pixels but space_cov is ({P}, {P})")
        kappa, V = _eig_psd(Kt, "time_cov")
        s, U = _eig_psd(S, "space_cov")
        mu = np.zeros((T,) + fs) if mean is None else _host(mean, "mean")
        if mu.shape != (T,) + fs:
            raise ValueError(f"mean has shape {mu.shape}; expected (T, *frame_shape) = {(T,) + fs}")
        self.frames, self.frame_shape, self.P = T, fs, P
        self.time_cov, self.space_cov = Kt, S
        self.kappa, self.V, self.s, self.U_space = kappa, V, s, U
        nu = np.kron(kappa, s)  # eigenvalue of v_i (x) u_j at index i P + j, (22.1)
        D = T * P
        self._set_parts(np.ones(1), mu.reshape(1, D), nu.reshape(1, D), np.kron(V, U).reshape(1, D, D),
                        (T,) + fs, "kronecker", None)

    @classmethod
    def ar1(cls, frames: int = 8, rho: float = 0.9, frame_shape=(8, 8), *, length_scale: float = 1.5,
            variance: float = 1.0, nugget: float = 1e-2, mean=None):
        """AR(1) in time (22.3) times the squared exponential in space (22.4)."""
        return cls(ar1_covariance(frames, rho), se_covariance(frame_shape, length_scale, variance, nugget), mean,
                   frame_shape)

    def __repr__(self):
        return f"KroneckerGaussian(frames={self.frames}, frame_shape={self.frame_shape})"

    def _rot(self, P, y, back=False):
        """y (N, 1, D) -> (V (x) U)^T y (forward) or (V (x) U) y (back), computed as
        V^T Y U or V Y U^T on each clip's (T, P) matrix Y, MATH.md (22.2)."""
        xp = P.xp
        n = y.shape[0]
        Y = xp.reshape(y, (n, self.frames, self.P))  # (N, 1, T P) -> (N, T, P)
        V, U = P.c(self.V), P.c(self.U_space)
        if back:
            Z = xp.matmul(xp.matmul(V, Y), xp.matrix_transpose(U))  # V Y U^T
        else:
            Z = xp.matmul(xp.matmul(xp.matrix_transpose(V), Y), U)  # V^T Y U
        return xp.reshape(Z, (n, 1, self.frames * self.P))

    def sample(self, n, rng, like=None, *, return_labels=False):
        """``n`` exact draws (n, T, *frame_shape), float64 in ``like``'s namespace: the same
        draws as :meth:`GaussianData.sample` (standard normals z (n, T P) from ``rng``, then
        x = M + (V (x) U) diag(sqrt(kappa (x) s)) z), with the rotation done factor by
        factor, X = M + V (sqrt(kappa s^T) * Z) U^T on each clip's (T, P) matrix Z,
        MATH.md (22.2): O(T^2 P + T P^2) per clip instead of the (T P)^2 of the dense
        eigenvector matrix (which GaussianData gathers per draw).  With ``return_labels``
        also the labels (n,) (all 0: one component).

        Parameters
        ----------
        n : int
            Number of clips (>= 0).
        rng : numpy.random.Generator
            Source of the standard normals.
        like : array, optional
            Gives the namespace of the result (its values are not read).
        return_labels : bool, default False
            Also return the labels.

        Returns
        -------
        array (n, T, *frame_shape), or (clips, labels (n,))
        """
        check_int("n", n, min=0)
        rng = check_rng(rng)
        _check_sample_args(like, return_labels)
        xp = array_namespace(_host_like(like))
        z = standard_normal(rng, (int(n), self.frames, self.P), _host_like(like), dtype=xp.float64)
        c = lambda a: asarray_like(np.ascontiguousarray(a), z, dtype=xp.float64)  # noqa: E731
        y = z * c(np.sqrt(np.outer(self.kappa, self.s)))
        x = xp.matmul(xp.matmul(c(self.V), y), c(self.U_space.T))  # V Y U^T per clip
        x = xp.reshape(x + c(self.mean.reshape(self.frames, self.P)), (int(n), self.frames) + self.frame_shape)
        if return_labels:
            return x, xp.zeros((int(n),), dtype=xp.int64)
        return x

    def condition_frames(self, known, values):
        """The exact law of the other frames B given frames ``known`` = A equal to ``values``
        (|A|, *frame_shape), MATH.md (22.5): a KroneckerGaussian over the frames of B in
        increasing order, with temporal covariance the Schur complement
        K_BB - K_BA K_AA^-1 K_AB, the same S, and mean M_B + (K_BA K_AA^-1 (x) I)(x_A - M_A).
        For the AR(1): the closed forms of the first frame and of the bridge, MATH.md (22.6).

        Parameters
        ----------
        known : sequence of int
            The known frames A: distinct indices in [0, T-1], at least one and fewer than T.
        values : array_like (|A|, *frame_shape)
            Their values, in the order of sorted ``known``.

        Returns
        -------
        KroneckerGaussian
            The law of the other frames (T - |A| frames, increasing order).

        Raises
        ------
        TypeError
            If ``known`` is not a sequence of indices.
        ValueError
            If ``known`` is invalid or ``values`` has the wrong shape.
        """
        A = self._check_known(known)
        B = [f for f in range(self.frames) if f not in A]
        xa = _host(values, "values")
        if xa.shape != (len(A),) + self.frame_shape:
            raise ValueError(f"values has shape {xa.shape}; the known frames {A} of a clip with frame shape "
                             f"{self.frame_shape} need shape {(len(A),) + self.frame_shape}")
        K, M = self.time_cov, self.mean.reshape(self.frames, self.P)
        G = np.linalg.solve(K[np.ix_(A, A)], K[np.ix_(A, B)]).T  # (|B|, |A|) = K_BA K_AA^-1
        K_cond = K[np.ix_(B, B)] - G @ K[np.ix_(A, B)]
        mean = M[B] + G @ (xa.reshape(len(A), self.P) - M[A])
        return KroneckerGaussian(0.5 * (K_cond + K_cond.T), self.space_cov, mean.reshape((len(B),) + self.frame_shape),
                                 self.frame_shape)

    def _check_known(self, known):
        try:
            A = [int(f) for f in known]
        except TypeError:
            raise TypeError(f"known must be a sequence of frame indices, got {known!r}") from None
        if not A or len(set(A)) != len(A) or min(A) < 0 or max(A) >= self.frames or len(A) >= self.frames:
            raise ValueError(f"known = {known!r} must be distinct frame indices in [0, {self.frames - 1}], "
                             f"at least one and fewer than T = {self.frames}")
        return sorted(A)


def insert_frames(known, x_known, x_other, frames):
    """Assemble clips (N, T, ...) from the known frames (|A|, ...) (shared by every clip)
    and the other frames (N, T - |A|, ...) in increasing frame order (host NumPy).

    Parameters
    ----------
    known : iterable of int
        The known frame indices A.
    x_known : array_like (|A|, ...)
        Their values, in sorted frame order (shared by every clip).
    x_other : array_like (N, T - |A|, ...)
        The other frames, in increasing frame order.
    frames : int
        T.

    Returns
    -------
    numpy.ndarray (N, T, ...)
        The clips (float64).  NaN and inf in ``x_other`` propagate: not checked.

    Raises
    ------
    TypeError
        If an argument has the wrong type or dtype.
    ValueError
        If ``known`` is not distinct indices in [0, frames) or the shapes disagree.
    """
    frames = check_int("frames", frames, 1)
    if isinstance(known, (str, bytes)) or not hasattr(known, "__iter__"):
        raise TypeError(f"known must be a sequence of frame indices, got {known!r}")
    A = sorted(check_int("known", f, 0) for f in known)
    if not A or len(set(A)) != len(A) or A[-1] >= frames:
        raise ValueError(f"known = {known!r} must be distinct frame indices in [0, {frames - 1}], at least one")
    xk = _host(x_known, "x_known")
    x_other = check_array("x_other", x_other, min_ndim=2)
    if x_other.shape[1] != frames - len(A) or xk.shape != (len(A),) + tuple(x_other.shape[2:]):
        raise ValueError(f"x_other must have shape (N, frames - |known|, ...) = (N, {frames - len(A)}, ...) and "
                         f"x_known (|known|, ...) = ({len(A)}, ...) with the same frame shape; got x_other "
                         f"{tuple(x_other.shape)}, x_known {xk.shape}")
    x_other = np.asarray(x_other)
    out = np.empty((x_other.shape[0], frames) + x_other.shape[2:])
    B = [f for f in range(frames) if f not in A]
    out[:, A] = xk[None]
    out[:, B] = x_other
    return out
