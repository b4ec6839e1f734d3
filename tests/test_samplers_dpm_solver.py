"""DPM-Solver and DPM-Solver++: step functions against quadrature, DDIM and Euler, exact
final steps, sample statistics on a Gaussian mixture, and bad input.

Expected values come from independent computations: numerical quadrature of the
variation-of-constants integral (MATH.md (10.2) and (10.3)), S1's DDIM and sigma-space Euler
steps, polynomial algebra, and the mixture's own sampler.  Orders: tests/test_orders.py.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

import refdiff
from refdiff.samplers import dpm_solver as D
from refdiff.samplers.ddim import ddim_loop
from refdiff.samplers.karras import euler_step
from tests._support import assert_close, asx, schedule_and_t

MIX = refdiff.GaussianMixture([0.3, 0.7], [[2.0, 0.5], [-1.0, -1.0]], [[0.3, 0.6], [0.5, 0.2]])
SCHED = refdiff.make_schedule("linear", 1000)


def _ab(lam):
    """(alpha, sigma) of a VP point with half log-SNR lam: alpha = sigmoid(2 lam)^(1/2)."""
    return 1.0 / math.sqrt(1.0 + math.exp(-2 * lam)), 1.0 / math.sqrt(1.0 + math.exp(2 * lam))


# ------------------------------------------------------------------ first order = DDIM = Euler
@given(schedule_and_t(min_T=3, max_T=300), st.integers(0, 2**31 - 1), st.sampled_from(["epsilon", "sample", "v_prediction"]))
@settings(max_examples=25)
def test_first_order_equals_ddim_and_sigma_euler(xp, st_t, seed, pt):
    """MATH.md (10.4), (10.5): DPM-Solver-1 (noise form) and DPM-Solver++(1) (data form) give
    the same step as S1's DDIM eta = 0 (``ddim_step``) and as Euler in sigma space
    (x / alpha, sigma = sigma_VP / alpha_VP, then scaled back), to float64 round-off."""
    sched, t = st_t
    t = max(t, 1)
    t_prev = t // 2 - 1  # includes -1: the step to alpha_bar = 1, MATH.md (10.6)
    rng = np.random.default_rng(seed)
    x, out = asx(xp, rng.standard_normal((3, 2))), asx(xp, rng.standard_normal((3, 2)))
    a, s = float(sched.sqrt_alpha_bars[t]), float(sched.sqrt_one_minus_alpha_bars[t])
    a2, s2 = (1.0, 0.0) if t_prev < 0 else (float(sched.sqrt_alpha_bars[t_prev]), float(sched.sqrt_one_minus_alpha_bars[t_prev]))
    eps, x0 = refdiff.to_eps_x0(out, x, a, s, pt)
    ddim = refdiff.ddim_step(sched, out, t, t_prev, x, eta=0.0, prediction_type=pt)
    d1 = D.dpm_solver_1_step(x, eps, a, s, a2, s2)
    dpp = D.dpmpp_1_step(x, x0, a, s, a2, s2)
    eul = a2 * euler_step(x / a, s / a, s2 / a2, x0)
    scale = 1.0 + float(np.max(np.abs(np.asarray(refdiff.to_numpy(x0)))))
    for y in (d1, dpp, eul):
        assert_close(y, ddim, xp=xp, rtol=1e-9, atol=1e-11 * scale)


def test_first_order_to_sigma_zero_is_x0_hat(xp):
    """MATH.md (10.6): at sigma_t = 0 (lambda = +inf) both first-order forms return x0_hat
    exactly (the limit of (10.4), (10.5)); the ratio forms have no inf * 0."""
    x = asx(xp, [[0.3, -1.2]])
    x0 = asx(xp, [[1.5, 0.25]])
    a, s = 0.6, 0.8
    eps = (x - a * x0) / s
    assert_close(D.dpmpp_1_step(x, x0, a, s, 1.0, 0.0), x0, xp=xp, rtol=1e-15)
    assert_close(D.dpm_solver_1_step(x, eps, a, s, 1.0, 0.0), x0, xp=xp, rtol=1e-14)


# ------------------------------------------------------------------ exponential integrator
@pytest.mark.parametrize("lam", [-2.0, 0.0, 1.5])
def test_pf_ode_in_lambda_is_derivative_of_exact_map(lam):
    """MATH.md (10.1): both forms of dx/dlambda, (dlog alpha/dlambda) x - sigma eps_hat and
    (dlog sigma/dlambda) x + alpha x0_hat, equal the lambda-derivative of the exact Gaussian
    probability-flow map (MATH.md (6.12)), by a central difference (step 1e-5)."""
    g = refdiff.GaussianData([0.5, -1.0], [[0.8, 0.3], [0.3, 0.5]])
    x = np.random.default_rng(0).standard_normal((4, 2))
    a, s = _ab(lam)
    d = 1e-5
    fd = (g.ode_transport(x, a, s, *_ab(lam + d)) - g.ode_transport(x, a, s, *_ab(lam - d))) / (2 * d)
    dla, dls = s * s, -a * a  # d log alpha / d lambda = sigma^2, d log sigma / d lambda = -alpha^2 on VP
    assert_close(dla * x - s * g.eps(x, a, s), fd, rtol=1e-7, atol=1e-8)
    assert_close(dls * x + a * g.x0_mean(x, a, s), fd, rtol=1e-7, atol=1e-8)


@given(st.floats(-3, 3), st.floats(0.05, 2.0), st.lists(st.floats(-2, 2), min_size=3, max_size=3),
       st.sampled_from(["noise", "data"]))
@settings(max_examples=30)
def test_taylor_update_matches_quadrature(lam_s, h, c, form):
    """MATH.md (10.2), (10.3), (10.7): when the prediction is exactly quadratic in lambda,
    m(lambda) = c0 + c1 u + c2 u^2 (u = lambda - lambda_s), the update with D1 = h m',
    D2 = h^2 m'' equals the variation-of-constants solution computed by quadrature."""
    (a_s, s_s), (a_t, s_t) = _ab(lam_s), _ab(lam_s + h)
    x_s = 0.7
    m = lambda u: c[0] + c[1] * u + c[2] * u * u  # noqa: E731
    if form == "noise":  # x_t = (a_t/a_s) x_s - a_t int e^{-lam} eps dlam
        integral = integrate.quad(lambda u: math.exp(-(lam_s + u)) * m(u), 0, h, epsabs=1e-14, epsrel=1e-13)[0]
        ref = a_t / a_s * x_s - a_t * integral
    else:  # x_t = (s_t/s_s) x_s + s_t int e^{lam} x0 dlam
        integral = integrate.quad(lambda u: math.exp(lam_s + u) * m(u), 0, h, epsabs=1e-14, epsrel=1e-13)[0]
        ref = s_t / s_s * x_s + s_t * integral
    got = D.dpm_solver_taylor_update(np.array(x_s), np.array(c[0]), np.array(h * c[1]), np.array(2 * h * h * c[2]),
                                     a_s, s_s, a_t, s_t, form=form)
    assert abs(float(got) - ref) <= 1e-10 * (1 + abs(ref))


@given(st.lists(st.floats(-2, 2), min_size=3, max_size=3), st.floats(0.1, 1.0),
       st.lists(st.floats(-2.5, 2.5).filter(lambda r: abs(r) > 0.05), min_size=2, max_size=2, unique=True))
@settings(max_examples=30)
def test_taylor_differences_exact_on_quadratics(c, h, r):
    """MATH.md (10.8): from values of a quadratic at lambda_s + r_j h (either side), D1 and D2
    are exactly h m'(lambda_s) and h^2 m''(lambda_s); with one point, D1 is exact on lines."""
    if abs(r[0] - r[1]) < 0.05:
        return
    m = lambda u: c[0] + c[1] * u + c[2] * u * u  # noqa: E731
    D1, D2 = D.taylor_differences(m(0.0), [m(r[0] * h), m(r[1] * h)], r)
    assert abs(D1 - h * c[1]) < 1e-9 and abs(D2 - 2 * h * h * c[2]) < 1e-8
    lin = lambda u: c[0] + c[1] * u  # noqa: E731
    D1, none = D.taylor_differences(lin(0.0), [lin(r[0] * h)], r[:1])
    assert none is None and abs(D1 - h * c[1]) < 1e-9


