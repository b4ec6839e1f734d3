"""Issue 19 (bad input refused clearly), the sampler area: the host noise helpers, the step
functions and the loops.  Each test states the finding it covers; each failed before its fix.

The expected behaviour is the policy of issue 19: an integer, boolean or float16 array where
floats are meant is refused with a TypeError naming the argument (never computed in integer
arithmetic); a loop checks its start state is finite; a grid is strictly decreasing, integer
(discrete schedule), non-empty; a combination that has no defined result (an x_0 prediction
at alpha = 0) is refused up front, saying why.
"""

import math
import re

import numpy as np
import pytest

import refdiff
from refdiff.backend import rademacher
from refdiff.samplers.loop import sampler_methods

T = 50
LINEAR = refdiff.make_schedule("linear", T)
ZTSNR = refdiff.make_schedule("linear", T, zero_terminal_snr=True)
GRID = refdiff.timesteps(T, 10)  # starts at T - 1
STOCHASTIC = ("ddpm", "pc", "dpmpp_2m_sde")


def _model(x, t):
    return 0.1 * x  # any finite model: the checks under test come before or around it


def _x(dtype=np.float64, shape=(2, 3)):
    return (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)


def _zero_noise(like):
    return np.zeros(like.shape, dtype=like.dtype)


def _raises(exc, names, fn):
    """``fn()`` raises ``exc`` whose message names every word of ``names``."""
    with pytest.raises(exc) as info:
        fn()
    for n in names:
        assert re.search(rf"\b{re.escape(n)}\b", str(info.value)), (n, str(info.value))
    return str(info.value)


# ----------------------------------------------------------------------------- finding 1
@pytest.mark.parametrize("draw", [refdiff.standard_normal, rademacher])
@pytest.mark.parametrize("like", [np.zeros(3, dtype=np.int64), np.zeros(3, dtype=bool), np.zeros(3, np.float16),
                                  np.zeros(3, np.complex128)])
def test_host_draws_refuse_a_non_float_like(draw, like):
    """issue 19 finding 1: ``standard_normal(rng, (3,), like=np.zeros(3, int))`` gave [0 0 0]
    (the draws cast to like's integer dtype).  A like whose dtype is not float32/float64 is
    refused with TypeError naming ``like``; an explicit float ``dtype`` overrides it."""
    msg = _raises(TypeError, ["like"], lambda: draw(0, (3,), like=like))
    assert str(like.dtype) in msg
    z = draw(0, (3,), like=like, dtype=np.float64)  # the documented override: like gives the namespace only
    np.testing.assert_array_equal(z, draw(0, (3,)))
    assert np.all(z != 0)


@pytest.mark.parametrize("draw", [refdiff.standard_normal, rademacher])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool, np.float16, "int64"])
def test_host_draws_refuse_a_non_float_dtype(draw, dtype):
    """issue 19 finding 1: ``dtype`` must be float32 or float64 (TypeError naming ``dtype``);
    the float32 draws are the float64 draws rounded (the documented rule)."""
    _raises(TypeError, ["dtype"], lambda: draw(0, (3,), dtype=dtype))
    _raises(TypeError, ["dtype"], lambda: draw(0, (3,), like=np.zeros(3), dtype=dtype))
    np.testing.assert_array_equal(draw(0, (4,), dtype=np.float32), draw(0, (4,)).astype(np.float32))


@pytest.mark.parametrize("draw", [refdiff.standard_normal, rademacher])
def test_host_draws_refuse_bad_like_and_shape(draw):
    """issue 19 finding 1: ``like`` must be an array; ``shape`` a tuple of ints >= 0."""
    _raises(TypeError, ["like"], lambda: draw(0, (3,), like=[0.0, 0.0, 0.0]))
    _raises(TypeError, ["shape"], lambda: draw(0, (3.5,)))
    _raises(TypeError, ["shape"], lambda: draw(0, None))
    _raises(ValueError, ["shape"], lambda: draw(0, (2, -1)))


