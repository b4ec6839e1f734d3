"""Outpainting (refdiff/editing/outpaint.py): the chained law of sliding-window outpainting
against sampling, the seam error's positive and negative controls, the padded canvas."""

import numpy as np
import pytest

import refdiff
from refdiff.moments import gaussian_kl


def test_sliding_windows_markov_field_has_no_seam_error_se_field_has():
    """MATH.md (17.11): a separable exponential field is Markov across columns, so chaining windows that keep >= 1 column is exact
    (KL 0); a squared-exponential field is not (KL > 0, falling as the windows keep more columns)."""
    h, width, w0 = 4, 12, 4
    S = refdiff.stationary_field_cov(h, width, "exp", 2.0, nugget=0.0)
    for keep in (1, 2, 3):
        m, C = refdiff.chained_field_moments(np.zeros((h, width)), S, h, width, w0, keep + 4, 4)
        assert gaussian_kl(m, C, np.zeros(h * width), S) < 1e-8
    S = refdiff.stationary_field_cov(h, width, "se", 2.0, nugget=1e-4)
    kls = []
    for keep in (1, 2, 3):
        m, C = refdiff.chained_field_moments(np.zeros((h, width)), S, h, width, w0, keep + 4, 4)
        kls.append(gaussian_kl(m, C, np.zeros(h * width), S))
    assert kls[0] > kls[1] > kls[2] > 0.1


def test_outpaint_strip_samples_have_the_chained_law():
    """MATH.md (17.11): 20 000 strips grown by exact-conditional windows: mean and covariance within 4 standard errors of the
    chained law computed by linear algebra."""
    h, width, w0, window, step = 2, 7, 3, 4, 2
    S = refdiff.stationary_field_cov(h, width, "se", 1.5, nugget=1e-2)
    Sw = refdiff.stationary_field_cov(h, window, "se", 1.5, nugget=1e-2)
    rng = np.random.default_rng(0)
    n = 20000
    idx = np.arange(h * width).reshape(h, width)[:, :w0].reshape(-1)
    start = (rng.standard_normal((n, idx.size)) @ np.linalg.cholesky(S[np.ix_(idx, idx)]).T).reshape(n, 1, h, w0)
    x = refdiff.outpaint_strip(refdiff.gaussian_window_fill(np.zeros(h * window), Sw, rng), start, width, window, step)
    m, C = refdiff.chained_field_moments(np.zeros((h, width)), S, h, width, w0, window, step)
    xf = x.reshape(n, -1)
    assert np.all(np.abs(xf.mean(0) - m.reshape(-1)) <= 4 * np.sqrt(np.diag(C) / n))
    d = xf - m.reshape(-1)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / n)
    assert np.all(np.abs(d.T @ d / n - C) <= 4 * se)


def test_outpaint_padded_canvas_keeps_the_input():
    """MATH.md (17.5): outpainting is inpainting on the padded canvas: the input is kept exactly, the border generated."""
    S = refdiff.stationary_field_cov(3, 4, "se", 1.5, 1e-2)
    g = refdiff.GaussianData(np.zeros((1, 3, 4)), S)
    sch = refdiff.make_schedule("linear", 1000)
    x = np.random.default_rng(1).standard_normal((5, 1, 3, 2))
    out = refdiff.outpaint(g.as_model(sch), x, (0, 0, 1, 1), sch, refdiff.timesteps(1000, 20), "ddim",
                           rng=np.random.default_rng(2))
    assert out.shape == (5, 1, 3, 4)
    np.testing.assert_array_equal(out[..., 1:3], x)
    canvas, mask = refdiff.pad_canvas(x, (1, 0, 0, 2))
    assert canvas.shape == (5, 1, 4, 4) and mask.sum() == 16 - 6 and np.all(canvas[:, :, 1:, :2] == x)


def test_bad_outpaint_arguments():
    """A negative or empty pad, a window that keeps more columns than exist, a width off the step: clear errors."""
    x = np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match="non-negative"):
        refdiff.pad_canvas(x, (0, 0, -1, 1))
    with pytest.raises(ValueError, match="nothing to generate"):
        refdiff.pad_canvas(x, (0, 0, 0, 0))
    fill = lambda xk, m: xk  # noqa: E731
    with pytest.raises(ValueError, match="window - step"):
        refdiff.outpaint_strip(fill, x, 6, 5, 1)
    with pytest.raises(ValueError, match="multiple of step"):
        refdiff.outpaint_strip(fill, x, 5, 3, 2)
