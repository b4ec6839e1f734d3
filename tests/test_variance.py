"""One reverse-process variance and one learned-variance model contract for the ELBO and
for sampling (refdiff.variance; MATH.md (5.6), (5.7), (8.3))."""

import math

import numpy as np
import pytest

import refdiff
import refdiff.elbo
import refdiff.samplers.ddpm
from refdiff.variance import VARIANCE_TYPES, model_output_shape, reverse_log_variance, split_learned

M, NU = np.array([0.4, -0.8]), np.array([0.3, 1.7])


def _exact_learned_model(s):
    """Gaussian data N(M, diag NU): prediction E[x0 | x_t] and the exact reverse log
    variance log(beta_t P / S) (MATH.md (6.16), derived independently of the library's
    variance code), concatenated along axis 1."""
    data = refdiff.GaussianData(M, NU)
    x0_model = data.as_model(s, "sample")
    P = s.alpha_bars_prev[:, None] * NU + 1.0 - s.alpha_bars_prev[:, None]
    S = s.alpha_bars[:, None] * NU + 1.0 - s.alpha_bars[:, None]
    log_v = np.log(s.betas[:, None] * P / S)  # (T, D)
    return data, lambda x, t: np.concatenate([x0_model(x, t), log_v[np.asarray(t)]], axis=1)


def test_one_definition():
    """One VARIANCE_TYPES (with 'learned') and one variance function, imported everywhere."""
    assert refdiff.VARIANCE_TYPES is VARIANCE_TYPES is refdiff.elbo.VARIANCE_TYPES
    assert refdiff.samplers.ddpm.VARIANCE_TYPES is VARIANCE_TYPES
    assert "learned" in VARIANCE_TYPES
    assert refdiff.ddpm_log_variance is reverse_log_variance is refdiff.reverse_log_variance


def test_one_learned_model_through_sample_and_nll_bound():
    """MATH.md (5.7), (8.3): the same learned-variance callable (prediction and log variance
    concatenated) goes through refdiff.sample (DDPM, full grid) and refdiff.nll_bound
    unchanged.  With the exact reverse kernels of Gaussian data started from the exact
    q(x_T) (T = 60 is short: alpha_bar_T = 0.55), the samples have the data's
    mean and variance (within 4 standard errors, N = 4000) and the bound's mean is within 4
    standard errors of H(q0) + KL(q(x_T) || N(0, I)) (MATH.md (5.18))."""
    s = refdiff.make_schedule("linear", 60)
    data, model = _exact_learned_model(s)
    rng = np.random.default_rng(0)
    ab = s.alpha_bars[-1]
    vT = ab * NU + 1 - ab
    xT = math.sqrt(ab) * M + np.sqrt(vT) * rng.standard_normal((4000, 2))  # x_T ~ q(x_T) exactly
    x = refdiff.sample(model, xT, s, np.arange(59, -1, -1), "ddpm", variance_type="learned",
                       prediction_type="sample", rng=rng, progress=False)
    se_mean = np.sqrt(NU / x.shape[0])
    assert np.all(np.abs(x.mean(axis=0) - M) < 4 * se_mean)
    assert np.all(np.abs(x.var(axis=0) - NU) < 4 * NU * math.sqrt(2 / x.shape[0]))
    x0 = data.sample(4000, rng)
    r = refdiff.nll_bound(model, s, x0, rng=rng, prediction_type="sample", variance_type="learned", decoder="gaussian")
    ref = np.sum(0.5 * np.log(2 * np.pi * np.e * NU)) + np.sum(0.5 * (vT + ab * M**2 - 1 - np.log(vT)))
    tot = np.asarray(r.total_nats)
    assert abs(tot.mean() - ref) < 4 * tot.std() / math.sqrt(tot.size)


def test_contract_shapes_and_errors():
    """Axis 1 doubles for learned types only; a fixed-variance output is passed through."""
    x = np.zeros((3, 2, 4, 4))
    assert model_output_shape(x.shape, "learned_range") == (3, 4, 4, 4)
    assert model_output_shape(x.shape, "fixed_large") == (3, 2, 4, 4)
    out = np.arange(3 * 4 * 16, dtype=float).reshape(3, 4, 4, 4)
    pred, v = split_learned(out, x, "learned")
    assert np.array_equal(np.concatenate([pred, v], axis=1), out)
    assert split_learned(x, x, "fixed_small")[1] is None
    with pytest.raises(ValueError, match="variance_type = 'small'"):
        model_output_shape(x.shape, "small")
    with pytest.raises(ValueError, match=r"shape \(3, 2, 4, 4\)"):
        split_learned(x, x, "learned_range")
