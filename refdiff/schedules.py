"""Noise schedules, their continuous-time views, and timestep / sigma grids.

Conventions (MATH.md chapter 1): discrete arrays are 0-based; array index ``t`` is
paper step ``t + 1``.  ``alpha_bars[t] = prod_{s <= t} (1 - betas[s])`` and
``alpha_bars_prev[0] = 1``.

A :class:`Schedule` is a set of float64 *constants*: it is built once on the host with
NumPy, its arrays are read-only, and functions that use it move the few coefficients
they need into the namespace (and onto the device) of the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ._validate import _is_array, check_array, check_bool, check_choice, check_finite_scalar, check_int
from .backend import array_namespace, asarray_like

__all__ = [
    "Schedule",
    "make_schedule",
    "schedule_from_betas",
    "schedule_from_alpha_bars",
    "rescale_zero_terminal_snr",
    "cosine_alpha_bar",
    "timesteps",
    "karras_sigmas",
    "exponential_sigmas",
    "polyexponential_sigmas",
    "sigma_from_alpha_bar",
    "alpha_bar_from_sigma",
    "LinearVP",
    "InterpolatedVP",
    "time_grid",
    "gather",
    "alpha_sigma",
]


# ---------------------------------------------------------------------------- validation
def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)):
        raise TypeError(f"T must be an integer, got {T!r}")
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return int(T)


def _check_betas(betas: np.ndarray, name: str = "betas") -> None:
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all(np.isfinite(betas)):
        i = int(np.flatnonzero(~np.isfinite(betas))[0])
        raise ValueError(f"{name}[{i}] is {float(betas[i])}: {name} must be finite, in (0, 1]")
    bad = np.flatnonzero((betas <= 0) | (betas > 1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {float(betas[i])!r} is outside (0, 1]")
    ones = np.flatnonzero(betas == 1)
    if ones.size and (ones.size > 1 or ones[0] != betas.shape[0] - 1):
        raise ValueError(
            f"{name}[{int(ones[0])}] = 1: a beta of 1 (alpha_bar = 0, zero terminal SNR) "
            f"is allowed only as the last entry, index {betas.shape[0] - 1}"
        )


# ---------------------------------------------------------------------------- Schedule
def _as_vector(name: str, v) -> np.ndarray:
    """A float64 copy of a real array, list or tuple of real numbers (None, strings, bools,
    complex and float16 refused with the argument's name)."""
    if _is_array(v):
        check_array(name, v, dtype="real", allow_empty=True)
    elif not isinstance(v, (list, tuple)) or any(
            isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, float, np.integer, np.floating)) for e in v):
        raise TypeError(f"{name} must be a real array or a list of real numbers, got {type(v).__name__}")
    return np.asarray(v, dtype=np.float64)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete variance-preserving noise schedule (float64, 0-based; MATH.md (2.1)).

    Attributes
    ----------
    betas, alphas, alpha_bars, alpha_bars_prev : (T,) float64
        ``alphas = 1 - betas`` (2.1), ``alpha_bars[t] = prod_{s<=t} alphas[s]`` (2.3),
        ``alpha_bars_prev[t] = alpha_bars[t-1]`` with ``alpha_bars_prev[0] = 1``.
    sqrt_alpha_bars, sqrt_one_minus_alpha_bars : (T,)
        The coefficients of x_0 and of the noise in q(x_t | x_0), (2.4).
    sigmas : (T,)
        The variance-exploding noise level ``sqrt((1 - alpha_bar) / alpha_bar)`` (2.8).
    log_snr : (T,)
        The log signal-to-noise ratio ``log(alpha_bar / (1 - alpha_bar))``, MATH.md (2.7);
        ``-inf`` where alpha_bar = 0.
    posterior_variance, posterior_log_variance_clipped, posterior_mean_coef1, posterior_mean_coef2 : (T,)
        beta_tilde and the coefficients of x_0 and x_t in the posterior mean, (3.2)-(3.4).

    Parameters
    ----------
    betas : numpy.ndarray (T,)
        float64 betas in (0, 1] (a 1 only at the last step, zero terminal SNR).
    name : str
        A label kept in ``name``.
    """

    betas: np.ndarray
    alphas: np.ndarray = field(init=False)
    alpha_bars: np.ndarray = field(init=False)
    alpha_bars_prev: np.ndarray = field(init=False)
    sqrt_alpha_bars: np.ndarray = field(init=False)
    sqrt_one_minus_alpha_bars: np.ndarray = field(init=False)
    sigmas: np.ndarray = field(init=False)
    log_snr: np.ndarray = field(init=False)
    posterior_variance: np.ndarray = field(init=False)
    posterior_log_variance_clipped: np.ndarray = field(init=False)
    posterior_mean_coef1: np.ndarray = field(init=False)
    posterior_mean_coef2: np.ndarray = field(init=False)
    name: str = "custom"

    def __post_init__(self):
        betas = _as_vector("betas", self.betas)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        _check_betas(betas)
        set_ = lambda k, v: object.__setattr__(self, k, _readonly(v))  # noqa: E731
        set_("betas", betas)
        alphas = 1.0 - betas
        alpha_bars = np.cumprod(alphas)
        if betas[-1] == 1.0:
            alpha_bars[-1] = 0.0  # exact, not 1e-17 round-off
        alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
        set_("alphas", alphas)
        set_("alpha_bars", alpha_bars)
        set_("alpha_bars_prev", alpha_bars_prev)
        # 1 - alpha_bar without cancellation at small t: -expm1(sum log(1 - beta)), MATH.md (2.3)
        with np.errstate(divide="ignore"):
            one_minus_ab = -np.expm1(np.cumsum(np.log1p(-betas)))
        set_("sqrt_alpha_bars", np.sqrt(alpha_bars))
        set_("sqrt_one_minus_alpha_bars", np.sqrt(one_minus_ab))
        with np.errstate(divide="ignore"):
            set_("sigmas", np.sqrt(one_minus_ab / alpha_bars))
            set_("log_snr", np.log(alpha_bars) - np.log(one_minus_ab))
        # posterior q(x_{t-1} | x_t, x_0), MATH.md (3.2)-(3.4)
        one_minus_ab_prev = np.concatenate([[0.0], one_minus_ab[:-1]])
        post_var = betas * one_minus_ab_prev / one_minus_ab
        set_("posterior_variance", post_var)
        # At t = 0 the posterior variance is 0; like the DDPM release we clip its log to
        # the value at t = 1 (for T = 1 to beta_0) so that log-variances stay finite.
        clip_to = post_var[1] if post_var.shape[0] > 1 else betas[0]
        set_("posterior_log_variance_clipped", np.log(np.concatenate([[clip_to], post_var[1:]])))
        set_("posterior_mean_coef1", betas * np.sqrt(alpha_bars_prev) / one_minus_ab)
        set_("posterior_mean_coef2", one_minus_ab_prev * np.sqrt(alphas) / one_minus_ab)

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return int(self.betas.shape[0])

    def check_t(self, t, name: str = "t"):
        """Validate integer timestep(s) ``t`` in [0, T-1]; returns them unchanged.

        Parameters
        ----------
        t : int or integer array
            Timestep(s) to check.
        name : str
            The argument's name in error messages.

        Returns
        -------
        int or integer array
            ``t`` unchanged.

        Raises
        ------
        TypeError, ValueError
            For non-integer or out-of-range timesteps.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        return _check_int_t(t, self.T, name)

    def __repr__(self) -> str:
        return (
            f"Schedule(name={self.name!r}, T={self.T}, beta[0]={self.betas[0]:.3g}, "
            f"beta[T-1]={self.betas[-1]:.3g}, alpha_bar[T-1]={self.alpha_bars[-1]:.3g})"
        )


