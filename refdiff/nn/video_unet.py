"""A video U-Net for clips (N, T, H, W) with 3-D (or (2+1)-D) convolutions, temporal
attention and joint space-time attention at the bottleneck; hand-written backprop,
MATH.md (22.16), (22.9), (13.16), (13.20), (13.21).

Frames are a batch axis: activations are (N T, C, H, W), frames of a clip consecutive,
so the image layers (convolution, GroupNorm, SiLU, resampling; the tuned ones of
:mod:`refdiff.nn.fast`) run unchanged.  Time enters in three places:

* the convolutions of the residual blocks and ``conv_in`` are 3-D with kernel 3 in time,
  computed as a 2-D convolution of the channel-stacked neighbours (X[f-1], X[f], X[f+1])
  (zero frames outside the clip), MATH.md (22.16); ``conv="2+1d"`` instead runs a spatial
  3x3 convolution followed by a temporal kernel-3 1x1 convolution (the same stacking);
* temporal attention (MATH.md (22.9)) across the T frames at each position, at the levels
  ``tattn_levels`` (default the 4x4 and 2x2 ones), with the sinusoidal temporal positions
  (13.12) added to its (normalised) tokens;
* with ``joint`` the bottleneck's attention is over all T h w tokens of a clip (8 frames x
  2x2 = 32 tokens), so the sprite can be copied between any two places and frames;
  ``jattn_levels`` adds such a joint attention after the (temporal) attention of every res
  block of those levels (e.g. level 1: 8 frames x 4x4 = 128 tokens), zero at init.

GroupNorm normalises each frame on its own (statistics over (C/G, H, W) of one frame):
the frames-as-batch view of the image layer.  Layout (widths W_l = width * mults[l] at
size / 2^l, R = res_blocks)::

    e   = silu(silu(sinusoid(t) W_1 + b_1) W_2 + b_2)          (N, E), the same for every frame
    h   = conv3d_in(x_f [, m c, m])                             -> skip
    down l: R x [vres(., e) (+ tattn) (+ jattn)]                -> skip each
            conv 3x3 stride 2 per frame (not after the last)    -> skip
    mid:   vres, joint attention (or tattn), vres
    up l:  (R + 1) x [vres(concat(h, skip)) (+ tattn) (+ jattn)], nearest x2 + conv 3x3 (not at level 0)
    out  = conv_out(silu(gn(h)))                                 per frame, zero at init

The attention output projections and ``conv_out`` start at zero.  Parameters are a flat
dict; NaN and inf propagate: not checked.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validate import check_bool
from ..backend import array_namespace
from ._check import check_block, check_cache, check_config, check_dout, check_video_args
from .blocks import conv_b, conv_f, gnsilu_b, gnsilu_f, init_conv, init_groupnorm, init_linear, lin_b, lin_f
from .fast import concat_backward, concat_forward, silu_backward, silu_forward
from .layers import timestep_embedding_forward
from .unet_blocks import BLOCKS
from .video_unet_blocks import (_attn_b, _attn_f, _attn_init, _conv3d_init, _vres_backward, _vres_forward, _vres_init,
                                conv3d_backward, conv3d_forward)

__all__ = ["VideoUNetConfig", "vunet_init", "vunet_forward", "vunet_backward"]


@dataclasses.dataclass(frozen=True)
class VideoUNetConfig:
    """frames T, frame size (``size`` square, divisible by 2^(L-1)), width and mults (the
    widths width * m per level), res_blocks R, groups (GroupNorm, dividing every width with
    >= 2 channels per group), heads (dividing every attended width), tattn_levels (levels
    with temporal attention), jattn_levels (levels with an added joint space-time attention
    after each res block), joint (joint space-time attention at the bottleneck, else
    temporal), conv ("3d" or "2+1d"), temporal_pos (sinusoidal frame positions in every
    attention; without them the attention blocks are frame-permutation equivariant),
    first_frame (MATH.md (22.11): channels m c and m next to each frame).

    Parameters
    ----------
    frames, size, width, res_blocks, groups, heads : int, optional
        T (8), H = W (8), base width (32), res blocks per level down (1; one more up),
        GroupNorm groups (8), attention heads (4).
    mults : tuple of int, optional
        Width multipliers per level (default (1, 2, 2): 8x8, 4x4, 2x2).
    tattn_levels : tuple of int, optional
        Levels with temporal attention after each res block (default (1, 2)).
    jattn_levels : tuple of int, optional
        Levels with a joint space-time attention over all T h w tokens of a clip after
        each res block (and after its temporal attention); default () (none).  Its output
        projection starts at zero, so parameters trained without it, completed by the new
        blocks' initial values, give the same network.
    joint : bool, optional
        Joint space-time attention at the bottleneck (default True), else temporal.
    conv : {"3d", "2+1d"}, optional
        The space-time convolutions, MATH.md (22.16) (default "3d").
    temporal_pos : bool, optional
        Sinusoidal frame positions in the attention (default True).
    first_frame : bool, optional
        Condition on a given first frame (default False).

    Raises
    ------
    ValueError
        If a field is out of range or the widths, groups, heads and size do not fit.
    """

    frames: int = 8
    size: int = 8
    width: int = 32
    mults: tuple = (1, 2, 2)
    res_blocks: int = 1
    groups: int = 8
    heads: int = 4
    tattn_levels: tuple = (1, 2)
    jattn_levels: tuple = ()
    joint: bool = True
    conv: str = "3d"
    temporal_pos: bool = True
    first_frame: bool = False

    def __post_init__(self):
        for name in ("mults", "tattn_levels", "jattn_levels"):
            if isinstance(getattr(self, name), (str, bytes)) or not hasattr(getattr(self, name), "__iter__"):
                raise TypeError(f"VideoUNetConfig: {name} must be a tuple of ints, got {getattr(self, name)!r}")
        check_config("VideoUNetConfig", self, ints={k: 1 for k in ("frames", "size", "width", "res_blocks", "groups",
                                                                   "heads")},
                     bools=("joint", "temporal_pos", "first_frame"))
        object.__setattr__(self, "mults", tuple(self.mults))
        object.__setattr__(self, "tattn_levels", tuple(self.tattn_levels))
        object.__setattr__(self, "jattn_levels", tuple(self.jattn_levels))
        L = len(self.mults)
        if L < 1 or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in self.mults):
            raise ValueError(f"VideoUNetConfig: mults must be a non-empty tuple of ints >= 1, got {self.mults!r}")
        if self.size % 2 ** (L - 1):
            raise ValueError(f"VideoUNetConfig: size = {self.size} must be divisible by 2^(len(mults) - 1) = "
                             f"{2 ** (L - 1)}")
        for name in ("tattn_levels", "jattn_levels"):
            v = getattr(self, name)
            if any(not isinstance(l, int) or isinstance(l, bool) or not 0 <= l < L for l in v):
                raise ValueError(f"VideoUNetConfig: {name} = {v!r} must be levels in [0, {L - 1}]")
        if self.conv not in ("3d", "2+1d"):
            raise ValueError(f"VideoUNetConfig: conv must be '3d' or '2+1d', got {self.conv!r}")
        for w in self.widths:
            if w % self.groups or w // self.groups < 2:
                raise ValueError(f"VideoUNetConfig: groups = {self.groups} must divide every width {self.widths} "
                                 "with at least 2 channels per group")
            if w % self.heads:
                raise ValueError(f"VideoUNetConfig: heads = {self.heads} must divide every width {self.widths}")

    @property
    def widths(self):
        return tuple(self.width * m for m in self.mults)


# kind -> (init(P, name, c_in, c_out, cfg, rng), forward(P, name, h, env), backward(G, P, name, dh, cache, denv))
_KINDS = {
    "in": (lambda P, n, ci, co, cfg, rng: _conv3d_init(P, n, ci, co, "3d", rng),
           lambda P, n, h, env: conv3d_forward(P, n, h, env["T"], "3d"),
           lambda G, P, n, dh, cache, denv: conv3d_backward(G, n, dh, cache)),
    "res": (_vres_init, _vres_forward, _vres_backward),
    "tattn": (lambda P, n, ci, co, cfg, rng: _attn_init(P, n, ci, cfg, rng), _attn_f(False), _attn_b),
    "jattn": (lambda P, n, ci, co, cfg, rng: _attn_init(P, n, ci, cfg, rng), _attn_f(True), _attn_b),
    "down": (lambda P, n, ci, co, cfg, rng: BLOCKS["down"].init(P, n, ci, co, cfg, rng), BLOCKS["down"].forward,
             BLOCKS["down"].backward),
    "up": (lambda P, n, ci, co, cfg, rng: BLOCKS["up"].init(P, n, ci, co, cfg, rng), BLOCKS["up"].forward,
           BLOCKS["up"].backward),
}


def _plan(cfg):
    """Blocks as (kind, name, c_in, c_out, push, pop), as :meth:`refdiff.nn.UNet._plan`:
    ``push`` puts the output on the skip stack, ``pop`` concatenates the stack's top first."""
    W, R, L = cfg.widths, cfg.res_blocks, len(cfg.widths)
    c_in = 3 if cfg.first_frame else 1
    blocks, skips, ch = [("in", "in", c_in, W[0], True, False)], [W[0]], W[0]
    for l in range(L):
        att = [k for k in ("tattn", "jattn") if l in getattr(cfg, k + "_levels")]
        for r in range(R):
            blocks.append(("res", f"down{l}.res{r}", ch, W[l], not att, False))
            ch = W[l]
            blocks += [(k, f"down{l}.{k}{r}", ch, ch, k == att[-1], False) for k in att]  # the last one pushes
            skips.append(ch)
        if l < L - 1:
            blocks.append(("down", f"down{l}.down", ch, ch, True, False))
            skips.append(ch)
    blocks += [("res", "mid.res0", ch, ch, False, False),
               ("jattn" if cfg.joint else "tattn", "mid.attn", ch, ch, False, False),
               ("res", "mid.res1", ch, ch, False, False)]
    for l in reversed(range(L)):
        for r in range(R + 1):
            blocks.append(("res", f"up{l}.res{r}", ch + skips.pop(), W[l], False, True))
            ch = W[l]
            blocks += [(k, f"up{l}.{k}{r}", ch, ch, False, False) for k in ("tattn", "jattn")
                       if l in getattr(cfg, k + "_levels")]
        if l > 0:
            blocks.append(("up", f"up{l}.up", ch, ch, False, False))
    return blocks


