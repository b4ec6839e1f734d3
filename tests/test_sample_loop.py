"""refdiff.sample: dispatch, noise, callbacks, bad input; and every S1 sampler's samples
against an exact 2-D Gaussian mixture (moments, component weights, KS on projections)."""

import math

import numpy as np
import pytest
from scipy import stats

import refdiff
from refdiff.samplers.loop import sampler_methods
from tests._support import assert_close, asx

MIX = refdiff.GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [0.25, 0.5])
SCHED = refdiff.make_schedule("linear", 1000)
MINE = ["ddpm", "ddim", "euler", "euler_ancestral", "heun", "edm", "dpm_2", "lms"]


def _rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def test_registry_has_every_family_method():
    """The union of the family METHODS dicts holds every method of this module's samplers
    (and the other families' once they land)."""
    methods = sampler_methods()
    assert set(MINE) <= set(methods)
    assert all(callable(f) for f in methods.values())


# ------------------------------------------------------------------------- mixture checks
# method -> (steps, options).  Steps chosen so the discretisation bias is well below the
# Monte Carlo error at N = 2000 (checked by the moment tolerances below).
CASES = {
    "ddpm": (250, {}), "ddim": (50, {}), "euler": (50, {}), "euler_ancestral": (250, {}), "heun": (25, {}),
    "edm": (25, {"s_churn": 10.0}), "dpm_2": (25, {}), "lms": (50, {"order": 3}),
    "ddim_eta": (100, {"eta": 0.5}),
}


def _mixture_projection_cdf(u):
    """CDF of u . x_0 under the mixture: sum_k w_k Phi((s - u.mu_k) / sqrt(u^T Sigma_k u))."""
    mus, covs, w = np.asarray(MIX.means), np.asarray(MIX.covs), np.asarray(MIX.weights)
    m = mus @ u
    sd = np.sqrt(np.einsum("i,kij,j->k", u, covs, u))
    return lambda s: (w * stats.norm.cdf((np.asarray(s)[..., None] - m) / sd)).sum(-1)


@pytest.mark.parametrize("case", list(CASES))
def test_samples_match_mixture(case):
    """MATH.md (8.1), (8.2), (8.3), (8.4), (8.5), (8.6), (8.7), (8.8), (9.2), (9.3),
    (9.4), (9.5), (9.6), (9.7) and (9.8): N = 2000 samples at a fixed seed from x_T ~ N(0, I)
    at t = T - 1 of the linear schedule, exact mixture eps model.  Checks: the mean within
    4 standard errors (sqrt(var / N)) of the mixture mean; the variances within 15 %
    (4 SE of a variance is ~13 %); the component weights via the mean class posterior at
    t = 0 (E[p(k | x_0)] = w_k exactly) within 4 binomial SE; KS tests of the projections on
    3 random directions against the exact projected CDF, p > 1e-3 each."""
    method = case.split("_eta")[0] if case == "ddim_eta" else case
    n_steps, opts = CASES[case]
    N = 2000
    x_T = _rand((N, 2), 0)
    out = refdiff.sample(MIX.as_model(SCHED), x_T, SCHED, refdiff.timesteps(1000, n_steps, "linspace"), method,
                         rng=np.random.default_rng(1), progress=False, **opts)
    mus, covs, w = np.asarray(MIX.means), np.asarray(MIX.covs), np.asarray(MIX.weights)
    mean = w @ mus
    cov = sum(wk * (ck + np.outer(mk - mean, mk - mean)) for wk, mk, ck in zip(w, mus, covs))
    se = np.sqrt(np.diag(cov) / N)
    assert np.all(np.abs(out.mean(0) - mean) < 4 * se), (out.mean(0), mean)
    np.testing.assert_allclose(np.var(out, axis=0), np.diag(cov), rtol=0.15)
    post = np.exp(MIX.log_class_posterior(out, 1.0, 0.0)).mean(0)
    assert np.all(np.abs(post - w) < 4 * np.sqrt(w * (1 - w) / N)), (post, w)
    for u in np.random.default_rng(7).standard_normal((3, 2)):
        u = u / np.linalg.norm(u)
        p = stats.kstest(out @ u, _mixture_projection_cdf(u)).pvalue
        assert p > 1e-3, (u, p)


# ------------------------------------------------------------------------- noise, callbacks
def test_noise_reproducible_across_namespaces(xp):
    """Noise is drawn on the host from rng: the same seed gives the same samples in NumPy
    and array_api_strict, in the input's namespace, for every S1 method (and Euler ancestral
    in the strict namespace equals DDPM in NumPy, MATH.md (9.4))."""
    s = refdiff.make_schedule("linear", 100)
    x = _rand((3, 2), 0)
    ref = refdiff.sample(MIX.as_model(s), x, s, refdiff.timesteps(100, 10), "ddpm", rng=np.random.default_rng(4),
                         progress=False)
    got = refdiff.sample(MIX.as_model(s), asx(xp, x), s, refdiff.timesteps(100, 10), "euler_ancestral",
                         rng=np.random.default_rng(4), progress=False)
    assert_close(got, ref, xp=xp, rtol=1e-11, atol=1e-11)
    for method in MINE:
        opts = {"s_churn": 5.0} if method == "edm" else {}
        ref = refdiff.sample(MIX.as_model(s), x, s, refdiff.timesteps(100, 6), method, rng=np.random.default_rng(4),
                             progress=False, **opts)
        got = refdiff.sample(MIX.as_model(s), asx(xp, x), s, refdiff.timesteps(100, 6), method,
                             rng=np.random.default_rng(4), progress=False, **opts)
        assert_close(got, ref, xp=xp, rtol=1e-12, atol=1e-12, err_msg=method)


