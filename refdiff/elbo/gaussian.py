"""Gaussian pieces of the bound: the KL divergence, log densities, the standard normal CDF
and the discretized Gaussian decoder likelihood; MATH.md (5.2), (5.8), (5.9), (5.10)."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_array, check_finite_scalar
from ..backend import array_namespace, log_ndtr, ndtr
from ._common import _LN2, _LOG_2PI, _arrays, _check_bins, _check_choice

__all__ = [
    "normal_kl",
    "gaussian_log_density",
    "TANH_CDF_MAX_ABS_ERROR",
    "approx_standard_normal_cdf",
    "standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
]


# ---------------------------------------------------------------------------- Gaussians
def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats, MATH.md (5.2).

    Arguments broadcast against each other (arrays of one namespace or Python floats).
    Written as ``(expm1(d) - d + (mean1 - mean2)^2 e^{-logvar2}) / 2`` with
    ``d = logvar1 - logvar2``, so it is exactly 0 for equal arguments and accurate when the
    variances are close.  Sum over dimensions for a diagonal Gaussian.

    NaN and inf propagate: not checked.  Arrays broadcast together (e.g. a per-sample log variance of shape (N, 1, ..., 1)).

    Parameters
    ----------
    mean1, logvar1 : array or float
        Mean and log variance of the first Gaussian.
    mean2, logvar2 : array or float
        Mean and log variance of the second Gaussian.

    Returns
    -------
    array
        The elementwise KL, of the broadcast shape (>= 0).
    """
    xp, (m1, lv1, m2, lv2) = _arrays(mean1=mean1, logvar1=logvar1, mean2=mean2, logvar2=logvar2)
    d = lv1 - lv2
    return 0.5 * (xp.expm1(d) - d + (m1 - m2) ** 2 * xp.exp(-lv2))


def gaussian_log_density(x, mean, logvar):
    """log N(x; mean, e^logvar) elementwise, in nats, MATH.md (5.10).

    NaN and inf propagate: not checked.  Arrays broadcast together (e.g. a per-sample log variance of shape (N, 1, ..., 1)).

    Parameters
    ----------
    x, mean, logvar : array or float
        Broadcast against each other (arrays of one namespace or Python floats).

    Returns
    -------
    array
        The elementwise log density, of the broadcast shape.
    """
    xp, (x, m, lv) = _arrays(x=x, mean=mean, logvar=logvar)
    return -0.5 * (_LOG_2PI + lv + (x - m) ** 2 * xp.exp(-lv))


# ---------------------------------------------------------------------------- CDFs
TANH_CDF_MAX_ABS_ERROR = 1.8e-4
"""Bound on |approx_standard_normal_cdf(x) - Phi(x)| over all real x, MATH.md (5.8)
(measured maximum 1.7893e-4, at |x| = 2.592)."""


def approx_standard_normal_cdf(x):
    """The tanh approximation of Phi used by the original DDPM code, MATH.md (5.8):
    ``(1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2``.  Its absolute error is at most
    :data:`TANH_CDF_MAX_ABS_ERROR`; its *relative* error in the tails is unbounded.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array
        Real floating array (any shape).

    Returns
    -------
    array like x
        The approximate CDF, in [0, 1].
    """
    check_array("x", x)
    xp = array_namespace(x)
    return 0.5 * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def standard_normal_cdf(x, cdf: str = "exact"):
    """Phi(x): ``cdf="exact"`` (scipy/cupyx ndtr) or ``"tanh"`` (:func:`approx_standard_normal_cdf`),
    MATH.md (5.8).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array
        Real floating array (any shape).
    cdf : {"exact", "tanh"}
        Which CDF.

    Returns
    -------
    array like x
        Phi(x).

    Raises
    ------
    ValueError
        If ``cdf`` is unknown.
    """
    check_array("x", x)
    _check_choice("cdf", cdf, ("exact", "tanh"))
    return ndtr(x) if cdf == "exact" else approx_standard_normal_cdf(x)


def _log1mexp(d):
    """log(1 - e^d) for d <= 0, accurate on both sides of -ln 2 (no warnings at d = 0)."""
    xp = array_namespace(d)
    near = xp.log(-xp.expm1(xp.minimum(d, -1e-300)))
    far = xp.log1p(-xp.exp(xp.minimum(d, -_LN2)))
    return xp.where(d > -_LN2, near, far)


def _log_normal_interval(a, b):
    """log(Phi(b) - Phi(a)) for a < b elementwise, stable in both tails, MATH.md (5.9).

    By symmetry the interval is moved to the lower half line (lo + hi <= 0), where
    log_ndtr is accurate; the difference is taken in log space.  Intervals so narrow that
    this loses digits (width (1 + |midpoint|) < 1e-5) use the midpoint rule, whose
    relative error width^2 (m^2 - 1) / 24 is below 1e-11 there."""
    xp = array_namespace(a, b)
    flip = (a + b) > 0
    lo = xp.where(flip, -b, a)
    hi = xp.where(flip, -a, b)
    log_hi = log_ndtr(hi)
    exact = log_hi + _log1mexp(log_ndtr(lo) - log_hi)
    width, mid = hi - lo, 0.5 * (hi + lo)
    narrow = width * (1.0 + xp.abs(mid)) < 1e-5
    midpoint = -0.5 * mid * mid - 0.5 * _LOG_2PI + xp.log(xp.maximum(width, 1e-300))
    return xp.where(narrow, midpoint, exact)


