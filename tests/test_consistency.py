"""Consistency models against closed forms and the exact oracles (MATH.md chapter 18)."""

import math

import numpy as np
import pytest

from refdiff.consistency import (cm_adaptive_ema, cm_curriculum, cm_fixed_point, cm_karras_sigmas, cm_noise_input,
                                 curriculum_stages,
                                 cm_scalings, consistency_sample, ict_loss_weights, ict_noise_probs, ideal_consistency)
from refdiff.consistency_training import (LevelLinear, cd_pair, cm_backward, cm_forward, consistency_loss_fn, ct_pair,
                                          pseudo_huber, pseudo_huber_grad)
from refdiff.nn import MLP, MLPConfig
from refdiff.nn.gradcheck import check_gradient, numerical_gradient
from refdiff.oracles import GaussianData, GaussianMixture
from refdiff.training import fit, init_state

D_VAR = np.array([0.25, 2.0, 1.0])
MU = np.array([0.5, -1.0, 0.0])


def test_boundary_scalings_hand_values_and_exact_identity():
    """MATH.md (18.1): c_skip = sd^2/((s - smin)^2 + sd^2), c_out = (s - smin) sd / sqrt(s^2 + sd^2),
    c_in = 1/sqrt(s^2 + sd^2), hand-worked at sigma = 1 (sd = 0.5, smin = 0.002); at sigma_min
    c_skip = 1, c_out = 0 exactly so f(x, sigma_min) = x bit for bit for any network output."""
    cs, co, ci = cm_scalings(1.0)
    assert cs == pytest.approx(0.25 / (0.998 ** 2 + 0.25), rel=1e-15)
    assert co == pytest.approx(0.998 * 0.5 / math.sqrt(1.25), rel=1e-15)
    assert ci == pytest.approx(1 / math.sqrt(1.25), rel=1e-15)
    assert cm_scalings(0.002)[:2] == (1.0, 0.0)
    net = MLP(MLPConfig(dim=3, hidden=16, layers=1, zero_init_out=False))
    p = net.init_params(np.random.default_rng(0), dtype="float64")
    x = np.random.default_rng(1).standard_normal((4, 3))
    f, _ = cm_forward(net, p, x, np.full(4, 0.002))
    assert np.array_equal(f, x)
    assert cm_noise_input(1.0) == 250 * math.log(1.0 + 1e-44)


def test_lcm_form_deviation_from_the_boundary():
    """MATH.md (18.2): the LCM form's c_skip + c_out^2 = 1; its boundary is sigma = 0, and at
    sigma_min = 0.002 (timestep_scaling 1) f = 0.999984 x + 0.004 F, deviation u^2/(u^2 + sd^2)."""
    s = np.array([0.0, 0.002, 0.1, 1.0, 80.0])
    cs, co, _ = cm_scalings(s, form="lcm", timestep_scaling=1.0)
    np.testing.assert_allclose(cs + co ** 2, 1.0, rtol=0, atol=1e-15)
    assert cs[0] == 1.0 and co[0] == 0.0
    assert cs[1] == pytest.approx(0.25 / (4e-6 + 0.25), rel=1e-15) and 1 - cs[1] == pytest.approx(1.6e-5, rel=1e-3)
    assert co[1] == pytest.approx(0.004, rel=1e-4)
    cs10, _, _ = cm_scalings(1.0, form="lcm", timestep_scaling=10.0)  # LCM at discrete t = 1
    assert cs10 == pytest.approx(2.49e-3, rel=2e-3)


def test_karras_grid_and_curricula_hand_values():
    """MATH.md (18.3): end points exact, rho-th roots equally spaced.  MATH.md (18.4): hand-worked
    N(k) tables (cm: s0 = 2, s1 = 150: N(0) = max(ceil(2 - 1), 1) + 1 = 2, N(K) = 151; ict: s0 = 10, s1 = 1280, K = 800 000
    gives K' = 100 000 and N = 11, 21, ..., 1281).  MATH.md (18.5): mu(0) = mu0^s0 = 0.81 (N(0) - 1 = 1), mu(K) = mu0^(s0/s1)."""
    s = cm_karras_sigmas(5, 0.002, 80.0, 7.0)
    assert s[0] == 0.002 and s[-1] == 80.0
    np.testing.assert_allclose(np.diff(s ** (1 / 7)), (80 ** (1 / 7) - 0.002 ** (1 / 7)) / 4, rtol=1e-13)
    assert cm_curriculum(0, 100, 2, 150) == 2 and cm_curriculum(100, 100, 2, 150) == 151
    # k/K = 1/2: sqrt(0.5 (151^2 - 4) + 4) = 106.78 -> ceil(105.78) + 1 = 107
    assert cm_curriculum(50, 100, 2, 150) == 107
    K = 800_000
    assert [cm_curriculum(k, K, 10, 1280, "ict") for k in (0, 99_999, 100_000, 250_000, 700_000, 800_000)] == \
        [11, 11, 21, 41, 1281, 1281]
    assert cm_adaptive_ema(0, 100, 0.9, 2, 150) == pytest.approx(0.81, rel=1e-15)
    assert cm_adaptive_ema(100, 100, 0.9, 2, 150) == pytest.approx(0.9 ** (2 / 150), rel=1e-15)


