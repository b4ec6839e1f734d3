"""The residual block's time-embedding shift folded into the fused GroupNorm + SiLU
(``fast.groupnorm_silu_shift_forward`` / ``_backward``, ``fast.set_shift_fold``,
refdiff/nn/fast_hwnc_norm.py), MATH.md chapter 23.9: against the float64 reference
composition silu(groupnorm(x + c)) of the reference layers, the branch of the one-pass
statistics, the float32 bound, the switch, and the residual block and U-Net built on it.

Tolerances: float64 1e-12 normwise relative (the same map with the sums in another order);
float32 within the bound of MATH.md (23.11) against the composition's own float32 error.
The shift's gradient vanishes up to rounding when a group has one channel (a per-group
constant does not change GroupNorm), so its scale is floored like dx's in
tests/test_nn_fast_hwnc.py.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.nn import UNet, UNetConfig, blocks, fast
from refdiff.nn import conv as ref_conv
from refdiff.nn import fast_hwnc as hw
from refdiff.nn import fast_hwnc_norm as hwn
from refdiff.nn import layers as L

U32 = 2.0**-24


@pytest.fixture
def hwnc():
    """The tuned path in the hwnc layout with the fast form and the fold, restored afterwards."""
    old = fast.set_layout("hwnc"), fast.set_gnsilu("fast"), fast.set_shift_fold("fold")
    yield
    fast.set_layout(old[0])
    fast.set_gnsilu(old[1])
    fast.set_shift_fold(old[2])


def _as(a, dtype):
    """a (N, C, ...) as an NCHW view of a (..., N, C)-ordered array of dtype (plain below 3 axes)."""
    if a.ndim < 3:
        return np.ascontiguousarray(a, dtype=dtype)
    return hw.to_nchw(np.ascontiguousarray(np.transpose(a, tuple(range(2, a.ndim)) + (0, 1)), dtype=dtype))


def _reference(x, c, gamma, beta, dout, G):
    """float64 silu(groupnorm(x + c)) by the reference layers, MATH.md (13.9), MATH.md (13.11),
    and its gradients (dx by MATH.md (13.10); dc = the spatial sum of dx; dgamma, dbeta)."""
    y, c_n = L.groupnorm_forward(x + c[:, :, None, None], gamma, beta, G)
    o, c_s = L.silu_forward(y)
    ybar = L.silu_backward(dout, c_s)
    dx, dgamma, dbeta = L.groupnorm_backward(ybar, c_n)
    return (o, dx, dx.sum(axis=(2, 3)), dgamma, dbeta), ybar


def _case(rng, n, G, k, h, w, x_mean, c_mean, c_spread):
    C = G * k
    x = rng.standard_normal((n, C, h, w)) + x_mean
    c = c_mean + c_spread * rng.standard_normal((n, C))
    gamma, beta = 1 + rng.standard_normal(C), rng.standard_normal(C)
    return x, c, gamma, beta, rng.standard_normal(x.shape)


def _floor(x, c, gamma, dout, G):
    """0.1 max(1, max rstd |gamma|) ||dout||: the size of the rounding of dx (and of its
    spatial sums) where groups of one entry (or channel) make them vanish exactly."""
    n = x.shape[0]
    rstd = 1 / np.sqrt(np.var((x + c[:, :, None, None]).reshape(n, G, -1), axis=2) + 1e-5)
    return 0.1 * max(1.0, float(np.max(rstd)) * float(np.max(np.abs(gamma)))) * float(np.linalg.norm(dout))


def _scales(x, c, gamma, dout, G, want, ybar):
    """Each result's natural scale: ||out||; ||dx|| and ||sum_s |dx|||, both floored by
    :func:`_floor`; ||sum |ybar| (1 + |xhat|)|| for dgamma; ||sum |ybar||| for dbeta (the sums'
    own conditioning: xhat = 0 exactly for groups of one entry)."""
    n = x.shape[0]
    xs = (x + c[:, :, None, None]).reshape(n, G, -1)
    rstd = 1 / np.sqrt(xs.var(axis=2, keepdims=True) + 1e-5)
    xhat = ((xs - xs.mean(axis=2, keepdims=True)) * rstd).reshape(x.shape)
    floor = _floor(x, c, gamma, dout, G)
    return [float(np.linalg.norm(want[0])), max(float(np.linalg.norm(want[1])), floor),
            max(float(np.linalg.norm(np.abs(want[1]).sum(axis=(2, 3)))), floor),
            float(np.linalg.norm((np.abs(ybar) * (1 + np.abs(xhat))).sum(axis=(0, 2, 3)))),
            float(np.linalg.norm(np.abs(ybar).sum(axis=(0, 2, 3))))]


SHIFTS = st.sampled_from([(0.0, 0.0, 1.0), (0.0, 1.0, 0.5), (2.0, -1.0, 0.3), (0.0, 3.0, 0.1),
                          (-30.0, 30.0, 0.0), (5.0, 0.0, 4.0), (0.0, -100.0, 1.0)])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), G=st.sampled_from([1, 2, 4]), k=st.sampled_from([1, 2, 3, 8]), h=st.integers(1, 8),
       w=st.integers(1, 8), shifts=SHIFTS, seed=st.integers(0, 2**16))
def test_folded_shift_equals_the_composition_float64(hwnc, n, G, k, h, w, shifts, seed):
    """MATH.md (23.12), MATH.md (23.13): silu(groupnorm(x + c)) with the per-(n, c) shift c
    folded into the statistics (``sum (x + c) = S1 + S c``, ``sum (x + c)^2 = S2 + 2 c S1 +
    S c^2``) and into the row b, and the shift's gradient in closed form from the
    backward's sums (``sum_s dx = r (gamma Q / 2 - S mean(g)) - r^2 mean(g xhat) (Z - S m)``),
    equal in float64 to the reference composition silu(groupnorm(x + c)) of MATH.md (13.9),
    MATH.md (13.11) with gradients by MATH.md (13.10) and dc = sum_s dx: output, dx, dc,
    dgamma and dbeta within 1e-12 relative, on hypothesis shapes (odd sizes, groups of one
    channel, one pixel) and shifts that keep the one-pass branch or send the call to the
    two-pass one (x of mean -30 shifted by +30: the sums' magnitudes exceed the guard)."""
    rng = np.random.default_rng(seed)
    x, c, gamma, beta, dout = _case(rng, n, G, k, h, w, *shifts)
    want, ybar = _reference(x, c, gamma, beta, dout, G)
    out, cache = fast.groupnorm_silu_shift_forward(_as(x, "float64"), c, gamma, beta, G)
    assert cache[1] == "hwnc_fold"
    got = (out,) + tuple(fast.groupnorm_silu_shift_backward(_as(dout, "float64"), cache))
    for j, (a, b, scale) in enumerate(zip(got, want, _scales(x, c, gamma, dout, G, want, ybar))):
        assert a.shape == b.shape and a.dtype == np.float64, j
        assert np.linalg.norm(a - b) <= 1e-12 * scale, (j, float(np.linalg.norm(a - b)) / scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_folded_shift_branches(hwnc, dtype):
    """MATH.md (23.12): the one-pass branch (the cache holds x itself, no shifted or centred
    copy, and m = mean - c per (n, c)) while the guard holds; a shift that cancels a large
    mean of x (x about -30, c = 30: the sums of x^2 and c x are ~900 times the variance)
    takes the two-pass branch (a centred copy); both give the float64 composition."""
    rng = np.random.default_rng(7)
    for x_mean, c_mean, one_pass in ((0.5, 1.0, True), (-30.0, 30.0, False)):
        x, c, gamma, beta, dout = _case(rng, 2, 2, 4, 5, 3, x_mean, c_mean, 0.2)
        xa = _as(x, dtype)
        out, cache = fast.groupnorm_silu_shift_forward(xa, c.astype(dtype), gamma.astype(dtype),
                                                       beta.astype(dtype), 2)
        z, (m, _, _, _) = cache[0][0], cache[0][1]
        assert np.shares_memory(z, xa) == one_pass
        if one_pass:
            mean = (x + c[:, :, None, None]).reshape(2, 2, -1).mean(axis=2).repeat(4, axis=1)
            assert np.allclose(m, mean - c, rtol=1e-6, atol=1e-6)
        want, _ = _reference(x, c, gamma, beta, dout, 2)
        tol = 1e-12 if dtype == "float64" else 1e-5
        assert np.linalg.norm(out - want[0]) <= tol * np.linalg.norm(want[0])


def _run(x, c, gamma, beta, dout, G, dtype, fold):
    """Output and gradients of the shift + GroupNorm + SiLU in float32/64: ``fold`` the
    folded form, else the composition in the same dtype (the add, then GroupNorm then SiLU
    with the two layers' rounding, the exact fused form, then the sum of dx)."""
    old = fast.set_shift_fold("fold" if fold else "add"), fast.set_gnsilu("fast" if fold else "exact")
    try:
        out, cache = fast.groupnorm_silu_shift_forward(_as(x, dtype), c.astype(dtype), gamma.astype(dtype),
                                                       beta.astype(dtype), G)
        return (out,) + tuple(fast.groupnorm_silu_shift_backward(_as(dout, dtype), cache))
    finally:
        fast.set_shift_fold(old[0])
        fast.set_gnsilu(old[1])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), G=st.sampled_from([1, 2, 4]), k=st.sampled_from([1, 2, 3, 8]), h=st.integers(1, 8),
       w=st.integers(1, 8), shifts=SHIFTS, seed=st.integers(0, 2**16))
