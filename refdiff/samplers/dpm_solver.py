"""DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b), MATH.md chapter 10.

The probability-flow ODE of a VP path x_t = alpha_t x_0 + sigma_t eps, written in the
half log-SNR lambda = log(alpha / sigma), has an exactly integrable linear part; every
solver here integrates it exactly and approximates only the model's prediction m(lambda)
(eps in the *noise* form, x_0 in the *data* form) by a Taylor polynomial in lambda,
MATH.md (10.1)-(10.3).

Time: continuous time t in (0, 1] with t = 0 data, t = 1 noise (a continuous VP), or a
discrete :class:`~refdiff.Schedule` whose integer indices (0-based, index 0 = the least
noisy training step) sit at t = (k + 1) / T of :class:`~refdiff.InterpolatedVP`; points
between grid indices are passed to the model as float "continuous indices" tau.

The step functions take the predictions and the (alpha, sigma) of each time as Python
floats (one time for the whole batch) and are pure; the loops (``METHODS``) evaluate the
model.  A step that ends at sigma = 0 (lambda = +inf) is defined only in first order,
where both forms reduce to x_t = x0_hat, MATH.md (10.6).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_bool, check_choice
from .common import (Grid, check_args, check_start, draw_noise, end_step, point_at, _point_at, point_at_lambda,
                     predict, vp_grid)

__all__ = [
    "FORMS",
    "SOLVER_TYPES",
    "dpm_solver_1_step",
    "dpmpp_1_step",
    "taylor_differences",
    "dpm_solver_taylor_update",
    "dpm_solver_2_update",
    "dpm_solver_3_intermediate",
    "dpm_solver_3_update",
    "dpmpp_2m_update",
    "dpmpp_3m_update",
    "dpmpp_sde_1_step",
    "dpmpp_2m_sde_update",
    "dpmpp_3m_sde_update",
    "dpm_solver_singlestep",
    "dpm_solver_singlestep_loop",
    "dpm_solver_grid_stages",
    "dpm_solver_1",
    "dpm_solver_2",
    "dpm_solver_3",
    "dpmpp_2s",
    "dpmpp_2m",
    "dpmpp_3m",
    "dpmpp_2m_sde",
    "WARMUPS",
]

FORMS = ("noise", "data")
# "dpmsolver"/"midpoint": the papers' second-order coefficient; "taylor"/"heun": the exact
# Taylor integral (MATH.md (10.9)).  The second names are the PyTorch library's.
SOLVER_TYPES = ("dpmsolver", "taylor", "midpoint", "heun")
# the first step of DPM-Solver++(3M): a singlestep second-order step (keeps third order) or
# a first-order step (the DPM-Solver release, k-diffusion and diffusers 0.42.1), MATH.md (10.18)
WARMUPS = ("singlestep", "first_order")


# ----------------------------------------------------------------------------- checks
def _check_form(form):
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; valid: 'noise' (eps prediction) or 'data' (x_0 prediction)")


def _solver_kind(solver_type):
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"unknown solver_type {solver_type!r}; valid: {', '.join(SOLVER_TYPES)}")
    return "taylor" if solver_type in ("taylor", "heun") else "dpmsolver"


def _check_order(order, valid, who):
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or int(order) not in valid:
        raise ValueError(f"{who}: order = {order!r} is out of range; valid orders: {', '.join(map(str, valid))}")
    return int(order)


def _lam(alpha, sigma):
    """lambda = log(alpha / sigma), MATH.md (10.1); +inf at sigma = 0."""
    return math.inf if sigma == 0.0 else math.log(alpha) - math.log(sigma)


def _h(alpha_s, sigma_s, alpha_t, sigma_t):
    h = _lam(alpha_t, sigma_t) - _lam(alpha_s, sigma_s)
    if not h > 0:
        raise ValueError(f"a DPM-Solver step needs lambda_t > lambda_s (h > 0), got h = {h!r}")
    return h


def _phis(h, form):
    """The exact Taylor integrals of MATH.md (10.2)/(10.3) for D0, D1 = h m', D2 = h^2 m''."""
    if form == "noise":  # (e^h - 1), (e^h - 1 - h)/h, (e^h - 1 - h - h^2/2)/h^2
        e = math.expm1(h)
        return e, (e - h) / h, (e - h - 0.5 * h * h) / (h * h)
    e = math.expm1(-h)  # 1 - e^{-h}, (h - 1 + e^{-h})/h, (h^2/2 - h + 1 - e^{-h})/h^2
    return -e, (h + e) / h, (0.5 * h * h - h - e) / (h * h)


