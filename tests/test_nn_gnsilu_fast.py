"""The "fast" fused GroupNorm + SiLU of the hwnc layout (``fast.set_gnsilu("fast")``,
refdiff/nn/fast_hwnc_norm.py) against the float64 reference composition, MATH.md chapter 23.8.

float64 agreement (1e-12) on hypothesis shapes is tested with the other forms in
tests/test_nn_fast_hwnc.py (``test_groupnorm_silu_equals_the_composition``); here: the
float32 bound of MATH.md (23.11) against the two-layer composition's own float32 error,
the branch of the one-pass statistics, and the switch.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.nn import fast
from refdiff.nn import fast_hwnc as hw
from refdiff.nn import fast_hwnc_norm as hwn
from refdiff.nn import layers as L

U32 = 2.0**-24


@pytest.fixture
def hwnc():
    """The tuned path in the hwnc layout for the test, restored afterwards."""
    old = fast.set_layout("hwnc")
    yield
    fast.set_layout(old)


def _as(a, dtype):
    """a (N, C, ...) as an NCHW view of a (..., N, C)-ordered array of dtype."""
    if a.ndim < 3:
        return np.ascontiguousarray(a, dtype=dtype)
    return hw.to_nchw(np.ascontiguousarray(np.transpose(a, tuple(range(2, a.ndim)) + (0, 1)), dtype=dtype))


def _run(form, x, gamma, beta, dout, G, dtype):
    """Output and gradients of the fused layer in ``form`` on dtype copies of the inputs."""
    old = fast.set_gnsilu(form)
    try:
        out, cache = fast.groupnorm_silu_forward(_as(x, dtype), _as(gamma, dtype), _as(beta, dtype), G)
        return (out,) + tuple(fast.groupnorm_silu_backward(_as(dout, dtype), cache))
    finally:
        fast.set_gnsilu(old)


def _scaled_errors(got, want, scales):
    """Normwise errors of each result against the float64 reference, in units of u = 2^-24
    of its natural scale."""
    return [float(np.linalg.norm(np.asarray(a, np.float64) - w)) / s / U32 for a, w, s in zip(got, want, scales)]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), G=st.sampled_from([1, 2, 4]), k=st.sampled_from([1, 2, 3, 8]), h=st.integers(1, 8),
       w=st.integers(1, 8), shift=st.sampled_from([0.0, 1.0, 2.0, 2.8, 3.0, 10.0]), seed=st.integers(0, 2**16))
def test_fast_form_float32_within_the_bound_of_the_composition(hwnc, n, G, k, h, w, shift, seed):
    """MATH.md (23.11): in float32 the fast form's error against the float64 reference
    composition silu(groupnorm(x)) (MATH.md (13.9), MATH.md (13.11), gradients by MATH.md
    (13.10)) is at most (1 + 2 R) = 17 times the two-layer form's own float32 error on the
    same case (or 17 u where that is below u), for the output and every gradient, with the
    one-pass statistics of MATH.md (23.9) (shifts 0-2.8: mean^2 <= 8 var) and the two-pass
    branch (3, 10), and the backward pass of MATH.md (23.10).  Errors are normwise, in units
    of each result's natural scale: ||out||, ||dx|| (floored where groups of one entry make dx
    vanish up to rounding, as in tests/test_nn_fast_hwnc.py), ||sum |ybar| (1 + |xhat|)||
    for dgamma and ||sum |ybar||| for dbeta (the sums' own conditioning)."""
    C = G * k
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, C, h, w)) + shift
    gamma, beta = 1 + rng.standard_normal(C), rng.standard_normal(C)
    dout = rng.standard_normal(x.shape)
    y, c_n = L.groupnorm_forward(x, gamma, beta, G)
    o, c_s = L.silu_forward(y)
    ybar = L.silu_backward(dout, c_s)
    want = (o,) + tuple(L.groupnorm_backward(ybar, c_n))
    xr = x.reshape(n, G, -1)
    rstd = 1 / np.sqrt(xr.var(axis=2, keepdims=True) + 1e-5)
    xhat = ((xr - xr.mean(axis=2, keepdims=True)) * rstd).reshape(x.shape)
    floor = 0.1 * max(1.0, float(np.max(rstd)) * float(np.max(np.abs(gamma)))) * float(np.linalg.norm(dout))
    scales = [np.linalg.norm(o), max(float(np.linalg.norm(want[1])), floor),
              np.linalg.norm((np.abs(ybar) * (1 + np.abs(xhat))).sum(axis=(0, 2, 3))),
              np.linalg.norm(np.abs(ybar).sum(axis=(0, 2, 3)))]
    e_fast = _scaled_errors(_run("fast", x, gamma, beta, dout, G, "float32"), want, scales)
    e_exact = _scaled_errors(_run("exact", x, gamma, beta, dout, G, "float32"), want, scales)
    for j, (f, e) in enumerate(zip(e_fast, e_exact)):
        assert f <= 17 * max(e, 1.0), (j, f, e)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_pass_statistics_branch(hwnc, dtype):
    """MATH.md (23.9): the one-pass statistics (sum and sum of squares) are used while every
    group has mean^2 <= 8 var; the cache then holds x itself (no centred copy) and the
    per-(n, group) shift m = mean; a group beyond (here mean^2 = 25 var in one sample's
    group) sends the call to the two-pass form (centred copy, m = 0).  Both branches give
    the float64 composition to 1e-12 in float64."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 3))
    x[1, :2] = x[1, :2] * 0.2 + 1.0  # mean 1, std 0.2: mean^2 = 25 var
    for data, one_pass in ((x[:1] + 2.0, True), (x, False)):
        xa = _as(data, dtype)
        gamma, beta = np.ones(4, dtype), np.zeros(4, dtype)
        old = fast.set_gnsilu("fast")
        try:
            out, cache = fast.groupnorm_silu_forward(xa, gamma, beta, 2)
        finally:
            fast.set_gnsilu(old)
        z, m = cache[0][0], cache[0][1][0]
        assert np.shares_memory(z, xa) == one_pass
        assert np.any(m != 0) == one_pass
        y, _ = L.groupnorm_forward(data, np.ones(4), np.zeros(4), 2)
        want, _ = L.silu_forward(y)
        tol = 1e-12 if dtype == "float64" else 1e-5
        assert np.linalg.norm(out - want) <= tol * np.linalg.norm(want)


def test_set_gnsilu_switch_and_refusal():
    """fast.set_gnsilu returns the previous form, a cache keeps the form that made it
    (switching between a forward and its backward is safe), and an unknown form is
    refused with its name and the valid ones."""
    old = fast.set_gnsilu("exact")
    try:
        assert fast.get_gnsilu() == "exact"
        assert fast.set_gnsilu("fast") == "exact"
        with pytest.raises(ValueError, match="gnsilu mode must be one of \\['exact', 'fast'\\], got 'quick'"):
            fast.set_gnsilu("quick")
        assert fast.get_gnsilu() == "fast"
        old_layout = fast.set_layout("hwnc")
        try:
            rng = np.random.default_rng(0)
            x, d = _as(rng.standard_normal((2, 4, 3, 3)), "float64"), _as(rng.standard_normal((2, 4, 3, 3)), "float64")
            g = np.ones(4)
            _, cache = fast.groupnorm_silu_forward(x, g, g, 2)
            fast.set_gnsilu("exact")
            got = fast.groupnorm_silu_backward(d, cache)  # the fast form's backward
            want = hwn.groupnorm_silu_backward_fast(d, cache[0])
            for a, b in zip(got, want):
                assert np.array_equal(a, b)
        finally:
            fast.set_layout(old_layout)
    finally:
        fast.set_gnsilu(old)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_form_recomputed_cache_is_bitwise_the_kept_one(hwnc, dtype, monkeypatch):
    """MATH.md (23.10): above ``_KEEP_HU_FLOATS`` numbers the fast form caches z and the
    rows alone and its backward pass forms h = z a + b, u = 1 + tanh h and o = h u again
    with the forward's operations; the gradients are then exactly (==) those of the cache
    that kept u and o (the threshold set to 0 forces the recomputation)."""
    rng = np.random.default_rng(5)
    x, dout = (_as(rng.standard_normal((3, 8, 5, 4)) + 1, dtype) for _ in range(2))
    gamma, beta = (_as(1 + rng.standard_normal(8), dtype) for _ in range(2))
    old = fast.set_gnsilu("fast")
    try:
        out_k, cache_k = fast.groupnorm_silu_forward(x, gamma, beta, 4)
        want = fast.groupnorm_silu_backward(dout, cache_k)
        monkeypatch.setattr(hwn, "_KEEP_HU_FLOATS", 0)
        out_r, cache_r = fast.groupnorm_silu_forward(x, gamma, beta, 4)
        got = fast.groupnorm_silu_backward(dout, cache_r)
    finally:
        fast.set_gnsilu(old)
    assert cache_r[0][2] is None and cache_k[0][2] is not None
    assert np.array_equal(out_r, out_k)
    for j, (a, b) in enumerate(zip(got, want)):
        assert np.array_equal(a, b), j
