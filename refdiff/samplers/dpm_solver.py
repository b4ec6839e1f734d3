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

from ..backend import check_finite, to_numpy
from ..schedules import InterpolatedVP, Schedule, _ContinuousVP
from .common import predict_eps_x0

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
    "dpm_solver_singlestep",
    "dpm_solver_1",
    "dpm_solver_2",
    "dpm_solver_3",
    "dpmpp_2s",
    "dpmpp_2m",
    "dpmpp_3m",
    "dpmpp_2m_sde",
]

FORMS = ("noise", "data")
# "dpmsolver"/"midpoint": the papers' second-order coefficient; "taylor"/"heun": the exact
# Taylor integral (MATH.md (10.9)).  The second names are the PyTorch library's.
SOLVER_TYPES = ("dpmsolver", "taylor", "midpoint", "heun")


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
def dpm_solver_1_step(x_s, eps_s, alpha_s, sigma_s, alpha_t, sigma_t):
    """DPM-Solver-1 (noise form), MATH.md (10.4):
    x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s, h = lambda_t - lambda_s.

    Written as x_t = (alpha_t/alpha_s) x_s - (alpha_t sigma_s / alpha_s - sigma_t) eps_s so
    that sigma_t = 0 (h = inf) is exact and gives x_t = x0_hat, MATH.md (10.6).  This is DDIM
    with eta = 0."""
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    return (alpha_t / alpha_s) * x_s - (alpha_t * sigma_s / alpha_s - sigma_t) * eps_s


def dpmpp_1_step(x_s, x0_s, alpha_s, sigma_s, alpha_t, sigma_t):
    """DPM-Solver++(1) (data form), MATH.md (10.5):
    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s.

    With e^{-h} = (sigma_t alpha_s) / (alpha_t sigma_s) this is exact at sigma_t = 0, where it
    returns alpha_t x0_s, MATH.md (10.6).  Algebraically identical to :func:`dpm_solver_1_step`
    with eps_s = (x_s - alpha_s x0_s) / sigma_s."""
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    e_mh = (sigma_t * alpha_s) / (alpha_t * sigma_s)  # e^{-h}
    return (sigma_t / sigma_s) * x_s + alpha_t * (1.0 - e_mh) * x0_s


def _first_order(x_s, m_s, ps, pt, form):
    f = dpm_solver_1_step if form == "noise" else dpmpp_1_step
    return f(x_s, m_s, ps[1], ps[2], pt[1], pt[2])


# ----------------------------------------------------------------------------- Taylor form
def taylor_differences(m0, m_others, offsets):
    """Estimates of D1 = h m'(lambda_s) and D2 = h^2 m''(lambda_s) from m0 = m(lambda_s) and
    values m_j = m(lambda_s + r_j h) at signed offsets r_j (units of h; r > 0 ahead, as in a
    singlestep solver, r < 0 behind, as in a multistep one), MATH.md (10.8).

    One other point: D1 = (m_1 - m0) / r_1, D2 = None.  Two: the derivatives of the quadratic
    through the three points, D1 = (r_2 E_1 - r_1 E_2)/(r_2 - r_1), D2 = 2 (E_2 - E_1)/(r_2 - r_1)
    with E_j = (m_j - m0)/r_j."""
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


