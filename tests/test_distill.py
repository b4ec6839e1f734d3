"""LCM at toy scale and progressive distillation (MATH.md chapter 18, sections 18.6-18.7)."""

import math

import numpy as np
import pytest

import refdiff
from refdiff.consistency import cm_karras_sigmas
from refdiff.distill import (GuidedNet, edm_student_denoiser, guidance_scale_embedding, lcm_loss_fn,
                             lcm_solver_timesteps, pd_grid, pd_loss_fn, pd_sample, pd_target)
from refdiff.nn import MLP, MLPConfig
from refdiff.nn.gradcheck import numerical_gradient
from refdiff.oracles import GaussianData


def test_lcm_solver_grid_hand_values():
    """MATH.md (18.25): T = 1000, n = 50: 19, 39, ..., 999 (step 20); T = 100, n = 4: 24, 49, 74, 99."""
    g = lcm_solver_timesteps(1000, 50)
    assert g[0] == 19 and g[-1] == 999 and len(g) == 50 and np.all(np.diff(g) == 20)
    assert list(lcm_solver_timesteps(100, 4)) == [24, 49, 74, 99]


def test_guidance_embedding_hand_values():
    """MATH.md (18.26): dim 4 has frequencies 1 and 1e-4; w = 0.001 with scale 1000 is s = 1:
    [sin 1, sin 1e-4, cos 1, cos 1e-4]; w = 0: [0, 0, 1, 1]; odd dim gets a zero column."""
    e = guidance_scale_embedding(np.array([0.001, 0.0]), 4)
    np.testing.assert_allclose(e[0], [math.sin(1), math.sin(1e-4), math.cos(1), math.cos(1e-4)], rtol=1e-13)
    np.testing.assert_array_equal(e[1], [0, 0, 1, 1])
    assert guidance_scale_embedding(np.array([0.3]), 7)[0, -1] == 0.0


def test_pd_target_makes_one_step_land_on_two():
    """MATH.md (18.28): one DDIM step x' = D + (s2/s)(x - D) with D = pd_target lands on the
    teacher's two-step point x2 (and D = x2 when s2 = 0); the student grid is every other point."""
    rng = np.random.default_rng(0)
    x, x2 = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    D = pd_target(x, x2, 2.0, 0.5)
    np.testing.assert_allclose(D + 0.25 * (x - D), x2, rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(pd_target(x, x2, 2.0, 0.0), x2)
    base = np.concatenate([cm_karras_sigmas(8)[::-1], [0.0]])
    np.testing.assert_array_equal(pd_grid(base, 4), base[::2])
    # the exact Gaussian denoiser: DDIM on a grid from 80 to 0 is the exact ODE map in the limit; the
    # 1-step map is the posterior mean D(x, 80), a multiplier d/(d + 6400) per direction
    g = GaussianData(np.zeros(1), 0.5)
    y = pd_sample(lambda z, s: g.x0_mean(z, 1.0, s), np.array([[80.0]]), np.array([80.0, 0.0]))
    assert y[0, 0] == pytest.approx(80.0 * 0.5 / (0.5 + 6400.0), rel=1e-13)


def _grad_ok(lf, groups, batch, keys, seed=9):
    p = groups["params"]
    _, grads = lf(groups, batch, np.random.default_rng(seed))
    for key in keys:
        num = numerical_gradient(lambda a: lf({**groups, "params": {**p, key: a}}, batch, np.random.default_rng(seed))[0],
                                 p[key])
        assert np.linalg.norm(num - grads["params"][key]) <= 1e-6 * (np.linalg.norm(num) + 1e-8), key


def test_lcm_loss_gradcheck():
    """MATH.md (18.27): the LCM loss gradient (through the LCM boundary f = c_skip x + c_out x0_hat,
    MATH.md (16.16), and the guidance embedding path) against central differences in float64;
    the teacher the exact class-conditional Gaussian-mixture epsilon; students predicting epsilon, x0 and v."""
    sched = refdiff.make_schedule("linear", 100)
    mix = refdiff.GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.2, 0.2])
    ab = np.asarray(sched.alpha_bars)

    def teacher(x, t, y):
        a, s = np.sqrt(ab[t]), np.sqrt(1 - ab[t])
        e = mix.eps(x, a, s)
        return e if y is None else e - s[:, None] * mix.grad_log_class_posterior(x, a, s, y)

    st = GuidedNet(MLP(MLPConfig(dim=2 + 6, hidden=8, layers=1, time_embed_dim=8, num_classes=2,
                                 zero_init_out=False)), 2, 6, (0.0, 4.0))
    p = st.init_params(np.random.default_rng(0), dtype="float64")
    tgt = st.init_params(np.random.default_rng(1), dtype="float64")
    for metric, pt in (("l2", "epsilon"), ("pseudo_huber", "epsilon"), ("l2", "sample"),
                      ("l2", "v_prediction")):
        lf = lcm_loss_fn(st, teacher, sched, n_solver=10, metric=metric, huber_c=0.01, student_prediction_type=pt)
        batch = (np.random.default_rng(2).standard_normal((5, 2)), np.array([0, 1, 1, 0, 1]))
        _grad_ok(lf, {"params": p, "ema": tgt}, batch, ("out.w", "in.w", "class_emb"))


