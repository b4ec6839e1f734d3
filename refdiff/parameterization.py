"""Prediction parameterizations and their conversions, MATH.md chapter 4.

Everything is written for a general Gaussian (affine) path

    x_t = alpha_t x_0 + sigma_t eps,                                  MATH.md (4.1)

so the same functions serve the discrete VP schedule (alpha_t = sqrt(alpha_bar_t),
sigma_t = sqrt(1 - alpha_bar_t)), the continuous VP schedules, and flow-matching paths
(alpha_t = 1 - t, sigma_t = t).  ``alpha`` and ``sigma`` are Python floats, 0-d arrays or
per-sample arrays of shape (N,) (reshaped to broadcast against x_t).
"""

from __future__ import annotations

from ._validate import check_array, check_coef, check_finite_scalar, check_same_shape
from .backend import array_namespace, bcast

__all__ = [
    "PREDICTION_TYPES",
    "x0_from_eps",
    "eps_from_x0",
    "v_from_eps_x0",
    "x0_from_v",
    "eps_from_v",
    "score_from_eps",
    "eps_from_score",
    "x0_from_score",
    "velocity_from_eps_x0",
    "eps_x0_from_velocity",
    "to_eps_x0",
    "convert",
    "edm_preconditioning",
    "edm_denoiser",
    "edm_target",
    "clip_x0",
    "dynamic_threshold",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "score")


def _check(coefs=None, **arrays):
    """The arrays (keyword name -> array): real floating, non-empty, one shape; the
    coefficients: numbers or float arrays fitting the first array (no finiteness check)."""
    for k, v in arrays.items():
        check_array(k, v)
    if len(arrays) > 1:
        check_same_shape(**arrays)
    like = next(iter(arrays.values()))
    for k, v in (coefs or {}).items():
        check_coef(k, v, like)


def _ab(alpha, sigma, x):
    return bcast(alpha, x), bcast(sigma, x)


def x0_from_eps(x_t, eps, alpha, sigma):
    """x_0 = (x_t - sigma eps) / alpha, MATH.md (4.2).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    eps : array like x_t
        The (predicted) noise.

    Returns
    -------
    array like x_t
        x0_hat.
    """
    _check(x_t=x_t, eps=eps, coefs=dict(alpha=alpha, sigma=sigma))
    a, s = _ab(alpha, sigma, x_t)
    return (x_t - s * eps) / a


def eps_from_x0(x_t, x0, alpha, sigma):
    """eps = (x_t - alpha x_0) / sigma, MATH.md (4.2).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    x0 : array like x_t
        The (predicted) data.

    Returns
    -------
    array like x_t
        eps_hat.
    """
    _check(x_t=x_t, x0=x0, coefs=dict(alpha=alpha, sigma=sigma))
    a, s = _ab(alpha, sigma, x_t)
    return (x_t - a * x0) / s


def v_from_eps_x0(eps, x0, alpha, sigma):
    """The v-prediction target v = alpha eps - sigma x_0 (Salimans & Ho 2022), MATH.md (4.3).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    eps, x0 : arrays of one shape
        Noise and data.
    alpha, sigma : float or broadcastable array
        The path coefficients.

    Returns
    -------
    array
        v.
    """
    _check(eps=eps, x0=x0, coefs=dict(alpha=alpha, sigma=sigma))
    a, s = _ab(alpha, sigma, eps)
    return a * eps - s * x0


def x0_from_v(x_t, v, alpha, sigma):
    """x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2), MATH.md (4.4); on a VP path the
    denominator is 1.

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    v : array like x_t
        The (predicted) v.

    Returns
    -------
    array like x_t
        x0_hat.
    """
    _check(x_t=x_t, v=v, coefs=dict(alpha=alpha, sigma=sigma))
    a, s = _ab(alpha, sigma, x_t)
    return (a * x_t - s * v) / (a * a + s * s)


def eps_from_v(x_t, v, alpha, sigma):
    """eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2), MATH.md (4.4).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    v : array like x_t
        The (predicted) v.

    Returns
    -------
    array like x_t
        eps_hat.
    """
    _check(x_t=x_t, v=v, coefs=dict(alpha=alpha, sigma=sigma))
    a, s = _ab(alpha, sigma, x_t)
    return (s * x_t + a * v) / (a * a + s * s)


def score_from_eps(eps, sigma):
    """The score of the noised marginal, grad log p_t(x_t) = -E[eps | x_t] / sigma_t, MATH.md (4.5).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    eps : array
        The (predicted) noise E[eps | x_t].
    sigma : float or broadcastable array
        sigma_t > 0.

    Returns
    -------
    array like eps
        The score.
    """
    _check(eps=eps, coefs=dict(sigma=sigma))
    return -eps / bcast(sigma, eps)


def eps_from_score(score, sigma):
    """eps = -sigma_t * score, the inverse of (4.5).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    score : array
        grad log p_t(x_t).
    sigma : float or broadcastable array
        sigma_t.

    Returns
    -------
    array like score
        eps_hat.
    """
    _check(score=score, coefs=dict(sigma=sigma))
    return -bcast(sigma, score) * score


