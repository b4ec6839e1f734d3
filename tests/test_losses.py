"""Training objectives (refdiff.losses): gradients by finite differences, the three
objectives as SNR-weighted x0 errors, min-SNR weights against their definition, the
hybrid ELBO term against refdiff.elbo, the oracle floor as a Pythagorean decomposition,
and classifier-free condition dropout."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff
import refdiff.data
from refdiff.losses import (
    TARGETS,
    check_labels,
    diffusion_loss,
    drop_labels,
    irreducible_loss,
    min_snr_weight,
    objective_loss,
    regression_target,
    snr_from_alpha_sigma,
    target_weight,
    vlb_eps_weight,
    weighted_mse,
    x0_error_factor,
    x0_weight,
)
from refdiff.parameterization import convert, to_eps_x0
from tests._support import asx, assert_close, shapes

WEIGHTINGS = [None, "min_snr", "snr", "snr_plus_one", "truncated_snr"]


@st.composite
def affine_batch(draw, vp=None):
    """(shape, seed, alpha (N,), sigma (N,)) on a general affine path (alpha^2 + sigma^2
    free) or, with vp=True, on a VP path."""
    shape = draw(shapes(min_batch=1, max_batch=5, max_extra_dims=2, max_side=4))
    seed = draw(st.integers(0, 2**20))
    rng = np.random.default_rng(seed)
    n = shape[0]
    is_vp = draw(st.booleans()) if vp is None else vp
    if is_vp:
        ab = rng.uniform(1e-3, 0.999, n)
        alpha, sigma = np.sqrt(ab), np.sqrt(1.0 - ab)
    else:
        alpha, sigma = rng.uniform(0.05, 1.5, n), rng.uniform(0.05, 1.5, n)
    return shape, seed, alpha, sigma


@given(b=affine_batch(), target=st.sampled_from(TARGETS), weighting=st.sampled_from(WEIGHTINGS))
@settings(max_examples=40)
def test_loss_gradient_matches_finite_differences(b, target, weighting):
    """dL/dout of (14.3) against central differences of L (14.2) for every target and
    weighting, float64.  L is quadratic in out, so the central difference is exact up to
    rounding: relative error < 1e-6 with step 1e-4."""
    shape, seed, alpha, sigma = b
    rng = np.random.default_rng(seed)
    x0, noise, out = (rng.standard_normal(shape) for _ in range(3))
    loss, g = objective_loss(out, x0, noise, alpha, sigma, target=target, weighting=weighting, gamma=2.0)
    h = 1e-4
    fd = np.zeros(shape)
    for i in np.ndindex(*shape):
        e = np.zeros(shape)
        e[i] = h
        lp, _ = objective_loss(out + e, x0, noise, alpha, sigma, target=target, weighting=weighting, gamma=2.0)
        lm, _ = objective_loss(out - e, x0, noise, alpha, sigma, target=target, weighting=weighting, gamma=2.0)
        fd[i] = (lp - lm) / (2 * h)
    err = np.max(np.abs(fd - g)) / max(np.max(np.abs(g)), 1e-300)
    assert err < 1e-6, err


@given(b=affine_batch(), target=st.sampled_from(TARGETS))
@settings(max_examples=40)
def test_target_error_is_snr_weighted_x0_error(b, target):
    """MATH.md (14.5): for any network output f of a target type, with x0_hat(f) the clean
    estimate it implies (refdiff.parameterization.to_eps_x0, written independently),
    ||f - target||^2 = c_target ||x0_hat - x0||^2 per sample with
    c_eps = SNR, c_x0 = 1, c_v = (alpha^2 + sigma^2)^2 / sigma^2.  rtol 1e-9: float64, with
    divisions by alpha, sigma >= 0.03."""
    shape, seed, alpha, sigma = b
    rng = np.random.default_rng(seed)
    x0, noise, f = (rng.standard_normal(shape) for _ in range(3))
    bc = (-1,) + (1,) * (len(shape) - 1)
    x_t = alpha.reshape(bc) * x0 + sigma.reshape(bc) * noise
    ptype = target
    _, x0_hat = to_eps_x0(f, x_t, alpha, sigma, ptype)
    tgt = regression_target(x0, noise, alpha, sigma, target)
    lhs = ((f - tgt) ** 2).reshape(shape[0], -1).sum(1)
    x0_err = ((x0_hat - x0) ** 2).reshape(shape[0], -1).sum(1)
    snr = alpha**2 / sigma**2
    c = {"epsilon": snr, "sample": np.ones_like(snr), "v_prediction": (alpha**2 + sigma**2) ** 2 / sigma**2}[target]
    np.testing.assert_allclose(lhs, c * x0_err, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(x0_error_factor(alpha, sigma, target), c, rtol=1e-12)


@given(b=affine_batch(), weighting=st.sampled_from(WEIGHTINGS[1:]), gamma=st.floats(0.1, 20.0))
@settings(max_examples=40)
def test_weighted_objectives_agree(b, weighting, gamma):
    """MATH.md (14.6), (14.8): one clean estimate x0_hat written as an eps, an x0 and a v output
    (refdiff.parameterization.convert) gives the same weighted loss under all three
    targets when the weights are lambda(SNR) / c_target, and that loss is the
    lambda-weighted x0 MSE computed directly.  rtol 1e-9 (float64)."""
    shape, seed, alpha, sigma = b
    rng = np.random.default_rng(seed)
    x0, noise, x0_hat = (rng.standard_normal(shape) for _ in range(3))
    bc = (-1,) + (1,) * (len(shape) - 1)
    x_t = alpha.reshape(bc) * x0 + sigma.reshape(bc) * noise
    snr = alpha**2 / sigma**2
    lam = {"min_snr": np.minimum(snr, gamma), "snr": snr, "snr_plus_one": snr + 1, "truncated_snr": np.maximum(snr, 1)}[
        weighting
    ]
    d = math.prod(shape[1:])
    direct = np.mean(lam * ((x0_hat - x0) ** 2).reshape(shape[0], -1).sum(1) / d)
    for target in TARGETS:
        f = convert(x0_hat, x_t, alpha, sigma, "sample", target)
        loss, _ = objective_loss(f, x0, noise, alpha, sigma, target=target, weighting=weighting, gamma=gamma)
        assert loss == pytest.approx(direct, rel=1e-9, abs=1e-14), target


@given(b=affine_batch(), gamma=st.floats(0.1, 20.0), target=st.sampled_from(TARGETS))
@settings(max_examples=40)
def test_min_snr_weights_against_definition(b, gamma, target):
    """Min-SNR-gamma (Hang et al. 2023), MATH.md (14.8) and (14.9): the x0 weight is
    min(SNR, gamma), and the per-target weights are that divided by c_target of (14.5):
    min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x0, min(SNR, gamma) sigma^2 /
    (alpha^2 + sigma^2)^2 for v, written out here; min_snr_weight is target_weight("min_snr",
    ...) (one definition).  rtol 1e-12."""
    _, _, alpha, sigma = b
    snr = alpha**2 / sigma**2
    c = {"epsilon": snr, "sample": 1.0, "v_prediction": (alpha**2 + sigma**2) ** 2 / sigma**2}[target]
    expected = np.minimum(snr, gamma) / c
    np.testing.assert_allclose(min_snr_weight(alpha, sigma, target, gamma), expected, rtol=1e-12)
    np.testing.assert_allclose(target_weight("min_snr", alpha, sigma, target, gamma), expected, rtol=1e-12)
    np.testing.assert_allclose(x0_weight("min_snr", snr, gamma), np.minimum(snr, gamma), rtol=1e-15)


def test_min_snr_on_a_vp_path_and_at_the_ends(xp):
    """MATH.md (14.9) on a VP path, with SNR = alpha^2 / sigma^2, MATH.md (14.4): v weight
    = min(SNR, gamma) / (SNR + 1).  Hand values at
    gamma = 5: alpha^2 = 0.9 (SNR 9): eps 5/9, x0 5, v 5/10; alpha^2 = 0.5 (SNR 1): eps 1,
    x0 1, v 1/2.  At SNR = 0 (zero terminal SNR) the eps weight is the limit 1, and at
    sigma = 0 (SNR = inf) the x0 weight is gamma; both without NaN."""
    ab = asx(xp, [0.9, 0.5, 0.0])
    a, s = xp.sqrt(ab), xp.sqrt(1.0 - ab)
    assert_close(min_snr_weight(a, s, "epsilon", 5.0), [5 / 9, 1.0, 1.0], xp=xp, rtol=1e-12)
    assert_close(min_snr_weight(a, s, "sample", 5.0), [5.0, 1.0, 0.0], xp=xp, rtol=1e-12)
    assert_close(min_snr_weight(a, s, "v_prediction", 5.0), [0.5, 0.5, 0.0], xp=xp, rtol=1e-12)
    assert_close(target_weight("min_snr", a, s, "epsilon", 5.0), [5 / 9, 1.0, 1.0], xp=xp, rtol=1e-12)
    a1, s1 = asx(xp, [1.0]), asx(xp, [0.0])
    assert_close(snr_from_alpha_sigma(a1, s1), [math.inf], xp=xp)
    assert_close(min_snr_weight(a1, s1, "sample", 5.0), [5.0], xp=xp)


def test_weighted_mse_by_hand(xp):
    """MATH.md (14.2) and (14.3) on a 2 x 2 batch: residuals [[1, 1], [2, 0]], weights [1, 3]:
    L = (1 * (1 + 1) + 3 * (4 + 0)) / (2 * 2) = 14 / 4 = 3.5;
    dL/dout = 2 w r / 4 = [[0.5, 0.5], [3, 0]]."""
    out, tgt = asx(xp, [[1.0, 1.0], [2.0, 0.0]]), asx(xp, [[0.0, 0.0], [0.0, 0.0]])
    loss, g = weighted_mse(out, tgt, asx(xp, [1.0, 3.0]))
    assert_close(loss, 3.5, xp=xp)
    assert_close(g, [[0.5, 0.5], [3.0, 0.0]], xp=xp)


@pytest.mark.parametrize("target", TARGETS)
def test_diffusion_loss_composes_q_sample(xp, target):
    """diffusion_loss feeds the model x_t = q_sample(schedule, x0, t, noise) (MATH.md (2.4),
    written independently) and t, and returns objective_loss of its output,
    MATH.md (14.1), (14.2) and (14.3).
    A stand-in forward records its inputs; rtol 1e-12 (float64)."""
    sched = refdiff.make_schedule("cosine", 50)
    rng = np.random.default_rng(3)
    x0, noise, out = (asx(xp, rng.standard_normal((4, 3))) for _ in range(3))
    t = asx(xp, np.array([0, 7, 30, 49]))
    seen = {}

    def forward(params, x, tt, y):
        seen.update(x=x, t=tt, y=y, params=params)
        return out, "cache"

    loss, dout, cache = diffusion_loss(forward, {"p": 1}, x0, t, noise, sched, target=target, weighting="min_snr")
    assert cache == "cache" and seen["params"] == {"p": 1} and seen["y"] is None
    assert_close(seen["x"], refdiff.q_sample(sched, x0, t, noise), xp=xp, rtol=1e-12)
    a = asx(xp, sched.sqrt_alpha_bars[[0, 7, 30, 49]])
    s = asx(xp, sched.sqrt_one_minus_alpha_bars[[0, 7, 30, 49]])
    l2, g2 = objective_loss(out, x0, noise, a, s, target=target, weighting="min_snr")
    assert_close(loss, l2, xp=xp, rtol=1e-12)
    assert_close(dout, g2, xp=xp, rtol=1e-12)


def test_hybrid_vlb_term_matches_elbo():
    """MATH.md (14.7): for t >= 1 with the fixed_small reverse variance, the hybrid loss
    minus the simple loss, divided by lam, is the mean over the batch of the ELBO term
    L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) per dimension as computed by
    refdiff.vlb_term (MATH.md (5.4), another module, Gaussian KL of the posterior means).
    Also checked for the x0 and v targets, whose outputs encode the same eps_hat.
    rtol 1e-9 (float64)."""
    sched = refdiff.make_schedule("linear", 100)
    rng = np.random.default_rng(11)
    n, d = 6, 3
    x0, noise, eps_hat = (rng.standard_normal((n, d)) for _ in range(3))
    t = rng.integers(1, 100, n)
    lam = 0.37
    a, s = refdiff.alpha_sigma(sched, t, x0)
    x_t = a * x0 + s * noise
    kl = refdiff.vlb_term(sched, x0, x_t, t, eps_hat, prediction_type="epsilon", variance_type="fixed_small")
    expected_extra = np.mean(kl / d)
    for target in TARGETS:
        f = convert(eps_hat, x_t, a.ravel(), s.ravel(), "epsilon", target)

        def forward(params, x, tt, y, f=f):
            return f, None

        simple, _, _ = diffusion_loss(forward, {}, x0, t, noise, sched, target=target)
        simple_eps, _, _ = diffusion_loss(lambda p, x, tt, y: (eps_hat, None), {}, x0, t, noise, sched)
        hybrid, _, _ = diffusion_loss(forward, {}, x0, t, noise, sched, target=target, vlb_weight=lam)
        assert (hybrid - simple) / lam == pytest.approx(expected_extra, rel=1e-9), target
    w = vlb_eps_weight(sched, t, x0)
    assert w.shape == (n,)
    assert simple_eps + lam * expected_extra == pytest.approx(
        diffusion_loss(lambda p, x, tt, y: (eps_hat, None), {}, x0, t, noise, sched, vlb_weight=lam)[0], rel=1e-12
    )


def test_oracle_floor_is_a_pythagorean_decomposition():
    """MATH.md (14.18): for any predictor f(x_t, t), E||f - eps||^2 = E||f - E[eps|x_t]||^2 +
    E||eps - E[eps|x_t]||^2, the last term being irreducible_loss with the exact
    Gaussian-mixture oracle.  Checked by Monte Carlo for f = E[eps|x_t] + 0.3 tanh(x_t)
    on the "8gaussians" ring: the cross term 2 E[(f - eps_bar)(eps_bar - eps)] has mean 0,
    and its sample mean must lie within 4 standard errors (fixed seed)."""
    rng = np.random.default_rng(0)
    data = refdiff.data.load_dataset("8gaussians", 20000, rng)
    sched = refdiff.make_schedule("linear", 1000)
    t = rng.integers(0, 1000, 20000)
    noise = rng.standard_normal((20000, 2))
    floor = irreducible_loss(data.oracle, data.x, t, noise, sched)
    a, s = refdiff.alpha_sigma(sched, t, data.x)
    x_t = a * data.x + s * noise
    eps_bar = data.oracle.eps(x_t, a, s)
    f = eps_bar + 0.3 * np.tanh(x_t)
    total, _ = objective_loss(f, data.x, noise, a, s)
    excess = np.mean((f - eps_bar) ** 2)
    cross = 2.0 * ((f - eps_bar) * (eps_bar - noise)).mean(1)
    assert abs(total - excess - floor) <= 4.0 * cross.std() / math.sqrt(20000)
    assert floor == pytest.approx(np.mean((noise - eps_bar) ** 2), rel=1e-12)
    assert floor < total


def test_condition_dropout_frequency_and_null_class(xp):
    """MATH.md (14.10): each label becomes the null class K independently with probability
    p; over 20000 labels the dropped fraction lies within 4 binomial standard errors of p
    (fixed seed), kept labels are unchanged; p = 0 keeps all, p = 1 drops all."""
    rng = np.random.default_rng(5)
    y = asx(xp, rng.integers(0, 10, 20000))
    out = drop_labels(y, 0.2, rng, 10)
    dropped = np.asarray(refdiff.to_numpy(out)) == 10
    assert abs(dropped.mean() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 20000)
    y_np = refdiff.to_numpy(y)
    assert np.array_equal(refdiff.to_numpy(out)[~dropped], y_np[~dropped])
    assert np.array_equal(refdiff.to_numpy(drop_labels(y, 0.0, rng, 10)), y_np)
    assert np.all(refdiff.to_numpy(drop_labels(y, 1.0, rng, 10)) == 10)


def test_condition_dropout_uses_one_draw_per_label():
    """The RNG stream after drop_labels does not depend on p (one uniform per label)."""
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    drop_labels(np.arange(5), 0.0, r1, 10)
    drop_labels(np.arange(5), 0.7, r2, 10)
    assert r1.random() == r2.random()


def test_bad_inputs():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown target 'noise'"):
        objective_loss(x, x, x, 1.0, 1.0, target="noise")
    with pytest.raises(ValueError, match="unknown weighting 'p2'"):
        objective_loss(x, x, x, 0.5, 0.5, weighting="p2")
    with pytest.raises(ValueError, match="gamma"):
        objective_loss(x, x, x, 0.5, 0.5, weighting="min_snr", gamma=0.0)
    with pytest.raises(ValueError, match="model output has shape \\(2, 4\\)"):
        objective_loss(np.zeros((2, 4)), x, x, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"shape mismatch: x0 \(2, 3\), noise \(3, 3\)"):
        regression_target(x, np.zeros((3, 3)), 0.5, 0.5)
    with pytest.raises(ValueError, match="weights must have shape \\(2,\\)"):
        weighted_mse(x, x, np.ones(3))
    with pytest.raises(ValueError, match=r"alpha has shape \(3,\), which does not fit the data of shape \(2, 3\)"):
        objective_loss(x, x, x, np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="label 10, out of range \\[0, 9\\]"):
        check_labels(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="label -1"):
        drop_labels(np.array([-1, 2]), 0.1, np.random.default_rng(0), 10)
    with pytest.raises(TypeError, match="integer class labels"):
        check_labels(np.array([0.0, 1.0]), 10)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        drop_labels(np.array([0, 1]), 1.5, np.random.default_rng(0), 10)
    with pytest.raises(TypeError, match="Generator"):
        drop_labels(np.array([0, 1]), 0.5, "0", 10)
    with pytest.raises(ValueError, match="vlb_weight"):
        diffusion_loss(lambda p, x, t, y: (x, None), {}, x, np.array([1, 2]), x, refdiff.make_schedule("linear", 10),
                       vlb_weight=-1.0)
    assert check_labels(np.array([0, 10]), 10, allow_null=True) is not None
