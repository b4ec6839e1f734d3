"""A space-time transformer denoiser for clips (N, T, H, W) with factorised attention and
hand-written backprop, MATH.md (22.9), (22.10).

Architecture (D = width, p = patch, L = (H / p)(W / p) tokens per frame)::

    z   = patchify(x_f) W_in + b_in + E_s + E_T[f] + e(t)      (N T, L, D)   every frame f
    per block:
      z = z + SpatialAttn(LN(z))       tokens of one frame    (N T, L, D)   frames as batch
      z = z + TemporalAttn(LN(z))      one position, T frames (N L, T, D)   positions as batch
      z = z + MLP(LN(z))               per token, GELU
    out = unpatchify(LN(z) W_out + b_out)                      (N, T, H, W)

E_s (L, D) are learned spatial positions, E_T (T, D) the fixed sinusoidal temporal
positions (13.12) of the frame index (``temporal_pos=False`` drops them: the network is
then equivariant to permuting frames, MATH.md (22.10)), e(t) = MLP(sinusoid(t)) the
diffusion-time embedding.  The temporal attention's output projection and W_out start at
zero (the identity-at-init of motion modules).  Parameters are a flat dict; the cache is a
plain tuple; nothing is kept on objects.

Arguments are checked at the top of each public function (types, dtypes, shapes; issue 19);
NaN and inf propagate: not checked.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .._validate import check_array
from ..backend import array_namespace
from .._validate import check_bool, check_finite_scalar, check_int
from ._check import check_cache, check_config, check_dout, check_video_args
from .activations import gelu_backward, gelu_forward, silu_backward, silu_forward
from .attention import mha_backward, mha_forward, mha_init
from .conv import conv2d_backward, conv2d_forward
from .dit import modulate_backward, modulate_forward
from .layers import timestep_embedding_forward
from .norm import layernorm_backward, layernorm_forward
from .resample import patchify_backward, patchify_forward, unpatchify_backward, unpatchify_forward

__all__ = ["VideoConfig", "video_init", "video_forward", "video_backward", "video_as_model",
           "temporal_attention_forward", "temporal_attention_backward", "check_clip", "check_first"]


@dataclasses.dataclass(frozen=True)
class VideoConfig:
    """frames T, frame size (H, W) (``size`` square), patch p (divides size), width D,
    heads (divide D), depth (blocks), temporal_pos (sinusoidal frame positions).

    Parameters
    ----------
    frames : int, optional
        Frames per clip T (default 8).
    size : int, optional
        Frame side H = W (default 8).
    patch : int, optional
        Patch side p, dividing ``size`` (default 2).
    width : int, optional
        Token width D (default 32).
    heads : int, optional
        Attention heads, dividing ``width`` (default 4).
    depth : int, optional
        Number of blocks (default 2).
    temporal_pos : bool, optional
        Add sinusoidal frame positions (default True).
    first_frame : bool, optional
        Condition on a given first frame (image-to-video as a condition kind, MATH.md
        (22.11)): every frame's input gets two extra channels, the given first frame
        (zeros when dropped) and a 0/1 mask channel (default False).
    overlap : int, optional
        Margin m of an overlapping patch embedding, MATH.md (22.14): each token embeds the
        (p + 2m) x (p + 2m) window around its patch (zero padding at the frame's border),
        a convolution with kernel p + 2m and stride p (MATH.md (13.3)); ``in.w`` is then
        (C (p + 2m)^2, D) in the convolution's (c, u, v) order.  0 (default): the plain
        patch embedding.
    adaln : bool, optional
        adaLN-Zero time conditioning as DiT's, MATH.md (20.3), (20.4), (20.5) with
        SiLU(e(t)) as the conditioning: each block's three sublayers (spatial attention,
        temporal attention, MLP) get their own (shift, scale, gate), nine chunks of
        width D, and the output LayerNorm a (shift, scale); all start at zero, so each
        block starts as the identity (default False: e(t) is only added to the tokens).
    joint : bool, optional
        The first attention of each block attends over all T L tokens of a clip (joint
        space-time attention) instead of the L tokens of one frame (default False).
        Still frame-permutation equivariant without temporal positions.
    pos_init : float, optional
        Standard deviation of the learned spatial positions E_s at initialisation
        (default 0.02).  At 0.02 the positions are ~50 times smaller than the patch
        embeddings and take ~1000 Adam steps to grow: until then the spatial attention
        nearly ignores where a patch is, and samples are speckles scattered over the
        frame (examples/video.py); 1.0 matches DiT's fixed sinusoidal table (20.2).

    Raises
    ------
    ValueError
        If an int field is not an int >= 1, ``patch`` does not divide ``size`` or ``heads``
        does not divide ``width``.
    """

    frames: int = 8
    size: int = 8
    patch: int = 2
    width: int = 32
    heads: int = 4
    depth: int = 2
    temporal_pos: bool = True
    first_frame: bool = False
    overlap: int = 0
    adaln: bool = False
    pos_init: float = 0.02
    joint: bool = False

    def __post_init__(self):
        check_config("VideoConfig", self, ints={k: 1 for k in ("frames", "size", "patch", "width", "heads", "depth")},  # issue 19
                     bools=("temporal_pos", "first_frame", "adaln", "joint"),
                     floats={"pos_init": (0.0, False)})
        for name in ("frames", "size", "patch", "width", "heads", "depth"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"VideoConfig.{name} must be an int >= 1, got {v!r}")
        if self.size % self.patch:
            raise ValueError(f"VideoConfig: patch = {self.patch} must divide size = {self.size}")
        if self.width % self.heads:
            raise ValueError(f"VideoConfig: heads = {self.heads} must divide width = {self.width}")
        check_config("VideoConfig", self, ints={"overlap": 0})
        if self.overlap >= self.size:
            raise ValueError(f"VideoConfig: overlap = {self.overlap} must lie in [0, size - 1 = {self.size - 1}]")


def video_init(rng: np.random.Generator, cfg: VideoConfig) -> dict:
    """Host float64 parameters: weights N(0, 1/fan_in), biases 0, LayerNorm gamma 1, the
    temporal attention's output projection (without ``adaln``; with it the zero gates
    make every block the identity) and W_out zero; with ``adaln`` the modulations zero.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the initial weights.
    cfg : VideoConfig
        The architecture.

    Returns
    -------
    dict
        Parameter name -> NumPy float64 array.
    """
    check_video_args(rng=rng, cfg=cfg)  # issue 19
    D, pp = cfg.width, (cfg.patch + 2 * cfg.overlap) ** 2 * (3 if cfg.first_frame else 1)
    L = (cfg.size // cfg.patch) ** 2
    P = {"in.w": rng.standard_normal((pp, D)) / math.sqrt(pp), "in.b": np.zeros(D),
         "pos.s": cfg.pos_init * rng.standard_normal((L, D)),
         "t.w1": rng.standard_normal((D, D)) / math.sqrt(D), "t.b1": np.zeros(D),
         "t.w2": rng.standard_normal((D, D)) / math.sqrt(D), "t.b2": np.zeros(D)}
    for k in range(cfg.depth):
        for ln in ("ln1", "ln2", "ln3"):
            P[f"b{k}.{ln}.g"], P[f"b{k}.{ln}.b"] = np.ones(D), np.zeros(D)
        mha_init(P, f"b{k}.sa", D, cfg.heads, rng)
        # identity at init: a zero output projection, or with adaln the zero gate alone (a
        # zero projection times a zero gate would get no gradient in either factor)
        mha_init(P, f"b{k}.ta", D, cfg.heads, rng, zero_out=not cfg.adaln)
        P[f"b{k}.mlp.w1"], P[f"b{k}.mlp.b1"] = rng.standard_normal((D, 4 * D)) / math.sqrt(D), np.zeros(4 * D)
        P[f"b{k}.mlp.w2"], P[f"b{k}.mlp.b2"] = rng.standard_normal((4 * D, D)) / math.sqrt(4 * D), np.zeros(D)
    P["out.ln.g"], P["out.ln.b"] = np.ones(D), np.zeros(D)
    if cfg.adaln:  # MATH.md (20.4), (20.5): zero modulation at init
        for k in range(cfg.depth):
            P[f"b{k}.ada.w"], P[f"b{k}.ada.b"] = np.zeros((D, 9 * D)), np.zeros(9 * D)
        P["out.ada.w"], P["out.ada.b"] = np.zeros((D, 2 * D)), np.zeros(2 * D)
    P["out.w"], P["out.b"] = np.zeros((D, cfg.patch ** 2)), np.zeros(cfg.patch ** 2)
    return P


def check_clip(x, cfg: VideoConfig, name: str = "x"):
    """ValueError unless x is a clip (N, T, H, W) with the model's T, H, W.

    Parameters
    ----------
    x : array
        The value checked.
    cfg : VideoConfig
        The model's configuration.
    name : str, optional
        Name of ``x`` in the error message (default ``"x"``).

    Raises
    ------
    ValueError
        If ``x`` is not an array of shape (N, frames, size, size).
    """
    check_video_args(cfg=cfg)  # issue 19
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (the argument's name in messages), got {type(name).__name__}")
    check_array(name, x)
    want = (cfg.frames, cfg.size, cfg.size)
    if not hasattr(x, "shape") or x.ndim != 4 or tuple(x.shape[1:]) != want:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name} has shape {shape}; the model takes clips (N, T, H, W) = (N, {want[0]}, "
                         f"{want[1]}, {want[2]}) (frames = {cfg.frames}, frame size {cfg.size}x{cfg.size})")


# ------------------------------------------------------------------ temporal attention
def temporal_attention_forward(P, pre, z, frames: int, *, heads: int):
    """Self-attention across the frames at each spatial position, MATH.md (22.9): tokens
    (N T, L, D) -> (N L, T, D) (positions as batch), multi-head attention (13.23), back to
    (N T, L, D).  Returns ``(y, cache)``.

    Parameters
    ----------
    P : dict
        Parameter dict holding the attention's projections under ``pre``.
    pre : str
        Key prefix of the attention.
    z : array, shape (N T, L, D)
        Tokens, frames of a clip consecutive.
    frames : int
        Number of frames T per clip.
    heads : int
        Number of heads, dividing D.

    Returns
    -------
    y : array, shape (N T, L, D)
        The attention output.
    cache : tuple
        Saved values for :func:`temporal_attention_backward`.
    """
    check_video_args(P=P, pre=pre, z=z, frames=frames, heads=heads)  # issue 19
    if z.shape[0] % frames:
        raise ValueError(f"z has {z.shape[0]} rows, not a multiple of frames = {frames}")
    xp = array_namespace(z)
    NT, L, D = z.shape
    N = NT // frames
    zt = xp.reshape(xp.permute_dims(xp.reshape(z, (N, frames, L, D)), (0, 2, 1, 3)), (N * L, frames, D))
    y, c = mha_forward(P, pre, zt, heads=heads)  # (N L, T, D)
    y = xp.reshape(xp.permute_dims(xp.reshape(y, (N, L, frames, D)), (0, 2, 1, 3)), (NT, L, D))
    return y, (c, N, L, frames, D)


def temporal_attention_backward(G, P, pre, dy, cache):
    """Backward of :func:`temporal_attention_forward` (gradients added into G), MATH.md (22.9).

    Parameters
    ----------
    G : dict
        Gradient dict; the attention's parameter gradients are added into it under ``pre``.
    P : dict
        The parameter dict of the forward pass.
    pre : str
        Key prefix of the attention.
    dy : array, shape (N T, L, D)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`temporal_attention_forward`.

    Returns
    -------
    dz : array, shape (N T, L, D)
        Gradient with respect to ``z``.
    """
    check_video_args(G=G, P=P, pre=pre, dy=dy)  # issue 19
    check_cache(cache, "temporal_attention_forward", 5)
    check_dout(dy, (cache[1] * cache[3], cache[2], cache[4]), name="dy")
    xp = array_namespace(dy)
    c, N, L, T, D = cache
    dyt = xp.reshape(xp.permute_dims(xp.reshape(dy, (N, T, L, D)), (0, 2, 1, 3)), (N * L, T, D))
    dz, _ = mha_backward(G, P, pre, dyt, c)
    return xp.reshape(xp.permute_dims(xp.reshape(dz, (N, L, T, D)), (0, 2, 1, 3)), (N * T, L, D))


# ------------------------------------------------------------------ the network
def check_first(first, cfg: VideoConfig, n=None, name: str = "first"):
    """ValueError unless ``first`` is first frames (N, H, W) of the model's frame size (and
    N = n when given).

    Parameters
    ----------
    first : array
        The value checked.
    cfg : VideoConfig
        The model's configuration.
    n : int, optional
        The batch size it must have.
    name : str, optional
        Its name in the message.

    Raises
    ------
    TypeError
        If ``first`` is not a float array (float32 or float64), ``cfg`` not a VideoConfig,
        ``n`` not an int or ``name`` not a str.
    ValueError
        If the shape is wrong.
    """
    if not isinstance(name, str):  # issue 19
        raise TypeError(f"name must be a str (the argument's name in messages), got {type(name).__name__}")
    check_video_args(cfg=cfg)  # issue 19
    if n is not None:
        check_int("n", n, 1)  # issue 19
    check_array(name, first)  # issue 19: float frames; NaN/inf not read (per step)
    want = (cfg.size, cfg.size)
    if first.ndim != 3 or tuple(first.shape[1:]) != want or (n is not None and first.shape[0] != n):
        raise ValueError(f"{name} has shape {tuple(first.shape)}; the model takes first frames (N, H, W) = "
                         f"({'N' if n is None else n}, {cfg.size}, {cfg.size}) (frame size {cfg.size}x{cfg.size}"
                         f"{'' if n is None else f', batch size n = {n}'})")


def _first_channels(xp, first, keep, cfg, N, dt, like):
    """The two condition channels (N T, 2, H, W) of MATH.md (22.11): m c and m per frame."""
    H = cfg.size
    if first is None:
        if keep is not None:
            raise ValueError("keep was given without first")
        c, m = xp.zeros((N, H, H), dtype=dt), xp.zeros((N,), dtype=dt)
    else:
        check_first(first, cfg, N)
        c = xp.astype(first, dt)
        m = xp.ones((N,), dtype=dt) if keep is None else xp.astype(keep, dt)
        if tuple(m.shape) != (N,):
            raise ValueError(f"keep must have shape (N,) = ({N},), got {tuple(m.shape)}")
    m3 = xp.reshape(m, (N, 1, 1))
    ch = xp.stack([m3 * c, m3 * xp.ones_like(c)], axis=1)  # (N, 2, H, W)
    T = cfg.frames
    ch = xp.broadcast_to(xp.reshape(ch, (N, 1, 2, H, H)), (N, T, 2, H, H))
    return xp.reshape(ch, (N * T, 2, H, H))


def _temporal_positions(xp, cfg, like):
    f = xp.astype(xp.arange(cfg.frames), like.dtype)
    return timestep_embedding_forward(f, cfg.width, dtype=like.dtype)[0]  # (T, D)


def _embed(xp, P, inp, cfg):
    """Tokens (N T, L, D) of the frames ``inp`` (N T, C, H, W): patchify and ``in.w``
    (13.28), or with ``cfg.overlap`` = m > 0 the overlapping embedding (22.14), the
    convolution (13.3) with kernel p + 2m, stride p, padding m.  Returns (z, tok, cache)."""
    if not cfg.overlap:
        tok, c_p = patchify_forward(inp, cfg.patch)  # (N T, L, p p C)
        return tok @ P["in.w"] + P["in.b"], tok, c_p
    k, D = cfg.patch + 2 * cfg.overlap, cfg.width
    w = xp.reshape(xp.permute_dims(P["in.w"], (1, 0)), (D, inp.shape[1], k, k))
    y, c_c = conv2d_forward(inp, w, P["in.b"], stride=cfg.patch, pad=cfg.overlap)  # (N T, D, H/p, W/p)
    z = xp.permute_dims(xp.reshape(y, (y.shape[0], D, -1)), (0, 2, 1))  # raster token order, as patchify
    return z, None, (c_c, tuple(y.shape))


def _embed_backward(xp, G, P, dz, tok, c_p, cfg):
    """Backward of :func:`_embed`: ``in.w``, ``in.b`` into G; returns d inp (N T, C, H, W)."""
    D = cfg.width
    if not cfg.overlap:
        dtok = xp.reshape(dz, (-1, D))
        G["in.w"] = xp.reshape(tok, (-1, tok.shape[-1])).T @ dtok
        G["in.b"] = xp.sum(dtok, axis=0)
        return patchify_backward(xp.reshape(dtok @ P["in.w"].T, tok.shape), c_p)
    c_c, shape = c_p
    dy = xp.reshape(xp.permute_dims(dz, (0, 2, 1)), shape)
    dinp, dw, G["in.b"] = conv2d_backward(dy, c_c)
    G["in.w"] = xp.permute_dims(xp.reshape(dw, (D, -1)), (1, 0))
    return dinp


def _ln(P, key, z):
    return layernorm_forward(z, P[key + ".g"], P[key + ".b"])


def _per_clip(xp, a, g, N):
    """a (N T, L, D) times g (N, D), each clip's tokens by its own row."""
    return xp.reshape(xp.reshape(a, (N, -1, a.shape[-1])) * g[:, None, :], a.shape)


