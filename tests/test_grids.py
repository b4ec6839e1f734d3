"""Noise-level grids and the libraries' grids (refdiff.library_grid), MATH.md (2.17), (2.18),
checked against hand-worked values and the defining formulas."""

import math

import numpy as np
import pytest

import refdiff

S = refdiff.make_schedule("linear", 10)


def _ve(p):
    return 0.0 if p.sigma == 0 else p.sigma / p.alpha


def test_exponential_and_polyexponential_sigmas():
    """MATH.md (2.18): exponential levels have constant ratio (sigma_max/sigma_min)^(1/(n-1));
    polyexponential with rho = 1 equals them, with rho = 2 its log-levels follow (1 - i/(n-1))^2."""
    e = refdiff.exponential_sigmas(5, 0.1, 16.0, append_zero=True)
    assert e[-1] == 0.0 and e[0] == 16.0 and e[-2] == 0.1
    np.testing.assert_allclose(e[:-2] / e[1:-1], 160.0 ** 0.25, rtol=1e-14)
    np.testing.assert_allclose(refdiff.polyexponential_sigmas(5, 0.1, 16.0), e[:-1], rtol=1e-14)
    p = refdiff.polyexponential_sigmas(5, 0.1, 16.0, rho=2.0)
    np.testing.assert_allclose(np.log(p / 0.1) / math.log(160.0), [1.0, 0.5625, 0.25, 0.0625, 0.0], atol=1e-14)
    with pytest.raises(ValueError, match="sigma_min"):
        refdiff.exponential_sigmas(5, 2.0, 1.0)


def test_library_grid_hand_worked():
    """MATH.md (2.17) at T = 10, n = 3: Euler "linspace" times 9, 4.5, 0 with the level at 4.5
    the mean of the table levels at 4 and 5 (linear in t); DPMSolver "linspace" round(9 k / 3)
    = 9, 6, 3 (0 dropped) and "leading" k floor(10/4) = 6, 4, 2; every grid ends at 0 ("zero")
    or at the table level of index 0 ("sigma_min")."""
    tab = np.sqrt((1 - S.alpha_bars) / S.alpha_bars)
    g = refdiff.library_grid(S, 3, "euler", timestep_spacing="linspace")
    assert [p.t for p in g[:-1]] == [9.0, 4.5, 0.0] and g[-1].sigma == 0.0
    assert math.isclose(_ve(g[1]), 0.5 * (tab[4] + tab[5]), rel_tol=1e-14)
    g = refdiff.library_grid(S, 3, "dpmsolver_multistep", timestep_spacing="linspace")
    assert [p.t for p in g[:-1]] == [9, 6, 3]
    g = refdiff.library_grid(S, 3, "dpmsolver_multistep", timestep_spacing="leading", final_sigmas_type="sigma_min")
    assert [p.t for p in g[:-1]] == [6, 4, 2] and math.isclose(_ve(g[-1]), tab[0], rel_tol=1e-14)
    g = refdiff.library_grid(S, 3, "euler", timestep_spacing="trailing")
    assert [p.t for p in g[:-1]] == list(refdiff.timesteps(10, 3, "trailing"))


def test_library_karras_times():
    """MATH.md (2.17), (9.9): Karras grids pair level sigma_k with the time linear in log sigma
    (Euler: fractional, reproducing log sigma_k exactly by linear interpolation of the log
    table; DPMSolver: the same rounded to an integer)."""
    s = refdiff.make_schedule("linear", 1000)
    logtab = np.log(np.sqrt((1 - s.alpha_bars) / s.alpha_bars))
    for p in refdiff.library_grid(s, 12, "euler", use_karras_sigmas=True)[:-1]:
        assert math.isclose(np.interp(p.t, np.arange(1000), logtab), math.log(_ve(p)), rel_tol=1e-12)
        assert math.isclose(p.alpha**2 + p.sigma**2, 1.0, rel_tol=1e-14)
    ge = refdiff.library_grid(s, 12, "euler", use_karras_sigmas=True, timestep_spacing="leading")
    gd = refdiff.library_grid(s, 12, "dpmsolver_multistep", use_karras_sigmas=True)
    assert all(isinstance(p.t, int) for p in gd[:-1])
    for p in gd[:-1]:
        tau = np.interp(math.log(_ve(p)), logtab, np.arange(1000))
        assert p.t == int(np.round(tau))
    assert _ve(ge[0]) < _ve(gd[0])  # Euler's Karras range is the spaced grid's, DPMSolver's the whole table


def test_singlestep_orders_and_release_grid():
    """MATH.md (10.19): diffusers' singlestep orders come in blocks 1, 2(, 3) with a first-order
    last step on a grid ending at 0; the DPM-Solver release's time_uniform outer grid takes every
    order-th point of the uniform grid (orders 3, 3, 2, 1 for 9 evaluations)."""
    assert refdiff.singlestep_orders(6, 3) == [1, 2, 3, 1, 2, 1]
    assert refdiff.singlestep_orders(5, 2, lower_order_final=True) == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="whole number"):
        refdiff.singlestep_orders(7, 3)
    vp = refdiff.LinearVP()
    times, orders = refdiff.dpm_solver_release_singlestep_grid(vp, 9, 3)
    assert orders == [3, 3, 2, 1]
    np.testing.assert_allclose(times, np.linspace(1.0, 1e-3, 10)[[0, 3, 6, 8, 9]], rtol=1e-15)
    t2, o2 = refdiff.dpm_solver_release_singlestep_grid(vp, 9, 3, "logSNR")
    assert o2 == orders and len(t2) == 5
