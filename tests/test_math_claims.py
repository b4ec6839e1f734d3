"""Side claims of MATH.md that a review found false or unsupported, each checked here by a
computation that would have caught the old statement (closed forms, exact enumeration,
symbolic series, exact oracles)."""

import math

import numpy as np
import pytest

import refdiff
from refdiff.likelihood import hutchinson_divergence
from refdiff.parameterization import to_eps_x0, v_from_eps_x0
from refdiff.samplers.ddim import ddim_inversion_step, ddim_step, ddim_update
from refdiff.samplers.flow import flow_midpoint_step


# ------------------------------------------------------------------ (7.5): which probes are best
def test_rademacher_is_best_only_among_iid_probes():
    """MATH.md (7.5): for J = [[0, 1], [1, 0]] (u(x) = J x, div u = 0) the four Rademacher
    probes (enumerated, each with probability 1/4) give e^T J e = +-2: mean 0, variance 4;
    the probe sqrt(2) e_K with K uniform on {1, 2} has E[e e^T] = I as well but gives 0
    every time: variance 0.  So Rademacher is the best only among probes with i.i.d.
    entries, not among all probes with identity covariance."""
    J = np.array([[0.0, 1.0], [1.0, 0.0]])
    f = lambda x: x @ J.T  # noqa: E731
    x = np.array([[0.3, -0.7]])
    rad = np.array([[[a, b]] for a in (-1.0, 1.0) for b in (-1.0, 1.0)])  # (4, 1, 2)
    axis = math.sqrt(2.0) * np.eye(2)[:, None, :]  # (2, 1, 2)
    for probes in (rad, axis):
        cov = np.einsum("pni,pnj->ij", probes, probes) / probes.shape[0]
        assert np.allclose(cov, np.eye(2), atol=1e-15)  # E[e e^T] = I
    est_rad = hutchinson_divergence(f, x, rad, per_probe=True)[:, 0]
    est_axis = hutchinson_divergence(f, x, axis, per_probe=True)[:, 0]
    assert np.allclose(np.sort(est_rad), [-2, -2, 2, 2], atol=1e-8)
    assert np.mean(est_rad) == pytest.approx(0.0, abs=1e-8)
    assert np.var(est_rad) == pytest.approx(4.0, rel=1e-8)
    assert np.var(est_axis) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ ch08: DDIM is Euler in sigma/alpha, not in lambda
def test_ddim_is_euler_in_sigma_over_alpha_and_exponential_in_lambda():
    """MATH.md (8.7), (9.3), (10.4): one eta = 0 DDIM step with the exact Gaussian eps
    oracle equals the Euler step of x/alpha in sigma/alpha and the exponential integrator
    (DPM-Solver-1) in lambda (to 1e-12), and is not the Euler step in lambda of the
    PF-ODE dx/dlambda = sigma^2 x - sigma eps_hat: over h = 0.5 the two differ by more
    than 0.05 (both first order; their errors against the exact map (6.12) differ)."""
    data = refdiff.GaussianData(np.array([0.5, -1.0]), np.array([0.3, 2.0]))
    rng = np.random.default_rng(0)
    lam_s, h = -0.5, 0.5
    a = lambda lam: math.sqrt(1.0 / (1.0 + math.exp(-2.0 * lam)))  # noqa: E731
    s = lambda lam: math.sqrt(1.0 / (1.0 + math.exp(2.0 * lam)))  # noqa: E731
    a_s, s_s, a_t, s_t = a(lam_s), s(lam_s), a(lam_s + h), s(lam_s + h)
    x_s = a_s * data.sample(64, rng) + s_s * rng.standard_normal((64, 2))
    eps = data.eps(x_s, a_s, s_s)
    x0 = (x_s - s_s * eps) / a_s
    ddim = ddim_update(x_s, eps, x0, a_s, s_s, a_t, s_t)
    euler_ve = a_t * (x_s / a_s + (s_t / a_t - s_s / a_s) * eps)
    dpm1 = (a_t / a_s) * x_s - s_t * math.expm1(h) * eps  # (10.4)
    euler_lam = x_s + h * (s_s**2 * x_s - s_s * eps)
    exact = data.ode_transport(x_s, a_s, s_s, a_t, s_t)
    np.testing.assert_allclose(ddim, euler_ve, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ddim, dpm1, rtol=1e-12, atol=1e-12)
    assert np.abs(ddim - euler_lam).max() > 0.05
    assert np.abs(ddim - exact).max() != pytest.approx(np.abs(euler_lam - exact).max(), rel=0.1)