def _clip_sum(xp, a, N):
    """(N T, L, D) -> (N, D): the sum over each clip's tokens."""
    return xp.sum(xp.reshape(a, (N, -1, a.shape[-1])), axis=1)


def _modulate(xp, u0, md, i, N):
    """adaLN's mod of MATH.md (20.3), u0 (1 + md[i + 1]) + md[i] per clip: DiT's
    :func:`refdiff.nn.dit.modulate_forward` on the (N, T L, D) view (u0 itself without md)."""
    if md is None:
        return u0
    return xp.reshape(modulate_forward(xp.reshape(u0, (N, -1, u0.shape[-1])), md[i], md[i + 1])[0], u0.shape)


def _gate(xp, a, md, i, N):
    """The gated sublayer output md[i] a of MATH.md (20.4) (a itself without md)."""
    return a if md is None else _per_clip(xp, a, md[i], N)


def _gate_backward(xp, dz, a, md, i, dmod, N):
    """Backward of :func:`_gate`: d a, with d md[i] written to dmod[i]."""
    if md is None:
        return dz
    dmod[i] = _clip_sum(xp, dz * a, N)
    return _per_clip(xp, dz, md[i], N)


def _modulate_backward(xp, dv, u0, md, i, dmod, N):
    """Backward of :func:`_modulate` (:func:`refdiff.nn.dit.modulate_backward` with its
    cache ``(x, scale)``): d u0, with d shift and d scale written to dmod[i], dmod[i + 1]."""
    if md is None:
        return dv
    D = dv.shape[-1]
    du, dmod[i], dmod[i + 1] = modulate_backward(xp.reshape(dv, (N, -1, D)), (xp.reshape(u0, (N, -1, D)), md[i + 1]))
    return xp.reshape(du, dv.shape)