def _check_int_t(t, T: int, name: str = "t"):
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer timestep or integer array, got a bool")
    if isinstance(t, (int, np.integer)):
        if not 0 <= int(t) < T:
            raise ValueError(f"{name} = {int(t)} is out of range [0, {T - 1}] (0-based, T = {T})")
        return t
    if isinstance(t, (float, np.floating)):
        raise TypeError(f"{name} must be an integer timestep, got float {t!r}")
    if not _is_array(t):
        raise TypeError(f"{name} must be an integer timestep or an integer array, got {type(t).__name__}")
    xp = array_namespace(t)
    if not xp.isdtype(t.dtype, "integral"):
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}")
    if t.ndim > 1:
        raise ValueError(f"{name} must be a scalar or of shape (N,), got shape {tuple(t.shape)}")
    if t.size:
        lo, hi = int(xp.min(t)), int(xp.max(t))
        if lo < 0 or hi >= T:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} contains {bad}, out of range [0, {T - 1}] (0-based, T = {T})")
    return t


def gather(values: np.ndarray, t, x):
    """``values[t]`` as an array in ``x``'s namespace, shaped to broadcast against ``x``.

    ``values`` is a (T,) host float64 array of a :class:`Schedule`; ``t`` an integer or
    an integer array of shape (N,) (validated against T); the result has shape () for a
    scalar ``t`` and (N, 1, ..., 1) for an array, in ``x``'s floating dtype (float64 if
    ``x`` is not floating).

    Parameters
    ----------
    values : numpy.ndarray (T,)
        A schedule array (host float64).
    t : int or integer array (N,)
        0-based timesteps.
    x : array (N, ...)
        Gives the namespace, dtype and shape to broadcast against.

    Returns
    -------
    array
        values[t], shaped (N, 1, ..., 1) (or 0-d for a scalar t).
    """
    check_array("x", x, allow_empty=True)
    if not isinstance(t, (int, np.integer)) and _is_array(t) and t.ndim == 1 and x.ndim >= 1 and t.shape[0] != x.shape[0]:
        raise ValueError(f"per-sample coefficient: t has shape {tuple(t.shape)} but x has shape {tuple(x.shape)} "
                     f"(batch size {x.shape[0]}): one timestep per sample")
    T = values.shape[0]
    xp = array_namespace(x)
    dtype = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float64
    _check_int_t(t, T)
    if isinstance(t, (int, np.integer)):
        return asarray_like(float(values[int(t)]), x, dtype=dtype)
    v = asarray_like(values, x, dtype=xp.float64)
    tt = xp.asarray(t, dtype=xp.int64)
    out = xp.astype(xp.take(v, tt), dtype)
    if tt.ndim == 0:
        return out
    return xp.reshape(out, (tt.shape[0],) + (1,) * (x.ndim - 1))  # (N,) -> (N,1,...)


# ---------------------------------------------------------------------------- constructors
def schedule_from_betas(betas, name: str = "custom") -> Schedule:
    """A :class:`Schedule` from given betas, e.g. another implementation's array.

    Raises ValueError unless every beta is finite and in (0, 1], with a 1 allowed only
    as the last entry (zero terminal SNR).

    Parameters
    ----------
    betas : array-like (T,)
        The betas, converted to float64.
    name : str
        A label for the schedule.

    Returns
    -------
    Schedule
    """
    return Schedule(_as_vector("betas", betas), name=name)


