"""Flow matching, the shift, rectified flow and reflow against closed forms (MATH.md chapter 18)."""

import math

import numpy as np
import pytest

from refdiff.flow_matching import (flow_dynamic_mu, flow_log_snr, flow_match_euler_sigmas, flow_shift,
                                   flow_time_shift, flow_velocity_to, fm_expected_irreducible_loss, fm_interpolate,
                                   fm_irreducible_loss, fm_loss, fm_loss_fn, fm_target, logit_normal_density,
                                   reflow_pairs, reflow_velocity_gaussian, rf_straightness_gaussian,
                                   sample_flow_times, straightness)
from refdiff.metrics import sliced_wasserstein
from refdiff.nn import MLP, MLPConfig
from refdiff.nn.gradcheck import check_gradient
from refdiff.oracles import GaussianData
from refdiff.training import fit, init_state

D = np.array([0.25, 4.0])
MU = np.array([1.0, -0.5])


def test_time_conventions_hand_values():
    """MATH.md (18.15): x0 = 2, eps = -1, t = 0.25 (t = 0 data): x_t = 0.75*2 + 0.25*(-1) = 1.25,
    u = -3; the RectifiedFlow convention at s = 0.75 gives the same point and target +3."""
    x0, e = np.array([[2.0]]), np.array([[-1.0]])
    assert fm_interpolate(x0, e, 0.25)[0, 0] == 1.25 and fm_target(x0, e)[0, 0] == -3.0
    assert fm_interpolate(x0, e, 0.75, "t0_noise")[0, 0] == 1.25 and fm_target(x0, e, "t0_noise")[0, 0] == 3.0
    u = fm_target(x0, e)
    assert flow_velocity_to(u, np.array([[1.25]]), 0.25, "sample")[0, 0] == pytest.approx(2.0, abs=1e-15)
    assert flow_velocity_to(u, np.array([[1.25]]), 0.25, "epsilon")[0, 0] == pytest.approx(-1.0, abs=1e-15)
    assert flow_velocity_to(u, np.array([[1.25]]), 0.25, "score")[0, 0] == pytest.approx(4.0, abs=1e-14)