def test_second_and_third_order_stages_on_polynomials():
    """MATH.md (10.9), (10.10), (10.11), (10.12) and (10.13):
    with an exactly linear prediction the 'taylor' second-order
    updates (singlestep r1 = 1/2 and multistep with any h_prev) equal quadrature; with an
    exactly quadratic prediction the 'taylor' DPM-Solver-3 and the exact 3M are exact, and
    the paper's DPM-Solver-3 intermediate (10.10) is exact for a linear prediction."""
    lam_s, h = -0.4, 0.8
    (a_s, s_s), (a_t, s_t) = _ab(lam_s), _ab(lam_s + h)
    for form in ("noise", "data"):
        for deg, c in ((1, [0.3, -1.1, 0.0]), (2, [0.3, -1.1, 0.7])):
            m = lambda lam: np.asarray(c[0] + c[1] * (lam - lam_s) + c[2] * (lam - lam_s) ** 2)  # noqa: E731
            w = (lambda u: -a_t * math.exp(-(lam_s + u))) if form == "noise" else (lambda u: s_t * math.exp(lam_s + u))
            lead = a_t / a_s if form == "noise" else s_t / s_s
            ref = lead * 0.7 + integrate.quad(lambda u: w(u) * m(lam_s + u), 0, h, epsabs=1e-14)[0]
            x = np.array(0.7)
            if deg == 1:
                got = D.dpm_solver_2_update(x, m(lam_s), m(lam_s + h / 2), 0.5, a_s, s_s, a_t, s_t, form=form,
                                            solver_type="taylor")
                assert abs(got - ref) < 1e-12
                got = D.dpmpp_2m_update(x, m(lam_s), m(lam_s - 0.3), lam_s - 0.3, a_s, s_s, a_t, s_t, form=form,
                                        solver_type="heun")
                assert abs(got - ref) < 1e-12
                a2, s2 = _ab(lam_s + 2 * h / 3)
                ref2 = (a2 / a_s if form == "noise" else s2 / s_s) * 0.7 + integrate.quad(
                    lambda u: (-a2 * math.exp(-(lam_s + u)) if form == "noise" else s2 * math.exp(lam_s + u))
                    * m(lam_s + u), 0, 2 * h / 3, epsabs=1e-14)[0]
                got = D.dpm_solver_3_intermediate(x, m(lam_s), m(lam_s + h / 3), 1 / 3, 2 / 3, a_s, s_s, a2, s2, form=form)
                assert abs(got - ref2) < 1e-12
            else:
                got = D.dpm_solver_3_update(x, m(lam_s), m(lam_s + h / 3), m(lam_s + 2 * h / 3), 1 / 3, 2 / 3,
                                            a_s, s_s, a_t, s_t, form=form, solver_type="taylor")
                assert abs(got - ref) < 1e-12
                l1, l2 = lam_s - 0.5, lam_s - 0.9
                got = D.dpmpp_3m_update(x, m(lam_s), m(l1), m(l2), l1, l2, a_s, s_s, a_t, s_t, form=form)
                assert abs(got - ref) < 1e-12