def schedule_from_alpha_bars(alpha_bars, name: str = "custom") -> Schedule:
    """A :class:`Schedule` from given cumulative products alpha_bar (MATH.md (2.3) inverted:
    ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}``).

    alpha_bars must be finite, strictly decreasing, in [0, 1), with a 0 only as the last
    entry.

    Parameters
    ----------
    alpha_bars : array-like (T,)
        Strictly decreasing cumulative products in [0, 1).
    name : str
        A label for the schedule.

    Returns
    -------
    Schedule
    """
    ab = _as_vector("alpha_bars", alpha_bars)
    if ab.ndim != 1 or ab.shape[0] < 1:
        raise ValueError(f"alpha_bars must be a non-empty 1-D array, got shape {ab.shape}")
    if not np.all(np.isfinite(ab)):
        raise ValueError("alpha_bars contains NaN or inf; it must be finite, in [0, 1)")
    if np.any(ab < 0) or np.any(ab >= 1):
        i = int(np.flatnonzero((ab < 0) | (ab >= 1))[0])
        raise ValueError(f"alpha_bars[{i}] = {float(ab[i])!r} is outside [0, 1)")
    if ab.shape[0] > 1 and np.any(np.diff(ab) >= 0):
        i = int(np.flatnonzero(np.diff(ab) >= 0)[0])
        raise ValueError(
            f"alpha_bars must be strictly decreasing: alpha_bars[{i}] = {float(ab[i])!r} <= "
            f"alpha_bars[{i + 1}] = {float(ab[i + 1])!r}"
        )
    prev = np.concatenate([[1.0], ab[:-1]])
    betas = 1.0 - ab / prev
    if ab[-1] == 0.0:
        betas[-1] = 1.0
    return Schedule(betas, name=name)


def cosine_alpha_bar(t, s: float = 0.008):
    """The cosine schedule's alpha_bar as a function of continuous t in [0, 1]
    (Nichol & Dhariwal 2021), MATH.md (2.5): f(t)/f(0), f(t) = cos^2(pi/2 (t+s)/(1+s)).

    NaN and inf in ``t`` propagate: not checked.

    Parameters
    ----------
    t : float or array
        Continuous time(s) in [0, 1].
    s : float
        The offset (0.008 in the paper).

    Returns
    -------
    float or numpy.ndarray
        alpha_bar(t).
    """
    t = _check_time("t", t)
    check_finite_scalar("s", s, low=0.0)
    f = lambda u: np.cos((u + s) / (1.0 + s) * np.pi / 2.0) ** 2  # noqa: E731
    return f(np.asarray(t, dtype=np.float64)) / f(0.0)


def rescale_zero_terminal_snr(schedule_or_betas) -> Schedule:
    """Rescale a schedule so that alpha_bar at the last step is exactly 0 (Lin et al. 2023,
    Algorithm 1), MATH.md (2.6): sqrt(alpha_bar) is shifted and scaled linearly so that
    its first value is kept and its last becomes 0.  The last beta becomes 1.

    Parameters
    ----------
    schedule_or_betas : Schedule or array-like (T,)
        The schedule (or its betas) to rescale.

    Returns
    -------
    Schedule
        With alpha_bar[T-1] = 0 and the same alpha_bar[0].
    """
    if not isinstance(schedule_or_betas, Schedule):
        _as_vector("schedule_or_betas", schedule_or_betas)
    sched = schedule_or_betas if isinstance(schedule_or_betas, Schedule) else schedule_from_betas(schedule_or_betas)
    if sched.T < 2:
        raise ValueError(f"zero terminal SNR needs T >= 2, got T = {sched.T}")
    sq = sched.sqrt_alpha_bars.copy()
    s0, sT = sq[0], sq[-1]
    sq = (sq - sT) * (s0 / (s0 - sT))
    ab = sq**2
    ab[-1] = 0.0
    ab[0] = sched.alpha_bars[0]
    return schedule_from_alpha_bars(ab, name=sched.name + "+zero_terminal_snr")


