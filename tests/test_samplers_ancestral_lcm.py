"""Ancestral and SDE samplers (DPM-2 ancestral, DPM++ 2S ancestral, DPM++ SDE, DPM++ 2M/3M
SDE for any eta) and LCM's multistep consistency sampler.

Exact-oracle moments: with the exact denoiser every loop here is affine in (x_T, noise), so
its output mean and covariance follow exactly from its linear map (evaluated on basis
inputs).  For a point mass the exact reverse process keeps N(p, sigma^2 I) at every level;
with an exact consistency function LCM returns the data law exactly.  Other references:
quadrature of the exponential integral, refdiff's independent dpmpp_2m_sde, the Brownian
covariance.
"""

import math

import numpy as np
import pytest
from scipy import integrate

import refdiff
from refdiff.samplers import ancestral as A, lcm as L
from tests._support import assert_close

S = refdiff.make_schedule("linear", 1000)
P = np.array([0.3, -2.0])
G = refdiff.GaussianData(np.array([0.5, -1.0, 2.0]), np.array([[0.3, 0.1, 0.0], [0.1, 1.0, -0.2], [0.0, -0.2, 3.0]]))


def _point_mass_model(x, t):
    a, sg = refdiff.alpha_sigma(S, t, x)
    return (x - a * P) / sg


def _linear_map(run, D, n_draws):
    """(c, A, [B_k]) of an affine pipeline out = c + A x_T + sum_k B_k z_k, from one batched run
    on basis inputs (rows: zero, x_T = e_j, z_k = e_j)."""
    rows = 1 + D * (1 + n_draws)
    xT = np.zeros((rows, D))
    Z = np.zeros((n_draws, rows, D))
    for j in range(D):
        xT[1 + j, j] = 1.0
        for k in range(n_draws):
            Z[k, 1 + D * (1 + k) + j, j] = 1.0
    it = iter(Z)
    out = run(xT, lambda like: next(it))
    c = out[0]
    cols = out[1:] - c
    return c, cols[:D].T, [cols[D * (1 + k): D * (2 + k)].T for k in range(n_draws)]


@pytest.mark.parametrize("method,opts,draws", [
    ("dpm_2_ancestral", {}, 1), ("dpmpp_2s_ancestral", {}, 1), ("dpmpp_2s_ancestral", {"eta": 0.5}, 1),
    ("dpmpp_sde", {}, 2), ("dpmpp_sde", {"eta": 0.3}, 2), ("dpmpp_2m_sde_eta", {"eta": 0.4}, 1),
    ("dpmpp_2m_sde_eta", {"eta": 2.0, "solver_type": "heun"}, 1), ("dpmpp_3m_sde", {"eta": 0.7}, 1)])
