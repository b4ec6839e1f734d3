"""The tuned path in the channels-last layout (``refdiff.nn.fast.set_layout("hwnc")``,
refdiff/nn/fast_hwnc.py) against the reference layers, MATH.md chapters 13 and 23.

Same comparisons as tests/test_nn_fast.py (every layer, forward and every gradient, on
hypothesis-drawn shapes, each input given as a plain NCHW array and as an NCHW view of an
(H, W, N, C) array, the memory order this layout produces), with the layout switched.

Tolerances.  float64: < 1e-12 normwise relative (the same sums in another order; for the
Winograd convolution the transforms' exact rational entries add a few units of rounding).
float32: 1e-4 normwise for the layers other than the Winograd convolution (the argument of
tests/test_nn_fast.py), and for the Winograd convolution the bound of MATH.md (23.5):
within 40x the direct method's own float32 error measured on the same case (the transform
entries of F(4,3), up to 8 in A^T and 5 in B^T, scale the rounding errors; measured 3-20x)
and below 2e-5 (max-norm relative, against the float64 reference).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import refdiff.nn as nn
from refdiff.nn import conv as ref
from refdiff.nn import fast
from refdiff.nn import fast_hwnc as hw
from refdiff.nn import fast_hwnc_norm as hwn
from refdiff.nn import layers as L
from refdiff.nn.gradcheck import relative_error
from refdiff.nn.winograd import winograd_matrices
from tests.test_nn_models import _check_model, _per_tensor, _perturbed

TOL = {"float64": 1e-12, "float32": 1e-4}


@pytest.fixture
def hwnc():
    """The tuned path in the hwnc layout for the test, restored afterwards."""
    old = fast.set_layout("hwnc")
    yield
    fast.set_layout(old)


@pytest.fixture
def gnsilu_exact():
    """The bit-identical fused GroupNorm + SiLU (fast.set_gnsilu("exact")), restored afterwards."""
    old = fast.set_gnsilu("exact")
    yield
    fast.set_gnsilu(old)


def _as(a, dtype, hwnc_order):
    """Host array ``a`` (N, C, ...) as ``dtype``; when ``hwnc_order`` an NCHW view of an
    (..., N, C)-ordered array."""
    if not hwnc_order or a.ndim < 3:
        return np.ascontiguousarray(a, dtype=dtype)
    return hw.to_nchw(np.ascontiguousarray(np.transpose(a, tuple(range(2, a.ndim)) + (0, 1)), dtype=dtype))


def _same(got, want, tol, what, floor=0.0):
    assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape), what
    err = relative_error(np.asarray(got), np.asarray(want), floor=floor)
    assert err < tol, f"{what}: relative error {err:.2e}"


def _pair(name, args, dtype, order, rng, kwargs=None, floor_scale=1.0):
    """Tuned (hwnc) and reference forward on the same inputs, backward on the same dout."""
    kwargs = kwargs or {}
    a = [_as(h, dtype, order) if isinstance(h, np.ndarray) else h for h in args]
    out_f, cache_f = getattr(fast, name + "_forward")(*a, **kwargs)
    out_r, cache_r = getattr(L, name + "_forward")(*a, **kwargs)
    _same(out_f, out_r, TOL[dtype], name + " forward")
    dout = _as(rng.standard_normal(tuple(out_r.shape)), dtype, order)
    g_f = getattr(fast, name + "_backward")(dout, cache_f)
    g_r = getattr(L, name + "_backward")(dout, cache_r)
    g_f, g_r = (g if isinstance(g, tuple) else (g,) for g in (g_f, g_r))
    floor = 0.1 * floor_scale * float(np.linalg.norm(dout))  # vanishing GroupNorm gradients: see test_nn_fast.py
    for j, (u, v) in enumerate(zip(g_f, g_r)):
        _same(u, v, TOL[dtype], f"{name} backward, gradient {j}", floor)
    return cache_f


CONV_KINDS = {"3x3": (3, 1, 1), "1x1": (1, 1, 0), "down": (3, 2, 1), "3x3_pad0": (3, 1, 0), "2x2_s2": (2, 2, 0)}


@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 6), f=st.integers(1, 4), h=st.integers(3, 11), w=st.integers(3, 11),
       order=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_equals_reference_float64(hwnc, kind, n, c, f, h, w, order, seed):
    """MATH.md (13.4), MATH.md (13.5), MATH.md (13.6) computed in the hwnc layout: 3x3
    stride-1 kernels with C >= 2 by Winograd F(4,3) in the batched form of MATH.md (23.6)
    (sizes 3..11: odd sizes and sizes that are not multiples of 4 need padded tiles and
    cropping), 1x1 kernels as one product, the others through the direct method; output,
    dx, dw and db equal the reference convolution to 1e-12 in float64."""
    k, s, p = CONV_KINDS[kind]
    rng = np.random.default_rng(seed)
    x, wk, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, k, k)), rng.standard_normal(f)
    cache = _pair("conv2d", [x, wk, b], "float64", order, rng, {"stride": s, "pad": p})
    wino = kind == "3x3" and c >= 2 and f > hw._TAPS_MAX_F
    assert (cache[0] == "hwnc-winograd") == wino, cache[0]
    assert (cache[0] == "hwnc-taps") == (kind == "3x3" and c >= 2 and f <= hw._TAPS_MAX_F), cache[0]


@pytest.mark.parametrize("h, w", [(16, 13), (13, 16), (12, 9), (5, 17)])
def test_winograd_many_tiles_equal_reference_float64(hwnc, h, w):
    """MATH.md (23.3), MATH.md (23.4), MATH.md (23.6) on images of 3-5 tile rows/columns:
    interior tiles are read (input transform) and overlap-added (adjoint) in one strided
    product per group, the edge tiles read and write their image rows only (sizes that are
    and are not multiples of 4: the last row then comes from the spill of the last tile
    alone); output, dx, dw and db equal the reference convolution to 1e-12."""
    rng = np.random.default_rng(h * w)
    x, wk, b = rng.standard_normal((2, 3, h, w)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    for order in (False, True):
        cache = _pair("conv2d", [x, wk, b], "float64", order, rng, {"stride": 1, "pad": 1})
        assert cache[0] == "hwnc-winograd"


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(2, 6), f=st.integers(2, 5), h=st.integers(1, 4), w=st.integers(1, 4),
       order=st.booleans(), seed=st.integers(0, 2**16))
def test_single_tile_winograd_equals_reference_float64(hwnc, n, c, f, h, w, order, seed):
    """MATH.md (23.6) for images of at most 4 x 4 (one tile, the U-Net's 4 x 4 level): the
    input transform drops the tile's padding rows and columns and the adjoint keeps only
    rows and columns 1..H, 1..W of B dU B^T (no overlap-add); output, dx, dw and db equal
    the reference convolution MATH.md (13.3), MATH.md (13.5), MATH.md (13.6) to 1e-12."""
    rng = np.random.default_rng(seed)
    x, wk, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, 3, 3)), rng.standard_normal(f)
    cache = _pair("conv2d", [x, wk, b], "float64", order, rng, {"stride": 1, "pad": 1})
    assert cache[0] == "hwnc-winograd" and cache[1][0].shape[2:4] == (1, 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(2, 9), h=st.integers(1, 9), w=st.integers(1, 9), order=st.booleans(),
       seed=st.integers(0, 2**16))
def test_channels_first_taps_equal_reference(hwnc, dtype, n, c, h, w, order, seed):
    """MATH.md (23.8): a 3x3 stride-1 "same" convolution with one output channel runs as
    Z = pad(x) w (channels contracted first) plus nine shifted slices of Z, and its backward
    pass as dZ (dy placed at every tap's position), dW = pad(x)^T dZ, d pad(x) = dZ W^T; the
    output, dx, dw and db equal the reference convolution MATH.md (13.3), MATH.md (13.5),
    MATH.md (13.6): float64 < 1e-12, float32 < 1e-4 normwise (direct-method arithmetic, no
    Winograd growth) on sizes 1..9, as plain NCHW arrays and as views of hwnc arrays."""
    rng = np.random.default_rng(seed)
    x, wk, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((1, c, 3, 3)), rng.standard_normal(1)
    cache = _pair("conv2d", [x, wk, b], dtype, order, rng, {"stride": 1, "pad": 1})
    assert cache[0] == "hwnc-taps", cache[0]


@pytest.mark.parametrize("shape", [(4, 16, 16, 8, 8), (2, 32, 32, 7, 9), (8, 64, 64, 4, 4), (3, 3, 5, 11, 6)])
def test_winograd_float32_within_the_stated_bound(hwnc, shape):
    """MATH.md (23.5) for the batched form MATH.md (23.6): the float32 error (max-norm
    relative against the float64 reference: output, dx, dw) is within 40x the direct
    method's own float32 error on the same case (max(direct, 2^-24)) and below 2e-5."""
    n, c, f, h, w = shape
    rng = np.random.default_rng(11)
    x, k = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)
    b, d = rng.standard_normal(f), rng.standard_normal((n, f, h, w))
    y, cache = ref.conv2d_forward(x, k, b, stride=1, pad=1)
    exact = (y, *ref.conv2d_backward(d, cache)[:2])
    rel = lambda a, e: float(np.max(np.abs(np.asarray(a, np.float64) - e)) / np.max(np.abs(e)))  # noqa: E731
    f32 = lambda a: a.astype(np.float32)  # noqa: E731
    errs = {}
    for layout in ("chwn", "hwnc"):
        fast.set_layout(layout)
        old = fast.set_conv3x3("direct")
        y3, c3 = fast.conv2d_forward(f32(x), f32(k), f32(b))
        errs[layout] = [rel(a, e) for a, e in zip((y3, *fast.conv2d_backward(f32(d), c3)[:2]), exact)]
        fast.set_conv3x3(old)
    for i in range(3):
        assert errs["hwnc"][i] <= 40 * max(errs["chwn"][i], 2.0**-24) and errs["hwnc"][i] < 2e-5, (i, errs)


@pytest.mark.parametrize("H, W", [(7, 5), (16, 13), (4, 4), (3, 2)])
def test_batched_input_transform_is_per_tile_bt_d_b(hwnc, H, W):
    """MATH.md (23.6): the transformed input that the hwnc Winograd keeps, U[(xi, nu),
    (tile row, tile column, n), c], is B^T D B of the 6 x 6 input tile D (rows 4 t - 1 ..
    4 t + 4 of the zero-padded image, same for columns) of sample n and channel c, here
    computed tile by tile in exact integer arithmetic (B^T has integer entries) on integer
    images (7 x 5, so the last tiles read zero padding beyond the image; 16 x 13, two
    interior tile rows and columns read in one strided product; 4 x 4 and 3 x 2, one tile).  The code never forms the padded image:
    each tile reads its image rows and columns only (fast_hwnc._tile_groups)."""
    rng = np.random.default_rng(2)
    N, C = 2, 3
    x = rng.integers(-4, 5, (N, C, H, W)).astype(np.float64)
    _, cache = fast.conv2d_forward(x, np.ones((2, C, 3, 3)), np.zeros(2))
    U = cache[1][0]  # (6, 6, tH, tW, N, C)
    BT = np.array([[int(v) for v in row] for row in winograd_matrices(4)[0]], dtype=np.int64)
    tH, tW = -(-H // 4), -(-W // 4)
    xp_ = np.zeros((N, C, 4 * tH + 2, 4 * tW + 2))
    xp_[:, :, 1:H + 1, 1:W + 1] = x
    assert U.shape[2:4] == (tH, tW)
    for t in range(tH):
        for s in range(tW):
            for n, c in ((0, 0), (1, 2)):
                D = xp_[n, c, 4 * t:4 * t + 6, 4 * s:4 * s + 6].astype(np.int64)
                want = BT @ D @ BT.T  # int64: exact
                assert np.array_equal(U[:, :, t, s, n, c], want.astype(float)), (t, s, n, c)


GN = st.sampled_from([(4, 2), (6, 3), (8, 8), (5, 1)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 3), cg=GN, h=st.integers(1, 6), w=st.integers(1, 6), order=st.booleans(),
       seed=st.integers(0, 2**16))
def test_other_layers_equal_reference(hwnc, dtype, n, cg, h, w, order, seed):
    """MATH.md (13.9), MATH.md (13.10) (GroupNorm on the (S, N, C) view), MATH.md (13.7)
    and MATH.md (13.8) (resampling), MATH.md (13.21) (concatenation), MATH.md (13.11)
    (SiLU keeps the memory order) in the hwnc layout equal the reference layers, forward
    and backward; and the channel shift equals h + eo[:, :, None, None]."""
    C, G = cg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, C, h, w))
    gamma = 1 + rng.standard_normal(C)
    # dx = rstd (g - mean g - xhat mean(g xhat)) is rounding noise of size u rstd |g| where it
    # vanishes (a group of one entry: rstd = eps^-1/2 = 316), so the floor scales with rstd
    rstd = 1 / np.sqrt(np.var(x.reshape(n, G, -1), axis=2) + 1e-5)
    scale = max(1.0, float(np.max(rstd)) * float(np.max(np.abs(gamma))))
    _pair("groupnorm", [x, gamma, rng.standard_normal(C), G], dtype, order, rng, floor_scale=scale)
    _pair("silu", [x], dtype, order, rng)
    x2 = rng.standard_normal((n, C, 2 * h, 2 * w))
    _pair("upsample2x", [x], dtype, order, rng)
    _pair("avgpool2x", [x2], dtype, order, rng)
    _pair("concat", [x, rng.standard_normal((n, 3, h, w))], dtype, order, rng)
    eo = rng.standard_normal((n, C))
    _same(fast.add_channel_shift(_as(x, dtype, order), eo.astype(dtype)),
          (x + eo[:, :, None, None]).astype(dtype), TOL[dtype], "add_channel_shift")