@pytest.mark.parametrize("form", ["noise", "data"])
def test_singlestep_3_needs_r2_two_thirds(form):
    """MATH.md (10.10), (10.11): the intermediate value m1 comes from a first-order step and
    carries an error O(h^2); in the final stage it is weighted by (r2 phi1 - 2 phi2) /
    (r1 (r2 - r1)) = O(h) unless r2 = 2/3.  So singlestep DPM-Solver-3 has local error O(h^4)
    with r2 = 2/3 for any r1 (both solver types), and only O(h^3) with r2 = 1/2, also for
    'taylor', which is exact on quadratics given exact m1, m2.  One step from the exact
    trajectory of N(mu, Q diag(0.5, 1, 2) Q^T) on LinearVP (lambda 0 -> h, h = 0.4..0.05):
    fitted slopes measured 3.93-4.01 and 2.85-3.07; accepted > 3.7 and < 3.4."""
    from refdiff.samplers import orders as O

    vp = refdiff.LinearVP(0.1, 20.0, t_min=1e-3)
    g = refdiff.GaussianData(np.array([0.5, -1.0, 2.0]), O._Q @ np.diag([0.5, 1.0, 2.0]) @ O._Q.T)
    xT = np.random.default_rng(0).standard_normal((16, 3))
    ends = lambda t: (float(vp.alpha(np.asarray(t))), float(vp.sigma(np.asarray(t))))  # noqa: E731
    t_of = lambda lam: float(vp.t_from_lambda(np.asarray(lam)))  # noqa: E731
    hs = np.array([0.4, 0.2, 0.1, 0.05])

    def slope(**kw):
        errs = []
        for h in hs:
            t0, t1 = t_of(0.0), t_of(h)
            x0 = g.ode_transport(xT, *ends(1.0), *ends(t0))
            out = D.dpm_solver_singlestep(g.as_model(vp, "epsilon"), x0, t0, t1, vp, 3, form=form, **kw)
            errs.append(np.sqrt(np.mean((out - g.ode_transport(xT, *ends(1.0), *ends(t1))) ** 2)))
        return np.polyfit(np.log(hs), np.log(errs), 1)[0]

    for kw in ({}, {"solver_type": "taylor"}, {"solver_type": "taylor", "r1": 0.25}, {"r1": 0.25}):
        assert slope(**kw) > 3.7, kw
    for kw in ({"r2": 0.5}, {"solver_type": "taylor", "r2": 0.5}):
        assert slope(**kw) < 3.4, kw


