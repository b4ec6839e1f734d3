"""The samplers' common contract (refdiff/samplers/common.py): one grid, one validator,
the VP <-> sigma <-> flow maps, and the hooks with one meaning in every family."""

import math

import numpy as np
import pytest

import refdiff
from refdiff.samplers.common import (ZERO, Grid, end_step, flow_time, from_vp, make_grid, point_at_sigma, to_vp,
                                     ve_sigma, vp_from_flow_time, vp_from_ve_sigma)
from refdiff.samplers.loop import sampler_methods

GAUSS = refdiff.GaussianData(np.array([0.5, -1.0]), np.array([0.3, 0.1]))
SCHED = refdiff.make_schedule("linear", 200)
TS = refdiff.timesteps(200, 8, "trailing")
METHODS = sorted(sampler_methods())


def _noise(seed=0):
    rng = np.random.default_rng(seed)
    return lambda like: rng.standard_normal(like.shape)


def _x(seed=1, n=5):
    return np.random.default_rng(seed).standard_normal((n, 2))


def _velocity(x, t):  # exact rectified-flow velocity of GAUSS, t = 0 data
    tt = float(t[0])
    return GAUSS.velocity(x, 1.0 - tt, tt, -1.0, 1.0)


# ----------------------------------------------------------------------------- coordinate maps
def test_coordinate_maps_keep_x0_and_eps():
    """MATH.md (9.1), (11.10): a state x0 + s eps (sigma space) and (1 - u) x0 + u eps (flow)
    map to the VP state alpha x0 + sigma eps of the same SNR, and back."""
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 4, 3))
    for s in (0.01, 0.7, 80.0):
        a, sg = vp_from_ve_sigma(s)
        assert math.isclose(a * a + sg * sg, 1.0, rel_tol=1e-15) and math.isclose(ve_sigma(a, sg), s, rel_tol=1e-15)
        np.testing.assert_allclose(to_vp(x0 + s * eps, 1.0, s), a * x0 + sg * eps, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(from_vp(a * x0 + sg * eps, 1.0, s), x0 + s * eps, rtol=1e-13, atol=1e-13)
    for u in (0.02, 0.5, 0.97):
        a, sg = vp_from_flow_time(u)
        assert math.isclose(flow_time(a, sg), u, rel_tol=1e-14)
        np.testing.assert_allclose(to_vp((1 - u) * x0 + u * eps, 1 - u, u), a * x0 + sg * eps, rtol=1e-13, atol=1e-15)


def test_sigma_grid_points():
    """MATH.md (9.9): each point of a Karras sigma grid has alpha^2 + sigma^2 = 1 and
    sigma / alpha = the level; with interpolation 'log_alpha' its model time gives the same
    level back through (2.15); a final 0 is the data end ZERO."""
    sig = refdiff.karras_sigmas(10, float(SCHED.sigmas[0]), float(SCHED.sigmas[-1]), append_zero=True)
    grid = make_grid(SCHED, None, sigmas=sig)
    assert len(grid) == 11 and grid[-1] == ZERO
    for p, s in zip(grid[:-1], sig[:-1]):
        assert math.isclose(p.alpha**2 + p.sigma**2, 1.0, rel_tol=1e-14)
        assert math.isclose(p.sigma / p.alpha, s, rel_tol=1e-14)
        a, sg = refdiff.alpha_sigma(SCHED, p.t, np.zeros(1))
        assert math.isclose(float(np.reshape(sg / a, -1)[0]), s, rel_tol=1e-9)
    r = point_at_sigma(SCHED, float(SCHED.sigmas[57]), "log_sigma_round")
    assert r.t == 57 and isinstance(r.t, int)


# ----------------------------------------------------------------------------- the validator
BAD = [
    (np.array([10, 50, 5]), {}, ValueError, "strictly decreasing"),
    (np.array([200, 5]), {}, ValueError, "out of range"),
    (np.array([], dtype=np.int64), {}, ValueError, "steps"),
    (None, {"sigmas": [5.0, -1.0]}, ValueError, "sigmas must be >= 0"),
    (None, {"sigmas": [5.0, np.nan, 0.0]}, ValueError, "sigmas must be finite"),
    (None, {"sigmas": [1.0, 2.0, 0.0]}, ValueError, "sigmas must be strictly decreasing"),
    (np.array([[5, 2]]), {}, ValueError, "timesteps must be a 1-D"),
]


@pytest.mark.parametrize("method", METHODS)
def test_bad_grid_direct_and_through_sample(method):
    """A grid that is not decreasing, out of range, empty, a sigma grid with negative or NaN
    values, a 2-D grid: ValueError naming the argument, from the loop called directly and
    through refdiff.sample (one validator, make_grid)."""
    loop = sampler_methods()[method]
    m, x = GAUSS.as_model(SCHED), _x()
    for ts, opts, exc, msg in BAD:
        with pytest.raises(exc, match=msg):
            loop(m, x, SCHED, ts, noise=_noise(), prediction_type="epsilon", **opts)
        with pytest.raises(exc, match=msg):
            refdiff.sample(m, x, SCHED, ts, method, rng=np.random.default_rng(0), progress=False, **opts)
    vp = refdiff.LinearVP()
    with pytest.raises(ValueError, match=r"timesteps must lie in \(0, 1\]"):
        loop(GAUSS.as_model(vp), x, vp, np.array([1.0, 0.5, 0.0]), noise=_noise(), prediction_type="epsilon")


# ----------------------------------------------------------------------------- hooks
def _run(method, **kw):
    x = _x()
    if kw.pop("velocity", False):
        return sampler_methods()[method](_velocity, x, None, np.linspace(1.0, 0.0, 9), prediction_type="velocity",
                                         **kw)
    return sampler_methods()[method](GAUSS.as_model(SCHED), x, SCHED, TS, noise=_noise(), prediction_type="epsilon",
                                     **kw)


@pytest.mark.parametrize("method, velocity", [(m, False) for m in METHODS]
                         + [(m, True) for m in METHODS if m.startswith("flow_")])
def test_state_hook_that_resets_x_gives_that_array(method, velocity):
    """The state hook project(i, t, x) -> x acts after every step in VP coordinates: one that
    returns a fixed array c makes every family return c (to the round-off of the loops'
    conversions to sigma or flow coordinates and back), and each call sees a VP state of x's
    shape."""
    c = np.random.default_rng(5).standard_normal((5, 2))
    seen = []

    def project(i, t, x):
        seen.append((i, x.shape))
        return c

    out = _run(method, project=project, velocity=velocity)
    np.testing.assert_allclose(out, c, rtol=1e-13, atol=1e-14)
    assert [s[0] for s in seen] == list(range(len(seen))) and all(s[1] == (5, 2) for s in seen)


@pytest.mark.parametrize("method", METHODS)
def test_hook_returning_wrong_shape_is_an_error(method):
    """A state hook returning another shape (or not an array) raises ValueError naming
    'project' and the step, directly and through refdiff.sample; a hook that is not callable
    raises TypeError."""
    with pytest.raises(ValueError, match=r"project returned shape \(5, 1\) at step 0"):
        _run(method, project=lambda i, t, x: x[:, :1])
    with pytest.raises(ValueError, match="project returned shape list at step 0"):
        _run(method, project=lambda i, t, x: [0.0])
    with pytest.raises(TypeError, match="project must be callable"):
        _run(method, project=3)
    with pytest.raises(ValueError, match=r"project returned shape \(2, 2\) at step 0"):
        refdiff.sample(GAUSS.as_model(SCHED), _x(), SCHED, TS, method, rng=np.random.default_rng(0), progress=False,
                       project=lambda i, t, x: x[:2])


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("pc", "edm")])
def test_callback_x_and_x0_hat_mean_the_same_in_every_family(method):
    """MATH.md (4.2): in every family callback(i, t, x, x0_hat) gets the VP state after step i
    and the exact model's x0_hat at the state before the step (the previous callback's x, or
    x_T) and the step's start point.  (pc and edm excluded: their first evaluation is at a
    corrected / churned state, as documented.)"""
    grid = make_grid(SCHED, TS)
    states, rows = [_x()], []
    out = _run(method, callback=lambda i, t, x, x0: (rows.append((i, t, x0)), states.append(x)))
    np.testing.assert_array_equal(states[-1], out) if not method.startswith("flow") else \
        np.testing.assert_allclose(states[-1], out, rtol=1e-13, atol=1e-14)
    assert [r[0] for r in rows] == list(range(len(grid) - 1))
    for (i, t, x0), x_before, p in zip(rows, states, grid):
        assert t == p.t
        np.testing.assert_allclose(x0, GAUSS.x0_mean(x_before, p.alpha, p.sigma), rtol=1e-10, atol=1e-12)