def test_shift_hand_values_and_log_snr_translation():
    """MATH.md (18.18): shift 3 maps sigma = 0.5 to 0.75 and 1/1000 to 3/1002, and translates the
    log-SNR by -log 3.  MATH.md (18.19): exponential time shift = shift with s = e^mu;
    mu(256) = 0.5, mu(4096) = 1.15.  MATH.md (18.20): the default grid ends at 0.002994 (single
    shift, 3/1002) and 0.009/1.008 (diffusers #13243 double shift: shifting twice by 3 translates the
    log-SNR by log 9, i.e. shift 9 of 1/1000) for shift 3, 28 steps."""
    assert flow_shift(0.5, 3.0) == pytest.approx(0.75, rel=1e-15)
    assert flow_shift(1e-3, 3.0) == pytest.approx(3e-3 / 1.002, rel=1e-15)
    s = np.linspace(0.01, 0.99, 9)
    np.testing.assert_allclose(flow_log_snr(flow_shift(s, 3.0)), flow_log_snr(s) - math.log(3.0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(flow_time_shift(s, 0.7), flow_shift(s, math.exp(0.7)), rtol=1e-14)
    assert flow_dynamic_mu(256) == pytest.approx(0.5) and flow_dynamic_mu(4096) == pytest.approx(1.15)
    single, double = flow_match_euler_sigmas(28, 3.0), flow_match_euler_sigmas(28, 3.0, double_shift=True)
    assert single[0] == 1.0 and single[-1] == 0.0 and len(single) == 29
    assert single[-2] == pytest.approx(0.0029940, rel=1e-4) and double[-2] == pytest.approx(0.009 / 1.008, rel=1e-13)


def test_time_samplers_against_their_densities():
    """MATH.md (18.17): logit-normal draws histogrammed against the closed-form density (which
    integrates to 1); uniform draws on [eps, 1)."""
    from scipy.integrate import quad

    assert quad(lambda t: logit_normal_density(t, 0.3, 0.8), 0, 1)[0] == pytest.approx(1.0, abs=1e-9)
    n = 200_000
    t = sample_flow_times(n, np.random.default_rng(0), "logit_normal", logit_mean=0.3, logit_std=0.8)
    edges = np.linspace(0, 1, 21)
    p = np.array([quad(lambda u: logit_normal_density(u, 0.3, 0.8), a, b)[0] for a, b in zip(edges[:-1], edges[1:])])
    h = np.histogram(t, edges)[0] / n
    assert np.all(np.abs(h - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-12)
    u = sample_flow_times(1000, np.random.default_rng(1), "uniform", eps=1e-3)
    assert u.min() >= 1e-3 and u.max() < 1


def test_irreducible_loss_closed_form_against_monte_carlo_and_quadrature():
    """MATH.md (18.21): the Schur-complement loss equals the Monte-Carlo E||u - E[u|x_t]||^2 with
    the oracle's exact velocity (4 standard errors).  MATH.md (18.22): the uniform average
    (pi/2) sum sqrt(d) equals quadrature of (18.21)."""
    from scipy.integrate import quad

    g = GaussianData(MU, D)
    rng = np.random.default_rng(0)
    n, t = 400_000, 0.37
    x0, e = g.sample(n, rng), rng.standard_normal((n, 2))
    xt = fm_interpolate(x0, e, t)
    r = np.sum((fm_target(x0, e) - g.velocity(xt, 1 - t, t, -1.0, 1.0)) ** 2, axis=1)
    assert abs(r.mean() - fm_irreducible_loss(D, t)) < 4 * r.std() / math.sqrt(n)
    q = quad(lambda s: fm_irreducible_loss(D, s), 0, 1, epsabs=1e-13)[0]
    assert fm_expected_irreducible_loss(D) == pytest.approx(q, rel=1e-10)


def test_fm_loss_gradcheck():
    """MATH.md (18.16): the loss gradient 2 w (out - u)/N against central differences."""
    rng = np.random.default_rng(0)
    out, x0, e, w = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.random(4)
    _, g = fm_loss(out, x0, e, w)
    assert check_gradient(lambda o: fm_loss(o, x0, e, w)[0], out, g) < 1e-9


def test_one_rectified_flow_straightness_monte_carlo():
    """MATH.md (18.23): straightness of the exact 1-RF (oracle velocity) on Gaussian data equals
    (2 - pi/2) sum sqrt(d) within 4 standard errors; the exact reflow velocity (18.24) is straight."""
    g = GaussianData(MU, D)
    z = np.random.default_rng(1).standard_normal((20_000, 2))
    S = straightness(lambda x, t: g.velocity(x, 1 - t, t, -1.0, 1.0), z, 100)
    assert abs(S.mean() - rf_straightness_gaussian(D)) < 4 * S.std() / math.sqrt(S.size)
    S2 = straightness(reflow_velocity_gaussian(MU, np.diag(D)), z[:200], 20)
    assert np.max(S2) < 1e-20


@pytest.fixture(scope="module")
def trained_flow():
    g = GaussianData(MU, D)
    net = MLP(MLPConfig(dim=2, hidden=64, layers=2, time_embed_dim=32, time_scale=1000.0))
    st = init_state({"params": net.init_params(np.random.default_rng(0))}, {"params": True},
                    np.random.default_rng(1), 2000)
    st = fit(fm_loss_fn(net), st, lambda r: g.sample(512, r).astype(np.float32), steps=2000,
             trainable={"params": True}, lr=2e-3, lr_decay="cosine", progress=False)
    return g, net, st.groups["params"]


def test_trained_flow_loss_approaches_the_irreducible_loss(trained_flow):
    """MATH.md (18.16), (18.22): a 2000-step MLP's held-out loss (uniform t, 50 000 samples) lies
    within 2 % + 4 standard errors above (pi/2) sum sqrt(d) = 3.927 (and never 4 SE below it)."""
    g, net, p = trained_flow
    rng = np.random.default_rng(5)
    n = 50_000
    x0, e, t = g.sample(n, rng), rng.standard_normal((n, 2)), rng.random(n)
    out = net.apply(p, fm_interpolate(x0, e, t).astype(np.float32), t.astype(np.float32)).astype(np.float64)
    per = np.sum((out - fm_target(x0, e)) ** 2, axis=1)
    irr, se = fm_expected_irreducible_loss(D), per.std() / math.sqrt(n)
    assert irr - 4 * se < per.mean() < irr * 1.02 + 4 * se


def test_one_reflow_makes_one_euler_step_match_the_data(trained_flow):
    """MATH.md (18.24): retraining on the trained flow's own coupling (z, T(z)) makes one Euler step
    z - v(z, 1) match the data: sliced Wasserstein to fresh data within 1.5x that between two
    independent data samples of the same size (the oracle noise level), while 1-RF's one Euler
    step (which returns about E[x0 | x_1] = mu) is far off.  MATH.md (18.23): the straightness of the
    trained 1-RF is within 15 % of (2 - pi/2) sum sqrt(d), the reflowed model's below a tenth of it."""
    g, net, p = trained_flow
    v1 = lambda x, t: net.apply(p, x.astype(np.float32), np.full(len(x), t, np.float32)).astype(np.float64)
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4096, 2))
    x1, _ = reflow_pairs(v1, z, 40)
    net2 = MLP(MLPConfig(dim=2, hidden=64, layers=2, time_embed_dim=32, time_scale=1000.0))
    pairs = (x1.astype(np.float32), z.astype(np.float32))

    def batch(r):
        i = r.integers(0, len(z), 512)
        return pairs[0][i], pairs[1][i]

    st = init_state({"params": net2.init_params(np.random.default_rng(3))}, {"params": True},
                    np.random.default_rng(4), 2000)
    st = fit(fm_loss_fn(net2), st, batch, steps=2000, trainable={"params": True}, lr=2e-3, lr_decay="cosine",
             progress=False)
    v2 = lambda x, t: net2.apply(st.groups["params"], x.astype(np.float32), np.full(len(x), t, np.float32))
    n = 2000
    zt = np.random.default_rng(6).standard_normal((n, 2))
    one2, one1 = zt - v2(zt, 1.0), zt - v1(zt, 1.0)
    data, data2 = g.sample(n, np.random.default_rng(7)), g.sample(n, np.random.default_rng(8))
    sw = lambda a: sliced_wasserstein(a, data, 256, np.random.default_rng(0))
    floor = sw(data2)
    assert sw(one2) < 1.5 * floor
    assert sw(one1) > 5 * floor
    # MATH.md (18.23): the trained 1-RF is about as curved as the exact one, the reflowed one nearly straight
    zs = zt[:500]
    S1 = straightness(v1, zs, 20).mean()
    S2 = straightness(lambda x, t: v2(x, t).astype(np.float64), zs, 20).mean()
    assert abs(S1 / rf_straightness_gaussian(D) - 1) < 0.15 and S2 < 0.1 * S1


def test_bad_input_errors():
    """Clear errors: unknown time convention, shift <= 0, unknown time density."""
    with pytest.raises(ValueError, match="time_convention"):
        fm_target(np.zeros(1), np.zeros(1), "t1_data")
    with pytest.raises(ValueError, match="shift = 0"):
        flow_shift(0.5, 0)
    with pytest.raises(ValueError, match="unknown kind"):
        sample_flow_times(3, np.random.default_rng(0), "beta")


def test_flow_model_runs_under_vp_samplers():
    """MATH.md (11.10) with (4.8): the oracle's exact rectified-flow velocity converted by
    vp_model_from_flow equals the oracle's epsilon on a discrete and on a continuous VP schedule."""
    import refdiff
    from refdiff.flow_matching import vp_model_from_flow

    g = GaussianData(MU, D)
    vel = lambda y, s: g.velocity(y, 1 - s, s, -1.0, 1.0)
    x = np.random.default_rng(0).standard_normal((4, 2))
    for sch, t in ((refdiff.make_schedule("linear", 1000), np.array([0, 10, 500, 999])),
                   (refdiff.LinearVP(), np.array([0.01, 0.3, 0.6, 1.0]))):
        eps = vp_model_from_flow(vel, sch)(x, t)
        np.testing.assert_allclose(eps, g.as_model(sch, "epsilon")(x, t), rtol=1e-10, atol=1e-12)


def test_expected_irreducible_loss_under_logit_normal_times():
    """MATH.md (18.22): quadrature against the logit-normal density equals the Monte-Carlo mean of
    MATH.md (18.21) over logit-normal draws (4 standard errors)."""
    t = sample_flow_times(400_000, np.random.default_rng(0), "logit_normal", logit_mean=0.2, logit_std=1.0)
    v = fm_irreducible_loss(D, t)
    q = fm_expected_irreducible_loss(D, "logit_normal", logit_mean=0.2, logit_std=1.0)
    assert abs(v.mean() - q) < 4 * v.std() / math.sqrt(v.size)