def test_published_3m_halves_the_second_derivative_term():
    """MATH.md (10.14): the published 3M update differs from the exact one by exactly
    -psi2 D2 / 2 (data form: alpha_t psi2(h) h^2 m'' / 2), so it is not exact on quadratics;
    its local error is O(h^3) and the method is of order 2 (measured in test_orders.py)."""
    lam_s, h = 0.2, 0.5
    (a_s, s_s), (a_t, s_t) = _ab(lam_s), _ab(lam_s + h)
    c2 = 0.9
    m = lambda lam: np.asarray(1.0 + 0.5 * (lam - lam_s) + c2 * (lam - lam_s) ** 2)  # noqa: E731
    l1, l2 = lam_s - 0.4, lam_s - 0.7
    args = (np.array(0.1), m(lam_s), m(l1), m(l2), l1, l2, a_s, s_s, a_t, s_t)
    exact = D.dpmpp_3m_update(*args, variant="exact")
    pub = D.dpmpp_3m_update(*args, variant="published")
    psi2 = (h * h / 2 - h + 1 - math.exp(-h)) / h**2  # the exact integral of (10.7), written out
    assert abs((exact - pub) - a_t * psi2 * (h * h * 2 * c2) / 2) < 1e-13


# ------------------------------------------------------------------ SDE variants
@given(st.floats(-3, 3), st.floats(0.05, 3.0), st.floats(0.1, 0.9), st.sampled_from(["noise", "data"]))
@settings(max_examples=30)
def test_sde_first_order_is_exact_for_constant_prediction(lam_s, h, frac, form):
    """MATH.md (10.15): with a constant prediction m the first-order SDE step is the exact
    solution of the linear SDE, so it is a semigroup: one step s -> t has the same mean
    coefficient, m coefficient and noise variance as two steps s -> u -> t (independent
    noises).  The step is affine, x_t = A x_s + B m + C z; A, B, C are read off unit inputs.
    For point-mass data p (m = x0 = p exactly, data form) it maps N(alpha_s p, sigma_s^2) to
    N(alpha_t p, sigma_t^2): A alpha_s + B = alpha_t, A^2 sigma_s^2 + C^2 = sigma_t^2."""
    lam_u = lam_s + frac * h
    P = [_ab(lam_s), _ab(lam_u), _ab(lam_s + h)]

    def coefs(p0, p1):
        f = lambda x, m, z: float(D.dpmpp_sde_1_step(np.array(x), np.array(m), *p0, *p1, np.array(z), form=form))  # noqa: E731
        base = f(0.0, 0.0, 0.0)
        return f(1.0, 0.0, 0.0) - base, f(0.0, 1.0, 0.0) - base, f(0.0, 0.0, 1.0) - base

    A, B, C = coefs(P[0], P[2])
    A1, B1, C1 = coefs(P[0], P[1])
    A2, B2, C2 = coefs(P[1], P[2])
    assert abs(A - A2 * A1) < 1e-12 * (1 + abs(A))
    assert abs(B - (A2 * B1 + B2)) < 1e-11 * (1 + abs(B))
    assert abs(C * C - (A2 * A2 * C1 * C1 + C2 * C2)) < 1e-11 * (1 + C * C)
    if form == "data":
        (a_s, s_s), (a_t, s_t) = P[0], P[2]
        assert abs(A * a_s + B - a_t) < 1e-12
        assert abs(A * A * s_s**2 + C * C - s_t**2) < 1e-12