def test_end_step_converts_sigma_space_states():
    """end_step with path (1, s): the hooks see x / sqrt(1 + s^2) and a projected VP state
    comes back as x_vp sqrt(1 + s^2)."""
    x, s = np.ones((2, 2)), 3.0
    got = []
    y = end_step(0, 5, x, None, lambda i, t, xv, x0: got.append(xv), lambda i, t, xv: 2 * xv, path=(1.0, s))
    np.testing.assert_allclose(got[0], 2 * x / math.sqrt(10.0), rtol=1e-15)
    np.testing.assert_allclose(y, 2 * x, rtol=1e-15)


def test_grid_passes_through():
    """A ready Grid is used as it is by every loop (refdiff.sample builds one and passes it)."""
    g = make_grid(SCHED, TS)
    assert isinstance(g, Grid) and make_grid(SCHED, g) is g
    a = refdiff.sample(GAUSS.as_model(SCHED), _x(), SCHED, g, "dpmpp_2m", progress=False)
    b = refdiff.sample(GAUSS.as_model(SCHED), _x(), SCHED, TS, "dpmpp_2m", progress=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_sigmas_grid_for_every_method(method):
    """MATH.md (9.9): every method accepts sigmas= (through refdiff.sample): the schedule's own
    levels at the timesteps plus 0 reproduce the timestep run (model times from the exact
    inverse of (2.15), so the model sees the same (alpha, sigma) to ~1e-12; same noise draws)."""
    m, x = GAUSS.as_model(SCHED), _x()
    sig = np.append(SCHED.sigmas[TS], 0.0)
    opts = {"progress": False, "prediction_type": "epsilon"}
    a = refdiff.sample(m, x, SCHED, TS, method, rng=np.random.default_rng(0), **opts)
    b = refdiff.sample(m, x, SCHED, None, method, rng=np.random.default_rng(0), sigmas=sig, **opts)
    np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-8)


