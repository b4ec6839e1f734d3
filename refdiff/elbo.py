"""The variational bound (negative ELBO) of diffusion models, term by term; MATH.md chapter 5.

Conventions
-----------
* Discrete time is 0-based (MATH.md chapter 1): array index ``t`` is paper step ``t + 1``.
  The per-step term stored at index ``t >= 1`` is KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
  in 0-based variables (the paper's L_t); index 0 holds the decoder term -log p(x_0 | x_1)
  in paper variables (the paper's L_0).  The prior term L_T is kept apart.
* Every term is in **nats, summed over the data dimensions**, one value per sample
  (shape (N,)).  Bits per dimension = nats / (D ln 2), D = number of data dimensions.
* Discrete data live in [-1, 1] on ``bins`` equally spaced levels ``-1 + 2k/(bins-1)``
  (bin width 2/(bins-1)); the two edge bins extend to -inf and +inf, MATH.md (5.9).
* Everything is float64 and namespace-agnostic; randomness comes from an explicit
  ``numpy.random.Generator`` (noise drawn on the host by :func:`refdiff.backend.standard_normal`).

Models are plain callables ``model(x_t, t)`` with ``t`` an int64 array of shape (N,).
For ``variance_type="learned_range"`` and ``"learned"`` the model returns a **tuple**
``(prediction, var_output)``, both of x_t's shape: ``var_output`` is v (in [-1, 1] for the
learned range, MATH.md (5.7)) or the log variance itself.  A network with 2C output
channels (the improved-diffusion layout) is adapted by splitting along axis 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .backend import array_namespace, asarray_like, log_ndtr, ndtr, standard_normal, to_numpy, check_rng
from .parameterization import to_eps_x0, v_from_eps_x0
from .forward import q_posterior_mean_variance, q_sample
from .schedules import InterpolatedVP, Schedule, _ContinuousVP, alpha_sigma, gather

__all__ = [
    "normal_kl",
    "gaussian_log_density",
    "standard_normal_cdf",
    "approx_standard_normal_cdf",
    "TANH_CDF_MAX_ABS_ERROR",
    "discretized_gaussian_log_likelihood",
    "VARIANCE_TYPES",
    "reverse_log_variance",
    "reverse_mean_log_variance",
    "eps_mse_weight",
    "prior_term",
    "vlb_term",
    "bits_per_dim",
    "dequantization_offset",
    "continuous_to_discrete_bpd",
    "ImportanceState",
    "importance_probs",
    "importance_sample",
    "importance_update",
    "NLLBound",
    "nll_bound",
    "l_simple",
    "hybrid_loss",
    "snr_derivative",
    "vdm_diffusion_integrand",
    "VDMBound",
    "vdm_vlb",
]

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range", "learned")
_LN2 = math.log(2.0)
_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------- helpers
def _arrays(*args):
    """(xp, args as arrays): Python scalars become 0-d float64 arrays of the namespace."""
    ref = [a for a in args if hasattr(a, "shape")]
    xp = array_namespace(*ref)
    like = ref[0] if ref else xp.asarray(0.0, dtype=xp.float64)
    dtype = like.dtype if xp.isdtype(like.dtype, "real floating") else xp.float64
    out = [a if hasattr(a, "shape") else asarray_like(float(a), like, dtype=dtype) for a in args]
    return xp, out


def _flat_sum(a):
    """Sum over every axis but the first: (N, ...) -> (N,)."""
    xp = array_namespace(a)
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)  # (N, ...) -> (N, D) -> (N,)


def _dims(x0) -> int:
    return int(math.prod(x0.shape[1:]))


def _check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(map(repr, valid))}")


def _check_bins(bins):
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
        raise TypeError(f"bins must be an integer >= 2, got {bins!r}")
    if bins < 2:
        raise ValueError(f"bins = {bins} is invalid: need at least 2 levels (256 for 8-bit data)")


# ---------------------------------------------------------------------------- Gaussians
def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats, MATH.md (5.2).

    Arguments broadcast against each other (arrays of one namespace or Python floats).
    Written as ``(expm1(d) - d + (mean1 - mean2)^2 e^{-logvar2}) / 2`` with
    ``d = logvar1 - logvar2``, so it is exactly 0 for equal arguments and accurate when the
    variances are close.  Sum over dimensions for a diagonal Gaussian."""
    xp, (m1, lv1, m2, lv2) = _arrays(mean1, logvar1, mean2, logvar2)
    d = lv1 - lv2
    return 0.5 * (xp.expm1(d) - d + (m1 - m2) ** 2 * xp.exp(-lv2))


