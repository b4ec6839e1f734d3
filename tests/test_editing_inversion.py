"""Inversion and style transfer (refdiff/editing/inversion.py): DDIB against the
whitening-colouring transform, its order of convergence, prediction-type invariance, and
DDIM inversion against its closed-form per-direction multiplier."""

import math

import numpy as np
import pytest

import refdiff

RNG = np.random.default_rng(4)
D = 3


def _cov():
    A = RNG.standard_normal((D, D))
    return A @ A.T / D + 0.3 * np.eye(D)


MA, MB, CA, CB = RNG.standard_normal(D), RNG.standard_normal(D), _cov(), _cov()
A, B = refdiff.GaussianData(MA, CA), refdiff.GaussianData(MB, CB)
VP = refdiff.LinearVP(0.1, 100.0, t_min=1e-10)  # lambda from -25 to 12.7: the end errors are ~1e-11
X = A.sample(4, np.random.default_rng(0))


def test_whitening_colouring_pushes_a_to_b():
    """MATH.md (17.10): the map takes N(mu_A, Sigma_A) to N(mu_B, Sigma_B) exactly (linear algebra), and is the identity for A = B."""
    M = refdiff.whitening_colouring(np.eye(D) + MA, MA, CA, MB, CB) - MB  # rows: the map's columns
    T = M.T
    np.testing.assert_allclose(T @ CA @ T.T, CB, atol=1e-12)
    np.testing.assert_allclose(refdiff.whitening_colouring(X, MA, CA, MA, CA), X, atol=1e-12)


def test_ddib_equals_whitening_colouring_to_1e8_with_order_four():
    """MATH.md (17.9), (17.10): DDIB (RK4 on the lambda-clock PF-ODE, n steps each way) equals mu_B + Sigma_B^1/2 Sigma_A^-1/2
    (x - mu_A) to 1e-8 at n = 800 (2.3e-9); the error falls at order 4 (fitted slope in [3.5, 5] between n = 100 and 800;
    measured 4.4, 4.3, 4.2 per doubling)."""
    want = refdiff.whitening_colouring(X, MA, CA, MB, CB)
    errs = {}
    for n in (100, 800):
        got = refdiff.translate(A.as_model(VP), B.as_model(VP), X, VP, n)
        errs[n] = np.abs(got - want).max()
    assert errs[800] < 1e-8
    slope = math.log(errs[100] / errs[800]) / math.log(8)
    assert 3.5 < slope < 5.0


def test_ddib_ddim_steps_are_first_order_and_prediction_type_does_not_matter():
    """MATH.md (17.9): the DDIM (exponential) step converges at order 1; RK4 with eps, x0 or v oracles gives the same map to 1e-12."""
    want = refdiff.whitening_colouring(X, MA, CA, MB, CB)
    e = [np.abs(refdiff.translate(A.as_model(VP), B.as_model(VP), X, VP, n, method="ddim") - want).max() for n in (100, 400)]
    assert 0.8 < math.log(e[0] / e[1]) / math.log(4) < 1.2
    outs = [refdiff.translate(A.as_model(VP, p), B.as_model(VP, p), X, VP, 60, prediction_type=p)
            for p in ("epsilon", "sample", "v_prediction")]
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-12)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-12)


def test_ode_invert_then_generate_is_the_identity():
    """MATH.md (17.9): inverting and regenerating with the same model returns the input (RK4, 400 steps: 1e-7)."""
    z = refdiff.ode_invert(A.as_model(VP), X, VP, 400)
    np.testing.assert_allclose(refdiff.ode_generate(A.as_model(VP), z, VP, 400), X, rtol=0, atol=1e-7)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddim_inversion_closed_form_multiplier_every_prediction_type(prediction_type):
    """DDIM inversion with the model read at the time it is evaluated multiplies each eigen-coordinate by
    m = a'/a + (s' - a' s / a) s' / (a'^2 d + s'^2) per step (capabilities.md 2.2), whatever the prediction type."""
    sch = refdiff.make_schedule("linear", 1000)
    d = 0.3
    g = refdiff.GaussianData(np.zeros(1), np.array([[d]]))
    ts = refdiff.timesteps(1000, 10, "trailing")
    z = refdiff.ddim_invert(g.as_model(sch, prediction_type), np.ones((1, 1)), sch, ts, prediction_type=prediction_type)
    ab = [1.0] + [float(sch.alpha_bars[t]) for t in ts[::-1]]
    y = 1.0
    for t0, t1 in zip(ab[:-1], ab[1:]):
        a, s, a1, s1 = math.sqrt(t0), math.sqrt(1 - t0), math.sqrt(t1), math.sqrt(1 - t1)
        y *= a1 / a + (s1 - a1 * s / a) * s1 / (a1 * a1 * d + s1 * s1)
    np.testing.assert_allclose(z[0, 0], y, rtol=1e-12)


def test_edit_by_inversion_reconstructs_at_first_order():
    """DDIM inversion then DDIM sampling with the same model returns the input with an error of first order in 1/n."""
    sch = refdiff.make_schedule("linear", 1000)
    m = A.as_model(sch)
    errs = [np.abs(refdiff.edit_by_inversion(m, m, X, sch, refdiff.timesteps(1000, n, "trailing")) - X).max()
            for n in (25, 100)]
    assert errs[1] < errs[0] and 0.7 < math.log(errs[0] / errs[1]) / math.log(4) < 1.3


def test_bad_inversion_arguments():
    """Steps < 1, an empty lambda range, an unknown method: clear errors."""
    m = A.as_model(VP)
    with pytest.raises(ValueError, match="n \\(steps\\)"):
        refdiff.ode_invert(m, X, VP, 0)
    with pytest.raises(ValueError, match="lam_range"):
        refdiff.ode_invert(m, X, VP, 5, lam_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="unknown method"):
        refdiff.ode_invert(m, X, VP, 5, method="euler")