def test_2m_sde_reduces_to_first_order_for_constant_prediction():
    """MATH.md (10.16): with m_prev = m0 (a constant prediction, D1 = 0) the 2M SDE step is the
    first-order SDE step (10.15), for both solver types; with D1 != 0 'midpoint' adds half the
    D0 coefficient times D1: checked against (10.15)'s D0 coefficient alpha_t (1 - e^{-2h})."""
    (a_s, s_s), (a_t, s_t) = _ab(0.1), _ab(0.6)
    x, m0, z = np.array([0.5]), np.array([1.2]), np.array([-0.3])
    one = D.dpmpp_sde_1_step(x, m0, a_s, s_s, a_t, s_t, z)
    for st_ in ("midpoint", "heun"):
        assert_close(D.dpmpp_2m_sde_update(x, m0, m0, -0.2, a_s, s_s, a_t, s_t, z, solver_type=st_), one, rtol=1e-14)
    m_prev, h, r0 = np.array([0.7]), 0.5, 0.3 / 0.5
    got = D.dpmpp_2m_sde_update(x, m0, m_prev, 0.1 - 0.3, a_s, s_s, a_t, s_t, z, solver_type="midpoint")
    assert_close(got - one, 0.5 * a_t * (1 - math.exp(-2 * h)) * (m0 - m_prev) / r0, rtol=1e-12)


@pytest.mark.parametrize("form", ["data", "noise"])
def test_2m_sde_heun_is_exact_integral_for_linear_prediction(form):
    """MATH.md (10.15), (10.16): the reverse SDE's score term is twice the PF-ODE's, so its mean
    (z = 0) is (10.2) with the eps integral doubled (noise form) or, after moving
    -2 lambda' x into the linear part (integrating factor e^{2 lambda} / alpha), with kernel
    2 alpha_t e^{-2 (h - u)} on x0 (data form).  For an exactly linear prediction
    m = c0 + c1 u the 'heun' 2M SDE step (D1 = h m' exactly from m_prev) equals that integral
    by quadrature; 'midpoint' does not (it is only second order).  float64 quadrature: 1e-12."""
    lam_s, h, lam_prev = -0.3, 0.7, -0.8
    (a_s, s_s), (a_t, s_t) = _ab(lam_s), _ab(lam_s + h)
    m = lambda u: 0.4 - 1.3 * u  # noqa: E731  (u = lambda - lambda_s)
    x = np.array([0.6])
    if form == "data":
        ref = s_t / s_s * math.exp(-h) * 0.6 + integrate.quad(
            lambda u: 2 * a_t * math.exp(-2 * (h - u)) * m(u), 0, h, epsabs=1e-14, epsrel=1e-13)[0]
    else:
        ref = a_t / a_s * 0.6 - integrate.quad(
            lambda u: 2 * s_t * math.exp(h - u) * m(u), 0, h, epsabs=1e-14, epsrel=1e-13)[0]
    args = (x, np.array([m(0.0)]), np.array([m(lam_prev - lam_s)]), lam_prev, a_s, s_s, a_t, s_t, np.zeros(1))
    got = D.dpmpp_2m_sde_update(*args, form=form, solver_type="heun")
    assert abs(float(got[0]) - ref) < 1e-12
    mid = D.dpmpp_2m_sde_update(*args, form=form, solver_type="midpoint")
    assert abs(float(mid[0]) - ref) > 1e-4