def gaussian_log_density(x, mean, logvar):
    """log N(x; mean, e^logvar) elementwise, in nats, MATH.md (5.10)."""
    xp, (x, m, lv) = _arrays(x, mean, logvar)
    return -0.5 * (_LOG_2PI + lv + (x - m) ** 2 * xp.exp(-lv))


# ---------------------------------------------------------------------------- CDFs
TANH_CDF_MAX_ABS_ERROR = 1.8e-4
"""Bound on |approx_standard_normal_cdf(x) - Phi(x)| over all real x, MATH.md (5.8)
(measured maximum 1.7893e-4, at |x| = 2.592)."""


def approx_standard_normal_cdf(x):
    """The tanh approximation of Phi used by the original DDPM code, MATH.md (5.8):
    ``(1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2``.  Its absolute error is at most
    :data:`TANH_CDF_MAX_ABS_ERROR`; its *relative* error in the tails is unbounded."""
    xp = array_namespace(x)
    return 0.5 * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def standard_normal_cdf(x, cdf: str = "exact"):
    """Phi(x): ``cdf="exact"`` (scipy/cupyx ndtr) or ``"tanh"`` (:func:`approx_standard_normal_cdf`),
    MATH.md (5.8)."""
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
    ``bins`` levels in [-1, 1], MATH.md (5.9).

    ``x`` holds levels ``-1 + 2k/(bins-1)``, k = 0..bins-1 (8-bit data: ``k / 127.5 - 1``);
    a level may be off by at most ``grid_tol`` bin widths (default 1e-3: float32 rounding
    of any level is ~1e-5 bin widths).  Bin k is ``[x - D/2, x + D/2]``, D = 2/(bins-1),
    except the edge bins, integrated to -inf (k = 0) and +inf (k = bins-1), so the bin
    probabilities sum to 1.  ``mean`` and ``log_scale`` (log standard deviation) must
    broadcast to ``x``'s shape; the result has ``x``'s shape.

    cdf
        ``"exact"``: log Phi differences in log space (log_ndtr), stable in the far tails.
        ``"tanh"``: the original DDPM code verbatim: the tanh CDF (5.8), edge bins decided by
        the level index, and every probability clamped below at 1e-12 before the log.
    """
    _check_bins(bins)
    _check_choice("cdf", cdf, ("exact", "tanh"))
    xp, (x, mean, log_scale) = _arrays(x, mean, log_scale)
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


# ---------------------------------------------------------------------------- reverse process
def _log_betas_large(schedule: Schedule, fixed_large_t0: str) -> np.ndarray:
    _check_choice("fixed_large_t0", fixed_large_t0, ("beta_tilde_1", "beta_0"))
    values = np.log(schedule.betas)
    if fixed_large_t0 == "beta_tilde_1":
        values[0] = schedule.posterior_log_variance_clipped[0]  # log beta_tilde[1] (log beta[0] if T = 1)
    return values


def reverse_log_variance(schedule: Schedule, t, like, variance_type: str = "fixed_small", var_output=None, *, fixed_large_t0: str = "beta_tilde_1"):
    """log sigma_t^2, the log variance of p(x_{t-1} | x_t), MATH.md (5.6), (5.7).

    variance_type
        ``"fixed_small"``: beta_tilde_t, with its log at t = 0 (where beta_tilde = 0) clipped
        to log beta_tilde[1] as in the DDPM and improved-diffusion code.
        ``"fixed_large"``: beta_t.  ``fixed_large_t0="beta_tilde_1"`` (default, the DDPM and
        improved-diffusion code) uses beta_tilde[1] at t = 0; ``"beta_0"`` keeps beta[0]
        (the paper).  Only the decoder term L_0 sees the difference.
        ``"learned_range"``: ``var_output`` = v, log sigma^2 = (v+1)/2 log beta_t +
        (1-v)/2 log beta_tilde_t (clipped), improved-diffusion's interpolation; v outside
        [-1, 1] extrapolates, as in that code.
        ``"learned"``: ``var_output`` is the log variance itself.

    Returns an array broadcasting against ``like`` (shape (N,1,..) for fixed types, the
    shape of ``var_output`` for learned ones)."""
    _check_choice("variance_type", variance_type, VARIANCE_TYPES)
    if variance_type == "fixed_small":
        return gather(schedule.posterior_log_variance_clipped, t, like)
    if variance_type == "fixed_large":
        return gather(_log_betas_large(schedule, fixed_large_t0), t, like)
    if var_output is None:
        raise ValueError(f"variance_type={variance_type!r} needs the model's variance output (var_output)")
    if variance_type == "learned":
        return var_output
    frac = 0.5 * (var_output + 1.0)
    return frac * gather(np.log(schedule.betas), t, like) + (1.0 - frac) * gather(schedule.posterior_log_variance_clipped, t, like)


def reverse_mean_log_variance(schedule: Schedule, model_output, x_t, t, var_output=None, *, prediction_type: str = "epsilon",
                              variance_type: str = "fixed_small", clip_denoised: bool = False, fixed_large_t0: str = "beta_tilde_1"):
    """Mean and log variance of p(x_{t-1} | x_t), MATH.md (5.5)-(5.7):
    ``mu = mu_tilde(x_t, x0_hat)`` (the posterior mean (3.2) at the model's x0_hat), which
    for an epsilon model equals ``(x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t)``.

    ``clip_denoised`` clips x0_hat to [-1, 1] first (as the DDPM code's sampler and bpd
    evaluation do).  Returns ``(mean, log_variance, x0_hat)``."""
    alpha, sigma = alpha_sigma(schedule, t, x_t)
    _, x0_hat = to_eps_x0(model_output, x_t, alpha, sigma, prediction_type)
    if clip_denoised:
        x0_hat = array_namespace(x0_hat).clip(x0_hat, -1.0, 1.0)
    mean = gather(schedule.posterior_mean_coef1, t, x_t) * x0_hat + gather(schedule.posterior_mean_coef2, t, x_t) * x_t
    log_var = reverse_log_variance(schedule, t, x_t, variance_type, var_output, fixed_large_t0=fixed_large_t0)
    return mean, log_var, x0_hat


def eps_mse_weight(schedule: Schedule, variance_type: str = "fixed_small", *, fixed_large_t0: str = "beta_tilde_1") -> np.ndarray:
    """The (T,) weights w_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) of MATH.md (5.5):
    with a fixed reverse variance sigma_t^2, ``L_t = C_t + w_t ||eps - eps_hat||^2`` for
    t >= 1 (C_t = 0 for fixed_small), and at t = 0 w_0 is the weight of the squared error
    in the Gaussian decoder (5.10).  Host float64 array."""
    _check_choice("variance_type", variance_type, ("fixed_small", "fixed_large"))
    log_var = schedule.posterior_log_variance_clipped if variance_type == "fixed_small" else _log_betas_large(schedule, fixed_large_t0)
    return schedule.betas**2 / (2.0 * np.exp(log_var) * schedule.alphas * (1.0 - schedule.alpha_bars))


def prior_term(schedule: Schedule, x0):
    """L_T = KL(q(x_T | x_0) || N(0, I)) per sample, nats summed over dimensions, MATH.md (5.3)
    (x_T is array index T-1)."""
    t = schedule.T - 1
    a, s = gather(schedule.sqrt_alpha_bars, t, x0), gather(schedule.sqrt_one_minus_alpha_bars, t, x0)
    xp = array_namespace(x0)
    return _flat_sum(normal_kl(a * x0, 2.0 * xp.log(s) + 0.0 * x0, 0.0, 0.0))


def vlb_term(schedule: Schedule, x0, x_t, t, model_output, var_output=None, *, prediction_type: str = "epsilon",
             variance_type: str = "fixed_small", decoder: str = "discretized", bins: int = 256, cdf: str = "exact",
             clip_denoised: bool = False, fixed_large_t0: str = "beta_tilde_1"):
    """The bound's term at 0-based index ``t`` per sample, nats summed over dimensions:

    * t >= 1: ``KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))``, MATH.md (5.4);
    * t = 0: the decoder ``-log p(x_0 | x_1)``, discretized (``decoder="discretized"``,
      MATH.md (5.9), data on ``bins`` levels in [-1, 1]) or a Gaussian density
      (``decoder="gaussian"``, MATH.md (5.10), for continuous data).

    ``t`` is an int or an int array of shape (N,); ``model_output``/``var_output`` are the
    model's outputs at (x_t, t) (see :func:`reverse_mean_log_variance`)."""
    _check_choice("decoder", decoder, ("discretized", "gaussian"))
    xp = array_namespace(x0, x_t)
    mean, log_var, _ = reverse_mean_log_variance(
        schedule, model_output, x_t, t, var_output, prediction_type=prediction_type,
        variance_type=variance_type, clip_denoised=clip_denoised, fixed_large_t0=fixed_large_t0)
    true_mean, _, true_log_var = q_posterior_mean_variance(schedule, x0, x_t, t)
    kl = _flat_sum(normal_kl(true_mean, true_log_var, mean, log_var))
    t_host = np.asarray(to_numpy(t) if hasattr(t, "shape") else t)
    if not np.any(t_host == 0):
        return kl
    if decoder == "discretized":
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var + 0.0 * x0, bins, cdf)
    else:
        nll = -gaussian_log_density(x0, mean, log_var + 0.0 * x0)
    nll = _flat_sum(nll)
    if t_host.ndim == 0:
        return nll
    return xp.where(asarray_like(t_host == 0, x0, dtype=xp.bool), nll, kl)


