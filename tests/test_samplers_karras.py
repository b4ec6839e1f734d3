"""Sigma-space samplers: exact equivalences with DDIM/DDPM (and DPM-Solver-1), orders of
convergence on the Gaussian-data oracle, exact LMS coefficients, grids and switches."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

import refdiff
from refdiff.samplers import karras as K
from tests._support import assert_close, asx, exact_ode, fitted_order, schedule_and_t

GAUSS = refdiff.GaussianData([1.0, -0.5], [[1.0, 0.6], [0.6, 0.8]])
VP = refdiff.LinearVP()


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# ------------------------------------------------------------------------- one-step equivalences
def _ddim(s, eps, t, tp, x):
    return refdiff.ddim_step(s, eps, t, tp, x)


def _euler(s, eps, t, tp, x):
    """Euler in sigma space: x / alpha_t -> x_s / alpha_s, back to VP coordinates."""
    a, a_p = math.sqrt(s.alpha_bars[t]), (1.0 if tp < 0 else math.sqrt(s.alpha_bars[tp]))
    sig, sig_p = s.sigmas[t], (0.0 if tp < 0 else s.sigmas[tp])
    x0 = refdiff.x0_from_eps(x, eps, a, math.sqrt(1 - a * a))
    return a_p * K.euler_step(x / a, float(sig), float(sig_p), x0)


def _vp_pairs(s, t, tp):
    ab_p = 1.0 if tp < 0 else s.alpha_bars[tp]
    return math.sqrt(s.alpha_bars[t]), math.sqrt(1 - s.alpha_bars[t]), math.sqrt(ab_p), math.sqrt(1 - ab_p)


def _dpm_solver_1(s, eps, t, tp, x):
    a, sg, a_p, s_p = _vp_pairs(s, t, tp)
    return refdiff.dpm_solver_1_step(x, eps, a, sg, a_p, s_p)


def _dpmpp_1(s, eps, t, tp, x):
    a, sg, a_p, s_p = _vp_pairs(s, t, tp)
    return refdiff.dpmpp_1_step(x, refdiff.x0_from_eps(x, eps, a, sg), a, sg, a_p, s_p)


# the first-order deterministic updates that must coincide; extend with new ones here
FIRST_ORDER_STEPS = {"ddim": _ddim, "euler": _euler, "dpm_solver_1": _dpm_solver_1, "dpmpp_1": _dpmpp_1}


@given(schedule_and_t(min_T=3, max_T=200), st.data(), st.integers(0, 2**31 - 1))
@settings(max_examples=30)
def test_first_order_steps_coincide(st_t, data, seed):
    """MATH.md (8.7), (9.3): DDIM (eta = 0), Euler in sigma space, DPM-Solver-1 and
    DPM-Solver++(1) are the same map x_t -> x_s for the same eps_hat (all integrate the ODE
    exactly when eps_hat is constant).  t_prev from -1 (data end) to t - 1.  float64: 1e-9."""
    s, t = st_t
    t = max(t, 1)
    tp = data.draw(st.integers(0, t - 1))  # the DPM solvers need sigma_s > 0
    x, eps = _rand((3, 2), seed), _rand((3, 2), seed + 1)
    ref = FIRST_ORDER_STEPS["ddim"](s, eps, t, tp, x)
    for name, f in FIRST_ORDER_STEPS.items():
        np.testing.assert_allclose(f(s, eps, t, tp, x), ref, rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(_euler(s, eps, t, -1, x), _ddim(s, eps, t, -1, x), rtol=1e-9, atol=1e-9)


def test_euler_loop_equals_ddim_loop(xp):
    """MATH.md (9.1), (9.2) and (9.3): the Euler loop (sigma space, default grid) and the DDIM loop
    (eta = 0) give the same samples on a strided grid; float64 rounding: 1e-11."""
    s = refdiff.make_schedule("scaled_linear", 200)
    ts = refdiff.timesteps(200, 13, "trailing")
    x = asx(xp, _rand((4, 2), 0))
    m = GAUSS.as_model(s, "v_prediction")
    a = refdiff.sample(m, x, s, ts, "euler", prediction_type="v_prediction", progress=False)
    b = refdiff.sample(m, x, s, ts, "ddim", prediction_type="v_prediction", progress=False)
    assert_close(a, b, xp=xp, rtol=1e-10, atol=1e-11)


def test_ancestral_split_is_brownian_bridge():
    """MATH.md (9.4): for eta = 1, sigma_down = sigma_next^2 / sigma and
    sigma_up^2 = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2, the mean and variance of the
    Brownian bridge x_s | x_t, x_0 of the VE process; eta = 0 is Euler (sigma_up = 0); other eta
    scale sigma_up linearly (eta = 0.5: half the bridge std), capped at sigma_next."""
    for sg, sn in ((10.0, 3.0), (1.0, 0.5), (0.2, 0.01)):
        down, up = K.ancestral_sigmas(sg, sn, 1.0)
        assert math.isclose(down, sn * sn / sg, rel_tol=1e-12)
        assert math.isclose(up**2 + down**2, sn * sn, rel_tol=1e-12)
        assert K.ancestral_sigmas(sg, sn, 0.0) == (sn, 0.0)
        # eta scales the bridge std linearly (k-diffusion's get_ancestral_step), capped at sigma_next
        down, up = K.ancestral_sigmas(sg, sn, 0.5)
        assert math.isclose(up, 0.5 * sn * math.sqrt(sg * sg - sn * sn) / sg, rel_tol=1e-12)
        assert math.isclose(down, math.sqrt(sn * sn - up * up), rel_tol=1e-12)
    assert K.ancestral_sigmas(1.0, 0.0, 1.0) == (0.0, 0.0)
    down, up = K.ancestral_sigmas(1.0, 0.5, 10.0)  # 10 * 0.5 * sqrt(0.75) > 0.5: capped
    assert up == 0.5 and down == 0.0


@given(schedule_and_t(min_T=2, max_T=200), st.integers(0, 2**31 - 1))
@settings(max_examples=25)
def test_euler_ancestral_step_equals_ddpm_step(xp, st_t, seed):
    """MATH.md (9.4), (8.1), (8.2) and (8.3):
    Euler ancestral (eta = 1) from sigma_t to sigma_{t-1} in
    scaled coordinates x / alpha is the DDPM fixed-small step, with the same noise.  1e-9."""
    s, t = st_t
    t = max(t, 1)
    x, eps, z = (asx(xp, _rand((3, 2), seed + k)) for k in range(3))
    a, a_p = math.sqrt(s.alpha_bars[t]), math.sqrt(s.alpha_bars[t - 1])
    x0 = refdiff.x0_from_eps(x, eps, a, math.sqrt(1 - a * a))
    got = a_p * K.euler_ancestral_step(x / a, float(s.sigmas[t]), float(s.sigmas[t - 1]), x0, z, eta=1.0)
    assert_close(got, refdiff.ddpm_step(s, eps, t, x, z), xp=xp, rtol=1e-9, atol=1e-9)


def test_euler_ancestral_loop_equals_ddpm_loop():
    """MATH.md (9.4), (8.5): with eta = 1 the Euler-ancestral loop and DDPM (respaced,
    fixed-small) give identical samples from the same rng (both draw after each model
    call, except on the final step).  1e-11."""
    s = refdiff.make_schedule("linear", 100)
    m = GAUSS.as_model(s)
    x = _rand((5, 2), 0)
    for n in (100, 9):
        ts = refdiff.timesteps(100, n, "linspace")
        a = refdiff.sample(m, x, s, ts, "euler_ancestral", rng=np.random.default_rng(3), progress=False)
        b = refdiff.sample(m, x, s, ts, "ddpm", rng=np.random.default_rng(3), progress=False)
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_edm_without_churn_is_heun_and_churn_variance():
    """MATH.md (9.7): with S_churn = 0 the EDM sampler is Heun (9.5) exactly; the churn adds
    noise of variance sigma_hat^2 - sigma^2 with sigma_hat = (1 + gamma) sigma, gamma =
    min(S_churn / n, sqrt 2 - 1) inside [S_tmin, S_tmax] and 0 outside."""
    s = refdiff.make_schedule("linear", 100)
    m, x = GAUSS.as_model(s), _rand((4, 2), 0)
    ts = refdiff.timesteps(100, 10)
    a = refdiff.sample(m, x, s, ts, "edm", progress=False)
    np.testing.assert_array_equal(a, refdiff.sample(m, x, s, ts, "heun", progress=False))
    assert K.edm_gamma(2.0, 10, s_churn=1.0) == pytest.approx(0.1)
    assert K.edm_gamma(2.0, 10, s_churn=80.0) == pytest.approx(math.sqrt(2) - 1)
    assert K.edm_gamma(2.0, 10, s_churn=1.0, s_tmax=1.0) == 0.0
    xh, sh = K.edm_churn(np.zeros((1, 2)), 2.0, 0.25, np.ones((1, 2)))
    assert sh == 2.5
    np.testing.assert_allclose(xh, math.sqrt(2.5**2 - 2.0**2) * np.ones((1, 2)), rtol=1e-14)


# ------------------------------------------------------------------------- LMS coefficients
def test_lms_coefficients_exact():
    """MATH.md (9.8): the analytic integrals of the Lagrange basis equal adaptive quadrature
    (scipy.integrate.quad, 1e-12), sum to sigma_{i+1} - sigma_i (the basis sums to 1), and
    integrate every polynomial of degree < k exactly through its values at the nodes."""
    sig = refdiff.karras_sigmas(12, 0.02, 80.0, append_zero=True)
    for order in (1, 2, 3, 4):
        for i in (0, 1, 5, 11):
            c = K.lms_coefficients(sig, i, order)
            k = min(order, i + 1)
            assert len(c) == k
            nodes = sig[i - np.arange(k)]
            for j in range(k):
                fn = lambda u: np.prod([(u - nodes[m]) / (nodes[j] - nodes[m]) for m in range(k) if m != j])  # noqa: E731
                q = integrate.quad(fn, sig[i], sig[i + 1], epsabs=0, epsrel=1e-13)[0]
                assert math.isclose(c[j], q, rel_tol=1e-10, abs_tol=1e-10)
            assert math.isclose(sum(c), sig[i + 1] - sig[i], rel_tol=1e-10)
            poly = np.polynomial.Polynomial(np.arange(1.0, k + 1.0))  # degree k - 1
            exact = poly.integ()(sig[i + 1]) - poly.integ()(sig[i])
            assert math.isclose(sum(cj * poly(nj) for cj, nj in zip(c, nodes)), exact, rel_tol=1e-9)


def test_lms_order1_is_euler():
    """MATH.md (9.8): LMS of order 1 has the single coefficient sigma_{i+1} - sigma_i: Euler."""
    s = refdiff.make_schedule("linear", 100)
    m, x, ts = GAUSS.as_model(s), _rand((3, 2), 0), refdiff.timesteps(100, 8)
    np.testing.assert_allclose(refdiff.sample(m, x, s, ts, "lms", order=1, progress=False),
                               refdiff.sample(m, x, s, ts, "euler", progress=False), rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------- orders
def _exact(x, t_from, t_to):
    return exact_ode(GAUSS, VP, x, t_from, t_to)


@pytest.mark.parametrize("method, opts, order", [
    ("euler", {}, 1), ("heun", {}, 2), ("dpm_2", {}, 2), ("lms", {"order": 2}, 2),
])
def test_global_order(method, opts, order):
    """MATH.md (9.3), (9.5), (9.6), (9.8): global error at the end of a time-uniform linear-VP
    grid against the exact ODE map of Gaussian data (6.12), n = 16..128 steps; fitted slopes
    measured 0.98 (Euler), 2.03 (Heun), 1.93 (DPM-2), 1.91 (LMS-2: its first step is Euler);
    accepted within 0.15 of the order."""
    x = _rand((8, 2), 0)
    ns, errs = [16, 32, 64, 128], []
    for n in ns:
        ts = refdiff.time_grid(VP, n, "time_uniform")
        out = refdiff.sample(GAUSS.as_model(VP), x, VP, ts, method, progress=False, **opts)
        errs.append(np.abs(out - _exact(x, ts[0], ts[-1])).max())
    assert abs(fitted_order(ns, errs) - order) < 0.15, errs


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("dpm_2", 2)])
def test_local_order(method, order):
    """MATH.md (9.3), (9.5), (9.6): one step of size h from t = 0.5 has local error O(h^(k+1))
    against the exact ODE map (6.12); accepted within 0.2 of k + 1."""
    x = _rand((8, 2), 1)
    hs, errs = [0.08, 0.04, 0.02, 0.01], []
    for h in hs:
        ts = np.array([0.5, 0.5 - h])
        out = refdiff.sample(GAUSS.as_model(VP), x, VP, ts, method, progress=False)
        errs.append(np.abs(out - _exact(x, 0.5, 0.5 - h)).max())
    assert abs(-fitted_order(hs, errs) - (order + 1)) < 0.2, errs


@pytest.mark.parametrize("order", [2, 3, 4])
def test_lms_local_order_with_exact_history(order):
    """MATH.md (9.8): one LMS step of order k from exact history (the exact ODE solution
    (6.12) and its slopes (9.2) at the previous k noise levels, equal spacing h in sigma) has
    local error O(h^(k+1)).  Accepted within 0.3 of k + 1."""
    x1 = _rand((6, 2), 2)  # VE state at sigma = 1

    def state(sig):
        return GAUSS.ode_transport(x1, 1.0, 1.0, 1.0, sig)  # VE path alpha = 1

    hs, errs = [0.1, 0.05, 0.025, 0.0125], []
    for h in hs:
        sig = 1.0 + h * np.arange(order - 1, -2, -1)  # sigma_{i-k+1} > ... > sigma_i = 1 > sigma_{i+1}
        i = order - 1
        ds = [K.to_d(state(sg), sg, GAUSS.x0_mean(state(sg), 1.0, sg)) for sg in sig[: i + 1][::-1]]
        out = K.lms_step(state(sig[i]), ds, K.lms_coefficients(sig, i, order))
        errs.append(np.abs(out - state(sig[i + 1])).max())
    assert abs(-fitted_order(hs, errs) - (order + 1)) < 0.3, errs


# ------------------------------------------------------------------------- grids and switches
def test_sigma_to_time_round_trip(xp):
    """MATH.md (9.9): with the default interpolation, the model time of a noise level gives
    back that noise level through refdiff.alpha_sigma (MATH.md (2.15)): sigma_tau / alpha_tau
    = sigma (1e-10); at the schedule's own sigmas tau is the integer timestep.  The
    k-diffusion rule (linear in log sigma) also returns integer timesteps at grid sigmas."""
    s = refdiff.make_schedule("linear", 1000)
    like = asx(xp, np.zeros((1, 1)))
    for sig in refdiff.karras_sigmas(7, float(s.sigmas[0]), float(s.sigmas[-1])):
        tau = K.sigma_to_time(s, float(sig))
        a, sg = refdiff.alpha_sigma(s, tau, like)
        assert math.isclose(float(sg / a), sig, rel_tol=1e-10)
    for t in (0, 17, 500, 999):
        assert math.isclose(K.sigma_to_time(s, float(s.sigmas[t])), t, abs_tol=1e-6)
        assert math.isclose(K.sigma_to_time(s, float(s.sigmas[t]), "log_sigma"), t, abs_tol=1e-9)
    sig_03 = float(VP.sigma(np.array(0.3)) / VP.alpha(np.array(0.3)))
    assert math.isclose(K.sigma_to_time(VP, sig_03), 0.3, rel_tol=1e-10)


def test_karras_grid_sampling_matches_exact_transport():
    """MATH.md (9.1), (9.5), (9.9): Heun on a Karras grid (user ``sigmas=``) of a discrete
    schedule, with the model called at float continuous indices, converges to the exact ODE
    map of Gaussian data from sigma_max (157) to 0: error with 80 steps < 5e-3 (measured
    3.6e-3) and decreasing ~4x per doubling (second order; measured 4.5, 4.3)."""
    s = refdiff.make_schedule("linear", 1000)
    smin, smax = float(s.sigmas[0]), float(s.sigmas[-1])
    x = _rand((6, 2), 4)
    errs = []
    for n in (20, 40, 80):
        sig = refdiff.karras_sigmas(n, smin, smax, append_zero=True)
        out = refdiff.sample(GAUSS.as_model(s), x, s, refdiff.timesteps(1000, 10), "heun", sigmas=sig, progress=False)
        a0 = 1 / math.sqrt(1 + smax**2)
        errs.append(np.abs(out - GAUSS.ode_transport(x, a0, smax * a0, 1.0, 0.0)).max())
    assert errs[-1] < 5e-3 and all(3.0 < a / b < 5.5 for a, b in zip(errs, errs[1:])), errs


def test_init_scale_switch():
    """MATH.md (9.10): init_scale="vp" converts x_T to sigma coordinates exactly
    (x sqrt(1 + sigma_0^2)); "sigma_max" (k-diffusion) multiplies by sigma_0.  With a single
    Euler step to 0 and an x0-prediction model returning c, the result is c either way, and
    with the VE state of one step to sigma_1 > 0 the two differ by the hand-worked factor."""
    s = refdiff.make_schedule("linear", 100)
    c = np.array([[0.3, 0.1]])
    model = lambda x, t: np.broadcast_to(c, x.shape).copy()  # noqa: E731
    x = _rand((2, 2), 0)
    for scale in ("vp", "sigma_max"):
        out = K.euler_loop(model, x, s, np.array([60]), prediction_type="sample", init_scale=scale)
        np.testing.assert_allclose(out, np.broadcast_to(c, x.shape), rtol=1e-13)
    s0, s1 = float(s.sigmas[60]), float(s.sigmas[30])
    out = {sc: K.euler_loop(model, x, s, np.array([60, 30]), prediction_type="sample", init_scale=sc,
                            sigmas=np.array([s0, s1])) for sc in ("vp", "sigma_max")}
    # x_ve' = c + (s1/s0)(x_ve - c); back to VP: / sqrt(1 + s1^2)
    for sc, f in (("vp", math.sqrt(1 + s0**2)), ("sigma_max", s0)):
        np.testing.assert_allclose(out[sc], (c + s1 / s0 * (x * f - c)) / math.sqrt(1 + s1**2), rtol=1e-12)


def test_sigma_grid_bad_input():
    """Sigma grids that are not decreasing, out of the schedule's range, too short, or
    infinite (zero terminal SNR) raise ValueError; LMS order < 1 too."""
    s = refdiff.make_schedule("linear", 100)
    m, x, ts = GAUSS.as_model(s), np.zeros((2, 2)), refdiff.timesteps(100, 5)
    hi = float(s.sigmas[-1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        refdiff.sample(m, x, s, ts, "euler", sigmas=[1.0, 2.0, 0.0], progress=False)
    with pytest.raises(ValueError, match="out of the schedule's range"):
        refdiff.sample(m, x, s, ts, "heun", sigmas=[hi * 2, 1.0, 0.0], progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        refdiff.sample(m, x, s, ts, "heun", sigmas=[1.0], progress=False)
    zs = refdiff.make_schedule("linear", 100, zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero terminal SNR"):
        refdiff.sample(GAUSS.as_model(zs, "v_prediction"), x, zs, np.array([99, 50]), "euler",
                       prediction_type="v_prediction", progress=False)
    with pytest.raises(ValueError, match="order"):
        refdiff.sample(m, x, s, ts, "lms", order=0, progress=False)
    with pytest.raises(ValueError, match="init_scale"):
        refdiff.sample(m, x, s, ts, "euler", init_scale="k", progress=False)
    with pytest.raises(ValueError, match="interpolation"):
        refdiff.sample(m, x, s, ts, "euler", sigmas=[1.0, 0.5, 0.0], interpolation="linear", progress=False)
    with pytest.raises(TypeError, match="euler_ancestral"):
        refdiff.sample(m, x, s, ts, "euler_ancestral", progress=False)