def test_folded_shift_float32_within_the_bound_of_the_composition(hwnc, n, G, k, h, w, shifts, seed):
    """MATH.md (23.11) for the folded form, MATH.md (23.12), MATH.md (23.13): in float32 the
    error of each result against the float64 reference is at most 17 times the float32
    composition's own (the shift added in float32, GroupNorm then SiLU with the two layers'
    rounding, dc the float32 sum of dx), or 17 u where that is below u, in units of the
    result's natural scale (:func:`_scales`)."""
    rng = np.random.default_rng(seed)
    x, c, gamma, beta, dout = _case(rng, n, G, k, h, w, *shifts)
    want, ybar = _reference(x, c, gamma, beta, dout, G)
    scales = _scales(x, c, gamma, dout, G, want, ybar)

    def errors(got):
        return [float(np.linalg.norm(np.asarray(a, np.float64) - b)) / s / U32 for a, b, s in zip(got, want, scales)]

    e_fold = errors(_run(x, c, gamma, beta, dout, G, "float32", True))
    e_two = errors(_run(x, c, gamma, beta, dout, G, "float32", False))
    for j, (f, e) in enumerate(zip(e_fold, e_two)):
        assert f <= 17 * max(e, 1.0), (j, f, e)


def test_add_mode_is_bitwise_the_composition_and_the_switch(hwnc):
    """``set_shift_fold("add")``: the shift added by add_channel_shift, then the fused layer,
    then the spatial sum of dx: bit for bit those three calls; a cache keeps the form that
    made it; an unknown mode is refused with its name and the valid ones."""
    rng = np.random.default_rng(1)
    x, c, gamma, beta, dout = (_as(a, "float32") for a in _case(rng, 3, 2, 4, 5, 6, 0.3, 0.5, 1.0))
    assert fast.set_shift_fold("add") == "fold"
    try:
        out, cache = fast.groupnorm_silu_shift_forward(x, c, gamma, beta, 2)
        got = fast.groupnorm_silu_shift_backward(dout, cache)
        o2, c2 = fast.groupnorm_silu_forward(fast.add_channel_shift(x, c), gamma, beta, 2)
        dx, dg, db = fast.groupnorm_silu_backward(dout, c2)
        assert np.array_equal(out, o2)
        for a, b in zip(got, (dx, dx.sum(axis=(2, 3)), dg, db)):
            assert np.array_equal(a, b)
        fast.set_shift_fold("fold")
        _, cache_f = fast.groupnorm_silu_shift_forward(x, c, gamma, beta, 2)
        fast.set_shift_fold("add")
        assert len(fast.groupnorm_silu_shift_backward(dout, cache_f)) == 4  # the folded cache's backward
        with pytest.raises(ValueError, match="shift fold mode must be one of \\['add', 'fold'\\], got 'both'"):
            fast.set_shift_fold("both")
        with pytest.raises(ValueError, match="shift must have x's \\(N, C\\) = \\(3, 8\\), got shape \\(3, 3\\)"):
            fast.groupnorm_silu_shift_forward(x, c[:, :3], gamma, beta, 2)
    finally:
        fast.set_shift_fold("fold")