def video_forward(P, x, t, cfg: VideoConfig, first=None, keep=None):
    """The denoiser's output (N, T, H, W) for clips x (N, T, H, W) at times t (N,),
    MATH.md (22.10) (the module docstring), with ``cfg.first_frame`` conditioned on the
    first frames ``first`` (N, H, W): MATH.md (22.11), each frame's input is the three
    channels (x_f, m c, m), c the given first frame and m = ``keep`` (N,) in {0, 1}
    (default all 1; ``first=None`` means every condition dropped, m = 0, c = 0).
    Returns ``(out, cache)``.

    Parameters
    ----------
    P : dict
        Parameters (:func:`video_init`, possibly cast and moved).
    x : array, shape (N, T, H, W)
        Noisy clips (cast to the parameters' dtype).
    t : array, shape (N,)
        Diffusion times.
    cfg : VideoConfig
        The architecture.
    first : array, shape (N, H, W), optional
        The given first frames (only with ``cfg.first_frame``).
    keep : array, shape (N,), optional
        1 where the condition is kept, 0 where it is dropped (condition dropout).

    Returns
    -------
    out : array, shape (N, T, H, W)
        The network output.
    cache : tuple
        Saved values for :func:`video_backward`.

    Raises
    ------
    ValueError
        If ``x`` is not a clip of the configured shape, ``t`` is not (N,), ``first`` is
        not (N, H, W), ``keep`` is not (N,), or ``first`` is given to a model without
        ``first_frame``.
    """
    check_video_args(P=P, cfg=cfg)  # issue 19
    xp, (N, T, H, W), dt, inp = _frames_input(P, x, t, cfg, first, keep)
    z, tok, c_p = _embed(xp, P, inp, cfg)  # (N T, L, D)
    L, D = z.shape[1], cfg.width
    z = z + P["pos.s"]
    s, _ = timestep_embedding_forward(xp.astype(t, dt), D, dtype=dt)  # (N, D)
    h1 = s @ P["t.w1"] + P["t.b1"]
    a1, c_s = silu_forward(h1)
    e = a1 @ P["t.w2"] + P["t.b2"]  # (N, D)
    add = xp.reshape(e, (N, 1, 1, D))
    if cfg.temporal_pos:
        add = add + xp.reshape(_temporal_positions(xp, cfg, e), (1, T, 1, D))
    z = xp.reshape(xp.reshape(z, (N, T, L, D)) + add, (N * T, L, D))
    se, c_se = silu_forward(e) if cfg.adaln else (None, None)  # MATH.md (20.4), (20.5)
    blocks = []
    for k in range(cfg.depth):
        md = None
        if cfg.adaln:
            mod = se @ P[f"b{k}.ada.w"] + P[f"b{k}.ada.b"]  # (N, 9 D)
            md = [mod[:, i * D:(i + 1) * D] for i in range(9)]
        u1, c1 = _ln(P, f"b{k}.ln1", z)
        v1 = _modulate(xp, u1, md, 0, N)
        if cfg.joint:  # one clip's T L tokens attend to each other
            a_s, c2 = mha_forward(P, f"b{k}.sa", xp.reshape(v1, (N, T * L, D)), heads=cfg.heads)
            a_s = xp.reshape(a_s, (N * T, L, D))
        else:
            a_s, c2 = mha_forward(P, f"b{k}.sa", v1, heads=cfg.heads)  # spatial: (N T, L, D)
        z = z + _gate(xp, a_s, md, 2, N)
        u2, c3 = _ln(P, f"b{k}.ln2", z)
        a_t, c4 = temporal_attention_forward(P, f"b{k}.ta", _modulate(xp, u2, md, 3, N), T, heads=cfg.heads)
        z = z + _gate(xp, a_t, md, 5, N)
        u3, c5 = _ln(P, f"b{k}.ln3", z)
        v3 = _modulate(xp, u3, md, 6, N)
        m1 = v3 @ P[f"b{k}.mlp.w1"] + P[f"b{k}.mlp.b1"]  # (N T, L, 4D)
        g, c6 = gelu_forward(m1)
        h = g @ P[f"b{k}.mlp.w2"] + P[f"b{k}.mlp.b2"]
        z = z + _gate(xp, h, md, 8, N)
        blocks.append((c1, c2, c3, c4, c5, v3, g, c6, None if md is None else (md, u1, u2, u3, a_s, a_t, h)))
    uo, co = _ln(P, "out.ln", z)
    ada = None
    if cfg.adaln:
        fm = se @ P["out.ada.w"] + P["out.ada.b"]  # (N, 2 D): shift, scale of the output LayerNorm
        ada = (se, c_se, [fm[:, :D], fm[:, D:]], uo)
        uo = _modulate(xp, uo, ada[2], 0, N)
    o = uo @ P["out.w"] + P["out.b"]  # (N T, L, p p)
    img, c_u = unpatchify_forward(o, cfg.patch, (H, W))  # (N T, 1, H, W)
    out = xp.reshape(img, (N, T, H, W))
    m = None if not cfg.first_frame else inp[::T, 2, 0, 0]  # (N,) the mask of (22.11)
    return out, (P, cfg, (N, T, H, W, L, D), c_p, tok, s, a1, c_s, blocks, co, uo, c_u, m, ada)