def test_unet_gradcheck_through_hwnc(hwnc):
    """Whole-model central differences, MATH.md (13.19), through the hwnc layout (Winograd
    F(4,3) in the batched form MATH.md (23.6) for every 3x3 convolution with C >= 2; 8x8,
    4x4 and a cropped 2x2 level), class conditioning, attention: random entries of dx and
    of every parameter tensor, float64."""
    rng = np.random.default_rng(3)
    cfg = nn.UNetConfig(base_channels=4, channel_mults=(1, 2, 2), groups=2, time_embed_dim=8, num_classes=3)
    model = nn.UNet(cfg)
    P = _perturbed(model, np, rng)
    x = rng.standard_normal((2, 1, 8, 8))
    _check_model(np, model, P, x, np.array([3, 700]), np.array([1, 3]), rng, per_tensor=_per_tensor(np, 2))


def test_unet_hwnc_equals_chwn_and_batch_threads():
    """The default-architecture U-Net (attention, skips, up/down sampling) computes the same
    output and gradients in both layouts (float64, 1e-12), and BatchThreads (two slices
    on two threads, per-thread scratch buffers) in the hwnc layout equals one thread."""
    from refdiff.training import BatchThreads

    rng = np.random.default_rng(0)
    model = nn.UNet(nn.UNetConfig(base_channels=8, groups=4, num_classes=3))
    P = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in model.init_params(rng).items()}
    x, t, y = rng.standard_normal((5, 1, 8, 8)), rng.integers(0, 1000, 5), rng.integers(0, 4, 5)
    dout = rng.standard_normal(x.shape)
    runs = {}
    old = fast.get_layout()
    try:
        for layout, parts in (("chwn", 1), ("hwnc", 1), ("hwnc", 2)):
            fast.set_layout(layout)
            m = BatchThreads(model, parts) if parts > 1 else model
            out, cache = m.forward(P, x, t, y)
            G, dx = m.backward(P, cache, dout)
            runs[(layout, parts)] = (np.array(out), np.array(dx), {k: np.array(v) for k, v in G.items()})
            if parts > 1:
                m.close()
    finally:
        fast.set_layout(old)
    base = runs[("chwn", 1)]
    for key in (("hwnc", 1), ("hwnc", 2)):
        o, dx, G = runs[key]
        _same(o, base[0], 1e-12, f"{key} out")
        _same(dx, base[1], 1e-12, f"{key} dx")
        for k in G:
            _same(G[k], base[2][k], 1e-12, f"{key} {k}")


