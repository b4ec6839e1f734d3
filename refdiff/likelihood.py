"""Exact log-likelihoods through the probability-flow ODE, MATH.md chapter 7.

For a VP path x_t = alpha_t x_0 + sigma_t eps (t in [0, 1], **t = 0 is data**, t = 1 noise)
the probability-flow ODE dx/dt = u(x, t) = alpha'_t E[x_0|x_t] + sigma'_t E[eps|x_t] carries
p_t to p_s, and along a solution the log-density changes by minus the divergence of u
(the instantaneous change of variables).  Integrating (x, log-det) from t_eps to 1 gives

    log p_{t_eps}(x) = log N(x_1; 0, I) + int_{t_eps}^1 div u(x_t, t) dt,

in nats per sample.  The divergence is exact (the oracle's closed form, or D central
differences of a model) or Hutchinson's unbiased estimate with probes drawn once on the
host.  The integrator is the fixed-step classical Runge-Kutta step (RK4) of
:func:`refdiff.samplers.sde.rk4_step` on the augmented state (x, log-det).
"""

from __future__ import annotations

import math

import numpy as np

from .backend import array_namespace, bcast, check_finite, check_rng, rademacher, standard_normal
from ._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int
from .elbo import continuous_to_discrete_bpd
from .parameterization import PREDICTION_TYPES, to_eps_x0
from .samplers.common import call_model
from .samplers.sde import rk4_step
from .schedules import InterpolatedVP, Schedule, _ContinuousVP, time_grid