def video_backward(dout, cache, return_first: bool = False):
    """Gradients of :func:`video_forward`: ``(grads (same keys as P), dx (N, T, H, W))``,
    MATH.md (22.10); with ``return_first`` also d first (N, H, W) (MATH.md (22.11): the
    sum over frames of the gradient of channel m c, times m).

    Parameters
    ----------
    dout : array, shape (N, T, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache returned by :func:`video_forward`.
    return_first : bool, optional
        Also return the gradient with respect to ``first`` (a ``first_frame`` model).

    Returns
    -------
    grads : dict
        Gradient of every parameter, keyed as ``P``.
    dx : array, shape (N, T, H, W)
        Gradient with respect to ``x``.
    dfirst : array, shape (N, H, W)
        Only with ``return_first``: the gradient with respect to ``first``.
    """
    check_cache(cache, "video_forward", 14)  # issue 19
    check_dout(dout, cache[2][:4])
    check_bool("return_first", return_first)
    xp = array_namespace(dout)
    P, cfg, (N, T, H, W, L, D), c_p, tok, s, a1, c_s, blocks, co, uo, c_u, m, ada = cache
    G = {}
    do = unpatchify_backward(xp.reshape(dout, (N * T, 1, H, W)), c_u)  # (N T, L, p p)
    G["out.w"] = xp.reshape(uo, (-1, D)).T @ xp.reshape(do, (-1, do.shape[-1]))
    G["out.b"] = xp.sum(xp.reshape(do, (-1, do.shape[-1])), axis=0)
    duo, dse = do @ P["out.w"].T, None
    if ada is not None:  # MATH.md (20.4), (20.5)
        dmod = [None, None]
        duo = _modulate_backward(xp, duo, ada[3], ada[2], 0, dmod, N)
        dse = _ada_grads(G, P, "out", xp.concat(dmod, axis=1), ada[0])
    dz, G["out.ln.g"], G["out.ln.b"] = layernorm_backward(duo, co)
    for k in reversed(range(cfg.depth)):
        c1, c2, c3, c4, c5, v3, g, c6, bk = blocks[k]
        md, u1, u2, u3, a_s, a_t, h = (None,) * 7 if bk is None else bk
        dmod = [None] * 9
        dh = _gate_backward(xp, dz, h, md, 8, dmod, N)
        G[f"b{k}.mlp.w2"] = xp.reshape(g, (-1, 4 * D)).T @ xp.reshape(dh, (-1, D))
        G[f"b{k}.mlp.b2"] = xp.sum(xp.reshape(dh, (-1, D)), axis=0)
        dm1 = gelu_backward(dh @ P[f"b{k}.mlp.w2"].T, c6)
        G[f"b{k}.mlp.w1"] = xp.reshape(v3, (-1, D)).T @ xp.reshape(dm1, (-1, 4 * D))
        G[f"b{k}.mlp.b1"] = xp.sum(xp.reshape(dm1, (-1, 4 * D)), axis=0)
        du, G[f"b{k}.ln3.g"], G[f"b{k}.ln3.b"] = layernorm_backward(
            _modulate_backward(xp, dm1 @ P[f"b{k}.mlp.w1"].T, u3, md, 6, dmod, N), c5)
        dz = dz + du
        dv = temporal_attention_backward(G, P, f"b{k}.ta", _gate_backward(xp, dz, a_t, md, 5, dmod, N), c4)
        du, G[f"b{k}.ln2.g"], G[f"b{k}.ln2.b"] = layernorm_backward(_modulate_backward(xp, dv, u2, md, 3, dmod, N), c3)
        dz = dz + du
        da = _gate_backward(xp, dz, a_s, md, 2, dmod, N)
        if cfg.joint:
            dv = xp.reshape(mha_backward(G, P, f"b{k}.sa", xp.reshape(da, (N, T * L, D)), c2)[0], (N * T, L, D))
        else:
            dv = mha_backward(G, P, f"b{k}.sa", da, c2)[0]
        du, G[f"b{k}.ln1.g"], G[f"b{k}.ln1.b"] = layernorm_backward(_modulate_backward(xp, dv, u1, md, 0, dmod, N), c1)
        dz = dz + du
        if md is not None:
            d = _ada_grads(G, P, f"b{k}", xp.concat(dmod, axis=1), ada[0])
            dse = d if dse is None else dse + d
    G["pos.s"] = xp.sum(dz, axis=0)
    de = xp.sum(xp.reshape(dz, (N, T * L, D)), axis=1)  # (N, D)
    if ada is not None:
        de = de + silu_backward(dse, ada[1])
    G["t.w2"], G["t.b2"] = a1.T @ de, xp.sum(de, axis=0)
    dh1 = silu_backward(de @ P["t.w2"].T, c_s)
    G["t.w1"], G["t.b1"] = s.T @ dh1, xp.sum(dh1, axis=0)
    dinp = _embed_backward(xp, G, P, dz, tok, c_p, cfg)  # (N T, C, H, W)
    dx = xp.reshape(dinp[:, 0], (N, T, H, W))
    if not return_first:
        return G, dx
    if m is None:
        raise ValueError("return_first=True needs a first_frame model (VideoConfig.first_frame)")
    dfirst = xp.sum(xp.reshape(dinp[:, 1], (N, T, H, W)), axis=1) * xp.reshape(m, (N, 1, 1))
    return G, dx, dfirst


