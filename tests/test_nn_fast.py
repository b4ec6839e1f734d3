"""The tuned layers (refdiff.nn.fast) against the reference layers (refdiff.nn.layers):
the same maps, forward and backward, on hypothesis-drawn shapes (MATH.md chapter 13).

The reference layers are checked against central differences, adjoint identities and loop
definitions in test_nn_layers.py; here each tuned twin is checked against its reference.
Every input is given to the tuned layer both as a plain NCHW array and as a transposed
view of a (C, H, W, N) array, the memory order the tuned convolution produces, since the
tuned code takes different paths for the two.

Tolerances.  float64: both sides compute the same sums in a different order, so they agree
to a normwise relative error of a few units of float64 rounding times the sum length
(<= 3 * 3 * 6 = 54 terms here): < 1e-12.  float32 (both sides in float32): the same
argument with u = 6e-8 gives ~54 u ~ 3e-6 in the worst case for a convolution, and the
GroupNorm backward subtracts two group means from g, which can cancel to a result ~10x
smaller than g; the bound is 1e-4 normwise (measured over 200 random cases: <= 4e-7, except
the bias gradient of the convolution, a sum of up to N H W random terms that cancels, 3e-6).
A gradient can vanish exactly (GroupNorm over a group of one or two entries: the output
does not depend on x), where both sides return rounding noise; the backward comparisons
therefore floor the denominator at 0.1 ||dout||, the scale of gradients of these layers
(|gamma| r ~ 1 with the inputs drawn here).
"""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from refdiff.backend import to_numpy
from refdiff.nn import fast
from refdiff.nn import layers as L
from refdiff.nn.gradcheck import relative_error
from tests._support import asx

@pytest.fixture(autouse=True)
def _chwn_layout():
    """These tests are about the (C, H, W, N) layout of refdiff.nn.fast (the hwnc layout,
    the default, is tested in tests/test_nn_fast_hwnc.py)."""
    old = fast.set_layout("chwn")
    yield
    fast.set_layout(old)


TOL = {"float64": 1e-12, "float32": 1e-4}
DTYPES = sorted(TOL)


def _as(xp, a, dtype, chwn):
    """Host array ``a`` (N, C, ...) in namespace xp and ``dtype``; when ``chwn`` as a
    transposed view of a (C, ..., N)-ordered array (the tuned convolution's output order)."""
    dt = getattr(xp, dtype)
    if not chwn or a.ndim < 2:
        return xp.asarray(np.ascontiguousarray(a), dtype=dt)
    perm = tuple(range(1, a.ndim)) + (0,)
    inv = (a.ndim - 1,) + tuple(range(a.ndim - 1))
    return xp.permute_dims(xp.asarray(np.ascontiguousarray(np.transpose(a, perm)), dtype=dt), inv)


def _same(xp, got, ref, dtype, what, floor=0.0):
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} vs {ref.dtype}"
    assert tuple(got.shape) == tuple(ref.shape), f"{what}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    err = relative_error(to_numpy(got), to_numpy(ref), floor=floor)
    assert err < TOL[dtype], f"{what} ({dtype}): relative error {err:.2e}"


def _pair(xp, name, args_host, dtype, chwn, rng, kwargs=None, n_grads=None):
    """Run ``name``'s tuned and reference forward on the same inputs and backward on the
    same random dout; compare output and every gradient."""
    kwargs = kwargs or {}
    a = [_as(xp, h, dtype, chwn) if isinstance(h, np.ndarray) else h for h in args_host]
    out_f, cache_f = getattr(fast, name + "_forward")(*a, **kwargs)
    out_r, cache_r = getattr(L, name + "_forward")(*a, **kwargs)
    _same(xp, out_f, out_r, dtype, name + " forward")
    dout = _as(xp, rng.standard_normal(tuple(out_r.shape)), dtype, chwn)
    g_f = getattr(fast, name + "_backward")(dout, cache_f)
    g_r = getattr(L, name + "_backward")(dout, cache_r)
    g_f, g_r = (g if isinstance(g, tuple) else (g,) for g in (g_f, g_r))
    assert len(g_f) == len(g_r)
    floor = 0.1 * float(np.linalg.norm(to_numpy(dout)))  # see the module docstring
    for j, (u, v) in enumerate(zip(g_f, g_r)):
        _same(xp, u, v, dtype, f"{name} backward, gradient {j}", floor)