def dpm_solver_taylor_update(x_s, m0, D1, D2, alpha_s, sigma_s, alpha_t, sigma_t, *, form):
    """The exponential-integrator update with a Taylor model of the prediction, MATH.md
    (10.2)-(10.3), (10.7):

    noise form: x_t = (alpha_t/alpha_s) x_s - sigma_t [phi0 m0 + phi1 D1 + phi2 D2],
    data form:  x_t = (sigma_t/sigma_s) x_s + alpha_t [psi0 m0 + psi1 D1 + psi2 D2],

    with the exact integrals phi_k(h), psi_k(h) of MATH.md (10.7); D1, D2 may be None (order 1, 2)."""
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
def dpm_solver_2_update(x_s, m0, m1, r1, alpha_s, sigma_s, alpha_t, sigma_t, *, form, solver_type="dpmsolver"):
    """The second stage of singlestep DPM-Solver-2 / DPM-Solver++(2S), MATH.md (10.9), given
    m0 at lambda_s and m1 at the intermediate point lambda_s + r1 h (default r1 = 1/2):

    "dpmsolver" (the papers): the D1 coefficient is phi0 / 2 (noise) or psi0 / 2 (data);
    "taylor": the exact integral phi1 (psi1).  Both are second order."""
    _check_form(form)
    kind = _solver_kind(solver_type)
    D1, _ = taylor_differences(m0, [m1], [r1])
    if kind == "taylor":
        return dpm_solver_taylor_update(x_s, m0, D1, None, alpha_s, sigma_s, alpha_t, sigma_t, form=form)
    # phi0 (m0 + D1/2): the D1 coefficient is half the D0 coefficient
    return dpm_solver_taylor_update(x_s, m0 + 0.5 * D1, None, None, alpha_s, sigma_s, alpha_t, sigma_t, form=form)


def dpm_solver_3_intermediate(x_s, m0, m1, r1, r2, alpha_s, sigma_s, alpha_s2, sigma_s2, *, form):
    """The point u2 at lambda_s + r2 h of singlestep DPM-Solver-3 (Taylor second order from
    m0 and m1 = m(lambda_s + r1 h)), MATH.md (10.10):

    u2 = first-order step to s2 + [-sigma_s2 phi1(r2 h) | alpha_s2 psi1(r2 h)] (r2 / r1)(m1 - m0)."""
    D1 = (float(r2) / float(r1)) * (m1 - m0)  # estimate of (r2 h) m'
    return dpm_solver_taylor_update(x_s, m0, D1, None, alpha_s, sigma_s, alpha_s2, sigma_s2, form=form)


def dpm_solver_3_update(x_s, m0, m1, m2, r1, r2, alpha_s, sigma_s, alpha_t, sigma_t, *, form, solver_type="dpmsolver"):
    """The last stage of singlestep DPM-Solver-3 / DPM-Solver++(3S), MATH.md (10.11), given
    m0, m1 = m(lambda_s + r1 h), m2 = m(lambda_s + r2 h) (the paper: r1 = 1/3, r2 = 2/3):

    "dpmsolver" (the paper): only D1 = (m2 - m0) / r2 with the phi1 coefficient; it is third
    order because r2 = 2/3 cancels the m'' term.  "taylor": D1, D2 from the quadratic
    through the three values, MATH.md (10.8), with the exact coefficients.  In a singlestep
    solver (m1 from a first-order step) both are third order only with r2 = 2/3 (r1 free);
    other r2 give second order, MATH.md (10.11)."""
    _check_form(form)
    kind = _solver_kind(solver_type)
    if kind == "taylor":
        D1, D2 = taylor_differences(m0, [m1, m2], [r1, r2])
    else:
        D1, D2 = (m2 - m0) / float(r2), None
    return dpm_solver_taylor_update(x_s, m0, D1, D2, alpha_s, sigma_s, alpha_t, sigma_t, form=form)


# ----------------------------------------------------------------------------- multistep
def dpmpp_2m_update(x_s, m0, m_prev, lambda_prev, alpha_s, sigma_s, alpha_t, sigma_t, *, form="data",
                    solver_type="dpmsolver"):
    """Multistep second order (DPM-Solver++(2M) in the data form), MATH.md (10.12): the
    previous prediction m_prev at lambda_prev < lambda_s gives D1 = (m0 - m_prev) / r0,
    r0 = h_prev / h.  ``solver_type`` as in :func:`dpm_solver_2_update`."""
    h = _h(float(alpha_s), float(sigma_s), float(alpha_t), float(sigma_t))
    r = (float(lambda_prev) - _lam(float(alpha_s), float(sigma_s))) / h  # = -r0 < 0
    return dpm_solver_2_update(x_s, m0, m_prev, r, alpha_s, sigma_s, alpha_t, sigma_t, form=form,
                               solver_type=solver_type)