def test_curriculum_stages_cover_the_run():
    """MATH.md (18.4), (18.5): stages are contiguous over 0..K, N constant inside each and equal to
    N(k) at both ends; iCT with K = 800 has 8 stages of K' = 100 (N = 11, 21, 41, ..., 1281); the
    original schedule carries mu(k) of its first step."""
    st = curriculum_stages(800, 10, 1280, "ict")
    assert [s[2] for s in st] == [11, 21, 41, 81, 161, 321, 641, 1281] and st[0][:2] == (0, 100)
    st = curriculum_stages(300, 2, 150, "cm", mu0=0.9)
    assert st[0][0] == 0 and st[-1][1] == 300 and all(a[1] == b[0] for a, b in zip(st, st[1:]))
    for a, b, N, mu in st:
        assert cm_curriculum(a, 300, 2, 150) == N == cm_curriculum(b - 1, 300, 2, 150)
        assert mu == pytest.approx(0.9 ** (2 / (N - 1)), rel=1e-14)


def test_ict_noise_distribution_and_weights():
    """MATH.md (18.6): p(i) is the log-normal probability of (ln s_i, ln s_{i+1}], normalised
    (checked by Monte Carlo of ln sigma ~ N(-1.1, 2^2) binned on the grid).  MATH.md (18.7): 1/gap."""
    s = cm_karras_sigmas(11)
    p = ict_noise_probs(s)
    u = np.random.default_rng(0).normal(-1.1, 2.0, 400_000)
    u = u[(u > np.log(s[0])) & (u <= np.log(s[-1]))]
    h = np.histogram(u, bins=np.log(s))[0] / u.size
    se = np.sqrt(p * (1 - p) / u.size)
    assert np.all(np.abs(h - p) < 4 * se + 1e-12)
    np.testing.assert_allclose(ict_loss_weights(s), 1 / (s[1:] - s[:-1]), rtol=0, atol=0)


def test_ideal_consistency_is_the_exact_ode_map():
    """MATH.md (18.8): the ODE integration of the oracle's denoiser from sigma to sigma_min equals
    the Gaussian closed form (the oracle's ode_transport with alpha = 1) to 1e-10, and
    f*(f*-level point) is self-consistent on a mixture (two routes to sigma_min agree)."""
    g = GaussianData(MU, np.diag(D_VAR) + 0.3 * np.eye(3)[::-1] * 0.5)  # non-diagonal covariance
    x = 3.0 * np.random.default_rng(0).standard_normal((6, 3))
    for sigma in (80.0, 2.0, 0.01):
        a = ideal_consistency(g, x * max(sigma, 1), sigma, 0.002)
        b = g.ode_transport(x * max(sigma, 1), 1.0, sigma, 1.0, 0.002)
        assert np.max(np.abs(a - b)) < 1e-10 * max(1.0, np.max(np.abs(b)))
    mix = GaussianMixture([0.3, 0.7], [[-1.0, 0.5], [1.5, 0.0]], [0.1, 0.2])
    x = 5.0 * np.random.default_rng(1).standard_normal((5, 2))
    direct = ideal_consistency(mix, x, 5.0, 0.002)
    via = ideal_consistency(mix, _ode(mix, x, 5.0, 0.7), 0.7, 0.002)
    assert np.max(np.abs(direct - via)) < 1e-8


def _ode(oracle, x, s_from, s_to):
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda u, y: (y.reshape(x.shape) - oracle.x0_mean(y.reshape(x.shape), 1.0, math.exp(u))).ravel(),
                    (math.log(s_from), math.log(s_to)), x.ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
    return sol.y[:, -1].reshape(x.shape)