# ------------------------------------------------------------------ ch04/ch08: clipping keeps the model's eps in DDIM
def test_ddim_clipping_keeps_the_model_eps_unless_asked():
    """MATH.md (4.11), (8.7): with clip_sample the DDIM step uses the clipped x0_hat and the
    model's own eps_hat in the direction term; use_clipped_model_output=True recomputes
    eps_hat = (x_t - alpha x0_clipped) / sigma.  Both written out by hand here."""
    sch = refdiff.make_schedule("linear", 50)
    t, tp = 30, 20
    x_t = np.array([[2.5, -0.3], [0.1, -3.0]])
    eps = np.array([[-1.0, 0.4], [0.2, 1.5]])
    a, s = math.sqrt(sch.alpha_bars[t]), math.sqrt(1 - sch.alpha_bars[t])
    ap, sp = math.sqrt(sch.alpha_bars[tp]), math.sqrt(1 - sch.alpha_bars[tp])
    x0c = np.clip((x_t - s * eps) / a, -1.0, 1.0)
    assert np.any(np.abs((x_t - s * eps) / a) > 1)  # clipping is active
    kept = ddim_step(sch, eps, t, tp, x_t, clip_sample=True)
    np.testing.assert_allclose(kept, ap * x0c + sp * eps, rtol=1e-13)
    redo = ddim_step(sch, eps, t, tp, x_t, clip_sample=True, use_clipped_model_output=True)
    np.testing.assert_allclose(redo, ap * x0c + sp * (x_t - a * x0c) / s, rtol=1e-13)


# ------------------------------------------------------------------ (8.9): inversion reads the output at the model's time
@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_ddim_inversion_reads_non_eps_models_at_their_time(prediction_type):
    """MATH.md (8.9): eps_hat = eps_theta(x_s, t), the eps form of the model evaluated at
    (x_s, t).  An x0- or v-model built from a time-independent eps function g (at (x, tau):
    x0 = (x - sigma_tau g(x)) / alpha_tau, v = alpha_tau g - sigma_tau x0) must invert
    exactly like the eps model g; reading its output with x_s's own (alpha_s, sigma_s)
    (a mutant, and some implementations' reading) does not."""
    sch = refdiff.make_schedule("linear", 100)
    x = np.array([[0.7, -1.2, 0.1], [2.0, 0.4, -0.5]])
    g = np.tanh(x) + 0.3  # eps_theta(x), independent of time
    for t, t_next in ((-1, 9), (10, 40), (50, 99)):
        a_n, s_n = math.sqrt(sch.alpha_bars[t_next]), math.sqrt(1 - sch.alpha_bars[t_next])
        x0 = (x - s_n * g) / a_n
        out = x0 if prediction_type == "sample" else v_from_eps_x0(g, x0, a_n, s_n)
        ref = ddim_inversion_step(sch, g, t, t_next, x)
        got = ddim_inversion_step(sch, out, t, t_next, x, prediction_type=prediction_type)
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)
        if t >= 0:  # the mutant's reading: convert with x_s's own time
            a, s = math.sqrt(sch.alpha_bars[t]), math.sqrt(1 - sch.alpha_bars[t])
            wrong_eps, _ = to_eps_x0(out, x, a, s, prediction_type)
            assert np.abs(wrong_eps - g).max() > 1e-3