def dpmpp_3m_update(x_s, m0, m1, m2, lambda_1, lambda_2, alpha_s, sigma_s, alpha_t, sigma_t, *, form="data",
                    variant="exact"):
    """Multistep third order (DPM-Solver++(3M) in the data form), MATH.md (10.13)-(10.14),
    from m0 at lambda_s and the two previous predictions m1 at lambda_1, m2 at lambda_2.

    ``variant="exact"``: D1, D2 from the quadratic through the three values (MATH.md (10.8)),
    third order.  ``variant="published"``: the form of the DPM-Solver code release and the
    PyTorch library, whose D2 = (D1_0 - D1_1)/(r0 + r1) is h^2 m''/2, half the Taylor
    coefficient; it measures second order (MATH.md (10.14))."""
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


def dpmpp_sde_1_step(x_s, m0, alpha_s, sigma_s, alpha_t, sigma_t, noise, *, form="data"):
    """First-order step of the reverse VP SDE solved with its exact linear part (SDE-DPM-Solver-1
    / SDE-DPM-Solver++(1)), MATH.md (10.15):

    data:  x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0 + sigma_t sqrt(1 - e^{-2h}) z,
    noise: x_t = (alpha_t/alpha_s) x_s - 2 sigma_t (e^h - 1) eps + sigma_t sqrt(e^{2h} - 1) z.

    ``noise`` is z ~ N(0, I) of x_s's shape.  sigma_t must be > 0 (use x0_hat for a final
    step to sigma = 0)."""
    _check_form(form)
    a, b, _, c = _sde_coefs(float(alpha_s), float(sigma_s), float(alpha_t), float(sigma_t), form)
    return a * x_s + b * m0 + c * noise


def dpmpp_2m_sde_update(x_s, m0, m_prev, lambda_prev, alpha_s, sigma_s, alpha_t, sigma_t, noise, *, form="data",
                        solver_type="dpmsolver"):
    """Second-order multistep SDE step (DPM-Solver++(2M) SDE), MATH.md (10.16): the first-order
    SDE step plus a D1 = (m0 - m_prev)/r0 term with coefficient half the D0 coefficient
    ("dpmsolver"/"midpoint") or the exact integral ("taylor"/"heun")."""
    _check_form(form)
    kind = _solver_kind(solver_type)
    alpha_s, sigma_s, alpha_t, sigma_t = map(float, (alpha_s, sigma_s, alpha_t, sigma_t))
    a, b, c1, c = _sde_coefs(alpha_s, sigma_s, alpha_t, sigma_t, form)
    h = _h(alpha_s, sigma_s, alpha_t, sigma_t)
    r = (float(lambda_prev) - _lam(alpha_s, sigma_s)) / h
    D1 = (m_prev - m0) / r
    coef1 = 0.5 * b if kind == "dpmsolver" else c1
    return a * x_s + b * m0 + coef1 * D1 + c * noise


# ----------------------------------------------------------------------------- time axis
class _Axis:
    """Points (model_time, alpha, sigma) of a Schedule (via InterpolatedVP) or continuous VP."""

    def __init__(self, schedule):
        if isinstance(schedule, Schedule):
            self.schedule, self.vp, self.T = schedule, InterpolatedVP(schedule), schedule.T
        elif isinstance(schedule, _ContinuousVP):
            self.schedule, self.vp, self.T = schedule, schedule, None
        else:
            raise TypeError(f"schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")

    def point(self, t):
        if self.T is not None and isinstance(t, (int, np.integer)):
            k = int(t)
            return (k, float(self.schedule.sqrt_alpha_bars[k]), float(self.schedule.sqrt_one_minus_alpha_bars[k]))
        tc = (float(t) + 1.0) / self.T if self.T is not None else float(t)
        return self._at_tc(tc)

    def _at_tc(self, tc):
        tt = np.asarray(tc, dtype=np.float64)
        a, s = float(self.vp.alpha(tt)), float(self.vp.sigma(tt))
        return (tc * self.T - 1.0 if self.T is not None else tc, a, s)

    def at_lambda(self, lam):
        return self._at_tc(float(self.vp.t_from_lambda(np.asarray(lam, dtype=np.float64))))