def test_point_mass_law_kept_at_every_level(method, opts, draws):
    """MATH.md (16.10), (16.11), (16.13), (16.14), (16.15): for data = a point mass p (constant
    x0_hat = p) every step maps N(p, s^2 I) exactly onto N(p, s'^2 I) (sigma coordinates):
    started one level above the last, the exact output law (from the loop's linear map,
    x_T ~ N(alpha p, sigma^2 I)) has mean alpha' p and covariance sigma'^2 I at the next level,
    for any eta."""
    ts = np.array([800, 500])
    a0, s0 = float(S.sqrt_alpha_bars[800]), float(S.sqrt_one_minus_alpha_bars[800])
    a1, s1 = float(S.sqrt_alpha_bars[500]), float(S.sqrt_one_minus_alpha_bars[500])
    fn = refdiff.samplers.loop.sampler_methods()[method]
    c, Amap, Bs = _linear_map(lambda x, nz: fn(_point_mass_model, x, S, ts, noise=nz, sigmas=[s0 / a0, s1 / a1],
                                                **opts), 2, draws)
    mean = c + Amap @ (a0 * P)
    cov = s0**2 * Amap @ Amap.T + sum(B @ B.T for B in Bs)
    assert_close(mean, a1 * P, rtol=1e-12, atol=1e-12)
    assert_close(cov, s1**2 * np.eye(2), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("method", ["dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde_eta",
                                    "dpmpp_3m_sde"])
def test_point_mass_returned_exactly(method):
    """MATH.md (16.10), (16.11), (16.13), (16.14), (16.15): a full run to sigma = 0 returns p."""
    out = refdiff.sample(_point_mass_model, np.random.default_rng(0).standard_normal((4, 2)), S,
                         refdiff.timesteps(1000, 15, "trailing"), method, rng=np.random.default_rng(1), progress=False)
    assert_close(out, np.broadcast_to(P, out.shape), rtol=0, atol=1e-10)


def test_brownian_pair_covariance():
    """MATH.md (16.12): n1, n2 are standard normal with the covariance of the Brownian
    increments W(sm) - W(s), W(sn) - W(s): (s - sm) / sqrt((s - sm)(s - sn)).  The map is linear,
    so its coefficients give the covariance exactly."""
    s, sm, sn = 3.0, 1.2, 0.4
    e = np.eye(2)
    n1a, n2a = A.brownian_pair(e[0], e[1] * 0, s, sm, sn)  # coefficients of z1
    n1b, n2b = A.brownian_pair(e[0] * 0, e[1], s, sm, sn)  # of z2
    c1, c2 = np.array([n1a[0], n1b[0]]), np.array([n2a[1] + n2a[0], n2b[1] + n2b[0]])
    assert c1 @ c1 == pytest.approx(1.0, rel=1e-14) and c2 @ c2 == pytest.approx(1.0, rel=1e-14)
    assert c1 @ c2 == pytest.approx((s - sm) / math.sqrt((s - sm) * (s - sn)), rel=1e-14)


def test_2m_sde_eta_one_equals_dpmpp_2m_sde():
    """MATH.md (16.14), (10.16): k-diffusion's 2M SDE at eta = 1 (sigma coordinates) equals
    refdiff's independently written VP data-form dpmpp_2m_sde with the same noise."""
    model = G.as_model(S, "epsilon")
    ts = refdiff.timesteps(1000, 25, "trailing")
    xT = np.random.default_rng(3).standard_normal((5, 3))
    a = refdiff.sample(model, xT, S, ts, "dpmpp_2m_sde_eta", eta=1.0, rng=np.random.default_rng(4), progress=False)
    b = refdiff.sample(model, xT, S, ts, "dpmpp_2m_sde", rng=np.random.default_rng(4), progress=False)
    assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("variant", ["exact", "published"])
def test_3m_sde_mean_exact_for_quadratic_prediction(eta, variant):
    """MATH.md (16.15): the noise-free part of a 3M SDE step ("exact") is the exact integral
    e^{-H} x + int_0^h (1+eta) e^{-(1+eta)(h-u)} D(u) du for a prediction D quadratic in lambda
    (quadrature), from the values at lambda - h_1 - h_2, lambda - h_1, lambda; k-diffusion's
    "published" coefficient is that integral for D with half its curvature."""
    c = np.array([[0.4, -0.3], [0.9, 0.2], [-0.5, 0.7]])
    D = lambda u: c[0] + c[1] * u + c[2] * u * u  # noqa: E731  (u = lambda - lambda_s)
    h, h1, h2 = 0.5, 0.4, 0.6
    sig, sig_n = 2.0, 2.0 * math.exp(-h)
    x = np.array([1.3, -0.4])
    out = A.dpmpp_3m_sde_step(x, [D(0.0), D(-h1), D(-h1 - h2)], [h1, h2], sig, sig_n, np.zeros(2), eta=eta,
                              variant=variant)
    k, half = 1 + eta, (1.0 if variant == "exact" else 0.5)
    Dq = lambda u: c[0] + c[1] * u + half * c[2] * u * u  # noqa: E731
    integ = np.array([integrate.quad(lambda u: k * math.exp(-k * (h - u)) * Dq(u)[i], 0, h, epsabs=1e-14)[0]
                      for i in range(2)])
    assert_close(out, math.exp(-k * h) * x + integ, rtol=1e-11, atol=1e-13)


def test_dpmpp_2s_ancestral_eta0_is_dpmpp_2s_in_sigma_space():
    """MATH.md (16.11), (10.9): at eta = 0 (s_down = s') the 2S ancestral step is DPM-Solver++(2S)
    with the papers' coefficient: in VP coordinates refdiff's dpm_solver_2_update (r = 1/2)."""
    from refdiff.samplers.dpm_solver import dpm_solver_2_update

    x = np.random.default_rng(5).standard_normal((4, 3))
    s, sn = 2.0, 0.7

    def denoiser(y, sg):
        al = 1 / math.sqrt(1 + sg * sg)
        return G.x0_mean(y * al, al, sg * al)

    out, x0 = A.dpmpp_2s_ancestral_step(denoiser, x, s, sn, eta=0.0)
    al_s, al_t = 1 / math.sqrt(1 + s * s), 1 / math.sqrt(1 + sn * sn)
    sm = math.sqrt(s * sn)  # lambda midpoint
    al_m = 1 / math.sqrt(1 + sm * sm)
    u = dpm_solver_2_update  # the midpoint state from VP DPM-Solver++(1), then the second stage
    x_mid = refdiff.samplers.dpm_solver.dpmpp_1_step(x * al_s, x0, al_s, s * al_s, al_m, sm * al_m) / al_m
    ref = u(x * al_s, x0, denoiser(x_mid, sm), 0.5, al_s, s * al_s, al_t, sn * al_t, form="data") / al_t
    assert_close(out, ref, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------- LCM
def test_lcm_timesteps_hand_worked():
    """MATH.md (16.18): T = 1000, N = 50, n = 4: tau = 19, 39, ..., 999; indices 0, 12, 25, 37 of
    the reversed list: 999, 759, 499, 259.  N = 40, strength 0.5: tau = 24, ..., 499 (20 of them)."""
    assert L.lcm_timesteps(1000, 4, 50).tolist() == [999, 759, 499, 259]
    ts = L.lcm_timesteps(1000, 20, 40, strength=0.5)
    assert ts.tolist() == [499 - 25 * k for k in range(20)]


def test_lcm_boundary_conditions():
    """MATH.md (16.16): c_skip(0) = 1, c_out(0) = 0; c_skip^2 (u^2 + sd^2) = sd^4 and
    c_skip = sd^2 / (u^2 + sd^2) with u = scaling t (hand values at t = 999, scaling 10, sd 0.5)."""
    assert L.lcm_boundary(0) == (1.0, 0.0)
    cs, co = L.lcm_boundary(999)
    assert cs == pytest.approx(0.25 / (9990.0**2 + 0.25), rel=1e-15)
    assert co == pytest.approx(9990.0 / math.sqrt(9990.0**2 + 0.25), rel=1e-15)
    assert L.lcm_boundary(3, sigma_data=1.0, timestep_scaling=1.0) == pytest.approx((0.1, 3 / math.sqrt(10)))


@pytest.mark.parametrize("ts", [[999, 759, 499, 259], [900, 300], [999]])
def test_lcm_exact_consistency_function_returns_data_law(ts):
    """MATH.md (16.17): with the exact consistency function f = the ODE map to sigma = 0
    (boundary=None, prediction_type="sample") and x_T ~ p_{t_0}, the output law is the data's:
    mean mu and covariance Sigma exactly (from the loop's linear map)."""
    ts = np.array(ts)
    def model(x, t):
        a, sg = float(S.sqrt_alpha_bars[int(t[0])]), float(S.sqrt_one_minus_alpha_bars[int(t[0])])
        return G.ode_transport(x, a, sg, 1.0, 0.0)

    c, Amap, Bs = _linear_map(lambda x, nz: L.lcm(model, x, S, ts, prediction_type="sample", boundary=None,
                                                   noise=nz), 3, len(ts) - 1)
    a0, s0 = float(S.sqrt_alpha_bars[ts[0]]), float(S.sqrt_one_minus_alpha_bars[ts[0]])
    cov_T = a0**2 * G.cov + s0**2 * np.eye(3)
    assert_close(c + Amap @ (a0 * G.mean), G.mean, rtol=1e-10, atol=1e-11)
    assert_close(Amap @ cov_T @ Amap.T + sum(B @ B.T for B in Bs), G.cov, rtol=1e-9, atol=1e-11)


def test_lcm_step_and_bad_input():
    """MATH.md (16.16), (16.17): lcm_step re-noises f to the next level; errors name the argument."""
    x, x0, z = np.ones((1, 2)), np.full((1, 2), 2.0), np.full((1, 2), -1.0)
    nxt, f = L.lcm_step(x, x0, 0.25, 0.5, 0.6, 0.8, z)
    assert_close(f, np.full((1, 2), 1.25), rtol=1e-15)
    assert_close(nxt, 0.6 * f + 0.8 * z, rtol=1e-15)
    with pytest.raises(ValueError, match="noise"):
        L.lcm_step(x, x0, 0.25, 0.5, 0.6, 0.8, None)
    with pytest.raises(ValueError, match="n = 60"):
        L.lcm_timesteps(1000, 60, 50)
    with pytest.raises(ValueError, match="boundary"):
        L.lcm(_point_mass_model, x, S, np.array([999, 500]), boundary="edm")
    with pytest.raises(ValueError, match="sigma_data"):
        L.lcm_boundary(5, sigma_data=0.0)


def test_ancestral_bad_input():
    """MATH.md (16.13), (16.14): eta < 0, an unknown solver_type or init_scale, r out of range
    and a missing noise source raise errors naming the argument."""
    x = np.zeros((2, 2))
    ts = refdiff.timesteps(1000, 5)
    for m in ("dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde_eta", "dpmpp_3m_sde"):
        with pytest.raises(ValueError, match="eta"):
            refdiff.samplers.loop.sampler_methods()[m](_point_mass_model, x, S, ts, eta=-0.1)
        with pytest.raises(TypeError, match="noise"):
            refdiff.samplers.loop.sampler_methods()[m](_point_mass_model, x, S, ts)
        with pytest.raises(ValueError, match="decreasing"):
            refdiff.samplers.loop.sampler_methods()[m](_point_mass_model, x, S, ts, sigmas=[1.0, 2.0])
    with pytest.raises(ValueError, match="solver_type"):
        A.dpmpp_2m_sde_eta(_point_mass_model, x, S, ts, solver_type="euler", noise=lambda l: l)
    with pytest.raises(ValueError, match="init_scale"):
        A.dpmpp_sde(_point_mass_model, x, S, ts, init_scale="none", noise=lambda l: l)
    with pytest.raises(ValueError, match="r = "):
        A.dpmpp_sde_step(lambda y, s: y, x, 1.0, 0.5, x, x, r=0.0)


@pytest.mark.parametrize("method", ["dpmpp_sde", "dpmpp_2s_ancestral"])
def test_eta_zero_is_dpmpp_2s(method):
    """MATH.md (16.11), (16.13), (10.9): at eta = 0 both DPM++ SDE (r = 1/2: D_d = D(x_2; s_m)) and
    DPM++ 2S ancestral are deterministic DPM-Solver++(2S) with the lambda midpoint; they equal
    refdiff's independently written VP loop ``dpmpp_2s`` on the same grid (noise is drawn but
    multiplied by 0 in DPM++ SDE)."""
    model = G.as_model(S, "epsilon")
    ts = refdiff.timesteps(1000, 20, "trailing")
    xT = np.random.default_rng(6).standard_normal((5, 3))
    a = refdiff.sample(model, xT, S, ts, method, eta=0.0, rng=np.random.default_rng(0), progress=False)
    b = refdiff.sample(model, xT, S, ts, "dpmpp_2s", progress=False)
    assert_close(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("method,opts,draws", [
    ("dpm_2_ancestral", {}, 1), ("dpmpp_2s_ancestral", {}, 1), ("dpmpp_sde", {}, 2),
    ("dpmpp_2m_sde_eta", {"eta": 0.5}, 1), ("dpmpp_3m_sde", {"eta": 1.0}, 1)])
def test_output_law_converges_to_gaussian_data(method, opts, draws):
    """MATH.md (16.10), (16.11), (16.13), (16.14), (16.15): on correlated Gaussian data with the
    exact denoiser, from x_T ~ N(0, I) scaled to the first level, the output law (exact, from
    the loop's linear map) has mean mu to round-off (the path alpha_t mu is kept exactly) and a
    covariance whose error shrinks with the steps: below 0.05 at 80 "trailing" steps and at
    least 3x smaller than at 20 (a wrong noise scale would converge to a wrong covariance)."""
    model = G.as_model(S, "epsilon")
    fn = refdiff.samplers.loop.sampler_methods()[method]
    a0, s0 = float(S.sqrt_alpha_bars[999]), float(S.sqrt_one_minus_alpha_bars[999])
    errs = []
    for n in (20, 80):
        ts = refdiff.timesteps(1000, n, "trailing")
        c, Amap, Bs = _linear_map(lambda x, nz: fn(model, x, S, ts, noise=nz, **opts), 3, draws * n)
        assert_close(c + Amap @ (a0 * G.mean), G.mean, rtol=0, atol=1e-12)
        cov = Amap @ (a0**2 * G.cov + s0**2 * np.eye(3)) @ Amap.T + sum(B @ B.T for B in Bs)
        errs.append(float(np.abs(cov - G.cov).max()))
    assert errs[1] < 0.05 and errs[1] < errs[0] / 3, errs
