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

from .backend import array_namespace, bcast
from .parameterization import PREDICTION_TYPES, convert, to_eps_x0
from .schedules import alpha_sigma

__all__ = ["GUIDANCE_CONVENTIONS", "cfg_convert_scale", "cfg_combine", "rescale_guidance", "cfg_model", "guided_model",
           "classifier_guided_eps", "classifier_guided_model", "mixture_classifier_grad",
           "network_classifier_grad"]

GUIDANCE_CONVENTIONS = ("w", "1+w")


def _check_convention(convention):
    if convention not in GUIDANCE_CONVENTIONS:
        raise ValueError(f"unknown guidance convention {convention!r}; valid: 'w' (eps_u + w (eps_c - eps_u)), "
                         f"'1+w' ((1 + w) eps_c - w eps_u)")


def _check_scale(scale, name="guidance_scale"):
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{name} = {scale!r} must be a finite number")
    return float(scale)


def cfg_convert_scale(scale, from_convention, to_convention):
    """Convert a CFG scale between the conventions, MATH.md (12.3): ``w = 1 + w'``, where
    ``w`` is the scale of "w" (eps_u + w (eps_c - eps_u); the PyTorch library's
    ``guidance_scale``) and ``w'`` that of "1+w" (Ho & Salimans 2022: (1 + w') eps_c - w' eps_u)."""
    _check_convention(from_convention)
    _check_convention(to_convention)
    s = _check_scale(scale)
    if from_convention == to_convention:
        return s
    return s + 1.0 if from_convention == "1+w" else s - 1.0


def cfg_combine(out_uncond, out_cond, guidance_scale, convention="w"):
    """The classifier-free guidance combination, MATH.md (12.2):
    ``"w"``: ``u + w (c - u)`` (w = 1: conditional, w = 0: unconditional);
    ``"1+w"``: ``(1 + w') c - w' u`` (w' = 0: conditional, w' = -1: unconditional)."""
    _check_convention(convention)
    w = cfg_convert_scale(guidance_scale, convention, "w")
    if tuple(out_uncond.shape) != tuple(out_cond.shape):
        raise ValueError(f"shape mismatch: out_uncond {tuple(out_uncond.shape)}, out_cond {tuple(out_cond.shape)}")
    return out_uncond + w * (out_cond - out_uncond)


def rescale_guidance(out_cfg, out_cond, guidance_rescale=0.0):
    """Guidance rescale (Lin et al. 2023, eq. 15-16), MATH.md (12.4): per sample,
    ``x_rescaled = out_cfg * std(out_cond) / std(out_cfg)`` (std over all non-batch entries)
    and ``phi x_rescaled + (1 - phi) out_cfg`` with phi = ``guidance_rescale`` in [0, 1].
    The ratio of standard deviations does not depend on their ddof."""
    phi = _check_scale(guidance_rescale, "guidance_rescale")
    if not 0.0 <= phi <= 1.0:
        raise ValueError(f"guidance_rescale = {phi!r} is outside [0, 1]")
    if phi == 0.0:
        return out_cfg
    xp = array_namespace(out_cfg, out_cond)
    n = out_cfg.shape[0]
    std = lambda a: xp.std(xp.reshape(a, (n, -1)), axis=1)  # (N, ...) -> (N, D) -> (N,)  # noqa: E731
    ratio = bcast(std(out_cond) / std(out_cfg), out_cfg)
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
    refdiff network)."""
    _check_convention(convention)
    _check_scale(guidance_scale)
    _check_scale(guidance_rescale, "guidance_rescale")
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
    control image or inpainting mask is seen by both branches)."""
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
    ``grad log p_t(x) + scale * grad log p_t(y | x)``; scale 1 is the score of p_t(x | y)."""
    return eps - (_check_scale(scale, "scale") * bcast(sigma, eps)) * grad_log_p_y


def classifier_guided_model(model, grad_log_p_y, y, scale, schedule, prediction_type="epsilon"):
    """A plain ``model(x, t)`` with classifier guidance applied, MATH.md (12.5); its output
    is of the same ``prediction_type`` as ``model``'s.  ``grad_log_p_y(x, t, y)`` returns
    grad_x log p(y | x_t) (see :func:`mixture_classifier_grad`,
    :func:`network_classifier_grad`); alpha_t, sigma_t come from
    ``refdiff.alpha_sigma(schedule, t)``."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
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
    (the oracle's ``grad_log_class_posterior``, MATH.md (6.11))."""

    def grad(x, t, y):
        alpha, sigma = alpha_sigma(schedule, t, x)
        return mixture.grad_log_class_posterior(x, alpha, sigma, y)

    return grad


def network_classifier_grad(forward, backward):
    """grad_x log softmax(logits)[y] of a hand-written classifier network, MATH.md (12.6):
    with ``forward(x, t) -> (logits (N, K), cache)`` and ``backward(cache, dlogits) -> dx``
    (e.g. ``lambda c, d: net.backward(params, c, d)[1]`` for refdiff.nn models whose
    ``backward(params, cache, dout)`` returns ``(grads, dx)``), the upstream gradient of
    sum_n log p(y_n | x_n) is ``dlogits = onehot(y) - softmax(logits)``."""

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