def _grid_values(schedule, timesteps, who):
    """Validate a loop's grid: integers strictly decreasing in [0, T-1] (Schedule, >= 1
    point) or floats strictly decreasing in (0, 1] (continuous VP, >= 2 points)."""
    ts = to_numpy(timesteps) if hasattr(timesteps, "shape") else np.asarray(timesteps)
    if ts.ndim != 1:
        raise ValueError(f"{who}: timesteps must be 1-D, got shape {ts.shape}")
    if isinstance(schedule, Schedule):
        if ts.size < 1:
            raise ValueError(f"{who}: steps = 0; need at least 1 timestep")
        if ts.dtype.kind not in "iu":
            raise TypeError(f"{who}: with a discrete Schedule timesteps must be integers, got dtype {ts.dtype}")
        if ts.min() < 0 or ts.max() > schedule.T - 1:
            raise ValueError(f"{who}: timesteps {ts.tolist()} out of range [0, {schedule.T - 1}]")
        vals = [int(v) for v in ts]
    elif isinstance(schedule, _ContinuousVP):
        if ts.size < 2:
            raise ValueError(f"{who}: a continuous grid needs >= 2 times (steps >= 1), got {ts.size}")
        if not np.all(np.isfinite(ts)) or ts.min() <= 0 or ts.max() > 1:
            raise ValueError(f"{who}: continuous times must lie in (0, 1] (t = 0 is data), got "
                             f"min {ts.min()!r}, max {ts.max()!r}")
        vals = [float(v) for v in ts]
    else:
        raise TypeError(f"{who}: schedule must be a Schedule or a continuous VP schedule, got {type(schedule).__name__}")
    if np.any(np.diff(ts) >= 0):
        i = int(np.flatnonzero(np.diff(ts) >= 0)[0])
        raise ValueError(f"{who}: timesteps must be strictly decreasing; timesteps[{i}] = {ts[i]!r} <= "
                         f"timesteps[{i + 1}] = {ts[i + 1]!r}")
    return vals


_ZERO = (None, 1.0, 0.0)  # the point alpha = 1, sigma = 0 (lambda = +inf)


def grid_points(schedule, timesteps, final_sigmas_type=None, who="sampler"):
    """The list of (model_time, alpha, sigma) a loop visits, MATH.md (10.6).

    Schedule: the n integer timesteps, then a final point: ``"zero"`` (default, alpha = 1,
    sigma = 0, the last step returns x0_hat, like DDIM's t_prev = -1) or ``"sigma_min"``
    (index 0, the least noisy training level; nothing is added if the grid ends there).
    Continuous VP: the n + 1 given times; ``"sigma_min"`` (default) ends at the last time,
    ``"zero"`` appends a final denoising step to sigma = 0."""
    vals = _grid_values(schedule, timesteps, who)
    axis = _Axis(schedule)
    cont = axis.T is None
    final_sigmas_type = ("sigma_min" if cont else "zero") if final_sigmas_type is None else final_sigmas_type
    if final_sigmas_type not in ("zero", "sigma_min"):
        raise ValueError(f"{who}: unknown final_sigmas_type {final_sigmas_type!r}; valid: 'zero', 'sigma_min'")
    pts = [axis.point(v) for v in vals]
    if final_sigmas_type == "zero":
        pts.append(_ZERO)
    elif not cont and vals[-1] != 0:
        pts.append(axis.point(0))
    return axis, pts


def _predict(model, x, p, schedule, prediction_type, i, form=None):
    eps, x0 = predict_eps_x0(model, x, p[0], schedule, prediction_type, step=i)
    return eps, x0


def _finish(x, i, p, callback, x0):
    check_finite(x, "sampler state", f"step {i} (t = {p[0]})")
    return x