# ------------------------------------------------------------------ ch11: the midpoint claim
def test_midpoint_h3_coefficient_symbolically():
    """MATH.md (11.9), (11.11): for x' = c(t) x the explicit midpoint step's local error is
    h^3 (c''/24 + c c'/4 + c^3/6) + O(h^4) (derived here from the Taylor series with SymPy),
    and for c = rho'/rho with rho^2 quadratic in t (Gaussian data on the flow path,
    rho^2 = (1-t)^2 nu + t^2) the coefficient is identically 0.  Skipped without SymPy;
    the numeric test below needs nothing."""
    sp = pytest.importorskip("sympy")
    t, h, u = sp.symbols("t h u")
    c = sp.Function("c")
    C = sp.integrate(sp.series(c(t + u), u, 0, 4).removeO(), (u, 0, h))
    exact = sp.series(sp.exp(C), h, 0, 4).removeO()
    mid = sp.series(1 + h * c(t + h / 2) + h**2 / 2 * c(t + h / 2) * c(t), h, 0, 4).removeO()
    coef = sp.expand((exact - mid).doit()).coeff(h, 3)
    ct = c(t)
    claimed = ct.diff(t, 2) / 24 + ct * ct.diff(t) / 4 + ct**3 / 6
    assert sp.simplify(coef - claimed) == 0
    p, q, r = sp.symbols("p q r", positive=True)
    rho = sp.sqrt(p * t**2 + q * t + r)
    cq = rho.diff(t) / rho
    assert sp.simplify(cq.diff(t, 2) / 24 + cq * cq.diff(t) / 4 + cq**3 / 6) == 0


def test_midpoint_local_order_four_on_gaussian_flow_numerically():
    """MATH.md (11.9), (11.11): halving h divides flow_midpoint_step's local error on
    x' = (rho'/rho) x by ~16 (local order 4, the h^3 term cancels) for rho^2 = (1-t)^2 nu + t^2,
    and by ~8 (the generic local order 3) for rho = exp(sin 3t)."""

    def local_ratio(rho_f, drho_f):
        vel = lambda x, tt: drho_f(tt) / rho_f(tt) * x  # noqa: E731
        errs = []
        for hh in (0.02, 0.01):
            x1 = flow_midpoint_step(vel, np.array([[1.0]]), 0.3, 0.3 + hh)
            errs.append(abs(float(x1[0, 0]) - rho_f(0.3 + hh) / rho_f(0.3)))
        return errs[0] / errs[1]

    nu = 0.2
    quad = local_ratio(lambda s: math.sqrt((1 - s) ** 2 * nu + s**2),
                       lambda s: (-(1 - s) * nu + s) / math.sqrt((1 - s) ** 2 * nu + s**2))
    other = local_ratio(lambda s: math.exp(math.sin(3 * s)), lambda s: 3 * math.cos(3 * s) * math.exp(math.sin(3 * s)))
    assert 14 < quad < 18, quad
    assert 7 < other < 9, other


# ------------------------------------------------------------------ (12.4): what the rescale acts on
def test_guidance_rescale_is_not_prediction_type_invariant():
    """MATH.md (12.2), (12.4): combining raw outputs with (12.2) commutes with converting
    between eps and v (affine, weights summing to 1), but the rescale (12.4) does not:
    rescaling v and converting to eps differs from rescaling eps (here by > 0.05), so the
    rescale acts on whatever the model outputs, as stated."""
    alpha, sigma = 0.6, 0.8
    x = np.array([[1.0, -0.5, 0.3, 2.0]])
    eps_u, eps_c = np.array([[0.2, -0.1, 0.4, 1.0]]), np.array([[1.5, -1.2, 0.3, 0.9]])
    to_v = lambda e: v_from_eps_x0(e, (x - sigma * e) / alpha, alpha, sigma)  # noqa: E731
    to_e = lambda v: to_eps_x0(v, x, alpha, sigma, "v_prediction")[0]  # noqa: E731
    w = 5.0
    np.testing.assert_allclose(to_e(refdiff.cfg_combine(to_v(eps_u), to_v(eps_c), w)),
                               refdiff.cfg_combine(eps_u, eps_c, w), rtol=1e-12)
    r_eps = refdiff.rescale_guidance(refdiff.cfg_combine(eps_u, eps_c, w), eps_c, 0.7)
    r_v = to_e(refdiff.rescale_guidance(refdiff.cfg_combine(to_v(eps_u), to_v(eps_c), w), to_v(eps_c), 0.7))
    assert np.abs(r_eps - r_v).max() > 0.05