def test_callback_and_progress(capsys):
    """callback(i, t, x, x0_hat) is called once per step in order with the step's model time;
    the tqdm progress bar (on by default) does not change the result."""
    s = refdiff.make_schedule("linear", 100)
    ts = refdiff.timesteps(100, 7)
    seen = []
    x = _rand((2, 2), 0)
    a = refdiff.sample(MIX.as_model(s), x, s, ts, "heun", callback=lambda i, t, xx, x0: seen.append((i, t)))
    assert seen == [(i, int(t)) for i, t in enumerate(ts)]
    np.testing.assert_array_equal(a, refdiff.sample(MIX.as_model(s), x, s, ts, "heun", progress=False))


# ------------------------------------------------------------------------- bad input
def test_bad_input():
    """Unknown method (lists the valid ones), grids not strictly decreasing or out of range,
    steps < 1, eta < 0, unknown options, missing rng for stochastic methods: clear errors."""
    m, x = MIX.as_model(SCHED), np.zeros((2, 2))
    ts = refdiff.timesteps(1000, 5)
    with pytest.raises(ValueError, match="unknown method 'dddim'.*ddim.*euler"):
        refdiff.sample(m, x, SCHED, ts, "dddim", progress=False)
    with pytest.raises(ValueError, match="strictly decreasing"):
        refdiff.sample(m, x, SCHED, np.array([10, 20, 5]), "ddim", progress=False)
    with pytest.raises(ValueError, match="strictly decreasing"):
        refdiff.sample(m, x, SCHED, np.array([20, 20, 5]), "euler", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        refdiff.sample(m, x, SCHED, np.array([1000, 5]), "ddpm", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        refdiff.sample(m, x, SCHED, np.array([5, -1]), "ddim", progress=False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        refdiff.sample(m, x, SCHED, np.array([], dtype=np.int64), "ddim", progress=False)
    vp = refdiff.LinearVP()
    with pytest.raises(ValueError, match="steps must be >= 1"):
        refdiff.sample(MIX.as_model(vp), x, vp, np.array([1.0]), "ddim", progress=False)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        refdiff.sample(MIX.as_model(vp), x, vp, np.array([1.5, 0.5]), "ddim", progress=False)
    with pytest.raises(TypeError, match="integers"):
        refdiff.sample(m, x, SCHED, np.array([5.0, 1.0]), "ddim", progress=False)
    for method in ("ddim", "euler_ancestral"):
        with pytest.raises(ValueError, match="eta"):
            refdiff.sample(m, x, SCHED, ts, method, eta=-0.5, rng=np.random.default_rng(0), progress=False)
    with pytest.raises(TypeError, match="unknown option"):
        refdiff.sample(m, x, SCHED, ts, "ddim", etaa=0.5, progress=False)
    for method in ("ddpm", "euler_ancestral", "edm"):
        with pytest.raises(TypeError, match=method):
            refdiff.sample(m, x, SCHED, ts, method, progress=False, **({"s_churn": 1.0} if method == "edm" else {}))
    with pytest.raises(TypeError, match="Generator"):
        refdiff.sample(m, x, SCHED, ts, "ddpm", rng=0.5, progress=False)
    with pytest.raises(ValueError, match="prediction_type"):
        refdiff.sample(m, x, SCHED, ts, "ddim", prediction_type="eps", progress=False)


@pytest.mark.parametrize("method", MINE)
def test_bad_model_output_names_the_step(method):
    """A model returning the wrong shape raises ValueError, and one returning NaN from some
    step on raises FloatingPointError; both messages name the step."""
    s = refdiff.make_schedule("linear", 100)
    ts = refdiff.timesteps(100, 10, "leading")
    good = MIX.as_model(s)
    x = _rand((3, 2), 0)
    opts = {"rng": np.random.default_rng(0), "progress": False}
    with pytest.raises(ValueError, match="step 0"):
        refdiff.sample(lambda xx, t: xx[:, :1], x, s, ts, method, **opts)

    def nan_late(xx, t):
        out = good(xx, t)
        return out * math.nan if float(t[0]) < 35 else out

    # timesteps 90, 80, ..., 0: the first call with t < 35 is the call at timestep 30 (step 6);
    # Heun/DPM-2/EDM make their second call of step 5 at the next grid point, 30
    first_bad = 5 if method in ("heun", "dpm_2", "edm") else 6
    with pytest.raises(FloatingPointError, match=f"step {first_bad}"):
        refdiff.sample(nan_late, x, s, ts, method, **opts)


def test_sample_runs_flow_velocity_models():
    """A rectified-flow velocity model (the exact Gaussian-data velocity, MATH.md (4.7)) goes
    through refdiff.sample with schedule=None and gives exactly what the flow loop gives when
    called directly; velocity with a non-flow method, or with a schedule, is refused."""
    import refdiff
    from refdiff.samplers.flow import METHODS as FLOW

    data = refdiff.GaussianData(np.array([0.5, -1.0]), np.array([0.3, 0.1]))

    def u(x, t):  # exact velocity of the t0_data rectified-flow path: alpha = 1 - t, sigma = t
        tt = float(t[0])
        return data.velocity(x, 1.0 - tt, tt, -1.0, 1.0)

    xT = np.random.default_rng(0).standard_normal((8, 2))
    ts = np.linspace(1.0, 1e-3, 21)
    a = refdiff.sample(u, xT, None, ts, "flow_rk4", prediction_type="velocity", progress=False)
    b = FLOW["flow_rk4"](u, xT, None, ts, prediction_type="velocity")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="needs a flow method"):
        refdiff.sample(u, xT, None, ts, "ddim", prediction_type="velocity")
    with pytest.raises(TypeError, match="schedule=None"):
        refdiff.sample(u, xT, refdiff.make_schedule("linear", 10), ts, "flow_euler", prediction_type="velocity")