def test_set_layout_refuses_unknown():
    """set_layout names the valid layouts and returns the previous one."""
    with pytest.raises(ValueError, match="layout must be one of"):
        fast.set_layout("nhwc")
    old = fast.set_layout(fast.get_layout())
    assert fast.get_layout() == old


@pytest.mark.parametrize("shape", [(2, 3, 4, 8, 8), (3, 5, 2, 7, 9), (1, 2, 3, 4, 4)])
def test_recomputed_input_transform(hwnc, monkeypatch, shape):
    """MATH.md (23.3), MATH.md (23.4), MATH.md (23.6) with the transformed input U not kept
    (large batches: the cache holds the input and the backward pass transforms it again,
    into the buffer that dU overwrites after dW is formed): output, dx, dw, db equal the
    reference convolution to 1e-12 in float64, and the cache holds the input, not U."""
    monkeypatch.setattr(hw, "_KEEP_U_FLOATS", 0)
    n, c, f, h, w = shape
    rng = np.random.default_rng(7)
    x, k, b, d = (rng.standard_normal(s) for s in ((n, c, h, w), (f, c, 3, 3), (f,), (n, f, h, w)))
    y, cache = ref.conv2d_forward(x, k, b, stride=1, pad=1)
    want = (y, *ref.conv2d_backward(d, cache))
    y2, c2 = fast.conv2d_forward(x, k, b)
    assert c2[1][0].ndim == 4  # the input (H, W, N, C), not U
    got = (y2, *fast.conv2d_backward(d, c2))
    for u, v, what in zip(got, want, ("out", "dx", "dw", "db")):
        _same(u, v, 1e-12, what)


