"""The layers added for transformer blocks, latent models and adapters (MATH.md section
13.10): GELU, GEGLU, LayerNorm, adaptive LayerNorm, patchify, pixel shuffle.

Each is checked by independent central differences along random directions over all its
parameters and its input (float64, h = 1e-5: a correct backward gives ~1e-9 normwise, we
demand < 1e-6, the issue's bar), by a loop definition or an equivalent composition, by
adjoint identities where linear, and against PyTorch where it is installed (float64; the
library is an independent implementation, skipped when absent).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.backend import to_numpy
from refdiff.nn import layers as L
from refdiff.nn import resample as R
from refdiff.nn.gradcheck import check_directional, check_gradient, inner
from tests._support import assert_close, asx

GC_TOL = 1e-6


def _h(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


# ------------------------------------------------------------------ the directional check
def _case(name, rng, approximate="none", order="shift_scale"):
    """(point, forward(point) -> (out, cache), backward(dout, cache) -> grads dict)."""
    if name == "gelu":
        return ({"x": 2.0 * rng.standard_normal((3, 4))}, lambda p: L.gelu_forward(p["x"], approximate),
                lambda d, c: {"x": L.gelu_backward(d, c)})
    if name == "geglu":
        pt = {"x": rng.standard_normal((2, 3, 4)), "w": rng.standard_normal((4, 6)), "b": rng.standard_normal(6)}
        return (pt, lambda p: L.geglu_forward(p["x"], p["w"], p["b"], approximate),
                lambda d, c: dict(zip(("x", "w", "b"), L.geglu_backward(d, c))))
    if name == "layernorm":
        pt = {"x": 2.0 * rng.standard_normal((2, 3, 5)) + 1.0, "g": rng.standard_normal(5), "b": rng.standard_normal(5)}
        return (pt, lambda p: L.layernorm_forward(p["x"], p["g"], p["b"]),
                lambda d, c: dict(zip(("x", "g", "b"), L.layernorm_backward(d, c))))
    if name == "layernorm_plain":
        return ({"x": rng.standard_normal((4, 6))}, lambda p: L.layernorm_forward(p["x"]),
                lambda d, c: {"x": L.layernorm_backward(d, c)[0]})
    if name == "adaln":
        pt = {"x": rng.standard_normal((2, 3, 4)), "e": rng.standard_normal((2, 5)),
              "w": 0.5 * rng.standard_normal((5, 8)), "b": rng.standard_normal(8)}
        return (pt, lambda p: L.adaln_forward(p["x"], p["e"], p["w"], p["b"], order=order),
                lambda d, c: dict(zip(("x", "e", "w", "b"), L.adaln_backward(d, c))))
    if name == "patchify":
        return ({"x": rng.standard_normal((2, 3, 4, 6))}, lambda p: L.patchify_forward(p["x"], 2),
                lambda d, c: {"x": L.patchify_backward(d, c)})
    if name == "unpatchify":
        return ({"t": rng.standard_normal((2, 6, 12))}, lambda p: L.unpatchify_forward(p["t"], 2, (4, 6)),
                lambda d, c: {"t": L.unpatchify_backward(d, c)})
    if name == "pixel_shuffle":
        return ({"x": rng.standard_normal((2, 8, 2, 3))}, lambda p: L.pixel_shuffle_forward(p["x"], 2),
                lambda d, c: {"x": L.pixel_shuffle_backward(d, c)})
    if name == "pixel_unshuffle":
        return ({"x": rng.standard_normal((2, 2, 4, 6))}, lambda p: L.pixel_unshuffle_forward(p["x"], 2),
                lambda d, c: {"x": L.pixel_unshuffle_backward(d, c)})
    raise KeyError(name)


CASES = [("gelu", "none", None), ("gelu", "tanh", None), ("geglu", "none", None), ("geglu", "tanh", None),
         ("layernorm", None, None), ("layernorm_plain", None, None), ("adaln", None, "shift_scale"),
         ("adaln", None, "scale_shift"), ("patchify", None, None), ("unpatchify", None, None),
         ("pixel_shuffle", None, None), ("pixel_unshuffle", None, None)]


@pytest.mark.parametrize("name,approximate,order", CASES)
def test_new_layers_directional_and_entrywise_gradcheck(xp, name, approximate, order):
    """Backward passes of MATH.md (13.24) GELU, (13.25) GEGLU, (13.26) LayerNorm,
    (13.27) adaptive LayerNorm, (13.28) patchify/unpatchify, (13.29) pixel shuffle/unshuffle:
    central differences along 5 random directions over all parameters and the input at once,
    and entry by entry for every argument, agree with the hand-written backward (< 1e-6)."""
    rng = np.random.default_rng(len(name) + 7 * (order == "scale_shift") + (approximate == "tanh"))
    kw = {k: v for k, v in (("approximate", approximate), ("order", order)) if v is not None}
    host, fwd, bwd = _case(name, rng, **kw)
    point = {k: asx(xp, v) for k, v in host.items()}
    out, cache = fwd(point)
    dout = asx(xp, rng.standard_normal(tuple(out.shape)))
    grads = bwd(dout, cache)
    loss = lambda p: inner(fwd(p)[0], dout)  # noqa: E731
    err = check_directional(loss, point, grads, np.random.default_rng(0), n_dirs=5)
    assert err < GC_TOL, f"{name}: directional {err:.2e}"
    for k in point:
        def f(a, k=k):
            return loss({**point, k: a})

        e = check_gradient(f, point[k], grads[k])
        assert e < GC_TOL, f"{name}, {k}: {e:.2e}"


# ------------------------------------------------------------------ GELU, GEGLU
def test_gelu_matches_its_definition(xp):
    """MATH.md (13.24) entry by entry with math.erfc and math.tanh: x (1 + erf(x/sqrt 2))/2 and
    x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))/2; the two forms differ by < 5e-4 (and do
    differ, > 1e-4 somewhere on [-4, 4]); gelu(0) = 0, gelu(x) -> x for large x."""
    xs = np.linspace(-6.0, 6.0, 241)
    exact = [x * 0.5 * math.erfc(-x / math.sqrt(2.0)) for x in xs]  # = (1 + erf(x/sqrt 2))/2, no cancellation
    tanh = [0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))) for x in xs]
    out_e, _ = L.gelu_forward(asx(xp, xs))
    out_t, _ = L.gelu_forward(asx(xp, xs), "tanh")
    assert_close(out_e, exact, xp=xp, rtol=1e-14, atol=1e-16)
    assert_close(out_t, tanh, xp=xp, rtol=1e-14, atol=2e-15)  # 1 + tanh(u) near u = -3: absolute error |x| eps
    gap = np.abs(np.array(exact) - np.array(tanh))
    assert 1e-4 < gap.max() < 5e-4


def test_geglu_matches_loop_definition(xp):
    """MATH.md (13.25) per token with a Python loop over hidden units: out_f = h_f gelu(g_f)
    with h = (x W + b)[:F], g = (x W + b)[F:]."""
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 10)), rng.standard_normal(10)
    out, _ = L.geglu_forward(asx(xp, x), asx(xp, w), asx(xp, b))
    F = 5
    ref = np.zeros((2, 3, F))
    for n, t, f in np.ndindex(2, 3, F):
        h = float(x[n, t] @ w[:, f] + b[f])
        g = float(x[n, t] @ w[:, F + f] + b[F + f])
        ref[n, t, f] = h * g * 0.5 * (1.0 + math.erf(g / math.sqrt(2.0)))
    assert_close(out, ref, xp=xp, rtol=1e-12, atol=1e-14)


def test_gelu_geglu_layernorm_agree_with_torch():
    """MATH.md (13.24), (13.25), (13.26) against PyTorch in float64: F.gelu (both forms),
    the GEGLU of the transformer feed-forward (hidden * gelu(gate) of a chunked projection),
    F.layer_norm with and without affine parameters."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    x = 2.0 * rng.standard_normal((3, 5, 6))
    tx = torch.from_numpy(x)
    for form in ("none", "tanh"):
        ref = F.gelu(tx, approximate=form).numpy()
        np.testing.assert_allclose(L.gelu_forward(x, form)[0], ref, rtol=1e-13, atol=1e-15)
    w, b = rng.standard_normal((6, 8)), rng.standard_normal(8)
    hid, gate = F.linear(tx, torch.from_numpy(w.T), torch.from_numpy(b)).chunk(2, dim=-1)
    np.testing.assert_allclose(L.geglu_forward(x, w, b)[0], (hid * F.gelu(gate)).numpy(), rtol=1e-12, atol=1e-14)
    g, be = rng.standard_normal(6), rng.standard_normal(6)
    ref = F.layer_norm(tx, (6,), torch.from_numpy(g), torch.from_numpy(be), eps=1e-5).numpy()
    np.testing.assert_allclose(L.layernorm_forward(x, g, be)[0], ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(L.layernorm_forward(x, eps=1e-6)[0], F.layer_norm(tx, (6,), eps=1e-6).numpy(),
                               rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ LayerNorm, adaLN
@settings(max_examples=6)
@given(n=st.integers(1, 3), L_=st.integers(1, 4), D=st.integers(2, 6), seed=st.integers(0, 999))
def test_layernorm_is_groupnorm_with_one_group_per_token(xp, n, L_, D, seed):
    """MATH.md (13.26) is (13.9) with the group = one token's D features: LayerNorm of
    (N, L, D) equals GroupNorm with one group on the (N L, D) view (channels = features),
    forward and backward (float64 rounding)."""
    rng = np.random.default_rng(seed)
    x, g, b = 2.0 * rng.standard_normal((n, L_, D)) + 1.0, rng.standard_normal(D), rng.standard_normal(D)
    dout = rng.standard_normal((n, L_, D))
    out, cache = L.layernorm_forward(asx(xp, x), asx(xp, g), asx(xp, b))
    out2, cache2 = L.groupnorm_forward(asx(xp, x.reshape(n * L_, D)), asx(xp, g), asx(xp, b), 1)
    assert_close(out, _h(out2).reshape(n, L_, D), xp=xp, rtol=1e-12, atol=1e-13)
    grads = L.layernorm_backward(asx(xp, dout), cache)
    grads2 = L.groupnorm_backward(asx(xp, dout.reshape(n * L_, D)), cache2)
    for u, v in zip(grads, grads2):
        assert_close(u, _h(v).reshape(tuple(u.shape)), xp=xp, rtol=1e-10, atol=1e-12)


def test_adaln_matches_modulated_layernorm(xp):
    """MATH.md (13.27) written per sample with NumPy: LN(x_n) (1 + scale_n) + shift_n with
    [shift, scale] = e W + b (shift first), eps 1e-6; the other order is the same map with
    the halves of W and b swapped; W = b = 0 gives the plain LayerNorm."""
    rng = np.random.default_rng(8)
    N, Lt, D, E = 2, 3, 4, 5
    x, e = rng.standard_normal((N, Lt, D)), rng.standard_normal((N, E))
    w, b = rng.standard_normal((E, 2 * D)), rng.standard_normal(2 * D)
    ref = np.zeros_like(x)
    for n in range(N):
        ss = e[n] @ w + b
        mu, var = x[n].mean(axis=1, keepdims=True), x[n].var(axis=1, keepdims=True)
        ref[n] = (x[n] - mu) / np.sqrt(var + 1e-6) * (1.0 + ss[D:]) + ss[:D]
    X, Em = asx(xp, x), asx(xp, e)
    assert_close(L.adaln_forward(X, Em, asx(xp, w), asx(xp, b))[0], ref, xp=xp, rtol=1e-12, atol=1e-13)
    w_sw, b_sw = np.concatenate([w[:, D:], w[:, :D]], axis=1), np.concatenate([b[D:], b[:D]])
    assert_close(L.adaln_forward(X, Em, asx(xp, w_sw), asx(xp, b_sw), order="scale_shift")[0], ref, xp=xp,
                 rtol=1e-12, atol=1e-13)
    zero = L.adaln_forward(X, Em, asx(xp, np.zeros((E, 2 * D))), asx(xp, np.zeros(2 * D)))[0]
    assert_close(zero, _h(L.layernorm_forward(X, eps=1e-6)[0]), xp=xp, rtol=1e-14)


def test_norm_and_activation_bad_input(xp):
    """Clear errors: unknown GELU form (MATH.md (13.24)), integer input,
    GEGLU with an odd projection width, LayerNorm with gamma of the wrong length or only
    one of gamma/beta, adaLN with mismatched shapes or an unknown order (13.27)."""
    x = asx(xp, np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="approximate must be one of"):
        L.gelu_forward(x, "erf")
    with pytest.raises(TypeError, match="real floating"):
        L.gelu_forward(asx(xp, np.ones(3, dtype=np.int64)))
    with pytest.raises(ValueError, match=r"w \(D, 2F\)"):
        L.geglu_forward(x, asx(xp, np.ones((4, 5))), asx(xp, np.ones(5)))
    with pytest.raises(ValueError, match=r"bias b must have shape \(6,\)"):
        L.geglu_forward(x, asx(xp, np.ones((4, 6))), asx(xp, np.ones(5)))
    with pytest.raises(ValueError, match=r"gamma must have shape \(4,\)"):
        L.layernorm_forward(x, asx(xp, np.ones(3)), asx(xp, np.ones(3)))
    with pytest.raises(ValueError, match="both gamma and beta"):
        L.layernorm_forward(x, asx(xp, np.ones(4)))
    with pytest.raises(ValueError, match=r"need w \(5, 8\)"):
        L.adaln_forward(x, asx(xp, np.ones((2, 5))), asx(xp, np.ones((5, 4))), asx(xp, np.ones(8)))
    with pytest.raises(ValueError, match="same N"):
        L.adaln_forward(x, asx(xp, np.ones((3, 5))), asx(xp, np.ones((5, 8))), asx(xp, np.ones(8)))
    with pytest.raises(ValueError, match="order must be one of"):
        L.adaln_forward(x, asx(xp, np.ones((2, 5))), asx(xp, np.ones((5, 8))), asx(xp, np.ones(8)), order="ss")
    with pytest.raises(ValueError, match=r"bias b must have shape \(D_out,\)"):
        L.linear_forward(asx(xp, np.ones((2, 4))), asx(xp, np.ones((4, 3))), asx(xp, np.ones(4)))
    with pytest.raises(ValueError, match=r"bias b must have shape \(F,\)"):
        L.conv2d_forward(asx(xp, np.ones((1, 2, 4, 4))), asx(xp, np.ones((3, 2, 3, 3))), asx(xp, np.ones(2)))


# ------------------------------------------------------------------ patchify, pixel shuffle
@settings(max_examples=6)
@given(n=st.integers(1, 2), c=st.integers(1, 3), p=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       seed=st.integers(0, 999))
def test_patchify_permutation_inverse_and_adjoint(xp, n, c, p, h, w, seed):
    """MATH.md (13.28): patchify equals its loop definition entry by entry, unpatchify
    inverts it on both sides, and <P x, t> = <x, P^T t> with P^T = unpatchify (a
    permutation's adjoint is its inverse)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h * p, w * p))
    t = rng.standard_normal((n, h * w, p * p * c))
    X, T = asx(xp, x), asx(xp, t)
    px, cache = L.patchify_forward(X, p)
    assert_close(px, R.patchify_naive(x, p), xp=xp, rtol=0)
    assert_close(L.unpatchify_forward(px, p, (h * p, w * p))[0], x, xp=xp, rtol=0)
    assert_close(L.patchify_forward(L.unpatchify_forward(T, p, (h * p, w * p))[0], p)[0], t, xp=xp, rtol=0)
    assert math.isclose(inner(px, T), inner(X, L.patchify_backward(T, cache)), rel_tol=1e-12, abs_tol=1e-12)


def test_patchify_then_linear_is_the_strided_patch_convolution(xp):
    """MATH.md (13.28): a patch embedding Conv2d(C, D, p, stride=p) (the reference
    convolution (13.3)) equals patchify followed by a linear map with
    W[(u p + v) C + c, f] = w[f, c, u, v], token i (W/p) + j = output pixel (i, j)."""
    rng = np.random.default_rng(6)
    N, C, H, W, p, D = 2, 3, 4, 6, 2, 5
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((D, C, p, p)), rng.standard_normal(D)
    conv, _ = L.conv2d_forward(asx(xp, x), asx(xp, w), asx(xp, b), stride=p, pad=0)  # (N, D, H/p, W/p)
    Wmat = np.transpose(w, (2, 3, 1, 0)).reshape(p * p * C, D)  # rows (u, v, c), c fastest
    tok, _ = L.patchify_forward(asx(xp, x), p)
    emb = _h(tok) @ Wmat + b  # (N, L, D)
    assert_close(conv, np.transpose(emb.reshape(N, H // p, W // p, D), (0, 3, 1, 2)), xp=xp, rtol=1e-12, atol=1e-13)


@settings(max_examples=6)
@given(n=st.integers(1, 2), c=st.integers(1, 3), r=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(1, 3),
       seed=st.integers(0, 999))
def test_pixel_shuffle_permutation_inverse_and_adjoint(xp, n, c, r, h, w, seed):
    """MATH.md (13.29): pixel shuffle equals its loop definition, unshuffle inverts it on
    both sides, and <PS x, y> = <x, PS^T y> with PS^T = unshuffle."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c * r * r, h, w))
    y = rng.standard_normal((n, c, h * r, w * r))
    X, Y = asx(xp, x), asx(xp, y)
    sx, cache = L.pixel_shuffle_forward(X, r)
    assert_close(sx, R.pixel_shuffle_naive(x, r), xp=xp, rtol=0)
    assert_close(L.pixel_unshuffle_forward(sx, r)[0], x, xp=xp, rtol=0)
    assert_close(L.pixel_shuffle_forward(L.pixel_unshuffle_forward(Y, r)[0], r)[0], y, xp=xp, rtol=0)
    assert math.isclose(inner(sx, Y), inner(X, L.pixel_shuffle_backward(Y, cache)), rel_tol=1e-12, abs_tol=1e-12)


def test_pixel_shuffle_agrees_with_torch():
    """MATH.md (13.29) against PyTorch's pixel_shuffle / pixel_unshuffle (same index map)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(9).standard_normal((2, 12, 3, 2))
    np.testing.assert_array_equal(L.pixel_shuffle_forward(x, 2)[0],
                                  torch.nn.functional.pixel_shuffle(torch.from_numpy(x), 2).numpy())
    y = np.random.default_rng(10).standard_normal((2, 3, 6, 4))
    np.testing.assert_array_equal(L.pixel_unshuffle_forward(y, 2)[0],
                                  torch.nn.functional.pixel_unshuffle(torch.from_numpy(y), 2).numpy())


def test_patchify_and_shuffle_bad_input(xp):
    """Clear errors of MATH.md (13.28) and (13.29): factors that do not divide the size,
    channel counts that are not multiples of r^2, tokens that do not fit the image."""
    x = asx(xp, np.ones((1, 3, 4, 6)))
    with pytest.raises(ValueError, match="patch=4 must divide the image size, got 4x6"):
        L.patchify_forward(x, 4)
    with pytest.raises(ValueError, match="patch must be an integer >= 1"):
        L.patchify_forward(x, 0)
    with pytest.raises(ValueError, match=r"tokens must be \(N, 6, p\*p\*C\)"):
        L.unpatchify_forward(asx(xp, np.ones((1, 5, 12))), 2, (4, 6))
    with pytest.raises(ValueError, match="multiple of r"):
        L.pixel_shuffle_forward(x, 2)
    with pytest.raises(ValueError, match="r=4 must divide the image size"):
        L.pixel_unshuffle_forward(x, 4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        L.pixel_shuffle_forward(asx(xp, np.ones((4, 2, 2))), 2)


# ------------------------------------------------------------------ transposed convolution
TCONV = [(3, 1, 1, 0), (3, 2, 1, 1), (4, 2, 1, 0), (2, 2, 0, 0), (1, 1, 0, 0), (3, 2, 0, 1)]  # k, s, p, o


@pytest.mark.parametrize("k,s,p,o", TCONV)
def test_conv_transpose_is_the_adjoint_of_conv_and_gradcheck(xp, k, s, p, o):
    """MATH.md (13.30): with b = 0, <convT(x), y> = <x, conv(y)> for the same weights (the
    reference convolution (13.4)); its output size is (H - 1) s - 2p + k + o and a
    stride-s convolution maps that size back to H; dx, dw, db agree with central
    differences, entry by entry and along random directions over all of them (< 1e-6)."""
    rng = np.random.default_rng(k + 10 * s + 100 * p + 1000 * o)
    N, F, C, H, W = 2, 3, 2, 3, 4
    x, w, b = rng.standard_normal((N, F, H, W)), rng.standard_normal((F, C, k, k)), rng.standard_normal(C)
    X, Wt = asx(xp, x), asx(xp, w)
    out, _ = L.conv_transpose2d_forward(X, Wt, asx(xp, np.zeros(C)), stride=s, pad=p, output_padding=o)
    Ho, Wo = (H - 1) * s - 2 * p + k + o, (W - 1) * s - 2 * p + k + o
    assert tuple(out.shape) == (N, C, Ho, Wo)
    y = asx(xp, rng.standard_normal((N, C, Ho, Wo)))
    cy, _ = L.conv2d_forward(y, Wt, asx(xp, np.zeros(F)), stride=s, pad=p)
    assert tuple(cy.shape) == (N, F, H, W)
    assert math.isclose(inner(out, y), inner(X, cy), rel_tol=1e-12, abs_tol=1e-12)
    point = {"x": X, "w": Wt, "b": asx(xp, b)}
    fwd = lambda q: L.conv_transpose2d_forward(q["x"], q["w"], q["b"], stride=s, pad=p, output_padding=o)  # noqa: E731
    out, cache = fwd(point)
    dout = asx(xp, rng.standard_normal(tuple(out.shape)))
    grads = dict(zip(("x", "w", "b"), L.conv_transpose2d_backward(dout, cache)))
    loss = lambda q: inner(fwd(q)[0], dout)  # noqa: E731
    assert check_directional(loss, point, grads, np.random.default_rng(1), n_dirs=4) < GC_TOL
    for key in point:
        assert check_gradient(lambda a, key=key: loss({**point, key: a}), point[key], grads[key]) < GC_TOL


def test_conv_transpose_agrees_with_torch():
    """MATH.md (13.30) against PyTorch's conv_transpose2d (same weight layout), float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 4, 4)), rng.standard_normal(2)
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                                               stride=2, padding=1, output_padding=1).numpy()
    out, _ = L.conv_transpose2d_forward(x, w, b, stride=2, pad=1, output_padding=1)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)


def test_conv_transpose_bad_input(xp):
    """Clear errors of MATH.md (13.30): channel mismatch, bias shape, output padding >= stride."""
    x, w = asx(xp, np.ones((1, 3, 4, 4))), asx(xp, np.ones((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="the same F"):
        L.conv_transpose2d_forward(x, asx(xp, np.ones((2, 2, 3, 3))), asx(xp, np.ones(2)))
    with pytest.raises(ValueError, match=r"bias b must have shape \(C,\) = \(2,\)"):
        L.conv_transpose2d_forward(x, w, asx(xp, np.ones(3)))
    with pytest.raises(ValueError, match="output_padding < stride"):
        L.conv_transpose2d_forward(x, w, asx(xp, np.ones(2)), stride=2, output_padding=2)
