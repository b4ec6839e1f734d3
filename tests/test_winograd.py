"""Winograd F(m x m, 3 x 3) convolution (refdiff.nn.winograd, the tuned path's default
for 3x3 stride-1 convolutions) against exact arithmetic, the reference convolution and
central differences, MATH.md chapter 23."""

from fractions import Fraction

import numpy as np

from refdiff.backend import to_numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff.nn as nn
from refdiff.nn import conv as ref
from refdiff.nn import fast
from refdiff.nn.winograd import conv3x3_backward, conv3x3_forward, winograd_matrices
from tests.test_nn_models import _check_model, _per_tensor, _perturbed
from tests._support import asx


@pytest.fixture(autouse=True)
def _chwn_layout():
    """These tests are about the (C, H, W, N) layout of refdiff.nn.fast (the hwnc layout,
    the default, is tested in tests/test_nn_fast_hwnc.py)."""
    old = fast.set_layout("chwn")
    yield
    fast.set_layout(old)


@pytest.fixture
def method():
    """Restores the tuned path's 3x3 method after a test that switches it."""
    old = fast.get_conv3x3()
    yield fast.set_conv3x3
    fast.set_conv3x3(old)


@pytest.mark.parametrize("m", [2, 4])
def test_one_dimensional_minimal_filtering_is_exact(m):
    """MATH.md (23.1): in exact rational arithmetic A^T [(G g) * (B^T d)] is the
    correlation y_i = sum_k d_{i+k} g_k for every length-(m + 2) signal d and 3-tap filter
    g (checked on 20 random integer pairs; a single wrong matrix entry breaks it), and
    the 2-D tile formula A^T [(G w G^T) * (B^T D B)] A of MATH.md (23.2) is the 2-D
    correlation of an (m + 2) x (m + 2) tile."""
    BT, G, AT = winograd_matrices(m)
    rng = np.random.default_rng(m)

    def mat(M, v):
        return [sum((M[i][k] * v[k] for k in range(len(v))), Fraction(0)) for i in range(len(M))]

    def matmat(M, X):  # M X for lists of rows
        return [[sum((M[i][k] * X[k][j] for k in range(len(X))), Fraction(0)) for j in range(len(X[0]))]
                for i in range(len(M))]

    T = lambda X: [list(r) for r in zip(*X)]  # noqa: E731
    for _ in range(20):
        d = [Fraction(int(v)) for v in rng.integers(-9, 10, m + 2)]
        g = [Fraction(int(v)) for v in rng.integers(-9, 10, 3)]
        y = mat(AT, [a * b for a, b in zip(mat(G, g), mat(BT, d))])
        assert y == [sum(d[i + k] * g[k] for k in range(3)) for i in range(m)]
    D = [[Fraction(int(v)) for v in row] for row in rng.integers(-9, 10, (m + 2, m + 2))]
    w = [[Fraction(int(v)) for v in row] for row in rng.integers(-9, 10, (3, 3))]
    Wt, Ut = matmat(matmat(G, w), T(G)), matmat(matmat(BT, D), T(BT))
    Y = matmat(matmat(AT, [[a * b for a, b in zip(r, s)] for r, s in zip(Wt, Ut)]), T(AT))
    assert Y == [[sum(D[i + p][j + q] * w[p][q] for p in range(3) for q in range(3)) for j in range(m)]
                 for i in range(m)]


def _case(rng, n, c, f, h, w, dtype=np.float64):
    x = rng.standard_normal((n, c, h, w))
    k = rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)
    b = rng.standard_normal(f)
    d = rng.standard_normal((n, f, h, w))
    return x, k, b, d


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300))


