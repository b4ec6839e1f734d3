"""DEIS and PNDM/PLMS: coefficients against quadrature, reductions to DDIM, exactness for
polynomial predictions, the step to sigma = 0, local and global orders, the PLMS order
finding (second order unless the grid is uniform in rho = sigma / alpha), and bad input.

References: scipy quadrature of (16.5) with a prediction given in closed form, refdiff's
DDIM step, polynomial integrals of the Lagrange basis, the oracle's exact ODE map (6.12).
diffusers agreement: tests/test_compare_diffusers_new.py.
"""

import math

import numpy as np
import pytest
from scipy import integrate

import refdiff
from refdiff.samplers import deis as DE, pndm as PN
from refdiff.samplers.dpm_solver import dpm_solver_1_step
from tests._support import assert_close, fitted_order

G = refdiff.GaussianData(np.array([0.5, -1.0, 2.0]), np.diag([0.3, 1.0, 3.0]))
VP = refdiff.LinearVP(0.1, 20.0, t_min=1e-3)


def _ab(lam):
    return 1.0 / math.sqrt(1.0 + math.exp(-2 * lam)), 1.0 / math.sqrt(1.0 + math.exp(2 * lam))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_deis_coefficients_are_lagrange_integrals(k):
    """MATH.md (16.6): C_j = int_{rho_s}^{rho_t} l_j(log rho) drho, against scipy quadrature."""
    rhos, rho_t = [0.8, 1.3, 2.1][:k], 0.45
    us = np.log(rhos)
    C = DE.deis_coefficients(rhos, rho_t)
    for j in range(k):
        lj = lambda r: np.prod([(math.log(r) - us[m]) / (us[j] - us[m]) for m in range(k) if m != j])  # noqa: E731
        assert C[j] == pytest.approx(integrate.quad(lj, rhos[0], rho_t, epsabs=1e-14)[0], rel=1e-11, abs=1e-13)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_deis_exact_for_polynomial_eps_in_log_rho(k):
    """MATH.md (16.5), (16.6): DEIS-k integrates eps(rho) = polynomial of degree k - 1 in log rho
    exactly: x_t / alpha_t = x_s / alpha_s + int eps drho (quadrature), also to sigma_t = 0."""
    c = np.array([[0.4, -0.2], [1.1, 0.5], [-0.3, 0.8]])[:k]
    eps = lambda r: sum(ck * math.log(r) ** j for j, ck in enumerate(c))  # noqa: E731
    lams = [0.3, -0.2, -0.6][:k]
    pts = [_ab(l) for l in lams]
    x_s = np.array([0.7, -1.1])
    for a_t, s_t in (_ab(0.9), (1.0, 0.0)):
        out = DE.deis_update(x_s, [eps(s / a) for a, s in pts], pts, a_t, s_t)
        rho_s, rho_t = pts[0][1] / pts[0][0], s_t / a_t
        lo = rho_t if rho_t > 0 else 0.0
        integ = np.array([integrate.quad(lambda r: eps(r)[i], rho_s, lo, epsabs=1e-14, limit=200)[0] for i in range(2)])
        assert_close(out, a_t * (x_s / pts[0][0] + integ), rtol=1e-10, atol=1e-12)


def test_deis_1_and_pndm_transfer_are_ddim():
    """MATH.md (16.6), (16.7): DEIS-1 and the PNDM transfer phi are the DDIM step (DPM-Solver-1,
    (10.4)), including the step to sigma = 0."""
    rng = np.random.default_rng(0)
    x, e = rng.standard_normal((2, 5, 3))
    for (a_s, s_s), (a_t, s_t) in ((_ab(-1.0), _ab(0.4)), (_ab(2.0), (1.0, 0.0))):
        ref = dpm_solver_1_step(x, e, a_s, s_s, a_t, s_t)
        assert_close(DE.deis_update(x, [e], [(a_s, s_s)], a_t, s_t), ref, rtol=1e-12, atol=1e-13)
        assert_close(PN.pndm_transfer(x, e, a_s, s_s, a_t, s_t), ref, rtol=1e-12, atol=1e-13)


def test_plms_weights_are_adams_bashforth():
    """MATH.md (16.8): the weights are the integrals over [0, 1] of the Lagrange basis through
    the uniform nodes 0, -1, ..., -(k-1) (computed here with numpy polynomials)."""
    P = np.polynomial.Polynomial
    for k in range(1, 5):
        nodes = -np.arange(k, dtype=float)
        for j in range(k):
            lj = P([1.0])
            for m in range(k):
                if m != j:
                    lj = lj * P([-nodes[m], 1.0]) / (nodes[j] - nodes[m])
            F = lj.integ()
            assert PN.PLMS_WEIGHTS[k - 1][j] == pytest.approx(F(1.0) - F(0.0), rel=1e-14)
        e = [np.full(2, float(v)) for v in (4.0, 3.0, 2.0, 1.0)[:k]]  # linear in the index: extrapolates exactly
        assert_close(PN.plms_eps(e), np.full(2, 4.5 if k > 1 else 4.0), rtol=1e-14)


def test_prk_exact_for_constant_eps():
    """MATH.md (16.9): with a constant eps every stage equals it and PRK is the transfer (16.7)."""
    e = np.array([[0.3, -0.7]])
    x = np.array([[1.0, 2.0]])
    ps, pm, pt = (5, *_ab(-1.0)), (3, *_ab(-0.5)), (1, *_ab(0.0))
    out, e1 = PN.prk_step(lambda y, p: e, x, ps, pm, pt)
    assert_close(out, PN.pndm_transfer(x, e, *ps[1:], *pt[1:]), rtol=1e-14)