# ---------------------------------------------------------------------------- units
def bits_per_dim(nats, dims: int):
    """nats (summed over ``dims`` dimensions) -> bits per dimension, MATH.md (5.11)."""
    return nats / (dims * _LN2)


def dequantization_offset(bins: int = 256, *, convention: str = "levels", units: str = "nats") -> float:
    """-log(bin width) per dimension, the offset between a continuous density on scaled
    data and a discrete likelihood, MATH.md (5.12):

    ``convention="levels"``: bin width 2/(bins-1), the grid of
    :func:`discretized_gaussian_log_likelihood` (levels -1 + 2k/(bins-1)); offset
    log((bins-1)/2) = log 127.5 for 8-bit data (6.994 bits).
    ``convention="interval"``: bin width 2/bins, data (k + u)/bins * 2 - 1 with u ~ U[0,1)
    (the flow literature's uniform dequantization); offset log(bins/2) (7 bits for 8-bit).
    """
    _check_bins(bins)
    _check_choice("convention", convention, ("levels", "interval"))
    _check_choice("units", units, ("nats", "bits"))
    off = math.log((bins - 1) / 2.0) if convention == "levels" else math.log(bins / 2.0)
    return off if units == "nats" else off / _LN2


def continuous_to_discrete_bpd(nats_per_dim, bins: int = 256, *, convention: str = "levels"):
    """An upper bound on the discrete bits/dim from a continuous density's nats per
    dimension on dequantized data, MATH.md (5.12): ``(nats_per_dim + offset) / ln 2``."""
    return (nats_per_dim + dequantization_offset(bins, convention=convention)) / _LN2


