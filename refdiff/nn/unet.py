"""A small U-Net denoiser for 8x8 images (two resolutions), MATH.md (13.20).

With C_0 = base_channels * channel_mults[0], C_1 = base_channels * channel_mults[1],
E = time_embed_dim and R = num_res_blocks::

    e    = silu(silu(sinusoid(t) W_1 + b_1) W_2 + b_2 [+ C[y]])       (N, E)
    h    = conv_in(x)                               8x8, C_0     -> skip
    down0: R x resblock(., e)                       8x8, C_0     -> skip after each
           conv 3x3 stride 2                        4x4, C_0     -> skip
    down1: R x resblock(., e)                       4x4, C_1     -> skip after each
    mid:   resblock, self-attention (if attention), resblock      4x4, C_1
    up1:   (R+1) x resblock(concat(h, skip.pop()), e)              4x4, C_1
           nearest x2 upsampling, conv 3x3                         8x8, C_1
    up0:   (R+1) x resblock(concat(h, skip.pop()), e)              8x8, C_0
    out  = conv_out(silu(gn(h)))                    8x8, in_channels (zero at init)

Skips are concatenated along channels (MATH.md (13.21) gives their backward: the split
gradient of a concatenation plus the gradient flowing down the encoder path).
"""

from __future__ import annotations

import dataclasses

from .base import DenoiserBase, config_fields
from .blocks import (
    attnblock_backward,
    attnblock_forward,
    attnblock_init,
    conv_b,
    conv_f,
    gn_b,
    gn_f,
    init_conv,
    init_groupnorm,
    init_linear,
    lin_b,
    lin_f,
    resblock_backward,
    resblock_forward,
    resblock_init,
)
from .layers import (
    concat_backward,
    concat_forward,
    silu_backward,
    silu_forward,
    upsample2x_backward,
    upsample2x_forward,
)

