"""Sample-quality measures for toy 2D (any D) and 8x8 data, MATH.md chapter 15.

Distances between two sample sets ``x`` (n, D) and ``y`` (m, D) (8x8 images are flattened
to D = 64):

* :func:`sliced_wasserstein` -- the sliced p-Wasserstein distance (p = 2 by default),
  exact 1-D Wasserstein between the projected empirical distributions (sorted samples,
  quantile functions), averaged over random directions, MATH.md (15.1)-(15.2);
  :func:`sliced_wasserstein_gaussians` is its closed form for two Gaussians (15.3).
* :func:`energy_distance` -- Szekely's energy distance (V-statistic; squared form by
  default), MATH.md (15.4)-(15.5).
* :func:`oracle_nll` -- mean negative log-likelihood of samples under an exact oracle
  density (nats), MATH.md (15.6).
* :func:`frechet_distance` -- the Frechet (2-Wasserstein) distance between Gaussians
  fitted to two feature sets, :func:`frechet_distance_gaussians` its closed form,
  MATH.md (15.7).

For 8x8 digits, the MLP classifier of :mod:`refdiff.nn.classifier` (trained by
:func:`refdiff.train.train_digit_classifier`) gives class accuracy and the feature space
of the Frechet distance; the network lives in ``nn/`` and its training loop in the
training module, so this module holds only measures.

All distances are namespace-agnostic (array API; float64 recommended) and return Python
floats.  Randomness (the projection directions) comes from a ``numpy.random.Generator``
or is passed explicitly.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import check_array, check_bool, check_int, check_same_shape
from .backend import array_namespace, asarray_like, standard_normal, to_numpy, check_rng

__all__ = [
    "random_directions",
    "sliced_wasserstein",
    "sliced_wasserstein_gaussians",
    "energy_distance",
    "oracle_nll",
    "frechet_distance",
    "frechet_distance_gaussians",
    "fit_gaussian",
]


# ---------------------------------------------------------------------------- helpers
def _flat(x, name):
    """(N, ...) -> (N, D) in x's namespace; a real floating array (integer samples are
    refused, never computed in integer arithmetic), finite, N >= 1 and D >= 1 checked."""
    check_array(name, x, allow_empty=True)
    if x.ndim < 1:
        raise ValueError(f"{name} must be an array of shape (N, D) or (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or math.prod(x.shape[1:]) < 1:
        raise ValueError(f"{name} must hold at least one sample of dimension >= 1, got shape {tuple(x.shape)}")
    check_array(name, x, finite=True)
    xp = array_namespace(x)
    if x.ndim == 1:
        x = xp.reshape(x, (-1, 1))  # (N,) -> (N, 1)
    if x.shape[0] < 1 or math.prod(x.shape[1:]) < 1:
        raise ValueError(f"{name} must hold at least one sample of dimension >= 1, got shape {tuple(x.shape)}")
    x = xp.reshape(x, (x.shape[0], -1))  # (N, ...) -> (N, D)
    if x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample of dimension >= 1, got shape {tuple(x.shape)}")
    return x


def _pair(x, y, names=("x", "y")):
    a, b = names
    x, y = _flat(x, a), _flat(y, b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{a} and {b} must have the same dimension, got {a} {tuple(x.shape)} and {b} {tuple(y.shape)}")
    return array_namespace(x, y), x, y


def _gaussian(mean, cov, i):
    """mean{i} (D,) and cov{i} (D, D): real floating, finite, of one dimension."""
    check_array(f"mean{i}", mean, ndim=1, finite=True)
    check_array(f"cov{i}", cov, ndim=2, finite=True)
    d = mean.shape[0]
    if tuple(cov.shape) != (d, d):
        raise ValueError(f"cov{i} has shape {tuple(cov.shape)} but mean{i} has shape {tuple(mean.shape)}: "
                         f"cov{i} must be ({d}, {d})")


def _check_p(p):
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not (math.isfinite(p) and p >= 1):
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    return float(p)


# ---------------------------------------------------------------------------- sliced Wasserstein
def random_directions(n_projections: int, dim: int, rng: np.random.Generator, like=None):
    """``n_projections`` directions uniform on the unit sphere S^{dim-1}, shape (L, dim):
    standard normals drawn on the host from ``rng`` (one (L, dim) draw), normalised.
    Returned in ``like``'s namespace (NumPy float64 when None).  MATH.md (15.2).

    Parameters
    ----------
    n_projections : int
        L >= 1.
    dim : int
        D, the dimension.
    rng : int or numpy.random.Generator
        A seed or a Generator (SPEC 7, ``refdiff.backend.check_rng``).
    like : array, optional
        Gives the namespace and dtype of the result.

    Returns
    -------
    array (L, D)
        Unit vectors.
    """
    check_int("dim", dim, min=1)
    if like is not None:
        check_array("like", like, allow_empty=True)
    if isinstance(n_projections, bool) or not isinstance(n_projections, (int, np.integer)) or n_projections < 1:
        raise ValueError(f"n_projections must be an integer >= 1, got {n_projections!r}")
    rng = check_rng(rng)
    z = rng.standard_normal((int(n_projections), int(dim)))
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return z if like is None else asarray_like(z, like)


def _quantile_grid(n: int, m: int):
    """Breakpoints of the two empirical quantile functions merged: the union of
    {i/n} and {j/m}; returns (interval widths du, index into sorted x, index into sorted y)
    for every interval of constant (F^-1, G^-1), host NumPy.  MATH.md (15.1)."""
    u = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)  # sorted, from 0 to 1
    du = np.diff(u)
    keep = du > 0
    mid = 0.5 * (u[:-1] + u[1:])[keep]
    ix = np.minimum(np.floor(mid * n), n - 1).astype(np.int64)
    iy = np.minimum(np.floor(mid * m), m - 1).astype(np.int64)
    return du[keep], ix, iy


def sliced_wasserstein(x, y, n_projections: int = 128, rng: np.random.Generator | None = None, *, p: float = 2,
                       directions=None) -> float:
    """The sliced p-Wasserstein distance SW_p(x, y) between two sample sets, MATH.md (15.1)-(15.2).

    ``SW_p^p = (1/L) sum_l W_p^p(theta_l . x, theta_l . y)`` over L directions theta_l
    uniform on the sphere, and the result is ``SW_p`` (not its p-th power).  Each 1-D
    W_p is exact for the two empirical distributions: the integral of |F^-1 - G^-1|^p over
    [0, 1] with both quantile functions piecewise constant (sorted samples; for n = m it
    is the mean of |x_(i) - y_(i)|^p over matched order statistics).  Default p = 2 (the
    Wasserstein-2 distance); p = 1 gives the sliced Wasserstein-1.

    x (n, D), y (m, D) (images are flattened); sizes may differ.  ``directions`` (L, D)
    unit vectors may be given explicitly; otherwise ``n_projections`` are drawn with
    :func:`random_directions` from ``rng`` (required then).

    Parameters
    ----------
    x, y : arrays (n, D) and (m, D)
        The two sample sets (images are flattened).
    n_projections : int
        L, the number of random directions (ignored with ``directions``).
    rng : int or numpy.random.Generator, optional
        Draws the directions (required unless ``directions`` is given).
    p : float
        The order p >= 1.
    directions : array (L, D), optional
        Fixed unit directions, e.g. shared between several comparisons.

    Returns
    -------
    float
        SW_p(x, y).
    """
    p = _check_p(p)
    xp, x, y = _pair(x, y)
    D = x.shape[1]
    if directions is None:
        if rng is None:
            raise TypeError("sliced_wasserstein needs rng (a numpy Generator) or explicit directions")
        directions = random_directions(n_projections, D, rng, like=x)
    check_array("directions", directions, finite=True)
    if directions.ndim != 2 or directions.shape[1] != D:
        raise ValueError(f"directions must have shape (L, {D}), got {tuple(directions.shape)}")
    directions = asarray_like(to_numpy(directions), x)
    px = xp.sort(x @ directions.T, axis=0)  # (n, L) sorted per projection
    py = xp.sort(y @ directions.T, axis=0)  # (m, L)
    du, ix, iy = _quantile_grid(x.shape[0], y.shape[0])
    diff = xp.take(px, asarray_like(ix, px, dtype=xp.int64), axis=0) - xp.take(py, asarray_like(iy, py, dtype=xp.int64), axis=0)
    w_pp = xp.sum(asarray_like(du, px)[:, None] * xp.abs(diff) ** p, axis=0)  # (L,) W_p^p per projection
    return float(xp.mean(w_pp)) ** (1.0 / p)


def sliced_wasserstein_gaussians(mean1, cov1, mean2, cov2, directions) -> float:
    """Closed form of the sliced 2-Wasserstein distance between N(mean1, cov1) and
    N(mean2, cov2) over the given directions (L, D), MATH.md (15.3): along theta both are
    1-D Gaussians and ``W_2^2 = (theta . (m1 - m2))^2 + (sqrt(theta' C1 theta) -
    sqrt(theta' C2 theta))^2``; returns ``sqrt(mean_l W_2^2)``.

    Parameters
    ----------
    mean1, mean2 : arrays (D,)
        The means.
    cov1, cov2 : arrays (D, D)
        The covariances.
    directions : array (L, D)
        Unit directions.

    Returns
    -------
    float
        The exact SW_2 over those directions.
    """
    _gaussian(mean1, cov1, 1)
    _gaussian(mean2, cov2, 2)
    check_array("directions", directions, shape=(None, mean1.shape[0]), finite=True)
    if mean2.shape != mean1.shape:
        raise ValueError(f"mean1 has shape {tuple(mean1.shape)} but mean2 has shape {tuple(mean2.shape)}")
    xp = array_namespace(directions)
    m1, m2 = (asarray_like(to_numpy(m), directions) for m in (mean1, mean2))
    c1, c2 = (asarray_like(to_numpy(c), directions) for c in (cov1, cov2))
    dm = directions @ (m1 - m2)  # (L,)
    s1 = xp.sqrt(xp.sum((directions @ c1) * directions, axis=1))  # (L,) projected std
    s2 = xp.sqrt(xp.sum((directions @ c2) * directions, axis=1))
    return math.sqrt(float(xp.mean(dm * dm + (s1 - s2) ** 2)))


# ---------------------------------------------------------------------------- energy distance
def _mean_pairwise_distance(a, b, chunk: int = 512):
    """mean_{i,j} ||a_i - b_j|| over all n x m pairs (a V-statistic sum / (n m)), chunked
    by 512 rows of ``a``, MATH.md (15.4).

    The squared distances of a chunk are accumulated one coordinate at a time,
    ``s <- s + (a_k - b_k)^2`` on (chunk, m) arrays, instead of forming the (chunk, m, D)
    difference tensor: the same sums in the same left-to-right order as a reduction over
    a short last axis (bit-identical to the tensor form for D < 8, where NumPy adds
    sequentially; within a few ulp for longer axes, which NumPy sums pairwise), without
    D-times the memory traffic (``tests/test_metrics_fast.py`` keeps the tensor form as
    the reference)."""
    xp = array_namespace(a, b)
    total = 0.0
    D = a.shape[1]
    bT = [b[:, k][None, :] for k in range(D)]  # (1, m) rows, reused by every chunk
    for s in range(0, a.shape[0], chunk):
        ac = a[s:min(s + chunk, a.shape[0]), :]
        sq = None
        for k in range(D):
            t = ac[:, k:k + 1] - bT[k]  # (c, m)
            sq = t * t if sq is None else sq + t * t
        total += float(xp.sum(xp.sqrt(sq)))
    return total / (a.shape[0] * b.shape[0])


def energy_distance(x, y, *, squared: bool = True, unbiased: bool = False) -> float:
    """Energy distance between two sample sets, MATH.md (15.4)-(15.5):
    ``D^2 = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` with the expectations replaced by
    means over all pairs (V-statistic: the within-set means divide by n^2 and include the
    zero diagonal), so D^2 >= 0 and D^2 = 0 exactly for identical sets.  In 1-D it equals
    ``2 int (F_n - G_m)^2`` (15.5).

    ``squared=False`` returns D (``scipy.stats.energy_distance``'s convention, 1-D only
    there).  ``unbiased=True`` divides the within-set sums by n (n - 1) (U-statistic,
    unbiased for the population D^2 but possibly negative).  x (n, D), y (m, D);
    O(n m D) memory per 512-row chunk.

    Parameters
    ----------
    x, y : arrays (n, D) and (m, D)
        The two sample sets (images are flattened).
    squared : bool
        Return D^2 (default) or D.
    unbiased : bool
        Use the U-statistic (within-set means over distinct pairs) instead of the V-statistic.

    Returns
    -------
    float
    """
    check_bool("squared", squared)
    check_bool("unbiased", unbiased)
    xp, x, y = _pair(x, y)
    n, m = x.shape[0], y.shape[0]
    exy = _mean_pairwise_distance(x, y)
    exx = _mean_pairwise_distance(x, x)
    eyy = _mean_pairwise_distance(y, y)
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError(f"unbiased=True needs at least 2 samples in each set, got n={n}, m={m}")
        exx *= n / (n - 1)
        eyy *= m / (m - 1)
    d2 = 2.0 * exy - exx - eyy
    if squared:
        return d2
    return math.sqrt(max(d2, 0.0))


# ---------------------------------------------------------------------------- oracle NLL
def oracle_nll(samples, oracle, *, return_se: bool = False):
    """Mean negative log-likelihood of ``samples`` under an exact density ``oracle``
    (anything with ``log_prob(x0) -> (N,)``, e.g. :class:`refdiff.GaussianMixture`), in
    nats per sample, MATH.md (15.6).  Its expectation under the sampler's distribution q
    is the cross-entropy H(q, p) = -E_q log p; for q = p it is the entropy H(p), which the
    NLL of true data samples estimates.  It is *not* minimised at q = p (a sampler that
    concentrates on the modes of p scores lower), so read it next to the data's own NLL
    and a two-sided distance (:func:`sliced_wasserstein`, :func:`energy_distance`).
    ``return_se=True`` also returns the standard error of the mean.

    Parameters
    ----------
    samples : array (N, ...)
        The samples.
    oracle : object with ``log_prob(x) -> (N,)``
        An exact density, e.g. :class:`refdiff.GaussianMixture`.
    return_se : bool
        Also return the standard error of the mean.

    Returns
    -------
    float, or (float, float) with ``return_se``
        Mean NLL in nats (and its standard error).
    """
    check_bool("return_se", return_se)
    check_array("samples", samples, min_ndim=2)
    d_oracle = getattr(oracle, "D", None)
    if d_oracle is not None and math.prod(samples.shape[1:]) != d_oracle:
        raise ValueError(f"samples has shape {tuple(samples.shape)}: {math.prod(samples.shape[1:])} entries per "
                         f"sample, but the oracle's data dimension is D = {d_oracle}")
    if not hasattr(oracle, "log_prob"):
        raise TypeError(f"oracle must have a log_prob method (an exact density), got {type(oracle).__name__}")
    if not hasattr(samples, "shape") or samples.ndim < 2 or samples.shape[0] < 1:
        raise ValueError(f"samples must have shape (N, ...) with N >= 1, got {getattr(samples, 'shape', None)}")
    lp = oracle.log_prob(samples)
    xp = array_namespace(lp)
    if not bool(xp.all(xp.isfinite(lp))):
        raise FloatingPointError("oracle_nll: log_prob returned NaN or -inf for some samples")
    nll = -float(xp.mean(lp))
    if not return_se:
        return nll
    n = lp.shape[0]
    se = float(xp.std(lp, correction=1)) / math.sqrt(n) if n > 1 else float("nan")
    return nll, se


# ---------------------------------------------------------------------------- Frechet distance
def fit_gaussian(feat):
    """Mean (D,) and unbiased covariance (D, D) (divided by n - 1, as the usual FID code
    does) of features (n, D); MATH.md (15.7).

    Parameters
    ----------
    feat : array (n, D)
        Features, n >= 2.

    Returns
    -------
    mean, cov : numpy arrays (D,) and (D, D)
    """
    f = _flat(feat, "feat")
    xp = array_namespace(f)
    n = f.shape[0]
    if n < 2:
        raise ValueError(f"fitting a Gaussian needs at least 2 samples, got {n} (feat of shape {tuple(feat.shape)})")
    mu = xp.mean(f, axis=0)
    c = f - mu
    return mu, (c.T @ c) / (n - 1)


def _sqrtm_psd(c):
    """Symmetric PSD square root by eigen-decomposition (negative eigenvalues from
    rounding clipped to 0)."""
    xp = array_namespace(c)
    lam, V = xp.linalg.eigh((c + c.T) / 2.0)
    return (V * xp.sqrt(xp.clip(lam, 0.0, None))) @ V.T


def frechet_distance_gaussians(mean1, cov1, mean2, cov2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2),
    MATH.md (15.7): ``||m1 - m2||^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})``.

    Computed with symmetric eigen-decompositions (C1^{1/2}, then the eigenvalues of the
    PSD matrix C1^{1/2} C2 C1^{1/2}); the trace equals tr((C1 C2)^{1/2}), which the usual
    FID code computes with ``scipy.linalg.sqrtm(C1 @ C2)`` (same eigenvalues, but a
    non-symmetric matrix whose square root can pick up imaginary rounding parts).

    Parameters
    ----------
    mean1, mean2 : arrays (D,)
        The means.
    cov1, cov2 : arrays (D, D)
        Symmetric positive semi-definite covariances.

    Returns
    -------
    float
        The squared distance.
    """
    _gaussian(mean1, cov1, 1)
    _gaussian(mean2, cov2, 2)
    xp = array_namespace(cov1, cov2)
    if cov1.ndim != 2 or tuple(cov1.shape) != tuple(cov2.shape) or cov1.shape[0] != cov1.shape[1]:
        raise ValueError(f"cov1 and cov2 must be square matrices of one shape, got {tuple(cov1.shape)}, {tuple(cov2.shape)}")
    if tuple(mean1.shape) != (cov1.shape[0],) or tuple(mean2.shape) != (cov1.shape[0],):
        raise ValueError(f"means must have shape ({cov1.shape[0]},), got {tuple(mean1.shape)}, {tuple(mean2.shape)}")
    s1 = _sqrtm_psd(cov1)
    lam = xp.linalg.eigvalsh(s1 @ cov2 @ s1)
    tr_sqrt = float(xp.sum(xp.sqrt(xp.clip(lam, 0.0, None))))
    dm = mean1 - mean2
    return float(xp.sum(dm * dm)) + float(xp.linalg.trace(cov1) + xp.linalg.trace(cov2)) - 2.0 * tr_sqrt


def frechet_distance(feat_a, feat_b) -> float:
    """Squared Frechet distance between Gaussians fitted (:func:`fit_gaussian`) to two
    feature sets (n, D) and (m, D), MATH.md (15.7) -- FID's formula; with the features of
    :func:`features` it is the 8x8 digits' analogue of FID.  Biased upwards at finite n
    (the fitted covariances are noisy), so compare values at equal sample sizes.

    Parameters
    ----------
    feat_a, feat_b : arrays (n, D) and (m, D)
        Two feature sets.

    Returns
    -------
    float
        The squared Frechet distance.
    """
    _pair(feat_a, feat_b, ("feat_a", "feat_b"))
    ma, ca = fit_gaussian(feat_a)
    mb, cb = fit_gaussian(feat_b)
    return frechet_distance_gaussians(ma, ca, mb, cb)
