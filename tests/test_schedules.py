"""Schedules, continuous-time views and grids: MATH.md chapter 2."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff
from _support import asx, assert_close, schedules


# ------------------------------------------------------------------ discrete schedules
@given(kind=st.sampled_from(["linear", "scaled_linear", "sigmoid"]), T=st.integers(2, 2000),
       b0=st.floats(1e-5, 1e-2), ratio=st.floats(1.01, 50))
def test_endpoints_equal_requested_betas(kind, T, b0, ratio):
    """MATH.md (2.5): linear and scaled-linear schedules start and end at the requested betas;
    the sigmoid one approaches them at sigmoid(+-6)."""
    b1 = min(b0 * ratio, 1.0)
    s = refdiff.make_schedule(kind, T, beta_start=b0, beta_end=b1)
    if kind == "sigmoid":
        sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        assert s.betas[0] == pytest.approx(b0 + (b1 - b0) * sig(-6), rel=1e-12)
        assert s.betas[-1] == pytest.approx(b0 + (b1 - b0) * sig(6), rel=1e-12)
    else:
        assert s.betas[0] == pytest.approx(b0, rel=1e-12)
        assert s.betas[-1] == pytest.approx(b1, rel=1e-12)
    if kind == "scaled_linear":  # sqrt(beta) is linear: constant first differences
        d = np.diff(np.sqrt(s.betas))
        np.testing.assert_allclose(d, d[0], rtol=1e-9, atol=1e-15)


@given(schedules(zero_terminal=True))
def test_alpha_bar_strictly_decreasing_and_cumprod(s):
    """MATH.md (2.1), (2.3): alpha = 1 - beta, alpha_bar is the cumulative product (checked
    by an explicit Python loop), strictly decreasing, in [0, 1)."""
    prod, ab = 1.0, []
    for b in s.betas:
        prod *= 1.0 - b
        ab.append(prod)
    np.testing.assert_allclose(s.alpha_bars, ab, rtol=1e-13, atol=1e-300)
    np.testing.assert_array_equal(s.alphas, 1.0 - s.betas)
    assert np.all(np.diff(s.alpha_bars) < 0)
    assert s.alpha_bars_prev[0] == 1.0
    np.testing.assert_array_equal(s.alpha_bars_prev[1:], s.alpha_bars[:-1])


@given(T=st.integers(1, 3000), s_=st.floats(0.0, 0.05))
def test_cosine_formula_equals_cumprod(T, s_):
    """MATH.md (2.5): wherever no beta was clipped at max_beta, the cumulative product of
    the cosine betas equals f((t+1)/T)/f(0) with f(u) = cos^2(pi/2 (u+s)/(1+s)) (computed
    here from math.cos, independently of the library)."""
    sch = refdiff.make_schedule("cosine", T, s=s_)
    f = lambda u: math.cos((u + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    clipped = np.flatnonzero(sch.betas >= 0.999)
    upto = clipped[0] if clipped.size else T
    want = np.array([f((t + 1) / T) / f(0) for t in range(upto)])
    # relative error grows like T * eps through the product; 1e-10 covers T = 3000
    np.testing.assert_allclose(sch.alpha_bars[:upto], want, rtol=1e-10, atol=1e-14)


def test_cosine_max_beta_clip():
    """MATH.md (2.5) table: beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta).  At i = T-1,
    f(1) = cos^2(pi/2) ~ 4e-33, so the unclipped beta is 1 to rounding and the default
    max_beta = 0.999 is what keeps alpha_bar_{T-1} > 0; with max_beta = 0.3 and T = 20 every
    beta above 0.3 (formula from math.cos) is replaced by exactly 0.3."""
    s = refdiff.make_schedule("cosine", 1000)
    assert s.betas[-1] == 0.999 and s.alpha_bars[-1] > 0
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    raw = np.array([1 - f((i + 1) / 20) / f(i / 20) for i in range(20)])
    assert np.sum(raw > 0.3) >= 3  # the clip is exercised
    np.testing.assert_allclose(refdiff.make_schedule("cosine", 20, max_beta=0.3).betas, np.minimum(raw, 0.3), rtol=1e-12)


@given(schedules(min_T=2))
def test_zero_terminal_snr(s):
    """MATH.md (2.6): the rescaled schedule has alpha_bar_{T-1} = 0 exactly, keeps
    alpha_bar_0, stays strictly decreasing, and sqrt(alpha_bar) is an affine image of the
    original sqrt(alpha_bar)."""
    z = refdiff.rescale_zero_terminal_snr(s)
    assert z.alpha_bars[-1] == 0.0 and z.betas[-1] == 1.0
    assert z.alpha_bars[0] == pytest.approx(s.alpha_bars[0], rel=1e-12)
    assert np.all(np.diff(z.alpha_bars) < 0)
    a, b = np.sqrt(s.alpha_bars), np.sqrt(z.alpha_bars)
    slope = (b[0] - b[-1]) / (a[0] - a[-1])
    np.testing.assert_allclose(b, slope * (a - a[-1]), rtol=1e-9, atol=1e-12)
    assert z.log_snr[-1] == -np.inf


def test_zero_terminal_snr_flag_matches_function():
    s = refdiff.make_schedule("scaled_linear", 50, zero_terminal_snr=True)
    z = refdiff.rescale_zero_terminal_snr(refdiff.make_schedule("scaled_linear", 50))
    np.testing.assert_array_equal(s.betas, z.betas)


@given(schedules())
def test_from_alpha_bars_round_trip(s):
    """Inverting (2.3): beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} recovers the betas."""
    r = refdiff.schedule_from_alpha_bars(s.alpha_bars)
    np.testing.assert_allclose(r.betas, s.betas, rtol=1e-9, atol=1e-15)


@given(schedules())
def test_derived_arrays(s):
    """MATH.md (2.7), (2.8): log-SNR and VE sigma from alpha_bar, and sigma^2 = e^{-lambda}."""
    # 1 - alpha_bar in 40-digit decimal arithmetic, independent of the library's expm1 form
    from decimal import Decimal, getcontext

    getcontext().prec = 40
    prod, one_minus = Decimal(1), []
    for b in s.betas:
        prod *= 1 - Decimal(float(b))
        one_minus.append(float(1 - prod))
    ab, om = s.alpha_bars, np.array(one_minus)
    np.testing.assert_allclose(s.log_snr, np.log(ab / om), rtol=1e-12)
    np.testing.assert_allclose(s.sigmas, np.sqrt(om / ab), rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_one_minus_alpha_bars, np.sqrt(om), rtol=1e-13)
    np.testing.assert_allclose(s.sigmas**2, np.exp(-s.log_snr), rtol=1e-10)


def test_vp_ve_sigma_map(xp):
    """MATH.md (2.8): sigma = sqrt((1-abar)/abar) and its inverse abar = 1/(1+sigma^2)."""
    # hand-worked: abar = 1/2 -> sigma = sqrt(0.5/0.5) = 1; abar = 1/5 -> sqrt(0.8/0.2) = 2;
    # abar = 0.9 -> sqrt(0.1/0.9) = 1/3
    assert_close(refdiff.sigma_from_alpha_bar(asx(xp, [0.5, 0.2, 0.9])), [1.0, 2.0, 1 / 3], xp=xp, rtol=1e-15)
    ab = asx(xp, np.linspace(0.01, 0.99, 7))
    sig = refdiff.sigma_from_alpha_bar(ab)
    assert_close(refdiff.alpha_bar_from_sigma(sig), ab, xp=xp, rtol=1e-14)
    with pytest.raises(ValueError, match=r"sigma contains -1.0; sigma must be >= 0"):
        refdiff.alpha_bar_from_sigma(asx(xp, [-1.0]))


# ------------------------------------------------------------------ continuous time
@pytest.mark.parametrize("vp", [refdiff.LinearVP(), refdiff.LinearVP(0.5, 5.0),
                                refdiff.InterpolatedVP(refdiff.make_schedule("linear", 1000)),
                                refdiff.InterpolatedVP(refdiff.make_schedule("cosine", 100))],
                         ids=["vpsde", "vpsde2", "interp-linear", "interp-cosine"])
def test_lambda_inverse_round_trip(vp, xp):
    """MATH.md (2.12), (2.13): t -> lambda_t -> t is the identity, lambda is strictly
    decreasing, and alpha^2 + sigma^2 = 1."""
    t = asx(xp, np.linspace(vp.t_min, 1.0, 200))
    lam = vp.lambda_(t)
    assert_close(vp.t_from_lambda(lam), t, xp=xp, rtol=1e-9, atol=1e-12)
    assert bool(xp.all(lam[1:] < lam[:-1]))
    assert_close(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, xp.ones_like(t), xp=xp, rtol=1e-14)


def test_linear_vp_closed_form_and_beta():
    """MATH.md (2.11), (2.14): log alpha_t = -(b1-b0) t^2/4 - b0 t/2, i.e. alpha_t^2 = exp(-int_0^t beta),
    checked by numerical quadrature of beta(s) = b0 + s (b1 - b0); beta = -2 dlog alpha/dt
    checked by central differences."""
    from scipy.integrate import quad

    vp = refdiff.LinearVP(0.1, 20.0)
    for t in (0.01, 0.3, 0.77, 1.0):
        integral, _ = quad(lambda s: 0.1 + s * 19.9, 0, t)
        assert vp.alpha(np.array(t)) ** 2 == pytest.approx(math.exp(-integral), rel=1e-12)
        h = 1e-6
        fd = -2 * (vp.log_alpha(np.array(t + h)) - vp.log_alpha(np.array(t - h))) / (2 * h)
        assert vp.beta(np.array(t)) == pytest.approx(fd, rel=1e-7)


@given(schedules(min_T=2, max_T=300))
def test_interpolated_vp_matches_discrete_at_knots(s):
    """MATH.md (2.15): at t_k = (k+1)/T the interpolated log alpha equals log sqrt(alpha_bar_k),
    and between knots it is the linear interpolation (checked at midpoints)."""
    vp = refdiff.InterpolatedVP(s)
    tk = np.arange(1, s.T + 1) / s.T
    np.testing.assert_allclose(vp.log_alpha(tk), 0.5 * np.log(s.alpha_bars), rtol=1e-12, atol=1e-14)
    mid = (tk[:-1] + tk[1:]) / 2
    want = 0.25 * (np.log(s.alpha_bars[:-1]) + np.log(s.alpha_bars[1:]))
    np.testing.assert_allclose(vp.log_alpha(mid), want, rtol=1e-12, atol=1e-14)


def test_alpha_sigma_integer_and_fractional(xp):
    """alpha_sigma: integer t gives the discrete values (2.4); an integer-valued float index
    gives the same through the interpolation (2.15)."""
    s = refdiff.make_schedule("linear", 100)
    x = asx(xp, np.zeros((3, 2)))
    t_int = asx(xp, [0, 50, 99])
    a, sg = refdiff.alpha_sigma(s, t_int, x)
    assert_close(a[:, 0], np.sqrt(s.alpha_bars[[0, 50, 99]]), xp=xp, rtol=1e-14)
    af, sf = refdiff.alpha_sigma(s, asx(xp, [0.0, 50.0, 99.0]), x)
    assert_close(af, a, xp=xp, rtol=1e-13)
    assert_close(sf, sg, xp=xp, rtol=1e-11)


def test_alpha_sigma_fractional_index_out_of_range(xp):
    """A fractional index below 0 has no meaning (alpha > 1 there): clear error.  Above T-1 the
    linear extension of (2.15) is used (EDM's churn raises sigma past sigma_max): alpha stays in (0, 1)."""
    s = refdiff.make_schedule("linear", 100)
    x = asx(xp, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"continuous index t = -0.5 is below 0"):
        refdiff.alpha_sigma(s, asx(xp, [-0.5, 3.0]), x)
    a, sg = refdiff.alpha_sigma(s, 105.0, x)
    assert 0 < float(a) < float(refdiff.alpha_sigma(s, 99, x)[0]) and float(sg) < 1


@pytest.mark.parametrize("kind", ["logSNR", "time_uniform", "time_quadratic"])
def test_time_grid(kind):
    """MATH.md (2.16): the grids run from 1 down to t_min with n+1 points, strictly
    decreasing; logSNR grids have equal lambda increments; quadratic grids equal sqrt(t) steps."""
    vp = refdiff.LinearVP()
    g = refdiff.time_grid(vp, 10, kind)
    assert g.shape == (11,) and g[0] == 1.0 and g[-1] == vp.t_min
    assert np.all(np.diff(g) < 0)
    if kind == "logSNR":
        d = np.diff(vp.lambda_(g))
        np.testing.assert_allclose(d, d[0], rtol=1e-8)
    if kind == "time_quadratic":
        d = np.diff(np.sqrt(g))
        np.testing.assert_allclose(d, d[0], rtol=1e-10)


# ------------------------------------------------------------------ timestep grids
@given(T=st.integers(1, 2000), data=st.data(), spacing=st.sampled_from(["linspace", "leading", "trailing"]),
       rounding=st.sampled_from(["library", "exact"]))
def test_timestep_grids_properties(T, data, spacing, rounding):
    """MATH.md (2.9): every grid is strictly decreasing, in [0, T-1], of length n."""
    n = data.draw(st.integers(1, T))
    ts = refdiff.timesteps(T, n, spacing, rounding=rounding)
    assert ts.shape == (n,) and ts.dtype == np.int64
    assert ts.min() >= 0 and ts.max() <= T - 1
    assert np.all(np.diff(ts) < 0)
    if spacing == "linspace" and n > 1:  # linspace(0, T-1, 1) = [0]
        assert ts[0] == T - 1 and ts[-1] == 0
    if spacing == "trailing":
        assert ts[0] == T - 1
    if spacing == "leading":
        assert ts[-1] == 0


def test_trailing_hand_worked():
    """MATH.md (2.9), trailing, T = 1000, n = 16: T/n = 62.5, so the grid is
    round(1000 - 62.5 k) - 1 for k = 0..15.  Half-way cases round to even:
    937.5 -> 938, 812.5 -> 812, 687.5 -> 688, 562.5 -> 562, 437.5 -> 438, 312.5 -> 312,
    187.5 -> 188, 62.5 -> 62; the exact values 1000, 875, 750, ... stay.  Minus one:"""
    want = [999, 937, 874, 811, 749, 687, 624, 561, 499, 437, 374, 311, 249, 187, 124, 61]
    np.testing.assert_array_equal(refdiff.timesteps(1000, 16, "trailing"), want)


def test_trailing_library_rounding_hand_worked():
    """MATH.md (2.9), trailing with the PyTorch library's arithmetic.  T = 1000, n = 48:
    T/n = 20.8333..., and NumPy's arange evaluates T + k * delta with
    delta = fl(fl(1000 - 20.8333...) - 1000) = -20.83333333333337 (not -20.833333333333332),
    so at k = 3 the exact half 937.5 comes out as 937.4999999999999 and rounds to 937,
    giving timestep 936 where exact rounding (938 - 1) gives 937.  Same at k = 15, 27, 39
    (687.5, 437.5, 187.5)."""
    delta = (1000.0 - 1000.0 / 48) - 1000.0
    assert delta == -20.83333333333337 and 1000.0 + 3 * delta < 937.5
    lib = refdiff.timesteps(1000, 48, "trailing")
    ex = refdiff.timesteps(1000, 48, "trailing", rounding="exact")
    assert list(np.flatnonzero(lib != ex)) == [3, 15, 27, 39]
    assert list(lib[[3, 15, 27, 39]]) == [936, 686, 436, 186]
    assert list(ex[[3, 15, 27, 39]]) == [937, 687, 437, 187]  # 938, 688, 438, 188 (even) minus 1


def test_trailing_equals_the_library_expression():
    """The library's trailing grid is round(np.arange(T, 0, -T/n)) - 1; refdiff returns its
    first n entries for every n (for n where arange yields an extra value just below 0, the
    library's grid has n+1 entries ending in -1, e.g. T = 1000, n = 61)."""
    for T in (10, 100, 1000):
        for n in range(1, T + 1):
            lib = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
            np.testing.assert_array_equal(refdiff.timesteps(T, n, "trailing"), lib[:n])
    assert np.arange(1000, 0, -1000 / 61).shape == (62,)
    with pytest.raises(ValueError, match="unknown rounding"):
        refdiff.timesteps(10, 3, "trailing", rounding="floor")


def test_leading_hand_worked():
    """Leading, T = 1000, n = 10, offset 1: T // n = 100, k * 100 + 1 for k = 9..0."""
    want = [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    np.testing.assert_array_equal(refdiff.timesteps(1000, 10, "leading", steps_offset=1), want)
    # T = 1000, n = 3: T // n = 333 -> 666, 333, 0 (the top 333 steps are never visited)
    np.testing.assert_array_equal(refdiff.timesteps(1000, 3, "leading"), [666, 333, 0])


def test_linspace_hand_worked():
    """Linspace, T = 10, n = 4: linspace(0, 9, 4) = 0, 3, 6, 9 exactly; T = 8, n = 3:
    0, 3.5, 7 -> 3.5 rounds half to even -> 4.  Reversed."""
    np.testing.assert_array_equal(refdiff.timesteps(10, 4, "linspace"), [9, 6, 3, 0])
    np.testing.assert_array_equal(refdiff.timesteps(8, 3, "linspace"), [7, 4, 0])


# ------------------------------------------------------------------ Karras sigmas
@given(n=st.integers(2, 200), smin=st.floats(1e-3, 1.0), ratio=st.floats(1.5, 1e4), rho=st.floats(0.5, 10))
def test_karras_endpoints_and_monotone(n, smin, ratio, rho):
    """MATH.md (2.10): the grid hits sigma_max and sigma_min and decreases strictly."""
    smax = smin * ratio
    s = refdiff.karras_sigmas(n, smin, smax, rho)
    assert s[0] == smax and s[-1] == smin and s.shape == (n,)
    assert np.all(np.diff(s) < 0)
    z = refdiff.karras_sigmas(n, smin, smax, rho, append_zero=True)
    assert z.shape == (n + 1,) and z[-1] == 0.0


def test_karras_rho_one_is_linear_and_rho_seven_formula():
    """MATH.md (2.10): rho = 1 gives equal steps; for rho = 7, sigma_i^(1/7) is linear in i."""
    s = refdiff.karras_sigmas(11, 0.002, 80.0, rho=1.0)
    np.testing.assert_allclose(s, np.linspace(80.0, 0.002, 11), rtol=1e-12)
    s7 = refdiff.karras_sigmas(11, 0.002, 80.0, rho=7.0)
    d = np.diff(s7 ** (1 / 7))
    np.testing.assert_allclose(d, d[0], rtol=1e-9)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "betas, match",
    [
        ([0.1, 0.0, 0.2], r"betas\[1\] = 0.0 is outside \(0, 1\]"),
        ([0.1, -0.2], r"outside \(0, 1\]"),
        ([0.1, 1.5], r"outside \(0, 1\]"),
        ([0.1, float("nan")], "must be finite"),
        ([1.0, 0.5], "allowed only as the last entry"),
        ([], "non-empty"),
    ],
)
def test_bad_betas(betas, match):
    with pytest.raises(ValueError, match=match):
        refdiff.schedule_from_betas(betas)


def test_beta_one_allowed_last():
    s = refdiff.schedule_from_betas([0.1, 0.5, 1.0])
    assert s.alpha_bars[-1] == 0.0


@pytest.mark.parametrize(
    "ab, match",
    [([0.9, 0.95], "strictly decreasing"), ([0.9, 0.9], "strictly decreasing"),
     ([1.2, 0.5], r"outside \[0, 1\)"), ([0.9, float("nan")], "NaN")],
)
def test_bad_alpha_bars(ab, match):
    with pytest.raises(ValueError, match=match):
        refdiff.schedule_from_alpha_bars(ab)


def test_bad_make_schedule_args():
    with pytest.raises(ValueError, match="T must be >= 1, got 0"):
        refdiff.make_schedule("linear", 0)
    with pytest.raises(TypeError, match="T must be an integer"):
        refdiff.make_schedule("linear", 10.5)
    with pytest.raises(ValueError, match="unknown schedule kind 'quadratic'; valid kinds: linear"):
        refdiff.make_schedule("quadratic", 10)
    with pytest.raises(TypeError, match="unknown parameter"):
        refdiff.make_schedule("cosine", 10, beta_start=0.1)
    with pytest.raises(ValueError, match=r"beta_end = 2.0 is outside \(0, 1\]"):
        refdiff.make_schedule("linear", 10, beta_end=2.0)
    with pytest.raises(ValueError, match="max_beta"):
        refdiff.make_schedule("cosine", 10, max_beta=0.0)


def test_bad_grid_args():
    with pytest.raises(ValueError, match=r"n = 11 steps is outside \[1, T\] = \[1, 10\]"):
        refdiff.timesteps(10, 11)
    with pytest.raises(ValueError, match="n = 0"):
        refdiff.timesteps(10, 0)
    with pytest.raises(ValueError, match="unknown spacing 'uniform'"):
        refdiff.timesteps(10, 5, "uniform")
    with pytest.raises(ValueError, match="applies only to spacing='leading'"):
        refdiff.timesteps(10, 5, "trailing", steps_offset=1)
    with pytest.raises(ValueError, match="out of range"):
        refdiff.timesteps(10, 10, "leading", steps_offset=1)
    with pytest.raises(ValueError, match="sigma_min = -1.0 must be finite and > 0"):
        refdiff.karras_sigmas(5, -1.0, 10.0)
    with pytest.raises(ValueError, match="must be < sigma_max"):
        refdiff.karras_sigmas(5, 10.0, 1.0)
    with pytest.raises(ValueError, match="rho"):
        refdiff.karras_sigmas(5, 0.1, 10.0, rho=0.0)
    with pytest.raises(ValueError, match="unknown grid kind"):
        refdiff.time_grid(refdiff.LinearVP(), 5, "cubic")
    with pytest.raises(ValueError, match="t_end"):
        refdiff.time_grid(refdiff.LinearVP(), 5, t_end=0.0)


def test_t_out_of_range(xp):
    s = refdiff.make_schedule("linear", 10)
    x = asx(xp, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"t = 10 is out of range \[0, 9\]"):
        refdiff.q_sample(s, x, 10, x)
    with pytest.raises(ValueError, match=r"contains -1, out of range \[0, 9\]"):
        refdiff.q_sample(s, x, asx(xp, [-1, 3]), x)
    with pytest.raises(TypeError, match="integer dtype"):
        refdiff.q_sample(s, x, asx(xp, [1.0, 3.0]), x)


def test_interpolated_vp_rejects_zero_terminal():
    with pytest.raises(ValueError, match="zero terminal SNR"):
        refdiff.InterpolatedVP(refdiff.make_schedule("linear", 10, zero_terminal_snr=True))


def test_schedule_is_read_only():
    s = refdiff.make_schedule("linear", 10)
    with pytest.raises(ValueError):
        s.betas[0] = 0.5
    with pytest.raises(AttributeError):
        s.betas = np.ones(10) * 0.1