# ------------------------------------------------------------------ loops
def test_loops_first_order_equal_ddim_loop(xp):
    """MATH.md (10.4), (10.5) and (10.6):
    on a Schedule grid with the final step to alpha_bar = 1, the
    dpm_solver_1 loop (noise form), dpmpp_2m with order 1 (data form) and S1's DDIM loop
    (eta = 0) coincide; with final_sigmas_type='sigma_min' dpm_solver_1 equals DDIM with
    set_alpha_to_one=False (the last state at index 0)."""
    model = MIX.as_model(SCHED, "epsilon")
    x = asx(xp, np.random.default_rng(3).standard_normal((5, 2)))
    ts = refdiff.timesteps(1000, 12, "trailing")
    ref = ddim_loop(model, x, SCHED, ts, eta=0.0)
    assert_close(D.dpm_solver_1(model, x, SCHED, ts), ref, xp=xp, rtol=1e-9, atol=1e-10)
    assert_close(D.dpmpp_2m(model, x, SCHED, ts, order=1), ref, xp=xp, rtol=1e-9, atol=1e-10)
    ts2 = refdiff.timesteps(1000, 12, "trailing")
    ref2 = ddim_loop(model, x, SCHED, np.concatenate([ts2, [0]]) if ts2[-1] != 0 else ts2, eta=0.0,
                     set_alpha_to_one=False)
    assert_close(D.dpm_solver_1(model, x, SCHED, ts2, final_sigmas_type="sigma_min"), ref2, xp=xp, rtol=1e-9,
                 atol=1e-10)


def test_loop_calls_model_at_integer_grid_then_continuous_indices():
    """MATH.md (10.9): singlestep DPM-Solver-2 on a Schedule evaluates the model at each integer
    grid index and at one float continuous index in between (lambda midpoint), n + n - 1
    calls for n steps to sigma = 0 (the last step is first order)."""
    calls = []
    base = MIX.as_model(SCHED, "epsilon")

    def model(x, t):
        calls.append(np.asarray(t)[0])
        return base(x, t)

    ts = refdiff.timesteps(1000, 4, "leading")  # 750, 500, 250, 0
    D.dpm_solver_2(model, np.zeros((2, 2)), SCHED, ts)
    assert len(calls) == 4 + 3
    ints = [c for c in calls if np.issubdtype(np.asarray(c).dtype, np.integer)]
    assert ints == [750, 500, 250, 0]
    mids = [float(c) for c in calls if not np.issubdtype(np.asarray(c).dtype, np.integer)]
    assert all(a > b for a, b in zip([750, 500, 250], mids)) and all(b > c for b, c in zip(mids, [500, 250, 0]))


