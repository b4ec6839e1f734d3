"""Guidance against exact mixture oracles: CFG limits, both conventions, CFG = classifier
guidance for exact scores, classifier guidance with scale 1 = conditional sampling,
guidance rescale, and the network classifier gradient against an exact posterior."""

import math

import numpy as np
import pytest

import refdiff
from tests._support import assert_close, asx

MIX = refdiff.GaussianMixture([0.2, 0.5, 0.3], [[-2.0, 0.0], [1.5, 1.0], [0.0, -2.0]], [0.3, 0.5, 0.4],
                              labels=[0, 1, 0])
NULL = MIX.n_classes  # label of the unconditional ("null") class
SCHED = refdiff.make_schedule("linear", 200)


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def cond_model(schedule, prediction_type="epsilon"):
    """model(x, t, y): the exact class-conditional mixture for labels y, the unconditional
    mixture for the null label."""
    per_class = [MIX.conditional(c).as_model(schedule, prediction_type) for c in range(MIX.n_classes)]
    uncond = MIX.as_model(schedule, prediction_type)

    def model(x, t, y):
        xp = refdiff.array_namespace(x)
        out = uncond(x, t)
        for c, m in enumerate(per_class):
            out = xp.where(xp.reshape(y == c, (-1, 1)), m(x, t), out)
        return out

    return model


def test_cfg_limits_both_conventions(xp):
    """MATH.md (12.2), (12.3): in the "w" convention w = 1 gives the conditional and w = 0 the
    unconditional prediction; in the "1+w" convention w' = 0 is conditional and w' = -1
    unconditional; converting the scale (w = 1 + w') gives the same combination."""
    u, c = asx(xp, _rand((4, 3), 0)), asx(xp, _rand((4, 3), 1))
    assert_close(refdiff.cfg_combine(u, c, 1.0), c, xp=xp)
    assert_close(refdiff.cfg_combine(u, c, 0.0), u, xp=xp)
    assert_close(refdiff.cfg_combine(u, c, 0.0, "1+w"), c, xp=xp)
    assert_close(refdiff.cfg_combine(u, c, -1.0, "1+w"), u, xp=xp)
    for w in (0.0, 1.0, 3.5, 7.5):
        wp = refdiff.cfg_convert_scale(w, "w", "1+w")
        assert wp == w - 1 and refdiff.cfg_convert_scale(wp, "1+w", "w") == w
        assert_close(refdiff.cfg_combine(u, c, wp, "1+w"), refdiff.cfg_combine(u, c, w, "w"), xp=xp, rtol=1e-12)
        assert_close(refdiff.cfg_combine(u, c, wp, "1+w"), (1 + wp) * c - wp * u, xp=xp, rtol=1e-12, atol=1e-14)


