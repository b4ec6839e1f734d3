"""Issue 19's numbered findings in the core modules (schedules, losses, metrics, ELBO,
guidance): each test failed before its fix.  The systematic coverage of every argument of
every public callable is tests/test_fuzz_bad_input.py."""

from __future__ import annotations

import numpy as np
import pytest

import refdiff
from refdiff.guidance import cfg_combine, rescale_guidance
from refdiff.losses import objective_loss, regression_target
from refdiff.metrics import sliced_wasserstein
from refdiff.schedules import InterpolatedVP


def test_sliced_wasserstein_refuses_integer_samples():
    """issue 19 finding 2: integer samples gave 0.0 (10.74 for the same values as floats);
    they are refused, and the float result is the one a direct computation gives."""
    rng = np.random.default_rng(0)
    x = rng.integers(-5, 5, size=(64, 2))
    y = rng.integers(0, 20, size=(64, 2))
    with pytest.raises(TypeError, match="x must be a real floating array.*int64"):
        sliced_wasserstein(x, y.astype(float), rng=np.random.default_rng(1))
    with pytest.raises(TypeError, match="y must be a real floating array.*int64"):
        sliced_wasserstein(x.astype(float), y, rng=np.random.default_rng(1))
    # the float result: projections onto the same directions, sorted, mean squared gap
    d = refdiff.metrics.random_directions(128, 2, np.random.default_rng(1))
    px, py = np.sort(x.astype(float) @ d.T, axis=0), np.sort(y.astype(float) @ d.T, axis=0)
    want = np.sqrt(np.mean((px - py) ** 2))
    got = sliced_wasserstein(x.astype(float), y.astype(float), directions=d)
    assert got > 1.0 and got == pytest.approx(want, rel=1e-12)


def test_regression_target_and_objective_loss_refuse_integer_arrays():
    """issue 19 finding 2: integer x0/noise were computed in integer arithmetic (v target
    alpha * eps - sigma * x0 truncated); now a TypeError naming the argument."""
    x0, noise = np.array([[1, 2], [3, 4]]), np.array([[1, 0], [0, 1]])
    a, s = np.array([0.8, 0.6]), np.array([0.6, 0.8])
    with pytest.raises(TypeError, match="x0 must be a real floating array.*int64"):
        regression_target(x0, noise.astype(float), a, s, "v_prediction")
    with pytest.raises(TypeError, match="noise must be a real floating array.*int64"):
        regression_target(x0.astype(float), noise, a, s, "v_prediction")
    with pytest.raises(TypeError, match="out must be a real floating array.*int64"):
        objective_loss(x0, x0.astype(float), noise.astype(float), a, s)
    with pytest.raises(TypeError, match="alpha must be a real floating array.*int64"):
        objective_loss(x0.astype(float), x0.astype(float), noise.astype(float), np.array([1, 1]), s)
    # the float values are the closed form v = alpha eps - sigma x0, MATH.md (14.1)
    v = regression_target(x0.astype(float), noise.astype(float), a, s, "v_prediction")
    np.testing.assert_allclose(v, a[:, None] * noise - s[:, None] * x0, rtol=0, atol=1e-15)


def test_interpolated_vp_refuses_integer_times():
    """issue 19 finding 2: InterpolatedVP.alpha(int array) interpolated in integer
    arithmetic (alpha(1) came out as 1.0); integer time arrays are refused, and at float
    t = 1 alpha is the schedule's last sqrt(alpha_bar) (t_k = (k + 1) / T, MATH.md (2.15))."""
    sched = refdiff.make_schedule("linear", 10)
    vp = InterpolatedVP(sched)
    with pytest.raises(TypeError, match="t must be a real floating array.*int64"):
        vp.alpha(np.array([0, 1]))
    with pytest.raises(TypeError, match="t must be a real floating array.*int64"):
        refdiff.LinearVP().log_alpha(np.array([0, 1]))
    np.testing.assert_allclose(vp.alpha(np.array([1.0])), np.sqrt(sched.alpha_bars[-1:]), rtol=1e-14)
    assert vp.alpha(1.0) == pytest.approx(np.sqrt(sched.alpha_bars[-1]), rel=1e-14)  # a number is a float time


def test_nll_bound_zero_terminal_snr_eps_model_is_refused():
    """issue 19 finding 3: with zero terminal SNR an epsilon-model cannot give x0 at the
    last step (x0 = (x_t - sigma eps) / alpha with alpha = 0), and nll_bound returned inf
    silently; it now refuses with the cause.  A v-prediction model on the same schedule is
    fine (x0 = alpha x_t - sigma v = -v at alpha = 0) and gives a finite bound."""
    sched = refdiff.make_schedule("linear", 8, zero_terminal_snr=True)
    assert sched.alpha_bars[-1] == 0.0
    x0 = np.random.default_rng(0).integers(0, 256, size=(4, 2)) / 127.5 - 1.0  # 8-bit levels
    zero = lambda x, t: np.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="zero terminal SNR.*prediction_type"):
        refdiff.nll_bound(zero, sched, x0, rng=np.random.default_rng(0), prediction_type="epsilon")
    out = refdiff.nll_bound(zero, sched, x0, rng=np.random.default_rng(0), prediction_type="v_prediction")
    assert np.all(np.isfinite(np.asarray(out.total_nats)))


def test_rescale_guidance_constant_output_is_finite():
    """issue 19 finding 5: a constant model output (an untrained net with a zero-initialised
    last layer) has std 0, and rescale_guidance divided by it (NaN, blamed on the model).
    Where std(out_cfg) = 0 the sample is left unrescaled (ratio 1); other samples are
    rescaled as before, MATH.md (12.4)."""
    rng = np.random.default_rng(0)
    out_cond = np.concatenate([np.full((1, 3, 2, 2), 0.25), rng.standard_normal((1, 3, 2, 2))])
    out_uncond = np.concatenate([np.full((1, 3, 2, 2), 0.5), rng.standard_normal((1, 3, 2, 2))])
    cfg = cfg_combine(out_uncond, out_cond, 3.0)
    out = rescale_guidance(cfg, out_cond, 0.7)
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0], cfg[0])  # constant sample: unchanged
    r = np.std(out_cond[1]) / np.std(cfg[1])
    np.testing.assert_allclose(out[1], 0.7 * r * cfg[1] + 0.3 * cfg[1], rtol=1e-13)