def test_dpmpp_2m_karras_converges_to_the_exact_map():
    """MATH.md (10.12), (2.10): "DPM++ 2M Karras" through refdiff.sample with
    sigmas=karras_sigmas(...) lands within 2e-2 (RMS; measured 0.014) of the exact ODE map's x0_hat at 25 steps
    and more than 3x closer at 50 (measured 4.5x: second order)."""
    s = refdiff.make_schedule("linear", 1000)
    m, x = GAUSS.as_model(s), _x(n=64)
    lo, hi = float(s.sigmas[0]), float(s.sigmas[-1])
    a1, s1 = float(s.sqrt_alpha_bars[0]), float(s.sqrt_one_minus_alpha_bars[0])
    aT, sT = float(s.sqrt_alpha_bars[-1]), float(s.sqrt_one_minus_alpha_bars[-1])
    ref = GAUSS.x0_mean(GAUSS.ode_transport(x, aT, sT, a1, s1), a1, s1)
    errs = []
    for n in (25, 50):
        out = refdiff.sample(m, x, s, None, "dpmpp_2m", sigmas=refdiff.karras_sigmas(n, lo, hi, append_zero=True),
                             progress=False)
        errs.append(float(np.sqrt(np.mean((out - ref) ** 2))))
    assert errs[0] < 2e-2 and errs[1] < errs[0] / 3, errs
