"""The whole bound of a discrete-time model, per sample, with every term and three
estimators; MATH.md (5.1), (5.13), (5.14)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validate import check_finite_scalar, check_int
from ..backend import array_namespace, asarray_like, check_rng, standard_normal, to_numpy
from ..forward import q_sample
from ..schedules import Schedule
from ..variance import VARIANCE_TYPES, check_model_output, split_learned
from ._common import _check_bins, _check_choice, _check_model, _check_x0, _dims
from .gaussian import _check_on_grid
from .importance import ImportanceState, importance_sample, importance_update
from .terms import bits_per_dim, prior_term, vlb_term

__all__ = ["NLLBound", "nll_bound"]


# ---------------------------------------------------------------------------- model calls
def _call(model, x_t, t, variance_type):
    """Model outputs at (x_t, t) as (prediction, var_output or None), checked once by
    :func:`refdiff.variance.check_model_output` (a NaN names the timesteps where it appeared)."""
    xp = array_namespace(x_t)
    t_arr = xp.full((x_t.shape[0],), int(t), dtype=xp.int64) if isinstance(t, (int, np.integer)) else t
    out = check_model_output(model(x_t, t_arr), x_t, variance_type, t=t_arr)
    return split_learned(out, x_t, variance_type)


def _t_desc(t):
    return int(t) if isinstance(t, (int, np.integer)) else sorted(set(int(v) for v in np.asarray(to_numpy(t)).ravel()))


# ---------------------------------------------------------------------------- the whole bound
@dataclass(frozen=True, eq=False)
class NLLBound:
    """The negative ELBO of a batch of data, per sample, with its terms (MATH.md (5.1)).

    All ``*_nats`` arrays are nats summed over the data dimensions, in the data's
    namespace; ``*_bpd`` properties divide by D ln 2 (MATH.md (5.11)).

    total_nats, bits_per_dim : (N,)   the bound at one draw of x_t per term (full), or its
                                       estimate over sampled t (MC estimators)
    prior_nats : (N,)                 L_T, (5.3)
    decoder_nats : (N,) or None       L_0 = -log p(x_0 | x_1) (full and uniform estimators)
    terms_nats : (N, T) or None       column 0 = L_0, column t >= 1 = the KL term at index t
                                       (full estimator)
    t_samples : (n_t, N) host int64   sampled timesteps (MC estimators)
    term_samples : (n_t, N)           L at the sampled t, nats (MC estimators)
    weights : (n_t, N) host float64   1 / (T p_t) (importance; ones for uniform)
    std_error_nats : (N,) or None     standard error of total_nats over the n_t draws (n_t >= 2)
    importance_state                  the updated state (importance estimator)
    conventions : dict                units, data range, bins, time convention, choices made

    Returned by :func:`nll_bound`; ``bpd`` and ``nats`` are batch means (Python floats).

    Parameters
    ----------
    total_nats, bits_per_dim, prior_nats, decoder_nats, terms_nats
        As above.
    dims : int
        The number of data dimensions D.
    estimator : {"full", "uniform", "importance"}
        The estimator that produced the bound.
    t_samples, term_samples, weights, std_error_nats, importance_state, conventions
        As above (None where they do not apply).
    """

    total_nats: object
    bits_per_dim: object
    prior_nats: object
    dims: int
    estimator: str
    decoder_nats: object = None
    terms_nats: object = None
    t_samples: np.ndarray | None = None
    term_samples: object = None
    weights: np.ndarray | None = None
    std_error_nats: object = None
    importance_state: ImportanceState | None = None
    conventions: dict = field(default_factory=dict)

    def _bpd(self, a):
        return None if a is None else bits_per_dim(a, self.dims)

    @property
    def prior_bpd(self):
        return self._bpd(self.prior_nats)

    @property
    def decoder_bpd(self):
        return self._bpd(self.decoder_nats)

    @property
    def terms_bpd(self):
        return self._bpd(self.terms_nats)

    @property
    def bpd(self) -> float:
        """The batch mean of :attr:`bits_per_dim`, a Python float."""
        xp = array_namespace(self.bits_per_dim)
        return float(xp.mean(self.bits_per_dim))

    @property
    def nats(self) -> float:
        """The batch mean of :attr:`total_nats`, a Python float."""
        xp = array_namespace(self.total_nats)
        return float(xp.mean(self.total_nats))

    def summary(self) -> str:
        """A few lines: the total and each term as batch means with their standard error over
        the N samples (data and Monte Carlo noise together), in nats and bits/dim."""
        xp = array_namespace(self.total_nats)

        def mean_se(a):
            n = a.shape[0]
            se = float(xp.std(a, correction=1)) / math.sqrt(n) if n > 1 else float("nan")
            return f"{float(xp.mean(a)):.6g} ± {se:.2g} nats"

        D_ln2 = self.dims * math.log(2.0)
        lines = [f"negative ELBO ({self.estimator}): {mean_se(self.total_nats)} = {self.bpd:.6g} ± "
                 f"{float(xp.std(self.total_nats, correction=1)) / math.sqrt(self.total_nats.shape[0]) / D_ln2:.2g}"
                 f" bits/dim (D = {self.dims}, N = {self.total_nats.shape[0]})",
                 f"  prior L_T: {mean_se(self.prior_nats)}"]
        if self.decoder_nats is not None:
            lines.append(f"  decoder L_0: {mean_se(self.decoder_nats)}")
            lines.append(f"  KL terms t >= 1: {mean_se(self.total_nats - self.prior_nats - self.decoder_nats)}")
        return "\n".join(lines)


def nll_bound(model, schedule: Schedule, x0, *, rng: np.random.Generator, prediction_type: str = "epsilon",
              variance_type: str = "fixed_small", bins: int = 256, cdf: str = "exact", decoder: str = "discretized",
              estimator: str = "full", n_t: int = 1, importance_state: ImportanceState | None = None,
              uniform_prob: float = 1e-3, clip_denoised: bool = False, fixed_large_t0: str = "beta_tilde_1") -> NLLBound:
    """The variational bound on -log p(x_0), per sample, with every term, MATH.md (5.1)-(5.14).

    ``-log p(x_0) <= L_T + sum_{t=1}^{T-1} L_t + L_0`` (0-based indices; (5.1)), with the
    prior L_T (5.3), the KL terms L_t (5.4) of the reverse model (mean (5.5), variance
    ``variance_type`` (5.6)-(5.7)) and the decoder L_0 (5.9) or (5.10).  With the exact
    reverse model its expectation is H(q(x_0)) + KL(q(x_T) || N(0, I)),
    MATH.md (5.18).

    Data and units: ``x0`` float64 of shape (N, ...) (NCHW or (N, D)).  With
    ``decoder="discretized"`` x0 holds levels in [-1, 1] on ``bins`` levels (8-bit images:
    ``k / 127.5 - 1``, bins = 256; 8x8 digits: bins = 17) and the result is a discrete
    negative log-likelihood bound: no dequantization offset is needed to compare with
    discrete models (for continuous densities see :func:`continuous_to_discrete_bpd`,
    (5.12)).  With ``decoder="gaussian"`` it bounds a continuous density's -log p.  All
    terms are nats summed over the D dimensions; bits/dim = nats / (D ln 2) (5.11).

    estimator
        ``"full"``: the sum over all T terms, each evaluated at one draw x_t ~ q(x_t | x_0)
        (so the total is itself an unbiased one-sample estimate of the bound, random through
        x_t; average runs or samples for its expectation); draws T noise arrays of x0's shape
        from ``rng``, for t = 0, 1, ..., T-1 in that order (T model calls).
        ``"uniform"``: ``L_T + L_0 + (T - 1) L_t`` with t ~ U{1..T-1} per sample (5.13): the
        decoder L_0, whose size (several nats times T if it were sampled with probability
        1/T) would dominate the variance, is always evaluated; the KL terms are averaged over
        ``n_t`` draws of t.  Randomness: the decoder's noise, then per draw t
        (``rng.integers``) and noise; 1 + n_t model calls.
        ``"importance"``: ``L_T + L_t / p_t`` with t ~ p from ``importance_state``
        (default: a fresh one, hence uniform), (5.14); the updated state is returned.

    The model is ``model(x_t, t)`` with ``t`` an int64 (N,) array of 0-based indices; for
    learned variances it returns prediction and variance output concatenated along axis 1
    (:mod:`refdiff.variance`, the same model that ``refdiff.sample`` takes).  A model
    output with NaN raises FloatingPointError naming t.  With zero terminal SNR
    (``alpha_bar[T-1] = 0``) an epsilon-prediction model is refused (ValueError): it cannot
    give x0 at the last step.

    Parameters
    ----------
    model : callable
        ``model(x_t, t)`` as above.
    schedule : Schedule
        The discrete schedule.
    x0 : array (N, ...)
        float64 data, as above.
    rng : numpy.random.Generator
        The source of every noise array and sampled t (order above).
    prediction_type : {"epsilon", "sample", "v_prediction"}
        What the model predicts.
    variance_type : str, default "fixed_small"
        One of refdiff.VARIANCE_TYPES (MATH.md (5.6), (5.7)).
    bins : int, default 256
        The number of data levels (>= 2; discretized decoder).
    cdf : {"exact", "tanh"}
        The normal CDF of the discretized decoder.
    decoder : {"discretized", "gaussian"}
        The decoder term L_0, as above.
    estimator : {"full", "uniform", "importance"}
        As above.
    n_t : int, default 1
        Draws of t per sample (MC estimators).
    importance_state : ImportanceState, optional
        The t-sampler's history (importance estimator); its T must be the schedule's.
    uniform_prob : float, default 1e-3
        The uniform mixing weight of the importance sampler.
    clip_denoised : bool, default False
        Clip x0_hat to [-1, 1] in the reverse mean.
    fixed_large_t0 : {"beta_tilde_1", "beta_0"}
        The "fixed_large" variance at t = 0.

    Returns
    -------
    NLLBound

    Raises
    ------
    TypeError
        If ``schedule`` is not a refdiff Schedule, or ``x0`` is not float64.
    ValueError
        If a choice is unknown, x0 is off the grid (discretized decoder), ``n_t`` < 1,
        ``importance_state`` is for another T, or the model's output has the wrong shape.
    FloatingPointError
        If the model's output is not finite.
    """
    _check_model(model)
    _check_x0(x0)
    check_finite_scalar("uniform_prob", uniform_prob, low=0.0, high=1.0)
    _check_choice("estimator", estimator, ("full", "uniform", "importance"))
    _check_choice("prediction_type", prediction_type, ("epsilon", "sample", "v_prediction"))
    _check_choice("variance_type", variance_type, VARIANCE_TYPES)
    _check_choice("decoder", decoder, ("discretized", "gaussian"))
    _check_bins(bins)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    if prediction_type == "epsilon" and schedule.alpha_bars[-1] == 0.0:
        raise ValueError(
            "nll_bound: the schedule has zero terminal SNR (alpha_bar[T-1] = 0), where an epsilon-prediction model "
            "gives no x0 (x0 = (x_t - sigma eps) / alpha divides by alpha = 0, so the last term is inf); use "
            "prediction_type 'v_prediction' or 'sample', or a schedule without zero terminal SNR")
    rng = check_rng(rng)
    check_int("n_t", n_t, min=1)
    if decoder == "discretized":
        _check_on_grid(x0, bins, 1e-3)
    xp = array_namespace(x0)
    T, D = schedule.T, _dims(x0)
    opts = dict(prediction_type=prediction_type, variance_type=variance_type, decoder=decoder, bins=bins, cdf=cdf,
                clip_denoised=clip_denoised, fixed_large_t0=fixed_large_t0)

    def term(t):
        noise = standard_normal(rng, x0.shape, like=x0)
        x_t = q_sample(schedule, x0, t, noise)
        pred, var_out = _call(model, x_t, t, variance_type)
        return vlb_term(schedule, x0, x_t, t, pred, var_out, **opts)

    prior = prior_term(schedule, x0)
    conventions = _conventions(opts, T, D)
    if estimator == "full":
        terms = xp.stack([term(t) for t in range(T)], axis=1)  # T x (N,) -> (N, T)
        total = prior + xp.sum(terms, axis=1)
        return NLLBound(total, bits_per_dim(total, D), prior, D, estimator, decoder_nats=terms[:, 0], terms_nats=terms,
                        conventions=conventions)
    state = importance_state if importance_state is not None else ImportanceState.init(T)
    if estimator == "importance" and state.T != T:
        raise ValueError(f"importance_state is for T = {state.T}, the schedule has T = {T}")
    return _sampled_bound(term, estimator, state, rng, prior, x0, n_t, uniform_prob, conventions)


def _conventions(opts, T, D):
    """The conventions dict of an :class:`NLLBound`."""
    disc = opts["decoder"] == "discretized"
    data = f", levels -1 + 2k/{opts['bins'] - 1} in [-1, 1], edge bins to +-inf, cdf={opts['cdf']}" if disc else ", continuous data"
    return {
        "units": "nats summed over dimensions; bits_per_dim = nats / (D ln 2)",
        "time": "0-based: index t is paper step t+1; terms_nats[:, 0] = L_0 (decoder), [:, t] = KL at index t",
        "data": f"{opts['decoder']} decoder" + data,
        "prediction_type": opts["prediction_type"], "variance_type": opts["variance_type"],
        "fixed_large_t0": opts["fixed_large_t0"], "clip_denoised": opts["clip_denoised"], "T": T, "D": D,
    }


def _sampled_bound(term, estimator, state, rng, prior, x0, n_t, uniform_prob, conventions):
    """The uniform (L_T + L_0 + (T-1) L_t, t >= 1) or importance-sampled (L_T + L_t / p_t)
    estimate of the bound, averaged over ``n_t`` draws of t, MATH.md (5.13), (5.14)."""
    xp = array_namespace(x0)
    T, N, D = state.T, x0.shape[0], _dims(x0)
    base, scale, decoder_nats = prior, float(T), None
    if estimator == "uniform":
        decoder_nats = term(0)
        base, scale = prior + decoder_nats, float(T - 1)
    t_all, w_all, samples = [], [], []
    for _ in range(n_t):
        if estimator == "uniform":
            t_h = rng.integers(1, T, size=N).astype(np.int64) if T > 1 else np.zeros(N, dtype=np.int64)
            w_h = np.ones(N)
        else:
            t_h, w_h = importance_sample(state, rng, N, uniform_prob)
        samples.append(term(asarray_like(t_h, x0, dtype=xp.int64)) if scale > 0 else 0.0 * prior)
        t_all.append(t_h)
        w_all.append(w_h)
    t_s, w_s = np.stack(t_all), np.stack(w_all)  # (n_t, N)
    L = xp.stack(samples)  # (n_t, N)
    est = base + scale * asarray_like(w_s, x0) * L  # (n_t, N): unbiased estimates of the bound
    total = xp.mean(est, axis=0)
    se = xp.std(est, axis=0, correction=1) / math.sqrt(n_t) if n_t > 1 else None
    new_state = importance_update(state, t_s, L) if estimator == "importance" else None
    return NLLBound(total, bits_per_dim(total, D), prior, D, estimator, t_samples=t_s, term_samples=L, weights=w_s,
                    std_error_nats=se, importance_state=new_state, conventions=conventions, decoder_nats=decoder_nats)
