"""The moving-digit clips (refdiff/video_data.py)."""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from refdiff.video_data import bounce, clip_centroids, ink_crops, moving_digit_clips, speed_consistency  # noqa: E402


def _walk(p0, v, steps, L):
    """Step-by-step simulation: move by v, reflect at 0 and L (flip the velocity)."""
    p, out = p0, [p0]
    for _ in range(steps):
        p += v
        if p > L:
            p, v = 2 * L - p, -v
        if p < 0:
            p, v = -p, -v
        out.append(p)
    return out


def test_bounce_is_the_reflected_walk():
    """MATH.md (22.8): the closed-form reflection r(p0 + v t) equals a step-by-step walk
    that reflects its velocity at the borders, for every start and |v| <= 2 on L = 4."""
    L = 4
    for v in range(-2, 3):
        for p0 in range(L + 1):
            np.testing.assert_array_equal(bounce(p0, v, np.arange(12), L), _walk(p0, v, 11, L))


def test_clips_deterministic_in_range_with_constant_speed():
    """MATH.md (22.8): clips are deterministic given the seed, lie in [-1, 1], contain the
    sprite at the simulated positions (its centroid moves by exactly v per step up to the
    reflections) and have speed deviation exactly 0; a shuffled clip does not."""
    a, ya, info = moving_digit_clips(64, np.random.default_rng(0), return_info=True)
    b, yb = moving_digit_clips(64, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert a.shape == (64, 8, 8, 8) and a.min() >= -1.0 and a.max() <= 1.0
    assert np.all(np.abs(info["velocity"]).sum(1) > 0)
    assert np.max(speed_consistency(a)) < 1e-9
    c = clip_centroids(a)
    for i in range(8):
        want = np.array([_walk(int(info["start"][i, k]), int(info["velocity"][i, k]), 7, 4) for k in range(2)]).T
        np.testing.assert_allclose(c[i] - c[i, :1], want - want[:1], atol=1e-9)
    moving = np.flatnonzero(np.abs(info["velocity"]).max(1) == 2)[0]
    shuffled = a[moving:moving + 1, [0, 3, 1, 2, 7, 5, 4, 6]]
    assert speed_consistency(shuffled)[0] > 0.5


def test_bad_arguments():
    """Wrong sizes or an empty digit selection: ValueError naming the argument."""
    with pytest.raises(ValueError, match="frames"):
        moving_digit_clips(4, np.random.default_rng(0), frames=1)
    with pytest.raises(ValueError, match="digits"):
        moving_digit_clips(4, np.random.default_rng(0), digits=[11])
    with pytest.raises(ValueError, match="clips must have shape"):
        clip_centroids(np.zeros((2, 8, 8)))


def test_ink_crops_remove_the_position():
    """Every frame of a true clip gives the same crop (the sprite aligned to its ink's
    bounding box), exactly, for 200 clips; the crop equals a direct search (the sprite's
    thresholded ink shifted to the corner); a frame without ink gives the corner window;
    a clip whose sprite changes gives different crops."""
    x, y = moving_digit_clips(200, np.random.default_rng(1))
    c = ink_crops(x)
    assert c.shape == (200, 8, 4, 4)
    np.testing.assert_array_equal(c, np.broadcast_to(c[:, :1], c.shape))
    f = x[3, 5]
    rr, cc = np.nonzero(f > -0.5)
    want = np.full((4, 4), -1.0)
    win = f[rr.min():rr.min() + 4, cc.min():cc.min() + 4]
    want[:win.shape[0], :win.shape[1]] = win
    np.testing.assert_array_equal(c[3, 5], want)
    blank = -np.ones((1, 1, 8, 8))
    blank[0, 0, 0, 0] = -0.9
    np.testing.assert_array_equal(ink_crops(blank)[0, 0], blank[0, 0, :4, :4])
    mixed = x[:1].copy()
    mixed[0, 4:] = x[np.flatnonzero(y != y[0])[0], 4:]
    mc = ink_crops(mixed)
    assert np.abs(mc[0, 7] - mc[0, 0]).max() > 0.1