# ----------------------------------------------------------------------------- first order
@check_args(arrays=("x_s", "eps_s"), scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"), same_shape=("x_s", "eps_s"))
def dpm_solver_1_step(x_s, eps_s, alpha_s, sigma_s, alpha_t, sigma_t):
    """DPM-Solver-1 (noise form), MATH.md (10.4):
    x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s, h = lambda_t - lambda_s.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Written as x_t = (alpha_t/alpha_s) x_s - (alpha_t sigma_s / alpha_s - sigma_t) eps_s so
    that sigma_t = 0 (h = inf) is exact and gives x_t = x0_hat, MATH.md (10.6).  This is DDIM
    with eta = 0.

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    eps_s : array (N, ...)
        The eps prediction at s.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.

    Returns
    -------
    array (N, ...)
        x_t.
    """
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    return (alpha_t / alpha_s) * x_s - (alpha_t * sigma_s / alpha_s - sigma_t) * eps_s


@check_args(arrays=("x_s", "x0_s"), scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"), same_shape=("x_s", "x0_s"))
def dpmpp_1_step(x_s, x0_s, alpha_s, sigma_s, alpha_t, sigma_t):
    """DPM-Solver++(1) (data form), MATH.md (10.5):
    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    With e^{-h} = (sigma_t alpha_s) / (alpha_t sigma_s) this is exact at sigma_t = 0, where it
    returns alpha_t x0_s, MATH.md (10.6).  Algebraically identical to :func:`dpm_solver_1_step`
    with eps_s = (x_s - alpha_s x0_s) / sigma_s.

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    x0_s : array (N, ...)
        The x_0 prediction at s.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.

    Returns
    -------
    array (N, ...)
        x_t.
    """
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    e_mh = (sigma_t * alpha_s) / (alpha_t * sigma_s)  # e^{-h}
    return (sigma_t / sigma_s) * x_s + alpha_t * (1.0 - e_mh) * x0_s


def _first_order(x_s, m_s, p, q, form):
    """The first-order step of ``form`` between grid points p and q."""
    f = dpm_solver_1_step if form == "noise" else dpmpp_1_step
    return f(x_s, m_s, p.alpha, p.sigma, q.alpha, q.sigma)


# ----------------------------------------------------------------------------- Taylor form
@check_args(coefs=("m0",))
def taylor_differences(m0, m_others, offsets):
    """Estimates of D1 = h m'(lambda_s) and D2 = h^2 m''(lambda_s) from m0 = m(lambda_s) and
    values m_j = m(lambda_s + r_j h) at signed offsets r_j (units of h; r > 0 ahead, as in a
    singlestep solver, r < 0 behind, as in a multistep one), MATH.md (10.8).

    NaN and inf in the arrays propagate: not checked (a per-step function).

    One other point: D1 = (m_1 - m0) / r_1, D2 = None.  Two: the derivatives of the quadratic
    through the three points, D1 = (r_2 E_1 - r_1 E_2)/(r_2 - r_1), D2 = 2 (E_2 - E_1)/(r_2 - r_1)
    with E_j = (m_j - m0)/r_j.

    Parameters
    ----------
    m0 : array
        m(lambda_s).
    m_others : sequence of arrays
        One or two other values m_j.
    offsets : sequence of float
        Their offsets r_j (non-zero, distinct).

    Returns
    -------
    D1 : array
    D2 : array or None
        None with one other point.

    Raises
    ------
    ValueError
        If the counts differ or are not 1 or 2, or the offsets are zero or equal.
    """
    if len(m_others) != len(offsets) or len(offsets) not in (1, 2):
        raise ValueError("taylor_differences needs one or two other points with one offset each")
    r = [float(v) for v in offsets]
    if any(v == 0.0 for v in r) or (len(r) == 2 and r[0] == r[1]):
        raise ValueError(f"offsets must be non-zero and distinct, got {r}")
    E = [(m - m0) / rj for m, rj in zip(m_others, r)]
    if len(r) == 1:
        return E[0], None
    r1, r2 = r
    return (r2 * E[0] - r1 * E[1]) / (r2 - r1), 2.0 * (E[1] - E[0]) / (r2 - r1)


@check_args(arrays=("x_s", "m0", "D1", "D2"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"),
            same_shape=("x_s", "m0", "D1", "D2"),
            optional=("D1", "D2"))
def dpm_solver_taylor_update(x_s, m0, D1, D2, alpha_s, sigma_s, alpha_t, sigma_t, *, form):
    """The exponential-integrator update with a Taylor model of the prediction, MATH.md
    (10.2)-(10.3), (10.7):

    NaN and inf in the arrays propagate: not checked (a per-step function).

    noise form: x_t = (alpha_t/alpha_s) x_s - sigma_t [phi0 m0 + phi1 D1 + phi2 D2],
    data form:  x_t = (sigma_t/sigma_s) x_s + alpha_t [psi0 m0 + psi1 D1 + psi2 D2],

    with the exact integrals phi_k(h), psi_k(h) of MATH.md (10.7); D1, D2 may be None (order 1, 2).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    D1, D2 : array (N, ...) or None
        The Taylor terms.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    form : {"noise", "data"}
        The prediction: eps (noise) or x_0 (data).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    _check_form(form)
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    h = _h(alpha_s, sigma_s, alpha_t, sigma_t)
    c0, c1, c2 = _phis(h, form)
    acc = c0 * m0
    if D1 is not None:
        acc = acc + c1 * D1
    if D2 is not None:
        acc = acc + c2 * D2
    if form == "noise":
        return (alpha_t / alpha_s) * x_s - sigma_t * acc
    return (sigma_t / sigma_s) * x_s + alpha_t * acc


# ----------------------------------------------------------------------------- singlestep
@check_args(arrays=("x_s", "m0", "m1"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t", "r1"),
            same_shape=("x_s", "m0", "m1"))
def dpm_solver_2_update(x_s, m0, m1, r1, alpha_s, sigma_s, alpha_t, sigma_t, *, form, solver_type="dpmsolver"):
    """The second stage of singlestep DPM-Solver-2 / DPM-Solver++(2S), MATH.md (10.9), given
    m0 at lambda_s and m1 at the intermediate point lambda_s + r1 h (default r1 = 1/2):

    NaN and inf in the arrays propagate: not checked (a per-step function).

    "dpmsolver" (the papers): the D1 coefficient is phi0 / 2 (noise) or psi0 / 2 (data);
    "taylor": the exact integral phi1 (psi1).  Both are second order.

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    m1 : array (N, ...)
        The prediction at lambda_s + r1 h.
    r1 : float
        The intermediate offset (non-zero).
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    form : {"noise", "data"}
        The prediction: eps (noise) or x_0 (data).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    _check_form(form)
    kind = _solver_kind(solver_type)
    D1, _ = taylor_differences(m0, [m1], [r1])
    if kind == "taylor":
        return dpm_solver_taylor_update(x_s, m0, D1, None, alpha_s, sigma_s, alpha_t, sigma_t, form=form)
    # phi0 (m0 + D1/2): the D1 coefficient is half the D0 coefficient
    return dpm_solver_taylor_update(x_s, m0 + 0.5 * D1, None, None, alpha_s, sigma_s, alpha_t, sigma_t, form=form)


@check_args(arrays=("x_s", "m0", "m1"),
            scalars=("alpha_s", "sigma_s", "alpha_s2", "sigma_s2", "r1", "r2"),
            same_shape=("x_s", "m0", "m1"))
def dpm_solver_3_intermediate(x_s, m0, m1, r1, r2, alpha_s, sigma_s, alpha_s2, sigma_s2, *, form):
    """The point u2 at lambda_s + r2 h of singlestep DPM-Solver-3 (Taylor second order from
    m0 and m1 = m(lambda_s + r1 h)), MATH.md (10.10):

    NaN and inf in the arrays propagate: not checked (a per-step function).

    u2 = first-order step to s2 + [-sigma_s2 phi1(r2 h) | alpha_s2 psi1(r2 h)] (r2 / r1)(m1 - m0).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    m1 : array (N, ...)
        The prediction at lambda_s + r1 h.
    r1, r2 : float
        The intermediate offsets.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_s2, sigma_s2 : float
        The coefficients at lambda_s + r2 h.
    form : {"noise", "data"}
        The prediction: eps (noise) or x_0 (data).

    Returns
    -------
    array (N, ...)
        u2.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    D1 = (float(r2) / float(r1)) * (m1 - m0)  # estimate of (r2 h) m'
    return dpm_solver_taylor_update(x_s, m0, D1, None, alpha_s, sigma_s, alpha_s2, sigma_s2, form=form)


@check_args(arrays=("x_s", "m0", "m1", "m2"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t", "r1", "r2"),
            same_shape=("x_s", "m0", "m1", "m2"))
def dpm_solver_3_update(x_s, m0, m1, m2, r1, r2, alpha_s, sigma_s, alpha_t, sigma_t, *, form, solver_type="dpmsolver"):
    """The last stage of singlestep DPM-Solver-3 / DPM-Solver++(3S), MATH.md (10.11), given
    m0, m1 = m(lambda_s + r1 h), m2 = m(lambda_s + r2 h) (the paper: r1 = 1/3, r2 = 2/3):

    NaN and inf in the arrays propagate: not checked (a per-step function).

    "dpmsolver" (the paper): only D1 = (m2 - m0) / r2 with the phi1 coefficient; it is third
    order because r2 = 2/3 cancels the m'' term.  "taylor": D1, D2 from the quadratic
    through the three values, MATH.md (10.8), with the exact coefficients.  In a singlestep
    solver (m1 from a first-order step) both are third order only with r2 = 2/3 (r1 free);
    other r2 give second order, MATH.md (10.11).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    m1, m2 : array (N, ...)
        The predictions at lambda_s + r1 h and lambda_s + r2 h.
    r1, r2 : float
        The offsets.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    form : {"noise", "data"}
        The prediction: eps (noise) or x_0 (data).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    _check_form(form)
    kind = _solver_kind(solver_type)
    if kind == "taylor":
        D1, D2 = taylor_differences(m0, [m1, m2], [r1, r2])
    else:
        D1, D2 = (m2 - m0) / float(r2), None
    return dpm_solver_taylor_update(x_s, m0, D1, D2, alpha_s, sigma_s, alpha_t, sigma_t, form=form)


# ----------------------------------------------------------------------------- multistep
@check_args(arrays=("x_s", "m0", "m_prev"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t", "lambda_prev"),
            same_shape=("x_s", "m0", "m_prev"))
def dpmpp_2m_update(x_s, m0, m_prev, lambda_prev, alpha_s, sigma_s, alpha_t, sigma_t, *, form="data",
                    solver_type="dpmsolver"):
    """Multistep second order (DPM-Solver++(2M) in the data form), MATH.md (10.12): the
    previous prediction m_prev at lambda_prev < lambda_s gives D1 = (m0 - m_prev) / r0,
    r0 = h_prev / h.  ``solver_type`` as in :func:`dpm_solver_2_update`.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    m_prev : array (N, ...)
        The previous prediction.
    lambda_prev : float
        Its half log-SNR (< lambda_s).
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    form : {"noise", "data"}, default "data"
        The prediction: eps (noise) or x_0 (data).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    h = _h(float(alpha_s), float(sigma_s), float(alpha_t), float(sigma_t))
    r = (float(lambda_prev) - _lam(float(alpha_s), float(sigma_s))) / h  # = -r0 < 0
    return dpm_solver_2_update(x_s, m0, m_prev, r, alpha_s, sigma_s, alpha_t, sigma_t, form=form,
                               solver_type=solver_type)


@check_args(arrays=("x_s", "m0", "m1", "m2"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t", "lambda_1", "lambda_2"),
            same_shape=("x_s", "m0", "m1", "m2"))
def dpmpp_3m_update(x_s, m0, m1, m2, lambda_1, lambda_2, alpha_s, sigma_s, alpha_t, sigma_t, *, form="data",
                    variant="exact"):
    """Multistep third order (DPM-Solver++(3M) in the data form), MATH.md (10.13)-(10.14),
    from m0 at lambda_s and the two previous predictions m1 at lambda_1, m2 at lambda_2.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    ``variant="exact"``: D1, D2 from the quadratic through the three values (MATH.md (10.8)),
    third order.  ``variant="published"``: the form of the DPM-Solver code release and the
    PyTorch library, whose D2 = (D1_0 - D1_1)/(r0 + r1) is h^2 m''/2, half the Taylor
    coefficient; it measures second order (MATH.md (10.14)).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    m1, m2 : array (N, ...)
        The two previous predictions, newest first.
    lambda_1, lambda_2 : float
        Their half log-SNRs.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    form : {"noise", "data"}, default "data"
        The prediction: eps (noise) or x_0 (data).
    variant : {"exact", "published"}, default "exact"
        The D2 (above).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    if variant not in ("exact", "published"):
        raise ValueError(f"unknown variant {variant!r}; valid: 'exact', 'published'")
    h = _h(float(alpha_s), float(sigma_s), float(alpha_t), float(sigma_t))
    lam_s = _lam(float(alpha_s), float(sigma_s))
    ra, rb = (float(lambda_1) - lam_s) / h, (float(lambda_2) - lam_s) / h  # both < 0
    D1, D2 = taylor_differences(m0, [m1, m2], [ra, rb])
    if variant == "published":
        D2 = 0.5 * D2
    return dpm_solver_taylor_update(x_s, m0, D1, D2, alpha_s, sigma_s, alpha_t, sigma_t, form=form)


# ----------------------------------------------------------------------------- SDE variants
def _sde_coefs(alpha_s, sigma_s, alpha_t, sigma_t, form):
    h = _h(alpha_s, sigma_s, alpha_t, sigma_t)
    if form == "data":  # x-coef, D0 coef, heun D1 coef, noise std
        e2 = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
        return (sigma_t / sigma_s) * math.exp(-h), alpha_t * e2, alpha_t * (1.0 - e2 / (2.0 * h)), \
            sigma_t * math.sqrt(e2)
    e = math.expm1(h)
    return alpha_t / alpha_s, -2.0 * sigma_t * e, -2.0 * sigma_t * (e / h - 1.0), sigma_t * math.sqrt(math.expm1(2.0 * h))


@check_args(arrays=("x_s", "m0", "noise"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t"),
            same_shape=("x_s", "m0", "noise"))
def dpmpp_sde_1_step(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t, noise, *, form="data"):
    """First-order step of the reverse VP SDE solved with its exact linear part (SDE-DPM-Solver-1
    / SDE-DPM-Solver++(1)), MATH.md (10.15):

    NaN and inf in the arrays propagate: not checked (a per-step function).

    data:  x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0 + sigma_t sqrt(1 - e^{-2h}) z,
    noise: x_t = (alpha_t/alpha_s) x_s - 2 sigma_t (e^h - 1) eps + sigma_t sqrt(e^{2h} - 1) z.

    ``noise`` is z ~ N(0, I) of x_s's shape.  sigma_t must be > 0 (use x0_hat for a final
    step to sigma = 0).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    noise : array (N, ...)
        Standard normal z.
    form : {"noise", "data"}, default "data"
        The prediction: eps (noise) or x_0 (data).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If ``form`` is invalid or lambda_t <= lambda_s (including sigma_t = 0).
    """
    _check_form(form)
    a, b, _, c = _sde_coefs(float(alpha_s), float(sigma_s), float(alpha_t), float(sigma_t), form)
    return a * x_s + b * m0 + c * noise


@check_args(arrays=("x_s", "m0", "m_prev", "noise"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t", "lambda_prev"),
            same_shape=("x_s", "m0", "m_prev", "noise"))
def dpmpp_2m_sde_update(x_s, m0, m_prev, lambda_prev, alpha_s, sigma_s, alpha_t, sigma_t, noise, *, form="data",
                        solver_type="dpmsolver"):
    """Second-order multistep SDE step (DPM-Solver++(2M) SDE), MATH.md (10.16): the first-order
    SDE step plus a D1 = (m0 - m_prev)/r0 term with coefficient half the D0 coefficient
    ("dpmsolver"/"midpoint") or the exact integral ("taylor"/"heun").

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The prediction at s.
    m_prev : array (N, ...)
        The previous prediction.
    lambda_prev : float
        Its half log-SNR.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    noise : array (N, ...)
        Standard normal z.
    form : {"noise", "data"}, default "data"
        The prediction: eps (noise) or x_0 (data).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    _check_form(form)
    kind = _solver_kind(solver_type)
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    a, b, c1, c = _sde_coefs(alpha_s, sigma_s, alpha_t, sigma_t, form)
    h = _h(alpha_s, sigma_s, alpha_t, sigma_t)
    r = (float(lambda_prev) - _lam(alpha_s, sigma_s)) / h
    D1 = (m_prev - m0) / r
    coef1 = 0.5 * b if kind == "dpmsolver" else c1
    return a * x_s + b * m0 + coef1 * D1 + c * noise


@check_args(arrays=("x_s", "m0", "m1", "m2", "noise"),
            scalars=("alpha_s", "sigma_s", "alpha_t", "sigma_t", "lambda_1", "lambda_2"),
            same_shape=("x_s", "m0", "m1", "m2", "noise"))
def dpmpp_3m_sde_update(x_s, m0, m1, m2, lambda_1, lambda_2, alpha_s, sigma_s, alpha_t, sigma_t, noise, *,
                        variant="exact"):
    """Third-order multistep SDE step (data form, eta = 1), MATH.md (10.20): the first-order SDE
    step (10.15) plus the exact integrals of the quadratic through m0 (at lambda_s), m1 (at
    lambda_1), m2 (at lambda_2):
    alpha_t [I0 m0 + (I1/h) D1 + (I2/(2h^2)) D2] with I0 = 1 - e^{-2h}, I1 = h - I0/2,
    I2 = h^2 - I1 and D1, D2 of (10.8).  ``variant="diffusers"``: diffusers 0.42.1
    ``sde-dpmsolver++`` at ``solver_order=3``, whose D2 is half of (10.8)'s (as (10.14)) and whose
    D2 coefficient is I2/(2h^2) - 1, one below the exact integral for that D2.

    NaN and inf in the arrays propagate: not checked (a per-step function).

    Parameters
    ----------
    x_s : array (N, ...)
        The state at s.
    m0 : array (N, ...)
        The x_0 prediction at s.
    m1, m2 : array (N, ...)
        The two previous predictions, newest first.
    lambda_1, lambda_2 : float
        Their half log-SNRs.
    alpha_s, sigma_s : float
        The coefficients at s.
    alpha_t, sigma_t : float
        The coefficients at t.
    noise : array (N, ...)
        Standard normal z.
    variant : {"exact", "diffusers"}, default "exact"
        The D2 term (above).

    Returns
    -------
    array (N, ...)
        x_t.

    Raises
    ------
    ValueError
        If an option is invalid or lambda_t <= lambda_s.
    """
    if variant not in ("exact", "diffusers"):
        raise ValueError(f"unknown variant {variant!r}; valid: 'exact', 'diffusers'")
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    h = _h(alpha_s, sigma_s, alpha_t, sigma_t)
    lam_s = _lam(alpha_s, sigma_s)
    D1, D2 = taylor_differences(m0, [m1, m2], [(float(lambda_1) - lam_s) / h, (float(lambda_2) - lam_s) / h])
    I0 = -math.expm1(-2.0 * h)
    I1 = h - 0.5 * I0
    I2 = h * h - I1
    c2 = I2 / (2.0 * h * h)
    if variant == "diffusers":
        D2, c2 = 0.5 * D2, c2 - 1.0
    return ((sigma_t / sigma_s) * math.exp(-h)) * x_s + alpha_t * (I0 * m0 + (I1 / h) * D1 + c2 * D2) \
        + (sigma_t * math.sqrt(I0)) * noise


# ----------------------------------------------------------------------------- loops
_GRID_OPTIONS = """

    Notes
    -----
    Grid: :func:`refdiff.make_grid` of ``timesteps`` (or of ``sigmas=``, e.g. Karras levels,
    with model times by ``interpolation``; or a ready ``Grid``); ``final_sigmas_type``
    "zero" ends at sigma = 0, where the last step returns x0_hat (MATH.md (10.6)).  Hooks
    ``callback(i, t, x, x0_hat)`` and ``project(i, t, x) -> x`` after each step, in VP
    coordinates (:func:`refdiff.samplers.common.end_step`)."""


def dpm_solver_singlestep_loop(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
               project=None, order=3, form="noise", solver_type="dpmsolver", lower_order_final=False,
               final_sigmas_type=None, sigmas=None, interpolation="log_alpha", r1=None, r2=None, orders=None,
               stages="lambda"):
    """Singlestep DPM-Solver-k (``form="noise"``) / DPM-Solver++(kS) (``"data"``), k = ``order``
    in 1-3, MATH.md (10.4)-(10.11): each interval one step of k evaluations, the extra ones at
    lambda_s + r h (r1 = 1/2; r1 = 1/3, r2 = 2/3).  ``lower_order_final`` caps interval i (of n)
    at order n - i; ``orders`` (one per interval) as the DPM-Solver release (MATH.md (10.19)).
    ``stages="grid"``: diffusers' stages at the grid's points, :func:`dpm_solver_grid_stages`.

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
    order : int
        The order (see the defaults in the signature; 1-3, 1-2 for dpmpp_2m).
    form : {"noise", "data"}
        The prediction the solver extrapolates (default in the signature).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).
    lower_order_final : bool
        Lower the order of the final steps (default in the signature).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    r1 : float, optional
        The first stage offset (default 1/2 at order 2, 1/3 at order 3).
    r2 : float, optional
        The second stage offset (default 2/3).
    orders : sequence of int, optional
        One order in 1-3 per step (the DPM-Solver release's).
    stages : {"lambda", "grid"}, default "lambda"
        The paper's stages or the grid's own points (:func:`dpm_solver_grid_stages`).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    ValueError
        If ``order``, ``form``, ``solver_type`` or another option is invalid (and as
        :func:`refdiff.make_grid`).
    TypeError
        As :func:`refdiff.make_grid`.
    """
    check_bool("lower_order_final", lower_order_final)
    if stages == "grid":
        return dpm_solver_grid_stages(model, x, schedule, timesteps, **{k: v for k, v in locals().items() if k in (
            "prediction_type", "callback", "project", "order", "form", "solver_type", "lower_order_final",
            "final_sigmas_type", "sigmas", "interpolation")})
    if stages != "lambda":
        raise ValueError(f"unknown stages {stages!r}; valid: 'lambda' (the paper), 'grid' (diffusers)")
    _check_form(form)
    _solver_kind(solver_type)
    order = _check_order(order, (1, 2, 3), "dpm_solver_singlestep_loop")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "dpm_solver", needs="lambda")
    pick = 0 if form == "noise" else 1  # m = eps_hat (noise form) or x0_hat (data form)
    n = len(grid) - 1
    if orders is not None and (len(orders) != n or any(o not in (1, 2, 3) for o in orders)):
        raise ValueError(f"orders must hold one order in 1-3 per step ({n} steps), got {list(orders)}")
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        k = orders[i] if orders is not None else (min(order, n - i) if lower_order_final else order)
        pred = predict(model, x, p, prediction_type, i)
        m0, x0_hat = pred[pick], pred[1]
        if q.sigma == 0.0:
            x = x0_hat  # to sigma = 0: first order, x_t = x0_hat (10.6)
        elif k == 1:
            x = _first_order(x, m0, p, q, form)  # (10.4) / (10.5)
        else:
            h = q.lam - p.lam
            ra = (0.5 if k == 2 else 1.0 / 3.0) if r1 is None else float(r1)
            p1 = point_at_lambda(schedule, p.lam + ra * h)
            m1 = predict(model, _first_order(x, m0, p, p1, form), p1, prediction_type, i)[pick]
            if k == 2:
                x = dpm_solver_2_update(x, m0, m1, ra, p.alpha, p.sigma, q.alpha, q.sigma, form=form,
                                        solver_type=solver_type)  # (10.9)
            else:
                rb = 2.0 / 3.0 if r2 is None else float(r2)
                p2 = point_at_lambda(schedule, p.lam + rb * h)
                u2 = dpm_solver_3_intermediate(x, m0, m1, ra, rb, p.alpha, p.sigma, p2.alpha, p2.sigma, form=form)
                m2 = predict(model, u2, p2, prediction_type, i)[pick]
                x = dpm_solver_3_update(x, m0, m1, m2, ra, rb, p.alpha, p.sigma, q.alpha, q.sigma, form=form,
                                        solver_type=solver_type)  # (10.10)-(10.11)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def dpm_solver_grid_stages(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None,
                           callback=None, project=None, order=2, form="data", solver_type="dpmsolver",
                           lower_order_final=False, final_sigmas_type=None, sigmas=None, interpolation="log_alpha"):
    """Singlestep DPM-Solver with the grid's own points as stages: diffusers 0.42.1
    DPMSolverSinglestepScheduler, MATH.md (10.19).  The steps run in blocks of orders
    1, 2(, 3) (:func:`refdiff.singlestep_orders`); a block starts at grid point j with x_j and
    one model call per grid point: stage 1 a first-order step to j + 1, stage 2 the
    second-order update (10.9) from x_j to j + 2 with the prediction at j + 1 as the
    intermediate (r = h_0 / h), stage 3 the third-order update (10.11) from x_j to j + 3.
    Deterministic; the hooks see every stage's state.

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
    order : int
        The order (see the defaults in the signature; 1-3, 1-2 for dpmpp_2m).
    form : {"noise", "data"}
        The prediction the solver extrapolates (default in the signature).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).
    lower_order_final : bool
        Lower the order of the final steps (default in the signature).
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
    ValueError
        If ``order``, ``form``, ``solver_type`` or another option is invalid (and as
        :func:`refdiff.make_grid`).
    TypeError
        As :func:`refdiff.make_grid`.
    """
    check_bool("lower_order_final", lower_order_final)
    from .library import singlestep_orders

    _check_form(form)
    _solver_kind(solver_type)
    order = _check_order(order, (1, 2, 3), "dpm_solver_grid_stages")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "dpm_solver", needs="lambda")
    n = len(grid) - 1
    orders = singlestep_orders(n, order, lower_order_final, grid[-1].sigma == 0.0)
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        m = eps_hat if form == "noise" else x0_hat
        if orders[i] == 1:
            x_j, p_j, ms = x, p, [m]  # a block starts at grid point j = i
            x = _first_order(x, m, p, q, form)
        elif orders[i] == 2:
            ms.append(m)
            r = (p.lam - p_j.lam) / (q.lam - p_j.lam)
            x = dpm_solver_2_update(x_j, ms[0], ms[1], r, p_j.alpha, p_j.sigma, q.alpha, q.sigma, form=form,
                                    solver_type=solver_type)
        else:
            ms.append(m)
            h = q.lam - p_j.lam
            ra, rb = (grid[i - 1].lam - p_j.lam) / h, (p.lam - p_j.lam) / h
            x = dpm_solver_3_update(x_j, ms[0], ms[1], ms[2], ra, rb, p_j.alpha, p_j.sigma, q.alpha, q.sigma,
                                    form=form, solver_type=solver_type)
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def dpm_solver_singlestep(model, x, s, t, schedule, order, *, prediction_type="epsilon", form="noise",
                          solver_type="dpmsolver", r1=None, r2=None):
    """One singlestep DPM-Solver-k step (k = 1, 2, 3) from model time s to model time t < s,
    MATH.md (10.4)-(10.5), (10.9)-(10.11): :func:`dpm_solver_singlestep_loop` on the two-point grid.

    Parameters
    ----------
    model : callable
        ``model(x, t) -> output`` of ``prediction_type``.
    x : array (N, ...)
        The VP state at s.
    s, t : int or float
        The model times, t < s.
    schedule : Schedule or continuous VP
        The model's schedule.
    order : {1, 2, 3}
        The order.
    prediction_type : str, default "epsilon"
        What the model predicts.
    form : {"noise", "data"}, default "noise"
        The prediction the solver extrapolates.
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).
    r1, r2 : float, optional
        The stage offsets (defaults 1/2; 1/3, 2/3).

    Returns
    -------
    array (N, ...)
        The VP state at t.

    Raises
    ------
    ValueError
        If ``order`` or an option is invalid.
    """
    order = _check_order(order, (1, 2, 3), "dpm_solver_singlestep")
    grid = Grid([_point_at(schedule, s, "s"), point_at(schedule, t)])
    if not grid[0].lam < grid[1].lam:
        raise ValueError(f"s = {s!r} must be noisier than t = {t!r} (lambda_s < lambda_t): the step goes towards the data")
    return dpm_solver_singlestep_loop(model, x, schedule, grid, prediction_type=prediction_type, order=order, form=form,
                      solver_type=solver_type, r1=r1, r2=r2)


def dpm_solver_1(model, x, schedule, timesteps=None, **options):
    """:func:`dpm_solver_singlestep_loop` with order 1, noise form (DDIM with eta = 0), MATH.md (10.4).

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
    **options
        Keywords of :func:`dpm_solver_singlestep_loop` (an ``order`` or ``form`` given here overrides).

    Returns
    -------
    array (N, ...)
        As :func:`dpm_solver_singlestep_loop`.

    Raises
    ------
    ValueError, TypeError
        As :func:`dpm_solver_singlestep_loop`.
    """
    return dpm_solver_singlestep_loop(model, x, schedule, timesteps, **{"order": 1, **options})


def dpm_solver_2(model, x, schedule, timesteps=None, **options):
    """:func:`dpm_solver_singlestep_loop` with order 2, noise form (DPM-Solver-2), MATH.md (10.9).

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
    **options
        Keywords of :func:`dpm_solver_singlestep_loop` (an ``order`` or ``form`` given here overrides).

    Returns
    -------
    array (N, ...)
        As :func:`dpm_solver_singlestep_loop`.

    Raises
    ------
    ValueError, TypeError
        As :func:`dpm_solver_singlestep_loop`.
    """
    return dpm_solver_singlestep_loop(model, x, schedule, timesteps, **{"order": 2, **options})


def dpm_solver_3(model, x, schedule, timesteps=None, **options):
    """:func:`dpm_solver_singlestep_loop` with order 3, noise form (DPM-Solver-3), MATH.md (10.10)-(10.11).

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
    **options
        Keywords of :func:`dpm_solver_singlestep_loop` (an ``order`` or ``form`` given here overrides).

    Returns
    -------
    array (N, ...)
        As :func:`dpm_solver_singlestep_loop`.

    Raises
    ------
    ValueError, TypeError
        As :func:`dpm_solver_singlestep_loop`.
    """
    return dpm_solver_singlestep_loop(model, x, schedule, timesteps, **{"order": 3, **options})


def dpmpp_2s(model, x, schedule, timesteps=None, **options):
    """:func:`dpm_solver_singlestep_loop` with order 2, data form (DPM-Solver++(2S)), MATH.md (10.9).

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
    **options
        Keywords of :func:`dpm_solver_singlestep_loop` (an ``order`` or ``form`` given here overrides).

    Returns
    -------
    array (N, ...)
        As :func:`dpm_solver_singlestep_loop`.

    Raises
    ------
    ValueError, TypeError
        As :func:`dpm_solver_singlestep_loop`.
    """
    return dpm_solver_singlestep_loop(model, x, schedule, timesteps, **{"order": 2, "form": "data", **options})


def dpmpp_2m(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
             project=None, order=2, form="data", solver_type="dpmsolver", lower_order_final=True,
             final_sigmas_type=None, sigmas=None, interpolation="log_alpha"):
    """Multistep DPM-Solver++(2M), MATH.md (10.12): one model evaluation per step; D1 from the
    previous step's prediction.  The first step (no history), ``order=1``, and with
    ``lower_order_final=True`` (default, as the libraries) the last step are first order.
    Deterministic.

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
    order : int
        The order (see the defaults in the signature; 1-3, 1-2 for dpmpp_2m).
    form : {"noise", "data"}
        The prediction the solver extrapolates (default in the signature).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).
    lower_order_final : bool
        Lower the order of the final steps (default in the signature).
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
    ValueError
        If ``order``, ``form``, ``solver_type`` or another option is invalid (and as
        :func:`refdiff.make_grid`).
    TypeError
        As :func:`refdiff.make_grid`.
    """
    check_bool("lower_order_final", lower_order_final)
    _check_form(form)
    _solver_kind(solver_type)
    order = _check_order(order, (1, 2), "dpmpp_2m")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "dpmpp_2m", needs="lambda")
    n = len(grid) - 1
    m_prev = lam_prev = None
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        m = eps_hat if form == "noise" else x0_hat
        if q.sigma == 0.0:
            x = x0_hat  # (10.6)
        elif m_prev is None or order == 1 or (lower_order_final and i == n - 1):
            x = _first_order(x, m, p, q, form)  # (10.5)
        else:
            x = dpmpp_2m_update(x, m, m_prev, lam_prev, p.alpha, p.sigma, q.alpha, q.sigma, form=form,
                                solver_type=solver_type)  # (10.12)
        m_prev, lam_prev = m, p.lam
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def dpmpp_3m(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
             project=None, order=3, form="data", variant="exact", warmup=None, solver_type="dpmsolver",
             lower_order_final=True, final_sigmas_type=None, sigmas=None, interpolation="log_alpha"):
    """Multistep DPM-Solver++(3M), MATH.md (10.12)-(10.14), (10.18): step i uses the order its
    history allows, min(order, i + 1) (and with ``lower_order_final`` at most n - i).

    ``variant``: "exact" (the quadratic's D2, MATH.md (10.13)) or "published" (the release's
    D2, half as large, MATH.md (10.14)).  ``warmup`` (the first step): "singlestep" (default
    for "exact": a DPM-Solver++(2S) step with one extra evaluation, local error O(h^3), so the
    method stays third order) or "first_order" (default for "published": the libraries' first-
    order step, whose O(h^2) local error caps the global order at 2).  ``solver_type`` the
    coefficient of the second step (a 2M step): "dpmsolver" or "taylor" (k-diffusion's
    ``sample_dpmpp_3m_sde`` uses "taylor").  Deterministic.

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
    order : int
        The order (see the defaults in the signature; 1-3, 1-2 for dpmpp_2m).
    form : {"noise", "data"}
        The prediction the solver extrapolates (default in the signature).
    variant : str, default "exact"
        The third-order coefficient (above).
    warmup : {"singlestep", "first_order"}, optional
        The first step (above; default by ``variant``).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).
    lower_order_final : bool
        Lower the order of the final steps (default in the signature).
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
    ValueError
        If ``order``, ``form``, ``solver_type`` or another option is invalid (and as
        :func:`refdiff.make_grid`).
    TypeError
        As :func:`refdiff.make_grid`.
    """
    check_bool("lower_order_final", lower_order_final)
    check_choice("variant", variant, ("exact", "published"))
    _check_form(form)
    _solver_kind(solver_type)
    order = _check_order(order, (1, 2, 3), "dpmpp_3m")
    if variant not in ("exact", "published"):
        raise ValueError(f"dpmpp_3m: unknown variant {variant!r}; valid: 'exact', 'published'")
    warmup = ("singlestep" if variant == "exact" else "first_order") if warmup is None else warmup
    if warmup not in WARMUPS:
        raise ValueError(f"dpmpp_3m: unknown warmup {warmup!r}; valid: {', '.join(WARMUPS)}")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "dpmpp_3m", needs="lambda")
    n = len(grid) - 1
    hist = []  # (lambda, m) of the previous steps, newest first
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        m = eps_hat if form == "noise" else x0_hat
        k = min(order, len(hist) + 1, n - i if lower_order_final else order)
        if q.sigma == 0.0:
            x = x0_hat  # (10.6)
        elif i == 0 and warmup == "singlestep" and min(order, n if lower_order_final else order) > 1:
            p1 = point_at_lambda(schedule, 0.5 * (p.lam + q.lam))  # DPM-Solver++(2S), (10.9)
            m1 = predict(model, _first_order(x, m, p, p1, form), p1, prediction_type, i)[0 if form == "noise" else 1]
            x = dpm_solver_2_update(x, m, m1, 0.5, p.alpha, p.sigma, q.alpha, q.sigma, form=form)
        elif k == 1:
            x = _first_order(x, m, p, q, form)
        elif k == 2:
            x = dpmpp_2m_update(x, m, hist[0][1], hist[0][0], p.alpha, p.sigma, q.alpha, q.sigma, form=form,
                                solver_type=solver_type)  # (10.12)
        else:
            x = dpmpp_3m_update(x, m, hist[0][1], hist[1][1], hist[0][0], hist[1][0], p.alpha, p.sigma, q.alpha,
                                q.sigma, form=form, variant=variant)  # (10.13)-(10.14)
        hist = [(p.lam, m)] + hist[:1]
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


def dpmpp_2m_sde(model, x, schedule, timesteps=None, *, prediction_type="epsilon", noise=None, callback=None,
                 project=None, order=2, form="data", solver_type="dpmsolver", lower_order_final=True,
                 final_sigmas_type=None, sigmas=None, interpolation="log_alpha", variant="exact"):
    """DPM-Solver++(2M) SDE (eta = 1), MATH.md (10.15)-(10.16): the reverse VP SDE with its
    exact linear part, one model evaluation per step, D1 from the previous prediction (first
    and, with ``lower_order_final``, last step first order).  ``order=3`` (data form): from the
    third step on the third-order step (10.20) with ``variant`` "exact" or "diffusers" (diffusers
    0.42.1 ``sde-dpmsolver++``, ``solver_order=3``); with ``lower_order_final`` the second-to-last
    step is at most second order.  Noise: step i draws one noise(x) after its model call; a
    step to sigma = 0 returns x0_hat and draws none.

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
        ``noise(like) -> array``, a standard normal draw of like's shape (refdiff.sample builds it
        from ``rng``); required when a step draws noise.
    callback : callable, optional
        ``callback(i, t, x, x0_hat)`` after each step, in VP coordinates.
    project : callable, optional
        ``project(i, t, x) -> x``, applied after each step before ``callback``.
    order : int
        The order (see the defaults in the signature; 1-3, 1-2 for dpmpp_2m).
    form : {"noise", "data"}
        The prediction the solver extrapolates (default in the signature).
    solver_type : {"dpmsolver", "taylor", "midpoint", "heun"}, default "dpmsolver"
        The D1 coefficient (module constants ``SOLVER_TYPES``).
    lower_order_final : bool
        Lower the order of the final steps (default in the signature).
    final_sigmas_type : {"zero", "sigma_min"}, optional
        How a timestep grid ends (:func:`refdiff.make_grid`).
    sigmas : array_like, optional
        A decreasing grid of VE noise levels replacing ``timesteps`` (:func:`refdiff.make_grid`).
    interpolation : {"log_alpha", "log_sigma", "log_sigma_round"}, default "log_alpha"
        The model time of a noise level (:func:`refdiff.sigma_to_time`).
    variant : str, default "exact"
        The third-order coefficient (above).

    Returns
    -------
    array (N, ...)
        The VP state at the last grid point (x_0 when it is the data end).

    Raises
    ------
    TypeError
        If ``noise`` is None (and as :func:`refdiff.make_grid`).
    ValueError
        If ``order``, ``form``, ``solver_type`` is invalid, order 3 with the noise form (and as
        :func:`refdiff.make_grid`).
    """
    check_bool("lower_order_final", lower_order_final)
    check_choice("variant", variant, ("exact", "diffusers"))
    _check_form(form)
    _solver_kind(solver_type)
    order = _check_order(order, (1, 2, 3), "dpmpp_2m_sde")
    if order == 3 and form != "data":
        raise ValueError("dpmpp_2m_sde: order = 3 is defined in the data form only (form='data')")
    grid = vp_grid(schedule, timesteps, sigmas=sigmas, final_sigmas_type=final_sigmas_type,
                   interpolation=interpolation)
    check_start(model, x, grid, "dpmpp_2m_sde", needs="lambda")
    if noise is None:
        raise TypeError("method 'dpmpp_2m_sde' is stochastic and needs noise (pass rng= to refdiff.sample)")
    n = len(grid) - 1
    hist = []  # (lambda, m) of the previous steps, newest first
    for i in range(n):
        p, q = grid[i], grid[i + 1]
        eps_hat, x0_hat = predict(model, x, p, prediction_type, i)
        m = eps_hat if form == "noise" else x0_hat
        k = min(order, len(hist) + 1, n - i if lower_order_final else order)
        if q.sigma == 0.0:
            x = x0_hat  # (10.6)
        elif k == 1:
            x = dpmpp_sde_1_step(x, m, p.alpha, p.sigma, q.alpha, q.sigma, draw_noise(noise, x, "dpmpp_2m_sde"),
                                 form=form)  # (10.15)
        elif k == 2:
            x = dpmpp_2m_sde_update(x, m, hist[0][1], hist[0][0], p.alpha, p.sigma, q.alpha, q.sigma,
                                    draw_noise(noise, x, "dpmpp_2m_sde"), form=form, solver_type=solver_type)
        else:
            x = dpmpp_3m_sde_update(x, m, hist[0][1], hist[1][1], hist[0][0], hist[1][0], p.alpha, p.sigma, q.alpha,
                                    q.sigma, draw_noise(noise, x, "dpmpp_2m_sde"), variant=variant)  # (10.20)
        hist = [(p.lam, m)] + hist[:1]
        x = end_step(i, p.t, x, x0_hat, callback, project)
    return x


for _f in (dpm_solver_singlestep_loop, dpmpp_2m, dpmpp_3m, dpmpp_2m_sde):
    _f.__doc__ += _GRID_OPTIONS

METHODS = {
    "dpm_solver_1": dpm_solver_1,
    "dpm_solver_2": dpm_solver_2,
    "dpm_solver_3": dpm_solver_3,
    "dpmpp_2s": dpmpp_2s,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
}