def _ref_resblock(P, pre, x, e, G):
    """The residual block MATH.md (13.16) by the reference layers (conv.py, layers.py) in
    NCHW float64, forward and backward: (out, backward(dout) -> (grads, dx, de))."""
    cv = lambda n, h: ref_conv.conv2d_forward(h, P[pre + n + ".w"], P[pre + n + ".b"])  # noqa: E731
    y1, c1 = L.groupnorm_forward(x, P[pre + ".norm1.gamma"], P[pre + ".norm1.beta"], G)
    a1, s1 = L.silu_forward(y1)
    h1, k1 = cv(".conv1", a1)
    eo, ke = L.linear_forward(e, P[pre + ".emb.w"], P[pre + ".emb.b"])
    y2, c2 = L.groupnorm_forward(h1 + eo[:, :, None, None], P[pre + ".norm2.gamma"], P[pre + ".norm2.beta"], G)
    a2, s2 = L.silu_forward(y2)
    h2, k2 = cv(".conv2", a2)
    sk, kk = cv(".skip", x) if pre + ".skip.w" in P else (x, None)

    def backward(dout):
        g = {}
        d, g[pre + ".conv2.w"], g[pre + ".conv2.b"] = ref_conv.conv2d_backward(dout, k2)
        d, g[pre + ".norm2.gamma"], g[pre + ".norm2.beta"] = L.groupnorm_backward(L.silu_backward(d, s2), c2)
        de, g[pre + ".emb.w"], g[pre + ".emb.b"] = L.linear_backward(d.sum(axis=(2, 3)), ke)
        d, g[pre + ".conv1.w"], g[pre + ".conv1.b"] = ref_conv.conv2d_backward(d, k1)
        dx, g[pre + ".norm1.gamma"], g[pre + ".norm1.beta"] = L.groupnorm_backward(L.silu_backward(d, s1), c1)
        if kk is None:
            return g, dx + dout, de
        ds, g[pre + ".skip.w"], g[pre + ".skip.b"] = ref_conv.conv2d_backward(dout, kk)
        return g, dx + ds, de
    return sk + h2, backward


