"""Training objectives, their gradients and their weightings, MATH.md chapter 14.

All objectives are written for the general affine path ``x_t = alpha x_0 + sigma eps``
(MATH.md (4.1)); on the discrete VP schedule ``alpha = sqrt(alpha_bar_t)``,
``sigma = sqrt(1 - alpha_bar_t)``.  A network output ``f`` regresses one of three targets:

* ``"epsilon"``      the noise eps                         (DDPM)
* ``"sample"``       the clean data x_0                    (also called x0)
* ``"v_prediction"`` v = alpha eps - sigma x_0             (Salimans & Ho 2022)

Each loss returns ``(loss, dloss/df)``: the gradient with respect to the *network
output*, ready for the model's backward.  The reduction is the DDPM one, a mean over
the batch of per-sample weighted means over the data dimensions, (14.2).

Nothing is drawn here: timesteps, noise and condition-dropout draws are passed in (the
dropout mask is drawn on the host from a ``numpy.random.Generator`` given by the caller).
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import device as _device

from ._validate import check_array, check_bool, check_choice, check_coef, check_finite_scalar, check_int, check_same_shape
from .backend import array_namespace, check_rng
from .schedules import alpha_sigma

__all__ = [
    "TARGETS",
    "WEIGHTINGS",
    "canonical_target",
    "snr_from_alpha_sigma",
    "regression_target",
    "weighted_mse",
    "x0_error_factor",
    "x0_weight",
    "target_weight",
    "min_snr_weight",
    "objective_loss",
    "diffusion_loss",
    "eps_to_target_factor",
    "vlb_eps_weight",
    "irreducible_loss",
    "check_labels",
    "drop_labels",
]

TARGETS = ("epsilon", "sample", "v_prediction")
_ALIASES = {"eps": "epsilon", "x0": "sample", "x_0": "sample", "v": "v_prediction"}
WEIGHTINGS = (None, "min_snr", "snr", "snr_plus_one", "truncated_snr")


def canonical_target(target: str) -> str:
    """The canonical name of a regression target ("eps" -> "epsilon", "x0" -> "sample",
    "v" -> "v_prediction"); ValueError for anything else.

    Parameters
    ----------
    target : str
        A target name or alias.

    Returns
    -------
    str
        "epsilon", "sample" or "v_prediction".

    Raises
    ------
    ValueError
        If ``target`` is neither a target nor an alias.
    """
    t = _ALIASES.get(target, target) if isinstance(target, str) else target
    if not isinstance(t, str) or t not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)} (aliases: eps, x0, v)")
    return t


def _per_sample(c, n: int, xp, dtype):
    """alpha / sigma given as a float, a 0-d array, (N,) or (N, 1, ..., 1) -> (N,) array."""
    if isinstance(c, (int, float, np.floating, np.integer)):
        return xp.full((n,), float(c), dtype=dtype)
    if c.ndim == 0:
        return xp.full((n,), float(c), dtype=dtype)
    c = xp.reshape(c, (c.shape[0],))  # (N, 1, ..., 1) -> (N,)
    if c.shape[0] == 1 and n != 1:
        c = xp.broadcast_to(c, (n,))
    if c.shape[0] != n:
        raise ValueError(f"per-sample alpha/sigma has {c.shape[0]} entries, the batch has {n}")
    return xp.astype(c, dtype)


def _as_batch_coefs(alpha, sigma, like):
    xp = array_namespace(like)
    n = like.shape[0]
    return _per_sample(alpha, n, xp, like.dtype), _per_sample(sigma, n, xp, like.dtype)


def _check_arrays(**arrays):
    """Real floating, non-empty arrays of one shape (keyword name -> array)."""
    for k, v in arrays.items():
        check_array(k, v)
    if len(arrays) > 1:
        check_same_shape(**arrays)


def _check_weighting(weighting, allow_none=True):
    valid = WEIGHTINGS if allow_none else WEIGHTINGS[1:]
    if weighting is not None and not isinstance(weighting, str) or weighting not in valid:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(map(repr, valid))}")


def _bc(w, x):
    """(N,) -> (N, 1, ..., 1) to broadcast against x."""
    xp = array_namespace(x)
    return xp.reshape(w, (w.shape[0],) + (1,) * (x.ndim - 1))


def snr_from_alpha_sigma(alpha, sigma):
    """The signal-to-noise ratio SNR = alpha^2 / sigma^2, MATH.md (14.4) (+inf where
    sigma = 0, 0 where alpha = 0).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    alpha, sigma : array
        Path coefficients of one shape and namespace.

    Returns
    -------
    array like alpha
        alpha^2 / sigma^2.
    """
    _check_arrays(alpha=alpha, sigma=sigma)
    xp = array_namespace(alpha, sigma)
    a2, s2 = alpha * alpha, sigma * sigma
    safe = xp.where(s2 > 0, s2, xp.ones_like(s2))
    return xp.where(s2 > 0, a2 / safe, xp.full_like(a2, math.inf))


def regression_target(x0, noise, alpha, sigma, target: str = "epsilon"):
    """The value a network of the given ``target`` type regresses, MATH.md (14.1):
    eps, x_0, or v = alpha eps - sigma x_0.  alpha, sigma: floats or per-sample (N,).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    x0 : array (N, ...)
        The data.
    noise : array like x0
        The noise eps.
    alpha, sigma : float or array (N,) or (N, 1, ..., 1)
        The path coefficients (used for v only).
    target : str, default "epsilon"
        One of TARGETS ("epsilon", "sample", "v_prediction"; aliases "eps", "x0", "v").

    Returns
    -------
    array like x0
        The regression target.

    Raises
    ------
    ValueError
        If the shapes differ or ``target`` is unknown.
    """
    _check_arrays(x0=x0, noise=noise)
    check_coef("alpha", alpha, x0)
    check_coef("sigma", sigma, x0)
    target = canonical_target(target)
    if tuple(x0.shape) != tuple(noise.shape):
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but noise has shape {tuple(noise.shape)}")
    if target == "epsilon":
        return noise
    if target == "sample":
        return x0
    a, s = _as_batch_coefs(alpha, sigma, x0)
    return _bc(a, x0) * noise - _bc(s, x0) * x0


def weighted_mse(out, target_value, weights=None):
    """``(loss, dloss/dout)`` of the weighted mean squared error, MATH.md (14.2)-(14.3):

        L = (1/N) sum_i w_i (1/D) sum_j (out_ij - target_ij)^2,
        dL/dout_ij = 2 w_i (out_ij - target_ij) / (N D),

    N the batch size, D the number of entries per sample; ``weights`` None (all 1) or
    per-sample (N,).  ``loss`` is a 0-d array of ``out``'s namespace and dtype.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    out : array (N, ...)
        The model output.
    target_value : array like out
        Its target.
    weights : array (N,), optional
        Per-sample weights (default all 1).

    Returns
    -------
    loss : 0-d array
    dloss_dout : array like out

    Raises
    ------
    ValueError
        If the shapes differ, the batch is empty, or ``weights`` is not (N,).
    """
    check_array("out", out)
    check_array("target_value", target_value)
    xp = array_namespace(out, target_value)
    if tuple(out.shape) != tuple(target_value.shape):
        raise ValueError(f"model output has shape {tuple(out.shape)}, the target has shape {tuple(target_value.shape)}: "
                         "out and target_value must have one shape")
    if weights is not None:
        check_array("weights", weights, shape=(out.shape[0],))
    if out.ndim < 1 or out.shape[0] < 1:
        raise ValueError(f"model output must have a non-empty batch axis, got shape {tuple(out.shape)}")
    n = out.shape[0]
    d = math.prod(out.shape[1:])
    r = out - target_value
    if weights is None:
        loss = xp.sum(r * r) / (n * d)
        return loss, (2.0 / (n * d)) * r
    if tuple(weights.shape) != (n,):
        raise ValueError(f"weights must have shape ({n},), got {tuple(weights.shape)}")
    w = _bc(xp.astype(weights, out.dtype), out)
    loss = xp.sum(w * (r * r)) / (n * d)
    return loss, (2.0 / (n * d)) * (w * r)


def x0_error_factor(alpha, sigma, target: str):
    """c_target with ||f - target||^2 = c_target ||x0_hat(f) - x_0||^2, MATH.md (14.5):
    c_eps = SNR, c_x0 = 1, c_v = (alpha^2 + sigma^2)^2 / sigma^2 (= 1 + SNR on a VP path).
    alpha, sigma: per-sample arrays (N,); returns (N,).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    alpha, sigma : array (N,)
        Per-sample path coefficients.
    target : str
        One of TARGETS ("epsilon", "sample", "v_prediction"; aliases "eps", "x0", "v").

    Returns
    -------
    array (N,)
        c_target.

    Raises
    ------
    ValueError
        If ``target`` is unknown.
    """
    _check_arrays(alpha=alpha, sigma=sigma)
    xp = array_namespace(alpha, sigma)
    target = canonical_target(target)
    if target == "epsilon":
        return snr_from_alpha_sigma(alpha, sigma)
    if target == "sample":
        return xp.ones_like(alpha)
    r2 = alpha * alpha + sigma * sigma
    return r2 * r2 / (sigma * sigma)


def x0_weight(weighting: str, snr, gamma: float = 5.0):
    """The x0-equivalent weight psi(SNR) of a named weighting, MATH.md (14.8):

    ============== =====================  ===============================
    weighting       psi(SNR)            equals
    ============== =====================  ===============================
    "snr"           SNR                    the plain eps loss
    "snr_plus_one"  SNR + 1                the plain v loss on a VP path
    "truncated_snr" max(SNR, 1)            Salimans & Ho 2022
    "min_snr"       min(SNR, gamma)        Hang et al. 2023 (min-SNR-gamma)
    ============== =====================  ===============================

    NaN and inf propagate: not checked.

    Parameters
    ----------
    weighting : str
        One of the rows above.
    snr : array
        Signal-to-noise ratios.
    gamma : float, default 5.0
        The truncation of "min_snr" (finite, > 0).

    Returns
    -------
    array like snr
        psi(SNR).

    Raises
    ------
    ValueError
        If ``weighting`` is unknown or ``gamma`` invalid.
    """
    _check_weighting(weighting, allow_none=False)
    check_array("snr", snr)
    xp = array_namespace(snr)
    if weighting == "snr":
        return snr
    if weighting == "snr_plus_one":
        return snr + 1.0
    if weighting == "truncated_snr":
        return xp.where(snr > 1.0, snr, xp.ones_like(snr))
    if weighting == "min_snr":
        _check_gamma(gamma)
        return xp.where(snr > gamma, xp.full_like(snr, float(gamma)), snr)
    raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(map(repr, WEIGHTINGS))}")


def _check_gamma(gamma):
    if isinstance(gamma, bool) or not (isinstance(gamma, (int, float)) and gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma (min-SNR truncation) must be a finite number > 0, got {gamma!r}")


# limit of psi(SNR) / SNR as SNR -> 0 (the eps-target weight at zero terminal SNR)
_EPS_LIMIT_AT_ZERO_SNR = {"snr": 1.0, "min_snr": 1.0, "snr_plus_one": math.inf, "truncated_snr": math.inf}


def target_weight(weighting, alpha, sigma, target: str, gamma: float = 5.0):
    """The per-sample weight w_target = psi(SNR) / c_target that makes the weighted
    ``target`` MSE equal the lambda-weighted x0 MSE, MATH.md (14.6); (N,).

    ``weighting=None`` means no weighting (w = 1 on the chosen target's own MSE, the
    "simple" loss).  At SNR = 0 (zero terminal SNR) the eps weight is the limit of
    psi(SNR)/SNR (1 for "snr" and "min_snr", inf for the others).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    weighting : str or None
        None or a weighting of :func:`x0_weight`.
    alpha, sigma : array (N,)
        Per-sample path coefficients.
    target : str
        One of TARGETS ("epsilon", "sample", "v_prediction"; aliases "eps", "x0", "v").
    gamma : float, default 5.0
        The truncation of "min_snr".

    Returns
    -------
    array (N,)
        w_target.

    Raises
    ------
    ValueError
        If ``weighting`` or ``target`` is unknown or ``gamma`` invalid.
    """
    _check_arrays(alpha=alpha, sigma=sigma)
    _check_weighting(weighting)
    xp = array_namespace(alpha, sigma)
    target = canonical_target(target)
    if weighting is None:
        return xp.ones_like(alpha)
    snr = snr_from_alpha_sigma(alpha, sigma)
    psi = x0_weight(weighting, snr, gamma)
    c = x0_error_factor(alpha, sigma, target)
    if target == "epsilon":
        at0 = xp.full_like(snr, _EPS_LIMIT_AT_ZERO_SNR[weighting])
        return xp.where(snr > 0, psi / xp.where(snr > 0, c, xp.ones_like(c)), at0)
    return psi / c


def min_snr_weight(alpha, sigma, target: str, gamma: float = 5.0):
    """Min-SNR-gamma weights (Hang et al. 2023) stated per target, MATH.md (14.9):
    ``target_weight("min_snr", alpha, sigma, target, gamma)`` (one definition):
    w_x0 = min(SNR, gamma); w_eps = min(SNR, gamma) / SNR = min(1, gamma / SNR);
    w_v = min(SNR, gamma) sigma^2 / (alpha^2 + sigma^2)^2 (= min(SNR, gamma) / (SNR + 1) on a VP path).
    alpha, sigma: (N,) arrays; returns (N,).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    alpha, sigma : array (N,)
        Per-sample path coefficients.
    target : str
        One of TARGETS ("epsilon", "sample", "v_prediction"; aliases "eps", "x0", "v").
    gamma : float, default 5.0
        The truncation (finite, > 0).

    Returns
    -------
    array (N,)

    Raises
    ------
    ValueError
        If ``gamma`` is invalid or ``target`` unknown.
    """
    _check_arrays(alpha=alpha, sigma=sigma)
    _check_gamma(gamma)
    return target_weight("min_snr", alpha, sigma, target, gamma)


def eps_to_target_factor(alpha, sigma, target: str):
    """SNR / c_target: the factor turning a weight on the eps MSE into the weight on the
    ``target`` MSE that penalises the same x0 error equally, MATH.md (14.6): 1 (eps),
    SNR (x0), alpha^2 / (alpha^2 + sigma^2)^2 (v).  (N,).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    alpha, sigma : array (N,)
        Per-sample path coefficients.
    target : str
        One of TARGETS ("epsilon", "sample", "v_prediction"; aliases "eps", "x0", "v").

    Returns
    -------
    array (N,)

    Raises
    ------
    ValueError
        If ``target`` is unknown.
    """
    _check_arrays(alpha=alpha, sigma=sigma)
    xp = array_namespace(alpha, sigma)
    target = canonical_target(target)
    if target == "epsilon":
        return xp.ones_like(alpha)
    if target == "sample":
        return snr_from_alpha_sigma(alpha, sigma)
    r2 = alpha * alpha + sigma * sigma
    return alpha * alpha / (r2 * r2)


def objective_loss(out, x0, noise, alpha, sigma, *, target: str = "epsilon", weighting=None, gamma: float = 5.0,
                   extra_eps_weight=None):
    """``(loss, dloss/dout)`` for a network output ``out`` of type ``target`` at the noised
    point x_t = alpha x0 + sigma noise, MATH.md (14.1)-(14.3), (14.6).

    alpha, sigma: floats, (N,) or (N, 1, ..., 1) arrays (as returned by
    ``refdiff.alpha_sigma``).  ``weighting``: None (unweighted target MSE) or one of
    "min_snr", "snr", "snr_plus_one", "truncated_snr" (x0-equivalent weights, converted to
    ``target``; see :func:`target_weight`).  ``extra_eps_weight`` (N,): a further weight
    stated on the eps MSE (e.g. the ELBO weight of :func:`vlb_eps_weight`), converted to
    ``target`` by :func:`eps_to_target_factor` and added.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    out : array (N, ...)
        The network output.
    x0 : array like out
        The data.
    noise : array like out
        The noise.
    alpha, sigma : float or array
        The path coefficients, as above.
    target : str, default "epsilon"
        One of TARGETS ("epsilon", "sample", "v_prediction"; aliases "eps", "x0", "v").
    weighting : str or None
        As above.
    gamma : float, default 5.0
        The truncation of "min_snr".
    extra_eps_weight : array (N,), optional
        As above.

    Returns
    -------
    loss : 0-d array
    dloss_dout : array like out

    Raises
    ------
    ValueError
        If a name is unknown or the shapes disagree.
    """
    _check_arrays(x0=x0, noise=noise)
    check_array("out", out)
    if tuple(out.shape) != tuple(x0.shape):
        raise ValueError(f"model output has shape {tuple(out.shape)}, the target has shape {tuple(x0.shape)}: "
                         f"out must have x0's shape")
    check_coef("alpha", alpha, x0)
    check_coef("sigma", sigma, x0)
    _check_weighting(weighting)
    _check_gamma(gamma)
    target = canonical_target(target)
    a, s = _as_batch_coefs(alpha, sigma, x0)
    y = regression_target(x0, noise, a, s, target)
    w = None if weighting is None else target_weight(weighting, a, s, target, gamma)
    if extra_eps_weight is not None:
        check_array("extra_eps_weight", extra_eps_weight, shape=(x0.shape[0],))
        xp = array_namespace(out)
        extra = xp.astype(extra_eps_weight, a.dtype) * eps_to_target_factor(a, s, target)
        w = (xp.ones_like(a) if w is None else w) + extra
    return weighted_mse(out, _cast(y, out), w)


def vlb_eps_weight(schedule, t, like, variance_type: str = "fixed_small"):
    """The per-sample weight w_t of :func:`refdiff.eps_mse_weight` (MATH.md (5.5)) at
    integer timesteps ``t`` (N,), in ``like``'s namespace: with a fixed reverse variance the
    ELBO term per data dimension is ``L_{t}/D = w_t mean_j (eps_hat - eps)_j^2`` for t >= 1,
    so ``objective_loss(..., extra_eps_weight=kappa * w_t)`` is the ELBO-term-weighted
    objective L_simple + kappa L_t / D of a fixed-variance model, MATH.md (14.7) (nats per
    dimension, no factor T; improved-diffusion's hybrid is :func:`refdiff.hybrid_loss`,
    MATH.md (5.16), equal to this with kappa = lam T / ln 2).

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule.
    t : integer array (N,)
        0-based timesteps.
    like : array (N, ...)
        Gives the namespace and dtype.
    variance_type : {"fixed_small", "fixed_large"}
        The fixed reverse variance.

    Returns
    -------
    array (N,)
        w_t.
    """
    check_array("like", like)
    from .elbo import eps_mse_weight
    from .schedules import Schedule, gather

    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    check_array("like", like, min_ndim=1)
    check_array("t", t, dtype="int", ndim=1)
    if t.shape[0] != like.shape[0]:
        raise ValueError(f"t has shape {tuple(t.shape)} but like has shape {tuple(like.shape)}: one timestep per sample")
    xp = array_namespace(like)
    w = gather(eps_mse_weight(schedule, variance_type), t, like)
    return xp.reshape(w, (w.shape[0],))  # (N, 1, ..., 1) -> (N,)


def _check_discrete_t(schedule, t):
    """With a discrete Schedule, t must be integer timesteps (a float t would be read as a
    continuous index by alpha_sigma)."""
    from .schedules import Schedule

    if isinstance(schedule, Schedule):
        schedule.check_t(t)


def _is_arr(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _cast(a, like):
    xp = array_namespace(like)
    return a if a.dtype == like.dtype else xp.astype(a, like.dtype)


def diffusion_loss(
    forward,
    params,
    x0,
    t,
    noise,
    schedule,
    *,
    target: str = "epsilon",
    weighting=None,
    gamma: float = 5.0,
    y=None,
    vlb_weight: float = 0.0,
    variance_type: str = "fixed_small",
    cond=None,
):
    """The denoising loss of one batch; draws nothing.  Returns ``(loss, dout, cache)``.

    ``x_t = alpha_t x0 + sigma_t noise`` with (alpha_t, sigma_t) = ``refdiff.alpha_sigma(
    schedule, t, x0)`` (integer t with a discrete Schedule; float t with a continuous VP,
    t = 0 data), then ``out, cache = forward(params, x_t, t, cond)`` and
    ``(loss, dout) = objective_loss(out, ...)``, MATH.md (14.1)-(14.3).  Pass ``dout`` and
    ``cache`` to the model's backward to get parameter gradients.
    ``forward(params, x, t, cond)`` is e.g. ``model.forward``; ``cond`` the condition
    mapping (:mod:`refdiff.nn.conditions`), for which ``y`` (class labels) is shorthand.

    ``vlb_weight = kappa > 0`` (discrete Schedule, integer t) adds kappa times the ELBO term
    of a fixed-variance (``variance_type``) reverse process in nats per dimension: the
    ELBO-term-weighted objective, MATH.md (14.7) (see :func:`vlb_eps_weight`), which is
    ``hybrid_loss(lam=kappa ln 2 / T)`` (MATH.md (5.16)), not ``hybrid_loss(lam=kappa)``.

    NaN and inf in ``x0`` and ``noise`` propagate to the loss: not checked (the training loop checks its data).

    Parameters
    ----------
    forward : callable
        ``forward(params, x, t, cond) -> (out, cache)``.
    params : dict
        The network's parameters.
    x0 : array (N, ...)
        The data batch.
    t : array (N,)
        Timesteps (integer, discrete Schedule) or times (float, continuous VP).
    noise : array like x0
        The noise.
    schedule : Schedule or continuous VP schedule
        The noise schedule.
    target, weighting, gamma
        As in :func:`objective_loss`.
    y : integer array (N,), optional
        Class labels, shorthand for ``cond={"class": y}``.
    vlb_weight : float, default 0.0
        kappa >= 0, as above.
    variance_type : {"fixed_small", "fixed_large"}
        The reverse variance of the ELBO term.
    cond : condition mapping, optional
        The condition passed to ``forward``.

    Returns
    -------
    loss : 0-d array
    dout : array
        dloss/dout, for the model's backward.
    cache
        ``forward``'s cache.

    Raises
    ------
    ValueError
        If x0 and noise differ in shape, ``vlb_weight`` < 0, or a name is unknown.
    TypeError
        If both ``y`` and ``cond`` are given.
    """
    if not callable(forward):
        raise TypeError(f"forward must be a callable forward(params, x, t, cond), got {type(forward).__name__}")
    if tuple(getattr(x0, "shape", ())) != tuple(getattr(noise, "shape", ())) and _is_arr(x0) and _is_arr(noise):
        raise ValueError(f"x0 has shape {tuple(x0.shape)} but noise has shape {tuple(noise.shape)}")
    _check_arrays(x0=x0, noise=noise)
    check_finite_scalar("vlb_weight", vlb_weight, low=0.0)
    _check_discrete_t(schedule, t)
    check_choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
    alpha, sigma = alpha_sigma(schedule, t, x0)
    x_t = alpha * x0 + sigma * noise
    if y is not None and cond is not None:
        raise TypeError("diffusion_loss: pass the condition as cond or as the class labels y, not both")
    out, cache = forward(params, x_t, t, y if cond is None else cond)
    extra = None
    if vlb_weight:
        extra = float(vlb_weight) * vlb_eps_weight(schedule, t, x0, variance_type)
    loss, dout = objective_loss(out, x0, noise, alpha, sigma, target=target, weighting=weighting, gamma=gamma,
                                extra_eps_weight=extra)
    return loss, dout, cache


def irreducible_loss(oracle, x0, t, noise, schedule, *, target: str = "epsilon", weighting=None, gamma: float = 5.0):
    """The loss of the Bayes-optimal prediction E[target | x_t] (from an exact oracle such
    as :class:`refdiff.GaussianMixture`) on the given draws: a Monte Carlo estimate of the
    floor below which no model's expected loss can go, MATH.md (14.18).  Draws nothing.

    NaN and inf in ``x0`` and ``noise`` propagate: not checked.

    Parameters
    ----------
    oracle : exact oracle
        E.g. ``GaussianData``, ``GaussianMixture`` or ``EmpiricalData`` (with ``eps``,
        ``x0_mean`` and ``v``).
    x0 : array (N, ...)
        Data drawn from the oracle.
    t : array (N,)
        Timesteps or times, as in :func:`diffusion_loss`.
    noise : array like x0
        The noise.
    schedule : Schedule or continuous VP schedule
        The noise schedule.
    target, weighting, gamma
        As in :func:`objective_loss`.

    Returns
    -------
    0-d array
        The loss of the optimal prediction.
    """
    for name in ("eps", "x0_mean", "v"):
        if not callable(getattr(oracle, name, None)):
            raise TypeError(f"oracle must be an exact oracle with eps, x0_mean and v methods, got {type(oracle).__name__}")
    _check_arrays(x0=x0, noise=noise)
    _check_discrete_t(schedule, t)
    target = canonical_target(target)
    alpha, sigma = alpha_sigma(schedule, t, x0)
    x_t = alpha * x0 + sigma * noise
    method = {"epsilon": oracle.eps, "sample": oracle.x0_mean, "v_prediction": oracle.v}[target]
    out = method(x_t, alpha, sigma)
    loss, _ = objective_loss(out, x0, noise, alpha, sigma, target=target, weighting=weighting, gamma=gamma)
    return loss


def check_labels(y, num_classes: int, *, allow_null: bool = False, name: str = "y"):
    """Validate integer class labels (the ``"class"`` condition kind; every kind, class
    labels included, is validated by the network's ``cond_spec``, :mod:`refdiff.nn.conditions`): shape (N,), integer dtype, values in
    [0, num_classes - 1] (or [0, num_classes] with ``allow_null``: index num_classes is
    the null class of classifier-free guidance).  Returns ``y`` unchanged.

    Parameters
    ----------
    y : integer array (N,)
        The labels.
    num_classes : int
        The number of classes (>= 1).
    allow_null : bool, default False
        Accept the null class ``num_classes``.
    name : str, default "y"
        The name used in error messages.

    Returns
    -------
    array
        ``y``.

    Raises
    ------
    TypeError
        If ``y`` is not of an integer dtype.
    ValueError
        If ``num_classes`` < 1 or not an integer, ``y`` is not 1-d, or a label is out of range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    check_bool("allow_null", allow_null)
    check_array(name, y, dtype="any", allow_empty=True)
    xp = array_namespace(y)
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"{name} must be integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(y.shape)}")
    hi = num_classes if allow_null else num_classes - 1
    if y.shape[0]:
        lo_v, hi_v = int(xp.min(y)), int(xp.max(y))
        if lo_v < 0 or hi_v > hi:
            bad = lo_v if lo_v < 0 else hi_v
            null = f"; index {num_classes} is the null class" if allow_null else ""
            raise ValueError(f"{name} contains label {bad}, out of range [0, {hi}] (num_classes = {num_classes}{null})")
    return y


