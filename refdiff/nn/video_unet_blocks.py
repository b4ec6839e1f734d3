"""The layers of the video U-Net (:mod:`refdiff.nn.video_unet`) on frames as a batch axis,
(N T, C, H, W) with the frames of a clip consecutive: the 3-D convolution as a 2-D
convolution of stacked temporal neighbours (MATH.md (22.16)), the residual block with
3-D convolutions and GroupNorm per frame (MATH.md (13.16)), and attention over time at
each position or jointly over a clip (MATH.md (22.9)).  Hand-written backprop; the image
layers are the tuned ones of :mod:`refdiff.nn.fast`.  NaN and inf propagate: not checked.
"""

from __future__ import annotations

from .._validate import check_array, check_bool, check_int
from ..backend import array_namespace
from ._check import check_block, check_cache, check_dout, check_params, check_prefix, check_size
from .attention import mha_backward, mha_forward, mha_init
from .blocks import acc, conv_b, conv_f, gn_b, gn_f, gnsilu_b, gnsilu_f, init_conv, init_groupnorm, init_linear, lin_b, lin_f
from .fast import add_channel_shift
from .layers import timestep_embedding_forward

__all__ = ["temporal_stack_forward", "temporal_stack_backward", "conv3d_forward", "conv3d_backward",
           "st_attention_forward", "st_attention_backward"]