def test_cfg_model_limits_with_exact_mixture():
    """MATH.md (12.2): the cfg_model wrapper with w = 1 returns the exact conditional
    mixture's eps and with w = 0 the unconditional one (float64: 1e-12)."""
    x, t, y = _rand((5, 2), 2), np.full(5, 80), np.array([0, 1, 1, 0, 1])
    m = cond_model(SCHED)
    np.testing.assert_allclose(refdiff.cfg_model(m, y, 1.0, NULL)(x, t), m(x, t, y=y), rtol=1e-12)
    np.testing.assert_allclose(refdiff.cfg_model(m, y, 0.0, NULL)(x, t), MIX.as_model(SCHED)(x, t), rtol=1e-12)
    np.testing.assert_allclose(refdiff.cfg_model(m, y, 0.0, NULL, convention="1+w")(x, t), m(x, t, y=y), rtol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_cfg_commutes_with_prediction_type(prediction_type):
    """MATH.md (12.3): the CFG weights (1 - w, w) sum to 1 and every prediction type is affine
    in eps at fixed x_t, so guiding raw v or x0 outputs and converting equals guiding eps."""
    x, t, y, w = _rand((4, 2), 3), np.full(4, 120), np.array([0, 1, 0, 1]), 4.0
    a, s = math.sqrt(SCHED.alpha_bars[120]), math.sqrt(1 - SCHED.alpha_bars[120])
    g = refdiff.cfg_model(cond_model(SCHED, prediction_type), y, w, NULL)(x, t)
    e = refdiff.cfg_model(cond_model(SCHED), y, w, NULL)(x, t)
    np.testing.assert_allclose(refdiff.convert(g, x, a, s, prediction_type, "epsilon"), e, rtol=1e-10, atol=1e-12)


def test_cfg_equals_classifier_guidance_on_exact_scores():
    """MATH.md (12.1), (12.2), (12.5): by Bayes, score(x | y) - score(x) = grad log p(y | x), so
    CFG with scale w on exact conditional/unconditional eps equals classifier guidance with
    the exact mixture classifier and the same scale (float64: 1e-10)."""
    x, t, y = _rand((6, 2), 4), np.full(6, 60), np.array([1, 0, 1, 1, 0, 0])
    for w in (0.0, 1.0, 2.5):
        cfg = refdiff.cfg_model(cond_model(SCHED), y, w, NULL)(x, t)
        cg = refdiff.classifier_guided_model(MIX.as_model(SCHED), refdiff.mixture_classifier_grad(MIX, SCHED), y, w,
                                             SCHED)(x, t)
        np.testing.assert_allclose(cg, cfg, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_classifier_guidance_scale1_is_conditional_sampling(prediction_type):
    """MATH.md (12.1), (12.5): classifier guidance with scale 1 and the exact mixture
    classifier gives exactly the conditional mixture's prediction, and a deterministic
    sampler (DDIM, and Heun in sigma space) run on it gives the conditional trajectory
    (float64: 1e-10)."""
    x = _rand((8, 2), 5)
    for label in (0, 1):
        guided = refdiff.classifier_guided_model(MIX.as_model(SCHED, prediction_type),
                                                 refdiff.mixture_classifier_grad(MIX, SCHED), label, 1.0, SCHED,
                                                 prediction_type)
        cond = MIX.conditional(label).as_model(SCHED, prediction_type)
        np.testing.assert_allclose(guided(x, np.full(8, 150)), cond(x, np.full(8, 150)), rtol=1e-10, atol=1e-12)
        for method in ("ddim", "heun"):
            ts = refdiff.timesteps(200, 20)
            a = refdiff.sample(guided, x, SCHED, ts, method, prediction_type=prediction_type, progress=False)
            b = refdiff.sample(cond, x, SCHED, ts, method, prediction_type=prediction_type, progress=False)
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_sample_wiring():
    """MATH.md (12.2): refdiff.sample with guidance_scale, y and null_label equals sampling the
    cfg_model wrapper, and with y alone it samples the conditional model."""
    m, x, ts = cond_model(SCHED), _rand((6, 2), 6), refdiff.timesteps(200, 10)
    y = np.array([0, 1, 0, 1, 0, 1])
    a = refdiff.sample(m, x, SCHED, ts, "ddim", guidance_scale=3.0, y=y, null_label=NULL, progress=False)
    b = refdiff.sample(refdiff.cfg_model(m, y, 3.0, NULL), x, SCHED, ts, "ddim", progress=False)
    np.testing.assert_array_equal(a, b)
    a = refdiff.sample(m, x, SCHED, ts, "ddim", guidance_scale=2.0, y=y, null_label=NULL, guidance_convention="1+w",
                       progress=False)
    np.testing.assert_array_equal(a, refdiff.sample(refdiff.cfg_model(m, y, 3.0, NULL), x, SCHED, ts, "ddim",
                                                    progress=False))
    c = refdiff.sample(m, x, SCHED, ts, "ddim", y=y, progress=False)
    # u + 1 (c - u) equals c up to one rounding: 1e-13
    np.testing.assert_allclose(c, refdiff.sample(refdiff.cfg_model(m, y, 1.0, NULL), x, SCHED, ts, "ddim",
                                                 progress=False), rtol=1e-13, atol=1e-13)


def test_guidance_rescale(xp):
    """MATH.md (12.4): phi = 0 leaves the CFG output unchanged; phi = 1 rescales each sample
    to the conditional output's standard deviation (checked with NumPy's ddof = 1 std, the
    PyTorch default: the ratio does not depend on ddof); intermediate phi interpolates."""
    u, c = _rand((3, 2, 4, 4), 7), _rand((3, 2, 4, 4), 8) * 0.5
    g = refdiff.cfg_combine(asx(xp, u), asx(xp, c), 7.5)
    assert_close(refdiff.rescale_guidance(g, asx(xp, c), 0.0), g, xp=xp)
    gn = u + 7.5 * (c - u)
    ratio = c.reshape(3, -1).std(axis=1, ddof=1) / gn.reshape(3, -1).std(axis=1, ddof=1)
    full = gn * ratio[:, None, None, None]
    assert_close(refdiff.rescale_guidance(g, asx(xp, c), 1.0), full, xp=xp, rtol=1e-12)
    assert_close(refdiff.rescale_guidance(g, asx(xp, c), 0.7), 0.7 * full + 0.3 * gn, xp=xp, rtol=1e-12)


def test_network_classifier_grad_matches_exact_posterior():
    """MATH.md (12.6): for two isotropic components of equal variance v, x_t | k ~
    N(alpha mu_k, (alpha^2 v + sigma^2) I), so log p(k | x_t) is a softmax of logits linear in
    x_t (hand-derived: W = alpha mu_k / s2, b = log w_k - alpha^2 |mu_k|^2 / (2 s2)).  A
    hand-written linear "network" with forward/backward gives, through
    network_classifier_grad, the oracle's exact grad_log_class_posterior (1e-10)."""
    mix = refdiff.GaussianMixture([0.4, 0.6], [[-1.0, 0.5], [1.0, 2.0]], [0.3, 0.3])
    t = 70
    a, s = math.sqrt(SCHED.alpha_bars[t]), math.sqrt(1 - SCHED.alpha_bars[t])
    s2 = a * a * 0.3 + s * s
    mu, w = np.array([[-1.0, 0.5], [1.0, 2.0]]), np.array([0.4, 0.6])
    W, b = (a * mu / s2).T, np.log(w) - a * a * (mu**2).sum(1) / (2 * s2)  # (D, K), (K,)
    forward = lambda x, tt: (x @ W + b, x)  # noqa: E731
    backward = lambda cache, dlogits: dlogits @ W.T  # noqa: E731
    grad = refdiff.network_classifier_grad(forward, backward)
    x, y = _rand((5, 2), 9), np.array([0, 1, 1, 0, 1])
    exact = mix.grad_log_class_posterior(x, a, s, y)
    np.testing.assert_allclose(grad(x, np.full(5, t), y), exact, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(refdiff.mixture_classifier_grad(mix, SCHED)(x, np.full(5, t), y), exact, rtol=1e-12)


def test_guidance_bad_input():
    """Unknown convention, non-finite scale, rescale outside [0, 1], missing null label,
    guidance without labels: clear errors."""
    u = np.zeros((2, 2))
    with pytest.raises(ValueError, match="convention"):
        refdiff.cfg_combine(u, u, 1.0, "w+1")
    with pytest.raises(ValueError, match="guidance_scale"):
        refdiff.cfg_combine(u, u, float("nan"))
    with pytest.raises(ValueError, match="guidance_rescale"):
        refdiff.rescale_guidance(u, u, 1.5)
    with pytest.raises(TypeError, match="null_label"):
        refdiff.cfg_model(cond_model(SCHED), 0, 2.0, None)
    with pytest.raises(TypeError, match="needs a condition y"):
        refdiff.sample(cond_model(SCHED), u, SCHED, refdiff.timesteps(200, 5), "ddim", guidance_scale=2.0,
                       progress=False)
    with pytest.raises(ValueError, match="shape mismatch"):
        refdiff.cfg_combine(u, np.zeros((2, 3)), 1.0)