@pytest.mark.parametrize("method", STOCHASTIC)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_stochastic_samplers_refuse_an_integer_x_T(method, dtype):
    """issue 19 finding 1: an integer (or boolean) x_T made ddpm, pc and dpmpp_2m_sde draw
    integer noise (zeros) and return a different sample with no error.  refdiff.sample
    refuses it naming ``x_T``; the loop called directly refuses it naming ``x``.  The same
    values as floats sample to a finite result."""
    x_int = np.round(_x()).astype(dtype)
    _raises(TypeError, ["x_T", str(np.dtype(dtype))],
            lambda: refdiff.sample(_model, x_int, LINEAR, GRID, method, rng=0, progress=False))
    _raises(TypeError, ["x"], lambda: sampler_methods()[method](_model, x_int, LINEAR, GRID, noise=_zero_noise))
    out = refdiff.sample(_model, x_int.astype(np.float64), LINEAR, GRID, method, rng=0, progress=False)
    assert out.dtype == np.float64 and np.all(np.isfinite(out))


@pytest.mark.parametrize("method", sorted(sampler_methods()))
def test_every_loop_checks_its_start_state(method):
    """issue 19 finding 1 (the policy at every loop's entry): x must be a real floating array,
    finite, not a list; errors name ``x`` (or ``x_T`` through refdiff.sample)."""
    loop = sampler_methods()[method]
    flow = method.startswith("flow_")
    sch, grid, pt = (None, np.linspace(1.0, 0.0, 5), "velocity") if flow else (LINEAR, GRID, "epsilon")
    run = lambda x: loop(_model, x, sch, grid, prediction_type=pt, noise=_zero_noise)  # noqa: E731
    _raises(TypeError, ["x"], lambda: run(np.zeros((2, 3), dtype=np.int64)))
    _raises(TypeError, ["x", "float16"], lambda: run(np.zeros((2, 3), dtype=np.float16)))
    _raises(TypeError, ["x"], lambda: run(np.zeros((2, 3), dtype=np.complex128)))
    _raises(TypeError, ["x"], lambda: run([[0.0, 1.0]]))
    bad = _x()
    bad[1, 2] = np.nan
    _raises(ValueError, ["x"], lambda: run(bad))
    bad[1, 2] = np.inf
    _raises(ValueError, ["x_T"], lambda: refdiff.sample(_model, bad, sch, grid, method, prediction_type=pt,
                                                        rng=0, progress=False))


# ----------------------------------------------------------------------------- finding 2
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_refuses_integer_arrays(eta):
    """issue 19 finding 2: ``ddim_step`` with an integer x_t returned zeros (NaN with eta > 0),
    alpha_prev and sigma_prev being built in x_t's integer dtype.  Now TypeError naming the
    argument; the same values as floats give the DDIM update of MATH.md (8.7), checked here
    against the formula written out."""
    x = np.round(_x()).astype(np.int64)
    eps = _x()
    z = np.ones((2, 3))
    _raises(TypeError, ["x_t", "int64"], lambda: refdiff.ddim_step(LINEAR, eps, 30, 20, x, eta=eta, noise=z))
    _raises(TypeError, ["model_output"],
            lambda: refdiff.ddim_step(LINEAR, eps.astype(np.int64), 30, 20, x.astype(float), eta=eta, noise=z))
    _raises(TypeError, ["noise"],
            lambda: refdiff.ddim_step(LINEAR, eps, 30, 20, x.astype(float), eta=1.0, noise=z.astype(np.int64)))
    xf = x.astype(np.float64)
    a, s = math.sqrt(LINEAR.alpha_bars[30]), math.sqrt(1 - LINEAR.alpha_bars[30])
    ap, sp = math.sqrt(LINEAR.alpha_bars[20]), math.sqrt(1 - LINEAR.alpha_bars[20])
    c = eta * (sp / s) * math.sqrt(1 - a**2 / ap**2)  # (8.8)
    x0 = (xf - s * eps) / a
    expected = ap * x0 + math.sqrt(sp**2 - c**2) * eps + c * z
    np.testing.assert_allclose(refdiff.ddim_step(LINEAR, eps, 30, 20, xf, eta=eta, noise=z), expected, rtol=1e-12)


def test_ddpm_step_refuses_integer_arrays():
    """issue 19 finding 2 (the same class in the DDPM step): integer x_t, model_output or
    noise are refused with TypeError naming the argument."""
    x, eps, z = _x(), _x(), np.ones((2, 3))
    _raises(TypeError, ["x_t"], lambda: refdiff.ddpm_step(LINEAR, eps, 30, x.astype(np.int64), z))
    _raises(TypeError, ["model_output"], lambda: refdiff.ddpm_step(LINEAR, eps.astype(np.int64), 30, x, z))
    _raises(TypeError, ["noise"], lambda: refdiff.ddpm_step(LINEAR, eps, 30, x, z.astype(np.int64)))
    _raises(ValueError, ["model_output", "x_t"], lambda: refdiff.ddpm_step(LINEAR, eps[:1], 30, x, z))