def _ada_grads(G, P, pre, dmod, se):
    """Gradients of the modulation ``se @ P[pre.ada.w] + P[pre.ada.b]`` given d mod (N, k D):
    written into G; returns d se (N, D)."""
    xp = array_namespace(dmod)
    G[f"{pre}.ada.w"], G[f"{pre}.ada.b"] = se.T @ dmod, xp.sum(dmod, axis=0)
    return dmod @ P[f"{pre}.ada.w"].T


def _frames_input(P, x, t, cfg, first, keep):
    """The checked input of a video network (the transformer or the video U-Net): ``(xp,
    (N, T, H, W), dtype of P["in.w"], frames (N T, c, H, W))`` with c = 1, or 3 with the
    first-frame channels (x_f, m c, m) of MATH.md (22.11); ValueError for a clip of the
    wrong shape, ``t`` not (N,), or ``first`` / ``keep`` given to a model without
    ``first_frame``."""
    check_clip(x, cfg)
    check_video_args(t=t)
    xp = array_namespace(x)
    N, T, H, W = x.shape
    if not hasattr(t, "shape") or tuple(t.shape) != (N,):
        raise ValueError(f"t must have shape (N,) = ({N},) (one time per clip of x), got {getattr(t, 'shape', t)!r}")
    dt = P["in.w"].dtype
    inp = xp.reshape(xp.astype(x, dt), (N * T, 1, H, W))
    if cfg.first_frame:
        inp = xp.concat([inp, _first_channels(xp, first, keep, cfg, N, dt, x)], axis=1)  # (N T, 3, H, W)
    elif first is not None or keep is not None:
        raise ValueError("first / keep were given, but the model was built without first_frame=True "
                         f"({type(cfg).__name__}.first_frame)")
    return xp, (N, T, H, W), dt, inp