def _match_mixture(out, tol_sd=4.0):
    """Moments (k standard errors), component weights (binomial k SE) and KS on two
    projections (p > 1e-3) against the mixture's own samples."""
    out = np.asarray(out)
    n = out.shape[0]
    ref = np.asarray(MIX.sample(20000, np.random.default_rng(123)))
    mu, sd = ref.mean(0), ref.std(0)
    assert np.all(np.abs(out.mean(0) - mu) < tol_sd * sd / math.sqrt(n)), (out.mean(0), mu)
    # variance: SE of a sample variance ~ sd^2 sqrt(2/n) (x 1.5 for the non-Gaussian kurtosis)
    assert np.all(np.abs(out.var(0) - sd**2) < tol_sd * 1.5 * sd**2 * math.sqrt(2 / n)), (out.var(0), sd**2)
    post = np.asarray(MIX.log_class_posterior(out, 1.0, 1e-3))  # near-data classification
    w = np.bincount(post.argmax(1), minlength=2) / n
    assert np.all(np.abs(w - np.array([0.3, 0.7])) < tol_sd * math.sqrt(0.21 / n)), w
    for d in (np.array([1.0, 0.0]), np.array([0.6, 0.8])):
        assert stats.ks_2samp(out @ d, ref @ d).pvalue > 1e-3


def test_dpmpp_2m_samples_match_mixture():
    """MATH.md (10.12): DPM-Solver++(2M), 20 steps on the linear schedule, x_T ~ N(0, I) at a
    fixed seed, N = 1500: moments within 4 standard errors, component weights within 4
    binomial SE, KS p-values > 1e-3 on two projections."""
    x = np.random.default_rng(7).standard_normal((1500, 2))
    out = refdiff.sample(MIX.as_model(SCHED, "epsilon"), x, SCHED, refdiff.timesteps(1000, 20, "trailing"),
                         "dpmpp_2m", progress=False)
    _match_mixture(out)


def test_dpmpp_2m_sde_samples_match_mixture():
    """MATH.md (10.15), (10.16): DPM-Solver++(2M) SDE, 40 steps, same checks and tolerances
    as the ODE test (seeded rng through refdiff.sample)."""
    x = np.random.default_rng(8).standard_normal((1500, 2))
    out = refdiff.sample(MIX.as_model(SCHED, "v_prediction"), x, SCHED, refdiff.timesteps(1000, 40, "trailing"),
                         "dpmpp_2m_sde", prediction_type="v_prediction", rng=np.random.default_rng(9), progress=False)
    _match_mixture(out)


def test_sde_noise_draws_counted():
    """MATH.md (10.16): dpmpp_2m_sde draws one noise per step except the step to sigma = 0."""
    n = [0]

    def noise(like):
        n[0] += 1
        return np.zeros(like.shape)

    D.dpmpp_2m_sde(MIX.as_model(SCHED), np.zeros((2, 2)), SCHED, refdiff.timesteps(1000, 7), noise=noise)
    assert n[0] == 6