# ------------------------------------------------------------------ (14.7) in chapter 1's notation; one name per scaling
def test_vlb_weight_in_the_chapters_notation():
    """MATH.md (5.5), (14.7): w_t = beta_t^2 / (2 Sigma_t a_t (1 - abar_t)) with a_t = 1 -
    beta_t and Sigma_t = beta_tilde_t, written here from the betas alone: 5.51e-3 at array
    index 500 of the linear T = 1000 schedule; reading a_t as sqrt(abar_t) and Sigma_t as
    1 - abar_t (the old clash with chapter 1) would give 2.13e-4."""
    betas = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1.0 - betas)
    i = 500
    bt = (1 - ab[i - 1]) / (1 - ab[i]) * betas[i]
    w = betas[i] ** 2 / (2 * bt * (1 - betas[i]) * (1 - ab[i]))
    assert refdiff.eps_mse_weight(refdiff.make_schedule("linear", 1000))[i] == pytest.approx(w, rel=1e-12)
    assert w == pytest.approx(5.51e-3, rel=1e-3)
    clash = betas[i] ** 2 / (2 * (1 - ab[i]) * math.sqrt(ab[i]) * (1 - ab[i]))
    assert clash == pytest.approx(2.13e-4, rel=3e-3)


def test_the_two_hybrid_scalings_differ_by_T_over_ln2():
    """MATH.md (5.16), (14.7): hybrid_loss(lam=k) (bits/dim, times T) equals the mean-MSE
    objective with vlb_weight = k T / ln 2 (nats/dim, no T) for a fixed-small model at
    t >= 1: the same k in both differs by T / ln 2 = 1442.7 at T = 1000."""
    from refdiff.losses import diffusion_loss

    sch = refdiff.make_schedule("linear", 1000)
    rng = np.random.default_rng(3)
    x0, noise = rng.uniform(-1, 1, (4, 3)), rng.standard_normal((4, 3))
    t = np.array([1, 200, 500, 999])
    out = noise + 0.3 * rng.standard_normal((4, 3))
    forward = lambda params, x, tt, y: (out, None)  # noqa: E731
    x_t = refdiff.q_sample(sch, x0, t, noise)
    k = 1e-3
    hyb = refdiff.hybrid_loss(sch, x0, x_t, t, noise, out, None, variance_type="fixed_small", lam=k,
                              decoder="gaussian")
    loss, _, _ = diffusion_loss(forward, None, x0, t, noise, sch, vlb_weight=k * 1000 / math.log(2))
    assert float(loss) == pytest.approx(float(np.mean(hyb)), rel=1e-10)
    loss_same_k, _, _ = diffusion_loss(forward, None, x0, t, noise, sch, vlb_weight=k)
    assert float(loss_same_k) != pytest.approx(float(np.mean(hyb)), rel=1e-2)


# ------------------------------------------------------------------ (2.9): one index direction
def test_trailing_grid_index_direction():
    """MATH.md (2.9): t_k = round(T - (n-1-k) T / n) - 1 for k = n-1, ..., 0 (t_k increasing in
    k, returned in decreasing order), the same k as the linspace and leading lines; written
    out with exact half-to-even rounding on values where the library's arange agrees."""
    for T, n in ((1000, 10), (1000, 16), (100, 7), (50, 50)):
        want = [int(np.round(T - (n - 1 - k) * T / n)) - 1 for k in range(n - 1, -1, -1)]
        assert list(refdiff.timesteps(T, n, "trailing", rounding="exact")) == want