# ---------------------------------------------------------------------------- model calls
def _call(model, x_t, t, variance_type):
    """Model outputs at (x_t, t) as (prediction, var_output or None), checked: shapes and
    finiteness; a NaN names the timestep(s) where it appeared."""
    xp = array_namespace(x_t)
    n = x_t.shape[0]
    t_arr = xp.full((n,), int(t), dtype=xp.int64) if isinstance(t, (int, np.integer)) else t
    out = model(x_t, t_arr)
    learned = variance_type in ("learned_range", "learned")
    if learned:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"variance_type={variance_type!r} needs a model returning a tuple (prediction, var_output); got {type(out).__name__}")
        parts = {"prediction": out[0], "var_output": out[1]}
    else:
        parts = {"prediction": out}
    for name, a in parts.items():
        if not hasattr(a, "shape") or tuple(a.shape) != tuple(x_t.shape):
            shape = tuple(a.shape) if hasattr(a, "shape") else type(a).__name__
            raise ValueError(f"model {name} has shape {shape} at t = {_t_desc(t)}; expected x_t's shape {tuple(x_t.shape)}")
        bad = ~xp.all(xp.reshape(xp.isfinite(a), (n, -1)), axis=1)  # (N,)
        if bool(xp.any(bad)):
            tb = np.asarray(to_numpy(t_arr))[np.asarray(to_numpy(bad))]
            raise FloatingPointError(f"model {name} contains NaN or inf at t = {sorted(set(int(v) for v in tb))}")
    return parts["prediction"], parts.get("var_output")