# ----------------------------------------------------------------------------- finding 4
BAD_GRIDS = {
    "increasing": (np.array([5, 10, 20]), ValueError),
    "duplicate": (np.array([20, 10, 10, 0]), ValueError),
    "float": (np.array([20.0, 10.0, 0.0]), TypeError),
    "empty": (np.array([], dtype=np.int64), ValueError),
    "out of range": (np.array([T, 10, 0]), ValueError),
    "2-D": (np.array([[20, 10], [5, 0]]), ValueError),
}


@pytest.mark.parametrize("method", sorted(m for m in sampler_methods() if not m.startswith("flow_")))
@pytest.mark.parametrize("kind", sorted(BAD_GRIDS))
def test_every_loop_called_directly_refuses_a_bad_grid(method, kind):
    """issue 19 finding 4: every sampler loop called directly (not through refdiff.sample)
    refuses increasing, duplicate, float, empty, out-of-range and 2-D timestep grids of a
    discrete Schedule, with an error naming ``timesteps``; the valid grid samples."""
    loop = sampler_methods()[method]
    grid, exc = BAD_GRIDS[kind]
    _raises(exc, ["timesteps"], lambda: loop(_model, _x(), LINEAR, grid, noise=_zero_noise))
    assert np.all(np.isfinite(loop(_model, _x(), LINEAR, GRID, noise=_zero_noise)))


@pytest.mark.parametrize("method", sorted(m for m in sampler_methods() if not m.startswith("flow_")))
def test_every_loop_called_directly_refuses_a_bad_sigma_grid(method):
    """issue 19 finding 4: ``sigmas=`` grids too: increasing, duplicate, negative, NaN or a
    single level are refused naming ``sigmas``."""
    loop = sampler_methods()[method]
    for sig in ([0.0, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0], [1.0, -0.5, 0.0], [1.0, np.nan, 0.0], [1.0]):
        _raises(ValueError, ["sigmas"], lambda: loop(_model, _x(), LINEAR, None, sigmas=np.array(sig),
                                                    noise=_zero_noise))


@pytest.mark.parametrize("method", ["flow_euler", "flow_midpoint", "flow_rk4"])
def test_flow_loops_refuse_a_bad_grid(method):
    """issue 19 finding 4: the flow loops (schedule None) refuse increasing, duplicate,
    empty, out-of-[0, 1] and NaN time grids naming ``timesteps``."""
    loop = sampler_methods()[method]
    for g in ([0.0, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0], [], [1.5, 0.0], [1.0, np.nan, 0.0], [1.0]):
        _raises(ValueError, ["timesteps"], lambda: loop(_model, _x(), None, np.array(g, dtype=float),
                                                       prediction_type="velocity"))


@pytest.mark.parametrize("kind", sorted(BAD_GRIDS))
def test_ddim_invert_and_respace_refuse_a_bad_grid(kind):
    """issue 19 finding 4: ``ddim_invert`` (which walks the grid upwards) and ``respace``
    take the same decreasing integer grid and refuse the same bad ones naming ``timesteps``
    (ddim_invert silently truncated float times and returned x0 on an empty grid)."""
    grid, exc = BAD_GRIDS[kind]
    _raises(exc, ["timesteps"], lambda: refdiff.ddim_invert(_model, _x(), LINEAR, grid))
    _raises(exc, ["timesteps"], lambda: refdiff.respace(LINEAR, grid))


