"""The DiT reference vectors re-derived from first principles (MATH.md chapter 20): the positional
table by its formula, the patchify and kernel index maps by their index formulas, one adaLN-Zero
block by an independent loop implementation, CFG in both channel conventions."""

import numpy as np
import pytest

from refdiff.vectors import build_cases


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in build_cases() if c.name.startswith("dit_")}


def test_pos_embed_vectors(cases):
    """MATH.md (20.2): entry (i g + j, m) of each table from the formula, column index first."""
    for key, T in cases["dit_pos_embed"].outputs.items():
        D, g = (int(v) for v in key[1:].split("_grid"))
        q = D // 4
        for k in range(g * g):
            i, j = divmod(k, g)
            for m in range(q):
                w = 10000.0 ** (-m / q)
                assert T[k, [m, q + m, 2 * q + m, 3 * q + m]] == pytest.approx(
                    [np.sin(j * w), np.cos(j * w), np.sin(i * w), np.cos(i * w)], abs=1e-14)


def test_patchify_index_vectors(cases):
    """MATH.md (20.1): tokens[n, i w + j, (u p + v) C + c] = x[n, c, i p + u, j p + v]; the linear form of
    the conv kernel: W[(u p + v) C + c, d] = w[d, c, u, v] (here as flat indices)."""
    c = cases["dit_patchify"]
    tok, W = c.outputs["tokens"], c.outputs["linear_weight"]
    N, C, S, p, D = 2, 3, 4, 2, 5
    for n, ch, a, b in np.ndindex(N, C, S, S):
        (i, u), (j, v) = divmod(a, p), divmod(b, p)
        assert tok[n, i * (S // p) + j, (u * p + v) * C + ch] == ((n * C + ch) * S + a) * S + b
    for d, ch, u, v in np.ndindex(D, C, p, p):
        assert W[(u * p + v) * C + ch, d] == ((d * C + ch) * p + u) * p + v


def _loop_block(I, heads):
    """One adaLN-Zero block written with explicit loops over samples, tokens and heads, MATH.md (20.4)."""
    x, s = I["x"], I["s"]
    N, T, D = x.shape
    d = D // heads
    mod = s @ I["ada.w"] + I["ada.b"]

    def ln(h):
        return (h - h.mean()) / np.sqrt(h.var() + 1e-6)

    out = np.zeros_like(x)
    for n in range(N):
        sh1, sc1, g1, sh2, sc2, g2 = (mod[n, k * D:(k + 1) * D] for k in range(6))
        m = np.stack([ln(x[n, l]) * (1 + sc1) + sh1 for l in range(T)])
        qkv = m @ I["attn.qkv.w"] + I["attn.qkv.b"]
        o = np.zeros((T, D))
        for h in range(heads):
            q, k, v = (qkv[:, b * D + h * d: b * D + (h + 1) * d] for b in range(3))
            for l in range(T):
                sc = np.array([q[l] @ k[r] / np.sqrt(d) for r in range(T)])
                w = np.exp(sc - sc.max())
                o[l, h * d:(h + 1) * d] = (w / w.sum()) @ v
        x1 = x[n] + g1 * (o @ I["attn.out.w"] + I["attn.out.b"])
        for l in range(T):
            z = (ln(x1[l]) * (1 + sc2) + sh2) @ I["fc1.w"] + I["fc1.b"]
            gz = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
            out[n, l] = x1[l] + g2 * (gz @ I["fc2.w"] + I["fc2.b"])
    return out


def test_block_vector_matches_a_loop_implementation(cases):
    """MATH.md (20.4): the stored block output equals a loop implementation; with ada = 0 the block is
    the identity (MATH.md (20.7))."""
    c = cases["dit_block"]
    np.testing.assert_allclose(c.outputs["out"], _loop_block(c.inputs, c.parameters["heads"]), rtol=1e-11, atol=1e-12)
    assert np.array_equal(c.outputs["out_zero_ada"], c.inputs["x"])


def test_cfg_vectors_both_channel_conventions(cases):
    """MATH.md (20.8): guided channels u + 4 (c - u), the others the conditional output."""
    c = cases["dit_cfg"]
    u, o = c.inputs["out_uncond"], c.inputs["out_cond"]
    g = u + 4.0 * (o - u)
    for key, k in (("all", 8), ("latent", 4), ("release_3ch", 3)):
        out = c.outputs[key]
        np.testing.assert_allclose(out[:, :k], g[:, :k], rtol=1e-14, atol=1e-14)
        assert np.array_equal(out[:, k:], o[:, k:])
