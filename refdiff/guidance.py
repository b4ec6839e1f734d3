"""Guidance: classifier-free guidance (both scale conventions), guidance rescale and
classifier guidance, MATH.md chapter 12.

Guidance combines scores (equivalently eps predictions, eps = -sigma_t * score, MATH.md
(4.5)) of a conditional and an unconditional model.  Every combination here has
coefficients summing to 1 (CFG) or adds a gradient term (classifier guidance); for CFG this
makes it commute with the affine conversions between prediction types at fixed x_t, so
raw model outputs of any one prediction type may be combined directly (MATH.md (12.3)).

Time convention: the models' own (0-based discrete indices, or continuous t in (0, 1]
with t = 0 data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ._validate import _is_array, check_array, check_coef, check_same_shape
from .backend import array_namespace, bcast
from .parameterization import PREDICTION_TYPES, convert, to_eps_x0
from .schedules import alpha_sigma

__all__ = ["GUIDANCE_CONVENTIONS", "cfg_convert_scale", "cfg_combine", "rescale_guidance", "cfg_model", "guided_model",
           "classifier_guided_eps", "classifier_guided_model", "mixture_classifier_grad",
           "network_classifier_grad"]

GUIDANCE_CONVENTIONS = ("w", "1+w")


def _check_convention(convention, name="convention"):
    if not isinstance(convention, str) or convention not in GUIDANCE_CONVENTIONS:
        raise ValueError(f"unknown guidance convention {name} = {convention!r}; valid: 'w' (eps_u + w (eps_c - eps_u)), "
                         f"'1+w' ((1 + w) eps_c - w eps_u)")


def _check_scale(scale, name="guidance_scale"):
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a finite number, got {scale!r}")
    if not math.isfinite(scale):
        raise ValueError(f"{name} = {scale!r} must be a finite number")
    return float(scale)


def _check_callable(name, f, sig):
    if not callable(f):
        raise TypeError(f"{name} must be a callable {sig}, got {type(f).__name__}")


def _check_label(name, y):
    """An int, an integer array (N,) or a condition mapping."""
    if isinstance(y, Mapping):
        return
    if isinstance(y, (bool, np.bool_)) or not (isinstance(y, (int, np.integer)) or _is_array(y)):
        raise TypeError(f"{name} must be an int, an integer array (N,) or a condition mapping, got {y!r}")
    if _is_array(y):
        check_array(name, y, dtype="int", ndim=1)


def _check_schedule(schedule):
    from .schedules import Schedule, _ContinuousVP

    if not isinstance(schedule, (Schedule, _ContinuousVP)):
        raise TypeError(f"schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")


def _check_pair(**arrays):
    """Real floating, non-empty arrays of one shape."""
    for k, v in arrays.items():
        check_array(k, v)
    check_same_shape(**arrays)


def cfg_convert_scale(scale, from_convention, to_convention):
    """Convert a CFG scale between the conventions, MATH.md (12.3): ``w = 1 + w'``, where
    ``w`` is the scale of "w" (eps_u + w (eps_c - eps_u); the PyTorch library's
    ``guidance_scale``) and ``w'`` that of "1+w" (Ho & Salimans 2022: (1 + w') eps_c - w' eps_u).

    Parameters
    ----------
    scale : float
        A finite scale in ``from_convention``.
    from_convention, to_convention : {"w", "1+w"}
        The conventions.

    Returns
    -------
    float
        The same guidance in ``to_convention``.

    Raises
    ------
    ValueError
        If a convention is unknown or the scale is not a finite number.
    """
    _check_convention(from_convention, "from_convention")
    _check_convention(to_convention, "to_convention")
    s = _check_scale(scale, "scale")
    if from_convention == to_convention:
        return s
    return s + 1.0 if from_convention == "1+w" else s - 1.0


def cfg_combine(out_uncond, out_cond, guidance_scale, convention="w"):
    """The classifier-free guidance combination, MATH.md (12.2):
    ``"w"``: ``u + w (c - u)`` (w = 1: conditional, w = 0: unconditional);
    ``"1+w"``: ``(1 + w') c - w' u`` (w' = 0: conditional, w' = -1: unconditional).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    out_uncond, out_cond : array
        The unconditional and conditional outputs (same shape, same prediction type).
    guidance_scale : float
        The finite scale, w or w' by ``convention``.
    convention : {"w", "1+w"}
        The scale convention (:func:`cfg_combine`).

    Returns
    -------
    array like out_cond
        The guided output.

    Raises
    ------
    ValueError
        If the shapes differ, the convention is unknown or the scale is not finite.
    """
    _check_convention(convention)
    _check_scale(guidance_scale)
    w = cfg_convert_scale(guidance_scale, convention, "w")
    _check_pair(out_uncond=out_uncond, out_cond=out_cond)
    return out_uncond + w * (out_cond - out_uncond)


def rescale_guidance(out_cfg, out_cond, guidance_rescale=0.0):
    """Guidance rescale (Lin et al. 2023, eq. 15-16), MATH.md (12.4): per sample,
    ``x_rescaled = out_cfg * std(out_cond) / std(out_cfg)`` (std over all non-batch entries)
    and ``phi x_rescaled + (1 - phi) out_cfg`` with phi = ``guidance_rescale`` in [0, 1].
    The ratio of standard deviations does not depend on their ddof.  A sample whose
    ``out_cfg`` is constant (std 0, e.g. an untrained network's zero-initialised output)
    has no scale to match and is left unrescaled (ratio 1) instead of giving 0/0.  NaN and
    inf propagate: not checked.

    Parameters
    ----------
    out_cfg : array (N, ...)
        The guided output (:func:`cfg_combine`).
    out_cond : array like out_cfg
        The conditional output.
    guidance_rescale : float, default 0.0
        phi in [0, 1]; 0 returns ``out_cfg`` unchanged.

    Returns
    -------
    array like out_cfg

    Raises
    ------
    ValueError
        If ``guidance_rescale`` is not a finite number in [0, 1].
    """
    phi = _check_scale(guidance_rescale, "guidance_rescale")
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"guidance_rescale = {phi!r} is outside [0, 1]")
    _check_pair(out_cfg=out_cfg, out_cond=out_cond)
    if phi == 0.0:
        return out_cfg
    xp = array_namespace(out_cfg, out_cond)
    n = out_cfg.shape[0]
    std = lambda a: xp.std(xp.reshape(a, (n, -1)), axis=1)  # (N, ...) -> (N, D) -> (N,)  # noqa: E731
    s_cfg, s_cond = std(out_cfg), std(out_cond)
    flat = s_cfg == 0  # a constant sample (e.g. an untrained net's zero-initialised output): ratio 1
    ratio = bcast(xp.where(flat, xp.ones_like(s_cfg), s_cond / xp.where(flat, xp.ones_like(s_cfg), s_cfg)), out_cfg)
    return phi * (out_cfg * ratio) + (1.0 - phi) * out_cfg


def cfg_model(model, y, guidance_scale, null_label, *, convention="w", guidance_rescale=0.0):
    """A plain ``model(x, t)`` applying classifier-free guidance, MATH.md (12.2)-(12.4), (12.8).

    ``model(x, t, c)`` is a conditional model; it is called twice per evaluation, with the
    condition ``y`` and with ``null_label``, and the outputs are combined by
    :func:`cfg_combine` and, when ``guidance_rescale`` > 0, :func:`rescale_guidance`.

    Either class labels: ``y`` an integer array (N,) or an int for all samples, and
    ``null_label`` the unconditional (null) class, e.g. ``num_classes`` for refdiff's
    networks; or condition mappings (:mod:`refdiff.nn.conditions`): ``y`` the condition and
    ``null_label`` the same condition with the guided kinds replaced by their nulls
    (MATH.md (12.7); kinds kept in both are not guided; :func:`guided_model` builds it for a
    refdiff network).

    Parameters
    ----------
    model : callable
        ``model(x, t, c)``, a conditional model.
    y : int, integer array (N,) or condition mapping
        The condition.
    guidance_scale : float
        The finite scale in ``convention``.
    null_label : int, integer array (N,) or condition mapping
        The unconditional condition, of the same kind as ``y``.
    convention : {"w", "1+w"}
        The scale convention (:func:`cfg_combine`).
    guidance_rescale : float, default 0.0
        phi of :func:`rescale_guidance`, in [0, 1].

    Returns
    -------
    callable
        A plain ``model(x, t)``.

    Raises
    ------
    ValueError
        If the convention is unknown or a scale is not finite (a rescale outside [0, 1]
        raises at the first call).
    TypeError
        If ``null_label`` is None, or ``y`` and ``null_label`` are not both mappings or both labels.
    """
    _check_callable("model", model, "model(x, t, c)")
    _check_convention(convention)
    _check_scale(guidance_scale)
    _check_scale(guidance_rescale, "guidance_rescale")
    if null_label is not None:
        _check_label("null_label", null_label)
    _check_label("y", y)
    if null_label is None:
        raise TypeError("cfg_model needs null_label, the label of the unconditional (null) class "
                        "(or, for a cond mapping, the unconditional cond mapping)")
    if isinstance(y, Mapping) != isinstance(null_label, Mapping):
        raise TypeError("cfg_model: y and null_label must both be condition mappings or both class labels, got "
                        f"{type(y).__name__} and {type(null_label).__name__}")

    def labels(v, x):
        xp = array_namespace(x)
        if isinstance(v, int) and not isinstance(v, bool):
            return xp.full((x.shape[0],), v, dtype=xp.int64)
        return v

    def guided(x, t):
        out_c = model(x, t, labels(y, x))
        out_u = model(x, t, labels(null_label, x))
        return rescale_guidance(cfg_combine(out_u, out_c, guidance_scale, convention), out_c, guidance_rescale)

    return guided


def guided_model(net, params, cond, guidance_scale, guided=None, *, convention="w", guidance_rescale=0.0):
    """Classifier-free guidance of a refdiff network per condition kind, MATH.md (12.7), MATH.md (12.8):
    a plain ``model(x, t)`` = ``cfg_combine(f(x, t, c_null), f(x, t, c), w)`` with ``f =
    net.apply(params, ...)``, ``c = cond`` and ``c_null`` = ``cond`` with the kinds in
    ``guided`` (default: every droppable kind: class, tokens, control) replaced by their
    nulls and every other kind kept (e.g. ``guided=("tokens",)``: the prompt is guided, the
    control image or inpainting mask is seen by both branches).

    Parameters
    ----------
    net : refdiff.nn network
        With ``apply``, ``cond_spec`` and ``null_cond``.
    params : dict
        Its parameters.
    cond : condition mapping, label array or None
        The condition (validated against each batch at every call).
    guidance_scale : float
        The finite scale in ``convention``.
    guided : sequence of str, optional
        The condition kinds that are guided (default: every droppable kind).
    convention : {"w", "1+w"}
        The scale convention (:func:`cfg_combine`).
    guidance_rescale : float, default 0.0
        phi of :func:`rescale_guidance`, in [0, 1].

    Returns
    -------
    callable
        A plain ``model(x, t)``.

    Raises
    ------
    ValueError
        If ``guidance_scale`` is not a finite number (condition errors raise at the call).
    """
    for attr in ("apply", "cond_spec", "null_cond"):
        if not hasattr(net, attr):
            raise TypeError(f"net must be a refdiff network (with apply, cond_spec, null_cond), got {type(net).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of the network's parameters, got {type(params).__name__}")
    _check_convention(convention)
    _check_scale(guidance_rescale, "guidance_rescale")
    _check_scale(guidance_scale)

    def model(x, t, c):
        return net.apply(params, x, t, c)

    def fn(x, t):
        xp, n = array_namespace(x), x.shape[0]
        dtype = params[next(iter(params))].dtype
        c = net.cond_spec.validate(cond, n, xp, dtype, "guided_model")
        return cfg_model(model, c, guidance_scale, net.null_cond(c, n, guided, xp=xp, dtype=dtype),
                         convention=convention, guidance_rescale=guidance_rescale)(x, t)

    return fn


def classifier_guided_eps(eps, grad_log_p_y, sigma, scale=1.0):
    """Classifier guidance (Dhariwal & Nichol 2021) as an eps correction, MATH.md (12.1), (12.5):
    ``eps_hat = eps - scale * sigma_t * grad_x log p(y | x_t)``, i.e. the score
    ``grad log p_t(x) + scale * grad log p_t(y | x)``; scale 1 is the score of p_t(x | y).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    eps : array (N, ...)
        The unconditional noise prediction.
    grad_log_p_y : array like eps
        grad_x log p(y | x_t).
    sigma : float or array (N,) or (N, 1, ..., 1)
        sigma_t.
    scale : float, default 1.0
        The finite guidance scale.

    Returns
    -------
    array like eps
        The guided eps_hat.

    Raises
    ------
    ValueError
        If ``scale`` is not a finite number.
    """
    _check_pair(eps=eps, grad_log_p_y=grad_log_p_y)
    check_coef("sigma", sigma, eps)
    return eps - (_check_scale(scale, "scale") * bcast(sigma, eps)) * grad_log_p_y


def classifier_guided_model(model, grad_log_p_y, y, scale, schedule, prediction_type="epsilon"):
    """A plain ``model(x, t)`` with classifier guidance applied, MATH.md (12.5); its output
    is of the same ``prediction_type`` as ``model``'s.  ``grad_log_p_y(x, t, y)`` returns
    grad_x log p(y | x_t) (see :func:`mixture_classifier_grad`,
    :func:`network_classifier_grad`); alpha_t, sigma_t come from
    ``refdiff.alpha_sigma(schedule, t)``.

    Parameters
    ----------
    model : callable
        ``model(x, t)``, unconditional, of ``prediction_type``.
    grad_log_p_y : callable
        ``grad_log_p_y(x, t, y)``.
    y : int or integer array (N,)
        The class to guide towards.
    scale : float
        The finite guidance scale.
    schedule : Schedule or continuous VP schedule
        Gives alpha_t and sigma_t at the model's times.
    prediction_type : str, default "epsilon"
        One of refdiff.PREDICTION_TYPES.

    Returns
    -------
    callable
        A plain ``model(x, t)``.

    Raises
    ------
    ValueError
        If ``prediction_type`` is unknown or ``scale`` is not finite.
    """
    if not isinstance(prediction_type, str) or prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
    _check_callable("model", model, "model(x, t)")
    _check_callable("grad_log_p_y", grad_log_p_y, "grad_log_p_y(x, t, y)")
    _check_label("y", y)
    _check_schedule(schedule)
    _check_scale(scale, "scale")

    def guided(x, t):
        out = model(x, t)
        alpha, sigma = alpha_sigma(schedule, t, x)
        eps, _ = to_eps_x0(out, x, alpha, sigma, prediction_type)
        eps_hat = classifier_guided_eps(eps, grad_log_p_y(x, t, y), sigma, scale)
        return convert(eps_hat, x, alpha, sigma, "epsilon", prediction_type)

    return guided


def mixture_classifier_grad(mixture, schedule):
    """The exact classifier gradient of a :class:`refdiff.GaussianMixture` as a callable
    ``grad_log_p_y(x, t, y)`` = grad_x log p(y | x_t) at the schedule's alpha_t, sigma_t
    (the oracle's ``grad_log_class_posterior``, MATH.md (6.11)).

    Parameters
    ----------
    mixture : GaussianMixture
        The data distribution, with its class labels.
    schedule : Schedule or continuous VP schedule
        Gives alpha_t and sigma_t.

    Returns
    -------
    callable
        ``grad_log_p_y(x, t, y)``.
    """
    if not callable(getattr(mixture, "grad_log_class_posterior", None)):
        raise TypeError(f"mixture must be a GaussianMixture (with grad_log_class_posterior), got {type(mixture).__name__}")
    _check_schedule(schedule)

    def grad(x, t, y):
        alpha, sigma = alpha_sigma(schedule, t, x)
        return mixture.grad_log_class_posterior(x, alpha, sigma, y)

    return grad


def network_classifier_grad(forward, backward):
    """grad_x log softmax(logits)[y] of a hand-written classifier network, MATH.md (12.6):
    with ``forward(x, t) -> (logits (N, K), cache)`` and ``backward(cache, dlogits) -> dx``
    (e.g. ``lambda c, d: net.backward(params, c, d)[1]`` for refdiff.nn models whose
    ``backward(params, cache, dout)`` returns ``(grads, dx)``), the upstream gradient of
    sum_n log p(y_n | x_n) is ``dlogits = onehot(y) - softmax(logits)``.

    Parameters
    ----------
    forward : callable
        ``forward(x, t) -> (logits (N, K), cache)``.
    backward : callable
        ``backward(cache, dlogits) -> dx``.

    Returns
    -------
    callable
        ``grad_log_p_y(x, t, y)`` with ``y`` an int or an integer array (N,).
    """
    _check_callable("forward", forward, "forward(x, t) -> (logits, cache)")
    _check_callable("backward", backward, "backward(cache, dlogits) -> dx")

    def grad(x, t, y):
        logits, cache = forward(x, t)
        xp = array_namespace(logits)
        k = logits.shape[1]
        m = xp.max(logits, axis=1, keepdims=True)
        p = xp.exp(logits - m)
        p = p / xp.sum(p, axis=1, keepdims=True)
        yy = xp.full((x.shape[0],), y, dtype=xp.int64) if isinstance(y, int) else y
        onehot = xp.astype(xp.reshape(yy, (-1, 1)) == xp.reshape(xp.arange(k), (1, k)), logits.dtype)
        return backward(cache, onehot - p)

    return grad