def drop_labels(y, p: float, rng: np.random.Generator, num_classes: int):
    """Classifier-free condition dropout of class labels, MATH.md (14.10): each label is
    replaced by the null class ``num_classes`` independently with probability ``p``.
    (Other kinds: ``net.cond_spec.drop``, which for class labels alone draws the same
    mask from the same stream.)

    The mask is ``rng.random(N) < p``, drawn on the host (one uniform per sample, even
    when p = 0 or 1, so the RNG stream does not depend on p), and moved to ``y``'s
    namespace.

    Parameters
    ----------
    y : integer array (N,)
        Class labels in [0, num_classes - 1].
    p : float
        The dropout probability, in [0, 1].
    rng : numpy.random.Generator
        The host generator (one ``rng.random(N)`` call).
    num_classes : int
        The number of classes; ``num_classes`` is the null class.

    Returns
    -------
    array like y
        The labels with the dropped ones set to ``num_classes``.

    Raises
    ------
    ValueError
        If ``p`` is outside [0, 1] or the labels are invalid (TypeError for a non-integer dtype).
    """
    if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"condition dropout probability p must lie in [0, 1], got {p!r}")
    rng = check_rng(rng)
    check_labels(y, num_classes)
    xp = array_namespace(y)
    mask = rng.random(y.shape[0]) < p
    mask_x = xp.asarray(mask, device=_device(y))
    return xp.where(mask_x, xp.full_like(y, num_classes), y)