def test_fixed_points_orders_one_and_two():
    """MATH.md (18.9): the closed-form CT/CD-Euler and CD-Heun multipliers approach the exact map
    with fitted orders ~1 and ~2 in N (d = 0.25, N = 10..640), and differ from it at finite N."""
    Ns = np.array([10, 40, 160, 640])
    err = {r: [] for r in ("ct", "cd_heun")}
    for N in Ns:
        s = cm_karras_sigmas(int(N))
        ex = cm_fixed_point(0.25, s, "exact")
        for r in err:
            err[r].append(abs(cm_fixed_point(0.25, s, r)[-1] / ex[-1] - 1))
    slope = {r: -np.polyfit(np.log(Ns), np.log(err[r]), 1)[0] for r in err}
    assert abs(slope["ct"] - 1) < 0.1 and abs(slope["cd_heun"] - 2) < 0.15
    assert err["ct"][0] > 0.2


@pytest.mark.parametrize("mode,solver,rule,tol,mu", [("ct", "euler", "ct", 0.03, None),
                                                     ("ct", "euler", "ct", 0.03, 0.9),
                                                     ("cd", "euler", "cd_euler", 1e-8, None),
                                                     ("cd", "ddim", "ct", 1e-8, None),
                                                     ("cd", "heun", "cd_heun", 1e-8, None)])
def test_per_level_linear_student_converges_to_the_fixed_point(mode, solver, rule, tol, mu):
    """MATH.md (18.9), (18.12), (18.13), (18.14): a per-level linear student trained by the
    generic loop (stop-gradient target, iCT style, or an EMA target mu = 0.9: the same fixed point) on
    Gaussian data N(0, 0.25) with N = 10 converges
    to the closed-form fixed point of its objective (CT: Monte-Carlo noise, tolerance 3 %; CD with
    the exact teacher has a zero-residual minimiser, reached to 1e-8), not to the exact map
    (which differs by > 20 % at the top level)."""
    d, N = 0.25, 10
    s = cm_karras_sigmas(N)
    g = GaussianData(np.zeros(1), d)
    net = LevelLinear(s, 1)
    loss = consistency_loss_fn(net, s, mode=mode, solver=solver, target=None if mu is None else "target",
                               teacher=lambda x, sig: g.x0_mean(x, 1.0, sig))
    steps, n = (3000, 2048) if mode == "ct" else (1500, 256)  # CD's minimiser has zero residual: no noise floor
    groups = {"params": net.init_params()} if mu is None else {"params": net.init_params(), "target": net.init_params()}
    st = init_state(groups, {"params": True}, np.random.default_rng(0), steps)
    st = fit(loss, st, lambda r: r.standard_normal((n, 1)) * math.sqrt(d), steps=steps, trainable={"params": True},
             lr=0.05, lr_decay="cosine", progress=False, ema=None if mu is None else {"target": ("params", mu, False)})
    cs, co, ci = cm_scalings(s)
    k = cs + co * ci * st.groups["params"]["a"][:, 0]
    kf, ke = cm_fixed_point(d, s, rule), cm_fixed_point(d, s, "exact")
    assert np.max(np.abs(k / kf - 1)) < tol
    assert np.max(np.abs(kf / ke - 1)) > 0.2


def test_cd_pair_steps_against_hand_formulas():
    """MATH.md (18.13): Euler/DDIM and Heun teacher steps with the exact Gaussian denoiser
    D = d x/(d + s^2) are the multipliers of MATH.md (18.9); an epsilon-prediction teacher gives
    the same step as the x0 teacher.  MATH.md (18.12): the CT pair is x0 + sigma z."""
    d, lo, hi = 0.25, np.array([0.3]), np.array([0.8])
    g = GaussianData(np.zeros(1), d)
    x0, z = np.array([[0.7]]), np.array([[-1.2]])
    xh, xl = ct_pair(x0, z, lo, hi)
    assert xh[0, 0] == 0.7 + 0.8 * -1.2 and xl[0, 0] == 0.7 + 0.3 * -1.2
    s = np.array([0.3, 0.8])
    for solver, rule in (("euler", "ct"), ("ddim", "ct"), ("heun", "cd_heun")):
        xh, xl = cd_pair(lambda x, sig: g.x0_mean(x, 1.0, sig), x0, z, lo, hi, solver)
        assert xl[0, 0] == pytest.approx(cm_fixed_point(d, s, rule)[1] * xh[0, 0], rel=1e-14)
        _, xl_e = cd_pair(lambda x, sig: g.eps(x, 1.0, sig), x0, z, lo, hi, solver, "epsilon")
        assert xl_e[0, 0] == pytest.approx(xl[0, 0], rel=1e-13)