def _check_on_grid(x, bins, grid_tol):
    xp = array_namespace(x)
    delta = 2.0 / (bins - 1)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError("x contains NaN or inf; discretized data must be finite levels in [-1, 1]")
    lo, hi = float(xp.min(x)), float(xp.max(x))
    if lo < -1.0 - grid_tol * delta or hi > 1.0 + grid_tol * delta:
        bad = lo if lo < -1.0 - grid_tol * delta else hi
        raise ValueError(
            f"x contains {bad!r}, outside the binned range [-1, 1] (bins = {bins}); "
            f"scale 8-bit data as x / 127.5 - 1"
        )
    u = (x + 1.0) / delta  # level index as a real number
    off = float(xp.max(xp.abs(u - xp.round(u))))
    if off > grid_tol:
        raise ValueError(
            f"x is off the grid of {bins} levels -1 + 2k/{bins - 1}: a value lies {off:.3g} bin "
            f"widths from the nearest level (tolerance grid_tol = {grid_tol} bin widths)"
        )


def discretized_gaussian_log_likelihood(x, mean, log_scale, bins: int = 256, cdf: str = "exact", *, grid_tol: float = 1e-3):
    """log P(x) elementwise (nats) of a Gaussian N(mean, exp(log_scale)^2) discretized to
    ``bins`` levels in [-1, 1], MATH.md (5.9).  NaN and inf in ``mean`` propagate (not
    checked); ``x`` and ``log_scale`` must be finite.

    ``x`` holds levels ``-1 + 2k/(bins-1)``, k = 0..bins-1 (8-bit data: ``k / 127.5 - 1``);
    a level may be off by at most ``grid_tol`` bin widths (default 1e-3: float32 rounding
    of any level is ~1e-5 bin widths).  Bin k is ``[x - D/2, x + D/2]``, D = 2/(bins-1),
    except the edge bins, integrated to -inf (k = 0) and +inf (k = bins-1), so the bin
    probabilities sum to 1.  ``mean`` and ``log_scale`` (log standard deviation) must
    broadcast to ``x``'s shape; the result has ``x``'s shape.

    Parameters
    ----------
    x : array
        The data, on the grid of ``bins`` levels in [-1, 1].
    mean : array or float
        The Gaussian's mean, broadcasting to ``x``'s shape.
    log_scale : array or float
        Its log standard deviation (finite), broadcasting to ``x``'s shape.
    bins : int, default 256
        The number of levels (>= 2).
    cdf : {"exact", "tanh"}
        ``"exact"``: log Phi differences in log space (log_ndtr), stable in the far tails.
        ``"tanh"``: the original DDPM code verbatim: the tanh CDF (5.8), edge bins decided by
        the level index, and every probability clamped below at 1e-12 before the log.
    grid_tol : float, default 1e-3
        How far (in bin widths) a value may lie from its level.

    Returns
    -------
    array like x
        log P(x) in nats, elementwise (<= 0).

    Raises
    ------
    ValueError
        If ``bins`` < 2 or ``cdf`` is unknown, ``mean`` or ``log_scale`` does not broadcast
        to ``x``'s shape, ``log_scale`` or ``x`` is not finite, or ``x`` is outside [-1, 1]
        or off the grid by more than ``grid_tol``.
    TypeError
        If ``bins`` is not an integer.
    """
    check_finite_scalar("grid_tol", grid_tol, low=0.0)
    _check_bins(bins)
    _check_choice("cdf", cdf, ("exact", "tanh"))
    xp, (x, mean, log_scale) = _arrays(False, x=x, mean=mean, log_scale=log_scale)
    for name, a in (("mean", mean), ("log_scale", log_scale)):
        try:
            shape = np.broadcast_shapes(tuple(a.shape), tuple(x.shape))
        except ValueError:
            shape = None
        if shape != tuple(x.shape):
            raise ValueError(f"{name} has shape {tuple(a.shape)}, which does not broadcast to x's shape {tuple(x.shape)}")
    if not bool(xp.all(xp.isfinite(log_scale))):
        raise ValueError("log_scale contains NaN or inf; it must be finite")
    _check_on_grid(x, bins, grid_tol)
    delta = 2.0 / (bins - 1)
    k = xp.round((x + 1.0) / delta)  # level index
    inv_s = xp.exp(-log_scale)
    z_plus = (x - mean + 0.5 * delta) * inv_s
    z_minus = (x - mean - 0.5 * delta) * inv_s
    if cdf == "exact":
        log_low = log_ndtr(z_plus)  # P = Phi(z_plus)
        log_high = log_ndtr(-z_minus)  # P = 1 - Phi(z_minus) = Phi(-z_minus)
        log_mid = _log_normal_interval(z_minus, z_plus)
    else:
        cdf_plus, cdf_minus = approx_standard_normal_cdf(z_plus), approx_standard_normal_cdf(z_minus)
        log_low = xp.log(xp.maximum(cdf_plus, 1e-12))
        log_high = xp.log(xp.maximum(1.0 - cdf_minus, 1e-12))
        log_mid = xp.log(xp.maximum(cdf_plus - cdf_minus, 1e-12))
    return xp.where(k < 0.5, log_low, xp.where(k > bins - 1.5, log_high, log_mid))