def test_environment_switches(tmp_path):
    """The layout and the allocator setting can be chosen outside Python:
    REFDIFF_LAYOUT=chwn starts in the (C, H, W, N) layout, an unknown value is a clear
    error at import, and REFDIFF_KEEP_FREED_MEMORY=0 leaves glibc's settings alone."""
    import os
    import subprocess
    import sys

    code = ("import refdiff.nn.fast as f, refdiff.nn.fast_hwnc as h; "
            "print(f.get_layout(), h.keep_freed_memory())")

    def run(**env):
        e = {**os.environ, **env}
        e.setdefault("PYTHONPATH", os.getcwd())
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=tmp_path)

    r = run(REFDIFF_LAYOUT="chwn", REFDIFF_KEEP_FREED_MEMORY="0")
    assert r.returncode == 0 and r.stdout.split() == ["chwn", "False"], r.stderr
    r = run(REFDIFF_LAYOUT="nhwc")
    assert r.returncode != 0 and "REFDIFF_LAYOUT must be one of ['chwn', 'hwnc'], got 'nhwc'" in r.stderr
    if sys.platform.startswith("linux"):
        r = run(REFDIFF_LAYOUT="hwnc", REFDIFF_KEEP_FREED_MEMORY="1")
        assert r.returncode == 0 and r.stdout.split() == ["hwnc", "True"], r.stderr