def make_schedule(kind: str, T: int = 1000, *, zero_terminal_snr: bool = False, **params) -> Schedule:
    """Build a named beta schedule (MATH.md (2.5)); all arrays float64, 0-based.

    Parameters
    ----------
    kind : {"linear", "scaled_linear", "cosine", "sigmoid"}
        ``"linear"``: betas linear from ``beta_start=1e-4`` to ``beta_end=0.02`` (DDPM).
        ``"scaled_linear"``: sqrt(beta) linear from sqrt(``beta_start=0.00085``) to
        sqrt(``beta_end=0.012``) (latent diffusion).
        ``"cosine"``: ``beta_t = min(1 - abar(t+1/T)/abar(t/T), max_beta)`` with the cosine
        alpha_bar of :func:`cosine_alpha_bar` (``s=0.008``, ``max_beta=0.999``).
        ``"sigmoid"``: ``beta_start + (beta_end - beta_start) * sigmoid(linspace(start, end, T))``
        with ``start=-6``, ``end=6``, ``beta_start=1e-4``, ``beta_end=0.02`` (the form of the
        widely used PyTorch library's DDPM scheduler).
    T : int
        Number of diffusion steps (>= 1).
    zero_terminal_snr : bool
        Apply :func:`rescale_zero_terminal_snr` afterwards (diffusers'
        ``rescale_betas_zero_snr``).
    **params
        Overrides of the kind's defaults above (``beta_start``, ``beta_end``, ``s``,
        ``max_beta``, ``start``, ``end``); an unknown name is a ValueError.

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        For an unknown kind or parameter, or T < 1.
    """
    check_bool("zero_terminal_snr", zero_terminal_snr)
    T = _check_T(T)
    defaults = {
        "linear": {"beta_start": 1e-4, "beta_end": 0.02},
        "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
        "cosine": {"s": 0.008, "max_beta": 0.999},
        "sigmoid": {"beta_start": 1e-4, "beta_end": 0.02, "start": -6.0, "end": 6.0},
    }
    if kind not in defaults:
        raise ValueError(f"unknown schedule kind {kind!r}; valid kinds: {', '.join(defaults)}")
    unknown = set(params) - set(defaults[kind])
    if unknown:
        raise TypeError(
            f"make_schedule({kind!r}) got unknown parameter(s) {sorted(unknown)}; "
            f"valid: {sorted(defaults[kind])}"
        )
    p = {**defaults[kind], **params}
    for k, v in p.items():
        if not np.isfinite(v):
            raise ValueError(f"{k} = {v!r} must be finite")
    if kind in ("linear", "scaled_linear", "sigmoid"):
        for k in ("beta_start", "beta_end"):
            if not 0 < p[k] <= 1:
                raise ValueError(f"{k} = {p[k]!r} is outside (0, 1]")
    if kind == "linear":
        betas = np.linspace(p["beta_start"], p["beta_end"], T, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(math.sqrt(p["beta_start"]), math.sqrt(p["beta_end"]), T, dtype=np.float64) ** 2
    elif kind == "cosine":
        if not p["s"] >= 0:
            raise ValueError(f"s = {p['s']!r} must be >= 0")
        if not 0 < p["max_beta"] <= 1:
            raise ValueError(f"max_beta = {p['max_beta']!r} is outside (0, 1]")
        grid = np.arange(T + 1, dtype=np.float64) / T
        ab = cosine_alpha_bar(grid, p["s"])
        betas = np.minimum(1.0 - ab[1:] / ab[:-1], p["max_beta"])
    else:  # sigmoid
        z = np.linspace(p["start"], p["end"], T, dtype=np.float64)
        betas = p["beta_start"] + (p["beta_end"] - p["beta_start"]) / (1.0 + np.exp(-z))
    sched = Schedule(betas, name=kind)
    if zero_terminal_snr:
        sched = rescale_zero_terminal_snr(sched)
    return sched


# ---------------------------------------------------------------------------- VP <-> VE
def sigma_from_alpha_bar(alpha_bar):
    """VE noise level of a VP marginal, MATH.md (2.8): sigma = sqrt((1 - abar) / abar).

    NaN and inf propagate: not checked.

    Parameters
    ----------
    alpha_bar : float or array
        Values in (0, 1].

    Returns
    -------
    float or array
        sigma, the VE noise level.
    """
    alpha_bar = _check_time("alpha_bar", alpha_bar)
    xp = array_namespace(alpha_bar)
    return xp.sqrt((1.0 - alpha_bar) / alpha_bar)


def alpha_bar_from_sigma(sigma):
    """Inverse of (2.8): alpha_bar = 1 / (1 + sigma^2).  sigma must be >= 0.

    NaN propagates: not checked.

    Parameters
    ----------
    sigma : float or array
        VE noise levels >= 0.

    Returns
    -------
    float or array
        alpha_bar.
    """
    sigma = _check_time("sigma", sigma)
    xp = array_namespace(sigma)
    if bool(xp.any(sigma < 0)):
        raise ValueError(f"sigma contains {float(xp.min(sigma))!r}; sigma must be >= 0 (a VE noise level)")
    return 1.0 / (1.0 + sigma * sigma)


# ---------------------------------------------------------------------------- grids
def timesteps(T: int, n: int, spacing: str = "trailing", steps_offset: int = 0, *, rounding: str = "library"):
    """``n`` strictly decreasing integer timesteps in [0, T-1] (MATH.md (2.9)).

    The default spacing is ``"trailing"``, the one ``refdiff sample`` and the README use:
    it is the only spacing whose first timestep is always T-1, so a sampler started from
    x_T ~ N(0, I) starts at the noise level that x_T actually has (with "leading" and
    n = 10 of T = 1000 the first step is t = 900, where alpha_bar is far from 0, so the
    pure-noise start is mismatched).  Pass ``spacing="leading"`` (with ``steps_offset=1``
    for Stable Diffusion configs) to reproduce a scheduler configured that way.

    Parameters
    ----------
    T : int
        The number of training timesteps (>= 1).
    n : int
        The number of sampling timesteps, in [1, T].
    spacing : {"trailing", "leading", "linspace"}
        The conventions of the widely used PyTorch library, rounding half to even:
        ``"linspace"``: ``round(linspace(0, T-1, n))`` reversed — includes 0 and T-1.
        ``"leading"``: ``k * (T // n) + steps_offset`` for k = n-1, ..., 0 — includes 0
        (plus offset), usually not T-1.
        ``"trailing"``: ``round(T - (n-1-k) * T / n) - 1`` for k = n-1, ..., 0 — includes T-1.
    steps_offset : int, default 0
        Added to every "leading" timestep (e.g. 1 for Stable Diffusion configs).  It is an
        error with other spacings, where the PyTorch library silently ignores it.
    rounding : {"library", "exact"}
        For "trailing" only.  ``"library"`` (default) reproduces the PyTorch library's
        floating-point arithmetic, ``np.arange(T, 0, -T/n)`` — which NumPy evaluates as
        ``T + k * delta`` with ``delta = (T - T/n) - T`` — so that grids compare equal to
        that library's.  Its rounding error moves some exact half-integers below .5 (T =
        1000, n = 48: 937.5 becomes 937.4999999999999, so the grid holds 936, not 937;
        MATH.md (2.9)).  ``"exact"`` rounds the exact rationals T (n - k) / n half to even.
        For some n (T = 1000: n = 61, 103, 121, ...) the library's ``arange`` also yields an
        (n+1)-th value just below 0 that becomes timestep -1; refdiff returns n timesteps.

    Returns
    -------
    numpy.ndarray
        int64, shape (n,), strictly decreasing, in [0, T-1] (grids are host-side control flow).

    Raises
    ------
    TypeError
        If ``T`` or ``n`` is not an integer.
    ValueError
        If T < 1, n is outside [1, T], ``steps_offset`` is negative or set with a spacing
        other than "leading" or pushes the first timestep past T-1, or ``spacing`` /
        ``rounding`` is unknown.
    """
    T = _check_T(T)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {n!r}")
    if not 1 <= n <= T:
        raise ValueError(f"n = {n} steps is outside [1, T] = [1, {T}]")
    if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)) or steps_offset < 0:
        raise ValueError(f"steps_offset must be a non-negative integer, got {steps_offset!r}")
    if spacing == "linspace":
        ts = np.round(np.linspace(0, T - 1, n)).astype(np.int64)[::-1]
    elif spacing == "leading":
        ts = (np.arange(n, dtype=np.int64) * (T // n))[::-1] + int(steps_offset)
    elif spacing == "trailing":
        if rounding == "exact":  # exact rationals: halves are exact before rounding half to even
            ts = np.array([round(Fraction(T * (n - k), n)) - 1 for k in range(n)], dtype=np.int64)
        elif rounding == "library":  # NumPy's arange arithmetic, as the PyTorch library evaluates it
            delta = (T - T / n) - T
            ts = np.round(np.array([T + k * delta for k in range(n)])).astype(np.int64) - 1
        else:
            raise ValueError(f"unknown rounding {rounding!r}; valid: 'library', 'exact'")
    else:
        raise ValueError(f"unknown spacing {spacing!r}; valid: 'linspace', 'leading', 'trailing'")
    if steps_offset and spacing != "leading":
        raise ValueError(f"steps_offset = {steps_offset} applies only to spacing='leading', not {spacing!r}")
    if ts[0] > T - 1:
        raise ValueError(
            f"steps_offset = {steps_offset} pushes the first timestep to {int(ts[0])}, out of range [0, {T - 1}]"
        )
    return np.ascontiguousarray(ts)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, *, append_zero: bool = False):
    """The noise levels of Karras et al. (2022), MATH.md (2.10), decreasing:
    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.

    Returns a float64 NumPy array of length n (n+1 with a final 0 if ``append_zero``).
    rho = 1 gives a linear grid.

    Parameters
    ----------
    n : int
        The number of noise levels (>= 1; n = 1 gives ``[sigma_max]``).
    sigma_min, sigma_max : float
        The last and first levels, finite and > 0, sigma_min < sigma_max when n > 1; the
        endpoints are returned exactly.
    rho : float, default 7.0
        The warping exponent (finite, > 0).
    append_zero : bool, default False
        Append a final sigma = 0 (the k-diffusion convention for the last step to the data).

    Returns
    -------
    numpy.ndarray
        float64, shape (n,) or (n + 1,), decreasing.

    Raises
    ------
    ValueError
        If n is not an integer >= 1, a sigma is not finite and positive, sigma_min >=
        sigma_max (n > 1), or rho is not finite and positive.
    """
    _check_real(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    check_bool("append_zero", append_zero)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} = {v!r} must be finite and > 0")
    if not sigma_min < sigma_max and n > 1:
        raise ValueError(f"sigma_min = {sigma_min!r} must be < sigma_max = {sigma_max!r}")
    if not (np.isfinite(rho) and rho > 0):
        raise ValueError(f"rho = {rho!r} must be finite and > 0")
    if n == 1:
        sig = np.array([float(sigma_max)])
    else:
        ramp = np.arange(n, dtype=np.float64) / (n - 1)
        a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
        sig = (a + ramp * (b - a)) ** rho
        sig[0], sig[-1] = sigma_max, sigma_min  # exact endpoints
    return np.concatenate([sig, [0.0]]) if append_zero else sig


def _check_sigma_range(n, sigma_min, sigma_max):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name} = {v!r} must be finite and > 0")
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min = {sigma_min!r} must be < sigma_max = {sigma_max!r}")


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float, *, append_zero: bool = False):
    """n noise levels uniform in log sigma from sigma_max down to sigma_min, MATH.md (2.18)
    (k-diffusion's ``get_sigmas_exponential``); float64, a final 0 with ``append_zero``.

    Parameters
    ----------
    n : int
        The number of noise levels (>= 2).
    sigma_min, sigma_max : float
        The last and first levels, finite, > 0, sigma_min < sigma_max; returned exactly.
    append_zero : bool, default False
        Append a final sigma = 0.

    Returns
    -------
    numpy.ndarray
        float64, shape (n,) or (n + 1,), decreasing from sigma_max.

    Raises
    ------
    ValueError
        If n is not an integer >= 2, a sigma is not finite and positive, or sigma_min >= sigma_max.
    """
    _check_real(sigma_min=sigma_min, sigma_max=sigma_max)
    check_bool("append_zero", append_zero)
    _check_sigma_range(n, sigma_min, sigma_max)
    sig = np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))
    sig[0], sig[-1] = sigma_max, sigma_min
    return np.concatenate([sig, [0.0]]) if append_zero else sig


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, *,
                           append_zero: bool = False):
    """n noise levels with log sigma = log sigma_min + (1 - i/(n-1))^rho (log sigma_max - log
    sigma_min), MATH.md (2.18) (k-diffusion's ``get_sigmas_polyexponential``); rho = 1 is
    :func:`exponential_sigmas`.

    Parameters
    ----------
    n : int
        The number of noise levels (>= 2).
    sigma_min, sigma_max : float
        The last and first levels, finite, > 0, sigma_min < sigma_max; returned exactly.
    rho : float, default 1.0
        The exponent of the ramp (finite, > 0); rho > 1 puts more levels near sigma_min.
    append_zero : bool, default False
        Append a final sigma = 0.

    Returns
    -------
    numpy.ndarray
        float64, shape (n,) or (n + 1,), decreasing from sigma_max.

    Raises
    ------
    ValueError
        If n is not an integer >= 2, a sigma is not finite and positive, sigma_min >=
        sigma_max, or rho is not finite and positive.
    """
    _check_real(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    check_bool("append_zero", append_zero)
    _check_sigma_range(n, sigma_min, sigma_max)
    if not (np.isfinite(rho) and rho > 0):
        raise ValueError(f"rho = {rho!r} must be finite and > 0")
    ramp = (1.0 - np.arange(n, dtype=np.float64) / (n - 1)) ** rho
    sig = np.exp(math.log(sigma_min) + ramp * (math.log(sigma_max) - math.log(sigma_min)))
    sig[0], sig[-1] = sigma_max, sigma_min
    return np.concatenate([sig, [0.0]]) if append_zero else sig


# ---------------------------------------------------------------------------- continuous time
def _check_time(name: str, t):
    """A continuous time (or log alpha, lambda): a real number (as float64) or a float
    array; bools, integer arrays (never computed in integer arithmetic), complex and
    non-arrays are refused.  Values are not read (no finiteness check)."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number or a real floating array, got {t!r}")
    if isinstance(t, (int, float, np.integer, np.floating)):
        return np.float64(t)
    return check_array(name, t, allow_empty=True)


def _check_real(**values) -> None:
    """TypeError unless each value is a real number (bools, complex, None, strings refused);
    the range checks follow in each function."""
    for name, v in values.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number, got {v!r}")


class _ContinuousVP:
    """Common methods of continuous-time VP schedules, t in [0, 1] with t = 0 data and
    t = 1 noise.  Subclasses define ``log_alpha(t)`` and ``t_from_log_alpha``."""

    t_max: float = 1.0
    t_min: float

    def alpha(self, t):
        """alpha_t = sqrt(alpha_bar(t)), MATH.md (2.11)."""
        xp = array_namespace(t)
        return xp.exp(self.log_alpha(t))

    def sigma(self, t):
        """sigma_t = sqrt(1 - alpha_t^2), MATH.md (2.11)."""
        xp = array_namespace(t)
        return xp.sqrt(-xp.expm1(2.0 * self.log_alpha(t)))

    def lambda_(self, t):
        """Half log-SNR lambda_t = log alpha_t - log sigma_t, MATH.md (2.12)."""
        xp = array_namespace(t)
        la = self.log_alpha(t)
        return la - 0.5 * xp.log(-xp.expm1(2.0 * la))

    def t_from_lambda(self, lam):
        """Inverse of :meth:`lambda_`, MATH.md (2.13): log alpha = -log(1 + e^{-2 lambda}) / 2."""
        lam = _check_time("lam", lam)
        xp = array_namespace(lam)
        log_alpha = -0.5 * xp.logaddexp(xp.zeros_like(lam), -2.0 * lam)
        return self.t_from_log_alpha(log_alpha)

    def beta(self, t):
        """beta(t) = -2 d log alpha_t / dt: the VP SDE's diffusion g(t)^2 and minus twice
        its drift coefficient f(t), MATH.md (2.14)."""
        return -2.0 * self.dlog_alpha_dt(t)


class LinearVP(_ContinuousVP):
    """The linear-beta VP SDE of Song et al. (2021): beta(t) = beta_0 + t (beta_1 - beta_0),
    log alpha_t = -t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2, MATH.md (2.11).

    Parameters
    ----------
    beta_0, beta_1 : float
        beta(0) and beta(1), 0 < beta_0 < beta_1.
    t_min : float
        The smallest time samplers and likelihoods use, in (0, 1).
    """

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, t_min: float = 1e-3):
        check_finite_scalar("beta_0", beta_0, low=0.0, low_open=True)
        check_finite_scalar("beta_1", beta_1, low=0.0, low_open=True)
        check_finite_scalar("t_min", t_min, low=0.0, low_open=True)
        if not beta_0 < beta_1:
            raise ValueError(f"need 0 < beta_0 < beta_1, got beta_0 = {beta_0!r}, beta_1 = {beta_1!r}")
        if not 0 < t_min < 1:
            raise ValueError(f"t_min = {t_min!r} is outside (0, 1)")
        self.beta_0, self.beta_1, self.t_min = float(beta_0), float(beta_1), float(t_min)

    def log_alpha(self, t):
        """
        log alpha_t of (2.11).

        NaN and inf propagate: not checked; integer arrays are refused (TypeError).

        Parameters
        ----------
        t : numpy.ndarray
            Times in [0, 1].

        Returns
        -------
        numpy.ndarray
        """
        t = _check_time("t", t)
        return -0.25 * t * t * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def dlog_alpha_dt(self, t):
        """
        d log alpha_t / dt = -beta(t) / 2.

        NaN and inf propagate: not checked; integer arrays are refused (TypeError).

        Parameters
        ----------
        t : numpy.ndarray
            Times in [0, 1].

        Returns
        -------
        numpy.ndarray
        """
        t = _check_time("t", t)
        return -0.5 * (self.beta_0 + t * (self.beta_1 - self.beta_0))

    def t_from_log_alpha(self, log_alpha):
        # solve (b1-b0)/4 t^2 + b0/2 t + log_alpha = 0 for t >= 0 (stable root form)
        """
        The time with the given log alpha (the positive root of the quadratic (2.11)).

        NaN and inf propagate: not checked.

        Parameters
        ----------
        log_alpha : numpy.ndarray
            Values <= 0.

        Returns
        -------
        numpy.ndarray
        """
        log_alpha = _check_time("log_alpha", log_alpha)
        xp = array_namespace(log_alpha)
        d = self.beta_1 - self.beta_0
        disc = self.beta_0**2 - 4.0 * d * log_alpha
        return (-4.0 * log_alpha) / (self.beta_0 + xp.sqrt(disc))

    def __repr__(self):
        return f"LinearVP(beta_0={self.beta_0}, beta_1={self.beta_1})"


class InterpolatedVP(_ContinuousVP):
    """The continuous-time view of a discrete :class:`Schedule` used by DPM-Solver,
    MATH.md (2.15): array index k sits at t_k = (k + 1) / T and log alpha is linear in t
    between the knots (extended linearly beyond them).

    Parameters
    ----------
    schedule : Schedule
        The discrete schedule to interpolate.
    """

    def __init__(self, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
        if schedule.alpha_bars[-1] == 0.0:
            raise ValueError("InterpolatedVP needs alpha_bar > 0 at every step (zero terminal SNR has log alpha = -inf)")
        if schedule.T < 2:
            raise ValueError("InterpolatedVP needs T >= 2")
        self.schedule = schedule
        self._t = np.arange(1, schedule.T + 1, dtype=np.float64) / schedule.T
        self._la = 0.5 * np.log(schedule.alpha_bars)
        self.t_min = float(self._t[0])

    def _knots(self, like):
        return asarray_like(self._t, like, dtype=like.dtype), asarray_like(self._la, like, dtype=like.dtype)

    def log_alpha(self, t):
        """
        log alpha_t, linear between the knots (2.15).

        NaN and inf propagate: not checked; integer arrays are refused (TypeError).

        Parameters
        ----------
        t : numpy.ndarray
            Continuous times.

        Returns
        -------
        numpy.ndarray
        """
        t = _check_time("t", t)
        kt, kl = self._knots(t)
        return _interp(t, kt, kl)

    def dlog_alpha_dt(self, t):
        """
        The slope of log alpha_t on the knot interval holding t.

        NaN and inf propagate: not checked; integer arrays are refused (TypeError).

        Parameters
        ----------
        t : numpy.ndarray
            Continuous times.

        Returns
        -------
        numpy.ndarray
        """
        t = _check_time("t", t)
        kt, kl = self._knots(t)
        xp = array_namespace(t)
        n = kt.shape[0]
        tf = xp.reshape(t, (-1,))
        i = xp.clip(xp.searchsorted(kt, tf, side="right") - 1, 0, n - 2)
        slope = (xp.take(kl, i + 1) - xp.take(kl, i)) / (xp.take(kt, i + 1) - xp.take(kt, i))
        return xp.reshape(slope, t.shape)

    def t_from_log_alpha(self, log_alpha):
        """
        The time with the given log alpha (inverse of the piecewise-linear map).

        NaN and inf propagate: not checked.

        Parameters
        ----------
        log_alpha : numpy.ndarray
            Values of log alpha.

        Returns
        -------
        numpy.ndarray
        """
        log_alpha = _check_time("log_alpha", log_alpha)
        kt, kl = self._knots(log_alpha)
        xp = array_namespace(log_alpha)
        return _interp(log_alpha, xp.flip(kl), xp.flip(kt))

    def __repr__(self):
        return f"InterpolatedVP({self.schedule!r})"


def _interp(x, xk, yk):
    """Piecewise-linear interpolation through increasing knots (xk, yk), extended
    linearly beyond the first and last segments (as DPM-Solver's interpolate_fn)."""
    xp = array_namespace(x)
    shape = x.shape
    x = xp.reshape(x, (-1,))  # take() wants 1-d indices
    n = xk.shape[0]
    i = xp.clip(xp.searchsorted(xk, x, side="right") - 1, 0, n - 2)
    x0, x1 = xp.take(xk, i), xp.take(xk, i + 1)
    y0, y1 = xp.take(yk, i), xp.take(yk, i + 1)
    return xp.reshape(y0 + (x - x0) * (y1 - y0) / (x1 - x0), shape)


def time_grid(vp, n: int, kind: str = "logSNR", t_start: float | None = None, t_end: float | None = None):
    """``n + 1`` decreasing times from ``t_start`` (default 1, noise) to ``t_end``
    (default ``vp.t_min``), MATH.md (2.16):

    ``"logSNR"``: uniform in lambda; ``"time_uniform"``: uniform in t;
    ``"time_quadratic"``: uniform in sqrt(t).  Returns a float64 NumPy array.

    Parameters
    ----------
    vp : continuous VP schedule
        ``LinearVP``, ``InterpolatedVP`` or another ``_ContinuousVP`` (needs ``t_min``,
        ``t_max``, ``lambda_`` and ``t_from_lambda``).
    n : int
        The number of steps (>= 1); the grid has n + 1 times.
    kind : {"logSNR", "time_uniform", "time_quadratic"}
        The spacing, as above.
    t_start, t_end : float, optional
        The first and last times, 0 < t_end < t_start <= 1 (defaults ``vp.t_max`` and
        ``vp.t_min``); returned exactly.

    Returns
    -------
    numpy.ndarray
        float64, shape (n + 1,), decreasing from t_start to t_end.

    Raises
    ------
    ValueError
        If n is not an integer >= 1, the times are out of order or outside (0, 1], or
        ``kind`` is unknown.
    """
    if not isinstance(vp, _ContinuousVP):
        raise TypeError(f"vp must be a continuous VP schedule (LinearVP, InterpolatedVP), got {type(vp).__name__}")
    _check_real(**{k: v for k, v in (("t_start", t_start), ("t_end", t_end)) if v is not None})
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    t_start = vp.t_max if t_start is None else float(t_start)
    t_end = vp.t_min if t_end is None else float(t_end)
    if not 0 < t_end < t_start <= 1:
        raise ValueError(f"need 0 < t_end < t_start <= 1, got t_end = {t_end}, t_start = {t_start}")
    if kind == "logSNR":
        ends = np.array([t_start, t_end])
        lam = vp.lambda_(ends)
        lams = np.linspace(lam[0], lam[1], n + 1)
        ts = vp.t_from_lambda(lams)
        ts[0], ts[-1] = t_start, t_end
        return ts
    if kind == "time_uniform":
        return np.linspace(t_start, t_end, n + 1)
    if kind == "time_quadratic":
        ts = np.linspace(math.sqrt(t_start), math.sqrt(t_end), n + 1) ** 2
        ts[0], ts[-1] = t_start, t_end  # exact endpoints
        return ts
    raise ValueError(f"unknown grid kind {kind!r}; valid: 'logSNR', 'time_uniform', 'time_quadratic'")


def alpha_sigma(schedule, t, like):
    """(alpha_t, sigma_t) of x_t = alpha_t x_0 + sigma_t eps at time(s) ``t``, in the
    namespace and floating dtype of ``like``, shaped to broadcast against it.

    * ``schedule`` a :class:`Schedule` and ``t`` integer (int or integer array): the
      discrete values sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t), MATH.md (2.4).
    * ``schedule`` a :class:`Schedule` and ``t`` floating ("continuous index" tau in
      [0, T-1]): the DPM-Solver interpolation, MATH.md (2.15), at time (tau + 1) / T; at
      integer-valued tau this equals the discrete values to rounding.
    * ``schedule`` a continuous VP (:class:`LinearVP`, :class:`InterpolatedVP`) and ``t``
      floating times in (0, 1].

    Parameters
    ----------
    schedule : Schedule or continuous VP
        A discrete schedule (integer or fractional index t, MATH.md (2.15)) or a continuous VP
        (t in [0, 1]).
    t : int, float or array (N,)
        Time(s).
    like : array (N, ...)
        Gives the namespace, dtype and shape.

    Returns
    -------
    alpha, sigma : arrays broadcasting against ``like``
    """
    check_array("like", like)
    if not isinstance(t, (int, float, np.integer, np.floating)) or isinstance(t, (bool, np.bool_)):
        check_array("t", t, dtype="real", ndim=(0, 1), allow_empty=True)
        if t.ndim == 1 and like.ndim >= 1 and t.shape[0] != like.shape[0]:
            raise ValueError(f"per-sample coefficient: t has shape {tuple(t.shape)} but like has shape "
                         f"{tuple(like.shape)} (batch size {like.shape[0]}): one time per sample")
    xp = array_namespace(like)
    dtype = like.dtype if xp.isdtype(like.dtype, "real floating") else xp.float64
    if isinstance(schedule, Schedule):
        is_int = isinstance(t, (int, np.integer)) or (
            not isinstance(t, float) and xp.isdtype(array_namespace(t).asarray(t).dtype, "integral")
        )
        if is_int:
            return gather(schedule.sqrt_alpha_bars, t, like), gather(schedule.sqrt_one_minus_alpha_bars, t, like)
        vp = InterpolatedVP(schedule)
        tau = _as_float_t(t, like)
        lo = float(xp.min(tau))
        # Above T-1 the linear extension keeps 0 < alpha < 1 (EDM's churn goes there); below 0 it
        # gives alpha > 1.  The tolerance covers round-off of continuous-index arithmetic.
        if not lo >= -1e-9 * schedule.T:
            raise ValueError(
                f"continuous index t = {lo!r} is below 0: the interpolated log alpha of MATH.md (2.15) would "
                f"exceed 0 (alpha > 1); valid: t >= 0 (and t <= {schedule.T - 1} within the schedule)"
            )
        tc = (tau + 1.0) / schedule.T
    elif isinstance(schedule, _ContinuousVP):
        vp = schedule
        tc = _as_float_t(t, like)
    else:
        raise TypeError(f"schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")
    log_alpha = vp.log_alpha(tc)  # once: alpha and sigma both follow from it, MATH.md (2.11)
    a, s = xp.exp(log_alpha), xp.sqrt(-xp.expm1(2.0 * log_alpha))
    if tc.ndim == 1 and like.ndim >= 1:
        shape = (tc.shape[0],) + (1,) * (like.ndim - 1)  # (N,) -> (N,1,...)
        a, s = xp.reshape(a, shape), xp.reshape(s, shape)
    return xp.astype(a, dtype), xp.astype(s, dtype)


def _as_float_t(t, like):
    if isinstance(t, (float, int, np.floating, np.integer)):
        return asarray_like(float(t), like, dtype=array_namespace(like).float64)
    xp = array_namespace(like)
    return xp.astype(t, xp.float64) if array_namespace(t) is xp else asarray_like(np.asarray(t, dtype=np.float64), like, dtype=xp.float64)
