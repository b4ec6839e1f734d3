"""Training objectives built on the bound: L_simple and improved-diffusion's hybrid,
MATH.md (5.15), (5.16)."""

from __future__ import annotations

from .._validate import check_array, check_finite_scalar
from ..backend import array_namespace
from ..parameterization import v_from_eps_x0
from ..schedules import Schedule, alpha_sigma
from ._common import _check_choice, _check_term, _dims, _flat_sum
from .terms import bits_per_dim, vlb_term

__all__ = ["l_simple", "hybrid_loss"]


# ---------------------------------------------------------------------------- training objectives
def l_simple(model_output, target, *, reduction: str = "mean"):
    """The unweighted MSE of a prediction against its target, per sample, MATH.md (5.15).

    For an epsilon model ``target`` is the noise: L_simple = ||eps - eps_hat||^2.
    ``reduction="mean"`` averages over the data dimensions (the DDPM and improved-diffusion
    code's mean_flat); ``"sum"`` is the paper's squared norm.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    model_output : array (N, ...)
        The prediction.
    target : array like model_output
        Its target.
    reduction : {"mean", "sum"}
        Over the data dimensions, as above.

    Returns
    -------
    array (N,)
        The per-sample loss.

    Raises
    ------
    ValueError
        If the shapes differ or ``reduction`` is unknown.
    """
    _check_choice("reduction", reduction, ("mean", "sum"))
    check_array("model_output", model_output)
    check_array("target", target)
    xp = array_namespace(model_output, target)
    if tuple(model_output.shape) != tuple(target.shape):
        raise ValueError(f"model_output has shape {tuple(model_output.shape)}, target {tuple(target.shape)}; they must match")
    s = _flat_sum((model_output - target) ** 2)
    return s / _dims(target) if reduction == "mean" else s


def hybrid_loss(schedule: Schedule, x0, x_t, t, noise, model_output, var_output, *, prediction_type: str = "epsilon",
                variance_type: str = "learned_range", lam: float = 1e-3, decoder: str = "discretized", bins: int = 256,
                cdf: str = "exact"):
    """improved-diffusion's L_hybrid = L_simple + lam L_vlb per sample, the bits-per-dimension
    hybrid, MATH.md (5.16) (``refdiff.losses.diffusion_loss(vlb_weight=lam T / ln 2)`` is the
    same objective in nats per dimension, MATH.md (14.7)):

    ``mean_dims((target - model_output)^2) + lam * T * L_t / (D ln 2)``

    where L_t (nats, :func:`vlb_term`) at the sampled 0-based t makes ``T L_t`` the
    one-sample estimate of L_vlb (5.13) and dividing by D ln 2 gives bits/dim.  With the
    default lam = 1e-3 the factor lam T is improved-diffusion's ``num_timesteps / 1000``.
    improved-diffusion applies that factor for its rescaled loss (``rescale_learned_sigmas``);
    its plain-MSE loss type adds the VLB term unscaled: ``lam = 1 / T``.  (In that code the
    VLB term sees the mean through a stop-gradient, so it trains only the variance; values
    are unaffected.)  ``target`` is ``noise``, ``x0`` or
    ``v = alpha noise - sigma x0`` for prediction_type epsilon, sample, v_prediction.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule (float64 arrays of length T).
    x0 : array (N, ...)
        The data (on the ``bins`` grid for the discretized decoder).
    x_t : array like x0
        The noised data at t.
    t : int or integer array (N,)
        0-based timesteps in [0, T-1].
    noise : array like x0
        The noise that made x_t.
    model_output : array like x0
        The model's prediction (of ``prediction_type``).
    var_output : array like x0 or None
        The model's variance output (required for the learned variance types).
    prediction_type : {"epsilon", "sample", "v_prediction"}
        What ``model_output`` predicts.
    variance_type : str, default "learned_range"
        One of refdiff.VARIANCE_TYPES (:func:`refdiff.variance.reverse_log_variance`).
    lam : float, default 1e-3
        The weight of the VLB term (finite, >= 0).
    decoder : {"discretized", "gaussian"}
        The decoder term at t = 0 (:func:`vlb_term`).
    bins : int, default 256
        The number of data levels (discretized decoder).
    cdf : {"exact", "tanh"}
        The normal CDF of the discretized decoder.

    Returns
    -------
    array (N,)
        The per-sample hybrid loss (MSE per dimension plus lam T L_t in bits/dim).

    Raises
    ------
    ValueError
        If ``prediction_type`` or another choice is unknown, ``lam`` is negative or not
        finite, or the inputs are invalid for :func:`vlb_term`.
    """
    _check_choice("prediction_type", prediction_type, ("epsilon", "sample", "v_prediction"))
    check_finite_scalar("lam", lam, low=0.0)
    _check_term(schedule, t, x0=x0, x_t=x_t, noise=noise, model_output=model_output, var_output=var_output)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "sample":
        target = x0
    else:
        alpha, sigma = alpha_sigma(schedule, t, x0)
        target = v_from_eps_x0(noise, x0, alpha, sigma)
    vb = vlb_term(schedule, x0, x_t, t, model_output, var_output, prediction_type=prediction_type,
                  variance_type=variance_type, decoder=decoder, bins=bins, cdf=cdf)
    return l_simple(model_output, target) + lam * schedule.T * bits_per_dim(vb, _dims(x0))
