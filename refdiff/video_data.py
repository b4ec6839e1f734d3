"""Toy video data: clips of T frames of 8x8 in which a small digit sprite moves with a
constant velocity and bounces at the borders, MATH.md (22.8).

Clips are (N, T, H, W) float64 in [-1, 1] (one channel; background -1).  The sprite is
a handwritten digit of scikit-learn's set average-pooled 2x2 to 4x4 (``digit_sprites``).
Its top-left corner moves on {0, .., L} per axis (L = size - 4) by the reflection map

    p_t = r(p_0 + v t),  r(q) = q mod 2L  if that is <= L, else 2L - (q mod 2L),

with per-axis velocities v in {-2, -1, 0, 1, 2} (not both 0) and p_0 a multiple of |v|,
so that each axis moves by exactly |v| pixels in every step (the reflection never
shortens a step): the frame-to-frame speed of a true clip is constant, which is what
:func:`speed_consistency` measures on generated clips.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import check_array, check_bool, check_finite_scalar, check_int
from .backend import check_rng

__all__ = ["digit_sprites", "bounce", "moving_digit_clips", "clip_centroids", "speed_consistency", "ink_crops"]

SPRITE = 4
SPEEDS = (-2, -1, 0, 1, 2)


def digit_sprites(split: str = "train"):
    """``(sprites (N, 4, 4) in [0, 1], labels (N,))``: the 8x8 digits (:func:`refdiff.data.digits8x8`,
    its fixed split) average-pooled 2x2 and mapped from [-1, 1] to [0, 1] (ink = 1).

    Parameters
    ----------
    split : {"train", "test", "all"}
        The split of :func:`refdiff.data.digits8x8`.
    """
    from .data import digits8x8

    x, y = digits8x8(split)
    x = (x[:, 0] + 1.0) / 2.0  # (N, 8, 8) in [0, 1]
    s = x.reshape(x.shape[0], 4, 2, 4, 2).mean(axis=(2, 4))  # (N, 4, 4)
    return s, y


def bounce(p0, v, t, L):
    """The reflected position r(p0 + v t) on {0, .., L} (arrays broadcast), MATH.md (22.8).

    Parameters
    ----------
    p0, v, t : int or int arrays (broadcast)
        Start, velocity, frame index.
    L : int
        Largest position (>= 1).

    Raises
    ------
    TypeError
        If an argument is not an integer (array).
    ValueError
        If ``L`` < 1, an array is empty or the shapes do not broadcast.
    """
    L = check_int("L", L, 1)
    a = {k: np.asarray(check_int(k, x)) if isinstance(x, (int, np.integer)) else check_array(k, x, dtype="int")
         for k, x in (("p0", p0), ("v", v), ("t", t))}
    try:
        np.broadcast_shapes(*(x.shape for x in a.values()))
    except ValueError:
        raise ValueError("p0, v and t must broadcast together, got shapes "
                         + ", ".join(f"{k} {tuple(x.shape)}" for k, x in a.items())) from None
    q = np.mod(a["p0"] + a["v"] * a["t"], 2 * L)
    return np.where(q <= L, q, 2 * L - q)


def moving_digit_clips(n: int, rng, *, frames: int = 8, size: int = 8, digits=None, split: str = "train",
                       return_info: bool = False):
    """``n`` clips (n, frames, size, size) float64 in [-1, 1] and their labels (n,).

    Draws from ``rng`` (a numpy Generator), in this order: the sprite indices (uniform over
    the sprites whose label is in ``digits``, default all ten), the velocities (n, 2) (uniform
    on SPEEDS^2 minus (0, 0), redrawn where both are 0), then the start positions (n, 2)
    (uniform over the multiples of |v| in [0, L]).  Deterministic given the generator's
    state.  With ``return_info`` also ``{"velocity" (n, 2) (row, col), "start" (n, 2)}``.

    Parameters
    ----------
    n : int
        Number of clips.
    rng : numpy.random.Generator
    frames, size : int
        T and H = W.
    digits : sequence of int, optional
        Digits the sprites are drawn from (default all).
    split : {"train", "test", "all"}
        Which sprites.
    return_info : bool
        Also return velocities and starts.
    """
    check_int("n", n, min=1)
    check_bool("return_info", return_info)  # issue 19
    check_int("frames", frames, min=2)
    check_int("size", size, min=SPRITE + 1)
    rng = check_rng(rng)
    sprites, labels = digit_sprites(split)
    if digits is not None:
        keep = np.isin(labels, np.asarray(digits))
        if not keep.any():
            raise ValueError(f"digits = {digits!r} selects no sprite; valid digits are 0..9")
        sprites, labels = sprites[keep], labels[keep]
    idx = rng.integers(0, sprites.shape[0], size=n)
    v = rng.choice(np.asarray(SPEEDS), size=(n, 2))
    still = np.all(v == 0, axis=1)
    while still.any():
        v[still] = rng.choice(np.asarray(SPEEDS), size=(int(still.sum()), 2))
        still = np.all(v == 0, axis=1)
    L = size - SPRITE
    n_pos = np.where(v == 0, L + 1, L // np.maximum(np.abs(v), 1) + 1)
    p0 = np.floor(rng.random((n, 2)) * n_pos).astype(np.int64) * np.maximum(np.abs(v), 1)
    t = np.arange(frames)
    rows = bounce(p0[:, None, 0], v[:, None, 0], t[None], L)  # (n, frames)
    cols = bounce(p0[:, None, 1], v[:, None, 1], t[None], L)
    clips = np.zeros((n, frames, size, size))
    for i in range(n):
        for f in range(frames):
            r, c = int(rows[i, f]), int(cols[i, f])
            clips[i, f, r:r + SPRITE, c:c + SPRITE] = sprites[idx[i]]
    out = (2.0 * clips - 1.0, labels[idx].astype(np.int64))
    if return_info:
        return out + ({"velocity": v, "start": p0},)
    return out


def _check_clips(clips, finite=True):
    """``clips`` as float64 NumPy if a float array (N, T, H, W) (``finite``: without NaN or
    inf), else TypeError/ValueError naming it (issue 19)."""
    check_array("clips", clips, finite=finite)
    if clips.ndim != 4:
        raise ValueError(f"clips must have shape (N, T, H, W), got {tuple(clips.shape)}")
    return np.asarray(clips, dtype=np.float64)


def clip_centroids(clips):
    """Intensity centroids (N, T, 2) (row, col) of clips (N, T, H, W) in [-1, 1] (weights
    max(x + 1, 0), i.e. the ink above the background).

    Parameters
    ----------
    clips : array (N, T, H, W)
        Float clips, finite (ValueError for NaN/inf).
    """
    x = _check_clips(clips)
    w = np.maximum(x + 1.0, 0.0)
    m = w.sum(axis=(2, 3)) + 1e-12
    r = np.arange(x.shape[2])[None, None, :, None]
    c = np.arange(x.shape[3])[None, None, None, :]
    return np.stack([(w * r).sum(axis=(2, 3)) / m, (w * c).sum(axis=(2, 3)) / m], axis=-1)


def speed_consistency(clips):
    """Per clip, the largest deviation (pixels) of a per-axis frame-to-frame centroid
    speed |c_{t+1} - c_t| from its fitted (mean) value over the clip, shape (N,), MATH.md
    (22.8): 0 for every true clip (constant speed through the reflections).

    Parameters
    ----------
    clips : array (N, T, H, W)
        Float clips, finite, T >= 2.
    """
    if _check_clips(clips, finite=False).shape[1] < 2:
        raise ValueError(f"clips must have T >= 2 frames (a speed needs two), got shape {tuple(clips.shape)}")
    d = np.abs(np.diff(clip_centroids(clips), axis=1))  # (N, T-1, 2)
    return np.max(np.abs(d - d.mean(axis=1, keepdims=True)), axis=(1, 2))




def ink_crops(clips, threshold: float = -0.5, size: int = SPRITE):
    """Per frame, the ``size`` x ``size`` window whose top-left corner is the top-left
    corner of the ink's bounding box (the pixels above ``threshold``; the corner (0, 0)
    for a frame without ink), padded with the background -1 beyond the canvas: clips
    (N, T, H, W) -> crops (N, T, size, size).

    The crop removes the sprite's position: every frame of a true clip gives the same
    crop (the sprite moves rigidly on a background of -1), so a digit classifier applied
    to the crops gives one label to all frames of every true clip, and disagreement on a
    generated clip measures a change of the digit's shape, not of its place.

    Parameters
    ----------
    clips : array (N, T, H, W)
        Clips in [-1, 1].
    threshold : float
        Ink level (default -0.5: a sprite intensity above 1/4).
    size : int
        Crop side (default the sprite's, 4).
    """
    x = _check_clips(clips)
    check_finite_scalar("threshold", threshold)
    check_int("size", size, min=1)
    N, T, H, W = x.shape
    ink = x > threshold
    rows, cols = ink.any(axis=3), ink.any(axis=2)  # (N, T, H), (N, T, W)
    r0 = np.where(rows.any(axis=2), rows.argmax(axis=2), 0)
    c0 = np.where(cols.any(axis=2), cols.argmax(axis=2), 0)
    pad = np.pad(x, ((0, 0), (0, 0), (0, size), (0, size)), constant_values=-1.0)
    u = np.arange(size)
    n_i, t_i = np.arange(N)[:, None, None, None], np.arange(T)[None, :, None, None]
    return pad[n_i, t_i, (r0[..., None] + u)[..., :, None], (c0[..., None] + u)[..., None, :]]