__all__ = [
    "ode_log_likelihood",
    "dequantized_bits_per_dim",
    "fd_divergence",
    "hutchinson_divergence",
    "draw_probes",
    "standard_normal_log_prob",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------- divergences
def _check_fd(f, x, fd_step):
    if not callable(f):
        raise TypeError(f"f must be a callable f(x) -> array like x, got {type(f).__name__}")
    check_array("x", x, min_ndim=1)
    check_finite_scalar("fd_step", fd_step, low=0.0, low_open=True)


def _fd_steps(x, fd_step):
    """Per-sample step h_n = fd_step * (1 + rms(x_n)), shaped (N, 1, ..., 1)."""
    xp = array_namespace(x)
    n = x.shape[0]
    rms = xp.sqrt(xp.mean(xp.reshape(x, (n, -1)) ** 2, axis=1))  # (N,)
    return bcast(fd_step * (1.0 + rms), x)  # (N,) -> (N, 1, ..., 1)


def fd_divergence(f, x, *, fd_step: float = 1e-5):
    """The divergence sum_i d f_i / d x_i of ``f: (N, ...) -> (N, ...)`` by central
    differences in each of the D coordinates, MATH.md (7.4):
    ``(f(x + h e_i) - f(x - h e_i))_i / (2h)`` with the per-sample step
    ``h = fd_step * (1 + rms(x_n))`` (truncation O(h^2), rounding O(eps_mach / h)).
    ``f`` is called once on a batch of 2 D N points.  Returns shape (N,).

    NaN and inf in ``x`` propagate: not checked.

    Parameters
    ----------
    f : callable
        ``f(x) -> array like x``.
    x : array (N, ...)
        The points.
    fd_step : float
        Relative step.

    Returns
    -------
    array (N,)
    """
    _check_fd(f, x, fd_step)
    xp = array_namespace(x)
    n = x.shape[0]
    D = math.prod(x.shape[1:])
    h = xp.reshape(_fd_steps(x, fd_step), (1, n, 1))  # (1, N, 1)
    xf = xp.reshape(x, (1, n, D))
    E = xp.reshape(xp.eye(D, dtype=x.dtype), (D, 1, D))  # (D, 1, D): basis directions
    xs = xp.concat([xf + h * E, xf - h * E], axis=0)  # (2D, N, D)
    fs = xp.reshape(f(xp.reshape(xs, (2 * D * n,) + tuple(x.shape[1:]))), (2, D, n, D))
    diag = xp.sum((fs[0, ...] - fs[1, ...]) * E, axis=2)  # (D, N): (f_i(x + h e_i) - f_i(x - h e_i))
    return xp.sum(diag, axis=0) / xp.reshape(h, (n,)) / 2.0


def draw_probes(rng, n_probes: int, shape, like, kind: str = "rademacher"):
    """Hutchinson probes of shape (n_probes, *shape) drawn on the host by ``rng``
    (``kind`` "rademacher": +-1, or "gaussian": N(0, 1)), in ``like``'s namespace;
    E[e e^T] = I for both, MATH.md (7.5).

    Parameters
    ----------
    rng : int or numpy.random.Generator
        Draws the probes.
    n_probes : int
        P.
    shape : tuple of int
        Shape of one probe set (the batch's shape).
    like : array
        Gives the namespace and dtype.
    kind : {"rademacher", "gaussian"}
        Probe distribution.

    Returns
    -------
    array (P, *shape)
    """
    check_int("n_probes", n_probes, min=1)
    if not isinstance(shape, (tuple, list)) or any(
            isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in shape):
        raise TypeError(f"shape must be a tuple of positive ints, got {shape!r}")
    if like is not None:
        check_array("like", like, allow_empty=True)
    check_choice("kind", kind, ("rademacher", "gaussian"))
    if kind == "rademacher":
        return rademacher(rng, (n_probes,) + tuple(shape), like)
    if kind == "gaussian":
        return standard_normal(rng, (n_probes,) + tuple(shape), like)
    raise ValueError(f"unknown probe {kind!r}; valid: 'rademacher', 'gaussian'")


def hutchinson_divergence(f, x, probes, *, fd_step: float = 1e-5, per_probe: bool = False):
    """Hutchinson's estimate of div f(x) = tr J_f(x), MATH.md (7.5):
    ``mean_j e_j^T J e_j`` over probes e_j (``probes`` of shape (P, N, ...)), with each
    Jacobian-vector product by a central difference ``(f(x + h e) - f(x - h e)) / (2h)``,
    ``h = fd_step * (1 + rms(x_n))``.  Unbiased for any probe with E[e e^T] = I (up to the
    O(h^2) difference error).  Returns (N,), or (P, N) with ``per_probe``.

    NaN and inf in ``x`` and ``probes`` propagate: not checked.

    Parameters
    ----------
    f : callable
        ``f(x) -> array like x``.
    x : array (N, ...)
        The points.
    probes : array (P, N, ...)
        Probe vectors with E[e e^T] = I.
    fd_step : float
        Relative step.
    per_probe : bool
        Return the (P, N) per-probe estimates instead of their mean.

    Returns
    -------
    array (N,) or (P, N)
    """
    _check_fd(f, x, fd_step)
    check_bool("per_probe", per_probe)
    check_array("probes", probes, min_ndim=2)
    if tuple(probes.shape[1:]) != tuple(x.shape):
        raise ValueError(f"probes has shape {tuple(probes.shape)} but x has shape {tuple(x.shape)}: probes must be (P, *x.shape)")
    xp = array_namespace(x)
    P, n = probes.shape[0], x.shape[0]
    if tuple(probes.shape[1:]) != tuple(x.shape):
        raise ValueError(f"probes have shape {tuple(probes.shape)}; expected (P, *x.shape) = (P, {tuple(x.shape)})")
    h = xp.reshape(_fd_steps(x, fd_step), (1,) + tuple(_fd_steps(x, fd_step).shape))  # (1, N, 1, ...)
    xs = xp.concat([xp.reshape(x, (1,) + tuple(x.shape)) + h * probes, xp.reshape(x, (1,) + tuple(x.shape)) - h * probes], axis=0)
    fs = f(xp.reshape(xs, (2 * P * n,) + tuple(x.shape[1:])))
    fs = xp.reshape(fs, (2, P, n, -1))  # (2, P, N, D)
    jvp = (fs[0, ...] - fs[1, ...]) / xp.reshape(2.0 * h, (1, n, 1))  # (P, N, D)
    est = xp.sum(jvp * xp.reshape(probes, (P, n, -1)), axis=2)  # (P, N)
    return est if per_probe else xp.mean(est, axis=0)


# ---------------------------------------------------------------------------- helpers
def standard_normal_log_prob(x):
    """log N(x; 0, I) summed over all non-batch axes, shape (N,), nats, MATH.md (7.6).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    x : array (N, ...)
        Points.

    Returns
    -------
    array (N,)
    """
    check_array("x", x, min_ndim=1)
    xp = array_namespace(x)
    n = x.shape[0]
    D = math.prod(x.shape[1:])
    return -0.5 * xp.sum(xp.reshape(x, (n, D)) ** 2, axis=1) - 0.5 * D * _LOG_2PI


def dequantized_bits_per_dim(log_likelihood, n_dims: int, *, n_bins: int = 256, data_range: float = 2.0,
                             convention: str = "levels"):
    """Bits per dimension of a continuous log-likelihood (nats, shape (N,)) of data that were
    ``n_bins``-level integers mapped affinely onto an interval of width ``data_range``
    (default: 8-bit images on [-1, 1]), MATH.md (7.7):
    ``-log p(x) / (D ln 2) + log2(1 / bin width)``, with the bin width and its
    ``convention`` of :func:`refdiff.dequantization_offset` (MATH.md (5.12)): "levels"
    (default, refdiff's data grid; +6.994 for 8-bit on [-1, 1]) or "interval" (+7, the
    score-SDE offset; +8 on [0, 1]).  With uniform dequantization the result upper-bounds
    the discrete -log2 P(k) / D in expectation over the dequantization noise.

    NaN and inf propagate: not checked.

    Parameters
    ----------
    log_likelihood : array (N,)
        Continuous log-likelihoods in nats.
    n_dims : int
        Dimensions per sample.
    n_bins : int
        Quantisation levels.
    data_range : float
        Width of the interval the levels were mapped onto.
    convention : {"levels", "interval"}
        The bin-width convention of :func:`refdiff.dequantization_offset`.

    Returns
    -------
    array (N,)
        Bits per dimension.
    """
    if isinstance(log_likelihood, (bool, np.bool_)) or not isinstance(log_likelihood, (int, float, np.integer, np.floating)):
        check_array("log_likelihood", log_likelihood, allow_empty=True)
    check_int("n_dims", n_dims, min=1)
    check_int("n_bins", n_bins, min=2)
    return continuous_to_discrete_bpd(-log_likelihood / n_dims, n_bins, convention=convention, data_range=data_range)


def _vp_of(schedule):
    if isinstance(schedule, Schedule):
        return InterpolatedVP(schedule)
    if isinstance(schedule, _ContinuousVP):
        return schedule
    raise TypeError(f"schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")


def _coeffs(vp, t: float):
    """alpha, sigma and their time derivatives at host time t (floats), MATH.md (7.2)."""
    tt = np.array([t], dtype=np.float64)
    a = float(vp.alpha(tt)[0])
    s = float(vp.sigma(tt)[0])
    da = a * float(vp.dlog_alpha_dt(tt)[0])
    ds = -a * da / s  # sigma^2 = 1 - alpha^2
    return a, s, da, ds


def _drift(model, vp, schedule, prediction_type, is_oracle):
    """u(x, t) of the PF ODE (7.3) from an oracle or a model; t a host float."""
    T = schedule.T if isinstance(schedule, Schedule) else None

    def u(x, t, step):
        a, s, da, ds = _coeffs(vp, t)
        if is_oracle:
            out = model.velocity(x, a, s, da, ds)
            check_finite(out, "oracle velocity", f"step {step} (t = {t})")
            return out
        t_model = t * T - 1.0 if T is not None else t  # continuous index for a Schedule
        out = call_model(model, x, t_model, step=step)
        eps, x0 = to_eps_x0(out, x, a, s, prediction_type)
        return da * x0 + ds * eps

    return u


# ---------------------------------------------------------------------------- the likelihood
def _check_args(x0, t_eps, vp, n_steps, divergence, probe, n_probes, rng, prediction_type, is_oracle, fd_step):
    check_array("x0", x0)
    if not hasattr(x0, "shape") or x0.ndim < 2:
        raise ValueError(f"x0 must have shape (N, D) or (N, C, H, W), got {getattr(x0, 'shape', type(x0).__name__)}")
    check_finite(x0, "x0")
    if not isinstance(probe, str) or probe not in ("rademacher", "gaussian"):
        raise ValueError(f"unknown probe {probe!r}; valid: 'rademacher', 'gaussian'")
    check_int("n_probes", n_probes, min=1)
    if rng is not None:
        check_rng(rng)
    if isinstance(fd_step, bool) or not isinstance(fd_step, (int, float, np.integer, np.floating)):
        raise TypeError(f"fd_step must be a real number, got {fd_step!r}")
    if t_eps is None:
        t_eps = float(vp.t_min)
    if not (isinstance(t_eps, (int, float)) and 0.0 < float(t_eps) < 1.0):
        raise ValueError(f"t_eps = {t_eps!r} must be a float in (0, 1) (t = 0 is data, t = 1 noise)")
    if isinstance(vp, InterpolatedVP) and float(t_eps) < vp.t_min:
        raise ValueError(
            f"t_eps = {t_eps!r} is below the first knot 1/T = {vp.t_min!r} of the discrete schedule's "
            f"interpolation (MATH.md (2.15)), where its linear extension can give alpha > 1; "
            f"valid range [{vp.t_min!r}, 1) (use a continuous VP for smaller t_eps)"
        )
    check_int("n_steps", n_steps, min=1)
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"unknown divergence {divergence!r}; valid: 'exact', 'hutchinson'")
    if divergence == "hutchinson":
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"unknown probe {probe!r}; valid: 'rademacher', 'gaussian'")
        check_int("n_probes", n_probes, min=1)
        if rng is None:
            raise TypeError("divergence='hutchinson' needs rng, an int seed or a numpy.random.Generator; got None")
        check_rng(rng)  # validated here; the probes are drawn by draw_probes, which converts a seed
    if not is_oracle and prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
    if not (math.isfinite(fd_step) and fd_step > 0):
        raise ValueError(f"fd_step = {fd_step!r} must be finite and > 0")
    return float(t_eps)


