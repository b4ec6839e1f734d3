"""UniPC: order conditions against quadrature, one-step (local) orders on the Gaussian
oracle's exact trajectory, fitted global orders, reductions to DPM-Solver++, the step to
sigma = 0, a point mass returned exactly, and bad input.

References are independent of the code under test: the variation-of-constants integral
(10.3) by scipy quadrature, the oracle's exact ODE map (6.12), refdiff's DPM-Solver++ steps.
diffusers agreement: tests/test_compare_diffusers_new.py.
"""

import math

import numpy as np
import pytest
from scipy import integrate

import refdiff
from refdiff.samplers import unipc as U
from refdiff.samplers.dpm_solver import dpmpp_1_step, dpmpp_2m_update
from tests._support import assert_close, fitted_order

G = refdiff.GaussianData(np.array([0.5, -1.0, 2.0]), np.diag([0.3, 1.0, 3.0]))
VP = refdiff.LinearVP(0.1, 20.0, t_min=1e-3)


def _ab(lam):
    return 1.0 / math.sqrt(1.0 + math.exp(-2 * lam)), 1.0 / math.sqrt(1.0 + math.exp(2 * lam))


def _exact_data_form(x_s, m, lam_s, lam_t):
    """(10.3) by quadrature for a prediction m(lambda) given as a callable of lambda."""
    (a_s, s_s), (a_t, s_t) = _ab(lam_s), _ab(lam_t)
    integral = np.array([integrate.quad(lambda l: math.exp(l) * m(l)[k], lam_s, lam_t, epsabs=1e-14, epsrel=1e-13)[0]
                         for k in range(len(x_s))])
    return s_t / s_s * x_s + s_t * integral


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("p", [3])
def test_unip_exact_for_polynomial_predictions(variant, p):
    """MATH.md (16.1), (16.2), (16.3): with the solved rho, UniP-p integrates a prediction that is
    a polynomial of degree p - 1 in lambda exactly (the order conditions), for both B(h).
    (UniP-2 uses rho = 1/2 and is exact only to O(h^3); covered by the local-order test.)"""
    coef = np.array([[0.3, -1.2], [0.7, 0.4], [-0.25, 0.9]])[:p]  # m(l) = sum c_k (l - l_s)^k
    lam_s, h = 0.2, 0.7
    m = lambda l: sum(c * (l - lam_s) ** k for k, c in enumerate(coef))  # noqa: E731
    lams = [lam_s - 0.6 * h, lam_s - 1.3 * h][: p - 1]
    x_s = np.array([0.8, -0.3])
    out = U.unip_update(x_s, m(lam_s), [m(l) for l in lams], lams, *_ab(lam_s), *_ab(lam_s + h), order=p,
                        solver_type=variant)
    assert_close(out, _exact_data_form(x_s, m, lam_s, lam_s + h), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("p", [2, 3])
def test_unic_exact_for_polynomial_predictions(variant, p):
    """MATH.md (16.4): UniC-p (p >= 2: all p conditions solved) integrates a polynomial
    prediction of degree p exactly, using the value at the step's end."""
    coef = np.array([[0.3, -1.2], [0.7, 0.4], [-0.25, 0.9], [0.1, 0.2]])[: p + 1]
    lam_s, h = -0.4, 0.5
    m = lambda l: sum(c * (l - lam_s) ** k for k, c in enumerate(coef))  # noqa: E731
    lams = [lam_s - 0.8 * h, lam_s - 1.5 * h][: p - 1]
    x_s = np.array([0.8, -0.3])
    out = U.unic_update(x_s, m(lam_s), [m(l) for l in lams], lams, m(lam_s + h), *_ab(lam_s), *_ab(lam_s + h),
                        order=p, solver_type=variant)
    assert_close(out, _exact_data_form(x_s, m, lam_s, lam_s + h), rtol=1e-11, atol=1e-12)


def test_unip_1_and_2_reduce_to_dpmpp():
    """MATH.md (16.3): UniP-1 is DPM-Solver++(1) (10.5); UniP-2 with bh2 (rho = 1/2) is
    DPM-Solver++(2M) (10.12) with the papers' coefficient, to round-off."""
    rng = np.random.default_rng(0)
    x, m0, m1 = rng.standard_normal((3, 4, 2))
    (a_s, s_s), (a_t, s_t), lam_p = _ab(0.1), _ab(0.6), -0.35
    assert_close(U.unip_update(x, m0, [], [], a_s, s_s, a_t, s_t, order=1), dpmpp_1_step(x, m0, a_s, s_s, a_t, s_t),
                 rtol=1e-13)
    assert_close(U.unip_update(x, m0, [m1], [lam_p], a_s, s_s, a_t, s_t, order=2, solver_type="bh2"),
                 dpmpp_2m_update(x, m0, m1, lam_p, a_s, s_s, a_t, s_t), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind,p,expected", [("p", 1, 2), ("p", 2, 3), ("p", 3, 4), ("c", 1, 3), ("c", 2, 4),
                                             ("c", 3, 5)])