@given(n=st.integers(1, 3), c=st.integers(2, 5), f=st.integers(1, 4), h=st.integers(1, 11), w=st.integers(1, 11),
       m=st.sampled_from([2, 4]), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_winograd_equals_reference_convolution_float64(n, c, f, h, w, m, seed):
    """MATH.md (23.2), MATH.md (23.3), MATH.md (23.4): the Winograd forward, the input
    gradient through the adjoint input transform (overlap-add of B dU B^T), the kernel
    gradient G^T dWt G and the bias gradient equal the reference convolution's (13.4)-(13.6)
    to 1e-12 relative in float64, on drawn sizes 1..11: odd sizes and sizes that are not
    multiples of m need zero-padded tiles and cropping (and a size-1 image has one tile
    of which one output is kept)."""
    rng = np.random.default_rng(seed)
    x, k, b, d = _case(rng, n, c, f, h, w)
    y, cache = ref.conv2d_forward(x, k, b, stride=1, pad=1)
    dx, dk, db = ref.conv2d_backward(d, cache)
    xT = np.ascontiguousarray(np.transpose(x, (1, 2, 3, 0)))
    out, wc = conv3x3_forward(np, xT, k, b, m)
    dxT, dk2, db2 = conv3x3_backward(np, np.ascontiguousarray(np.transpose(d, (1, 2, 3, 0))), wc)
    assert _rel(np.transpose(out, (3, 0, 1, 2)), y) < 1e-12
    assert _rel(np.transpose(dxT, (3, 0, 1, 2)), dx) < 1e-12
    assert _rel(dk2, dk) < 1e-12 and _rel(db2, db) < 1e-12


def test_winograd_through_the_tuned_layer_in_every_namespace(xp, method):
    """MATH.md (23.2) and MATH.md (23.3): refdiff.nn.fast.conv2d_forward/backward with the
    F(4,3) and F(2,3) switches equal the direct method in NumPy and array_api_strict (and
    CuPy on a GPU), float64, 1e-12 relative; 1x1 and strided convolutions keep the
    direct method (their caches are not Winograd ones)."""
    rng = np.random.default_rng(5)
    x, k, b, d = (asx(xp, a) for a in _case(rng, 2, 3, 4, 6, 5))
    method("direct")
    y0, c0 = fast.conv2d_forward(x, k, b)
    g0 = fast.conv2d_backward(d, c0)
    for mth in ("f43", "f23"):
        method(mth)
        y1, c1 = fast.conv2d_forward(x, k, b)
        assert isinstance(c1[0], str)
        g1 = fast.conv2d_backward(d, c1)
        for a, e in zip((y1, *g1), (y0, *g0)):
            assert _rel(to_numpy(a), to_numpy(e)) < 1e-12  # to_numpy: CuPy refuses implicit host copies
    _, c2 = fast.conv2d_forward(x, k, b, stride=2)
    assert not isinstance(c2[0], str)
    with pytest.raises(ValueError, match="conv3x3 method must be one of"):
        fast.set_conv3x3("f63")


@pytest.mark.parametrize("shape", [(4, 16, 16, 8, 8), (2, 32, 32, 7, 9), (8, 64, 64, 4, 4), (3, 3, 5, 11, 6)])
def test_float32_error_within_the_stated_bound(shape, method):
    """MATH.md (23.5): in float32 the error of each method is measured against the float64
    reference (max-norm relative, forward, dx and dW).  F(2,3) (transform entries 0, +-1/2,
    +-1) stays within 4x the direct method's own float32 error; F(4,3) (entries up to 8 in
    A^T, 5 in B^T, 1/24 in G) within 40x, and within 2e-5 absolute-relative, the growth
    that (23.5) predicts (measured 3-20x on these shapes).  Each bound is taken against
    max(direct error, 2^-24) so that a lucky exact direct result does not make it zero."""
    rng = np.random.default_rng(11)
    x, k, b, d = _case(rng, *shape)
    y, cache = ref.conv2d_forward(x, k, b, stride=1, pad=1)
    exact = (y, *ref.conv2d_backward(d, cache)[:2])
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    errs = {}
    for mth in ("direct", "f23", "f43"):
        method(mth)
        y3, c3 = fast.conv2d_forward(f32(x), f32(k), f32(b))
        got = (y3, *fast.conv2d_backward(f32(d), c3)[:2])
        errs[mth] = [_rel(a, e) for a, e in zip(got, exact)]
    for i in range(3):
        base = max(errs["direct"][i], 2.0**-24)
        assert errs["f23"][i] <= 4 * base, (i, errs)
        assert errs["f43"][i] <= 40 * base and errs["f43"][i] < 2e-5, (i, errs)


@pytest.mark.parametrize("mth", ["f43", "f23"])
def test_unet_gradcheck_through_winograd(mth, method):
    """Whole-model central differences, MATH.md (13.19), through the tuned path with every
    3x3 convolution computed by Winograd (MATH.md (23.2), MATH.md (23.3), MATH.md (23.4)):
    a U-Net with 4 and 8 channels on an 8x8 image (tiles 8 = 2 x 4 at the top, 4 and a
    cropped 2x2 level below for F(4,3)), class conditioning: random entries of dx and of
    every parameter tensor, float64."""
    method(mth)
    rng = np.random.default_rng(3)
    cfg = nn.UNetConfig(base_channels=4, channel_mults=(1, 2, 2), groups=2, time_embed_dim=8, num_classes=3)
    model = nn.UNet(cfg)
    P = _perturbed(model, np, rng)
    x = rng.standard_normal((2, 1, 8, 8))
    _check_model(np, model, P, x, np.array([3, 700]), np.array([1, 3]), rng, per_tensor=_per_tensor(np, 2))