@pytest.mark.parametrize("c_in,hw_size", [(8, 8), (16, 5), (8, 1)])
def test_resblock_with_the_fold_equals_the_reference_block(hwnc, c_in, hw_size):
    """MATH.md (23.12), MATH.md (23.13) inside the residual block MATH.md (13.16): the tuned
    block (blocks.resblock_forward / resblock_backward, whose second GroupNorm + SiLU takes
    the time-embedding shift W_e e folded) equals in float64 the block written with the
    reference layers (shift added at every pixel, its gradient the spatial sum): output,
    dx, de and every parameter gradient, the embedding weights included, to 1e-12 relative
    (with and without the 1x1 skip, one-pixel images)."""
    rng = np.random.default_rng(11)
    P, N, E, G = {}, 3, 6, 4
    blocks.resblock_init(P, "b", c_in, 8, E, rng)
    for k in P:
        if k.endswith(".b") or k.endswith(".beta"):
            P[k] = 0.3 * rng.standard_normal(P[k].shape)  # non-zero biases reach every term
    x = rng.standard_normal((N, c_in, hw_size, hw_size))
    e = 2.0 * rng.standard_normal((N, E))
    dout = rng.standard_normal((N, 8, hw_size, hw_size))
    want_out, backward = _ref_resblock(P, "b", x, e, G)
    want = backward(dout)
    out, cache = blocks.resblock_forward(P, "b", _as(x, "float64"), e, G)
    Gd = {}
    dx, de = blocks.resblock_backward(Gd, P, "b", _as(dout, "float64"), cache)
    rel = lambda a, b: float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))  # noqa: E731
    assert rel(out, want_out) < 1e-12
    assert rel(dx, want[1]) < 1e-12
    for k, v in want[0].items():
        assert rel(Gd[k], v) < 1e-12, k
    assert set(Gd) == set(P)
    assert rel(de, want[2]) < 1e-12