def _integrate(f, x, ts):
    """Classical RK4 (:func:`refdiff.samplers.sde.rk4_step`) on the augmented state
    z = [x flattened, log-det] of shape (N, D + 1) along the increasing times ``ts``,
    MATH.md (7.9); ``f(y, t, step) -> (u, div u)``.  Returns (x at ts[-1], log-det)."""
    xp = array_namespace(x)
    n = x.shape[0]
    z = xp.concat([xp.reshape(x, (n, -1)), xp.zeros((n, 1), dtype=xp.float64)], axis=1)
    for i in range(len(ts) - 1):
        t0, t1 = float(ts[i]), float(ts[i + 1])

        def augmented(zz, t, i=i):
            v, div = f(xp.reshape(zz[:, :-1], x.shape), t, i)
            return xp.concat([xp.reshape(v, (n, -1)), xp.reshape(div, (n, 1))], axis=1)

        z = rk4_step(augmented, z, t0, t1 - t0)
        check_finite(z[:, :-1], "ODE state", f"step {i} (t = {t1})")
    return xp.reshape(z[:, :-1], x.shape), z[:, -1]


def ode_log_likelihood(
    model,
    x0,
    schedule,
    *,
    prediction_type: str = "epsilon",
    t_eps: float | None = None,
    n_steps: int = 100,
    grid: str = "time_quadratic",
    divergence: str = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    rng: np.random.Generator | None = None,
    prior=None,
    fd_step: float = 1e-5,
    return_details: bool = False,
):
    """Log-likelihood of ``x0`` through the probability-flow ODE, in **nats** per sample,
    MATH.md (7.1)-(7.6):

        log p_{t_eps}(x0) = log prior(x_1) + int_{t_eps}^1 div u(x_t, t) dt,

    where x_t solves dx/dt = u(x, t) = alpha'_t E[x0|x_t] + sigma'_t E[eps|x_t] (7.3) from
    x_{t_eps} = x0.  Time: t in [t_eps, 1], **t = 0 is data**, t = 1 noise.

    model
        A model callable ``model(x, t)`` with ``prediction_type`` ("epsilon", "sample",
        "v_prediction", "score"), called with t of shape (N,): continuous indices
        tau = t T - 1 for a :class:`Schedule`, times t for a continuous VP (the
        conventions of :func:`refdiff.alpha_sigma`); or an oracle (an object with
        ``velocity`` and ``div_velocity``, e.g. :class:`refdiff.GaussianMixture`), whose exact
        velocity is used and, with ``divergence="exact"``, its closed-form divergence.
    x0
        Data, (N, D) or (N, C, H, W); the density is that of the marginal at t_eps (the
        ODE starts there), which tends to the data density as t_eps -> 0 (MATH.md (7.8)).
    schedule
        A :class:`Schedule` (through its DPM-Solver interpolation :class:`InterpolatedVP`,
        t_k = (k + 1) / T) or a continuous VP (:class:`LinearVP`, :class:`InterpolatedVP`).
    t_eps
        Start time in (0, 1); default ``vp.t_min`` (1/T for a Schedule, 1e-3 for LinearVP).
    n_steps, grid
        Fixed-step RK4 (4 drift evaluations per step) on the ``grid`` of
        :func:`refdiff.time_grid` ("time_quadratic" (default, uniform in sqrt(t): small
        steps near the data end where the drift varies fastest), "logSNR",
        "time_uniform") between t_eps and 1.  Global error O(n_steps^-4) for a smooth
        continuous VP (:class:`LinearVP`).  A :class:`Schedule`'s interpolated log alpha
        is piecewise linear, its derivative jumps at the T knots, and RK4 loses its order
        there (about 1e-3 nats at 100-200 steps for T = 1000; MATH.md (7.9)).
    divergence
        "exact": the oracle's div_velocity, or for a model D central differences (7.4)
        with step ``fd_step * (1 + rms(x))``; "hutchinson": the unbiased estimate (7.5)
        with ``n_probes`` probes per sample of kind ``probe`` ("rademacher" or "gaussian"),
        drawn once by ``rng`` on the host (shape (n_probes, *x0.shape)) and held fixed
        along the trajectory, with central-difference Jacobian-vector products.
    prior
        log-density at t = 1, a callable x -> (N,); default N(0, I) (7.6).  The true
        p_1 = N(alpha_1 mu, ...) differs from it by O(alpha_1 |mu| |x_1|) (about 1e-2 nats
        for LinearVP, alpha_1 = 6.6e-3, and O(1) data); pass e.g. the oracle's
        ``log_prob_t`` at t = 1 to remove that term.

    Returns (N,) nats; with ``return_details`` a dict with ``log_p``, ``prior_log_p``,
    ``delta_log_p`` (the divergence integral) and ``x1``.  For bits/dim see
    :func:`dequantized_bits_per_dim`.  A NaN or inf anywhere raises FloatingPointError
    naming the step.

    Parameters
    ----------
    model : callable or oracle
        ``model(x, t)`` of ``prediction_type``, or an exact oracle (its score is used).
    x0 : array (N, ...)
        The data points.
    schedule : Schedule or continuous VP
        The noise schedule.
    prediction_type : str
        What the model predicts.
    t_eps : float, optional
        The ODE's start time (default the schedule's smallest).
    n_steps : int
        RK4 steps from t_eps to 1.
    grid : str
        ``time_grid`` kind of the integration times.
    divergence : {"exact", "hutchinson"}
        Finite differences in every coordinate, or Hutchinson's estimate.
    probe : {"rademacher", "gaussian"}
        Hutchinson probe distribution.
    n_probes : int
        Hutchinson probes per sample.
    rng : int or numpy.random.Generator, optional
        Draws the probes (required for ``"hutchinson"``).
    prior : callable, optional
        ``log prior(x_1) -> (N,)`` (default standard normal).
    fd_step : float
        Relative finite-difference step.
    return_details : bool
        Also return the prior term, the divergence integral and x_1.

    Returns
    -------
    array (N,) or dict
        log p in nats per sample; with ``return_details`` a dict with ``log_p``,
        ``prior_log_p``, ``delta_log_p`` and ``x1``.
    """
    vp = _vp_of(schedule)
    is_oracle = hasattr(model, "velocity") and hasattr(model, "div_velocity")
    if not is_oracle and not callable(model):
        raise TypeError(f"model must be a callable model(x, t) or an oracle, got {type(model).__name__}")
    check_bool("return_details", return_details)
    t_eps = _check_args(x0, t_eps, vp, n_steps, divergence, probe, n_probes, rng, prediction_type, is_oracle, fd_step)
    xp = array_namespace(x0)
    x = xp.astype(x0, xp.float64)
    n = x.shape[0]
    ts = time_grid(vp, int(n_steps), grid, t_start=1.0, t_end=t_eps)[::-1]  # increasing, t_eps -> 1
    u = _drift(model, vp, schedule, prediction_type, is_oracle)
    probes = draw_probes(rng, int(n_probes), x.shape, x, probe) if divergence == "hutchinson" else None

    def f(y, t, step):
        """(u, div u) at (y, t), MATH.md (7.3)-(7.5)."""
        v = u(y, t, step)
        if divergence == "hutchinson":
            div = hutchinson_divergence(lambda z: u(z, t, step), y, probes, fd_step=fd_step)
        elif is_oracle:
            a, s, da, ds = _coeffs(vp, t)
            div = model.div_velocity(y, a, s, da, ds)
        else:
            div = fd_divergence(lambda z: u(z, t, step), y, fd_step=fd_step)
        check_finite(div, "divergence of the drift", f"step {step} (t = {t})")
        return v, div

    x, delta = _integrate(f, x, ts)
    prior_lp = standard_normal_log_prob(x) if prior is None else prior(x)
    if tuple(prior_lp.shape) != (n,):
        raise ValueError(f"prior returned shape {tuple(prior_lp.shape)}; expected ({n},)")
    check_finite(prior_lp, "prior log-density", "t = 1")
    log_p = prior_lp + delta
    if return_details:
        return {"log_p": log_p, "prior_log_p": prior_lp, "delta_log_p": delta, "x1": x}
    return log_p