def _t_desc(t):
    return int(t) if isinstance(t, (int, np.integer)) else sorted(set(int(v) for v in np.asarray(to_numpy(t)).ravel()))


# ---------------------------------------------------------------------------- importance sampling of t
@dataclass(frozen=True, eq=False)
class ImportanceState:
    """The second-moment history of improved-diffusion's t-sampler, MATH.md (5.14); a pure
    value (update with :func:`importance_update`, which returns a new state).

    history : (T, K) host float64, the last K observed values of L_t per t (oldest first)
    counts : (T,) host int64, how many of the K slots are filled
    """

    history: np.ndarray
    counts: np.ndarray

    @classmethod
    def init(cls, T: int, history: int = 10) -> "ImportanceState":
        """An empty state for T timesteps keeping ``history`` values per timestep."""
        if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"T must be an integer >= 1, got {T!r}")
        if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        return cls(np.zeros((int(T), int(history))), np.zeros(int(T), dtype=np.int64))

    @property
    def T(self) -> int:
        return int(self.history.shape[0])

    @property
    def warmed_up(self) -> bool:
        """True once every timestep holds K values; until then sampling is uniform."""
        return bool(np.all(self.counts == self.history.shape[1]))


def importance_probs(state: ImportanceState, uniform_prob: float = 1e-3) -> np.ndarray:
    """p_t proportional to sqrt(E[L_t^2]) over the stored history, mixed with the uniform
    distribution: ``p = (1 - u) p_sqrt + u / T``; uniform until the state is warmed up,
    MATH.md (5.14).  Returns a (T,) host array summing to 1."""
    if not 0.0 <= uniform_prob <= 1.0:
        raise ValueError(f"uniform_prob = {uniform_prob!r} is outside [0, 1]")
    T = state.T
    if not state.warmed_up:
        return np.full(T, 1.0 / T)
    w = np.sqrt(np.mean(state.history**2, axis=1))
    if not np.all(np.isfinite(w)) or w.sum() <= 0:
        return np.full(T, 1.0 / T)
    return (1.0 - uniform_prob) * w / w.sum() + uniform_prob / T


def importance_sample(state: ImportanceState, rng: np.random.Generator, size, uniform_prob: float = 1e-3):
    """Draw t ~ p (:func:`importance_probs`) and the weights 1 / (T p_t) that make
    ``weight * L_t`` unbiased for the uniform average, MATH.md (5.14).  Host int64 t and
    float64 weights of shape ``size``."""
    rng = check_rng(rng)
    p = importance_probs(state, uniform_prob)
    t = rng.choice(state.T, size=size, p=p).astype(np.int64)
    return t, 1.0 / (state.T * p[t])


def importance_update(state: ImportanceState, t, losses) -> ImportanceState:
    """A new state with the observed ``losses`` (values of L_t) at timesteps ``t`` appended
    to the history (the oldest value dropped once K are stored), MATH.md (5.14)."""
    t = np.asarray(to_numpy(t) if hasattr(t, "shape") else t, dtype=np.int64).ravel()
    losses = np.asarray(to_numpy(losses) if hasattr(losses, "shape") else losses, dtype=np.float64).ravel()
    if t.shape != losses.shape:
        raise ValueError(f"t has {t.shape[0]} entries but losses has {losses.shape[0]}")
    if t.size and (t.min() < 0 or t.max() >= state.T):
        raise ValueError(f"t contains {int(t.min() if t.min() < 0 else t.max())}, out of range [0, {state.T - 1}]")
    history, counts = state.history.copy(), state.counts.copy()
    K = history.shape[1]
    for ti, li in zip(t, losses):
        if counts[ti] == K:
            history[ti, :-1] = history[ti, 1:]
            history[ti, -1] = li
        else:
            history[ti, counts[ti]] = li
            counts[ti] += 1
    return ImportanceState(history, counts)


