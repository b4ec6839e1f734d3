"""Rectified-flow samplers: Euler against DDIM on the affine path (written here, independently
of the flow code), both time conventions, the VP-model conversion against DDIM and
DPM-Solver-1, midpoint/RK4 exactness on polynomial velocities, and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff
from refdiff.samplers import flow as F
from refdiff.samplers.ddim import ddim_loop
from refdiff.samplers.dpm_solver import dpm_solver_1
from tests._support import assert_close, asx

GAUSS = refdiff.GaussianData([0.5, -1.0], [[0.8, 0.3], [0.3, 0.5]])
MIX = refdiff.GaussianMixture([0.3, 0.7], [[2.0, 0.5], [-1.0, -1.0]], [[0.3, 0.6], [0.5, 0.2]])


def _ddim_affine(x, eps_hat, x0_hat, alpha_next, sigma_next):
    """DDIM (eta = 0) on a general affine path, written from its definition: keep the
    predicted (x0, eps) and move to the next (alpha, sigma)."""
    return alpha_next * x0_hat + sigma_next * eps_hat


@given(st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_flow_euler_equals_ddim_on_affine_path(xp, t, t2, seed):
    """MATH.md (11.7), (11.8): for t = 0 data (alpha = 1 - t, sigma = t) one rectified-flow Euler
    step with the exact velocity equals DDIM eta = 0 with the oracle's (eps_hat, x0_hat); for
    t = 0 noise (alpha = t, sigma = 1 - t, the issue's form) the same holds with the model's
    own time and velocity x0 - eps."""
    t, t2 = max(t, t2), min(t, t2)
    if t - t2 < 1e-3:
        return
    x = asx(xp, np.random.default_rng(seed).standard_normal((3, 2)))
    vel = lambda y, tt: MIX.velocity(y, 1.0 - tt, tt, -1.0, 1.0)  # noqa: E731
    got = F.flow_euler(vel, x, None, [t, t2])
    ref = _ddim_affine(x, MIX.eps(x, 1 - t, t), MIX.x0_mean(x, 1 - t, t), 1 - t2, t2)
    assert_close(got, ref, xp=xp, rtol=1e-10, atol=1e-12)
    tau, tau2 = 1 - t, 1 - t2  # t0_noise times: increasing towards data
    vel_n = lambda y, tt: MIX.velocity(y, tt, 1.0 - tt, 1.0, -1.0)  # noqa: E731
    got = F.flow_euler(vel_n, x, None, [tau, tau2], time_convention="t0_noise")
    ref = _ddim_affine(x, MIX.eps(x, tau, 1 - tau), MIX.x0_mean(x, tau, 1 - tau), tau2, 1 - tau2)
    assert_close(got, ref, xp=xp, rtol=1e-10, atol=1e-12)


def test_converted_vp_model_euler_equals_ddim_and_dpm_solver_1(xp):
    """MATH.md (11.10): an eps-prediction VP model converted to a rectified-flow velocity (equal
    SNR, x_VP = (alpha + sigma) y) and integrated with flow Euler on a Schedule grid equals
    S1's DDIM eta = 0 and DPM-Solver-1 (DDIM is Euler in every such coordinate system)."""
    sched = refdiff.make_schedule("cosine", 500)
    model = MIX.as_model(sched, "epsilon")
    x = asx(xp, np.random.default_rng(4).standard_normal((5, 2)))
    ts = refdiff.timesteps(500, 10, "linspace")
    ref = ddim_loop(model, x, sched, ts, eta=0.0)
    assert_close(F.flow_euler(model, x, sched, ts, prediction_type="epsilon"), ref, xp=xp, rtol=1e-8, atol=1e-9)
    assert_close(dpm_solver_1(model, x, sched, ts), ref, xp=xp, rtol=1e-8, atol=1e-9)


def test_velocity_helpers_round_trip():
    """MATH.md (11.7), (11.10): eps_x0_from_flow_velocity inverts u = eps - x0 on the path
    (1 - t) x0 + t eps (and x0 - eps for t0_noise); velocity_from_vp_model of an exact VP
    oracle equals the oracle's own rectified-flow velocity at interior times."""
    rng = np.random.default_rng(5)
    x0, eps, t = rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), 0.37
    e, z = F.eps_x0_from_flow_velocity((1 - t) * x0 + t * eps, eps - x0, t)
    assert_close(e, eps, rtol=1e-12) and assert_close(z, x0, rtol=1e-12)
    e, z = F.eps_x0_from_flow_velocity(t * x0 + (1 - t) * eps, x0 - eps, t, "t0_noise")
    assert_close(e, eps, rtol=1e-12) and assert_close(z, x0, rtol=1e-12)
    vp = refdiff.LinearVP()
    v = F.velocity_from_vp_model(MIX.as_model(vp, "v_prediction"), vp, "v_prediction")
    for s in (0.1, 0.5, 0.9):
        assert_close(v(eps, s), MIX.velocity(eps, 1 - s, s, -1.0, 1.0), rtol=1e-9, atol=1e-10)