def x0_from_score(x_t, score, alpha, sigma):
    """Tweedie's formula, MATH.md (4.6): E[x_0 | x_t] = (x_t + sigma_t^2 score) / alpha_t.

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    score : array like x_t
        grad log p_t(x_t).

    Returns
    -------
    array like x_t
        E[x_0 | x_t].
    """
    _check(x_t=x_t, score=score, coefs=dict(alpha=alpha, sigma=sigma))
    a, s = _ab(alpha, sigma, x_t)
    return (x_t + s * s * score) / a


def velocity_from_eps_x0(eps, x0, d_alpha, d_sigma):
    """The flow velocity of an affine path, u = d/dt x_t = alpha'_t x_0 + sigma'_t eps,
    MATH.md (4.7).  For rectified flow (alpha = 1 - t, sigma = t, t = 0 data): u = eps - x_0.

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    eps, x0 : arrays of one shape
        Noise and data.
    d_alpha, d_sigma : float or broadcastable array
        The time derivatives alpha'_t and sigma'_t of the path.

    Returns
    -------
    array
        The velocity u.
    """
    _check(eps=eps, x0=x0, coefs=dict(d_alpha=d_alpha, d_sigma=d_sigma))
    da, ds = _ab(d_alpha, d_sigma, eps)
    return da * x0 + ds * eps


def eps_x0_from_velocity(x_t, u, alpha, sigma, d_alpha, d_sigma):
    """Solve x_t = alpha x_0 + sigma eps and u = alpha' x_0 + sigma' eps for (eps, x_0),
    MATH.md (4.8); the determinant alpha sigma' - sigma alpha' must be non-zero.

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    u : array like x_t
        The (predicted) velocity.
    d_alpha, d_sigma : float or broadcastable array
        alpha'_t and sigma'_t.

    Returns
    -------
    eps, x0 : arrays like x_t
        (Not checked: a zero determinant alpha sigma' - sigma alpha' gives inf or NaN.)
    """
    _check(x_t=x_t, u=u, coefs=dict(alpha=alpha, sigma=sigma, d_alpha=d_alpha, d_sigma=d_sigma))
    a, s = _ab(alpha, sigma, x_t)
    da, ds = _ab(d_alpha, d_sigma, x_t)
    det = a * ds - s * da
    x0 = (ds * x_t - s * u) / det
    eps = (a * u - da * x_t) / det
    return eps, x0


def to_eps_x0(model_output, x_t, alpha, sigma, prediction_type: str):
    """(eps_hat, x0_hat) from a model output of the given ``prediction_type``
    ("epsilon", "sample", "v_prediction" or "score"), MATH.md (4.2)-(4.6).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    model_output : array like x_t
        What the model returned.
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    prediction_type : {"epsilon", "sample", "v_prediction", "score"}
        What ``model_output`` is.

    Returns
    -------
    eps_hat, x0_hat : arrays like x_t

    Raises
    ------
    ValueError
        For an unknown prediction type.
    """
    _check(model_output=model_output, x_t=x_t, coefs=dict(alpha=alpha, sigma=sigma))
    if prediction_type == "epsilon":
        eps = model_output
        return eps, x0_from_eps(x_t, eps, alpha, sigma)
    if prediction_type == "sample":
        x0 = model_output
        return eps_from_x0(x_t, x0, alpha, sigma), x0
    if prediction_type == "v_prediction":
        return eps_from_v(x_t, model_output, alpha, sigma), x0_from_v(x_t, model_output, alpha, sigma)
    if prediction_type == "score":
        eps = eps_from_score(model_output, sigma)
        return eps, x0_from_eps(x_t, eps, alpha, sigma)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")


def convert(model_output, x_t, alpha, sigma, from_type: str, to_type: str):
    """Convert a prediction between any two of ``PREDICTION_TYPES`` at one (x_t, alpha, sigma).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    model_output : array like x_t
        A prediction of type ``from_type``.
    x_t : array (N, ...)
        The noisy state x_t = alpha x_0 + sigma eps.
    alpha, sigma : float or array broadcasting against x_t (e.g. shape (N, 1, ...))
        The path coefficients at t (``refdiff.alpha_sigma``).
    from_type, to_type : str
        Members of ``PREDICTION_TYPES`` ("epsilon", "sample", "v_prediction", "score").

    Returns
    -------
    array like x_t
        The same prediction as ``to_type``.
    """
    for name, value in (("from_type", from_type), ("to_type", to_type)):
        if not isinstance(value, str) or value not in PREDICTION_TYPES:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(PREDICTION_TYPES)}")
    _check(model_output=model_output, x_t=x_t, coefs=dict(alpha=alpha, sigma=sigma))
    if from_type == to_type:
        return model_output
    eps, x0 = to_eps_x0(model_output, x_t, alpha, sigma, from_type)
    if to_type == "epsilon":
        return eps
    if to_type == "sample":
        return x0
    if to_type == "v_prediction":
        return v_from_eps_x0(eps, x0, alpha, sigma)
    return score_from_eps(eps, sigma)