# ----------------------------------------------------------------------------- singlestep
def _singlestep(model, x, ps, pt, axis, order, form, solver_type, prediction_type, i, r1, r2, pred_s=None):
    sched = axis.schedule
    eps, x0 = pred_s if pred_s is not None else _predict(model, x, ps, sched, prediction_type, i)
    m0 = eps if form == "noise" else x0
    if pt[2] == 0.0:  # to sigma = 0: first order, x_t = x0_hat (10.6)
        return x0, x0
    if order == 1:
        return _first_order(x, m0, ps, pt, form), x0
    lam_s, lam_t = _lam(ps[1], ps[2]), _lam(pt[1], pt[2])
    h = lam_t - lam_s
    pick = (lambda e, d: e) if form == "noise" else (lambda e, d: d)  # noqa: E731
    ra = 0.5 if (order == 2 and r1 is None) else (1.0 / 3.0 if r1 is None else float(r1))
    p1 = axis.at_lambda(lam_s + ra * h)
    u1 = _first_order(x, m0, ps, p1, form)
    m1 = pick(*_predict(model, u1, p1, sched, prediction_type, i))
    if order == 2:
        return dpm_solver_2_update(x, m0, m1, ra, ps[1], ps[2], pt[1], pt[2], form=form, solver_type=solver_type), x0
    rb = 2.0 / 3.0 if r2 is None else float(r2)
    p2 = axis.at_lambda(lam_s + rb * h)
    u2 = dpm_solver_3_intermediate(x, m0, m1, ra, rb, ps[1], ps[2], p2[1], p2[2], form=form)
    m2 = pick(*_predict(model, u2, p2, sched, prediction_type, i))
    return dpm_solver_3_update(x, m0, m1, m2, ra, rb, ps[1], ps[2], pt[1], pt[2], form=form,
                               solver_type=solver_type), x0


def dpm_solver_singlestep(model, x, s, t, schedule, order, *, prediction_type="epsilon", form="noise",
                          solver_type="dpmsolver", r1=None, r2=None):
    """One singlestep DPM-Solver-k step (k = 1, 2, 3) from time s to time t < s (model times:
    integer indices / float continuous indices with a Schedule, floats in (0, 1] with a
    continuous VP, t = 0 data), MATH.md (10.4)-(10.5), (10.9)-(10.11).  Intermediate points
    are at lambda_s + r h: r1 = 1/2 (order 2), r1 = 1/3, r2 = 2/3 (order 3).  Returns x_t."""
    _check_form(form)
    _solver_kind(solver_type)
    order = _check_order(order, (1, 2, 3), "dpm_solver_singlestep")
    axis = _Axis(schedule)
    ps, pt = axis.point(s), axis.point(t)
    return _singlestep(model, x, ps, pt, axis, order, form, solver_type, prediction_type, None, r1, r2)[0]


def _singlestep_loop(who, default_order, default_form):
    def loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None,
             order=default_order, form=default_form, solver_type="dpmsolver", lower_order_final=False,
             final_sigmas_type=None, r1=None, r2=None):
        _check_form(form)
        _solver_kind(solver_type)
        order = _check_order(order, (1, 2, 3), who)
        axis, pts = grid_points(schedule, timesteps, final_sigmas_type, who)
        n = len(pts) - 1
        for i in range(n):
            k = min(order, n - i) if lower_order_final else order
            x, x0 = _singlestep(model, x, pts[i], pts[i + 1], axis, k, form, solver_type, prediction_type, i, r1, r2)
            x = _finish(x, i, pts[i], callback, x0)
            if callback is not None:
                callback(i, pts[i][0], x, x0)
        return x

    loop.__name__ = loop.__qualname__ = who
    loop.__doc__ = f"""Singlestep DPM-Solver loop ``{who}`` (default order {default_order}, form
    {default_form!r}), MATH.md (10.4)-(10.11).  Deterministic: draws no noise (``noise`` is
    ignored).  Each grid interval is one order-``order`` step with ``order`` model evaluations
    (intermediate points at lambda_s + r h); ``lower_order_final=True`` caps the order of
    interval i (of n) at n - i.  ``final_sigmas_type`` as in :func:`grid_points`; a step to
    sigma = 0 returns the model's x0_hat.  ``callback(i, t_i, x_{{i+1}}, x0_hat(t_i))`` after
    each step.  Options: order (1-3), form ('noise'/'data'), solver_type, r1, r2."""
    return loop