def test_midpoint_and_rk4_exact_on_polynomial_velocities():
    """MATH.md (11.9), (11.6): the midpoint rule integrates a velocity linear in t exactly and
    RK4 a cubic in t (x(0) - x(1) = -int_0^1 u dt): u = 1 + 2t -> -(1 + 1) = -2;
    u = 4 t^3 -> -1."""
    x = np.zeros((1, 1))
    got = F.flow_midpoint(lambda y, t: (1 + 2 * t)[:, None] + 0 * y, x, None, [1.0, 0.0])
    assert_close(got, -2.0 * np.ones((1, 1)), rtol=1e-15)
    got = F.flow_rk4(lambda y, t: (4 * t**3)[:, None] + 0 * y, x, None, [1.0, 0.0])
    assert_close(got, -1.0 * np.ones((1, 1)), rtol=1e-15)


def test_flow_rk4_reaches_exact_gaussian_endpoint():
    """MATH.md (11.7), (6.12): flow RK4 from pure noise (t = 1) to data (t = 0) with 40 steps agrees
    with the exact Gaussian ODE map to 1e-8."""
    x = np.random.default_rng(6).standard_normal((6, 2))
    vel = lambda y, t: GAUSS.velocity(y, 1.0 - t, t, -1.0, 1.0)  # noqa: E731
    out = F.flow_rk4(vel, x, None, np.linspace(1, 0, 41))
    assert_close(out, GAUSS.ode_transport(x, 0.0, 1.0, 1.0, 0.0), atol=1e-8)


def test_bad_input():
    """Clear errors for the flow samplers."""
    vel = lambda y, t: y  # noqa: E731
    x = np.zeros((2, 2))
    with pytest.raises(ValueError, match="time_convention 'noise_first'"):
        F.flow_euler(vel, x, None, [1.0, 0.0], time_convention="noise_first")
    with pytest.raises(ValueError, match="strictly decreasing"):
        F.flow_euler(vel, x, None, [0.0, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        F.flow_euler(vel, x, None, [1.0, 0.0], time_convention="t0_noise")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        F.flow_rk4(vel, x, None, [1.5, 0.0])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        F.flow_midpoint(vel, x, None, [1.0])
    with pytest.raises(TypeError, match="schedule=None"):
        F.flow_euler(vel, x, refdiff.LinearVP(), [1.0, 0.0])
    with pytest.raises(ValueError, match="velocity models only"):
        F.flow_euler(MIX.as_model(refdiff.LinearVP()), x, refdiff.LinearVP(), [1.0, 0.5], prediction_type="epsilon",
                     time_convention="t0_noise")
    with pytest.raises(ValueError, match="model returned shape"):
        F.flow_euler(lambda y, t: y[:, :1], x, None, [1.0, 0.0])