__all__ = ["UNetConfig", "UNet"]


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Configuration of :class:`UNet`.

    in_channels, image_size (even; 8 for the 8x8 sets); base_channels and
    channel_mults = (m_0, m_1): widths base*m_0 at full and base*m_1 at half resolution;
    num_res_blocks per level on the way down (one more on the way up); groups of every
    GroupNorm (must divide every width); attention: self-attention in the middle block
    (at image_size/2, i.e. 4x4); time_embed_dim (default 4 * base_channels); num_classes
    (0: unconditional; else K classes plus the null class K); time_scale multiplies t
    before the sinusoid (~1000 for continuous t in [0, 1]).  The default (base 32,
    mults (1, 1), E = 128, one res block per level, attention) has 271,649 parameters
    for one input channel; (1, 2) doubles the 4x4 width (651,041 parameters).
    """

    in_channels: int = 1
    image_size: int = 8
    base_channels: int = 32
    channel_mults: tuple = (1, 1)
    num_res_blocks: int = 1
    groups: int = 8
    attention: bool = True
    time_embed_dim: int | None = None
    num_classes: int = 0
    time_scale: float = 1.0
    max_period: float = 10000.0
    zero_init_out: bool = True

    def __post_init__(self):
        if self.time_embed_dim is None:
            object.__setattr__(self, "time_embed_dim", 4 * self.base_channels)
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        if len(self.channel_mults) != 2 or min(self.channel_mults) < 1:
            raise ValueError(f"UNetConfig.channel_mults must be two positive ints, got {self.channel_mults}")
        if self.image_size < 2 or self.image_size % 2:
            raise ValueError(f"UNetConfig.image_size must be even and >= 2, got {self.image_size}")
        for name in ("in_channels", "base_channels", "num_res_blocks", "groups"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        for w in self.widths:
            if w % self.groups or w // self.groups < 2:
                raise ValueError(f"UNetConfig.groups={self.groups} must divide every width {self.widths} "
                                 "with at least 2 channels per group (with one, GroupNorm cancels the "
                                 "time embedding added before it, MATH.md (13.16))")
        if self.num_classes < 0:
            raise ValueError(f"UNetConfig.num_classes must be >= 0, got {self.num_classes}")

    @property
    def widths(self):
        return tuple(self.base_channels * m for m in self.channel_mults)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        return {"arch": "unet", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return config_fields(cls, d, "unet")


class UNet(DenoiserBase):
    """U-Net denoiser ``(x (N, C, S, S), t (N,), y (N,) or None) -> (N, C, S, S)``,
    MATH.md (13.20)-(13.21).  Same methods as :class:`~refdiff.nn.MLP`."""

    arch = "unet"

    def __init__(self, config: UNetConfig | None = None):
        super().__init__(UNetConfig() if config is None else config)

    # ---------------------------------------------------------------- the plan
    def _plan(self):
        """The block sequence as (kind, name, c_in, c_out) with skip bookkeeping."""
        c = self.config
        C0, C1 = c.widths
        R = c.num_res_blocks
        down, skips = [("conv_in", "conv_in", c.in_channels, C0)], [C0]
        ch = C0
        for r in range(R):
            down.append(("res", f"down0.res{r}", ch, C0))
            ch = C0
            skips.append(ch)
        down.append(("down", "down0.down", ch, ch))
        skips.append(ch)
        for r in range(R):
            down.append(("res", f"down1.res{r}", ch, C1))
            ch = C1
            skips.append(ch)
        mid = [("res", "mid.res0", ch, ch)]
        if c.attention:
            mid.append(("attn", "mid.attn", ch, ch))
        mid.append(("res", "mid.res1", ch, ch))
        up = []
        for level, C in ((1, C1), (0, C0)):
            for r in range(R + 1):
                up.append(("res_cat", f"up{level}.res{r}", ch + skips.pop(), C))
                ch = C
            if level == 1:
                up.append(("up", "up1.up", ch, ch))
        return down, mid, up

    def _init_host(self, rng):
        c, P = self.config, {}
        E, C0 = c.time_embed_dim, c.widths[0]
        init_linear(P, "temb.lin1", c.base_channels, E, rng)
        init_linear(P, "temb.lin2", E, E, rng)
        if c.num_classes:
            P["class_emb"] = rng.standard_normal((c.num_classes + 1, E))
        down, mid, up = self._plan()
        for kind, name, ci, co in down + mid + up:
            if kind in ("res", "res_cat"):
                resblock_init(P, name, ci, co, E, rng)
            elif kind == "attn":
                attnblock_init(P, name, ci, rng)
            else:  # conv_in, down, up: 3x3 convolutions
                init_conv(P, name, ci, co, 3, rng)
        init_groupnorm(P, "out.norm", C0)
        init_conv(P, "out.conv", C0, c.in_channels, 3, rng, zero=c.zero_init_out)
        return P

    # ---------------------------------------------------------------- forward
    def forward(self, params, x, t, cond=None):
        """Output and cache, MATH.md (13.20)."""
        c = self.config
        feat = (c.in_channels, c.image_size, c.image_size)
        xp, t, cond = self._check_inputs(params, x, t, cond, feat, "UNet.forward")
        s, _ = self._embed_time(t, c.base_channels)
        e, c_l1 = lin_f(params, "temb.lin1", s)
        e, c_s1 = silu_forward(e)
        e, c_l2 = lin_f(params, "temb.lin2", e)
        ce, c_y = self._class_f(params, cond)
        if ce is not None:
            e = e + ce
        e, c_se = silu_forward(e)
        down, mid, up = self._plan()
        h, skips, caches = x, [], []
        for kind, name, _, _ in down:
            if kind == "res":
                h, cc = resblock_forward(params, name, h, e, c.groups)
            else:  # conv_in (stride 1) or down (stride 2)
                h, cc = conv_f(params, name, h, stride=2 if kind == "down" else 1)
            caches.append(cc)
            skips.append(h)
        for kind, name, _, _ in mid + up:
            if kind == "res":
                h, cc = resblock_forward(params, name, h, e, c.groups)
            elif kind == "attn":
                h, cc = attnblock_forward(params, name, h, c.groups)
            elif kind == "res_cat":
                h, c_cat = concat_forward(h, skips.pop())
                h, cc = resblock_forward(params, name, h, e, c.groups)
                cc = (c_cat, cc)
            else:  # up: nearest x2 then conv
                h, _ = upsample2x_forward(h)
                h, cc = conv_f(params, name, h)
            caches.append(cc)
        h, c_n = gn_f(params, "out.norm", h, c.groups)
        h, c_s = silu_forward(h)
        out, c_o = conv_f(params, "out.conv", h)
        return out, ((c_l1, c_s1, c_l2, c_y, c_se), caches, (c_n, c_s, c_o))

    # ---------------------------------------------------------------- backward
    def backward(self, params, cache, dout):
        """Gradients of ``sum(out * dout)``: ``(grads, dx)``, MATH.md (13.20)-(13.21)."""
        (c_l1, c_s1, c_l2, c_y, c_se), caches, (c_n, c_s, c_o) = cache
        G: dict = {}
        dh = conv_b(G, "out.conv", dout, c_o)
        dh = silu_backward(dh, c_s)
        dh = gn_b(G, "out.norm", dh, c_n)
        down, mid, up = self._plan()
        de, dskips = None, []

        def add_de(g):
            nonlocal de
            de = g if de is None else de + g

        for (kind, name, _, _), cc in zip(reversed(mid + up), reversed(caches[len(down):])):
            if kind == "res":
                dh, g = resblock_backward(G, params, name, dh, cc)
                add_de(g)
            elif kind == "attn":
                dh = attnblock_backward(G, params, name, dh, cc)
            elif kind == "res_cat":
                c_cat, cr = cc
                dh, g = resblock_backward(G, params, name, dh, cr)
                add_de(g)
                dh, dskip = concat_backward(dh, c_cat)
                dskips.append(dskip)  # gradients of s_0, s_1, ... (forward popped s_K first)
            else:
                dh = conv_b(G, name, dh, cc)
                dh = upsample2x_backward(dh, None)
        # walk the encoder backwards: the last encoder output is s_K, the last dskip
        for (kind, name, _, _), cc in zip(reversed(down), reversed(caches[:len(down)])):
            dh = dh + dskips.pop()
            if kind == "res":
                dh, g = resblock_backward(G, params, name, dh, cc)
                add_de(g)
            else:
                dh = conv_b(G, name, dh, cc)
        de = silu_backward(de, c_se)
        self._class_b(G, de, c_y)
        de = lin_b(G, "temb.lin2", de, c_l2)
        de = silu_backward(de, c_s1)
        lin_b(G, "temb.lin1", de, c_l1)
        return {k: G[k] for k in params}, dh