dpm_solver_1 = _singlestep_loop("dpm_solver_1", 1, "noise")
dpm_solver_2 = _singlestep_loop("dpm_solver_2", 2, "noise")
dpm_solver_3 = _singlestep_loop("dpm_solver_3", 3, "noise")
dpmpp_2s = _singlestep_loop("dpmpp_2s", 2, "data")


# ----------------------------------------------------------------------------- multistep
def _multistep_loop(who, default_order, sde=False):
    valid = (1, 2) if sde else (1, 2, 3)

    def loop(model, x, schedule, timesteps, *, prediction_type="epsilon", noise=None, callback=None,
             order=default_order, form="data", solver_type="dpmsolver", lower_order_final=True,
             final_sigmas_type=None, variant="exact"):
        _check_form(form)
        _solver_kind(solver_type)
        order = _check_order(order, valid, who)
        if variant not in ("exact", "published"):
            raise ValueError(f"{who}: unknown variant {variant!r}; valid: 'exact', 'published'")
        if sde and noise is None:
            raise TypeError(f"method {who!r} is stochastic and needs noise (pass rng= to refdiff.sample)")
        axis, pts = grid_points(schedule, timesteps, final_sigmas_type, who)
        n = len(pts) - 1
        hist = []  # (lambda, m) of the previous steps, newest last
        for i in range(n):
            ps, pt = pts[i], pts[i + 1]
            eps, x0 = _predict(model, x, ps, schedule, prediction_type, i)
            m0 = eps if form == "noise" else x0
            k = min(order, len(hist) + 1)
            if lower_order_final:
                k = min(k, n - i)
            a_s, s_s, a_t, s_t = ps[1], ps[2], pt[1], pt[2]
            if s_t == 0.0:
                x = x0  # final step to sigma = 0 (10.6): no noise is drawn
            elif sde:
                z = noise(x)
                if k == 1:
                    x = dpmpp_sde_1_step(x, m0, a_s, s_s, a_t, s_t, z, form=form)
                else:
                    x = dpmpp_2m_sde_update(x, m0, hist[-1][1], hist[-1][0], a_s, s_s, a_t, s_t, z, form=form,
                                            solver_type=solver_type)
            elif k == 1:
                x = _first_order(x, m0, ps, pt, form)
            elif k == 2:
                x = dpmpp_2m_update(x, m0, hist[-1][1], hist[-1][0], a_s, s_s, a_t, s_t, form=form,
                                    solver_type=solver_type)
            else:
                x = dpmpp_3m_update(x, m0, hist[-1][1], hist[-2][1], hist[-1][0], hist[-2][0], a_s, s_s, a_t, s_t,
                                    form=form, variant=variant)
            hist = (hist + [(_lam(a_s, s_s), m0)])[-2:]
            x = _finish(x, i, ps, callback, x0)
            if callback is not None:
                callback(i, ps[0], x, x0)
        return x

    loop.__name__ = loop.__qualname__ = who
    noise_doc = ("Stochastic: step i draws one noise(x) (shape of x) before its update, in step order; "
                 "a step to sigma = 0 draws none." if sde else "Deterministic: draws no noise (``noise`` is ignored).")
    loop.__doc__ = f"""Multistep DPM-Solver loop ``{who}`` (default order {default_order}, form 'data'),
    MATH.md (10.12)-(10.16).  {noise_doc}  One model evaluation per step; step i uses order
    min(order, i + 1) (the history it has), and with ``lower_order_final=True`` (default)
    also at most n - i, so the last step is first order (this caps the global order at 2,
    MATH.md (10.14)).  ``final_sigmas_type`` as in :func:`grid_points`.  ``variant`` selects the
    3M coefficients ('exact' or 'published').  ``callback(i, t_i, x_{{i+1}}, x0_hat(t_i))``."""
    return loop


dpmpp_2m = _multistep_loop("dpmpp_2m", 2)
dpmpp_3m = _multistep_loop("dpmpp_3m", 3)
dpmpp_2m_sde = _multistep_loop("dpmpp_2m_sde", 2, sde=True)

METHODS = {
    "dpm_solver_1": dpm_solver_1,
    "dpm_solver_2": dpm_solver_2,
    "dpm_solver_3": dpm_solver_3,
    "dpmpp_2s": dpmpp_2s,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
}
