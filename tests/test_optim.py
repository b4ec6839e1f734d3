"""Optimisers (refdiff.nn.optim) against hand-worked examples and closed forms."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refdiff.nn.optim import (
    adam_init,
    adam_update,
    clip_grad_norm,
    cosine_lr,
    ema_decay_warmup,
    ema_update,
    global_norm,
    warmup_lr,
)
from tests._support import asx, assert_close


def _one(xp, v):
    return {"p": asx(xp, [v])}


def test_adam_two_steps_by_hand(xp):
    """Adam, MATH.md (14.11), two steps worked by hand.

    beta1 = 0.9, beta2 = 0.999, lr = 0.1, eps = 1e-8, p0 = 1, gradients g1 = 0.5, g2 = -1.

    Step 1 (k = 1): m1 = 0.1 * 0.5 = 0.05, v1 = 0.001 * 0.25 = 0.00025;
      bias-corrected m1/(1-0.9) = 0.5, v1/(1-0.999) = 0.25, root 0.5;
      p1 = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.9 + 2e-9 (the first Adam step is lr * sign(g)).
    Step 2 (k = 2): m2 = 0.9 * 0.05 + 0.1 * (-1) = -0.055,
      v2 = 0.999 * 0.00025 + 0.001 * 1 = 0.00124975;
      1 - 0.9^2 = 0.19, 1 - 0.999^2 = 0.001999;
      m_hat = -0.055 / 0.19 = -0.28947368..., v_hat = 0.00124975 / 0.001999 = 0.62518759...,
      sqrt(v_hat) = 0.79068805...;
      p2 = p1 + 0.1 * 0.28947368 / 0.79068805 = 0.9 + 0.03661035 = 0.93661035.
    Tolerance 1e-12: float64 arithmetic on O(1) numbers.
    """
    p, s = _one(xp, 1.0), adam_init(_one(xp, 1.0))
    p, s = adam_update(p, _one(xp, 0.5), s, lr=0.1)
    assert s["step"] == 1
    assert_close(p["p"], [1.0 - 0.1 * 0.5 / (0.5 + 1e-8)], xp=xp)
    assert_close(s["m/p"], [0.05], xp=xp)
    assert_close(s["v/p"], [0.00025], xp=xp)
    p, s = adam_update(p, _one(xp, -1.0), s, lr=0.1)
    assert s["step"] == 2
    assert_close(s["m/p"], [-0.055], xp=xp)
    assert_close(s["v/p"], [0.00124975], xp=xp)
    m_hat, v_hat = -0.055 / 0.19, 0.00124975 / 0.001999
    p1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)
    assert_close(p["p"], [p1 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)], xp=xp)
    assert_close(p["p"], [0.93661035], xp=xp, rtol=1e-8)  # the decimal worked above


def test_adamw_and_l2_two_steps_by_hand(xp):
    """Weight decay, MATH.md (14.12) (decoupled) and MATH.md (14.13) (L2), same data as above with
    weight_decay = 0.5.

    AdamW: the moments see the raw gradients, so they equal the Adam ones; each step first
    shrinks p by (1 - lr * wd) = 0.95:
      p1 = 0.95 * 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.85;
      p2 = 0.95 * p1 + 0.1 * 0.28947368 / 0.79068805 = 0.8075 + 0.03661035 = 0.84411035.
    L2: the gradients become g + wd p: g1' = 0.5 + 0.5 * 1 = 1 -> m1 = 0.1, v1 = 0.001,
      p1 = 1 - 0.1 = 0.9; g2' = -1 + 0.5 * 0.9 = -0.55 -> m2 = 0.09 - 0.055 = 0.035,
      v2 = 0.000999 + 0.0003025 = 0.0013015; m_hat = 0.035 / 0.19 = 0.18421053,
      v_hat = 0.0013015 / 0.001999 = 0.65107554, root 0.80689252;
      p2 = 0.9 - 0.1 * 0.18421053 / 0.80689252 = 0.9 - 0.02282962 = 0.87717038.
    Tolerance 1e-7 relative: the decimals above carry 8 digits (and eps = 1e-8 shifts them ~1e-9).
    """
    p, s = _one(xp, 1.0), adam_init(_one(xp, 1.0))
    p, s = adam_update(p, _one(xp, 0.5), s, lr=0.1, weight_decay=0.5, decoupled=True)
    assert_close(p["p"], [0.85], xp=xp, rtol=1e-7)
    p, s = adam_update(p, _one(xp, -1.0), s, lr=0.1, weight_decay=0.5, decoupled=True)
    assert_close(p["p"], [0.84411035], xp=xp, rtol=1e-7)

    p, s = _one(xp, 1.0), adam_init(_one(xp, 1.0))
    p, s = adam_update(p, _one(xp, 0.5), s, lr=0.1, weight_decay=0.5, decoupled=False)
    assert_close(p["p"], [0.9], xp=xp, rtol=1e-7)
    assert_close(s["m/p"], [0.1], xp=xp)
    p, s = adam_update(p, _one(xp, -1.0), s, lr=0.1, weight_decay=0.5, decoupled=False)
    assert_close(s["v/p"], [0.0013015], xp=xp, rtol=1e-8)
    assert_close(p["p"], [0.87717038], xp=xp, rtol=1e-7)


@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
@settings(max_examples=20)
def test_adam_is_invariant_to_gradient_scale(scale, seed):
    """MATH.md (14.11): with eps -> 0, m_hat / sqrt(v_hat) is unchanged when every gradient
    is multiplied by c > 0, so three steps on g and on c g give the same parameters
    (eps = 1e-300 makes its contribution vanish; rtol 1e-12 for float64 rounding)."""
    rng = np.random.default_rng(seed)
    p0 = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(4)}
    gs = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(3)]
    pa, sa, pb, sb = p0, adam_init(p0), p0, adam_init(p0)
    for g in gs:
        pa, sa = adam_update(pa, g, sa, lr=0.01, eps=1e-300)
        pb, sb = adam_update(pb, {k: scale * v for k, v in g.items()}, sb, lr=0.01, eps=1e-300)
    for k in p0:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-12, atol=1e-14)


def test_adam_is_pure():
    """adam_update returns new dicts and leaves its inputs unchanged (no hidden state)."""
    p = {"w": np.ones(3)}
    g = {"w": np.full(3, 2.0)}
    s = adam_init(p)
    p2, s2 = adam_update(p, g, s, lr=0.1)
    assert np.array_equal(p["w"], np.ones(3)) and s["step"] == 0 and np.array_equal(s["m/w"], np.zeros(3))
    assert p2 is not p and s2 is not s


@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=4),
    max_norm=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25)
def test_clip_grad_norm_against_concatenation(shapes, max_norm, seed):
    """MATH.md (14.14): the global norm is the norm of all gradients concatenated into one
    vector; after clipping that vector is min(1, max_norm / norm) times the original, so
    its norm is min(norm, max_norm) and its direction is kept.  rtol 1e-12 (float64)."""
    rng = np.random.default_rng(seed)
    g = {f"g{i}": rng.standard_normal(s) * 3.0 for i, s in enumerate(shapes)}
    flat = np.concatenate([v.ravel() for v in g.values()])
    clipped, norm = clip_grad_norm(g, max_norm)
    assert norm == pytest.approx(np.linalg.norm(flat), rel=1e-12)
    cflat = np.concatenate([clipped[k].ravel() for k in g])
    assert np.linalg.norm(cflat) == pytest.approx(min(norm, max_norm), rel=1e-12)
    np.testing.assert_allclose(cflat, flat * min(1.0, max_norm / norm), rtol=1e-12)


def test_clip_grad_norm_namespaces(xp):
    """A 3-4-12 example: gradients (3, 4) and (12,) have global norm 13; max_norm 6.5 halves
    them, MATH.md (14.14).  The torch convention eps = 1e-6 scales by 6.5 / (13 + 1e-6)."""
    g = {"a": asx(xp, [3.0, 4.0]), "b": asx(xp, [12.0])}
    c, n = clip_grad_norm(g, 6.5)
    assert n == pytest.approx(13.0, rel=1e-15)
    assert_close(c["a"], [1.5, 2.0], xp=xp)
    assert_close(c["b"], [6.0], xp=xp)
    c, _ = clip_grad_norm(g, 6.5, eps=1e-6)
    assert_close(c["b"], [12.0 * 6.5 / (13.0 + 1e-6)], xp=xp)
    c, n = clip_grad_norm(g, 100.0)
    assert c["a"] is g["a"] and global_norm(g) == n


def test_clip_grad_norm_nonfinite_is_reported():
    """A NaN gradient gives a NaN norm and unscaled gradients (the loop then stops)."""
    c, n = clip_grad_norm({"a": np.array([np.nan, 1.0])}, 1.0)
    assert math.isnan(n) and np.isnan(c["a"][0])


@given(decay=st.floats(0.0, 0.999), k=st.integers(1, 20))
@settings(max_examples=20)
def test_ema_closed_form(decay, k):
    """MATH.md (14.15): with constant parameters p, k EMA steps from e_0 give
    e_k = p + decay^k (e_0 - p).  rtol 1e-12 (float64, k <= 20 steps)."""
    p = {"w": np.array([1.0, -2.0])}
    e = {"w": np.array([5.0, 3.0])}
    for _ in range(k):
        e = ema_update(e, p, decay)
    np.testing.assert_allclose(e["w"], p["w"] + decay**k * (np.array([5.0, 3.0]) - p["w"]), rtol=1e-12, atol=1e-14)


def test_ema_namespaces(xp):
    """One EMA step (14.15): 0.75 * 4 + 0.25 * 0 = 3."""
    out = ema_update({"w": asx(xp, [4.0])}, {"w": asx(xp, [0.0])}, 0.75)
    assert_close(out["w"], [3.0], xp=xp)


def test_ema_decay_warmup_values():
    """MATH.md (14.16): min(decay, (1 + k) / (10 + k)): 0.1 at k = 0, 0.5 at k = 8,
    0.9 at k = 80, capped at decay = 0.9 from there on."""
    assert ema_decay_warmup(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_warmup(8, 0.999) == pytest.approx(0.5)
    assert ema_decay_warmup(80, 0.9) == pytest.approx(0.9)
    assert ema_decay_warmup(10**6, 0.9) == 0.9


def test_warmup_and_cosine_lr():
    """MATH.md (14.17): warm-up over 4 updates gives 1/4, 2/4, 3/4, 1, 1 of base; cosine
    decay from base at the first post-warm-up update to min_lr, through the midpoint
    (base + min) / 2 half-way (cos(pi/2) = 0)."""
    assert [warmup_lr(k, 2.0, 4) for k in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert warmup_lr(7, 2.0, 0) == 2.0
    assert cosine_lr(4, 2.0, 104, warmup_steps=4, min_lr=0.2) == pytest.approx(2.0)
    assert cosine_lr(54, 2.0, 104, warmup_steps=4, min_lr=0.2) == pytest.approx(1.1)
    assert cosine_lr(104, 2.0, 104, warmup_steps=4, min_lr=0.2) == pytest.approx(0.2)
    assert cosine_lr(1, 2.0, 104, warmup_steps=4) == pytest.approx(1.0)


def test_bad_inputs():
    p = {"w": np.ones(2)}
    s = adam_init(p)
    with pytest.raises(ValueError, match="betas"):
        adam_update(p, p, s, lr=0.1, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="lr must be >= 0"):
        adam_update(p, p, s, lr=-1.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        adam_update(p, p, s, lr=0.1, eps=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        adam_update(p, p, s, lr=0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="missing \\['w'\\]"):
        adam_update(p, {"v": np.ones(2)}, s, lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        adam_update(p, {"w": np.ones(3)}, s, lr=0.1)
    with pytest.raises(ValueError, match="adam_init"):
        adam_update(p, p, {"step": 0}, lr=0.1)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(p, 0.0)
    with pytest.raises(ValueError, match="decay"):
        ema_update(p, p, 1.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_lr(0, 1.0, -1)
    with pytest.raises(ValueError, match="step"):
        warmup_lr(-1, 1.0, 2)
    with pytest.raises(ValueError, match="step"):
        ema_decay_warmup(-1, 0.9)
    with pytest.raises(ValueError, match="total_steps"):
        cosine_lr(0, 1.0, 4, warmup_steps=4)