def vunet_init(rng: np.random.Generator, cfg: VideoUNetConfig) -> dict:
    """Host float64 parameters: convolutions and linear maps N(0, 1/fan_in), biases 0,
    GroupNorm gamma 1; the attention output projections and ``out.conv`` zero.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the initial weights.
    cfg : VideoUNetConfig
        The architecture.

    Returns
    -------
    dict
        Parameter name -> NumPy float64 array.
    """
    if not isinstance(cfg, VideoUNetConfig):
        raise TypeError(f"cfg must be a VideoUNetConfig, got {type(cfg).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    P, W0 = {}, cfg.widths[0]
    init_linear(P, "temb.lin1", W0, 4 * W0, rng)
    init_linear(P, "temb.lin2", 4 * W0, 4 * W0, rng)
    for kind, name, ci, co, _, _ in _plan(cfg):
        _KINDS[kind][0](P, name, ci, co, cfg, rng)
    init_groupnorm(P, "out.norm", W0)
    init_conv(P, "out.conv", W0, 1, 3, rng, zero=True)
    return P


def vunet_forward(P, x, t, cfg: VideoUNetConfig, first=None, keep=None):
    """The denoiser's output (N, T, H, W) for clips x (N, T, H, W) at times t (N,) (the
    module docstring; MATH.md (22.16), (22.9)); with ``cfg.first_frame`` each frame's input
    is (x_f, m c, m) (MATH.md (22.11)), c = ``first`` (N, H, W), m = ``keep`` (default 1;
    ``first=None``: dropped).  Same checks and messages as
    :func:`refdiff.nn.video.video_forward`.

    Parameters
    ----------
    P : dict
        Parameters (:func:`vunet_init`, possibly cast).
    x : array, shape (N, T, H, W)
        Noisy clips.
    t : array, shape (N,)
        Diffusion times.
    cfg : VideoUNetConfig
        The architecture.
    first : array, shape (N, H, W), optional
        The given first frames (a ``first_frame`` model only).
    keep : array, shape (N,), optional
        1 where the condition is kept, 0 where dropped.

    Returns
    -------
    out : array, shape (N, T, H, W)
        The network output.
    cache : tuple
        For :func:`vunet_backward`.

    Raises
    ------
    ValueError
        If ``x`` is not a clip of the configured shape, ``t`` not (N,), ``first`` not
        (N, H, W), or ``first`` is given to a model without ``first_frame``.
    """
    from .video import _frames_input

    if not isinstance(cfg, VideoUNetConfig):
        raise TypeError(f"cfg must be a VideoUNetConfig, got {type(cfg).__name__}")
    check_video_args(P=P, t=t)  # issue 19
    check_block(P, "in", ".w", ".b", what="vunet_forward")
    xp, (N, T, H, W), dt, h = _frames_input(P, x, t, cfg, first, keep)  # (N T, 1 or 3, H, W), MATH.md (22.11)
    s, _ = timestep_embedding_forward(xp.astype(t, dt), cfg.widths[0], dtype=dt)
    e, c_l1 = lin_f(P, "temb.lin1", s)
    e, c_s1 = silu_forward(e)
    e, c_l2 = lin_f(P, "temb.lin2", e)
    e, c_s2 = silu_forward(e)
    m = h[::T, 2, 0, 0] if cfg.first_frame else None  # (N,) the mask of (22.11)
    env = {"e": e, "T": T, "conv": cfg.conv, "groups": cfg.groups, "heads": cfg.heads, "pos": cfg.temporal_pos}
    skips, caches = [], []
    for kind, name, _, _, push, pop in _plan(cfg):
        c_cat = None
        if pop:
            h, c_cat = concat_forward(h, skips.pop())
        h, cc = _KINDS[kind][1](P, name, h, env)
        caches.append((c_cat, cc))
        if push:
            skips.append(h)
    h, c_n = gnsilu_f(P, "out.norm", h, cfg.groups)
    out, c_o = conv_f(P, "out.conv", h)
    return xp.reshape(out, (N, T, H, W)), (P, cfg, (N, T, H, W), (c_l1, c_s1, c_l2, c_s2), caches, (c_n, c_o), m)


def vunet_backward(dout, cache, return_first: bool = False):
    """Gradients of :func:`vunet_forward`: ``(grads (keys of P), dx (N, T, H, W))``, with
    ``return_first`` also d first (N, H, W) (the frames' sum of the gradient of channel
    m c, times m; MATH.md (22.11)).  MATH.md (22.16), (22.9).

    Parameters
    ----------
    dout : array, shape (N, T, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`vunet_forward`.
    return_first : bool, optional
        Also return the gradient with respect to ``first``.

    Returns
    -------
    grads : dict
        Gradient of every parameter.
    dx : array, shape (N, T, H, W)
        Gradient with respect to x.
    dfirst : array, shape (N, H, W)
        Only with ``return_first``.
    """
    P, cfg, (N, T, H, W), c_emb, caches, (c_n, c_o), m = check_cache(cache, "vunet_forward", 7)
    check_dout(dout, (N, T, H, W))
    check_bool("return_first", return_first)
    xp = array_namespace(dout)
    G, denv, dskips = {}, {"T": T}, []
    dh = conv_b(G, "out.conv", xp.reshape(dout, (N * T, 1, H, W)), c_o)
    dh = gnsilu_b(G, "out.norm", dh, c_n)
    for (kind, name, _, _, push, pop), (c_cat, cc) in zip(reversed(_plan(cfg)), reversed(caches)):
        if push:
            dh = dh + dskips.pop()
        dh = _KINDS[kind][2](G, P, name, dh, cc, denv)
        if pop:
            dh, ds = concat_backward(dh, c_cat)
            dskips.append(ds)
    c_l1, c_s1, c_l2, c_s2 = c_emb
    de = silu_backward(denv["e"], c_s2)
    de = silu_backward(lin_b(G, "temb.lin2", de, c_l2), c_s1)
    lin_b(G, "temb.lin1", de, c_l1)
    dx = xp.reshape(dh[:, 0], (N, T, H, W))
    if not return_first:
        return {k: G[k] for k in P}, dx
    if m is None:
        raise ValueError("return_first=True needs a first_frame model (VideoUNetConfig.first_frame)")
    dfirst = xp.sum(xp.reshape(dh[:, 1], (N, T, H, W)), axis=1) * xp.reshape(m, (N, 1, 1))
    return {k: G[k] for k in P}, dx, dfirst