# ------------------------------------------------------------------ bad input
def test_bad_input():
    """Clear errors for the DPM-Solver family, MATH.md (10.6) conventions."""
    m = MIX.as_model(SCHED)
    vp = refdiff.LinearVP()
    mv = MIX.as_model(vp)
    x = np.zeros((2, 2))
    ts = refdiff.timesteps(1000, 5)
    with pytest.raises(ValueError, match="unknown solver_type 'foo'"):
        D.dpmpp_2m(m, x, SCHED, ts, solver_type="foo")
    with pytest.raises(ValueError, match="unknown form 'eps'"):
        D.dpm_solver_2(m, x, SCHED, ts, form="eps")
    with pytest.raises(ValueError, match="order = 4 is out of range"):
        D.dpm_solver_3(m, x, SCHED, ts, order=4)
    with pytest.raises(ValueError, match="order = 4 is out of range"):
        D.dpmpp_2m_sde(m, x, SCHED, ts, order=4, noise=lambda like: np.zeros(like.shape))
    with pytest.raises(ValueError, match="order = 0 is out of range"):
        D.dpm_solver_singlestep(m, x, 10, 5, SCHED, 0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        D.dpmpp_2m(mv, x, vp, [0.5, 0.7, 0.1])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        D.dpmpp_2m(mv, x, vp, [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        D.dpmpp_3m(mv, x, vp, [1.5, 0.5])
    with pytest.raises(ValueError, match=r"steps must be >= 1"):
        D.dpmpp_2m(mv, x, vp, [1.0])
    with pytest.raises(ValueError, match="steps = 0"):
        D.dpm_solver_1(m, x, SCHED, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        D.dpm_solver_1(m, x, SCHED, [1000, 10])
    with pytest.raises(ValueError, match="final_sigmas_type 'none'"):
        D.dpmpp_2m(m, x, SCHED, ts, final_sigmas_type="none")
    with pytest.raises(ValueError, match="variant = 'fast'"):
        D.dpmpp_3m(m, x, SCHED, ts, variant="fast")
    with pytest.raises(TypeError, match="stochastic and needs noise"):
        D.dpmpp_2m_sde(m, x, SCHED, ts)
    with pytest.raises(TypeError, match="unexpected keyword"):
        D.dpmpp_2m(m, x, SCHED, ts, eta=0.5)
    with pytest.raises(ValueError, match="h > 0"):
        D.dpm_solver_taylor_update(x, x, None, None, 0.9, 0.4, 0.6, 0.8, form="data")


def test_nan_model_names_the_step():
    """A model producing NaN at the third call is reported with its step."""
    base = MIX.as_model(SCHED)
    k = [0]

    def model(x, t):
        k[0] += 1
        out = base(x, t)
        return out * np.nan if k[0] == 3 else out

    with pytest.raises(FloatingPointError, match="step 2"):
        D.dpmpp_2m(model, np.zeros((2, 2)), SCHED, refdiff.timesteps(1000, 5))


@pytest.mark.parametrize("variant, lo, hi", [("exact", 3.7, 4.3), ("diffusers", 1.8, 2.4)])
def test_3m_sde_step_local_error_against_quadrature(variant, lo, hi):
    """MATH.md (10.20): the mean of one third-order SDE step (noise 0) from lambda_s = 0.3 with
    exact history m(lambda_s - h), m(lambda_s - 2h) of a smooth m(lambda), against the exact
    mean (sigma_t/sigma_s) e^{-h} x_s + alpha_t int_0^h 2 e^{-2(h-u)} m(lambda_s + u) du by
    quadrature: the exact coefficients have local error O(h^4) (fitted slope in [3.7, 4.3]),
    diffusers' D2 coefficient (one below the exact integral) O(h^2) (slope in [1.8, 2.4]):
    effectively a first-order method."""
    from scipy.integrate import quad

    def m(lam):
        return np.array([math.sin(lam), math.exp(0.3 * lam), 1.0 / (1.0 + lam * lam)])

    def ab(lam):
        a = 1.0 / math.sqrt(1.0 + math.exp(-2.0 * lam))
        return a, a * math.exp(-lam)

    lam0, x, hs, errs = 0.3, np.array([0.2, -0.4, 0.7]), (0.1, 0.05, 0.025, 0.0125), []
    for h in hs:
        (a_s, s_s), (a_t, s_t) = ab(lam0), ab(lam0 + h)
        out = D.dpmpp_3m_sde_update(x, m(lam0), m(lam0 - h), m(lam0 - 2 * h), lam0 - h, lam0 - 2 * h, a_s, s_s,
                                    a_t, s_t, np.zeros(3), variant=variant)
        integral = [quad(lambda u: 2 * math.exp(-2 * (h - u)) * m(lam0 + u)[j], 0, h, epsabs=1e-15, epsrel=1e-13)[0]
                    for j in range(3)]
        ref = (s_t / s_s) * math.exp(-h) * x + a_t * np.array(integral)
        errs.append(float(np.sqrt(np.mean((out - ref) ** 2))))
    slope = float(np.polyfit(np.log(hs), np.log(errs), 1)[0])  # error ~ h^slope
    assert lo <= slope <= hi, (slope, errs)