CONV_KINDS = {"3x3": (3, 1, 1), "1x1": (1, 1, 0), "down": (3, 2, 1), "3x3_pad0": (3, 1, 0), "2x2_s2": (2, 2, 0)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
@settings(max_examples=5)
@given(n=st.integers(1, 3), c=st.integers(1, 6), f=st.integers(1, 4), h=st.integers(3, 7), w=st.integers(3, 7),
       chwn=st.booleans(), seed=st.integers(0, 999))
def test_conv2d_tuned_equals_reference(xp, dtype, kind, n, c, f, h, w, chwn, seed):
    """Tuned convolution (blocked gather in (C, H, W, N) order, three backward paths) =
    the reference im2col product MATH.md (13.4) with col2im backward (13.5), (13.6)."""
    k, stride, pad = CONV_KINDS[kind]
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, k, k)), rng.standard_normal(f)]
    _pair(xp, "conv2d", args, dtype, chwn, rng, {"stride": stride, "pad": pad})


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=8)
@given(n=st.integers(1, 3), groups=st.integers(1, 3), per=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 4), min_size=0, max_size=2), chwn=st.booleans(), seed=st.integers(0, 999))
def test_groupnorm_tuned_equals_reference(xp, dtype, n, groups, per, spatial, chwn, seed):
    """Tuned GroupNorm ((G, M, N) view, in-place xhat, backward from per-(channel, sample)
    sums) = the reference transcription of MATH.md (13.9) and (13.10)."""
    assume(per * int(np.prod(spatial)) >= 2)  # a one-entry group has variance 0 and r = eps^(-1/2) ~ 316
    rng = np.random.default_rng(seed)
    c = groups * per
    args = [3.0 * rng.standard_normal((n, c, *spatial)) + 1.0, rng.standard_normal(c), rng.standard_normal(c), groups]
    _pair(xp, "groupnorm", args, dtype, chwn, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=6)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), chwn=st.booleans(), seed=st.integers(0, 999))
def test_silu_tuned_equals_reference(xp, dtype, shape, chwn, seed):
    """Tuned SiLU (in-place updates keeping the input's memory order) = MATH.md (13.11)."""
    rng = np.random.default_rng(seed)
    _pair(xp, "silu", [4.0 * rng.standard_normal(tuple(shape))], dtype, chwn, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=6)
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3), chwn=st.booleans(),
       seed=st.integers(0, 999))
def test_resampling_tuned_equals_reference(xp, dtype, n, c, h, w, chwn, seed):
    """Tuned nearest x2 upsampling and 2x2 average pooling (built in (C, H, W, N) order) =
    the reference NCHW forms of MATH.md (13.7) and (13.8)."""
    rng = np.random.default_rng(seed)
    _pair(xp, "upsample2x", [rng.standard_normal((n, c, h, w))], dtype, chwn, rng)
    _pair(xp, "avgpool2x", [rng.standard_normal((n, c, 2 * h, 2 * w))], dtype, chwn, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=6)
@given(n=st.integers(1, 3), ca=st.integers(1, 3), cb=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       chwn=st.booleans(), seed=st.integers(0, 999))
def test_concat_and_channel_shift_tuned_equal_reference(xp, dtype, n, ca, cb, h, w, chwn, seed):
    """Tuned channel concatenation = MATH.md (13.21), and the tuned per-channel shift of
    the residual block equals ``h + e[:, :, None, None]`` (MATH.md (13.16))."""
    rng = np.random.default_rng(seed)
    _pair(xp, "concat", [rng.standard_normal((n, ca, h, w)), rng.standard_normal((n, cb, h, w))], dtype, chwn, rng)
    hh = _as(xp, rng.standard_normal((n, ca, h, w)), dtype, chwn)
    e = _as(xp, rng.standard_normal((n, ca)), dtype, False)
    _same(xp, fast.add_channel_shift(hh, e), hh + e[:, :, None, None], dtype, "add_channel_shift")


def test_tuned_conv_keeps_memory_order_and_reference_is_nchw():
    """What the tuned path is for: on NumPy its convolution output is a transposed view of
    a (F, Ho, Wo, N)-contiguous array and GroupNorm, SiLU and the next convolution keep
    that order; the reference layers return plain C-ordered NCHW arrays."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 6, 6))
    w, b = rng.standard_normal((8, 3, 3, 3)), np.zeros(8)
    h, _ = fast.conv2d_forward(x, w, b)
    assert np.transpose(h, (1, 2, 3, 0)).flags.c_contiguous
    h, _ = fast.groupnorm_forward(h, np.ones(8), np.zeros(8), 2)
    h, _ = fast.silu_forward(h)
    assert np.transpose(h, (1, 2, 3, 0)).flags.c_contiguous
    r, _ = L.conv2d_forward(x, w, b)
    r, _ = L.groupnorm_forward(r, np.ones(8), np.zeros(8), 2)
    assert r.flags.c_contiguous
