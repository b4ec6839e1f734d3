"""Layer forward/backward pairs of refdiff.nn against finite differences, adjoint
identities and the loop definitions (MATH.md chapter 13).

Tolerances.  Gradient checks run in float64 with central differences, h = 1e-5: the
truncation error is O(h^2 f''') ~ 1e-10 and the rounding error ~ eps_64 |f| / h ~ 1e-11
relative, so a correct backward gives a normwise relative error ~1e-9 and we demand
< 1e-6 (the issue's bar); a wrong term (a missing mean in GroupNorm, a transposed
kernel) gives O(1).  Exact identities (adjoint, naive vs vectorised) hold to float64
rounding of sums of a few hundred terms: rtol 1e-12.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.backend import to_numpy
from refdiff.nn import layers as L
from refdiff.nn import blocks as B
from refdiff.nn import fast
from refdiff.nn import fast_chwn
from refdiff.nn.gradcheck import check_directional, check_gradient, inner, numerical_gradient, relative_error
from tests._support import assert_close, asx

GC_TOL = 1e-6  # see module docstring
EXACT = 1e-12


def _rand(xp, rng, shape):
    return asx(xp, rng.standard_normal(shape))


def _check_pair(xp, fwd, bwd, args, rng, wrt=None):
    """Check every gradient returned by ``bwd`` against central differences of
    ``<fwd(*args), dout>`` with respect to ``args[j]`` for j in ``wrt``."""
    out, cache = fwd(*args)
    dout = _rand(xp, rng, out.shape)
    grads = bwd(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    wrt = range(len(grads)) if wrt is None else wrt
    for j in wrt:
        def f(a, j=j):
            a_args = list(args)
            a_args[j] = a
            return inner(fwd(*a_args)[0], dout)

        err = check_gradient(f, args[j], grads[j])
        assert err < GC_TOL, f"argument {j}: relative error {err:.2e}"


# ------------------------------------------------------------------ gradcheck utility
def test_numerical_gradient_of_quadratic(xp):
    """The central difference MATH.md (13.19) is exact (up to rounding) for a quadratic
    f(x) = <x, A x> / 2 whose gradient is (A + A^T) x / 2, worked by hand."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 4))
    x = rng.standard_normal(4)
    f = lambda v: 0.5 * float(np.asarray(v, dtype=np.float64) @ A @ np.asarray(v, dtype=np.float64))  # noqa: E731
    g = numerical_gradient(lambda v: f(to_numpy(v)), asx(xp, x))
    assert_close(g, 0.5 * (A + A.T) @ x, xp=xp, rtol=1e-8)
    assert relative_error(np.ones(3), np.ones(3)) == 0.0
    assert relative_error(np.zeros(2), np.array([0.0, 3e-12]), floor=1e-3) == 3e-9
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(np.ones(3), np.ones(4))