def test_pd_loss_gradcheck():
    """MATH.md (18.28) with (18.1) (EDM form): the progressive-distillation loss gradient against
    central differences in float64 (exact Gaussian teacher)."""
    g = GaussianData(np.zeros(2), 0.5)
    base = np.concatenate([cm_karras_sigmas(4)[::-1], [0.0]])
    net = MLP(MLPConfig(dim=2, hidden=8, layers=1, time_embed_dim=8, zero_init_out=False))
    p = net.init_params(np.random.default_rng(0), dtype="float64")
    lf = pd_loss_fn(net, (lambda x, s: g.x0_mean(x, 1.0, s), pd_grid(base, 4)), pd_grid(base, 2))
    _grad_ok(lf, {"params": p}, np.random.default_rng(3).standard_normal((6, 2)), ("out.w", "layer0.w"))
    D = edm_student_denoiser(net, p)(np.ones((2, 2)), np.array([1e-9, 1e-9]))
    np.testing.assert_allclose(D, 1.0, atol=1e-7)  # EDM: c_skip -> 1, c_out -> 0 as sigma -> 0


def test_bad_input_errors():
    """Clear errors: omega outside the embedded range (student call and loss), unknown teacher
    prediction type, Huber c <= 0, a student grid that does not divide the base grid."""
    st = GuidedNet(MLP(MLPConfig(dim=2 + 4, hidden=8, layers=1, time_embed_dim=8)), 2, 4, (0.0, 2.0))
    p = st.init_params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside the embedded range"):
        st.forward(p, np.zeros((2, 2), np.float32), np.zeros(2, np.float32), {"omega": np.array([1.0, 3.0])})
    sched = refdiff.make_schedule("linear", 100)
    with pytest.raises(ValueError, match="outside the student's embedded range"):
        lcm_loss_fn(st, None, sched, omega_range=(0.0, 3.0))
    with pytest.raises(ValueError, match="prediction_type 'flow'"):
        lcm_loss_fn(st, None, sched, omega_range=(0.0, 1.0), teacher_prediction_type="flow")
    with pytest.raises(ValueError, match="c = 0"):
        lcm_loss_fn(st, None, sched, omega_range=(0.0, 1.0), metric="pseudo_huber", huber_c=0)
    with pytest.raises(ValueError, match="must divide"):
        pd_grid(np.linspace(1, 0, 9), 3)


class _IdealLCM:
    """The exact LCM consistency function of 1-D Gaussian data N(0, d) as a 'network' predicting x0:
    f*(x, tau_n) = prod_{j <= n} m_j x, m_j the exact-teacher DDIM multiplier from tau_j to
    max(tau_j - k, 0); out = (f* - c_skip x)/c_out (0 at timestep 0, where c_out = 0)."""

    def __init__(self, sched, d, n_solver):
        from refdiff.samplers.lcm import lcm_boundary

        ab = np.asarray(sched.alpha_bars)
        T = len(ab)
        taus, k = lcm_solver_timesteps(T, n_solver), T // n_solver
        mult, cum = {0: 1.0}, 1.0
        for tau in taus:
            a, a2 = ab[tau], ab[max(tau - k, 0)]
            x0 = math.sqrt(a) * d / (a * d + 1 - a)  # posterior-mean multiplier
            eps = (1 - math.sqrt(a) * x0) / math.sqrt(1 - a)
            cum *= math.sqrt(a2) * x0 + math.sqrt(1 - a2) * eps
            mult[int(tau)] = cum
        self.mult, self.bd = mult, lcm_boundary

    def forward(self, params, x, t, cond=None):
        out = np.zeros_like(x)
        for i, tt in enumerate(np.asarray(t).astype(int)):
            cs, co = self.bd(int(tt))
            out[i] = 0.0 if co == 0 else (self.mult[int(tt)] * x[i] - cs * x[i]) / co
        return out, None

    def backward(self, params, cache, dout):
        return {"w": np.zeros(1)}, None


def test_lcm_loss_vanishes_at_the_exact_consistency_function():
    """MATH.md (18.25), (18.27): with the exact Gaussian teacher, the composition of the skipping
    DDIM steps down to timestep 0 is self-consistent, so the LCM loss of the student equal to it is
    zero (to round-off) for every sampled pair; a student one grid step off is not."""
    sched = refdiff.make_schedule("linear", 1000)
    g = GaussianData(np.zeros(1), 0.3)
    ab = np.asarray(sched.alpha_bars)
    teacher = lambda x, t, y: g.eps(x, np.sqrt(ab[t]), np.sqrt(1 - ab[t]))
    st = _IdealLCM(sched, 0.3, 50)
    st.omega_range = (0.0, 4.0)
    lf = lcm_loss_fn(st, teacher, sched, student_prediction_type="sample", target="params")
    batch = (np.random.default_rng(0).standard_normal((256, 1)) * math.sqrt(0.3), None)
    loss, _ = lf({"params": {"w": np.zeros(1)}}, batch, np.random.default_rng(1))
    assert loss < 1e-24
    off = _IdealLCM(sched, 0.3, 50)
    off.mult = {k: off.mult.get(k + 20, v) for k, v in off.mult.items()}
    off.omega_range = (0.0, 4.0)
    lf = lcm_loss_fn(off, teacher, sched, student_prediction_type="sample", target="params")
    assert lf({"params": {"w": np.zeros(1)}}, batch, np.random.default_rng(1))[0] > 1e-8  # ~3e-6