# ---------------------------------------------------------------------------- the whole bound
@dataclass(frozen=True, eq=False)
class NLLBound:
    """The negative ELBO of a batch of data, per sample, with its terms (MATH.md (5.1)).

    All ``*_nats`` arrays are nats summed over the data dimensions, in the data's
    namespace; ``*_bpd`` properties divide by D ln 2 (MATH.md (5.11)).

    total_nats, bits_per_dim : (N,)   the bound at one draw of x_t per term (full), or its
                                       estimate over sampled t (MC estimators)
    prior_nats : (N,)                 L_T, (5.3)
    decoder_nats : (N,) or None       L_0 = -log p(x_0 | x_1) (full estimator)
    terms_nats : (N, T) or None       column 0 = L_0, column t >= 1 = the KL term at index t
                                       (full estimator)
    t_samples : (n_t, N) host int64   sampled timesteps (MC estimators)
    term_samples : (n_t, N)           L at the sampled t, nats (MC estimators)
    weights : (n_t, N) host float64   1 / (T p_t) (importance; ones for uniform)
    std_error_nats : (N,) or None     standard error of total_nats over the n_t draws (n_t >= 2)
    importance_state                  the updated state (importance estimator)
    conventions : dict                units, data range, bins, time convention, choices made
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
        """A few lines: total and each term, batch means, in nats and bits/dim."""
        xp = array_namespace(self.total_nats)
        m = lambda a: float(xp.mean(a))  # noqa: E731
        lines = [f"negative ELBO ({self.estimator}): {self.nats:.6g} nats = {self.bpd:.6g} bits/dim (D = {self.dims})",
                 f"  prior L_T: {m(self.prior_nats):.6g} nats"]
        if self.decoder_nats is not None:
            lines.append(f"  decoder L_0: {m(self.decoder_nats):.6g} nats")
            lines.append(f"  sum of KL terms t >= 1: {m(self.terms_nats[:, 1:]) * (self.terms_nats.shape[1] - 1):.6g} nats")
        return "\n".join(lines)


def _check_x0(x0):
    if not hasattr(x0, "shape") or x0.ndim < 2:
        raise ValueError(f"x0 must be an array of shape (N, ...) with at least one data dimension, got {getattr(x0, 'shape', type(x0).__name__)}")
    xp = array_namespace(x0)
    if x0.dtype != xp.float64:
        raise TypeError(f"x0 must be float64 (the ELBO is computed in float64), got {x0.dtype}")


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
        ``"uniform"``: ``L_T + T L_t`` with t ~ U{0..T-1} per sample (5.13), averaged over
        ``n_t`` draws; per draw: t (``rng.integers``), then noise.
        ``"importance"``: ``L_T + L_t / p_t`` with t ~ p from ``importance_state``
        (default: a fresh one, hence uniform), (5.14); the updated state is returned.

    The model is ``model(x_t, t)`` with ``t`` an int64 (N,) array of 0-based indices; for
    learned variances it returns ``(prediction, var_output)`` (module docstring).  A model
    output with NaN raises FloatingPointError naming t.
    """
    _check_x0(x0)
    _check_choice("estimator", estimator, ("full", "uniform", "importance"))
    _check_choice("prediction_type", prediction_type, ("epsilon", "sample", "v_prediction"))
    _check_choice("variance_type", variance_type, VARIANCE_TYPES)
    _check_choice("decoder", decoder, ("discretized", "gaussian"))
    _check_bins(bins)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a refdiff Schedule, got {type(schedule).__name__}")
    rng = check_rng(rng)
    if isinstance(n_t, bool) or not isinstance(n_t, (int, np.integer)) or n_t < 1:
        raise ValueError(f"n_t must be an integer >= 1, got {n_t!r}")
    if decoder == "discretized":
        _check_on_grid(x0, bins, 1e-3)
    xp = array_namespace(x0)
    T, N, D = schedule.T, x0.shape[0], _dims(x0)
    opts = dict(prediction_type=prediction_type, variance_type=variance_type, decoder=decoder, bins=bins, cdf=cdf,
                clip_denoised=clip_denoised, fixed_large_t0=fixed_large_t0)

    def term(t):
        noise = standard_normal(rng, x0.shape, like=x0)
        x_t = q_sample(schedule, x0, t, noise)
        pred, var_out = _call(model, x_t, t, variance_type)
        return vlb_term(schedule, x0, x_t, t, pred, var_out, **opts)

    prior = prior_term(schedule, x0)
    conventions = {
        "units": "nats summed over dimensions; bits_per_dim = nats / (D ln 2)",
        "time": "0-based: index t is paper step t+1; terms_nats[:, 0] = L_0 (decoder), [:, t] = KL at index t",
        "data": f"{decoder} decoder" + (f", levels -1 + 2k/{bins - 1} in [-1, 1], edge bins to +-inf, cdf={cdf}" if decoder == "discretized" else ", continuous data"),
        "prediction_type": prediction_type, "variance_type": variance_type, "fixed_large_t0": fixed_large_t0,
        "clip_denoised": clip_denoised, "T": T, "D": D,
    }
    if estimator == "full":
        terms = xp.stack([term(t) for t in range(T)], axis=1)  # T x (N,) -> (N, T)
        total = prior + xp.sum(terms, axis=1)
        return NLLBound(total, bits_per_dim(total, D), prior, D, estimator, decoder_nats=terms[:, 0], terms_nats=terms,
                        conventions=conventions)
    state = importance_state if importance_state is not None else ImportanceState.init(T)
    if estimator == "importance" and state.T != T:
        raise ValueError(f"importance_state is for T = {state.T}, the schedule has T = {T}")
    t_all, w_all, samples = [], [], []
    for _ in range(n_t):
        if estimator == "uniform":
            t_h, w_h = rng.integers(0, T, size=N).astype(np.int64), np.ones(N)
        else:
            t_h, w_h = importance_sample(state, rng, N, uniform_prob)
        samples.append(term(asarray_like(t_h, x0, dtype=xp.int64)))
        t_all.append(t_h)
        w_all.append(w_h)
    t_s, w_s = np.stack(t_all), np.stack(w_all)  # (n_t, N)
    L = xp.stack(samples)  # (n_t, N)
    est = prior + T * asarray_like(w_s, x0) * L  # (n_t, N): unbiased estimates of the bound
    total = xp.mean(est, axis=0)
    se = xp.std(est, axis=0, correction=1) / math.sqrt(n_t) if n_t > 1 else None
    new_state = importance_update(state, t_s, L) if estimator == "importance" else None
    return NLLBound(total, bits_per_dim(total, D), prior, D, estimator, t_samples=t_s, term_samples=L, weights=w_s,
                    std_error_nats=se, importance_state=new_state, conventions=conventions)