def test_local_orders_on_exact_trajectory(kind, p, expected):
    """MATH.md (16.3), (16.4), (10.17): one step of UniP-p from the exact trajectory (exact
    earlier predictions at lambda - h, lambda - 2h) has error O(h^(p+1)); UniC-p (the exact
    prediction at the step's end) O(h^(p+2)).  Fitted slopes within 0.25."""
    xT = np.random.default_rng(0).standard_normal((16, 3))
    hs = [0.2, 0.1, 0.05, 0.025]
    errs = []
    for h in hs:
        lams = [-2 * h, -h, 0.0, h]
        P = [_ab(l) for l in lams]
        xs = [G.ode_transport(xT, *_ab(-3.0), *q) for q in P]
        m = [G.x0_mean(xs[j], *P[j]) for j in range(4)]
        if kind == "p":
            out = U.unip_update(xs[2], m[2], [m[1], m[0]], lams[1::-1], *P[2], *P[3], order=p)
        else:
            out = U.unic_update(xs[2], m[2], [m[1], m[0]], lams[1::-1], m[3], *P[2], *P[3], order=p)
        errs.append(float(np.sqrt(np.mean((out - xs[3]) ** 2))))
    assert abs(-fitted_order(hs, errs) - expected) < 0.25, errs


def _global(n, **opts):
    rng = np.random.default_rng(0)
    a, s = float(VP.alpha(np.array(0.35))), float(VP.sigma(np.array(0.35)))
    x = a * G.sample(32, rng) + s * rng.standard_normal((32, 3))
    ts = refdiff.time_grid(VP, n, "logSNR", t_start=0.35)
    out = U.unipc(G.as_model(VP, "epsilon"), x, VP, ts, lower_order_final=False, **opts)
    t1 = float(ts[-1])
    ref = G.ode_transport(x, a, s, float(VP.alpha(np.array(t1))), float(VP.sigma(np.array(t1))))
    return float(np.sqrt(np.mean((out - ref) ** 2)))


@pytest.mark.parametrize("opts,expected", [
    ({"order": 1, "corrector": False}, 1), ({"order": 2, "corrector": False}, 2),
    ({"order": 1}, 2), ({"order": 2}, 3), ({"order": 3}, 3),
    ({"order": 3, "disable_corrector": range(1, 10**6)}, 3), ({"order": 3, "corrector": False}, 2)])
def test_global_orders_where_x0_hat_moves(opts, expected):
    """MATH.md (16.3), (16.4), (10.17): fitted global order (16..128 steps, start t = 0.35 on
    N(mu, diag(0.3, 1, 3)), MATH.md section 16.6) within 0.25: UniP-p ~ p, UniPC-p ~ p + 1 for
    p = 1, 2; UniPC-3 and UniP-3 with the corrector on its warm-up ~ 3; plain UniP-3 ~ 2 (its
    first-order first step caps it, as MATH.md 16.1 explains)."""
    steps = [16, 32, 64, 128]
    errs = [_global(n, solver_type="bh2", **opts) for n in steps]
    assert abs(fitted_order(steps, errs) - expected) < 0.25, errs


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_final_step_to_sigma_zero_is_x0_hat(variant):
    """MATH.md (16.3), (10.6): the loop's step to sigma = 0 is first order and returns the
    model's x0_hat exactly, for bh1 too (where B(h) = -inf; diffusers 0.42.1 returns NaN)."""
    s = refdiff.make_schedule("linear", 1000)
    ts = refdiff.timesteps(1000, 10, "linspace")
    model = G.as_model(s, "epsilon")
    seen = []
    x = U.unipc(model, np.random.default_rng(1).standard_normal((4, 3)), s, ts, solver_type=variant, order=3,
                lower_order_final=False, callback=lambda i, t, x, x0: seen.append((x0, x)))
    assert np.all(np.isfinite(x))
    assert_close(x, seen[-1][0], rtol=0, atol=0)


def test_point_mass_returned_exactly():
    """MATH.md (16.3), (16.4): for data = a point mass p every prediction is x0_hat = p, all
    differences D vanish and every UniPC run ending at sigma = 0 returns p (to round-off)."""
    s = refdiff.make_schedule("linear", 1000)
    p = np.array([0.3, -2.0])

    def model(x, t):  # eps of the point mass: (x - alpha p) / sigma
        a, sg = refdiff.alpha_sigma(s, t, x)
        return (x - a * p) / sg

    for order in (1, 2, 3):
        out = refdiff.sample(model, np.random.default_rng(2).standard_normal((3, 2)), s, refdiff.timesteps(1000, 12),
                             "unipc", order=order, progress=False)
        assert_close(out, np.broadcast_to(p, out.shape), rtol=0, atol=1e-12)


