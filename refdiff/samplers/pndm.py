"""PNDM and PLMS (Liu et al. 2022, "Pseudo numerical methods for diffusion models on
manifolds"), MATH.md chapter 16: a classical method (Runge-Kutta, Adams-Bashforth) for the
noise prediction combined with the DDIM "transfer" step, which is exact for a constant eps.

Step i goes from grid point t_i to t_{i+1}; PRK (pseudo Runge-Kutta) evaluates the model
at the start, twice at the midpoint and at the end, PLMS (pseudo linear multistep) reuses
the eps of earlier steps with the fixed Adams-Bashforth weights of a uniform grid.
"""

from __future__ import annotations

from .common import check_args, check_start, end_step, point_at, predict, vp_grid

__all__ = ["PLMS_WEIGHTS", "pndm_transfer", "plms_eps", "prk_step", "pndm"]

# Adams-Bashforth weights on a uniform grid for 1..4 values of eps, newest first (MATH.md (16.8))
PLMS_WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@check_args(arrays=("x_s", "eps"), scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"), same_shape=("x_s", "eps"))
def pndm_transfer(x_s, eps, alpha_s, sigma_s, alpha_t, sigma_t):
    """The transfer phi(x_s, eps, s -> t) of the PNDM paper (its eq. (9)), MATH.md (16.7):
    x_t = (alpha_t/alpha_s) x_s - (abar_t - abar_s) / (abar_s sigma_t + alpha_s sigma_s alpha_t) eps
    with abar = alpha^2; algebraically the DDIM (eta = 0) step, exact for a constant eps.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    eps : array (N, ...)
        The eps used.
    alpha_s, sigma_s, alpha_t, sigma_t : float
        The coefficients at s and t.

    Returns
    -------
    array (N, ...)
        x_t.
    """
    a_s, s_s, a_t, s_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    ab_s, ab_t = a_s * a_s, a_t * a_t
    return (a_t / a_s) * x_s - ((ab_t - ab_s) / (ab_s * s_t + a_s * s_s * a_t)) * eps


def plms_eps(eps_hist):
    """The pseudo linear multistep eps: sum_j w_j eps_j with the Adams-Bashforth weights of
    :data:`PLMS_WEIGHTS` for the 1..4 values given (newest first), MATH.md (16.8).

    Parameters
    ----------
    eps_hist : sequence of arrays
        1..4 eps values, newest first.

    Returns
    -------
    array
        The combined eps.

    Raises
    ------
    ValueError
        If ``eps_hist`` does not hold 1..4 values.
    """
    if not 1 <= len(eps_hist) <= 4:
        raise ValueError(f"plms_eps: needs 1..4 values of eps (newest first), got {len(eps_hist)}")
    w = PLMS_WEIGHTS[len(eps_hist) - 1]
    out = w[0] * eps_hist[0]
    for wj, e in zip(w[1:], eps_hist[1:]):
        out = out + wj * e
    return out


@check_args(callables=("eps_fn",), arrays=("x",))
def prk_step(eps_fn, x, p_s, p_mid, p_t):
    """One pseudo Runge-Kutta step, MATH.md (16.9): with phi = :func:`pndm_transfer` and the
    points p = (model_time, alpha, sigma) of the start, midpoint and end,
    e1 = eps(x, s), e2 = eps(phi(x, e1, s->mid), mid), e3 = eps(phi(x, e2, s->mid), mid),
    e4 = eps(phi(x, e3, s->t), t); x_t = phi(x, (e1 + 2 e2 + 2 e3 + e4)/6, s->t).
    ``eps_fn(x, p)`` evaluates the model.  Returns (x_t, e1).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    eps_fn : callable
        ``eps_fn(x, p) -> eps``.
    x : array (N, ...)
        The state at p_s.
    p_s, p_mid, p_t : GridPoint
        The start, midpoint and end points.

    Returns
    -------
    x_t : array (N, ...)
    e1 : array (N, ...)
        The eps at the start.
    """
    e1 = eps_fn(x, p_s)
    e2 = eps_fn(pndm_transfer(x, e1, *p_s[1:], *p_mid[1:]), p_mid)
    e3 = eps_fn(pndm_transfer(x, e2, *p_s[1:], *p_mid[1:]), p_mid)
    e4 = eps_fn(pndm_transfer(x, e3, *p_s[1:], *p_t[1:]), p_t)
    return pndm_transfer(x, (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0, *p_s[1:], *p_t[1:]), e1


def _midpoint(schedule, p_s, p_t):
    """The PRK midpoint: the mean model time (t_s + t_t) / 2, kept an integer index when it is
    one (diffusers' t - (T // n) // 2 on its even-gap "leading" grids; refdiff does not copy
    its floor for odd gaps)."""
    tm = 0.5 * (float(p_s.t) + float(p_t.t))
    return point_at(schedule, int(tm) if isinstance(p_s.t, int) and tm.is_integer() else tm)


def pndm(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None, project=None,
         skip_prk_steps=False, final_sigmas_type=None, sigmas=None, interpolation="log_alpha"):
    """PNDM sampling, MATH.md (16.7)-(16.9); deterministic (``noise`` is ignored).

    ``skip_prk_steps=False`` (PNDM): the first 3 steps are PRK (4 model calls each), then PLMS
    with eps of the step starts; ``True`` (PLMS, as diffusers for Stable Diffusion): the first
    step is the pseudo improved Euler step phi(x, (e(x, s) + e(phi(x, e, s->t), t)) / 2, s->t)
    (2 calls), then PLMS (1 call).  A step that ends at sigma = 0 takes no call there (PLMS).
    diffusers 0.42.1's PNDMScheduler does this on its default "leading" grid (it steps t ->
    t - T // n, which is the next grid point only there; its final point is alpha_bar[0],
    here ``final_sigmas_type="sigma_min"``, or 1 with ``set_alpha_to_one``, here "zero").
    Grid: :func:`refdiff.make_grid`.  Hooks (``project``, then ``callback(i, t_i, x_{i+1},
    x0_hat(t_i))``) after each step in VP coordinates.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``, with t of shape (N,) (int64 for a
        Schedule's integer timesteps, float64 otherwise).
    x : array (N, ...)
        The start state in VP coordinates at the first grid point.
    schedule : Schedule or continuous VP
        The model's schedule.
    timesteps : array_like or Grid, optional
        The grid (:func:`refdiff.make_grid`); may be None when ``sigmas`` is given.
    prediction_type : str, default "epsilon"
        What the model predicts (refdiff.parameterization's prediction types).
    noise : callable, optional
        Ignored (the loop is deterministic); accepted for the common loop signature.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    skip_prk_steps : bool, default False
        PLMS with a pseudo improved Euler first step instead of the PRK warm-up.
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    TypeError
        If ``skip_prk_steps`` is not a bool.
    ValueError, TypeError
        For an invalid grid (:func:`refdiff.make_grid`).
    """
    if not isinstance(skip_prk_steps, bool):
        raise TypeError(f"pndm: skip_prk_steps must be a bool, got {skip_prk_steps!r}")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "pndm", needs="log_alpha")
    n, ets = len(grid) - 1, []  # ets: eps at the step starts, newest first
    for i in range(n):
        p, q, x_s = grid[i], grid[i + 1], x
        eps_at = lambda y, r: predict(model, y, r, prediction_type, i)[0]  # noqa: E731
        if not skip_prk_steps and i < 3 and q.sigma > 0:  # PRK warm-up (16.9)
            x, e = prk_step(eps_at, x, p, _midpoint(schedule, p, q), q)
        else:
            e = eps_at(x, p)
            e_used = plms_eps([e] + ets[:3])  # (16.8)
            if skip_prk_steps and i == 0 and q.sigma > 0:  # pseudo improved Euler
                e_used = 0.5 * (e + eps_at(pndm_transfer(x, e, p.alpha, p.sigma, q.alpha, q.sigma), q))
            x = pndm_transfer(x, e_used, p.alpha, p.sigma, q.alpha, q.sigma)  # (16.7)
        ets = [e] + ets[:3]
        x = end_step(i, p.t, x, (x_s - p.sigma * e) / p.alpha, callback, project)  # x0_hat of the first call
    return x


METHODS = {"pndm": pndm}