def _global(method, n, grid="logSNR", **opts):
    rng = np.random.default_rng(0)
    a, s = float(VP.alpha(np.array(0.35))), float(VP.sigma(np.array(0.35)))
    x = a * G.sample(32, rng) + s * rng.standard_normal((32, 3))
    if grid == "rho":  # uniform in rho = sigma / alpha
        r0, r1 = s / a, float(VP.sigma(np.array(1e-3)) / VP.alpha(np.array(1e-3)))
        ts = np.asarray(VP.t_from_lambda(-np.log(np.linspace(r0, r1, n + 1))), dtype=np.float64)
        ts[0], ts[-1] = 0.35, 1e-3
    else:
        ts = refdiff.time_grid(VP, n, "logSNR", t_start=0.35)
    out = method(G.as_model(VP, "epsilon"), x, VP, ts, **opts)
    t1 = float(ts[-1])
    ref = G.ode_transport(x, a, s, float(VP.alpha(np.array(t1))), float(VP.sigma(np.array(t1))))
    return float(np.sqrt(np.mean((out - ref) ** 2)))


@pytest.mark.parametrize("method,opts,grid,expected", [
    (DE.deis, {"order": 1}, "logSNR", 1), (DE.deis, {"order": 2}, "logSNR", 2), (DE.deis, {"order": 3}, "logSNR", 2),
    (PN.pndm, {"skip_prk_steps": True}, "logSNR", 2), (PN.pndm, {"skip_prk_steps": False}, "logSNR", 2),
    (PN.pndm, {"skip_prk_steps": True}, "rho", 3.7), (PN.pndm, {"skip_prk_steps": False}, "rho", 3.7)])
def test_global_orders_where_x0_hat_moves(method, opts, grid, expected):
    """MATH.md (16.6), (16.8), (16.9), (10.17): fitted global orders (16..128 steps, the setup of
    MATH.md section 16.6) within 0.3: DEIS-1, -2 ~ 1, 2; DEIS-3 ~ 2 (first-order first step);
    PLMS and PNDM ~ 2 on a lambda-uniform grid and ~ 3.7 on a grid uniform in rho (the
    Adams-Bashforth weights are exact only when rho is linear in the step index)."""
    steps = [16, 32, 64, 128]
    errs = [_global(method, n, grid, **opts) for n in steps]
    assert abs(fitted_order(steps, errs) - expected) < 0.3, errs


@pytest.mark.parametrize("k", [2, 3])
def test_deis_local_order(k):
    """MATH.md (16.6), (10.17): one DEIS-k step from the exact trajectory with exact earlier
    eps has error O(h^(k+1)) (fitted slope within 0.25)."""
    xT = np.random.default_rng(0).standard_normal((16, 3))
    hs = [0.2, 0.1, 0.05, 0.025]
    errs = []
    for h in hs:
        P = [_ab(l) for l in (-2 * h, -h, 0.0, h)]
        xs = [G.ode_transport(xT, *_ab(-3.0), *q) for q in P]
        eps = [G.eps(xs[j], *P[j]) for j in range(3)]
        out = DE.deis_update(xs[2], [eps[2], eps[1], eps[0]][:k], [P[2], P[1], P[0]][:k], *P[3])
        errs.append(float(np.sqrt(np.mean((out - xs[3]) ** 2))))
    assert abs(-fitted_order(hs, errs) - (k + 1)) < 0.25, errs


@pytest.mark.parametrize("method,opts", [("deis", {"order": 3}), ("pndm", {}), ("pndm", {"skip_prk_steps": True})])
def test_point_mass_returned_exactly(method, opts):
    """MATH.md (16.6), (16.7): with data a point mass p, eps_hat = (x - alpha p)/sigma is the
    exact eps of every trajectory, constant along it, so DEIS and PNDM (exact for constant
    eps) return p at sigma = 0."""
    s = refdiff.make_schedule("linear", 1000)
    p = np.array([0.3, -2.0])

    def model(x, t):
        a, sg = refdiff.alpha_sigma(s, t, x)
        return (x - a * p) / sg

    out = refdiff.sample(model, np.random.default_rng(2).standard_normal((3, 2)), s, refdiff.timesteps(1000, 20),
                         method, progress=False, **opts)
    assert_close(out, np.broadcast_to(p, out.shape), rtol=0, atol=1e-11)


def test_bad_input():
    """MATH.md (16.6): DEIS order out of range, PNDM switch of the wrong type and bad grids."""
    s = refdiff.make_schedule("linear", 100)
    model = G.as_model(s, "epsilon")
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="order"):
        DE.deis(model, x, s, refdiff.timesteps(100, 5), order=4)
    with pytest.raises(TypeError, match="skip_prk_steps"):
        PN.pndm(model, x, s, refdiff.timesteps(100, 5), skip_prk_steps="yes")
    for f in (DE.deis, PN.pndm):
        with pytest.raises(ValueError, match="decreasing"):
            f(model, x, s, np.array([5, 20, 40]))
        with pytest.raises(ValueError, match="range"):
            f(model, x, s, np.array([150, 20]))
    with pytest.raises(ValueError, match="distinct"):
        DE.deis_coefficients([0.5, 0.5], 0.1)
