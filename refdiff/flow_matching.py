"""Flow-matching / rectified-flow training, reflow and the flow-model scheduler conventions,
MATH.md chapter 18 (section 18.4).

Time convention (refdiff's, MATH.md (11.7)): x_t = (1 - t) x0 + t eps, t = 0 data, t = 1 noise,
velocity target u = eps - x0.  ``time_convention="t0_noise"`` (the RectifiedFlow repository):
x_s = s x0 + (1 - s) eps with s = 1 - t and target x0 - eps = -u.  diffusers'
FlowMatchEulerDiscreteScheduler writes sigma for refdiff's t.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import check_array, check_bool, check_choice, check_finite_scalar, check_int
from .backend import array_namespace, check_rng
from .samplers.common import check_args, check_schedule
from .samplers.flow import TIME_CONVENTIONS, eps_x0_from_flow_velocity, flow_rk4_step

__all__ = ["fm_interpolate", "fm_target", "fm_loss", "fm_loss_fn", "sample_flow_times", "logit_normal_density",
           "flow_shift", "flow_log_snr", "flow_time_shift", "flow_dynamic_mu", "flow_match_euler_sigmas",
           "fm_irreducible_loss", "fm_expected_irreducible_loss", "flow_velocity_to", "vp_model_from_flow", "reflow_pairs",
           "straightness", "rf_straightness_gaussian", "reflow_velocity_gaussian"]


def _eigenvalues(d):
    """Data eigenvalues: a finite float array of values >= 0 (host float64)."""
    check_array("data_eigenvalues", d, finite=True)
    d = np.asarray(d, dtype=np.float64).ravel()
    if np.any(d < 0):
        raise ValueError(f"data_eigenvalues must be >= 0, got min {d.min()!r}")
    return d


def _conv(time_convention):
    if time_convention not in TIME_CONVENTIONS:
        raise ValueError(f"unknown time_convention {time_convention!r}; valid: {', '.join(TIME_CONVENTIONS)}")


def _col(t, x):
    xp = array_namespace(x)
    if hasattr(t, "shape") and t.ndim > 0:
        return xp.reshape(xp.asarray(t, dtype=x.dtype), (x.shape[0],) + (1,) * (x.ndim - 1))
    return float(t)  # a number or a 0-d array: one time for the batch


@check_args(arrays=("x0", "noise"), coefs=("t",), same_shape=("x0", "noise"))
def fm_interpolate(x0, noise, t, time_convention="t0_data"):
    """The straight path point, MATH.md (18.15): (1 - t) x0 + t noise (t0_data) or
    t x0 + (1 - t) noise (t0_noise); ``t`` a float or (N,).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    x0 : array (N, ...)
        Data samples.
    noise : array (N, ...)
        Noise samples, the same shape as ``x0``.
    t : float or array (N,)
        Time(s) in [0, 1]; an array is reshaped to broadcast over the non-batch axes.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        Whether t = 0 is the data end (refdiff) or the noise end (RectifiedFlow repository).

    Returns
    -------
    array (N, ...)
        The path point x_t, in the dtype of ``x0``.

    Raises
    ------
    ValueError
        If ``time_convention`` is not one of the two conventions.
    """
    _conv(time_convention)
    t = _col(t, x0)
    return (1.0 - t) * x0 + t * noise if time_convention == "t0_data" else t * x0 + (1.0 - t) * noise


@check_args(arrays=("x0", "noise"), same_shape=("x0", "noise"))
def fm_target(x0, noise, time_convention="t0_data"):
    """The conditional velocity d x_t / dt, MATH.md (18.15): noise - x0 (t0_data), x0 - noise (t0_noise).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    x0 : array (N, ...)
        Data samples.
    noise : array (N, ...)
        Noise samples, the same shape as ``x0``.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        Whether t = 0 is the data end or the noise end.

    Returns
    -------
    array (N, ...)
        The regression target of the velocity model (constant along the straight path).

    Raises
    ------
    ValueError
        If ``time_convention`` is not one of the two conventions.
    """
    _conv(time_convention)
    return noise - x0 if time_convention == "t0_data" else x0 - noise


@check_args(arrays=("out", "x0", "noise", "weights"), same_shape=("out", "x0", "noise"))
def fm_loss(out, x0, noise, weights=None, time_convention="t0_data"):
    """Conditional flow-matching loss and its gradient, MATH.md (18.16):
    L = mean_n w_n ||out_n - u_n||^2 (sum over the non-batch axes), dL/dout = 2 w (out - u) / N.

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    out : array (N, ...)
        The velocity model's output.
    x0 : array (N, ...)
        Data samples.
    noise : array (N, ...)
        Noise samples used to build the model input.
    weights : array (N,), optional
        Per-sample weights w_n; all ones when None.
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        Sets the sign of the target (:func:`fm_target`).

    Returns
    -------
    loss : float
        The mean over the batch of the weighted per-sample squared errors.
    dout : array (N, ...)
        dL/dout, in the dtype of ``out``.

    Raises
    ------
    ValueError
        If ``time_convention`` is not one of the two conventions.
    """
    if weights is not None and tuple(weights.shape) != (out.shape[0],):
        raise ValueError(f"weights has shape {tuple(weights.shape)}; expected (N,) = ({out.shape[0]},) "
                         f"(out has shape {tuple(out.shape)})")
    xp = array_namespace(out)
    r = out - fm_target(x0, noise, time_convention)
    n = out.shape[0]
    w = xp.ones((n,), dtype=out.dtype) if weights is None else xp.asarray(weights, dtype=out.dtype)
    per = xp.sum(xp.reshape(r * r, (n, -1)), axis=1)
    return float(xp.sum(w * per)) / n, 2.0 * _col(w, out) * r / n


def sample_flow_times(n, rng, kind="uniform", *, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, eps=0.0):
    """Training times t (t = 0 data) of shape (n,), MATH.md (18.17): ``"uniform"`` on
    [eps, 1); ``"logit_normal"`` (SD3): t = sigmoid(m + s N(0, 1)); ``"mode"`` (SD3):
    t = 1 - v - mode_scale (cos^2(pi v / 2) - 1 + v), v ~ U(0, 1).

    Parameters
    ----------
    n : int
        Number of times.
    rng : numpy.random.Generator
        The source of the draws (host float64 arrays).
    kind : {"uniform", "logit_normal", "mode"}, default "uniform"
        The time distribution.
    logit_mean : float, default 0.0
        m, the mean of the normal before the sigmoid (``"logit_normal"``).
    logit_std : float, default 1.0
        s > 0, its standard deviation (``"logit_normal"``).
    mode_scale : float, default 1.29
        The scale of the ``"mode"`` density.
    eps : float, default 0.0
        Lower end of the ``"uniform"`` interval.

    Returns
    -------
    numpy.ndarray (n,)
        Float64 times, t = 0 data.

    Raises
    ------
    ValueError
        If ``kind`` is unknown or ``logit_std`` is not positive (``"logit_normal"``).
    """
    check_int("n", n, min=1)
    if n > 10**8:
        raise ValueError(f"sample_flow_times: n = {n} exceeds 10**8")
    rng = check_rng(rng)
    check_finite_scalar("logit_mean", logit_mean)
    check_finite_scalar("logit_std", logit_std, low=0.0, low_open=True)
    check_finite_scalar("mode_scale", mode_scale)
    check_finite_scalar("eps", eps, low=0.0, high=0.5)
    if kind == "uniform":
        return eps + (1.0 - eps) * rng.random(n)
    if kind == "logit_normal":
        if not logit_std > 0:
            raise ValueError(f"sample_flow_times: logit_std = {logit_std!r} must be > 0")
        return 1.0 / (1.0 + np.exp(-(logit_mean + logit_std * rng.standard_normal(n))))
    if kind == "mode":
        v = rng.random(n)
        return 1.0 - v - mode_scale * (np.cos(np.pi * v / 2.0) ** 2 - 1.0 + v)
    raise ValueError(f"sample_flow_times: unknown kind {kind!r}; valid: 'uniform', 'logit_normal', 'mode'")


@check_args(coefs=("t",), scalars=("logit_mean", "logit_std"))
def logit_normal_density(t, logit_mean=0.0, logit_std=1.0):
    """Density of the logit-normal times, MATH.md (18.17):
    phi((logit t - m)/s) / (s t (1 - t)).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    t : float or array_like
        Times in (0, 1).
    logit_mean : float, default 0.0
        m, the mean of logit t.
    logit_std : float, default 1.0
        s, the standard deviation of logit t.

    Returns
    -------
    numpy.ndarray
        Float64 densities, the shape of ``t``.
    """
    t = np.asarray(t, dtype=np.float64)
    z = (np.log(t / (1.0 - t)) - logit_mean) / logit_std
    return np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * logit_std * t * (1.0 - t))


@check_args(coefs=("sigma",), scalars=("shift",))
def flow_shift(sigma, shift):
    """The resolution shift of SD3 / diffusers, MATH.md (18.18): sigma' = s sigma / (1 + (s - 1) sigma);
    equivalently the log-SNR translation log((1-sigma')/sigma') = log((1-sigma)/sigma) - log s.

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    sigma : float or array_like
        Flow times (t = 0 data) in [0, 1].
    shift : float
        The shift s > 0; s = 1 is the identity, s > 1 moves the times towards noise.

    Returns
    -------
    numpy.ndarray
        Float64 shifted times sigma', the shape of ``sigma``.

    Raises
    ------
    ValueError
        If ``shift`` is not positive.
    """
    if not shift > 0:
        raise ValueError(f"flow_shift: shift = {shift!r} must be > 0")
    sigma = np.asarray(sigma, dtype=np.float64)
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


@check_args(coefs=("sigma",))
def flow_log_snr(sigma):
    """Half log-SNR of the straight path at sigma (= t), MATH.md (18.18): log((1 - sigma) / sigma).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    sigma : float or array_like
        Flow times in (0, 1).

    Returns
    -------
    numpy.ndarray
        Float64 half log-SNR values, the shape of ``sigma``.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    return np.log1p(-sigma) - np.log(sigma)


@check_args(coefs=("sigma",), scalars=("mu",))
def flow_time_shift(sigma, mu, kind="exponential"):
    """Flux's dynamic shift, MATH.md (18.19): exponential e^mu / (e^mu + 1/sigma - 1) (= flow_shift
    with s = e^mu) or linear mu / (mu + 1/sigma - 1).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    sigma : float or array_like
        Flow times in (0, 1].
    mu : float
        The shift parameter (e.g. from :func:`flow_dynamic_mu`).
    kind : {"exponential", "linear"}, default "exponential"
        The form of the shift.

    Returns
    -------
    numpy.ndarray
        Float64 shifted times, the shape of ``sigma``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1.0 / sigma - 1.0))
    if kind == "linear":
        return mu / (mu + (1.0 / sigma - 1.0))
    raise ValueError(f"flow_time_shift: unknown kind {kind!r}; valid: 'exponential', 'linear'")


@check_args(scalars=("base_shift", "max_shift"))
def flow_dynamic_mu(seq_len, base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15):
    """diffusers' ``calculate_shift``, MATH.md (18.19): mu linear in the number of image tokens,
    base_shift at base_seq_len and max_shift at max_seq_len.

    Parameters
    ----------
    seq_len : int or float
        The number of image tokens.
    base_seq_len : int, default 256
        The sequence length at which mu = ``base_shift``.
    max_seq_len : int, default 4096
        The sequence length at which mu = ``max_shift``; must exceed ``base_seq_len``.
    base_shift : float, default 0.5
        mu at ``base_seq_len``.
    max_shift : float, default 1.15
        mu at ``max_seq_len``.

    Returns
    -------
    float
        mu (linear extrapolation outside [base_seq_len, max_seq_len]).

    Raises
    ------
    ValueError
        If ``max_seq_len <= base_seq_len``.
    """
    for name, v in (("seq_len", seq_len), ("base_seq_len", base_seq_len), ("max_seq_len", max_seq_len)):
        check_int(name, v, min=1)
    if not max_seq_len > base_seq_len:
        raise ValueError(f"flow_dynamic_mu: need max_seq_len > base_seq_len, got {max_seq_len}, {base_seq_len}")
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return seq_len * m + (base_shift - m * base_seq_len)


@check_args(scalars=("shift",))
def flow_match_euler_sigmas(n, shift=1.0, T=1000, double_shift=False):
    """FlowMatchEulerDiscreteScheduler's default inference grid (n sigmas, final 0 appended),
    MATH.md (18.20): shift(linspace(1, 1/T, n)).  ``double_shift=True`` reproduces diffusers
    issue #13243: the end points are stored after the shift in ``__init__`` and shifted again in
    ``set_timesteps``, i.e. shift(linspace(1, shift(1/T), n)) (for s = 3 the last nonzero sigma
    is 0.00893 = shift_9(1/T) instead of 0.00299).

    Parameters
    ----------
    n : int
        Number of inference steps (>= 1).
    shift : float, default 1.0
        The shift s of :func:`flow_shift` (> 0).
    T : int, default 1000
        Number of training timesteps; the smallest unshifted sigma is 1/T.
    double_shift : bool, default False
        Reproduce the double shift of diffusers issue #13243.

    Returns
    -------
    numpy.ndarray (n + 1,)
        Float64 sigmas, decreasing from 1, with a final 0.

    Raises
    ------
    ValueError
        If ``n`` is not an integer >= 1 or ``shift`` is not positive.
    """
    check_int("n", n, min=1)
    check_int("T", T, min=1)
    if n > 10**7 or T > 10**9:
        raise ValueError(f"flow_match_euler_sigmas: n = {n} or T = {T} is too large (n <= 10**7, T <= 10**9)")
    check_bool("double_shift", double_shift)
    lo = float(flow_shift(1.0 / T, shift)) if double_shift else 1.0 / T
    return np.concatenate([flow_shift(np.linspace(1.0, lo, n), shift), [0.0]])


@check_args(arrays=("data_eigenvalues",), coefs=("t",))
def fm_irreducible_loss(data_eigenvalues, t):
    """The irreducible conditional flow-matching loss of Gaussian data at time t, MATH.md (18.21):
    E||u - E[u | x_t]||^2 = sum_d d_i / ((1 - t)^2 d_i + t^2).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    data_eigenvalues : array_like
        The eigenvalues d_i of the data covariance (flattened).
    t : float or array_like
        Flow time(s) in [0, 1], t = 0 data.

    Returns
    -------
    numpy.ndarray
        Float64 losses, the shape of ``t`` (0-d for a scalar ``t``).
    """
    d = _eigenvalues(data_eigenvalues)
    t = np.asarray(t, dtype=np.float64)
    return np.sum(d / ((1.0 - t[..., None]) ** 2 * d + t[..., None] ** 2), axis=-1)


@check_args(arrays=("data_eigenvalues",))
def fm_expected_irreducible_loss(data_eigenvalues, kind="uniform", **kw):
    """The irreducible loss averaged over the time distribution, MATH.md (18.22): for
    uniform t in closed form (pi/2) sum_d sqrt(d_i); otherwise by adaptive quadrature against
    the density (``"logit_normal"``, with ``logit_mean``/``logit_std``).

    Parameters
    ----------
    data_eigenvalues : array_like
        The eigenvalues d_i of the data covariance (flattened).
    kind : {"uniform", "logit_normal"}, default "uniform"
        The training-time distribution.
    **kw
        ``logit_mean`` and ``logit_std`` of :func:`logit_normal_density` (``"logit_normal"``).

    Returns
    -------
    float
        The expected irreducible loss.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    d = _eigenvalues(data_eigenvalues)
    if kind == "uniform":
        return float(math.pi / 2 * np.sum(np.sqrt(d)))
    if kind == "logit_normal":
        from scipy.integrate import quad

        return float(quad(lambda t: fm_irreducible_loss(d, t) * logit_normal_density(t, **kw), 0.0, 1.0,
                          epsabs=1e-12, epsrel=1e-11, limit=200)[0])
    raise ValueError(f"fm_expected_irreducible_loss: unknown kind {kind!r}; valid: 'uniform', 'logit_normal'")


def fm_loss_fn(net, *, times="uniform", time_convention="t0_data", time_input=1.0, cond_key=None, **time_kw):
    """A ``loss_fn(groups, batch, rng)`` for :func:`refdiff.training.fit` training ``net`` (group
    ``"params"``) as a velocity model, MATH.md (18.16): t ~ ``times`` (:func:`sample_flow_times`),
    eps ~ N(0, I), the model called at (x_t, time_input * t).  ``batch``: x0, or (x0, noise)
    pairs (reflow: the coupling (T(z), z), MATH.md (18.24)), or with cond_key a further cond.

    Parameters
    ----------
    net : model
        A network with ``forward(params, x, t, cond) -> (out, cache)`` and
        ``backward(params, cache, dout)`` whose first result is the parameter gradients.
    times : {"uniform", "logit_normal", "mode"}, default "uniform"
        The training-time distribution (``kind`` of :func:`sample_flow_times`).
    time_convention : {"t0_data", "t0_noise"}, default "t0_data"
        The time convention of the model's input and output.
    time_input : float, default 1.0
        Factor applied to the time before it is passed to the network (e.g. 1000 for a
        network embedding timesteps).
    cond_key : optional
        When truthy, the third element of a tuple batch is passed to the network as ``cond``.
    **time_kw
        Further keywords of :func:`sample_flow_times` (``logit_mean``, ``logit_std``,
        ``mode_scale``, ``eps``).

    Returns
    -------
    callable
        ``loss_fn(groups, batch, rng) -> (loss, {"params": grads})``.

    Raises
    ------
    ValueError
        If ``time_convention`` or ``times`` (or its keywords) is invalid; checked at once.
    """
    if not (callable(getattr(net, "forward", None)) and callable(getattr(net, "backward", None))):
        raise TypeError(f"net must have forward(params, x, t, cond) and backward(params, cache, dout), "
                        f"got {type(net).__name__}")
    _conv(time_convention)
    check_choice("times", times, ("uniform", "logit_normal", "mode"))
    check_finite_scalar("time_input", time_input, low=0.0, low_open=True)
    sample_flow_times(1, np.random.default_rng(0), times, **time_kw)

    def loss_fn(groups, batch, rng):
        parts = batch if isinstance(batch, tuple) else (batch,)
        x0 = parts[0]
        xp = array_namespace(x0)
        noise = parts[1] if len(parts) > 1 and parts[1] is not None else xp.asarray(
            rng.standard_normal(x0.shape), dtype=x0.dtype)
        cond = parts[2] if cond_key and len(parts) > 2 else None
        t = sample_flow_times(x0.shape[0], rng, times, **time_kw)
        tt = t if time_convention == "t0_data" else 1.0 - t
        x_t = fm_interpolate(x0, noise, xp.asarray(tt), time_convention)
        out, cache = net.forward(groups["params"], x_t, xp.asarray(time_input * tt, dtype=x0.dtype), cond)
        loss, dout = fm_loss(out, x0, noise, None, time_convention)
        return loss, {"params": net.backward(groups["params"], cache, dout)[0]}

    return loss_fn


@check_args(arrays=("u", "x_t"), coefs=("t",), same_shape=("u", "x_t"))
def flow_velocity_to(u, x_t, t, to="epsilon"):
    """A rectified-flow velocity (t = 0 data) as another prediction, MATH.md (4.8) with (11.7):
    x0 = x_t - t u, eps = x_t + (1 - t) u, score = -eps / t, v = alpha eps - sigma x0 with
    alpha = (1 - t)/r, sigma = t/r, r = sqrt((1-t)^2 + t^2) (the VP point of equal SNR).

    NaN and inf in the arrays propagate: not checked.

    Parameters
    ----------
    u : array (N, ...)
        The velocity at ``x_t``.
    x_t : array (N, ...)
        The path point.
    t : float
        The flow time in (0, 1) (a single time for the whole batch).
    to : {"epsilon", "sample", "score", "v_prediction"}, default "epsilon"
        The prediction to return.

    Returns
    -------
    array (N, ...)
        The requested prediction.

    Raises
    ------
    ValueError
        If ``to`` is unknown.
    """
    eps, x0 = eps_x0_from_flow_velocity(x_t, u, t)
    if to == "epsilon":
        return eps
    if to == "sample":
        return x0
    if to == "score":
        return -eps / float(t)
    if to == "v_prediction":
        r = math.hypot(1.0 - float(t), float(t))
        return ((1.0 - float(t)) * eps - float(t) * x0) / r
    raise ValueError(f"flow_velocity_to: unknown to {to!r}; valid: 'epsilon', 'sample', 'score', 'v_prediction'")


@check_args(callables=("velocity",))
def vp_model_from_flow(velocity, schedule):
    """A rectified-flow velocity model ``velocity(y, s)`` (t = 0 data, ``s`` of shape (N,)) as an
    epsilon-prediction model ``model(x, t)`` on a VP ``schedule`` (discrete or continuous), so that
    every VP sampler runs it, MATH.md (11.10) with (4.8): at the VP point (alpha, sigma) of t the
    flow point of equal SNR is s = sigma/(alpha + sigma), y = x/(alpha + sigma), and
    eps = y + (1 - s) u(y, s).

    Parameters
    ----------
    velocity : callable
        ``velocity(y, s) -> u``, a rectified-flow velocity model (t = 0 data).
    schedule : Schedule or continuous VP
        The VP schedule whose times the returned model takes (see
        :func:`refdiff.schedules.alpha_sigma`).

    Returns
    -------
    callable
        ``model(x, t) -> eps_hat`` with attribute ``prediction_type = "epsilon"``.
    """
    from .schedules import alpha_sigma

    check_schedule(schedule)

    def model(x, t):
        a, sg = alpha_sigma(schedule, t, x)
        r = a + sg
        s = sg / r
        y = x / r
        u = velocity(y, array_namespace(x).reshape(s, (-1,)) if getattr(s, "ndim", 0) else s)
        return y + (1.0 - s) * u

    model.prediction_type = "epsilon"
    return model


def _solve(velocity, z, n_steps):
    """RK4 from t = 1 (noise) to t = 0 on a uniform grid; returns the states (n_steps + 1, ...)."""
    check_int("n_steps", n_steps, min=1)
    if n_steps > 10**6:
        raise ValueError(f"n_steps = {n_steps} exceeds 10**6")
    check_array("z", z, min_ndim=1, finite=True)
    ts = np.linspace(1.0, 0.0, n_steps + 1)
    xs = [z]
    for a, b in zip(ts[:-1], ts[1:]):
        xs.append(flow_rk4_step(velocity, xs[-1], a, b))
    return ts, xs


@check_args(callables=("velocity",), arrays=("z",))
def reflow_pairs(velocity, z, n_steps=100):
    """The coupling of a trained flow, MATH.md (18.24): (x0, z) with x0 = T(z) the RK4 solution of
    dx/dt = velocity(x, t) from z at t = 1 to t = 0.  Train on them with fm_loss_fn's batch (x0, z).

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t) -> u`` with t a float (t = 0 data).
    z : array (N, ...)
        Noise samples, the starting points at t = 1.
    n_steps : int, default 100
        Number of uniform RK4 steps (>= 1).

    Returns
    -------
    x0 : array (N, ...)
        T(z), the ODE solutions at t = 0.
    z : array (N, ...)
        The input noise (the same object).

    Raises
    ------
    ValueError
        If ``n_steps`` is not an integer >= 1.
    """
    _, xs = _solve(velocity, z, n_steps)
    return xs[-1], z


@check_args(callables=("velocity",), arrays=("z",))
def straightness(velocity, z, n_steps=200):
    """Path straightness along the ODE trajectories, MATH.md (18.23):
    S = int_0^1 ||(X_1 - X_0) - velocity(X_t, t)||^2 dt per sample (trapezoid rule on the RK4
    grid).  Returns the per-sample values (N,); 0 for straight paths.

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t) -> u`` with t a float (t = 0 data).
    z : array (N, ...)
        Noise samples, the starting points at t = 1.
    n_steps : int, default 200
        Number of uniform RK4 steps (>= 1), also the quadrature grid.

    Returns
    -------
    array (N,)
        Per-sample straightness.

    Raises
    ------
    ValueError
        If ``n_steps`` is not an integer >= 1.
    """
    ts, xs = _solve(velocity, z, n_steps)
    xp = array_namespace(z)
    chord = xs[0] - xs[-1]
    vals = []
    for t, x in zip(ts, xs):
        r = xp.reshape(chord - velocity(x, float(t)), (z.shape[0], -1))
        vals.append(xp.sum(r * r, axis=1))
    h = 1.0 / n_steps
    return h * (sum(vals) - 0.5 * (vals[0] + vals[-1]))


@check_args(arrays=("data_eigenvalues",))
def rf_straightness_gaussian(data_eigenvalues):
    """Straightness of 1-rectified flow (the exact marginal velocity) on Gaussian data, MATH.md (18.23):
    (2 - pi/2) sum_d sqrt(d_i).

    Parameters
    ----------
    data_eigenvalues : array_like
        The eigenvalues d_i of the data covariance (flattened).

    Returns
    -------
    float
        The expected straightness.
    """
    d = _eigenvalues(data_eigenvalues)
    return float((2.0 - math.pi / 2.0) * np.sum(np.sqrt(d)))


@check_args(arrays=("mean", "cov"))
def reflow_velocity_gaussian(mean, cov):
    """The exact 2-rectified-flow velocity of Gaussian data N(mean, cov) (the minimiser of the
    reflow loss on the 1-RF coupling x0 = mean + S z, S = cov^(1/2)), MATH.md (18.24):
    v2(x, t) = (I - S)((1 - t) S + t I)^(-1) (x - (1 - t) mean) - mean.  Returns v2(x, t).

    Parameters
    ----------
    mean : array_like (D,)
        The data mean.
    cov : array_like (D, D)
        The data covariance (symmetric; negative eigenvalues are clipped to 0 in S).

    Returns
    -------
    callable
        ``v2(x, t)`` for float64 rows ``x`` of shape (N, D) and a float time ``t``,
        returning (N, D).
    """
    check_array("mean", mean, finite=True)
    check_array("cov", cov, ndim=2, finite=True)
    mu = np.asarray(mean, dtype=np.float64).ravel()
    C = np.asarray(cov, dtype=np.float64)
    if C.shape != (mu.size, mu.size):
        raise ValueError(f"cov has shape {C.shape} and mean has {mu.size} entries: cov must be (D, D), D = mean.size")
    w, U = np.linalg.eigh(C)
    S = (U * np.sqrt(np.clip(w, 0, None))) @ U.T
    eye = np.eye(mu.size)

    def v2(x, t):
        A = (1.0 - t) * S + t * eye
        zz = np.linalg.solve(A, (x - (1.0 - t) * mu).T).T
        return zz @ (eye - S).T - mu

    return v2
