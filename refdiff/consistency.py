"""Consistency models: the boundary parameterisation, noise grids and curricula, the ideal
consistency function, the closed-form fixed points of the discrete objectives, and
multistep consistency sampling, MATH.md chapter 18 (sections 18.1-18.3).

Path: the variance-exploding path of the consistency-models release, x_sigma = x0 + sigma z
(alpha = 1).  A consistency function f(x, sigma) maps every point of a probability-flow ODE
trajectory to the trajectory's point at sigma_min.  The training losses (CT, CD, iCT) are in
:mod:`refdiff.consistency_training`; LCM and progressive distillation in :mod:`refdiff.distill`.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import check_array, check_finite_scalar, check_int
from .backend import array_namespace, to_numpy
from .schedules import karras_sigmas

__all__ = ["CM_FORMS", "cm_scalings", "cm_noise_input", "cm_karras_sigmas", "cm_curriculum", "cm_adaptive_ema",
           "curriculum_stages", "ict_noise_probs", "ict_loss_weights", "ideal_consistency", "cm_fixed_point", "consistency_sample"]

CM_FORMS = ("boundary", "edm", "lcm")


def _check_sigma_data(sigma_data, sigma_min):
    check_finite_scalar("sigma_data", sigma_data, low=0.0, low_open=True)
    check_finite_scalar("sigma_min", sigma_min, low=0.0)


def _sigma_arg(sigma, name="sigma"):
    """A noise level: a finite real number or a finite float array (issue 19)."""
    if hasattr(sigma, "shape") and hasattr(sigma, "dtype") and not isinstance(sigma, np.generic):
        check_array(name, sigma, finite=True, allow_empty=True)
        return sigma
    return check_finite_scalar(name, sigma)


def cm_scalings(sigma, sigma_data=0.5, sigma_min=0.002, *, form="boundary", timestep_scaling=1.0):
    """(c_skip, c_out, c_in) of a consistency function f = c_skip x + c_out F(c_in x, c_noise),
    MATH.md (18.1).

    ``form="boundary"`` (the consistency-models release, ``get_scalings_for_boundary_condition``):
    c_skip = sd^2/((sigma - sigma_min)^2 + sd^2), c_out = (sigma - sigma_min) sd/sqrt(sigma^2 + sd^2),
    so f(x, sigma_min) = x exactly.  ``"edm"``: EDM's scalings (no boundary).  ``"lcm"``
    (diffusers' LCMScheduler and iCT research script): u = timestep_scaling sigma,
    c_skip = sd^2/(u^2 + sd^2), c_out = u/sqrt(u^2 + sd^2): the boundary is at sigma = 0, not
    sigma_min, and c_out lacks the sd factor, MATH.md (18.2).  c_in = 1/sqrt(sigma^2 + sd^2)
    throughout.  ``sigma``: float or array; must be >= sigma_min for the boundary form.

    Parameters
    ----------
    sigma : float or array
        Noise level(s); >= ``sigma_min`` for the boundary form, >= 0 otherwise.
    sigma_data : float, default 0.5
        sd, the data standard deviation (> 0).
    sigma_min : float, default 0.002
        The boundary noise level (>= 0).
    form : {"boundary", "edm", "lcm"}, default "boundary"
        Which scalings.
    timestep_scaling : float, default 1.0
        The factor of u = timestep_scaling sigma in the ``"lcm"`` form (> 0).

    Returns
    -------
    c_skip, c_out, c_in : float or array
        Floats for a float ``sigma``; arrays of the shape of ``sigma`` otherwise.

    Raises
    ------
    ValueError
        If ``sigma_data``, ``sigma_min``, ``form`` or ``timestep_scaling`` is invalid, or
        ``sigma`` is below ``sigma_min`` (boundary form) or negative.
    """
    _check_sigma_data(sigma_data, sigma_min)
    if form not in CM_FORMS:
        raise ValueError(f"cm_scalings: unknown form {form!r}; valid: {', '.join(CM_FORMS)}")
    sigma = _sigma_arg(sigma)
    check_finite_scalar("timestep_scaling", timestep_scaling, low=0.0, low_open=True)
    xp = array_namespace(sigma) if hasattr(sigma, "shape") else None
    s = sigma if xp is not None else float(sigma)
    lo = float(xp.min(s)) if xp is not None else s
    if form == "boundary" and lo < sigma_min:
        raise ValueError(f"cm_scalings: sigma contains {lo!r} < sigma_min = {sigma_min!r}; the boundary form "
                         f"needs sigma >= sigma_min")
    if lo < 0:
        raise ValueError(f"cm_scalings: sigma contains {lo!r}; sigma must be >= 0")
    sqrt = xp.sqrt if xp is not None else math.sqrt
    sd2 = sigma_data * sigma_data
    c_in = 1.0 / sqrt(s * s + sd2)
    if form == "boundary":
        d = s - sigma_min
        return sd2 / (d * d + sd2), d * sigma_data * c_in, c_in
    if form == "edm":
        return sd2 / (s * s + sd2), s * sigma_data * c_in, c_in
    if not timestep_scaling > 0:
        raise ValueError(f"cm_scalings: timestep_scaling = {timestep_scaling!r} must be > 0")
    u = float(timestep_scaling) * s
    return sd2 / (u * u + sd2), u / sqrt(u * u + sd2), c_in


def cm_noise_input(sigma):
    """The network's noise input of the consistency-models release: c_noise = 1000 * 0.25 *
    log(sigma + 1e-44), MATH.md (18.1).

    Parameters
    ----------
    sigma : float or array
        Noise level(s) (>= 0).

    Returns
    -------
    float or array
        c_noise, a float for a float ``sigma``, else an array of its shape.
    """
    sigma = _sigma_arg(sigma)
    xp = array_namespace(sigma) if hasattr(sigma, "shape") else None
    return 250.0 * (xp.log(sigma + 1e-44) if xp is not None else math.log(float(sigma) + 1e-44))


def _check_n(N, who):
    check_int("N", N, min=2, hint=" (a consistency grid needs two noise levels)")
    if N > 10**7:
        raise ValueError(f"{who}: N = {N} exceeds 10**7 noise levels")


def cm_karras_sigmas(N, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The consistency-models noise grid, increasing, MATH.md (18.3):
    sigma_i = (sigma_min^(1/rho) + i/(N-1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,
    i = 0..N-1, so sigma_0 = sigma_min and sigma_{N-1} = sigma_max (float64, shape (N,)).

    Parameters
    ----------
    N : int
        Number of noise levels (>= 2).
    sigma_min : float, default 0.002
        The smallest level (> 0).
    sigma_max : float, default 80.0
        The largest level (> sigma_min).
    rho : float, default 7.0
        The exponent (> 0).

    Returns
    -------
    numpy.ndarray (N,)
        Float64 levels, increasing.

    Raises
    ------
    ValueError
        If ``N`` is not an integer >= 2, or ``sigma_min``, ``sigma_max`` or ``rho`` is out of
        range.
    """
    _check_n(N, "cm_karras_sigmas")
    check_finite_scalar("sigma_min", sigma_min, low=0.0, low_open=True)
    check_finite_scalar("sigma_max", sigma_max, low=0.0, low_open=True)
    check_finite_scalar("rho", rho, low=0.0, low_open=True)
    if not (0 < sigma_min < sigma_max):
        raise ValueError(f"cm_karras_sigmas: need 0 < sigma_min < sigma_max, got sigma_min = {sigma_min!r}, "
                         f"sigma_max = {sigma_max!r}")
    if not rho > 0:
        raise ValueError(f"cm_karras_sigmas: rho = {rho!r} must be > 0")
    return karras_sigmas(N, sigma_min, sigma_max, rho)[::-1].copy()  # MATH.md (2.10), increasing


def cm_curriculum(k, K, s0=2, s1=150, kind="cm"):
    """The number of noise levels N(k) at training step k of K, MATH.md (18.4).

    ``kind="cm"`` (the original progressive schedule, ``create_ema_and_scales_fn``):
    N(k) = max(ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1), 1) + 1.
    ``kind="ict"`` (improved CT, doubling): N(k) = min(s0 2^floor(k/K'), s1) + 1 with
    K' = floor(K / (log2 floor(s1/s0) + 1)).  (iCT defaults: s0 = 10, s1 = 1280.)

    Parameters
    ----------
    k : int
        The training step, 0 <= k <= K.
    K : int
        The total number of training steps (>= 1).
    s0 : int, default 2
        The initial number of discretisation intervals (>= 1).
    s1 : int, default 150
        The final number of intervals (>= s0).
    kind : {"cm", "ict"}, default "cm"
        The original progressive schedule or iCT's doubling schedule.

    Returns
    -------
    int
        N(k), the number of noise levels (>= 2).

    Raises
    ------
    TypeError
        If ``k``, ``K``, ``s0`` or ``s1`` is not an integer.
    ValueError
        If they are out of range or ``kind`` is unknown.
    """
    for name, v in (("k", k), ("K", K), ("s0", s0), ("s1", s1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"cm_curriculum: {name} = {v!r} must be an integer")
    if not 0 <= k <= K or K < 1:
        raise ValueError(f"cm_curriculum: need K >= 1 and 0 <= k <= K, got k = {k}, K = {K}")
    if s0 < 1 or s1 < s0:
        raise ValueError(f"cm_curriculum: need 1 <= s0 <= s1 (s0 = {s0} leaves fewer than 2 noise "
                         f"levels; s1 = {s1})")
    if kind == "cm":
        return max(math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1), 1) + 1
    if kind == "ict":
        Kp = math.floor(K / (math.log2(math.floor(s1 / s0)) + 1))
        return min(s0 * 2 ** (k // max(Kp, 1)), s1) + 1
    raise ValueError(f"cm_curriculum: unknown kind {kind!r}; valid: 'cm', 'ict'")


def cm_adaptive_ema(k, K, mu0=0.9, s0=2, s1=150):
    """The original CT's adaptive EMA rate, MATH.md (18.5): mu(k) = exp(s0 ln(mu0) / (N(k) - 1))
    with N(k) the ``"cm"`` curriculum (the release: c = -ln(mu0) s0, mu = exp(-c / scales)).

    Parameters
    ----------
    k : int
        The training step, 0 <= k <= K.
    K : int
        The total number of training steps.
    mu0 : float, default 0.9
        The EMA rate at N = s0 + 1, in (0, 1).
    s0 : int, default 2
        The initial number of intervals of the ``"cm"`` curriculum.
    s1 : int, default 150
        Its final number of intervals.

    Returns
    -------
    float
        The EMA decay rate mu(k).

    Raises
    ------
    ValueError
        If ``mu0`` is not in (0, 1) (and as :func:`cm_curriculum`).
    TypeError
        As :func:`cm_curriculum`.
    """
    check_finite_scalar("mu0", mu0)
    check_int("s0", s0, min=1)
    if not 0 < mu0 < 1:
        raise ValueError(f"cm_adaptive_ema: mu0 = {mu0!r} must be in (0, 1)")
    return math.exp(s0 * math.log(mu0) / (cm_curriculum(k, K, s0, s1, "cm") - 1))


def curriculum_stages(K, s0=10, s1=1280, kind="ict", mu0=None):
    """The curriculum N(k) of MATH.md (18.4) over k = 0..K-1 as stages of constant N:
    a list of (first step, end step (exclusive), N, mu) with mu the adaptive EMA rate of
    MATH.md (18.5) (``kind="cm"`` with ``mu0``), else None.  Training runs one stage at a time
    (e.g. ``refdiff.training.fit`` up to each end step with that stage's grid and EMA).

    Parameters
    ----------
    K : int
        The total number of training steps.
    s0 : int, default 10
        The initial number of intervals (:func:`cm_curriculum`).
    s1 : int, default 1280
        The final number of intervals.
    kind : {"ict", "cm"}, default "ict"
        The curriculum (:func:`cm_curriculum`).
    mu0 : float, optional
        The adaptive EMA's mu0 (:func:`cm_adaptive_ema`); only with ``kind="cm"``.

    Returns
    -------
    list of tuple
        ``(start, end, N, mu)`` per stage, covering steps 0..K-1 in order; ``mu`` is None
        without ``mu0``.

    Raises
    ------
    ValueError
        If ``mu0`` is given with a kind other than ``"cm"`` (and as :func:`cm_curriculum`).
    TypeError
        As :func:`cm_curriculum`.
    """
    check_int("K", K, min=1)
    if K > 10**7:
        raise ValueError(f"curriculum_stages: K = {K} exceeds 10**7 steps")
    if mu0 is not None and kind != "cm":
        raise ValueError("curriculum_stages: mu0 (the adaptive EMA) belongs to kind='cm'")
    Ns = [cm_curriculum(k, K, s0, s1, kind) for k in range(K)]
    out, start = [], 0
    for k in range(1, K + 1):
        if k == K or Ns[k] != Ns[start]:
            mu = None if mu0 is None else cm_adaptive_ema(start, K, mu0, s0, s1)
            out.append((start, k, Ns[start], mu))
            start = k
    return out


def ict_noise_probs(sigmas, P_mean=-1.1, P_std=2.0):
    """iCT's discretised log-normal distribution of the pair index i (pairs (sigma_i,
    sigma_{i+1}), i = 0..N-2, increasing grid), MATH.md (18.6):
    p(i) proportional to erf((ln sigma_{i+1} - P_mean)/(sqrt2 P_std)) - erf((ln sigma_i - P_mean)/(sqrt2 P_std)).

    Parameters
    ----------
    sigmas : array_like (N,)
        A strictly increasing positive grid of N >= 2 levels.
    P_mean : float, default -1.1
        The mean of ln sigma.
    P_std : float, default 2.0
        The standard deviation of ln sigma (> 0).

    Returns
    -------
    numpy.ndarray (N - 1,)
        Float64 probabilities of the pairs, summing to 1.

    Raises
    ------
    ValueError
        If ``sigmas`` is not such a grid or ``P_std`` is not positive.
    """
    from scipy.special import erf

    s = _increasing(sigmas, "ict_noise_probs")
    check_finite_scalar("P_mean", P_mean)
    check_finite_scalar("P_std", P_std, low=0.0, low_open=True)
    if not P_std > 0:
        raise ValueError(f"ict_noise_probs: P_std = {P_std!r} must be > 0")
    e = erf((np.log(s) - P_mean) / (math.sqrt(2.0) * P_std))
    p = e[1:] - e[:-1]
    return p / p.sum()


def ict_loss_weights(sigmas):
    """iCT's loss weight of pair i, MATH.md (18.7): lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i).

    Parameters
    ----------
    sigmas : array_like (N,)
        A strictly increasing positive grid of N >= 2 levels.

    Returns
    -------
    numpy.ndarray (N - 1,)
        Float64 weights of the pairs.

    Raises
    ------
    ValueError
        If ``sigmas`` is not such a grid.
    """
    s = _increasing(sigmas, "ict_loss_weights")
    return 1.0 / np.diff(s)


def _grid(sigmas, who, name="sigmas"):
    """A host float64 1-D noise grid (a list or an array of real numbers), else TypeError naming it."""
    v = np.asarray(sigmas) if isinstance(sigmas, (list, tuple)) else sigmas
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu":
        v = v.astype(np.float64)
    check_array(name, v, ndim=1, finite=True)
    return np.asarray(to_numpy(v), dtype=np.float64)


def _increasing(sigmas, who):
    s = _grid(sigmas, who)
    if s.ndim != 1 or s.size < 2 or not np.all(np.diff(s) > 0) or s[0] <= 0:
        raise ValueError(f"{who}: sigmas must be a strictly increasing positive 1-D grid of >= 2 levels, got {s!r}")
    return s


def ideal_consistency(oracle, x, sigma, sigma_min=0.002, *, rtol=1e-12, atol=1e-12):
    """The ideal consistency function f*(x, sigma): the probability-flow ODE of ``oracle``
    (any refdiff oracle with ``x0_mean``) integrated from sigma down to sigma_min, MATH.md (18.8):
    dx/d(ln s) = x - D(x, s), D(x, s) = E[x0 | x0 + s z = x], solved in u = ln s by scipy's
    DOP853 (all samples as one system).  For Gaussian data it is the closed form
    mu + U diag(sqrt((d + sigma_min^2)/(d + sigma^2))) U^T (x - mu) (data eigenvalues d).

    Parameters
    ----------
    oracle : oracle
        An object with ``x0_mean(x, alpha, sigma)`` (called with alpha = 1).
    x : array_like (N, ...)
        Points at noise level ``sigma`` (converted to float64 NumPy).
    sigma : float
        Their noise level (> sigma_min).
    sigma_min : float, default 0.002
        The end level (>= 0).
    rtol, atol : float, default 1e-12
        Tolerances of the ODE solver.

    Returns
    -------
    numpy.ndarray
        Float64 f*(x, sigma), the shape of ``x``.

    Raises
    ------
    ValueError
        If not sigma > sigma_min >= 0.
    RuntimeError
        If the ODE solver fails.
    """
    from scipy.integrate import solve_ivp

    if not hasattr(oracle, "x0_mean"):
        raise TypeError(f"oracle must be a refdiff oracle (with x0_mean), got {type(oracle).__name__}")
    check_array("x", x, min_ndim=1, finite=True)
    D = getattr(oracle, "D", None)
    if D is not None and int(np.prod(x.shape[1:])) != D:
        raise ValueError(f"x has shape {tuple(x.shape)}: {int(np.prod(x.shape[1:]))} entries per sample, but the "
                         f"oracle's data dimension is D = {D}")
    check_finite_scalar("sigma", sigma, low=0.0, low_open=True)
    check_finite_scalar("sigma_min", sigma_min, low=0.0)
    check_finite_scalar("rtol", rtol, low=0.0, low_open=True)
    check_finite_scalar("atol", atol, low=0.0, low_open=True)
    if not sigma > sigma_min >= 0:
        raise ValueError(f"ideal_consistency: need sigma > sigma_min >= 0, got sigma = {sigma!r}, "
                         f"sigma_min = {sigma_min!r}")
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape

    def rhs(u, y):
        s = math.exp(u)
        xt = y.reshape(shape)
        return (xt - np.asarray(oracle.x0_mean(xt, 1.0, s))).ravel()

    sol = solve_ivp(rhs, (math.log(sigma), math.log(sigma_min)), x.ravel(), method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"ideal_consistency: the ODE solver failed: {sol.message}")
    return sol.y[:, -1].reshape(shape)


def cm_fixed_point(d, sigmas, rule="ct"):
    """Per-level multipliers k_i of the minimiser of a discrete consistency objective on
    Gaussian data N(0, d) (one eigen-direction, per-level linear student f(x, sigma_i) = k_i x,
    k_0 = 1 on the increasing grid ``sigmas``), MATH.md (18.9):

    ``"ct"`` (= ``"cd_euler"``, = DDIM): k_i = k_{i-1} (d + sigma_i sigma_{i-1}) / (d + sigma_i^2);
    ``"cd_heun"``: k_i = k_{i-1} (1 + h (g + g') / 2), h = sigma_{i-1} - sigma_i,
    g = sigma_i/(d + sigma_i^2), g' = sigma_{i-1}/(d + sigma_{i-1}^2) (1 + h g);
    ``"exact"``: k_i = sqrt((d + sigma_0^2)/(d + sigma_i^2)), the ideal consistency function.

    Parameters
    ----------
    d : float
        The data variance of the eigen-direction (> 0).
    sigmas : array_like (N,)
        A strictly increasing positive grid of N >= 2 levels.
    rule : {"ct", "cd_euler", "cd_ddim", "cd_heun", "exact"}, default "ct"
        The objective (``"cd_ddim"`` is the same as ``"ct"``).

    Returns
    -------
    numpy.ndarray (N,)
        Float64 multipliers k_i, with k_0 = 1.

    Raises
    ------
    ValueError
        If ``sigmas`` is not such a grid, ``d`` is not positive, or ``rule`` is unknown.
    """
    s = _increasing(sigmas, "cm_fixed_point")
    check_finite_scalar("d", d)
    if not d > 0:
        raise ValueError(f"cm_fixed_point: data variance d = {d!r} must be > 0")
    if rule == "exact":
        return np.sqrt((d + s[0] ** 2) / (d + s ** 2))
    hi, lo = s[1:], s[:-1]
    if rule in ("ct", "cd_euler", "cd_ddim"):
        m = (d + hi * lo) / (d + hi * hi)
    elif rule == "cd_heun":
        h = lo - hi
        g = hi / (d + hi * hi)
        g2 = lo / (d + lo * lo) * (1.0 + h * g)
        m = 1.0 + h * (g + g2) / 2.0
    else:
        raise ValueError(f"cm_fixed_point: unknown rule {rule!r}; valid: 'ct', 'cd_euler', 'cd_ddim', 'cd_heun', "
                         f"'exact'")
    return np.concatenate([[1.0], np.cumprod(m)])


def consistency_sample(f, x_T, sigmas, noise=None, sigma_min=0.002):
    """One-step and multistep consistency sampling (Song et al. 2023, Algorithm 1), MATH.md (18.10):
    ``sigmas`` decreasing (tau_0 = sigma_max > tau_1 > ... > sigma_min); x0 = f(x_T, tau_0); for
    each later tau_j: x = x0 + sqrt(tau_j^2 - sigma_min^2) z_j, x0 = f(x, tau_j).
    ``f(x, sigma)`` a consistency function (float sigma); ``noise`` a sequence of
    len(sigmas) - 1 arrays of x_T's shape.  Returns (x0, trajectory of the f outputs).

    Parameters
    ----------
    f : callable
        ``f(x, sigma) -> x0``, a consistency function.
    x_T : array (N, ...)
        The initial noise at level ``sigmas[0]``.
    sigmas : array_like
        Strictly decreasing levels, all >= ``sigma_min``.
    noise : sequence of arrays, optional
        ``len(sigmas) - 1`` arrays of the shape of ``x_T``; None for one-step sampling.
    sigma_min : float, default 0.002
        The boundary level of ``f``.

    Returns
    -------
    x0 : array (N, ...)
        The last output of ``f``.
    trajectory : list of arrays
        The ``len(sigmas)`` outputs of ``f``, in order.

    Raises
    ------
    ValueError
        If ``sigmas`` is not strictly decreasing or below ``sigma_min``, or ``noise`` has the
        wrong length or shapes.
    """
    if not callable(f):
        raise TypeError(f"f must be callable (f(x, sigma) -> x0), got {type(f).__name__}")
    check_array("x_T", x_T, min_ndim=1, finite=True)
    check_finite_scalar("sigma_min", sigma_min, low=0.0)
    s = [float(v) for v in _grid(sigmas, "consistency_sample")]
    if not s or any(b >= a for a, b in zip(s, s[1:])) or s[-1] < sigma_min:
        raise ValueError(f"consistency_sample: sigmas must be strictly decreasing and >= sigma_min = {sigma_min}, "
                         f"got {s}")
    noise = [] if noise is None else list(noise)
    if len(noise) != len(s) - 1:
        raise ValueError(f"consistency_sample: {len(s)} levels need {len(s) - 1} noise arrays, got {len(noise)}")
    x0 = f(x_T, s[0])
    traj = [x0]
    for tau, z in zip(s[1:], noise):
        check_array("noise", z)
        if tuple(z.shape) != tuple(x_T.shape):
            raise ValueError(f"consistency_sample: noise of shape {tuple(z.shape)}, expected x_T's shape "
                             f"{tuple(x_T.shape)}")
        x0 = f(x0 + math.sqrt(tau * tau - sigma_min * sigma_min) * z, tau)
        traj.append(x0)
    return x0, traj