# ---------------------------------------------------------------------------- training objectives
def l_simple(model_output, target, *, reduction: str = "mean"):
    """The unweighted MSE of a prediction against its target, per sample, MATH.md (5.15).

    For an epsilon model ``target`` is the noise: L_simple = ||eps - eps_hat||^2.
    ``reduction="mean"`` averages over the data dimensions (the DDPM and improved-diffusion
    code's mean_flat); ``"sum"`` is the paper's squared norm."""
    _check_choice("reduction", reduction, ("mean", "sum"))
    xp = array_namespace(model_output, target)
    if tuple(model_output.shape) != tuple(target.shape):
        raise ValueError(f"model_output has shape {tuple(model_output.shape)}, target {tuple(target.shape)}; they must match")
    s = _flat_sum((model_output - target) ** 2)
    return s / _dims(target) if reduction == "mean" else s


def hybrid_loss(schedule: Schedule, x0, x_t, t, noise, model_output, var_output, *, prediction_type: str = "epsilon",
                variance_type: str = "learned_range", lam: float = 1e-3, decoder: str = "discretized", bins: int = 256,
                cdf: str = "exact"):
    """improved-diffusion's L_hybrid = L_simple + lambda L_vlb per sample, MATH.md (5.16):

    ``mean_dims((target - model_output)^2) + lam * T * L_t / (D ln 2)``

    where L_t (nats, :func:`vlb_term`) at the sampled 0-based t makes ``T L_t`` the
    one-sample estimate of L_vlb (5.13) and dividing by D ln 2 gives bits/dim.  With the
    default lam = 1e-3 the factor lam T is improved-diffusion's ``num_timesteps / 1000``.
    improved-diffusion applies that factor for its rescaled loss (``rescale_learned_sigmas``);
    its plain-MSE loss type adds the VLB term unscaled: ``lam = 1 / T``.  (In that code the
    VLB term sees the mean through a stop-gradient, so it trains only the variance; values
    are unaffected.)  ``target`` is ``noise``, ``x0`` or
    ``v = alpha noise - sigma x0`` for prediction_type epsilon, sample, v_prediction."""
    _check_choice("prediction_type", prediction_type, ("epsilon", "sample", "v_prediction"))
    if not lam >= 0:
        raise ValueError(f"lam = {lam!r} must be >= 0")
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