def test_unet_fold_equals_add_float64(hwnc):
    """MATH.md (23.12), MATH.md (23.13) in the whole default U-Net (eight residual blocks):
    float64 output and every parameter gradient with the fold equal those with the shift
    added (``set_shift_fold("add")``) to 1e-12 relative."""
    model = UNet(UNetConfig())
    rng = np.random.default_rng(2)
    P = model.init_params(rng, dtype="float64")
    P["out.conv.w"] = 0.1 * rng.standard_normal(P["out.conv.w"].shape)
    x, t = rng.standard_normal((3, 1, 8, 8)), rng.integers(0, 1000, 3)
    dout = rng.standard_normal(x.shape)
    res = {}
    for mode in ("fold", "add"):
        fast.set_shift_fold(mode)
        out, cache = model.forward(P, x, t)
        res[mode] = (out, model.backward(P, cache, dout)[0])
    fast.set_shift_fold("fold")
    (o1, g1), (o2, g2) = res["fold"], res["add"]
    assert np.linalg.norm(o1 - o2) <= 1e-12 * np.linalg.norm(o2)
    for k in g2:
        assert np.linalg.norm(g1[k] - g2[k]) <= 1e-12 * max(np.linalg.norm(g2[k]), 1e-300), k
    assert hwn._CANCEL_MAX == 8.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_folded_shift_recomputed_cache_is_bitwise_the_kept_one(hwnc, dtype, monkeypatch):
    """MATH.md (23.12), MATH.md (23.13) with the large-array cache of MATH.md (23.10): above
    ``_KEEP_HU_FLOATS`` numbers the folded form keeps z and the rows (the shift inside b)
    and the backward pass forms h, u and o again; output and every gradient, the shift's
    included, are then exactly (==) those of the cache that kept u and o (threshold 0
    forces the recomputation)."""
    rng = np.random.default_rng(5)
    x, c, gamma, beta, dout = (_as(a, dtype) for a in _case(rng, 3, 2, 4, 5, 4, 0.5, 1.0, 0.7))
    out_k, cache_k = fast.groupnorm_silu_shift_forward(x, c, gamma, beta, 2)
    want = fast.groupnorm_silu_shift_backward(dout, cache_k)
    monkeypatch.setattr(hwn, "_KEEP_HU_FLOATS", 0)
    out_r, cache_r = fast.groupnorm_silu_shift_forward(x, c, gamma, beta, 2)
    got = fast.groupnorm_silu_shift_backward(dout, cache_r)
    assert cache_r[0][2] is None and cache_k[0][2] is not None
    assert np.array_equal(out_r, out_k)
    for j, (a, b) in enumerate(zip(got, want)):
        assert np.array_equal(a, b), j
