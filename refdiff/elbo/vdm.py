"""The continuous-time bound of variational diffusion models, MATH.md (5.17)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validate import check_array, check_finite_scalar, check_int, check_same_shape
from ..backend import array_namespace, asarray_like, check_rng, standard_normal
from ..parameterization import to_eps_x0
from ..variance import check_model_output
from ..schedules import InterpolatedVP, _ContinuousVP, _check_time, alpha_sigma
from ._common import _check_bins, _check_choice, _check_model, _check_x0, _dims, _flat_sum
from .gaussian import discretized_gaussian_log_likelihood, gaussian_log_density, normal_kl
from .terms import bits_per_dim

__all__ = ["snr_derivative", "vdm_diffusion_integrand", "VDMBound", "vdm_vlb"]


# ---------------------------------------------------------------------------- continuous time (VDM)
def snr_derivative(vp, t):
    """d SNR / dt of a continuous VP schedule (t = 0 data, t = 1 noise), MATH.md (5.17):
    SNR = alpha^2 / sigma^2 and ``SNR' = 2 alpha^2 (d log alpha / dt) / sigma^4`` (< 0).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    vp : continuous VP schedule
        ``LinearVP`` or ``InterpolatedVP`` (with ``log_alpha`` and ``dlog_alpha_dt``).
    t : array
        Times in (0, 1].

    Returns
    -------
    array like t
        d SNR / dt.

    Raises
    ------
    TypeError
        If ``vp`` is not a continuous VP schedule.
    """
    if not isinstance(vp, _ContinuousVP):
        raise TypeError(f"vp must be a continuous VP schedule (LinearVP, InterpolatedVP), got {type(vp).__name__}")
    t = _check_time("t", t)
    xp = array_namespace(t)
    la = vp.log_alpha(t)
    sigma2 = -xp.expm1(2.0 * la)
    return 2.0 * xp.exp(2.0 * la) * vp.dlog_alpha_dt(t) / sigma2**2


def vdm_diffusion_integrand(vp, t, x0, x0_hat):
    """``-SNR'(t) / 2 * ||x0 - x0_hat||^2`` per sample (nats): the integrand of the
    continuous-time diffusion loss of Kingma et al. (2021), MATH.md (5.17).  ``t`` of
    shape (N,) (or a float).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    vp : continuous VP schedule
        As in :func:`snr_derivative`.
    t : float or array (N,)
        The times.
    x0 : array (N, ...)
        The data.
    x0_hat : array like x0
        The model's prediction of x0 at (z_t, t).

    Returns
    -------
    array (N,)
        The integrand in nats, per sample (>= 0).
    """
    for name, a in (("x0", x0), ("x0_hat", x0_hat)):
        check_array(name, a)
    check_same_shape(x0=x0, x0_hat=x0_hat)
    xp = array_namespace(x0, x0_hat)
    t = _check_time("t", t)
    if t.ndim == 0:
        t = asarray_like(float(t), x0, dtype=xp.float64)
    elif t.shape[0] != x0.shape[0]:
        raise ValueError(f"t has shape {tuple(t.shape)} but x0 has shape {tuple(x0.shape)}: one time per sample")
    return -0.5 * snr_derivative(vp, t) * _flat_sum((x0 - x0_hat) ** 2)


@dataclass(frozen=True, eq=False)
class VDMBound:
    """The continuous-time negative ELBO (Kingma et al. 2021), per sample, MATH.md (5.17).

    total_nats = prior_nats + decoder_nats + diffusion_nats, each (N,), nats summed over
    dimensions; diffusion_nats is a Monte-Carlo estimate over t ~ U(t0, t1) and
    std_error_nats its standard error over the n_t draws (None for n_t = 1).  Returned by
    :func:`vdm_vlb`; ``bpd`` is the batch mean of ``bits_per_dim``.

    Parameters
    ----------
    total_nats, bits_per_dim : array (N,)
        The bound per sample, in nats and in bits per dimension.
    prior_nats, decoder_nats, diffusion_nats : array (N,)
        Its three terms, nats.
    std_error_nats : array (N,) or None
        The Monte-Carlo standard error of diffusion_nats.
    dims : int
        The number of data dimensions D.
    t0, t1 : float
        The time interval of the bound.
    conventions : dict
        Units, time convention, decoder, prediction type, t sampling.
    """

    total_nats: object
    bits_per_dim: object
    prior_nats: object
    decoder_nats: object
    diffusion_nats: object
    std_error_nats: object
    dims: int
    t0: float
    t1: float
    conventions: dict = field(default_factory=dict)

    @property
    def bpd(self) -> float:
        xp = array_namespace(self.bits_per_dim)
        return float(xp.mean(self.bits_per_dim))


def vdm_vlb(model, vp, x0, *, rng: np.random.Generator, prediction_type: str = "epsilon", n_t: int = 1,
            t0: float | None = None, t1: float = 1.0, t_sampling: str = "uniform", decoder: str = "gaussian",
            bins: int = 256, cdf: str = "exact") -> VDMBound:
    """The continuous-time VLB of variational diffusion models, MATH.md (5.17):

    ``-ELBO = KL(q(z_t1 | x) || N(0, I)) + E[-log p(x | z_t0)]
              + (t1 - t0)/2 E_{t ~ U(t0, t1), eps}[-SNR'(t) ||x - x0_hat(z_t, t)||^2]``

    on a continuous VP ``vp`` (:class:`~refdiff.LinearVP`, :class:`~refdiff.InterpolatedVP`;
    t = 0 data, t = 1 noise; ``t0`` defaults to ``vp.t_min``).  The decoder is
    p(x | z_t0) = N(x; z_t0 / alpha_t0, (sigma_t0 / alpha_t0)^2 I): a Gaussian density
    (``"gaussian"``, continuous data) or discretized to ``bins`` levels in [-1, 1]
    (``"discretized"``).  The model is ``model(z_t, t)`` with float64 times t of shape (N,).

    t_sampling
        ``"uniform"``: t ~ U(t0, t1), the estimator above (Kingma et al.'s).
        ``"log_snr"``: lambda = log(alpha/sigma) ~ U(lambda_t1, lambda_t0) and the same
        integral in lambda, ``(lambda_t0 - lambda_t1) SNR ||x - x0_hat||^2``: unbiased for
        the same quantity, with far lower variance near t0 (SNR times the error is bounded).

    Randomness, in order: decoder noise (x0's shape), then per draw r = 1..n_t: the time
    (``rng.uniform``, shape (N,)) and noise of x0's shape.  Units: nats summed over
    dimensions; bits/dim = nats / (D ln 2).

    Parameters
    ----------
    model : callable
        ``model(z_t, t)``, a prediction of ``prediction_type``.
    vp : continuous VP schedule
        ``LinearVP`` or ``InterpolatedVP``.
    x0 : array (N, ...)
        float64 data (on the ``bins`` grid for the discretized decoder).
    rng : numpy.random.Generator
        The source of the times and noise (order above).
    prediction_type : str, default "epsilon"
        One of refdiff.PREDICTION_TYPES.
    n_t : int, default 1
        The number of (t, noise) draws per sample (>= 1).
    t0 : float, optional
        The decoder's time (default ``vp.t_min``); 0 < t0 < t1, and >= ``vp.t_min`` for an
        ``InterpolatedVP``.
    t1 : float, default 1.0
        The prior's time, <= 1.
    t_sampling : {"uniform", "log_snr"}
        The estimator of the diffusion term, as above.
    decoder : {"gaussian", "discretized"}
        The decoder, as above.
    bins : int, default 256
        The number of data levels (discretized decoder).
    cdf : {"exact", "tanh"}
        The normal CDF of the discretized decoder.

    Returns
    -------
    VDMBound

    Raises
    ------
    TypeError
        If ``vp`` is not a continuous VP schedule, or ``x0`` is not float64.
    ValueError
        If a choice is unknown, ``n_t`` < 1, the times are out of range, x0 is off the grid
        (discretized decoder), or the model's output has the wrong shape.
    FloatingPointError
        If the model's output is not finite.
    """
    _check_model(model)
    _check_x0(x0)
    _check_choice("decoder", decoder, ("discretized", "gaussian"))
    _check_bins(bins)
    _check_choice("cdf", cdf, ("exact", "tanh"))
    check_finite_scalar("t1", t1)
    if t0 is not None:
        check_finite_scalar("t0", t0)
    if not isinstance(vp, _ContinuousVP):
        raise TypeError(f"vp must be a continuous VP schedule (LinearVP, InterpolatedVP), got {type(vp).__name__}")
    rng = check_rng(rng)
    check_int("n_t", n_t, min=1)
    _check_choice("t_sampling", t_sampling, ("uniform", "log_snr"))
    t0 = vp.t_min if t0 is None else float(t0)
    if not 0.0 < t0 < t1 <= 1.0:
        raise ValueError(f"need 0 < t0 < t1 <= 1, got t0 = {t0}, t1 = {t1}")
    if isinstance(vp, InterpolatedVP) and t0 < vp.t_min:
        raise ValueError(
            f"t0 = {t0!r} is below the first knot 1/T = {vp.t_min!r} of the discrete schedule's "
            f"interpolation (MATH.md (2.15)), where its linear extension can give alpha > 1; "
            f"valid range [{vp.t_min!r}, t1)"
        )
    xp = array_namespace(x0)
    N, D = x0.shape[0], _dims(x0)
    a1, s1 = alpha_sigma(vp, t1, x0)
    prior = _flat_sum(normal_kl(a1 * x0, 2.0 * xp.log(s1) + 0.0 * x0, 0.0, 0.0))
    a0, s0 = alpha_sigma(vp, t0, x0)
    z0 = a0 * x0 + s0 * standard_normal(rng, x0.shape, like=x0)
    log_scale = xp.log(s0 / a0) + 0.0 * x0
    if decoder == "gaussian":
        dec = -_flat_sum(gaussian_log_density(x0, z0 / a0, 2.0 * log_scale))
    else:
        dec = -_flat_sum(discretized_gaussian_log_likelihood(x0, z0 / a0, log_scale, bins, cdf))
    draws = []
    for _ in range(n_t):
        if t_sampling == "uniform":
            t = asarray_like(rng.uniform(t0, t1, size=N), x0, dtype=xp.float64)
        else:
            lam0, lam1 = (float(vp.lambda_(np.asarray(v, dtype=np.float64))) for v in (t0, t1))
            t = asarray_like(vp.t_from_lambda(rng.uniform(lam1, lam0, size=N)), x0, dtype=xp.float64)
        a, s = alpha_sigma(vp, t, x0)
        z_t = a * x0 + s * standard_normal(rng, x0.shape, like=x0)
        out = check_model_output(model(z_t, t), z_t, t=t)
        _, x0_hat = to_eps_x0(out, z_t, a, s, prediction_type)
        if t_sampling == "uniform":
            draws.append((t1 - t0) * vdm_diffusion_integrand(vp, t, x0, x0_hat))
        else:
            snr = xp.reshape(a / s, (N,)) ** 2
            draws.append((lam0 - lam1) * snr * _flat_sum((x0 - x0_hat) ** 2))
    est = xp.stack(draws)  # (n_t, N)
    diff = xp.mean(est, axis=0)
    se = xp.std(est, axis=0, correction=1) / math.sqrt(n_t) if n_t > 1 else None
    total = prior + dec + diff
    conv = {"units": "nats summed over dimensions", "time": "continuous, t = 0 data, t = 1 noise",
            "decoder": decoder, "prediction_type": prediction_type, "t_sampling": t_sampling}
    return VDMBound(total, bits_per_dim(total, D), prior, dec, diff, se, D, t0, float(t1), conv)