def _network(cfg):
    """``(init, forward, backward)`` of the denoiser that ``cfg`` configures: the
    transformer of this module for a VideoConfig, the video U-Net
    (:mod:`refdiff.nn.video_unet`) for a VideoUNetConfig."""
    from .video_unet import VideoUNetConfig, vunet_backward, vunet_forward, vunet_init

    if isinstance(cfg, VideoUNetConfig):
        return vunet_init, vunet_forward, vunet_backward
    return video_init, video_forward, video_backward


def video_as_model(P, cfg: VideoConfig, prediction_type: str = "epsilon", first=None, guidance: float = 1.0):
    """The network as a plain ``model(x, t)`` (of ``prediction_type``) for every sampler;
    ``model.config`` is ``cfg`` (what image-to-video checks the given frames against).
    With a ``first_frame`` model: conditioned on ``first`` (N, H, W) (None: the condition
    dropped, the unconditional model), and with ``guidance`` w != 1 classifier-free
    guidance u + w (c - u) of the conditioned output c and the dropped one u, MATH.md (22.11).

    Parameters
    ----------
    P : dict
        Parameters bound into the callable.
    cfg : VideoConfig or refdiff.nn.video_unet.VideoUNetConfig
        The architecture (the transformer, or the video U-Net).
    prediction_type : str, optional
        What the network predicts, stored as ``model.prediction_type`` (default
        ``"epsilon"``).
    first : array (N, H, W), optional
        The given first frames (a ``first_frame`` model only).
    guidance : float, optional
        Guidance scale w (default 1: the conditioned output alone).

    Returns
    -------
    callable
        ``model(x, t)`` with x (N, T, H, W) and t (N,) or a scalar (broadcast to the batch).

    Raises
    ------
    ValueError
        If ``first`` is given to a model without ``first_frame`` or has the wrong shape.
    """
    check_video_args(P=P, cfg=cfg, prediction_type=prediction_type)  # issue 19
    check_finite_scalar("guidance", guidance)  # issue 19
    if first is not None:
        if not cfg.first_frame:
            raise ValueError("first was given, but the model was built without first_frame=True")
        check_first(first, cfg)

    forward = _network(cfg)[1]  # the transformer, or the video U-Net for a VideoUNetConfig

    def model(x, t):
        xp = array_namespace(x)
        tt = t if hasattr(t, "shape") and t.ndim == 1 else xp.full((x.shape[0],), float(t))
        if first is None:
            return forward(P, x, tt, cfg)[0]
        c = forward(P, x, tt, cfg, first=first)[0]
        if guidance == 1.0:
            return c
        u = forward(P, x, tt, cfg)[0]
        return u + guidance * (c - u)

    model.prediction_type = prediction_type
    model.config = cfg
    return model