# ---------------------------------------------------------------------------- EDM
def edm_preconditioning(sigma, sigma_data: float = 0.5):
    """EDM's preconditioning (Karras et al. 2022, Table 1), MATH.md (4.9):
    ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
    ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = log(s) / 4``, for VE noise level s.

    Returns ``(c_skip, c_out, c_in, c_noise)`` in sigma's namespace and shape.

    NaN and inf in ``sigma`` propagate: not checked.

    Parameters
    ----------
    sigma : float or array
        VE noise level(s) s > 0.
    sigma_data : float
        The data's standard deviation sd (EDM's 0.5).

    Returns
    -------
    c_skip, c_out, c_in, c_noise : floats or arrays like sigma
    """
    check_coef("sigma", sigma)
    check_finite_scalar("sigma_data", sigma_data, low=0.0, low_open=True)
    xp = array_namespace(sigma)
    if bool(xp.any(sigma < 0)):
        raise ValueError(f"sigma contains {float(xp.min(sigma))!r}; sigma must be >= 0")
    sd2 = sigma_data * sigma_data
    r = xp.sqrt(sigma * sigma + sd2)
    return sd2 / (sigma * sigma + sd2), sigma * sigma_data / r, 1.0 / r, 0.25 * xp.log(sigma)


def edm_denoiser(F_out, x, sigma, sigma_data: float = 0.5):
    """D(x; sigma) = c_skip x + c_out F, MATH.md (4.10), where ``F_out`` is the raw network
    output evaluated at (c_in x, c_noise).  ``x = x_0 + sigma n`` (VE coordinates).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    F_out : array like x
        The raw network output at (c_in x, c_noise).
    x : array
        The VE state x_0 + sigma n.
    sigma : float or broadcastable array
        The noise level.
    sigma_data : float
        The data's standard deviation.

    Returns
    -------
    array like x
        D(x; sigma), the denoised estimate.
    """
    _check(F_out=F_out, x=x, coefs=dict(sigma=sigma))
    c_skip, c_out, _, _ = edm_preconditioning(sigma, sigma_data)
    return bcast(c_skip, x) * x + bcast(c_out, x) * F_out


def edm_target(x0, x, sigma, sigma_data: float = 0.5):
    """The network's regression target F = (x_0 - c_skip x) / c_out, the inverse of (4.10).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x0 : array
        The data.
    x : array like x0
        The VE state x_0 + sigma n.
    sigma : float or broadcastable array
        The noise level.
    sigma_data : float
        The data's standard deviation.

    Returns
    -------
    array like x0
        The regression target F.
    """
    _check(x0=x0, x=x, coefs=dict(sigma=sigma))
    c_skip, c_out, _, _ = edm_preconditioning(sigma, sigma_data)
    return (x0 - bcast(c_skip, x) * x) / bcast(c_out, x)


# ---------------------------------------------------------------------------- clipping
def clip_x0(x0, clip_range: float = 1.0):
    """Static clipping of a predicted x_0 to [-clip_range, clip_range], MATH.md (4.11).

    NaN and inf propagate: not checked (pure elementwise algebra).

    Parameters
    ----------
    x0 : array
        A predicted x_0.
    clip_range : float
        r > 0: the result lies in [-r, r] (diffusers' ``clip_sample_range``).

    Returns
    -------
    array like x0
    """
    check_array("x0", x0)
    check_finite_scalar("clip_range", clip_range, low=0.0, low_open=True)
    xp = array_namespace(x0)
    return xp.clip(x0, -clip_range, clip_range)


def dynamic_threshold(x0, ratio: float = 0.995, max_value: float = 1.0):
    """Imagen's dynamic thresholding (Saharia et al. 2022), MATH.md (4.12): per sample,
    s = clip(quantile_ratio(|x_0|), 1, max_value) over all non-batch entries, then
    x_0 <- clip(x_0, -s, s) / s.  The quantile interpolates linearly between order
    statistics (NumPy's default method).  With ``max_value = 1`` this is static clipping.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    x0 : array (N, ...)
        A predicted x_0.
    ratio : float
        The quantile of |x_0| per sample, in (0, 1] (diffusers' ``dynamic_thresholding_ratio``).
    max_value : float
        The largest threshold s (>= 1; diffusers' ``sample_max_value``).

    Returns
    -------
    array like x0
        Values in [-1, 1].
    """
    check_array("x0", x0, min_ndim=1)
    check_finite_scalar("ratio", ratio, low=0, high=1)
    check_finite_scalar("max_value", max_value, low=1.0)
    xp = array_namespace(x0)
    n = x0.shape[0]
    flat = xp.sort(xp.abs(xp.reshape(x0, (n, -1))), axis=1)  # (N, D) sorted
    d = flat.shape[1]
    pos = ratio * (d - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, d - 1)
    frac = pos - lo
    s = flat[:, lo] * (1.0 - frac) + flat[:, hi] * frac  # (N,)
    s = xp.clip(s, 1.0, float(max_value))
    s = bcast(s, x0)
    return xp.clip(x0, -s, s) / s