def test_sigmas_grid_accepted():
    """MATH.md (16.3): UniPC on a Karras sigma grid (``sigmas=``) ending in 0 runs, and with a
    single step is DPM-Solver++(1) to sigma = 0: x0_hat of the first point."""
    s = refdiff.make_schedule("linear", 1000)
    sig = refdiff.karras_sigmas(8, float(s.sigmas[0]), float(s.sigmas[-1]), append_zero=True)
    model = G.as_model(s, "epsilon")
    x = np.random.default_rng(3).standard_normal((4, 3))
    out = refdiff.sample(model, x, s, refdiff.timesteps(1000, 8), "unipc", sigmas=sig, progress=False)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    one = refdiff.sample(model, x, s, refdiff.timesteps(1000, 8), "unipc", sigmas=[float(s.sigmas[-1]), 0.0],
                         progress=False)
    a = 1 / math.sqrt(1 + float(s.sigmas[-1]) ** 2)
    assert_close(one, G.x0_mean(x, a, float(s.sigmas[-1]) * a), rtol=1e-6)


def test_bad_input():
    """MATH.md (16.2): unknown order, solver_type, form and bad grids raise ValueError naming them."""
    s = refdiff.make_schedule("linear", 100)
    model = G.as_model(s, "epsilon")
    x = np.zeros((2, 3))
    ts = refdiff.timesteps(100, 5)
    with pytest.raises(ValueError, match="order"):
        U.unipc(model, x, s, ts, order=4)
    with pytest.raises(ValueError, match="solver_type"):
        U.unipc(model, x, s, ts, solver_type="bh3")
    with pytest.raises(ValueError, match="form"):
        U.unipc(model, x, s, ts, form="velocity")
    with pytest.raises(ValueError, match="decreasing"):
        U.unipc(model, x, s, np.array([5, 20, 40]))
    with pytest.raises(ValueError, match="range"):
        U.unipc(model, x, s, np.array([150, 20]))
    with pytest.raises(ValueError):
        U.unipc(model, x, s, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="sigmas"):
        U.unipc(model, x, s, None, sigmas=[1.0, -0.5])
    with pytest.raises(ValueError, match="sigma_t = 0"):
        U.unip_update(x, x, [x], [0.0], 0.6, 0.8, 1.0, 0.0, order=2)


def _unipc_from_exact_start(n, order, corrector):
    """UniPC-order on a lambda-uniform grid whose first ``order - 1`` points are taken from the
    exact trajectory (exact states and predictions: an exact warm-up), then the loop's steps
    (16.3) and (16.4) in the loop's order of operations."""
    rng = np.random.default_rng(0)
    lam = np.linspace(-0.5, 4.0, n + 1)
    P = [_ab(v) for v in lam]
    x_start = G.sample(16, rng) * P[0][0] + P[0][1] * rng.standard_normal((16, 3))
    xs_exact = [G.ode_transport(x_start, *P[0], *q) for q in P[: order]]
    ms = [G.x0_mean(xs_exact[j], *P[j]) for j in range(order - 1)]
    x, x_prev, k_prev = xs_exact[order - 1], None, 0
    for i in range(order - 1, n):
        m = G.x0_mean(x, *P[i])
        if corrector and x_prev is not None:
            x = U.unic_update(x_prev, ms[-1], ms[-2::-1], list(lam[i - 2::-1][: k_prev - 1]), m, *P[i - 1], *P[i],
                              order=k_prev)
        ms = (ms + [m])[-order:]
        x_prev, k_prev = x, order
        x = U.unip_update(x, m, ms[-2::-1], list(lam[i - 1::-1][: order - 1]), *P[i], *P[i + 1], order=order)
    return float(np.sqrt(np.mean((x - G.ode_transport(x_start, *P[0], *P[-1])) ** 2)))


@pytest.mark.parametrize("order,corrector,expected", [(3, False, 3), (3, True, 4), (2, True, 3)])
def test_paper_orders_with_exact_warm_up(order, corrector, expected):
    """MATH.md (16.3), (16.4): with an exact warm-up (the first order - 1 states and predictions
    from the exact trajectory, lambda from -0.5 to 4), UniP-p has global order p and UniPC-p
    order p + 1 (the paper's claim; fitted over 16..128 steps, within 0.3).  The loop's own
    warm-up (UniP-1 first) caps UniPC-3 at 3, see test_global_orders_where_x0_hat_moves."""
    steps = [16, 32, 64, 128]
    errs = [_unipc_from_exact_start(n, order, corrector) for n in steps]
    assert abs(fitted_order(steps, errs) - expected) < 0.3, errs