# ----------------------------------------------------------------------------- finding 6
@pytest.mark.parametrize("method", ["ddpm", "ddim", "lcm"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "score"])
@pytest.mark.parametrize("clip_sample", [False, True])
def test_zero_terminal_snr_with_eps_or_score_is_refused_saying_why(method, prediction_type, clip_sample):
    """issue 19 finding 6: with zero terminal SNR (alpha_bar_{T-1} = 0) an eps or score model
    gives no x_0 at t = T-1: x0_hat = (x - sigma eps_hat) / alpha divides by alpha = 0.
    DDPM/DDIM stopped at step 0 with a message that did not say why, and with
    clip_sample=True carried on with x0_hat = +-inf clipped to +-1.  Now refused before the
    first model call, naming the cause; v_prediction and sample models sample finitely."""
    calls = []

    def model(x, t):
        calls.append(t)
        return 0.1 * x

    opts = {"clip_sample": clip_sample} if method != "lcm" else {}
    if clip_sample and method == "lcm":
        pytest.skip("lcm has no clip_sample")
    msg = _raises(ValueError, ["prediction_type", "alpha"],
                  lambda: refdiff.sample(model, _x(), ZTSNR, GRID, method, prediction_type=prediction_type, rng=0,
                                         progress=False, **opts))
    assert "zero terminal SNR" in msg and str(T - 1) in msg
    assert calls == []
    for ok in ("v_prediction", "sample"):
        out = refdiff.sample(model, _x(), ZTSNR, GRID, method, prediction_type=ok, rng=0, progress=False, **opts)
        assert np.all(np.isfinite(out))
    start_below = refdiff.sample(model, _x(), ZTSNR, GRID[1:], method, prediction_type=prediction_type, rng=0,
                                 progress=False, **opts)
    assert np.all(np.isfinite(start_below))  # starting below T-1 is fine


@pytest.mark.parametrize("prediction_type", ["epsilon", "score"])
def test_zero_terminal_snr_steps_refuse_eps_at_alpha_zero(prediction_type):
    """issue 19 finding 6: the step functions ddpm_step and ddim_step at t = T-1 of a
    zero-terminal-SNR schedule with an eps/score output refuse with the cause (instead of
    returning inf/NaN, or +-clip_sample_range with clip_sample=True)."""
    x, out, z = _x(), _x(), np.ones((2, 3))
    for clip in (False, True):
        for fn in (lambda: refdiff.ddpm_step(ZTSNR, out, T - 1, x, z, prediction_type=prediction_type, clip_sample=clip),
                   lambda: refdiff.ddim_step(ZTSNR, out, T - 1, 20, x, prediction_type=prediction_type,
                                             clip_sample=clip)):
            msg = _raises(ValueError, ["prediction_type", "alpha"], fn)
            assert "zero terminal SNR" in msg
    y = refdiff.ddim_step(ZTSNR, out, T - 1, 20, x, prediction_type="v_prediction")
    assert np.all(np.isfinite(y))


LAMBDA_SPACE = ("deis", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2s",
                "dpmpp_3m", "unipc")


@pytest.mark.parametrize("method", sorted(m for m in sampler_methods() if not m.startswith("flow_")))
def test_zero_terminal_snr_every_method_says_why(method):
    """issue 19 finding 6: every method started at t = T-1 of a zero-terminal-SNR schedule
    either samples finitely (DDPM/DDIM/LCM with v_prediction) or stops before the first
    model call with a ValueError that names the cause (zero terminal SNR), never "math
    domain error" or a ZeroDivisionError (the lambda-space solvers: lambda = log(alpha /
    sigma) is -inf at alpha = 0)."""
    for pt in ("epsilon", "v_prediction"):
        calls = []
        model = lambda x, t: calls.append(t) or 0.1 * x  # noqa: E731
        try:
            out = refdiff.sample(model, _x(), ZTSNR, GRID, method, prediction_type=pt, rng=0, progress=False)
        except ValueError as e:
            assert "zero terminal SNR" in str(e), str(e)
            assert calls == []
        else:
            assert pt == "v_prediction" and method in ("ddpm", "ddim", "lcm"), method
            assert np.all(np.isfinite(out))


@pytest.mark.parametrize("method", ["euler", "heun", "dpmpp_2m", "edm", "dpmpp_sde"])
def test_float16_sigma_space_sampling_is_refused_up_front(method):
    """issue 19 finding 6: float16 sigma-space sampling overflowed (the sqrt(1 + sigma^2)
    scaling of x_T: sigma_max ~ 157 for T = 1000 linear) and the error blamed the model, or
    returned float16 values of 1e3.  float16 is refused up front naming x_T and float16."""
    sch = refdiff.make_schedule("linear", 1000)
    x16 = _x(np.float16)
    _raises(TypeError, ["x_T", "float16"],
            lambda: refdiff.sample(_model, x16, sch, refdiff.timesteps(1000, 10), method, rng=0, progress=False))