@pytest.mark.parametrize("layout,form", [("hwnc", "fast"), ("hwnc", "exact"), ("chwn", "fast")])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 3), cg=GN, h=st.integers(1, 7), w=st.integers(1, 7),
       order=st.sampled_from(["nchw", "chwn", "hwnc"]), shift=st.sampled_from([0.0, 2.0, 3.0]),
       seed=st.integers(0, 2**16))
def test_groupnorm_silu_equals_the_composition(layout, form, dtype, n, cg, h, w, order, shift, seed):
    """MATH.md (23.7): the fused GroupNorm + SiLU (fast.groupnorm_silu_forward, fused in the
    hwnc layout, a composition in chwn) equals the reference composition
    silu(groupnorm(x)) of MATH.md (13.9) and MATH.md (13.11), forward and every gradient
    (dx by MATH.md (13.10), dgamma, dbeta): float64 < 1e-12, float32 < 1e-4 (normwise
    relative, the bound of the other layers); inputs (x and dout) as plain NCHW arrays and
    as NCHW views of (C, H, W, N) and of (H, W, N, C) arrays, with and without a mean
    offset (exact form: x - mean is formed before the variance; fast form, fast.set_gnsilu:
    one-pass statistics MATH.md (23.9) while mean^2 <= 8 var (shift 2), the two-pass branch
    beyond (shift 3), MATH.md (23.10) for the gradients)."""
    C, G = cg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, C, h, w)) + shift
    gamma, beta = 1 + rng.standard_normal(C), rng.standard_normal(C)
    dout = rng.standard_normal(x.shape)
    y, c_n = L.groupnorm_forward(x, gamma, beta, G)
    want_out, c_s = L.silu_forward(y)
    want = L.groupnorm_backward(L.silu_backward(dout, c_s), c_n)
    old, old_form = fast.set_layout(layout), fast.set_gnsilu(form)
    try:
        def mem(v):  # v (N, C, H, W) in the memory order drawn; gamma and beta plain
            if order == "chwn" and v.ndim == 4:
                return np.transpose(np.ascontiguousarray(np.transpose(v, (1, 2, 3, 0)), dtype=dtype), (3, 0, 1, 2))
            return _as(v, dtype, order == "hwnc")

        a = [mem(v) for v in (x, gamma, beta, dout)]
        out, cache = fast.groupnorm_silu_forward(a[0], a[1], a[2], G)
        got = fast.groupnorm_silu_backward(a[3], cache)
    finally:
        fast.set_layout(old)
        fast.set_gnsilu(old_form)
    assert cache[1] == {"hwnc": "hwnc_fast" if form == "fast" else "hwnc", "chwn": "composed"}[layout]
    _same(out, want_out.astype(dtype), TOL[dtype], "forward")
    # dx vanishes up to rounding (u rstd |gamma dout|) for groups of one entry: floor as above
    rstd = 1 / np.sqrt(np.var(x.reshape(n, G, -1), axis=2) + 1e-5)
    floor = 0.1 * max(1.0, float(np.max(rstd)) * float(np.max(np.abs(gamma)))) * float(np.linalg.norm(dout))
    for j, (u, v) in enumerate(zip(got, want)):
        _same(u, v.astype(dtype), TOL[dtype], f"gradient {j}", floor)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 3), cg=GN, h=st.integers(1, 7), w=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_groupnorm_silu_is_bitwise_the_two_hwnc_layers(hwnc, gnsilu_exact, dtype, n, cg, h, w, seed):
    """MATH.md (23.7) in floating point: h = y/2 is formed as xc (gamma rstd / 2) + beta / 2
    and 2 - u = 2 (1 - sigmoid(y)), and scaling by 2 is exact, so the fused layer returns
    exactly (==) what the hwnc GroupNorm then SiLU return: output, dx, dgamma, dbeta (the
    "exact" form of fast.set_gnsilu; the default "fast" form rounds differently, MATH.md (23.11))."""
    C, G = cg
    rng = np.random.default_rng(seed)
    x, dout = (_as(rng.standard_normal((n, C, h, w)) + 1, dtype, True) for _ in range(2))
    gamma, beta = (_as(1 + rng.standard_normal(C), dtype, False) for _ in range(2))
    y, c_n = fast.groupnorm_forward(x, gamma, beta, G)
    out, c_s = fast.silu_forward(y)
    want = fast.groupnorm_backward(fast.silu_backward(dout, c_s), c_n)
    out_f, cache = fast.groupnorm_silu_forward(x, gamma, beta, G)
    got = fast.groupnorm_silu_backward(dout, cache)
    assert np.array_equal(out_f, out)
    for j, (u, v) in enumerate(zip(got, want)):
        assert np.array_equal(u, v), j