# ------------------------------------------------------------------ the 3-D convolution
def temporal_stack_forward(x, frames: int):
    """The temporal neighbours of every frame stacked on the channel axis, MATH.md (22.16):
    x (N T, C, H, W) -> S (N T, 3 C, H, W) with S[f] = (x[f-1], x[f], x[f+1]), zero frames
    outside [0, T).

    Parameters
    ----------
    x : array, shape (N T, C, H, W)
        Frames, those of a clip consecutive.
    frames : int
        T.

    Returns
    -------
    S : array, shape (N T, 3 C, H, W)
        The stacked neighbours.
    cache : tuple
        For :func:`temporal_stack_backward`.
    """
    check_int("frames", frames, 1)
    check_array("x", x, ndim=4)
    xp = array_namespace(x)
    NT, C, H, W = x.shape
    if NT % frames:
        raise ValueError(f"x has {NT} rows, not a multiple of frames = {frames}")
    v = xp.reshape(x, (NT // frames, frames, C, H, W))
    z = xp.zeros_like(v[:, :1])
    prev = xp.concat([z, v[:, :-1]], axis=1)
    nxt = xp.concat([v[:, 1:], z], axis=1)
    return xp.reshape(xp.concat([prev, v, nxt], axis=2), (NT, 3 * C, H, W)), (frames, C)


def temporal_stack_backward(dS, cache):
    """Adjoint of :func:`temporal_stack_forward`, MATH.md (22.16): the shifted sum
    dx[f] = dS[f+1]_prev + dS[f]_centre + dS[f-1]_next (terms outside [0, T) dropped).

    Parameters
    ----------
    dS : array, shape (N T, 3 C, H, W)
        Gradient with respect to the stacked frames.
    cache : tuple
        The cache of :func:`temporal_stack_forward`.

    Returns
    -------
    array, shape (N T, C, H, W)
        Gradient with respect to x.
    """
    T, C = check_cache(cache, "temporal_stack_forward", 2)
    check_array("dS", dS, ndim=4)
    if dS.shape[1] != 3 * C or dS.shape[0] % T:
        raise ValueError(f"dS has shape {tuple(dS.shape)}; the stacked frames have 3 C = {3 * C} channels and "
                         f"a multiple of frames = {T} rows")
    xp = array_namespace(dS)
    NT, _, H, W = dS.shape
    d = xp.reshape(dS, (NT // T, T, 3, C, H, W))
    z = xp.zeros_like(d[:, :1, 0])
    dx = d[:, :, 1] + xp.concat([d[:, 1:, 0], z], axis=1) + xp.concat([z, d[:, :-1, 2]], axis=1)
    return xp.reshape(dx, (NT, C, H, W))


def conv3d_forward(P, name, x, frames: int, mode: str = "3d"):
    """A space-time convolution of frames x (N T, C, H, W), MATH.md (22.16): ``"3d"`` the
    3x3x3 convolution conv2d(stack(x), P[name.w]) with w (F, 3 C, 3, 3) (blocks
    (w_prev, w_centre, w_next) along the input channels); ``"2+1d"`` a per-frame 3x3
    convolution ``name.s`` then the temporal 1x1 convolution ``name.t`` of the stacked
    frames.

    Parameters
    ----------
    P : dict
        Parameters (``name.w``, ``name.b``; or ``name.s.*`` and ``name.t.*``).
    name : str
        Key prefix.
    x : array, shape (N T, C, H, W)
        Frames.
    frames : int
        T.
    mode : {"3d", "2+1d"}, optional
        The kind of convolution (default "3d").

    Returns
    -------
    y : array, shape (N T, F, H, W)
        Output frames.
    cache : tuple
        For :func:`conv3d_backward`.
    """
    if mode not in ("3d", "2+1d"):
        raise ValueError(f"mode must be '3d' or '2+1d', got {mode!r}")
    check_block(P, name, *((".w", ".b") if mode == "3d" else (".s.w", ".t.w")), what="conv3d_forward",
                pre_name="name")
    if mode == "3d":
        s, c_s = temporal_stack_forward(x, frames)
        y, c_c = conv_f(P, name, s)
        return y, (mode, c_s, c_c, None, name)
    h, c_h = conv_f(P, name + ".s", x)
    s, c_s = temporal_stack_forward(h, frames)
    y, c_c = conv_f(P, name + ".t", s)
    return y, (mode, c_s, c_c, c_h, name)


def conv3d_backward(G, name, dout, cache):
    """Backward of :func:`conv3d_forward`: conv2d's backward, then the adjoint of the
    stacking, MATH.md (22.16); gradients into G.

    Parameters
    ----------
    G : dict
        Gradient dict, written under ``name``.
    name : str
        Key prefix.
    dout : array, shape (N T, F, H, W)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`conv3d_forward`.

    Returns
    -------
    array, shape (N T, C, H, W)
        Gradient with respect to x.
    """
    check_params(G, "G")
    check_prefix(name, "name")
    mode, c_s, c_c, c_h, fname = check_cache(cache, "conv3d_forward", 5)
    if name != fname:
        raise ValueError(f"name = {name!r} is not the prefix of the forward pass ({fname!r})")
    if mode == "3d":
        return temporal_stack_backward(conv_b(G, name, dout, c_c), c_s)
    dh = temporal_stack_backward(conv_b(G, name + ".t", dout, c_c), c_s)
    return conv_b(G, name + ".s", dh, c_h)


def _conv3d_init(P, name, c_in, c_out, mode, rng, zero=False):
    if mode == "3d":
        init_conv(P, name, 3 * c_in, c_out, 3, rng, zero=zero)
    else:
        init_conv(P, name + ".s", c_in, c_out, 3, rng)
        init_conv(P, name + ".t", 3 * c_out, c_out, 1, rng, zero=zero)


# ------------------------------------------------------------------ residual block
def _rep(xp, a, T):
    """(N, D) -> (N T, D): each clip's row for each of its frames."""
    return xp.reshape(xp.broadcast_to(a[:, None, :], (a.shape[0], T, a.shape[1])), (a.shape[0] * T, a.shape[1]))


def _vres_init(P, pre, c_in, c_out, cfg, rng):
    init_groupnorm(P, pre + ".norm1", c_in)
    _conv3d_init(P, pre + ".conv1", c_in, c_out, cfg.conv, rng)
    init_linear(P, pre + ".emb", 4 * cfg.widths[0], c_out, rng)  # e has 4 W_0 entries (vunet_init)
    init_groupnorm(P, pre + ".norm2", c_out)
    _conv3d_init(P, pre + ".conv2", c_out, c_out, cfg.conv, rng)
    if c_in != c_out:
        init_conv(P, pre + ".skip", c_in, c_out, 1, rng)


def _vres_forward(P, pre, x, env):
    """MATH.md (13.16) with the convolutions 3-D (22.16): skip(x) + conv2(silu(gn2(conv1(
    silu(gn1(x))) + W_e e))), GroupNorm per frame, e the clip's embedding on each frame."""
    xp, T, mode, g = array_namespace(x), env["T"], env["conv"], env["groups"]
    h, c_n1 = gnsilu_f(P, pre + ".norm1", x, g)
    h, c_c1 = conv3d_forward(P, pre + ".conv1", h, T, mode)
    eo, c_e = lin_f(P, pre + ".emb", env["e"])  # (N, C_out)
    h = add_channel_shift(h, _rep(xp, eo, T))
    h, c_n2 = gnsilu_f(P, pre + ".norm2", h, g)
    h, c_c2 = conv3d_forward(P, pre + ".conv2", h, T, mode)
    s, c_sk = conv_f(P, pre + ".skip", x) if pre + ".skip.w" in P else (x, None)
    return s + h, (c_n1, c_c1, c_e, c_n2, c_c2, c_sk)


def _vres_backward(G, P, pre, dout, cache, denv):
    xp = array_namespace(dout)
    c_n1, c_c1, c_e, c_n2, c_c2, c_sk = cache
    dh = gnsilu_b(G, pre + ".norm2", conv3d_backward(G, pre + ".conv2", dout, c_c2), c_n2)
    NT, C = dh.shape[:2]
    deo = xp.sum(xp.reshape(xp.sum(dh, axis=(2, 3)), (-1, denv["T"], C)), axis=1)  # (N, C): summed over frames
    acc(denv, "e", lin_b(G, pre + ".emb", deo, c_e))
    dx = gnsilu_b(G, pre + ".norm1", conv3d_backward(G, pre + ".conv1", dh, c_c1), c_n1)
    return dx + (conv_b(G, pre + ".skip", dout, c_sk) if c_sk is not None else dout)


# ------------------------------------------------------------------ attention over time
def _positions(xp, T, C, dtype):
    return timestep_embedding_forward(xp.astype(xp.arange(T), dtype), C, dtype=dtype)[0]  # (T, C)


def st_attention_forward(P, pre, x, frames: int, *, groups: int, heads: int, joint: bool = False,
                         temporal_pos: bool = True):
    """x + attention over time, MATH.md (22.9): tokens gn(x) of frames x (N T, C, h, w),
    plus the sinusoidal frame position E_T(f) (13.12) when ``temporal_pos``; each position's
    T tokens attend to each other (positions as batch, (N h w, T, C)), or with ``joint`` all
    T h w tokens of a clip ((N, T h w, C)); multi-head attention (13.23); back to
    (N T, C, h, w).  Without positions the block is frame-permutation equivariant.

    Parameters
    ----------
    P : dict
        Parameters: ``pre.norm`` (GroupNorm) and ``pre.attn`` (:func:`mha_init`).
    pre : str
        Key prefix.
    x : array, shape (N T, C, h, w)
        Feature maps of the frames, those of a clip consecutive.
    frames : int
        T.
    groups, heads : int
        GroupNorm groups and attention heads.
    joint : bool, optional
        Attend over all T h w tokens of a clip (default False: over the T frames).
    temporal_pos : bool, optional
        Add the sinusoidal frame positions (default True).

    Returns
    -------
    y : array, shape (N T, C, h, w)
        x plus the attention output.
    cache : tuple
        For :func:`st_attention_backward`.
    """
    check_bool("joint", joint)
    check_bool("temporal_pos", temporal_pos)
    check_block(P, pre, ".norm.gamma", ".attn.out.w", what="st_attention_forward")
    check_array("x", x, ndim=4)
    check_int("frames", frames, 1)
    check_size("groups", groups)
    check_size("heads", heads)
    xp = array_namespace(x)
    NT, C, H, W = x.shape
    N, T, L = NT // frames, frames, H * W
    if NT % frames:
        raise ValueError(f"x has {NT} rows, not a multiple of frames = {frames}")
    h, c_n = gn_f(P, pre + ".norm", x, groups)
    u = xp.permute_dims(xp.reshape(h, (N, T, C, L)), (0, 1, 3, 2))  # (N, T, L, C)
    if temporal_pos:
        u = u + xp.reshape(_positions(xp, T, C, x.dtype), (1, T, 1, C))
    tok = xp.reshape(u, (N, T * L, C)) if joint else xp.reshape(xp.permute_dims(u, (0, 2, 1, 3)), (N * L, T, C))
    o, c_a = mha_forward(P, pre + ".attn", tok, heads=heads)
    o = xp.reshape(o, (N, T, L, C)) if joint else xp.permute_dims(xp.reshape(o, (N, L, T, C)), (0, 2, 1, 3))
    o = xp.reshape(xp.permute_dims(o, (0, 1, 3, 2)), (NT, C, H, W))
    return x + o, (c_n, c_a, (N, T, C, H, W), joint)


def st_attention_backward(G, P, pre, dout, cache):
    """Backward of :func:`st_attention_forward` (gradients into G), MATH.md (22.9).

    Parameters
    ----------
    G : dict
        Gradient dict, written under ``pre``.
    P : dict
        The parameters of the forward pass.
    pre : str
        Key prefix.
    dout : array, shape (N T, C, h, w)
        Gradient with respect to the output.
    cache : tuple
        The cache of :func:`st_attention_forward`.

    Returns
    -------
    array, shape (N T, C, h, w)
        Gradient with respect to x.
    """
    check_params(G, "G")
    check_params(P)
    check_prefix(pre)
    c_n, c_a, (N, T, C, H, W), joint = check_cache(cache, "st_attention_forward", 4)
    check_dout(dout, (N * T, C, H, W))
    xp = array_namespace(dout)
    L = H * W
    do = xp.permute_dims(xp.reshape(dout, (N, T, C, L)), (0, 1, 3, 2))  # (N, T, L, C)
    do = xp.reshape(do, (N, T * L, C)) if joint else xp.reshape(xp.permute_dims(do, (0, 2, 1, 3)), (N * L, T, C))
    du, _ = mha_backward(G, P, pre + ".attn", do, c_a)
    du = xp.reshape(du, (N, T, L, C)) if joint else xp.permute_dims(xp.reshape(du, (N, L, T, C)), (0, 2, 1, 3))
    dh = xp.reshape(xp.permute_dims(du, (0, 1, 3, 2)), (N * T, C, H, W))
    return dout + gn_b(G, pre + ".norm", dh, c_n)


def _attn_init(P, pre, c, cfg, rng):
    init_groupnorm(P, pre + ".norm", c)
    mha_init(P, pre + ".attn", c, cfg.heads, rng, zero_out=True)


def _attn_f(joint):
    return lambda P, pre, h, env: st_attention_forward(P, pre, h, env["T"], groups=env["groups"], heads=env["heads"],
                                                       joint=joint, temporal_pos=env["pos"])


def _attn_b(G, P, pre, dh, cache, denv):
    return st_attention_backward(G, P, pre, dh, cache)