def test_multistep_consistency_sampling_is_exact_with_the_exact_function():
    """MATH.md (18.10): with f = f* (18.8) every multistep schedule samples N(mu, Sigma + smin^2 I);
    the re-noising sqrt(tau^2 - smin^2) is what makes it exact (mean and variance by Monte Carlo,
    4 standard errors)."""
    g = GaussianData(MU, D_VAR)
    smin = 0.5  # large sigma_min makes the + smin^2 visible
    f = lambda x, s: g.ode_transport(x, 1.0, s, 1.0, smin)
    rng = np.random.default_rng(3)
    n = 200_000
    xT = MU + 80.0 * rng.standard_normal((n, 3))
    taus = [80.0, 5.0, 1.2]
    x, traj = consistency_sample(f, xT, taus, [rng.standard_normal((n, 3)) for _ in taus[1:]], smin)
    var = D_VAR + smin ** 2
    assert len(traj) == 3
    assert np.all(np.abs(x.mean(0) - MU) < 4 * np.sqrt(var / n))
    assert np.all(np.abs(x.var(0) / var - 1) < 4 * math.sqrt(2 / n))


def test_pseudo_huber_value_and_gradcheck():
    """MATH.md (18.11): d_c = sqrt(|x-y|^2 + c^2) - c (hand value 3-4-5), gradient
    (x - y)/sqrt(|x-y|^2 + c^2) against central differences in float64."""
    assert pseudo_huber(np.array([[3.0, 0.0]]), np.array([[0.0, 4.0]]), 12.0)[0] == pytest.approx(13 - 12, abs=1e-14)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    err = check_gradient(lambda a: float(np.sum(pseudo_huber(a, y, 0.3))), x, pseudo_huber_grad(x, y, 0.3))
    assert err < 1e-8


@pytest.mark.parametrize("mode,metric,weighting", [("ct", "pseudo_huber", "ict"), ("cd", "l2", "uniform")])
def test_consistency_loss_gradcheck(mode, metric, weighting):
    """MATH.md (18.14) with (18.1), (18.11): the loss_fn's gradient with respect to the student's
    parameters against central differences (float64 MLP, fixed draws, EMA target group)."""
    s = cm_karras_sigmas(6)
    net = MLP(MLPConfig(dim=2, hidden=8, layers=1, time_embed_dim=8, zero_init_out=False))
    p = net.init_params(np.random.default_rng(0), dtype="float64")
    tgt = net.init_params(np.random.default_rng(1), dtype="float64")
    g = GaussianData(np.zeros(2), 0.5)
    lf = consistency_loss_fn(net, s, mode=mode, metric=metric, huber_c=0.05, weighting=weighting,
                             teacher=lambda x, sig: g.x0_mean(x, 1.0, sig), solver="heun")
    x0 = np.random.default_rng(2).standard_normal((5, 2))
    L = lambda q: lf({"params": q, "target": tgt}, x0, np.random.default_rng(9))[0]
    _, grads = lf({"params": p, "target": tgt}, x0, np.random.default_rng(9))
    for key in ("out.w", "layer0.w", "temb.b"):
        def f(a, key=key):
            return L({**p, key: a})
        num = numerical_gradient(f, p[key])
        assert np.linalg.norm(num - grads["params"][key]) <= 1e-6 * (np.linalg.norm(num) + 1e-8), key


def test_bad_input_errors():
    """Clear errors: sigma_min >= sigma_max, N < 2 (grid and curriculum), unknown teacher
    prediction type, Huber c <= 0, sigma below sigma_min in the boundary form."""
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        cm_karras_sigmas(10, 1.0, 1.0)
    with pytest.raises(ValueError, match="N = 1"):
        cm_karras_sigmas(1)
    with pytest.raises(ValueError, match="s0 = 0.*fewer than 2"):
        cm_curriculum(0, 10, 0, 5)
    net = LevelLinear(cm_karras_sigmas(4), 1)
    with pytest.raises(ValueError, match="prediction_type = 'flow'"):
        consistency_loss_fn(net, cm_karras_sigmas(4), mode="cd", teacher=lambda x, s: x, prediction_type="flow")
    for c in (0.0, -1.0):
        with pytest.raises(ValueError, match="c = "):
            pseudo_huber(np.zeros((1, 2)), np.ones((1, 2)), c)
        with pytest.raises(ValueError, match="c = "):
            consistency_loss_fn(net, cm_karras_sigmas(4), metric="pseudo_huber", huber_c=c)
    with pytest.raises(ValueError, match="sigma_min"):
        cm_scalings(0.001, sigma_min=0.002)