def test_directional_check_of_a_two_argument_quadratic(xp):
    """The directional central difference of MATH.md (13.19) on f(x, w) = <x, A w> +
    |w|^2 / 2, whose gradients (A w, A^T x + w) are worked by hand: exact gradients give
    rounding-level error (a quadratic has no h^2 term); a gradient wrong in one entry of
    one argument is caught (O(1e-2) error); a missing gradient is refused by name."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3, 4))
    x, w = rng.standard_normal(3), rng.standard_normal(4)
    point = {"x": asx(xp, x), "w": asx(xp, w)}

    def f(p):
        xx, ww = np.asarray(to_numpy(p["x"])), np.asarray(to_numpy(p["w"]))
        return float(xx @ A @ ww + 0.5 * ww @ ww)

    grads = {"x": A @ w, "w": A.T @ x + w}
    assert check_directional(f, point, grads, np.random.default_rng(0), n_dirs=6) < 1e-9
    bad = {"x": grads["x"], "w": grads["w"] + np.array([0.0, 0.0, 0.1, 0.0])}
    assert check_directional(f, point, bad, np.random.default_rng(0), n_dirs=6) > 1e-3
    with pytest.raises(ValueError, match=r"no gradient for \['w'\]"):
        check_directional(f, point, {"x": grads["x"]}, np.random.default_rng(0))


# ------------------------------------------------------------------ linear, SiLU
@settings(max_examples=6)
@given(n=st.integers(1, 4), d_in=st.integers(1, 5), d_out=st.integers(1, 5), seed=st.integers(0, 99))
def test_linear_gradcheck(xp, n, d_in, d_out, seed):
    """Linear layer backward MATH.md (13.1) and (13.2) against central differences."""
    rng = np.random.default_rng(seed)
    args = (_rand(xp, rng, (n, d_in)), _rand(xp, rng, (d_in, d_out)), _rand(xp, rng, (d_out,)))
    _check_pair(xp, L.linear_forward, L.linear_backward, args, rng)


def test_linear_shape_error(xp):
    with pytest.raises(ValueError, match="do not match"):
        L.linear_forward(asx(xp, np.ones((2, 3))), asx(xp, np.ones((4, 2))), asx(xp, np.ones(2)))


@settings(max_examples=6)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_silu_gradcheck(xp, shape, seed):
    """SiLU derivative MATH.md (13.11) against central differences."""
    rng = np.random.default_rng(seed)
    _check_pair(xp, L.silu_forward, L.silu_backward, (_rand(xp, rng, tuple(shape)) * 3.0,), rng)


def test_silu_values(xp):
    """MATH.md (13.11) by hand: silu(0) = 0, silu(x) -> x for large x, -> 0 for very
    negative x; derivative at 0 is s(0) = 1/2."""
    x = asx(xp, [0.0, 40.0, -40.0])
    out, cache = L.silu_forward(x)
    assert_close(out, [0.0, 40.0, 0.0], xp=xp, atol=1e-15)
    assert_close(L.silu_backward(asx(xp, [1.0, 1.0, 1.0]), cache), [0.5, 1.0, 0.0], xp=xp, atol=1e-15)


# ------------------------------------------------------------------ convolution
CONV_KINDS = {"3x3": (3, 1, 1), "1x1": (1, 1, 0), "down": (3, 2, 1)}


@st.composite
def conv_case(draw, kind):
    """Random sizes for one conv kind (the kind is a pytest parameter, so every kind is
    exercised; H, W from 1 to 5 cover odd and even sizes of the stride-2 kernel)."""
    k, stride, pad = CONV_KINDS[kind]
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(max(1, k - 2 * pad), 5)), draw(st.integers(max(1, k - 2 * pad), 5))
    return (n, c, h, w), (f, c, k, k), stride, pad, draw(st.integers(0, 999))


@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
@settings(max_examples=5)
@given(data=st.data())
def test_conv2d_gradcheck(xp, kind, data):
    """Convolution backward MATH.md (13.5) and (13.6) (dx, dw, db) against central
    differences, for 3x3 same, 1x1 and 3x3 stride-2 kernels on random sizes."""
    case = data.draw(conv_case(kind))
    xs, ws, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    args = (_rand(xp, rng, xs), _rand(xp, rng, ws), _rand(xp, rng, (ws[0],)))
    fwd = lambda x, w, b: L.conv2d_forward(x, w, b, stride=stride, pad=pad)  # noqa: E731
    _check_pair(xp, fwd, L.conv2d_backward, args, rng)


@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
@settings(max_examples=5)
@given(data=st.data())
def test_conv2d_vectorised_matches_naive(xp, kind, data):
    """The im2col matrix form MATH.md (13.4) equals the loop definition (13.3), and the
    col2im backward equals the loop backward MATH.md (13.5) and (13.6)."""
    case = data.draw(conv_case(kind))
    xs, ws, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    _assert_conv_matches_naive(xp, rng, xs, ws, stride, pad)


def _assert_conv_matches_naive(xp, rng, xs, ws, stride, pad, impl=L):
    """Vectorised conv forward and backward (``impl``: the reference layers, or the tuned
    ``fast`` module) equal the loop definitions on random inputs."""
    x, w, b = _rand(xp, rng, xs), _rand(xp, rng, ws), _rand(xp, rng, (ws[0],))
    out, cache = impl.conv2d_forward(x, w, b, stride=stride, pad=pad)
    out_n, cache_n = L.conv2d_forward_naive(x, w, b, stride=stride, pad=pad)
    assert_close(out, out_n, xp=xp, rtol=EXACT, atol=EXACT)
    dout = _rand(xp, rng, out.shape)
    for g, g_n in zip(impl.conv2d_backward(dout, cache), L.conv2d_backward_naive(dout, cache_n)):
        assert_close(g, g_n, xp=xp, rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("budget", [1, 40])
def test_conv2d_row_chunks_match_naive(xp, monkeypatch, budget):
    """The tuned convolution (refdiff.nn.fast) processes output rows in blocks sized to
    stay in cache; with a tiny block budget (one row, or a few rows, per block) forward and
    backward still equal the loop definitions MATH.md (13.3), (13.5), (13.6), for all
    three kinds."""
    monkeypatch.setattr(fast_chwn, "_CHUNK_FLOATS", budget)  # the chwn convolution's block budgets
    monkeypatch.setattr(fast_chwn, "_CHUNK_FLOATS_DEVICE", budget)  # CuPy's budget (one block by default)
    rng = np.random.default_rng(budget)
    for k, stride, pad in CONV_KINDS.values():
        _assert_conv_matches_naive(xp, rng, (2, 3, 6, 5), (4, 3, k, k), stride, pad, impl=fast)


@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
@settings(max_examples=5)
@given(data=st.data())
def test_conv2d_adjoint(xp, kind, data):
    """Dot-product test MATH.md (13.6): with b = 0 the convolution is linear in x and
    in w, and <conv(x), y> = <x, conv^T y> = <w, (dw of y)> for random x, w, y."""
    case = data.draw(conv_case(kind))
    xs, ws, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x, w, y = _rand(xp, rng, xs), _rand(xp, rng, ws), None
    zero = asx(xp, np.zeros(ws[0]))
    out, cache = L.conv2d_forward(x, w, zero, stride=stride, pad=pad)
    y = _rand(xp, rng, out.shape)
    dx, dw, _ = L.conv2d_backward(y, cache)
    lhs = inner(out, y)
    assert math.isclose(lhs, inner(x, dx), rel_tol=1e-11, abs_tol=1e-11)
    assert math.isclose(lhs, inner(w, dw), rel_tol=1e-11, abs_tol=1e-11)


@pytest.mark.parametrize("shape", [(1, 2, 5, 4), (2, 1, 3, 3), (1, 1, 4, 7)])
def test_conv2d_stride2_odd_and_even_sizes_gradcheck(xp, shape):
    """The stride-2 3x3 kernel MATH.md (13.3), (13.5) and (13.6) on odd and even sizes
    (output ceil(H/2): the last input row is read by no tap of the bottom row when H is
    even, by the centre tap when H is odd): dx, dw, db against central differences."""
    rng = np.random.default_rng(sum(shape))
    args = (_rand(xp, rng, shape), _rand(xp, rng, (3, shape[1], 3, 3)), _rand(xp, rng, (3,)))
    fwd = lambda x, w, b: L.conv2d_forward(x, w, b, stride=2, pad=1)  # noqa: E731
    out, _ = fwd(*args)
    assert out.shape[2:] == ((shape[2] + 1) // 2, (shape[3] + 1) // 2)
    _check_pair(xp, fwd, L.conv2d_backward, args, rng)


def test_conv2d_hand_values(xp):
    """MATH.md (13.3) by hand: a kernel with a single 1 at tap (p, q) = (0, 1) copies the
    pixel one row up (zero above the first row); a 3x3 all-ones kernel on an all-ones 3x3
    image counts the in-image neighbours (4 at corners, 6 at edges, 9 at the centre);
    the stride-2 output of a 4x4 image is 2x2 and samples rows 0 and 2."""
    x = asx(xp, np.arange(9.0).reshape(1, 1, 3, 3))
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 1] = 1.0
    out, _ = L.conv2d_forward(x, asx(xp, w), asx(xp, [0.0]))
    assert_close(out[0, 0, :, :], [[0, 0, 0], [0, 1, 2], [3, 4, 5]], xp=xp)
    out, _ = L.conv2d_forward(asx(xp, np.ones((1, 1, 3, 3))), asx(xp, np.ones((1, 1, 3, 3))), asx(xp, [0.5]))
    assert_close(out[0, 0, :, :], np.array([[4, 6, 4], [6, 9, 6], [4, 6, 4]]) + 0.5, xp=xp)
    center = np.zeros((1, 1, 3, 3))
    center[0, 0, 1, 1] = 1.0
    x4 = asx(xp, np.arange(16.0).reshape(1, 1, 4, 4))
    out, _ = L.conv2d_forward(x4, asx(xp, center), asx(xp, [0.0]), stride=2)
    assert_close(out[0, 0, :, :], [[0, 2], [8, 10]], xp=xp)


def test_conv2d_bad_input(xp):
    x = asx(xp, np.ones((1, 2, 4, 4)))
    with pytest.raises(ValueError, match="channels"):
        L.conv2d_forward(x, asx(xp, np.ones((3, 1, 3, 3))), asx(xp, np.ones(3)))
    with pytest.raises(ValueError, match=r"\bx\b must have 4 dimensions"):
        L.conv2d_forward(asx(xp, np.ones((2, 4, 4))), asx(xp, np.ones((3, 2, 3, 3))), asx(xp, np.ones(3)))
    with pytest.raises(ValueError, match="larger than the input"):
        L.conv2d_forward(x, asx(xp, np.ones((3, 2, 5, 5))), asx(xp, np.ones(3)), pad=0)
    with pytest.raises(ValueError, match="stride"):
        L.conv2d_forward(x, asx(xp, np.ones((3, 2, 3, 3))), asx(xp, np.ones(3)), stride=0)


# ------------------------------------------------------------------ resampling
images = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=6)
@given(shape=images, seed=st.integers(0, 99))
def test_upsample_avgpool_gradcheck_and_adjoint(xp, shape, seed):
    """Nearest upsampling MATH.md (13.7) and 2x2 average pooling MATH.md (13.8): gradients
    against central differences, dot-product tests <U x, y> = <x, U^T y> and
    <A z, x> = <z, A^T x>, and A U = identity (the mean of four copies)."""
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    x = _rand(xp, rng, (n, c, h, w))
    z = _rand(xp, rng, (n, c, 2 * h, 2 * w))
    _check_pair(xp, L.upsample2x_forward, L.upsample2x_backward, (x,), rng)
    _check_pair(xp, L.avgpool2x_forward, L.avgpool2x_backward, (z,), rng)
    ux, _ = L.upsample2x_forward(x)
    az, _ = L.avgpool2x_forward(z)
    assert math.isclose(inner(ux, z), inner(x, L.upsample2x_backward(z, None)), rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(inner(az, x), inner(z, L.avgpool2x_backward(x, None)), rel_tol=1e-12, abs_tol=1e-12)
    assert_close(L.avgpool2x_forward(ux)[0], x, xp=xp, rtol=EXACT)
    assert_close(ux[:, :, 1::2, ::2], x, xp=xp, rtol=0)
    # (13.8): A = U^T / 4, so A^T = U / 4 and 4 A = U^T, entry by entry (exact: x 0.25)
    assert_close(L.avgpool2x_backward(x, None), 0.25 * ux, xp=xp, rtol=0)
    assert_close(L.upsample2x_backward(z, None), 4.0 * az, xp=xp, rtol=EXACT)


def test_resampling_bad_input(xp):
    with pytest.raises(ValueError, match="even"):
        L.avgpool2x_forward(asx(xp, np.ones((1, 1, 3, 4))))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        L.upsample2x_forward(asx(xp, np.ones((1, 3, 4))))


# ------------------------------------------------------------------ GroupNorm
@st.composite
def gn_case(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return (n, c, h, w), groups, draw(st.integers(0, 999))


@settings(max_examples=8)
@given(case=gn_case())
def test_groupnorm_gradcheck(xp, case):
    """GroupNorm backward MATH.md (13.10) (dx, dgamma, dbeta) against central
    differences, random batch, channels, sizes and groups."""
    shape, groups, seed = case
    rng = np.random.default_rng(seed)
    c = shape[1]
    args = (_rand(xp, rng, shape) * 2.0 + 1.0, _rand(xp, rng, (c,)), _rand(xp, rng, (c,)))
    fwd = lambda x, g, b: L.groupnorm_forward(x, g, b, groups)  # noqa: E731
    _check_pair(xp, fwd, L.groupnorm_backward, args, rng)


@settings(max_examples=5)
@given(case=gn_case())
def test_groupnorm_normalises(xp, case):
    """MATH.md (13.9): with gamma = 1, beta = 0 each (sample, group) block has mean 0
    and (biased) variance v / (v + eps) computed independently with NumPy."""
    shape, groups, seed = case
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3.0 + 2.0
    out, _ = L.groupnorm_forward(asx(xp, x), asx(xp, np.ones(c)), asx(xp, np.zeros(c)), groups, eps=1e-5)
    o = to_numpy(out).reshape(n, groups, -1)
    v = x.reshape(n, groups, -1).var(axis=2)
    np.testing.assert_allclose(o.mean(axis=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(o.var(axis=2), v / (v + 1e-5), rtol=1e-10)


@settings(max_examples=5)
@given(case=gn_case())
def test_groupnorm_gradient_orthogonal_to_shift_and_scale(xp, case):
    """MATH.md (13.10): within each (sample, group) block, dx sums to zero (the output
    ignores a shift of the block) and, with eps = 0, <dx, xhat> = 0 too (it ignores a
    scaling); with eps > 0 the latter is r M mean(g xhat) eps / (sigma^2 + eps), not 0.
    Checked on sums computed independently with NumPy; float64 sums of <= 27 terms of
    size O(1) (scaled by r ~ 1/3): atol 1e-12."""
    shape, groups, seed = case
    n, c, h, w = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3.0 + 2.0
    if c // groups * h * w == 1:  # a one-entry block has sigma = 0: xhat = 0 and r = 1/sqrt(eps)
        return
    gamma, dout = rng.standard_normal(c), rng.standard_normal(shape)
    out, cache = L.groupnorm_forward(asx(xp, x), asx(xp, gamma), asx(xp, np.zeros(c)), groups, eps=0.0)
    dx = L.groupnorm_backward(asx(xp, dout), cache)[0]
    dx = to_numpy(dx).reshape(n, groups, -1)
    xg = x.reshape(n, groups, -1)
    xhat = (xg - xg.mean(axis=2, keepdims=True)) / xg.std(axis=2, keepdims=True)
    np.testing.assert_allclose(dx.sum(axis=2), 0.0, atol=1e-12)
    np.testing.assert_allclose((dx * xhat).sum(axis=2), 0.0, atol=1e-12)


def test_groupnorm_bad_groups(xp):
    with pytest.raises(ValueError, match="must divide"):
        L.groupnorm_forward(asx(xp, np.ones((1, 6, 2, 2))), asx(xp, np.ones(6)), asx(xp, np.zeros(6)), 4)


# ------------------------------------------------------------------ embeddings
@settings(max_examples=6)
@given(n=st.integers(1, 4), dim=st.integers(2, 9), seed=st.integers(0, 99))
def test_timestep_embedding_gradcheck(xp, n, dim, seed):
    """Derivative of the sinusoidal embedding MATH.md (13.12) with respect to
    (fractional) t, against central differences."""
    rng = np.random.default_rng(seed)
    t = asx(xp, rng.uniform(0.0, 50.0, n))
    fwd = lambda tt: L.timestep_embedding_forward(tt, dim, max_period=100.0)  # noqa: E731
    _check_pair(xp, fwd, L.timestep_embedding_backward, (t,), rng)


def test_timestep_embedding_values(xp):
    """MATH.md (13.12) by hand, dim = 4 (half = 2, omega = (1, P^(-1/2))): at t = 0 the
    embedding is (1, 1, 0, 0); at t = pi/2 with P = 100 it is (cos(pi/2), cos(pi/20),
    sin(pi/2), sin(pi/20)); integer and float t of equal value embed equally; odd dim
    appends a zero column."""
    t = asx(xp, [0.0, math.pi / 2])
    e, _ = L.timestep_embedding_forward(t, 4, max_period=100.0)
    h = math.pi / 2
    assert_close(e, [[1, 1, 0, 0], [math.cos(h), math.cos(h / 10), math.sin(h), math.sin(h / 10)]], xp=xp,
                 atol=1e-15)
    ei, _ = L.timestep_embedding_forward(asx(xp, [3, 999]), 6)
    ef, _ = L.timestep_embedding_forward(asx(xp, [3.0, 999.0], dtype=xp.float32), 6)
    assert_close(ei, ef, xp=xp, rtol=0)
    eo, _ = L.timestep_embedding_forward(asx(xp, [2.0]), 5)
    assert eo.shape == (1, 5)
    assert float(eo[0, 4]) == 0.0
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        L.timestep_embedding_forward(asx(xp, [[1.0]]), 4)
    with pytest.raises(ValueError, match="dim must be"):
        L.timestep_embedding_forward(asx(xp, [1.0]), 1)


def test_embedding_gradcheck_and_repeats(xp):
    """Class embedding MATH.md (13.13): the table gradient against central differences,
    with repeated labels (rows add) and an unused row (gradient zero)."""
    rng = np.random.default_rng(1)
    y = asx(xp, [0, 2, 2, 3])
    table = _rand(xp, rng, (5, 3))
    fwd = lambda tab: L.embedding_forward(y, tab)  # noqa: E731
    _check_pair(xp, fwd, L.embedding_backward, (table,), rng)
    out, cache = fwd(table)
    dt = L.embedding_backward(asx(xp, np.ones((4, 3))), cache)
    assert_close(dt[:, 0], [1, 0, 2, 1, 0], xp=xp, rtol=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        L.embedding_forward(asx(xp, [5]), table)


# ------------------------------------------------------------------ attention
@settings(max_examples=6)
@given(b=st.integers(1, 3), l=st.integers(1, 5), d=st.integers(1, 4), seed=st.integers(0, 99))
def test_attention_gradcheck(xp, b, l, d, seed):
    """Softmax attention backward MATH.md (13.14) and (13.15) (dq, dk, dv) against central
    differences."""
    rng = np.random.default_rng(seed)
    args = tuple(_rand(xp, rng, (b, l, d)) for _ in range(3))
    _check_pair(xp, L.attention_forward, L.attention_backward, args, rng)


def test_attention_key_gradient_sums_to_zero(xp):
    """MATH.md (13.15): rows of dS sum to zero (softmax is invariant to adding a constant
    to a row of scores), so sum_j dk_j = sum_i q_i sum_j dS_ij = 0: a common shift of all
    keys (e.g. the key bias of a qkv projection) has zero gradient."""
    rng = np.random.default_rng(8)
    q, k, v = (_rand(xp, rng, (2, 5, 3)) for _ in range(3))
    _, cache = L.attention_forward(q, k, v)
    _, dk, _ = L.attention_backward(_rand(xp, rng, (2, 5, 3)), cache)
    assert_close(xp.sum(dk, axis=1), np.zeros((2, 3)), xp=xp, atol=1e-13)


def test_attention_uniform_when_q_zero(xp):
    """MATH.md (13.14): with q = 0 all scores are equal, the softmax is uniform and every
    output row is the mean of v."""
    rng = np.random.default_rng(2)
    v = rng.standard_normal((2, 4, 3))
    out, _ = L.attention_forward(asx(xp, np.zeros((2, 4, 3))), _rand(xp, rng, (2, 4, 3)), asx(xp, v))
    assert_close(out, np.broadcast_to(v.mean(axis=1, keepdims=True), v.shape), xp=xp, rtol=1e-13)


def test_concat_gradcheck(xp):
    """Concatenation skip MATH.md (13.21): its backward splits dout by channels."""
    rng = np.random.default_rng(3)
    _check_pair(xp, L.concat_forward, L.concat_backward, (_rand(xp, rng, (2, 2, 3, 3)), _rand(xp, rng, (2, 3, 3, 3))), rng)


# ------------------------------------------------------------------ blocks
def _block_params(xp, rng, init, *a):
    P = {}
    init(P, *a)
    return {k: asx(xp, v + 0.3 * rng.standard_normal(v.shape)) for k, v in P.items()}


def _subset(rng, a, k=5):
    """At most k random flat indices of array a (keeps whole-block checks fast)."""
    size = int(np.prod(a.shape))
    return rng.choice(size, min(k, size), replace=False)


@settings(max_examples=5)
@given(groups=st.sampled_from([1, 2]), per_in=st.sampled_from([2, 3]), per_out=st.sampled_from([2, 3]),
       hw=st.integers(2, 4), seed=st.integers(0, 99))
def test_resblock_gradcheck(xp, groups, per_in, per_out, hw, seed):
    """Residual block MATH.md (13.16): dx, de and every parameter gradient (5 random
    entries per tensor) against central differences (identity skip when c_in = c_out,
    1x1 conv skip otherwise), with 1 or 2 GroupNorm groups of 2 or 3 channels each.  At
    least two channels per group: with one, the per-channel embedding shift would be
    cancelled by the mean subtraction exactly (de = 0), see MATH.md (13.16)."""
    c_in, c_out = groups * per_in, groups * per_out
    rng = np.random.default_rng(seed)
    P = _block_params(xp, rng, B.resblock_init, "r", c_in, c_out, 3, rng)
    x, e = _rand(xp, rng, (2, c_in, hw, hw)), _rand(xp, rng, (2, 3))
    out, cache = B.resblock_forward(P, "r", x, e, groups)
    dout = _rand(xp, rng, out.shape)
    G = {}
    dx, de = B.resblock_backward(G, P, "r", dout, cache)
    assert check_gradient(lambda a: inner(B.resblock_forward(P, "r", a, e, groups)[0], dout), x, dx) < GC_TOL
    assert check_gradient(lambda a: inner(B.resblock_forward(P, "r", x, a, groups)[0], dout), e, de) < GC_TOL
    assert set(G) == set(P)
    for k in P:
        f = lambda a, k=k: inner(B.resblock_forward({**P, k: a}, "r", x, e, groups)[0], dout)  # noqa: E731
        assert check_gradient(f, P[k], G[k], indices=_subset(rng, P[k]), floor=1e-3) < GC_TOL, k


def test_attnblock_gradcheck(xp):
    """Attention block MATH.md (13.17): dx and every parameter gradient against central
    differences on a 2x2 (4-token) image with 4 channels."""
    rng = np.random.default_rng(5)
    P = _block_params(xp, rng, B.attnblock_init, "a", 4, rng)
    x = _rand(xp, rng, (2, 4, 2, 2))
    out, cache = B.attnblock_forward(P, "a", x, 2)
    dout = _rand(xp, rng, out.shape)
    G = {}
    dx = B.attnblock_backward(G, P, "a", dout, cache)
    assert check_gradient(lambda a: inner(B.attnblock_forward(P, "a", a, 2)[0], dout), x, dx) < GC_TOL
    for k in P:
        f = lambda a, k=k: inner(B.attnblock_forward({**P, k: a}, "a", x, 2)[0], dout)  # noqa: E731
        # floor: the key bias gradient is exactly zero, MATH.md (13.15)
        assert check_gradient(f, P[k], G[k], indices=_subset(rng, P[k], 8), floor=1e-3) < GC_TOL, k


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-12, 1e-13), ("float32", 2e-6, 1e-6)])
def test_silu_extreme_inputs_no_overflow(xp, dtype, rtol, atol):
    """MATH.md (13.11) far in the tails: no overflow warning for |x| up to 1000, and SiLU and its
    derivative match a reference written with math.exp in the non-overflowing form
    (x < 0: x e^x / (1 + e^x)), to float rounding (absolute near 0, where SiLU underflows)."""
    import warnings

    xs = [-1000.0, -100.0, -40.0, -20.0, -5.0, -0.5, 0.0, 0.5, 5.0, 20.0, 40.0, 100.0, 1000.0]

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))

    want = [v * sig(v) for v in xs]
    dwant = [sig(v) * (1.0 + v * (1.0 - sig(v))) for v in xs]
    x = xp.asarray(np.array(xs), dtype=getattr(xp, dtype))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out, cache = L.silu_forward(x)
        dx = L.silu_backward(xp.ones_like(x), cache)
    assert_close(out, want, xp=xp, rtol=rtol, atol=atol)
    assert_close(dx, dwant, xp=xp, rtol=rtol, atol=atol)