# ---------------------------------------------------------------------------- continuous time (VDM)
def snr_derivative(vp, t):
    """d SNR / dt of a continuous VP schedule (t = 0 data, t = 1 noise), MATH.md (5.17):
    SNR = alpha^2 / sigma^2 and ``SNR' = 2 alpha^2 (d log alpha / dt) / sigma^4`` (< 0)."""
    if not isinstance(vp, _ContinuousVP):
        raise TypeError(f"vp must be a continuous VP schedule (LinearVP, InterpolatedVP), got {type(vp).__name__}")
    xp = array_namespace(t)
    la = vp.log_alpha(t)
    sigma2 = -xp.expm1(2.0 * la)
    return 2.0 * xp.exp(2.0 * la) * vp.dlog_alpha_dt(t) / sigma2**2


def vdm_diffusion_integrand(vp, t, x0, x0_hat):
    """``-SNR'(t) / 2 * ||x0 - x0_hat||^2`` per sample (nats): the integrand of the
    continuous-time diffusion loss of Kingma et al. (2021), MATH.md (5.17).  ``t`` of
    shape (N,) (or a float)."""
    xp = array_namespace(x0, x0_hat)
    t = asarray_like(float(t), x0, dtype=xp.float64) if isinstance(t, (int, float)) else t
    return -0.5 * snr_derivative(vp, t) * _flat_sum((x0 - x0_hat) ** 2)


@dataclass(frozen=True, eq=False)
class VDMBound:
    """The continuous-time negative ELBO (Kingma et al. 2021), per sample, MATH.md (5.17).

    total_nats = prior_nats + decoder_nats + diffusion_nats, each (N,), nats summed over
    dimensions; diffusion_nats is a Monte-Carlo estimate over t ~ U(t0, t1) and
    std_error_nats its standard error over the n_t draws (None for n_t = 1)."""

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
    dimensions; bits/dim = nats / (D ln 2)."""
    _check_x0(x0)
    _check_choice("decoder", decoder, ("discretized", "gaussian"))
    if not isinstance(vp, _ContinuousVP):
        raise TypeError(f"vp must be a continuous VP schedule (LinearVP, InterpolatedVP), got {type(vp).__name__}")
    rng = check_rng(rng)
    if isinstance(n_t, bool) or not isinstance(n_t, (int, np.integer)) or n_t < 1:
        raise ValueError(f"n_t must be an integer >= 1, got {n_t!r}")
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
        out = model(z_t, t)
        if not hasattr(out, "shape") or tuple(out.shape) != tuple(x0.shape):
            raise ValueError(f"model returned shape {getattr(out, 'shape', type(out).__name__)}; expected {tuple(x0.shape)}")
        bad = ~xp.all(xp.reshape(xp.isfinite(out), (N, -1)), axis=1)
        if bool(xp.any(bad)):
            tb = np.asarray(to_numpy(t))[np.asarray(to_numpy(bad))]
            raise FloatingPointError(f"model output contains NaN or inf at t = {[float(v) for v in tb[:5]]}")
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
