"""Helpers shared by every sampler family: evaluating a model at a time, checking its
output, and converting it to (eps_hat, x0_hat).

Time convention for models: a model is a plain callable ``model(x, t)`` where ``t`` is an
array of shape (N,) in x's namespace.  With a discrete :class:`~refdiff.Schedule`, ``t``
holds 0-based indices (int64 on the grid points, float64 "continuous indices" tau in
[0, T-1] between them, MATH.md (2.15)); with a continuous VP schedule it holds times in
(0, 1].
"""

from __future__ import annotations

from ..backend import array_namespace
from ..parameterization import to_eps_x0
from ..schedules import alpha_sigma
from ..variance import check_model_output

__all__ = ["model_t", "call_model", "predict_eps_x0"]


def model_t(t, x):
    """The time argument passed to a model: ``t`` (a Python int/float or 0-d array)
    repeated to shape (N,) in x's namespace; int64 for integer t, float64 otherwise."""
    xp = array_namespace(x)
    n = x.shape[0]
    if isinstance(t, bool):
        raise TypeError("t must be a number, not a bool")
    if isinstance(t, int) or (hasattr(t, "dtype") and "int" in str(t.dtype)):
        return xp.full((n,), int(t), dtype=xp.int64)
    return xp.full((n,), float(t), dtype=xp.float64)


def call_model(model, x, t, *, step=None):
    """``model(x, model_t(t, x))`` with its output checked: same shape as ``x`` and finite.

    Errors name the step (``step``, an int loop index) and the time, so a NaN produced
    inside a loop is reported where it appeared."""
    where = f"step {step} (t = {t})" if step is not None else f"t = {t}"
    return check_model_output(model(x, model_t(t, x)), x, where=where)


def predict_eps_x0(model, x, t, schedule, prediction_type="epsilon", *, step=None):
    """(eps_hat, x0_hat) of a model at (x, t), MATH.md (4.2)-(4.6), with the alpha_t,
    sigma_t of ``schedule`` at ``t`` (see :func:`refdiff.alpha_sigma`)."""
    out = call_model(model, x, t, step=step)
    alpha, sigma = alpha_sigma(schedule, t, x)
    return to_eps_x0(out, x, alpha, sigma, prediction_type)