def test_groupnorm_silu_refuses_bad_input(hwnc):
    """The fused layer's public entry checks its arguments as groupnorm_forward does
    (issue 19): groups not dividing C, gamma of the wrong shape, a cache from elsewhere and
    a dout of the wrong shape are refused with the argument named."""
    x = hw.to_nchw(np.zeros((3, 3, 2, 4)))
    g = np.ones(4)
    with pytest.raises(ValueError, match="groups"):
        fast.groupnorm_silu_forward(x, g, g, 3)
    with pytest.raises(ValueError, match="gamma"):
        fast.groupnorm_silu_forward(x, np.ones(3), g, 2)
    _, cache = fast.groupnorm_silu_forward(x, g, g, 2)
    with pytest.raises(TypeError, match="cache"):
        fast.groupnorm_silu_backward(x, (1, 2, 3))
    with pytest.raises(ValueError, match="dout"):
        fast.groupnorm_silu_backward(np.zeros((2, 4, 3, 2)), cache)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@settings(max_examples=8, deadline=None)
@given(n=st.integers(1, 3), cg=GN, h=st.integers(1, 7), w=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_groupnorm_silu_recomputed_cache_is_bitwise_the_kept_one(hwnc, gnsilu_exact, dtype, n, cg, h, w, seed, monkeypatch):
    """MATH.md (23.7): above ``_KEEP_HU_FLOATS`` numbers the fused layer caches xc alone and
    its backward pass forms h = xc (gamma rstd / 2) + beta / 2, u = 1 + tanh(h) and the slope
    u (1 + h (2 - u)) again with the forward's operations; the gradients are then exactly (==)
    those of the cache that kept the slope (the threshold set to 0 forces the recomputation
    on small shapes)."""
    C, G = cg
    rng = np.random.default_rng(seed)
    x, dout = (_as(rng.standard_normal((n, C, h, w)) + 1, dtype, True) for _ in range(2))
    gamma, beta = (_as(1 + rng.standard_normal(C), dtype, False) for _ in range(2))
    out_k, cache_k = fast.groupnorm_silu_forward(x, gamma, beta, G)
    want = fast.groupnorm_silu_backward(dout, cache_k)
    with monkeypatch.context() as m:  # restored before hypothesis's next example
        m.setattr(hwn, "_KEEP_HU_FLOATS", 0)
        out_r, cache_r = fast.groupnorm_silu_forward(x, gamma, beta, G)
    assert cache_r[0][1] is None  # only xc kept
    assert cache_k[0][1] is not None
    got = fast.groupnorm_silu_backward(dout, cache_r)
    assert np.array_equal(out_r, out_k)
    for j, (u, v) in enumerate(zip(got, want)):
        assert np.array_equal(u, v), j
